//! The export callback's work, for callgrind: a backlog of `spans` realistic spans queued at
//! once (a burst at 100% sampling), then one `tick` per millisecond, each sending what
//! `poll` gives (the filter's `on_tick`), every request answered OK before the next tick.
//! Prints the requests each tick sent; run under
//! `valgrind --tool=callgrind --toggle-collect='export_tick::tick'` for the instructions.
//!
//! `export_tick <none|gzip> [max_export_bytes] [spans] [steady_rps]`: with `steady_rps`,
//! spans arrive at that rate over ten virtual seconds instead of all at once.

use std::hint::black_box;

use meshtrace::export::span_processor::BatchSpanProcessor;
use meshtrace::ids::{SpanId, TraceId};
use meshtrace_wasm_kernels as k;

#[inline(never)]
fn tick(e: &mut BatchSpanProcessor, now: u64, ids: &mut Vec<u64>) {
    while let Some(r) = e.poll(now) {
        black_box(r.body);
        ids.push(r.id);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("gzip", String::as_str);
    let max_export: u64 = args.get(2).map_or(65536, |a| a.parse().unwrap());
    let spans: u64 = args.get(3).map_or(2048, |a| a.parse().unwrap());
    let rps: Option<u64> = args.get(4).map(|a| a.parse().unwrap());
    let json = format!(
        r#"{{"collector":{{"cluster":"c","compression":"{mode}"}},"batch":{{"max_export_bytes":{max_export},"max_queue":100000,"max_queue_bytes":268435456}}}}"#
    );
    let config = meshtrace::config::load(json.as_bytes()).unwrap();
    let tracer = meshtrace::tracer::Tracer::new(config, 42);
    let mut e = BatchSpanProcessor::new(tracer.config.export(), tracer.batch_header.clone(), 0, 42);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut span = |i: u64| {
        let mut s = k::typical_span();
        let (a, b) = (next(), next());
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&a.to_le_bytes());
        id[8..].copy_from_slice(&b.to_le_bytes());
        s.trace_id = TraceId(id);
        s.span_id = SpanId(next().to_le_bytes());
        s.parent_span_id = Some(SpanId(next().to_le_bytes()));
        s.start_ns += i * 1_713_117;
        s.end_ns = s.start_ns + next() % 50_000_000;
        s.str(
            "url.path",
            format!("/api/users/{}", next() % 100_000).as_bytes(),
        );
        s.str(
            "client.address",
            format!("10.0.{}.{}", next() % 256, next() % 256).as_bytes(),
        );
        s
    };
    let mut ids = Vec::new();
    let (mut requests, mut busy_ticks, mut max_per_tick) = (0u64, 0u64, 0usize);
    let end_ms = if rps.is_some() { 11_000 } else { 5_000 };
    let mut pushed = 0u64;
    if rps.is_none() {
        for i in 0..spans {
            e.push(&span(i)).unwrap();
        }
        pushed = spans;
    }
    for now in 1..=end_ms {
        if let Some(rps) = rps {
            // Spans of this millisecond (ten seconds of arrivals).
            while now <= 10_000 && pushed * 1000 < rps * now {
                e.push(&span(pushed)).unwrap();
                pushed += 1;
            }
        }
        ids.clear();
        tick(&mut e, now, &mut ids);
        if !ids.is_empty() {
            busy_ticks += 1;
            max_per_tick = max_per_tick.max(ids.len());
            requests += ids.len() as u64;
            if rps.is_none() {
                println!("tick {now}: {} request(s)", ids.len());
            }
        }
        for &id in &ids {
            e.on_result(
                id,
                meshtrace::export::reply::ExportResult::Ok { rejected: 0 },
                now,
            );
        }
    }
    let c = &e.counters;
    println!(
        "{mode} max_export_bytes={max_export}: {pushed} spans, {requests} requests in {busy_ticks} ticks (at most {max_per_tick} a tick), exported {}, bytes_uncompressed {}, bytes_sent {}",
        c.spans_exported, c.bytes_uncompressed, c.bytes_sent
    );
}
