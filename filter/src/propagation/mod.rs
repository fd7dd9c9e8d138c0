//! Trace-context propagation: the span context every format maps to, and the formats themselves.
//!
//! Each wire format lives in its own module with a parse and a serialize; this module holds what
//! they share and the ordered extraction over the configured formats.

pub mod tracecontext;

use crate::headers::RequestHeaders;
use crate::ids::{SpanId, TraceId};

/// W3C trace-flags bit 0: the caller recorded (sampled) this trace.
pub const FLAG_SAMPLED: u8 = 0x01;
/// W3C Level 2 trace-flags bit 1: the trace id's right-most 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;

/// The remote span context a request arrived with, in format-neutral form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    /// The caller's span id: the parent of the span we create.
    pub span_id: SpanId,
    /// W3C trace flags (only the bits we know; unknown bits are zeroed on the way out).
    pub flags: u8,
}

impl SpanContext {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// Every propagation format meshtrace knows, by its `OTEL_PROPAGATORS` name where one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    TraceContext,
    Baggage,
    B3,
    B3Multi,
    L5d,
    XRay,
    Gcp,
    GrpcTraceBin,
}

impl Format {
    /// All formats, in the default extraction order (baggage carries no span context).
    pub const ALL: [Format; 8] = [
        Format::TraceContext,
        Format::Baggage,
        Format::B3,
        Format::B3Multi,
        Format::L5d,
        Format::XRay,
        Format::Gcp,
        Format::GrpcTraceBin,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Format::TraceContext => "tracecontext",
            Format::Baggage => "baggage",
            Format::B3 => "b3",
            Format::B3Multi => "b3multi",
            Format::L5d => "l5d",
            Format::XRay => "xray",
            Format::Gcp => "gcp",
            Format::GrpcTraceBin => "grpc-trace-bin",
        }
    }

    /// Looks a configuration name up.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
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

/// The context chosen for a request and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming<'a> {
    pub ctx: SpanContext,
    pub format: Format,
    /// The combined, validated `tracestate` to forward (W3C only).
    pub tracestate: tracecontext::TraceState<'a>,
}

/// Outcome of extraction over the configured formats.
#[derive(Clone, Debug, Default)]
pub struct Extraction<'a> {
    pub incoming: Option<Incoming<'a>>,
    /// Bit per [`Format`] (by `as usize`) whose header was present but malformed.
    pub malformed: u16,
}

/// Tries each configured format in order; the first valid context wins.
pub fn extract<'a>(headers: &RequestHeaders<'a>, order: &[Format]) -> Extraction<'a> {
    let mut out = Extraction::default();
    for &format in order {
        let parsed = match format {
            Format::TraceContext => tracecontext::extract(headers),
            // The other formats arrive with their own modules.
            _ => Parsed::Absent,
        };
        match parsed {
            Parsed::Absent => {}
            Parsed::Malformed => out.malformed |= 1 << format as usize,
            Parsed::Valid((ctx, tracestate)) => {
                out.incoming = Some(Incoming {
                    ctx,
                    format,
                    tracestate,
                });
                return out;
            }
        }
    }
    out
}
