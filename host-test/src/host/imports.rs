//! Which imports the host provides, which it refuses, and which hostcalls are allowed while
//! Envoy restricts them (during `_initialize` and inside the guest's allocator).

use wasmtime::{Linker, Module, Result};

use super::error::HostError;
use super::memory::Ctx;
use super::state::{Restriction, VmData};

/// Every `env` function of ABI 0.2.1 Envoy registers, plus two emscripten helpers cpp-host
/// also provides.
pub const ENV_FUNCTIONS: [&str; 41] = [
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_size",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_shared_data",
    "proxy_get_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_call_foreign_function",
    "pthread_equal",
    "emscripten_notify_memory_growth",
];

/// Hostcalls cpp-host allows while `_initialize` runs.
const ALLOWED_IN_INITIALIZE: [&str; 9] = [
    "proxy_log",
    "fd_write",
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_time_get",
    "random_get",
    "fd_fdstat_get",
];

/// Hostcalls cpp-host allows while the guest's allocator runs.
const ALLOWED_IN_ALLOCATE: [&str; 3] = ["proxy_log", "fd_write", "clock_time_get"];

/// Traps a hostcall made where Envoy would refuse it, naming the call and the phase.
pub fn guard(c: &Ctx<'_>, name: &str) -> Result<()> {
    match c.data().restriction {
        Restriction::None => Ok(()),
        Restriction::Initialize if ALLOWED_IN_INITIALIZE.contains(&name) => Ok(()),
        Restriction::Allocate if ALLOWED_IN_ALLOCATE.contains(&name) => Ok(()),
        Restriction::Initialize => wasmtime::bail!(
            "{name} called during _initialize; Envoy allows only {ALLOWED_IN_INITIALIZE:?} there"
        ),
        Restriction::Allocate => wasmtime::bail!(
            "{name} called from the guest allocator; Envoy allows only {ALLOWED_IN_ALLOCATE:?} there"
        ),
    }
}

/// Refuses a module that imports anything Envoy does not provide, naming the import.
pub fn check(module: &Module) -> Result<(), HostError> {
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        let known = match m {
            "env" => ENV_FUNCTIONS.contains(&name),
            m if super::wasi::MODULES.contains(&m) => super::wasi::FUNCTIONS.contains(&name),
            _ => false,
        };
        if known {
            continue;
        }
        let why = if super::wasi::MODULES.contains(&m) {
            let hint = match name {
                "sched_yield" => " (std::thread::yield_now and spin loops import it)",
                "poll_oneoff" => " (std::thread::sleep imports it)",
                _ => "",
            };
            format!(
                "not in the WASI baseline Envoy provides ({}){hint}",
                super::wasi::FUNCTIONS.join(", ")
            )
        } else if m == "env" {
            "not a proxy-wasm ABI 0.2.1 hostcall".to_string()
        } else {
            format!("Envoy provides only the env and WASI modules, not {m:?}")
        };
        return Err(HostError::ForbiddenImport {
            module: m.to_string(),
            name: name.to_string(),
            why,
        });
    }
    Ok(())
}

/// The linker with every function the host provides.
pub fn linker(engine: &wasmtime::Engine) -> Result<Linker<VmData>> {
    let mut l = Linker::new(engine);
    super::wasi::add_to_linker(&mut l)?;
    super::env::add_to_linker(&mut l)?;
    Ok(l)
}
