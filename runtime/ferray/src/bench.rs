//! `ferray microbenchmark`: Ray's microbenchmark, measured on the embedded
//! runtime or against a cluster, printing `NAME VALUE UNIT` lines with Ray's
//! metric names (plus object transfer and raw TCP on loopback).
//!
//! The tasks and the actor come from a Rust guest built with the SDK
//! (`guest-examples/bench`: std, WASI), so the figures are those of what
//! users run: submission, scheduling, a fresh instance per task, the call,
//! the result in the object store, and `get`. The same metrics on a tiny
//! component written in WebAssembly text (no WASI, no allocation) follow
//! with a `_wat` suffix: ferray's own overhead.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{Error, ObjectRef, OutputMode, Runtime};

/// A component with `small-value: func() -> u32` and an actor class
/// `counter` (`constructor(start: s64)`, `small-value`, `incr(by: s64) -> s64`).
pub const BENCH_COMPONENT_WAT: &str = r#"
(component
  (type $counter' (resource (rep i32)))
  (export $counter "counter" (type $counter'))
  (core func $new (canon resource.new $counter'))
  (core module $m
    (import "" "new" (func $new (param i32) (result i32)))
    (global $count (mut i64) (i64.const 0))
    (func (export "small-value") (result i32) (i32.const 7))
    (func (export "ctor") (param i64) (result i32)
      (global.set $count (local.get 0))
      (call $new (i32.const 1)))
    (func (export "method-small-value") (param i32) (result i32) (i32.const 7))
    (func (export "incr") (param i32 i64) (result i64)
      (global.set $count (i64.add (global.get $count) (local.get 1)))
      (global.get $count))
  )
  (core instance $i (instantiate $m (with "" (instance (export "new" (func $new))))))
  (func (export "small-value") (result u32) (canon lift (core func $i "small-value")))
  (func (export "[constructor]counter") (param "start" s64) (result (own $counter))
    (canon lift (core func $i "ctor")))
  (func (export "[method]counter.small-value") (param "self" (borrow $counter)) (result u32)
    (canon lift (core func $i "method-small-value")))
  (func (export "[method]counter.incr") (param "self" (borrow $counter)) (param "by" s64) (result s64)
    (canon lift (core func $i "incr")))
)
"#;

/// Call `f` repeatedly for about `secs` seconds (after a short warm-up) and
/// return the rate of `per_call` units per second.
async fn timeit<F, Fut>(secs: f64, per_call: f64, mut f: F) -> Result<f64, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs_f64((secs / 5.0).max(0.02)) {
        f().await?;
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) || calls == 0 {
        f().await?;
        calls += 1;
    }
    Ok(calls as f64 * per_call / start.elapsed().as_secs_f64())
}

/// What to measure.
#[derive(Debug, Clone)]
pub enum Target {
    /// A runtime in this process.
    Embedded,
    /// The cluster whose head is at `address`.
    #[cfg(feature = "cluster")]
    Cluster {
        address: String,
        token: Option<String>,
    },
}

impl Target {
    fn runtime(&self) -> Result<Runtime, Error> {
        let b = Runtime::builder()
            .output(OutputMode::Discard)
            .cache_dir(None);
        match self {
            Target::Embedded => b.build_sync(),
            #[cfg(feature = "cluster")]
            Target::Cluster { address, token } => {
                let b = match token {
                    Some(t) => b.token(t),
                    None => b,
                };
                futures::executor::block_on(b.connect(address))
            }
        }
    }
}

/// One output line, `NAME VALUE UNIT`.
pub fn line(name: &str, value: f64, unit: &str) -> String {
    if value >= 100.0 {
        format!("{name} {value:.0} {unit}")
    } else {
        format!("{name} {value:.3} {unit}")
    }
}

/// Run every metric whose name contains `filter`, about `2 * scale` seconds
/// each, printing lines through `print` as they come; returns how many ran.
///
/// Tasks and actor calls are measured on two components: `guest`, a Rust
/// guest built with the SDK (what users run: `guest-examples/bench`; its
/// figures carry Ray's names), and [`BENCH_COMPONENT_WAT`] (ferray's own
/// overhead; its figures carry a `_wat` suffix). Both export `small-value`
/// and the actor class `counter` with `small-value` and `incr`.
pub fn run_all(
    target: &Target,
    scale: f64,
    filter: Option<&str>,
    guest: &[u8],
    mut print: impl FnMut(String),
) -> Result<usize, Error> {
    let rt = target.runtime()?;
    let kinds: [(&str, &[u8]); 2] = [("", guest), ("_wat", BENCH_COMPONENT_WAT.as_bytes())];
    let secs = 2.0 * scale.max(0.001);
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let mut count = 0usize;
    for (suffix, bytes) in kinds {
        count += component_metrics(&rt, target, bytes, suffix, secs, &wanted, &mut print)?;
    }
    count += workloads(&rt, guest, &wanted, &mut print)?;
    let rt2 = rt.clone();
    rt.block_on(async move {
        let rt = rt2;
        let mut emit = |name: &str, value: f64, unit: &str| {
            print(line(name, value, unit));
            count += 1;
        };
        if wanted("single_client_put_calls") {
            let v = timeit(secs, 1.0, || async {
                let r = rt.put(&0u64).await?;
                drop(r);
                Ok(())
            })
            .await?;
            emit("single_client_put_calls", v, "per_second");
        }
        if wanted("single_client_get_calls") {
            let r = rt.put(&0u64).await?;
            let v = timeit(secs, 1.0, || async { rt.get::<u64>(&r).await.map(|_| ()) }).await?;
            emit("single_client_get_calls", v, "per_second");
        }
        if wanted("single_client_put_gigabytes") || wanted("blake3_hash_gigabytes") {
            // 100 MiB values, as Ray's benchmark puts large arrays.
            let size = 100 << 20;
            let bufs: Vec<Bytes> = (0..4u8)
                .map(|i| {
                    let mut v = vec![0u8; size];
                    v[0] = i;
                    Bytes::from(v)
                })
                .collect();
            let gb = size as f64 / 1e9;
            if wanted("single_client_put_gigabytes") {
                let mut i = 0;
                let v = timeit(secs, gb, || {
                    i += 1;
                    let b = bufs[i % bufs.len()].clone();
                    let rt = &rt;
                    async move {
                        let r: ObjectRef = rt.put_encoded(b);
                        drop(r);
                        Ok(())
                    }
                })
                .await?;
                emit("single_client_put_gigabytes", v, "gigabytes_per_second");
            }
            if wanted("blake3_hash_gigabytes") {
                let v = timeit(secs, gb, || {
                    let h = blake3::hash(&bufs[1]);
                    std::hint::black_box(h);
                    async { Ok(()) }
                })
                .await?;
                emit("blake3_hash_gigabytes", v, "gigabytes_per_second");
            }
        }
        // Transfers between nodes are the cluster's; without it there are none.
        #[cfg(feature = "cluster")]
        if wanted("object_transfer_gigabytes") || wanted("tcp_loopback_gigabytes") {
            let size = 256 << 20;
            if wanted("tcp_loopback_gigabytes") {
                let v = crate::cluster::tcp_loopback_gbps(size, secs).await?;
                emit("tcp_loopback_gigabytes", v, "gigabytes_per_second");
            }
            if wanted("object_transfer_gigabytes") {
                let v = crate::cluster::transfer_gbps(size, secs).await?;
                emit("object_transfer_gigabytes", v, "gigabytes_per_second");
            }
        }
        Ok::<usize, Error>(count)
    })
}

/// Whole workloads whose driver is a task of the guest, each timed once (after
/// a smaller warm-up run), in seconds: what `benches/ray/bench.py` runs on
/// Ray with the same shapes.
///
/// - `workload_independent_tasks_20000`: the driver submits 20,000 tasks and
///   gets them all (`fan-in`);
/// - `workload_chain_2000`: 2,000 tasks, each taking the previous one's result
///   as an object argument (`chain`);
/// - `workload_tree_1365`: a tree of nested tasks, depth 5 and width 4, each
///   waiting for its children (`tree`).
fn workloads(
    rt: &Runtime,
    guest: &[u8],
    wanted: &dyn Fn(&str) -> bool,
    print: &mut dyn FnMut(String),
) -> Result<usize, Error> {
    type Shape = (
        &'static str,
        &'static str,
        &'static [u32],
        &'static [u32],
        u64,
    );
    // (metric, export, warm-up arguments, arguments, expected result)
    let shapes: [Shape; 3] = [
        (
            "workload_independent_tasks_20000",
            "fan-in",
            &[1000],
            &[20_000],
            140_000,
        ),
        ("workload_chain_2000", "chain", &[100], &[2000], 2000),
        ("workload_tree_1365", "tree", &[3, 4], &[5, 4], 1365),
    ];
    if !shapes.iter().any(|s| wanted(s.0)) {
        return Ok(0);
    }
    let comp = rt.load_bytes_sync(guest)?;
    let rt2 = rt.clone();
    rt.block_on(async move {
        let rt = rt2;
        let mut count = 0;
        for (name, export, warm, args, expect) in shapes {
            if !wanted(name) {
                continue;
            }
            let run = |args: &'static [u32]| {
                let comp = &comp;
                let rt = &rt;
                async move {
                    let r = match *args {
                        [a] => comp.call(export, (a,))?,
                        [a, b] => comp.call(export, (a, b))?,
                        _ => return Err(Error::Other(format!("{name}: arguments {args:?}"))),
                    };
                    rt.get::<u64>(&r).await
                }
            };
            run(warm).await?;
            let start = Instant::now();
            let got = run(args).await?;
            let secs = start.elapsed().as_secs_f64();
            if got != expect {
                return Err(Error::Other(format!(
                    "{name}: `{export}` returned {got}, not {expect}"
                )));
            }
            print(line(name, secs, "seconds"));
            count += 1;
        }
        Ok::<usize, Error>(count)
    })
}

/// The metrics that measure a component's tasks and actor calls, named with
/// `suffix`.
fn component_metrics(
    rt: &Runtime,
    target: &Target,
    bytes: &[u8],
    suffix: &str,
    secs: f64,
    wanted: &dyn Fn(&str) -> bool,
    print: &mut dyn FnMut(String),
) -> Result<usize, Error> {
    let names = [
        "single_client_tasks_sync",
        "single_client_tasks_async",
        "multi_client_tasks_async",
        "1_1_actor_calls_sync",
        "1_1_actor_calls_async",
        "single_client_wait_1k_refs",
        "single_client_tasks_and_get_batch",
    ];
    let wanted = |name: &str| wanted(&format!("{name}{suffix}"));
    if !names.iter().any(|n| wanted(n)) {
        return Ok(0);
    }
    let comp = rt.load_bytes_sync(bytes)?;
    // More drivers for multi_client_tasks_async: separate connections to a
    // cluster, or more submitters on the embedded runtime.
    let clients: Vec<(Runtime, crate::Component)> = if wanted("multi_client_tasks_async") {
        (0..4)
            .map(|_| {
                let r = match target {
                    Target::Embedded => rt.clone(),
                    #[cfg(feature = "cluster")]
                    Target::Cluster { .. } => target.runtime()?,
                };
                let c = r.load_bytes_sync(bytes)?;
                Ok((r, c))
            })
            .collect::<Result<_, Error>>()?
    } else {
        Vec::new()
    };
    let rt2 = rt.clone();
    rt.block_on(async move {
        let rt = rt2;
        let mut count = 0usize;
        let mut emit = |name: &str, value: f64, unit: &str| {
            print(line(&format!("{name}{suffix}"), value, unit));
            count += 1;
        };

        if wanted("single_client_tasks_sync") {
            let v = timeit(secs, 1.0, || async {
                let r = comp.call("small-value", ())?;
                rt.get::<u32>(&r).await.map(|_| ())
            })
            .await?;
            emit("single_client_tasks_sync", v, "per_second");
        }
        if wanted("single_client_tasks_async") {
            let v = timeit(secs, 1000.0, || async {
                let refs = (0..1000)
                    .map(|_| comp.call("small-value", ()))
                    .collect::<Result<Vec<_>, _>>()?;
                rt.get_all::<u32>(&refs).await.map(|_| ())
            })
            .await?;
            emit("single_client_tasks_async", v, "per_second");
        }
        if wanted("multi_client_tasks_async") {
            let n = clients.len() as f64;
            let v = timeit(secs, 1000.0 * n, || async {
                let runs = clients.iter().map(|(rt, comp)| async move {
                    let refs = (0..1000)
                        .map(|_| comp.call("small-value", ()))
                        .collect::<Result<Vec<_>, _>>()?;
                    rt.get_all::<u32>(&refs).await.map(|_| ())
                });
                for r in futures::future::join_all(runs).await {
                    r?;
                }
                Ok(())
            })
            .await?;
            emit("multi_client_tasks_async", v, "per_second");
        }
        let actor = comp.actor("counter", (0i64,)).spawn().await?;
        if wanted("1_1_actor_calls_sync") {
            let v = timeit(secs, 1.0, || async {
                let r = actor.call("small-value", ())?;
                rt.get::<u32>(&r).await.map(|_| ())
            })
            .await?;
            emit("1_1_actor_calls_sync", v, "per_second");
        }
        if wanted("1_1_actor_calls_async") {
            let v = timeit(secs, 1000.0, || async {
                let refs = (0..1000)
                    .map(|_| actor.call("small-value", ()))
                    .collect::<Result<Vec<_>, _>>()?;
                rt.get_all::<u32>(&refs).await.map(|_| ())
            })
            .await?;
            emit("1_1_actor_calls_async", v, "per_second");
        }
        if wanted("single_client_wait_1k_refs") {
            let v = timeit(secs, 1.0, || async {
                let mut not_ready = (0..1000)
                    .map(|_| comp.call("small-value", ()))
                    .collect::<Result<Vec<_>, _>>()?;
                while !not_ready.is_empty() {
                    let (_ready, rest) = rt.wait(&not_ready, 1, None).await;
                    not_ready = rest;
                }
                Ok(())
            })
            .await?;
            emit("single_client_wait_1k_refs", v, "per_second");
        }
        if wanted("single_client_tasks_and_get_batch") {
            let v = timeit(secs, 1.0, || async {
                let refs = (0..1000)
                    .map(|_| comp.call("small-value", ()))
                    .collect::<Result<Vec<_>, _>>()?;
                rt.get_all::<u32>(&refs).await.map(|_| ())
            })
            .await?;
            emit("single_client_tasks_and_get_batch", v, "per_second");
        }
        actor.kill()?;
        Ok::<usize, Error>(count)
    })
}
