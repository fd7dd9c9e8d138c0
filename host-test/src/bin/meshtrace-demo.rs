//! `make demo`: a small mesh of Envoy sidecars running meshtrace; prints a few traces as
//! trees, RED metrics per release and each sidecar's `/stats`, and writes an HTML waterfall.
//! The mesh, the rendering and the checks live in `meshtrace_host_test::demo`.

use std::path::PathBuf;

use clap::Parser;
use meshtrace_host_test::demo::{self, Options};

/// Runs a frontend, a 90/10 canary split of a backend over mTLS, a gRPC service and an injected
/// fault, each behind its own Envoy with meshtrace, and shows the traces they produce.
#[derive(Parser)]
#[command(name = "meshtrace-demo")]
struct Args {
    /// The Envoy binary (default: MESHTRACE_ENVOY, else .tools/envoy as `make envoy` installs it).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// The filter (default: MESHTRACE_WASM, else dist/meshtrace.wasm).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Where to write the HTML waterfall.
    #[arg(long, default_value = "dist/demo.html")]
    html: PathBuf,
    /// Requests sent through the canary split.
    #[arg(long, default_value_t = 100)]
    requests: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = Options {
        binaries: demo::binaries(args.envoy.as_deref(), args.wasm.as_deref())?,
        html: args.html,
        split_requests: args.requests,
    };
    let stdout = std::io::stdout();
    demo::run(&opts, &mut stdout.lock())?;
    Ok(())
}
