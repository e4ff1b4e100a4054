//! RPC fault injection (the `testing` feature, `FERRAY_TESTING_RPC_FAILURE`):
//! nodes and clients whose calls fail and whose session streams break at
//! random, with messages lost or sent twice, give the results of a clean
//! run and leave nothing behind.

use ferray::Strategy;
use ferray::cluster::JobState;

use super::fx;
use super::harness::{Cluster, block_on, wait_for};

/// Two workers and the submitting CLI fail 10% of everything they send at
/// random, on every method: calls (`FetchComponent`, `Locate`, `Pull`,
/// `UploadComponent`, `SubmitJob`, `WatchJob`, `Cluster`) fail before
/// their server has them or after (the answer lost), and the workers'
/// sessions break on every kind of message both ways (lost before the head
/// gets it, or just after); everything they send waits up to 3 ms. Each job's result is the embedded runtime's:
/// an actor's counter bumped by 1,000 tasks (a call lost or run twice would
/// change the sum), 400 independent tasks, and a map-reduce DAG through
/// object arguments; and 40 objects of about 300 KB made on one worker and
/// measured on the other. After the jobs, the head holds no task, actor or
/// object of theirs, and the workers are the same nodes (their sessions
/// were resumed, never replaced).
#[test]
fn jobs_under_rpc_failures_give_the_clean_results_and_leave_nothing() {
    let mut c = Cluster::start(0);
    let faults = [
        ("FERRAY_TESTING_RPC_FAILURE", "*=0.034:0.033:0.033"),
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
        let out = c
            .cmd()
            .envs(faults)
            .args(&remote)
            .output()
            .expect("run ferray submit");
        let got = super::stdout(&out);
        assert!(
            out.status.success(),
            "{remote:?}: {got}{}\nhead log:\n{}",
            super::stderr(&out),
            c.log("head.log")
        );
        assert_eq!(got, want, "{path} {args:?}");
    }
    // Objects made on one worker and read on the other: each read is a
    // `Locate` and a `Pull` by a worker, which fail at random too.
    block_on(async {
        let rt = c.runtime().await;
        let m = rt.load_file(fx::MISBEHAVE).await.expect("load");
        let on = |node: u64| Strategy::Node { node, soft: false };
        let mut reads = Vec::new();
        for i in 0..40u32 {
            let n = 300_000 + i;
            let seed = (i % 200) as u8;
            let big = m
                .task("make-bytes")
                .args(&(n, seed))
                .expect("args")
                .strategy(on(nodes[(i % 2) as usize]))
                .submit()
                .expect("submit");
            let r = m
                .task("measure")
                .arg_ref(&big)
                .strategy(on(nodes[((i + 1) % 2) as usize]))
                .submit()
                .expect("submit");
            let want: u64 = (0..u64::from(n))
                .map(|k| (k * 7 + u64::from(seed)) % 251)
                .sum();
            reads.push((r, n, want));
        }
        for (r, n, want) in reads {
            let got: (u32, u64) = rt.get(&r).await.expect("measure");
            assert_eq!(got, (n, want));
        }
    });
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
    let calls: usize = (0..2)
        .map(|i| {
            c.log(&format!("worker-{i}.log"))
                .matches("testing: injecting")
                .count()
        })
        .sum();
    eprintln!("{resumed} session streams broken and resumed, {calls} calls failed");
    assert!(resumed > 0, "no stream was broken");
    assert!(calls > 0, "no call failed");
}
