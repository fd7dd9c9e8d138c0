//! gRPC calls seen as HTTP: which requests are gRPC, what their method is, and how their
//! status decides the span's status, following the OpenTelemetry RPC semantic conventions
//! v1.40.0 (`docs/rpc/rpc-spans.md`, `docs/rpc/grpc.md`, release candidate): `rpc.system.name`
//! `grpc`, a fully qualified `rpc.method` (`pkg.Service/Method`) that names the span, and the
//! status as the string `rpc.response.status_code`.
//!
//! Host-independent: an adapter hands over the request's `content-type` and `:path`, and at the
//! end the raw `grpc-status` the upstream sent (response trailers, or the headers of a
//! Trailers-Only reply or of an Envoy local reply). No status means none was sent; then the
//! code is inferred the way Envoy does (`httpToGrpcStatus`), except that a gRPC-Web `200`
//! without a visible status is left unknown rather than called `UNKNOWN` (its status may be in
//! a body frame the adapter did not read).
//!
//! Cardinality: `rpc.method` is the `:path` only when it has the shape gRPC defines
//! (`/Service-Name/method`, see grpc `PROTOCOL-HTTP2.md` §Requests) with protobuf identifier
//! characters and at most [`MAX_METHOD_LEN`] bytes; anything else is `_OTHER` (the conventions'
//! rule for methods the instrumentation cannot recognise) with the original in
//! `rpc.method_original`. A server's `UNIMPLEMENTED` answer says the method is not one it
//! knows, so it turns `rpc.method` into `_OTHER` too: a scanner's made-up methods do not become
//! span names.

use crate::span::{GuessedName, Key, SpanKind, SpanRecord, Value};

/// How the request framed its gRPC messages (from `content-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `application/grpc`, `application/grpc+proto`, `application/grpc;…`.
    Grpc,
    /// `application/grpc-web[-text][+proto|+json|…]`: the status may travel in the body.
    GrpcWeb,
}

/// The gRPC flavour of a request's `content-type`, or `None` for any other request. Matched
/// case-insensitively, parameters and suffixes allowed (grpc `PROTOCOL-HTTP2.md`,
/// `PROTOCOL-WEB.md`): `application/grpcfoo` is not gRPC.
pub fn protocol(content_type: &[u8]) -> Option<Protocol> {
    const GRPC: &[u8] = b"application/grpc";
    const WEB: &[u8] = b"-web";
    let ct = content_type.trim_ascii_start();
    let head = ct.get(..GRPC.len())?;
    if !head.eq_ignore_ascii_case(GRPC) {
        return None;
    }
    let rest = &ct[GRPC.len()..];
    let ends = |r: &[u8]| matches!(r.first(), None | Some(b'+' | b';' | b' ' | b'\t'));
    if ends(rest) {
        return Some(Protocol::Grpc);
    }
    let web = rest.get(..WEB.len())?;
    if !web.eq_ignore_ascii_case(WEB) {
        return None;
    }
    let rest = &rest[WEB.len()..];
    let rest = match rest.get(..5) {
        Some(t) if t.eq_ignore_ascii_case(b"-text") => &rest[5..],
        _ => rest,
    };
    ends(rest).then_some(Protocol::GrpcWeb)
}

/// A gRPC status code (grpc `doc/statuscodes.md`), 0 to 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code(u8);

/// The canonical names, as `rpc.response.status_code` and `error.type` carry them.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The canonical name of status `code`, `None` past 16.
pub fn code_name(code: u32) -> Option<&'static str> {
    NAMES.get(usize::try_from(code).ok()?).copied()
}

