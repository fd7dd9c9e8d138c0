//! Criterion benchmarks of the core: each group is one operation, each function in it one way
//! of doing it (`scalar`, `simd`, and the crate a user would otherwise reach for). Group and
//! function names are what `bench-table` looks up, so keep them in step.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use meshtrace::headers::{pairs, serialize_pairs, RequestHeaders};
use meshtrace::ids::IdGenerator;
use meshtrace::propagation::tracecontext::parse_traceparent;
use meshtrace::simd::{self, scalar};
use meshtrace_wasm_kernels as k;

fn hex(c: &mut Criterion) {
    let mut g = c.benchmark_group("hex_encode");
    let mut out = [0u8; 32];
    g.bench_function("scalar", |b| {
        b.iter(|| scalar::encode_hex16(black_box(&k::TRACE_ID), &mut out))
    });
    g.bench_function("simd", |b| {
        b.iter(|| simd::encode_hex16(black_box(&k::TRACE_ID), &mut out))
    });
    g.bench_function("crate", |b| {
        b.iter(|| faster_hex::hex_encode(black_box(&k::TRACE_ID), &mut out).map(|s| s.len()))
    });
    g.finish();

    let src: &[u8; 32] = k::TRACEPARENT[3..35].first_chunk().unwrap();
    let mut g = c.benchmark_group("hex_decode");
    let mut out = [0u8; 16];
    g.bench_function("scalar", |b| {
        b.iter(|| scalar::decode_hex32(black_box(src), &mut out))
    });
    g.bench_function("simd", |b| {
        b.iter(|| simd::decode_hex32(black_box(src), &mut out))
    });
    g.bench_function("crate", |b| {
        b.iter(|| faster_hex::hex_decode(black_box(src), &mut out).is_ok())
    });
    g.finish();
}

/// The fast path of `parse_traceparent` with the scalar twins in place of the kernels.
fn traceparent_scalar(v: &[u8; 55]) -> Option<(u64, u64, u8)> {
    if !scalar::traceparent_shape(v) {
        return None;
    }
    let version = scalar::DECODE[v[0] as usize] << 4 | scalar::DECODE[v[1] as usize];
    let flags = scalar::DECODE[v[53] as usize] << 4 | scalar::DECODE[v[54] as usize];
    let (mut t, mut s) = ([0u8; 16], [0u8; 8]);
    let ok = scalar::decode_hex(&v[3..35], &mut t) & scalar::decode_hex(&v[36..52], &mut s);
    let (hi, lo) = (
        u64::from_be_bytes(t[..8].try_into().ok()?),
        u64::from_be_bytes(t[8..].try_into().ok()?),
    );
    let span = u64::from_be_bytes(s);
    (ok && version != 0xff && (hi | lo) != 0 && span != 0).then_some((lo, span, flags & 3))
}

fn traceparent(c: &mut Criterion) {
    let mut g = c.benchmark_group("traceparent");
    g.bench_function("scalar", |b| {
        b.iter(|| traceparent_scalar(black_box(k::TRACEPARENT)))
    });
    g.bench_function("simd", |b| {
        b.iter(|| parse_traceparent(black_box(&k::TRACEPARENT[..])))
    });
    g.finish();

    let mut g = c.benchmark_group("traceparent_shape");
    g.bench_function("scalar", |b| {
        b.iter(|| scalar::traceparent_shape(black_box(k::TRACEPARENT)))
    });
    g.bench_function("simd", |b| {
        b.iter(|| simd::traceparent_shape(black_box(k::TRACEPARENT)))
    });
    g.finish();
}

