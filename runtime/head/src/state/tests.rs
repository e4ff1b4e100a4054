//! The state machine's transitions, driven through its event API, checked
//! on the effects it emits and on its tables.

use std::time::Duration;

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, Error, JobId, NodeId, ObjectId, Resources, Strategy, TaskId, TaskOptions,
};

use super::harness::{Client, Node, World, address, made, opts};
use super::views::{LIST_TEXT_MAX, ListFilter, MAX_PAGE};
use super::{
    Acting, Arg, CallActor, Done, HEAD_HOLDER, Input, JobRequest, JobState, KillActor, Outcome,
    Put, ResolvedArg, Submit, TState,
};

fn value(b: &'static [u8]) -> Arg {
    Arg::Value(Bytes::from_static(b))
}

fn actor_opts(cpus: f64, max_restarts: u32) -> ActorOptions {
    ActorOptions {
        resources: Resources::cpus(cpus),
        max_restarts,
        ..ActorOptions::default()
    }
}

// ----- tasks -----

#[test]
fn a_task_is_assigned_started_done_and_resolved_to_its_submitter() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let t = w.submit(c, vec![value(b"x")], opts(1.0, 3));
    let sent = w.take();
    assert_eq!(sent.assign(n), (t, 1));
    let a = &sent.assigns(n)[0];
    assert_eq!(a.job, c.job);
    assert_eq!(a.args, vec![ResolvedArg::Value(Bytes::from_static(b"x"))]);
    assert!(!a.driver);
    // The node may answer the client straight (its results key).
    assert_eq!(a.caller_key, Some(super::harness::results_key(c.session)));
    assert_eq!(w.task_state(t), Some("RUNNING"));
    // Assigned is not started: the node's admission decides.
    assert_eq!(w.free_cpus(n), 2.0);
    w.started(n, t);
    assert_eq!(w.free_cpus(n), 1.0);
    let id = w.ok(n, t, 1, b"result", false);
    assert_eq!(w.free_cpus(n), 2.0);
    let loc = w.take().loc_of(c.session, t);
    assert_eq!(loc.id, id);
    assert_eq!(loc.inline.as_deref(), Some(&b"result"[..]));
    assert_eq!(loc.holders, vec![address(n.id)]);
    assert_eq!(w.task_state(t), Some("FINISHED"));
    assert!(w.st.nodes[&n.id].running.is_empty());
    let info = w.st.job_info(c.job).expect("the client's job");
    assert_eq!((info.tasks_done, info.tasks_total), (1, 1));
    assert_eq!(info.state, JobState::Running);
}

#[test]
fn a_task_waits_for_its_dependency_then_runs_where_its_bytes_are() {
    let mut w = World::new();
    let small = w.node(1.0);
    let big = w.node(4.0);
    let c = w.client();
    let pinned = TaskOptions {
        strategy: Strategy::Node {
            node: small.id.0,
            soft: false,
        },
        ..opts(1.0, 3)
    };
    let t1 = w.submit(c, vec![], pinned);
    let t2 = w.submit(c, vec![Arg::Task(t1)], opts(1.0, 3));
    let sent = w.take();
    assert_eq!(sent.assign(small), (t1, 1));
    assert!(sent.assigns(big).is_empty());
    assert_eq!(w.task_state(t2), Some("WAITING_FOR_DEPENDENCIES"));
    let id = w.run(small, t1, 1, b"big result", true);
    let sent = w.take();
    // The bigger node is idle, but the argument's bytes are on the small one.
    assert_eq!(sent.assign(small), (t2, 1));
    let arg = &sent.assigns(small)[0].args[0];
    match arg {
        ResolvedArg::Object(loc) => {
            assert_eq!(loc.id, id);
            assert_eq!(loc.inline, None);
            assert_eq!(loc.holders, vec![address(small.id)]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_dependency_fails_its_dependents() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let t1 = w.submit(c, vec![], opts(1.0, 3));
    let t2 = w.submit(c, vec![value(b"v"), Arg::Task(t1)], opts(1.0, 3));
    w.started(n, t1);
    w.fail(n, t1, 1, Error::Trap("boom".into()));
    let sent = w.take();
    assert!(matches!(sent.error_of(c.session, t1), Error::Trap(_)));
    let e = sent.error_of(c.session, t2);
    assert!(
        matches!(&e, Error::TaskFailed(m) if m.contains(&format!("its argument {t1} failed"))),
        "{e}"
    );
    assert_eq!(w.task_state(t2), Some("FAILED"));
    let info = w.st.job_info(c.job).expect("job");
    assert_eq!((info.tasks_done, info.tasks_total), (2, 2));
}

#[test]
fn system_failures_are_retried_within_max_retries() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 2));
    for attempt in 1..=3 {
        let sent = w.take();
        assert_eq!(sent.assign(n), (t, attempt));
        assert!(sent.resolved(c.session).is_empty());
        w.started(n, t);
        assert_eq!(w.free_cpus(n), 0.0);
        w.fail(n, t, attempt, Error::System("disk".into()));
        assert_eq!(w.free_cpus(n), 1.0);
    }
    // 1 + max_retries attempts, then the error is the task's.
    let sent = w.take();
    assert!(sent.assigns(n).is_empty());
    assert!(matches!(sent.error_of(c.session, t), Error::System(_)));
    assert_eq!(w.st.tasks[&t].attempts, 3);
}

#[test]
fn application_errors_are_retried_only_with_retry_exceptions() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.take();
    w.fail(n, t, 1, Error::Trap("panic".into()));
    assert!(matches!(w.take().error_of(c.session, t), Error::Trap(_)));

    let retrying = TaskOptions {
        retry_exceptions: true,
        ..opts(1.0, 3)
    };
    let t = w.submit(c, vec![], retrying);
    w.take();
    w.fail(n, t, 1, Error::TimeLimit("1s".into()));
    let sent = w.take();
    assert_eq!(sent.assign(n), (t, 2));
    assert!(sent.resolved(c.session).is_empty());
}

#[test]
fn an_err_value_with_retry_exceptions_is_retried_and_its_result_freed() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let t = w.submit(
        c,
        vec![],
        TaskOptions {
            retry_exceptions: true,
            ..opts(1.0, 3)
        },
    );
    w.take();
    let m = made(b"err(oops)", true);
    let id = m.id;
    w.send(
        n.session,
        Input::Done(Done {
            task: t,
            attempt: 1,
            outcome: Outcome::Made(m),
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            wave: String::new(),
            err_value: true,
            direct: false,
        }),
    );
    let sent = w.take();
    assert_eq!(sent.frees(n), vec![id]);
    assert_eq!(sent.assign(n), (t, 2));
    assert!(!w.st.objects.contains_key(&id));
}

#[test]
fn a_stale_attempt_is_ignored_and_its_result_freed() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.take();
    w.fail(n, t, 1, Error::System("flaky".into()));
    assert_eq!(w.take().assign(n), (t, 2));
    // The first attempt's result arrives late.
    let late = w.ok(n, t, 1, b"late", true);
    let sent = w.take();
    assert_eq!(sent.frees(n), vec![late]);
    assert!(sent.resolved(c.session).is_empty());
    assert_eq!(w.task_state(t), Some("RUNNING"));
    let id = w.run(n, t, 2, b"fresh", false);
    assert_eq!(w.take().loc_of(c.session, t).id, id);
}

#[test]
fn a_result_the_cluster_already_has_is_not_freed_when_stale() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let t1 = w.submit(c, vec![], opts(1.0, 3));
    let same = w.run(n, t1, 1, b"same", true);
    // A Done for a task the head does not know (its job ended): the node
    // keeps an object that the cluster knows it holds.
    w.take();
    w.ok(n, ferray_core::TaskId(t1.0 + 100), 1, b"same", true);
    assert!(w.take().frees(n).is_empty());
    assert!(w.st.objects[&same].holders.contains(&n.id));
}

#[test]
fn started_and_blocked_mirror_the_nodes_admission() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let t1 = w.submit(c, vec![], opts(1.0, 3));
    let t2 = w.submit(c, vec![], opts(1.0, 3));
    let t3 = w.submit(c, vec![], opts(1.0, 3));
    w.started(n, t1);
    assert_eq!(w.free_cpus(n), 1.0);
    // A second Started changes nothing.
    w.started(n, t1);
    assert_eq!(w.free_cpus(n), 1.0);
    w.send(
        n.session,
        Input::Blocked {
            task: t1,
            blocked: true,
        },
    );
    assert_eq!(w.free_cpus(n), 2.0);
    w.started(n, t2);
    w.started(n, t3);
    assert_eq!(w.free_cpus(n), 0.0);
    // Resumed without room: it runs on without counting its CPUs.
    w.send(
        n.session,
        Input::Blocked {
            task: t1,
            blocked: false,
        },
    );
    assert_eq!(w.free_cpus(n), 0.0);
    w.ok(n, t1, 1, b"1", false);
    assert_eq!(w.free_cpus(n), 0.0);
    w.ok(n, t2, 1, b"2", false);
    w.ok(n, t3, 1, b"3", false);
    assert_eq!(w.free_cpus(n), 2.0);
}

#[test]
fn a_node_holds_a_backlog_of_eight_tasks_per_cpu() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let ts: Vec<_> = (0..9).map(|_| w.submit(c, vec![], opts(1.0, 3))).collect();
    let sent = w.take();
    assert_eq!(sent.assigns(n).len(), 8);
    assert_eq!(w.task_state(ts[8]), Some("PENDING_NODE_ASSIGNMENT"));
    // A start leaves the backlog: the ninth goes.
    w.started(n, ts[0]);
    assert_eq!(w.take().assign(n), (ts[8], 1));
}

#[test]
fn a_task_waits_while_no_node_has_room() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let a = w.create_actor(c, actor_opts(1.0, 0));
    assert_eq!(w.take().starts(n).len(), 1);
    let t = w.submit(c, vec![], opts(1.0, 3));
    // Assigned to the node's backlog, but its admission has no room.
    assert_eq!(w.take().assign(n), (t, 1));
    let b = w.create_actor(c, actor_opts(1.0, 0));
    assert!(w.take().starts(n).is_empty());
    assert!(matches!(w.st.actors[&b].state, super::AState::Pending));
    w.send(
        c.session,
        Input::KillActor(KillActor {
            actor: a,
            acting: Acting::Session,
            task: None,
        }),
    );
    assert_eq!(
        w.take().starts(n).len(),
        1,
        "the second actor takes its place"
    );
}

#[test]
fn infeasible_demands_fail_at_once() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(8.0, 3));
    let e = w.take().error_of(c.session, t);
    assert!(
        matches!(&e, Error::Infeasible(m) if m.contains("8 CPUs")),
        "{e}"
    );
    let tpu = TaskOptions {
        resources: Resources::cpus(1.0).with_custom("tpu", 1.0).expect("tpu"),
        ..opts(1.0, 3)
    };
    let t = w.submit(c, vec![], tpu);
    assert!(matches!(
        w.take().error_of(c.session, t),
        Error::Infeasible(_)
    ));
    let elsewhere = TaskOptions {
        strategy: Strategy::Node {
            node: 99,
            soft: false,
        },
        ..opts(1.0, 3)
    };
    let t = w.submit(c, vec![], elsewhere);
    assert!(matches!(
        w.take().error_of(c.session, t),
        Error::Infeasible(_)
    ));
    let a = w.create_actor(c, actor_opts(3.0, 0));
    let call = w.call(c, a);
    let sent = w.take();
    assert!(sent.starts(n).is_empty());
    assert!(matches!(
        sent.error_of(c.session, call),
        Error::Infeasible(_)
    ));
    assert_eq!(w.free_cpus(n), 2.0);
}

#[test]
fn submissions_are_checked() {
    let mut w = World::new();
    w.node(1.0);
    let c = w.client();
    let other = w.client();
    let comp = w.comp;
    let submit = |task: u64, component, args| {
        Input::Submit(Submit {
            task: ferray_core::TaskId(task),
            acting: Acting::Session,
            component,
            function: "f".into(),
            options: Ok(TaskOptions::default()),
            args,
        })
    };
    // Not in the session's range.
    let foreign = (other.session << 32) | 1;
    w.send(c.session, submit(foreign, Ok(comp), Ok(vec![])));
    let e = w.take().error_of(c.session, ferray_core::TaskId(foreign));
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    // A component the head does not have.
    let id = w.id(c.session);
    let unknown = Ok(ferray_core::ComponentId::of(b"nope"));
    w.send(c.session, submit(id, unknown, Ok(vec![])));
    let e = w.take().error_of(c.session, ferray_core::TaskId(id));
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    // Arguments that did not decode.
    let id = w.id(c.session);
    let bad = Err(Error::InvalidArgument("an argument without a kind".into()));
    w.send(c.session, submit(id, Ok(comp), bad));
    let e = w.take().error_of(c.session, ferray_core::TaskId(id));
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    // Twice from its session (one that came back to a restarted head
    // sends again what has no answer): not run twice, not refused.
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.take();
    w.send(c.session, submit(t.0, Ok(comp), Ok(vec![])));
    assert!(w.take().is_empty(), "sent again: nothing to do");
    // Another session's id is refused.
    w.send(other.session, submit(t.0, Ok(comp), Ok(vec![])));
    let e = w.take().error_of(other.session, t);
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    // Into a job that has ended (its session is still open).
    w.st.stop_job(other.job).expect("stop");
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.take();
    let id = w.id(other.session);
    w.send(other.session, submit(id, Ok(comp), Ok(vec![])));
    let e = w.take().error_of(other.session, ferray_core::TaskId(id));
    assert!(matches!(e, Error::Cancelled(_)), "{e}");
    assert!(w.st.tasks.contains_key(&t));
}

