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
use crate::propagation::{
    self, tracecontext, Extraction, Format, Incoming, FLAG_RANDOM, FLAG_SAMPLED,
};
use crate::span::{SpanKind, SpanRecord, StatusCode};

/// The decision for one request: the new span's context and its parent.
#[derive(Clone, Debug)]
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
}

impl Decision<'_> {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// Headers to write upstream: set each `set` (replacing any old value), remove each `remove`.
#[derive(Clone, Debug, Default)]
pub struct Injection {
    buf: Vec<u8>,
    set: SmallVec<[(&'static str, core::ops::Range<usize>); 4]>,
    pub remove: SmallVec<[&'static str; 4]>,
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
        Self {
            config,
            ids: IdGenerator::from_seed(seed),
            batch_header,
            extract_order: SmallVec::from_slice(&[Format::TraceContext]),
        }
    }

    /// Extracts the incoming context and decides: continue it, or start a new trace.
    pub fn start<'a>(&mut self, headers: &RequestHeaders<'a>) -> Decision<'a> {
        let Extraction {
            incoming,
            malformed,
        } = propagation::extract(headers, &self.extract_order);
        let span_id = self.ids.span_id();
        match incoming {
            // Parent-based: a valid parent's sampled flag is kept, sampled or not.
            Some(inc) => Decision {
                trace_id: inc.ctx.trace_id,
                span_id,
                parent: Some(inc.ctx.span_id),
                flags: inc.ctx.flags,
                incoming: Some(inc),
                malformed,
            },
            // A new trace: always-on root sampler, and every id byte is random.
            None => Decision {
                trace_id: self.ids.trace_id(),
                span_id,
                parent: None,
                flags: FLAG_SAMPLED | FLAG_RANDOM,
                incoming: None,
                malformed,
            },
        }
    }

    /// Fills `out` with the headers the upstream must receive; `h` tells which stale headers
    /// exist and must go.
    pub fn inject(&self, d: &Decision<'_>, h: &RequestHeaders<'_>, out: &mut Injection) {
        out.clear();
        let ctx = propagation::SpanContext {
            trace_id: d.trace_id,
            span_id: d.span_id,
            flags: d.flags,
        };
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
