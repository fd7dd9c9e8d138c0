//! The trust policy: what extraction found becomes the context this hop's span starts with.
//!
//! A trusted caller's context is continued (its sampling decision too, unless it deferred); an
//! untrusted one (`propagators.trust_incoming: false`, an internet edge) starts a new trace and
//! becomes a span link, so clients cannot force sampling. A B3 header carrying only a sampling
//! state decides for the trace that starts here. Linkerd 1's `l5d-sample` rate, when trusted,
//! overrides the decision.

use super::baggage::Baggage;
use super::ot::{self, OtUpdate};
use super::{
    extract, l5d, Dialect, Extraction, Incoming, Propagator, SamplingState, SpanContext,
    FLAG_RANDOM, FLAG_SAMPLED,
};
use crate::headers::RequestHeaders;
use crate::ids::{IdGenerator, SpanId, TraceId};

/// How one request's span starts: its context, its parent, and what the request carried.
///
/// Built by [`start`] from what extraction found and how far the caller is trusted; the
/// sampler then settles `flags`' sampled bit, `record` and `ot` (`Tracer::sample`).
#[derive(Clone, Debug, Default)]
pub struct SpanStart<'a> {
    /// The trace this span belongs to: the caller's, or a new one.
    pub trace_id: TraceId,
    /// The id of the span this proxy creates; sent upstream as the parent.
    pub span_id: SpanId,
    /// The caller's span id, when a context was continued.
    pub parent: Option<SpanId>,
    /// W3C flags for this span's context.
    pub flags: u8,
    /// The incoming context, when one was continued.
    pub incoming: Option<Incoming<'a>>,
    /// Formats whose headers were malformed (bit per `Propagator as usize`).
    pub malformed: u16,
    /// The format the request's context arrived in, continued or not: always written back, so
    /// a service keeps receiving the format it speaks.
    pub arrival: Option<Propagator>,
    /// How the arrival format was written (B3 width, X-Ray extra fields, base64 padding).
    pub dialect: Dialect<'a>,
    /// B3 / Finagle debug: sampled, and written as debug where a format can say so. Never in
    /// `flags`, whose bit 1 W3C Level 2 uses for "random".
    pub debug: bool,
    /// An incoming context not continued (`propagators.trust_incoming` false): a span link.
    pub link: Option<SpanContext>,
    /// The request's baggage and what forwarding it within the limits drops.
    pub baggage: Baggage<'a>,
    /// Whether this hop makes the sampling decision (a new trace, or a caller that deferred):
    /// `Tracer::sample` then applies the root sampler instead of following the caller.
    pub ours: bool,
    /// Whether this hop records its span now (set by `Tracer::sample`).
    pub record: bool,
    /// How the forwarded `tracestate`'s `ot` entry changes (set by `Tracer::sample`).
    pub ot: OtUpdate,
}

impl SpanStart<'_> {
    /// Whether the span's context is sampled (W3C flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The formats whose headers were present but malformed, for per-format counters.
    pub fn malformed_formats(&self) -> impl Iterator<Item = Propagator> {
        let mask = self.malformed;
        Propagator::ALL
            .into_iter()
            .filter(move |f| mask & f.bit() != 0)
    }

    /// The decision as the richer formats spell it.
    pub fn sampling_state(&self) -> SamplingState {
        match (self.sampled(), self.debug) {
            (true, true) => SamplingState::Debug,
            (true, false) => SamplingState::Accept,
            (false, _) => SamplingState::Deny,
        }
    }

    /// Whether the caller sent a 64-bit trace id in a format that keeps that width (B3, l5d).
    pub fn narrow(&self) -> bool {
        matches!(
            self.dialect,
            Dialect::B3 { narrow: true } | Dialect::L5d { narrow: true }
        )
    }

    /// The identifiers a span for this decision carries, detached from the headers.
    pub fn ids(&self) -> SpanIds {
        SpanIds {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            flags: self.flags,
        }
    }

    /// Appends the `tracestate` this hop sends (and records on its span).
    pub fn write_tracestate(&self, out: &mut Vec<u8>) {
        match &self.incoming {
            Some(i) => ot::write_tracestate(&i.tracestate, self.ot, out),
            None => ot::write_tracestate(&Default::default(), self.ot, out),
        }
    }
}

