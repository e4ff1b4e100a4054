//! Live actors on one node (issue 12, item 3): how many a node holds, what
//! an idle one costs in memory, and how fast they are made and called.
//!
//! An embedded runtime (the default pool of 1,000 instance slots, 125 of
//! them kept for tasks) makes [`ACTORS`] `tally` actors of the `misbehave`
//! test guest (a Rust guest built with the SDK for wasm32-wasip2): the first
//! ones take slots of the pool, the rest are allocated on demand. Then every
//! actor is called once (`incr`) and the results are checked. It prints the
//! process's resident memory (VmRSS) before and after, the memory per idle
//! actor, and the rates. A measurement, not a test: it exits 0 either way.
//!
//! Not criterion (a plain `main`): `cargo bench -p ferray-benches --bench
//! actors` (`FERRAY_BENCH_ACTORS=N` for another count).

use std::time::Instant;

use ferray::Runtime;

/// Actors made, unless `FERRAY_BENCH_ACTORS` says otherwise.
const ACTORS: usize = 10_000;

fn main() {
    let n: usize = std::env::var("FERRAY_BENCH_ACTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ACTORS);
    let exec = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("an async runtime");
    exec.block_on(async {
        let rt = Runtime::builder()
            .num_cpus(0.0)
            .output(ferray::OutputMode::Discard)
            .build()
            .await
            .expect("a runtime");
        let m = rt
            .load_file(ferray_test_fixtures::MISBEHAVE)
            .await
            .expect("load misbehave");
        // One actor first, so the component's compiled code and the
        // runtime's own memory are in the baseline.
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
        println!("live actors on one node: {} of {n}", actors.len());
        println!(
            "made and called once in {:.2} s ({:.0} actors/s); each called again in {:.2} s ({:.0} calls/s)",
            made.as_secs_f64(),
            k / made.as_secs_f64(),
            called.as_secs_f64(),
            k / called.as_secs_f64()
        );
        println!(
            "memory (VmRSS): {} MiB before, {} MiB with the actors made and idle, {} MiB after a second call each",
            before / 1024,
            idle / 1024,
            after / 1024
        );
        println!(
            "memory per idle actor (constructed, called once): {:.0} KiB",
            (idle.saturating_sub(before)) as f64 / k,
        );
        println!(
            "memory mappings: {maps_before} before, {maps_idle} with the actors idle ({:.1} per actor; \
             the kernel allows {} in all, vm.max_map_count)",
            maps_idle.saturating_sub(maps_before) as f64 / k,
            std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .unwrap_or_default()
                .trim()
        );
    });
}

/// The process's memory mappings (lines of /proc/self/maps).
fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The process's resident memory (VmRSS), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
