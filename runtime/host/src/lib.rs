//! ferray's WebAssembly host: the only crate that knows wasmtime.
//!
//! One [`Host`] per node owns the wasmtime `Engine`, the linker with the
//! `ferray:runtime` imports and WASI, and the compiled components (in memory
//! and in a content-addressed cache on disk). It runs a call of an export in
//! a fresh `Store` ([`Host::run`]) and keeps actor instances
//! ([`ActorInstance`]); every host call of a guest goes to a [`Services`]
//! implementation, which the runtime provides. The host schedules nothing.

mod budget;
#[cfg(test)]
mod codec_tests;
mod component;
mod config;
mod http;
mod imports;
mod output;
mod services;
mod task;
mod value;

/// The codec on wasmtime's values: for the host and its benchmarks (the
/// embedding API shows none of wasmtime's types).
pub mod codec {
    pub use crate::value::Vals;
    pub use ferray_codec::codec::*;
    pub use wasmtime::component::{Type, Val};
}

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use ferray_core::{ComponentId, Error};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, EngineWeak, WasmFeatures};

pub use budget::MemoryBudget;
pub use component::{ClassInfo, ComponentInfo, FuncInfo};
pub use config::{HostConfig, LIVE_CHUNK, Limits, LiveOutput};
pub use http::{HttpBody, INCOMING_HANDLER};
pub use imports::MAX_ALL_REDUCE;
pub use services::{CallRequest, Services};
pub use task::{ActorInstance, Outcome, TaskState, WALL_CLOCK_GRACE};

/// A component compiled for this node, ready to instantiate.
pub struct Loaded<S: Services> {
    pub id: ComponentId,
    pub info: ComponentInfo,
    pub(crate) pre: InstancePre<TaskState<S>>,
    /// The component's bytes, compiled for the on-demand engine once an
    /// instance of it goes there ([`Host::overflow_pre`]); kept only on a
    /// host that has that engine.
    bytes: Option<Arc<[u8]>>,
    overflow: std::sync::OnceLock<(InstancePre<TaskState<S>>, ComponentInfo)>,
    /// Held while it is compiled for that engine: once, however many actors
    /// wait for it.
    compiling: std::sync::Mutex<()>,
    /// Its `wasi:http/incoming-handler`, or why it has none (checked once).
    proxy: std::sync::OnceLock<
        Result<wasmtime_wasi_http::p2::bindings::ProxyPre<TaskState<S>>, String>,
    >,
    /// Size of the component's bytes.
    pub size: usize,
}

/// Counters of the host, for tests and status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HostStats {
    /// Components compiled by this host.
    pub compiled: u64,
    /// Components read back from the disk cache instead of compiled.
    pub disk_cache_hits: u64,
}

struct Inner<S: Services> {
    engine: Engine,
    linker: Linker<TaskState<S>>,
    /// Instances past the pool (`None` without a pool, or when the two
    /// engines' code differs).
    overflow: Option<Overflow<S>>,
    config: HostConfig,
    loaded: DashMap<ComponentId, Arc<Loaded<S>>>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory: Option<Arc<MemoryBudget>>,
    _ticker: Ticker,
}

/// A node's wasmtime host.
pub struct Host<S: Services> {
    inner: Arc<Inner<S>>,
}

impl<S: Services> Clone for Host<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// Advances the engines' epochs on one thread of its own until dropped.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn start_ticker(engines: Vec<EngineWeak>, tick: std::time::Duration) -> Ticker {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("ferray-epoch".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                for engine in &engines {
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch thread, time limits will not fire: {e}");
    }
    Ticker { stop }
}

