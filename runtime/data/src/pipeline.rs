//! A pipeline file (`ferray data run PIPELINE.toml`): a source, operators,
//! and a sink, with Ray Data's names.
//!
//! ```toml
//! [read]
//! format = "csv"              # parquet | csv | json | binary_files | range | items
//! paths = ["sales/*.csv"]     # files, directories, glob patterns; relative to this file
//!
//! [execution]                 # optional
//! block_rows = 65536
//! max_blocks_in_flight = 8
//! memory_budget = "512MiB"
//! shuffle_partitions = 4      # a shuffle's parts; default: this machine's cores
//!
//! [[ops]]
//! kind = "map_batches"
//! component = "etl.wasm"
//! function = "clean"          # a task pool; or class = "model", method = "predict"
//! batch_size = 4096
//! concurrency = 4             # a task pool's tasks at once; an actor pool's [min, max]
//!
//! [[ops]]
//! kind = "groupby"
//! keys = ["region"]
//! aggs = ["count()", "sum(amount)", "mean(amount)", "min(amount)", "max(amount)"]
//!
//! [[ops]]
//! kind = "sort"               # or kind = "random_shuffle", seed = 7
//! keys = ["region"]
//! descending = false
//!
//! [[ops]]
//! kind = "limit"
//! n = 100
//!
//! [write]                     # optional: without it the rows are printed
//! format = "parquet"          # parquet | csv | json
//! path = "out"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferray::Runtime;
use serde::Deserialize;

