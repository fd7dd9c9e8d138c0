//! Command-line flags; every flag can also come from a `MESHTRACE_BRIDGE_*` environment variable
//! so a Kubernetes manifest can set them without touching the container's args.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Which HTTP version the bridge speaks to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum UpstreamProtocol {
    /// The version the request arrived with: HTTP/2 in, h2c out; HTTP/1.x in, HTTP/1.1 out.
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 with prior knowledge (h2c).
    H2c,
}

/// linkerd-bridge: meshtrace spans for Linkerd meshes.
#[derive(Clone, Debug, Parser)]
#[command(name = "linkerd-bridge", version, about)]
pub struct Args {
    /// Address the Linkerd proxy forwards inbound traffic to.
    #[arg(long, env = "MESHTRACE_BRIDGE_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// The application's address inside the pod.
    #[arg(
        long,
        env = "MESHTRACE_BRIDGE_UPSTREAM",
        default_value = "127.0.0.1:8080"
    )]
    pub upstream: SocketAddr,
    /// The meshtrace JSON configuration (the filter's format plus `collector.endpoint`).
    #[arg(long, env = "MESHTRACE_BRIDGE_CONFIG")]
    pub config: PathBuf,
    /// Admin endpoint: `/metrics`, `/ready`, `/live`.
    #[arg(long, env = "MESHTRACE_BRIDGE_ADMIN", default_value = "127.0.0.1:9091")]
    pub admin: SocketAddr,
    /// The downward-API labels file of this pod.
    #[arg(long, env = "MESHTRACE_BRIDGE_PODINFO_LABELS")]
    pub podinfo_labels: Option<PathBuf>,
    /// Accept the application's own OTLP/HTTP spans here and forward them with the mesh resource.
    #[arg(long, env = "MESHTRACE_BRIDGE_OTLP_RELAY")]
    pub otlp_relay: Option<SocketAddr>,
    /// HTTP version towards the application.
    #[arg(
        long,
        env = "MESHTRACE_BRIDGE_UPSTREAM_PROTOCOL",
        value_enum,
        default_value_t = UpstreamProtocol::Auto
    )]
    pub upstream_protocol: UpstreamProtocol,
    /// On SIGTERM, how long in-flight requests may take before the bridge exits anyway.
    #[arg(
        long,
        env = "MESHTRACE_BRIDGE_DRAIN_TIMEOUT_MS",
        default_value_t = 20_000
    )]
    pub drain_timeout_ms: u64,
    /// Threads serving the proxy listener, each with its own single-threaded runtime and its
    /// own `SO_REUSEPORT` listener on `--listen`, so a request never changes thread; 0 means one
    /// per available core.
    #[arg(long, env = "MESHTRACE_BRIDGE_PROXY_THREADS", default_value_t = 0)]
    pub proxy_threads: usize,
}
