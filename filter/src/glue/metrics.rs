//! Envoy stats for meshtrace: counted inside the VM on the request path, pushed to the host as
//! deltas on the flush tick, so counting costs a request no host call.

use proxy_wasm::types::MetricType;

use crate::exporter::Counters;

/// Request-path counts kept in the VM, pushed to Envoy's stats on the tick.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub started: u64,
    pub sampled: u64,
    /// Unsampled requests exported by the always-keep rules.
    pub kept: u64,
}

pub const METRICS: [&str; 10] = [
    "meshtrace.spans_started",
    "meshtrace.spans_sampled",
    "meshtrace.spans_kept",
    "meshtrace.spans_exported",
    "meshtrace.spans_dropped.queue_full",
    "meshtrace.spans_dropped.too_large",
    "meshtrace.spans_dropped.export_failed",
    "meshtrace.export_requests.ok",
    "meshtrace.export_requests.failed",
    "meshtrace.export_bytes",
];

/// The values of [`METRICS`], in order.
pub fn metric_values(s: &Stats, c: &Counters) -> [u64; METRICS.len()] {
    [
        s.started,
        s.sampled,
        s.kept,
        c.spans_exported,
        c.spans_dropped_queue_full,
        c.spans_dropped_too_large,
        c.spans_dropped_export_failed,
        c.export_ok,
        c.export_failed,
        c.bytes_sent,
    ]
}

/// A set of Envoy counters defined once per root context and pushed as deltas, so a failed or
/// late push loses nothing.
#[derive(Default)]
pub struct CounterSet {
    ids: Vec<Option<u32>>,
    pushed: Vec<u64>,
}

impl CounterSet {
    /// Defines the counters (once; later calls are no-ops).
    pub fn define(&mut self, names: &[&str]) {
        if self.ids.is_empty() {
            self.ids = names
                .iter()
                .map(|name| proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok())
                .collect();
            self.pushed = vec![0; names.len()];
        }
    }

    /// Pushes what changed since the last push; `values` are totals in definition order.
    pub fn push(&mut self, values: impl IntoIterator<Item = u64>) {
        for ((id, pushed), value) in self.ids.iter().zip(self.pushed.iter_mut()).zip(values) {
            let Some(id) = id else { continue };
            let delta = value.saturating_sub(*pushed);
            if delta > 0 && proxy_wasm::hostcalls::increment_metric(*id, delta as i64).is_ok() {
                *pushed = value;
            }
        }
    }
}
