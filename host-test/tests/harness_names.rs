//! Span names in the compiled filter: a hostile path gives a capped name that agrees with
//! `http.route`, and distinct paths past `limits.max_span_names` are named `{method}` and
//! counted in `meshtrace.span_names.overflow`.

use meshtrace_host_test::host::export::{attr, flush_one, Attr};
use meshtrace_host_test::host::{load_filter, Req};

#[test]
fn names_are_capped_agree_with_the_route_and_are_bounded() {
    let mut h = load_filter()
        .configure(
            r#"{"collector": {"cluster": "otel_collector"},
                "limits": {"max_span_name_bytes": 100, "max_span_names": 4}}"#,
        )
        .unwrap();
    // A 1 MiB path of letters, then twenty distinct user names and one already seen.
    let long = format!("/{}", "p".repeat(1 << 20));
    h.request(Req::get(&long)).unwrap();
    let users: Vec<String> = (0..20)
        .map(|i| format!("/users/u{}", "x".repeat(i)))
        .collect();
    for u in &users {
        h.request(Req::get(u)).unwrap();
    }
    h.request(Req::get(&users[0])).unwrap();
    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 22);
    let route = |i: usize| attr(&spans[i].attributes, "http.route");
    assert_eq!(spans[0].name, format!("GET {}", &long[..96]));
    assert_eq!(route(0), Some(Attr::Str(long[..96].to_string())));
    // Three more names fit the VM's set of four; the rest fall back to the method.
    for (i, u) in users.iter().enumerate() {
        let (name, r) = if i < 3 {
            (format!("GET {u}"), Some(Attr::Str(u.clone())))
        } else {
            ("GET".to_string(), None)
        };
        assert_eq!((&spans[i + 1].name, route(i + 1)), (&name, r), "{u}");
        assert_eq!(
            attr(&spans[i + 1].attributes, "url.path"),
            Some(Attr::Str(u.clone()))
        );
    }
    assert_eq!(spans[21].name, format!("GET {}", users[0]));
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.span_names.overflow"), Some(17));
    assert_eq!(h.metric("meshtrace.spans_sampled"), Some(22));
}
