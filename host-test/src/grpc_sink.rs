//! An in-process OTLP/gRPC receiver for `TraceService/Export`: h2c, length-prefixed messages
//! (gzip-compressed ones when the request says `grpc-encoding: gzip`), the status in trailers.
//! Requests are decoded with `opentelemetry-proto` and kept for assertions.
//!
//! Written on hyper directly rather than tonic: the filter frames gRPC itself, and this
//! receiver checks that framing byte for byte (compressed flag, length, encoding header)
//! instead of trusting a framework to be lenient about it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::sink::{gunzip, header_list, lock, spans_of, Received, Server};

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcMode {
    Ok,
    /// A gRPC status code, with a `google.rpc.RetryInfo` delay when set.
    Status {
        code: u32,
        retry_delay_ms: Option<u64>,
    },
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    mode: Option<GrpcMode>,
    /// Requests refused for bad framing, with why.
    malformed: Vec<String>,
}

/// A running OTLP/gRPC receiver.
pub struct GrpcSink {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl GrpcSink {
    /// Starts on `127.0.0.1:port` (0 picks a free port).
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let server = Server::start(port, move |req| {
            let st = st.clone();
            async move { Ok::<_, Infallible>(handle(req, st).await) }
        })?;
        Ok(Self {
            addr: server.addr,
            state,
            _server: server,
        })
    }

    pub fn set_mode(&self, mode: GrpcMode) {
        lock(&self.state).mode = Some(mode);
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    /// Why requests were refused as malformed (empty when every request was well framed).
    pub fn malformed(&self) -> Vec<String> {
        lock(&self.state).malformed.clone()
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received()
            .iter()
            .flat_map(|r| spans_of(&r.request))
            .collect()
    }

    /// Waits until at least `n` spans arrived (or `timeout` passes) and returns them.
    pub fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One data frame, then trailers.
pub struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

fn frame(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn respond(code: u32, details: Option<String>, data: Option<Bytes>) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    if let Some(d) = details.and_then(|d| HeaderValue::from_str(&d).ok()) {
        trailers.insert("grpc-status-details-bin", d);
    }
    let mut r = Response::new(GrpcBody {
        data,
        trailers: Some(trailers),
    });
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

/// `google.rpc.Status{code, details: [RetryInfo{retry_delay}]}`, base64 without padding.
fn retry_info(code: u32, delay_ms: u64) -> String {
    let mut duration = Vec::new();
    prost::encoding::int64::encode(1, &((delay_ms / 1000) as i64), &mut duration);
    prost::encoding::int32::encode(2, &(((delay_ms % 1000) * 1_000_000) as i32), &mut duration);
    let mut info = Vec::new();
    prost::encoding::bytes::encode(1, &duration, &mut info);
    let mut any = Vec::new();
    prost::encoding::string::encode(
        1,
        &"type.googleapis.com/google.rpc.RetryInfo".to_string(),
        &mut any,
    );
    prost::encoding::bytes::encode(2, &info, &mut any);
    let mut status = Vec::new();
    prost::encoding::int32::encode(1, &(code as i32), &mut status);
    prost::encoding::bytes::encode(3, &any, &mut status);
    base64(&status)
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The message of a request body holding exactly one gRPC frame, or why it is malformed.
fn unframe(body: &[u8], gzip_encoding: bool) -> Result<Vec<u8>, String> {
    if body.len() < 5 {
        return Err(format!("body of {} bytes has no frame header", body.len()));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + len {
        return Err(format!(
            "frame length {len} but {} bytes follow",
            body.len() - 5
        ));
    }
    match (body[0], gzip_encoding) {
        (0, _) => Ok(body[5..].to_vec()),
        (1, true) => gunzip(&body[5..]).map_err(|e| format!("bad gzip message: {e}")),
        (1, false) => Err("compressed flag without grpc-encoding".into()),
        (f, _) => Err(format!("compressed flag {f}")),
    }
}

async fn handle(req: Request<Incoming>, st: Arc<Mutex<State>>) -> Response<GrpcBody> {
    let path = req.uri().path().to_string();
    let headers = header_list(req.headers());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return respond(13, None, None),
    };
    let has = |k: &str, v: &str| headers.iter().any(|(hk, hv)| hk == k && hv == v);
    if path != "/opentelemetry.proto.collector.trace.v1.TraceService/Export" {
        return respond(12, None, None);
    }
    if !has("content-type", "application/grpc") {
        lock(&st)
            .malformed
            .push("content-type is not application/grpc".into());
        return respond(3, None, None);
    }
    let message = match unframe(&body, has("grpc-encoding", "gzip")) {
        Ok(m) => m,
        Err(e) => {
            lock(&st).malformed.push(e);
            return respond(13, None, None);
        }
    };
    match lock(&st).mode.unwrap_or(GrpcMode::Ok) {
        GrpcMode::Ok => {}
        GrpcMode::Status {
            code,
            retry_delay_ms,
        } => return respond(code, retry_delay_ms.map(|d| retry_info(code, d)), None),
    }
    match ExportTraceServiceRequest::decode(&message[..]) {
        Ok(request) => {
            lock(&st).received.push(Received {
                path,
                headers,
                request,
            });
            let resp = ExportTraceServiceResponse::default().encode_to_vec();
            respond(0, None, Some(frame(&resp)))
        }
        Err(e) => {
            lock(&st)
                .malformed
                .push(format!("undecodable message: {e}"));
            respond(13, None, None)
        }
    }
}
