//! The sampling decision: parent-based, with a consistent-probability root sampler, a per-worker
//! rate limit, and "always keep" rules that export errors, faults and slow requests the head
//! decision skipped.
//!
//! Consistent probability sampling follows OpenTelemetry's tracestate rules: a trace is sampled
//! when its 56 random bits (the trace id's right-most 7 bytes, or an explicit `ot=rv:`) are at
//! least the rejection threshold `(1 - ratio) * 2^56`, and a sampled root writes that threshold
//! as `ot=th:<hex>` so every later hop knows the probability it was sampled with. Because the
//! comparison uses the trace's own randomness, a 1% sidecar and a 10% gateway agree on a superset.
//! A root sampling everything writes no `th:0`: an unmarked span already counts as one.
//!
//! "Always keep" never changes what is sent downstream: the caller's trace stays unsampled; only
//! this hop's span is exported, marked `mesh.sampling.kept_by`.

use serde::Deserialize;

use crate::error::ConfigError;
use crate::ids::TraceId;
use crate::propagation::ot::{OtEntry, OtUpdate};
use crate::propagation::tracecontext::TraceState;

/// `sampling` in the configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Root sampling probability in [0, 1] (typical: gateway 1.0, sidecars 0.01).
    pub ratio: f64,
    /// Spans this worker may start per second (a token bucket); `None` is unlimited.
    pub max_per_second: Option<f64>,
    /// What to export even when the head decision was no.
    pub always_keep: Vec<KeepReason>,
    /// "slow" means a request that took longer than this.
    pub slow_ms: u64,
}
crate::config::section::object_section!(SamplingConfig);

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            max_per_second: None,
            always_keep: Vec::new(),
            slow_ms: 0,
        }
    }
}

/// Why an unsampled span was exported anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepReason {
    /// A 5xx response, or a gRPC call whose status is an error for its span kind.
    Error,
    /// An injected fault (abort or delay).
    Fault,
    /// Slower than `sampling.slow_ms`.
    Slow,
}

impl KeepReason {
    /// The value of `mesh.sampling.kept_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Error => "error",
            KeepReason::Fault => "fault",
            KeepReason::Slow => "slow",
        }
    }
}

impl SamplingConfig {
    /// Checks the ranges and that `slow_ms` is set exactly when `slow` is kept.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(ConfigError::new(
                "sampling.ratio",
                format!("must be between 0 and 1, got {}", self.ratio),
            ));
        }
        if let Some(r) = self.max_per_second {
            if !(r.is_finite() && r > 0.0) {
                return Err(ConfigError::new(
                    "sampling.max_per_second",
                    format!("must be a positive number when set, got {r}"),
                ));
            }
        }
        let slow = self.always_keep.contains(&KeepReason::Slow);
        if slow && self.slow_ms == 0 {
            return Err(ConfigError::new(
                "sampling.slow_ms",
                "must be at least 1 when sampling.always_keep contains \"slow\"",
            ));
        }
        if !slow && self.slow_ms > 0 {
            return Err(ConfigError::new(
                "sampling.slow_ms",
                format!(
                    "is only used when sampling.always_keep contains \"slow\", got {}",
                    self.slow_ms
                ),
            ));
        }
        Ok(())
    }
}

/// 2^56: the size of the randomness space.
const SPACE: u64 = 1 << 56;
/// Significant hex digits a threshold keeps (the OpenTelemetry recommendation).
const PRECISION: u32 = 4;

/// The rejection threshold for `ratio`, rounded to four significant hex digits of the
/// probability; `None` when nothing is sampled.
pub fn threshold(ratio: f64) -> Option<u64> {
    if ratio.is_nan() || ratio <= 0.0 {
        return None;
    }
    if ratio >= 1.0 {
        return Some(0);
    }
    // The adjusted count `ratio * 2^56` is rounded, not the threshold itself, so the precision
    // follows the probability's significant digits (its leading zeros are the threshold's `f`s).
    let adjusted = ratio * SPACE as f64;
    let mut leading_zeros = 0u32;
    while leading_zeros < 13 && adjusted < 16f64.powi(13 - leading_zeros as i32) {
        leading_zeros += 1;
    }
    let digits = (leading_zeros + PRECISION).min(14);
    let unit = 16f64.powi(14 - digits as i32);
    let rounded = ((adjusted / unit).round() * unit).clamp(1.0, SPACE as f64) as u64;
    Some(SPACE - rounded)
}

