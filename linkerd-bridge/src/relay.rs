//! Relay mode: the application posts its own OTLP/HTTP spans to the bridge, which adds where
//! they ran (the mesh and Kubernetes attributes) and forwards them with its own batches, so
//! the pod makes one connection to the collector.
//!
//! A relayed request is re-encoded once and kept as `ResourceSpans` fields; an
//! `ExportTraceServiceRequest` is nothing but those fields, so it is appended as-is to the
//! bridge's next export body.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use meshtrace::export::otlp::ResourceValue;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::shared::{lock, Shared, Stats};

/// Relayed OTLP waiting for export, bounded in bytes.
#[derive(Debug, Default)]
pub struct RelayBuffer {
    buf: Vec<u8>,
    spans: usize,
    max_bytes: usize,
}

impl RelayBuffer {
    /// An empty buffer holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            spans: 0,
            max_bytes,
        }
    }

    /// Appends encoded `ResourceSpans` fields; false (nothing kept) when they do not fit.
    pub fn push(&mut self, encoded: &[u8], spans: usize) -> bool {
        if self.buf.len() + encoded.len() > self.max_bytes {
            return false;
        }
        self.buf.extend_from_slice(encoded);
        self.spans += spans;
        true
    }

    /// Everything waiting, and its span count.
    pub fn take(&mut self) -> (Vec<u8>, usize) {
        (
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.spans),
        )
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The bound on [`RelayBuffer::bytes`] for new requests.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Puts back spans taken by [`RelayBuffer::take`] that could not be delivered, ahead of
    /// what arrived since and whatever the bound: they were acknowledged already.
    pub fn put_back(&mut self, mut raw: Vec<u8>, spans: usize) {
        raw.extend_from_slice(&self.buf);
        self.buf = raw;
        self.spans += spans;
    }
}

/// Adds each of `attrs` to every resource in `req` that lacks the key: the application's own
/// values win.
pub fn annotate(req: &mut ExportTraceServiceRequest, attrs: &[KeyValue]) {
    for rs in &mut req.resource_spans {
        let resource = rs.resource.get_or_insert_with(Resource::default);
        for kv in attrs {
            if !resource.attributes.iter().any(|a| a.key == kv.key) {
                resource.attributes.push(kv.clone());
            }
        }
    }
}

/// The relay's attributes as OTLP key-values.
pub fn key_values(attrs: &[(String, ResourceValue)]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(AnyValue {
                value: Some(match v {
                    ResourceValue::Str(s) => any_value::Value::StringValue(s.clone()),
                    ResourceValue::Int(i) => any_value::Value::IntValue(*i),
                    ResourceValue::Bool(b) => any_value::Value::BoolValue(*b),
                }),
            }),
            ..Default::default()
        })
        .collect()
}

/// Takes one decoded export request into the relay buffer: adds `attrs` where the
/// application's resources lack them, counts its spans as accepted and wakes the exporter.
/// `Err(spans)` when the buffer has no room; nothing is kept and the spans are counted as
/// dropped, so the caller answers with a retryable status (HTTP 503, gRPC `UNAVAILABLE`).
/// Shared by the OTLP/HTTP listener and the Lambda extension's OTLP/gRPC one.
pub fn accept(
    shared: &Shared,
    attrs: &[KeyValue],
    export: &mut ExportTraceServiceRequest,
) -> Result<usize, usize> {
    let spans: usize = export
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    annotate(export, attrs);
    let encoded = export.encode_to_vec();
    if !lock(&shared.relay).push(&encoded, spans) {
        Stats::add(&shared.stats.relay_spans_dropped, spans as u64);
        return Err(spans);
    }
    Stats::add(&shared.stats.relay_spans_accepted, spans as u64);
    shared.export_wake.notify_one();
    Ok(spans)
}

/// Largest relayed request accepted, compressed or not (OTLP's own request limit).
pub const MAX_REQUEST: usize = 64 << 20;

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{msg}\n")),
    )
}

/// Handles one request to the relay listener.
pub async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    attrs: Arc<Vec<KeyValue>>,
) -> Response<Full<Bytes>> {
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return text(StatusCode::NOT_FOUND, "the relay accepts POST /v1/traces");
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("content-type must be application/x-protobuf, got {content_type:?}"),
        );
    }
    let gzip = match req.headers().get(header::CONTENT_ENCODING) {
        None => false,
        Some(v) if v == "gzip" => true,
        Some(v) if v == "identity" => false,
        Some(v) => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("content-encoding must be gzip or identity, got {v:?}"),
            )
        }
    };
    let raw = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body over {MAX_REQUEST} bytes or cut short"),
            )
        }
    };
    let body = if gzip {
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(&raw[..]).take(MAX_REQUEST as u64 + 1);
        if dec.read_to_end(&mut out).is_err() || out.len() > MAX_REQUEST {
            return text(StatusCode::BAD_REQUEST, "gzip body is corrupt or too large");
        }
        Bytes::from(out)
    } else {
        raw
    };
    let mut export = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("body is not an ExportTraceServiceRequest: {e}"),
            )
        }
    };
    if accept(&shared, &attrs, &mut export).is_err() {
        // 503 is retryable under OTLP: the application's exporter tries again later.
        let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "relay buffer full");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    reply(
        StatusCode::OK,
        "application/x-protobuf",
        Bytes::from(ExportTraceServiceResponse::default().encode_to_vec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        key_values(&[(k.into(), ResourceValue::Str(v.into()))]).remove(0)
    }

    #[test]
    fn application_values_win() {
        let mut req = ExportTraceServiceRequest {
            resource_spans: vec![Default::default()],
        };
        req.resource_spans[0].resource = Some(Resource {
            attributes: vec![kv("k8s.pod.name", "own")],
            ..Default::default()
        });
        annotate(
            &mut req,
            &[kv("k8s.pod.name", "pod"), kv("service.mesh", "linkerd")],
        );
        let attrs = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
        assert_eq!(
            attrs,
            &vec![kv("k8s.pod.name", "own"), kv("service.mesh", "linkerd")]
        );
    }

    #[test]
    fn buffer_is_bounded() {
        let mut b = RelayBuffer::new(4);
        assert!(b.push(b"abc", 1));
        assert!(!b.push(b"de", 1));
        assert_eq!(b.take(), (b"abc".to_vec(), 1));
        assert!(b.is_empty());
        assert!(b.push(b"de", 2));
        b.put_back(b"abc".to_vec(), 1);
        assert_eq!((b.bytes(), b.max_bytes()), (5, 4));
        assert_eq!(b.take(), (b"abcde".to_vec(), 3));
    }
}