/// A user agent into a span's arena as valid UTF-8: the ASCII fast path (one SIMD scan and a
/// copy) against std's validation, and the same value with two bytes that are not UTF-8.
fn utf8(c: &mut Criterion) {
    const UA: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    let mut bad = UA.to_vec();
    bad[40] = 0xff;
    bad[41] = 0xfe;
    let mut out = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("utf8_append");
    g.bench_function("scalar", |b| {
        b.iter(|| {
            out.clear();
            let v = black_box(UA);
            if scalar::find_non_ascii(v).is_none() {
                out.extend_from_slice(v);
            }
        })
    });
    g.bench_function("simd", |b| {
        b.iter(|| {
            out.clear();
            meshtrace::text::append(black_box(UA), usize::MAX, &mut out)
        })
    });
    g.bench_function("crate", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(String::from_utf8_lossy(black_box(UA)).as_bytes())
        })
    });
    g.bench_function("simd_invalid", |b| {
        b.iter(|| {
            out.clear();
            meshtrace::text::append(black_box(&bad), usize::MAX, &mut out)
        })
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let mut map = Vec::new();
    serialize_pairs(k::request_headers(), &mut map);
    let mut g = c.benchmark_group("header_index");
    g.bench_function("scalar", |b| {
        b.iter(|| RequestHeaders::from_pairs(pairs(black_box(&map))).count)
    });
    g.finish();
}

/// The same span built as `opentelemetry-proto` prost messages and encoded, as an exporter built
/// on the generated types does it.
mod proto {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(key: &str, v: &str) -> KeyValue {
        kv(key, Value::StringValue(v.into()))
    }

    pub fn encode(trace_id: &[u8; 16], out: &mut Vec<u8>) -> usize {
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: vec![8; 8],
            parent_span_id: vec![9; 8],
            name: "GET /api/users/{id}".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_001_000_000,
            attributes: vec![
                s("http.request.method", "GET"),
                s("url.path", "/api/users/42"),
                s("url.scheme", "http"),
                s("server.address", "reviews.default.svc.cluster.local"),
                kv("server.port", Value::IntValue(9080)),
                s("network.protocol.version", "1.1"),
                s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                s("client.address", "10.0.0.7"),
                kv("http.response.status_code", Value::IntValue(200)),
                s("http.route", "/api/users/{id}"),
                s(
                    "mesh.upstream.cluster",
                    "outbound|9080|v2|reviews.default.svc.cluster.local",
                ),
                s("mesh.upstream.subset", "v2"),
                kv("mesh.canary", Value::BoolValue(true)),
                s("mesh.release", "canary"),
            ],
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![s("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "meshtrace".into(),
                        version: "0.1.0".into(),
                        ..Default::default()
                    }),
                    spans: vec![span],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        out.clear();
        // Encoding into a Vec only fails when it cannot grow, which aborts anyway.
        let _ = req.encode(out);
        out.len()
    }
}

fn span_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("span_encode");
    let span = k::typical_span();
    let header = k::batch_header();
    let (mut spans, mut batch) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
    g.bench_function("simd", |b| {
        b.iter(|| {
            spans.clear();
            meshtrace::export::otlp::encode_span(black_box(&span), &mut spans);
            header.encode_request(&spans, &mut batch);
            batch.len()
        })
    });
    let mut out = Vec::with_capacity(4096);
    g.bench_function("crate", |b| {
        b.iter(|| proto::encode(black_box(&k::TRACE_ID), &mut out))
    });
    g.finish();
}

fn ids(c: &mut Criterion) {
    use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
    let mut g = c.benchmark_group("id_generation");
    let mut ours = IdGenerator::from_seed(7);
    g.bench_function("simd", |b| b.iter(|| (ours.trace_id(), ours.span_id())));
    let sdk = RandomIdGenerator::default();
    g.bench_function("crate", |b| {
        b.iter(|| (sdk.new_trace_id(), sdk.new_span_id()))
    });
    g.finish();
}

fn core_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("core_path");
    let mut p = k::CorePath::new();
    for _ in 0..64 {
        p.request();
    }
    g.bench_function("simd", |b| b.iter(|| p.request()));
    g.finish();
}

