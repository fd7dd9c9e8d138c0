//! The core request path allocates nothing once warm: extract, sample, inject, build and tag a
//! span, finish it, and encode it into the export batch, 10,000 times (for an HTTP request and
//! a gRPC call each) under a counting global allocator. Allocations on this path are per-request costs inside every Envoy worker.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use meshtrace::export::otlp::BatchHeader;
use meshtrace::export::reply::ExportResult;
use meshtrace::headers::{pairs, serialize_pairs, RequestHeaders};
use meshtrace::propagation::inject::Injection;
use meshtrace::span::mesh::identity::TlsFacts;
use meshtrace::span::mesh::EndFacts;
use meshtrace::span::Finish;
use meshtrace::span::{SpanKind, SpanRecord};
use meshtrace::tracer::Tracer;

/// Counts allocations made by this thread while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Only the measuring thread counts: the test harness allocates on its own threads.
    static MEASURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted() {
    if COUNTING.load(Ordering::Relaxed) && MEASURED.try_with(|m| m.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A production-like config: every propagation format, canary rules, route templates,
/// always-keep rules, header capture, serverless upstream rules.
const CONFIG: &str = r#"{
  "service_name": "reviews",
  "collector": {"cluster": "otel_collector"},
  "batch": {"max_queue": 4096, "max_batch": 512},
  "sampling": {"ratio": 1.0, "always_keep": ["error", "fault", "slow"], "slow_ms": 500},
  "traffic": {
    "rules": [
      {"match": "subset", "value": "v2", "release": "canary", "canary": true},
      {"match": "subset", "value": "v1", "release": "stable", "canary": false},
      {"match": "header", "name": "x-ab-group", "ab_group": "b"}
    ],
    "weights": {"v1": 90, "v2": 10}
  },
  "routes": ["/api/reviews/{id}"],
  "capture": {"request_headers": ["x-tenant", "authorization"]},
  "faas": {
    "lambda": [{"cluster": "outbound|9080|v2|reviews.default.svc.cluster.local",
                "arn": "arn:aws:lambda:us-east-1:123456789012:function:reviews:live"}],
    "lambda_log_tail": true,
    "lambda_price_per_gb_second": 0.0000166667,
    "upstreams": [
      {"match": {"host": "*.run.app"}, "provider": "gcp", "region": "us-central1"},
      {"match": {"cluster": "*.svc.cluster.local"}, "provider": "acme"}]
  }
}"#;

/// A Lambda answer with a function error and a cold start's log tail (base64 of a `REPORT`
/// line), as the glue reads it from the response header map.
const LAMBDA_RESPONSE: [(&[u8], &[u8]); 3] = [
    (b"x-amzn-requestid", b"req-1"),
    (b"x-amz-function-error", b"Unhandled"),
    (b"x-amz-log-result", b"UkVQT1JUIFJlcXVlc3RJZDogcgkgRHVyYXRpb246IDEuMDAgbXMJQmlsbGVkIER1cmF0aW9uOiAyIG1zCU1lbW9yeSBTaXplOiAxMjggTUIJTWF4IE1lbW9yeSBVc2VkOiA2NCBNQglJbml0IER1cmF0aW9uOiA5OS41MCBtcwo="),
];

/// One request through the whole core path, as the wasm glue drives it, answered 200 (a gRPC
/// call `INTERNAL`).
fn request(
    tracer: &mut Tracer,
    exporter: &mut meshtrace::export::span_processor::BatchSpanProcessor,
    buf: &[u8],
    rec: &mut SpanRecord,
    injection: &mut Injection,
    now: u64,
) {
    let internal = meshtrace::span::grpc::Code::INTERNAL;
    request_answered(tracer, exporter, buf, rec, injection, now, (200, internal));
}

/// [`request`] answered with `(HTTP status, gRPC status of a gRPC call)`.
fn request_answered(
    tracer: &mut Tracer,
    exporter: &mut meshtrace::export::span_processor::BatchSpanProcessor,
    buf: &[u8],
    rec: &mut SpanRecord,
    injection: &mut Injection,
    now: u64,
    (status, grpc_status): (i64, meshtrace::span::grpc::Code),
) {
    let headers = RequestHeaders::from_pairs(pairs(buf));
    let decision = tracer.start(&headers, || now, Some(injection));
    assert!(decision.record);
    tracer.begin_span(&decision, &headers, now, rec);
    let facts = tracer.record_request(&headers, pairs(buf), rec);
    let cluster = b"outbound|9080|v2|reviews.default.svc.cluster.local";
    // A Lambda upstream: its extra headers and its response, as the glue handles them.
    let lambda = tracer.span.lambda.lookup(cluster).map(|i| {
        tracer.inject_lambda(&decision, injection);
        let mut invalid = false;
        let inv = meshtrace::span::faas::lambda::Invocation::from_headers(
            LAMBDA_RESPONSE.iter().copied(),
            true,
            &mut invalid,
        );
        assert!(inv.report.is_some() && !invalid);
        (i, inv)
    });
    let finish = Finish {
        end_ns: now + 1_500_000,
        status_code: Some(status),
        protocol: Some(b"HTTP/1.1"),
        source_address: Some(b"10.1.2.3:51234"),
        kind: SpanKind::Client,
        request: &facts,
        mesh: EndFacts {
            response_flags: 0,
            code_details: None,
            cluster_name: Some(b"outbound|9080|v2|reviews.default.svc.cluster.local"),
            route_name: Some(b"reviews-route"),
            route_metadata: None,
            upstream_address: Some(b"10.4.0.7:9080"),
            upstream_attempts: Some(1),
            backend_latency_ns: Some(1_200_000),
            tls: TlsFacts::default(),
        },
        grpc_status: facts.grpc.map(|_| grpc_status),
        lambda,
    };
    tracer.finish_span(rec, &finish);
    exporter.push(rec).expect("queue has room");
}

/// Cuts and "sends" every due batch, answering OK: the batch body is encoded into the
/// exporter's reused buffers.
fn export_due(exporter: &mut meshtrace::export::span_processor::BatchSpanProcessor, now_ms: u64) {
    while let Some(req) = exporter.poll(now_ms) {
        let id = req.id;
        assert!(!req.body.is_empty());
        exporter.on_result(id, ExportResult::Ok { rejected: 0 }, now_ms);
    }
}

/// Runs `measured` with the counting allocator on and returns the allocations it made.
fn allocations(measured: impl FnOnce()) -> u64 {
    let before = ALLOCS.load(Ordering::SeqCst);
    MEASURED.with(|m| m.set(true));
    COUNTING.store(true, Ordering::SeqCst);
    measured();
    let allocs = ALLOCS.load(Ordering::SeqCst);
    // The counter itself works: one deliberate allocation is seen.
    std::hint::black_box(Vec::<u8>::with_capacity(64));
    let after = ALLOCS.load(Ordering::SeqCst);
    COUNTING.store(false, Ordering::SeqCst);
    MEASURED.with(|m| m.set(false));
    assert_eq!(after, allocs + 1, "the counting allocator is not counting");
    allocs - before
}

/// The counters are process-wide: the measuring tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn naming_past_the_span_name_limit_allocates_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 500 distinct paths against a limit of 100: once warm, every request either finds its
    // name in the set or falls back to `{method}`, and neither allocates.
    let config = meshtrace::config::load(
        br#"{"collector": {"cluster": "c"}, "batch": {"max_queue": 4096, "max_batch": 512},
             "routes": ["/api/reviews/{id}"], "limits": {"max_span_names": 100}}"#,
    )
    .unwrap();
    let mut tracer = Tracer::new(config, 42);
    let header = tracer.batch_header.clone();
    let mut exporter = meshtrace::export::span_processor::BatchSpanProcessor::new(
        tracer.config.export(),
        header,
        0,
        7,
    );
    let buffers: Vec<Vec<u8>> = (0..500u32)
        .map(|i| {
            let user: String = (0..3)
                .map(|k| (b'a' + (i / 26u32.pow(k) % 26) as u8) as char)
                .collect();
            let path = format!("/users/{user}/orders/{i}");
            let mut buf = Vec::new();
            let hdrs: [(&[u8], &[u8]); 3] = [
                (b":method", b"GET"),
                (b":path", path.as_bytes()),
                (b":authority", b"reviews:9080"),
            ];
            serialize_pairs(hdrs.iter().copied(), &mut buf);
            buf
        })
        .collect();
    let mut rec = SpanRecord::default();
    let mut injection = Injection::default();
    for i in 0..2_000u64 {
        let buf = &buffers[i as usize % buffers.len()];
        request(
            &mut tracer,
            &mut exporter,
            buf,
            &mut rec,
            &mut injection,
            1_000 + i,
        );
        export_due(&mut exporter, i);
    }
    // Each pass over the 500 paths admits nothing new after the first 100 names.
    assert_eq!(tracer.names.overflow(), 4 * 400);
    let allocs = allocations(|| {
        for i in 0..10_000u64 {
            let buf = &buffers[i as usize % buffers.len()];
            request(
                &mut tracer,
                &mut exporter,
                buf,
                &mut rec,
                &mut injection,
                10_000 + i,
            );
            export_due(&mut exporter, i);
        }
    });
    assert_eq!(
        allocs, 0,
        "allocations naming spans on the warm request path"
    );
    assert_eq!(tracer.names.overflow(), 24 * 400);
}

