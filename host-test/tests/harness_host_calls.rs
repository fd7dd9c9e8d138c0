//! The per-request host-call budget, asserted on the exact property reads the compiled filter
//! makes: each `proxy_get_property` costs ~1.4 µs inside Envoy, far more than the filter's own
//! work, so a read that creeps in is a performance regression even when every span is right.

use meshtrace_host_test::host::export::{attr, flush_one, Attr};
use meshtrace_host_test::host::{load_filter, Host, Req, Resp};
use opentelemetry_proto::tonic::trace::v1::Span;

const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

fn host(extra: &str) -> Host {
    let mut h = load_filter()
        .record_property_reads()
        .configure(&format!(
            r#"{{"collector": {{"cluster": "otel_collector"}}{extra}}}"#
        ))
        .unwrap();
    // `xds.node`, once per VM at configuration.
    assert_eq!(h.take_property_reads(), ["xds.node"]);
    h
}

/// The SPIFFE id of the mTLS peer calling from port `peer_port`: each test connection has
/// its own, so a fact served for the wrong connection shows.
fn peer(peer_port: u16) -> String {
    format!("spiffe://cluster.local/ns/shop/sa/client-{peer_port}")
}

/// An inbound Istio request on downstream connection `conn` from an mTLS peer.
fn inbound(conn: u64, peer_port: u16, traceparent: &str) -> Req {
    Req::get("/cart")
        .header("traceparent", traceparent)
        .property("connection.id", conn)
        .property(
            "xds.cluster_name",
            "inbound|8080||cart.shop.svc.cluster.local",
        )
        .property("xds.route_name", "default")
        .property("request.protocol", "HTTP/2")
        .property("source.address", format!("10.0.0.7:{peer_port}"))
        .property("connection.mtls", true)
        .property("connection.uri_san_peer_certificate", peer(peer_port))
        .property("connection.tls_version", "TLSv1.3")
        .property("response.code", 200i64)
        .property("response.flags", 0i64)
        .property("response.backend_latency", 3_000_000i64)
}

fn str_attr(s: &Span, key: &str) -> Option<String> {
    match attr(&s.attributes, key) {
        Some(Attr::Str(v)) => Some(v),
        _ => None,
    }
}

/// A recorded request on an Istio sidecar's inbound connection already seen: its routing facts
/// are the connection's (one route per inbound port), so only its id, then `on_log`.
const REUSED_INBOUND_CONNECTION: [&str; 4] = [
    "connection.id",
    "response.code",
    "response.flags",
    "response.backend_latency",
];

/// A recorded request on any other connection already seen (outbound, a waypoint's): routing
/// at request time, since a route table may send each request elsewhere, then `on_log`.
const REUSED_CONNECTION: [&str; 6] = [
    "connection.id",
    "xds.cluster_name",
    "xds.route_name",
    "response.code",
    "response.flags",
    "response.backend_latency",
];

/// A connection's first recorded request adds its facts: protocol and peer address with the
/// connection id, the inbound route and cluster, the mTLS identity when the server span is
/// finished.
const NEW_CONNECTION: [&str; 12] = [
    "connection.id",
    "request.protocol",
    "source.address",
    "xds.cluster_name",
    "xds.route_name",
    "response.code",
    "response.flags",
    "response.backend_latency",
    "connection.mtls",
    "connection.uri_san_peer_certificate",
    "connection.subject_peer_certificate",
    "connection.tls_version",
];

#[test]
fn connection_facts_are_read_once_per_connection() {
    let mut h = host("");
    h.request(inbound(41, 5001, SAMPLED)).unwrap();
    let first = h.take_property_reads();
    h.request(inbound(41, 5001, SAMPLED)).unwrap();
    let second = h.take_property_reads();
    h.request(inbound(42, 5002, SAMPLED)).unwrap();
    let other = h.take_property_reads();

    assert_eq!(first, NEW_CONNECTION);
    assert_eq!(second, REUSED_INBOUND_CONNECTION);
    assert_eq!(
        other, NEW_CONNECTION,
        "a new connection reads its own facts"
    );

    // The cached facts are the connection's: the same on both of its requests, and the next
    // connection's own.
    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 3);
    // The cache's effect is visible in Envoy's stats.
    assert_eq!(h.metric("meshtrace.connection_facts.cached"), Some(1));
    assert_eq!(h.metric("meshtrace.connection_facts.read"), Some(2));
    for (s, port) in spans.iter().zip([5001, 5001, 5002]) {
        assert_eq!(str_attr(s, "mesh.peer.spiffe_id"), Some(peer(port as u16)));
        assert_eq!(str_attr(s, "mesh.route.name").as_deref(), Some("default"));
        assert_eq!(
            str_attr(s, "mesh.upstream.cluster").as_deref(),
            Some("inbound|8080||cart.shop.svc.cluster.local")
        );
        assert_eq!(
            str_attr(s, "network.protocol.version").as_deref(),
            Some("2")
        );
        assert_eq!(str_attr(s, "tls.protocol.version").as_deref(), Some("1.3"));
        assert_eq!(
            attr(&s.attributes, "network.peer.port"),
            Some(Attr::Int(port))
        );
    }
}

