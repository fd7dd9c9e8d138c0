//! The compiled filter inside real Envoy: W3C continuation and restart, injected headers,
//! exported span fields and types, status mapping, and config rejection.

mod support;

use std::time::Duration;

use meshtrace_host_test::envoy::{envoy_binary, wasm_path, Envoy, EnvoyVars, Stack};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use support::{attr, hex, str_attr};

const CONFIG: &str = r#"{"service_name":"checkout","collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":100}}"#;
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(10);

fn stack(config: &str, direction: &'static str) -> Stack {
    Stack::start("per-worker.yaml", config, direction).expect("start Envoy stack")
}

/// Splits an injected traceparent into (trace id, span id, flags).
fn parts(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "traceparent {tp}");
    assert_eq!(p[0], "00");
    (p[1].into(), p[2].into(), p[3].into())
}

#[test]
fn continues_a_valid_parent_and_injects_its_own_span() {
    let s = stack(CONFIG, "INBOUND");
    let r = s
        .envoy
        .request(
            "GET",
            "/hello?x=1",
            &[
                ("traceparent", PARENT),
                ("tracestate", "congo=t61rcWkgMzE"),
                ("user-agent", "e2e/1.0"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let up = s.upstream.take();
    assert_eq!(up.len(), 1);
    let (trace, span_id, flags) = parts(up[0].get("traceparent").unwrap());
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(span_id, "00f067aa0ba902b7");
    assert_eq!(flags, "01");
    assert_eq!(up[0].all("traceparent").len(), 1);
    assert_eq!(up[0].get("tracestate"), Some("congo=t61rcWkgMzE"));

    let spans = s.sink.wait_spans(1, WAIT);
    assert_eq!(spans.len(), 1);
    let sp = &spans[0];
    assert_eq!(hex(&sp.trace_id), trace);
    assert_eq!(
        hex(&sp.span_id),
        span_id,
        "the injected parent is the exported span"
    );
    assert_eq!(hex(&sp.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(sp.name, "GET /hello");
    assert_eq!(
        sp.kind, 2,
        "SERVER on an INBOUND listener with direction auto"
    );
    assert_eq!(sp.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(sp.flags, 0x301);
    assert!(sp.end_time_unix_nano >= sp.start_time_unix_nano && sp.start_time_unix_nano > 0);
    assert!(sp.status.as_ref().is_none_or(|st| st.code == 0));
    assert_eq!(str_attr(sp, "http.request.method"), "GET");
    assert_eq!(str_attr(sp, "url.path"), "/hello");
    assert_eq!(str_attr(sp, "url.scheme"), "http");
    assert_eq!(str_attr(sp, "server.address"), "localhost");
    assert_eq!(str_attr(sp, "network.protocol.version"), "1.1");
    assert_eq!(str_attr(sp, "user_agent.original"), "e2e/1.0");
    assert_eq!(str_attr(sp, "client.address"), "127.0.0.1");
    assert_eq!(
        attr(sp, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );

    let req = &s.sink.received()[0];
    assert_eq!(req.path, "/v1/traces");
    assert!(req
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/x-protobuf"));
    let res = req.request.resource_spans[0].resource.as_ref().unwrap();
    let service = res
        .attributes
        .iter()
        .find(|a| a.key == "service.name")
        .unwrap();
    assert_eq!(
        service.value.as_ref().unwrap().value,
        Some(Value::StringValue("checkout".into()))
    );
    let scope = req.request.resource_spans[0].scope_spans[0]
        .scope
        .as_ref()
        .unwrap();
    assert_eq!(scope.name, "meshtrace");
}

#[test]
fn starts_a_trace_without_a_parent() {
    let s = stack(CONFIG, "INBOUND");
    s.envoy.request("GET", "/new", &[]).unwrap();
    let up = s.upstream.take();
    let (trace, span_id, flags) = parts(up[0].get("traceparent").unwrap());
    assert_eq!(flags, "03", "sampled and random");
    let spans = s.sink.wait_spans(1, WAIT);
    assert_eq!(hex(&spans[0].trace_id), trace);
    assert_eq!(hex(&spans[0].span_id), span_id);
    assert!(spans[0].parent_span_id.is_empty());
    assert_eq!(spans[0].flags, 0x103);
}

#[test]
fn restarts_on_every_invalid_traceparent_rule() {
    let s = stack(CONFIG, "INBOUND");
    let tid = "4bf92f3577b34da6a3ce929d0e0e4736";
    let pid = "00f067aa0ba902b7";
    let invalid = [
        format!("ff-{tid}-{pid}-01"),                  // version ff
        format!("0-{tid}-{pid}-01"),                   // short version
        format!("00-{}-{pid}-01", tid.to_uppercase()), // uppercase hex
        format!("00-{}-{pid}-01", "0".repeat(32)),     // all-zero trace id
        format!("00-{tid}-{}-01", "0".repeat(16)),     // all-zero parent id
        format!("00-{tid}-{pid}-01-extra"),            // v00 must be 55 chars
        format!("cc-{tid}-{pid}-01.extra"),            // future version, bad delimiter
        format!("00-{tid}-{pid}-0g"),                  // flags not hex
        format!("00-{}-{pid}-01", &tid[..30]),         // short trace id
    ];
    for tp in &invalid {
        s.envoy
            .request(
                "GET",
                "/restart",
                &[("traceparent", tp), ("tracestate", "congo=t61rcWkgMzE")],
            )
            .unwrap();
        let up = s.upstream.take();
        let (trace, _, flags) = parts(up[0].get("traceparent").unwrap());
        assert_ne!(trace, tid, "{tp} must restart the trace");
        assert_eq!(flags, "03", "{tp}");
        assert_eq!(
            up[0].get("tracestate"),
            None,
            "{tp}: tracestate must not survive a restart"
        );
    }
    let spans = s.sink.wait_spans(invalid.len(), WAIT);
    assert_eq!(spans.len(), invalid.len());
    assert!(spans
        .iter()
        .all(|sp| sp.parent_span_id.is_empty() && hex(&sp.trace_id) != tid));
    // A future version with the right shape is continued.
    s.envoy
        .request(
            "GET",
            "/future",
            &[(
                "traceparent",
                &format!("cc-{tid}-{pid}-01-what-the-future-will-be-like"),
            )],
        )
        .unwrap();
    let up = s.upstream.take();
    assert_eq!(parts(up[0].get("traceparent").unwrap()).0, tid);
}

#[test]
fn unsampled_parent_flows_but_exports_nothing() {
    let s = stack(CONFIG, "INBOUND");
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    s.envoy
        .request("GET", "/quiet", &[("traceparent", unsampled)])
        .unwrap();
    let up = s.upstream.take();
    let (trace, span_id, flags) = parts(up[0].get("traceparent").unwrap());
    assert_eq!(
        (trace.as_str(), flags.as_str()),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00")
    );
    assert_ne!(span_id, "00f067aa0ba902b7");
    // A sampled request afterwards is the only span exported.
    s.envoy
        .request("GET", "/loud", &[("traceparent", PARENT)])
        .unwrap();
    let spans = s.sink.wait_spans(1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let spans_after = s.sink.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans_after.len(), 1);
    assert_eq!(spans_after[0].name, "GET /loud");
    assert_eq!(s.envoy.wait_stat("meshtrace.spans_started", 2, WAIT), 2);
    assert_eq!(s.envoy.wait_stat("meshtrace.spans_exported", 1, WAIT), 1);
    assert_eq!(s.envoy.stat("meshtrace.spans_sampled"), 1);
}

#[test]
fn status_mapping_server_and_client() {
    let s = stack(CONFIG, "INBOUND");
    assert_eq!(
        s.envoy.request("GET", "/status/500", &[]).unwrap().status,
        500
    );
    assert_eq!(
        s.envoy.request("GET", "/status/404", &[]).unwrap().status,
        404
    );
    let spans = s.sink.wait_spans(2, WAIT);
    let by_path = |p: &str| {
        spans
            .iter()
            .find(|sp| str_attr(sp, "url.path") == p)
            .unwrap()
            .clone()
    };
    let e500 = by_path("/status/500");
    assert_eq!(e500.status.as_ref().unwrap().code, 2);
    assert_eq!(str_attr(&e500, "error.type"), "500");
    assert_eq!(
        attr(&e500, "http.response.status_code"),
        Some(&Value::IntValue(500))
    );
    let e404 = by_path("/status/404");
    assert!(
        e404.status.as_ref().is_none_or(|st| st.code == 0),
        "4xx is not an error on a SERVER span"
    );
    assert!(attr(&e404, "error.type").is_none());
    drop(s);

    let client = r#"{"direction":"outbound","collector":{"cluster":"otel_collector"},"batch":{"flush_interval_ms":100}}"#;
    let c = stack(client, "OUTBOUND");
    c.envoy.request("GET", "/status/404", &[]).unwrap();
    let spans = c.sink.wait_spans(1, WAIT);
    assert_eq!(spans[0].kind, 3, "CLIENT");
    assert_eq!(
        spans[0].status.as_ref().unwrap().code,
        2,
        "4xx is an error on a CLIENT span"
    );
    assert_eq!(str_attr(&spans[0], "error.type"), "404");
    let res = c.sink.received()[0].request.resource_spans[0]
        .resource
        .clone()
        .unwrap();
    let service = res
        .attributes
        .iter()
        .find(|a| a.key == "service.name")
        .unwrap();
    assert_eq!(
        service.value.as_ref().unwrap().value,
        Some(Value::StringValue("unknown_service:envoy".into()))
    );
}

#[test]
fn auto_direction_reads_the_listener() {
    let s = stack(CONFIG, "OUTBOUND");
    s.envoy.request("GET", "/out", &[]).unwrap();
    let spans = s.sink.wait_spans(1, WAIT);
    assert_eq!(spans[0].kind, 3, "an OUTBOUND listener gives CLIENT spans");
}

#[test]
fn bad_plugin_config_is_rejected_with_the_field_named() {
    let binary = envoy_binary().unwrap();
    let vars = EnvoyVars::new(
        wasm_path().unwrap(),
        1,
        1,
        r#"{"collector":{"cluster":""}}"#,
    );
    let (code, log) = Envoy::start_expect_failure(&binary, "per-worker.yaml", vars).unwrap();
    assert_ne!(code, 0);
    assert!(
        log.contains(
            "meshtrace: invalid configuration: collector.cluster: must be a non-empty string"
        ),
        "log:\n{log}"
    );
}

#[test]
fn hostile_headers_do_not_break_requests() {
    let s = stack(CONFIG, "INBOUND");
    let long = "a".repeat(8000);
    let hostile: Vec<(&str, &str)> = vec![
        ("traceparent", "00-ÿÿ-zz-%%"),
        ("tracestate", &long),
        ("traceparent", PARENT),
        ("b3", "garbage"),
    ];
    let r = s.envoy.request("GET", "/hostile", &hostile).unwrap();
    assert_eq!(r.status, 200);
    let up = s.upstream.take();
    // Two traceparent fields are invalid together: a new trace starts.
    let (trace, _, _) = parts(up[0].get("traceparent").unwrap());
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.sink.wait_spans(1, WAIT).len(), 1);
}
