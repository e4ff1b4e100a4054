//! ferray tune: hyper-parameter search over components, after Ray Tune.
//!
//! A [`Space`] (TOML: `grid_search`, `choice`, `uniform`, `quniform`,
//! `loguniform`, `randint`, constants) generates configs, reproducibly from a
//! seed; a [`Tuner`] runs one trial per config on a [`ferray::Runtime`]
//! (embedded or connected to a cluster): an actor of the component's
//! trainable class, stepped until the [`Scheduler`] (FIFO, ASHA, the median
//! stopping rule) stops it or it reaches `max_t`, checkpointed with its
//! `save` and, when its actor dies, restored from the last checkpoint on a
//! new one; or one call of a trainable function. The [`ResultGrid`] holds
//! every trial's config, status and metrics, as CSV, JSON or a table.
//!
//! The space, the schedulers and the grid do no I/O; only the tuner talks
//! to the runtime.

mod grid;
mod sched;
mod space;
pub mod trainable;
mod tuner;

pub use grid::{ResultGrid, TrialResult, TrialStatus};
pub use sched::{Decision, Mode, Scheduler, SchedulerConfig};
pub use space::{Config, Domain, Space, Val};
pub use tuner::{Progress, REDRAW, TuneConfig, Tuner};

/// What can go wrong before or around a search (a trial's own failure is
/// in its [`TrialResult`]).
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// The search-space file: one line naming the file and the field.
    #[error("bad search space: {0}")]
    Space(String),
    /// The trainable or the search's settings do not fit.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] ferray_core::Error),
}