#[test]
fn output_goes_to_the_jobs_log_and_to_a_connected_client() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.take();
    let m = made(b"r", false);
    w.send(
        n.session,
        Input::Done(Done {
            task: t,
            attempt: 1,
            outcome: Outcome::Made(m),
            stdout: Bytes::from_static(b"hello\nworld\n"),
            stderr: Bytes::from_static(b"oops\n"),
            wave: String::new(),
            err_value: false,
            direct: false,
        }),
    );
    let sent = w.take();
    let outputs: Vec<_> = sent
        .0
        .iter()
        .filter_map(|(s, e)| match e {
            super::Effect::Output { source, stdout, .. } if *s == c.session => {
                Some((source.clone(), stdout.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        outputs,
        vec![(
            format!("{t}, {}", n.id),
            Bytes::from_static(b"hello\nworld\n")
        )]
    );
    let (lines, next) = w.st.job_logs(c.job, 0);
    assert_eq!(
        lines,
        vec![
            format!("({t} {}) hello", n.id),
            format!("({t} {}) world", n.id),
            format!("({t} {}) oops", n.id),
        ]
    );
    assert_eq!(next, 3);
    assert_eq!(w.st.job_logs(c.job, 2).0.len(), 1);
    assert!(w.st.out.jobs.contains(&c.job));
}

// ----- cancellation -----

#[test]
fn cancel_fails_a_waiting_task_and_stops_a_running_one() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let running = w.submit(c, vec![], opts(1.0, 3));
    let waiting = w.submit(c, vec![Arg::Task(running)], opts(1.0, 3));
    w.take();
    w.send(
        c.session,
        Input::Cancel {
            task: waiting,
            acting: Acting::Session,
        },
    );
    let e = w.take().error_of(c.session, waiting);
    assert!(matches!(e, Error::Cancelled(_)), "{e}");
    w.started(n, running);
    w.send(
        c.session,
        Input::Cancel {
            task: running,
            acting: Acting::Session,
        },
    );
    let sent = w.take();
    assert_eq!(sent.cancels(n), vec![running]);
    assert!(sent.resolved(c.session).is_empty());
    // What the node answers is not retried, even a system fault.
    w.fail(n, running, 1, Error::System("cancelled mid-write".into()));
    let sent = w.take();
    assert!(sent.assigns(n).is_empty());
    assert!(matches!(
        sent.error_of(c.session, running),
        Error::System(_)
    ));
    assert_eq!(w.free_cpus(n), 1.0);
}

#[test]
fn a_cancelled_task_whose_node_dies_is_cancelled_not_retried() {
    let mut w = World::new();
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    assert_eq!(w.take().assign(a), (t, 1));
    w.send(
        c.session,
        Input::Cancel {
            task: t,
            acting: Acting::Session,
        },
    );
    w.take();
    w.kill(a);
    let sent = w.take();
    assert!(sent.assigns(b).is_empty());
    assert!(matches!(sent.error_of(c.session, t), Error::Cancelled(_)));
}

// ----- nodes -----

#[test]
fn node_death_retries_its_tasks_elsewhere_within_max_retries() {
    let mut w = World::new();
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 1));
    assert_eq!(w.take().assign(a), (t, 1));
    w.started(a, t);
    w.kill(a);
    assert!(!w.st.nodes[&a.id].alive);
    assert!(w.st.sched.free(a.id).is_none());
    let sent = w.take();
    assert!(sent.closed(a.session));
    assert_eq!(sent.assign(b), (t, 2));
    w.started(b, t);
    w.kill(b);
    let e = w.take().error_of(c.session, t);
    assert!(
        matches!(&e, Error::System(m) if m.contains("no retries left")),
        "{e}"
    );
}

#[test]
fn messages_from_a_dead_nodes_session_are_not_heard() {
    let mut w = World::new();
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.started(a, t);
    w.kill(a);
    assert_eq!(w.take().assign(b), (t, 2));
    // The dead node's late messages: its result, a put, a located.
    let late = w.ok(a, t, 1, b"late", true);
    let put = w.put(a.session, Acting::Session, b"put", false);
    w.send(a.session, Input::Located(late));
    let sent = w.take();
    assert!(sent.is_empty(), "{sent:?}");
    assert!(!w.st.objects.contains_key(&late));
    assert!(!w.st.objects.contains_key(&put));
    assert_eq!(w.task_state(t), Some("RUNNING"));
    w.run(b, t, 2, b"fresh", false);
    assert_eq!(w.take().resolved(c.session).len(), 1);
}

#[test]
fn reports_about_another_nodes_task_are_ignored() {
    let mut w = World::new();
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    assert_eq!(w.take().assign(a), (t, 1));
    w.started(b, t);
    w.send(
        b.session,
        Input::Blocked {
            task: t,
            blocked: true,
        },
    );
    assert_eq!((w.free_cpus(a), w.free_cpus(b)), (1.0, 1.0));
    assert!(!w.st.tasks[&t].started);
    let forged = w.ok(b, t, 1, b"forged", true);
    let sent = w.take();
    assert_eq!(sent.frees(b), vec![forged]);
    assert!(sent.resolved(c.session).is_empty());
    assert_eq!(w.task_state(t), Some("RUNNING"));
}

#[test]
fn a_silent_node_is_declared_dead_and_its_session_closed() {
    let mut w = World::new();
    let t0 = w.now;
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    assert_eq!(w.take().assign(a), (t, 1));
    w.st.touch(b.session, t0 + Duration::from_secs(3));
    w.st.check_heartbeats(t0 + Duration::from_secs(5), Duration::from_secs(5));
    assert!(w.take().is_empty(), "not late yet");
    w.st.check_heartbeats(t0 + Duration::from_secs(6), Duration::from_secs(5));
    let sent = w.take();
    assert!(sent.closed(a.session));
    assert!(!sent.closed(b.session));
    assert_eq!(sent.assign(b), (t, 2));
    assert!(!w.st.nodes[&a.id].alive);
    assert!(w.st.nodes[&b.id].alive);
    // Its stream ending later changes nothing more.
    w.st.close_session(a.session, "its session ended");
    assert!(w.take().is_empty());
}

#[test]
fn an_object_with_another_holder_survives_its_nodes_death() {
    let mut w = World::new();
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t1 = w.submit(c, vec![], opts(1.0, 3));
    let id = w.run(a, t1, 1, b"shared", true);
    w.send(b.session, Input::Located(id));
    w.kill(a);
    w.take();
    let t2 = w.submit(c, vec![Arg::Task(t1)], opts(1.0, 3));
    let sent = w.take();
    assert_eq!(sent.assign(b), (t2, 1));
    assert_eq!(w.st.tasks[&t1].attempts, 1, "not rebuilt");
}

// ----- objects and lineage -----

#[test]
fn a_lost_result_is_rebuilt_by_lineage_and_resolved_once() {
    let mut w = World::new();
    let a = w.node(2.0);
    let b = w.node(2.0);
    let c = w.client();
    let t1 = w.submit(c, vec![], opts(1.0, 3));
    assert_eq!(w.take().assign(a), (t1, 1));
    let id = w.run(a, t1, 1, b"made", true);
    assert_eq!(w.take().resolved(c.session).len(), 1);
    w.kill(a);
    w.take();
    let t2 = w.submit(c, vec![Arg::Task(t1)], opts(1.0, 3));
    let sent = w.take();
    assert_eq!(sent.assign(b), (t1, 2), "t1 runs again");
    assert_eq!(w.task_state(t2), Some("WAITING_FOR_DEPENDENCIES"));
    w.run(b, t1, 2, b"made", true);
    let sent = w.take();
    assert_eq!(sent.assign(b), (t2, 1));
    assert!(
        sent.resolved(c.session).is_empty(),
        "the submitter had t1's result already"
    );
    assert_eq!(
        w.st.objects[&id].holders.iter().collect::<Vec<_>>(),
        [&b.id]
    );
    w.run(b, t2, 1, b"after", false);
    let info = w.st.job_info(c.job).expect("job");
    assert_eq!((info.tasks_done, info.tasks_total), (2, 2));
}

#[test]
fn locate_rebuilds_a_lost_object_and_tells_when_it_is_back() {
    let mut w = World::new();
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    let id = w.run(a, t, 1, b"made", true);
    let loc = w.st.locate(id).expect("locate").expect("it is there");
    assert_eq!(loc.holders, vec![address(a.id)]);
    w.kill(a);
    w.take();
    w.st.out.objects.clear();
    assert_eq!(w.st.locate(id).expect("locate"), None);
    assert_eq!(w.take().assign(b), (t, 2));
    w.run(b, t, 2, b"made", true);
    assert!(w.st.out.objects.contains(&id), "locate's waiters are told");
    let loc = w.st.locate(id).expect("locate").expect("it is back");
    assert_eq!(loc.holders, vec![address(b.id)]);
    // Unknown objects are not found.
    let e = w.st.locate(ObjectId::of(b"never")).expect_err("unknown");
    assert!(matches!(e, Error::NotFound(_)));
}

#[test]
fn a_lost_put_cannot_be_rebuilt() {
    let mut w = World::new();
    let a = w.node(1.0);
    w.node(1.0);
    let c = w.client();
    let acting = w.task_on(a, c);
    let p = w.put(a.session, acting, b"a worker's put", false);
    assert!(w.st.objects[&p].holders.contains(&a.id));
    w.kill(a);
    w.take();
    let t = w.submit(c, vec![Arg::Object(p)], opts(1.0, 3));
    let e = w.take().error_of(c.session, t);
    assert!(
        matches!(&e, Error::ObjectLost(m) if m.contains("put")),
        "{e}"
    );
    let e = w.st.locate(p).expect_err("lost");
    assert!(matches!(e, Error::ObjectLost(_)));
}

#[test]
fn a_rebuild_that_fails_at_once_fails_its_dependents() {
    let mut w = World::new();
    let a = w.node(1.0);
    w.node(1.0);
    let c = w.client();
    // t1's argument is a put held by `a` alone, and so is t1's result.
    let acting = w.task_on(a, c);
    let p = w.put(a.session, acting, b"only on a", false);
    let t1 = w.submit(c, vec![Arg::Object(p)], opts(1.0, 3));
    assert_eq!(w.take().assign(a), (t1, 1));
    w.run(a, t1, 1, b"also only on a", true);
    w.kill(a);
    w.take();
    // Rebuilding t1 fails at once (its argument is gone for good): t2
    // learns it instead of waiting on t1 forever.
    let t2 = w.submit(c, vec![Arg::Task(t1)], opts(1.0, 3));
    let sent = w.take();
    let e = sent.error_of(c.session, t2);
    assert!(matches!(e, Error::TaskFailed(_)), "{e}");
    assert!(
        sent.resolved(c.session).iter().all(|(t, _)| *t != t1),
        "t1 was resolved before"
    );
    assert_eq!(w.task_state(t1), Some("FAILED"));
    assert!(w.st.tasks[&t1].waiters.is_empty());
}

#[test]
fn a_corrupt_put_is_refused_and_leaves_nothing() {
    let mut w = World::new();
    let c = w.client();
    let id = ObjectId::of(b"the bytes");
    w.send(
        c.session,
        Input::Put(Put {
            id,
            size: 9,
            acting: Acting::Session,
            inline: Some(Bytes::from_static(b"other bytes")),
            uploading: false,
        }),
    );
    assert!(!w.st.objects.contains_key(&id));
    assert!(w.st.jobs[&c.job].objects.is_empty());
}

#[test]
fn a_put_into_an_ended_job_is_not_kept() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let acting = w.task_on(n, c);
    w.st.stop_job(c.job).expect("stop");
    w.take();
    let p = w.put(n.session, acting, b"too late", false);
    assert_eq!(w.take().frees(n), vec![p]);
    assert!(!w.st.objects.contains_key(&p));
    let q = w.put(c.session, Acting::Session, b"too late, inline", true);
    assert!(!w.st.objects.contains_key(&q));
}

#[test]
fn an_upload_is_waited_for_and_then_found_at_the_head() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let id = ObjectId::of(b"large");
    let upload = |uploading| {
        Input::Put(Put {
            id,
            size: 5 << 20,
            acting: Acting::Session,
            inline: None,
            uploading,
        })
    };
    w.send(c.session, upload(true));
    assert_eq!(w.st.locate(id).expect("uploading"), None);
    let t = w.submit(c, vec![Arg::Object(id)], opts(1.0, 3));
    assert!(w.take().assigns(n).is_empty());
    w.st.out.objects.clear();
    w.st.pushed(id, 5 << 20, false);
    assert!(w.st.out.objects.contains(&id));
    let sent = w.take();
    assert_eq!(sent.assign(n), (t, 1));
    match &sent.assigns(n)[0].args[0] {
        ResolvedArg::Object(loc) => assert_eq!(loc.holders, vec!["head:1".to_string()]),
        other => panic!("{other:?}"),
    }
    assert!(!w.st.objects[&id].pinned);
    assert!(w.st.objects[&id].holders.contains(&HEAD_HOLDER));
    // The job's end lets the head's store drop it.
    w.st.close_session(c.session, "done");
    assert_eq!(w.st.out.head_frees, vec![id]);
    assert!(!w.st.objects.contains_key(&id));
}

