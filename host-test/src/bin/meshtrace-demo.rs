//! `make demo`: real Envoy with meshtrace between a small upstream and an OTLP sink; sends a
//! handful of requests and prints the spans the collector received.

use std::time::Duration;

use meshtrace_host_test::envoy::Stack;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

const CONFIG: &str = r#"{
  "service_name": "demo-gateway",
  "collector": {"cluster": "otel_collector"},
  "batch": {"flush_interval_ms": 200}
}"#;

/// A demo request: method, path, headers, and what it shows.
type DemoRequest = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value(v: &Value) -> String {
    match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(s: &Span, key: &str) -> String {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(value)
        .unwrap_or_else(|| "-".into())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("meshtrace-demo: runs Envoy with dist/meshtrace.wasm and prints the spans it exports.\n");
        println!("Environment: MESHTRACE_ENVOY (Envoy binary), MESHTRACE_WASM (the filter). `make demo` sets both.");
        return Ok(());
    }
    let stack = Stack::start("per-worker.yaml", CONFIG, "INBOUND")?;
    println!(
        "Envoy listening on 127.0.0.1:{} → upstream 127.0.0.1:{}, exporting to OTLP sink 127.0.0.1:{}\n",
        stack.envoy.vars.listen_port,
        stack.upstream.addr.port(),
        stack.sink.addr.port()
    );
    let requests: [DemoRequest; 5] = [
        (
            "GET",
            "/api/users/42",
            vec![],
            "no traceparent: a new trace starts",
        ),
        (
            "GET",
            "/api/orders?id=7",
            vec![(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            "sampled traceparent: the trace is continued",
        ),
        (
            "GET",
            "/status/500",
            vec![],
            "the upstream fails: status ERROR",
        ),
        (
            "POST",
            "/api/cart",
            vec![(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            )],
            "unsampled parent: context flows upstream, no span exported",
        ),
        (
            "GET",
            "/health",
            vec![(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            )],
            "invalid traceparent (uppercase): the trace restarts",
        ),
    ];
    for (method, path, headers, what) in &requests {
        let r = stack.envoy.request(method, path, headers)?;
        let up = stack.upstream.take();
        let tp = up
            .first()
            .and_then(|u| u.get("traceparent"))
            .unwrap_or("-")
            .to_string();
        println!(
            "{method:4} {path:18} → {}  upstream got traceparent {tp}   ({what})",
            r.status
        );
    }
    let spans = stack.sink.wait_spans(4, Duration::from_secs(10));
    println!(
        "\nSpans received by the OTLP collector ({}):\n",
        spans.len()
    );
    println!(
        "{:<32}  {:<16}  {:<16}  {:<18}  {:<6}  {:<6}  {:>6}  attributes",
        "trace id", "span id", "parent", "name", "kind", "status", "code"
    );
    for s in &spans {
        let kind = match s.kind {
            2 => "SERVER",
            3 => "CLIENT",
            _ => "OTHER",
        };
        let status = match s.status.as_ref().map(|st| st.code) {
            Some(2) => "ERROR",
            Some(1) => "OK",
            _ => "UNSET",
        };
        let parent = if s.parent_span_id.is_empty() {
            "-".to_string()
        } else {
            hex(&s.parent_span_id)
        };
        println!(
            "{:<32}  {:<16}  {:<16}  {:<18}  {:<6}  {:<6}  {:>6}  client.address={} network.protocol.version={} error.type={}",
            hex(&s.trace_id),
            hex(&s.span_id),
            parent,
            s.name,
            kind,
            status,
            attr(s, "http.response.status_code"),
            attr(s, "client.address"),
            attr(s, "network.protocol.version"),
            attr(s, "error.type"),
        );
    }
    let exported = stack.envoy.wait_stat(
        "meshtrace.spans_exported",
        spans.len() as u64,
        Duration::from_secs(5),
    );
    println!("\nEnvoy /stats: meshtrace.spans_started={} meshtrace.spans_sampled={} meshtrace.spans_exported={exported}",
        stack.envoy.stat("meshtrace.spans_started"),
        stack.envoy.stat("meshtrace.spans_sampled"));
    if spans.len() != 4 {
        anyhow::bail!("expected 4 spans, the collector received {}", spans.len());
    }
    Ok(())
}
