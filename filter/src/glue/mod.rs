//! Thin proxy-wasm glue: gather what a request carries in as few host calls as possible, hand
//! it to the core, apply what the core returns.
//!
//! Each host call costs about 1.4 µs inside Envoy, so every property is read at most once,
//! only when a feature needs it, and only for requests that will produce a span. Per request:
//!
//! - **Unsampled** (always-keep off): 2 — the request header map and the injected
//!   `traceparent` (+1 when a stale `tracestate` is removed or a new one set). No clock read
//!   unless the rate limit is consulted, which happens only for a would-be-sampled request.
//! - **Unsampled, always-keep on**: the same, plus in `on_log` one property per enabled rule
//!   (`response.code` for errors, `response.flags` for faults, `request.duration` for slow).
//!   A kept request then pays the sampled `on_log` cost below, plus the logged request header
//!   map and `request.time`.
//! - **Sampled**: at request time, +1 clock read (span start) and the routing facts, which
//!   Envoy settles before the filter chain runs: `connection.id`, `xds.cluster_name` (an Istio
//!   name also gives the span kind for `direction: auto`), `xds.route_name`, and
//!   `xds.route_metadata` only with `route_metadata: true`. On an Istio sidecar's inbound
//!   connection (cluster `inbound|<port>||`, one route per inbound port) these routing facts
//!   are the same for every request, so they are read on the connection's first recorded
//!   request only (`Routing::read`). On a connection's first recorded
//!   request only (see [`crate::connection`]): `request.protocol`, `source.address`,
//!   `xds.listener_direction` (only for `auto` with a non-Istio cluster) and, for server spans
//!   with `identity` on, `connection.mtls`, then only if it is true
//!   `connection.uri_san_peer_certificate`, `connection.subject_peer_certificate`,
//!   `connection.tls_version` (on an ambient waypoint, `filter_state.io.istio.peer_principal`
//!   instead, the identity the HBONE tunnel carried; the connection reads only without it).
//!   In `on_log`:
//!   1. clock (span end);
//!   2. `response.code`, `response.flags`; `response.code_details` only when flags ≠ 0;
//!      `request.time` only when the flags say a delay was injected (the span then starts
//!      when Envoy received the request, before a fault filter placed ahead of this one);
//!   3. `response.backend_latency` when an upstream cluster was chosen;
//!   4. client spans only: `upstream.address`, `upstream.request_attempt_count`, and with
//!      `identity: always` `upstream.tls_version` and, if present, the upstream peer's URI SAN
//!      and subject;
//!   5. the response header map only when `capture.response_headers` is set.
//!
//!   A typical sampled inbound Istio request on a reused connection: 2 + 1 + 1 at request
//!   time (`connection.id`), 1 + 3 in `on_log` (`host-test/tests/harness_host_calls.rs`
//!   asserts the list); on an outbound or gateway connection, 2 + 1 + 3 at request time.
//! - **gRPC calls** (`content-type: application/grpc*`, known from the request headers with no
//!   host call): +1 single header read, the `grpc-status` of the response trailers in
//!   `on_http_response_trailers` or, when they carried none, of the response headers in
//!   `on_log` (Trailers-Only and Envoy's local replies). Only for recorded calls and, with
//!   `always_keep: error`, unsampled ones (which then also read `response.flags` when no status
//!   was sent, to tell a cancelled call, and with `direction: auto` the cluster name when the
//!   code is an error on client spans only). A gRPC-Web call that reaches this filter still as
//!   gRPC-Web reads, for the same calls, the last 512 bytes of its final body chunk instead,
//!   and only when no trailer frame ends there, its last 16 KiB.
//! - **Answered by an earlier filter** (fault abort, RBAC, ext_authz, rate limit before this
//!   filter): only `on_log` runs; it reads the logged request header map, decides, and then
//!   pays the sampled or always-keep cost above (+ `request.time` for the start).
//!
//! - **Opt-in writes** (see [`crate::correlation`]): `access_log.filter_state` adds three
//!   `proxy_set_property` calls (trace id, span id, sampled) to each recorded request, or with
//!   `all` to every request, at request time; a span decided in `on_log` (kept, or answered
//!   early) writes them there, before Envoy's access log runs. `response.server_timing` adds
//!   one `proxy_add_header_map_value` in `on_http_response_headers` of a recorded SERVER span
//!   (two with `expose_server_timing`). Neither reads a property.
//!
//! - **Lambda upstreams** (`faas.lambda`, see [`crate::span::faas::lambda`]): a recorded
//!   request whose cluster (already read) is one gets `X-Amzn-Trace-Id` (unless an inject
//!   format wrote it) and with `lambda_log_tail` `X-Amz-Log-Type: Tail`: +1 or +2 header
//!   writes, no read; in `on_log` the response header map (one call, shared with
//!   `capture.response_headers`). Unsampled requests add nothing, except with
//!   `always_keep: error` and a status that is no error: `xds.cluster_name`, then for a
//!   Lambda cluster the `x-amz-function-error` header.
//! - **Functions** (`faas`, or a Knative pod): a VM's first request that is unsampled or a
//!   recorded SERVER span makes one `proxy_set_shared_data` (see [`coldstart`]); no other
//!   request does, and other workloads never touch shared data.
//!
//! - **RED metrics** (`metrics.enabled`, see [`crate::metrics`]): every request is counted,
//!   so one that is not recorded must learn its status and duration. In `on_log` it reads
//!   `response.code`, then `response.flags` only when no response was sent (the span's error
//!   rule needs them then), then `request.duration`; a gRPC call also its `grpc-status` as
//!   above. These are the reads the always-keep rules make and they are shared: with
//!   `always_keep: [error, slow]` the metrics add none of them. Then, only for the series:
//!   `xds.cluster_name` with subset traffic rules or with `direction: auto` off a waypoint (and
//!   `xds.listener_direction` when that cluster is not Istio's), `xds.route_name` with route
//!   rules. Header and cookie rules, the name and the workload's own release (node labels, once
//!   per VM) cost no call. A recorded request (sampled or kept) is counted from what its span
//!   read: no call at all. Exports go out from the root on the tick, one per flush interval.
//!
//! Per VM, `xds.node` is read once in `on_configure` for the resource. Stats are accumulated
//! in the VM and pushed to the host on the tick, not per request.

