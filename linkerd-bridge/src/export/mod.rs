//! The export task: drives the core's exporter on tokio. Every decision (when a batch is cut,
//! how many are in flight, whether and when to retry) is the core's `BatchSpanProcessor`; this task only
//! polls it, sends what it returns, and reports each reply, the way the wasm glue does with
//! Envoy's HTTP calls. Requests never wait on it: while the collector is slow the core's bounded
//! queue fills and drops.

pub mod http;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meshtrace::config::Config;
use meshtrace::export::config::{Compression, Protocol};
use meshtrace::export::reply::ExportResult;
use tokio::sync::{mpsc, watch};

use crate::adapter::now_ms;
use crate::shared::{lock, Shared, Stats};
pub use http::HttpExporter;

/// Longest pause between polls; the core decides whether a batch is due.
const POLL: Duration = Duration::from_millis(100);

/// A finished export request: the core's id (`None` for relayed spans), its outcome, and the
/// collector's reason when it refused the request.
type Done = (Option<u64>, usize, ExportResult, Option<String>);

/// Frames relayed spans the way the core frames its batches: gzip when configured, and the
/// gRPC length prefix. Relayed bytes are whole `ResourceSpans` fields, which already make an
/// `ExportTraceServiceRequest`.
pub(crate) fn frame_relayed(config: &Config, raw: &[u8]) -> Bytes {
    let gzip = config.collector.compression == Compression::Gzip;
    let grpc = config.collector.protocol == Protocol::Grpc;
    let mut body = Vec::with_capacity(raw.len() + 5);
    if grpc {
        body.extend_from_slice(&[u8::from(gzip), 0, 0, 0, 0]);
    }
    let start = body.len();
    if gzip {
        meshtrace::export::gzip::compress(raw, &mut body);
    } else {
        body.extend_from_slice(raw);
    }
    if grpc {
        let len = u32::try_from(body.len() - start).unwrap_or(u32::MAX);
        body[1..5].copy_from_slice(&len.to_be_bytes());
    }
    Bytes::from(body)
}

struct Task {
    shared: Arc<Shared>,
    exporter: Arc<HttpExporter>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    in_flight: usize,
}

impl Task {
    fn spawn_send(&mut self, id: Option<u64>, relayed: usize, body: Bytes) {
        let exporter = self.exporter.clone();
        let tx = self.done_tx.clone();
        self.in_flight += 1;
        tokio::spawn(async move {
            let (result, reason) = exporter.send(body).await;
            // The receiver lives as long as the task that waits for every send.
            let _ = tx.send((id, relayed, result, reason));
        });
    }

    /// Sends everything the core has ready at `now`, and any relayed spans.
    fn dispatch(&mut self, now: u64) {
        let ready: Vec<(u64, Bytes)> = {
            let mut core = lock(&self.shared.core);
            std::iter::from_fn(|| core.poll(now)).collect()
        };
        for (id, body) in ready {
            self.spawn_send(Some(id), 0, body);
        }
        let (relayed, spans) = lock(&self.shared.relay).take();
        if !relayed.is_empty() {
            let body = frame_relayed(&lock(&self.shared.core).tracer.config, &relayed);
            self.spawn_send(None, spans, body);
        }
    }

    fn complete(&mut self, (id, relayed, result, reason): Done, now: u64) {
        self.in_flight -= 1;
        match id {
            Some(id) => {
                let mut core = lock(&self.shared.core);
                if let Some(reason) = reason {
                    core.note_rejection(reason);
                }
                core.on_result(id, result, now);
            }
            None => {
                // Relayed spans get one attempt: the application's exporter retries on its
                // side, and the core's queue is not theirs.
                let counter = if matches!(result, ExportResult::Ok { .. }) {
                    &self.shared.stats.relay_spans_exported
                } else {
                    &self.shared.stats.relay_spans_dropped
                };
                Stats::add(counter, relayed as u64);
            }
        }
    }

    fn log(&self, now: u64) {
        for line in lock(&self.shared.core).take_log(now) {
            eprintln!("linkerd-bridge: {line}");
        }
    }
}

/// Runs until `stop` turns true, then sends everything still queued (one attempt per batch)
/// and returns.
pub async fn run(shared: Arc<Shared>, exporter: HttpExporter, mut stop: watch::Receiver<bool>) {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (interval, timeout_ms) = {
        let core = lock(&shared.core);
        (
            core.flush_interval_ms(),
            core.tracer.config.collector.timeout_ms,
        )
    };
    let poll = POLL.min(Duration::from_millis(interval.max(1)));
    let mut t = Task {
        shared,
        exporter: Arc::new(exporter),
        done_tx,
        done_rx,
        in_flight: 0,
    };
    let mut stopping = *stop.borrow();
    while !stopping {
        let now = now_ms();
        t.dispatch(now);
        t.log(now);
        // A retry coming due sooner than the next poll is woken for exactly.
        let wait = lock(&t.shared.core).next_wake().map_or(poll, |at| {
            Duration::from_millis(at.saturating_sub(now)).min(poll)
        });
        tokio::select! {
            Some(done) = t.done_rx.recv() => t.complete(done, now_ms()),
            _ = t.shared.export_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            // A dropped sender means the bridge is gone: stop as if told to.
            changed = stop.changed() => stopping = changed.is_err() || *stop.borrow(),
        }
    }
    // Shutdown: let the requests in flight end, then send what is queued, each batch once (the
    // clock is moved past the flush interval so the core cuts the partial batch). Bounded, so
    // a dead collector cannot hold the pod's termination.
    let mut later = now_ms();
    let drain = async {
        loop {
            while t.in_flight > 0 {
                match t.done_rx.recv().await {
                    Some(done) => t.complete(done, now_ms()),
                    None => return,
                }
            }
            // Each round a further interval on, so the core always sees the partial batch due.
            later = later.max(now_ms()).saturating_add(interval.max(1));
            t.dispatch(later);
            if t.in_flight == 0 {
                return;
            }
        }
    };
    let limit = Duration::from_millis(timeout_ms.saturating_mul(2).max(1000));
    let _ = tokio::time::timeout(limit, drain).await;
    // The last summary is written at exit whatever the interval, so no failure goes
    // unreported.
    t.log(u64::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn config(collector: &str) -> Config {
        Config::from_json(format!(r#"{{"collector":{{"cluster":"c"{collector}}}}}"#).as_bytes())
            .unwrap()
    }

    #[test]
    fn relayed_spans_are_framed_like_core_batches() {
        let raw = b"\x0a\x03abc".repeat(20);
        assert_eq!(frame_relayed(&config(""), &raw), Bytes::from(raw.clone()));
        let grpc = frame_relayed(&config(r#","protocol":"grpc""#), &raw);
        assert_eq!(grpc[0], 0);
        assert_eq!(&grpc[1..5], &(raw.len() as u32).to_be_bytes());
        assert_eq!(&grpc[5..], raw.as_slice());
        let gz = frame_relayed(&config(r#","protocol":"grpc","compression":"gzip""#), &raw);
        assert_eq!(gz[0], 1);
        assert_eq!(&gz[1..5], &((gz.len() - 5) as u32).to_be_bytes());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[5..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, raw);
    }
}
