//! Functions through the whole request path: a Knative traffic split between two revisions
//! tagged like an Istio canary, and a function's resource and SERVER spans.

use super::*;
use crate::span::{SpanKind, Value};
use crate::test_support::str_attr as s;

/// A 90/10 split between two revisions of the Knative Service `hello`: the weights and the
/// release rules name revisions where an Istio canary names subsets.
const SPLIT: &str = r#","traffic":{"rules":[
    {"match":"subset","value":"hello-00002","release":"canary","canary":true},
    {"match":"subset","value":"hello-00001","release":"stable","canary":false}],
   "weights":{"hello-00001":90,"hello-00002":10}}"#;

fn span(t: &mut Tracer, req: &[(&str, &str)], kind: SpanKind, cluster: &[u8]) -> SpanRecord {
    let pairs = || req.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
    let h = RequestHeaders::from_pairs(pairs());
    let mut d = t.extract(&h);
    t.sample(&mut d, || 1_000);
    let mut rec = SpanRecord::default();
    t.begin_span(&d, &h, 1_000, &mut rec);
    let request = t.record_request(&h, pairs(), &mut rec);
    t.finish_span(
        &mut rec,
        &Finish {
            end_ns: 2_000,
            status_code: Some(200),
            kind,
            request: &request,
            mesh: crate::span::mesh::EndFacts {
                cluster_name: Some(cluster),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    rec
}

#[test]
fn a_knative_split_is_tagged_like_an_istio_canary() {
    let mut t = crate::test_support::tracer(SPLIT, 3);
    for (revision, release, canary, weight) in [
        ("hello-00001", "stable", false, 90),
        ("hello-00002", "canary", true, 10),
    ] {
        let req = [
            (":method", "GET"),
            (":path", "/"),
            (":authority", "hello.shop.svc.cluster.local"),
            ("knative-serving-revision", revision),
            ("knative-serving-namespace", "shop"),
        ];
        let cluster = format!("outbound|80||{revision}.shop.svc.cluster.local");
        let rec = span(&mut t, &req, SpanKind::Client, cluster.as_bytes());
        assert_eq!(s(&rec, "mesh.knative.revision").as_deref(), Some(revision));
        assert_eq!(s(&rec, "mesh.knative.namespace").as_deref(), Some("shop"));
        assert_eq!(s(&rec, "faas.invoked_name").as_deref(), Some("hello"));
        assert_eq!(s(&rec, "mesh.release").as_deref(), Some(release));
        assert_eq!(rec.get("mesh.canary"), Some(&Value::Bool(canary)));
        assert_eq!(rec.get("mesh.traffic.weight"), Some(&Value::Int(weight)));
        // The caller is no function: no faas.trigger.
        assert_eq!(rec.get("faas.trigger"), None);
    }
    // A subset the cluster names still wins over the header.
    let req = [("knative-serving-revision", "hello-00002")];
    let rec = span(
        &mut t,
        &req,
        SpanKind::Client,
        b"outbound|80|hello-00001|hello.shop.svc.cluster.local",
    );
    assert_eq!(s(&rec, "mesh.release").as_deref(), Some("stable"));
    assert_eq!(rec.get("mesh.traffic.weight"), Some(&Value::Int(90)));
    // Without the header, nothing Knative.
    let rec = span(
        &mut t,
        &[],
        SpanKind::Client,
        b"outbound|80||x.shop.svc.cluster.local",
    );
    assert_eq!(rec.get("mesh.knative.revision"), None);
    assert_eq!(rec.get("mesh.release"), None);
}

#[test]
fn a_configured_function_has_a_faas_resource_and_triggered_server_spans() {
    let mut t = crate::test_support::tracer(
        r#","service_name":"thumbnails","faas":{"version":"12","provider":"aws","platform":"aws_lambda","region":"eu-west-1","trigger":"http"}"#,
        3,
    );
    let r = |k| crate::test_support::resource_attr(&t, k);
    assert_eq!(r("faas.name").as_deref(), Some("thumbnails"));
    assert_eq!(r("faas.version").as_deref(), Some("12"));
    assert_eq!(r("cloud.provider").as_deref(), Some("aws"));
    assert_eq!(r("cloud.platform").as_deref(), Some("aws_lambda"));
    assert_eq!(r("cloud.region").as_deref(), Some("eu-west-1"));
    let rec = span(
        &mut t,
        &[(":path", "/")],
        SpanKind::Server,
        b"inbound|8080||",
    );
    assert_eq!(s(&rec, "faas.trigger").as_deref(), Some("http"));
    // The cold start is the adapter's to set; without it, no attribute.
    assert_eq!(rec.get("faas.coldstart"), None);
    let rec = span(
        &mut t,
        &[(":path", "/")],
        SpanKind::Client,
        b"outbound|80||x",
    );
    assert_eq!(rec.get("faas.trigger"), None);
}

const LAMBDA: &str = r#","faas":{"lambda":[{"cluster":"lambda_thumbnails","arn":"arn:aws:lambda:us-east-1:123456789012:function:thumbnails:live"}],"lambda_log_tail":true,"lambda_price_per_gb_second":0.0000166667}"#;

#[test]
fn a_caller_of_lambdas_is_no_function_and_injects_xray_with_the_log_tail() {
    let mut t = crate::test_support::tracer(LAMBDA, 3);
    assert!(!t.span.faas.is_function());
    assert_eq!(crate::test_support::resource_attr(&t, "faas.name"), None);
    let pairs = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let h = crate::test_support::headers(&pairs);
    let mut inj = Injection::default();
    let d = t.start(&h, || 0, Some(&mut inj));
    // Not an inject format: only the Lambda hook adds X-Ray, after the configured formats.
    assert_eq!(inj.get("x-amzn-trace-id"), None);
    let before = inj.headers().count();
    t.inject_lambda(&d, &mut inj);
    let added: Vec<_> = inj.headers().skip(before).collect();
    let xray = format!(
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent={};Sampled=1",
        d.span_id
    );
    assert_eq!(
        added,
        [
            ("x-amzn-trace-id", xray.as_bytes()),
            ("x-amz-log-type", &b"Tail"[..]),
        ]
    );
    // With xray configured, the header is already there and is not written twice.
    let mut t = crate::test_support::tracer(
        &format!(r#","propagators":{{"inject":["tracecontext","xray"]}}{LAMBDA}"#),
        3,
    );
    let mut inj = Injection::default();
    let d = t.start(&h, || 0, Some(&mut inj));
    let before = inj.headers().count();
    t.inject_lambda(&d, &mut inj);
    let added: Vec<_> = inj.headers().skip(before).map(|(n, _)| n).collect();
    assert_eq!(added, ["x-amz-log-type"]);
    assert_eq!(
        inj.headers()
            .filter(|(n, _)| *n == "x-amzn-trace-id")
            .count(),
        1
    );
}

#[test]
fn a_function_error_behind_a_200_is_the_span_error() {
    use crate::span::faas::lambda::{Invocation, Report};
    let mut t = crate::test_support::tracer(LAMBDA, 3);
    let i = t.span.lambda.lookup(b"lambda_thumbnails").unwrap();
    let h = RequestHeaders::default();
    let mut d = t.extract(&h);
    t.sample(&mut d, || 0);
    let mut rec = SpanRecord::default();
    t.begin_span(&d, &h, 1_000, &mut rec);
    let report = Report::parse_line(b"REPORT RequestId: r Duration: 1.5 ms Billed Duration: 2 ms Memory Size: 512 MB Max Memory Used: 64 MB Init Duration: 99.5 ms");
    t.finish_span(
        &mut rec,
        &Finish {
            end_ns: 2_000,
            status_code: Some(200),
            kind: SpanKind::Client,
            lambda: Some((
                i,
                Invocation {
                    request_id: Some(b"r"),
                    function_error: Some(b"Handled"),
                    executed_version: Some(b"3"),
                    report,
                },
            )),
            ..Default::default()
        },
    );
    assert_eq!(rec.get("http.response.status_code"), Some(&Value::Int(200)));
    assert_eq!(rec.status, crate::span::StatusCode::Error);
    assert_eq!(s(&rec, "error.type").as_deref(), Some("Handled"));
    assert_eq!(s(&rec, "faas.invoked_name").as_deref(), Some("thumbnails"));
    assert_eq!(s(&rec, "faas.invoked_region").as_deref(), Some("us-east-1"));
    assert_eq!(s(&rec, "aws.request_id").as_deref(), Some("r"));
    assert_eq!(rec.get("faas.coldstart"), Some(&Value::Bool(true)));
    assert_eq!(
        rec.get("aws.lambda.estimated_cost_usd"),
        Some(&Value::Double(0.5 * 0.002 * 0.0000166667))
    );
    // A 502 from the API keeps its own error.type.
    let mut rec = SpanRecord::default();
    t.begin_span(&d, &h, 1_000, &mut rec);
    t.finish_span(
        &mut rec,
        &Finish {
            end_ns: 2_000,
            status_code: Some(502),
            kind: SpanKind::Client,
            lambda: Some((
                i,
                Invocation {
                    function_error: Some(b"Unhandled"),
                    ..Invocation::default()
                },
            )),
            ..Default::default()
        },
    );
    assert_eq!(s(&rec, "error.type").as_deref(), Some("502"));
}

/// A gateway calling a Cloud Run service and an Azure Function: `propagators.inject` lists
/// only B3, yet each platform receives the context it reads, sampled or not, and the CLIENT
/// spans name the function.
const CLOUD: &str = r#","direction":"outbound","propagators":{"inject":["b3"]},
  "faas":{"upstreams":[
    {"match":{"host":"*.run.app"},"provider":"gcp","region":"us-central1"},
    {"match":{"host":"*.azurewebsites.net"},"provider":"azure","region":"westeurope"}]}"#;

/// The request arrives in B3 (`sampled` is `1` or `0`), so only a platform rule adds
/// `traceparent`.
fn injected(t: &mut Tracer, host: &str, sampled: &str) -> (SpanIds, Injection) {
    let pairs = [
        (":authority".as_bytes(), host.as_bytes().to_vec()),
        (":path".as_bytes(), b"/api/resize".to_vec()),
        (
            "b3".as_bytes(),
            format!("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{sampled}").into_bytes(),
        ),
    ];
    let h = RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_slice())));
    let mut out = Injection::default();
    let d = t.start(&h, || 1_000, Some(&mut out));
    (d.ids(), out)
}

#[test]
fn serverless_upstreams_receive_their_platform_context_and_name_the_function() {
    let mut t = crate::test_support::tracer(CLOUD, 3);
    // A section holding only upstreams does not make the gateway a function.
    assert!(!t.span.faas.is_function());
    assert_eq!(crate::test_support::resource_attr(&t, "faas.name"), None);
    for (sampled, o, flags) in [("1", 1, "01"), ("0", 0, "00")] {
        let (d, out) = injected(&mut t, "myfn-abc123-uc.a.run.app", sampled);
        assert_eq!(
            out.get("x-cloud-trace-context"),
            Some(
                format!(
                    "4bf92f3577b34da6a3ce929d0e0e4736/{};o={o}",
                    d.span_id.as_u64()
                )
                .as_bytes()
            )
        );
        assert_eq!(out.get("traceparent"), None);
        let (d, out) = injected(&mut t, "myapp.azurewebsites.net:443", sampled);
        assert_eq!(
            out.get("traceparent"),
            Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-{flags}", d.span_id).as_bytes())
        );
        assert_eq!(out.get("x-cloud-trace-context"), None);
        // Any other upstream gets what is configured.
        let (_, out) = injected(&mut t, "orders.shop.svc.cluster.local", sampled);
        assert_eq!(out.get("x-cloud-trace-context"), None);
        assert_eq!(out.get("traceparent"), None);
        assert!(out.get("b3").is_some());
    }
    let rec = span(
        &mut t,
        &[(":authority", "myfn-abc123-uc.a.run.app"), (":path", "/")],
        SpanKind::Client,
        b"outbound|443||myfn-abc123-uc.a.run.app",
    );
    assert_eq!(s(&rec, "faas.invoked_name").as_deref(), Some("myfn"));
    assert_eq!(s(&rec, "faas.invoked_provider").as_deref(), Some("gcp"));
    assert_eq!(
        s(&rec, "faas.invoked_region").as_deref(),
        Some("us-central1")
    );
    let rec = span(
        &mut t,
        &[
            (":authority", "myapp.azurewebsites.net"),
            (":path", "/api/Resize"),
        ],
        SpanKind::Client,
        b"outbound|443||myapp.azurewebsites.net",
    );
    assert_eq!(s(&rec, "faas.invoked_name").as_deref(), Some("Resize"));
    assert_eq!(s(&rec, "faas.invoked_provider").as_deref(), Some("azure"));
    assert_eq!(
        s(&rec, "faas.invoked_region").as_deref(),
        Some("westeurope")
    );
}

#[test]
fn an_inbound_filter_injects_no_platform_context() {
    let inbound = CLOUD.replace("\"outbound\"", "\"inbound\"");
    let mut t = crate::test_support::tracer(&inbound, 3);
    let (_, out) = injected(&mut t, "myfn-abc123-uc.a.run.app", "1");
    assert_eq!(out.get("x-cloud-trace-context"), None);
}
