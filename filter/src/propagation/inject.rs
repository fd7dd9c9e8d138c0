//! Stage 4, inject: the headers the upstream receives, written for this hop's span.
//!
//! Every configured inject format is written, and so is the format the request arrived in, so
//! a service keeps receiving the format it speaks. Headers of other known context formats the
//! request carried are removed: they name the caller's span, never ours, so the upstream would
//! see two contradicting parents. Each format's writer sits beside its parser in the format's
//! own module; this module owns the header buffer and the loop over formats.

use smallvec::SmallVec;

use super::context::SpanStart;
use super::{b3, baggage, gcp, grpc_trace_bin, l5d, tracecontext, xray, Propagator};
use crate::headers::RequestHeaders;

/// Headers to write upstream: set each of [`Injection::headers`] (replacing any old value),
/// remove each of `remove`. Values live in one reused buffer, so a warm injection allocates
/// nothing.
#[derive(Clone, Debug, Default)]
pub struct Injection {
    buf: Vec<u8>,
    set: SmallVec<[(&'static str, core::ops::Range<usize>); 8]>,
    /// Header names to remove from the request.
    pub remove: SmallVec<[&'static str; 8]>,
}

impl Injection {
    /// Empties the injection, keeping its capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.set.clear();
        self.remove.clear();
    }

    /// Sets header `name` to what `write` appends.
    pub(crate) fn put(&mut self, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        write(&mut self.buf);
        self.set.push((name, start..self.buf.len()));
    }

    /// Takes back the last header set (a value that turned out empty).
    pub(crate) fn unset_last(&mut self) {
        self.set.pop();
    }

    /// The buffer and the set and remove lists, for a format that writes several headers at
    /// once (`X-B3-*`).
    #[allow(clippy::type_complexity)]
    pub(crate) fn parts(
        &mut self,
    ) -> (
        &mut Vec<u8>,
        &mut SmallVec<[(&'static str, core::ops::Range<usize>); 8]>,
        &mut SmallVec<[&'static str; 8]>,
    ) {
        (&mut self.buf, &mut self.set, &mut self.remove)
    }

    /// The headers to set, as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.set.iter().map(|(n, r)| (*n, &self.buf[r.clone()]))
    }

    /// The value that will be set for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Fills `out` with the headers the upstream must receive: every format of `always` (a bit per
/// [`Propagator::bit`]) and the arrival format, written for the new span; headers of the other
/// formats in `known` that the request carried are removed.
pub fn inject(
    s: &SpanStart<'_>,
    h: &RequestHeaders<'_>,
    always: u16,
    known: u16,
    out: &mut Injection,
) {
    out.clear();
    let written = always | s.arrival.map_or(0, Propagator::bit);
    // Only the formats with something to do, lowest bit (the `ALL` order) first: those written,
    // and those to remove that the request carried.
    let mut todo = written | (known & carried(h));
    while let Some(&format) = Propagator::ALL.get(todo.trailing_zeros() as usize) {
        todo &= todo - 1;
        if written & format.bit() != 0 {
            match format {
                Propagator::TraceContext => tracecontext::inject(s, h, out),
                Propagator::Baggage => baggage::inject(s, out),
                other => inject_other(other, s, h, out),
            }
        } else if known & format.bit() != 0 {
            remove(format, h, out);
        }
    }
}

/// The writers of the formats besides the default pair (`tracecontext`, `baggage`), kept out of
/// line: inlined into [`inject`], their shared work (the ids in hex, in several widths) was
/// hoisted ahead of the branches and paid by every request, whichever formats it wrote.
#[inline(never)]
fn inject_other(
    format: Propagator,
    s: &SpanStart<'_>,
    h: &RequestHeaders<'_>,
    out: &mut Injection,
) {
    match format {
        Propagator::TraceContext => tracecontext::inject(s, h, out),
        Propagator::Baggage => baggage::inject(s, out),
        Propagator::B3 => b3::inject_single(s, out),
        Propagator::B3Multi => b3::inject_multi(s, h, out),
        Propagator::L5d => l5d::inject(s, out),
        Propagator::XRay => xray::inject(s, out),
        Propagator::Gcp => gcp::inject(s, out),
        Propagator::GrpcTraceBin => grpc_trace_bin::inject(s, out),
    }
}

// [`inject`] finds a format from its bit: `ALL` lists the formats in bit order.
const _: () = {
    let mut i = 0;
    while i < Propagator::ALL.len() {
        assert!(Propagator::ALL[i] as usize == i);
        i += 1;
    }
};

/// The formats (a [`Propagator::bit`] each) with a header on the request: those [`remove`]
/// has something to remove for.
fn carried(h: &RequestHeaders<'_>) -> u16 {
    let bit = |present: bool, f: Propagator| if present { f.bit() } else { 0 };
    let b3_multi = b3::multi_presence(h).contains(&true);
    bit(
        h.traceparent.is_some() || !h.tracestate.is_empty(),
        Propagator::TraceContext,
    ) | bit(!h.baggage.is_empty(), Propagator::Baggage)
        | bit(h.b3.is_some(), Propagator::B3)
        | bit(b3_multi, Propagator::B3Multi)
        | bit(h.l5d_ctx_trace.is_some(), Propagator::L5d)
        | bit(h.x_amzn_trace_id.is_some(), Propagator::XRay)
        | bit(h.x_cloud_trace_context.is_some(), Propagator::Gcp)
        | bit(h.grpc_trace_bin.is_some(), Propagator::GrpcTraceBin)
}

/// Queues the removal of every header of `f` the request carried.
fn remove(f: Propagator, h: &RequestHeaders<'_>, out: &mut Injection) {
    let mut drop_if = |present: bool, name: &'static str| {
        if present {
            out.remove.push(name);
        }
    };
    match f {
        Propagator::TraceContext => {
            drop_if(h.traceparent.is_some(), tracecontext::TRACEPARENT);
            drop_if(!h.tracestate.is_empty(), tracecontext::TRACESTATE);
        }
        Propagator::Baggage => drop_if(!h.baggage.is_empty(), baggage::HEADER),
        Propagator::B3 => drop_if(h.b3.is_some(), b3::SINGLE),
        Propagator::B3Multi => {
            for (name, present) in b3::MULTI.into_iter().zip(b3::multi_presence(h)) {
                drop_if(present, name);
            }
        }
        // `l5d-reqid` names a request for log correlation, not a parent span: it stays.
        Propagator::L5d => drop_if(h.l5d_ctx_trace.is_some(), l5d::CTX_TRACE),
        Propagator::XRay => drop_if(h.x_amzn_trace_id.is_some(), xray::HEADER),
        Propagator::Gcp => drop_if(h.x_cloud_trace_context.is_some(), gcp::HEADER),
        Propagator::GrpcTraceBin => drop_if(h.grpc_trace_bin.is_some(), grpc_trace_bin::HEADER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `carried` names exactly the formats `remove` finds something of, for every mix of
    /// context headers on a request.
    #[test]
    fn carried_is_what_remove_finds() {
        const NAMES: [&str; 12] = [
            "traceparent",
            "tracestate",
            "baggage",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
            "x-b3-flags",
            "l5d-ctx-trace",
            "x-amzn-trace-id",
            "x-cloud-trace-context",
        ];
        let extra = ["grpc-trace-bin", "l5d-reqid"];
        for mask in 0u32..1 << (NAMES.len() + extra.len()) {
            let pairs: Vec<(&[u8], &[u8])> = NAMES
                .iter()
                .chain(&extra)
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, n)| (n.as_bytes(), &b"x"[..]))
                .collect();
            let h = RequestHeaders::from_pairs(pairs);
            let c = carried(&h);
            for f in Propagator::ALL {
                let mut out = Injection::default();
                remove(f, &h, &mut out);
                assert_eq!(c & f.bit() != 0, !out.remove.is_empty(), "{f:?} {mask:b}");
            }
        }
    }
}
