//! Moving batches out of the VM: dispatching the exporter's requests to the collector and
//! reporting the replies, or (shared-queue filters) handing spans to the singleton. Every
//! decision (what to send, when, whether to retry) is the core exporter's.

use std::time::Duration;

use proxy_wasm::traits::Context;
use proxy_wasm::types::BufferType;

use super::{host, log, now_ms, Worker};
use crate::export::config::{Compression, Protocol, SHARED_QUEUE_NAME};
use crate::export::rejection::MAX_REASON_BYTES;
use crate::export::reply::{
    classify, partial_success, response_message, ExportResult, Failure, PartialSuccess, Reply,
    GRPC_PATH,
};
use crate::export::span_processor::LOG_INTERVAL_MS;
use crate::headers::pairs;
use crate::text::printable;

/// `MapType::HttpCallResponseHeaders` / `HttpCallResponseTrailers`.
const CALL_RESPONSE_HEADERS: u32 = 6;
const CALL_RESPONSE_TRAILERS: u32 = 7;
/// Collector replies are tiny (a partial success at most); a larger body is not read whole.
const MAX_REPLY_BODY: usize = 64 * 1024;

/// Export calls outstanding (and a few written off that may still answer): token → request id.
#[derive(Default)]
pub struct Calls(Vec<(u32, u64)>);

impl Calls {
    fn insert(&mut self, token: u32, id: u64, cap: usize) {
        // Tokens of requests the exporter wrote off never come back; keep the list bounded.
        if self.0.len() >= cap {
            self.0.remove(0);
        }
        self.0.push((token, id));
    }

    fn take(&mut self, token: u32) -> Option<u64> {
        let i = self.0.iter().position(|(t, _)| *t == token)?;
        Some(self.0.swap_remove(i).1)
    }
}

/// The request headers for every export call, built once per VM: pseudo-headers, content
/// type and encoding for the protocol, then the configured extra headers (secrets, never
/// logged).
pub fn request_headers(w: &Worker) -> Vec<(String, String)> {
    let c = &w.tracer.config.collector;
    request_headers_for(c, &c.path, GRPC_PATH)
}

/// [`request_headers`] for a signal's OTLP/HTTP path and gRPC method.
fn request_headers_for(
    c: &crate::export::config::Collector,
    http_path: &str,
    grpc_path: &str,
) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), "POST".to_string()),
        (":authority".to_string(), c.authority().to_string()),
        (
            "user-agent".to_string(),
            concat!("meshtrace/", env!("CARGO_PKG_VERSION")).to_string(),
        ),
    ];
    let gzip = c.compression == Compression::Gzip;
    match c.protocol {
        Protocol::Http => {
            h.push((":path".into(), http_path.into()));
            h.push(("content-type".into(), "application/x-protobuf".into()));
            if gzip {
                h.push(("content-encoding".into(), "gzip".into()));
            }
        }
        Protocol::Grpc => {
            h.push((":path".into(), grpc_path.into()));
            h.push(("content-type".into(), "application/grpc".into()));
            h.push(("te".into(), "trailers".into()));
            h.push(("grpc-timeout".into(), format!("{}m", c.timeout_ms)));
            if gzip {
                h.push(("grpc-encoding".into(), "gzip".into()));
            }
        }
    }
    for (k, v) in &c.headers {
        h.push((k.clone(), v.clone()));
    }
    h
}

/// Sends every request the exporter has ready. `ctx` must be the root context: Envoy
/// attributes calls to the root, and only the root outlives the collector's reply.
pub fn flush(ctx: &dyn Context, w: &mut Worker, now: u64) {
    let Worker {
        tracer,
        exporter,
        calls,
        export_headers,
        ..
    } = w;
    let c = &tracer.config.collector;
    let timeout = Duration::from_millis(c.timeout_ms);
    let cap = 4 * tracer.config.exporter.max_in_flight as usize;
    let headers: Vec<(&str, &str)> = export_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    while let Some(send) = exporter.poll(now) {
        let id = send.id;
        match ctx.dispatch_http_call(
            &c.cluster,
            headers.clone(),
            Some(send.body),
            vec![],
            timeout,
        ) {
            Ok(token) => calls.insert(token, id, cap),
            Err(_) => exporter.on_result(id, ExportResult::Fail(Failure::DispatchFailed), now),
        }
    }
}

