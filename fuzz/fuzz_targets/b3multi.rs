//! `X-B3-*`: five newline-separated values (an empty one is an absent header).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::b3::{parse_multi, write_multi, MultiHeaders, Single};
use meshtrace::propagation::Parsed;

fuzz_target!(|data: &[u8]| {
    let mut parts = data
        .split(|&b| b == b'\n')
        .map(|p| (!p.is_empty()).then_some(p));
    let mut next = || parts.next().flatten();
    let m = MultiHeaders {
        trace_id: next(),
        span_id: next(),
        parent_span_id: next(),
        sampled: next(),
        flags: next(),
    };
    if let Parsed::Valid(Single::Context(b)) = parse_multi(&m) {
        let mut out = Vec::new();
        let mut set = Vec::new();
        write_multi(&b, &mut out, |n, r| set.push((n, r)), |_| {});
        let get = |name: &str| {
            set.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| &out[r.clone()])
        };
        let back = MultiHeaders {
            trace_id: get("x-b3-traceid"),
            span_id: get("x-b3-spanid"),
            parent_span_id: get("x-b3-parentspanid"),
            sampled: get("x-b3-sampled"),
            flags: get("x-b3-flags"),
        };
        assert_eq!(parse_multi(&back), Parsed::Valid(Single::Context(b)));
    }
});
