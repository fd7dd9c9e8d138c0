//! Request bytes that are not UTF-8, through real Envoy to an OTLP sink that decodes strictly
//! (prost's `String`, as a collector does, answering 400 otherwise): every span of the batch
//! arrives, the bad bytes are U+FFFD at the exact attributes, and `/stats` balances; a path of
//! bad bytes (sent over HTTP/2, whose codec lets it through) names the span exactly as its
//! `http.route` says. Also: a collector that refuses a batch is counted and its reason logged.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::wait_log;

use meshtrace_host_test::envoy::{envoy_binary, wasm_path, Envoy, EnvoyVars};
use meshtrace_host_test::faults;
use meshtrace_host_test::grpc_sink::{GrpcMode, GrpcSink};
use meshtrace_host_test::sink::{OtlpSink, SinkMode, Upstream};
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::trace::v1::Span;

const WAIT: Duration = Duration::from_secs(15);

fn envoy(collector_port: u16, cfg: &str) -> (Envoy, Upstream) {
    let binary = envoy_binary().expect("locating Envoy");
    let upstream = Upstream::start().unwrap();
    let mut vars = EnvoyVars::new(
        wasm_path().unwrap(),
        upstream.addr.port(),
        collector_port,
        cfg,
    );
    // OTLP/gRPC needs HTTP/2 to the collector.
    vars.collector_http2 = cfg.contains(r#""protocol":"grpc""#);
    let e = Envoy::start(&binary, "per-worker.yaml", vars).expect("start Envoy");
    (e, upstream)
}

/// Sends one HTTP/1.1 request written byte for byte (the test's client must not clean it up)
/// and returns the status code.
fn raw_request(port: u16, head: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

fn request(port: u16, target: &[u8], headers: &[(&[u8], &[u8])]) -> u16 {
    let mut head = b"GET ".to_vec();
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| *k == b"host") {
        head.extend_from_slice(b"host: shop.local\r\n");
    }
    for (k, v) in headers {
        head.extend_from_slice(k);
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    raw_request(port, &head)
}

fn attr(s: &Span, key: &str) -> Option<V> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

use support::str_attr;

fn path_of(s: &Span) -> String {
    str_attr(s, "url.path")
}

#[test]
fn non_utf8_request_bytes_lose_no_span() {
    let sink = OtlpSink::start(0).unwrap();
    // A long flush interval: the requests of the test share a batch, as in production, where
    // one bad byte used to cost every span of it.
    let cfg = r#"{"service_name":"utf8","collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":4000},"sampling":{"always_keep":["error"]},"capture":{"query":true,"request_headers":["x-tenant"]}}"#;
    let (e, _up) = envoy(sink.addr.port(), cfg);
    let port = e.vars.listen_port;
    let clean: &[(&[u8], &[u8])] = &[(b"user-agent", b"clean/1.0")];
    assert_eq!(request(port, b"/clean/1", clean), 200);
    // Header values may carry obs-text (RFC 9110 §5.5); Envoy passes them on as they are.
    let ua: &[(&[u8], &[u8])] = &[(b"user-agent", b"probe/1.0 \xff\xfe")];
    assert_eq!(request(port, b"/ua", ua), 200);
    let xff: &[(&[u8], &[u8])] = &[(b"x-forwarded-for", b"10.0.0.\xff, 10.0.0.2")];
    assert_eq!(request(port, b"/xff", xff), 200);
    let tenant: &[(&[u8], &[u8])] = &[(b"x-tenant", b"acme\xe2\x82")];
    assert_eq!(request(port, b"/tenant", tenant), 200);
    assert_eq!(request(port, b"/clean/2", clean), 200);
    // An unsampled request kept for its 500, with a `tracestate` that is not UTF-8.
    let kept: &[(&[u8], &[u8])] = &[
        (
            b"traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ),
        (b"tracestate", b"congo=t\xff1"),
    ];
    assert_eq!(request(port, b"/status/500", kept), 500);
    // Envoy's HTTP/1 codec refuses raw bytes in the request target and the host itself, with
    // 400 before any filter runs: no span, and nothing for the filter to repair there.
    assert_eq!(request(port, b"/p\xffth", clean), 400);
    assert_eq!(request(port, b"/query?q=\xfe\xfd1", clean), 400);
    assert_eq!(request(port, b"/host", &[(b"host", b"sh\xffp.local")]), 400);
    assert_eq!(request(port, b"/clean/3", clean), 200);

    let spans = sink.wait_spans(7, WAIT);
    let mut paths: Vec<String> = spans.iter().map(path_of).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/clean/1",
            "/clean/2",
            "/clean/3",
            "/status/500",
            "/tenant",
            "/ua",
            "/xff"
        ]
    );
    let by_path = |p: &str| spans.iter().find(|s| path_of(s) == p).unwrap();
    assert_eq!(
        str_attr(by_path("/ua"), "user_agent.original"),
        "probe/1.0 \u{FFFD}\u{FFFD}"
    );
    assert_eq!(
        str_attr(by_path("/xff"), "client.address"),
        "10.0.0.\u{FFFD}"
    );
    match attr(by_path("/tenant"), "http.request.header.x-tenant") {
        Some(V::ArrayValue(a)) => assert_eq!(
            a.values[0].value,
            Some(V::StringValue("acme\u{FFFD}".into()))
        ),
        other => panic!("{other:?}"),
    }
    let kept = by_path("/status/500");
    // The kept span records the `tracestate` this hop sent, and an invalid one is not sent.
    assert_eq!(kept.trace_state, "");
    assert_eq!(str_attr(kept, "mesh.sampling.kept_by"), "error");
    assert_eq!(
        str_attr(by_path("/clean/1"), "user_agent.original"),
        "clean/1.0"
    );
    // Every export request was accepted (the sink decodes strictly, and answers 400 to a
    // string that is not UTF-8), and every span counted.
    assert_eq!(e.wait_stat("meshtrace.spans_exported", 7, WAIT), 7);
    assert_eq!(e.stat("meshtrace.spans_started"), 7);
    assert_eq!(e.stat("meshtrace.spans_sampled"), 6);
    assert_eq!(e.stat("meshtrace.spans_kept"), 1);
    let requests = sink.received().len() as u64;
    assert!((1..=2).contains(&requests), "{requests} export requests");
    assert_eq!(e.stat("meshtrace.export_requests.ok"), requests);
    assert_eq!(e.stat("meshtrace.export_requests.failed"), 0);
    assert_eq!(e.stat("meshtrace.export_requests.rejected"), 0);
    assert_eq!(e.stat("meshtrace.spans_dropped.export_failed"), 0);
    let (stats, ok) = faults::settle(&e, WAIT);
    assert!(ok, "accounting invariant does not hold: {stats:?}");
}

#[test]
fn a_refused_batch_is_counted_and_its_reason_logged() {
    let sink = OtlpSink::start(0).unwrap();
    let cfg = r#"{"collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":100}}"#;
    let (e, _up) = envoy(sink.addr.port(), cfg);
    sink.set_mode(SinkMode::Refuse {
        status: 400,
        message: "proto: ExportTraceServiceRequest: invalid \"span\"\n\u{1b}[31m",
    });
    let port = e.vars.listen_port;
    for p in [&b"/a"[..], b"/b"] {
        assert_eq!(request(port, p, &[]), 200);
    }
    assert_eq!(
        e.wait_stat("meshtrace.spans_dropped.export_failed", 2, WAIT),
        2
    );
    let refused = e.stat("meshtrace.export_requests.rejected");
    assert!((1..=2).contains(&refused), "{refused}");
    assert_eq!(e.stat("meshtrace.export_requests.failed"), refused);
    // Once per interval, the first reason, made printable (control characters escaped).
    let line = format!(
        "meshtrace: the collector rejected {refused} export request(s); first reason: \
         \"proto: ExportTraceServiceRequest: invalid \"span\"\\n\\u{{1b}}[31m\""
    );
    wait_log(&e, &line, WAIT);
    assert_eq!(e.log().matches("first reason").count(), 1);
    let (stats, ok) = faults::settle(&e, WAIT);
    assert!(ok, "accounting invariant does not hold: {stats:?}");
}

#[test]
fn a_grpc_refusal_logs_its_grpc_message() {
    let sink = GrpcSink::start(0).unwrap();
    let cfg = r#"{"collector":{"cluster":"otel_collector","protocol":"grpc"},"batch":{"flush_interval_ms":100}}"#;
    let (e, _up) = envoy(sink.addr.port(), cfg);
    // INVALID_ARGUMENT is final: the batch is dropped, counted, and the reason logged.
    sink.set_mode(GrpcMode::Status {
        code: 3,
        retry_delay_ms: None,
    });
    assert_eq!(request(e.vars.listen_port, b"/g", &[]), 200);
    assert_eq!(
        e.wait_stat("meshtrace.spans_dropped.export_failed", 1, WAIT),
        1
    );
    assert_eq!(e.stat("meshtrace.export_requests.rejected"), 1);
    assert_eq!(e.stat("meshtrace.export_requests.failed"), 1);
    wait_log(
        &e,
        "meshtrace: the collector rejected 1 export request(s); first reason: \"collector says no\"",
        WAIT,
    );
    let (stats, ok) = faults::settle(&e, WAIT);
    assert!(ok, "accounting invariant does not hold: {stats:?}");
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), the prefix's other bits zero.
fn hpack_int(out: &mut Vec<u8>, mut v: usize, n: u32) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(v as u8);
        return;
    }
    out.push(max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// One HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Sends one GET over cleartext HTTP/2 (prior knowledge) with `:path` written byte for byte:
/// every field a literal without indexing and without Huffman coding (RFC 7541 §6.2.2), which
/// no client library lets carry bytes that are not UTF-8. Returns once the response stream
/// ends (or the connection closes).
fn h2_get(port: u16, path: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut block = Vec::new();
    for (k, v) in [
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"http"),
        (b":authority", b"shop.local"),
        (b":path", path),
    ] {
        block.push(0);
        hpack_int(&mut block, k.len(), 7);
        block.extend_from_slice(k);
        hpack_int(&mut block, v.len(), 7);
        block.extend_from_slice(v);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    // END_STREAM | END_HEADERS on stream 1.
    out.extend(h2_frame(1, 0x5, 1, &block));
    s.write_all(&out).unwrap();
    let mut head = [0u8; 9];
    loop {
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        if s.read_exact(&mut payload).is_err() {
            return;
        }
        match kind {
            // The server's SETTINGS: acknowledge them.
            4 if flags & 1 == 0 => s.write_all(&h2_frame(4, 1, 0, &[])).unwrap(),
            // GOAWAY, or the response stream's end.
            7 => return,
            0 | 1 if stream == 1 && flags & 1 != 0 => return,
            _ => {}
        }
    }
}

#[test]
fn a_path_of_invalid_bytes_over_http2_gives_a_name_that_agrees_with_http_route() {
    let sink = OtlpSink::start(0).unwrap();
    let cfg = r#"{"collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":100}}"#;
    let (e, _up) = envoy(sink.addr.port(), cfg);
    // `/` and 300 bytes 0xFF: Envoy's HTTP/1 codec refuses them, its HTTP/2 codec does not.
    let mut path = b"/".to_vec();
    path.extend([0xff; 300]);
    h2_get(e.vars.listen_port, &path);
    let spans = sink.wait_spans(1, WAIT);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let s = &spans[0];
    // Each 0xFF is one U+FFFD (3 bytes): 83 of them fit the 252 bytes `GET ` leaves of 256.
    let route = format!("/{}", "\u{FFFD}".repeat(83));
    assert_eq!(s.name, format!("GET {route}"));
    assert_eq!(s.name.len(), 254);
    assert_eq!(str_attr(s, "http.route"), route);
    assert_eq!(
        str_attr(s, "url.path"),
        format!("/{}", "\u{FFFD}".repeat(85))
    );
    assert_eq!(
        e.wait_stat("meshtrace.export_requests.ok", 1, WAIT),
        1,
        "the collector accepted the span"
    );
}
