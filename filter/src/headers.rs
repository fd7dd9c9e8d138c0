//! The request headers the core looks at, found in one pass over whatever the adapter has.
//!
//! The adapter hands over borrowed `(name, value)` slices (from the proxy-wasm pairs buffer, or a
//! hyper `HeaderMap`); nothing is copied. Names are matched case-insensitively although Envoy and
//! hyper both lowercase them, because a third adapter may not.

use smallvec::SmallVec;

/// Borrowed slices of every request header the core may use.
#[derive(Debug, Default, Clone)]
pub struct RequestHeaders<'a> {
    /// `:method`.
    pub method: Option<&'a [u8]>,
    /// `:path`, query included.
    pub path: Option<&'a [u8]>,
    /// `:authority` (or `host`).
    pub authority: Option<&'a [u8]>,
    /// `:scheme`.
    pub scheme: Option<&'a [u8]>,
    /// `user-agent`.
    pub user_agent: Option<&'a [u8]>,
    /// `x-forwarded-for`.
    pub x_forwarded_for: Option<&'a [u8]>,
    /// `x-forwarded-proto`.
    pub x_forwarded_proto: Option<&'a [u8]>,
    /// `x-request-id`.
    pub x_request_id: Option<&'a [u8]>,
    /// The first `traceparent`; `traceparent_count` > 1 makes it invalid per W3C.
    pub traceparent: Option<&'a [u8]>,
    /// How many `traceparent` fields the request carried (more than one is invalid).
    pub traceparent_count: u8,
    /// Every `tracestate` field, in order; W3C says to combine them with commas.
    pub tracestate: SmallVec<[&'a [u8]; 2]>,
    /// Every `baggage` field, in order.
    pub baggage: SmallVec<[&'a [u8]; 2]>,
    /// `b3`.
    pub b3: Option<&'a [u8]>,
    /// `x-b3-traceid`.
    pub x_b3_traceid: Option<&'a [u8]>,
    /// `x-b3-spanid`.
    pub x_b3_spanid: Option<&'a [u8]>,
    /// `x-b3-parentspanid`.
    pub x_b3_parentspanid: Option<&'a [u8]>,
    /// `x-b3-sampled`.
    pub x_b3_sampled: Option<&'a [u8]>,
    /// `x-b3-flags`.
    pub x_b3_flags: Option<&'a [u8]>,
    /// `l5d-ctx-trace`.
    pub l5d_ctx_trace: Option<&'a [u8]>,
    /// `l5d-reqid`.
    pub l5d_reqid: Option<&'a [u8]>,
    /// `l5d-sample`.
    pub l5d_sample: Option<&'a [u8]>,
    /// `x-amzn-trace-id`.
    pub x_amzn_trace_id: Option<&'a [u8]>,
    /// `x-cloud-trace-context`.
    pub x_cloud_trace_context: Option<&'a [u8]>,
    /// `grpc-trace-bin`.
    pub grpc_trace_bin: Option<&'a [u8]>,
    /// `x-envoy-attempt-count`.
    pub x_envoy_attempt_count: Option<&'a [u8]>,
    /// `x-envoy-fault-abort-request`.
    pub x_envoy_fault_abort_request: Option<&'a [u8]>,
    /// `x-envoy-fault-delay-request`.
    pub x_envoy_fault_delay_request: Option<&'a [u8]>,
    /// `cookie`.
    pub cookie: Option<&'a [u8]>,
    /// `content-type`: only to tell gRPC (and gRPC-Web) calls from other HTTP requests.
    pub content_type: Option<&'a [u8]>,
    /// `knative-serving-revision`: the Knative revision a traffic split chose (set per split
    /// by Knative's ingress, see [`crate::span::faas`]).
    pub knative_serving_revision: Option<&'a [u8]>,
    /// `knative-serving-namespace`: the namespace of that revision.
    pub knative_serving_namespace: Option<&'a [u8]>,
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
        h.fill_from_pairs(pairs);
        h
    }

    /// [`Self::from_pairs`] into a `RequestHeaders` the caller holds (a fresh
    /// `RequestHeaders::default()`): the request path indexes in place, where returning the
    /// whole struct (over 500 bytes) from `from_pairs` cost a copy of it on every request.
    /// Adds to whatever `self` already holds, as [`Self::add`] does, and sets `count`.
    #[inline]
    pub fn fill_from_pairs<I>(&mut self, pairs: I)
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        // Counted in a register as a `usize` (which no iterator can run past), stored once.
        let mut count = 0usize;
        for (name, value) in pairs {
            count += 1;
            self.add(name, value);
        }
        self.count = u32::try_from(count).unwrap_or(u32::MAX);
    }

    /// Files one header under its known name, if it is one of ours.
    #[inline]
    pub fn add(&mut self, name: &[u8], value: &'a [u8]) {
        if let Some(slot) = find(name) {
            self.set(slot.field, value);
        }
    }

    /// Files `value` in `field`: a `match` the compiler turns into a jump table to inlined
    /// stores, where a table of setter functions cost an indirect call per header.
    #[inline(always)]
    fn set(&mut self, field: Field, v: &'a [u8]) {
        let slot = match field {
            Field::Method => &mut self.method,
            Field::Path => &mut self.path,
            Field::Authority => &mut self.authority,
            Field::Scheme => &mut self.scheme,
            Field::UserAgent => &mut self.user_agent,
            Field::XForwardedFor => &mut self.x_forwarded_for,
            Field::XForwardedProto => &mut self.x_forwarded_proto,
            Field::XRequestId => &mut self.x_request_id,
            Field::Traceparent => {
                self.traceparent_count = self.traceparent_count.saturating_add(1);
                &mut self.traceparent
            }
            Field::Tracestate => return push_capped(&mut self.tracestate, v),
            Field::Baggage => return push_capped(&mut self.baggage, v),
            Field::B3 => &mut self.b3,
            Field::XB3TraceId => &mut self.x_b3_traceid,
            Field::XB3SpanId => &mut self.x_b3_spanid,
            Field::XB3ParentSpanId => &mut self.x_b3_parentspanid,
            Field::XB3Sampled => &mut self.x_b3_sampled,
            Field::XB3Flags => &mut self.x_b3_flags,
            Field::L5dCtxTrace => &mut self.l5d_ctx_trace,
            Field::L5dReqid => &mut self.l5d_reqid,
            Field::L5dSample => &mut self.l5d_sample,
            Field::XAmznTraceId => &mut self.x_amzn_trace_id,
            Field::XCloudTraceContext => &mut self.x_cloud_trace_context,
            Field::GrpcTraceBin => &mut self.grpc_trace_bin,
            Field::XEnvoyAttemptCount => &mut self.x_envoy_attempt_count,
            Field::XEnvoyFaultAbortRequest => &mut self.x_envoy_fault_abort_request,
            Field::XEnvoyFaultDelayRequest => &mut self.x_envoy_fault_delay_request,
            Field::Cookie => &mut self.cookie,
            Field::ContentType => &mut self.content_type,
            Field::KnativeServingRevision => &mut self.knative_serving_revision,
            Field::KnativeServingNamespace => &mut self.knative_serving_namespace,
        };
        // First value wins for single-valued headers (B3 says so; Envoy returns the first too).
        if slot.is_none() {
            *slot = Some(v);
        }
    }
}