/// A client's large put travels on two streams: the session's `Put` (the
/// job) and the upload of its bytes. When the bytes come first, the object
/// still belongs to the job and goes with it; only `ferray put` pins.
#[test]
fn an_upload_that_arrives_before_its_put_goes_with_its_job() {
    let mut w = World::new();
    w.node(1.0);
    let c = w.client();
    let id = ObjectId::of(b"large and early");
    w.st.pushed(id, 5 << 20, false);
    assert!(!w.st.objects[&id].pinned);
    w.send(
        c.session,
        Input::Put(Put {
            id,
            size: 5 << 20,
            acting: Acting::Session,
            inline: None,
            uploading: true,
        }),
    );
    w.st.close_session(c.session, "done");
    assert_eq!(w.st.out.head_frees, vec![id]);
    assert!(!w.st.objects.contains_key(&id));
    // `ferray put`: kept until the head stops.
    let kept = ObjectId::of(b"kept");
    w.st.pushed(kept, 5 << 20, true);
    assert!(w.st.objects[&kept].pinned);
}

#[test]
fn a_failed_upload_fails_what_waits_for_it() {
    let mut w = World::new();
    w.node(1.0);
    let c = w.client();
    let id = ObjectId::of(b"large");
    let upload = |uploading| {
        Input::Put(Put {
            id,
            size: 5 << 20,
            acting: Acting::Session,
            inline: None,
            uploading,
        })
    };
    w.send(c.session, upload(true));
    let t = w.submit(c, vec![Arg::Object(id)], opts(1.0, 3));
    w.send(c.session, upload(false));
    let e = w.take().error_of(c.session, t);
    assert!(matches!(e, Error::ObjectLost(_)), "{e}");
}

// ----- actors -----

#[test]
fn an_actor_holds_its_resources_and_its_calls_go_in_order() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let a = w.create_actor(c, actor_opts(1.0, 0));
    let sent = w.take();
    let starts = sent.starts(n);
    assert_eq!(starts.len(), 1);
    assert_eq!((starts[0].actor, starts[0].incarnation), (a, 0));
    assert_eq!(w.free_cpus(n), 1.0);
    let c1 = w.call(c, a);
    let c2 = w.call(c, a);
    let calls: Vec<_> = w
        .take()
        .calls(n)
        .iter()
        .map(|x| (x.task, x.seq, x.incarnation))
        .collect();
    assert_eq!(calls, vec![(c1, 0, 0), (c2, 1, 0)]);
    w.ok(n, c1, 1, b"1", false);
    w.fail(n, c2, 1, Error::System("lost".into()));
    let sent = w.take();
    assert_eq!(sent.resolved(c.session).len(), 2);
    assert!(sent.calls(n).is_empty(), "actor calls are not retried");
    assert!(matches!(sent.error_of(c.session, c2), Error::System(_)));
    assert_eq!(w.free_cpus(n), 1.0, "calls take nothing");
}

#[test]
fn a_call_waits_for_its_arguments_and_the_calls_behind_it_wait_too() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let a = w.create_actor(c, actor_opts(0.0, 0));
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.take();
    let c1 = ferray_core::TaskId(w.id(c.session));
    w.send(
        c.session,
        Input::CallActor(CallActor {
            acting: Acting::Session,
            task: c1,
            actor: a,
            method: "m".into(),
            args: Ok(vec![Arg::Task(t)]),
            direct: None,
        }),
    );
    let c2 = w.call(c, a);
    assert!(w.take().calls(n).is_empty());
    w.run(n, t, 1, b"arg", false);
    let order: Vec<_> = w.take().calls(n).iter().map(|x| x.task).collect();
    assert_eq!(order, vec![c1, c2]);
}

/// A node's end of a direct call (`direct` set, as a node reports it).
fn direct_done(w: &mut World, n: Node, t: TaskId, outcome: Outcome) {
    w.send(
        n.session,
        Input::Done(Done {
            task: t,
            attempt: 1,
            outcome,
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            wave: String::new(),
            err_value: false,
            direct: true,
        }),
    );
}

/// A client's report of a call it sent straight to `at`'s node (or, with
/// `at` unset, a call sent again whole for the head to route).
fn direct_call(w: &mut World, c: Client, a: ActorId, at: Option<&super::ActorAt>) -> TaskId {
    let t = TaskId(w.id(c.session));
    report_call(w, c, t, a, at);
    t
}

fn report_call(w: &mut World, c: Client, t: TaskId, a: ActorId, at: Option<&super::ActorAt>) {
    w.send(
        c.session,
        Input::CallActor(CallActor {
            task: t,
            acting: Acting::Session,
            actor: a,
            method: "add".into(),
            args: Ok(vec![]),
            direct: at.cloned(),
        }),
    );
}

/// A node, a client and its actor, whose first call went through the head:
/// its answer came after where the actor lives.
fn located_actor() -> (World, Node, Client, ActorId, super::ActorAt) {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let a = w.create_actor(c, actor_opts(1.0, 0));
    w.take();
    let first = w.call(c, a);
    w.take();
    w.ok(n, first, 1, b"1", false);
    let sent = w.take();
    let to_c: Vec<_> = sent.to(c.session).collect();
    let at = match to_c.as_slice() {
        [
            super::Effect::ActorAt(at),
            super::Effect::Resolved { task, .. },
        ] if *task == first => at.clone(),
        other => panic!("{other:?}"),
    };
    (w, n, c, a, at)
}

#[test]
fn a_caller_learns_where_its_actor_lives_and_its_direct_calls_are_recorded_not_answered() {
    let (mut w, n, c, a, at) = located_actor();
    assert_eq!(
        (
            at.actor,
            at.incarnation,
            at.node,
            at.address.as_str(),
            at.job
        ),
        (a, 0, n.id, address(n.id).as_str(), c.job)
    );
    // A direct call: the head records it as running on the node and sends
    // nothing (the node has it from the caller, and answers it).
    let t = direct_call(&mut w, c, a, Some(&at));
    let sent = w.take();
    assert!(
        sent.is_empty(),
        "{:?}",
        sent.to(c.session).collect::<Vec<_>>()
    );
    assert_eq!(w.task_state(t), Some("RUNNING"));
    direct_done(&mut w, n, t, Outcome::Made(made(b"2", false)));
    assert!(w.take().resolved(c.session).is_empty());
    assert_eq!(w.task_state(t), Some("FINISHED"));
    // The node's report may come before the caller's.
    let early = TaskId(w.id(c.session));
    direct_done(&mut w, n, early, Outcome::Made(made(b"3", false)));
    assert!(w.take().frees(n).is_empty(), "an early result is kept");
    report_call(&mut w, c, early, a, Some(&at));
    assert_eq!(w.task_state(early), Some("FINISHED"));
    assert!(w.take().resolved(c.session).is_empty());
    // A caller that lost its answers asks the head: an ended call is
    // answered at once; for a running one the node is asked.
    let running = direct_call(&mut w, c, a, Some(&at));
    w.take();
    w.send(
        c.session,
        Input::DirectLost {
            tasks: vec![t, running],
            unsent: vec![],
        },
    );
    let sent = w.take();
    assert_eq!(sent.loc_of(c.session, t).inline.as_deref(), Some(&b"2"[..]));
    let checks: Vec<_> = sent
        .to(n.session)
        .filter_map(|e| match e {
            super::Effect::CheckCalls(ts) => Some(ts.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(checks, vec![vec![running]]);
    // The node never got it: its answer fails the call, now for the caller.
    direct_done(
        &mut w,
        n,
        running,
        Outcome::Failed(Error::ActorDied("never came".into())),
    );
    assert!(matches!(
        w.take().error_of(c.session, running),
        Error::ActorDied(_)
    ));
}

/// A direct call that made its actor die (a trap with no restarts left):
/// the node reports the death at once, and the caller's report of the call
/// can come after it. The node answers that call (its caller gets the
/// trap); the head records it and does not fail it with the death. A call
/// the head routes after the death fails with it.
#[test]
fn a_direct_call_reported_after_the_death_it_caused_is_the_node_s_to_answer() {
    let (mut w, n, c, a, at) = located_actor();
    let t = TaskId(w.id(c.session));
    w.send(
        n.session,
        Input::ActorDied(super::ActorDied {
            actor: a,
            incarnation: at.incarnation,
            error: Error::ActorDied("crashed".into()),
        }),
    );
    w.take();
    report_call(&mut w, c, t, a, Some(&at));
    let sent = w.take();
    assert!(
        sent.resolved(c.session).is_empty(),
        "{:?}",
        sent.resolved(c.session)
    );
    assert_eq!(w.task_state(t), Some("RUNNING"));
    direct_done(
        &mut w,
        n,
        t,
        Outcome::Failed(Error::Trap("unreachable".into())),
    );
    assert!(w.take().resolved(c.session).is_empty());
    assert_eq!(w.task_state(t), Some("FAILED"));
    assert!(w.st.nodes[&n.id].running.is_empty());
    let after = w.call(c, a);
    assert!(matches!(
        w.take().error_of(c.session, after),
        Error::ActorDied(m) if m == "crashed"
    ));
    // Another node's report of a direct call to it is answered with the
    // death: it was never the actor's node.
    let m = w.node(2.0);
    let elsewhere = super::ActorAt {
        node: m.id,
        ..at.clone()
    };
    let stray = direct_call(&mut w, c, a, Some(&elsewhere));
    assert!(matches!(
        w.take().error_of(c.session, stray),
        Error::ActorDied(_)
    ));
}

#[test]
fn a_direct_call_that_did_not_run_is_routed_by_the_head() {
    let (mut w, n, c, a, at) = located_actor();
    // The caller believes an older incarnation: the head waits for the
    // call to come back whole.
    let stale = super::ActorAt {
        incarnation: 7,
        ..at.clone()
    };
    let t = direct_call(&mut w, c, a, Some(&stale));
    assert!(w.take().is_empty());
    assert_eq!(w.task_state(t), Some("WAITING_FOR_DEPENDENCIES"));
    let again = CallActor {
        task: t,
        acting: Acting::Session,
        actor: a,
        method: "add".into(),
        args: Ok(vec![value(b"by")]),
        direct: None,
    };
    w.send(
        c.session,
        Input::DirectLost {
            tasks: vec![],
            unsent: vec![again.clone()],
        },
    );
    let calls = w.take().calls(n);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].task, t);
    assert_eq!(
        calls[0].args,
        vec![ResolvedArg::Value(Bytes::from_static(b"by"))]
    );
    // Sent again (a restarted head's report), it is not routed twice.
    w.send(
        c.session,
        Input::DirectLost {
            tasks: vec![],
            unsent: vec![again],
        },
    );
    assert!(w.take().calls(n).is_empty());
    w.ok(n, t, 1, b"2", false);
    assert_eq!(
        w.take().loc_of(c.session, t).inline.as_deref(),
        Some(&b"2"[..])
    );
    // A direct call running on a node that dies fails like a routed one.
    let running = direct_call(&mut w, c, a, Some(&at));
    w.take();
    w.kill(n);
    w.send(
        c.session,
        Input::DirectLost {
            tasks: vec![running],
            unsent: vec![],
        },
    );
    assert!(matches!(
        w.take().error_of(c.session, running),
        Error::ActorDied(_)
    ));
}

#[test]
fn an_actor_restarts_on_another_node_within_max_restarts() {
    let mut w = World::new();
    let a = w.node(2.0);
    let b = w.node(2.0);
    let c = w.client();
    let actor = w.create_actor(c, actor_opts(1.0, 1));
    assert_eq!(w.take().starts(a).len(), 1);
    let in_flight = w.call(c, actor);
    assert_eq!(w.take().calls(a).len(), 1);
    w.kill(a);
    let sent = w.take();
    let starts = sent.starts(b);
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].incarnation, 1);
    assert_eq!(
        starts[0].options.max_restarts, 0,
        "no restarts left for the node"
    );
    assert!(matches!(
        sent.error_of(c.session, in_flight),
        Error::ActorDied(_)
    ));
    assert_eq!(w.free_cpus(b), 1.0);
    let next = w.call(c, actor);
    let calls = w.take().calls(b);
    assert_eq!(
        (calls[0].task, calls[0].seq, calls[0].incarnation),
        (next, 0, 1)
    );
    w.kill(b);
    let sent = w.take();
    assert!(matches!(
        sent.error_of(c.session, next),
        Error::ActorDied(_)
    ));
    let late = w.call(c, actor);
    let e = w.take().error_of(c.session, late);
    assert!(
        matches!(&e, Error::ActorDied(m) if m.contains("no restarts left")),
        "{e}"
    );
}

#[test]
fn an_actor_that_dies_on_its_node_fails_its_waiting_calls() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let actor = w.create_actor(c, actor_opts(1.0, 0));
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.take();
    let waiting = ferray_core::TaskId(w.id(c.session));
    w.send(
        c.session,
        Input::CallActor(CallActor {
            acting: Acting::Session,
            task: waiting,
            actor,
            method: "m".into(),
            args: Ok(vec![Arg::Task(t)]),
            direct: None,
        }),
    );
    let died = |incarnation| {
        Input::ActorDied(super::ActorDied {
            actor,
            incarnation,
            error: Error::ActorDied("it crashed".into()),
        })
    };
    // Another incarnation's death is old news.
    w.send(n.session, died(7));
    assert!(w.take().is_empty());
    w.send(n.session, died(0));
    let e = w.take().error_of(c.session, waiting);
    assert!(matches!(e, Error::ActorDied(_)), "{e}");
    assert_eq!(w.free_cpus(n), 2.0);
    assert!(w.st.nodes[&n.id].actors.is_empty());
}

#[test]
fn killing_an_actor_stops_it_and_gives_its_resources_back() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let actor = w.create_actor(c, actor_opts(2.0, 3));
    w.take();
    assert_eq!(w.free_cpus(n), 0.0);
    w.send(
        c.session,
        Input::KillActor(KillActor {
            actor,
            acting: Acting::Session,
            task: None,
        }),
    );
    assert_eq!(w.take().stops(n), vec![actor]);
    assert_eq!(w.free_cpus(n), 2.0);
    let call = w.call(c, actor);
    let e = w.take().error_of(c.session, call);
    assert!(
        matches!(&e, Error::ActorDied(m) if m.contains("killed")),
        "{e}"
    );
}