impl Code {
    /// `OK`: not an error.
    pub const OK: Code = Code(0);
    /// `CANCELLED`: the caller cancelled.
    pub const CANCELLED: Code = Code(1);
    /// `UNKNOWN`.
    pub const UNKNOWN: Code = Code(2);
    /// `INVALID_ARGUMENT`.
    pub const INVALID_ARGUMENT: Code = Code(3);
    /// `DEADLINE_EXCEEDED`.
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    /// `NOT_FOUND`.
    pub const NOT_FOUND: Code = Code(5);
    /// `PERMISSION_DENIED`.
    pub const PERMISSION_DENIED: Code = Code(7);
    /// `UNIMPLEMENTED`: the server does not know the method.
    pub const UNIMPLEMENTED: Code = Code(12);
    /// `INTERNAL`.
    pub const INTERNAL: Code = Code(13);
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: Code = Code(14);
    /// `DATA_LOSS`.
    pub const DATA_LOSS: Code = Code(15);
    /// `UNAUTHENTICATED`.
    pub const UNAUTHENTICATED: Code = Code(16);

    /// A `grpc-status` value: decimal ASCII without leading zeros, surrounding whitespace
    /// allowed. A value that is not a canonical code (garbage, `013`, a user-defined `42`) is
    /// `UNKNOWN`, as gRPC clients treat it: the call still failed, and the attribute keeps the
    /// 17 standard values only.
    pub fn parse(raw: &[u8]) -> Code {
        Code::parse_canonical(raw).unwrap_or(Code::UNKNOWN)
    }

    /// [`Code::parse`] without the fallback: `None` for a value that is not a canonical code
    /// (for counting upstreams that send them).
    pub fn parse_canonical(raw: &[u8]) -> Option<Code> {
        let n = match raw.trim_ascii() {
            [d] if d.is_ascii_digit() => d - b'0',
            [b'1', d] if d.is_ascii_digit() => 10 + (d - b'0'),
            _ => return None,
        };
        Code::from_u8(n)
    }

    /// The code for a number 0 to 16; `None` otherwise.
    pub fn from_u8(n: u8) -> Option<Code> {
        (usize::from(n) < NAMES.len()).then_some(Code(n))
    }

    /// The code Envoy synthesises for a response without `grpc-status`
    /// (`Grpc::Utility::httpToGrpcStatus`, also what gRPC's HTTP/2 spec tells clients to do).
    pub fn from_http(status: i64) -> Code {
        match status {
            400 => Code::INTERNAL,
            401 => Code::UNAUTHENTICATED,
            403 => Code::PERMISSION_DENIED,
            404 => Code::UNIMPLEMENTED,
            429 | 502 | 503 | 504 => Code::UNAVAILABLE,
            _ => Code::UNKNOWN,
        }
    }

    /// The numeric code (0 to 16).
    pub fn value(self) -> u8 {
        self.0
    }

    /// `OK`, `CANCELLED`, … (the canonical name).
    pub fn name(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }

    /// Whether the call failed, by the span's kind: on a CLIENT span every code but `OK`; on a
    /// SERVER span only the codes that say the server failed (`UNKNOWN`, `DEADLINE_EXCEEDED`,
    /// `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`); the rest are the caller's
    /// doing (semantic conventions `docs/rpc/grpc.md` §gRPC Status).
    pub fn is_error(self, kind: SpanKind) -> bool {
        match kind {
            SpanKind::Client => self != Code::OK,
            _ => matches!(
                self,
                Code::UNKNOWN
                    | Code::DEADLINE_EXCEEDED
                    | Code::UNIMPLEMENTED
                    | Code::INTERNAL
                    | Code::UNAVAILABLE
                    | Code::DATA_LOSS
            ),
        }
    }
}

/// The status of a finished call: the one the upstream (or Envoy's local reply) sent, else one
/// inferred from what happened. `None` when nothing can be said: no response at all (the
/// response flags then explain the failure), or a gRPC-Web `200` whose status was not visible.
///
/// - `sent`: the parsed `grpc-status` from the response trailers, else its headers;
/// - `http_status`: `response.code`, `None` or 0 when no response was sent;
/// - `cancelled`: the caller went away (Envoy's `DC`/`DR` flags alone): `CANCELLED`, which
///   gRPC reports for a call its client abandoned.
pub fn status(
    protocol: Protocol,
    sent: Option<Code>,
    http_status: Option<i64>,
    cancelled: bool,
) -> Option<Code> {
    if let Some(code) = sent {
        return Some(code);
    }
    if cancelled {
        return Some(Code::CANCELLED);
    }
    let http = http_status.filter(|c| *c > 0)?;
    if protocol == Protocol::GrpcWeb && http == 200 {
        return None;
    }
    Some(Code::from_http(http))
}

