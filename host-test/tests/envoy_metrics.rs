//! RED metrics in real Envoy: an outbound sidecar splitting traffic 90/10 between a stable and
//! a faulty canary subset (clusters named as Istio names them, `traffic` rules naming the
//! releases by subset), at 1 % trace sampling. The load generator counts what it got back per
//! release (each upstream names its release in `x-release`, the canary fails every other
//! request); the exported OTLP metrics, decoded by `opentelemetry-proto`, must give exactly
//! those counts, while the spans, a 1 % sample, cannot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshtrace_host_test::envoy::{envoy_binary, wasm_path, Envoy, EnvoyVars};
use meshtrace_host_test::sink::{OtlpSink, ReceivedMetrics, Upstream};
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;

const WAIT: Duration = Duration::from_secs(30);

fn plugin_config() -> String {
    serde_json::json!({
        "collector": {"cluster": "otel_collector"},
        "direction": "outbound",
        "batch": {"flush_interval_ms": 200},
        "sampling": {"ratio": 0.01},
        "routes": ["/items/{id}"],
        "traffic": {"rules": [
            {"match": "subset", "value": "v1", "release": "stable"},
            {"match": "subset", "value": "v2", "release": "canary", "canary": true}
        ]},
        "metrics": {"enabled": true}
    })
    .to_string()
}

struct Canary {
    sink: OtlpSink,
    envoy: Envoy,
    _stable: Upstream,
    _canary: Upstream,
}

impl Canary {
    fn start(concurrency: u32) -> Self {
        let binary = envoy_binary().expect("Envoy lookup");
        let sink = OtlpSink::start(0).unwrap();
        let stable = Upstream::start_release("stable", None).unwrap();
        // The faulty canary: every other request fails.
        let canary = Upstream::start_release("canary", Some(2)).unwrap();
        let mut vars = EnvoyVars::new(
            wasm_path().unwrap(),
            stable.addr.port(),
            sink.addr.port(),
            &plugin_config(),
        );
        vars.concurrency = concurrency;
        vars.set("UPSTREAM2_PORT", canary.addr.port());
        let envoy = Envoy::start(&binary, "canary-metrics.yaml", vars).expect("start Envoy");
        Self {
            sink,
            envoy,
            _stable: stable,
            _canary: canary,
        }
    }
}

/// What the load generator saw per release: (requests, failed requests).
type Truth = BTreeMap<String, (i64, i64)>;

/// Sends `n` requests from `clients` parallel clients, one connection each, tallying the
/// releases that answered.
fn load(port: u16, n: usize, clients: usize) -> Truth {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut truth = Truth::new();
                for i in (c..n).step_by(clients) {
                    let r = meshtrace_host_test::envoy::http_request(
                        port,
                        "GET",
                        &format!("/items/{i}?page=2"),
                        &[],
                        b"",
                    )
                    .expect("request through Envoy");
                    let release = r
                        .headers
                        .iter()
                        .find(|(k, _)| k == "x-release")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| panic!("no x-release: {r:?}"));
                    let e = truth.entry(release).or_default();
                    e.0 += 1;
                    e.1 += i64::from(r.status >= 500);
                }
                truth
            })
        })
        .collect();
    let mut total = Truth::new();
    for t in threads {
        for (k, (calls, errors)) in t.join().unwrap() {
            let e = total.entry(k).or_default();
            e.0 += calls;
            e.1 += errors;
        }
    }
    total
}

fn attr(kv: &[KeyValue], key: &str) -> Option<String> {
    kv.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.clone()) {
            Some(V::StringValue(s)) => Some(s),
            Some(V::BoolValue(b)) => Some(b.to_string()),
            _ => None,
        }
    })
}

/// One exported series point: its attributes, calls, and the request's interval.
struct Point {
    attributes: Vec<KeyValue>,
    calls: i64,
    start: u64,
    end: u64,
}

/// The `calls` points of every export, checking each against its `duration` histogram
/// point: same attributes and interval, count = calls, buckets summing to the count.
fn points(requests: &[ReceivedMetrics]) -> Vec<Point> {
    let mut out = Vec::new();
    for r in requests {
        assert_eq!(r.path, "/v1/metrics");
        let sm = &r.request.resource_metrics[0].scope_metrics[0];
        let (Some(Data::Sum(sum)), Some(Data::Histogram(hist))) =
            (&sm.metrics[0].data, &sm.metrics[1].data)
        else {
            panic!("calls Sum and duration Histogram: {sm:?}")
        };
        assert_eq!(sm.metrics[0].name, "traces.span.metrics.calls");
        assert_eq!(sm.metrics[1].name, "traces.span.metrics.duration");
        assert_eq!(sm.metrics[1].unit, "ms");
        assert_eq!(sum.aggregation_temporality, 1, "delta");
        assert!(sum.is_monotonic);
        assert_eq!(hist.aggregation_temporality, 1, "delta");
        for (n, h) in sum.data_points.iter().zip(&hist.data_points) {
            let Some(N::AsInt(calls)) = n.value else {
                panic!("int point {n:?}")
            };
            assert_eq!(n.attributes, h.attributes);
            assert_eq!(h.count, calls as u64);
            assert_eq!(h.bucket_counts.len(), 17);
            assert_eq!(h.bucket_counts.iter().sum::<u64>(), h.count);
            assert_eq!(h.explicit_bounds.len(), 16);
            assert!(h.min.unwrap() <= h.max.unwrap());
            out.push(Point {
                attributes: n.attributes.clone(),
                calls,
                start: n.start_time_unix_nano,
                end: n.time_unix_nano,
            });
        }
    }
    out
}