mod coldstart;
mod export;
mod host;
mod metrics;

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::config::{Config, Direction};
use crate::connection::ConnectionCache;
use crate::correlation::{self, FilterState, Moment, ServerTimingEntry};
use crate::export::config::ExportMode;
use crate::export::span_processor::BatchSpanProcessor;
use crate::headers::{pairs, RequestHeaders};
use crate::metrics::red::NameKey;
use crate::metrics::Ended;
use crate::propagation::context::SpanIds;
use crate::propagation::counters;
use crate::propagation::inject::Injection;
use crate::resource::NodeInfo;
use crate::span::grpc::{self, GrpcEnd};
use crate::span::mesh::identity::{IdentityMode, TlsFacts};
use crate::span::mesh::traffic::RuleHits;
use crate::span::mesh::{self, EndFacts, RequestFacts};
use crate::span::{faas, Finish};
use crate::span::{SpanKind, SpanRecord};
use crate::tracer::Tracer;
use metrics::{metric_values, CounterSet, Stats, Values, METRICS};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Per-VM (per Envoy worker) state shared by the root context and every HTTP context.
struct Worker {
    tracer: Tracer,
    exporter: BatchSpanProcessor,
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
    /// Downstream connection facts, read once per connection.
    connections: ConnectionCache<Connection>,
    /// A function's claim on the process's cold start (`faas.coldstart`).
    coldstart: coldstart::ColdStart,
    /// RED metrics export (`metrics`), when enabled.
    metrics: export::MetricsExport,
}

