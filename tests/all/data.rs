//! ferray data: datasets of Arrow blocks read from files, transformed by
//! the test guest `data-ops` (`tests/guests/data-ops`) on task and actor
//! pools, and written back; every result is checked against a direct
//! computation on the same generated data. The scenarios run embedded and
//! on a cluster; the memory budget's test and the command line's run
//! embedded.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use ferray::Runtime;
use ferray_data::{Aggregate, DataContext, DataError, Dataset, MapBatches};

use crate::both::scenarios;
use crate::{ferray_err, ferray_ok, fx};

scenarios![
    map_batches_on_a_task_pool_equals_the_direct_computation,
    csv_and_json_files_with_nulls_and_empty_files,
    an_actor_pool_keeps_state_and_grows_within_its_bounds,
    limit_union_and_repartition_keep_the_rows_and_their_order,
    written_files_read_back_as_the_same_rows,
    bad_input_gets_one_clear_error,
    groupby_aggregate_equals_the_direct_computation,
    sort_and_random_shuffle_keep_every_row,
];

/// `n` rows: `x` int64 (null every 7th), `f` float64 (null every 5th), `s`
/// utf8.
fn rows(n: usize, from: i64) -> RecordBatch {
    let x: Int64Array = (0..n as i64)
        .map(|i| (i % 7 != 3).then_some(from + i))
        .collect();
    let f: Float64Array = (0..n as i64)
        .map(|i| (i % 5 != 1).then_some((from + i) as f64 / 4.0))
        .collect();
    let s: StringArray = (0..n as i64)
        .map(|i| Some(format!("r{}", from + i)))
        .collect();
    RecordBatch::try_from_iter([
        ("x", Arc::new(x) as ArrayRef),
        ("f", Arc::new(f) as ArrayRef),
        ("s", Arc::new(s) as ArrayRef),
    ])
    .expect("batch")
}

/// Writes `batch` as Parquet with row groups of `group` rows.
fn write_parquet(path: &Path, batch: &RecordBatch, group: usize) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let file = std::fs::File::create(path).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("w");
    w.write(batch).expect("write");
    w.close().expect("close");
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    let schema = batches.first().expect("a batch").schema();
    arrow_select::concat::concat_batches(&schema, batches).expect("concat")
}

fn ints(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = c.as_any().downcast_ref::<Int64Array>().expect("int64");
    a.iter().collect()
}

fn floats(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = c.as_any().downcast_ref::<Float64Array>().expect("float64");
    a.iter().collect()
}

fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = c.as_any().downcast_ref::<StringArray>().expect("utf8");
    a.iter().map(|s| s.map(str::to_string)).collect()
}

async fn ops(rt: &Runtime) -> ferray::Component {
    rt.load_file(fx::DATA_OPS).await.expect("load data-ops")
}

async fn map_batches_on_a_task_pool_equals_the_direct_computation(rt: &Runtime) {
    let dir = tempfile::tempdir().expect("dir");
    // Two files: 250 rows in row groups of 64, and 90 rows in one group.
    let (a, b) = (rows(250, 0), rows(90, 250));
    write_parquet(&dir.path().join("a.parquet"), &a, 64);
    write_parquet(&dir.path().join("b.parquet"), &b, 1000);
    let all = concat(&[a, b]);
    let c = ops(rt).await;
    let path = dir.path().display().to_string();

    // One block per row group: 4 + 1.
    let read = Dataset::read_parquet(rt, &[&path]);
    let refs = read.block_refs().await.expect("blocks");
    assert_eq!(refs.len(), 5, "a block per row group");
    // Content addressed: reading again gives the same block ids.
    let again = read.block_refs().await.expect("blocks");
    let ids = |r: &[ferray::ObjectRef]| -> Vec<_> { r.iter().map(|r| r.content_id()).collect() };
    assert_eq!(ids(&refs), ids(&again));
    assert!(ids(&refs).iter().all(Option::is_some));
    drop((refs, again));

    for batch_size in [None, Some(7), Some(100)] {
        let mut op = MapBatches::tasks(&c, "double");
        if let Some(n) = batch_size {
            op = op.batch_size(n);
        }
        let ds = Dataset::read_parquet(rt, &[&path]).map_batches(op);
        let out = ds.take_all().await.expect("run");
        if let Some(n) = batch_size {
            assert!(
                out.iter().all(|b| b.num_rows() <= n),
                "batches of at most {n} rows: {:?}",
                out.iter().map(RecordBatch::num_rows).collect::<Vec<_>>()
            );
        }
        let got = concat(&out);
        let want_x: Vec<Option<i64>> = ints(&all, "x").iter().map(|v| v.map(|v| v * 2)).collect();
        let want_f: Vec<Option<f64>> = floats(&all, "f")
            .iter()
            .map(|v| v.map(|v| v * 2.0))
            .collect();
        assert_eq!(ints(&got, "x"), want_x, "batch_size {batch_size:?}");
        assert_eq!(floats(&got, "f"), want_f);
        assert_eq!(
            strs(&got, "s"),
            strs(&all, "s"),
            "other columns unchanged, in order"
        );
        assert_eq!(ds.count().await.expect("count"), 340);
    }

    // Two operators in a row, the second with a result type.
    let ds = Dataset::read_parquet(rt, &[&path])
        .map_batches(MapBatches::tasks(&c, "double").batch_size(50))
        .map_batches(MapBatches::tasks(&c, "plus-one").concurrency(2));
    let got = concat(&ds.take_all().await.expect("run"));
    let want_y: Vec<Option<i64>> = ints(&all, "x")
        .iter()
        .map(|v| v.map(|v| v * 2 + 1))
        .collect();
    assert_eq!(ints(&got, "y"), want_y);

    // A filter (keep-even) that leaves some blocks empty, and a flat map
    // (repeat): blocks of 2 rows.
    let two = DataContext {
        block_rows: 2,
        ..DataContext::default()
    };
    let items = [1, 3, 4, 6, 5, 7]
        .map(|x| serde_json::json!({"x": x, "n": x % 3}))
        .to_vec();
    let ds = Dataset::from_items(rt, items.clone())
        .with_context(two.clone())
        .map_batches(MapBatches::tasks(&c, "keep-even"));
    let out = ds.take_all().await.expect("filter");
    assert_eq!(
        out.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
        vec![0, 2, 0]
    );
    assert_eq!(ints(&concat(&out), "x"), vec![Some(4), Some(6)]);
    let written = ds
        .write_parquet(dir.path().join("even"))
        .await
        .expect("write");
    assert_eq!(
        (written.rows, written.files.len()),
        (2, 1),
        "no file for an empty block"
    );
    let ds = Dataset::from_items(rt, items)
        .with_context(two)
        .map_batches(MapBatches::tasks(&c, "repeat"));
    // n = x % 3: 1, 0, 1, 0, 2, 1
    assert_eq!(
        ints(&concat(&ds.take_all().await.expect("flat map")), "x"),
        vec![Some(1), Some(4), Some(5), Some(5), Some(7)]
    );
}

