//! Criterion benchmarks of the per-request core work with the mesh features on: what an
//! unsampled request costs (the 99% at production ratios), and a sampled one end to end.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use meshtrace::export::otlp::encode_span;
use meshtrace::headers::RequestHeaders;
use meshtrace::propagation::inject::Injection;
use meshtrace::span::mesh::identity::TlsFacts;
use meshtrace::span::mesh::EndFacts;
use meshtrace::span::Finish;
use meshtrace::span::{SpanKind, SpanRecord};
use meshtrace::tracer::Tracer;

const CONFIG: &str = r#"{
  "collector": {"cluster": "otel"},
  "sampling": {"ratio": 0.01, "max_per_second": 1000000},
  "traffic": {
    "rules": [
      {"match": "subset", "value": "v2", "release": "canary", "canary": true},
      {"match": "header", "name": "x-ab-group", "value": "b", "ab_group": "B"}
    ],
    "weights": {"v1": 90, "v2": 10}
  },
  "capture": {"request_headers": ["x-tenant", "authorization"]}
}"#;

const HEADERS: [(&[u8], &[u8]); 9] = [
    (b":method", b"GET"),
    (b":path", b"/api/users/12345/orders?page=2"),
    (b":authority", b"reviews.default.svc.cluster.local:9080"),
    (b":scheme", b"http"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
    (b"x-request-id", b"0f8c7a3e-9c1b-4a8e-b7a2-1d2e3f405162"),
    (b"x-ab-group", b"b"),
    (b"authorization", b"Bearer abc.def.ghi"),
    (
        b"traceparent",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
];

fn tracer(ratio_json: &str) -> Tracer {
    let json = CONFIG.replace("\"ratio\": 0.01", ratio_json);
    Tracer::new(
        meshtrace::config::load(json.as_bytes()).expect("bench config"),
        7,
    )
}

fn unsampled(c: &mut Criterion) {
    let mut t = tracer("\"ratio\": 0.01");
    // An unsampled parent: the decision is the caller's, nothing is recorded.
    let mut headers = HEADERS;
    headers[8].1 = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let mut inj = Injection::default();
    c.bench_function("unsampled request: index headers, decide, inject", |b| {
        b.iter(|| {
            let h = RequestHeaders::from_pairs(black_box(headers).iter().copied());
            let d = t.start(&h, || 0, Some(&mut inj));
            black_box(d.record)
        })
    });
}

fn sampled(c: &mut Criterion) {
    let mut t = tracer("\"ratio\": 1.0");
    let mut inj = Injection::default();
    let mut rec = SpanRecord::default();
    let mut out = Vec::with_capacity(1 << 16);
    let mut now = 0u64;
    c.bench_function(
        "sampled request: decide, inject, mesh span, finish, encode",
        |b| {
            b.iter(|| {
                now += 1_000;
                let h = RequestHeaders::from_pairs(black_box(HEADERS).iter().copied());
                let d = t.start(&h, || now, Some(&mut inj));
                t.begin_span(&d, &h, now, &mut rec);
                let request = t.record_request(&h, HEADERS.iter().copied(), &mut rec);
                t.finish_span(
                    &mut rec,
                    &Finish {
                        end_ns: now + 1_000_000,
                        status_code: Some(503),
                        protocol: Some(b"HTTP/1.1"),
                        source_address: Some(b"10.0.0.7:41234"),
                        kind: SpanKind::Client,
                        request: &request,
                        mesh: EndFacts {
                            response_flags: 0x20 | 0x8000,
                            code_details: Some(b"upstream_reset_before_response_started"),
                            cluster_name: Some(
                                b"outbound|9080|v2|reviews.default.svc.cluster.local",
                            ),
                            route_name: Some(b"reviews.default.svc.cluster.local:9080"),
                            route_metadata: None,
                            upstream_address: Some(b"10.1.2.3:9080"),
                            upstream_attempts: Some(3),
                            backend_latency_ns: Some(2_500_000),
                            tls: TlsFacts::default(),
                        },
                        grpc_status: None,
                        lambda: None,
                    },
                );
                out.clear();
                encode_span(&rec, &mut out);
                black_box(out.len())
            })
        },
    );
}

criterion_group!(benches, unsampled, sampled);
criterion_main!(benches);
