//! W3C Trace Context Level 2: `traceparent` and `tracestate`.
//!
//! Parsing follows the spec's processing model: any rule broken in `traceparent` restarts the
//! trace, and `tracestate` is only looked at when `traceparent` was valid. A valid `tracestate`
//! is forwarded byte for byte; an invalid one is dropped whole.

use smallvec::SmallVec;

use super::context::SpanStart;
use super::inject::Injection;
use super::ot::OtUpdate;
use super::{Parsed, SpanContext, FLAG_RANDOM, FLAG_SAMPLED};
use crate::headers::RequestHeaders;
use crate::hex;
use crate::ids::{SpanId, TraceId};
use crate::simd;
use crate::text::trim_ows;

/// Length of a version-00 `traceparent`: `2+1+32+1+16+1+2`.
pub const TRACEPARENT_LEN: usize = 55;
/// Maximum list members in `tracestate`.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 256;
/// Combined length every vendor should propagate; truncation aims below it.
pub const TRACESTATE_PROPAGATE_LEN: usize = 512;
/// Entries longer than this are the first to go when truncating.
pub const TRACESTATE_LONG_ENTRY: usize = 128;

/// The span's recorded `tracestate` keeps at most this many bytes: the combined length W3C
/// Trace Context asks every vendor to propagate (`TRACESTATE_PROPAGATE_LEN`). Longer lists are
/// cut at a list-member boundary, so what is recorded is still a valid `tracestate`.
pub const MAX_TRACE_STATE_BYTES: usize = TRACESTATE_PROPAGATE_LEN;

/// Why a `traceparent` was rejected (for debug logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceParentError {
    /// Not two lowercase hex digits followed by `-`.
    Version,
    /// Version `ff` is forbidden.
    VersionFf,
    /// Version 00 must be exactly 55 characters; later versions at least 55.
    Length,
    /// A `-` missing at a fixed offset, or a future version's flags not followed by `-`.
    Delimiter,
    /// The trace id is not 32 lowercase hex digits, or all zero.
    TraceId,
    /// The parent id is not 16 lowercase hex digits, or all zero.
    ParentId,
    /// The flags are not 2 lowercase hex digits.
    Flags,
    /// More than one `traceparent` field.
    Duplicate,
}

/// Parses one `traceparent` value with every rule of the spec.
pub fn parse_traceparent(value: &[u8]) -> Result<SpanContext, TraceParentError> {
    simd::dispatch(ParseTraceparent(value))
}

/// [`parse_traceparent`] written against the SIMD kernels, so that on x86_64 the whole parse
/// is compiled for the kernels the CPU has (see [`simd::dispatch`]).
struct ParseTraceparent<'a>(&'a [u8]);

impl simd::Dispatched for ParseTraceparent<'_> {
    type Output = Result<SpanContext, TraceParentError>;

    #[inline(always)]
    fn run<K: simd::Kernels>(self) -> Self::Output {
        let value = self.0;
        // Fast path for the common case, a 55-byte version-00 value with no whitespace around
        // it (a value that has some fails the fast path's checks and is trimmed below): one
        // pass decodes and checks it. Anything it rejects takes the rule-by-rule path, which
        // names the error.
        if let Ok(fixed) = <&[u8; TRACEPARENT_LEN]>::try_from(value) {
            if let Some(ctx) = parse_well_shaped::<K>(fixed) {
                return Ok(ctx);
            }
        }
        parse_trimmed(value)
    }
}

/// [`parse_traceparent`] past the untrimmed fast path: the fast path again on the trimmed
/// value, then every rule.
#[inline(never)]
fn parse_trimmed(value: &[u8]) -> Result<SpanContext, TraceParentError> {
    let v = trim_ows(value);
    if let Ok(fixed) = <&[u8; TRACEPARENT_LEN]>::try_from(v) {
        if let Some(ctx) = parse_well_shaped::<simd::Baseline>(fixed) {
            return Ok(ctx);
        }
    }
    parse_rules(v)
}

