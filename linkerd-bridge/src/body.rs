//! The response body handed to the client, which finishes the request's span when the body
//! ends, fails, or is dropped unfinished (client gone, stream reset, shutdown).
//!
//! Frames pass through one by one; nothing is buffered.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::adapter::{self, End, Started};
use crate::shared::Shared;
use bytes::Bytes;
use http::Version;
use hyper::body::{Body, Frame, SizeHint};
use meshtrace::correlation::{Correlation, ServerTimingEntry};
use meshtrace::span::SpanKind;

/// Error type of every body the bridge returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed response body.
pub type ResponseBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A request's span (or always-keep candidate), finished exactly once: when dropped.
pub struct SpanGuard {
    shared: Arc<Shared>,
    started: Option<Started>,
    /// The response status, once known.
    pub status: Option<u16>,
    /// A gRPC call's `grpc-status`, once seen in the response headers or trailers.
    pub grpc_status: Option<meshtrace::span::grpc::Code>,
    /// Whether the request is a gRPC call (only then is `grpc-status` looked for).
    pub grpc: bool,
    version: Version,
    peer: Arc<str>,
}

impl SpanGuard {
    /// A guard that finishes `started` when dropped.
    pub fn new(shared: Arc<Shared>, started: Started, version: Version, peer: Arc<str>) -> Self {
        Self {
            shared,
            grpc: started.is_grpc(),
            started: Some(started),
            status: None,
            grpc_status: None,
            version,
            peer,
        }
    }

    /// The `server-timing` entry of a recorded span, per `correlation`; `None` when the span is
    /// not recorded (yet: a kept span is decided only when the response is over) or none is
    /// configured. The bridge's spans are SERVER spans.
    pub fn server_timing(&self, correlation: &Correlation) -> Option<(ServerTimingEntry, bool)> {
        let policy = correlation.server_timing_for(SpanKind::Server)?;
        let Some(Started::Sampled(recording)) = &self.started else {
            return None;
        };
        let rec = &recording.rec;
        let entry = ServerTimingEntry::new(policy.style, &rec.trace_id, &rec.span_id, rec.flags)?;
        Some((entry, policy.expose))
    }

    /// Notes the `grpc-status` of a gRPC call's response headers or trailers, if present.
    pub fn observe_grpc(&mut self, headers: &http::HeaderMap) {
        if !self.grpc {
            return;
        }
        const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
        if let Some(v) = headers.get(GRPC_STATUS) {
            self.grpc_status = Some(meshtrace::span::grpc::Code::parse(v.as_bytes()));
        }
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        let Some(started) = self.started.take() else {
            return;
        };
        let end = End {
            status: self.status,
            version: self.version,
            peer: &self.peer,
            grpc_status: self.grpc_status,
        };
        if adapter::finish_request(&self.shared, started, &end) {
            self.shared.export_wake.notify_one();
        }
    }
}

/// `inner` with the span attached.
pub struct TracedBody<B> {
    inner: B,
    guard: Option<SpanGuard>,
}

impl<B> TracedBody<B> {
    /// `inner`, finishing `guard`'s span when the body ends or is dropped.
    pub fn new(inner: B, guard: Option<SpanGuard>) -> Self {
        Self { inner, guard }
    }
}

impl<B> Body for TracedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(g)) = (&polled, this.guard.as_mut()) {
            if let Some(trailers) = frame.trailers_ref() {
                g.observe_grpc(trailers);
            }
        }
        match &polled {
            // The end of the body, or a failure that ends it: the request is over.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => drop(this.guard.take()),
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
