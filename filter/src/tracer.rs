//! The core request path, host-independent: extract, decide, inject, build and finish a span.
//!
//! An adapter calls [`Tracer::start`] with the request headers it fetched once, then
//! [`Tracer::sample`] for the sampling decision, applies the [`Injection`] from
//! [`Tracer::inject`], fills a pooled [`SpanRecord`] with [`Tracer::begin_span`] and
//! [`Tracer::record_request`] (only when recording), and at the end calls
//! [`Tracer::finish_span`] with what the host knows then. An unsampled request that the
//! always-keep rules may still export keeps only its [`SpanIds`]; if [`Tracer::keep`] says yes
//! at the end, [`Tracer::begin_kept_span`] builds its span from the headers as they were logged.

use smallvec::SmallVec;

use crate::config::Config;
use crate::export::otlp::{BatchHeader, ResourceValue};
use crate::headers::RequestHeaders;
use crate::ids::{IdGenerator, SpanId, TraceId};
use crate::propagation::baggage::{self, Baggage};
use crate::propagation::{
    self, b3, gcp, grpc_trace_bin, l5d, tracecontext, xray, Dialect, Extraction, Format, Incoming,
    Sampling, SpanContext, FLAG_RANDOM, FLAG_SAMPLED,
};
use crate::resource::NodeInfo;
use crate::sampling::{self, KeepReason, OtUpdate, Sampler};
use crate::span::capture::Side;
use crate::span::mesh::{self, fault, flags, identity, route, RequestFacts};
use crate::span::{Key, SpanKind, SpanRecord, StatusCode};

/// The decision for one request: the new span's context and its parent.
#[derive(Clone, Debug, Default)]
pub struct Decision<'a> {
    pub trace_id: TraceId,
    /// The id of the span this proxy creates; sent upstream as the parent.
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    /// W3C flags for this span's context.
    pub flags: u8,
    pub incoming: Option<Incoming<'a>>,
    /// Formats whose headers were malformed (bit per `Format as usize`).
    pub malformed: u16,
    /// The format the request's context arrived in, continued or not: always written back, so
    /// a service keeps receiving the format it speaks.
    pub arrival: Option<Format>,
    /// How the arrival format was written (B3 width, X-Ray extra fields, base64 padding).
    pub dialect: Dialect<'a>,
    /// B3 / Finagle debug: sampled, and written as debug where a format can say so. Never in
    /// `flags`, whose bit 1 W3C Level 2 uses for "random".
    pub debug: bool,
    /// An incoming context not continued (`propagators.trust_incoming` false): a span link.
    pub link: Option<SpanContext>,
    /// The request's baggage and what forwarding it within the limits drops.
    pub baggage: Baggage<'a>,
    /// Whether this hop makes the sampling decision (a new trace, or a caller that deferred):
    /// [`Tracer::sample`] then applies the root sampler instead of following the caller.
    pub ours: bool,
    /// Whether this hop records its span now (set by [`Tracer::sample`]).
    pub record: bool,
    /// How the forwarded `tracestate`'s `ot` entry changes (set by [`Tracer::sample`]).
    pub ot: OtUpdate,
}

impl Decision<'_> {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The formats whose headers were present but malformed, for per-format counters.
    pub fn malformed_formats(&self) -> impl Iterator<Item = Format> {
        let mask = self.malformed;
        Format::ALL.into_iter().filter(move |f| mask & f.bit() != 0)
    }

    /// The decision as the richer formats spell it.
    fn sampling(&self) -> Sampling {
        match (self.sampled(), self.debug) {
            (true, true) => Sampling::Debug,
            (true, false) => Sampling::Accept,
            (false, _) => Sampling::Deny,
        }
    }

    /// The identifiers a span for this decision carries, detached from the headers.
    pub fn ids(&self) -> SpanIds {
        SpanIds {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            flags: self.flags,
        }
    }

    /// Appends the `tracestate` this hop sends (and records on its span).
    pub fn write_tracestate(&self, out: &mut Vec<u8>) {
        match &self.incoming {
            Some(i) => sampling::write_tracestate(&i.tracestate, self.ot, out),
            None => sampling::write_tracestate(&Default::default(), self.ot, out),
        }
    }
}

/// A span's identifiers without the borrowed headers: what an unsampled request keeps in case
/// the always-keep rules export it at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub flags: u8,
}

/// Headers to write upstream: set each `set` (replacing any old value), remove each `remove`.
#[derive(Clone, Debug, Default)]
pub struct Injection {
    buf: Vec<u8>,
    set: SmallVec<[(&'static str, core::ops::Range<usize>); 8]>,
    pub remove: SmallVec<[&'static str; 8]>,
}

impl Injection {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.set.clear();
        self.remove.clear();
    }

    fn put(&mut self, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        write(&mut self.buf);
        self.set.push((name, start..self.buf.len()));
    }

    /// The headers to set, as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.set.iter().map(|(n, r)| (*n, &self.buf[r.clone()]))
    }

    /// The value that will be set for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// What the host knows when the request is over.
#[derive(Clone, Copy, Debug, Default)]
pub struct Finish<'a> {
    pub end_ns: u64,
    /// `response.code`; `None` or 0 when no response was sent.
    pub status_code: Option<i64>,
    /// `request.protocol`, e.g. `HTTP/1.1`.
    pub protocol: Option<&'a [u8]>,
    /// `source.address` (`ip:port` of the downstream peer).
    pub source_address: Option<&'a [u8]>,
    pub kind: SpanKind,
    /// What the request carried (from [`Tracer::record_request`]).
    pub request: RequestFacts,
    /// What the mesh did (cluster, route, flags, identity).
    pub mesh: mesh::EndFacts<'a>,
}

/// Per-VM tracing state built from a validated [`Config`].
#[derive(Debug)]
pub struct Tracer {
    pub config: Config,
    ids: IdGenerator,
    pub batch_header: BatchHeader,
    extract_order: SmallVec<[Format; 8]>,
    /// Formats always injected (bit per format).
    inject_mask: u16,
    /// Formats the configuration names at all; only their stale headers are removed.
    known_mask: u16,
    pub sampler: Sampler,
    /// Traffic rules, route templates and capture lists, compiled once.
    pub mesh: mesh::Tables,
}

/// Methods the HTTP semantic conventions know; anything else is `_OTHER`.
const KNOWN_METHODS: [&[u8]; 10] = [
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    b"QUERY",
];

impl Tracer {
    /// Builds the per-VM state; `seed` comes from the host's entropy.
    pub fn new(config: Config, seed: u64) -> Self {
        Self::with_node(config, seed, &NodeInfo::default())
    }

    /// Builds the per-VM state with the resource taken from the proxy's node (decoded once
    /// from `xds.node`); configured `service_name` and `resource` override it.
    pub fn with_node(config: Config, seed: u64, node: &NodeInfo) -> Self {
        let resource = node.resource(config.service_name.as_deref(), &config.resource);
        let resource: Vec<(&str, ResourceValue)> = resource
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let batch_header = BatchHeader::new(&resource);
        // A validated config always compiles; a hand-built invalid one gets empty tables
        // rather than a panic.
        let mesh = mesh::Tables::compile(&config).unwrap_or_default();
        let extract_order = config.propagators.extract_formats();
        let mask = |formats: &[Format]| formats.iter().fold(0u16, |m, f| m | f.bit());
        let inject_mask = mask(&config.propagators.inject_formats());
        let known_mask = inject_mask | mask(&extract_order);
        Self {
            sampler: Sampler::new(&config.sampling),
            mesh,
            config,
            ids: IdGenerator::from_seed(seed),
            batch_header,
            extract_order,
            inject_mask,
            known_mask,
        }
    }

