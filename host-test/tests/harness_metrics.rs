//! RED metrics from the compiled filter in the wasmtime host: every request counted, sampled or
//! not, exported on the flush interval as an OTLP `ExportMetricsServiceRequest` (decoded here
//! by `opentelemetry-proto`'s prost types), with delta intervals that follow each other and one
//! writer per series across worker VMs.

use meshtrace_host_test::host::{load_filter, Host, HttpCall, Req};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
use prost::Message;

const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

fn host(workers: usize, extra: &str) -> Host {
    load_filter()
        .workers(workers)
        .configure(&format!(
            r#"{{"collector": {{"cluster": "otel_collector"}}, "direction": "outbound",
                "traffic": {{"rules": [
                    {{"match": "subset", "value": "v1", "release": "stable"}},
                    {{"match": "subset", "value": "v2", "release": "canary"}}]}},
                "routes": ["/items/{{id}}"],
                "metrics": {{"enabled": true{extra}}}}}"#
        ))
        .unwrap()
}

fn call(subset: &str, status: i64, ms: i64, traceparent: &str) -> Req {
    Req::get("/items/42?x=1")
        .header("traceparent", traceparent)
        .property(
            "xds.cluster_name",
            format!("outbound|80|{subset}|backend.default.svc.cluster.local"),
        )
        .property("response.code", status)
        .property("response.flags", 0i64)
        .property("request.duration", ms * 1_000_000)
}

/// A flat view of one point: its attributes and its calls count or histogram.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    attrs: Vec<(String, String)>,
    start: u64,
    end: u64,
    calls: i64,
}

