//! Translation between formats through the whole request path: extract, decide, inject, record.

use super::*;
#[allow(unused_imports)]
use crate::ids::{SpanId, TraceId};
use crate::propagation::{
    b3, baggage, gcp, grpc_trace_bin, l5d, tracecontext, xray, Propagator, SamplingState,
};

const TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const PARENT: &str = "e457b5a2e4d86bd1";

fn tracer_with(extra: &str) -> Tracer {
    crate::test_support::tracer(extra, 11)
}

use crate::test_support::headers;

/// The injected headers as strings, and the removed names.
struct Sent {
    set: Vec<(String, String)>,
    removed: Vec<String>,
}

impl Sent {
    fn get(&self, name: &str) -> Option<&str> {
        self.set
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn names(&self) -> Vec<&str> {
        self.set.iter().map(|(n, _)| n.as_str()).collect()
    }
}

fn run<'a>(t: &mut Tracer, h: &RequestHeaders<'a>) -> (SpanStart<'a>, Sent, SpanRecord) {
    let d = t.extract(h);
    let mut inj = Injection::default();
    t.inject(&d, h, &mut inj);
    let set = inj
        .headers()
        .map(|(n, v)| (n.to_string(), String::from_utf8(v.to_vec()).unwrap()))
        .collect();
    let removed = inj.remove.iter().map(|n| n.to_string()).collect();
    let mut rec = SpanRecord::default();
    t.begin_span(&d, h, 1, &mut rec);
    (d, Sent { set, removed }, rec)
}

use crate::test_support::str_attr as attr;

#[test]
fn b3_single_continues_and_answers_in_b3() {
    let mut t = tracer_with("");
    let b3 = format!("{TRACE}-{PARENT}-1-05e3ac9a4f6e3b90");
    let pairs = [("b3", b3.as_str())];
    let (d, sent, rec) = run(&mut t, &headers(&pairs));
    assert_eq!(d.trace_id.to_string(), TRACE);
    assert_eq!(rec.parent_span_id.unwrap().to_string(), PARENT);
    assert_eq!(d.flags, FLAG_SAMPLED);
    assert!(!d.debug);
    let s = d.span_id;
    assert_eq!(sent.names(), ["traceparent", "b3"]);
    assert_eq!(
        sent.get("traceparent").unwrap(),
        format!("00-{TRACE}-{s}-01")
    );
    // Our span is the upstream's parent, and no parent id is propagated.
    assert_eq!(sent.get("b3").unwrap(), format!("{TRACE}-{s}-1"));
    assert!(sent.removed.is_empty());
}

#[test]
fn b3_narrow_debug_and_deny_only() {
    let mut t = tracer_with("");
    let pairs = [("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-d")];
    let (d, sent, _) = run(&mut t, &headers(&pairs));
    let s = d.span_id;
    assert!(d.debug);
    // Debug is sampled, and stays out of the W3C flag byte.
    assert_eq!(d.flags, FLAG_SAMPLED);
    assert_eq!(sent.get("b3").unwrap(), format!("a3ce929d0e0e4736-{s}-d"));
    assert_eq!(
        sent.get("traceparent").unwrap(),
        format!("00-0000000000000000a3ce929d0e0e4736-{s}-01")
    );

    let pairs = [("b3", "0")];
    let (d, sent, _) = run(&mut t, &headers(&pairs));
    assert!(!d.sampled() && d.parent.is_none());
    assert_eq!(d.arrival, Some(Propagator::B3));
    let (tid, s) = (d.trace_id, d.span_id);
    assert_eq!(sent.get("b3").unwrap(), format!("{tid}-{s}-0"));
    assert_eq!(sent.get("traceparent").unwrap(), format!("00-{tid}-{s}-02"));
}

#[test]
fn b3_multi_is_rewritten_in_place() {
    let mut t = tracer_with("");
    let pairs = [
        ("X-B3-TraceId", "463ac35c9f6413ad"),
        ("X-B3-SpanId", "0020000000000001"),
        ("X-B3-ParentSpanId", "0010000000000001"),
        ("X-B3-Flags", "1"),
        ("X-B3-Sampled", "0"),
    ];
    let (d, sent, rec) = run(&mut t, &headers(&pairs));
    let s = d.span_id;
    assert_eq!(rec.parent_span_id.unwrap().to_string(), "0020000000000001");
    assert!(d.debug && d.sampled());
    assert_eq!(sent.get("x-b3-traceid"), Some("463ac35c9f6413ad"));
    assert_eq!(sent.get("x-b3-spanid").unwrap(), s.to_string());
    assert_eq!(sent.get("x-b3-flags"), Some("1"));
    assert_eq!(sent.removed, ["x-b3-parentspanid", "x-b3-sampled"]);

    // A deferred decision is taken here and sent on as made.
    let pairs = [
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", PARENT),
        ("x-b3-flags", "0"),
    ];
    let (d, sent, _) = run(&mut t, &headers(&pairs));
    assert!(d.sampled() && !d.debug);
    assert_eq!(sent.get("x-b3-sampled"), Some("1"));
    assert_eq!(sent.removed, ["x-b3-flags"]);
}

