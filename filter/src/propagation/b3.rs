//! Zipkin B3: the single `b3` header and the `X-B3-*` multi-header form.
//!
//! B3 trace ids come as 64 or 128 bits; 64-bit ids are left-padded with zeros to the 128 bits
//! every other format uses, and [`B3::narrow`] remembers the width so a service that sent 64
//! bits gets 64 bits back. Debug (`d`, `X-B3-Flags: 1`) means sampled and is kept apart from
//! the W3C flag byte, where Level 2 already gave bit 1 another meaning.

use super::context::SpanStart;
use super::inject::Injection;
use super::{Dialect, Incoming, Parsed, Propagator, SamplingState, SpanContext};
use crate::headers::RequestHeaders;
use crate::hex;
use crate::ids::{SpanId, TraceId};
use crate::text::trim_ows;

/// Longest single header: 32 + 1 + 16 + 1 + 1 + 1 + 16.
pub const MAX_SINGLE_LEN: usize = 68;

/// Multi-header names, lowercase as HTTP/2 requires.
pub const TRACE_ID: &str = "x-b3-traceid";
/// The multi-header span id.
pub const SPAN_ID: &str = "x-b3-spanid";
/// The multi-header parent span id.
pub const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
/// The multi-header sampling state (`1`, `0`).
pub const SAMPLED: &str = "x-b3-sampled";
/// The multi-header debug flag (`1`).
pub const FLAGS: &str = "x-b3-flags";
/// The single header's name.
pub const SINGLE: &str = "b3";

/// A B3 context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct B3 {
    /// Always 128 bits; a 64-bit id has its high half zero.
    pub trace_id: TraceId,
    /// The span id (16 hex digits).
    pub span_id: SpanId,
    /// The parent span id, when the caller sent one.
    pub parent_span_id: Option<SpanId>,
    /// The sampling state.
    pub sampling: SamplingState,
    /// The trace id travelled (or should travel) as 16 hex digits.
    pub narrow: bool,
}

/// What a single `b3` header holds: a context, or only a sampling decision (`b3: 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Single {
    /// A trace context.
    Context(B3),
    /// Only a sampling state (`b3: 0`, `b3: d`).
    SamplingOnly(SamplingState),
}

/// Parses a 16- or 32-digit lowercase trace id, widened to 128 bits; `bool` is "was 64-bit".
fn parse_trace_id(s: &[u8]) -> Option<(TraceId, bool)> {
    match s.len() {
        32 => TraceId::from_hex(s).map(|t| (t, false)),
        16 => SpanId::from_hex(s).map(|low| (TraceId::from_u64s(0, low.as_u64()), true)),
        _ => None,
    }
}

/// The one-character sampling state of the single header.
fn parse_state(s: &[u8]) -> Option<SamplingState> {
    match s {
        b"1" => Some(SamplingState::Accept),
        b"0" => Some(SamplingState::Deny),
        b"d" => Some(SamplingState::Debug),
        _ => None,
    }
}

/// Parses a `b3` header value: `{trace}-{span}[-{state}[-{parent}]]`, or a lone state.
pub fn parse_single(value: &[u8]) -> Option<Single> {
    let v = trim_ows(value);
    if let Some(state) = parse_state(v) {
        return Some(Single::SamplingOnly(state));
    }
    let mut parts = v.split(|&b| b == b'-');
    let (trace_id, narrow) = parse_trace_id(parts.next()?)?;
    let span_id = SpanId::from_hex(parts.next()?)?;
    let sampling = match parts.next() {
        None => SamplingState::Defer,
        Some(s) => parse_state(s)?,
    };
    let parent_span_id = match parts.next() {
        None => None,
        Some(p) => Some(SpanId::from_hex(p)?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Single::Context(B3 {
        trace_id,
        span_id,
        parent_span_id,
        sampling,
        narrow,
    }))
}

/// Writes the trace id at the width the context asks for; a narrow id whose high half is not
/// zero cannot be narrowed without losing the trace, so it goes out wide.
fn write_trace_id(b: &B3, out: &mut Vec<u8>) {
    if b.narrow && b.trace_id.high_u64() == 0 {
        out.extend_from_slice(&SpanId::from_u64(b.trace_id.low_u64()).to_hex());
    } else {
        out.extend_from_slice(&b.trace_id.to_hex());
    }
}

/// Appends the single-header form of `b` to `out`; a deferred decision writes no state.
pub fn write_single(b: &B3, out: &mut Vec<u8>) {
    write_trace_id(b, out);
    out.push(b'-');
    out.extend_from_slice(&b.span_id.to_hex());
    let state: &[u8] = match b.sampling {
        SamplingState::Accept => b"-1",
        SamplingState::Deny => b"-0",
        SamplingState::Debug => b"-d",
        // B3 cannot carry a parent without a state, so a deferred context drops the parent.
        SamplingState::Defer => return,
    };
    out.extend_from_slice(state);
    if let Some(p) = b.parent_span_id {
        out.push(b'-');
        out.extend_from_slice(&p.to_hex());
    }
}

/// The `X-B3-*` values of one request, borrowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MultiHeaders<'a> {
    /// `x-b3-traceid`.
    pub trace_id: Option<&'a [u8]>,
    /// `x-b3-spanid`.
    pub span_id: Option<&'a [u8]>,
    /// `x-b3-parentspanid`.
    pub parent_span_id: Option<&'a [u8]>,
    /// `x-b3-sampled`.
    pub sampled: Option<&'a [u8]>,
    /// `x-b3-flags`.
    pub flags: Option<&'a [u8]>,
}

