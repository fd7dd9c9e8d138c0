//! Collector trouble on the virtual clock: the call refused, a 5xx, a reset, a timeout, a
//! throttle with `Retry-After`, gRPC statuses, a collector that never answers. Requests must not
//! notice; retries follow the backoff; drops are counted; the log says so once per interval.

use meshtrace_host_test::host::export::{decode, spans};
use meshtrace_host_test::host::{
    load_filter, HeaderMap, Host, HostBuilder, HttpCall, LogLevel, Req,
};

const CONFIG: &str = r#"{"collector": {"cluster": "otel_collector", "timeout_ms": 300}, "batch": {"max_queue": 8, "max_batch": 8, "flush_interval_ms": 1000}, "exporter": {"retry": {"initial_ms": 400, "max_ms": 4000, "max_attempts": 3}}}"#;

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

/// Advances 1 ms at a time until an export call is pending (at most `limit` ms); returns the
/// virtual ms waited and the call.
fn next_call(h: &mut Host, limit: u64) -> (u64, HttpCall) {
    for waited in 0..=limit {
        if let Some(c) = h.pending_http_calls().into_iter().next() {
            return (waited, c);
        }
        h.advance(1).unwrap();
    }
    panic!("no export call within {limit} ms");
}

fn span_count(c: &HttpCall) -> usize {
    spans(&decode(&c.body).unwrap()).len()
}

#[test]
fn refused_call_is_final() {
    // The host knows no cluster by that name, so `proxy_http_call` answers BadArgument.
    let mut h = start(load_filter().clusters(&["some_other_cluster"]));
    unaffected(&mut h, 3);
    h.advance(1000).unwrap();
    assert_eq!(h.http_calls().len(), 0);
    assert_eq!(h.metric("meshtrace.spans_dropped.export_failed"), Some(3));
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(1));
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(0));
    // The summary comes once per 5 s.
    h.advance(3999).unwrap();
    assert_eq!(warnings(&h), Vec::<String>::new());
    h.advance(1).unwrap();
    assert_eq!(
        warnings(&h),
        vec!["meshtrace: 1 export request(s) failed with the host refused the call; is collector.cluster a defined cluster? (not retryable), 3 span(s) dropped"]
    );
    h.advance(20_000).unwrap();
    assert_eq!(h.http_calls().len(), 0, "a refused call is not retried");
    assert_eq!(warnings(&h).len(), 1);
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
    h.advance(5000).unwrap();
    let line = "meshtrace: 3 export request(s) failed with the host refused the call; is collector.cluster a defined cluster? (not retryable), 6 span(s) dropped";
    assert_eq!(warnings(&h), vec![line]);
    // Quiet intervals log nothing more.
    h.advance(20_000).unwrap();
    assert_eq!(warnings(&h), vec![line]);
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(3));
}

/// Flushes 2 spans at 1000 ms, lets `fail` end the call, then checks the batch is sent again
/// after the first backoff (between half and all of `retry.initial_ms`, 400 ms), with a request
/// made during the outage unaffected, and that the retry's success exports everything.
fn retried_after(fail: impl FnOnce(&mut Host, u32), why: &str) {
    let mut h = start(load_filter());
    unaffected(&mut h, 2);
    h.advance(1000).unwrap();
    let first = h.pending_http_calls()[0].clone();
    fail(&mut h, first.token);
    unaffected(&mut h, 1);
    let (waited, again) = next_call(&mut h, 400);
    assert!((200..=400).contains(&waited), "retried after {waited} ms");
    assert_eq!(again.body, first.body, "the same batch again");
    h.answer(again.token, 200, b"").unwrap();
    // The request made during the outage goes with the next interval.
    h.advance(1000).unwrap();
    let (_, next) = next_call(&mut h, 1000);
    assert_eq!(span_count(&next), 1);
    h.answer(next.token, 200, b"").unwrap();
    h.advance(5000).unwrap();
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(3));
    assert_eq!(h.metric("meshtrace.export_requests.retryable"), Some(1));
    assert_eq!(h.metric("meshtrace.export_retries"), Some(1));
    assert_eq!(h.metric("meshtrace.spans_dropped.export_failed"), Some(0));
    assert_eq!(
        warnings(&h),
        vec![format!(
            "meshtrace: 1 export attempt(s) failed with {why}, will retry"
        )]
    );
}