async fn csv_and_json_files_with_nulls_and_empty_files(rt: &Runtime) {
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("csv");
    std::fs::create_dir(&csv).expect("mkdir");
    std::fs::write(csv.join("1.csv"), "x,name\n1,a\n,b\n3,\n").expect("write");
    std::fs::write(csv.join("2.csv"), "x,name\n4,d\n5,e\n").expect("write");
    // Only a header: no rows, no block.
    std::fs::write(csv.join("3.csv"), "x,name\n").expect("write");
    std::fs::write(csv.join(".hidden.csv"), "junk\n").expect("write");
    let c = ops(rt).await;
    let ds = Dataset::read_csv(rt, &[csv.display().to_string()])
        .map_batches(MapBatches::tasks(&c, "plus-one"));
    let got = concat(&ds.take_all().await.expect("csv"));
    assert_eq!(
        ints(&got, "x"),
        vec![Some(1), None, Some(3), Some(4), Some(5)]
    );
    assert_eq!(
        ints(&got, "y"),
        vec![Some(2), None, Some(4), Some(5), Some(6)]
    );
    assert_eq!(
        strs(&got, "name"),
        vec![
            Some("a".into()),
            Some("b".into()),
            None,
            Some("d".into()),
            Some("e".into())
        ]
    );

    // JSON lines with a missing field (null), a glob, and an empty file.
    let json = dir.path().join("json");
    std::fs::create_dir(&json).expect("mkdir");
    std::fs::write(
        json.join("a.jsonl"),
        "{\"x\": 10, \"f\": 0.5}\n{\"f\": 1.5}\n",
    )
    .expect("w");
    std::fs::write(json.join("b.jsonl"), "").expect("w");
    std::fs::write(json.join("c.jsonl"), "{\"x\": -2, \"f\": 2.5}\n").expect("w");
    let pattern = json.join("*.jsonl").display().to_string();
    let ds = Dataset::read_json(rt, &[pattern]).map_batches(MapBatches::tasks(&c, "double"));
    let got = concat(&ds.take_all().await.expect("json"));
    assert_eq!(ints(&got, "x"), vec![Some(20), None, Some(-4)]);
    assert_eq!(floats(&got, "f"), vec![Some(1.0), Some(3.0), Some(5.0)]);

    // Items and binary files.
    let items = Dataset::from_items(
        rt,
        vec![
            serde_json::json!({"x": 1}),
            serde_json::json!({"x": null}),
            serde_json::json!({"x": 3}),
        ],
    )
    .map_batches(MapBatches::tasks(&c, "plus-one"));
    assert_eq!(
        ints(&concat(&items.take_all().await.expect("items")), "y"),
        vec![Some(2), None, Some(4)]
    );
    let bins = Dataset::read_binary_files(rt, &[csv.display().to_string()]);
    let got = concat(&bins.take_all().await.expect("binary files"));
    assert_eq!(got.num_rows(), 3, "three visible files");
    let bytes = got
        .column_by_name("bytes")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<arrow_array::BinaryArray>()
                .cloned()
        })
        .expect("bytes column");
    assert_eq!(bytes.value(1), b"x,name\n4,d\n5,e\n");
}

