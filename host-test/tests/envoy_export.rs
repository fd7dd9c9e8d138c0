//! The export pipeline inside real Envoy: OTLP/HTTP and OTLP/gRPC with and without gzip
//! (exact spans), gRPC retry statuses, the singleton exporter batching across two workers,
//! and collector faults under load. Every wait is a bounded poll.

mod support;

use std::time::Duration;

use support::wait_log;

use meshtrace_host_test::envoy::{envoy_binary, free_port, wasm_path, Envoy, EnvoyVars};
use meshtrace_host_test::faults::{self, Deployment, Fault, FAULT_MAX_QUEUE_BYTES};
use meshtrace_host_test::grpc_sink::{GrpcMode, GrpcSink};
use meshtrace_host_test::sink::{OtlpSink, Received, SinkMode, Upstream};
use opentelemetry_proto::tonic::trace::v1::Span;

const WAIT: Duration = Duration::from_secs(15);

/// Envoy on `template`.
fn envoy(
    template: &str,
    collector_port: u16,
    configure: impl FnOnce(&mut EnvoyVars),
) -> (Envoy, Upstream) {
    let binary = envoy_binary().expect("locating Envoy");
    let upstream = Upstream::start().unwrap();
    let mut vars = EnvoyVars::new(
        wasm_path().unwrap(),
        upstream.addr.port(),
        collector_port,
        "",
    );
    configure(&mut vars);
    let e = Envoy::start(&binary, template, vars).expect("start Envoy");
    (e, upstream)
}

