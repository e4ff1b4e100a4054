//! The all-to-all operators, `groupby().aggregate()`, `sort` and
//! `random_shuffle`: a shuffle of tasks of the built-in operators
//! component (`guest/ops`, embedded in this crate).
//!
//! - **Map side**: a `partition` task per block splits it into `P` parts,
//!   one object holding all of them (a *parted* block): by the hash of the
//!   key after a partial aggregation of the block (aggregate), by boundary
//!   rows picked from samples of every block (sort), or at random (shuffle).
//! - **Reduce side**: for each part `p`, `merge` tasks take part `p` of up to
//!   eight map outputs each, in a tree, and the last one finishes the part:
//!   the aggregates, the rows sorted, or permuted. The parts come out in
//!   order, so a sort's output is sorted across blocks.
//!
//! Every step is a task, so it runs on any node and a lost block is rebuilt
//! through lineage. The driver holds only references, and reads only the
//! samples (small). A task has one result, so each of the `P` merges of a
//! level reads whole map outputs and keeps its part: `P` (by default this
//! machine's cores) bounds that extra reading.

use std::sync::Arc;

use arrow_array::RecordBatch;
use ferray::{Component, ObjectRef, Runtime};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::DataError;

type Arg = ferray_core::Arg<ObjectRef>;
use crate::block::{bytes_value, decode_batch, encode_batch};
use crate::dataset::{Block, Blocks, DataContext, OpProgress, release};

/// The built-in operators component.
static OPS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ferray_data_ops.wasm"));

/// Inputs of one merge task.
const FAN_IN: usize = 8;
/// `picks` for an input that is a block, not a parted block.
const WHOLE: u32 = u32::MAX;
/// Sample rows per block, per part: boundaries from about this many rows
/// each.
const SAMPLES_PER_PART: usize = 16;

/// An aggregate function, as in Ray's `ray.data.aggregate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunc {
    Count,
    Sum,
    Mean,
    Min,
    Max,
}

/// One aggregate of `groupby().aggregate()`: its output column is named
/// like Ray's, `count()`, `sum(x)`, `mean(x)`, `min(x)`, `max(x)`. Nulls
/// are left out (a group with no values gets a null); `count()` counts
/// rows, `count(x)` the values of `x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub func: AggFunc,
    pub on: Option<String>,
}

impl Aggregate {
    pub fn count() -> Self {
        Aggregate {
            func: AggFunc::Count,
            on: None,
        }
    }

    pub fn count_of(column: &str) -> Self {
        Self::of(AggFunc::Count, column)
    }

    pub fn sum(column: &str) -> Self {
        Self::of(AggFunc::Sum, column)
    }

    pub fn mean(column: &str) -> Self {
        Self::of(AggFunc::Mean, column)
    }

    pub fn min(column: &str) -> Self {
        Self::of(AggFunc::Min, column)
    }

    pub fn max(column: &str) -> Self {
        Self::of(AggFunc::Max, column)
    }

    fn of(func: AggFunc, column: &str) -> Self {
        Aggregate {
            func,
            on: Some(column.to_string()),
        }
    }

    /// `sum(x)`: the output column's name, and the pipeline file's text.
    pub fn name(&self) -> String {
        let f = match self.func {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Mean => "mean",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
        };
        format!("{f}({})", self.on.as_deref().unwrap_or(""))
    }

    /// `count()`, `sum(x)`, ...: [`Aggregate::name`]'s text back.
    pub fn parse(text: &str) -> Result<Aggregate, DataError> {
        let bad = || {
            DataError::InvalidArgument(format!(
                "`{text}` is not an aggregate: expected count(), count(col), sum(col), mean(col), min(col) or max(col)"
            ))
        };
        let (f, rest) = text.trim().split_once('(').ok_or_else(bad)?;
        let on = rest.strip_suffix(')').ok_or_else(bad)?.trim();
        let func = match f.trim() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "mean" => AggFunc::Mean,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            _ => return Err(bad()),
        };
        match (func, on) {
            (AggFunc::Count, "") => Ok(Aggregate::count()),
            (_, "") => Err(DataError::InvalidArgument(format!(
                "`{text}` needs a column"
            ))),
            (func, on) => Ok(Aggregate::of(func, on)),
        }
    }
}

