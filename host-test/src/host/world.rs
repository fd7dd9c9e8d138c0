//! State shared by every VM of one host, as Envoy shares it across worker threads: the clock,
//! stats, shared data, shared queues, logs and outgoing calls.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::abi::LogLevel;
use super::headers::HeaderMap;

/// The virtual clock starts here (2026-01-01T00:00:00Z) so timestamps are realistic and fixed.
pub const START_REALTIME_NS: u64 = 1_767_225_600_000_000_000;

/// One line the guest logged (through `proxy_log`, or `fd_write` to stdout/stderr).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The worker VM that logged it.
    pub worker: usize,
    /// The log level.
    pub level: LogLevel,
    /// The message.
    pub message: String,
}

/// A stat, shared by name across VMs like Envoy's stats store.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(i64),
    /// A histogram's recorded values.
    Histogram(Vec<u64>),
}

/// An outgoing `proxy_http_call` waiting for the test to answer it.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpCall {
    /// The call's token.
    pub token: u32,
    /// The worker that dispatched it.
    pub worker: usize,
    /// The root context the call belongs to (Envoy attributes calls to the root).
    pub root_context: u32,
    /// The target cluster.
    pub cluster: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// The call's timeout, ms.
    pub timeout_ms: u32,
    /// Virtual monotonic time of the dispatch, ns.
    pub sent_at_ns: u64,
}

impl HttpCall {
    /// A request header of the call (`:path`, `:authority`, `content-type`, ...).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// An outgoing unary `proxy_grpc_call`.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpcCall {
    /// The call's token.
    pub token: u32,
    /// The worker that dispatched it.
    pub worker: usize,
    /// The root context the call belongs to.
    pub root_context: u32,
    /// The target (a serialized `GrpcService` or a cluster name).
    pub upstream: Vec<u8>,
    /// The service name.
    pub service: String,
    /// The method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: HeaderMap,
    /// The request message.
    pub message: Vec<u8>,
    /// The call's timeout, ms.
    pub timeout_ms: u32,
}

/// A shared queue, keyed by `(vm_id, name)`; `proxy_on_queue_ready` goes to its owner.
#[derive(Debug)]
pub struct Queue {
    /// The registering VM's `vm_id`.
    pub vm_id: String,
    /// The queue's name.
    pub name: String,
    /// The worker that registered it.
    pub owner_worker: usize,
    /// The root context that registered it.
    pub owner_root: u32,
    /// Items enqueued, oldest first.
    pub items: VecDeque<Vec<u8>>,
}

/// Everything shared between the host's VMs.
#[derive(Debug)]
pub struct World {
    /// Virtual monotonic time, ns; realtime is `START_REALTIME_NS` plus this.
    pub monotonic_ns: u64,
    /// Every log line.
    pub logs: Vec<LogEntry>,
    /// Stats by name.
    pub metrics: BTreeMap<String, MetricValue>,
    /// Shared data by `(vm_id, key)`: value and CAS.
    pub shared_data: HashMap<(String, Vec<u8>), (Vec<u8>, u32)>,
    /// The next CAS value.
    pub next_cas: u32,
    /// Queue id `i + 1` is `queues[i]`.
    pub queues: Vec<Queue>,
    /// `(worker, root, queue_id)` notifications posted but not yet delivered.
    pub queue_ready: VecDeque<(usize, u32, u32)>,
    /// Calls waiting for an answer, by token.
    pub http_calls: BTreeMap<u32, HttpCall>,
    /// gRPC calls waiting for an answer, by token.
    pub grpc_calls: BTreeMap<u32, GrpcCall>,
    /// Every http call ever dispatched, answered or not, in order.
    pub http_call_log: Vec<HttpCall>,
    /// The next token.
    pub next_token: u32,
    /// Every `proxy_get_property` path asked for, dotted, in order, when the settings ask for
    /// it: the per-request host-call budget is asserted on this.
    pub property_reads: Vec<String>,
}

impl Default for World {
    fn default() -> Self {
        Self {
            // Envoy's monotonic clock is never zero at start; a non-zero origin catches guests
            // that confuse "unset" with "time zero".
            monotonic_ns: 1_000_000_000,
            logs: Vec::new(),
            metrics: BTreeMap::new(),
            shared_data: HashMap::new(),
            next_cas: 1,
            queues: Vec::new(),
            queue_ready: VecDeque::new(),
            http_calls: BTreeMap::new(),
            property_reads: Vec::new(),
            grpc_calls: BTreeMap::new(),
            http_call_log: Vec::new(),
            next_token: 1,
        }
    }
}

impl World {
    /// Wall-clock now, ns since the Unix epoch.
    pub fn realtime_ns(&self) -> u64 {
        START_REALTIME_NS + self.monotonic_ns - 1_000_000_000
    }

    /// A fresh call token.
    pub fn token(&mut self) -> u32 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Records a log line of `worker`.
    pub fn log(&mut self, worker: usize, level: LogLevel, message: String) {
        self.logs.push(LogEntry {
            worker,
            level,
            message,
        });
    }
}