#[derive(Default)]
struct Root {
    worker: Option<Rc<RefCell<Worker>>>,
    metrics: CounterSet,
    /// The counters of [`counters::NAMES`].
    propagation_metrics: CounterSet,
    /// The RED metrics' own stats ([`metrics::RED_STATS`]), defined only when they are on.
    red_stats: CounterSet,
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
        let config = crate::config::load(raw).map_err(|e| e.to_string())?;
        let mode = config.config.exporter.mode;
        // The node is the same for the VM's life: decoded once, encoded once into the header.
        let node = host::property(b"xds\0node")
            .map(|n| NodeInfo::from_node_proto(&n))
            .unwrap_or_default();
        let tracer = Tracer::with_node(config, seed(), &node);
        let exporter = BatchSpanProcessor::new(
            tracer.config.export(),
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
            connections: ConnectionCache::default(),
            coldstart: coldstart::ColdStart::Spent,
            metrics: export::MetricsExport::default(),
        };
        worker.coldstart = coldstart::ColdStart::prepare(worker.tracer.span.faas.is_function());
        worker.export_headers = export::request_headers(&worker);
        if let Some(m) = &mut worker.tracer.metrics {
            m.red.start_ns = host::now_ns();
            worker.metrics = export::MetricsExport::new(&worker.tracer.config, now_ms());
            self.red_stats.define(&metrics::RED_STATS);
        }
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
            _ if w.metrics.sending() => 1,
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
            connections_cached: w.connections.hits,
            connections_read: w.connections.misses,
            span_names_overflow: w.tracer.names.overflow(),
        }));
        self.propagation_metrics
            .push(w.propagation.values().map(|(_, v)| v));
        if let Some(m) = &w.tracer.metrics {
            self.red_stats.push(metrics::red_values(m, &w.metrics));
        }
        for line in w.exporter.take_log(now) {
            log(LogLevel::Warn, &line);
        }
        for line in w.metrics.take_log(now) {
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
            if export::on_metrics_response(&mut w, token, num_headers, body_size) {
                return;
            }
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
            let mut w = w.borrow_mut();
            self.export(&mut w, now);
            export::flush_metrics(self, &mut w, now);
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
            let mut w = w.borrow_mut();
            export::drain(self, &mut w, queue_id);
            // A batch held back to the next callback (gzip) goes out on a tick a millisecond on.
            self.retune_tick(&mut w, now_ms());
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Http {
            worker,
            span: None,
            facts: RequestFacts::default(),
            candidate: None,
            seen_request: false,
            written: false,
            grpc: None,
            grpc_status: None,
            metric: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream.
struct Http {
    worker: Rc<RefCell<Worker>>,
    /// The span being built, with the routing and connection facts read while the request
    /// headers were; present only for recorded requests.
    span: Option<(SpanRecord, Stream)>,
    /// What the request carried that `on_log` needs (its headers are gone by then).
    facts: RequestFacts,
    /// An unsampled request the always-keep rules may still export.
    candidate: Option<SpanIds>,
    /// Whether `on_http_request_headers` ran; a request answered by an earlier filter reaches
    /// `on_log` without it.
    seen_request: bool,
    /// Whether the ids were written to filter state (`access_log.filter_state`).
    written: bool,
    /// The request's gRPC framing (from `content-type`, no host call); `None` for plain HTTP.
    grpc: Option<grpc::Protocol>,
    /// The `grpc-status` of the response trailers, read as they pass (see
    /// `on_http_response_trailers`), or of a gRPC-Web body's trailer frame.
    grpc_status: Option<Sent>,
    /// The RED metrics' name and the header/cookie rules the request matched, decided from
    /// its headers (`None` when metrics are off).
    metric: Option<Metric>,
}

/// What the request headers told the RED metrics, kept until `on_log`.
#[derive(Clone, Copy)]
struct Metric {
    name: NameKey,
    hits: RuleHits,
}

impl Metric {
    /// The request's metric facts, when metrics are on: no host call. `hits` are the
    /// recorded span's (`None` to evaluate the rules here, for an unsampled request).
    fn of(
        w: &Worker,
        headers: &RequestHeaders<'_>,
        buf: &[u8],
        hits: Option<RuleHits>,
    ) -> Option<Self> {
        let name = w.tracer.metric_name(headers)?;
        let traffic = &w.tracer.span.traffic;
        let hits = hits.unwrap_or_else(|| {
            if traffic.has_request_rules() {
                traffic.request_hits(pairs(buf), headers.cookie)
            } else {
                RuleHits::default()
            }
        });
        Some(Self { name, hits })
    }
}

/// The host clock, read at most once per callback.
#[derive(Default)]
struct Clock(Option<u64>);

impl Clock {
    fn now(&mut self) -> u64 {
        *self.0.get_or_insert_with(host::now_ns)
    }
}

/// Response facts already read by the always-keep check, so finishing does not read them again.
#[derive(Default, Clone, Copy)]
struct Known {
    status: Option<Option<i64>>,
    flags: Option<u64>,
    /// The `grpc-status` the response carried, once looked for.
    grpc_status: Option<Option<Sent>>,
    /// `request.duration`, ns, when read.
    duration: Option<u64>,
}

impl Known {
    /// What the response trailers said, if they carried a `grpc-status`.
    fn trailers(grpc_status: Option<Sent>) -> Self {
        Self {
            grpc_status: grpc_status.map(Some),
            ..Self::default()
        }
    }
}

/// The `grpc-status` of a Trailers-Only reply, or of Envoy's local reply to a gRPC request
/// (both carry it in the headers). Read in `on_log`, where the response headers are the ones
/// the client got.
fn grpc_status_in_headers() -> Option<Sent> {
    host::header_value(host::RESPONSE_HEADERS, "grpc-status").map(|v| Sent::parse(&v))
}

/// A `grpc-status` the response carried, as the core reads it. Whether it was a canonical code
/// is kept so that `meshtrace.grpc.status_invalid` counts the spans that carry one, the same
/// population as `meshtrace.grpc.calls`, and not the unsampled calls that are not kept.
#[derive(Clone, Copy, Debug)]
struct Sent {
    code: grpc::Code,
    /// One of the 17 codes; otherwise `code` is `UNKNOWN`.
    canonical: bool,
}

impl Sent {
    fn parse(raw: &[u8]) -> Self {
        match grpc::Code::parse_canonical(raw) {
            Some(code) => Self {
                code,
                canonical: true,
            },
            None => Self {
                code: grpc::Code::UNKNOWN,
                canonical: false,
            },
        }
    }
}

impl Context for Http {}

impl Http {
    /// Whether a gRPC call's status is worth a host call: the call is recorded, or unsampled
    /// with `always_keep: error` on.
    fn wants_grpc_status(&self) -> bool {
        self.span.is_some()
            || self.metric.is_some()
            || (self.candidate.is_some() && self.worker.borrow().tracer.sampler.keep.errors)
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let buf = host::header_map(host::REQUEST_HEADERS).unwrap_or_default();
        let mut headers = RequestHeaders::default();
        headers.fill_from_pairs(pairs(&buf));
        let mut w = self.worker.borrow_mut();
        let w = &mut *w;
        self.seen_request = true;
        self.grpc = headers.content_type.and_then(grpc::protocol);
        w.stats.started += 1;
        let mut clock = Clock::default();
        let decision = w
            .tracer
            .start(&headers, || clock.now(), Some(&mut w.injection));
        w.propagation.record(
            decision.malformed,
            &decision.baggage.stats,
            decision.link.is_some(),
        );
        for (name, value) in w.injection.headers() {
            host::replace_header(host::REQUEST_HEADERS, name, value);
        }
        for name in &w.injection.remove {
            host::remove_header(host::REQUEST_HEADERS, name);
        }
        if w.tracer.correlation.writes_filter_state(Moment::Request {
            recorded: decision.record,
        }) {
            // Flags as the sampler settled them: an unsampled request logs `sampled` 0.
            write_filter_state(&FilterState::new(
                &decision.trace_id,
                &decision.span_id,
                decision.flags,
            ));
            self.written = true;
        }
        if decision.record {
            w.stats.sampled += 1;
            let mut rec = w.pool.pop().unwrap_or_default();
            w.tracer
                .begin_span(&decision, &headers, clock.now(), &mut rec);
            self.facts = w.tracer.record_request(&headers, pairs(&buf), &mut rec);
            let stream = Stream::read(w);
            if stream.kind == SpanKind::Server {
                self.facts.coldstart = w.coldstart.claim();
            }
            if stream.lambda.is_some() {
                // Only the headers this adds: the trace context is already set.
                let from = w.injection.headers().count();
                w.tracer.inject_lambda(&decision, &mut w.injection);
                for (name, value) in w.injection.headers().skip(from) {
                    host::replace_header(host::REQUEST_HEADERS, name, value);
                }
            }
            self.metric = Metric::of(w, &headers, &buf, Some(self.facts.hits));
            self.span = Some((rec, stream));
        } else {
            // An unsampled first request spends the cold start (see `coldstart`).
            w.coldstart.claim();
            if w.tracer.may_keep() {
                self.candidate = Some(decision.ids());
            }
            self.metric = Metric::of(w, &headers, &buf, None);
        }
        Action::Continue
    }

    /// Adds the `server-timing` entry of a recorded SERVER span when `response.server_timing`
    /// asks for it: one host call (two with `expose_server_timing`), nothing otherwise.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some((rec, stream)) = &self.span else {
            return Action::Continue;
        };
        let w = self.worker.borrow();
        let Some(policy) = w.tracer.correlation.server_timing_for(stream.kind) else {
            return Action::Continue;
        };
        if let Some(entry) =
            ServerTimingEntry::new(policy.style, &rec.trace_id, &rec.span_id, rec.flags)
        {
            host::add_header(
                host::RESPONSE_HEADERS,
                correlation::SERVER_TIMING,
                entry.as_bytes(),
            );
            if policy.expose {
                let (name, value) = correlation::EXPOSE_HEADERS;
                host::add_header(host::RESPONSE_HEADERS, name, value);
            }
        }
        Action::Continue
    }

    /// A gRPC call's status normally arrives here. It is read now, not in `on_log`: Envoy's
    /// gRPC-Web filter, when it is ahead of this one in the chain (Istio's order), moves the
    /// trailers into the body after this callback and leaves the logged trailers empty. One
    /// read, only for gRPC requests that are recorded or that `always_keep: error` may keep.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.grpc.is_some() && self.wants_grpc_status() {
            self.grpc_status =
                host::header_value(host::RESPONSE_TRAILERS, "grpc-status").map(|v| Sent::parse(&v));
        }
        Action::Continue
    }

    /// A gRPC-Web call that reaches this filter still as gRPC-Web (no `grpc_web` filter ahead
    /// of it: the upstream speaks gRPC-Web itself) has its status in a trailer frame at the end
    /// of the body. One read of the last chunk's final [`grpc::WEB_TRAILER_TAIL`] bytes, and
    /// only when that holds no trailer frame (long error trailers) a second read of up to
    /// [`grpc::WEB_TRAILER_MAX`], for the same calls as above.
    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if end_of_stream
            && body_size > 0
            && self.grpc == Some(grpc::Protocol::GrpcWeb)
            && self.grpc_status.is_none()
            && self.wants_grpc_status()
        {
            for window in [grpc::WEB_TRAILER_TAIL, grpc::WEB_TRAILER_MAX] {
                let n = body_size.min(window);
                if let Ok(Some(tail)) = proxy_wasm::hostcalls::get_buffer(
                    proxy_wasm::types::BufferType::HttpResponseBody,
                    body_size - n,
                    n,
                ) {
                    self.grpc_status = grpc::web_trailer_value(&tail).map(Sent::parse);
                }
                if self.grpc_status.is_some() || n == body_size {
                    break;
                }
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let mut w = self.worker.borrow_mut();
        let w = &mut *w;
        let mut clock = Clock::default();
        let known = Known::trailers(self.grpc_status);
        let written = self.written;
        let metric = self.metric.take();
        if let Some((rec, stream)) = self.span.take() {
            let end = End {
                known,
                written,
                metric: metric.map(|m| m.name),
            };
            finish(w, rec, &self.facts, &stream, end, &mut clock);
        } else if self.candidate.is_some() || metric.is_some() {
            let call = self.grpc.map(|p| (p, self.grpc_status));
            let ids = self.candidate.take();
            keep_unsampled(w, ids.as_ref(), None, call, written, metric, &mut clock);
        } else if !self.seen_request {
            answered_early(w, &mut clock);
        }
    }
}

