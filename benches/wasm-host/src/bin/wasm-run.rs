//! `wasm-run MODULE.wasm [ARGS...]`: runs a wasm32-wasip1 command in wasmtime and exits with its
//! code. Used as the cargo runner for `cargo test --target wasm32-wasip1`, so the filter's unit
//! tests (SIMD128 kernels and their proptests included) run inside a real wasm engine.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(module) = args.first() else {
        eprintln!("usage: wasm-run MODULE.wasm [ARGS...]");
        std::process::exit(2);
    };
    match meshtrace_wasm_host::run_command(std::path::Path::new(module), &args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("wasm-run: {module}: {e:#}");
            std::process::exit(1);
        }
    }
}