/// The 56 random bits of a trace: an explicit `rv`, else the trace id's right-most 7 bytes.
pub fn randomness(trace_id: &TraceId, ot: Option<&OtEntry<'_>>) -> u64 {
    ot.and_then(|e| e.rv)
        .unwrap_or(trace_id.low_u64() & (SPACE - 1))
}

/// A token bucket refilled by the caller's clock: `rate` tokens a second, holding at most one
/// second's worth (and at least one token).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    rate_per_ns: f64,
    capacity: f64,
    tokens: f64,
    last_ns: Option<u64>,
}

impl TokenBucket {
    /// A full bucket refilled at `per_second` tokens a second.
    pub fn new(per_second: f64) -> Self {
        let capacity = per_second.max(1.0);
        Self {
            rate_per_ns: per_second / 1e9,
            capacity,
            tokens: capacity,
            last_ns: None,
        }
    }

    /// Takes one token if there is one. A clock that goes backwards refills nothing.
    pub fn try_take(&mut self, now_ns: u64) -> bool {
        if let Some(last) = self.last_ns {
            let elapsed = now_ns.saturating_sub(last) as f64;
            self.tokens = (self.tokens + elapsed * self.rate_per_ns).min(self.capacity);
        }
        self.last_ns = Some(self.last_ns.map_or(now_ns, |l| l.max(now_ns)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The "always keep" rules, compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlwaysKeep {
    /// Keep 5xx responses.
    pub errors: bool,
    /// Keep requests with an injected fault.
    pub faults: bool,
    /// 0 = off.
    pub slow_ns: u64,
}

impl AlwaysKeep {
    /// True when an unsampled request may still be kept, so it needs a (cheap) record.
    pub fn enabled(&self) -> bool {
        self.errors || self.faults || self.slow_ns > 0
    }

    /// Whether to keep a span the head decision skipped, and why. `status` is the response
    /// code (`None` when none was sent: usually the caller went away, which is not a server
    /// error), `fault` whether a fault was injected.
    pub fn check(
        &self,
        status: Option<i64>,
        fault: bool,
        duration_ns: Option<u64>,
    ) -> Option<KeepReason> {
        self.check_error(is_keep_error(status), fault, duration_ns)
    }

    /// [`AlwaysKeep::check`] with the error already judged (a gRPC call's status decides
    /// whether it failed, not its HTTP code).
    pub fn check_error(
        &self,
        error: bool,
        fault: bool,
        duration_ns: Option<u64>,
    ) -> Option<KeepReason> {
        if self.faults && fault {
            return Some(KeepReason::Fault);
        }
        if self.errors && error {
            return Some(KeepReason::Error);
        }
        if self.slow_ns > 0 && duration_ns.is_some_and(|d| d > self.slow_ns) {
            return Some(KeepReason::Slow);
        }
        None
    }
}

/// Whether an HTTP response counts as an error for `always_keep: error`: a 5xx (`None` when no
/// response was sent: usually the caller went away, which is not a server error).
pub fn is_keep_error(status: Option<i64>) -> bool {
    status.is_some_and(|c| c >= 500)
}

/// The sampler's result for one request, OpenTelemetry's `SamplingResult`.
///
/// `sampled` and `record` together are the spec's `SamplingDecision`: both true is
/// `RECORD_AND_SAMPLE`, both false `DROP`. A sampled parent past the rate limit gives `sampled`
/// without `record`: the trace stays sampled downstream, this hop exports nothing. `ot` is the
/// `tracestate` change the sampler asks for, the spec's returned `Tracestate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplingResult {
    /// The sampled flag this hop propagates.
    pub sampled: bool,
    /// Whether this hop records and exports its span now.
    pub record: bool,
    /// How the forwarded `tracestate`'s `ot` entry changes.
    pub ot: OtUpdate,
}

/// Per-worker sampling state.
#[derive(Clone, Debug)]
pub struct Sampler {
    threshold: Option<u64>,
    bucket: Option<TokenBucket>,
    /// The always-keep rules, applied at the end of unsampled requests.
    pub keep: AlwaysKeep,
}

impl Sampler {
    /// The sampler `c` describes (validated by [`SamplingConfig::validate`]).
    pub fn new(c: &SamplingConfig) -> Self {
        let has = |r| c.always_keep.contains(&r);
        Self {
            threshold: threshold(c.ratio),
            bucket: c.max_per_second.map(TokenBucket::new),
            keep: AlwaysKeep {
                errors: has(KeepReason::Error),
                faults: has(KeepReason::Fault),
                slow_ns: if has(KeepReason::Slow) {
                    c.slow_ms.saturating_mul(1_000_000)
                } else {
                    0
                },
            },
        }
    }

    /// Decides for a request. `parent` is the remote parent's flags and `tracestate` when the
    /// request continues a trace; `None` makes this hop the root. `now` (nanoseconds) is called
    /// only when the rate limit is consulted, so an unsampled request reads no clock.
    ///
    /// A sampled parent is followed even past the rate limit (breaking the caller's trace
    /// would cost every later hop), but this hop then does not record; a root past the limit
    /// is simply not sampled.
    pub fn decide(
        &mut self,
        trace_id: &TraceId,
        parent: Option<(bool, &TraceState<'_>)>,
        now: impl FnOnce() -> u64,
    ) -> SamplingResult {
        match parent {
            Some((sampled, ts)) => {
                let ot = OtEntry::find(ts);
                let r = randomness(trace_id, ot.as_ref());
                let update = match ot.and_then(|e| e.th) {
                    Some(th) if sampled != (r >= th) => OtUpdate::EraseTh,
                    _ => OtUpdate::Forward,
                };
                SamplingResult {
                    sampled,
                    record: sampled && self.take(now),
                    ot: update,
                }
            }
            None => {
                let wins = self.threshold.filter(|&t| randomness(trace_id, None) >= t);
                match wins {
                    Some(t) if self.take(now) => SamplingResult {
                        sampled: true,
                        record: true,
                        // At 100% the threshold says nothing a backend would not assume, and
                        // writing it would cost every request a header write (a host call).
                        ot: if t == 0 {
                            OtUpdate::Forward
                        } else {
                            OtUpdate::Set(t)
                        },
                    },
                    _ => SamplingResult {
                        sampled: false,
                        record: false,
                        ot: OtUpdate::Forward,
                    },
                }
            }
        }
    }

    /// Takes a rate-limit token (always granted without a limit). Spans kept by the
    /// always-keep rules take one too: an outage must not flood the collector either.
    pub fn take(&mut self, now: impl FnOnce() -> u64) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.try_take(now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IdGenerator;
    use crate::propagation::ot::write_th;
    use crate::propagation::tracecontext::parse_tracestate;

    fn th_str(ratio: f64) -> String {
        let mut out = Vec::new();
        write_th(threshold(ratio).unwrap(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn thresholds_match_the_spec_table() {
        assert_eq!(th_str(1.0), "0");
        assert_eq!(th_str(0.5), "8");
        assert_eq!(th_str(0.25), "c");
        assert_eq!(th_str(0.125), "e");
        assert_eq!(th_str(0.1), "e666");
        assert_eq!(th_str(0.0625), "f");
        assert_eq!(th_str(0.01), "fd70a");
        assert_eq!(th_str(0.001), "ffbe77");
        assert_eq!(threshold(0.0), None);
        assert_eq!(threshold(f64::NAN), None);
        // The smallest probability still samples the largest randomness value.
        assert_eq!(threshold(1e-30), Some(SPACE - 1));
    }

    /// 100,000 root decisions over random trace ids sample the configured fraction within 1%.
    #[test]
    fn root_ratio_holds_over_100k_decisions() {
        for ratio in [1.0, 0.5, 0.25, 0.1, 0.01] {
            let mut s = Sampler::new(&SamplingConfig {
                ratio,
                ..Default::default()
            });
            let mut ids = IdGenerator::from_seed(42);
            let n = 100_000;
            let sampled = (0..n)
                .filter(|_| s.decide(&ids.trace_id(), None, || 0).sampled)
                .count();
            let fraction = sampled as f64 / n as f64;
            // Within one percentage point, and within four standard deviations of a binomial
            // draw (the ids are random, so the tighter bound is statistical, not exact).
            let sd = (ratio * (1.0 - ratio) / n as f64).sqrt();
            assert!(
                (fraction - ratio).abs() <= 0.01 && (fraction - ratio).abs() <= 4.0 * sd + 1e-9,
                "ratio {ratio}: sampled {fraction}"
            );
        }
    }

    /// Randomness spread evenly over its 56-bit space isolates the threshold arithmetic: the
    /// sampled fraction is the ratio to within 1% of itself (the 4-digit rounding is far finer).
    #[test]
    fn threshold_arithmetic_is_exact_to_one_percent() {
        for ratio in [0.9, 0.5, 0.3, 0.1, 0.05, 0.01, 0.001] {
            let mut s = Sampler::new(&SamplingConfig {
                ratio,
                ..Default::default()
            });
            let n = 100_000u64;
            let step = SPACE / n;
            let sampled = (0..n)
                .filter(|i| {
                    s.decide(&TraceId::from_u64s(1, i * step + step / 2), None, || 0)
                        .sampled
                })
                .count();
            let fraction = sampled as f64 / n as f64;
            assert!(
                (fraction - ratio).abs() <= 0.01 * ratio,
                "ratio {ratio}: sampled {fraction}"
            );
        }
    }

    #[test]
    fn decisions_are_consistent_across_ratios() {
        // Whatever a 1% hop samples, a 10% hop samples too: the same randomness, a lower bar.
        let mut low = Sampler::new(&SamplingConfig {
            ratio: 0.01,
            ..Default::default()
        });
        let mut high = Sampler::new(&SamplingConfig {
            ratio: 0.1,
            ..Default::default()
        });
        let mut ids = IdGenerator::from_seed(7);
        for _ in 0..20_000 {
            let id = ids.trace_id();
            if low.decide(&id, None, || 0).sampled {
                assert!(high.decide(&id, None, || 0).sampled);
            }
        }
    }

    #[test]
    fn root_compares_the_low_56_bits_with_the_threshold() {
        let mut s = Sampler::new(&SamplingConfig {
            ratio: 0.25,
            ..Default::default()
        });
        // The top byte of the low half is not randomness: it must not matter.
        let at = TraceId::from_u64s(0, 0xffc0000000000000);
        let below = TraceId::from_u64s(u64::MAX, 0xffbfffffffffffff);
        let v = s.decide(&at, None, || 0);
        assert_eq!(
            v,
            SamplingResult {
                sampled: true,
                record: true,
                ot: OtUpdate::Set(0xc0000000000000)
            }
        );
        assert!(!s.decide(&below, None, || 0).sampled);
    }

    #[test]
    fn parent_decides_and_its_threshold_is_checked() {
        let mut s = Sampler::new(&SamplingConfig {
            ratio: 0.0,
            ..Default::default()
        });
        let id = TraceId::from_u64s(1, 0x00f0000000000000);
        let ts = parse_tracestate(&[b"ot=th:8;rv:f0000000000000,congo=t61"]).unwrap();
        // rv (0xf0...) >= th (0x80...): consistent with sampled.
        let v = s.decide(&id, Some((true, &ts)), || 0);
        assert_eq!(
            v,
            SamplingResult {
                sampled: true,
                record: true,
                ot: OtUpdate::Forward
            }
        );
        // The same threshold on an unsampled parent contradicts it: erase th.
        let v = s.decide(&id, Some((false, &ts)), || 0);
        assert_eq!(
            v,
            SamplingResult {
                sampled: false,
                record: false,
                ot: OtUpdate::EraseTh
            }
        );
        // Without rv the trace id's bits (0xf0...) are the randomness.
        let ts = parse_tracestate(&[b"ot=th:f8"]).unwrap();
        assert_eq!(s.decide(&id, Some((true, &ts)), || 0).ot, OtUpdate::EraseTh);
        let empty = TraceState::default();
        assert_eq!(
            s.decide(&id, Some((false, &empty)), || 0).ot,
            OtUpdate::Forward
        );
    }

    /// The bucket admits `rate` spans a second after its first second's burst, deterministically.
    #[test]
    fn rate_limit_holds() {
        let mut s = Sampler::new(&SamplingConfig {
            max_per_second: Some(100.0),
            ..Default::default()
        });
        let mut ids = IdGenerator::from_seed(1);
        // 10,000 requests a second for 10 seconds.
        let mut per_second = [0u32; 10];
        for i in 0..100_000u64 {
            let now = i * 100_000;
            if s.decide(&ids.trace_id(), None, || now).record {
                per_second[(now / 1_000_000_000) as usize] += 1;
            }
        }
        // The first second spends the burst (100) plus what refills while it is spent.
        assert!((100..=200).contains(&per_second[0]), "{per_second:?}");
        for n in &per_second[1..] {
            assert!((99..=101).contains(n), "{per_second:?}");
        }
        let total: u32 = per_second.iter().sum();
        assert!(total <= 100 * 10 + 100);
    }

    #[test]
    fn rate_limited_parent_is_followed_but_not_recorded() {
        let mut s = Sampler::new(&SamplingConfig {
            max_per_second: Some(1.0),
            ..Default::default()
        });
        let id = TraceId::from_u64s(1, 1);
        let ts = TraceState::default();
        assert!(s.decide(&id, Some((true, &ts)), || 0).record);
        let v = s.decide(&id, Some((true, &ts)), || 1);
        assert!(v.sampled && !v.record);
        // A root past the limit is not sampled at all.
        let v = s.decide(&id, None, || 2);
        assert!(!v.sampled && !v.record);
        // A second later there is a token again; a clock going back refills nothing.
        assert!(s.decide(&id, None, || 1_000_000_002).record);
        assert!(!s.decide(&id, None, || 5).record);
    }

    #[test]
    fn always_keep_rules() {
        let k = AlwaysKeep {
            errors: true,
            faults: true,
            slow_ns: 500_000_000,
        };
        assert!(k.enabled());
        assert_eq!(k.check(Some(200), false, Some(1)), None);
        assert_eq!(k.check(Some(503), false, Some(1)), Some(KeepReason::Error));
        assert_eq!(k.check(None, false, None), None);
        assert_eq!(k.check(Some(404), false, None), None);
        assert_eq!(k.check(Some(503), true, None), Some(KeepReason::Fault));
        assert_eq!(
            k.check(Some(200), false, Some(600_000_000)),
            Some(KeepReason::Slow)
        );
        assert_eq!(k.check(Some(200), false, Some(500_000_000)), None);
        assert!(!AlwaysKeep::default().enabled());
        assert_eq!(
            AlwaysKeep::default().check(Some(500), true, Some(u64::MAX)),
            None
        );
        let s = Sampler::new(&SamplingConfig {
            always_keep: vec![KeepReason::Slow],
            slow_ms: 250,
            ..Default::default()
        });
        assert_eq!(
            s.keep,
            AlwaysKeep {
                errors: false,
                faults: false,
                slow_ns: 250_000_000
            }
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = |c: SamplingConfig| c.validate().unwrap_err().to_string();
        assert_eq!(
            bad(SamplingConfig {
                ratio: 1.5,
                ..Default::default()
            }),
            "sampling.ratio: must be between 0 and 1, got 1.5"
        );
        assert_eq!(
            bad(SamplingConfig {
                max_per_second: Some(0.0),
                ..Default::default()
            }),
            "sampling.max_per_second: must be a positive number when set, got 0"
        );
        assert_eq!(
            bad(SamplingConfig {
                always_keep: vec![KeepReason::Slow],
                ..Default::default()
            }),
            "sampling.slow_ms: must be at least 1 when sampling.always_keep contains \"slow\""
        );
        assert_eq!(
            bad(SamplingConfig {
                slow_ms: 5,
                ..Default::default()
            }),
            "sampling.slow_ms: is only used when sampling.always_keep contains \"slow\", got 5"
        );
        assert!(SamplingConfig::default().validate().is_ok());
    }
}

#[cfg(test)]
mod never_panic {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn thresholds_are_monotonic(a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            match (threshold(lo), threshold(hi)) {
                (Some(tl), Some(th)) => prop_assert!(th <= tl),
                (None, _) => {}
                (Some(_), None) => prop_assert!(false),
            }
        }
    }
}
