//! Every propagation format through real Envoy: the exported span continues the incoming trace
//! with the incoming span as parent, and the upstream receives the arrival format plus W3C with
//! the exported span's id, sampled flags translated, stale headers removed.

mod support;

use std::time::Duration;

use meshtrace_host_test::envoy::Stack;
use meshtrace_host_test::sink::UpstreamRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::hex;

const WAIT: Duration = Duration::from_secs(10);

fn config(extra: &str) -> String {
    format!(
        r#"{{"collector":{{"cluster":"otel_collector"}},"batch":{{"flush_interval_ms":100}}{extra}}}"#
    )
}

/// One request: returns what the upstream saw and the exported span (if sampled).
fn send(
    s: &Stack,
    path: &str,
    headers: &[(&str, &str)],
    sampled: bool,
) -> (UpstreamRequest, Option<Span>) {
    let before = s.sink.spans().len();
    let r = s.envoy.request("GET", path, headers).unwrap();
    assert_eq!(r.status, 200, "{path}");
    let mut up = s.upstream.take();
    assert_eq!(up.len(), 1, "{path}");
    let up = up.remove(0);
    if !sampled {
        return (up, None);
    }
    let spans = s.sink.wait_spans(before + 1, WAIT);
    let span = spans.into_iter().find(|sp| {
        sp.attributes.iter().any(|a| {
            a.key == "url.path"
                && a.value.as_ref().and_then(|v| v.value.clone())
                    == Some(Value::StringValue(path.into()))
        })
    });
    (
        up,
        Some(span.unwrap_or_else(|| panic!("no span for {path}"))),
    )
}

/// `(trace, span, flags)` of the upstream's traceparent.
fn tp(up: &UpstreamRequest) -> (String, String, String) {
    let v = up.get("traceparent").expect("traceparent upstream");
    let p: Vec<&str> = v.split('-').collect();
    (p[1].into(), p[2].into(), p[3].into())
}