async fn an_actor_pool_keeps_state_and_grows_within_its_bounds(rt: &Runtime) {
    let c = ops(rt).await;
    let op = MapBatches::actors(&c, "model", "predict", 1, 3)
        .constructor_args(&["0.5".to_string()])
        .expect("args")
        .batch_size(10)
        .num_cpus(0.5);
    let items = (0..300).map(|i| serde_json::json!({ "x": i })).collect();
    let ds = Dataset::from_items(rt, items).map_batches(op);
    let out = ds.take_all().await.expect("run");
    assert_eq!(out.len(), 30, "batches of 10 rows");
    let got = concat(&out);
    let want: Vec<Option<f64>> = (0..300).map(|i| Some(i as f64 * 0.5)).collect();
    assert_eq!(floats(&got, "prediction"), want);
    assert_eq!(ints(&got, "x"), (0..300).map(Some).collect::<Vec<_>>());
    // Each actor numbers the batches it scored: as many first batches as
    // actors, and every actor's numbers run 0, 1, 2, ... without a gap.
    let seen: Vec<i64> = out
        .iter()
        .map(|b| ints(b, "seen")[0].expect("seen"))
        .collect();
    let actors = seen.iter().filter(|s| **s == 0).count();
    assert!(
        (1..=3).contains(&actors),
        "1 to 3 actors, got {actors}: {seen:?}"
    );
    let mut per: Vec<usize> = vec![0; 31];
    for s in &seen {
        per[*s as usize] += 1;
    }
    assert!(
        per.windows(2).all(|w| w[0] >= w[1]),
        "each actor counts up from 0: {seen:?}"
    );
    assert_eq!(seen.len(), 30);

    // A constructor argument of the wrong type is refused before anything runs.
    let e = MapBatches::actors(&c, "model", "predict", 1, 2)
        .constructor_args(&["\"heavy\"".to_string()])
        .expect_err("a string for an f64");
    assert!(
        e.to_string().contains("f64") || e.to_string().contains("float"),
        "{e}"
    );
}

async fn limit_union_and_repartition_keep_the_rows_and_their_order(rt: &Runtime) {
    let small = DataContext {
        block_rows: 4,
        ..DataContext::default()
    };
    let ids = |bs: &[RecordBatch]| ints(&concat(bs), "id");
    let ds = Dataset::range(rt, 100)
        .with_context(small.clone())
        .limit(15);
    assert_eq!(
        ids(&ds.take_all().await.expect("limit")),
        (0..15).map(Some).collect::<Vec<_>>()
    );
    // A limit after a component's blocks: cut where the rows run out.
    let c = ops(rt).await;
    let ds = Dataset::range(rt, 100)
        .with_context(small.clone())
        .map_batches(MapBatches::tasks(&c, "double"))
        .limit(6);
    assert_eq!(
        ids(&ds.take_all().await.expect("limit")),
        vec![Some(0), Some(2), Some(4), Some(6), Some(8), Some(10)]
    );
    let u = Dataset::range(rt, 5).union(Dataset::range(rt, 3));
    assert_eq!(
        ids(&u.take_all().await.expect("union")),
        [0, 1, 2, 3, 4, 0, 1, 2].map(Some).to_vec()
    );
    let r = Dataset::range(rt, 10).with_context(small).repartition(4);
    let parts = r.take_all().await.expect("repartition");
    assert_eq!(
        parts.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
        vec![3, 3, 2, 2]
    );
    assert_eq!(ids(&parts), (0..10).map(Some).collect::<Vec<_>>());
    assert_eq!(Dataset::range(rt, 0).count().await.expect("empty"), 0);
}

async fn written_files_read_back_as_the_same_rows(rt: &Runtime) {
    let dir = tempfile::tempdir().expect("dir");
    let src = dir.path().join("src.parquet");
    let data = rows(120, 0);
    write_parquet(&src, &data, 50);
    let c = ops(rt).await;
    let ds = Dataset::read_parquet(rt, &[src.display().to_string()])
        .map_batches(MapBatches::tasks(&c, "double"));
    let want = concat(&ds.take_all().await.expect("run"));
    let pq = ds
        .write_parquet(dir.path().join("pq"))
        .await
        .expect("parquet");
    assert_eq!((pq.rows, pq.files.len()), (120, 3), "a file per block");
    let back = Dataset::read_parquet(rt, &[dir.path().join("pq").display().to_string()]);
    assert_eq!(concat(&back.take_all().await.expect("read back")), want);
    let js = ds.write_json(dir.path().join("js")).await.expect("json");
    assert_eq!(js.rows, 120);
    let back = concat(
        &Dataset::read_json(rt, &[dir.path().join("js").display().to_string()])
            .take_all()
            .await
            .expect("read json"),
    );
    assert_eq!(ints(&back, "x"), ints(&want, "x"));
    assert_eq!(strs(&back, "s"), strs(&want, "s"));
    let csv = ds.write_csv(dir.path().join("csv")).await.expect("csv");
    assert_eq!(csv.rows, 120);
    let back = concat(
        &Dataset::read_csv(rt, &[dir.path().join("csv").display().to_string()])
            .take_all()
            .await
            .expect("read csv"),
    );
    assert_eq!(ints(&back, "x"), ints(&want, "x"));
}

