//! The operator's limits: ceilings a guest cannot ask past, a wall-clock
//! limit that counts blocked time, and a cap on the bytes of one call's
//! resolved arguments.

// Test bodies: a failed unwrap is the test failing.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferray::{Error, Runtime};

use crate::both::scenarios;
use crate::{builder, eventually, ferray_err, fx, load, runtime};

scenarios![
    an_object_passed_many_times_is_refused_and_the_node_goes_on,
    a_task_blocked_past_its_time_limit_is_stopped,
];

/// The amplification attack: one 1 MiB object passed as an argument 10,000
/// times (10 GiB once joined) is that task's clear error; the node stays
/// up and runs the next call.
async fn an_object_passed_many_times_is_refused_and_the_node_goes_on(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let obj = rt.put(&vec![7u8; 1 << 20]).await.unwrap();
    let mut task = m.task("measure");
    for _ in 0..10_000 {
        task = task.arg_ref(&obj);
    }
    let err = rt
        .get::<(u32, u64)>(&task.submit().unwrap())
        .await
        .expect_err("arguments over the limit");
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("arguments take more than")),
        "{err:?}"
    );
    let ok = m.task("measure").arg_ref(&obj).submit().unwrap();
    assert_eq!(rt.get::<(u32, u64)>(&ok).await.unwrap(), (1 << 20, 7 << 20));
}

/// A task waiting in `get` is stopped at its wall-clock limit, though it
/// runs no wasm while it waits.
async fn a_task_blocked_past_its_time_limit_is_stopped(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let r = m
        .task("fan-out")
        .args(&(1u32, 4_000u32))
        .unwrap()
        .timeout(Duration::from_millis(500))
        .submit()
        .unwrap();
    let err = rt.get::<Vec<i64>>(&r).await.expect_err("stopped");
    assert!(
        matches!(&err, Error::TimeLimit(m) if m.contains("blocked in host calls included")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_past_a_ceiling_is_refused_at_submit() {
    let rt = builder()
        .max_task_memory(64 << 20)
        .max_task_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let squares = load(&rt, fx::SQUARES).await;
    let err = squares
        .task("heavy-compute")
        .args(&(3i64,))
        .unwrap()
        .memory(128 << 20)
        .submit()
        .expect_err("memory over the ceiling");
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("memory")),
        "{err:?}"
    );
    let err = squares
        .task("heavy-compute")
        .args(&(3i64,))
        .unwrap()
        .timeout(Duration::from_secs(2))
        .submit()
        .expect_err("time over the ceiling");
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("time")),
        "{err:?}"
    );
    let counter = load(&rt, fx::COUNTER).await;
    let err = counter
        .actor("counter", (0i64,))
        .memory(128 << 20)
        .spawn()
        .await
        .expect_err("an actor over the ceiling");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // Within the ceilings, and with none asked for.
    let r = squares
        .task("heavy-compute")
        .args(&(3i64,))
        .unwrap()
        .memory(64 << 20)
        .submit()
        .unwrap();
    assert_eq!(rt.get::<i64>(&r).await.unwrap(), 9);
    // A task that asks for no limit gets the ceiling.
    let m = load(&rt, fx::MISBEHAVE).await;
    let err = rt
        .get::<u64>(&m.call("spin", ()).unwrap())
        .await
        .expect_err("stopped at the ceiling");
    assert!(matches!(err, Error::TimeLimit(_)), "{err:?}");

    let rt = builder().max_task_fuel(1_000_000).build().await.unwrap();
    let squares = load(&rt, fx::SQUARES).await;
    let err = squares
        .task("heavy-compute")
        .args(&(3i64,))
        .unwrap()
        .fuel(2_000_000)
        .submit()
        .expect_err("fuel over the ceiling");
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("fuel")),
        "{err:?}"
    );
}

#[test]
fn the_command_line_sets_the_ceilings() {
    let err = ferray_err(&["run", "--max-task-timeout", "1s", fx::MISBEHAVE, "spin"]);
    assert!(
        err.contains("time limit") || err.contains("ran longer"),
        "{err}"
    );
    let bytes = format!("[{}]", vec!["1"; 2_000].join(", "));
    let err = ferray_err(&[
        "run",
        "--max-argument-bytes",
        "1KiB",
        fx::MISBEHAVE,
        "measure",
        &bytes,
    ]);
    assert!(err.contains("arguments take more than 1024 bytes"), "{err}");
}

