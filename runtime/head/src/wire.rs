//! The head's edge: `v1` messages into the state machine's types, and its
//! effects and views back into `v1` messages. Decoding that can fail is
//! handed to the state as `Result`s, so that it refuses a malformed
//! message where it checks everything else.

use bytes::Bytes;
use ferray_core::{ActorId, ComponentId, Error, JobId, NodeId, TaskId};
use ferray_proto::v1::{self, down, up};
use ferray_proto::{error_from, error_to, id_bytes, object_id};

use crate::state::{
    Acting, Arg, CallActor, CreateActor, Done, Effect, Hello, Input, JobRequest, KillActor, Kind,
    LiveActor, Made, ObjectLoc, Outcome, Put, Rejoined, ResolvedArg, RunningAttempt, Submit,
    WorkerHello,
};

/// Argument bytes a submission may carry inline.
const MAX_SUBMIT_INLINE: usize = 2 << 20;

// ----- in -----

pub(crate) fn hello(h: &v1::Hello) -> Result<Hello, Error> {
    let worker = if h.worker {
        Some(WorkerHello {
            resources: ferray_proto::resources_from(h.resources.clone())?,
            object_address: h.object_address.clone(),
        })
    } else {
        None
    };
    Ok(Hello {
        name: h.name.clone(),
        worker,
        in_head: h.in_head,
        // A key that is not 16 bytes is no key: the session's results come
        // through the head only.
        results_key: h.results_key.as_ref().try_into().ok(),
    })
}

/// What a session that came back to a restarted head had. What does not
/// decode is left out (the head then does not know it, as if it had
/// ended); the node is told to drop it when it reports it again.
pub(crate) fn rejoined(r: v1::Rejoin) -> Rejoined {
    let mut out = Rejoined {
        more: r.more,
        ..Rejoined::default()
    };
    for o in r.objects {
        if let Ok(id) = object_id(&o.id) {
            out.objects.push((id, o.size));
        }
    }
    for a in r.actors {
        let made = (|| {
            Ok::<_, Error>(LiveActor {
                actor: ActorId(a.actor),
                job: ferray_core::JobId(a.job),
                incarnation: a.incarnation,
                component: component(&a.component)?,
                class: a.class,
                args: a
                    .args
                    .into_iter()
                    .map(resolved_arg)
                    .collect::<Result<_, _>>()?,
                options: ferray_proto::actor_options_from(a.options)?,
            })
        })();
        match made {
            Ok(a) => out.actors.push(a),
            Err(e) => tracing::warn!("a rejoining node's actor-{} is left out: {e}", a.actor),
        }
    }
    for at in r.running {
        let Some(a) = at.assign else { continue };
        let task = a.task;
        let made = (|| {
            let what = if at.actor != 0 {
                Kind::ActorCall {
                    actor: ActorId(at.actor),
                    method: a.function,
                }
            } else if a.driver {
                Kind::Driver {
                    component: component(&a.component)?,
                    function: a.function,
                    wave_args: a.wave_args,
                    resources: ferray_proto::task_options_from(a.options)?.resources,
                }
            } else {
                Kind::Task {
                    component: component(&a.component)?,
                    function: a.function,
                    options: ferray_proto::task_options_from(a.options)?,
                }
            };
            Ok::<_, Error>(RunningAttempt {
                task: TaskId(a.task),
                job: ferray_core::JobId(a.job),
                attempt: a.attempt,
                started: at.started,
                ended: at.ended,
                what,
                args: a
                    .args
                    .into_iter()
                    .map(resolved_arg)
                    .collect::<Result<_, _>>()?,
            })
        })();
        match made {
            Ok(r) => out.running.push(r),
            Err(e) => tracing::warn!("a rejoining node's task-{task} is left out: {e}"),
        }
    }
    out
}

/// An argument as a node got it, as the head keeps it.
fn resolved_arg(a: v1::ResolvedArg) -> Result<Arg, Error> {
    match a.kind {
        Some(v1::resolved_arg::Kind::Value(b)) => Ok(Arg::Value(b)),
        Some(v1::resolved_arg::Kind::Object(loc)) => match loc.inline {
            // Small objects travel inline: kept as the value they are.
            Some(b) => Ok(Arg::Value(b)),
            None => Ok(Arg::Object(object_id(&loc.id)?)),
        },
        None => Err(Error::InvalidArgument("an argument without a kind".into())),
    }
}