/// A request answered before this filter saw its headers: an earlier filter's local reply
/// (a fault abort, an RBAC or ext_authz denial, a rate limit). Those are exactly the requests
/// the mesh tags explain, so they get a span too, decided and built from the logged headers;
/// nothing can be injected any more, since nothing went upstream.
fn answered_early(w: &mut Worker, clock: &mut Clock) {
    let buf = host::header_map(host::REQUEST_HEADERS).unwrap_or_default();
    // The headers borrow `buf`; the block ends the borrow before a kept request hands it on.
    let candidate = {
        let mut headers = RequestHeaders::default();
        headers.fill_from_pairs(pairs(&buf));
        if headers.count == 0 {
            return;
        }
        let call = headers.content_type.and_then(grpc::protocol);
        w.stats.started += 1;
        // Nothing went upstream, so nothing is injected.
        let decision = w.tracer.start(&headers, || clock.now(), None);
        w.propagation.record(
            decision.malformed,
            &decision.baggage.stats,
            decision.link.is_some(),
        );
        if decision.record {
            w.stats.sampled += 1;
            let start = request_start(clock, None);
            let mut rec = w.pool.pop().unwrap_or_default();
            w.tracer.begin_span(&decision, &headers, start, &mut rec);
            let facts = w.tracer.record_request(&headers, pairs(&buf), &mut rec);
            let stream = Stream::read(w);
            let end = End {
                known: Known::default(),
                written: false,
                metric: w.tracer.metric_name(&headers),
            };
            finish(w, rec, &facts, &stream, end, clock);
            None
        } else {
            let metric = Metric::of(w, &headers, &buf, None);
            let ids = w.tracer.may_keep().then(|| decision.ids());
            (ids.is_some() || metric.is_some()).then_some((ids, call, metric))
        }
    };
    if let Some((ids, call, metric)) = candidate {
        // The reply came from an earlier filter: any gRPC status is in its headers.
        let call = call.map(|p| (p, None));
        keep_unsampled(w, ids.as_ref(), Some(buf), call, false, metric, clock);
    }
}

