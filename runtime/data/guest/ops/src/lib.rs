//! ferray data's built-in operators: the two sides of a shuffle, run as
//! tasks like any component's functions, so they go to any node, count
//! against its resources, and are rebuilt through lineage when a block is
//! lost.
//!
//! - `partition` (map side): a block split into parts, by the hash of its
//!   key columns after a partial aggregation (`groupby().aggregate()`), by
//!   boundary rows (`sort`), or at random (`random_shuffle`);
//! - `sample`: evenly spaced key rows of a block, from which the driver
//!   picks `sort`'s boundaries;
//! - `merge` (reduce side): one part of up to eight inputs joined (partial
//!   aggregates combined); the last merge of a part finishes it: the
//!   aggregates, the rows sorted by the key, or permuted.
//!
//! Keys are compared and hashed in arrow-row's encoding, which orders rows
//! like their values and is the same on every node: a key's part does not
//! depend on the block or the node it was in.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow_row::{RowConverter, Rows, SortField};
use arrow_select::take::{take, take_record_batch};
use ferray_sdk::data::arrow_array::cast::AsArray;
use ferray_sdk::data::arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use ferray_sdk::data::arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, UInt32Array,
};
use ferray_sdk::data::arrow_schema::{DataType, Field, Schema, SortOptions};
use ferray_sdk::data::{column_ref, decode, encode};
use serde::Deserialize;

wit_bindgen::generate!({ path: "wit", world: "data-ops" });

struct Component;
export!(Component);

/// `picks` for an input that is a block, not a parted block.
const WHOLE: u32 = u32::MAX;
const MAGIC: &[u8; 4] = b"FDP1";

#[derive(Deserialize)]
struct Spec {
    op: Op,
    /// `partition`: how many parts.
    #[serde(default)]
    parts: u32,
    /// `merge`: the part to take from each input, in order (`WHOLE` for a
    /// block).
    #[serde(default)]
    picks: Vec<u32>,
    /// `merge`: the last merge of a part, which finishes it.
    #[serde(default)]
    last: bool,
    /// `random_shuffle`: this task's seed.
    #[serde(default)]
    seed: u64,
    /// `sample`: how many rows.
    #[serde(default)]
    samples: usize,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Op {
    Aggregate {
        keys: Vec<String>,
        aggs: Vec<Agg>,
    },
    Sort {
        keys: Vec<String>,
        #[serde(default)]
        descending: bool,
    },
    Shuffle,
}

#[derive(Deserialize)]
struct Agg {
    func: Func,
    /// The column; none for `count()`, which counts rows.
    on: Option<String>,
    /// The output column's name (`sum(x)`).
    name: String,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Func {
    Count,
    Sum,
    Mean,
    Min,
    Max,
}

/// A bad input traps with its message (the task fails with it).
fn or_trap(r: Result<Vec<u8>, String>) -> Vec<u8> {
    r.unwrap_or_else(|e| panic!("{e}"))
}

impl Guest for Component {
    fn partition(spec: Vec<u8>, block: Vec<u8>, aux: Vec<u8>) -> Vec<u8> {
        or_trap(partition(spec, block, aux))
    }

    fn sample(spec: Vec<u8>, block: Vec<u8>) -> Vec<u8> {
        or_trap(sample(spec, block))
    }

