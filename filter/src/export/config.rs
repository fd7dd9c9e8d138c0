//! `collector`, `batch` and `exporter` in the configuration: where spans go, how they are
//! batched, and how hard the exporter tries. Checked here; the processor reads them as they are.

use serde::Deserialize;

use crate::error::ConfigError;

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Collector {
    /// The Envoy cluster of the OTLP collector.
    pub cluster: String,
    /// `:authority` of export requests; defaults to the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// `:path` of OTLP/HTTP export requests (default `/v1/traces`).
    #[serde(default = "default_path")]
    pub path: String,
    /// How long an export request may take, in ms (1 to 600000, default 5000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// OTLP/HTTP protobuf or OTLP/gRPC.
    #[serde(default)]
    pub protocol: Protocol,
    /// Export body compression.
    #[serde(default)]
    pub compression: Compression,
    /// Extra request headers (HTTP) or metadata (gRPC), e.g. API keys. Values are secrets:
    /// never logged, never echoed in errors.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}
crate::config::section::object_section!(Collector);

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
    /// Bodies are sent as they are.
    #[default]
    None,
    /// Bodies are gzip-compressed (`Content-Encoding: gzip` / `grpc-encoding: gzip`).
    Gzip,
}

/// Checks an OTLP/HTTP request path (`collector.path`, `metrics.path`): it becomes the export
/// call's `:path` header, which Envoy refuses with a space, a control character or non-ASCII
/// in it (RFC 9110 §4.1: the origin form is visible ASCII), and then every export would fail.
///
/// # Errors
/// A [`ConfigError`] naming `field` and the value.
pub fn check_http_path(field: &'static str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') {
        return Err(ConfigError::new(
            field,
            format!("must start with '/', got {path:?}"),
        ));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            field,
            format!("must be visible ASCII (no space or control character), got {path:?}"),
        ));
    }
    Ok(())
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
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct Batch {
    /// Spans held while waiting for export; newer spans are dropped (and counted) beyond it.
    pub max_queue: u32,
    /// Spans per export request; a full batch is exported at once.
    pub max_batch: u32,
    /// Encoded span bytes per export request (before compression); a batch this large is
    /// exported at once, and a single larger span goes alone. Bounds the work one export does
    /// on the worker thread: see [`crate::export::batch`].
    pub max_export_bytes: u64,
    /// Export at least this often while spans are queued.
    pub flush_interval_ms: u64,
    /// Encoded bytes held while waiting for export; the second bound beside `max_queue`.
    pub max_queue_bytes: u64,
}
crate::config::section::object_section!(Batch);

impl Default for Batch {
    fn default() -> Self {
        Self {
            max_queue: 8192,
            max_batch: 2048,
            max_export_bytes: DEFAULT_MAX_EXPORT_BYTES,
            flush_interval_ms: 1000,
            max_queue_bytes: 8 << 20,
        }
    }
}

/// `batch.max_export_bytes` by default: 64 KiB, about 140 spans of a typical sidecar's.
pub const DEFAULT_MAX_EXPORT_BYTES: u64 = 64 << 10;

/// Where this VM's spans go, and how hard the exporter tries.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct ExporterConfig {
    /// The deployment shape.
    pub mode: ExportMode,
    /// `vm_id` of the singleton that registered the shared queue (mode `shared_queue`).
    pub singleton_vm_id: String,
    /// Export requests outstanding at once, retries included.
    pub max_in_flight: u32,
    /// The backoff between sends of one batch.
    pub retry: Retry,
}
crate::config::section::object_section!(ExporterConfig);

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
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct Retry {
    /// The first backoff, in ms (1 to `max_ms`).
    pub initial_ms: u64,
    /// The longest backoff, in ms (at most 3600000).
    pub max_ms: u64,
    /// Sends of one batch, the first included; 1 disables retries.
    pub max_attempts: u32,
}
crate::config::section::object_section!(Retry);

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

