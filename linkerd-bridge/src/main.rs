//! `linkerd-bridge`: see the crate docs and `linkerd-bridge/README.md`.

use clap::Parser;
use linkerd_bridge::{server, Args, Bridge};

fn main() -> std::process::ExitCode {
    // Inside AWS Lambda (or with `--lambda-extension`) the binary is the relay extension.
    if linkerd_bridge::lambda::requested(std::env::args_os(), &|k| std::env::var(k).ok()) {
        return linkerd_bridge::lambda::main();
    }
    let args = Args::parse();
    let bridge = match Bridge::from_args(args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("linkerd-bridge: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linkerd-bridge: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run_until_signal(bridge)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkerd-bridge: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
