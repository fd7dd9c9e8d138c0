//! Collector fault scenarios under client load, shared by the end-to-end tests (short runs,
//! exact assertions) and `make bench-faults` (long runs, latency percentiles).
//!
//! Each scenario runs real Envoy with the filter exporting per worker to an OTLP/HTTP sink
//! that misbehaves for part of the run, while client threads send requests throughout. The
//! outcome holds what every scenario must prove: client statuses and latencies, the stats the
//! accounting invariant is checked on, Envoy's memory, and spans received after recovery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::envoy::{envoy_binary, free_port, http_request, wasm_path, Envoy, EnvoyVars};
use crate::sink::{OtlpSink, SinkMode, Upstream};

/// What goes wrong with the collector, during the middle of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the baseline.
    Healthy,
    /// No collector listening for the first half; it starts halfway.
    AbsentAtStart,
    /// Killed after a third of the run, restarted on the same port after two thirds.
    KilledAndRestarted,
    /// `503` with `Retry-After: 1` for the first half.
    Throttled,
    /// Accepts and reads requests but never answers, for the first half.
    NeverAnswers,
}

impl Fault {
    /// Every scenario, healthy first.
    pub const ALL: [Fault; 5] = [
        Fault::Healthy,
        Fault::AbsentAtStart,
        Fault::KilledAndRestarted,
        Fault::Throttled,
        Fault::NeverAnswers,
    ];

    /// The scenario's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Healthy => "healthy",
            Fault::AbsentAtStart => "collector absent at start",
            Fault::KilledAndRestarted => "collector killed and restarted",
            Fault::Throttled => "503 with Retry-After",
            Fault::NeverAnswers => "collector never answers",
        }
    }
}

/// Who exports: each worker, or one singleton fed by a shared queue (with two workers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// Each worker exports.
    PerWorker,
    /// A bootstrap singleton exports for two workers.
    Singleton,
}

impl Deployment {
    /// The deployment's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Deployment::PerWorker => "per-worker",
            Deployment::Singleton => "singleton",
        }
    }

    /// Envoy's template and variables for this deployment around [`FAULT_CONFIG`].
    fn configure(self, vars: &mut EnvoyVars) -> &'static str {
        match self {
            Deployment::PerWorker => "per-worker.yaml",
            Deployment::Singleton => {
                let mut exporter: serde_json::Value =
                    serde_json::from_str(FAULT_CONFIG).unwrap_or_default();
                exporter["exporter"]["mode"] = "singleton".into();
                vars.exporter_config = exporter.to_string();
                vars.plugin_config = r#"{"collector":{"cluster":"otel_collector"},"batch":{"max_queue":2048,"max_batch":256,"flush_interval_ms":200},"exporter":{"mode":"shared_queue"}}"#.into();
                vars.concurrency = 2;
                "singleton.yaml"
            }
        }
    }
}

/// The filter configuration every scenario uses: small bounds so faults reach them quickly.
pub const FAULT_CONFIG: &str = r#"{"service_name":"faults","collector":{"cluster":"otel_collector","timeout_ms":1000},"batch":{"max_queue":2048,"max_queue_bytes":1048576,"max_batch":256,"flush_interval_ms":200},"exporter":{"max_in_flight":2,"retry":{"initial_ms":200,"max_ms":2000,"max_attempts":4}}}"#;
/// `batch.max_queue_bytes` of [`FAULT_CONFIG`].
pub const FAULT_MAX_QUEUE_BYTES: u64 = 1 << 20;

/// How a scenario went.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Client latencies, microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// Client requests that did not get a 200 (or no response at all).
    pub failed_requests: u64,
    /// Stats after the run settled (`meshtrace.*` name → value).
    pub stats: Vec<(String, u64)>,
    /// Envoy's heap (`/memory` `allocated`) before the load and after the run.
    pub memory_before: u64,
    /// Envoy's heap after the run.
    pub memory_after: u64,
    /// Spans the collector received after the fault ended.
    pub spans_after_recovery: u64,
    /// The highest queue-bytes gauge seen while the fault lasted.
    pub max_queue_bytes_seen: u64,
    /// Whether `sampled == exported + dropped + queued` held once the run settled.
    pub balanced: bool,
}

impl Outcome {
    /// The stat `name` after the run; 0 when absent.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }

    /// The `p`th percentile (0–100) client latency, in microseconds.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p / 100.0).round() as usize;
        self.latencies_us[i]
    }

    /// `exported + dropped + queued` and `sampled`, from the stats.
    pub fn accounting(&self) -> (u64, u64) {
        accounting(&self.stats)
    }
}

fn accounting(stats: &[(String, u64)]) -> (u64, u64) {
    let get = |n: &str| {
        stats
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    let out = get("meshtrace.spans_exported")
        + get("meshtrace.spans_dropped.queue_full")
        + get("meshtrace.spans_dropped.too_large")
        + get("meshtrace.spans_dropped.export_failed")
        + get("meshtrace.queue_spans");
    // Spans enter the queue when sampled or kept by an always-keep rule.
    (
        get("meshtrace.spans_sampled") + get("meshtrace.spans_kept"),
        out,
    )
}

/// Every `meshtrace.` stat, named from `meshtrace.` on (Envoy may prefix custom stats).
pub fn meshtrace_stats(envoy: &Envoy) -> Vec<(String, u64)> {
    envoy
        .stats("meshtrace.")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k[k.find("meshtrace.")?..].to_string(), v)))
        .collect()
}