/// `rows(n)` plus `g` (int64, 0 to 4, null every 11th row) and `k`
/// (utf8, "a" to "c", null every 13th), in blocks of 16 rows read from
/// Parquet (so 25+ blocks: merge trees of two levels), with an empty
/// block among them (a filter that keeps nothing of one block).
async fn keyed(rt: &Runtime, n: usize) -> (RecordBatch, Dataset, tempfile::TempDir) {
    let base = rows(n, 0);
    let g: Int64Array = (0..n as i64)
        .map(|i| (i % 11 != 4).then_some((i * 7) % 5))
        .collect();
    let k: StringArray = (0..n as i64)
        .map(|i| (i % 13 != 2).then(|| ["a", "b", "c"][(i % 3) as usize].to_string()))
        .collect();
    let mut cols: Vec<(&str, ArrayRef)> = vec![("g", Arc::new(g)), ("k", Arc::new(k))];
    for name in ["x", "f", "s"] {
        cols.push((name, base.column_by_name(name).expect("col").clone()));
    }
    let all = RecordBatch::try_from_iter(cols).expect("batch");
    let dir = tempfile::tempdir().expect("dir");
    write_parquet(&dir.path().join("a.parquet"), &all.slice(0, n / 2), 100);
    write_parquet(
        &dir.path().join("b.parquet"),
        &all.slice(n / 2, n - n / 2),
        100,
    );
    let empty = ferray_data::block::encode_batch(&all.slice(0, 0)).expect("encode");
    let empty = Dataset::from_blocks(rt, vec![rt.put_encoded(empty)]);
    let ds = Dataset::read_parquet(rt, &[dir.path().display().to_string()])
        .union(empty)
        .with_context(DataContext {
            block_rows: 16,
            shuffle_partitions: Some(3),
            ..DataContext::default()
        });
    (all, ds, dir)
}

/// The one row of `got` whose key columns are `key` (as text: `None` for
/// null).
fn row_of(got: &RecordBatch, keys: &[&str], key: &[Option<String>]) -> usize {
    let cols: Vec<Vec<Option<String>>> = keys
        .iter()
        .map(|k| {
            let c = got.column_by_name(k).expect("key column");
            (0..c.len())
                .map(|i| {
                    c.is_valid(i).then(|| {
                        let any = c.as_any();
                        match (
                            any.downcast_ref::<Int64Array>(),
                            any.downcast_ref::<StringArray>(),
                        ) {
                            (Some(a), _) => a.value(i).to_string(),
                            (_, Some(a)) => a.value(i).to_string(),
                            _ => panic!("a key of type {}", c.data_type()),
                        }
                    })
                })
                .collect()
        })
        .collect();
    let hits: Vec<usize> = (0..got.num_rows())
        .filter(|i| cols.iter().zip(key).all(|(c, k)| &c[*i] == k))
        .collect();
    assert_eq!(hits.len(), 1, "one row for {key:?}: {hits:?}");
    hits[0]
}