#[test]
fn l5d_context_reqid_and_attribute() {
    let mut t = tracer_with("");
    let pairs = [
        (
            "l5d-ctx-trace",
            "vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=",
        ),
        ("l5d-reqid", "f2fd78005d756b0e"),
    ];
    let (d, sent, rec) = run(&mut t, &headers(&pairs));
    assert_eq!(d.trace_id.to_string(), "0000000000000000f2fd78005d756b0e");
    assert_eq!(rec.parent_span_id.unwrap().to_string(), "bd82828f2f2d08d2");
    // Finagle's "sampling unknown" leaves the decision to us.
    assert!(d.sampled());
    let ctx = l5d::parse(sent.get("l5d-ctx-trace").unwrap().as_bytes()).unwrap();
    assert_eq!(ctx.span_id, d.span_id);
    assert_eq!(ctx.parent_id.to_string(), "bd82828f2f2d08d2");
    assert_eq!(ctx.trace_id, d.trace_id);
    assert!(ctx.narrow);
    assert_eq!(ctx.sampling(), SamplingState::Accept);
    assert_eq!(sent.get("l5d-reqid"), Some("f2fd78005d756b0e"));
    assert_eq!(
        attr(&rec, "linkerd.request_id").as_deref(),
        Some("f2fd78005d756b0e")
    );
}

#[test]
fn l5d_sample_overrides_only_when_trusted() {
    let pairs = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("l5d-sample", "0"),
    ];
    let (d, _, _) = run(&mut tracer_with(""), &headers(&pairs));
    assert!(d.sampled());
    let mut trusting = tracer_with(r#","propagators":{"trust_l5d_sample":true}"#);
    let (d, sent, _) = run(&mut trusting, &headers(&pairs));
    assert!(!d.sampled());
    assert!(sent.get("traceparent").unwrap().ends_with("-00"));
    let pairs = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ),
        ("l5d-sample", "1.0"),
    ];
    let (d, _, _) = run(&mut trusting, &headers(&pairs));
    assert!(d.sampled());
}

#[test]
fn xray_keeps_extra_fields_and_root_only_has_no_parent() {
    let mut t = tracer_with("");
    let pairs = [(
        "x-amzn-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Self=1-67891234-12456789abcdef012345678",
    )];
    let (d, sent, _) = run(&mut t, &headers(&pairs));
    let s = d.span_id;
    assert!(!d.sampled());
    assert_eq!(d.parent.unwrap().to_string(), "53995c3f42cd8ad8");
    assert_eq!(
        sent.get("x-amzn-trace-id").unwrap(),
        format!("Root=1-5759e988-bd862e3fe1be46a994272793;Parent={s};Sampled=0;Self=1-67891234-12456789abcdef012345678")
    );
    assert_eq!(
        sent.get("traceparent").unwrap(),
        format!("00-5759e988bd862e3fe1be46a994272793-{s}-00")
    );
    // What a load balancer sends: a trace, no parent span.
    let pairs = [(
        "x-amzn-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793",
    )];
    let (d, sent, rec) = run(&mut t, &headers(&pairs));
    assert_eq!(d.trace_id.to_string(), "5759e988bd862e3fe1be46a994272793");
    assert_eq!(d.parent, None);
    assert_eq!(rec.parent_span_id, None);
    assert!(d.sampled());
    assert_eq!(
        sent.get("x-amzn-trace-id").unwrap(),
        format!(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent={};Sampled=1",
            d.span_id
        )
    );
}

