//! The lazy dataset and its streaming executor.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use bytes::Bytes;
use ferray::{ActorHandle, Component, ObjectRef, Runtime};
use ferray_core::Arg;
use futures::stream::{self, BoxStream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::DataError;
use crate::block::{decode_batch, encode_batch, result_list_u8};
use crate::shuffle::{self, Aggregate, Shuffle};
use crate::sink::{Format, Writer};
use crate::source::{Source, check_columns, describe};

/// How a dataset runs.
#[derive(Debug, Clone)]
pub struct DataContext {
    /// The most rows in a block read from a source.
    pub block_rows: usize,
    /// The most blocks each operator works on at once.
    pub max_blocks_in_flight: usize,
    /// The most bytes of blocks read and not yet consumed at once (the
    /// source waits past it): keep it within the object store's memory and
    /// nothing spills.
    pub memory_budget: u64,
    /// The parts of a shuffle (`groupby().aggregate()`, `sort`,
    /// `random_shuffle`: its output blocks; a sort's are at most its input
    /// blocks). `None`: this machine's cores.
    pub shuffle_partitions: Option<usize>,
}

impl Default for DataContext {
    fn default() -> Self {
        DataContext {
            block_rows: 65_536,
            max_blocks_in_flight: 8,
            memory_budget: 512 << 20,
            shuffle_partitions: None,
        }
    }
}

/// A `map_batches` operator: a component function, or a method of a
/// component's resource on a pool of actors.
#[derive(Clone)]
pub struct MapBatches {
    component: Component,
    call: Call,
    batch_size: Option<usize>,
    num_cpus: f64,
    num_gpus: f64,
    concurrency: Option<usize>,
}

#[derive(Clone)]
enum Call {
    Task {
        function: String,
    },
    Actors {
        class: String,
        method: String,
        args: Vec<u8>,
        min: usize,
        max: usize,
    },
}

impl std::fmt::Debug for MapBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl MapBatches {
    /// `function` (`func(batch: list<u8>) -> list<u8>`, or `-> result<list<u8>,
    /// string>`) called once per batch, as a task.
    pub fn tasks(component: &Component, function: &str) -> Self {
        MapBatches {
            component: component.clone(),
            call: Call::Task {
                function: function.to_string(),
            },
            batch_size: None,
            num_cpus: 1.0,
            num_gpus: 0.0,
            concurrency: None,
        }
    }

    /// `method` of the resource `class` called once per batch, on a pool of
    /// `min` to `max` actors (`concurrency = (min, max)`): each actor is
    /// made once, by the constructor with no arguments unless
    /// [`MapBatches::constructor_args`] gives them, and keeps its state.
    pub fn actors(
        component: &Component,
        class: &str,
        method: &str,
        min: usize,
        max: usize,
    ) -> Self {
        MapBatches {
            call: Call::Actors {
                class: class.to_string(),
                method: method.to_string(),
                args: Vec::new(),
                min,
                max,
            },
            ..MapBatches::tasks(component, "")
        }
    }

    /// The constructor's arguments, in WAVE text (checked against its WIT
    /// parameters).
    pub fn constructor_args(mut self, wave: &[String]) -> Result<Self, DataError> {
        let Call::Actors { class, args, .. } = &mut self.call else {
            return Err(DataError::InvalidArgument(
                "constructor arguments are for an actor pool".into(),
            ));
        };
        let info = self.component.info().class(class)?;
        *args = info.constructor.encode_wave_args(wave)?;
        Ok(self)
    }

    /// Batches of this many rows (the last may have fewer).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = Some(rows.max(1));
        self
    }

    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = n;
        self
    }

    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = n;
        self
    }

    /// A task pool's most tasks at once (default: the context's blocks in
    /// flight).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// `map_batches(scale)`, `map_batches(model.predict)`
    pub fn name(&self) -> String {
        match &self.call {
            Call::Task { function } => format!("map_batches({function})"),
            Call::Actors { class, method, .. } => format!("map_batches({class}.{method})"),
        }
    }

    /// Checks the export's signature; whether it returns a `result`.
    pub(crate) fn check(&self) -> Result<bool, DataError> {
        let info = self.component.info();
        let (what, f) = match &self.call {
            Call::Task { function } => (function.clone(), info.function(function)?.as_ref()),
            Call::Actors {
                class,
                method,
                min,
                max,
                ..
            } => {
                if *min == 0 || min > max {
                    return Err(DataError::InvalidArgument(format!(
                        "{}: concurrency must be (min, max) with 1 <= min <= max, not ({min}, {max})",
                        self.name()
                    )));
                }
                let c = info.class(class)?;
                let f = c.methods.get(method).ok_or_else(|| {
                    let methods: Vec<&str> = c.methods.keys().map(String::as_str).collect();
                    DataError::InvalidArgument(format!(
                        "the resource `{class}` has no method `{method}` (its methods: {})",
                        methods.join(", ")
                    ))
                })?;
                (format!("{class}.{method}"), f)
            }
        };
        let params: Vec<&str> = f.param_type_texts().collect();
        let results: Vec<&str> = f.result_type_texts().collect();
        let ok_result = match results.as_slice() {
            ["list<u8>"] => Some(false),
            ["result<list<u8>, string>"] => Some(true),
            _ => None,
        };
        match (params.as_slice(), ok_result) {
            (["list<u8>"], Some(r)) => Ok(r),
            _ => Err(DataError::InvalidArgument(format!(
                "map_batches needs func(batch: list<u8>) -> list<u8> (or -> result<list<u8>, string>); `{what}` is {}",
                f.func_type()
            ))),
        }
    }
}

