//! The demo mesh on 127.0.0.1: four workloads, each behind its own Envoy process running
//! dist/meshtrace.wasm, one OTLP sink, and a throwaway mesh CA.
//!
//! ```text
//! user ──> [frontend sidecar: inbound ─> frontend app ─> outbound] ──mTLS─┬─ 90% ─> [backend-v1 sidecar] ─> backend v1
//!                                                                         ├─ 10% ─> [backend-v2 sidecar] ─> backend v2
//!                                                                         ├─ gRPC ─> [greeter sidecar]   ─> greeter
//!                                                                         └─ recommendations: fault abort 503
//! ```
//! Envoy configs: `filter/envoy/demo-frontend.yaml` and `filter/envoy/demo-service.yaml`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::apps::{Backend, Frontend, Observed};
use crate::certs::MeshCa;
use crate::envoy::{free_port, Envoy, EnvoyVars};
use crate::grpc_app::GreeterServer;
use crate::sink::OtlpSink;

/// The canary split of `backend`, as the VirtualService would set it: `(subset, weight)`.
pub const SPLIT: [(&str, u32); 2] = [("v1", 90), ("v2", 10)];

/// The release each subset is, as the outbound sidecar's `traffic.rules` tag it:
/// `(subset, mesh.release, mesh.canary)`.
pub const RELEASES: [(&str, &str, bool); 2] = [("v1", "stable", false), ("v2", "canary", true)];

/// The frontend's SPIFFE id, which the backends' SERVER spans show as their peer.
pub const FRONTEND_SPIFFE: &str = "spiffe://cluster.local/ns/demo/sa/frontend";

/// How often every sidecar exports: short, so the demo does not wait for its spans.
pub const FLUSH_INTERVAL_MS: u64 = 200;

/// Where the demo finds Envoy and the filter.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The Envoy binary.
    pub envoy: PathBuf,
    /// The compiled filter (`dist/meshtrace.wasm`).
    pub wasm: PathBuf,
}

/// One workload's sidecar.
pub struct Sidecar {
    /// The workload (`frontend`, `backend-v1`, `backend-v2`, `greeter`).
    pub workload: &'static str,
    /// Its Envoy.
    pub envoy: Envoy,
}

/// The running mesh; everything stops on drop.
pub struct Mesh {
    /// The OTLP/HTTP collector every sidecar exports to.
    pub sink: OtlpSink,
    /// The frontend app, and what it observed of its backend calls.
    pub frontend: Frontend,
    /// The sidecars: frontend, backend-v1, backend-v2, greeter.
    pub sidecars: Vec<Sidecar>,
    outbound_port: u16,
    _backends: (Backend, Backend),
    _greeter: GreeterServer,
    _ca: MeshCa,
}

/// The plugin config of every inbound side (SERVER spans): everything sampled, short flushes,
/// RED metrics exported beside the spans.
pub fn server_plugin_config() -> String {
    json!({
        "direction": "inbound",
        "collector": {"cluster": "otel_collector"},
        "batch": {"flush_interval_ms": FLUSH_INTERVAL_MS},
        "sampling": {"ratio": 1.0},
        "routes": ROUTES,
        "metrics": {"enabled": true},
    })
    .to_string()
}

/// Route templates for span names: configured names hold even for a request that failed
/// before any upstream answered (the injected abort), where guessed ones are not admitted.
pub const ROUTES: [&str; 2] = ["/api/products/{id}", "/api/recommendations"];

/// The plugin config of the frontend's outbound side (CLIENT spans): the server side's, plus
/// the traffic rules that tag each backend subset with its release, and the split's weights.
pub fn client_plugin_config() -> String {
    let rules: Vec<_> = RELEASES
        .iter()
        .map(|(subset, release, canary)| {
            json!({"match": "subset", "value": subset, "release": release, "canary": canary})
        })
        .collect();
    let weights: serde_json::Map<_, _> = SPLIT
        .iter()
        .map(|(subset, w)| (subset.to_string(), json!(w)))
        .collect();
    json!({
        "direction": "outbound",
        "collector": {"cluster": "otel_collector"},
        "batch": {"flush_interval_ms": FLUSH_INTERVAL_MS},
        "sampling": {"ratio": 1.0},
        "routes": ROUTES,
        "traffic": {"rules": rules, "weights": weights},
        "metrics": {"enabled": true},
    })
    .to_string()
}

/// `{{NAME}}` of a gRPC app's cluster: it speaks HTTP/2 (cleartext).
const HTTP2: &str = "typed_extension_protocol_options: { envoy.extensions.upstreams.http.v3.HttpProtocolOptions: { \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: { http2_protocol_options: {} } } }";
const HTTP1: &str = "# HTTP/1.1";

