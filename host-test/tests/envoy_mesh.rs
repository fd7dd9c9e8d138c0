//! Mesh semantics in real Envoy: Envoy's fault filter
//! (abort, fixed delay, header-controlled, before and after meshtrace), weighted clusters named
//! in Istio form built from `istio/examples/canary.yaml` with the traffic rules of
//! `istio/wasmplugin.yaml`, an mTLS inbound listener with a SPIFFE client certificate, Istio
//! node metadata as the resource, and retries. Every test asserts exact span fields.

mod support;

use std::time::Duration;

use meshtrace_host_test::envoy::{envoy_binary, free_port, wasm_path, Envoy, EnvoyVars};
use meshtrace_host_test::sink::{OtlpSink, Upstream};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Value as Json};
use support::{attr, boolean, find, int, response_flags as flags, str_attr, str_attr_opt, Certs};

const WAIT: Duration = Duration::from_secs(15);

fn manifests(path: &str) -> Vec<Json> {
    let text = std::fs::read_to_string(meshtrace_host_test::envoy::workspace_root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| <Json as serde::Deserialize>::deserialize(d).expect("manifest YAML"))
        .filter(|d| !d.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The pluginConfig of a WasmPlugin in `istio/wasmplugin.yaml`, pointed at the test sink
/// and sampling everything (the manifest's 10% would make a test a coin toss).
fn plugin_config(name: &str) -> String {
    let docs = manifests("istio/wasmplugin.yaml");
    let mut cfg = kind(&docs, "WasmPlugin", name)["spec"]["pluginConfig"].clone();
    cfg["collector"] = json!({"cluster": "otel_collector", "path": "/v1/traces"});
    cfg["batch"]["flush_interval_ms"] = json!(100);
    cfg["sampling"]["ratio"] = json!(1.0);
    // A configured route template, which must win over the automatic `{id}` templater.
    cfg["routes"] = json!(["/reviews/{review_id}"]);
    cfg.to_string()
}

/// What the canary example says: clusters, weights, the A/B header match.
struct Canary {
    v1: String,
    v2: String,
    v1_weight: u64,
    v2_weight: u64,
    split_route: String,
    ab_route: String,
    ab_header: String,
    ab_value: String,
    ab_cluster: String,
}

fn cluster(dest: &Json) -> String {
    format!(
        "outbound|{}|{}|{}",
        dest["port"]["number"],
        dest["subset"].as_str().unwrap(),
        dest["host"].as_str().unwrap()
    )
}

fn canary() -> Canary {
    let docs = manifests("istio/examples/canary.yaml");
    let vs = kind(&docs, "VirtualService", "reviews");
    let http = vs["spec"]["http"].as_array().unwrap();
    let ab = http.iter().find(|r| r["match"].is_array()).unwrap();
    let split = http.iter().find(|r| r["match"].is_null()).unwrap();
    let (ab_header, ab_match) = ab["match"][0]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let weighted = split["route"].as_array().unwrap();
    assert_eq!(weighted.len(), 2);
    let dr = kind(&docs, "DestinationRule", "reviews");
    let subsets: Vec<&str> = dr["spec"]["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(subsets, ["v1", "v2"]);
    Canary {
        v1: cluster(&weighted[0]["destination"]),
        v2: cluster(&weighted[1]["destination"]),
        v1_weight: weighted[0]["weight"].as_u64().unwrap(),
        v2_weight: weighted[1]["weight"].as_u64().unwrap(),
        split_route: split["name"].as_str().unwrap().into(),
        ab_route: ab["name"].as_str().unwrap().into(),
        ab_header: ab_header.clone(),
        ab_value: ab_match["exact"].as_str().unwrap().into(),
        ab_cluster: cluster(&ab["route"][0]["destination"]),
    }
}

/// The abort status of the fault-injection example (its percentages and 2 s delay are
/// replaced by 100% and 50 ms so every request is faulted quickly).
fn abort_status() -> u64 {
    let docs = manifests("istio/examples/fault-injection.yaml");
    let vs = kind(&docs, "VirtualService", "ratings");
    vs["spec"]["http"][0]["fault"]["abort"]["httpStatus"]
        .as_u64()
        .unwrap()
}

const CLIENT_SPIFFE: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

/// Envoy on `mesh.yaml` with two recording upstreams (v1, v2) and an OTLP sink.
struct Mesh {
    sink: OtlpSink,
    v1: Upstream,
    v2: Upstream,
    envoy: Envoy,
    canary: Canary,
    _certs: Certs,
}

impl Mesh {
    fn start(client_config: &str) -> Self {
        let binary = envoy_binary().expect("Envoy lookup");
        let sink = OtlpSink::start(0).unwrap();
        let v1 = Upstream::start().unwrap();
        let v2 = Upstream::start().unwrap();
        let certs = Certs::new(
            "mesh",
            (
                "reviews",
                "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
            ),
            ("frontend", CLIENT_SPIFFE),
        );
        let canary = canary();
        let mut vars = EnvoyVars::new(
            wasm_path().unwrap(),
            v1.addr.port(),
            sink.addr.port(),
            client_config,
        );
        vars.set("UPSTREAM2_PORT", v2.addr.port())
            .set("WASM_FIRST_PORT", free_port())
            .set("MTLS_PORT", free_port())
            .set("CALLER_PORT", free_port())
            .set("DEAD_PORT", free_port())
            .set("CERT_DIR", certs.dir.display())
            .set("ABORT_STATUS", abort_status())
            .set("V1_CLUSTER", &canary.v1)
            .set("V2_CLUSTER", &canary.v2)
            .set("V1_WEIGHT", canary.v1_weight)
            .set("V2_WEIGHT", canary.v2_weight)
            .set("SPLIT_ROUTE", &canary.split_route)
            .set("AB_ROUTE", &canary.ab_route)
            .set("AB_HEADER", &canary.ab_header)
            .set("AB_VALUE", &canary.ab_value)
            .set("AB_CLUSTER", &canary.ab_cluster)
            .set(
                "SERVER_PLUGIN_CONFIG",
                plugin_config("meshtrace-server").replace('\'', "''"),
            );
        let envoy = Envoy::start(&binary, "mesh.yaml", vars).expect("start Envoy");
        Self {
            sink,
            v1,
            v2,
            envoy,
            canary,
            _certs: certs,
        }
    }

    fn port(&self, name: &str) -> u16 {
        let key = format!("{{{{{name}}}}}");
        self.envoy
            .vars
            .extra
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap()
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

fn mesh() -> Mesh {
    Mesh::start(&plugin_config("meshtrace-client"))
}

fn no_fault(s: &Span) {
    for k in [
        "mesh.fault.injected",
        "mesh.fault.type",
        "mesh.fault.delay_ms",
    ] {
        assert_eq!(attr(s, k), None, "{k}");
    }
    assert!(s.events.iter().all(|e| e.name != "fault.injected"));
}

/// The `fault.injected` events as (type, other attributes).
fn fault_events(s: &Span) -> Vec<(String, Vec<(String, Value)>)> {
    s.events
        .iter()
        .filter(|e| e.name == "fault.injected")
        .map(|e| {
            let ty = match find(&e.attributes, "mesh.fault.type") {
                Some(Value::StringValue(t)) => t.clone(),
                other => panic!("event type {other:?}"),
            };
            let rest = e
                .attributes
                .iter()
                .filter(|a| a.key != "mesh.fault.type")
                .map(|a| (a.key.clone(), a.value.clone().unwrap().value.unwrap()))
                .collect();
            (ty, rest)
        })
        .collect()
}

fn assert_abort(s: &Span, status: i64, route: Option<&str>) {
    assert_eq!(attr(s, "http.response.status_code"), int(status));
    assert_eq!(attr(s, "mesh.fault.injected"), boolean(true));
    assert_eq!(str_attr(s, "mesh.fault.type"), "abort");
    assert_eq!(attr(s, "mesh.fault.delay_ms"), None);
    assert_eq!(str_attr(s, "error.type"), "fault_injected");
    assert_eq!(flags(s), ["FI"]);
    assert_eq!(
        str_attr(s, "envoy.response.code_details"),
        "fault_filter_abort"
    );
    assert_eq!(s.status.as_ref().map(|st| st.code), Some(2), "ERROR");
    assert_eq!(s.kind, 3, "CLIENT on an outbound sidecar listener");
    if let Some(r) = route {
        assert_eq!(str_attr(s, "mesh.route.name"), r);
    }
}

#[test]
fn fault_filter_abort_and_fixed_delay_before_meshtrace() {
    let m = mesh();
    let status = abort_status();
    let r = m.envoy.request("GET", "/fault/abort", &[]).unwrap();
    assert_eq!(u64::from(r.status), status);
    let r = m.envoy.request("GET", "/fault/delay", &[]).unwrap();
    assert_eq!(r.status, 200);
    let r = m
        .envoy
        .request("GET", "/plain", &[("x-test-pick", "0")])
        .unwrap();
    assert_eq!(r.status, 200);

    let abort = m.span("/fault/abort");
    assert_abort(&abort, status as i64, Some("fault-abort"));
    assert_eq!(
        fault_events(&abort),
        [("abort".to_string(), vec![])],
        "no x-envoy-fault-abort-request header: the status is not claimed on the event"
    );
    // Answered by the fault filter: no cluster reached.
    assert_eq!(attr(&abort, "mesh.upstream.service_time_ms"), None);

    let delay = m.span("/fault/delay");
    assert_eq!(attr(&delay, "http.response.status_code"), int(200));
    assert_eq!(attr(&delay, "mesh.fault.injected"), boolean(true));
    assert_eq!(str_attr(&delay, "mesh.fault.type"), "delay");
    assert_eq!(
        attr(&delay, "mesh.fault.delay_ms"),
        None,
        "a configured fixed delay is not visible to the filter; only the header says how long"
    );
    assert_eq!(flags(&delay), ["DI"]);
    assert_eq!(attr(&delay, "error.type"), None);
    assert_eq!(fault_events(&delay), [("delay".to_string(), vec![])]);
    assert_eq!(
        delay.events[0].time_unix_nano, delay.start_time_unix_nano,
        "the delay happens as the request arrives"
    );
    assert_eq!(str_attr(&delay, "mesh.route.name"), "fault-delay");
    // Not a timing test: without the delay inside it the span lasts about 1 ms; the margin
    // below 50 ms absorbs timer and clock granularity.
    let took = delay.end_time_unix_nano - delay.start_time_unix_nano;
    assert!(
        took >= 40_000_000,
        "the span covers the 50 ms delay: {took} ns"
    );
    assert_eq!(
        m.v1.take()
            .iter()
            .map(|r| r.path.as_str())
            .collect::<Vec<_>>(),
        ["/fault/delay", "/plain"],
        "the aborted request never reached the upstream"
    );

    let plain = m.span("/plain");
    no_fault(&plain);
    assert_eq!(attr(&plain, "envoy.response_flags"), None);
    assert_eq!(attr(&plain, "error.type"), None);
}

#[test]
fn header_controlled_faults_in_both_filter_orders() {
    let m = mesh();
    let wasm_first = m.port("WASM_FIRST_PORT");
    let req = |port: u16, path: &str, h: &[(&str, &str)]| {
        meshtrace_host_test::envoy::http_request(port, "GET", path, h, b"").unwrap()
    };
    for (port, tag) in [
        (m.envoy.vars.listen_port, "fault-first"),
        (wasm_first, "wasm-first"),
    ] {
        let pick = [("x-test-pick", "0")];
        let r = req(
            port,
            &format!("/{tag}/abort"),
            &[("x-envoy-fault-abort-request", "429"), pick[0]],
        );
        assert_eq!(r.status, 429, "{tag}");
        let r = req(
            port,
            &format!("/{tag}/delay"),
            &[("x-envoy-fault-delay-request", "60"), pick[0]],
        );
        assert_eq!(r.status, 200, "{tag}");

        let abort = m.span(&format!("/{tag}/abort"));
        assert_abort(&abort, 429, None);
        assert_eq!(
            abort.events[0].time_unix_nano, abort.end_time_unix_nano,
            "the abort is the response"
        );
        assert_eq!(
            fault_events(&abort),
            [(
                "abort".to_string(),
                vec![(
                    "http.response.status_code".to_string(),
                    Value::IntValue(429)
                )]
            )],
            "{tag}"
        );
        let delay = m.span(&format!("/{tag}/delay"));
        assert_eq!(attr(&delay, "mesh.fault.injected"), boolean(true), "{tag}");
        assert_eq!(str_attr(&delay, "mesh.fault.type"), "delay");
        assert_eq!(attr(&delay, "mesh.fault.delay_ms"), int(60), "{tag}");
        assert_eq!(flags(&delay), ["DI"], "{tag}");
        assert_eq!(attr(&delay, "error.type"), None);
        assert_eq!(
            fault_events(&delay),
            [(
                "delay".to_string(),
                vec![("mesh.fault.delay_ms".to_string(), Value::IntValue(60))]
            )],
            "{tag}"
        );
        let took = delay.end_time_unix_nano - delay.start_time_unix_nano;
        assert!(
            took >= 40_000_000,
            "{tag}: the span covers the 60 ms delay: {took} ns"
        );
    }
    assert_eq!(
        str_attr(&m.span("/wasm-first/abort"), "mesh.route.name"),
        "header-faults"
    );
}

/// Attributes every reviews span carries, by subset.
fn assert_reviews(s: &Span, m: &Mesh, subset: &str) {
    let (cluster, weight) = if subset == "v1" {
        (&m.canary.v1, m.canary.v1_weight)
    } else {
        (&m.canary.v2, m.canary.v2_weight)
    };
    assert_eq!(&str_attr(s, "mesh.upstream.cluster"), cluster);
    assert_eq!(str_attr(s, "mesh.upstream.subset"), subset);
    assert_eq!(
        str_attr(s, "mesh.upstream.service"),
        "reviews.bookinfo.svc.cluster.local"
    );
    assert_eq!(attr(s, "mesh.traffic.weight"), int(weight as i64));
    // What canary.yaml's header comment promises.
    if subset == "v1" {
        assert_eq!(str_attr(s, "mesh.release"), "stable");
        assert_eq!(attr(s, "mesh.canary"), boolean(false));
    } else {
        assert_eq!(str_attr(s, "mesh.release"), "canary");
        assert_eq!(attr(s, "mesh.canary"), boolean(true));
    }
    assert_eq!(s.kind, 3, "CLIENT");
    assert_eq!(attr(s, "http.response.status_code"), int(200));
    no_fault(s);
}

#[test]
fn canary_and_ab_routing_from_the_istio_example() {
    let m = mesh();
    let c = &m.canary;
    assert_eq!((c.v1_weight, c.v2_weight), (90, 10));
    // The weighted pick is `x-test-pick % 100`: below 90 is v1, the rest v2.
    let stable = m
        .envoy
        .request("GET", "/reviews/1", &[("x-test-pick", "5")])
        .unwrap();
    assert_eq!(stable.status, 200);
    assert_eq!(m.v1.take().len(), 1);
    let canary = m
        .envoy
        .request("GET", "/reviews/2", &[("x-test-pick", "95")])
        .unwrap();
    assert_eq!(canary.status, 200);
    assert_eq!(m.v2.take().len(), 1);
    let ab = m
        .envoy
        .request(
            "GET",
            "/reviews/3",
            &[
                (c.ab_header.as_str(), c.ab_value.as_str()),
                ("x-test-pick", "5"),
            ],
        )
        .unwrap();
    assert_eq!(ab.status, 200);
    assert_eq!(m.v2.take().len(), 1, "group b goes to v2 whatever the pick");
    assert_eq!(m.v1.take().len(), 0);

    let s = m.span("/reviews/1");
    assert_reviews(&s, &m, "v1");
    assert_eq!(attr(&s, "mesh.ab_group"), None);
    assert_eq!(str_attr(&s, "mesh.route.name"), c.split_route);
    // A client span: the conventions call its path template `url.template`.
    assert_eq!(str_attr(&s, "url.template"), "/reviews/{review_id}");
    assert_eq!(attr(&s, "http.route"), None);
    assert_eq!(s.name, "GET /reviews/{review_id}");

    let s = m.span("/reviews/2");
    assert_reviews(&s, &m, "v2");
    assert_eq!(attr(&s, "mesh.ab_group"), None);
    assert_eq!(str_attr(&s, "mesh.route.name"), c.split_route);

    let s = m.span("/reviews/3");
    assert_reviews(&s, &m, "v2");
    assert_eq!(str_attr(&s, "mesh.ab_group"), "b");
    assert_eq!(str_attr(&s, "mesh.route.name"), c.ab_route);
    assert_eq!(
        format!("{:?}", attr(&s, "http.request.header.x-ab-group").unwrap()),
        r#"ArrayValue(ArrayValue { values: [AnyValue { value: Some(StringValue("b")) }] })"#
    );
}

#[test]
fn mtls_peer_identity_from_a_spiffe_client_certificate() {
    let m = mesh();
    let caller = m.port("CALLER_PORT");
    let r =
        meshtrace_host_test::envoy::http_request(caller, "GET", "/ratings/7", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", m.envoy.log());
    let s = m.span("/ratings/7");
    assert_eq!(s.kind, 2, "SERVER on the inbound listener");
    assert_eq!(attr(&s, "connection.mtls"), boolean(true));
    assert_eq!(str_attr(&s, "mesh.peer.spiffe_id"), CLIENT_SPIFFE);
    assert_eq!(str_attr(&s, "mesh.peer.namespace"), "shop");
    assert_eq!(str_attr(&s, "mesh.peer.service_account"), "frontend");
    assert_eq!(str_attr(&s, "tls.protocol.name"), "tls");
    assert_eq!(str_attr(&s, "tls.protocol.version"), "1.3");
    assert_eq!(
        str_attr(&s, "tls.client.subject"),
        "O=cluster.local,CN=frontend",
        "as Envoy formats the subject"
    );
    // A server span: `http.route`, here from the automatic templater.
    assert_eq!(str_attr(&s, "http.route"), "/ratings/{id}");
    assert_eq!(s.name, "GET /ratings/{id}");
    assert_eq!(str_attr(&s, "mesh.upstream.cluster"), "inbound|9080||");
    // No certificate or key material anywhere in the span.
    let text = format!("{s:?}");
    for needle in ["BEGIN", "CERTIFICATE", "PRIVATE", "MII"] {
        assert!(!text.contains(needle), "{needle} in {text}");
    }
    for a in &s.attributes {
        assert!(
            !a.key.contains("cert") && !a.key.contains("key"),
            "{}",
            a.key
        );
    }
}

fn resource(m: &Mesh) -> Vec<(String, String)> {
    m.span("/res");
    let req = &m.sink.received()[0];
    let res = req.request.resource_spans[0].resource.as_ref().unwrap();
    res.attributes
        .iter()
        .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some((a.key.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

fn res_get<'a>(r: &'a [(String, String)], k: &str) -> Option<&'a str> {
    r.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

#[test]
fn resource_from_istio_node_metadata_and_config_override() {
    let m = mesh();
    m.envoy
        .request("GET", "/res", &[("x-test-pick", "0")])
        .unwrap();
    let r = resource(&m);
    for (k, v) in [
        ("service.name", "reviews"),
        ("service.version", "v2"),
        ("service.namespace", "bookinfo"),
        ("k8s.namespace.name", "bookinfo"),
        ("k8s.pod.name", "reviews-v2-7f9c4d-x2x7q"),
        ("k8s.deployment.name", "reviews-v2"),
        ("k8s.cluster.name", "Kubernetes"),
        ("service.mesh", "istio"),
        ("istio.mesh_id", "cluster.local"),
        ("istio.version", "1.28.0"),
    ] {
        assert_eq!(res_get(&r, k), Some(v), "{k} in {r:?}");
    }
    drop(m);

    let mut cfg: Json = serde_json::from_str(&plugin_config("meshtrace-client")).unwrap();
    cfg["service_name"] = json!("reviews-canary");
    cfg["resource"] =
        json!({"k8s.cluster.name": "prod-eu-1", "deployment.environment.name": "prod"});
    let m = Mesh::start(&cfg.to_string());
    m.envoy
        .request("GET", "/res", &[("x-test-pick", "0")])
        .unwrap();
    let r = resource(&m);
    for (k, v) in [
        ("service.name", "reviews-canary"),
        ("service.version", "v2"),
        ("k8s.cluster.name", "prod-eu-1"),
        ("deployment.environment.name", "prod"),
        ("k8s.deployment.name", "reviews-v2"),
        ("service.mesh", "istio"),
    ] {
        assert_eq!(res_get(&r, k), Some(v), "{k} in {r:?}");
    }
    assert_eq!(r.iter().filter(|(k, _)| k == "service.name").count(), 1);
}

#[test]
fn retried_connect_failure_and_successful_retry() {
    let m = mesh();
    let r = m.envoy.request("GET", "/broken", &[]).unwrap();
    assert_eq!(r.status, 503);
    let s = m.span("/broken");
    assert_eq!(s.kind, 3);
    assert_eq!(attr(&s, "http.response.status_code"), int(503));
    assert_eq!(flags(&s), ["UF", "URX"]);
    assert_eq!(str_attr(&s, "error.type"), "upstream_connect_failure");
    assert_eq!(
        attr(&s, "http.request.resend_count"),
        int(2),
        "3 attempts: num_retries 2"
    );
    assert_eq!(
        str_attr(&s, "mesh.upstream.cluster"),
        "outbound|9081||broken.bookinfo.svc.cluster.local"
    );
    assert_eq!(
        str_attr(&s, "mesh.upstream.service"),
        "broken.bookinfo.svc.cluster.local"
    );
    assert_eq!(attr(&s, "mesh.upstream.subset"), None);
    assert_eq!(str_attr(&s, "mesh.route.name"), "broken");
    assert_eq!(s.status.as_ref().map(|st| st.code), Some(2));
    no_fault(&s);

    let r = m.envoy.request("GET", "/flaky", &[]).unwrap();
    assert_eq!(r.status, 200, "{}", m.envoy.log());
    let up = m.v1.take();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].get("x-envoy-attempt-count"), Some("2"));
    let s = m.span("/flaky");
    assert_eq!(attr(&s, "http.response.status_code"), int(200));
    assert_eq!(attr(&s, "http.request.resend_count"), int(1));
    assert_eq!(attr(&s, "error.type"), None);
    assert_eq!(
        attr(&s, "envoy.response_flags"),
        None,
        "a retry that succeeded leaves no failure flag"
    );
    assert_eq!(
        str_attr(&s, "mesh.upstream.cluster"),
        "outbound|9082||flaky.bookinfo.svc.cluster.local"
    );
    assert_eq!(str_attr(&s, "mesh.route.name"), "flaky");
    assert!(s.status.as_ref().is_none_or(|st| st.code == 0));
}
