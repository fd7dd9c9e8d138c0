//! A finished-or-finishing span, built without allocating once its record is warm.
//!
//! String values are copied into one text arena owned by the record and referenced by range,
//! so a record cleared and reused keeps its capacity: no per-attribute `String`s.

use core::ops::Range;

use smallvec::SmallVec;

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

/// Typical span sizes: 24 inline attributes cover the semantic conventions plus mesh tags.
pub type Attributes = SmallVec<[Attribute; 24]>;

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
    /// The span's attributes, in the order written.
    pub attrs: Attributes,
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
            event_attrs,
            events,
            links,
            lists,
            dropped_attributes,
            guessed_name,
            text,
            // Holds nothing between calls; its capacity is kept.
            scratch: _,
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
        attrs.clear();
        event_attrs.clear();
        events.clear();
        links.clear();
        lists.clear();
        text.clear();
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

    /// Copies `parts` into the arena one after another, each as valid UTF-8 (uncapped), as one
    /// range: span names and built attribute keys.
    fn push_parts(&mut self, parts: &[&[u8]]) -> Range<u32> {
        let start = self.text.len() as u32;
        for p in parts {
            crate::text::append(p, usize::MAX, &mut self.text);
        }
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

    /// Removes every attribute with the static key `key`, keeping the others in order.
    pub fn remove(&mut self, key: &'static str) {
        self.attrs.retain(|a| a.key != Key::Static(key));
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

    fn push_attr(&mut self, key: Key, value: Value) {
        if self.max_attributes > 0 && self.attrs.len() >= self.max_attributes as usize {
            self.dropped_attributes += 1;
            return;
        }
        self.attrs.push(Attribute { key, value });
    }

    fn full(&mut self) -> bool {
        if self.max_attributes > 0 && self.attrs.len() >= self.max_attributes as usize {
            self.dropped_attributes += 1;
            return true;
        }
        false
    }

    /// Adds a string attribute; the value is capped at `max_value_len` bytes.
    pub fn str(&mut self, key: &'static str, value: &[u8]) {
        if self.full() {
            return;
        }
        let r = self.push_text(value, true);
        self.push_attr(Key::Static(key), Value::Str(r));
    }

    /// A string attribute whose key is built from parts (e.g. a captured header name).
    pub fn str_dyn(&mut self, key_parts: &[&[u8]], value: &[u8]) {
        if self.full() {
            return;
        }
        let key = self.push_parts(key_parts);
        let r = self.push_text(value, true);
        self.push_attr(Key::Text(key), Value::Str(r));
    }

    /// Adds an integer attribute.
    pub fn int(&mut self, key: &'static str, value: i64) {
        self.push_attr(Key::Static(key), Value::Int(value));
    }

    /// Adds a boolean attribute.
    pub fn bool(&mut self, key: &'static str, value: bool) {
        self.push_attr(Key::Static(key), Value::Bool(value));
    }

    /// Adds a double attribute.
    pub fn double(&mut self, key: &'static str, value: f64) {
        self.push_attr(Key::Static(key), Value::Double(value));
    }

    /// A string-array attribute (`envoy.response_flags`, captured header values).
    pub fn str_array<'s>(&mut self, key: &'static str, values: impl IntoIterator<Item = &'s [u8]>) {
        if self.full() {
            return;
        }
        let first = self.lists.len() as u16;
        for v in values {
            let r = self.push_text(v, true);
            self.lists.push(r);
        }
        let last = self.lists.len() as u16;
        self.push_attr(Key::Static(key), Value::StrArray(first..last));
    }

    /// A string-array attribute whose key is built from parts (captured header values).
    pub fn str_array_dyn<'s>(
        &mut self,
        key_parts: &[&[u8]],
        values: impl IntoIterator<Item = &'s [u8]>,
    ) {
        if self.full() {
            return;
        }
        let key = self.push_parts(key_parts);
        let first = self.lists.len() as u16;
        for v in values {
            let r = self.push_text(v, true);
            self.lists.push(r);
        }
        let last = self.lists.len() as u16;
        self.push_attr(Key::Text(key), Value::StrArray(first..last));
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
        });
    }

    /// Adds an integer attribute to the event.
    pub fn int(&mut self, key: &'static str, value: i64) {
        self.span.event_attrs.push(Attribute {
            key: Key::Static(key),
            value: Value::Int(value),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