/// When the request started, from `request.time`; else now less its duration, if known.
fn request_start(clock: &mut Clock, duration_ns: Option<u64>) -> u64 {
    host::property_i64(b"request\0time")
        .map(|t| t.max(0) as u64)
        .unwrap_or_else(|| clock.now().saturating_sub(duration_ns.unwrap_or(0)))
}

/// Ends an unsampled request: applies the always-keep rules when it is a candidate (`ids`),
/// reading only what they use, and counts it in the RED metrics when they are on (`metric`),
/// sharing those reads. A kept request's span is built from the logged request headers
/// (`logged` when already fetched) and counted from what the span read.
/// `call` is a gRPC request's framing and the `grpc-status` its trailers carried: with
/// `always_keep: error` or metrics, its status is then looked for in the headers too, and
/// judged as on the span.
/// `written`: whether the request already wrote its ids to filter state.
fn keep_unsampled(
    w: &mut Worker,
    ids: Option<&SpanIds>,
    logged: Option<Vec<u8>>,
    call: Option<(grpc::Protocol, Option<Sent>)>,
    written: bool,
    metric: Option<Metric>,
    clock: &mut Clock,
) {
    let rules = w.tracer.sampler.keep;
    // The RED metrics need the status and duration of every request; they reuse these reads.
    let counting = metric.is_some();
    let call = call.filter(|_| rules.errors || counting);
    let grpc_status = call.map(|(_, sent)| sent.or_else(grpc_status_in_headers));
    let status = (rules.errors || counting).then(|| host::property_i64(b"response\0code"));
    // Without a sent status, the flags tell a cancelled call from a failed one; without a
    // response, they tell the metrics' error rule (the span's) a failure from a cancellation.
    let need_flags = rules.faults
        || grpc_status.is_some_and(|s| s.is_none())
        || (counting && status.flatten().is_none_or(|c| c <= 0));
    let known = Known {
        status,
        flags: need_flags.then(|| host::property_i64(b"response\0flags").map_or(0, |f| f as u64)),
        grpc_status,
        duration: (rules.slow_ns > 0 || counting)
            .then(|| host::property_i64(b"request\0duration"))
            .flatten()
            .map(|d| d.max(0) as u64),
    };
    let duration = known.duration.filter(|_| rules.slow_ns > 0);
    let status = known.status.flatten();
    let response_flags = known.flags.unwrap_or(0);
    // Read at most once, by whichever of the kind, the Lambda check and the metrics needs it.
    let cluster = OnceCell::new();
    let verdict = match ids {
        Some(_) => {
            let call = call.filter(|_| rules.errors);
            let end = call.map(|(protocol, _)| {
                let sent = grpc_status.flatten().map(|s| s.code);
                let code = grpc::call_status(protocol, sent, status, response_flags);
                GrpcEnd {
                    protocol,
                    sent,
                    kind: keep_kind(w, code, &cluster),
                }
            });
            // Only a fault rule needs the flags themselves; a gRPC read must not make it fire.
            let fault_flags = if rules.faults { response_flags } else { 0 };
            // A Lambda invocation that failed behind a 200: one cluster read (only with Lambda
            // upstreams configured and a status that is not an error already), then one header
            // read for a Lambda cluster.
            let function_error = call.is_none()
                && rules.errors
                && w.tracer.span.lambda.any()
                && !crate::sampling::is_keep_error(status)
                && cluster_name(&cluster).is_some_and(|c| w.tracer.span.lambda.lookup(c).is_some())
                && host::header_value(host::RESPONSE_HEADERS, faas::lambda::FUNCTION_ERROR)
                    .is_some_and(|v| !v.is_empty());
            if function_error {
                w.tracer
                    .keep_invocation(status, true, fault_flags, duration, || clock.now())
            } else {
                w.tracer
                    .keep_call(status, fault_flags, duration, end, || clock.now())
            }
        }
        None => None,
    };
    let (Some(reason), Some(ids)) = (verdict, ids) else {
        if let Some(m) = metric {
            count_unsampled(w, m, call, &known, &cluster);
        }
        return;
    };
    w.stats.kept += 1;
    // In the log phase Envoy hands out the access-log copy of the request headers.
    let buf = logged.unwrap_or_else(|| host::header_map(host::REQUEST_HEADERS).unwrap_or_default());
    let mut headers = RequestHeaders::default();
    headers.fill_from_pairs(pairs(&buf));
    let start = request_start(clock, duration);
    let mut rec = w.pool.pop().unwrap_or_default();
    w.tracer
        .begin_kept_span(ids, &headers, start, reason, &mut rec);
    let facts = w.tracer.record_request(&headers, pairs(&buf), &mut rec);
    let stream = Stream::read(w);
    let end = End {
        known,
        written,
        metric: metric.map(|m| m.name),
    };
    finish(w, rec, &facts, &stream, end, clock);
}