#[test]
fn an_actor_that_cannot_be_created_fails_its_calls_with_the_reason() {
    let mut w = World::new();
    w.node(2.0);
    let c = w.client();
    let actor = ferray_core::ActorId(w.id(c.session));
    w.send(
        c.session,
        Input::CreateActor(super::CreateActor {
            actor,
            acting: Acting::Session,
            component: Ok(ferray_core::ComponentId::of(b"missing")),
            class: "k".into(),
            options: Ok(ActorOptions::default()),
            args: Ok(vec![]),
        }),
    );
    let call = w.call(c, actor);
    let e = w.take().error_of(c.session, call);
    assert!(
        matches!(&e, Error::ActorDied(m) if m.contains("not created")),
        "{e}"
    );
    // One for a job that has ended is not kept at all.
    let ended = w.client();
    w.st.stop_job(ended.job).expect("stop");
    let late = ferray_core::ActorId(w.id(ended.session));
    w.send(
        ended.session,
        Input::CreateActor(super::CreateActor {
            actor: late,
            acting: Acting::Session,
            component: Ok(w.comp),
            class: "k".into(),
            options: Ok(ActorOptions::default()),
            args: Ok(vec![]),
        }),
    );
    assert!(!w.st.actors.contains_key(&late));
    // It goes with its job.
    w.st.close_session(c.session, "done");
    assert!(w.st.actors.is_empty());
}

// ----- jobs -----

#[test]
fn a_clients_end_ends_its_job_cancels_kills_and_frees() {
    let mut w = World::new();
    let n = w.node(4.0);
    let c = w.client();
    let done = w.submit(c, vec![], opts(1.0, 3));
    let made = w.run(n, done, 1, b"kept on n", true);
    let running = w.submit(c, vec![], opts(1.0, 3));
    w.started(n, running);
    let waiting = w.submit(c, vec![Arg::Task(running)], opts(1.0, 3));
    let actor = w.create_actor(c, actor_opts(1.0, 0));
    let inline = w.put(c.session, Acting::Session, b"inline", true);
    w.take();
    assert_eq!(w.free_cpus(n), 2.0);
    w.st.close_session(c.session, "its session ended");
    let sent = w.take();
    assert!(sent.closed(c.session));
    assert_eq!(sent.cancels(n), vec![running]);
    assert_eq!(sent.stops(n), vec![actor]);
    assert_eq!(sent.frees(n), vec![made]);
    assert!(sent.resolved(c.session).is_empty(), "the client is gone");
    assert_eq!(w.st.jobs[&c.job].state, JobState::Succeeded);
    assert!(w.st.tasks.is_empty());
    assert!(w.st.actors.is_empty());
    assert!(!w.st.objects.contains_key(&inline));
    assert!(w.st.objects.is_empty());
    assert!(w.st.nodes[&n.id].running.is_empty());
    assert!(w.st.nodes[&n.id].actors.is_empty());
    assert_eq!(w.free_cpus(n), 4.0);
    // The cancelled attempt's answer: its result is not kept.
    let late = w.ok(n, running, 1, b"late", true);
    assert_eq!(w.take().frees(n), vec![late]);
    let history = w.st.cluster_state("tasks").tasks;
    let names: Vec<_> = history.iter().map(|t| (t.id, t.state.as_ref())).collect();
    assert!(names.contains(&(waiting, "WAITING_FOR_DEPENDENCIES")));
    assert!(names.contains(&(done, "FINISHED")));
}

#[test]
fn stopping_a_job_tells_its_submitter_and_forgets_its_waiters() {
    let mut w = World::new();
    let n = w.node(1.0);
    let keep = w.client();
    let stop = w.client();
    let long = w.submit(keep, vec![], opts(1.0, 3));
    // Another job's task is no argument: it fails at once, as one that
    // does not exist, and waits on nothing.
    let foreign = w.submit(stop, vec![Arg::Task(long)], opts(1.0, 3));
    let e = w.take().error_of(stop.session, foreign);
    assert!(
        matches!(&e, Error::TaskFailed(m) if m.contains("not a task of a live job")),
        "{e}"
    );
    assert!(w.st.tasks[&long].waiters.is_empty());
    // A task of the stopped job waits on another of its own.
    let queued: Vec<_> = (0..10)
        .map(|_| w.submit(stop, vec![], opts(1.0, 3)))
        .collect();
    let waiting = w.submit(stop, vec![Arg::Task(queued[0])], opts(1.0, 3));
    assert_eq!(w.st.tasks[&queued[0]].waiters.len(), 1);
    w.take();
    w.st.stop_job(stop.job).expect("stop");
    let sent = w.take();
    let e = sent.error_of(stop.session, waiting);
    assert!(matches!(e, Error::Cancelled(_)), "{e}");
    assert_eq!(sent.resolved(stop.session).len(), 11);
    assert!(w.st.tasks[&long].waiters.is_empty());
    assert_eq!(w.st.jobs[&stop.job].state, JobState::Stopped);
    assert!(queued.iter().all(|t| !w.st.tasks.contains_key(t)));
    assert!(w.st.queues.groups.iter().all(|(_, g)| g.is_empty()));
    assert!(w.st.queues.others.is_empty());
    assert!(w.st.stop_job(stop.job).is_ok(), "stopping twice is fine");
    assert!(matches!(
        w.st.stop_job(ferray_core::JobId(99)),
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        w.st.sched.backlog(n.id),
        Some(1),
        "the stopped job's assignments left the backlog"
    );
}

#[test]
fn objects_another_job_refers_to_outlive_a_job() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c1 = w.client();
    let c2 = w.client();
    let (a1, a2) = (w.task_on(n, c1), w.task_on(n, c2));
    let p = w.put(n.session, a1, b"both", false);
    w.put(n.session, a2, b"both", false);
    let pinned = ObjectId::of(b"forever");
    w.st.pushed(pinned, 7, true);
    w.st.close_session(c1.session, "done");
    assert!(w.take().frees(n).is_empty());
    assert!(w.st.objects.contains_key(&p));
    w.st.close_session(c2.session, "done");
    assert_eq!(w.take().frees(n), vec![p]);
    assert!(w.st.objects.contains_key(&pinned));
}

#[test]
fn a_released_task_is_forgotten_once_it_ends_and_its_result_freed_unless_shared() {
    let mut w = World::new();
    let n = w.node(4.0);
    let c = w.client();
    let other = w.client();
    let job = |w: &World, c: Client| w.st.jobs[&c.job].tasks.len();
    // Released after it ended: forgotten at once, its result freed.
    let t = w.submit(c, vec![], opts(1.0, 0));
    let o = w.run(n, t, 1, b"answer", true);
    w.take();
    w.send(c.session, Input::Release(vec![t]));
    assert!(!w.st.tasks.contains_key(&t));
    assert!(!w.st.objects.contains_key(&o));
    assert_eq!(w.take().frees(n), vec![o]);
    assert_eq!(job(&w, c), 0);
    // Released before it ends: its submitter is still told where the result
    // is, then the task is forgotten.
    let t = w.submit(c, vec![], opts(1.0, 0));
    w.send(c.session, Input::Release(vec![t]));
    assert!(w.st.tasks.contains_key(&t));
    let o = w.run(n, t, 1, b"later", true);
    let sent = w.take();
    assert_eq!(sent.resolved(c.session).len(), 1);
    assert_eq!(sent.frees(n), vec![o]);
    assert!(!w.st.tasks.contains_key(&t));
    // Two tasks made the same object: releasing one keeps it for the other.
    let (t1, t2) = (
        w.submit(c, vec![], opts(1.0, 0)),
        w.submit(c, vec![], opts(1.0, 0)),
    );
    let o = w.run(n, t1, 1, b"same", true);
    w.run(n, t2, 1, b"same", true);
    w.take();
    w.send(c.session, Input::Release(vec![t1]));
    assert!(!w.st.tasks.contains_key(&t1));
    assert!(w.st.objects.contains_key(&o));
    assert!(w.take().frees(n).is_empty());
    // Its lineage turns to the other maker.
    assert_eq!(w.st.objects[&o].producer, Some(t2));
    w.send(c.session, Input::Release(vec![t2]));
    assert!(!w.st.objects.contains_key(&o));
    // A free says how many of the node's results it releases: one that
    // crosses a newer result of the same bytes (its report on the way)
    // leaves the node's copy to that one.
    let (t1, t2) = (
        w.submit(c, vec![], opts(1.0, 0)),
        w.submit(c, vec![], opts(1.0, 0)),
    );
    let o = w.run(n, t1, 1, b"crossing", true);
    w.take();
    w.send(c.session, Input::Release(vec![t1]));
    let freed = |w: &mut World| -> Vec<(ObjectId, u32)> {
        w.take()
            .to(n.session)
            .flat_map(|e| match e {
                super::Effect::FreeSeen(v) => v.clone(),
                _ => vec![],
            })
            .collect()
    };
    assert_eq!(freed(&mut w), vec![(o, 1)]);
    w.run(n, t2, 1, b"crossing", true);
    assert!(w.st.objects[&o].holders.contains(&n.id));
    w.send(c.session, Input::Release(vec![t2]));
    assert_eq!(freed(&mut w), vec![(o, 1)]);
    // A failed task is forgotten too; another job's release is ignored, as
    // is a worker's.
    let t = w.submit(c, vec![], opts(1.0, 0));
    w.started(n, t);
    w.fail(n, t, 1, Error::Trap("no".into()));
    w.send(other.session, Input::Release(vec![t]));
    w.send(n.session, Input::Release(vec![t]));
    assert!(w.st.tasks.contains_key(&t));
    w.send(c.session, Input::Release(vec![t]));
    assert!(!w.st.tasks.contains_key(&t));
    // Its history is kept.
    assert!(w.st.history.iter().any(|h| h.id == t));
    w.st.check_invariants().expect("the invariants hold");
}

#[test]
fn a_driver_runs_its_job_and_its_result_ends_the_job() {
    let mut w = World::new();
    let n = w.node(1.0);
    let job =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec!["1".into(), "2".into()],
            entrypoint: Resources::default(),
        })
        .expect("a job");
    let sent = w.take();
    let a = &sent.assigns(n)[0];
    assert!(a.driver);
    // A driver's result goes to the head alone.
    assert_eq!(a.caller_key, None);
    assert_eq!(a.wave_args, vec!["1".to_string(), "2".to_string()]);
    assert_eq!(a.options.max_retries, 0);
    assert!(a.options.resources.is_empty());
    let info = w.st.job_info(job).expect("job");
    assert_eq!(
        (info.state, info.entrypoint.as_str()),
        (JobState::Running, "main 1 2")
    );
    // The driver submits a task of its job from its node's session.
    let nested = w.submit_as(n.session, Acting::Task(a.task), vec![], opts(0.5, 3));
    w.run(n, nested, 1, b"nested", false);
    assert_eq!(w.take().resolved(n.session).len(), 1);
    w.send(
        n.session,
        Input::Done(Done {
            task: a.task,
            attempt: 1,
            outcome: Outcome::Made(made(b"ok(3)", false)),
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            wave: "ok(3)".into(),
            err_value: false,
            direct: false,
        }),
    );
    let info = w.st.job_info(job).expect("job");
    assert_eq!(info.state, JobState::Succeeded);
    assert_eq!(info.result, "ok(3)");
    assert_eq!((info.tasks_done, info.tasks_total), (1, 1));
    assert!(w.st.tasks.is_empty());
    assert!(w.st.objects.is_empty());
    let e =
        w.st.submit_job(JobRequest {
            component: ferray_core::ComponentId::of(b"missing"),
            function: "main".into(),
            args: vec![],
            entrypoint: Resources::default(),
        })
        .expect_err("not uploaded");
    assert!(matches!(e, Error::NotFound(_)));
}

#[test]
fn a_driver_is_run_again_when_its_node_dies_and_fails_its_job_when_it_fails() {
    let mut w = World::new();
    let a = w.node(1.0);
    let b = w.node(1.0);
    let job =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec![],
            entrypoint: Resources::default(),
        })
        .expect("a job");
    let (driver, _) = w.take().assign(a);
    w.kill(a);
    assert_eq!(w.take().assign(b), (driver, 2));
    w.fail(b, driver, 2, Error::Trap("main panicked".into()));
    let info = w.st.job_info(job).expect("job");
    assert_eq!(info.state, JobState::Failed);
    assert!(info.error.contains("main panicked"), "{}", info.error);
}

/// A driver whose nodes keep dying (say, it takes them down) is run at most
/// `1 + max_retries` times, then its job fails.
#[test]
fn a_driver_whose_nodes_keep_dying_fails_its_job_after_its_retries() {
    let mut w = World::new();
    let retries = TaskOptions::default().max_retries;
    let nodes: Vec<_> = (0..retries + 2).map(|_| w.node(1.0)).collect();
    let job =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec![],
            entrypoint: Resources::default(),
        })
        .expect("a job");
    let mut sent = w.take();
    for attempt in 1..=retries + 1 {
        let n = *nodes
            .iter()
            .find(|n| !sent.assigns(**n).is_empty())
            .expect("the driver is assigned");
        assert_eq!(sent.assign(n).1, attempt);
        w.kill(n);
        sent = w.take();
    }
    let info = w.st.job_info(job).expect("job");
    assert_eq!(info.state, JobState::Failed);
    assert!(info.error.contains("no retries left"), "{}", info.error);
    // Nothing is assigned to the node left.
    assert!(nodes.iter().all(|n| sent.assigns(*n).is_empty()));
}

