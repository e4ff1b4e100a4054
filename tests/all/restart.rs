//! A head that comes back: kill -9 of the head in the middle of a job, and
//! a new head started on the same port and database (`~/.ferray/head.redb`).

use std::process::Stdio;

use ferray::cluster::JobState;

use super::fx;
use super::harness::{Cluster, block_on, wait_for};

/// The squares of 0..n as `fan-out` prints them.
fn squares(n: i64) -> String {
    let v: Vec<String> = (0..n).map(|i| (i * i).to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// The head is killed while a 1,000-task job and a job calling an actor
/// run, and started again at once: the workers come back to it with what
/// they run, so the drivers go on (they are not run again) and the actor
/// keeps its state; both jobs end with the results a clean run gives, and
/// the jobs that ended before the crash are still listed with their
/// results and logs; ids go on after the earlier head's.
#[test]
fn a_head_killed_during_a_job_comes_back_with_its_jobs() {
    let mut c = Cluster::start(2);
    let earlier = c
        .ok(&["submit", "--no-wait", fx::MISBEHAVE, "fan-out", "5", "1"])
        .trim()
        .to_string();
    let first = wait_for("the first job to end", 120, || {
        c.job(&earlier).filter(|j| j.state.finished())
    });
    assert_eq!(first.state, JobState::Succeeded, "{first:?}");
    // A job whose driver calls an actor after each pair of tasks: the
    // tally it returns counts every call exactly once.
    let watched = c
        .ok(&["submit", "--no-wait", fx::MISBEHAVE, "watched", "200", "40"])
        .trim()
        .to_string();
    wait_for("the actor's job to get going", 120, || {
        c.ok(&["job", "logs", &watched])
            .contains("4 of 200 done")
            .then_some(())
    });
    // The head saves jobs' logs once a second: the first lines are kept.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The actor's job's log is followed, through the restart too.
    let follower = c
        .cmd()
        .args(["job", "logs", "--follow", &watched])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("job logs --follow");
    // Followed by a submitter, which waits through the restart.
    let submit = c
        .cmd()
        .args(["submit", fx::MISBEHAVE, "fan-out", "1000", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("submit");
    let job = wait_for("the job", 60, || {
        let jobs = c.state("jobs").jobs;
        jobs.iter()
            .find(|j| j.entrypoint.starts_with("fan-out 1000"))
            .map(|j| j.job.to_string())
    });
    let at_kill = wait_for("50 tasks done", 120, || {
        c.job(&job).filter(|j| j.tasks_done >= 50)
    });
    c.restart_head(1);
    assert!(!at_kill.state.finished(), "the job ended before the kill");
    let tally = wait_for("the actor's job to end", 300, || {
        c.job(&watched).filter(|j| j.state.finished())
    });
    let logs = c.ok(&["job", "logs", &watched]);
    assert_eq!(
        (tally.state, tally.result.as_str()),
        (JobState::Succeeded, "200"),
        "{tally:?}\n{logs}\n{}",
        c.log("head-1.log")
    );
    assert!(logs.contains("its driver went on"), "{logs}");
    // The follower connected again and ended with the job: it showed every
    // line the head has now, in its order, and did not show again the
    // lines from before the crash that the head kept. (Lines the crashed
    // head had not saved come again after its restart line when their
    // worker sends them again: shown again there, as the log has them.)
    let out = follower.wait_with_output().expect("the follower ends");
    let (followed, stderr) = (super::stdout(&out), super::stderr(&out));
    assert!(out.status.success(), "{followed}{stderr}");
    assert!(stderr.contains("connecting again"), "{stderr}");
    let mut rest = followed.lines();
    for line in logs.lines() {
        assert!(
            rest.any(|l| l == line),
            "{line} is missing or out of order\nfollowed:\n{followed}\nlogs:\n{logs}"
        );
    }
    let kept = "task 3 squared to 9; 4 of 200 done";
    assert_eq!(followed.matches(kept).count(), 1, "{followed}");
    assert_eq!(
        logs.matches("task 0 squared").count(),
        1,
        "the driver ran once: {logs}\n{}\n{}\n{}\n{}",
        c.log("head-0.log"),
        c.log("head-1.log"),
        c.log("worker-0.log"),
        c.log("worker-1.log")
    );
    let done = wait_for("the job to end after the restart", 300, || {
        c.job(&job).filter(|j| j.state.finished())
    });
    assert_eq!(
        done.state,
        JobState::Succeeded,
        "{done:?}\n{}",
        c.log("head-1.log")
    );
    let status = c.ok(&["job", "status", &job]);
    assert!(
        status.contains(&format!("result: {}\n", squares(1000))),
        "{status}"
    );
    // The submitter connected again and printed the job's result.
    let out = submit.wait_with_output().expect("the submitter ends");
    let (stdout, stderr) = (super::stdout(&out), super::stderr(&out));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), squares(1000));
    assert!(stderr.contains("connecting again"), "{stderr}");

    // The earlier job is listed as it ended, with its result and log.
    let list = c.ok(&["job", "list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("{earlier} ")))
        .unwrap_or_else(|| panic!("{earlier} is not listed:\n{list}"));
    assert!(line.contains("SUCCEEDED"), "{line}");
    let status = c.ok(&["job", "status", &earlier]);
    assert!(
        status.contains(&format!("result: {}", squares(5))),
        "{status}"
    );
    let logs = c.ok(&["job", "logs", &job]);
    assert!(logs.contains("the head restarted"), "{logs}");
    assert!(!logs.contains("runs again"), "{logs}");
    // The worker is a node of the new head, and new ids go on.
    assert!(c.state("nodes").nodes.iter().any(|n| n.alive));
    let next = c
        .ok(&["submit", "--no-wait", fx::MISBEHAVE, "fan-out", "3", "1"])
        .trim()
        .to_string();
    let id = |s: &str| {
        s.trim_start_matches("job-")
            .parse::<u64>()
            .expect("a job id")
    };
    assert!(id(&next) > id(&job), "{next} after {job}");
}

/// A program connected with `Runtime::connect` outlives a restart of the
/// head: its session comes back with the node's actor, so the actor keeps
/// its state, a task submitted before the crash gives its result after,
/// and new work runs.
#[test]
fn a_connected_program_keeps_its_actor_through_a_restart_of_the_head() {
    let mut c = Cluster::start(1);
    block_on(async {
        let rt = c.runtime().await;
        let m = rt.load_file(fx::MISBEHAVE).await.expect("load");
        let tally = m.actor("tally", (100i64,)).spawn().await.expect("tally");
        let first: i64 = rt
            .get(&tally.call("incr", (5i64,)).expect("call"))
            .await
            .expect("incr");
        assert_eq!(first, 105);
        // Running across the crash: a task that takes 3 s.
        let slow = m
            .task("slow-square")
            .args(&(12i64, 3000u32))
            .expect("args")
            .submit()
            .expect("submit");
        c.restart_head(1);
        let sq: i64 = rt
            .get(&slow)
            .await
            .unwrap_or_else(|e| panic!("the slow task: {e}\n{}", c.log("head-1.log")));
        assert_eq!(sq, 144);
        let after: i64 = rt
            .get(&tally.call("incr", (1i64,)).expect("call"))
            .await
            .expect("incr after the restart");
        assert_eq!(after, 106, "the actor kept its state");
        let more: i64 = rt
            .get(
                &m.task("slow-square")
                    .args(&(3i64, 0u32))
                    .expect("args")
                    .submit()
                    .expect("submit"),
            )
            .await
            .expect("new work");
        assert_eq!(more, 9);
    });
    let logs = c.log("head-1.log");
    assert!(logs.contains("came back"), "{logs}");
}

/// The head's serve application is kept in its database: a head started
/// again on it deploys the application again, on the same address, with
/// new stateful replicas (constructed again); one deleted stays deleted.
#[test]
fn a_restarted_head_runs_its_serve_application_again() {
    let mut c = Cluster::start(1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (_dir, app) = super::serve::app_dir(&format!(
        r#"
[http]
port = {port}

[[deployment]]
name = "hello"
component = "hello.wasm"
route_prefix = "/"

[[deployment]]
name = "replica"
component = "replica.wasm"
kind = "replica"
"#
    ));
    let app_s = app.to_str().expect("a UTF-8 path");
    let base = super::serve::deployed_at(&c.ok(&["serve", "deploy", app_s]));
    let http = super::serve::cluster_client(&c);
    let get = |path: &str| {
        http.get(format!("{base}{path}"))
            .send()
            .ok()
            .filter(|r| r.status().as_u16() == 200)
            .and_then(|r| r.text().ok())
    };
    assert_eq!(get("/replica/count").as_deref(), Some("1"));
    assert_eq!(get("/replica/count").as_deref(), Some("2"));

    c.restart_head(1);
    let hello = wait_for("the application to run again", 180, || get("/?name=Bo"));
    assert_eq!(hello, "Hello, Bo! (path /?name=Bo)\n");
    // A new replica: its state starts again.
    let count = wait_for("the replica to answer", 120, || get("/replica/count"));
    assert_eq!(count, "1");
    let status: ferray_serve::ServeStatus =
        serde_json::from_str(&c.ok(&["serve", "status", "--json"])).expect("status JSON");
    assert_eq!(status.proxy, base);
    let logs = c.log("head-1.log");
    assert!(logs.contains("application runs again"), "{logs}");

    // Deleted, it is not deployed again by the next head.
    c.ok(&["serve", "delete"]);
    c.restart_head(2);
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(http.get(format!("{base}/")).send().is_err());
    assert!(
        c.ok(&["serve", "status"])
            .contains("no application is running")
    );
}
