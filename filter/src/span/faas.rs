//! Functions in the mesh: the FaaS attributes of a function's sidecar, and Knative revisions
//! as releases.
//!
//! Follows the OpenTelemetry FaaS semantic conventions (v1.44.0, `docs/faas/faas-spans.md`,
//! `docs/resource/faas.md`; every attribute there is Development):
//!
//! - a workload is a **function** when its pod carries Knative Serving's labels
//!   (`serving.knative.dev/service`, `/configuration` or `/revision`, in Istio's node
//!   metadata) or the configuration has a `faas` section. Its resource then carries
//!   `faas.name`, `faas.version`, `faas.instance` and `cloud.*`
//!   ([`crate::resource::NodeInfo::resource_with`]), computed once per VM;
//! - SERVER spans of a function carry `faas.trigger` (configured, `http` by default), and the
//!   first one of the proxy process `faas.coldstart: true` (the adapter decides which; see
//!   [`crate::span::mesh::RequestFacts::coldstart`]);
//! - a request carrying Knative's `Knative-Serving-Revision` header (set per traffic split by
//!   Knative's ingress, `pkg/reconciler/route/resources/ingress.go`) records the revision as
//!   `mesh.knative.revision` (and `mesh.knative.namespace`), and the revision stands for the
//!   subset in the traffic rules and weights (`mesh.release`, `mesh.canary`,
//!   `mesh.traffic.weight`), so a Knative split between revisions is tagged like an Istio
//!   canary. A CLIENT span also names the function it calls: `faas.invoked_name`, the
//!   revision's Configuration (Knative names revisions `<configuration>-<5-digit generation>`);
//! - CLIENT spans of AWS Lambda invocations through Envoy's aws_lambda filter
//!   (`faas.lambda`): see [`lambda`];
//! - calls to functions on a cloud platform (Cloud Run, Cloud Functions, Azure Functions),
//!   named by configured rules, `faas.upstreams`: see [`upstream`].
//!
//! A `faas` section holding only the keys that describe the functions this workload calls
//! (`lambda*`, `upstreams`) does not make this workload a function.

pub mod lambda;
pub mod upstream;

use serde::Deserialize;

use super::{Finish, SpanKind, SpanRecord};
use crate::error::ConfigError;
use crate::headers::RequestHeaders;

/// The pod label naming the Knative Service (inherited by every revision's pods).
pub const LABEL_SERVICE: &str = "serving.knative.dev/service";
/// The pod label naming the Knative Configuration.
pub const LABEL_CONFIGURATION: &str = "serving.knative.dev/configuration";
/// The pod label naming the Knative Revision.
pub const LABEL_REVISION: &str = "serving.knative.dev/revision";

/// The `faas.trigger` values the conventions define.
pub const TRIGGERS: [&str; 5] = ["datasource", "http", "pubsub", "timer", "other"];

/// `faas` in the configuration: the function this sidecar fronts. Every key is optional;
/// the section's presence alone makes the workload a function. Node metadata fills what is
/// not configured (`name`, `version` from Knative's labels).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct FaasConfig {
    /// `faas.name`; default: the `serving.knative.dev/service` (else `/configuration`) label,
    /// else the resource's `service.name`.
    pub name: Option<String>,
    /// `faas.version`; default: the `serving.knative.dev/revision` label.
    pub version: Option<String>,
    /// `cloud.provider`, e.g. `gcp`, `aws`, `azure` (custom values allowed).
    pub provider: Option<String>,
    /// `cloud.platform`, e.g. `gcp_cloud_run`, `aws_lambda`.
    pub platform: Option<String>,
    /// `cloud.region`, e.g. `europe-west1`.
    pub region: Option<String>,
    /// `faas.trigger` on SERVER spans: one of [`TRIGGERS`]; default `http`.
    pub trigger: Option<String>,
    /// Lambda functions this sidecar calls through Envoy's aws_lambda filter, keyed by
    /// cluster (see [`lambda`]). Calling functions does not make this workload one.
    pub lambda: Vec<lambda::LambdaUpstream>,
    /// Ask Lambda upstreams for the log tail (`X-Amz-Log-Type: Tail`) and read its `REPORT`
    /// line: cold start, billed duration, memory. Default false.
    pub lambda_log_tail: bool,
    /// Price per GB-second of billed duration, for `aws.lambda.estimated_cost_usd`
    /// (e.g. `0.0000166667`, us-east-1 x86); unset: no cost is recorded.
    pub lambda_price_per_gb_second: Option<f64>,
    /// Functions this workload calls: rules naming serverless upstreams by host or cluster
    /// ([`upstream`]). A section holding only `upstreams` does not make the workload a
    /// function (a gateway calling Cloud Run is no function itself).
    pub upstreams: Vec<upstream::UpstreamRule>,
}
crate::config::section::object_section!(FaasConfig);