/// An outbound request on connection `conn` that routing sent to `cluster` by route `route`.
fn outbound(conn: u64, cluster: &str, route: &str) -> Req {
    Req::get("/reviews")
        .header("traceparent", SAMPLED)
        .property("connection.id", conn)
        .property("xds.cluster_name", cluster)
        .property("xds.route_name", route)
        .property("request.protocol", "HTTP/1.1")
        .property("source.address", "10.0.0.7:6001")
        .property("response.code", 200i64)
        .property("response.flags", 0i64)
        .property("response.backend_latency", 1_000_000i64)
        .property("upstream.address", "10.1.1.1:9080")
        .property("upstream.request_attempt_count", 1i64)
}

#[test]
fn only_an_inbound_sidecar_connection_keeps_its_route() {
    // Outbound, one connection, two routes: each request reads where it went.
    let mut h = host("");
    h.request(outbound(
        61,
        "outbound|9080|v1|reviews.shop.svc.cluster.local",
        "r1",
    ))
    .unwrap();
    h.take_property_reads();
    h.request(outbound(
        61,
        "outbound|9080|v2|reviews.shop.svc.cluster.local",
        "r2",
    ))
    .unwrap();
    let mut want: Vec<&str> = REUSED_CONNECTION.to_vec();
    want.extend(["upstream.address", "upstream.request_attempt_count"]);
    assert_eq!(h.take_property_reads(), want);
    let spans = flush_one(&mut h);
    let routes: Vec<_> = spans
        .iter()
        .map(|s| {
            (
                str_attr(s, "mesh.route.name").unwrap(),
                str_attr(s, "mesh.upstream.subset").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [("r1".into(), "v1".into()), ("r2".into(), "v2".into())]
    );

    // A plain Envoy cluster is no Istio inbound port: read every time as well.
    let mut h = host(r#", "direction": "inbound""#);
    for _ in 0..2 {
        h.request(outbound(62, "backend", "api")).unwrap();
    }
    let reads = h.take_property_reads();
    assert_eq!(
        reads.iter().filter(|r| *r == "xds.route_name").count(),
        2,
        "{reads:?}"
    );

    // With `route_metadata: true` the inbound connection keeps the metadata too.
    let mut h = host(r#", "route_metadata": true"#);
    h.request(inbound(43, 5003, SAMPLED)).unwrap();
    assert!(h
        .take_property_reads()
        .contains(&"xds.route_metadata".to_string()));
    h.request(inbound(43, 5003, SAMPLED)).unwrap();
    assert_eq!(h.take_property_reads(), REUSED_INBOUND_CONNECTION);
}

#[test]
fn an_unsampled_request_reads_no_property() {
    let mut h = host("");
    h.request(inbound(7, 5001, UNSAMPLED)).unwrap();
    assert_eq!(h.take_property_reads(), Vec::<String>::new());
}

#[test]
fn route_metadata_and_identity_cost_only_when_asked_for() {
    // `route_metadata: true` adds its one read; `identity: off` drops the peer reads.
    let mut h = host(r#", "route_metadata": true, "identity": "off""#);
    h.request(inbound(9, 5001, SAMPLED)).unwrap();
    assert_eq!(
        h.take_property_reads(),
        [
            "connection.id",
            "request.protocol",
            "source.address",
            "xds.cluster_name",
            "xds.route_name",
            "xds.route_metadata",
            "response.code",
            "response.flags",
            "response.backend_latency",
        ]
    );
}

#[test]
fn without_a_connection_id_every_request_reads_its_own_facts() {
    // A host that does not expose `connection.id` still gets exact spans, at the full cost.
    let mut h = host(r#", "identity": "off""#);
    let req = || {
        Req::get("/cart")
            .header("traceparent", SAMPLED)
            .property("request.protocol", "HTTP/1.1")
            .property("source.address", "10.0.0.9:6000")
            .property("response.code", 200i64)
    };
    h.request(req()).unwrap();
    h.request(req()).unwrap();
    let reads = h.take_property_reads();
    assert_eq!(
        reads.iter().filter(|p| *p == "source.address").count(),
        2,
        "{reads:?}"
    );
    for s in flush_one(&mut h) {
        assert_eq!(str_attr(&s, "client.address").as_deref(), Some("10.0.0.9"));
    }
}

/// An inbound gRPC call on connection 41 answering with `resp` (HTTP 200).
fn grpc_call(traceparent: &str, resp: Resp) -> Req {
    let mut r = inbound(41, 5001, traceparent)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .response(resp);
    r.headers.replace(b":method", b"POST");
    r.headers.replace(b":path", b"/pkg.v1.Greeter/SayHello");
    r
}

fn grpc_reply() -> Resp {
    Resp::status(200).header("content-type", "application/grpc")
}

/// The same reads as a plain request, with the one `grpc-status` read spliced in at `at`.
fn with_grpc_read(base: &[&str], at: usize, read: &str) -> Vec<String> {
    let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    v.insert(at, read.to_string());
    v
}

#[test]
fn a_recorded_grpc_call_reads_its_status_once() {
    let mut h = host("");
    h.request(inbound(41, 5001, SAMPLED)).unwrap();
    h.take_property_reads();
    // The status in the trailers: read as they pass, before `on_log`.
    let ok = grpc_reply()
        .body(vec![0, 0, 0, 0, 0])
        .trailer("grpc-status", "13");
    h.request(grpc_call(SAMPLED, ok)).unwrap();
    assert_eq!(
        h.take_property_reads(),
        with_grpc_read(
            &REUSED_INBOUND_CONNECTION,
            1,
            "response_trailers[grpc-status]"
        )
    );
    // Trailers-Only: no trailers, so `on_log` looks in the response headers.
    let only = grpc_reply().header("grpc-status", "14");
    h.request(grpc_call(SAMPLED, only)).unwrap();
    assert_eq!(
        h.take_property_reads(),
        with_grpc_read(
            &REUSED_INBOUND_CONNECTION,
            3,
            "response_headers[grpc-status]"
        )
    );
    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 3);
    assert_eq!(
        str_attr(&spans[1], "rpc.response.status_code").as_deref(),
        Some("INTERNAL")
    );
    assert_eq!(
        str_attr(&spans[2], "rpc.response.status_code").as_deref(),
        Some("UNAVAILABLE")
    );
    assert_eq!(spans[2].name, "pkg.v1.Greeter/SayHello");
    // A plain HTTP request never looks for a gRPC status.
    assert_eq!(str_attr(&spans[0], "rpc.response.status_code"), None);
}

#[test]
fn an_unsampled_grpc_call_pays_only_what_always_keep_needs() {
    let failed = || {
        grpc_reply()
            .body(vec![0, 0, 0, 0, 0])
            .trailer("grpc-status", "13")
    };
    // Always-keep off: nothing, whatever the call's status.
    let mut h = host("");
    h.request(grpc_call(UNSAMPLED, failed())).unwrap();
    assert_eq!(h.take_property_reads(), Vec::<String>::new());

    // `always_keep: error`: the status and the response code; an OK call stops there.
    let mut h = host(r#", "sampling": {"always_keep": ["error"]}"#);
    let ok = grpc_reply().trailer("grpc-status", "0");
    h.request(grpc_call(UNSAMPLED, ok)).unwrap();
    assert_eq!(
        h.take_property_reads(),
        ["response_trailers[grpc-status]", "response.code"]
    );
    // A failed one (HTTP 200, INTERNAL in the trailers) is kept, and then read as a span.
    h.request(grpc_call(UNSAMPLED, failed())).unwrap();
    let reads = h.take_property_reads();
    assert_eq!(
        reads[..2],
        ["response_trailers[grpc-status]", "response.code"]
    );
    assert!(
        !reads[2..].iter().any(|r| r.contains("grpc-status")),
        "the status is read once: {reads:?}"
    );
    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 1);
    assert_eq!(
        str_attr(&spans[0], "mesh.sampling.kept_by").as_deref(),
        Some("error")
    );
    assert_eq!(
        str_attr(&spans[0], "error.type").as_deref(),
        Some("INTERNAL")
    );
    assert_eq!(h.metric("meshtrace.spans_kept"), Some(1));
}

#[test]
fn a_grpc_web_status_is_read_from_the_body_trailer_frame() {
    // No grpc_web filter ahead: the upstream answers gRPC-Web itself, status in the body.
    let mut h = host("");
    let mut body = web_frame(0, b"\x0a\x02hi");
    body.extend(web_frame(0x80, b"grpc-status:13\r\ngrpc-message:boom\r\n"));
    h.request(grpc_web_call(body)).unwrap();
    // The body tail is a buffer read, not a header read: no `grpc-status` lookup follows.
    let reads = h.take_property_reads();
    assert!(
        !reads.iter().any(|r| r.contains("grpc-status")),
        "{reads:?}"
    );
    let spans = flush_one(&mut h);
    assert_eq!(
        str_attr(&spans[0], "rpc.response.status_code").as_deref(),
        Some("INTERNAL")
    );
    assert_eq!(spans[0].name, "pkg.v1.Greeter/SayHello");
}

/// A gRPC-Web call answered by an upstream that speaks gRPC-Web itself, with `body`.
fn grpc_web_call(body: Vec<u8>) -> Req {
    let reply = Resp::status(200)
        .header("content-type", "application/grpc-web+proto")
        .body(body);
    let mut req = grpc_call(SAMPLED, reply);
    req.headers
        .replace(b"content-type", b"application/grpc-web+proto");
    req
}

/// A gRPC-Web frame: flag byte, 4-byte big-endian length, payload.
fn web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn a_long_grpc_web_error_trailer_frame_still_gives_the_status() {
    let mut h = host("");
    // An error trailer frame of about 4 KB: a long message and status details.
    let mut trailers = b"grpc-status:9\r\ngrpc-message:".to_vec();
    trailers.extend(std::iter::repeat_n(b'm', 1500));
    trailers.extend_from_slice(b"\r\ngrpc-status-details-bin:");
    trailers.extend(std::iter::repeat_n(b'A', 2500));
    trailers.extend_from_slice(b"\r\n");
    let mut body = web_frame(0, &[7; 3000]);
    body.extend(web_frame(0x80, &trailers));
    h.request(grpc_web_call(body)).unwrap();
    let reads = h.take_property_reads();
    assert!(
        !reads.iter().any(|r| r.contains("grpc-status")),
        "{reads:?}"
    );
    let spans = flush_one(&mut h);
    assert_eq!(
        str_attr(&spans[0], "rpc.response.status_code").as_deref(),
        Some("FAILED_PRECONDITION")
    );
    assert_eq!(h.metric("meshtrace.grpc.status_missing"), Some(0));
}

#[test]
fn a_grpc_web_trailer_frame_with_an_invalid_status_is_counted() {
    let mut h = host("");
    let mut body = web_frame(0, b"\x0a\x02hi");
    body.extend(web_frame(0x80, b"grpc-status:42\r\n"));
    h.request(grpc_web_call(body)).unwrap();
    let spans = flush_one(&mut h);
    assert_eq!(
        str_attr(&spans[0], "rpc.response.status_code").as_deref(),
        Some("UNKNOWN")
    );
    assert_eq!(h.metric("meshtrace.grpc.calls"), Some(1));
    assert_eq!(h.metric("meshtrace.grpc.status_invalid"), Some(1));
    assert_eq!(h.metric("meshtrace.grpc.status_missing"), Some(0));
}

#[test]
fn grpc_counters_count_the_same_spans() {
    // Unsampled calls that `always_keep: error` judges: the rate limit keeps only the first.
    let mut h =
        host(r#", "sampling": {"ratio": 0, "max_per_second": 1, "always_keep": ["error"]}"#);
    for _ in 0..3 {
        let reply = grpc_reply().trailer("grpc-status", "abc");
        h.request(grpc_call(UNSAMPLED, reply)).unwrap();
    }
    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 1);
    assert_eq!(h.metric("meshtrace.spans_kept"), Some(1));
    assert_eq!(h.metric("meshtrace.grpc.calls"), Some(1));
    assert_eq!(h.metric("meshtrace.grpc.status_invalid"), Some(1));
    assert_eq!(h.metric("meshtrace.grpc.status_missing"), Some(0));
}

#[test]
fn a_malformed_grpc_status_is_unknown_and_counted() {
    let mut h = host("");
    let reply = grpc_reply().trailer("grpc-status", "abc");
    h.request(grpc_call(SAMPLED, reply)).unwrap();
    // No status at all: inferred from the HTTP 200, and counted as missing.
    h.request(grpc_call(SAMPLED, grpc_reply())).unwrap();
    let spans = flush_one(&mut h);
    for s in &spans {
        assert_eq!(
            str_attr(s, "rpc.response.status_code").as_deref(),
            Some("UNKNOWN")
        );
        assert_eq!(str_attr(s, "error.type").as_deref(), Some("UNKNOWN"));
    }
    assert_eq!(h.metric("meshtrace.grpc.calls"), Some(2));
    assert_eq!(h.metric("meshtrace.grpc.status_invalid"), Some(1));
    assert_eq!(h.metric("meshtrace.grpc.status_missing"), Some(1));
}

/// An ambient waypoint's node: `Node.id` (field 1) is all the filter needs to recognise one.
fn waypoint_host() -> Host {
    let id = b"waypoint~10.1.4.7~waypoint-5d8f7c-k2x9p.bookinfo~bookinfo.svc.cluster.local";
    let mut node = vec![0x0a, id.len() as u8];
    node.extend_from_slice(id);
    let mut h = load_filter()
        .record_property_reads()
        .property("xds.node", node)
        .configure(r#"{"collector": {"cluster": "otel_collector"}, "direction": "auto"}"#)
        .unwrap();
    assert_eq!(h.take_property_reads(), ["xds.node"]);
    h
}

/// A request through a waypoint on internal connection `conn`: the internal connection has no
/// TLS; the HBONE peer's identity is filter state.
fn through_waypoint(conn: u64, peer_port: u16, traceparent: &str) -> Req {
    Req::get("/reviews/1")
        .header("traceparent", traceparent)
        .property("connection.id", conn)
        .property(
            "xds.cluster_name",
            "inbound-vip|9080|http/v2|reviews.bookinfo.svc.cluster.local",
        )
        .property("xds.route_name", "default")
        .property("request.protocol", "HTTP/1.1")
        .property("source.address", format!("10.0.0.7:{peer_port}"))
        .property("connection.mtls", false)
        .property_at(
            &["filter_state", "io.istio.peer_principal"],
            peer(peer_port),
        )
        .property("response.code", 200i64)
        .property("response.flags", 0i64)
        .property("response.backend_latency", 3_000_000i64)
}

#[test]
fn a_waypoint_reads_the_hbone_peer_once_instead_of_the_tls_session() {
    let mut h = waypoint_host();
    h.request(through_waypoint(51, 5001, SAMPLED)).unwrap();
    let first = h.take_property_reads();
    h.request(through_waypoint(51, 5001, SAMPLED)).unwrap();
    let second = h.take_property_reads();
    // `direction: auto` needs neither the listener direction nor the connection's TLS reads.
    assert_eq!(
        first,
        [
            "connection.id",
            "request.protocol",
            "source.address",
            "xds.cluster_name",
            "xds.route_name",
            "response.code",
            "response.flags",
            "response.backend_latency",
            "filter_state.io.istio.peer_principal",
        ]
    );
    assert_eq!(second, REUSED_CONNECTION);
    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 2);
    for s in &spans {
        assert_eq!(s.kind, 2, "SERVER");
        assert_eq!(str_attr(s, "mesh.peer.spiffe_id"), Some(peer(5001)));
        assert_eq!(str_attr(s, "mesh.peer.namespace").as_deref(), Some("shop"));
        assert_eq!(
            attr(&s.attributes, "connection.mtls"),
            Some(Attr::Bool(true))
        );
        assert_eq!(str_attr(s, "mesh.upstream.subset").as_deref(), Some("v2"));
        assert_eq!(
            str_attr(s, "mesh.destination.service.name").as_deref(),
            Some("reviews")
        );
        assert_eq!(
            str_attr(s, "mesh.destination.service.namespace").as_deref(),
            Some("bookinfo")
        );
    }
}

#[test]
fn an_unsampled_request_through_a_waypoint_reads_no_property() {
    let mut h = waypoint_host();
    h.request(through_waypoint(52, 5002, UNSAMPLED)).unwrap();
    assert_eq!(h.take_property_reads(), Vec::<String>::new());
}

/// The filter-state keys `access_log.filter_state` writes, as Envoy names them, in order.
const FILTER_STATE_KEYS: [&str; 3] = [
    "wasm.meshtrace.trace_id",
    "wasm.meshtrace.span_id",
    "wasm.meshtrace.sampled",
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The filter-state writes of one exchange, as text.
fn writes(x: &meshtrace_host_test::host::Exchange) -> Vec<(String, String)> {
    x.filter_state
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn expected_writes(trace: &str, span: &str, sampled: &str) -> Vec<(String, String)> {
    FILTER_STATE_KEYS
        .iter()
        .zip([trace, span, sampled])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn access_log_ids_are_three_writes_on_recorded_requests_and_no_read() {
    // Off by default: not one write.
    let mut h = host("");
    let x = h.request(inbound(41, 5001, SAMPLED)).unwrap();
    assert!(x.filter_state.is_empty(), "{:?}", writes(&x));
    h.take_property_reads();

    let mut h = host(r#", "access_log": {"filter_state": "recorded"}"#);
    let x = h.request(inbound(41, 5001, SAMPLED)).unwrap();
    // The reads are those of any recorded request: the ids come from the decision.
    assert_eq!(h.take_property_reads(), NEW_CONNECTION);
    let span = flush_one(&mut h).remove(0);
    assert_eq!(
        writes(&x),
        expected_writes("4bf92f3577b34da6a3ce929d0e0e4736", &hex(&span.span_id), "1")
    );
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");

    // The unsampled path stays at its cost: no read, no write.
    let x = h.request(inbound(41, 5001, UNSAMPLED)).unwrap();
    assert!(x.filter_state.is_empty(), "{:?}", writes(&x));
    assert_eq!(h.take_property_reads(), Vec::<String>::new());
}

#[test]
fn access_log_all_writes_unsampled_requests_with_sampled_zero() {
    let mut h = host(r#", "access_log": {"filter_state": "all"}"#);
    let x = h.request(inbound(7, 5001, UNSAMPLED)).unwrap();
    assert_eq!(h.take_property_reads(), Vec::<String>::new());
    // The span id is the one this hop sent upstream as the parent.
    let tp = x.upstream_header("traceparent").unwrap().to_string();
    let sent: Vec<&str> = tp.split('-').collect();
    assert_eq!(sent[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(writes(&x), expected_writes(sent[1], sent[2], "0"));
}

#[test]
fn a_kept_span_writes_its_ids_in_on_log() {
    // Unsampled at request time, kept for its 503 in `on_log`: written then, once, with the
    // flags the exported span carries.
    let mut h = host(
        r#", "access_log": {"filter_state": "recorded"}, "sampling": {"always_keep": ["error"]}"#,
    );
    let x = h
        .request(inbound(7, 5001, UNSAMPLED).property("response.code", 503i64))
        .unwrap();
    let span = flush_one(&mut h).remove(0);
    assert_eq!(span.flags & 1, 0);
    assert_eq!(
        writes(&x),
        expected_writes(&hex(&span.trace_id), &hex(&span.span_id), "0")
    );
    // With `all` the request wrote them already: the kept span adds no write.
    let mut h =
        host(r#", "access_log": {"filter_state": "all"}, "sampling": {"always_keep": ["error"]}"#);
    let x = h
        .request(inbound(7, 5001, UNSAMPLED).property("response.code", 503i64))
        .unwrap();
    let span = flush_one(&mut h).remove(0);
    assert_eq!(
        writes(&x),
        expected_writes(&hex(&span.trace_id), &hex(&span.span_id), "0")
    );
}

/// A call from this sidecar to an AWS Lambda function through Envoy's aws_lambda filter
/// (`faas.lambda` names the cluster), answered like Lambda with a function error and the log
/// tail; `body` says nothing, the headers say it all.
fn lambda_call(conn: u64, traceparent: &str) -> Req {
    let tail = "UkVQT1JUIFJlcXVlc3RJZDogcgkgRHVyYXRpb246IDEuMDAgbXMJQmlsbGVkIER1cmF0aW9uOiAyIG1zCU1lbW9yeSBTaXplOiAxMjggTUIJTWF4IE1lbW9yeSBVc2VkOiA2NCBNQglJbml0IER1cmF0aW9uOiA5OS41MCBtcwo=";
    Req::get("/thumbnails")
        .header("traceparent", traceparent)
        .property("connection.id", conn)
        .property("xds.cluster_name", "lambda_thumbnails")
        .property("xds.route_name", "thumbnails")
        .property("request.protocol", "HTTP/1.1")
        .property("source.address", "10.0.0.7:5001")
        .property("response.code", 200i64)
        .property("response.flags", 0i64)
        .property("response.backend_latency", 3_000_000i64)
        .property("upstream.address", "10.9.9.9:443")
        .property("upstream.request_attempt_count", 1i64)
        .response(
            Resp::status(200)
                .header("x-amzn-requestid", "req-1")
                .header("x-amz-function-error", "Unhandled")
                .header("x-amz-log-result", tail),
        )
}

#[test]
fn a_lambda_call_reads_no_property_more_and_unsampled_ones_pay_nothing() {
    let mut h = host(
        r#","direction":"outbound","faas":{"lambda":[{"cluster":"lambda_thumbnails","arn":"arn:aws:lambda:us-east-1:123456789012:function:thumbnails"}],"lambda_log_tail":true}"#,
    );
    h.request(lambda_call(9, SAMPLED)).unwrap();
    h.take_property_reads();
    // On a reused connection: the outbound request's reads, nothing for the function (the
    // cluster is read anyway; the response headers come in the map capture would read).
    let x = h.request(lambda_call(9, SAMPLED)).unwrap();
    let mut want: Vec<&str> = REUSED_CONNECTION.to_vec();
    want.extend(["upstream.address", "upstream.request_attempt_count"]);
    assert_eq!(h.take_property_reads(), want);
    let tp = x.upstream_header("traceparent").unwrap().to_string();
    let span_id = &tp[36..52];
    assert_eq!(
        x.upstream_header("x-amzn-trace-id"),
        Some(
            format!("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent={span_id};Sampled=1").as_str()
        )
    );
    assert_eq!(x.upstream_header("x-amz-log-type"), Some("Tail"));
    // Unsampled: no property, no X-Ray header, no log tail.
    let x = h.request(lambda_call(9, UNSAMPLED)).unwrap();
    assert_eq!(h.take_property_reads(), Vec::<String>::new());
    assert_eq!(x.upstream_header("x-amzn-trace-id"), None);
    assert_eq!(x.upstream_header("x-amz-log-type"), None);
    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 2);
    let s = &spans[1];
    assert_eq!(
        str_attr(s, "faas.invoked_name").as_deref(),
        Some("thumbnails")
    );
    assert_eq!(str_attr(s, "aws.request_id").as_deref(), Some("req-1"));
    assert_eq!(str_attr(s, "error.type").as_deref(), Some("Unhandled"));
    assert_eq!(
        attr(&s.attributes, "faas.coldstart"),
        Some(Attr::Bool(true))
    );
    assert_eq!(
        attr(&s.attributes, "aws.lambda.billed_duration_ms"),
        Some(Attr::Int(2))
    );
    assert_eq!(h.metric("meshtrace.lambda.invocations"), Some(2));
    assert_eq!(h.metric("meshtrace.lambda.function_errors"), Some(2));
    assert_eq!(h.metric("meshtrace.lambda.log_result_invalid"), Some(0));
}

#[test]
fn always_keep_error_keeps_a_function_error_behind_a_200() {
    let lambda = r#","faas":{"lambda":[{"cluster":"lambda_thumbnails","arn":"arn:aws:lambda:us-east-1:123456789012:function:thumbnails"}]}"#;
    let mut h = host(&format!(
        r#","direction":"outbound","sampling":{{"always_keep":["error"]}}{lambda}"#
    ));
    h.request(lambda_call(9, UNSAMPLED)).unwrap();
    let reads = h.take_property_reads();
    assert_eq!(
        reads[..3],
        [
            "response.code",
            "xds.cluster_name",
            "response_headers[x-amz-function-error]"
        ]
    );
    // Another cluster: the cluster read, no header read, not kept.
    let other = lambda_call(9, UNSAMPLED).property("xds.cluster_name", "outbound|80||x");
    h.request(other).unwrap();
    assert_eq!(
        h.take_property_reads(),
        ["response.code", "xds.cluster_name"]
    );
    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(
        str_attr(s, "mesh.sampling.kept_by").as_deref(),
        Some("error")
    );
    assert_eq!(str_attr(s, "error.type").as_deref(), Some("Unhandled"));
    assert_eq!(str_attr(s, "aws.request_id").as_deref(), Some("req-1"));
    // Without Lambda upstreams, an unsampled 200 reads only its status.
    let mut h = host(r#","direction":"outbound","sampling":{"always_keep":["error"]}"#);
    h.request(lambda_call(9, UNSAMPLED)).unwrap();
    assert_eq!(h.take_property_reads(), ["response.code"]);
}

// RED metrics (`metrics.enabled`): every request is counted, so an unsampled one must learn its
// status and duration; what it reads is exactly what the always-keep rules read, so with
// `always_keep: [error, slow]` the metrics add nothing, and a recorded request reads nothing
// more than its span.

const METRICS_ON: &str = r#", "metrics": {"enabled": true}"#;

/// [`inbound`] with the `request.duration` Envoy has in `on_log`.
fn timed(conn: u64, traceparent: &str) -> Req {
    inbound(conn, 5001, traceparent).property("request.duration", 7_000_000i64)
}

#[test]
fn metrics_on_an_unsampled_request_read_its_status_and_duration() {
    // Inbound: the kind is known, no rule needs the cluster.
    let mut h = host(&format!(r#", "direction": "inbound"{METRICS_ON}"#));
    h.request(timed(7, UNSAMPLED)).unwrap();
    assert_eq!(
        h.take_property_reads(),
        ["response.code", "request.duration"]
    );
    // `direction: auto` (the default): the cluster name gives the kind, as on a span.
    let mut h = host(METRICS_ON);
    h.request(timed(7, UNSAMPLED)).unwrap();
    assert_eq!(
        h.take_property_reads(),
        ["response.code", "request.duration", "xds.cluster_name"]
    );
    // A request that got no response reads the flags too, to judge it as the span would.
    let mut h = host(&format!(r#", "direction": "inbound"{METRICS_ON}"#));
    h.request(timed(7, UNSAMPLED).property("response.code", 0i64))
        .unwrap();
    assert_eq!(
        h.take_property_reads(),
        ["response.code", "response.flags", "request.duration"]
    );
}

#[test]
fn metrics_reuse_the_always_keep_reads_and_add_none() {
    let keep = r#", "sampling": {"always_keep": ["error", "slow"], "slow_ms": 500}"#;
    for direction in ["inbound", "auto"] {
        let base = format!(r#", "direction": "{direction}"{keep}"#);
        let mut off = host(&base);
        off.request(timed(7, UNSAMPLED)).unwrap();
        let without = off.take_property_reads();
        let mut on = host(&format!("{base}{METRICS_ON}"));
        on.request(timed(7, UNSAMPLED)).unwrap();
        let with = on.take_property_reads();
        if direction == "inbound" {
            assert_eq!(without, ["response.code", "request.duration"]);
            assert_eq!(with, without, "inbound: no read added");
        } else {
            // `auto` needs the kind, which the always-keep rules do not: one cluster read.
            assert_eq!(with[..2], without[..], "{with:?}");
            assert_eq!(with[2..], ["xds.cluster_name"]);
        }
    }
}

#[test]
fn metrics_on_a_recorded_request_read_nothing_more_than_its_span() {
    let mut h = host(METRICS_ON);
    h.request(timed(41, SAMPLED)).unwrap();
    assert_eq!(h.take_property_reads(), NEW_CONNECTION);
    h.request(timed(41, SAMPLED)).unwrap();
    assert_eq!(h.take_property_reads(), REUSED_INBOUND_CONNECTION);
}

#[test]
fn metrics_on_an_unsampled_grpc_call_read_its_status_once() {
    let mut h = host(&format!(r#", "direction": "inbound"{METRICS_ON}"#));
    let failed = grpc_reply()
        .body(vec![0, 0, 0, 0, 0])
        .trailer("grpc-status", "13");
    h.request(grpc_call(UNSAMPLED, failed).property("request.duration", 1i64))
        .unwrap();
    assert_eq!(
        h.take_property_reads(),
        [
            "response_trailers[grpc-status]",
            "response.code",
            "request.duration"
        ]
    );
}

#[test]
fn metrics_subset_rules_read_the_cluster_of_unsampled_requests_only() {
    let rules = r#", "direction": "outbound", "traffic": {"rules": [
        {"match": "subset", "value": "v1", "release": "stable"},
        {"match": "header", "name": "x-canary", "release": "canary"}]}"#;
    let mut h = host(&format!("{rules}{METRICS_ON}"));
    let out = |traceparent: &str| {
        timed(3, traceparent).property(
            "xds.cluster_name",
            "outbound|80|v1|backend.default.svc.cluster.local",
        )
    };
    h.request(out(UNSAMPLED)).unwrap();
    assert_eq!(
        h.take_property_reads(),
        ["response.code", "request.duration", "xds.cluster_name"]
    );
    // Header rules are decided from the request headers: no read.
    let mut h = host(&format!(
        r#", "direction": "outbound", "traffic": {{"rules": [
        {{"match": "header", "name": "x-canary", "release": "canary"}}]}}{METRICS_ON}"#
    ));
    h.request(out(UNSAMPLED).header("x-canary", "1")).unwrap();
    assert_eq!(
        h.take_property_reads(),
        ["response.code", "request.duration"]
    );
}
