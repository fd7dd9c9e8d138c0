//! The core request path in a loop, for instruction counts that do not depend on the machine's
//! load or clock: `valgrind --tool=callgrind target/release/examples/core_loop N` for two values
//! of N; the difference divided by the difference in N is instructions per request.

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    // The same loop as the `core request path` row of `make bench` (warm-up included).
    let injected = meshtrace_wasm_kernels::core_path(n);
    println!("{n} requests, {injected} headers injected");
}
