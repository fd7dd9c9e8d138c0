//! Lambda extension mode: the relay as an external AWS Lambda extension. The function's OTel
//! SDK exports to `127.0.0.1:4318` (OTLP/HTTP) or `127.0.0.1:4317` (OTLP/gRPC) inside the
//! sandbox; the extension holds what it gets and sends it to the collector at the points of
//! the Lambda lifecycle where nothing can be lost.
//!
//! Lifecycle (Extensions API `2020-01-01`, AWS Lambda Developer Guide
//! `runtimes-extensions-api.md` and `lambda-runtime-environment.md`; project reference
//! `rpc-faas-ambient.md` §3.6):
//!
//! 1. Bind both OTLP listeners, then `POST /extension/register` for `INVOKE` and `SHUTDOWN`.
//!    The runtime starts only after every extension registered, so the function never finds
//!    the ports closed. An invalid config or a port in use is reported with
//!    `POST /extension/init/error` (`Extension.ConfigInvalid`, `Extension.ListenFailed`), and
//!    the process exits non-zero.
//! 2. Loop: flush, then `GET /extension/event/next`. Lambda freezes the sandbox once the
//!    runtime and every extension wait in `next`, possibly for good, so the extension never
//!    calls `next` while it holds spans: each flush waits for the collector's answer (retrying
//!    by `exporter.retry`), bounded by the current INVOKE's `deadlineMs` less
//!    `--deadline-margin-ms`.
//! 3. `SHUTDOWN`: stop the listeners, flush within the event's `deadlineMs` less the margin,
//!    exit 0.
//!
//! While an invocation runs (the extension waiting in `next`), a relay buffer past half of
//! `bridge.relay_max_bytes` is sent early, one attempt, so a function that exports much per
//! invocation is not turned away; what that attempt does not deliver goes back to the buffer
//! for the flush before the next `next` (see [`Flusher::send_early`]).
//!
//! The contract with the function: a span counts as handed over once the function's exporter
//! has had the relay's success reply (HTTP 200, gRPC OK). The function must export before its
//! handler returns (a `force_flush` at the end of the handler; a batch processor's timer does
//! not run in a frozen sandbox). The spans of invocation N then reach the collector before the
//! extension asks for the event after N+1, or at `SHUTDOWN`; they are never held across a
//! `next` call unflushed.
//!
//! Spans are forwarded as the function sent them. As the relay adds the pod's whereabouts in a
//! mesh, the extension adds the function's where the function's resource lacks them:
//! `cloud.provider`, `cloud.platform`, `cloud.region`, `cloud.account.id`, `faas.name`,
//! `faas.version`, `faas.max_memory` (OTel semantic conventions, `docs/faas/aws-lambda.md` and
//! `docs/resource/faas.md`).

pub mod api;
pub mod flush;
pub mod grpc;

use std::convert::Infallible;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use meshtrace::export::otlp::ResourceValue;
use meshtrace::resource::NodeInfo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::adapter::{now_ms, Core};
use crate::config::BridgeConfig;
use crate::export::HttpExporter;
use crate::relay::{self, RelayBuffer};
use crate::shared::{lock, Shared, Stats};
pub use api::{Event, ExtensionsApi, Registration};
pub use flush::{Flushed, Flusher};

/// The flag that selects this mode; `AWS_LAMBDA_RUNTIME_API` in the environment selects it too.
pub const FLAG: &str = "--lambda-extension";

/// How long the flush before the first `next` may take: no event has given a deadline yet,
/// and Lambda's whole Init phase is limited to 10 s.
const INIT_FLUSH: Duration = Duration::from_secs(5);

/// How long open OTLP connections get to finish their request at `SHUTDOWN`.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(100);

