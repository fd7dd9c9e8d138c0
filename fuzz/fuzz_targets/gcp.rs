//! `X-Cloud-Trace-Context`: never panics; round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::gcp::{parse, write, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(c) = parse(data) {
        let mut out = Vec::new();
        write(&c, &mut out);
        assert!(out.len() <= MAX_LEN);
        assert_eq!(parse(&out), Some(c));
    }
});
