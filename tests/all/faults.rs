//! RPC fault injection (the `testing` feature, `FERRAY_TESTING_RPC_FAILURE`):
//! workers whose session streams break at random, with messages lost or
//! sent twice, give the results of a clean run and leave nothing behind.

use ferray::cluster::JobState;

use super::fx;
use super::harness::{Cluster, wait_for};

/// Two workers break their session with the head at random on every kind
/// of message, both ways (lost before the head gets it, or just after),
/// and delay what they send. Each job's result is the embedded runtime's:
/// an actor's counter bumped by 1,000 tasks (a call lost or run twice would
/// change the sum), 400 independent tasks, and a map-reduce DAG through
/// object arguments. After the jobs, the head holds no task, actor or
/// object of theirs, and the workers are the same nodes (their sessions
/// were resumed, never replaced).
#[test]
fn jobs_under_broken_session_streams_give_the_clean_results_and_leave_nothing() {
    let mut c = Cluster::start(0);
    let faults = [
        ("FERRAY_TESTING_RPC_FAILURE", "*=0.04:0.03:0.03"),
        ("FERRAY_TESTING_RPC_DELAY_MS", "3"),
    ];
    let nodes = [c.add_worker(&faults), c.add_worker(&faults)];
    let text = "\"a b c a b a d e f d e d\"";
    let cases: &[(&str, &[&str])] = &[
        (fx::COUNTER, &["run", "1000"]),
        (fx::MISBEHAVE, &["fan-out", "400", "1"]),
        (fx::WORDCOUNT, &["run", text, "24", "3"]),
    ];
    for (path, args) in cases {
        let mut local = vec!["run", *path];
        local.extend_from_slice(args);
        let want = super::ferray_ok(&local);
        let mut remote = vec!["submit", *path];
        remote.extend_from_slice(args);
        let got = c.ok(&remote);
        assert_eq!(got, want, "{path} {args:?}");
    }
    let view = c.state("");
    assert!(
        view.jobs.iter().all(|j| j.state == JobState::Succeeded),
        "{:?}",
        view.jobs
    );
    assert!(
        view.task_states.values().all(|n| *n == 0),
        "live tasks left: {:?}",
        view.task_states
    );
    let left = wait_for("the objects to be freed", 30, || {
        let o = c.state("objects").objects;
        o.is_empty().then_some(o)
    });
    assert!(left.is_empty());
    let actors = c.state("actors").actors;
    assert!(actors.iter().all(|a| a.state == "DEAD"), "{actors:?}");
    // Still the same two nodes, alive: no session was given up.
    let live: Vec<u64> = c
        .state("nodes")
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.id.0)
        .collect();
    assert_eq!(live, nodes.to_vec());
    let resumed: usize = (0..2)
        .map(|i| {
            c.log(&format!("worker-{i}.log"))
                .matches("resuming the session")
                .count()
        })
        .sum();
    eprintln!("{resumed} session streams broken and resumed");
    assert!(resumed > 0, "no stream was broken");
}
