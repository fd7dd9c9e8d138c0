//! A client of the Lambda Extensions API, version `2020-01-01`, as the AWS Lambda Developer
//! Guide documents it (`runtimes-extensions-api.md`; summarised in the project reference
//! `rpc-faas-ambient.md` §3.6). Base URL: `http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension`.
//!
//! | call | request | reply |
//! |---|---|---|
//! | [`ExtensionsApi::register`] | `POST /register`, header `Lambda-Extension-Name` (the extension's file name), body `{"events":["INVOKE","SHUTDOWN"]}` | 200, header `Lambda-Extension-Identifier`, body `{functionName, functionVersion, handler[, accountId]}` |
//! | [`ExtensionsApi::next`] | `GET /event/next`, header `Lambda-Extension-Identifier` | 200 with an [`Event`]; blocks until there is one, so it has no timeout |
//! | [`ExtensionsApi::init_error`], [`ExtensionsApi::exit_error`] | `POST /init/error`, `POST /exit/error`, headers `Lambda-Extension-Identifier` and `Lambda-Extension-Function-Error-Type`, body `{errorMessage, errorType}` | 202; afterwards no call succeeds, so the extension exits |
//!
//! The event list goes in Register's body: there is no events header.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// The API version every path starts with.
pub const API_PREFIX: &str = "/2020-01-01/extension";
/// Register: the extension's file name (required).
pub const NAME_HEADER: &str = "lambda-extension-name";
/// Register's reply, and every later request: the id Lambda gave this extension.
pub const IDENTIFIER_HEADER: &str = "lambda-extension-identifier";
/// Register: optional features asked for; `accountId` adds the account to the reply.
pub const ACCEPT_FEATURE_HEADER: &str = "lambda-extension-accept-feature";
/// Init and exit errors: the error's type, `Extension.<Reason>`.
pub const ERROR_TYPE_HEADER: &str = "lambda-extension-function-error-type";

/// Events this extension subscribes to. An external extension (a file in `/opt/extensions`)
/// may take `SHUTDOWN`, which is its only chance to flush before the sandbox goes.
pub const EVENTS: [&str; 2] = ["INVOKE", "SHUTDOWN"];

/// Replies are a few hundred bytes of JSON; a larger one is refused rather than read whole.
const MAX_REPLY: usize = 1 << 20;

/// `X-Amzn-Trace-Id` of the invocation, as the INVOKE event carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Tracing {
    /// The header's name as the event gives it (`X-Amzn-Trace-Id`).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The header's value: `Root=1-...;Parent=...;Sampled=0|1`.
    #[serde(default)]
    pub value: String,
}

/// One event from `GET /event/next`, tagged by `eventType`. Unknown fields are ignored, so
/// later API additions do not break the extension.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "eventType")]
pub enum Event {
    /// The function is being invoked. `deadline_ms` is when the invocation times out (Unix
    /// ms); the extension's work before its next `next` counts against it.
    #[serde(rename = "INVOKE", rename_all = "camelCase")]
    Invoke {
        /// When the invocation times out, in Unix milliseconds.
        deadline_ms: u64,
        /// The invocation's request id (`requestId`).
        #[serde(default)]
        request_id: String,
        /// The ARN the function was invoked by, with its qualifier if any.
        #[serde(default)]
        invoked_function_arn: String,
        /// The invocation's X-Ray context, when Lambda passes one.
        #[serde(default)]
        tracing: Option<Tracing>,
    },
    /// The sandbox is going away: `SPINDOWN`, `TIMEOUT` or `FAILURE`. After `deadline_ms`
    /// (Unix ms) Lambda kills the process.
    #[serde(rename = "SHUTDOWN", rename_all = "camelCase")]
    Shutdown {
        /// `SPINDOWN`, `TIMEOUT` or `FAILURE`.
        #[serde(default)]
        shutdown_reason: String,
        /// When Lambda kills the process, in Unix milliseconds.
        deadline_ms: u64,
    },
}

/// Register's reply body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The function's name (`functionName`).
    #[serde(default)]
    pub function_name: String,
    /// The function version the sandbox runs (`$LATEST` or a number).
    #[serde(default)]
    pub function_version: String,
    /// The function's configured handler.
    #[serde(default)]
    pub handler: String,
    /// Present when `accountId` was asked for with `Lambda-Extension-Accept-Feature`.
    #[serde(default)]
    pub account_id: Option<String>,
}

/// `error: cause: cause...`: hyper's own message ("client error (Connect)") does not say why.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The Extensions API at one `AWS_LAMBDA_RUNTIME_API` address.
pub struct ExtensionsApi {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://{runtime_api}/2020-01-01/extension`.
    base: String,
}

