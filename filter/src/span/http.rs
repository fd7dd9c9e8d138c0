//! HTTP spans: the name and the HTTP semantic-convention attributes a request gives its span,
//! the status rules at its end, and what propagation learnt (links, Linkerd's request id,
//! allowlisted baggage).
//!
//! Names and attributes follow the OpenTelemetry HTTP semantic conventions: `{method} {route}`,
//! `http.request.method` (`_OTHER` for unknown methods), `url.*`, `server.*`, `client.address`;
//! 5xx is an error on SERVER spans, 4xx and 5xx on CLIENT spans.

use super::capture::Side;
use super::grpc;
use super::mesh::{self, fault, flags, RequestFacts};
use super::name::SpanNames;
use super::{Finish, GuessedName, SpanKind, SpanRecord, StatusCode, Tables};
use crate::headers::RequestHeaders;
use crate::propagation::baggage;
use crate::propagation::context::{SpanIds, SpanStart};
use crate::sampling::KeepReason;
use crate::text::{itoa, split_host_port};

/// Methods the HTTP semantic conventions know; anything else is `_OTHER`.
pub const KNOWN_METHODS: [&[u8]; 10] = [
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    b"QUERY",
];

/// Decoded bytes of one baggage value copied into an attribute; longer values are cut.
const BAGGAGE_ATTRIBUTE_MAX: usize = 1024;

/// Records what the request carried into `rec` (called only for recorded requests).
pub fn begin(
    t: &Tables,
    names: &mut SpanNames,
    d: &SpanStart<'_>,
    h: &RequestHeaders<'_>,
    start_ns: u64,
    rec: &mut SpanRecord,
) {
    begin_ids(t, &d.ids(), start_ns, rec);
    rec.set_trace_state(|b| d.write_tracestate(b));
    request(t, names, h, rec);
    record_context(t, d, h, rec);
}

/// Starts the span of an unsampled request the always-keep rules export, from the request
/// headers as they were logged (they carry the `tracestate` this hop sent). The span keeps
/// its unsampled flags: that is what the trace carried downstream.
pub fn begin_kept(
    t: &Tables,
    names: &mut SpanNames,
    ids: &SpanIds,
    h: &RequestHeaders<'_>,
    start_ns: u64,
    reason: KeepReason,
    rec: &mut SpanRecord,
) {
    begin_ids(t, ids, start_ns, rec);
    rec.set_trace_state(|b| {
        for (i, f) in h.tracestate.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(f.trim_ascii());
        }
    });
    request(t, names, h, rec);
    rec.str("mesh.sampling.kept_by", reason.as_str().as_bytes());
}

fn begin_ids(t: &Tables, ids: &SpanIds, start_ns: u64, rec: &mut SpanRecord) {
    rec.clear();
    rec.max_attributes = t.limits.max_attributes;
    rec.max_value_len = t.limits.max_attribute_value_bytes;
    rec.max_name_len = t.limits.max_span_name_bytes;
    rec.trace_id = ids.trace_id;
    rec.span_id = ids.span_id;
    rec.parent_span_id = ids.parent;
    rec.parent_is_remote = ids.parent.is_some();
    rec.flags = ids.flags;
    rec.start_ns = start_ns;
}

fn request(t: &Tables, names: &mut SpanNames, h: &RequestHeaders<'_>, rec: &mut SpanRecord) {
    let method = h.method.unwrap_or(b"GET");
    let known = KNOWN_METHODS.contains(&method);
    let path = h.path.unwrap_or(b"/");
    let (url_path, query) = match crate::text::find_byte(path, b'?') {
        Some(i) => (&path[..i], Some(&path[i + 1..])),
        None => (path, None),
    };
    if h.content_type
        .is_some_and(|ct| grpc::protocol(ct).is_some())
    {
        // A gRPC call is named by its method; the path is the method, so no route. The
        // method is client-chosen, so it is settled at the end like a guessed route.
        let names = &*names;
        grpc::record_call(path, rec, |m| names.may_name_rpc_method(m));
    } else {
        // The name and `http.route` are made from one valid, cut route.
        let named = names.name_path(method, known, &t.routes, url_path);
        rec.set_name(&named.parts);
        if let Some(r) = named.route {
            rec.str("http.route", r);
            if named.guessed {
                rec.guessed_name = GuessedName::Route {
                    method_len: named.method_len() as u32,
                };
            }
        }
    }
    if known {
        rec.str("http.request.method", method);
    } else {
        rec.str("http.request.method", b"_OTHER");
        rec.str("http.request.method_original", method);
    }
    rec.str("url.path", url_path);
    // Query strings carry tokens and personal data: recorded only when enabled.
    if let Some(q) = query.filter(|q| t.capture.query && !q.is_empty()) {
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
        let first = crate::text::find_byte(xff, b',').map_or(xff, |i| &xff[..i]);
        let before = rec.attrs.len();
        rec.str("client.address", first.trim_ascii());
        rec.client_address_recorded = rec.attrs.len() > before;
    }
}