/// Polls until the accounting invariant (sampled + kept = exported + dropped + queued) holds with nothing in flight on the client side, or
/// `timeout` passes; returns the last stats and whether it held.
pub fn settle(envoy: &Envoy, timeout: Duration) -> (Vec<(String, u64)>, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = meshtrace_stats(envoy);
        let (sampled, out) = accounting(&stats);
        if (sampled > 0 && sampled == out) || Instant::now() > deadline {
            return (stats, sampled > 0 && sampled == out);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Envoy's allocated heap in bytes, from admin `/memory`.
pub fn memory(envoy: &Envoy) -> u64 {
    let Ok(r) = http_request(envoy.vars.admin_port, "GET", "/memory", &[], b"") else {
        return 0;
    };
    // {"allocated": "123", ...}: the value is a quoted number.
    r.body
        .split_once("\"allocated\"")
        .and_then(|(_, rest)| {
            rest.trim_start_matches([':', ' ', '"'])
                .split('"')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Client threads sending `GET /load` until stopped, recording latencies and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(Vec<u64>, u64)>>,
}

impl Load {
    /// Starts `clients` threads sending requests to `port` until stopped.
    pub fn start(port: u16, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut lat, mut failed) = (Vec::new(), 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match http_request(port, "GET", "/load", &[], b"") {
                            Ok(r) if r.status == 200 => lat.push(t.elapsed().as_micros() as u64),
                            _ => failed += 1,
                        }
                    }
                    (lat, failed)
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the clients; returns sorted latencies (µs) and the failed request count.
    pub fn stop(self) -> (Vec<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut all, mut failed) = (Vec::new(), 0);
        for t in self.threads {
            if let Ok((l, f)) = t.join() {
                all.extend(l);
                failed += f;
            }
        }
        all.sort_unstable();
        (all, failed)
    }
}

/// Runs one scenario (`deployment` exporting) for `duration` of load with `clients` client
/// threads.
///
/// # Errors
/// When Envoy or the filter is missing (naming the `make` target), or a part fails to start.
pub fn run(
    fault: Fault,
    deployment: Deployment,
    duration: Duration,
    clients: usize,
) -> anyhow::Result<Outcome> {
    let binary = envoy_binary()?;
    let upstream = Upstream::start()?;
    let port = free_port();
    let sink = Arc::new(Mutex::new(match fault {
        Fault::AbsentAtStart => None,
        _ => {
            let s = OtlpSink::start(port)?;
            s.count_only();
            Some(s)
        }
    }));
    let set_mode = |mode: SinkMode| {
        if let Some(s) = crate::sink::lock(&sink).as_ref() {
            s.set_mode(mode);
        }
    };
    match fault {
        Fault::Throttled => set_mode(SinkMode::Throttle {
            status: 503,
            retry_after_s: 1,
        }),
        Fault::NeverAnswers => set_mode(SinkMode::Hang),
        _ => {}
    }
    let mut vars = EnvoyVars::new(wasm_path()?, upstream.addr.port(), port, FAULT_CONFIG);
    let template = deployment.configure(&mut vars);
    let envoy = Envoy::start(&binary, template, vars)?;
    let memory_before = memory(&envoy);
    let load = Load::start(envoy.vars.listen_port, clients);
    let start = Instant::now();
    let at = |f: f64| start + duration.mul_f64(f);
    let mut max_queue_bytes_seen = 0;
    let mut sample_queue = |envoy: &Envoy| {
        max_queue_bytes_seen = max_queue_bytes_seen.max(envoy.stat("meshtrace.queue_bytes"));
    };
    let sleep_until = |t: Instant, envoy: &Envoy, sample: &mut dyn FnMut(&Envoy)| {
        while Instant::now() < t {
            sample(envoy);
            // Keep the upstream's record from growing for the whole run.
            let _ = upstream.take();
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let start_sink = || -> anyhow::Result<OtlpSink> {
        let s = OtlpSink::start(port).context("restarting the sink on its port")?;
        s.count_only();
        Ok(s)
    };
    match fault {
        Fault::Healthy => sleep_until(at(1.0), &envoy, &mut sample_queue),
        Fault::AbsentAtStart => {
            sleep_until(at(0.5), &envoy, &mut sample_queue);
            *crate::sink::lock(&sink) = Some(start_sink()?);
            sleep_until(at(1.0), &envoy, &mut sample_queue);
        }
        Fault::KilledAndRestarted => {
            sleep_until(at(1.0 / 3.0), &envoy, &mut sample_queue);
            crate::sink::lock(&sink).take();
            sleep_until(at(2.0 / 3.0), &envoy, &mut sample_queue);
            *crate::sink::lock(&sink) = Some(start_sink()?);
            sleep_until(at(1.0), &envoy, &mut sample_queue);
        }
        Fault::Throttled | Fault::NeverAnswers => {
            sleep_until(at(0.5), &envoy, &mut sample_queue);
            set_mode(SinkMode::Ok);
            sleep_until(at(1.0), &envoy, &mut sample_queue);
        }
    }
    let (latencies_us, failed_requests) = load.stop();
    // Everything sampled must come out the other end: exported, dropped, or still queued.
    let (stats, balanced) = settle(&envoy, Duration::from_secs(30));
    // The failing sinks recorded nothing and restarted ones start from zero, so everything
    // the sink holds arrived after the fault ended.
    let spans_after_recovery = sink_spans(&sink);
    let memory_after = memory(&envoy);
    let _ = upstream.take();
    Ok(Outcome {
        latencies_us,
        failed_requests,
        stats,
        memory_before,
        memory_after,
        spans_after_recovery,
        max_queue_bytes_seen,
        balanced,
    })
}

fn sink_spans(sink: &Mutex<Option<OtlpSink>>) -> u64 {
    crate::sink::lock(sink)
        .as_ref()
        .map(|s| s.counts().1)
        .unwrap_or(0)
}
