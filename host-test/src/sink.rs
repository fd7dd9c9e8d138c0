//! An in-process OTLP/HTTP receiver: decodes every `POST /v1/traces` body (and every
//! `POST /v1/metrics` body, as `ExportMetricsServiceRequest`) with `opentelemetry-proto` and
//! keeps the requests for assertions, plus a recording upstream.
//!
//! Both servers run on their own Tokio runtime thread so synchronous tests can use them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// One export request the sink received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `:path`.
    pub path: String,
    /// Request headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The decoded request.
    pub request: ExportTraceServiceRequest,
}

/// One metrics export request the sink received (`POST /v1/metrics`, or the gRPC
/// `MetricsService/Export`).
#[derive(Clone, Debug)]
pub struct ReceivedMetrics {
    /// `:path`.
    pub path: String,
    /// Request headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The decoded request.
    pub request: ExportMetricsServiceRequest,
}

/// Every metric of one metrics export request, in order.
pub fn metrics_of(req: &ExportMetricsServiceRequest) -> Vec<Metric> {
    req.resource_metrics
        .iter()
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter().cloned())
        .collect()
}

/// Polls `requests` until it holds at least `n` metrics export requests or `timeout` passes.
pub fn poll_metric_requests(
    requests: impl Fn() -> Vec<ReceivedMetrics>,
    n: usize,
    timeout: Duration,
) -> Vec<ReceivedMetrics> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = requests();
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How the sink answers (tests flip this to simulate collector trouble).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkMode {
    /// Accept everything.
    Ok,
    /// Answer this status, no body.
    Status(u16),
    /// This status with `Retry-After: <seconds>`.
    Throttle {
        /// The status.
        status: u16,
        /// `Retry-After`, seconds.
        retry_after_s: u32,
    },
    /// Reads the request and never answers.
    Hang,
    /// Accepts (records) the request and answers 200 with a partial success rejecting this many.
    Partial {
        /// How many spans the partial success rejects.
        rejected: i64,
    },
    /// Accepts (records) the request and answers 200 with a body that is not protobuf and
    /// nonsense headers.
    Garbage,
    /// Refuses the request with this status and a `google.rpc.Status` (code 3,
    /// `INVALID_ARGUMENT`) carrying this message, as the OpenTelemetry Collector refuses one.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The `Status.message`.
        message: &'static str,
    },
}

/// What a sink has received, counted, and whether it keeps the requests too: shared by the
/// OTLP/HTTP and OTLP/gRPC sinks.
#[derive(Default)]
pub(crate) struct Tally {
    /// Count only, keep nothing: for long benchmark runs.
    pub count_only: bool,
    pub requests: u64,
    pub spans: u64,
}

impl Tally {
    /// Counts one export request; true when the sink should keep it as well.
    pub fn record(&mut self, req: &ExportTraceServiceRequest) -> bool {
        self.requests += 1;
        self.spans += req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum::<u64>();
        !self.count_only
    }

    /// `(requests, spans)`.
    pub fn counts(&self) -> (u64, u64) {
        (self.requests, self.spans)
    }
}

#[derive(Default)]
struct SinkState {
    received: Vec<Received>,
    metrics: Vec<ReceivedMetrics>,
    mode: Option<SinkMode>,
    tally: Tally,
}

/// A running OTLP/HTTP receiver.
pub struct OtlpSink {
    /// The address it listens on.
    pub addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
    _server: Server,
}

