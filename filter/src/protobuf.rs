//! Just enough protobuf wire reading for what Envoy hands over as serialized messages (the
//! node, route metadata): field iteration, `google.protobuf.Struct` entries and `Value`s.
//! Read once per VM or once per sampled request, so clarity beats speed here; a malformed
//! buffer ends an iteration early, never panics.

use prost::encoding::decode_varint;

/// A decoded protobuf field: its number and payload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wire<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1, little-endian.
    Fixed64(u64),
    /// Wire type 2: a string, bytes or an embedded message.
    Bytes(&'a [u8]),
    /// Wire type 5, little-endian.
    Fixed32(u32),
}

/// Iterates the fields of one protobuf message; a malformed buffer ends the iteration.
pub struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u64, Wire<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let key = decode_varint(&mut self.buf).ok()?;
        let (tag, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => Wire::Varint(decode_varint(&mut self.buf).ok()?),
            1 => {
                let (b, rest) = self.buf.split_first_chunk::<8>()?;
                self.buf = rest;
                Wire::Fixed64(u64::from_le_bytes(*b))
            }
            2 => {
                let len = usize::try_from(decode_varint(&mut self.buf).ok()?).ok()?;
                if len > self.buf.len() {
                    self.buf = &[];
                    return None;
                }
                let (b, rest) = self.buf.split_at(len);
                self.buf = rest;
                Wire::Bytes(b)
            }
            5 => {
                let (b, rest) = self.buf.split_first_chunk::<4>()?;
                self.buf = rest;
                Wire::Fixed32(u32::from_le_bytes(*b))
            }
            // Groups (3, 4) are long deprecated and never appear in a Node.
            _ => {
                self.buf = &[];
                return None;
            }
        };
        Some((tag, value))
    }
}

/// The fields of `buf`, in order.
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

/// The entries of a `google.protobuf.Struct`: `(key, Value message bytes)`.
pub fn struct_entries(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    fields(buf).filter_map(|(tag, w)| match (tag, w) {
        (1, Wire::Bytes(entry)) => {
            let mut key = None;
            let mut value: &[u8] = &[];
            for (t, w) in fields(entry) {
                match (t, w) {
                    (1, Wire::Bytes(k)) => key = Some(k),
                    (2, Wire::Bytes(v)) => value = v,
                    _ => {}
                }
            }
            key.map(|k| (k, value))
        }
        _ => None,
    })
}

/// A `google.protobuf.Value` holding a struct: its bytes.
pub fn value_struct(v: &[u8]) -> Option<&[u8]> {
    fields(v).find_map(|(tag, w)| match (tag, w) {
        (5, Wire::Bytes(s)) => Some(s),
        _ => None,
    })
}

/// A `google.protobuf.Value` holding a string: its bytes.
pub fn value_str(v: &[u8]) -> Option<&[u8]> {
    fields(v).find_map(|(tag, w)| match (tag, w) {
        (3, Wire::Bytes(s)) => Some(s),
        _ => None,
    })
}