/// The histogram bucket of a duration among the 16 `spanmetrics` bounds: the aggregator's
/// branch-free search in four fixed halvings (`scalar`), a count of the bounds below the value
/// (`count`), the standard library's binary search (`binary`), and a
/// trial SSE2 kernel on whole-millisecond bounds (`simd`: the duration rounded up to ms as
/// `u32`, since SSE2 has no 64-bit compare). The aggregator keeps whichever wins.
fn bucket(c: &mut Criterion) {
    use meshtrace::metrics::red::{self, BOUNDS};
    let bounds_ms = meshtrace::metrics::DEFAULT_BOUNDS_MS;
    let bounds_ns = bounds_ms.map(|b| b * 1_000_000);
    // Durations spread over every bucket, exact bounds included.
    let values: Vec<u64> = (0..256u64)
        .map(|i| (i * 7919 % 17_000) * 1_000_000 + (i % 3) * 333_333)
        .collect();
    let mut g = c.benchmark_group("histogram_bucket");
    g.bench_function("scalar", |b| {
        b.iter(|| {
            values
                .iter()
                .map(|&v| red::bucket(black_box(&bounds_ns), v))
                .sum::<usize>()
        })
    });
    g.bench_function("count", |b| {
        b.iter(|| {
            values
                .iter()
                .map(|&v| {
                    black_box(&bounds_ns)
                        .iter()
                        .map(|&x| usize::from(x < v))
                        .sum::<usize>()
                })
                .sum::<usize>()
        })
    });
    g.bench_function("binary", |b| {
        b.iter(|| {
            values
                .iter()
                .map(|&v| black_box(&bounds_ns).partition_point(|&x| x < v))
                .sum::<usize>()
        })
    });
    #[cfg(target_arch = "x86_64")]
    {
        let bounds32: [i32; BOUNDS] = bounds_ms.map(|b| b as i32);
        for &v in &values {
            assert_eq!(sse2_bucket(&bounds32, v), red::bucket(&bounds_ns, v), "{v}");
        }
        g.bench_function("simd", |b| {
            b.iter(|| {
                values
                    .iter()
                    .map(|&v| sse2_bucket(black_box(&bounds32), v))
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

/// The trial kernel: bounds below `ceil(v / 1 ms)`, four lanes at a time.
#[cfg(target_arch = "x86_64")]
fn sse2_bucket(bounds: &[i32; 16], v: u64) -> usize {
    use std::arch::x86_64::*;
    let ms = v.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
    // SAFETY: SSE2 is part of the x86_64 baseline; the loads read 16 i32 of a [i32; 16].
    unsafe {
        let x = _mm_set1_epi32(ms);
        let p = bounds.as_ptr() as *const __m128i;
        let a = _mm_cmpgt_epi32(x, _mm_loadu_si128(p));
        let b = _mm_cmpgt_epi32(x, _mm_loadu_si128(p.add(1)));
        let c = _mm_cmpgt_epi32(x, _mm_loadu_si128(p.add(2)));
        let d = _mm_cmpgt_epi32(x, _mm_loadu_si128(p.add(3)));
        let m = _mm_packs_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, d));
        (_mm_movemask_epi8(m) as u32).count_ones() as usize
    }
}

/// One finished request counted into a warm aggregator of 64 series: key, hash lookup,
/// bucket, count, sum, min, max.
fn red_record(c: &mut Criterion) {
    use meshtrace::metrics::red::{Call, NameKey, Red};
    use meshtrace::span::SpanKind;
    let bounds_ns = meshtrace::metrics::DEFAULT_BOUNDS_MS.map(|b| b * 1_000_000);
    let mut red = Red::new(bounds_ns, 1000, 0);
    let calls: Vec<Call> = (0..256u64)
        .map(|i| Call {
            name: NameKey {
                method: (i % 2) as u8,
                route: (i % 4) as u16,
            },
            kind: SpanKind::Client,
            error: i % 8 == 0,
            release: (i % 2) as u8 + 1,
            http_status: Some(if i % 8 == 0 { 503 } else { 200 }),
            grpc: None,
            duration_ns: (i * 7919 % 3_000) * 1_000_000,
        })
        .collect();
    for c in &calls {
        red.record(c);
    }
    let mut g = c.benchmark_group("red_record");
    let mut i = 0;
    g.bench_function("scalar", |b| {
        b.iter(|| {
            i = (i + 1) & 255;
            red.record(black_box(&calls[i]));
        })
    });
    g.finish();
}

/// 64 KiB of encoded spans as one export request (the default `batch.max_export_bytes`): the
/// typical span with the fields that differ between requests (ids, times, the path's id, the
/// client) varied, so the compressor sees what a real batch looks like, not one span repeated.
fn export_request_64k() -> Vec<u8> {
    let mut spans = Vec::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut i = 0u64;
    while spans.len() < 64 * 1024 {
        let mut s = k::typical_span();
        let (a, b) = (next(), next());
        s.trace_id = meshtrace::ids::TraceId(
            [a.to_le_bytes(), b.to_le_bytes()]
                .concat()
                .try_into()
                .unwrap(),
        );
        s.span_id = meshtrace::ids::SpanId(next().to_le_bytes());
        s.parent_span_id = Some(meshtrace::ids::SpanId(next().to_le_bytes()));
        s.start_ns += i * 1_713_117;
        s.end_ns = s.start_ns + next() % 50_000_000;
        s.str(
            "url.path",
            format!("/api/users/{}", next() % 100_000).as_bytes(),
        );
        s.str(
            "client.address",
            format!("10.0.{}.{}", next() % 256, next() % 256).as_bytes(),
        );
        let before = spans.len();
        meshtrace::export::otlp::encode_span(&s, &mut spans);
        if spans.len() > 64 * 1024 {
            spans.truncate(before);
            break;
        }
        i += 1;
    }
    let mut req = Vec::new();
    k::batch_header().encode_request(&spans, &mut req);
    req
}

/// Compressing one full export request with gzip, the work one export callback does when
/// `collector.compression` is `gzip`: at deflate levels 1, 2 and 6 with a fresh compressor
/// per body (`fresh_*`, what `miniz_oxide::deflate::compress_to_vec` does), the exporter's
/// reused [`GzipEncoder`](meshtrace::export::gzip::GzipEncoder) with its gzip framing and
/// CRC-32 (`encoder`), and the copy a body without compression costs (`none`). The ratio of each level is printed once.
fn export_gzip(c: &mut Criterion) {
    use miniz_oxide::deflate::compress_to_vec;
    let req = export_request_64k();
    for level in [1u8, 2, 6] {
        let z = compress_to_vec(&req, level);
        eprintln!(
            "export_gzip: {} bytes, level {level}: {} bytes ({:.2}x)",
            req.len(),
            z.len(),
            req.len() as f64 / z.len() as f64
        );
    }
    let mut g = c.benchmark_group("export_gzip");
    let mut out = Vec::with_capacity(128 * 1024);
    g.bench_function("none", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&req));
            out.len()
        })
    });
    for level in [1u8, 2, 6] {
        g.bench_function(format!("fresh_{level}"), |b| {
            b.iter(|| compress_to_vec(black_box(&req), level).len())
        });
    }
    let mut encoder = meshtrace::export::gzip::GzipEncoder::new();
    g.bench_function("encoder", |b| {
        b.iter(|| {
            out.clear();
            encoder.compress(black_box(&req), &mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bucket,
    red_record,
    hex,
    traceparent,
    headers,
    span_encode,
    ids,
    core_path,
    export_gzip,
    utf8
);
criterion_main!(benches);
