//! gRPC through real Envoy: a tonic server behind Envoy (HTTP/2 upstream, `grpc_web` filter
//! ahead of meshtrace), called with tonic's client and with a gRPC-Web client. The spans must
//! follow the OpenTelemetry RPC conventions (v1.40.0): named `{rpc.method}`, `rpc.system.name`,
//! `rpc.method`, `rpc.response.status_code` from the `grpc-status` actually sent (trailers,
//! Trailers-Only headers, Envoy's own local reply), span status by kind, `error.type`; and
//! `always_keep: error` keeps failed calls by the same rule.

mod support;

use std::time::Duration;

use meshtrace_host_test::envoy::{envoy_binary, wasm_path, Envoy, EnvoyVars};
use meshtrace_host_test::grpc_app::{call, call_web, GreeterServer, PLAIN, SAY_HELLO};
use meshtrace_host_test::sink::OtlpSink;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::attr;

const WAIT: Duration = Duration::from_secs(10);

struct Stack {
    sink: OtlpSink,
    _app: GreeterServer,
    envoy: Envoy,
    /// Envoy's access log: each request's path, response code and `response.grpc_status`.
    access_log: std::path::PathBuf,
}

/// The sink, the greeter and Envoy on `grpc.yaml`.
fn stack(config: &str, direction: &'static str) -> Stack {
    let binary = envoy_binary().expect("Envoy lookup");
    let sink = OtlpSink::start(0).expect("OTLP sink");
    let app = GreeterServer::start().expect("gRPC server");
    let mut vars = EnvoyVars::new(
        wasm_path().expect("run `make build-wasm`"),
        app.addr.port(),
        sink.addr.port(),
        config,
    );
    vars.direction = direction;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let access_log = std::env::temp_dir().join(format!(
        "meshtrace-grpc-access-{}-{nanos}.log",
        std::process::id()
    ));
    vars.set("ACCESS_LOG", access_log.display());
    let envoy = Envoy::start(&binary, "grpc.yaml", vars).expect("start Envoy");
    Stack {
        sink,
        _app: app,
        envoy,
        access_log,
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.access_log);
    }
}

fn config(extra: &str) -> String {
    format!(
        r#"{{"service_name":"greeter","collector":{{"cluster":"otel_collector"}},"batch":{{"flush_interval_ms":100}}{extra}}}"#
    )
}

/// A sampled W3C parent whose trace id ends in `n`, so each call's span can be found.
fn parent(n: u8) -> String {
    format!(
        "00-{:032x}-00f067aa0ba902b7-01",
        u128::from(n) | 0xabc0 << 64
    )
}

fn trace_of(n: u8) -> Vec<u8> {
    (u128::from(n) | 0xabc0 << 64).to_be_bytes().to_vec()
}

fn find(spans: &[Span], n: u8) -> &Span {
    let id = trace_of(n);
    let mut hits = spans.iter().filter(|s| s.trace_id == id);
    let s = hits
        .next()
        .unwrap_or_else(|| panic!("no span for call {n}: {spans:#?}"));
    assert!(hits.next().is_none(), "two spans for call {n}");
    s
}

fn str_attr(s: &Span, key: &str) -> Option<String> {
    match attr(s, key) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        None => None,
        other => panic!("{key}: expected a string, got {other:?}"),
    }
}

/// What one span must say.
struct Want {
    name: &'static str,
    kind: SpanKind,
    error: bool,
    method: &'static str,
    status: &'static str,
}

