//! A finished-or-finishing span, built without allocating once its record is warm.
//!
//! String values are copied into one text arena owned by the record and referenced by range,
//! so a record cleared and reused keeps its capacity: no per-attribute `String`s.
//!
//! A span attribute enters the arena already in its OTLP encoding: the complete
//! `Span.attributes` field (a `KeyValue`), with its string value (and a built key) inside it,
//! where [`Value`] and [`Key`] ranges point. Finishing a span is then writing its fixed fields
//! and copying these bytes once ([`crate::export::otlp::encode_span`]), instead of walking
//! typed attributes a second time. The index ([`SpanRecord::attrs`]) keeps the typed view for
//! reading back (`get`) and for the few edits a span sees at its end (rename, remove).

use core::ops::Range;

use smallvec::SmallVec;

use crate::export::otlp::{self, AnyValue};
use crate::ids::{SpanId, TraceId};

/// OTLP `Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(i32)]
pub enum SpanKind {
    /// Internal work (not used by the proxy).
    Internal = 1,
    /// The proxy received the request (inbound).
    #[default]
    Server = 2,
    /// The proxy sent the request (outbound).
    Client = 3,
}

/// OTLP `Status.StatusCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(i32)]
pub enum StatusCode {
    /// No status set (success for HTTP below the error thresholds).
    #[default]
    Unset = 0,
    /// Explicitly OK.
    Ok = 1,
    /// An error.
    Error = 2,
}

/// An attribute key: a static semantic-convention name, or text in the arena
/// (captured header names such as `http.request.header.x-tenant`).
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// A semantic-convention name.
    Static(&'static str),
    /// A name built at run time, in the arena.
    Text(Range<u32>),
}

/// A typed attribute value. Strings and string arrays live in the arena.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string in the arena.
    Str(Range<u32>),
    /// A signed integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A double.
    Double(f64),
    /// A string array: the elements are consecutive `\0`-free ranges recorded in `lists`.
    StrArray(Range<u16>),
}

/// One attribute of a span.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    /// The attribute's name.
    pub key: Key,
    /// Its value.
    pub value: Value,
    /// A span attribute's complete `Span.attributes` field in the arena (empty for an event's
    /// attribute, encoded with its event). Built only by [`SpanRecord`], so it always matches
    /// `key` and `value`.
    enc: Range<u32>,
}

impl Attribute {
    /// The bytes of the encoded `Span.attributes` field in `span`'s arena.
    pub fn encoded<'s>(&self, span: &'s SpanRecord) -> &'s [u8] {
        span.text(&self.enc)
    }
}

/// A span event (e.g. `fault.injected`); its attributes share the span's arena.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event's name.
    pub name: &'static str,
    /// When it happened, in ns since the Unix epoch.
    pub time_ns: u64,
    /// Its attributes: a range of [`SpanRecord::event_attrs`].
    pub attrs: Range<u16>,
}

/// A link to another trace (an untrusted incoming context at the edge).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// The linked trace.
    pub trace_id: TraceId,
    /// The linked span.
    pub span_id: SpanId,
    /// The linked context's W3C flags.
    pub flags: u8,
}

/// A span name guessed from what the client sent, which stands only if the response shows
/// that what it names exists (see [`crate::span_name`]): settled by
/// [`crate::tracer::Tracer::finish_span`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GuessedName {
    /// The name is final (a configured route, the method alone, `grpc`).
    #[default]
    None,
    /// `{method} {http.route}` from the path templater.
    Route {
        /// Without the route, the name is its first `method_len` bytes.
        method_len: u32,
    },
    /// A gRPC `rpc.method` taken from the `:path`.
    RpcMethod,
}

/// A span's attribute index. A `Vec`, not inline storage: records are pooled, so its capacity
/// is kept across requests, every operation skips the inline-or-heap check, and a record moves
/// (into and out of its pool, with its stream) without a kilobyte of inline attributes.
pub type Attributes = Vec<Attribute>;

/// A span record. Reuse it with [`SpanRecord::clear`].
#[derive(Clone, Debug, Default)]
pub struct SpanRecord {
    /// The trace id.
    pub trace_id: TraceId,
    /// This span's id.
    pub span_id: SpanId,
    /// The parent span's id; `None` for a root.
    pub parent_span_id: Option<SpanId>,
    /// W3C flags of this span's context (sampled, random).
    pub flags: u8,
    /// Whether the parent is remote (it always is for a proxy; kept for OTLP's flag bits).
    pub parent_is_remote: bool,
    /// SERVER or CLIENT.
    pub kind: SpanKind,
    /// Start time, in ns since the Unix epoch.
    pub start_ns: u64,
    /// End time, in ns since the Unix epoch.
    pub end_ns: u64,
    /// The span status.
    pub status: StatusCode,
    /// Status message (only for errors that the status code cannot explain).
    pub status_message: Option<Range<u32>>,
    name: Range<u32>,
    trace_state: Range<u32>,
    /// The span's attributes, in the order written: an index of their encoded fields. Edit it
    /// only through the record's methods ([`Self::remove`], [`Self::rename`]), which keep the
    /// encoding in step.
    pub attrs: Attributes,
    /// The sum of the indexed attributes' encoded lengths. While no attribute was renamed or
    /// removed, the index is in arena order, so when this equals the distance from the first
    /// attribute's start to the last one's end nothing lies between them (the usual span):
    /// [`Self::encoded_attrs`] is then that one range, with no walk over the index. Kept with
    /// one addition per attribute rather than tracking the run itself on every write.
    encoded_total: u32,
    /// An attribute was renamed or removed: the index may no longer be in arena order.
    reordered: bool,
    /// Attributes of events, kept apart so span attributes stay contiguous.
    pub event_attrs: SmallVec<[Attribute; 4]>,
    /// Events (e.g. `fault.injected`).
    pub events: SmallVec<[Event; 2]>,
    /// Links (an untrusted incoming context).
    pub links: SmallVec<[Link; 1]>,
    /// String-array element ranges.
    lists: SmallVec<[Range<u32>; 8]>,
    /// Attributes refused by the per-span cap.
    pub dropped_attributes: u32,
    /// Whether the name is still a guess to settle when the span finishes.
    pub guessed_name: GuessedName,
    /// Whether the request's own headers gave `client.address` (`X-Forwarded-For`), so the
    /// span's end does not record the peer's address in its place: known when it is recorded,
    /// instead of searched for in the index at the end of every span.
    pub(crate) client_address_recorded: bool,
    /// The arena every string of this span lives in: valid UTF-8 in every range.
    text: Vec<u8>,
    /// Raw bytes being repaired into `text` (rarely used; keeps its capacity).
    scratch: Vec<u8>,
    /// Cap on attributes per span (0 = no cap).
    pub max_attributes: u32,
    /// Cap on each string value in bytes (0 = no cap); longer values are cut at a UTF-8 boundary.
    pub max_value_len: u32,
    /// Cap on the name in bytes (0 = no cap), cut at a UTF-8 boundary. The tracer's names
    /// already fit (see [`crate::span::name`]); this holds for any other caller.
    pub max_name_len: u32,
}

