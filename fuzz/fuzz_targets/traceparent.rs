//! `traceparent`: never panics; whatever parses writes back to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::tracecontext::{parse_traceparent, write_traceparent, TRACEPARENT_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(ctx) = parse_traceparent(data) {
        let mut out = [0u8; TRACEPARENT_LEN];
        write_traceparent(&ctx, &mut out);
        assert_eq!(parse_traceparent(&out), Ok(ctx));
    }
});
