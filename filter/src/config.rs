//! The plugin configuration: JSON in, a validated [`Config`] out, errors that name the field.
//!
//! The smallest valid config is `{"collector": {"cluster": "otel_collector"}}`; everything else
//! has a default. Unknown keys are errors, because a misspelt key silently ignored is a
//! production incident waiting for a postmortem.

pub mod section;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::correlation::{AccessLogConfig, Correlation, ResponseConfig};
use crate::error::ConfigError;
use crate::export::config::{Batch, Collector, ExportConfig, ExporterConfig};
use crate::metrics::MetricsConfig;
use crate::propagation::config::{BaggageConfig, Propagation, Propagators};
use crate::resource::DEFAULT_SERVICE_NAME;
use crate::sampling::Sampler;
use crate::sampling::SamplingConfig;
use crate::span::capture::{Capture, CaptureConfig, Limits};
use crate::span::faas::upstream::Upstreams;
use crate::span::faas::{Faas, FaasConfig};
use crate::span::mesh::identity::IdentityMode;
use crate::span::mesh::route::Routes;
use crate::span::mesh::route::SpanNameStyle;
use crate::span::mesh::traffic::{Traffic, TrafficConfig};
use crate::span::Tables;

/// Which span kind the filter creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// SERVER spans (the filter sits on an inbound listener).
    Inbound,
    /// CLIENT spans (the filter sits on an outbound listener).
    Outbound,
    /// Read Envoy's `xds.listener_direction`; SERVER when it is unknown.
    #[default]
    Auto,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Config {
    /// The resource's `service.name`; from node metadata when absent.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Which span kind the filter creates.
    #[serde(default)]
    pub direction: Direction,
    /// Where spans are exported (`collector`).
    pub collector: Collector,
    /// Queue and batch bounds (`batch`).
    #[serde(default)]
    pub batch: Batch,
    /// Deployment shape, concurrency and retries (`exporter`).
    #[serde(default)]
    pub exporter: ExporterConfig,
    /// Which trace-context formats are read and written (`propagators`).
    #[serde(default)]
    pub propagators: Propagators,
    /// Which baggage keys become attributes (`baggage`).
    #[serde(default)]
    pub baggage: BaggageConfig,

    // Mesh semantics, sampling and privacy: each section is owned by its module and compiled
    // by `Config::compile`.
    /// Root sampler, rate limit and always-keep rules.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Canary / A/B rules and subset weights.
    #[serde(default)]
    pub traffic: TrafficConfig,
    /// Route templates for `http.route`, tried in order (`/api/users/{id}`).
    #[serde(default)]
    pub routes: Vec<String>,
    /// `semconv` (`GET /users/{id}`), `legacy` (`HTTP GET /users/{id}`) or `strict`
    /// (`{method} {route}` for configured `routes` only, else `{method}`); see
    /// [`crate::span::name`].
    #[serde(default)]
    pub span_name: SpanNameStyle,
    /// Header capture allowlists, redaction, `url.query`.
    #[serde(default)]
    pub capture: CaptureConfig,
    /// Attribute size and count caps, span-name length and cardinality caps.
    #[serde(default)]
    pub limits: Limits,
    /// When to read the peer's mTLS identity.
    #[serde(default)]
    pub identity: IdentityMode,
    /// Resource attributes that override what the node metadata says.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// Read `xds.route_metadata` for the Istio VirtualService that routed the request. Off by
    /// default: it is one more host call (~1.4 µs) per recorded span for a name that the route
    /// name and the cluster usually already give.
    #[serde(default)]
    pub route_metadata: bool,
    /// Trace ids written to Envoy filter state for access logs (`access_log`).
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Trace context returned to the client in `server-timing` (`response`).
    #[serde(default)]
    pub response: ResponseConfig,
    /// The function this sidecar fronts (`faas`); its presence makes the workload a
    /// function unless it only lists Lambda upstreams (`faas.lambda*`). See
    /// [`crate::span::faas`].
    #[serde(default)]
    pub faas: Option<FaasConfig>,
    /// RED metrics from every request, exported as OTLP metrics (`metrics`, off by default);
    /// see [`crate::metrics`].
    #[serde(default)]
    pub metrics: MetricsConfig,
}
crate::config::section::object_section!(Config);

