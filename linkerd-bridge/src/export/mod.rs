//! The export task: cuts batches from the core's queue (and relayed spans), sends them over
//! OTLP/HTTP or OTLP/gRPC, retries per the OTLP rules, and records the outcome in the core's
//! counters. One batch is in flight at a time: while the collector is slow the bounded queue
//! fills and drops, and requests never wait.

pub mod grpc;
pub mod http;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meshtrace::exporter::ExportResult;
use tokio::sync::watch;

use crate::adapter::now_ns;
use crate::config::{Endpoint, Protocol};
use crate::shared::{lock, Shared, Stats};
use retry::Attempt;

/// The wire to the collector.
pub enum Transport {
    // Built once per process: the size difference between variants costs nothing.
    Http(Box<http::HttpExport>),
    Grpc(grpc::GrpcExport),
}

impl Transport {
    pub fn new(endpoint: &Endpoint) -> Result<Self, String> {
        Ok(match endpoint.protocol {
            Protocol::Http => Self::Http(Box::new(http::HttpExport::new(endpoint)?)),
            Protocol::Grpc => Self::Grpc(grpc::GrpcExport::new(endpoint)?),
        })
    }

    /// Prepares the body once for every attempt (gRPC compresses per message itself).
    fn encode(&self, body: &[u8]) -> Bytes {
        match self {
            Self::Http(h) => h.encode(body),
            Self::Grpc(_) => Bytes::copy_from_slice(body),
        }
    }

    async fn send(&self, body: Bytes) -> Attempt {
        match self {
            Self::Http(h) => h.send(body).await,
            Self::Grpc(g) => g.send(body).await,
        }
    }
}

/// Longest pause between queue checks; the core decides whether a batch is due.
const POLL: Duration = Duration::from_millis(100);

fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Runs until `stop` turns true, then sends everything still queued (one attempt per batch)
/// and returns.
pub async fn run(
    shared: Arc<Shared>,
    transport: Transport,
    max_attempts: u32,
    mut stop: watch::Receiver<bool>,
) {
    let poll = {
        let interval = lock(&shared.core).flush_interval_ms();
        POLL.min(Duration::from_millis(interval))
    };
    let mut body = Vec::new();
    let mut stopping = false;
    loop {
        stopping = stopping || *stop.borrow();
        flush(
            &shared,
            &transport,
            &mut body,
            max_attempts,
            stopping,
            &mut stop,
        )
        .await;
        // The last summary is written at exit whatever the interval, so no failure goes
        // unreported.
        let log_at = if stopping { u64::MAX } else { now_ms() };
        if let Some(line) = lock(&shared.core).take_log(log_at) {
            eprintln!("{line}");
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = shared.export_wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            // A dropped sender means the bridge is gone: stop as if told to.
            changed = stop.changed() => stopping = changed.is_err(),
        }
    }
}

/// Sends every due batch; with `force`, everything queued.
async fn flush(
    shared: &Shared,
    transport: &Transport,
    body: &mut Vec<u8>,
    max_attempts: u32,
    force: bool,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        let spans = lock(&shared.core).next_batch(now_ms(), force, body);
        let spans = match spans {
            Some(n) => n,
            None => {
                body.clear();
                0
            }
        };
        let (relayed, relayed_spans) = lock(&shared.relay).take();
        if spans == 0 && relayed.is_empty() {
            return;
        }
        // Relayed requests are whole `ResourceSpans` fields: appending them to an encoded
        // request adds resources to it.
        body.extend_from_slice(&relayed);
        let bytes = body.len();
        let payload = transport.encode(body);
        let attempts = if force { 1 } else { max_attempts.max(1) };
        let result = send_with_retries(shared, transport, payload, attempts, stop).await;
        if spans > 0 {
            lock(&shared.core).on_result(spans, bytes, result);
        }
        let relay_counter = if result == ExportResult::Ok {
            &shared.stats.relay_spans_exported
        } else {
            &shared.stats.relay_spans_dropped
        };
        Stats::add(relay_counter, relayed_spans as u64);
    }
}

/// Up to `attempts` attempts with backoff; a stop request cuts the wait short for a final try.
async fn send_with_retries(
    shared: &Shared,
    transport: &Transport,
    payload: Bytes,
    mut attempts: u32,
    stop: &mut watch::Receiver<bool>,
) -> ExportResult {
    let mut attempt = 1;
    loop {
        match transport.send(payload.clone()).await {
            Attempt::Ok => return ExportResult::Ok,
            Attempt::Fail(r) => return r,
            Attempt::Retry { result, after } => {
                if attempt >= attempts || *stop.borrow() {
                    return result;
                }
                Stats::add(&shared.stats.export_retries, 1);
                let wait = retry::delay(attempt, after, fastrand::f64());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // Shutting down: one last attempt now instead of the wait.
                    _ = stop.changed() => attempts = attempt + 1,
                }
                attempt += 1;
            }
        }
    }
}