#[test]
fn gcp_and_grpc_trace_bin() {
    let mut t = tracer_with("");
    let pairs = [(
        "x-cloud-trace-context",
        "105445aa7843bc8bf206b12000100000/1;o=0",
    )];
    let (d, sent, rec) = run(&mut t, &headers(&pairs));
    assert_eq!(rec.parent_span_id.unwrap().as_u64(), 1);
    assert!(!d.sampled());
    assert_eq!(
        sent.get("x-cloud-trace-context").unwrap(),
        format!(
            "105445aa7843bc8bf206b12000100000/{};o=0",
            d.span_id.as_u64()
        )
    );

    let pairs = [("grpc-trace-bin", "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE")];
    let (d, sent, rec) = run(&mut t, &headers(&pairs));
    assert_eq!(rec.parent_span_id.unwrap().to_string(), "00f067aa0ba902b7");
    assert!(d.sampled());
    let out = sent.get("grpc-trace-bin").unwrap();
    assert!(!out.ends_with('='), "padding style kept: {out}");
    let (c, padded) = grpc_trace_bin::parse(out.as_bytes()).unwrap();
    assert!(!padded);
    assert_eq!(
        (c.trace_id, c.span_id, c.options),
        (d.trace_id, d.span_id, 1)
    );
}

#[test]
fn contradicting_contexts_never_reach_upstream() {
    let mut t = tracer_with("");
    let pairs = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", PARENT),
        (
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
        ),
        ("grpc-trace-bin", "garbage"),
    ];
    let (d, sent, _) = run(&mut t, &headers(&pairs));
    assert_eq!(d.arrival, Some(Propagator::TraceContext));
    assert_eq!(sent.names(), ["traceparent"]);
    assert_eq!(
        sent.removed,
        [
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-amzn-trace-id",
            "grpc-trace-bin"
        ]
    );
    // A malformed first format is counted; the next valid one wins and W3C is rewritten.
    let pairs = [
        (
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
    ];
    let (d, sent, _) = run(&mut t, &headers(&pairs));
    assert_eq!(d.malformed, Propagator::TraceContext.bit());
    assert_eq!(
        d.malformed_formats().collect::<Vec<_>>(),
        [Propagator::TraceContext]
    );
    assert_eq!(d.trace_id.to_string(), TRACE);
    assert_eq!(
        sent.get("traceparent").unwrap(),
        format!("00-{TRACE}-{}-00", d.span_id)
    );
    assert_eq!(sent.removed, ["tracestate"]);
}

#[test]
fn formats_outside_the_configuration_are_left_alone() {
    let mut t = tracer_with(r#","propagators":{"extract":["tracecontext"]}"#);
    let pairs = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
        ),
    ];
    let (_, sent, _) = run(&mut t, &headers(&pairs));
    assert!(sent.removed.is_empty());
    // Configured inject formats are written even when the request did not carry them.
    let mut t = tracer_with(r#","propagators":{"inject":["b3multi","gcp"]}"#);
    let (d, sent, _) = run(&mut t, &headers(&pairs));
    assert_eq!(
        sent.names(),
        [
            "traceparent",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-sampled",
            "x-cloud-trace-context"
        ]
    );
    assert_eq!(sent.get("x-b3-traceid").unwrap(), d.trace_id.to_string());
    assert_eq!(sent.removed, ["x-amzn-trace-id"]);
}

