//! The per-VM aggregator: a bounded table of series, each a request counter and a duration
//! histogram, keyed by small integers so that recording hashes one `u64` and allocates
//! nothing once its series exists.
//!
//! A series' dimensions are ids, not text: the method's index in
//! [`crate::span::http::KNOWN_METHODS`], the index of the configured `routes` template, the
//! index of the `traffic` rule that named the release. [`super::encode::Labels`] turns them
//! back into text at export time, from the same configuration.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::span::grpc;
use crate::span::SpanKind;

/// Explicit histogram bounds; there is one bucket more than bounds.
pub const BOUNDS: usize = 16;

/// The method part of a series' name.
pub mod method {
    /// A method the HTTP semantic conventions do not know: the name is `HTTP`.
    pub const OTHER: u8 = 10;
    /// A gRPC call: the name is `grpc`.
    pub const GRPC: u8 = 11;
}

/// The release part of a series' key.
pub mod release {
    /// No release known.
    pub const NONE: u8 = 0;
    /// The workload's own version label (SERVER series without a matching rule).
    pub const WORKLOAD: u8 = 255;
    /// Traffic rule `i` named it.
    pub const fn rule(i: usize) -> u8 {
        i as u8 + 1
    }
}

/// A series' name: `{method} {route}` or `{method}`, as ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameKey {
    /// Index into `KNOWN_METHODS`, or [`method::OTHER`] / [`method::GRPC`].
    pub method: u8,
    /// `0`: no route; `i + 1`: configured template `i`.
    pub route: u16,
}

/// One finished request, as the aggregator counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Its name.
    pub name: NameKey,
    /// SERVER or CLIENT.
    pub kind: SpanKind,
    /// The span's status would be ERROR.
    pub error: bool,
    /// See [`release`].
    pub release: u8,
    /// `response.code`; `None` or 0 when no response was sent.
    pub http_status: Option<i64>,
    /// A gRPC call's status, as the span has it.
    pub grpc: Option<grpc::Code>,
    /// Its duration, nanoseconds.
    pub duration_ns: u64,
}

/// A series' dimensions unpacked from its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// See [`NameKey`].
    pub name: NameKey,
    /// SERVER or CLIENT.
    pub kind: SpanKind,
    /// `status.code` is ERROR.
    pub error: bool,
    /// See [`release`].
    pub release: u8,
    /// `1` … `5` for `1xx` … `5xx`; `0` none.
    pub status_class: u8,
    /// A gRPC status code, if the call had one.
    pub grpc: Option<grpc::Code>,
}

const NO_GRPC: u64 = 0xff;

impl Call {
    /// The series key: every dimension packed into 44 bits.
    pub fn key(&self) -> u64 {
        let class = match self.http_status {
            Some(c @ 100..=599) => (c / 100) as u64,
            _ => 0,
        };
        let grpc = self.grpc.map_or(NO_GRPC, |c| u64::from(c.value()));
        u64::from(self.name.method)
            | u64::from(self.name.route) << 4
            | (self.kind as u64 & 3) << 20
            | u64::from(self.error) << 22
            | u64::from(self.release) << 23
            | class << 31
            | grpc << 34
    }
}

impl Dims {
    /// Unpacks [`Call::key`].
    pub fn of(key: u64) -> Self {
        let grpc = (key >> 34) & 0xff;
        Self {
            name: NameKey {
                method: (key & 0xf) as u8,
                route: (key >> 4) as u16,
            },
            kind: match (key >> 20) & 3 {
                3 => SpanKind::Client,
                1 => SpanKind::Internal,
                _ => SpanKind::Server,
            },
            error: (key >> 22) & 1 == 1,
            release: (key >> 23) as u8,
            status_class: ((key >> 31) & 7) as u8,
            grpc: (grpc != NO_GRPC)
                .then(|| grpc::Code::from_u8(grpc as u8))
                .flatten(),
        }
    }
}

/// One series' interval: a counter and a histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    /// Requests.
    pub count: u64,
    /// Sum of durations, ns.
    pub sum_ns: u64,
    /// Smallest duration, ns.
    pub min_ns: u64,
    /// Largest duration, ns.
    pub max_ns: u64,
    /// Bucket `i` counts durations in `(bounds[i-1], bounds[i]]`; the last one above all.
    pub buckets: [u64; BOUNDS + 1],
}

impl Default for Series {
    fn default() -> Self {
        Self {
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            buckets: [0; BOUNDS + 1],
        }
    }
}

