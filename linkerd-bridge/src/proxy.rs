//! Forwarding one request to the application and its response back, with the span around it.
//!
//! Bodies stream through in both directions. The application gets a pooled keep-alive
//! connection in the HTTP version chosen by `--upstream-protocol`: HTTP/1 from this runtime's
//! own [`Http1Pool`], HTTP/2 from hyper-util's client, which multiplexes every request on one
//! connection. Upgrades (websockets) are tunnelled once both sides agree on
//! `101 Switching Protocols`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::adapter;
use crate::body::{BoxError, ResponseBody, SpanGuard, TracedBody};
use crate::cli::UpstreamProtocol;
use crate::shared::{Shared, Stats};
use crate::upstream::{AppBody, Http1Pool};
use meshtrace::correlation::{self, Correlation, ServerTimingEntry};

/// A connector that always dials the application, whatever the request's authority: the
/// authority is kept for the application to see, and pools stay per authority.
#[derive(Clone)]
pub struct AppConnector {
    inner: HttpConnector,
    target: Uri,
}

impl AppConnector {
    fn new(addr: SocketAddr) -> Self {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        inner.set_keepalive(Some(Duration::from_secs(60)));
        let target = Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        Self { inner, target }
    }

    /// The HTTP/1 pool of one runtime, dialling the same way.
    fn http1_pool(&self, idle_timeout: Duration) -> Http1Pool {
        Http1Pool::new(self.inner.clone(), self.target.clone(), idle_timeout)
    }
}

impl tower_service::Service<Uri> for AppConnector {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _authority: Uri) -> Self::Future {
        self.inner.call(self.target.clone())
    }
}

type AppClient = Client<AppConnector, Incoming>;

/// Everything a request handler needs.
pub struct Proxy {
    shared: Arc<Shared>,
    http1: Arc<Http1Pool>,
    h2c: AppClient,
    /// The application's address as a URI authority, for requests that name none usable.
    upstream_authority: Option<Authority>,
    protocol: UpstreamProtocol,
    timeout: Duration,
    /// `access_log` and `response`, copied once: read per response without the core's lock.
    correlation: Correlation,
}

/// Why the application gave no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Timeout,
    Unreachable,
}

impl Proxy {
    /// A proxy to the application at `upstream`, speaking `protocol`, giving up after `timeout`.
    pub fn new(
        shared: Arc<Shared>,
        upstream: SocketAddr,
        protocol: UpstreamProtocol,
        timeout: Duration,
    ) -> Self {
        let connector = AppConnector::new(upstream);
        let http1 = Arc::new(connector.http1_pool(Duration::from_secs(90)));
        crate::upstream::spawn_sweeper(&http1);
        let h2c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        let correlation = crate::shared::lock(&shared.core).tracer.correlation;
        Self {
            shared,
            correlation,
            http1,
            h2c,
            upstream_authority: Authority::try_from(upstream.to_string()).ok(),
            protocol,
            timeout,
        }
    }

