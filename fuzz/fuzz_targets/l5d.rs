//! Linkerd 1 `l5d-ctx-trace` (as text and as raw binary) and `l5d-sample`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::l5d::{parse, parse_binary, parse_sample_rate, write};

fuzz_target!(|data: &[u8]| {
    for t in [parse(data), parse_binary(data)].into_iter().flatten() {
        let mut out = Vec::new();
        write(&t, &mut out);
        assert_eq!(parse(&out), Some(t));
    }
    if let Some(rate) = parse_sample_rate(data) {
        assert!((0.0..=1.0).contains(&rate));
    }
});
