//! The edge: sessions, the conversions both ways, and `Locate` and
//! `WatchJob` waiting on the state's notifications (no gRPC transport: the
//! service's methods are called directly).

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferray_core::{ComponentId, ObjectId};
use ferray_proto::v1::head_server::Head as _;
use ferray_proto::v1::{self, down, up};
use ferray_proto::{PROTOCOL_VERSION, Token, id_bytes};
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tonic::Request;

use crate::{Head, HeadConfig};

pub(crate) fn head() -> Head {
    let config = HeadConfig {
        token: Token::new("test-token").expect("a token"),
        node_timeout: Duration::from_secs(5),
        store: ferray_store::StoreConfig::default(),
        job_caps: Default::default(),
        state_db: None,
    };
    Head::new(config, "head:1".into()).expect("a head")
}

pub(crate) fn hello(worker: bool) -> v1::Hello {
    v1::Hello {
        protocol: PROTOCOL_VERSION,
        worker,
        resources: worker.then(|| v1::Resources {
            cpus: 2.0,
            ..Default::default()
        }),
        object_address: if worker {
            "node:1".into()
        } else {
            String::new()
        },
        name: "test".into(),
        resume: 0,
        down_seen: 0,
        in_head: false,
        results_key: Bytes::new(),
    }
}

fn up(msg: up::Msg) -> Vec<v1::Up> {
    vec![v1::Up {
        seq: 0,
        msg: Some(msg),
    }]
}

/// The next message down a session (there must be one).
fn next(rx: &mut UnboundedReceiver<v1::Down>) -> down::Msg {
    rx.try_recv()
        .ok()
        .and_then(|d| d.msg)
        .expect("a message down")
}

