//! A real gRPC application for the end-to-end tests: `pkg.v1.Greeter/SayHello`, served by tonic's
//! server machinery (message framing, trailers and status encoding are tonic's, not ours), and
//! the two clients that call it through Envoy: tonic's gRPC client over HTTP/2, and a gRPC-Web
//! client over HTTP/1.1 (hyper) for Envoy's `grpc_web` filter.
//!
//! The messages are hand-written prost structs (no `protoc` in the build): the same wire
//! format as generated code for
//! `message HelloRequest { string name = 1; }` and `message HelloReply { string message = 1; }`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Ready;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use tonic::Status;
use tonic_prost::ProstCodec;

use crate::sink::Server;

/// The greeter's request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The greeter's reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The method every test calls.
pub const SAY_HELLO: &str = "/pkg.v1.Greeter/SayHello";
/// A plain HTTP endpoint beside the service: 200, `ok`, no gRPC framing.
pub const PLAIN: &str = "/healthz";

/// The reply stream of one call: tonic writes each item as a message, and the first error as
/// the trailers' status.
pub struct Replies(VecDeque<Result<HelloReply, Status>>);

impl futures_core::Stream for Replies {
    type Item = Result<HelloReply, Status>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.pop_front())
    }
}

/// The greeter. The request's `name` picks the answer, so one server covers every shape:
/// - `ok`: a reply, then trailers with `grpc-status: 0`;
/// - `internal`: a reply, then trailers with `grpc-status: 13`;
/// - `not_found`: response headers, no message, then trailers with `grpc-status: 5`;
/// - `unavailable`: a Trailers-Only response (`grpc-status: 14` in the headers);
/// - anything else: `ok`.
///
/// Served as a server-streaming handler because the wire format of a unary call is the same
/// and only a stream lets a failure follow a message in the trailers (tonic answers a unary
/// handler's error Trailers-Only).
#[derive(Clone, Copy)]
struct Greeter;

impl tower_service::Service<tonic::Request<HelloRequest>> for Greeter {
    type Response = tonic::Response<Replies>;
    type Error = Status;
    type Future = Ready<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
        let name = req.into_inner().name;
        let reply = || {
            Ok(HelloReply {
                message: format!("hello {name}"),
            })
        };
        let items: Vec<Result<HelloReply, Status>> = match name.as_str() {
            "internal" => vec![reply(), Err(Status::internal("boom"))],
            "not_found" => vec![Err(Status::not_found("no such greeting"))],
            "unavailable" => return std::future::ready(Err(Status::unavailable("overloaded"))),
            _ => vec![reply()],
        };
        std::future::ready(Ok(tonic::Response::new(Replies(items.into()))))
    }
}

/// A running greeter (HTTP/2 cleartext), stopped on drop.
pub struct GreeterServer {
    /// The address it listens on (h2c).
    pub addr: SocketAddr,
    _server: Server,
}

impl GreeterServer {
    /// Starts on a free loopback port. [`PLAIN`] answers plain HTTP; any other path than
    /// [`SAY_HELLO`] is answered `UNIMPLEMENTED`, as a generated server does.
    pub fn start() -> anyhow::Result<Self> {
        let server = Server::start(0, |req: http::Request<hyper::body::Incoming>| async move {
            let resp = if req.uri().path() == SAY_HELLO {
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
                grpc.server_streaming(Greeter, req).await
            } else if req.uri().path() == PLAIN {
                // Not gRPC at all: a plain 200 with no `grpc-status`.
                http::Response::new(tonic::body::Body::new(Full::new(Bytes::from_static(b"ok"))))
            } else {
                Status::unimplemented("").into_http()
            };
            Ok::<_, Infallible>(resp)
        })?;
        Ok(Self {
            addr: server.addr,
            _server: server,
        })
    }
}

/// Calls `path` with `name` through `port` (Envoy's listener) with tonic's client over
/// HTTP/2, with extra request metadata; returns the status the client saw.
pub fn call(
    port: u16,
    path: &'static str,
    name: &str,
    metadata: &[(&'static str, &str)],
) -> Status {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Status::internal(format!("runtime: {e}")),
    };
    rt.block_on(call_async(port, None, path, name, metadata))
}

/// [`call`] from inside a Tokio runtime, with `authority` (e.g.
/// `greeter.demo.svc.cluster.local:50051`) as the `:authority` instead of `127.0.0.1:<port>`.
pub async fn call_async(
    port: u16,
    authority: Option<&str>,
    path: &'static str,
    name: &str,
    metadata: &[(&'static str, &str)],
) -> Status {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
    {
        Ok(e) => e,
        Err(e) => return Status::internal(format!("endpoint: {e}")),
    };
    let endpoint = match authority.map(|a| format!("http://{a}").parse::<http::Uri>()) {
        None => endpoint,
        Some(Ok(origin)) => endpoint.origin(origin),
        Some(Err(e)) => return Status::internal(format!("authority: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Status::unavailable(format!("connect: {e}")),
    };
    let mut client = tonic::client::Grpc::new(channel);
    if let Err(e) = client.ready().await {
        return Status::unavailable(format!("not ready: {e}"));
    }
    let mut req = tonic::Request::new(HelloRequest { name: name.into() });
    for (k, v) in metadata {
        if let Ok(v) = v.parse() {
            req.metadata_mut().insert(*k, v);
        }
    }
    let codec = ProstCodec::<HelloRequest, HelloReply>::default();
    match client
        .unary(req, http::uri::PathAndQuery::from_static(path), codec)
        .await
    {
        Ok(r) => Status::ok(r.into_inner().message),
        Err(s) => s,
    }
}

/// A gRPC-Web exchange as the browser-side client saw it.
#[derive(Debug)]
pub struct WebResponse {
    /// The HTTP status.
    pub http_status: u16,
    /// `content-type` of the response.
    pub content_type: Option<String>,
    /// The messages of the response body.
    pub messages: Vec<Vec<u8>>,
    /// The trailer frame's `key: value` lines (lowercased keys), where gRPC-Web puts the status.
    pub trailers: Vec<(String, String)>,
    /// `grpc-status` in the response headers (a Trailers-Only answer).
    pub header_status: Option<String>,
}

/// Calls [`SAY_HELLO`] as a gRPC-Web client: HTTP/1.1 POST, `application/grpc-web+proto`,
/// one length-prefixed message, through Envoy's `grpc_web` filter.
pub fn call_web(port: u16, name: &str, headers: &[(&str, &str)]) -> anyhow::Result<WebResponse> {
    use prost::Message;
    let msg = HelloRequest { name: name.into() }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let mut req = http::Request::post(format!("http://127.0.0.1:{port}{SAY_HELLO}"))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .header("accept", "application/grpc-web+proto");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client
            .request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let http_status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type");
        let header_status = header("grpc-status");
        let mut data = resp.into_body().collect().await?.to_bytes();
        let mut messages = Vec::new();
        let mut trailers = Vec::new();
        while data.remaining() >= 5 {
            let flag = data.get_u8();
            let len = data.get_u32() as usize;
            anyhow::ensure!(data.remaining() >= len, "truncated gRPC-Web frame");
            let payload = data.split_to(len);
            if flag & 0x80 != 0 {
                for line in String::from_utf8_lossy(&payload).split("\r\n") {
                    if let Some((k, v)) = line.split_once(':') {
                        trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
            } else {
                messages.push(payload.to_vec());
            }
        }
        Ok(WebResponse {
            http_status,
            content_type,
            messages,
            trailers,
            header_status,
        })
    })
}
