//! The demo's applications, each the workload behind one sidecar: `frontend`, which really calls
//! the other services through its outbound sidecar, and the two `backend` releases. The gRPC
//! `greeter` is [`crate::grpc_app::GreeterServer`].
//!
//! They run in-process on hyper (and tonic for the gRPC call), like the sink, so the demo needs
//! nothing but Envoy.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::sink::{lock, Server};

/// The response header naming the backend release (its `version` label) that served a call.
pub const SERVED_BY: &str = "x-served-by";

/// The trace-context headers an instrumented application copies from the request it serves
/// onto the requests it makes: W3C Trace Context and baggage.
pub const PROPAGATED: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// One backend release's app.
pub struct Backend {
    /// Where it listens (plain HTTP/1.1; its sidecar terminates mTLS).
    pub addr: SocketAddr,
    _server: Server,
}

impl Backend {
    /// Starts `version` (`v1`, `v2`): every request waits `latency` and is answered 200 with
    /// `x-served-by: <version>` and a small JSON body (`{"path": ..., "version": ...}`); with
    /// `fail_every: Some(n)` the 1st, (n+1)th, (2n+1)th... request is answered 500 instead (a
    /// release with a bug).
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(
        version: &'static str,
        latency: Duration,
        fail_every: Option<u64>,
    ) -> anyhow::Result<Self> {
        let served = Arc::new(AtomicU64::new(0));
        let server = Server::start(0, move |req: Request<Incoming>| {
            let served = served.clone();
            async move {
                let n = served.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(latency).await;
                let failed = fail_every.is_some_and(|k| k > 0 && n.is_multiple_of(k));
                let (status, body) = if failed {
                    (
                        500,
                        serde_json::json!({"error": format!("{version} failed")}),
                    )
                } else {
                    (
                        200,
                        serde_json::json!({"path": req.uri().path(), "version": version}),
                    )
                };
                let body = format!("{body}\n");
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = hyper::StatusCode::from_u16(status)
                    .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                r.headers_mut()
                    .insert(SERVED_BY, hyper::header::HeaderValue::from_static(version));
                Ok::<_, Infallible>(r)
            }
        })?;
        Ok(Self {
            addr: server.addr,
            _server: server,
        })
    }
}

/// What the frontend saw of its calls to `backend`, by the release that served each one (the
/// `x-served-by` response header; `-` when no backend answered).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Release (`v1`, `v2`) → the calls it served.
    pub by_version: BTreeMap<String, Calls>,
}

/// Calls to one release as their caller measured them.
#[derive(Clone, Debug, Default)]
pub struct Calls {
    /// Calls answered.
    pub calls: u64,
    /// Of those, answered with a 5xx.
    pub errors: u64,
    /// Each call's duration at the caller, in milliseconds.
    pub durations_ms: Vec<f64>,
}

/// The frontend app.
pub struct Frontend {
    /// Where it listens (plain HTTP/1.1, behind its sidecar's inbound listener).
    pub addr: SocketAddr,
    /// Its calls to `backend`, by release.
    pub observed: Arc<Mutex<Observed>>,
    _server: Server,
}

/// Hosts the frontend calls, resolved by its sidecar's outbound listener (as Istio's do).
pub const BACKEND_HOST: &str = "backend.demo.svc.cluster.local";
/// The recommendations service (behind an injected fault).
pub const RECOMMENDATIONS_HOST: &str = "recommendations.demo.svc.cluster.local";
/// The gRPC greeter's authority.
pub const GREETER_AUTHORITY: &str = "greeter.demo.svc.cluster.local:50051";

#[derive(Clone)]
struct FrontendCtx {
    outbound_port: u16,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    observed: Arc<Mutex<Observed>>,
}

impl Frontend {
    /// Starts the frontend; it calls other services through `outbound_port`, its sidecar's
    /// outbound listener. Its API:
    /// - `GET /api/products/{id}`: `GET /api/products/{id}` on `backend`, its status and body
    ///   passed on with `x-served-by`;
    /// - `GET /api/checkout`: the greeter's `pkg.v1.Greeter/SayHello` (gRPC), then
    ///   `GET /api/products/7` on `backend`; 200 when both succeed, else 502;
    /// - `GET /api/home`: `GET /api/recommendations` on `recommendations`, and 200 whatever it
    ///   answers (a page that degrades gracefully without recommendations).
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(outbound_port: u16) -> anyhow::Result<Self> {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let ctx = FrontendCtx {
            outbound_port,
            client: Client::builder(TokioExecutor::new()).build_http(),
            observed: observed.clone(),
        };
        let server = Server::start(0, move |req: Request<Incoming>| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(frontend(ctx, req).await) }
        })?;
        Ok(Self {
            addr: server.addr,
            observed,
            _server: server,
        })
    }
}

