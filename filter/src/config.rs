//! The plugin configuration: JSON in, a validated [`Config`] out, errors that name the field.
//!
//! The smallest valid config is `{"collector": {"cluster": "otel_collector"}}`; everything else
//! has a default. Unknown keys are errors, because a misspelt key silently ignored is a
//! production incident waiting for a postmortem.

use std::collections::BTreeMap;

use serde::Deserialize;
use smallvec::SmallVec;

use crate::propagation::Format;
use crate::sampling::SamplingConfig;
use crate::span::capture::{CaptureConfig, Limits};
use crate::span::mesh::identity::IdentityMode;
use crate::span::mesh::route::SpanNameStyle;
use crate::span::mesh::traffic::TrafficConfig;

/// Default `service.name` until workload detection fills it in.
pub const DEFAULT_SERVICE_NAME: &str = "unknown_service:envoy";

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

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collector {
    /// The Envoy cluster of the OTLP collector.
    pub cluster: String,
    /// `:authority` of export requests; defaults to the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// OTLP/HTTP protobuf or OTLP/gRPC.
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub compression: Compression,
    /// Extra request headers (HTTP) or metadata (gRPC), e.g. API keys. Values are secrets:
    /// never logged, never echoed in errors.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `POST {path}` with `application/x-protobuf`; the cluster may be HTTP/1.1 or HTTP/2.
    #[default]
    Http,
    /// `TraceService/Export` framed as gRPC; the cluster must speak HTTP/2.
    Grpc,
}

/// Export body compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

fn default_path() -> String {
    "/v1/traces".into()
}
fn default_timeout_ms() -> u64 {
    5000
}

impl Collector {
    /// The `:authority` to send.
    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }
}

/// Batching and queue bounds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batch {
    /// Spans held while waiting for export; newer spans are dropped (and counted) beyond it.
    pub max_queue: u32,
    /// Spans per export request; a full batch is exported at once.
    pub max_batch: u32,
    /// Export at least this often while spans are queued.
    pub flush_interval_ms: u64,
    /// Encoded bytes held while waiting for export; the second bound beside `max_queue`.
    pub max_queue_bytes: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            max_queue: 8192,
            max_batch: 2048,
            flush_interval_ms: 1000,
            max_queue_bytes: 8 << 20,
        }
    }
}

/// Where this VM's spans go, and how hard the exporter tries.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterConfig {
    pub mode: ExportMode,
    /// `vm_id` of the singleton that registered the shared queue (mode `shared_queue`).
    pub singleton_vm_id: String,
    /// Export requests outstanding at once, retries included.
    pub max_in_flight: u32,
    pub retry: Retry,
}

/// The deployment shape: see `filter/envoy/README.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExportMode {
    /// Each worker VM exports its own batches.
    #[default]
    PerWorker,
    /// HTTP filter: hand encoded spans to the singleton's shared queue; never export.
    SharedQueue,
    /// The `envoy.bootstrap.wasm` singleton: drain the shared queue and export for everyone.
    Singleton,
}

/// Exponential backoff with full jitter between `initial_ms` and `max_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    pub initial_ms: u64,
    pub max_ms: u64,
    /// Sends of one batch, the first included; 1 disables retries.
    pub max_attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            initial_ms: 500,
            max_ms: 30_000,
            max_attempts: 5,
        }
    }
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            mode: ExportMode::PerWorker,
            singleton_vm_id: "meshtrace_exporter".into(),
            max_in_flight: 2,
            retry: Retry::default(),
        }
    }
}

/// The shared queue's name, registered by the singleton under its `vm_id`.
pub const SHARED_QUEUE_NAME: &str = "meshtrace.spans";

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub service_name: Option<String>,
    #[serde(default)]
    pub direction: Direction,
    pub collector: Collector,
    #[serde(default)]
    pub batch: Batch,
    #[serde(default)]
    pub exporter: ExporterConfig,
    #[serde(default)]
    pub propagators: Propagators,
    #[serde(default)]
    pub baggage: BaggageConfig,

    // Mesh semantics, sampling and privacy (issue 5); each section is owned and validated by
    // its module, see `Config::validate_mesh`.
    /// Root sampler, rate limit and always-keep rules.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Canary / A/B rules and subset weights.
    #[serde(default)]
    pub traffic: TrafficConfig,
    /// Route templates for `http.route`, tried in order (`/api/users/{id}`).
    #[serde(default)]
    pub routes: Vec<String>,
    /// `semconv` (`GET /users/{id}`) or `legacy` (`HTTP GET /users/{id}`).
    #[serde(default)]
    pub span_name: SpanNameStyle,
    /// Header capture allowlists, redaction, `url.query`.
    #[serde(default)]
    pub capture: CaptureConfig,
    /// Attribute size and count caps.
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
}

