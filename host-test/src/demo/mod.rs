//! `make demo`: a small mesh on 127.0.0.1 whose traces show what meshtrace is for.
//!
//! [`mesh`] starts four workloads, each behind its own Envoy with the filter: a `frontend` that
//! really calls a `backend` split 90/10 between a `stable` (v1) and a slightly broken `canary`
//! (v2) release over mTLS, a gRPC `greeter`, and a `recommendations` route where Envoy injects a
//! fault. [`run`] sends traffic, then prints a few traces as trees ([`tree`]), RED metrics per
//! release ([`red`]), each sidecar's `/stats` accounting, and writes the same traces as an HTML
//! waterfall ([`html`]).

pub mod apps;
pub mod html;
pub mod mesh;
pub mod red;
pub mod tree;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::envoy::http_request;
pub use mesh::{binaries, Binaries, Mesh};
use red::Red;
use tree::{ServiceSpan, Trace};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Envoy and the filter.
    pub binaries: Binaries,
    /// Where the HTML waterfall is written (`dist/demo.html` for `make demo`).
    pub html: PathBuf,
    /// `GET /api/products/{id}` requests sent through the canary split.
    pub split_requests: u32,
}

/// The user requests the demo sends besides the split ones, and what each shows.
pub const EXTRA_REQUESTS: [(&str, &str); 2] = [
    (
        "/api/checkout",
        "the frontend calls the gRPC greeter, then the backend",
    ),
    (
        "/api/home",
        "the frontend calls recommendations; Envoy's fault filter aborts it with 503",
    ),
];

/// Spans one user request produces, by path: the frontend's SERVER span, one CLIENT span per
/// call it makes, and a SERVER span per call that reaches a sidecar.
pub fn spans_per_request(path: &str) -> usize {
    match path {
        "/api/checkout" => 5,
        "/api/home" => 2,
        _ => 3,
    }
}

/// One sidecar's `meshtrace.*` counters from Envoy's admin `/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SidecarStats {
    /// The workload.
    pub workload: String,
    /// `spans_started`.
    pub started: u64,
    /// `spans_sampled`.
    pub sampled: u64,
    /// `spans_kept`.
    pub kept: u64,
    /// `spans_exported`.
    pub exported: u64,
    /// The sum of `spans_dropped.*`.
    pub dropped: u64,
    /// `queue_spans`.
    pub queued: u64,
    /// `metrics.requests`: requests counted into the RED metrics.
    pub red_counted: u64,
    /// `metrics.export_requests.ok`: metrics export requests the collector accepted.
    pub metric_exports: u64,
}

impl SidecarStats {
    /// The accounting invariant: every recorded span is exported, dropped or still queued.
    pub fn balanced(&self) -> bool {
        self.sampled + self.kept == self.exported + self.dropped + self.queued
    }
}

/// What a run produced, for the test and for callers that want more than the text.
pub struct Outcome {
    /// Every span the collector received, with its service.
    pub spans: Vec<ServiceSpan>,
    /// Every trace.
    pub traces: Vec<Trace>,
    /// The traces printed (and written to the HTML), with their captions.
    pub shown: Vec<(String, Trace)>,
    /// The user requests sent: (path, status).
    pub sent: Vec<(String, u16)>,
    /// Calls the frontend made to `backend` (one per split request, one per checkout).
    pub backend_calls: u64,
    /// RED per release as the frontend app observed it.
    pub observed: BTreeMap<String, Red>,
    /// RED per release from the CLIENT spans.
    pub from_spans: BTreeMap<String, Red>,
    /// RED per release from the span metrics the sidecars exported.
    pub from_metrics: BTreeMap<String, Red>,
    /// Each sidecar's accounting once its queue drained.
    pub stats: Vec<SidecarStats>,
    /// Where the HTML was written.
    pub html: PathBuf,
}