/// An all-to-all operator.
#[derive(Debug, Clone)]
pub(crate) enum Shuffle {
    Aggregate {
        keys: Vec<String>,
        aggs: Vec<Aggregate>,
    },
    Sort {
        keys: Vec<String>,
        descending: bool,
    },
    Random {
        seed: Option<u64>,
    },
}

impl Shuffle {
    pub(crate) fn name(&self) -> String {
        match self {
            Shuffle::Aggregate { keys, aggs } => {
                let aggs: Vec<String> = aggs.iter().map(Aggregate::name).collect();
                format!(
                    "groupby({}).aggregate({})",
                    keys.join(", "),
                    aggs.join(", ")
                )
            }
            Shuffle::Sort { keys, descending } => {
                let d = if *descending { ", descending" } else { "" };
                format!("sort({}{d})", keys.join(", "))
            }
            Shuffle::Random { .. } => "random_shuffle".into(),
        }
    }

    /// What can be checked before anything runs (the columns are checked
    /// by the tasks, which see the blocks).
    pub(crate) fn check(&self) -> Result<(), DataError> {
        let bad = |m: &str| Err(DataError::InvalidArgument(format!("{}: {m}", self.name())));
        match self {
            Shuffle::Aggregate { keys, aggs } => {
                if keys.is_empty() {
                    return bad("groupby needs a key column");
                }
                if aggs.is_empty() {
                    return bad("aggregate needs an aggregate (count(), sum(x), ...)");
                }
                if let Some(a) = aggs
                    .iter()
                    .find(|a| a.func != AggFunc::Count && a.on.is_none())
                {
                    return bad(&format!("{} needs a column", a.name()));
                }
                Ok(())
            }
            Shuffle::Sort { keys, .. } if keys.is_empty() => bad("sort needs a key column"),
            _ => Ok(()),
        }
    }

    /// The operator's description for the component (see `guest/ops`).
    fn op(&self) -> serde_json::Value {
        match self {
            Shuffle::Aggregate { keys, aggs } => json!({
                "kind": "aggregate",
                "keys": keys,
                "aggs": aggs.iter().map(|a| json!({
                    "func": a.func, "on": a.on, "name": a.name(),
                })).collect::<Vec<_>>(),
            }),
            Shuffle::Sort { keys, descending } => json!({
                "kind": "sort", "keys": keys, "descending": descending,
            }),
            Shuffle::Random { .. } => json!({ "kind": "shuffle" }),
        }
    }
}

/// The operator's output blocks: the map side runs when the stream is
/// first polled (every upstream block is consumed first), then the parts'
/// merges, in order, a bounded number at once.
pub(crate) fn run(
    rt: Runtime,
    ctx: DataContext,
    up: Blocks,
    op: Shuffle,
    progress: Arc<OpProgress>,
) -> Blocks {
    stream::once(async move {
        let s = map_side(rt, ctx, up, op, progress).await?;
        Ok::<_, DataError>(s.reduce_side())
    })
    .map(|r| match r {
        Ok(s) => s,
        Err(e) => stream::once(async move { Err(e) }).boxed(),
    })
    .flatten()
    .boxed()
}

/// The map side's outputs, and what the merges need.
struct Shuffled {
    rt: Runtime,
    ops: Component,
    spec: serde_json::Value,
    name: String,
    parts: usize,
    seed: u64,
    in_flight: usize,
    progress: Arc<OpProgress>,
    outputs: Arc<Outputs>,
}

/// The map outputs, freed once every part is merged (or the stream is
/// dropped).
struct Outputs {
    rt: Runtime,
    refs: Vec<ObjectRef>,
}

impl Drop for Outputs {
    fn drop(&mut self) {
        self.rt.free(&self.refs);
    }
}

/// The parts: the context's, or this machine's cores.
fn default_parts(ctx: &DataContext) -> usize {
    ctx.shuffle_partitions
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 1024)
}

