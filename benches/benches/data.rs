//! ferray data against Ray Data (issue 15, item 7), on data this benchmark
//! makes itself: `FERRAY_DATA_BENCH_ROWS` rows (default 10,000,000) in 20
//! Parquet files (row groups of 131,072 rows; snappy) with the columns
//! `id` and `key` (int64, `key` = id % 1,000), `x` and `y` (float64) and
//! `name` (a string of about 12 bytes).
//!
//! - **map**: read → `map_batches` (the `data-ops` test guest's `double`,
//!   every numeric column times two, on a task pool) → write Parquet, in
//!   rows/s, on the embedded runtime with every CPU of the machine, and the
//!   process's peak memory (the kernel's VmHWM) next to the memory budget.
//! - Ray Data (`benches/ray/data_bench.py`, run when `FERRAY_DATA_BENCH_RAY`
//!   names a Python with Ray 2.60 and pyarrow): the same read → map_batches
//!   (the same arithmetic, on pyarrow batches) → write, and a groupby of
//!   `key` with count, sum, mean, min and max of `x`. ferray has no groupby
//!   yet; its line says so.
//!
//! A measurement, not a test: `cargo bench -p ferray-benches --bench data`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use ferray::Runtime;
use ferray_data::{Aggregate, DataContext, Dataset, MapBatches};

const FILES: u64 = 20;

