//! ferray's GPU capability: the node's one wgpu device, shared by every task
//! on it, and a per-task [`GpuSession`] that owns the task's buffers and
//! pipelines.
//!
//! - [`detect`] lists the node's adapters; a software adapter (llvmpipe)
//!   counts only when asked for.
//! - [`Gpu`] is the node's handle (cheap to clone): the device is opened on
//!   first use, compiled pipelines are cached by the blake3 of their WGSL
//!   source and entry point, and live GPU memory is counted.
//! - [`GpuSession`] is what one task reaches: handles are numbers unique on
//!   the node, looked up only among the session's own objects, so a task
//!   cannot name another task's buffer. Limits (buffer size, memory per task,
//!   dispatches per task) come back as [`GpuError::Limit`]. Dropping the
//!   session frees everything it created, whatever way the task ended.
//!
//! Everything a guest gives is checked here before wgpu sees it; waiting on
//! the GPU happens on tokio's blocking threads, never on a worker thread.
//! This crate does not know wasmtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

/// Why a GPU call failed. The guest sees these as values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No usable adapter, or the task did not ask for a GPU.
    #[error("no GPU: {0}")]
    NoGpu(String),
    /// The WGSL did not compile: naga's message, with line and column.
    #[error("invalid shader: {0}")]
    InvalidShader(String),
    /// A limit of this node or task was reached.
    #[error("GPU limit: {0}")]
    Limit(String),
    /// A bad size, offset, binding or workgroup count.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No such buffer or pipeline in this task.
    #[error("not found: {0}")]
    NotFound(String),
    /// The device reported an error, or the work did not finish in time.
    #[error("GPU device error: {0}")]
    Device(String),
}

type Result<T, E = GpuError> = std::result::Result<T, E>;

