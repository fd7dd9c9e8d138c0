//! Trace-context propagation: the span context every format maps to, and the formats themselves.
//!
//! Each wire format lives in its own module with a parse and a serialize; this module holds what
//! they share and the ordered extraction over the configured formats.
//!
//! # Formats, by example
//!
//! What the upstream receives for one incoming header, with the default configuration
//! (`inject = ["tracecontext", "baggage"]` plus the arrival format). `T` is the incoming trace id
//! widened to 128 bits, `S` the new span id the proxy exports (its parent is the incoming span
//! id). W3C flags are `01` sampled, `00` not; the random bit `02` survives only from W3C and is
//! set on traces started here.
//! Headers of any other format the configuration names (in `extract` or `inject`) that the
//! request carried are removed; formats the configuration does not name pass untouched.
//!
//! | format | incoming header | injected upstream |
//! |---|---|---|
//! | `tracecontext` | `traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`, `tracestate: congo=t61rcWkgMzE` | `traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-S-01`, `tracestate` unchanged |
//! | `b3` | `b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90` | `b3: 80f198ee56343ba864fe8b2a57d3eff7-S-1` (no parent field), `traceparent: 00-80f198ee56343ba864fe8b2a57d3eff7-S-01` |
//! | `b3` 64-bit | `b3: a3ce929d0e0e4736-00f067aa0ba902b7-1` | `b3: a3ce929d0e0e4736-S-1` (width kept), `traceparent: 00-0000000000000000a3ce929d0e0e4736-S-01` |
//! | `b3` debug | `b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d` | `b3: 80f198ee56343ba864fe8b2a57d3eff7-S-d`, `traceparent: ...-S-01` |
//! | `b3` deny only | `b3: 0` | a new trace (random id), not sampled: `b3: T-S-0`, `traceparent: 00-T-S-02` |
//! | `b3multi` | `x-b3-traceid: 463ac35c9f6413ad48485a3953bb6124`, `x-b3-spanid: 0020000000000001`, `x-b3-sampled: 1` | `x-b3-traceid` same, `x-b3-spanid: S`, `x-b3-sampled: 1`, `x-b3-parentspanid` removed, `traceparent: 00-463ac35c9f6413ad48485a3953bb6124-S-01` |
//! | `b3multi` debug | the above with `x-b3-flags: 1` | `x-b3-flags: 1`, `x-b3-sampled` removed |
//! | `l5d` | `l5d-ctx-trace: vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=` (sampling unknown: the proxy decides, sampled) | `l5d-ctx-trace`: 32 bytes span=`S` parent=`bd82828f2f2d08d2` trace=`f2fd78005d756b0e` flags=6, `l5d-reqid: f2fd78005d756b0e`, `traceparent: 00-0000000000000000f2fd78005d756b0e-S-01`; span attribute `linkerd.request_id` from an incoming `l5d-reqid` |
//! | `xray` | `x-amzn-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Self=1-67891234-12456789abcdef012345678` | `x-amzn-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=S;Sampled=1;Self=1-67891234-12456789abcdef012345678`, `traceparent: 00-5759e988bd862e3fe1be46a994272793-S-01` |
//! | `xray` from a load balancer | `x-amzn-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793` | the trace continues without a parent span (root span), sampled: `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=S;Sampled=1`, `traceparent: 00-5759e988bd862e3fe1be46a994272793-S-01` |
//! | `gcp` | `x-cloud-trace-context: 105445aa7843bc8bf206b12000100000/1;o=1` | `x-cloud-trace-context: 105445aa7843bc8bf206b12000100000/<S as decimal>;o=1`, `traceparent: 00-105445aa7843bc8bf206b12000100000-S-01` |
//! | `grpc-trace-bin` | `grpc-trace-bin: AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=` (padded or not) | `grpc-trace-bin` re-encoded with span `S`, same padding, `traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-S-01` |
//! | `baggage` | `baggage: userId=Am%C3%A9lie,serverNode=DF%2028` | unchanged; over 64 members or 8192 bytes, or with members breaking the grammar, whole members are dropped (counted) and the rest re-sent; span attribute `baggage.userId` = `Amélie` only if `userId` is in `baggage.attribute_keys` |
//! | malformed | `traceparent: 00-4BF9...` (uppercase) | counted in `SpanStart::malformed`, the next format is tried, else a new trace |
//! | two formats | valid `traceparent` and a different `b3` | the first configured format wins; `b3` is removed upstream |
//!
//! With `propagators.trust_incoming = false` every row starts a new trace instead (the incoming
//! context becomes a span link), still written in the arrival format.