fn welcome(rx: &mut UnboundedReceiver<v1::Down>) -> v1::Welcome {
    match next(rx) {
        down::Msg::Welcome(w) => w,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_task_travels_from_client_to_worker_and_back() {
    let head = head();
    let comp = ComponentId::of(b"component");
    head.core
        .lock()
        .state
        .components
        .insert(comp, Bytes::from_static(b"component"));
    let (client, mut crx) = head.open(&hello(false)).expect("a client");
    let w = welcome(&mut crx);
    let (worker, mut wrx) = head.open(&hello(true)).expect("a worker");
    assert_eq!(welcome(&mut wrx).node, 1);
    let task = w.id_base + 1;
    head.handle(
        client,
        up(up::Msg::Submit(v1::Submit {
            task,
            acting: None,
            component: Bytes::copy_from_slice(comp.as_bytes()),
            function: "f".into(),
            args: vec![v1::Arg {
                kind: Some(v1::arg::Kind::Value(Bytes::from_static(b"x"))),
            }],
            options: None,
        })),
    );
    let a = match next(&mut wrx) {
        down::Msg::Assign(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!((a.task, a.attempt, a.job), (task, 1, w.job));
    assert_eq!(a.component.as_ref(), comp.as_bytes());
    let result = Bytes::from_static(b"result");
    head.handle(worker, up(up::Msg::Started(v1::Started { task })));
    head.handle(
        worker,
        up(up::Msg::Done(v1::Done {
            task,
            attempt: 1,
            result: Some(v1::done::Result::Ok(v1::ObjectLoc {
                id: id_bytes(&ObjectId::of(&result)),
                size: result.len() as u64,
                inline: Some(result.clone()),
                holders: vec![],
            })),
            stdout: Bytes::from_static(b"hi\n"),
            ..Default::default()
        })),
    );
    assert!(matches!(next(&mut crx), down::Msg::Output(_)));
    match next(&mut crx) {
        down::Msg::Resolved(r) => match r.result {
            Some(v1::resolved::Result::Ok(loc)) => {
                assert_eq!(loc.inline, Some(result));
                assert_eq!(loc.holders, vec!["node:1".to_string()]);
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // A malformed submission is refused with the task's id.
    head.handle(
        client,
        up(up::Msg::Submit(v1::Submit {
            task: task + 1,
            acting: None,
            component: Bytes::from_static(b"short"),
            ..Default::default()
        })),
    );
    match next(&mut crx) {
        down::Msg::Resolved(r) => {
            assert_eq!(r.task, task + 1);
            assert!(matches!(r.result, Some(v1::resolved::Result::Err(_))));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_silent_workers_stream_ends() {
    let head = head();
    let (_worker, mut rx) = head.open(&hello(true)).expect("a worker");
    welcome(&mut rx);
    head.with(|st| {
        st.check_heartbeats(
            Instant::now() + Duration::from_secs(10),
            Duration::from_secs(5),
        )
    });
    assert!(rx.recv().await.is_none(), "its channel is dropped");
    assert!(head.core.lock().sessions.is_empty());
}

#[tokio::test]
async fn locate_waits_for_a_pushed_object_and_leaves_no_waiter() {
    let head = head();
    let (client, mut crx) = head.open(&hello(false)).expect("a client");
    welcome(&mut crx);
    let id = ObjectId::of(b"large");
    head.handle(
        client,
        up(up::Msg::Put(v1::PutObject {
            id: id_bytes(&id),
            size: 5 << 20,
            acting: None,
            inline: None,
            uploading: true,
        })),
    );
    let h = head.clone();
    let locating = tokio::spawn(async move {
        h.locate(Request::new(v1::ObjectKey { id: id_bytes(&id) }))
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!locating.is_finished());
    assert_eq!(head.core.lock().object_waits.len(), 1);
    let pushed = Instant::now();
    head.with(|st| st.pushed(id, 5 << 20, false));
    let loc = tokio::time::timeout(Duration::from_secs(5), locating)
        .await
        .expect("locate answers")
        .expect("the task")
        .expect("found")
        .into_inner();
    assert!(pushed.elapsed() < Duration::from_secs(1));
    assert_eq!(loc.holders, vec!["head:1".to_string()]);
    assert!(head.core.lock().object_waits.is_empty());

    // Unknown: not found at once.
    let unknown = ObjectId::of(b"unknown");
    let e = head
        .locate(Request::new(v1::ObjectKey {
            id: id_bytes(&unknown),
        }))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound);

    // A locate that is dropped while it waits leaves nothing behind.
    let other = ObjectId::of(b"other");
    head.handle(
        client,
        up(up::Msg::Put(v1::PutObject {
            id: id_bytes(&other),
            size: 5 << 20,
            acting: None,
            inline: None,
            uploading: true,
        })),
    );
    let h = head.clone();
    let locating = tokio::spawn(async move {
        h.locate(Request::new(v1::ObjectKey {
            id: id_bytes(&other),
        }))
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(head.core.lock().object_waits.len(), 1);
    locating.abort();
    let _ = locating.await;
    assert!(head.core.lock().object_waits.is_empty());
}

#[tokio::test]
async fn a_failed_upload_ends_a_locate_at_once() {
    let head = head();
    let (client, mut crx) = head.open(&hello(false)).expect("a client");
    welcome(&mut crx);
    let id = ObjectId::of(b"large");
    let put = |uploading| {
        up(up::Msg::Put(v1::PutObject {
            id: id_bytes(&id),
            size: 5 << 20,
            acting: None,
            inline: None,
            uploading,
        }))
    };
    head.handle(client, put(true));
    let h = head.clone();
    let locating = tokio::spawn(async move {
        h.locate(Request::new(v1::ObjectKey { id: id_bytes(&id) }))
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    head.handle(client, put(false));
    let e = tokio::time::timeout(Duration::from_secs(5), locating)
        .await
        .expect("locate answers")
        .expect("the task")
        .expect_err("lost");
    assert!(e.message().contains("lost"), "{}", e.message());
}

#[tokio::test]
async fn watch_job_follows_the_jobs_log_and_progress_until_it_ends() {
    let head = head();
    let comp = ComponentId::of(b"component");
    head.core
        .lock()
        .state
        .components
        .insert(comp, Bytes::from_static(b"component"));
    let (client, mut crx) = head.open(&hello(false)).expect("a client");
    let w = welcome(&mut crx);
    let (worker, mut wrx) = head.open(&hello(true)).expect("a worker");
    welcome(&mut wrx);
    let mut events = head
        .watch_job(Request::new(v1::JobKey {
            job: w.job,
            follow: true,
            from_line: 0,
        }))
        .await
        .expect("a watch")
        .into_inner();
    let mut event = async || {
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event in time")
            .expect("an event")
            .expect("not an error")
            .event
            .expect("an event")
    };
    use v1::job_event::Event;
    assert!(matches!(event().await, Event::Progress(p) if (p.done, p.total) == (0, 0)));
    let task = w.id_base + 1;
    head.handle(
        client,
        up(up::Msg::Submit(v1::Submit {
            task,
            acting: None,
            component: Bytes::copy_from_slice(comp.as_bytes()),
            function: "f".into(),
            ..Default::default()
        })),
    );
    assert!(matches!(event().await, Event::Progress(p) if (p.done, p.total) == (0, 1)));
    head.handle(
        worker,
        up(up::Msg::Done(v1::Done {
            task,
            attempt: 1,
            result: Some(v1::done::Result::Err(v1::Error {
                kind: "trap".into(),
                message: "boom".into(),
            })),
            stdout: Bytes::from_static(b"a line\n"),
            ..Default::default()
        })),
    );
    assert!(matches!(event().await, Event::Log(l) if l.ends_with(") a line")));
    assert!(matches!(event().await, Event::Progress(p) if (p.done, p.total) == (1, 1)));
    head.with(|st| st.close_session(client, "it left"));
    match event().await {
        Event::Finished(info) => assert_eq!(info.state, "SUCCEEDED"),
        other => panic!("{other:?}"),
    }
    // The watcher is gone from the table once its stream ends.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(head.core.lock().job_waits.is_empty());
    let _ = wrx.try_recv();
}

/// A session outlives its stream: numbered messages sent twice (before and
/// after a break) are handled once, what the head sent and was not
/// acknowledged comes again on the new stream with its number, an
/// acknowledged one does not, and a session whose stream stays broken past
/// the node timeout is over (a resume is refused).
#[tokio::test]
async fn a_session_resumes_on_a_new_stream_with_nothing_lost_or_twice() {
    let head = head();
    let comp = ComponentId::of(b"component");
    head.core
        .lock()
        .state
        .components
        .insert(comp, Bytes::from_static(b"component"));
    let (client, mut crx) = head.open(&hello(false)).expect("a client");
    let w = welcome(&mut crx);
    assert!(!w.resumed && w.resume_window_ms == 5_000);
    let (worker, mut wrx) = head.open(&hello(true)).expect("a worker");
    welcome(&mut wrx);
    let submit = |seq: u64, n: u64| v1::Up {
        seq,
        msg: Some(up::Msg::Submit(v1::Submit {
            task: w.id_base + n,
            acting: None,
            component: Bytes::copy_from_slice(comp.as_bytes()),
            function: "f".into(),
            args: vec![],
            options: None,
        })),
    };
    head.handle(client, vec![submit(1, 1), submit(2, 2)]);
    let first = wrx.try_recv().expect("an assignment");
    assert!(matches!(first.msg, Some(down::Msg::Assign(_))));
    assert_eq!(first.seq, 1);
    let second = wrx.try_recv().expect("an assignment");
    assert_eq!(second.seq, 2);

    // The client's stream breaks; it resumes having got nothing down.
    head.detach(client, 0);
    let mut hello_again = hello(false);
    hello_again.resume = client;
    let (_, generation, mut crx2) = head.resume(&hello_again).expect("resumed");
    assert_eq!(generation, 1);
    let w2 = welcome(&mut crx2);
    assert!(w2.resumed);
    assert_eq!((w2.session, w2.up_seen, w2.job), (client, 2, w.job));
    // It sends again from 2 (it did not know the head got it), then 3.
    head.handle(client, vec![submit(2, 2), submit(3, 3)]);
    let job = head.job_info(ferray_core::JobId(w.job)).expect("its job");
    assert_eq!(job.tasks_total, 3, "task 2 counted once");
    // An older stream's end does not detach the new one.
    head.detach(client, 0);
    assert!(head.core.lock().sessions[&client].tx.is_some());

    // The worker acknowledged the first assignment, then its stream broke:
    // the second comes again, with its number; the third follows.
    head.handle(worker, up(up::Msg::Ack(v1::Ack { seen: 1 })));
    head.detach(worker, 0);
    let mut hello_w = hello(true);
    hello_w.resume = worker;
    hello_w.down_seen = 1;
    let (_, _, mut wrx2) = head.resume(&hello_w).expect("resumed");
    assert!(welcome(&mut wrx2).resumed);
    let again: Vec<u64> = std::iter::from_fn(|| wrx2.try_recv().ok())
        .filter(|d| matches!(d.msg, Some(down::Msg::Assign(_))))
        .map(|d| d.seq)
        .collect();
    assert_eq!(again, vec![2, 3]);

    // A stream that stays broken past the node timeout ends the session.
    head.detach(client, 1);
    head.tick_links(Duration::ZERO);
    assert!(!head.core.lock().sessions.contains_key(&client));
    let refused = head.resume(&hello_again).err().expect("refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let job = head.job_info(ferray_core::JobId(w.job)).expect("its job");
    assert_ne!(job.state, "RUNNING", "the client's job ended");
    // A goodbye ends a session at once.
    head.handle(worker, up(up::Msg::Bye(v1::Bye {})));
    assert!(!head.core.lock().sessions.contains_key(&worker));
}

/// A job submission sent again with its key (its answer was lost) gets the
/// job of the first; another key, or none, makes a new job.
#[tokio::test]
async fn a_submission_sent_again_with_its_key_gets_the_same_job() {
    let head = head();
    let comp = ComponentId::of(b"component");
    head.core
        .lock()
        .state
        .components
        .insert(comp, Bytes::from_static(b"component"));
    let request = |key: &str| v1::JobRequest {
        component: Bytes::copy_from_slice(comp.as_bytes()),
        function: "main".into(),
        key: key.into(),
        ..Default::default()
    };
    let submit = async |key: &str| {
        tokio::time::timeout(
            Duration::from_secs(5),
            head.submit_job(Request::new(request(key))),
        )
        .await
        .expect("an answer in time")
        .expect("a job")
        .into_inner()
        .job
    };
    let first = submit("k1").await;
    assert_eq!(submit("k1").await, first);
    let other = submit("k2").await;
    assert_ne!(other, first);
    assert_ne!(submit("").await, submit("").await);
    assert_eq!(submit("k2").await, other);
    // A key past the limit is refused, not kept.
    let long = "k".repeat(257);
    let refused = head
        .submit_job(Request::new(request(&long)))
        .await
        .expect_err("a key too long");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
}
