//! What the end-to-end tests share: reading exported spans' attributes, hex, Envoy's log. One copy, so a
//! helper fixed here is fixed for every test file (each includes it with `mod support;`).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use meshtrace_host_test::envoy::Envoy;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value of attribute `key` among `attrs`.
pub fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

/// The value of the span's attribute `key`.
pub fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    find(&s.attributes, key)
}

/// An integer attribute value, to compare with [`attr`] (leaked: tests only).
pub fn int(v: i64) -> Option<&'static Value> {
    Some(Box::leak(Box::new(Value::IntValue(v))))
}

/// A boolean attribute value, to compare with [`attr`] (leaked: tests only).
pub fn boolean(v: bool) -> Option<&'static Value> {
    Some(Box::leak(Box::new(Value::BoolValue(v))))
}

/// The span's `envoy.response_flags` (a string array); panics when it is missing or not one.
pub fn response_flags(s: &Span) -> Vec<String> {
    match attr(s, "envoy.response_flags") {
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| match &v.value {
                Some(Value::StringValue(s)) => s.clone(),
                other => panic!("flag {other:?}"),
            })
            .collect(),
        other => panic!("envoy.response_flags: {other:?}"),
    }
}

/// The span's string attribute `key`, if it is one.
pub fn str_attr_opt(s: &Span, key: &str) -> Option<String> {
    match attr(s, key) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

/// The span's string attribute `key`; panics, naming the span, when it is absent or not a string.
pub fn str_attr(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(Value::StringValue(v)) => v.clone(),
        other => panic!("{key}: expected a string, got {other:?} in {s:?}"),
    }
}

/// Polls Envoy's log for `needle` until `within` has passed (failure summaries come once per
/// 5 s); panics with the log when it never shows up.
pub fn wait_log(e: &Envoy, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !e.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "log never contained {needle:?}:\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A test CA with a server and a client certificate, each holding a SPIFFE URI SAN (and
/// `localhost` as DNS SAN), written as PEM files (`ca.crt`, `server.crt`/`.key`,
/// `client.crt`/`.key`) into a fresh directory removed on drop (with the CA).
pub struct Certs {
    /// The directory holding the files.
    pub dir: std::path::PathBuf,
    _ca: meshtrace_host_test::certs::MeshCa,
}

impl Certs {
    /// `server` and `client` are (common name, URI SAN); subjects are
    /// `O=cluster.local,CN=<common name>`, as Istio's certificates name the trust domain.
    pub fn new(tag: &str, server: (&str, &str), client: (&str, &str)) -> Self {
        let ca = meshtrace_host_test::certs::MeshCa::new(tag).expect("test CA");
        ca.issue("server", server.0, server.1)
            .expect("server certificate");
        ca.issue("client", client.0, client.1)
            .expect("client certificate");
        Self {
            dir: ca.dir().to_path_buf(),
            _ca: ca,
        }
    }
}
