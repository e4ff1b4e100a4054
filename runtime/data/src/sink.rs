//! Sinks: a dataset written as Parquet, CSV or newline-delimited JSON
//! files, one per non-empty block, in a directory.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;

use crate::{DataError, WriteSummary};

/// A file format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    Json,
}

impl Format {
    pub fn ext(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

pub(crate) struct Writer {
    format: Format,
    dir: PathBuf,
    summary: WriteSummary,
}

impl Writer {
    /// Makes `dir` if need be.
    pub(crate) fn new(format: Format, dir: &Path) -> Result<Self, DataError> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        Ok(Writer {
            format,
            dir: dir.to_path_buf(),
            summary: WriteSummary::default(),
        })
    }

    /// Writes `batch` to a file of its own (an empty batch to none).
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), DataError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let path = self.dir.join(format!(
            "part-{:05}.{}",
            self.summary.files.len(),
            self.format.ext()
        ));
        let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
        let out = BufWriter::new(file);
        let failed = |e: &dyn std::fmt::Display| DataError::file(&path, e);
        match self.format {
            Format::Parquet => {
                let mut w = parquet::arrow::ArrowWriter::try_new(out, batch.schema(), None)
                    .map_err(|e| failed(&e))?;
                w.write(batch).map_err(|e| failed(&e))?;
                w.close().map_err(|e| failed(&e))?;
            }
            Format::Csv => {
                let mut w = arrow_csv::Writer::new(out);
                w.write(batch).map_err(|e| failed(&e))?;
                w.into_inner().into_inner().map_err(|e| failed(&e))?;
            }
            Format::Json => {
                let mut w = arrow_json::LineDelimitedWriter::new(out);
                w.write(batch).map_err(|e| failed(&e))?;
                w.finish().map_err(|e| failed(&e))?;
                w.into_inner().into_inner().map_err(|e| failed(&e))?;
            }
        }
        self.summary.rows += batch.num_rows() as u64;
        self.summary.files.push(path);
        Ok(())
    }

    pub(crate) fn finish(self) -> WriteSummary {
        self.summary
    }
}

/// A batch as newline-delimited JSON, one object per row (nulls left out).
pub fn json_lines(batch: &RecordBatch) -> Result<Vec<u8>, DataError> {
    let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
    w.write(batch)
        .and_then(|()| w.finish())
        .map_err(|e| DataError::arrow("cannot write rows as JSON", e))?;
    Ok(w.into_inner())
}