fn attrs(kv: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, String)> {
    kv.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(V::StringValue(s)) => s,
                Some(V::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

fn metrics_calls(h: &Host) -> Vec<HttpCall> {
    h.pending_http_calls()
        .into_iter()
        .filter(|c| c.headers.get(":path") == Some("/v1/metrics"))
        .collect()
}

/// A filter exporting metrics over OTLP/gRPC after one unsampled request, and its one pending
/// `MetricsService/Export` call.
fn one_grpc_metrics_export() -> (Host, Vec<HttpCall>) {
    let mut h = load_filter()
        .configure(
            r#"{"collector": {"cluster": "otel_collector", "protocol": "grpc"},
                "direction": "outbound", "metrics": {"enabled": true}}"#,
        )
        .unwrap();
    h.request(call("v1", 200, 3, UNSAMPLED)).unwrap();
    h.advance(1000).unwrap();
    let calls: Vec<HttpCall> = h
        .pending_http_calls()
        .into_iter()
        .filter(|c| {
            c.headers.get(":path")
                == Some("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        })
        .collect();
    assert_eq!(calls.len(), 1);
    (h, calls)
}

/// Decodes a metrics export and checks the histogram agrees with the counter point by point.
fn points(c: &HttpCall) -> Vec<Point> {
    let req = ExportMetricsServiceRequest::decode(&c.body[..]).expect("decodes with prost");
    let sm = &req.resource_metrics[0].scope_metrics[0];
    let (Some(Data::Sum(sum)), Some(Data::Histogram(hist))) =
        (&sm.metrics[0].data, &sm.metrics[1].data)
    else {
        panic!("calls and duration: {sm:?}")
    };
    assert_eq!(sm.metrics[0].name, "traces.span.metrics.calls");
    assert_eq!(sm.metrics[1].name, "traces.span.metrics.duration");
    assert_eq!(sum.data_points.len(), hist.data_points.len());
    sum.data_points
        .iter()
        .zip(&hist.data_points)
        .map(|(n, h)| {
            let Some(N::AsInt(calls)) = n.value else {
                panic!("int point: {n:?}")
            };
            assert_eq!(n.attributes, h.attributes);
            assert_eq!(h.count, calls as u64);
            assert_eq!(h.bucket_counts.iter().sum::<u64>(), h.count);
            assert_eq!(
                (h.start_time_unix_nano, h.time_unix_nano),
                (n.start_time_unix_nano, n.time_unix_nano)
            );
            Point {
                attrs: attrs(&n.attributes),
                start: n.start_time_unix_nano,
                end: n.time_unix_nano,
                calls,
            }
        })
        .collect()
}

fn calls_where(points: &[Point], release: &str, status: &str) -> i64 {
    points
        .iter()
        .filter(|p| get(&p.attrs, "mesh.release") == Some(release))
        .filter(|p| get(&p.attrs, "status.code") == Some(status))
        .map(|p| p.calls)
        .sum()
}

#[test]
fn every_request_is_counted_sampled_or_not_and_intervals_follow_each_other() {
    let mut h = host(1, "");
    let mut sent = 0;
    for i in 0..20 {
        let tp = if i % 10 == 0 { SAMPLED } else { UNSAMPLED };
        let (subset, status) = if i % 4 == 0 { ("v2", 500) } else { ("v1", 200) };
        h.request(call(subset, status, 3, tp)).unwrap();
        sent += 1;
    }
    assert_eq!(sent, 20);
    h.advance(1000).unwrap();
    let calls = metrics_calls(&h);
    assert_eq!(calls.len(), 1, "one metrics export per interval");
    assert_eq!(
        calls[0].headers.get("content-type"),
        Some("application/x-protobuf")
    );
    let first = points(&calls[0]);
    // 5 canary requests, all 500 (errors on a CLIENT span); 15 stable ones, all 200.
    assert_eq!(calls_where(&first, "canary", "STATUS_CODE_ERROR"), 5);
    assert_eq!(calls_where(&first, "canary", "STATUS_CODE_UNSET"), 0);
    assert_eq!(calls_where(&first, "stable", "STATUS_CODE_UNSET"), 15);
    assert_eq!(calls_where(&first, "stable", "STATUS_CODE_ERROR"), 0);
    for p in &first {
        assert_eq!(get(&p.attrs, "span.name"), Some("GET /items/{id}"));
        assert_eq!(get(&p.attrs, "span.kind"), Some("SPAN_KIND_CLIENT"));
    }
    let canary = first
        .iter()
        .find(|p| get(&p.attrs, "mesh.release") == Some("canary"))
        .unwrap();
    assert_eq!(
        get(&canary.attrs, "http.response.status_class"),
        Some("5xx")
    );
    h.answer(calls[0].token, 200, b"").unwrap();

    // The next interval starts where the first ended.
    h.request(call("v1", 200, 3, UNSAMPLED)).unwrap();
    h.advance(1000).unwrap();
    let calls = metrics_calls(&h);
    assert_eq!(calls.len(), 1);
    let second = points(&calls[0]);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].calls, 1);
    assert_eq!(second[0].start, first[0].end);
    assert!(second[0].end > second[0].start);
    h.fail(calls[0].token).unwrap();
    // An interval without requests sends nothing.
    h.advance(1000).unwrap();
    assert!(metrics_calls(&h).is_empty());
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.metrics.requests"), Some(21));
    assert_eq!(h.metric("meshtrace.metrics.export_requests.ok"), Some(1));
    assert_eq!(
        h.metric("meshtrace.metrics.export_requests.failed"),
        Some(1)
    );
    assert_eq!(h.metric("meshtrace.metrics.series_overflow"), Some(0));
}

#[test]
fn series_beyond_max_series_go_to_the_overflow_series() {
    let mut h = host(1, r#", "max_series": 1"#);
    h.request(call("v1", 200, 3, UNSAMPLED)).unwrap();
    h.request(call("v2", 200, 3, UNSAMPLED)).unwrap();
    h.request(call("v2", 503, 3, UNSAMPLED)).unwrap();
    h.advance(1000).unwrap();
    let p = points(&metrics_calls(&h)[0]);
    assert_eq!(p.len(), 2);
    assert_eq!(get(&p[0].attrs, "mesh.release"), Some("stable"));
    assert_eq!(p[0].calls, 1);
    let worker = get(&p[0].attrs, "meshtrace.worker").unwrap().to_string();
    assert_eq!(
        p[1].attrs,
        [
            ("otel.metric.overflow".to_string(), "true".to_string()),
            ("meshtrace.worker".to_string(), worker),
        ]
    );
    assert_eq!(p[1].calls, 2);
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.metrics.series_overflow"), Some(2));
}

#[test]
fn two_workers_export_their_own_series_and_sum_to_the_exact_total() {
    let mut h = host(2, "");
    for i in 0..30 {
        let (subset, status) = if i % 3 == 0 { ("v2", 500) } else { ("v1", 200) };
        h.request(call(subset, status, 3, UNSAMPLED).on_worker(i % 2))
            .unwrap();
    }
    h.advance(1000).unwrap();
    let calls = metrics_calls(&h);
    assert_eq!(calls.len(), 2, "one export per worker VM");
    let all: Vec<Point> = calls.iter().flat_map(points).collect();
    assert_eq!(calls_where(&all, "canary", "STATUS_CODE_ERROR"), 10);
    assert_eq!(calls_where(&all, "stable", "STATUS_CODE_UNSET"), 20);
    // Each VM's points carry its own `meshtrace.worker`: no two writers share a series.
    let workers: Vec<String> = calls
        .iter()
        .map(|c| {
            let p = points(c);
            let w = get(&p[0].attrs, "meshtrace.worker").unwrap().to_string();
            assert!(p
                .iter()
                .all(|q| get(&q.attrs, "meshtrace.worker") == Some(w.as_str())));
            w
        })
        .collect();
    assert_ne!(workers[0], workers[1]);
}

#[test]
fn metrics_config_errors_name_the_field() {
    for (metrics, want) in [
        (
            r#"{"max_series": 0}"#,
            "metrics.max_series: must be between 1 and 100000, got 0",
        ),
        (
            r#"{"path": "v1/metrics"}"#,
            r#"metrics.path: must start with '/', got "v1/metrics""#,
        ),
        (r#"{"unit": "us"}"#, "metrics.unit"),
        (
            r#"{"path": "/v1/metrics\n"}"#,
            r#"metrics.path: must be visible ASCII (no space or control character), got "/v1/metrics\n""#,
        ),
        (
            r#"{"path": "/v1/my metrics"}"#,
            r#"metrics.path: must be visible ASCII (no space or control character), got "/v1/my metrics""#,
        ),
        (
            r#"{"enable": true}"#,
            "metrics.enable: unknown field `enable`, expected one of `enabled`, `path`, `unit`, `max_series`",
        ),
    ] {
        let json = format!(r#"{{"collector": {{"cluster": "c"}}, "metrics": {metrics}}}"#);
        let err = meshtrace::config::Config::from_json(json.as_bytes())
            .expect_err(metrics)
            .to_string();
        assert!(err.contains(want), "{err}");
    }
}

/// The Warn lines about metrics exports.
fn metrics_warnings(h: &Host) -> Vec<String> {
    h.log_messages(meshtrace_host_test::host::LogLevel::Warn)
        .into_iter()
        .filter(|m| m.contains("metrics export"))
        .collect()
}

#[test]
fn a_collector_refusing_metrics_is_counted_and_logged_once_per_interval_never_retried() {
    let mut h = host(1, "");
    // Three intervals, each exported once and refused: the collector has no metrics pipeline.
    for _ in 0..3 {
        h.request(call("v1", 200, 3, UNSAMPLED)).unwrap();
        h.advance(1000).unwrap();
        let calls = metrics_calls(&h);
        assert_eq!(calls.len(), 1, "one request per interval: {calls:?}");
        h.answer(calls[0].token, 404, b"404 page not found")
            .unwrap();
        assert!(
            metrics_calls(&h).is_empty(),
            "a refused interval is not sent again"
        );
    }
    // The first refusal is logged on the next tick; the two after it within the log interval
    // wait for one summary line.
    assert_eq!(
        metrics_warnings(&h),
        [
            "meshtrace: 1 metrics export request(s) failed, the last with HTTP 404; \
          not retried, their intervals' points are dropped"
        ]
    );
    h.advance(5000).unwrap();
    assert_eq!(
        metrics_warnings(&h)[1..],
        [
            "meshtrace: 2 metrics export request(s) failed, the last with HTTP 404; \
          not retried, their intervals' points are dropped"
        ]
    );
    assert!(
        metrics_calls(&h).is_empty(),
        "nothing recorded since: nothing sent"
    );
    let sent = h
        .http_calls()
        .iter()
        .filter(|c| c.headers.get(":path") == Some("/v1/metrics"))
        .count();
    assert_eq!(sent, 3);
    assert_eq!(
        h.metric("meshtrace.metrics.export_requests.failed"),
        Some(3)
    );
    assert_eq!(h.metric("meshtrace.metrics.export_requests.ok"), Some(0));
    // Nothing new: no further line.
    h.advance(10_000).unwrap();
    assert_eq!(metrics_warnings(&h).len(), 2);
}

#[test]
fn a_refused_grpc_metrics_export_is_logged_with_its_status() {
    use meshtrace_host_test::host::HeaderMap;
    let (mut h, calls) = one_grpc_metrics_export();
    // Trailers-only: a collector without a metrics service answers UNIMPLEMENTED.
    let headers = HeaderMap::from_pairs(&[
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "12"),
    ]);
    h.answer_with(calls[0].token, headers, b"", HeaderMap::new())
        .unwrap();
    h.advance(1000).unwrap();
    assert_eq!(
        metrics_warnings(&h),
        [
            "meshtrace: 1 metrics export request(s) failed, the last with gRPC status 12 \
          (UNIMPLEMENTED); not retried, their intervals' points are dropped"
        ]
    );
    assert_eq!(
        h.metric("meshtrace.metrics.export_requests.failed"),
        Some(1)
    );
}

#[test]
fn shared_queue_filters_export_their_metrics_themselves_to_their_collector_cluster() {
    // Spans go to the singleton through the shared queue; the metrics do not: each worker
    // sends its interval to the filter's own `collector` (so it must name a defined cluster).
    let mut h = load_filter()
        .configure(
            r#"{"collector": {"cluster": "otel_collector"}, "direction": "outbound",
                "exporter": {"mode": "shared_queue"}, "metrics": {"enabled": true}}"#,
        )
        .unwrap();
    h.request(call("v1", 200, 3, SAMPLED)).unwrap();
    h.advance(1000).unwrap();
    let calls = metrics_calls(&h);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, "otel_collector");
    let p = points(&calls[0]);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].calls, 1);
    h.answer(calls[0].token, 200, b"").unwrap();
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.metrics.export_requests.ok"), Some(1));
    // No span export left this worker.
    assert!(h
        .http_calls()
        .iter()
        .all(|c| c.headers.get(":path") == Some("/v1/metrics")));
}

