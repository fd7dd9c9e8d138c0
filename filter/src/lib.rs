//! meshtrace: mesh-aware OpenTelemetry spans from Envoy (proxy-wasm) and Linkerd.
//!
//! Everything outside [`glue`] is the host-independent core: plain data in (borrowed request
//! headers and facts), plain data out (headers to inject, encoded spans). The proxy-wasm glue is
//! compiled only for wasm32; the native build of the same core serves `linkerd-bridge`, the
//! benchmarks and the unit tests.
//!
//! The modules follow one request through the core, top to bottom:
//!
//! 1. [`config`]: the plugin configuration, loaded and compiled once per VM;
//! 2. [`headers`]: the request headers the core reads, found in one pass;
//! 3. [`propagation`]: the incoming trace context extracted, and the outgoing one injected,
//!    one propagator per wire format;
//! 4. [`sampling`]: the sampler's result for the request;
//! 5. [`tracer`]: the sequence (extract, sample, inject, build, finish) the adapters call;
//! 6. [`span`]: the span record and the HTTP and mesh attributes written into it;
//! 7. [`resource`]: the resource (service, pod, mesh) every span of the VM shares;
//! 8. [`export`]: encoding, the batch span processor, and the collector's reply;
//! 9. [`correlation`]: the ids written for Envoy's access log and the `server-timing` entry
//!    returned to the client.
//!
//! Below the pipeline, helpers it uses: [`connection`] (per-connection facts for adapters),
//! [`ids`], [`hex`], [`base64`], [`protobuf`], [`text`], [`limits`], [`copy`], [`simd`].

// The pipeline, in the order a request meets it.
pub mod config;

pub mod headers;

pub mod propagation;

pub mod sampling;

pub mod tracer;

pub mod span;

pub mod resource;

pub mod export;
pub mod metrics;

pub mod correlation;

// Helpers the pipeline uses, below it.
pub mod base64;
pub mod connection;
pub mod copy;
pub mod error;
pub mod hex;
pub mod ids;
pub mod limits;
pub mod protobuf;
pub mod simd;
pub mod text;

#[cfg(target_arch = "wasm32")]
mod glue;

#[cfg(test)]
mod test_support;

/// The instrumentation scope name and `telemetry.sdk.name`.
pub const SCOPE_NAME: &str = "meshtrace";
/// This crate's version, reported as the scope and SDK version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
