//! Per-VM state (the wasmtime store data): contexts, the stream in flight with its phase, the
//! http-call response being delivered, timers, metric ids. Phase rules live here, so every
//! hostcall asks the same question the same way: "is this map or buffer available now?".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Memory, TypedFunc};

use super::abi::{buffer, map, LogLevel, Status};
use super::headers::HeaderMap;
use super::properties::{segments, PropValue, PropertyTree};
use super::world::World;

/// Settings shared by every VM of a host.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `vm_id` of every VM.
    pub vm_id: String,
    /// The VM configuration (`proxy_on_vm_start`).
    pub vm_config: Vec<u8>,
    /// Environment variables WASI exposes.
    pub env: Vec<(String, String)>,
    /// The lowest level the guest's logs are kept at.
    pub log_level: LogLevel,
    /// Clusters `proxy_http_call` accepts; `None` accepts any name.
    pub clusters: Option<BTreeSet<String>>,
    /// Properties every stream sees (listener, cluster, node); overridden per request.
    pub properties: PropertyTree,
    /// Seed of the per-worker `random_get` generator.
    pub seed: u64,
    /// Log every `proxy_get_property` path, and every single header read as `map[name]`, in
    /// `World::property_reads` (off: long runs would
    /// grow the log without bound).
    pub record_property_reads: bool,
}

/// One plugin (an Envoy filter config): its root context in every VM.
#[derive(Clone, Debug)]
pub struct Plugin {
    /// The plugin's name.
    pub name: String,
    /// Its `root_id`.
    pub root_id: String,
    /// Its configuration (`proxy_on_configure`).
    pub config: Vec<u8>,
}

/// Which hostcalls are allowed right now (cpp-host restricts them during start-up and while
/// the host calls the guest's allocator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restriction {
    /// Every hostcall is allowed.
    None,
    /// During `_initialize` and `_start`.
    Initialize,
    /// While the host calls the guest's allocator.
    Allocate,
}

/// The stream phase; header maps and bodies exist only in their own phase (and the access-log
/// copies in `Log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The context exists; no callback ran.
    Created,
    /// `on_http_request_headers`.
    RequestHeaders,
    /// `on_http_request_body`.
    RequestBody,
    /// `on_http_request_trailers`.
    RequestTrailers,
    /// Forwarded; waiting for the upstream.
    Upstream,
    /// `on_http_response_headers`.
    ResponseHeaders,
    /// `on_http_response_body`.
    ResponseBody,
    /// `on_http_response_trailers`.
    ResponseTrailers,
    /// `on_log`.
    Log,
    /// `on_done` ran.
    Done,
}

/// A local reply the guest asked for with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// The status code.
    pub status: u32,
    /// The response code details.
    pub details: String,
    /// The body.
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: HeaderMap,
    /// The gRPC status (-1: none).
    pub grpc_status: i32,
}

/// The HTTP stream being processed by this VM.
#[derive(Debug)]
pub struct StreamState {
    /// Where the stream is.
    pub phase: Phase,
    /// One stream context per plugin, in filter-chain order.
    pub contexts: Vec<u32>,
    /// Request headers.
    pub request_headers: HeaderMap,
    /// The request body.
    pub request_body: Vec<u8>,
    /// Request trailers.
    pub request_trailers: HeaderMap,
    /// Response headers.
    pub response_headers: HeaderMap,
    /// The response body.
    pub response_body: Vec<u8>,
    /// Response trailers.
    pub response_trailers: HeaderMap,
    /// The response code once response headers have arrived.
    pub response_code: Option<i64>,
    /// Host-wide properties merged with this request's.
    pub properties: PropertyTree,
    /// Values the guest stored with `proxy_set_property`, by raw path.
    pub set_properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Every `proxy_set_property` in order, as Envoy's filter state names it: `wasm.` and the
    /// path (a multi-segment path keeps its NULs, as in Envoy).
    pub filter_state: Vec<(String, Vec<u8>)>,
    /// The local reply the guest asked for, if any.
    pub local_response: Option<LocalResponse>,
    /// Wall-clock start, ns since the Unix epoch.
    pub start_realtime_ns: u64,
    /// Monotonic start, ns.
    pub start_monotonic_ns: u64,
    /// Monotonic end, ns.
    pub end_monotonic_ns: u64,
    /// `proxy_continue_stream` / `proxy_close_stream` calls, by stream type.
    pub continued: Vec<i32>,
    /// `proxy_close_stream` calls, by stream type.
    pub closed: Vec<i32>,
}

