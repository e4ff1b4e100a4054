//! A real cluster on 127.0.0.1: a head and worker processes of the `ferray`
//! binary (`ferray start --block`), used through the command line and
//! through `Runtime::connect`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ferray::cluster::JobState;
use ferray::{Error, JobId, NodeId, RefName, Runtime, Strategy};
use rustix::process::Signal;

use super::harness::{Cluster, block_on, signal, wait_for};
use super::{ferray, fx, stderr, stdout};

fn task_id(r: &ferray::ObjectRef) -> u64 {
    match r.name() {
        RefName::Task(t) => t.0,
        RefName::Put(_) => panic!("not a task's result"),
    }
}

#[test]
fn every_example_gives_the_embedded_result_on_a_cluster() {
    let c = Cluster::start(2);
    let cases: &[(&str, &[&str])] = &[
        (fx::SQUARES, &["run", "12"]),
        (
            fx::WORDCOUNT,
            &["run", "\"the cat and the dog and the bird\"", "3", "2"],
        ),
        (fx::PI, &["estimate", "40000", "8"]),
        (fx::COUNTER, &["run", "16"]),
    ];
    for (path, args) in cases {
        let mut local = vec!["run", *path];
        local.extend_from_slice(args);
        let want = super::ferray_ok(&local);
        let mut remote = vec!["submit", "--address", &c.address, *path];
        remote.extend_from_slice(args);
        let got = c.ok(&remote);
        assert_eq!(got, want, "{path} {args:?}");
    }
    // The squares job's tasks ran on both workers.
    let st = c.state("tasks");
    let nodes: std::collections::BTreeSet<_> = st
        .tasks
        .iter()
        .filter(|t| t.function == "heavy-compute")
        .filter_map(|t| t.node)
        .collect();
    assert!(nodes.len() >= 2, "tasks ran on {nodes:?}");
    let jobs = c.ok(&["job", "list"]);
    assert_eq!(jobs.matches("SUCCEEDED").count(), 4, "{jobs}");
    // A job's output is its log: streamed by submit, kept for `job logs`.
    let out = c
        .cmd()
        .args(["submit", fx::MISBEHAVE, "shout", "\"quiet please\""])
        .output()
        .expect("submit");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "\"QUIET PLEASE\"");
    assert!(stderr(&out).contains(") quiet please"), "{}", stderr(&out));
    let logs = c.ok(&["job", "logs", "job-5"]);
    assert!(logs.contains("quiet please"), "{logs}");
    let status = c.ok(&["job", "status", "job-5"]);
    assert!(
        status.contains("SUCCEEDED") && status.contains("\"QUIET PLEASE\""),
        "{status}"
    );
    // Every job ended, so the cluster freed every object they made.
    let objects = c.state("objects").objects;
    assert!(objects.is_empty(), "objects left: {objects:?}");
}