impl SpanRecord {
    /// Resets the record for reuse, keeping every buffer's capacity. Field by field, in place:
    /// rebuilding `Self` moved the inline attribute storage (a kilobyte) several times per span.
    pub fn clear(&mut self) {
        let Self {
            trace_id,
            span_id,
            parent_span_id,
            flags,
            parent_is_remote,
            kind,
            start_ns,
            end_ns,
            status,
            status_message,
            name,
            trace_state,
            attrs,
            encoded_total,
            reordered,
            event_attrs,
            events,
            links,
            lists,
            dropped_attributes,
            guessed_name,
            client_address_recorded,
            text,
            scratch,
            // The caps are configuration, kept across reuse.
            max_attributes: _,
            max_value_len: _,
            max_name_len: _,
        } = self;
        // Every field the destructuring names is reset to its type's default, as
        // `#[derive(Default)]` builds it, without building a whole record.
        *trace_id = Default::default();
        *span_id = Default::default();
        *parent_span_id = None;
        *flags = 0;
        *parent_is_remote = false;
        *kind = Default::default();
        *start_ns = 0;
        *end_ns = 0;
        *status = Default::default();
        *status_message = None;
        *name = Default::default();
        *trace_state = Default::default();
        *dropped_attributes = 0;
        *guessed_name = GuessedName::None;
        *client_address_recorded = false;
        attrs.clear();
        *encoded_total = 0;
        *reordered = false;
        event_attrs.clear();
        events.clear();
        links.clear();
        lists.clear();
        text.clear();
        // Holds only a setter's leftovers; its capacity is kept.
        scratch.clear();
    }

    /// Copies `s` into the arena as valid UTF-8 ([`crate::text::append`]: invalid sequences
    /// become U+FFFD), cut to `max_value_len` on a character boundary when `capped`. Every
    /// string a span holds enters the arena here (or through [`Self::set_trace_state`], which
    /// repairs what its writer wrote), so no attribute, key or name can carry invalid UTF-8
    /// into a protobuf `string` field.
    fn push_text(&mut self, s: &[u8], capped: bool) -> Range<u32> {
        let cap = if capped && self.max_value_len > 0 {
            self.max_value_len as usize
        } else {
            usize::MAX
        };
        let start = self.text.len() as u32;
        crate::text::append(s, cap, &mut self.text);
        start..self.text.len() as u32
    }

    /// The bytes of an arena range.
    pub fn text(&self, r: &Range<u32>) -> &[u8] {
        self.text
            .get(r.start as usize..r.end as usize)
            .unwrap_or(&[])
    }

    /// Sets the name from parts, cut to `max_name_len`.
    pub fn set_name(&mut self, parts: &[&[u8]]) {
        let cap = match self.max_name_len {
            0 => usize::MAX,
            n => n as usize,
        };
        let start = self.text.len();
        let total = parts.iter().map(|p| p.len()).sum::<usize>();
        if total <= cap {
            // Nearly always: ASCII parts (a method, a route) within the cap, copied into room
            // reserved once and proven ASCII by the words that move them; only then does the
            // arena's length cover them.
            self.text.reserve(total);
            let mut ascii = true;
            let mut at = start;
            for p in parts {
                // SAFETY: `reserve(total)` left room for every part past `start`, and `at` stays
                // within it (`at - start` is the sum of the parts before `p`). The parts are not
                // in the arena's spare room.
                ascii &= unsafe { crate::copy::write_ascii(p, self.text.as_mut_ptr().add(at)) };
                at += p.len();
            }
            if ascii {
                // SAFETY: the `total` bytes past `start` were written above.
                unsafe { self.text.set_len(start + total) };
                self.name = start as u32..self.text.len() as u32;
                return;
            }
        }
        for p in parts {
            // Each part goes through the same UTF-8 conversion as every value; the cap counts
            // what is already written, so the cut lands on a character boundary.
            let room = cap.saturating_sub(self.text.len() - start);
            if room == 0 {
                break;
            }
            crate::text::append(p, room, &mut self.text);
        }
        self.name = start as u32..self.text.len() as u32;
    }