/// Every rule in spec order, on a trimmed value: the reference the fast path must agree with.
fn parse_rules(v: &[u8]) -> Result<SpanContext, TraceParentError> {
    if v.len() < 3 || v[2] != b'-' {
        return Err(TraceParentError::Version);
    }
    let mut version = [0u8; 1];
    if !hex::decode_lower(&v[..2], &mut version) {
        return Err(TraceParentError::Version);
    }
    match version[0] {
        0xff => return Err(TraceParentError::VersionFf),
        0x00 if v.len() != TRACEPARENT_LEN => return Err(TraceParentError::Length),
        _ if v.len() < TRACEPARENT_LEN => return Err(TraceParentError::Length),
        // A future version may append fields, but only after a `-`.
        _ if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' => {
            return Err(TraceParentError::Delimiter)
        }
        _ => {}
    }
    if v[35] != b'-' || v[52] != b'-' {
        return Err(TraceParentError::Delimiter);
    }
    let trace_id = TraceId::from_hex(&v[3..35]).ok_or(TraceParentError::TraceId)?;
    let span_id = SpanId::from_hex(&v[36..52]).ok_or(TraceParentError::ParentId)?;
    let mut flags = [0u8; 1];
    if !hex::decode_lower(&v[53..55], &mut flags) {
        return Err(TraceParentError::Flags);
    }
    Ok(SpanContext {
        trace_id,
        span_id,
        // Unknown flags must not be propagated: keep only the bits Level 2 defines.
        flags: flags[0] & (FLAG_SAMPLED | FLAG_RANDOM),
    })
}

/// The fast path of [`parse_traceparent`]: `None` sends the value to the full checks.
///
/// One kernel (`traceparent00`, see [`simd::traceparent00`]) checks and decodes a version-00 value in one pass;
/// other versions (valid at 55 bytes, but rare) take the full checks.
#[inline(always)]
fn parse_well_shaped<K: simd::Kernels>(v: &[u8; TRACEPARENT_LEN]) -> Option<SpanContext> {
    let mut trace_id = TraceId::INVALID;
    let mut span_id = SpanId::INVALID;
    let flags = K::traceparent00(v, &mut trace_id.0, &mut span_id.0)?;
    Some(SpanContext {
        trace_id,
        span_id,
        // Unknown flags must not be propagated: keep only the bits Level 2 defines.
        flags: flags & (FLAG_SAMPLED | FLAG_RANDOM),
    })
}

/// Writes a version-00 `traceparent` for `ctx`.
pub fn write_traceparent(ctx: &SpanContext, out: &mut [u8; TRACEPARENT_LEN]) {
    out[..3].copy_from_slice(b"00-");
    ctx.trace_id.write_hex(&mut out[3..35]);
    out[35] = b'-';
    ctx.span_id.write_hex(&mut out[36..52]);
    out[52] = b'-';
    hex::encode_lower(
        &[ctx.flags & (FLAG_SAMPLED | FLAG_RANDOM)],
        &mut out[53..55],
    );
}

/// A validated `tracestate`: the original fields, forwarded unchanged (joined with `,`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState<'a> {
    fields: SmallVec<[&'a [u8]; 2]>,
}

impl<'a> TraceState<'a> {
    /// True when there is nothing to forward.
    pub fn is_empty(&self) -> bool {
        self.fields.iter().all(|f| trim_ows(f).is_empty())
    }

    /// The non-empty fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.fields
            .iter()
            .copied()
            .filter(|f| !trim_ows(f).is_empty())
    }

    /// Appends the combined header value to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Each field trimmed once (`fields` trims to filter, and the value must be trimmed).
        let mut sep = false;
        for f in &self.fields {
            let f = trim_ows(f);
            if f.is_empty() {
                continue;
            }
            if sep {
                out.push(b',');
            }
            sep = true;
            out.extend_from_slice(f);
        }
    }

    /// Iterates the non-empty `key=value` members across all fields.
    pub fn members(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.fields()
            .flat_map(|f| f.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|m| !m.is_empty())
    }
}

