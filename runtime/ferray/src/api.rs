//! The embedding API: [`Runtime`], [`Component`], [`ActorHandle`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferray_codec::{ComponentInfo, Inspection};
use ferray_core::{
    ActorId, ActorOptions, Arg, Ceilings, ComponentId, Error, JobCaps, Report, Resources,
    TaskOptions,
};
use ferray_gpu::{GpuLimits, GpuStats};
use ferray_host::{Host, HostConfig, HostStats, HttpBody, INCOMING_HANDLER, Loaded};
use ferray_store::{ObjectStore, StoreConfig, StoreStats};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Code;
use crate::objects::{ObjectRef, SlotState};
use crate::output::{OutputLine, OutputMode, OutputSink};
use crate::runtime::{LoadedHere, RtInner, Settings, TaskCounts};
use crate::sched::Admission;

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode the value: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(&mut de).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot decode the value as {}: {e}",
            std::any::type_name::<T>()
        ))
    })?;
    match de.finalize() {
        Ok([]) => Ok(value),
        _ => Err(Error::InvalidArgument(format!(
            "the value has bytes left over after decoding it as {}",
            std::any::type_name::<T>()
        ))),
    }
}

/// The default place for compiled components: `$FERRAY_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/ferray`, else `~/.cache/ferray`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FERRAY_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("ferray"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("ferray"))
}

fn system_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024)
}

/// Sets up a [`Runtime`]: resources, limits, grants, local mode.
#[derive(Debug, Clone, Default)]
pub struct RuntimeBuilder {
    num_cpus: Option<f64>,
    num_gpus: Option<f64>,
    allow_software_gpu: bool,
    gpu_limits: GpuLimits,
    memory: Option<u64>,
    resources: Vec<(String, f64)>,
    local_mode: bool,
    object_store_memory: Option<u64>,
    spill_dir: Option<PathBuf>,
    spill_base: Option<PathBuf>,
    cache_dir: Option<Option<PathBuf>>,
    fuel: Option<u64>,
    timeout: Option<Duration>,
    memory_limit: Option<u64>,
    env: Vec<(String, String)>,
    dirs: Vec<(PathBuf, String)>,
    output: OutputMode,
    worker_threads: Option<usize>,
    max_output_bytes: Option<usize>,
    max_instances: Option<u32>,
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    token: Option<String>,
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    reconnect_timeout: Option<Duration>,
    /// A connected client's runtime: no wasmtime host.
    client: bool,
    #[cfg(feature = "testing")]
    failing_attempts: u64,
    ceilings: Ceilings,
    job_caps: JobCaps,
    max_argument_bytes: Option<u64>,
}

