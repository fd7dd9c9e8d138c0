//! Sending batches to the collector and reading the collector's answer.

use std::time::Duration;

use proxy_wasm::traits::Context;

use super::Worker;
use crate::exporter::ExportResult;

/// Sends every due batch to the collector. `ctx` must be the root context: Envoy attributes
/// calls to the root, and only the root outlives the collector's reply.
pub fn flush(ctx: &dyn Context, w: &mut Worker, now: u64) {
    let c = &w.tracer.config.collector;
    let headers = [
        (":method", "POST"),
        (":path", c.path.as_str()),
        (":authority", c.authority()),
        ("content-type", "application/x-protobuf"),
        (
            "user-agent",
            concat!("meshtrace/", env!("CARGO_PKG_VERSION")),
        ),
    ];
    let timeout = Duration::from_millis(c.timeout_ms);
    while let Some(spans) = w.exporter.next_batch(now, &mut w.body) {
        let bytes = w.body.len();
        match ctx.dispatch_http_call(&c.cluster, headers.to_vec(), Some(&w.body), vec![], timeout) {
            Ok(token) => {
                w.in_flight.insert(token, (spans, bytes));
            }
            Err(_) => w
                .exporter
                .on_result(spans, bytes, ExportResult::DispatchFailed),
        }
    }
}

/// Classifies the collector's reply to call `token` and records it.
pub fn on_response(ctx: &dyn Context, w: &mut Worker, token: u32, num_headers: usize) {
    let result = if num_headers == 0 {
        ExportResult::NoResponse
    } else {
        let status = ctx
            .get_http_call_response_header(":status")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            ExportResult::Ok
        } else {
            ExportResult::Status(status)
        }
    };
    if let Some((spans, bytes)) = w.in_flight.remove(&token) {
        w.exporter.on_result(spans, bytes, result);
    }
}