#[test]
fn server_error_is_retried() {
    retried_after(|h, t| h.answer(t, 503, b"unavailable").unwrap(), "HTTP 503");
}

#[test]
fn connection_reset_is_retried() {
    retried_after(
        |h, t| h.fail(t).unwrap(),
        "no response (reset, refused or timed out)",
    );
}

#[test]
fn timeout_is_retried() {
    // Envoy's async client answers a call that outlives its timeout with a local 504.
    retried_after(
        |h, _| {
            h.advance(299).unwrap();
            assert_eq!(h.pending_http_calls().len(), 1);
            h.advance(1).unwrap();
            assert_eq!(h.pending_http_calls().len(), 0);
        },
        "HTTP 504",
    );
}

#[test]
fn client_error_is_final() {
    let mut h = start(load_filter());
    unaffected(&mut h, 2);
    h.advance(1000).unwrap();
    let t = h.pending_http_calls()[0].token;
    h.answer(t, 400, b"bad data").unwrap();
    h.advance(10_000).unwrap();
    assert_eq!(h.http_calls().len(), 1);
    assert_eq!(h.metric("meshtrace.spans_dropped.export_failed"), Some(2));
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(1));
}

#[test]
fn retry_after_is_honoured() {
    let mut h = start(load_filter());
    unaffected(&mut h, 2);
    h.advance(1000).unwrap();
    let t = h.pending_http_calls()[0].token;
    let headers = HeaderMap::from_pairs(&[
        (":status", "429".to_string()),
        ("retry-after", "3".to_string()),
    ]);
    h.answer_with(t, headers, b"", HeaderMap::new()).unwrap();
    h.advance(2999).unwrap();
    assert_eq!(h.pending_http_calls().len(), 0, "not before Retry-After");
    h.advance(1).unwrap();
    let again = h.pending_http_calls();
    assert_eq!(again.len(), 1);
    assert_eq!(span_count(&again[0]), 2);
}

#[test]
fn gives_up_after_max_attempts_with_growing_backoff() {
    let mut h = start(load_filter());
    unaffected(&mut h, 2);
    h.advance(1000).unwrap();
    let mut waits = Vec::new();
    let (_, mut call) = next_call(&mut h, 0);
    for attempt in 1..=3 {
        h.answer(call.token, 503, b"").unwrap();
        if attempt == 3 {
            break;
        }
        let (waited, c) = next_call(&mut h, 5000);
        waits.push(waited);
        call = c;
    }
    // Ceilings 400 then 800 ms; each wait is between half and all of its ceiling.
    assert!((200..=400).contains(&waits[0]), "{waits:?}");
    assert!((400..=800).contains(&waits[1]), "{waits:?}");
    h.advance(10_000).unwrap();
    assert_eq!(h.http_calls().len(), 3, "3 attempts, then dropped");
    assert_eq!(h.metric("meshtrace.spans_dropped.export_failed"), Some(2));
    // Two attempts were retried; the last one failed the request, on the collector's 503.
    assert_eq!(h.metric("meshtrace.export_requests.retryable"), Some(2));
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(1));
    assert_eq!(h.metric("meshtrace.export_requests.rejected"), Some(1));
    assert_eq!(h.metric("meshtrace.export_retries"), Some(2));
    assert_eq!(
        warnings(&h),
        vec![
            "meshtrace: 2 export attempt(s) failed with HTTP 503, will retry",
            "meshtrace: 1 batch(es) failed with HTTP 503 after 3 attempt(s), 2 span(s) dropped",
            "meshtrace: the collector rejected 1 export request(s); first reason: \"\""
        ]
    );
}

