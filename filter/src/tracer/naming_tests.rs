//! Span names through the whole request path: the name and `http.route` agree, every string
//! the span carries is capped, and a VM hands out a bounded number of names.

use super::*;
use crate::span::Value;
#[allow(unused_imports)]
use crate::{
    ids::{SpanId, TraceId},
    propagation::{baggage, Propagator, SamplingState},
    span::{mesh, Key, SpanKind, StatusCode},
};
use proptest::prelude::*;

fn tracer(extra: &str) -> Tracer {
    crate::test_support::tracer(extra, 5)
}

/// One recorded request through every step, finished as `kind` with HTTP 200.
fn span(t: &mut Tracer, req: &[(&str, &str)], kind: SpanKind) -> SpanRecord {
    let req: Vec<(&[u8], &[u8])> = req
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    answered(t, &req, kind, 200, None)
}

/// One recorded request of raw header bytes, answered with `status` (and a `grpc-status`).
fn answered(
    t: &mut Tracer,
    req: &[(&[u8], &[u8])],
    kind: SpanKind,
    status: i64,
    grpc_status: Option<&[u8]>,
) -> SpanRecord {
    let h = RequestHeaders::from_pairs(req.iter().copied());
    let mut d = t.extract(&h);
    t.sample(&mut d, || 1_000);
    let mut rec = SpanRecord::default();
    t.begin_span(&d, &h, 1_000, &mut rec);
    let request = t.record_request(&h, req.iter().copied(), &mut rec);
    t.finish_span(
        &mut rec,
        &Finish {
            end_ns: 2_000,
            status_code: Some(status),
            kind,
            request: &request,
            grpc_status: grpc_status.map(grpc::Code::parse),
            ..Default::default()
        },
    );
    rec
}

fn get(t: &mut Tracer, method: &str, path: &str) -> SpanRecord {
    span(t, &[(":method", method), (":path", path)], SpanKind::Server)
}

fn name(rec: &SpanRecord) -> String {
    String::from_utf8(rec.name().to_vec()).unwrap()
}

fn text(rec: &SpanRecord, k: &str) -> Option<String> {
    match rec.get(k) {
        Some(Value::Str(r)) => Some(String::from_utf8(rec.text(r).to_vec()).unwrap()),
        _ => None,
    }
}