impl RuntimeBuilder {
    /// CPUs tasks may hold at once (default: this machine's cores).
    pub fn num_cpus(mut self, n: impl Into<f64>) -> Self {
        self.num_cpus = Some(n.into());
        self
    }
    /// GPUs tasks may hold at once (default: the number of GPU adapters
    /// found, see [`RuntimeBuilder::allow_software_gpu`]). Tasks that ask for
    /// `num_gpus` share the node's one GPU device.
    pub fn num_gpus(mut self, n: impl Into<f64>) -> Self {
        self.num_gpus = Some(n.into());
        self
    }
    /// Count a software adapter (Mesa's llvmpipe, `DeviceType::Cpu`) as a
    /// GPU, and use it when there is no hardware one (tests and CI do).
    pub fn allow_software_gpu(mut self, yes: bool) -> Self {
        self.allow_software_gpu = yes;
        self
    }
    /// What one task may use of the GPU (buffer size, memory, dispatches).
    pub fn gpu_limits(mut self, limits: GpuLimits) -> Self {
        self.gpu_limits = limits;
        self
    }
    /// The node's memory (default: this machine's): what tasks may reserve
    /// at once, and what the linear memories of all its instances may hold
    /// together (a growth past it fails that attempt as a fault of the node;
    /// new tasks wait for room, new actors are refused).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }
    /// A custom resource of this node, as Ray's `resources={...}`.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.push((name.to_string(), amount));
        self
    }
    /// Ray's `local_mode=True`: tasks run one at a time in submission order;
    /// tasks submitted by a task run inline, to completion, before `submit`
    /// returns.
    pub fn local_mode(mut self, on: bool) -> Self {
        self.local_mode = on;
        self
    }
    /// Bytes of objects kept in memory before spilling to disk.
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.object_store_memory = Some(bytes);
        self
    }
    /// The directory spilled objects go to (kept when the runtime stops).
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }
    /// Where the runtime makes its own spill directory, 0700, removed when
    /// it stops (default: the temp dir); stale ones of dead processes there
    /// are removed at start-up.
    pub fn spill_base(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_base = Some(dir.into());
        self
    }
    /// Where compiled components are cached (`None`: no disk cache).
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = Some(dir);
        self
    }
    /// Turn fuel metering on and give every task this much fuel by default.
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }
    /// Default wall-clock limit of a task attempt or an actor call.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Default memory cap of a guest instance (default 1 GiB).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }
    /// The most memory one task or actor may ask for (the operator's
    /// ceiling): more is refused at submit, and the default is capped to it.
    pub fn max_task_memory(mut self, bytes: u64) -> Self {
        self.ceilings.memory = Some(bytes);
        self
    }
    /// The longest wall-clock limit a task or actor call may ask for; the
    /// default limit becomes this when none is set.
    pub fn max_task_timeout(mut self, t: Duration) -> Self {
        self.ceilings.timeout = Some(t);
        self
    }
    /// The most fuel a task or actor may ask for (turns fuel metering on;
    /// the default fuel becomes this when none is set).
    pub fn max_task_fuel(mut self, fuel: u64) -> Self {
        self.ceilings.fuel = Some(fuel);
        self
    }
    /// Fault injection for tests: the next `n` task attempts fail with a
    /// system error (the `testing` feature only).
    #[cfg(feature = "testing")]
    pub fn fail_attempts(mut self, n: u64) -> Self {
        self.failing_attempts = n;
        self
    }
    /// What this runtime's job may hold: tasks in flight, live actors,
    /// bytes put (an embedded runtime is one job; on a cluster the head
    /// applies its own caps to each job). Past a cap the submission, actor
    /// or put is refused with `invalid-argument`.
    pub fn job_caps(mut self, caps: JobCaps) -> Self {
        self.job_caps = caps;
        self
    }
    /// The most bytes one call's arguments may take once their objects are
    /// resolved (default 256 MiB).
    pub fn max_argument_bytes(mut self, bytes: u64) -> Self {
        self.max_argument_bytes = Some(bytes);
        self
    }
    /// Grant an environment variable to guests.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
    /// Grant a host directory to guests at `guest` path.
    pub fn dir(mut self, host: impl Into<PathBuf>, guest: &str) -> Self {
        self.dirs.push((host.into(), guest.to_string()));
        self
    }
    pub fn output(mut self, mode: OutputMode) -> Self {
        self.output = mode;
        self
    }
    /// Threads that run guests (default: the machine's cores).
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = Some(n.max(1));
        self
    }
    /// Guest instances that can live at once on this node (running tasks
    /// and actors; default 1000). Past it, instantiation fails as a system
    /// error, which `max_retries` covers.
    pub fn max_instances(mut self, n: u32) -> Self {
        self.max_instances = Some(n.max(1));
        self
    }
    /// Bytes of stdout (and of stderr) kept per task.
    pub fn max_output_bytes(mut self, n: usize) -> Self {
        self.max_output_bytes = Some(n);
        self
    }

    pub async fn build(self) -> Result<Runtime, Error> {
        self.build_sync()
    }

    /// The cluster token for [`RuntimeBuilder::connect`] (default:
    /// `$FERRAY_TOKEN`, else the head's token file on this machine).
    #[cfg(feature = "cluster")]
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// How long a connected runtime tries to reach a head that went away
    /// before its pending results fail (default 60 s, as Ray's
    /// `gcs_rpc_server_reconnect_timeout_s`): a head started again on its
    /// database within it takes the connection back, with its job, its
    /// pending work and its actors.
    #[cfg(feature = "cluster")]
    pub fn reconnect_timeout(mut self, d: Duration) -> Self {
        self.reconnect_timeout = Some(d);
        self
    }

    /// Connect to a cluster's head (`ray.init(address=...)`): tasks, actors
    /// and objects then live on the cluster; the API works as it does
    /// locally. The connection is this process's job; its objects and
    /// actors go when the runtime is dropped.
    #[cfg(feature = "cluster")]
    pub async fn connect(self, address: &str) -> Result<Runtime, Error> {
        if self.local_mode {
            return Err(Error::InvalidArgument(
                "local mode runs everything in this process; it cannot connect to a cluster".into(),
            ));
        }
        let token = crate::cluster::find_token(self.token.as_deref())?;
        let reconnect = self
            .reconnect_timeout
            .unwrap_or(crate::cluster::RECONNECT_TIMEOUT);
        let mut client = self.num_cpus(0.0).num_gpus(0.0);
        client.client = true;
        let rt = client.build_sync()?;
        let inner = rt.inner().clone();
        let addr = address.to_string();
        rt.handle()
            .spawn(
                async move { crate::cluster::connect_client(inner, &addr, token, reconnect).await },
            )
            .await
            .map_err(|e| Error::System(format!("connecting failed: {e}")))??;
        Ok(rt)
    }

    /// Build without an async context (the command line uses this).
    pub fn build_sync(self) -> Result<Runtime, Error> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let num_gpus = match self.num_gpus {
            Some(n) => n,
            None => ferray_gpu::detect(self.allow_software_gpu).len() as f64,
        };
        let gpu = (num_gpus > 0.0)
            .then(|| ferray_gpu::Gpu::new(self.allow_software_gpu, self.gpu_limits));
        let memory = self.memory.unwrap_or_else(system_memory);
        let mut total = Resources::default()
            .with_cpus(self.num_cpus.unwrap_or(cores as f64))?
            .with_gpus(num_gpus)?
            .with_memory(memory);
        for (name, amount) in &self.resources {
            total = total.with_custom(name, *amount)?;
        }
        for (host, _) in &self.dirs {
            if !host.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "cannot grant {}: not a directory",
                    host.display()
                )));
            }
        }
        let host_config = HostConfig {
            cache_dir: self.cache_dir.unwrap_or_else(default_cache_dir),
            fuel: self.fuel.is_some() || self.ceilings.fuel.is_some(),
            default_memory_limit: Ceilings::cap(
                Some(self.memory_limit.unwrap_or(1 << 30)),
                self.ceilings.memory,
            )
            .unwrap_or(1 << 30),
            max_output_bytes: self.max_output_bytes.unwrap_or(1 << 20),
            dirs: self.dirs,
            env: self.env,
            gpu,
            // A few more than the slots: an actor's new instance is made
            // while its old one still exists (a restart).
            pool_instances: Some(self.max_instances.unwrap_or(1000) + 16),
            // The node's memory bounds its guests' memories together.
            guest_memory: Some(memory),
            ..HostConfig::default()
        };
        // A connected client compiles nothing and runs no guest code.
        let host = if self.client {
            None
        } else {
            Some(Host::new(host_config)?)
        };
        let store = Arc::new(ObjectStore::new(StoreConfig {
            memory_capacity: self.object_store_memory.unwrap_or(2 << 30),
            spill_dir: self.spill_dir,
            spill_base: self.spill_base,
        })?);
        let exec = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads.unwrap_or(cores))
            .thread_name("ferray-worker")
            .enable_all()
            .build()
            .map_err(|e| Error::System(format!("cannot start worker threads: {e}")))?;
        let settings = Settings {
            local_mode: self.local_mode,
            default_timeout: Ceilings::cap(self.timeout, self.ceilings.timeout),
            default_fuel: Ceilings::cap(self.fuel, self.ceilings.fuel),
            ceilings: self.ceilings,
            job_caps: self.job_caps,
            max_argument_bytes: self.max_argument_bytes.unwrap_or(256 << 20),
            max_instances: self.max_instances.unwrap_or(1000) as usize,
            #[cfg(feature = "testing")]
            failing_attempts: Arc::new(std::sync::atomic::AtomicU64::new(self.failing_attempts)),
        };
        let inner = RtInner::new(
            host,
            store,
            Admission::new(total),
            settings,
            exec.handle().clone(),
            OutputSink::new(self.output.clone()),
        );
        Ok(Runtime {
            shared: Arc::new(Shared {
                inner,
                exec: Some(exec),
            }),
        })
    }
}