/// Where a known header's value goes in [`RequestHeaders`] (`host` shares `:authority`'s).
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
    L5dReqid,
    L5dSample,
    XAmznTraceId,
    XCloudTraceContext,
    GrpcTraceBin,
    XEnvoyAttemptCount,
    XEnvoyFaultAbortRequest,
    XEnvoyFaultDelayRequest,
    Cookie,
    ContentType,
    KnativeServingRevision,
    KnativeServingNamespace,
}

/// Every name we look for, lowercase, with where its value goes.
const NAMES: [(&[u8], Field); 31] = [
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
    (b"l5d-reqid", Field::L5dReqid),
    (b"l5d-sample", Field::L5dSample),
    (b"x-amzn-trace-id", Field::XAmznTraceId),
    (b"x-cloud-trace-context", Field::XCloudTraceContext),
    (b"grpc-trace-bin", Field::GrpcTraceBin),
    (b"x-envoy-attempt-count", Field::XEnvoyAttemptCount),
    (
        b"x-envoy-fault-abort-request",
        Field::XEnvoyFaultAbortRequest,
    ),
    (
        b"x-envoy-fault-delay-request",
        Field::XEnvoyFaultDelayRequest,
    ),
    (b"cookie", Field::Cookie),
    (b"content-type", Field::ContentType),
    (b"knative-serving-revision", Field::KnativeServingRevision),
    (b"knative-serving-namespace", Field::KnativeServingNamespace),
];