/// How much of the end of a gRPC-Web response body is read first for its trailer frame: an
/// `OK` trailer frame is tens of bytes.
pub const WEB_TRAILER_TAIL: usize = 512;

/// How much of the end of the body a second read covers when the first found no trailer frame:
/// error trailers carry `grpc-message` and `grpc-status-details-bin` (a base64 `google.rpc.Status`
/// with its details), which can run to kilobytes. A trailer frame longer than this gives no
/// status.
pub const WEB_TRAILER_MAX: usize = 16 * 1024;

/// The raw `grpc-status` value in a gRPC-Web trailer frame at the very end of `tail` (the last
/// bytes of the response body): a frame whose flag byte is `0x80` and whose 4-byte big-endian
/// length reaches exactly to the end, holding HTTP/1-style `key: value\r\n` lines (grpc
/// `PROTOCOL-WEB.md`). `None` when there is no such frame within `tail`, it is compressed
/// (`0x81`), or it has no `grpc-status`. Parse the value with [`Code::parse_canonical`].
pub fn web_trailer_value(tail: &[u8]) -> Option<&[u8]> {
    let n = tail.len();
    (0..n.saturating_sub(4)).rev().find_map(|i| {
        let len = u32::from_be_bytes(tail.get(i + 1..i + 5)?.try_into().ok()?) as usize;
        if tail[i] != 0x80 || len != n - i - 5 {
            return None;
        }
        tail[i + 5..]
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let (k, v) = (&line[..colon], &line[colon + 1..]);
                k.trim_ascii()
                    .eq_ignore_ascii_case(b"grpc-status")
                    .then_some(v)
            })
            .next()
    })
}

/// [`web_trailer_value`] parsed with [`Code::parse`].
pub fn web_trailer_status(tail: &[u8]) -> Option<Code> {
    web_trailer_value(tail).map(Code::parse)
}

/// The longest `/service/method` path recorded as `rpc.method` (bytes, leading `/` excluded).
pub const MAX_METHOD_LEN: usize = 192;

/// `_OTHER`: the method was not recognised (semantic conventions `rpc.method` note 1).
pub const OTHER: &[u8] = b"_OTHER";

/// The `rpc.method` a gRPC `:path` gives: `pkg.Service/Method` without the leading `/`, when
/// the path has that shape, else `None` (record [`OTHER`]). A query is ignored; the service is
/// a protobuf `fullIdent` (dot-separated identifiers) and the method an `ident`, by the
/// grammar of the protobuf language specification: `ident = letter { letter | decimalDigit |
/// "_" }` with `letter` an ASCII letter. So `/1.2/3` and `/_/_` are not methods (protoc's
/// tokenizer also takes a leading `_`, which the grammar does not).
pub fn method(path: &[u8]) -> Option<&[u8]> {
    let path = match path.iter().position(|&b| b == b'?') {
        Some(i) => &path[..i],
        None => path,
    };
    let full = path.strip_prefix(b"/")?;
    if full.is_empty() || full.len() > MAX_METHOD_LEN {
        return None;
    }
    let slash = full.iter().position(|&b| b == b'/')?;
    let (service, method) = (&full[..slash], &full[slash + 1..]);
    let ident = |s: &[u8]| match s.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphabetic()
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        None => false,
    };
    (service.split(|&b| b == b'.').all(ident) && ident(method)).then_some(full)
}

/// The candidate method as the request spelt it, for `rpc.method_original`: the path without
/// its leading `/` and query.
pub fn original(path: &[u8]) -> &[u8] {
    let path = match path.iter().position(|&b| b == b'?') {
        Some(i) => &path[..i],
        None => path,
    };
    path.strip_prefix(b"/").unwrap_or(path)
}

