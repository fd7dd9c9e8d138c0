//! Requests through the compiled filter: injected headers, span kind per direction, and the
//! exported span fields decoded with opentelemetry-proto.

use meshtrace_host_test::host::export::{attr, decode, flush_one, hex, spans, Attr};
use meshtrace_host_test::host::{load_filter, Host, Req, Resp};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

fn host(direction: &str) -> Host {
    load_filter()
        .configure(&format!(
            r#"{{"service_name": "checkout", "direction": "{direction}", "collector": {{"cluster": "otel_collector"}}}}"#
        ))
        .unwrap()
}

fn traceparent(trace: &[u8], span: &[u8]) -> String {
    format!("00-{}-{}-03", hex(trace), hex(span))
}

#[test]
fn server_span_for_a_new_trace() {
    let mut h = host("inbound");
    let start = h.now_ns();
    let ex = h
        .request(
            Req::get("/cart?id=7")
                .authority("shop.local:8080")
                .header("user-agent", "curl/8")
                .property("request.protocol", "HTTP/1.1")
                .property("response.code", 200i64)
                .latency_ms(25),
        )
        .unwrap();
    let tp = ex.upstream_header("traceparent").unwrap().to_string();
    assert_eq!(ex.local_response, None);
    assert_eq!(ex.downstream_headers.get(":status"), Some("200"));

    let spans = flush_one(&mut h);
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    // The injected traceparent carries exactly the exported span's ids; a new trace is
    // sampled and random.
    assert_eq!(tp, traceparent(&s.trace_id, &s.span_id));
    assert!(s.parent_span_id.is_empty());
    assert_eq!(s.name, "GET /cart");
    assert_eq!(s.kind, SpanKind::Server as i32);
    assert_eq!(s.start_time_unix_nano, start);
    assert_eq!(s.end_time_unix_nano, start + 25_000_000);
    assert_eq!(
        attr(&s.attributes, "http.request.method"),
        Some(Attr::Str("GET".into()))
    );
    assert_eq!(
        attr(&s.attributes, "url.path"),
        Some(Attr::Str("/cart".into()))
    );
    assert_eq!(
        attr(&s.attributes, "url.scheme"),
        Some(Attr::Str("http".into()))
    );
    assert_eq!(
        attr(&s.attributes, "server.address"),
        Some(Attr::Str("shop.local".into()))
    );
    assert_eq!(attr(&s.attributes, "server.port"), Some(Attr::Int(8080)));
    assert_eq!(
        attr(&s.attributes, "user_agent.original"),
        Some(Attr::Str("curl/8".into()))
    );
    assert_eq!(
        attr(&s.attributes, "network.protocol.version"),
        Some(Attr::Str("1.1".into()))
    );
    assert_eq!(
        attr(&s.attributes, "http.response.status_code"),
        Some(Attr::Int(200))
    );
    assert_eq!(
        s.status.as_ref().map_or(0, |st| st.code),
        StatusCode::Unset as i32
    );
}

