//! Single `b3` header: never panics; a parsed context writes back to the same context.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::b3::{parse_single, write_single, Single, MAX_SINGLE_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(Single::Context(b)) = parse_single(data) {
        let mut out = Vec::new();
        write_single(&b, &mut out);
        assert!(out.len() <= MAX_SINGLE_LEN);
        let Some(Single::Context(back)) = parse_single(&out) else {
            panic!("written b3 does not parse: {out:?}");
        };
        assert_eq!(back.trace_id, b.trace_id);
        assert_eq!(back.span_id, b.span_id);
        assert_eq!(back.sampling, b.sampling);
    }
});