impl StreamState {
    /// A stream in `Created` with `properties`, starting now on `world`'s clock.
    pub fn new(properties: PropertyTree, world: &World) -> Self {
        Self {
            phase: Phase::Created,
            contexts: Vec::new(),
            request_headers: HeaderMap::new(),
            request_body: Vec::new(),
            request_trailers: HeaderMap::new(),
            response_headers: HeaderMap::new(),
            response_body: Vec::new(),
            response_trailers: HeaderMap::new(),
            response_code: None,
            properties,
            set_properties: HashMap::new(),
            filter_state: Vec::new(),
            local_response: None,
            start_realtime_ns: world.realtime_ns(),
            start_monotonic_ns: world.monotonic_ns,
            end_monotonic_ns: world.monotonic_ns,
            continued: Vec::new(),
            closed: Vec::new(),
        }
    }
}

/// An http-call (or gRPC) response while its callback runs.
#[derive(Debug, Default)]
pub struct CallResponse {
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: HeaderMap,
}

/// A root context's timer on the virtual clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// The period, ms; 0 disables the timer.
    pub period_ms: u32,
    /// When it fires next, monotonic ns.
    pub next_ns: u64,
}

/// The store data of one VM (one simulated Envoy worker).
pub struct VmData {
    /// The worker this VM simulates.
    pub worker: usize,
    /// State shared by every VM.
    pub world: Arc<Mutex<World>>,
    /// Settings shared by every VM.
    pub settings: Arc<Settings>,
    /// The plugins configured in this VM.
    pub plugins: Arc<Vec<Plugin>>,
    /// The guest's memory, once instantiated.
    pub memory: Option<Memory>,
    /// The guest's `proxy_on_memory_allocate`.
    pub allocator: Option<TypedFunc<i32, i32>>,
    /// Which hostcalls are allowed now.
    pub restriction: Restriction,
    /// The context hostcalls act for (the callback's, or the one set effective).
    pub active: u32,
    /// Context id → its root context id (0 for a root).
    pub contexts: BTreeMap<u32, u32>,
    /// Root context id → plugin index.
    pub roots: BTreeMap<u32, usize>,
    /// The next context id to hand out.
    pub next_context_id: u32,
    /// The plugin whose configuration is readable (during `proxy_on_configure`).
    pub configuring: Option<usize>,
    /// The stream being processed, if any.
    pub stream: Option<StreamState>,
    /// The http-call or gRPC response whose callback runs.
    pub call_response: Option<CallResponse>,
    /// `proxy_get_status`: code and message of the last call outcome.
    pub status: (u32, Vec<u8>),
    /// Root context id → its timer.
    pub ticks: BTreeMap<u32, Tick>,
    /// Metric id → name.
    pub metric_ids: HashMap<u32, String>,
    /// The next metric id per type.
    pub next_metric_id: [u32; 3],
    /// State of the `random_get` generator (splitmix64), seeded per worker.
    pub random_state: u64,
}

impl VmData {
    /// The data of worker `worker`'s VM.
    pub fn new(
        worker: usize,
        world: Arc<Mutex<World>>,
        settings: Arc<Settings>,
        plugins: Arc<Vec<Plugin>>,
    ) -> Self {
        let random_state = settings.seed ^ (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            worker,
            world,
            settings,
            plugins,
            memory: None,
            allocator: None,
            restriction: Restriction::None,
            active: 0,
            contexts: BTreeMap::new(),
            roots: BTreeMap::new(),
            next_context_id: 1,
            configuring: None,
            stream: None,
            call_response: None,
            status: (0, Vec::new()),
            ticks: BTreeMap::new(),
            metric_ids: HashMap::new(),
            next_metric_id: [0, 1, 2],
            random_state,
        }
    }

