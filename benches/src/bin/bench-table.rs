//! `bench-table [CRITERION_DIR] [WASM_JSON]`: the one table `make bench` ends with, assembled
//! from criterion's saved estimates (`target/criterion`) and `wasm-bench --out` results.

use std::path::{Path, PathBuf};

/// One row: label, criterion group, the crate in the `crate` column, the wasm op name.
const ROWS: &[(&str, &str, &str, &str)] = &[
    (
        "trace id hex encode (16 B)",
        "hex_encode",
        "faster-hex 0.10",
        "hex encode trace id",
    ),
    (
        "trace id hex decode+validate",
        "hex_decode",
        "faster-hex 0.10",
        "hex decode trace id",
    ),
    (
        "traceparent shape (one pass)",
        "traceparent_shape",
        "",
        "traceparent shape",
    ),
    (
        "traceparent parse+validate",
        "traceparent",
        "",
        "traceparent parse+validate",
    ),
    ("header index (14 headers)", "header_index", "", ""),
    (
        "span (14 attrs) into OTLP batch",
        "span_encode",
        "opentelemetry-proto 0.33",
        "span encode into batch",
    ),
    (
        "id generation (trace+span)",
        "id_generation",
        "opentelemetry_sdk 0.33",
        "id generation (trace+span)",
    ),
    ("core request path", "core_path", "", "core request path"),
];

fn estimate(dir: &Path, group: &str, f: &str) -> Option<f64> {
    let p = dir.join(group).join(f).join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn ns(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let crit = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    let wasm: serde_json::Value = args
        .next()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    println!(
        "\nmeshtrace core, ns per operation (criterion medians; wasm: wasmtime 48, Cranelift; kernels: {})",
        meshtrace::simd::active()
    );
    println!(
        "{:<32} {:>8} {:>8} {:>8} {:>8} {:>9}  {:<26} {:>9} {:>9} {:>9}",
        "operation",
        "scalar",
        "SIMD",
        "scal/SIMD",
        "crate",
        "crate/us",
        "crate",
        "wasm SIMD",
        "wasm scal",
        "wasm/nat"
    );
    for (label, group, krate, wasm_op) in ROWS {
        let scalar = estimate(&crit, group, "scalar");
        let simd = estimate(&crit, group, "simd");
        let ours = simd.or(scalar);
        let alt = estimate(&crit, group, "crate");
        let w = &wasm[*wasm_op];
        let (ws, wc, wn) = (
            w["wasm_simd128"].as_f64(),
            w["wasm_scalar"].as_f64(),
            w["native"].as_f64(),
        );
        println!(
            "{:<32} {:>8} {:>8} {:>8} {:>8} {:>9}  {:<26} {:>9} {:>9} {:>9}",
            label,
            ns(scalar),
            ns(simd),
            ratio(scalar, simd),
            ns(alt),
            ratio(alt, ours),
            krate,
            ns(ws),
            ns(wc),
            ratio(ws, wn),
        );
        for variant in ["sse2", "avx2"] {
            if let Some(v) = estimate(&crit, group, variant) {
                println!("  {variant:<30} {:>8} {:>8}", "", ns(Some(v)));
            }
        }
    }
    println!(
        "scal/SIMD and crate/us above 1 mean meshtrace is faster; wasm/nat is the SIMD128 module over the native build in the same harness."
    );
}