impl<'a> MultiHeaders<'a> {
    /// The `X-B3-*` values the request carried.
    pub fn from_request(h: &RequestHeaders<'a>) -> Self {
        Self {
            trace_id: h.x_b3_traceid,
            span_id: h.x_b3_spanid,
            parent_span_id: h.x_b3_parentspanid,
            sampled: h.x_b3_sampled,
            flags: h.x_b3_flags,
        }
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `X-B3-Sampled`: `1`/`0`, and the legacy `true`/`false` in any case, as lenient
/// implementations accept. An empty or other value is malformed.
fn parse_sampled(v: &[u8]) -> Option<SamplingState> {
    match trim_ows(v) {
        b"1" => Some(SamplingState::Accept),
        b"0" => Some(SamplingState::Deny),
        s if s.eq_ignore_ascii_case(b"true") => Some(SamplingState::Accept),
        s if s.eq_ignore_ascii_case(b"false") => Some(SamplingState::Deny),
        _ => None,
    }
}

/// Parses the multi-header form.
pub fn parse_multi(m: &MultiHeaders<'_>) -> Parsed<Single> {
    if m.is_empty() {
        return Parsed::Absent;
    }
    match parse_multi_present(m) {
        Some(s) => Parsed::Valid(s),
        None => Parsed::Malformed,
    }
}

/// [`parse_multi`] once at least one header is known to be present.
fn parse_multi_present(m: &MultiHeaders<'_>) -> Option<Single> {
    // Debug implies accept; any flags value but `1` is ignored, as B3 says.
    let debug = m.flags.map(trim_ows) == Some(b"1");
    let sampling = match (debug, m.sampled) {
        (true, _) => SamplingState::Debug,
        (false, Some(s)) => parse_sampled(s)?,
        (false, None) => SamplingState::Defer,
    };
    match (m.trace_id, m.span_id) {
        (Some(t), Some(s)) => {
            let (trace_id, narrow) = parse_trace_id(trim_ows(t))?;
            let span_id = SpanId::from_hex(trim_ows(s))?;
            let parent_span_id = match m.parent_span_id {
                None => None,
                Some(p) => Some(SpanId::from_hex(trim_ows(p))?),
            };
            Some(Single::Context(B3 {
                trace_id,
                span_id,
                parent_span_id,
                sampling,
                narrow,
            }))
        }
        // Only the sampling state: a decision without a context.
        (None, None) if m.parent_span_id.is_none() && sampling != SamplingState::Defer => {
            Some(Single::SamplingOnly(sampling))
        }
        _ => None,
    }
}

/// Calls `set(name, value)` for each header of the multi form and `remove(name)` for those
/// that must not reach the upstream (a stale parent, `X-B3-Sampled` beside debug).
pub fn write_multi(
    b: &B3,
    out: &mut Vec<u8>,
    mut set: impl FnMut(&'static str, core::ops::Range<usize>),
    mut remove: impl FnMut(&'static str),
) {
    let mut put = |name, out: &mut Vec<u8>, write: &dyn Fn(&mut Vec<u8>)| {
        let start = out.len();
        write(out);
        set(name, start..out.len());
    };
    put(TRACE_ID, out, &|o| write_trace_id(b, o));
    put(SPAN_ID, out, &|o| o.extend_from_slice(&b.span_id.to_hex()));
    match b.parent_span_id {
        Some(p) => put(PARENT_SPAN_ID, out, &|o| o.extend_from_slice(&p.to_hex())),
        None => remove(PARENT_SPAN_ID),
    }
    match b.sampling {
        SamplingState::Accept => put(SAMPLED, out, &|o| o.push(b'1')),
        SamplingState::Deny => put(SAMPLED, out, &|o| o.push(b'0')),
        SamplingState::Debug => {
            // B3: with debug set, `X-B3-Sampled` is not sent.
            put(FLAGS, out, &|o| o.push(b'1'));
            remove(SAMPLED);
        }
        SamplingState::Defer => remove(SAMPLED),
    }
    if b.sampling != SamplingState::Debug {
        remove(FLAGS);
    }
}

fn to_incoming<'a>(b: B3, format: Propagator) -> Incoming<'a> {
    let ctx = SpanContext {
        trace_id: b.trace_id,
        span_id: b.span_id,
        flags: b.sampling.flags(),
    };
    Incoming::new(ctx, format, b.sampling, Dialect::B3 { narrow: b.narrow })
}

/// The `b3` half of extraction; a lone sampling state is reported through `sampling_only`.
pub fn extract_single<'a>(
    h: &RequestHeaders<'a>,
    sampling_only: &mut Option<(Propagator, SamplingState)>,
) -> Parsed<Incoming<'a>> {
    let Some(v) = h.b3 else {
        return Parsed::Absent;
    };
    match parse_single(v) {
        Some(Single::Context(b)) => Parsed::Valid(to_incoming(b, Propagator::B3)),
        Some(Single::SamplingOnly(s)) => {
            sampling_only.get_or_insert((Propagator::B3, s));
            Parsed::Absent
        }
        None => Parsed::Malformed,
    }
}

/// The `X-B3-*` half of extraction.
pub fn extract_multi<'a>(
    h: &RequestHeaders<'a>,
    sampling_only: &mut Option<(Propagator, SamplingState)>,
) -> Parsed<Incoming<'a>> {
    match parse_multi(&MultiHeaders::from_request(h)) {
        Parsed::Valid(Single::Context(b)) => Parsed::Valid(to_incoming(b, Propagator::B3Multi)),
        Parsed::Valid(Single::SamplingOnly(s)) => {
            sampling_only.get_or_insert((Propagator::B3Multi, s));
            Parsed::Absent
        }
        Parsed::Absent => Parsed::Absent,
        Parsed::Malformed => Parsed::Malformed,
    }
}