/// A dataset grouped by key columns (`Dataset::groupby`).
#[derive(Debug, Clone)]
pub struct GroupBy {
    ds: Dataset,
    keys: Vec<String>,
}

impl GroupBy {
    /// A row per group: the key columns, then each aggregate's column
    /// (`count()`, `sum(x)`, ...). A hash shuffle: each block is
    /// aggregated partially where it is, the partial aggregates are split
    /// by the key's hash, and each part is combined by tasks. Each output
    /// block is sorted by the key; the blocks are not ordered.
    pub fn aggregate(self, aggs: Vec<Aggregate>) -> Dataset {
        let keys = self.keys;
        self.ds
            .then(|n| Node::Shuffle(n, Shuffle::Aggregate { keys, aggs }))
    }

    /// `count()` per group.
    pub fn count(self) -> Dataset {
        self.aggregate(vec![Aggregate::count()])
    }

    pub fn sum(self, column: &str) -> Dataset {
        self.aggregate(vec![Aggregate::sum(column)])
    }

    pub fn mean(self, column: &str) -> Dataset {
        self.aggregate(vec![Aggregate::mean(column)])
    }

    pub fn min(self, column: &str) -> Dataset {
        self.aggregate(vec![Aggregate::min(column)])
    }

    pub fn max(self, column: &str) -> Dataset {
        self.aggregate(vec![Aggregate::max(column)])
    }
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub files: Vec<std::path::PathBuf>,
    pub rows: u64,
}

/// Each operator's progress, for a display: blocks and rows out of it.
#[derive(Debug, Default)]
pub struct Progress {
    ops: Mutex<Vec<Arc<OpProgress>>>,
}

#[derive(Debug)]
pub struct OpProgress {
    pub name: String,
    pub blocks: AtomicU64,
    /// Rows of the blocks out, where `counts_rows` (a source's, a limit's,
    /// a sink's; a component's output is counted where it is read).
    pub rows: AtomicU64,
    pub counts_rows: bool,
}

impl Progress {
    pub fn ops(&self) -> Vec<Arc<OpProgress>> {
        self.ops.lock().clone()
    }

    /// `counts_rows`: whether the operator knows its blocks' rows (a
    /// source, a limit, a sink) or not (a component's output, counted
    /// where it is read).
    fn op(&self, name: String, counts_rows: bool) -> Arc<OpProgress> {
        let op = Arc::new(OpProgress {
            name,
            blocks: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            counts_rows,
        });
        self.ops.lock().push(op.clone());
        op
    }
}

impl OpProgress {
    pub(crate) fn done(&self, rows: Option<u64>) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = rows {
            self.rows.fetch_add(r, Ordering::Relaxed);
        }
    }
}