/// Actors take instance slots of the pool until only the share kept for
/// tasks is left; past that, their instances are allocated on demand, so a
/// node with a pool of 64 holds hundreds of actors, each with its own
/// state, and tasks still run (their share of the pool is kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_past_the_instance_pool_are_allocated_on_demand_and_tasks_still_run() {
    let rt = builder().max_instances(64).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let mut made = Vec::new();
    for i in 0..300i64 {
        made.push(m.actor("tally", (i * 10,)).spawn().await.unwrap());
    }
    // Every actor works and keeps its own state.
    let refs: Vec<_> = made
        .iter()
        .map(|a| a.call("incr", (1i64,)).unwrap())
        .collect();
    let got: Vec<i64> = rt.get_all(&refs).await.unwrap();
    assert_eq!(got, (0..300).map(|i| i * 10 + 1).collect::<Vec<i64>>());
    // Tasks still run, many at once.
    let squares = load(&rt, fx::SQUARES).await;
    let refs: Vec<_> = (0..40i64)
        .map(|i| squares.call("heavy-compute", (i,)).unwrap())
        .collect();
    let got: Vec<i64> = rt.get_all(&refs).await.unwrap();
    assert_eq!(got, (0..40).map(|i| i * i).collect::<Vec<i64>>());
    // An actor on demand grows its memory past what it reserved to grow
    // into (32 MiB): its memory moves, and its state stays.
    let last = made.last().unwrap();
    let held: u32 = rt.get(&last.call("hold", (48u32,)).unwrap()).await.unwrap();
    assert_eq!(held, 48);
    let held: u32 = rt.get(&last.call("hold", (40u32,)).unwrap()).await.unwrap();
    assert_eq!(held, 88);
    let v: i64 = rt.get(&last.call("value", ()).unwrap()).await.unwrap();
    assert_eq!(v, 2991);
    // An actor on demand traps like any other: the call fails, the node goes on.
    let err = rt
        .get::<i64>(&last.call("crash", ()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Trap(_)), "{err}");
    for a in made.drain(..) {
        a.kill().unwrap();
    }
    // The pool's slots come back: new actors start.
    eventually("a slot coming back", || m.actor("tally", (0i64,)).spawn()).await;
}

/// The linear memories of all a node's instances together stay within the
/// node's memory: an actor holding most of it makes a task that would grow
/// past the rest fail as a fault of the node (never the process), and new
/// actors are refused; once the actor is gone both work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_together_stay_within_the_nodes_memory() {
    let rt = builder()
        .memory(72 << 20)
        .memory_limit(70 << 20)
        .build()
        .await
        .unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let big = m.actor("tally", (0i64,)).spawn().await.unwrap();
    assert_eq!(
        rt.get::<u32>(&big.call("hold", (64u32,)).unwrap())
            .await
            .unwrap(),
        64
    );
    // Each task is within its own 70 MiB cap, but not within what the node has left.
    let err = rt
        .get::<u32>(
            &m.task("hog")
                .arg(&16u32)
                .unwrap()
                .max_retries(1)
                .submit()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::System(ref s) if s.contains("guest memory is all in use")),
        "{err}"
    );
    let err = m.actor("tally", (1i64,)).spawn().await.unwrap_err();
    assert!(err.to_string().contains("guest memory is taken"), "{err}");
    // Small work still fits beside the actor.
    assert_eq!(
        rt.get::<u32>(&m.call("hog", (2u32,)).unwrap())
            .await
            .unwrap(),
        2
    );
    big.kill().unwrap();
    let got = eventually("memory coming back", || async {
        rt.get::<u32>(&m.call("hog", (16u32,))?).await
    })
    .await;
    assert_eq!(got, 16);
    m.actor("tally", (2i64,)).spawn().await.unwrap();
}

