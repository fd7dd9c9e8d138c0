//! A local stand-in for the AWS Lambda `Invoke` API, for the end-to-end test of Envoy's
//! `envoy.filters.http.aws_lambda` filter: AWS cannot be reached from a test, so this server
//! follows the documented API (`POST /2015-03-31/functions/<FunctionName>/invocations`,
//! AWS `API_Invoke.md`) closely enough for the filter and meshtrace: it records every signed
//! request and answers like Lambda, with `x-amzn-RequestId`, `X-Amz-Executed-Version`, a
//! function error in `X-Amz-Function-Error` behind a 200, and, when the request asked for
//! `X-Amz-Log-Type: Tail`, the base64 log tail in `X-Amz-Log-Result`.
//!
//! The request body (passed through unchanged with `payload_passthrough: true`) picks the
//! answer: `cold` (a log whose `REPORT` line has `Init Duration`), `error` (a warm log and
//! `X-Amz-Function-Error: Unhandled`), anything else a warm, successful invocation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::sink::{header_list, Server, UpstreamRequest};

/// The log of a cold invocation: the function's own lines (never to be recorded), then the
/// `REPORT` line with `Init Duration`, tab-separated as Lambda writes it.
pub const COLD_LOG: &str = "START RequestId: req-cold Version: 7\nuser secret: hunter2\nEND RequestId: req-cold\nREPORT RequestId: req-cold\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 70 MB\tInit Duration: 150.00 ms\t\n";
/// The log of a warm invocation: no `Init Duration`.
pub const WARM_LOG: &str = "START RequestId: req-warm Version: 7\nEND RequestId: req-warm\nREPORT RequestId: req-warm\tDuration: 2.50 ms\tBilled Duration: 3 ms\tMemory Size: 1024 MB\tMax Memory Used: 80 MB\t\n";

/// One invocation as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Invoke {
    /// The request line and headers.
    pub request: UpstreamRequest,
    /// The payload.
    pub body: String,
}

/// The stand-in Lambda endpoint.
pub struct FakeLambda {
    /// Where it listens (plain HTTP on loopback).
    pub addr: SocketAddr,
    seen: Arc<Mutex<VecDeque<Invoke>>>,
    _server: Server,
}

fn base64(s: &str) -> String {
    let mut out = vec![0; s.len().div_ceil(3) * 4];
    let n = meshtrace::base64::encode(s.as_bytes(), &mut out, true).unwrap_or(0);
    out.truncate(n);
    String::from_utf8(out).unwrap_or_default()
}

impl FakeLambda {
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
                let request = UpstreamRequest {
                    method: req.method().to_string(),
                    path: req.uri().to_string(),
                    headers: header_list(req.headers()),
                };
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                let tail = request.get("x-amz-log-type") == Some("Tail");
                let (id, log, error) = match body.as_str() {
                    "cold" => ("req-cold", COLD_LOG, false),
                    "error" => ("req-error", WARM_LOG, true),
                    _ => ("req-warm", WARM_LOG, false),
                };
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(Invoke { request, body });
                let mut r = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                let h = r.headers_mut();
                h.insert("content-type", "application/json".parse().unwrap());
                h.insert("x-amzn-requestid", id.parse().unwrap());
                h.insert("x-amz-executed-version", "7".parse().unwrap());
                if error {
                    h.insert("x-amz-function-error", "Unhandled".parse().unwrap());
                }
                if tail {
                    h.insert("x-amz-log-result", base64(log).parse().unwrap());
                }
                Ok::<_, Infallible>(r)
            }
        })?;
        Ok(Self {
            addr: server.addr,
            seen,
            _server: server,
        })
    }

    /// Invocations seen so far, oldest first, removing them.
    pub fn take(&self) -> Vec<Invoke> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }
}