/// A session's message for the state; `Ok(None)`: nothing to do (a hello
/// again, a `Located` with a malformed id); `Err`: a put that is refused.
pub(crate) fn input(m: up::Msg) -> Result<Option<Input>, Error> {
    Ok(Some(match m {
        // A hello again; acks and goodbyes are the edge's (`Head::handle`).
        up::Msg::Hello(_) | up::Msg::Ack(_) | up::Msg::Bye(_) | up::Msg::Rejoin(_) => {
            return Ok(None);
        }
        up::Msg::Heartbeat(h) if h.spilled.is_empty() && h.restored.is_empty() => Input::Heartbeat,
        up::Msg::Heartbeat(h) => Input::Spills {
            spilled: h.spilled.iter().filter_map(|b| object_id(b).ok()).collect(),
            restored: h
                .restored
                .iter()
                .filter_map(|b| object_id(b).ok())
                .collect(),
        },
        up::Msg::Submit(s) => Input::Submit(Submit {
            task: TaskId(s.task),
            acting: acting(s.acting),
            component: component(&s.component),
            function: s.function,
            options: ferray_proto::task_options_from(s.options),
            args: args(s.args),
        }),
        up::Msg::CreateActor(c) => Input::CreateActor(CreateActor {
            actor: ActorId(c.actor),
            acting: acting(c.acting),
            component: component(&c.component),
            class: c.class,
            options: ferray_proto::actor_options_from(c.options),
            args: args(c.args),
        }),
        up::Msg::CallActor(c) => Input::CallActor(call_actor(c)),
        up::Msg::KillActor(k) => Input::KillActor(KillActor {
            actor: ActorId(k.actor),
            acting: acting(k.acting),
            task: (k.task != 0).then_some(TaskId(k.task)),
        }),
        up::Msg::Cancel(c) => Input::Cancel {
            task: TaskId(c.task),
            acting: acting(c.acting),
        },
        up::Msg::Release(r) => Input::Release(r.tasks.into_iter().map(TaskId).collect()),
        up::Msg::Put(p) => Input::Put(Put {
            id: object_id(&p.id)?,
            size: p.size,
            acting: acting(p.acting),
            inline: p.inline,
            uploading: p.uploading,
        }),
        up::Msg::Blocked(b) => Input::Blocked {
            task: TaskId(b.task),
            blocked: b.blocked,
        },
        up::Msg::Started(s) => Input::Started(TaskId(s.task)),
        up::Msg::Output(o) => Input::Output {
            task: TaskId(o.task),
            stdout: o.stdout,
        },
        up::Msg::Done(d) => Input::Done(done(d)),
        up::Msg::Located(l) => match object_id(&l.id) {
            Ok(id) => Input::Located(id),
            Err(_) => return Ok(None),
        },
        up::Msg::ActorDied(d) => Input::ActorDied(crate::state::ActorDied {
            actor: ActorId(d.actor),
            incarnation: d.incarnation,
            error: error_from(d.error),
        }),
        up::Msg::DirectLost(l) => Input::DirectLost {
            tasks: l.tasks.into_iter().map(TaskId).collect(),
            unsent: l.unsent.into_iter().map(call_actor).collect(),
        },
    }))
}

fn call_actor(c: v1::CallActor) -> CallActor {
    CallActor {
        task: TaskId(c.task),
        acting: acting(c.acting),
        actor: ActorId(c.actor),
        method: c.method,
        args: args(c.args),
        direct: c.direct.map(actor_at_from),
    }
}

fn actor_at_from(a: v1::ActorAt) -> crate::state::ActorAt {
    crate::state::ActorAt {
        actor: ActorId(a.actor),
        incarnation: a.incarnation,
        node: NodeId(a.node),
        address: a.address,
        job: JobId(a.job),
    }
}

/// For whom a worker sends a request (a client names no one).
fn acting(a: Option<v1::Acting>) -> Acting {
    use v1::acting::Who;
    match a.and_then(|a| a.who) {
        Some(Who::Task(t)) => Acting::Task(TaskId(t)),
        Some(Who::Actor(a)) => Acting::Actor(ActorId(a)),
        None => Acting::Session,
    }
}

fn component(bytes: &[u8]) -> Result<ComponentId, Error> {
    let id = object_id(bytes)?;
    Ok(ComponentId::from_bytes(*id.as_bytes()))
}

/// A submission's arguments: at most [`MAX_SUBMIT_INLINE`] bytes inline.
fn args(args: Vec<v1::Arg>) -> Result<Vec<Arg>, Error> {
    use v1::arg::Kind as A;
    let inline: usize = args
        .iter()
        .map(|a| match &a.kind {
            Some(A::Value(b)) => b.len(),
            _ => 0,
        })
        .sum();
    if inline > MAX_SUBMIT_INLINE {
        return Err(Error::InvalidArgument(format!(
            "{inline} bytes of arguments inline; more than {MAX_SUBMIT_INLINE} must be put as objects"
        )));
    }
    args.into_iter()
        .map(|a| match a.kind {
            Some(A::Value(b)) => Ok(Arg::Value(b)),
            Some(A::Task(t)) => Ok(Arg::Task(TaskId(t))),
            Some(A::Object(o)) => Ok(Arg::Object(object_id(&o)?)),
            None => Err(Error::InvalidArgument("an argument without a kind".into())),
        })
        .collect()
}