/// The multiplier that makes [`name_hash`] collision-free over [`NAMES`] (found by search;
/// [`SLOTS`] refuses to compile if a name list change makes two names share a slot).
const HASH_K: u64 = 0x2571_0713_f7fe_85c5;
/// Forces ASCII letters to lowercase; other bytes of a header name may change too, but only
/// the hash sees them, never the final comparison.
const FOLD: u64 = 0x2020_2020_2020_2020;

/// Eight bytes of `s` from `at` as a little-endian word, zero-padded past the end. Whole-word
/// loads when all eight are there; a shorter tail (`:path`, `accept`, `cookie`: a name under
/// eight bytes) is two overlapping half-width loads, not a byte loop.
#[inline]
const fn word(s: &[u8], at: usize) -> u64 {
    if at > s.len() {
        return 0;
    }
    let (_, t) = s.split_at(at);
    if let Some(w) = t.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    let m = t.len();
    // The two loads overlap on equal bytes, so OR joins them.
    if m >= 4 {
        let (Some(lo), Some(hi)) = (t.first_chunk::<4>(), t.last_chunk::<4>()) else {
            return 0;
        };
        return u32::from_le_bytes(*lo) as u64 | (u32::from_le_bytes(*hi) as u64) << (8 * (m - 4));
    }
    if m >= 2 {
        let (Some(lo), Some(hi)) = (t.first_chunk::<2>(), t.last_chunk::<2>()) else {
            return 0;
        };
        return u16::from_le_bytes(*lo) as u64 | (u16::from_le_bytes(*hi) as u64) << (8 * (m - 2));
    }
    match t.first() {
        Some(&b) => b as u64,
        None => 0,
    }
}

/// What [`name_hash`] reads of a name: its first and last eight bytes (for a name under eight
/// bytes, the zero-padded name and a zero), and the byte just past its middle. Two plain
/// loads and a byte for any name of eight bytes or more. The byte tells apart the two names
/// whose ends and length agree (`x-envoy-fault-abort-request`, `x-envoy-fault-delay-request`).
#[inline(always)]
const fn hash_inputs(name: &[u8]) -> (u64, u64, u8) {
    let n = name.len();
    let mid = n / 2 + 1;
    let m = if mid < n { name[mid] } else { 0 };
    match (name.first_chunk::<8>(), name.last_chunk::<8>()) {
        (Some(a), Some(c)) => (u64::from_le_bytes(*a), u64::from_le_bytes(*c), m),
        _ => (word(name, 0), 0, m),
    }
}

/// A case-insensitive hash of a header name from its length, its first and last words and
/// its middle byte ([`hash_inputs`]): a few ALU operations whatever the length, where a
/// `match` on byte strings compares candidate after candidate. The same function builds
/// [`SLOTS`] at compile time.
#[inline(always)]
const fn name_hash(name: &[u8]) -> usize {
    let (a, c, m) = hash_inputs(name);
    inputs_hash(a, c, m, name.len())
}

