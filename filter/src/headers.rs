//! The request headers the core looks at, found in one pass over whatever the adapter has.
//!
//! The adapter hands over borrowed `(name, value)` slices (from the proxy-wasm pairs buffer, or a
//! hyper `HeaderMap`); nothing is copied. Names are matched case-insensitively although Envoy and
//! hyper both lowercase them, because a third adapter may not.

use smallvec::SmallVec;

/// Longest header name we bother lowercasing; longer names are none of ours.
const MAX_NAME: usize = 64;

/// Borrowed slices of every request header the core may use.
#[derive(Debug, Default, Clone)]
pub struct RequestHeaders<'a> {
    pub method: Option<&'a [u8]>,
    pub path: Option<&'a [u8]>,
    pub authority: Option<&'a [u8]>,
    pub scheme: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub x_forwarded_for: Option<&'a [u8]>,
    pub x_forwarded_proto: Option<&'a [u8]>,
    pub x_request_id: Option<&'a [u8]>,
    /// The first `traceparent`; `traceparent_count` > 1 makes it invalid per W3C.
    pub traceparent: Option<&'a [u8]>,
    pub traceparent_count: u8,
    /// Every `tracestate` field, in order; W3C says to combine them with commas.
    pub tracestate: SmallVec<[&'a [u8]; 2]>,
    /// Every `baggage` field, in order.
    pub baggage: SmallVec<[&'a [u8]; 2]>,
    pub b3: Option<&'a [u8]>,
    pub x_b3_traceid: Option<&'a [u8]>,
    pub x_b3_spanid: Option<&'a [u8]>,
    pub x_b3_parentspanid: Option<&'a [u8]>,
    pub x_b3_sampled: Option<&'a [u8]>,
    pub x_b3_flags: Option<&'a [u8]>,
    pub l5d_ctx_trace: Option<&'a [u8]>,
    pub l5d_reqid: Option<&'a [u8]>,
    pub l5d_sample: Option<&'a [u8]>,
    pub x_amzn_trace_id: Option<&'a [u8]>,
    pub x_cloud_trace_context: Option<&'a [u8]>,
    pub grpc_trace_bin: Option<&'a [u8]>,
    pub x_envoy_attempt_count: Option<&'a [u8]>,
    pub x_envoy_fault_abort_request: Option<&'a [u8]>,
    pub x_envoy_fault_delay_request: Option<&'a [u8]>,
    pub cookie: Option<&'a [u8]>,
    /// How many header fields were seen (for limits and diagnostics).
    pub count: u32,
}

impl<'a> RequestHeaders<'a> {
    /// Indexes headers from any iterator of `(name, value)` pairs in one pass.
    pub fn from_pairs<I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut h = Self::default();
        for (name, value) in pairs {
            h.count = h.count.saturating_add(1);
            h.add(name, value);
        }
        h
    }

    /// Files one header under its known name, if it is one of ours.
    pub fn add(&mut self, name: &[u8], value: &'a [u8]) {
        // First value wins for single-valued headers (B3 says so; Envoy returns the first too).
        fn first<'v>(slot: &mut Option<&'v [u8]>, v: &'v [u8]) {
            if slot.is_none() {
                *slot = Some(v);
            }
        }
        let Some(field) = lookup(name) else { return };
        match field {
            Field::Method => first(&mut self.method, value),
            Field::Path => first(&mut self.path, value),
            Field::Authority => first(&mut self.authority, value),
            Field::Scheme => first(&mut self.scheme, value),
            Field::UserAgent => first(&mut self.user_agent, value),
            Field::XForwardedFor => first(&mut self.x_forwarded_for, value),
            Field::XForwardedProto => first(&mut self.x_forwarded_proto, value),
            Field::XRequestId => first(&mut self.x_request_id, value),
            Field::Traceparent => {
                first(&mut self.traceparent, value);
                self.traceparent_count = self.traceparent_count.saturating_add(1);
            }
            Field::Tracestate => push_capped(&mut self.tracestate, value),
            Field::Baggage => push_capped(&mut self.baggage, value),
            Field::B3 => first(&mut self.b3, value),
            Field::XB3TraceId => first(&mut self.x_b3_traceid, value),
            Field::XB3SpanId => first(&mut self.x_b3_spanid, value),
            Field::XB3ParentSpanId => first(&mut self.x_b3_parentspanid, value),
            Field::XB3Sampled => first(&mut self.x_b3_sampled, value),
            Field::XB3Flags => first(&mut self.x_b3_flags, value),
            Field::L5dCtxTrace => first(&mut self.l5d_ctx_trace, value),
            Field::L5dReqId => first(&mut self.l5d_reqid, value),
            Field::L5dSample => first(&mut self.l5d_sample, value),
            Field::XAmznTraceId => first(&mut self.x_amzn_trace_id, value),
            Field::XCloudTraceContext => first(&mut self.x_cloud_trace_context, value),
            Field::GrpcTraceBin => first(&mut self.grpc_trace_bin, value),
            Field::XEnvoyAttemptCount => first(&mut self.x_envoy_attempt_count, value),
            Field::XEnvoyFaultAbort => first(&mut self.x_envoy_fault_abort_request, value),
            Field::XEnvoyFaultDelay => first(&mut self.x_envoy_fault_delay_request, value),
            Field::Cookie => first(&mut self.cookie, value),
        }
    }
}

