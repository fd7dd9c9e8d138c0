//! OTLP/HTTP export: a protobuf body POSTed with hyper over a pooled connection.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::retry::{self, Attempt};
use crate::config::Endpoint;
use meshtrace::exporter::ExportResult;

/// Largest collector response read; OTLP's response limit.
const MAX_RESPONSE: usize = 4 << 20;

pub struct HttpExport {
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    gzip: bool,
    timeout: Duration,
}

impl HttpExport {
    pub fn new(endpoint: &Endpoint) -> Result<Self, String> {
        let url: http::Uri = endpoint.url().parse().map_err(|e| {
            format!(
                "collector.endpoint: {:?} is not a valid URL: {e}",
                endpoint.url()
            )
        })?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(endpoint.timeout));
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
            gzip: endpoint.gzip,
            timeout: endpoint.timeout,
        })
    }

    /// The body as sent: gzip-compressed when configured.
    pub fn encode(&self, body: &[u8]) -> Bytes {
        if !self.gzip {
            return Bytes::copy_from_slice(body);
        }
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(body);
        Bytes::from(enc.finish().unwrap_or_default())
    }

    /// One attempt.
    pub async fn send(&self, body: Bytes) -> Attempt {
        let mut req = Request::post(self.url.clone());
        let h = req.headers_mut();
        if let Some(h) = h {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
            h.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!(
                    "meshtrace-linkerd-bridge/",
                    env!("CARGO_PKG_VERSION")
                )),
            );
            if self.gzip {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
        }
        let Ok(req) = req.body(Full::new(body)) else {
            return Attempt::Fail(ExportResult::DispatchFailed);
        };
        let exchange = async {
            let resp = self.client.request(req).await.ok()?;
            let status = resp.status().as_u16();
            let after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| retry::parse_retry_after(v.as_bytes()));
            // Reading the body lets the connection go back to the pool; its content (a
            // partial-success message or an error status) changes nothing we do.
            let _ = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await;
            Some((status, after))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Some((status, after))) => retry::http_status(status, after),
            _ => Attempt::Retry {
                result: ExportResult::NoResponse,
                after: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_body_round_trips() {
        let config = crate::config::BridgeConfig::from_json(
            br#"{"collector":{"endpoint":"http://otel:4318"}}"#,
        )
        .unwrap();
        let export = HttpExport::new(&config.endpoint).unwrap();
        let body = b"resource spans resource spans resource spans".repeat(10);
        let sent = export.encode(&body);
        assert_eq!(&sent[..2], &[0x1f, 0x8b]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&sent[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }
}