impl FaasConfig {
    /// Checks the section.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field and value: `faas.trigger: expected one of
    /// datasource, http, pubsub, timer, other, got "cron"`, or `faas.name: must be a
    /// non-empty string when set`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("name", &self.name),
            ("version", &self.version),
            ("provider", &self.provider),
            ("platform", &self.platform),
            ("region", &self.region),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::new(
                    &format!("faas.{field}"),
                    "must be a non-empty string when set",
                ));
            }
        }
        if let Some(t) = &self.trigger {
            if !TRIGGERS.contains(&t.as_str()) {
                return Err(ConfigError::new(
                    "faas.trigger",
                    format!("expected one of {}, got {t:?}", TRIGGERS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Whether the section describes this workload as a function: any key but those of the
    /// functions it calls (`lambda`, `lambda_log_tail`, `lambda_price_per_gb_second`,
    /// `upstreams`) is set, or none at all is (`"faas": {}`).
    pub fn describes_function(&self) -> bool {
        let upstream_only = !self.lambda.is_empty()
            || self.lambda_log_tail
            || self.lambda_price_per_gb_second.is_some()
            || !self.upstreams.is_empty();
        let own = self.name.is_some()
            || self.version.is_some()
            || self.provider.is_some()
            || self.platform.is_some()
            || self.region.is_some()
            || self.trigger.is_some();
        own || !upstream_only
    }

    /// `faas.trigger` as configured, `http` by default.
    pub fn trigger(&self) -> &'static str {
        let t = self.trigger.as_deref().unwrap_or("http");
        TRIGGERS.into_iter().find(|k| *k == t).unwrap_or("http")
    }
}

/// The compiled `faas` section: whether this workload is a function, and its trigger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faas {
    function: bool,
    trigger: &'static str,
}

impl Faas {
    /// From the configuration: a `faas` section makes the workload a function.
    ///
    /// # Errors
    /// See [`FaasConfig::validate`].
    pub fn compile(c: Option<&FaasConfig>) -> Result<Self, ConfigError> {
        if let Some(c) = c {
            c.validate()?;
        }
        Ok(Self {
            function: c.is_some_and(FaasConfig::describes_function),
            trigger: c.map_or("http", FaasConfig::trigger),
        })
    }

    /// Adds what the node says: a pod with Knative's labels
    /// ([`crate::resource::NodeInfo::is_knative`]) is a function too.
    pub fn for_node(self, knative: bool) -> Self {
        Self {
            function: self.function || knative,
            trigger: if self.trigger.is_empty() {
                "http"
            } else {
                self.trigger
            },
        }
    }

    /// Whether this workload is a function (SERVER spans get `faas.*`).
    pub fn is_function(&self) -> bool {
        self.function
    }

    /// The FaaS and Knative attributes of a finished span: `faas.trigger` and
    /// `faas.coldstart` on a function's SERVER spans; `mesh.knative.revision`,
    /// `mesh.knative.namespace` and, on CLIENT spans, `faas.invoked_name` for a request to a
    /// Knative revision.
    pub fn finish(&self, rec: &mut SpanRecord, f: &Finish<'_>) {
        if self.function && f.kind == SpanKind::Server {
            rec.str("faas.trigger", self.trigger.as_bytes());
            if f.request.coldstart {
                rec.bool("faas.coldstart", true);
            }
        }
        if let Some(k) = &f.request.knative {
            rec.str("mesh.knative.revision", k.revision());
            if let Some(ns) = k.namespace() {
                rec.str("mesh.knative.namespace", ns);
            }
            if f.kind == SpanKind::Client {
                if let Some(name) = k.configuration() {
                    rec.str("faas.invoked_name", name);
                }
            }
        }
    }
}

/// Longest Kubernetes object name that is a DNS label (RFC 1123), as revisions and
/// namespaces are.
pub const MAX_LABEL: usize = 63;

/// The Knative revision a request was sent to, from `Knative-Serving-Revision` and
/// `Knative-Serving-Namespace`, copied inline so it outlives the request headers without an
/// allocation. Only valid DNS labels are kept: the header is client-controlled past the
/// ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnativeTarget {
    revision: [u8; MAX_LABEL],
    revision_len: u8,
    namespace: [u8; MAX_LABEL],
    namespace_len: u8,
}

/// A DNS label (RFC 1123: 1 to 63 of `a-z0-9-`, alphanumeric at both ends), trimmed.
fn dns_label(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    let ok = !v.is_empty()
        && v.len() <= MAX_LABEL
        && v.iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && v.first() != Some(&b'-')
        && v.last() != Some(&b'-');
    ok.then_some(v)
}

impl KnativeTarget {
    /// The revision the request names, if it carries a valid `Knative-Serving-Revision`; an
    /// invalid namespace is left out, an invalid revision gives `None`.
    pub fn from_headers(h: &RequestHeaders<'_>) -> Option<Self> {
        let revision = dns_label(h.knative_serving_revision?)?;
        let namespace = h
            .knative_serving_namespace
            .and_then(dns_label)
            .unwrap_or(b"");
        let mut t = Self {
            revision: [0; MAX_LABEL],
            revision_len: revision.len() as u8,
            namespace: [0; MAX_LABEL],
            namespace_len: namespace.len() as u8,
        };
        t.revision[..revision.len()].copy_from_slice(revision);
        t.namespace[..namespace.len()].copy_from_slice(namespace);
        Some(t)
    }

    /// The revision name, e.g. `hello-00002`.
    pub fn revision(&self) -> &[u8] {
        &self.revision[..usize::from(self.revision_len)]
    }

    /// The revision's namespace, when the request named a valid one.
    pub fn namespace(&self) -> Option<&[u8]> {
        Some(&self.namespace[..usize::from(self.namespace_len)]).filter(|n| !n.is_empty())
    }

    /// The Configuration (for a Knative Service, the Service's name) of a revision named the
    /// way Knative generates names, `<configuration>-<5-digit generation>`
    /// (`pkg/reconciler/configuration/resources/revision.go`); `None` for a revision named by
    /// its author.
    pub fn configuration(&self) -> Option<&[u8]> {
        let r = self.revision();
        let (name, generation) = r.split_at(r.len().checked_sub(6)?);
        let digits = generation.strip_prefix(b"-")?;
        (!name.is_empty() && digits.iter().all(u8::is_ascii_digit)).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::mesh::RequestFacts;
    use crate::test_support::str_attr as s;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> RequestHeaders<'a> {
        RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn config_errors_name_the_field_and_value() {
        let bad = |json: &str| {
            let c: FaasConfig = serde_json::from_str(json).unwrap();
            Faas::compile(Some(&c)).unwrap_err().to_string()
        };
        assert_eq!(
            bad(r#"{"trigger": "cron"}"#),
            "faas.trigger: expected one of datasource, http, pubsub, timer, other, got \"cron\""
        );
        assert_eq!(
            bad(r#"{"name": " "}"#),
            "faas.name: must be a non-empty string when set"
        );
        assert_eq!(
            bad(r#"{"region": ""}"#),
            "faas.region: must be a non-empty string when set"
        );
        let c: FaasConfig = serde_json::from_str(r#"{"trigger": "pubsub"}"#).unwrap();
        assert_eq!(c.trigger(), "pubsub");
        assert!(serde_json::from_str::<FaasConfig>(r#"{"memory": 1}"#).is_err());
    }

    #[test]
    fn the_plugin_config_names_the_faas_field() {
        let load = |faas: &str| {
            let json = format!(r#"{{"collector": {{"cluster": "c"}}, "faas": {faas}}}"#);
            crate::config::load(json.as_bytes()).map(|c| c.span.faas)
        };
        assert!(load("{}").unwrap().is_function());
        assert_eq!(
            load(r#"{"trigger": "cron"}"#).unwrap_err().to_string(),
            "faas.trigger: expected one of datasource, http, pubsub, timer, other, got \"cron\""
        );
        let unknown = load(r#"{"memory": 128}"#).unwrap_err().to_string();
        assert!(
            unknown.starts_with("faas.memory: unknown field `memory`"),
            "{unknown}"
        );
        let c = crate::config::load(br#"{"collector": {"cluster": "c"}}"#).unwrap();
        assert!(!c.span.faas.is_function());
    }

    #[test]
    fn a_function_is_configured_or_labelled() {
        assert!(!Faas::compile(None).unwrap().for_node(false).is_function());
        assert!(Faas::compile(None).unwrap().for_node(true).is_function());
        let c = FaasConfig::default();
        assert!(Faas::compile(Some(&c))
            .unwrap()
            .for_node(false)
            .is_function());
        // Calling Lambda functions does not make this workload one; naming it does.
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:f";
        let only: FaasConfig = serde_json::from_str(&format!(
            r#"{{"lambda": [{{"cluster": "c", "arn": "{arn}"}}]}}"#
        ))
        .unwrap();
        assert!(!only.describes_function());
        assert!(!Faas::compile(Some(&only)).unwrap().is_function());
        let named = FaasConfig {
            name: Some("f".into()),
            ..only
        };
        assert!(Faas::compile(Some(&named)).unwrap().is_function());
        let tail_only: FaasConfig = serde_json::from_str(r#"{"lambda_log_tail": true}"#).unwrap();
        assert!(!tail_only.describes_function());
    }

    #[test]
    fn knative_headers_give_the_revision_and_its_configuration() {
        let h = headers(&[
            ("knative-serving-revision", "hello-00002"),
            ("Knative-Serving-Namespace", "shop"),
        ]);
        let t = KnativeTarget::from_headers(&h).unwrap();
        assert_eq!(t.revision(), b"hello-00002");
        assert_eq!(t.namespace(), Some(&b"shop"[..]));
        assert_eq!(t.configuration(), Some(&b"hello"[..]));
        // A revision named by its author has no derivable configuration.
        let h = headers(&[("knative-serving-revision", "hello-blue")]);
        let t = KnativeTarget::from_headers(&h).unwrap();
        assert_eq!(t.configuration(), None);
        assert_eq!(t.namespace(), None);
        // Not DNS labels: ignored (the revision), left out (the namespace).
        let long = "a".repeat(64);
        for bad in [
            "Hello-00001",
            "-x",
            "x-",
            "a b",
            "",
            long.as_str(),
            "h\u{e9}",
        ] {
            let pairs = [("knative-serving-revision", bad)];
            assert_eq!(KnativeTarget::from_headers(&headers(&pairs)), None, "{bad}");
        }
        let h = headers(&[
            ("knative-serving-revision", "r-00001"),
            ("knative-serving-namespace", "Bad_NS"),
        ]);
        assert_eq!(KnativeTarget::from_headers(&h).unwrap().namespace(), None);
        assert_eq!(KnativeTarget::from_headers(&headers(&[])), None);
        let h = headers(&[("knative-serving-revision", "-00001")]);
        assert_eq!(KnativeTarget::from_headers(&h), None);
        let h = headers(&[("knative-serving-revision", "00001")]);
        assert_eq!(
            KnativeTarget::from_headers(&h).unwrap().configuration(),
            None
        );
    }

    fn finished(faas: Faas, kind: SpanKind, request: RequestFacts) -> SpanRecord {
        let mut rec = SpanRecord::default();
        faas.finish(
            &mut rec,
            &Finish {
                kind,
                request: &request,
                ..Finish::default()
            },
        );
        rec
    }

    #[test]
    fn server_spans_of_a_function_carry_trigger_and_coldstart() {
        let c: FaasConfig = serde_json::from_str(r#"{"trigger": "pubsub"}"#).unwrap();
        let faas = Faas::compile(Some(&c)).unwrap();
        let cold = RequestFacts {
            coldstart: true,
            ..RequestFacts::default()
        };
        let rec = finished(faas, SpanKind::Server, cold);
        assert_eq!(s(&rec, "faas.trigger").as_deref(), Some("pubsub"));
        assert_eq!(
            rec.get("faas.coldstart"),
            Some(&crate::span::Value::Bool(true))
        );
        let rec = finished(faas, SpanKind::Server, RequestFacts::default());
        assert_eq!(s(&rec, "faas.trigger").as_deref(), Some("pubsub"));
        assert_eq!(rec.get("faas.coldstart"), None);
        // Client spans and non-functions carry neither.
        let rec = finished(faas, SpanKind::Client, cold);
        assert_eq!(rec.get("faas.trigger"), None);
        assert_eq!(rec.get("faas.coldstart"), None);
        let plain = Faas::compile(None).unwrap().for_node(false);
        let rec = finished(plain, SpanKind::Server, cold);
        assert_eq!(rec.get("faas.trigger"), None);
        assert_eq!(rec.get("faas.coldstart"), None);
        // A Knative pod is a function with the default trigger.
        let knative = Faas::compile(None).unwrap().for_node(true);
        let rec = finished(knative, SpanKind::Server, RequestFacts::default());
        assert_eq!(s(&rec, "faas.trigger").as_deref(), Some("http"));
    }

    #[test]
    fn a_request_to_a_revision_names_it_and_the_function() {
        let h = headers(&[
            ("knative-serving-revision", "hello-00001"),
            ("knative-serving-namespace", "shop"),
        ]);
        let facts = RequestFacts {
            knative: KnativeTarget::from_headers(&h),
            ..RequestFacts::default()
        };
        let plain = Faas::compile(None).unwrap();
        let rec = finished(plain, SpanKind::Client, facts);
        assert_eq!(
            s(&rec, "mesh.knative.revision").as_deref(),
            Some("hello-00001")
        );
        assert_eq!(s(&rec, "mesh.knative.namespace").as_deref(), Some("shop"));
        assert_eq!(s(&rec, "faas.invoked_name").as_deref(), Some("hello"));
        let rec = finished(plain, SpanKind::Server, facts);
        assert_eq!(
            s(&rec, "mesh.knative.revision").as_deref(),
            Some("hello-00001")
        );
        assert_eq!(rec.get("faas.invoked_name"), None);
    }
}