/// The header fields the core indexes (`host` files under `Authority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Method,
    Path,
    Authority,
    Scheme,
    UserAgent,
    XForwardedFor,
    XForwardedProto,
    XRequestId,
    Traceparent,
    Tracestate,
    Baggage,
    B3,
    XB3TraceId,
    XB3SpanId,
    XB3ParentSpanId,
    XB3Sampled,
    XB3Flags,
    L5dCtxTrace,
    L5dReqId,
    L5dSample,
    XAmznTraceId,
    XCloudTraceContext,
    GrpcTraceBin,
    XEnvoyAttemptCount,
    XEnvoyFaultAbort,
    XEnvoyFaultDelay,
    Cookie,
}

/// Every name we look for, lowercase, with its field.
const NAMES: [(&[u8], Field); 28] = [
    (b":method", Field::Method),
    (b":path", Field::Path),
    (b":authority", Field::Authority),
    (b"host", Field::Authority),
    (b":scheme", Field::Scheme),
    (b"user-agent", Field::UserAgent),
    (b"x-forwarded-for", Field::XForwardedFor),
    (b"x-forwarded-proto", Field::XForwardedProto),
    (b"x-request-id", Field::XRequestId),
    (b"traceparent", Field::Traceparent),
    (b"tracestate", Field::Tracestate),
    (b"baggage", Field::Baggage),
    (b"b3", Field::B3),
    (b"x-b3-traceid", Field::XB3TraceId),
    (b"x-b3-spanid", Field::XB3SpanId),
    (b"x-b3-parentspanid", Field::XB3ParentSpanId),
    (b"x-b3-sampled", Field::XB3Sampled),
    (b"x-b3-flags", Field::XB3Flags),
    (b"l5d-ctx-trace", Field::L5dCtxTrace),
    (b"l5d-reqid", Field::L5dReqId),
    (b"l5d-sample", Field::L5dSample),
    (b"x-amzn-trace-id", Field::XAmznTraceId),
    (b"x-cloud-trace-context", Field::XCloudTraceContext),
    (b"grpc-trace-bin", Field::GrpcTraceBin),
    (b"x-envoy-attempt-count", Field::XEnvoyAttemptCount),
    (b"x-envoy-fault-abort-request", Field::XEnvoyFaultAbort),
    (b"x-envoy-fault-delay-request", Field::XEnvoyFaultDelay),
    (b"cookie", Field::Cookie),
];

/// The multiplier that makes [`name_hash`] collision-free over [`NAMES`] (found by search;
/// `table_is_perfect` checks it, since a collision would silently drop a header).
const HASH_K: u64 = 0x1209_a614_324e_10e7;
/// Forces ASCII letters to lowercase; other bytes of a header name may change too, but only
/// the hash sees them, never the final comparison.
const FOLD: u64 = 0x2020_2020_2020_2020;

