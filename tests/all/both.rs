//! The same tests, both ways: every semantic scenario (tasks, dependencies,
//! nested tasks, actors, objects, errors, retries, cancellation) runs on the
//! embedded runtime and on a cluster of real processes, from one body.
//!
//! A scenario is an `async fn(&Runtime)` listed with [`scenarios!`] in the
//! module that holds it (`embed.rs`, `actors.rs`, `objects.rs`, `values.rs`).
//! Two tests run them all: [`every_scenario_embedded`] on a fresh embedded
//! runtime each, and [`every_scenario_on_a_cluster`] on one cluster (a head
//! without a worker of its own and two workers of 2 CPUs), each scenario
//! with a fresh `Runtime::connect` (a new job). A cluster starts once for
//! all of them: starting one costs seconds and processes. Every scenario
//! runs even when another fails; the test then names each failure.
//!
//! Where the two legitimately differ (a connected client's `stats()` count
//! only what it ran itself; a cluster reports a demand larger than every
//! node through the ref, not at submit; output lines name the node too), a
//! scenario asserts what both guarantee and checks the rest under
//! `if !rt.is_cluster()`. Tests that need settings of their own (custom
//! resources, one CPU, local mode, spill and cache directories, fuel, GPUs)
//! stay `#[tokio::test]`s, embedded only; what only a cluster has (nodes,
//! placement, failures of processes, the command line) is in `cluster.rs`.
//!
//! `FERRAY_SCENARIO=text` runs only the scenarios whose name contains
//! `text`; `--nocapture` shows each scenario's time.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use ferray::Runtime;
use futures::FutureExt as _;
use futures::future::BoxFuture;

use crate::harness::{Cluster, block_on};

/// One scenario: its name (`module::function`) and its body.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) run: for<'a> fn(&'a Runtime) -> BoxFuture<'a, ()>,
}

/// `scenarios![f, g]` defines the module's `SCENARIOS`: each `async fn
/// f(rt: &Runtime)` of the list, by name.
macro_rules! scenarios {
    ($($f:ident),* $(,)?) => {
        pub(crate) const SCENARIOS: &[$crate::both::Scenario] = &[$(
            $crate::both::Scenario {
                name: concat!(module_path!(), "::", stringify!($f)),
                run: {
                    fn run(rt: &::ferray::Runtime) -> ::futures::future::BoxFuture<'_, ()> {
                        Box::pin($f(rt))
                    }
                    run
                },
            }
        ),*];
    };
}
pub(crate) use scenarios;

/// Every registered scenario, filtered by `FERRAY_SCENARIO`.
fn all() -> Vec<&'static Scenario> {
    let filter = std::env::var("FERRAY_SCENARIO").unwrap_or_default();
    [
        crate::embed::SCENARIOS,
        crate::actors::SCENARIOS,
        crate::objects::SCENARIOS,
        crate::values::SCENARIOS,
        crate::limits::SCENARIOS,
        crate::tune::SCENARIOS,
        crate::train::SCENARIOS,
        crate::data::SCENARIOS,
    ]
    .into_iter()
    .flatten()
    .filter(|s| s.name.contains(&filter))
    .collect()
}

/// How long one scenario may take, on a loaded 2-core machine, before it
/// counts as hung.
const SCENARIO_LIMIT: Duration = Duration::from_secs(240);

fn short(name: &str) -> &str {
    name.strip_prefix("all::").unwrap_or(name)
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "a panic without a message".to_string()
    }
}

/// Run every scenario, each on a runtime of its own from `make`; the
/// failures, each as "name: why".
async fn run_all<F>(how: &str, make: impl Fn() -> F) -> Vec<String>
where
    F: Future<Output = Runtime>,
{
    let started = Instant::now();
    let scenarios = all();
    assert!(!scenarios.is_empty(), "no scenario matches FERRAY_SCENARIO");
    let mut failures = Vec::new();
    for s in &scenarios {
        let t = Instant::now();
        let rt = make().await;
        let outcome = tokio::time::timeout(
            SCENARIO_LIMIT,
            AssertUnwindSafe((s.run)(&rt)).catch_unwind(),
        )
        .await;
        // A connected client reads signatures from the bytes: it compiles
        // nothing (its cluster's nodes do).
        let compiled = rt.stats().host;
        let client_compiled = rt.is_cluster() && compiled != ferray::HostStats::default();
        drop(rt);
        let why = match outcome {
            Ok(Ok(())) if client_compiled => Some(format!(
                "the connected client compiled components: {compiled:?}"
            )),
            Ok(Ok(())) => None,
            Ok(Err(p)) => Some(panic_text(&*p)),
            Err(_) => Some(format!("did not finish within {SCENARIO_LIMIT:?}")),
        };
        let name = short(s.name);
        match why {
            None => eprintln!("{how}: {name} ok in {:.2?}", t.elapsed()),
            Some(why) => {
                eprintln!("{how}: {name} FAILED in {:.2?}: {why}", t.elapsed());
                failures.push(format!("{name}: {why}"));
            }
        }
    }
    eprintln!(
        "{how}: {} scenarios, {} failed, in {:.2?}",
        scenarios.len(),
        failures.len(),
        started.elapsed()
    );
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_embedded() {
    let failures = run_all("embedded", crate::runtime).await;
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed embedded:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_scenario_on_a_cluster() {
    let c = Cluster::start(2);
    let failures = block_on(run_all("cluster", || c.runtime()));
    let head_log = c.log("head.log");
    let tail: Vec<&str> = head_log.lines().rev().take(40).collect();
    // The failures come last, where a cut log still shows them.
    assert!(
        failures.is_empty(),
        "the head's log, last lines:\n{}\n\n{} scenario(s) failed on a cluster:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        failures.len(),
        failures.join("\n")
    );
    // Every scenario's job ended with its connection, so the cluster freed
    // every object they made (the embedded runtime frees them as the refs
    // go; a cluster when no live job refers to them).
    let left = objects_left(&c);
    assert!(
        left.is_empty(),
        "objects left after every job ended: {left:?}"
    );
}

/// The objects the cluster still keeps once it settled (up to 30 s).
fn objects_left(c: &Cluster) -> Vec<ferray::cluster::ObjectInfo> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = c.state("objects").objects;
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client's large put travels on two streams (the session's `Put` naming
/// its job, and the upload of its bytes); when the bytes came first, the
/// head once took the object for a `ferray put` and kept it for good. Here a
/// task's result equals the put (one object, content addressed), and every
/// job's objects must be gone once the jobs end. (The head's unit test
/// `an_upload_that_arrives_before_its_put_goes_with_its_job` pins the order
/// down; this is the same on real processes.)
#[test]
fn a_result_equal_to_a_put_is_freed_when_its_job_ends() {
    let c = Cluster::start(2);
    for round in 0..20u32 {
        block_on(async {
            let rt = c.runtime().await;
            let m = rt.load_file(crate::fx::MISBEHAVE).await.expect("load");
            let big: Vec<u8> = (0..200_000u32).map(|i| ((i + round) % 256) as u8).collect();
            let put = rt.put(&big).await.expect("put");
            let r = m.task("measure").arg_ref(&put).submit().expect("submit");
            rt.get::<(u32, u64)>(&r).await.expect("measure");
            let r = m.task("echo-bytes").arg_ref(&put).submit().expect("submit");
            assert_eq!(rt.get::<Vec<u8>>(&r).await.expect("echo"), big);
            assert_eq!(r.content_id(), put.content_id());
        });
    }
    let left = objects_left(&c);
    assert!(
        left.is_empty(),
        "objects left after every job ended: {left:?}"
    );
}