pub mod b3;
pub mod baggage;
pub mod config;
pub mod context;
pub mod counters;
pub mod gcp;
pub mod grpc_trace_bin;
pub mod inject;
pub mod l5d;
pub mod ot;
pub mod tracecontext;
pub mod xray;

use crate::headers::RequestHeaders;
use crate::ids::{SpanId, TraceId};

/// W3C trace-flags bit 0: the caller recorded (sampled) this trace.
pub const FLAG_SAMPLED: u8 = 0x01;
/// W3C Level 2 trace-flags bit 1: the trace id's right-most 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;

/// The remote span context a request arrived with, in format-neutral form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace id.
    pub trace_id: TraceId,
    /// The caller's span id: the parent of the span we create. [`SpanId::INVALID`] only when a
    /// format names a trace without a parent span (an X-Ray `Root` alone, as load balancers send).
    pub span_id: SpanId,
    /// W3C trace flags (only the bits we know; unknown bits are zeroed on the way out).
    pub flags: u8,
}

impl SpanContext {
    /// Whether the caller sampled this trace.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// A caller's sampling decision as the richer formats express it: B3's "sampling state". W3C has
/// only the sampled bit; debug and "you decide" live here so they never leak into the W3C flag
/// byte. The sampler's own outcome is `sampling::SamplingResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SamplingState {
    /// Sampled.
    Accept,
    /// Not sampled.
    Deny,
    /// Sampled and flagged for debugging (B3 `d` / `X-B3-Flags: 1`, Finagle's debug bit).
    Debug,
    /// No decision: the receiver decides (B3 without a state, X-Ray `?`, Finagle unknown).
    #[default]
    Defer,
}

impl SamplingState {
    /// The W3C sampled bit this decision implies; a deferred decision is not (yet) sampled.
    pub fn flags(self) -> u8 {
        match self {
            SamplingState::Accept | SamplingState::Debug => FLAG_SAMPLED,
            SamplingState::Deny | SamplingState::Defer => 0,
        }
    }
}

/// Every propagator (trace-context wire format) meshtrace knows, by its `OTEL_PROPAGATORS` name
/// where one exists. Each has a module here that extracts and injects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Propagator {
    /// W3C Trace Context: `traceparent` and `tracestate`.
    TraceContext,
    /// W3C Baggage: `baggage`.
    Baggage,
    /// Zipkin B3, one header: `b3`.
    B3,
    /// Zipkin B3, several headers: `X-B3-*`.
    B3Multi,
    /// Linkerd 1 / Finagle: `l5d-ctx-trace` (and `l5d-reqid`).
    L5d,
    /// AWS X-Ray: `X-Amzn-Trace-Id`.
    XRay,
    /// Google Cloud: `X-Cloud-Trace-Context`.
    Gcp,
    /// OpenCensus binary, base64: `grpc-trace-bin`.
    GrpcTraceBin,
}

impl Propagator {
    /// All formats, in the default extraction order (baggage carries no span context).
    pub const ALL: [Propagator; 8] = [
        Propagator::TraceContext,
        Propagator::Baggage,
        Propagator::B3,
        Propagator::B3Multi,
        Propagator::L5d,
        Propagator::XRay,
        Propagator::Gcp,
        Propagator::GrpcTraceBin,
    ];

