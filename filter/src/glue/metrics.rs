//! Envoy stats for meshtrace: counted inside the VM on the request path, pushed to the host as
//! deltas on the flush tick, so counting costs a request no host call.

use proxy_wasm::types::MetricType;

use crate::exporter::Counters;

/// Request-path counts kept in the VM, pushed to Envoy's stats on the tick.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub started: u64,
    pub sampled: u64,
}

/// Envoy stat ids (by position in [`METRICS`]) and the values last pushed, so the tick sends
/// deltas.
#[derive(Default)]
pub struct Metrics {
    ids: Vec<Option<u32>>,
    pushed: [u64; METRICS.len()],
}

pub const METRICS: [&str; 9] = [
    "meshtrace.spans_started",
    "meshtrace.spans_sampled",
    "meshtrace.spans_exported",
    "meshtrace.spans_dropped.queue_full",
    "meshtrace.spans_dropped.too_large",
    "meshtrace.spans_dropped.export_failed",
    "meshtrace.export_requests.ok",
    "meshtrace.export_requests.failed",
    "meshtrace.export_bytes",
];

fn metric_values(s: &Stats, c: &Counters) -> [u64; METRICS.len()] {
    [
        s.started,
        s.sampled,
        c.spans_exported,
        c.spans_dropped_queue_full,
        c.spans_dropped_too_large,
        c.spans_dropped_export_failed,
        c.export_ok,
        c.export_failed,
        c.bytes_sent,
    ]
}

impl Metrics {
    /// Defines every stat once per root context.
    pub fn define(&mut self) {
        if self.ids.is_empty() {
            self.ids = METRICS
                .iter()
                .map(|name| proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok())
                .collect();
        }
    }

    /// Pushes what changed since the last push.
    pub fn push(&mut self, stats: &Stats, counters: &Counters) {
        let values = metric_values(stats, counters);
        for (i, id) in self.ids.iter().enumerate() {
            let Some(id) = id else { continue };
            let delta = values[i].saturating_sub(self.pushed[i]);
            if delta > 0 && proxy_wasm::hostcalls::increment_metric(*id, delta as i64).is_ok() {
                self.pushed[i] = values[i];
            }
        }
    }
}