#[derive(Clone)]
enum Node {
    Read(Source),
    Map(Arc<Node>, MapBatches),
    Limit(Arc<Node>, u64),
    Repartition(Arc<Node>, usize),
    Union(Vec<Arc<Node>>),
    Blocks(Vec<ObjectRef>),
    Shuffle(Arc<Node>, Shuffle),
}

/// A lazy dataset: nothing runs until it is consumed.
#[derive(Clone)]
pub struct Dataset {
    rt: Runtime,
    node: Arc<Node>,
    ctx: DataContext,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset").field("ctx", &self.ctx).finish()
    }
}

/// A block in the executor: its object, its rows where known, and its
/// share of the memory budget (given back when the last holder drops it).
pub(crate) struct Block {
    pub(crate) r: ObjectRef,
    pub(crate) rows: Option<u64>,
    /// Made by this run (not a user's block): freed once used.
    pub(crate) own: bool,
    pub(crate) budget: Option<Arc<OwnedSemaphorePermit>>,
}

pub(crate) type Blocks = BoxStream<'static, Result<Block, DataError>>;

impl Dataset {
    pub fn from_source(rt: &Runtime, source: Source) -> Self {
        Dataset {
            rt: rt.clone(),
            node: Arc::new(Node::Read(source)),
            ctx: DataContext::default(),
            progress: Arc::default(),
        }
    }

    pub fn read_parquet(rt: &Runtime, paths: &[impl AsRef<str>]) -> Self {
        Self::from_source(
            rt,
            Source::Parquet {
                paths: strings(paths),
            },
        )
    }

    pub fn read_csv(rt: &Runtime, paths: &[impl AsRef<str>]) -> Self {
        Self::from_source(
            rt,
            Source::Csv {
                paths: strings(paths),
                has_header: true,
                delimiter: b',',
            },
        )
    }

    pub fn read_json(rt: &Runtime, paths: &[impl AsRef<str>]) -> Self {
        Self::from_source(
            rt,
            Source::Json {
                paths: strings(paths),
            },
        )
    }

    pub fn read_binary_files(rt: &Runtime, paths: &[impl AsRef<str>]) -> Self {
        Self::from_source(
            rt,
            Source::BinaryFiles {
                paths: strings(paths),
            },
        )
    }

    /// Rows `{id: int64}` from 0 to `n - 1`.
    pub fn range(rt: &Runtime, n: u64) -> Self {
        Self::from_source(rt, Source::Range { n })
    }

    /// Rows from JSON values (an object is a row; anything else `{item: v}`).
    pub fn from_items(rt: &Runtime, items: Vec<serde_json::Value>) -> Self {
        Self::from_source(
            rt,
            Source::Items {
                rows: Arc::new(items),
            },
        )
    }

    pub fn with_context(mut self, ctx: DataContext) -> Self {
        self.ctx = ctx;
        self
    }

