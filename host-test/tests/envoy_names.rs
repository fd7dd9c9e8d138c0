//! Span names in real Envoy: a 2,000-byte path gives a name and an `http.route` cut alike,
//! distinct paths past `limits.max_span_names` fall back to `{method}` and are counted in
//! `/stats`, configured routes always keep their name, and `span_name: strict` names spans
//! `{method}` unless a route is configured.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use meshtrace_host_test::envoy::Stack;

const WAIT: Duration = Duration::from_secs(10);

fn stack(config: &str) -> Stack {
    Stack::start("per-worker.yaml", config, "INBOUND").expect("start Envoy stack")
}

use support::str_attr_opt as str_attr;

/// Sends each `(method, path)` and returns, by `url.path`, the exported span's name and
/// `http.route` (in request order for repeated paths).
fn names(s: &Stack, requests: &[(&str, &str)]) -> BTreeMap<String, Vec<(String, Option<String>)>> {
    for (method, path) in requests {
        let r = s.envoy.request(method, path, &[]).unwrap();
        assert_eq!(r.status, 200, "{method} {path}");
    }
    let spans = s.sink.wait_spans(requests.len(), WAIT);
    assert_eq!(spans.len(), requests.len());
    let mut out: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for sp in &spans {
        let path = str_attr(sp, "url.path").expect("url.path");
        out.entry(path)
            .or_default()
            .push((sp.name.clone(), str_attr(sp, "http.route")));
    }
    out
}

fn one(name: &str, route: Option<&str>) -> Vec<(String, Option<String>)> {
    vec![(name.to_string(), route.map(str::to_string))]
}

#[test]
fn names_are_capped_and_bounded_per_vm() {
    let s = stack(
        r#"{"collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":100},
            "routes":["/api/users/{id}"],"limits":{"max_span_names":3}}"#,
    );
    // 2,000 letters, not all hex digits: no identifier, so the templater keeps the segment.
    let long = format!("/{}", &"abcdefghijklmnopqrstuvwxyz".repeat(77)[..2000]);
    let got = names(
        &s,
        &[
            ("GET", &long),
            ("GET", "/users/alice"),
            ("GET", "/users/bob"),
            // The VM holds 3 names now: new ones fall back to `{method}`.
            ("GET", "/users/carol"),
            ("POST", "/users/dave"),
            ("GET", "/orders/42"),
            // Names already handed out keep being used, and configured routes always are.
            ("GET", "/users/bob"),
            ("GET", "/api/users/zed"),
        ],
    );
    let cut = &long[..252];
    let mut want = BTreeMap::new();
    // `url.path` is cut at the attribute cap (256 bytes); name and route at 256 together.
    want.insert(
        long[..256].to_string(),
        one(&format!("GET {cut}"), Some(cut)),
    );
    want.insert(
        "/users/alice".into(),
        one("GET /users/alice", Some("/users/alice")),
    );
    want.insert(
        "/users/bob".into(),
        [
            one("GET /users/bob", Some("/users/bob")),
            one("GET /users/bob", Some("/users/bob")),
        ]
        .concat(),
    );
    want.insert("/users/carol".into(), one("GET", None));
    want.insert("/users/dave".into(), one("POST", None));
    want.insert("/orders/42".into(), one("GET", None));
    want.insert(
        "/api/users/zed".into(),
        one("GET /api/users/{id}", Some("/api/users/{id}")),
    );
    assert_eq!(got, want);
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 8);
    assert_eq!(
        s.envoy.wait_stat("meshtrace.span_names.overflow", 3, WAIT),
        3
    );
    assert_eq!(s.envoy.wait_stat("meshtrace.spans_sampled", 8, WAIT), 8);
    // Nothing else comes: the counter stays exact.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(s.envoy.stat("meshtrace.span_names.overflow"), 3);
}

#[test]
fn strict_names_are_the_method_unless_a_route_is_configured() {
    let s = stack(
        r#"{"collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":100},
            "routes":["/api/users/{id}"],"span_name":"strict"}"#,
    );
    let got = names(
        &s,
        &[
            ("GET", "/users/alice"),
            ("DELETE", "/orders/42"),
            ("GET", "/api/users/alice"),
        ],
    );
    let mut want = BTreeMap::new();
    want.insert("/users/alice".into(), one("GET", None));
    want.insert("/orders/42".into(), one("DELETE", None));
    want.insert(
        "/api/users/alice".into(),
        one("GET /api/users/{id}", Some("/api/users/{id}")),
    );
    assert_eq!(got, want);
    assert_eq!(s.envoy.wait_stat("meshtrace.spans_sampled", 3, WAIT), 3);
    assert_eq!(s.envoy.stat("meshtrace.span_names.overflow"), 0);
}
