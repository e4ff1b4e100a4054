//! The embedding API: tasks, dependencies, wait, nested tasks, resources,
//! retries, cancellation, local mode.
//!
//! The scenarios listed here run both embedded and on a cluster (`both.rs`);
//! the `#[tokio::test]`s below them need settings of their own (a cache
//! directory, custom resources, one CPU, instance slots, local mode) and run
//! embedded only.

// The scenarios are plain `async fn`s, run by `both.rs`'s tests: unwrap as
// in a `#[test]`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferray::{Error, Runtime};

use crate::both::scenarios;
use crate::{builder, fx, load};

scenarios![
    tasks_return_refs_at_once_and_get_all_gathers_them,
    loading_twice_is_content_addressed,
    object_refs_as_arguments_are_dependencies,
    a_failed_dependency_fails_its_dependents,
    equal_results_share_one_object,
    wait_returns_the_ready_ones_like_ray_wait,
    wait_returns_at_most_num_returns_in_the_order_given,
    nested_tasks_on_two_cpus_do_not_deadlock,
    guests_submit_nested_tasks_and_wait,
    demands_larger_than_every_node_are_infeasible,
    each_failure_is_reported_as_its_kind,
    retries_cover_traps_only_with_retry_exceptions,
    guest_returned_errors_are_values_unless_retried,
    cancelled_tasks_fail_and_give_their_cpus_back,
    guest_output_is_tagged_with_the_task,
];

async fn tasks_return_refs_at_once_and_get_all_gathers_them(rt: &Runtime) {
    let squares = load(rt, fx::SQUARES).await;
    let refs = (0..10)
        .map(|i| squares.call("heavy-compute", (i as i64,)))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let values: Vec<i64> = rt.get_all(&refs).await.unwrap();
    assert_eq!(values, (0..10).map(|i| i * i).collect::<Vec<i64>>());
    // The driver function of the example, through the API.
    let r = squares.call("run", (5u32,)).unwrap();
    assert_eq!(rt.get::<Vec<i64>>(&r).await.unwrap(), vec![0, 1, 4, 9, 16]);
}

async fn loading_twice_is_content_addressed(rt: &Runtime) {
    let a = load(rt, fx::SQUARES).await;
    let compiled = rt.stats().host.compiled + rt.stats().host.disk_cache_hits;
    let b = rt
        .load_bytes(&std::fs::read(fx::SQUARES).unwrap())
        .await
        .unwrap();
    assert_eq!(a.id(), b.id());
    assert_eq!(
        rt.stats().host.compiled + rt.stats().host.disk_cache_hits,
        compiled
    );
}

/// Embedded only: two runtimes, each with the cache directory given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_code_is_cached_on_disk_across_runtimes() {
    let cache = tempfile::tempdir().unwrap();
    let first = Runtime::builder()
        .cache_dir(Some(cache.path().to_path_buf()))
        .build()
        .await
        .unwrap();
    load(&first, fx::SQUARES).await;
    assert_eq!(first.stats().host.compiled, 1);
    let second = Runtime::builder()
        .cache_dir(Some(cache.path().to_path_buf()))
        .build()
        .await
        .unwrap();
    let sq = load(&second, fx::SQUARES).await;
    assert_eq!(second.stats().host.compiled, 0);
    assert_eq!(second.stats().host.disk_cache_hits, 1);
    let r = sq.call("heavy-compute", (4i64,)).unwrap();
    assert_eq!(second.get::<i64>(&r).await.unwrap(), 16);
}

async fn object_refs_as_arguments_are_dependencies(rt: &Runtime) {
    let squares = load(rt, fx::SQUARES).await;
    let seven = rt.put(&7i64).await.unwrap();
    let a = squares
        .task("heavy-compute")
        .arg_ref(&seven)
        .submit()
        .unwrap();
    let b = squares.task("heavy-compute").arg_ref(&a).submit().unwrap();
    assert_eq!(rt.get::<i64>(&b).await.unwrap(), 2401);
    assert_eq!(rt.get::<i64>(&a).await.unwrap(), 49);
}

async fn a_failed_dependency_fails_its_dependents(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let bad = m.call("trap", ("no",)).unwrap();
    let dependent = m.task("leaf").arg_ref(&bad).submit().unwrap();
    let err = rt.get::<u64>(&dependent).await.unwrap_err();
    assert!(
        matches!(err, Error::TaskFailed(ref m) if m.contains("failed")),
        "{err}"
    );
}