    /// Extracts the incoming context and decides: continue it, or start a new trace.
    pub fn start<'a>(&mut self, headers: &RequestHeaders<'a>) -> Decision<'a> {
        let Extraction {
            incoming,
            malformed,
            sampling_only,
        } = propagation::extract(headers, &self.extract_order);
        let span_id = self.ids.span_id();
        let trusted = self.config.propagators.trust_incoming;
        let arrival = incoming
            .as_ref()
            .map(|i| i.format)
            .or(sampling_only.map(|(f, _)| f));
        let dialect = match (&incoming, sampling_only) {
            (Some(inc), _) => inc.dialect,
            (None, Some(_)) => Dialect::B3 { narrow: false },
            (None, None) => Dialect::Plain,
        };
        let baggage = Baggage::parse(&headers.baggage);
        let mut d = match incoming {
            Some(inc) if trusted => {
                let (sampled, debug) = self.resolve(inc.sampling);
                Decision {
                    record: sampled,
                    ours: inc.sampling == Sampling::Defer,
                    ot: OtUpdate::Forward,
                    trace_id: inc.ctx.trace_id,
                    span_id,
                    parent: Some(inc.ctx.span_id).filter(SpanId::is_valid),
                    // The random bit describes the trace id, which is kept, so it is kept too.
                    flags: (inc.ctx.flags & FLAG_RANDOM) | if sampled { FLAG_SAMPLED } else { 0 },
                    incoming: Some(inc),
                    malformed,
                    arrival,
                    dialect,
                    debug,
                    link: None,
                    baggage,
                }
            }
            untrusted => {
                // Only a trusted caller may decide for a trace that starts here.
                let hint = sampling_only.filter(|_| trusted).map(|(_, s)| s);
                let hint = hint.unwrap_or_default();
                let (sampled, debug) = self.resolve(hint);
                Decision {
                    record: sampled,
                    ours: hint == Sampling::Defer,
                    ot: OtUpdate::Forward,
                    trace_id: self.ids.trace_id(),
                    span_id,
                    parent: None,
                    // Every id byte is random.
                    flags: FLAG_RANDOM | if sampled { FLAG_SAMPLED } else { 0 },
                    incoming: None,
                    malformed,
                    arrival,
                    dialect,
                    debug,
                    link: untrusted.map(|i| i.ctx).filter(|c| c.span_id.is_valid()),
                    baggage,
                }
            }
        };
        self.apply_l5d_sample(headers, &mut d);
        d
    }

    /// A caller's decision as (sampled, debug); a deferred one is ours to take.
    fn resolve(&self, s: Sampling) -> (bool, bool) {
        match s {
            Sampling::Accept => (true, false),
            Sampling::Deny => (false, false),
            Sampling::Debug => (true, true),
            Sampling::Defer => (self.root_sampled(), false),
        }
    }

    /// A provisional "yes" for a decision that is ours (`Decision::ours`): [`Tracer::sample`]
    /// replaces it with the configured root sampler's verdict.
    fn root_sampled(&self) -> bool {
        true
    }

    /// Linkerd 1's `l5d-sample` rate overrides the decision, when configured to trust it.
    fn apply_l5d_sample(&self, h: &RequestHeaders<'_>, d: &mut Decision<'_>) {
        if !self.config.propagators.trust_l5d_sample {
            return;
        }
        let Some(rate) = h.l5d_sample.and_then(l5d::parse_sample_rate) else {
            return;
        };
        // The caller's rate decides, not the root sampler.
        d.ours = false;
        if l5d::sample_by_rate(&d.trace_id, rate) {
            d.flags |= FLAG_SAMPLED;
        } else {
            d.flags &= !FLAG_SAMPLED;
            d.debug = false;
        }
    }

    /// Fills `out` with the headers the upstream must receive: every configured inject format
    /// and the arrival format, written for the new span. Headers of other known context formats
    /// the request carried are removed: they name the caller's span, never ours, so the upstream
    /// would see two contradicting parents.
    pub fn inject(&self, d: &Decision<'_>, h: &RequestHeaders<'_>, out: &mut Injection) {
        out.clear();
        let written = self.inject_mask | d.arrival.map_or(0, Format::bit);
        for format in Format::ALL {
            if written & format.bit() != 0 {
                self.write_format(format, d, h, out);
            } else if self.known_mask & format.bit() != 0 {
                remove_format(format, h, out);
            }
        }
    }

    /// Writes one format's headers for the decision.
    fn write_format(
        &self,
        f: Format,
        d: &Decision<'_>,
        h: &RequestHeaders<'_>,
        out: &mut Injection,
    ) {
        let ctx = SpanContext {
            trace_id: d.trace_id,
            span_id: d.span_id,
            flags: d.flags,
        };
        let narrow = matches!(
            d.dialect,
            Dialect::B3 { narrow: true } | Dialect::L5d { narrow: true }
        );
        match f {
            Format::TraceContext => {
                out.put("traceparent", |b| {
                    let mut tp = [0u8; tracecontext::TRACEPARENT_LEN];
                    tracecontext::write_traceparent(&ctx, &mut tp);
                    b.extend_from_slice(&tp);
                });
                write_tracestate_header(d, h, out);
            }
            Format::Baggage => {
                let bg = &d.baggage;
                if bg.is_absent() || bg.unchanged() {
                    // Valid baggage is forwarded as it came, without a host call.
                } else if bg.stats.kept > 0 {
                    out.put(baggage::HEADER, |b| bg.write_to(b));
                } else {
                    out.remove.push(baggage::HEADER);
                }
            }
            Format::B3 | Format::B3Multi => {
                let ctx = b3::B3 {
                    trace_id: d.trace_id,
                    span_id: d.span_id,
                    // OpenTelemetry: B3 injection must not propagate a parent span id.
                    parent_span_id: None,
                    sampling: d.sampling(),
                    narrow,
                };
                if f == Format::B3 {
                    out.put(b3::SINGLE, |b| b3::write_single(&ctx, b));
                } else {
                    let Injection { buf, set, remove } = out;
                    b3::write_multi(
                        &ctx,
                        buf,
                        |name, range| set.push((name, range)),
                        |name| {
                            if b3_multi_present(h, name) {
                                remove.push(name);
                            }
                        },
                    );
                }
            }
            Format::L5d => {
                let t = l5d::L5dTrace {
                    span_id: d.span_id,
                    // Finagle marks a root by a parent equal to the span itself.
                    parent_id: d.parent.unwrap_or(d.span_id),
                    trace_id: d.trace_id,
                    flags: l5d::L5dTrace::flags_for(d.sampling()),
                    narrow,
                };
                out.put(l5d::CTX_TRACE, |b| l5d::write(&t, b));
                out.put(l5d::REQID, |b| l5d::write_reqid(&d.trace_id, b));
            }
            Format::XRay => {
                let header = match d.dialect {
                    Dialect::XRay { header } => header,
                    _ => &[],
                };
                out.put(xray::HEADER, |b| {
                    xray::write(
                        &d.trace_id,
                        Some(&d.span_id),
                        d.sampling(),
                        xray::extra_fields(header),
                        b,
                    )
                });
            }
            Format::Gcp => {
                let c = gcp::CloudTrace {
                    trace_id: d.trace_id,
                    span_id: d.span_id,
                    options: Some(u8::from(d.sampled())),
                };
                out.put(gcp::HEADER, |b| gcp::write(&c, b));
            }
            Format::GrpcTraceBin => {
                let padded = match d.dialect {
                    Dialect::GrpcTraceBin { padded } => padded,
                    // Padded is what every decoder accepts (linkerd2-proxy requires it).
                    _ => true,
                };
                let c = grpc_trace_bin::OcContext {
                    trace_id: d.trace_id,
                    span_id: d.span_id,
                    options: u8::from(d.sampled()),
                };
                out.put(grpc_trace_bin::HEADER, |b| {
                    grpc_trace_bin::write(&c, padded, b)
                });
            }
        }
    }

    /// Records on the span what propagation learnt: the untrusted link, Linkerd's request id,
    /// and the allowlisted baggage entries.
    fn record_propagation(&self, d: &Decision<'_>, h: &RequestHeaders<'_>, rec: &mut SpanRecord) {
        if let Some(link) = d.link {
            rec.links.push(crate::span::Link {
                trace_id: link.trace_id,
                span_id: link.span_id,
                flags: link.flags,
            });
        }
        if let Some(reqid) = h.l5d_reqid.map(propagation::trim_ows) {
            // Linkerd writes 16 hex digits; anything not printable ASCII is not a request id.
            if !reqid.is_empty() && reqid.len() <= 64 && reqid.iter().all(u8::is_ascii_graphic) {
                rec.str("linkerd.request_id", reqid);
            }
        }
        for key in &self.config.baggage.attribute_keys {
            if let Some(value) = d.baggage.get(key.as_bytes()) {
                let mut raw = [0u8; BAGGAGE_ATTRIBUTE_MAX];
                let n = baggage::percent_decode(value, &mut raw);
                let mut text = [0u8; BAGGAGE_ATTRIBUTE_MAX];
                let m = baggage::to_utf8_lossy(&raw[..n], &mut text);
                rec.str_dyn(&[b"baggage.", key.as_bytes()], &text[..m]);
            }
        }
    }

    /// Applies the sampler to a decision from [`Tracer::start`]: parent-based, with the
    /// configured root sampler and rate limit. `now` is read only if the rate limit is consulted.
    pub fn sample(&mut self, d: &mut Decision<'_>, now: impl FnOnce() -> u64) {
        let none = tracecontext::TraceState::default();
        // A caller that decided is followed; a new trace or a deferred decision is ours.
        let parent = (!d.ours).then(|| {
            let ts = d.incoming.as_ref().map_or(&none, |i| &i.tracestate);
            (d.sampled(), ts)
        });
        let v = self.sampler.decide(&d.trace_id, parent, now);
        if v.sampled {
            d.flags |= FLAG_SAMPLED;
        } else {
            d.flags &= !FLAG_SAMPLED;
            d.debug = false;
        }
        d.record = v.record;
        d.ot = v.ot;
    }

    /// Records what the request carried into `rec` (called only for recorded requests).
    pub fn begin_span(
        &self,
        d: &Decision<'_>,
        h: &RequestHeaders<'_>,
        start_ns: u64,
        rec: &mut SpanRecord,
    ) {
        self.begin_ids(&d.ids(), start_ns, rec);
        rec.set_trace_state(|b| d.write_tracestate(b));
        self.begin_request(h, rec);
        self.record_propagation(d, h, rec);
    }

    /// Starts the span of an unsampled request the always-keep rules export, from the request
    /// headers as they were logged (they carry the `tracestate` this hop sent). The span keeps
    /// its unsampled flags: that is what the trace carried downstream.
    pub fn begin_kept_span(
        &self,
        ids: &SpanIds,
        h: &RequestHeaders<'_>,
        start_ns: u64,
        reason: KeepReason,
        rec: &mut SpanRecord,
    ) {
        self.begin_ids(ids, start_ns, rec);
        rec.set_trace_state(|b| {
            for (i, f) in h.tracestate.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                b.extend_from_slice(trim(f));
            }
        });
        self.begin_request(h, rec);
        rec.str("mesh.sampling.kept_by", reason.as_str().as_bytes());
    }

    fn begin_ids(&self, ids: &SpanIds, start_ns: u64, rec: &mut SpanRecord) {
        rec.clear();
        rec.max_attributes = self.config.limits.max_attributes;
        rec.max_value_len = self.config.limits.max_attribute_value_bytes;
        rec.trace_id = ids.trace_id;
        rec.span_id = ids.span_id;
        rec.parent_span_id = ids.parent;
        rec.parent_is_remote = ids.parent.is_some();
        rec.flags = ids.flags;
        rec.start_ns = start_ns;
    }

    fn begin_request(&self, h: &RequestHeaders<'_>, rec: &mut SpanRecord) {
        let method = h.method.unwrap_or(b"GET");
        let known = KNOWN_METHODS.contains(&method);
        let path = h.path.unwrap_or(b"/");
        let (url_path, query) = match path.iter().position(|&b| b == b'?') {
            Some(i) => (&path[..i], Some(&path[i + 1..])),
            None => (path, None),
        };
        let mut http_route = route::RouteBuf::new();
        self.mesh.routes.route(url_path, &mut http_route);
        rec.set_name(&route::span_name(
            self.mesh.span_name,
            method,
            known,
            &http_route,
        ));
        rec.str("http.route", &http_route);
        if known {
            rec.str("http.request.method", method);
        } else {
            rec.str("http.request.method", b"_OTHER");
            rec.str("http.request.method_original", method);
        }
        rec.str("url.path", url_path);
        // Query strings carry tokens and personal data: recorded only when enabled.
        if let Some(q) = query.filter(|q| self.mesh.capture.query && !q.is_empty()) {
            rec.str("url.query", q);
        }
        let scheme = h.x_forwarded_proto.or(h.scheme).unwrap_or(b"http");
        rec.str("url.scheme", scheme);
        if let Some(authority) = h.authority {
            let (host, port) = split_host_port(authority);
            rec.str("server.address", host);
            if let Some(p) = port {
                rec.int("server.port", p as i64);
            }
        }
        if let Some(ua) = h.user_agent {
            rec.str("user_agent.original", ua);
        }
        if let Some(xff) = h.x_forwarded_for {
            // The left-most entry is the original client.
            let first = xff.split(|&b| b == b',').next().unwrap_or(xff);
            rec.str("client.address", trim(first));
        }
    }

    /// Records the request-time mesh facts: captured headers, traffic rules matched by header
    /// or cookie, fault and attempt headers. `all` is every request header (the adapter's
    /// buffer); it is scanned only when capture or header rules are configured.
    pub fn record_request<'h>(
        &self,
        h: &RequestHeaders<'_>,
        all: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
        rec: &mut SpanRecord,
    ) -> RequestFacts {
        if self.mesh.capture.any(Side::Request) {
            self.mesh.capture.record(Side::Request, all.clone(), rec);
        }
        let hits = if self.mesh.traffic.has_request_rules() {
            self.mesh.traffic.request_hits(all, h.cookie)
        } else {
            Default::default()
        };
        RequestFacts {
            hits,
            fault: fault::FaultHeaders::parse(
                h.x_envoy_fault_abort_request,
                h.x_envoy_fault_delay_request,
            ),
            attempt_count: h.x_envoy_attempt_count.and_then(crate::headers::parse_u64),
        }
    }

    /// Records allowlisted response headers (the adapter fetches them only when
    /// [`Tracer::captures_response_headers`]).
    pub fn record_response_headers<'h>(
        &self,
        all: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
        rec: &mut SpanRecord,
    ) {
        self.mesh.capture.record(Side::Response, all, rec);
    }

    /// Whether response headers are captured at all.
    pub fn captures_response_headers(&self) -> bool {
        self.mesh.capture.any(Side::Response)
    }

    /// Whether an unsampled request must keep its [`SpanIds`] for the always-keep rules.
    pub fn may_keep(&self) -> bool {
        self.sampler.keep.enabled()
    }

    /// The always-keep verdict for an unsampled request, taking a rate-limit token when it is
    /// kept. Inputs the rules do not use may be `None`.
    pub fn keep(
        &mut self,
        status: Option<i64>,
        response_flags: u64,
        duration_ns: Option<u64>,
        now: impl FnOnce() -> u64,
    ) -> Option<KeepReason> {
        let fault = response_flags & (flags::FAULT_INJECTED | flags::DELAY_INJECTED) != 0;
        let reason = self.sampler.keep.check(status, fault, duration_ns)?;
        self.sampler.take(now).then_some(reason)
    }

    /// Completes `rec` with what is known at the end of the request.
    pub fn finish_span(&self, rec: &mut SpanRecord, f: &Finish<'_>) {
        rec.end_ns = f.end_ns.max(rec.start_ns);
        rec.kind = f.kind;
        if f.kind == SpanKind::Client {
            // The conventions call a client's path template `url.template`; `http.route` is
            // the server's. The kind is only known now (`direction: auto`).
            for a in rec.attrs.iter_mut() {
                if a.key == Key::Static("http.route") {
                    a.key = Key::Static("url.template");
                }
            }
        }
        if let Some(v) = f.protocol.and_then(protocol_version) {
            rec.str("network.protocol.version", v);
        }
        if rec.get("client.address").is_none() {
            if let Some(addr) = f.source_address {
                rec.str("client.address", split_host_port(addr).0);
            }
        }
        self.finish_status(rec, f);
        self.finish_mesh(rec, f);
    }

    /// Status code, span status and `error.type`: a response flag names the failure better
    /// than the number, and a request that ended without a response failed unless only the
    /// caller went away (cancellation is not the server's error).
    fn finish_status(&self, rec: &mut SpanRecord, f: &Finish<'_>) {
        let bits = f.mesh.response_flags;
        let flag_error = flags::error_type(bits);
        let code = f.status_code.filter(|c| *c > 0);
        if let Some(code) = code {
            rec.int("http.response.status_code", code);
        }
        let error = match code {
            Some(code) => code >= 500 || (code >= 400 && f.kind == SpanKind::Client),
            None => flag_error.is_some() && !flags::downstream_only(bits),
        };
        if error {
            rec.status = StatusCode::Error;
        }
        let mut digits = [0u8; 20];
        match (flag_error, code) {
            (Some(t), _) => rec.str("error.type", t.as_bytes()),
            (None, Some(c)) if error => rec.str("error.type", itoa(c, &mut digits)),
            _ => {}
        }
        if bits != 0 {
            rec.str_array(
                "envoy.response_flags",
                flags::codes(bits).map(str::as_bytes),
            );
            if let Some(d) = f.mesh.code_details {
                rec.str("envoy.response.code_details", d);
            }
        }
    }

    /// The mesh attributes: upstream cluster and subset, traffic tags, route name, faults,
    /// retries, timing, peer addresses and identity.
    fn finish_mesh(&self, rec: &mut SpanRecord, f: &Finish<'_>) {
        let m = &f.mesh;
        let cluster = m.cluster_name.and_then(mesh::cluster::parse);
        if let Some(name) = m.cluster_name {
            rec.str("mesh.upstream.cluster", name);
        }
        let subset = cluster.map(|c| c.subset).filter(|s| !s.is_empty());
        if let Some(s) = subset {
            rec.str("mesh.upstream.subset", s);
        }
        if let Some(host) = cluster.map(|c| c.host).filter(|h| !h.is_empty()) {
            rec.str("mesh.upstream.service", host);
        }
        if let Some(r) = m.route_name {
            rec.str("mesh.route.name", r);
        }
        if let Some(md) = m.route_metadata {
            mesh::metadata::record(md, rec);
        }
        self.mesh
            .traffic
            .record(f.request.hits, subset, m.route_name, rec);
        if let Some(fault) =
            fault::Fault::detect(m.response_flags, m.code_details, &f.request.fault)
        {
            fault.record(rec);
        }
        // Attempts this proxy made for a client span; the caller's count for a server span.
        let attempts = match f.kind {
            SpanKind::Client => m.upstream_attempts.map(|a| a.max(0) as u64),
            _ => f.request.attempt_count,
        };
        if let Some(a) = attempts.filter(|a| *a > 1) {
            rec.int(
                "http.request.resend_count",
                (a - 1).min(i64::MAX as u64) as i64,
            );
        }
        if let Some(ns) = m.backend_latency_ns.filter(|n| *n >= 0) {
            rec.double("mesh.upstream.service_time_ms", ns as f64 / 1e6);
        }
        // The immediate peer: the upstream host for a client span, the caller for a server one.
        let peer = match f.kind {
            SpanKind::Client => m.upstream_address,
            _ => f.source_address,
        };
        if let Some(addr) = peer {
            let (host, port) = split_host_port(addr);
            rec.str("network.peer.address", host);
            if let Some(p) = port {
                rec.int("network.peer.port", i64::from(p));
            }
        }
        let role = match f.kind {
            SpanKind::Client => identity::PeerRole::Server,
            _ => identity::PeerRole::Client,
        };
        m.tls.record(role, rec);
    }

    /// Generates a fresh id (for adapters that need one outside a request, e.g. tests).
    pub fn ids(&mut self) -> &mut IdGenerator {
        &mut self.ids
    }
}

