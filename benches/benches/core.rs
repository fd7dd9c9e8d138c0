//! Criterion benchmarks of the core hot path.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use meshtrace::ids::{SpanId, TraceId};
use meshtrace::otlp::{encode_span, BatchHeader, ResourceValue};
use meshtrace::propagation::tracecontext::parse_traceparent;
use meshtrace::span::{SpanKind, SpanRecord};

fn traceparent(c: &mut Criterion) {
    let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    c.bench_function("traceparent parse+validate", |b| {
        b.iter(|| parse_traceparent(black_box(tp)))
    });
}

/// A typical mesh span: a name and 14 attributes.
fn typical_span() -> SpanRecord {
    let mut s = SpanRecord::default();
    s.trace_id = TraceId([7; 16]);
    s.span_id = SpanId([8; 8]);
    s.parent_span_id = Some(SpanId([9; 8]));
    s.kind = SpanKind::Server;
    s.start_ns = 1_700_000_000_000_000_000;
    s.end_ns = 1_700_000_000_001_000_000;
    s.set_name(&[b"GET /api/users/{id}"]);
    s.str("http.request.method", b"GET");
    s.str("url.path", b"/api/users/42");
    s.str("url.scheme", b"http");
    s.str("server.address", b"reviews.default.svc.cluster.local");
    s.int("server.port", 9080);
    s.str("network.protocol.version", b"1.1");
    s.str("user_agent.original", b"Mozilla/5.0 (X11; Linux x86_64)");
    s.str("client.address", b"10.0.0.7");
    s.int("http.response.status_code", 200);
    s.str("http.route", b"/api/users/{id}");
    s.str(
        "mesh.upstream.cluster",
        b"outbound|9080|v2|reviews.default.svc.cluster.local",
    );
    s.str("mesh.upstream.subset", b"v2");
    s.bool("mesh.canary", true);
    s.str("mesh.release", b"canary");
    s
}

fn encode(c: &mut Criterion) {
    let span = typical_span();
    let header = BatchHeader::new(&[("service.name", ResourceValue::Str("checkout".into()))]);
    let mut spans = Vec::with_capacity(1 << 16);
    let mut out = Vec::with_capacity(1 << 16);
    c.bench_function("encode one span into a batch", |b| {
        b.iter(|| {
            spans.clear();
            encode_span(black_box(&span), &mut spans);
            header.encode_request(&spans, &mut out);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, traceparent, encode);
criterion_main!(benches);