impl Series {
    #[inline]
    fn add(&mut self, bucket: usize, duration_ns: u64) {
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(duration_ns);
        self.min_ns = self.min_ns.min(duration_ns);
        self.max_ns = self.max_ns.max(duration_ns);
        self.buckets[bucket.min(BOUNDS)] += 1;
    }
}

/// The bucket of `v` among ascending `bounds`: how many bounds are below it, so a value equal
/// to a bound falls in that bound's bucket (upper-inclusive, as OTLP defines explicit
/// buckets). A binary search in four fixed halvings and a last compare, which compile to
/// conditional moves: five compares instead of sixteen. Measured (`make bench`,
/// `histogram_bucket`) against counting all sixteen and against an SSE2 kernel on
/// whole-millisecond bounds, both slower; so there is no `simd` kernel for it.
#[inline]
pub fn bucket(bounds: &[u64; BOUNDS], v: u64) -> usize {
    let mut i = 0;
    for step in [8, 4, 2, 1] {
        if bounds[i + step - 1] < v {
            i += step;
        }
    }
    i + usize::from(bounds[i] < v)
}

/// splitmix64's finalizer: keys differ in a few bits anywhere, and the table takes its index
/// from the low bits and its tag from the high ones, so every bit must reach both.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The series of one interval, at most `max_series` plus the overflow series.
#[derive(Debug)]
pub struct Red {
    bounds_ns: [u64; BOUNDS],
    index: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    series: Vec<(u64, Series)>,
    overflow: Series,
    max_series: usize,
    /// Requests recorded into the overflow series since the VM started.
    pub overflowed: u64,
    /// The interval's start, ns since the epoch.
    pub start_ns: u64,
}

/// Series the table makes room for up front; it grows (then keeps its capacity) up to
/// `max_series`.
const INITIAL_SERIES: usize = 64;

impl Red {
    /// An empty table with the given bounds (ascending, ns), starting its first interval at
    /// `start_ns`.
    pub fn new(bounds_ns: [u64; BOUNDS], max_series: usize, start_ns: u64) -> Self {
        let initial = max_series.min(INITIAL_SERIES);
        Self {
            bounds_ns,
            index: HashMap::with_capacity_and_hasher(initial, Default::default()),
            series: Vec::with_capacity(initial),
            overflow: Series::default(),
            max_series,
            overflowed: 0,
            start_ns,
        }
    }

    /// The bounds, ns.
    pub fn bounds_ns(&self) -> &[u64; BOUNDS] {
        &self.bounds_ns
    }

    /// Counts one request. Allocates only when it opens a series beyond the capacity reached
    /// in an earlier interval.
    #[inline]
    pub fn record(&mut self, c: &Call) {
        let b = bucket(&self.bounds_ns, c.duration_ns);
        let key = c.key();
        let series = match self.index.get(&key) {
            Some(&i) => &mut self.series[i as usize].1,
            None if self.series.len() < self.max_series => {
                self.index.insert(key, self.series.len() as u32);
                self.series.push((key, Series::default()));
                // Just pushed: the vector is not empty.
                let last = self.series.len() - 1;
                &mut self.series[last].1
            }
            None => {
                self.overflowed += 1;
                &mut self.overflow
            }
        };
        series.add(b, c.duration_ns);
    }

    /// The interval's series and their keys ([`Dims::of`]), in the order they opened.
    pub fn series(&self) -> &[(u64, Series)] {
        &self.series
    }

    /// The overflow series, when any request went to it this interval.
    pub fn overflow(&self) -> Option<&Series> {
        (self.overflow.count > 0).then_some(&self.overflow)
    }

