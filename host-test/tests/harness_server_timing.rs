//! `response.server_timing` in the wasmtime host: the exact `server-timing` entry the client
//! receives for a recorded SERVER span, appended after the upstream's own entries, and its
//! absence by default, on unsampled requests, on CLIENT spans and at an untrusted edge.

use meshtrace_host_test::host::export::flush_one;
use meshtrace_host_test::host::{load_filter, Exchange, Host, Req, Resp};

const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn host(extra: &str) -> Host {
    load_filter()
        .configure(&format!(
            r#"{{"collector": {{"cluster": "otel_collector"}}{extra}}}"#
        ))
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An inbound request whose upstream answers with its own `server-timing` entry.
fn inbound(traceparent: &str) -> Req {
    Req::get("/cart")
        .header("traceparent", traceparent)
        .property(
            "xds.cluster_name",
            "inbound|8080||cart.shop.svc.cluster.local",
        )
        .property("response.code", 200i64)
        .response(Resp::status(200).header("server-timing", "db;dur=53"))
}

fn values<'a>(x: &'a Exchange, name: &str) -> Vec<&'a str> {
    x.downstream_headers
        .get_all(name)
        .into_iter()
        .map(|v| std::str::from_utf8(v).unwrap())
        .collect()
}

#[test]
fn absent_by_default() {
    let mut h = host("");
    let x = h.request(inbound(SAMPLED)).unwrap();
    assert_eq!(values(&x, "server-timing"), ["db;dur=53"]);
    assert!(values(&x, "access-control-expose-headers").is_empty());
}

#[test]
fn w3c_entry_names_the_server_span_after_the_upstreams_entry() {
    let mut h = host(r#", "response": {"server_timing": "w3c"}"#);
    let x = h.request(inbound(SAMPLED)).unwrap();
    let span = flush_one(&mut h).remove(0);
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(
        values(&x, "server-timing"),
        [
            "db;dur=53".to_string(),
            format!("trace;desc=00-{TRACE}-{}-01", hex(&span.span_id))
        ]
    );
    assert!(values(&x, "access-control-expose-headers").is_empty());
}

#[test]
fn vendor_entry_with_the_expose_header() {
    let mut h =
        host(r#", "response": {"server_timing": "traceparent", "expose_server_timing": true}"#);
    let x = h.request(inbound(SAMPLED)).unwrap();
    let span = flush_one(&mut h).remove(0);
    assert_eq!(
        values(&x, "server-timing"),
        [
            "db;dur=53".to_string(),
            format!("traceparent;desc=\"00-{TRACE}-{}-01\"", hex(&span.span_id))
        ]
    );
    assert_eq!(
        values(&x, "access-control-expose-headers"),
        ["server-timing"]
    );
}

#[test]
fn only_on_recorded_server_spans() {
    let mut h = host(r#", "response": {"server_timing": "w3c"}"#);
    // Not recorded: the client gets no entry, so no host call is made.
    let x = h.request(inbound(UNSAMPLED)).unwrap();
    assert_eq!(values(&x, "server-timing"), ["db;dur=53"]);
    // A CLIENT span answers the local application, not a client of this proxy's server.
    let x = h
        .request(inbound(SAMPLED).property(
            "xds.cluster_name",
            "outbound|8080||cart.shop.svc.cluster.local",
        ))
        .unwrap();
    assert_eq!(values(&x, "server-timing"), ["db;dur=53"]);
}

#[test]
fn an_untrusted_edge_writes_it_only_when_configured() {
    let edge = r#", "propagators": {"trust_incoming": false}"#;
    let mut h = host(&format!(
        r#"{edge}, "response": {{"server_timing": "w3c"}}"#
    ));
    let x = h.request(inbound(SAMPLED)).unwrap();
    assert_eq!(values(&x, "server-timing"), ["db;dur=53"]);

    let mut h = host(&format!(
        r#"{edge}, "response": {{"server_timing": "w3c", "at_untrusted_edge": true}}"#
    ));
    let x = h.request(inbound(SAMPLED)).unwrap();
    let span = flush_one(&mut h).remove(0);
    // The edge started its own trace: the entry names it, not the client's.
    assert_ne!(hex(&span.trace_id), TRACE);
    assert_eq!(
        values(&x, "server-timing"),
        [
            "db;dur=53".to_string(),
            format!(
                "trace;desc=00-{}-{}-{:02x}",
                hex(&span.trace_id),
                hex(&span.span_id),
                span.flags & 0x03
            )
        ]
    );
}