#[test]
fn names_refuted_by_the_response_allocate_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A scanner's guesses answered 404 and UNIMPLEMENTED, between real requests: settling a
    // name back to `{method}` (or `grpc`, `_OTHER`) at the end allocates nothing.
    let config = meshtrace::config::load(
        br#"{"collector": {"cluster": "c"}, "batch": {"max_queue": 4096, "max_batch": 512},
             "limits": {"max_span_names": 10}}"#,
    )
    .unwrap();
    let mut tracer = Tracer::new(config, 42);
    let header = tracer.batch_header.clone();
    let mut exporter = meshtrace::export::span_processor::BatchSpanProcessor::new(
        tracer.config.export(),
        header,
        0,
        7,
    );
    let unimplemented = meshtrace::span::grpc::Code::UNIMPLEMENTED;
    let ok = meshtrace::span::grpc::Code::OK;
    let calls: Vec<(Vec<u8>, (i64, meshtrace::span::grpc::Code))> = (0..300u32)
        .map(|i| {
            let word: String = (0..3)
                .map(|k| (b'a' + (i / 26u32.pow(k) % 26) as u8) as char)
                .collect();
            let (path, grpc, answer) = match i % 3 {
                0 => (format!("/admin/{word}.php"), false, (404, ok)),
                1 => (format!("/scan.S/M{word}"), true, (200, unimplemented)),
                _ => (
                    format!("/users/{}", (b'a' + (i % 10) as u8) as char),
                    false,
                    (200, ok),
                ),
            };
            let mut buf = Vec::new();
            let mut hdrs: Vec<(&[u8], &[u8])> = vec![
                (b":method", if grpc { b"POST" } else { b"GET" }),
                (b":path", path.as_bytes()),
            ];
            if grpc {
                hdrs.push((b"content-type", b"application/grpc"));
            }
            serialize_pairs(hdrs.iter().copied(), &mut buf);
            (buf, answer)
        })
        .collect();
    let mut rec = SpanRecord::default();
    let mut injection = Injection::default();
    let mut run = |tracer: &mut Tracer, from: u64, n: u64| {
        for i in from..from + n {
            let (buf, answer) = &calls[i as usize % calls.len()];
            request_answered(
                tracer,
                &mut exporter,
                buf,
                &mut rec,
                &mut injection,
                1_000 + i,
                *answer,
            );
            export_due(&mut exporter, i);
        }
    };
    run(&mut tracer, 0, 2_000);
    let allocs = allocations(|| run(&mut tracer, 2_000, 10_000));
    assert_eq!(allocs, 0, "allocations settling refuted names");
    // Only the real routes took names: `/users/a` to `/users/j`, none of the guesses.
    assert_eq!(tracer.names.distinct(), 10);
    assert_eq!(tracer.names.overflow(), 0);
}