    /// The span name.
    pub fn name(&self) -> &[u8] {
        self.text(&self.name)
    }

    /// Keeps the first `len` bytes of the name, which must end on a character boundary (a
    /// name's `{method}` prefix does); a longer `len` changes nothing.
    pub fn truncate_name(&mut self, len: u32) {
        let end = self.name.start.saturating_add(len).min(self.name.end);
        self.name.end = end;
    }

    /// Removes every attribute with the static key `key`, keeping the others in order (their
    /// encoded bytes stay in the arena, unused).
    pub fn remove(&mut self, key: &'static str) {
        let before = self.attrs.len();
        self.attrs.retain(|a| a.key != Key::Static(key));
        if self.attrs.len() != before {
            self.reordered = true;
        }
    }

    /// Sets the W3C `tracestate` from what `write` appends. What it wrote is checked (one SIMD
    /// scan when it is ASCII, as a valid `tracestate` is) and repaired if it is not UTF-8, then
    /// cut at a list-member boundary to [`crate::propagation::tracecontext::MAX_TRACE_STATE_BYTES`] (a valid list
    /// may hold 32 members of 513 bytes).
    pub fn set_trace_state(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.text.len();
        write(&mut self.text);
        crate::text::repair_tail(&mut self.text, start, &mut self.scratch);
        let max = crate::propagation::tracecontext::MAX_TRACE_STATE_BYTES;
        let end = start + crate::limits::cut_list_members(&self.text[start..], max).len();
        self.trace_state = start as u32..end as u32;
    }

    /// The W3C `tracestate`.
    pub fn trace_state(&self) -> &[u8] {
        self.text(&self.trace_state)
    }

    /// Sets the status message.
    pub fn set_status_message(&mut self, msg: &[u8]) {
        self.status_message = Some(self.push_text(msg, true));
    }

    /// The cap on a string value, in bytes.
    fn value_cap(&self) -> usize {
        match self.max_value_len {
            0 => usize::MAX,
            n => n as usize,
        }
    }

    /// Appends `a`, just written at the arena's end, to the index.
    #[inline(always)]
    fn index(&mut self, a: Attribute) {
        self.encoded_total = self
            .encoded_total
            .wrapping_add(a.enc.end.wrapping_sub(a.enc.start));
        self.attrs.push(a);
    }

    /// The single range holding every attribute's encoding, when there is one (see
    /// [`Self::encoded_total`]): checked against the index's ends, so an index edited outside
    /// the record's methods falls back to the walk unless it still covers one gapless range.
    fn whole_run(&self) -> Option<Range<u32>> {
        if self.reordered {
            return None;
        }
        let (first, last) = (self.attrs.first()?, self.attrs.last()?);
        let span = last.enc.end.checked_sub(first.enc.start)?;
        (span == self.encoded_total).then_some(first.enc.start..last.enc.end)
    }

    /// Appends every attribute's encoding to `buf` (the `Span.attributes` fields, in order):
    /// one copy for the usual span, the walk over the index's runs otherwise.
    #[inline]
    pub fn append_encoded_attrs(&self, buf: &mut Vec<u8>) {
        match self.whole_run() {
            Some(r) => crate::copy::append(self.text(&r), buf),
            None => self.append_encoded_runs(buf),
        }
    }

    #[cold]
    #[inline(never)]
    fn append_encoded_runs(&self, buf: &mut Vec<u8>) {
        for run in self.encoded_attrs() {
            crate::copy::append(run, buf);
        }
    }

    /// The encoded attributes' total size in bytes (the sum of [`Self::encoded_attrs`]).
    pub fn encoded_attrs_len(&self) -> usize {
        match self.whole_run() {
            Some(r) => (r.end - r.start) as usize,
            None => self.encoded_attrs().map(<[u8]>::len).sum(),
        }
    }

    fn full(&mut self) -> bool {
        if self.max_attributes > 0 && self.attrs.len() >= self.max_attributes as usize {
            self.dropped_attributes += 1;
            return true;
        }
        false
    }

    /// Encodes a scalar attribute (its value holds no arena range) and indexes it.
    fn push_scalar(&mut self, key: &'static str, value: Value) {
        if self.full() {
            return;
        }
        let start = self.text.len();
        // `AnyValue`: `18 varint` (int), `10 b` (bool) or `21 fixed64` (double).
        let mut any = [0u8; 11];
        let (any_len, general): (usize, AnyValue<'_, core::iter::Empty<&[u8]>>) = match value {
            Value::Int(i) => {
                any[0] = otlp::key_byte(3, otlp::WireType::Varint);
                let n = otlp::encoded_len_varint(i as u64);
                otlp::put_varint_at(&mut any[1..1 + n], i as u64);
                (1 + n, AnyValue::Int(i))
            }
            Value::Bool(b) => {
                any[0] = otlp::key_byte(2, otlp::WireType::Varint);
                any[1] = b as u8;
                (2, AnyValue::Bool(b))
            }
            Value::Double(d) => {
                any[0] = otlp::key_byte(4, otlp::WireType::SixtyFourBit);
                any[1..9].copy_from_slice(&d.to_le_bytes());
                (9, AnyValue::Double(d))
            }
            // Strings have their own writers.
            Value::Str(_) | Value::StrArray(_) => return,
        };
        let k = key.len();
        let kv = 2 + k + 2 + any_len;
        if kv < 128 {
            // Every length is one byte (all conventional keys): `4a kv 0a k key 12 any ...`.
            self.text.reserve(2 + kv);
            self.text
                .extend_from_slice(&[otlp::SPAN_ATTRIBUTES_KEY, kv as u8, 0x0a, k as u8]);
            crate::copy::append(key.as_bytes(), &mut self.text);
            self.text.extend_from_slice(&[0x12, any_len as u8]);
            crate::copy::append_prefix(&any, any_len, &mut self.text);
        } else {
            otlp::put_kv(
                otlp::SPAN_ATTRIBUTES,
                key.as_bytes(),
                &general,
                &mut self.text,
            );
        }
        self.index(Attribute {
            key: Key::Static(key),
            value,
            enc: start as u32..self.text.len() as u32,
        });
    }

