//! OTLP protobuf encoding written straight into reused buffers.
//!
//! A span's attributes are encoded as they are set, into the record's arena
//! ([`crate::span::SpanRecord`], with the writers below); when it finishes, the fixed fields
//! and those bytes make one complete `ScopeSpans.spans` field, written once, into the page of
//! the batch it joins ([`crate::export::batch`]). A request is then the pre-encoded resource
//! and scope (built once per VM) with their lengths, written in place before those span fields:
//! no tree of owned prost messages per request, and no copy of the spans.
//! Keys and varints are written by the small helpers below rather than prost's `BufMut`
//! primitives, which pay a capacity check and a call per byte: nearly every key and length in a
//! span is one byte, and this is the per-span hot loop.

use crate::span::{Attribute, SpanRecord, StatusCode, Value};

/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`.
const FLAGS_REMOTE_PARENT: u32 = 0x300;
/// Only `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: the parent is known to be local (none here).
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;

/// Protobuf wire types.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum WireType {
    /// Integers and booleans.
    Varint = 0,
    /// `fixed64`, `double`.
    SixtyFourBit = 1,
    /// Strings, bytes and messages.
    LengthDelimited = 2,
    /// `fixed32`.
    ThirtyTwoBit = 5,
}

/// `Span.attributes`: the field number of a span's `KeyValue`s.
pub const SPAN_ATTRIBUTES: u32 = 9;
/// Its key byte (length-delimited).
pub const SPAN_ATTRIBUTES_KEY: u8 = key_byte(SPAN_ATTRIBUTES, WireType::LengthDelimited);

/// Bytes the varint at the start of `buf` takes (those with the continuation bit, plus one),
/// at most `buf.len()`.
pub fn varint_at(buf: &[u8]) -> usize {
    buf.iter()
        .position(|b| b & 0x80 == 0)
        .map_or(buf.len(), |i| i + 1)
}

