//! What one node holds (issue 12, item 3), measured on the embedded runtime
//! with the `misbehave` test guest (a Rust guest built with the SDK for
//! wasm32-wasip2), each part on a runtime of its own:
//!
//! - **refs**: a guest holds [`REFS`] object refs (puts) and lends them all
//!   to one `wait` (`hold-refs`); the time and the process's peak memory.
//! - **queued**: a guest submits [`TASKS`] tasks at once and waits for them
//!   (`nest`): the most that were queued at the same time (sampled), the
//!   process's peak memory, and the memory per queued task.
//! - **actors**: [`ACTORS`] `tally` actors on one node (the default pool of
//!   1,000 instance slots, 125 of them kept for tasks: the rest are
//!   allocated on demand), each constructed and called, then called again;
//!   the memory and mappings per idle actor and the rates.
//!
//! The peak is the kernel's VmHWM, reset before each part. A measurement,
//! not a test: it exits 0 either way (but checks every result it gets).
//! Not criterion (a plain `main`): `cargo bench -p ferray-benches --bench
//! scale` (`FERRAY_BENCH_REFS`, `FERRAY_BENCH_TASKS`, `FERRAY_BENCH_ACTORS`
//! for other counts; 0 skips a part).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferray::Runtime;

/// Object refs a guest holds, unless `FERRAY_BENCH_REFS` says otherwise.
const REFS: u32 = 1_000_000;
/// Tasks a guest queues, unless `FERRAY_BENCH_TASKS` says otherwise.
const TASKS: u32 = 1_000_000;
/// Actors made, unless `FERRAY_BENCH_ACTORS` says otherwise.
const ACTORS: usize = 10_000;

fn count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let exec = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("an async runtime");
    exec.block_on(async {
        let refs = count("FERRAY_BENCH_REFS", u64::from(REFS)) as u32;
        if refs > 0 {
            hold_refs(refs).await;
        }
        let tasks = count("FERRAY_BENCH_TASKS", u64::from(TASKS)) as u32;
        if tasks > 0 {
            queued_tasks(tasks).await;
        }
        let actors = count("FERRAY_BENCH_ACTORS", ACTORS as u64) as usize;
        if actors > 0 {
            live_actors(actors).await;
        }
    });
}

/// A runtime from `builder` with the `misbehave` guest loaded and one of its
/// tasks run (its compiled code and the runtime's own memory are then in
/// every baseline).
async fn misbehave(builder: ferray::RuntimeBuilder) -> (Runtime, ferray::Component) {
    let rt = builder
        .output(ferray::OutputMode::Discard)
        .build()
        .await
        .expect("a runtime");
    let m = rt
        .load_file(ferray_test_fixtures::MISBEHAVE)
        .await
        .expect("load misbehave");
    // No CPU asked: the actors' runtime has none.
    let warm = m
        .task("leaf")
        .args(&(1u64,))
        .and_then(|t| t.num_cpus(0.0))
        .and_then(|t| t.submit())
        .expect("call");
    let two: u64 = rt.get(&warm).await.expect("the warm-up task");
    assert_eq!(two, 2);
    (rt, m)
}

async fn hold_refs(n: u32) {
    let (rt, m) = misbehave(Runtime::builder()).await;
    let before = reset_peak();
    let start = Instant::now();
    let held: u32 = rt
        .get(&m.call("hold-refs", (n,)).expect("call"))
        .await
        .expect("hold-refs");
    let took = start.elapsed();
    assert_eq!(held, n);
    let peak = peak_kib();
    println!(
        "refs: a guest held {n} object refs and waited on them all in {:.2} s; peak memory {} MiB \
         ({} MiB before), {:.0} bytes per ref",
        took.as_secs_f64(),
        peak / 1024,
        before / 1024,
        (peak.saturating_sub(before) * 1024) as f64 / f64::from(n)
    );
}

