//! A function's sidecar in real Envoy (`filter/envoy/faas.yaml`): a Knative revision's pod,
//! recognised by Knative Serving's labels in Istio's node metadata, with calls to the two
//! revisions of a 90/10 split tagged like an Istio canary, and `faas.coldstart` on exactly
//! one span of the process with two workers. Every test asserts exact span fields.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use meshtrace_host_test::envoy::{
    envoy_binary, free_port, http_request, wasm_path, Envoy, EnvoyVars,
};
use meshtrace_host_test::sink::{OtlpSink, Upstream};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::{attr, str_attr, str_attr_opt};

const WAIT: Duration = Duration::from_secs(20);

/// The README's Knative example: the revisions of `hello` as releases, with the split's
/// weights. No `faas` section: the node's Knative labels make the workload a function.
const CONFIG: &str = r#"{"collector": {"cluster": "otel_collector"},
  "batch": {"flush_interval_ms": 100},
  "traffic": {
    "rules": [
      {"match": "subset", "value": "hello-00002", "release": "canary", "canary": true},
      {"match": "subset", "value": "hello-00001", "release": "stable", "canary": false}],
    "weights": {"hello-00001": 90, "hello-00002": 10}}}"#;

struct Function {
    sink: OtlpSink,
    _upstream: Upstream,
    envoy: Envoy,
    outbound: u16,
}

fn start(concurrency: u32) -> Function {
    let binary = envoy_binary().expect("Envoy lookup");
    let sink = OtlpSink::start(0).unwrap();
    let upstream = Upstream::start().unwrap();
    let mut vars = EnvoyVars::new(
        wasm_path().unwrap(),
        upstream.addr.port(),
        sink.addr.port(),
        CONFIG,
    );
    let outbound = free_port();
    vars.concurrency = concurrency;
    vars.set("OUTBOUND_PORT", outbound);
    let envoy = Envoy::start(&binary, "faas.yaml", vars).expect("start Envoy");
    Function {
        sink,
        _upstream: upstream,
        envoy,
        outbound,
    }
}

impl Function {
    fn spans(&self, n: usize) -> Vec<Span> {
        let spans = self.sink.wait_spans(n, WAIT);
        assert_eq!(spans.len(), n, "spans: {spans:?}\n{}", self.envoy.log());
        spans
    }

