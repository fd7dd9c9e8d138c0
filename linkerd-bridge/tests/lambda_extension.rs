//! The relay as an AWS Lambda extension, end to end.
//!
//! AWS cannot be reached from a test, so the Lambda side is a local stand-in that follows the
//! documented Extensions API `2020-01-01` (AWS Lambda Developer Guide
//! `runtimes-extensions-api.md`, summarised in the project reference `rpc-faas-ambient.md`
//! §3.6): `POST /extension/register` answering with `Lambda-Extension-Identifier`, the
//! long-polled `GET /extension/event/next` handing out INVOKE and SHUTDOWN events with
//! `deadlineMs`, and `POST /extension/{init,exit}/error`. Everything else is real: the
//! extension (its library entry, or the built binary laid out as `extensions/meshtrace-relay`),
//! a "function" exporting real OTLP/HTTP (hyper) and OTLP/gRPC (tonic's generated client), and
//! a collector decoding every request with opentelemetry-proto.
//!
//! The ordering proof: when a `next` call reaches the stand-in, it records which spans the
//! function had handed over by then (had a success reply for) and which the collector had
//! accepted. The extension flushes before each `next`, so the first set must be inside the
//! second at every call. The test steps through the lifecycle by waiting for those calls, never
//! by sleeping.

mod support;

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd_bridge::lambda::{self, LambdaArgs, Outcome};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use support::{hex, http1_client, render, TempDir};
use tokio::sync::mpsc;

/// The identifier the stand-in hands out at registration.
const EXTENSION_ID: &str = "6a7c1c1e-58a8-4b7d-9f5c-7b2a8f0e4d11";
const API: &str = "/2020-01-01/extension";

type Shared<T> = Arc<Mutex<T>>;

/// One request the stand-in received.
#[derive(Clone, Debug)]
struct Call {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Call {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A `next` call, with what the function had handed over and the collector had accepted when
/// it arrived.
#[derive(Clone, Debug)]
struct NextCall {
    identifier: Option<String>,
    sent: BTreeSet<String>,
    collected: BTreeSet<String>,
}

#[derive(Default)]
struct ApiLog {
    registers: Vec<Call>,
    nexts: Vec<NextCall>,
    errors: Vec<Call>,
}

struct ApiState {
    log: Mutex<ApiLog>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    next_arrived: mpsc::UnboundedSender<usize>,
    sent: Shared<BTreeSet<String>>,
    collected: Shared<Vec<String>>,
}

/// The stand-in Extensions API.
struct LambdaApi {
    addr: SocketAddr,
    state: Arc<ApiState>,
    events: mpsc::UnboundedSender<String>,
    next_arrived: mpsc::UnboundedReceiver<usize>,
}

impl LambdaApi {
    async fn start(sent: Shared<BTreeSet<String>>, collected: Shared<Vec<String>>) -> LambdaApi {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (arrived_tx, next_arrived) = mpsc::unbounded_channel();
        let state = Arc::new(ApiState {
            log: Mutex::new(ApiLog::default()),
            events: tokio::sync::Mutex::new(events_rx),
            next_arrived: arrived_tx,
            sent,
            collected,
        });
        let addr = serve(state.clone(), api).await;
        LambdaApi {
            addr,
            state,
            events,
            next_arrived,
        }
    }