    /// Locks the shared world.
    pub fn world(&self) -> MutexGuard<'_, World> {
        // A poisoned lock means a test already panicked; keep going so it reports its own error.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates a context id, as cpp-host does (per VM, from 1).
    pub fn new_context(&mut self, root: u32) -> u32 {
        let id = self.next_context_id;
        self.next_context_id += 1;
        self.contexts.insert(id, root);
        id
    }

    /// The root of the active context (itself when it is a root).
    pub fn active_root(&self) -> u32 {
        match self.contexts.get(&self.active) {
            Some(0) | None => self.active,
            Some(root) => *root,
        }
    }

    /// The stream, when the active context is one of its contexts.
    fn stream(&self) -> Option<&StreamState> {
        self.stream
            .as_ref()
            .filter(|s| s.contexts.contains(&self.active))
    }

    fn stream_mut(&mut self) -> Option<&mut StreamState> {
        let active = self.active;
        self.stream
            .as_mut()
            .filter(|s| s.contexts.contains(&active))
    }

    /// A header map for reading: `Err(BadArgument)` when it does not exist now, or
    /// `Err(NotFound)` in the access-log phase (Envoy's statuses for a value lookup).
    pub fn map(&self, map_type: i32) -> Result<&HeaderMap, Status> {
        if matches!(
            map_type,
            map::HTTP_CALL_RESPONSE_HEADERS
                | map::HTTP_CALL_RESPONSE_TRAILERS
                | map::GRPC_INITIAL_METADATA
                | map::GRPC_TRAILING_METADATA
        ) {
            let r = self.call_response.as_ref().ok_or(Status::BadArgument)?;
            return Ok(match map_type {
                map::HTTP_CALL_RESPONSE_HEADERS | map::GRPC_INITIAL_METADATA => &r.headers,
                _ => &r.trailers,
            });
        }
        let Some(s) = self.stream() else {
            return Err(Status::BadArgument);
        };
        let log = s.phase == Phase::Log;
        let missing = if log {
            Status::NotFound
        } else {
            Status::BadArgument
        };
        match (map_type, s.phase) {
            (map::REQUEST_HEADERS, Phase::RequestHeaders | Phase::Log) => Ok(&s.request_headers),
            (map::REQUEST_TRAILERS, Phase::RequestTrailers) => Ok(&s.request_trailers),
            (map::RESPONSE_HEADERS, Phase::ResponseHeaders | Phase::Log) => Ok(&s.response_headers),
            (map::RESPONSE_TRAILERS, Phase::ResponseTrailers | Phase::Log) => {
                Ok(&s.response_trailers)
            }
            _ => Err(missing),
        }
    }

    /// A header map for writing: only live maps in their own phase; access-log copies and
    /// call responses are read-only.
    pub fn map_mut(&mut self, map_type: i32) -> Result<&mut HeaderMap, Status> {
        let s = self.stream_mut().ok_or(Status::BadArgument)?;
        match (map_type, s.phase) {
            (map::REQUEST_HEADERS, Phase::RequestHeaders) => Ok(&mut s.request_headers),
            (map::REQUEST_TRAILERS, Phase::RequestTrailers) => Ok(&mut s.request_trailers),
            (map::RESPONSE_HEADERS, Phase::ResponseHeaders) => Ok(&mut s.response_headers),
            (map::RESPONSE_TRAILERS, Phase::ResponseTrailers) => Ok(&mut s.response_trailers),
            _ => Err(Status::BadArgument),
        }
    }