/// Eight bytes of `name` from `at` (zero-padded), as a word.
const fn word(name: &[u8], at: usize) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < 8 && at + i < name.len() {
        w |= (name[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// A case-insensitive hash of a header name from its length and three words (start, middle,
/// end): a few ALU operations whatever the length, where a `match` on byte strings compares
/// candidate after candidate.
const fn name_hash(name: &[u8]) -> usize {
    let n = name.len();
    let (a, b, c) = if n >= 8 {
        (word(name, 0), word(name, (n - 8) / 2), word(name, n - 8))
    } else {
        (word(name, 0), 0, 0)
    };
    mix(n, a, b, c)
}

/// [`name_hash`] at run time: the same words, loaded whole rather than byte by byte.
#[inline]
fn name_hash_fast(name: &[u8]) -> usize {
    let n = name.len();
    if n < 8 {
        return mix(n, word(name, 0), 0, 0);
    }
    mix(
        n,
        load8(name, 0),
        load8(name, (n - 8) / 2),
        load8(name, n - 8),
    )
}

const fn mix(n: usize, a: u64, b: u64, c: u64) -> usize {
    let x = (a | FOLD) ^ (b | FOLD).rotate_left(21) ^ (c | FOLD).rotate_left(42) ^ n as u64;
    (x.wrapping_mul(HASH_K) >> 58) as usize
}

/// Eight bytes of `s` from `at` as a little-endian word (0 past the end, which callers avoid).
#[inline]
fn load8(s: &[u8], at: usize) -> u64 {
    s.get(at..)
        .and_then(|t| t.first_chunk::<8>())
        .map_or(0, |c| u64::from_le_bytes(*c))
}

/// Slot → index into [`NAMES`] + 1 (0 is empty), built at compile time.
const TABLE: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < NAMES.len() {
        t[name_hash(NAMES[i].0)] = i as u8 + 1;
        i += 1;
    }
    t
};

/// The field a header name files under, matched case-insensitively: one hash, one compare.
fn lookup(name: &[u8]) -> Option<Field> {
    if name.len() > MAX_NAME {
        return None;
    }
    let slot = TABLE[name_hash_fast(name)];
    let (known, field) = NAMES.get(usize::from(slot).checked_sub(1)?)?;
    eq_lowercase(name, known).then_some(*field)
}

/// ASCII-lowercases eight bytes at once (SWAR): adds 0x20 to each byte in `A..=Z` only.
#[inline]
fn lower8(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let b = w & !HI;
    // The high bit of each byte: `b >= 'A'` and `b > 'Z'`, computed without carries between
    // bytes because each 7-bit byte plus at most 0x7f stays below 0x100.
    let ge_a = b + LO * (0x80 - b'A' as u64);
    let gt_z = b + LO * (0x80 - b'Z' as u64 - 1);
    let upper = (ge_a & !gt_z) & !w & HI;
    w | (upper >> 2)
}

/// Whether `name`, folded to lowercase, equals the lowercase `known`: a word at a time, with an
/// overlapping last word, instead of byte by byte (the byte loop was a fifth of the core path).
#[inline]
fn eq_lowercase(name: &[u8], known: &[u8]) -> bool {
    let n = name.len();
    if n != known.len() {
        return false;
    }
    if n < 8 {
        return lower8(word(name, 0)) == word(known, 0);
    }
    let mut at = 0;
    while at + 8 < n {
        if lower8(load8(name, at)) != load8(known, at) {
            return false;
        }
        at += 8;
    }
    lower8(load8(name, n - 8)) == load8(known, n - 8)
}

/// A numeric header value (`x-envoy-attempt-count`, `x-envoy-fault-delay-request`): a plain
/// non-negative decimal, surrounding whitespace allowed, at most 18 digits so it cannot overflow.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

/// Keeps at most 64 fields of a multi-valued header: more is an attack, not a trace.
fn push_capped<'a>(v: &mut SmallVec<[&'a [u8]; 2]>, value: &'a [u8]) {
    if v.len() < 64 {
        v.push(value);
    }
}

/// Iterates a proxy-wasm serialized header map (`u32 n`, `n × (klen, vlen)`, then
/// `key\0value\0` each) in place. A truncated or inconsistent buffer simply ends the iteration:
/// the host is trusted to be well-formed, but a bad one must not panic the VM.
pub fn pairs(buf: &[u8]) -> PairsIter<'_> {
    let n = read_u32(buf, 0).unwrap_or(0) as usize;
    // Each pair needs 8 bytes of lengths: cap n by what the buffer can hold.
    let n = n.min(buf.len().saturating_sub(4) / 8);
    PairsIter {
        buf,
        n,
        i: 0,
        data: 4 + n * 8,
    }
}

