//! Test support for meshtrace: a wasmtime proxy-wasm host that runs the compiled filter the way
//! Envoy does, an OTLP sink and recording upstream, and a runner for real Envoy.

pub mod certs;
pub mod demo;
pub mod envoy;
pub mod faults;
pub mod grpc_app;
pub mod grpc_sink;
pub mod host;
pub mod istio;
pub mod lambda;
pub mod oci;
pub mod sink;
