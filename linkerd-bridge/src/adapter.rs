//! The one place the bridge uses the meshtrace core, the native twin of the wasm glue: the
//! same call sequence (`start`, `sample`, `inject`, `begin_span`, `record_request`, and at the
//! end `finish_span` with the mesh facts, or the always-keep rules for unsampled requests) and
//! the core's export queue. Keeping every call here lets core API changes land in one file.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::Version;
use meshtrace::export::reply::ExportResult;
use meshtrace::export::span_processor::{BatchSpanProcessor, Counters, Request};
use meshtrace::headers::RequestHeaders;
use meshtrace::propagation::context::SpanIds;
use meshtrace::propagation::inject::Injection;
use meshtrace::resource::NodeInfo;
use meshtrace::span::grpc::{self, GrpcEnd};
use meshtrace::span::mesh::{EndFacts, RequestFacts};
use meshtrace::span::Finish;
use meshtrace::span::{SpanKind, SpanRecord};
use meshtrace::tracer::Tracer;
use smallvec::SmallVec;

use crate::config::BridgeConfig;
use crate::linkerd;
use crate::shared::{lock, Shared, Stats};

/// The core's per-process state: one tracer and one export queue behind one lock, held only
/// for the few microseconds a request needs them.
pub struct Core {
    /// The core's tracer, configured once.
    pub tracer: Tracer,
    exporter: BatchSpanProcessor,
    /// Finished recordings, reused so a sampled request allocates nothing in steady state.
    // Boxes on purpose: a request takes one and gives it back, so only a pointer moves.
    #[allow(clippy::vec_box)]
    pool: Vec<Box<Recording>>,
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

/// Wall-clock milliseconds, the exporter's clock.
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

impl Core {
    /// Builds the tracer with the pod's facts as the node, so the resource comes from the
    /// core's one resource mechanism (node facts, then `service_name`, then `resource`).
    pub fn new(config: &BridgeConfig, node: &NodeInfo, seed: u64) -> Self {
        let tracer = Tracer::with_node(config.core.clone(), seed, node);
        // A different stream for the exporter's jitter than for the span ids.
        let exporter = BatchSpanProcessor::new(
            tracer.config.export(),
            tracer.batch_header.clone(),
            now_ms(),
            seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
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

    /// Spans held by the exporter (queued, waiting for a retry, or in flight).
    pub fn held(&self) -> u64 {
        self.exporter.held()
    }

    /// The next request the core wants sent, as an owned body for the tokio transport.
    pub fn poll(&mut self, now_ms: u64) -> Option<(u64, bytes::Bytes)> {
        self.exporter
            .poll(now_ms)
            .map(|Request { id, body }| (id, bytes::Bytes::copy_from_slice(body)))
    }

    /// Records how request `id` ended.
    pub fn on_result(&mut self, id: u64, result: ExportResult, now_ms: u64) {
        self.exporter.on_result(id, result, now_ms);
    }

    /// Counts a request the collector refused, keeping its reason for the log.
    pub fn note_rejection(&mut self, reason: String) {
        self.exporter.note_rejection(reason);
    }

    /// When the exporter next needs a poll for a retry, if it does.
    pub fn next_wake(&self) -> Option<u64> {
        self.exporter.next_wake()
    }

    /// Export failure summaries, at most once per log interval.
    pub fn take_log(&mut self, now_ms: u64) -> Vec<String> {
        self.exporter.take_log(now_ms)
    }

    /// The export interval, in ms.
    pub fn flush_interval_ms(&self) -> u64 {
        self.tracer.config.batch.flush_interval_ms
    }
}

/// A sampled request's span and what its end needs.
///
/// Together they are most of a kilobyte, and the request's guard moves through several
/// futures and the response body: boxed, only a pointer moves. The boxes come from and go
/// back to [`Core`]'s pool, so a warm bridge allocates none.
#[derive(Default)]
pub struct Recording {
    /// The span being built.
    pub rec: SpanRecord,
    /// What the request carried that the end needs.
    pub facts: RequestFacts,
}

/// What a request left for its end: a recorded span, or (unsampled, with always-keep rules
/// configured) the ids and request headers a kept span would be built from.
pub enum Started {
    /// The request is recorded: its span, and what its end needs.
    Sampled(Box<Recording>),
    /// Unsampled, but the always-keep rules may still export it.
    Candidate {
        /// The span's ids, as propagated.
        ids: SpanIds,
        /// The request headers as sent to the application (pseudo-headers first); owned
        /// because the request is gone when the rules are applied.
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        /// When the request started, in ns since the Unix epoch.
        start_ns: u64,
        /// The request's gRPC framing (`content-type`), for the always-keep error rule.
        grpc: Option<grpc::Protocol>,
    },
}

impl Started {
    /// Whether the request is a gRPC call, whose `grpc-status` the response must be watched for.
    pub fn is_grpc(&self) -> bool {
        match self {
            Started::Sampled(recording) => recording.facts.grpc.is_some(),
            Started::Candidate { grpc, .. } => grpc.is_some(),
        }
    }
}

/// A request's header names and values, borrowed. Held on the stack: only a request with more
/// headers than this spills to the heap, so the usual request allocates nothing for them.
type Pairs<'a> = SmallVec<[(&'a [u8], &'a [u8]); 24]>;

/// Fills `out` with the request's headers as the core reads them: HTTP/2 carries the
/// pseudo-headers, which hyper keeps in the URI; HTTP/1 has only the path there and `host`
/// among the headers, which the core reads as the authority. Filled in place rather than
/// returned: the pairs are most of a kilobyte.
fn header_pairs<'a>(parts: &'a Parts, out: &mut Pairs<'a>) {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.push((b":method", parts.method.as_str().as_bytes()));
    out.push((b":path", path.as_bytes()));
    if let Some(authority) = parts.uri.authority() {
        out.push((b":authority", authority.as_str().as_bytes()));
    }
    if let Some(scheme) = parts.uri.scheme_str() {
        out.push((b":scheme", scheme.as_bytes()));
    }
    out.extend(
        parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
    );
}

/// Runs the core on an incoming request: extracts and decides, rewrites the propagation
/// headers in `parts` for the application, and returns what the end of the request needs.
pub fn start_request(shared: &Shared, parts: &mut Parts) -> Option<Started> {
    let start_ns = now_ns();
    Stats::add(&shared.stats.started, 1);
    // Gathered before the lock: it is held only for the core's own work.
    let mut pairs = Pairs::new();
    header_pairs(parts, &mut pairs);
    let mut headers = RequestHeaders::default();
    headers.fill_from_pairs(pairs.iter().copied());
    let mut guard = lock(&shared.core);
    let core = &mut *guard;
    let (started, keep_ids, call) = {
        let decision = core
            .tracer
            .start(&headers, now_ns, Some(&mut core.injection));
        if decision.record {
            let mut recording = core.pool.pop().unwrap_or_default();
            let Recording { rec, facts } = &mut *recording;
            core.tracer.begin_span(&decision, &headers, start_ns, rec);
            *facts = core
                .tracer
                .record_request(&headers, pairs.iter().copied(), rec);
            // Read from the request as it arrived: the injection only ever writes and removes
            // propagation headers, never Linkerd's.
            let (client_id, orig_proto) = linkerd_headers(pairs.iter().copied());
            linkerd_attributes(client_id, orig_proto, rec);
            (Some(recording), None, None)
        } else {
            let call = headers.content_type.and_then(grpc::protocol);
            (None, core.tracer.may_keep().then(|| decision.ids()), call)
        }
    };
    // Both borrow the request, whose headers the injection now rewrites.
    drop(headers);
    drop(pairs);
    apply(&core.injection, &mut parts.headers);
    drop(guard);
    match started {
        Some(recording) => {
            Stats::add(&shared.stats.sampled, 1);
            Some(Started::Sampled(recording))
        }
        None => keep_ids.map(|ids| {
            // Taken after injection: a kept span shows the context the application received,
            // as the filter's log-phase headers do.
            let mut pairs = Pairs::new();
            header_pairs(parts, &mut pairs);
            Started::Candidate {
                ids,
                headers: pairs
                    .iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect(),
                start_ns,
                grpc: call,
            }
        }),
    }
}

/// W3C trace context's headers, the ones nearly every traced request gets.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `name` as a header name. `HeaderName::from_static` validates its argument each time it
/// runs, so the names injected on most requests are constants.
fn header_name(name: &'static str) -> HeaderName {
    match name {
        "traceparent" => TRACEPARENT,
        "tracestate" => TRACESTATE,
        _ => HeaderName::from_static(name),
    }
}

/// Writes the core's injection into the request headers going to the application.
fn apply(injection: &Injection, headers: &mut http::HeaderMap) {
    for (name, value) in injection.headers() {
        // The core writes ASCII it generated itself; a value it cannot turn into a header is
        // skipped rather than failing the request.
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(header_name(name), v);
        }
    }
    for name in &injection.remove {
        headers.remove(*name);
    }
}

/// Linkerd's facts about the peer and the protocol, as span attributes: `client_id` is
/// `l5d-client-id`, `orig_proto` is `l5d-orig-proto`.
fn linkerd_attributes(client_id: Option<&[u8]>, orig_proto: Option<&[u8]>, rec: &mut SpanRecord) {
    if let Some(id) = client_id.and_then(linkerd::parse_identity) {
        rec.str("mesh.peer.identity", id.full);
        if let Some(sa) = id.service_account {
            rec.str("mesh.peer.service_account", sa);
        }
        if let Some(ns) = id.namespace {
            rec.str("mesh.peer.namespace", ns);
        }
    }
    if let Some(p) = orig_proto {
        // The semconv form for a captured request header is a string array.
        rec.str_array("http.request.header.l5d-orig-proto", [p]);
    }
}

/// The first `l5d-client-id` and `l5d-orig-proto` among `pairs`, found in one pass over the
/// names already in hand (two header map lookups would hash both names on every request).
fn linkerd_headers<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    let (mut client_id, mut orig_proto) = (None, None);
    for (name, value) in pairs {
        match name {
            b"l5d-client-id" if client_id.is_none() => client_id = Some(value),
            b"l5d-orig-proto" if orig_proto.is_none() => orig_proto = Some(value),
            _ => {}
        }
    }
    (client_id, orig_proto)
}