    /// The operators' progress while the dataset runs.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    pub fn map_batches(self, op: MapBatches) -> Self {
        self.then(|n| Node::Map(n, op))
    }

    /// The first `n` rows.
    pub fn limit(self, n: u64) -> Self {
        self.then(|node| Node::Limit(node, n))
    }

    /// The same rows in `n` blocks of nearly equal size (all-to-all: every
    /// block is read before the first comes out).
    pub fn repartition(self, n: usize) -> Self {
        self.then(|node| Node::Repartition(node, n.max(1)))
    }

    /// Groups of rows by the key columns' values, for
    /// [`GroupBy::aggregate`].
    pub fn groupby(self, keys: &[&str]) -> GroupBy {
        GroupBy {
            ds: self,
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    /// The rows sorted by the key columns (nulls after every value;
    /// before them when `descending`), across blocks: a shuffle by
    /// boundaries sampled from every block. Rows with equal keys keep
    /// their order within a block.
    pub fn sort(self, keys: &[&str], descending: bool) -> Self {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        self.then(|n| Node::Shuffle(n, Shuffle::Sort { keys, descending }))
    }

    /// The rows in a random order (the same for the same `seed` and
    /// blocks).
    pub fn random_shuffle(self, seed: Option<u64>) -> Self {
        self.then(|n| Node::Shuffle(n, Shuffle::Random { seed }))
    }

    /// This dataset's rows, then `other`'s (same columns).
    pub fn union(self, other: Dataset) -> Self {
        let node = Arc::new(Node::Union(vec![self.node.clone(), other.node]));
        Dataset { node, ..self }
    }

    fn then(self, f: impl FnOnce(Arc<Node>) -> Node) -> Self {
        let node = Arc::new(f(self.node.clone()));
        Dataset { node, ..self }
    }

    /// The record batches, one per block, in order.
    pub fn iter_batches(
        &self,
    ) -> Result<BoxStream<'static, Result<RecordBatch, DataError>>, DataError> {
        let blocks = self.blocks()?;
        let rt = self.rt.clone();
        let schema: Arc<Mutex<Option<arrow_schema::SchemaRef>>> = Arc::default();
        Ok(blocks
            .then(move |b| {
                let rt = rt.clone();
                let schema = schema.clone();
                async move {
                    let b = b?;
                    let batch = read_block(&rt, &b).await?;
                    same_columns(&schema, &batch)?;
                    Ok(batch)
                }
            })
            .boxed())
    }

    /// Every batch, in order.
    pub async fn take_all(&self) -> Result<Vec<RecordBatch>, DataError> {
        let mut out = Vec::new();
        let mut s = self.iter_batches()?;
        while let Some(b) = s.next().await {
            out.push(b?);
        }
        Ok(out)
    }

    /// Run the dataset and keep its blocks (Ray's `materialize` and
    /// `get_internal_block_refs`): each block's reference, resolved, in
    /// order. Every block stays in the store while a reference is held.
    pub async fn block_refs(&self) -> Result<Vec<ObjectRef>, DataError> {
        let mut s = self.blocks()?;
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            let b = b?;
            b.r.resolved().await?;
            out.push(b.r);
        }
        Ok(out)
    }

    /// A dataset of blocks already in the store (each a `list<u8>` value
    /// holding an Arrow IPC stream, as [`Dataset::block_refs`] gives).
    pub fn from_blocks(rt: &Runtime, blocks: Vec<ObjectRef>) -> Self {
        Dataset {
            rt: rt.clone(),
            node: Arc::new(Node::Blocks(blocks)),
            ctx: DataContext::default(),
            progress: Arc::default(),
        }
    }

    /// How many rows.
    pub async fn count(&self) -> Result<u64, DataError> {
        let mut s = self.blocks()?;
        let mut n = 0;
        while let Some(b) = s.next().await {
            let b = b?;
            n += match b.rows {
                Some(r) => r,
                None => read_block(&self.rt, &b).await?.num_rows() as u64,
            };
        }
        Ok(n)
    }

    pub async fn write_parquet(&self, dir: impl AsRef<Path>) -> Result<WriteSummary, DataError> {
        self.write(Format::Parquet, dir.as_ref()).await
    }

    pub async fn write_csv(&self, dir: impl AsRef<Path>) -> Result<WriteSummary, DataError> {
        self.write(Format::Csv, dir.as_ref()).await
    }

    pub async fn write_json(&self, dir: impl AsRef<Path>) -> Result<WriteSummary, DataError> {
        self.write(Format::Json, dir.as_ref()).await
    }

    /// One file per non-empty block, `part-00000.parquet` and on, in `dir`
    /// (made if need be).
    pub async fn write(&self, format: Format, dir: &Path) -> Result<WriteSummary, DataError> {
        let mut s = self.iter_batches()?;
        let op = self.progress.op(format!("write_{}", format.ext()), true);
        let mut w = Writer::new(format, dir)?;
        while let Some(batch) = s.next().await {
            let batch = batch?;
            let rows = batch.num_rows() as u64;
            w.write(&batch)?;
            op.done(Some(rows));
        }
        Ok(w.finish())
    }

    /// The blocks out of the last operator, streaming.
    fn blocks(&self) -> Result<Blocks, DataError> {
        let budget = Arc::new(Semaphore::new(budget_units(self.ctx.memory_budget)));
        let exec = Exec {
            rt: self.rt.clone(),
            ctx: self.ctx.clone(),
            budget,
            progress: self.progress.clone(),
        };
        exec.stream(&self.node, None)
    }
}