#[test]
fn a_two_thousand_byte_segment_is_cut_alike_in_the_name_and_the_route() {
    let mut t = tracer("");
    let path = format!("/{}", "x".repeat(2000));
    let rec = get(&mut t, "GET", &path);
    assert_eq!(name(&rec), format!("GET {}", &path[..252]));
    assert_eq!(text(&rec, "http.route"), Some(path[..252].to_string()));
    // `url.path` is an attribute: cut by the attribute cap.
    assert_eq!(text(&rec, "url.path"), Some(path[..256].to_string()));
    // Configured caps: a 64-byte name, the route in it shared with `url.template`.
    let mut t = tracer(r#","limits":{"max_span_name_bytes":64}"#);
    let rec = span(&mut t, &[(":path", path.as_str())], SpanKind::Client);
    assert_eq!(name(&rec), format!("GET {}", &path[..60]));
    assert_eq!(text(&rec, "url.template"), Some(path[..60].to_string()));
    assert_eq!(rec.get("http.route"), None);
}

#[test]
fn ten_thousand_distinct_user_paths_give_at_most_the_limit_of_names() {
    let mut t = tracer("");
    let mut names = std::collections::HashSet::new();
    for i in 0..10_000u32 {
        let user: String = (0..4)
            .map(|k| (b'a' + (i / 26u32.pow(k) % 26) as u8) as char)
            .collect();
        let rec = get(&mut t, "GET", &format!("/users/{user}"));
        let n = name(&rec);
        match text(&rec, "http.route") {
            Some(r) => assert_eq!(n, format!("GET {r}")),
            None => assert_eq!(n, "GET"),
        }
        assert_eq!(text(&rec, "url.path"), Some(format!("/users/{user}")));
        names.insert(n);
    }
    assert_eq!(names.len(), 1000 + 1, "1,000 names and the `GET` fallback");
    assert!(names.contains("GET /users/aaaa") && names.contains("GET"));
    assert_eq!(t.names.overflow(), 9000);
    assert_eq!(t.names.distinct(), 1000);
    // Identifiers are still templated into names already handed out; configured routes are
    // never refused.
    let mut t = tracer(r#","routes":["/api/orders/{order}"],"limits":{"max_span_names":2}"#);
    for p in ["/a", "/b", "/c", "/users/1", "/users/2"] {
        get(&mut t, "GET", p);
    }
    assert_eq!(name(&get(&mut t, "GET", "/a")), "GET /a");
    assert_eq!(name(&get(&mut t, "GET", "/users/3")), "GET");
    assert_eq!(
        name(&get(&mut t, "PUT", "/api/orders/77")),
        "PUT /api/orders/{order}"
    );
    assert_eq!(t.names.overflow(), 4);
}

#[test]
fn strict_names_are_the_method_unless_a_route_is_configured() {
    let mut t = tracer(r#","span_name":"strict","routes":["/api/users/{id}"]"#);
    let rec = get(&mut t, "GET", "/api/users/alice");
    assert_eq!(name(&rec), "GET /api/users/{id}");
    assert_eq!(text(&rec, "http.route").as_deref(), Some("/api/users/{id}"));
    let rec = get(&mut t, "POST", "/orders/42");
    assert_eq!(name(&rec), "POST");
    assert_eq!(rec.get("http.route"), None);
    assert_eq!(text(&rec, "url.path").as_deref(), Some("/orders/42"));
    let rec = get(&mut t, "BREW", "/pot");
    assert_eq!(name(&rec), "HTTP");
    assert_eq!(text(&rec, "http.request.method").as_deref(), Some("_OTHER"));
    assert_eq!(
        text(&rec, "http.request.method_original").as_deref(),
        Some("BREW")
    );
    assert_eq!(t.names.overflow(), 0);
}

#[test]
fn unknown_methods_never_reach_the_name() {
    let mut t = tracer(r#","span_name":"legacy""#);
    let long = "M".repeat(500);
    let rec = get(&mut t, &long, "/x");
    assert_eq!(name(&rec), "HTTP _OTHER /x");
    assert_eq!(
        text(&rec, "http.request.method_original"),
        Some("M".repeat(256))
    );
    let mut t = tracer("");
    // Methods are case-sensitive: `get` is not `GET`.
    assert_eq!(name(&get(&mut t, "get", "/x")), "HTTP /x");
}

#[test]
fn a_long_trace_state_is_recorded_up_to_whole_members() {
    let mut t = tracer("");
    let members: Vec<String> = (0..32)
        .map(|i| format!("k{i:02}={}", "v".repeat(100)))
        .collect();
    let ts = members.join(",");
    let req = [
        (":path", "/x"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", ts.as_str()),
    ];
    let rec = span(&mut t, &req, SpanKind::Server);
    // 104 bytes a member: four fit in 512.
    assert_eq!(rec.trace_state(), members[..4].join(",").as_bytes());
}

#[test]
fn resource_values_are_capped() {
    let config = crate::config::load(
        format!(
            r#"{{"collector":{{"cluster":"c"}},"service_name":"{}","resource":{{"team":"é{}"}},
               "limits":{{"max_attribute_value_bytes":16}}}}"#,
            "s".repeat(40),
            "t".repeat(40)
        )
        .as_bytes(),
    )
    .unwrap();
    let t = Tracer::new(config, 1);
    let value = |k: &str| crate::test_support::resource_attr(&t, k);
    assert_eq!(value("service.name"), Some("s".repeat(16)));
    assert_eq!(value("team"), Some(format!("é{}", "t".repeat(14))));
}

proptest! {
    /// Any path bytes (valid UTF-8 or not), any caps, any style and any answer: the finished
    /// span's name is exactly `{method} {http.route}`, or the method's name alone.
    #[test]
    fn any_path_gives_a_capped_name_that_agrees_with_http_route(
        path in proptest::collection::vec(
            prop_oneof![
                4 => proptest::sample::select(&b"/abz09-"[..]),
                1 => any::<u8>(),
                1 => Just(0xffu8),
                1 => proptest::sample::select(&[0xc3u8, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f][..]),
            ],
            0..600,
        ),
        method in proptest::sample::select(vec!["GET", "POST", "OPTIONS", "BREW", "get"]),
        max_name in 16u32..400,
        max_value in 16u32..400,
        style in proptest::sample::select(vec!["semconv", "legacy", "strict"]),
        status in proptest::sample::select(vec![200i64, 404, 500]),
    ) {
        let mut t = tracer(&format!(
            r#","span_name":"{style}","routes":["/api/{{x}}"],
               "limits":{{"max_span_name_bytes":{max_name},"max_attribute_value_bytes":{max_value},"max_span_names":3}}"#
        ));
        let mut full = b"/".to_vec();
        full.extend_from_slice(&path);
        let req: [(&[u8], &[u8]); 2] = [(b":method", method.as_bytes()), (b":path", &full)];
        let rec = answered(&mut t, &req, SpanKind::Server, status, None);
        let n = rec.name();
        prop_assert!(n.len() <= max_name as usize);
        prop_assert!(core::str::from_utf8(n).is_ok());
        let token = match (style, method) {
            ("legacy", "BREW" | "get") => "HTTP _OTHER".to_string(),
            ("legacy", m) => format!("HTTP {m}"),
            (_, "BREW" | "get") => "HTTP".to_string(),
            (_, m) => m.to_string(),
        };
        match text(&rec, "http.route") {
            Some(r) => {
                prop_assert!(r.len() <= max_value as usize);
                let want = format!("{token} {r}");
                prop_assert_eq!(n, want.as_bytes());
            }
            None => prop_assert_eq!(n, token.as_bytes()),
        }
    }
}

#[test]
fn a_path_of_invalid_bytes_gives_a_name_that_agrees_with_http_route() {
    let mut t = tracer("");
    let mut path = b"/".to_vec();
    path.extend([0xff; 300]);
    let rec = answered(
        &mut t,
        &[(b":method", b"GET"), (b":path", &path)],
        SpanKind::Server,
        200,
        None,
    );
    let route = format!("/{}", "\u{FFFD}".repeat(83));
    assert_eq!(name(&rec), format!("GET {route}"));
    assert_eq!(rec.name().len(), 254);
    assert_eq!(text(&rec, "http.route"), Some(route));
    // Paths that render alike are one name: one place in the set.
    let mut t = tracer(r#","limits":{"max_span_names":1}"#);
    for p in [&b"/x\xff"[..], b"/x\xfe", b"/x\xfd"] {
        let rec = answered(
            &mut t,
            &[(b":method", b"GET"), (b":path", p)],
            SpanKind::Server,
            200,
            None,
        );
        assert_eq!(name(&rec), "GET /x\u{FFFD}");
        assert_eq!(text(&rec, "http.route").as_deref(), Some("/x\u{FFFD}"));
    }
    assert_eq!((t.names.distinct(), t.names.overflow()), (1, 0));
}

/// A gRPC call to `path`, answered with `grpc-status`.
fn grpc_answered(t: &mut Tracer, path: &str, grpc_status: &str) -> SpanRecord {
    answered(
        t,
        &[
            (b":method", b"POST"),
            (b":path", path.as_bytes()),
            (b"content-type", b"application/grpc"),
        ],
        SpanKind::Server,
        200,
        Some(grpc_status.as_bytes()),
    )
}

#[test]
fn methods_answered_unimplemented_and_routes_answered_404_take_no_name() {
    let mut t = tracer(r#","limits":{"max_span_names":3}"#);
    for i in 0..5 {
        let path = format!("/scan.S/M{i}");
        let rec = grpc_answered(&mut t, &path, "12");
        assert_eq!(name(&rec), "grpc");
        assert_eq!(text(&rec, "rpc.method").as_deref(), Some("_OTHER"));
        assert_eq!(
            text(&rec, "rpc.method_original"),
            Some(path[1..].to_string())
        );
    }
    let rec = grpc_answered(&mut t, "/pkg.v1.Greeter/SayHello", "0");
    assert_eq!(name(&rec), "pkg.v1.Greeter/SayHello");
    assert_eq!(
        text(&rec, "rpc.method").as_deref(),
        Some("pkg.v1.Greeter/SayHello")
    );
    assert_eq!(rec.get("rpc.method_original"), None);
    let rec = get(&mut t, "GET", "/users/alice");
    assert_eq!(name(&rec), "GET /users/alice");
    assert_eq!(text(&rec, "http.route").as_deref(), Some("/users/alice"));
    assert_eq!((t.names.distinct(), t.names.overflow()), (2, 0));

    // The HTTP scanner: guessed routes answered 404 (or 405, 501) leave the set alone.
    let mut t = tracer(r#","limits":{"max_span_names":3}"#);
    for (i, status) in [404, 404, 405, 501, 404].into_iter().enumerate() {
        let path = format!("/admin{i}.php");
        let rec = answered(
            &mut t,
            &[(b":method", b"GET"), (b":path", path.as_bytes())],
            SpanKind::Server,
            status,
            None,
        );
        assert_eq!(name(&rec), "GET");
        assert_eq!(rec.get("http.route"), None);
        assert_eq!(text(&rec, "url.path"), Some(path));
    }
    let rec = get(&mut t, "GET", "/users/alice");
    assert_eq!(name(&rec), "GET /users/alice");
    assert_eq!(text(&rec, "http.route").as_deref(), Some("/users/alice"));
    assert_eq!((t.names.distinct(), t.names.overflow()), (1, 0));
    // A configured route names a 404 all the same: the configuration bounds it.
    let mut t = tracer(r#","routes":["/api/{x}"]"#);
    let rec = answered(
        &mut t,
        &[(b":method", b"GET"), (b":path", b"/api/nope")],
        SpanKind::Server,
        404,
        None,
    );
    assert_eq!(name(&rec), "GET /api/{x}");
    assert_eq!(text(&rec, "http.route").as_deref(), Some("/api/{x}"));
    assert_eq!(t.names.distinct(), 0);
}

#[test]
fn a_request_envoy_failed_itself_takes_no_name() {
    let mut t = tracer("");
    let req: [(&[u8], &[u8]); 2] = [(b":method", b"GET"), (b":path", b"/users/alice")];
    let h = RequestHeaders::from_pairs(req.iter().copied());
    let mut d = t.extract(&h);
    t.sample(&mut d, || 1_000);
    let mut rec = SpanRecord::default();
    t.begin_span(&d, &h, 1_000, &mut rec);
    let request = t.record_request(&h, req.iter().copied(), &mut rec);
    // No healthy upstream: Envoy's own 503 says nothing about the route.
    t.finish_span(
        &mut rec,
        &Finish {
            status_code: Some(503),
            kind: SpanKind::Server,
            request: &request,
            mesh: crate::span::mesh::EndFacts {
                response_flags: 0x2,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    assert_eq!(name(&rec), "GET");
    assert_eq!(rec.get("http.route"), None);
    assert_eq!((t.names.distinct(), t.names.overflow()), (0, 0));
}

#[test]
fn a_grpc_method_longer_than_a_cap_is_other() {
    let mut t = tracer(r#","limits":{"max_span_name_bytes":16,"max_attribute_value_bytes":16}"#);
    for (path, original) in [
        ("/pkg.v1.Greeter/SayHello", "pkg.v1.Greeter/S"),
        ("/pkg.v1.Greeter/SayGoodbye", "pkg.v1.Greeter/S"),
    ] {
        let rec = grpc_answered(&mut t, path, "0");
        assert_eq!(name(&rec), "grpc");
        assert_eq!(text(&rec, "rpc.method").as_deref(), Some("_OTHER"));
        assert_eq!(text(&rec, "rpc.method_original").as_deref(), Some(original));
    }
    // Exactly at the cap, a method names the span.
    let rec = grpc_answered(&mut t, "/pkg.v1.G/SayHel", "0");
    assert_eq!(name(&rec), "pkg.v1.G/SayHel");
    assert_eq!(text(&rec, "rpc.method").as_deref(), Some("pkg.v1.G/SayHel"));
    assert_eq!(t.names.overflow(), 0);
}

/// A gRPC call to `path`: named by its method when the per-VM set admits it.
fn grpc_call(t: &mut Tracer, path: &str) -> SpanRecord {
    span(
        t,
        &[
            (":method", "POST"),
            (":path", path),
            ("content-type", "application/grpc"),
        ],
        SpanKind::Server,
    )
}

#[test]
fn grpc_methods_share_the_bound_on_distinct_names() {
    let mut t = tracer(r#","limits":{"max_span_names":2}"#);
    let names: Vec<(String, Option<String>, Option<String>)> =
        ["/pkg.A/One", "/pkg.A/Two", "/pkg.A/Three", "/pkg.A/One"]
            .iter()
            .map(|p| {
                let rec = grpc_call(&mut t, p);
                (
                    name(&rec),
                    text(&rec, "rpc.method"),
                    text(&rec, "rpc.method_original"),
                )
            })
            .collect();
    let known = |m: &str| (m.to_string(), Some(m.to_string()), None);
    assert_eq!(
        names,
        [
            known("pkg.A/One"),
            known("pkg.A/Two"),
            (
                "grpc".to_string(),
                Some("_OTHER".to_string()),
                Some("pkg.A/Three".to_string())
            ),
            known("pkg.A/One"),
        ]
    );
    assert_eq!(t.names.overflow(), 1);
}

#[test]
fn strict_names_make_every_grpc_method_other() {
    let mut t = tracer(r#","span_name":"strict""#);
    let rec = grpc_call(&mut t, "/pkg.v1.Greeter/SayHello");
    assert_eq!(name(&rec), "grpc");
    assert_eq!(text(&rec, "rpc.method").as_deref(), Some("_OTHER"));
    assert_eq!(
        text(&rec, "rpc.method_original").as_deref(),
        Some("pkg.v1.Greeter/SayHello")
    );
    assert_eq!(t.names.overflow(), 0, "strict naming is not overflow");
}
