//! Linkerd 1 (Finagle) `l5d-ctx-trace`, plus the `l5d-reqid` and `l5d-sample` headers beside it.
//!
//! The context header is base64 of Finagle's binary trace id: four big-endian u64s (span id,
//! parent id, the low 64 bits of the trace id, a flag word) and, for 128-bit traces only, a
//! fifth with the high 64 bits. [`L5dTrace::narrow`] remembers the 32-byte layout so a Linkerd
//! 1 router gets back the length it sent.

use super::context::SpanStart;
use super::inject::Injection;
use super::{Dialect, Incoming, Parsed, Propagator, SamplingState, SpanContext};
use crate::base64;
use crate::headers::RequestHeaders;
use crate::ids::{SpanId, TraceId};
use crate::text::trim_ows;

/// The context header.
pub const CTX_TRACE: &str = "l5d-ctx-trace";
/// The request id header: the low 64 bits of the trace id as 16 hex digits.
pub const REQID: &str = "l5d-reqid";

/// Finagle flag: debug (implies sampled).
pub const FLAG_DEBUG: u64 = 1 << 0;
/// Finagle flag: the sampled bit below is meaningful.
pub const FLAG_SAMPLING_KNOWN: u64 = 1 << 1;
/// Finagle flag: sampled.
pub const FLAG_SAMPLED: u64 = 1 << 2;

const NARROW_LEN: usize = 32;
const WIDE_LEN: usize = 40;
/// Longest header value accepted: the padded encoding of the 40-byte layout.
pub const MAX_ENCODED_LEN: usize = base64::encoded_len(WIDE_LEN);

/// A decoded `l5d-ctx-trace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L5dTrace {
    /// The span id.
    pub span_id: SpanId,
    /// Equal to `span_id` on a root span, as Finagle writes it.
    pub parent_id: SpanId,
    /// 128 bits; the high half is zero in the 32-byte layout.
    pub trace_id: TraceId,
    /// Finagle's flag word, extension bits included.
    pub flags: u64,
    /// Written as the 32-byte layout.
    pub narrow: bool,
}

impl L5dTrace {
    /// The sampling decision the flag word states.
    pub fn sampling(&self) -> SamplingState {
        if self.flags & FLAG_DEBUG != 0 {
            SamplingState::Debug
        } else if self.flags & FLAG_SAMPLING_KNOWN == 0 {
            SamplingState::Defer
        } else if self.flags & FLAG_SAMPLED != 0 {
            SamplingState::Accept
        } else {
            SamplingState::Deny
        }
    }