/// Ray's entrypoint resources: the driver goes to a node that has them and
/// holds them while it runs; a demand no node can meet fails the job.
#[test]
fn a_driver_holds_its_entrypoint_resources() {
    let mut w = World::new();
    let plain = w.node(2.0);
    let gpu = w.node_with(Resources::cpus(2.0).with_gpus(1.0).expect("gpus"));
    let job =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec![],
            entrypoint: Resources::cpus(1.0).with_gpus(1.0).expect("gpus"),
        })
        .expect("a job");
    let sent = w.take();
    assert!(sent.assigns(plain).is_empty());
    let a = &sent.assigns(gpu)[0];
    assert!(a.driver);
    // A driver's result goes to the head alone.
    assert_eq!(a.caller_key, None);
    assert_eq!(a.options.resources.num_gpus(), 1.0);
    w.send(gpu.session, Input::Started(a.task));
    let free = w.st.sched.free(gpu.id).expect("node").clone();
    assert_eq!((free.num_cpus(), free.num_gpus()), (1.0, 0.0));
    assert_eq!(w.st.job_info(job).expect("job").state, JobState::Running);
    let too_big =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec![],
            entrypoint: Resources::cpus(1.0).with_gpus(4.0).expect("gpus"),
        })
        .expect("a job");
    let info = w.st.job_info(too_big).expect("job");
    assert_eq!(info.state, JobState::Failed);
    assert!(info.error.contains("GPU"), "{}", info.error);
}

#[test]
fn the_cluster_view_lists_the_tables() {
    let mut w = World::new();
    let a = w.node(2.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 3));
    w.create_actor(c, actor_opts(1.0, 0));
    w.kill(b);
    let v = w.st.cluster_state("");
    assert_eq!(v.nodes.len(), 1);
    assert_eq!(v.nodes[0].id, a.id);
    assert_eq!(v.task_states.get("RUNNING"), Some(&1));
    assert_eq!(v.jobs.len(), 1);
    let v = w.st.cluster_state("nodes");
    assert_eq!(v.nodes.len(), 2);
    assert!(!v.nodes[1].alive);
    let v = w.st.cluster_state("actors");
    assert_eq!(v.actors.len(), 1);
    assert_eq!(v.actors[0].node, Some(a.id));
    w.run(a, t, 1, b"x", true);
    let v = w.st.cluster_state("objects");
    assert_eq!(v.objects.len(), 1);
    assert_eq!(v.objects[0].made_by, Some(t));
    assert_eq!(v.objects[0].nodes, vec![a.id]);
    let v = w.st.cluster_state("tasks");
    assert_eq!(v.tasks[0].node, Some(a.id));
}

/// Jobs are isolated: another job's actor is answered as one that does not
/// exist — for a call and a kill, with the same error — and it lives on;
/// a client's stated job is ignored (its session's is used).
#[test]
fn another_jobs_actor_is_not_found_and_lives_on() {
    let mut w = World::new();
    let n = w.node(2.0);
    let owner = w.client();
    let other = w.client();
    let a = w.create_actor(owner, actor_opts(0.0, 0));
    assert_eq!(w.take().starts(n).len(), 1);
    let missing = ActorId(a.0 + 1_000);
    for actor in [a, missing] {
        // A call, claiming to be the owner's job.
        let t = TaskId(w.id(other.session));
        w.send(
            other.session,
            Input::CallActor(CallActor {
                acting: Acting::Session,
                task: t,
                actor,
                method: "m".into(),
                args: Ok(vec![]),
                direct: None,
            }),
        );
        let kill = TaskId(w.id(other.session));
        w.send(
            other.session,
            Input::KillActor(KillActor {
                actor,
                acting: Acting::Session,
                task: Some(kill),
            }),
        );
        let sent = w.take();
        let answers = sent.resolved(other.session);
        assert_eq!(answers.len(), 2, "{answers:?}");
        for (task, result) in answers {
            assert!([t, kill].contains(&task));
            let e = result.expect_err("not found");
            assert_eq!(e, Error::NotFound(format!("no {actor} in the cluster")));
        }
        assert!(sent.stops(n).is_empty(), "nothing stopped");
    }
    assert!(!matches!(w.st.actors[&a].state, super::AState::Dead(_)));
    // Its own job kills it, and hears so.
    let kill = TaskId(w.id(owner.session));
    w.send(
        owner.session,
        Input::KillActor(KillActor {
            actor: a,
            acting: Acting::Session,
            task: Some(kill),
        }),
    );
    let sent = w.take();
    assert!(matches!(sent.resolved(owner.session).as_slice(), [(t, Ok(_))] if *t == kill));
    assert!(matches!(w.st.actors[&a].state, super::AState::Dead(_)));
}

/// The head stays bounded: it keeps the last `JOB_RETENTION` finished jobs
/// and forgets older ones; live jobs are never dropped.
#[test]
fn finished_jobs_are_kept_up_to_the_retention_then_forgotten() {
    let mut w = World::new();
    let live = w.client();
    let mut first = None;
    let mut last = None;
    for _ in 0..super::JOB_RETENTION + 50 {
        let c = w.client();
        first.get_or_insert(c.job);
        last = Some(c.job);
        w.st.close_session(c.session, "done");
    }
    let (first, last) = (first.expect("a job"), last.expect("a job"));
    assert!(w.st.job_info(first).is_none(), "the oldest is forgotten");
    assert!(w.st.job_info(last).is_some_and(|j| j.state.finished()));
    assert!(w.st.job_info(live.job).is_some_and(|j| !j.state.finished()));
    assert_eq!(w.st.jobs.len(), super::JOB_RETENTION + 1);
}

/// A job's log is bounded in bytes too: the oldest lines go first, a line
/// longer than the limit is cut, and the newest is kept.
#[test]
fn a_jobs_log_is_bounded_in_bytes() {
    let mut w = World::new();
    let c = w.client();
    let line = "x".repeat(1 << 20);
    for i in 0..300 {
        let text = format!("{i} {line}\n");
        w.st.log(c.job, "task-1", text.as_bytes());
    }
    w.st.log(c.job, "task-1", b"the last line\n");
    let (lines, next) = w.st.job_logs(c.job, 0);
    let bytes: usize = lines.iter().map(String::len).sum();
    assert!(bytes <= super::MAX_JOB_LOG_BYTES, "{bytes}");
    assert!(lines.iter().all(|l| l.len() <= (64 << 10) + 16));
    assert!(lines[0].ends_with("[cut]"), "{}", &lines[0][..40]);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("(task-1) the last line")
    );
    assert!(lines.len() < 301, "the oldest lines were dropped");
    assert_eq!(next, 301, "every line was counted, kept or dropped");
}

// ----- a bounded head -----

/// The placement pass runs only after a change that can make a placement
/// possible: a batch of heartbeats costs none.
#[test]
fn a_heartbeat_only_batch_runs_no_placement_pass() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    // A backlog of 8 on a 1-CPU node: the ninth task waits for a place.
    let tasks: Vec<TaskId> = (0..9).map(|_| w.submit(c, vec![], opts(1.0, 3))).collect();
    assert_eq!(w.take().assigns(n).len(), 8);
    assert_eq!(w.task_state(tasks[8]), Some("PENDING_NODE_ASSIGNMENT"));
    let passes = w.st.passes;
    for _ in 0..3 {
        w.st.touch(n.session, w.now);
        w.send(n.session, Input::Heartbeat);
        w.send(c.session, Input::Heartbeat);
    }
    w.st.check_heartbeats(w.now, Duration::from_secs(5));
    assert_eq!(w.st.passes, passes, "heartbeats ran a placement pass");
    assert!(w.take().is_empty());
    // A start frees a backlog place: the pass runs and places the ninth.
    w.started(n, tasks[0]);
    assert_eq!(w.st.passes, passes + 1);
    assert_eq!(w.take().assign(n), (tasks[8], 1));
    // Nothing changed since: no pass.
    w.send(n.session, Input::Heartbeat);
    assert_eq!(w.st.passes, passes + 1);
    // A submission is a change.
    w.submit(c, vec![], opts(1.0, 3));
    assert_eq!(w.st.passes, passes + 2);
}

#[test]
fn a_dead_node_is_listed_for_its_window_then_forgotten() {
    let mut w = World::new();
    w.st.dead_node_window = Duration::from_secs(60);
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit_as(
        c.session,
        Acting::Session,
        vec![],
        TaskOptions {
            strategy: Strategy::Node {
                node: b.id.0,
                soft: true,
            },
            ..opts(1.0, 3)
        },
    );
    assert_eq!(w.take().assign(b), (t, 1));
    w.kill(b);
    // Its task went elsewhere; it is listed, dead.
    assert_eq!(w.take().assign(a), (t, 2));
    let start = w.now;
    let no_timeout = Duration::from_secs(3600);
    w.st.check_heartbeats(start, no_timeout);
    let listed = |w: &World| -> Vec<(NodeId, bool)> {
        let v = w.st.cluster_state("nodes");
        v.nodes.iter().map(|n| (n.id, n.alive)).collect()
    };
    assert_eq!(listed(&w), vec![(a.id, true), (b.id, false)]);
    w.st.check_heartbeats(start + Duration::from_secs(59), no_timeout);
    assert_eq!(listed(&w), vec![(a.id, true), (b.id, false)]);
    w.st.check_heartbeats(start + Duration::from_secs(61), no_timeout);
    assert_eq!(listed(&w), vec![(a.id, true)]);
    assert!(!w.st.nodes.contains_key(&b.id));
    assert!(w.st.sched.free(b.id).is_none());
    assert!(w.st.dead_nodes.is_empty());
    // Nothing points at it.
    assert!(
        w.st.tasks
            .values()
            .all(|t| t.state != TState::Running(b.id))
    );
    assert!(w.st.objects.values().all(|o| !o.holders.contains(&b.id)));
}

#[test]
fn a_component_nothing_uses_is_dropped_after_its_grace() {
    let mut w = World::new();
    w.st.component_grace = Duration::from_secs(60);
    let n = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 0));
    w.run(n, t, 1, b"x", false);
    let start = w.now;
    let no_timeout = Duration::from_secs(3600);
    let at = |s: u64| start + Duration::from_secs(s);
    // The client's job lives, and its task (finished) used it.
    w.st.check_heartbeats(at(120), no_timeout);
    assert!(w.st.components.contains_key(&w.comp));
    w.st.close_session(c.session, "it left");
    // Seen in use at 120 s: kept for its grace after that.
    w.st.check_heartbeats(at(150), no_timeout);
    assert!(w.st.components.contains_key(&w.comp));
    w.st.check_heartbeats(at(181), no_timeout);
    assert!(!w.st.components.contains_key(&w.comp));
    // What names it now is refused, clearly.
    let c2 = w.client();
    w.take();
    let t2 = w.submit(c2, vec![], opts(1.0, 0));
    let e = w.take().error_of(c2.session, t2);
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert!(e.to_string().contains("was not uploaded"), "{e}");
    let job = w.st.submit_job(JobRequest {
        component: w.comp,
        function: "main".into(),
        args: vec![],
        entrypoint: Resources::default(),
    });
    assert!(matches!(job, Err(Error::NotFound(_))), "{job:?}");
    // Uploaded again, it serves again.
    w.upload();
    let t3 = w.submit(c2, vec![], opts(1.0, 0));
    assert_eq!(w.take().assign(n), (t3, 1));
}

/// A client uploads what it loads once and may use it much later: an
/// upload nothing uses yet stays while a client connected before it stays.
#[test]
fn an_unused_upload_stays_while_a_client_that_saw_it_stays() {
    let mut w = World::new();
    w.st.component_grace = Duration::from_secs(60);
    let c = w.client();
    w.upload();
    let later = w.client();
    let start = w.now;
    let no_timeout = Duration::from_secs(3600);
    w.st.check_heartbeats(start + Duration::from_secs(600), no_timeout);
    assert!(w.st.components.contains_key(&w.comp));
    w.st.close_session(c.session, "it left");
    // `later` connected after the upload: it does not keep it; it goes
    // within a grace of the last look.
    w.st.check_heartbeats(start + Duration::from_secs(601), no_timeout);
    assert!(w.st.components.contains_key(&w.comp));
    w.st.check_heartbeats(start + Duration::from_secs(661), no_timeout);
    assert!(!w.st.components.contains_key(&w.comp));
    let _ = later;
}

