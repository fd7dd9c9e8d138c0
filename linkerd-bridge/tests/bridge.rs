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

/// The attributes every span of a plain request to `path` carries, around `extra`: the same
/// order as the filter's (route, request, `extra`, response, then the peer).
fn attrs(path: &str, extra: &[&str], version: &str, status: u16) -> Vec<String> {
    let mut v = vec![
        format!("http.route={path:?}"),
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

/// `attrs` with the span's final attributes: `error` ones, then the downstream peer.
fn attrs_end(mut v: Vec<String>, error: &[&str]) -> Vec<String> {
    v.extend(error.iter().map(|s| s.to_string()));
    v.push("network.peer.address=\"127.0.0.1\"".into());
    v.push("network.peer.port=<client port>".into());
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
        .into_iter()
        .chain(attrs_end(Vec::new(), &[]))
        .collect::<Vec<_>>()
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
    assert_eq!(
        render(&s.attributes),
        attrs_end(attrs("/b3", &[], "1.1", 200), &[])
    );
    bridge.shutdown().await;
}

/// Linkerd 1's `l5d-ctx-trace` (the Finagle binary context) and single-header B3: both
/// continued, and written back for the application with the bridge's span as the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5d_ctx_trace_and_b3_single_continued() {
    use meshtrace::propagation::l5d;
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (bridge, _dir) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let client = http1_client();
    // The Finagle spec vector: span bd82828f2f2d08d2 of trace f2fd78005d756b0e, sampling left
    // to the receiver (the default sampler records everything).
    let l5d_in = [
        (
            "l5d-ctx-trace",
            "vYKCjy8tCNLy/XgAXXVrDvL9eABddWsOAAAAAAAAAAA=",
        ),
        ("l5d-reqid", "f2fd78005d756b0e"),
    ];
    let r = client
        .request(get(bridge.listen, "/l5d", &l5d_in))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = sink_spans(&sink, 1).await;
    let s = &spans[0];
    assert_eq!(s.name, "GET /l5d");
    assert_eq!(hex(&s.trace_id), "0000000000000000f2fd78005d756b0e");
    assert_eq!(hex(&s.parent_span_id), "bd82828f2f2d08d2");
    assert_eq!(s.flags, 0x01 | 0x300);
    let seen = app.seen();
    let up = &seen[0];
    let ctx = up.get("l5d-ctx-trace").unwrap();
    let parsed = l5d::parse(ctx.as_bytes()).unwrap();
    assert_eq!(parsed.span_id.to_string(), hex(&s.span_id));
    assert_eq!(parsed.parent_id.to_string(), "bd82828f2f2d08d2");
    assert_eq!(
        parsed.trace_id.to_string(),
        "0000000000000000f2fd78005d756b0e"
    );
    // Sampling known and sampled; the 32-byte layout the caller sent.
    assert_eq!(parsed.flags, l5d::FLAG_SAMPLING_KNOWN | l5d::FLAG_SAMPLED);
    assert!(parsed.narrow);
    let mut canonical = Vec::new();
    l5d::write(&parsed, &mut canonical);
    assert_eq!(ctx.as_bytes(), canonical.as_slice());
    assert_eq!(up.get("l5d-reqid"), Some("f2fd78005d756b0e"));
    assert_eq!(
        up.get("traceparent"),
        Some(format!("00-0000000000000000f2fd78005d756b0e-{}-01", hex(&s.span_id)).as_str())
    );
    assert_eq!(
        render(&s.attributes),
        attrs_end(
            attrs(
                "/l5d",
                &["linkerd.request_id=\"f2fd78005d756b0e\""],
                "1.1",
                200
            ),
            &[]
        )
    );

    let r = client
        .request(get(
            bridge.listen,
            "/b3single",
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = sink_spans(&sink, 2).await;
    let s = &spans[1];
    assert_eq!(s.name, "GET /b3single");
    assert_eq!(hex(&s.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(hex(&s.parent_span_id), "e457b5a2e4d86bd1");
    let seen = app.seen();
    let up = &seen[1];
    assert_eq!(
        up.get("b3"),
        Some(format!("80f198ee56343ba864fe8b2a57d3eff7-{}-1", hex(&s.span_id)).as_str())
    );
    assert_eq!(
        up.get("traceparent"),
        Some(format!("00-80f198ee56343ba864fe8b2a57d3eff7-{}-01", hex(&s.span_id)).as_str())
    );
    assert_eq!(
        render(&s.attributes),
        attrs_end(attrs("/b3single", &[], "1.1", 200), &[])
    );
    bridge.shutdown().await;
}

/// Unsampled requests go through the core's always-keep rules when the response is known: an
/// error is exported with its unsampled flags and `mesh.sampling.kept_by`, a success is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_keep_exports_unsampled_errors() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (bridge, _dir) = bridge(
        app.addr,
        &http_config(&sink, r#","sampling":{"ratio":0,"always_keep":["error"]}"#),
        false,
    )
    .await;
    let client = http1_client();
    let tp = format!("00-{TRACE}-{PARENT}-00");
    let ok = client
        .request(get(bridge.listen, "/fine", &[("traceparent", &tp)]))
        .await
        .unwrap();
    assert_eq!(body_text(ok).await, "ok");
    let failed = client
        .request(get(
            bridge.listen,
            "/status/503",
            &[
                ("traceparent", &tp),
                (
                    "l5d-client-id",
                    "checkout.shop.serviceaccount.identity.linkerd.cluster.local",
                ),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(failed.status(), 503);
    assert_eq!(body_text(failed).await, "status");
    let spans = sink_spans(&sink, 1).await;
    assert_eq!(spans.len(), 1, "only the error is kept");
    let s = &spans[0];
    assert_eq!(s.name, "GET /status/{id}");
    assert_eq!(hex(&s.trace_id), TRACE);
    assert_eq!(hex(&s.parent_span_id), PARENT);
    // The span keeps the unsampled flag the application was sent.
    let seen = app.seen();
    assert_eq!(
        seen[1].get("traceparent"),
        Some(format!("00-{TRACE}-{}-00", hex(&s.span_id)).as_str())
    );
    assert_eq!(s.flags, 0x300);
    assert_eq!(s.status.as_ref().map(|st| st.code), Some(2));
    let mut want = attrs_end(
        attrs(
            "/status/503",
            &[
                "mesh.sampling.kept_by=\"error\"",
                "mesh.peer.identity=\"checkout.shop.serviceaccount.identity.linkerd.cluster.local\"",
                "mesh.peer.service_account=\"checkout\"",
                "mesh.peer.namespace=\"shop\"",
            ],
            "1.1",
            503,
        ),
        &["error.type=\"503\""],
    );
    want[0] = "http.route=\"/status/{id}\"".into();
    assert_eq!(render(&s.attributes), want);
    assert_eq!(
        wait_metric(&bridge, "meshtrace_spans_kept_total", 1).await,
        1
    );
    assert_eq!(metric(&bridge, "meshtrace_spans_sampled_total").await, 0);
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
            core.counters().spans_exported + core.held(),
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
    assert_eq!(
        render(&s.attributes),
        attrs_end(attrs("/stream", &[], "1.1", 200), &[])
    );

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
        attrs_end(attrs("/stream", &[], "1.1", 200), &[])
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
        attrs_end(attrs("/grpc.Health/Check", &[], "2", 200), &[])
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
    let want = attrs_end(attrs("/x", &[], "1.1", 502), &["error.type=\"502\""]);
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
    let want = attrs_end(attrs("/slow", &[], "1.1", 504), &["error.type=\"504\""]);
    assert_eq!(render(&spans[1].attributes), want);
    let mut want = attrs_end(
        attrs("/status/503", &[], "1.1", 503),
        &["error.type=\"503\""],
    );
    // The core's route naming templates the numeric segment, as in the filter.
    want[0] = "http.route=\"/status/{id}\"".into();
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
        r#"{{"collector":{{"endpoint":"http://{}/v1/traces","compression":"none"}},"exporter":{{"retry":{{"max_attempts":2,"initial_ms":20,"max_ms":100}}}},"batch":{{"flush_interval_ms":20}}}}"#,
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
    // The first attempt failed and was retried; the last one failed the request for good, on
    // the collector's 503, which counts it as refused.
    assert_eq!(metric(&b, "meshtrace_export_retries_total").await, 1);
    assert_eq!(
        metric(&b, "meshtrace_export_requests_retryable_total").await,
        1
    );
    assert_eq!(
        metric(&b, "meshtrace_export_requests_failed_total").await,
        1
    );
    assert_eq!(
        metric(&b, "meshtrace_export_requests_rejected_total").await,
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
    assert_eq!(
        metric(&b, "meshtrace_export_requests_failed_total").await,
        2
    );
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

/// A 503 with `Retry-After` is retried by the core's rules: after the collector's delay (not
/// the much shorter backoff), and never later than `exporter.retry.max_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_503_follows_core_rules() {
    let app = App::start().await;
    for (retry_after_s, max_ms, lo_ms, hi_ms) in
        [(1, 5_000, 1_000, 3_000), (60, 1_500, 1_500, 4_000)]
    {
        let sink = OtlpSink::start(0).unwrap();
        sink.set_mode(SinkMode::Throttle {
            status: 503,
            retry_after_s,
        });
        let config = format!(
            r#"{{"collector":{{"endpoint":"http://{}/v1/traces","compression":"none"}},"exporter":{{"retry":{{"max_attempts":3,"initial_ms":20,"max_ms":{max_ms}}}}},"batch":{{"flush_interval_ms":20}}}}"#,
            sink.addr
        );
        let (b, _dir) = bridge(app.addr, &config, false).await;
        let t0 = std::time::Instant::now();
        let r = http1_client()
            .request(get(b.listen, "/throttled", &[]))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            wait_metric(&b, "meshtrace_export_requests_retryable_total", 1).await,
            1
        );
        sink.set_mode(SinkMode::Ok);
        let spans = sink_spans(&sink, 1).await;
        let waited = t0.elapsed().as_millis() as u64;
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "GET /throttled");
        assert!(
            (lo_ms..hi_ms).contains(&waited),
            "Retry-After {retry_after_s}s, max_ms {max_ms}: exported after {waited} ms"
        );
        // One retry of the same batch, then accepted.
        assert_eq!(metric(&b, "meshtrace_export_retries_total").await, 1);
        assert_eq!(
            wait_metric(&b, "meshtrace_spans_exported_total", 1).await,
            1
        );
        assert_eq!(
            metric(&b, "meshtrace_spans_dropped_export_failed_total").await,
            0
        );
        b.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_with_gzip() {
    let (grpc, addr) = GrpcSink::start().await;
    let app = App::start().await;
    let config = format!(
        r#"{{"collector":{{"endpoint":"grpc://{addr}","compression":"gzip"}},"batch":{{"flush_interval_ms":20}}}}"#
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
    assert_eq!(
        render(&s.attributes),
        attrs_end(attrs("/g", &[], "1.1", 200), &[])
    );
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
        "k8s.namespace.name=\"shop\"".into(),
        "k8s.node.name=\"node-1\"".into(),
        "k8s.pod.label.app=\"web\"".into(),
        "k8s.pod.label.version=\"v2\"".into(),
        "service.mesh=\"linkerd\"".into(),
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
    assert_eq!(
        render(&spans[0].attributes),
        attrs_end(attrs("/ws", &[], "1.1", 101), &[])
    );
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
            r#"{{"collector":{{"endpoint":"{endpoint}","timeout_ms":1000}},"exporter":{{"retry":{{"max_attempts":2}}}},"batch":{{"flush_interval_ms":20}}}}"#
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

/// Calls the greeter through the bridge with tonic's client (its own runtime, off this one).
async fn grpc_call(port: u16, name: &str, traceparent: Option<String>) -> tonic::Code {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let md: Vec<(&'static str, &str)> = traceparent
            .as_deref()
            .map(|tp| ("traceparent", tp))
            .into_iter()
            .collect();
        meshtrace_host_test::grpc_app::call(
            port,
            meshtrace_host_test::grpc_app::SAY_HELLO,
            &name,
            &md,
        )
        .code()
    })
    .await
    .unwrap()
}

fn str_value(s: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    s.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_from_trailers_and_trailers_only() {
    let sink = OtlpSink::start(0).unwrap();
    let app = meshtrace_host_test::grpc_app::GreeterServer::start().unwrap();
    let (bridge, _dir) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let port = bridge.listen.port();
    let calls = [
        ("1", "ok", tonic::Code::Ok),
        ("2", "internal", tonic::Code::Internal),
        ("3", "not_found", tonic::Code::NotFound),
        ("4", "unavailable", tonic::Code::Unavailable),
    ];
    for (n, name, code) in calls {
        let tp = format!("00-{:0>32}-{PARENT}-01", n);
        assert_eq!(grpc_call(port, name, Some(tp)).await, code);
    }
    let spans = sink_spans(&sink, 4).await;
    assert_eq!(spans.len(), 4);
    for (n, status, error) in [
        ("1", "OK", false),
        ("2", "INTERNAL", true),
        ("3", "NOT_FOUND", false),
        ("4", "UNAVAILABLE", true),
    ] {
        let trace = format!("{:0>32}", n);
        let s = spans.iter().find(|s| hex(&s.trace_id) == trace).unwrap();
        assert_eq!(s.name, "pkg.v1.Greeter/SayHello");
        assert_eq!(str_value(s, "rpc.system.name").as_deref(), Some("grpc"));
        assert_eq!(
            str_value(s, "rpc.method").as_deref(),
            Some("pkg.v1.Greeter/SayHello")
        );
        assert_eq!(
            str_value(s, "rpc.response.status_code").as_deref(),
            Some(status)
        );
        assert_eq!(
            str_value(s, "error.type").as_deref(),
            error.then_some(status)
        );
        let code = if error { 2 } else { 0 };
        assert_eq!(s.status.as_ref().map_or(0, |st| st.code), code, "{status}");
    }
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_keep_error_keeps_failed_grpc_calls() {
    let sink = OtlpSink::start(0).unwrap();
    let app = meshtrace_host_test::grpc_app::GreeterServer::start().unwrap();
    let cfg = http_config(&sink, r#","sampling":{"ratio":0,"always_keep":["error"]}"#);
    let (bridge, _dir) = bridge(app.addr, &cfg, false).await;
    let port = bridge.listen.port();
    for name in ["ok", "not_found", "internal"] {
        grpc_call(port, name, None).await;
    }
    let spans = sink_spans(&sink, 1).await;
    assert_eq!(
        wait_metric(&bridge, "meshtrace_spans_kept_total", 1).await,
        1
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans = if spans.len() == 1 {
        sink.spans()
    } else {
        spans
    };
    assert_eq!(spans.len(), 1, "only INTERNAL is a server error");
    assert_eq!(
        str_value(&spans[0], "rpc.response.status_code").as_deref(),
        Some("INTERNAL")
    );
    assert_eq!(
        str_value(&spans[0], "mesh.sampling.kept_by").as_deref(),
        Some("error")
    );
    assert_eq!(metric(&bridge, "meshtrace_spans_sampled_total").await, 0);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_names_past_the_limit_fall_back_to_the_method() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let config = http_config(&sink, r#","limits":{"max_span_names":2}"#);
    let (bridge, _dir) = bridge(app.addr, &config, false).await;
    let paths = ["/users/alice", "/users/bob", "/users/carol", "/users/alice"];
    for path in paths {
        let resp = http1_client()
            .request(get(bridge.listen, path, &[]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let spans = sink_spans(&sink, paths.len()).await;
    let names: Vec<(&str, Option<String>)> = spans
        .iter()
        .map(|s| {
            let route = render(&s.attributes)
                .into_iter()
                .find(|a| a.starts_with("http.route="));
            (s.name.as_str(), route)
        })
        .collect();
    let route = |r: &str| Some(format!("http.route={r:?}"));
    assert_eq!(
        names,
        [
            ("GET /users/alice", route("/users/alice")),
            ("GET /users/bob", route("/users/bob")),
            ("GET", None),
            ("GET /users/alice", route("/users/alice")),
        ]
    );
    assert_eq!(
        wait_metric(&bridge, "meshtrace_span_names_overflow_total", 1).await,
        1
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_header_bytes_and_linkerd_facts_lose_no_span() {
    // Header values may carry obs-text (RFC 9110 §5.5): the bytes that are not UTF-8 become
    // U+FFFD, and the strict sink accepts the batch. An `l5d-client-id` that is not a DNS-like
    // name is no identity (`linkerd::parse_identity`), so it records nothing.
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    let (bridge, _dir) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let value = |b: &'static [u8]| http::HeaderValue::from_bytes(b).unwrap();
    let mut req = get(bridge.listen, "/bad", &[]);
    let h = req.headers_mut();
    h.insert("user-agent", value(b"probe/1.0 \xff\xfe"));
    h.insert(
        "l5d-client-id",
        value(b"checkout.sh\xffp.serviceaccount.identity.linkerd.cluster.local"),
    );
    h.insert("l5d-orig-proto", value(b"HTTP/1.1\xe2\x82"));
    let resp = http1_client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http1_client()
        .request(get(bridge.listen, "/clean", &[]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let spans = sink_spans(&sink, 2).await;
    let bad = spans.iter().find(|s| s.name == "GET /bad").unwrap();
    assert_eq!(
        render(&bad.attributes),
        attrs(
            "/bad",
            &[
                "user_agent.original=\"probe/1.0 \u{FFFD}\u{FFFD}\"",
                "http.request.header.l5d-orig-proto=[\"HTTP/1.1\u{FFFD}\"]",
            ],
            "1.1",
            200
        )
        .into_iter()
        .chain(attrs_end(Vec::new(), &[]))
        .collect::<Vec<_>>()
    );
    assert!(spans.iter().any(|s| s.name == "GET /clean"));
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_timing_on_recorded_requests_after_the_apps_entry() {
    let sink = OtlpSink::start(0).unwrap();
    let app = App::start().await;
    // Off by default.
    let (bridge_off, _dir_off) = bridge(app.addr, &http_config(&sink, ""), false).await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let resp = http1_client()
        .request(get(bridge_off.listen, "/timed", &[("traceparent", &tp)]))
        .await
        .unwrap();
    let timing = |r: &hyper::Response<hyper::body::Incoming>| -> Vec<String> {
        r.headers()
            .get_all("server-timing")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(timing(&resp), ["app;dur=5"]);
    assert!(resp
        .headers()
        .get("access-control-expose-headers")
        .is_none());
    sink_spans(&sink, 1).await;

    let config = http_config(
        &sink,
        r#","response":{"server_timing":"traceparent","expose_server_timing":true}"#,
    );
    let (bridge, _dir) = bridge(app.addr, &config, false).await;
    let resp = http1_client()
        .request(get(bridge.listen, "/timed", &[("traceparent", &tp)]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let spans = sink_spans(&sink, 2).await;
    let s = &spans[1];
    assert_eq!(
        timing(&resp),
        [
            "app;dur=5".to_string(),
            format!("traceparent;desc=\"00-{TRACE}-{}-01\"", hex(&s.span_id))
        ]
    );
    assert_eq!(
        resp.headers()
            .get_all("access-control-expose-headers")
            .iter()
            .collect::<Vec<_>>(),
        ["server-timing"]
    );
    // Not recorded: no entry.
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    let resp = http1_client()
        .request(get(bridge.listen, "/timed", &[("traceparent", &unsampled)]))
        .await
        .unwrap();
    assert_eq!(timing(&resp), ["app;dur=5"]);
}

/// A raw HTTP/1.1 application: answers every request `200 ok` on a keep-alive connection,
/// recording each request head as sent (request line and headers, in order); with
/// `close_after_one`, it closes each connection shortly after its first response, as an
/// application's idle timeout does. Returns the address, the connections accepted, and the
/// heads seen.
async fn raw_app(
    close_after_one: bool,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (a, h) = (accepted.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Requests without bodies: a head ends the request.
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head: Vec<u8> = buf.drain(..end).collect();
                    h.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                    if close_after_one {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_upstream_connections_are_reused_and_closed_ones_replaced() {
    use std::sync::atomic::Ordering;
    let sink = OtlpSink::start(0).unwrap();
    // Keep-alive: sequential requests from one client connection stay on one runtime of the
    // bridge and share one connection to the application.
    let (addr, accepted, heads) = raw_app(false).await;
    let (b, _dir) = bridge(addr, &http_config(&sink, ""), false).await;
    let client = http1_client();
    for path in ["/a", "/b?q=1", "/c"] {
        let r = client.request(get(b.listen, path, &[])).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(body_text(r).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let lines: Vec<String> = heads
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.lines().next().unwrap().to_string())
        .collect();
    // Origin form, as an HTTP/1.1 server expects from a client that is not a proxy.
    assert_eq!(
        lines,
        ["GET /a HTTP/1.1", "GET /b?q=1 HTTP/1.1", "GET /c HTTP/1.1"]
    );
    b.shutdown().await;

    // The application closes each connection after one response: a later request must not
    // be sent on the closed one, and succeeds on a new connection.
    let (addr, accepted, _) = raw_app(true).await;
    let (b, _dir) = bridge(addr, &http_config(&sink, ""), false).await;
    for path in ["/one", "/two"] {
        let r = client.request(get(b.listen, path, &[])).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(body_text(r).await, "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(
        wait_metric(&b, "meshtrace_bridge_upstream_errors_total", 0).await,
        0
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_request_to_an_http1_upstream_carries_its_authority_as_host() {
    let sink = OtlpSink::start(0).unwrap();
    let (addr, _, heads) = raw_app(false).await;
    let dir = TempDir::new();
    let args = linkerd_bridge::Args {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: addr,
        config: dir.write("bridge.json", &http_config(&sink, "")),
        admin: "127.0.0.1:0".parse().unwrap(),
        podinfo_labels: None,
        otlp_relay: None,
        upstream_protocol: linkerd_bridge::cli::UpstreamProtocol::Http1,
        drain_timeout_ms: 10_000,
        proxy_threads: 2,
    };
    let b = linkerd_bridge::Bridge::with_env(args, &pod_env)
        .unwrap()
        .start()
        .await
        .unwrap();
    let stream = tokio::net::TcpStream::connect(b.listen).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (uri, host) in [
        (
            "http://web.shop.svc.cluster.local:8080/items?id=7",
            "web.shop.svc.cluster.local:8080",
        ),
        // The scheme's default port is left out, as clients write `host`.
        (
            "http://web.shop.svc.cluster.local:80/",
            "web.shop.svc.cluster.local",
        ),
    ] {
        let resp = send
            .send_request(Request::get(uri).body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(body_text(resp).await, "ok");
        let head = heads.lock().unwrap().last().unwrap().clone();
        let mut lines = head.lines();
        let path = uri.splitn(4, '/').nth(3).unwrap();
        assert_eq!(lines.next().unwrap(), format!("GET /{path} HTTP/1.1"));
        let hosts: Vec<&str> = lines.filter_map(|l| l.strip_prefix("host: ")).collect();
        assert_eq!(hosts, [host]);
    }
    b.shutdown().await;
}
