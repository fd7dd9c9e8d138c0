//! One guest VM (one simulated Envoy worker): instantiation, start-up, and calls into the
//! guest's callbacks with traps turned into errors carrying the guest's own message.

use wasmtime::{Engine, Instance, Linker, Module, Store, WasmParams, WasmResults};

use super::abi::LogLevel;
use super::error::HostError;
use super::state::{Restriction, VmData};

/// One guest VM (one Envoy worker): its store and instance.
pub struct Vm {
    /// The wasmtime store, with the host's per-VM state.
    pub store: Store<VmData>,
    instance: Instance,
    /// Set when the guest trapped; Envoy never calls into a failed VM again.
    pub failed: Option<String>,
}

impl Vm {
    /// Instantiates the module and runs `_initialize` with hostcalls restricted as in Envoy.
    pub fn new(
        engine: &Engine,
        linker: &Linker<VmData>,
        module: &Module,
        data: VmData,
    ) -> Result<Self, HostError> {
        let worker = data.worker;
        let mut store = Store::new(engine, data);
        let instance = linker
            .instantiate(&mut store, module)
            .map_err(|e| HostError::Load {
                path: "<module>".into(),
                message: format!("instantiation failed: {e:#}"),
            })?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| HostError::Load {
                path: "<module>".into(),
                message: "the module exports no memory".into(),
            })?;
        // cpp-host prefers `malloc`; the Rust SDK on wasip1 exports only the proxy allocator.
        let allocator = instance
            .get_typed_func::<i32, i32>(&mut store, "malloc")
            .or_else(|_| {
                instance.get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            })
            .ok();
        store.data_mut().memory = Some(memory);
        store.data_mut().allocator = allocator;
        let mut vm = Self {
            store,
            instance,
            failed: None,
        };
        let entry = if vm.instance.get_func(&mut vm.store, "_initialize").is_some() {
            "_initialize"
        } else {
            "_start"
        };
        vm.store.data_mut().restriction = Restriction::Initialize;
        let r = vm.call::<(), ()>(entry, 0, ());
        vm.store.data_mut().restriction = Restriction::None;
        r.map_err(|e| match e {
            HostError::Trap { message, trap, .. } => HostError::Trap {
                worker,
                callback: entry,
                message,
                trap,
            },
            other => other,
        })?;
        Ok(vm)
    }

    /// The worker this VM simulates.
    pub fn worker(&self) -> usize {
        self.store.data().worker
    }

    /// Calls `callback` with `ctx` as the active context. A missing export is skipped, as Envoy
    /// skips callbacks a module does not define (`Ok(None)`).
    pub fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: &'static str,
        ctx: u32,
        args: P,
    ) -> Result<Option<R>, HostError> {
        let worker = self.worker();
        if let Some(message) = &self.failed {
            return Err(HostError::VmFailed {
                worker,
                message: message.clone(),
            });
        }
        let Some(func) = self.instance.get_func(&mut self.store, callback) else {
            return Ok(None);
        };
        let func = func
            .typed::<P, R>(&self.store)
            .map_err(|e| HostError::Load {
                path: "<module>".into(),
                message: format!("export {callback} has the wrong type: {e:#}"),
            })?;
        self.store.data_mut().active = ctx;
        let mark = self.store.data().world().logs.len();
        match func.call(&mut self.store, args) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let trap = format!("{e:?}");
                // The SDK's panic hook logs the panic at Critical just before the trap.
                let message = self
                    .store
                    .data()
                    .world()
                    .logs
                    .iter()
                    .skip(mark)
                    .rev()
                    .find(|l| l.worker == worker && l.level == LogLevel::Critical)
                    .map(|l| l.message.clone())
                    // Otherwise the innermost cause: the trap, or the host's reason for it.
                    .unwrap_or_else(|| e.root_cause().to_string());
                self.failed = Some(message.clone());
                Err(HostError::Trap {
                    worker,
                    callback,
                    message,
                    trap,
                })
            }
        }
    }

    /// Guest linear memory in 64 KiB wasm pages.
    pub fn memory_pages(&mut self) -> u64 {
        match self.store.data().memory {
            Some(m) => m.size(&self.store),
            None => 0,
        }
    }
}