/// The configuration with every component's compiled form, built once per VM by [`load`]:
/// nothing later re-validates it or falls back to a default.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The configuration as written, for the settings used as they are.
    pub config: Config,
    /// `propagators`: extraction order, inject formats, trust.
    pub propagation: Propagation,
    /// `sampling`: the sampler with its rate limit and always-keep rules.
    pub sampler: Sampler,
    /// `traffic`, `routes`, `capture`, `limits`, `identity`, `baggage`.
    pub span: Tables,
    /// `access_log`, `response`: what is written for access logs and clients.
    pub correlation: Correlation,
}

/// Parses, validates and compiles the plugin configuration bytes (JSON).
///
/// # Errors
/// A [`ConfigError`] naming the first invalid field and its value.
pub fn load(bytes: &[u8]) -> Result<Compiled, ConfigError> {
    Config::parse(bytes)?.compile()
}

/// serde's message without its "at line 1 column 40": noise once the field is named.
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The RFC 6901 JSON pointer of a field path, to find its value in the parsed document.
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&key.replace('~', "~0").replace('/', "~1"))
            }
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// The message for a value of the wrong type where one of a set of names is expected, naming
/// the names and the value: `expected one of `semconv`, `legacy`, `strict`, got 1`. The names
/// come from deserializing the document again with a string no variant has in that place,
/// whose error lists them.
fn wrong_enum_value(mut doc: serde_json::Value, pointer: &str) -> String {
    let Some(slot) = doc.pointer_mut(pointer) else {
        return "invalid value".to_string();
    };
    let got = slot.to_string();
    *slot = serde_json::Value::String(String::new());
    // Deserialized from bytes again, not from the `Value`: a second instantiation of the whole
    // config's deserializer (for `Value`) would add about 165 KB to the wasm module.
    let Ok(bytes) = serde_json::to_vec(&doc) else {
        return format!("invalid value {got}");
    };
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let expected = match serde_path_to_error::deserialize::<_, Config>(de) {
        Err(e) => {
            let s = without_position(e.inner());
            s.find("expected").map(|i| s[i..].to_string())
        }
        Ok(_) => None,
    };
    match expected {
        Some(expected) => format!("{expected}, got {got}"),
        None => format!("invalid value {got}"),
    }
}

impl Config {
    /// Parses and validates the plugin configuration bytes (JSON), keeping only the
    /// configuration as written (tools that check a config; the filter uses [`load`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field and its value.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        load(bytes).map(|c| c.config)
    }

    /// Validates and compiles every component.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field and its value.
    pub fn compile(self) -> Result<Compiled, ConfigError> {
        self.validate()?;
        let propagation = self.propagators.compile()?;
        self.baggage.validate()?;
        self.sampling.validate()?;
        self.limits.validate()?;
        self.metrics.validate()?;
        let span = Tables {
            traffic: Traffic::compile(&self.traffic)?,
            routes: Routes::compile(&self.routes)?,
            capture: Capture::compile(&self.capture)?,
            identity: self.identity,
            limits: self.limits.clone(),
            baggage_keys: self.baggage.attribute_keys.clone(),
            faas: Faas::compile(self.faas.as_ref())?,
            lambda: match &self.faas {
                Some(f) => crate::span::faas::lambda::Lambda::compile(
                    &f.lambda,
                    f.lambda_log_tail,
                    f.lambda_price_per_gb_second,
                )?,
                None => Default::default(),
            },
            faas_upstreams: Upstreams::compile(
                self.faas.as_ref().map_or(&[][..], |f| &f.upstreams[..]),
            )?,
        };
        self.validate_resource()?;
        let correlation = Correlation::compile(
            &self.access_log,
            &self.response,
            self.propagators.trust_incoming,
        )?;
        Ok(Compiled {
            sampler: Sampler::new(&self.sampling),
            correlation,
            propagation,
            span,
            config: self,
        })
    }

    fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new(
                "",
                "configuration is empty; the smallest valid one is {\"collector\": {\"cluster\": \"otel_collector\"}}",
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let pointer = json_pointer(e.path());
            let inner = e.into_inner();
            let message = if inner.is_syntax() || inner.is_eof() {
                // serde_json reports a non-string where an enum is expected (`"span_name": 1`)
                // as a syntax error; the text is valid JSON then, and the value is wrong.
                match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(doc) => wrong_enum_value(doc, &pointer),
                    Err(_) => format!("invalid JSON: {inner}"),
                }
            } else {
                without_position(&inner)
            };
            ConfigError::new(&field, message)
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.export().validate_collector()?;
        if let Some(s) = &self.service_name {
            if s.trim().is_empty() {
                return Err(ConfigError::new(
                    "service_name",
                    "must be a non-empty string when set",
                ));
            }
        }
        self.export().validate_batch()?;
        Ok(())
    }

    /// The export sections (`collector`, `batch`, `exporter`), borrowed together.
    pub fn export(&self) -> ExportConfig<'_> {
        ExportConfig {
            collector: &self.collector,
            batch: &self.batch,
            exporter: &self.exporter,
        }
    }

    /// The resource's `service.name`.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or(DEFAULT_SERVICE_NAME)
    }
}

