//! AWS X-Ray `X-Amzn-Trace-Id`: `Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled={0|1|?}`.
//!
//! The root's two hex groups are the 128-bit trace id (the first 8 digits are an epoch only if
//! the trace started in X-Ray; nothing here assumes so). Load balancers add fields such as
//! `Self=` and Lambda adds `Lineage=`: they are kept, in order, when the header is re-written.
//! A `Root` without `Parent` (what an ALB sends) names a trace but no parent span.

use super::context::SpanStart;
use super::inject::Injection;
use super::{Dialect, Incoming, Parsed, Propagator, SamplingState, SpanContext};
use crate::headers::RequestHeaders;
use crate::ids::{SpanId, TraceId};
use crate::text::trim_ows;

/// The header's name.
pub const HEADER: &str = "x-amzn-trace-id";

/// A parsed X-Ray header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XRay<'a> {
    /// `Root`, as a 128-bit trace id.
    pub trace_id: TraceId,
    /// `Parent`; absent when a load balancer started the trace.
    pub parent: Option<SpanId>,
    /// `1` accept, `0` deny, `?` or absent defer.
    pub sampling: SamplingState,
    /// The header the fields came from, for [`XRay::extra_fields`].
    pub header: &'a [u8],
}

impl<'a> XRay<'a> {
    /// The fields other than `Root`, `Parent` and `Sampled`, trimmed, in order.
    pub fn extra_fields(&self) -> impl Iterator<Item = &'a [u8]> + Clone {
        extra_fields(self.header)
    }
}

/// The fields of `header` other than the three X-Ray defines for the context.
pub fn extra_fields(header: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    fields(header).filter(|f| !matches!(split_field(f).0, b"Root" | b"Parent" | b"Sampled"))
}

fn fields(header: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    header
        .split(|&b| b == b';')
        .map(trim_ows)
        .filter(|f| !f.is_empty())
}

fn split_field(f: &[u8]) -> (&[u8], &[u8]) {
    match f.iter().position(|&b| b == b'=') {
        Some(eq) => (&f[..eq], &f[eq + 1..]),
        None => (f, &[]),
    }
}

/// `1-{8 hex}-{24 hex}` to a trace id.
fn parse_root(v: &[u8]) -> Option<TraceId> {
    let [b'1', b'-', rest @ ..] = v else {
        return None;
    };
    if rest.len() != 33 || rest.get(8) != Some(&b'-') {
        return None;
    }
    let mut digits = [0u8; 32];
    digits[..8].copy_from_slice(rest.get(..8)?);
    digits[8..].copy_from_slice(rest.get(9..)?);
    TraceId::from_hex(&digits)
}

/// Parses the header; each of `Root`, `Parent`, `Sampled` may appear once, `Root` must.
pub fn parse(header: &[u8]) -> Option<XRay<'_>> {
    let (mut trace_id, mut parent, mut sampling) = (None, None, None);
    for f in fields(header) {
        let (k, v) = split_field(f);
        match k {
            b"Root" if trace_id.is_none() => trace_id = Some(parse_root(v)?),
            b"Parent" if parent.is_none() => parent = Some(SpanId::from_hex(v)?),
            b"Sampled" if sampling.is_none() => {
                sampling = Some(match v {
                    b"1" => SamplingState::Accept,
                    b"0" => SamplingState::Deny,
                    b"?" => SamplingState::Defer,
                    _ => return None,
                })
            }
            // Two of the same context field could name two contexts: refuse rather than guess.
            b"Root" | b"Parent" | b"Sampled" => return None,
            _ => {}
        }
    }
    Some(XRay {
        trace_id: trace_id?,
        parent,
        sampling: sampling.unwrap_or(SamplingState::Defer),
        header,
    })
}

/// Appends the header for `trace_id`, `parent` and `sampling`, followed by `extra` fields.
/// Debug has no X-Ray spelling, so it is written as sampled; a deferred decision as `?`.
pub fn write<'e>(
    trace_id: &TraceId,
    parent: Option<&SpanId>,
    sampling: SamplingState,
    extra: impl Iterator<Item = &'e [u8]>,
    out: &mut Vec<u8>,
) {
    let hex = trace_id.to_hex();
    out.extend_from_slice(b"Root=1-");
    out.extend_from_slice(&hex[..8]);
    out.push(b'-');
    out.extend_from_slice(&hex[8..]);
    if let Some(p) = parent {
        out.extend_from_slice(b";Parent=");
        out.extend_from_slice(&p.to_hex());
    }
    out.extend_from_slice(match sampling {
        SamplingState::Accept | SamplingState::Debug => b";Sampled=1",
        SamplingState::Deny => b";Sampled=0",
        SamplingState::Defer => b";Sampled=?",
    });
    for f in extra {
        out.push(b';');
        out.extend_from_slice(f);
    }
}