/// A configuration error: the dotted field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.field.is_empty() || self.field == "." || self.field == "?" {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about `field` (dotted, with list indexes: `traffic.rules[1].match`).
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        err(field, message)
    }
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(err(
                "",
                "configuration is empty; the smallest valid one is {\"collector\": {\"cluster\": \"otel_collector\"}}",
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let message = if inner.is_syntax() || inner.is_eof() {
                format!("invalid JSON: {inner}")
            } else {
                // serde's "at line 1 column 40" is noise once the field is named.
                let s = inner.to_string();
                match s.rfind(" at line ") {
                    Some(i) => s[..i].to_string(),
                    None => s,
                }
            };
            err(&field, message)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.collector.cluster.trim().is_empty() {
            return Err(err("collector.cluster", "must be a non-empty string"));
        }
        if let Some(a) = &self.collector.authority {
            if a.trim().is_empty() {
                return Err(err(
                    "collector.authority",
                    "must be a non-empty string when set",
                ));
            }
        }
        if !self.collector.path.starts_with('/') {
            return Err(err(
                "collector.path",
                format!("must start with '/', got {:?}", self.collector.path),
            ));
        }
        if self.collector.timeout_ms == 0 || self.collector.timeout_ms > 600_000 {
            return Err(err(
                "collector.timeout_ms",
                format!(
                    "must be between 1 and 600000, got {}",
                    self.collector.timeout_ms
                ),
            ));
        }
        self.validate_export()?;
        if let Some(s) = &self.service_name {
            if s.trim().is_empty() {
                return Err(err("service_name", "must be a non-empty string when set"));
            }
        }
        let b = &self.batch;
        if b.max_queue == 0 {
            return Err(err("batch.max_queue", "must be at least 1, got 0"));
        }
        if b.max_batch == 0 || b.max_batch > b.max_queue {
            return Err(err(
                "batch.max_batch",
                format!(
                    "must be between 1 and batch.max_queue ({}), got {}",
                    b.max_queue, b.max_batch
                ),
            ));
        }
        if b.flush_interval_ms == 0 || b.flush_interval_ms > 3_600_000 {
            return Err(err(
                "batch.flush_interval_ms",
                format!("must be between 1 and 3600000, got {}", b.flush_interval_ms),
            ));
        }
        self.propagators.validate()?;
        self.baggage.validate()?;
        self.validate_mesh()?;
        Ok(())
    }

    fn validate_export(&self) -> Result<(), ConfigError> {
        for name in self.collector.headers.keys() {
            let ok = !name.is_empty()
                && !name.starts_with(':')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if !ok {
                // The name is not secret; the value never appears in an error.
                return Err(err(
                    "collector.headers",
                    format!("header names must be lowercase token characters, got {name:?}"),
                ));
            }
        }
        let b = &self.batch;
        if b.max_queue_bytes < 1024 {
            return Err(err(
                "batch.max_queue_bytes",
                format!("must be at least 1024, got {}", b.max_queue_bytes),
            ));
        }
        let e = &self.exporter;
        if e.singleton_vm_id.trim().is_empty() {
            return Err(err(
                "exporter.singleton_vm_id",
                "must be a non-empty string",
            ));
        }
        if e.max_in_flight == 0 || e.max_in_flight > 64 {
            return Err(err(
                "exporter.max_in_flight",
                format!("must be between 1 and 64, got {}", e.max_in_flight),
            ));
        }
        let r = &e.retry;
        if r.initial_ms == 0 || r.initial_ms > r.max_ms {
            return Err(err(
                "exporter.retry.initial_ms",
                format!(
                    "must be between 1 and exporter.retry.max_ms ({}), got {}",
                    r.max_ms, r.initial_ms
                ),
            ));
        }
        if r.max_ms > 3_600_000 {
            return Err(err(
                "exporter.retry.max_ms",
                format!("must be at most 3600000, got {}", r.max_ms),
            ));
        }
        if r.max_attempts == 0 || r.max_attempts > 100 {
            return Err(err(
                "exporter.retry.max_attempts",
                format!("must be between 1 and 100, got {}", r.max_attempts),
            ));
        }
        Ok(())
    }

    /// The resource's `service.name`.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or(DEFAULT_SERVICE_NAME)
    }
}

// ---- propagation settings --------------------------------------------------------------

