//! OpenCensus `grpc-trace-bin`: a binary context, base64 in the header (padded or not, as gRPC
//! allows for `-bin` headers).
//!
//! Layout: a version byte (0), then fields tagged by id: `0` + 16-byte trace id, `1` + 8-byte
//! span id, `2` + 1-byte options (bit 0 = sampled). Fields come in id order; parsing stops at
//! an id it does not know, which is how the format leaves room for later fields.

use super::context::SpanStart;
use super::inject::Injection;
use super::{Dialect, Incoming, Parsed, Propagator, SamplingState, SpanContext};
use crate::base64;
use crate::headers::RequestHeaders;
use crate::ids::{SpanId, TraceId};
use crate::text::trim_ows;

/// The header's name.
pub const HEADER: &str = "grpc-trace-bin";
/// Encoded size of the fields we write: version + 3 tagged fields.
pub const BINARY_LEN: usize = 1 + 17 + 9 + 2;
/// Room for later fields we skip: longer values are refused rather than decoded.
const MAX_BINARY: usize = 192;
const MAX_ENCODED: usize = base64::encoded_len(MAX_BINARY);

/// A decoded `grpc-trace-bin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OcContext {
    /// The trace id.
    pub trace_id: TraceId,
    /// The span id.
    pub span_id: SpanId,
    /// Trace options; 0 when the field is absent.
    pub options: u8,
}

impl OcContext {
    /// Whether the trace options' sampled bit is set.
    pub fn sampled(&self) -> bool {
        self.options & 1 != 0
    }
}

/// Decodes the binary layout. The span id is required: without it there is no parent.
pub fn parse_binary(b: &[u8]) -> Option<OcContext> {
    let [0, 0, rest @ ..] = b else {
        return None;
    };
    let trace_id = TraceId(rest.get(..16)?.try_into().ok()?);
    let rest = rest.get(16..)?;
    let [1, rest @ ..] = rest else {
        return None;
    };
    let span_id = SpanId(rest.get(..8)?.try_into().ok()?);
    let options = match rest.get(8..)? {
        [2, o, ..] => *o,
        // A truncated options field is damage, not a later version.
        [2] => return None,
        _ => 0,
    };
    (trace_id.is_valid() && span_id.is_valid()).then_some(OcContext {
        trace_id,
        span_id,
        options,
    })
}

/// Parses the header value; returns the context and whether the base64 was padded.
pub fn parse(value: &[u8]) -> Option<(OcContext, bool)> {
    let v = trim_ows(value);
    if v.len() > MAX_ENCODED {
        return None;
    }
    let mut bin = [0u8; MAX_BINARY];
    let n = base64::decode(v, &mut bin)?;
    // A length in whole quads is what a padding encoder writes; when the binary happens to fill
    // its last quad the two styles agree, and padded is the one every decoder accepts.
    let padded = v.len().is_multiple_of(4);
    Some((parse_binary(bin.get(..n)?)?, padded))
}

/// Writes the binary layout with all three fields.
pub fn write_binary(c: &OcContext) -> [u8; BINARY_LEN] {
    let mut b = [0u8; BINARY_LEN];
    b[2..18].copy_from_slice(&c.trace_id.0);
    b[18] = 1;
    b[19..27].copy_from_slice(&c.span_id.0);
    b[27] = 2;
    b[28] = c.options;
    b
}

/// Appends the header value, base64 with or without padding.
pub fn write(c: &OcContext, padded: bool, out: &mut Vec<u8>) {
    let mut text = [0u8; base64::encoded_len(BINARY_LEN)];
    // The buffer fits the padded encoding, so this cannot fail.
    let n = base64::encode(&write_binary(c), &mut text, padded).unwrap_or(0);
    out.extend_from_slice(&text[..n]);
}

/// The `grpc-trace-bin` half of extraction.
pub fn extract<'a>(h: &RequestHeaders<'a>) -> Parsed<Incoming<'a>> {
    let Some(v) = h.grpc_trace_bin else {
        return Parsed::Absent;
    };
    match parse(v) {
        Some((c, padded)) => {
            let sampling = if c.sampled() {
                SamplingState::Accept
            } else {
                SamplingState::Deny
            };
            let ctx = SpanContext {
                trace_id: c.trace_id,
                span_id: c.span_id,
                flags: sampling.flags(),
            };
            Parsed::Valid(Incoming::new(
                ctx,
                Propagator::GrpcTraceBin,
                sampling,
                Dialect::GrpcTraceBin { padded },
            ))
        }
        None => Parsed::Malformed,
    }
}

/// Writes `grpc-trace-bin` for the new span, padded as the caller sent it.
pub fn inject(s: &SpanStart<'_>, out: &mut Injection) {
    let padded = match s.dialect {
        Dialect::GrpcTraceBin { padded } => padded,
        // Padded is what every decoder accepts (linkerd2-proxy requires it).
        _ => true,
    };
    let c = OcContext {
        trace_id: s.trace_id,
        span_id: s.span_id,
        options: u8::from(s.sampled()),
    };
    out.put(HEADER, |b| write(&c, padded, b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PADDED: &[u8] = b"AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=";

    #[test]
    fn known_vector_padded_and_unpadded() {
        let (c, padded) = parse(PADDED).unwrap();
        assert!(padded);
        assert_eq!(c.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id.to_string(), "00f067aa0ba902b7");
        assert!(c.sampled());
        let (u, padded) = parse(&PADDED[..PADDED.len() - 1]).unwrap();
        assert!(!padded);
        assert_eq!(u, c);
        let mut out = Vec::new();
        write(&c, true, &mut out);
        assert_eq!(out, PADDED);
        out.clear();
        write(&c, false, &mut out);
        assert_eq!(out, &PADDED[..PADDED.len() - 1]);
        // No options field: not sampled. A later unknown field is skipped.
        let (c, _) = parse(b"AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3").unwrap();
        assert_eq!(c.options, 0);
        let mut longer = write_binary(&c).to_vec();
        longer.extend_from_slice(&[3, 9, 9]);
        assert_eq!(parse_binary(&longer), Some(c));
    }

    #[test]
    fn malformed() {
        let good = write_binary(&OcContext {
            trace_id: TraceId::from_u64s(1, 2),
            span_id: SpanId::from_u64(3),
            options: 1,
        });
        let mut bad_version = good;
        bad_version[0] = 1;
        let mut bad_tag = good;
        bad_tag[1] = 1;
        let mut zero_trace = good;
        zero_trace[2..18].fill(0);
        let mut no_span_tag = good;
        no_span_tag[18] = 2;
        for bad in [
            &bad_version[..],
            &bad_tag,
            &zero_trace,
            &no_span_tag,
            &good[..20],
            &good[..28],
            &[],
        ] {
            assert_eq!(parse_binary(bad), None, "{bad:?}");
        }
        assert_eq!(parse(b"AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=="), None);
        assert_eq!(parse(b"not base64!"), None);
        assert_eq!(parse(&[b'A'; 400]), None);
    }

    proptest! {
        #[test]
        fn round_trip(t: [u8; 16], s: [u8; 8], options: u8, padded: bool) {
            let c = OcContext { trace_id: TraceId(t), span_id: SpanId(s), options };
            prop_assume!(c.trace_id.is_valid() && c.span_id.is_valid());
            let mut out = Vec::new();
            write(&c, padded, &mut out);
            prop_assert_eq!(parse(&out), Some((c, padded)));
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_binary(&data);
            let _ = parse(&data);
        }
    }
}