/// The X-Ray half of extraction.
pub fn extract<'a>(h: &RequestHeaders<'a>) -> Parsed<Incoming<'a>> {
    let Some(v) = h.x_amzn_trace_id else {
        return Parsed::Absent;
    };
    match parse(v) {
        Some(x) => {
            let ctx = SpanContext {
                trace_id: x.trace_id,
                span_id: x.parent.unwrap_or(SpanId::INVALID),
                flags: x.sampling.flags(),
            };
            Parsed::Valid(Incoming::new(
                ctx,
                Propagator::XRay,
                x.sampling,
                Dialect::XRay { header: v },
            ))
        }
        None => Parsed::Malformed,
    }
}

/// Writes `X-Amzn-Trace-Id` for the new span, keeping the caller's extra fields.
pub fn inject(s: &SpanStart<'_>, out: &mut Injection) {
    let header = match s.dialect {
        Dialect::XRay { header } => header,
        _ => &[],
    };
    out.put(HEADER, |b| {
        write(
            &s.trace_id,
            Some(&s.span_id),
            s.sampling_state(),
            extra_fields(header),
            b,
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &[u8] =
        b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

    #[test]
    fn spec_example() {
        let x = parse(EXAMPLE).unwrap();
        assert_eq!(x.trace_id.to_string(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(x.parent.unwrap().to_string(), "53995c3f42cd8ad8");
        assert_eq!(x.sampling, SamplingState::Accept);
        assert_eq!(x.extra_fields().count(), 0);
        let mut out = Vec::new();
        write(
            &x.trace_id,
            x.parent.as_ref(),
            x.sampling,
            x.extra_fields(),
            &mut out,
        );
        assert_eq!(out, EXAMPLE);
    }

    #[test]
    fn extra_fields_are_kept_in_order() {
        let h = b"Self=1-67891234-12456789abcdef012345678; Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=?;Lineage=a87bd80c:1";
        let x = parse(h).unwrap();
        assert_eq!(x.parent, None);
        assert_eq!(x.sampling, SamplingState::Defer);
        let extra: Vec<&[u8]> = x.extra_fields().collect();
        assert_eq!(
            extra,
            [
                &b"Self=1-67891234-12456789abcdef012345678"[..],
                b"Lineage=a87bd80c:1"
            ]
        );
        let mut out = Vec::new();
        let parent = SpanId::from_u64(0xab);
        write(
            &x.trace_id,
            Some(&parent),
            SamplingState::Accept,
            x.extra_fields(),
            &mut out,
        );
        assert_eq!(
            out,
            b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=00000000000000ab;Sampled=1;Self=1-67891234-12456789abcdef012345678;Lineage=a87bd80c:1"
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"Parent=53995c3f42cd8ad8;Sampled=1",
            b"Root=2-5759e988-bd862e3fe1be46a994272793",
            b"Root=1-5759e988bd862e3fe1be46a994272793",
            b"Root=1-5759e98-8bd862e3fe1be46a994272793",
            b"Root=1-5759E988-bd862e3fe1be46a994272793",
            b"Root=1-5759e988-bd862e3fe1be46a99427279",
            b"Root=1-00000000-000000000000000000000000",
            b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad",
            b"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=yes",
            b"Root=1-5759e988-bd862e3fe1be46a994272793;Root=1-5759e988-bd862e3fe1be46a994272794",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn round_trip(
            hi: u64, lo in 1u64.., parent in proptest::option::of(1u64..),
            s in 0usize..3, extra in proptest::collection::vec("[A-Z][a-z]{0,6}=[a-z0-9:-]{0,10}", 0..3),
        ) {
            let trace_id = TraceId::from_u64s(hi, lo);
            let parent = parent.map(SpanId::from_u64);
            let sampling = [SamplingState::Accept, SamplingState::Deny, SamplingState::Defer][s];
            let extra: Vec<&[u8]> = extra
                .iter()
                .map(|e| e.as_bytes())
                .filter(|e| !e.starts_with(b"Root=") && !e.starts_with(b"Parent=") && !e.starts_with(b"Sampled="))
                .collect();
            let mut out = Vec::new();
            write(&trace_id, parent.as_ref(), sampling, extra.iter().copied(), &mut out);
            let x = parse(&out).unwrap();
            prop_assert_eq!((x.trace_id, x.parent, x.sampling), (trace_id, parent, sampling));
            prop_assert_eq!(x.extra_fields().collect::<Vec<_>>(), extra);
        }

        #[test]
        fn never_panics(s in "[A-Za-z0-9=;?-]{0,90}") {
            let _ = parse(s.as_bytes());
        }
    }
}
