//! AWS Lambda behind the mesh in real Envoy (`filter/envoy/lambda.yaml`): meshtrace ahead of
//! `envoy.filters.http.aws_lambda`, which signs each request with SigV4 and sends it to a local
//! stand-in for the Lambda Invoke API (`host-test/src/lambda.rs`; AWS itself cannot be reached
//! from a test, so the stand-in follows the documented API). Asserts the signed request the
//! function would get (path, `Authorization`, invocation type, the injected `X-Amzn-Trace-Id`
//! and `X-Amz-Log-Type`), and the exported CLIENT spans field by field: the function, the
//! request id, a function error behind a 200, the cold start and cost from the `REPORT` line.

mod support;

use std::time::Duration;

use meshtrace_host_test::envoy::{envoy_binary, wasm_path, Envoy, EnvoyVars};
use meshtrace_host_test::lambda::FakeLambda;
use meshtrace_host_test::sink::OtlpSink;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::{attr, hex, str_attr, str_attr_opt};

const WAIT: Duration = Duration::from_secs(20);
const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:thumbnails:live";
const PRICE: f64 = 0.000_016_666_7;

fn config(log_tail: bool) -> String {
    format!(
        r#"{{"collector": {{"cluster": "otel_collector"}},
  "batch": {{"flush_interval_ms": 100}},
  "direction": "outbound",
  "faas": {{"lambda": [{{"cluster": "lambda_thumbnails", "arn": "{ARN}"}}],
           "lambda_log_tail": {log_tail},
           "lambda_price_per_gb_second": {PRICE}}}}}"#
    )
}

struct Caller {
    sink: OtlpSink,
    lambda: FakeLambda,
    envoy: Envoy,
}

fn start(log_tail: bool) -> Caller {
    let binary = envoy_binary().expect("Envoy lookup");
    let sink = OtlpSink::start(0).unwrap();
    let lambda = FakeLambda::start().unwrap();
    let mut vars = EnvoyVars::new(
        wasm_path().unwrap(),
        lambda.addr.port(),
        sink.addr.port(),
        &config(log_tail),
    );
    vars.direction = "OUTBOUND";
    vars.set("LAMBDA_ARN", ARN);
    // Fake credentials: the stand-in checks that a signature is there, not that it verifies.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
        ("AWS_REGION", "us-east-1"),
    ] {
        vars.env.push((k.to_string(), v.to_string()));
    }
    let envoy = Envoy::start(&binary, "lambda.yaml", vars).expect("start Envoy");
    Caller {
        sink,
        lambda,
        envoy,
    }
}

impl Caller {
    /// Invokes the function with `payload` as a child of a sampled (or not) caller.
    fn invoke(&self, payload: &str, trace: &str, sampled: bool) -> u16 {
        let tp = format!(
            "00-{trace}-00f067aa0ba902b7-{}",
            if sampled { "01" } else { "00" }
        );
        let r = meshtrace_host_test::envoy::http_request(
            self.envoy.vars.listen_port,
            "POST",
            "/thumbnails",
            &[("traceparent", &tp), ("content-type", "text/plain")],
            payload.as_bytes(),
        )
        .unwrap();
        r.status
    }

    fn spans(&self, n: usize) -> Vec<Span> {
        let spans = self.sink.wait_spans(n, WAIT);
        assert_eq!(spans.len(), n, "spans: {spans:?}\n{}", self.envoy.log());
        spans
    }
}

fn double(s: &Span, key: &str) -> Option<f64> {
    match attr(s, key) {
        Some(Value::DoubleValue(v)) => Some(*v),
        _ => None,
    }
}

fn int(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(Value::IntValue(v)) => Some(*v),
        _ => None,
    }
}

fn xray(trace: &str, span_id: &[u8], sampled: u8) -> String {
    format!(
        "Root=1-{}-{};Parent={};Sampled={sampled}",
        &trace[..8],
        &trace[8..],
        hex(span_id)
    )
}

