//! What the mesh did to a request, as span attributes: which cluster, subset and release served
//! it, what route it took, which faults were injected, how it failed, and who the peer was.
//!
//! Each concept has its own module; every function here takes plain data the glue gathered
//! (properties, header slices) and writes into a [`crate::span::SpanRecord`].

pub mod cluster;
pub mod fault;
pub mod flags;
pub mod identity;
pub mod metadata;
pub mod route;
pub mod traffic;

use super::{Finish, SpanKind, SpanRecord};
use crate::text::split_host_port;

/// What the request carried that the end of the request needs, kept by the glue between
/// the request headers and the log phase (the headers themselves are gone by then).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// Header and cookie traffic rules that matched.
    pub hits: traffic::RuleHits,
    /// Fault headers the request carried.
    pub fault: fault::FaultHeaders,
    /// `x-envoy-attempt-count` as the request arrived (set by the calling sidecar's router).
    pub attempt_count: Option<u64>,
    /// The call's gRPC framing, from `content-type`; `None` for plain HTTP.
    pub grpc: Option<crate::span::grpc::Protocol>,
    /// The Knative revision the request was sent to (`Knative-Serving-Revision`): it stands
    /// for the subset in the traffic rules and weights when the cluster names none.
    pub knative: Option<crate::span::faas::KnativeTarget>,
    /// The serverless function the request's host names (`faas.upstreams` host rules).
    pub invoked: Option<crate::span::faas::upstream::Invoked>,
    /// This is the first request of the proxy process (`faas.coldstart`): set by the adapter,
    /// which alone can tell (the Envoy glue with one compare-and-swap on shared data).
    pub coldstart: bool,
}

impl RequestFacts {
    /// A request that carried none of the facts (the [`Default`]), as a constant so that a
    /// [`crate::span::Finish`] may borrow it.
    pub const NONE: Self = Self {
        hits: traffic::RuleHits(0),
        fault: fault::FaultHeaders {
            abort_status: None,
            delay_ms: None,
        },
        attempt_count: None,
        grpc: None,
        knative: None,
        invoked: None,
        coldstart: false,
    };
}

/// What the host knows about the mesh when the request is over; every field is optional so an
/// adapter fills only what it has (the Linkerd bridge has no Envoy flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndFacts<'a> {
    /// `response.flags`.
    pub response_flags: u64,
    /// `response.code_details` (read only when flags are set).
    pub code_details: Option<&'a [u8]>,
    /// `xds.cluster_name`.
    pub cluster_name: Option<&'a [u8]>,
    /// `xds.route_name`.
    pub route_name: Option<&'a [u8]>,
    /// `xds.route_metadata`, a serialized `envoy.config.core.v3.Metadata`.
    pub route_metadata: Option<&'a [u8]>,
    /// `upstream.address` (`ip:port` of the upstream host).
    pub upstream_address: Option<&'a [u8]>,
    /// `upstream.request_attempt_count`: attempts this proxy made (client spans).
    pub upstream_attempts: Option<i64>,
    /// `response.backend_latency` in nanoseconds: the upstream's service time.
    pub backend_latency_ns: Option<i64>,
    /// The peer's TLS identity.
    pub tls: identity::TlsFacts<'a>,
}

/// The span kind an Istio cluster name implies, so `direction: auto` needs no extra host call
/// for Istio traffic; `None` for other clusters.
pub fn kind_from_cluster(name: &[u8]) -> Option<SpanKind> {
    cluster::parse(name).map(|c| {
        if c.is_outbound() {
            SpanKind::Client
        } else {
            SpanKind::Server
        }
    })
}