/// Decoded bytes of one baggage value copied into an attribute; longer values are cut.
const BAGGAGE_ATTRIBUTE_MAX: usize = 1024;

/// Whether the request carried the `X-B3-*` header `name`.
fn b3_multi_present(h: &RequestHeaders<'_>, name: &str) -> bool {
    match name {
        b3::TRACE_ID => h.x_b3_traceid.is_some(),
        b3::SPAN_ID => h.x_b3_spanid.is_some(),
        b3::PARENT_SPAN_ID => h.x_b3_parentspanid.is_some(),
        b3::SAMPLED => h.x_b3_sampled.is_some(),
        b3::FLAGS => h.x_b3_flags.is_some(),
        _ => false,
    }
}

/// Queues the removal of every header of `f` the request carried.
fn remove_format(f: Format, h: &RequestHeaders<'_>, out: &mut Injection) {
    let mut drop_if = |present: bool, name: &'static str| {
        if present {
            out.remove.push(name);
        }
    };
    match f {
        Format::TraceContext => {
            drop_if(h.traceparent.is_some(), "traceparent");
            drop_if(!h.tracestate.is_empty(), "tracestate");
        }
        Format::Baggage => drop_if(!h.baggage.is_empty(), baggage::HEADER),
        Format::B3 => drop_if(h.b3.is_some(), b3::SINGLE),
        Format::B3Multi => {
            for name in [
                b3::TRACE_ID,
                b3::SPAN_ID,
                b3::PARENT_SPAN_ID,
                b3::SAMPLED,
                b3::FLAGS,
            ] {
                drop_if(b3_multi_present(h, name), name);
            }
        }
        // `l5d-reqid` names a request for log correlation, not a parent span: it stays.
        Format::L5d => drop_if(h.l5d_ctx_trace.is_some(), l5d::CTX_TRACE),
        Format::XRay => drop_if(h.x_amzn_trace_id.is_some(), xray::HEADER),
        Format::Gcp => drop_if(h.x_cloud_trace_context.is_some(), gcp::HEADER),
        Format::GrpcTraceBin => drop_if(h.grpc_trace_bin.is_some(), grpc_trace_bin::HEADER),
    }
}

