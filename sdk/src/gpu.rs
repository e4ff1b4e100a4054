//! GPU compute from a guest: buffers on the node's GPU, WGSL compute kernels, dispatches, read
//! back. The task (or actor) must be submitted with `num_gpus > 0` (see [`crate::Options`]);
//! otherwise every call returns [`GpuError::NoGpu`].
//!
//! ```no_run
//! use ferray_sdk::gpu::{Buffer, Kernel, workgroups};
//!
//! const SAXPY: &str = r#"
//! @group(0) @binding(0) var<storage, read> x: array<f32>;
//! @group(0) @binding(1) var<storage, read_write> y: array<f32>;
//! @group(0) @binding(2) var<uniform> a: vec4<f32>;
//! @compute @workgroup_size(64)
//! fn main(@builtin(global_invocation_id) id: vec3<u32>) {
//!     if (id.x < arrayLength(&y)) { y[id.x] = a.x * x[id.x] + y[id.x]; }
//! }"#;
//!
//! fn saxpy(a: f32, x: &[f32], y: &[f32]) -> ferray_sdk::gpu::Result<Vec<f32>> {
//!     let bx = Buffer::from_slice(x)?;
//!     let by = Buffer::from_slice(y)?;
//!     let ba = Buffer::uniform(&[a, 0.0, 0.0, 0.0])?;
//!     let kernel = Kernel::new(SAXPY, "main")?;
//!     kernel.dispatch(&[&bx, &by, &ba], [workgroups(y.len(), 64), 1, 1])?;
//!     by.read::<f32>()
//! }
//! ```
//!
//! Buffers stay on the device between dispatches: dispatch as often as needed and read back
//! once. Dropping a [`Buffer`] or [`Kernel`] frees it; whatever is left is freed when the task
//! ends.

use core::fmt;

use crate::bindings::ferray::runtime::gpu as wit;

/// The raw `ferray:runtime/gpu` bindings (handles are plain numbers).
pub use crate::bindings::ferray::runtime::gpu as raw;

/// Result of a GPU call.
pub type Result<T, E = GpuError> = core::result::Result<T, E>;

/// Why a GPU call failed (the host's `gpu-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuError {
    /// The node has no GPU, or this task did not ask for one (`num_gpus`).
    NoGpu(String),
    /// The WGSL did not compile: the compiler's message with line and column.
    InvalidShader(String),
    /// A limit: buffer size, GPU memory per task, dispatches per task.
    Limit(String),
    /// A bad size, offset, binding or workgroup count.
    InvalidArgument(String),
    /// No such buffer or pipeline in this task.
    NotFound(String),
    /// The device failed, or the work did not finish in time.
    Device(String),
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoGpu(m) => write!(f, "no GPU: {m}"),
            GpuError::InvalidShader(m) => write!(f, "invalid shader: {m}"),
            GpuError::Limit(m) => write!(f, "GPU limit: {m}"),
            GpuError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            GpuError::NotFound(m) => write!(f, "not found: {m}"),
            GpuError::Device(m) => write!(f, "GPU device error: {m}"),
        }
    }
}

impl std::error::Error for GpuError {}

impl From<wit::GpuError> for GpuError {
    fn from(e: wit::GpuError) -> Self {
        match e {
            wit::GpuError::NoGpu(m) => GpuError::NoGpu(m),
            wit::GpuError::InvalidShader(m) => GpuError::InvalidShader(m),
            wit::GpuError::Limit(m) => GpuError::Limit(m),
            wit::GpuError::InvalidArgument(m) => GpuError::InvalidArgument(m),
            wit::GpuError::NotFound(m) => GpuError::NotFound(m),
            wit::GpuError::Device(m) => GpuError::Device(m),
        }
    }
}

/// Plain numbers that cross to the GPU as little-endian bytes (WGSL's `f32`, `u32`, `i32`).
pub trait Scalar: Copy {
    /// Bytes of one value.
    const SIZE: usize;
    /// Append the little-endian bytes of `self`.
    fn put(self, out: &mut Vec<u8>);
    /// The value of `SIZE` little-endian bytes.
    fn take(bytes: &[u8]) -> Self;
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn take(bytes: &[u8]) -> Self {
                let mut b = [0u8; core::mem::size_of::<$t>()];
                b.copy_from_slice(&bytes[..Self::SIZE]);
                <$t>::from_le_bytes(b)
            }
        }
    )*};
}
scalar!(f32, u32, i32, f64, u64, i64);

/// The little-endian bytes of `values`.
pub fn to_bytes<T: Scalar>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for v in values {
        v.put(&mut out);
    }
    out
}

/// The values in little-endian `bytes` (a trailing partial value is ignored).
pub fn from_bytes<T: Scalar>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::take).collect()
}

