//! `tracestate`: validation, and the mutation and truncation helpers keep the grammar.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::tracecontext::{parse_tracestate, MAX_TRACESTATE_MEMBERS};

fuzz_target!(|data: &[u8]| {
    // Newlines split the input into several header fields.
    let fields: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let Some(state) = parse_tracestate(&fields) else {
        return;
    };
    let mut out = Vec::new();
    if state.write_with(b"ot", b"th:8", &mut out) {
        let back = parse_tracestate(&[&out[..]]).expect("mutated tracestate must stay valid");
        assert_eq!(back.get(b"ot"), Some(&b"th:8"[..]));
        assert!(back.len() <= MAX_TRACESTATE_MEMBERS);
    }
    out.clear();
    state.write_truncated(64, &mut out);
    assert!(out.len() <= 64);
    assert!(out.is_empty() || parse_tracestate(&[&out[..]]).is_some());
    out.clear();
    state.write_without(b"ot", &mut out);
    let back = parse_tracestate(&[&out[..]]).expect("a deletion must stay valid");
    assert_eq!(back.get(b"ot"), None);
});
