//! Test support for meshtrace: OTLP receivers, process helpers, and (soon) a wasmtime host.

pub mod envoy;
pub mod istio;
pub mod oci;
pub mod sink;
