//! Hostile input never traps the guest: random and adversarial header maps and properties.

use meshtrace_host_test::host::{load_filter, HeaderMap, Host, Req};
use proptest::prelude::*;

fn host() -> Host {
    load_filter()
        .configure(r#"{"collector": {"cluster": "otel_collector"}, "batch": {"max_queue": 64, "max_batch": 16, "flush_interval_ms": 1000}}"#)
        .unwrap()
}

/// The request went through untouched but for a well-formed traceparent.
fn assert_traced(h: &mut Host, req: Req) {
    let ex = h.request(req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ex.local_response, None);
    let tp = ex
        .upstream_header("traceparent")
        .expect("a traceparent upstream");
    assert_eq!(tp.len(), 55, "{tp}");
    assert_eq!(ex.upstream.unwrap().headers.get_all("traceparent").len(), 1);
}

/// Drains exports so the run also exercises the export path with whatever was recorded.
fn drain(h: &mut Host) {
    h.advance(1000).unwrap();
    for c in h.pending_http_calls() {
        h.answer(c.token, 200, b"").unwrap();
    }
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"traceparent".to_vec()),
        Just(b"tracestate".to_vec()),
        Just(b"TraceParent".to_vec()),
        Just(b":path".to_vec()),
        Just(b":method".to_vec()),
        Just(b":authority".to_vec()),
        Just(b"x-forwarded-for".to_vec()),
        Just(b"user-agent".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..80),
        1 => Just(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
        1 => Just(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\0".to_vec()),
        1 => Just(b"00-0af7651916cd43dd\xff448eb211c80319c-b7ad6b7169203331-01".to_vec()),
        1 => (0usize..70_000).prop_map(|n| vec![b'a'; n]),
        1 => Just("\u{0}\u{feff}ü€😀,,,=;".as_bytes().to_vec()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    prop_oneof![
        6 => proptest::collection::vec((name(), value()), 0..40),
        1 => proptest::collection::vec((name(), value()), 1000..3000),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_header_maps_never_trap(
        maps in proptest::collection::vec(headers(), 1..4),
        code in proptest::option::of(any::<i64>()),
        direction in any::<i64>(),
        protocol in proptest::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut h = host();
        for pairs in maps {
            let mut req = Req::raw(HeaderMap::from_pairs(&pairs))
                .property("xds.listener_direction", direction)
                .property("request.protocol", protocol.clone());
            if let Some(c) = code {
                req = req.property("response.code", c);
            }
            assert_traced(&mut h, req);
        }
        drain(&mut h);
    }
}

#[test]
fn adversarial_maps() {
    let mut h = host();
    // Thousands of headers, all named traceparent with garbage.
    let many: Vec<(String, String)> = (0..5000)
        .map(|i| ("traceparent".to_string(), format!("00-{i}")))
        .collect();
    assert_traced(&mut h, Req::raw(HeaderMap::from_pairs(&many)));
    // Ten thousand distinct headers.
    let distinct: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("x-h{i}"), "v".repeat(i % 50)))
        .collect();
    assert_traced(&mut h, Req::raw(HeaderMap::from_pairs(&distinct)));
    // A 1 MiB path and a 1 MiB tracestate.
    assert_traced(
        &mut h,
        Req::get(&format!("/{}", "p".repeat(1 << 20)))
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("tracestate", "k=v,".repeat(1 << 18)),
    );
    // NULs and invalid UTF-8 in names and values, an empty name, an empty map.
    assert_traced(
        &mut h,
        Req::raw(HeaderMap::from_pairs(&[
            (&b"\0"[..], &b"\0\0"[..]),
            (b"", b"\xff\xfe"),
            (b":method", b"\xc3\x28"),
            (b":path", b"\0/\xff?\0"),
            (b":authority", b":::::"),
            (b"x-forwarded-for", b",,,\xff"),
        ])),
    );
    assert_traced(&mut h, Req::raw(HeaderMap::new()));
    // Properties of the wrong shape: a short response.code, a string direction.
    assert_traced(
        &mut h,
        Req::get("/")
            .property("response.code", &b"\x01"[..])
            .property("xds.listener_direction", "outbound")
            .property("source.address", &b"\xff:\xff"[..]),
    );
    drain(&mut h);
    assert_eq!(h.metric("meshtrace.spans_started"), Some(6));
}
