//! Any operation of the `make bench` table in a loop, for instruction counts that do not depend
//! on the machine's load: `valgrind --tool=callgrind target/release/examples/op_loop NAME N`
//! for two values of N; the difference divided by the difference in N is instructions per
//! operation. `op_loop list` prints the names.

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let ops = meshtrace_wasm_kernels::OPS;
    let Some((_, op)) = ops.iter().find(|(k, _)| *k == name) else {
        for (k, _) in ops {
            println!("{k}");
        }
        std::process::exit(if name == "list" { 0 } else { 2 });
    };
    println!("{name}: {n} runs, checksum {}", op(n));
}
