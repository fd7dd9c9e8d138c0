//! The per-request host-call budget, asserted on the exact property reads the compiled filter
//! makes: each `proxy_get_property` costs ~1.4 µs inside Envoy, far more than the filter's own
//! work, so a read that creeps in is a performance regression even when every span is right.

use meshtrace_host_test::host::export::{attr, flush_one, Attr};
use meshtrace_host_test::host::{load_filter, Host, Req};
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

/// A recorded request on a connection already seen: routing at request time, then `on_log`.
const REUSED_CONNECTION: [&str; 6] = [
    "connection.id",
    "xds.cluster_name",
    "xds.route_name",
    "response.code",
    "response.flags",
    "response.backend_latency",
];

/// A connection's first recorded request adds its facts: protocol and peer address with the
/// connection id, the mTLS identity when the server span is finished.
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
    assert_eq!(second, REUSED_CONNECTION);
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