fn get(e: &Envoy, path: &str) {
    let r = e
        .request("GET", path, &[("user-agent", "export-e2e")])
        .unwrap();
    assert_eq!(r.status, 200, "{path}");
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn names(spans: &[Span]) -> Vec<String> {
    let mut n: Vec<String> = spans.iter().map(|s| s.name.clone()).collect();
    n.sort();
    n
}

/// Sampled = exported + dropped + queued, polled until it settles.
fn assert_balanced(e: &Envoy) {
    let (stats, ok) = faults::settle(e, WAIT);
    assert!(ok, "accounting invariant does not hold: {stats:?}");
}

#[test]
fn http_gzip_with_extra_headers_exact_spans() {
    let sink = OtlpSink::start(0).unwrap();
    let cfg = r#"{"service_name":"gz","collector":{"cluster":"otel_collector","compression":"gzip","headers":{"x-api-key":"s3cr3t-value","x-tenant":"t1"}},"batch":{"flush_interval_ms":100}}"#;
    let (e, _up) = envoy("per-worker.yaml", sink.addr.port(), |v| {
        v.plugin_config = cfg.into()
    });
    for p in ["/a", "/b", "/c"] {
        get(&e, p);
    }
    let spans = sink.wait_spans(3, WAIT);
    assert_eq!(names(&spans), ["GET /a", "GET /b", "GET /c"]);
    let reqs = sink.received();
    for r in &reqs {
        assert_eq!(header(r, "content-encoding"), Some("gzip"));
        assert_eq!(header(r, "content-type"), Some("application/x-protobuf"));
        assert_eq!(header(r, "x-api-key"), Some("s3cr3t-value"));
        assert_eq!(header(r, "x-tenant"), Some("t1"));
    }
    assert_eq!(e.wait_stat("meshtrace.spans_exported", 3, WAIT), 3);
    assert_eq!(e.stat("meshtrace.export_requests.ok"), reqs.len() as u64);
    let raw = e.stat("meshtrace.export_bytes.uncompressed");
    let sent = e.stat("meshtrace.export_bytes.sent");
    assert!(raw > 0 && sent > 0, "raw {raw}, sent {sent}");
    assert_balanced(&e);
    assert!(
        !e.log().contains("s3cr3t"),
        "a header value reached the log"
    );
}

#[test]
fn partial_success_and_garbage_replies() {
    let sink = OtlpSink::start(0).unwrap();
    let cfg = r#"{"collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":100}}"#;
    let (e, _up) = envoy("per-worker.yaml", sink.addr.port(), |v| {
        v.plugin_config = cfg.into()
    });
    // A partial success is a success: counted exported and rejected, not retried.
    sink.set_mode(SinkMode::Partial { rejected: 1 });
    get(&e, "/partial");
    assert_eq!(e.wait_stat("meshtrace.spans_rejected", 1, WAIT), 1);
    assert_eq!(e.stat("meshtrace.spans_exported"), 1);
    assert_eq!(e.stat("meshtrace.export_retries"), 0);
    wait_log(
        &e,
        "the collector rejected 1 span(s) in partial successes",
        WAIT,
    );
    // A 200 with a body that is not protobuf and nonsense headers is still a 200.
    sink.set_mode(SinkMode::Garbage);
    get(&e, "/garbage");
    assert_eq!(e.wait_stat("meshtrace.spans_exported", 2, WAIT), 2);
    sink.set_mode(SinkMode::Ok);
    get(&e, "/after");
    assert_eq!(e.wait_stat("meshtrace.spans_exported", 3, WAIT), 3);
    assert_eq!(
        names(&sink.spans()),
        ["GET /after", "GET /garbage", "GET /partial"]
    );
    assert_eq!(e.stat("meshtrace.spans_rejected"), 1);
    assert_eq!(e.stat("meshtrace.export_retries"), 0);
    assert_balanced(&e);
}

fn grpc_envoy(sink: &GrpcSink, compression: &str) -> (Envoy, Upstream) {
    let cfg = format!(
        r#"{{"service_name":"grpc","collector":{{"cluster":"otel_collector","protocol":"grpc","compression":"{compression}","headers":{{"x-api-key":"k"}}}},"batch":{{"flush_interval_ms":100}},"exporter":{{"retry":{{"initial_ms":100,"max_ms":400,"max_attempts":10}}}}}}"#
    );
    envoy("per-worker.yaml", sink.addr.port(), |v| {
        v.plugin_config = cfg;
        v.collector_http2 = true;
    })
}

#[test]
fn grpc_plain_and_gzip_exact_spans() {
    for compression in ["none", "gzip"] {
        let sink = GrpcSink::start(0).unwrap();
        let (e, _up) = grpc_envoy(&sink, compression);
        get(&e, "/one");
        get(&e, "/two");
        let spans = sink.wait_spans(2, WAIT);
        assert_eq!(names(&spans), ["GET /one", "GET /two"], "{compression}");
        for r in sink.received() {
            assert_eq!(header(&r, "content-type"), Some("application/grpc"));
            assert_eq!(header(&r, "te"), Some("trailers"));
            assert_eq!(header(&r, "x-api-key"), Some("k"));
            let enc = header(&r, "grpc-encoding");
            assert_eq!(enc, (compression == "gzip").then_some("gzip"));
        }
        assert_eq!(e.wait_stat("meshtrace.spans_exported", 2, WAIT), 2);
        assert_balanced(&e);
    }
}

#[test]
fn grpc_retryable_and_final_statuses() {
    let sink = GrpcSink::start(0).unwrap();
    let (e, _up) = grpc_envoy(&sink, "none");
    // UNAVAILABLE: retried until the receiver recovers, nothing lost.
    sink.set_mode(GrpcMode::Status {
        code: 14,
        retry_delay_ms: None,
    });
    get(&e, "/retried");
    assert!(e.wait_stat("meshtrace.export_requests.retryable", 2, WAIT) >= 2);
    sink.set_mode(GrpcMode::Ok);
    assert_eq!(names(&sink.wait_spans(1, WAIT)), ["GET /retried"]);
    assert_eq!(e.wait_stat("meshtrace.spans_exported", 1, WAIT), 1);
    assert!(e.stat("meshtrace.export_retries") >= 2);
    // RESOURCE_EXHAUSTED without RetryInfo is final: the batch is dropped and counted.
    sink.set_mode(GrpcMode::Status {
        code: 8,
        retry_delay_ms: None,
    });
    get(&e, "/dropped");
    assert_eq!(
        e.wait_stat("meshtrace.spans_dropped.export_failed", 1, WAIT),
        1
    );
    assert_eq!(e.stat("meshtrace.export_requests.failed"), 1);
    // RESOURCE_EXHAUSTED with RetryInfo is a throttle: retried after the given delay.
    sink.set_mode(GrpcMode::Status {
        code: 8,
        retry_delay_ms: Some(300),
    });
    let retryable = e.stat("meshtrace.export_requests.retryable");
    get(&e, "/throttled");
    assert!(e.wait_stat("meshtrace.export_requests.retryable", retryable + 1, WAIT) > retryable);
    sink.set_mode(GrpcMode::Ok);
    let spans = sink.wait_spans(2, WAIT);
    assert_eq!(names(&spans), ["GET /retried", "GET /throttled"]);
    assert_balanced(&e);
    wait_log(
        &e,
        "failed with gRPC status 14 (UNAVAILABLE), will retry",
        WAIT,
    );
    wait_log(
        &e,
        "failed with gRPC status 8 (RESOURCE_EXHAUSTED) (not retryable), 1 span(s) dropped",
        WAIT,
    );
}

#[test]
fn singleton_exports_for_both_workers() {
    const N: usize = 40;
    let sink = OtlpSink::start(0).unwrap();
    let filter = r#"{"collector":{"cluster":"unused_by_shared_queue_filters"},"batch":{"flush_interval_ms":100},"exporter":{"mode":"shared_queue"}}"#;
    // The singleton exports only full batches of N within the test's lifetime, so one export
    // request must hold every span, whichever worker served it.
    let exporter = format!(
        r#"{{"service_name":"one-exporter","collector":{{"cluster":"otel_collector"}},"batch":{{"max_batch":{N},"flush_interval_ms":600000}},"exporter":{{"mode":"singleton"}}}}"#
    );
    let (e, _up) = envoy("singleton.yaml", sink.addr.port(), |v| {
        v.plugin_config = filter.into();
        v.exporter_config = exporter;
        v.concurrency = 2;
    });
    let port = e.vars.listen_port;
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..N / 8 {
                    let p = format!("/w{c}-{i}");
                    let r = meshtrace_host_test::envoy::http_request(port, "GET", &p, &[], b"")
                        .unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let spans = sink.wait_spans(N, WAIT);
    assert_eq!(spans.len(), N);
    let reqs = sink.received();
    assert_eq!(reqs.len(), 1, "one export request from the singleton");
    assert_eq!(
        meshtrace_host_test::sink::spans_of(&reqs[0].request).len(),
        N
    );
    // Each worker served part of the load, so that one request carries spans of both.
    let per_worker: Vec<u64> = (0..2)
        .map(|w| {
            e.stats(&format!("worker_{w}.downstream_cx_total"))
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with("listener.") && k.contains(&format!("worker_{w}.")))
                .map(|(_, v)| *v)
                .sum()
        })
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 0 && (n as usize) < N),
        "connections per worker: {per_worker:?}"
    );
    assert_eq!(
        e.wait_stat("meshtrace.export_vms", 1, WAIT),
        1,
        "only the singleton exports"
    );
    assert_eq!(
        e.wait_stat("meshtrace.spans_exported", N as u64, WAIT),
        N as u64
    );
    let res = reqs[0].request.resource_spans[0].resource.as_ref().unwrap();
    assert!(format!("{res:?}").contains("one-exporter"));
    assert_balanced(&e);
}

