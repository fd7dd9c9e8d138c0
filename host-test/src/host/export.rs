//! Reading what the filter exported: OTLP/protobuf bodies decoded with `opentelemetry-proto`,
//! and their OTLP/JSON form (hex ids, int64 as strings, enums as numbers, lowerCamelCase).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Decodes an export request body.
pub fn decode(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    ExportTraceServiceRequest::decode(body)
        .map_err(|e| format!("not an OTLP ExportTraceServiceRequest: {e}"))
}

/// Every span of an export request, in order.
pub fn spans(req: &ExportTraceServiceRequest) -> Vec<Span> {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.iter().cloned())
        .collect()
}

/// Test helper: runs the flush interval, expects exactly one export call, answers it 200 and
/// returns its spans. Panics (failing the test) when the filter did anything else.
pub fn flush_one(host: &mut super::Host) -> Vec<Span> {
    host.advance(1000).expect("advance the flush interval");
    let calls = host.pending_http_calls();
    assert_eq!(calls.len(), 1, "one export call");
    host.answer(calls[0].token, 200, b"")
        .expect("answer the export call");
    spans(&decode(&calls[0].body).expect("decode the export body"))
}

/// The OTLP/JSON encoding of an export request.
pub fn to_json(req: &ExportTraceServiceRequest) -> serde_json::Value {
    serde_json::to_value(req).unwrap_or(serde_json::Value::Null)
}

/// A simple rendering of an attribute value, for assertions.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A double.
    Double(f64),
    /// Any other kind (arrays, maps, bytes).
    Other,
}

/// The value of attribute `key`, if present.
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<Attr> {
    let kv = attrs.iter().find(|kv| kv.key == key)?;
    Some(match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Attr::Str(s.clone()),
        Some(Value::IntValue(i)) => Attr::Int(*i),
        Some(Value::BoolValue(b)) => Attr::Bool(*b),
        Some(Value::DoubleValue(d)) => Attr::Double(*d),
        _ => Attr::Other,
    })
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