/// True when `s` is a lowercase-hex B3 id of a length B3 allows (for quick checks elsewhere).
pub fn is_id(s: &[u8]) -> bool {
    matches!(s.len(), 16 | 32) && hex::is_lower_hex(s)
}

/// Every `X-B3-*` header, in the order they are removed.
pub const MULTI: [&str; 5] = [TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS];

/// The new span as B3 writes it, in the width the caller used.
fn outgoing(s: &SpanStart<'_>) -> B3 {
    B3 {
        trace_id: s.trace_id,
        span_id: s.span_id,
        // OpenTelemetry: B3 injection must not propagate a parent span id.
        parent_span_id: None,
        sampling: s.sampling_state(),
        narrow: s.narrow(),
    }
}

/// Writes the single `b3` header for the new span.
pub fn inject_single(s: &SpanStart<'_>, out: &mut Injection) {
    let ctx = outgoing(s);
    out.put(SINGLE, |b| write_single(&ctx, b));
}

/// Writes the `X-B3-*` headers for the new span, removing those of the request it leaves out.
pub fn inject_multi(s: &SpanStart<'_>, h: &RequestHeaders<'_>, out: &mut Injection) {
    let ctx = outgoing(s);
    let (buf, set, remove) = out.parts();
    write_multi(
        &ctx,
        buf,
        |name, range| set.push((name, range)),
        |name| {
            if multi_present(h, name) {
                remove.push(name);
            }
        },
    );
}

/// Whether the request carried each of the [`MULTI`] headers, in that order: field by field,
/// where asking [`multi_present`] per name compares names.
pub fn multi_presence(h: &RequestHeaders<'_>) -> [bool; 5] {
    [
        h.x_b3_traceid,
        h.x_b3_spanid,
        h.x_b3_parentspanid,
        h.x_b3_sampled,
        h.x_b3_flags,
    ]
    .map(|v| v.is_some())
}