fn header<'a>(map: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    pairs(map).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// The `:status` of a call's response headers (a serialized map), if it is a number.
fn http_status(map: &[u8]) -> Option<u32> {
    let s = header(map, b":status")?;
    core::str::from_utf8(s).ok()?.trim().parse().ok()
}

/// The body of a call's reply, up to [`MAX_REPLY_BODY`]; no host call when it is empty.
fn reply_body(body_size: usize) -> Option<Vec<u8>> {
    if body_size == 0 {
        return None;
    }
    proxy_wasm::hostcalls::get_buffer(
        BufferType::HttpCallResponseBody,
        0,
        body_size.min(MAX_REPLY_BODY),
    )
    .ok()
    .flatten()
}

/// Classifies the collector's reply to call `token` and hands it to the exporter.
pub fn on_response(w: &mut Worker, token: u32, num_headers: usize, body_size: usize) {
    let Some(id) = w.calls.take(token) else {
        return;
    };
    let headers = if num_headers == 0 {
        Vec::new()
    } else {
        host::header_map(CALL_RESPONSE_HEADERS).unwrap_or_default()
    };
    let trailers = host::header_map(CALL_RESPONSE_TRAILERS).unwrap_or_default();
    let body = reply_body(body_size);
    let status = http_status(&headers);
    // A trailers-only gRPC reply carries its status in the headers.
    let grpc = |name: &[u8]| header(&trailers, name).or_else(|| header(&headers, name));
    let reply = Reply {
        status: if num_headers == 0 {
            None
        } else {
            Some(status.unwrap_or(0))
        },
        retry_after: header(&headers, b"retry-after"),
        grpc_status: grpc(b"grpc-status"),
        grpc_details: grpc(b"grpc-status-details-bin"),
        grpc_message: grpc(b"grpc-message"),
        body: body.as_deref().unwrap_or_default(),
    };
    let now = now_ms();
    let result = classify(
        w.tracer.config.collector.protocol,
        &reply,
        host::now_ns() / 1_000_000,
    );
    if let Some(reason) = crate::export::rejection::reason(&result, &reply) {
        w.exporter.note_rejection(reason);
    }
    w.exporter.on_result(id, result, now);
}

/// Shared-queue filters: hands due spans to the singleton in one chunk (one host call for many
/// spans). Without the singleton's queue the spans are dropped and counted.
pub fn hand_off(w: &mut Worker, now: u64) {
    if w.queue.is_none() {
        let vm_id = &w.tracer.config.exporter.singleton_vm_id;
        w.queue = proxy_wasm::hostcalls::resolve_shared_queue(vm_id, SHARED_QUEUE_NAME)
            .ok()
            .flatten();
    }
    let Worker {
        exporter,
        body,
        queue,
        ..
    } = w;
    while let Some(spans) = exporter.next_chunk(now, body) {
        let sent = queue
            .is_some_and(|q| proxy_wasm::hostcalls::enqueue_shared_queue(q, Some(body)).is_ok());
        if !sent {
            // A queue that vanished (the singleton restarted) is resolved again next time.
            *queue = None;
            exporter.on_handoff_failed(spans);
        }
    }
}

/// The singleton: registers the queue every filter hands its spans to.
pub fn register_queue() -> Option<u32> {
    match proxy_wasm::hostcalls::register_shared_queue(SHARED_QUEUE_NAME) {
        Ok(id) => Some(id),
        Err(e) => {
            log(
                proxy_wasm::types::LogLevel::Error,
                &format!("meshtrace: registering shared queue {SHARED_QUEUE_NAME:?} failed: {e:?}"),
            );
            None
        }
    }
}

/// The singleton: takes every waiting chunk into the exporter's queue, then exports what is
/// due.
pub fn drain(ctx: &dyn Context, w: &mut Worker, queue_id: u32) {
    // Bounded per wake-up so a flood cannot hold the main thread; the rest stays queued and the
    // host wakes us again on the next enqueue or tick.
    for _ in 0..4096 {
        match proxy_wasm::hostcalls::dequeue_shared_queue(queue_id) {
            Ok(Some(chunk)) => w.exporter.push_chunk(&chunk),
            _ => break,
        }
    }
    flush(ctx, w, now_ms());
}