fn main() {
    let rows: u64 = std::env::var("FERRAY_DATA_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    let input = dir.path().join("input");
    let started = Instant::now();
    let bytes = generate(&input, rows);
    println!(
        "data_bench_input {rows} rows {:.0} MB in {FILES} files, made in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let exec = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("an async runtime");
    let budget: u64 = 1 << 30;
    exec.block_on(async {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rt = Runtime::builder()
            .num_cpus(cpus as f64)
            .object_store_memory(2 << 30)
            .build()
            .await
            .expect("runtime");
        let ops = rt
            .load_file(ferray_test_fixtures::DATA_OPS)
            .await
            .expect("load data-ops");
        // Compile once before timing (a cached component on a node).
        let warm = Dataset::range(&rt, 10)
            .map_batches(MapBatches::tasks(&ops, "double"))
            .count()
            .await
            .expect("warm-up");
        assert_eq!(warm, 10);
        // Where the time goes: the read alone, then read → map.
        let ctx = DataContext {
            memory_budget: budget,
            ..DataContext::default()
        };
        let t = Instant::now();
        let n = Dataset::read_parquet(&rt, &[input.display().to_string()])
            .with_context(ctx.clone())
            .count()
            .await
            .expect("read");
        assert_eq!(n, rows);
        let secs = t.elapsed().as_secs_f64();
        println!("ferray_read {:.0} rows_per_second ({secs:.2} s)", rows as f64 / secs);
        let t = Instant::now();
        let mut blocks = 0;
        for r in Dataset::read_parquet(&rt, &[input.display().to_string()])
            .with_context(ctx.clone())
            .map_batches(MapBatches::tasks(&ops, "double"))
            .block_refs()
            .await
            .expect("read and map")
        {
            blocks += 1;
            drop(r);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "ferray_read_map {:.0} rows_per_second ({secs:.2} s, {blocks} blocks)",
            rows as f64 / secs
        );
        reset_peak();
        let out = dir.path().join("ferray-out");
        let t = Instant::now();
        let ds = Dataset::read_parquet(&rt, &[input.display().to_string()])
            .with_context(DataContext {
                memory_budget: budget,
                ..DataContext::default()
            })
            .map_batches(MapBatches::tasks(&ops, "double"));
        let w = ds.write_parquet(&out).await.expect("ferray's pipeline");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(w.rows, rows);
        println!(
            "ferray_read_map_write {:.0} rows_per_second ({secs:.2} s, {} files, peak {} MiB, budget {} MiB)",
            rows as f64 / secs,
            w.files.len(),
            peak_kib() / 1024,
            budget >> 20
        );
        check_output(&rt, &out, rows).await;

        // groupby(key) → count, sum, mean, min, max of x: 1,000 groups.
        let t = Instant::now();
        let groups = Dataset::read_parquet(&rt, &[input.display().to_string()])
            .with_context(DataContext {
                memory_budget: budget,
                ..DataContext::default()
            })
            .groupby(&["key"])
            .aggregate(vec![
                Aggregate::count(),
                Aggregate::sum("x"),
                Aggregate::mean("x"),
                Aggregate::min("x"),
                Aggregate::max("x"),
            ])
            .take_all()
            .await
            .expect("ferray's groupby");
        let secs = t.elapsed().as_secs_f64();
        let n: usize = groups.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(n as u64, rows.min(1000), "a row per key");
        println!("ferray_groupby_aggregate {secs:.2} seconds ({n} groups)");
    });
    if let Ok(python) = std::env::var("FERRAY_DATA_BENCH_RAY") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ray/data_bench.py");
        let status = Command::new(python)
            .arg(script)
            .arg(&input)
            .arg(dir.path().join("ray-out"))
            .arg(rows.to_string())
            .status()
            .expect("run Ray's side");
        assert!(status.success(), "Ray's side failed");
    }
}

/// The input files; their bytes.
fn generate(dir: &Path, rows: u64) -> u64 {
    std::fs::create_dir_all(dir).expect("mkdir");
    let per = rows.div_ceil(FILES);
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(131_072))
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut bytes = 0;
    for f in 0..FILES {
        let (from, to) = (f * per, ((f + 1) * per).min(rows));
        if from >= to {
            break;
        }
        let path: PathBuf = dir.join(format!("part-{f:03}.parquet"));
        let file = std::fs::File::create(&path).expect("create");
        let mut w: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
        let mut start = from;
        while start < to {
            let end = (start + 131_072).min(to);
            let ids = start as i64..end as i64;
            let batch = RecordBatch::try_from_iter([
                (
                    "id",
                    Arc::new(ids.clone().collect::<Int64Array>()) as ArrayRef,
                ),
                (
                    "key",
                    Arc::new(ids.clone().map(|i| i % 1000).collect::<Int64Array>()) as _,
                ),
                (
                    "x",
                    Arc::new(
                        ids.clone()
                            .map(|i| (i % 9973) as f64 * 0.5)
                            .collect::<Float64Array>(),
                    ) as _,
                ),
                (
                    "y",
                    Arc::new(
                        ids.clone()
                            .map(|i| (i % 101) as f64 - 50.0)
                            .collect::<Float64Array>(),
                    ) as _,
                ),
                (
                    "name",
                    Arc::new(
                        ids.map(|i| Some(format!("row-{i:08}")))
                            .collect::<StringArray>(),
                    ) as _,
                ),
            ])
            .expect("a batch");
            let w = w.get_or_insert_with(|| {
                parquet::arrow::ArrowWriter::try_new(
                    file.try_clone().expect("file"),
                    batch.schema(),
                    Some(props.clone()),
                )
                .expect("writer")
            });
            w.write(&batch).expect("write");
            start = end;
        }
        if let Some(w) = w {
            w.close().expect("close");
        }
        bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
    }
    bytes
}

/// The output has every row, with `x` doubled.
async fn check_output(rt: &Runtime, out: &Path, rows: u64) {
    let back = Dataset::read_parquet(rt, &[out.display().to_string()]);
    let n = back.count().await.expect("read the output");
    assert_eq!(n, rows);
    let first = Dataset::read_parquet(rt, &[out.display().to_string()])
        .limit(3)
        .take_all()
        .await
        .expect("first rows");
    let x = first[0]
        .column_by_name("x")
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
        .expect("x");
    assert_eq!(x.value(1), 1.0, "x of id 1 is 0.5, doubled");
}

fn reset_peak() {
    // Writing 5 to clear_refs resets the peak resident size (VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