async fn groupby_aggregate_equals_the_direct_computation(rt: &Runtime) {
    let (all, ds, _dir) = keyed(rt, 400).await;
    let out = ds
        .clone()
        .groupby(&["g"])
        .aggregate(vec![
            Aggregate::count(),
            Aggregate::count_of("x"),
            Aggregate::sum("x"),
            Aggregate::mean("f"),
            Aggregate::min("x"),
            Aggregate::max("f"),
            Aggregate::sum("f"),
        ])
        .take_all()
        .await
        .expect("groupby g");
    assert!(out.len() <= 3, "a block per part: {}", out.len());
    for b in &out {
        let g = ints(b, "g");
        let mut sorted = g.clone();
        sorted.sort_by_key(|v| (v.is_none(), *v));
        assert_eq!(g, sorted, "each block sorted by its key");
    }
    let got = concat(&out);
    let names: Vec<String> = got
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "g", "count()", "count(x)", "sum(x)", "mean(f)", "min(x)", "max(f)", "sum(f)"
        ]
    );
    // The direct computation: groups 0..5 and null.
    let (g, x, f) = (ints(&all, "g"), ints(&all, "x"), floats(&all, "f"));
    let keys: Vec<Option<i64>> = (0..5).map(Some).chain([None]).collect();
    assert_eq!(got.num_rows(), keys.len(), "a row per group, null included");
    for key in keys {
        let rows: Vec<usize> = (0..all.num_rows()).filter(|i| g[*i] == key).collect();
        let xs: Vec<i64> = rows.iter().filter_map(|i| x[*i]).collect();
        let fs: Vec<f64> = rows.iter().filter_map(|i| f[*i]).collect();
        let text = key.map(|k| k.to_string());
        let i = row_of(&got, &["g"], &[text]);
        let at = |name: &str| ints(&got, name)[i];
        assert_eq!(at("count()"), Some(rows.len() as i64), "count() of {key:?}");
        assert_eq!(at("count(x)"), Some(xs.len() as i64));
        assert_eq!(at("sum(x)"), Some(xs.iter().sum::<i64>()));
        assert_eq!(at("min(x)"), xs.iter().min().copied());
        // Group 2 is where f is null (i % 5 == 1): its mean, max and sum
        // are null.
        let (mean, max, sum) = (
            floats(&got, "mean(f)")[i],
            floats(&got, "max(f)")[i],
            floats(&got, "sum(f)")[i],
        );
        if fs.is_empty() {
            assert_eq!((mean, max, sum), (None, None, None), "no f in {key:?}");
            continue;
        }
        let want = fs.iter().sum::<f64>() / fs.len() as f64;
        let mean = mean.expect("mean");
        assert!(
            (mean - want).abs() < 1e-9,
            "mean(f) of {key:?}: {mean} != {want}"
        );
        assert_eq!(max, Some(fs.iter().copied().fold(f64::MIN, f64::max)));
        assert!((sum.expect("sum") - fs.iter().sum::<f64>()).abs() < 1e-6);
    }
    assert_eq!(
        floats(&got, "mean(f)")
            .iter()
            .filter(|m| m.is_none())
            .count(),
        1,
        "one group without f"
    );

    // Two keys, one a string with nulls; a group whose values are all
    // null has a null sum.
    let got = concat(
        &ds.clone()
            .groupby(&["k", "g"])
            .aggregate(vec![Aggregate::count(), Aggregate::sum("x")])
            .take_all()
            .await
            .expect("groupby k, g"),
    );
    let k = strs(&all, "k");
    let mut want = std::collections::BTreeMap::new();
    for i in 0..all.num_rows() {
        let e = want
            .entry((k[i].clone(), g[i]))
            .or_insert((0i64, None::<i64>));
        e.0 += 1;
        if let Some(v) = x[i] {
            e.1 = Some(e.1.unwrap_or(0) + v);
        }
    }
    assert_eq!(got.num_rows(), want.len(), "a row per (k, g)");
    for ((kk, gg), (count, sum)) in &want {
        let i = row_of(&got, &["k", "g"], &[kk.clone(), gg.map(|g| g.to_string())]);
        assert_eq!(ints(&got, "count()")[i], Some(*count));
        assert_eq!(ints(&got, "sum(x)")[i], *sum);
    }

    // Nothing in, nothing out; a missing column and a column that is not a
    // number are named.
    let none = Dataset::from_items(rt, Vec::new()).groupby(&["g"]).count();
    assert_eq!(none.count().await.expect("empty"), 0);
    let e = ds.clone().groupby(&["nope"]).count().take_all().await;
    let e = e.expect_err("no such column").to_string();
    assert!(e.contains("nope") && e.contains("groupby(nope)"), "{e}");
    let e = ds.clone().groupby(&["g"]).sum("s").take_all().await;
    let e = e.expect_err("a string column").to_string();
    assert!(e.contains("column `s` is Utf8"), "{e}");
    let e = ds.groupby(&["g"]).aggregate(vec![]).take_all().await;
    assert!(
        e.expect_err("no aggregate")
            .to_string()
            .contains("needs an aggregate")
    );
}

