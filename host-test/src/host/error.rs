//! What can go wrong while hosting the filter, each error carrying the detail a failing test
//! needs: the import, the callback, the guest's own panic message.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The wasm file could not be read or compiled.
    Load { path: String, message: String },
    /// The module imports something Envoy does not provide, so Envoy would refuse to load it.
    ForbiddenImport {
        module: String,
        name: String,
        why: String,
    },
    /// The guest trapped (a Rust panic logs at Critical, then traps); `message` is the guest's
    /// own last Critical log line when there is one, else the trap.
    Trap {
        worker: usize,
        callback: &'static str,
        message: String,
        trap: String,
    },
    /// The VM trapped earlier; Envoy stops calling into a failed VM.
    VmFailed { worker: usize, message: String },
    /// `proxy_on_vm_start` returned false.
    VmStartRejected { worker: usize, logs: Vec<String> },
    /// `proxy_on_configure` returned false; `logs` holds what the guest logged while configuring.
    ConfigRejected { worker: usize, logs: Vec<String> },
    /// The test asked for something that does not exist (an unknown token or worker).
    Usage(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load { path, message } => write!(f, "cannot load {path}: {message}"),
            Self::ForbiddenImport { module, name, why } => {
                write!(
                    f,
                    "the module imports {module}.{name}, which Envoy does not provide: {why}"
                )
            }
            Self::Trap {
                worker,
                callback,
                message,
                trap,
            } => write!(
                f,
                "guest trapped in {callback} on worker {worker}: {message}\n--- trap ---\n{trap}"
            ),
            Self::VmFailed { worker, message } => {
                write!(f, "worker {worker}'s VM failed earlier: {message}")
            }
            Self::VmStartRejected { worker, logs } => write!(
                f,
                "proxy_on_vm_start returned false on worker {worker}; guest logs: {logs:?}"
            ),
            Self::ConfigRejected { worker, logs } => write!(
                f,
                "proxy_on_configure returned false on worker {worker}; guest logs: {logs:?}"
            ),
            Self::Usage(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for HostError {}