/// Pages of the cluster's state cover every entry exactly once, in id
/// order, up to the head's cap per page.
#[test]
fn the_cluster_state_comes_in_pages_that_cover_every_job_once() {
    let mut w = World::new();
    w.node(1.0);
    let total = 2 * MAX_PAGE + 17;
    let mut jobs: Vec<JobId> = (0..total)
        .map(|_| {
            w.st.submit_job(JobRequest {
                component: w.comp,
                function: "main".into(),
                args: vec![],
                entrypoint: Resources::default(),
            })
            .expect("a job")
        })
        .collect();
    jobs.sort();
    let walk = |w: &World, limit: usize| -> (Vec<JobId>, usize) {
        let (mut seen, mut pages, mut after) = (Vec::new(), 0, String::new());
        loop {
            let p = w.st.cluster_page("jobs", &after, limit).expect("a page");
            let cap = if limit == 0 {
                MAX_PAGE
            } else {
                limit.min(MAX_PAGE)
            };
            assert!(p.view.jobs.len() <= cap);
            seen.extend(p.view.jobs.iter().map(|j| j.job));
            pages += 1;
            match p.next {
                Some(n) => after = n,
                None => return (seen, pages),
            }
        }
    };
    assert_eq!(walk(&w, 0), (jobs.clone(), 3));
    assert_eq!(walk(&w, 5_000), (jobs.clone(), 3), "the cap holds");
    let (seen, pages) = walk(&w, 7);
    assert_eq!(seen, jobs);
    assert_eq!(pages, total.div_ceil(7));
    // A job that comes between pages comes last (ids only grow).
    let first = w.st.cluster_page("jobs", "", 10).expect("a page");
    let newer =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec![],
            entrypoint: Resources::default(),
        })
        .expect("a job");
    let after = first.next.expect("more");
    let rest = w.st.cluster_page("jobs", &after, 0).expect("a page");
    assert_eq!(rest.view.jobs[0].job, jobs[10]);
    // A bad cursor is refused.
    let bad = w.st.cluster_page("jobs", "job-3", 0);
    assert!(matches!(bad, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        w.st.cluster_page("things", "", 0),
        Err(Error::InvalidArgument(_))
    ));
    let all = w.st.cluster_state("jobs");
    assert_eq!(all.jobs.last().map(|j| j.job), Some(newer));
    assert_eq!(all.jobs.len(), total + 1);
}

/// Tasks page over the finished tasks of ended jobs and the live ones.
#[test]
fn task_pages_cover_past_and_live_tasks_once() {
    let mut w = World::new();
    let n = w.node(4.0);
    let old = w.client();
    let mut ids: Vec<TaskId> = Vec::new();
    for _ in 0..5 {
        let t = w.submit(old, vec![], opts(0.0, 0));
        ids.push(t);
    }
    w.st.close_session(old.session, "it left");
    let c = w.client();
    for _ in 0..6 {
        ids.push(w.submit(c, vec![], opts(0.0, 0)));
    }
    let _ = n;
    ids.sort();
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let p = w.st.cluster_page("tasks", &after, 3).expect("a page");
        seen.extend(p.view.tasks.iter().map(|t| t.id));
        match p.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

/// A list cuts long text; a job's own information keeps it whole.
#[test]
fn a_list_cuts_a_jobs_long_result() {
    let mut w = World::new();
    let c = w.client();
    let long = "é".repeat(5_000);
    if let Some(j) = w.st.jobs.get_mut(&c.job) {
        j.result = long.clone();
    }
    let listed = &w.st.cluster_state("jobs").jobs[0];
    assert!(listed.result.len() <= LIST_TEXT_MAX + " [cut]".len());
    let kept = listed.result.strip_suffix(" [cut]").expect("marked as cut");
    assert!(kept.len() > LIST_TEXT_MAX - 2 && long.starts_with(kept));
    assert_eq!(w.st.job_info(c.job).expect("the job").result, long);
}

// ----- acting for a job -----

/// A worker's request belongs to the job of the task or actor it acts for,
/// which must run on that worker; a worker naming anything else (or no
/// one) is refused as not found, and another job's tasks and objects are no
/// arguments, exactly as if they did not exist.
#[test]
fn a_worker_acts_only_for_what_runs_on_it() {
    let mut w = World::new();
    let a = w.node(2.0);
    let b = w.node(2.0);
    let c1 = w.client();
    let c2 = w.client();
    let on_a = w.task_on(a, c1);
    // For the task it runs: the submission joins that task's job.
    let nested = w.submit_as(a.session, on_a, vec![], opts(0.0, 0));
    assert_eq!(w.st.tasks[&nested].job, c1.job);
    w.take();
    // The same task named by another worker, an unknown task, or no one.
    for (session, acting) in [
        (b.session, on_a),
        (a.session, Acting::Task(TaskId(12345))),
        (a.session, Acting::Actor(ferray_core::ActorId(777))),
        (a.session, Acting::Session),
    ] {
        let t = w.submit_as(session, acting, vec![], opts(0.0, 0));
        let e = w.take().error_of(session, t);
        assert!(matches!(e, Error::NotFound(_)), "{acting:?}: {e}");
        assert!(!w.st.tasks.contains_key(&t));
    }
    // A put for a task it does not run is not kept, and the worker frees it.
    let p = w.put(b.session, on_a, b"not b's", false);
    assert_eq!(w.take().frees(b), vec![p]);
    assert!(!w.st.objects.contains_key(&p));
    // Another job's task and put objects are no arguments.
    let theirs = w.submit(c2, vec![], opts(1.0, 3));
    let their_put = w.put(c2.session, Acting::Session, b"c2's", true);
    w.take();
    for arg in [Arg::Task(theirs), Arg::Object(their_put)] {
        let t = w.submit_as(a.session, on_a, vec![arg.clone()], opts(0.0, 0));
        let e = w.take().error_of(a.session, t);
        assert!(
            matches!(&e, Error::TaskFailed(m) | Error::ObjectLost(m)
                if m.contains("not a task of a live job") || m.contains("not in the cluster")),
            "{arg:?}: {e}"
        );
    }
    assert!(w.st.tasks[&theirs].waiters.is_empty());
    // Nor can it cancel another job's task.
    w.send(
        a.session,
        Input::Cancel {
            task: theirs,
            acting: on_a,
        },
    );
    assert!(!w.st.tasks[&theirs].cancelled);
    assert!(w.take().resolved(c2.session).is_empty());
    // Its own job's task it can.
    w.send(
        a.session,
        Input::Cancel {
            task: nested,
            acting: on_a,
        },
    );
    assert!(w.st.tasks.get(&nested).is_none_or(|t| t.cancelled));
}

// ----- job caps -----

/// What one job may hold: tasks and actor calls in flight, live actors,
/// bytes put, log bytes. Past a cap the request is refused with
/// `invalid-argument`; the job's other work, and other jobs, go on.
#[test]
fn a_job_is_held_to_the_operators_caps() {
    let mut w = World::new();
    w.st.job_caps = ferray_core::JobCaps {
        tasks: Some(2),
        actors: Some(1),
        put_bytes: Some(100),
        log_bytes: Some(1000),
    };
    let n = w.node(1.0);
    let c = w.client();
    let other = w.client();
    let t1 = w.submit(c, vec![], opts(1.0, 3));
    let t2 = w.submit(c, vec![], opts(1.0, 3));
    let t3 = w.submit(c, vec![], opts(1.0, 3));
    let e = w.take().error_of(c.session, t3);
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("2 tasks and actor calls in flight")),
        "{e}"
    );
    assert!(!w.st.tasks.contains_key(&t3));
    // Another job is not held to this one's count.
    let theirs = w.submit(other, vec![], opts(1.0, 3));
    assert!(w.st.tasks.contains_key(&theirs));
    // A finished task makes room.
    w.take();
    w.run(n, t1, 1, b"one", true);
    let t4 = w.submit(c, vec![], opts(1.0, 3));
    assert!(w.st.tasks.contains_key(&t4));
    let _ = t2;
    // Actors: one live; a second is not created (its calls say why), and
    // once the first is dead a new one is.
    let a = w.create_actor(c, actor_opts(0.0, 0));
    let b = w.create_actor(c, actor_opts(0.0, 0));
    assert!(
        matches!(&w.st.actors[&b].state, super::AState::Dead(Error::ActorDied(m)) if m.contains("1 live actors"))
    );
    assert!(!matches!(w.st.actors[&a].state, super::AState::Dead(_)));
    w.send(
        c.session,
        Input::KillActor(KillActor {
            actor: a,
            acting: Acting::Session,
            task: None,
        }),
    );
    let again = w.create_actor(c, actor_opts(0.0, 0));
    assert!(!matches!(w.st.actors[&again].state, super::AState::Dead(_)));
    // Puts: 100 bytes over the job's life, each object counted once.
    let p1 = w.put(c.session, Acting::Session, &[1; 60], true);
    w.put(c.session, Acting::Session, &[1; 60], true);
    assert!(w.st.objects.contains_key(&p1));
    let p2 = w.put(c.session, Acting::Session, &[2; 60], true);
    assert!(!w.st.objects.contains_key(&p2), "over the job's 100 bytes");
    let (lines, _) = w.st.job_logs(c.job, 0);
    assert!(
        lines.iter().any(|l| l.contains("a put was refused")),
        "{lines:?}"
    );
    let theirs = w.put(other.session, Acting::Session, &[2; 60], true);
    assert!(w.st.objects.contains_key(&theirs));
    // Its log keeps 1,000 bytes.
    for i in 0..100 {
        w.st.log(c.job, "task-1", format!("line {i}\n").as_bytes());
    }
    let (lines, _) = w.st.job_logs(c.job, 0);
    let bytes: usize = lines.iter().map(String::len).sum();
    assert!(bytes <= 1000, "{bytes}");
    assert_eq!(lines.last().map(String::as_str), Some("(task-1) line 99"));
}

// ----- a re-run driver -----

/// When a job's driver runs again (its node died), a submission equal to
/// one its earlier attempt made gets the earlier task's result, finished or
/// pending, instead of a new task; equal submissions pair up in order, and
/// a different one is a new task.
#[test]
fn a_rerun_driver_gets_its_earlier_tasks_instead_of_new_ones() {
    let mut w = World::new();
    let a = w.node(2.0);
    let job =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec![],
            entrypoint: Resources::default(),
        })
        .expect("a job");
    let driver = w.take().assigns(a)[0].task;
    w.started(a, driver);
    let by = Acting::Task(driver);
    let v = |b: &'static [u8]| vec![value(b)];
    let first = w.submit_as(a.session, by, v(b"1"), opts(1.0, 3));
    let twin = w.submit_as(a.session, by, v(b"1"), opts(1.0, 3));
    let other = w.submit_as(a.session, by, v(b"2"), opts(1.0, 3));
    w.take();
    // The first finishes, and its copy lives on another node too.
    let b = w.node(2.0);
    w.run(a, first, 1, b"one", true);
    w.send(b.session, Input::Located(ObjectId::of(b"one")));
    w.take();
    assert_eq!(w.st.jobs[&job].total, 3);
    // The driver's node dies: it runs again on b and submits the same.
    w.kill(a);
    let sent = w.take();
    let again = sent
        .assigns(b)
        .iter()
        .find(|x| x.task == driver)
        .map(|x| x.attempt)
        .expect("the driver again");
    assert_eq!(again, 2);
    w.started(b, driver);
    let first2 = w.submit_as(b.session, by, v(b"1"), opts(1.0, 3));
    let twin2 = w.submit_as(b.session, by, v(b"1"), opts(1.0, 3));
    let third = w.submit_as(b.session, by, v(b"1"), opts(1.0, 3));
    let other2 = w.submit_as(b.session, by, v(b"2"), opts(1.0, 3));
    let sent = w.take();
    // The finished one is answered at once with the earlier result.
    let answers = sent.resolved(b.session);
    assert!(
        matches!(answers.as_slice(), [(t, Ok(loc))] if *t == first2 && loc.id == ObjectId::of(b"one")),
        "{answers:?}"
    );
    // No new task for the twins or the other; a third equal one is new.
    for t in [first2, twin2, other2] {
        assert!(!w.st.tasks.contains_key(&t), "{t} was made again");
    }
    assert!(w.st.tasks.contains_key(&third));
    assert_eq!(w.st.jobs[&job].total, 4);
    // A pending earlier task (retried on b) answers its alias when it ends.
    for (earlier, alias) in [(twin, twin2), (other, other2)] {
        let attempt = w.st.tasks[&earlier].attempts;
        w.run(b, earlier, attempt, b"later", false);
        let answers = w.take().resolved(b.session);
        assert!(
            answers.iter().any(|(t, r)| *t == alias && r.is_ok()),
            "{alias} for {earlier}: {answers:?}"
        );
    }
}

/// A node that says it holds an object still being uploaded (found by the
/// `head_state` fuzz target) wakes what waits for it: the task is not left
/// waiting on an object that is available, which no later event would wake
/// if the upload then failed.
#[test]
fn a_located_upload_wakes_its_waiters() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let id = ObjectId::of(b"large");
    w.send(
        c.session,
        Input::Put(Put {
            id,
            size: 5 << 20,
            acting: Acting::Session,
            inline: None,
            uploading: true,
        }),
    );
    let t = w.submit(c, vec![Arg::Object(id)], opts(1.0, 3));
    assert!(w.take().assigns(n).is_empty());
    w.send(n.session, Input::Located(id));
    assert_eq!(w.take().assign(n), (t, 1));
    w.st.check_invariants().expect("the invariants hold");
}

/// `Started` for an actor call (no honest node sends it; found by the
/// `head_state` fuzz target) changes nothing: it does not free a backlog
/// place the call never took.
#[test]
fn a_started_actor_call_takes_no_backlog_place() {
    let mut w = World::new();
    let n = w.node(2.0);
    let c = w.client();
    let a = w.create_actor(c, actor_opts(1.0, 0));
    w.take();
    let t = w.submit(c, vec![], opts(1.0, 3));
    assert_eq!(w.take().assign(n), (t, 1));
    let call = w.call(c, a);
    assert_eq!(w.take().calls(n)[0].task, call);
    assert_eq!(w.st.sched.backlog(n.id), Some(1));
    w.send(n.session, Input::Started(call));
    assert_eq!(w.st.sched.backlog(n.id), Some(1));
    w.st.check_invariants().expect("the invariants hold");
}