#[inline(always)]
const fn inputs_hash(a: u64, c: u64, m: u8, n: usize) -> usize {
    let x = (a | FOLD) ^ (c | FOLD).rotate_left(42) ^ n as u64 ^ ((m | 0x20) as u64) << 48;
    (x.wrapping_mul(HASH_K) >> 58) as usize
}

/// The word in the middle of a name of more than 16 bytes: with the first and last words it
/// covers every byte of a name up to [`COVERED`] bytes.
#[inline(always)]
const fn middle_word(name: &[u8]) -> u64 {
    word(name, name.len().saturating_sub(8) / 2)
}

/// The longest name whose first, middle and last words cover all of its bytes.
const COVERED: usize = 24;

/// What [`lookup`] compares a name with in one hash slot: a known name's length (`usize::MAX`
/// in an empty slot, which no name has), its first and last words as [`hash_inputs`] reads
/// them, its [`middle_word`], and its index in [`NAMES`]. The slot holds them itself, so a
/// lookup reads one table entry, not a slot table and then the name list.
#[derive(Clone, Copy)]
struct Slot {
    len: usize,
    ends: (u64, u64),
    middle: u64,
    index: u8,
    field: Field,
}

/// Slot → the known name hashed there, built at compile time.
const SLOTS: [Slot; 64] = {
    let mut t = [Slot {
        len: usize::MAX,
        ends: (0, 0),
        middle: 0,
        index: 0,
        field: Field::Method,
    }; 64];
    let mut i = 0;
    while i < NAMES.len() {
        let name = NAMES[i].0;
        let slot = name_hash(name);
        assert!(
            t[slot].len == usize::MAX,
            "two header names share a slot: change HASH_K"
        );
        let (a, c, _) = hash_inputs(name);
        t[slot] = Slot {
            len: name.len(),
            ends: (a, c),
            middle: middle_word(name),
            index: i as u8,
            field: NAMES[i].1,
        };
        i += 1;
    }
    t
};

/// The index in [`NAMES`] of a header name, matched case-insensitively: one hash, one compare.
/// Envoy and hyper hand over lowercase names, so a plain comparison settles nearly every
/// lookup; only a name that differs is folded and compared again.
///
/// The words hashed are the words compared: a lowercase name of up to 16 bytes whose first
/// and last words equal the known name's is that name, and one of up to [`COVERED`] bytes
/// once its middle word does too, with no second pass; any other candidate is compared in
/// full, folding case.
#[cfg(test)]
fn lookup(name: &[u8]) -> Option<usize> {
    find(name).map(|s| usize::from(s.index))
}

/// [`lookup`]'s slot, with the field the name files under.
#[inline]
fn find(name: &[u8]) -> Option<&'static Slot> {
    let (a, c, m) = hash_inputs(name);
    let n = name.len();
    let slot = &SLOTS[inputs_hash(a, c, m, n)];
    if n != slot.len {
        return None;
    }
    if slot.ends == (a, c) && (n <= 16 || (n <= COVERED && middle_word(name) == slot.middle)) {
        return Some(slot);
    }
    let known = NAMES.get(usize::from(slot.index))?.0;
    eq_lowercase(name, known).then_some(slot)
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
        return eq_word(word(name, 0), word(known, 0));
    }
    let mut at = 0;
    while at + 8 < n {
        if !eq_word(word(name, at), word(known, at)) {
            return false;
        }
        at += 8;
    }
    eq_word(word(name, n - 8), word(known, n - 8))
}

/// One word of a name against the lowercase `known` word. Envoy and hyper hand over lowercase
/// names, so the plain comparison settles nearly every word; only one that differs is folded.
#[inline(always)]
fn eq_word(w: u64, known: u64) -> bool {
    w == known || lower8(w) == known
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
    let (lens, data) = buf
        .get(4..)
        .map_or((&[][..], &[][..]), |rest| rest.split_at(n * 8));
    PairsIter { lens, data }
}