/// `xds.cluster_name`, read on first use.
fn cluster_name(cell: &OnceCell<Option<Vec<u8>>>) -> Option<&[u8]> {
    cell.get_or_init(|| host::property(b"xds\0cluster_name"))
        .as_deref()
}

/// Counts an unsampled request in the RED metrics from what was read for it (`known`), plus
/// the routing facts only its series needs: `xds.cluster_name` with subset rules or, for the
/// span kind, `direction: auto` off a waypoint (and `xds.listener_direction` when that cluster
/// is not Istio's); `xds.route_name` with route rules.
fn count_unsampled(
    w: &mut Worker,
    m: Metric,
    call: Option<(grpc::Protocol, Option<Sent>)>,
    known: &Known,
    cluster: &OnceCell<Option<Vec<u8>>>,
) {
    let traffic = &w.tracer.span.traffic;
    let auto = w.tracer.config.direction == Direction::Auto && !w.tracer.waypoint;
    let cluster = (traffic.has_subset_rules() || auto)
        .then(|| cluster_name(cluster))
        .flatten();
    let kind = match w.tracer.config.direction {
        Direction::Inbound => SpanKind::Server,
        Direction::Outbound => SpanKind::Client,
        Direction::Auto if w.tracer.waypoint => SpanKind::Server,
        Direction::Auto => cluster
            .and_then(mesh::kind_from_cluster)
            .unwrap_or_else(|| match host::property_i64(b"xds\0listener_direction") {
                Some(2) => SpanKind::Client,
                _ => SpanKind::Server,
            }),
    };
    let route = traffic
        .has_route_rules()
        .then(|| host::property(b"xds\0route_name"))
        .flatten();
    let grpc = call.map(|(p, _)| (p, known.grpc_status.flatten().map(|s| s.code)));
    w.tracer.record_metrics(&Ended {
        name: m.name,
        kind,
        hits: m.hits,
        cluster_name: cluster,
        route_name: route.as_deref(),
        status: known.status.flatten(),
        response_flags: known.flags.unwrap_or(0),
        grpc,
        duration_ns: known.duration.unwrap_or(0),
    });
}

/// The span kind an unsampled gRPC call would get, for judging its status: from the configured
/// direction, and with `direction: auto` read (as `Stream::read` would) only when the kind
/// changes the verdict, i.e. for a code that is an error on CLIENT spans only.
fn keep_kind(
    w: &Worker,
    code: Option<grpc::Code>,
    cluster: &OnceCell<Option<Vec<u8>>>,
) -> SpanKind {
    let matters =
        code.is_some_and(|c| c.is_error(SpanKind::Client) && !c.is_error(SpanKind::Server));
    match w.tracer.config.direction {
        Direction::Inbound => SpanKind::Server,
        Direction::Outbound => SpanKind::Client,
        Direction::Auto if !matters => SpanKind::Server,
        Direction::Auto => cluster_name(cluster)
            .and_then(mesh::kind_from_cluster)
            .unwrap_or_else(|| match host::property_i64(b"xds\0listener_direction") {
                Some(2) => SpanKind::Client,
                _ => SpanKind::Server,
            }),
    }
}

/// The peer's TLS facts, owned until the span is finished.
#[derive(Default)]
struct Tls {
    mtls: Option<bool>,
    version: Option<Vec<u8>>,
    uri_san: Option<Vec<u8>>,
    subject: Option<Vec<u8>>,
}

impl Tls {
    /// Reads the identity the configuration asks for: the downstream peer on server spans,
    /// the upstream peer on client spans with `identity: always`. On a waypoint the caller's
    /// mTLS session ended at the HBONE listener, before the internal listener this filter runs
    /// on; Istio hands the peer's URI SAN over as filter state (`io.istio.peer_principal`, set
    /// from `%DOWNSTREAM_PEER_URI_SAN%` and shared with the internal connection), so that one
    /// read replaces the connection's TLS reads there.
    fn read(mode: IdentityMode, kind: SpanKind, waypoint: bool) -> Self {
        if waypoint && mode != IdentityMode::Off && kind != SpanKind::Client {
            if let Some(mut principal) =
                host::property(b"filter_state\0io.istio.peer_principal").filter(|p| !p.is_empty())
            {
                // Envoy joins several URI SANs with commas; a SPIFFE id is the first.
                if let Some(i) = principal.iter().position(|&b| b == b',') {
                    principal.truncate(i);
                }
                // Only an mTLS peer gets a principal: the HBONE listener requires a client
                // certificate.
                return Self {
                    mtls: Some(true),
                    uri_san: Some(principal),
                    ..Self::default()
                };
            }
        }
        match (mode, kind) {
            (IdentityMode::Off, _) | (IdentityMode::Inbound, SpanKind::Client) => Self::default(),
            (_, SpanKind::Client) => {
                let version = host::property(b"upstream\0tls_version");
                if version.is_none() {
                    return Self::default();
                }
                Self {
                    mtls: None,
                    version,
                    uri_san: host::property(b"upstream\0uri_san_peer_certificate"),
                    subject: host::property(b"upstream\0subject_peer_certificate"),
                }
            }
            _ => {
                // A bool is one byte; an absent or empty value is plaintext.
                let mtls =
                    host::property(b"connection\0mtls").is_some_and(|v| v.first() == Some(&1));
                if !mtls {
                    return Self {
                        mtls: Some(false),
                        ..Self::default()
                    };
                }
                Self {
                    mtls: Some(true),
                    uri_san: host::property(b"connection\0uri_san_peer_certificate"),
                    subject: host::property(b"connection\0subject_peer_certificate"),
                    version: host::property(b"connection\0tls_version"),
                }
            }
        }
    }