/// A node with two actors dies while a call to one waits for a queued
/// call to the other (found by the `head_state` fuzz target): the first
/// actor's death fails its queued calls, which fails the call to the
/// second that waited on one and lets the second's next call go; it must
/// not be sent to the dying node (whichever actor the head handles first),
/// but fail with its actor.
#[test]
fn a_dying_node_is_sent_no_calls_of_its_actors() {
    let call_with = |w: &mut World, c: Client, actor: ActorId, args: Vec<Arg>| {
        let task = TaskId(w.id(c.session));
        w.send(
            c.session,
            Input::CallActor(CallActor {
                task,
                acting: Acting::Session,
                actor,
                method: "add".into(),
                args: Ok(args),
                direct: None,
            }),
        );
        task
    };
    for flip in [false, true] {
        let mut w = World::new();
        let n = w.node(2.0);
        let c = w.client();
        let x = w.create_actor(c, actor_opts(0.0, 0));
        let y = w.create_actor(c, actor_opts(0.0, 0));
        let (first, second) = if flip { (y, x) } else { (x, y) };
        let t = w.submit(c, vec![], opts(1.0, 0));
        w.take();
        // first: c0 waits for t, c1 behind it; second: c2 waits for c1, c3
        // behind it.
        call_with(&mut w, c, first, vec![Arg::Task(t)]);
        let c1 = w.call(c, first);
        call_with(&mut w, c, second, vec![Arg::Task(c1)]);
        w.call(c, second);
        assert!(w.take().calls(n).is_empty());
        w.st.close_session(n.session, "gone");
        let sent = w.take();
        assert!(sent.calls(n).is_empty(), "a call sent to a dead node");
        w.st.check_invariants().expect("the invariants hold");
    }
}

/// A put that makes an object being uploaded available (its bytes inline,
/// or a worker's copy of the same bytes; found by the `head_state` fuzz
/// target) wakes what waits for the upload.
#[test]
fn a_put_of_an_uploading_object_wakes_its_waiters() {
    let mut w = World::new();
    let n = w.node(1.0);
    let c = w.client();
    let bytes = b"large";
    let id = ObjectId::of(bytes);
    let put = |inline: Option<Bytes>, uploading| {
        Input::Put(Put {
            id,
            size: bytes.len() as u64,
            acting: Acting::Session,
            inline,
            uploading,
        })
    };
    w.send(c.session, put(None, true));
    let t = w.submit(c, vec![Arg::Object(id)], opts(1.0, 3));
    assert!(w.take().assigns(n).is_empty());
    w.send(c.session, put(Some(Bytes::from_static(bytes)), false));
    assert_eq!(w.take().assign(n), (t, 1));
    w.st.check_invariants().expect("the invariants hold");
}

#[test]
fn the_timeline_has_each_attempt_with_its_node_slot_and_end() {
    let mut w = World::new();
    let a = w.node(2.0);
    let b = w.node(1.0);
    let c = w.client();
    let t1 = w.submit(c, vec![], opts(1.0, 2));
    let t2 = w.submit(c, vec![], opts(1.0, 2));
    let sent = w.take();
    let on_a: Vec<_> = sent.assigns(a).iter().map(|x| x.task).collect();
    let on_b: Vec<_> = sent.assigns(b).iter().map(|x| x.task).collect();
    assert_eq!(on_a.len() + on_b.len(), 2);
    // Two attempts at once on one node take two slots; one that ends
    // gives its slot to the next.
    let spans = |w: &World| {
        let p =
            w.st.cluster_page_where(
                "spans",
                "",
                0,
                &ListFilter {
                    job: Some(c.job),
                    ..ListFilter::default()
                },
            )
            .expect("a page");
        p.view.spans
    };
    let running = spans(&w);
    assert_eq!(running.len(), 2);
    assert!(
        running
            .iter()
            .all(|s| s.outcome == "RUNNING" && s.end_unix_us == 0)
    );
    let (first, node) = match (on_a.first(), on_b.first()) {
        (Some(t), _) => (*t, a),
        (None, Some(t)) => (*t, b),
        _ => unreachable!(),
    };
    w.started(node, first);
    w.fail(node, first, 1, Error::System("disk on fire".into()));
    let sent = w.take();
    let (retried, attempt) = if !sent.assigns(a).is_empty() {
        (a, sent.assign(a))
    } else {
        (b, sent.assign(b))
    };
    assert_eq!(attempt, (first, 2));
    w.started(retried, first);
    w.run(retried, first, 2, b"ok", false);
    // The other one's node dies under it.
    let other = if first == t1 { t2 } else { t1 };
    let other_node = w.st.tasks[&other].ran_on.expect("placed");
    let other_node = if other_node == a.id { a } else { b };
    w.kill(other_node);
    let all = spans(&w);
    let of = |t: TaskId| all.iter().filter(|s| s.task == t).collect::<Vec<_>>();
    let f = of(first);
    assert_eq!(f.len(), 2, "{all:?}");
    assert_eq!((f[0].attempt, &*f[0].outcome), (1, "FAILED"));
    assert!(f[0].error.contains("disk on fire"), "{}", f[0].error);
    assert_eq!((f[1].attempt, &*f[1].outcome), (2, "FINISHED"));
    assert!(f[1].end_unix_us >= f[1].start_unix_us && f[1].start_unix_us > 0);
    let o = of(other);
    assert_eq!(&*o[0].outcome, "LOST");
    assert!(o[0].error.contains("died"), "{}", o[0].error);
    // In the order they started; a task's own attempts read the same.
    assert!(all.windows(2).all(|p| p[0].seq < p[1].seq));
    assert_eq!(w.st.task_spans(first).len(), 2);
    // Another job's filter sees none of them; pages of one cover them all.
    let none =
        w.st.cluster_page_where(
            "spans",
            "",
            0,
            &ListFilter {
                job: Some(JobId(999)),
                ..ListFilter::default()
            },
        )
        .expect("a page");
    assert!(none.view.spans.is_empty());
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let p =
            w.st.cluster_page_where(
                "spans",
                &after,
                1,
                &ListFilter {
                    job: Some(c.job),
                    ..ListFilter::default()
                },
            )
            .expect("a page");
        paged.extend(p.view.spans);
        match p.next {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(paged, all);
    w.st.check_invariants().expect("invariants");
}

#[test]
fn task_lists_filter_by_job_state_and_function() {
    let mut w = World::new();
    let n = w.node(4.0);
    let c = w.client();
    let d = w.client();
    let t1 = w.submit(c, vec![], opts(1.0, 0));
    let t2 = w.submit(c, vec![], opts(1.0, 0));
    let t3 = w.submit(d, vec![], opts(1.0, 0));
    let a = w.create_actor(c, actor_opts(1.0, 0));
    w.take();
    let call = w.call(c, a);
    w.take();
    w.run(n, t1, 1, b"1", false);
    let list = |f: ListFilter| -> Vec<TaskId> {
        let p = w.st.cluster_page_where("tasks", "", 0, &f).expect("a page");
        p.view.tasks.iter().map(|t| t.id).collect()
    };
    let mut mine = list(ListFilter {
        job: Some(c.job),
        ..ListFilter::default()
    });
    mine.sort();
    let mut want = vec![t1, t2, call];
    want.sort();
    assert_eq!(mine, want);
    assert_eq!(
        list(ListFilter {
            job: Some(d.job),
            ..ListFilter::default()
        }),
        vec![t3]
    );
    assert_eq!(
        list(ListFilter {
            job: Some(c.job),
            state: Some("FINISHED".into()),
            ..ListFilter::default()
        }),
        vec![t1]
    );
    let call_name = format!("{a}.add");
    let by_method = list(ListFilter {
        function: Some(call_name.clone()),
        ..ListFilter::default()
    });
    assert_eq!(by_method, vec![call], "{call_name}");
    assert!(
        list(ListFilter {
            function: Some("nothing".into()),
            ..ListFilter::default()
        })
        .is_empty()
    );
    let actors =
        w.st.cluster_page_where(
            "actors",
            "",
            0,
            &ListFilter {
                job: Some(d.job),
                ..ListFilter::default()
            },
        )
        .expect("a page");
    assert!(actors.view.actors.is_empty());
}

/// Two nodes, a client, and its task assigned to one of them: the world,
/// the client, the task, the node it runs on and the other.
fn one_task_on_one_of_two_nodes() -> (World, Client, TaskId, Node, Node) {
    let mut w = World::new();
    let a = w.node(1.0);
    let b = w.node(1.0);
    let c = w.client();
    let t = w.submit(c, vec![], opts(1.0, 0));
    let sent = w.take();
    let (on, other) = if sent.assigns(a).is_empty() {
        (b, a)
    } else {
        (a, b)
    };
    (w, c, t, on, other)
}

#[test]
fn a_running_tasks_output_goes_to_its_jobs_log_as_it_comes() {
    let (mut w, c, t, on, other) = one_task_on_one_of_two_nodes();
    w.started(on, t);
    w.send(
        on.session,
        Input::Output {
            task: t,
            stdout: Bytes::from_static(b"half way\n"),
        },
    );
    // Another node cannot write into this task's log.
    w.send(
        other.session,
        Input::Output {
            task: t,
            stdout: Bytes::from_static(b"forged\n"),
        },
    );
    let (lines, _) = w.st.job_logs(c.job, 0);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with("half way"), "{lines:?}");
    // The submitter hears it at once too.
    assert!(w.take().to(c.session).any(
        |e| matches!(e, super::Effect::Output { stdout, .. } if &stdout[..] == b"half way\n")
    ));
}

#[test]
fn a_nodes_heartbeat_says_which_of_its_copies_are_on_disk() {
    let (mut w, _, t, on, other) = one_task_on_one_of_two_nodes();
    let oid = w.run(on, t, 1, b"big", true);
    let spilled = |w: &World| {
        let p = w.st.cluster_page("objects", "", 0).expect("a page");
        p.view
            .objects
            .iter()
            .find(|o| o.id == oid)
            .map(|o| o.spilled.clone())
            .expect("listed")
    };
    assert!(spilled(&w).is_empty());
    // A node that does not hold it cannot say so.
    w.send(
        other.session,
        Input::Spills {
            spilled: vec![oid],
            restored: vec![],
        },
    );
    assert!(spilled(&w).is_empty());
    w.send(
        on.session,
        Input::Spills {
            spilled: vec![oid, ObjectId::of(b"unknown")],
            restored: vec![],
        },
    );
    assert_eq!(spilled(&w), vec![on.id]);
    w.send(
        on.session,
        Input::Spills {
            spilled: vec![],
            restored: vec![oid],
        },
    );
    assert!(spilled(&w).is_empty());
    w.send(
        on.session,
        Input::Spills {
            spilled: vec![oid],
            restored: vec![],
        },
    );
    w.kill(on);
    w.st.check_invariants().expect("invariants");
}

/// What the state saved, kept as the database keeps it.
/// The hello of a worker that comes back to a restarted head.
fn back_hello(n: Node, cpus: f64) -> super::Hello {
    super::Hello {
        name: "back".into(),
        worker: Some(super::WorkerHello {
            resources: Resources::cpus(cpus),
            object_address: address(n.id),
        }),
        in_head: false,
        results_key: None,
    }
}

fn saved_of(st: &mut super::State, into: &mut super::Saved) {
    for s in std::mem::take(&mut st.outbox().saves) {
        into.apply(s);
    }
}

/// A job submission sent again with its key (its answer lost) gets the job
/// that key made, from the same head and from one restarted on what it
/// kept, and no second driver is queued; other keys and no key make jobs.
#[test]
fn a_submission_key_keeps_its_job_across_a_restart() {
    let mut w = World::new();
    let mut kept = super::Saved::default();
    let n = w.node(1.0);
    let request = |w: &World| JobRequest {
        component: w.comp,
        function: "main".into(),
        args: vec![],
        entrypoint: Resources::default(),
    };
    let job = w.st.submit_job_keyed(request(&w), "key-a").expect("a job");
    assert_eq!(w.take().assigns(n).len(), 1);
    assert_eq!(
        w.st.submit_job_keyed(request(&w), "key-a")
            .expect("the job"),
        job
    );
    assert!(w.take().assigns(n).is_empty(), "a second driver ran");
    w.st.save_changed_jobs();
    saved_of(&mut w.st, &mut kept);

    let mut st = super::State::new("head:2".into());
    st.restore(kept, w.now);
    assert_eq!(
        st.submit_job_keyed(request(&w), "key-a").expect("the job"),
        job
    );
    assert_eq!(st.job_info(job).map(|j| j.job), Some(job));
    let other = st.submit_job_keyed(request(&w), "key-b").expect("a job");
    assert_ne!(other, job);
    let none = st.submit_job_keyed(request(&w), "").expect("a job");
    assert_ne!(st.submit_job_keyed(request(&w), "").expect("a job"), none);
    st.check_invariants().expect("the invariants hold");
}

