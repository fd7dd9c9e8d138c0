//! meshtrace: mesh-aware OpenTelemetry spans from Envoy (proxy-wasm) and Linkerd.
//!
//! Everything outside [`glue`] is the host-independent core: plain data in (borrowed request
//! headers and facts), plain data out (headers to inject, encoded spans). The proxy-wasm glue is
//! compiled only for wasm32; the native build of the same core serves `linkerd-bridge`, the
//! benchmarks and the unit tests.

pub mod base64;
pub mod batch;
pub mod capture;
pub mod config;
pub mod connection;
pub mod copy;
pub mod exporter;
pub mod grpc;
pub mod gzip;
pub mod headers;
pub mod hex;
pub mod ids;
pub mod limits;
pub mod mesh;
pub mod otlp;
pub mod propagation;
pub mod rejection;
pub mod sampling;
pub mod simd;
pub mod span;
pub mod span_name;
pub mod text;
pub mod tracer;
pub mod transport;

#[cfg(target_arch = "wasm32")]
mod glue;

/// The instrumentation scope name and `telemetry.sdk.name`.
pub const SCOPE_NAME: &str = "meshtrace";
/// This crate's version, reported as the scope and SDK version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
