//! ferray data's blocks in a guest (feature `data`): a `map_batches`
//! function gets a block as `list<u8>`, an Arrow IPC stream holding one
//! record batch, and returns one the same way.
//!
//! ```ignore
//! // wit: export double: func(batch: list<u8>) -> result<list<u8>, string>;
//! fn double(batch: Vec<u8>) -> Result<Vec<u8>, String> {
//!     ferray_sdk::data::map(&batch, |b| {
//!         let x = ferray_sdk::data::column::<Float64Array>(&b, "x")?;
//!         let doubled: Float64Array = x.iter().map(|v| v.map(|v| v * 2.0)).collect();
//!         ferray_sdk::data::with_column(&b, "x", Arc::new(doubled))
//!     })
//! }
//! ```

use std::sync::Arc;

pub use arrow_array;
pub use arrow_schema;

use arrow_array::{Array, ArrayRef, RecordBatch, make_array};
use arrow_data::ArrayData;
use arrow_data::transform::MutableArrayData;
use arrow_schema::{Field, Schema};

/// The record batch in a block (several batches in the stream are joined;
/// none is an empty batch of the stream's schema).
pub fn decode(block: &[u8]) -> Result<RecordBatch, String> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(block), None)
        .map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
    let schema = reader.schema();
    let mut batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(schema)),
        1 => Ok(batches
            .pop()
            .unwrap_or_else(|| RecordBatch::new_empty(schema))),
        _ => {
            // Joined column by column (no arrow-select in a guest).
            let mut columns = Vec::with_capacity(schema.fields().len());
            for i in 0..schema.fields().len() {
                let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
                columns.push(concat(&parts)?);
            }
            RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
        }
    }
}

fn concat(parts: &[&dyn Array]) -> Result<ArrayRef, String> {
    let datas: Vec<ArrayData> = parts.iter().map(|a| a.to_data()).collect();
    let total = datas.iter().map(ArrayData::len).sum();
    let mut m = MutableArrayData::new(datas.iter().collect(), false, total);
    for (i, d) in datas.iter().enumerate() {
        m.try_extend(i, 0, d.len()).map_err(|e| e.to_string())?;
    }
    Ok(make_array(m.freeze()))
}

/// The rows of `batch` at `rows`, in that order (a filter when `rows`
/// ascend); an error for a row past the end.
pub fn take(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch, String> {
    let n = batch.num_rows();
    if let Some(r) = rows.iter().find(|r| **r as usize >= n) {
        return Err(format!("row {r} of a batch of {n} rows"));
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    for c in batch.columns() {
        let data = c.to_data();
        let mut m = MutableArrayData::new(vec![&data], false, rows.len());
        // Runs of consecutive rows are copied at once.
        let mut i = 0;
        while i < rows.len() {
            let start = rows[i] as usize;
            let mut end = start + 1;
            while i + 1 < rows.len() && rows[i + 1] as usize == end {
                end += 1;
                i += 1;
            }
            m.try_extend(0, start, end).map_err(|e| e.to_string())?;
            i += 1;
        }
        columns.push(make_array(m.freeze()));
    }
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| e.to_string())
}

/// A record batch as a block.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, batch.schema_ref())
        .map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

/// Decode `block`, apply `f`, encode what it returns: the body of a
/// `map_batches` function.
pub fn map(
    block: &[u8],
    f: impl FnOnce(RecordBatch) -> Result<RecordBatch, String>,
) -> Result<Vec<u8>, String> {
    encode(&f(decode(block)?)?)
}

/// The column `name`, or an error naming it and the batch's columns.
pub fn column_ref<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("no column `{name}` (the columns: {})", names(batch)))
}

/// The column `name` as an array of type `A`, or an error naming the column
/// and the type it has.
pub fn column<'a, A: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a A, String> {
    let c = column_ref(batch, name)?;
    c.as_any().downcast_ref::<A>().ok_or_else(|| {
        format!(
            "column `{name}` is {}, not {}",
            c.data_type(),
            std::any::type_name::<A>()
                .rsplit("::")
                .next()
                .unwrap_or("the type asked for")
        )
    })
}

/// `batch` with the column `name` set to `values` (replaced where it is,
/// added at the end otherwise).
pub fn with_column(
    batch: &RecordBatch,
    name: &str,
    values: ArrayRef,
) -> Result<RecordBatch, String> {
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let field = Arc::new(Field::new(name, values.data_type().clone(), true));
    match schema.index_of(name) {
        Ok(i) => {
            fields[i] = field;
            columns[i] = values;
        }
        Err(_) => {
            fields.push(field);
            columns.push(values);
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

fn names(batch: &RecordBatch) -> String {
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    names.join(", ")
}