async fn equal_results_share_one_object(rt: &Runtime) {
    let squares = load(rt, fx::SQUARES).await;
    let a = squares.call("heavy-compute", (3i64,)).unwrap();
    let b = squares.call("heavy-compute", (-3i64,)).unwrap();
    assert_eq!(
        rt.get::<i64>(&a).await.unwrap(),
        rt.get::<i64>(&b).await.unwrap()
    );
    assert_eq!(a.content_id().unwrap(), b.content_id().unwrap());
    assert_eq!(
        rt.object_store().ref_count(&a.content_id().unwrap()),
        Some(2)
    );
}

async fn wait_returns_the_ready_ones_like_ray_wait(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let quick = m.call("leaf", (1u64,)).unwrap();
    let slow = m
        .task("spin")
        .timeout(Duration::from_secs(30))
        .submit()
        .unwrap();
    let (ready, not_ready) = rt.wait(&[slow.clone(), quick.clone()], 1, None).await;
    assert_eq!(ready, vec![quick.clone()]);
    assert_eq!(not_ready, vec![slow.clone()]);
    // A timeout returns what is ready by then.
    let (ready, not_ready) = rt
        .wait(&[slow.clone(), quick], 2, Some(Duration::from_millis(100)))
        .await;
    assert_eq!(ready.len(), 1);
    assert_eq!(not_ready, vec![slow.clone()]);
    rt.cancel(&slow).unwrap();
}

/// More ready than asked for: Ray's `ray.wait` returns `num_returns` of
/// them, the first in the order given, and the rest as not ready.
async fn wait_returns_at_most_num_returns_in_the_order_given(rt: &Runtime) {
    let squares = load(rt, fx::SQUARES).await;
    let refs: Vec<_> = (0..5i64)
        .map(|i| squares.call("heavy-compute", (i,)).unwrap())
        .collect();
    rt.get_all::<i64>(&refs).await.unwrap();
    let (ready, not_ready) = rt.wait(&refs, 2, None).await;
    assert_eq!(ready, refs[..2].to_vec());
    assert_eq!(not_ready, refs[2..].to_vec());
    // From a guest too: `wait` over 20 finished subtasks, 3 asked for.
    let m = load(rt, fx::MISBEHAVE).await;
    let r = m.call("wait-some", (20u32, 3u32)).unwrap();
    assert_eq!(rt.get::<(u32, u32)>(&r).await.unwrap(), (3, 17));
}

async fn nested_tasks_on_two_cpus_do_not_deadlock(rt: &Runtime) {
    let squares = load(rt, fx::SQUARES).await;
    // 100 tasks, each blocked in `get` on 5 subtasks: blocked tasks must give
    // their CPU back, or the subtasks never run.
    let refs = (0..100)
        .map(|_| squares.call("run", (5u32,)))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let all = tokio::time::timeout(Duration::from_secs(120), rt.get_all::<Vec<i64>>(&refs))
        .await
        .expect("deadlock: nested tasks did not finish")
        .unwrap();
    assert!(all.iter().all(|v| v == &vec![0, 1, 4, 9, 16]));
    if !rt.is_cluster() {
        // A connected client's `stats()` are its own (it holds no CPUs).
        assert_eq!(rt.stats().resources_free.num_cpus(), 2.0);
    }
}

async fn guests_submit_nested_tasks_and_wait(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let r = m.call("nest", (20u32,)).unwrap();
    assert_eq!(rt.get::<u64>(&r).await.unwrap(), (1..=20).sum::<u64>());
    let pi = load(rt, fx::PI).await;
    let r = pi.call("estimate", (100_000u64, 4u32)).unwrap();
    let est: f64 = rt.get(&r).await.unwrap();
    assert!((est - std::f64::consts::PI).abs() < 0.05, "{est}");
}