struct Shared {
    inner: Arc<RtInner>,
    exec: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A connected runtime's job ends now (its session says goodbye).
        self.inner
            .backend()
            .leave(std::time::Duration::from_millis(500));
        if let Some(exec) = self.exec.take() {
            exec.shutdown_background();
        }
    }
}

/// An embedded ferray runtime (`ray.init()`). Cheap to clone; it shuts down
/// when the last clone, component and actor handle is gone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

/// Counters of a runtime.
#[derive(Debug, Clone)]
pub struct RuntimeStats {
    pub tasks: TaskCounts,
    pub store: StoreStats,
    pub host: HostStats,
    pub resources_total: Resources,
    pub resources_free: Resources,
    /// The node's GPU memory and pipelines (`None`: no GPU).
    pub gpu: Option<GpuStats>,
    /// Instance slots (one per task attempt or actor): in use, and all.
    pub instance_slots: (u64, u64),
    /// Bytes of guest linear memory (and decoded arguments) its instances
    /// hold now, and the node's limit (`None`: a client, which runs none).
    pub guest_memory: Option<(u64, u64)>,
    /// Objects this node pulled from others: their bytes, and the seconds
    /// each pull took (`None`: the embedded runtime, which pulls nothing).
    pub transfers: Option<(
        ferray_core::HistogramSnapshot,
        ferray_core::HistogramSnapshot,
    )>,
    /// Results of its tasks that came straight from the node that ran them,
    /// ahead of the head's answer (a cluster's; 0 on the embedded runtime).
    pub direct_results: u64,
}