fn op_error(name: &str, e: impl std::fmt::Display) -> DataError {
    DataError::Op {
        op: name.to_string(),
        message: e.to_string(),
    }
}

/// A task of the operators component and its result, waited for.
async fn submit(
    ops: &Component,
    name: &str,
    function: &str,
    args: Vec<Arg>,
) -> Result<ObjectRef, DataError> {
    let task = args.into_iter().fold(ops.task(function), |t, a| match a {
        Arg::Value(v) => t.arg_encoded(v),
        Arg::Ref(r) => t.arg_ref(&r),
    });
    let r = task.submit().map_err(|e| op_error(name, e))?;
    r.resolved().await.map_err(|e| op_error(name, e))?;
    Ok(r)
}

fn spec_arg(spec: serde_json::Value) -> Arg {
    let text = serde_json::to_vec(&spec).unwrap_or_default();
    Arg::Value(bytes_value(&text))
}

fn with(spec: &serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({ "op": spec });
    if let (Some(s), serde_json::Value::Object(extra)) = (s.as_object_mut(), extra) {
        s.extend(extra);
    }
    s
}

async fn map_side(
    rt: Runtime,
    ctx: DataContext,
    up: Blocks,
    op: Shuffle,
    progress: Arc<OpProgress>,
) -> Result<Shuffled, DataError> {
    op.check()?;
    let name = op.name();
    let ops = rt.load_bytes(OPS).await?;
    let in_flight = ctx.max_blocks_in_flight.max(1);
    let spec = op.op();
    let seed = match op {
        Shuffle::Random { seed: Some(s) } => s,
        Shuffle::Random { seed: None } => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id())
        }
        _ => 0,
    };
    let mut parts = default_parts(&ctx);

    // A sort's boundaries come from samples of every block: the blocks are
    // held (out of the memory budget: this is a barrier) until they are
    // partitioned.
    let mut bounds = Vec::from([0u8]);
    let up: Blocks =
        if let Shuffle::Sort { .. } = op {
            let held: Vec<Block> = up
                .map(|b| async move {
                    let b = b?;
                    b.r.resolved().await?;
                    Ok::<_, DataError>(Block { budget: None, ..b })
                })
                .buffered(in_flight)
                .try_collect()
                .await?;
            // No blocks, no parts: nothing to sample, nothing comes out.
            if !held.is_empty() {
                parts = parts.min(held.len());
                let per_block = (SAMPLES_PER_PART * parts).div_ceil(held.len());
                let sample_spec = with(&spec, json!({ "samples": per_block }));
                let refs: Vec<ObjectRef> = held.iter().map(|b| b.r.clone()).collect();
                let samples: Vec<ObjectRef> =
                    stream::iter(refs.into_iter().map(|r| {
                        let (ops, name, spec) = (ops.clone(), name.clone(), sample_spec.clone());
                        async move {
                            submit(&ops, &name, "sample", vec![spec_arg(spec), Arg::Ref(r)]).await
                        }
                    }))
                    .buffered(in_flight)
                    .try_collect()
                    .await?;
                bounds = boundaries(&rt, &ops, &name, &spec, samples, parts).await?;
            }
            stream::iter(held.into_iter().map(Ok)).boxed()
        } else {
            up
        };

    let part_spec = with(&spec, json!({ "parts": parts }));
    let bounds = Arc::new(bounds);
    let refs: Vec<ObjectRef> = up
        .enumerate()
        .map(|(i, b)| {
            let (rt, ops, name) = (rt.clone(), ops.clone(), name.clone());
            let mut spec = part_spec.clone();
            spec["seed"] = json!(mix(seed, i as u64));
            let bounds = bounds.clone();
            async move {
                let b = b?;
                let out = submit(
                    &ops,
                    &name,
                    "partition",
                    vec![
                        spec_arg(spec),
                        Arg::Ref(b.r.clone()),
                        Arg::Value(bounds.to_vec()),
                    ],
                )
                .await?;
                release(&rt, &b);
                Ok::<_, DataError>(out)
            }
        })
        .buffered(in_flight)
        .try_collect()
        .await?;
    Ok(Shuffled {
        outputs: Arc::new(Outputs {
            rt: rt.clone(),
            refs,
        }),
        rt,
        ops,
        spec,
        name,
        parts,
        seed,
        in_flight,
        progress,
    })
}

