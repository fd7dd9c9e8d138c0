//! The extension's flush: sends everything the relay holds to the collector and waits for the
//! answer, retrying by the config's `exporter.retry` rules, and never past a deadline.
//!
//! The relay's spans are the function's own `ResourceSpans`, with its resources and scopes;
//! the core's `Exporter` batches only the tracer's spans under one resource, so it cannot
//! carry them. The sending is the bridge's: the same [`HttpExporter`] (hyper, HTTP/1.1 or h2c),
//! the same framing as the export task, and the reply judged by the core's
//! `transport::classify` (OTLP's retryable codes, `Retry-After`, gRPC `RetryInfo`). Only the
//! schedule differs: the export task gives relayed spans one attempt because an application's
//! exporter retries on the relay's 503, but a Lambda function has already had its 200 and the
//! sandbox may freeze right after, so here the extension retries itself, within the time the
//! Lambda event leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshtrace::config::Config;
use meshtrace::export::config::Retry;
use meshtrace::export::reply::ExportResult;
use tokio::sync::watch;

use crate::export::{frame_relayed, HttpExporter};
use crate::shared::{lock, Shared, Stats};

/// What one flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans given up on: not retryable, out of attempts, or out of time.
    pub dropped: u64,
    /// Export requests sent, retries included.
    pub attempts: u32,
}

/// Sends relayed spans on demand.
pub struct Flusher {
    shared: Arc<Shared>,
    transport: HttpExporter,
    config: Config,
    rng: fastrand::Rng,
    /// An early send failed: no more until the next flush, which retries by the rules.
    early_paused: bool,
    /// Set when SHUTDOWN comes, to its deadline (less the margin): an early send in flight
    /// then ends by that deadline rather than the invocation's, which may be far later.
    shutdown: watch::Receiver<Option<Instant>>,
}

impl Flusher {
    /// A flusher of `shared`'s relay buffer through `transport`, retrying by `config`'s
    /// `exporter.retry`; `seed` drives the backoff's jitter and `shutdown` carries the
    /// SHUTDOWN deadline once it is known.
    pub fn new(
        shared: Arc<Shared>,
        transport: HttpExporter,
        config: Config,
        seed: u64,
        shutdown: watch::Receiver<Option<Instant>>,
    ) -> Self {
        Self {
            shutdown,
            shared,
            transport,
            config,
            rng: fastrand::Rng::with_seed(seed),
            early_paused: false,
        }
    }

    /// While an invocation runs and the function keeps sending: one attempt at everything the
    /// relay holds, so the buffer does not fill up (and turn the function's exports away)
    /// before the flush that precedes `next`. What is not delivered goes back into the buffer
    /// for that flush, which retries: an attempt cut short, by the collector or by a freeze of
    /// the sandbox, loses nothing. After a failure, early sends pause until that flush.
    pub async fn send_early(&mut self, until: Instant) -> Flushed {
        let mut out = Flushed::default();
        if self.early_paused {
            return out;
        }
        let (raw, spans) = lock(&self.shared.relay).take();
        if raw.is_empty() {
            return out;
        }
        out.attempts = 1;
        let body = frame_relayed(&self.config, &raw);
        let left = until.saturating_duration_since(Instant::now());
        let mut shutdown = self.shutdown.clone();
        let shutdown_deadline = async move {
            match shutdown.wait_for(Option::is_some).await.map(|at| *at) {
                Ok(Some(at)) => tokio::time::sleep_until(at.into()).await,
                // No extension left to shut down: only the invocation's deadline counts.
                _ => std::future::pending().await,
            }
        };
        let sent = tokio::select! {
            sent = tokio::time::timeout(left, self.transport.send(body)) => sent.ok().map(|(r, _)| r),
            _ = shutdown_deadline => None,
        };
        if matches!(sent, Some(ExportResult::Ok { .. })) {
            Stats::add(&self.shared.stats.relay_spans_exported, spans as u64);
            out.exported = spans as u64;
        } else {
            self.early_paused = true;
            lock(&self.shared.relay).put_back(raw, spans);
        }
        out
    }