#[test]
fn grpc_framing_gzip_and_statuses() {
    let mut h = load_filter()
        .configure(r#"{"collector": {"cluster": "otel_collector", "protocol": "grpc", "compression": "gzip", "headers": {"x-api-key": "k"}}, "batch": {"flush_interval_ms": 1000}, "exporter": {"retry": {"initial_ms": 400, "max_ms": 4000}}}"#)
        .unwrap();
    unaffected(&mut h, 2);
    h.advance(1000).unwrap();
    let call = h.pending_http_calls()[0].clone();
    assert_eq!(
        call.header(":path"),
        Some("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    );
    assert_eq!(call.header("content-type"), Some("application/grpc"));
    assert_eq!(call.header("grpc-encoding"), Some("gzip"));
    assert_eq!(call.header("te"), Some("trailers"));
    assert_eq!(call.header("x-api-key"), Some("k"));
    // One length-prefixed message with the compressed flag set.
    assert_eq!(call.body[0], 1);
    let len = u32::from_be_bytes(call.body[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, call.body.len() - 5);
    let raw = meshtrace_host_test::sink::gunzip(&call.body[5..]).unwrap();
    assert_eq!(spans(&decode(&raw).unwrap()).len(), 2);
    // UNAVAILABLE in the trailers: retried.
    let ok = HeaderMap::from_pairs(&[(":status", "200".to_string())]);
    let status = |code: &str| HeaderMap::from_pairs(&[("grpc-status", code.to_string())]);
    h.answer_with(call.token, ok.clone(), b"", status("14"))
        .unwrap();
    let (waited, again) = next_call(&mut h, 400);
    assert!((200..=400).contains(&waited), "{waited}");
    // OK: exported.
    h.answer_with(again.token, ok.clone(), b"", status("0"))
        .unwrap();
    // INVALID_ARGUMENT: dropped.
    unaffected(&mut h, 1);
    h.advance(1000).unwrap();
    let (_, third) = next_call(&mut h, 1000);
    h.answer_with(third.token, ok, b"", status("3")).unwrap();
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(2));
    assert_eq!(h.metric("meshtrace.spans_dropped.export_failed"), Some(1));
    assert_eq!(h.metric("meshtrace.export_requests.retryable"), Some(1));
    assert_eq!(h.metric("meshtrace.export_requests.failed"), Some(1));
}

#[test]
fn silent_collector_keeps_everything_bounded() {
    let mut h = load_filter()
        .configure(r#"{"collector": {"cluster": "otel_collector", "timeout_ms": 5000}, "batch": {"max_queue": 8, "max_batch": 8, "flush_interval_ms": 1000}}"#)
        .unwrap();
    // Bursts of 20 requests for a virtual minute against a collector that never answers
    // (the host times each call out after 5 s).
    for _ in 0..60 {
        unaffected(&mut h, 20);
        h.advance(1000).unwrap();
        // At most max_in_flight (2) calls outstanding; at most the queue plus two batches held.
        assert!(h.pending_http_calls().len() <= 2);
        assert!(h.metric("meshtrace.queue_spans").unwrap() <= 8 + 2 * 8);
        // Accounting, exact at every tick: nothing is lost without being counted.
        let held = h.metric("meshtrace.queue_spans").unwrap();
        let out = h.metric("meshtrace.spans_exported").unwrap()
            + h.metric("meshtrace.spans_dropped.queue_full").unwrap()
            + h.metric("meshtrace.spans_dropped.export_failed").unwrap()
            + h.metric("meshtrace.spans_dropped.too_large").unwrap();
        assert_eq!(h.metric("meshtrace.spans_sampled").unwrap(), out + held);
    }
    assert_eq!(h.metric("meshtrace.spans_started"), Some(1200));
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(0));
    // One summary line per kind per 5 s at most, however many spans were dropped.
    let w = warnings(&h);
    assert!(w.len() <= 3 * 12, "{} lines", w.len());
    assert!(w.iter().any(|l| l.ends_with("span(s) dropped: queue full")));
}
