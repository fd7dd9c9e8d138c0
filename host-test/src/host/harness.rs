//! [`Host`]: loads the compiled filter and drives it through Envoy's callback sequence, one VM
//! per simulated worker, on a virtual clock the test advances.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::{Engine, Linker, Module, WasmParams};

use super::abi::{action, LogLevel};
use super::error::HostError;
use super::headers::HeaderMap;
use super::properties::{PropValue, PropertyTree};
use super::request::{Exchange, Req, Upstream};
use super::state::{CallResponse, Phase, Plugin, Settings, StreamState, VmData};
use super::vm::Vm;
use super::world::{GrpcCall, HttpCall, LogEntry, MetricValue, World};

/// The engine and linker, built once per process; compiled modules are cached by path.
struct Runtime {
    engine: Engine,
    linker: Linker<VmData>,
    modules: Mutex<HashMap<(PathBuf, u64, std::time::SystemTime), Module>>,
}

fn runtime() -> Result<&'static Runtime, HostError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let engine = Engine::default();
            let linker = super::imports::linker(&engine).map_err(|e| format!("{e:#}"))?;
            Ok(Runtime {
                engine,
                linker,
                modules: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
        .map_err(|e| HostError::Load {
            path: "<runtime>".into(),
            message: e.clone(),
        })
}

/// Compiles `bytes`, reusing a machine-code file in the temp directory from an earlier run:
/// Cranelift built without optimizations (the test profile) takes seconds per compile, and
/// every test binary would pay it.
fn compile_cached(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Module> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    let file = std::env::temp_dir().join(format!("meshtrace-host-{:016x}.cwasm", h.finish()));
    if file.exists() {
        // SAFETY: the file was written by `Module::serialize` below for these exact bytes;
        // wasmtime rejects it (and we recompile) if the engine or version differ.
        if let Ok(m) = unsafe { Module::deserialize_file(engine, &file) } {
            return Ok(m);
        }
    }
    let module = Module::new(engine, bytes)?;
    if let Ok(code) = module.serialize() {
        // Written aside and renamed, so a parallel test binary never reads half a file.
        let tmp = file.with_extension(format!("{}.tmp", std::process::id()));
        if std::fs::write(&tmp, code).is_ok() && std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(module)
}

/// Configures a host before its VMs start.
pub struct HostBuilder {
    module: Module,
    workers: usize,
    settings: Settings,
    plugins: Vec<Plugin>,
}

/// The name, root id and vm id `configure` uses, matching the project's Envoy configs.
pub const PLUGIN_NAME: &str = "meshtrace";

impl HostBuilder {
    fn new(module: Module) -> Self {
        Self {
            module,
            workers: 1,
            settings: Settings {
                vm_id: PLUGIN_NAME.into(),
                vm_config: Vec::new(),
                env: Vec::new(),
                log_level: LogLevel::Info,
                clusters: None,
                properties: PropertyTree::default(),
                seed: 0x6d65_7368_7472_6163,
                record_property_reads: false,
            },
            plugins: Vec::new(),
        }
    }

    /// Number of worker VMs (Envoy runs one VM per worker thread).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The `vm_id` every VM runs with (the singleton's queue is registered under it).
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.settings.vm_id = vm_id.into();
        self
    }

    /// `VmConfig.configuration`, read in `proxy_on_vm_start`.
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.settings.vm_config = bytes.into();
        self
    }

    /// An environment variable (`VmConfig.environment_variables`), seen through WASI.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.settings.env.push((key.into(), value.into()));
        self
    }

    /// What `proxy_get_log_level` answers.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.settings.log_level = level;
        self
    }

    /// Restricts `proxy_http_call` to these clusters (others get BadArgument, like an unknown
    /// Envoy cluster). By default every cluster exists.
    pub fn clusters(mut self, names: &[&str]) -> Self {
        self.settings.clusters = Some(names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
        self
    }

    /// A property every stream sees (per-request properties override it). Paths under
    /// `xds.node` are also visible to root contexts, as in Envoy.
    pub fn property(mut self, path: &str, value: impl Into<PropValue>) -> Self {
        self.settings.properties.set_dotted(path, value.into());
        self
    }

    /// Logs every property path the guest reads (and single header reads as `map[name]`), for
    /// [`Host::take_property_reads`].
    pub fn record_property_reads(mut self) -> Self {
        self.settings.record_property_reads = true;
        self
    }

    /// Seed of the WASI `random_get` bytes; runs are reproducible for a given seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }

    /// Adds a plugin (one HTTP filter in the chain, one root context per VM).
    pub fn plugin(mut self, name: &str, root_id: &str, config: impl Into<Vec<u8>>) -> Self {
        self.plugins.push(Plugin {
            name: name.into(),
            root_id: root_id.into(),
            config: config.into(),
        });
        self
    }

    /// Starts the VMs with one plugin named `meshtrace` configured with `json`.
    pub fn configure(self, json: &str) -> Result<Host, HostError> {
        self.plugin(PLUGIN_NAME, PLUGIN_NAME, json.as_bytes().to_vec())
            .start()
    }

    /// Starts every VM: `_initialize`, then per plugin context_create, vm_start, configure.
    pub fn start(self) -> Result<Host, HostError> {
        if self.plugins.is_empty() {
            return Err(HostError::Usage("start() needs at least one plugin".into()));
        }
        let rt = runtime()?;
        let world = Arc::new(Mutex::new(World::default()));
        let settings = Arc::new(self.settings);
        let plugins = Arc::new(self.plugins);
        let mut host = Host {
            vms: Vec::new(),
            world: world.clone(),
        };
        for worker in 0..self.workers {
            let data = VmData::new(worker, world.clone(), settings.clone(), plugins.clone());
            let mut vm = Vm::new(&rt.engine, &rt.linker, &self.module, data)?;
            for (p, plugin) in plugins.iter().enumerate() {
                let root = vm.store.data_mut().new_context(0);
                vm.store.data_mut().roots.insert(root, p);
                let mark = host.world().logs.len();
                vm.call::<(i32, i32), ()>("proxy_on_context_create", root, (root as i32, 0))?;
                let vm_config = settings.vm_config.len() as i32;
                let ok = vm.call::<(i32, i32), i32>(
                    "proxy_on_vm_start",
                    root,
                    (root as i32, vm_config),
                )?;
                if ok == Some(0) {
                    return Err(HostError::VmStartRejected {
                        worker,
                        logs: host.log_messages_since(mark),
                    });
                }
                vm.store.data_mut().configuring = Some(p);
                let r = vm.call::<(i32, i32), i32>(
                    "proxy_on_configure",
                    root,
                    (root as i32, plugin.config.len() as i32),
                );
                vm.store.data_mut().configuring = None;
                if r? == Some(0) {
                    return Err(HostError::ConfigRejected {
                        worker,
                        logs: host.log_messages_since(mark),
                    });
                }
            }
            host.vms.push(vm);
        }
        host.pump()?;
        Ok(host)
    }
}