    /// The formats that carry a span context (all but baggage), in the default extraction
    /// order and the order of their `malformed` counters.
    pub const CONTEXTS: [Propagator; 7] = {
        let mut out = [Propagator::TraceContext; 7];
        let (mut i, mut o) = (0, 0);
        while i < Self::ALL.len() {
            if !matches!(Self::ALL[i], Propagator::Baggage) {
                out[o] = Self::ALL[i];
                o += 1;
            }
            i += 1;
        }
        out
    };
    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Propagator::TraceContext => "tracecontext",
            Propagator::Baggage => "baggage",
            Propagator::B3 => "b3",
            Propagator::B3Multi => "b3multi",
            Propagator::L5d => "l5d",
            Propagator::XRay => "xray",
            Propagator::Gcp => "gcp",
            Propagator::GrpcTraceBin => "grpc-trace-bin",
        }
    }

    /// Looks a configuration name up.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// False only for baggage, which travels beside a trace context rather than being one.
    pub fn carries_context(self) -> bool {
        self != Propagator::Baggage
    }

    /// The bit for this format in a per-format mask such as [`Extraction::malformed`].
    pub fn bit(self) -> u16 {
        1 << self as usize
    }
}

/// What a format yielded for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The format's headers are absent.
    Absent,
    /// Present but malformed: counted, then the next format is tried.
    Malformed,
    /// A valid context.
    Valid(T),
}

impl<T> Parsed<T> {
    /// Converts the valid value, keeping absent and malformed as they are.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Absent => Parsed::Absent,
            Parsed::Malformed => Parsed::Malformed,
            Parsed::Valid(v) => Parsed::Valid(f(v)),
        }
    }
}

/// What re-injecting in the arrival format must remember about how the caller wrote it, so a
/// service gets back the dialect it sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect<'a> {
    /// Nothing beyond the context (W3C, GCP).
    #[default]
    Plain,
    /// B3 (single or multi): `narrow` when the trace id came as 64 bits.
    B3 {
        /// The trace id came as 16 hex digits.
        narrow: bool,
    },
    /// Linkerd 1: `narrow` for the 32-byte layout (64-bit trace id).
    L5d {
        /// The 32-byte layout.
        narrow: bool,
    },
    /// X-Ray: the incoming header, whose extra fields (`Self`, `Lineage`, ...) are kept.
    XRay {
        /// The whole incoming header value.
        header: &'a [u8],
    },
    /// `grpc-trace-bin`: whether the base64 came padded.
    GrpcTraceBin {
        /// The base64 ended in `=` padding.
        padded: bool,
    },
}

/// The context chosen for a request and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// The caller's span context.
    pub ctx: SpanContext,
    /// The format it arrived in.
    pub format: Propagator,
    /// The combined, validated `tracestate` to forward (W3C only).
    pub tracestate: tracecontext::TraceState<'a>,
    /// The caller's decision; `ctx.flags` carries only its sampled bit.
    pub sampling: SamplingState,
    /// How the caller wrote it.
    pub dialect: Dialect<'a>,
}

impl<'a> Incoming<'a> {
    /// An incoming context without tracestate.
    pub fn new(
        ctx: SpanContext,
        format: Propagator,
        sampling: SamplingState,
        dialect: Dialect<'a>,
    ) -> Self {
        Self {
            ctx,
            format,
            tracestate: tracecontext::TraceState::default(),
            sampling,
            dialect,
        }
    }
}

/// Outcome of extraction over the configured formats.
#[derive(Clone, Debug, Default)]
pub struct Extraction<'a> {
    /// The context chosen: the first valid one in the configured order.
    pub incoming: Option<Incoming<'a>>,
    /// Bit per [`Propagator`] (see [`Propagator::bit`]) whose header was present but malformed.
    pub malformed: u16,
    /// A B3 header (single or multi) that carried only a sampling state (`b3: 0`): no context,
    /// but a decision for the trace that starts here, and its format as the arrival format.
    pub sampling_only: Option<(Propagator, SamplingState)>,
}

