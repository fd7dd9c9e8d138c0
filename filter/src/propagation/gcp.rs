//! Google Cloud `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=OPTIONS`.
//!
//! The trace id is 32 lowercase hex digits; the span id is the span's 64 bits as an unsigned
//! decimal integer, the one place a trace header carries an id in base ten. Bit 0 of the
//! options is "traced"; a missing `o` means not traced, as Google's own propagator reads it.

use super::context::SpanStart;
use super::inject::Injection;
use super::{Dialect, Incoming, Parsed, Propagator, SamplingState, SpanContext};
use crate::headers::RequestHeaders;
use crate::ids::{SpanId, TraceId};
use crate::text::trim_ows;

/// The header's name.
pub const HEADER: &str = "x-cloud-trace-context";
/// Longest value written: 32 + 1 + 20 digits + `;o=` + 3 digits.
pub const MAX_LEN: usize = 59;

/// A parsed `X-Cloud-Trace-Context`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloudTrace {
    /// The trace id (32 hex digits).
    pub trace_id: TraceId,
    /// The span id, sent as a decimal number.
    pub span_id: SpanId,
    /// The `o=` value, when present.
    pub options: Option<u8>,
}

impl CloudTrace {
    /// Whether `o=` has its sampled bit set.
    pub fn sampled(&self) -> bool {
        self.options.is_some_and(|o| o & 1 != 0)
    }
}

/// Parses 1 to `max` ASCII digits as an integer, refusing overflow.
fn parse_decimal(s: &[u8], max: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// Parses a header value.
pub fn parse(value: &[u8]) -> Option<CloudTrace> {
    let v = trim_ows(value);
    let slash = v.iter().position(|&b| b == b'/')?;
    let trace_id = TraceId::from_hex(v.get(..slash)?)?;
    let rest = v.get(slash + 1..)?;
    let (span, options) = match rest.iter().position(|&b| b == b';') {
        None => (rest, None),
        Some(semi) => {
            let opt = rest.get(semi + 1..)?.strip_prefix(b"o=")?;
            let o = u8::try_from(parse_decimal(opt, 3)?).ok()?;
            (rest.get(..semi)?, Some(o))
        }
    };
    let span_id = SpanId::from_u64(parse_decimal(span, 20)?);
    span_id.is_valid().then_some(CloudTrace {
        trace_id,
        span_id,
        options,
    })
}

/// Appends a header value to `out`; the options are written only when present.
pub fn write(c: &CloudTrace, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.trace_id.to_hex());
    out.push(b'/');
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(c.span_id.as_u64(), &mut digits));
    if let Some(o) = c.options {
        out.extend_from_slice(b";o=");
        out.extend_from_slice(decimal(o as u64, &mut digits));
    }
}

/// Formats `v` in base ten into the end of `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// The GCP half of extraction.
pub fn extract<'a>(h: &RequestHeaders<'a>) -> Parsed<Incoming<'a>> {
    let Some(v) = h.x_cloud_trace_context else {
        return Parsed::Absent;
    };
    match parse(v) {
        Some(c) => {
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
                Propagator::Gcp,
                sampling,
                Dialect::Plain,
            ))
        }
        None => Parsed::Malformed,
    }
}

/// Writes `X-Cloud-Trace-Context` for the new span.
pub fn inject(s: &SpanStart<'_>, out: &mut Injection) {
    let c = CloudTrace {
        trace_id: s.trace_id,
        span_id: s.span_id,
        options: Some(u8::from(s.sampled())),
    };
    out.put(HEADER, |b| write(&c, b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_examples() {
        let c = parse(b"105445aa7843bc8bf206b12000100000/1;o=1").unwrap();
        assert_eq!(c.trace_id.to_string(), "105445aa7843bc8bf206b12000100000");
        assert_eq!(c.span_id.as_u64(), 1);
        assert!(c.sampled());
        let mut out = Vec::new();
        write(&c, &mut out);
        assert_eq!(out, b"105445aa7843bc8bf206b12000100000/1;o=1");
        let c = parse(b"105445aa7843bc8bf206b12000100000/18446744073709551615").unwrap();
        assert_eq!(c.span_id.to_string(), "ffffffffffffffff");
        assert!(!c.sampled());
        assert!(!parse(b"105445aa7843bc8bf206b12000100000/5;o=0")
            .unwrap()
            .sampled());
        assert!(parse(b"105445aa7843bc8bf206b12000100000/5;o=3")
            .unwrap()
            .sampled());
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"105445aa7843bc8bf206b12000100000",
            b"105445aa7843bc8bf206b12000100000;o=1",
            b"105445aa7843bc8bf206b12000100000/",
            b"105445aa7843bc8bf206b12000100000/0;o=1",
            b"105445aa7843bc8bf206b12000100000/18446744073709551616",
            b"105445aa7843bc8bf206b12000100000/-1",
            b"105445aa7843bc8bf206b12000100000/1;o=",
            b"105445aa7843bc8bf206b12000100000/1;o=256",
            b"105445aa7843bc8bf206b12000100000/1;x=1",
            b"105445AA7843BC8BF206B12000100000/1;o=1",
            b"00000000000000000000000000000000/1;o=1",
            b"105445aa7843bc8bf206b1200010000/1;o=1",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn round_trip(hi: u64, lo in 1u64.., span in 1u64.., options: Option<u8>) {
            let c = CloudTrace { trace_id: TraceId::from_u64s(hi, lo), span_id: SpanId::from_u64(span), options };
            let mut out = Vec::new();
            write(&c, &mut out);
            prop_assert!(out.len() <= MAX_LEN);
            prop_assert_eq!(parse(&out), Some(c));
        }

        #[test]
        fn never_panics(s in "[0-9a-f/;o=]{0,70}") {
            let _ = parse(s.as_bytes());
        }
    }
}
