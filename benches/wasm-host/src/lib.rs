//! Runs wasm32-wasip1 modules in-process with wasmtime (Cranelift, default settings, as Envoy's
//! wasmtime runtime would): WASI commands such as the filter's unit tests, and the kernel
//! benchmark module.
//!
//! Imports a module declares but this host does not provide (the proxy-wasm ABI the filter's
//! glue links against) are defined as traps: the tests and benchmarks never reach them.

use std::path::Path;

use wasmtime::{Config, Engine, Instance, Linker, Module, Store, TypedFunc};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

fn engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    Ok(Engine::new(&config)?)
}

fn instantiate(
    engine: &Engine,
    path: &Path,
    wasi: WasiP1Ctx,
) -> anyhow::Result<(Store<WasiP1Ctx>, Instance)> {
    let module = Module::from_file(engine, path)
        .map_err(|e| anyhow::anyhow!("compiling {}: {e:?}", path.display()))?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    p1::add_to_linker_sync(&mut linker, |s| s)?;
    linker.define_unknown_imports_as_traps(&module)?;
    let mut store = Store::new(engine, wasi);
    let instance = linker.instantiate(&mut store, &module)?;
    Ok((store, instance))
}

/// Runs a WASI command module with `args` (the first is the program name), stdio inherited and
/// the current directory preopened as `.`. Returns its exit code.
pub fn run_command(path: &Path, args: &[String]) -> anyhow::Result<i32> {
    let engine = engine()?;
    let mut b = WasiCtxBuilder::new();
    b.inherit_stdio().inherit_env().args(args);
    // Test harnesses look for files relative to the working directory; failures of this are
    // not fatal for the tests, so a directory we cannot open is simply not offered.
    let _ = b.preopened_dir(".", ".", wasmtime_wasi::FsPerms::ReadWrite);
    let (mut store, instance) = instantiate(&engine, path, b.build_p1())?;
    let start: TypedFunc<(), ()> = instance.get_typed_func(&mut store, "_start")?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(e.into()),
        },
    }
}

/// The benchmark module (`benches/wasm-kernels` built for wasm32-wasip1), ready to run.
pub struct BenchModule {
    store: Store<WasiP1Ctx>,
    run: TypedFunc<(u32, u64), u64>,
    /// How many operations the module's `OPS` table lists.
    pub ops: u32,
}

impl BenchModule {
    /// Compiles and instantiates the module at `path` with WASI.
    ///
    /// # Errors
    /// When the file cannot be read, compiled or instantiated.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let engine = engine()?;
        let (mut store, instance) = instantiate(
            &engine,
            path,
            WasiCtxBuilder::new().inherit_stdio().build_p1(),
        )?;
        let count: TypedFunc<(), u32> = instance.get_typed_func(&mut store, "bench_count")?;
        let ops = count.call(&mut store, ())?;
        let run = instance.get_typed_func(&mut store, "bench_run")?;
        Ok(Self { store, run, ops })
    }

    /// Runs op `op` `iters` times inside the module; returns its checksum.
    pub fn run(&mut self, op: u32, iters: u64) -> anyhow::Result<u64> {
        Ok(self.run.call(&mut self.store, (op, iters))?)
    }
}