/// The engine's configuration: every proposal guests do not use off, and
/// with `pool`, the pooling allocator for that many instances (else
/// instances are allocated on demand).
fn engine_config(config: &HostConfig, pool: Option<u32>) -> wasmtime::Config {
    let mut wc = wasmtime::Config::new();
    wc.wasm_component_model(true);
    // Every WebAssembly proposal the guests (Rust, wasm32-wasip2) do not
    // use is off, so a component that uses one is refused when it is
    // compiled: less of wasmtime for a tenant to reach. The `tests/all`
    // `proposals` tests load a component using each and expect the refusal.
    // (Those whose `Config` method needs a wasmtime crate feature ferray
    // does not build, `gc` or `threads`, are named by their flag.)
    wc
        // GC (struct, array, i31 and the other GC types): not built
        // either (no `gc` crate feature); off until wasmtime 48.0.9's fixes.
        .wasm_gc(false)
        // Typed function references (`(ref $t)`, `call_ref`, `ref.as_non_null`).
        .wasm_features(WasmFeatures::FUNCTION_REFERENCES, false)
        // Exception handling (`tag`, `throw`, `try_table`), and its legacy form.
        .wasm_features(WasmFeatures::EXCEPTIONS, false)
        .wasm_features(WasmFeatures::LEGACY_EXCEPTIONS, false)
        // Threads: shared memories and atomics; a task is one thread.
        .wasm_features(WasmFeatures::THREADS, false)
        .wasm_shared_everything_threads(false)
        // 64-bit memories and tables.
        .wasm_memory64(false)
        // More than one memory in a core module.
        .wasm_multi_memory(false)
        // Stack switching (continuations).
        .wasm_stack_switching(false)
        // Tail calls (`return_call`).
        .wasm_tail_call(false)
        // Wide arithmetic (`i64.add128` and the like).
        .wasm_wide_arithmetic(false)
        // Memories with a page size other than 64 KiB.
        .wasm_custom_page_sizes(false)
        // Relaxed SIMD (results that differ between hosts); SIMD stays.
        .wasm_relaxed_simd(false)
        // The component model's async ABI, streams, futures, error
        // contexts, threads and the other additions past its MVP: guests
        // use the synchronous ABI of WASI 0.2.
        .wasm_features(WasmFeatures::CM_ASYNC, false)
        .wasm_features(WasmFeatures::CM_ASYNC_STACKFUL, false)
        .wasm_features(WasmFeatures::CM_MORE_ASYNC_BUILTINS, false)
        .wasm_features(WasmFeatures::CM_THREADING, false)
        .wasm_features(WasmFeatures::CM_ERROR_CONTEXT, false)
        .wasm_component_model_gc(false)
        .wasm_component_model_map(false)
        .wasm_component_model_memory64(false)
        .wasm_component_model_fixed_length_lists(false)
        .wasm_component_model_implements(false);
    wc.epoch_interruption(true)
        .consume_fuel(config.fuel)
        .max_wasm_stack(1 << 20)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(24))
        .async_stack_size(2 << 20);
    if let Some(n) = pool {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .total_stacks(n)
            .max_memory_size(4 << 30)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_core_instance_size(1 << 20)
            .max_component_instance_size(1 << 20)
            .table_elements(100_000)
            // A freed slot is reset for its next instance without
            // `madvise` where it can be: the kernel's PAGEMAP_SCAN
            // (Linux 6.7+, off elsewhere) finds the pages an instance
            // dirtied and they are zeroed in place up to 1 MiB of memory
            // and 16 KiB of each table (a Rust guest's function table),
            // so instantiation pays no page faults and the machine no
            // TLB shootdowns. Measured with `ferray microbenchmark`
            // (release, this 2-core VM): a Rust guest's
            // single_client_tasks_async went from about 20,000 to about
            // 115,000 per second; each part alone gave at most 44,000.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(16 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        wc.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    wc
}

/// A linker with WASI and ferray's imports.
fn new_linker<S: Services>(engine: &Engine) -> Result<Linker<TaskState<S>>, Error> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| wasm_err("cannot add WASI to the linker", e))?;
    // `wasi:http`'s types and outgoing handler, so that components of the
    // proxy world (HTTP handlers) load; no request leaves (`DenyOutgoing`).
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| wasm_err("cannot add wasi:http to the linker", e))?;
    imports::add_to_linker(&mut linker).map_err(|e| wasm_err("cannot add ferray's imports", e))?;
    Ok(linker)
}