async fn sort_and_random_shuffle_keep_every_row(rt: &Runtime) {
    let (all, ds, _dir) = keyed(rt, 400).await;
    let (x, s) = (ints(&all, "x"), strs(&all, "s"));

    // Ascending: nulls last; rows with equal keys keep their order.
    let out = ds
        .clone()
        .sort(&["x"], false)
        .take_all()
        .await
        .expect("sort");
    assert!(out.len() <= 3, "a block per part: {}", out.len());
    let got = concat(&out);
    let mut want: Vec<(Option<i64>, Option<String>)> =
        x.iter().cloned().zip(s.iter().cloned()).collect();
    want.sort_by_key(|(x, _)| (x.is_none(), *x));
    let pairs =
        |b: &RecordBatch| -> Vec<_> { ints(b, "x").into_iter().zip(strs(b, "s")).collect() };
    assert_eq!(pairs(&got), want, "sorted by x, nulls last, stable");

    // Descending on two keys: nulls first.
    let got = concat(
        &ds.clone()
            .sort(&["g", "x"], true)
            .take_all()
            .await
            .expect("sort desc"),
    );
    let g = ints(&all, "g");
    let mut want: Vec<(Option<i64>, Option<i64>, Option<String>)> = (0..all.num_rows())
        .map(|i| (g[i], x[i], s[i].clone()))
        .collect();
    // Descending with nulls first: None is the greatest.
    let rank = |v: Option<i64>| v.map_or(i64::MAX as i128 + 1, i128::from);
    want.sort_by_key(|w| std::cmp::Reverse((rank(w.0), rank(w.1))));
    let got3: Vec<_> = (0..got.num_rows())
        .map(|i| {
            (
                ints(&got, "g")[i],
                ints(&got, "x")[i],
                strs(&got, "s")[i].clone(),
            )
        })
        .collect();
    assert_eq!(got3, want, "sorted by (g, x) descending");

    // A random shuffle: every row once, in another order; the same seed
    // gives the same order, another seed another.
    let shuffled = |seed| {
        let ds = ds.clone().random_shuffle(Some(seed));
        async move { strs(&concat(&ds.take_all().await.expect("shuffle")), "s") }
    };
    let (a, b, c) = (shuffled(7).await, shuffled(7).await, shuffled(8).await);
    assert_eq!(a, b, "the same seed, the same order");
    assert_ne!(a, c, "another seed, another order");
    assert_ne!(a, s, "not the input's order");
    let mut sorted = a.clone();
    sorted.sort();
    let mut want = s.clone();
    want.sort();
    assert_eq!(sorted, want, "every row once");

    // An empty dataset sorts and shuffles to nothing; a missing key is named.
    let none = Dataset::from_items(rt, Vec::new());
    assert_eq!(
        none.clone()
            .sort(&["x"], false)
            .count()
            .await
            .expect("sort"),
        0
    );
    assert_eq!(none.random_shuffle(None).count().await.expect("shuffle"), 0);
    let e = ds
        .sort(&["nope"], false)
        .take_all()
        .await
        .expect_err("no column");
    assert!(e.to_string().contains("no column `nope`"), "{e}");
}

async fn bad_input_gets_one_clear_error(rt: &Runtime) {
    let dir = tempfile::tempdir().expect("dir");
    let c = ops(rt).await;
    // Files whose columns differ: the error names the column.
    std::fs::write(dir.path().join("1.csv"), "x,y\n1,2\n").expect("w");
    std::fs::write(dir.path().join("2.csv"), "x,y\nabc,2\n").expect("w");
    let e = Dataset::read_csv(rt, &[dir.path().display().to_string()])
        .count()
        .await
        .expect_err("mismatched files");
    assert!(
        matches!(&e, DataError::Schema { column, .. } if column == "x"),
        "{e}"
    );
    assert!(e.to_string().contains("2.csv"), "names the file: {e}");

    let range = || Dataset::range(rt, 10);
    // A guest's err names the column it missed; a block that is not Arrow;
    // a function that is not a map_batches signature; an unknown export.
    let e = range()
        .map_batches(MapBatches::tasks(&c, "plus-one"))
        .count()
        .await
        .expect_err("no x");
    assert!(
        e.to_string().contains("map_batches(plus-one)") && e.to_string().contains("`x`"),
        "{e}"
    );
    let e = range()
        .map_batches(MapBatches::tasks(&c, "garbage"))
        .take_all()
        .await
        .expect_err("garbage");
    assert!(e.to_string().contains("not an Arrow IPC stream"), "{e}");
    let e = range()
        .map_batches(MapBatches::tasks(&c, "square"))
        .count()
        .await
        .expect_err("signature");
    assert!(e.to_string().contains("func(x: s64) -> s64"), "{e}");
    let e = range()
        .map_batches(MapBatches::tasks(&c, "nope"))
        .count()
        .await
        .expect_err("unknown");
    assert!(e.to_string().contains("nope"), "{e}");
    // A guest that traps on a block: the trap, and the runtime goes on.
    let text = Dataset::from_items(rt, vec![serde_json::json!({"s": "text"})])
        .map_batches(MapBatches::tasks(&c, "keep-even"))
        .count()
        .await
        .expect_err("no x to keep");
    assert!(text.to_string().contains("no column `x`"), "{text}");
    assert_eq!(range().count().await.expect("still works"), 10);
    // No such file.
    let e = Dataset::read_parquet(rt, &[dir.path().join("none.parquet").display().to_string()])
        .count()
        .await
        .expect_err("missing");
    assert!(e.to_string().contains("none.parquet"), "{e}");
}