/// The export sections of the configuration, borrowed together.
#[derive(Clone, Copy, Debug)]
pub struct ExportConfig<'a> {
    /// `collector`.
    pub collector: &'a Collector,
    /// `batch`.
    pub batch: &'a Batch,
    /// `exporter`.
    pub exporter: &'a ExporterConfig,
}

impl ExportConfig<'_> {
    /// Checks `collector` and the export bounds of `batch` and `exporter`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field and its value (never a header value).
    pub fn validate_collector(&self) -> Result<(), ConfigError> {
        if self.collector.cluster.trim().is_empty() {
            return Err(ConfigError::new(
                "collector.cluster",
                "must be a non-empty string",
            ));
        }
        if let Some(a) = &self.collector.authority {
            if a.trim().is_empty() {
                return Err(ConfigError::new(
                    "collector.authority",
                    "must be a non-empty string when set",
                ));
            }
        }
        check_http_path("collector.path", &self.collector.path)?;
        if self.collector.timeout_ms == 0 || self.collector.timeout_ms > 600_000 {
            return Err(ConfigError::new(
                "collector.timeout_ms",
                format!(
                    "must be between 1 and 600000, got {}",
                    self.collector.timeout_ms
                ),
            ));
        }
        for name in self.collector.headers.keys() {
            let ok = !name.is_empty()
                && !name.starts_with(':')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if !ok {
                // The name is not secret; the value never appears in an error.
                return Err(ConfigError::new(
                    "collector.headers",
                    format!("header names must be lowercase token characters, got {name:?}"),
                ));
            }
        }
        let b = self.batch;
        if b.max_queue_bytes < 1024 {
            return Err(ConfigError::new(
                "batch.max_queue_bytes",
                format!("must be at least 1024, got {}", b.max_queue_bytes),
            ));
        }
        let e = self.exporter;
        if e.singleton_vm_id.trim().is_empty() {
            return Err(ConfigError::new(
                "exporter.singleton_vm_id",
                "must be a non-empty string",
            ));
        }
        if e.max_in_flight == 0 || e.max_in_flight > 64 {
            return Err(ConfigError::new(
                "exporter.max_in_flight",
                format!("must be between 1 and 64, got {}", e.max_in_flight),
            ));
        }
        let r = &e.retry;
        if r.initial_ms == 0 || r.initial_ms > r.max_ms {
            return Err(ConfigError::new(
                "exporter.retry.initial_ms",
                format!(
                    "must be between 1 and exporter.retry.max_ms ({}), got {}",
                    r.max_ms, r.initial_ms
                ),
            ));
        }
        if r.max_ms > 3_600_000 {
            return Err(ConfigError::new(
                "exporter.retry.max_ms",
                format!("must be at most 3600000, got {}", r.max_ms),
            ));
        }
        if r.max_attempts == 0 || r.max_attempts > 100 {
            return Err(ConfigError::new(
                "exporter.retry.max_attempts",
                format!("must be between 1 and 100, got {}", r.max_attempts),
            ));
        }
        Ok(())
    }

    /// Checks the queue and batch bounds of `batch`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field and its value.
    pub fn validate_batch(&self) -> Result<(), ConfigError> {
        let b = self.batch;
        if b.max_queue == 0 {
            return Err(ConfigError::new(
                "batch.max_queue",
                "must be at least 1, got 0",
            ));
        }
        if b.max_batch == 0 || b.max_batch > b.max_queue {
            return Err(ConfigError::new(
                "batch.max_batch",
                format!(
                    "must be between 1 and batch.max_queue ({}), got {}",
                    b.max_queue, b.max_batch
                ),
            ));
        }
        if b.max_export_bytes < 1024 {
            return Err(ConfigError::new(
                "batch.max_export_bytes",
                format!("must be at least 1024, got {}", b.max_export_bytes),
            ));
        }
        if b.flush_interval_ms == 0 || b.flush_interval_ms > 3_600_000 {
            return Err(ConfigError::new(
                "batch.flush_interval_ms",
                format!("must be between 1 and 3600000, got {}", b.flush_interval_ms),
            ));
        }
        Ok(())
    }
}
