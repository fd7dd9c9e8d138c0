//! Export scheduling, host-independent: when to send a batch, when to send it again, when to
//! give up, what to count, and what to log (one line per failure kind per interval).
//!
//! The adapter owns the transport (`dispatch_http_call` in Envoy, hyper natively): it asks
//! [`BatchSpanProcessor::poll`] for the next request, sends it, and reports the classified reply with
//! [`BatchSpanProcessor::on_result`]. Time is passed in, so every rule is unit-tested on virtual time.
//!
//! Memory is bounded by the queue's bounds plus `max_in_flight` batches (and as many spare
//! pages plus one): a batch waiting for a retry keeps its slot, so a collector outage fills the
//! queue and then drops the newest spans (counted) instead of growing.

use super::config::{Compression, ExportConfig, ExportMode, Protocol, Retry};
use crate::export::batch::{chunk_spans, DropReason, SpanQueue, GRPC_FRAME};
use crate::export::gzip::GzipEncoder;
use crate::export::otlp::BatchHeader;
use crate::export::reply::{ExportResult, Failure};
use crate::span::SpanRecord;

/// Counters the adapter exposes as metrics; monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans the collector refused in a partial success (also counted as exported: delivered).
    pub spans_rejected: u64,
    /// Spans dropped because the queue was full.
    pub spans_dropped_queue_full: u64,
    /// Spans dropped because one alone exceeds the queue's byte bound.
    pub spans_dropped_too_large: u64,
    /// Spans dropped because their batch failed for good or ran out of attempts.
    pub spans_dropped_export_failed: u64,
    /// Attempts by result: accepted, failed but retried, failed for good (not retryable, or
    /// the last attempt of a batch).
    pub requests_ok: u64,
    /// Attempts that failed but will be retried.
    pub requests_retryable: u64,
    /// Attempts that failed for good: not retryable, or the last attempt of a batch.
    pub requests_failed: u64,
    /// Of `requests_failed`, those that ended on an error status from the collector (an HTTP
    /// status outside 2xx or a gRPC status other than `OK`: a final one, or a retryable one on
    /// the last attempt), with the reason it gave ([`BatchSpanProcessor::note_rejection`]).
    pub requests_rejected: u64,
    /// Sends of a batch after its first.
    pub retries: u64,
    /// Request bodies sent (every attempt), before and after compression.
    pub bytes_uncompressed: u64,
    /// Request bytes sent, after compression.
    pub bytes_sent: u64,
}

/// A batch's place in its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Built, waiting until `at` (ms) to be sent (again).
    Waiting {
        at: u64,
    },
    /// Sent at `since` (ms); the reply has not come yet.
    InFlight {
        since: u64,
    },
}

/// One batch being exported. Without compression its body is the queue's page, taken by swap
/// (the slot's previous buffer goes back to the queue); with gzip its buffer is reused.
#[derive(Debug)]
struct Slot {
    state: SlotState,
    id: u64,
    /// `body[start..]` is the request body as sent.
    body: Vec<u8>,
    start: usize,
    spans: u64,
    raw_bytes: u64,
    attempts: u32,
}

/// What became of a failed attempt's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    WillRetry,
    GaveUp,
    NotRetryable,
}

/// Failures of one kind since the last log line.
#[derive(Clone, Copy, Debug)]
struct FailureCount {
    failure: Failure,
    fate: Fate,
    requests: u64,
    spans: u64,
}

/// At most this many distinct failure kinds per log line; beyond it they are summed as "other".
const LOG_KINDS: usize = 8;
/// One summary line per this many ms at most: an outage is a few lines a minute, not a flood.
pub const LOG_INTERVAL_MS: u64 = 5000;

#[derive(Clone, Debug, Default)]
struct Pending {
    kinds: Vec<FailureCount>,
    other: u64,
    queue_full: u64,
    too_large: u64,
    rejected: u64,
    bad_chunks: u64,
    handoff_lost: u64,
    /// Requests the collector refused, and the first reason it gave this interval.
    refused: u64,
    first_reason: Option<String>,
}

/// A request the adapter must send now.
#[derive(Debug)]
pub struct Request<'a> {
    /// Hand back to [`BatchSpanProcessor::on_result`] with the reply.
    pub id: u64,
    /// The encoded request body, compressed as configured.
    pub body: &'a [u8],
}

/// Per-VM export state.
#[derive(Debug)]
pub struct BatchSpanProcessor {
    queue: SpanQueue,
    protocol: Protocol,
    /// Shared-queue filters hand spans off instead of exporting.
    hand_off: bool,
    flush_interval_ms: u64,
    /// An unanswered request older than this is written off (the host should have answered).
    lost_after_ms: u64,
    retry: Retry,
    slots: Vec<Slot>,
    next_id: u64,
    /// Consecutive retryable failures, driving the backoff.
    failures: u32,
    /// No request goes out before this (ms): the collector asked for quiet, or is down.
    quiet_until: u64,
    last_flush_ms: u64,
    last_log_ms: u64,
    /// With gzip: the page of the batch compressed last (the queue takes it back on the next).
    scratch: Vec<u8>,
    /// Made with the processor when bodies are gzip-compressed, reused for every body.
    gzip: Option<GzipEncoder>,
    /// When (ms) the last new body was compressed: with gzip, one new body per callback.
    compressed_at: Option<u64>,
    /// A due batch waits for the next callback (ms) because this one compressed a body.
    deferred_to: Option<u64>,
    rng: fastrand::Rng,
    pending: Pending,
    /// The collector's reason for the reply about to be handed to
    /// [`BatchSpanProcessor::on_result`].
    noted_reason: Option<String>,
    /// What happened to spans and requests so far.
    pub counters: Counters,
}