/// Whether the request carried the `X-B3-*` header `name`.
pub fn multi_present(h: &RequestHeaders<'_>, name: &str) -> bool {
    match name {
        TRACE_ID => h.x_b3_traceid.is_some(),
        SPAN_ID => h.x_b3_spanid.is_some(),
        PARENT_SPAN_ID => h.x_b3_parentspanid.is_some(),
        SAMPLED => h.x_b3_sampled.is_some(),
        FLAGS => h.x_b3_flags.is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn multi_presence_is_multi_present_per_name() {
        for mask in 0u8..32 {
            let pairs: Vec<(&[u8], &[u8])> = MULTI
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, n)| (n.as_bytes(), &b"1"[..]))
                .collect();
            let h = RequestHeaders::from_pairs(pairs);
            let want = MULTI.map(|n| multi_present(&h, n));
            assert_eq!(multi_presence(&h), want, "{mask:05b}");
            assert_eq!(want, core::array::from_fn(|i| mask & (1 << i) != 0));
        }
    }

    fn ctx(s: &str) -> B3 {
        match parse_single(s.as_bytes()) {
            Some(Single::Context(b)) => b,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn single(b: &B3) -> String {
        let mut out = Vec::new();
        write_single(b, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn spec_single_examples() {
        let b = ctx("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90");
        assert_eq!(b.trace_id.to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(b.span_id.to_string(), "e457b5a2e4d86bd1");
        assert_eq!(b.parent_span_id.unwrap().to_string(), "05e3ac9a4f6e3b90");
        assert_eq!(b.sampling, SamplingState::Accept);
        assert!(!b.narrow);
        assert_eq!(
            single(&b),
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
        );
        let b = ctx("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d");
        assert_eq!(b.sampling, SamplingState::Debug);
        assert_eq!(b.parent_span_id, None);
        let b = ctx("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1");
        assert_eq!(b.sampling, SamplingState::Defer);
        assert_eq!(
            parse_single(b"0"),
            Some(Single::SamplingOnly(SamplingState::Deny))
        );
        assert_eq!(
            parse_single(b"1"),
            Some(Single::SamplingOnly(SamplingState::Accept))
        );
        assert_eq!(
            parse_single(b" d "),
            Some(Single::SamplingOnly(SamplingState::Debug))
        );
    }

    #[test]
    fn narrow_ids_are_padded_and_kept_narrow() {
        let b = ctx("a3ce929d0e0e4736-00f067aa0ba902b7-1-00000000000000cd");
        assert_eq!(b.trace_id.to_string(), "0000000000000000a3ce929d0e0e4736");
        assert!(b.narrow);
        assert_eq!(
            single(&b),
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-00000000000000cd"
        );
        // A narrow request for a wide id cannot lose the high half.
        let wide = B3 {
            trace_id: TraceId::from_u64s(1, 2),
            ..b
        };
        assert!(single(&wide).starts_with("00000000000000010000000000000002-"));
    }

    #[test]
    fn malformed_single() {
        for bad in [
            "",
            "2",
            "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-05e3ac9a4f6e3b90",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-",
            "80f198ee56343ba864fe8b2a57d3eff7",
            "80f198ee56343ba864fe8b2a57d3ef-e457b5a2e4d86bd1-1",
            "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
            "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
            "80f198ee56343ba864fe8b2a57d3eff7--1",
        ] {
            assert_eq!(parse_single(bad.as_bytes()), None, "{bad}");
        }
    }

    fn multi(pairs: &[(&'static str, &'static str)]) -> Parsed<Single> {
        let get = |n: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_bytes())
        };
        parse_multi(&MultiHeaders {
            trace_id: get(TRACE_ID),
            span_id: get(SPAN_ID),
            parent_span_id: get(PARENT_SPAN_ID),
            sampled: get(SAMPLED),
            flags: get(FLAGS),
        })
    }

    #[test]
    fn multi_header_rules() {
        let base = [
            (TRACE_ID, "80f198ee56343ba864fe8b2a57d3eff7"),
            (SPAN_ID, "e457b5a2e4d86bd1"),
            (PARENT_SPAN_ID, "05e3ac9a4f6e3b90"),
            (SAMPLED, "1"),
        ];
        let Parsed::Valid(Single::Context(b)) = multi(&base) else {
            panic!()
        };
        assert_eq!(
            b,
            ctx("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
        );
        let debug = [base[0], base[1], (SAMPLED, "0"), (FLAGS, "1")];
        assert!(matches!(
            multi(&debug),
            Parsed::Valid(Single::Context(B3 {
                sampling: SamplingState::Debug,
                ..
            }))
        ));
        let ignored_flags = [base[0], base[1], (FLAGS, "2")];
        assert!(matches!(
            multi(&ignored_flags),
            Parsed::Valid(Single::Context(B3 {
                sampling: SamplingState::Defer,
                ..
            }))
        ));
        let legacy = [base[0], base[1], (SAMPLED, "True")];
        assert!(matches!(
            multi(&legacy),
            Parsed::Valid(Single::Context(B3 {
                sampling: SamplingState::Accept,
                ..
            }))
        ));
        let narrow = [(TRACE_ID, "a3ce929d0e0e4736"), base[1]];
        assert!(matches!(
            multi(&narrow),
            Parsed::Valid(Single::Context(B3 { narrow: true, .. }))
        ));
        assert_eq!(
            multi(&[(SAMPLED, "0")]),
            Parsed::Valid(Single::SamplingOnly(SamplingState::Deny))
        );
        assert_eq!(
            multi(&[(FLAGS, "1")]),
            Parsed::Valid(Single::SamplingOnly(SamplingState::Debug))
        );
        assert_eq!(multi(&[]), Parsed::Absent);
        for bad in [
            &[base[0], base[1], (SAMPLED, "")][..],
            &[base[0], base[1], (PARENT_SPAN_ID, "-")],
            &[base[0], base[1], (SAMPLED, "yes")],
            &[base[0]],
            &[base[1]],
            &[(PARENT_SPAN_ID, "05e3ac9a4f6e3b90")],
            &[(FLAGS, "0")],
            &[(TRACE_ID, "80f198ee56343ba864fe8b2a57d3eff"), base[1]],
        ] {
            assert_eq!(multi(bad), Parsed::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn multi_writes_and_removes() {
        let b = ctx("a3ce929d0e0e4736-00f067aa0ba902b7-d");
        let mut out = Vec::new();
        let (mut set, mut removed) = (Vec::new(), Vec::new());
        write_multi(&b, &mut out, |n, r| set.push((n, r)), |n| removed.push(n));
        let set: Vec<(&str, &str)> = set
            .into_iter()
            .map(|(n, r)| (n, core::str::from_utf8(&out[r]).unwrap()))
            .collect();
        assert_eq!(
            set,
            [
                (TRACE_ID, "a3ce929d0e0e4736"),
                (SPAN_ID, "00f067aa0ba902b7"),
                (FLAGS, "1")
            ]
        );
        assert_eq!(removed, [PARENT_SPAN_ID, SAMPLED]);
        assert!(is_id(b"a3ce929d0e0e4736") && !is_id(b"a3ce"));
    }

    fn arb_b3() -> impl Strategy<Value = B3> {
        (
            any::<(u64, u64)>(),
            1u64..,
            proptest::option::of(1u64..),
            prop_oneof![
                Just(SamplingState::Accept),
                Just(SamplingState::Deny),
                Just(SamplingState::Debug),
                Just(SamplingState::Defer)
            ],
            any::<bool>(),
        )
            .prop_filter_map("valid ids", |((hi, lo), span, parent, sampling, narrow)| {
                let hi = if narrow { 0 } else { hi };
                let trace_id = TraceId::from_u64s(hi, lo);
                trace_id.is_valid().then_some(B3 {
                    trace_id,
                    span_id: SpanId::from_u64(span),
                    // B3 has no way to write a parent under a deferred decision.
                    parent_span_id: parent
                        .filter(|_| sampling != SamplingState::Defer)
                        .map(SpanId::from_u64),
                    sampling,
                    narrow,
                })
            })
    }

    proptest! {
        #[test]
        fn single_round_trip(b in arb_b3()) {
            let mut out = Vec::new();
            write_single(&b, &mut out);
            prop_assert!(out.len() <= MAX_SINGLE_LEN);
            prop_assert_eq!(parse_single(&out), Some(Single::Context(b)));
        }

        #[test]
        fn multi_round_trip(b in arb_b3()) {
            let mut out = Vec::new();
            let mut set = Vec::new();
            write_multi(&b, &mut out, |n, r| set.push((n, r)), |_| {});
            let get = |name: &str| set.iter().find(|(n, _)| *n == name).map(|(_, r)| &out[r.clone()]);
            let m = MultiHeaders {
                trace_id: get(TRACE_ID),
                span_id: get(SPAN_ID),
                parent_span_id: get(PARENT_SPAN_ID),
                sampled: get(SAMPLED),
                flags: get(FLAGS),
            };
            prop_assert_eq!(parse_multi(&m), Parsed::Valid(Single::Context(b)));
        }

        #[test]
        fn never_panics(s in "[0-9a-fd-]{0,80}") {
            let _ = parse_single(s.as_bytes());
        }
    }
}