async fn queued_tasks(n: u32) {
    let (rt, m) = misbehave(Runtime::builder()).await;
    let before = reset_peak();
    // The most tasks queued at once (submitted, not yet ended), sampled.
    let most = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (rt, most, stop) = (rt.clone(), most.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = rt.stats().tasks;
                let queued = t.submitted.saturating_sub(t.finished + t.failed);
                most.fetch_max(queued, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let start = Instant::now();
    let sum: u64 = rt
        .get(&m.call("nest", (n,)).expect("call"))
        .await
        .expect("nest");
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let n64 = u64::from(n);
    assert_eq!(sum, n64 * (n64 + 1) / 2);
    let peak = peak_kib();
    let most = most.load(Ordering::Relaxed).max(1);
    println!(
        "queued: a guest submitted {n} tasks and got them in {:.2} s ({:.0} tasks/s); at most {most} \
         queued at once; peak memory {} MiB ({} MiB before), {:.0} bytes per queued task",
        took.as_secs_f64(),
        f64::from(n) / took.as_secs_f64(),
        peak / 1024,
        before / 1024,
        (peak.saturating_sub(before) * 1024) as f64 / most as f64
    );
}

async fn live_actors(n: usize) {
    let (rt, m) = misbehave(Runtime::builder().num_cpus(0.0)).await;
    // One actor first, so the actors' code is in the baseline too.
    let first = m.actor("tally", (0i64,)).spawn().await.expect("an actor");
    let one: i64 = rt
        .get(&first.call("incr", (1i64,)).expect("call"))
        .await
        .expect("incr");
    assert_eq!(one, 1);
    let before = rss_kib();
    let maps_before = maps();
    let start = Instant::now();
    let mut actors = Vec::with_capacity(n);
    for i in 0..n {
        match m.actor("tally", (i as i64,)).spawn().await {
            Ok(a) => actors.push(a),
            Err(e) => {
                println!("actor {i} was refused: {e}");
                break;
            }
        }
    }
    // Every constructor has run once its actor answers a call.
    let refs: Vec<_> = actors
        .iter()
        .map(|a| a.call("incr", (1i64,)).expect("call"))
        .collect();
    let got: Vec<i64> = rt.get_all(&refs).await.expect("every actor answers");
    assert!(got.iter().enumerate().all(|(i, v)| *v == i as i64 + 1));
    let made = start.elapsed();
    let idle = rss_kib();
    let maps_idle = maps();
    let start = Instant::now();
    let refs: Vec<_> = actors
        .iter()
        .map(|a| a.call("incr", (1i64,)).expect("call"))
        .collect();
    let got: Vec<i64> = rt.get_all(&refs).await.expect("every actor answers");
    let called = start.elapsed();
    assert!(got.iter().enumerate().all(|(i, v)| *v == i as i64 + 2));
    let after = rss_kib();
    let k = actors.len().max(1) as f64;
    println!("actors: live on one node: {} of {n}", actors.len());
    println!(
        "actors: made and called once in {:.2} s ({:.0} actors/s); each called again in {:.2} s ({:.0} calls/s)",
        made.as_secs_f64(),
        k / made.as_secs_f64(),
        called.as_secs_f64(),
        k / called.as_secs_f64()
    );
    println!(
        "actors: memory (VmRSS): {} MiB before, {} MiB with the actors made and idle, {} MiB after a second call each",
        before / 1024,
        idle / 1024,
        after / 1024
    );
    println!(
        "actors: memory per idle actor (constructed, called once): {:.0} KiB",
        (idle.saturating_sub(before)) as f64 / k,
    );
    println!(
        "actors: memory mappings: {maps_before} before, {maps_idle} with the actors idle ({:.1} per actor; \
         the kernel allows {} in all, vm.max_map_count)",
        maps_idle.saturating_sub(maps_before) as f64 / k,
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap_or_default()
            .trim()
    );
}

/// The process's memory mappings (lines of /proc/self/maps).
fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Reset the process's peak memory (VmHWM) to what it holds now, and return that, in KiB.
fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

/// The process's peak memory (VmHWM) since the last reset, in KiB.
fn peak_kib() -> u64 {
    status_kib("VmHWM:")
}

/// A line of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The process's resident memory (VmRSS), in KiB.
fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}
