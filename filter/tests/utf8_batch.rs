//! Arbitrary bytes in every request input, through the whole core path (extract, sample,
//! span, capture, finish, encode, batch), make an export request that a strict decoder
//! accepts: prost's `String` fields (the opentelemetry-proto types, as a collector decodes
//! them) refuse invalid UTF-8, and one refused string would cost the whole batch.

use meshtrace::config::Compiled;
use meshtrace::export::reply::ExportResult;
use meshtrace::export::span_processor::BatchSpanProcessor;
use meshtrace::headers::{pairs, serialize_pairs, RequestHeaders};
use meshtrace::propagation::inject::Injection;
use meshtrace::span::mesh::identity::TlsFacts;
use meshtrace::span::mesh::EndFacts;
use meshtrace::span::Finish;
use meshtrace::span::{SpanKind, SpanRecord};
use meshtrace::tracer::Tracer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use proptest::prelude::*;
use prost::Message;

/// Every feature that copies request bytes into a span: query capture, request and response
/// header capture, baggage attributes, header and cookie traffic rules, route metadata, the
/// always-keep rules (their spans copy `tracestate` as the request carried it), and a small
/// value cap so cuts land inside multi-byte characters.
fn config() -> Compiled {
    const JSON: &str = r#"{
      "service_name": "reviews",
      "collector": {"cluster": "otel_collector"},
      "batch": {"max_queue": 4096, "max_batch": 512},
      "sampling": {"always_keep": ["error"]},
      "traffic": {"rules": [
        {"match": "header", "name": "x-ab-group", "ab_group": "b"},
        {"match": "cookie", "name": "release", "release": "canary"}
      ]},
      "baggage": {"attribute_keys": ["userId"]},
      "capture": {"request_headers": ["x-tenant"], "response_headers": ["x-resp"], "query": true},
      "route_metadata": true,
      "limits": {"max_attribute_value_bytes": 24}
    }"#;
    meshtrace::config::load(JSON.as_bytes()).unwrap()
}

/// Bytes that are often not UTF-8: ASCII with stray high bytes, pieces of multi-byte
/// characters, and anything at all.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => 0x21u8..0x7f,
            2 => prop::sample::select(&[0xc3u8, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80][..]),
            2 => 0x80u8..=0xff,
            1 => any::<u8>(),
        ],
        0..60,
    )
}

/// The request inputs that reach a span, by name: every one of them arbitrary.
const INPUTS: [&str; 20] = [
    ":method",
    ":path",
    ":authority",
    ":scheme",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "tracestate",
    "baggage",
    "l5d-reqid",
    "x-tenant",
    "x-ab-group",
    "cookie",
    "x-envoy-fault-abort-request",
    "x-envoy-fault-delay-request",
    "x-envoy-attempt-count",
    // Not headers: the properties Envoy reports at the end of the request.
    "protocol",
    "source.address",
    "code_details",
    "cluster_name",
];

/// More end-of-request properties: route name, upstream address, TLS facts, route metadata,
/// response header.
const MORE: usize = 7;

