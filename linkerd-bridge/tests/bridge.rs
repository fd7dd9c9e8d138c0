//! End to end: the bridge in front of an in-test application, exporting to in-test OTLP
//! receivers (HTTP and gRPC). Every span and every propagated header is asserted exactly.

mod support;

use std::time::Duration;

use bytes::Bytes;
use hyper::Request;
use meshtrace_host_test::sink::{OtlpSink, SinkMode};
use opentelemetry_proto::tonic::trace::v1::Span;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn http_config(sink: &OtlpSink, extra: &str) -> String {
    format!(
        r#"{{"collector":{{"endpoint":"http://{}/v1/traces","compression":"none"}},"batch":{{"flush_interval_ms":20}}{extra}}}"#,
        sink.addr
    )
}

async fn sink_spans(sink: &OtlpSink, n: usize) -> Vec<Span> {
    wait_for(n, || sink.spans()).await
}

fn url(addr: std::net::SocketAddr, path: &str) -> http::Uri {
    format!("http://{addr}{path}").parse().unwrap()
}

/// The attributes every span of a plain request to `path` carries, around `extra`.
fn attrs(path: &str, extra: &[&str], version: &str, status: u16) -> Vec<String> {
    let mut v = vec![
        "http.request.method=\"GET\"".to_string(),
        format!("url.path={path:?}"),
        "url.scheme=\"http\"".into(),
        "server.address=\"web.shop.svc.cluster.local\"".into(),
        "server.port=8080".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push(format!("network.protocol.version={version:?}"));
    v.push("client.address=\"127.0.0.1\"".into());
    v.push(format!("http.response.status_code={status}"));
    v
}

fn get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(url(addr, path)).header("host", "web.shop.svc.cluster.local:8080");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full("")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w3c_parent_linkerd_identity_and_resource() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (bridge, _dir) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let resp = http1_client()
        .request(get(
            bridge.listen,
            "/api/items?page=2",
            &[
                ("traceparent", &tp),
                ("tracestate", "congo=t61rcWkgMzE"),
                (
                    "l5d-client-id",
                    "checkout.shop.serviceaccount.identity.linkerd.cluster.local",
                ),
                ("l5d-orig-proto", "HTTP/1.1"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_text(resp).await, "ok");

    let spans = sink_spans(&sink, 1).await;
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(
        (up.method.as_str(), up.path.as_str()),
        ("GET", "/api/items")
    );
    assert_eq!(up.version, http::Version::HTTP_11);
    // The application's parent is the bridge's span.
    assert_eq!(
        up.get("traceparent"),
        Some(format!("00-{TRACE}-{}-01", hex(&s.span_id)).as_str())
    );
    assert_eq!(up.get("tracestate"), Some("congo=t61rcWkgMzE"));
    assert_eq!(
        up.get("l5d-client-id"),
        Some("checkout.shop.serviceaccount.identity.linkerd.cluster.local")
    );
    assert_eq!(up.get("host"), Some("web.shop.svc.cluster.local:8080"));
    // Hop-by-hop headers stay on the hop they were meant for.
    assert_eq!(up.get("x-hop"), None);

    assert_eq!(hex(&s.trace_id), TRACE);
    assert_eq!(hex(&s.parent_span_id), PARENT);
    assert_eq!(s.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(s.name, "GET /api/items");
    assert_eq!(s.kind, 2);
    assert_eq!(s.flags, 0x01 | 0x300);
    assert_eq!(s.status, None);
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    assert_eq!(
        render(&s.attributes),
        attrs(
            "/api/items",
            &[
                "mesh.peer.identity=\"checkout.shop.serviceaccount.identity.linkerd.cluster.local\"",
                "mesh.peer.service_account=\"checkout\"",
                "mesh.peer.namespace=\"shop\"",
                "http.request.header.l5d-orig-proto=[\"HTTP/1.1\"]",
            ],
            "1.1",
            200
        )
    );
    let req = &sink.received()[0];
    assert_eq!(req.path, "/v1/traces");
    let rs = &req.request.resource_spans[0];
    assert_eq!(
        render(&rs.resource.as_ref().unwrap().attributes),
        expected_resource()
    );
    let scope = rs.scope_spans[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("meshtrace", meshtrace::VERSION)
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_continued_and_unsampled_parent() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (bridge, _dir) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let client = http1_client();
    // Unsampled W3C parent: propagated with a new span id, nothing recorded.
    let tp = format!("00-{TRACE}-{PARENT}-00");
    let r = client
        .request(get(bridge.listen, "/unsampled", &[("traceparent", &tp)]))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // B3 multi headers: continued, and rewritten with the bridge's span as the parent.
    let b3 = [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        ("tracestate", "stale=1"),
    ];
    let r = client
        .request(get(bridge.listen, "/b3", &b3))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let spans = sink_spans(&sink, 1).await;
    assert_eq!(spans.len(), 1, "the unsampled request must not be exported");
    let s = &spans[0];
    let seen = app.seen();
    let unsampled = seen[0].get("traceparent").unwrap();
    assert!(unsampled.starts_with(&format!("00-{TRACE}-")) && unsampled.ends_with("-00"));
    assert_ne!(&unsampled[36..52], PARENT);
    let b3_seen = &seen[1];
    assert_eq!(hex(&s.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(hex(&s.parent_span_id), "e457b5a2e4d86bd1");
    assert_eq!(
        b3_seen.get("x-b3-traceid"),
        Some("80f198ee56343ba864fe8b2a57d3eff7")
    );
    assert_eq!(b3_seen.get("x-b3-spanid"), Some(hex(&s.span_id).as_str()));
    assert_eq!(b3_seen.get("x-b3-sampled"), Some("1"));
    // A tracestate without a traceparent must not reach the app.
    assert_eq!(b3_seen.get("tracestate"), None);
    assert_eq!(
        b3_seen.get("traceparent"),
        Some(format!("00-{}-{}-01", hex(&s.trace_id), hex(&s.span_id)).as_str())
    );
    assert_eq!(s.flags, 0x01 | 0x300);
    assert_eq!(s.name, "GET /b3");
    assert_eq!(render(&s.attributes), attrs("/b3", &[], "1.1", 200));
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_and_span_at_body_end() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (bridge, _dir) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let client = http1_client();

    // Request body: chunks reach the application as they are sent.
    let (tx, rx) = mpsc::channel(1);
    let req = Request::post(url(bridge.listen, "/upload"))
        .header("host", "web.shop.svc.cluster.local:8080")
        .body(channel_body(rx))
        .unwrap();
    let sending = tokio::spawn(async move {
        for _ in 0..4 {
            tx.send(Bytes::from(vec![b'x'; 1000])).await.unwrap();
        }
    });
    let resp = client.request(req).await.unwrap();
    sending.await.unwrap();
    assert_eq!(body_text(resp).await, "4000");
    sink_spans(&sink, 1).await;

    // Response body: the first chunk arrives while the application still holds the rest,
    // and the span is finished only when the body ends.
    let (tx, rx) = mpsc::channel(1);
    app.hooks.lock().unwrap().stream = Some(rx);
    let mut resp = client
        .request(get(bridge.listen, "/stream", &[]))
        .await
        .unwrap();
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let frame = http_body_util::BodyExt::frame(resp.body_mut())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"first"));
    {
        let core = bridge.shared.core.lock().unwrap();
        assert_eq!(
            core.counters().spans_queued,
            1,
            "only the upload's span is finished"
        );
    }
    let before_end = meshtrace_now();
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    assert_eq!(body_text(resp).await, "second");
    let spans = sink_spans(&sink, 2).await;
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].name, "POST /upload");
    let s = &spans[1];
    assert_eq!(s.name, "GET /stream");
    assert!(s.end_time_unix_nano >= before_end);
    assert_eq!(render(&s.attributes), attrs("/stream", &[], "1.1", 200));

    // A response the client abandons mid-body still ends its span.
    let (tx, rx) = mpsc::channel(1);
    app.hooks.lock().unwrap().stream = Some(rx);
    let mut resp = client
        .request(get(bridge.listen, "/stream", &[]))
        .await
        .unwrap();
    tx.send(Bytes::from_static(b"only")).await.unwrap();
    let _ = http_body_util::BodyExt::frame(resp.body_mut()).await;
    drop(resp);
    let spans = sink_spans(&sink, 3).await;
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[2].name, "GET /stream");
    assert_eq!(
        render(&spans[2].attributes),
        attrs("/stream", &[], "1.1", 200)
    );
    drop(tx);
    bridge.shutdown().await;
}

fn meshtrace_now() -> u64 {
    linkerd_bridge::adapter::now_ns()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_both_directions() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (bridge, _dir) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let req = Request::get("http://web.shop.svc.cluster.local:8080/grpc.Health/Check")
        .body(full(""))
        .unwrap();
    // h2c to the bridge's address with the service's authority.
    let (mut parts, body) = req.into_parts();
    parts.headers.insert("traceparent", tp.parse().unwrap());
    let stream = tokio::net::TcpStream::connect(bridge.listen).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(Request::from_parts(parts, body))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(body_text(resp).await, "ok");
    let spans = sink_spans(&sink, 1).await;
    let s = &spans[0];
    let up = &app.seen()[0];
    assert_eq!(up.version, http::Version::HTTP_2);
    assert_eq!(
        up.get("traceparent"),
        Some(format!("00-{TRACE}-{}-01", hex(&s.span_id)).as_str())
    );
    assert_eq!(s.name, "GET /grpc.Health/Check");
    assert_eq!(
        render(&s.attributes),
        attrs("/grpc.Health/Check", &[], "2", 200)
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_down_failing_and_slow() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (down, _d1) = bridge(closed, &http_config(&sink, ""), false).await;
    let client = http1_client();
    let r = client.request(get(down.listen, "/x", &[])).await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body_text(r).await, "upstream unavailable\n");
    let spans = sink_spans(&sink, 1).await;
    let s = &spans[0];
    assert_eq!(s.status.as_ref().map(|st| st.code), Some(2));
    let mut want = attrs("/x", &[], "1.1", 502);
    want.push("error.type=\"502\"".into());
    assert_eq!(render(&s.attributes), want);
    assert_eq!(
        wait_metric(&down, "meshtrace_bridge_upstream_errors_total", 1).await,
        1
    );
    down.shutdown().await;

    let (slow, _d2) = bridge(
        app.addr,
        &http_config(&sink, r#","bridge":{"upstream_timeout_ms":1000}"#),
        false,
    )
    .await;
    let r = client
        .request(get(slow.listen, "/slow", &[]))
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(body_text(r).await, "upstream timed out\n");
    let r = client
        .request(get(slow.listen, "/status/503", &[]))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(body_text(r).await, "status");
    let spans = sink_spans(&sink, 3).await;
    let mut want = attrs("/slow", &[], "1.1", 504);
    want.push("error.type=\"504\"".into());
    assert_eq!(render(&spans[1].attributes), want);
    let mut want = attrs("/status/503", &[], "1.1", 503);
    want.push("error.type=\"503\"".into());
    assert_eq!(render(&spans[2].attributes), want);
    assert_eq!(
        wait_metric(&slow, "meshtrace_bridge_upstream_timeouts_total", 1).await,
        1
    );
    slow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_retries_then_counts_drops() {
    let app = App::start().await;
    let sink = OtlpSink::start(0).unwrap();
    sink.set_mode(SinkMode::Status(503));
    let config = format!(
        r#"{{"collector":{{"endpoint":"http://{}/v1/traces","compression":"none","max_attempts":2}},"batch":{{"flush_interval_ms":20}}}}"#,
        sink.addr
    );
    let (b, _dir) = bridge(app.addr, &config, false).await;
    let r = http1_client()
        .request(get(b.listen, "/a", &[]))
        .await
        .unwrap();
    // Requests never wait for export.
    assert_eq!(r.status(), 200);
    assert_eq!(
        wait_metric(&b, "meshtrace_spans_dropped_export_failed_total", 1).await,
        1
    );
    assert_eq!(metric(&b, "meshtrace_export_retries_total").await, 1);
    assert_eq!(
        metric(&b, "meshtrace_export_requests_failed_total").await,
        1
    );
    assert_eq!(metric(&b, "meshtrace_spans_started_total").await, 1);
    assert_eq!(metric(&b, "meshtrace_spans_sampled_total").await, 1);
    assert_eq!(metric(&b, "meshtrace_spans_exported_total").await, 0);
    // 400 is not retryable.
    sink.set_mode(SinkMode::Status(400));
    let r = http1_client()
        .request(get(b.listen, "/b", &[]))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        wait_metric(&b, "meshtrace_spans_dropped_export_failed_total", 2).await,
        2
    );
    assert_eq!(metric(&b, "meshtrace_export_retries_total").await, 1);
    // The collector recovers: later spans go through.
    sink.set_mode(SinkMode::Ok);
    let r = http1_client()
        .request(get(b.listen, "/c", &[]))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = sink_spans(&sink, 1).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "GET /c");
    assert_eq!(
        wait_metric(&b, "meshtrace_spans_exported_total", 1).await,
        1
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_with_gzip() {
    let (grpc, addr) = GrpcSink::start().await;
    let app = App::start().await;
    let config = format!(
        r#"{{"collector":{{"endpoint":"grpc://{addr}"}},"batch":{{"flush_interval_ms":20}}}}"#
    );
    let (b, _dir) = bridge(app.addr, &config, false).await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let r = http1_client()
        .request(get(b.listen, "/g", &[("traceparent", &tp)]))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = wait_for(1, || grpc.spans()).await;
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(hex(&s.trace_id), TRACE);
    assert_eq!(hex(&s.parent_span_id), PARENT);
    assert_eq!(s.name, "GET /g");
    assert_eq!(render(&s.attributes), attrs("/g", &[], "1.1", 200));
    let req = grpc.received.lock().unwrap()[0].clone();
    assert_eq!(
        render(&req.resource_spans[0].resource.as_ref().unwrap().attributes),
        expected_resource()
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_adds_mesh_resource() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;

    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (b, _dir) = bridge(app.addr, &http_config(&sink, ""), true).await;
    let relay = b.relay.unwrap();
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let app_span = Span {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        name: "SELECT orders".into(),
        kind: 3,
        ..Default::default()
    };
    let export = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "web-app"), kv("k8s.pod.name", "own")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![app_span.clone()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let client = http1_client();
    let post = |ct: &'static str| {
        Request::post(url(relay, "/v1/traces"))
            .header("content-type", ct)
            .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                Bytes::from(export.encode_to_vec()),
            )))
            .unwrap()
    };
    let r = client.request(post("application/json")).await.unwrap();
    assert_eq!(r.status(), 415);
    let r = client
        .request(post("application/x-protobuf"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    // A bridge span in the same batch window.
    let r = client.request(get(b.listen, "/r", &[])).await.unwrap();
    assert_eq!(r.status(), 200);

    let spans = sink_spans(&sink, 2).await;
    assert_eq!(spans.len(), 2);
    let received = sink.received();
    let resources: Vec<Vec<String>> = received
        .iter()
        .flat_map(|r| r.request.resource_spans.iter())
        .map(|rs| render(&rs.resource.as_ref().unwrap().attributes))
        .collect();
    let relayed = vec![
        "service.name=\"web-app\"".to_string(),
        "k8s.pod.name=\"own\"".into(),
        "service.mesh=\"linkerd\"".into(),
        "k8s.namespace.name=\"shop\"".into(),
        "k8s.node.name=\"node-1\"".into(),
        "k8s.pod.label.app=\"web\"".into(),
        "k8s.pod.label.version=\"v2\"".into(),
    ];
    assert!(resources.contains(&relayed), "{resources:?}");
    assert!(resources.contains(&expected_resource()), "{resources:?}");
    let relayed_span = spans.iter().find(|s| s.name == "SELECT orders").unwrap();
    assert_eq!(relayed_span, &app_span);
    assert_eq!(
        wait_metric(&b, "meshtrace_relay_spans_exported_total", 1).await,
        1
    );
    assert_eq!(metric(&b, "meshtrace_relay_spans_accepted_total").await, 1);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (b, _dir) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let mut s = tokio::net::TcpStream::connect(b.listen).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nhost: web.shop.svc.cluster.local:8080\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    let up = &app.seen()[0];
    assert_eq!(up.get("upgrade"), Some("websocket"));
    let spans = sink_spans(&sink, 1).await;
    assert_eq!(render(&spans[0].attributes), attrs("/ws", &[], "1.1", 101));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_and_flushes_spans() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    // A long interval: only the shutdown flush can send the span.
    let config = format!(
        r#"{{"collector":{{"endpoint":"http://{}/v1/traces","compression":"none"}},"batch":{{"flush_interval_ms":3600000}}}}"#,
        sink.addr
    );
    let (b, _dir) = bridge(app.addr, &config, false).await;
    let (release, hold) = oneshot::channel();
    app.hooks.lock().unwrap().hold = Some(hold);
    let listen = b.listen;
    let request = tokio::spawn(async move {
        let r = http1_client()
            .request(get(listen, "/hold", &[]))
            .await
            .unwrap();
        (r.status(), body_text(r).await)
    });
    wait_for(1, || app.seen()).await;
    let admin = b.admin;
    let shared = b.shared.clone();
    let shutdown = tokio::spawn(b.shutdown());
    // Draining: not ready any more, and the held request still completes.
    for _ in 0..500 {
        if !shared.ready.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ready = http1_client()
        .request(Request::get(url(admin, "/ready")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    release.send(()).unwrap();
    assert_eq!(
        request.await.unwrap(),
        (http::StatusCode::OK, "released".to_string())
    );
    shutdown.await.unwrap();
    let spans = sink.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "GET /hold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_unreachable_never_blocks_requests() {
    let app = App::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for endpoint in [
        format!("http://{closed}/v1/traces"),
        format!("grpc://{closed}"),
    ] {
        let config = format!(
            r#"{{"collector":{{"endpoint":"{endpoint}","max_attempts":2,"timeout_ms":1000}},"batch":{{"flush_interval_ms":20}}}}"#
        );
        let (b, _dir) = bridge(app.addr, &config, false).await;
        let r = http1_client()
            .request(get(b.listen, "/a", &[]))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(body_text(r).await, "ok");
        assert_eq!(
            wait_metric(&b, "meshtrace_spans_dropped_export_failed_total", 1).await,
            1,
            "{endpoint}"
        );
        assert_eq!(
            metric(&b, "meshtrace_export_retries_total").await,
            1,
            "{endpoint}"
        );
        assert_eq!(metric(&b, "meshtrace_export_requests_ok_total").await, 0);
        b.shutdown().await;
    }
}
