//! Test support for meshtrace: OTLP receivers, process helpers, and (soon) a wasmtime host.

pub mod envoy;
pub mod faults;
pub mod grpc_sink;
pub mod sink;
