//! OpenTelemetry's `ot` entry of the W3C `tracestate`: the sampling threshold `th` and the
//! explicit randomness `rv` of consistent probability sampling (OTel "TraceState: Probability
//! Sampling"), read from and written back into the list this hop forwards.
//!
//! The sampler decides; this module only speaks the entry's wire form.

use crate::propagation::tracecontext::TraceState;

/// Writes a threshold as `th`'s value: 14 hex digits with trailing zeros removed (`0` for 100%).
pub fn write_th(t: u64, out: &mut Vec<u8>) {
    let (digits, len) = th_digits(t);
    out.extend_from_slice(&digits[..len]);
}

/// `th`'s digits on the stack, and how many of them to use.
fn th_digits(t: u64) -> ([u8; 14], usize) {
    let mut digits = [0u8; 14];
    crate::hex::encode_lower(&t.to_be_bytes()[1..], &mut digits);
    let len = digits.iter().rposition(|&d| d != b'0').map_or(1, |i| i + 1);
    (digits, len)
}

/// Parses `th`'s value (1–14 lowercase hex digits, right-padded with zeros).
pub fn parse_th(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 14 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v << (4 * (14 - s.len())))
}

/// `rv`: exactly 14 lowercase hex digits.
fn parse_rv(s: &[u8]) -> Option<u64> {
    (s.len() == 14).then(|| parse_th(s)).flatten()
}

/// The OpenTelemetry `ot` entry of a `tracestate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtEntry<'a> {
    /// The whole value (`th:c;rv:...`).
    pub value: &'a [u8],
    /// The rejection threshold `th`, as a 56-bit value.
    pub th: Option<u64>,
    /// The explicit randomness `rv`, as a 56-bit value.
    pub rv: Option<u64>,
}

impl<'a> OtEntry<'a> {
    /// Finds and parses the `ot` member.
    pub fn find(ts: &TraceState<'a>) -> Option<Self> {
        let value = ts.members().find_map(|m| m.strip_prefix(b"ot="))?;
        let mut e = Self {
            value,
            ..Self::default()
        };
        for sub in value.split(|&b| b == b';') {
            if let Some(v) = sub.strip_prefix(b"th:") {
                e.th = parse_th(v);
            } else if let Some(v) = sub.strip_prefix(b"rv:") {
                e.rv = parse_rv(v);
            }
        }
        Some(e)
    }
}

/// How this hop changes the `ot` entry of the `tracestate` it forwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtUpdate {
    /// Forward the incoming `tracestate` as it is.
    #[default]
    Forward,
    /// Set `th` (a sampled root).
    Set(u64),
    /// Remove `th`: the parent's threshold contradicts its sampled flag, so the probability is
    /// unknown.
    EraseTh,
}

