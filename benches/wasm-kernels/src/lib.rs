//! The operations `make bench` times, as plain loops over shared fixtures.
//!
//! The same source is compiled three ways: natively (linked into the criterion benchmarks and
//! the wasm harness), and twice for wasm32-wasip1, with and without `+simd128`. Each exported
//! `bench_*` function runs its operation `iters` times and returns a checksum, so the host times
//! one call per sample and the optimizer cannot drop the work.

use core::hint::black_box;

use meshtrace::export::otlp::{encode_span, BatchHeader, ResourceValue};
use meshtrace::export::reply::ExportResult;
use meshtrace::export::span_processor::BatchSpanProcessor;
use meshtrace::headers::{pairs, serialize_pairs, RequestHeaders};
use meshtrace::ids::{IdGenerator, SpanId, TraceId};
use meshtrace::propagation::inject::Injection;
use meshtrace::propagation::tracecontext::parse_traceparent;
use meshtrace::simd::{self, scalar};
use meshtrace::span::mesh::EndFacts;
use meshtrace::span::Finish;
use meshtrace::span::{SpanKind, SpanRecord};
use meshtrace::tracer::Tracer;

/// A sampled W3C parent, as most requests inside a traced mesh carry it.
pub const TRACEPARENT: &[u8; 55] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// A trace id's bytes.
pub const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
/// A `tracestate` of realistic size (three vendors).
pub const TRACESTATE: &[u8] =
    b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,dd=s:1;o:rum;p:00f067aa0ba902b7;t.dm:-0";

/// The request headers of a typical mesh request behind an ingress, as Envoy hands them over.
pub fn request_headers() -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b":authority", b"reviews.default.svc.cluster.local:9080"),
        (b":path", b"/api/users/42?expand=orders"),
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"x-forwarded-for", b"203.0.113.9, 10.0.0.7"),
        (b"x-forwarded-proto", b"http"),
        (b"x-request-id", b"9b6d1f7c-2f0e-4b8e-a1c6-2f7a4b0c9d11"),
        (b"traceparent", TRACEPARENT),
        (b"tracestate", TRACESTATE),
        (b"x-envoy-attempt-count", b"1"),
        (b"content-length", b"0"),
    ]
}