/// The RED metrics' export state: each flush interval's points, in requests bounded like the
/// span exports' (`batch.max_export_bytes`) and sent one per callback, not retried (the next
/// interval carries its own delta).
#[derive(Default)]
pub struct MetricsExport {
    /// The request headers, built once: the span exports' with the metrics path.
    headers: Vec<(String, String)>,
    /// The request being sent (framed and compressed as configured), reused.
    body: Vec<u8>,
    /// The interval's encoded requests: `requests[..ready]`, `requests[..sent]` already sent.
    requests: Vec<Vec<u8>>,
    ready: usize,
    sent: usize,
    /// Made at the first gzip body and reused: a compressor's tables are a few hundred KiB.
    gzip: Option<crate::export::gzip::GzipEncoder>,
    /// Calls in flight.
    calls: Vec<u32>,
    /// When the interval ends, ms.
    next_ms: u64,
    /// Export requests the collector accepted, and those that failed (refused, unanswered,
    /// or not dispatched).
    pub ok: u64,
    pub failed: u64,
    /// Data points the collector refused in partial successes of accepted requests
    /// (`ExportMetricsPartialSuccess.rejected_data_points`).
    pub rejected_points: u64,
    /// Failures since the last log line, and why the latest one failed.
    unlogged: u64,
    last_failure: Option<Failure>,
    /// Partial successes since the last log line, the points they refused, and the first
    /// one's `error_message` (printable, cut to [`MAX_REASON_BYTES`]).
    unlogged_partial: u64,
    unlogged_rejected_points: u64,
    first_partial_message: Option<String>,
    last_log_ms: u64,
}

/// Calls in flight kept track of; older ones are written off as failed.
const MAX_METRICS_CALLS: usize = 8;

impl MetricsExport {
    /// Whether requests of the last interval are still to be sent (one per callback: the tick
    /// then wakes a millisecond on).
    pub fn sending(&self) -> bool {
        self.sent < self.ready
    }

    /// The export state for `config`, its first interval ending a flush interval from `now`.
    pub fn new(config: &crate::config::Config, now: u64) -> Self {
        let c = &config.collector;
        let mut headers = request_headers_for(c, &config.metrics.path, metrics::GRPC_PATH);
        headers.shrink_to_fit();
        Self {
            headers,
            next_ms: now + config.batch.flush_interval_ms,
            ..Self::default()
        }
    }
}

use crate::metrics;

impl MetricsExport {
    /// Counts a failed export; [`MetricsExport::take_log`] reports it.
    fn fail(&mut self, failure: Failure) {
        self.failed += 1;
        self.unlogged += 1;
        self.last_failure = Some(failure);
    }

    /// Counts an accepted request's partial success (points refused, or only a warning
    /// message); [`MetricsExport::take_log`] reports it.
    fn partial(&mut self, partial: PartialSuccess<'_>) {
        if partial.rejected == 0 && partial.error_message.is_empty() {
            return;
        }
        self.rejected_points += partial.rejected;
        self.unlogged_partial += 1;
        self.unlogged_rejected_points += partial.rejected;
        self.first_partial_message
            .get_or_insert_with(|| printable(partial.error_message, MAX_REASON_BYTES));
    }

    /// At most once per [`LOG_INTERVAL_MS`] (as the span exporter's summary), one line for
    /// the exports that failed since the last, and one for the partial successes with the
    /// collector's first message: a collector without a metrics pipeline, or one refusing
    /// some points, otherwise shows only in a stat.
    pub fn take_log(&mut self, now_ms: u64) -> Vec<String> {
        let mut lines = Vec::new();
        if (self.unlogged == 0 && self.unlogged_partial == 0)
            || now_ms.saturating_sub(self.last_log_ms) < LOG_INTERVAL_MS
        {
            return lines;
        }
        self.last_log_ms = now_ms;
        if let (n @ 1.., Some(failure)) = (core::mem::take(&mut self.unlogged), self.last_failure) {
            lines.push(format!(
                "meshtrace: {n} metrics export request(s) failed, the last with {failure}; \
                 not retried, their intervals' points are dropped"
            ));
        }
        if core::mem::take(&mut self.unlogged_partial) > 0 {
            let points = core::mem::take(&mut self.unlogged_rejected_points);
            let message = self.first_partial_message.take().unwrap_or_default();
            lines.push(format!(
                "meshtrace: the collector rejected {points} metric data point(s) in metrics \
                 export partial successes; first message: \"{message}\""
            ));
        }
        lines
    }
}