fn strings(paths: &[impl AsRef<str>]) -> Vec<String> {
    paths.iter().map(|p| p.as_ref().to_string()).collect()
}

/// The budget counts KiB.
fn budget_units(bytes: u64) -> usize {
    usize::try_from((bytes / 1024).clamp(1, u64::from(u32::MAX))).unwrap_or(u32::MAX as usize)
}

/// A block's bytes, decoded; its object is freed afterwards on a cluster.
async fn read_block(rt: &Runtime, b: &Block) -> Result<RecordBatch, DataError> {
    let value = rt.get_encoded(&b.r).await?;
    release(rt, b);
    decode_batch(&value)
}

/// A block of this run is not used again: on a cluster its object goes.
pub(crate) fn release(rt: &Runtime, b: &Block) {
    if b.own {
        rt.free(std::slice::from_ref(&b.r));
    }
}

/// Every block of a dataset has the first's columns.
fn same_columns(
    first: &Mutex<Option<arrow_schema::SchemaRef>>,
    batch: &RecordBatch,
) -> Result<(), DataError> {
    let mut first = first.lock();
    match &*first {
        None => {
            *first = Some(batch.schema());
            Ok(())
        }
        Some(want) => {
            check_columns(want, &batch.schema()).map_err(|(column, message)| DataError::Schema {
                column,
                message: format!(
                    "{message} in a later block (the first block has {})",
                    describe(want)
                ),
            })
        }
    }
}

struct Exec {
    rt: Runtime,
    ctx: DataContext,
    budget: Arc<Semaphore>,
    progress: Arc<Progress>,
}

impl Exec {
    /// The blocks of `node`; `rows` is the block size a source should
    /// read (a first `map_batches`' batch size: no re-batching then).
    fn stream(&self, node: &Arc<Node>, rows: Option<usize>) -> Result<Blocks, DataError> {
        match node.as_ref() {
            Node::Read(source) => Ok(self.read(source, rows.unwrap_or(self.ctx.block_rows), None)),
            Node::Limit(inner, n) => {
                // A limit right after a source stops its reading.
                if let Node::Read(source) = inner.as_ref() {
                    return Ok(self.read(source, rows.unwrap_or(self.ctx.block_rows), Some(*n)));
                }
                let up = self.stream(inner, rows)?;
                Ok(self.limit(up, *n))
            }
            Node::Map(inner, op) => {
                let returns_result = op.check()?;
                let up = match (op.batch_size, inner.as_ref()) {
                    (Some(size), Node::Read(_)) => self.stream(inner, Some(size))?,
                    (Some(size), Node::Limit(source, _))
                        if matches!(source.as_ref(), Node::Read(_)) =>
                    {
                        self.stream(inner, Some(size))?
                    }
                    (Some(size), _) => {
                        let up = self.stream(inner, None)?;
                        self.rebatch(up, size)
                    }
                    (None, _) => self.stream(inner, None)?,
                };
                Ok(self.map(up, op.clone(), returns_result))
            }
            Node::Repartition(inner, n) => {
                let up = self.stream(inner, None)?;
                Ok(self.repartition(up, *n))
            }
            Node::Shuffle(inner, op) => {
                op.check()?;
                let up = self.stream(inner, None)?;
                let progress = self.progress.op(op.name(), false);
                Ok(shuffle::run(
                    self.rt.clone(),
                    self.ctx.clone(),
                    up,
                    op.clone(),
                    progress,
                ))
            }
            Node::Blocks(refs) => {
                let blocks: Vec<Result<Block, DataError>> = refs
                    .iter()
                    .map(|r| {
                        Ok(Block {
                            r: r.clone(),
                            rows: None,
                            own: false,
                            budget: None,
                        })
                    })
                    .collect();
                Ok(stream::iter(blocks).boxed())
            }
            Node::Union(parts) => {
                let streams = parts
                    .iter()
                    .map(|p| self.stream(p, rows))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(stream::iter(streams).flatten().boxed())
            }
        }
    }