fn sidecar_stats(s: &mesh::Sidecar) -> SidecarStats {
    let all = s.envoy.stats("meshtrace.").unwrap_or_default();
    let get = |suffix: &str| {
        all.iter()
            .find(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    SidecarStats {
        workload: s.workload.to_string(),
        started: get("meshtrace.spans_started"),
        sampled: get("meshtrace.spans_sampled"),
        kept: get("meshtrace.spans_kept"),
        exported: get("meshtrace.spans_exported"),
        dropped: all
            .iter()
            .filter(|(k, _)| k.contains("meshtrace.spans_dropped."))
            .map(|(_, v)| v)
            .sum(),
        queued: get("meshtrace.queue_spans"),
        red_counted: get("meshtrace.metrics.requests"),
        metric_exports: get("meshtrace.metrics.export_requests.ok"),
    }
}

/// The `/stats` accounting, one line per sidecar, then what the check mark means.
pub fn stats_table(stats: &[SidecarStats]) -> String {
    let mut out = format!(
        "  {:<11} {:>8} {:>8} {:>5} {:>9} {:>8} {:>7} {:>12} {:>15}\n",
        "sidecar",
        "started",
        "sampled",
        "kept",
        "exported",
        "dropped",
        "queued",
        "RED counted",
        "metric exports"
    );
    for s in stats {
        out.push_str(&format!(
            "  {:<11} {:>8} {:>8} {:>5} {:>9} {:>8} {:>7} {:>12} {:>15}   {}\n",
            s.workload,
            s.started,
            s.sampled,
            s.kept,
            s.exported,
            s.dropped,
            s.queued,
            s.red_counted,
            s.metric_exports,
            if s.balanced() { "✓" } else { "NOT BALANCED" }
        ));
    }
    out.push_str(
        "  ✓: sampled + kept = exported + dropped + queued (every recorded span accounted for)\n",
    );
    out
}

/// Every sidecar's accounting once its queue has drained and, when it counted requests into
/// the RED metrics, it has exported them (at most 10 s later; the report shows what it got).
fn settled_stats(m: &Mesh) -> Vec<SidecarStats> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats: Vec<SidecarStats> = m.sidecars.iter().map(sidecar_stats).collect();
        let settled = stats.iter().all(|s| {
            s.queued == 0
                && s.balanced()
                && s.started > 0
                && (s.red_counted == 0 || s.metric_exports > 0)
        });
        if settled || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Picks the traces worth printing: a call served by the stable release, one by the canary (a
/// failed one when there is one), the checkout (gRPC) and the home page (injected fault).
pub fn representative(traces: &[Trace]) -> Vec<(String, Trace)> {
    let root_path = |t: &Trace| t.root().and_then(|r| r.attr("url.path"));
    let client_release = |t: &Trace| {
        t.spans
            .iter()
            .find(|s| s.span.kind == 3)
            .and_then(|s| s.attr("mesh.release"))
    };
    let is_product = |t: &Trace| {
        root_path(t).is_some_and(|p| p.starts_with("/api/products/")) && t.spans.len() == 3
    };
    let failed = |t: &Trace| t.spans.iter().any(ServiceSpan::is_error);
    let mut out = Vec::new();
    if let Some(t) = traces
        .iter()
        .find(|t| is_product(t) && client_release(t).as_deref() == Some("stable"))
    {
        out.push((
            "a product page, served by the stable release (v1, 90% of calls):".to_string(),
            t.clone(),
        ));
    }
    let canary = |t: &&Trace| is_product(t) && client_release(t).as_deref() == Some("canary");
    if let Some(t) = traces
        .iter()
        .filter(canary)
        .find(|t| failed(t))
        .or_else(|| traces.iter().find(canary))
    {
        out.push((
            "a product page, served by the canary (v2, 10% of calls, fails 1 in 4):".to_string(),
            t.clone(),
        ));
    }
    for (path, caption) in EXTRA_REQUESTS {
        if let Some(t) = traces
            .iter()
            .find(|t| root_path(t).as_deref() == Some(path))
        {
            out.push((format!("GET {path}: {caption}:"), t.clone()));
        }
    }
    out
}

/// Starts the mesh, sends the traffic, and writes the report to `out` and the HTML waterfall
/// to `opts.html`.
///
/// # Errors
/// When the mesh does not start, a request cannot be sent, or a file cannot be written. A
/// collector that receives fewer spans than expected is not an error: the report shows it.
pub fn run(opts: &Options, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let began = Instant::now();
    let m = Mesh::start(&opts.binaries)?;
    let port = |i: usize| m.sidecars[i].envoy.vars.listen_port;
    writeln!(
        out,
        "meshtrace demo: 4 workloads on 127.0.0.1, each behind its own Envoy running {}\n",
        opts.binaries.wasm.display()
    )?;
    let first = format!(
        "  user ─> frontend sidecar :{} ─> frontend app ─> outbound :{} ─┬─ mTLS, 90% ─> backend-v1 sidecar :{} (stable)",
        m.entry_port(),
        m.frontend_outbound_port(),
        port(1),
    );
    let fork = " ".repeat(first.chars().take_while(|&c| c != '┬').count());
    writeln!(out, "{first}")?;
    writeln!(
        out,
        "{fork}├─ mTLS, 10% ─> backend-v2 sidecar :{} (canary, fails 1 call in 4)",
        port(2)
    )?;
    writeln!(out, "{fork}├─ mTLS, gRPC ─> greeter sidecar :{}", port(3))?;
    writeln!(
        out,
        "{fork}└─ recommendations: Envoy's fault filter aborts every call with 503"
    )?;
    writeln!(
        out,
        "  every sidecar exports OTLP/HTTP to the collector 127.0.0.1:{} (sampling 100%, flush every {} ms)\n",
        m.sink.addr.port(),
        mesh::FLUSH_INTERVAL_MS
    )?;

    let mut paths: Vec<String> = (1..=opts.split_requests)
        .map(|i| format!("/api/products/{i}"))
        .collect();
    paths.extend(EXTRA_REQUESTS.iter().map(|(p, _)| p.to_string()));
    let load_began = Instant::now();
    let mut sent = Vec::with_capacity(paths.len());
    for path in &paths {
        let r = http_request(m.entry_port(), "GET", path, &[("host", "frontend")], b"")
            .with_context(|| format!("GET {path} to the frontend sidecar"))?;
        sent.push((path.clone(), r.status));
    }
    let load_took = load_began.elapsed();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, s) in &sent {
        *by_status.entry(*s).or_default() += 1;
    }
    writeln!(
        out,
        "sent {} × GET /api/products/{{id}}, then GET /api/checkout and GET /api/home in {:.1} s: {}",
        opts.split_requests,
        load_took.as_secs_f64(),
        by_status
            .iter()
            .map(|(s, n)| format!("{n} × {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;

    let expected: usize = paths.iter().map(|p| spans_per_request(p)).sum();
    m.sink.wait_spans(expected, Duration::from_secs(20));
    let spans = tree::collect(&m.sink.received());
    let traces = tree::group(spans.clone());
    writeln!(
        out,
        "the collector received {} spans (expected {expected}) in {} traces\n",
        spans.len(),
        traces.len()
    )?;

    let shown = representative(&traces);
    writeln!(
        out,
        "── {} of the {} traces, as trees (service, kind, span name, duration bar scaled to the trace, mesh tags) ──\n",
        shown.len(),
        traces.len()
    )?;
    for (caption, t) in &shown {
        writeln!(out, "{caption}")?;
        writeln!(out, "{}", tree::render(t))?;
    }

    let observed = red::from_observed(&m.observed());
    let from_spans = red::from_spans(&spans);
    let backend_calls: u64 = m.observed().by_version.values().map(|c| c.calls).sum();
    // The sidecars export their RED metrics every flush interval; wait for the interval that
    // holds the last call.
    let deadline = Instant::now() + Duration::from_secs(10);
    let from_metrics = loop {
        let requests: Vec<_> = m
            .sink
            .metric_requests()
            .into_iter()
            .map(|r| r.request)
            .collect();
        let red = red::from_metrics(&requests);
        let calls: u64 = red.values().map(|r| r.calls).sum();
        if calls >= backend_calls || Instant::now() > deadline {
            break red;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stats = settled_stats(&m);
    writeln!(
        out,
        "── RED metrics per release: the frontend's {backend_calls} calls to backend ──\n"
    )?;
    writeln!(
        out,
        "  span metrics: the sidecars' {} and {} (delta, every request), p50/p99 estimated from the buckets\n",
        red::CALLS_METRIC,
        red::DURATION_METRIC
    )?;
    let red_table = red::render(&observed, &from_spans, Some(&from_metrics));
    writeln!(out, "{red_table}")?;

    writeln!(
        out,
        "── each sidecar's /stats (wasmcustom.meshtrace.*) ──\n"
    )?;
    let stats_table = stats_table(&stats);
    writeln!(out, "{stats_table}")?;

    let page = html::render(
        "meshtrace demo: traces of a small mesh",
        &format!(
            "{} traces of {} from a frontend, a 90/10 canary split of backend over mTLS, a gRPC call and an injected fault; every sidecar is Envoy with meshtrace.",
            shown.len(),
            traces.len()
        ),
        &shown,
        &[
            (
                format!("RED metrics per release: the frontend's {backend_calls} calls to backend"),
                red_table,
            ),
            ("Each sidecar's /stats".to_string(), stats_table),
        ],
    );
    if let Some(dir) = opts.html.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&opts.html, page).with_context(|| format!("writing {}", opts.html.display()))?;
    writeln!(
        out,
        "HTML waterfall of these traces, with the tables: {} (self-contained; open it in a browser)",
        opts.html.display()
    )?;
    writeln!(out, "done in {:.1} s", began.elapsed().as_secs_f64())?;
    Ok(Outcome {
        spans,
        traces,
        shown,
        sent,
        backend_calls,
        observed,
        from_spans,
        from_metrics,
        stats,
        html: opts.html.clone(),
    })
}
