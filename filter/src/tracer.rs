//! The core request path, host-independent: extract, decide, inject, build and finish a span.
//!
//! An adapter calls [`Tracer::start`] with the request headers it fetched once, applies the
//! returned [`Injection`], fills a pooled [`SpanRecord`] with [`Tracer::begin_span`] (only when
//! sampled), and at the end calls [`Tracer::finish_span`] with what the host knows then.

use smallvec::SmallVec;

use crate::config::Config;
use crate::headers::RequestHeaders;
use crate::ids::{IdGenerator, SpanId, TraceId};
use crate::otlp::{BatchHeader, ResourceValue};
use crate::propagation::baggage::{self, Baggage};
use crate::propagation::{
    self, b3, gcp, grpc_trace_bin, l5d, tracecontext, xray, Dialect, Extraction, Format, Incoming,
    Sampling, SpanContext, FLAG_RANDOM, FLAG_SAMPLED,
};
use crate::span::{SpanKind, SpanRecord, StatusCode};

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
}

/// Methods the HTTP semantic conventions know; anything else is `_OTHER`.
const KNOWN_METHODS: [&[u8]; 10] = [
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    b"QUERY",
];

impl Tracer {
    /// Builds the per-VM state; `seed` comes from the host's entropy.
    pub fn new(config: Config, seed: u64) -> Self {
        let batch_header = BatchHeader::new(&[
            (
                "service.name",
                ResourceValue::Str(config.service_name().to_string()),
            ),
            (
                "telemetry.sdk.name",
                ResourceValue::Str(crate::SCOPE_NAME.into()),
            ),
            ("telemetry.sdk.language", ResourceValue::Str("rust".into())),
            (
                "telemetry.sdk.version",
                ResourceValue::Str(crate::VERSION.into()),
            ),
        ]);
        let extract_order = config.propagators.extract_formats();
        let mask = |formats: &[Format]| formats.iter().fold(0u16, |m, f| m | f.bit());
        let inject_mask = mask(&config.propagators.inject_formats());
        let known_mask = inject_mask | mask(&extract_order);
        Self {
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
                let (sampled, debug) = self.resolve(hint.unwrap_or_default());
                Decision {
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

    /// The root sampler: always on until a configurable sampler replaces it.
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
                match d.incoming.as_ref().map(|i| &i.tracestate) {
                    Some(ts) if !ts.is_empty() => out.put("tracestate", |b| ts.write_to(b)),
                    // A restarted trace or an invalid tracestate: the old one must not reach upstream.
                    _ if !h.tracestate.is_empty() => out.remove.push("tracestate"),
                    _ => {}
                }
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

    /// Records what the request carried into `rec` (called only for sampled requests).
    pub fn begin_span(
        &self,
        d: &Decision<'_>,
        h: &RequestHeaders<'_>,
        start_ns: u64,
        rec: &mut SpanRecord,
    ) {
        rec.clear();
        rec.trace_id = d.trace_id;
        rec.span_id = d.span_id;
        rec.parent_span_id = d.parent;
        rec.parent_is_remote = d.parent.is_some();
        rec.flags = d.flags;
        rec.start_ns = start_ns;
        if let Some(ts) = d.incoming.as_ref().map(|i| &i.tracestate) {
            rec.set_trace_state(|b| ts.write_to(b));
        }
        let method = h.method.unwrap_or(b"GET");
        let known = KNOWN_METHODS.contains(&method);
        let path = h.path.unwrap_or(b"/");
        let url_path = path.split(|&b| b == b'?').next().unwrap_or(path);
        // `{method} {target}`; `HTTP` stands for an unknown method (OTel HTTP span naming).
        rec.set_name(&[if known { method } else { b"HTTP" }, b" ", url_path]);
        if known {
            rec.str("http.request.method", method);
        } else {
            rec.str("http.request.method", b"_OTHER");
            rec.str("http.request.method_original", method);
        }
        rec.str("url.path", url_path);
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
        self.record_propagation(d, h, rec);
    }

    /// Completes `rec` with what is known at the end of the request.
    pub fn finish_span(&self, rec: &mut SpanRecord, f: &Finish<'_>) {
        rec.end_ns = f.end_ns.max(rec.start_ns);
        rec.kind = f.kind;
        if let Some(v) = f.protocol.and_then(protocol_version) {
            rec.str("network.protocol.version", v);
        }
        if rec.get("client.address").is_none() {
            if let Some(addr) = f.source_address {
                rec.str("client.address", split_host_port(addr).0);
            }
        }
        if let Some(code) = f.status_code.filter(|c| *c > 0) {
            rec.int("http.response.status_code", code);
            let error = code >= 500 || (code >= 400 && f.kind == SpanKind::Client);
            if error {
                rec.status = StatusCode::Error;
                let mut digits = [0u8; 20];
                rec.str("error.type", itoa(code, &mut digits));
            }
        }
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
        assert_eq!(inj.get("tracestate"), Some(&b"congo=t61rcWkgMzE"[..]));
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
            },
        );
        let s = |k: &str| match rec.get(k) {
            Some(Value::Str(r)) => String::from_utf8(rec.text(r).to_vec()).unwrap(),
            other => format!("{other:?}"),
        };
        assert_eq!(rec.name(), b"HTTP /cache/1");
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