/// meshtrace-relay: the linkerd-bridge OTLP relay as an AWS Lambda extension.
#[derive(Clone, Debug, Parser)]
#[command(name = "meshtrace-relay", version)]
pub struct LambdaArgs {
    /// Run as a Lambda extension (implied when AWS_LAMBDA_RUNTIME_API is set).
    #[arg(long)]
    pub lambda_extension: bool,
    /// The Extensions API's `host:port`; Lambda sets it.
    #[arg(long, env = "AWS_LAMBDA_RUNTIME_API")]
    pub runtime_api: String,
    /// The bridge JSON configuration (`collector.endpoint`, `exporter.retry`, ...).
    #[arg(long, env = "MESHTRACE_BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The collector URL (`http://host:4318/v1/traces` or `grpc://host:4317`); overrides the
    /// config's `collector.endpoint`, and is enough on its own without a config file.
    #[arg(long, env = "MESHTRACE_COLLECTOR_ENDPOINT")]
    pub collector_endpoint: Option<String>,
    /// Where the function's SDK sends OTLP/HTTP.
    #[arg(
        long,
        env = "MESHTRACE_LAMBDA_OTLP_HTTP",
        default_value = "127.0.0.1:4318"
    )]
    pub otlp_http: SocketAddr,
    /// Where the function's SDK sends OTLP/gRPC.
    #[arg(
        long,
        env = "MESHTRACE_LAMBDA_OTLP_GRPC",
        default_value = "127.0.0.1:4317"
    )]
    pub otlp_grpc: SocketAddr,
    /// The name to register; Lambda wants the extension's file name, which is the default.
    #[arg(long, env = "MESHTRACE_LAMBDA_EXTENSION_NAME")]
    pub extension_name: Option<String>,
    /// Time kept back from every Lambda deadline, so the extension is back in `next` (or
    /// gone) before Lambda times it out.
    #[arg(
        long,
        env = "MESHTRACE_LAMBDA_DEADLINE_MARGIN_MS",
        default_value_t = 100
    )]
    pub deadline_margin_ms: u64,
}

/// True when the process should run as a Lambda extension: the flag is among `args`, or
/// `AWS_LAMBDA_RUNTIME_API` is set (Lambda sets it for extensions; a Linkerd pod never has it).
pub fn requested(
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> bool {
    args.into_iter().any(|a| a == FLAG)
        || env("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty())
}

/// Reads the config file (if any) and applies `--collector-endpoint` to it.
pub fn load_config(args: &LambdaArgs) -> Result<BridgeConfig, String> {
    let (mut root, origin) = match &args.config {
        Some(path) => {
            let raw =
                std::fs::read(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
            let v: Value = serde_json::from_slice(&raw)
                .map_err(|e| format!("--config {}: invalid JSON: {e}", path.display()))?;
            (v, format!("--config {}", path.display()))
        }
        None => (
            serde_json::json!({ "collector": {} }),
            "MESHTRACE_COLLECTOR_ENDPOINT".to_string(),
        ),
    };
    if let Some(endpoint) = &args.collector_endpoint {
        let collector = root.as_object_mut().map(|o| {
            o.entry("collector")
                .or_insert_with(|| serde_json::json!({}))
        });
        match collector {
            Some(Value::Object(c)) => {
                c.insert("endpoint".into(), Value::String(endpoint.clone()));
            }
            Some(other) => {
                return Err(format!(
                    "{origin}: collector: must be an object, got {}",
                    meshtrace::config::section::shape(other)
                ))
            }
            None => {
                return Err(format!(
                    "{origin}: must be an object, got {}",
                    meshtrace::config::section::shape(&root)
                ))
            }
        }
    }
    BridgeConfig::from_json(root.to_string().as_bytes()).map_err(|e| format!("{origin}: {e}"))
}

/// The attributes added to every relayed resource that lacks them: where the function runs,
/// from Lambda's environment and the registration reply.
pub fn lambda_attributes(
    env: &dyn Fn(&str) -> Option<String>,
    registration: &Registration,
) -> Vec<(String, ResourceValue)> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut out = vec![
        (
            "cloud.provider".to_string(),
            ResourceValue::Str("aws".into()),
        ),
        (
            "cloud.platform".to_string(),
            ResourceValue::Str("aws_lambda".into()),
        ),
    ];
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((k.to_string(), ResourceValue::Str(v)));
        }
    };
    put("cloud.region", var("AWS_REGION"));
    put("cloud.account.id", registration.account_id.clone());
    put(
        "faas.name",
        var("AWS_LAMBDA_FUNCTION_NAME").or_else(|| Some(registration.function_name.clone())),
    );
    put(
        "faas.version",
        var("AWS_LAMBDA_FUNCTION_VERSION").or_else(|| Some(registration.function_version.clone())),
    );
    // Configured in MB; the convention wants bytes.
    if let Some(mb) = var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.parse::<i64>().ok()) {
        out.push((
            "faas.max_memory".into(),
            ResourceValue::Int(mb.saturating_mul(1 << 20)),
        ));
    }
    out
}

/// The longest a Lambda function may run (its timeout is at most 900 s): no deadline an
/// event gives is further off, and a larger value is not taken at its word.
const MAX_DEADLINE: Duration = Duration::from_secs(900);

/// When `deadline_unix_ms`, less `margin`, comes on the monotonic clock; at most
/// [`MAX_DEADLINE`] from now, and now when it has passed.
fn instant_at(deadline_unix_ms: u64, margin: Duration) -> Instant {
    let left = Duration::from_millis(deadline_unix_ms.saturating_sub(now_ms()));
    Instant::now() + left.min(MAX_DEADLINE).saturating_sub(margin)
}

