//! The embedding API: tasks, dependencies, wait, nested tasks, resources,
//! retries, cancellation, local mode.

use std::time::Duration;

use ferray::{Error, Runtime};

use crate::{builder, fx, load, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_return_refs_at_once_and_get_all_gathers_them() {
    let rt = runtime().await;
    let squares = load(&rt, fx::SQUARES).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_twice_is_content_addressed() {
    let rt = runtime().await;
    let a = load(&rt, fx::SQUARES).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_refs_as_arguments_are_dependencies() {
    let rt = runtime().await;
    let squares = load(&rt, fx::SQUARES).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dependency_fails_its_dependents() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let bad = m.call("trap", ("no",)).unwrap();
    let dependent = m.task("leaf").arg_ref(&bad).submit().unwrap();
    let err = rt.get::<u64>(&dependent).await.unwrap_err();
    assert!(
        matches!(err, Error::TaskFailed(ref m) if m.contains("failed")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_results_share_one_object() {
    let rt = runtime().await;
    let squares = load(&rt, fx::SQUARES).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_the_ready_ones_like_ray_wait() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_tasks_on_two_cpus_do_not_deadlock() {
    let rt = builder().num_cpus(2.0).build().await.unwrap();
    let squares = load(&rt, fx::SQUARES).await;
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
    assert_eq!(rt.stats().resources_free.num_cpus(), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_submit_nested_tasks_and_wait() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let r = m.call("nest", (20u32,)).unwrap();
    assert_eq!(rt.get::<u64>(&r).await.unwrap(), (1..=20).sum::<u64>());
    let pi = load(&rt, fx::PI).await;
    let r = pi.call("estimate", (100_000u64, 4u32)).unwrap();
    let est: f64 = rt.get(&r).await.unwrap();
    assert!((est - std::f64::consts::PI).abs() < 0.05, "{est}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infeasible_demands_are_reported_at_submit() {
    let rt = builder().resource("tpu", 1.0).build().await.unwrap();
    let squares = load(&rt, fx::SQUARES).await;
    let err = squares
        .task("heavy-compute")
        .arg(&2i64)
        .unwrap()
        .num_cpus(64.0)
        .unwrap()
        .submit()
        .unwrap_err();
    assert!(
        matches!(err, Error::Infeasible(ref m) if m.contains("CPUs")),
        "{err}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_cover_traps_only_with_retry_exceptions() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let (m, rt) = (&m, &rt);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_failures_are_retried_within_max_retries() {
    // Two instance slots, both held by actors: a task cannot instantiate,
    // a fault of the node rather than of the guest.
    let rt = builder().max_instances(2).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let a = m.actor("tally", (0i64,)).spawn().await.unwrap();
    let b = m.actor("tally", (0i64,)).spawn().await.unwrap();
    for t in [&a, &b] {
        assert_eq!(
            rt.get::<i64>(&t.call("value", ()).unwrap()).await.unwrap(),
            0
        );
    }
    // Out of retries: the system error, after max_retries more attempts.
    let r = m
        .task("leaf")
        .arg(&1u64)
        .unwrap()
        .max_retries(2)
        .submit()
        .unwrap();
    let err = rt.get::<u64>(&r).await.unwrap_err();
    assert!(matches!(err, Error::System(_)), "{err}");
    assert_eq!(rt.stats().tasks.retried, 2);
    // A slot comes back while the task is retrying: it succeeds, without
    // retry_exceptions.
    let r = m
        .task("leaf")
        .arg(&1u64)
        .unwrap()
        .max_retries(6)
        .submit()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.kill().unwrap();
    assert_eq!(rt.get::<u64>(&r).await.unwrap(), 2);
    assert!(rt.stats().tasks.retried > 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_returned_errors_are_values_unless_retried() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
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
    assert_eq!(rt.stats().tasks.retried, 2);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_is_tagged_with_the_task() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let r = m.call("shout", ("hi",)).unwrap();
    assert_eq!(rt.get::<String>(&r).await.unwrap(), "HI");
    let out = rt.take_output();
    let task = r.name().to_string();
    assert!(
        out.iter()
            .any(|l| l.source == task && l.stream == ferray::Stream::Stdout && l.line == "hi"),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|l| l.source == task && l.stream == ferray::Stream::Stderr && l.line == "hi"),
        "{out:?}"
    );
}