    /// Encodes a string attribute and indexes it: the key (static, or built from parts made
    /// valid UTF-8) and the value (valid UTF-8 within the cap, [`crate::text::append`]) are
    /// written in place inside their `KeyValue`. The common pair, every length under 128,
    /// is written with one-byte length slots filled in afterwards; the input lengths predict
    /// that, and when a repaired or cut value (or a long one) needs wider varints, key and
    /// value are made in `scratch` and the pair written with exact lengths.
    fn push_str(&mut self, key: KeyParts<'_>, value: &[u8]) {
        if self.full() {
            return;
        }
        let cap = self.value_cap();
        let start = self.text.len();
        let (k_in, v_in) = (key.len(), value.len().min(cap));
        let (k, v) = if k_in + v_in + SHORT_KV_OVERHEAD < 128 {
            self.text.reserve(2 + SHORT_KV_OVERHEAD + k_in + v_in);
            self.text
                .extend_from_slice(&[otlp::SPAN_ATTRIBUTES_KEY, 0, 0x0a, 0]);
            let ks = self.text.len();
            key.write(&mut self.text);
            let ke = self.text.len();
            self.text.extend_from_slice(&[0x12, 0, 0x0a, 0]);
            let vs = self.text.len();
            crate::text::append(value, cap, &mut self.text);
            let ve = self.text.len();
            let (k, v) = (ke - ks, ve - vs);
            if k + v + SHORT_KV_OVERHEAD < 128 {
                // The slots: `4a [kv] 0a [k] key 12 [any] 0a [v] value`.
                let t = &mut self.text[start..];
                t[1] = (k + v + SHORT_KV_OVERHEAD) as u8;
                t[3] = k as u8;
                t[ke - start + 1] = (v + 2) as u8;
                t[vs - start - 1] = v as u8;
                let key = match key {
                    KeyParts::Static(s) => Key::Static(s),
                    KeyParts::Parts(_) => Key::Text(ks as u32..ke as u32),
                };
                self.index(Attribute {
                    key,
                    value: Value::Str(vs as u32..ve as u32),
                    enc: start as u32..ve as u32,
                });
                return;
            }
            // Repair made a length outgrow its one-byte slot: move the made key and value
            // aside and write them again.
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.text[ks..ke]);
            self.scratch.extend_from_slice(&self.text[vs..ve]);
            self.text.truncate(start);
            (k, v)
        } else {
            self.scratch.clear();
            key.write(&mut self.scratch);
            let k = self.scratch.len();
            crate::text::append(value, cap, &mut self.scratch);
            (k, self.scratch.len() - k)
        };
        let (kb, vb) = self.scratch.split_at(k);
        let (kr, vr) = write_str_kv(&mut self.text, kb, &vb[..v]);
        let key = match key {
            KeyParts::Static(s) => Key::Static(s),
            KeyParts::Parts(_) => Key::Text(kr),
        };
        self.index(Attribute {
            key,
            value: Value::Str(vr),
            enc: start as u32..self.text.len() as u32,
        });
    }

    /// Encodes a string-array attribute and indexes it. The elements are made valid and capped
    /// into `scratch` first, so the encoding is written once with exact lengths (arrays are
    /// rare: response flags, repeated captured headers).
    fn push_array<'s>(&mut self, key: KeyParts<'_>, values: impl IntoIterator<Item = &'s [u8]>) {
        if self.full() {
            return;
        }
        let cap = self.value_cap();
        self.scratch.clear();
        key.write(&mut self.scratch);
        let key_len = self.scratch.len();
        let first = self.lists.len();
        for v in values {
            let at = self.scratch.len() as u32;
            crate::text::append(v, cap, &mut self.scratch);
            self.lists.push(at..self.scratch.len() as u32);
        }
        let key = match key {
            KeyParts::Static(s) => Some(s),
            KeyParts::Parts(_) => None,
        };
        self.encode_array(key, key_len, first);
    }

    /// The non-generic half of [`Self::push_array`]: `scratch` holds the key (`key_len`
    /// bytes) then the elements, which `lists[first..]` locates in it.
    #[inline(never)]
    fn encode_array(&mut self, static_key: Option<&'static str>, key_len: usize, first: usize) {
        let last = self.lists.len();
        let start = self.text.len();
        {
            let scratch = &self.scratch;
            let items = self.lists[first..last]
                .iter()
                .map(|r| scratch.get(r.start as usize..r.end as usize).unwrap_or(&[]));
            otlp::put_kv(
                otlp::SPAN_ATTRIBUTES,
                &scratch[..key_len],
                &AnyValue::StrArray(items),
                &mut self.text,
            );
        }
        let end = self.text.len();
        // Point the element ranges at the copies inside the encoding: walking back from its
        // end, each element is preceded by `0a len(0a n s) 0a n`.
        let mut at = end;
        for r in self.lists[first..last].iter_mut().rev() {
            let n = (r.end - r.start) as usize;
            *r = (at - n) as u32..at as u32;
            let inner = 1 + otlp::encoded_len_varint(n as u64) + n;
            at -= inner + 1 + otlp::encoded_len_varint(inner as u64);
        }
        let key = match static_key {
            Some(s) => Key::Static(s),
            None => {
                // `4a kv 0a klen key ...`
                let k = start + 1 + otlp::varint_at(&self.text[start + 1..end]) + 1;
                let k = k + otlp::encoded_len_varint(key_len as u64);
                Key::Text(k as u32..(k + key_len) as u32)
            }
        };
        self.index(Attribute {
            key,
            value: Value::StrArray(first as u16..last as u16),
            enc: start as u32..end as u32,
        });
    }

    /// Adds a string attribute; the value is capped at `max_value_len` bytes.
    pub fn str(&mut self, key: &'static str, value: &[u8]) {
        if !self.push_short_str(key, value) {
            self.push_str(KeyParts::Static(key), value);
        }
    }

    /// Where a short writer's attribute starts in the arena, or what the writer returns
    /// without writing: `true` when the attribute limit drops it (counted, as the general
    /// writers would), `false` when the arena is past the ranges the short form may hold.
    #[inline(always)]
    fn short_start(&mut self) -> Result<usize, bool> {
        if self.full() {
            return Err(true);
        }
        let start = self.text.len();
        if start > u32::MAX as usize / 2 {
            return Err(false);
        }
        Ok(start)
    }

    /// Nearly every attribute: a conventional key and a short ASCII value. Every length is
    /// known before writing (ASCII is UTF-8, and any cut of it ends on a character), so the
    /// pair goes out in order into room reserved once, `4a kv 0a k key 12 any 0a v value`, and
    /// the value is proven ASCII by the words that copy it ([`crate::copy::write_ascii`]).
    /// False (nothing written) for any other pair, which [`Self::push_str`] takes.
    #[inline(never)]
    fn push_short_str(&mut self, key: &'static str, value: &[u8]) -> bool {
        let (k, v) = (key.len(), value.len().min(self.value_cap()));
        let kv = k + v + SHORT_KV_OVERHEAD;
        let value = &value[..v];
        if kv >= 128 {
            return false;
        }
        let start = match self.short_start() {
            Ok(start) => start,
            Err(handled) => return handled,
        };
        self.text.reserve(2 + kv);
        // SAFETY: `reserve` left at least `2 + kv` bytes past `start`; the writes below fill
        // exactly `4 + k + 4 + v == 2 + kv` of them, from `key` and `value`, which do not
        // live in `text`'s spare room. The length covers them only once the value proved
        // ASCII; otherwise they stay spare room.
        unsafe {
            let p = self.text.as_mut_ptr().add(start);
            write_key_head(p, kv, key);
            p.add(4 + k)
                .cast::<[u8; 4]>()
                .write_unaligned([0x12, (v + 2) as u8, 0x0a, v as u8]);
            if !crate::copy::write_ascii(value, p.add(8 + k)) {
                return false;
            }
            self.text.set_len(start + 2 + kv);
        }
        let vs = (start + 8 + k) as u32;
        self.index(Attribute {
            key: Key::Static(key),
            value: Value::Str(vs..vs + v as u32),
            enc: start as u32..vs + v as u32,
        });
        true
    }

    /// A string attribute whose key is built from parts (e.g. a captured header name).
    pub fn str_dyn(&mut self, key_parts: &[&[u8]], value: &[u8]) {
        self.push_str(KeyParts::Parts(key_parts), value);
    }

    /// Adds an integer attribute.
    pub fn int(&mut self, key: &'static str, value: i64) {
        if !self.push_small_int(key, value) {
            self.push_scalar(key, Value::Int(value));
        }
    }

    /// Ports, status codes, counts: a conventional key and a value in `0..2^21`, a varint of
    /// one to three bytes, so every length is one byte and known before writing:
    /// `4a kv 0a k key 12 any 18 varint`, in order into room reserved once. False (nothing
    /// written) for any other pair, which [`Self::push_scalar`] takes.
    #[inline(never)]
    fn push_small_int(&mut self, key: &'static str, i: i64) -> bool {
        if !(0..1 << 21).contains(&i) {
            return false;
        }
        let k = key.len();
        // Varint bytes beyond the first: one per further started group of seven bits.
        let (more1, more2) = (i >= 1 << 7, i >= 1 << 14);
        let any_len = 2 + usize::from(more1) + usize::from(more2);
        let kv = 2 + k + 2 + any_len;
        if kv >= 128 {
            return false;
        }
        let start = match self.short_start() {
            Ok(start) => start,
            Err(handled) => return handled,
        };
        // Two bytes more than the encoding may need: the value's block is written whole (six
        // bytes) whatever its varint's width.
        self.text.reserve(4 + kv);
        let varint = [
            (i & 0x7f) as u8 | u8::from(more1) << 7,
            (i >> 7 & 0x7f) as u8 | u8::from(more2) << 7,
            (i >> 14) as u8,
        ];
        // SAFETY: `reserve` left at least `4 + kv` bytes past `start`; the writes below fill
        // `4 + k + 6 <= 4 + kv` bytes (`any_len` is at least 2), from `key`, which does not
        // live in `text`'s spare room; the length then covers the `2 + kv` that encode.
        unsafe {
            let p = self.text.as_mut_ptr().add(start);
            write_key_head(p, kv, key);
            p.add(4 + k).cast::<[u8; 6]>().write_unaligned([
                0x12,
                any_len as u8,
                0x18,
                varint[0],
                varint[1],
                varint[2],
            ]);
            self.text.set_len(start + 2 + kv);
        }
        self.index(Attribute {
            key: Key::Static(key),
            value: Value::Int(i),
            enc: start as u32..(start + 2 + kv) as u32,
        });
        true
    }

    /// Adds a boolean attribute.
    pub fn bool(&mut self, key: &'static str, value: bool) {
        self.push_scalar(key, Value::Bool(value));
    }

    /// Adds a double attribute.
    pub fn double(&mut self, key: &'static str, value: f64) {
        self.push_scalar(key, Value::Double(value));
    }

    /// A string-array attribute (`envoy.response_flags`, captured header values).
    pub fn str_array<'s>(&mut self, key: &'static str, values: impl IntoIterator<Item = &'s [u8]>) {
        self.push_array(KeyParts::Static(key), values);
    }

    /// A string-array attribute whose key is built from parts (captured header values).
    pub fn str_array_dyn<'s>(
        &mut self,
        key_parts: &[&[u8]],
        values: impl IntoIterator<Item = &'s [u8]>,
    ) {
        self.push_array(KeyParts::Parts(key_parts), values);
    }

    /// Renames every attribute with the static key `from` to `to`, in place in the order
    /// (the kind, and so the conventional name, may be known only when the span ends). Each is
    /// encoded again at the arena's end; the old bytes are left unused.
    pub fn rename(&mut self, from: &'static str, to: &'static str) {
        for i in 0..self.attrs.len() {
            if self.attrs[i].key == Key::Static(from) {
                self.rename_at(i, to);
            }
        }
    }

    /// Renames attribute `i` (an index into [`Self::attrs`]) to the static key `to`: a new
    /// `KeyValue` head with the new key, then the old encoded value (`12 ...`) copied whole,
    /// whatever its type; the value's ranges move with it.
    pub fn rename_at(&mut self, i: usize, to: &'static str) {
        let Some(a) = self.attrs.get(i) else {
            return;
        };
        let (enc, key_len) = (a.enc.clone(), self.key_bytes(&a.key).len());
        let (enc_start, enc_end) = (enc.start as usize, enc.end as usize);
        // `4a kv 0a klen key`: the value starts after the key.
        let Some(kv_at) = enc_start.checked_add(1) else {
            return;
        };
        let head = self.text.get(kv_at..enc_end).map_or(0, otlp::varint_at);
        let klen_at = kv_at + head + 1;
        let klen_w = self.text.get(klen_at..enc_end).map_or(0, otlp::varint_at);
        let value_at = klen_at + klen_w + key_len;
        if value_at > enc_end || self.text.len() > u32::MAX as usize / 2 {
            return;
        }
        let value_len = enc_end - value_at;
        let start = self.text.len();
        let kv = 1 + otlp::encoded_len_varint(to.len() as u64) + to.len() + value_len;
        self.text.push(otlp::SPAN_ATTRIBUTES_KEY);
        otlp::encode_varint(kv as u64, &mut self.text);
        self.text.push(0x0a);
        otlp::encode_varint(to.len() as u64, &mut self.text);
        self.text.extend_from_slice(to.as_bytes());
        let moved_to = self.text.len();
        self.text.extend_from_within(value_at..enc_end);
        let shift = |r: &mut Range<u32>| {
            r.start = r.start - value_at as u32 + moved_to as u32;
            r.end = r.end - value_at as u32 + moved_to as u32;
        };
        let mut value = self.attrs[i].value.clone();
        match &mut value {
            Value::Str(r) => shift(r),
            Value::StrArray(l) => {
                for r in &mut self.lists[l.start as usize..l.end as usize] {
                    shift(r);
                }
            }
            Value::Int(_) | Value::Bool(_) | Value::Double(_) => {}
        }
        self.reordered = true;
        self.attrs[i] = Attribute {
            key: Key::Static(to),
            value,
            enc: start as u32..self.text.len() as u32,
        };
    }

    /// The span's attributes as they were encoded when set (`Span.attributes` fields, in
    /// order), as contiguous runs of the arena: attributes set back to back, nearly always all
    /// of them, are one run and so one copy.
    pub fn encoded_attrs(&self) -> impl Iterator<Item = &[u8]> {
        let whole = self.whole_run();
        let walk = if whole.is_some() {
            &self.attrs[..0]
        } else {
            &self.attrs[..]
        };
        let mut attrs = walk.iter().map(|a| a.enc.clone()).peekable();
        let whole = whole.map(|r| self.text(&r));
        whole.into_iter().chain(core::iter::from_fn(move || {
            let mut run = attrs.next()?;
            while let Some(next) = attrs.next_if(|n| n.start == run.end) {
                run.end = next.end;
            }
            Some(self.text(&run))
        }))
    }

    /// The elements of a string array.
    pub fn list(&self, r: &Range<u16>) -> impl Iterator<Item = &[u8]> + Clone {
        self.lists[r.start as usize..r.end as usize]
            .iter()
            .map(|x| self.text(x))
    }

    /// Adds an event with string/int attributes built by `f`.
    pub fn event(&mut self, name: &'static str, time_ns: u64, f: impl FnOnce(&mut EventAttrs<'_>)) {
        let first = self.event_attrs.len() as u16;
        f(&mut EventAttrs { span: self });
        let last = self.event_attrs.len() as u16;
        self.events.push(Event {
            name,
            time_ns,
            attrs: first..last,
        });
    }

    /// The value of a static-key attribute, for tests and rules that read back what was set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attrs.iter().find_map(|a| match &a.key {
            Key::Static(k) if *k == key => Some(&a.value),
            Key::Text(r) if self.text(r) == key.as_bytes() => Some(&a.value),
            _ => None,
        })
    }

    /// The key bytes of an attribute.
    pub fn key_bytes<'s>(&'s self, k: &'s Key) -> &'s [u8] {
        match k {
            Key::Static(s) => s.as_bytes(),
            Key::Text(r) => self.text(r),
        }
    }
}