#[test]
fn overflow_series_of_two_workers_are_two_writers_each_with_its_worker() {
    // Both VMs overflow in the same interval: without `meshtrace.worker` their overflow
    // points would share one attribute set, and a backend would keep one of the two.
    let mut h = host(2, r#", "max_series": 1"#);
    for worker in 0..2 {
        h.request(call("v1", 200, 3, UNSAMPLED).on_worker(worker))
            .unwrap();
        for _ in 0..=worker {
            h.request(call("v2", 503, 3, UNSAMPLED).on_worker(worker))
                .unwrap();
        }
    }
    h.advance(1000).unwrap();
    let calls = metrics_calls(&h);
    assert_eq!(calls.len(), 2, "one export per worker VM");
    let mut overflow: Vec<(Vec<(String, String)>, i64)> = Vec::new();
    for c in &calls {
        let p = points(c);
        assert_eq!(p.len(), 2);
        let worker = get(&p[0].attrs, "meshtrace.worker").unwrap().to_string();
        assert_eq!(
            p[1].attrs,
            [
                ("otel.metric.overflow".to_string(), "true".to_string()),
                ("meshtrace.worker".to_string(), worker),
            ]
        );
        overflow.push((p[1].attrs.clone(), p[1].calls));
    }
    assert_ne!(
        overflow[0].0, overflow[1].0,
        "one writer per overflow series"
    );
    let mut counts: Vec<i64> = overflow.iter().map(|(_, n)| *n).collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2]);
}