impl OtlpSink {
    /// Starts on `127.0.0.1:port` (0 picks a free port).
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(SinkState::default()));
        let st = state.clone();
        let server = Server::start(port, move |req| {
            let st = st.clone();
            async move { Ok(sink_handle(req, st).await) }
        })?;
        Ok(Self {
            addr: server.addr,
            state,
            _server: server,
        })
    }

    /// Stops keeping requests (only counting them), so long runs use constant memory.
    pub fn count_only(&self) {
        lock(&self.state).tally.count_only = true;
    }

    /// `(requests, spans)` received so far.
    pub fn counts(&self) -> (u64, u64) {
        lock(&self.state).tally.counts()
    }

    /// Sets how the sink answers from now on.
    pub fn set_mode(&self, mode: SinkMode) {
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
        poll_spans(|| self.spans(), n, timeout)
    }

    /// Every metrics export request so far (`POST /v1/metrics`), in arrival order. Kept even
    /// in count-only mode: a VM sends at most one per flush interval.
    pub fn metric_requests(&self) -> Vec<ReceivedMetrics> {
        lock(&self.state).metrics.clone()
    }

    /// Every metric so far, in arrival order (one entry per metric per export request).
    pub fn metrics(&self) -> Vec<Metric> {
        self.metric_requests()
            .iter()
            .flat_map(|r| metrics_of(&r.request))
            .collect()
    }

    /// Waits until at least `n` metrics export requests arrived (or `timeout` passes).
    pub fn wait_metric_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedMetrics> {
        poll_metric_requests(|| self.metric_requests(), n, timeout)
    }
}

/// Polls `spans` until it holds at least `n` spans or `timeout` passes; shared by the sinks.
pub fn poll_spans(spans: impl Fn() -> Vec<Span>, n: usize, timeout: Duration) -> Vec<Span> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = spans();
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// All spans of one export request.
pub fn spans_of(req: &ExportTraceServiceRequest) -> Vec<Span> {
    req.resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter().cloned())
        .collect()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn sink_handle(req: Request<Incoming>, st: Arc<Mutex<SinkState>>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let headers = header_list(req.headers());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(400, Bytes::new()),
    };
    let mode = lock(&st).mode.unwrap_or(SinkMode::Ok);
    match mode {
        SinkMode::Ok => {}
        SinkMode::Status(code) => return reply(code, Bytes::new()),
        SinkMode::Throttle {
            status,
            retry_after_s,
        } => {
            let mut r = reply(status, Bytes::new());
            r.headers_mut().insert(
                "retry-after",
                hyper::header::HeaderValue::from(retry_after_s),
            );
            return r;
        }
        SinkMode::Hang => std::future::pending::<()>().await,
        SinkMode::Refuse { status, message } => {
            return reply(status, rpc_status(3, message.as_bytes()))
        }
        SinkMode::Partial { .. } | SinkMode::Garbage => {}
    }
    if path != "/v1/traces" && path != "/v1/metrics" {
        return reply(404, Bytes::new());
    }
    let gzip = headers
        .iter()
        .any(|(k, v)| k == "content-encoding" && v == "gzip");
    let body = if gzip {
        match gunzip(&body) {
            Ok(b) => Bytes::from(b),
            Err(e) => return reply(400, Bytes::from(format!("bad gzip body: {e}"))),
        }
    } else {
        body
    };
    if path == "/v1/metrics" {
        return match ExportMetricsServiceRequest::decode(body) {
            Ok(request) => {
                lock(&st).metrics.push(ReceivedMetrics {
                    path,
                    headers,
                    request,
                });
                use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
                reply(
                    200,
                    Bytes::from(ExportMetricsServiceResponse::default().encode_to_vec()),
                )
            }
            Err(e) => reply(
                400,
                rpc_status(3, format!("undecodable OTLP body: {e}").as_bytes()),
            ),
        };
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            let mut st = lock(&st);
            if st.tally.record(&request) {
                st.received.push(Received {
                    path,
                    headers,
                    request,
                });
            }
            drop(st);
            use opentelemetry_proto::tonic::collector::trace::v1::{
                ExportTracePartialSuccess, ExportTraceServiceResponse,
            };
            match mode {
                SinkMode::Partial { rejected } => {
                    let resp = ExportTraceServiceResponse {
                        partial_success: Some(ExportTracePartialSuccess {
                            rejected_spans: rejected,
                            error_message: "spans too old".into(),
                        }),
                    };
                    reply(200, Bytes::from(resp.encode_to_vec()))
                }
                SinkMode::Garbage => {
                    let mut r = reply(
                        200,
                        Bytes::from_static(b"\xff\xff\xff\xff\x0a\xff\x01<html>"),
                    );
                    let h = r.headers_mut();
                    h.insert(
                        "retry-after",
                        hyper::header::HeaderValue::from_static("tomorrow"),
                    );
                    h.insert(
                        "grpc-status",
                        hyper::header::HeaderValue::from_static("banana"),
                    );
                    r
                }
                _ => reply(
                    200,
                    Bytes::from(ExportTraceServiceResponse::default().encode_to_vec()),
                ),
            }
        }
        // A collector refuses what it cannot decode (invalid UTF-8 in a `string` field
        // included: prost's `String` is strict) with 400 and a `google.rpc.Status`.
        Err(e) => reply(
            400,
            rpc_status(3, format!("undecodable OTLP body: {e}").as_bytes()),
        ),
    }
}