/// A dynamic call makes one wasmtime value per list element: the host
/// counts that memory against the node's before decoding, so a large
/// `list<s64>` argument is refused with a clear error on a small node, and
/// passes on one with room. A function of bytes to bytes (`list<u8>` in,
/// `list<u8>` out) is called through wasmtime's typed API, which copies the
/// bytes without a value per byte: the same 4 MiB pass on the small node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_arguments_count_against_the_nodes_memory() {
    let rt = builder().memory(64 << 20).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    // 4 Mi elements of one byte each on the wire.
    let big = vec![7i64; 4 << 20];
    let err = rt
        .get::<i64>(&m.call("sum-list", (big.clone(),)).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref s) if s.contains("as an object")),
        "{err}"
    );
    // Smaller arguments still pass there, and large ones on a node with room.
    let small = vec![3i64; 256 << 10];
    let got = rt
        .get::<i64>(&m.call("sum-list", (small.clone(),)).unwrap())
        .await
        .unwrap();
    assert_eq!(got, 3 * (256 << 10));
    let bytes = vec![7u8; 4 << 20];
    let got = rt
        .get::<Vec<u8>>(&m.call("echo-bytes", (bytes.clone(),)).unwrap())
        .await
        .unwrap();
    assert_eq!(got, bytes, "bytes to bytes need no values");
    let rt = builder().memory(1 << 30).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let got = rt
        .get::<i64>(&m.call("sum-list", (big.clone(),)).unwrap())
        .await
        .unwrap();
    assert_eq!(got, 7 * (4 << 20));
}

/// What one job may hold is capped by whoever runs the runtime: tasks in
/// flight, live actors and bytes put. Past a cap the submission is refused
/// with `invalid-argument`, and the job's other work goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_held_to_its_caps() {
    let rt = builder()
        .job_caps(ferray::JobCaps {
            tasks: Some(2),
            actors: Some(1),
            put_bytes: Some(1000),
            log_bytes: None,
        })
        .build()
        .await
        .unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let spins: Vec<_> = (0..2)
        .map(|_| {
            m.task("spin")
                .timeout(Duration::from_secs(60))
                .submit()
                .unwrap()
        })
        .collect();
    let err = m.call("leaf", (1u64,)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref s) if s.contains("2 tasks and actor calls in flight")),
        "{err}"
    );
    for s in &spins {
        rt.cancel(s).unwrap();
        assert!(rt.get::<u64>(s).await.is_err());
    }
    // Once they are gone, tasks run again. A guest's submissions count too:
    // `nest` is one task in flight, its first leaf a second, its next refused.
    let r = eventually("a place for a task", || async { m.call("leaf", (1u64,)) }).await;
    assert_eq!(rt.get::<u64>(&r).await.unwrap(), 2);
    // (A finished task leaves the count just after its result is ready.)
    let nest = eventually("a place for a task", || async { m.call("nest", (4u32,)) }).await;
    let err = rt.get::<u64>(&nest).await.unwrap_err();
    assert!(
        err.to_string().contains("tasks and actor calls in flight"),
        "{err}"
    );

    let a = m.actor("tally", (0i64,)).spawn().await.unwrap();
    let err = m.actor("tally", (1i64,)).spawn().await.unwrap_err();
    assert!(err.to_string().contains("1 live actors"), "{err}");
    a.kill().unwrap();
    eventually("a place for an actor", || m.actor("tally", (2i64,)).spawn()).await;

    rt.put(&vec![1u8; 600]).await.unwrap();
    let err = rt.put(&vec![1u8; 600]).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref s) if s.contains("1000 bytes of puts")),
        "{err}"
    );
    rt.put(&vec![1u8; 100]).await.unwrap();
}

/// A guest may hold many more handles than wasmtime's default of 100,000:
/// two per KiB of its memory cap (a million refs held and lent to one
/// `wait` for the default 1 GiB). Past that, a clear trap and the runtime
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_holds_and_waits_on_hundreds_of_thousands_of_refs() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let held = rt
        .get::<u32>(&m.call("hold-refs", (250_000u32,)).unwrap())
        .await
        .unwrap();
    assert_eq!(held, 250_000);
    // A smaller cap holds fewer.
    let err = rt
        .get::<u32>(
            &m.task("hold-refs")
                .arg(&150_000u32)
                .unwrap()
                .memory(32 << 20)
                .submit()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("as many handles"), "{err}");
    assert_eq!(
        rt.get::<u32>(&m.call("hold-refs", (10u32,)).unwrap())
            .await
            .unwrap(),
        10
    );
}