/// What the always-keep rules need to judge a gRPC call (`Tracer::keep_call`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcEnd {
    /// How the call framed its messages.
    pub protocol: Protocol,
    /// The `grpc-status` the response carried, if any.
    pub sent: Option<Code>,
    /// The span's kind; an adapter that cannot tell cheaply passes SERVER, whose error set is
    /// the narrower one (as the HTTP rule keeps only 5xx).
    pub kind: SpanKind,
}

/// A gRPC call's status: the one sent, else [`status`]'s inference from the HTTP code and
/// the response flags (a caller that went away alone is `CANCELLED`). The span and the
/// always-keep rules both judge a call by this one value.
pub fn call_status(
    protocol: Protocol,
    sent: Option<Code>,
    http_status: Option<i64>,
    response_flags: u64,
) -> Option<Code> {
    status(
        protocol,
        sent,
        http_status,
        crate::span::mesh::flags::downstream_only(response_flags),
    )
}

/// Names a gRPC span and records `rpc.system.name` and `rpc.method`, or `_OTHER` with
/// `rpc.method_original` when the path is not a gRPC method (see [`method`]) or `may_name`
/// refuses it (strict naming, or a method longer than the caps). A method that may name the
/// span does so provisionally ([`GuessedName::RpcMethod`]): the span's finish admits it into
/// the per-VM set of names only once the response shows the server knows the method, and
/// otherwise calls [`unrecognised_method`].
pub fn record_call(path: &[u8], rec: &mut SpanRecord, may_name: impl FnOnce(&[u8]) -> bool) {
    rec.str("rpc.system.name", b"grpc");
    match method(path).filter(|m| may_name(m)) {
        Some(m) => {
            rec.set_name(&[m]);
            rec.str("rpc.method", m);
            rec.guessed_name = GuessedName::RpcMethod;
        }
        None => {
            // The conventions name the span after the system when the method is `_OTHER`.
            rec.set_name(&[b"grpc"]);
            rec.str("rpc.method", OTHER);
            rec.str("rpc.method_original", original(path));
        }
    }
}

