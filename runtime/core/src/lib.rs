//! ferray's core types: newtype ids, task and actor options, resource
//! amounts, the error enum shared by every layer, and the parsers for the
//! command line's sizes and durations. Nothing here does I/O.

mod call;
mod ceilings;
mod error;
mod histogram;
pub mod http;
mod ids;
mod options;
mod parse;
mod resources;
mod text;
pub mod view;

pub use call::Arg;
pub use ceilings::{Ceilings, JobCaps};
pub use error::{Error, Result};
pub use histogram::{Histogram, HistogramSnapshot};
pub use ids::{ActorId, ComponentId, JobId, NodeId, ObjectId, TaskId};
pub use options::{
    ActorOptions, AttemptEnd, GroupMember, Report, Strategy, TaskOptions, retry_backoff,
};
pub use parse::{parse_duration, parse_size};
pub use resources::{ResourceSet, Resources};
pub use text::cut_text;
