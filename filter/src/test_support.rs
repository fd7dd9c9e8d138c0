//! What the unit tests of every module share: request headers from string pairs, attribute
//! readers, and protobuf encoders for the messages Envoy hands over. One copy, so a helper
//! fixed here is fixed for every test.

use crate::headers::RequestHeaders;
use crate::span::{SpanRecord, Value};

/// Request headers from `(name, value)` string pairs.
pub fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> RequestHeaders<'a> {
    RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
}

/// A tracer on the smallest configuration plus `extra` top-level keys (`,"key":value...`),
/// with ids from `seed`.
pub fn tracer(extra: &str, seed: u64) -> crate::tracer::Tracer {
    let json = format!(r#"{{"collector":{{"cluster":"c"}}{extra}}}"#);
    crate::tracer::Tracer::new(crate::config::load(json.as_bytes()).unwrap(), seed)
}

/// The string resource attribute `key` of every export request `t` makes, decoded with the
/// OTLP protobuf types.
pub fn resource_attr(t: &crate::tracer::Tracer, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use prost::Message;
    let mut out = Vec::new();
    t.batch_header.encode_request(&[], &mut out);
    let req = ExportTraceServiceRequest::decode(&out[..]).unwrap();
    let attrs = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match &a.value.as_ref()?.value {
            Some(V::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

/// The string attribute `key` of `rec`, if it is one.
pub fn str_attr(rec: &SpanRecord, key: &str) -> Option<String> {
    match rec.get(key) {
        Some(Value::Str(r)) => Some(String::from_utf8(rec.text(r).to_vec()).unwrap()),
        _ => None,
    }
}

/// The string-array attribute `key` of `rec`, if it is one.
pub fn str_array_attr(rec: &SpanRecord, key: &str) -> Option<Vec<String>> {
    match rec.get(key) {
        Some(Value::StrArray(r)) => Some(
            rec.list(r)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .collect(),
        ),
        _ => None,
    }
}

/// Protobuf encoders: a Node as Istio's bootstrap builds it, `google.protobuf.Struct`s.
pub mod protobuf {
    use prost::encoding::{encode_key, encode_varint, WireType};

    pub fn bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    pub fn string_value(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        bytes(3, s.as_bytes(), &mut v);
        v
    }

    /// A `map<string, message>` (a `Struct`'s `fields`, a `Metadata`'s `filter_metadata`):
    /// one entry message (key 1, value 2) per pair, as field 1.
    pub fn map_entries(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut map = Vec::new();
        for (k, v) in entries {
            let mut e = Vec::new();
            bytes(1, k.as_bytes(), &mut e);
            bytes(2, v, &mut e);
            bytes(1, &e, &mut map);
        }
        map
    }

    /// A `google.protobuf.Struct` of `entries` (each a `Value`).
    pub fn struct_value(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        map_entries(entries)
    }

    pub fn node(id: &str, metadata: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut n = Vec::new();
        bytes(1, id.as_bytes(), &mut n);
        bytes(2, b"reviews.default", &mut n);
        bytes(3, &struct_value(metadata), &mut n);
        // A field after the metadata (user_agent_name) must not disturb decoding.
        bytes(6, b"envoy", &mut n);
        n
    }
}