/// Records on the span what propagation learnt: the untrusted link, Linkerd's request id,
/// and the allowlisted baggage entries.
fn record_context(t: &Tables, d: &SpanStart<'_>, h: &RequestHeaders<'_>, rec: &mut SpanRecord) {
    if let Some(link) = d.link {
        rec.links.push(crate::span::Link {
            trace_id: link.trace_id,
            span_id: link.span_id,
            flags: link.flags,
        });
    }
    if let Some(reqid) = h.l5d_reqid.map(crate::text::trim_ows) {
        // Linkerd writes 16 hex digits; anything not printable ASCII is not a request id.
        if !reqid.is_empty() && reqid.len() <= 64 && reqid.iter().all(u8::is_ascii_graphic) {
            rec.str("linkerd.request_id", reqid);
        }
    }
    for key in &t.baggage_keys {
        if let Some(value) = d.baggage.get(key.as_bytes()) {
            let mut raw = [0u8; BAGGAGE_ATTRIBUTE_MAX];
            let n = crate::text::percent_decode(value, &mut raw);
            let mut text = [0u8; BAGGAGE_ATTRIBUTE_MAX];
            let m = baggage::to_utf8_lossy(&raw[..n], &mut text);
            rec.str_dyn(&[b"baggage.", key.as_bytes()], &text[..m]);
        }
    }
}

/// Records the request-time mesh facts: captured headers, traffic rules matched by header
/// or cookie, fault and attempt headers. `all` is every request header (the adapter's
/// buffer); it is scanned only when capture or header rules are configured.
pub fn record_request<'h>(
    t: &Tables,
    h: &RequestHeaders<'_>,
    all: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    rec: &mut SpanRecord,
) -> RequestFacts {
    if t.capture.any(Side::Request) {
        t.capture.record(Side::Request, all.clone(), rec);
    }
    let hits = if t.traffic.has_request_rules() {
        t.traffic.request_hits(all, h.cookie)
    } else {
        Default::default()
    };
    RequestFacts {
        hits,
        fault: fault::FaultHeaders::parse(
            h.x_envoy_fault_abort_request,
            h.x_envoy_fault_delay_request,
        ),
        attempt_count: h.x_envoy_attempt_count.and_then(crate::text::parse_u64),
        grpc: h.content_type.and_then(grpc::protocol),
        knative: super::faas::KnativeTarget::from_headers(h),
        invoked: t.faas_upstreams.for_request(h),
        coldstart: false,
    }
}

/// Completes `rec` with what is known at the end of the request, settling a name guessed
/// from the request ([`settle_name`]).
pub fn finish(t: &Tables, names: &mut SpanNames, rec: &mut SpanRecord, f: &Finish<'_>) {
    rec.end_ns = f.end_ns.max(rec.start_ns);
    rec.kind = f.kind;
    settle_name(names, rec, f);
    if f.kind == SpanKind::Client {
        // The conventions call a client's path template `url.template`; `http.route` is
        // the server's. The kind is only known now (`direction: auto`).
        rec.rename("http.route", "url.template");
    }
    if let Some(v) = f.protocol.and_then(protocol_version) {
        rec.str("network.protocol.version", v);
    }
    if !rec.client_address_recorded {
        if let Some(addr) = f.source_address {
            rec.str("client.address", split_host_port(addr).0);
        }
    }
    status(rec, f);
    mesh::finish(&t.traffic, rec, f);
    t.faas.finish(rec, f);
    if let Some((i, inv)) = &f.lambda {
        t.lambda.finish(rec, f.kind, *i, inv);
    }
    // After Knative and Lambda: a rule names no function they have named already.
    t.faas_upstreams.finish(rec, f);
}

/// Keeps a name guessed from the request (a templated route, a gRPC method) only when the
/// response shows that what it names exists and the per-VM set of names admits it; otherwise
/// the span is named `{method}` without `http.route` (`grpc` with `rpc.method` `_OTHER` for a
/// call). Only a full set counts as overflow: a guess the response refutes never takes a
/// place, so a scanner cannot use up the names.
fn settle_name(names: &mut SpanNames, rec: &mut SpanRecord, f: &Finish<'_>) {
    let guess = core::mem::take(&mut rec.guessed_name);
    if guess == GuessedName::None {
        return;
    }
    if target_exists(f) && names.admit(rec.name()) {
        return;
    }
    match guess {
        GuessedName::Route { method_len } => {
            rec.truncate_name(method_len);
            rec.remove("http.route");
        }
        GuessedName::RpcMethod => grpc::unrecognised_method(rec),
        GuessedName::None => {}
    }
}