/// An attribute key as a setter receives it: a semantic-convention name, or parts to be made
/// valid UTF-8 and joined (a captured header's name).
#[derive(Clone, Copy)]
enum KeyParts<'a> {
    Static(&'static str),
    Parts(&'a [&'a [u8]]),
}

impl KeyParts<'_> {
    /// The input length, which is the written length unless a part needs repair.
    #[inline(always)]
    fn len(&self) -> usize {
        match self {
            Self::Static(s) => s.len(),
            Self::Parts(p) => p.iter().map(|p| p.len()).sum(),
        }
    }

    /// Appends the key: a static name as is (it is UTF-8), parts through
    /// [`crate::text::append`], uncapped.
    #[inline(always)]
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Static(s) => crate::copy::append(s.as_bytes(), out),
            Self::Parts(parts) => {
                for p in *parts {
                    crate::text::append(p, usize::MAX, out);
                }
            }
        }
    }
}

/// What a string `KeyValue` field adds to its key and value when every length is one byte:
/// `0a klen` and `12 anylen 0a vlen` inside it.
const SHORT_KV_OVERHEAD: usize = 6;

/// Writes a short attribute's head, `4a kv 0a k key`, at `p`: the `Span.attributes` key, the
/// `KeyValue` length `kv` (under 128, one byte), and the key with its one-byte length.
///
/// # Safety
/// `p` must be valid for `4 + key.len()` byte writes that do not overlap `key`, and
/// `key.len()` and `kv` must be under 128.
#[inline(always)]
unsafe fn write_key_head(p: *mut u8, kv: usize, key: &str) {
    p.cast::<[u8; 4]>().write_unaligned([
        otlp::SPAN_ATTRIBUTES_KEY,
        kv as u8,
        0x0a,
        key.len() as u8,
    ]);
    crate::copy::write(key.as_bytes(), p.add(4));
}