    /// Waits until the extension's `n`-th `next` call has arrived (1-based).
    async fn wait_next(&mut self, n: usize) {
        let wait = async {
            loop {
                let got = self.next_arrived.recv().await.expect("stand-in alive");
                if got >= n {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("the extension never made next call {n}"));
    }

    fn deliver(&self, event: serde_json::Value) {
        self.events.send(event.to_string()).unwrap();
    }

    fn log(&self) -> std::sync::MutexGuard<'_, ApiLog> {
        self.state.log.lock().unwrap()
    }
}

fn headers_of<B>(req: &Request<B>) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

fn json_reply(status: u16, headers: &[(&str, &str)], body: String) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

async fn api(req: Request<Incoming>, st: Arc<ApiState>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let headers = headers_of(&req);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let call = Call {
        path: path.clone(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let identified = call.header("lambda-extension-identifier") == Some(EXTENSION_ID);
    let forbidden = || {
        json_reply(
            403,
            &[],
            r#"{"errorMessage":"unknown extension","errorType":"Extension.Forbidden"}"#.into(),
        )
    };
    match (method.as_str(), path.strip_prefix(API).unwrap_or("")) {
        ("POST", "/register") => {
            st.log.lock().unwrap().registers.push(call);
            json_reply(
                200,
                &[("lambda-extension-identifier", EXTENSION_ID)],
                r#"{"functionName":"checkout","functionVersion":"$LATEST","handler":"index.handler","accountId":"123456789012"}"#.into(),
            )
        }
        ("GET", "/event/next") => {
            let n = {
                let mut log = st.log.lock().unwrap();
                log.nexts.push(NextCall {
                    identifier: call.header("lambda-extension-identifier").map(String::from),
                    sent: st.sent.lock().unwrap().clone(),
                    collected: st.collected.lock().unwrap().iter().cloned().collect(),
                });
                log.nexts.len()
            };
            if !identified {
                return forbidden();
            }
            let _ = st.next_arrived.send(n);
            // Long poll: answered when the test delivers the next event.
            let event = st.events.lock().await.recv().await;
            match event {
                Some(e) => json_reply(200, &[], e),
                None => json_reply(500, &[], "{}".into()),
            }
        }
        ("POST", "/init/error") | ("POST", "/exit/error") => {
            st.log.lock().unwrap().errors.push(call);
            if !identified {
                return forbidden();
            }
            json_reply(202, &[], r#"{"status":"OK"}"#.into())
        }
        _ => json_reply(404, &[], "{}".into()),
    }
}

/// Serves `handler` on a fresh loopback port (HTTP/1.1 and h2c).
async fn serve<S, F, Fut>(state: Arc<S>, handler: F) -> SocketAddr
where
    S: Send + Sync + 'static,
    F: Fn(Request<Incoming>, Arc<S>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (st, h) = (state.clone(), handler.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = h(req, st.clone());
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The collector stand-in: OTLP/HTTP, decoded with opentelemetry-proto. It answers the
/// statuses in `script` first (without keeping those requests), then 200.
struct CollectorState {
    spans: Shared<Vec<String>>,
    /// The number of spans accepted so far, for tests to wait on.
    accepted: tokio::sync::watch::Sender<usize>,
    requests: Mutex<Vec<ExportTraceServiceRequest>>,
    script: Mutex<VecDeque<u16>>,
    posts: Mutex<usize>,
}

struct Collector {
    addr: SocketAddr,
    state: Arc<CollectorState>,
}

impl Collector {
    async fn start(script: &[u16]) -> Collector {
        let state = Arc::new(CollectorState {
            spans: Arc::default(),
            accepted: tokio::sync::watch::channel(0).0,
            requests: Mutex::default(),
            script: Mutex::new(script.iter().copied().collect()),
            posts: Mutex::new(0),
        });
        let addr = serve(state.clone(), collector).await;
        Collector { addr, state }
    }
}

async fn collector(req: Request<Incoming>, st: Arc<CollectorState>) -> Response<Full<Bytes>> {
    assert_eq!(req.uri().path(), "/v1/traces");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    *st.posts.lock().unwrap() += 1;
    if let Some(status) = st.script.lock().unwrap().pop_front() {
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
    let ids = export
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| hex(&s.span_id));
    let total = {
        let mut spans = st.spans.lock().unwrap();
        spans.extend(ids);
        spans.len()
    };
    st.requests.lock().unwrap().push(export);
    st.accepted.send_replace(total);
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(
            ExportTraceServiceResponse::default().encode_to_vec(),
        )))
        .unwrap()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// The Lambda function: its SDK exports each invocation's spans before the handler returns,
/// two over OTLP/HTTP and two over OTLP/gRPC, and notes each span once the extension acked it.
struct Function {
    http: SocketAddr,
    grpc: TraceServiceClient<tonic::transport::Channel>,
    sent: Shared<BTreeSet<String>>,
}

impl Function {
    async fn new(http: SocketAddr, grpc: SocketAddr, sent: Shared<BTreeSet<String>>) -> Function {
        let grpc = TraceServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        Function { http, grpc, sent }
    }

    fn request(invoke: u8, via: u8) -> ExportTraceServiceRequest {
        let spans = (0..2u8)
            .map(|i| Span {
                trace_id: vec![invoke; 16],
                span_id: vec![invoke, via, i, 0, 0, 0, 0, 1],
                name: format!("handler {invoke}.{via}.{i}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_005_000_000,
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout-fn"), kv("faas.name", "own")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry-python".into(),
                        version: "1.27.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn note(&self, req: &ExportTraceServiceRequest) {
        let mut sent = self.sent.lock().unwrap();
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    assert!(sent.insert(hex(&s.span_id)), "span ids are unique");
                }
            }
        }
    }

    async fn invoke(&mut self, invoke: u8) {
        self.invoke_http(invoke).await;
        self.invoke_grpc(invoke).await;
    }

    /// The invocation's first export, over OTLP/HTTP.
    async fn invoke_http(&mut self, invoke: u8) {
        let req = Self::request(invoke, 1);
        let post = Request::post(format!("http://{}/v1/traces", self.http))
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(req.encode_to_vec())).boxed())
            .unwrap();
        let resp = http1_client().request(post).await.unwrap();
        assert_eq!(resp.status(), 200);
        self.note(&req);
    }

    /// The invocation's second export, over OTLP/gRPC.
    async fn invoke_grpc(&mut self, invoke: u8) {
        let req = Self::request(invoke, 2);
        self.grpc.export(req.clone()).await.unwrap();
        self.note(&req);
    }
}

fn lambda_env(k: &str) -> Option<String> {
    match k {
        "AWS_REGION" => Some("eu-west-1".into()),
        "AWS_LAMBDA_FUNCTION_NAME" => Some("checkout".into()),
        "AWS_LAMBDA_FUNCTION_VERSION" => Some("$LATEST".into()),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => Some("128".into()),
        _ => None,
    }
}

fn args(api: SocketAddr, config: std::path::PathBuf, margin_ms: u64) -> LambdaArgs {
    LambdaArgs {
        lambda_extension: true,
        runtime_api: api.to_string(),
        config: Some(config),
        collector_endpoint: None,
        otlp_http: "127.0.0.1:0".parse().unwrap(),
        otlp_grpc: "127.0.0.1:0".parse().unwrap(),
        extension_name: None,
        deadline_margin_ms: margin_ms,
    }
}

fn unix_ms_in(d: Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now + d).as_millis() as u64
}

fn invoke_event(n: u8) -> serde_json::Value {
    serde_json::json!({
        "eventType": "INVOKE",
        "deadlineMs": unix_ms_in(Duration::from_secs(60)),
        "requestId": format!("8476a536-e9f4-11e8-9739-2dfe598c350{n}"),
        "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:checkout",
        "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invokes_then_shutdown_every_span_reaches_the_collector_before_next() {
    // The first export is answered 503: the extension retries it by `exporter.retry`.
    let collector = Collector::start(&[503]).await;
    let sent: Shared<BTreeSet<String>> = Arc::default();
    let mut api = LambdaApi::start(sent.clone(), collector.state.spans.clone()).await;
    let dir = TempDir::new();
    let config = dir.write(
        "relay.json",
        &format!(
            r#"{{"collector":{{"endpoint":"http://{}/v1/traces"}},"exporter":{{"retry":{{"initial_ms":10,"max_ms":20,"max_attempts":3}}}}}}"#,
            collector.addr
        ),
    );
    let ext = lambda::start(args(api.addr, config, 100), "meshtrace-relay", &lambda_env)
        .await
        .unwrap();
    assert_eq!(ext.id, EXTENSION_ID);
    assert_eq!(ext.registration.function_name, "checkout");
    let mut function = Function::new(ext.otlp_http, ext.otlp_grpc, sent.clone()).await;
    let run = tokio::spawn(ext.run());

    api.wait_next(1).await;
    for n in 1..=3u8 {
        api.deliver(invoke_event(n));
        // The extension asks for the next event right away, and the function runs meanwhile.
        api.wait_next(n as usize + 1).await;
        function.invoke(n).await;
    }
    // The last invocation's spans are only flushed by SHUTDOWN.
    api.deliver(serde_json::json!({
        "eventType": "SHUTDOWN",
        "shutdownReason": "SPINDOWN",
        "deadlineMs": unix_ms_in(Duration::from_secs(10)),
    }));
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the extension returns after SHUTDOWN")
        .unwrap()
        .unwrap();
    assert_eq!(
        outcome,
        Outcome {
            shutdown_reason: "SPINDOWN".into(),
            invokes: 3,
            exported: 12,
            dropped: 0,
        }
    );

    // Registration: the documented headers and body.
    let log = api.log();
    assert_eq!(log.registers.len(), 1);
    let reg = &log.registers[0];
    assert_eq!(reg.path, "/2020-01-01/extension/register");
    assert_eq!(reg.header("lambda-extension-name"), Some("meshtrace-relay"));
    assert_eq!(
        reg.header("lambda-extension-accept-feature"),
        Some("accountId")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&reg.body).unwrap(),
        serde_json::json!({"events": ["INVOKE", "SHUTDOWN"]})
    );
    assert!(log.errors.is_empty(), "{:?}", log.errors);

    // Every span reached the collector exactly once.
    let collected = collector.state.spans.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 12);
    assert_eq!(collected.len(), 12, "{collected:?}");
    assert_eq!(collected.iter().cloned().collect::<BTreeSet<_>>(), sent);
    // Three flushes with spans (at INVOKE 2, INVOKE 3, SHUTDOWN), the first one twice.
    assert_eq!(*collector.state.posts.lock().unwrap(), 4);

    // Four `next` calls, each identified, and at each one everything the function had handed
    // over was already at the collector.
    assert_eq!(log.nexts.len(), 4);
    let handed_over: Vec<usize> = log.nexts.iter().map(|c| c.sent.len()).collect();
    assert_eq!(handed_over, [0, 0, 4, 8]);
    for (i, call) in log.nexts.iter().enumerate() {
        assert_eq!(call.identifier.as_deref(), Some(EXTENSION_ID));
        let missing: Vec<_> = call.sent.difference(&call.collected).collect();
        assert!(
            missing.is_empty(),
            "next call {} came before spans {missing:?} were flushed",
            i + 1
        );
    }

    // The function's spans, resource and scope as it sent them; the Lambda facts are added
    // only where its resource lacks them.
    let requests = collector.state.requests.lock().unwrap().clone();
    let first = &requests[0].resource_spans[0];
    assert_eq!(
        render(&first.resource.as_ref().unwrap().attributes),
        [
            "service.name=\"checkout-fn\"",
            "faas.name=\"own\"",
            "cloud.provider=\"aws\"",
            "cloud.platform=\"aws_lambda\"",
            "cloud.region=\"eu-west-1\"",
            "cloud.account.id=\"123456789012\"",
            "faas.version=\"$LATEST\"",
            "faas.max_memory=134217728",
        ]
    );
    assert_eq!(
        first.scope_spans[0].scope.as_ref().unwrap().name,
        "opentelemetry-python"
    );
    assert_eq!(
        first.scope_spans[0].spans,
        Function::request(1, 1).resource_spans[0].scope_spans[0].spans
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flush_gives_up_at_the_deadline() {
    shutdown_with_a_hanging_collector(false).await;
}

/// SHUTDOWN while an early send hangs: the early send gives its spans back at once, and the
/// shutdown flush tries them within SHUTDOWN's deadline, not the invocation's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_early_send_keeps_its_deadline() {
    shutdown_with_a_hanging_collector(true).await;
}

async fn shutdown_with_a_hanging_collector(early: bool) {
    // A collector that accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let (conn_tx, mut conns) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
            let _ = conn_tx.send(());
        }
    });
    let sent: Shared<BTreeSet<String>> = Arc::default();
    let mut api = LambdaApi::start(sent.clone(), Arc::default()).await;
    let dir = TempDir::new();
    // The collector timeout is far beyond the deadline: only the deadline can end the flush.
    // With `early`, the function's first request fills half the buffer and is sent at once.
    let bound = if early {
        2 * Function::request(1, 1).encoded_len()
    } else {
        1 << 20
    };
    let config = dir.write(
        "relay.json",
        &format!(
            r#"{{"collector":{{"endpoint":"http://{hang_addr}/v1/traces","timeout_ms":60000}},"bridge":{{"relay_max_bytes":{bound}}}}}"#
        ),
    );
    // A wide margin and budget: the assertions below are about which deadline the extension
    // honours, and a loaded machine must not turn scheduling delay into a failure.
    let margin = Duration::from_millis(1000);
    let ext = lambda::start(
        args(api.addr, config, margin.as_millis() as u64),
        "meshtrace-relay",
        &lambda_env,
    )
    .await
    .unwrap();
    let mut function = Function::new(ext.otlp_http, ext.otlp_grpc, sent.clone()).await;
    let run = tokio::spawn(ext.run());
    api.wait_next(1).await;
    api.deliver(invoke_event(1));
    api.wait_next(2).await;
    if early {
        // The first export fills half the buffer and is sent at once; the second waits until
        // that send has taken the buffer, or on a slow machine it would find the buffer full.
        function.invoke_http(1).await;
        tokio::time::timeout(Duration::from_secs(30), conns.recv())
            .await
            .expect("the early send connected")
            .unwrap();
        function.invoke_grpc(1).await;
    } else {
        function.invoke(1).await;
    }