#[test]
fn an_interval_larger_than_max_export_bytes_goes_out_in_bounded_requests_one_per_tick() {
    let mut h = load_filter()
        .configure(
            r#"{"collector": {"cluster": "otel_collector"}, "direction": "outbound",
                "traffic": {"rules": [
                    {"match": "subset", "value": "v1", "release": "stable"},
                    {"match": "subset", "value": "v2", "release": "canary"}]},
                "batch": {"max_export_bytes": 1024},
                "metrics": {"enabled": true}}"#,
        )
        .unwrap();
    // Six series (two releases by three status classes), 1 + 2 + ... + 6 requests.
    let mut n = 0;
    for subset in ["v1", "v2"] {
        for status in [200, 404, 503] {
            n += 1;
            for _ in 0..n {
                h.request(call(subset, status, 3, UNSAMPLED)).unwrap();
            }
        }
    }
    // The interval ends: its first request goes out on that tick, each next one a tick
    // (1 ms) later. A pair of points (a sum and a 17-bucket histogram, 6 attributes each)
    // takes about 600 bytes, so each request carries one series.
    h.advance(1000).unwrap();
    assert_eq!(metrics_calls(&h).len(), 1);
    for sent in 2..=6 {
        h.advance(1).unwrap();
        assert_eq!(metrics_calls(&h).len(), sent);
    }
    h.advance(1).unwrap();
    let calls = metrics_calls(&h);
    let per_request: Vec<usize> = calls.iter().map(|c| points(c).len()).collect();
    assert_eq!(per_request, [1; 6]);
    for c in &calls {
        assert!(c.body.len() <= 1024, "{} bytes", c.body.len());
    }
    let all: Vec<Point> = calls.iter().flat_map(points).collect();
    assert_eq!(all.iter().map(|p| p.calls).sum::<i64>(), 21);
    let mut counts: Vec<i64> = all.iter().map(|p| p.calls).collect();
    counts.sort();
    assert_eq!(counts, [1, 2, 3, 4, 5, 6]);
    // One interval for every point.
    assert!(all
        .windows(2)
        .all(|w| (w[0].start, w[0].end) == (w[1].start, w[1].end)));
}