/// Workgroups needed to cover `n` items with `size` invocations each (at least 1).
pub fn workgroups(n: usize, size: u32) -> u32 {
    let size = size.max(1) as usize;
    u32::try_from(n.div_ceil(size).max(1)).unwrap_or(u32::MAX)
}

/// The adapter this task's GPU work runs on.
pub fn adapter() -> Result<String> {
    wit::adapter().map_err(Into::into)
}

/// Wait until all GPU work this task submitted has finished.
pub fn finish() -> Result<()> {
    wit::finish().map_err(Into::into)
}

/// How a buffer may be bound.
pub use wit::BufferUsage as Usage;

/// A buffer on the node's GPU, owned by this task.
#[derive(Debug)]
pub struct Buffer {
    handle: u64,
    len: u64,
}

impl Buffer {
    /// A storage buffer holding `values`.
    pub fn from_slice<T: Scalar>(values: &[T]) -> Result<Buffer> {
        Self::from_bytes(&to_bytes(values), Usage::STORAGE)
    }

    /// A uniform buffer holding `values` (WGSL pads uniforms to 16 bytes: use a `vec4`).
    pub fn uniform<T: Scalar>(values: &[T]) -> Result<Buffer> {
        Self::from_bytes(&to_bytes(values), Usage::UNIFORM)
    }

    /// A buffer holding `bytes`, bindable as `usage` says.
    pub fn from_bytes(bytes: &[u8], usage: Usage) -> Result<Buffer> {
        let handle = wit::create_buffer(bytes, usage)?;
        Ok(Buffer {
            handle,
            len: bytes.len() as u64,
        })
    }

    /// A storage buffer of `len` zero values of `T`.
    pub fn zeroed<T: Scalar>(len: usize) -> Result<Buffer> {
        Self::zeroed_bytes((len as u64).saturating_mul(T::SIZE as u64), Usage::STORAGE)
    }

    /// A buffer of `size` zero bytes.
    pub fn zeroed_bytes(size: u64, usage: Usage) -> Result<Buffer> {
        let handle = wit::create_buffer_zeroed(size, usage)?;
        Ok(Buffer { handle, len: size })
    }

    /// Overwrite the buffer from its start with `values`.
    pub fn write<T: Scalar>(&self, values: &[T]) -> Result<()> {
        self.write_bytes(0, &to_bytes(values))
    }

    /// Write `bytes` at byte `offset` (a multiple of 4).
    pub fn write_bytes(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        wit::write_buffer(self.handle, offset, bytes).map_err(Into::into)
    }

    /// The buffer's values, after the work submitted before has finished.
    pub fn read<T: Scalar>(&self) -> Result<Vec<T>> {
        Ok(from_bytes(&self.read_bytes()?))
    }

    /// The buffer's bytes, after the work submitted before has finished.
    pub fn read_bytes(&self) -> Result<Vec<u8>> {
        wit::read_buffer(self.handle).map_err(Into::into)
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The host's handle of this buffer (valid only in this task).
    pub fn handle(&self) -> u64 {
        self.handle
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let _ = wit::destroy_buffer(self.handle);
    }
}

/// A compiled WGSL compute kernel (a pipeline), owned by this task. The node compiles the same
/// source and entry point once.
#[derive(Debug)]
pub struct Kernel {
    handle: u64,
}

impl Kernel {
    /// Compile `wgsl`'s `@compute` function `entry`. A WGSL error comes back as
    /// [`GpuError::InvalidShader`] with the line and column.
    pub fn new(wgsl: &str, entry: &str) -> Result<Kernel> {
        Ok(Kernel {
            handle: wit::create_pipeline(wgsl, entry)?,
        })
    }

    /// Run over `workgroups` (x, y, z) with `buffers[i]` bound at `@group(0) @binding(i)`.
    /// Returns once submitted; reading a buffer waits for the work.
    pub fn dispatch(&self, buffers: &[&Buffer], workgroups: [u32; 3]) -> Result<()> {
        let bindings: Vec<(u32, &Buffer)> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u32, *b))
            .collect();
        self.dispatch_with(&bindings, workgroups)
    }

    /// Run over `workgroups` with explicit `(binding number, buffer)` pairs.
    pub fn dispatch_with(&self, bindings: &[(u32, &Buffer)], workgroups: [u32; 3]) -> Result<()> {
        let bindings: Vec<wit::Binding> = bindings
            .iter()
            .map(|(index, b)| wit::Binding {
                index: *index,
                buffer: b.handle,
            })
            .collect();
        wit::dispatch(
            self.handle,
            &bindings,
            workgroups[0],
            workgroups[1],
            workgroups[2],
        )
        .map_err(Into::into)
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = wit::destroy_pipeline(self.handle);
    }
}