    #[allow(clippy::too_many_arguments)]
    fn merge(
        spec: Vec<u8>,
        a: Vec<u8>,
        b: Vec<u8>,
        c: Vec<u8>,
        d: Vec<u8>,
        e: Vec<u8>,
        f: Vec<u8>,
        g: Vec<u8>,
        h: Vec<u8>,
    ) -> Vec<u8> {
        or_trap(merge(spec, [a, b, c, d, e, f, g, h]))
    }
}

fn partition(spec: Vec<u8>, block: Vec<u8>, aux: Vec<u8>) -> Result<Vec<u8>, String> {
    let spec = parse(&spec)?;
    let batch = decode(&block)?;
    let parts = spec.parts.max(1);
    match &spec.op {
        Op::Aggregate { keys, aggs } => {
            let partial = aggregate(&batch, keys, aggs, false)?;
            let (_, rows) = key_rows(&partial, keys, false)?;
            let assign: Vec<u32> = (0..rows.num_rows())
                .map(|i| (fnv(rows.row(i).as_ref()) % u64::from(parts)) as u32)
                .collect();
            split(&partial, &assign, parts)
        }
        Op::Sort { keys, descending } => {
            let bounds = decode(&aux)?;
            let (conv, rows) = key_rows(&batch, keys, *descending)?;
            let bound_cols =
                key_columns(&bounds, keys).map_err(|e| format!("the sort's boundaries: {e}"))?;
            let bound_rows = conv
                .convert_columns(&bound_cols)
                .map_err(|e| format!("the sort's boundaries: {e}"))?;
            let bounds: Vec<_> = bound_rows.iter().collect();
            let assign: Vec<u32> = rows
                .iter()
                .map(|r| bounds.partition_point(|b| *b <= r) as u32)
                .collect();
            split(&batch, &assign, parts.max(bounds.len() as u32 + 1))
        }
        Op::Shuffle => {
            let mut rng = SplitMix(spec.seed);
            let assign: Vec<u32> = (0..batch.num_rows())
                .map(|_| (rng.next() % u64::from(parts)) as u32)
                .collect();
            split(&batch, &assign, parts)
        }
    }
}

fn sample(spec: Vec<u8>, block: Vec<u8>) -> Result<Vec<u8>, String> {
    let spec = parse(&spec)?;
    let Op::Sort { keys, .. } = &spec.op else {
        return Err("sample is for a sort".into());
    };
    let batch = decode(&block)?;
    let cols = key_columns(&batch, keys)?;
    let fields: Vec<Field> = keys
        .iter()
        .zip(&cols)
        .map(|(k, c)| Field::new(k, c.data_type().clone(), true))
        .collect();
    let keys_only =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| e.to_string())?;
    let n = batch.num_rows();
    let k = spec.samples.min(n);
    let idx: UInt32Array = (0..k).map(|i| ((i * n + n / 2) / k) as u32).collect();
    encode(&take_record_batch(&keys_only, &idx).map_err(|e| e.to_string())?)
}

fn merge(spec: Vec<u8>, inputs: [Vec<u8>; 8]) -> Result<Vec<u8>, String> {
    let spec = parse(&spec)?;
    let mut batches = Vec::new();
    for (slot, input) in inputs.iter().enumerate() {
        if input.is_empty() {
            continue;
        }
        let pick = spec.picks.get(slot).copied().unwrap_or(WHOLE);
        let bytes = if pick == WHOLE {
            &input[..]
        } else {
            part(input, pick)?
        };
        batches.push(decode(bytes)?);
    }
    let batch = join(&batches)?;
    let out = match &spec.op {
        Op::Aggregate { keys, aggs } => {
            let combined = aggregate(&batch, keys, aggs, true)?;
            if spec.last {
                finish(&combined, keys, aggs)?
            } else {
                combined
            }
        }
        Op::Sort { keys, descending } if spec.last => sort(&batch, keys, *descending)?,
        Op::Shuffle if spec.last => {
            let mut rng = SplitMix(spec.seed);
            let mut idx: Vec<u32> = (0..batch.num_rows() as u32).collect();
            for i in (1..idx.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                idx.swap(i, j);
            }
            take_record_batch(&batch, &UInt32Array::from(idx)).map_err(|e| e.to_string())?
        }
        _ => batch,
    };
    encode(&out)
}

fn parse(spec: &[u8]) -> Result<Spec, String> {
    serde_json::from_slice(spec).map_err(|e| format!("a bad operator spec: {e}"))
}

/// The batches as one, every column nullable (blocks from different files
/// may differ only there); a column whose type differs is named.
fn join(batches: &[RecordBatch]) -> Result<RecordBatch, String> {
    let Some(first) = batches.first() else {
        return Err("nothing to merge".into());
    };
    let schema = first.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let mut columns = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        let mut parts: Vec<&dyn Array> = Vec::with_capacity(batches.len());
        for b in batches {
            let c = b
                .column_by_name(field.name())
                .ok_or_else(|| format!("column `{}` is missing in a block", field.name()))?;
            if c.data_type() != field.data_type() {
                return Err(format!(
                    "column `{}` is {} in one block and {} in another",
                    field.name(),
                    field.data_type(),
                    c.data_type()
                ));
            }
            parts.push(c.as_ref());
        }
        columns.push(if parts.len() == 1 {
            batches[0].column(i).clone()
        } else {
            arrow_select::concat::concat(&parts).map_err(|e| e.to_string())?
        });
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// `batch`'s rows in `parts` parts (`assign[i]`: row `i`'s part), as a
/// parted block.
fn split(batch: &RecordBatch, assign: &[u32], parts: u32) -> Result<Vec<u8>, String> {
    let mut idx: Vec<Vec<u32>> = vec![Vec::new(); parts as usize];
    for (row, p) in assign.iter().enumerate() {
        idx[*p as usize].push(row as u32);
    }
    let encoded = idx
        .into_iter()
        .map(|rows| {
            let part =
                take_record_batch(batch, &UInt32Array::from(rows)).map_err(|e| e.to_string())?;
            encode(&part)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = encoded.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(8 + 8 * encoded.len() + total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&parts.to_le_bytes());
    for e in &encoded {
        out.extend_from_slice(&(e.len() as u64).to_le_bytes());
    }
    for e in encoded {
        out.extend_from_slice(&e);
    }
    Ok(out)
}

/// Part `i` of a parted block.
fn part(blob: &[u8], i: u32) -> Result<&[u8], String> {
    let bad = || "not a parted block".to_string();
    if !blob.starts_with(MAGIC) {
        return Err(bad());
    }
    let word = |at: usize, len: usize| blob.get(at..at + len).ok_or_else(bad);
    let n = u32::from_le_bytes(word(4, 4)?.try_into().map_err(|_| bad())?);
    if i >= n {
        return Err(format!("part {i} of a block of {n} parts"));
    }
    let mut start = 8 + 8 * n as usize;
    for j in 0..n as usize {
        let len = u64::from_le_bytes(word(8 + 8 * j, 8)?.try_into().map_err(|_| bad())?);
        let len = usize::try_from(len).map_err(|_| bad())?;
        if j == i as usize {
            return blob
                .get(start..start.checked_add(len).ok_or_else(bad)?)
                .ok_or_else(bad);
        }
        start = start.checked_add(len).ok_or_else(bad)?;
    }
    Err(bad())
}

fn key_columns(batch: &RecordBatch, keys: &[String]) -> Result<Vec<ArrayRef>, String> {
    if keys.is_empty() {
        return Err("no key columns".into());
    }
    keys.iter().map(|k| column_ref(batch, k).cloned()).collect()
}

/// The key columns of each row in arrow-row's encoding: ordered like the
/// values (nulls after every value, before them when `descending`).
fn key_rows(
    batch: &RecordBatch,
    keys: &[String],
    descending: bool,
) -> Result<(RowConverter, Rows), String> {
    let cols = key_columns(batch, keys)?;
    let opts = SortOptions {
        descending,
        nulls_first: descending,
    };
    let conv = RowConverter::new(
        cols.iter()
            .map(|c| SortField::new_with_options(c.data_type().clone(), opts))
            .collect(),
    )
    .map_err(|e| format!("cannot use {keys:?} as a key: {e}"))?;
    let rows = conv
        .convert_columns(&cols)
        .map_err(|e| format!("cannot use {keys:?} as a key: {e}"))?;
    Ok((conv, rows))
}

fn sort(batch: &RecordBatch, keys: &[String], descending: bool) -> Result<RecordBatch, String> {
    let (_, rows) = key_rows(batch, keys, descending)?;
    let mut idx: Vec<u32> = (0..rows.num_rows() as u32).collect();
    // Stable: rows with equal keys keep their order.
    idx.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    take_record_batch(batch, &UInt32Array::from(idx)).map_err(|e| e.to_string())
}

/// Each row's group, and the first row of each group.
fn groups(batch: &RecordBatch, keys: &[String]) -> Result<(Vec<u32>, Vec<u32>), String> {
    let (_, rows) = key_rows(batch, keys, false)?;
    let mut seen: HashMap<&[u8], u32, BuildHasherDefault<Fnv>> = HashMap::default();
    let mut firsts = Vec::new();
    let mut of_row = Vec::with_capacity(rows.num_rows());
    for (i, r) in rows.iter().enumerate() {
        let next = firsts.len() as u32;
        let g = *seen.entry(r.data()).or_insert(next);
        if g == next {
            firsts.push(i as u32);
        }
        of_row.push(g);
    }
    Ok((of_row, firsts))
}

/// Partial aggregates by key: the key columns, then per aggregate `j` its
/// state (`__c{j}` a count; `__s{j}` a sum; `__n{j}` a count of values;
/// `__m{j}` a min or max). From raw rows, or (`combine`) from partial
/// aggregates, which it combines.
fn aggregate(
    batch: &RecordBatch,
    keys: &[String],
    aggs: &[Agg],
    combine: bool,
) -> Result<RecordBatch, String> {
    let (of_row, firsts) = groups(batch, keys)?;
    let n = firsts.len();
    let firsts = UInt32Array::from(firsts);
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for k in keys {
        let c = batch
            .column_by_name(k)
            .ok_or_else(|| format!("no column `{k}`"))?;
        fields.push(Field::new(k, c.data_type().clone(), true));
        columns.push(take(c.as_ref(), &firsts, None).map_err(|e| e.to_string())?);
    }
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("no column `{name}`"))
    };
    let mut push = |name: String, c: ArrayRef| {
        fields.push(Field::new(name, c.data_type().clone(), true));
        columns.push(c);
    };
    for (j, a) in aggs.iter().enumerate() {
        let on = || {
            a.on.as_deref()
                .ok_or_else(|| format!("{} needs a column", a.name))
        };
        match (a.func, combine) {
            (Func::Count, false) => {
                let counts = match &a.on {
                    None => count_rows(&of_row, n),
                    Some(c) => count_values(col(c)?, &of_row, n),
                };
                push(format!("__c{j}"), counts);
            }
            (Func::Count, true) => {
                let c = format!("__c{j}");
                push(c.clone(), fold(col(&c)?, &c, &of_row, n, Fold::Sum, false)?);
            }
            (Func::Mean, false) => {
                let c = on()?;
                push(
                    format!("__s{j}"),
                    fold(col(c)?, c, &of_row, n, Fold::Sum, true)?,
                );
                push(format!("__n{j}"), count_values(col(c)?, &of_row, n));
            }
            (Func::Mean, true) => {
                let (s, c) = (format!("__s{j}"), format!("__n{j}"));
                push(s.clone(), fold(col(&s)?, &s, &of_row, n, Fold::Sum, true)?);
                push(c.clone(), fold(col(&c)?, &c, &of_row, n, Fold::Sum, false)?);
            }
            (f, combine) => {
                let (state, how) = match f {
                    Func::Sum => (format!("__s{j}"), Fold::Sum),
                    Func::Min => (format!("__m{j}"), Fold::Min),
                    _ => (format!("__m{j}"), Fold::Max),
                };
                let c = if combine { state.as_str() } else { on()? };
                push(state.clone(), fold(col(c)?, c, &of_row, n, how, false)?);
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// The final columns from combined partial aggregates, sorted by the key.
fn finish(partial: &RecordBatch, keys: &[String], aggs: &[Agg]) -> Result<RecordBatch, String> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let col = |name: &str| {
        partial
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("no column `{name}`"))
    };
    for k in keys {
        let c = col(k)?;
        fields.push(Field::new(k, c.data_type().clone(), true));
        columns.push(c);
    }
    for (j, a) in aggs.iter().enumerate() {
        let c = match a.func {
            Func::Count => col(&format!("__c{j}"))?,
            Func::Sum => col(&format!("__s{j}"))?,
            Func::Min | Func::Max => col(&format!("__m{j}"))?,
            Func::Mean => {
                let s = col(&format!("__s{j}"))?;
                let n = col(&format!("__n{j}"))?;
                let s = s.as_primitive::<Float64Type>();
                let n = n.as_primitive::<Int64Type>();
                let mean: Float64Array = s
                    .iter()
                    .zip(n.iter())
                    .map(|(s, n)| match (s, n) {
                        (Some(s), Some(n)) if n > 0 => Some(s / n as f64),
                        _ => None,
                    })
                    .collect();
                Arc::new(mean)
            }
        };
        fields.push(Field::new(&a.name, c.data_type().clone(), true));
        columns.push(c);
    }
    let out =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())?;
    sort(&out, keys, false)
}

fn count_rows(of_row: &[u32], n: usize) -> ArrayRef {
    let mut counts = vec![0i64; n];
    for g in of_row {
        counts[*g as usize] += 1;
    }
    Arc::new(Int64Array::from(counts))
}

/// Non-null values per group.
fn count_values(c: &ArrayRef, of_row: &[u32], n: usize) -> ArrayRef {
    let mut counts = vec![0i64; n];
    for (i, g) in of_row.iter().enumerate() {
        if c.is_valid(i) {
            counts[*g as usize] += 1;
        }
    }
    Arc::new(Int64Array::from(counts))
}

#[derive(Clone, Copy)]
enum Fold {
    Sum,
    Min,
    Max,
}

/// A column's numbers: integers as i64, floats as f64.
enum Numbers {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
}

fn numbers(c: &ArrayRef, name: &str) -> Result<Numbers, String> {
    macro_rules! ints {
        ($t:ty) => {
            Numbers::Int(
                c.as_primitive::<$t>()
                    .iter()
                    .map(|v| v.map(i64::from))
                    .collect(),
            )
        };
    }
    Ok(match c.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => Numbers::Int(
            c.as_primitive::<UInt64Type>()
                .iter()
                .map(|v| v.map(i64::try_from).transpose())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("column `{name}` has a uint64 past int64's range"))?,
        ),
        DataType::Float32 => Numbers::Float(
            c.as_primitive::<Float32Type>()
                .iter()
                .map(|v| v.map(f64::from))
                .collect(),
        ),
        DataType::Float64 => Numbers::Float(c.as_primitive::<Float64Type>().iter().collect()),
        DataType::Null => Numbers::Int(vec![None; c.len()]),
        other => {
            return Err(format!(
                "column `{name}` is {other}: sum, mean, min and max need numbers"
            ));
        }
    })
}

/// Per group, the sum, min or max of the non-null values (null where a
/// group has none); integers stay int64 unless `float`.
fn fold(
    c: &ArrayRef,
    name: &str,
    of_row: &[u32],
    n: usize,
    how: Fold,
    float: bool,
) -> Result<ArrayRef, String> {
    fn go<T: Copy + PartialOrd>(
        values: Vec<Option<T>>,
        of_row: &[u32],
        n: usize,
        how: Fold,
        add: impl Fn(T, T) -> Option<T>,
    ) -> Option<Vec<Option<T>>> {
        let mut acc: Vec<Option<T>> = vec![None; n];
        for (v, g) in values.into_iter().zip(of_row) {
            let Some(v) = v else { continue };
            let slot = &mut acc[*g as usize];
            *slot = Some(match (*slot, how) {
                (None, _) => v,
                (Some(a), Fold::Sum) => add(a, v)?,
                (Some(a), Fold::Min) => {
                    if v < a {
                        v
                    } else {
                        a
                    }
                }
                (Some(a), Fold::Max) => {
                    if v > a {
                        v
                    } else {
                        a
                    }
                }
            });
        }
        Some(acc)
    }
    let floats = |v: Vec<Option<f64>>| -> ArrayRef {
        let out = go(v, of_row, n, how, |a, b| Some(a + b)).unwrap_or_default();
        Arc::new(Float64Array::from(out))
    };
    Ok(match numbers(c, name)? {
        Numbers::Int(v) if float => floats(v.into_iter().map(|x| x.map(|x| x as f64)).collect()),
        Numbers::Int(v) => {
            let out = go(v, of_row, n, how, i64::checked_add)
                .ok_or_else(|| format!("the sum of `{name}` overflows int64"))?;
            Arc::new(Int64Array::from(out))
        }
        Numbers::Float(v) => floats(v),
    })
}

/// FNV-1a: a key's part must be the same on every node and in every run,
/// so no randomly seeded hasher.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(bytes);
    // Mixed, so that keys differing only in their last bytes spread.
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// SplitMix64: a small, good generator; seeded by the driver.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