/// Iterator returned by [`pairs`]; cloning it restarts nothing, it copies the position.
///
/// It keeps the lengths not yet read and the bytes after the last pair read, so each step
/// is a few slice splits rather than offset arithmetic checked against the whole buffer.
#[derive(Clone)]
pub struct PairsIter<'a> {
    /// `(klen, vlen)` of the pairs still to come, eight bytes each.
    lens: &'a [u8],
    /// The `key\0value\0` bytes from the next pair on.
    data: &'a [u8],
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> Iterator for PairsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (lens, rest_lens) = self.lens.split_first_chunk::<8>()?;
        let [k0, k1, k2, k3, v0, v1, v2, v3] = *lens;
        let klen = u32::from_le_bytes([k0, k1, k2, k3]) as usize;
        let vlen = u32::from_le_bytes([v0, v1, v2, v3]) as usize;
        let data = self.data;
        // `key \0 value \0` must fit, the last NUL aside (the last value's may be missing;
        // nothing follows it anyway). Checked by subtraction, never adding the two lengths:
        // on wasm32 they could overflow.
        if klen >= data.len() || vlen > data.len() - klen - 1 {
            // A pair past the end of the buffer ends the iteration for good.
            self.lens = &[];
            return None;
        }
        let (key, rest) = data.split_at(klen);
        let (value, rest) = rest[1..].split_at(vlen);
        self.lens = rest_lens;
        self.data = rest.get(1..).unwrap_or_default();
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
    fn linear(name: &[u8]) -> Option<usize> {
        NAMES
            .iter()
            .position(|(known, _)| name.eq_ignore_ascii_case(known))
    }

    proptest::proptest! {
        #[test]
        fn lower8_is_ascii_lowercase(bytes: [u8; 8]) {
            let w = u64::from_le_bytes(bytes);
            let mut lower = bytes;
            lower.make_ascii_lowercase();
            proptest::prop_assert_eq!(lower8(w), u64::from_le_bytes(lower));
        }

        #[test]
        fn word_is_the_zero_padded_bytes(
            s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
            at in 0usize..24,
        ) {
            let mut want = [0u8; 8];
            for (i, b) in s.iter().skip(at).take(8).enumerate() {
                want[i] = *b;
            }
            proptest::prop_assert_eq!(word(&s, at), u64::from_le_bytes(want));
        }
    }

    #[test]
    fn every_name_is_found_in_any_case() {
        for (i, (name, _)) in NAMES.iter().enumerate() {
            assert_eq!(lookup(name), Some(i));
            assert_eq!(lookup(&name.to_ascii_uppercase()), Some(i));
        }
    }

    #[test]
    fn every_name_files_under_its_own_field() {
        // Each name's value lands where the core reads it; `host` is `:authority`'s fallback.
        let names: Vec<&[u8]> = NAMES.iter().map(|(n, _)| *n).collect();
        let pairs: Vec<(&[u8], &[u8])> = names.iter().map(|n| (*n, *n)).collect();
        let h = RequestHeaders::from_pairs(pairs.iter().copied());
        let single = [
            (h.method, ":method"),
            (h.path, ":path"),
            (h.authority, ":authority"),
            (h.scheme, ":scheme"),
            (h.user_agent, "user-agent"),
            (h.x_forwarded_for, "x-forwarded-for"),
            (h.x_forwarded_proto, "x-forwarded-proto"),
            (h.x_request_id, "x-request-id"),
            (h.traceparent, "traceparent"),
            (h.b3, "b3"),
            (h.x_b3_traceid, "x-b3-traceid"),
            (h.x_b3_spanid, "x-b3-spanid"),
            (h.x_b3_parentspanid, "x-b3-parentspanid"),
            (h.x_b3_sampled, "x-b3-sampled"),
            (h.x_b3_flags, "x-b3-flags"),
            (h.l5d_ctx_trace, "l5d-ctx-trace"),
            (h.l5d_reqid, "l5d-reqid"),
            (h.l5d_sample, "l5d-sample"),
            (h.x_amzn_trace_id, "x-amzn-trace-id"),
            (h.x_cloud_trace_context, "x-cloud-trace-context"),
            (h.grpc_trace_bin, "grpc-trace-bin"),
            (h.x_envoy_attempt_count, "x-envoy-attempt-count"),
            (h.x_envoy_fault_abort_request, "x-envoy-fault-abort-request"),
            (h.x_envoy_fault_delay_request, "x-envoy-fault-delay-request"),
            (h.cookie, "cookie"),
            (h.content_type, "content-type"),
            (h.knative_serving_revision, "knative-serving-revision"),
            (h.knative_serving_namespace, "knative-serving-namespace"),
        ];
        for (got, name) in single {
            assert_eq!(got, Some(name.as_bytes()), "{name}");
        }
        assert_eq!(h.traceparent_count, 1);
        assert_eq!(&h.tracestate[..], [&b"tracestate"[..]]);
        assert_eq!(&h.baggage[..], [&b"baggage"[..]]);
        assert_eq!(h.count, NAMES.len() as u32);
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
            proptest::prop_assert_eq!(lookup(&mixed), Some(known));
            let mut off = mixed.clone();
            off[0] ^= 0x01;
            proptest::prop_assert_eq!(lookup(&off), linear(&off));
        }
    }

    proptest::proptest! {
        /// Filling a caller's fresh `RequestHeaders` in place gives what `from_pairs` returns,
        /// for any mix of known names (in any case) and unknown ones.
        #[test]
        fn fill_from_pairs_is_from_pairs(
            fields in proptest::collection::vec(
                (0..NAMES.len() + 1, proptest::prelude::any::<bool>(),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12)),
                0..40,
            ),
        ) {
            let names: Vec<Vec<u8>> = fields.iter().map(|(i, upper, _)| {
                let n = NAMES.get(*i).map_or(&b"x-unknown"[..], |n| n.0);
                if *upper { n.to_ascii_uppercase() } else { n.to_vec() }
            }).collect();
            let pairs = || names.iter().zip(&fields).map(|(n, f)| (&n[..], &f.2[..]));
            let mut filled = RequestHeaders::default();
            filled.fill_from_pairs(pairs());
            let returned = RequestHeaders::from_pairs(pairs());
            proptest::prop_assert_eq!(format!("{filled:?}"), format!("{returned:?}"));
            proptest::prop_assert_eq!(filled.count as usize, fields.len());
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

    /// The reference for [`pairs`]: offsets into the whole buffer, every step checked.
    fn pairs_by_offsets(buf: &[u8]) -> Vec<(&[u8], &[u8])> {
        let n = read_u32(buf, 0).unwrap_or(0) as usize;
        let n = n.min(buf.len().saturating_sub(4) / 8);
        let mut data = 4 + n * 8;
        let mut out = Vec::new();
        for i in 0..n {
            let klen = read_u32(buf, 4 + i * 8).unwrap() as usize;
            let vlen = read_u32(buf, 8 + i * 8).unwrap() as usize;
            let (k_end, v_start) = (data + klen, data + klen + 1);
            let v_end = v_start + vlen;
            let (Some(key), Some(value)) = (buf.get(data..k_end), buf.get(v_start..v_end)) else {
                break;
            };
            out.push((key, value));
            data = v_end + 1;
        }
        out
    }

    proptest::proptest! {
        /// Whole, cut and corrupted maps: the same pairs as the offset walk, in order.
        #[test]
        fn pairs_match_the_offset_walk(
            src in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12)),
                0..6,
            ),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            poke in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>())),
        ) {
            let mut buf = Vec::new();
            serialize_pairs(src.iter().map(|(k, v)| (&k[..], &v[..])), &mut buf);
            let whole: Vec<_> = pairs(&buf).collect();
            let want: Vec<_> = src.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            proptest::prop_assert_eq!(&whole, &want);
            if let Some((at, b)) = poke {
                let at = at.index(buf.len());
                buf[at] = b;
            }
            let buf = &buf[..cut.index(buf.len() + 1)];
            proptest::prop_assert_eq!(pairs(buf).collect::<Vec<_>>(), pairs_by_offsets(buf));
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
