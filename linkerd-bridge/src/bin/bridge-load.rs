//! bridge-load: measures what the bridge adds. Starts an application and an OTLP sink
//! in-process, runs the `linkerd-bridge` binary in front of the application, and in the same
//! run sends load to the application directly and through the bridge:
//!
//! 1. a fixed rate on one connection (latency: p50 and p99, direct vs. bridged);
//! 2. closed-loop saturation on several connections (throughput);
//! 3. a fixed offered load below saturation on several connections: whether the bridge keeps
//!    up, and its CPU per request. The load generator, the application and the bridge share
//!    this machine's cores, so at saturation the bridge's CPU is taken from the other two and the
//!    ratio measures the sum of all three; a real sidecar has its own CPU budget, which the
//!    fixed-load phase and the CPU per request describe.
//!
//! Every request carries a sampled `traceparent`, so the bridge traces all of them.
//!
//! With `--target`, it is an open-loop load generator for any HTTP/1.1 server instead (used by
//! `make bench-envoy`'s fixed-rate phase): no bridge, no application, `--rate` requests per
//! second paced over `--connections`, and latency percentiles taken from each request's
//! intended start, printed as JSON (see [`open_loop`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser)]
#[command(about = "Load the application directly and through linkerd-bridge; print the difference")]
struct Opts {
    /// The bridge binary (default: `linkerd-bridge` next to this one).
    #[arg(long)]
    bridge: Option<PathBuf>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Requests per second in the latency phase, or offered in all with `--target`.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Connections in the throughput phases (and with `--target`).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Requests per second offered in the fixed-load phase (spread over `connections`), below
    /// saturation; 0 skips the phase.
    #[arg(long, default_value_t = 10_000)]
    offered: u64,
    /// Open-loop mode: load this `host:port` at `--rate` over `--connections` for `--seconds`
    /// and print one JSON object of latencies from each request's intended start.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// With `--target`: a JSON array of requests sent in turn on each connection, each
    /// `{"method": "GET", "path": "/x", "headers": [["host", "a"], ...]}`; default one GET `/`
    /// with a sampled `traceparent`.
    #[arg(long)]
    requests: Option<PathBuf>,
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| fail(&format!("cannot pick a port: {e}")))
}

fn fail(msg: &str) -> ! {
    eprintln!("bridge-load: {msg}");
    std::process::exit(1)
}

/// Serves `reply` on a fresh port from its own thread, as a separate process would.
fn serve(reply: fn() -> Response<Full<Bytes>>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| fail(&format!("cannot bind: {e}")));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let _ = listener.set_nonblocking(true);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| fail(&e.to_string()));
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            // Read the whole request so the connection can be reused.
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(reply())
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    addr
}

fn app_reply() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

fn sink_reply() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}

/// The bridge child process, stopped with SIGTERM on drop.
struct BridgeProcess(Child);

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

type Conn = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Conn {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| fail(&format!("handshake {addr}: {e}")));
    tokio::spawn(conn);
    send
}