#[test]
fn whole_request_path_allocates_nothing_once_warm() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = meshtrace::config::load(CONFIG.as_bytes()).unwrap();
    let mut tracer = Tracer::new(config, 42);
    // Every request goes to a Lambda upstream: its headers, response and attributes too.
    assert!(tracer.span.lambda.any());
    let header: BatchHeader = tracer.batch_header.clone();
    let mut exporter = meshtrace::export::span_processor::BatchSpanProcessor::new(
        tracer.config.export(),
        header,
        0,
        7,
    );
    let mut buf = Vec::new();
    let hdrs: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":path", b"/api/reviews/12345?lang=en"),
        (b":authority", b"reviews.default.svc.cluster.local:9080"),
        (b":scheme", b"http"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"x-request-id", b"6f3c1a0e-9d2b-4b8e-a1c3-55d3e4f0a9b1"),
        (
            b"traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (b"tracestate", b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        (b"baggage", b"userId=alice,serverNode=DF%2028"),
        (
            b"b3",
            b"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ),
        (b"x-ab-group", b"b"),
        (b"x-tenant", b"acme"),
        (b"authorization", b"Bearer secret"),
        (b"x-envoy-attempt-count", b"1"),
    ];
    serialize_pairs(hdrs.iter().copied(), &mut buf);
    // A gRPC call beside it: method name, `rpc.*` attributes, a failed status.
    let mut grpc_buf = Vec::new();
    let grpc_hdrs: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":path", b"/reviews.v1.Reviews/GetReview"),
        (b":authority", b"reviews.default.svc.cluster.local:9080"),
        (b":scheme", b"http"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (
            b"traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    serialize_pairs(grpc_hdrs.iter().copied(), &mut grpc_buf);
    // Every other request carries bytes that are not UTF-8 (replaced with U+FFFD on the way
    // into the span): the repair path must not allocate either.
    let mut bad = Vec::new();
    let bad_hdrs: Vec<(&[u8], &[u8])> = hdrs
        .iter()
        .map(|&(k, v)| match k {
            b":path" => (k, &b"/api/reviews/12\xff45?lang=\xfe"[..]),
            b"user-agent" => (k, &b"probe/1.0 \xff\xfe"[..]),
            b"x-tenant" => (k, &b"acme\xe2\x82"[..]),
            _ => (k, v),
        })
        .collect();
    serialize_pairs(bad_hdrs.iter().copied(), &mut bad);
    // A call to a Cloud Run service: `faas.invoked_*` derived from the host, and
    // `x-cloud-trace-context` injected.
    let mut run = Vec::new();
    let run_hdrs: Vec<(&[u8], &[u8])> = hdrs
        .iter()
        .map(|&(k, v)| match k {
            b":authority" => (k, &b"myfn-abc123-uc.a.run.app"[..]),
            _ => (k, v),
        })
        .collect();
    serialize_pairs(run_hdrs.iter().copied(), &mut run);
    // The four alternate: plain HTTP, HTTP with bad bytes, a failed gRPC call, a function.
    let bufs = [&buf, &bad, &grpc_buf, &run];
    let mut rec = SpanRecord::default();
    let mut injection = Injection::default();

    // Warm up: buffers, the record's arena and the queue reach their steady sizes.
    for i in 0..2_000u64 {
        for b in bufs {
            request(
                &mut tracer,
                &mut exporter,
                b,
                &mut rec,
                &mut injection,
                1_000 + i,
            );
        }
        export_due(&mut exporter, i);
    }

    // The last request of each round is the function's: its platform header was measured.
    assert!(injection.get("x-cloud-trace-context").is_some());

    let allocs = allocations(|| {
        for i in 0..10_000u64 {
            for b in bufs {
                request(
                    &mut tracer,
                    &mut exporter,
                    b,
                    &mut rec,
                    &mut injection,
                    10_000 + i,
                );
            }
            export_due(&mut exporter, i);
        }
    });
    assert_eq!(allocs, 0, "allocations on the warm request path");
}

/// RED metrics on: every request, sampled or not, is counted as the glue counts it (a name from
/// the request headers, then the end facts), and each round ends with an export of the
/// interval. Once the series exist and the export buffers have grown, none of it allocates.
#[test]
fn red_metrics_recording_allocates_nothing_once_warm() {
    use meshtrace::metrics::Ended;
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let json = CONFIG.replacen(
        r#""service_name": "reviews","#,
        r#""service_name": "reviews", "metrics": {"enabled": true},"#,
        1,
    );
    let config = meshtrace::config::load(json.as_bytes()).unwrap();
    let mut tracer = Tracer::new(config, 42);
    assert!(tracer.metrics.is_some());
    let header: BatchHeader = tracer.batch_header.clone();
    let mut exporter = meshtrace::export::span_processor::BatchSpanProcessor::new(
        tracer.config.export(),
        header.clone(),
        0,
        7,
    );
    let serialize = |traceparent: &'static [u8], path: &'static [u8]| {
        let mut buf = Vec::new();
        let hdrs: [(&[u8], &[u8]); 5] = [
            (b":method", b"GET"),
            (b":path", path),
            (b":authority", b"reviews.default.svc.cluster.local:9080"),
            (b"traceparent", traceparent),
            (b"x-ab-group", b"b"),
        ];
        serialize_pairs(hdrs.iter().copied(), &mut buf);
        buf
    };
    let sampled = serialize(
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"/api/reviews/12345?lang=en",
    );
    let unsampled = serialize(
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        b"/other/path",
    );
    let clusters: [&[u8]; 2] = [
        b"outbound|9080|v1|reviews.default.svc.cluster.local",
        b"outbound|9080|v2|reviews.default.svc.cluster.local",
    ];
    let mut rec = SpanRecord::default();
    let mut injection = Injection::default();
    let mut requests = Vec::new();
    let mut round = |tracer: &mut Tracer,
                     exporter: &mut meshtrace::export::span_processor::BatchSpanProcessor,
                     i: u64| {
        // A sampled request: its span, then its count from the same facts.
        request(
            tracer,
            exporter,
            &sampled,
            &mut rec,
            &mut injection,
            1_000 + i,
        );
        let h = RequestHeaders::from_pairs(pairs(&sampled));
        let name = tracer.metric_name(&h).unwrap();
        tracer.record_metrics(&Ended {
            name,
            kind: SpanKind::Client,
            cluster_name: Some(clusters[1]),
            status: Some(200),
            duration_ns: 1_500_000,
            ..Ended::default()
        });
        // Unsampled requests: the sampler says no, only the count remains.
        for (j, status) in [200i64, 503, 404, 0].into_iter().enumerate() {
            let h = RequestHeaders::from_pairs(pairs(&unsampled));
            let d = tracer.start(&h, || 0, Some(&mut injection));
            assert!(!d.record);
            let name = tracer.metric_name(&h).unwrap();
            tracer.record_metrics(&Ended {
                name,
                kind: SpanKind::Client,
                cluster_name: Some(clusters[j % 2]),
                status: Some(status),
                response_flags: if status == 0 { 0x10 } else { 0 },
                duration_ns: (i % 20_000) * 1_000_000,
                ..Ended::default()
            });
        }
        export_due(exporter, i);
        if i.is_multiple_of(100) {
            let m = tracer.metrics.as_mut().unwrap();
            assert_eq!(m.collect(&header, i, 65_536, &mut requests), 1);
        }
    };
    for i in 0..2_000u64 {
        round(&mut tracer, &mut exporter, i);
    }
    let before = tracer.metrics.as_ref().unwrap().recorded;
    let allocs = allocations(|| {
        for i in 0..10_000u64 {
            round(&mut tracer, &mut exporter, i);
        }
    });
    assert_eq!(allocs, 0, "allocations recording RED metrics");
    assert_eq!(tracer.metrics.as_ref().unwrap().recorded - before, 50_000);
}