    /// A source's blocks: read on a thread of its own, one block ahead,
    /// each put in the store once the memory budget has room for it.
    fn read(&self, source: &Source, block_rows: usize, limit: Option<u64>) -> Blocks {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let src = source.clone();
        let name = match source {
            Source::Parquet { .. } => "read_parquet",
            Source::Csv { .. } => "read_csv",
            Source::Json { .. } => "read_json",
            Source::BinaryFiles { .. } => "read_binary_files",
            Source::Range { .. } => "range",
            Source::Items { .. } => "from_items",
        };
        let op = self.progress.op(name.to_string(), true);
        let started = std::thread::Builder::new()
            .name("ferray-data-read".into())
            .spawn(move || src.read(block_rows, limit, tx));
        if let Err(e) = started {
            return stream::once(async move {
                Err(DataError::InvalidArgument(format!(
                    "cannot start a reader: {e}"
                )))
            })
            .boxed();
        }
        let rt = self.rt.clone();
        let budget = self.budget.clone();
        let units = budget_units(self.ctx.memory_budget);
        stream::unfold(rx, move |mut rx| {
            let rt = rt.clone();
            let budget = budget.clone();
            let op = op.clone();
            async move {
                let (bytes, rows) = match rx.recv().await? {
                    Ok(b) => b,
                    Err(e) => return Some((Err(e), rx)),
                };
                let want = budget_units(bytes.len() as u64).min(units);
                let permit = match budget.acquire_many_owned(want as u32).await {
                    Ok(p) => p,
                    Err(_) => return None,
                };
                let r = rt.put_encoded(bytes);
                op.done(Some(rows));
                Some((
                    Ok(Block {
                        r,
                        rows: Some(rows),
                        own: true,
                        budget: Some(Arc::new(permit)),
                    }),
                    rx,
                ))
            }
        })
        .boxed()
    }

    fn map(&self, up: Blocks, op: MapBatches, returns_result: bool) -> Blocks {
        let name = op.name();
        let progress = self.progress.op(name.clone(), false);
        let rt = self.rt.clone();
        match op.call.clone() {
            Call::Task { function } => {
                let in_flight = op.concurrency.unwrap_or(self.ctx.max_blocks_in_flight);
                up.map(move |b| {
                    let (rt, op, function, name, progress) = (
                        rt.clone(),
                        op.clone(),
                        function.clone(),
                        name.clone(),
                        progress.clone(),
                    );
                    async move {
                        let b = b?;
                        let task = op
                            .component
                            .task(&function)
                            .arg_ref(&b.r)
                            .num_cpus(op.num_cpus)?
                            .num_gpus(op.num_gpus)?;
                        let r = task.submit()?;
                        let out = finish(&rt, &name, r, returns_result).await?;
                        release(&rt, &b);
                        progress.done(None);
                        Ok(Block {
                            r: out,
                            rows: None,
                            own: true,
                            budget: b.budget,
                        })
                    }
                })
                .buffered(in_flight.max(1))
                .boxed()
            }
            Call::Actors {
                class,
                method,
                args,
                min,
                max,
            } => {
                let pool = Arc::new(Pool {
                    component: op.component.clone(),
                    class,
                    args,
                    min,
                    max,
                    num_cpus: op.num_cpus,
                    num_gpus: op.num_gpus,
                    actors: Mutex::new(Vec::new()),
                    grow: tokio::sync::Mutex::new(()),
                });
                // Each actor has up to two calls queued: one running, one
                // waiting, so it never idles between batches.
                let in_flight = max * 2;
                up.map(move |b| {
                    let (rt, pool, method, name, progress) = (
                        rt.clone(),
                        pool.clone(),
                        method.clone(),
                        name.clone(),
                        progress.clone(),
                    );
                    async move {
                        let b = b?;
                        let (i, actor) = pool.pick().await?;
                        let r = actor.call_with(&method, vec![Arg::Ref(b.r.clone())]);
                        let out = match r {
                            Ok(r) => finish(&rt, &name, r, returns_result).await,
                            Err(e) => Err(e.into()),
                        };
                        pool.release(i);
                        let out = out?;
                        release(&rt, &b);
                        progress.done(None);
                        Ok(Block {
                            r: out,
                            rows: None,
                            own: true,
                            budget: b.budget,
                        })
                    }
                })
                .buffered(in_flight.max(1))
                .boxed()
            }
        }
    }