impl TraceState<'_> {
    /// The number of non-empty members.
    pub fn len(&self) -> usize {
        self.members().count()
    }

    /// The value of `key`, if a member has it (the first one: producers must not duplicate).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.members()
            .find_map(|m| split_member(m).filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    /// Writes the list with `key=value` set by the spec's mutation rule: the modified entry moves
    /// to the left, every other member keeps its order, an older entry of the same key goes, and
    /// beyond 32 members the right-most are dropped. Returns false, writing nothing, when `key`
    /// or `value` break the grammar.
    pub fn write_with(&self, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> bool {
        if !valid_key(key) || !valid_value(value) {
            return false;
        }
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        let others = self
            .members()
            .filter(|m| split_member(m).map(|(k, _)| k) != Some(key))
            .take(MAX_TRACESTATE_MEMBERS - 1);
        for m in others {
            out.push(b',');
            out.extend_from_slice(m);
        }
        true
    }

    /// Writes the list without `key` (for a sampler erasing its own entry).
    pub fn write_without(&self, key: &[u8], out: &mut Vec<u8>) {
        let kept = self
            .members()
            .filter(|m| split_member(m).map(|(k, _)| k) != Some(key));
        for (i, m) in kept.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(m);
        }
    }

    /// Writes the list cut to at most `max_len` bytes by the spec's rule: whole entries only,
    /// entries longer than 128 characters first, then from the right end.
    pub fn write_truncated(&self, max_len: usize, out: &mut Vec<u8>) {
        let joined_len = |keep: &dyn Fn(usize, &[u8]) -> bool| {
            let (mut n, mut count) = (0usize, 0usize);
            for (i, m) in self.members().enumerate() {
                if keep(i, m) {
                    n += m.len();
                    count += 1;
                }
            }
            n + count.saturating_sub(1)
        };
        let drop_long = joined_len(&|_, _| true) > max_len;
        let short = |m: &[u8]| !drop_long || m.len() <= TRACESTATE_LONG_ENTRY;
        // The longest prefix of the surviving entries that fits.
        let mut keep_first = self.len();
        while keep_first > 0 && joined_len(&|i, m| i < keep_first && short(m)) > max_len {
            keep_first -= 1;
        }
        let kept = self
            .members()
            .enumerate()
            .filter(|(i, m)| *i < keep_first && short(m));
        for (n, (_, m)) in kept.enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(m);
        }
    }
}

/// Splits a trimmed `key=value` member at its first `=`.
fn split_member(m: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = m.iter().position(|&b| b == b'=')?;
    Some((m.get(..eq)?, m.get(eq + 1..)?))
}

/// Validates the combined `tracestate` fields. `None` means drop it whole.
pub fn parse_tracestate<'a>(fields: &[&'a [u8]]) -> Option<TraceState<'a>> {
    let state = TraceState {
        fields: SmallVec::from_slice(fields),
    };
    // Nearly every list is in its plain form; one pass settles it. Anything else (whitespace,
    // empty members, a space inside a value, an invalid member) takes the rule-by-rule walk.
    let mut simple = 0usize;
    for f in fields {
        match plain_members(f) {
            Some(n) => simple += n,
            None => return parse_members(state),
        }
    }
    (simple <= MAX_TRACESTATE_MEMBERS).then_some(state)
}

/// [`parse_tracestate`] member by member, by the rules as written.
fn parse_members(state: TraceState<'_>) -> Option<TraceState<'_>> {
    let mut members = 0usize;
    for member in state.members() {
        members += 1;
        if members > MAX_TRACESTATE_MEMBERS || !valid_member(member) {
            return None;
        }
    }
    Some(state)
}

/// Byte classes of a plain `tracestate` ([`plain_members`]).
const KEY_FIRST: u8 = 1;
const KEY_CHAR: u8 = 2;
const VALUE_CHAR: u8 = 4;
const TRACESTATE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c: u8 = 0x21;
    while c <= 0x7e {
        let i = c as usize;
        if c != b',' && c != b'=' {
            t[i] = VALUE_CHAR;
        }
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            t[i] |= KEY_FIRST | KEY_CHAR;
        }
        if matches!(c, b'_' | b'-' | b'*' | b'/' | b'@') {
            t[i] |= KEY_CHAR;
        }
        c += 1;
    }
    t
};