impl BatchSpanProcessor {
    /// A processor with an empty queue. `header` is the VM's encoded resource and scope,
    /// `now_ms` the adapter's clock in ms, `seed` the jitter's randomness.
    pub fn new(config: ExportConfig<'_>, header: BatchHeader, now_ms: u64, seed: u64) -> Self {
        let b = config.batch;
        let e = config.exporter;
        Self {
            queue: SpanQueue::new(
                b.max_queue,
                b.max_queue_bytes,
                b.max_batch,
                b.max_export_bytes,
                header,
                e.max_in_flight as usize + 1,
            ),
            protocol: config.collector.protocol,
            hand_off: e.mode == ExportMode::SharedQueue,
            flush_interval_ms: b.flush_interval_ms,
            lost_after_ms: config.collector.timeout_ms.saturating_mul(2) + 10_000,
            retry: e.retry.clone(),
            slots: (0..e.max_in_flight)
                .map(|_| Slot {
                    state: SlotState::Free,
                    id: 0,
                    body: Vec::new(),
                    start: 0,
                    spans: 0,
                    raw_bytes: 0,
                    attempts: 0,
                })
                .collect(),
            next_id: 1,
            failures: 0,
            quiet_until: 0,
            last_flush_ms: now_ms,
            last_log_ms: now_ms,
            scratch: Vec::new(),
            gzip: (config.collector.compression == Compression::Gzip).then(GzipEncoder::new),
            compressed_at: None,
            deferred_to: None,
            rng: fastrand::Rng::with_seed(seed),
            pending: Pending::default(),
            noted_reason: None,
            counters: Counters::default(),
        }
    }

    fn count_drop(&mut self, reason: DropReason, spans: u64) {
        match reason {
            DropReason::QueueFull => {
                self.counters.spans_dropped_queue_full += spans;
                self.pending.queue_full += spans;
            }
            DropReason::TooLarge => {
                self.counters.spans_dropped_too_large += spans;
                self.pending.too_large += spans;
            }
        }
    }

    /// Encodes a finished span into the queue; a full queue drops it and counts it.
    pub fn push(&mut self, span: &SpanRecord) -> Result<(), DropReason> {
        let r = self.queue.push(span);
        if let Err(reason) = r {
            self.count_drop(reason, 1);
        }
        r
    }

    /// Takes a worker's hand-off chunk into the queue, dropping (and counting) what does not
    /// fit. A malformed chunk is dropped whole and logged; its span count is unknowable.
    pub fn push_chunk(&mut self, chunk: &[u8]) {
        let Some(spans) = chunk_spans(chunk) else {
            self.pending.bad_chunks += 1;
            return;
        };
        for span in spans {
            if let Err(reason) = self.queue.push_encoded(span) {
                self.count_drop(reason, 1);
            }
        }
    }

    /// Spans held: queued, waiting for a retry, or in flight. The queue-depth gauge.
    pub fn held(&self) -> u64 {
        self.queue.len() as u64
            + self
                .slots
                .iter()
                .filter(|s| s.state != SlotState::Free)
                .map(|s| s.spans)
                .sum::<u64>()
    }

    /// Bytes held in the queue (batches in slots are bounded by `max_in_flight`).
    pub fn queued_bytes(&self) -> u64 {
        self.queue.bytes() as u64
    }

