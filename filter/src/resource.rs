//! The workload resource from Envoy's node: who is emitting these spans.
//!
//! Istio puts the workload's identity in the node metadata (`WORKLOAD_NAME`, `NAMESPACE`,
//! `CLUSTER_ID`, `MESH_ID`, `LABELS`, `ISTIO_VERSION`, ...). The glue reads the `xds.node`
//! property once per VM, as a serialized `envoy.config.core.v3.Node`; this module decodes the
//! few fields it needs with prost's wire primitives and maps them to OpenTelemetry resource
//! attributes, which the OTLP batch header encodes once. Configuration overrides win.

use std::collections::BTreeMap;

/// `service.name` when neither the configuration nor the node names the service.
pub const DEFAULT_SERVICE_NAME: &str = "unknown_service:envoy";

use crate::protobuf::{fields, struct_entries, value_struct, Wire};

use crate::export::otlp::ResourceValue;
use crate::span::faas::{FaasConfig, LABEL_CONFIGURATION, LABEL_REVISION, LABEL_SERVICE};

/// The node facts that become resource attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `Node.id`, e.g. `sidecar~10.1.2.3~reviews-v2-7f9.default~default.svc.cluster.local`.
    pub id: String,
    /// `NAME`: the pod name.
    pub pod_name: Option<String>,
    /// `WORKLOAD_NAME`: the deployment (or other owner) name.
    pub workload_name: Option<String>,
    /// `NAMESPACE`.
    pub namespace: Option<String>,
    /// `CLUSTER_ID`.
    pub cluster_id: Option<String>,
    /// `MESH_ID`.
    pub mesh_id: Option<String>,
    /// `ISTIO_VERSION`.
    pub istio_version: Option<String>,
    /// `OWNER`, e.g. `kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2`.
    pub owner: Option<String>,
    /// `LABELS`: the pod's labels.
    pub labels: BTreeMap<String, String>,
}

/// A protobuf `string` from outside input (the node is the control plane's): invalid UTF-8
/// becomes U+FFFD, as everywhere text reaches a span or resource.
fn string(b: &[u8]) -> Option<String> {
    Some(String::from_utf8_lossy(b).into_owned())
}

/// A `google.protobuf.Value` as a string: string values as they are, numbers and booleans
/// spelled out; lists, structs and nulls are not strings.
fn value_string(v: &[u8]) -> Option<String> {
    fields(v).find_map(|(tag, w)| match (tag, w) {
        (3, Wire::Bytes(s)) => string(s),
        (2, Wire::Fixed64(bits)) => Some(format!("{}", f64::from_bits(bits))),
        (4, Wire::Varint(b)) => Some((b != 0).to_string()),
        _ => None,
    })
}

impl NodeInfo {
    /// Decodes a serialized `envoy.config.core.v3.Node` (the `xds.node` property). Unknown and
    /// malformed parts are skipped: a node we cannot read still gives a resource.
    pub fn from_node_proto(buf: &[u8]) -> Self {
        let mut n = Self::default();
        for (tag, w) in fields(buf) {
            match (tag, w) {
                (1, Wire::Bytes(id)) => n.id = string(id).unwrap_or_default(),
                (3, Wire::Bytes(meta)) => n.read_metadata(meta),
                _ => {}
            }
        }
        n
    }