    /// Blocks of exactly `rows` rows (the last may have fewer), made on the
    /// driver from the blocks upstream.
    fn rebatch(&self, up: Blocks, rows: usize) -> Blocks {
        let rt = self.rt.clone();
        struct St {
            up: Blocks,
            pending: VecDeque<RecordBatch>,
            have: usize,
            done: bool,
        }
        let st = St {
            up,
            pending: VecDeque::new(),
            have: 0,
            done: false,
        };
        stream::unfold(st, move |mut st| {
            let rt = rt.clone();
            async move {
                loop {
                    if st.have >= rows || (st.done && st.have > 0) {
                        let batch = match take_rows(&mut st.pending, rows.min(st.have)) {
                            Ok(b) => b,
                            Err(e) => return Some((Err(e), st)),
                        };
                        st.have -= batch.num_rows();
                        return Some((put_batch(&rt, &batch), st));
                    }
                    if st.done {
                        return None;
                    }
                    match st.up.next().await {
                        None => st.done = true,
                        Some(Err(e)) => return Some((Err(e), st)),
                        Some(Ok(b)) => match read_block(&rt, &b).await {
                            Ok(batch) => {
                                st.have += batch.num_rows();
                                st.pending.push_back(batch);
                            }
                            Err(e) => return Some((Err(e), st)),
                        },
                    }
                }
            }
        })
        .boxed()
    }

    fn limit(&self, up: Blocks, n: u64) -> Blocks {
        let rt = self.rt.clone();
        let op = self.progress.op(format!("limit({n})"), true);
        stream::unfold((up, n), move |(mut up, left)| {
            let rt = rt.clone();
            let op = op.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let b = match up.next().await? {
                    Ok(b) => b,
                    Err(e) => return Some((Err(e), (up, 0))),
                };
                let rows = match b.rows {
                    Some(r) => r,
                    None => match read_rows(&rt, &b).await {
                        Ok(r) => r,
                        Err(e) => return Some((Err(e), (up, 0))),
                    },
                };
                if rows <= left {
                    op.done(Some(rows));
                    return Some((
                        Ok(Block {
                            rows: Some(rows),
                            ..b
                        }),
                        (up, left - rows),
                    ));
                }
                let cut = async {
                    let batch = read_block(&rt, &b).await?;
                    put_batch(&rt, &batch.slice(0, left as usize))
                };
                let out = cut.await;
                op.done(Some(left));
                Some((out, (up, 0)))
            }
        })
        .boxed()
    }

    fn repartition(&self, up: Blocks, n: usize) -> Blocks {
        let rt = self.rt.clone();
        let op = self.progress.op(format!("repartition({n})"), true);
        stream::once(async move {
            let mut batches = Vec::new();
            let mut up = up;
            while let Some(b) = up.next().await {
                batches.push(read_block(&rt, &b?).await?);
            }
            let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let mut pending: VecDeque<RecordBatch> = batches.into();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let rows = total / n + usize::from(i < total % n);
                let batch = match pending.front() {
                    Some(_) => take_rows(&mut pending, rows)?,
                    None => RecordBatch::new_empty(
                        out.first()
                            .map(|b: &RecordBatch| b.schema())
                            .unwrap_or_else(|| Arc::new(arrow_schema::Schema::empty())),
                    ),
                };
                out.push(batch);
            }
            let blocks = out
                .iter()
                .map(|b| {
                    op.done(Some(b.num_rows() as u64));
                    put_batch(&rt, b)
                })
                .collect::<Vec<_>>();
            Ok::<_, DataError>(stream::iter(blocks))
        })
        .map(|r| match r {
            Ok(s) => s.boxed(),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }
}