/// One request from the arbitrary inputs `v`; `kept` sends it down the always-keep path and
/// `grpc` makes it a failed gRPC call (its arbitrary path becomes `rpc.method_original`).
fn drive(
    tracer: &mut Tracer,
    exporter: &mut BatchSpanProcessor,
    v: &[Vec<u8>],
    kept: bool,
    grpc: bool,
) {
    let get = |name: &str| &v[INPUTS.iter().position(|n| *n == name).unwrap()][..];
    let more = &v[INPUTS.len()..];
    let mut buf = Vec::new();
    let mut hdrs: Vec<(&[u8], &[u8])> = INPUTS[..16]
        .iter()
        .map(|n| (n.as_bytes(), get(n)))
        .collect();
    let mut baggage = b"userId=".to_vec();
    baggage.extend_from_slice(get("baggage"));
    hdrs.retain(|(n, _)| *n != b"baggage");
    hdrs.push((b"baggage", &baggage));
    // A valid parent keeps the (arbitrary) `tracestate` in play; an unsampled one sends the
    // request down the always-keep path, which copies `tracestate` as it arrived.
    let parent: &[u8] = if kept {
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    } else {
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    };
    hdrs.push((b"traceparent", parent));
    if grpc {
        hdrs.push((b"content-type", b"application/grpc"));
    }
    serialize_pairs(hdrs.iter().copied(), &mut buf);
    let headers = RequestHeaders::from_pairs(pairs(&buf));
    let mut decision = tracer.extract(&headers);
    tracer.sample(&mut decision, || 1);
    let mut injection = Injection::default();
    tracer.inject(&decision, &headers, &mut injection);
    let mut rec = SpanRecord::default();
    if kept {
        assert!(!decision.record);
        let reason = tracer.keep(Some(500), 0, None, || 1).expect("kept");
        tracer.begin_kept_span(&decision.ids(), &headers, 1, reason, &mut rec);
    } else {
        assert!(decision.record);
        tracer.begin_span(&decision, &headers, 1, &mut rec);
    }
    let request = tracer.record_request(&headers, pairs(&buf), &mut rec);
    let mut resp = Vec::new();
    serialize_pairs([(&b"x-resp"[..], &more[6][..])], &mut resp);
    tracer.record_response_headers(pairs(&resp), &mut rec);
    let finish = Finish {
        end_ns: 2,
        status_code: Some(500),
        protocol: Some(get("protocol")),
        source_address: Some(get("source.address")),
        kind: SpanKind::Server,
        request: &request,
        grpc_status: grpc.then_some(meshtrace::span::grpc::Code::INTERNAL),
        lambda: None,
        mesh: EndFacts {
            // UF and FI: the flags that make details and fault facts recorded.
            response_flags: 0x1 | 0x40,
            code_details: Some(get("code_details")),
            cluster_name: Some(get("cluster_name")),
            route_name: Some(&more[0]),
            route_metadata: Some(&more[1]),
            upstream_address: Some(&more[2]),
            upstream_attempts: Some(1),
            backend_latency_ns: Some(1),
            tls: TlsFacts {
                mtls: Some(true),
                version: Some(&more[3]),
                peer_uri_san: Some(&more[4]),
                peer_subject: Some(&more[5]),
            },
        },
    };
    tracer.finish_span(&mut rec, &finish);
    exporter.push(&rec).expect("queue has room");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_request_bytes_make_a_batch_a_strict_decoder_accepts(
        requests in prop::collection::vec(
            (
                prop::collection::vec(bytes(), INPUTS.len() + MORE),
                any::<bool>(),
                any::<bool>(),
            ),
            1..6,
        ),
    ) {
        let mut tracer = Tracer::new(config(), 7);
        let header = tracer.batch_header.clone();
        let mut exporter = BatchSpanProcessor::new(tracer.config.export(), header, 0, 7);
        for (inputs, kept, grpc) in &requests {
            drive(&mut tracer, &mut exporter, inputs, *kept, *grpc);
        }
        let req = exporter.poll(10_000).expect("a batch is due");
        let (id, body) = (req.id, req.body.to_vec());
        exporter.on_result(id, ExportResult::Ok { rejected: 0 }, 10_000);
        let decoded = ExportTraceServiceRequest::decode(&body[..]);
        prop_assert!(decoded.is_ok(), "a strict decoder refused the batch: {:?}", decoded.err());
        let decoded = decoded.unwrap();
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        prop_assert_eq!(spans.len(), requests.len());
        for s in spans {
            // Every value is within the cap (the name and keys are not values).
            for kv in &s.attributes {
                if let Some(V::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    prop_assert!(v.len() <= 24, "{} = {:?}", kv.key, v);
                }
            }
        }
        prop_assert_eq!(exporter.counters.spans_exported, requests.len() as u64);
    }
}

#[test]
fn bad_bytes_become_replacement_characters_at_the_exact_attributes() {
    let mut tracer = Tracer::new(config(), 7);
    let header = tracer.batch_header.clone();
    let mut exporter = BatchSpanProcessor::new(tracer.config.export(), header, 0, 7);
    let mut v: Vec<Vec<u8>> = vec![b"x".to_vec(); INPUTS.len() + MORE];
    let mut set = |name: &str, value: &[u8]| {
        v[INPUTS.iter().position(|n| *n == name).unwrap()] = value.to_vec();
    };
    set(":method", b"G\xffT");
    set(":path", b"/a\xff/b?q=\xfe1");
    set(":authority", b"h\xc3st:80");
    set("user-agent", b"probe/1.0 \xff\xfe");
    set("x-forwarded-for", b"10.0.0.\xff, 1.2.3.4");
    set("x-tenant", b"acme\xe2\x82");
    set("protocol", b"HTTP/1.1");
    // 23 ASCII bytes and an "é": the 24-byte cap falls inside the "é", which is left out.
    v[INPUTS.len()] = b"abcdefghijklmnopqrstuvw\xc3\xa9".to_vec();
    drive(&mut tracer, &mut exporter, &v, false, false);
    let req = exporter.poll(10_000).unwrap();
    let decoded = ExportTraceServiceRequest::decode(req.body).unwrap();
    let s = &decoded.resource_spans[0].scope_spans[0].spans[0];
    let attr = |k: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    let str_of = |k: &str| match attr(k) {
        Some(V::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    };
    // Envoy failed the request itself (the flags), so the guessed route `/a\u{FFFD}/b` is not
    // shown to exist: the name is the method's alone (naming of bad bytes: tracer/naming_tests).
    assert_eq!(s.name, "HTTP");
    assert_eq!(attr("http.route"), None);
    assert_eq!(str_of("http.request.method"), "_OTHER");
    assert_eq!(str_of("http.request.method_original"), "G\u{FFFD}T");
    assert_eq!(str_of("url.path"), "/a\u{FFFD}/b");
    assert_eq!(str_of("url.query"), "q=\u{FFFD}1");
    assert_eq!(str_of("server.address"), "h\u{FFFD}st");
    assert_eq!(str_of("user_agent.original"), "probe/1.0 \u{FFFD}\u{FFFD}");
    assert_eq!(str_of("client.address"), "10.0.0.\u{FFFD}");
    assert_eq!(str_of("mesh.route.name"), "abcdefghijklmnopqrstuvw");
    match attr("http.request.header.x-tenant") {
        Some(V::ArrayValue(a)) => assert_eq!(
            a.values[0].value,
            Some(V::StringValue("acme\u{FFFD}".into()))
        ),
        other => panic!("{other:?}"),
    }
}