    fn resource(&self) -> Vec<(String, String)> {
        let req = &self.sink.received()[0];
        let res = req.request.resource_spans[0].resource.as_ref().unwrap();
        res.attributes
            .iter()
            .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
                Value::StringValue(v) => Some((a.key.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
}

fn boolean(s: &Span, k: &str) -> Option<bool> {
    match attr(s, k) {
        Some(Value::BoolValue(b)) => Some(*b),
        None => None,
        other => panic!("{k}: {other:?}"),
    }
}

fn int(s: &Span, k: &str) -> Option<i64> {
    match attr(s, k) {
        Some(Value::IntValue(i)) => Some(*i),
        None => None,
        other => panic!("{k}: {other:?}"),
    }
}

#[test]
fn a_knative_split_between_revisions_shows_up_like_an_istio_canary() {
    let f = start(1);
    // Calls from this pod to the two revisions of `hello` (Knative's ingress named the
    // revision of the split), then a request to the function itself, as Knative's gateway
    // forwards it to this revision.
    let calls = [("hello-00001", "/call/1"), ("hello-00002", "/call/2")];
    for (revision, path) in calls {
        let r = http_request(
            f.outbound,
            "GET",
            path,
            &[
                ("knative-serving-revision", revision),
                ("knative-serving-namespace", "shop"),
            ],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200);
    }
    let r = f
        .envoy
        .request(
            "GET",
            "/serve",
            &[
                ("knative-serving-revision", "hello-00002"),
                ("knative-serving-namespace", "shop"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let spans = f.spans(3);
    let by_path = |p: &str| {
        spans
            .iter()
            .find(|s| str_attr_opt(s, "url.path").as_deref() == Some(p))
            .unwrap_or_else(|| panic!("no span for {p}: {spans:?}"))
    };
    for ((revision, path), (release, canary, weight)) in calls
        .iter()
        .zip([("stable", false, 90), ("canary", true, 10)])
    {
        let s = by_path(path);
        assert_eq!(s.kind, SpanKind::Client as i32);
        assert_eq!(
            str_attr(s, "mesh.upstream.cluster"),
            format!("outbound|80||{revision}.shop.svc.cluster.local")
        );
        assert_eq!(str_attr(s, "mesh.route.name"), *revision);
        assert_eq!(str_attr(s, "mesh.knative.revision"), *revision);
        assert_eq!(str_attr(s, "mesh.knative.namespace"), "shop");
        assert_eq!(str_attr(s, "faas.invoked_name"), "hello");
        assert_eq!(str_attr(s, "mesh.release"), release);
        assert_eq!(boolean(s, "mesh.canary"), Some(canary));
        assert_eq!(int(s, "mesh.traffic.weight"), Some(weight));
        // The function's own facts belong to its SERVER spans only.
        assert_eq!(attr(s, "faas.trigger"), None);
        assert_eq!(attr(s, "faas.coldstart"), None);
    }
    let s = by_path("/serve");
    assert_eq!(s.kind, SpanKind::Server as i32);
    assert_eq!(str_attr(s, "mesh.upstream.cluster"), "inbound|8080||");
    assert_eq!(str_attr(s, "faas.trigger"), "http");
    // The calls went out first, but the function's first invocation is this request.
    assert_eq!(boolean(s, "faas.coldstart"), Some(true));
    assert_eq!(str_attr(s, "mesh.knative.revision"), "hello-00002");
    assert_eq!(str_attr(s, "mesh.release"), "canary");
    assert_eq!(boolean(s, "mesh.canary"), Some(true));
    assert_eq!(int(s, "mesh.traffic.weight"), Some(10));
    assert_eq!(attr(s, "faas.invoked_name"), None);

    let r = f.resource();
    let get = |k: &str| r.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("faas.name"), Some("hello"));
    assert_eq!(get("faas.version"), Some("hello-00002"));
    assert_eq!(
        get("faas.instance"),
        Some("hello-00002-deployment-5c9d4-x7k2p")
    );
    assert_eq!(get("service.name"), Some("hello"));
    assert_eq!(get("service.version"), Some("hello-00002"));
    assert_eq!(get("k8s.namespace.name"), Some("shop"));
    assert_eq!(get("cloud.provider"), None);
    assert_eq!(get("cloud.platform"), None);
}

/// One request on an open HTTP/1.1 keep-alive connection; the response status. Reads the
/// head, then the body by its `content-length` or chunked framing.
fn get_on(conn: &mut TcpStream, path: &str) -> u16 {
    write!(conn, "GET {path} HTTP/1.1\r\nhost: hello.shop\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).unwrap(),
            1,
            "connection closed mid-response"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim_start_matches(':').trim().to_string())
        })
    };
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0u8; n];
        conn.read_exact(&mut body).unwrap();
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut tail = Vec::new();
        while !tail.ends_with(b"0\r\n\r\n") {
            assert_eq!(
                conn.read(&mut byte).unwrap(),
                1,
                "connection closed mid-body"
            );
            tail.push(byte[0]);
        }
    }
    status
}

#[test]
fn two_workers_one_process_exactly_one_cold_start() {
    let f = start(2);
    const CONNECTIONS: usize = 4;
    const N: usize = 40;
    // Several keep-alive connections, all open at once, so that the listener's exact balance
    // hands them to both workers; the requests take turns over them.
    let mut conns: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let c = TcpStream::connect(("127.0.0.1", f.envoy.vars.listen_port)).unwrap();
            c.set_read_timeout(Some(WAIT)).unwrap();
            c
        })
        .collect();
    for i in 0..N {
        assert_eq!(
            get_on(&mut conns[i % CONNECTIONS], &format!("/req/{i}")),
            200
        );
    }
    let spans = f.spans(N);
    let cold: Vec<&Span> = spans
        .iter()
        .filter(|s| boolean(s, "faas.coldstart") == Some(true))
        .collect();
    assert_eq!(cold.len(), 1, "{cold:?}");
    assert_eq!(str_attr(cold[0], "url.path"), "/req/0");
    for s in &spans {
        assert_eq!(str_attr(s, "faas.trigger"), "http");
        assert_eq!(s.kind, SpanKind::Server as i32);
    }
    // Both workers served requests, so both VMs tried their claim and one lost.
    let per_worker: Vec<u64> = (0..2)
        .map(|w| {
            f.envoy
                .stats(&format!("worker_{w}.downstream_cx_total"))
                .unwrap()
                .into_iter()
                .filter(|(k, _)| k.starts_with("listener.127.0.0.1_"))
                .map(|(_, v)| v)
                .sum()
        })
        .collect();
    assert_eq!(per_worker, [2, 2], "connections per worker");
}