/// Exported (calls, error calls) per `mesh.release`.
fn exported(points: &[Point]) -> Truth {
    let mut t = Truth::new();
    for p in points {
        let release =
            attr(&p.attributes, "mesh.release").expect("every served request has a release");
        let e = t.entry(release).or_default();
        e.0 += p.calls;
        if attr(&p.attributes, "status.code").as_deref() == Some("STATUS_CODE_ERROR") {
            e.1 += p.calls;
        }
    }
    t
}

/// Waits until the exported calls add up to `n` (then a little longer, to see none too many).
fn wait_for_calls(sink: &OtlpSink, n: i64) -> Vec<ReceivedMetrics> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = sink.metric_requests();
        let total: i64 = points(&got).iter().map(|p| p.calls).sum();
        assert!(total <= n, "{total} calls exported for {n} requests");
        if total == n {
            std::thread::sleep(Duration::from_millis(600));
            return sink.metric_requests();
        }
        assert!(Instant::now() < deadline, "{total} of {n} calls exported");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn canary_metrics_count_every_request_per_release_at_one_percent_sampling() {
    let c = Canary::start(1);
    let n = 600;
    let truth = load(c.envoy.vars.listen_port, n, 4);
    let canary = truth["canary"];
    let stable = truth["stable"];
    assert_eq!(canary.0 + stable.0, n as i64);
    assert!(
        canary.0 > 0 && canary.1 > 0,
        "the canary served and failed: {truth:?}"
    );
    assert_eq!(stable.1, 0);

    let requests = wait_for_calls(&c.sink, n as i64);
    let points = points(&requests);
    // Exact, per release, against what the load generator saw.
    assert_eq!(exported(&points), truth);
    for p in &points {
        assert_eq!(
            attr(&p.attributes, "span.name").as_deref(),
            Some("GET /items/{id}")
        );
        assert_eq!(
            attr(&p.attributes, "span.kind").as_deref(),
            Some("SPAN_KIND_CLIENT")
        );
        let class = attr(&p.attributes, "http.response.status_class").unwrap();
        let error = attr(&p.attributes, "status.code").as_deref() == Some("STATUS_CODE_ERROR");
        assert_eq!(class == "5xx", error);
    }
    // The resource is the spans' resource.
    let resource = requests[0].request.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap();
    assert!(attr(&resource.attributes, "service.name").is_some());
    assert_eq!(c.envoy.stat("meshtrace.metrics.requests"), n as u64);
    assert_eq!(c.envoy.stat("meshtrace.metrics.series_overflow"), 0);
    assert_eq!(c.envoy.stat("meshtrace.metrics.export_requests.failed"), 0);
    assert_eq!(
        c.envoy.wait_stat(
            "meshtrace.metrics.export_requests.ok",
            requests.len() as u64,
            WAIT
        ),
        requests.len() as u64
    );

    // The spans are a 1 % sample: they cannot give these counts.
    let spans = c.sink.spans();
    let mut from_spans = Truth::new();
    for s in &spans {
        let release = s
            .attributes
            .iter()
            .find(|kv| kv.key == "mesh.release")
            .and_then(|kv| kv.value.as_ref()?.value.clone());
        if let Some(V::StringValue(r)) = release {
            let e = from_spans.entry(r).or_default();
            e.0 += 1;
            e.1 += i64::from(s.status.as_ref().is_some_and(|st| st.code == 2));
        }
    }
    eprintln!(
        "load generator {truth:?}; spans alone {from_spans:?} ({} spans)",
        spans.len()
    );
    assert_eq!(
        c.envoy.stat("meshtrace.spans_sampled"),
        spans.len() as u64,
        "every sampled span was exported"
    );
    assert!(
        spans.len() < n / 10,
        "{} spans for {n} requests",
        spans.len()
    );
    assert_ne!(from_spans, truth, "spans alone would give the counts");
}