/// The first `rows` rows of `pending`, taken off it.
fn take_rows(pending: &mut VecDeque<RecordBatch>, rows: usize) -> Result<RecordBatch, DataError> {
    let mut parts = Vec::new();
    let mut need = rows;
    let Some(schema) = pending.front().map(RecordBatch::schema) else {
        return Err(DataError::InvalidArgument("no rows to take".into()));
    };
    while need > 0 {
        let Some(front) = pending.pop_front() else {
            break;
        };
        if front.num_rows() <= need {
            need -= front.num_rows();
            parts.push(front);
        } else {
            parts.push(front.slice(0, need));
            pending.push_front(front.slice(need, front.num_rows() - need));
            need = 0;
        }
    }
    for p in &parts {
        if let Err((column, message)) = check_columns(&schema, &p.schema()) {
            return Err(DataError::Schema {
                column,
                message: format!(
                    "{message} in a later block (the first has {})",
                    describe(&schema)
                ),
            });
        }
    }
    arrow_select::concat::concat_batches(&schema, &parts)
        .map_err(|e| DataError::arrow("cannot join blocks", e))
}

fn put_batch(rt: &Runtime, batch: &RecordBatch) -> Result<Block, DataError> {
    let bytes = encode_batch(batch)?;
    Ok(Block {
        r: rt.put_encoded(bytes),
        rows: Some(batch.num_rows() as u64),
        own: true,
        budget: None,
    })
}

/// A block's rows, from its bytes (its object stays).
async fn read_rows(rt: &Runtime, b: &Block) -> Result<u64, DataError> {
    let value: Bytes = rt.get_encoded(&b.r).await?;
    Ok(decode_batch(&value)?.num_rows() as u64)
}

/// A map task's or call's result as a block: waited for (not fetched, when
/// it is a `list<u8>`); an `err` or a failure is the operator's error.
async fn finish(
    rt: &Runtime,
    name: &str,
    r: ObjectRef,
    returns_result: bool,
) -> Result<ObjectRef, DataError> {
    let op_err = |message: String| DataError::Op {
        op: name.to_string(),
        message,
    };
    if let Err(e) = r.resolved().await {
        return Err(op_err(e.to_string()));
    }
    if !returns_result {
        return Ok(r);
    }
    let value = rt.get_encoded(&r).await?;
    rt.free(std::slice::from_ref(&r));
    match result_list_u8(&value)? {
        Ok(block) => Ok(rt.put_encoded(block)),
        Err(message) => Err(op_err(format!("the guest returned an error: {message}"))),
    }
}

/// An actor pool that grows from `min` to `max` actors: a batch goes to the
/// actor with the fewest calls in flight, and a new actor is made when
/// every actor has one and the pool is not full.
struct Pool {
    component: Component,
    class: String,
    args: Vec<u8>,
    min: usize,
    max: usize,
    num_cpus: f64,
    num_gpus: f64,
    /// Each actor and its calls in flight.
    actors: Mutex<Vec<(ActorHandle, usize)>>,
    /// One actor is made at a time.
    grow: tokio::sync::Mutex<()>,
}

impl Pool {
    async fn pick(&self) -> Result<(usize, ActorHandle), DataError> {
        loop {
            {
                let mut actors = self.actors.lock();
                let least = actors
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (_, n))| *n)
                    .map(|(i, (_, n))| (i, *n));
                let full = actors.len() >= self.max;
                let grow = actors.len() < self.min || (!full && least.is_some_and(|(_, n)| n > 0));
                if let (Some((i, _)), false) = (least, grow) {
                    actors[i].1 += 1;
                    return Ok((i, actors[i].0.clone()));
                }
                if full {
                    // Unreachable with max >= 1: `least` is some.
                    return Err(DataError::InvalidArgument("an empty actor pool".into()));
                }
            }
            let _one = self.grow.lock().await;
            let len = self.actors.lock().len();
            if len >= self.max {
                continue;
            }
            let actor = self
                .component
                .actor_encoded(&self.class, self.args.clone())
                .num_cpus(self.num_cpus)?
                .num_gpus(self.num_gpus)?
                .spawn()
                .await?;
            let mut actors = self.actors.lock();
            actors.push((actor.clone(), 1));
            return Ok((actors.len() - 1, actor));
        }
    }

    fn release(&self, i: usize) {
        if let Some(a) = self.actors.lock().get_mut(i) {
            a.1 = a.1.saturating_sub(1);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (actor, _) in self.actors.lock().drain(..) {
            let _ = actor.kill();
        }
    }
}