/// Writes `tracestate` for the decision: the caller's list with this hop's `ot` changes. An
/// unchanged list is already on the request and costs no host call; an empty result removes a
/// stale or invalid one.
fn write_tracestate_header(d: &Decision<'_>, h: &RequestHeaders<'_>, out: &mut Injection) {
    let forwarded_as_is = d.ot == OtUpdate::Forward
        && d.incoming
            .as_ref()
            .is_some_and(|i| !i.tracestate.is_empty());
    if forwarded_as_is {
        return;
    }
    out.put("tracestate", |b| d.write_tracestate(b));
    if out.get("tracestate").is_some_and(<[u8]>::is_empty) {
        out.set.pop();
        if !h.tracestate.is_empty() {
            out.remove.push("tracestate");
        }
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Splits `host:port`, `[v6]:port` or a bare host.
pub fn split_host_port(s: &[u8]) -> (&[u8], Option<u16>) {
    let parse_port = |p: &[u8]| -> Option<u16> {
        if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        p.iter()
            .try_fold(0u32, |acc, &d| Some(acc * 10 + (d - b'0') as u32))
            .and_then(|v| u16::try_from(v).ok())
    };
    if let Some(rest) = s.strip_prefix(b"[") {
        if let Some(end) = rest.iter().position(|&b| b == b']') {
            let host = &rest[..end];
            let port = rest
                .get(end + 1..)
                .and_then(|r| r.strip_prefix(b":"))
                .and_then(parse_port);
            return (host, port);
        }
        return (s, None);
    }
    match s.iter().rposition(|&b| b == b':') {
        // A second colon means a bare IPv6 address, not host:port.
        Some(i) if !s[..i].contains(&b':') => match parse_port(&s[i + 1..]) {
            Some(p) => (&s[..i], Some(p)),
            None => (s, None),
        },
        _ => (s, None),
    }
}

/// `HTTP/1.1` → `1.1`, `HTTP/2` → `2`, as `network.protocol.version` wants.
fn protocol_version(p: &[u8]) -> Option<&[u8]> {
    p.strip_prefix(b"HTTP/").filter(|v| !v.is_empty())
}

/// Formats an integer without allocating.
fn itoa(mut v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let neg = v < 0;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10).unsigned_abs() as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg && i > 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

#[cfg(test)]
mod propagation_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;

    fn tracer() -> Tracer {
        Tracer::new(
            Config::from_json(br#"{"collector":{"cluster":"c"}}"#).unwrap(),
            7,
        )
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> RequestHeaders<'a> {
        RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn continues_valid_parent() {
        let mut t = tracer();
        let pairs = [
            (":method", "GET"),
            (":path", "/api/x?q=1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ];
        let h = headers(&pairs);
        let d = t.start(&h);
        assert_eq!(d.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(d.parent.unwrap().to_string(), "00f067aa0ba902b7");
        assert!(d.sampled());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", d.span_id);
        assert_eq!(inj.get("traceparent"), Some(tp.as_bytes()));
        // Forwarded unchanged: already on the request, so not rewritten.
        assert_eq!(inj.get("tracestate"), None);
        assert!(inj.remove.is_empty());
        let mut rec = SpanRecord::default();
        t.begin_span(&d, &h, 10, &mut rec);
        assert_eq!(rec.name(), b"GET /api/x");
        assert_eq!(rec.trace_state(), b"congo=t61rcWkgMzE");
    }

    #[test]
    fn restarts_on_invalid_and_drops_tracestate() {
        let mut t = tracer();
        let pairs = [
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ];
        let h = headers(&pairs);
        let d = t.start(&h);
        assert!(d.parent.is_none());
        assert_ne!(d.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(d.flags, 0x03);
        assert_eq!(d.malformed, 1 << Format::TraceContext as usize);
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert_eq!(inj.get("tracestate"), None);
        assert_eq!(inj.remove.as_slice(), &["tracestate"]);
    }

    #[test]
    fn unsampled_parent_keeps_flag() {
        let mut t = tracer();
        let pairs = [(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )];
        let h = headers(&pairs);
        let d = t.start(&h);
        assert!(!d.sampled());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert!(inj.get("traceparent").unwrap().ends_with(b"-00"));
    }

    #[test]
    fn attributes_and_status() {
        let mut t = tracer();
        let pairs = [
            (":method", "PURGE"),
            (":path", "/cache/1"),
            (":authority", "shop.example:8443"),
            (":scheme", "https"),
            ("user-agent", "curl/8"),
            ("x-forwarded-for", " 203.0.113.9 , 10.0.0.1"),
        ];
        let h = headers(&pairs);
        let d = t.start(&h);
        let mut rec = SpanRecord::default();
        t.begin_span(&d, &h, 10, &mut rec);
        t.finish_span(
            &mut rec,
            &Finish {
                end_ns: 20,
                status_code: Some(404),
                protocol: Some(b"HTTP/2"),
                source_address: Some(b"10.0.0.1:5555"),
                kind: SpanKind::Client,
                ..Default::default()
            },
        );
        let s = |k: &str| match rec.get(k) {
            Some(Value::Str(r)) => String::from_utf8(rec.text(r).to_vec()).unwrap(),
            other => format!("{other:?}"),
        };
        assert_eq!(rec.name(), b"HTTP /cache/{id}");
        assert_eq!(s("http.request.method"), "_OTHER");
        assert_eq!(s("http.request.method_original"), "PURGE");
        assert_eq!(s("server.address"), "shop.example");
        assert_eq!(rec.get("server.port"), Some(&Value::Int(8443)));
        assert_eq!(s("url.scheme"), "https");
        assert_eq!(s("client.address"), "203.0.113.9");
        assert_eq!(s("network.protocol.version"), "2");
        assert_eq!(rec.get("http.response.status_code"), Some(&Value::Int(404)));
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(s("error.type"), "404");
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port(b"a:80"), (&b"a"[..], Some(80)));
        assert_eq!(split_host_port(b"[::1]:80"), (&b"::1"[..], Some(80)));
        assert_eq!(split_host_port(b"::1"), (&b"::1"[..], None));
        assert_eq!(split_host_port(b"a:99999"), (&b"a:99999"[..], None));
        let mut b = [0u8; 20];
        assert_eq!(itoa(-120, &mut b), b"-120");
    }
}

/// Scenario tests for the mesh semantics: one request each, from headers to finished span.
#[cfg(test)]
mod mesh_tests {
    use super::*;
    use crate::span::mesh::identity::TlsFacts;
    use crate::span::mesh::EndFacts;
    use crate::span::Value;

    fn tracer(extra: &str) -> Tracer {
        let json = format!(r#"{{"collector":{{"cluster":"c"}}{extra}}}"#);
        Tracer::new(Config::from_json(json.as_bytes()).unwrap(), 7)
    }

    fn pairs_of<'a>(
        p: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        p.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))
    }

    /// Runs one request through every step and returns its finished span.
    fn run(t: &mut Tracer, req: &[(&str, &str)], f: Finish<'_>) -> SpanRecord {
        let h = RequestHeaders::from_pairs(pairs_of(req));
        let mut d = t.start(&h);
        t.sample(&mut d, || 1_000);
        assert!(d.record, "the scenario expects a recorded span");
        let mut rec = SpanRecord::default();
        t.begin_span(&d, &h, 1_000, &mut rec);
        let request = t.record_request(&h, pairs_of(req), &mut rec);
        t.finish_span(&mut rec, &Finish { request, ..f });
        rec
    }

    fn s(rec: &SpanRecord, k: &str) -> Option<String> {
        match rec.get(k) {
            Some(Value::Str(r)) => Some(String::from_utf8(rec.text(r).to_vec()).unwrap()),
            _ => None,
        }
    }

    fn arr(rec: &SpanRecord, k: &str) -> Option<Vec<String>> {
        match rec.get(k) {
            Some(Value::StrArray(r)) => Some(
                rec.list(r)
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
                    .collect(),
            ),
            _ => None,
        }
    }

    const GET: [(&str, &str); 3] = [
        (":method", "GET"),
        (":path", "/reviews/42?x=1"),
        (":authority", "reviews:9080"),
    ];

    #[test]
    fn root_sampling_writes_the_threshold() {
        let mut t = tracer(r#","sampling":{"ratio":0.5}"#);
        let h = RequestHeaders::default();
        // Sampled at 50%: the trace id's low 56 bits are at least the threshold 0x80...
        let mut d = t.start(&h);
        d.trace_id = TraceId::from_u64s(1, 0x00c0_0000_0000_0000);
        t.sample(&mut d, || 0);
        assert!(d.sampled() && d.record);
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert_eq!(inj.get("tracestate"), Some(&b"ot=th:8"[..]));
        let mut rec = SpanRecord::default();
        t.begin_span(&d, &h, 0, &mut rec);
        assert_eq!(rec.trace_state(), b"ot=th:8");
    }

    #[test]
    fn sampling_everything_writes_no_threshold() {
        let mut t = tracer(r#","sampling":{"ratio":1.0}"#);
        let pairs = [("tracestate", "congo=t61")];
        let h = RequestHeaders::from_pairs(pairs_of(&pairs));
        let mut d = t.start(&h);
        t.sample(&mut d, || 0);
        assert!(d.sampled() && d.record);
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        // A new trace: the caller's stale tracestate goes, and nothing replaces it.
        assert_eq!(inj.get("tracestate"), None);
        assert_eq!(inj.remove.as_slice(), &["tracestate"]);
    }

    #[test]
    fn unsampled_root_sends_unsampled_and_no_tracestate() {
        let mut t = tracer(r#","sampling":{"ratio":0}"#);
        let h = RequestHeaders::default();
        let mut d = t.start(&h);
        let mut clock_read = false;
        t.sample(&mut d, || {
            clock_read = true;
            0
        });
        assert!(!d.sampled() && !d.record);
        assert!(!clock_read, "an unsampled decision reads no clock");
        assert!(!t.may_keep());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert!(inj.get("traceparent").unwrap().ends_with(b"-02"));
        assert_eq!(inj.get("tracestate"), None);
        assert!(inj.remove.is_empty());
    }

    #[test]
    fn parent_threshold_inconsistent_with_its_flag_is_erased() {
        let mut t = tracer("");
        let req = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            // rv below th: a sampled flag contradicts it.
            ("tracestate", "congo=t61,ot=th:f;rv:00000000000001"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.start(&h);
        t.sample(&mut d, || 0);
        assert!(d.sampled());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert_eq!(
            inj.get("tracestate"),
            Some(&b"ot=rv:00000000000001,congo=t61"[..])
        );
    }

    #[test]
    fn canary_subset_on_an_outbound_cluster() {
        let mut t = tracer(
            r#","traffic":{"rules":[
                {"match":"subset","value":"v2","release":"canary","canary":true},
                {"match":"subset","value":"v1","release":"stable","canary":false}],
               "weights":{"v1":90,"v2":10}}"#,
        );
        let rec = run(
            &mut t,
            &GET,
            Finish {
                end_ns: 5_000,
                status_code: Some(200),
                kind: SpanKind::Client,
                mesh: EndFacts {
                    cluster_name: Some(b"outbound|9080|v2|reviews.default.svc.cluster.local"),
                    route_name: Some(b"reviews.default.svc.cluster.local:9080"),
                    upstream_address: Some(b"10.1.2.3:9080"),
                    upstream_attempts: Some(1),
                    backend_latency_ns: Some(2_500_000),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(
            s(&rec, "mesh.upstream.cluster").as_deref(),
            Some("outbound|9080|v2|reviews.default.svc.cluster.local")
        );
        assert_eq!(s(&rec, "mesh.upstream.subset").as_deref(), Some("v2"));
        assert_eq!(
            s(&rec, "mesh.upstream.service").as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(s(&rec, "mesh.release").as_deref(), Some("canary"));
        assert_eq!(rec.get("mesh.canary"), Some(&Value::Bool(true)));
        assert_eq!(rec.get("mesh.traffic.weight"), Some(&Value::Int(10)));
        assert_eq!(
            s(&rec, "mesh.route.name").as_deref(),
            Some("reviews.default.svc.cluster.local:9080")
        );
        assert_eq!(s(&rec, "network.peer.address").as_deref(), Some("10.1.2.3"));
        assert_eq!(rec.get("network.peer.port"), Some(&Value::Int(9080)));
        assert_eq!(
            rec.get("mesh.upstream.service_time_ms"),
            Some(&Value::Double(2.5))
        );
        assert_eq!(rec.get("http.request.resend_count"), None);
        assert_eq!(rec.status, StatusCode::Unset);
        assert_eq!(rec.get("error.type"), None);
        assert_eq!(rec.get("envoy.response_flags"), None);
        assert_eq!(rec.name(), b"GET /reviews/{id}");
        // A client span's template is `url.template`, not `http.route`.
        assert_eq!(s(&rec, "url.template").as_deref(), Some("/reviews/{id}"));
        assert_eq!(rec.get("http.route"), None);
        assert_eq!(rec.get("url.query"), None);
    }

    #[test]
    fn header_ab_group_and_inbound_cluster() {
        let mut t = tracer(
            r#","traffic":{"rules":[
                {"match":"header","name":"x-ab","value":"b","ab_group":"B"},
                {"match":"cookie","name":"ab","value":"a","ab_group":"A"}]}"#,
        );
        let mut req = GET.to_vec();
        req.push(("x-ab", "b"));
        req.push(("cookie", "ab=a"));
        let rec = run(
            &mut t,
            &req,
            Finish {
                end_ns: 5_000,
                status_code: Some(200),
                kind: SpanKind::Server,
                source_address: Some(b"10.9.9.9:41000"),
                mesh: EndFacts {
                    cluster_name: Some(b"inbound|9080||"),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        // The header rule comes first.
        assert_eq!(s(&rec, "mesh.ab_group").as_deref(), Some("B"));
        assert_eq!(
            s(&rec, "mesh.upstream.cluster").as_deref(),
            Some("inbound|9080||")
        );
        assert_eq!(rec.get("mesh.upstream.subset"), None);
        assert_eq!(rec.get("mesh.upstream.service"), None);
        // A server span's peer is the caller.
        assert_eq!(s(&rec, "network.peer.address").as_deref(), Some("10.9.9.9"));
        assert_eq!(rec.get("network.peer.port"), Some(&Value::Int(41000)));
    }

    #[test]
    fn injected_abort_is_fault_injected_not_a_real_failure() {
        let mut t = tracer("");
        let mut req = GET.to_vec();
        req.push(("x-envoy-fault-abort-request", "503"));
        let rec = run(
            &mut t,
            &req,
            Finish {
                end_ns: 5_000,
                status_code: Some(503),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    response_flags: flags::FAULT_INJECTED,
                    code_details: Some(b"fault_filter_abort"),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(s(&rec, "error.type").as_deref(), Some("fault_injected"));
        assert_eq!(
            arr(&rec, "envoy.response_flags"),
            Some(vec!["FI".to_string()])
        );
        assert_eq!(
            s(&rec, "envoy.response.code_details").as_deref(),
            Some("fault_filter_abort")
        );
        assert_eq!(rec.get("mesh.fault.injected"), Some(&Value::Bool(true)));
        assert_eq!(s(&rec, "mesh.fault.type").as_deref(), Some("abort"));
        assert_eq!(rec.events.len(), 1);
        assert_eq!(rec.events[0].name, "fault.injected");
        assert_eq!(rec.events[0].time_ns, 5_000);
    }

    #[test]
    fn injected_delay_is_not_an_error() {
        let mut t = tracer("");
        let mut req = GET.to_vec();
        req.push(("x-envoy-fault-delay-request", "300"));
        let rec = run(
            &mut t,
            &req,
            Finish {
                end_ns: 400_000_000,
                status_code: Some(200),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    response_flags: flags::DELAY_INJECTED,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Unset);
        assert_eq!(rec.get("error.type"), None);
        assert_eq!(
            arr(&rec, "envoy.response_flags"),
            Some(vec!["DI".to_string()])
        );
        assert_eq!(s(&rec, "mesh.fault.type").as_deref(), Some("delay"));
        assert_eq!(rec.get("mesh.fault.delay_ms"), Some(&Value::Int(300)));
        assert_eq!(rec.events[0].time_ns, 1_000);
    }

    #[test]
    fn retried_upstream_failure() {
        let mut t = tracer("");
        let rec = run(
            &mut t,
            &GET,
            Finish {
                end_ns: 9_000,
                status_code: Some(503),
                kind: SpanKind::Client,
                mesh: EndFacts {
                    response_flags: 0x20 | 0x8000,
                    code_details: Some(
                        b"upstream_reset_before_response_started{connection_failure}",
                    ),
                    cluster_name: Some(b"outbound|9080|v1|ratings.default.svc.cluster.local"),
                    upstream_attempts: Some(3),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(
            s(&rec, "error.type").as_deref(),
            Some("upstream_connect_failure")
        );
        assert_eq!(
            arr(&rec, "envoy.response_flags"),
            Some(vec!["UF".to_string(), "URX".to_string()])
        );
        assert_eq!(rec.get("http.request.resend_count"), Some(&Value::Int(2)));
    }

    #[test]
    fn server_span_resend_count_comes_from_the_attempt_header() {
        let mut t = tracer("");
        let mut req = GET.to_vec();
        req.push(("x-envoy-attempt-count", "2"));
        let rec = run(
            &mut t,
            &req,
            Finish {
                status_code: Some(200),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    // Ignored on a server span: those are this proxy's upstream attempts.
                    upstream_attempts: Some(5),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.get("http.request.resend_count"), Some(&Value::Int(1)));
    }

    #[test]
    fn caller_going_away_is_not_a_server_error() {
        let mut t = tracer("");
        let rec = run(
            &mut t,
            &GET,
            Finish {
                status_code: None,
                kind: SpanKind::Server,
                mesh: EndFacts {
                    response_flags: flags::DOWNSTREAM_DISCONNECT,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Unset);
        assert_eq!(
            s(&rec, "error.type").as_deref(),
            Some("downstream_disconnect")
        );
        // No response and an upstream failure: an error without a status code.
        let rec = run(
            &mut t,
            &GET,
            Finish {
                status_code: Some(0),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    response_flags: 0x10,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(rec.get("http.response.status_code"), None);
        assert_eq!(s(&rec, "error.type").as_deref(), Some("upstream_reset"));
    }

    #[test]
    fn inbound_mtls_identity() {
        let mut t = tracer("");
        let rec = run(
            &mut t,
            &GET,
            Finish {
                status_code: Some(200),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    tls: TlsFacts {
                        mtls: Some(true),
                        version: Some(b"TLSv1.3"),
                        peer_uri_san: Some(b"spiffe://cluster.local/ns/default/sa/productpage"),
                        peer_subject: Some(b"O=cluster.local"),
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.get("connection.mtls"), Some(&Value::Bool(true)));
        assert_eq!(s(&rec, "mesh.peer.namespace").as_deref(), Some("default"));
        assert_eq!(
            s(&rec, "mesh.peer.service_account").as_deref(),
            Some("productpage")
        );
        assert_eq!(s(&rec, "tls.protocol.version").as_deref(), Some("1.3"));
        assert_eq!(
            s(&rec, "tls.client.subject").as_deref(),
            Some("O=cluster.local")
        );
    }

    #[test]
    fn privacy_allowlist_redaction_query_and_caps() {
        let mut t = tracer(
            r#","capture":{"request_headers":["x-tenant","authorization","x-session"],
                           "redact":["x-session"],"query":true},
               "limits":{"max_attribute_value_bytes":16,"max_attributes":12}"#,
        );
        let req = [
            (":method", "GET"),
            (":path", "/search?q=shoes&page=2"),
            ("x-tenant", "acme-corporation-international"),
            ("authorization", "Bearer abc"),
            ("x-session", "s-1"),
            ("x-other", "nope"),
            ("user-agent", "curl/8"),
        ];
        let rec = run(
            &mut t,
            &req,
            Finish {
                status_code: Some(200),
                kind: SpanKind::Server,
                source_address: Some(b"10.0.0.1:1234"),
                protocol: Some(b"HTTP/1.1"),
                mesh: EndFacts {
                    cluster_name: Some(b"inbound|8080||"),
                    route_name: Some(b"default"),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(s(&rec, "url.query").as_deref(), Some("q=shoes&page=2"));
        assert_eq!(
            arr(&rec, "http.request.header.x-tenant"),
            Some(vec!["acme-corporation".to_string()])
        );
        assert_eq!(
            arr(&rec, "http.request.header.authorization"),
            Some(vec!["REDACTED".to_string()])
        );
        assert_eq!(
            arr(&rec, "http.request.header.x-session"),
            Some(vec!["REDACTED".to_string()])
        );
        assert_eq!(rec.get("http.request.header.x-other"), None);
        assert_eq!(rec.attrs.len(), 12);
        assert!(rec.dropped_attributes > 0);
        // Without `capture.query` the query never leaves the proxy.
        let mut t = tracer("");
        let rec = run(&mut t, &req, Finish::default());
        assert_eq!(rec.get("url.query"), None);
        assert_eq!(s(&rec, "url.path").as_deref(), Some("/search"));
    }

    #[test]
    fn configured_route_and_legacy_span_name() {
        let mut t = tracer(r#","routes":["/reviews/{review_id}"],"span_name":"legacy""#);
        let rec = run(&mut t, &GET, Finish::default());
        assert_eq!(rec.name(), b"HTTP GET /reviews/{review_id}");
        assert_eq!(
            s(&rec, "http.route").as_deref(),
            Some("/reviews/{review_id}")
        );
    }

    #[test]
    fn kept_error_span_keeps_its_unsampled_flag() {
        let mut t =
            tracer(r#","sampling":{"ratio":0,"always_keep":["error","slow"],"slow_ms":100}"#);
        assert!(t.may_keep());
        let req = [
            (":method", "POST"),
            (":path", "/orders"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.start(&h);
        t.sample(&mut d, || 0);
        assert!(!d.record);
        let ids = d.ids();
        assert_eq!(t.keep(Some(200), 0, Some(1_000_000), || 0), None);
        assert_eq!(
            t.keep(Some(502), 0, Some(1_000_000), || 0),
            Some(KeepReason::Error)
        );
        assert_eq!(
            t.keep(Some(200), 0, Some(200_000_000), || 0),
            Some(KeepReason::Slow)
        );
        // The logged headers carry what this hop sent.
        let logged = [
            (":method", "POST"),
            (":path", "/orders"),
            ("tracestate", "congo=t61"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&logged));
        let mut rec = SpanRecord::default();
        t.begin_kept_span(&ids, &h, 10, KeepReason::Error, &mut rec);
        t.finish_span(
            &mut rec,
            &Finish {
                end_ns: 20,
                status_code: Some(502),
                ..Default::default()
            },
        );
        assert_eq!(s(&rec, "mesh.sampling.kept_by").as_deref(), Some("error"));
        assert_eq!(rec.flags & FLAG_SAMPLED, 0);
        assert_eq!(rec.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(rec.parent_span_id.unwrap().to_string(), "00f067aa0ba902b7");
        assert_eq!(rec.trace_state(), b"congo=t61");
        assert_eq!(rec.status, StatusCode::Error);
    }

    #[test]
    fn kept_spans_respect_the_rate_limit() {
        let mut t = tracer(r#","sampling":{"ratio":0,"max_per_second":1,"always_keep":["fault"]}"#);
        assert_eq!(
            t.keep(Some(503), flags::FAULT_INJECTED, None, || 0),
            Some(KeepReason::Fault)
        );
        assert_eq!(t.keep(Some(503), flags::FAULT_INJECTED, None, || 1), None);
        assert_eq!(
            t.keep(Some(200), flags::DELAY_INJECTED, None, || 2_000_000_000),
            Some(KeepReason::Fault)
        );
        // Errors are not kept unless asked for.
        assert_eq!(t.keep(Some(500), 0, None, || 4_000_000_000), None);
    }

    #[test]
    fn resource_comes_from_the_node_once() {
        use crate::resource::encode::{node, string_value};
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        use prost::Message;
        let n = NodeInfo::from_node_proto(&node(
            "sidecar~10.1.2.3~reviews-v2-7f9c.default~default.svc.cluster.local",
            &[
                ("WORKLOAD_NAME", string_value("reviews-v2")),
                ("NAMESPACE", string_value("default")),
                ("ISTIO_VERSION", string_value("1.28.0")),
            ],
        ));
        let config = Config::from_json(
            br#"{"collector":{"cluster":"c"},"resource":{"service.version":"7"}}"#,
        )
        .unwrap();
        let t = Tracer::with_node(config, 1, &n);
        let mut out = Vec::new();
        t.batch_header.encode_request(&[], &mut out);
        let req = ExportTraceServiceRequest::decode(&out[..]).unwrap();
        let attrs = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
        let get = |k: &str| {
            attrs
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| match &a.value.as_ref()?.value {
                    Some(V::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
        };
        assert_eq!(get("service.name").as_deref(), Some("reviews-v2"));
        assert_eq!(get("service.version").as_deref(), Some("7"));
        assert_eq!(get("k8s.namespace.name").as_deref(), Some("default"));
        assert_eq!(get("k8s.pod.name").as_deref(), Some("reviews-v2-7f9c"));
        assert_eq!(get("k8s.deployment.name").as_deref(), Some("reviews-v2"));
        assert_eq!(get("service.mesh").as_deref(), Some("istio"));
        assert_eq!(get("telemetry.sdk.name").as_deref(), Some("meshtrace"));
    }

    #[test]
    fn a_deferred_caller_leaves_the_decision_to_the_root_sampler() {
        let mut t = tracer(r#","sampling":{"ratio":0}"#);
        // B3 with no sampling state: the caller defers, so the 0% root sampler decides.
        let req = [
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.start(&h);
        assert!(d.ours);
        t.sample(&mut d, || 0);
        assert!(!d.sampled() && !d.record);
        // The same caller saying "sampled" is followed whatever the ratio.
        let req = [
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.start(&h);
        assert!(!d.ours);
        t.sample(&mut d, || 0);
        assert!(d.sampled() && d.record);
        assert_eq!(d.ot, OtUpdate::Forward);
    }

    #[test]
    fn a_deferred_caller_sampled_by_us_gets_the_threshold() {
        // The trace id's low 56 bits (0xce92...) pass the 50% threshold (0x80...).
        let mut t = tracer(r#","sampling":{"ratio":0.5}"#);
        let req = [
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.start(&h);
        t.sample(&mut d, || 0);
        assert!(d.sampled());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert_eq!(inj.get("tracestate"), Some(&b"ot=th:8"[..]));
    }

    #[test]
    fn istio_cluster_gives_the_span_kind() {
        assert_eq!(
            mesh::kind_from_cluster(b"outbound|80||a.b.svc.cluster.local"),
            Some(SpanKind::Client)
        );
        assert_eq!(
            mesh::kind_from_cluster(b"inbound|80||"),
            Some(SpanKind::Server)
        );
        assert_eq!(mesh::kind_from_cluster(b"otel_collector"), None);
    }
}