    /// The flag word Finagle writes for a decision.
    pub fn flags_for(s: SamplingState) -> u64 {
        match s {
            SamplingState::Debug => FLAG_DEBUG | FLAG_SAMPLING_KNOWN | FLAG_SAMPLED,
            SamplingState::Accept => FLAG_SAMPLING_KNOWN | FLAG_SAMPLED,
            SamplingState::Deny => FLAG_SAMPLING_KNOWN,
            SamplingState::Defer => 0,
        }
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Decodes the binary layout (32 or 40 bytes). Zero span or trace ids are rejected: they are
/// invalid in every format we translate to.
pub fn parse_binary(bytes: &[u8]) -> Option<L5dTrace> {
    let narrow = match bytes.len() {
        NARROW_LEN => true,
        WIDE_LEN => false,
        _ => return None,
    };
    let span_id = SpanId::from_u64(u64_at(bytes, 0)?);
    let parent_id = SpanId::from_u64(u64_at(bytes, 8)?);
    let low = u64_at(bytes, 16)?;
    let flags = u64_at(bytes, 24)?;
    let high = if narrow { 0 } else { u64_at(bytes, 32)? };
    let trace_id = TraceId::from_u64s(high, low);
    (span_id.is_valid() && trace_id.is_valid()).then_some(L5dTrace {
        span_id,
        parent_id,
        trace_id,
        flags,
        narrow,
    })
}

/// Parses the header value: standard base64, padded or not, of the binary layout.
pub fn parse(value: &[u8]) -> Option<L5dTrace> {
    let v = trim_ows(value);
    if v.len() > MAX_ENCODED_LEN {
        return None;
    }
    let mut bytes = [0u8; WIDE_LEN];
    let n = base64::decode(v, &mut bytes)?;
    parse_binary(bytes.get(..n)?)
}

/// Writes the binary layout; the 32-byte one only when the high half is zero, since cutting it
/// would move the span to another trace.
pub fn write_binary(t: &L5dTrace, out: &mut [u8; WIDE_LEN]) -> usize {
    out[0..8].copy_from_slice(&t.span_id.0);
    out[8..16].copy_from_slice(&t.parent_id.0);
    out[16..24].copy_from_slice(&t.trace_id.low_u64().to_be_bytes());
    out[24..32].copy_from_slice(&t.flags.to_be_bytes());
    if t.narrow && t.trace_id.high_u64() == 0 {
        NARROW_LEN
    } else {
        out[32..40].copy_from_slice(&t.trace_id.high_u64().to_be_bytes());
        WIDE_LEN
    }
}

/// Appends the header value (padded base64, as Java's encoder writes it) to `out`.
pub fn write(t: &L5dTrace, out: &mut Vec<u8>) {
    let mut bin = [0u8; WIDE_LEN];
    let n = write_binary(t, &mut bin);
    let mut text = [0u8; MAX_ENCODED_LEN];
    // The buffer is sized for the longest layout, so encoding cannot run out of room.
    let len = base64::encode(&bin[..n], &mut text, true).unwrap_or(0);
    out.extend_from_slice(&text[..len]);
}

/// Appends the `l5d-reqid` value for a trace: its low 64 bits in hex.
pub fn write_reqid(trace_id: &TraceId, out: &mut Vec<u8>) {
    out.extend_from_slice(&SpanId::from_u64(trace_id.low_u64()).to_hex());
}

/// Parses `l5d-sample`: a rate, clamped to [0, 1]. Not a number (or NaN) yields `None`.
pub fn parse_sample_rate(value: &[u8]) -> Option<f64> {
    let s = core::str::from_utf8(trim_ows(value)).ok()?;
    let rate: f64 = s.parse().ok()?;
    (!rate.is_nan()).then(|| rate.clamp(0.0, 1.0))
}

/// Decides a sampling rate deterministically from the trace id, so every hop that sees the same
/// rate agrees: sampled when the id's right-most 56 bits reach the rejection threshold
/// `(1 - rate) * 2^56`, the comparison OpenTelemetry's consistent probability sampling uses.
pub fn sample_by_rate(trace_id: &TraceId, rate: f64) -> bool {
    const RANGE: f64 = (1u64 << 56) as f64;
    let randomness = trace_id.low_u64() & ((1u64 << 56) - 1);
    let threshold = ((1.0 - rate.clamp(0.0, 1.0)) * RANGE) as u64;
    rate > 0.0 && randomness >= threshold
}

/// The `l5d-ctx-trace` half of extraction.
pub fn extract<'a>(h: &RequestHeaders<'a>) -> Parsed<Incoming<'a>> {
    let Some(v) = h.l5d_ctx_trace else {
        return Parsed::Absent;
    };
    match parse(v) {
        Some(t) => {
            let sampling = t.sampling();
            let ctx = SpanContext {
                trace_id: t.trace_id,
                span_id: t.span_id,
                flags: sampling.flags(),
            };
            Parsed::Valid(Incoming::new(
                ctx,
                Propagator::L5d,
                sampling,
                Dialect::L5d { narrow: t.narrow },
            ))
        }
        None => Parsed::Malformed,
    }
}

