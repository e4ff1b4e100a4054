//! ferray test guest: `map_batches` functions over Arrow blocks, and a model for an actor pool.
//! Built by `ferray-test-fixtures` as `DATA_OPS`.

use std::cell::Cell;
use std::sync::Arc;

use exports::ferray_tests::data_ops::models::{Guest as ModelsGuest, GuestModel};
use ferray_sdk::data::arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt32Array,
};
use ferray_sdk::data::arrow_schema::DataType;
use ferray_sdk::data::{self, column, decode, encode, with_column};

wit_bindgen::generate!({ path: "wit", world: "data-ops" });

struct Component;

fn or_trap(r: Result<Vec<u8>, String>) -> Vec<u8> {
    r.unwrap_or_else(|e| panic!("{e}"))
}

impl Guest for Component {
    fn double(batch: Vec<u8>) -> Vec<u8> {
        or_trap(data::map(&batch, |b| {
            let mut out = b.clone();
            for (i, f) in b.schema().fields().iter().enumerate() {
                let c = b.column(i);
                let doubled: Option<ArrayRef> = match f.data_type() {
                    DataType::Int64 => c.as_any().downcast_ref::<Int64Array>().map(|a| {
                        Arc::new(a.iter().map(|v| v.map(|v| v * 2)).collect::<Int64Array>()) as _
                    }),
                    DataType::Float64 => c.as_any().downcast_ref::<Float64Array>().map(|a| {
                        Arc::new(
                            a.iter()
                                .map(|v| v.map(|v| v * 2.0))
                                .collect::<Float64Array>(),
                        ) as _
                    }),
                    _ => None,
                };
                if let Some(d) = doubled {
                    out = with_column(&out, f.name(), d)?;
                }
            }
            Ok(out)
        }))
    }

    fn plus_one(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        data::map(&batch, |b| {
            let x = column::<Int64Array>(&b, "x")?;
            let y: Int64Array = x.iter().map(|v| v.map(|v| v + 1)).collect();
            with_column(&b, "y", Arc::new(y))
        })
    }

    fn keep_even(batch: Vec<u8>) -> Vec<u8> {
        or_trap(data::map(&batch, |b| {
            let x = column::<Int64Array>(&b, "x")?;
            let keep: Vec<u32> = (0..x.len())
                .filter(|i| x.is_valid(*i) && x.value(*i) % 2 == 0)
                .map(|i| i as u32)
                .collect();
            take(&b, &keep)
        }))
    }

    fn repeat(batch: Vec<u8>) -> Vec<u8> {
        or_trap(data::map(&batch, |b| {
            let n = column::<Int64Array>(&b, "n")?;
            let mut rows = Vec::new();
            for i in 0..n.len() {
                let times = if n.is_valid(i) { n.value(i).max(0) } else { 0 };
                rows.extend(std::iter::repeat_n(i as u32, times as usize));
            }
            take(&b, &rows)
        }))
    }

    fn count_rows(batch: Vec<u8>) -> Vec<u8> {
        let b = decode(&batch).unwrap_or_else(|e| panic!("{e}"));
        let rows = Int64Array::from(vec![b.num_rows() as i64]);
        let out = RecordBatch::try_from_iter([("rows", Arc::new(rows) as ArrayRef)])
            .unwrap_or_else(|e| panic!("{e}"));
        or_trap(encode(&out))
    }

    fn garbage(_batch: Vec<u8>) -> Vec<u8> {
        b"this is not an Arrow IPC stream".to_vec()
    }

    fn square(x: i64) -> i64 {
        x * x
    }
}

/// The rows at `indices`, in that order (by hand: no arrow-select in this guest).
fn take(b: &RecordBatch, indices: &[u32]) -> Result<RecordBatch, String> {
    let idx = UInt32Array::from(indices.to_vec());
    let mut columns = Vec::with_capacity(b.num_columns());
    for c in b.columns() {
        columns.push(take_one(c, &idx)?);
    }
    RecordBatch::try_new(b.schema(), columns).map_err(|e| e.to_string())
}

fn take_one(c: &ArrayRef, idx: &UInt32Array) -> Result<ArrayRef, String> {
    let pick = |i: u32| i as usize;
    Ok(match c.data_type() {
        DataType::Int64 => {
            let a = c.as_any().downcast_ref::<Int64Array>().ok_or("int64")?;
            Arc::new(
                idx.values()
                    .iter()
                    .map(|i| a.is_valid(pick(*i)).then(|| a.value(pick(*i))))
                    .collect::<Int64Array>(),
            )
        }
        DataType::Float64 => {
            let a = c.as_any().downcast_ref::<Float64Array>().ok_or("float64")?;
            Arc::new(
                idx.values()
                    .iter()
                    .map(|i| a.is_valid(pick(*i)).then(|| a.value(pick(*i))))
                    .collect::<Float64Array>(),
            )
        }
        DataType::Boolean => {
            let a = c.as_any().downcast_ref::<BooleanArray>().ok_or("boolean")?;
            Arc::new(
                idx.values()
                    .iter()
                    .map(|i| a.is_valid(pick(*i)).then(|| a.value(pick(*i))))
                    .collect::<BooleanArray>(),
            )
        }
        DataType::Utf8 => {
            let a = c
                .as_any()
                .downcast_ref::<ferray_sdk::data::arrow_array::StringArray>()
                .ok_or("utf8")?;
            Arc::new(
                idx.values()
                    .iter()
                    .map(|i| a.is_valid(pick(*i)).then(|| a.value(pick(*i))))
                    .collect::<ferray_sdk::data::arrow_array::StringArray>(),
            )
        }
        other => return Err(format!("cannot take rows of a {other} column")),
    })
}

struct Model {
    weight: f64,
    seen: Cell<i64>,
}

impl GuestModel for Model {
    fn new(weight: f64) -> Self {
        Model {
            weight,
            seen: Cell::new(0),
        }
    }

    fn predict(&self, batch: Vec<u8>) -> Vec<u8> {
        let seen = self.seen.get();
        self.seen.set(seen + 1);
        or_trap(data::map(&batch, |b| {
            let x = b.column_by_name("x").ok_or("no column `x`")?;
            let xs: Vec<Option<f64>> = match x.data_type() {
                DataType::Int64 => {
                    let a = column::<Int64Array>(&b, "x")?;
                    a.iter().map(|v| v.map(|v| v as f64)).collect()
                }
                _ => column::<Float64Array>(&b, "x")?.iter().collect(),
            };
            let prediction: Float64Array = xs.iter().map(|v| v.map(|v| v * self.weight)).collect();
            let b = with_column(&b, "prediction", Arc::new(prediction))?;
            let seen = Int64Array::from(vec![seen; b.num_rows()]);
            with_column(&b, "seen", Arc::new(seen))
        }))
    }
}

impl ModelsGuest for Component {
    type Model = Model;
}

export!(Component);
