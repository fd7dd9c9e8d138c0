//! Thin proxy-wasm glue: gather what a request carries in as few host calls as possible, hand
//! it to the core, apply what the core returns.
//!
//! Host calls per request: unsampled, 2 (the header map, the injected `traceparent`); sampled,
//! 2 more clock reads and 3–4 properties in `on_log`. Metrics are accumulated in the VM and
//! pushed to the host on the tick, not per request.

mod export;
mod host;
mod metrics;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::config::{Config, Direction, ExportMode};
use crate::exporter::Exporter;
use crate::headers::{pairs, RequestHeaders};
use crate::propagation::counters;
use crate::span::{SpanKind, SpanRecord};
use crate::tracer::{Finish, Injection, Tracer};
use metrics::{metric_values, CounterSet, Stats, Values, METRICS};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Per-VM (per Envoy worker) state shared by the root context and every HTTP context.
struct Worker {
    tracer: Tracer,
    exporter: Exporter,
    /// Span records returned by finished requests, reused by new ones.
    pool: Vec<SpanRecord>,
    injection: Injection,
    /// Hand-off chunk buffer (shared-queue filters), reused.
    body: Vec<u8>,
    calls: export::Calls,
    /// Built once: every export request's headers.
    export_headers: Vec<(String, String)>,
    /// Shared-queue filters: the singleton's queue; the singleton: its own.
    queue: Option<u32>,
    stats: Stats,
    /// The tick was shortened to flush a full batch; restore the interval after it.
    fast_tick: bool,
    /// The tick period in force, ms.
    tick_ms: u64,
    /// Malformed headers per format and baggage drops.
    propagation: counters::Counters,
}

#[derive(Default)]
struct Root {
    worker: Option<Rc<RefCell<Worker>>>,
    metrics: CounterSet,
    /// The counters of [`counters::NAMES`].
    propagation_metrics: CounterSet,
}

fn log(level: LogLevel, msg: &str) {
    // Logging must never take the VM down; a failed log call is dropped.
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

fn now_ms() -> u64 {
    host::now_ns() / 1_000_000
}

/// A seed from the host's entropy: std's `RandomState` draws its keys from WASI `random_get`.
fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(host::now_ns())
}

/// Stats reach Envoy at least this often, even with a long flush interval.
const REPORT_MS: u64 = 1000;

/// The regular tick: the flush interval, but often enough to report stats.
fn tick_interval(config: &Config) -> u64 {
    config.batch.flush_interval_ms.min(REPORT_MS)
}

impl Root {
    fn configure(&mut self, raw: &[u8]) -> Result<(), String> {
        let config = Config::from_json(raw).map_err(|e| e.to_string())?;
        let mode = config.exporter.mode;
        let tracer = Tracer::new(config, seed());
        let exporter = Exporter::new(
            &tracer.config,
            tracer.batch_header.clone(),
            now_ms(),
            seed(),
        );
        let interval = tick_interval(&tracer.config);
        let mut worker = Worker {
            tracer,
            exporter,
            pool: Vec::new(),
            injection: Injection::default(),
            body: Vec::new(),
            calls: export::Calls::default(),
            export_headers: Vec::new(),
            queue: None,
            stats: Stats::default(),
            fast_tick: false,
            tick_ms: interval,
            propagation: counters::Counters::default(),
        };
        worker.export_headers = export::request_headers(&worker);
        if mode == ExportMode::Singleton {
            worker.queue = export::register_queue();
        }
        self.worker = Some(Rc::new(RefCell::new(worker)));
        self.metrics.define_typed(&METRICS);
        self.propagation_metrics.define(&counters::NAMES);
        self.set_tick_period(Duration::from_millis(interval));
        Ok(())
    }

    /// Exports (or hands off) whatever is due, per the configured mode.
    fn export(&self, w: &mut Worker, now: u64) {
        match w.tracer.config.exporter.mode {
            ExportMode::PerWorker => export::flush(self, w, now),
            ExportMode::SharedQueue => export::hand_off(w, now),
            ExportMode::Singleton => match w.queue {
                Some(q) => export::drain(self, w, q),
                None => export::flush(self, w, now),
            },
        }
    }

    /// The tick period: the flush interval, shortened to wake for a retry that comes due
    /// sooner; changed only when it differs, to spare host calls.
    fn retune_tick(&self, w: &mut Worker, now: u64) {
        let interval = tick_interval(&w.tracer.config);
        let want = match w.exporter.next_wake() {
            Some(at) if at < now + interval => at.saturating_sub(now).max(1),
            _ => interval,
        };
        if want != w.tick_ms
            && proxy_wasm::hostcalls::set_tick_period(Duration::from_millis(want)).is_ok()
        {
            w.tick_ms = want;
        }
    }