impl Mesh {
    /// Generates the certificates, starts the apps and the sink, then the four sidecars (in
    /// parallel: each takes a second or two to load the filter), waiting until all are ready.
    ///
    /// # Errors
    /// When a part fails to start; an Envoy that refuses its config is reported with its log.
    pub fn start(bin: &Binaries) -> anyhow::Result<Self> {
        let ca = MeshCa::new("demo")?;
        ca.issue("frontend", "frontend", FRONTEND_SPIFFE)?;
        ca.issue(
            "backend",
            "backend",
            "spiffe://cluster.local/ns/demo/sa/backend",
        )?;
        ca.issue(
            "greeter",
            "greeter",
            "spiffe://cluster.local/ns/demo/sa/greeter",
        )?;
        let sink = OtlpSink::start(0)?;
        let v1 = Backend::start("v1", std::time::Duration::from_millis(2), None)?;
        // The canary has a bug: one call in four fails.
        let v2 = Backend::start("v2", std::time::Duration::from_millis(6), Some(4))?;
        let greeter = GreeterServer::start()?;

        let service = |app: &str, version: &str, app_port: u16, http2: bool| {
            let mut vars = EnvoyVars::new(
                bin.wasm.clone(),
                app_port,
                sink.addr.port(),
                &server_plugin_config(),
            );
            let workload = format!("{app}-{version}");
            vars.set("APP", app)
                .set("VERSION", version)
                .set("WORKLOAD", &workload)
                .set("POD", format!("{workload}-5c7d9f-{}", pod_suffix(version)))
                .set("SERVICE_PORT", if http2 { 50051 } else { 80 })
                .set("APP_PROTOCOL", if http2 { HTTP2 } else { HTTP1 })
                .set("CERT_DIR", ca.dir().display());
            vars
        };
        let v1_vars = service("backend", "v1", v1.addr.port(), false);
        let v2_vars = service("backend", "v2", v2.addr.port(), false);
        let greeter_vars = service("greeter", "v1", greeter.addr.port(), true);

        let outbound_port = free_port();
        let frontend = Frontend::start(outbound_port)?;
        let mut fe_vars = EnvoyVars::new(
            bin.wasm.clone(),
            frontend.addr.port(),
            sink.addr.port(),
            &server_plugin_config(),
        );
        fe_vars
            .set("OUTBOUND_PORT", outbound_port)
            .set("V1_PORT", v1_vars.listen_port)
            .set("V2_PORT", v2_vars.listen_port)
            .set("GREETER_PORT", greeter_vars.listen_port)
            .set("DEAD_PORT", free_port())
            .set("V1_WEIGHT", SPLIT[0].1)
            .set("V2_WEIGHT", SPLIT[1].1)
            .set("CERT_DIR", ca.dir().display())
            .set(
                "CLIENT_PLUGIN_CONFIG",
                client_plugin_config().replace('\'', "''"),
            );

        let plan: [(&'static str, &str, EnvoyVars); 4] = [
            ("frontend", "demo-frontend.yaml", fe_vars),
            ("backend-v1", "demo-service.yaml", v1_vars),
            ("backend-v2", "demo-service.yaml", v2_vars),
            ("greeter", "demo-service.yaml", greeter_vars),
        ];
        let started: Vec<anyhow::Result<Sidecar>> = std::thread::scope(|s| {
            let handles: Vec<_> = plan
                .into_iter()
                .map(|(workload, template, vars)| {
                    let envoy = &bin.envoy;
                    s.spawn(move || {
                        Envoy::start(envoy, template, vars)
                            .map(|envoy| Sidecar { workload, envoy })
                            .with_context(|| format!("starting the {workload} sidecar"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("sidecar start panicked")))
                })
                .collect()
        });
        let sidecars = started.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            sink,
            frontend,
            sidecars,
            outbound_port,
            _backends: (v1, v2),
            _greeter: greeter,
            _ca: ca,
        })
    }

    /// The port users call: the frontend sidecar's inbound listener.
    pub fn entry_port(&self) -> u16 {
        self.sidecars[0].envoy.vars.listen_port
    }

    /// What the frontend app observed of its backend calls so far.
    pub fn observed(&self) -> Observed {
        crate::sink::lock(&self.frontend.observed).clone()
    }

    /// The frontend sidecar's outbound listener, where the frontend app sends its calls.
    pub fn frontend_outbound_port(&self) -> u16 {
        self.outbound_port
    }
}

/// A stable, made-up pod name suffix per version, as Kubernetes would generate one.
fn pod_suffix(version: &str) -> &'static str {
    match version {
        "v1" => "x8k2m",
        _ => "q4n7t",
    }
}

/// The Envoy binary and filter as `make demo` passes them, else as the tests find them
/// (`MESHTRACE_ENVOY`, `MESHTRACE_WASM`, `.tools/envoy`, `dist/meshtrace.wasm`).
///
/// # Errors
/// When either is missing, naming the `make` target that provides it.
pub fn binaries(envoy: Option<&Path>, wasm: Option<&Path>) -> anyhow::Result<Binaries> {
    let envoy = match envoy {
        Some(p) if p.is_file() => p.to_path_buf(),
        Some(p) => anyhow::bail!("--envoy {}: no such file: run `make envoy`", p.display()),
        None => crate::envoy::envoy_binary()?,
    };
    let wasm = match wasm {
        Some(p) if p.is_file() => p.to_path_buf(),
        Some(p) => anyhow::bail!(
            "--wasm {}: no such file: run `make build-wasm`",
            p.display()
        ),
        None => crate::envoy::wasm_path()?,
    };
    Ok(Binaries { envoy, wasm })
}
