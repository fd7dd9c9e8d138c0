//! What can go wrong while hosting the filter, each error carrying the detail a failing test
//! needs: the import, the callback, the guest's own panic message.

use std::fmt;

/// Why hosting the filter failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The wasm file could not be read or compiled.
    Load {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The module imports something Envoy does not provide, so Envoy would refuse to load it.
    ForbiddenImport {
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
        /// Why Envoy would refuse it.
        why: String,
    },
    /// The guest trapped (a Rust panic logs at Critical, then traps); `message` is the guest's
    /// own last Critical log line when there is one, else the trap.
    Trap {
        /// The worker VM.
        worker: usize,
        /// The callback that trapped.
        callback: &'static str,
        /// The guest's last Critical log line, else the trap.
        message: String,
        /// The trap itself.
        trap: String,
    },
    /// The VM trapped earlier; Envoy stops calling into a failed VM.
    VmFailed {
        /// The worker VM.
        worker: usize,
        /// The earlier failure.
        message: String,
    },
    /// `proxy_on_vm_start` returned false.
    VmStartRejected {
        /// The worker VM.
        worker: usize,
        /// What the guest logged while starting.
        logs: Vec<String>,
    },
    /// `proxy_on_configure` returned false; `logs` holds what the guest logged while configuring.
    ConfigRejected {
        /// The worker VM.
        worker: usize,
        /// What the guest logged while configuring.
        logs: Vec<String>,
    },
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
