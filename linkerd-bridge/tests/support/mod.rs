//! Test fixtures: an application server the bridge fronts, an OTLP/gRPC receiver, a bridge
//! started in-process, clients, and span rendering for exact assertions.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd_bridge::{Args, Bridge, Running};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::{mpsc, oneshot};

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(s: &'static str) -> Body {
    Full::new(Bytes::from_static(s.as_bytes())).boxed()
}

/// One request as the application saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Hooks a test uses to drive the application's streaming routes.
#[derive(Default)]
pub struct AppHooks {
    /// `/stream`: the response body's chunks, sent by the test.
    pub stream: Option<mpsc::Receiver<Bytes>>,
    /// `/hold`: answered when the test fires this.
    pub hold: Option<oneshot::Receiver<()>>,
}

/// The application behind the bridge.
///
/// Routes: `/stream` (chunks from the test), `/upload` (counts the request body as it
/// streams), `/hold` (answers when released), `/slow` (never answers in time), `/ws`
/// (upgrade, then echo), `/timed` (with its own `server-timing` entry), `/status/NNN`,
/// anything else 200 `ok`.
pub struct App {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub hooks: Arc<Mutex<AppHooks>>,
}

impl App {
    pub async fn start() -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hooks = Arc::new(Mutex::new(AppHooks::default()));
        let (s, h) = (seen.clone(), hooks.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, h) = (s.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| app(req, s.clone(), h.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        App { addr, seen, hooks }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn app(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    hooks: Arc<Mutex<AppHooks>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        version: req.version(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
    });
    let resp = match path.as_str() {
        "/stream" => {
            let rx = hooks.lock().unwrap().stream.take().unwrap();
            let chunks = futures_stream(rx);
            Response::new(StreamBody::new(chunks).boxed())
        }
        "/upload" => {
            let mut n = 0usize;
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    n += d.len();
                }
            }
            Response::new(Full::new(Bytes::from(format!("{n}"))).boxed())
        }
        "/hold" => {
            let rx = hooks.lock().unwrap().hold.take().unwrap();
            let _ = rx.await;
            Response::new(full("released"))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(full("late"))
        }
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(full(""))
                .unwrap()
        }
        "/timed" => Response::builder()
            .header("server-timing", "app;dur=5")
            .body(full("ok"))
            .unwrap(),
        p if p.starts_with("/status/") => Response::builder()
            .status(p[8..].parse::<u16>().unwrap())
            .body(full("status"))
            .unwrap(),
        _ => Response::new(full("ok")),
    };
    Ok(resp)
}

/// A body stream fed by a channel: each message is one data frame.
fn futures_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    ChannelStream(rx)
}

struct ChannelStream(mpsc::Receiver<Bytes>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A request body fed by a channel.
pub fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    StreamBody::new(ChannelStream(rx)).boxed()
}

/// An OTLP/gRPC receiver.
#[derive(Clone, Default)]
pub struct GrpcSink {
    pub received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl GrpcSink {
    pub async fn start() -> (GrpcSink, SocketAddr) {
        let sink = GrpcSink::default();
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let svc = TraceServiceServer::new(sink.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming),
        );
        (sink, addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(meshtrace_host_test::sink::spans_of)
            .collect()
    }
}

/// Waits (bounded) until `f` returns at least `n` items.
pub async fn wait_for<T>(n: usize, mut f: impl FnMut() -> Vec<T>) -> Vec<T> {
    for _ in 0..500 {
        let v = f();
        if v.len() >= n {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A config file in a fresh temporary directory.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "linkerd-bridge-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The downward-API environment every test bridge sees.
pub fn pod_env(k: &str) -> Option<String> {
    let env: HashMap<&str, &str> = [
        ("POD_NAME", "web-7d4b9-x2x"),
        ("POD_NAMESPACE", "shop"),
        ("NODE_NAME", "node-1"),
    ]
    .into_iter()
    .collect();
    env.get(k).map(|v| v.to_string())
}

/// Starts a bridge in front of `upstream` with `config` (JSON).
pub async fn bridge(upstream: SocketAddr, config: &str, relay: bool) -> (Running, TempDir) {
    let dir = TempDir::new();
    let config = dir.write("bridge.json", config);
    let labels = dir.write("labels", "app=\"web\"\nversion=\"v2\"\n");
    let args = Args {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream,
        config,
        admin: "127.0.0.1:0".parse().unwrap(),
        podinfo_labels: Some(labels),
        otlp_relay: relay.then(|| "127.0.0.1:0".parse().unwrap()),
        upstream_protocol: Default::default(),
        drain_timeout_ms: 10_000,
        // More than one, so every test also crosses the shared-port listeners.
        proxy_threads: 2,
    };
    let b = Bridge::with_env(args, &pod_env).unwrap();
    (b.start().await.unwrap(), dir)
}

pub fn http1_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub async fn body_text(resp: Response<Incoming>) -> String {
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `key=value` per attribute, strings quoted, for exact comparison.
pub fn render(attrs: &[KeyValue]) -> Vec<String> {
    attrs
        .iter()
        .map(|kv| {
            let v = value(kv.value.as_ref());
            // The client's ephemeral port is the one value a test cannot know: it is checked
            // to be a port, then written as a placeholder.
            if kv.key == "network.peer.port" {
                let port: u16 = v.parse().expect("network.peer.port is a port number");
                assert_ne!(port, 0);
                return "network.peer.port=<client port>".to_string();
            }
            format!("{}={v}", kv.key)
        })
        .collect()
}

fn value(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => format!("{s:?}"),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::ArrayValue(a)) => format!(
            "[{}]",
            a.values
                .iter()
                .map(|v| value(Some(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => format!("{other:?}"),
    }
}

/// The resource every bridge batch carries in these tests.
pub fn expected_resource() -> Vec<String> {
    vec![
        "service.name=\"web\"".into(),
        "service.version=\"v2\"".into(),
        "service.namespace=\"shop\"".into(),
        "k8s.namespace.name=\"shop\"".into(),
        "k8s.pod.name=\"web-7d4b9-x2x\"".into(),
        "k8s.node.name=\"node-1\"".into(),
        "k8s.pod.label.app=\"web\"".into(),
        "k8s.pod.label.version=\"v2\"".into(),
        "service.mesh=\"linkerd\"".into(),
        "telemetry.sdk.name=\"meshtrace\"".into(),
        "telemetry.sdk.language=\"rust\"".into(),
        format!("telemetry.sdk.version=\"{}\"", meshtrace::VERSION),
    ]
}

/// Fetches the admin endpoint's `/metrics` and returns one counter.
pub async fn metric(running: &Running, name: &str) -> u64 {
    let uri: http::Uri = format!("http://{}/metrics", running.admin).parse().unwrap();
    let resp = http1_client()
        .request(Request::get(uri).body(full("")).unwrap())
        .await
        .unwrap();
    let text = body_text(resp).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Waits (bounded) until counter `name` reaches `want`, returning its last value.
pub async fn wait_metric(running: &Running, name: &str, want: u64) -> u64 {
    let mut v = 0;
    for _ in 0..500 {
        v = metric(running, name).await;
        if v == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v
}
