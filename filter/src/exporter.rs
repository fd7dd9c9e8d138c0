//! Export scheduling, host-independent: when to send a batch, what the result means, and what
//! to log about failures (one line per kind per interval, never one per span).
//!
//! The adapter owns the transport (`dispatch_http_call` in Envoy, hyper natively); this module
//! owns the decisions so both adapters behave the same and the rules are unit-tested.

use crate::batch::{DropReason, SpanQueue};
use crate::config::Config;
use crate::otlp::BatchHeader;
use crate::span::SpanRecord;

/// How one export request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportResult {
    /// 2xx from the collector.
    Ok,
    /// A non-2xx HTTP status.
    Status(u32),
    /// No response: reset, refused, or timed out before headers.
    NoResponse,
    /// The host refused to send it (unknown cluster, bad headers).
    DispatchFailed,
}

/// Counters the adapter exposes as metrics; monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub spans_queued: u64,
    pub spans_exported: u64,
    pub spans_dropped_queue_full: u64,
    pub spans_dropped_too_large: u64,
    pub spans_dropped_export_failed: u64,
    pub export_ok: u64,
    pub export_failed: u64,
    pub bytes_sent: u64,
}

/// Failures since the last log line.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    queue_full: u64,
    failed_requests: u64,
    failed_spans: u64,
    last_failure: Option<ExportResult>,
}

/// Per-VM export state.
#[derive(Debug)]
pub struct Exporter {
    queue: SpanQueue,
    header: BatchHeader,
    flush_interval_ms: u64,
    last_flush_ms: u64,
    last_log_ms: u64,
    pending: Pending,
    pub counters: Counters,
}

impl Exporter {
    pub fn new(config: &Config, header: BatchHeader, now_ms: u64) -> Self {
        let b = &config.batch;
        Self {
            // The byte bound protects memory: 64 KiB per queued span on average is far above
            // any real span, and the issue's queue-bytes setting refines it.
            queue: SpanQueue::new(b.max_queue, b.max_queue as u64 * 64 * 1024, b.max_batch),
            header,
            flush_interval_ms: b.flush_interval_ms,
            last_flush_ms: now_ms,
            last_log_ms: now_ms,
            pending: Pending::default(),
            counters: Counters::default(),
        }
    }

    /// Encodes a finished span into the queue; a full queue drops it and counts it.
    pub fn push(&mut self, span: &SpanRecord) -> Result<(), DropReason> {
        let r = self.queue.push(span);
        match r {
            Ok(()) => self.counters.spans_queued += 1,
            Err(DropReason::QueueFull) => {
                self.counters.spans_dropped_queue_full += 1;
                self.pending.queue_full += 1;
            }
            Err(DropReason::TooLarge) => self.counters.spans_dropped_too_large += 1,
        }
        r
    }

    /// Spans waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True when a batch should go out now: a full batch, or spans older than the interval.
    pub fn due(&self, now_ms: u64) -> bool {
        !self.queue.is_empty()
            && (self.queue.batch_ready()
                || now_ms.saturating_sub(self.last_flush_ms) >= self.flush_interval_ms)
    }

    /// Cuts the next batch into `body`; returns its span count, or `None` when nothing is due.
    pub fn next_batch(&mut self, now_ms: u64, body: &mut Vec<u8>) -> Option<usize> {
        if !self.due(now_ms) {
            return None;
        }
        self.last_flush_ms = now_ms;
        Some(self.queue.take_batch(&self.header, body))
    }

    /// Records how a batch of `spans` spans (and `bytes` bytes) ended.
    pub fn on_result(&mut self, spans: usize, bytes: usize, result: ExportResult) {
        let spans = spans as u64;
        if result == ExportResult::Ok {
            self.counters.export_ok += 1;
            self.counters.spans_exported += spans;
            self.counters.bytes_sent += bytes as u64;
        } else {
            self.counters.export_failed += 1;
            self.counters.spans_dropped_export_failed += spans;
            self.pending.failed_requests += 1;
            self.pending.failed_spans += spans;
            self.pending.last_failure = Some(result);
        }
    }

    /// At most once per flush interval, a summary of what failed since the last summary.
    pub fn take_log(&mut self, now_ms: u64) -> Option<String> {
        if now_ms.saturating_sub(self.last_log_ms) < self.flush_interval_ms {
            return None;
        }
        let p = core::mem::take(&mut self.pending);
        self.last_log_ms = now_ms;
        let mut parts = Vec::new();
        if p.failed_requests > 0 {
            let why = match p.last_failure {
                Some(ExportResult::Status(s)) => format!("last: HTTP {s}"),
                Some(ExportResult::NoResponse) => {
                    "last: no response (reset, refused or timed out)".into()
                }
                Some(ExportResult::DispatchFailed) => {
                    "last: the host refused the call; is collector.cluster a defined cluster?"
                        .into()
                }
                _ => String::new(),
            };
            parts.push(format!(
                "{} export request(s) failed, {} span(s) dropped ({why})",
                p.failed_requests, p.failed_spans
            ));
        }
        if p.queue_full > 0 {
            parts.push(format!("{} span(s) dropped: queue full", p.queue_full));
        }
        (!parts.is_empty()).then(|| format!("meshtrace: {}", parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporter() -> Exporter {
        let cfg = Config::from_json(
            br#"{"collector":{"cluster":"c"},"batch":{"max_queue":4,"max_batch":2,"flush_interval_ms":1000}}"#,
        )
        .unwrap();
        Exporter::new(&cfg, BatchHeader::new(&[]), 0)
    }

    #[test]
    fn interval_and_full_batch() {
        let mut e = exporter();
        let mut body = Vec::new();
        let span = SpanRecord::default();
        e.push(&span).unwrap();
        assert_eq!(e.next_batch(999, &mut body), None);
        assert_eq!(e.next_batch(1000, &mut body), Some(1));
        e.push(&span).unwrap();
        e.push(&span).unwrap();
        // A full batch goes out before the interval.
        assert_eq!(e.next_batch(1001, &mut body), Some(2));
        for _ in 0..4 {
            e.push(&span).unwrap();
        }
        assert_eq!(e.push(&span), Err(DropReason::QueueFull));
        assert_eq!(e.counters.spans_dropped_queue_full, 1);
    }

    #[test]
    fn failures_logged_once_per_interval() {
        let mut e = exporter();
        e.on_result(3, 100, ExportResult::Status(503));
        e.on_result(2, 100, ExportResult::NoResponse);
        assert_eq!(e.take_log(500), None);
        let line = e.take_log(1000).unwrap();
        assert_eq!(
            line,
            "meshtrace: 2 export request(s) failed, 5 span(s) dropped (last: no response (reset, refused or timed out))"
        );
        assert_eq!(e.take_log(2000), None);
        assert_eq!(e.counters.spans_dropped_export_failed, 5);
        e.on_result(1, 10, ExportResult::Ok);
        assert_eq!((e.counters.spans_exported, e.counters.bytes_sent), (1, 10));
    }
}
