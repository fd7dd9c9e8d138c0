//! Criterion benchmarks of every propagation parser, plus extraction and translation end to end.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use meshtrace::headers::RequestHeaders;
use meshtrace::propagation::b3::{parse_multi, parse_single, MultiHeaders};
use meshtrace::propagation::baggage::Baggage;
use meshtrace::propagation::inject::Injection;
use meshtrace::propagation::tracecontext::{parse_traceparent, parse_tracestate};
use meshtrace::propagation::{gcp, grpc_trace_bin, l5d, xray};
use meshtrace::tracer::Tracer;

fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    g.bench_function("traceparent", |b| {
        b.iter(|| parse_traceparent(black_box(tp)))
    });
    let ts: [&[u8]; 1] =
        [b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,ot=th:fd70a4;rv:7479cfb506891d"];
    g.bench_function("tracestate", |b| {
        b.iter(|| parse_tracestate(black_box(&ts)))
    });
    let bg: [&[u8]; 1] =
        [b"userId=Am%C3%A9lie,serverNode=DF%2028,isProduction=false,tenant=acme;ttl=60"];
    g.bench_function("baggage", |b| b.iter(|| Baggage::parse(black_box(&bg))));
    let single = b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90";
    g.bench_function("b3", |b| b.iter(|| parse_single(black_box(single))));
    let multi = MultiHeaders {
        trace_id: Some(b"463ac35c9f6413ad48485a3953bb6124"),
        span_id: Some(b"0020000000000001"),
        parent_span_id: Some(b"0010000000000001"),
        sampled: Some(b"1"),
        flags: None,
    };
    g.bench_function("b3multi", |b| b.iter(|| parse_multi(black_box(&multi))));
    let l5d_ctx = b"vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=";
    g.bench_function("l5d", |b| b.iter(|| l5d::parse(black_box(l5d_ctx))));
    let amzn = b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Self=1-67891234-12456789abcdef012345678";
    g.bench_function("xray", |b| b.iter(|| xray::parse(black_box(amzn))));
    let cloud = b"105445aa7843bc8bf206b12000100000/6052349294683813831;o=1";
    g.bench_function("gcp", |b| b.iter(|| gcp::parse(black_box(cloud))));
    let bin = b"AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=";
    g.bench_function("grpc-trace-bin", |b| {
        b.iter(|| grpc_trace_bin::parse(black_box(bin)))
    });
    g.finish();
}

/// A B3 request translated to W3C + B3 + baggage, warm buffers: the per-request cost.
fn translate(c: &mut Criterion) {
    let config = meshtrace::config::load(br#"{"collector":{"cluster":"c"}}"#).unwrap();
    let mut tracer = Tracer::new(config, 1);
    let pairs: [(&[u8], &[u8]); 3] = [
        (
            b"b3",
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        ),
        (
            b"x-amzn-trace-id",
            b"Root=1-5759e988-bd862e3fe1be46a994272793",
        ),
        (b"baggage", b"tenant=acme,userId=Am%C3%A9lie"),
    ];
    let mut inj = Injection::default();
    c.bench_function("extract+inject b3 request", |b| {
        b.iter(|| {
            let h = RequestHeaders::from_pairs(black_box(pairs));
            let d = tracer.extract(&h);
            tracer.inject(&d, &h, &mut inj);
            black_box(inj.headers().count())
        })
    });
}

criterion_group!(benches, parsers, translate);
criterion_main!(benches);