/// A running host: worker VMs sharing one world (clock, stats, shared data and queues).
pub struct Host {
    vms: Vec<Vm>,
    world: Arc<Mutex<World>>,
}

impl Host {
    /// Compiles (once per process and file version) the wasm at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<HostBuilder, HostError> {
        let path = path.as_ref();
        let err = |message: String| HostError::Load {
            path: path.display().to_string(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        let key = (
            path.to_path_buf(),
            meta.len(),
            meta.modified().map_err(|e| err(e.to_string()))?,
        );
        let rt = runtime()?;
        let cached = rt
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let module = match cached {
            Some(m) => m,
            None => {
                let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
                let m = compile_cached(&rt.engine, &bytes).map_err(|e| err(format!("{e:#}")))?;
                rt.modules
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, m.clone());
                m
            }
        };
        super::imports::check(&module)?;
        Ok(HostBuilder::new(module))
    }

    /// Compiles a module from bytes (binary or WAT), e.g. to test import checks.
    pub fn load_bytes(bytes: &[u8]) -> Result<HostBuilder, HostError> {
        let rt = runtime()?;
        let module = Module::new(&rt.engine, bytes).map_err(|e| HostError::Load {
            path: "<bytes>".into(),
            message: format!("{e:#}"),
        })?;
        super::imports::check(&module)?;
        Ok(HostBuilder::new(module))
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_messages_since(&self, mark: usize) -> Vec<String> {
        self.world().logs[mark..]
            .iter()
            .map(|l| l.message.clone())
            .collect()
    }

    fn vm(&mut self, worker: usize) -> Result<&mut Vm, HostError> {
        let n = self.vms.len();
        self.vms.get_mut(worker).ok_or_else(|| {
            HostError::Usage(format!("worker {worker} does not exist ({n} workers)"))
        })
    }

    /// How many worker VMs run.
    pub fn workers(&self) -> usize {
        self.vms.len()
    }

    /// Runs one exchange through every plugin's stream context, in Envoy's order.
    pub fn request(&mut self, req: Req) -> Result<Exchange, HostError> {
        let worker = req.worker;
        let r = self.run_stream(req);
        if r.is_err() {
            // Envoy tears the stream down after a failure; so do we.
            if let Ok(vm) = self.vm(worker) {
                let d = vm.store.data_mut();
                if let Some(s) = d.stream.take() {
                    for c in s.contexts {
                        d.contexts.remove(&c);
                    }
                }
            }
        }
        r
    }

    fn run_stream(&mut self, req: Req) -> Result<Exchange, HostError> {
        let w = req.worker;
        let contexts = self.open_stream(&req)?;
        let mut paused_in = self.request_path(&req)?;
        let forwarded = paused_in.is_none() && !self.has_local(w);
        let upstream = forwarded.then(|| {
            let s = self.stream_mut(w);
            s.phase = Phase::Upstream;
            Upstream {
                headers: s.request_headers.clone(),
                body: s.request_body.clone(),
                trailers: s.request_trailers.clone(),
            }
        });
        if forwarded && req.latency_ms > 0 {
            self.advance(req.latency_ms)?;
        }
        let mut downstream_headers = HeaderMap::new();
        if paused_in.is_none() {
            (downstream_headers, paused_in) = self.response_path(&req)?;
        }
        let stream = self.close_stream(w, &contexts)?;
        self.pump()?;
        Ok(Exchange {
            upstream,
            local_response: stream.local_response,
            downstream_headers,
            paused_in,
            contexts,
            filter_state: stream.filter_state,
        })
    }

    /// Puts the stream in place and creates one stream context per plugin (root).
    fn open_stream(&mut self, req: &Req) -> Result<Vec<u32>, HostError> {
        let w = req.worker;
        let vm = self.vm(w)?;
        if let Some(message) = &vm.failed {
            return Err(HostError::VmFailed {
                worker: w,
                message: message.clone(),
            });
        }
        let mut props = vm.store.data().settings.properties.clone();
        props.merge(&req.properties);
        let mut stream = StreamState::new(props, &vm.store.data().world());
        stream.request_headers = req.headers.clone();
        stream.request_body = req.body.clone();
        stream.request_trailers = req.trailers.clone();
        vm.store.data_mut().stream = Some(stream);
        let roots: Vec<u32> = vm.store.data().roots.keys().copied().collect();
        let mut contexts = Vec::with_capacity(roots.len());
        for root in roots {
            let vm = self.vm(w)?;
            let ctx = vm.store.data_mut().new_context(root);
            contexts.push(ctx);
            self.stream_mut(w).contexts.push(ctx);
            self.vm(w)?.call::<(i32, i32), ()>(
                "proxy_on_context_create",
                ctx,
                (ctx as i32, root as i32),
            )?;
        }
        Ok(contexts)
    }

    /// Request headers, body and trailers, filters in chain order; stops at a local reply or
    /// a pause (returned).
    fn request_path(&mut self, req: &Req) -> Result<Option<&'static str>, HostError> {
        let w = req.worker;
        let (has_body, has_trailers) = (!req.body.is_empty(), !req.trailers.is_empty());
        let n = req.headers.len() as i32;
        let eos = i32::from(!has_body && !has_trailers);
        let mut paused = self.phase(w, Phase::RequestHeaders, false, |ctx| (ctx, n, eos))?;
        if paused.is_none() && has_body && !self.has_local(w) {
            let len = req.body.len() as i32;
            let eos = i32::from(!has_trailers);
            paused = self.phase(w, Phase::RequestBody, false, |ctx| (ctx, len, eos))?;
        }
        if paused.is_none() && has_trailers && !self.has_local(w) {
            let n = req.trailers.len() as i32;
            paused = self.phase(w, Phase::RequestTrailers, false, |ctx| (ctx, n))?;
        }
        Ok(paused)
    }

