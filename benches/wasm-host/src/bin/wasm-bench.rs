//! `wasm-bench --simd A.wasm --scalar B.wasm [--out results.json]`: times every operation of
//! `benches/wasm-kernels` natively and inside wasmtime, in the module built with `+simd128` and
//! in the one built without, interleaving the three so machine noise hits them alike.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use meshtrace_wasm_host::BenchModule;
use meshtrace_wasm_kernels::OPS;

/// Samples per target and operation; the median is reported.
const SAMPLES: usize = 7;
/// Wall time one native sample should take.
const SAMPLE_NS: u128 = 20_000_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut simd = None;
    let mut scalar = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().map(PathBuf::from).context("missing value");
        match a.as_str() {
            "--simd" => simd = Some(value()?),
            "--scalar" => scalar = Some(value()?),
            "--out" => out = Some(value()?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let (Some(simd), Some(scalar)) = (simd, scalar) else {
        bail!("usage: wasm-bench --simd A.wasm --scalar B.wasm [--out results.json]");
    };
    let mut wasm_simd = BenchModule::load(&simd)?;
    let mut wasm_scalar = BenchModule::load(&scalar)?;
    if wasm_simd.ops as usize != OPS.len() || wasm_scalar.ops as usize != OPS.len() {
        bail!("the wasm modules are stale: rebuild benches/wasm-kernels");
    }
    let mut results = serde_json::Map::new();
    println!(
        "{:<34} {:>12} {:>14} {:>14} {:>10}",
        "operation (ns/op)", "native", "wasm simd128", "wasm scalar", "wasm/nat"
    );
    for (i, (name, f)) in OPS.iter().enumerate() {
        // Calibrate on the native build: enough iterations for SAMPLE_NS of work.
        let mut iters = 1_000u64;
        loop {
            let t = Instant::now();
            std::hint::black_box(f(iters));
            if t.elapsed().as_nanos() >= SAMPLE_NS || iters >= 1 << 30 {
                break;
            }
            iters *= 2;
        }
        let (mut n, mut s, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let t = Instant::now();
            std::hint::black_box(f(iters));
            n.push(t.elapsed().as_nanos() as f64 / iters as f64);
            let t = Instant::now();
            wasm_simd.run(i as u32, iters)?;
            s.push(t.elapsed().as_nanos() as f64 / iters as f64);
            let t = Instant::now();
            wasm_scalar.run(i as u32, iters)?;
            c.push(t.elapsed().as_nanos() as f64 / iters as f64);
        }
        let (n, s, c) = (median(n), median(s), median(c));
        println!("{name:<34} {n:>12.2} {s:>14.2} {c:>14.2} {:>9.2}x", s / n);
        results.insert(
            (*name).to_string(),
            serde_json::json!({ "native": n, "wasm_simd128": s, "wasm_scalar": c }),
        );
    }
    if let Some(out) = out {
        std::fs::write(&out, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