/// Tries each configured format in order; the first valid context wins.
pub fn extract<'a>(headers: &RequestHeaders<'a>, order: &[Propagator]) -> Extraction<'a> {
    let mut out = Extraction::default();
    for &format in order {
        let parsed = match format {
            Propagator::TraceContext => tracecontext::extract(headers).map(|e| {
                // A dropped `tracestate` is a malformed header even though the context holds.
                if e.tracestate_dropped {
                    out.malformed |= format.bit();
                }
                Incoming {
                    tracestate: e.tracestate,
                    ..Incoming::new(
                        e.ctx,
                        format,
                        SamplingState::from_w3c(e.ctx.flags),
                        Dialect::Plain,
                    )
                }
            }),
            Propagator::Baggage => Parsed::Absent,
            other => extract_other(other, headers, &mut out.sampling_only),
        };
        match parsed {
            Parsed::Absent => {}
            Parsed::Malformed => out.malformed |= format.bit(),
            Parsed::Valid(incoming) => {
                out.incoming = Some(incoming);
                return out;
            }
        }
    }
    out
}

/// The parsers of the formats besides W3C Trace Context, kept out of line: inlined into
/// [`extract`], their work was scheduled around the common W3C path and paid by every request.
#[inline(never)]
fn extract_other<'a>(
    format: Propagator,
    headers: &RequestHeaders<'a>,
    sampling_only: &mut Option<(Propagator, SamplingState)>,
) -> Parsed<Incoming<'a>> {
    match format {
        Propagator::B3 => b3::extract_single(headers, sampling_only),
        Propagator::B3Multi => b3::extract_multi(headers, sampling_only),
        Propagator::L5d => l5d::extract(headers),
        Propagator::XRay => xray::extract(headers),
        Propagator::Gcp => gcp::extract(headers),
        Propagator::GrpcTraceBin => grpc_trace_bin::extract(headers),
        // Read by [`extract`] itself.
        Propagator::TraceContext | Propagator::Baggage => Parsed::Absent,
    }
}

impl SamplingState {
    /// The decision a W3C sampled bit states: W3C has no way to defer or to flag debug.
    pub fn from_w3c(flags: u8) -> Self {
        if flags & FLAG_SAMPLED != 0 {
            SamplingState::Accept
        } else {
            SamplingState::Deny
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::headers;

    #[test]
    fn first_valid_wins_and_malformed_are_counted() {
        let pairs = [
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
            ("b3", "not-a-b3"),
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "0020000000000001"),
            ("x-b3-sampled", "0"),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/1;o=1",
            ),
        ];
        let e = extract(&headers(&pairs), &Propagator::CONTEXTS);
        let inc = e.incoming.unwrap();
        assert_eq!(inc.format, Propagator::B3Multi);
        assert_eq!(
            inc.ctx.trace_id.to_string(),
            "463ac35c9f6413ad48485a3953bb6124"
        );
        assert_eq!(inc.ctx.span_id.to_string(), "0020000000000001");
        assert_eq!(inc.sampling, SamplingState::Deny);
        assert_eq!(
            e.malformed,
            Propagator::TraceContext.bit() | Propagator::B3.bit()
        );
    }

    #[test]
    fn order_is_the_configured_one() {
        let pairs = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/1;o=1",
            ),
        ];
        let e = extract(
            &headers(&pairs),
            &[Propagator::Gcp, Propagator::TraceContext],
        );
        assert_eq!(e.incoming.unwrap().format, Propagator::Gcp);
        let e = extract(&headers(&pairs), &[Propagator::B3]);
        assert!(e.incoming.is_none());
        assert_eq!(e.malformed, 0);
    }

    #[test]
    fn sampling_only_b3_is_not_a_context() {
        let pairs = [("b3", "0")];
        let e = extract(&headers(&pairs), &Propagator::CONTEXTS);
        assert!(e.incoming.is_none());
        assert_eq!(e.sampling_only, Some((Propagator::B3, SamplingState::Deny)));
        assert_eq!(e.malformed, 0);
    }

    #[test]
    fn names_round_trip() {
        for f in Propagator::ALL {
            assert_eq!(Propagator::from_name(f.name()), Some(f));
        }
        assert_eq!(Propagator::from_name("b4"), None);
        assert!(!Propagator::Baggage.carries_context());
    }
}
