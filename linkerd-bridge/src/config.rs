//! The bridge's configuration: the filter's JSON format, plus the keys only a native process
//! needs. Bridge-only keys are validated and removed here, and the rest goes to
//! [`meshtrace::config::Config::from_json`] unchanged, so both deployments share one format.
//!
//! Bridge-only keys:
//! - `collector.endpoint` (required): `http://host:4318/v1/traces` or `grpc://host:4317`; a
//!   `grpc://` URL sets the core's `collector.protocol` to `grpc` unless it is given.
//! - `bridge.upstream_timeout_ms`: how long the application may take to answer (default 15000).
//! - `bridge.relay_max_bytes`: bound on relayed OTLP waiting for export (default 4 MiB).
//!
//! `collector.cluster` is an Envoy notion; when absent it is filled with the endpoint's
//! authority, which the core then uses as the default `:authority`.

use std::time::Duration;

use meshtrace::config::section::shape;
use meshtrace::config::Compiled;
use meshtrace::correlation::FilterStateMode;
use meshtrace::error::ConfigError;
use meshtrace::export::config::Protocol;
use serde_json::{Map, Value};

/// Where the collector is. Protocol, compression, headers, timeout and the retry rules are
/// the core's `collector` and `exporter` keys, read by the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// OTLP/HTTP or OTLP/gRPC.
    pub protocol: Protocol,
    /// `host:port`.
    pub authority: String,
    /// The request path for OTLP/HTTP (`/v1/traces` when the URL has none).
    pub path: String,
    /// How long one export request may take.
    pub timeout: Duration,
}

impl Endpoint {
    /// The URL a client connects to.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// Everything the bridge runs with.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// The shared core configuration.
    pub core: Compiled,
    /// Where the collector is.
    pub endpoint: Endpoint,
    /// How long the application may take to answer.
    pub upstream_timeout: Duration,
    /// Bound on relayed OTLP waiting for export, in bytes.
    pub relay_max_bytes: usize,
}

const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 15_000;
const DEFAULT_RELAY_MAX_BYTES: u64 = 4 << 20;

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl BridgeConfig {
    /// Parses the JSON configuration; errors name the dotted field and the offending value.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut root: Value =
            serde_json::from_slice(bytes).map_err(|e| err("", format!("invalid JSON: {e}")))?;
        let Some(obj) = root.as_object_mut() else {
            return Err(err("", format!("must be an object, got {}", shape(&root))));
        };
        let bridge = match obj.remove("bridge") {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(err(
                    "bridge",
                    format!("must be an object, got {}", shape(&other)),
                ))
            }
        };
        let (upstream_timeout, relay_max_bytes) = bridge_section(bridge)?;
        let collector = match obj.get_mut("collector") {
            Some(Value::Object(c)) => c,
            // Refused here, not by the core: the bridge's keys are taken out of an object first.
            Some(other) => {
                return Err(err(
                    "collector",
                    format!("must be an object, got {}", shape(other)),
                ))
            }
            None => return Err(err(
                "collector",
                "missing; the smallest bridge config is {\"collector\": {\"endpoint\": \"http://otel-collector:4318/v1/traces\"}}",
            )),
        };
        let mut endpoint = collector_section(collector)?;
        let core = meshtrace::config::load(root.to_string().as_bytes())?;
        if core.config.access_log.filter_state != FilterStateMode::Off {
            return Err(err(
                "access_log.filter_state",
                "must be \"off\" in linkerd-bridge: it writes Envoy filter state, which the Linkerd proxy's access log cannot read",
            ));
        }
        if core.config.metrics.enabled {
            // The core counts and encodes them, but the bridge has no metrics export yet:
            // refusing beats a silent absence of the metrics a user turned on.
            return Err(err(
                "metrics.enabled",
                "must be false in linkerd-bridge: it exports spans only (RED metrics are exported by the Envoy filter)",
            ));
        }
        endpoint.timeout = Duration::from_millis(core.config.collector.timeout_ms);
        endpoint.protocol = core.config.collector.protocol;
        endpoint.path = core.config.collector.path.clone();
        Ok(Self {
            core,
            endpoint,
            upstream_timeout,
            relay_max_bytes,
        })
    }
}