/// A dataset four times the object store's memory streams through a
/// component within the memory budget: nothing spills.
#[tokio::test]
async fn a_dataset_four_times_the_object_store_runs_within_its_budget() {
    const BUDGET: u64 = 8 << 20;
    let rt = crate::builder()
        .object_store_memory(16 << 20)
        .build()
        .await
        .expect("runtime");
    let c = ops(&rt).await;
    // 8M int64 rows: 64 MiB of blocks of 1 MiB. The operators alone would
    // hold up to 64 blocks at once; the budget holds them to 8.
    let ctx = DataContext {
        block_rows: 128 << 10,
        max_blocks_in_flight: 32,
        memory_budget: BUDGET,
        ..DataContext::default()
    };
    let ds = Dataset::range(&rt, 8 << 20)
        .with_context(ctx)
        .map_batches(MapBatches::tasks(&c, "double"));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watch = {
        let (rt, peak) = (rt.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                let b = rt.stats().store.bytes_in_memory;
                peak.fetch_max(b, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let mut rows = 0u64;
    let mut last = None;
    let mut s = ds.iter_batches().expect("stream");
    while let Some(b) = futures::StreamExt::next(&mut s).await {
        let b = b.expect("batch");
        rows += b.num_rows() as u64;
        last = ints(&b, "id").last().copied().flatten();
    }
    watch.abort();
    assert_eq!(rows, 8 << 20);
    assert_eq!(last, Some(((8 << 20) - 1) * 2));
    let stats = rt.stats().store;
    assert_eq!(stats.spills_total, 0, "nothing spilled: {stats:?}");
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= 16 << 20, "at most the store's memory in it: {peak}");
}

/// `ferray data run`: a pipeline file's read → map_batches → write, and a
/// bad file's one line naming the field.
#[test]
fn ferray_data_run_writes_what_the_pipeline_file_says() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("in.csv"), "x,name\n1,a\n2,b\n,c\n4,d\n").expect("w");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
            [read]
            format = "csv"
            paths = ["in.csv"]

            [[ops]]
            kind = "map_batches"
            component = "{}"
            function = "plus-one"
            batch_size = 2

            [[ops]]
            kind = "map_batches"
            component = "{}"
            class = "model"
            method = "predict"
            args = ["2.0"]
            concurrency = [1, 2]

            [write]
            format = "json"
            path = "out"
            "#,
            fx::DATA_OPS,
            fx::DATA_OPS
        ),
    )
    .expect("w");
    let out = ferray_ok(&["data", "run", pipeline.to_str().expect("utf-8")]);
    assert!(out.contains("wrote 4 rows in 2 files"), "{out}");
    let mut text = String::new();
    for f in ["part-00000.json", "part-00001.json"] {
        text += &std::fs::read_to_string(dir.path().join("out").join(f)).expect("read output");
    }
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let ys: Vec<_> = rows
        .iter()
        .map(|r| r.get("y").and_then(|v| v.as_i64()))
        .collect();
    assert_eq!(ys, vec![Some(2), Some(3), None, Some(5)]);
    let preds: Vec<_> = rows
        .iter()
        .map(|r| r.get("prediction").and_then(|v| v.as_f64()))
        .collect();
    assert_eq!(preds, vec![Some(2.0), Some(4.0), None, Some(8.0)]);

    // Without [write], the rows are printed as JSON lines.
    std::fs::write(&pipeline, "[read]\nformat = \"range\"\nn = 3\n").expect("w");
    let out = ferray_ok(&["data", "run", pipeline.to_str().expect("utf-8")]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![r#"{"id":0}"#, r#"{"id":1}"#, r#"{"id":2}"#]
    );

    std::fs::write(
        &pipeline,
        "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"map_batches\"\ncomponent = \"x.wasm\"\nfunction = \"f\"\nbatch_size = -1\n",
    )
    .expect("w");
    let err = ferray_err(&["data", "run", pipeline.to_str().expect("utf-8")]);
    let line = err
        .lines()
        .find(|l| l.contains("error: "))
        .expect("error line");
    assert!(line.contains("p.toml: ops[0].batch_size"), "{err}");
    // A component that is not there: named with its field.
    std::fs::write(
        &pipeline,
        "[read]\nformat = \"range\"\nn = 3\n[[ops]]\nkind = \"map_batches\"\ncomponent = \"x.wasm\"\nfunction = \"f\"\n",
    )
    .expect("w");
    let err = ferray_err(&["data", "run", pipeline.to_str().expect("utf-8")]);
    assert!(
        err.contains("ops[0].component") && err.contains("x.wasm"),
        "{err}"
    );
}

/// `guest-examples/data-inference`: its pipeline file scores the wine data
/// on an actor pool (two actors at most) and writes Parquet; the scores
/// tell good wines (quality 6 or more) from the rest as the offline fit
/// did (74%).
#[test]
fn the_data_inference_example_scores_every_wine() {
    let dir = tempfile::tempdir().expect("dir");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/guest-examples/data-inference");
    let text = std::fs::read_to_string(format!("{root}/pipeline.toml")).expect("pipeline");
    // The same file, with the data, the component and the output where
    // this test has them.
    let text = text
        .replace(
            "../train-wine/data/winequality-red.csv",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/guest-examples/train-wine/data/winequality-red.csv"
            ),
        )
        .replace(
            "../target/wasm32-wasip2/release/data_inference.wasm",
            fx::DATA_INFERENCE,
        );
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, text).expect("write");
    let out = ferray_ok(&["data", "run", pipeline.to_str().expect("utf-8")]);
    assert!(out.contains("wrote 1599 rows in 8 files"), "{out}");
    let scored = crate::harness::block_on(async {
        let rt = crate::runtime().await;
        Dataset::read_parquet(&rt, &[dir.path().join("scored").display().to_string()])
            .take_all()
            .await
            .expect("read the output")
    });
    let all = concat(&scored);
    let quality = ints(&all, "quality");
    let positive = all
        .column_by_name("positive")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<arrow_array::BooleanArray>()
                .cloned()
        })
        .expect("positive");
    let right = (0..all.num_rows())
        .filter(|i| positive.value(*i) == (quality[*i].expect("quality") >= 6))
        .count();
    let accuracy = right as f64 / all.num_rows() as f64;
    assert!((0.74..0.75).contains(&accuracy), "accuracy {accuracy}");
    assert!(
        floats(&all, "score")
            .iter()
            .all(|s| s.is_some_and(|s| (0.0..=1.0).contains(&s)))
    );
}