/// The member count of one `tracestate` field in its plain form: `key=value` members joined
/// by bare commas, no whitespace anywhere, every member valid ([`valid_key`], and a value of
/// printable ASCII without spaces, `,` or `=`). `None` is not "invalid": the field is
/// judged by the full rules instead. Whatever this accepts, the full rules accept with the
/// same members.
///
/// It walks the field by splitting off what it has read, so no step indexes past a check.
fn plain_members(f: &[u8]) -> Option<usize> {
    let class = |b: &u8| TRACESTATE_CLASS[usize::from(*b)];
    let mut rest = f;
    let mut members = 0;
    loop {
        let (first, tail) = rest.split_first()?;
        if class(first) & KEY_FIRST == 0 {
            return None;
        }
        let key_len = 1 + tail
            .iter()
            .position(|b| class(b) & KEY_CHAR == 0)
            .unwrap_or(tail.len());
        let (b'=', value) = tail.get(key_len - 1..)?.split_first()? else {
            return None;
        };
        let value_len = plain_value_len(value);
        if key_len > MAX_KEY || value_len == 0 || value_len > MAX_VALUE {
            return None;
        }
        members += 1;
        match value.get(value_len..)? {
            [] => return Some(members),
            [b',', next @ ..] => rest = next,
            _ => return None,
        }
    }
}

/// The end of the run of value bytes (printable ASCII but space, `,` and `=`) from `i`.
#[cfg(test)]
fn plain_value_end(f: &[u8], i: usize) -> usize {
    i + f.get(i..).map_or(0, plain_value_len)
}

/// The length of the run of value bytes (printable ASCII but space, `,` and `=`) that `v`
/// starts with: sixteen at a time ([`simd::find_non_tracestate_value`]) while at least 16
/// bytes are left (`v` is the rest of the field, so most values are scanned this way); else
/// eight at a time, the first byte that ends it found from the word's mask, and a tail of
/// under eight bytes byte by byte.
#[inline]
fn plain_value_len(v: &[u8]) -> usize {
    if v.len() >= 16 {
        return simd::find_non_tracestate_value(v).unwrap_or(v.len());
    }
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let words = v.chunks_exact(8);
    let tail = words.remainder();
    for (n, w) in words.enumerate() {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // On the low seven bits of each byte every sum stays below 0x100, so no carry crosses
        // into the next byte and each test is exact; bytes of 0x80 and up are flagged apart.
        let b = w & !HI;
        let below_0x21 = !(b + LO * (0x80 - 0x21)) & HI;
        let is_0x7f = (b + LO) & HI;
        let is = |c: u8| {
            let x = b ^ (LO * u64::from(c));
            !((x + LO * 0x7f) | x) & HI
        };
        let stop = (w & HI) | below_0x21 | is_0x7f | is(b',') | is(b'=');
        if stop != 0 {
            // Exact per byte, so the lowest flagged byte is the first that stops the run.
            return n * 8 + (stop.trailing_zeros() / 8) as usize;
        }
    }
    let run = tail
        .iter()
        .position(|&b| TRACESTATE_CLASS[usize::from(b)] & VALUE_CHAR == 0)
        .unwrap_or(tail.len());
    v.len() - tail.len() + run
}

fn valid_member(m: &[u8]) -> bool {
    split_member(m).is_some_and(|(k, v)| valid_key(k) && valid_value(v))
}

/// `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`.
pub fn valid_key(k: &[u8]) -> bool {
    match k.split_first() {
        Some((first, rest)) if k.len() <= MAX_KEY => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(|&c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
                })
        }
        _ => false,
    }
}