/// A `google.rpc.Status` `{code, message}`, encoded.
pub fn rpc_status(code: u8, message: &[u8]) -> Bytes {
    let message = String::from_utf8_lossy(message);
    Bytes::from(meshtrace::export::reply::google_rpc::status(
        i32::from(code),
        &message,
    ))
}

/// Decompresses a gzip body.
pub fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

fn reply(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}

pub(crate) fn header_list(h: &hyper::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    /// The method.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// The headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl UpstreamRequest {
    /// Every value of a header, lowercase name.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

/// An HTTP upstream that records request headers. `/status/NNN` answers NNN, anything else 200.
pub struct Upstream {
    /// The address it listens on.
    pub addr: SocketAddr,
    seen: Arc<Mutex<VecDeque<UpstreamRequest>>>,
    _server: Server,
}

impl Upstream {
    /// Starts on a free loopback port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start() -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(VecDeque::new()));
        let s = seen.clone();
        let server = Server::start(0, move |req: Request<Incoming>| {
            let s = s.clone();
            async move {
                let path = req.uri().path().to_string();
                lock(&s).push_back(UpstreamRequest {
                    method: req.method().to_string(),
                    path: path.clone(),
                    headers: header_list(req.headers()),
                });
                let status = path
                    .strip_prefix("/status/")
                    .and_then(|c| c.parse::<u16>().ok())
                    .unwrap_or(200);
                Ok::<_, Infallible>(reply(status, Bytes::from_static(b"ok\n")))
            }
        })?;
        Ok(Self {
            addr: server.addr,
            seen,
            _server: server,
        })
    }

    /// An upstream standing for one release of a service: every answer carries
    /// `x-release: <release>`, and with `fail_every` = n every n-th request (the n-th, 2n-th,
    /// ...) is answered 500, a faulty canary whose failures the load generator can count.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start_release(release: &str, fail_every: Option<u64>) -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(VecDeque::new()));
        let s = seen.clone();
        let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let release = hyper::header::HeaderValue::from_str(release)?;
        let server = Server::start(0, move |req: Request<Incoming>| {
            let (s, served, release) = (s.clone(), served.clone(), release.clone());
            async move {
                lock(&s).push_back(UpstreamRequest {
                    method: req.method().to_string(),
                    path: req.uri().path().to_string(),
                    headers: header_list(req.headers()),
                });
                let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let status = match fail_every {
                    Some(every) if every > 0 && n % every == 0 => 500,
                    _ => 200,
                };
                let mut r = reply(status, Bytes::from_static(b"ok\n"));
                r.headers_mut().insert("x-release", release);
                Ok::<_, Infallible>(r)
            }
        })?;
        Ok(Self {
            addr: server.addr,
            seen,
            _server: server,
        })
    }

    /// Requests seen so far, oldest first, removing them.
    pub fn take(&self) -> Vec<UpstreamRequest> {
        lock(&self.seen).drain(..).collect()
    }
}

/// A hyper HTTP/1.1 + h2c server on a dedicated runtime thread; stopped on drop, which also
/// drops every open connection (the runtime goes with the thread).
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start<F, Fut, B>(port: u16, handler: F) -> anyhow::Result<Self>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let h = handler.clone();
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(h);
                                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        Ok(Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