/// A typical mesh span: a name and 14 attributes.
pub fn typical_span() -> SpanRecord {
    let mut s = SpanRecord::default();
    s.trace_id = TraceId(TRACE_ID);
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

/// The resource every batch carries.
pub fn batch_header() -> BatchHeader {
    BatchHeader::new(&[("service.name", ResourceValue::Str("checkout".into()))])
}

/// The whole core request path, with every buffer owned and reused as the filter does.
pub struct CorePath {
    tracer: Tracer,
    exporter: BatchSpanProcessor,
    injection: Injection,
    record: SpanRecord,
    /// The request headers in the proxy-wasm serialized form the host hands over.
    map: Vec<u8>,
    /// Bytes handed to the (imaginary) transport.
    sent: u64,
    now_ns: u64,
}

impl Default for CorePath {
    fn default() -> Self {
        Self::new()
    }
}

impl CorePath {
    /// A tracer, processor and header map for the typical request.
    pub fn new() -> Self {
        // Parsing a literal, known-good configuration cannot fail.
        let config = meshtrace::config::load(br#"{"collector":{"cluster":"otel_collector"}}"#)
            .unwrap_or_else(|e| panic!("bench config: {e:?}"));
        let tracer = Tracer::new(config, 42);
        let exporter =
            BatchSpanProcessor::new(tracer.config.export(), tracer.batch_header.clone(), 0, 42);
        let mut map = Vec::new();
        serialize_pairs(request_headers(), &mut map);
        Self {
            tracer,
            exporter,
            injection: Injection::default(),
            record: SpanRecord::default(),
            map,
            sent: 0,
            now_ns: 1_700_000_000_000_000_000,
        }
    }

    /// One request: index the host's header map, extract and decide, inject, build, tag and
    /// finish the span, queue it (encoded) and cut a batch whenever one is full.
    pub fn request(&mut self) -> usize {
        self.now_ns += 1_000;
        let mut h = RequestHeaders::default();
        h.fill_from_pairs(pairs(&self.map));
        let d = self.tracer.extract(&h);
        self.tracer.inject(&d, &h, &mut self.injection);
        if d.sampled() {
            self.tracer
                .begin_span(&d, &h, self.now_ns, &mut self.record);
            let request = self
                .tracer
                .record_request(&h, pairs(&self.map), &mut self.record);
            self.tracer.finish_span(
                &mut self.record,
                &Finish {
                    end_ns: self.now_ns + 500_000,
                    status_code: Some(200),
                    protocol: Some(b"HTTP/1.1"),
                    source_address: Some(b"10.0.0.7:51234"),
                    kind: SpanKind::Server,
                    request: &request,
                    mesh: EndFacts {
                        cluster_name: Some(b"inbound|9080||reviews.default.svc.cluster.local"),
                        route_name: Some(b"default"),
                        upstream_address: Some(b"10.0.3.4:9080"),
                        ..Default::default()
                    },
                    grpc_status: None,
                    lambda: None,
                },
            );
            let _ = self.exporter.push(&self.record);
        }
        // Send whatever is due, and the collector accepts it at once.
        let now_ms = self.now_ns / 1_000_000;
        while let Some(req) = self.exporter.poll(now_ms) {
            let id = req.id;
            self.sent = self.sent.wrapping_add(req.body.len() as u64);
            self.exporter
                .on_result(id, ExportResult::Ok { rejected: 0 }, now_ms);
        }
        self.injection.headers().count()
    }
}

/// One timed operation: `iters` runs in, a checksum out.
pub type Op = fn(u64) -> u64;

/// Every operation the wasm table shows, by name.
pub const OPS: &[(&str, Op)] = &[
    ("hex encode trace id (scalar)", hex_encode_scalar),
    ("hex encode trace id", hex_encode),
    ("hex decode trace id (scalar)", hex_decode_scalar),
    ("hex decode trace id", hex_decode),
    ("traceparent shape (scalar)", shape_scalar),
    ("traceparent shape", shape),
    ("traceparent parse+validate", traceparent),
    ("span encode into batch", span_encode),
    ("id generation (trace+span)", id_generation),
    ("core request path", core_path),
];

/// `iters` trace-id hex encodes, scalar twin; returns a checksum.
pub fn hex_encode_scalar(iters: u64) -> u64 {
    let mut out = [0u8; 32];
    let mut sum = 0u64;
    for _ in 0..iters {
        scalar::encode_hex16(black_box(&TRACE_ID), &mut out);
        sum = sum.wrapping_add(black_box(&out)[31] as u64);
    }
    sum
}

/// `iters` trace-id hex encodes, SIMD kernel; returns a checksum.
pub fn hex_encode(iters: u64) -> u64 {
    let mut out = [0u8; 32];
    let mut sum = 0u64;
    for _ in 0..iters {
        simd::encode_hex16(black_box(&TRACE_ID), &mut out);
        sum = sum.wrapping_add(black_box(&out)[31] as u64);
    }
    sum
}

fn trace_hex() -> &'static [u8; 32] {
    TRACEPARENT[3..35]
        .first_chunk::<32>()
        .unwrap_or(&[b'0'; 32])
}

/// `iters` trace-id hex decodes, scalar twin; returns a checksum.
pub fn hex_decode_scalar(iters: u64) -> u64 {
    let mut out = [0u8; 16];
    let mut sum = 0u64;
    for _ in 0..iters {
        sum += scalar::decode_hex32(black_box(trace_hex()), &mut out) as u64;
        sum = sum.wrapping_add(black_box(&out)[15] as u64);
    }
    sum
}

/// `iters` trace-id hex decodes, SIMD kernel; returns a checksum.
pub fn hex_decode(iters: u64) -> u64 {
    let mut out = [0u8; 16];
    let mut sum = 0u64;
    for _ in 0..iters {
        sum += simd::decode_hex32(black_box(trace_hex()), &mut out) as u64;
        sum = sum.wrapping_add(black_box(&out)[15] as u64);
    }
    sum
}

/// `iters` `traceparent` shape checks, scalar twin; returns how many passed.
pub fn shape_scalar(iters: u64) -> u64 {
    (0..iters)
        .map(|_| scalar::traceparent_shape(black_box(TRACEPARENT)) as u64)
        .sum()
}

/// `iters` `traceparent` shape checks, SIMD kernel; returns how many passed.
pub fn shape(iters: u64) -> u64 {
    (0..iters)
        .map(|_| simd::traceparent_shape(black_box(TRACEPARENT)) as u64)
        .sum()
}

/// `iters` `traceparent` parses; returns a checksum.
pub fn traceparent(iters: u64) -> u64 {
    (0..iters)
        .map(|_| {
            parse_traceparent(black_box(&TRACEPARENT[..]))
                .map(|c| c.flags as u64)
                .unwrap_or(0)
        })
        .sum()
}

/// `iters` spans encoded into a batch; returns the bytes written.
pub fn span_encode(iters: u64) -> u64 {
    let span = typical_span();
    let header = batch_header();
    let mut spans = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut sum = 0u64;
    for _ in 0..iters {
        spans.clear();
        encode_span(black_box(&span), &mut spans);
        header.encode_request(&spans, &mut out);
        sum = sum.wrapping_add(out.len() as u64);
    }
    sum
}

/// `iters` trace and span id pairs; returns a checksum.
pub fn id_generation(iters: u64) -> u64 {
    let mut g = IdGenerator::from_seed(7);
    let mut sum = 0u64;
    for _ in 0..iters {
        sum = sum.wrapping_add(g.trace_id().low_u64() ^ g.span_id().as_u64());
    }
    sum
}

/// `iters` requests through the core path; returns the headers injected.
pub fn core_path(iters: u64) -> u64 {
    let mut p = CorePath::new();
    // Warm the reused buffers so the timing is the steady state.
    for _ in 0..64 {
        p.request();
    }
    (0..iters).map(|_| p.request() as u64).sum()
}

/// The wasm exports: `bench_count()`, `bench_run(op, iters)`.
#[cfg(target_arch = "wasm32")]
mod exports {
    #[no_mangle]
    pub extern "C" fn bench_count() -> u32 {
        super::OPS.len() as u32
    }

    /// Runs op `op` (an index into `OPS`) `iters` times; an unknown index does nothing.
    #[no_mangle]
    pub extern "C" fn bench_run(op: u32, iters: u64) -> u64 {
        super::OPS.get(op as usize).map_or(0, |(_, f)| f(iters))
    }
}