    fn facts(&self) -> TlsFacts<'_> {
        TlsFacts {
            mtls: self.mtls,
            version: self.version.as_deref(),
            peer_uri_san: self.uri_san.as_deref(),
            peer_subject: self.subject.as_deref(),
        }
    }
}

/// The downstream connection's facts (see [`crate::connection`]), owned by the cache.
#[derive(Default)]
struct Connection {
    protocol: Option<Vec<u8>>,
    source: Option<Vec<u8>>,
    /// `xds.listener_direction`, read only when `direction: auto` cannot tell from the cluster.
    listener_direction: OnceCell<Option<i64>>,
    /// The downstream peer's identity, read on the connection's first server span.
    peer: OnceCell<Tls>,
    /// On an Istio sidecar's inbound listener, the routing facts of the connection's first
    /// recorded request, which every later one shares (see [`Routing::read`]).
    inbound: OnceCell<Routing>,
}

/// `xds.cluster_name`, `xds.route_name` and (with `route_metadata: true`) `xds.route_metadata`
/// of a request.
#[derive(Clone, Default)]
struct Routing {
    cluster: Option<Vec<u8>>,
    route: Option<Vec<u8>>,
    route_metadata: Option<Vec<u8>>,
}

impl Routing {
    /// Reads the routing facts, or takes them from the connection. Istio gives each inbound
    /// port of a sidecar its own filter chain whose route table has one route (`default`, to
    /// the cluster `inbound|<port>||`), so every request on such a connection goes the same
    /// way and the facts are read on its first recorded request only: two host calls fewer on
    /// every later one. Any other cluster (outbound, a waypoint's `inbound-vip`, a plain Envoy
    /// cluster, none) is read per request, since a route table there may send each request
    /// elsewhere.
    fn read(w: &Worker, conn: &Connection) -> Self {
        if let Some(known) = conn.inbound.get() {
            return known.clone();
        }
        let cluster = host::property(b"xds\0cluster_name");
        let routing = Self {
            route: host::property(b"xds\0route_name"),
            route_metadata: w
                .tracer
                .config
                .route_metadata
                .then(|| host::property(b"xds\0route_metadata"))
                .flatten(),
            cluster,
        };
        let sidecar_inbound = routing
            .cluster
            .as_deref()
            .and_then(mesh::cluster::parse)
            .is_some_and(|c| c.direction == mesh::cluster::ClusterDirection::Inbound);
        if sidecar_inbound {
            let _ = conn.inbound.set(routing.clone());
        }
        routing
    }
}

impl Connection {
    fn read() -> Self {
        Self {
            protocol: host::property(b"request\0protocol"),
            source: host::property(b"source\0address"),
            ..Self::default()
        }
    }
}

/// Where routing sent a recorded request and what its connection is, gathered once. Envoy
/// picks the route and cluster (weighted subsets included) before the filter chain runs, so
/// this is read in `on_http_request_headers` (or in `on_log` for a request decided there). A
/// filter after this one that clears the route cache and re-routes is not seen: the span names
/// the route the request arrived on.
struct Stream {
    cluster: Option<Vec<u8>>,
    /// The cluster is a configured Lambda upstream (`faas.lambda`): its index.
    lambda: Option<u8>,
    route: Option<Vec<u8>>,
    route_metadata: Option<Vec<u8>>,
    kind: SpanKind,
    conn: Rc<Connection>,
}

impl Stream {
    fn read(w: &mut Worker) -> Self {
        let conn = match host::property_i64(b"connection\0id") {
            Some(id) => w.connections.get_or_read(id as u64, Connection::read),
            None => Rc::new(Connection::read()),
        };
        let Routing {
            cluster,
            route,
            route_metadata,
        } = Routing::read(w, &conn);
        let kind = match w.tracer.config.direction {
            Direction::Inbound => SpanKind::Server,
            Direction::Outbound => SpanKind::Client,
            // A waypoint is the server side of every Service it fronts: all its traffic
            // arrives on inbound listeners, whatever cluster a route picks.
            Direction::Auto if w.tracer.waypoint => SpanKind::Server,
            Direction::Auto => cluster
                .as_deref()
                .and_then(mesh::kind_from_cluster)
                .unwrap_or_else(|| {
                    // core.v3.TrafficDirection: 2 is OUTBOUND; unknown and INBOUND give SERVER.
                    let direction = conn
                        .listener_direction
                        .get_or_init(|| host::property_i64(b"xds\0listener_direction"));
                    match direction {
                        Some(2) => SpanKind::Client,
                        _ => SpanKind::Server,
                    }
                }),
        };
        let lambda = cluster
            .as_deref()
            .and_then(|c| w.tracer.span.lambda.lookup(c));
        Self {
            lambda,
            route,
            route_metadata,
            cluster,
            kind,
            conn,
        }
    }
}

/// What `on_log` already knows when it finishes a span.
struct End {
    /// Response facts read by the always-keep check.
    known: Known,
    /// Whether the ids were written to filter state at request time.
    written: bool,
    /// The request's RED metrics name, when metrics are on.
    metric: Option<NameKey>,
}

