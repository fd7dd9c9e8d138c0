//! The one place the bridge uses the meshtrace core, the native twin of the wasm glue: gather
//! borrowed headers, `Tracer::start`, `inject`, `begin_span`, and at the end `finish_span` and
//! the core's export queue. Keeping every call here lets core API changes land in one file.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::Version;
use meshtrace::exporter::{Counters, ExportResult, Exporter};
use meshtrace::headers::RequestHeaders;
use meshtrace::otlp::{BatchHeader, ResourceValue};
use meshtrace::span::{SpanKind, SpanRecord};
use meshtrace::tracer::{Finish, Injection, Tracer};

use crate::config::BridgeConfig;
use crate::linkerd;
use crate::shared::{lock, Shared, Stats};

/// The core's per-process state: one tracer and one export queue behind one lock, held only
/// for the few microseconds a request needs them.
pub struct Core {
    tracer: Tracer,
    exporter: Exporter,
    /// Finished records, reused so a sampled request allocates nothing in steady state.
    pool: Vec<SpanRecord>,
    injection: Injection,
}

/// Records kept for reuse at most; more would only hold memory after a burst.
const POOL_MAX: usize = 256;

/// Wall-clock nanoseconds since the Unix epoch, as OTLP wants them.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Core {
    /// Builds the tracer from the shared config, and an exporter whose every batch carries
    /// `resource` (the mesh and Kubernetes attributes) instead of the core's default resource.
    pub fn new(config: &BridgeConfig, resource: &[(String, ResourceValue)], seed: u64) -> Self {
        let tracer = Tracer::new(config.core.clone(), seed);
        let pairs: Vec<(&str, ResourceValue)> = resource
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let exporter = Exporter::new(
            &tracer.config,
            BatchHeader::new(&pairs),
            now_ns() / 1_000_000,
        );
        Self {
            tracer,
            exporter,
            pool: Vec::new(),
            injection: Injection::default(),
        }
    }

    /// The export counters, for `/metrics`.
    pub fn counters(&self) -> Counters {
        self.exporter.counters
    }

    /// Cuts the next due batch into `body`; with `force`, whatever is queued goes out now
    /// (shutdown flush). Returns its span count.
    pub fn next_batch(&mut self, now_ms: u64, force: bool, body: &mut Vec<u8>) -> Option<usize> {
        let now = if force && self.exporter.queued() > 0 {
            u64::MAX
        } else {
            now_ms
        };
        self.exporter.next_batch(now, body)
    }

    pub fn queued(&self) -> usize {
        self.exporter.queued()
    }

    /// Records how an export ended.
    pub fn on_result(&mut self, spans: usize, bytes: usize, result: ExportResult) {
        self.exporter.on_result(spans, bytes, result);
    }

    /// A summary of export failures, at most once per flush interval.
    pub fn take_log(&mut self, now_ms: u64) -> Option<String> {
        self.exporter.take_log(now_ms)
    }

    pub fn flush_interval_ms(&self) -> u64 {
        self.tracer.config.batch.flush_interval_ms
    }
}

/// Runs the core on an incoming request: extracts and decides, rewrites the propagation
/// headers in `parts` for the application, and returns the started span when sampled.
pub fn start_request(shared: &Shared, parts: &mut Parts) -> Option<SpanRecord> {
    let start_ns = now_ns();
    Stats::add(&shared.stats.started, 1);
    let mut guard = lock(&shared.core);
    let core = &mut *guard;
    let rec = {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // HTTP/2 carries these as pseudo-headers, which hyper keeps in the URI; HTTP/1 has only
        // the path there and `host` among the headers, which the core reads as the authority.
        let pseudo = [
            (":method", Some(parts.method.as_str())),
            (":path", Some(path)),
            (":authority", parts.uri.authority().map(|a| a.as_str())),
            (":scheme", parts.uri.scheme_str()),
        ];
        let pseudo = pseudo
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.as_bytes(), v.as_bytes())));
        let fields = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()));
        let headers = RequestHeaders::from_pairs(pseudo.chain(fields));
        let decision = core.tracer.start(&headers);
        core.tracer.inject(&decision, &headers, &mut core.injection);
        decision.sampled().then(|| {
            let mut rec = core.pool.pop().unwrap_or_default();
            core.tracer
                .begin_span(&decision, &headers, start_ns, &mut rec);
            rec
        })
    };
    apply(&core.injection, &mut parts.headers);
    drop(guard);
    let mut rec = rec?;
    Stats::add(&shared.stats.sampled, 1);
    linkerd_attributes(&parts.headers, &mut rec);
    Some(rec)
}

/// Writes the core's injection into the request headers going to the application.
fn apply(injection: &Injection, headers: &mut http::HeaderMap) {
    for (name, value) in injection.headers() {
        // The core writes ASCII it generated itself; a value it cannot turn into a header is
        // skipped rather than failing the request.
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    for name in &injection.remove {
        headers.remove(*name);
    }
}

/// Linkerd's facts about the peer and the protocol, as span attributes.
fn linkerd_attributes(headers: &http::HeaderMap, rec: &mut SpanRecord) {
    if let Some(id) = headers
        .get("l5d-client-id")
        .and_then(|v| linkerd::parse_identity(v.as_bytes()))
    {
        rec.str("mesh.peer.identity", id.full);
        if let Some(sa) = id.service_account {
            rec.str("mesh.peer.service_account", sa);
        }
        if let Some(ns) = id.namespace {
            rec.str("mesh.peer.namespace", ns);
        }
    }
    if let Some(p) = headers.get("l5d-orig-proto") {
        // The semconv form for a captured request header is a string array.
        rec.str_array("http.request.header.l5d-orig-proto", [p.as_bytes()]);
    }
}

/// What the bridge knows when the response is over.
#[derive(Clone, Copy, Debug)]
pub struct End<'a> {
    /// The status sent to the client; `None` when none was sent.
    pub status: Option<u16>,
    pub version: Version,
    /// The downstream peer, `ip:port` (the Linkerd proxy, usually).
    pub peer: &'a str,
}

/// Finishes a sampled span and queues it for export; true when a full batch is waiting.
pub fn finish_request(shared: &Shared, mut rec: SpanRecord, end: &End<'_>) -> bool {
    let protocol: &[u8] = match end.version {
        Version::HTTP_09 => b"HTTP/0.9",
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_2 => b"HTTP/2",
        Version::HTTP_3 => b"HTTP/3",
        _ => b"HTTP/1.1",
    };
    let finish = Finish {
        end_ns: now_ns(),
        status_code: end.status.map(i64::from),
        protocol: Some(protocol),
        source_address: Some(end.peer.as_bytes()),
        // The bridge only ever sees inbound traffic.
        kind: SpanKind::Server,
    };
    let mut core = lock(&shared.core);
    core.tracer.finish_span(&mut rec, &finish);
    let _ = core.exporter.push(&rec);
    let due = core.exporter.due(finish.end_ns / 1_000_000);
    if core.pool.len() < POOL_MAX {
        core.pool.push(rec);
    }
    due
}