/// A head that comes back on its saved tables: a finished job is listed as
/// it ended (result, log tail, progress); a job whose driver was running
/// runs it again on the first node, and ends with the re-run's result; a
/// client's job ends as failed; ids go on after the earlier head's; the
/// component is still there.
#[test]
fn a_restarted_head_takes_back_its_jobs_components_and_ids() {
    let mut w = World::new();
    let mut kept = super::Saved::default();
    let n = w.node(1.0);
    let request = |w: &World, f: &str| JobRequest {
        component: w.comp,
        function: f.into(),
        args: vec!["7".into()],
        entrypoint: Resources::default(),
    };
    let first = w.st.submit_job(request(&w, "first")).expect("a job");
    let a = w.take().assigns(n)[0].clone();
    w.send(
        n.session,
        Input::Output {
            task: a.task,
            stdout: Bytes::from_static(b"hello from the first\n"),
        },
    );
    w.send(
        n.session,
        Input::Done(Done {
            task: a.task,
            attempt: 1,
            outcome: Outcome::Made(made(b"ok(7)", false)),
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            wave: "ok(7)".into(),
            err_value: false,
            direct: false,
        }),
    );
    let second = w.st.submit_job(request(&w, "second")).expect("a job");
    let b = w.take().assigns(n)[0].clone();
    let nested = w.submit_as(n.session, Acting::Task(b.task), vec![], opts(0.5, 3));
    w.run(n, nested, 1, b"nested", false);
    let client = w.client();
    w.st.save_changed_jobs();
    saved_of(&mut w.st, &mut kept);
    assert_eq!(kept.jobs.len(), 3);
    let before = w.st.job_info(first).expect("first");

    // The head dies; a new one starts on what was kept.
    let mut st = super::State::new("head:2".into());
    st.restore(kept.clone(), w.now);
    // The node and the client do not come back: the head stops waiting
    // for them after the window.
    st.check_heartbeats(w.now + super::REJOIN_WINDOW, Duration::from_secs(3600));
    let after = st.job_info(first).expect("the finished job is listed");
    assert_eq!(after, before);
    let logs = st.job_logs(first, 0).0;
    assert!(
        logs.iter().any(|l| l.contains("hello from the first")),
        "{logs:?}"
    );
    let again = st.job_info(second).expect("the running job is listed");
    assert_eq!(again.state, JobState::Pending, "{}", again.error);
    let logs = st.job_logs(second, 0).0;
    assert!(
        logs.iter().any(|l| l.contains("driver runs again")),
        "{logs:?}"
    );
    let lost = st.job_info(client.job).expect("the client's job");
    assert_eq!(lost.state, JobState::Failed);
    assert!(lost.error.contains("head restarted"), "{}", lost.error);
    assert!(st.components.contains_key(&w.comp));
    assert!(st.next_session > client.session && st.next_job > client.job.0);
    st.check_invariants().expect("invariants");

    // A worker joins the new head: the driver runs there, again from the
    // start, and its result ends the job.
    let mut w2 = World::new();
    w2.st = st;
    let m = w2.node(1.0);
    assert!(m.id.0 > n.id.0, "node ids go on");
    let sent = w2.take();
    let d = &sent.assigns(m)[0];
    assert!(d.driver && d.function == "second" && d.wave_args == vec!["7".to_string()]);
    w2.send(
        m.session,
        Input::Done(Done {
            task: d.task,
            attempt: 1,
            outcome: Outcome::Made(made(b"ok(8)", false)),
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            wave: "ok(8)".into(),
            err_value: false,
            direct: false,
        }),
    );
    let done = w2.st.job_info(second).expect("job");
    assert_eq!(
        (done.state, done.result.as_str()),
        (JobState::Succeeded, "ok(8)")
    );
    let third = w2.st.submit_job(request(&w2, "third")).expect("a job");
    assert!(third.0 > client.job.0, "job ids go on");
    w2.st.check_invariants().expect("invariants");

    // A head that stops ends its jobs as stopped (they do not run again).
    let fourth = w2.st.submit_job(request(&w2, "fourth")).expect("a job");
    w2.st.stop_all_jobs("the head was stopped");
    let mut kept2 = kept;
    saved_of(&mut w2.st, &mut kept2);
    let mut st3 = super::State::new("head:3".into());
    st3.restore(kept2, w2.now);
    for j in [third, fourth] {
        assert_eq!(st3.job_info(j).expect("listed").state, JobState::Stopped);
    }
    assert_eq!(st3.job_info(second).expect("listed").result, "ok(8)");
}

/// A restarted head's re-run drivers wait for a node for the workers'
/// reconnect window, then are infeasible like any work with no node.
#[test]
fn a_restarted_heads_drivers_wait_for_a_node_then_fail() {
    let mut w = World::new();
    let mut kept = super::Saved::default();
    w.node(1.0);
    let job =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec![],
            entrypoint: Resources::default(),
        })
        .expect("a job");
    saved_of(&mut w.st, &mut kept);
    let mut st = super::State::new("head:2".into());
    st.restore(kept, w.now);
    st.pump();
    st.check_heartbeats(w.now + Duration::from_secs(30), Duration::from_secs(5));
    assert_eq!(st.job_info(job).expect("job").state, JobState::Pending);
    st.check_heartbeats(w.now + super::saved::RESTART_GRACE, Duration::from_secs(5));
    let info = st.job_info(job).expect("job");
    assert_eq!(info.state, JobState::Failed);
    assert!(info.error.contains("no worker nodes"), "{}", info.error);
}

/// Sessions come back to a restarted head with what they had: the node
/// keeps its id, its driver goes on (it is not run again), its running
/// task's and actor call's ends reach their submitter, its actor takes new
/// calls, a submission sent again is not run twice, and its objects are
/// held there again. Until every earlier session is back, nothing is
/// placed.
#[test]
fn sessions_come_back_to_a_restarted_head_with_what_they_run() {
    use super::{CreateActor, Kind, LiveActor, Rejoined, RunningAttempt};
    let mut w = World::new();
    let mut kept = super::Saved::default();
    let n = w.node(4.0);
    let job =
        w.st.submit_job(JobRequest {
            component: w.comp,
            function: "main".into(),
            args: vec!["1".into()],
            entrypoint: Resources::cpus(1.0),
        })
        .expect("a job");
    let d = w.take().assigns(n)[0].clone();
    w.started(n, d.task);
    let driver = Acting::Task(d.task);
    // A task that ended on the node, whose end the head did not get.
    let t0 = w.submit_as(n.session, driver, vec![], opts(1.0, 0));
    assert_eq!(w.take().assign(n), (t0, 1));
    w.started(n, t0);
    let t1 = w.submit_as(n.session, driver, vec![], opts(1.0, 0));
    assert_eq!(w.take().assign(n), (t1, 1));
    w.started(n, t1);
    let actor = ActorId(w.id(n.session));
    w.send(
        n.session,
        Input::CreateActor(CreateActor {
            actor,
            acting: driver,
            component: Ok(w.comp),
            class: "counter".into(),
            options: Ok(actor_opts(1.0, 0)),
            args: Ok(vec![]),
        }),
    );
    let call = |w: &mut World, task: TaskId| {
        w.send(
            n.session,
            Input::CallActor(CallActor {
                task,
                acting: driver,
                actor,
                method: "add".into(),
                args: Ok(vec![]),
                direct: None,
            }),
        );
    };
    let c1 = TaskId(w.id(n.session));
    call(&mut w, c1);
    let sent = w.take();
    let start = sent.starts(n)[0].clone();
    assert_eq!(sent.calls(n)[0].task, c1);
    let held = w.put(n.session, driver, b"kept on the node", false);
    w.st.save_changed_jobs();
    saved_of(&mut w.st, &mut kept);
    assert_eq!(kept.sessions.len(), 1, "the node's session is kept");

    // The head dies; a new one waits for the node.
    let mut st = super::State::new("head:2".into());
    st.restore(kept, w.now);
    assert!(st.rejoining());
    let hello = back_hello(n, 4.0);
    let welcome = st.rejoin_session(n.session, &hello, w.now).expect("back");
    assert_eq!(welcome.node, Some(n.id), "the node keeps its id");
    assert!(st.rejoin_session(n.session, &hello, w.now).is_err(), "once");
    // A message before its report is held, not refused.
    st.handle(n.session, Input::Started(TaskId(12345)));
    let task_attempt = |t: TaskId, what: Kind, started: bool| RunningAttempt {
        task: t,
        job,
        attempt: 1,
        started,
        ended: false,
        what,
        args: vec![],
    };
    // The tasks `t0` and `t1` run `f` with one CPU.
    let f = Kind::Task {
        component: w.comp,
        function: "f".into(),
        options: opts(1.0, 0),
    };
    st.rejoined(
        n.session,
        Rejoined {
            running: vec![
                RunningAttempt {
                    ended: true,
                    ..task_attempt(t0, f.clone(), true)
                },
                task_attempt(
                    d.task,
                    Kind::Driver {
                        component: w.comp,
                        function: "main".into(),
                        wave_args: vec!["1".into()],
                        resources: Resources::cpus(1.0),
                    },
                    true,
                ),
                task_attempt(t1, f, true),
                task_attempt(
                    c1,
                    Kind::ActorCall {
                        actor,
                        method: "add".into(),
                    },
                    true,
                ),
            ],
            actors: vec![LiveActor {
                actor,
                job,
                incarnation: start.incarnation,
                component: w.comp,
                class: "counter".into(),
                args: vec![],
                options: actor_opts(1.0, 0),
            }],
            objects: vec![(held, 16)],
            more: false,
        },
    );
    assert!(!st.rejoining(), "every session is back");
    st.check_invariants().expect("invariants");
    let mut w2 = World::new();
    w2.st = st;
    let info = w2.st.job_info(job).expect("the job");
    assert_eq!(info.state, JobState::Running);
    let logs = w2.st.job_logs(job, 0).0;
    assert!(logs.iter().any(|l| l.contains("went on")), "{logs:?}");
    assert!(
        !logs.iter().any(|l| l.contains("runs again")),
        "the driver is not run again: {logs:?}"
    );
    assert_eq!(w2.free_cpus(n), 1.0, "driver, task and actor hold theirs");
    let sent = w2.take();
    assert!(sent.assigns(n).is_empty(), "nothing runs twice");

    // The driver sends its submission again: not run twice.
    w2.send(
        n.session,
        Input::Submit(Submit {
            task: t1,
            acting: driver,
            component: Ok(w2.comp),
            function: "f".into(),
            options: Ok(opts(1.0, 0)),
            args: Ok(vec![]),
        }),
    );
    assert!(
        w2.take().is_empty(),
        "a submission sent again is not answered"
    );
    // Ends reach the submitter; the one that had ended gives nothing back.
    w2.done(n, t0, 1, Outcome::Made(made(b"t0", false)));
    assert_eq!(w2.free_cpus(n), 1.0);
    w2.done(n, t1, 1, Outcome::Made(made(b"t1", false)));
    w2.done(n, c1, 1, Outcome::Made(made(b"c1", false)));
    let sent = w2.take();
    let resolved: Vec<TaskId> = sent.resolved(n.session).iter().map(|(t, _)| *t).collect();
    assert_eq!(resolved, vec![t0, t1, c1]);
    assert_eq!(w2.free_cpus(n), 2.0);
    // The actor takes new calls; a new task runs.
    let c2 = TaskId((n.session << 32) | 100);
    call(&mut w2, c2);
    let t2 = TaskId((n.session << 32) | 101);
    w2.send(
        n.session,
        Input::Submit(Submit {
            task: t2,
            acting: driver,
            component: Ok(w2.comp),
            function: "f".into(),
            options: Ok(opts(1.0, 0)),
            args: Ok(vec![Arg::Object(held)]),
        }),
    );
    let sent = w2.take();
    assert_eq!(sent.calls(n)[0].task, c2);
    let a2 = &sent.assigns(n)[0];
    assert_eq!(a2.task, t2);
    assert!(
        matches!(&a2.args[0], ResolvedArg::Object(loc) if loc.id == held),
        "the object is held on the node again"
    );
    w2.st.check_invariants().expect("invariants");
    // The driver ends its job.
    w2.send(
        n.session,
        Input::Done(Done {
            task: d.task,
            attempt: 1,
            outcome: Outcome::Made(made(b"ok(1)", false)),
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            wave: "ok(1)".into(),
            err_value: false,
            direct: false,
        }),
    );
    assert_eq!(w2.st.job_info(job).expect("job").state, JobState::Succeeded);
    w2.st.check_invariants().expect("invariants");
}

/// A session that does not come back within the window is not waited for:
/// the job whose driver it ran runs the driver again. One that came back
/// but did not say what it runs is closed (the head cannot know its work).
/// A job stopped during the wait stays stopped.
#[test]
fn a_restarted_head_stops_waiting_after_the_rejoin_window() {
    let mut w = World::new();
    let mut kept = super::Saved::default();
    let n = w.node(2.0);
    let m = w.node(2.0);
    let request = |w: &World| JobRequest {
        component: w.comp,
        function: "main".into(),
        args: vec![],
        entrypoint: Resources::default(),
    };
    let job = w.st.submit_job(request(&w)).expect("a job");
    let stopped = w.st.submit_job(request(&w)).expect("a job");
    w.take();
    saved_of(&mut w.st, &mut kept);
    let mut st = super::State::new("head:2".into());
    st.restore(kept, w.now);
    assert!(st.rejoining());
    let hello = back_hello(m, 2.0);
    st.rejoin_session(m.session, &hello, w.now).expect("back");
    st.stop_job(stopped).expect("stopped during the wait");
    st.check_heartbeats(w.now + Duration::from_secs(1), Duration::from_secs(5));
    assert!(st.rejoining());
    st.outbox().sent.clear();
    st.check_heartbeats(w.now + super::REJOIN_WINDOW, Duration::from_secs(3600));
    assert!(!st.rejoining());
    assert!(
        st.outbox()
            .sent
            .iter()
            .any(|(s, e)| *s == m.session && matches!(e, super::Effect::Close)),
        "the session without a report is closed"
    );
    let logs = st.job_logs(job, 0).0;
    assert!(logs.iter().any(|l| l.contains("runs again")), "{logs:?}");
    let info = st.job_info(stopped).expect("listed");
    assert_eq!(info.state, JobState::Stopped);
    let logs = st.job_logs(stopped, 0).0;
    assert!(!logs.iter().any(|l| l.contains("runs again")), "{logs:?}");
    let hello = back_hello(n, 2.0);
    assert!(
        st.rejoin_session(n.session, &hello, w.now).is_err(),
        "too late: it joins as a new node"
    );
    st.check_invariants().expect("invariants");
}