    /// The upstream's answer, or the local reply, through response headers, body and
    /// trailers, filters in reverse order. Returns the headers the client gets and any pause.
    fn response_path(&mut self, req: &Req) -> Result<(HeaderMap, Option<&'static str>), HostError> {
        let w = req.worker;
        let (headers, body, trailers) = match self.stream_mut(w).local_response.clone() {
            Some(l) => {
                let mut h = HeaderMap::from_pairs(&[(":status", l.status.to_string())]);
                for (k, v) in l.headers.iter() {
                    h.add(k, v);
                }
                if !l.body.is_empty() {
                    h.replace(b"content-length", l.body.len().to_string().as_bytes());
                    h.replace(b"content-type", b"text/plain");
                }
                (h, l.body, HeaderMap::new())
            }
            None => (
                req.response.headers.clone(),
                req.response.body.clone(),
                req.response.trailers.clone(),
            ),
        };
        let (n, len, n_trailers) = (
            headers.len() as i32,
            body.len() as i32,
            trailers.len() as i32,
        );
        {
            let s = self.stream_mut(w);
            s.response_code = headers.get(":status").and_then(|c| c.parse().ok());
            s.response_headers = headers;
            s.response_body = body;
            s.response_trailers = trailers;
        }
        let eos = i32::from(len == 0 && n_trailers == 0);
        let mut paused = self.phase(w, Phase::ResponseHeaders, true, |ctx| (ctx, n, eos))?;
        let downstream = self.stream_mut(w).response_headers.clone();
        if paused.is_none() && len > 0 {
            let eos = i32::from(n_trailers == 0);
            paused = self.phase(w, Phase::ResponseBody, true, |ctx| (ctx, len, eos))?;
        }
        if paused.is_none() && n_trailers > 0 {
            paused = self.phase(w, Phase::ResponseTrailers, true, |ctx| (ctx, n_trailers))?;
        }
        Ok((downstream, paused))
    }