impl Config {
    fn validate_resource(&self) -> Result<(), ConfigError> {
        for (k, v) in &self.resource {
            if k.trim().is_empty() {
                return Err(ConfigError::new(
                    "resource",
                    "attribute names must be non-empty",
                ));
            }
            if k.len() > crate::limits::MAX_CONFIGURED_KEY_BYTES {
                return Err(ConfigError::new(
                    "resource",
                    format!(
                        "attribute names must be at most {} bytes, got {k:?}",
                        crate::limits::MAX_CONFIGURED_KEY_BYTES
                    ),
                ));
            }
            if v.is_empty() {
                return Err(ConfigError::new(
                    &format!("resource.{k}"),
                    "must be a non-empty string",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::config::{Compression, ExportMode, Protocol, Retry};
    use crate::propagation::config::resolve_formats;
    use crate::propagation::Propagator;

    fn bad(json: &str) -> String {
        Config::from_json(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn smallest_and_typical() {
        let c = Config::from_json(br#"{"collector": {"cluster": "otel_collector"}}"#).unwrap();
        assert_eq!(c.collector.authority(), "otel_collector");
        assert_eq!(c.collector.path, "/v1/traces");
        assert_eq!(c.collector.timeout_ms, 5000);
        assert_eq!(c.batch, Batch::default());
        assert_eq!(c.direction, Direction::Auto);
        assert_eq!(c.service_name(), "unknown_service:envoy");
        let c = Config::from_json(br#"{"service_name":"checkout","direction":"outbound","collector":{"cluster":"c","authority":"otel:4318"}}"#).unwrap();
        assert_eq!(c.service_name(), "checkout");
        assert_eq!(c.direction, Direction::Outbound);
        assert_eq!(c.collector.authority(), "otel:4318");
    }

    #[test]
    fn export_keys_and_defaults() {
        let c = Config::from_json(br#"{"collector": {"cluster": "c"}}"#).unwrap();
        assert_eq!(c.collector.protocol, Protocol::Http);
        assert_eq!(c.collector.compression, Compression::None);
        assert!(c.collector.headers.is_empty());
        assert_eq!(c.batch.max_queue_bytes, 8 << 20);
        assert_eq!(c.exporter, ExporterConfig::default());
        assert_eq!(c.exporter.mode, ExportMode::PerWorker);
        assert_eq!(c.exporter.singleton_vm_id, "meshtrace_exporter");
        assert_eq!(c.exporter.max_in_flight, 2);
        assert_eq!(
            c.exporter.retry,
            Retry {
                initial_ms: 500,
                max_ms: 30_000,
                max_attempts: 5
            }
        );
        let c = Config::from_json(
            br#"{"collector": {"cluster": "c", "protocol": "grpc", "compression": "gzip",
                 "headers": {"x-api-key": "k"}},
                 "batch": {"max_queue_bytes": 4096},
                 "exporter": {"mode": "shared_queue", "singleton_vm_id": "exp", "max_in_flight": 4,
                              "retry": {"initial_ms": 10, "max_ms": 20, "max_attempts": 1}}}"#,
        )
        .unwrap();
        assert_eq!(c.collector.protocol, Protocol::Grpc);
        assert_eq!(c.collector.compression, Compression::Gzip);
        assert_eq!(c.collector.headers["x-api-key"], "k");
        assert_eq!(c.exporter.mode, ExportMode::SharedQueue);
        assert_eq!(c.exporter.max_in_flight, 4);
    }

    #[test]
    fn export_errors_name_the_field_and_hide_header_values() {
        let cfg = |s: &str| format!(r#"{{"collector": {{"cluster": "c"}}, {s}}}"#);
        assert!(bad(&cfg(r#""exporter": {"mode": "both"}"#))
            .starts_with("exporter.mode: unknown variant `both`"));
        assert_eq!(
            bad(&cfg(r#""exporter": {"max_in_flight": 0}"#)),
            "exporter.max_in_flight: must be between 1 and 64, got 0"
        );
        assert_eq!(
            bad(&cfg(r#""exporter": {"retry": {"initial_ms": 5000, "max_ms": 100}}"#)),
            "exporter.retry.initial_ms: must be between 1 and exporter.retry.max_ms (100), got 5000"
        );
        assert_eq!(
            bad(&cfg(r#""exporter": {"retry": {"max_attempts": 0}}"#)),
            "exporter.retry.max_attempts: must be between 1 and 100, got 0"
        );
        assert_eq!(
            bad(&cfg(r#""batch": {"max_queue_bytes": 10}"#)),
            "batch.max_queue_bytes: must be at least 1024, got 10"
        );
        assert!(
            bad(r#"{"collector": {"cluster": "c", "protocol": "thrift"}}"#)
                .starts_with("collector.protocol: unknown variant `thrift`")
        );
        let e = bad(r#"{"collector": {"cluster": "c", "headers": {"X-Key": "hunter2"}}}"#);
        assert_eq!(
            e,
            "collector.headers: header names must be lowercase token characters, got \"X-Key\""
        );
        assert!(!e.contains("hunter2"));
        let e = bad(r#"{"collector": {"cluster": "c", "headers": {"k": 5}}}"#);
        assert!(e.starts_with("collector.headers.k: invalid type"), "{e}");
    }

    /// Every struct the configuration reaches, given as an array (which serde's derive would
    /// read by position) or as another non-object value, is refused by name. `{}` in a
    /// template marks where the wrong value goes.
    #[test]
    fn sections_must_be_objects() {
        let with = |s: &str| format!(r#"{{"collector": {{"cluster": "c"}}, {s}}}"#);
        let sections = [
            ("collector", r#"{"collector": {}}"#.to_string()),
            ("batch", with(r#""batch": {}"#)),
            ("exporter", with(r#""exporter": {}"#)),
            ("exporter.retry", with(r#""exporter": {"retry": {}}"#)),
            ("propagators", with(r#""propagators": {}"#)),
            ("baggage", with(r#""baggage": {}"#)),
            ("sampling", with(r#""sampling": {}"#)),
            ("traffic", with(r#""traffic": {}"#)),
            ("traffic.rules[0]", with(r#""traffic": {"rules": [{}]}"#)),
            ("capture", with(r#""capture": {}"#)),
            ("limits", with(r#""limits": {}"#)),
            ("access_log", with(r#""access_log": {}"#)),
            ("response", with(r#""response": {}"#)),
            ("faas", with(r#""faas": {}"#)),
            ("faas.lambda[0]", with(r#""faas": {"lambda": [{}]}"#)),
            ("faas.upstreams[0]", with(r#""faas": {"upstreams": [{}]}"#)),
            (
                "faas.upstreams[0].match",
                with(r#""faas": {"upstreams": [{"provider": "gcp", "match": {}}]}"#),
            ),
            ("metrics", with(r#""metrics": {}"#)),
        ];
        for (field, template) in &sections {
            for (value, shape) in [
                (r#"["x"]"#, "an array"),
                ("[]", "an array"),
                ("[true]", "an array"),
                ("5", "5"),
                ("true", "true"),
                (r#""x""#, r#""x""#),
            ] {
                assert_eq!(
                    bad(&template.replacen("{}", value, 1)),
                    format!("{field}: must be an object, got {shape}"),
                    "{template} with {value}"
                );
            }
        }
        // The whole configuration too, and `null` where a section is not optional.
        assert_eq!(
            bad(r#"[{"cluster": "c"}]"#),
            "must be an object, got an array"
        );
        assert_eq!(
            bad(&with(r#""metrics": null"#)),
            "metrics: must be an object, got null"
        );
        // An optional section may still be null, and every section's object form still loads.
        assert!(Config::from_json(with(r#""faas": null"#).as_bytes())
            .unwrap()
            .faas
            .is_none());
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            bad(r#"{"collector": {"cluster": ""}}"#),
            "collector.cluster: must be a non-empty string"
        );
        assert_eq!(
            bad(r#"{"collector": {"cluster": 5}}"#),
            "collector.cluster: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            bad(r#"{}"#),
            ": missing field `collector`".trim_start_matches(": ")
        );
        assert!(bad(r#"{"collector": {"cluster": "c"}, "colector": 1}"#)
            .starts_with("colector: unknown field `colector`"));
        assert!(bad(r#"{"collector": {"cluster": "c", "port": 1}}"#)
            .starts_with("collector.port: unknown field `port`"));
        assert_eq!(
            bad(r#"{"collector": {"cluster": "c", "path": "v1"}}"#),
            "collector.path: must start with '/', got \"v1\""
        );
        assert_eq!(
            bad(r#"{"collector": {"cluster": "c", "path": "/v1/traces\r\nx-evil: 1"}}"#),
            "collector.path: must be visible ASCII (no space or control character), \
             got \"/v1/traces\\r\\nx-evil: 1\""
        );
        assert_eq!(
            bad(r#"{"collector": {"cluster": "c"}, "batch": {"max_queue": 0}}"#),
            "batch.max_queue: must be at least 1, got 0"
        );
        assert_eq!(
            bad(r#"{"collector": {"cluster": "c"}, "batch": {"max_queue": 10, "max_batch": 11}}"#),
            "batch.max_batch: must be between 1 and batch.max_queue (10), got 11"
        );
        assert!(
            bad(r#"{"collector": {"cluster": "c"}, "direction": "sideways"}"#)
                .starts_with("direction: unknown variant `sideways`")
        );
        assert!(bad("{").starts_with("invalid JSON"), "{}", bad("{"));
        // Valid JSON with a value of the wrong type for a named choice: the field, the
        // choices and the value, never "invalid JSON".
        let base = r#""collector": {"cluster": "c"}"#;
        for (extra, want) in [
            (
                r#""span_name": 1"#,
                "span_name: expected one of `semconv`, `legacy`, `strict`, got 1",
            ),
            (
                r#""direction": true"#,
                "direction: expected one of `inbound`, `outbound`, `auto`, got true",
            ),
            (
                r#""identity": null"#,
                "identity: expected one of `inbound`, `always`, `off`, got null",
            ),
            (
                r#""exporter": {"mode": ["singleton"]}"#,
                r#"exporter.mode: expected one of `per_worker`, `shared_queue`, `singleton`, got ["singleton"]"#,
            ),
            (
                r#""collector": {"cluster": "c", "compression": 9}"#,
                "collector.compression: expected `none` or `gzip`, got 9",
            ),
            (
                r#""sampling": {"always_keep": [1]}"#,
                "sampling.always_keep[0]: expected one of `error`, `fault`, `slow`, got 1",
            ),
        ] {
            let json = if extra.starts_with(r#""collector""#) {
                format!("{{{extra}}}")
            } else {
                format!("{{{base}, {extra}}}")
            };
            assert_eq!(bad(&json), want, "{json}");
        }
        assert!(bad("").starts_with("configuration is empty"));
    }

    #[test]
    fn propagator_defaults() {
        let c = Config::from_json(br#"{"collector": {"cluster": "c"}}"#).unwrap();
        assert_eq!(
            c.propagators.extract,
            [
                "tracecontext",
                "b3",
                "b3multi",
                "l5d",
                "xray",
                "gcp",
                "grpc-trace-bin"
            ]
        );
        assert_eq!(c.propagators.inject, ["tracecontext", "baggage"]);
        assert!(c.propagators.trust_incoming);
        assert!(!c.propagators.trust_l5d_sample);
        assert!(c.baggage.attribute_keys.is_empty());
        assert_eq!(
            resolve_formats("propagators.extract", &c.propagators.extract, true)
                .unwrap()
                .len(),
            7
        );
        assert_eq!(
            resolve_formats("propagators.inject", &c.propagators.inject, false)
                .unwrap()
                .as_slice(),
            &[Propagator::TraceContext, Propagator::Baggage]
        );
        let c = Config::from_json(
            br#"{"collector": {"cluster": "c"}, "propagators": {"extract": ["b3"], "trust_incoming": false}, "baggage": {"attribute_keys": ["tenant"]}}"#,
        )
        .unwrap();
        assert_eq!(
            resolve_formats("propagators.extract", &c.propagators.extract, true)
                .unwrap()
                .as_slice(),
            &[Propagator::B3]
        );
        assert_eq!(c.propagators.inject, ["tracecontext", "baggage"]);
        assert!(!c.propagators.trust_incoming);
        assert_eq!(c.baggage.attribute_keys, ["tenant"]);
    }

    #[test]
    fn propagator_errors_name_field_and_index() {
        let with = |p: &str| bad(&format!(r#"{{"collector": {{"cluster": "c"}}, {p}}}"#));
        assert_eq!(
            with(r#""propagators": {"extract": ["tracecontext", "b3", "b4"]}"#),
            "propagators.extract[2]: unknown format \"b4\"; expected one of tracecontext, b3, b3multi, l5d, xray, gcp, grpc-trace-bin"
        );
        assert_eq!(
            with(r#""propagators": {"extract": ["baggage"]}"#),
            "propagators.extract[0]: \"baggage\" carries no trace context to extract; expected one of tracecontext, b3, b3multi, l5d, xray, gcp, grpc-trace-bin"
        );
        assert_eq!(
            with(r#""propagators": {"inject": ["b3", "B3"]}"#),
            "propagators.inject[1]: unknown format \"B3\"; expected one of tracecontext, baggage, b3, b3multi, l5d, xray, gcp, grpc-trace-bin"
        );
        assert_eq!(
            with(r#""propagators": {"inject": ["b3", "xray", "b3"]}"#),
            "propagators.inject[2]: format \"b3\" is listed twice"
        );
        assert!(with(r#""propagators": {"trust": true}"#)
            .starts_with("propagators.trust: unknown field `trust`"));
        assert_eq!(
            with(r#""baggage": {"attribute_keys": ["ok", "not ok"]}"#),
            "baggage.attribute_keys[1]: \"not ok\" is not a valid baggage key (an HTTP token such as \"tenant_id\")"
        );
    }
}

/// The mesh, sampling and privacy sections.
#[cfg(test)]
mod mesh_config_tests {
    use super::*;
    use crate::sampling::KeepReason;
    use crate::span::mesh::identity::IdentityMode;
    use crate::span::mesh::route::SpanNameStyle;

    fn bad(json: &str) -> String {
        Config::from_json(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let c = Config::from_json(br#"{"collector": {"cluster": "c"}}"#).unwrap();
        assert_eq!(c.sampling.ratio, 1.0);
        assert_eq!(c.sampling.max_per_second, None);
        assert!(c.sampling.always_keep.is_empty());
        assert_eq!(c.sampling.slow_ms, 0);
        assert_eq!(c.limits.max_attribute_value_bytes, 256);
        assert_eq!(c.limits.max_attributes, 64);
        assert_eq!(c.limits.max_span_name_bytes, 256);
        assert_eq!(c.limits.max_span_names, 1000);
        assert!(!c.capture.query);
        assert!(c.capture.request_headers.is_empty());
        assert!(c.traffic.rules.is_empty());
        assert!(c.routes.is_empty());
        assert_eq!(c.span_name, SpanNameStyle::Semconv);
        assert_eq!(c.identity, IdentityMode::Inbound);
        assert!(c.resource.is_empty());
        assert!(!c.route_metadata);
    }

    #[test]
    fn a_full_sidecar_config() {
        let c = Config::from_json(
            br#"{
              "collector": {"cluster": "outbound|4318||otel-collector.observability.svc.cluster.local"},
              "sampling": {"ratio": 0.01, "max_per_second": 200, "always_keep": ["error", "fault", "slow"], "slow_ms": 1500},
              "traffic": {
                "rules": [
                  {"match": "subset", "value": "v2", "release": "canary", "canary": true},
                  {"match": "header", "name": "x-ab-group", "value": "b", "ab_group": "B"}
                ],
                "weights": {"v1": 90, "v2": 10}
              },
              "routes": ["/api/users/{id}"],
              "span_name": "legacy",
              "capture": {"request_headers": ["x-tenant"], "response_headers": ["x-cache"], "redact": ["x-api-key"], "query": true},
              "limits": {"max_attribute_value_bytes": 512, "max_attributes": 96},
              "identity": "always",
              "resource": {"deployment.environment.name": "prod"}
            }"#,
        )
        .unwrap();
        assert_eq!(c.sampling.ratio, 0.01);
        assert_eq!(c.sampling.max_per_second, Some(200.0));
        assert_eq!(
            c.sampling.always_keep,
            vec![KeepReason::Error, KeepReason::Fault, KeepReason::Slow]
        );
        assert_eq!(c.traffic.rules.len(), 2);
        assert_eq!(c.traffic.weights.get("v2"), Some(&10));
        assert_eq!(c.span_name, SpanNameStyle::Legacy);
        assert_eq!(c.identity, IdentityMode::Always);
        assert_eq!(c.limits.max_attributes, 96);
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let base = r#""collector": {"cluster": "c"}"#;
        assert_eq!(
            bad(&format!(
                r#"{{{base}, "traffic": {{"rules": [{{"match":"subset","value":"v1","release":"a"}}, {{"match":"path","value":"/x","release":"b"}}]}}}}"#
            )),
            "traffic.rules[1].match: expected one of subset, header, cookie, route, got \"path\""
        );
        assert!(bad(&format!(r#"{{{base}, "sampling": {{"ratoi": 1}}}}"#))
            .starts_with("sampling.ratoi: unknown field `ratoi`"));
        assert_eq!(
            bad(&format!(r#"{{{base}, "sampling": {{"ratio": 2}}}}"#)),
            "sampling.ratio: must be between 0 and 1, got 2"
        );
        assert!(
            bad(&format!(
                r#"{{{base}, "sampling": {{"always_keep": ["errors"]}}}}"#
            ))
            .starts_with("sampling.always_keep[0]: unknown variant `errors`"),
            "{}",
            bad(&format!(
                r#"{{{base}, "sampling": {{"always_keep": ["errors"]}}}}"#
            ))
        );
        assert_eq!(
            bad(&format!(r#"{{{base}, "routes": ["users/{{id}}"]}}"#)),
            "routes[0]: expected a path starting with '/', got \"users/{id}\""
        );
        assert_eq!(
            bad(&format!(
                r#"{{{base}, "capture": {{"request_headers": ["a b"]}}}}"#
            )),
            "capture.request_headers[0]: expected a header name, got \"a b\""
        );
        assert_eq!(
            bad(&format!(r#"{{{base}, "limits": {{"max_attributes": 1}}}}"#)),
            "limits.max_attributes: must be between 8 and 1024, got 1"
        );
        assert!(bad(&format!(r#"{{{base}, "span_name": "fancy"}}"#))
            .starts_with("span_name: unknown variant `fancy`"));
        assert_eq!(
            bad(&format!(
                r#"{{{base}, "limits": {{"max_span_name_bytes": 65537}}}}"#
            )),
            "limits.max_span_name_bytes: must be between 16 and 65536, got 65537"
        );
        assert_eq!(
            bad(&format!(r#"{{{base}, "limits": {{"max_span_names": 0}}}}"#)),
            "limits.max_span_names: must be between 1 and 100000, got 0"
        );
        let long = "k".repeat(129);
        assert_eq!(
            bad(&format!(r#"{{{base}, "resource": {{"{long}": "v"}}}}"#)),
            format!("resource: attribute names must be at most 128 bytes, got {long:?}")
        );
        assert_eq!(
            bad(&format!(
                r#"{{{base}, "baggage": {{"attribute_keys": ["{long}"]}}}}"#
            )),
            format!("baggage.attribute_keys[0]: {long:?} is not a valid baggage key (an HTTP token such as \"tenant_id\")")
        );
        let c = Config::from_json(
            format!(r#"{{{base}, "span_name": "strict", "limits": {{"max_span_name_bytes": 64, "max_span_names": 5}}}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.span_name, SpanNameStyle::Strict);
        assert_eq!(
            (c.limits.max_span_name_bytes, c.limits.max_span_names),
            (64, 5)
        );
        assert!(bad(&format!(r#"{{{base}, "identity": "sometimes"}}"#))
            .starts_with("identity: unknown variant `sometimes`"));
        assert_eq!(
            bad(&format!(
                r#"{{{base}, "resource": {{"service.name": ""}}}}"#
            )),
            "resource.service.name: must be a non-empty string"
        );
    }
}