    /// Handles one request from the Linkerd proxy; never fails, errors become 502 or 504.
    pub fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: Arc<str>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static {
        let upgrade = is_upgrade(req.headers()) && req.version() != Version::HTTP_2;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let version = parts.version;
        let rec = adapter::start_request(&self.shared, &mut parts);
        let mut guard = rec.map(|r| SpanGuard::new(self.shared.clone(), r, version, peer));
        let to_h2 = !upgrade
            && match self.protocol {
                UpstreamProtocol::Auto => version == Version::HTTP_2,
                UpstreamProtocol::Http1 => false,
                UpstreamProtocol::H2c => true,
            };
        let out = self.outgoing(parts, body, upgrade, to_h2);
        async move {
            let result = if to_h2 {
                match tokio::time::timeout(self.timeout, self.h2c.request(out)).await {
                    Ok(Ok(resp)) => Ok(resp.map(AppBody::unpooled)),
                    Ok(Err(_)) => Err(Failure::Unreachable),
                    Err(_) => Err(Failure::Timeout),
                }
            } else {
                match tokio::time::timeout(self.timeout, self.http1.send(out)).await {
                    Ok(Ok(resp)) => Ok(resp),
                    Ok(Err(_)) => Err(Failure::Unreachable),
                    Err(_) => Err(Failure::Timeout),
                }
            };
            let resp = match result {
                Ok(mut resp) => {
                    if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) =
                        (client_upgrade, resp.status())
                    {
                        // The connection now belongs to the tunnel.
                        resp.body_mut().forget_connection();
                        tunnel(client_side, hyper::upgrade::on(&mut resp));
                    } else {
                        strip_hop_by_hop(resp.headers_mut(), false);
                    }
                    if let Some(g) = guard.as_mut() {
                        g.status = Some(resp.status().as_u16());
                        // A Trailers-Only reply carries the call's status in its headers.
                        g.observe_grpc(resp.headers());
                        if let Some((entry, expose)) = g.server_timing(&self.correlation) {
                            add_server_timing(resp.headers_mut(), &entry, expose);
                        }
                    }
                    resp.map(|b| TracedBody::new(b, guard).boxed())
                }
                Err(failure) => {
                    let (status, text, counter) = match failure {
                        Failure::Timeout => (
                            StatusCode::GATEWAY_TIMEOUT,
                            "upstream timed out\n",
                            &self.shared.stats.upstream_timeouts,
                        ),
                        Failure::Unreachable => (
                            StatusCode::BAD_GATEWAY,
                            "upstream unavailable\n",
                            &self.shared.stats.upstream_errors,
                        ),
                    };
                    Stats::add(counter, 1);
                    if let Some(g) = guard.as_mut() {
                        g.status = Some(status.as_u16());
                    }
                    let body = Full::new(Bytes::from_static(text.as_bytes()))
                        .map_err(|never: Infallible| -> BoxError { match never {} });
                    let mut r = Response::new(TracedBody::new(body, guard).boxed());
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    r
                }
            };
            Ok(resp)
        }
    }

    /// The request as the application receives it.
    fn outgoing(
        &self,
        mut parts: http::request::Parts,
        body: Incoming,
        upgrade: bool,
        to_h2: bool,
    ) -> Request<Incoming> {
        strip_hop_by_hop(&mut parts.headers, upgrade);
        // The request's own parts are moved, not copied and re-parsed: this runs on every
        // request.
        let incoming = std::mem::take(&mut parts.uri).into_parts();
        let host = || {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        };
        if to_h2 {
            // The HTTP/2 client wants the absolute URI, and carries the authority as a
            // pseudo-header.
            let authority = incoming
                .authority
                .or_else(host)
                // An authority the URI grammar refuses still reaches the app by its address.
                .or_else(|| self.upstream_authority.clone());
            let mut uri = uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = authority;
            uri.path_and_query = Some(
                incoming
                    .path_and_query
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            );
            parts.uri = Uri::from_parts(uri).unwrap_or_default();
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            return Request::from_parts(parts, body);
        }
        // HTTP/1 on the wire: the request target in origin form (authority form for CONNECT),
        // and `host` from the request's authority when the request carried none (an HTTP/2
        // request sent on as HTTP/1), as hyper-util's client does.
        parts.uri = if parts.method == Method::CONNECT {
            incoming
                .authority
                .clone()
                .or_else(host)
                .or_else(|| self.upstream_authority.clone())
                .map(Uri::from)
                .unwrap_or_default()
        } else {
            incoming.path_and_query.map(Uri::from).unwrap_or_default()
        };
        if !parts.headers.contains_key(header::HOST) {
            let authority = incoming
                .authority
                .as_ref()
                .or(self.upstream_authority.as_ref());
            if let Some(v) = authority.and_then(host_value) {
                parts.headers.insert(header::HOST, v);
            }
        }
        parts.version = Version::HTTP_11;
        Request::from_parts(parts, body)
    }
}

/// The `host` header naming `authority`, without the default port of `http`.
fn host_value(authority: &Authority) -> Option<HeaderValue> {
    let text = match authority.port_u16() {
        Some(80) => authority.host(),
        _ => authority.as_str(),
    };
    HeaderValue::from_str(text).ok()
}

/// True when the request asks to switch protocols (websockets and the like).
fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Hop-by-hop headers that `http` has no constant for. Named once: a name given as a string
/// is parsed and validated again on every lookup, twice per request here.
const KEEP_ALIVE: header::HeaderName = header::HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: header::HeaderName = header::HeaderName::from_static("proxy-connection");

/// Whether `name` is one [`strip_hop_by_hop`] may remove or inspect. Names listed in
/// `connection` need not be: without `connection` there are none.
fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "upgrade" | "transfer-encoding" | "te" | "keep-alive" | "proxy-connection"
    )
}

/// Headers that describe one connection, not the message; a proxy must not forward them.
/// An upgrade keeps `connection` and `upgrade`, which carry the handshake.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them: one pass comparing names is far cheaper than hashing
    // each of them for a lookup (this runs twice per request).
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<header::HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| header::HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for name in listed {
        h.remove(name);
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, header::TRANSFER_ENCODING] {
        h.remove(name);
    }
    if !upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
    // Only `te: trailers` has end-to-end meaning (gRPC needs it).
    if h.get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        h.remove(header::TE);
    }
}

/// Joins the client's and the application's upgraded connections until either side closes.
fn tunnel(client: hyper::upgrade::OnUpgrade, app: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(client), Ok(app)) = tokio::join!(client, app) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut app = TokioIo::new(app);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
    });
}

/// Appends the span's `server-timing` entry after any the application sent, and with `expose`
/// `access-control-expose-headers: server-timing` (see [`meshtrace::correlation`]).
fn add_server_timing(headers: &mut HeaderMap, entry: &ServerTimingEntry, expose: bool) {
    // The core formats ASCII it generated itself; a value it could not turn into a header
    // would be skipped rather than failing the response.
    if let Ok(v) = HeaderValue::from_bytes(entry.as_bytes()) {
        headers.append(
            header::HeaderName::from_static(correlation::SERVER_TIMING),
            v,
        );
        if expose {
            let (name, value) = correlation::EXPOSE_HEADERS;
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(header::HeaderName::from_static(name), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("traceparent", HeaderValue::from_static("x"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["traceparent"]);
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("trailers"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["connection", "upgrade", "te"]);
    }

    #[test]
    fn end_to_end_headers_pass_unchanged() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("app"));
        h.insert("x-keep-alive", HeaderValue::from_static("1"));
        h.append("traceparent", HeaderValue::from_static("x"));
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
        // `te: trailers` alone is end-to-end; any other `te` goes.
        h.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
        h.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }
}