/// `parts - 1` boundary rows from the samples (sorted by a merge tree of
/// the component's, read here: a few rows per part), as a block value.
async fn boundaries(
    rt: &Runtime,
    ops: &Component,
    name: &str,
    spec: &serde_json::Value,
    samples: Vec<ObjectRef>,
    parts: usize,
) -> Result<Vec<u8>, DataError> {
    let inputs = samples.into_iter().map(|r| (r, WHOLE)).collect();
    let sorted = merge_tree(rt, ops, name, spec, inputs, 0, false).await?;
    let value = rt.get_encoded(&sorted).await?;
    rt.free(std::slice::from_ref(&sorted));
    let all = decode_batch(&value)?;
    let n = all.num_rows();
    let picks: Vec<RecordBatch> = (1..parts)
        .filter(|_| n > 0)
        .map(|i| all.slice((i * n / parts).min(n - 1), 1))
        .collect();
    let bounds = match picks.is_empty() {
        true => all.slice(0, 0),
        false => arrow_select::concat::concat_batches(&all.schema(), &picks)
            .map_err(|e| DataError::arrow("cannot join the sort's boundaries", e))?,
    };
    Ok(encode_batch(&bounds)?.to_vec())
}

/// Merges `inputs` (a reference and the part to take of it) in a tree of
/// up to [`FAN_IN`] inputs per task; the last finishes the part. Levels
/// after the first are freed once merged (the first's may be other parts'
/// inputs too).
async fn merge_tree(
    rt: &Runtime,
    ops: &Component,
    name: &str,
    spec: &serde_json::Value,
    mut inputs: Vec<(ObjectRef, u32)>,
    seed: u64,
    first_is_shared: bool,
) -> Result<ObjectRef, DataError> {
    let mut shared = first_is_shared;
    loop {
        let last = inputs.len() <= FAN_IN;
        let merges: Vec<_> = inputs
            .chunks(FAN_IN)
            .map(|group| {
                let picks: Vec<u32> = group.iter().map(|(_, p)| *p).collect();
                let spec = with(spec, json!({ "picks": picks, "last": last, "seed": seed }));
                let mut args = vec![spec_arg(spec)];
                args.extend(group.iter().map(|(r, _)| Arg::Ref(r.clone())));
                args.resize_with(FAN_IN + 1, || Arg::Value(vec![0]));
                let (ops, name) = (ops.clone(), name.to_string());
                async move { submit(&ops, &name, "merge", args).await }
            })
            .collect();
        let outs = futures::future::try_join_all(merges).await?;
        if !shared {
            let refs: Vec<ObjectRef> = inputs.iter().map(|(r, _)| r.clone()).collect();
            rt.free(&refs);
        }
        shared = false;
        if last {
            return outs
                .into_iter()
                .next()
                .ok_or_else(|| op_error(name, "nothing to merge"));
        }
        inputs = outs.into_iter().map(|r| (r, WHOLE)).collect();
    }
}

impl Shuffled {
    fn reduce_side(self) -> Blocks {
        if self.outputs.refs.is_empty() {
            return stream::empty().boxed();
        }
        let this = Arc::new(self);
        let in_flight = this.in_flight;
        stream::iter(0..this.parts)
            .map(move |p| {
                let this = this.clone();
                async move {
                    let inputs = this
                        .outputs
                        .refs
                        .iter()
                        .map(|r| (r.clone(), p as u32))
                        .collect();
                    let seed = mix(this.seed, (1 << 40) + p as u64);
                    let r = merge_tree(
                        &this.rt, &this.ops, &this.name, &this.spec, inputs, seed, true,
                    )
                    .await?;
                    this.progress.done(None);
                    Ok(Block {
                        r,
                        rows: None,
                        own: true,
                        budget: None,
                    })
                }
            })
            .buffered(in_flight)
            .boxed()
    }
}

/// A seed for task `i` from the operator's.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 31)
}