use crate::DataError;
use crate::dataset::{DataContext, Dataset, MapBatches};
use crate::shuffle::Aggregate;
use crate::sink::Format;
use crate::source::Source;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    read: ReadSpec,
    #[serde(default)]
    execution: ExecSpec,
    #[serde(default)]
    ops: Vec<OpSpec>,
    write: Option<WriteSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadSpec {
    format: ReadFormat,
    #[serde(default)]
    paths: Vec<String>,
    has_header: Option<bool>,
    delimiter: Option<String>,
    n: Option<u64>,
    items: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum ReadFormat {
    Parquet,
    Csv,
    Json,
    BinaryFiles,
    Range,
    Items,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExecSpec {
    block_rows: Option<usize>,
    max_blocks_in_flight: Option<usize>,
    memory_budget: Option<String>,
    shuffle_partitions: Option<usize>,
}

/// An operator: `kind` says which, and which of the other fields it takes
/// (one flat table, so that an error names the field, not only the
/// operator).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpSpec {
    kind: OpKind,
    component: Option<String>,
    function: Option<String>,
    class: Option<String>,
    method: Option<String>,
    args: Option<Vec<String>>,
    batch_size: Option<usize>,
    num_cpus: Option<f64>,
    num_gpus: Option<f64>,
    concurrency: Option<Concurrency>,
    n: Option<u64>,
    num_blocks: Option<usize>,
    keys: Option<Vec<String>>,
    aggs: Option<Vec<String>>,
    descending: Option<bool>,
    seed: Option<u64>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum OpKind {
    MapBatches,
    Limit,
    Repartition,
    Groupby,
    Sort,
    RandomShuffle,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Concurrency {
    Fixed(usize),
    Range(usize, usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteSpec {
    format: WriteFormat,
    path: String,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum WriteFormat {
    Parquet,
    Csv,
    Json,
}

/// A checked pipeline file: paths are resolved against its folder.
#[derive(Debug, Clone)]
pub struct Pipeline {
    file: String,
    source: Source,
    ctx: DataContext,
    ops: Vec<Op>,
    write: Option<(Format, PathBuf)>,
}

#[derive(Debug, Clone)]
enum Op {
    Map {
        field: String,
        component: PathBuf,
        call: MapCall,
        batch_size: Option<usize>,
        num_cpus: f64,
        num_gpus: f64,
    },
    Limit(u64),
    Repartition(usize),
    Groupby(Vec<String>, Vec<Aggregate>),
    Sort(Vec<String>, bool),
    RandomShuffle(Option<u64>),
}

#[derive(Debug, Clone)]
enum MapCall {
    Task {
        function: String,
        concurrency: Option<usize>,
    },
    Actors {
        class: String,
        method: String,
        args: Vec<String>,
        min: usize,
        max: usize,
    },
}

type Bad = (String, String);

impl Pipeline {
    /// Read and check a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, DataError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Pipeline {
            file: file.clone(),
            field: "-".into(),
            message: format!("cannot read it: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Pipeline::parse(&file, &text, base)
    }

    /// Check `text`, a pipeline file named `file`, with paths relative to
    /// `base`.
    pub fn parse(file: &str, text: &str, base: &Path) -> Result<Pipeline, DataError> {
        let err = |field: String, message: String| DataError::Pipeline {
            file: file.to_string(),
            field,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| err("-".into(), one_line(e.message(), e.span(), text)))?;
        let raw: PipelineFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => "-".to_string(),
                p => p,
            };
            let inner = e.inner();
            err(field, one_line(inner.message(), inner.span(), text))
        })?;
        check(file, raw, base).map_err(|(field, message)| err(field, message))
    }

    /// The dataset this pipeline reads and transforms, on `rt` (its
    /// components loaded and their signatures checked).
    pub async fn dataset(&self, rt: &Runtime) -> Result<Dataset, DataError> {
        let mut ds = Dataset::from_source(rt, self.source.clone()).with_context(self.ctx.clone());
        for op in &self.ops {
            ds = match op {
                Op::Limit(n) => ds.limit(*n),
                Op::Repartition(n) => ds.repartition(*n),
                Op::Groupby(keys, aggs) => ds.groupby(&strs(keys)).aggregate(aggs.clone()),
                Op::Sort(keys, descending) => ds.sort(&strs(keys), *descending),
                Op::RandomShuffle(seed) => ds.random_shuffle(*seed),
                Op::Map {
                    field,
                    component,
                    call,
                    batch_size,
                    num_cpus,
                    num_gpus,
                } => {
                    let bad = |e: &dyn std::fmt::Display| DataError::Pipeline {
                        file: self.file.clone(),
                        field: field.clone(),
                        message: e.to_string(),
                    };
                    let c = rt.load_file(component).await.map_err(|e| bad(&e))?;
                    let mut op = match call {
                        MapCall::Task {
                            function,
                            concurrency,
                        } => {
                            let op = MapBatches::tasks(&c, function);
                            match concurrency {
                                Some(n) => op.concurrency(*n),
                                None => op,
                            }
                        }
                        MapCall::Actors {
                            class,
                            method,
                            args,
                            min,
                            max,
                        } => MapBatches::actors(&c, class, method, *min, *max)
                            .constructor_args(args)
                            .map_err(|e| bad(&e))?,
                    };
                    if let Some(b) = batch_size {
                        op = op.batch_size(*b);
                    }
                    let op = op.num_cpus(*num_cpus).num_gpus(*num_gpus);
                    op.check().map_err(|e| bad(&e))?;
                    ds.map_batches(op)
                }
            };
        }
        Ok(ds)
    }

    /// Where the pipeline writes, if it does.
    pub fn output(&self) -> Option<&Path> {
        self.write.as_ref().map(|(_, p)| p.as_path())
    }

    /// Run the pipeline and write its output; the write's summary.
    pub async fn write(&self, ds: &Dataset) -> Result<Option<crate::WriteSummary>, DataError> {
        match &self.write {
            Some((format, dir)) => Ok(Some(ds.write(*format, dir).await?)),
            None => Ok(None),
        }
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn check(file: &str, raw: PipelineFile, base: &Path) -> Result<Pipeline, Bad> {
    let resolve = |p: &str| -> String {
        let path = Path::new(p);
        if path.is_absolute() {
            p.to_string()
        } else {
            base.join(path).display().to_string()
        }
    };
    let r = raw.read;
    let fmt = r.format;
    let needs = |field: &str, what: &str| {
        (
            format!("read.{field}"),
            format!("format = {fmt:?} needs {what}").to_lowercase(),
        )
    };
    let only = |field: &str, set: bool, allowed: bool| -> Result<(), Bad> {
        if set && !allowed {
            return Err((
                format!("read.{field}"),
                format!("is not an option of format = \"{}\"", snake(fmt)),
            ));
        }
        Ok(())
    };
    let files = matches!(
        fmt,
        ReadFormat::Parquet | ReadFormat::Csv | ReadFormat::Json | ReadFormat::BinaryFiles
    );
    only("paths", !r.paths.is_empty(), files)?;
    only("has_header", r.has_header.is_some(), fmt == ReadFormat::Csv)?;
    only("delimiter", r.delimiter.is_some(), fmt == ReadFormat::Csv)?;
    only("n", r.n.is_some(), fmt == ReadFormat::Range)?;
    only("items", r.items.is_some(), fmt == ReadFormat::Items)?;
    if files && r.paths.is_empty() {
        return Err(needs(
            "paths",
            "a list of files, directories or glob patterns",
        ));
    }
    let paths: Vec<String> = r.paths.iter().map(|p| resolve(p)).collect();
    let source = match fmt {
        ReadFormat::Parquet => Source::Parquet { paths },
        ReadFormat::Csv => {
            let delimiter = match r.delimiter.as_deref() {
                None => b',',
                Some(d) if d.len() == 1 => d.as_bytes()[0],
                Some(d) => {
                    return Err((
                        "read.delimiter".into(),
                        format!("expected one ASCII character, got {d:?}"),
                    ));
                }
            };
            Source::Csv {
                paths,
                has_header: r.has_header.unwrap_or(true),
                delimiter,
            }
        }
        ReadFormat::Json => Source::Json { paths },
        ReadFormat::BinaryFiles => Source::BinaryFiles { paths },
        ReadFormat::Range => Source::Range {
            n: r.n.ok_or_else(|| needs("n", "n, the number of rows"))?,
        },
        ReadFormat::Items => Source::Items {
            rows: Arc::new(
                r.items
                    .ok_or_else(|| needs("items", "items, a list of rows"))?,
            ),
        },
    };

    let mut ctx = DataContext::default();
    let e = raw.execution;
    if let Some(n) = e.block_rows {
        if n == 0 {
            return Err(("execution.block_rows".into(), "expected at least 1".into()));
        }
        ctx.block_rows = n;
    }
    if let Some(n) = e.max_blocks_in_flight {
        if n == 0 {
            return Err((
                "execution.max_blocks_in_flight".into(),
                "expected at least 1".into(),
            ));
        }
        ctx.max_blocks_in_flight = n;
    }
    if let Some(s) = e.memory_budget {
        ctx.memory_budget = ferray::parse_size(&s)
            .map_err(|e| ("execution.memory_budget".to_string(), e.to_string()))?;
    }
    if let Some(n) = e.shuffle_partitions {
        if n == 0 {
            return Err((
                "execution.shuffle_partitions".into(),
                "expected at least 1".into(),
            ));
        }
        ctx.shuffle_partitions = Some(n);
    }

    let mut ops = Vec::new();
    for (i, op) in raw.ops.into_iter().enumerate() {
        let at = |f: &str| format!("ops[{i}].{f}");
        let kind = match op.kind {
            OpKind::MapBatches => "map_batches",
            OpKind::Limit => "limit",
            OpKind::Repartition => "repartition",
            OpKind::Groupby => "groupby",
            OpKind::Sort => "sort",
            OpKind::RandomShuffle => "random_shuffle",
        };
        let map = op.kind == OpKind::MapBatches;
        let given = [
            ("component", op.component.is_some(), map),
            ("function", op.function.is_some(), map),
            ("class", op.class.is_some(), map),
            ("method", op.method.is_some(), map),
            ("args", op.args.is_some(), map),
            ("batch_size", op.batch_size.is_some(), map),
            ("num_cpus", op.num_cpus.is_some(), map),
            ("num_gpus", op.num_gpus.is_some(), map),
            ("concurrency", op.concurrency.is_some(), map),
            ("n", op.n.is_some(), op.kind == OpKind::Limit),
            (
                "num_blocks",
                op.num_blocks.is_some(),
                op.kind == OpKind::Repartition,
            ),
            (
                "keys",
                op.keys.is_some(),
                matches!(op.kind, OpKind::Groupby | OpKind::Sort),
            ),
            ("aggs", op.aggs.is_some(), op.kind == OpKind::Groupby),
            (
                "descending",
                op.descending.is_some(),
                op.kind == OpKind::Sort,
            ),
            ("seed", op.seed.is_some(), op.kind == OpKind::RandomShuffle),
        ];
        if let Some((f, ..)) = given.iter().find(|(_, set, ok)| *set && !ok) {
            return Err((at(f), format!("is not an option of kind = \"{kind}\"")));
        }
        ops.push(match op.kind {
            OpKind::Limit => Op::Limit(
                op.n.ok_or_else(|| (at("n"), "a limit needs n, the rows to keep".to_string()))?,
            ),
            OpKind::Repartition => match op.num_blocks {
                None => return Err((at("num_blocks"), "a repartition needs num_blocks".into())),
                Some(0) => return Err((at("num_blocks"), "expected at least 1".into())),
                Some(n) => Op::Repartition(n),
            },
            OpKind::Groupby | OpKind::Sort => {
                let keys = match op.keys {
                    Some(k) if !k.is_empty() => k,
                    _ => {
                        return Err((
                            at("keys"),
                            format!("{kind} needs keys, a list of columns"),
                        ));
                    }
                };
                if op.kind == OpKind::Sort {
                    Op::Sort(keys, op.descending.unwrap_or(false))
                } else {
                    let texts = op.aggs.unwrap_or_default();
                    if texts.is_empty() {
                        return Err((
                            at("aggs"),
                            "groupby needs aggs, e.g. [\"count()\", \"sum(x)\"]".into(),
                        ));
                    }
                    let aggs = texts
                        .iter()
                        .enumerate()
                        .map(|(j, t)| {
                            Aggregate::parse(t).map_err(|e| (at(&format!("aggs[{j}]")), e.to_string()))
                        })
                        .collect::<Result<Vec<_>, Bad>>()?;
                    Op::Groupby(keys, aggs)
                }
            }
            OpKind::RandomShuffle => Op::RandomShuffle(op.seed),
            OpKind::MapBatches => {
                let m = op;
                let Some(component) = m.component.clone() else {
                    return Err((at("component"), "map_batches needs a component (.wasm)".into()));
                };
                let task_pool = m.function.is_some();
                if m.args.is_some() && task_pool {
                    return Err((
                        at("args"),
                        "constructor arguments are for an actor pool (class and method)".into(),
                    ));
                }
                let call = match (m.function, m.class, m.method) {
                    (Some(function), None, None) => MapCall::Task {
                        function,
                        concurrency: match m.concurrency {
                            None => None,
                            Some(Concurrency::Fixed(0)) => {
                                return Err((at("concurrency"), "expected at least 1".into()));
                            }
                            Some(Concurrency::Fixed(n)) => Some(n),
                            Some(Concurrency::Range(..)) => {
                                return Err((
                                    at("concurrency"),
                                    "a task pool takes one number; [min, max] is for an actor pool (class and method)".into(),
                                ));
                            }
                        },
                    },
                    (None, Some(class), Some(method)) => {
                        let (min, max) = match m.concurrency {
                            None => (1, 1),
                            Some(Concurrency::Fixed(n)) => (n, n),
                            Some(Concurrency::Range(a, b)) => (a, b),
                        };
                        if min == 0 || min > max {
                            return Err((
                                at("concurrency"),
                                format!("expected [min, max] with 1 <= min <= max, got [{min}, {max}]"),
                            ));
                        }
                        MapCall::Actors {
                            class,
                            method,
                            args: m.args.unwrap_or_default(),
                            min,
                            max,
                        }
                    }
                    (None, Some(_), None) => {
                        return Err((at("method"), "an actor pool's class needs a method".into()));
                    }
                    (None, None, Some(_)) => {
                        return Err((at("class"), "a method needs its class (the exported resource)".into()));
                    }
                    (None, None, None) => {
                        return Err((
                            at("function"),
                            "expected a function (a task pool) or a class and a method (an actor pool)".into(),
                        ));
                    }
                    (Some(_), ..) => {
                        return Err((
                            at("function"),
                            "give a function or a class and a method, not both".into(),
                        ));
                    }
                };
                if let Some(0) = m.batch_size {
                    return Err((at("batch_size"), "expected at least 1".into()));
                }
                let cpus = m.num_cpus.unwrap_or(1.0);
                let gpus = m.num_gpus.unwrap_or(0.0);
                for (f, v) in [("num_cpus", cpus), ("num_gpus", gpus)] {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err((at(f), format!("expected a number at least 0, got {v}")));
                    }
                }
                Op::Map {
                    field: at("component"),
                    component: PathBuf::from(resolve(&component)),
                    call,
                    batch_size: m.batch_size,
                    num_cpus: cpus,
                    num_gpus: gpus,
                }
            }
        });
    }
    let write = raw.write.map(|w| {
        let format = match w.format {
            WriteFormat::Parquet => Format::Parquet,
            WriteFormat::Csv => Format::Csv,
            WriteFormat::Json => Format::Json,
        };
        (format, PathBuf::from(resolve(&w.path)))
    });
    Ok(Pipeline {
        file: file.to_string(),
        source,
        ctx,
        ops,
        write,
    })
}

fn snake(f: ReadFormat) -> &'static str {
    match f {
        ReadFormat::Parquet => "parquet",
        ReadFormat::Csv => "csv",
        ReadFormat::Json => "json",
        ReadFormat::BinaryFiles => "binary_files",
        ReadFormat::Range => "range",
        ReadFormat::Items => "items",
    }
}

/// A TOML error's message on one line, with the line it points at.
fn one_line(message: &str, span: Option<std::ops::Range<usize>>, text: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline, DataError> {
        Pipeline::parse("p.toml", text, Path::new("/base"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("a bad file").to_string()
    }

    #[test]
    fn a_good_file_resolves_paths_against_its_folder() {
        let p = parse(
            r#"
            [read]
            format = "csv"
            paths = ["in/*.csv", "/abs/x.csv"]
            [execution]
            memory_budget = "64MiB"
            [[ops]]
            kind = "map_batches"
            component = "etl.wasm"
            function = "clean"
            batch_size = 100
            concurrency = 3
            [[ops]]
            kind = "map_batches"
            component = "m.wasm"
            class = "model"
            method = "predict"
            args = ["0.5"]
            concurrency = [1, 4]
            [[ops]]
            kind = "limit"
            n = 10
            [[ops]]
            kind = "groupby"
            keys = ["k"]
            aggs = ["count()", "sum(x)", " mean( x ) ", "count(x)"]
            [[ops]]
            kind = "sort"
            keys = ["k", "x"]
            descending = true
            [[ops]]
            kind = "random_shuffle"
            seed = 7
            [write]
            format = "parquet"
            path = "out"
            "#,
        )
        .expect("parses");
        match &p.source {
            Source::Csv { paths, .. } => assert_eq!(paths, &["/base/in/*.csv", "/abs/x.csv"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.ctx.memory_budget, 64 << 20);
        assert_eq!(p.ops.len(), 6);
        match &p.ops[3] {
            Op::Groupby(keys, aggs) => {
                assert_eq!(keys, &["k"]);
                let names: Vec<String> = aggs.iter().map(Aggregate::name).collect();
                assert_eq!(names, ["count()", "sum(x)", "mean(x)", "count(x)"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&p.ops[4], Op::Sort(k, true) if k.len() == 2));
        assert!(matches!(&p.ops[5], Op::RandomShuffle(Some(7))));
        assert!(matches!(
            &p.ops[1],
            Op::Map {
                call: MapCall::Actors { min: 1, max: 4, .. },
                ..
            }
        ));
        assert_eq!(p.output(), Some(Path::new("/base/out")));
    }

    #[test]
    fn a_bad_file_gets_one_line_naming_the_field() {
        let cases = [
            ("[read]\nformat = \"xls\"\npaths = [\"a\"]\n", "read.format"),
            ("[read]\nformat = \"csv\"\n", "read.paths"),
            (
                "[read]\nformat = \"range\"\nn = 3\npaths = [\"a\"]\n",
                "read.paths",
            ),
            ("[read]\nformat = \"range\"\nn = -3\n", "read.n"),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"map_batches\"\ncomponent = \"a.wasm\"\n",
                "ops[0].function",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"map_batches\"\ncomponent = \"a.wasm\"\nclass = \"m\"\nmethod = \"p\"\nconcurrency = [3, 1]\n",
                "ops[0].concurrency",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"limit\"\nm = 3\n",
                "ops[0]",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"limit\"\nbatch_size = 3\n",
                "ops[0].batch_size",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"limit\"\n",
                "ops[0].n",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"map_batches\"\ncomponent = \"a.wasm\"\nfunction = \"f\"\nbatch_size = -1\n",
                "ops[0].batch_size",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"sort_by_magic\"\n",
                "ops[0].kind",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[execution]\nmemory_budget = \"lots\"\n",
                "execution.memory_budget",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[write]\nformat = \"parquet\"\n",
                "write",
            ),
            ("[read]\nformat = \"range\"\nn = 3\nbogus = 1\n", "read"),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"groupby\"\naggs = [\"count()\"]\n",
                "ops[0].keys",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"groupby\"\nkeys = [\"k\"]\n",
                "ops[0].aggs",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"groupby\"\nkeys = [\"k\"]\naggs = [\"count()\", \"median(x)\"]\n",
                "ops[0].aggs[1]",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"groupby\"\nkeys = [\"k\"]\naggs = [\"sum()\"]\n",
                "ops[0].aggs[0]",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"sort\"\nkeys = [\"k\"]\nseed = 3\n",
                "ops[0].seed",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"sort\"\nkeys = []\n",
                "ops[0].keys",
            ),
            (
                "[read]\nformat = \"range\"\nn = 3\n[execution]\nshuffle_partitions = 0\n",
                "execution.shuffle_partitions",
            ),
            ("[read\n", "-"),
        ];
        for (text, field) in cases {
            let e = error(text);
            assert!(!e.contains('\n'), "one line: {e}");
            assert!(
                e.starts_with(&format!("p.toml: {field}")),
                "{text:?} should name {field}: {e}"
            );
        }
    }
}