/// Reads a positive integer key, or its default when absent.
fn positive(
    m: &mut Map<String, Value>,
    section: &str,
    key: &str,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match m.remove(key) {
        None => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(err(
                &format!("{section}.{key}"),
                format!("must be an integer between 1 and {max}, got {v}"),
            )),
        },
    }
}

fn bridge_section(mut m: Map<String, Value>) -> Result<(Duration, usize), ConfigError> {
    let timeout = positive(
        &mut m,
        "bridge",
        "upstream_timeout_ms",
        DEFAULT_UPSTREAM_TIMEOUT_MS,
        3_600_000,
    )?;
    let relay = positive(
        &mut m,
        "bridge",
        "relay_max_bytes",
        DEFAULT_RELAY_MAX_BYTES,
        1 << 30,
    )?;
    if let Some(k) = m.keys().next() {
        return Err(err(
            &format!("bridge.{k}"),
            "unknown field, expected one of `upstream_timeout_ms`, `relay_max_bytes`",
        ));
    }
    Ok((Duration::from_millis(timeout), relay as usize))
}

/// Takes the bridge-only collector keys out of `c` and fills `cluster` for the core.
fn collector_section(c: &mut Map<String, Value>) -> Result<Endpoint, ConfigError> {
    let url =
        match c.remove("endpoint") {
            Some(Value::String(s)) => s,
            None => return Err(err(
                "collector.endpoint",
                "missing; the bridge needs a URL such as \"http://otel-collector:4318/v1/traces\"",
            )),
            Some(other) => {
                return Err(err(
                    "collector.endpoint",
                    format!("must be a URL string, got {other}"),
                ))
            }
        };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        err(
            "collector.endpoint",
            format!("must be an http:// or grpc:// URL, got {url:?}"),
        )
    })?;
    let scheme_protocol = match scheme {
        "http" => Protocol::Http,
        "grpc" => Protocol::Grpc,
        _ => {
            return Err(err(
                "collector.endpoint",
                format!("scheme {scheme:?} is not supported (use http:// or grpc://; in a Linkerd pod the proxy provides mTLS), got {url:?}"),
            ))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty()
        || authority.contains('@')
        || authority.parse::<http::uri::Authority>().is_err()
    {
        return Err(err(
            "collector.endpoint",
            format!("must name a host (and port), got {url:?}"),
        ));
    }
    // Early bridge configs had their own attempt count; the core's retry rules own it now.
    if let Some(v) = c.get("max_attempts") {
        return Err(err(
            "collector.max_attempts",
            format!("is now exporter.retry.max_attempts (the filter's key), got {v}"),
        ));
    }
    if scheme_protocol == Protocol::Grpc {
        c.entry("protocol")
            .or_insert_with(|| Value::String("grpc".into()));
    }
    let path = if path.is_empty() || path == "/" {
        // A bare host means the standard path, the way SDKs treat a base endpoint.
        "/v1/traces".to_string()
    } else {
        path.to_string()
    };
    c.entry("cluster")
        .or_insert_with(|| Value::String(authority.to_string()));
    c.entry("path")
        .or_insert_with(|| Value::String(path.clone()));
    Ok(Endpoint {
        protocol: scheme_protocol,
        authority: authority.to_string(),
        path,
        timeout: Duration::from_millis(5000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(json: &str) -> String {
        BridgeConfig::from_json(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    /// Every section, the bridge's own and the core's, refuses an array (which serde's derive
    /// would read by position) with the same message as the filter.
    #[test]
    fn sections_must_be_objects() {
        let endpoint = r#""collector":{"endpoint":"http://otel:4318"}"#;
        let with = |s: &str| format!("{{{endpoint},{s}}}");
        let sections = [
            ("collector", r#"{"collector":{}}"#.to_string()),
            ("bridge", with(r#""bridge":{}"#)),
            ("batch", with(r#""batch":{}"#)),
            ("exporter", with(r#""exporter":{}"#)),
            ("exporter.retry", with(r#""exporter":{"retry":{}}"#)),
            ("propagators", with(r#""propagators":{}"#)),
            ("baggage", with(r#""baggage":{}"#)),
            ("sampling", with(r#""sampling":{}"#)),
            ("traffic", with(r#""traffic":{}"#)),
            ("traffic.rules[0]", with(r#""traffic":{"rules":[{}]}"#)),
            ("capture", with(r#""capture":{}"#)),
            ("limits", with(r#""limits":{}"#)),
            ("access_log", with(r#""access_log":{}"#)),
            ("response", with(r#""response":{}"#)),
            ("faas", with(r#""faas":{}"#)),
            ("faas.lambda[0]", with(r#""faas":{"lambda":[{}]}"#)),
            ("faas.upstreams[0]", with(r#""faas":{"upstreams":[{}]}"#)),
            ("metrics", with(r#""metrics":{}"#)),
        ];
        for (field, template) in &sections {
            for (value, shape) in [(r#"["x"]"#, "an array"), ("[true]", "an array"), ("5", "5")] {
                assert_eq!(
                    bad(&template.replacen("{}", value, 1)),
                    format!("{field}: must be an object, got {shape}"),
                    "{template} with {value}"
                );
            }
        }
    }

    #[test]
    fn http_endpoint_with_defaults() {
        let c = BridgeConfig::from_json(
            br#"{"collector":{"endpoint":"http://otel-collector:4318/v1/traces"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint {
                protocol: Protocol::Http,
                authority: "otel-collector:4318".into(),
                path: "/v1/traces".into(),
                timeout: Duration::from_millis(5000),
            }
        );
        assert_eq!(c.core.config.collector.cluster, "otel-collector:4318");
        assert_eq!(c.core.config.collector.authority(), "otel-collector:4318");
        assert_eq!(c.core.config.collector.protocol, Protocol::Http);
        assert_eq!(c.core.config.exporter.retry.max_attempts, 5);
        assert_eq!(c.upstream_timeout, Duration::from_millis(15_000));
        assert_eq!(c.relay_max_bytes, 4 << 20);
    }

    #[test]
    fn grpc_endpoint_and_bridge_section() {
        let c = BridgeConfig::from_json(
            br#"{"service_name":"web","collector":{"endpoint":"grpc://otel:4317","compression":"gzip","timeout_ms":800},
                 "exporter":{"retry":{"max_attempts":2}},
                 "batch":{"max_batch":10,"max_queue":100},"bridge":{"upstream_timeout_ms":250}}"#,
        )
        .unwrap();
        assert_eq!(c.endpoint.protocol, Protocol::Grpc);
        assert_eq!(c.endpoint.authority, "otel:4317");
        assert_eq!(c.core.config.collector.protocol, Protocol::Grpc);
        assert_eq!(
            c.core.config.collector.compression,
            meshtrace::export::config::Compression::Gzip
        );
        assert_eq!(c.core.config.exporter.retry.max_attempts, 2);
        assert_eq!(c.endpoint.timeout, Duration::from_millis(800));
        assert_eq!(c.upstream_timeout, Duration::from_millis(250));
        assert_eq!(c.core.config.batch.max_batch, 10);
        assert_eq!(c.core.config.service_name(), "web");
        let c = BridgeConfig::from_json(
            br#"{"collector":{"endpoint":"http://otel:4317","protocol":"grpc"}}"#,
        )
        .unwrap();
        assert_eq!(c.endpoint.protocol, Protocol::Grpc);
        let c =
            BridgeConfig::from_json(br#"{"collector":{"endpoint":"http://otel:4318"}}"#).unwrap();
        assert_eq!(c.endpoint.url(), "http://otel:4318/v1/traces");
    }

    #[test]
    fn red_metrics_are_refused() {
        let base = r#""collector":{"endpoint":"http://otel:4318"}"#;
        assert_eq!(
            bad(&format!(r#"{{{base},"metrics":{{"enabled":true}}}}"#)),
            "metrics.enabled: must be false in linkerd-bridge: it exports spans only (RED metrics are exported by the Envoy filter)"
        );
        assert!(BridgeConfig::from_json(
            format!(r#"{{{base},"metrics":{{"enabled":false}}}}"#).as_bytes()
        )
        .is_ok());
    }

    #[test]
    fn access_log_ids_are_refused_and_server_timing_accepted() {
        let base = r#""collector":{"endpoint":"http://otel:4318"}"#;
        assert_eq!(
            bad(&format!(r#"{{{base},"access_log":{{"filter_state":"recorded"}}}}"#)),
            "access_log.filter_state: must be \"off\" in linkerd-bridge: it writes Envoy filter state, which the Linkerd proxy's access log cannot read"
        );
        let c = BridgeConfig::from_json(
            format!(r#"{{{base},"response":{{"server_timing":"w3c"}}}}"#).as_bytes(),
        )
        .unwrap();
        assert!(c.core.correlation.server_timing.is_some());
    }

    #[test]
    fn errors_name_field_and_value() {
        assert_eq!(
            bad(r#"{"collector":{"cluster":"c"}}"#),
            "collector.endpoint: missing; the bridge needs a URL such as \"http://otel-collector:4318/v1/traces\""
        );
        assert_eq!(
            bad(r#"{"collector":{"endpoint":"otel:4318"}}"#),
            "collector.endpoint: must be an http:// or grpc:// URL, got \"otel:4318\""
        );
        assert!(bad(r#"{"collector":{"endpoint":"https://otel:4318"}}"#)
            .starts_with("collector.endpoint: scheme \"https\" is not supported"));
        assert_eq!(
            bad(r#"{"collector":{"endpoint":"http://otel:4318","protocol":"udp"}}"#),
            "collector.protocol: unknown variant `udp`, expected `http` or `grpc`"
        );
        assert_eq!(
            bad(r#"{"collector":{"endpoint":"http://otel:4318","compression":"br"}}"#),
            "collector.compression: unknown variant `br`, expected `none` or `gzip`"
        );
        assert_eq!(
            bad(
                r#"{"collector":{"endpoint":"http://otel:4318"},"bridge":{"upstream_timeout_ms":0}}"#
            ),
            "bridge.upstream_timeout_ms: must be an integer between 1 and 3600000, got 0"
        );
        assert_eq!(
            bad(r#"{"collector":{"endpoint":"http://otel:4318"},"bridge":{"upstream_timeout":5}}"#),
            "bridge.upstream_timeout: unknown field, expected one of `upstream_timeout_ms`, `relay_max_bytes`"
        );
        // Core keys are still validated by the core.
        assert_eq!(
            bad(r#"{"collector":{"endpoint":"http://otel:4318"},"batch":{"max_queue":0}}"#),
            "batch.max_queue: must be at least 1, got 0"
        );
        assert_eq!(bad(r#"[1]"#), "must be an object, got an array");
        // The export keys are the core's now; its errors name them too.
        assert_eq!(
            bad(r#"{"collector":{"endpoint":"http://otel:4318","max_attempts":3}}"#),
            "collector.max_attempts: is now exporter.retry.max_attempts (the filter's key), got 3"
        );
        assert_eq!(
            bad(
                r#"{"collector":{"endpoint":"http://otel:4318"},"exporter":{"retry":{"max_attempts":0}}}"#
            ),
            "exporter.retry.max_attempts: must be between 1 and 100, got 0"
        );
        assert_eq!(
            bad(r#"{"collector":{"endpoint":"http://otel:4318"},"exporter":{"max_in_flight":0}}"#),
            "exporter.max_in_flight: must be between 1 and 64, got 0"
        );
    }
}
