//! Collector trouble: the call refused, a 5xx, a reset, a timeout, a collector that never
//! answers. Requests must not notice; drops are counted; the log says so once per interval.

use meshtrace_host_test::host::{load_filter, Host, HostBuilder, LogLevel, Req};

const CONFIG: &str = r#"{"collector": {"cluster": "otel_collector", "timeout_ms": 300}, "batch": {"max_queue": 8, "max_batch": 8, "flush_interval_ms": 1000}}"#;

fn start(b: HostBuilder) -> Host {
    b.configure(CONFIG).unwrap()
}

/// Requests behave exactly as with a healthy collector.
fn unaffected(h: &mut Host, n: usize) {
    for _ in 0..n {
        let ex = h.request(Req::get("/x")).unwrap();
        assert_eq!(ex.local_response, None);
        assert_eq!(ex.paused_in, None);
        assert_eq!(ex.upstream_header("traceparent").map(str::len), Some(55));
    }
}

fn warnings(h: &Host) -> Vec<String> {
    h.log_messages(LogLevel::Warn)
}

#[test]
fn refused_call() {
    // The host knows no cluster by that name, so `proxy_http_call` answers BadArgument.
    let mut h = start(load_filter().clusters(&["some_other_cluster"]));
    unaffected(&mut h, 3);
    h.advance(1000).unwrap();
    assert_eq!(h.http_calls().len(), 0);
    assert_eq!(
        warnings(&h),
        vec!["meshtrace: 1 export request(s) failed, 3 span(s) dropped (last: the host refused the call; is collector.cluster a defined cluster?)"]
    );
    assert_eq!(h.metric("meshtrace.spans_dropped.export_failed"), Some(3));
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(1));
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(0));
}

#[test]
fn many_failures_one_line_per_interval() {
    let mut h = load_filter()
        .clusters(&["some_other_cluster"])
        .configure(r#"{"collector": {"cluster": "otel_collector"}, "batch": {"max_queue": 8, "max_batch": 2, "flush_interval_ms": 1000}}"#)
        .unwrap();
    unaffected(&mut h, 6);
    // Three full batches go (and fail) on the 1 ms tick; the summary waits for the interval.
    h.advance(1).unwrap();
    assert_eq!(warnings(&h), Vec::<String>::new());
    h.advance(1000).unwrap();
    let line = "meshtrace: 3 export request(s) failed, 6 span(s) dropped (last: the host refused the call; is collector.cluster a defined cluster?)";
    assert_eq!(warnings(&h), vec![line]);
    // Quiet intervals log nothing more.
    h.advance(5000).unwrap();
    assert_eq!(warnings(&h), vec![line]);
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(3));
}

/// Flushes 2 spans, lets `fail` end the call, and returns the warning logged at the next tick.
fn failed_export(fail: impl FnOnce(&mut Host, u32)) -> (Host, Vec<String>) {
    let mut h = start(load_filter());
    unaffected(&mut h, 2);
    h.advance(1000).unwrap();
    let token = h.pending_http_calls()[0].token;
    fail(&mut h, token);
    unaffected(&mut h, 1);
    // Metrics reach the host as deltas on the tick, not before.
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(0));
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(1));
    assert_eq!(h.metric("meshtrace.spans_dropped.export_failed"), Some(2));
    let w = warnings(&h);
    (h, w)
}

#[test]
fn server_error() {
    let (_, w) = failed_export(|h, t| h.answer(t, 503, b"unavailable").unwrap());
    assert_eq!(
        w,
        vec!["meshtrace: 1 export request(s) failed, 2 span(s) dropped (last: HTTP 503)"]
    );
}

#[test]
fn connection_reset() {
    let (_, w) = failed_export(|h, t| h.fail(t).unwrap());
    assert_eq!(
        w,
        vec!["meshtrace: 1 export request(s) failed, 2 span(s) dropped (last: no response (reset, refused or timed out))"]
    );
}

#[test]
fn timeout() {
    // Envoy's async client answers a call that outlives its timeout with a local 504.
    let (h, w) = failed_export(|h, _| {
        h.advance(299).unwrap();
        assert_eq!(h.pending_http_calls().len(), 1);
        h.advance(1).unwrap();
        assert_eq!(h.pending_http_calls().len(), 0);
    });
    assert_eq!(
        w,
        vec!["meshtrace: 1 export request(s) failed, 2 span(s) dropped (last: HTTP 504)"]
    );
    // The span of the request made during the outage went out with the next export.
    assert_eq!(h.http_calls().len(), 2);
}

#[test]
fn silent_collector_keeps_the_queue_bounded() {
    let mut h = load_filter()
        .configure(r#"{"collector": {"cluster": "otel_collector", "timeout_ms": 5000}, "batch": {"max_queue": 8, "max_batch": 8, "flush_interval_ms": 1000}}"#)
        .unwrap();
    for _ in 0..2 {
        unaffected(&mut h, 20);
        h.advance(1).unwrap();
    }
    // Each burst: 8 spans queued and sent, 12 dropped at the bound.
    let calls = h.pending_http_calls();
    assert_eq!(calls.len(), 2);
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.spans_started"), Some(40));
    assert_eq!(h.metric("meshtrace.spans_dropped.queue_full"), Some(24));
    assert_eq!(
        warnings(&h),
        vec!["meshtrace: 24 span(s) dropped: queue full"]
    );
    // Both calls time out; their spans are counted as failed exports.
    h.advance(5000).unwrap();
    assert_eq!(h.pending_http_calls().len(), 0);
    assert_eq!(h.metric("meshtrace.spans_dropped.export_failed"), Some(16));
    // They time out at 5001 and 5002 ms; the 5002 ms tick runs before that timeout fires, so
    // each failure lands in its own interval's summary.
    let timed_out = "meshtrace: 1 export request(s) failed, 8 span(s) dropped (last: HTTP 504)";
    assert_eq!(
        warnings(&h),
        vec![
            "meshtrace: 24 span(s) dropped: queue full",
            timed_out,
            timed_out
        ]
    );
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(0));
}