/// How the extension ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The SHUTDOWN event's `shutdownReason`.
    pub shutdown_reason: String,
    /// INVOKE events received.
    pub invokes: u64,
    /// Relayed spans the collector accepted, and spans given up on (including those the
    /// relay turned away with a full buffer), over the whole run.
    pub exported: u64,
    /// See `exported`.
    pub dropped: u64,
}

/// A registered extension with its OTLP listeners up, before its event loop.
pub struct Extension {
    /// Where the function sends OTLP/HTTP (`127.0.0.1:4318` by default).
    pub otlp_http: SocketAddr,
    /// Where the function sends OTLP/gRPC (`127.0.0.1:4317` by default).
    pub otlp_grpc: SocketAddr,
    /// `Lambda-Extension-Identifier`.
    pub id: String,
    /// What Lambda said of the function when the extension registered.
    pub registration: Registration,
    /// The relay buffer and counters the listeners share with the flusher.
    pub shared: Arc<Shared>,
    api: ExtensionsApi,
    /// Shared with the early sender: whoever holds it owns the relay's spans in flight, so
    /// the flush before `next` waits for an early send to end.
    flusher: Arc<tokio::sync::Mutex<Flusher>>,
    /// The current invocation's deadline (less the margin), for early sends.
    deadline: Arc<Mutex<Instant>>,
    early: JoinHandle<()>,
    margin: Duration,
    stop: watch::Sender<bool>,
    /// SHUTDOWN's deadline, for an early send in flight.
    shutdown_at: watch::Sender<Option<Instant>>,
    listeners: Vec<JoinHandle<()>>,
}

/// Sends early whenever the relay buffer passes half its bound (woken by each accepted
/// request).
async fn send_early(
    shared: Arc<Shared>,
    flusher: Arc<tokio::sync::Mutex<Flusher>>,
    deadline: Arc<Mutex<Instant>>,
) {
    loop {
        shared.export_wake.notified().await;
        let over_half = {
            let b = lock(&shared.relay);
            b.bytes() >= b.max_bytes() / 2
        };
        if over_half {
            let until = *lock(&deadline);
            flusher.lock().await.send_early(until).await;
        }
    }
}