    let budget = Duration::from_millis(3000);
    let delivered = Instant::now();
    api.deliver(serde_json::json!({
        "eventType": "SHUTDOWN",
        "shutdownReason": "TIMEOUT",
        "deadlineMs": unix_ms_in(budget),
    }));
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the extension returns after SHUTDOWN")
        .unwrap()
        .unwrap();
    let took = delivered.elapsed();
    assert_eq!(
        outcome,
        Outcome {
            shutdown_reason: "TIMEOUT".into(),
            invokes: 1,
            exported: 0,
            dropped: 4,
        }
    );
    // It tried (the early send, else the shutdown flush), waited for the answer until the
    // deadline less the margin, and was done before Lambda's deadline.
    if !early {
        tokio::time::timeout(Duration::from_secs(30), conns.recv())
            .await
            .expect("the flush connected to the collector")
            .unwrap();
    }
    assert!(took < budget, "returned {took:?} after SHUTDOWN");
    assert!(
        took >= budget - margin - Duration::from_millis(200),
        "gave up early: {took:?}"
    );
    assert_eq!(api.log().nexts.len(), 2);
}

/// The built binary laid out as a layer's `extensions/meshtrace-relay`, with `env` set.
fn packaged(dir: &TempDir, env: &[(&str, String)]) -> tokio::process::Command {
    let ext_dir = dir.0.join("extensions");
    std::fs::create_dir_all(&ext_dir).unwrap();
    let exe = ext_dir.join("meshtrace-relay");
    std::fs::copy(env!("CARGO_BIN_EXE_linkerd-bridge"), &exe).unwrap();
    let mut cmd = tokio::process::Command::new(exe);
    for k in [
        "MESHTRACE_BRIDGE_CONFIG",
        "MESHTRACE_COLLECTOR_ENDPOINT",
        "MESHTRACE_LAMBDA_EXTENSION_NAME",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("MESHTRACE_LAMBDA_OTLP_HTTP", "127.0.0.1:0")
        .env("MESHTRACE_LAMBDA_OTLP_GRPC", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packaged_binary_registers_by_file_name_and_exits_zero() {
    let collector = Collector::start(&[]).await;
    let mut api = LambdaApi::start(Arc::default(), Arc::default()).await;
    let dir = TempDir::new();
    // No flag: AWS_LAMBDA_RUNTIME_API alone selects the mode, as inside Lambda.
    let child = packaged(
        &dir,
        &[
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
            (
                "MESHTRACE_COLLECTOR_ENDPOINT",
                format!("http://{}", collector.addr),
            ),
        ],
    )
    .spawn()
    .unwrap();
    api.wait_next(1).await;
    api.deliver(invoke_event(1));
    api.wait_next(2).await;
    api.deliver(serde_json::json!({
        "eventType": "SHUTDOWN", "shutdownReason": "SPINDOWN", "deadlineMs": unix_ms_in(Duration::from_secs(2)),
    }));
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the extension exits after SHUTDOWN")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "meshtrace-relay: shutdown (SPINDOWN) after 1 invoke(s): 0 span(s) exported, 0 dropped"
        ),
        "{stderr}"
    );
    let log = api.log();
    assert_eq!(
        log.registers[0].header("lambda-extension-name"),
        Some("meshtrace-relay")
    );
    assert_eq!(log.nexts.len(), 2);
    assert!(log.errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_reported_as_init_error() {
    let mut api = LambdaApi::start(Arc::default(), Arc::default()).await;
    let dir = TempDir::new();
    let config = dir.write(
        "relay.json",
        r#"{"collector":{"endpoint":"https://otel:4318"}}"#,
    );
    let mut cmd = packaged(
        &dir,
        &[
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
            ("MESHTRACE_BRIDGE_CONFIG", config.display().to_string()),
        ],
    );
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the extension exits")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = api.log();
    assert_eq!(log.registers.len(), 1);
    assert_eq!(log.nexts.len(), 0);
    assert_eq!(log.errors.len(), 1);
    let e = &log.errors[0];
    assert_eq!(e.path, "/2020-01-01/extension/init/error");
    assert_eq!(e.header("lambda-extension-identifier"), Some(EXTENSION_ID));
    assert_eq!(
        e.header("lambda-extension-function-error-type"),
        Some("Extension.ConfigInvalid")
    );
    let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
    assert_eq!(body["errorType"], "Extension.ConfigInvalid");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "--config {}: collector.endpoint: scheme \"https\" is not supported",
            config.display()
        )),
        "{message}"
    );
    drop(log);
    // Nothing more happens: no event is ever asked for.
    assert!(api.next_arrived.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_buffer_is_sent_while_the_invocation_runs() {
    let collector = Collector::start(&[]).await;
    let sent: Shared<BTreeSet<String>> = Arc::default();
    let mut api = LambdaApi::start(sent.clone(), collector.state.spans.clone()).await;
    let dir = TempDir::new();
    // Each of the function's requests, once the Lambda facts are added, is more than half
    // the buffer: the relay sends it without waiting for the invocation to end.
    let half = Function::request(1, 1).encoded_len();
    let config = dir.write(
        "relay.json",
        &format!(
            r#"{{"collector":{{"endpoint":"http://{}/v1/traces"}},"bridge":{{"relay_max_bytes":{}}}}}"#,
            collector.addr,
            2 * half
        ),
    );
    let ext = lambda::start(args(api.addr, config, 100), "meshtrace-relay", &lambda_env)
        .await
        .unwrap();
    let mut function = Function::new(ext.otlp_http, ext.otlp_grpc, sent.clone()).await;
    let run = tokio::spawn(ext.run());
    api.wait_next(1).await;
    api.deliver(invoke_event(1));
    api.wait_next(2).await;
    let mut accepted = collector.state.accepted.subscribe();
    // Each export is sent on its own; the second waits for the first to arrive, or on a slow
    // machine it could find the buffer still holding the first, and full.
    function.invoke_http(1).await;
    tokio::time::timeout(Duration::from_secs(30), accepted.wait_for(|n| *n == 2))
        .await
        .expect("the first export is sent during the invocation")
        .unwrap();
    function.invoke_grpc(1).await;
    tokio::time::timeout(Duration::from_secs(30), accepted.wait_for(|n| *n == 4))
        .await
        .expect("the spans are sent during the invocation")
        .unwrap();
    // Still within invocation 1: the extension has not asked for another event.
    assert_eq!(api.log().nexts.len(), 2);
    api.deliver(serde_json::json!({
        "eventType": "SHUTDOWN", "shutdownReason": "SPINDOWN", "deadlineMs": unix_ms_in(Duration::from_secs(10)),
    }));
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((outcome.exported, outcome.dropped), (4, 0));
    let collected: BTreeSet<String> = collector
        .state
        .spans
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert_eq!(collected, *sent.lock().unwrap());
    assert_eq!(collector.state.spans.lock().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_collector_with_gzip() {
    let (sink, sink_addr) = support::GrpcSink::start().await;
    let sent: Shared<BTreeSet<String>> = Arc::default();
    let mut api = LambdaApi::start(sent.clone(), Arc::default()).await;
    let dir = TempDir::new();
    let config = dir.write(
        "relay.json",
        &format!(r#"{{"collector":{{"endpoint":"grpc://{sink_addr}","compression":"gzip"}}}}"#),
    );
    let ext = lambda::start(args(api.addr, config, 100), "meshtrace-relay", &lambda_env)
        .await
        .unwrap();
    let mut function = Function::new(ext.otlp_http, ext.otlp_grpc, sent.clone()).await;
    let run = tokio::spawn(ext.run());
    api.wait_next(1).await;
    api.deliver(invoke_event(1));
    api.wait_next(2).await;
    function.invoke(1).await;
    api.deliver(invoke_event(2));
    api.wait_next(3).await;
    // Invocation 1's spans were flushed before that `next`.
    let ids: BTreeSet<String> = sink.spans().iter().map(|s| hex(&s.span_id)).collect();
    assert_eq!(ids, *sent.lock().unwrap());
    function.invoke(2).await;
    api.deliver(serde_json::json!({
        "eventType": "SHUTDOWN", "shutdownReason": "SPINDOWN", "deadlineMs": unix_ms_in(Duration::from_secs(10)),
    }));
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (outcome.invokes, outcome.exported, outcome.dropped),
        (2, 8, 0)
    );
    let spans = sink.spans();
    assert_eq!(spans.len(), 8);
    let ids: BTreeSet<String> = spans.iter().map(|s| hex(&s.span_id)).collect();
    assert_eq!(ids, *sent.lock().unwrap());
    // One export request per flush, each with both of the function's requests' resources.
    assert_eq!(sink.received.lock().unwrap().len(), 2);
}