#[test]
fn continues_an_incoming_trace_and_marks_server_errors() {
    let mut h = host("inbound");
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let ex = h
        .request(
            Req::post("/pay")
                .header("traceparent", incoming)
                .header("tracestate", "vendor=1")
                .property("response.code", 503i64)
                .response(Resp::status(503)),
        )
        .unwrap();
    let tp = ex.upstream_header("traceparent").unwrap();
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{tp}"
    );
    assert!(tp.ends_with("-01"), "{tp}");
    assert_eq!(ex.upstream_header("tracestate"), Some("vendor=1"));

    let s = &flush_one(&mut h)[0];
    assert_eq!(hex(&s.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(hex(&s.parent_span_id), "b7ad6b7169203331");
    assert_eq!(
        tp,
        format!("00-{}-{}-01", hex(&s.trace_id), hex(&s.span_id))
    );
    assert_eq!(s.trace_state, "vendor=1");
    assert_eq!(s.name, "POST /pay");
    assert_eq!(s.status.as_ref().unwrap().code, StatusCode::Error as i32);
    assert_eq!(
        attr(&s.attributes, "error.type"),
        Some(Attr::Str("503".into()))
    );
}

#[test]
fn unsampled_parent_is_propagated_but_not_exported() {
    let mut h = host("inbound");
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let ex = h
        .request(Req::get("/").header("traceparent", incoming))
        .unwrap();
    assert!(ex.upstream_header("traceparent").unwrap().ends_with("-00"));
    h.advance(5000).unwrap();
    assert_eq!(h.http_calls().len(), 0);
    assert_eq!(h.metric("meshtrace.spans_started"), Some(1));
    assert_eq!(h.metric("meshtrace.spans_sampled"), Some(0));
}

#[test]
fn client_span_for_outbound() {
    let mut h = host("outbound");
    h.request(Req::get("/x").property("response.code", 404i64))
        .unwrap();
    let s = &flush_one(&mut h)[0];
    assert_eq!(s.kind, SpanKind::Client as i32);
    // A 4xx is an error on the client side only.
    assert_eq!(s.status.as_ref().unwrap().code, StatusCode::Error as i32);
}

#[test]
fn auto_direction_reads_the_listener_direction() {
    for (direction, kind) in [
        (1i64, SpanKind::Server),
        (2, SpanKind::Client),
        (0, SpanKind::Server),
    ] {
        let mut h = host("auto");
        h.request(Req::get("/x").property("xds.listener_direction", direction))
            .unwrap();
        assert_eq!(
            flush_one(&mut h)[0].kind,
            kind as i32,
            "listener_direction {direction}"
        );
    }
    // Also when it is a host-wide (listener) property rather than a per-request one.
    let mut h = load_filter()
        .property("xds.listener_direction", 2i64)
        .configure(r#"{"collector": {"cluster": "otel_collector"}}"#)
        .unwrap();
    h.request(Req::get("/x")).unwrap();
    assert_eq!(flush_one(&mut h)[0].kind, SpanKind::Client as i32);
}

#[test]
fn resource_and_scope() {
    let mut h = host("inbound");
    h.request(Req::get("/x")).unwrap();
    h.advance(1000).unwrap();
    let call = &h.pending_http_calls()[0];
    let req = decode(&call.body).unwrap();
    assert_eq!(req.resource_spans.len(), 1);
    let rs = &req.resource_spans[0];
    let resource = rs.resource.as_ref().unwrap();
    assert_eq!(
        attr(&resource.attributes, "service.name"),
        Some(Attr::Str("checkout".into()))
    );
    assert_eq!(
        attr(&resource.attributes, "telemetry.sdk.name"),
        Some(Attr::Str("meshtrace".into()))
    );
    assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "meshtrace");
}

#[test]
fn workers_export_separately_and_share_stats() {
    let mut h = load_filter()
        .workers(2)
        .configure(r#"{"collector": {"cluster": "otel_collector"}}"#)
        .unwrap();
    for i in 0..6 {
        h.request(Req::get("/x").on_worker(i % 2)).unwrap();
    }
    h.advance(1000).unwrap();
    let calls = h.pending_http_calls();
    assert_eq!(
        calls.iter().map(|c| c.worker).collect::<Vec<_>>(),
        vec![0, 1]
    );
    for c in &calls {
        assert_eq!(spans(&decode(&c.body).unwrap()).len(), 3);
        h.answer(c.token, 200, b"").unwrap();
    }
    h.advance(1000).unwrap();
    assert_eq!(h.metric("meshtrace.spans_started"), Some(6));
    assert_eq!(h.metric("meshtrace.spans_exported"), Some(6));
    assert_eq!(h.metric("meshtrace.export_requests.ok"), Some(2));
}

#[test]
fn two_filters_in_a_chain_make_parent_and_child_spans() {
    // Two plugins in one VM: two root contexts, and per request one stream context each,
    // request callbacks in chain order. The second filter sees the first one's traceparent.
    let config = r#"{"collector": {"cluster": "otel_collector"}}"#;
    let mut h = load_filter()
        .plugin("outer", "outer", config.as_bytes().to_vec())
        .plugin("inner", "inner", config.as_bytes().to_vec())
        .start()
        .unwrap();
    let ex = h.request(Req::get("/x")).unwrap();
    assert_eq!(ex.contexts, vec![3, 4]);
    h.advance(1000).unwrap();
    let calls = h.pending_http_calls();
    assert_eq!(
        calls.iter().map(|c| c.root_context).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let outer = &spans(&decode(&calls[0].body).unwrap())[0];
    let inner = &spans(&decode(&calls[1].body).unwrap())[0];
    assert_eq!(inner.trace_id, outer.trace_id);
    assert_eq!(inner.parent_span_id, outer.span_id);
    assert_eq!(
        ex.upstream_header("traceparent").unwrap(),
        traceparent(&inner.trace_id, &inner.span_id)
    );
}
