//! gRPC calls through the whole request path: naming, `rpc.*` attributes, span status by kind,
//! and the always-keep rule judging a call the way its span does.

use super::*;
use crate::span::grpc::Code;
use crate::span::Value;
#[allow(unused_imports)]
use crate::{
    ids::{SpanId, TraceId},
    propagation::{baggage, Propagator, SamplingState},
    span::{mesh, Key, SpanKind, StatusCode},
};

fn tracer_with(extra: &str) -> Tracer {
    crate::test_support::tracer(extra, 3)
}

fn s(rec: &SpanRecord, k: &str) -> Option<String> {
    match rec.get(k) {
        Some(Value::Str(r)) => Some(String::from_utf8(rec.text(r).to_vec()).unwrap()),
        None => None,
        other => panic!("{k}: {other:?}"),
    }
}

/// A call to `path` with `content_type`, finished with `grpc_status` and `http`.
fn span(
    path: &str,
    content_type: &str,
    kind: SpanKind,
    grpc_status: Option<Code>,
    http: Option<i64>,
    flags: u64,
) -> SpanRecord {
    let t = tracer_with("");
    let pairs = [
        (":method", "POST"),
        (":path", path),
        (":authority", "greeter.shop:50051"),
        ("content-type", content_type),
    ];
    let h = RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    let mut t = t;
    let d = t.extract(&h);
    let mut rec = SpanRecord::default();
    t.begin_span(&d, &h, 10, &mut rec);
    let request = t.record_request(&h, core::iter::empty(), &mut rec);
    t.finish_span(
        &mut rec,
        &Finish {
            end_ns: 20,
            status_code: http,
            kind,
            request: &request,
            grpc_status,
            mesh: mesh::EndFacts {
                response_flags: flags,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    rec
}

const HELLO: &str = "/pkg.v1.Greeter/SayHello";

#[test]
fn a_call_is_named_by_its_method() {
    let rec = span(
        HELLO,
        "application/grpc",
        SpanKind::Server,
        Some(Code::OK),
        Some(200),
        0,
    );
    assert_eq!(rec.name(), b"pkg.v1.Greeter/SayHello");
    assert_eq!(s(&rec, "rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(
        s(&rec, "rpc.method").as_deref(),
        Some("pkg.v1.Greeter/SayHello")
    );
    assert_eq!(s(&rec, "rpc.response.status_code").as_deref(), Some("OK"));
    assert_eq!(s(&rec, "rpc.method_original"), None);
    assert_eq!(s(&rec, "http.route"), None);
    assert_eq!(s(&rec, "error.type"), None);
    assert_eq!(rec.status, StatusCode::Unset);
    assert_eq!(s(&rec, "server.address").as_deref(), Some("greeter.shop"));
    assert_eq!(rec.get("http.response.status_code"), Some(&Value::Int(200)));
}

#[test]
fn a_plain_request_gets_no_rpc_attributes() {
    let rec = span(
        HELLO,
        "application/json",
        SpanKind::Server,
        None,
        Some(200),
        0,
    );
    assert_eq!(rec.name(), b"POST /pkg.v1.Greeter/SayHello");
    assert_eq!(s(&rec, "rpc.system.name"), None);
    assert_eq!(s(&rec, "rpc.response.status_code"), None);
}

#[test]
fn a_path_that_is_not_a_method_is_other() {
    let rec = span(
        "/pkg.v1.Greeter/Say/Hello/42?x=1",
        "application/grpc+proto",
        SpanKind::Server,
        Some(Code::OK),
        Some(200),
        0,
    );
    assert_eq!(rec.name(), b"grpc");
    assert_eq!(s(&rec, "rpc.method").as_deref(), Some("_OTHER"));
    assert_eq!(
        s(&rec, "rpc.method_original").as_deref(),
        Some("pkg.v1.Greeter/Say/Hello/42")
    );
}

#[test]
fn unimplemented_turns_the_method_into_other() {
    let rec = span(
        HELLO,
        "application/grpc",
        SpanKind::Server,
        Some(Code::UNIMPLEMENTED),
        Some(200),
        0,
    );
    assert_eq!(rec.name(), b"grpc");
    assert_eq!(s(&rec, "rpc.method").as_deref(), Some("_OTHER"));
    assert_eq!(
        s(&rec, "rpc.method_original").as_deref(),
        Some("pkg.v1.Greeter/SayHello")
    );
    assert_eq!(rec.status, StatusCode::Error);
    assert_eq!(s(&rec, "error.type").as_deref(), Some("UNIMPLEMENTED"));
    // Each key once.
    let keys = rec
        .attrs
        .iter()
        .filter(|a| a.key == Key::Static("rpc.method"))
        .count();
    assert_eq!(keys, 1);
}

#[test]
fn status_by_kind() {
    for (kind, code, error) in [
        (SpanKind::Server, Code::INTERNAL, true),
        (SpanKind::Server, Code::NOT_FOUND, false),
        (SpanKind::Server, Code::CANCELLED, false),
        (SpanKind::Server, Code::DEADLINE_EXCEEDED, true),
        (SpanKind::Client, Code::NOT_FOUND, true),
        (SpanKind::Client, Code::CANCELLED, true),
        (SpanKind::Client, Code::OK, false),
    ] {
        // gRPC failures come with HTTP 200; an HTTP 5xx alongside an OK status does not count.
        for http in [200, 503] {
            let rec = span(HELLO, "application/grpc", kind, Some(code), Some(http), 0);
            let want = if error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            };
            assert_eq!(rec.status, want, "{kind:?} {} {http}", code.name());
            assert_eq!(
                s(&rec, "rpc.response.status_code").as_deref(),
                Some(code.name())
            );
            assert_eq!(
                s(&rec, "error.type").as_deref(),
                error.then_some(code.name())
            );
            assert_eq!(rec.status_message, None);
        }
    }
}

#[test]
fn a_missing_status_is_inferred_like_envoy() {
    // No grpc-status: 503 is UNAVAILABLE (as Envoy's own local replies say).
    let rec = span(
        HELLO,
        "application/grpc",
        SpanKind::Server,
        None,
        Some(503),
        0,
    );
    assert_eq!(
        s(&rec, "rpc.response.status_code").as_deref(),
        Some("UNAVAILABLE")
    );
    assert_eq!(rec.status, StatusCode::Error);
    // The caller went away: CANCELLED, not the server's error.
    let dc = crate::span::mesh::flags::DOWNSTREAM_DISCONNECT;
    let rec = span(
        HELLO,
        "application/grpc",
        SpanKind::Server,
        None,
        Some(200),
        dc,
    );
    assert_eq!(
        s(&rec, "rpc.response.status_code").as_deref(),
        Some("CANCELLED")
    );
    assert_eq!(rec.status, StatusCode::Unset);
    // A 200 with no status at all is a broken reply: UNKNOWN, an error.
    let rec = span(
        HELLO,
        "application/grpc",
        SpanKind::Server,
        None,
        Some(200),
        0,
    );
    assert_eq!(
        s(&rec, "rpc.response.status_code").as_deref(),
        Some("UNKNOWN")
    );
    assert_eq!(rec.status, StatusCode::Error);
    // gRPC-Web 200 whose status went by in the body: unknown, so nothing is claimed.
    let rec = span(
        HELLO,
        "application/grpc-web+proto",
        SpanKind::Server,
        None,
        Some(200),
        0,
    );
    assert_eq!(s(&rec, "rpc.response.status_code"), None);
    assert_eq!(rec.status, StatusCode::Unset);
    assert_eq!(rec.name(), b"pkg.v1.Greeter/SayHello");
    // No response at all: the response flags explain it, as for HTTP.
    let uh = crate::span::mesh::flags::FLAGS[1].bit;
    let uh = 1u64 << uh;
    let rec = span(HELLO, "application/grpc", SpanKind::Client, None, None, uh);
    assert_eq!(s(&rec, "rpc.response.status_code"), None);
    assert_eq!(rec.status, StatusCode::Error);
}

#[test]
fn always_keep_error_judges_a_call_like_its_span() {
    let mut t = tracer_with(r#","sampling":{"ratio":0.0,"always_keep":["error"]}"#);
    let call = |code, kind| grpc::GrpcEnd {
        protocol: grpc::Protocol::Grpc,
        sent: Some(code),
        kind,
    };
    let mut keep = |end: Option<grpc::GrpcEnd>, http| t.keep_call(Some(http), 0, None, end, || 0);
    assert_eq!(
        keep(Some(call(Code::INTERNAL, SpanKind::Server)), 200),
        Some(KeepReason::Error)
    );
    assert_eq!(
        keep(Some(call(Code::NOT_FOUND, SpanKind::Server)), 200),
        None
    );
    assert_eq!(
        keep(Some(call(Code::NOT_FOUND, SpanKind::Client)), 200),
        Some(KeepReason::Error)
    );
    assert_eq!(keep(Some(call(Code::OK, SpanKind::Client)), 503), None);
    // Plain HTTP keeps its rule: 5xx.
    assert_eq!(keep(None, 503), Some(KeepReason::Error));
    assert_eq!(keep(None, 200), None);
}

proptest::proptest! {
    /// For every status, kind and HTTP code, always-keep keeps exactly the calls whose span
    /// says error.
    #[test]
    fn keep_and_span_agree(
        code in 0u8..=16,
        sent in proptest::prelude::any::<bool>(),
        client in proptest::prelude::any::<bool>(),
        http in proptest::sample::select(vec![0i64, 200, 400, 404, 429, 500, 503, 504]),
        web in proptest::prelude::any::<bool>(),
        dc in proptest::prelude::any::<bool>(),
    ) {
        let kind = if client { SpanKind::Client } else { SpanKind::Server };
        let code = sent.then(|| Code::from_u8(code).unwrap());
        let ct = if web { "application/grpc-web" } else { "application/grpc" };
        let flags = if dc { crate::span::mesh::flags::DOWNSTREAM_DISCONNECT } else { 0 };
        let http = (http > 0).then_some(http);
        let rec = span(HELLO, ct, kind, code, http, flags);
        let mut t = tracer_with(r#","sampling":{"ratio":0.0,"always_keep":["error"]}"#);
        let protocol = if web { grpc::Protocol::GrpcWeb } else { grpc::Protocol::Grpc };
        let end = grpc::GrpcEnd { protocol, sent: code, kind };
        let kept = t.keep_call(http, flags, None, Some(end), || 0).is_some();
        // With no status at all, the span falls back to the flags; keep never does.
        if rec.get("rpc.response.status_code").is_some() {
            proptest::prop_assert_eq!(kept, rec.status == StatusCode::Error);
        } else {
            proptest::prop_assert!(!kept);
        }
    }
}