fn check(s: &Span, w: &Want) {
    assert_eq!(s.name, w.name);
    assert_eq!(s.kind, w.kind as i32, "{}", w.name);
    let status = s.status.clone().unwrap_or_default();
    let code = if w.error {
        StatusCode::Error
    } else {
        StatusCode::Unset
    };
    assert_eq!(status.code, code as i32, "{} {}", w.name, w.status);
    assert_eq!(status.message, "", "{}", w.name);
    assert_eq!(str_attr(s, "rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(str_attr(s, "rpc.method").as_deref(), Some(w.method));
    assert_eq!(
        str_attr(s, "rpc.response.status_code").as_deref(),
        Some(w.status)
    );
    let error_type = w.error.then_some(w.status);
    assert_eq!(
        str_attr(s, "error.type").as_deref(),
        error_type,
        "{}",
        w.status
    );
    // No HTTP route on an RPC span: the method is the bounded name.
    assert_eq!(str_attr(s, "http.route"), None);
    assert_eq!(str_attr(s, "url.template"), None);
    // The deprecated names are not written.
    for old in ["rpc.system", "rpc.service", "rpc.grpc.status_code"] {
        assert!(attr(s, old).is_none(), "{old}");
    }
}

#[test]
fn server_spans_take_the_status_the_upstream_sent() {
    let s = stack(&config(""), "INBOUND");
    let port = s.envoy.vars.listen_port;
    let calls: [(u8, &'static str, &str); 6] = [
        (1, SAY_HELLO, "ok"),
        (2, SAY_HELLO, "internal"),
        (3, SAY_HELLO, "not_found"),
        (4, SAY_HELLO, "unavailable"),
        (5, "/pkg.v1.Greeter/Nope", "ok"),
        (6, "/pkg.v1.Gone/Hello", "ok"),
    ];
    let mut seen = Vec::new();
    for (n, path, name) in calls {
        let tp = parent(n);
        seen.push(call(port, path, name, &[("traceparent", &tp)]).code());
    }
    // What the real client saw: the statuses the spans must report.
    assert_eq!(
        seen,
        [
            tonic::Code::Ok,
            tonic::Code::Internal,
            tonic::Code::NotFound,
            tonic::Code::Unavailable,
            tonic::Code::Unimplemented,
            tonic::Code::Unavailable,
        ]
    );
    let spans = s.sink.wait_spans(6, WAIT);
    assert_eq!(spans.len(), 6, "{spans:#?}");
    let server = SpanKind::Server;
    let hello = "pkg.v1.Greeter/SayHello";
    let want = |name, error, method, status| Want {
        name,
        kind: server,
        error,
        method,
        status,
    };
    check(find(&spans, 1), &want(hello, false, hello, "OK"));
    // INTERNAL after a message, in the trailers of an HTTP 200.
    check(find(&spans, 2), &want(hello, true, hello, "INTERNAL"));
    // NOT_FOUND is the caller's problem, not the server's: no error on a SERVER span.
    check(find(&spans, 3), &want(hello, false, hello, "NOT_FOUND"));
    // Trailers-Only: the status is in the response headers.
    check(find(&spans, 4), &want(hello, true, hello, "UNAVAILABLE"));
    // The server does not know the method: `_OTHER`, named after the system.
    let nope = find(&spans, 5);
    check(nope, &want("grpc", true, "_OTHER", "UNIMPLEMENTED"));
    assert_eq!(
        str_attr(nope, "rpc.method_original").as_deref(),
        Some("pkg.v1.Greeter/Nope")
    );
    // Envoy's own local reply (no healthy upstream) is Trailers-Only UNAVAILABLE. No server
    // answered, so nothing shows the method exists: `_OTHER`, named after the system.
    let gone = find(&spans, 6);
    check(gone, &want("grpc", true, "_OTHER", "UNAVAILABLE"));
    assert_eq!(
        str_attr(gone, "rpc.method_original").as_deref(),
        Some("pkg.v1.Gone/Hello")
    );
    match attr(gone, "envoy.response_flags") {
        Some(Value::ArrayValue(a)) => {
            let flags: Vec<_> = a.values.iter().filter_map(|v| v.value.clone()).collect();
            assert_eq!(flags, [Value::StringValue("UH".into())]);
        }
        other => panic!("envoy.response_flags: {other:?}"),
    }
    for n in 1..=6 {
        // The HTTP status of every gRPC answer here is 200: the failure is in grpc-status.
        assert_eq!(
            attr(find(&spans, n), "http.response.status_code"),
            Some(&Value::IntValue(200)),
            "call {n}"
        );
    }
    assert_eq!(s.envoy.wait_stat("meshtrace.spans_exported", 6, WAIT), 6);
    assert_eq!(s.envoy.stat("meshtrace.spans_started"), 6);
    assert_eq!(s.envoy.stat("meshtrace.spans_sampled"), 6);
    assert_eq!(s.envoy.stat("meshtrace.spans_kept"), 0);
    // Every status was sent (trailers, Trailers-Only headers, Envoy's local reply): none
    // inferred, none malformed.
    assert_eq!(s.envoy.stat("meshtrace.grpc.calls"), 6);
    assert_eq!(s.envoy.stat("meshtrace.grpc.status_missing"), 0);
    assert_eq!(s.envoy.stat("meshtrace.grpc.status_invalid"), 0);
}

#[test]
fn client_spans_count_every_failed_call() {
    let s = stack(&config(""), "OUTBOUND");
    let port = s.envoy.vars.listen_port;
    for (n, name) in [
        (1, "ok"),
        (2, "internal"),
        (3, "not_found"),
        (4, "unavailable"),
    ] {
        let tp = parent(n);
        call(port, SAY_HELLO, name, &[("traceparent", &tp)]);
    }
    let spans = s.sink.wait_spans(4, WAIT);
    assert_eq!(spans.len(), 4);
    assert_eq!(s.envoy.wait_stat("meshtrace.grpc.calls", 4, WAIT), 4);
    let hello = "pkg.v1.Greeter/SayHello";
    for (n, error, status) in [
        (1, false, "OK"),
        (2, true, "INTERNAL"),
        // On a CLIENT span every code but OK is an error.
        (3, true, "NOT_FOUND"),
        (4, true, "UNAVAILABLE"),
    ] {
        check(
            find(&spans, n),
            &Want {
                name: hello,
                kind: SpanKind::Client,
                error,
                method: hello,
                status,
            },
        );
    }
}

#[test]
fn grpc_web_calls_take_the_status_before_the_filter_moves_it() {
    let s = stack(&config(""), "INBOUND");
    let port = s.envoy.vars.listen_port;
    let ok = call_web(port, "ok", &[("traceparent", &parent(1))]).unwrap();
    let internal = call_web(port, "internal", &[("traceparent", &parent(2))]).unwrap();
    let unavailable = call_web(port, "unavailable", &[("traceparent", &parent(3))]).unwrap();
    // What the browser-side client got: the status inside the body's trailer frame (or the
    // headers of a Trailers-Only answer), as Envoy's grpc_web filter writes it.
    assert_eq!(ok.http_status, 200);
    assert_eq!(
        ok.content_type.as_deref(),
        Some("application/grpc-web+proto")
    );
    assert_eq!(ok.messages.len(), 1);
    let status = |r: &meshtrace_host_test::grpc_app::WebResponse| {
        r.trailers
            .iter()
            .find(|(k, _)| k == "grpc-status")
            .map(|(_, v)| v.clone())
            .or(r.header_status.clone())
    };
    assert_eq!(status(&ok).as_deref(), Some("0"));
    assert_eq!(internal.messages.len(), 1);
    assert_eq!(status(&internal).as_deref(), Some("13"));
    assert_eq!(unavailable.header_status.as_deref(), Some("14"));
    let spans = s.sink.wait_spans(3, WAIT);
    assert_eq!(spans.len(), 3);
    let hello = "pkg.v1.Greeter/SayHello";
    for (n, error, st) in [
        (1, false, "OK"),
        (2, true, "INTERNAL"),
        (3, true, "UNAVAILABLE"),
    ] {
        let sp = find(&spans, n);
        check(
            sp,
            &Want {
                name: hello,
                kind: SpanKind::Server,
                error,
                method: hello,
                status: st,
            },
        );
        assert_eq!(
            str_attr(sp, "network.protocol.version").as_deref(),
            Some("1.1")
        );
    }
    // Each status was read before grpc_web moved it: none had to be inferred.
    assert_eq!(s.envoy.wait_stat("meshtrace.grpc.calls", 3, WAIT), 3);
    assert_eq!(s.envoy.stat("meshtrace.grpc.status_missing"), 0);
}

#[test]
fn always_keep_error_keeps_failed_calls_by_the_span_rule() {
    let cfg = config(r#","sampling":{"ratio":0.0,"always_keep":["error"]}"#);
    let s = stack(&cfg, "INBOUND");
    let port = s.envoy.vars.listen_port;
    // No incoming context: the root sampler (ratio 0) says no to every call.
    let seen: Vec<_> = [
        (SAY_HELLO, "ok"),
        (SAY_HELLO, "internal"),
        (SAY_HELLO, "not_found"),
        ("/pkg.v1.Gone/Hello", "ok"),
    ]
    .into_iter()
    .map(|(path, name)| call(port, path, name, &[]).code())
    .collect();
    assert_eq!(
        seen,
        [
            tonic::Code::Ok,
            tonic::Code::Internal,
            tonic::Code::NotFound,
            tonic::Code::Unavailable
        ]
    );
    let web = call_web(port, "internal", &[]).unwrap();
    assert_eq!(web.http_status, 200);
    // INTERNAL (HTTP 200, status in trailers), Envoy's UNAVAILABLE, and the gRPC-Web INTERNAL
    // are server errors; OK and NOT_FOUND are not.
    assert_eq!(s.envoy.wait_stat("meshtrace.spans_exported", 3, WAIT), 3);
    let spans = s.sink.wait_spans(3, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let spans = if spans.len() == 3 {
        s.sink.spans()
    } else {
        spans
    };
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let mut statuses: Vec<_> = spans
        .iter()
        .map(|sp| {
            assert_eq!(
                str_attr(sp, "mesh.sampling.kept_by").as_deref(),
                Some("error")
            );
            assert_eq!(
                sp.status.clone().unwrap_or_default().code,
                StatusCode::Error as i32
            );
            // Kept spans keep the unsampled flag the trace carried downstream.
            assert_eq!(sp.flags & 0x1, 0);
            (
                sp.name.clone(),
                str_attr(sp, "rpc.response.status_code").unwrap_or_default(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            // Envoy's local reply shows no method exists: named after the system.
            ("grpc".to_string(), "UNAVAILABLE".to_string()),
            (
                "pkg.v1.Greeter/SayHello".to_string(),
                "INTERNAL".to_string()
            ),
            (
                "pkg.v1.Greeter/SayHello".to_string(),
                "INTERNAL".to_string()
            ),
        ]
    );
    assert_eq!(s.envoy.stat("meshtrace.spans_started"), 5);
    assert_eq!(s.envoy.stat("meshtrace.spans_sampled"), 0);
    assert_eq!(s.envoy.stat("meshtrace.spans_kept"), 3);
    assert_eq!(s.envoy.stat("meshtrace.spans_exported"), 3);
    assert_eq!(s.envoy.stat("meshtrace.grpc.calls"), 3);
}

/// Why meshtrace reads `grpc-status` itself: what Envoy's `response.grpc_status` attribute (the
/// property a Wasm filter could read in `on_log`) says for each kind of answer, next to what
/// was actually sent. It is right for gRPC over HTTP/2, but a gRPC-Web call reads `UNKNOWN` (2)
/// whatever its status, because `grpc_web` has emptied the trailers, and a plain HTTP 200 reads
/// 2 as well: it never means "not gRPC".
#[test]
fn envoys_grpc_status_attribute_guesses_where_meshtrace_reads() {
    let s = stack(&config(""), "INBOUND");
    let port = s.envoy.vars.listen_port;
    assert_eq!(call(port, SAY_HELLO, "ok", &[]).code(), tonic::Code::Ok);
    assert_eq!(
        call(port, SAY_HELLO, "internal", &[]).code(),
        tonic::Code::Internal
    );
    let web_ok = call_web(port, "ok", &[]).unwrap();
    let web_internal = call_web(port, "internal", &[]).unwrap();
    assert_eq!(
        web_ok.trailers,
        [("grpc-status".to_string(), "0".to_string())]
    );
    assert_eq!(
        web_internal.trailers[0],
        ("grpc-status".to_string(), "13".to_string())
    );
    let plain = s.envoy.request("GET", PLAIN, &[]).unwrap();
    assert_eq!((plain.status, plain.body.as_str()), (200, "ok"));
    let spans = s.sink.wait_spans(5, WAIT);
    assert_eq!(spans.len(), 5);
    // meshtrace's view: the status sent, for gRPC and gRPC-Web alike; nothing for plain HTTP.
    let mut ours: Vec<_> = spans
        .iter()
        .map(|sp| str_attr(sp, "rpc.response.status_code").unwrap_or_else(|| "-".into()))
        .collect();
    ours.sort();
    assert_eq!(ours, ["-", "INTERNAL", "INTERNAL", "OK", "OK"]);
    // Envoy's view, from its access log (written when each stream ends, as `on_log` runs).
    let deadline = std::time::Instant::now() + WAIT;
    let lines = loop {
        let text = std::fs::read_to_string(&s.access_log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= 5 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        lines,
        [
            "/pkg.v1.Greeter/SayHello 200 response.grpc_status=0",
            "/pkg.v1.Greeter/SayHello 200 response.grpc_status=13",
            "/pkg.v1.Greeter/SayHello 200 response.grpc_status=2",
            "/pkg.v1.Greeter/SayHello 200 response.grpc_status=2",
            "/healthz 200 response.grpc_status=2",
        ]
    );
}