/// What the bridge knows when the response is over.
#[derive(Clone, Copy, Debug)]
pub struct End<'a> {
    /// The status sent to the client; `None` when none was sent.
    pub status: Option<u16>,
    /// The HTTP version of the exchange.
    pub version: Version,
    /// The downstream peer, `ip:port` (the Linkerd proxy, usually).
    pub peer: &'a str,
    /// A gRPC call's `grpc-status`, from the response trailers or, for a Trailers-Only reply,
    /// its headers (parsed with [`grpc::Code::parse`]).
    pub grpc_status: Option<grpc::Code>,
}

/// Finishes a request: a sampled span is completed, an unsampled one goes through the
/// always-keep rules. Returns true when a full batch is waiting.
pub fn finish_request(shared: &Shared, started: Started, end: &End<'_>) -> bool {
    let end_ns = now_ns();
    let mut guard = lock(&shared.core);
    let core = &mut *guard;
    let status = end.status.map(i64::from);
    let mut recording = match started {
        Started::Sampled(recording) => recording,
        Started::Candidate {
            ids,
            headers,
            start_ns,
            grpc,
        } => {
            let duration = end_ns.saturating_sub(start_ns);
            // The bridge only ever makes server spans.
            let call = grpc.map(|protocol| GrpcEnd {
                protocol,
                sent: end.grpc_status,
                kind: SpanKind::Server,
            });
            // The bridge has no Envoy response flags: no fault is ever injected here.
            let Some(reason) = core
                .tracer
                .keep_call(status, 0, Some(duration), call, now_ns)
            else {
                return false;
            };
            Stats::add(&shared.stats.kept, 1);
            let pairs = || headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
            let h = RequestHeaders::from_pairs(pairs());
            let mut recording = core.pool.pop().unwrap_or_default();
            let Recording { rec, facts } = &mut *recording;
            core.tracer.begin_kept_span(&ids, &h, start_ns, reason, rec);
            *facts = core.tracer.record_request(&h, pairs(), rec);
            let (client_id, orig_proto) = linkerd_headers(pairs());
            linkerd_attributes(client_id, orig_proto, rec);
            recording
        }
    };
    let Recording { rec, facts } = &mut *recording;
    let protocol: &[u8] = match end.version {
        Version::HTTP_09 => b"HTTP/0.9",
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_2 => b"HTTP/2",
        Version::HTTP_3 => b"HTTP/3",
        _ => b"HTTP/1.1",
    };
    let finish = Finish {
        end_ns,
        status_code: status,
        protocol: Some(protocol),
        source_address: Some(end.peer.as_bytes()),
        // The bridge only ever sees inbound traffic.
        kind: SpanKind::Server,
        request: facts,
        // No Envoy cluster, route or flags: the Linkerd facts are request attributes.
        mesh: EndFacts::default(),
        grpc_status: end.grpc_status,
        // No aws_lambda filter in a Linkerd sidecar.
        lambda: None,
    };
    core.tracer.finish_span(rec, &finish);
    let _ = core.exporter.push(rec);
    let due = core.exporter.due(end_ns / 1_000_000);
    if core.pool.len() < POOL_MAX {
        core.pool.push(recording);
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linkerd_headers_are_the_first_of_each_name() {
        let pairs: [(&[u8], &[u8]); 5] = [
            (b":path", b"/"),
            (b"l5d-orig-proto", b"HTTP/1.1"),
            (
                b"l5d-client-id",
                b"web.default.serviceaccount.identity.linkerd.cluster.local",
            ),
            (b"l5d-client-id", b"other"),
            (b"l5d-orig-proto", b"HTTP/2"),
        ];
        assert_eq!(
            linkerd_headers(pairs.into_iter()),
            (
                Some(&b"web.default.serviceaccount.identity.linkerd.cluster.local"[..]),
                Some(&b"HTTP/1.1"[..])
            )
        );
        assert_eq!(linkerd_headers(pairs[..1].iter().copied()), (None, None));
    }
}