/// `value = 0*255(chr) nblk-chr`: printable ASCII but `,` and `=`, not ending in a space.
pub fn valid_value(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_VALUE
        && v.last() != Some(&b' ')
        && v.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// The W3C half of extraction: a context and the `tracestate` to forward with it.
pub fn extract<'a>(h: &RequestHeaders<'a>) -> Parsed<Extracted<'a>> {
    let Some(tp) = h.traceparent else {
        return Parsed::Absent;
    };
    if h.traceparent_count > 1 {
        return Parsed::Malformed;
    }
    match parse_traceparent(tp) {
        Ok(ctx) => {
            let parsed = parse_tracestate(&h.tracestate);
            Parsed::Valid(Extracted {
                ctx,
                tracestate_dropped: parsed.is_none(),
                tracestate: parsed.unwrap_or_default(),
            })
        }
        Err(_) => Parsed::Malformed,
    }
}

/// A valid `traceparent` and what became of the `tracestate` beside it.
#[derive(Clone, Debug)]
pub struct Extracted<'a> {
    /// The caller's span context, from `traceparent`.
    pub ctx: SpanContext,
    /// The validated `tracestate`, empty when absent or dropped.
    pub tracestate: TraceState<'a>,
    /// A `tracestate` was present but invalid (a bad member, more than 32 members) and was
    /// dropped whole, as W3C Trace Context says: the context is still continued, and the
    /// header counts as malformed (`meshtrace.propagation.malformed.tracecontext`).
    pub tracestate_dropped: bool,
}