impl Runtime {
    /// An embedded runtime with the defaults: all cores, the hardware GPUs found.
    pub async fn local() -> Result<Runtime, Error> {
        Self::builder().build().await
    }

    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    pub(crate) fn inner(&self) -> &Arc<RtInner> {
        &self.shared.inner
    }

    /// Connect to a cluster's head with the defaults (see
    /// [`RuntimeBuilder::connect`]).
    #[cfg(feature = "cluster")]
    pub async fn connect(address: &str) -> Result<Runtime, Error> {
        Self::builder().connect(address).await
    }

    /// Whether this runtime is connected to a cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner().backend().is_remote()
    }

    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        match &self.shared.exec {
            Some(exec) => exec.handle().clone(),
            None => self.inner().exec.clone(),
        }
    }

    /// Load a component from a file. Content addressed: loading the same
    /// bytes twice is free, and compiled code is cached on disk.
    pub async fn load_file(&self, path: impl AsRef<Path>) -> Result<Component, Error> {
        let path = path.as_ref();
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| Error::NotFound(format!("cannot read {}: {e}", path.display())))?;
        self.load_bytes(&bytes).await
    }

    /// Load a component from its bytes: its signatures are read from them;
    /// the embedded runtime compiles it, a connected client uploads it to
    /// the cluster (whose nodes compile it) and compiles nothing.
    pub async fn load_bytes(&self, bytes: &[u8]) -> Result<Component, Error> {
        let inner = self.inner().clone();
        let bytes = Bytes::copy_from_slice(bytes);
        let b = bytes.clone();
        let here = tokio::task::spawn_blocking(move || inner.load_component(&b))
            .await
            .map_err(|e| Error::System(format!("loading failed: {e}")))??;
        let publish = self.inner().backend().publish(here.id, bytes);
        self.handle()
            .spawn(publish)
            .await
            .map_err(|e| Error::System(format!("uploading failed: {e}")))??;
        Ok(self.component_of(here))
    }

    fn component_of(&self, here: LoadedHere) -> Component {
        Component {
            rt: self.clone(),
            id: here.id,
            info: here.info,
            loaded: here.loaded,
        }
    }

    /// Load without an async context.
    pub fn load_bytes_sync(&self, bytes: &[u8]) -> Result<Component, Error> {
        if self.is_cluster() {
            return self.block_on(self.load_bytes(bytes));
        }
        Ok(self.component_of(self.inner().load_component(bytes)?))
    }

    /// A component's digest, exports (with WIT signatures) and imports,
    /// read from its bytes without compiling it.
    pub fn inspect(&self, bytes: &[u8]) -> Result<Inspection, Error> {
        Inspection::of(bytes)
    }

    /// A component loaded earlier, by its digest.
    pub fn component(&self, id: &ComponentId) -> Result<Component, Error> {
        let inner = self.inner();
        let loaded = match inner.loaded(id) {
            Some(l) => Some(l),
            None if self.is_cluster() => None,
            None => Some(inner.component(id)?),
        };
        Ok(Component {
            rt: self.clone(),
            id: *id,
            info: inner.info(id)?,
            loaded,
        })
    }

    /// Send guests' calls to serve deployments (`ferray:runtime/deployments`)
    /// to `router` from now on (ferray serve sets it when it starts an
    /// application here).
    pub fn set_serve_router(&self, router: Option<Arc<dyn crate::ServeRouter>>) {
        *self.inner().serve_router.write() = router;
    }

    /// Store a value (`ray.put`); the reference is ready at once.
    /// Refused with `invalid-argument` past the job's put cap.
    pub async fn put<T: Serialize + ?Sized>(&self, value: &T) -> Result<ObjectRef, Error> {
        let r = self.put_encoded(Bytes::from(encode(value)?));
        match r.state() {
            SlotState::Failed(e) => Err(e),
            _ => Ok(r),
        }
    }

    /// Store bytes that are already a canonically encoded value.
    pub fn put_encoded(&self, bytes: Bytes) -> ObjectRef {
        self.inner().put(bytes)
    }

    /// The value of a reference, waiting until it is ready (`ray.get`).
    pub async fn get<T: DeserializeOwned>(&self, r: &ObjectRef) -> Result<T, Error> {
        decode(&self.get_encoded(r).await?)
    }

    /// The encoded bytes of a reference's value, without copying them.
    pub async fn get_encoded(&self, r: &ObjectRef) -> Result<Bytes, Error> {
        self.inner().get_bytes(r).await
    }

    /// The values of several references, in order.
    pub async fn get_all<T: DeserializeOwned>(&self, refs: &[ObjectRef]) -> Result<Vec<T>, Error> {
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            out.push(self.get(r).await?);
        }
        Ok(out)
    }

    /// `ray.wait`: returns `(ready, not_ready)` once `num_returns` are ready or
    /// the timeout passes; both keep the order given.
    pub async fn wait(
        &self,
        refs: &[ObjectRef],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> (Vec<ObjectRef>, Vec<ObjectRef>) {
        let ready = RtInner::wait(refs, num_returns, timeout).await;
        let mut is_ready = vec![false; refs.len()];
        for i in &ready {
            is_ready[*i as usize] = true;
        }
        let (a, b): (Vec<_>, Vec<_>) = refs.iter().cloned().zip(is_ready).partition(|(_, r)| *r);
        (
            a.into_iter().map(|(r, _)| r).collect(),
            b.into_iter().map(|(r, _)| r).collect(),
        )
    }

    /// Cancel a pending or running task (`ray.cancel`); its reference fails
    /// with `Cancelled`.
    pub fn cancel(&self, r: &ObjectRef) -> Result<(), Error> {
        self.inner().cancel(r)
    }

    /// This client will not use these task results again (as Ray's
    /// `internal_api.free`): on a cluster, once each task has ended the
    /// head forgets it and frees its result on the nodes that hold it
    /// (unless another task made the same object, a put did, or another job
    /// refers to it), so that a long-lived client, a serve application for
    /// one, does not hold every result until its job ends. Call it once
    /// the value has been read and nothing will read it again: a task given
    /// one of these references that has not started yet (submitted before
    /// the free or after) fails to find it. Embedded, an object goes with its last
    /// reference, and this does nothing. A put's reference is ignored.
    pub fn free(&self, refs: &[ObjectRef]) {
        self.inner().free(refs)
    }

    /// A guard that frees `r` ([`Runtime::free`]) when it goes: once its
    /// value has been read, or when the reader gives up.
    pub fn free_on_drop<'a>(&'a self, r: &'a ObjectRef) -> FreeOnDrop<'a> {
        FreeOnDrop(self, r)
    }

    /// A handle to an actor by id (ids can travel inside values).
    pub fn actor_handle(&self, id: ActorId) -> ActorHandle {
        ActorHandle {
            rt: self.clone(),
            id,
        }
    }

    /// Guest output kept with [`OutputMode::Collect`].
    pub fn take_output(&self) -> Vec<OutputLine> {
        self.inner().take_output()
    }

    /// Its tasks' counters alone (atomic loads, and the count of running
    /// tasks): what a progress display reads often, without
    /// [`Runtime::stats`]' store and host figures. The tasks its guests
    /// submit count too; one that ended counts as `finished` or `failed`
    /// (a cancelled one as neither).
    pub fn task_counts(&self) -> TaskCounts {
        self.inner().counts()
    }

    pub fn stats(&self) -> RuntimeStats {
        let inner = self.inner();
        RuntimeStats {
            tasks: inner.counts(),
            store: inner.store.stats(),
            host: inner.host().map(|h| h.stats()).unwrap_or_default(),
            resources_total: inner.admission.total(),
            resources_free: inner.admission.free(),
            gpu: inner.host().ok().and_then(|h| h.gpu()).map(|g| g.stats()),
            instance_slots: {
                let all = inner.settings.max_instances as u64;
                let free = inner.slots.available_permits() as u64;
                (all.saturating_sub(free), all)
            },
            guest_memory: inner
                .host()
                .ok()
                .and_then(|h| h.memory_budget())
                .map(|b| (b.used(), b.limit())),
            transfers: inner.backend().transfers(),
            direct_results: inner.backend().direct_results(),
        }
    }

    /// The object store (for tests and tools).
    pub fn object_store(&self) -> &ObjectStore {
        &self.inner().store
    }

    /// Run a future on the runtime's worker threads and wait for it (the
    /// command line's entry point; not for use inside an async context).
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        match &self.shared.exec {
            Some(exec) => exec.block_on(fut),
            None => futures::executor::block_on(fut),
        }
    }
}