/// The method is not one to name the span by (the server answered `UNIMPLEMENTED`, the call
/// got no answer from it, or the per-VM set of names is full): `rpc.method` becomes
/// `rpc.method_original`, `rpc.method` is `_OTHER`, and the span is named `grpc`.
pub fn unrecognised_method(rec: &mut SpanRecord) {
    let Some(i) = rec
        .attrs
        .iter()
        .position(|a| a.key == Key::Static("rpc.method"))
    else {
        return;
    };
    let original = rec.attrs[i].value.clone();
    if let Value::Str(r) = &original {
        if rec.text(r) == OTHER {
            return;
        }
    }
    rec.rename_at(i, "rpc.method_original");
    rec.set_name(&[b"grpc"]);
    rec.str("rpc.method", OTHER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (ct, want) in [
            (&b"application/grpc"[..], Some(Protocol::Grpc)),
            (b"application/grpc+proto", Some(Protocol::Grpc)),
            (b"Application/GRPC+json", Some(Protocol::Grpc)),
            (b"application/grpc; charset=utf-8", Some(Protocol::Grpc)),
            (b"application/grpc-web", Some(Protocol::GrpcWeb)),
            (b"application/grpc-web+proto", Some(Protocol::GrpcWeb)),
            (b"application/grpc-web-text", Some(Protocol::GrpcWeb)),
            (b"application/grpc-web-text+proto", Some(Protocol::GrpcWeb)),
            (b"application/grpcx", None),
            (b"application/grpc-webx", None),
            (b"application/grpc-", None),
            (b"application/json", None),
            (b"application/grp", None),
            (b"", None),
        ] {
            assert_eq!(protocol(ct), want, "{}", String::from_utf8_lossy(ct));
        }
    }

    #[test]
    fn status_values() {
        assert_eq!(Code::parse(b"0"), Code::OK);
        assert_eq!(Code::parse(b"13"), Code::INTERNAL);
        assert_eq!(Code::parse(b" 5 "), Code::NOT_FOUND);
        assert_eq!(Code::parse(b"16").name(), "UNAUTHENTICATED");
        for bad in [
            &b""[..],
            b"17",
            b"013",
            b"-1",
            b"1a",
            b"abc",
            b"999",
            b"2 2",
        ] {
            assert_eq!(Code::parse(bad), Code::UNKNOWN, "{bad:?}");
        }
        for n in 0..=16u8 {
            let c = Code::parse(n.to_string().as_bytes());
            assert_eq!(c.value(), n);
            assert_eq!(Code::from_u8(n), Some(c));
        }
        assert_eq!(Code::from_u8(17), None);
    }

    #[test]
    fn error_rule_by_kind() {
        let server_errors = [2u8, 4, 12, 13, 14, 15];
        for n in 0..=16u8 {
            let c = Code(n);
            assert_eq!(
                c.is_error(SpanKind::Server),
                server_errors.contains(&n),
                "{n}"
            );
            assert_eq!(c.is_error(SpanKind::Client), n != 0, "{n}");
        }
    }

    #[test]
    fn inferred_status() {
        let g = Protocol::Grpc;
        assert_eq!(status(g, Some(Code::OK), Some(503), false), Some(Code::OK));
        assert_eq!(status(g, None, Some(503), false), Some(Code::UNAVAILABLE));
        assert_eq!(status(g, None, Some(404), false), Some(Code::UNIMPLEMENTED));
        assert_eq!(status(g, None, Some(200), false), Some(Code::UNKNOWN));
        assert_eq!(status(g, None, Some(200), true), Some(Code::CANCELLED));
        assert_eq!(status(g, None, None, false), None);
        assert_eq!(status(g, None, Some(0), false), None);
        let w = Protocol::GrpcWeb;
        assert_eq!(status(w, None, Some(200), false), None);
        assert_eq!(status(w, None, Some(503), false), Some(Code::UNAVAILABLE));
        assert_eq!(
            status(w, Some(Code::INTERNAL), Some(200), false),
            Some(Code::INTERNAL)
        );
    }

    #[test]
    fn methods() {
        assert_eq!(
            method(b"/pkg.v1.Greeter/SayHello"),
            Some(&b"pkg.v1.Greeter/SayHello"[..])
        );
        assert_eq!(
            method(b"/Greeter/Say_Hello2?x=1"),
            Some(&b"Greeter/Say_Hello2"[..])
        );
        for bad in [
            &b""[..],
            b"/",
            b"Greeter/SayHello",
            b"/Greeter",
            b"/Greeter/",
            b"//SayHello",
            b"/a.b/c/d",
            b"/pkg..Greeter/SayHello",
            b"/.Greeter/SayHello",
            b"/Greeter/Say Hello",
            b"/Greeter/Say-Hello",
            b"/Gr\xc3\xa9eter/SayHello",
            b"/api/users/42",
            // Identifiers start with a letter (protobuf language specification).
            b"/1.2/3",
            b"/_/_",
            b"/pkg._v1.Greeter/SayHello",
            b"/pkg.v1.Greeter/_SayHello",
            b"/pkg.v1.Greeter/9Lives",
        ] {
            assert_eq!(method(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(method(b"/a_1.B2_/c_d_"), Some(&b"a_1.B2_/c_d_"[..]));
        let long = format!("/{}/M", "s".repeat(MAX_METHOD_LEN - 2));
        assert_eq!(
            method(long.as_bytes()).map(<[u8]>::len),
            Some(MAX_METHOD_LEN)
        );
        let longer = format!("/{}/M", "s".repeat(MAX_METHOD_LEN - 1));
        assert_eq!(method(longer.as_bytes()), None);
        assert_eq!(original(b"/a/b/c?q"), b"a/b/c");
    }

    fn web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![flag];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn web_trailer_frames() {
        let mut body = web_frame(0, b"\x0a\x05hello");
        body.extend(web_frame(0x80, b"grpc-status:13\r\ngrpc-message:boom\r\n"));
        assert_eq!(web_trailer_status(&body), Some(Code::INTERNAL));
        // Only the tail is needed, from anywhere before the frame.
        let tail = &body[body.len() - 40..];
        assert_eq!(web_trailer_status(tail), Some(Code::INTERNAL));
        let mixed = web_frame(0x80, b"Grpc-Message: x\r\nGRPC-STATUS: 5\r\n");
        assert_eq!(web_trailer_status(&mixed), Some(Code::NOT_FOUND));
        // A message frame, a compressed trailer frame, a cut frame, no status: nothing.
        assert_eq!(web_trailer_status(&web_frame(0, b"grpc-status:0")), None);
        assert_eq!(web_trailer_status(&web_frame(0x81, b"grpc-status:0")), None);
        let whole = web_frame(0x80, b"grpc-status:0\r\n");
        assert_eq!(web_trailer_status(&whole[..whole.len() - 1]), None);
        assert_eq!(
            web_trailer_status(&web_frame(0x80, b"grpc-message:x\r\n")),
            None
        );
        assert_eq!(web_trailer_status(b""), None);
        assert_eq!(web_trailer_status(&[0x80, 0, 0, 0, 0]), None);
        // The raw value, for counting non-canonical codes.
        let odd = web_frame(0x80, b"grpc-status: 42\r\n");
        assert_eq!(web_trailer_value(&odd), Some(&b" 42\r"[..]));
        assert_eq!(web_trailer_status(&odd), Some(Code::UNKNOWN));
    }

    proptest::proptest! {
        /// Any bytes: no panic, and a status only when the tail ends in a trailer frame.
        #[test]
        fn web_trailer_never_panics(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if web_trailer_status(&tail).is_some() {
                proptest::prop_assert!(tail.contains(&0x80));
            }
        }

        /// Whatever the path, `rpc.method` is bounded, printable ASCII and of the gRPC shape.
        #[test]
        fn method_is_bounded_and_shaped(
            path in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            if let Some(m) = method(&path) {
                proptest::prop_assert!(m.len() <= MAX_METHOD_LEN);
                proptest::prop_assert_eq!(m.iter().filter(|&&b| b == b'/').count(), 1);
                proptest::prop_assert!(m.iter().all(|b| b.is_ascii_alphanumeric() || b"_./".contains(b)));
                // Every identifier starts with a letter.
                for ident in m.split(|b| b"./".contains(b)) {
                    proptest::prop_assert!(ident.first().is_some_and(u8::is_ascii_alphabetic));
                }
                proptest::prop_assert!(path.starts_with(b"/") && path[1..].starts_with(m));
            }
        }

        /// Any `grpc-status` bytes give one of the 17 codes, and exactly the canonical decimal
        /// spellings give their own code.
        #[test]
        fn any_status_is_canonical(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6)) {
            let c = Code::parse(&raw);
            proptest::prop_assert!(usize::from(c.value()) < NAMES.len());
            let canonical = c.value().to_string();
            if raw.trim_ascii() != canonical.as_bytes() {
                proptest::prop_assert_eq!(c, Code::UNKNOWN);
            }
        }

        /// The content-type match agrees with a plain reference over any header value.
        #[test]
        fn protocol_matches_reference(suffix in "[-+;a-zA-Z ]{0,12}") {
            let ct = format!("application/grpc{suffix}");
            let lower = suffix.to_ascii_lowercase();
            let after = |s: &str| s.is_empty() || s.starts_with(['+', ';', ' ']);
            let want = if after(&lower) {
                Some(Protocol::Grpc)
            } else if let Some(r) = lower.strip_prefix("-web") {
                let r = r.strip_prefix("-text").unwrap_or(r);
                after(r).then_some(Protocol::GrpcWeb)
            } else {
                None
            };
            proptest::prop_assert_eq!(protocol(ct.as_bytes()), want);
        }
    }
}
