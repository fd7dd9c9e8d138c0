//! Guest memory stays flat: after warm-up, 100,000 more requests do not grow linear memory by
//! a single wasm page. The warm-up includes a collector outage long enough to fill the queue to
//! its bound and the in-flight batches to their size, so every buffer has reached the largest
//! it can ever be; later retries and backlogs reuse them.

use meshtrace_host_test::host::{load_filter, Host, Req};

fn req(i: usize) -> Req {
    let mut r = Req::get(&format!("/items/{}?page={}", i % 97, i % 13))
        .header("user-agent", "load/1")
        .header("x-forwarded-for", "10.1.2.3, 10.0.0.1")
        // Not a 404: its span would carry no `http.route` (the route is not shown to exist),
        // and spans of unequal sizes make the largest queue and batch a matter of which spans
        // an outage happens to drop, not of the warm-up.
        .property("response.code", [200i64, 403, 503][i % 3])
        .property("request.protocol", "HTTP/2");
    if i.is_multiple_of(2) {
        r = r.header(
            "traceparent",
            format!(
                "00-0af7651916cd43dd8448eb211c80{:04x}-b7ad6b7169203331-01",
                i % 65536
            ),
        );
    }
    r
}

/// Runs `n` requests, a virtual second per 1000, answering every call: with a 503 when `down`,
/// else every 7th with a 503 (retried) and the rest with a 200.
fn run(h: &mut Host, from: usize, n: usize, down: bool) {
    for i in from..from + n {
        h.request(req(i)).unwrap();
        if i % 1000 == 999 {
            h.advance(1000).unwrap();
            for c in h.pending_http_calls() {
                let status = if down || c.token % 7 == 0 { 503 } else { 200 };
                h.answer(c.token, status, b"").unwrap();
            }
        }
    }
}

#[test]
fn hundred_thousand_requests_leave_memory_flat() {
    let mut h = load_filter()
        .configure(r#"{"collector": {"cluster": "otel_collector"}}"#)
        .unwrap();
    run(&mut h, 0, 20_000, true);
    run(&mut h, 20_000, 10_000, false);
    let warm = h.memory_pages();
    run(&mut h, 30_000, 100_000, false);
    assert_eq!(h.memory_pages(), warm, "guest memory grew (64 KiB pages)");
    // Metrics reach the host on the tick after the last answers.
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.spans_started"), Some(130_000));
    let m = |name: &str| h.metric(name).unwrap();
    assert!(
        m("meshtrace.spans_dropped.queue_full") > 0,
        "the outage filled the queue"
    );
    assert_eq!(
        m("meshtrace.spans_exported")
            + m("meshtrace.spans_dropped.export_failed")
            + m("meshtrace.spans_dropped.queue_full")
            + m("meshtrace.queue_spans"),
        130_000
    );
    eprintln!("guest memory: {warm} pages after warm-up and after 100,000 more requests");
}