/// An `ExportMetricsServiceResponse` with a partial success, as the prost types encode it.
fn partial_success(rejected: i64, message: &str) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::*;
    ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: message.into(),
        }),
    }
    .encode_to_vec()
}

#[test]
fn a_partial_success_counts_the_rejected_points_and_logs_the_collectors_message() {
    let mut h = host(1, "");
    // The collector stand-in accepts each interval but refuses some of its points.
    for (rejected, message) in [
        (3, "duration histogram: bucket bounds not increasing"),
        (2, "later"),
    ] {
        h.request(call("v1", 200, 3, UNSAMPLED)).unwrap();
        h.advance(1000).unwrap();
        let calls = metrics_calls(&h);
        assert_eq!(calls.len(), 1, "one request per interval: {calls:?}");
        h.answer(calls[0].token, 200, &partial_success(rejected, message))
            .unwrap();
    }
    h.advance(5000).unwrap();
    assert_eq!(h.metric("meshtrace.metrics.rejected_points"), Some(5));
    assert_eq!(h.metric("meshtrace.metrics.export_requests.ok"), Some(2));
    assert_eq!(
        h.metric("meshtrace.metrics.export_requests.failed"),
        Some(0)
    );
    // Once per log interval, with the first message of the interval: both partial successes
    // came before the first log tick after them.
    let lines: Vec<String> = h
        .log_messages(meshtrace_host_test::host::LogLevel::Warn)
        .into_iter()
        .filter(|m| m.contains("partial success"))
        .collect();
    assert_eq!(
        lines,
        [
            "meshtrace: the collector rejected 3 metric data point(s) in metrics export partial \
             successes; first message: \"duration histogram: bucket bounds not increasing\"",
            "meshtrace: the collector rejected 2 metric data point(s) in metrics export partial \
             successes; first message: \"later\""
        ]
    );
    // A full success adds nothing.
    h.request(call("v1", 200, 3, UNSAMPLED)).unwrap();
    h.advance(1000).unwrap();
    let calls = metrics_calls(&h);
    h.answer(calls[0].token, 200, b"").unwrap();
    h.advance(10_000).unwrap();
    assert_eq!(h.metric("meshtrace.metrics.rejected_points"), Some(5));
    assert_eq!(h.metric("meshtrace.metrics.export_requests.ok"), Some(3));
}

#[test]
fn a_grpc_partial_success_is_read_from_its_frame() {
    use meshtrace_host_test::host::HeaderMap;
    let (mut h, calls) = one_grpc_metrics_export();
    let message = partial_success(4, "too many series\n");
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let headers =
        HeaderMap::from_pairs(&[(":status", "200"), ("content-type", "application/grpc")]);
    let trailers = HeaderMap::from_pairs(&[("grpc-status", "0")]);
    h.answer_with(calls[0].token, headers, &frame, trailers)
        .unwrap();
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.metrics.rejected_points"), Some(4));
    assert_eq!(h.metric("meshtrace.metrics.export_requests.ok"), Some(1));
    // The collector's text is made printable before it reaches the log.
    assert!(h
        .log_messages(meshtrace_host_test::host::LogLevel::Warn)
        .contains(
            &"meshtrace: the collector rejected 4 metric data point(s) in metrics export partial \
              successes; first message: \"too many series\\n\""
                .to_string()
        ));
}
