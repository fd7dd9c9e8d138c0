//! Trace ids where operators look first, in real Envoy: a stock file access log with
//! `%FILTER_STATE(wasm.meshtrace.trace_id:PLAIN)%` prints exactly the exported span's trace id,
//! span id and sampled flag (`access_log.filter_state`), and a client receives the span's
//! context in a `server-timing` entry only when `response.server_timing` asks for it, never at
//! an untrusted edge unless configured, after the upstream's own entry.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshtrace_host_test::envoy::{envoy_binary, wasm_path, Envoy, EnvoyVars, HttpResponse};
use meshtrace_host_test::sink::{OtlpSink, Upstream, UpstreamRequest};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::hex;

const WAIT: Duration = Duration::from_secs(10);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

/// Envoy on `filter/envoy/access-log.yaml` with its access log file, the upstream and the sink.
struct Stack {
    sink: OtlpSink,
    upstream: Upstream,
    envoy: Envoy,
    access_log: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.access_log);
    }
}

fn start(extra: &str) -> Stack {
    let plugin = format!(
        r#"{{"collector":{{"cluster":"otel_collector"}},"direction":"inbound","batch":{{"flush_interval_ms":100}}{extra}}}"#
    );
    let binary = envoy_binary().expect("Envoy (make envoy)");
    let sink = OtlpSink::start(0).unwrap();
    let upstream = Upstream::start().unwrap();
    let mut vars = EnvoyVars::new(
        wasm_path().expect("the filter (make build-wasm)"),
        upstream.addr.port(),
        sink.addr.port(),
        &plugin,
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let access_log = std::env::temp_dir().join(format!(
        "meshtrace-access-{}-{nanos}.log",
        std::process::id()
    ));
    vars.set("ACCESS_LOG", access_log.display());
    let envoy = Envoy::start(&binary, "access-log.yaml", vars).expect("start Envoy");
    Stack {
        sink,
        upstream,
        envoy,
        access_log,
    }
}

impl Stack {
    fn get(&self, path: &str, traceparent: &str) -> HttpResponse {
        self.envoy
            .request("GET", path, &[("traceparent", traceparent)])
            .unwrap()
    }

    /// The access log line of `path` (the format starts with the path), waiting for Envoy's
    /// periodic flush. Each test sends each path once.
    fn log_line(&self, path: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let prefix = format!("{path} ");
            if let Some(line) = text.lines().find(|l| l.starts_with(&prefix)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no access log line for {path} in {text:?}; Envoy log:\n{}",
                self.envoy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exported span of `path`.
    fn span(&self, path: &str) -> Span {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.sink.spans().into_iter().find(|s| {
                s.attributes.iter().any(|a| {
                    a.key == "url.path"
                        && a.value.as_ref().and_then(|v| v.value.clone())
                            == Some(Value::StringValue(path.into()))
                })
            });
            if let Some(s) = found {
                return s;
            }
            assert!(Instant::now() < deadline, "no span for {path}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn upstream_request(&self) -> UpstreamRequest {
        let mut seen = self.upstream.take();
        assert_eq!(seen.len(), 1);
        seen.remove(0)
    }
}

/// The line Envoy writes for `path` with status `code` and the three filter-state values.
fn line(path: &str, code: u16, trace: &str, span: &str, sampled: &str) -> String {
    format!("{path} {code} trace_id={trace} span_id={span} sampled={sampled}")
}

fn server_timing(r: &HttpResponse) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == "server-timing")
        .map(|(_, v)| v.as_str())
        .collect()
}

fn expose(r: &HttpResponse) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == "access-control-expose-headers")
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn access_log_prints_the_exported_spans_ids() {
    let s =
        start(r#","access_log":{"filter_state":"recorded"},"sampling":{"always_keep":["error"]}"#);

    // Sampled: the exported SERVER span's ids, sampled 1.
    assert_eq!(s.get("/sampled", SAMPLED).status, 200);
    let span = s.span("/sampled");
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(
        s.log_line("/sampled"),
        line("/sampled", 200, TRACE, &hex(&span.span_id), "1")
    );

    // Unsampled and not kept: nothing written, so the stock `-`.
    assert_eq!(s.get("/unsampled", UNSAMPLED).status, 200);
    assert_eq!(
        s.log_line("/unsampled"),
        line("/unsampled", 200, "-", "-", "-")
    );

    // Unsampled but kept for its 503: decided and written in `on_log`, which Envoy runs
    // before its access log; the kept span carries the unsampled flag, and so does the line.
    assert_eq!(s.get("/status/503", UNSAMPLED).status, 503);
    let kept = s.span("/status/503");
    assert_eq!(kept.flags & 1, 0);
    assert_eq!(
        s.log_line("/status/503"),
        line("/status/503", 503, TRACE, &hex(&kept.span_id), "0")
    );

    // Answered by the fault filter before meshtrace saw it: recorded in `on_log`, logged too.
    assert_eq!(s.get("/fault/abort", SAMPLED).status, 503);
    let early = s.span("/fault/abort");
    assert_eq!(
        s.log_line("/fault/abort"),
        line("/fault/abort", 503, TRACE, &hex(&early.span_id), "1")
    );
}

#[test]
fn access_log_all_prints_unsampled_requests_too() {
    let s = start(r#","access_log":{"filter_state":"all"}"#);
    assert_eq!(s.get("/unsampled", UNSAMPLED).status, 200);
    // The span id is the one sent upstream as the parent; no span is exported.
    let up = s.upstream_request();
    let tp: Vec<&str> = up.get("traceparent").unwrap().split('-').collect();
    assert_eq!(tp[1], TRACE);
    assert_eq!(
        s.log_line("/unsampled"),
        line("/unsampled", 200, TRACE, tp[2], "0")
    );
    assert_eq!(s.get("/sampled", SAMPLED).status, 200);
    let span = s.span("/sampled");
    assert_eq!(
        s.log_line("/sampled"),
        line("/sampled", 200, TRACE, &hex(&span.span_id), "1")
    );
    assert_eq!(
        s.sink.spans().len(),
        1,
        "the unsampled request is not exported"
    );
}

#[test]
fn server_timing_is_absent_by_default() {
    let s = start("");
    let r = s.get("/timed", SAMPLED);
    assert_eq!(r.status, 200);
    assert_eq!(server_timing(&r), ["cache;desc=hit"]);
    assert!(expose(&r).is_empty());
    // Nor does the filter write filter state unless asked.
    s.span("/timed");
    assert_eq!(s.log_line("/timed"), line("/timed", 200, "-", "-", "-"));
}

#[test]
fn server_timing_names_the_server_span_after_the_upstreams_entry() {
    let s = start(r#","response":{"server_timing":"w3c"}"#);
    let r = s.get("/timed", SAMPLED);
    assert_eq!(r.status, 200);
    let span = s.span("/timed");
    assert_eq!(
        server_timing(&r),
        [
            "cache;desc=hit".to_string(),
            format!("trace;desc=00-{TRACE}-{}-01", hex(&span.span_id))
        ]
    );
    assert!(expose(&r).is_empty());
    // An unsampled request is not recorded: no entry, the upstream's only.
    let r = s.get("/timed/unsampled", UNSAMPLED);
    assert_eq!(server_timing(&r), ["cache;desc=hit"]);
    // Without an upstream entry, ours alone.
    let r = s.get("/plain", SAMPLED);
    let span = s.span("/plain");
    assert_eq!(
        server_timing(&r),
        [format!("trace;desc=00-{TRACE}-{}-01", hex(&span.span_id))]
    );
}

#[test]
fn server_timing_vendor_form_with_the_expose_header() {
    let s = start(r#","response":{"server_timing":"traceparent","expose_server_timing":true}"#);
    let r = s.get("/plain", SAMPLED);
    let span = s.span("/plain");
    assert_eq!(
        server_timing(&r),
        [format!(
            "traceparent;desc=\"00-{TRACE}-{}-01\"",
            hex(&span.span_id)
        )]
    );
    assert_eq!(expose(&r), ["server-timing"]);
}

#[test]
fn server_timing_at_an_untrusted_edge_only_when_configured() {
    let edge = r#","propagators":{"trust_incoming":false}"#;
    let s = start(&format!(r#"{edge},"response":{{"server_timing":"w3c"}}"#));
    let r = s.get("/timed", SAMPLED);
    assert_eq!(r.status, 200);
    s.span("/timed");
    assert_eq!(server_timing(&r), ["cache;desc=hit"]);
    drop(s);

    let s = start(&format!(
        r#"{edge},"response":{{"server_timing":"w3c","at_untrusted_edge":true}}"#
    ));
    let r = s.get("/timed", SAMPLED);
    let span = s.span("/timed");
    // The edge started its own trace; the entry names it, never the client's.
    assert_ne!(hex(&span.trace_id), TRACE);
    assert_eq!(
        server_timing(&r),
        [
            "cache;desc=hit".to_string(),
            format!(
                "trace;desc=00-{}-{}-{:02x}",
                hex(&span.trace_id),
                hex(&span.span_id),
                span.flags & 0x03
            )
        ]
    );
}
