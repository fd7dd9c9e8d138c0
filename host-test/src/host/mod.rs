//! A proxy-wasm host on wasmtime that runs the compiled filter the way Envoy does.
//!
//! - Imports: the ABI 0.2.1 `env` functions and Envoy's 15-function WASI baseline; a module
//!   importing anything else is refused with the import named ([`imports`]).
//! - Semantics: Envoy's statuses, header maps only in their own phase, properties with
//!   Envoy's encodings, return buffers through the guest allocator ([`env`], [`state`]).
//! - Sequence: `_initialize`, per plugin context_create/vm_start/configure, then per stream
//!   context_create, request headers/body/trailers, response headers/body/trailers, log, done,
//!   delete ([`harness`]).
//! - Time is virtual: ticks and call timeouts fire only when the test advances the clock.
//!
//! ```no_run
//! use meshtrace_host_test::host::{Host, Req};
//! let mut host = Host::load("dist/meshtrace.wasm")?
//!     .configure(r#"{"collector": {"cluster": "otel_collector"}}"#)?;
//! let ex = host.request(Req::get("/x").property("response.code", 200i64))?;
//! assert!(ex.upstream_header("traceparent").is_some());
//! host.advance(1000)?;
//! let call = &host.pending_http_calls()[0];
//! host.answer(call.token, 200, b"")?;
//! # Ok::<(), meshtrace_host_test::host::HostError>(())
//! ```

pub mod abi;
mod env;
pub mod error;
pub mod export;
pub mod harness;
pub mod headers;
pub mod imports;
mod memory;
pub mod pairs;
pub mod properties;
pub mod replay;
pub mod request;
pub mod state;
pub mod vm;
mod wasi;
pub mod world;

pub use abi::LogLevel;
pub use error::HostError;
pub use harness::{Host, HostBuilder, PLUGIN_NAME};
pub use headers::HeaderMap;
pub use properties::PropValue;
pub use request::{Exchange, Req, Resp, Upstream};
pub use state::LocalResponse;
pub use world::{GrpcCall, HttpCall, LogEntry, MetricValue};

use std::path::PathBuf;

/// Where the tests find the filter: `$MESHTRACE_WASM`, else `<workspace>/dist/meshtrace.wasm`.
pub fn wasm_path() -> PathBuf {
    match std::env::var_os("MESHTRACE_WASM") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("dist")
            .join("meshtrace.wasm"),
    }
}

/// Loads the filter for a test, failing with the command that builds it when it is missing.
pub fn load_filter() -> HostBuilder {
    let path = wasm_path();
    assert!(
        path.exists(),
        "{} is missing: run `make build-wasm` first (or set MESHTRACE_WASM)",
        path.display()
    );
    match Host::load(&path) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}