    /// A buffer for reading, or `NotFound` when it does not exist now.
    pub fn buffer(&self, buffer_type: i32) -> Result<&[u8], Status> {
        match buffer_type {
            buffer::VM_CONFIGURATION => Ok(&self.settings.vm_config),
            buffer::PLUGIN_CONFIGURATION => self
                .configuring
                .and_then(|p| self.plugins.get(p))
                .map(|p| p.config.as_slice())
                .ok_or(Status::NotFound),
            buffer::HTTP_CALL_RESPONSE_BODY | buffer::GRPC_RECEIVE_BUFFER => self
                .call_response
                .as_ref()
                .map(|r| r.body.as_slice())
                .ok_or(Status::NotFound),
            buffer::HTTP_REQUEST_BODY => match self.stream() {
                Some(s) if s.phase == Phase::RequestBody => Ok(&s.request_body),
                _ => Err(Status::NotFound),
            },
            buffer::HTTP_RESPONSE_BODY => match self.stream() {
                Some(s) if s.phase == Phase::ResponseBody => Ok(&s.response_body),
                _ => Err(Status::NotFound),
            },
            _ => Err(Status::NotFound),
        }
    }

    /// A body buffer for writing (the only writable buffers).
    pub fn buffer_mut(&mut self, buffer_type: i32) -> Result<&mut Vec<u8>, Status> {
        let readable = self.buffer(buffer_type).is_ok();
        match (buffer_type, self.stream_mut()) {
            (buffer::HTTP_REQUEST_BODY, Some(s)) if s.phase == Phase::RequestBody => {
                Ok(&mut s.request_body)
            }
            (buffer::HTTP_RESPONSE_BODY, Some(s)) if s.phase == Phase::ResponseBody => {
                Ok(&mut s.response_body)
            }
            // Configuration and call-response buffers are constant in Envoy.
            _ if readable => Err(Status::BadArgument),
            _ => Err(Status::NotFound),
        }
    }

    /// Stores a `proxy_set_property` value in the stream's filter state, where the stream's
    /// contexts find it again. Like Envoy, NotFound without a stream (a root context has no
    /// stream info to hold it).
    pub fn set_property(&mut self, path: Vec<u8>, value: Vec<u8>) -> Result<(), Status> {
        let s = self.stream_mut().ok_or(Status::NotFound)?;
        let key = format!("wasm.{}", String::from_utf8_lossy(&path));
        s.filter_state.push((key, value.clone()));
        s.set_properties.insert(path, value);
        Ok(())
    }

    /// `proxy_get_property` for the active context: `Ok(bytes)` (possibly empty) or NotFound.
    pub fn property(&self, path: &[u8]) -> Result<Vec<u8>, Status> {
        let segs = segments(path);
        let plugin = self
            .roots
            .get(&self.active_root())
            .and_then(|p| self.plugins.get(*p));
        match (segs.as_slice(), plugin) {
            ([b"plugin_name"], Some(p)) => return Ok(p.name.as_bytes().to_vec()),
            ([b"plugin_root_id"], Some(p)) => return Ok(p.root_id.as_bytes().to_vec()),
            ([b"plugin_vm_id"], _) => return Ok(self.settings.vm_id.as_bytes().to_vec()),
            _ => {}
        }
        let Some(s) = self.stream() else {
            // Root contexts have no stream info: only the node is reachable there.
            if segs.len() >= 2 && segs[0] == b"xds" && segs[1] == b"node" {
                return self
                    .settings
                    .properties
                    .get(&segs)
                    .map(PropValue::encode)
                    .ok_or(Status::NotFound);
            }
            return Err(Status::NotFound);
        };
        if let Some(v) = s.set_properties.get(path) {
            return Ok(v.clone());
        }
        if let Some(v) = s.properties.get(&segs) {
            return Ok(v.encode());
        }
        derived(s, &segs).ok_or(Status::NotFound)
    }
}