/// One request; false when it failed or was not a 200.
async fn one(conn: &mut Conn) -> bool {
    if conn.ready().await.is_err() {
        return false;
    }
    let req = Request::get("/api/items")
        .header("host", "web.shop.svc.cluster.local:8080")
        .header("traceparent", TRACEPARENT)
        .body(Empty::new());
    let Ok(req) = req else { return false };
    match conn.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status() == 200;
            ok && resp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

/// Fixed-rate latencies in microseconds, sorted.
async fn latency(addr: SocketAddr, rate: u64, seconds: u64) -> Vec<f64> {
    let mut conn = connect(addr).await;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::with_capacity((rate * seconds) as usize);
    for _ in 0..rate * seconds {
        tick.tick().await;
        let t = Instant::now();
        if one(&mut conn).await {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Closed-loop requests per second over `connections` connections.
async fn throughput(addr: SocketAddr, connections: usize, seconds: u64) -> f64 {
    load(addr, None, connections, seconds).await
}

/// Open-loop load: `rate` requests per second in total over `connections` connections, each
/// paced on its own clock; returns the requests per second completed.
async fn offered(addr: SocketAddr, rate: u64, connections: usize, seconds: u64) -> f64 {
    let per_conn = (rate as f64 / connections.max(1) as f64).max(1.0);
    let period = Duration::from_secs_f64(1.0 / per_conn);
    load(addr, Some(period), connections, seconds).await
}

/// Requests per second completed over `connections` connections for `seconds`: back to back,
/// or one per `period` on each connection.
async fn load(addr: SocketAddr, period: Option<Duration>, connections: usize, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(addr).await;
            let mut tick = period.map(tokio::time::interval);
            if let Some(t) = &mut tick {
                // A late request is not made up for: the offered load never exceeds the rate.
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            }
            let mut n = 0u64;
            while Instant::now() < deadline {
                if let Some(t) = &mut tick {
                    t.tick().await;
                }
                if one(&mut conn).await {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
/// Prints req/s direct and through the bridge, their ratio, and the bridge's own CPU over the
/// bridged run (`cpu_before`/`cpu_after` in seconds, from /proc), which other load on a shared
/// machine does not inflate, per request served.
fn report_against_direct(
    direct: f64,
    bridged: f64,
    cpu_before: Option<f64>,
    cpu_after: Option<f64>,
    seconds: u64,
) {
    println!("  direct   {direct:10.0}");
    println!("  bridge   {bridged:10.0}");
    println!("  ratio    {:10.2}", bridged / direct);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        let per_req = (b - a) / (bridged * seconds as f64) * 1e6;
        println!(
            "  bridge CPU {:.2} s ({:.2} cores), {per_req:.1} µs per request",
            b - a,
            (b - a) / seconds as f64
        );
    }
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Some(ticks as f64 / hz)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn wait_live(admin: SocketAddr) {
    for _ in 0..500 {
        if let Ok(stream) = tokio::net::TcpStream::connect(admin).await {
            drop(stream);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fail(&format!("the bridge did not open its admin port {admin}"));
}

async fn metrics(admin: SocketAddr) -> String {
    let stream = match tokio::net::TcpStream::connect(admin).await {
        Ok(s) => s,
        Err(_) => return String::new(),
    };
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return String::new();
    };
    tokio::spawn(conn);
    let Ok(req) = Request::get("/metrics")
        .header("host", admin.to_string())
        .body(Empty::<Bytes>::new())
    else {
        return String::new();
    };
    match send.send_request(req).await {
        Ok(r) => r
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// One request of an open-loop run, as `--requests` gives it.
#[derive(serde::Deserialize)]
struct Spec {
    method: String,
    path: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

fn specs(path: Option<&PathBuf>, target: SocketAddr) -> Vec<Spec> {
    let Some(path) = path else {
        return vec![Spec {
            method: "GET".into(),
            path: "/".into(),
            headers: vec![
                ("host".into(), target.to_string()),
                ("traceparent".into(), TRACEPARENT.into()),
            ],
        }];
    };
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(&format!("--requests {}: {e}", path.display())));
    let specs: Vec<Spec> = serde_json::from_str(&text)
        .unwrap_or_else(|e| fail(&format!("--requests {}: {e}", path.display())));
    if specs.is_empty() {
        fail(&format!("--requests {}: no requests", path.display()));
    }
    specs
}

/// What one connection of an open-loop run saw.
#[derive(Default)]
struct Paced {
    /// Latencies in microseconds (see [`open_loop`]).
    latencies: Vec<f64>,
    errors: u64,
    /// Requests that would have found their connection still busy with the previous one.
    queued: u64,
}

/// Open-loop load: `rate` requests per second for `seconds`, the `j`-th due at `start + j / rate`
/// on connection `j % connections`; `specs` are sent in turn.
///
/// A pacing thread wakes for each request at its due time (`std::thread::sleep`, which is
/// accurate to tens of microseconds, where tokio's timers fire on a millisecond tick and would
/// send the requests of each millisecond as one burst) and hands it to its connection.
///
/// A request's latency is what a generator sending exactly on schedule would see: the time
/// it would have waited for its connection, still busy with the previous request (that
/// request's due time plus its latency, past this one's due time), plus the time from its
/// actual send to its response. A stall thus counts for every request it delays, not once
/// (coordinated omission), while the generator's own lateness counts for none.
async fn open_loop(
    addr: SocketAddr,
    specs: std::rc::Rc<Vec<Spec>>,
    rate: u64,
    connections: usize,
    seconds: u64,
) -> (Paced, f64) {
    let connections = connections.max(1);
    let step = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut conns = Vec::with_capacity(connections);
    let mut txs = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(addr).await);
    }
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + Duration::from_secs(seconds);
    let local = tokio::task::LocalSet::new();
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        txs.push(tx);
        let specs = specs.clone();
        tasks.push(local.spawn_local(async move {
            let mut out = Paced::default();
            // When the previous request would have been answered had it been sent on time.
            let mut busy_until = start;
            let mut k = i;
            while let Some(due) = rx.recv().await {
                let wait = busy_until.saturating_duration_since(due);
                out.queued += u64::from(!wait.is_zero());
                let sent = Instant::now();
                let ok = send(&mut conn, &specs[k % specs.len()]).await;
                let latency = wait + sent.elapsed();
                busy_until = due + latency;
                if ok {
                    out.latencies.push(latency.as_secs_f64() * 1e6);
                } else {
                    out.errors += 1;
                }
                k += 1;
            }
            out
        }));
    }
    let pacer = std::thread::spawn(move || {
        let mut due = start;
        let mut j = 0usize;
        while due < end {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if txs[j % txs.len()].send(due).is_err() {
                break;
            }
            j += 1;
            due = start + step.mul_f64(j as f64);
        }
        // Dropping the senders ends each connection's loop once it has sent what it was given.
    });
    let mut all = Paced::default();
    local
        .run_until(async {
            for t in tasks {
                let p = t.await.unwrap_or_default();
                all.latencies.extend(p.latencies);
                all.errors += p.errors;
                all.queued += p.queued;
            }
        })
        .await;
    let _ = pacer.join();
    let elapsed = start.elapsed().as_secs_f64();
    all.latencies.sort_by(f64::total_cmp);
    (all, elapsed)
}

/// Sends `spec` with an empty body; false when it failed or was not a 2xx.
async fn send(conn: &mut Conn, spec: &Spec) -> bool {
    if conn.ready().await.is_err() {
        return false;
    }
    let mut req = Request::builder()
        .method(spec.method.as_str())
        .uri(spec.path.as_str());
    for (k, v) in &spec.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let Ok(req) = req.body(Empty::new()) else {
        return false;
    };
    match conn.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            resp.into_body().collect().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

fn run_open_loop(opts: &Opts, target: SocketAddr) {
    let specs = std::rc::Rc::new(specs(opts.requests.as_ref(), target));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let (p, elapsed) = rt.block_on(open_loop(
        target,
        specs,
        opts.rate,
        opts.connections,
        opts.seconds,
    ));
    let n = p.latencies.len();
    let q = |x: f64| pct(&p.latencies, x);
    let json = serde_json::json!({
        "offered_rps": opts.rate,
        "achieved_rps": n as f64 / elapsed,
        "requests": n,
        "errors": p.errors,
        "queued": p.queued,
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "p99.9": q(0.999),
        "max": p.latencies.last().copied().unwrap_or(f64::NAN),
    });
    println!("{json}");
}

fn main() {
    let opts = Opts::parse();
    if let Some(target) = opts.target {
        run_open_loop(&opts, target);
        return;
    }
    let bridge_bin = opts.bridge.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("linkerd-bridge")))
            .unwrap_or_else(|| PathBuf::from("linkerd-bridge"))
    });
    let app = serve(app_reply);
    let sink = serve(sink_reply);
    let (listen, admin) = (free_addr(), free_addr());
    let dir = std::env::temp_dir().join(format!("bridge-load-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let config = dir.join("bridge.json");
    let json = format!(r#"{{"collector":{{"endpoint":"http://{sink}/v1/traces"}}}}"#);
    if let Err(e) = std::fs::write(&config, json) {
        fail(&format!("{}: {e}", config.display()));
    }
    let child = Command::new(&bridge_bin)
        .args(["--listen", &listen.to_string()])
        .args(["--upstream", &app.to_string()])
        .args(["--admin", &admin.to_string()])
        .arg("--config")
        .arg(&config)
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", bridge_bin.display())));
    let pid = child.id();
    let bridge = BridgeProcess(child);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    rt.block_on(async {
        wait_live(admin).await;
        let s = opts.seconds;
        // Warm both paths (connections, pools, allocator) before measuring.
        throughput(app, 2, 1).await;
        throughput(listen, 2, 1).await;
        println!(
            "latency at {} req/s on one connection, {s}s each (µs):",
            opts.rate
        );
        let direct = latency(app, opts.rate, s).await;
        let bridged = latency(listen, opts.rate, s).await;
        let (d50, d99, b50, b99) = (
            pct(&direct, 0.5),
            pct(&direct, 0.99),
            pct(&bridged, 0.5),
            pct(&bridged, 0.99),
        );
        println!(
            "  direct   p50 {d50:8.1}  p99 {d99:8.1}  ({} ok)",
            direct.len()
        );
        println!(
            "  bridge   p50 {b50:8.1}  p99 {b99:8.1}  ({} ok)",
            bridged.len()
        );
        println!("  added    p50 {:8.1}  p99 {:8.1}", b50 - d50, b99 - d99);
        println!(
            "throughput, {} connections, {s}s each (req/s):",
            opts.connections
        );
        let direct = throughput(app, opts.connections, s).await;
        let cpu_before = cpu_seconds(pid);
        let bridged = throughput(listen, opts.connections, s).await;
        report_against_direct(direct, bridged, cpu_before, cpu_seconds(pid), s);
        if opts.offered > 0 {
            println!(
                "fixed load, {} req/s offered on {} connections, {s}s each (req/s):",
                opts.offered, opts.connections
            );
            let direct = offered(app, opts.offered, opts.connections, s).await;
            let cpu_before = cpu_seconds(pid);
            let bridged = offered(listen, opts.offered, opts.connections, s).await;
            report_against_direct(direct, bridged, cpu_before, cpu_seconds(pid), s);
        }
        let m = metrics(admin).await;
        for name in [
            "meshtrace_spans_sampled_total",
            "meshtrace_spans_exported_total",
            "meshtrace_spans_dropped_queue_full_total",
        ] {
            if let Some(line) = m.lines().find(|l| l.starts_with(&format!("{name} "))) {
                println!("  {line}");
            }
        }
    });
    drop(bridge);
    let _ = std::fs::remove_dir_all(&dir);
}