/// Iterator returned by [`pairs`]; cloning it restarts nothing, it copies the position.
#[derive(Clone)]
pub struct PairsIter<'a> {
    buf: &'a [u8],
    n: usize,
    i: usize,
    data: usize,
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> Iterator for PairsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.n {
            return None;
        }
        let klen = read_u32(self.buf, 4 + self.i * 8)? as usize;
        let vlen = read_u32(self.buf, 8 + self.i * 8)? as usize;
        let k_end = self.data.checked_add(klen)?;
        let v_start = k_end.checked_add(1)?;
        let v_end = v_start.checked_add(vlen)?;
        let key = self.buf.get(self.data..k_end)?;
        let value = self.buf.get(v_start..v_end)?;
        self.data = v_end.checked_add(1)?;
        self.i += 1;
        Some((key, value))
    }
}

/// Serializes pairs in the proxy-wasm map format (for the adapter's `set_header_map_pairs`
/// and for tests).
pub fn serialize_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    out: &mut Vec<u8>,
) {
    out.clear();
    let n = pairs.clone().into_iter().count() as u32;
    out.extend_from_slice(&n.to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: every known name tried in turn.
    fn linear(name: &[u8]) -> Option<Field> {
        NAMES
            .iter()
            .find(|(known, _)| name.eq_ignore_ascii_case(known))
            .map(|(_, f)| *f)
    }

    proptest::proptest! {
        #[test]
        fn lower8_is_ascii_lowercase(bytes: [u8; 8]) {
            let w = u64::from_le_bytes(bytes);
            let mut lower = bytes;
            lower.make_ascii_lowercase();
            proptest::prop_assert_eq!(lower8(w), u64::from_le_bytes(lower));
        }
    }

    #[test]
    fn table_is_perfect() {
        let mut slots: Vec<usize> = NAMES.iter().map(|(n, _)| name_hash(n)).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(
            slots.len(),
            NAMES.len(),
            "two names share a slot: change HASH_K"
        );
        for (name, field) in NAMES {
            assert_eq!(name_hash_fast(name), name_hash(name));
            assert_eq!(lookup(name), Some(field));
            assert_eq!(lookup(&name.to_ascii_uppercase()), Some(field));
        }
    }

    proptest::proptest! {
        #[test]
        fn lookup_matches_a_linear_search(
            name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            known in 0..NAMES.len(),
            flips in proptest::collection::vec(proptest::prelude::any::<bool>(), 28),
        ) {
            proptest::prop_assert_eq!(lookup(&name), linear(&name));
            // Near misses: a known name in mixed case, and with one byte changed.
            let mixed: Vec<u8> = NAMES[known].0.iter().zip(&flips)
                .map(|(b, f)| if *f { b.to_ascii_uppercase() } else { *b }).collect();
            proptest::prop_assert_eq!(lookup(&mixed), Some(NAMES[known].1));
            let mut off = mixed.clone();
            off[0] ^= 0x01;
            proptest::prop_assert_eq!(lookup(&off), linear(&off));
        }
    }

    #[test]
    fn pairs_round_trip_and_index() {
        let src: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b"TraceParent", b"00-x"),
            (b"tracestate", b"a=1"),
            (b"tracestate", b"b=2"),
            (b"traceparent", b"00-y"),
        ];
        let mut buf = Vec::new();
        serialize_pairs(src.iter().copied(), &mut buf);
        let back: Vec<_> = pairs(&buf).collect();
        assert_eq!(back, src);
        let h = RequestHeaders::from_pairs(pairs(&buf));
        assert_eq!(h.method, Some(&b"GET"[..]));
        assert_eq!(h.traceparent, Some(&b"00-x"[..]));
        assert_eq!(h.traceparent_count, 2);
        assert_eq!(h.tracestate.as_slice(), &[&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(h.count, 5);
    }

    #[test]
    fn numeric_values() {
        assert_eq!(parse_u64(b"3"), Some(3));
        assert_eq!(parse_u64(b" 12 "), Some(12));
        assert_eq!(
            parse_u64(b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b" ",
            b"-1",
            b"+1",
            b"1.5",
            b"0x10",
            b"1 2",
            b"9999999999999999999",
        ] {
            assert_eq!(parse_u64(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn truncated_buffers_never_panic() {
        let mut buf = Vec::new();
        serialize_pairs([(&b"a"[..], &b"1"[..]), (&b"bb"[..], &b"22"[..])], &mut buf);
        for cut in 0..buf.len() {
            let _ = pairs(&buf[..cut]).count();
        }
        assert_eq!(pairs(&[0xff, 0xff, 0xff, 0xff]).count(), 0);
    }
}
