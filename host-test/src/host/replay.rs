//! `meshtrace-host replay`: recorded traffic through the filter without Envoy.
//!
//! Input is JSON Lines, one request per line:
//! `{"request_headers": [[name, value], ...], "properties": {"dotted.path": value, ...},
//!   "response_headers": [[name, value], ...]}`.
//! Output is JSON Lines: one `{"request": line, "upstream_request_headers": ..., "local_response":
//! ...}` per request, then one `{"export": <OTLP/JSON ExportTraceServiceRequest>}` per export
//! call made while flushing.

use std::io::Write;

use serde::Deserialize;
use serde_json::{json, Value};

use super::headers::HeaderMap;
use super::properties::PropValue;
use super::request::{Exchange, Req, Resp};
use super::{export, Host, HostBuilder, HostError, LogLevel};

/// One input line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    request_headers: Vec<(String, String)>,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
    #[serde(default)]
    response_headers: Option<Vec<(String, String)>>,
}

/// Parses one input line into a request; the error says what is wrong with it.
pub fn parse_line(text: &str) -> Result<Req, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| {
        // serde says "at line 1 column N"; within one input line only the column helps.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_string();
        format!("{message} (column {})", e.column())
    })?;
    let mut req = Req::raw(HeaderMap::from_pairs(&line.request_headers));
    for (path, v) in &line.properties {
        let value = PropValue::from_json(v).map_err(|e| format!("property {path:?}: {e}"))?;
        req = req.property(path, value);
    }
    if let Some(h) = line.response_headers {
        let headers = HeaderMap::from_pairs(&h);
        if headers.get(":status").is_none() {
            return Err("response_headers must include \":status\"".into());
        }
        req = req.response(Resp::raw(headers));
    }
    Ok(req)
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Requests replayed.
    pub requests: usize,
    /// Export requests the filter made.
    pub exports: usize,
    /// `(line number, error)` for each skipped line.
    pub malformed: Vec<(usize, String)>,
}

/// Why a replay stopped.
#[derive(Debug)]
pub enum ReplayError {
    /// The filter could not be loaded, refused its configuration, or trapped.
    Host(HostError),
    /// Reading the input or writing the output failed.
    Io(std::io::Error),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(HostError::ConfigRejected { logs, .. }) => {
                write!(f, "the filter rejected the configuration:")?;
                for l in logs {
                    write!(f, "\n  {l}")?;
                }
                Ok(())
            }
            Self::Host(e) => write!(f, "{e}"),
            Self::Io(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl From<HostError> for ReplayError {
    fn from(e: HostError) -> Self {
        Self::Host(e)
    }
}
impl From<std::io::Error> for ReplayError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

fn pairs_json(h: &HeaderMap) -> Value {
    Value::Array(
        h.to_lossy()
            .into_iter()
            .map(|(k, v)| json!([k, v]))
            .collect(),
    )
}

/// The output line for one exchange.
pub fn exchange_json(line: usize, ex: &Exchange) -> Value {
    json!({
        "request": line,
        "upstream_request_headers": ex.upstream.as_ref().map(|u| pairs_json(&u.headers)),
        "local_response": ex.local_response.as_ref().map(|l| json!({
            "status": l.status,
            "details": l.details,
            "headers": pairs_json(&l.headers),
            "body": String::from_utf8_lossy(&l.body),
        })),
    })
}

/// Runs every line of `input` through a host configured with `config`, writing JSON Lines to
/// `out` and the guest's warnings and errors to `log`.
pub fn replay(
    builder: HostBuilder,
    config: &str,
    input: &str,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let mut host = builder.configure(config)?;
    let mut summary = Summary::default();
    for (i, text) in input.lines().enumerate() {
        let line = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(req) => {
                let ex = host.request(req)?;
                writeln!(out, "{}", exchange_json(line, &ex))?;
                summary.requests += 1;
            }
            Err(e) => {
                writeln!(log, "line {line}: skipped: {e}")?;
                summary.malformed.push((line, e));
            }
        }
        forward_logs(&mut host, log)?;
    }
    summary.exports = flush(&mut host, out)?;
    forward_logs(&mut host, log)?;
    Ok(summary)
}

/// Advances the clock one tick period at a time, answering every export call with 200, until
/// two rounds in a row export nothing (the second also pushes the final metrics).
fn flush(host: &mut Host, out: &mut dyn Write) -> Result<usize, ReplayError> {
    let period = host
        .tick_periods(0)?
        .first()
        .map_or(1000, |(_, p)| u64::from(*p));
    let mut exports = 0;
    let mut quiet = 0;
    for _ in 0..1000 {
        host.advance(period)?;
        let calls = host.pending_http_calls();
        if calls.is_empty() {
            quiet += 1;
            if quiet == 2 {
                break;
            }
            continue;
        }
        quiet = 0;
        for call in calls {
            let line = match export::decode(&call.body) {
                Ok(req) => json!({ "export": export::to_json(&req) }),
                Err(e) => json!({ "export_error": e, "body_len": call.body.len() }),
            };
            writeln!(out, "{line}")?;
            exports += 1;
            host.answer(call.token, 200, b"")?;
        }
    }
    Ok(exports)
}

/// Guest warnings and errors go to the user as they happen.
fn forward_logs(host: &mut Host, log: &mut dyn Write) -> std::io::Result<()> {
    for l in host.take_logs() {
        if l.level >= LogLevel::Warn {
            writeln!(log, "[{}] {}", l.level.name(), l.message)?;
        }
    }
    Ok(())
}