/// More CPUs than any node has. Embedded, `submit` says so; on a cluster
/// (whose nodes may still join) the task's ref fails with it (ARCHITECTURE.md,
/// the failure models): either way an `Infeasible` naming the CPUs.
async fn demands_larger_than_every_node_are_infeasible(rt: &Runtime) {
    let squares = load(rt, fx::SQUARES).await;
    let submitted = squares
        .task("heavy-compute")
        .arg(&2i64)
        .unwrap()
        .num_cpus(64.0)
        .unwrap()
        .submit();
    let err = match submitted {
        Err(e) => e,
        Ok(r) => {
            assert!(rt.is_cluster(), "embedded, submit itself fails");
            rt.get::<i64>(&r).await.unwrap_err()
        }
    };
    assert!(
        matches!(err, Error::Infeasible(ref m) if m.contains("CPU")),
        "{err}"
    );
    // The runtime carries on.
    let r = squares.call("heavy-compute", (2i64,)).unwrap();
    assert_eq!(rt.get::<i64>(&r).await.unwrap(), 4);
}

/// A submission's error, or else its result's: some errors may show at
/// either (embedded, a runtime checks more before it takes a task).
async fn outcome(rt: &Runtime, submitted: Result<ferray::ObjectRef, Error>) -> Result<u64, Error> {
    rt.get::<u64>(&submitted?).await
}

