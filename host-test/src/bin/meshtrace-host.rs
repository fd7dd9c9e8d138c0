//! `meshtrace-host`: run the compiled meshtrace filter without Envoy.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshtrace_host_test::host::replay::replay;
use meshtrace_host_test::host::Host;

#[derive(Parser)]
#[command(
    name = "meshtrace-host",
    version,
    about = "Run the compiled meshtrace filter (dist/meshtrace.wasm) in a wasmtime host that behaves like Envoy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay recorded requests through the filter and print what it did and exported.
    #[command(long_about = REPLAY_HELP)]
    Replay {
        /// The filter module, e.g. dist/meshtrace.wasm (build it with `make build-wasm`).
        #[arg(long)]
        wasm: PathBuf,
        /// The plugin configuration (the JSON Envoy passes as `configuration`).
        #[arg(long)]
        config: PathBuf,
        /// The requests, one JSON object per line.
        #[arg(long)]
        requests: PathBuf,
        /// Where to write the results (JSON Lines); standard output by default.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

const REPLAY_HELP: &str = "\
Replay recorded requests through the filter and print what it did and exported.

Each line of --requests is one request:
  {\"request_headers\": [[\":method\", \"GET\"], [\":path\", \"/x\"], [\":authority\", \"shop\"]],
   \"properties\": {\"response.code\": 200, \"xds.listener_direction\": 1},
   \"response_headers\": [[\":status\", \"200\"]]}
request_headers is required; properties (Envoy attributes by dotted path: strings, integers,
booleans, floats, nested objects) and response_headers (default: a 200) are optional.

For each request one line is written:
  {\"request\": <input line number>, \"upstream_request_headers\": [[name, value], ...] or null,
   \"local_response\": null or {\"status\", \"details\", \"headers\", \"body\"}}
Then the clock is advanced until the filter has flushed, every export call is answered with
200, and one line per export call is written:
  {\"export\": <the ExportTraceServiceRequest in OTLP/JSON>}

The filter's warnings and errors go to standard error. Malformed lines are reported with their
line number and skipped. Exit status: 0 on success, 1 if any line was malformed, 2 if the
filter could not run (missing file, rejected configuration, guest trap).";

fn main() -> ExitCode {
    let Command::Replay {
        wasm,
        config,
        requests,
        out,
    } = Cli::parse().command;
    let read = |what: &str, p: &PathBuf| {
        fs::read_to_string(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
    };
    let inputs = read("--config", &config).and_then(|c| Ok((c, read("--requests", &requests)?)));
    let (config_text, input) = match inputs {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    if !wasm.exists() {
        return fail(&format!(
            "{} does not exist; build it with `make build-wasm`",
            wasm.display()
        ));
    }
    let mut sink: Box<dyn Write> = match &out {
        Some(p) => match fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => return fail(&format!("cannot create --out {}: {e}", p.display())),
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let builder = match Host::load(&wasm) {
        Ok(b) => b,
        Err(e) => return fail(&e.to_string()),
    };
    let mut stderr = std::io::stderr();
    let result = replay(builder, &config_text, &input, &mut sink, &mut stderr);
    if let Err(e) = sink.flush() {
        return fail(&format!("cannot write the output: {e}"));
    }
    match result {
        Ok(s) if s.malformed.is_empty() => {
            eprintln!(
                "meshtrace-host: {} request(s), {} export call(s)",
                s.requests, s.exports
            );
            ExitCode::SUCCESS
        }
        Ok(s) => {
            let lines: Vec<String> = s.malformed.iter().map(|(l, _)| l.to_string()).collect();
            eprintln!(
                "meshtrace-host: {} request(s), {} export call(s); {} malformed line(s) skipped: {}",
                s.requests,
                s.exports,
                s.malformed.len(),
                lines.join(", ")
            );
            ExitCode::from(1)
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("meshtrace-host: {message}");
    ExitCode::from(2)
}
