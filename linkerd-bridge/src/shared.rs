//! State shared by the proxy, the exporter task, the relay and the admin endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::adapter::Core;
use crate::relay::RelayBuffer;

/// Request-path counters kept outside any lock.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests seen.
    pub started: AtomicU64,
    /// Requests sampled.
    pub sampled: AtomicU64,
    /// Unsampled requests exported by the always-keep rules.
    pub kept: AtomicU64,
    /// Requests the application failed to answer.
    pub upstream_errors: AtomicU64,
    /// Requests the application answered too late.
    pub upstream_timeouts: AtomicU64,
    /// Relayed spans accepted.
    pub relay_spans_accepted: AtomicU64,
    /// Relayed spans dropped (buffer full).
    pub relay_spans_dropped: AtomicU64,
    /// Relayed spans exported.
    pub relay_spans_exported: AtomicU64,
}

impl Stats {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One per process.
pub struct Shared {
    /// The tracer and the export queue, behind one short-held lock.
    pub core: Mutex<Core>,
    /// Relayed OTLP waiting for export.
    pub relay: Mutex<RelayBuffer>,
    /// The request-path counters.
    pub stats: Stats,
    /// Wakes the exporter when a batch fills up, so it need not wait for the interval.
    pub export_wake: Notify,
    /// False while draining: `/ready` fails so the kubelet stops routing here.
    pub ready: AtomicBool,
}

/// Locks `m`, recovering from poisoning: a panicked holder must not stop tracing for good.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
