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
            request,
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