    /// Pushes counter deltas to Envoy's stats and logs any failure summary.
    fn report(&mut self, now: u64) {
        let Some(w) = &self.worker else { return };
        let mut w = w.borrow_mut();
        self.metrics.push(metric_values(&Values {
            stats: &w.stats,
            counters: &w.exporter.counters,
            queue_spans: w.exporter.held(),
            queue_bytes: w.exporter.queued_bytes(),
            exports: w.tracer.config.exporter.mode != ExportMode::SharedQueue,
        }));
        self.propagation_metrics
            .push(w.propagation.values().map(|(_, v)| v));
        for line in w.exporter.take_log(now) {
            log(LogLevel::Warn, &line);
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(w) = &self.worker {
            let mut w = w.borrow_mut();
            export::on_response(&mut w, token, num_headers, body_size);
            // A freed slot or a retry may let the next batch go now rather than next tick.
            let now = now_ms();
            self.export(&mut w, now);
            self.retune_tick(&mut w, now);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match self.configure(&raw) {
            Ok(()) => true,
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("meshtrace: invalid configuration: {e}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        if let Some(w) = &self.worker {
            self.export(&mut w.borrow_mut(), now);
        }
        self.report(now);
        if let Some(w) = &self.worker {
            let mut w = w.borrow_mut();
            if w.fast_tick {
                // The 1 ms tick set from a stream context is in force; retune from it.
                w.fast_tick = false;
                w.tick_ms = 1;
            }
            self.retune_tick(&mut w, now);
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(w) = &self.worker {
            export::drain(self, &mut w.borrow_mut(), queue_id);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Http { worker, span: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream.
struct Http {
    worker: Rc<RefCell<Worker>>,
    /// The span being built; present only for sampled requests.
    span: Option<SpanRecord>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let buf = host::header_map(host::REQUEST_HEADERS).unwrap_or_default();
        let headers = RequestHeaders::from_pairs(pairs(&buf));
        let mut w = self.worker.borrow_mut();
        let w = &mut *w;
        w.stats.started += 1;
        let decision = w.tracer.start(&headers);
        w.propagation.record(
            decision.malformed,
            &decision.baggage.stats,
            decision.link.is_some(),
        );
        w.tracer.inject(&decision, &headers, &mut w.injection);
        for (name, value) in w.injection.headers() {
            host::replace_header(host::REQUEST_HEADERS, name, value);
        }
        for name in &w.injection.remove {
            host::remove_header(host::REQUEST_HEADERS, name);
        }
        if decision.sampled() {
            w.stats.sampled += 1;
            let mut rec = w.pool.pop().unwrap_or_default();
            w.tracer
                .begin_span(&decision, &headers, host::now_ns(), &mut rec);
            self.span = Some(rec);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(mut rec) = self.span.take() else {
            return;
        };
        let mut w = self.worker.borrow_mut();
        let w = &mut *w;
        let kind = match w.tracer.config.direction {
            Direction::Inbound => SpanKind::Server,
            Direction::Outbound => SpanKind::Client,
            // core.v3.TrafficDirection: 2 is OUTBOUND; unknown and INBOUND give SERVER.
            Direction::Auto => match host::property_i64(b"xds\0listener_direction") {
                Some(2) => SpanKind::Client,
                _ => SpanKind::Server,
            },
        };
        let protocol = host::property(b"request\0protocol");
        let source = host::property(b"source\0address");
        let finish = Finish {
            end_ns: host::now_ns(),
            status_code: host::property_i64(b"response\0code"),
            protocol: protocol.as_deref(),
            source_address: source.as_deref(),
            kind,
        };
        w.tracer.finish_span(&mut rec, &finish);
        let _ = w.exporter.push(&rec);
        w.pool.push(rec);
        if w.exporter.due(finish.end_ns / 1_000_000) && !w.fast_tick {
            // A full batch goes out now rather than at the interval. Exports are dispatched by
            // the root only: a call made here would answer to this stream's context, which is
            // deleted before the collector replies. A 1 ms tick hands the batch to the root.
            w.fast_tick = proxy_wasm::hostcalls::set_tick_period(Duration::from_millis(1)).is_ok();
        }
    }
}
