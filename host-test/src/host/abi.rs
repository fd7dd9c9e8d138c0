//! The numbers of proxy-wasm ABI 0.2.1 and WASI preview1 that the host speaks, named once.
//!
//! Values follow the spec and Envoy (cpp-host `WasmResult`), including the statuses the Rust SDK
//! does not know: the host never returns those to a call whose SDK wrapper would panic on them.

/// `proxy_status_t` as Envoy returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The key, property or token does not exist.
    NotFound = 1,
    /// An argument is invalid.
    BadArgument = 2,
    /// The value could not be serialized.
    SerializationFailure = 3,
    /// The value could not be parsed.
    ParseFailure = 4,
    /// A pointer or length is outside guest memory.
    InvalidMemoryAccess = 6,
    /// The queue or buffer is empty.
    Empty = 7,
    /// A compare-and-swap lost.
    CasMismatch = 8,
    /// The host failed internally.
    InternalFailure = 10,
    /// Envoy's status for a failed http call, read with `proxy_get_status`.
    BrokenConnection = 11,
}

impl Status {
    /// The numeric code the ABI returns.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Log levels, as the guest passes them to `proxy_log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `trace`.
    Trace = 0,
    /// `debug`.
    Debug = 1,
    /// `info`.
    Info = 2,
    /// `warn`.
    Warn = 3,
    /// `error`.
    Error = 4,
    /// `critical`.
    Critical = 5,
}

impl LogLevel {
    /// The level for an ABI value; `None` for an unknown one.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    /// The level's name as Envoy prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

/// `proxy_header_map_type_t`.
pub mod map {
    /// Request headers.
    pub const REQUEST_HEADERS: i32 = 0;
    /// Request trailers.
    pub const REQUEST_TRAILERS: i32 = 1;
    /// Response headers.
    pub const RESPONSE_HEADERS: i32 = 2;
    /// Response trailers.
    pub const RESPONSE_TRAILERS: i32 = 3;
    /// gRPC initial metadata.
    pub const GRPC_INITIAL_METADATA: i32 = 4;
    /// gRPC trailing metadata.
    pub const GRPC_TRAILING_METADATA: i32 = 5;
    /// An http-call response's headers.
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    /// An http-call response's trailers.
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

/// `proxy_buffer_type_t`.
pub mod buffer {
    /// The request body.
    pub const HTTP_REQUEST_BODY: i32 = 0;
    /// The response body.
    pub const HTTP_RESPONSE_BODY: i32 = 1;
    /// An http-call response's body.
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    /// A gRPC call's received message.
    pub const GRPC_RECEIVE_BUFFER: i32 = 5;
    /// The VM configuration.
    pub const VM_CONFIGURATION: i32 = 6;
    /// The plugin configuration.
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

/// `proxy_metric_type_t`; Envoy keeps the type in the low two bits of a metric id.
pub mod metric {
    /// A counter.
    pub const COUNTER: i32 = 0;
    /// A gauge.
    pub const GAUGE: i32 = 1;
    /// A histogram.
    pub const HISTOGRAM: i32 = 2;
    /// The bits of a metric id that hold its type.
    pub const TYPE_MASK: u32 = 0x3;
    /// The step between metric ids of one type.
    pub const ID_INCREMENT: u32 = 0x4;
}

/// Filter actions returned by the HTTP callbacks.
pub mod action {
    /// `Continue`: the stream goes on.
    pub const CONTINUE: i32 = 0;
}

/// WASI preview1 errno values Envoy returns.
pub mod errno {
    /// No error.
    pub const SUCCESS: i32 = 0;
    /// Bad file descriptor.
    pub const BADF: i32 = 8;
    /// Bad address.
    pub const FAULT: i32 = 21;
    /// Invalid argument.
    pub const INVAL: i32 = 28;
    /// No such file or directory.
    pub const NOENT: i32 = 44;
    /// Function not supported.
    pub const NOSYS: i32 = 52;
    /// Not supported.
    pub const NOTSUP: i32 = 58;
}

/// The largest `random_get` Envoy serves (BoringSSL-backed, capped at 64 KiB).
pub const MAX_RANDOM_BYTES: u32 = 64 * 1024;