#[test]
fn a_job_larger_than_one_node_uses_every_node_and_none_past_its_cpus() {
    let c = Cluster::start_with(2, &[]);
    // 3 nodes of 2 CPUs (the head runs one too); 24 tasks of 150 ms.
    let out = c.ok(&["submit", fx::MISBEHAVE, "fan-out", "24", "150"]);
    let want: Vec<String> = (0..24i64).map(|i| (i * i).to_string()).collect();
    assert_eq!(out.trim(), format!("[{}]", want.join(", ")));
    let st = c.state("tasks");
    let mut per_node = std::collections::BTreeMap::<_, u32>::new();
    for t in st.tasks.iter().filter(|t| t.function == "slow-square") {
        *per_node.entry(t.node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "slow-square per node: {per_node:?}");
    // No node ever held more than its CPUs: each node's admission and the
    // head agree, so nothing is left over either.
    for n in c.state("nodes").nodes {
        let free = n.available.unwrap_or_default();
        assert_eq!(
            free.num_cpus(),
            n.total.num_cpus(),
            "{} still holds CPUs",
            n.id
        );
    }
}

#[test]
fn a_task_runs_where_its_argument_lives_and_lost_objects_are_rebuilt() {
    let mut c = Cluster::start(2);
    let (w1, w2) = (c.workers[0].1, c.workers[1].1);
    block_on(async {
        let rt = c.runtime().await;
        let m = rt.load_file(fx::MISBEHAVE).await.expect("load");
        // 256 KiB made on w2 (too big to travel inline).
        let big = m
            .task("make-bytes")
            .args(&(256u32 << 10, 3u8))
            .expect("args")
            .strategy(Strategy::Node {
                node: w2,
                soft: true,
            })
            .submit()
            .expect("submit");
        let want: (u32, u64) = {
            let bytes: Vec<u8> = rt.get(&big).await.expect("make-bytes");
            (
                bytes.len() as u32,
                bytes.iter().map(|b| u64::from(*b)).sum(),
            )
        };
        assert_eq!(c.node_of(task_id(&big)), w2);
        // Its consumer goes where the bytes are.
        let m1 = m.task("measure").arg_ref(&big).submit().expect("submit");
        assert_eq!(rt.get::<(u32, u64)>(&m1).await.expect("measure"), want);
        assert_eq!(
            c.node_of(task_id(&m1)),
            w2,
            "the consumer ran away from its data"
        );

        // The only copy goes with w2; a new consumer gets it rebuilt (lineage).
        c.kill_worker(w2);
        let m2 = m.task("measure").arg_ref(&big).submit().expect("submit");
        assert_eq!(rt.get::<(u32, u64)>(&m2).await.expect("rebuilt"), want);
        assert_eq!(c.node_of(task_id(&m2)), w1);
        assert_eq!(
            c.node_of(task_id(&big)),
            w1,
            "make-bytes was not re-run on w1"
        );
    });
}

#[test]
fn a_corrupted_chunk_is_fetched_again_never_returned() {
    let mut c = Cluster::start(1);
    let bad = c.add_worker(&[("FERRAY_TESTING_CORRUPT_TRANSFERS", "1")]);
    let good = c.workers[0].1;
    block_on(async {
        let rt = c.runtime().await;
        let m = rt.load_file(fx::MISBEHAVE).await.expect("load");
        let big = m
            .task("make-bytes")
            .args(&(300_000u32, 9u8))
            .expect("args")
            .strategy(Strategy::Node {
                node: bad,
                soft: false,
            })
            .submit()
            .expect("submit");
        let pinned = Strategy::Node {
            node: good,
            soft: false,
        };
        let r = m
            .task("measure")
            .arg_ref(&big)
            .strategy(pinned)
            .submit()
            .expect("submit");
        let (len, sum) = rt.get::<(u32, u64)>(&r).await.expect("measure");
        let want: u64 = (0..300_000u64).map(|i| (i * 7 + 9) % 251).sum();
        assert_eq!((len, sum), (300_000, want));
    });
    let bad_log = c.log("worker-1.log");
    assert!(bad_log.contains("testing: corrupting a chunk"), "{bad_log}");
    let good_log = c.log("worker-0.log");
    assert!(good_log.contains("failed its check"), "{good_log}");
}

#[test]
fn a_thousand_task_job_survives_kill_9_of_a_worker() {
    let mut c = Cluster::start(2);
    let victim = c.workers[1].1;
    let out = c.ok(&[
        "submit",
        "--no-wait",
        fx::MISBEHAVE,
        "fan-out",
        "1000",
        "10",
    ]);
    let job = out.trim().to_string();
    assert!(job.starts_with("job-"), "{out}");
    let done_at_kill = wait_for("100 tasks done", 120, || {
        let j = c
            .state("jobs")
            .jobs
            .into_iter()
            .find(|j| j.job.to_string() == job)?;
        (j.tasks_done >= 100).then_some(j.tasks_done)
    });
    c.kill_worker(victim);
    assert!(
        done_at_kill < 1000,
        "the job ended before the kill; make its tasks slower"
    );
    let status = wait_for("the job to end", 300, || {
        let j = c
            .state("jobs")
            .jobs
            .into_iter()
            .find(|j| j.job.to_string() == job)?;
        j.state.finished().then_some(j)
    });
    assert_eq!(status.state, JobState::Succeeded, "{status:?}");
    let want: Vec<String> = (0..1000i64).map(|i| (i * i).to_string()).collect();
    let want = format!("[{}]", want.join(", "));
    // A list cuts a long result; `job status` shows it whole.
    let kept = status.result.strip_suffix(" [cut]").expect("cut in a list");
    assert!(want.starts_with(kept));
    let shown = c.ok(&["job", "status", &job]);
    assert!(shown.contains(&format!("  result: {want}\n")), "{shown}");
    // A worker that comes back joins as a new node.
    let again = c.add_worker(&[]);
    assert!(again > victim);
    let text = c.ok(&["job", "status", &job]);
    assert!(text.contains("SUCCEEDED"), "{text}");
}

#[test]
fn an_actor_restarts_on_another_node_within_max_restarts() {
    let mut c = Cluster::start(2);
    let (w1, w2) = (c.workers[0].1, c.workers[1].1);
    block_on(async {
        let rt = c.runtime().await;
        let counter = rt.load_file(fx::COUNTER).await.expect("load");
        let on_w2 = Strategy::Node {
            node: w2,
            soft: true,
        };
        let a = counter
            .actor("api.counter", (100i64,))
            .max_restarts(1)
            .strategy(on_w2)
            .spawn()
            .await
            .expect("actor");
        let mortal = counter
            .actor("api.counter", (0i64,))
            .strategy(on_w2)
            .spawn()
            .await
            .expect("actor");
        assert_eq!(
            rt.get::<i64>(&a.call("incr", (5i64,)).expect("call"))
                .await
                .expect("incr"),
            105
        );
        assert_eq!(
            rt.get::<i64>(&mortal.call("incr", (1i64,)).expect("call"))
                .await
                .expect("incr"),
            1
        );
        c.kill_worker(w2);
        // The constructor ran again elsewhere: the count starts over.
        let r = a.call("incr", (1i64,)).expect("call");
        assert_eq!(rt.get::<i64>(&r).await.expect("restarted actor"), 101);
        let actors = c.state("actors").actors;
        let info = actors.iter().find(|x| x.id == a.id()).expect("listed");
        assert_eq!(
            (info.state.as_ref(), info.node, info.restarts),
            ("ALIVE", Some(NodeId(w1)), 1)
        );
        // Without restarts, calls fail with actor-died.
        let err = rt
            .get::<i64>(&mortal.call("incr", (1i64,)).expect("call"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ActorDied(_)), "{err}");
    });
}

#[test]
fn the_embedding_api_works_the_same_embedded_and_on_a_cluster() {
    async fn exercise(rt: &Runtime) -> (Vec<i64>, i64, u64, String) {
        let squares = rt.load_file(fx::SQUARES).await.expect("load");
        let refs: Vec<_> = (0..10i64)
            .map(|i| squares.call("heavy-compute", (i,)).expect("submit"))
            .collect();
        let values: Vec<i64> = rt.get_all(&refs).await.expect("get_all");
        let counter = rt.load_file(fx::COUNTER).await.expect("load");
        let a = counter
            .actor("api.counter", (10i64,))
            .spawn()
            .await
            .expect("actor");
        let mut last = 0;
        for by in [1i64, 5, 7] {
            last = rt
                .get(&a.call("incr", (by,)).expect("call"))
                .await
                .expect("incr");
        }
        let m = rt.load_file(fx::MISBEHAVE).await.expect("load");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
        let put = rt.put(&big).await.expect("put");
        let r = m.task("measure").arg_ref(&put).submit().expect("submit");
        let (_, sum): (u32, u64) = rt.get(&r).await.expect("measure");
        let too_big = squares
            .task("heavy-compute")
            .args(&(1i64,))
            .expect("args")
            .num_cpus(64.0)
            .expect("cpus")
            .submit();
        let infeasible = match too_big {
            Err(e) => e.to_string(),
            Ok(r) => rt.get::<i64>(&r).await.unwrap_err().to_string(),
        };
        (values, last, sum, infeasible)
    }
    block_on(async {
        let local = super::runtime().await;
        let (v1, a1, s1, e1) = exercise(&local).await;
        let c = Cluster::start(2);
        let remote = c.runtime().await;
        let (v2, a2, s2, e2) = exercise(&remote).await;
        // What its tasks print reaches the connected client too.
        let m = remote.load_file(fx::MISBEHAVE).await.expect("load");
        let r = m.call("shout", ("psst",)).expect("submit");
        assert_eq!(remote.get::<String>(&r).await.expect("shout"), "PSST");
        let lines = remote.take_output();
        assert!(
            lines
                .iter()
                .any(|l| l.line == "psst" && l.source.starts_with("task-")),
            "{lines:?}"
        );
        assert_eq!(v1, (0..10).map(|i| i * i).collect::<Vec<i64>>());
        assert_eq!((v1, a1, s1), (v2, a2, s2));
        assert!(e1.contains("infeasible"), "{e1}");
        assert!(e2.contains("infeasible"), "{e2}");
    });
}

#[test]
fn calls_without_the_token_are_refused_and_unreachable_heads_fail_fast() {
    let c = Cluster::start(1);
    let err = c
        .cmd()
        .args([
            "status",
            "--address",
            &c.address,
            "--token",
            "not-the-token",
        ])
        .output()
        .expect("run ferray");
    assert!(!err.status.success());
    assert!(
        stderr(&err).contains("refused the credentials"),
        "{}",
        stderr(&err)
    );
    // A raw gRPC call with no token at all.
    block_on(async {
        let mut raw =
            ferray_proto::v1::head_client::HeadClient::connect(format!("http://{}", c.address))
                .await
                .expect("connect");
        let refused = raw
            .cluster(ferray_proto::v1::ClusterRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        // Object pulls too, before any handler looks at the id.
        let mut raw = ferray_proto::v1::objects_client::ObjectsClient::connect(format!(
            "http://{}",
            c.address
        ))
        .await
        .expect("connect");
        let refused = raw
            .pull(ferray_proto::v1::ObjectKey {
                id: vec![0u8; 32].into(),
            })
            .await
            .expect_err("a pull without the token is refused");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    });
    // A worker of another protocol version is turned away at its hello.
    block_on(async {
        let token = ferray_proto::Token::new(&c.token).expect("token");
        let ch = ferray_proto::connect(&c.address).await.expect("connect");
        let mut head = ferray_proto::head_client(ch, &token);
        let hello = ferray_proto::v1::Up {
            seq: 0,
            msg: Some(ferray_proto::v1::up::Msg::Hello(ferray_proto::v1::Hello {
                protocol: ferray_proto::PROTOCOL_VERSION + 1,
                worker: true,
                object_address: "127.0.0.1:9".into(),
                ..Default::default()
            })),
        };
        let refused = head
            .session(futures::stream::iter(vec![ferray_proto::v1::UpBatch {
                msgs: vec![hello],
            }]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("protocol version"),
            "{}",
            refused.message()
        );
    });
    let started = Instant::now();
    let out = ferray()
        .args(["status", "--address", "127.0.0.1:1", "--token", "x"])
        .output()
        .expect("run ferray");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach 127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no answer for {:?}",
        started.elapsed()
    );
}

#[test]
fn a_submitter_that_loses_the_head_gets_an_error() {
    let mut c = Cluster::start(1);
    let mut submit = c
        .cmd()
        .args([
            "submit",
            "--reconnect-timeout",
            "1s",
            fx::MISBEHAVE,
            "fan-out",
            "200",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("submit");
    wait_for("the job to run", 60, || {
        c.state("jobs")
            .jobs
            .iter()
            .any(|j| j.tasks_done > 0)
            .then_some(())
    });
    c.head.kill().expect("kill the head");
    let _ = c.head.wait();
    let out = wait_for("the submitter to give up", 30, || {
        submit.try_wait().ok().flatten()
    });
    assert!(!out.success());
    let mut err = String::new();
    use std::io::Read as _;
    submit
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(err.contains("lost the head"), "{err}");
    assert!(err.contains("gave up connecting again after 1s"), "{err}");
}

/// After its first call (through the head, which then says where the actor
/// lives), a caller's calls go straight to the actor's node: they are
/// answered while the head is stopped, and the head hears of them after.
/// A task's small result goes straight from the node that ran it to its
/// caller, ahead of the head's answer (Ray's owner gets it from the
/// worker): a task that ends while the head is stopped is answered.
#[test]
fn a_small_result_comes_straight_from_the_node_that_ran_it() {
    let c = Cluster::start(1);
    block_on(async {
        let rt = c.runtime().await;
        let m = rt.load_file(fx::MISBEHAVE).await.expect("load");
        for i in 0..20i64 {
            let r = m.call("slow-square", (i, 0u32)).expect("submit");
            assert_eq!(rt.get::<i64>(&r).await.expect("square"), i * i);
        }
        let before = rt.stats().direct_results;
        let r = m.call("slow-square", (7i64, 1500u32)).expect("submit");
        wait_for("the task to run", 30, || {
            c.state("tasks")
                .tasks
                .iter()
                .any(|t| t.function.ends_with("slow-square") && t.state == "RUNNING")
                .then_some(())
        });
        signal(&c.head, Signal::STOP).expect("SIGSTOP");
        let got = tokio::time::timeout(Duration::from_secs(30), rt.get::<i64>(&r)).await;
        signal(&c.head, Signal::CONT).expect("SIGCONT");
        assert_eq!(
            got.expect("answered while the head was stopped")
                .expect("square"),
            49
        );
        assert_eq!(rt.stats().direct_results, before + 1);
        // The head's answer, which comes after, changes nothing; the head
        // lists the task as finished.
        let again = m.call("slow-square", (8i64, 0u32)).expect("submit");
        assert_eq!(rt.get::<i64>(&again).await.expect("square"), 64);
        assert_eq!(rt.get::<i64>(&r).await.expect("square"), 49);
        wait_for("the head to list the tasks", 30, || {
            let tasks = c.state("tasks").tasks;
            let done = tasks
                .iter()
                .filter(|t| t.function.ends_with("slow-square") && t.state == "FINISHED")
                .count();
            (done == 22).then_some(())
        });
    });
}

#[test]
fn actor_calls_go_straight_to_the_actors_node() {
    let c = Cluster::start(1);
    let worker = NodeId(c.workers[0].1);
    block_on(async {
        let rt = c.runtime().await;
        let counter = rt.load_file(fx::COUNTER).await.expect("load");
        let a = counter
            .actor("api.counter", (0i64,))
            .spawn()
            .await
            .expect("actor");
        let first = a.call("incr", (1i64,)).expect("call");
        assert_eq!(rt.get::<i64>(&first).await.expect("first call"), 1);
        signal(&c.head, Signal::STOP).expect("SIGSTOP");
        let direct = tokio::time::timeout(Duration::from_secs(20), async {
            let mut last = 0;
            for _ in 0..20 {
                last = rt.get::<i64>(&a.call("incr", (1i64,))?).await?;
            }
            Ok::<_, Error>(last)
        })
        .await;
        signal(&c.head, Signal::CONT).expect("SIGCONT");
        let last = direct
            .expect("calls answered while the head was stopped")
            .expect("calls");
        assert_eq!(last, 21);
        // Many at once, in order.
        let refs: Vec<_> = (0..200)
            .map(|_| a.call("incr", (1i64,)).expect("call"))
            .collect();
        let got: Vec<i64> = rt.get_all(&refs).await.expect("calls");
        assert_eq!(got, (22..222).collect::<Vec<i64>>());
        // A call with an object reference among its arguments goes through
        // the head, after the direct calls made before it.
        let by = rt.put(&5i64).await.expect("put");
        let before: Vec<_> = (0..50)
            .map(|_| a.call("incr", (1i64,)).expect("call"))
            .collect();
        let through_head = a
            .call_with("incr", vec![ferray_core::Arg::Ref(by)])
            .expect("call");
        let after = a.call("incr", (1i64,)).expect("call");
        let got: Vec<i64> = rt.get_all(&before).await.expect("calls");
        assert_eq!(got, (222..272).collect::<Vec<i64>>());
        assert_eq!(rt.get::<i64>(&through_head).await.expect("call"), 276);
        assert_eq!(rt.get::<i64>(&after).await.expect("call"), 277);
        // The head was told of every call: it lists them as finished on the
        // actor's node.
        wait_for("the head to list the calls", 30, || {
            let tasks = c.state("tasks").tasks;
            let done = tasks
                .iter()
                .filter(|t| {
                    t.function.ends_with(".incr") && t.state == "FINISHED" && t.node == Some(worker)
                })
                .count();
            (done == 273).then_some(())
        });
    });
}

/// Direct calls in flight when the actor's node is killed end (a value, or
/// `ActorDied`), never hang; later calls go to the actor's new incarnation.
#[test]
fn direct_calls_survive_the_loss_of_the_actors_node() {
    let mut c = Cluster::start(2);
    let (w1, w2) = (c.workers[0].1, c.workers[1].1);
    block_on(async {
        let rt = c.runtime().await;
        let counter = rt.load_file(fx::COUNTER).await.expect("load");
        let a = counter
            .actor("api.counter", (0i64,))
            .max_restarts(1)
            .strategy(Strategy::Node {
                node: w2,
                soft: true,
            })
            .spawn()
            .await
            .expect("actor");
        let first = a.call("incr", (1i64,)).expect("call");
        assert_eq!(rt.get::<i64>(&first).await.expect("first call"), 1);
        let refs: Vec<_> = (0..3000)
            .map(|_| a.call("incr", (1i64,)).expect("call"))
            .collect();
        c.kill_worker(w2);
        // A call that ran but whose answer died with the node fails too, so
        // the values need not be a prefix: each is what the calls before it
        // made (in order, each once).
        for (i, r) in refs.iter().enumerate() {
            let got = tokio::time::timeout(Duration::from_secs(30), rt.get::<i64>(r))
                .await
                .expect("every call ends");
            match got {
                Ok(v) => assert_eq!(v, i as i64 + 2, "calls ran in order"),
                Err(e) => assert!(matches!(e, Error::ActorDied(_)), "{e}"),
            }
        }
        // The restarted actor (its constructor ran again) answers.
        let r = a.call("incr", (10i64,)).expect("call");
        assert_eq!(rt.get::<i64>(&r).await.expect("restarted actor"), 10);
        let r = a.call("incr", (1i64,)).expect("call");
        assert_eq!(rt.get::<i64>(&r).await.expect("restarted actor"), 11);
        let actors = c.state("actors").actors;
        let info = actors.iter().find(|x| x.id == a.id()).expect("listed");
        assert_eq!((info.node, info.restarts), (Some(NodeId(w1)), 1));
    });
}

#[test]
fn a_silent_worker_is_declared_dead_and_its_tasks_run_elsewhere() {
    let c = Cluster::start(2);
    let victim = c.workers[1].1;
    let out = c.ok(&["submit", "--no-wait", fx::MISBEHAVE, "fan-out", "80", "50"]);
    let job: u64 = out
        .trim()
        .trim_start_matches("job-")
        .parse()
        .expect("job id");
    wait_for("some progress", 60, || {
        c.state("jobs")
            .jobs
            .iter()
            .any(|j| j.job.0 == job && j.tasks_done >= 4)
            .then_some(())
    });
    // Stopped, not killed: its connection stays open, only heartbeats stop.
    signal(&c.workers[1].0, Signal::STOP).expect("SIGSTOP");
    wait_for("the head to notice the silence", 30, || {
        c.state("nodes")
            .nodes
            .iter()
            .any(|n| n.id.0 == victim && !n.alive)
            .then_some(())
    });
    let info = wait_for("the job to end", 120, || {
        let j = c
            .state("jobs")
            .jobs
            .into_iter()
            .find(|j| j.job == JobId(job))?;
        (j.state != JobState::Running).then_some(j)
    });
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    let want: Vec<String> = (0..80i64).map(|i| (i * i).to_string()).collect();
    assert_eq!(info.result, format!("[{}]", want.join(", ")));
    // Woken up, it finds its session closed, drops what it ran (the head
    // fenced it: the job's counts are those of one run of each task) and
    // joins again as a new node.
    signal(&c.workers[1].0, Signal::CONT).expect("SIGCONT");
    c.rejoined(1, victim);
    assert!(
        c.log("worker-1.log")
            .contains("joining the head again as a new node"),
        "{}",
        c.log("worker-1.log")
    );
    let info = c
        .state("jobs")
        .jobs
        .into_iter()
        .find(|j| j.job == JobId(job))
        .expect("the job");
    assert_eq!((info.tasks_done, info.tasks_total), (80, 80), "{info:?}");
    // The new node runs work.
    let out = c.ok(&["submit", fx::MISBEHAVE, "fan-out", "8", "1"]);
    assert!(out.contains("49"), "{out}");
}

#[test]
fn start_in_the_background_show_status_and_stop() {
    let home = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        ferray()
            .env("FERRAY_HOME", home.path())
            .env_remove("FERRAY_TOKEN")
            .args(args)
            .output()
            .expect("run ferray")
    };
    let head = run(&["start", "--head", "--port", "0", "--num-cpus", "1"]);
    assert!(head.status.success(), "{}{}", stdout(&head), stderr(&head));
    let text = stdout(&head);
    assert!(text.contains("ferray head started at 127.0.0.1:"), "{text}");
    assert!(text.contains("token:"), "{text}");
    let address = std::fs::read_to_string(home.path().join("head-address")).expect("address");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(home.path().join("token"))
        .expect("token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file must be private");
    let worker = run(&["start", "--address", address.trim(), "--num-cpus", "1"]);
    assert!(
        worker.status.success(),
        "{}{}",
        stdout(&worker),
        stderr(&worker)
    );
    assert!(
        stdout(&worker).contains("joined the head"),
        "{}",
        stdout(&worker)
    );
    let status = run(&["status"]);
    let text = stdout(&status);
    assert!(status.status.success(), "{text}{}", stderr(&status));
    assert_eq!(text.matches("ALIVE").count(), 2, "{text}");
    assert!(text.contains("resources used: 0/2 CPU"), "{text}");
    let stop = run(&["stop"]);
    assert!(stdout(&stop).contains("stopped 2"), "{}", stdout(&stop));
    let after = run(&["status", "--address", address.trim()]);
    assert!(!after.status.success());
    assert!(
        stderr(&after).contains("cannot reach"),
        "{}",
        stderr(&after)
    );
}

#[test]
fn gpu_tasks_go_to_the_node_with_a_gpu() {
    if !super::gpu::have_adapter() {
        return;
    }
    let mut c = Cluster::start(1);
    let plain = c.workers[0].1;
    let gpu = c.add_worker_with(&[], &["--allow-software-gpu", "--num-gpus", "1"]);
    let want = super::ferray_ok(&["run", "--allow-software-gpu", fx::GPU_SAXPY, "run", "1000"]);
    assert_eq!(c.ok(&["submit", fx::GPU_SAXPY, "run", "1000"]), want);
    let nodes: Vec<u64> = c
        .state("tasks")
        .tasks
        .iter()
        .filter(|t| t.function == "saxpy")
        .filter_map(|t| t.node.map(|n| n.0))
        .collect();
    assert!(!nodes.is_empty());
    assert!(
        nodes.iter().all(|n| *n == gpu),
        "saxpy ran on {nodes:?}, not only on node-{gpu} (node-{plain} has no GPU)"
    );
    // A driver that computes on the GPU itself holds one with
    // --entrypoint-num-gpus (Ray's entrypoint option), so it runs there.
    let out = c
        .cmd()
        .args(["submit", fx::GPU_MATMUL, "matmul", "64", "7"])
        .output()
        .expect("submit");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("did not ask for a GPU"),
        "{}",
        stderr(&out)
    );
    let out = c.ok(&[
        "submit",
        "--entrypoint-num-gpus",
        "1",
        fx::GPU_MATMUL,
        "matmul",
        "64",
        "7",
    ]);
    let diff: f64 = out.trim().parse().expect("a number");
    assert!(diff < 1e-3, "GPU and CPU differ by {diff}");
}

#[test]
fn custom_resources_steer_tasks_and_fractions_share_a_node() {
    let mut c = Cluster::start(1);
    let tpu = c.add_worker_with(&[], &["--resources", r#"{"tpu": 1}"#]);
    block_on(async {
        let rt = c.runtime().await;
        let sq = rt.load_file(fx::SQUARES).await.expect("load");
        let refs: Vec<_> = (0..6i64)
            .map(|i| {
                sq.task("heavy-compute")
                    .args(&(i,))
                    .and_then(|t| t.resource("tpu", 0.5))
                    .and_then(|t| t.submit())
                    .expect("submit")
            })
            .collect();
        let values: Vec<i64> = rt.get_all(&refs).await.expect("get_all");
        assert_eq!(values, vec![0, 1, 4, 9, 16, 25]);
        for r in &refs {
            assert_eq!(c.node_of(task_id(r)), tpu);
        }
        let too_many = sq
            .task("heavy-compute")
            .args(&(1i64,))
            .and_then(|t| t.resource("tpu", 2.0))
            .and_then(|t| t.submit())
            .expect("submit");
        let err = rt.get::<i64>(&too_many).await.unwrap_err();
        assert!(matches!(err, Error::Infeasible(_)), "{err}");
        assert!(err.to_string().contains("tpu"), "{err}");
    });
}

#[test]
fn stopping_a_job_cancels_its_tasks_and_frees_its_node() {
    let c = Cluster::start(1);
    block_on(async {
        let rt = c.runtime().await;
        let m = rt.load_file(fx::MISBEHAVE).await.expect("load");
        let slow: Vec<_> = (0..4i64)
            .map(|i| {
                m.task("slow-square")
                    .args(&(i, 60_000u32))
                    .and_then(|t| t.submit())
                    .expect("submit")
            })
            .collect();
        wait_for("a slow task to run", 60, || {
            c.state("tasks")
                .tasks
                .iter()
                .any(|t| t.function == "slow-square" && t.state == "RUNNING")
                .then_some(())
        });
        let jobs = c.state("jobs").jobs;
        let mine = jobs
            .iter()
            .find(|j| j.entrypoint.starts_with("client") && j.state == JobState::Running)
            .expect("the client's job");
        let out = c.ok(&["job", "stop", &mine.job.to_string()]);
        assert!(out.contains("STOPPED"), "{out}");
        for r in &slow {
            let err = rt.get::<i64>(r).await.unwrap_err();
            assert!(matches!(err, Error::Cancelled(_)), "{err}");
        }
    });
    // Its CPUs are free again and nothing is left running.
    let nodes = c.state("nodes").nodes;
    for n in nodes {
        let free = n.available.unwrap_or_default();
        assert_eq!(
            free.num_cpus(),
            n.total.num_cpus(),
            "{} still holds CPUs",
            n.id
        );
        assert_eq!(n.running, 0);
    }
}

/// What a node's object server holds, for the in-process server below.
struct Held(
    std::collections::HashMap<ferray::ObjectId, bytes::Bytes>,
    bool,
);

impl ferray_proto::ObjectSource for Held {
    fn object(&self, id: &ferray::ObjectId) -> Result<bytes::Bytes, Error> {
        self.0
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("object {} is not here", id.short())))
    }

    fn corrupt_next(&self) -> bool {
        self.1
    }
}

/// An object server (the one every node runs) on 127.0.0.1 over `objects`.
async fn object_server(objects: &[bytes::Bytes], corrupt: bool) -> (String, ferray_proto::Token) {
    let held = objects
        .iter()
        .map(|b| (ferray::ObjectId::of(b), b.clone()))
        .collect();
    let token = ferray_proto::Token::generate().expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = listener.local_addr().expect("address").to_string();
    let svc = ferray_proto::objects_server(Held(held, corrupt), &token);
    tokio::spawn(
        ferray_proto::server()
            .add_service(svc)
            .serve_with_incoming(ferray_proto::incoming(listener)),
    );
    (addr, token)
}

#[test]
fn object_pulls_are_plain_grpc_checked_against_their_id() {
    let sizes = [0usize, 1, 1 << 20, (5 << 20) + 3, 9 << 20];
    let objects: Vec<bytes::Bytes> = sizes
        .iter()
        .map(|&n| (0..n).map(|i| (i % 251) as u8 ^ (n as u8)).collect())
        .collect();
    block_on(async {
        let (addr, token) = object_server(&objects, false).await;
        let ch = ferray_proto::connect(&addr).await.expect("connect");
        let mut ours = ferray_proto::objects_client(ch.clone(), &token);
        // The generated client of `proto/ferray.proto` reads the same stream.
        let mut generated = ferray_proto::v1::objects_client::ObjectsClient::with_interceptor(
            ch,
            ferray_proto::AddToken(token.clone()),
        );
        for b in &objects {
            let id = ferray::ObjectId::of(b);
            let got = ferray_proto::pull(&mut ours, &addr, id)
                .await
                .expect("pull");
            assert_eq!(&got, b, "{} bytes through ferray's puller", b.len());
            let stream = generated
                .pull(ferray_proto::v1::ObjectKey {
                    id: ferray_proto::id_bytes(&id),
                })
                .await
                .expect("pull")
                .into_inner();
            let (gid, got) = ferray_proto::assemble(stream, None, u64::MAX)
                .await
                .expect("assemble");
            assert_eq!((gid, &got), (id, b), "{} bytes through tonic", b.len());
        }
        // An object the server does not hold.
        let missing = ferray::ObjectId::of(b"not there");
        let err = ferray_proto::pull(&mut ours, &addr, missing)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        // The wrong token.
        let ch = ferray_proto::connect(&addr).await.expect("connect");
        let wrong = ferray_proto::Token::generate().expect("token");
        let mut theirs = ferray_proto::objects_client(ch, &wrong);
        let err = ferray_proto::pull(&mut theirs, &addr, ferray::ObjectId::of(&objects[2]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("refused the credentials"), "{err}");
    });
    // A server that damages what it sends: the puller says so and returns
    // nothing.
    block_on(async {
        let (addr, token) = object_server(&objects[3..4], true).await;
        let ch = ferray_proto::connect(&addr).await.expect("connect");
        let mut c = ferray_proto::objects_client(ch, &token);
        let err = ferray_proto::pull(&mut c, &addr, ferray::ObjectId::of(&objects[3]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    });
}

/// A driver's result too large to print is that job's error; the worker
/// goes on and the next job succeeds.
#[test]
fn a_job_result_too_large_to_print_is_the_job_s_error() {
    let c = Cluster::start_with(1, &[]);
    let out = c
        .cmd()
        .args(["submit", fx::MISBEHAVE, "make-bytes", "1500000", "1"])
        .output()
        .expect("submit");
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("bytes of WAVE text a job may return"),
        "{}",
        stderr(&out)
    );
    let out = c.ok(&["submit", fx::MISBEHAVE, "make-bytes", "4", "1"]);
    assert_eq!(out.trim(), "[1, 8, 15, 22]");
    let jobs = c.ok(&["job", "list"]);
    assert!(
        jobs.contains("FAILED") && jobs.contains("SUCCEEDED"),
        "{jobs}"
    );
}

/// Jobs cannot reach each other's actors: a guest of one job that kills or
/// calls another job's actor by id (and the ids around it) gets not-found,
/// as for an actor that does not exist; the owner's actor lives on with
/// its state, and the owner's own guest can still kill it.
#[test]
fn a_job_cannot_kill_or_call_another_jobs_actors() {
    let c = Cluster::start(1);
    block_on(async {
        let a = c.runtime().await;
        let b = c.runtime().await;
        let ma = a.load_file(fx::MISBEHAVE).await.unwrap();
        let tally = ma.actor("tally", (10i64,)).spawn().await.unwrap();
        let id = tally.id().0;
        assert_eq!(
            a.get::<i64>(&tally.call("incr", (1i64,)).unwrap())
                .await
                .unwrap(),
            11
        );
        let mb = b.load_file(fx::MISBEHAVE).await.unwrap();
        let first = id.saturating_sub(100);
        let killed: u32 = b
            .get(&mb.call("kill-range", (first, 200u32)).unwrap())
            .await
            .unwrap();
        assert_eq!(killed, 0, "job B killed job A's actors");
        let poked: Result<i64, String> = b.get(&mb.call("poke", (id,)).unwrap()).await.unwrap();
        let e = poked.expect_err("another job's actor");
        assert!(
            e.contains("NotFound") && e.contains("in the cluster"),
            "{e}"
        );
        let missing: Result<i64, String> = b
            .get(&mb.call("poke", (id + 1_000_000,)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            e.replace(&id.to_string(), "N"),
            missing
                .expect_err("no such actor")
                .replace(&(id + 1_000_000).to_string(), "N"),
            "another job's actor and a missing one are answered alike"
        );
        // The driver of job B, through the API.
        let err = b
            .get::<i64>(&b.actor_handle(tally.id()).call("incr", (1i64,)).unwrap())
            .await
            .expect_err("another job's actor");
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        // Job A's actor lived through it all, with its state.
        assert_eq!(
            a.get::<i64>(&tally.call("incr", (1i64,)).unwrap())
                .await
                .unwrap(),
            12
        );
        let killed: u32 = a
            .get(&ma.call("kill-range", (id, 1u32)).unwrap())
            .await
            .unwrap();
        assert_eq!(killed, 1, "a job kills its own actor");
        let err = a
            .get::<i64>(&tally.call("incr", (1i64,)).unwrap())
            .await
            .expect_err("killed");
        assert!(matches!(err, Error::ActorDied(_)), "{err:?}");
    });
}

/// A job asking a worker for more zero-CPU actors than its instance pool
/// holds: those past it are allocated on demand and every one answers, and
/// another job's tasks still run there.
#[test]
fn a_worker_holds_actors_past_its_instance_pool_and_tasks_still_run() {
    let c = Cluster::start(1);
    block_on(async {
        let a = c.runtime().await;
        let m = a.load_file(fx::MISBEHAVE).await.unwrap();
        let mut actors = Vec::new();
        for i in 0..1_000i64 {
            actors.push(m.actor("tally", (i,)).spawn().await.unwrap());
        }
        let refs: Vec<_> = actors
            .iter()
            .map(|x| x.call("incr", (1i64,)).unwrap())
            .collect();
        // 875 in the pool's slots (125 are kept for tasks), the rest
        // allocated on demand: each answers with its own state.
        let got: Vec<i64> = a.get_all(&refs).await.unwrap();
        assert_eq!(got, (0..1_000).map(|i| i + 1).collect::<Vec<i64>>());
        let b = c.runtime().await;
        let squares = b.load_file(fx::SQUARES).await.unwrap();
        let refs: Vec<_> = (0..20i64)
            .map(|i| squares.call("heavy-compute", (i,)).unwrap())
            .collect();
        let got: Vec<i64> = b.get_all(&refs).await.unwrap();
        assert_eq!(got, (0..20).map(|i| i * i).collect::<Vec<i64>>());
    });
}

/// The cluster's state comes in pages: `ferray list jobs`, `ferray job
/// list` and `ferray status` page through it and show every job once, in
/// order, when there are more jobs than fit one page (pages of 2 here).
#[test]
fn lists_page_through_more_jobs_than_one_page() {
    let c = Cluster::start(1);
    let mut jobs: Vec<String> = (0..7)
        .map(|i| {
            let n = i.to_string();
            let out = c.ok(&["submit", "--no-wait", fx::SQUARES, "heavy-compute", &n]);
            out.trim().to_string()
        })
        .collect();
    jobs.sort_by_key(|j| j.trim_start_matches("job-").parse::<u64>().unwrap_or(0));
    let small = |args: &[&str]| {
        let out = c
            .cmd()
            .env("FERRAY_TESTING_PAGE_SIZE", "2")
            .args(args)
            .output()
            .expect("run ferray");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    for args in [&["list", "jobs"][..], &["job", "list"][..]] {
        let out = small(args);
        let listed: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(listed, jobs, "{args:?}:\n{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("JOB")).count(), 1);
    }
    let status = small(&["status"]);
    assert!(status.contains("jobs: 7 ("), "{status}");
    // The protocol: a page holds at most what was asked, and its `next`
    // leads on until every job was seen once.
    block_on(async {
        let token = ferray_proto::Token::new(&c.token).expect("token");
        let ch = ferray_proto::connect(&c.address).await.expect("connect");
        let mut head = ferray_proto::head_client(ch, &token);
        let (mut seen, mut after, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let page = head
                .cluster(ferray_proto::v1::ClusterRequest {
                    what: "jobs".into(),
                    limit: 3,
                    after: std::mem::take(&mut after),
                    ..Default::default()
                })
                .await
                .expect("a page")
                .into_inner();
            assert!(page.jobs.len() <= 3);
            seen.extend(page.jobs.iter().map(|j| format!("job-{}", j.job)));
            pages += 1;
            if page.next.is_empty() {
                break;
            }
            after = page.next;
        }
        assert_eq!(seen, jobs);
        assert_eq!(pages, 3);
        let bad = head
            .cluster(ferray_proto::v1::ClusterRequest {
                what: "jobs".into(),
                limit: 3,
                after: "not-a-cursor".into(),
                ..Default::default()
            })
            .await
            .expect_err("a bad cursor is refused");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    });
}

/// The head holds each job to the operator's caps (`ferray start --head
/// --max-job-*`): a driver whose guest submits past its job's cap of tasks
/// in flight gets a clear error and its job fails; the next job, within the
/// cap, runs on the same cluster.
#[test]
fn the_head_holds_each_job_to_its_caps() {
    let c = Cluster::start_with(1, &["--max-job-tasks", "2"]);
    let out = c
        .cmd()
        .args(["submit", fx::MISBEHAVE, "nest", "8"])
        .output()
        .expect("submit");
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("tasks and actor calls in flight"),
        "{}",
        stderr(&out)
    );
    let out = c.ok(&["submit", fx::MISBEHAVE, "nest", "1"]);
    assert_eq!(out.trim(), "1");
}

/// A driver re-run after kill -9 of its worker does not redo finished
/// work: its submissions equal to the earlier attempt's get the earlier
/// tasks' results. The job's progress counts each task once, and the tasks
/// ran once each, but for those the dead worker held.
#[test]
fn a_rerun_driver_does_not_redo_finished_work() {
    let mut c = Cluster::start(2);
    let out = c.ok(&["submit", "--no-wait", fx::MISBEHAVE, "fan-out", "200", "25"]);
    let job = out.trim().to_string();
    let driver_node = wait_for("the driver to run", 60, || {
        c.state("tasks")
            .tasks
            .iter()
            .find(|t| t.function == "fan-out" && t.state == "RUNNING")
            .and_then(|t| t.node)
            .map(|n| n.0)
    });
    let done_at_kill = wait_for("40 tasks done", 120, || {
        c.job(&job)
            .filter(|j| j.tasks_done >= 40)
            .map(|j| j.tasks_done)
    });
    c.kill_worker(driver_node);
    assert!(done_at_kill < 200, "the job ended before the kill");
    let status = wait_for("the job to end", 300, || {
        c.job(&job).filter(|j| j.state.finished())
    });
    assert_eq!(status.state, JobState::Succeeded, "{status:?}");
    assert_eq!(
        status.tasks_total, 200,
        "every task counted once: {status:?}"
    );
    let shown = c.ok(&["job", "status", &job]);
    let want: Vec<String> = (0..200i64).map(|i| (i * i).to_string()).collect();
    assert!(
        shown.contains(&format!("  result: [{}]\n", want.join(", "))),
        "{shown}"
    );
    // Each ran once, but for what the dead node held when it died (at most
    // its backlog: 8 per CPU on 2 CPUs) and results rebuilt after it.
    let attempts: u32 = c
        .state("tasks")
        .tasks
        .iter()
        .filter(|t| t.function == "slow-square")
        .map(|t| t.attempts)
        .sum();
    assert!(
        attempts <= 200 + 2 * 16 + done_at_kill as u32,
        "{attempts} attempts"
    );
    let tasks = c
        .state("tasks")
        .tasks
        .iter()
        .filter(|t| t.function == "slow-square")
        .count();
    assert_eq!(tasks, 200, "no task was made twice");
}

/// A direct call's answer is the caller's before the head hears of it from
/// the actor's node; when that node dies at once, the answer (small, so the
/// caller holds it) still serves as an argument: the caller sends its value.
#[test]
fn a_direct_answer_stays_usable_when_its_node_dies_at_once() {
    use ferray_core::{Arg, Strategy};
    let mut c = Cluster::start(2);
    let (w1, w2) = (c.workers[0].1, c.workers[1].1);
    let (rt, answer) = block_on(async {
        let rt = c.runtime().await;
        let comp = rt.load_file(fx::COUNTER).await.expect("load");
        let a = comp
            .actor("api.counter", (10i64,))
            .strategy(Strategy::Node {
                node: w2,
                soft: false,
            })
            .spawn()
            .await
            .expect("spawn");
        // The first answer says where it lives; the next calls go straight there.
        let first = a.call("incr", (1i64,)).expect("call");
        assert_eq!(rt.get::<i64>(&first).await.expect("incr"), 11);
        let r = a.call("incr", (5i64,)).expect("call");
        assert_eq!(rt.get::<i64>(&r).await.expect("incr"), 16);
        (rt, r)
    });
    c.kill_worker(w2);
    block_on(async {
        let comp = rt.load_file(fx::COUNTER).await.expect("load");
        let b = comp
            .actor("api.counter", (100i64,))
            .strategy(Strategy::Node {
                node: w1,
                soft: false,
            })
            .spawn()
            .await
            .expect("spawn");
        let r = b.call_with("incr", vec![Arg::Ref(answer)]).expect("call");
        assert_eq!(
            rt.get::<i64>(&r).await.expect("the answer as an argument"),
            116
        );
    });
}