/// Which trace-context formats are read and written, and how far incoming contexts are trusted.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Propagators {
    /// Formats tried in order on the way in; the first that yields a valid context wins.
    pub extract: Vec<String>,
    /// Formats always written upstream, besides the one the request arrived with.
    pub inject: Vec<String>,
    /// Continue incoming contexts. False at an internet-facing edge: each request starts a new
    /// trace and the incoming context becomes a span link, so clients cannot force sampling.
    pub trust_incoming: bool,
    /// Honour Linkerd 1's `l5d-sample` rate as a sampling override.
    pub trust_l5d_sample: bool,
}

impl Default for Propagators {
    fn default() -> Self {
        let names = |f: &[Format]| f.iter().map(|f| f.name().to_string()).collect();
        Self {
            extract: names(&[
                Format::TraceContext,
                Format::B3,
                Format::B3Multi,
                Format::L5d,
                Format::XRay,
                Format::Gcp,
                Format::GrpcTraceBin,
            ]),
            inject: names(&[Format::TraceContext, Format::Baggage]),
            trust_incoming: true,
            trust_l5d_sample: false,
        }
    }
}

/// The format names a list may use, for error messages.
fn format_names(context_only: bool) -> String {
    Format::ALL
        .iter()
        .filter(|f| !context_only || f.carries_context())
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves a list of format names, refusing unknown names and repeats; `context_only` also
/// refuses `baggage`, which carries no trace context to extract.
fn resolve_formats(
    field: &str,
    names: &[String],
    context_only: bool,
) -> Result<SmallVec<[Format; 8]>, ConfigError> {
    let mut out = SmallVec::new();
    for (i, name) in names.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let format = Format::from_name(name).ok_or_else(|| {
            err(
                &at,
                format!(
                    "unknown format {name:?}; expected one of {}",
                    format_names(context_only)
                ),
            )
        })?;
        if context_only && !format.carries_context() {
            return Err(err(
                &at,
                format!(
                    "{name:?} carries no trace context to extract; expected one of {}",
                    format_names(true)
                ),
            ));
        }
        if out.contains(&format) {
            return Err(err(&at, format!("format {name:?} is listed twice")));
        }
        out.push(format);
    }
    Ok(out)
}

impl Propagators {
    /// The extraction order.
    pub fn extract_formats(&self) -> SmallVec<[Format; 8]> {
        // Validated when the configuration was loaded; an error cannot reach here.
        resolve_formats("propagators.extract", &self.extract, true).unwrap_or_default()
    }

    /// The formats always injected.
    pub fn inject_formats(&self) -> SmallVec<[Format; 8]> {
        resolve_formats("propagators.inject", &self.inject, false).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        resolve_formats("propagators.extract", &self.extract, true)?;
        resolve_formats("propagators.inject", &self.inject, false)?;
        Ok(())
    }
}

/// What may be read from W3C baggage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaggageConfig {
    /// Baggage keys copied into span attributes as `baggage.<key>`; nothing else is, because
    /// baggage is set by callers and may carry what must not reach a trace backend.
    pub attribute_keys: Vec<String>,
}

impl BaggageConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, key) in self.attribute_keys.iter().enumerate() {
            let token = !key.is_empty()
                && key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
            if !token {
                return Err(err(
                    &format!("baggage.attribute_keys[{i}]"),
                    format!(
                        "{key:?} is not a valid baggage key (an HTTP token such as \"tenant_id\")"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Validation of the mesh, sampling and privacy sections (issue 5).
impl Config {
    fn validate_mesh(&self) -> Result<(), ConfigError> {
        self.sampling.validate()?;
        self.limits.validate()?;
        crate::span::mesh::Tables::compile(self)?;
        for (k, v) in &self.resource {
            if k.trim().is_empty() {
                return Err(err("resource", "attribute names must be non-empty"));
            }
            if v.is_empty() {
                return Err(err(&format!("resource.{k}"), "must be a non-empty string"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.propagators.extract_formats().len(), 7);
        assert_eq!(
            c.propagators.inject_formats().as_slice(),
            &[Format::TraceContext, Format::Baggage]
        );
        let c = Config::from_json(
            br#"{"collector": {"cluster": "c"}, "propagators": {"extract": ["b3"], "trust_incoming": false}, "baggage": {"attribute_keys": ["tenant"]}}"#,
        )
        .unwrap();
        assert_eq!(c.propagators.extract_formats().as_slice(), &[Format::B3]);
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

/// The mesh, sampling and privacy sections (issue 5).
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