/// A loaded component: its exports can be called as tasks and its exported
/// resources made into actors.
#[derive(Clone)]
pub struct Component {
    rt: Runtime,
    id: ComponentId,
    /// Its signatures, read from its bytes.
    info: Arc<ComponentInfo>,
    /// Compiled in this process; `None` on a connected client.
    loaded: Option<Arc<Loaded<RtInner>>>,
}

impl Component {
    /// The blake3 digest of the component's bytes.
    pub fn id(&self) -> ComponentId {
        self.id
    }

    /// Its exports with their WIT signatures, and its imports.
    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    /// Where its tasks and actors run: the code compiled here, or its digest.
    fn code(&self) -> Code {
        match &self.loaded {
            Some(l) => Code::Loaded(l.clone()),
            None => Code::Digest(self.id),
        }
    }

    /// Whether the component is an HTTP handler: it exports
    /// `wasi:http/incoming-handler`, as components built for `wasmtime
    /// serve` or Spin do: checked by the host where it is compiled here, by
    /// its export's signature on a connected client.
    pub fn is_http_handler(&self) -> bool {
        match (&self.loaded, self.rt.inner().host()) {
            (Some(l), Ok(host)) => host.is_http_handler(l),
            _ => self.info.is_http_handler(),
        }
    }

    /// Whether [`Component::handle_http`] can answer here (the component
    /// is compiled in this process: not on a connected client).
    pub fn handles_http_here(&self) -> bool {
        self.loaded.is_some() && self.is_http_handler()
    }

