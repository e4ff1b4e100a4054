//! Actors: exported WIT resources with their own store; calls in order;
//! restarts after a crash; kill; handles passed to tasks. Every test here is
//! a scenario of `both.rs`: it runs embedded and on a cluster.

// The scenarios are plain `async fn`s, run by `both.rs`'s tests: unwrap as
// in a `#[test]`.
#![allow(clippy::unwrap_used)]

use ferray::{Error, Runtime};

use crate::both::scenarios;
use crate::{fx, load};

scenarios![
    calls_run_one_at_a_time_in_submission_order,
    actor_handles_pass_to_tasks,
    a_crashed_actor_restarts_then_dies_when_out_of_restarts,
    an_actor_without_restarts_dies_at_its_first_crash,
    killed_actors_fail_their_calls,
    bad_actor_calls_are_errors_and_the_actor_lives_on,
    object_refs_are_arguments_of_constructors_and_calls,
    a_resource_exported_at_the_top_level_is_an_actor_class,
];

/// A component may export a resource and its functions at its top level,
/// outside any interface (WIT cannot write that world; the component model
/// can): its signatures are read from the bytes all the same.
async fn a_resource_exported_at_the_top_level_is_an_actor_class(rt: &Runtime) {
    let c = rt
        .load_bytes(ferray::bench::BENCH_COMPONENT_WAT.as_bytes())
        .await
        .unwrap();
    let class = c.info().class("counter").unwrap();
    assert_eq!(
        class.methods.keys().collect::<Vec<_>>(),
        ["incr", "small-value"]
    );
    assert!(
        c.info()
            .export_lines()
            .contains(&"small-value: func() -> u32".to_string()),
        "{:?}",
        c.info().export_lines()
    );
    let counter = c.actor("counter", (40i64,)).spawn().await.unwrap();
    let r = counter.call("incr", (2i64,)).unwrap();
    assert_eq!(rt.get::<i64>(&r).await.unwrap(), 42);
}

async fn calls_run_one_at_a_time_in_submission_order(rt: &Runtime) {
    let c = load(rt, fx::COUNTER).await;
    let counter = c.actor("counter", (10i64,)).spawn().await.unwrap();
    let refs = (1..=50)
        .map(|_| counter.call("incr", (1i64,)))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let got: Vec<i64> = rt.get_all(&refs).await.unwrap();
    assert_eq!(got, (11..=60).collect::<Vec<i64>>());
    // The full name works too.
    let counter2 = c.actor("api.counter", (0i64,)).spawn().await.unwrap();
    assert_eq!(
        rt.get::<i64>(&counter2.call("incr", (5i64,)).unwrap())
            .await
            .unwrap(),
        5
    );
}

async fn actor_handles_pass_to_tasks(rt: &Runtime) {
    let c = load(rt, fx::COUNTER).await;
    let counter = c.actor("counter", (0i64,)).spawn().await.unwrap();
    let refs = (1..=10)
        .map(|by| c.call("bump", (counter.id().0, by as i64)))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let _: Vec<i64> = rt.get_all(&refs).await.unwrap();
    assert_eq!(
        rt.get::<i64>(&counter.call("value", ()).unwrap())
            .await
            .unwrap(),
        55
    );
    // And the example's own driver, which creates its actor from inside a task.
    assert_eq!(
        rt.get::<i64>(&c.call("run", (10u32,)).unwrap())
            .await
            .unwrap(),
        55
    );
}

async fn a_crashed_actor_restarts_then_dies_when_out_of_restarts(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let tally = m
        .actor("tally", (100i64,))
        .max_restarts(2)
        .spawn()
        .await
        .unwrap();
    assert_eq!(
        rt.get::<i64>(&tally.call("incr", (5i64,)).unwrap())
            .await
            .unwrap(),
        105
    );
    for _ in 0..2 {
        let err = rt
            .get::<i64>(&tally.call("crash", ()).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Trap(_)), "{err}");
        // Restarted: the constructor ran again, so the state is back to 100.
        assert_eq!(
            rt.get::<i64>(&tally.call("value", ()).unwrap())
                .await
                .unwrap(),
            100
        );
    }
    // Third crash: no restarts left.
    let err = rt
        .get::<i64>(&tally.call("crash", ()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Trap(_)), "{err}");
    let err = rt
        .get::<i64>(&tally.call("value", ()).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ActorDied(ref m) if m.contains("no restarts left")),
        "{err}"
    );
}

async fn an_actor_without_restarts_dies_at_its_first_crash(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let tally = m.actor("tally", (0i64,)).spawn().await.unwrap();
    let crash = tally.call("crash", ()).unwrap();
    let after = tally.call("incr", (1i64,)).unwrap();
    assert!(matches!(rt.get::<i64>(&crash).await, Err(Error::Trap(_))));
    assert!(matches!(
        rt.get::<i64>(&after).await,
        Err(Error::ActorDied(_))
    ));
}

async fn killed_actors_fail_their_calls(rt: &Runtime) {
    let c = load(rt, fx::COUNTER).await;
    let counter = c.actor("counter", (0i64,)).spawn().await.unwrap();
    assert_eq!(
        rt.get::<i64>(&counter.call("incr", (1i64,)).unwrap())
            .await
            .unwrap(),
        1
    );
    counter.kill().unwrap();
    let err = rt
        .get::<i64>(&counter.call("incr", (1i64,)).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ActorDied(ref m) if m.contains("killed")),
        "{err}"
    );
}

async fn bad_actor_calls_are_errors_and_the_actor_lives_on(rt: &Runtime) {
    let c = load(rt, fx::COUNTER).await;
    assert!(matches!(
        c.actor("nope", ()).spawn().await,
        Err(Error::NotFound(_))
    ));
    let counter = c.actor("counter", (0i64,)).spawn().await.unwrap();
    let err = rt
        .get::<i64>(&counter.call("decr", (1i64,)).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(ref m) if m.contains("incr")),
        "{err}"
    );
    let err = rt
        .get::<i64>(&counter.call("incr", ("x",)).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert_eq!(
        rt.get::<i64>(&counter.call("incr", (2i64,)).unwrap())
            .await
            .unwrap(),
        2
    );
}

/// A DAG into an actor: its constructor's argument is a put object, a
/// call's argument a pending task's result.
async fn object_refs_are_arguments_of_constructors_and_calls(rt: &Runtime) {
    let c = load(rt, fx::COUNTER).await;
    let squares = load(rt, fx::SQUARES).await;
    let start = rt.put(&10i64).await.unwrap();
    let counter = c
        .actor("counter", ())
        .arg_ref(&start)
        .spawn()
        .await
        .unwrap();
    let nine = squares.call("heavy-compute", (3i64,)).unwrap();
    let r = counter
        .call_with("incr", vec![ferray_core::Arg::Ref(nine)])
        .unwrap();
    assert_eq!(rt.get::<i64>(&r).await.unwrap(), 19);
    // A failed dependency fails the call, not the actor.
    let m = load(rt, fx::MISBEHAVE).await;
    let bad = m.call("trap", ("no",)).unwrap();
    let r = counter
        .call_with("incr", vec![ferray_core::Arg::Ref(bad)])
        .unwrap();
    let err = rt.get::<i64>(&r).await.unwrap_err();
    assert!(matches!(err, Error::TaskFailed(_)), "{err}");
    let r = counter.call("incr", (1i64,)).unwrap();
    assert_eq!(rt.get::<i64>(&r).await.unwrap(), 20);
}