#[test]
fn two_workers_export_exact_totals_one_writer_per_series() {
    let c = Canary::start(2);
    let n = 400;
    let truth = load(c.envoy.vars.listen_port, n, 8);
    let requests = wait_for_calls(&c.sink, n as i64);
    let points = points(&requests);
    assert_eq!(exported(&points), truth);
    assert_eq!(c.envoy.stat("meshtrace.metrics.requests"), n as u64);

    // Each export is one VM's: all its points carry the same `meshtrace.worker`, and each
    // VM's intervals follow each other (start = the previous export's end).
    let mut by_worker: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for r in &requests {
        let ps = self::points(std::slice::from_ref(r));
        let worker = attr(&ps[0].attributes, "meshtrace.worker").unwrap();
        for p in &ps {
            assert_eq!(
                attr(&p.attributes, "meshtrace.worker"),
                Some(worker.clone())
            );
            assert_eq!((p.start, p.end), (ps[0].start, ps[0].end));
        }
        by_worker
            .entry(worker)
            .or_default()
            .push((ps[0].start, ps[0].end));
    }
    assert_eq!(by_worker.len(), 2, "both workers served and exported");
    for intervals in by_worker.values_mut() {
        intervals.sort();
        for w in intervals.windows(2) {
            assert!(w[0].1 <= w[1].0, "intervals overlap: {intervals:?}");
        }
    }
}

/// Over OTLP/gRPC with gzip, through the same collector settings as the spans: tonic's
/// generated `MetricsService` server (an independent gRPC implementation) accepts the
/// metrics, and they still count every request exactly.
#[test]
fn metrics_export_over_grpc_with_gzip_to_a_tonic_metrics_service() {
    use meshtrace_host_test::grpc_sink::GrpcSink;
    let binary = envoy_binary().expect("Envoy lookup");
    let sink = GrpcSink::start(0).unwrap();
    let stable = Upstream::start_release("stable", None).unwrap();
    let canary = Upstream::start_release("canary", Some(2)).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&plugin_config()).unwrap();
    cfg["collector"] = serde_json::json!({
        "cluster": "otel_collector", "protocol": "grpc", "compression": "gzip",
        "headers": {"x-api-key": "k"}
    });
    let mut vars = EnvoyVars::new(
        wasm_path().unwrap(),
        stable.addr.port(),
        sink.addr.port(),
        &cfg.to_string(),
    );
    vars.collector_http2 = true;
    vars.set("UPSTREAM2_PORT", canary.addr.port());
    let envoy = Envoy::start(&binary, "canary-metrics.yaml", vars).expect("start Envoy");
    let n = 100;
    let truth = load(envoy.vars.listen_port, n, 2);
    let deadline = Instant::now() + WAIT;
    let requests = loop {
        let got = sink.metric_requests();
        let total: i64 = got
            .iter()
            .flat_map(|r| meshtrace_host_test::sink::metrics_of(&r.request))
            .filter_map(|m| match m.data {
                Some(Data::Sum(s)) => Some(s.data_points),
                _ => None,
            })
            .flatten()
            .map(|p| match p.value {
                Some(N::AsInt(v)) => v,
                _ => 0,
            })
            .sum();
        if total >= n as i64 {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{total} of {n} calls exported\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for r in &requests {
        assert_eq!(
            r.path,
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        );
        assert!(r.headers.iter().any(|(k, v)| k == "x-api-key" && v == "k"));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "grpc-encoding" && v == "gzip"));
    }
    // The HTTP sink's checks apply unchanged to what tonic decoded.
    let as_http: Vec<ReceivedMetrics> = requests
        .into_iter()
        .map(|r| ReceivedMetrics {
            path: "/v1/metrics".into(),
            ..r
        })
        .collect();
    assert_eq!(exported(&points(&as_http)), truth);
    // The stats count tonic's OK replies (trailers `grpc-status: 0`), none failed.
    assert!(envoy.wait_stat("meshtrace.metrics.export_requests.ok", 1, WAIT) >= 1);
    assert_eq!(envoy.stat("meshtrace.metrics.export_requests.failed"), 0);
}

/// Requests an earlier filter answers (a fault abort ahead of meshtrace, as Istio places the
/// fault filter) reach meshtrace only in `on_log`; they are counted too, as errors.
#[test]
fn requests_aborted_before_the_filter_are_counted() {
    let c = Canary::start(1);
    let port = c.envoy.vars.listen_port;
    let mut aborted = 0;
    for i in 0..20 {
        let r = meshtrace_host_test::envoy::http_request(
            port,
            "GET",
            &format!("/items/{i}"),
            &[("x-envoy-fault-abort-request", "503")],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 503);
        aborted += 1;
    }
    let truth = load(port, 80, 2);
    let served: i64 = truth.values().map(|t| t.0).sum();
    let failed: i64 = truth.values().map(|t| t.1).sum();
    let requests = wait_for_calls(&c.sink, served + aborted);
    let points = points(&requests);
    let errors: i64 = points
        .iter()
        .filter(|p| attr(&p.attributes, "status.code").as_deref() == Some("STATUS_CODE_ERROR"))
        .map(|p| p.calls)
        .sum();
    assert_eq!(errors, failed + aborted);
    let fives: i64 = points
        .iter()
        .filter(|p| attr(&p.attributes, "http.response.status_class").as_deref() == Some("5xx"))
        .map(|p| p.calls)
        .sum();
    assert_eq!(fives, failed + aborted);
    assert_eq!(
        c.envoy.stat("meshtrace.metrics.requests"),
        (served + aborted) as u64
    );
}
