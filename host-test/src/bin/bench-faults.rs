//! `bench-faults`: the collector fault scenarios of the end-to-end tests, run longer, printing
//! client latency percentiles for each beside the healthy run of the same invocation, plus
//! what the exporter did (exported, dropped, retries) and whether the accounting held.
//!
//! The goal is p50 and p99 within 1.2x of healthy under every fault: a collector outage must
//! not cost the traffic anything.

use std::time::Duration;

use meshtrace_host_test::faults::{self, Deployment, Fault, Outcome};

const HELP: &str = "bench-faults: client latency under collector faults, beside a healthy run

usage: bench-faults [--seconds N] [--clients N] [--deployment per-worker|singleton|both]

  --seconds N     load duration per scenario (default 20)
  --clients N     concurrent client threads (default 4)
  --deployment D  who exports: each worker (1 worker), the singleton (2 workers), or both
                  (default both; each deployment has its own healthy baseline)

Needs Envoy (MESHTRACE_ENVOY or .tools/envoy) and dist/meshtrace.wasm (make build-wasm).
";

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn row(f: Fault, o: &Outcome, healthy: Option<&Outcome>) {
    let (p50, p99) = (o.percentile_us(50.0), o.percentile_us(99.0));
    let ratio = |v: u64, h: u64| {
        if h == 0 {
            "-".to_string()
        } else {
            format!("{:.2}x", v as f64 / h as f64)
        }
    };
    let (r50, r99) = match healthy {
        Some(h) => (
            ratio(p50, h.percentile_us(50.0)),
            ratio(p99, h.percentile_us(99.0)),
        ),
        None => ("1.00x".into(), "1.00x".into()),
    };
    let dropped = o.stat("meshtrace.spans_dropped.queue_full")
        + o.stat("meshtrace.spans_dropped.export_failed")
        + o.stat("meshtrace.spans_dropped.too_large");
    println!(
        "{:<32} {:>8} {:>4} {:>8.2} {:>6} {:>8.2} {:>6} {:>9} {:>8} {:>7} {:>8.1} {:>9}",
        f.name(),
        o.latencies_us.len(),
        o.failed_requests,
        ms(p50),
        r50,
        ms(p99),
        r99,
        o.stat("meshtrace.spans_exported"),
        dropped,
        o.stat("meshtrace.export_retries"),
        o.memory_after.saturating_sub(o.memory_before) as f64 / (1 << 20) as f64,
        if o.balanced { "holds" } else { "BROKEN" },
    );
}

fn main() -> anyhow::Result<()> {
    let (mut seconds, mut clients) = (20u64, 4usize);
    let mut deployments = vec![Deployment::PerWorker, Deployment::Singleton];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<u64> {
            let v = args.next().unwrap_or_default();
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name}: expected a positive number, got {v:?}"))
        };
        match a.as_str() {
            "--seconds" => seconds = num("--seconds")?.max(1),
            "--clients" => clients = num("--clients")?.clamp(1, 256) as usize,
            "--deployment" => {
                deployments = match args.next().as_deref() {
                    Some("per-worker") => vec![Deployment::PerWorker],
                    Some("singleton") => vec![Deployment::Singleton],
                    Some("both") => vec![Deployment::PerWorker, Deployment::Singleton],
                    other => anyhow::bail!(
                        "--deployment: expected per-worker, singleton or both, got {other:?}"
                    ),
                }
            }
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n\n{HELP}"),
        }
    }
    println!(
        "collector faults under load: {seconds}s per scenario, {clients} clients (exporter config: {})",
        faults::FAULT_CONFIG
    );
    for d in deployments {
        bench(d, seconds, clients)?;
    }
    Ok(())
}

fn bench(d: Deployment, seconds: u64, clients: usize) -> anyhow::Result<()> {
    println!("\n{} export", d.name());
    println!(
        "{:<32} {:>8} {:>4} {:>8} {:>6} {:>8} {:>6} {:>9} {:>8} {:>7} {:>8} {:>9}",
        "scenario",
        "requests",
        "fail",
        "p50 ms",
        "vs ok",
        "p99 ms",
        "vs ok",
        "exported",
        "dropped",
        "retries",
        "heap MiB",
        "invariant"
    );
    let mut healthy: Option<Outcome> = None;
    for f in Fault::ALL {
        let o = faults::run(f, d, Duration::from_secs(seconds), clients)?;
        row(f, &o, healthy.as_ref());
        if f == Fault::Healthy {
            healthy = Some(o);
        }
    }
    Ok(())
}
