//! An in-process OTLP/gRPC receiver: tonic's generated `TraceService` server (from
//! `opentelemetry-proto`), accepting gzip, served over h2c. An independent gRPC implementation
//! checks the filter's own framing: a wrong length prefix, compressed flag, content type or
//! encoding header is refused by tonic, not by code written alongside the filter.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::codec::CompressionEncoding;
use tower_service::Service;

use crate::sink::{lock, metrics_of, spans_of, Received, ReceivedMetrics, Server, Tally};
use opentelemetry_proto::tonic::metrics::v1::Metric;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcMode {
    /// Accept everything.
    Ok,
    /// A gRPC status code, with a `google.rpc.RetryInfo` delay when set.
    Status {
        /// The gRPC status code.
        code: u32,
        /// The `RetryInfo` delay, in ms.
        retry_delay_ms: Option<u64>,
    },
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    metrics: Vec<ReceivedMetrics>,
    mode: Option<GrpcMode>,
    tally: Tally,
}

/// The service tonic calls.
#[derive(Clone)]
struct Receiver(Arc<Mutex<State>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut st = lock(&self.0);
        if let Some(GrpcMode::Status {
            code,
            retry_delay_ms,
        }) = st.mode
        {
            let code = tonic::Code::from_i32(code as i32);
            return Err(match retry_delay_ms {
                Some(d) => tonic::Status::with_details(
                    code,
                    "collector says no",
                    retry_info(code as u32, d).into(),
                ),
                None => tonic::Status::new(code, "collector says no"),
            });
        }
        if !st.tally.record(request.get_ref()) {
            return Ok(tonic::Response::new(ExportTraceServiceResponse::default()));
        }
        st.received.push(Received {
            path: "/opentelemetry.proto.collector.trace.v1.TraceService/Export".into(),
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn metadata_list(m: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    m.clone()
        .into_headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = metadata_list(request.metadata());
        let mut st = lock(&self.0);
        if let Some(GrpcMode::Status { code, .. }) = st.mode {
            return Err(tonic::Status::new(
                tonic::Code::from_i32(code as i32),
                "collector says no",
            ));
        }
        st.metrics.push(ReceivedMetrics {
            path: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export".into(),
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running OTLP/gRPC receiver.
pub struct GrpcSink {
    /// The address it listens on.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl GrpcSink {
    /// Starts on `127.0.0.1:port` (0 picks a free port).
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let traces = TraceServiceServer::new(Receiver(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip);
        let metrics = MetricsServiceServer::new(Receiver(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip);
        let server = Server::start(port, move |req: hyper::Request<hyper::body::Incoming>| {
            let mut traces = traces.clone();
            let mut metrics = metrics.clone();
            async move {
                // Two services on one port, routed by the gRPC path's service name.
                let r = if req
                    .uri()
                    .path()
                    .starts_with("/opentelemetry.proto.collector.metrics.")
                {
                    metrics.call(req).await
                } else {
                    traces.call(req).await
                };
                Ok::<_, Infallible>(match r {
                    Ok(r) => r,
                    Err(never) => match never {},
                })
            }
        })?;
        Ok(Self {
            addr: server.addr,
            state,
            _server: server,
        })
    }

    /// Keep only counts (for long benchmark runs).
    pub fn count_only(&self) {
        lock(&self.state).tally.count_only = true;
    }

    /// `(requests, spans)` received so far.
    pub fn counts(&self) -> (u64, u64) {
        lock(&self.state).tally.counts()
    }

    /// Sets how the receiver answers from now on.
    pub fn set_mode(&self, mode: GrpcMode) {
        lock(&self.state).mode = Some(mode);
    }

    /// Every export request so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    /// Every span so far, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        self.received()
            .iter()
            .flat_map(|r| spans_of(&r.request))
            .collect()
    }

    /// Waits until at least `n` spans arrived (or `timeout` passes) and returns them.
    pub fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<Span> {
        crate::sink::poll_spans(|| self.spans(), n, timeout)
    }

    /// Every metrics export request so far (`MetricsService/Export`), in arrival order.
    pub fn metric_requests(&self) -> Vec<ReceivedMetrics> {
        lock(&self.state).metrics.clone()
    }

    /// Every metric so far, in arrival order.
    pub fn metrics(&self) -> Vec<Metric> {
        self.metric_requests()
            .iter()
            .flat_map(|r| metrics_of(&r.request))
            .collect()
    }

    /// Waits until at least `n` metrics export requests arrived (or `timeout` passes).
    pub fn wait_metric_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedMetrics> {
        crate::sink::poll_metric_requests(|| self.metric_requests(), n, timeout)
    }
}

/// `google.rpc.Status{code, details: [RetryInfo{retry_delay}]}`, encoded (tonic base64s it
/// into `grpc-status-details-bin`).
fn retry_info(code: u32, delay_ms: u64) -> Vec<u8> {
    meshtrace::export::reply::google_rpc::status_with_retry_info(
        code as i32,
        (delay_ms / 1000) as i64,
        ((delay_ms % 1000) * 1_000_000) as i32,
    )
}
