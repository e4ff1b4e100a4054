//! ferray data: Ray Data's model over ferray's object store and scheduler.
//!
//! A [`Dataset`] is lazy: a source (Parquet, CSV or JSON files, binary
//! files, a range, items) and the operators to apply, run only when the
//! dataset is consumed (`iter_batches`, `take_all`, `count`,
//! `write_parquet`, ...). Its blocks are Arrow record batches in the IPC
//! stream format, stored as `list<u8>` objects ([`block`]): content
//! addressed, and handed as they are to components. `map_batches` calls a
//! component function `func(batch: list<u8>) -> list<u8>` (or
//! `-> result<list<u8>, string>`) on a task pool, or a method of an
//! exported resource on an actor pool that grows from `min` to `max`
//! actors, each keeping its state (a model loaded once per actor).
//!
//! The executor streams: each operator has a bounded number of blocks in
//! flight, the source reads ahead only as far as the memory budget lets
//! it, and a block's object is freed once the next operator has made its
//! own. The same code runs on the embedded runtime and on a cluster
//! (`Runtime::connect`): tasks and actors go where the scheduler puts them,
//! and a lost block made by a task is rebuilt from its lineage like any
//! task result.

pub mod block;
mod dataset;
pub mod pipeline;
mod shuffle;
mod sink;
mod source;

pub use dataset::{DataContext, Dataset, GroupBy, MapBatches, OpProgress, Progress, WriteSummary};
pub use pipeline::Pipeline;
pub use shuffle::{AggFunc, Aggregate};
pub use sink::{Format, json_lines};
pub use source::Source;

use std::path::Path;

/// What can go wrong reading, transforming and writing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{what}: {message}")]
    Arrow { what: String, message: String },
    /// Rows that do not have the columns an earlier block or file had.
    #[error("column `{column}` {message}")]
    Schema { column: String, message: String },
    #[error("a block is not a valid list<u8> value: {0}")]
    BadBlock(String),
    /// An operator failed: a task or actor call failed, or a guest
    /// returned something that is not a block.
    #[error("{op}: {message}")]
    Op { op: String, message: String },
    #[error("{0}")]
    InvalidArgument(String),
    /// A pipeline file that does not parse or check: the file, the field.
    #[error("{file}: {field}: {message}")]
    Pipeline {
        file: String,
        field: String,
        message: String,
    },
    #[error(transparent)]
    Runtime(#[from] ferray::Error),
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn file(path: &Path, e: impl std::fmt::Display) -> Self {
        DataError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    pub(crate) fn arrow(what: &str, e: impl std::fmt::Display) -> Self {
        DataError::Arrow {
            what: what.to_string(),
            message: e.to_string(),
        }
    }
}
