//! The core request path in a loop, for instruction counts that do not depend on the machine's
//! load or clock: `valgrind --tool=callgrind target/release/examples/core_loop N` for two values
//! of N; the difference divided by the difference in N is instructions per request.

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let mut p = meshtrace_wasm_kernels::CorePath::new();
    for _ in 0..64 {
        p.request();
    }
    let injected: usize = (0..n).map(|_| p.request()).sum();
    println!("{n} requests, {injected} headers injected");
}
