//! The wire to the collector: one hyper client sending the core's already-framed (and, when
//! configured, compressed) request bodies, OTLP/HTTP over HTTP/1.1 or OTLP/gRPC over h2c. The
//! reply is handed back as the core's [`Reply`]; what it means is the core's to decide.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meshtrace::config::Config;
use meshtrace::export::config::{Compression, Protocol};
use meshtrace::export::reply::{classify, ExportResult, Reply, GRPC_PATH};

use crate::adapter::now_ms;
use crate::config::Endpoint;

/// Collector replies are tiny (a partial success at most); a larger body is not read whole.
const MAX_REPLY_BODY: usize = 64 * 1024;

/// Sends export requests to the collector over HTTP/1.1 (OTLP/HTTP) or h2c (OTLP/gRPC).
pub struct HttpExporter {
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    protocol: Protocol,
    headers: http::HeaderMap,
    timeout: std::time::Duration,
}

impl HttpExporter {
    /// A client for `endpoint` with the core's `collector` headers and compression.
    ///
    /// # Errors
    /// A message naming the header or URL that is invalid.
    pub fn new(endpoint: &Endpoint, core: &Config) -> Result<Self, String> {
        let c = &core.collector;
        let path = match c.protocol {
            Protocol::Http => endpoint.path.as_str(),
            Protocol::Grpc => GRPC_PATH,
        };
        let url = format!("http://{}{path}", endpoint.authority);
        let url: http::Uri = url
            .parse()
            .map_err(|e| format!("collector.endpoint: {url:?} is not a valid URL: {e}"))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(endpoint.timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        // gRPC is HTTP/2 only; without TLS there is no ALPN, so h2 with prior knowledge.
        builder.http2_only(c.protocol == Protocol::Grpc);
        let mut headers = http::HeaderMap::new();
        let mut put = |k: &str, v: &str| -> Result<(), String> {
            // Header values are secrets: the error names the header, never the value.
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("collector.headers.{k}: not a valid header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("collector.headers.{k}: not a valid header value"))?;
            headers.insert(name, value);
            Ok(())
        };
        put(
            "user-agent",
            concat!("meshtrace-linkerd-bridge/", env!("CARGO_PKG_VERSION")),
        )?;
        let gzip = c.compression == Compression::Gzip;
        match c.protocol {
            Protocol::Http => {
                put("content-type", "application/x-protobuf")?;
                if gzip {
                    put("content-encoding", "gzip")?;
                }
            }
            Protocol::Grpc => {
                put("content-type", "application/grpc")?;
                put("te", "trailers")?;
                put("grpc-timeout", &format!("{}m", c.timeout_ms))?;
                if gzip {
                    put("grpc-encoding", "gzip")?;
                }
            }
        }
        for (k, v) in &c.headers {
            put(k, v)?;
        }
        Ok(Self {
            client: builder.build(connector),
            url,
            protocol: c.protocol,
            headers,
            timeout: endpoint.timeout,
        })
    }

    /// One attempt, classified by the core's OTLP rules, with the collector's reason when it
    /// refused the request ([`meshtrace::export::rejection::reason`]).
    pub async fn send(&self, body: Bytes) -> (ExportResult, Option<String>) {
        let mut reason = None;
        let result = self.attempt(body, &mut reason).await;
        (result, reason)
    }

    async fn attempt(&self, body: Bytes, reason: &mut Option<String>) -> ExportResult {
        let mut req = Request::post(self.url.clone());
        if let Some(h) = req.headers_mut() {
            h.clone_from(&self.headers);
        }
        let Ok(req) = req.body(Full::new(body)) else {
            return classify(self.protocol, &Reply::default(), now_ms());
        };
        let exchange = async {
            let resp = self.client.request(req).await.ok()?;
            let (parts, body) = resp.into_parts();
            // Reading the body lets the connection go back to the pool, and carries the
            // partial success (and, for gRPC, the trailers with the status).
            let collected = Limited::new(body, MAX_REPLY_BODY).collect().await.ok();
            Some((parts, collected))
        };
        let Ok(Some((parts, collected))) = tokio::time::timeout(self.timeout, exchange).await
        else {
            // No reply: reset, refused or timed out.
            return classify(self.protocol, &Reply::default(), now_ms());
        };
        let trailers = collected.as_ref().and_then(|c| c.trailers().cloned());
        let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
        let get = |name: &str| {
            trailers
                .as_ref()
                .and_then(|t| t.get(name))
                // A trailers-only gRPC reply carries its status in the headers.
                .or_else(|| parts.headers.get(name))
                .map(HeaderValue::as_bytes)
        };
        let reply = Reply {
            status: Some(u32::from(parts.status.as_u16())),
            retry_after: parts
                .headers
                .get(header::RETRY_AFTER)
                .map(HeaderValue::as_bytes),
            grpc_status: get("grpc-status"),
            grpc_details: get("grpc-status-details-bin"),
            grpc_message: get("grpc-message"),
            body: &body,
        };
        let result = classify(self.protocol, &reply, now_ms());
        *reason = meshtrace::export::rejection::reason(&result, &reply);
        result
    }
}
