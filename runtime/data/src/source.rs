//! Sources: files (Parquet, CSV, newline-delimited JSON, raw bytes) from
//! paths, directories and glob patterns, a range of integers, in-memory
//! items. A source is read lazily, block by block, on a thread of its own
//! that stops as soon as nobody wants more (the executor's back-pressure).

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::mpsc::Sender;

use crate::DataError;

/// Where a dataset's rows come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Parquet files: one block per row group (split further past the
    /// block size in rows).
    Parquet { paths: Vec<String> },
    /// CSV files, with a header line (column names) unless told otherwise;
    /// the columns' types are inferred from all of each file's rows (one
    /// more pass over it), and every file must have the first's.
    Csv {
        paths: Vec<String>,
        has_header: bool,
        delimiter: u8,
    },
    /// Newline-delimited JSON files (one object per line).
    Json { paths: Vec<String> },
    /// Whole files as rows `{path: string, bytes: binary}`.
    BinaryFiles { paths: Vec<String> },
    /// Rows `{id: int64}` from 0 to `n - 1`.
    Range { n: u64 },
    /// JSON values: objects are rows; anything else is a row `{item: value}`.
    Items { rows: Arc<Vec<serde_json::Value>> },
}

/// Past this many bytes, binary files start a new block.
const BINARY_BLOCK_BYTES: usize = 64 << 20;

impl Source {
    /// Read every block in order into `tx` (encoded, with its row count),
    /// `block_rows` rows at most in a block, stopping after `limit` rows or
    /// once the receiver is gone. Errors are sent too, and end the reading.
    /// Blocking: runs on a thread of its own.
    pub(crate) fn read(
        &self,
        block_rows: usize,
        limit: Option<u64>,
        tx: Sender<Result<(Bytes, u64), DataError>>,
    ) {
        let mut out = Out {
            tx,
            left: limit.unwrap_or(u64::MAX),
        };
        if let Err(e) = self.read_into(block_rows.max(1), &mut out) {
            let _ = out.tx.blocking_send(Err(e));
        }
    }

