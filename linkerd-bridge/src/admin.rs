//! The admin endpoint: `/metrics` (Prometheus text), `/ready` and `/live`.
//!
//! The counters are the filter's (`meshtrace.*` stats in Envoy) under Prometheus names, plus
//! what only a proxy in its own process can count.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;

use crate::shared::{lock, Shared, Stats};

/// Renders every counter in the Prometheus text exposition format.
pub fn metrics_text(shared: &Shared) -> String {
    let (c, queued, overflow) = {
        let core = lock(&shared.core);
        (core.counters(), core.held(), core.tracer.names.overflow())
    };
    let s = &shared.stats;
    let counters: [(&str, &str, u64); 21] = [
        (
            "meshtrace_spans_started_total",
            "Requests seen.",
            Stats::get(&s.started),
        ),
        (
            "meshtrace_spans_sampled_total",
            "Requests traced.",
            Stats::get(&s.sampled),
        ),
        (
            "meshtrace_spans_kept_total",
            "Unsampled requests exported by the always-keep rules.",
            Stats::get(&s.kept),
        ),
        (
            "meshtrace_spans_exported_total",
            "Spans the collector accepted.",
            c.spans_exported,
        ),
        (
            "meshtrace_spans_rejected_total",
            "Spans the collector refused in a partial success.",
            c.spans_rejected,
        ),
        (
            "meshtrace_spans_dropped_queue_full_total",
            "Spans dropped: export queue full.",
            c.spans_dropped_queue_full,
        ),
        (
            "meshtrace_spans_dropped_too_large_total",
            "Spans dropped: larger than the queue.",
            c.spans_dropped_too_large,
        ),
        (
            "meshtrace_spans_dropped_export_failed_total",
            "Spans dropped: export failed after retries.",
            c.spans_dropped_export_failed,
        ),
        (
            "meshtrace_export_requests_ok_total",
            "Export attempts accepted.",
            c.requests_ok,
        ),
        (
            "meshtrace_export_requests_retryable_total",
            "Export attempts failed with a retryable outcome.",
            c.requests_retryable,
        ),
        (
            "meshtrace_export_requests_failed_total",
            "Export attempts failed for good.",
            c.requests_failed,
        ),
        (
            "meshtrace_export_requests_rejected_total",
            "Export attempts the collector refused (final 4xx or gRPC status), with a reason.",
            c.requests_rejected,
        ),
        (
            "meshtrace_export_retries_total",
            "Sends of a batch after its first.",
            c.retries,
        ),
        (
            "meshtrace_export_bytes_uncompressed_total",
            "Export request bytes before compression (every attempt).",
            c.bytes_uncompressed,
        ),
        (
            "meshtrace_export_bytes_sent_total",
            "Export request bytes sent (every attempt).",
            c.bytes_sent,
        ),
        (
            "meshtrace_bridge_upstream_errors_total",
            "Requests answered 502: the application was unreachable.",
            Stats::get(&s.upstream_errors),
        ),
        (
            "meshtrace_bridge_upstream_timeouts_total",
            "Requests answered 504: the application was too slow.",
            Stats::get(&s.upstream_timeouts),
        ),
        (
            "meshtrace_relay_spans_accepted_total",
            "Application spans accepted by the relay.",
            Stats::get(&s.relay_spans_accepted),
        ),
        (
            "meshtrace_relay_spans_exported_total",
            "Relayed spans the collector accepted.",
            Stats::get(&s.relay_spans_exported),
        ),
        (
            "meshtrace_relay_spans_dropped_total",
            "Relayed spans dropped (buffer full or export failed).",
            Stats::get(&s.relay_spans_dropped),
        ),
        (
            "meshtrace_span_names_overflow_total",
            "Span names that fell back to {method}: the set of distinct names was full.",
            overflow,
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP meshtrace_export_queue_spans Spans held for export: queued, waiting for a retry, or in flight.\n# TYPE meshtrace_export_queue_spans gauge\nmeshtrace_export_queue_spans {queued}"
    );
    out
}

/// Answers one admin request.
pub fn handle<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics_text(shared),
        ),
        "/live" => (StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" if shared.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /ready or /live\n".into(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