/// Writes the ids for the access log (`access_log.filter_state`): three host calls. A refusal
/// (no stream, a read-only property) is not worth a log line per request: the access log then
/// prints `-`, which says the same.
fn write_filter_state(state: &FilterState) {
    for (name, value) in state.entries() {
        host::set_property(name, value);
    }
}

/// Reads the end-of-request properties (see the module doc for which and when), completes the
/// span and queues it for export. A span recorded only now writes its ids to filter state
/// first, so Envoy's access log, which runs after this filter's `on_log`, prints them.
fn finish(
    w: &mut Worker,
    mut rec: SpanRecord,
    facts: &RequestFacts,
    stream: &Stream,
    end: End,
    clock: &mut Clock,
) {
    let End {
        known,
        written,
        metric,
    } = end;
    if w.tracer
        .correlation
        .writes_filter_state(Moment::Log { written })
    {
        write_filter_state(&FilterState::new(&rec.trace_id, &rec.span_id, rec.flags));
    }
    let end_ns = clock.now();
    let status = known
        .status
        .unwrap_or_else(|| host::property_i64(b"response\0code"));
    let flags = known
        .flags
        .unwrap_or_else(|| host::property_i64(b"response\0flags").map_or(0, |f| f as u64));
    let details = (flags != 0)
        .then(|| host::property(b"response\0code_details"))
        .flatten();
    // A gRPC call whose trailers carried no status: a Trailers-Only or local reply has it in
    // the headers.
    let grpc_status = match facts.grpc {
        Some(_) => {
            let status = known.grpc_status.unwrap_or_else(grpc_status_in_headers);
            // These three count the same spans: the recorded ones of gRPC calls.
            w.stats.grpc_calls += 1;
            w.stats.grpc_status_missing += u64::from(status.is_none());
            w.stats.grpc_status_invalid += u64::from(status.is_some_and(|s| !s.canonical));
            status.map(|s| s.code)
        }
        None => None,
    };
    // A fault filter placed before this one (Istio's order) delays the request before
    // `on_http_request_headers` runs, so the span would start after the delay it reports:
    // start it when Envoy received the request instead (one read, delayed requests only).
    if flags & mesh::flags::DELAY_INJECTED != 0 {
        if let Some(t) = host::property_i64(b"request\0time").filter(|t| *t > 0) {
            rec.start_ns = rec.start_ns.min(t as u64);
        }
    }
    let kind = stream.kind;
    let latency = stream
        .cluster
        .is_some()
        .then(|| host::property_i64(b"response\0backend_latency"))
        .flatten();
    let (upstream, attempts) = if kind == SpanKind::Client {
        (
            host::property(b"upstream\0address"),
            host::property_i64(b"upstream\0request_attempt_count"),
        )
    } else {
        (None, None)
    };
    let mode = w.tracer.config.identity;
    let upstream_tls;
    let tls = match kind {
        SpanKind::Client => {
            upstream_tls = Tls::read(mode, kind, w.tracer.waypoint);
            &upstream_tls
        }
        _ => stream
            .conn
            .peer
            .get_or_init(|| Tls::read(mode, kind, w.tracer.waypoint)),
    };
    // One read of the response header map serves both capture and a Lambda invocation.
    let captures = w.tracer.captures_response_headers();
    let response = if captures || stream.lambda.is_some() {
        host::header_map(host::RESPONSE_HEADERS).unwrap_or_default()
    } else {
        Vec::new()
    };
    if captures {
        w.tracer.record_response_headers(pairs(&response), &mut rec);
    }
    let lambda = stream.lambda.map(|i| {
        let mut invalid = false;
        let log_tail = w.tracer.span.lambda.log_tail();
        let inv = faas::lambda::Invocation::from_headers(pairs(&response), log_tail, &mut invalid);
        w.stats.lambda_invocations += 1;
        w.stats.lambda_function_errors += u64::from(inv.function_error.is_some());
        w.stats.lambda_log_invalid += u64::from(invalid);
        (i, inv)
    });
    let finish = Finish {
        end_ns,
        status_code: status,
        protocol: stream.conn.protocol.as_deref(),
        source_address: stream.conn.source.as_deref(),
        kind,
        request: facts,
        mesh: EndFacts {
            response_flags: flags,
            code_details: details.as_deref(),
            cluster_name: stream.cluster.as_deref(),
            route_name: stream.route.as_deref(),
            route_metadata: stream.route_metadata.as_deref(),
            upstream_address: upstream.as_deref(),
            upstream_attempts: attempts,
            backend_latency_ns: latency,
            tls: tls.facts(),
        },
        grpc_status,
        lambda,
    };
    w.tracer.finish_span(&mut rec, &finish);
    if let Some(name) = metric {
        w.tracer.record_metrics(&Ended {
            name,
            kind,
            hits: facts.hits,
            cluster_name: stream.cluster.as_deref(),
            route_name: stream.route.as_deref(),
            status,
            response_flags: flags,
            grpc: facts.grpc.map(|p| (p, grpc_status)),
            duration_ns: known
                .duration
                .unwrap_or_else(|| end_ns.saturating_sub(rec.start_ns)),
        });
    }
    let _ = w.exporter.push(&rec);
    w.pool.push(rec);
    if w.exporter.due(end_ns / 1_000_000) && !w.fast_tick {
        // A full batch goes out now rather than at the interval. Exports are dispatched by
        // the root only: a call made here would answer to this stream's context, which is
        // deleted before the collector replies. A 1 ms tick hands the batch to the root.
        w.fast_tick = proxy_wasm::hostcalls::set_tick_period(Duration::from_millis(1)).is_ok();
    }
}