/// The mesh attributes: upstream cluster and subset, traffic tags, route name, faults,
/// retries, timing, peer addresses and identity.
pub fn finish(traffic: &traffic::Traffic, rec: &mut SpanRecord, f: &Finish<'_>) {
    let m = &f.mesh;
    let cluster = m.cluster_name.and_then(cluster::parse);
    if let Some(name) = m.cluster_name {
        rec.str("mesh.upstream.cluster", name);
    }
    let subset = cluster.map(|c| c.subset).filter(|s| !s.is_empty());
    if let Some(s) = subset {
        rec.str("mesh.upstream.subset", s);
    }
    if let Some(host) = cluster.map(|c| c.host).filter(|h| !h.is_empty()) {
        rec.str("mesh.upstream.service", host);
    }
    // The Service the request went to, in the resource's words (`service.name`,
    // `service.namespace`): on a waypoint the Service it fronts, on a sidecar's client span
    // the Service called. The source is the mTLS peer (`mesh.peer.*`, below).
    if let Some(svc) = cluster
        .as_ref()
        .and_then(cluster::IstioCluster::kubernetes_service)
    {
        rec.str("mesh.destination.service.name", svc.name);
        rec.str("mesh.destination.service.namespace", svc.namespace);
    }
    if let Some(r) = m.route_name {
        rec.str("mesh.route.name", r);
    }
    if let Some(md) = m.route_metadata {
        metadata::record(md, rec);
    }
    // A Knative split routes by revision, not by subset: the revision plays the subset's part.
    let release_key = subset.or_else(|| f.request.knative.as_ref().map(|k| k.revision()));
    traffic.record(f.request.hits, release_key, m.route_name, rec);
    if let Some(fault) = fault::Fault::detect(m.response_flags, m.code_details, &f.request.fault) {
        fault.record(rec);
    }
    // Attempts this proxy made for a client span; the caller's count for a server span.
    let attempts = match f.kind {
        SpanKind::Client => m.upstream_attempts.map(|a| a.max(0) as u64),
        _ => f.request.attempt_count,
    };
    if let Some(a) = attempts.filter(|a| *a > 1) {
        rec.int(
            "http.request.resend_count",
            (a - 1).min(i64::MAX as u64) as i64,
        );
    }
    if let Some(ns) = m.backend_latency_ns.filter(|n| *n >= 0) {
        rec.double("mesh.upstream.service_time_ms", ns as f64 / 1e6);
    }
    // The immediate peer: the upstream host for a client span, the caller for a server one.
    let peer = match f.kind {
        SpanKind::Client => m.upstream_address,
        _ => f.source_address,
    };
    if let Some(addr) = peer {
        let (host, port) = split_host_port(addr);
        rec.str("network.peer.address", host);
        if let Some(p) = port {
            rec.int("network.peer.port", i64::from(p));
        }
    }
    let role = match f.kind {
        SpanKind::Client => identity::PeerRole::Server,
        _ => identity::PeerRole::Client,
    };
    m.tls.record(role, rec);
}

/// Every parser here reads data from the network or the host: none may panic, whatever arrives.
#[cfg(test)]
mod never_panic {
    use super::*;
    use crate::span::SpanRecord;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_accept_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = cluster::parse(&bytes);
            let _ = kind_from_cluster(&bytes);
            let _ = identity::parse_spiffe(&bytes);
            let _ = traffic::cookie_value(&bytes, b"ab");
            let mut rec = SpanRecord::default();
            metadata::record(&bytes, &mut rec);
            let _ = metadata::parse_config_path(&bytes);
            let _ = fault::FaultHeaders::parse(Some(&bytes), Some(&bytes));
            let mut out = route::RouteBuf::new();
            route::template_path(&bytes, &mut out);
            let mut rec = SpanRecord::default();
            identity::TlsFacts {
                mtls: Some(true),
                version: Some(&bytes),
                peer_uri_san: Some(&bytes),
                peer_subject: Some(&bytes),
            }
            .record(identity::PeerRole::Client, &mut rec);
        }

        #[test]
        fn any_flags_decode(bits in any::<u64>()) {
            let codes: Vec<_> = flags::codes(bits).collect();
            prop_assert!(codes.len() <= 30);
            if flags::error_type(bits).is_some() {
                prop_assert!(!codes.is_empty());
            }
        }

        #[test]
        fn templating_is_idempotent(path in "(/[a-z0-9-]{0,40}){0,6}") {
            let mut once = route::RouteBuf::new();
            route::template_path(path.as_bytes(), &mut once);
            let mut twice = route::RouteBuf::new();
            route::template_path(&once, &mut twice);
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn istio_names_round_trip(
            outbound in any::<bool>(),
            port in any::<u16>(),
            subset in "[a-z0-9-]{0,12}",
            host in "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,12}){0,4}",
            dns_form in any::<bool>(),
        ) {
            let dir = if outbound { "outbound" } else { "inbound" };
            let name = if dns_form {
                format!("{dir}_.{port}_.{subset}_.{host}")
            } else {
                format!("{dir}|{port}|{subset}|{host}")
            };
            let c = cluster::parse(name.as_bytes()).unwrap();
            prop_assert_eq!(c.port, port);
            prop_assert_eq!(c.subset, subset.as_bytes());
            prop_assert_eq!(c.host, host.as_bytes());
            prop_assert_eq!(c.is_outbound(), outbound);
            prop_assert_eq!(c.protocol, b"");
        }

        #[test]
        fn waypoint_names_round_trip(
            port in any::<u16>(),
            protocol in "(http|tcp)",
            subset in "[a-z0-9-]{0,12}",
            host in "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,12}){0,4}",
        ) {
            let slot = if subset.is_empty() { protocol.clone() } else { format!("{protocol}/{subset}") };
            let name = format!("inbound-vip|{port}|{slot}|{host}");
            let c = cluster::parse(name.as_bytes()).unwrap();
            prop_assert_eq!(c.direction, cluster::ClusterDirection::InboundVip);
            prop_assert_eq!(c.port, port);
            prop_assert_eq!(c.protocol, protocol.as_bytes());
            prop_assert_eq!(c.subset, subset.as_bytes());
            prop_assert_eq!(c.host, host.as_bytes());
            prop_assert_eq!(kind_from_cluster(name.as_bytes()), Some(SpanKind::Server));
        }
    }
}
