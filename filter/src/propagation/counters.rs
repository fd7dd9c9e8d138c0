//! Per-format propagation counters, accumulated in the VM and pushed as metrics by the adapter.
//!
//! Malformed headers never fail a request, so these counters are the only way an operator
//! learns that a client sends broken `b3` or oversized baggage.

use super::baggage::BaggageStats;
use super::Propagator;

/// Metric names, in the order of [`Counters::values`].
pub const NAMES: [&str; 12] = [
    "meshtrace.propagation.malformed.tracecontext",
    "meshtrace.propagation.malformed.b3",
    "meshtrace.propagation.malformed.b3multi",
    "meshtrace.propagation.malformed.l5d",
    "meshtrace.propagation.malformed.xray",
    "meshtrace.propagation.malformed.gcp",
    "meshtrace.propagation.malformed.grpc-trace-bin",
    "meshtrace.propagation.untrusted_linked",
    "meshtrace.baggage.rewritten",
    "meshtrace.baggage.members_dropped.malformed",
    "meshtrace.baggage.members_dropped.over_limit",
    "meshtrace.baggage.members_forwarded",
];

/// Running totals since the VM started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    values: [u64; NAMES.len()],
}

impl Counters {
    /// Adds one request: the formats found malformed (a [`Propagator::bit`] mask), its baggage
    /// outcome, and whether an untrusted context was turned into a link.
    pub fn record(&mut self, malformed: u16, baggage: &BaggageStats, linked: bool) {
        for (i, f) in Propagator::CONTEXTS.iter().enumerate() {
            if malformed & f.bit() != 0 {
                self.values[i] += 1;
            }
        }
        let dropped = baggage.malformed as u64 + baggage.over_limit as u64;
        let base = Propagator::CONTEXTS.len();
        self.values[base] += linked as u64;
        self.values[base + 1] += (dropped > 0) as u64;
        self.values[base + 2] += baggage.malformed as u64;
        self.values[base + 3] += baggage.over_limit as u64;
        self.values[base + 4] += baggage.kept as u64;
    }

    /// `(name, total)` pairs, in [`NAMES`] order.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        NAMES.iter().copied().zip(self.values.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_format_and_baggage() {
        let mut c = Counters::default();
        let stats = BaggageStats {
            kept: 64,
            malformed: 2,
            over_limit: 3,
        };
        c.record(
            Propagator::B3.bit() | Propagator::GrpcTraceBin.bit(),
            &stats,
            true,
        );
        c.record(Propagator::B3.bit(), &BaggageStats::default(), false);
        let v: Vec<(&str, u64)> = c.values().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            v,
            [
                ("meshtrace.propagation.malformed.b3", 2),
                ("meshtrace.propagation.malformed.grpc-trace-bin", 1),
                ("meshtrace.propagation.untrusted_linked", 1),
                ("meshtrace.baggage.rewritten", 1),
                ("meshtrace.baggage.members_dropped.malformed", 2),
                ("meshtrace.baggage.members_dropped.over_limit", 3),
                ("meshtrace.baggage.members_forwarded", 64),
            ]
        );
        for (name, f) in NAMES.iter().zip(Propagator::CONTEXTS) {
            assert!(name.ends_with(f.name()));
        }
    }
}