fn done(d: v1::Done) -> Done {
    let outcome = match d.result {
        Some(v1::done::Result::Ok(loc)) => match object_id(&loc.id) {
            Ok(id) => Outcome::Made(Made {
                id,
                size: loc.size,
                inline: loc.inline,
            }),
            Err(e) => Outcome::BadResult(e),
        },
        Some(v1::done::Result::Err(e)) => Outcome::Failed(error_from(Some(e))),
        None => Outcome::Empty,
    };
    Done {
        task: TaskId(d.task),
        attempt: d.attempt,
        outcome,
        stdout: d.stdout,
        stderr: d.stderr,
        wave: d.wave,
        err_value: d.err_value,
        direct: d.direct,
    }
}

pub(crate) fn job_request(r: v1::JobRequest) -> Result<JobRequest, Error> {
    Ok(JobRequest {
        component: component(&r.component)?,
        function: r.function,
        args: r.args,
        entrypoint: ferray_proto::resources_from(r.entrypoint)?,
    })
}

// ----- out -----

/// An effect as a message down its session; `None` for the session's end.
pub(crate) fn down(e: Effect) -> Option<v1::Down> {
    let msg = match e {
        Effect::Resolved { task, result } => down::Msg::Resolved(v1::Resolved {
            task: task.0,
            result: Some(match result {
                Ok(l) => v1::resolved::Result::Ok(loc(l)),
                Err(e) => v1::resolved::Result::Err(error_to(&e)),
            }),
        }),
        Effect::Assign(a) => down::Msg::Assign(v1::Assign {
            task: a.task.0,
            job: a.job.0,
            attempt: a.attempt,
            component: Bytes::copy_from_slice(a.component.as_bytes()),
            function: a.function,
            args: resolved_args(a.args),
            options: Some(ferray_proto::task_options_to(&a.options)),
            driver: a.driver,
            wave_args: a.wave_args,
            caller_key: a
                .caller_key
                .map(|k| Bytes::copy_from_slice(&k))
                .unwrap_or_default(),
        }),
        Effect::StartActor(s) => down::Msg::StartActor(v1::StartActor {
            actor: s.actor.0,
            job: s.job.0,
            incarnation: s.incarnation,
            component: Bytes::copy_from_slice(s.component.as_bytes()),
            class: s.class,
            args: resolved_args(s.args),
            options: Some(ferray_proto::actor_options_to(&s.options)),
        }),
        Effect::ActorCall(c) => down::Msg::ActorCall(v1::ActorCall {
            task: c.task.0,
            actor: c.actor.0,
            incarnation: c.incarnation,
            seq: c.seq,
            method: c.method,
            args: resolved_args(c.args),
        }),
        Effect::StopActor(a) => down::Msg::StopActor(v1::StopActor { actor: a.0 }),
        Effect::Cancel(t) => down::Msg::Cancel(v1::CancelTask { task: t.0 }),
        Effect::Free(ids) => down::Msg::Free(v1::Free {
            ids: ids.iter().map(id_bytes).collect(),
            seen: Vec::new(),
        }),
        Effect::FreeSeen(ids) => down::Msg::Free(v1::Free {
            ids: ids.iter().map(|(id, _)| id_bytes(id)).collect(),
            seen: ids.iter().map(|(_, n)| *n).collect(),
        }),
        Effect::Output {
            source,
            stdout,
            stderr,
        } => down::Msg::Output(v1::Output {
            source,
            stdout,
            stderr,
        }),
        Effect::ActorAt(a) => down::Msg::ActorAt(v1::ActorAt {
            actor: a.actor.0,
            incarnation: a.incarnation,
            node: a.node.0,
            address: a.address,
            job: a.job.0,
        }),
        Effect::CheckCalls(ts) => down::Msg::CheckCalls(v1::CheckCalls {
            tasks: ts.iter().map(|t| t.0).collect(),
        }),
        Effect::Close => return None,
    };
    Some(v1::Down {
        seq: 0,
        msg: Some(msg),
    })
}

pub(crate) fn loc(l: ObjectLoc) -> v1::ObjectLoc {
    v1::ObjectLoc {
        id: id_bytes(&l.id),
        size: l.size,
        inline: l.inline,
        holders: l.holders,
    }
}

fn resolved_args(args: Vec<ResolvedArg>) -> Vec<v1::ResolvedArg> {
    use v1::resolved_arg::Kind as R;
    args.into_iter()
        .map(|a| v1::ResolvedArg {
            kind: Some(match a {
                ResolvedArg::Value(b) => R::Value(b),
                ResolvedArg::Object(l) => R::Object(loc(l)),
            }),
        })
        .collect()
}
