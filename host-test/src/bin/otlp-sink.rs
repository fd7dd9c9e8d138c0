//! `otlp-sink`: a standalone OTLP/HTTP receiver that decodes every export with
//! `opentelemetry-proto` and prints one line per span (or only counts, with `--quiet`).
//! Useful to point a local Envoy running meshtrace at, and as the collector for benchmarks.
//! With `--grpc-port` it also serves OTLP/gRPC, printed and counted the same way.

use std::time::Duration;

use meshtrace_host_test::grpc_sink::GrpcSink;
use meshtrace_host_test::sink::OtlpSink;
use opentelemetry_proto::tonic::trace::v1::Span;

const HELP: &str = "otlp-sink: print the spans an OTLP/HTTP exporter sends

usage: otlp-sink [--port PORT] [--grpc-port PORT] [--quiet]

  --port PORT        OTLP/HTTP on 127.0.0.1:PORT (default 4318; 0 picks a free port)
  --grpc-port PORT   also OTLP/gRPC (h2c) on 127.0.0.1:PORT
  --quiet            print a count of spans every second instead of each span
";

fn main() -> anyhow::Result<()> {
    let mut port = 4318u16;
    let mut grpc_port = None;
    let mut quiet = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                let v = args.next().unwrap_or_default();
                port = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--port: expected a port number, got {v:?}"))?;
            }
            "--grpc-port" => {
                let v = args.next().unwrap_or_default();
                grpc_port = Some(v.parse::<u16>().map_err(|_| {
                    anyhow::anyhow!("--grpc-port: expected a port number, got {v:?}")
                })?);
            }
            "--quiet" => quiet = true,
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n\n{HELP}"),
        }
    }
    let sink = OtlpSink::start(port)?;
    let grpc = grpc_port.map(GrpcSink::start).transpose()?;
    if quiet {
        sink.count_only();
        if let Some(g) = &grpc {
            g.count_only();
        }
    }
    println!("otlp-sink listening on http://{}/v1/traces", sink.addr);
    if let Some(g) = &grpc {
        println!("otlp-sink listening for OTLP/gRPC on {}", g.addr);
    }
    // Spans printed so far, per protocol.
    let (mut printed, mut printed_grpc) = (0usize, 0usize);
    loop {
        std::thread::sleep(Duration::from_millis(if quiet { 1000 } else { 100 }));
        if quiet {
            // Count-only mode keeps no requests, so report the running counters.
            let (mut requests, mut spans) = sink.counts();
            if let Some(g) = &grpc {
                let (r, s) = g.counts();
                requests += r;
                spans += s;
            }
            println!("{spans} spans in {requests} requests");
            continue;
        }
        print_new(&sink.spans(), &mut printed);
        if let Some(g) = &grpc {
            print_new(&g.spans(), &mut printed_grpc);
        }
    }
}

/// Prints the spans after the first `printed`, one line each, and advances `printed`.
fn print_new(spans: &[Span], printed: &mut usize) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for s in spans.get(*printed..).unwrap_or_default() {
        println!(
            "{} {} parent={} kind={} {}",
            hex(&s.trace_id),
            hex(&s.span_id),
            hex(&s.parent_span_id),
            s.kind,
            s.name
        );
    }
    *printed = spans.len();
}