/// On a cluster, blocks a component made live on the nodes that ran it;
/// when one of them dies, its blocks are made again from their lineage
/// (the same task on the same input block) where they are read.
#[test]
fn the_data_etl_example_groups_every_clean_sale() {
    let dir = tempfile::tempdir().expect("dir");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/guest-examples/data-etl");
    let csv = format!("{root}/data/sales.csv");
    let text = std::fs::read_to_string(format!("{root}/pipeline.toml")).expect("pipeline");
    let text = text
        .replace("\"data/sales.csv\"", &format!("{csv:?}"))
        .replace(
            "../target/wasm32-wasip2/release/data_etl.wasm",
            fx::DATA_ETL,
        );
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, text).expect("write");
    let out = ferray_ok(&["data", "run", pipeline.to_str().expect("utf-8")]);
    assert!(out.contains("wrote 4 rows"), "{out}");
    let (raw, got) = crate::harness::block_on(async {
        let rt = crate::runtime().await;
        let raw = Dataset::read_csv(&rt, &[&csv])
            .take_all()
            .await
            .expect("csv");
        let out = dir.path().join("by-region").display().to_string();
        let got = Dataset::read_parquet(&rt, &[out])
            .take_all()
            .await
            .expect("output");
        (concat(&raw), concat(&got))
    });
    // The direct computation: the same cleaning, then the groups.
    let mut want: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (region, amount) in strs(&raw, "region").into_iter().zip(strs(&raw, "amount")) {
        let region = region.unwrap_or_default().trim().to_lowercase();
        let amount = amount
            .unwrap_or_default()
            .trim()
            .replace(['$', ','], "")
            .parse::<f64>();
        if let (false, Ok(a)) = (region.is_empty(), amount) {
            want.entry(region).or_default().push(a);
        }
    }
    let regions: Vec<String> = strs(&got, "region").into_iter().flatten().collect();
    assert_eq!(regions, want.keys().cloned().collect::<Vec<_>>(), "sorted");
    for (i, (region, amounts)) in want.iter().enumerate() {
        assert_eq!(
            ints(&got, "count()")[i],
            Some(amounts.len() as i64),
            "{region}"
        );
        let sum: f64 = amounts.iter().sum();
        let near = |name: &str, v: f64| {
            let g = floats(&got, name)[i].expect(name);
            assert!((g - v).abs() < 1e-6, "{name} of {region}: {g} != {v}");
        };
        near("sum(amount)", sum);
        near("mean(amount)", sum / amounts.len() as f64);
        near(
            "min(amount)",
            amounts.iter().copied().fold(f64::MAX, f64::min),
        );
        near(
            "max(amount)",
            amounts.iter().copied().fold(f64::MIN, f64::max),
        );
    }
    let rows: usize = want.values().map(Vec::len).sum();
    assert!(
        rows > 150 && rows < raw.num_rows(),
        "some rows dropped: {rows}"
    );
}

#[test]
fn a_lost_block_is_rebuilt_through_lineage() {
    let mut c = crate::harness::Cluster::start(2);
    let victim = c.workers[1].1;
    crate::harness::block_on(async {
        let rt = c.runtime().await;
        let ops = ops(&rt).await;
        // 8 blocks of 40,000 rows (320 KiB each: too big to travel inline,
        // so each stays on the node that made it).
        let ds = Dataset::range(&rt, 320_000)
            .with_context(DataContext {
                block_rows: 40_000,
                ..DataContext::default()
            })
            .map_batches(MapBatches::tasks(&ops, "double"));
        let refs = ds.block_refs().await.expect("blocks");
        assert_eq!(refs.len(), 8);
        let on: Vec<u64> = refs
            .iter()
            .map(|r| match r.name() {
                ferray::RefName::Task(t) => c.node_of(t.0),
                ferray::RefName::Put(_) => panic!("a block of a task is its result"),
            })
            .collect();
        let lost = on.iter().filter(|n| **n == victim).count();
        assert!(lost > 0, "no block made on {victim}: {on:?}");
        c.kill_worker(victim);
        let batches = Dataset::from_blocks(&rt, refs)
            .take_all()
            .await
            .expect("rebuilt");
        let want: Vec<Option<i64>> = (0..320_000).map(|i| Some(i * 2)).collect();
        assert_eq!(
            ints(&concat(&batches), "id"),
            want,
            "{lost} of 8 blocks were rebuilt"
        );
    });
}