/// Writes a string `KeyValue` as a `Span.attributes` field with exact lengths,
/// `4a kv 0a klen key 12 any 0a vlen value`, and returns where the key and the value landed.
fn write_str_kv(text: &mut Vec<u8>, key: &[u8], value: &[u8]) -> (Range<u32>, Range<u32>) {
    let any = AnyValue::<core::iter::Empty<&[u8]>>::Str(value);
    otlp::put_kv(otlp::SPAN_ATTRIBUTES, key, &any, text);
    let end = text.len();
    let vs = end - value.len();
    // Back from the value: `12 any 0a vlen` precede it.
    let any_len = 1 + otlp::encoded_len_varint(value.len() as u64) + value.len();
    let ke = vs
        - 2
        - otlp::encoded_len_varint(value.len() as u64)
        - otlp::encoded_len_varint(any_len as u64);
    let ks = ke - key.len();
    (ks as u32..ke as u32, vs as u32..end as u32)
}

/// Builder handed to [`SpanRecord::event`].
pub struct EventAttrs<'s> {
    span: &'s mut SpanRecord,
}

impl EventAttrs<'_> {
    /// Adds a string attribute to the event.
    pub fn str(&mut self, key: &'static str, value: &[u8]) {
        let r = self.span.push_text(value, true);
        self.span.event_attrs.push(Attribute {
            key: Key::Static(key),
            value: Value::Str(r),
            enc: 0..0,
        });
    }

    /// Adds an integer attribute to the event.
    pub fn int(&mut self, key: &'static str, value: i64) {
        self.span.event_attrs.push(Attribute {
            key: Key::Static(key),
            value: Value::Int(value),
            enc: 0..0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Both integer writers (small non-negative values, and the rest) and both string
        /// writers (plain ASCII, and repaired or long values) give what prost writes.
        #[test]
        fn attributes_are_what_prost_writes(
            small in 0i64..0x5000,
            port in 0i64..0x30_0000,
            int: i64,
            key in "[a-z._]{1,130}",
            value in "[ -~é\u{0}]{0,130}",
        ) {
            use opentelemetry_proto::tonic::common::v1::{any_value::Value as V, AnyValue, KeyValue};
            let key: &'static str = Box::leak(key.into_boxed_str());
            let mut span = SpanRecord::default();
            span.int(key, small);
            span.int(key, port);
            span.int(key, int);
            span.str(key, value.as_bytes());
            let mut theirs = Vec::new();
            for v in [
                V::IntValue(small),
                V::IntValue(port),
                V::IntValue(int),
                V::StringValue(value.clone()),
            ] {
                let kv = KeyValue {
                    key: key.to_string(),
                    value: Some(AnyValue { value: Some(v) }),
                    ..Default::default()
                };
                prost::encoding::message::encode(9, &kv, &mut theirs);
            }
            let ours: Vec<u8> = span.attrs.iter().flat_map(|a| a.encoded(&span).to_vec()).collect();
            proptest::prop_assert_eq!(ours, theirs);
            proptest::prop_assert_eq!(span.get(key), Some(&Value::Int(small)));
        }
    }

    proptest::proptest! {
        /// The name's ASCII fast path gives what the part-by-part conversion gives, cap and
        /// repair included.
        #[test]
        fn set_name_is_the_part_by_part_conversion(
            parts in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        8 => 0x20u8..0x7f,
                        1 => proptest::prelude::any::<u8>(),
                    ],
                    0..90,
                ),
                0..5,
            ),
            cap in 0u32..120,
            arena in 0usize..40,
        ) {
            let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let mut span = SpanRecord { max_name_len: cap, ..Default::default() };
            // Something in the arena before the name, as an attribute or a tracestate leaves.
            span.set_trace_state(|b| b.extend(core::iter::repeat_n(b'x', arena)));
            span.set_name(&parts);
            let room = if cap == 0 { usize::MAX } else { cap as usize };
            let mut want = Vec::new();
            for p in &parts {
                let left = room.saturating_sub(want.len());
                if left == 0 {
                    break;
                }
                crate::text::append(p, left, &mut want);
            }
            proptest::prop_assert_eq!(span.name(), &want[..]);
            proptest::prop_assert_eq!(span.trace_state(), &vec![b'x'; arena][..]);
        }
    }

    #[test]
    fn caps_and_reuse() {
        let mut s = SpanRecord {
            max_attributes: 2,
            max_value_len: 4,
            ..Default::default()
        };
        s.str("a", "héllo".as_bytes());
        s.int("b", 1);
        s.bool("c", true);
        assert_eq!(s.attrs.len(), 2);
        assert_eq!(s.dropped_attributes, 1);
        match s.get("a") {
            // A 4-byte cut of "héllo" ends on a character boundary: "hél".
            Some(Value::Str(r)) => assert_eq!(s.text(r), "hél".as_bytes()),
            other => panic!("{other:?}"),
        }
        s.clear();
        assert!(s.attrs.is_empty());
        assert_eq!(s.max_attributes, 2);
    }

    #[test]
    fn name_and_trace_state_are_capped() {
        let mut s = SpanRecord {
            max_name_len: 6,
            ..Default::default()
        };
        s.set_name(&[b"GET ", "/é".as_bytes()]);
        // 7 bytes: the cut backs off the two-byte character.
        assert_eq!(s.name(), b"GET /");
        s.set_name(&[b"GET"]);
        assert_eq!(s.name(), b"GET");
        // 32 members of 17 bytes: 575 bytes, cut to the 28 members that fit in 512.
        let member = |i: usize| format!("vendor{i:02}=abcdefgh");
        let list: Vec<String> = (0..32).map(member).collect();
        s.set_trace_state(|b| b.extend_from_slice(list.join(",").as_bytes()));
        assert_eq!(s.trace_state(), list[..28].join(",").as_bytes());
        s.set_trace_state(|b| b.extend_from_slice(b"congo=t61"));
        assert_eq!(s.trace_state(), b"congo=t61");
    }

    #[test]
    fn every_setter_stores_valid_utf8_within_the_cap() {
        let mut s = SpanRecord {
            max_value_len: 6,
            ..Default::default()
        };
        let bad = b"ab\xffcd\xfe";
        s.set_name(&[b"G\xffT", b" ", b"/\xe2\x82"]);
        s.set_trace_state(|b| b.extend_from_slice(b"k=\xff"));
        s.set_status_message(bad);
        s.str("v", bad);
        s.str_dyn(&[b"k.", b"\xff"], bad);
        s.str_array("a", [&bad[..], b"\xc3"]);
        s.str_array_dyn(&[b"d.\xfe"], [&bad[..]]);
        s.event("e", 0, |e| e.str("ev", bad));
        let fffd = "\u{FFFD}";
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        assert_eq!(text(s.name()), format!("G{fffd}T /{fffd}"));
        assert_eq!(text(s.trace_state()), format!("k={fffd}"));
        // "ab" + U+FFFD is 5 bytes; "c" makes 6; the cap leaves out the rest.
        let capped = format!("ab{fffd}c");
        assert_eq!(text(s.text(s.status_message.as_ref().unwrap())), capped);
        let strs: Vec<(String, Vec<String>)> = s
            .attrs
            .iter()
            .chain(&s.event_attrs)
            .map(|a| {
                let values = match &a.value {
                    Value::Str(r) => vec![text(s.text(r))],
                    Value::StrArray(r) => s.list(r).map(text).collect(),
                    other => panic!("{other:?}"),
                };
                (text(s.key_bytes(&a.key)), values)
            })
            .collect();
        assert_eq!(
            strs,
            [
                ("v".to_string(), vec![capped.clone()]),
                (format!("k.{fffd}"), vec![capped.clone()]),
                ("a".into(), vec![capped.clone(), fffd.into()]),
                (format!("d.{fffd}"), vec![capped.clone()]),
                ("ev".into(), vec![capped.clone()]),
            ]
        );
    }

    #[test]
    fn clear_leaves_a_fresh_record_with_the_caps() {
        let caps = || SpanRecord {
            max_attributes: 8,
            max_value_len: 16,
            max_name_len: 32,
            ..Default::default()
        };
        let mut s = caps();
        s.trace_id = crate::ids::TraceId([1; 16]);
        s.span_id = crate::ids::SpanId([2; 8]);
        s.parent_span_id = Some(crate::ids::SpanId([3; 8]));
        s.flags = 1;
        s.parent_is_remote = true;
        s.kind = SpanKind::Client;
        s.start_ns = 5;
        s.end_ns = 6;
        s.status = StatusCode::Error;
        s.set_status_message(b"boom");
        s.set_name(&[b"GET ", b"/x"]);
        s.set_trace_state(|b| b.extend_from_slice(b"k=v"));
        s.str("a", b"b");
        s.str_array("list", [&b"x"[..], b"y"]);
        s.event("exception", 7, |e| e.str("k", b"v"));
        s.links.push(Link {
            trace_id: crate::ids::TraceId([4; 16]),
            span_id: crate::ids::SpanId([5; 8]),
            flags: 1,
        });
        s.dropped_attributes = 3;
        s.clear();
        // Every field, the arena's contents included, is what a new record with these caps has.
        assert_eq!(format!("{s:?}"), format!("{:?}", caps()));
    }
}