    /// Access log, then done and delete per context (Envoy's `onDestroy`); takes the stream.
    fn close_stream(&mut self, w: usize, contexts: &[u32]) -> Result<StreamState, HostError> {
        let now = self.world().monotonic_ns;
        {
            let s = self.stream_mut(w);
            s.phase = Phase::Log;
            s.end_monotonic_ns = now;
        }
        for &ctx in contexts {
            self.vm(w)?
                .call::<i32, ()>("proxy_on_log", ctx, ctx as i32)?;
        }
        self.stream_mut(w).phase = Phase::Done;
        for &ctx in contexts {
            let vm = self.vm(w)?;
            vm.call::<i32, i32>("proxy_on_done", ctx, ctx as i32)?;
            vm.call::<i32, ()>("proxy_on_delete", ctx, ctx as i32)?;
            vm.store.data_mut().contexts.remove(&ctx);
        }
        self.vm(w)?
            .store
            .data_mut()
            .stream
            .take()
            .ok_or_else(|| HostError::Usage(format!("worker {w} lost its stream")))
    }

    /// The stream in flight on worker `w` (present for the whole of `run_stream`).
    fn stream_mut(&mut self, w: usize) -> &mut StreamState {
        self.vms[w]
            .store
            .data_mut()
            .stream
            .as_mut()
            .expect("run_stream keeps the stream in place until it ends")
    }

