//! The whole request path on arbitrary header pairs: extraction over every format, the
//! decision and the injection never panic, and what is injected parses back to our context.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshtrace::config::{self, Compiled};
use meshtrace::headers::RequestHeaders;
use meshtrace::propagation::tracecontext::parse_traceparent;
use meshtrace::span::SpanRecord;
use meshtrace::propagation::inject::Injection;
use meshtrace::tracer::Tracer;

const NAMES: [&str; 16] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "l5d-ctx-trace",
    "l5d-reqid",
    "l5d-sample",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    ":path",
];

fn config() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        config::load(
            br#"{"collector":{"cluster":"c"},
                "propagators":{"inject":["tracecontext","baggage","b3","b3multi","l5d","xray","gcp","grpc-trace-bin"],
                               "trust_l5d_sample":true},
                "baggage":{"attribute_keys":["k"]}}"#,
        )
        .expect("valid fuzz configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    // Each line is one header: its first byte picks the name, the rest is the value.
    let pairs: Vec<(&[u8], &[u8])> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let (first, value) = line.split_first()?;
            Some((NAMES[*first as usize % NAMES.len()].as_bytes(), value))
        })
        .collect();
    let h = RequestHeaders::from_pairs(pairs.iter().copied());
    let mut t = Tracer::new(config().clone(), 1);
    let d = t.extract(&h);
    let mut inj = Injection::default();
    t.inject(&d, &h, &mut inj);
    let tp = inj
        .get("traceparent")
        .expect("tracecontext is always injected");
    let ctx = parse_traceparent(tp).expect("injected traceparent must be valid");
    assert_eq!((ctx.trace_id, ctx.span_id), (d.trace_id, d.span_id));
    let mut rec = SpanRecord::default();
    t.begin_span(&d, &h, 1, &mut rec);
});