/// Writes the `tracestate` this hop sends, applying `update`. A modified `ot` entry moves to the
/// front (W3C's rule for mutated keys); the other members keep their order, and the list stays
/// within 32 members by dropping from the right.
pub fn write_tracestate(ts: &TraceState<'_>, update: OtUpdate, out: &mut Vec<u8>) {
    let mut ot: smallvec::SmallVec<[u8; 64]> = smallvec::SmallVec::new();
    match update {
        // Forwarding (the common case) needs no look at the `ot` entry.
        OtUpdate::Forward => return ts.write_to(out),
        OtUpdate::Set(t) => {
            ot.extend_from_slice(b"th:");
            let (digits, len) = th_digits(t);
            ot.extend_from_slice(&digits[..len]);
        }
        OtUpdate::EraseTh => {}
    }
    let old = OtEntry::find(ts);
    if let Some(old) = &old {
        for sub in old.value.split(|&b| b == b';') {
            if sub.is_empty() || sub.starts_with(b"th:") {
                continue;
            }
            if !ot.is_empty() {
                ot.push(b';');
            }
            ot.extend_from_slice(sub);
        }
        if *old.value == *ot {
            return ts.write_to(out);
        }
    }
    let mut written = 0usize;
    if !ot.is_empty() {
        out.extend_from_slice(b"ot=");
        out.extend_from_slice(&ot);
        written = 1;
    }
    for m in ts.members().filter(|m| !m.starts_with(b"ot=")) {
        if written == 32 {
            break;
        }
        if written > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
        written += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::tracecontext::parse_tracestate;

    #[test]
    fn th_round_trips() {
        for s in [
            "0",
            "8",
            "c",
            "fd70a",
            "ffbe77",
            "fffffffffffff",
            "00000000000001",
        ] {
            let mut out = Vec::new();
            write_th(parse_th(s.as_bytes()).unwrap(), &mut out);
            let canonical = match s.trim_end_matches('0') {
                "" => "0",
                t => t,
            };
            assert_eq!(String::from_utf8(out).unwrap(), canonical);
        }
        assert_eq!(parse_th(b"c"), Some(0xc0000000000000));
        assert_eq!(parse_th(b""), None);
        assert_eq!(parse_th(b"C"), None);
        assert_eq!(parse_th(b"000000000000000"), None);
        assert_eq!(parse_rv(b"7479cfb506891d"), Some(0x7479cfb506891d));
        assert_eq!(parse_rv(b"7479cfb50689"), None);
    }

    fn rewrite(ts: &[u8], update: OtUpdate) -> String {
        let ts = parse_tracestate(&[ts]).unwrap();
        let mut out = Vec::new();
        write_tracestate(&ts, update, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tracestate_rewrites_move_ot_left() {
        assert_eq!(rewrite(b"", OtUpdate::Set(0)), "ot=th:0");
        assert_eq!(
            rewrite(
                b"congo=t61,ot=rv:7479cfb506891d;th:8",
                OtUpdate::Set(0xc0000000000000)
            ),
            "ot=th:c;rv:7479cfb506891d,congo=t61"
        );
        assert_eq!(
            rewrite(b"congo=t61,ot=th:8;rv:7479cfb506891d", OtUpdate::EraseTh),
            "ot=rv:7479cfb506891d,congo=t61"
        );
        assert_eq!(
            rewrite(b"congo=t61,ot=th:8", OtUpdate::EraseTh),
            "congo=t61"
        );
        // Unchanged values keep their place.
        assert_eq!(
            rewrite(b"congo=t61,ot=th:8", OtUpdate::Set(0x80000000000000)),
            "congo=t61,ot=th:8"
        );
        // Forwarding sends the fields as they came.
        assert_eq!(
            rewrite(b"congo=t61, rojo=1", OtUpdate::Forward),
            "congo=t61, rojo=1"
        );
        // Adding a member to a full list drops the right-most one.
        let full: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let out = rewrite(full.join(",").as_bytes(), OtUpdate::Set(0));
        assert_eq!(out.split(',').count(), 32);
        assert!(out.starts_with("ot=th:0,k0=v,"));
        assert!(out.ends_with(",k30=v"));
    }
}

#[cfg(test)]
mod never_panic {
    use super::*;
    use crate::propagation::tracecontext::parse_tracestate;
    use proptest::prelude::*;

    proptest! {
        /// Any valid incoming `tracestate`, any update: the result is a valid `tracestate` of at
        /// most 32 members with at most one `ot` entry.
        #[test]
        fn rewritten_tracestate_stays_valid(
            members in proptest::collection::vec("[a-z][a-z0-9]{0,5}=[a-zA-Z0-9:;._-]{1,12}", 0..40),
            th in proptest::option::of(0u64..(1 << 56)),
            erase in any::<bool>(),
        ) {
            let joined = members.join(",");
            let Some(ts) = parse_tracestate(&[joined.as_bytes()]) else { return Ok(()) };
            let update = match (th, erase) {
                (Some(t), _) => OtUpdate::Set(t),
                (None, true) => OtUpdate::EraseTh,
                (None, false) => OtUpdate::Forward,
            };
            let mut out = Vec::new();
            write_tracestate(&ts, update, &mut out);
            if out.is_empty() {
                return Ok(());
            }
            let fields = [&out[..]];
            let back = parse_tracestate(&fields);
            prop_assert!(back.is_some(), "{}", String::from_utf8_lossy(&out));
            let back = back.unwrap();
            prop_assert!(back.members().count() <= 32);
            if update != OtUpdate::Forward {
                prop_assert!(back.members().filter(|m| m.starts_with(b"ot=")).count() <= 1);
            }
            if let OtUpdate::Set(t) = update {
                prop_assert_eq!(OtEntry::find(&back).and_then(|e| e.th), Some(t));
            }
        }
    }
}