    /// Takes everything the relay holds and sends it as one export request, retrying until
    /// the collector accepts it, the retry rules give up, or `until` comes. Returns when the
    /// outcome is known, so whatever the relay had acknowledged before the call is either at
    /// the collector or counted as dropped (`meshtrace_relay_spans_dropped_total`) when this
    /// returns.
    pub async fn flush(&mut self, until: Instant) -> Flushed {
        self.early_paused = false;
        let (raw, spans) = lock(&self.shared.relay).take();
        let mut out = Flushed::default();
        if raw.is_empty() {
            return out;
        }
        let body = frame_relayed(&self.config, &raw);
        let retry = self.config.exporter.retry.clone();
        let spans = spans as u64;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.drop_all(out, spans, "the Lambda deadline came before an answer");
            }
            out.attempts += 1;
            let (result, reason) =
                match tokio::time::timeout(left, self.transport.send(body.clone())).await {
                    Ok(r) => r,
                    Err(_) => {
                        return self.drop_all(
                            out,
                            spans,
                            "the Lambda deadline came before an answer",
                        )
                    }
                };
            // The collector's own words (first 200 bytes, printable) say why it refused, for
            // a final refusal and for a retryable one on the last attempt alike.
            let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
            let (failure, hint) = match result {
                ExportResult::Ok { .. } => {
                    Stats::add(&self.shared.stats.relay_spans_exported, spans);
                    out.exported = spans;
                    return out;
                }
                ExportResult::Fail(f) => {
                    return self.drop_all(out, spans, &format!("{f} (not retryable){why}"));
                }
                ExportResult::Retry { failure, delay_ms } => (failure, delay_ms),
            };
            if out.attempts >= retry.max_attempts {
                return self.drop_all(
                    out,
                    spans,
                    &format!("{failure} after {} attempt(s){why}", out.attempts),
                );
            }
            let delay =
                Duration::from_millis(backoff_ms(&retry, out.attempts, hint, &mut self.rng));
            if Instant::now() + delay >= until {
                return self.drop_all(
                    out,
                    spans,
                    &format!("{failure}, and the next retry would pass the Lambda deadline"),
                );
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn drop_all(&self, mut out: Flushed, spans: u64, why: &str) -> Flushed {
        Stats::add(&self.shared.stats.relay_spans_dropped, spans);
        out.dropped = spans;
        eprintln!("meshtrace-relay: {spans} relayed span(s) dropped: {why}");
        out
    }
}

/// The wait before attempt `attempts + 1`: the collector's own delay when it gave one (capped
/// at `max_ms`), else full-jitter exponential backoff from `initial_ms`, half fixed and half
/// random, as the core's exporter schedules its batches.
pub fn backoff_ms(retry: &Retry, attempts: u32, hint: Option<u64>, rng: &mut fastrand::Rng) -> u64 {
    if let Some(d) = hint {
        return d.min(retry.max_ms);
    }
    let exp = attempts.saturating_sub(1).min(32);
    let ceiling = retry
        .initial_ms
        .saturating_mul(1u64 << exp)
        .min(retry.max_ms);
    ceiling / 2 + rng.u64(0..=ceiling - ceiling / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_hint_then_doubles_within_max() {
        let retry = Retry {
            initial_ms: 100,
            max_ms: 1000,
            max_attempts: 5,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        assert_eq!(backoff_ms(&retry, 1, Some(250), &mut rng), 250);
        assert_eq!(backoff_ms(&retry, 1, Some(60_000), &mut rng), 1000);
        for (attempts, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let d = backoff_ms(&retry, attempts, None, &mut rng);
                assert!((ceiling / 2..=ceiling).contains(&d), "{attempts}: {d}");
            }
        }
    }
}