    fn read_into(&self, block_rows: usize, out: &mut Out) -> Result<(), DataError> {
        match self {
            Source::Parquet { paths } => {
                let mut first: Option<(SchemaRef, PathBuf)> = None;
                for path in expand(paths)? {
                    let file = open(&path)?;
                    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| DataError::file(&path, e))?;
                    if builder.metadata().file_metadata().num_rows() == 0 {
                        continue; // no rows: no block, and no say in the schema
                    }
                    let schema = builder.schema().clone();
                    same_schema(&mut first, &schema, &path)?;
                    let groups = builder.metadata().num_row_groups();
                    for g in 0..groups {
                        let file = open(&path)?;
                        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                            .and_then(|b| {
                                b.with_row_groups(vec![g])
                                    .with_batch_size(block_rows)
                                    .build()
                            })
                            .map_err(|e| DataError::file(&path, e))?;
                        if !send_all(reader, &path, out)? {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            }
            Source::Csv {
                paths,
                has_header,
                delimiter,
            } => {
                let mut first: Option<(SchemaRef, PathBuf)> = None;
                for path in expand(paths)? {
                    let format = arrow_csv::reader::Format::default()
                        .with_header(*has_header)
                        .with_delimiter(*delimiter);
                    let mut file = open(&path)?;
                    let (schema, records) = format
                        .infer_schema(&mut file, None)
                        .map_err(|e| DataError::file(&path, e))?;
                    if records == 0 {
                        continue;
                    }
                    let schema = Arc::new(schema);
                    same_schema(&mut first, &schema, &path)?;
                    file.rewind().map_err(|e| DataError::io(&path, e))?;
                    let reader = arrow_csv::ReaderBuilder::new(schema)
                        .with_header(*has_header)
                        .with_delimiter(*delimiter)
                        .with_batch_size(block_rows)
                        .build(file)
                        .map_err(|e| DataError::file(&path, e))?;
                    if !send_all(reader, &path, out)? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Source::Json { paths } => {
                let mut first: Option<(SchemaRef, PathBuf)> = None;
                for path in expand(paths)? {
                    let mut file = BufReader::new(open(&path)?);
                    let (schema, records) =
                        arrow_json::reader::infer_json_schema_from_seekable(&mut file, None)
                            .map_err(|e| DataError::file(&path, e))?;
                    if records == 0 {
                        continue;
                    }
                    let schema = Arc::new(schema);
                    same_schema(&mut first, &schema, &path)?;
                    let reader = arrow_json::ReaderBuilder::new(schema)
                        .with_batch_size(block_rows)
                        .build(file)
                        .map_err(|e| DataError::file(&path, e))?;
                    if !send_all(reader, &path, out)? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Source::BinaryFiles { paths } => {
                let mut names = Vec::new();
                let mut datas = Vec::new();
                let mut bytes = 0usize;
                for path in expand(paths)? {
                    let data = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
                    bytes += data.len();
                    names.push(path.display().to_string());
                    datas.push(data);
                    if names.len() >= block_rows || bytes >= BINARY_BLOCK_BYTES {
                        let batch =
                            binary_batch(std::mem::take(&mut names), std::mem::take(&mut datas))?;
                        bytes = 0;
                        if !out.send(batch) {
                            return Ok(());
                        }
                    }
                }
                if !names.is_empty() {
                    let _ = out.send(binary_batch(names, datas)?);
                }
                Ok(())
            }
            Source::Range { n } => {
                let mut start = 0u64;
                while start < *n {
                    let end = (*n).min(start.saturating_add(block_rows as u64));
                    let ids: Int64Array = (start..end).map(|i| i as i64).collect();
                    let batch = RecordBatch::try_from_iter([("id", Arc::new(ids) as ArrayRef)])
                        .map_err(|e| DataError::arrow("range", e))?;
                    if !out.send(batch) {
                        return Ok(());
                    }
                    start = end;
                }
                Ok(())
            }
            Source::Items { rows } => {
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::Object(_) => v.clone(),
                        other => serde_json::json!({ "item": other }),
                    })
                    .collect();
                if rows.is_empty() {
                    return Ok(());
                }
                let schema = arrow_json::reader::infer_json_schema_from_iterator(
                    rows.iter().map(Ok::<_, arrow_schema::ArrowError>),
                )
                .map_err(|e| DataError::arrow("items", e))?;
                let schema = Arc::new(schema);
                for chunk in rows.chunks(block_rows) {
                    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
                        .with_batch_size(block_rows)
                        .build_decoder()
                        .map_err(|e| DataError::arrow("items", e))?;
                    decoder
                        .serialize(chunk)
                        .map_err(|e| DataError::arrow("items", e))?;
                    let batch = decoder.flush().map_err(|e| DataError::arrow("items", e))?;
                    if let Some(batch) = batch
                        && !out.send(batch)
                    {
                        return Ok(());
                    }
                }
                Ok(())
            }
        }
    }
}

/// Where the blocks go, and how many more rows are wanted.
struct Out {
    tx: Sender<Result<(Bytes, u64), DataError>>,
    left: u64,
}

impl Out {
    /// Send a block (cut to the rows still wanted); `false` when no more
    /// are wanted.
    fn send(&mut self, batch: RecordBatch) -> bool {
        if self.left == 0 {
            return false;
        }
        let rows = batch.num_rows() as u64;
        let batch = if rows > self.left {
            batch.slice(0, self.left as usize)
        } else {
            batch
        };
        let rows = batch.num_rows() as u64;
        self.left -= rows;
        let block = crate::block::encode_batch(&batch).map(|b| (b, rows));
        let failed = block.is_err();
        self.tx.blocking_send(block).is_ok() && !failed && self.left > 0
    }
}

/// Send every batch of a file's reader (an error names the file); `false`
/// once no more are wanted.
fn send_all<E: std::fmt::Display>(
    reader: impl Iterator<Item = Result<RecordBatch, E>>,
    path: &Path,
    out: &mut Out,
) -> Result<bool, DataError> {
    for batch in reader {
        if !out.send(batch.map_err(|e| DataError::file(path, e))?) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn binary_batch(names: Vec<String>, datas: Vec<Vec<u8>>) -> Result<RecordBatch, DataError> {
    let names = StringArray::from(names);
    let datas = BinaryArray::from_iter_values(datas.iter());
    RecordBatch::try_from_iter([
        ("path", Arc::new(names) as ArrayRef),
        ("bytes", Arc::new(datas) as ArrayRef),
    ])
    .map_err(|e| DataError::arrow("binary files", e))
}

fn open(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|e| DataError::io(path, e))
}

/// Every file of `patterns`, in order: a file itself; a directory's files,
/// recursively and sorted, leaving out hidden ones (`.x`) and markers
/// (`_SUCCESS`); a glob pattern's matches, sorted.
pub(crate) fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for p in patterns {
        let before = out.len();
        if p.contains(['*', '?', '[']) {
            let matches = glob::glob(p)
                .map_err(|e| DataError::InvalidArgument(format!("bad glob pattern {p:?}: {e}")))?;
            let mut found = Vec::new();
            for m in matches {
                let path = m.map_err(|e| {
                    let p = e.path().to_path_buf();
                    DataError::io(&p, e.into())
                })?;
                if path.is_file() {
                    found.push(path);
                }
            }
            found.sort();
            out.extend(found);
        } else {
            let path = PathBuf::from(p);
            let meta = std::fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
            if meta.is_dir() {
                walk(&path, &mut out)?;
            } else {
                out.push(path);
            }
        }
        if out.len() == before {
            return Err(DataError::InvalidArgument(format!("no files match {p:?}")));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Every file of a source has the first file's columns, by name and type
/// (nullability aside: a CSV file's inference cannot tell it).
fn same_schema(
    first: &mut Option<(SchemaRef, PathBuf)>,
    schema: &SchemaRef,
    path: &Path,
) -> Result<(), DataError> {
    let Some((want, first_path)) = first else {
        *first = Some((schema.clone(), path.to_path_buf()));
        return Ok(());
    };
    check_columns(want, schema).map_err(|(column, message)| DataError::Schema {
        column,
        message: format!(
            "{message} in {} (the first file, {}, has {})",
            path.display(),
            first_path.display(),
            describe(want)
        ),
    })
}

/// The first column where `got` differs from `want`, and how.
pub(crate) fn check_columns(want: &Schema, got: &Schema) -> Result<(), (String, String)> {
    for f in want.fields() {
        match got.field_with_name(f.name()) {
            Err(_) => return Err((f.name().clone(), "is missing".into())),
            Ok(g) if g.data_type() != f.data_type() => {
                return Err((
                    f.name().clone(),
                    format!("is {}, not {}", g.data_type(), f.data_type()),
                ));
            }
            Ok(_) => {}
        }
    }
    if let Some(extra) = got
        .fields()
        .iter()
        .find(|g| want.field_with_name(g.name()).is_err())
    {
        return Err((extra.name().clone(), "is not expected".into()));
    }
    Ok(())
}

/// `x: Int64, name: Utf8`
pub(crate) fn describe(schema: &Schema) -> String {
    let cols: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    cols.join(", ")
}