/// Binds the listeners, registers, and checks the config (step 1 of the lifecycle). `env` is
/// the process environment (a function in tests).
pub async fn start(
    args: LambdaArgs,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Extension, String> {
    let api = ExtensionsApi::new(&args.runtime_api)?;
    let config = load_config(&args);
    let http = TcpListener::bind(args.otlp_http)
        .await
        .map_err(|e| format!("--otlp-http {}: {e}", args.otlp_http));
    let grpc = TcpListener::bind(args.otlp_grpc)
        .await
        .map_err(|e| format!("--otlp-grpc {}: {e}", args.otlp_grpc));
    let (id, registration) = api.register(name).await?;
    let config =
        config.and_then(|c| HttpExporter::new(&c.endpoint, &c.core.config).map(|t| (c, t)));
    let (config, transport) = match config {
        Ok(c) => c,
        Err(e) => return Err(init_error(&api, &id, "Extension.ConfigInvalid", e).await),
    };
    let (http, grpc) = match (http, grpc) {
        (Ok(h), Ok(g)) => (h, g),
        (Err(e), _) | (_, Err(e)) => {
            return Err(init_error(&api, &id, "Extension.ListenFailed", e).await)
        }
    };
    let (otlp_http, otlp_grpc) = match (http.local_addr(), grpc.local_addr()) {
        (Ok(h), Ok(g)) => (h, g),
        (Err(e), _) | (_, Err(e)) => {
            return Err(init_error(&api, &id, "Extension.ListenFailed", e.to_string()).await)
        }
    };
    let seed = fastrand::u64(..);
    let shared = Arc::new(Shared {
        core: Mutex::new(Core::new(&config, &NodeInfo::default(), seed)),
        relay: Mutex::new(RelayBuffer::new(config.relay_max_bytes)),
        stats: Default::default(),
        export_wake: Notify::new(),
        ready: AtomicBool::new(true),
    });
    let attrs = Arc::new(relay::key_values(&lambda_attributes(env, &registration)));
    let (stop, stop_rx) = watch::channel(false);
    let (shutdown_at, shutdown_at_rx) = watch::channel(None);
    let (s, a) = (shared.clone(), attrs.clone());
    let http_task = tokio::spawn(crate::server::serve(
        http,
        stop_rx.clone(),
        SHUTDOWN_DRAIN,
        move |req, _| {
            let (s, a) = (s.clone(), a.clone());
            async move { Ok::<_, Infallible>(relay::handle(req, s, a).await) }
        },
    ));
    let grpc_task = tokio::spawn({
        let shared = shared.clone();
        async move {
            if let Err(e) = grpc::serve(grpc, shared, attrs, stop_rx).await {
                eprintln!("meshtrace-relay: {e}");
            }
        }
    });
    let flusher = Arc::new(tokio::sync::Mutex::new(Flusher::new(
        shared.clone(),
        transport,
        config.core.config.clone(),
        seed.rotate_left(17),
        shutdown_at_rx,
    )));
    let deadline = Arc::new(Mutex::new(Instant::now() + INIT_FLUSH));
    let early = tokio::spawn(send_early(
        shared.clone(),
        flusher.clone(),
        deadline.clone(),
    ));
    Ok(Extension {
        otlp_http,
        otlp_grpc,
        id,
        registration,
        shared,
        api,
        flusher,
        deadline,
        early,
        margin: Duration::from_millis(args.deadline_margin_ms),
        stop,
        shutdown_at,
        listeners: vec![http_task, grpc_task],
    })
}

/// Reports `error` with `/extension/init/error` and hands it back for the exit.
async fn init_error(api: &ExtensionsApi, id: &str, kind: &str, error: String) -> String {
    if let Err(report) = api.init_error(id, kind, &error).await {
        eprintln!("meshtrace-relay: reporting the init error failed: {report}");
    }
    error
}

impl Extension {
    /// The event loop (steps 2 and 3): flush, `next`, until `SHUTDOWN`. An Extensions API
    /// failure is reported with `/extension/exit/error` and returned.
    pub async fn run(mut self) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        loop {
            let until = *lock(&self.deadline);
            self.flusher.lock().await.flush(until).await;
            let event = match self.api.next(&self.id).await {
                Ok(e) => e,
                Err(e) => {
                    if let Err(report) = self
                        .api
                        .exit_error(&self.id, "Extension.NextFailed", &e)
                        .await
                    {
                        eprintln!("meshtrace-relay: reporting the exit error failed: {report}");
                    }
                    self.early.abort();
                    self.stop_listeners(Instant::now() + SHUTDOWN_DRAIN).await;
                    return Err(e);
                }
            };
            match event {
                Event::Invoke { deadline_ms, .. } => {
                    out.invokes += 1;
                    *lock(&self.deadline) = instant_at(deadline_ms, self.margin);
                }
                Event::Shutdown {
                    shutdown_reason,
                    deadline_ms,
                } => {
                    let until = instant_at(deadline_ms, self.margin);
                    // An early send in flight may finish, by this deadline; what it does not
                    // deliver it hands back to the flush below.
                    self.shutdown_at.send_replace(Some(until));
                    // Requests still being read get their chance to land in the buffer.
                    self.stop_listeners(until.min(Instant::now() + SHUTDOWN_DRAIN))
                        .await;
                    let mut flusher = self.flusher.lock().await;
                    flusher.flush(until).await;
                    // Holding the flusher, the early sender holds no spans: stopping it
                    // loses nothing.
                    self.early.abort();
                    drop(flusher);
                    let stats = &self.shared.stats;
                    out.exported = Stats::get(&stats.relay_spans_exported);
                    out.dropped = Stats::get(&stats.relay_spans_dropped);
                    out.shutdown_reason = shutdown_reason;
                    return Ok(out);
                }
            }
        }
    }

    async fn stop_listeners(&mut self, until: Instant) {
        let _ = self.stop.send(true);
        for t in self.listeners.drain(..) {
            let left = until.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, t).await.is_err() {
                break;
            }
        }
    }
}

