//! A function's sidecar in the wasmtime host: `faas.coldstart` on exactly one span of the
//! process, whichever worker VM served the first request, decided with compare-and-swap on
//! shared data that all VMs of the host share, as Envoy's workers do.

use meshtrace_host_test::host::export::{attr, decode, spans, Attr};
use meshtrace_host_test::host::{load_filter, Host, Req};
use opentelemetry_proto::tonic::trace::v1::Span;

const KEY: &[u8] = b"meshtrace.coldstart";

fn function(workers: usize, extra: &str) -> Host {
    load_filter()
        .workers(workers)
        .configure(&format!(
            r#"{{"collector": {{"cluster": "c"}}, "direction": "inbound",
                "faas": {{"name": "thumbnails", "version": "3"}}{extra}}}"#
        ))
        .unwrap()
}

/// Every span every worker exports at the next interval.
fn exported(h: &mut Host) -> Vec<Span> {
    h.advance(1000).unwrap();
    let mut out = Vec::new();
    for call in h.pending_http_calls() {
        out.extend(spans(&decode(&call.body).unwrap()));
        h.answer(call.token, 200, b"").unwrap();
    }
    out
}

fn coldstarts(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| attr(&s.attributes, "faas.coldstart") == Some(Attr::Bool(true)))
        .collect()
}

fn on(worker: usize, path: &str) -> Req {
    let mut r = Req::get(path);
    r.worker = worker;
    r
}

#[test]
fn exactly_one_span_of_the_process_is_the_cold_start() {
    let mut h = function(2, "");
    // Configuring created the key, unclaimed.
    assert_eq!(
        h.shared_data("meshtrace", KEY).map(|(v, _)| v),
        Some(b"0".to_vec())
    );
    for i in 0..20 {
        h.request(on(i % 2, &format!("/thumb/{i}"))).unwrap();
    }
    let spans = exported(&mut h);
    assert_eq!(spans.len(), 20);
    let cold = coldstarts(&spans);
    assert_eq!(cold.len(), 1);
    assert_eq!(cold[0].name, "GET /thumb/{id}");
    assert_eq!(
        attr(&cold[0].attributes, "url.path"),
        Some(Attr::Str("/thumb/0".into()))
    );
    for s in &spans {
        assert_eq!(
            attr(&s.attributes, "faas.trigger"),
            Some(Attr::Str("http".into()))
        );
    }
    // Two writes in the process's life: the creation and the one claim. The other worker's
    // claim failed on its CAS and wrote nothing.
    assert_eq!(h.shared_data("meshtrace", KEY), Some((b"1".to_vec(), 2)));
    // Later requests on either worker never claim again.
    h.request(on(1, "/again")).unwrap();
    h.request(on(0, "/again")).unwrap();
    assert!(coldstarts(&exported(&mut h)).is_empty());
    assert_eq!(h.shared_data("meshtrace", KEY), Some((b"1".to_vec(), 2)));
}

#[test]
fn the_second_worker_can_win_and_the_first_then_loses() {
    let mut h = function(2, "");
    h.request(on(1, "/first")).unwrap();
    h.request(on(0, "/second")).unwrap();
    let spans = exported(&mut h);
    let cold = coldstarts(&spans);
    assert_eq!(cold.len(), 1);
    assert_eq!(
        attr(&cold[0].attributes, "url.path"),
        Some(Attr::Str("/first".into()))
    );
}

#[test]
fn an_unsampled_first_request_spends_the_cold_start() {
    // The first request carries an unsampled parent: it is the cold start, but not recorded.
    // Marking a later request would be false, so no span says coldstart.
    let mut h = function(2, "");
    let unsampled = on(0, "/first").header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    );
    h.request(unsampled).unwrap();
    for i in 0..6 {
        h.request(on(i % 2, "/later")).unwrap();
    }
    let spans = exported(&mut h);
    assert_eq!(spans.len(), 6);
    assert!(coldstarts(&spans).is_empty());
    assert_eq!(
        h.shared_data("meshtrace", KEY).map(|(v, _)| v),
        Some(b"1".to_vec())
    );
}

#[test]
fn a_client_span_leaves_the_cold_start_to_the_first_server_span() {
    let mut h = load_filter()
        .configure(r#"{"collector": {"cluster": "c"}, "faas": {}}"#)
        .unwrap();
    let out = Req::get("/outbound").property(
        "xds.cluster_name",
        "outbound|80||storage.default.svc.cluster.local",
    );
    let inb = Req::get("/inbound").property("xds.cluster_name", "inbound|8080||");
    h.request(out).unwrap();
    h.request(inb.clone()).unwrap();
    h.request(inb).unwrap();
    let spans = exported(&mut h);
    assert_eq!(spans.len(), 3);
    let cold = coldstarts(&spans);
    assert_eq!(cold.len(), 1);
    assert_eq!(
        attr(&cold[0].attributes, "url.path"),
        Some(Attr::Str("/inbound".into()))
    );
    // SERVER spans only carry the trigger.
    assert_eq!(attr(&spans[0].attributes, "faas.trigger"), None);
    assert_eq!(
        attr(&spans[1].attributes, "faas.trigger"),
        Some(Attr::Str("http".into()))
    );
}

#[test]
fn a_workload_that_is_no_function_never_touches_shared_data() {
    let mut h = load_filter()
        .workers(2)
        .configure(r#"{"collector": {"cluster": "c"}, "direction": "inbound"}"#)
        .unwrap();
    h.request(on(0, "/a")).unwrap();
    h.request(on(1, "/b")).unwrap();
    let spans = exported(&mut h);
    assert!(coldstarts(&spans).is_empty());
    assert!(spans
        .iter()
        .all(|s| attr(&s.attributes, "faas.trigger").is_none()));
    assert_eq!(h.shared_data("meshtrace", KEY), None);
}