    /// Answer one HTTP request, whole, with the component's
    /// `wasi:http/incoming-handler` as a task (export [`crate::HTTP_HANDLE`]):
    /// in a fresh instance on the node the scheduler picks (this one when
    /// embedded), with `options`' resources and limits. The response body
    /// is read whole, up to [`crate::MAX_HTTP_RESPONSE_BYTES`].
    pub async fn call_http(
        &self,
        request: &crate::HttpRequest,
        options: TaskOptions,
    ) -> Result<crate::HttpResponse, Error> {
        if !self.is_http_handler() {
            return Err(Error::InvalidArgument(format!(
                "the component does not export `{INCOMING_HANDLER}` (an HTTP handler)"
            )));
        }
        let r = self
            .task(crate::HTTP_HANDLE)
            .args(&(request,))?
            .options(options)
            .submit()?;
        // A caller that gives up (its client went away) cancels the task.
        struct CancelOnDrop<'a>(&'a Runtime, &'a ObjectRef, bool);
        impl Drop for CancelOnDrop<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    let _ = self.0.cancel(self.1);
                }
            }
        }
        // Read whole, or given up: the head forgets the request's task once
        // it ends, and the node frees the response.
        let _free = FreeOnDrop(&self.rt, &r);
        let mut guard = CancelOnDrop(&self.rt, &r, false);
        let out = self.rt.get(&r).await;
        guard.2 = true;
        out
    }

    /// Answer one HTTP request with the component's
    /// `wasi:http/incoming-handler`, in a fresh instance on this node with
    /// the limits of `options` (memory, timeout, fuel), as a task of its
    /// own. The response comes back once the guest sets it; its body
    /// streams while the guest writes it. A trap, a time limit or a handler
    /// that never answers is an error. Not on a connected client.
    pub async fn handle_http<B>(
        &self,
        request: http::Request<B>,
        options: &TaskOptions,
    ) -> Result<http::Response<HttpBody>, Error>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(loaded) = &self.loaded else {
            return Err(Error::InvalidArgument(
                "a connected client cannot answer HTTP requests; a cluster's nodes do".into(),
            ));
        };
        self.rt.inner().handle_http(loaded, request, options).await
    }

    /// Submit a call of an exported function with a tuple of arguments
    /// (`f.remote(x)`); the reference comes back at once.
    pub fn call<A: Serialize>(&self, function: &str, args: A) -> Result<ObjectRef, Error> {
        self.task(function).args(&args)?.submit()
    }

    /// A task with options and object references as arguments.
    pub fn task(&self, function: &str) -> TaskBuilder {
        TaskBuilder {
            comp: self.clone(),
            function: function.to_string(),
            args: Vec::new(),
            options: TaskOptions::default(),
        }
    }

    /// Make an actor of an exported resource; `args` go to its constructor.
    pub fn actor<A: Serialize>(&self, class: &str, args: A) -> ActorBuilder {
        ActorBuilder {
            comp: self.clone(),
            class: class.to_string(),
            args: encode(&args).map(|b| vec![Arg::Value(b)]),
            options: ActorOptions::default(),
        }
    }

    /// Make an actor whose constructor gets `args`, already canonically
    /// encoded (one or more parameters, as [`TaskBuilder::arg_encoded`]).
    pub fn actor_encoded(&self, class: &str, args: Vec<u8>) -> ActorBuilder {
        ActorBuilder {
            comp: self.clone(),
            class: class.to_string(),
            args: Ok(vec![Arg::Value(args)]),
            options: ActorOptions::default(),
        }
    }

    /// Call with arguments in WAVE text, typed by the function's signature,
    /// as a task with `options`; the result comes back as WAVE text (the
    /// command line's path).
    pub async fn call_wave(
        &self,
        function: &str,
        args: &[String],
        options: TaskOptions,
    ) -> Result<WaveResult, Error> {
        let func = self.info.function(function)?.clone();
        let bytes = func.encode_wave_args(args)?;
        let r = self
            .task(function)
            .arg_encoded(bytes)
            .options(options)
            .submit()?;
        let out = self.rt.get_encoded(&r).await?;
        Ok(WaveResult {
            text: func.wave_result(&out)?,
            is_err: func.returns_err(&out),
        })
    }
}