/// Whether the response shows that the route or gRPC method a request named exists, so that
/// a name guessed from the request may be admitted: the upstream answered (a status code, and
/// no response flag saying Envoy failed the request itself, such as no healthy upstream or an
/// injected abort; a caller that went away after the answer does not count against it), and
/// the answer is not "no such thing": HTTP 404 (Not Found), 405 (Method Not Allowed: the name
/// carries the method) and 501 (Not Implemented: the method is not known at all), or for a
/// gRPC call the status `UNIMPLEMENTED` (which an HTTP 404 without `grpc-status` also gives).
fn target_exists(f: &Finish<'_>) -> bool {
    let bits = f.mesh.response_flags;
    let Some(code) = f.status_code.filter(|c| *c > 0) else {
        return false;
    };
    if flags::error_type(bits).is_some() && !flags::downstream_only(bits) {
        return false;
    }
    match f.request.grpc {
        Some(p) => {
            grpc::call_status(p, f.grpc_status, Some(code), bits) != Some(grpc::Code::UNIMPLEMENTED)
        }
        None => !matches!(code, 404 | 405 | 501),
    }
}

/// Whether an HTTP request's span status is ERROR: 5xx on every span, 4xx too on CLIENT
/// spans; with no response (`code` `None`), a failure Envoy's flags name, unless only the
/// caller went away. The RED metrics' `status.code` uses the same rule.
pub fn is_error(kind: SpanKind, code: Option<i64>, response_flags: u64) -> bool {
    match code.filter(|c| *c > 0) {
        Some(code) => code >= 500 || (code >= 400 && kind == SpanKind::Client),
        None => {
            flags::error_type(response_flags).is_some() && !flags::downstream_only(response_flags)
        }
    }
}

/// Status code, span status and `error.type`: a response flag names the failure better
/// than the number, and a request that ended without a response failed unless only the
/// caller went away (cancellation is not the server's error).
fn status(rec: &mut SpanRecord, f: &Finish<'_>) {
    let bits = f.mesh.response_flags;
    let flag_error = flags::error_type(bits);
    let code = f.status_code.filter(|c| *c > 0);
    if let Some(code) = code {
        rec.int("http.response.status_code", code);
    }
    let rpc = f
        .request
        .grpc
        .and_then(|p| grpc::call_status(p, f.grpc_status, code, bits));
    if let Some(rpc) = rpc {
        // A gRPC call's status decides, whatever the HTTP code (usually 200) says.
        rec.str("rpc.response.status_code", rpc.name().as_bytes());
        if rpc.is_error(f.kind) {
            rec.status = StatusCode::Error;
            rec.str("error.type", rpc.name().as_bytes());
        }
        record_flags(rec, f);
        return;
    }
    let error = is_error(f.kind, code, bits);
    if error {
        rec.status = StatusCode::Error;
    }
    let mut digits = [0u8; 20];
    match (flag_error, code) {
        (Some(t), _) => rec.str("error.type", t.as_bytes()),
        (None, Some(c)) if error => rec.str("error.type", itoa(c, &mut digits)),
        _ => {}
    }
    record_flags(rec, f);
}

/// `envoy.response_flags` and `envoy.response.code_details`, when Envoy set any flag.
#[inline]
fn record_flags(rec: &mut SpanRecord, f: &Finish<'_>) {
    let bits = f.mesh.response_flags;
    if bits != 0 {
        record_set_flags(rec, f, bits);
    }
}

/// [`record_flags`] for a request with some flag set: out of line, as nearly none has one.
#[inline(never)]
fn record_set_flags(rec: &mut SpanRecord, f: &Finish<'_>, bits: u64) {
    rec.str_array(
        "envoy.response_flags",
        flags::codes(bits).map(str::as_bytes),
    );
    if let Some(d) = f.mesh.code_details {
        rec.str("envoy.response.code_details", d);
    }
}

/// `HTTP/1.1` → `1.1`, `HTTP/2` → `2`, as `network.protocol.version` wants.
fn protocol_version(p: &[u8]) -> Option<&[u8]> {
    p.strip_prefix(b"HTTP/").filter(|v| !v.is_empty())
}