#[test]
fn every_format_is_continued_and_translated() {
    let s = Stack::start("per-worker.yaml", &config(""), "INBOUND").unwrap();

    // W3C.
    let (up, sp) = send(
        &s,
        "/w3c",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        true,
    );
    let sp = sp.unwrap();
    assert_eq!(
        tp(&up),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            hex(&sp.span_id),
            "01".into()
        )
    );
    assert_eq!(hex(&sp.parent_span_id), "00f067aa0ba902b7");

    // B3 single, 128-bit, with a parent field that must not be propagated.
    let (up, sp) = send(
        &s,
        "/b3",
        &[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )],
        true,
    );
    let sp = sp.unwrap();
    let id = hex(&sp.span_id);
    assert_eq!(hex(&sp.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(hex(&sp.parent_span_id), "e457b5a2e4d86bd1");
    assert_eq!(
        up.get("b3"),
        Some(format!("80f198ee56343ba864fe8b2a57d3eff7-{id}-1").as_str())
    );
    assert_eq!(
        tp(&up),
        (
            "80f198ee56343ba864fe8b2a57d3eff7".into(),
            id.clone(),
            "01".into()
        )
    );

    // B3 single, 64-bit: width kept for B3, widened for W3C and OTLP.
    let (up, sp) = send(
        &s,
        "/b3-64",
        &[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")],
        true,
    );
    let sp = sp.unwrap();
    let id = hex(&sp.span_id);
    assert_eq!(hex(&sp.trace_id), "0000000000000000a3ce929d0e0e4736");
    assert_eq!(
        up.get("b3"),
        Some(format!("a3ce929d0e0e4736-{id}-1").as_str())
    );
    assert_eq!(tp(&up).0, "0000000000000000a3ce929d0e0e4736");

    // B3 debug is sampled and stays debug.
    let (up, sp) = send(
        &s,
        "/b3-debug",
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")],
        true,
    );
    let id = hex(&sp.unwrap().span_id);
    assert_eq!(
        up.get("b3"),
        Some(format!("80f198ee56343ba864fe8b2a57d3eff7-{id}-d").as_str())
    );
    assert_eq!(tp(&up).2, "01");

    // `b3: 0`: deny without ids: a new unsampled trace, nothing exported.
    let (up, _) = send(&s, "/b3-deny", &[("b3", "0")], false);
    let (trace, span, flags) = tp(&up);
    assert_eq!(flags, "02", "not sampled, random id");
    assert_eq!(up.get("b3"), Some(format!("{trace}-{span}-0").as_str()));

    // B3 multi, with parent and sampled headers.
    let (up, sp) = send(
        &s,
        "/b3multi",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "0020000000000001"),
            ("x-b3-parentspanid", "0020000000000000"),
            ("x-b3-sampled", "1"),
        ],
        true,
    );
    let sp = sp.unwrap();
    assert_eq!(hex(&sp.parent_span_id), "0020000000000001");
    assert_eq!(
        up.get("x-b3-traceid"),
        Some("463ac35c9f6413ad48485a3953bb6124")
    );
    assert_eq!(up.get("x-b3-spanid"), Some(hex(&sp.span_id).as_str()));
    assert_eq!(up.get("x-b3-sampled"), Some("1"));
    assert_eq!(up.get("x-b3-parentspanid"), None);

    // B3 multi, unsampled: the flag survives translation, no span.
    let (up, _) = send(
        &s,
        "/b3multi-deny",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "0020000000000001"),
            ("x-b3-sampled", "0"),
        ],
        false,
    );
    assert_eq!(up.get("x-b3-sampled"), Some("0"));
    assert_eq!(tp(&up).2, "00");

    // Linkerd 1 (Finagle binary context).
    let (up, sp) = send(
        &s,
        "/l5d",
        &[
            (
                "l5d-ctx-trace",
                "vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=",
            ),
            ("l5d-reqid", "f2fd78005d756b0e"),
        ],
        true,
    );
    let sp = sp.unwrap();
    assert_eq!(hex(&sp.trace_id), "0000000000000000f2fd78005d756b0e");
    assert_eq!(hex(&sp.parent_span_id), "bd82828f2f2d08d2");
    assert!(up
        .get("l5d-ctx-trace")
        .is_some_and(|v| v != "vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA="));
    let reqid = sp
        .attributes
        .iter()
        .find(|a| a.key == "linkerd.request_id")
        .and_then(|a| a.value.clone()?.value);
    assert_eq!(reqid, Some(Value::StringValue("f2fd78005d756b0e".into())));

    // AWS X-Ray, extra fields kept.
    let (up, sp) = send(
        &s,
        "/xray",
        &[("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Self=1-67891234-12456789abcdef012345678")],
        true,
    );
    let sp = sp.unwrap();
    assert_eq!(hex(&sp.trace_id), "5759e988bd862e3fe1be46a994272793");
    assert_eq!(hex(&sp.parent_span_id), "53995c3f42cd8ad8");
    assert_eq!(
        up.get("x-amzn-trace-id"),
        Some(format!("Root=1-5759e988-bd862e3fe1be46a994272793;Parent={};Sampled=1;Self=1-67891234-12456789abcdef012345678", hex(&sp.span_id)).as_str())
    );

    // GCP.
    let (up, sp) = send(
        &s,
        "/gcp",
        &[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )],
        true,
    );
    let sp = sp.unwrap();
    assert_eq!(hex(&sp.trace_id), "105445aa7843bc8bf206b12000100000");
    assert_eq!(hex(&sp.parent_span_id), "0000000000000001");
    let decimal = u64::from_str_radix(&hex(&sp.span_id), 16).unwrap();
    assert_eq!(
        up.get("x-cloud-trace-context"),
        Some(format!("105445aa7843bc8bf206b12000100000/{decimal};o=1").as_str())
    );

    // grpc-trace-bin (OpenCensus binary).
    let (up, sp) = send(
        &s,
        "/grpc",
        &[("grpc-trace-bin", "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=")],
        true,
    );
    let sp = sp.unwrap();
    assert_eq!(hex(&sp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&sp.parent_span_id), "00f067aa0ba902b7");
    assert!(up
        .get("grpc-trace-bin")
        .is_some_and(|v| v.ends_with('=') && v != "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE="));
    assert_eq!(tp(&up).1, hex(&sp.span_id));

    // A malformed traceparent falls through to a valid B3.
    let (up, sp) = send(
        &s,
        "/fallthrough",
        &[
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ],
        true,
    );
    assert_eq!(
        hex(&sp.unwrap().trace_id),
        "80f198ee56343ba864fe8b2a57d3eff7"
    );
    assert_eq!(tp(&up).0, "80f198ee56343ba864fe8b2a57d3eff7");

    // Two valid formats disagreeing: the first configured wins and the other is rewritten.
    let (up, sp) = send(
        &s,
        "/disagree",
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ],
        true,
    );
    let sp = sp.unwrap();
    assert_eq!(hex(&sp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        up.get("b3")
            .is_none_or(|b| b.starts_with("4bf92f3577b34da6a3ce929d0e0e4736")),
        "no contradicting b3: {:?}",
        up.get("b3")
    );

    // Malformed headers are counted per format.
    assert!(
        s.envoy
            .wait_stat("meshtrace.propagation.malformed.tracecontext", 1, WAIT)
            >= 1
    );
}

#[test]
fn untrusted_edge_starts_a_new_trace_and_links_the_old_one() {
    let cfg = config(r#","propagators":{"trust_incoming":false}"#);
    let s = Stack::start("per-worker.yaml", &cfg, "INBOUND").unwrap();
    // An unsampled caller cannot suppress tracing, and a sampled one cannot join our trace.
    let (up, sp) = send(
        &s,
        "/edge",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )],
        true,
    );
    let sp = sp.unwrap();
    assert_ne!(hex(&sp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(sp.parent_span_id.is_empty());
    assert_eq!(sp.links.len(), 1);
    assert_eq!(
        hex(&sp.links[0].trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(hex(&sp.links[0].span_id), "00f067aa0ba902b7");
    assert_eq!(tp(&up).0, hex(&sp.trace_id));
}

#[test]
fn baggage_is_forwarded_and_allowlisted_into_attributes() {
    let cfg = config(r#","baggage":{"attribute_keys":["userId"]}"#);
    let s = Stack::start("per-worker.yaml", &cfg, "INBOUND").unwrap();
    let (up, sp) = send(
        &s,
        "/bag",
        &[("baggage", "userId=Am%C3%A9lie,serverNode=DF%2028")],
        true,
    );
    assert_eq!(
        up.get("baggage"),
        Some("userId=Am%C3%A9lie,serverNode=DF%2028")
    );
    let sp = sp.unwrap();
    let attr = |k: &str| {
        sp.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone()?.value)
    };
    assert_eq!(
        attr("baggage.userId"),
        Some(Value::StringValue("Amélie".into()))
    );
    assert_eq!(attr("baggage.serverNode"), None, "not on the allowlist");
}
