//! Test support for meshtrace: OTLP receivers, process helpers, and a wasmtime proxy-wasm host.

pub mod host;
