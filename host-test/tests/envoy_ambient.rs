//! Ambient mode in real Envoy: meshtrace on a waypoint configured as Istio configures one
//! (`filter/envoy/waypoint.yaml`). The request comes through a ztunnel stand-in as HBONE
//! (HTTP/2 CONNECT over mTLS with the source workload's SPIFFE certificate); the waypoint's
//! `connect_terminate` listener hands the peer's identity and address to its `main_internal`
//! internal listener as Istio does (filter state `io.istio.peer_principal`, original_dst), where
//! meshtrace runs with the plugin config of `istio/ambient/waypoint.yaml` and `direction:
//! auto`, and routes to `inbound-vip|9080|http[/subset]|reviews.bookinfo.svc.cluster.local`.
//! Every test asserts exact span fields.

mod support;

use std::time::Duration;

use meshtrace_host_test::envoy::{envoy_binary, free_port, wasm_path, Envoy, EnvoyVars};
use meshtrace_host_test::sink::{OtlpSink, Upstream};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Value as Json};
use support::{attr, boolean, hex, int, response_flags as flags, str_attr, str_attr_opt, Certs};

const WAIT: Duration = Duration::from_secs(15);

/// The source workload's identity: what ztunnel presents for `productpage` in `bookinfo`.
const SOURCE_SPIFFE: &str = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage";
const SERVICE_CLUSTER: &str = "inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local";
const V2_CLUSTER: &str = "inbound-vip|9080|http/v2|reviews.bookinfo.svc.cluster.local";
const V3_CLUSTER: &str = "inbound-vip|9080|http/v3|reviews.bookinfo.svc.cluster.local";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The pluginConfig of the waypoint WasmPlugin in `istio/ambient/waypoint.yaml`, pointed at
/// the test sink and sampling everything (the manifest's 10% would make a test a coin toss).
fn plugin_config() -> String {
    let path = meshtrace_host_test::envoy::workspace_root().join("istio/ambient/waypoint.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<Json> = serde_norway::Deserializer::from_str(&text)
        .map(|d| <Json as serde::Deserialize>::deserialize(d).expect("manifest YAML"))
        .collect();
    let plugin = docs
        .iter()
        .find(|d| d["kind"] == "WasmPlugin" && d["metadata"]["name"] == "meshtrace-waypoint")
        .expect("the waypoint WasmPlugin");
    let mut cfg = plugin["spec"]["pluginConfig"].clone();
    assert_eq!(cfg["direction"], "auto", "the manifest relies on auto");
    cfg["collector"] = json!({"cluster": "otel_collector", "path": "/v1/traces"});
    cfg["batch"]["flush_interval_ms"] = json!(100);
    cfg["sampling"]["ratio"] = json!(1.0);
    cfg["sampling"]["max_per_second"] = json!(10_000);
    cfg.to_string()
}

/// Envoy on `waypoint.yaml`: the whole Service and its v2 subset as two recording upstreams.
struct Waypoint {
    sink: OtlpSink,
    service: Upstream,
    v2: Upstream,
    envoy: Envoy,
    _certs: Certs,
}

impl Waypoint {
    fn start() -> Self {
        let binary = envoy_binary().expect("Envoy lookup");
        let sink = OtlpSink::start(0).unwrap();
        let service = Upstream::start().unwrap();
        let v2 = Upstream::start().unwrap();
        let certs = Certs::new(
            "ambient",
            ("waypoint", "spiffe://cluster.local/ns/bookinfo/sa/waypoint"),
            ("productpage", SOURCE_SPIFFE),
        );
        let mut vars = EnvoyVars::new(
            wasm_path().unwrap(),
            service.addr.port(),
            sink.addr.port(),
            &plugin_config(),
        );
        vars.set("UPSTREAM2_PORT", v2.addr.port())
            .set("HBONE_PORT", free_port())
            .set("DEAD_PORT", free_port())
            .set("CERT_DIR", certs.dir.display())
            .set("SERVICE_CLUSTER", SERVICE_CLUSTER)
            .set("V2_CLUSTER", V2_CLUSTER)
            .set("V3_CLUSTER", V3_CLUSTER)
            .set("V2_ROUTE", "reviews-v2");
        let envoy = Envoy::start(&binary, "waypoint.yaml", vars).expect("start Envoy");
        Self {
            sink,
            service,
            v2,
            envoy,
            _certs: certs,
        }
    }

    /// The exported span whose `url.path` is `path` (waiting for it).
    fn span(&self, path: &str) -> Span {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self
                .sink
                .spans()
                .into_iter()
                .find(|s| str_attr_opt(s, "url.path").as_deref() == Some(path))
            {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no span for {path}; got {:?}\n{}",
                self.sink.spans(),
                self.envoy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What every span of this waypoint says about the hop: a SERVER span for `reviews` in
/// `bookinfo`, called by `productpage`'s identity over HBONE mTLS.
fn assert_hop(s: &Span, cluster: &str) {
    assert_eq!(s.kind, 2, "SERVER: a waypoint serves the Service it fronts");
    assert_eq!(str_attr(s, "mesh.upstream.cluster"), cluster);
    assert_eq!(
        str_attr(s, "mesh.upstream.service"),
        "reviews.bookinfo.svc.cluster.local"
    );
    assert_eq!(str_attr(s, "mesh.destination.service.name"), "reviews");
    assert_eq!(
        str_attr(s, "mesh.destination.service.namespace"),
        "bookinfo"
    );
    // The source: the identity the HBONE tunnel carried, not the internal connection's.
    assert_eq!(attr(s, "connection.mtls"), boolean(true));
    assert_eq!(str_attr(s, "mesh.peer.spiffe_id"), SOURCE_SPIFFE);
    assert_eq!(str_attr(s, "mesh.peer.namespace"), "bookinfo");
    assert_eq!(
        str_attr(s, "mesh.peer.service_account"),
        "bookinfo-productpage"
    );
    // The TLS session ended at connect_terminate: its version and subject are not claimed.
    assert_eq!(attr(s, "tls.protocol.version"), None);
    assert_eq!(attr(s, "tls.client.subject"), None);
    // The caller's address, restored on the internal connection from the HBONE one.
    assert_eq!(str_attr(s, "network.peer.address"), "127.0.0.1");
    assert_eq!(str_attr(s, "client.address"), "127.0.0.1");
    assert_eq!(str_attr(s, "server.address"), "reviews");
    assert_eq!(attr(s, "server.port"), int(9080));
}

#[test]
fn waypoint_span_for_the_fronted_service_with_source_and_destination() {
    let w = Waypoint::start();
    let r = w
        .envoy
        .request(
            "GET",
            "/reviews/7",
            &[("host", "reviews:9080"), ("traceparent", PARENT)],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", w.envoy.log());
    let up = w.service.take();
    assert_eq!(up.len(), 1);
    let s = w.span("/reviews/7");
    assert_hop(&s, SERVICE_CLUSTER);
    assert_eq!(s.name, "GET /reviews/{id}");
    assert_eq!(str_attr(&s, "http.route"), "/reviews/{id}");
    assert_eq!(str_attr(&s, "mesh.route.name"), "default");
    assert_eq!(attr(&s, "http.response.status_code"), int(200));
    // The whole Service, not a subset: no subset, no release.
    assert_eq!(attr(&s, "mesh.upstream.subset"), None);
    assert_eq!(attr(&s, "mesh.release"), None);
    assert_eq!(attr(&s, "mesh.canary"), None);
    assert_eq!(attr(&s, "envoy.response_flags"), None);
    assert!(s.status.as_ref().is_none_or(|st| st.code == 0));
    // The trace continues through the waypoint, and the pod's parent is the waypoint's span.
    assert_eq!(hex(&s.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        up[0].get("traceparent"),
        Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hex(&s.span_id)).as_str())
    );

    // The resource is the waypoint itself, named by its Gateway.
    let req = &w.sink.received()[0];
    let res = req.request.resource_spans[0].resource.as_ref().unwrap();
    let res: Vec<(String, String)> = res
        .attributes
        .iter()
        .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some((a.key.clone(), v.clone())),
            _ => None,
        })
        .collect();
    for (k, v) in [
        ("service.name", "waypoint"),
        ("service.namespace", "bookinfo"),
        ("k8s.namespace.name", "bookinfo"),
        ("k8s.pod.name", "waypoint-5d8f7c-k2x9p"),
        ("k8s.deployment.name", "waypoint"),
        ("service.mesh", "istio"),
        ("istio.version", "1.30.0"),
    ] {
        assert_eq!(
            res.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str()),
            Some(v),
            "{k} in {res:?}"
        );
    }
}

#[test]
fn canary_subset_routed_by_the_waypoint_is_tagged() {
    let w = Waypoint::start();
    let r = w
        .envoy
        .request(
            "GET",
            "/reviews/8",
            &[
                ("host", "reviews:9080"),
                ("end-user", "jason"),
                ("x-ab-group", "b"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", w.envoy.log());
    assert_eq!(w.v2.take().len(), 1, "the v2 subset served it");
    assert_eq!(w.service.take().len(), 0);
    let s = w.span("/reviews/8");
    assert_hop(&s, V2_CLUSTER);
    assert_eq!(str_attr(&s, "mesh.upstream.subset"), "v2");
    assert_eq!(str_attr(&s, "mesh.release"), "canary");
    assert_eq!(attr(&s, "mesh.canary"), boolean(true));
    assert_eq!(attr(&s, "mesh.traffic.weight"), int(10));
    assert_eq!(str_attr(&s, "mesh.ab_group"), "b");
    assert_eq!(str_attr(&s, "mesh.route.name"), "reviews-v2");
    assert_eq!(s.name, "GET /reviews/{id}");
}

#[test]
fn failures_and_faults_at_the_waypoint_and_its_stats() {
    let w = Waypoint::start();
    let r = w
        .envoy
        .request("GET", "/v3/reviews/9", &[("host", "reviews:9080")])
        .unwrap();
    assert_eq!(r.status, 503);
    let r = w
        .envoy
        .request(
            "GET",
            "/reviews/10",
            &[
                ("host", "reviews:9080"),
                ("x-envoy-fault-abort-request", "429"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 429);

    let dead = w.span("/v3/reviews/9");
    assert_hop(&dead, V3_CLUSTER);
    assert_eq!(str_attr(&dead, "mesh.upstream.subset"), "v3");
    assert_eq!(attr(&dead, "mesh.release"), None, "no rule for v3");
    assert_eq!(attr(&dead, "http.response.status_code"), int(503));
    assert_eq!(flags(&dead), ["UF"]);
    assert_eq!(str_attr(&dead, "error.type"), "upstream_connect_failure");
    assert_eq!(dead.status.as_ref().map(|st| st.code), Some(2), "ERROR");

    let fault = w.span("/reviews/10");
    assert_hop(&fault, SERVICE_CLUSTER);
    assert_eq!(attr(&fault, "http.response.status_code"), int(429));
    assert_eq!(attr(&fault, "mesh.fault.injected"), boolean(true));
    assert_eq!(str_attr(&fault, "mesh.fault.type"), "abort");
    assert_eq!(flags(&fault), ["FI"]);
    assert_eq!(str_attr(&fault, "error.type"), "fault_injected");
    assert!(
        fault.status.as_ref().is_none_or(|st| st.code == 0),
        "a 4xx is not the server's error"
    );

    // Two requests, two spans, both exported. Each came on its own HBONE stream, so each
    // internal connection's facts (and the peer's identity) were read once.
    assert_eq!(w.envoy.wait_stat("meshtrace.spans_exported", 2, WAIT), 2);
    assert_eq!(w.envoy.stat("meshtrace.spans_started"), 2);
    assert_eq!(w.envoy.stat("meshtrace.spans_sampled"), 2);
    assert_eq!(w.envoy.stat("meshtrace.spans_dropped.queue_full"), 0);
    assert_eq!(
        w.envoy.stat("meshtrace.export_requests.ok"),
        w.sink.received().len() as u64
    );
    assert_eq!(w.envoy.stat("meshtrace.connection_facts.read"), 2);
    assert_eq!(w.envoy.stat("meshtrace.connection_facts.cached"), 0);
}