    fn interval_elapsed(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_flush_ms) >= self.flush_interval_ms
    }

    /// True when a new batch (or hand-off chunk) should be cut now: a full batch, or spans
    /// older than the interval, and (when exporting) a free slot outside a backoff.
    pub fn due(&self, now_ms: u64) -> bool {
        if self.queue.is_empty() || !(self.queue.batch_ready() || self.interval_elapsed(now_ms)) {
            return false;
        }
        self.hand_off
            || (now_ms >= self.quiet_until && self.slots.iter().any(|s| s.state == SlotState::Free))
    }

    /// Shared-queue filters: moves everything queued into a hand-off chunk in `out` when due.
    pub fn next_chunk(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Option<usize> {
        if !self.due(now_ms) {
            return None;
        }
        self.last_flush_ms = now_ms;
        Some(self.queue.take_chunk(out))
    }

    /// A hand-off chunk of `spans` spans could not be enqueued (no singleton): they are lost.
    pub fn on_handoff_failed(&mut self, spans: usize) {
        self.counters.spans_dropped_export_failed += spans as u64;
        self.pending.handoff_lost += spans as u64;
    }

    /// The next request to send, if any: a batch whose retry time has come, else a new batch
    /// when one is due and a slot is free. Call until `None`.
    ///
    /// With gzip, at most one new body is compressed per `now_ms` (one callback): compressing
    /// is the export's one costly step (about 0.1 ms natively per 64 KiB request at level 1,
    /// two to three times that in wasm), and a backlog filling every free slot in one callback
    /// would stall the worker for all of them. The next due batch waits a millisecond
    /// ([`Self::next_wake`]); retries resend a body already compressed and are not held back.
    pub fn poll(&mut self, now_ms: u64) -> Option<Request<'_>> {
        self.expire_lost(now_ms);
        self.deferred_to = None;
        if self.hand_off || now_ms < self.quiet_until {
            return None;
        }
        let i = match self
            .slots
            .iter()
            .position(|s| matches!(s.state, SlotState::Waiting { at } if at <= now_ms))
        {
            Some(i) => {
                self.counters.retries += 1;
                i
            }
            None => {
                if !self.due(now_ms) {
                    return None;
                }
                let i = self.slots.iter().position(|s| s.state == SlotState::Free)?;
                if self.gzip.is_some() {
                    if self.compressed_at == Some(now_ms) {
                        self.deferred_to = Some(now_ms + 1);
                        return None;
                    }
                    self.compressed_at = Some(now_ms);
                }
                self.last_flush_ms = now_ms;
                if !self.fill(i) {
                    return None;
                }
                i
            }
        };
        let slot = &mut self.slots[i];
        slot.state = SlotState::InFlight { since: now_ms };
        slot.attempts += 1;
        self.counters.bytes_uncompressed += slot.raw_bytes;
        let body = &slot.body[slot.start..];
        self.counters.bytes_sent += body.len() as u64;
        Some(Request { id: slot.id, body })
    }

    /// Cuts the next batch into slot `i`, framed and compressed for the wire; false when the
    /// queue is empty.
    fn fill(&mut self, i: usize) -> bool {
        let slot = &mut self.slots[i];
        let grpc = self.protocol == Protocol::Grpc;
        if let Some(gzip) = &mut self.gzip {
            let Some(batch) = self.queue.take_batch(false, &mut self.scratch) else {
                return false;
            };
            slot.spans = batch.spans as u64;
            slot.raw_bytes = batch.request_len as u64;
            let body = &mut slot.body;
            body.clear();
            if grpc {
                // Length-prefixed message: compressed flag, then the length patched in below.
                body.extend_from_slice(&[1, 0, 0, 0, 0]);
            }
            gzip.compress(&self.scratch[batch.start..], body);
            if grpc {
                let len = (body.len() - GRPC_FRAME) as u32;
                body[1..GRPC_FRAME].copy_from_slice(&len.to_be_bytes());
            }
            slot.start = 0;
        } else {
            // The page is the body, framed in place: the spans are not copied again.
            let Some(batch) = self.queue.take_batch(grpc, &mut slot.body) else {
                return false;
            };
            slot.spans = batch.spans as u64;
            slot.raw_bytes = batch.request_len as u64;
            slot.start = batch.start;
        }
        slot.id = self.next_id;
        self.next_id += 1;
        slot.attempts = 0;
        true
    }

    /// Writes off requests the host never answered, so a lost callback cannot pin a slot.
    fn expire_lost(&mut self, now_ms: u64) {
        for i in 0..self.slots.len() {
            if let SlotState::InFlight { since } = self.slots[i].state {
                if now_ms.saturating_sub(since) >= self.lost_after_ms {
                    let id = self.slots[i].id;
                    self.on_result(id, ExportResult::Fail(Failure::Lost), now_ms);
                }
            }
        }
    }

    /// Notes the collector's reason for refusing the attempt whose result comes next (already
    /// cut and made printable: [`crate::export::rejection::reason`]). Call it just before
    /// [`Self::on_result`]: when that attempt ends its request as failed (a final status, or a
    /// retryable one with no attempts left), the request counts as rejected and the first
    /// reason of the log interval is logged; an attempt that will be retried forgets it.
    pub fn note_rejection(&mut self, reason: String) {
        self.noted_reason = Some(reason);
    }

    /// Counts a request that ended refused, keeping the first reason of the log interval.
    fn rejected(&mut self, reason: Option<String>) {
        if let Some(reason) = reason {
            self.counters.requests_rejected += 1;
            self.pending.refused += 1;
            self.pending.first_reason.get_or_insert(reason);
        }
    }

    /// Records how the request `id` ended. Unknown or stale ids are ignored.
    pub fn on_result(&mut self, id: u64, result: ExportResult, now_ms: u64) {
        let reason = self.noted_reason.take();
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.id == id && matches!(s.state, SlotState::InFlight { .. }))
        else {
            return;
        };
        let (spans, attempts) = (self.slots[i].spans, self.slots[i].attempts);
        match result {
            ExportResult::Ok { rejected } => {
                self.counters.requests_ok += 1;
                self.counters.spans_exported += spans;
                self.counters.spans_rejected += rejected;
                self.pending.rejected += rejected;
                self.failures = 0;
                self.slots[i].state = SlotState::Free;
            }
            ExportResult::Retry { failure, delay_ms } => {
                self.failures = self.failures.saturating_add(1);
                let delay = self.backoff_ms(delay_ms);
                self.quiet_until = self.quiet_until.max(now_ms + delay);
                if attempts >= self.retry.max_attempts {
                    // The last attempt: the request failed for good, on this refusal.
                    self.counters.requests_failed += 1;
                    self.give_up(i, failure, Fate::GaveUp);
                    self.rejected(reason);
                } else {
                    self.counters.requests_retryable += 1;
                    self.slots[i].state = SlotState::Waiting { at: now_ms + delay };
                    self.note(failure, Fate::WillRetry, 0);
                }
            }
            ExportResult::Fail(failure) => {
                self.counters.requests_failed += 1;
                self.give_up(i, failure, Fate::NotRetryable);
                self.rejected(reason);
            }
        }
    }

    fn give_up(&mut self, i: usize, failure: Failure, fate: Fate) {
        let spans = self.slots[i].spans;
        self.counters.spans_dropped_export_failed += spans;
        self.slots[i].state = SlotState::Free;
        self.note(failure, fate, spans);
    }

    /// The wait before the next attempt: the collector's own delay when it gave one (capped,
    /// so a hostile or confused collector cannot park the exporter for hours), else full-jitter
    /// exponential backoff.
    fn backoff_ms(&mut self, hint: Option<u64>) -> u64 {
        if let Some(d) = hint {
            return d.min(self.retry.max_ms);
        }
        let exp = self.failures.saturating_sub(1).min(32);
        let ceiling = self
            .retry
            .initial_ms
            .saturating_mul(1u64 << exp)
            .min(self.retry.max_ms);
        // Half fixed, half random: spreads many proxies apart but never retries instantly.
        ceiling / 2 + self.rng.u64(0..=ceiling - ceiling / 2)
    }

    fn note(&mut self, failure: Failure, fate: Fate, spans: u64) {
        let p = &mut self.pending;
        if let Some(k) = p
            .kinds
            .iter_mut()
            .find(|k| k.failure == failure && k.fate == fate)
        {
            k.requests += 1;
            k.spans += spans;
        } else if p.kinds.len() < LOG_KINDS {
            p.kinds.push(FailureCount {
                failure,
                fate,
                requests: 1,
                spans,
            });
        } else {
            p.other += 1;
        }
    }

    /// When the adapter should next wake to make progress (ms), if earlier than the interval:
    /// a retry coming due, the end of a quiet period, or a due batch held back to the next
    /// callback because this one compressed a body already.
    pub fn next_wake(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                SlotState::Waiting { at } => Some(at.max(self.quiet_until)),
                _ => None,
            })
            .chain(self.deferred_to)
            .min()
    }

    /// At most once per [`LOG_INTERVAL_MS`], what went wrong since the last summary: one line
    /// per failure kind, with counts. Never mentions header values.
    pub fn take_log(&mut self, now_ms: u64) -> Vec<String> {
        if now_ms.saturating_sub(self.last_log_ms) < LOG_INTERVAL_MS {
            return Vec::new();
        }
        self.last_log_ms = now_ms;
        let p = core::mem::take(&mut self.pending);
        let mut parts = Vec::new();
        for k in &p.kinds {
            parts.push(match k.fate {
                Fate::WillRetry => format!(
                    "{} export attempt(s) failed with {}, will retry",
                    k.requests, k.failure
                ),
                Fate::GaveUp => format!(
                    "{} batch(es) failed with {} after {} attempt(s), {} span(s) dropped",
                    k.requests, k.failure, self.retry.max_attempts, k.spans
                ),
                Fate::NotRetryable => format!(
                    "{} export request(s) failed with {} (not retryable), {} span(s) dropped",
                    k.requests, k.failure, k.spans
                ),
            });
        }
        if p.other > 0 {
            parts.push(format!("{} export failure(s) of other kinds", p.other));
        }
        if p.queue_full > 0 {
            parts.push(format!("{} span(s) dropped: queue full", p.queue_full));
        }
        if p.too_large > 0 {
            parts.push(format!(
                "{} span(s) dropped: larger than batch.max_queue_bytes",
                p.too_large
            ));
        }
        if p.rejected > 0 {
            parts.push(format!(
                "the collector rejected {} span(s) in partial successes",
                p.rejected
            ));
        }
        if let Some(reason) = &p.first_reason {
            parts.push(format!(
                "the collector rejected {} export request(s); first reason: \"{reason}\"",
                p.refused
            ));
        }
        if p.bad_chunks > 0 {
            parts.push(format!(
                "{} malformed hand-off chunk(s) ignored",
                p.bad_chunks
            ));
        }
        if p.handoff_lost > 0 {
            parts.push(format!(
                "{} span(s) dropped: no exporter singleton's shared queue to hand them to",
                p.handoff_lost
            ));
        }
        parts
            .into_iter()
            .map(|p| format!("meshtrace: {p}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::config::{Batch, Collector, ExporterConfig};
    use crate::ids::SpanId;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    const OK: ExportResult = ExportResult::Ok { rejected: 0 };

    /// An exporter from the default test config with top-level sections replaced by `extra`.
    fn exporter(extra: &str) -> BatchSpanProcessor {
        let mut json: serde_json::Value = serde_json::from_str(
            r#"{"collector":{"cluster":"c"},"batch":{"max_queue":4,"max_batch":2,"flush_interval_ms":1000}}"#,
        )
        .unwrap();
        let extra: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", &extra[1.min(extra.len())..])).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        let section = |k: &str| json.get(k).cloned().unwrap_or(serde_json::json!({}));
        let collector: Collector = serde_json::from_value(section("collector")).unwrap();
        let batch: Batch = serde_json::from_value(section("batch")).unwrap();
        let exporter: ExporterConfig = serde_json::from_value(section("exporter")).unwrap();
        let config = ExportConfig {
            collector: &collector,
            batch: &batch,
            exporter: &exporter,
        };
        config.validate_collector().unwrap();
        config.validate_batch().unwrap();
        BatchSpanProcessor::new(config, BatchHeader::new(&[]), 0, 7)
    }

    fn span(i: u8) -> SpanRecord {
        let mut s = SpanRecord::default();
        s.span_id = SpanId([i; 8]);
        s
    }

    fn ids(body: &[u8]) -> Vec<u8> {
        let req = ExportTraceServiceRequest::decode(body).unwrap();
        req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.span_id[0])
            .collect()
    }

    fn retry(delay_ms: Option<u64>) -> ExportResult {
        ExportResult::Retry {
            failure: Failure::Http(503),
            delay_ms,
        }
    }

    /// The accounting invariant: every span pushed is exported, dropped, or still held.
    fn balanced(e: &BatchSpanProcessor, pushed: u64) {
        let c = &e.counters;
        assert_eq!(
            c.spans_exported
                + c.spans_dropped_queue_full
                + c.spans_dropped_too_large
                + c.spans_dropped_export_failed
                + e.held(),
            pushed
        );
    }

    #[test]
    fn interval_and_full_batch() {
        let mut e = exporter("");
        e.push(&span(1)).unwrap();
        assert!(e.poll(999).is_none());
        let s = e.poll(1000).unwrap();
        assert_eq!((s.id, ids(s.body)), (1, vec![1]));
        e.push(&span(2)).unwrap();
        e.push(&span(3)).unwrap();
        // A full batch goes out before the interval.
        let s = e.poll(1001).unwrap();
        assert_eq!((s.id, ids(s.body)), (2, vec![2, 3]));
        e.push(&span(4)).unwrap();
        e.push(&span(5)).unwrap();
        assert!(
            e.poll(1002).is_none(),
            "both slots in flight: the batch waits"
        );
        assert!(!e.due(1002));
        e.push(&span(6)).unwrap();
        e.push(&span(7)).unwrap();
        assert_eq!(e.push(&span(8)), Err(DropReason::QueueFull));
        assert_eq!(e.held(), 7);
        e.on_result(1, OK, 1003);
        assert_eq!(ids(e.poll(1003).unwrap().body), vec![4, 5]);
        e.on_result(2, OK, 1004);
        e.on_result(3, OK, 1004);
        e.on_result(3, OK, 1004); // a duplicate reply is ignored
        assert_eq!(e.counters.spans_exported, 5);
        assert_eq!(e.counters.requests_ok, 3);
        balanced(&e, 8);
    }

    #[test]
    fn retries_with_backoff_then_succeeds() {
        let mut e = exporter(r#","exporter":{"retry":{"initial_ms":100,"max_ms":1000}}"#);
        e.push(&span(1)).unwrap();
        let id = e.poll(1000).unwrap().id;
        e.on_result(id, retry(None), 1000);
        // First backoff: in [50, 100] ms.
        let wake = e.next_wake().unwrap();
        assert!((1050..=1100).contains(&wake), "{wake}");
        assert!(e.poll(wake - 1).is_none());
        e.push(&span(2)).unwrap();
        e.push(&span(3)).unwrap();
        assert!(!e.due(wake - 1), "no new batch during a backoff");
        let s = e.poll(wake).unwrap();
        assert_eq!((s.id, ids(s.body)), (id, vec![1]), "the same batch again");
        e.on_result(id, OK, wake);
        assert_eq!(e.counters.retries, 1);
        assert_eq!(e.counters.requests_retryable, 1);
        assert_eq!(ids(e.poll(wake).unwrap().body), vec![2, 3]);
        balanced(&e, 3);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut e =
            exporter(r#","exporter":{"retry":{"initial_ms":100,"max_ms":400,"max_attempts":10}}"#);
        e.push(&span(1)).unwrap();
        let mut now = 1000;
        let id = e.poll(now).unwrap().id;
        let mut waits = Vec::new();
        for _ in 0..5 {
            e.on_result(id, retry(None), now);
            let at = e.next_wake().unwrap();
            waits.push(at - now);
            now = at;
            assert_eq!(e.poll(now).unwrap().id, id);
        }
        let ceilings = [100, 200, 400, 400, 400];
        for (w, c) in waits.iter().zip(ceilings) {
            assert!((c / 2..=c).contains(w), "{waits:?}");
        }
    }

    #[test]
    fn honours_retry_after_and_caps_it() {
        let mut e = exporter(r#","exporter":{"retry":{"initial_ms":100,"max_ms":5000}}"#);
        e.push(&span(1)).unwrap();
        let id = e.poll(1000).unwrap().id;
        e.on_result(id, retry(Some(3000)), 1000);
        assert_eq!(e.next_wake(), Some(4000));
        assert!(e.poll(3999).is_none());
        assert_eq!(e.poll(4000).unwrap().id, id);
        e.on_result(id, retry(Some(3_600_000)), 4000);
        assert_eq!(e.next_wake(), Some(9000), "capped at retry.max_ms");
    }

    #[test]
    fn gives_up_after_max_attempts_and_drops_non_retryable() {
        let mut e =
            exporter(r#","exporter":{"retry":{"initial_ms":10,"max_ms":10,"max_attempts":2}}"#);
        e.push(&span(1)).unwrap();
        let id = e.poll(1000).unwrap().id;
        e.on_result(id, retry(None), 1000);
        assert_eq!(e.poll(1010).unwrap().id, id);
        e.on_result(id, retry(None), 1010);
        assert_eq!(e.counters.spans_dropped_export_failed, 1);
        assert_eq!(e.held(), 0);
        e.push(&span(2)).unwrap();
        let id = e.poll(2020).unwrap().id;
        e.on_result(id, ExportResult::Fail(Failure::Http(400)), 2020);
        assert_eq!(e.counters.spans_dropped_export_failed, 2);
        // The last attempt on 503 failed the request for good: one retried, two failed.
        assert_eq!(e.counters.requests_failed, 2);
        assert_eq!(e.counters.requests_retryable, 1);
        balanced(&e, 2);
        assert!(e.take_log(4999).is_empty());
        assert_eq!(
            e.take_log(5000),
            [
                "meshtrace: 1 export attempt(s) failed with HTTP 503, will retry",
                "meshtrace: 1 batch(es) failed with HTTP 503 after 2 attempt(s), 1 span(s) dropped",
                "meshtrace: 1 export request(s) failed with HTTP 400 (not retryable), 1 span(s) dropped"
            ]
        );
        e.on_result(99, ExportResult::Fail(Failure::Http(400)), 6000);
        assert!(e.take_log(9999).is_empty(), "once per interval");
        assert!(e.take_log(10_000).is_empty(), "nothing new");
    }

    #[test]
    fn a_retryable_refusal_on_the_last_attempt_fails_the_request_with_its_reason() {
        use crate::export::reply::{classify, Reply};
        let mut e =
            exporter(r#","exporter":{"retry":{"initial_ms":10,"max_ms":10,"max_attempts":3}}"#);
        let answer = |e: &mut BatchSpanProcessor, id: u64, status: u32, body: &[u8], now: u64| {
            let reply = Reply {
                status: Some(status),
                body,
                ..Reply::default()
            };
            let result = classify(Protocol::Http, &reply, 0);
            if let Some(reason) = crate::export::rejection::reason(&result, &reply) {
                e.note_rejection(reason);
            }
            e.on_result(id, result, now);
        };
        e.push(&span(1)).unwrap();
        let id = e.poll(1000).unwrap().id;
        answer(&mut e, id, 503, b"overloaded", 1000);
        assert_eq!(e.poll(1010).unwrap().id, id);
        answer(&mut e, id, 429, b"quota", 1010);
        // Retried attempts are not refusals of the request.
        assert_eq!(
            (e.counters.requests_retryable, e.counters.requests_failed),
            (2, 0)
        );
        assert_eq!(e.counters.requests_rejected, 0);
        assert_eq!(e.poll(1030).unwrap().id, id);
        answer(&mut e, id, 429, b"quota exceeded for tenant a", 1030);
        assert_eq!(e.counters.requests_retryable, 2);
        assert_eq!(e.counters.requests_failed, 1);
        assert_eq!(e.counters.requests_rejected, 1);
        assert_eq!(e.counters.spans_dropped_export_failed, 1);
        balanced(&e, 1);
        assert_eq!(
            e.take_log(5000),
            [
                "meshtrace: 1 export attempt(s) failed with HTTP 503, will retry",
                "meshtrace: 1 export attempt(s) failed with HTTP 429, will retry",
                "meshtrace: 1 batch(es) failed with HTTP 429 after 3 attempt(s), 1 span(s) dropped",
                "meshtrace: the collector rejected 1 export request(s); first reason: \"quota exceeded for tenant a\""
            ]
        );
        // No reply on the last attempt: failed, but nothing refused it.
        e.push(&span(2)).unwrap();
        let id = e.poll(6000).unwrap().id;
        for now in [6000, 6010, 6030] {
            if now > 6000 {
                assert_eq!(e.poll(now).unwrap().id, id);
            }
            e.on_result(id, classify(Protocol::Http, &Reply::default(), 0), now);
        }
        assert_eq!(e.counters.requests_failed, 2);
        assert_eq!(e.counters.requests_rejected, 1);
        balanced(&e, 2);
    }

    #[test]
    fn a_rejected_request_is_counted_and_its_first_reason_logged_once_per_interval() {
        use crate::export::reply::{classify, Reply};
        let mut e = exporter(
            r#","batch":{"max_queue":100,"max_batch":1,"flush_interval_ms":10},"exporter":{"max_in_flight":4}"#,
        );
        let refuse = |e: &mut BatchSpanProcessor, body: &[u8], now: u64| {
            let id = e.poll(now).unwrap().id;
            let reply = Reply {
                status: Some(400),
                body,
                ..Reply::default()
            };
            let result = classify(Protocol::Http, &reply, 0);
            if let Some(reason) = crate::export::rejection::reason(&result, &reply) {
                e.note_rejection(reason);
            }
            e.on_result(id, result, now);
        };
        for i in 0..3 {
            e.push(&span(i)).unwrap();
        }
        refuse(&mut e, b"not UTF-8 encoded: \xff", 100);
        refuse(&mut e, b"second reason", 200);
        let id = e.poll(300).unwrap().id;
        e.on_result(id, OK, 300);
        assert_eq!(e.counters.requests_rejected, 2);
        assert_eq!(e.counters.requests_failed, 2);
        assert_eq!(e.counters.spans_dropped_export_failed, 2);
        balanced(&e, 3);
        assert_eq!(
            e.take_log(5000),
            [
                "meshtrace: 2 export request(s) failed with HTTP 400 (not retryable), 2 span(s) dropped",
                "meshtrace: the collector rejected 2 export request(s); first reason: \"not UTF-8 encoded: \u{FFFD}\""
            ]
        );
        e.push(&span(9)).unwrap();
        refuse(&mut e, b"later", 6000);
        assert!(e.take_log(9999).is_empty(), "once per interval");
        assert_eq!(
            e.take_log(10_000)[1],
            "meshtrace: the collector rejected 1 export request(s); first reason: \"later\""
        );
        assert_eq!(e.counters.requests_rejected, 3);
    }

    #[test]
    fn one_log_line_per_kind_with_counts() {
        let mut e = exporter(
            r#","batch":{"max_queue":1000,"max_batch":1,"flush_interval_ms":1000},"exporter":{"max_in_flight":64,"retry":{"max_attempts":1}}"#,
        );
        for i in 0..50 {
            e.push(&span(i)).unwrap();
        }
        for _ in 0..50 {
            let id = e.poll(0).unwrap().id;
            e.on_result(id, ExportResult::Fail(Failure::NoResponse), 0);
        }
        // Final failures do not back off: the next batch goes out on schedule.
        assert_eq!(e.counters.spans_dropped_export_failed, 50);
        assert_eq!(e.held(), 0);
        assert_eq!(
            e.take_log(5000),
            ["meshtrace: 50 export request(s) failed with no response (reset, refused or timed out) (not retryable), 50 span(s) dropped"]
        );
    }

    #[test]
    fn partial_success_is_counted_not_retried() {
        let mut e = exporter("");
        e.push(&span(1)).unwrap();
        e.push(&span(2)).unwrap();
        let id = e.poll(0).unwrap().id;
        e.on_result(id, ExportResult::Ok { rejected: 1 }, 0);
        assert_eq!(
            (e.counters.spans_exported, e.counters.spans_rejected),
            (2, 1)
        );
        assert!(e.poll(5000).is_none());
        assert_eq!(
            e.take_log(5000),
            ["meshtrace: the collector rejected 1 span(s) in partial successes"]
        );
    }

    #[test]
    fn lost_callbacks_free_their_slot() {
        let mut e = exporter(r#","collector":{"cluster":"c","timeout_ms":1000}"#);
        e.push(&span(1)).unwrap();
        let id = e.poll(1000).unwrap().id;
        e.push(&span(2)).unwrap();
        e.push(&span(3)).unwrap();
        let id2 = e.poll(1000).unwrap().id;
        assert!(e.poll(1000 + 11_999).is_none());
        // 2 × timeout + 10 s later both are written off, and the queue moves again.
        e.push(&span(4)).unwrap();
        e.push(&span(5)).unwrap();
        let s = e.poll(1000 + 12_000).unwrap();
        assert_eq!(ids(s.body), vec![4, 5]);
        assert_eq!(e.counters.spans_dropped_export_failed, 3);
        e.on_result(id, OK, 13_001);
        e.on_result(id2, OK, 13_001);
        assert_eq!(e.counters.spans_exported, 0, "late replies are ignored");
        balanced(&e, 5);
    }

    #[test]
    fn bodies_are_byte_for_byte_what_copying_the_spans_built() {
        use crate::export::otlp::ResourceValue;
        use std::io::Read;
        // Spans of about 100 to 600 bytes against batches of 3 spans and 1024 bytes: some
        // requests are cut by count, some by bytes.
        let spans: Vec<SpanRecord> = (0..20u8)
            .map(|i| {
                let mut s = span(i);
                // Non-zero times: proto3 omits zero scalars, which spans always write.
                s.start_ns = 1_700_000_000_000_000_000 + i as u64;
                s.end_ns = s.start_ns + 5_000_000;
                s.set_name(&[&vec![b'n'; 20 + (i as usize * 53) % 500]]);
                s.str("http.route", b"/items/{id}");
                s
            })
            .collect();
        let fields = crate::export::otlp::encode_each(&spans);
        let header = || {
            BatchHeader::new(&[
                ("service.name", ResourceValue::Str("checkout".into())),
                ("k8s.pod.count", ResourceValue::Int(3)),
            ])
        };
        let (mut by_count, mut by_bytes) = (0, 0);
        for (collector, grpc, gzip) in [
            (r#"{"cluster":"c"}"#, false, false),
            (r#"{"cluster":"c","protocol":"grpc"}"#, true, false),
            (r#"{"cluster":"c","compression":"gzip"}"#, false, true),
            (
                r#"{"cluster":"c","protocol":"grpc","compression":"gzip"}"#,
                true,
                true,
            ),
        ] {
            let collector: Collector = serde_json::from_str(collector).unwrap();
            let batch: Batch = serde_json::from_str(
                r#"{"max_queue":100,"max_batch":3,"max_export_bytes":1024,"flush_interval_ms":1000}"#,
            )
            .unwrap();
            let exporter: ExporterConfig = serde_json::from_str(r#"{"max_in_flight":64}"#).unwrap();
            let config = ExportConfig {
                collector: &collector,
                batch: &batch,
                exporter: &exporter,
            };
            let mut e = BatchSpanProcessor::new(config, header(), 0, 7);
            for s in &spans {
                e.push(s).unwrap();
            }
            let (mut next, mut now) = (0, 1);
            while next < spans.len() {
                let Some(r) = e.poll(now) else {
                    now += 1000;
                    continue;
                };
                let mut payload = r.body.to_vec();
                if grpc {
                    assert_eq!(payload[0], gzip as u8);
                    let len = u32::from_be_bytes(payload[1..5].try_into().unwrap());
                    assert_eq!(len as usize, payload.len() - 5);
                    payload.drain(..5);
                }
                let raw = if gzip {
                    let mut raw = Vec::new();
                    flate2::read::GzDecoder::new(&payload[..])
                        .read_to_end(&mut raw)
                        .unwrap();
                    raw
                } else {
                    payload
                };
                // Prost writes the same bytes for what it decodes from them: canonical.
                let req = ExportTraceServiceRequest::decode(&raw[..]).unwrap();
                assert_eq!(req.encode_to_vec(), raw);
                let n = req.resource_spans[0].scope_spans[0].spans.len();
                let mut old = Vec::new();
                header().encode_request(&fields[next..next + n].concat(), &mut old);
                assert_eq!(raw, old, "request from span {next}");
                if n == 3 {
                    by_count += 1;
                } else if next + n < spans.len() {
                    let with_next: usize = fields[next..=next + n].iter().map(Vec::len).sum();
                    assert!(with_next > 1024);
                    by_bytes += 1;
                }
                next += n;
                let id = r.id;
                e.on_result(id, OK, now);
            }
            balanced(&e, spans.len() as u64);
        }
        assert!(by_count > 0 && by_bytes > 0, "{by_count} {by_bytes}");
    }

    #[test]
    fn grpc_framing_and_gzip() {
        use std::io::Read;
        for (extra, gzip, grpc) in [
            (
                r#","collector":{"cluster":"c","protocol":"grpc"}"#,
                false,
                true,
            ),
            (
                r#","collector":{"cluster":"c","protocol":"grpc","compression":"gzip"}"#,
                true,
                true,
            ),
            (
                r#","collector":{"cluster":"c","compression":"gzip"}"#,
                true,
                false,
            ),
        ] {
            let mut e = exporter(extra);
            e.push(&span(9)).unwrap();
            let body = e.poll(1000).unwrap().body.to_vec();
            let payload = if grpc {
                assert_eq!(body[0], gzip as u8);
                let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
                assert_eq!(len, body.len() - 5);
                body[5..].to_vec()
            } else {
                body.clone()
            };
            let raw = if gzip {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&payload[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            } else {
                payload
            };
            assert_eq!(ids(&raw), vec![9]);
            assert_eq!(e.counters.bytes_uncompressed, raw.len() as u64);
            assert_eq!(e.counters.bytes_sent, body.len() as u64);
        }
    }

    #[test]
    fn with_gzip_one_callback_compresses_one_new_body() {
        use std::io::Read;
        let gunzip_ids = |body: &[u8]| {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut raw)
                .unwrap();
            ids(&raw)
        };
        for gzip in [false, true] {
            let extra = if gzip {
                r#","collector":{"cluster":"c","compression":"gzip"}"#
            } else {
                ""
            };
            // Two full batches and two free slots.
            let mut e = exporter(extra);
            for i in 1..=4 {
                e.push(&span(i)).unwrap();
            }
            let first = e.poll(5).unwrap().id;
            if gzip {
                // The second batch waits for the next callback, a millisecond on.
                assert!(e.poll(5).is_none());
                assert_eq!(e.next_wake(), Some(6));
                assert_eq!(e.held(), 4);
                balanced(&e, 4);
                let r = e.poll(6).unwrap();
                assert_eq!(gunzip_ids(r.body), vec![3, 4]);
                let second = r.id;
                assert!(e.poll(6).is_none());
                assert_eq!(e.next_wake(), None);
                // A retry resends its compressed body; a new batch may still be cut then.
                e.on_result(first, retry(Some(1)), 6);
                for i in 5..=6 {
                    e.push(&span(i)).unwrap();
                }
                e.on_result(second, OK, 6);
                let wake = e.next_wake().unwrap();
                let again = e.poll(wake).unwrap();
                assert_eq!(gunzip_ids(again.body), vec![1, 2]);
                let again = again.id;
                let third = e.poll(wake).unwrap();
                assert_eq!(gunzip_ids(third.body), vec![5, 6]);
                let third = third.id;
                e.on_result(again, OK, wake);
                e.on_result(third, OK, wake);
                assert_eq!(e.counters.spans_exported, 6);
                assert_eq!(e.counters.requests_ok, 3);
                balanced(&e, 6);
            } else {
                // Without compression a batch is framed in place: both go out at once.
                assert!(e.poll(5).is_some());
                assert_eq!(e.next_wake(), None);
                assert!(e.poll(5).is_none());
                balanced(&e, 4);
            }
        }
    }

    #[test]
    fn hand_off_chunks_feed_a_singleton() {
        let mut worker = exporter(r#","exporter":{"mode":"shared_queue"}"#);
        worker.push(&span(1)).unwrap();
        assert!(worker.poll(5000).is_none(), "filters never export");
        let mut chunk = Vec::new();
        assert_eq!(worker.next_chunk(999, &mut chunk), None);
        assert_eq!(worker.next_chunk(1000, &mut chunk), Some(1));
        assert_eq!(worker.held(), 0);
        let mut single = exporter(r#","exporter":{"mode":"singleton"}"#);
        single.push_chunk(&chunk);
        single.push_chunk(&chunk);
        single.push_chunk(b"garbage");
        let s = single.poll(1000).unwrap();
        assert_eq!(ids(s.body), vec![1, 1]);
        for _ in 0..3 {
            single.push_chunk(&chunk);
        }
        assert_eq!(single.counters.spans_dropped_queue_full, 0);
        single.push_chunk(&chunk);
        single.push_chunk(&chunk);
        assert_eq!(single.counters.spans_dropped_queue_full, 1);
        worker.on_handoff_failed(3);
        assert_eq!(worker.counters.spans_dropped_export_failed, 3);
        assert_eq!(
            single.take_log(5000),
            [
                "meshtrace: 1 span(s) dropped: queue full",
                "meshtrace: 1 malformed hand-off chunk(s) ignored"
            ]
        );
    }

    #[test]
    fn a_full_batch_goes_out_as_requests_bounded_by_bytes() {
        // The default bounds (2,048 spans a batch, 64 KiB of spans a request), spans of about
        // the size a sidecar's are.
        let mut e =
            exporter(r#","batch":{"max_queue":8192,"max_batch":2048,"flush_interval_ms":1000}"#);
        let sized = |i: u16| {
            let mut s = SpanRecord::default();
            s.span_id = SpanId([(i >> 8) as u8 + 1, i as u8, 1, 1, 1, 1, 1, 1]);
            s.set_name(&[&[b'n'; 392]]);
            s
        };
        let encoded = |range: std::ops::Range<u16>| {
            let mut spans = Vec::new();
            for i in range {
                crate::export::otlp::encode_span(&sized(i), &mut spans);
            }
            let mut body = Vec::new();
            BatchHeader::new(&[]).encode_request(&spans, &mut body);
            body
        };
        let mut one = Vec::new();
        crate::export::otlp::encode_span(&sized(0), &mut one);
        let len = one.len();
        assert_eq!(len, 452);
        let per = (64 << 10) / len;
        assert_eq!(per, 144);
        for i in 0..2048 {
            e.push(&sized(i)).unwrap();
        }
        // Fourteen full requests of 144 spans (65,088 span bytes), two in flight at a time;
        // the last 32 spans wait for the interval.
        let mut sent = Vec::new();
        let mut next = 0u16;
        loop {
            let mut ids = Vec::new();
            while let Some(r) = e.poll(1) {
                let n = ((r.body.len() - encoded(0..0).len()) / len) as u16;
                assert_eq!(r.body, encoded(next..next + n), "request {}", sent.len());
                assert!(r.body.len() <= (64 << 10) + 16);
                next += n;
                sent.push(n);
                ids.push(r.id);
            }
            if ids.is_empty() {
                break;
            }
            assert!(ids.len() <= 2, "max_in_flight");
            for id in ids {
                e.on_result(id, OK, 1);
            }
        }
        assert_eq!(sent, [144; 14]);
        assert_eq!(e.held(), 32);
        // The interval runs from the last cut, at 1 ms.
        assert!(e.poll(1000).is_none());
        let r = e.poll(1001).unwrap();
        assert_eq!(r.body, encoded(2016..2048));
        let id = r.id;
        e.on_result(id, OK, 1001);
        assert_eq!(e.counters.requests_ok, 15);
        assert_eq!(e.counters.spans_exported, 2048);
        assert_eq!(
            e.counters.bytes_sent,
            14 * encoded(0..144).len() as u64 + encoded(0..32).len() as u64
        );
        balanced(&e, 2048);
    }
}
