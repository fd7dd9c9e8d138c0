//! Export timing on the virtual clock and the shape of the export call.

use meshtrace_host_test::host::export::{decode, spans};
use meshtrace_host_test::host::{load_filter, Host, Req};

fn host(batch: &str) -> Host {
    load_filter()
        .configure(&format!(
            r#"{{"collector": {{"cluster": "otel_collector", "authority": "otel.observability:4318", "timeout_ms": 300}}, "batch": {batch}}}"#
        ))
        .unwrap()
}

#[test]
fn nothing_before_the_interval_then_one_post() {
    let mut h = host(r#"{"max_queue": 100, "max_batch": 10, "flush_interval_ms": 1000}"#);
    for _ in 0..3 {
        h.request(Req::get("/x")).unwrap();
    }
    h.advance(999).unwrap();
    assert_eq!(h.http_calls().len(), 0, "no export before the interval");
    h.advance(1).unwrap();
    let calls = h.pending_http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, "otel_collector");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":path"), Some("/v1/traces"));
    assert_eq!(call.header(":authority"), Some("otel.observability:4318"));
    assert_eq!(call.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(call.timeout_ms, 300);
    assert!(call.trailers.is_empty());
    assert_eq!(spans(&decode(&call.body).unwrap()).len(), 3);
    // Attributed to the root context, which receives the answer.
    assert_eq!(call.root_context, 1);
    h.answer(call.token, 200, b"").unwrap();

    // Nothing queued: no further calls, however long we wait.
    h.advance(10_000).unwrap();
    assert_eq!(h.http_calls().len(), 1);
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(3));
    assert_eq!(h.metric("meshtrace.export_requests.ok"), Some(1));
    // Uncompressed: what was sent is the encoded request itself.
    assert_eq!(
        h.metric("meshtrace.export_bytes.sent"),
        Some(call.body.len() as u64)
    );
    assert_eq!(
        h.metric("meshtrace.export_bytes.uncompressed"),
        Some(call.body.len() as u64)
    );
}

#[test]
fn a_full_batch_goes_out_on_the_next_millisecond() {
    let mut h = host(r#"{"max_queue": 100, "max_batch": 4, "flush_interval_ms": 1000}"#);
    for _ in 0..3 {
        h.request(Req::get("/x")).unwrap();
    }
    h.advance(1).unwrap();
    assert_eq!(h.http_calls().len(), 0, "3 of 4: not full");
    h.request(Req::get("/x")).unwrap();
    // The glue shortens the root's tick to 1 ms when a batch fills.
    assert_eq!(h.tick_periods(0).unwrap(), vec![(1, 1)]);
    h.advance(1).unwrap();
    let calls = h.http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(spans(&decode(&calls[0].body).unwrap()).len(), 4);
    // ... and restores the interval afterwards.
    assert_eq!(h.tick_periods(0).unwrap(), vec![(1, 1000)]);
}

#[test]
fn large_backlog_is_cut_into_batches() {
    let mut h = host(r#"{"max_queue": 100, "max_batch": 4, "flush_interval_ms": 1000}"#);
    for _ in 0..10 {
        h.request(Req::get("/x")).unwrap();
    }
    let sizes = |h: &Host| -> Vec<usize> {
        h.http_calls()
            .iter()
            .map(|c| spans(&decode(&c.body).unwrap()).len())
            .collect()
    };
    // The 1 ms tick sends full batches up to `exporter.max_in_flight` (2); the rest waits for
    // the interval, which restarts at that flush.
    h.advance(1).unwrap();
    assert_eq!(sizes(&h), vec![4, 4]);
    for c in h.pending_http_calls() {
        h.answer(c.token, 200, b"").unwrap();
    }
    h.advance(999).unwrap();
    assert_eq!(sizes(&h), vec![4, 4]);
    h.advance(1).unwrap();
    assert_eq!(sizes(&h), vec![4, 4, 2]);
}

/// The bytes a span takes inside `ScopeSpans` (field 2: key, length, message), which is what
/// `batch.max_export_bytes` bounds.
fn span_field_len(s: &opentelemetry_proto::tonic::trace::v1::Span) -> usize {
    use prost::Message;
    let len = s.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

#[test]
fn a_backlog_goes_out_in_requests_of_at_most_max_export_bytes() {
    // The default bounds: 2,048 spans a batch, 64 KiB of spans a request, 2 in flight.
    let mut h = host("{}");
    for _ in 0..1000 {
        h.request(Req::get("/api/users/42")).unwrap();
    }
    h.advance(1).unwrap();
    let mut counts = Vec::new();
    let mut span_bytes = Vec::new();
    let mut answered = 0;
    loop {
        let pending = h.pending_http_calls();
        assert!(pending.len() <= 2, "exporter.max_in_flight");
        if pending.is_empty() {
            break;
        }
        for c in pending {
            let s = spans(&decode(&c.body).unwrap());
            counts.push(s.len());
            span_bytes.push(s.iter().map(span_field_len).collect::<Vec<_>>());
            // Each reply frees a slot, and the next full request goes out at once.
            h.answer(c.token, 200, b"").unwrap();
            answered += 1;
        }
    }
    // Full requests: as many spans as fit in 64 KiB, and not one more.
    let full = counts.len();
    assert!(full >= 3, "{counts:?}");
    let one = span_bytes[0][0];
    for (n, lens) in counts.iter().zip(&span_bytes) {
        assert!(lens.iter().all(|&l| l == one), "the spans are alike");
        assert_eq!(*n, 65536 / one, "{counts:?}");
    }
    // The rest is under the bound, so it waits for the interval from the last cut (at 1 ms).
    h.advance(999).unwrap();
    assert_eq!(h.pending_http_calls().len(), 0);
    h.advance(1).unwrap();
    let rest = h.pending_http_calls();
    assert_eq!(rest.len(), 1);
    let last = spans(&decode(&rest[0].body).unwrap()).len();
    assert_eq!(last, 1000 - full * (65536 / one));
    h.answer(rest[0].token, 200, b"").unwrap();
    assert_eq!(answered, full);
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(1000));
    assert_eq!(
        h.metric("meshtrace.export_requests.ok"),
        Some(full as u64 + 1)
    );
}