/// Attributes Envoy derives from the stream itself, each in the phases where Envoy has it.
fn derived(s: &StreamState, segs: &[&[u8]]) -> Option<Vec<u8>> {
    let request_map = matches!(s.phase, Phase::RequestHeaders | Phase::Log);
    let response_map = matches!(s.phase, Phase::ResponseHeaders | Phase::Log);
    let header = |name: &str| s.request_headers.get_bytes(name).map(<[u8]>::to_vec);
    match segs {
        [b"request", b"time"] => Some(PropValue::Int(s.start_realtime_ns as i64).encode()),
        [b"request", b"duration"] if s.phase == Phase::Log => {
            Some(PropValue::Int((s.end_monotonic_ns - s.start_monotonic_ns) as i64).encode())
        }
        [b"request", field] if request_map => match *field {
            b"path" => header(":path"),
            b"url_path" => {
                header(":path").map(|p| p.split(|&b| b == b'?').next().unwrap_or(&[]).to_vec())
            }
            b"query" => header(":path").and_then(|p| {
                p.iter()
                    .position(|&b| b == b'?')
                    .map(|i| p[i + 1..].to_vec())
            }),
            b"host" => header(":authority"),
            b"method" => header(":method"),
            b"scheme" => header(":scheme"),
            b"id" => header("x-request-id"),
            b"useragent" => header("user-agent"),
            b"referer" => header("referer"),
            b"headers" => Some(super::pairs::encode(&s.request_headers.joined())),
            _ => None,
        },
        [b"request", b"headers", name] if request_map => s
            .request_headers
            .joined()
            .into_iter()
            .find(|(k, _)| k.as_slice() == *name)
            .map(|(_, v)| v),
        [b"response", b"code"] => s.response_code.map(|c| PropValue::Int(c).encode()),
        [b"response", b"headers"] if response_map => {
            Some(super::pairs::encode(&s.response_headers.joined()))
        }
        [b"response", b"headers", name] if response_map => s
            .response_headers
            .joined()
            .into_iter()
            .find(|(k, _)| k.as_slice() == *name)
            .map(|(_, v)| v),
        [b"response", b"size"] if s.phase == Phase::Log => {
            Some(PropValue::Int(s.response_body.len() as i64).encode())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(phase: Phase) -> StreamState {
        let mut s = StreamState::new(PropertyTree::default(), &World::default());
        s.phase = phase;
        s.request_headers = HeaderMap::from_pairs(&[
            (":path", "/a/b?x=1"),
            (":method", "PUT"),
            (":authority", "h:1"),
            ("x-m", "1"),
            ("x-m", "2"),
        ]);
        s.response_headers = HeaderMap::from_pairs(&[(":status", "204")]);
        s.response_code = Some(204);
        s
    }

    fn get(s: &StreamState, path: &[u8]) -> Option<Vec<u8>> {
        derived(s, &segments(path))
    }

    #[test]
    fn request_attributes_exist_with_their_headers() {
        let s = stream(Phase::RequestHeaders);
        assert_eq!(get(&s, b"request\0path").unwrap(), b"/a/b?x=1");
        assert_eq!(get(&s, b"request\0url_path").unwrap(), b"/a/b");
        assert_eq!(get(&s, b"request\0query").unwrap(), b"x=1");
        assert_eq!(get(&s, b"request\0method").unwrap(), b"PUT");
        assert_eq!(get(&s, b"request\0host").unwrap(), b"h:1");
        assert_eq!(get(&s, b"request\0headers\0x-m").unwrap(), b"1,2");
        assert_eq!(
            get(&s, b"request\0headers").unwrap(),
            crate::host::pairs::encode(&[
                (":path", "/a/b?x=1"),
                (":method", "PUT"),
                (":authority", "h:1"),
                ("x-m", "1,2")
            ])
        );
        assert_eq!(get(&s, b"request\0duration"), None);
        assert_eq!(get(&s, b"response\0headers"), None);
        for phase in [Phase::RequestBody, Phase::ResponseHeaders, Phase::Done] {
            assert_eq!(get(&stream(phase), b"request\0path"), None, "{phase:?}");
        }
        let log = stream(Phase::Log);
        assert_eq!(get(&log, b"request\0path").unwrap(), b"/a/b?x=1");
        assert_eq!(get(&log, b"request\0duration").unwrap(), 0i64.to_le_bytes());
        assert_eq!(get(&log, b"response\0code").unwrap(), 204i64.to_le_bytes());
        assert_eq!(get(&log, b"response\0headers\0:status").unwrap(), b"204");
        assert_eq!(
            get(&log, b"request\0time").unwrap(),
            1_767_225_600_000_000_000i64.to_le_bytes()
        );
    }
}
