//! ferray: Ray's programming model — tasks, actors, objects — with
//! WebAssembly components as the unit of code.
//!
//! This crate is the runtime and its embedding API. [`Runtime::local`] starts
//! an embedded runtime in this process, like `ray.init()`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferray::Error> {
//! let rt = ferray::Runtime::local().await?;
//! let squares = rt.load_file("squares.wasm").await?;
//! let refs = (0..10)
//!     .map(|i| squares.call("heavy-compute", (i as i64,)))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let values: Vec<i64> = rt.get_all(&refs).await?;
//! assert_eq!(values[3], 9);
//! # Ok(()) }
//! ```
//!
//! Rust values go in and out in ferray's canonical encoding (postcard over
//! serde; see `docs/VALUES.md`): a WIT `s64` is an `i64`, a `list<T>` a
//! `Vec<T>`, a record a struct with the fields in WIT order, a variant an
//! enum, `option`/`result` are `Option`/`Result`, a tuple of arguments is a
//! Rust tuple.

mod actors;
mod api;
mod backend;
pub mod bench;
#[cfg(feature = "cluster")]
pub mod cluster;
mod collective;
mod http;
mod objects;
mod output;
mod runtime;
mod sched;
mod tasks;

pub use api::{
    ActorBuilder, ActorHandle, Component, FreeOnDrop, Runtime, RuntimeBuilder, RuntimeStats,
    TaskBuilder, WaveResult, default_cache_dir,
};
pub use ferray_codec::{ClassInfo, ComponentInfo, FuncInfo, Inspection};
pub use ferray_core::{
    ActorId, ActorOptions, ComponentId, Error, JobCaps, JobId, NodeId, ObjectId, Report, Resources,
    Strategy, TaskId, TaskOptions, parse_duration, parse_size,
};
pub use ferray_gpu::{AdapterInfo, GpuLimits, GpuStats};
pub use ferray_host::{HostStats, HttpBody, INCOMING_HANDLER};
pub use ferray_store::StoreStats;
pub use http::{
    HTTP_HANDLE, HttpRequest, HttpResponse, MAX_HTTP_RESPONSE_BYTES, ServeRouter, header_pairs,
    http_request, read_response,
};
pub use objects::{ObjectRef, RefName};
pub use output::{OutputLine, OutputMode, Stream};
pub use runtime::TaskCounts;

/// `Result` with ferray's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