    fn read_metadata(&mut self, meta: &[u8]) {
        for (key, value) in struct_entries(meta) {
            let slot = match key {
                b"NAME" => &mut self.pod_name,
                b"WORKLOAD_NAME" => &mut self.workload_name,
                b"NAMESPACE" => &mut self.namespace,
                b"CLUSTER_ID" => &mut self.cluster_id,
                b"MESH_ID" => &mut self.mesh_id,
                b"ISTIO_VERSION" => &mut self.istio_version,
                b"OWNER" => &mut self.owner,
                b"LABELS" => {
                    if let Some(labels) = value_struct(value) {
                        for (k, v) in struct_entries(labels) {
                            if let (Some(k), Some(v)) = (string(k), value_string(v)) {
                                self.labels.insert(k, v);
                            }
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            *slot = value_string(value).filter(|s| !s.is_empty());
        }
    }

    /// The workload's version from its pod labels, as `service.version` takes it
    /// (`service.istio.io/canonical-revision`, `app.kubernetes.io/version`, `version`).
    pub fn workload_version(&self) -> Option<&str> {
        self.label("service.istio.io/canonical-revision")
            .or_else(|| self.label("app.kubernetes.io/version"))
            .or_else(|| self.label("version"))
    }

    fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The pod name: `NAME`, else the pod part of an Istio node id
    /// (`sidecar~<ip>~<pod>.<namespace>~<domain>`).
    fn pod(&self) -> Option<&str> {
        self.pod_name.as_deref().or_else(|| {
            let pod_ns = self.id.split('~').nth(2)?;
            pod_ns.split('.').next().filter(|p| !p.is_empty())
        })
    }

    /// The deployment behind this workload: `WORKLOAD_NAME` unless `OWNER` says the workload
    /// is something else (a StatefulSet, a bare pod).
    fn deployment(&self) -> Option<&str> {
        match &self.owner {
            Some(o) if !o.contains("/deployments/") => None,
            _ => self.workload_name.as_deref(),
        }
    }

    /// Whether the node is an Istio ambient waypoint. `pilot-agent proxy waypoint` names its
    /// node `waypoint~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`: the first field of an
    /// Istio node id is the proxy type (`sidecar`, `router`, `waypoint`; Istio's
    /// `pkg/model/proxy.go`), and it is the one marker every waypoint carries whatever its
    /// labels (a Gateway-API ingress gateway has the same `gateway-name` label).
    pub fn is_waypoint(&self) -> bool {
        self.id.starts_with("waypoint~")
    }

    /// Whether the pod is a Knative Serving revision's: it carries one of Knative's
    /// `serving.knative.dev/{service,configuration,revision}` labels.
    pub fn is_knative(&self) -> bool {
        [LABEL_SERVICE, LABEL_CONFIGURATION, LABEL_REVISION]
            .iter()
            .any(|l| self.label(l).is_some())
    }

    /// Whether the node looks like an Istio proxy.
    fn is_istio(&self) -> bool {
        self.istio_version.is_some() || self.mesh_id.is_some()
    }

    /// Resource attributes in their final order: node facts, then the configured
    /// `service_name`, then the configured `resource` map (each later one wins).
    pub fn resource(
        &self,
        service_name: Option<&str>,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<(String, ResourceValue)> {
        self.resource_with(service_name, overrides, None)
    }

    /// [`NodeInfo::resource`] with the configured `faas` section. A function (configured, or
    /// a pod with Knative's labels, [`NodeInfo::is_knative`]) adds the FaaS resource
    /// (semantic conventions `docs/resource/faas.md`): `faas.name` (configured, else the
    /// `serving.knative.dev/service` label, else `/configuration`, else `service.name`),
    /// `faas.version` (configured, else the `serving.knative.dev/revision` label),
    /// `faas.instance` (the pod name) and the configured `cloud.provider`, `cloud.platform`,
    /// `cloud.region`. The configured `resource` map still wins.
    pub fn resource_with(
        &self,
        service_name: Option<&str>,
        overrides: &BTreeMap<String, String>,
        faas: Option<&FaasConfig>,
    ) -> Vec<(String, ResourceValue)> {
        let mut out: Vec<(String, ResourceValue)> = Vec::new();
        let mut set = |k: &str, v: &str| {
            let v = ResourceValue::Str(v.to_owned());
            match out.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v,
                None => out.push((k.to_owned(), v)),
            }
        };
        // A waypoint's spans are produced by the waypoint, whatever Service they are for:
        // it is named by its Gateway (the Service it fronts goes on each span as
        // `mesh.destination.service.name`), as Istio's own tracer does since 1.30.
        let gateway = self
            .is_waypoint()
            .then(|| {
                self.label("gateway.networking.k8s.io/gateway-name")
                    .or_else(|| self.label("istio.io/gateway-name"))
            })
            .flatten();
        let name = gateway
            .or_else(|| self.label("service.istio.io/canonical-name"))
            .or_else(|| self.label("app.kubernetes.io/name"))
            .or_else(|| self.label("app"))
            .or(self.workload_name.as_deref())
            .unwrap_or(DEFAULT_SERVICE_NAME);
        set("service.name", name);
        if let Some(v) = self.workload_version() {
            set("service.version", v);
        }
        if let Some(ns) = &self.namespace {
            set("service.namespace", ns);
            set("k8s.namespace.name", ns);
        }
        if let Some(p) = self.pod() {
            set("k8s.pod.name", p);
        }
        if let Some(d) = self.deployment() {
            set("k8s.deployment.name", d);
        }
        if let Some(c) = &self.cluster_id {
            set("k8s.cluster.name", c);
        }
        if self.is_istio() {
            set("service.mesh", "istio");
        }
        if let Some(m) = &self.mesh_id {
            set("istio.mesh_id", m);
        }
        if let Some(v) = &self.istio_version {
            set("istio.version", v);
        }
        if let Some(s) = service_name {
            set("service.name", s);
        }
        if faas.is_some_and(FaasConfig::describes_function) || self.is_knative() {
            let c = faas.cloned().unwrap_or_default();
            let fname = c
                .name
                .as_deref()
                .or_else(|| self.label(LABEL_SERVICE))
                .or_else(|| self.label(LABEL_CONFIGURATION))
                .unwrap_or(service_name.unwrap_or(name));
            set("faas.name", fname);
            if let Some(v) = c.version.as_deref().or_else(|| self.label(LABEL_REVISION)) {
                set("faas.version", v);
            }
            if let Some(p) = self.pod() {
                set("faas.instance", p);
            }
            for (k, v) in [
                ("cloud.provider", &c.provider),
                ("cloud.platform", &c.platform),
                ("cloud.region", &c.region),
            ] {
                if let Some(v) = v {
                    set(k, v);
                }
            }
        }
        for (k, v) in overrides {
            set(k, v);
        }
        out.push((
            "telemetry.sdk.name".into(),
            ResourceValue::Str(crate::SCOPE_NAME.into()),
        ));
        out.push((
            "telemetry.sdk.language".into(),
            ResourceValue::Str("rust".into()),
        ));
        out.push((
            "telemetry.sdk.version".into(),
            ResourceValue::Str(crate::VERSION.into()),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::protobuf::*;

    fn istio_node() -> Vec<u8> {
        let labels = struct_value(&[
            ("app", string_value("reviews")),
            ("version", string_value("v2")),
            (
                "service.istio.io/canonical-name",
                string_value("reviews-svc"),
            ),
            (
                "service.istio.io/canonical-revision",
                string_value("v2-rc1"),
            ),
        ]);
        let mut labels_value = Vec::new();
        bytes(5, &labels, &mut labels_value);
        let mut number = Vec::new();
        prost::encoding::encode_key(2, prost::encoding::WireType::SixtyFourBit, &mut number);
        number.extend_from_slice(&15021f64.to_le_bytes());
        node(
            "sidecar~10.1.2.3~reviews-v2-7f9c.default~default.svc.cluster.local",
            &[
                ("NAME", string_value("reviews-v2-7f9c")),
                ("WORKLOAD_NAME", string_value("reviews-v2")),
                ("NAMESPACE", string_value("default")),
                ("CLUSTER_ID", string_value("Kubernetes")),
                ("MESH_ID", string_value("cluster.local")),
                ("ISTIO_VERSION", string_value("1.28.0")),
                (
                    "OWNER",
                    string_value(
                        "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2",
                    ),
                ),
                ("ENVOY_STATUS_PORT", number),
                ("LABELS", labels_value),
            ],
        )
    }

    fn get<'a>(r: &'a [(String, ResourceValue)], k: &str) -> Option<&'a str> {
        r.iter().find(|(key, _)| key == k).map(|(_, v)| match v {
            ResourceValue::Str(s) => s.as_str(),
            _ => "<non-string>",
        })
    }

    #[test]
    fn decodes_istio_node_metadata() {
        let n = NodeInfo::from_node_proto(&istio_node());
        assert_eq!(n.workload_name.as_deref(), Some("reviews-v2"));
        assert_eq!(n.namespace.as_deref(), Some("default"));
        assert_eq!(n.labels.get("app").map(String::as_str), Some("reviews"));
        assert_eq!(n.labels.len(), 4);
        let r = n.resource(None, &BTreeMap::new());
        assert_eq!(get(&r, "service.name"), Some("reviews-svc"));
        assert_eq!(get(&r, "service.version"), Some("v2-rc1"));
        assert_eq!(get(&r, "service.namespace"), Some("default"));
        assert_eq!(get(&r, "k8s.namespace.name"), Some("default"));
        assert_eq!(get(&r, "k8s.pod.name"), Some("reviews-v2-7f9c"));
        assert_eq!(get(&r, "k8s.deployment.name"), Some("reviews-v2"));
        assert_eq!(get(&r, "k8s.cluster.name"), Some("Kubernetes"));
        assert_eq!(get(&r, "service.mesh"), Some("istio"));
        assert_eq!(get(&r, "istio.mesh_id"), Some("cluster.local"));
        assert_eq!(get(&r, "istio.version"), Some("1.28.0"));
        assert_eq!(get(&r, "telemetry.sdk.name"), Some("meshtrace"));
    }

    #[test]
    fn label_fallbacks_and_node_id_pod() {
        let labels = struct_value(&[
            ("app", string_value("ratings")),
            ("version", string_value("v1")),
        ]);
        let mut lv = Vec::new();
        bytes(5, &labels, &mut lv);
        let buf = node(
            "sidecar~10.0.0.9~ratings-v1-abc.bookinfo~bookinfo.svc.cluster.local",
            &[
                ("WORKLOAD_NAME", string_value("ratings-v1")),
                (
                    "OWNER",
                    string_value(
                        "kubernetes://apis/apps/v1/namespaces/bookinfo/statefulsets/ratings",
                    ),
                ),
                ("LABELS", lv),
            ],
        );
        let r = NodeInfo::from_node_proto(&buf).resource(None, &BTreeMap::new());
        assert_eq!(get(&r, "service.name"), Some("ratings"));
        assert_eq!(get(&r, "service.version"), Some("v1"));
        assert_eq!(get(&r, "k8s.pod.name"), Some("ratings-v1-abc"));
        // A StatefulSet is not a deployment.
        assert_eq!(get(&r, "k8s.deployment.name"), None);
        // No Istio markers: no service.mesh claim.
        assert_eq!(get(&r, "service.mesh"), None);
    }

    #[test]
    fn a_waypoint_is_named_by_its_gateway() {
        let labels = struct_value(&[
            (
                "gateway.networking.k8s.io/gateway-name",
                string_value("waypoint"),
            ),
            ("service.istio.io/canonical-name", string_value("reviews")),
            ("istio.io/dataplane-mode", string_value("none")),
        ]);
        let mut lv = Vec::new();
        bytes(5, &labels, &mut lv);
        let buf = node(
            "waypoint~10.1.4.7~waypoint-5d8f7c-k2x9p.default~default.svc.cluster.local",
            &[
                ("WORKLOAD_NAME", string_value("waypoint")),
                ("NAMESPACE", string_value("default")),
                ("ISTIO_VERSION", string_value("1.30.0")),
                ("LABELS", lv.clone()),
            ],
        );
        let n = NodeInfo::from_node_proto(&buf);
        assert!(n.is_waypoint());
        let r = n.resource(None, &BTreeMap::new());
        assert_eq!(get(&r, "service.name"), Some("waypoint"));
        assert_eq!(get(&r, "service.namespace"), Some("default"));
        assert_eq!(get(&r, "k8s.pod.name"), Some("waypoint-5d8f7c-k2x9p"));
        assert_eq!(get(&r, "service.mesh"), Some("istio"));
        // The same labels on a sidecar or a gateway change nothing: only the node type counts.
        let buf = node(
            "router~10.1.4.8~ingress-7c9-x.istio-system~istio-system.svc.cluster.local",
            &[("LABELS", lv)],
        );
        let n = NodeInfo::from_node_proto(&buf);
        assert!(!n.is_waypoint());
        let r = n.resource(None, &BTreeMap::new());
        assert_eq!(get(&r, "service.name"), Some("reviews"));
        assert!(!NodeInfo::from_node_proto(&istio_node()).is_waypoint());
    }

    #[test]
    fn config_overrides_win() {
        let n = NodeInfo::from_node_proto(&istio_node());
        let mut o = BTreeMap::new();
        o.insert("service.version".to_string(), "pinned".to_string());
        o.insert(
            "deployment.environment.name".to_string(),
            "prod".to_string(),
        );
        let r = n.resource(Some("checkout"), &o);
        assert_eq!(get(&r, "service.name"), Some("checkout"));
        assert_eq!(get(&r, "service.version"), Some("pinned"));
        assert_eq!(get(&r, "deployment.environment.name"), Some("prod"));
        assert_eq!(r.iter().filter(|(k, _)| k == "service.name").count(), 1);
    }

    fn knative_node() -> Vec<u8> {
        let labels = struct_value(&[
            ("app", string_value("hello-00002")),
            (LABEL_SERVICE, string_value("hello")),
            (LABEL_CONFIGURATION, string_value("hello")),
            (LABEL_REVISION, string_value("hello-00002")),
            ("service.istio.io/canonical-name", string_value("hello")),
        ]);
        let mut lv = Vec::new();
        bytes(5, &labels, &mut lv);
        node(
            "sidecar~10.1.7.3~hello-00002-deployment-5c9d-x7k2p.shop~shop.svc.cluster.local",
            &[
                ("NAME", string_value("hello-00002-deployment-5c9d-x7k2p")),
                ("NAMESPACE", string_value("shop")),
                ("ISTIO_VERSION", string_value("1.28.0")),
                ("LABELS", lv),
            ],
        )
    }

    #[test]
    fn a_knative_pod_is_a_function_named_by_its_labels() {
        let n = NodeInfo::from_node_proto(&knative_node());
        assert!(n.is_knative());
        let r = n.resource(None, &BTreeMap::new());
        assert_eq!(get(&r, "faas.name"), Some("hello"));
        assert_eq!(get(&r, "faas.version"), Some("hello-00002"));
        assert_eq!(
            get(&r, "faas.instance"),
            Some("hello-00002-deployment-5c9d-x7k2p")
        );
        assert_eq!(get(&r, "service.name"), Some("hello"));
        // Nothing says which cloud: no cloud.* guessed.
        assert_eq!(get(&r, "cloud.provider"), None);
        assert_eq!(get(&r, "cloud.platform"), None);
        // Not a Knative pod, no faas section: no faas.* at all.
        let r = NodeInfo::from_node_proto(&istio_node()).resource(None, &BTreeMap::new());
        assert!(!NodeInfo::from_node_proto(&istio_node()).is_knative());
        assert!(r
            .iter()
            .all(|(k, _)| !k.starts_with("faas.") && !k.starts_with("cloud.")));
    }

    #[test]
    fn configured_faas_values_win_over_labels_and_overrides_win_over_both() {
        let n = NodeInfo::from_node_proto(&knative_node());
        let c: FaasConfig = serde_json::from_str(
            r#"{"name": "greeter", "version": "7", "provider": "gcp",
                "platform": "gcp_cloud_run", "region": "europe-west1"}"#,
        )
        .unwrap();
        let mut o = BTreeMap::new();
        o.insert("cloud.region".to_string(), "europe-west4".to_string());
        let r = n.resource_with(None, &o, Some(&c));
        assert_eq!(get(&r, "faas.name"), Some("greeter"));
        assert_eq!(get(&r, "faas.version"), Some("7"));
        assert_eq!(get(&r, "cloud.provider"), Some("gcp"));
        assert_eq!(get(&r, "cloud.platform"), Some("gcp_cloud_run"));
        assert_eq!(get(&r, "cloud.region"), Some("europe-west4"));
        // A configured function without Knative labels: named like the service, the pod from
        // the node id, no version.
        let n = NodeInfo::from_node_proto(&istio_node());
        let r = n.resource_with(
            Some("thumbnails"),
            &BTreeMap::new(),
            Some(&FaasConfig::default()),
        );
        assert_eq!(get(&r, "faas.name"), Some("thumbnails"));
        assert_eq!(get(&r, "faas.version"), None);
        assert_eq!(get(&r, "faas.instance"), Some("reviews-v2-7f9c"));
        let r = n.resource_with(None, &BTreeMap::new(), Some(&FaasConfig::default()));
        assert_eq!(get(&r, "faas.name"), Some("reviews-svc"));
    }

    #[test]
    fn node_strings_that_are_not_utf8_are_replaced_not_dropped() {
        let mut bad_ns = Vec::new();
        bytes(3, b"shop\xff", &mut bad_ns);
        let mut bad_label = Vec::new();
        bytes(3, b"v\xe2\x82", &mut bad_label);
        let labels = struct_value(&[("version", bad_label)]);
        let mut labels_value = Vec::new();
        bytes(5, &labels, &mut labels_value);
        let node = node(
            "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local",
            &[("NAMESPACE", bad_ns), ("LABELS", labels_value)],
        );
        let n = NodeInfo::from_node_proto(&node);
        assert_eq!(n.namespace.as_deref(), Some("shop\u{FFFD}"));
        assert_eq!(
            n.labels.get("version").map(String::as_str),
            Some("v\u{FFFD}")
        );
    }

    #[test]
    fn empty_or_garbage_node_gives_a_default_resource() {
        for buf in [&[][..], &[0xff, 0xff, 0xff], &[0x0a, 0x7f, 0x41], &[0x0b]] {
            let r = NodeInfo::from_node_proto(buf).resource(None, &BTreeMap::new());
            assert_eq!(get(&r, "service.name"), Some("unknown_service:envoy"));
        }
        // Every truncation of a real node decodes without panicking.
        let full = istio_node();
        for cut in 0..full.len() {
            let _ = NodeInfo::from_node_proto(&full[..cut]);
        }
    }
}

/// The node is bytes from the host: decoding it must not panic, whatever arrives.
#[cfg(test)]
mod never_panic {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn node_decoding_accepts_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = NodeInfo::from_node_proto(&bytes);
        }
    }
}