#[test]
fn singleton_absent_drops_and_counts() {
    // A shared-queue filter without its singleton: requests flow, spans are counted dropped.
    let filter = r#"{"collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":100},"exporter":{"mode":"shared_queue"}}"#;
    let (e, _up) = envoy("per-worker.yaml", free_port(), |v| {
        v.plugin_config = filter.into()
    });
    get(&e, "/x");
    get(&e, "/y");
    assert_eq!(
        e.wait_stat("meshtrace.spans_dropped.export_failed", 2, WAIT),
        2
    );
    assert_balanced(&e);
    assert_eq!(e.stat("meshtrace.export_vms"), 0);
}

/// One fault scenario: every request succeeds, memory stays bounded, the invariant holds, and
/// spans flow after recovery.
fn fault(f: Fault, d: Deployment) {
    let o = faults::run(f, d, Duration::from_secs(6), 4).expect("scenario");
    assert_eq!(o.failed_requests, 0, "{}: client requests failed", f.name());
    assert!(
        o.latencies_us.len() > 50,
        "{}: only {} requests",
        f.name(),
        o.latencies_us.len()
    );
    assert!(o.balanced, "{}: invariant broken: {:?}", f.name(), o.stats);
    assert!(
        o.spans_after_recovery > 0,
        "{}: no spans after recovery: {:?}",
        f.name(),
        o.stats
    );
    assert!(
        o.max_queue_bytes_seen <= FAULT_MAX_QUEUE_BYTES,
        "{}: queue held {} bytes",
        f.name(),
        o.max_queue_bytes_seen
    );
    // The queue is bounded at 1 MiB plus two batches; allow Envoy's own churn on top.
    let growth = o.memory_after.saturating_sub(o.memory_before);
    assert!(growth < 32 << 20, "{}: heap grew {growth} bytes", f.name());
    if f != Fault::Healthy {
        let failures = o.stat("meshtrace.export_requests.retryable")
            + o.stat("meshtrace.export_requests.failed");
        assert!(
            failures > 0,
            "{}: no failed export seen: {:?}",
            f.name(),
            o.stats
        );
    }
}

#[test]
fn fault_collector_absent_at_start() {
    fault(Fault::AbsentAtStart, Deployment::PerWorker);
}

#[test]
fn fault_collector_killed_and_restarted() {
    fault(Fault::KilledAndRestarted, Deployment::PerWorker);
}

#[test]
fn fault_503_with_retry_after() {
    fault(Fault::Throttled, Deployment::PerWorker);
}

#[test]
fn fault_collector_never_answers() {
    fault(Fault::NeverAnswers, Deployment::PerWorker);
}

#[test]
fn fault_singleton_collector_killed_and_restarted() {
    fault(Fault::KilledAndRestarted, Deployment::Singleton);
}

#[test]
fn fault_singleton_collector_never_answers() {
    fault(Fault::NeverAnswers, Deployment::Singleton);
}