/// A span's identifiers without the borrowed headers: what an unsampled request keeps in case
/// the always-keep rules export it at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanIds {
    /// The trace id.
    pub trace_id: TraceId,
    /// This span's id.
    pub span_id: SpanId,
    /// The parent span's id; `None` for a root.
    pub parent: Option<SpanId>,
    /// W3C trace flags.
    pub flags: u8,
}

/// How far incoming contexts are trusted (`propagators.trust_incoming`, `trust_l5d_sample`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trust {
    /// Continue incoming contexts; false starts a new trace and links the incoming one.
    pub incoming: bool,
    /// Honour Linkerd 1's `l5d-sample` rate as a sampling override.
    pub l5d_sample: bool,
}

/// A provisional "yes" for a decision that is ours (`SpanStart::ours`): the sampler replaces it
/// with the configured root sampler's result.
const ROOT_SAMPLED: bool = true;

/// Extracts the incoming context over `order` and decides: continue it, or start a new trace.
/// New ids come from `ids`.
pub fn start<'a>(
    headers: &RequestHeaders<'a>,
    order: &[Propagator],
    trust: Trust,
    ids: &mut IdGenerator,
) -> SpanStart<'a> {
    let Extraction {
        incoming,
        malformed,
        sampling_only,
    } = extract(headers, order);
    let span_id = ids.span_id();
    let trusted = trust.incoming;
    let arrival = incoming
        .as_ref()
        .map(|i| i.format)
        .or(sampling_only.map(|(f, _)| f));
    let dialect = match (&incoming, sampling_only) {
        (Some(inc), _) => inc.dialect,
        (None, Some(_)) => Dialect::B3 { narrow: false },
        (None, None) => Dialect::Plain,
    };
    let baggage = Baggage::parse(&headers.baggage);
    let mut d = match incoming {
        Some(inc) if trusted => {
            let (sampled, debug) = resolve(inc.sampling);
            SpanStart {
                record: sampled,
                ours: inc.sampling == SamplingState::Defer,
                ot: OtUpdate::Forward,
                trace_id: inc.ctx.trace_id,
                span_id,
                parent: Some(inc.ctx.span_id).filter(SpanId::is_valid),
                // The random bit describes the trace id, which is kept, so it is kept too.
                flags: (inc.ctx.flags & FLAG_RANDOM) | if sampled { FLAG_SAMPLED } else { 0 },
                incoming: Some(inc),
                malformed,
                arrival,
                dialect,
                debug,
                link: None,
                baggage,
            }
        }
        untrusted => {
            // Only a trusted caller may decide for a trace that starts here.
            let hint = sampling_only.filter(|_| trusted).map(|(_, s)| s);
            let hint = hint.unwrap_or_default();
            let (sampled, debug) = resolve(hint);
            SpanStart {
                record: sampled,
                ours: hint == SamplingState::Defer,
                ot: OtUpdate::Forward,
                trace_id: ids.trace_id(),
                span_id,
                parent: None,
                // Every id byte is random.
                flags: FLAG_RANDOM | if sampled { FLAG_SAMPLED } else { 0 },
                incoming: None,
                malformed,
                arrival,
                dialect,
                debug,
                link: untrusted.map(|i| i.ctx).filter(|c| c.span_id.is_valid()),
                baggage,
            }
        }
    };
    if trust.l5d_sample {
        apply_l5d_sample(headers, &mut d);
    }
    d
}

/// A caller's decision as (sampled, debug); a deferred one is ours to take.
fn resolve(s: SamplingState) -> (bool, bool) {
    match s {
        SamplingState::Accept => (true, false),
        SamplingState::Deny => (false, false),
        SamplingState::Debug => (true, true),
        SamplingState::Defer => (ROOT_SAMPLED, false),
    }
}

/// Linkerd 1's `l5d-sample` rate overrides the decision, when configured to trust it.
fn apply_l5d_sample(h: &RequestHeaders<'_>, d: &mut SpanStart<'_>) {
    let Some(rate) = h.l5d_sample.and_then(l5d::parse_sample_rate) else {
        return;
    };
    // The caller's rate decides, not the root sampler.
    d.ours = false;
    if l5d::sample_by_rate(&d.trace_id, rate) {
        d.flags |= FLAG_SAMPLED;
    } else {
        d.flags &= !FLAG_SAMPLED;
        d.debug = false;
    }
}