/// Every kind of task failure reaches the caller as that kind, and the
/// runtime carries on. (Fuel needs a runtime started with fuel metering:
/// `sandbox.rs`.)
async fn each_failure_is_reported_as_its_kind(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let err = outcome(rt, m.call("trap", ("boom",))).await.unwrap_err();
    assert!(
        matches!(err, Error::Trap(ref msg) if msg.contains("boom")),
        "{err}"
    );
    let spin = m.task("spin").timeout(Duration::from_millis(300)).submit();
    let err = outcome(rt, spin).await.unwrap_err();
    assert!(matches!(err, Error::TimeLimit(_)), "{err}");
    let err = outcome(rt, m.call("no-such-function", (1u64,)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    let err = outcome(rt, m.call("leaf", ("not a number",)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let r = m.call("leaf", (1u64,)).unwrap();
    assert_eq!(rt.get::<u64>(&r).await.unwrap(), 2);
}

/// Embedded only: a custom resource of the runtime. (On a cluster, a node's
/// `--resources`: `cluster.rs`'s `custom_resources_steer_tasks...`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infeasible_demands_are_reported_at_submit() {
    let rt = builder().resource("tpu", 1.0).build().await.unwrap();
    let squares = load(&rt, fx::SQUARES).await;
    let err = squares
        .task("heavy-compute")
        .arg(&2i64)
        .unwrap()
        .resource("tpu", 2.0)
        .unwrap()
        .submit()
        .unwrap_err();
    assert!(
        matches!(err, Error::Infeasible(ref m) if m.contains("tpu")),
        "{err}"
    );
    // One TPU is there: fine.
    let r = squares
        .task("heavy-compute")
        .arg(&2i64)
        .unwrap()
        .resource("tpu", 1.0)
        .unwrap()
        .submit()
        .unwrap();
    assert_eq!(rt.get::<i64>(&r).await.unwrap(), 4);
}

/// Embedded only: a custom resource of the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_limit_how_many_tasks_run_at_once() {
    // One "slot": two spinning tasks that each hold it cannot overlap, so the
    // second is still pending while the first runs.
    let rt = builder().resource("slot", 1.0).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let spin = || {
        m.task("spin")
            .num_cpus(0.0)
            .unwrap()
            .resource("slot", 1.0)
            .unwrap()
            .timeout(Duration::from_millis(400))
            .submit()
            .unwrap()
    };
    let a = spin();
    let b = spin();
    let (ready, _) = rt.wait(&[a.clone(), b.clone()], 1, None).await;
    assert_eq!(ready.len(), 1);
    assert!(!b.is_ready() || !a.is_ready(), "both ran at once");
    assert!(matches!(rt.get::<u64>(&a).await, Err(Error::TimeLimit(_))));
    assert!(matches!(rt.get::<u64>(&b).await, Err(Error::TimeLimit(_))));
}

async fn retries_cover_traps_only_with_retry_exceptions(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let m = &m;
    let flaky = |fails: u32, retries: u32, exceptions: bool| async move {
        let tally = m.actor("tally", (0i64,)).spawn().await.unwrap();
        let r = m
            .task("flaky")
            .args(&(tally.id().0, fails))
            .unwrap()
            .max_retries(retries)
            .retry_exceptions(exceptions)
            .submit()
            .unwrap();
        let got = rt.get::<u32>(&r).await;
        let attempts: i64 = rt.get(&tally.call("value", ()).unwrap()).await.unwrap();
        (got, attempts)
    };
    // Fails twice, then succeeds on the third attempt.
    let (got, attempts) = flaky(2, 3, true).await;
    assert_eq!(got.unwrap(), 3);
    assert_eq!(attempts, 3);
    // Out of retries: the last error.
    let (got, attempts) = flaky(5, 2, true).await;
    let err = got.unwrap_err();
    assert!(
        matches!(err, Error::Trap(ref m) if m.contains("flaky failure 3")),
        "{err}"
    );
    assert_eq!(attempts, 3);
    // Without retry_exceptions a trap is not retried at all.
    let (got, attempts) = flaky(1, 3, false).await;
    assert!(matches!(got, Err(Error::Trap(_))));
    assert_eq!(attempts, 1);
}

/// Embedded only: the runtime's retry counter, with system failures
/// injected (the `testing` feature: a node's faults, not the guest's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_failures_are_retried_within_max_retries() {
    let rt = builder().fail_attempts(3).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    // Out of retries: the system error, after max_retries more attempts.
    let r = m
        .task("leaf")
        .arg(&1u64)
        .unwrap()
        .max_retries(2)
        .submit()
        .unwrap();
    let err = rt.get::<u64>(&r).await.unwrap_err();
    assert!(
        matches!(err, Error::System(ref m) if m.contains("injected")),
        "{err}"
    );
    assert_eq!(rt.stats().tasks.retried, 2);
    // Retries cover system failures without retry_exceptions: the attempt
    // after the injected failure succeeds.
    let rt = builder().fail_attempts(3).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let r = m
        .task("leaf")
        .arg(&1u64)
        .unwrap()
        .max_retries(6)
        .submit()
        .unwrap();
    assert_eq!(rt.get::<u64>(&r).await.unwrap(), 2);
    assert_eq!(rt.stats().tasks.retried, 3);
}

async fn guest_returned_errors_are_values_unless_retried(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let r = m.call("fail", ("bad",)).unwrap();
    assert_eq!(
        rt.get::<Result<u32, String>>(&r).await.unwrap(),
        Err("bad".to_string())
    );
    let r = m
        .task("fail")
        .arg(&"bad")
        .unwrap()
        .retry_exceptions(true)
        .max_retries(2)
        .submit()
        .unwrap();
    assert_eq!(
        rt.get::<Result<u32, String>>(&r).await.unwrap(),
        Err("bad".to_string())
    );
    if !rt.is_cluster() {
        // A connected client's `stats()` count what it ran itself: on a
        // cluster the retries happen on the workers. (Retries that are seen
        // from outside, both ways: `retries_cover_traps_only_with_...`.)
        assert_eq!(rt.stats().tasks.retried, 2);
    }
}

/// Cancelling running tasks, tasks waiting for a CPU and tasks waiting for
/// a dependency: each ref fails with `Cancelled` and the CPUs come back.
async fn cancelled_tasks_fail_and_give_their_cpus_back(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    // More spinning tasks than CPUs (2 embedded, 4 on the test cluster): the
    // first run, the others wait for a CPU. Each would spin for 2 minutes.
    let spins: Vec<_> = (0..8)
        .map(|_| {
            m.task("spin")
                .timeout(Duration::from_secs(120))
                .submit()
                .unwrap()
        })
        .collect();
    let dependent = m.task("leaf").arg_ref(&spins[0]).submit().unwrap();
    let (ready, _) = rt.wait(&spins, 1, Some(Duration::from_millis(300))).await;
    assert!(ready.is_empty(), "a spin ended by itself");
    // Last submitted first, one at a time: a task cancelled just as a
    // finishing one hands it its CPU keeps that CPU (a known bug, see
    // `cancelling_a_task_as_it_is_granted_its_cpu_...`), so no task is
    // cancelled while one queued behind it for a CPU is still there.
    for r in [&dependent].into_iter().chain(spins.iter().rev()) {
        rt.cancel(r).unwrap();
        let got = rt.get::<u64>(r).await;
        assert!(matches!(got, Err(Error::Cancelled(_))), "{got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The CPUs came back: new work runs, long before a spin would have ended.
    let refs: Vec<_> = (0..8u64).map(|i| m.call("leaf", (i,)).unwrap()).collect();
    let got = tokio::time::timeout(Duration::from_secs(60), rt.get_all::<u64>(&refs))
        .await
        .expect("cancelled tasks still hold the CPUs")
        .unwrap();
    assert_eq!(got, (1..=8).collect::<Vec<u64>>());
    if !rt.is_cluster() {
        // Every CPU (a connected client's `stats()` are its own).
        assert!(cpus_come_free(rt, 2.0).await, "{:?}", rt.stats());
    }
}

/// Poll until the runtime has `cpus` CPUs free (false after 10 s).
async fn cpus_come_free(rt: &Runtime, cpus: f64) -> bool {
    for _ in 0..1000 {
        if rt.stats().resources_free.num_cpus() == cpus {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Embedded only (`stats()`). When a running task is cancelled, admission
/// hands its CPU to the next waiter; if that waiter is being cancelled too,
/// the grant must come back (it was once lost: the node had a CPU less for
/// good). Cancelling 8 spinning tasks on 2 CPUs in submission order lost one
/// or both CPUs in most runs. The same admission runs on every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_tasks_that_wait_for_a_cpu_gives_every_cpu_back() {
    let rt = builder().num_cpus(2.0).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    for round in 0..3 {
        let spins: Vec<_> = (0..8)
            .map(|_| {
                m.task("spin")
                    .timeout(Duration::from_secs(60))
                    .submit()
                    .unwrap()
            })
            .collect();
        assert!(cpus_come_free(&rt, 0.0).await, "the spins never started");
        for r in &spins {
            rt.cancel(r).unwrap();
        }
        for r in &spins {
            let got = rt.get::<u64>(r).await;
            assert!(matches!(got, Err(Error::Cancelled(_))), "{got:?}");
        }
        assert!(
            cpus_come_free(&rt, 2.0).await,
            "round {round}: CPUs lost for good: {:?}",
            rt.stats()
        );
    }
}

/// Embedded only: one CPU, and `stats()` to see `spin` holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_and_pending_tasks_can_be_cancelled() {
    let rt = builder().num_cpus(1.0).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let running = m.call("spin", ()).unwrap();
    // Once spin holds the only CPU, leaf has to wait.
    for _ in 0..1000 {
        if rt.stats().resources_free.num_cpus() == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pending = m.call("leaf", (1u64,)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_ready(), "one CPU: leaf waits for spin");
    rt.cancel(&pending).unwrap();
    rt.cancel(&running).unwrap();
    assert!(matches!(
        rt.get::<u64>(&running).await,
        Err(Error::Cancelled(_))
    ));
    assert!(matches!(
        rt.get::<u64>(&pending).await,
        Err(Error::Cancelled(_))
    ));
    // The CPU came back: new work runs.
    let r = m.call("leaf", (41u64,)).unwrap();
    assert_eq!(rt.get::<u64>(&r).await.unwrap(), 42);
}

/// Embedded only: local mode is a setting of the embedded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_runs_in_submission_order() {
    let rt = builder().local_mode(true).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let refs = (0..5)
        .map(|i| m.call("shout", (format!("line {i}"),)))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let _: Vec<String> = rt.get_all(&refs).await.unwrap();
    let lines: Vec<String> = rt
        .take_output()
        .into_iter()
        .filter(|l| l.stream == ferray::Stream::Stdout)
        .map(|l| l.line)
        .collect();
    assert_eq!(
        lines,
        (0..5).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    // Nested tasks run inline.
    let squares = load(&rt, fx::SQUARES).await;
    let r = squares.call("run", (4u32,)).unwrap();
    assert_eq!(rt.get::<Vec<i64>>(&r).await.unwrap(), vec![0, 1, 4, 9]);
}

async fn guest_output_is_tagged_with_the_task(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let r = m.call("shout", ("hi",)).unwrap();
    assert_eq!(rt.get::<String>(&r).await.unwrap(), "HI");
    let out = rt.take_output();
    // The source names the task; on a cluster its node follows
    // (`task-N, node-M`).
    let task = r.name().to_string();
    let from_task = |l: &ferray::OutputLine| l.source.split(", ").next() == Some(task.as_str());
    for stream in [ferray::Stream::Stdout, ferray::Stream::Stderr] {
        assert!(
            out.iter()
                .any(|l| from_task(l) && l.stream == stream && l.line == "hi"),
            "{out:?}"
        );
    }
}