    /// Nothing was recorded this interval.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.overflow.count == 0
    }

    /// Ends the interval at `end_ns`: the table empties (keeping its capacity) and the next
    /// interval starts where this one ended.
    pub fn reset(&mut self, end_ns: u64) {
        self.index.clear();
        self.series.clear();
        self.overflow = Series::default();
        self.start_ns = end_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn bounds() -> [u64; BOUNDS] {
        crate::metrics::DEFAULT_BOUNDS_MS.map(|b| b * MS)
    }

    fn call(release: u8, status: i64, ms: u64) -> Call {
        Call {
            name: NameKey {
                method: 0,
                route: 1,
            },
            kind: SpanKind::Client,
            error: status >= 400,
            release,
            http_status: Some(status),
            grpc: None,
            duration_ns: ms * MS,
        }
    }

    #[test]
    fn buckets_are_upper_inclusive_at_every_bound() {
        let b = bounds();
        assert_eq!(bucket(&b, 0), 0);
        for (i, bound) in b.iter().enumerate() {
            assert_eq!(bucket(&b, *bound), i, "exactly {bound} ns");
            assert_eq!(bucket(&b, bound + 1), i + 1, "just above {bound} ns");
            assert_eq!(bucket(&b, bound - 1), i, "just below {bound} ns");
        }
        assert_eq!(bucket(&b, u64::MAX), BOUNDS);
    }

    proptest::proptest! {
        /// The halving search agrees with counting the bounds below the value, for any
        /// ascending bounds.
        #[test]
        fn bucket_is_the_count_of_bounds_below(
            mut b in proptest::array::uniform16(0u64..50_000_000_000),
            v in 0u64..60_000_000_000,
        ) {
            b.sort_unstable();
            let count = b.iter().filter(|&&x| x < v).count();
            proptest::prop_assert_eq!(bucket(&b, v), count);
            proptest::prop_assert_eq!(bucket(&b, b[7]), b.iter().filter(|&&x| x < b[7]).count());
        }
    }

    #[test]
    fn keys_round_trip_every_dimension() {
        for kind in [SpanKind::Server, SpanKind::Client] {
            for grpc in [None, Some(grpc::Code::OK), grpc::Code::from_u8(16)] {
                let c = Call {
                    name: NameKey {
                        method: method::GRPC,
                        route: 65535,
                    },
                    kind,
                    error: true,
                    release: release::WORKLOAD,
                    http_status: Some(503),
                    grpc,
                    duration_ns: 1,
                };
                let d = Dims::of(c.key());
                assert_eq!(d.name, c.name);
                assert_eq!(d.kind, kind);
                assert!(d.error);
                assert_eq!(d.release, release::WORKLOAD);
                assert_eq!(d.status_class, 5);
                assert_eq!(d.grpc, grpc);
            }
        }
        let none = Call {
            http_status: None,
            ..call(0, 200, 1)
        };
        assert_eq!(Dims::of(none.key()).status_class, 0);
        assert_eq!(Dims::of(call(0, 204, 1).key()).status_class, 2);
    }

    #[test]
    fn aggregates_count_sum_min_max_and_buckets_per_series() {
        let mut red = Red::new(bounds(), 10, 5);
        for ms in [1, 2, 3, 15000, 20000] {
            red.record(&call(release::rule(0), 200, ms));
        }
        red.record(&call(release::rule(1), 500, 7));
        assert_eq!(red.series().len(), 2);
        let (key, s) = red.series()[0];
        assert_eq!(Dims::of(key).release, 1);
        assert_eq!(s.count, 5);
        assert_eq!(s.sum_ns, (1 + 2 + 3 + 15000 + 20000) * MS);
        assert_eq!((s.min_ns, s.max_ns), (MS, 20000 * MS));
        let mut want = [0u64; BOUNDS + 1];
        want[0] = 2; // 1 ms and exactly 2 ms
        want[1] = 1; // 3 ms
        want[15] = 1; // exactly 15000 ms
        want[16] = 1; // above every bound
        assert_eq!(s.buckets, want);
        assert_eq!(s.buckets.iter().sum::<u64>(), s.count);
        let (key, s) = red.series()[1];
        assert!(Dims::of(key).error);
        assert_eq!(s.count, 1);
        assert_eq!(s.buckets[3], 1); // (6, 8]
    }

    #[test]
    fn series_beyond_the_limit_go_to_the_overflow_series() {
        let mut red = Red::new(bounds(), 2, 0);
        for r in 1..=5 {
            red.record(&call(r, 200, 1));
            red.record(&call(r, 200, 1));
        }
        assert_eq!(red.series().len(), 2);
        assert_eq!(red.series().iter().map(|(_, s)| s.count).sum::<u64>(), 4);
        assert_eq!(red.overflow().map(|s| s.count), Some(6));
        assert_eq!(red.overflowed, 6);
        // Known series keep counting into themselves when the table is full.
        red.record(&call(1, 200, 1));
        assert_eq!(red.series()[0].1.count, 3);
        assert_eq!(red.overflowed, 6);
    }

    #[test]
    fn reset_starts_the_next_interval_where_this_one_ended() {
        let mut red = Red::new(bounds(), 2, 100);
        red.record(&call(1, 200, 1));
        red.record(&call(2, 200, 1));
        red.record(&call(3, 200, 1));
        assert_eq!(red.start_ns, 100);
        red.reset(250);
        assert!(red.is_empty());
        assert!(red.overflow().is_none());
        assert_eq!(red.start_ns, 250);
        // The limit applies per interval: a new combination gets a series again.
        red.record(&call(3, 200, 1));
        assert_eq!(red.series().len(), 1);
        assert!(red.overflow().is_none());
    }
}
