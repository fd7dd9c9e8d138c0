//! `X-Amzn-Trace-Id`: a parsed header writes back to the same context and extra fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::xray::{parse, write};

fuzz_target!(|data: &[u8]| {
    if let Some(x) = parse(data) {
        let mut out = Vec::new();
        write(
            &x.trace_id,
            x.parent.as_ref(),
            x.sampling,
            x.extra_fields(),
            &mut out,
        );
        let back = parse(&out).expect("written X-Ray header must parse");
        assert_eq!(
            (back.trace_id, back.parent, back.sampling),
            (x.trace_id, x.parent, x.sampling)
        );
        assert!(back.extra_fields().eq(x.extra_fields()));
    }
});