/// Writes `v` as a varint filling exactly `slot` (which must be [`encoded_len_varint`]`(v)` long for
/// the canonical encoding a decoder re-encodes to the same size).
#[inline]
pub fn put_varint_at(slot: &mut [u8], mut v: u64) {
    let n = slot.len();
    for (i, b) in slot.iter_mut().enumerate() {
        *b = (v & 0x7f) as u8 | if i + 1 < n { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// Bytes a varint of `v` takes (1 to 10).
#[inline]
pub fn encoded_len_varint(v: u64) -> usize {
    // One byte per started group of 7 significant bits (at least one).
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn key_len(tag: u32) -> usize {
    encoded_len_varint(u64::from(tag) << 3)
}

/// Appends `v` as a varint.
#[inline(always)]
pub fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    let mut tmp = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        tmp[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    tmp[n] = v as u8;
    crate::copy::append_prefix(&tmp, n + 1, buf);
}

/// A field key that fits one byte (`tag` < 16).
#[inline(always)]
pub const fn key_byte(tag: u32, wire: WireType) -> u8 {
    (tag << 3) as u8 | wire as u8
}

#[inline(always)]
pub(crate) fn encode_key(tag: u32, wire: WireType, buf: &mut Vec<u8>) {
    encode_varint(u64::from(tag) << 3 | wire as u64, buf);
}

#[inline]
pub(crate) fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

#[inline]
pub(crate) fn put_len(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

#[inline]
pub(crate) fn put_bytes(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    put_len(tag, bytes.len(), buf);
    crate::copy::append(bytes, buf);
}

#[inline]
pub(crate) fn put_fixed64(tag: u32, v: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_fixed32(tag: u32, v: u32, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn put_varint(tag: u32, v: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(v, buf);
}

/// A value as `AnyValue` sees it, borrowed from a span's arena or from config.
#[derive(Clone, Copy, Debug)]
pub enum AnyValue<'a, L> {
    /// A string (`string_value`).
    Str(&'a [u8]),
    /// A signed integer (`int_value`).
    Int(i64),
    /// A boolean (`bool_value`).
    Bool(bool),
    /// A double (`double_value`).
    Double(f64),
    /// An array of strings (`array_value`).
    StrArray(L),
}

#[inline]
fn any_len<'a, L: Iterator<Item = &'a [u8]> + Clone>(v: &AnyValue<'a, L>) -> usize {
    match v {
        AnyValue::Str(s) => len_field(1, s.len()),
        AnyValue::Int(i) => 1 + encoded_len_varint(*i as u64),
        AnyValue::Bool(_) => 2,
        AnyValue::Double(_) => 9,
        AnyValue::StrArray(items) => len_field(5, array_len(items.clone())),
    }
}

fn array_len<'a>(items: impl Iterator<Item = &'a [u8]>) -> usize {
    items.map(|s| len_field(1, len_field(1, s.len()))).sum()
}

#[inline]
fn put_any<'a, L: Iterator<Item = &'a [u8]> + Clone>(v: &AnyValue<'a, L>, buf: &mut Vec<u8>) {
    match v {
        AnyValue::Str(s) => put_bytes(1, s, buf),
        AnyValue::Bool(b) => put_varint(2, *b as u64, buf),
        AnyValue::Int(i) => put_varint(3, *i as u64, buf),
        AnyValue::Double(d) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&d.to_le_bytes());
        }
        AnyValue::StrArray(items) => {
            put_len(5, array_len(items.clone()), buf);
            for s in items.clone() {
                put_len(1, len_field(1, s.len()), buf);
                put_bytes(1, s, buf);
            }
        }
    }
}

/// A `KeyValue`'s body length, for a value whose `AnyValue` encodes in `value_len` bytes.
#[inline]
fn kv_len(key: &[u8], value_len: usize) -> usize {
    len_field(1, key.len()) + len_field(2, value_len)
}

/// Writes one `KeyValue` as field `tag` of the enclosing message.
#[inline]
pub fn put_kv<'a, L: Iterator<Item = &'a [u8]> + Clone>(
    tag: u32,
    key: &[u8],
    v: &AnyValue<'a, L>,
    buf: &mut Vec<u8>,
) {
    // The value's length is needed twice (in the pair's length and its own): compute it once.
    let value_len = any_len(v);
    put_len(tag, kv_len(key, value_len), buf);
    put_bytes(1, key, buf);
    put_len(2, value_len, buf);
    put_any(v, buf);
}

/// Views a span attribute as an `AnyValue`.
#[inline]
fn attr_value<'s>(
    span: &'s SpanRecord,
    a: &'s Attribute,
) -> AnyValue<'s, impl Iterator<Item = &'s [u8]> + Clone> {
    match &a.value {
        Value::Str(r) => AnyValue::Str(span.text(r)),
        Value::Int(i) => AnyValue::Int(*i),
        Value::Bool(b) => AnyValue::Bool(*b),
        Value::Double(d) => AnyValue::Double(*d),
        Value::StrArray(r) => AnyValue::StrArray(span.list(r)),
    }
}

/// A string attribute small enough that every length in its `KeyValue` fits one varint byte
/// (nearly all of them): its encoded size and the 4-byte prefixes around key and value.
/// Written directly, the common case skips the general `AnyValue` path.
struct ShortStr<'s> {
    key: &'s [u8],
    value: &'s [u8],
    /// `KeyValue` body length: `key(1) klen key key(2) alen key(1) vlen value`.
    kv: usize,
}

impl<'s> ShortStr<'s> {
    #[inline]
    fn of(span: &'s SpanRecord, a: &'s Attribute, tag: u32) -> Option<Self> {
        let Value::Str(r) = &a.value else { return None };
        let (key, value) = (span.key_bytes(&a.key), span.text(r));
        let kv = 2 + key.len() + 2 + 2 + value.len();
        (tag < 16 && kv < 128).then_some(Self { key, value, kv })
    }

    #[inline]
    fn put(&self, tag: u32, buf: &mut Vec<u8>) {
        buf.reserve(2 + self.kv);
        const LEN: WireType = WireType::LengthDelimited;
        let any = 2 + self.value.len();
        buf.extend_from_slice(&[
            key_byte(tag, LEN),
            self.kv as u8,
            key_byte(1, LEN),
            self.key.len() as u8,
        ]);
        crate::copy::append(self.key, buf);
        buf.extend_from_slice(&[
            key_byte(2, LEN),
            any as u8,
            key_byte(1, LEN),
            self.value.len() as u8,
        ]);
        crate::copy::append(self.value, buf);
    }
}

fn attrs_len(span: &SpanRecord, attrs: &[Attribute], tag: u32) -> usize {
    attrs
        .iter()
        .map(|a| match ShortStr::of(span, a, tag) {
            Some(s) => 2 + s.kv,
            None => {
                let value_len = any_len(&attr_value(span, a));
                len_field(tag, kv_len(span.key_bytes(&a.key), value_len))
            }
        })
        .sum()
}

fn put_attrs(span: &SpanRecord, attrs: &[Attribute], tag: u32, buf: &mut Vec<u8>) {
    for a in attrs {
        match ShortStr::of(span, a, tag) {
            Some(s) => s.put(tag, buf),
            None => put_kv(tag, span.key_bytes(&a.key), &attr_value(span, a), buf),
        }
    }
}

fn status_len(span: &SpanRecord) -> usize {
    let msg = span
        .status_message
        .as_ref()
        .map_or(0, |r| len_field(2, span.text(r).len()));
    msg + if span.status == StatusCode::Unset {
        0
    } else {
        2
    }
}

fn event_len(span: &SpanRecord, e: &crate::span::Event) -> usize {
    9 + len_field(2, e.name.len())
        + attrs_len(
            span,
            &span.event_attrs[e.attrs.start as usize..e.attrs.end as usize],
            3,
        )
}

/// A link carries ids and flags only: 18 + 10 + 5 bytes.
const LINK_LEN: usize = 18 + 10 + 5;

/// The encoded length of the `Span` message body.
pub fn span_len(span: &SpanRecord) -> usize {
    let mut n = len_field(1, 16) + len_field(2, 8);
    if !span.trace_state().is_empty() {
        n += len_field(3, span.trace_state().len());
    }
    if span.parent_span_id.is_some() {
        n += len_field(4, 8);
    }
    n += len_field(5, span.name().len());
    n += 1 + encoded_len_varint(span.kind as u64);
    n += 9 + 9; // start and end, fixed64
    n += span.encoded_attrs_len();
    if span.dropped_attributes > 0 {
        n += 1 + encoded_len_varint(span.dropped_attributes as u64);
    }
    n += span
        .events
        .iter()
        .map(|e| len_field(11, event_len(span, e)))
        .sum::<usize>();
    n += span.links.len() * len_field(13, LINK_LEN);
    let st = status_len(span);
    if st > 0 {
        n += len_field(15, st);
    }
    n + 2 + 4 // flags: key 16 takes two bytes
}

/// Bytes [`encode_span`] appends for a span whose `Span` body is `len` bytes ([`span_len`]):
/// the `ScopeSpans.spans` key, the length varint and the body.
#[inline]
pub fn span_field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Appends `span` as a `ScopeSpans.spans` field (tag 2) to `buf`.
///
/// Once per span on the request path: the fixed fields go out as a few fixed-size blocks (one
/// capacity check each, into room reserved once) rather than a varint writer per field, and
/// what a usual span lacks (events, links, a status, dropped attributes) is written apart.
pub fn encode_span(span: &SpanRecord, buf: &mut Vec<u8>) {
    encode_span_sized(span, span_len(span), buf);
}

/// [`encode_span`] for a caller that computed `len = span_len(span)` already (the queue, to
/// choose the page the span goes to before writing it). Reserves exactly the field's size.
pub fn encode_span_sized(span: &SpanRecord, len: usize, buf: &mut Vec<u8>) {
    buf.reserve(span_field_len(len));
    put_len(2, len, buf);
    // `0a 10 trace_id 12 08 span_id`.
    let mut ids = [0u8; 28];
    ids[0] = key_byte(1, WireType::LengthDelimited);
    ids[1] = 16;
    ids[2..18].copy_from_slice(&span.trace_id.0);
    ids[18] = key_byte(2, WireType::LengthDelimited);
    ids[19] = 8;
    ids[20..].copy_from_slice(&span.span_id.0);
    buf.extend_from_slice(&ids);
    let trace_state = span.trace_state();
    if !trace_state.is_empty() {
        put_bytes(3, trace_state, buf);
    }
    if let Some(p) = span.parent_span_id {
        let mut parent = [0u8; 10];
        parent[0] = key_byte(4, WireType::LengthDelimited);
        parent[1] = 8;
        parent[2..].copy_from_slice(&p.0);
        buf.extend_from_slice(&parent);
    }
    put_bytes(5, span.name(), buf);
    // `30 kind 39 start 41 end`: the kind is 1 to 3, one varint byte.
    let mut times = [0u8; 20];
    times[0] = key_byte(6, WireType::Varint);
    times[1] = span.kind as u8;
    times[2] = key_byte(7, WireType::SixtyFourBit);
    times[3..11].copy_from_slice(&span.start_ns.to_le_bytes());
    times[11] = key_byte(8, WireType::SixtyFourBit);
    times[12..].copy_from_slice(&span.end_ns.to_le_bytes());
    buf.extend_from_slice(&times);
    span.append_encoded_attrs(buf);
    if has_rare_fields(span) {
        put_rare_fields(span, buf);
    }
    let remote = if span.parent_span_id.is_some() && span.parent_is_remote {
        FLAGS_REMOTE_PARENT
    } else {
        FLAGS_HAS_IS_REMOTE
    };
    // Field 16 (`fixed32`) takes a two-byte key: `85 01`.
    let f = (span.flags as u32 | remote).to_le_bytes();
    buf.extend_from_slice(&[0x85, 0x01, f[0], f[1], f[2], f[3]]);
}

/// Whether `span` has any field a usual span lacks: dropped attributes, events, links, a status.
#[inline]
fn has_rare_fields(span: &SpanRecord) -> bool {
    span.dropped_attributes > 0
        || !span.events.is_empty()
        || !span.links.is_empty()
        || span.status != StatusCode::Unset
        || span.status_message.is_some()
}

/// The fields of [`encode_span`] between the attributes and the flags that a usual span lacks.
#[inline(never)]
fn put_rare_fields(span: &SpanRecord, buf: &mut Vec<u8>) {
    if span.dropped_attributes > 0 {
        put_varint(10, span.dropped_attributes as u64, buf);
    }
    for e in &span.events {
        put_len(11, event_len(span, e), buf);
        put_fixed64(1, e.time_ns, buf);
        put_bytes(2, e.name.as_bytes(), buf);
        put_attrs(
            span,
            &span.event_attrs[e.attrs.start as usize..e.attrs.end as usize],
            3,
            buf,
        );
    }
    for l in &span.links {
        put_len(13, LINK_LEN, buf);
        put_bytes(1, &l.trace_id.0, buf);
        put_bytes(2, &l.span_id.0, buf);
        put_fixed32(6, l.flags as u32 | FLAGS_REMOTE_PARENT, buf);
    }
    let st = status_len(span);
    if st > 0 {
        put_len(15, st, buf);
        if let Some(r) = &span.status_message {
            put_bytes(2, span.text(r), buf);
        }
        if span.status != StatusCode::Unset {
            put_varint(3, span.status as u64, buf);
        }
    }
}

/// A resource attribute value held by config (encoded once per VM).
#[derive(Clone, Debug, PartialEq)]
pub enum ResourceValue {
    /// A string (`string_value`).
    Str(String),
    /// A signed integer (`int_value`).
    Int(i64),
    /// A boolean (`bool_value`).
    Bool(bool),
}

/// The per-VM prefix of every export: `Resource` and `InstrumentationScope`, encoded once.
#[derive(Clone, Debug, Default)]
pub struct BatchHeader {
    /// `ResourceSpans.resource` as a complete field.
    resource_field: Vec<u8>,
    /// `ScopeSpans.scope` as a complete field.
    scope_field: Vec<u8>,
}

impl BatchHeader {
    /// Encodes the resource attributes and the scope (`meshtrace`, crate version).
    pub fn new(resource: &[(&str, ResourceValue)]) -> Self {
        let mut attrs = Vec::new();
        for (k, v) in resource {
            let any: AnyValue<'_, core::iter::Empty<&[u8]>> = match v {
                ResourceValue::Str(s) => AnyValue::Str(s.as_bytes()),
                ResourceValue::Int(i) => AnyValue::Int(*i),
                ResourceValue::Bool(b) => AnyValue::Bool(*b),
            };
            put_kv(1, k.as_bytes(), &any, &mut attrs);
        }
        let mut resource_field = Vec::new();
        put_bytes(1, &attrs, &mut resource_field);
        let mut scope = Vec::new();
        put_bytes(1, crate::SCOPE_NAME.as_bytes(), &mut scope);
        put_bytes(2, crate::VERSION.as_bytes(), &mut scope);
        let mut scope_field = Vec::new();
        put_bytes(1, &scope, &mut scope_field);
        Self {
            resource_field,
            scope_field,
        }
    }

    /// Writes an `ExportTraceServiceRequest` holding `spans` (concatenated [`encode_span`]
    /// output) into `out`, replacing its contents. `ExportMetricsServiceRequest` has the same
    /// shape (`resource_metrics` 1 → `resource` 1, `scope_metrics` 2 → `scope` 1), so given
    /// concatenated `ScopeMetrics.metrics` fields this writes a metrics request with the same
    /// resource and scope as the spans.
    pub fn encode_request(&self, spans: &[u8], out: &mut Vec<u8>) {
        out.clear();
        self.append_request(spans, out);
    }

    /// [`Self::encode_request`], appended to what `out` holds (a gRPC frame's prefix).
    pub fn append_request(&self, spans: &[u8], out: &mut Vec<u8>) {
        let (resource_spans, scope_spans) = self.lengths(spans.len());
        out.reserve(len_field(1, resource_spans));
        put_len(1, resource_spans, out);
        out.extend_from_slice(&self.resource_field);
        put_len(2, scope_spans, out);
        out.extend_from_slice(&self.scope_field);
        out.extend_from_slice(spans);
    }

    /// `(ResourceSpans, ScopeSpans)` body lengths of a request holding `spans` span bytes.
    fn lengths(&self, spans: usize) -> (usize, usize) {
        let scope_spans = self.scope_field.len() + spans;
        (
            self.resource_field.len() + len_field(2, scope_spans),
            scope_spans,
        )
    }

    /// Bytes of a request before its spans, for `spans` bytes of span fields: what
    /// [`Self::append_request`] writes ahead of them.
    pub fn prefix_len(&self, spans: usize) -> usize {
        let (resource_spans, _) = self.lengths(spans);
        len_field(1, resource_spans) - spans
    }

    /// The largest [`Self::prefix_len`], for any span bytes: the room a buffer keeps before
    /// its first span so the request can be framed in place.
    pub fn max_prefix_len(&self) -> usize {
        // Two keys of one byte, and two length varints of at most 10 bytes.
        2 + 2 * 10 + self.resource_field.len() + self.scope_field.len()
    }

    /// Writes the request's prefix for `spans` span bytes into `dst`, which must be exactly
    /// [`Self::prefix_len`]`(spans)` long and is followed by those spans: the same bytes
    /// [`Self::append_request`] writes (canonical varints), in place.
    pub fn put_prefix(&self, spans: usize, dst: &mut [u8]) {
        let (resource_spans, scope_spans) = self.lengths(spans);
        let key = |tag| key_byte(tag, WireType::LengthDelimited);
        let (outer, rest) = dst.split_at_mut(1 + encoded_len_varint(resource_spans as u64));
        outer[0] = key(1);
        put_varint_at(&mut outer[1..], resource_spans as u64);
        let (resource, rest) = rest.split_at_mut(self.resource_field.len());
        resource.copy_from_slice(&self.resource_field);
        let (inner, scope) = rest.split_at_mut(1 + encoded_len_varint(scope_spans as u64));
        inner[0] = key(2);
        put_varint_at(&mut inner[1..], scope_spans as u64);
        scope.copy_from_slice(&self.scope_field);
    }
}

/// Each span's [`encode_span`] output on its own: what tests frame into requests the old way.
#[cfg(test)]
pub(crate) fn encode_each(spans: &[SpanRecord]) -> Vec<Vec<u8>> {
    spans
        .iter()
        .map(|s| {
            let mut f = Vec::new();
            encode_span(s, &mut f);
            f
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SpanId, TraceId};
    use crate::span::SpanKind;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use prost::Message;

    /// The field-by-field encoder [`encode_span`] replaced: the reference it must equal.
    fn reference_encode_span(span: &SpanRecord, buf: &mut Vec<u8>) {
        let len = span_len(span);
        buf.reserve(len + 6);
        put_len(2, len, buf);
        put_bytes(1, &span.trace_id.0, buf);
        put_bytes(2, &span.span_id.0, buf);
        if !span.trace_state().is_empty() {
            put_bytes(3, span.trace_state(), buf);
        }
        if let Some(p) = span.parent_span_id {
            put_bytes(4, &p.0, buf);
        }
        put_bytes(5, span.name(), buf);
        put_varint(6, span.kind as u64, buf);
        put_fixed64(7, span.start_ns, buf);
        put_fixed64(8, span.end_ns, buf);
        for run in span.encoded_attrs() {
            crate::copy::append(run, buf);
        }
        // The fields a usual span lacks were written field by field before the block writer
        // and still are: shared, so this reference checks the blocks around them.
        put_rare_fields(span, buf);
        let remote = if span.parent_span_id.is_some() && span.parent_is_remote {
            FLAGS_REMOTE_PARENT
        } else {
            FLAGS_HAS_IS_REMOTE
        };
        put_fixed32(16, span.flags as u32 | remote, buf);
    }

    proptest::proptest! {
        #[test]
        fn attributes_encode_like_prost_on_both_length_paths(
            key in "[a-z._]{1,80}",
            value in "[ -~é]{0,150}",
            int: i64,
            tag in 1u32..20,
        ) {
            // Short string pairs take `ShortStr`, long ones (and tags ≥ 16) and the int `put_kv`;
            // both must be exactly what prost writes for the same `KeyValue`s.
            use opentelemetry_proto::tonic::common::v1::{AnyValue as Pv, KeyValue};
            let mut span = SpanRecord::default();
            span.str_dyn(&[key.as_bytes()], value.as_bytes());
            span.int("n", int);
            let mut ours = Vec::new();
            put_attrs(&span, &span.attrs, tag, &mut ours);
            let mut theirs = Vec::new();
            for (k, v) in [(key, V::StringValue(value)), ("n".to_string(), V::IntValue(int))] {
                let kv = KeyValue { key: k, value: Some(Pv { value: Some(v) }), ..Default::default() };
                prost::encoding::message::encode(tag, &kv, &mut theirs);
            }
            proptest::prop_assert_eq!(&ours, &theirs);
            proptest::prop_assert_eq!(attrs_len(&span, &span.attrs, tag), ours.len());
        }

        #[test]
        fn attributes_encoded_when_set_are_what_prost_writes(
            key in proptest::collection::vec(bytes_near_the_widths(), 0..3),
            values in proptest::collection::vec(
                proptest::collection::vec(bytes_near_the_widths(), 0..3), 1..4),
            cap in 0u32..200,
            int: i64,
            double: f64,
            rename: bool,
        ) {
            // Repaired and cut values change lengths after their varint widths were chosen
            // (U+FFFD is three bytes for one): every path must still give prost's exact bytes,
            // and the typed view (`get`, `text`, `list`) must point inside them.
            use opentelemetry_proto::tonic::common::v1::{AnyValue as Pv, ArrayValue, KeyValue};
            let flat = |v: &Vec<Vec<u8>>| v.concat();
            let key = flat(&key);
            let values: Vec<Vec<u8>> = values.iter().map(flat).collect();
            let mut span = SpanRecord::default();
            span.max_value_len = cap;
            span.str("s", &values[0]);
            span.str_dyn(&[b"k.", &key], &values[0]);
            span.int("i", int);
            span.bool("b", rename);
            span.double("d", double);
            span.str_array("a", values.iter().map(Vec::as_slice));
            span.str_array_dyn(&[&key, b".a"], values.iter().map(Vec::as_slice));
            span.str("route", &values[values.len() - 1]);
            if rename {
                span.rename("route", "url.template");
                span.rename("a", "array");
                span.rename("i", "int");
                span.remove("b");
            }
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            let mut theirs = Vec::new();
            for a in &span.attrs {
                let value = match &a.value {
                    Value::Str(r) => V::StringValue(text(span.text(r))),
                    Value::Int(i) => V::IntValue(*i),
                    Value::Bool(b) => V::BoolValue(*b),
                    Value::Double(d) => V::DoubleValue(*d),
                    Value::StrArray(r) => V::ArrayValue(ArrayValue {
                        values: span
                            .list(r)
                            .map(|s| Pv { value: Some(V::StringValue(text(s))) })
                            .collect(),
                    }),
                };
                let kv = KeyValue {
                    key: text(span.key_bytes(&a.key)),
                    value: Some(Pv { value: Some(value) }),
                    ..Default::default()
                };
                prost::encoding::message::encode(SPAN_ATTRIBUTES, &kv, &mut theirs);
            }
            let ours: Vec<u8> = span.encoded_attrs().flatten().copied().collect();
            proptest::prop_assert_eq!(span.encoded_attrs_len(), ours.len());
            proptest::prop_assert_eq!(ours, theirs);
            let first = span.get("s").cloned();
            let Some(Value::Str(r)) = first else { panic!("{first:?}") };
            let want = String::from_utf8_lossy(&values[0]);
            let want = crate::limits::cut_at_char_boundary(
                want.as_bytes(),
                if cap == 0 { usize::MAX } else { cap as usize },
            );
            proptest::prop_assert_eq!(span.text(&r), want);
        }

        #[test]
        fn span_encodes_as_the_field_by_field_encoder(
            parent: bool,
            remote: bool,
            kind in 1u8..=3,
            times: (u64, u64),
            flags: u8,
            trace_state in "[a-z0-9=,]{0,40}",
            name in "[ -~é]{0,150}",
            values in proptest::collection::vec("[ -~é]{0,140}", 0..4),
            rename: bool,
            between: bool,
            rare in 0u8..32,
        ) {
            // The usual span (attributes in one run, no events, links or status) and every
            // rarer field, alone or together: the same bytes as the general encoder.
            let mut s = SpanRecord::default();
            s.trace_id = TraceId([7; 16]);
            s.span_id = SpanId([6; 8]);
            s.parent_span_id = parent.then_some(SpanId([5; 8]));
            s.parent_is_remote = remote;
            s.kind = match kind {
                1 => SpanKind::Internal,
                2 => SpanKind::Server,
                _ => SpanKind::Client,
            };
            (s.start_ns, s.end_ns) = times;
            s.flags = flags;
            s.set_trace_state(|b| b.extend_from_slice(trace_state.as_bytes()));
            s.set_name(&[name.as_bytes()]);
            for (i, v) in values.iter().enumerate() {
                s.str("http.route", v.as_bytes());
                if between && i == 0 {
                    // Text between two attributes breaks the run.
                    s.set_name(&[b"GET"]);
                }
                s.int("server.port", i as i64 * 300);
            }
            if rename {
                s.rename("http.route", "url.template");
            }
            if rare & 1 != 0 {
                s.dropped_attributes = 3;
            }
            if rare & 2 != 0 {
                s.event("fault.injected", 9, |e| e.str("mesh.fault.type", b"abort"));
            }
            if rare & 4 != 0 {
                s.links.push(crate::span::Link {
                    trace_id: TraceId([4; 16]),
                    span_id: SpanId([3; 8]),
                    flags: 1,
                });
            }
            if rare & 8 != 0 {
                s.status = StatusCode::Error;
            }
            if rare & 16 != 0 {
                s.set_status_message(b"boom");
            }
            let (mut ours, mut theirs) = (vec![1u8], vec![1u8]);
            encode_span(&s, &mut ours);
            reference_encode_span(&s, &mut theirs);
            proptest::prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn varints_match_prost(v: u64, tag in 1u32..(1 << 29)) {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            encode_varint(v, &mut ours);
            prost::encoding::encode_varint(v, &mut theirs);
            proptest::prop_assert_eq!(&ours, &theirs);
            proptest::prop_assert_eq!(encoded_len_varint(v), prost::encoding::encoded_len_varint(v));
            proptest::prop_assert_eq!(key_len(tag), prost::encoding::key_len(tag));
            ours.clear();
            theirs.clear();
            encode_key(tag, WireType::LengthDelimited, &mut ours);
            prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut theirs);
            proptest::prop_assert_eq!(ours, theirs);
        }

    }

    #[test]
    fn a_value_repaired_past_a_varint_width_is_written_again_exactly() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue as Pv, KeyValue};
        // 127 input bytes guess one-byte lengths; U+FFFD for the last makes the value 129.
        let mut value = vec![b'a'; 126];
        value.push(0xff);
        let mut span = SpanRecord::default();
        span.str("k", &value);
        span.str_dyn(&[b"\xff".repeat(43).as_slice()], b"v");
        let fixed = String::from_utf8_lossy(&value).into_owned();
        assert_eq!(fixed.len(), 129);
        let mut theirs = Vec::new();
        for (k, v) in [
            ("k".to_string(), fixed),
            ("\u{FFFD}".repeat(43), "v".into()),
        ] {
            let kv = KeyValue {
                key: k,
                value: Some(Pv {
                    value: Some(V::StringValue(v)),
                }),
                ..Default::default()
            };
            prost::encoding::message::encode(SPAN_ATTRIBUTES, &kv, &mut theirs);
        }
        let ours: Vec<u8> = span.encoded_attrs().flatten().copied().collect();
        assert_eq!(ours, theirs);
    }

    /// Runs of bytes whose lengths straddle the one-byte varint limit (127), with bytes that
    /// are not UTF-8 and two-byte characters mixed in.
    fn bytes_near_the_widths() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let byte = prop_oneof![8 => Just(b'a'), 1 => Just(0xff_u8), 1 => Just(0xc3_u8), 1 => Just(0xa9_u8)];
        prop_oneof![
            proptest::collection::vec(byte.clone(), 0..8),
            proptest::collection::vec(byte, 118..136),
        ]
    }

    fn sample_span() -> SpanRecord {
        let mut s = SpanRecord::default();
        s.trace_id = TraceId([1; 16]);
        s.span_id = SpanId([2; 8]);
        s.parent_span_id = Some(SpanId([3; 8]));
        s.parent_is_remote = true;
        s.flags = 1;
        s.kind = SpanKind::Client;
        s.start_ns = 1_700_000_000_000_000_000;
        s.end_ns = 1_700_000_000_000_500_000;
        s.status = StatusCode::Error;
        s.set_name(&[b"GET", b" ", b"/api"]);
        s.set_trace_state(|b| b.extend_from_slice(b"congo=t61rcWkgMzE"));
        s.str("http.request.method", b"GET");
        s.int("http.response.status_code", 503);
        s.bool("mesh.canary", true);
        s.double("mesh.traffic.weight", 0.25);
        s.str_array("envoy.response_flags", [&b"UF"[..], &b"URX"[..]]);
        s.str_dyn(&[b"http.request.header.", b"x-tenant"], b"acme");
        s.event("fault.injected", 5, |e| {
            e.str("mesh.fault.type", b"abort");
            e.int("http.response.status_code", 503);
        });
        s.links.push(crate::span::Link {
            trace_id: TraceId([9; 16]),
            span_id: SpanId([8; 8]),
            flags: 1,
        });
        s.set_status_message(b"boom");
        s
    }

    #[test]
    fn batch_decodes_field_by_field() {
        let header = BatchHeader::new(&[
            ("service.name", ResourceValue::Str("checkout".into())),
            ("k8s.pod.count", ResourceValue::Int(3)),
        ]);
        let span = sample_span();
        let mut spans = Vec::new();
        encode_span(&span, &mut spans);
        encode_span(&span, &mut spans);
        let mut out = Vec::new();
        header.encode_request(&spans, &mut out);
        let req = ExportTraceServiceRequest::decode(&out[..]).unwrap();
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(res.attributes[0].key, "service.name");
        assert_eq!(
            res.attributes[0].value.as_ref().unwrap().value,
            Some(V::StringValue("checkout".into()))
        );
        assert_eq!(
            res.attributes[1].value.as_ref().unwrap().value,
            Some(V::IntValue(3))
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "meshtrace");
        assert_eq!(ss.scope.as_ref().unwrap().version, crate::VERSION);
        assert_eq!(ss.spans.len(), 2);
        let s = &ss.spans[0];
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.span_id, vec![2; 8]);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.trace_state, "congo=t61rcWkgMzE");
        assert_eq!(s.name, "GET /api");
        assert_eq!(s.kind, 3);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_000_500_000);
        assert_eq!(s.flags, 0x301);
        let st = s.status.as_ref().unwrap();
        assert_eq!((st.code, st.message.as_str()), (2, "boom"));
        let val = |i: usize| {
            s.attributes[i]
                .value
                .as_ref()
                .unwrap()
                .value
                .clone()
                .unwrap()
        };
        assert_eq!(s.attributes[0].key, "http.request.method");
        assert_eq!(val(0), V::StringValue("GET".into()));
        assert_eq!(val(1), V::IntValue(503));
        assert_eq!(val(2), V::BoolValue(true));
        assert_eq!(val(3), V::DoubleValue(0.25));
        match val(4) {
            V::ArrayValue(a) => {
                let items: Vec<_> = a.values.iter().map(|v| v.value.clone().unwrap()).collect();
                assert_eq!(
                    items,
                    vec![V::StringValue("UF".into()), V::StringValue("URX".into())]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.attributes[5].key, "http.request.header.x-tenant");
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "fault.injected");
        assert_eq!(s.events[0].time_unix_nano, 5);
        assert_eq!(s.events[0].attributes.len(), 2);
        assert_eq!(s.links[0].trace_id, vec![9; 16]);
        assert_eq!(s.links[0].flags, 0x301);
        // The computed length is exact: the whole body decodes and re-encodes to the same size.
        assert_eq!(req.encoded_len(), out.len());
    }

    #[test]
    fn root_span_has_no_parent_and_no_remote_bit() {
        let mut s = sample_span();
        s.parent_span_id = None;
        s.status = StatusCode::Unset;
        s.status_message = None;
        let mut spans = Vec::new();
        encode_span(&s, &mut spans);
        let mut out = Vec::new();
        BatchHeader::new(&[]).encode_request(&spans, &mut out);
        let req = ExportTraceServiceRequest::decode(&out[..]).unwrap();
        let d = &req.resource_spans[0].scope_spans[0].spans[0];
        assert!(d.parent_span_id.is_empty());
        assert!(d.status.is_none());
        assert_eq!(d.flags, 0x101);
    }
}
