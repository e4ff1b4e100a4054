//! Actors: creation, placement (they hold their resources for life), their
//! calls in submission order, restarts after their node dies, and death.

use std::collections::VecDeque;

use bytes::Bytes;
use ferray_core::{ActorId, ActorOptions, ComponentId, Error, NodeId, ObjectId, TaskId};

use super::timeline::End;
use super::{
    AState, ActorAt, ActorCall, ActorDied, ActorEntry, CallActor, CreateActor, Effect, KillActor,
    Kind, ObjectLoc, StartActor, State, TState, TaskEntry, Waiter, check_id,
};

impl State {
    pub(super) fn create_actor(&mut self, session: u64, c: CreateActor) {
        let a = c.actor;
        if check_id(session, a.0).is_err() {
            tracing::warn!("session {session}: refused to create {a} (not its id)");
            return;
        }
        if self.actors.contains_key(&a) {
            // Sent again by a session that came back to a restarted head,
            // which knows the actor from its node.
            return;
        }
        let CreateActor {
            acting,
            component,
            class,
            options,
            args,
            ..
        } = c;
        let job = match self.acting_job(session, acting) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!("session {session}: refused to create {a}: {e}");
                return;
            }
        };
        let made = (|| {
            let job = self.live_job(job)?;
            if let Some(j) = self.jobs.get(&job) {
                self.job_caps.check_actor(j.live_actors)?;
            }
            let component = self.component_of(component)?;
            let options = options?;
            let mut args = args?;
            self.unalias(job, &mut args);
            Ok::<_, Error>((job, component, options, args))
        })();
        let (job, component, options, args) = match made {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("session {session}: {a} not created: {e}");
                // Remembered as dead, so that calls fail with the reason,
                // and forgotten with its job (one that has ended already
                // cannot call it).
                if self.live_job(job).is_ok() {
                    let dead = AState::Dead(Error::ActorDied(format!("{a} was not created: {e}")));
                    let entry = ActorEntry {
                        job,
                        component: ComponentId::of(&[]),
                        class,
                        args: vec![],
                        options: ActorOptions::default(),
                        state: dead,
                        incarnation: 0,
                        restarts: 0,
                        next_seq: 0,
                        calls: VecDeque::new(),
                        queued: false,
                        waiting_on: None,
                        died_on: None,
                    };
                    self.add_actor(a, entry);
                }
                return;
            }
        };
        let entry = ActorEntry {
            job,
            component,
            class,
            args,
            options,
            state: AState::Pending,
            incarnation: 0,
            restarts: 0,
            next_seq: 0,
            calls: VecDeque::new(),
            queued: false,
            waiting_on: None,
            died_on: None,
        };
        self.add_actor(a, entry);
        self.try_ready(Waiter::Actor(a));
    }

    /// An actor in the table and in its job's set.
    fn add_actor(&mut self, a: ActorId, entry: ActorEntry) {
        if let Some(j) = self.jobs.get_mut(&entry.job) {
            j.actors.insert(a);
            if !matches!(entry.state, AState::Dead(_)) {
                j.live_actors += 1;
            }
        }
        self.actors.insert(a, entry);
    }

    /// Start the actor on the node the scheduler placed it on (its
    /// resources are taken).
    pub(super) fn start_actor(&mut self, a: ActorId, node: NodeId) {
        let Some(actor) = self.actors.get(&a) else {
            return;
        };
        let Some(args) = self.resolve_args(&actor.args) else {
            // An argument was lost meanwhile: wait for it again.
            let demand = actor.options.resources.clone();
            self.sched.release(node, &demand);
            if let Some(actor) = self.actors.get_mut(&a) {
                actor.queued = false;
            }
            return self.try_ready(Waiter::Actor(a));
        };
        let msg = StartActor {
            actor: a,
            job: actor.job,
            incarnation: actor.incarnation,
            component: actor.component,
            class: actor.class.clone(),
            args,
            options: ActorOptions {
                // Crashes restart on the node; node losses here.
                max_restarts: actor.options.max_restarts.saturating_sub(actor.restarts),
                ..actor.options.clone()
            },
        };
        if let Some(actor) = self.actors.get_mut(&a) {
            actor.state = AState::Alive(node);
            actor.queued = false;
            actor.next_seq = 0;
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.actors.insert(a);
        }
        tracing::info!("{a} placed on {node}");
        self.send_node(node, Effect::StartActor(msg));
        self.flush_actor(a);
    }

    pub(super) fn call_actor(&mut self, session: u64, c: CallActor) {
        let t = c.task;
        let a = c.actor;
        if let Err(e) = check_id(session, t.0) {
            return self.reply_err(session, t, e);
        }
        if self.sent_again(session, t) {
            return;
        }
        if self.tasks.contains_key(&t) {
            return self.reply_err(
                session,
                t,
                Error::InvalidArgument(format!("{t} was submitted twice")),
            );
        }
        let mut args = match c.args {
            Ok(a) => a,
            Err(e) => return self.reply_err(session, t, e),
        };
        // Another job's actor is answered as one that does not exist.
        let job = match self.acting_job(session, c.acting) {
            Ok(job) => job,
            Err(e) => return self.reply_err(session, t, e),
        };
        if let Err(e) = self.check_task_cap(job) {
            return self.reply_err(session, t, e);
        }
        self.unalias(job, &mut args);
        let Some(actor) = self.actors.get_mut(&a).filter(|x| x.job == job) else {
            return self.reply_err(session, t, no_actor(a));
        };
        // A direct call that reached the node where the actor died is that
        // node's to answer (it may have run it: its caller's report can come
        // after the actor's death, which its own call caused).
        let answered_there = c.direct.as_ref().is_some_and(|at| {
            actor.died_on == Some(at.node) && actor.incarnation == at.incarnation
        });
        if let AState::Dead(e) = &actor.state
            && !answered_there
        {
            let e = e.clone();
            return self.reply_err(session, t, e);
        }
        if let Some(at) = c.direct {
            return self.direct_call(session, t, a, c.method, args, at);
        }
        actor.calls.push_back(t);
        let job = actor.job;
        self.tasks.insert(
            t,
            TaskEntry::new(
                job,
                Some(session),
                Kind::ActorCall {
                    actor: a,
                    method: c.method,
                },
                args,
                TState::Waiting,
            ),
        );
        self.count_in_job(job, t);
        self.try_ready(Waiter::Task(t));
    }

    /// A call its caller sent straight to the node where it believes the
    /// actor lives (`at`): recorded as running there, answered by that
    /// node. When the actor no longer lives there, that node refuses the
    /// call, and the head records it as failed.
    fn direct_call(
        &mut self,
        session: u64,
        t: TaskId,
        a: ActorId,
        method: String,
        args: Vec<super::Arg>,
        at: ActorAt,
    ) {
        let Some(actor) = self.actors.get(&a) else {
            return;
        };
        let job = actor.job;
        let node = at.node;
        let here = match actor.state {
            AState::Alive(n) => n == node,
            AState::Dead(_) => actor.died_on == Some(node),
            AState::Pending => false,
        } && actor.incarnation == at.incarnation
            && self.nodes.get(&node).is_some_and(|n| n.alive);
        let mut task = TaskEntry::new(
            job,
            Some(session),
            Kind::ActorCall { actor: a, method },
            args,
            TState::Waiting,
        );
        task.direct = true;
        self.tasks.insert(t, task);
        self.count_in_job(job, t);
        let early = self.early_dones.remove(&t);
        if !here {
            // That node refuses it (or cannot be reached), and its caller
            // sends it again for the head to route (`reroute`).
            if let Some((_, n, d)) = early {
                self.discard(n, &d.outcome);
            }
            return;
        }
        if let Some(task) = self.tasks.get_mut(&t) {
            task.state = TState::Running(node);
            task.attempts = 1;
            task.ran_on = Some(node);
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.running.insert(t);
        }
        self.open_attempt(node, t);
        if let Some((s, _, d)) = early {
            // Its node answered before its caller's report came.
            self.done(s, d);
        }
    }

    /// Direct calls whose answers the caller did not get: answered now when
    /// they ended; when they still run, their node is asked to answer
    /// those it never got (the rest answer when they end).
    pub(super) fn direct_lost(&mut self, session: u64, tasks: &[TaskId]) {
        let mut check: std::collections::BTreeMap<NodeId, Vec<TaskId>> = Default::default();
        for &t in tasks {
            if check_id(session, t.0).is_err() {
                continue;
            }
            let Some(task) = self.tasks.get_mut(&t) else {
                // Refused, or its job ended: it has no answer to give.
                self.reply_err(
                    session,
                    t,
                    Error::ActorDied(format!("the answer to the call {t} was lost")),
                );
                continue;
            };
            if task.owner != Some(session) || !task.direct {
                continue;
            }
            task.direct = false;
            match task.state {
                TState::Done(_) | TState::Failed(_) => {
                    self.sent_again(session, t);
                }
                TState::Running(node) => check.entry(node).or_default().push(t),
                _ => {}
            }
        }
        for (node, ts) in check {
            self.send_node(node, Effect::CheckCalls(ts));
        }
    }

    /// A direct call that did not run, sent again whole by its caller: it
    /// joins the actor's calls as one the head routes (after the caller's
    /// calls already queued here), and the head answers it.
    pub(super) fn reroute(&mut self, session: u64, c: CallActor) {
        let t = c.task;
        let Some(task) = self.tasks.get_mut(&t) else {
            // Its report was refused: the call is answered as a new one.
            return self.call_actor(session, CallActor { direct: None, ..c });
        };
        if task.owner != Some(session) || !task.direct {
            return;
        }
        task.direct = false;
        let a = match task.kind {
            Kind::ActorCall { actor, .. } => actor,
            _ => return,
        };
        match task.state {
            TState::Done(_) | TState::Failed(_) => {
                self.sent_again(session, t);
                return;
            }
            TState::Running(node) => {
                self.close_attempt(node, t, End::Lost("the call did not reach the actor"));
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.running.remove(&t);
                }
            }
            _ => {}
        }
        let args = match c.args {
            Ok(args) => args,
            Err(e) => return self.fail_task(t, e),
        };
        let job = match self.tasks.get_mut(&t) {
            Some(task) => {
                task.state = TState::Waiting;
                task.attempts = 0;
                task.ran_on = None;
                task.job
            }
            None => return,
        };
        let mut args = args;
        self.unalias(job, &mut args);
        if let Some(task) = self.tasks.get_mut(&t) {
            task.args = args;
        }
        match self.actors.get_mut(&a) {
            Some(actor) if !matches!(actor.state, AState::Dead(_)) => actor.calls.push_back(t),
            Some(actor) => {
                let AState::Dead(e) = &actor.state else {
                    return;
                };
                let e = e.clone();
                return self.fail_task(t, e);
            }
            None => return self.fail_task(t, no_actor(a)),
        }
        self.try_ready(Waiter::Task(t));
    }

    /// Where the actor lives now, for a caller whose call it answered on
    /// `node` (its later calls may go straight there).
    pub(super) fn tell_actor_at(&mut self, session: u64, a: ActorId, node: NodeId) {
        let Some(actor) = self.actors.get(&a) else {
            return;
        };
        if !matches!(actor.state, AState::Alive(n) if n == node) {
            return;
        }
        let Some(address) = self.holder_address(node) else {
            return;
        };
        let at = ActorAt {
            actor: a,
            incarnation: actor.incarnation,
            node,
            address,
            job: actor.job,
        };
        self.send(session, Effect::ActorAt(at));
    }

    /// Send the actor's ready calls, in submission order, while it is alive.
    pub(super) fn flush_actor(&mut self, a: ActorId) {
        loop {
            let Some(actor) = self.actors.get(&a) else {
                return;
            };
            let AState::Alive(node) = actor.state else {
                return;
            };
            if !self.nodes.get(&node).is_some_and(|n| n.alive) {
                // Its node is dying (`node_died` handles its actors one
                // after the other): the calls wait for the restart, or fail
                // with the actor.
                return;
            }
            let Some(&t) = actor.calls.front() else {
                return;
            };
            let task = match self.tasks.get(&t) {
                Some(task) if matches!(task.state, TState::Queued) => task,
                Some(task) if matches!(task.state, TState::Waiting) => return,
                // Failed (or gone) before it was sent.
                _ => {
                    if let Some(actor) = self.actors.get_mut(&a) {
                        actor.calls.pop_front();
                    }
                    continue;
                }
            };
            let Some(args) = self.resolve_args(&task.args) else {
                // An argument was lost meanwhile: the call waits for it again
                // (and the calls behind it with it).
                if let Some(task) = self.tasks.get_mut(&t) {
                    task.state = TState::Waiting;
                }
                return self.try_ready(Waiter::Task(t));
            };
            let method = match &task.kind {
                Kind::ActorCall { method, .. } => method.clone(),
                _ => String::new(),
            };
            let attempt = task.attempts + 1;
            let Some(actor) = self.actors.get_mut(&a) else {
                return;
            };
            actor.calls.pop_front();
            let seq = actor.next_seq;
            actor.next_seq += 1;
            let incarnation = actor.incarnation;
            if let Some(task) = self.tasks.get_mut(&t) {
                task.state = TState::Running(node);
                task.attempts = attempt;
                task.ran_on = Some(node);
            }
            if let Some(n) = self.nodes.get_mut(&node) {
                n.running.insert(t);
            }
            self.open_attempt(node, t);
            self.send_node(
                node,
                Effect::ActorCall(ActorCall {
                    task: t,
                    actor: a,
                    incarnation,
                    seq,
                    method,
                    args,
                }),
            );
        }
    }

    /// The actor's node died: restart it elsewhere, or it is dead.
    pub(super) fn actor_lost(&mut self, a: ActorId, reason: &str) {
        let Some(actor) = self.actors.get_mut(&a) else {
            return;
        };
        if actor.restarts < actor.options.max_restarts {
            actor.restarts += 1;
            actor.incarnation += 1;
            actor.state = AState::Pending;
            actor.queued = false;
            tracing::info!(
                "{a}: {reason}; restarting elsewhere ({}/{})",
                actor.restarts,
                actor.options.max_restarts
            );
            self.try_ready(Waiter::Actor(a));
        } else {
            let e = Error::ActorDied(format!(
                "{a}: {reason} (no restarts left, max_restarts = {})",
                actor.options.max_restarts
            ));
            self.actor_dead(a, e);
        }
    }

    /// The actor is dead for good: its resources are given back and its
    /// calls not yet sent fail.
    pub(super) fn actor_dead(&mut self, a: ActorId, e: Error) {
        let Some(actor) = self.actors.get_mut(&a) else {
            return;
        };
        let was = std::mem::replace(&mut actor.state, AState::Dead(e.clone()));
        let calls: Vec<TaskId> = actor.calls.drain(..).collect();
        let demand = actor.options.resources.clone();
        let job = actor.job;
        if !matches!(was, AState::Dead(_))
            && let Some(j) = self.jobs.get_mut(&job)
        {
            j.live_actors = j.live_actors.saturating_sub(1);
        }
        if let AState::Alive(node) = was {
            self.sched.release(node, &demand);
            if let Some(n) = self.nodes.get_mut(&node) {
                n.actors.remove(&a);
            }
        }
        for t in calls {
            self.fail_task(t, e.clone());
        }
    }

    /// The actor's worker reports it dead (a crash with no restarts left).
    pub(super) fn actor_died_on_node(&mut self, session: u64, d: ActorDied) {
        let a = d.actor;
        let node = self.node_of(session);
        let Some(actor) = self.actors.get(&a) else {
            return;
        };
        if actor.incarnation != d.incarnation
            || !matches!(actor.state, AState::Alive(n) if Some(n) == node)
        {
            return;
        }
        if let (Some(actor), Some(n)) = (self.actors.get_mut(&a), node) {
            actor.died_on = Some(n);
        }
        self.actor_dead(a, d.error);
    }

    /// A session's `KillActor`: only an actor of the caller's job; another
    /// job's is answered as one that does not exist.
    pub(super) fn kill_for(&mut self, session: u64, k: KillActor) {
        let job = self.acting_job(session, k.acting);
        let result = match (job, self.actors.get(&k.actor)) {
            (Ok(job), Some(actor)) if actor.job == job => self.kill_actor(k.actor, "by its owner"),
            (Err(e), _) => Err(e),
            _ => Err(no_actor(k.actor)),
        };
        if let Some(t) = k.task {
            if let Err(e) = check_id(session, t.0) {
                return self.reply_err(session, t, e);
            }
            match result {
                Ok(()) => self.send(
                    session,
                    Effect::Resolved {
                        task: t,
                        result: Ok(ObjectLoc {
                            id: ObjectId::of(&[]),
                            size: 0,
                            inline: Some(Bytes::new()),
                            holders: Vec::new(),
                        }),
                    },
                ),
                Err(e) => self.reply_err(session, t, e),
            }
        }
    }

    pub fn kill_actor(&mut self, a: ActorId, why: &str) -> Result<(), Error> {
        let actor = self
            .actors
            .get(&a)
            .ok_or_else(|| Error::NotFound(format!("no {a} in the cluster")))?;
        if let AState::Alive(node) = actor.state {
            self.send_node(node, Effect::StopActor(a));
        }
        self.actor_dead(a, Error::ActorDied(format!("{a} was killed ({why})")));
        Ok(())
    }
}

/// The answer for an actor that does not exist, or is another job's.
fn no_actor(a: ActorId) -> Error {
    Error::NotFound(format!("no {a} in the cluster"))
}
