//! Envoy stats for meshtrace: counted inside the VM on the request path, pushed to the host as
//! deltas on the flush tick, so counting costs a request no host call.

use proxy_wasm::types::MetricType;

use crate::export::span_processor::Counters;

/// Request-path counts kept in the VM, pushed to Envoy's stats on the tick.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub started: u64,
    pub sampled: u64,
    /// Unsampled requests exported anyway by always-keep sampling rules.
    pub kept: u64,
    /// Exported spans of gRPC calls.
    pub grpc_calls: u64,
    /// gRPC calls whose response carried no `grpc-status` (the status was inferred).
    pub grpc_status_missing: u64,
    /// `grpc-status` values that are not a canonical code (recorded as `UNKNOWN`).
    pub grpc_status_invalid: u64,
    /// Exported CLIENT spans of Lambda invocations (`faas.lambda`).
    pub lambda_invocations: u64,
    /// Lambda invocations answered with `X-Amz-Function-Error`.
    pub lambda_function_errors: u64,
    /// `X-Amz-Log-Result` values that were not base64 of a log with a `REPORT` line.
    pub lambda_log_invalid: u64,
}

/// Every stat, its kind, and (by position) its value in [`metric_values`].
pub const METRICS: [(&str, MetricType); 27] = [
    ("meshtrace.spans_started", MetricType::Counter),
    ("meshtrace.spans_sampled", MetricType::Counter),
    ("meshtrace.spans_kept", MetricType::Counter),
    ("meshtrace.spans_exported", MetricType::Counter),
    ("meshtrace.spans_rejected", MetricType::Counter),
    ("meshtrace.spans_dropped.queue_full", MetricType::Counter),
    ("meshtrace.spans_dropped.too_large", MetricType::Counter),
    ("meshtrace.spans_dropped.export_failed", MetricType::Counter),
    ("meshtrace.export_requests.ok", MetricType::Counter),
    ("meshtrace.export_requests.retryable", MetricType::Counter),
    ("meshtrace.export_requests.failed", MetricType::Counter),
    ("meshtrace.export_retries", MetricType::Counter),
    ("meshtrace.export_bytes.uncompressed", MetricType::Counter),
    ("meshtrace.export_bytes.sent", MetricType::Counter),
    ("meshtrace.queue_spans", MetricType::Gauge),
    ("meshtrace.queue_bytes", MetricType::Gauge),
    ("meshtrace.export_vms", MetricType::Gauge),
    ("meshtrace.connection_facts.cached", MetricType::Counter),
    ("meshtrace.connection_facts.read", MetricType::Counter),
    ("meshtrace.grpc.calls", MetricType::Counter),
    ("meshtrace.grpc.status_missing", MetricType::Counter),
    ("meshtrace.grpc.status_invalid", MetricType::Counter),
    ("meshtrace.span_names.overflow", MetricType::Counter),
    ("meshtrace.export_requests.rejected", MetricType::Counter),
    ("meshtrace.lambda.invocations", MetricType::Counter),
    ("meshtrace.lambda.function_errors", MetricType::Counter),
    ("meshtrace.lambda.log_result_invalid", MetricType::Counter),
];

/// This VM's current values, in [`METRICS`] order.
pub struct Values<'a> {
    pub stats: &'a Stats,
    pub counters: &'a Counters,
    pub queue_spans: u64,
    pub queue_bytes: u64,
    /// 1 when this VM exports (per-worker or singleton), 0 for a shared-queue filter.
    pub exports: bool,
    /// Recorded requests whose connection facts came from the cache, and those that read them.
    pub connections_cached: u64,
    pub connections_read: u64,
    /// Span names that fell back to `{method}`: the VM's set of distinct names was full.
    pub span_names_overflow: u64,
}

pub fn metric_values(v: &Values<'_>) -> [u64; METRICS.len()] {
    let (s, c) = (v.stats, v.counters);
    [
        s.started,
        s.sampled,
        s.kept,
        c.spans_exported,
        c.spans_rejected,
        c.spans_dropped_queue_full,
        c.spans_dropped_too_large,
        c.spans_dropped_export_failed,
        c.requests_ok,
        c.requests_retryable,
        c.requests_failed,
        c.retries,
        c.bytes_uncompressed,
        c.bytes_sent,
        v.queue_spans,
        v.queue_bytes,
        v.exports as u64,
        v.connections_cached,
        v.connections_read,
        s.grpc_calls,
        s.grpc_status_missing,
        s.grpc_status_invalid,
        v.span_names_overflow,
        c.requests_rejected,
        s.lambda_invocations,
        s.lambda_function_errors,
        s.lambda_log_invalid,
    ]
}

/// The RED metrics' stats, defined only when `metrics.enabled`.
pub const RED_STATS: [&str; 5] = [
    "meshtrace.metrics.requests",
    "meshtrace.metrics.series_overflow",
    "meshtrace.metrics.export_requests.ok",
    "meshtrace.metrics.export_requests.failed",
    "meshtrace.metrics.rejected_points",
];

/// This VM's values of [`RED_STATS`].
pub fn red_values(
    m: &crate::metrics::Metrics,
    e: &super::export::MetricsExport,
) -> [u64; RED_STATS.len()] {
    [
        m.recorded,
        m.red.overflowed,
        e.ok,
        e.failed,
        e.rejected_points,
    ]
}

/// A set of Envoy stats defined once per root context and pushed as deltas, so a failed or
/// late push loses nothing. Gauges are pushed as (possibly negative) deltas too: each VM adds
/// its own share, so the stat is the process total rather than whichever VM wrote last.
#[derive(Default)]
pub struct CounterSet {
    ids: Vec<Option<u32>>,
    pushed: Vec<u64>,
}

impl CounterSet {
    /// Defines counters (once; later calls are no-ops).
    pub fn define(&mut self, names: &[&str]) {
        let typed: Vec<(&str, MetricType)> =
            names.iter().map(|n| (*n, MetricType::Counter)).collect();
        self.define_typed(&typed);
    }

    /// Defines stats of the given kinds (once; later calls are no-ops).
    pub fn define_typed(&mut self, defs: &[(&str, MetricType)]) {
        if self.ids.is_empty() {
            self.ids = defs
                .iter()
                .map(|(name, kind)| proxy_wasm::hostcalls::define_metric(*kind, name).ok())
                .collect();
            self.pushed = vec![0; defs.len()];
        }
    }

    /// Pushes what changed since the last push; `values` are totals in definition order.
    pub fn push(&mut self, values: impl IntoIterator<Item = u64>) {
        for ((id, pushed), value) in self.ids.iter().zip(self.pushed.iter_mut()).zip(values) {
            let Some(id) = id else { continue };
            let delta = value as i64 - *pushed as i64;
            if delta != 0 && proxy_wasm::hostcalls::increment_metric(*id, delta).is_ok() {
                *pushed = value;
            }
        }
    }
}