#[test]
fn untrusted_edge_starts_a_trace_and_links() {
    let mut t = tracer_with(r#","propagators":{"trust_incoming":false}"#);
    let pairs = [
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"),
        ("tracestate", "congo=t61rcWkgMzE"),
    ];
    let (d, sent, rec) = run(&mut t, &headers(&pairs));
    assert_ne!(d.trace_id.to_string(), TRACE);
    assert_eq!(d.parent, None);
    assert!(!d.debug);
    assert_eq!(rec.links.len(), 1);
    assert_eq!(rec.links[0].trace_id.to_string(), TRACE);
    assert_eq!(rec.links[0].span_id.to_string(), PARENT);
    // Still answered in B3, but with the new trace.
    assert_eq!(
        sent.get("b3").unwrap(),
        format!("{}-{}-1", d.trace_id, d.span_id)
    );
    assert_eq!(sent.removed, ["tracestate"]);
    assert_eq!(rec.trace_state(), b"");
    // Clients cannot force the decision either way.
    let pairs = [("b3", "0")];
    let (d, _, rec) = run(&mut t, &headers(&pairs));
    assert!(d.sampled());
    assert!(rec.links.is_empty());
}

#[test]
fn baggage_limits_and_allowlist() {
    let mut t = tracer_with(r#","baggage":{"attribute_keys":["tenant","user"]}"#);
    let pairs = [(
        "baggage",
        "tenant=acme%20corp,secret=s3cr3t,user=Am%C3%A9lie",
    )];
    let (d, sent, rec) = run(&mut t, &headers(&pairs));
    assert!(d.baggage.unchanged());
    assert_eq!(sent.get("baggage"), None);
    assert_eq!(attr(&rec, "baggage.tenant").as_deref(), Some("acme corp"));
    assert_eq!(attr(&rec, "baggage.user").as_deref(), Some("Amélie"));
    assert_eq!(attr(&rec, "baggage.secret"), None);

    let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
    let over = format!("bad key=1,{}", many.join(","));
    let pairs = [("baggage", over.as_str())];
    let (d, sent, _) = run(&mut t, &headers(&pairs));
    assert_eq!(
        d.baggage.stats,
        baggage::BaggageStats {
            kept: 64,
            malformed: 1,
            over_limit: 1
        }
    );
    assert_eq!(sent.get("baggage").unwrap(), many[..64].join(","));

    let pairs = [("baggage", "only bad")];
    let (_, sent, _) = run(&mut t, &headers(&pairs));
    assert_eq!(sent.removed, ["baggage"]);

    // Not configured: baggage is none of our business and passes untouched, even over limits.
    let mut t = tracer_with(r#","propagators":{"inject":["tracecontext"]}"#);
    let pairs = [("baggage", over.as_str())];
    let (_, sent, _) = run(&mut t, &headers(&pairs));
    assert!(sent.removed.is_empty());
    assert_eq!(sent.names(), ["traceparent"]);
}

#[test]
fn sampled_flag_survives_every_translation() {
    let cases: [(&str, &str); 7] = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ("x-b3-sampled", "0"),
        (
            "l5d-ctx-trace",
            "vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAI=",
        ),
        (
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
        ),
        (
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=0",
        ),
        ("grpc-trace-bin", "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgA="),
    ];
    let mut t = tracer_with("");
    for (name, value) in cases {
        let mut pairs = vec![(name, value)];
        if name == "x-b3-sampled" {
            pairs.extend([("x-b3-traceid", TRACE), ("x-b3-spanid", PARENT)]);
        }
        let (d, sent, _) = run(&mut t, &headers(&pairs));
        assert!(!d.sampled(), "{name}");
        assert!(d.parent.is_some(), "{name}");
        assert!(sent.get("traceparent").unwrap().ends_with("-00"), "{name}");
    }
}

proptest::proptest! {
    /// Whatever the headers hold, the request goes on with a valid context and no panic.
    #[test]
    fn any_headers_yield_a_valid_upstream_context(
        values in proptest::collection::vec(("[a-z0-9:-]{1,3}", "\\PC{0,70}"), 0..12),
        picks in proptest::collection::vec(0usize..15, 12),
    ) {
        const NAMES: [&str; 15] = [
            "traceparent", "tracestate", "baggage", "b3", "x-b3-traceid", "x-b3-spanid",
            "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "l5d-ctx-trace", "l5d-reqid",
            "l5d-sample", "x-amzn-trace-id", "x-cloud-trace-context", "grpc-trace-bin",
        ];
        let pairs: Vec<(&str, &str)> = values
            .iter()
            .zip(&picks)
            .map(|((_, v), &i)| (NAMES[i], v.as_str()))
            .collect();
        let mut t = tracer_with(r#","propagators":{"inject":["tracecontext","baggage","b3","b3multi","l5d","xray","gcp","grpc-trace-bin"],"trust_l5d_sample":true},"baggage":{"attribute_keys":["k"]}"#);
        let (d, sent, _) = run(&mut t, &headers(&pairs));
        let tp = tracecontext::parse_traceparent(sent.get("traceparent").unwrap().as_bytes()).unwrap();
        proptest::prop_assert_eq!((tp.trace_id, tp.span_id), (d.trace_id, d.span_id));
        proptest::prop_assert_eq!(tp.sampled(), d.sampled());
        if let Some(b3) = sent.get("b3") {
            proptest::prop_assert!(b3::parse_single(b3.as_bytes()).is_some());
        }
        proptest::prop_assert!(l5d::parse(sent.get("l5d-ctx-trace").unwrap().as_bytes()).is_some());
        proptest::prop_assert!(xray::parse(sent.get("x-amzn-trace-id").unwrap().as_bytes()).is_some());
        proptest::prop_assert!(gcp::parse(sent.get("x-cloud-trace-context").unwrap().as_bytes()).is_some());
        proptest::prop_assert!(grpc_trace_bin::parse(sent.get("grpc-trace-bin").unwrap().as_bytes()).is_some());
    }
}
