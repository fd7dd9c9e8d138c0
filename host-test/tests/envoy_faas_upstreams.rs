//! Serverless upstreams (`faas.upstreams`) through real Envoy: an outbound sidecar whose
//! requests carry the `:authority` of a Cloud Run service and of an Azure Functions app, routed
//! to a local upstream standing in for the platforms (they cannot be reached from a test).
//! `propagators.inject` lists only B3, so the platform headers come from the rules alone.
//! The upstream must receive the exact `x-cloud-trace-context` / `traceparent` for the
//! exported CLIENT span, sampled or not, and the span must carry the exact `faas.invoked_*`.

mod support;

use std::time::Duration;

use meshtrace_host_test::envoy::Stack;
use meshtrace_host_test::sink::UpstreamRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::{hex, str_attr, str_attr_opt};

const WAIT: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"{"collector": {"cluster": "otel_collector"},
  "batch": {"flush_interval_ms": 100},
  "direction": "outbound",
  "propagators": {"inject": ["b3"]},
  "faas": {"upstreams": [
    {"match": {"host": "*.run.app"}, "provider": "gcp", "region": "us-central1"},
    {"match": {"host": "*.azurewebsites.net"}, "provider": "azure", "region": "westeurope"}]}}"#;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// One request arriving with a B3 context: what the upstream saw, and the exported span
/// when sampled.
fn send(s: &Stack, host: &str, path: &str, sampled: bool) -> (UpstreamRequest, Option<Span>) {
    let before = s.sink.spans().len();
    let b3 = format!("{TRACE}-00f067aa0ba902b7-{}", u8::from(sampled));
    let r = s
        .envoy
        .request("GET", path, &[("host", host), ("b3", &b3)])
        .unwrap();
    assert_eq!(r.status, 200, "{host}{path}");
    let mut up = s.upstream.take();
    assert_eq!(up.len(), 1, "{host}{path}");
    let up = up.remove(0);
    if !sampled {
        return (up, None);
    }
    let spans = s.sink.wait_spans(before + 1, WAIT);
    let span = spans
        .into_iter()
        .find(|sp| str_attr_opt(sp, "url.path").as_deref() == Some(path))
        .unwrap_or_else(|| panic!("no span for {path}"));
    (up, Some(span))
}

#[test]
fn serverless_upstreams_get_their_platform_context_and_client_spans_name_the_function() {
    let s = Stack::start("per-worker.yaml", CONFIG, "OUTBOUND").expect("start Envoy stack");

    // Cloud Run: X-Cloud-Trace-Context with this span's id in decimal, no traceparent.
    let (up, sp) = send(&s, "myfn-abc123-uc.a.run.app", "/run", true);
    let sp = sp.unwrap();
    let span_id = u64::from_str_radix(&hex(&sp.span_id), 16).unwrap();
    assert_eq!(
        up.get("x-cloud-trace-context"),
        Some(format!("{TRACE}/{span_id};o=1").as_str())
    );
    assert_eq!(up.get("traceparent"), None);
    assert_eq!(sp.kind, SpanKind::Client as i32);
    assert_eq!(str_attr(&sp, "faas.invoked_name"), "myfn");
    assert_eq!(str_attr(&sp, "faas.invoked_provider"), "gcp");
    assert_eq!(str_attr(&sp, "faas.invoked_region"), "us-central1");

    // Azure Functions: W3C traceparent though `inject` lists only B3.
    let (up, sp) = send(&s, "myapp.azurewebsites.net", "/api/Resize", true);
    let sp = sp.unwrap();
    assert_eq!(
        up.get("traceparent"),
        Some(format!("00-{TRACE}-{}-01", hex(&sp.span_id)).as_str())
    );
    assert_eq!(up.get("x-cloud-trace-context"), None);
    assert_eq!(str_attr(&sp, "faas.invoked_name"), "Resize");
    assert_eq!(str_attr(&sp, "faas.invoked_provider"), "azure");
    assert_eq!(str_attr(&sp, "faas.invoked_region"), "westeurope");

    // Unsampled: the platform still receives the (unsampled) context.
    let (up, _) = send(&s, "myfn-abc123-uc.a.run.app", "/run-unsampled", false);
    let v = up
        .get("x-cloud-trace-context")
        .expect("x-cloud-trace-context");
    assert!(
        v.starts_with(&format!("{TRACE}/")) && v.ends_with(";o=0"),
        "{v}"
    );
    let (up, _) = send(&s, "myapp.azurewebsites.net", "/api/unsampled", false);
    let v = up.get("traceparent").expect("traceparent");
    assert!(
        v.starts_with(&format!("00-{TRACE}-")) && v.ends_with("-00"),
        "{v}"
    );

    // Any other upstream: only what is configured.
    let (up, sp) = send(&s, "orders.example.com", "/orders", true);
    assert_eq!(up.get("x-cloud-trace-context"), None);
    assert_eq!(up.get("traceparent"), None);
    assert!(up.get("b3").is_some());
    assert_eq!(str_attr_opt(&sp.unwrap(), "faas.invoked_provider"), None);
}