/// Writes `l5d-ctx-trace` for the new span, in the caller's width, and `l5d-reqid`.
pub fn inject(s: &SpanStart<'_>, out: &mut Injection) {
    let t = L5dTrace {
        span_id: s.span_id,
        // Finagle marks a root by a parent equal to the span itself.
        parent_id: s.parent.unwrap_or(s.span_id),
        trace_id: s.trace_id,
        flags: L5dTrace::flags_for(s.sampling_state()),
        narrow: s.narrow(),
    };
    out.put(CTX_TRACE, |b| write(&t, b));
    out.put(REQID, |b| write_reqid(&s.trace_id, b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_vector() {
        let t = parse(b"vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=").unwrap();
        assert_eq!(t.span_id.to_string(), "bd82828f2f2d08d2");
        assert_eq!(t.parent_id.to_string(), "f2fd78005d756b0e");
        assert_eq!(t.trace_id.to_string(), "0000000000000000f2fd78005d756b0e");
        assert_eq!(t.flags, 0);
        assert!(t.narrow);
        assert_eq!(t.sampling(), SamplingState::Defer);
        let mut out = Vec::new();
        write(&t, &mut out);
        assert_eq!(out, b"vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=");
        // Unpadded input is accepted too.
        assert_eq!(
            parse(b"vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA"),
            Some(t)
        );
        let mut reqid = Vec::new();
        write_reqid(&t.trace_id, &mut reqid);
        assert_eq!(reqid, b"f2fd78005d756b0e");
    }

    #[test]
    fn flags_map_to_sampling() {
        for s in [
            SamplingState::Accept,
            SamplingState::Deny,
            SamplingState::Debug,
            SamplingState::Defer,
        ] {
            let t = L5dTrace {
                span_id: SpanId::from_u64(1),
                parent_id: SpanId::from_u64(1),
                trace_id: TraceId::from_u64s(0, 2),
                flags: L5dTrace::flags_for(s),
                narrow: true,
            };
            assert_eq!(t.sampling(), s);
        }
        assert_eq!(L5dTrace::flags_for(SamplingState::Accept), 6);
        assert_eq!(L5dTrace::flags_for(SamplingState::Deny), 2);
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAA==",
            b"vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=vYKC",
            b"vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAA*=",
            b"AAAAAAAAAADy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=",
            b"vYKCjy8tCNLy/XgAXXVrDgAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn sample_rate() {
        assert_eq!(parse_sample_rate(b"1.0"), Some(1.0));
        assert_eq!(parse_sample_rate(b" 0.25 "), Some(0.25));
        assert_eq!(parse_sample_rate(b"7"), Some(1.0));
        assert_eq!(parse_sample_rate(b"-1"), Some(0.0));
        assert_eq!(parse_sample_rate(b"NaN"), None);
        assert_eq!(parse_sample_rate(b"often"), None);
        let low = TraceId::from_u64s(0, 1);
        let high = TraceId::from_u64s(0, (1 << 56) - 1);
        assert!(sample_by_rate(&low, 1.0) && sample_by_rate(&high, 1.0));
        assert!(!sample_by_rate(&low, 0.0) && !sample_by_rate(&high, 0.0));
        assert!(!sample_by_rate(&low, 0.5) && sample_by_rate(&high, 0.5));
    }

    proptest! {
        #[test]
        fn round_trip(span in 1u64.., parent: u64, hi: u64, lo in 1u64.., flags: u64, narrow: bool) {
            let t = L5dTrace {
                span_id: SpanId::from_u64(span),
                parent_id: SpanId::from_u64(parent),
                trace_id: TraceId::from_u64s(if narrow { 0 } else { hi }, lo),
                flags,
                narrow,
            };
            let mut out = Vec::new();
            write(&t, &mut out);
            prop_assert_eq!(parse(&out), Some(t));
        }

        #[test]
        fn never_panics(s in "[A-Za-z0-9+/=]{0,70}") {
            let _ = parse(s.as_bytes());
        }
    }
}
