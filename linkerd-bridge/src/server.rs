//! Process wiring: listeners, the exporter task, and graceful shutdown.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::net::TcpSocket;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::adapter::Core;
use crate::admin;
use crate::cli::Args;
use crate::config::BridgeConfig;
use crate::export::{self, HttpExporter};
use crate::proxy::Proxy;
use crate::relay::{self, RelayBuffer};
use crate::resource;
use crate::shared::Shared;

/// A configured, not yet started bridge.
pub struct Bridge {
    /// The command line.
    pub args: Args,
    /// The configuration file, loaded.
    pub config: BridgeConfig,
    /// The pod's facts, the tracer's node.
    pub node: meshtrace::resource::NodeInfo,
    /// The resource the core builds from them, for the relay's annotations.
    pub resource: Vec<(String, meshtrace::export::otlp::ResourceValue)>,
}

impl Bridge {
    /// Reads the config file and the pod's downward-API facts from the process environment.
    pub fn from_args(args: Args) -> Result<Self, String> {
        Self::with_env(args, &|k| std::env::var(k).ok())
    }

    /// As [`Bridge::from_args`], with the environment supplied (tests).
    pub fn with_env(args: Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let raw = std::fs::read(&args.config)
            .map_err(|e| format!("--config {}: {e}", args.config.display()))?;
        let mut config = BridgeConfig::from_json(&raw)
            .map_err(|e| format!("--config {}: {e}", args.config.display()))?;
        let labels = match &args.podinfo_labels {
            // A missing labels file is not fatal: the bridge still traces, with less context.
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => resource::parse_labels(&text),
                Err(e) => {
                    eprintln!(
                        "linkerd-bridge: --podinfo-labels {}: {e}; continuing without pod labels",
                        path.display()
                    );
                    BTreeMap::new()
                }
            },
            None => BTreeMap::new(),
        };
        let node = resource::pod_node(&mut config.core.config, env, &labels);
        let resource = node.resource_with(
            config.core.config.service_name.as_deref(),
            &config.core.config.resource,
            config.core.config.faas.as_ref(),
        );
        Ok(Self {
            args,
            config,
            node,
            resource,
        })
    }

    /// Binds every listener and starts serving.
    pub async fn start(self) -> io::Result<Running> {
        let http_exporter = HttpExporter::new(&self.config.endpoint, &self.config.core.config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(&self.config, &self.node, fastrand::u64(..))),
            relay: Mutex::new(RelayBuffer::new(self.config.relay_max_bytes)),
            stats: Default::default(),
            export_wake: Notify::new(),
            ready: AtomicBool::new(false),
        });
        // Two phases: the listeners stop and drain first, the exporter (and admin) after, so
        // the spans of drained requests are still sent.
        let (stop_serving, stop_rx) = watch::channel(false);
        let (stop_export, export_rx) = watch::channel(false);

        let threads = match self.args.proxy_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let listeners = bind_shared(self.args.listen, threads)?;
        let listen = listeners[0].local_addr()?;
        let admin_listener = TcpListener::bind(self.args.admin).await?;
        let admin = admin_listener.local_addr()?;
        let relay_listener = match self.args.otlp_relay {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let relay = relay_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;

        let exporter = tokio::spawn(export::run(
            shared.clone(),
            http_exporter,
            export_rx.clone(),
        ));

        let drain = Duration::from_millis(self.args.drain_timeout_ms);
        let mut finished = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            // Built here so a failure is the caller's error, not a silent missing thread.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (done, finished_rx) = oneshot::channel::<()>();
            finished.push(finished_rx);
            let (shared, stop) = (shared.clone(), stop_rx.clone());
            let (upstream, protocol, timeout) = (
                self.args.upstream,
                self.args.upstream_protocol,
                self.config.upstream_timeout,
            );
            std::thread::Builder::new()
                .name(format!("bridge-proxy-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        let listener = match TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                eprintln!("linkerd-bridge: proxy listener {i}: {e}");
                                return;
                            }
                        };
                        tokio::spawn(keep_timer_armed(timeout));
                        // One client pool per thread: a pooled connection is driven by the
                        // runtime that opened it, so its requests never wake another thread.
                        let proxy = Arc::new(Proxy::new(shared, upstream, protocol, timeout));
                        serve(listener, stop, drain, move |req, peer| {
                            proxy.clone().handle(req, peer)
                        })
                        .await;
                    });
                    // Dropping the runtime here ends what the drain left; spans finish on drop.
                    drop(rt);
                    let _ = done.send(());
                })?;
        }
        let proxy_task = tokio::spawn(async move {
            for f in finished {
                let _ = f.await;
            }
        });

        let s = shared.clone();
        let admin_task = tokio::spawn(serve(
            admin_listener,
            export_rx,
            Duration::ZERO,
            move |req, _| {
                let r = admin::handle(&req, &s);
                async move { Ok::<_, Infallible>(r) }
            },
        ));

        let relay_task = relay_listener.map(|l| {
            let s = shared.clone();
            let attrs = Arc::new(relay::key_values(&resource::relay_attributes(
                &self.resource,
            )));
            tokio::spawn(serve(l, stop_rx.clone(), drain, move |req, _| {
                let (s, attrs) = (s.clone(), attrs.clone());
                async move { Ok::<_, Infallible>(relay::handle(req, s, attrs).await) }
            }))
        });

        shared.ready.store(true, Ordering::Relaxed);
        Ok(Running {
            listen,
            admin,
            relay,
            shared,
            stop_serving,
            stop_export,
            proxy_task,
            admin_task,
            relay_task,
            exporter,
        })
    }
}