#[test]
fn lambda_invocations_are_client_spans_with_the_function_cold_start_and_cost() {
    let c = start(true);
    let traces = [
        ("cold", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("warm", "5bf92f3577b34da6a3ce929d0e0e4736"),
        ("error", "6bf92f3577b34da6a3ce929d0e0e4736"),
    ];
    for (payload, trace) in traces {
        assert_eq!(c.invoke(payload, trace, true), 200, "{}", c.envoy.log());
    }
    let spans = c.spans(3);
    let invokes = c.lambda.take();
    assert_eq!(invokes.len(), 3);
    for ((payload, trace), inv) in traces.iter().zip(&invokes) {
        let span = spans
            .iter()
            .find(|s| hex(&s.trace_id) == *trace)
            .unwrap_or_else(|| panic!("no span of {trace}: {spans:?}"));
        // The signed Invoke request.
        let r = &inv.request;
        assert_eq!(inv.body, *payload);
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, format!("/2015-03-31/functions/{ARN}/invocations"));
        let auth = r.get("authorization").unwrap_or_default();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/us-east-1/lambda/aws4_request"),
            "{auth}"
        );
        assert!(r.get("x-amz-date").is_some());
        assert_eq!(r.get("x-amz-invocation-type"), Some("RequestResponse"));
        assert_eq!(r.get("x-amz-log-type"), Some("Tail"));
        assert_eq!(
            r.all("x-amzn-trace-id"),
            [xray(trace, &span.span_id, 1).as_str()]
        );
        assert_eq!(
            r.get("traceparent"),
            Some(format!("00-{trace}-{}-01", hex(&span.span_id)).as_str())
        );
        // The span.
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(str_attr(span, "faas.invoked_name"), "thumbnails");
        assert_eq!(str_attr(span, "faas.invoked_provider"), "aws");
        assert_eq!(str_attr(span, "faas.invoked_region"), "us-east-1");
        assert_eq!(str_attr(span, "aws.lambda.invoked_arn"), ARN);
        assert_eq!(
            str_attr(span, "aws.lambda.invocation_type"),
            "RequestResponse"
        );
        assert_eq!(str_attr(span, "aws.lambda.executed_version"), "7");
        assert_eq!(int(span, "http.response.status_code"), Some(200));
        let status = span.status.clone().unwrap_or_default();
        let (billed, memory, used, duration) = match *payload {
            "cold" => (13, 128, 70, 12.34),
            _ => (3, 1024, 80, 2.5),
        };
        assert_eq!(str_attr(span, "aws.request_id"), format!("req-{payload}"));
        assert_eq!(int(span, "aws.lambda.billed_duration_ms"), Some(billed));
        assert_eq!(int(span, "aws.lambda.memory_size_mb"), Some(memory));
        assert_eq!(int(span, "aws.lambda.max_memory_used_mb"), Some(used));
        assert_eq!(double(span, "aws.lambda.duration_ms"), Some(duration));
        let cost = (memory as f64 / 1024.0) * (billed as f64 / 1000.0) * PRICE;
        assert_eq!(double(span, "aws.lambda.estimated_cost_usd"), Some(cost));
        match *payload {
            "cold" => {
                assert_eq!(attr(span, "faas.coldstart"), Some(&Value::BoolValue(true)));
                assert_eq!(double(span, "aws.lambda.init_duration_ms"), Some(150.0));
            }
            _ => {
                assert_eq!(attr(span, "faas.coldstart"), None);
                assert_eq!(attr(span, "aws.lambda.init_duration_ms"), None);
            }
        }
        if *payload == "error" {
            assert_eq!(status.code, StatusCode::Error as i32);
            assert_eq!(str_attr(span, "error.type"), "Unhandled");
        } else {
            assert_eq!(status.code, StatusCode::Unset as i32);
            assert_eq!(str_attr_opt(span, "error.type"), None);
        }
        // Nothing of the log but the REPORT line's numbers.
        assert!(
            !format!("{span:?}").contains("hunter2"),
            "the log leaked: {span:?}"
        );
    }
    assert_eq!(
        c.envoy.wait_stat("meshtrace.lambda.invocations", 3, WAIT),
        3
    );
    assert_eq!(c.envoy.stat("meshtrace.lambda.function_errors"), 1);
    assert_eq!(c.envoy.stat("meshtrace.lambda.log_result_invalid"), 0);
}

#[test]
fn without_the_log_tail_or_a_sampled_trace_nothing_is_asked_for() {
    let c = start(false);
    let trace = "7bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(c.invoke("cold", trace, true), 200, "{}", c.envoy.log());
    let spans = c.spans(1);
    let span = &spans[0];
    let invokes = c.lambda.take();
    let r = &invokes[0].request;
    assert_eq!(r.get("x-amz-log-type"), None);
    assert_eq!(
        r.all("x-amzn-trace-id"),
        [xray(trace, &span.span_id, 1).as_str()]
    );
    assert_eq!(str_attr(span, "aws.request_id"), "req-cold");
    // No log tail: no REPORT facts, and no guessed cold start.
    assert_eq!(attr(span, "faas.coldstart"), None);
    assert_eq!(attr(span, "aws.lambda.billed_duration_ms"), None);
    assert_eq!(attr(span, "aws.lambda.estimated_cost_usd"), None);
    // An unsampled request pays nothing: no span, no X-Ray header, no log tail.
    let trace = "8bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(c.invoke("warm", trace, false), 200);
    let invokes = c.lambda.take();
    let r = &invokes[0].request;
    assert_eq!(r.get("x-amzn-trace-id"), None);
    assert_eq!(r.get("x-amz-log-type"), None);
    assert!(r.get("authorization").is_some());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.sink.spans().len(), 1);
    assert_eq!(c.envoy.stat("meshtrace.lambda.invocations"), 1);
}