    fn has_local(&mut self, w: usize) -> bool {
        self.stream_mut(w).local_response.is_some()
    }

    /// Runs the callback of `phase` on every stream context (reversed on the response path)
    /// with `args(ctx)`; returns the callback name if one paused without resuming. A local
    /// reply stops the iteration.
    fn phase<P: WasmParams>(
        &mut self,
        w: usize,
        phase: Phase,
        reverse: bool,
        args: impl Fn(i32) -> P,
    ) -> Result<Option<&'static str>, HostError> {
        let callback = match phase {
            Phase::RequestHeaders => "proxy_on_request_headers",
            Phase::RequestBody => "proxy_on_request_body",
            Phase::RequestTrailers => "proxy_on_request_trailers",
            Phase::ResponseHeaders => "proxy_on_response_headers",
            Phase::ResponseBody => "proxy_on_response_body",
            Phase::ResponseTrailers => "proxy_on_response_trailers",
            other => {
                return Err(HostError::Usage(format!(
                    "{other:?} has no filter callback"
                )))
            }
        };
        self.stream_mut(w).phase = phase;
        let mut contexts = self.stream_mut(w).contexts.clone();
        if reverse {
            contexts.reverse();
        }
        for ctx in contexts {
            let r = self
                .vm(w)?
                .call::<P, i32>(callback, ctx, args(ctx as i32))?;
            if let Some(p) = self.stopped(w, callback, reverse, r) {
                return Ok(p);
            }
        }
        Ok(None)
    }

    /// `Some(outcome)` when the chain stops here: a local reply (`Some(None)`), or a pause
    /// the guest did not resume during the callback (`Some(Some(callback))`).
    fn stopped(
        &mut self,
        w: usize,
        callback: &'static str,
        response: bool,
        action_result: Option<i32>,
    ) -> Option<Option<&'static str>> {
        let s = self.stream_mut(w);
        if s.local_response.is_some() {
            return Some(None);
        }
        let resumed = s.continued.contains(&i32::from(response));
        match action_result {
            Some(a) if a != action::CONTINUE && !resumed => Some(Some(callback)),
            _ => None,
        }
    }

    /// Delivers posted `proxy_on_queue_ready` notifications until none are left.
    fn pump(&mut self) -> Result<(), HostError> {
        loop {
            let next = self.world().queue_ready.pop_front();
            let Some((worker, root, queue)) = next else {
                return Ok(());
            };
            self.vm(worker)?.call::<(i32, i32), ()>(
                "proxy_on_queue_ready",
                root,
                (root as i32, queue as i32),
            )?;
        }
    }

    /// Advances the virtual clock by `ms`, firing every tick and call timeout due on the way,
    /// in time order.
    pub fn advance(&mut self, ms: u64) -> Result<(), HostError> {
        let target = self.world().monotonic_ns + ms * 1_000_000;
        loop {
            let mut next: Option<(u64, u8, usize, u32)> = None;
            let mut consider = |e: (u64, u8, usize, u32)| {
                if next.is_none_or(|n| e < n) {
                    next = Some(e);
                }
            };
            for vm in &self.vms {
                if vm.failed.is_some() {
                    continue;
                }
                for (root, t) in &vm.store.data().ticks {
                    consider((t.next_ns, 0, vm.store.data().worker, *root));
                }
            }
            for c in self.world().http_calls.values() {
                if c.timeout_ms > 0 {
                    consider((
                        c.sent_at_ns + u64::from(c.timeout_ms) * 1_000_000,
                        1,
                        c.worker,
                        c.token,
                    ));
                }
            }
            let Some((at, kind, worker, id)) = next.filter(|n| n.0 <= target) else {
                break;
            };
            {
                let mut world = self.world();
                world.monotonic_ns = world.monotonic_ns.max(at);
            }
            if kind == 0 {
                let now = self.world().monotonic_ns;
                let vm = self.vm(worker)?;
                // Envoy re-arms the timer before calling on_tick.
                if let Some(t) = vm.store.data_mut().ticks.get_mut(&id) {
                    t.next_ns = now + u64::from(t.period_ms) * 1_000_000;
                }
                vm.call::<i32, ()>("proxy_on_tick", id, id as i32)?;
            } else {
                // Envoy's async client answers a timed-out call with a local 504.
                let body = b"upstream request timeout".to_vec();
                let headers = HeaderMap::from_pairs(&[
                    (":status", "504"),
                    ("content-length", &body.len().to_string()),
                    ("content-type", "text/plain"),
                ]);
                self.deliver_http(id, Some((headers, body, HeaderMap::new())))?;
            }
            self.pump()?;
        }
        let mut world = self.world();
        world.monotonic_ns = world.monotonic_ns.max(target);
        Ok(())
    }

    /// Virtual realtime, ns since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.world().realtime_ns()
    }

    /// Calls dispatched and not yet answered, by token.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        self.world().http_calls.values().cloned().collect()
    }

    /// Every call dispatched since start, answered or not.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.world().http_call_log.clone()
    }

    /// Answers a call with `status` and `body` (headers `:status` and `content-length`).
    pub fn answer(&mut self, token: u32, status: u16, body: &[u8]) -> Result<(), HostError> {
        let headers = HeaderMap::from_pairs(&[
            (":status", status.to_string()),
            ("content-length", body.len().to_string()),
        ]);
        self.deliver_http(token, Some((headers, body.to_vec(), HeaderMap::new())))
    }

    /// Answers a call with exactly these headers, body and trailers.
    pub fn answer_with(
        &mut self,
        token: u32,
        headers: HeaderMap,
        body: &[u8],
        trailers: HeaderMap,
    ) -> Result<(), HostError> {
        self.deliver_http(token, Some((headers, body.to_vec(), trailers)))
    }

    /// Fails a call as Envoy does on a reset or refused connection: no headers, and
    /// `proxy_get_status` reports BrokenConnection "reset".
    pub fn fail(&mut self, token: u32) -> Result<(), HostError> {
        self.deliver_http(token, None)
    }

    fn deliver_http(
        &mut self,
        token: u32,
        response: Option<(HeaderMap, Vec<u8>, HeaderMap)>,
    ) -> Result<(), HostError> {
        let call =
            self.world().http_calls.remove(&token).ok_or_else(|| {
                HostError::Usage(format!("no pending http call with token {token}"))
            })?;
        let vm = self.vm(call.worker)?;
        let root = call.root_context;
        let (sizes, status) = match response {
            Some((headers, body, trailers)) => {
                let sizes = (headers.len(), body.len(), trailers.len());
                vm.store.data_mut().call_response = Some(CallResponse {
                    headers,
                    body,
                    trailers,
                });
                (sizes, (0, Vec::new()))
            }
            None => (
                (0, 0, 0),
                (
                    super::abi::Status::BrokenConnection as u32,
                    b"reset".to_vec(),
                ),
            ),
        };
        vm.store.data_mut().status = status;
        let r = vm.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            root,
            (
                root as i32,
                token as i32,
                sizes.0 as i32,
                sizes.1 as i32,
                sizes.2 as i32,
            ),
        );
        vm.store.data_mut().call_response = None;
        r?;
        self.pump()
    }

    /// gRPC calls dispatched and not yet answered.
    pub fn pending_grpc_calls(&self) -> Vec<GrpcCall> {
        self.world().grpc_calls.values().cloned().collect()
    }

    /// Answers a unary gRPC call with a response message (`proxy_on_grpc_receive`).
    pub fn answer_grpc(&mut self, token: u32, message: &[u8]) -> Result<(), HostError> {
        let call = self.take_grpc(token)?;
        let vm = self.vm(call.worker)?;
        let root = call.root_context;
        vm.store.data_mut().call_response = Some(CallResponse {
            body: message.to_vec(),
            ..Default::default()
        });
        let r = vm.call::<(i32, i32, i32), ()>(
            "proxy_on_grpc_receive",
            root,
            (root as i32, token as i32, message.len() as i32),
        );
        vm.store.data_mut().call_response = None;
        r?;
        self.pump()
    }

    /// Closes a gRPC call with a non-OK status (`proxy_on_grpc_close`).
    pub fn fail_grpc(&mut self, token: u32, code: u32, message: &str) -> Result<(), HostError> {
        let call = self.take_grpc(token)?;
        let vm = self.vm(call.worker)?;
        let root = call.root_context;
        vm.store.data_mut().status = (code, message.as_bytes().to_vec());
        vm.call::<(i32, i32, i32), ()>(
            "proxy_on_grpc_close",
            root,
            (root as i32, token as i32, code as i32),
        )?;
        self.pump()
    }

    fn take_grpc(&mut self, token: u32) -> Result<GrpcCall, HostError> {
        self.world()
            .grpc_calls
            .remove(&token)
            .ok_or_else(|| HostError::Usage(format!("no pending grpc call with token {token}")))
    }

    /// A counter or gauge by name (gauges as their two's-complement u64).
    pub fn metric(&self, name: &str) -> Option<u64> {
        match self.world().metrics.get(name)? {
            MetricValue::Counter(v) => Some(*v),
            MetricValue::Gauge(v) => Some(*v as u64),
            MetricValue::Histogram(_) => None,
        }
    }

    /// Any stat by name, histograms included.
    pub fn metric_value(&self, name: &str) -> Option<MetricValue> {
        self.world().metrics.get(name).cloned()
    }

    /// Every stat the guest defined, by name.
    pub fn metrics(&self) -> Vec<(String, MetricValue)> {
        self.world()
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Everything logged so far, in order.
    /// The property paths read since the last call (dotted, in order), and forgets them; empty
    /// unless the host was built with [`HostBuilder::record_property_reads`].
    pub fn take_property_reads(&mut self) -> Vec<String> {
        std::mem::take(&mut self.world().property_reads)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.world().logs.clone()
    }

    /// Log messages at `level` or above.
    pub fn log_messages(&self, level: LogLevel) -> Vec<String> {
        self.world()
            .logs
            .iter()
            .filter(|l| l.level >= level)
            .map(|l| l.message.clone())
            .collect()
    }

    /// Removes and returns the logs so far.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.world().logs)
    }

    /// Guest memory of worker 0, in 64 KiB pages.
    pub fn memory_pages(&mut self) -> u64 {
        self.vms[0].memory_pages()
    }

    /// Guest memory of `worker`, in 64 KiB pages.
    ///
    /// # Errors
    /// [`HostError::Usage`] for a worker that does not exist.
    pub fn memory_pages_of(&mut self, worker: usize) -> Result<u64, HostError> {
        Ok(self.vm(worker)?.memory_pages())
    }

    /// The tick period (ms) of a worker's root contexts, first plugin first.
    pub fn tick_periods(&mut self, worker: usize) -> Result<Vec<(u32, u32)>, HostError> {
        Ok(self
            .vm(worker)?
            .store
            .data()
            .ticks
            .iter()
            .map(|(root, t)| (*root, t.period_ms))
            .collect())
    }

    /// A shared-data value (with its CAS) under the host's vm_id.
    pub fn shared_data(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.world()
            .shared_data
            .get(&(vm_id.to_string(), key.to_vec()))
            .cloned()
    }

    /// Items waiting in the shared queue `(vm_id, name)`.
    pub fn queue_len(&self, vm_id: &str, name: &str) -> Option<usize> {
        self.world()
            .queues
            .iter()
            .find(|q| q.vm_id == vm_id && q.name == name)
            .map(|q| q.items.len())
    }
}
