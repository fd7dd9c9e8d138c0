//! `grpc-trace-bin` as base64 text and as raw binary: round trip with the padding kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::grpc_trace_bin::{parse, parse_binary, write, write_binary};

fuzz_target!(|data: &[u8]| {
    if let Some((c, padded)) = parse(data) {
        let mut out = Vec::new();
        write(&c, padded, &mut out);
        assert_eq!(parse(&out), Some((c, padded)));
    }
    if let Some(c) = parse_binary(data) {
        assert_eq!(parse_binary(&write_binary(&c)), Some(c));
    }
});