/// The process entry in this mode: parses [`LambdaArgs`], runs to `SHUTDOWN`, exits 0; 1 when
/// initialisation or the Extensions API failed, 2 on bad flags.
pub fn main() -> std::process::ExitCode {
    let args = LambdaArgs::parse();
    let name = args.extension_name.clone().unwrap_or_else(|| {
        std::env::args_os()
            .next()
            .map(PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "meshtrace-relay".into())
    });
    // The sandbox has one or two vCPUs: two workers are plenty for a local relay.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshtrace-relay: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let result = runtime.block_on(async {
        let ext = start(args, &name, &env).await?;
        eprintln!(
            "meshtrace-relay: registered as {name}; OTLP/HTTP {} OTLP/gRPC {}",
            ext.otlp_http, ext.otlp_grpc
        );
        ext.run().await
    });
    match result {
        Ok(o) => {
            eprintln!(
                "meshtrace-relay: shutdown ({}) after {} invoke(s): {} span(s) exported, {} dropped",
                o.shutdown_reason, o.invokes, o.exported, o.dropped
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshtrace-relay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> LambdaArgs {
        let mut v = vec!["meshtrace-relay", "--runtime-api", "127.0.0.1:9001"];
        v.extend_from_slice(extra);
        LambdaArgs::try_parse_from(v).unwrap()
    }

    #[test]
    fn mode_is_selected_by_flag_or_runtime_api() {
        let none = |_: &str| None;
        let lambda = |k: &str| (k == "AWS_LAMBDA_RUNTIME_API").then(|| "127.0.0.1:9001".into());
        let empty = |k: &str| (k == "AWS_LAMBDA_RUNTIME_API").then(String::new);
        let argv = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(requested(argv(&["x", "--lambda-extension"]), &none));
        assert!(requested(argv(&["x"]), &lambda));
        assert!(!requested(argv(&["x", "--config", "b.json"]), &none));
        assert!(!requested(argv(&["x"]), &empty));
        let a = args(&[]);
        assert_eq!(a.otlp_http, "127.0.0.1:4318".parse().unwrap());
        assert_eq!(a.otlp_grpc, "127.0.0.1:4317".parse().unwrap());
        assert_eq!(a.deadline_margin_ms, 100);
    }

    #[test]
    fn config_from_endpoint_alone_or_file_with_override() {
        let c = load_config(&args(&["--collector-endpoint", "grpc://otel:4317"])).unwrap();
        assert_eq!(c.endpoint.authority, "otel:4317");
        assert_eq!(
            c.core.config.collector.protocol,
            meshtrace::export::config::Protocol::Grpc
        );
        assert_eq!(
            load_config(&args(&[])).unwrap_err(),
            "MESHTRACE_COLLECTOR_ENDPOINT: collector.endpoint: missing; the bridge needs a URL such as \"http://otel-collector:4318/v1/traces\""
        );
        let dir = std::env::temp_dir().join(format!("meshtrace-relay-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.json");
        std::fs::write(
            &path,
            r#"{"collector":{"endpoint":"http://a:4318","timeout_ms":700}}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = load_config(&args(&["--config", p])).unwrap();
        assert_eq!(c.endpoint.url(), "http://a:4318/v1/traces");
        let c = load_config(&args(&[
            "--config",
            p,
            "--collector-endpoint",
            "http://b:4318",
        ]))
        .unwrap();
        assert_eq!(c.endpoint.url(), "http://b:4318/v1/traces");
        assert_eq!(c.endpoint.timeout, Duration::from_millis(700));
        std::fs::write(&path, r#"{"collector":{"endpoint":"https://a:4318"}}"#).unwrap();
        assert!(load_config(&args(&["--config", p]))
            .unwrap_err()
            .starts_with(&format!(
                "--config {p}: collector.endpoint: scheme \"https\" is not supported"
            )));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn deadlines_are_bounded() {
        let margin = Duration::from_millis(100);
        let before = Instant::now();
        let soon = instant_at(now_ms() + 2000, margin);
        assert!(
            soon >= before + Duration::from_millis(1800),
            "{:?}",
            soon - before
        );
        assert!(soon <= Instant::now() + Duration::from_millis(1900));
        assert!(instant_at(0, margin) <= Instant::now());
        assert!(instant_at(u64::MAX, margin) <= Instant::now() + MAX_DEADLINE);
    }

    #[test]
    fn attributes_from_lambda_environment() {
        let env = |k: &str| {
            match k {
                "AWS_REGION" => Some("eu-west-1"),
                "AWS_LAMBDA_FUNCTION_NAME" => Some("checkout"),
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => Some("512"),
                _ => None,
            }
            .map(str::to_string)
        };
        let reg = Registration {
            function_name: "ignored".into(),
            function_version: "$LATEST".into(),
            account_id: Some("123456789012".into()),
            ..Default::default()
        };
        let s = |v: &str| ResourceValue::Str(v.into());
        assert_eq!(
            lambda_attributes(&env, &reg),
            vec![
                ("cloud.provider".into(), s("aws")),
                ("cloud.platform".into(), s("aws_lambda")),
                ("cloud.region".into(), s("eu-west-1")),
                ("cloud.account.id".into(), s("123456789012")),
                ("faas.name".into(), s("checkout")),
                ("faas.version".into(), s("$LATEST")),
                ("faas.max_memory".into(), ResourceValue::Int(512 << 20)),
            ]
        );
    }
}