/// The header name `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The header name `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// Writes `traceparent` for the new span, and `tracestate`: the caller's list with this hop's
/// `ot` changes. An unchanged list is already on the request and costs no host call; an empty
/// result removes a stale or invalid one.
pub fn inject(s: &SpanStart<'_>, h: &RequestHeaders<'_>, out: &mut Injection) {
    let ctx = SpanContext {
        trace_id: s.trace_id,
        span_id: s.span_id,
        flags: s.flags,
    };
    out.put(TRACEPARENT, |b| {
        let mut tp = [0u8; TRACEPARENT_LEN];
        write_traceparent(&ctx, &mut tp);
        b.extend_from_slice(&tp);
    });
    let forwarded_as_is = s.ot == OtUpdate::Forward
        && s.incoming
            .as_ref()
            .is_some_and(|i| !i.tracestate.is_empty());
    if forwarded_as_is {
        return;
    }
    out.put(TRACESTATE, |b| s.write_tracestate(b));
    if out.get(TRACESTATE).is_some_and(<[u8]>::is_empty) {
        out.unset_last();
        if !h.tracestate.is_empty() {
            out.remove.push(TRACESTATE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    proptest::proptest! {
        /// A plain `tracestate` field is one the rules accept, with the same members, and
        /// the whole list is judged as the rules judge it.
        #[test]
        fn plain_tracestate_agrees_with_the_rules(
            fields in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        proptest::sample::select(&b"az09=,=,_-*/@ \t~!\x7f\x80\xff\x20\x21"[..]),
                        proptest::arbitrary::any::<u8>(),
                    ],
                    0..40,
                ),
                0..3,
            ),
            word in "[a-z0-9]{1,3}=[!-+.-<>-~]{0,20}",
        ) {
            let mut fields = fields;
            fields.push(word.clone().into_bytes());
            fields.push(format!("{word},{word}").into_bytes());
            for f in &fields {
                if let Some(n) = plain_members(f) {
                    let general = parse_members(TraceState { fields: SmallVec::from_slice(&[&f[..]]) });
                    proptest::prop_assert_eq!(general.map(|t| t.len()), Some(n));
                }
            }
            let refs: Vec<&[u8]> = fields.iter().map(|f| &f[..]).collect();
            let general = parse_members(TraceState { fields: SmallVec::from_slice(&refs) });
            proptest::prop_assert_eq!(
                parse_tracestate(&refs).map(|t| t.members().collect::<Vec<_>>()),
                general.map(|t| t.members().collect::<Vec<_>>())
            );
        }

        /// `write_to` is the trimmed non-empty fields joined with commas.
        #[test]
        fn write_to_joins_the_non_empty_fields(
            fields in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(&b" \ta=,"[..]), 0..6),
                0..4,
            ),
        ) {
            let refs: Vec<&[u8]> = fields.iter().map(|f| &f[..]).collect();
            let state = TraceState { fields: SmallVec::from_slice(&refs) };
            let want = state.fields().map(trim_ows).collect::<Vec<_>>().join(&b","[..]);
            let mut out = Vec::new();
            state.write_to(&mut out);
            proptest::prop_assert_eq!(out, want);
        }

        #[test]
        fn plain_value_end_is_the_byte_rule(v in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..40)) {
            let by_byte = v
                .iter()
                .position(|&c| !((0x21..=0x7e).contains(&c) && c != b',' && c != b'='))
                .unwrap_or(v.len());
            proptest::prop_assert_eq!(plain_value_end(&v, 0), by_byte);
        }

        /// The one-pass fast path agrees with the rule-by-rule parser, errors included.
        #[test]
        fn fast_path_matches_rules(
            v in proptest::collection::vec(proptest::sample::select(&b"0123456789abcdef"[..]), 55..=55),
            dashes in proptest::arbitrary::any::<[bool; 3]>(),
            edits in proptest::collection::vec((0usize..55, proptest::prop_oneof![
                proptest::sample::select(&b"-AFfg0 "[..]),
                proptest::arbitrary::any::<u8>(),
            ]), 0..3),
        ) {
            // Mostly valid values with zero to two edits, so both paths see plenty of traffic.
            let mut v = v;
            for (at, d) in [2, 35, 52].into_iter().zip(dashes) {
                if d || edits.is_empty() {
                    v[at] = b'-';
                }
            }
            for (at, b) in edits {
                v[at] = b;
            }
            // parse_traceparent trims OWS first; the reference gets the same trimmed value.
            proptest::prop_assert_eq!(parse_traceparent(&v), parse_rules(trim_ows(&v)));
        }
    }

    proptest::proptest! {
        /// As `fast_path_matches_rules`, with the version `00` the fast path takes, so that most
        /// cases run the fast path's kernel and the edits test its rejections.
        #[test]
        fn fast_path_matches_rules_at_version_00(
            v in proptest::collection::vec(proptest::sample::select(&b"0123456789abcdef"[..]), 55..=55),
            zero_trace in proptest::arbitrary::any::<bool>(),
            edits in proptest::collection::vec((0usize..55, proptest::prop_oneof![
                proptest::sample::select(&b"-AFfg0 \t"[..]),
                proptest::arbitrary::any::<u8>(),
            ]), 0..3),
        ) {
            let mut v = v;
            v[..3].copy_from_slice(b"00-");
            v[35] = b'-';
            v[52] = b'-';
            if zero_trace && v[3] < b'4' {
                v[3..35].fill(b'0');
            }
            for (at, b) in edits {
                v[at] = b;
            }
            let parsed = parse_traceparent(&v);
            proptest::prop_assert_eq!(parsed, parse_rules(trim_ows(&v)));
            // Both kernels of the fast path, whichever `dispatch` chose.
            if let Ok(fixed) = <&[u8; TRACEPARENT_LEN]>::try_from(&v[..]) {
                if let Some(ctx) = parse_well_shaped::<simd::Baseline>(fixed) {
                    proptest::prop_assert_eq!(Ok(ctx), parsed);
                }
            }
        }
    }

    fn err(s: &str) -> TraceParentError {
        parse_traceparent(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn spec_examples() {
        let c = parse_traceparent(VALID).unwrap();
        assert_eq!(c.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id.to_string(), "00f067aa0ba902b7");
        assert!(c.sampled());
        let mut out = [0u8; 55];
        write_traceparent(&c, &mut out);
        assert_eq!(&out[..], VALID);
        let c =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!c.sampled());
        // Random flag survives, unknown flags are cleared.
        let c =
            parse_traceparent(b"00-12345678901234567890123456789012-1234567890123456-ff").unwrap();
        assert_eq!(c.flags, 0x03);
        // OWS around the value is allowed.
        assert!(
            parse_traceparent(b" \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ")
                .is_ok()
        );
    }

    #[test]
    fn every_rule() {
        let tid = "4bf92f3577b34da6a3ce929d0e0e4736";
        let pid = "00f067aa0ba902b7";
        assert_eq!(
            err(&format!("ff-{tid}-{pid}-01")),
            TraceParentError::VersionFf
        );
        assert_eq!(err(&format!("0-{tid}-{pid}-01")), TraceParentError::Version);
        assert_eq!(
            err(&format!("000-{tid}-{pid}-01")),
            TraceParentError::Version
        );
        assert_eq!(
            err(&format!("0A-{tid}-{pid}-01")),
            TraceParentError::Version
        );
        assert_eq!(
            err(&format!(".0-{tid}-{pid}-01")),
            TraceParentError::Version
        );
        assert_eq!(
            err(&format!("00-{tid}-{pid}-01.")),
            TraceParentError::Length
        );
        assert_eq!(
            err(&format!("00-{tid}-{pid}-01-what-the-future-will-be-like")),
            TraceParentError::Length
        );
        assert!(parse_traceparent(
            format!("cc-{tid}-{pid}-01-what-the-future-will-be-like").as_bytes()
        )
        .is_ok());
        assert_eq!(
            err(&format!("cc-{tid}-{pid}-01.what")),
            TraceParentError::Delimiter
        );
        assert_eq!(err(&format!("cc-{tid}-{pid}-0")), TraceParentError::Length);
        assert_eq!(
            err(&format!("00-{}-{pid}-01", tid.to_uppercase())),
            TraceParentError::TraceId
        );
        assert_eq!(
            err(&format!("00-{}-{pid}-01", "0".repeat(32))),
            TraceParentError::TraceId
        );
        assert_eq!(
            err(&format!("00-{}.-{pid}-01", &tid[..31])),
            TraceParentError::TraceId
        );
        assert_eq!(
            err(&format!("00-{tid}-{}-01", "0".repeat(16))),
            TraceParentError::ParentId
        );
        assert_eq!(
            err(&format!("00-{tid}-{}-01", pid.to_uppercase())),
            TraceParentError::ParentId
        );
        assert_eq!(err(&format!("00-{tid}-{pid}-0g")), TraceParentError::Flags);
        assert_eq!(err(&format!("00-{tid}-{pid}-0F")), TraceParentError::Flags);
        assert_eq!(
            err(&format!("00-{tid}1-{pid}-01")),
            TraceParentError::Length
        );
        assert_eq!(
            err(&format!("00_{tid}-{pid}-01")),
            TraceParentError::Version
        );
        assert_eq!(
            err(&format!("00-{tid}_{pid}-01")),
            TraceParentError::Delimiter
        );
        assert_eq!(err(""), TraceParentError::Version);
    }

    fn ts(fields: &[&str]) -> Option<String> {
        let f: Vec<&[u8]> = fields.iter().map(|s| s.as_bytes()).collect();
        parse_tracestate(&f).map(|s| {
            let mut out = Vec::new();
            s.write_to(&mut out);
            String::from_utf8(out).unwrap()
        })
    }

    #[test]
    fn tracestate_rules() {
        assert_eq!(
            ts(&["congo=t61rcWkgMzE"]).as_deref(),
            Some("congo=t61rcWkgMzE")
        );
        assert_eq!(ts(&["foo=1", "bar=2"]).as_deref(), Some("foo=1,bar=2"));
        assert_eq!(ts(&["", "foo=1"]).as_deref(), Some("foo=1"));
        assert_eq!(
            ts(&["foo=1 \t , \t bar=2"]).as_deref(),
            Some("foo=1 \t , \t bar=2")
        );
        for bad in [
            "foo =1",
            "FOO=1",
            "foo.bar=1",
            "@foo=1,bar=2",
            "foo=bar=baz",
            "foo=,bar=3",
            "foo",
        ] {
            assert_eq!(ts(&[bad]), None, "{bad}");
        }
        for good in ["foo@=1", "foo@@bar=1", "foo@bar@baz=1"] {
            assert!(ts(&[good]).is_some(), "{good}");
        }
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(ts(&[&members(32)]).is_some());
        assert_eq!(ts(&[&members(33)]), None);
        assert!(ts(&[&format!("{}=1", "k".repeat(256))]).is_some());
        assert_eq!(ts(&[&format!("{}=1", "k".repeat(257))]), None);
        assert!(ts(&[&format!("{}@{}=1", "t".repeat(241), "v".repeat(14))]).is_some());
    }

    fn state(s: &str) -> TraceState<'_> {
        parse_tracestate(&[s.as_bytes()]).unwrap()
    }

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn mutation_moves_left() {
        // The spec's own chain: rojo adds itself, then congo updates and moves left.
        let s = state("congo=t61rcWkgMzE");
        let step1 = written(|o| assert!(s.write_with(b"rojo", b"00f067aa0ba902b7", o)));
        assert_eq!(step1, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        let s = state(&step1);
        let step2 = written(|o| assert!(s.write_with(b"congo", b"ucfJifl5GOE", o)));
        assert_eq!(step2, "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7");
        let s = state(&step2);
        assert_eq!(s.get(b"rojo"), Some(&b"00f067aa0ba902b7"[..]));
        assert_eq!(s.get(b"ot"), None);
        assert_eq!(
            written(|o| s.write_without(b"congo", o)),
            "rojo=00f067aa0ba902b7"
        );
        assert!(!s.write_with(b"OT", b"th:8", &mut Vec::new()));
        assert!(!s.write_with(b"ot", b"a,b", &mut Vec::new()));
    }

    #[test]
    fn adding_beyond_32_drops_the_rightmost() {
        let full: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let s = full.join(",");
        let s = state(&s);
        let out = written(|o| assert!(s.write_with(b"ot", b"th:8", o)));
        let members: Vec<&str> = out.split(',').collect();
        assert_eq!(members.len(), 32);
        assert_eq!(members[0], "ot=th:8");
        assert_eq!(members[31], "k30=v");
        // Updating an existing key keeps the count.
        let out = written(|o| assert!(s.write_with(b"k5", b"w", o)));
        assert_eq!(out.split(',').count(), 32);
        assert!(out.starts_with("k5=w,k0=v,k1=v,k2=v,k3=v,k4=v,k6=v"));
    }

    #[test]
    fn truncation_drops_long_entries_first_then_from_the_right() {
        let long = format!("big={}", "x".repeat(130));
        let s = format!("a=1,{long},b=2,c=3");
        let s = state(&s);
        assert_eq!(
            written(|o| s.write_truncated(1000, o)),
            format!("a=1,{long},b=2,c=3")
        );
        assert_eq!(written(|o| s.write_truncated(100, o)), "a=1,b=2,c=3");
        assert_eq!(written(|o| s.write_truncated(7, o)), "a=1,b=2");
        assert_eq!(written(|o| s.write_truncated(2, o)), "");
    }

    proptest::proptest! {
        #[test]
        fn traceparent_round_trip(t: [u8; 16], sp: [u8; 8], flags in 0u8..4) {
            let ctx = SpanContext { trace_id: TraceId(t), span_id: SpanId(sp), flags };
            let mut out = [0u8; TRACEPARENT_LEN];
            write_traceparent(&ctx, &mut out);
            match parse_traceparent(&out) {
                Ok(back) => proptest::prop_assert_eq!(back, ctx),
                Err(_) => proptest::prop_assert!(!ctx.trace_id.is_valid() || !ctx.span_id.is_valid()),
            }
        }

        #[test]
        fn write_with_keeps_the_grammar(n in 0usize..40, v in "[a-z0-9]{1,8}") {
            let list: Vec<String> = (0..n.min(32)).map(|i| format!("k{i}={v}")).collect();
            let joined = list.join(",");
            let s = parse_tracestate(&[joined.as_bytes()]).unwrap();
            let mut out = Vec::new();
            proptest::prop_assert!(s.write_with(b"ot", v.as_bytes(), &mut out));
            let back = parse_tracestate(&[&out[..]]).unwrap();
            proptest::prop_assert_eq!(back.get(b"ot"), Some(v.as_bytes()));
            proptest::prop_assert!(back.len() <= MAX_TRACESTATE_MEMBERS);
        }
    }
}