/// One adapter of the node, as [`detect`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    pub name: String,
    /// `Vulkan`, `Metal`, `Dx12`, ...
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu`, `Other`.
    pub device_type: String,
    /// A CPU implementation (llvmpipe, WARP, SwiftShader).
    pub software: bool,
    pub driver: String,
}

impl std::fmt::Display for AdapterInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

fn adapter_info(a: &wgpu::Adapter) -> AdapterInfo {
    let i = a.get_info();
    AdapterInfo {
        name: i.name,
        backend: format!("{:?}", i.backend),
        device_type: format!("{:?}", i.device_type),
        software: i.device_type == wgpu::DeviceType::Cpu,
        driver: i.driver_info,
    }
}

/// The backends ferray uses: the native compute APIs (not GL, which would
/// list the same devices a second time).
fn backends() -> wgpu::Backends {
    wgpu::Backends::PRIMARY
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends();
    wgpu::Instance::new(desc)
}

/// Every adapter of the primary backends, found once per process.
fn all_adapters() -> &'static [AdapterInfo] {
    static ALL: OnceLock<Vec<AdapterInfo>> = OnceLock::new();
    ALL.get_or_init(|| {
        let found = futures_lite_block_on(instance().enumerate_adapters(backends()));
        let mut out: Vec<AdapterInfo> = Vec::new();
        for a in &found {
            let info = adapter_info(a);
            if !out.contains(&info) {
                out.push(info);
            }
        }
        tracing::debug!(adapters = ?out, "GPU adapters");
        out
    })
}

/// The adapters that count as GPUs of this node: hardware ones, and
/// software ones (`DeviceType::Cpu`, such as llvmpipe) with `allow_software`.
pub fn detect(allow_software: bool) -> Vec<AdapterInfo> {
    all_adapters()
        .iter()
        .filter(|a| allow_software || !a.software)
        .cloned()
        .collect()
}

/// Drive a future that completes without an executor's help (wgpu's native
/// futures are ready at once or after a `poll`).
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    futures::executor::block_on(fut)
}

/// What one task may use of the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuLimits {
    /// Largest buffer, in bytes (also capped by the device's limits).
    pub max_buffer_size: u64,
    /// GPU memory one task may hold at once, in bytes.
    pub max_task_memory: u64,
    /// Dispatches one task may make.
    pub max_dispatches: u64,
    /// Buffers one task may hold at once.
    pub max_buffers: usize,
    /// Pipelines one task may hold at once.
    pub max_pipelines: usize,
    /// Bytes of WGSL source one pipeline may have.
    pub max_wgsl_bytes: usize,
    /// Workgroups of one dispatch (x * y * z).
    pub max_workgroups: u64,
    /// How long a read or `finish` waits for the GPU before failing.
    pub max_wait: Duration,
}

impl Default for GpuLimits {
    fn default() -> Self {
        Self {
            max_buffer_size: 256 << 20,
            max_task_memory: 1 << 30,
            max_dispatches: 1_000_000,
            max_buffers: 4096,
            max_pipelines: 256,
            max_wgsl_bytes: 1 << 20,
            max_workgroups: 1 << 24,
            max_wait: Duration::from_secs(120),
        }
    }
}

/// Counters of a node's GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuStats {
    /// Bytes of GPU buffers held by sessions now.
    pub live_bytes: u64,
    /// Buffers held by sessions now.
    pub live_buffers: u64,
    /// Sessions alive now.
    pub sessions: u64,
    /// Pipelines compiled (cache misses).
    pub pipelines_compiled: u64,
    /// Pipelines found in the cache.
    pub pipeline_cache_hits: u64,
}

/// How a buffer may be bound: as a storage buffer, a uniform buffer, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub storage: bool,
    pub uniform: bool,
}

impl Usage {
    pub const STORAGE: Usage = Usage {
        storage: true,
        uniform: false,
    };

    fn wgpu(self) -> wgpu::BufferUsages {
        let mut u = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        if self.storage {
            u |= wgpu::BufferUsages::STORAGE;
        }
        if self.uniform {
            u |= wgpu::BufferUsages::UNIFORM;
        }
        u
    }
}

/// What a binding of a pipeline expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingKind {
    Storage,
    Uniform,
}

/// A compiled pipeline with what a dispatch needs to check its bindings.
struct Compiled {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// Group-0 bindings the entry point uses, by binding number.
    bindings: Vec<(u32, BindingKind)>,
}

struct Device {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    max_buffer_size: u64,
    max_workgroups_per_dim: u32,
}

struct Inner {
    allow_software: bool,
    limits: GpuLimits,
    device: OnceLock<Result<Arc<Device>>>,
    opening: tokio::sync::Mutex<()>,
    cache: Mutex<HashMap<[u8; 32], Arc<Compiled>>>,
    next_handle: AtomicU64,
    live_bytes: AtomicU64,
    live_buffers: AtomicU64,
    sessions: AtomicU64,
    compiled: AtomicU64,
    cache_hits: AtomicU64,
}

/// The node's GPU: one wgpu device and queue shared by all tasks, opened on
/// first use. Cheap to clone.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("allow_software", &self.inner.allow_software)
            .field("limits", &self.inner.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Pipelines kept in the node's cache before it is emptied.
const MAX_CACHED_PIPELINES: usize = 1024;

fn open(allow_software: bool) -> Result<Arc<Device>> {
    let instance = instance();
    let adapters = futures_lite_block_on(instance.enumerate_adapters(backends()));
    let rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let adapter = adapters
        .into_iter()
        .filter(|a| allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
        .min_by_key(|a| rank(a.get_info().device_type))
        .ok_or_else(|| {
            GpuError::NoGpu(if allow_software {
                "this node has no GPU adapter (install a driver: on Debian/Ubuntu \
                 `apt-get install mesa-vulkan-drivers libvulkan1` gives the software one)"
                    .into()
            } else {
                "this node has no hardware GPU adapter (a software one such as llvmpipe \
                 counts only with --allow-software-gpu)"
                    .into()
            })
        })?;
    let info = adapter_info(&adapter);
    let limits = adapter.limits();
    let desc = wgpu::DeviceDescriptor {
        label: Some("ferray"),
        required_limits: limits.clone(),
        ..Default::default()
    };
    let (device, queue) = futures_lite_block_on(adapter.request_device(&desc))
        .map_err(|e| GpuError::Device(format!("cannot open {info}: {e}")))?;
    // Errors outside an error scope must never panic the node.
    device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
        tracing::warn!("uncaptured GPU error: {e}");
    }));
    tracing::info!(adapter = %info, "GPU device opened");
    Ok(Arc::new(Device {
        device,
        queue,
        info,
        max_buffer_size: limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size),
        max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
    }))
}

impl Gpu {
    /// The node's GPU; nothing is opened until a task uses it.
    pub fn new(allow_software: bool, limits: GpuLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                allow_software,
                limits,
                device: OnceLock::new(),
                opening: tokio::sync::Mutex::new(()),
                cache: Mutex::new(HashMap::new()),
                next_handle: AtomicU64::new(1),
                live_bytes: AtomicU64::new(0),
                live_buffers: AtomicU64::new(0),
                sessions: AtomicU64::new(0),
                compiled: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
            }),
        }
    }

    pub fn limits(&self) -> &GpuLimits {
        &self.inner.limits
    }

    pub fn stats(&self) -> GpuStats {
        let i = &self.inner;
        GpuStats {
            live_bytes: i.live_bytes.load(Ordering::Relaxed),
            live_buffers: i.live_buffers.load(Ordering::Relaxed),
            sessions: i.sessions.load(Ordering::Relaxed),
            pipelines_compiled: i.compiled.load(Ordering::Relaxed),
            pipeline_cache_hits: i.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Open the device (once; later calls return at once). Blocks: call it
    /// off the async worker threads, or use [`Gpu::ready`].
    pub fn open_blocking(&self) -> Result<AdapterInfo> {
        let dev = self
            .inner
            .device
            .get_or_init(|| open(self.inner.allow_software))
            .clone()?;
        Ok(dev.info.clone())
    }

    /// Open the device on a blocking thread if it is not open yet.
    pub async fn ready(&self) -> Result<AdapterInfo> {
        if let Some(d) = self.inner.device.get() {
            return d.clone().map(|d| d.info.clone());
        }
        let _one_at_a_time = self.inner.opening.lock().await;
        let gpu = self.clone();
        tokio::task::spawn_blocking(move || gpu.open_blocking())
            .await
            .map_err(|e| GpuError::Device(format!("opening the device failed: {e}")))?
    }

    fn device(&self) -> Result<Arc<Device>> {
        match self.inner.device.get() {
            Some(d) => d.clone(),
            None => Err(GpuError::Device("the GPU device is not open yet".into())),
        }
    }

    /// A new session for one task. Opens the device if needed.
    pub async fn session(&self) -> Result<GpuSession> {
        self.ready().await?;
        let dev = self.device()?;
        self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        Ok(GpuSession {
            gpu: self.clone(),
            dev,
            buffers: HashMap::new(),
            pipelines: HashMap::new(),
            bytes: 0,
            dispatches: 0,
        })
    }

    fn handle(&self) -> u64 {
        self.inner.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Compile (or find in the cache) the pipeline of `wgsl` at `entry`.
    fn pipeline(&self, dev: &Arc<Device>, wgsl: &str, entry: &str) -> Result<Arc<Compiled>> {
        let key = {
            let mut h = blake3::Hasher::new();
            h.update(&(wgsl.len() as u64).to_le_bytes());
            h.update(wgsl.as_bytes());
            h.update(entry.as_bytes());
            *h.finalize().as_bytes()
        };
        if let Some(c) = self.inner.cache.lock().get(&key) {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        let compiled = Arc::new(compile(dev, wgsl, entry)?);
        self.inner.compiled.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.inner.cache.lock();
        if cache.len() >= MAX_CACHED_PIPELINES {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }
}

/// `line:column: message` of a naga error, plus its rendering with the source.
fn shader_error(
    what: &str,
    loc: Option<naga::SourceLocation>,
    message: &str,
    rendered: String,
) -> GpuError {
    let at = loc.map_or_else(String::new, |l| {
        format!(" at line {}, column {}", l.line_number, l.line_position)
    });
    GpuError::InvalidShader(format!("{what}{at}: {message}\n{rendered}"))
}

/// Parse and validate with naga (for its messages and the bindings), then
/// create the pipeline inside a validation error scope.
fn compile(dev: &Device, wgsl: &str, entry: &str) -> Result<Compiled> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| {
        shader_error(
            "WGSL parse error",
            e.location(wgsl),
            e.message(),
            e.emit_to_string_with_path(wgsl, "shader.wgsl"),
        )
    })?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .map_err(|e| {
        shader_error(
            "WGSL validation error",
            e.location(wgsl),
            &e.as_inner().to_string(),
            e.emit_to_string_with_path(wgsl, "shader.wgsl"),
        )
    })?;
    let (index, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, ep)| ep.name == entry)
        .ok_or_else(|| {
            let names: Vec<&str> = module
                .entry_points
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            GpuError::InvalidShader(format!(
                "no entry point `{entry}` in the shader; it has: {}",
                names.join(", ")
            ))
        })?;
    if ep.stage != naga::ShaderStage::Compute {
        return Err(GpuError::InvalidShader(format!(
            "entry point `{entry}` is not a @compute function"
        )));
    }
    let uses = info.get_entry_point(index);
    let mut bindings = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        if uses[handle].is_empty() {
            continue;
        }
        let kind = match var.space {
            naga::AddressSpace::Storage { .. } => BindingKind::Storage,
            naga::AddressSpace::Uniform => BindingKind::Uniform,
            _ => {
                return Err(GpuError::InvalidShader(format!(
                    "binding {} of group {}: only storage and uniform buffers are supported",
                    rb.binding, rb.group
                )));
            }
        };
        if rb.group != 0 {
            return Err(GpuError::InvalidShader(format!(
                "binding {} uses @group({}); ferray binds buffers in @group(0) only",
                rb.binding, rb.group
            )));
        }
        bindings.push((rb.binding, kind));
    }
    bindings.sort_unstable_by_key(|b| b.0);

    let scope = dev.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = dev
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("guest shader"),
            source: wgpu::ShaderSource::Wgsl(wgsl.into()),
        });
    let pipeline = dev
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("guest pipeline"),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
    if let Some(e) = futures_lite_block_on(scope.pop()) {
        return Err(GpuError::InvalidShader(format!(
            "the device refused the pipeline: {e}"
        )));
    }
    let layout = pipeline.get_bind_group_layout(0);
    Ok(Compiled {
        pipeline,
        layout,
        bindings,
    })
}

struct BufferEntry {
    buffer: wgpu::Buffer,
    /// Bytes the guest asked for.
    size: u64,
    /// Bytes allocated (rounded up to 4).
    alloc: u64,
    usage: Usage,
}

/// A handle to a buffer or a pipeline of one session.
pub type Handle = u64;

/// One task's use of the GPU: its buffers and pipelines, its limits.
/// Dropping it frees everything it holds.
pub struct GpuSession {
    gpu: Gpu,
    dev: Arc<Device>,
    buffers: HashMap<Handle, BufferEntry>,
    pipelines: HashMap<Handle, Arc<Compiled>>,
    bytes: u64,
    dispatches: u64,
}

impl std::fmt::Debug for GpuSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSession")
            .field("buffers", &self.buffers.len())
            .field("pipelines", &self.pipelines.len())
            .field("bytes", &self.bytes)
            .field("dispatches", &self.dispatches)
            .finish()
    }
}

impl Drop for GpuSession {
    fn drop(&mut self) {
        for (_, b) in self.buffers.drain() {
            b.buffer.destroy();
            self.gpu
                .inner
                .live_bytes
                .fetch_sub(b.alloc, Ordering::Relaxed);
            self.gpu.inner.live_buffers.fetch_sub(1, Ordering::Relaxed);
        }
        self.gpu.inner.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A staging read's completion.
type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;

impl GpuSession {
    /// The adapter this session runs on.
    pub fn adapter(&self) -> &AdapterInfo {
        &self.dev.info
    }

    /// Bytes of GPU memory this session holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn dispatches(&self) -> u64 {
        self.dispatches
    }

    fn limits(&self) -> &GpuLimits {
        &self.gpu.inner.limits
    }

    fn buffer(&self, h: Handle) -> Result<&BufferEntry> {
        self.buffers.get(&h).ok_or_else(|| {
            GpuError::NotFound(format!(
                "buffer {h} is not a buffer of this task (it was never created here, or was destroyed)"
            ))
        })
    }

    fn check_new_buffer(&self, size: u64) -> Result<u64> {
        let max = self.limits().max_buffer_size.min(self.dev.max_buffer_size);
        if size > max {
            return Err(GpuError::Limit(format!(
                "a buffer of {size} bytes is larger than the limit of {max} bytes"
            )));
        }
        if self.buffers.len() >= self.limits().max_buffers {
            return Err(GpuError::Limit(format!(
                "a task may hold at most {} buffers",
                self.limits().max_buffers
            )));
        }
        let alloc = size.max(4).next_multiple_of(4);
        let total = self.bytes.saturating_add(alloc);
        if total > self.limits().max_task_memory {
            return Err(GpuError::Limit(format!(
                "this buffer of {size} bytes would bring the task's GPU memory to {total} bytes, \
                 over its limit of {} bytes",
                self.limits().max_task_memory
            )));
        }
        Ok(alloc)
    }

    fn add_buffer(&mut self, buffer: wgpu::Buffer, size: u64, alloc: u64, usage: Usage) -> Handle {
        let h = self.gpu.handle();
        self.bytes += alloc;
        self.gpu
            .inner
            .live_bytes
            .fetch_add(alloc, Ordering::Relaxed);
        self.gpu.inner.live_buffers.fetch_add(1, Ordering::Relaxed);
        self.buffers.insert(
            h,
            BufferEntry {
                buffer,
                size,
                alloc,
                usage,
            },
        );
        h
    }

    /// A buffer of `size` zero bytes.
    pub fn create_zeroed(&mut self, size: u64, usage: Usage) -> Result<Handle> {
        let alloc = self.check_new_buffer(size)?;
        let buffer = self.dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("guest buffer"),
            size: alloc,
            usage: usage.wgpu(),
            mapped_at_creation: false,
        });
        Ok(self.add_buffer(buffer, size, alloc, usage))
    }

    /// A buffer holding `data`.
    pub fn create_with(&mut self, data: &[u8], usage: Usage) -> Result<Handle> {
        let size = data.len() as u64;
        let alloc = self.check_new_buffer(size)?;
        let buffer = self.dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("guest buffer"),
            size: alloc,
            usage: usage.wgpu(),
            mapped_at_creation: true,
        });
        {
            let mut view = buffer
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| GpuError::Device(format!("cannot fill the new buffer: {e}")))?;
            // The view is `alloc` bytes, at least `data.len()`.
            view.slice(..data.len()).copy_from_slice(data);
        }
        buffer.unmap();
        Ok(self.add_buffer(buffer, size, alloc, usage))
    }

    /// Write `data` into a buffer at `offset` (a multiple of 4).
    pub fn write(&mut self, h: Handle, offset: u64, data: &[u8]) -> Result<()> {
        let b = self.buffer(h)?;
        if !offset.is_multiple_of(4) {
            return Err(GpuError::InvalidArgument(format!(
                "the offset {offset} is not a multiple of 4"
            )));
        }
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|end| end > b.size) {
            return Err(GpuError::InvalidArgument(format!(
                "writing {} bytes at offset {offset} overruns the buffer of {} bytes",
                data.len(),
                b.size
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        if data.len().is_multiple_of(4) {
            self.dev.queue.write_buffer(&b.buffer, offset, data);
        } else if offset + data.len() as u64 == b.size {
            // Copies move whole 4-byte words; a write that ends at the end of
            // the buffer is padded with zeros into the rounding padding.
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.dev.queue.write_buffer(&b.buffer, offset, &padded);
        } else {
            return Err(GpuError::InvalidArgument(format!(
                "a write of {} bytes must be a multiple of 4 bytes long unless it ends at the end of the buffer",
                data.len()
            )));
        }
        Ok(())
    }

    /// Free a buffer now (dropping the session frees the rest).
    pub fn destroy_buffer(&mut self, h: Handle) -> Result<()> {
        let b = self.buffers.remove(&h).ok_or_else(|| {
            GpuError::NotFound(format!("buffer {h} is not a buffer of this task"))
        })?;
        b.buffer.destroy();
        self.bytes -= b.alloc;
        self.gpu
            .inner
            .live_bytes
            .fetch_sub(b.alloc, Ordering::Relaxed);
        self.gpu.inner.live_buffers.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// The bytes of a buffer, once the work submitted before is done.
    pub async fn read(&mut self, h: Handle) -> Result<Vec<u8>> {
        let b = self.buffer(h)?;
        let (size, alloc) = (b.size, b.alloc);
        let staging = self.dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: alloc,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .dev
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(&b.buffer, 0, &staging, 0, alloc);
        let index = self.dev.queue.submit([enc.finish()]);
        let (tx, rx) = tokio::sync::oneshot::channel::<MapResult>();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait(Some(index)).await?;
        let mapped = rx
            .await
            .map_err(|_| GpuError::Device("the read-back was abandoned".into()))?;
        mapped.map_err(|e| GpuError::Device(format!("cannot map the read-back buffer: {e}")))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::Device(format!("cannot read the mapped buffer: {e}")))?;
            view.get(..size as usize).unwrap_or(&view[..]).to_vec()
        };
        staging.unmap();
        staging.destroy();
        Ok(out)
    }

    /// Wait on a blocking thread until `index` (or everything submitted) is done.
    async fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let device = self.dev.device.clone();
        let timeout = self.limits().max_wait;
        tokio::task::spawn_blocking(move || {
            device.poll(wgpu::PollType::Wait {
                submission_index: index,
                timeout: Some(timeout),
            })
        })
        .await
        .map_err(|e| GpuError::Device(format!("waiting for the GPU failed: {e}")))?
        .map(|_| ())
        .map_err(|e| GpuError::Device(format!("waiting for the GPU: {e}")))
    }

    /// Wait until all GPU work submitted so far is done.
    pub async fn finish(&mut self) -> Result<()> {
        self.wait(None).await
    }

    /// A compute pipeline from WGSL source and an entry point; compiled
    /// once per node for the same source and entry point.
    pub async fn create_pipeline(&mut self, wgsl: String, entry: String) -> Result<Handle> {
        let lim = *self.limits();
        if wgsl.len() > lim.max_wgsl_bytes {
            return Err(GpuError::Limit(format!(
                "the WGSL source is {} bytes, over the limit of {} bytes",
                wgsl.len(),
                lim.max_wgsl_bytes
            )));
        }
        if entry.is_empty() || entry.len() > 256 {
            return Err(GpuError::InvalidArgument(
                "the entry point name must be 1 to 256 bytes".into(),
            ));
        }
        if self.pipelines.len() >= lim.max_pipelines {
            return Err(GpuError::Limit(format!(
                "a task may hold at most {} pipelines",
                lim.max_pipelines
            )));
        }
        let gpu = self.gpu.clone();
        let dev = self.dev.clone();
        let compiled = tokio::task::spawn_blocking(move || gpu.pipeline(&dev, &wgsl, &entry))
            .await
            .map_err(|e| GpuError::Device(format!("compiling the pipeline failed: {e}")))??;
        let h = self.gpu.handle();
        self.pipelines.insert(h, compiled);
        Ok(h)
    }

    pub fn destroy_pipeline(&mut self, h: Handle) -> Result<()> {
        self.pipelines.remove(&h).map(|_| ()).ok_or_else(|| {
            GpuError::NotFound(format!("pipeline {h} is not a pipeline of this task"))
        })
    }

    /// Run `pipeline` over `workgroups` with `bindings` (binding number →
    /// buffer). Returns once submitted; reads and `finish` wait for it.
    pub async fn dispatch(
        &mut self,
        pipeline: Handle,
        bindings: &[(u32, Handle)],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let lim = *self.limits();
        if self.dispatches >= lim.max_dispatches {
            return Err(GpuError::Limit(format!(
                "a task may make at most {} dispatches",
                lim.max_dispatches
            )));
        }
        let p = self.pipelines.get(&pipeline).ok_or_else(|| {
            GpuError::NotFound(format!(
                "pipeline {pipeline} is not a pipeline of this task"
            ))
        })?;
        let max_dim = self.dev.max_workgroups_per_dim;
        if workgroups.contains(&0) {
            return Err(GpuError::InvalidArgument(format!(
                "workgroup counts must be at least 1 (got {workgroups:?})"
            )));
        }
        if workgroups.iter().any(|&w| w > max_dim) {
            return Err(GpuError::Limit(format!(
                "workgroup counts {workgroups:?}: the device allows at most {max_dim} per dimension"
            )));
        }
        let total = workgroups.iter().map(|&w| u64::from(w)).product::<u64>();
        if total > lim.max_workgroups {
            return Err(GpuError::Limit(format!(
                "{total} workgroups in one dispatch, over the limit of {}",
                lim.max_workgroups
            )));
        }
        let mut given: Vec<(u32, Handle)> = bindings.to_vec();
        given.sort_unstable_by_key(|b| b.0);
        if given.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(GpuError::InvalidArgument(
                "a binding number is given twice".into(),
            ));
        }
        let wanted: Vec<u32> = p.bindings.iter().map(|b| b.0).collect();
        let got: Vec<u32> = given.iter().map(|b| b.0).collect();
        if wanted != got {
            return Err(GpuError::InvalidArgument(format!(
                "the shader's entry point uses bindings {wanted:?} of @group(0); the dispatch gives {got:?}"
            )));
        }
        let mut entries = Vec::with_capacity(given.len());
        for ((binding, h), (_, kind)) in given.iter().zip(&p.bindings) {
            let b = self.buffer(*h)?;
            let ok = match kind {
                BindingKind::Storage => b.usage.storage,
                BindingKind::Uniform => b.usage.uniform,
            };
            if !ok {
                return Err(GpuError::InvalidArgument(format!(
                    "binding {binding} is a {} buffer in the shader; buffer {h} was not created with that usage",
                    match kind {
                        BindingKind::Storage => "storage",
                        BindingKind::Uniform => "uniform",
                    }
                )));
            }
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource: b.buffer.as_entire_binding(),
            });
        }
        let scope = self
            .dev
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let group = self
            .dev
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &p.layout,
                entries: &entries,
            });
        let mut enc = self
            .dev
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&p.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        let commands = enc.finish();
        let popped = scope.pop();
        if let Some(e) = popped.await {
            return Err(GpuError::InvalidArgument(format!(
                "the device refused the dispatch: {e}"
            )));
        }
        self.dev.queue.submit([commands]);
        self.dispatches += 1;
        Ok(())
    }
}