/// A second engine, allocating instances on demand, for actors past what
/// the pool holds: an idle actor then costs only the memory it touched,
/// and a node holds as many as its memory allows.
///
/// Its linear memories reserve only what they use plus room to grow
/// ([`OVERFLOW_GROWTH`]), not the pool's 4 GiB each: ten thousand actors
/// then take tens of GiB of address space, not tens of TiB (which the
/// kernel refused at about 9,000). Their code checks bounds explicitly,
/// so it is compiled for this engine (once per component, cached on disk
/// like the pooled engine's).
struct Overflow<S: Services> {
    engine: Engine,
    linker: Linker<TaskState<S>>,
}

/// Memory mappings one instance past the pool takes ([`Host::past_pool_capacity`]).
const MAPS_PER_INSTANCE: u64 = 4;
/// Memory mappings kept for the rest of the process: its threads, its
/// allocator, the pool and the instances of tasks.
const MAPS_KEPT: u64 = 16 << 10;
/// Linux's default `vm.max_map_count`, where it cannot be read.
const DEFAULT_MAX_MAPS: u64 = 65_530;
/// Instances past the pool, at most, however many mappings the kernel allows.
const MAX_PAST_POOL: u64 = 1 << 20;

/// Address space a memory of an actor past the pool reserves to grow into
/// before it is moved (copied) to a larger reservation.
const OVERFLOW_GROWTH: u64 = 32 << 20;

impl<S: Services> Overflow<S> {
    fn new(config: &HostConfig) -> Result<Self, Error> {
        let mut wc = engine_config(config, None);
        wc.memory_reservation(0)
            .memory_reservation_for_growth(OVERFLOW_GROWTH)
            .memory_guard_size(64 << 10)
            .guard_before_linear_memory(false)
            // Data segments are copied in, not mapped from a memory image:
            // an image costs each memory two more mappings (the kernel's
            // vm.max_map_count, 65,530 by default, is what bounds how many
            // actors a node holds), and copying a guest's few KiB is cheap.
            .memory_init_cow(false);
        let (engine, linker) = new_engine(&wc)?;
        Ok(Overflow { engine, linker })
    }
}

/// An engine configured by `wc`, and its linker.
fn new_engine<S: Services>(wc: &wasmtime::Config) -> Result<(Engine, Linker<TaskState<S>>), Error> {
    let engine = Engine::new(wc).map_err(|e| wasm_err("cannot create the wasmtime engine", e))?;
    let linker = new_linker(&engine)?;
    Ok((engine, linker))
}

fn wasm_err(context: &str, e: wasmtime::Error) -> Error {
    Error::Other(format!("{context}: {e:#}"))
}