/// A result as WAVE text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveResult {
    pub text: String,
    /// The function returns a `result` and this one is `err(..)`.
    pub is_err: bool,
}

/// A task with options (`f.options(...).remote(...)`).
pub struct TaskBuilder {
    comp: Component,
    function: String,
    args: Vec<Arg<ObjectRef>>,
    options: TaskOptions,
}

impl TaskBuilder {
    /// One argument (one parameter).
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, Error> {
        self.args.push(Arg::Value(encode(value)?));
        Ok(self)
    }
    /// Several parameters at once, as a tuple.
    pub fn args<T: Serialize + ?Sized>(self, tuple: &T) -> Result<Self, Error> {
        self.arg(tuple)
    }
    /// Canonically encoded bytes of one or more parameters.
    pub fn arg_encoded(mut self, bytes: Vec<u8>) -> Self {
        self.args.push(Arg::Value(bytes));
        self
    }
    /// A parameter whose value is this object's, once ready (a dependency).
    pub fn arg_ref(mut self, r: &ObjectRef) -> Self {
        self.args.push(Arg::Ref(r.clone()));
        self
    }
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }
    pub fn num_cpus(mut self, n: f64) -> Result<Self, Error> {
        self.options.resources = self.options.resources.with_cpus(n)?;
        Ok(self)
    }
    pub fn num_gpus(mut self, n: f64) -> Result<Self, Error> {
        self.options.resources = self.options.resources.with_gpus(n)?;
        Ok(self)
    }
    /// Memory to reserve, and the guest's memory cap.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.options.resources = self.options.resources.with_memory(bytes);
        self
    }
    pub fn resource(mut self, name: &str, amount: f64) -> Result<Self, Error> {
        self.options.resources = self.options.resources.with_custom(name, amount)?;
        Ok(self)
    }
    /// Placement on a cluster (SPREAD, node affinity); ignored embedded.
    pub fn strategy(mut self, s: ferray_core::Strategy) -> Self {
        self.options.strategy = s;
        self
    }
    pub fn max_retries(mut self, n: u32) -> Self {
        self.options.max_retries = n;
        self
    }
    pub fn retry_exceptions(mut self, on: bool) -> Self {
        self.options.retry_exceptions = on;
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.options.timeout = Some(t);
        self
    }
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.options.fuel = Some(fuel);
        self
    }
    pub fn submit(self) -> Result<ObjectRef, Error> {
        // Refused here, at once, on a client too.
        self.comp.info.function(&self.function)?;
        let inner = self.comp.rt.inner().clone();
        inner.submit(self.comp.code(), &self.function, self.args, self.options)
    }
}

/// An actor about to be made (`Class.options(...).remote(...)`).
pub struct ActorBuilder {
    comp: Component,
    class: String,
    args: Result<Vec<Arg<ObjectRef>>, Error>,
    options: ActorOptions,
}

impl ActorBuilder {
    /// Placement on a cluster (once: the actor stays on its node).
    pub fn strategy(mut self, s: ferray_core::Strategy) -> Self {
        self.options.strategy = s;
        self
    }
    /// All the actor's options at once.
    pub fn options(mut self, options: ActorOptions) -> Self {
        self.options = options;
        self
    }