/// Ends the metrics interval when it is due and sends it (at most one request per interval,
/// none for an interval without requests). `ctx` must be the root context.
pub fn flush_metrics(ctx: &dyn Context, w: &mut Worker, now: u64) {
    let Worker {
        tracer, metrics: m, ..
    } = w;
    let Some(red) = &mut tracer.metrics else {
        return;
    };
    if !m.sending() {
        if now < m.next_ms {
            return;
        }
        m.next_ms = now + tracer.config.batch.flush_interval_ms;
        let max_bytes = usize::try_from(tracer.config.batch.max_export_bytes).unwrap_or(usize::MAX);
        m.ready = red.collect(
            &tracer.batch_header,
            host::now_ns(),
            max_bytes,
            &mut m.requests,
        );
        m.sent = 0;
        if m.ready == 0 {
            return;
        }
    }
    let raw = &m.requests[m.sent];
    m.sent += 1;
    let c = &tracer.config.collector;
    let gzip = c.compression == Compression::Gzip;
    m.body.clear();
    if c.protocol == Protocol::Grpc {
        // Length-prefixed message: compressed flag, then the length patched in below.
        m.body.extend_from_slice(&[gzip as u8, 0, 0, 0, 0]);
    }
    if gzip {
        m.gzip
            .get_or_insert_with(crate::export::gzip::GzipEncoder::new)
            .compress(raw, &mut m.body);
    } else {
        m.body.extend_from_slice(raw);
    }
    if c.protocol == Protocol::Grpc {
        let len = (m.body.len() - 5) as u32;
        m.body[1..5].copy_from_slice(&len.to_be_bytes());
    }
    let headers: Vec<(&str, &str)> = m
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match ctx.dispatch_http_call(
        &c.cluster,
        headers,
        Some(&m.body),
        vec![],
        Duration::from_millis(c.timeout_ms),
    ) {
        Ok(token) => {
            if m.calls.len() >= MAX_METRICS_CALLS {
                m.calls.remove(0);
                m.fail(Failure::Lost);
            }
            m.calls.push(token);
        }
        Err(_) => m.fail(Failure::DispatchFailed),
    }
}

/// Counts the collector's answer to a metrics export; `false` when `token` is not one.
pub fn on_metrics_response(
    w: &mut Worker,
    token: u32,
    num_headers: usize,
    body_size: usize,
) -> bool {
    let Some(i) = w.metrics.calls.iter().position(|t| *t == token) else {
        return false;
    };
    w.metrics.calls.swap_remove(i);
    let headers = if num_headers == 0 {
        Vec::new()
    } else {
        host::header_map(CALL_RESPONSE_HEADERS).unwrap_or_default()
    };
    let protocol = w.tracer.config.collector.protocol;
    let trailers = match protocol {
        Protocol::Http => Vec::new(),
        Protocol::Grpc => host::header_map(CALL_RESPONSE_TRAILERS).unwrap_or_default(),
    };
    let status = http_status(&headers);
    // A trailers-only gRPC reply carries its status in the headers.
    let grpc = |name: &[u8]| header(&trailers, name).or_else(|| header(&headers, name));
    // The spans' classification, so a failure reads the same in both logs; a retry delay is
    // not read: the interval is not retried either way.
    let body = reply_body(body_size);
    let body = body.as_deref().unwrap_or_default();
    let reply = Reply {
        status: (num_headers > 0).then(|| status.unwrap_or(0)),
        retry_after: None,
        grpc_status: grpc(b"grpc-status"),
        grpc_details: None,
        grpc_message: None,
        body,
    };
    match classify(protocol, &reply, 0) {
        ExportResult::Ok { .. } => {
            w.metrics.ok += 1;
            // The count `classify` read, with the message beside it, from the same reader.
            w.metrics
                .partial(partial_success(response_message(protocol, body)));
        }
        ExportResult::Retry { failure, .. } | ExportResult::Fail(failure) => {
            w.metrics.fail(failure)
        }
    }
    true
}
