//! A head that comes back: kill -9 of the head in the middle of a job, and
//! a new head started on the same port and database (`~/.ferray/head.redb`).

use std::process::Stdio;

use ferray::cluster::JobState;

use super::fx;
use super::harness::{Cluster, wait_for};

/// The squares of 0..n as `fan-out` prints them.
fn squares(n: i64) -> String {
    let v: Vec<String> = (0..n).map(|i| (i * i).to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// The head is killed while a 1,000-task job runs and started again at
/// once: the worker joins it again, the job ends with the result a clean
/// run gives, and the jobs that ended before the crash are still listed
/// with their results and logs; ids go on after the earlier head's.
#[test]
fn a_head_killed_during_a_job_comes_back_with_its_jobs() {
    let mut c = Cluster::start(1);
    let earlier = c
        .ok(&["submit", "--no-wait", fx::MISBEHAVE, "fan-out", "5", "1"])
        .trim()
        .to_string();
    let first = wait_for("the first job to end", 120, || {
        c.job(&earlier).filter(|j| j.state.finished())
    });
    assert_eq!(first.state, JobState::Succeeded, "{first:?}");
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
    let done = wait_for("the job to end after the restart", 300, || {
        c.job(&job).filter(|j| j.state.finished())
    });
    assert_eq!(
        done.state,
        JobState::Succeeded,
        "{done:?}\n{}",
        c.log("head-1.log")
    );
    assert_eq!((done.tasks_done, done.tasks_total), (1000, 1000));
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