impl ExtensionsApi {
    /// `runtime_api` is `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn new(runtime_api: &str) -> Result<Self, String> {
        let base = format!("http://{runtime_api}{API_PREFIX}");
        if runtime_api.is_empty() || base.parse::<http::Uri>().is_err() {
            return Err(format!(
                "AWS_LAMBDA_RUNTIME_API: must be host:port, got {runtime_api:?}"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
        let what = format!("{method} {API_PREFIX}{path}");
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("{what}: cannot build the request: {e}"))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{what}: {}", with_causes(&e)))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_REPLY)
            .collect()
            .await
            .map_err(|e| format!("{what}: reading the reply: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// Registers for [`EVENTS`] under `name` (the extension's file name) and returns the
    /// identifier every later call needs, with the function's facts.
    pub async fn register(&self, name: &str) -> Result<(String, Registration), String> {
        let body = serde_json::json!({ "events": EVENTS }).to_string();
        let (status, headers, reply) = self
            .call(
                Method::POST,
                "/register",
                &[(NAME_HEADER, name), (ACCEPT_FEATURE_HEADER, "accountId")],
                Bytes::from(body),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(format!(
                "POST {API_PREFIX}/register: {status}: {}",
                String::from_utf8_lossy(&reply).trim()
            ));
        }
        let id = headers
            .get(IDENTIFIER_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!("POST {API_PREFIX}/register: reply has no Lambda-Extension-Identifier")
            })?
            .to_string();
        // The facts are informational: a body we cannot read must not stop the extension.
        let registration = serde_json::from_slice(&reply).unwrap_or_default();
        Ok((id, registration))
    }

    /// Blocks until Lambda has the next event for this extension. Lambda may freeze the
    /// sandbox while this call waits, so everything held must be flushed before it.
    pub async fn next(&self, id: &str) -> Result<Event, String> {
        let (status, _, body) = self
            .call(
                Method::GET,
                "/event/next",
                &[(IDENTIFIER_HEADER, id)],
                Bytes::new(),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(format!(
                "GET {API_PREFIX}/event/next: {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            format!(
                "GET {API_PREFIX}/event/next: not an INVOKE or SHUTDOWN event ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(256)])
            )
        })
    }

    /// Reports a failed initialisation (`error_type` such as `Extension.ConfigInvalid`).
    pub async fn init_error(
        &self,
        id: &str,
        error_type: &str,
        message: &str,
    ) -> Result<(), String> {
        self.report("/init/error", id, error_type, message).await
    }

    /// Reports an error that makes the extension exit after initialisation.
    pub async fn exit_error(
        &self,
        id: &str,
        error_type: &str,
        message: &str,
    ) -> Result<(), String> {
        self.report("/exit/error", id, error_type, message).await
    }

    async fn report(
        &self,
        path: &str,
        id: &str,
        error_type: &str,
        message: &str,
    ) -> Result<(), String> {
        let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
        let (status, _, reply) = self
            .call(
                Method::POST,
                path,
                &[(IDENTIFIER_HEADER, id), (ERROR_TYPE_HEADER, error_type)],
                Bytes::from(body.to_string()),
            )
            .await?;
        if status != StatusCode::ACCEPTED {
            return Err(format!(
                "POST {API_PREFIX}{path}: {status}: {}",
                String::from_utf8_lossy(&reply).trim()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_and_shutdown_events() {
        let invoke: Event = serde_json::from_str(
            r#"{"eventType":"INVOKE","deadlineMs":1700000003000,"requestId":"3da1f2dc-3222-475e-9205-e2e6c6318895",
                "invokedFunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:checkout",
                "tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}}"#,
        )
        .unwrap();
        assert_eq!(
            invoke,
            Event::Invoke {
                deadline_ms: 1_700_000_003_000,
                request_id: "3da1f2dc-3222-475e-9205-e2e6c6318895".into(),
                invoked_function_arn: "arn:aws:lambda:us-east-1:123456789012:function:checkout"
                    .into(),
                tracing: Some(Tracing {
                    kind: "X-Amzn-Trace-Id".into(),
                    value:
                        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                            .into(),
                }),
            }
        );
        let shutdown: Event = serde_json::from_str(
            r#"{"eventType":"SHUTDOWN","shutdownReason":"SPINDOWN","deadlineMs":1700000005000,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            shutdown,
            Event::Shutdown {
                shutdown_reason: "SPINDOWN".into(),
                deadline_ms: 1_700_000_005_000
            }
        );
        assert!(serde_json::from_str::<Event>(r#"{"eventType":"RESTORE"}"#).is_err());
        assert!(serde_json::from_str::<Event>(r#"{"eventType":"INVOKE"}"#).is_err());
    }

    #[test]
    fn registration_reply_and_base_url() {
        let r: Registration = serde_json::from_str(
            r#"{"functionName":"checkout","functionVersion":"$LATEST","handler":"index.handler","accountId":"123456789012"}"#,
        )
        .unwrap();
        assert_eq!(r.function_name, "checkout");
        assert_eq!(r.account_id.as_deref(), Some("123456789012"));
        assert_eq!(
            ExtensionsApi::new("127.0.0.1:9001").unwrap().base,
            "http://127.0.0.1:9001/2020-01-01/extension"
        );
        assert_eq!(
            ExtensionsApi::new("").err().unwrap(),
            "AWS_LAMBDA_RUNTIME_API: must be host:port, got \"\""
        );
    }
}