fn text_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn frontend(ctx: FrontendCtx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // What an OpenTelemetry-instrumented app does: the sidecar handed this request the context
    // of its SERVER span, and every call made while serving it carries that context on, so the
    // outbound sidecar's CLIENT span becomes its child. Without this copy each hop would start a
    // trace of its own.
    let context: Vec<(&'static str, String)> = PROPAGATED
        .iter()
        .filter_map(|&name| {
            let v = req.headers().get(name)?.to_str().ok()?;
            Some((name, v.to_string()))
        })
        .collect();
    let path = req.uri().path().to_string();
    if path.starts_with("/api/products/") {
        let (status, body, served_by) = ctx.call_backend(&path, &context).await;
        let mut r = text_response(status, body);
        if let Ok(v) = hyper::header::HeaderValue::from_str(&served_by) {
            r.headers_mut().insert(SERVED_BY, v);
        }
        return r;
    }
    match path.as_str() {
        "/api/checkout" => {
            let greeting = ctx.call_greeter(&context).await;
            let (status, _, served_by) = ctx.call_backend("/api/products/7", &context).await;
            let ok = greeting.code() == tonic::Code::Ok && status < 400;
            let mut r = text_response(
                if ok { 200 } else { 502 },
                format!(
                    "greeter: {:?} {}; backend {status} from {served_by}\n",
                    greeting.code(),
                    greeting.message()
                ),
            );
            if let Ok(v) = hyper::header::HeaderValue::from_str(&served_by) {
                r.headers_mut().insert(SERVED_BY, v);
            }
            r
        }
        "/api/home" => {
            let recommendations = ctx
                .get(RECOMMENDATIONS_HOST, "/api/recommendations", &context)
                .await;
            let shown = match recommendations {
                Ok((200, body, _)) => body,
                Ok((status, _, _)) => format!("(recommendations unavailable: {status})"),
                Err(e) => format!("(recommendations unavailable: {e})"),
            };
            text_response(200, format!("home page; {shown}\n"))
        }
        _ => text_response(404, "not found\n".into()),
    }
}

impl FrontendCtx {
    /// `GET host path` through the outbound sidecar with the request's trace context:
    /// (status, body, `x-served-by` or `-`).
    async fn get(
        &self,
        host: &str,
        path: &str,
        context: &[(&'static str, String)],
    ) -> anyhow::Result<(u16, String, String)> {
        let mut req = Request::get(format!("http://127.0.0.1:{}{path}", self.outbound_port))
            .header(hyper::header::HOST, host);
        for (k, v) in context {
            req = req.header(*k, v.as_str());
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::new()))?)
            .await?;
        let status = resp.status().as_u16();
        let served_by = resp
            .headers()
            .get(SERVED_BY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            String::from_utf8_lossy(&body).into_owned(),
            served_by,
        ))
    }

    /// A call to `backend`, counted in [`Observed`] by the release that answered it.
    async fn call_backend(
        &self,
        path: &str,
        context: &[(&'static str, String)],
    ) -> (u16, String, String) {
        let started = Instant::now();
        let result = self.get(BACKEND_HOST, path, context).await;
        let took_ms = started.elapsed().as_secs_f64() * 1e3;
        let (status, body, served_by) =
            result.unwrap_or_else(|e| (502, format!("backend: {e}\n"), "-".into()));
        let mut observed = lock(&self.observed);
        let calls = observed.by_version.entry(served_by.clone()).or_default();
        calls.calls += 1;
        calls.errors += u64::from(status >= 500);
        calls.durations_ms.push(took_ms);
        (status, body, served_by)
    }

    async fn call_greeter(&self, context: &[(&'static str, String)]) -> tonic::Status {
        let metadata: Vec<(&'static str, &str)> =
            context.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::grpc_app::call_async(
            self.outbound_port,
            Some(GREETER_AUTHORITY),
            crate::grpc_app::SAY_HELLO,
            "frontend",
            &metadata,
        )
        .await
    }
}