impl<S: Services> Host<S> {
    pub fn new(config: HostConfig) -> Result<Self, Error> {
        let (engine, linker) = new_engine(&engine_config(&config, config.pool_instances))?;
        let overflow = match config.pool_instances {
            Some(_) => Some(Overflow::new(&config)?),
            None => None,
        };
        // One thread advances both engines' epochs.
        let engines = std::iter::once(&engine)
            .chain(overflow.as_ref().map(|o| &o.engine))
            .map(Engine::weak)
            .collect();
        let ticker = start_ticker(engines, config.epoch_tick);
        let memory = config.guest_memory.map(|b| Arc::new(MemoryBudget::new(b)));
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                overflow,
                config,
                loaded: DashMap::new(),
                compiled: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                memory,
                _ticker: ticker,
            }),
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The linear memory the node's instances hold together, and its limit.
    pub fn memory_budget(&self) -> Option<Arc<MemoryBudget>> {
        self.inner.memory.clone()
    }

    /// The node's GPU, if it has one.
    pub fn gpu(&self) -> Option<&ferray_gpu::Gpu> {
        self.inner.config.gpu.as_ref()
    }

    pub fn stats(&self) -> HostStats {
        HostStats {
            compiled: self.inner.compiled.load(Ordering::Relaxed),
            disk_cache_hits: self.inner.disk_hits.load(Ordering::Relaxed),
        }
    }

    /// A component already loaded on this node.
    pub fn get(&self, id: &ComponentId) -> Option<Arc<Loaded<S>>> {
        self.inner.loaded.get(id).map(|e| e.value().clone())
    }

    /// Load a component: checked, compiled once per content id (or read back
    /// from the disk cache), linked. Loading the same bytes again is free.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Loaded<S>>, Error> {
        let id = ComponentId::of(bytes);
        if let Some(l) = self.get(&id) {
            return Ok(l);
        }
        ferray_codec::check_header(bytes)?;
        let component = self.compile_cached(&self.inner.engine, &id, bytes)?;
        let info = component::exports_of(&self.inner.engine, &component)?;
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            Error::InvalidArgument(format!(
                "the component needs an import that ferray does not provide: {e:#}"
            ))
        })?;
        let loaded = Arc::new(Loaded {
            id,
            info,
            pre,
            bytes: self.inner.overflow.as_ref().map(|_| Arc::from(bytes)),
            overflow: std::sync::OnceLock::new(),
            compiling: std::sync::Mutex::new(()),
            proxy: std::sync::OnceLock::new(),
            size: bytes.len(),
        });
        Ok(self
            .inner
            .loaded
            .entry(id)
            .or_insert(loaded)
            .value()
            .clone())
    }

    /// The directory of `engine`'s compiled code: one per compatibility
    /// hash, so the two engines' code never mixes.
    fn cache_dir(&self, engine: &Engine) -> Option<PathBuf> {
        let base = self.inner.config.cache_dir.as_ref()?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        Some(base.join("components").join(format!("{hash:016x}")))
    }

    fn compile_cached(
        &self,
        engine: &Engine,
        id: &ComponentId,
        bytes: &[u8],
    ) -> Result<Component, Error> {
        let dir = self
            .cache_dir(engine)
            .filter(|dir| match open_private_dir(dir) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        "not using the compiled-code cache in {}: {e}",
                        dir.display()
                    );
                    false
                }
            });
        if let Some(c) = dir
            .as_deref()
            .and_then(|dir| self.read_cache(engine, dir, id))
        {
            self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c);
        }
        let component = Component::new(engine, bytes).map_err(|e| {
            Error::InvalidArgument(format!("not a valid WebAssembly component: {e:#}"))
        })?;
        self.inner.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(component = %id.short(), "compiled");
        if let Some(dir) = &dir
            && let Err(e) = self.write_cache(dir, id, &component)
        {
            tracing::warn!(
                "cannot write the compiled-code cache in {}: {e}",
                dir.display()
            );
        }
        Ok(component)
    }

    fn read_cache(&self, engine: &Engine, dir: &Path, id: &ComponentId) -> Option<Component> {
        let path = dir.join(format!("{id}.cwasm"));
        let data = read_nofollow(&path).ok()?;
        // The file is `blake3(code) || code`; anything else is ignored and recompiled.
        if data.len() < 32 {
            return None;
        }
        let (digest, code) = data.split_at(32);
        if blake3::hash(code).as_bytes() != digest {
            tracing::warn!(
                "compiled-code cache entry {} is corrupt; recompiling",
                path.display()
            );
            return None;
        }
        // SAFETY: `Component::deserialize` requires bytes produced by
        // `Component::serialize` of a compatible engine. These bytes were
        // written by `write_cache` below from `Component::serialize`, in a
        // directory keyed by this engine's `precompile_compatibility_hash`,
        // owned by this user and closed to others (`open_private_dir`), read
        // without following a symlink, and their blake3 digest matches the one
        // recorded when they were written, so they are those bytes unchanged.
        // (`engine` is the one whose hash names `dir`: `compile_cached`.)
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, code) };
        match component {
            Ok(c) => {
                tracing::debug!(component = %id.short(), "loaded from the compiled-code cache");
                Some(c)
            }
            Err(e) => {
                tracing::warn!("cannot use cached code for {}: {e:#}", id.short());
                None
            }
        }
    }

    fn write_cache(
        &self,
        dir: &Path,
        id: &ComponentId,
        component: &Component,
    ) -> std::io::Result<()> {
        use std::io::Write;
        static TMP: AtomicU64 = AtomicU64::new(0);
        let code = component.serialize().map_err(std::io::Error::other)?;
        let tmp = dir.join(format!(
            "{id}.cwasm.{}-{}.tmp",
            std::process::id(),
            TMP.fetch_add(1, Ordering::Relaxed)
        ));
        // A new file (never one that is there, a symlink included), 0600,
        // then renamed over the entry: a reader sees all of it or none.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let written = options.open(&tmp).and_then(|mut file| {
            file.write_all(blake3::hash(&code).as_bytes())?;
            file.write_all(&code)
        });
        let done = written.and_then(|()| std::fs::rename(&tmp, dir.join(format!("{id}.cwasm"))));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// How many instances may live past the pool (allocated on demand): 0
    /// without that engine. What bounds them is the kernel's count of
    /// memory mappings per process (`vm.max_map_count`, 65,530 by
    /// default): each takes about [`MAPS_PER_INSTANCE`] (its memory, the
    /// guard after it, its fiber stack and that stack's guard page), and
    /// [`MAPS_KEPT`] are left for everything else. Measured with `cargo
    /// bench -p ferray-benches --bench scale`: 4.0 per actor.
    pub fn past_pool_capacity(&self) -> u64 {
        if self.inner.overflow.is_none() {
            return 0;
        }
        let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_MAX_MAPS);
        (max_maps.saturating_sub(MAPS_KEPT) / MAPS_PER_INSTANCE).min(MAX_PAST_POOL)
    }

    /// Compile `comp` for instances past the pool, if not yet done: a
    /// blocking call (a compilation), for a blocking thread, before the
    /// first such actor of it.
    pub fn prepare_past_pool(&self, comp: &Loaded<S>) -> Result<(), Error> {
        self.overflow_pre(comp).map(|_| ())
    }

    /// The engine of instances past the pool, and `comp` ready to
    /// instantiate there, with its exports' indices there (compiled for
    /// that engine once).
    pub(crate) fn overflow_pre<'a>(
        &'a self,
        comp: &'a Loaded<S>,
    ) -> Result<(&'a Engine, &'a InstancePre<TaskState<S>>, &'a ComponentInfo), Error> {
        let (o, bytes) = self
            .inner
            .overflow
            .as_ref()
            .zip(comp.bytes.as_deref())
            .ok_or_else(|| Error::System("this node has no instances past its pool".into()))?;
        if let Some((pre, info)) = comp.overflow.get() {
            return Ok((&o.engine, pre, info));
        }
        // One compilation: whoever comes while it runs waits, then finds it.
        let _one = comp
            .compiling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((pre, info)) = comp.overflow.get() {
            return Ok((&o.engine, pre, info));
        }
        let component = self.compile_cached(&o.engine, &comp.id, bytes)?;
        let info = component::exports_of(&o.engine, &component)?;
        let pre = o
            .linker
            .instantiate_pre(&component)
            .map_err(|e| wasm_err("cannot link the component in the on-demand engine", e))?;
        let _ = comp.overflow.set((pre, info));
        let (pre, info) = comp
            .overflow
            .get()
            .ok_or_else(|| Error::System("the on-demand instance-pre was not kept".into()))?;
        Ok((&o.engine, pre, info))
    }
}

/// Creates `dir` (and its missing parents) 0700, and checks that it is a
/// directory (not a symlink) of this process's user that no one else can
/// enter, closing one of ours that others could: compiled code read back
/// from it runs unchecked.
fn open_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() {
            return Err(std::io::Error::other("not a directory (a symlink?)"));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(std::io::Error::other(format!(
                "owned by uid {}, not this process's {me}",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// A file's bytes, refusing to follow a symlink at its last component.
fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut data = Vec::new();
    options.open(path)?.read_to_end(&mut data)?;
    Ok(data)
}