    /// Restarts after a crash, constructor re-run (default 0, as in Ray).
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.options.max_restarts = n;
        self
    }
    pub fn num_cpus(mut self, n: f64) -> Result<Self, Error> {
        self.options.resources = self.options.resources.with_cpus(n)?;
        Ok(self)
    }
    pub fn num_gpus(mut self, n: f64) -> Result<Self, Error> {
        self.options.resources = self.options.resources.with_gpus(n)?;
        Ok(self)
    }
    pub fn memory(mut self, bytes: u64) -> Self {
        self.options.resources = self.options.resources.with_memory(bytes);
        self
    }
    /// Wall-clock limit of each method call.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.options.timeout = Some(t);
        self
    }
    /// Make the actor rank `rank` of the collective group `group` (of this
    /// job) of `world_size` members, as Ray's
    /// `init_collective_group(world_size, rank, group_name=...)`: its
    /// guest's `collective.all-reduce` sums over the group.
    pub fn group(mut self, group: &str, rank: u32, world_size: u32) -> Result<Self, Error> {
        self.options.group = Some(ferray_core::GroupMember::new(group, rank, world_size)?);
        Ok(self)
    }
    /// A constructor argument that is an object's value (a dependency),
    /// after those given to [`Component::actor`].
    pub fn arg_ref(mut self, r: &ObjectRef) -> Self {
        if let Ok(args) = &mut self.args {
            args.push(Arg::Ref(r.clone()));
        }
        self
    }
    /// Start the actor; its constructor runs in its own store. Calls made
    /// before it finishes wait for it.
    pub async fn spawn(self) -> Result<ActorHandle, Error> {
        self.comp.info.class(&self.class)?;
        let inner = self.comp.rt.inner().clone();
        let id = inner.create_actor(self.comp.code(), &self.class, self.args?, self.options)?;
        Ok(ActorHandle {
            rt: self.comp.rt.clone(),
            id,
        })
    }
}

/// A handle to an actor. Method calls run one at a time, in the order submitted.
#[derive(Clone)]
pub struct ActorHandle {
    rt: Runtime,
    id: ActorId,
}

impl std::fmt::Debug for ActorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHandle").field("id", &self.id).finish()
    }
}

impl ActorHandle {
    pub fn id(&self) -> ActorId {
        self.id
    }
    /// Once the actor's constructor has run (Ray's `__ray_ready__`): after
    /// the calls made before it, without calling the guest. `actor-died`
    /// when its constructor failed.
    pub async fn ready(&self) -> Result<(), Error> {
        self.host_method(crate::actors::READY_METHOD, Vec::new())
            .await
            .map(|_| ())
    }

    /// Open a training run on the actor (what `ferray train` does for a
    /// worker whose `train-loop` reports), after the calls made before it:
    /// its guest may then `report`, and `checkpoint` gives it `checkpoint`'s
    /// bytes (an object holding a `list<u8>`, as a `save` returns it).
    pub async fn open_train_run(&self, checkpoint: Option<&ObjectRef>) -> Result<(), Error> {
        let args = checkpoint
            .map(|c| Arg::Ref(c.clone()))
            .into_iter()
            .collect();
        self.host_method(crate::actors::TRAIN_RUN_METHOD, args)
            .await
            .map(|_| ())
    }

    /// The next report of the actor's training run, taken as soon as its
    /// guest makes it (the guest waits in the call that reports); `None`
    /// once no call of the actor is queued or running and no report waits.
    /// The guest's report before it returns as this is asked for (Ray
    /// Train's `get_next`). `actor-died` when the actor died.
    pub async fn next_report(&self) -> Result<Option<Report>, Error> {
        decode(
            &self
                .host_method(crate::actors::NEXT_REPORT_METHOD, Vec::new())
                .await?,
        )
    }

    /// A call of one of the host's own methods of the actor (not its
    /// guest's): its answer's bytes. Its reference never leaves here (also
    /// when the caller gives up).
    async fn host_method(&self, method: &str, args: Vec<Arg<ObjectRef>>) -> Result<Bytes, Error> {
        let r = self
            .rt
            .inner()
            .call_actor(self.id, method.to_string(), args)?;
        let _free = FreeOnDrop(&self.rt, &r);
        self.rt.get_encoded(&r).await
    }

    /// Call a method with a tuple of arguments; the reference comes back at once.
    pub fn call<A: Serialize>(&self, method: &str, args: A) -> Result<ObjectRef, Error> {
        self.rt.inner().call_actor(
            self.id,
            method.to_string(),
            vec![Arg::Value(encode(&args)?)],
        )
    }
    /// Call with argument pieces (values and object references).
    pub fn call_with(&self, method: &str, args: Vec<Arg<ObjectRef>>) -> Result<ObjectRef, Error> {
        self.rt
            .inner()
            .call_actor(self.id, method.to_string(), args)
    }
    /// Kill the actor: the call in flight and queued calls fail with `ActorDied`.
    pub fn kill(&self) -> Result<(), Error> {
        // Embedded, the answer is there at once; on a cluster the request
        // is sent and the actor's calls fail once the head killed it.
        use futures::FutureExt as _;
        self.rt
            .inner()
            .kill_actor(self.id)
            .now_or_never()
            .unwrap_or(Ok(()))
    }
}

/// Frees its reference when it goes ([`Runtime::free_on_drop`]).
pub struct FreeOnDrop<'a>(&'a Runtime, &'a ObjectRef);

impl Drop for FreeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.free(std::slice::from_ref(self.1));
    }
}