/// A started bridge.
pub struct Running {
    /// The address the proxy listens on.
    pub listen: SocketAddr,
    /// The admin address (`/metrics`, `/ready`).
    pub admin: SocketAddr,
    /// The OTLP relay's address, when enabled.
    pub relay: Option<SocketAddr>,
    /// The state the tasks share.
    pub shared: Arc<Shared>,
    stop_serving: watch::Sender<bool>,
    stop_export: watch::Sender<bool>,
    proxy_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    relay_task: Option<JoinHandle<()>>,
    exporter: JoinHandle<()>,
}

impl Running {
    /// Graceful shutdown: fail `/ready`, stop accepting, let in-flight requests finish (up to
    /// the drain timeout), then flush every queued span.
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::Relaxed);
        let _ = self.stop_serving.send(true);
        let _ = self.proxy_task.await;
        if let Some(t) = self.relay_task {
            let _ = t.await;
        }
        let _ = self.stop_export.send(true);
        let _ = self.exporter.await;
        let _ = self.admin_task.await;
    }
}

/// Keeps a timer due within `timeout` armed on the current runtime, for ever.
///
/// Every proxied request arms an upstream timeout. When that is the earliest timer the
/// runtime has, tokio wakes its own driver to re-plan its sleep (a write to an eventfd, one
/// syscall per request); with an earlier timer always pending, a request's timeout is never the
/// earliest and costs no wake. The price is a few wakes a second on an idle thread.
async fn keep_timer_armed(timeout: Duration) {
    let period = (timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
    }
}

/// `count` listening sockets on `addr` (its port, once chosen, shared by all of them through
/// `SO_REUSEPORT`, which the kernel balances new connections across), ready for
/// [`TcpListener::from_std`] on any runtime. One socket is a plain listener.
fn bind_shared(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count.max(1));
    let mut at = addr;
    for _ in 0..count.max(1) {
        let socket = if at.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As tokio's own `TcpListener::bind` does on Unix.
        socket.set_reuseaddr(true)?;
        if count > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(at)?;
        let listener = socket.listen(1024)?;
        // Port 0 picks a port once; the others join it.
        at = listener.local_addr()?;
        out.push(listener.into_std()?);
    }
    Ok(out)
}

/// Serves `listener` until `stop`, then drains open connections for at most `drain`.
pub(crate) async fn serve<F, Fut, B>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    handler: F,
) where
    F: Fn(Request<Incoming>, Arc<str>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let peer: Arc<str> = peer.to_string().into();
                let h = handler.clone();
                let svc = service_fn(move |req| h(req, peer.clone()));
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run_until_signal(bridge: Bridge) -> io::Result<()> {
    let running = bridge.start().await?;
    eprintln!(
        "linkerd-bridge: listening on {} (admin {}{})",
        running.listen,
        running.admin,
        running
            .relay
            .map(|r| format!(", OTLP relay {r}"))
            .unwrap_or_default()
    );
    wait_for_signal().await;
    eprintln!("linkerd-bridge: draining");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
