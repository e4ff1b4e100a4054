//! Tasks: submissions, their dependencies, the ends of their attempts
//! (results, retries, failures), cancellation, and what their nodes report
//! while they run.

use bytes::Bytes;
use ferray_core::{AttemptEnd, ComponentId, Error, JobId, NodeId, TaskId};

use super::timeline::End;
use super::{
    ArgNow, Dep, Done, Effect, HEAD_HOLDER, INLINE_MAX, JobState, Kind, Made, ObjEntry, Outcome,
    State, Submit, TState, TaskEntry, Waiter, check_id, give_back, lost_made, lost_put,
    task_demand,
};
use crate::state::{AState, Arg};

impl State {
    /// A component the head has (its bytes were uploaded).
    pub(super) fn component_of(&self, c: Result<ComponentId, Error>) -> Result<ComponentId, Error> {
        let c = c?;
        if !self.components.contains_key(&c) {
            return Err(Error::NotFound(format!(
                "component {} was not uploaded to the head",
                c.short()
            )));
        }
        Ok(c)
    }

    pub(super) fn live_job(&self, id: JobId) -> Result<JobId, Error> {
        match self.jobs.get(&id) {
            Some(j) if !j.state.finished() => Ok(id),
            Some(_) => Err(Error::Cancelled(format!("{id} has ended"))),
            None => Err(Error::NotFound(format!("no {id}"))),
        }
    }

    /// Refuse one more task or actor call of `job` past its cap.
    pub(super) fn check_task_cap(&self, job: JobId) -> Result<(), Error> {
        match self.jobs.get(&job) {
            Some(j) => self.job_caps.check_task(j.total.saturating_sub(j.done)),
            None => Ok(()),
        }
    }

    pub(super) fn submit(&mut self, session: u64, s: Submit) {
        let Submit {
            task: t,
            acting,
            component,
            function,
            options,
            args,
        } = s;
        if self.sent_again(session, t) {
            return;
        }
        let made = (|| {
            check_id(session, t.0)?;
            let job = self.live_job(self.acting_job(session, acting)?)?;
            self.check_task_cap(job)?;
            let component = self.component_of(component)?;
            let options = options?;
            let args = args?;
            if self.tasks.contains_key(&t) {
                return Err(Error::InvalidArgument(format!("{t} was submitted twice")));
            }
            Ok((job, component, options, args))
        })();
        let (job, component, options, mut args) = match made {
            Ok(v) => v,
            Err(e) => return self.reply_err(session, t, e),
        };
        self.unalias(job, &mut args);
        if self.replayed(
            session,
            acting,
            job,
            t,
            (&component, &function, &options, &args),
        ) {
            return;
        }
        if let Some(j) = self.jobs.get_mut(&job) {
            j.components.insert(component);
        }
        self.tasks.insert(
            t,
            TaskEntry::new(
                job,
                Some(session),
                Kind::Task {
                    component,
                    function,
                    options,
                },
                args,
                TState::Waiting,
            ),
        );
        self.count_in_job(job, t);
        self.try_ready(Waiter::Task(t));
    }

    /// A submission its session sent again after a restart of the head
    /// (it had no result yet) that this head already knows: its attempt
    /// came back with a node. The result goes to the session again when
    /// it is there already.
    pub(super) fn sent_again(&mut self, session: u64, t: TaskId) -> bool {
        let Some(task) = self.tasks.get(&t) else {
            return false;
        };
        if task.owner != Some(session) {
            return false;
        }
        let result = match &task.state {
            TState::Done(oid) => self
                .loc(oid)
                .ok_or_else(|| Error::ObjectLost(format!("the result of {t} was freed"))),
            TState::Failed(e) => Err(e.clone()),
            _ => return true,
        };
        self.send(session, Effect::Resolved { task: t, result });
        true
    }

    pub(super) fn reply_err(&mut self, session: u64, t: TaskId, e: Error) {
        self.send(
            session,
            Effect::Resolved {
                task: t,
                result: Err(e),
            },
        );
    }

    /// What an argument of a task or actor of `job` is now (a lost result
    /// is rebuilt). Another job's task or object is answered as one that
    /// does not exist.
    fn arg_state(&mut self, a: &Arg, job: JobId) -> ArgNow {
        match a {
            Arg::Value(_) => ArgNow::Ready,
            Arg::Task(t) => {
                let Some(task) = self.tasks.get(t).filter(|x| x.job == job) else {
                    return ArgNow::Failed(Error::TaskFailed(format!(
                        "its argument {t} is not a task of a live job"
                    )));
                };
                match &task.state {
                    TState::Done(oid) => {
                        let oid = *oid;
                        let state = self.objects.get(&oid).map(ObjEntry::available);
                        match state {
                            Some(true) => ArgNow::Ready,
                            Some(false) if self.rebuild(*t) => ArgNow::Pending(Dep::Task(*t)),
                            Some(false) => ArgNow::Failed(lost_made(&oid, *t)),
                            None => ArgNow::Failed(Error::ObjectLost(format!(
                                "the result of {t} was freed"
                            ))),
                        }
                    }
                    TState::Failed(e) => {
                        ArgNow::Failed(Error::TaskFailed(format!("its argument {t} failed: {e}")))
                    }
                    _ => ArgNow::Pending(Dep::Task(*t)),
                }
            }
            Arg::Object(oid) => match self
                .objects
                .get(oid)
                .filter(|o| o.pinned || o.jobs.contains(&job))
                .map(|o| (o.available(), o.uploading, o.producer))
            {
                Some((true, _, _)) => ArgNow::Ready,
                Some((_, true, _)) => ArgNow::Pending(Dep::Object(*oid)),
                Some((_, _, producer)) => match producer {
                    Some(t) if self.rebuild(t) => ArgNow::Pending(Dep::Task(t)),
                    Some(t) => ArgNow::Failed(lost_made(oid, t)),
                    None => ArgNow::Failed(lost_put(oid)),
                },
                None => ArgNow::Failed(Error::ObjectLost(format!(
                    "object {} is not in the cluster (never made, or freed)",
                    oid.short()
                ))),
            },
        }
    }

    /// Whether a dependency still waits (a rebuild can fail at once).
    fn still_pending(&self, dep: &Dep) -> bool {
        match dep {
            Dep::Task(d) => self.tasks.get(d).is_some_and(|t| {
                matches!(
                    t.state,
                    TState::Waiting | TState::Queued | TState::Running(_)
                )
            }),
            Dep::Object(o) => self
                .objects
                .get(o)
                .is_some_and(|o| o.uploading && !o.available()),
        }
    }

    /// The waiters of a dependency.
    pub(super) fn waiters_mut(&mut self, dep: Dep) -> Option<&mut Vec<Waiter>> {
        match dep {
            Dep::Task(d) => self.tasks.get_mut(&d).map(|dt| &mut dt.waiters),
            Dep::Object(o) => self.objects.get_mut(&o).map(|o| &mut o.waiters),
        }
    }

    /// Whether a waiter still waits for its arguments.
    fn waits_for_args(&self, w: Waiter) -> bool {
        match w {
            Waiter::Task(t) => self
                .tasks
                .get(&t)
                .is_some_and(|task| matches!(task.state, TState::Waiting)),
            Waiter::Actor(a) => self
                .actors
                .get(&a)
                .is_some_and(|actor| matches!(actor.state, AState::Pending) && !actor.queued),
        }
    }

    /// Re-check a waiter's arguments: queue it when all are ready, fail it
    /// when one failed, else wait on the first pending one.
    pub(super) fn try_ready(&mut self, w: Waiter) {
        if !self.waits_for_args(w) {
            return;
        }
        let job = match w {
            Waiter::Task(t) => self.tasks.get(&t).map(|x| x.job),
            Waiter::Actor(a) => self.actors.get(&a).map(|x| x.job),
        };
        let Some(job) = job else {
            return;
        };
        let mut i = 0;
        while let Some(a) = self.args_of(w).get(i).cloned() {
            match self.arg_state(&a, job) {
                ArgNow::Ready => i += 1,
                ArgNow::Failed(e) => {
                    match w {
                        Waiter::Task(t) => self.fail_task(t, e),
                        Waiter::Actor(a) => self
                            .actor_dead(a, Error::ActorDied(format!("{a} could not start: {e}"))),
                    }
                    return;
                }
                // Its state changed while it was looked at (a rebuild that
                // failed at once): look again.
                ArgNow::Pending(dep) if !self.still_pending(&dep) => {}
                ArgNow::Pending(dep) => {
                    if let Some(list) = self.waiters_mut(dep)
                        && !list.contains(&w)
                    {
                        list.push(w);
                    }
                    match w {
                        Waiter::Task(t) => {
                            if let Some(task) = self.tasks.get_mut(&t) {
                                task.waiting_on = Some(dep);
                            }
                        }
                        Waiter::Actor(a) => {
                            if let Some(actor) = self.actors.get_mut(&a) {
                                actor.waiting_on = Some(dep);
                            }
                        }
                    }
                    return;
                }
            }
        }
        // What was checked may have moved it on meanwhile.
        if !self.waits_for_args(w) {
            return;
        }
        match w {
            Waiter::Task(t) => {
                let Some(task) = self.tasks.get_mut(&t) else {
                    return;
                };
                task.state = TState::Queued;
                if let Kind::ActorCall { actor, .. } = task.kind {
                    // Ready calls are sent in submission order by the actor.
                    self.flush_actor(actor);
                } else {
                    self.enqueue(w);
                }
            }
            Waiter::Actor(a) => {
                if let Some(actor) = self.actors.get_mut(&a) {
                    actor.queued = true;
                }
                self.enqueue(w);
            }
        }
    }

    fn wake_task(&mut self, t: TaskId) {
        let ws = match self.tasks.get_mut(&t) {
            Some(task) => std::mem::take(&mut task.waiters),
            None => return,
        };
        for w in ws {
            self.try_ready(w);
        }
    }

    /// The task failed for good: its submitter and dependents learn it.
    pub(super) fn fail_task(&mut self, t: TaskId, e: Error) {
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        task.state = TState::Failed(e.clone());
        let first = !std::mem::replace(&mut task.resolved, true);
        let (owner, job, made) = (task.owner, task.job, task.made);
        // A direct call's node answered its caller.
        let owner = owner.filter(|_| !task.direct);
        let driver = matches!(task.kind, Kind::Driver { .. });
        let actor = match task.kind {
            Kind::ActorCall { actor, .. } => Some(actor),
            _ => None,
        };
        if first && !driver {
            self.count_done(job);
        }
        if first && let Some(o) = owner {
            self.reply_err(o, t, e.clone());
        }
        if first {
            self.answer_aliases(job, t, None, Err(e.clone()));
        }
        if let Some(o) = made {
            // A rebuild failed: the object cannot be made again.
            self.object_changed(o);
        }
        if driver {
            self.finish_job(job, JobState::Failed, String::new(), e.to_string(), false);
            return;
        }
        self.wake_task(t);
        if let Some(a) = actor {
            // Calls queued behind this one may go now.
            self.flush_actor(a);
        }
        self.forget_released(t);
    }

    /// An attempt ended on its node: a result, an error, or nothing.
    pub(super) fn done(&mut self, session: u64, d: Done) {
        let Some(node) = self.node_of(session) else {
            return;
        };
        let t = d.task;
        if d.direct && !self.tasks.contains_key(&t) {
            // Its caller's report comes next: kept for it.
            if self.early_dones.len() >= super::MAX_EARLY_DONES {
                tracing::warn!("{t}: too many direct calls reported by no caller; dropped");
                return self.discard(node, &d.outcome);
            }
            self.early_dones.insert(t, (session, node, d));
            return;
        }
        if !self.is_current_attempt(t, node, d.attempt) {
            // A stale attempt, or a task of an ended job: its result is not
            // wanted, so the node need not keep it.
            return self.discard(node, &d.outcome);
        }
        let failure;
        let end = match &d.outcome {
            Outcome::Made(_) if d.err_value => End::ErrValue,
            Outcome::Made(_) => End::Finished,
            Outcome::BadResult(e) => {
                failure = format!("a bad result: {e}");
                End::Failed(&failure)
            }
            Outcome::Failed(e) => {
                failure = e.to_string();
                End::Failed(&failure)
            }
            Outcome::Empty => End::Failed("an empty result"),
        };
        self.close_attempt(node, t, end);
        let Some((job, owner)) = self.end_attempt(t, node) else {
            return;
        };
        self.record_output(t, node, job, owner, &d.stdout, &d.stderr);
        let Done {
            outcome,
            wave,
            err_value,
            ..
        } = d;
        match outcome {
            // An `err(..)` value is retried like a trap with `retry_exceptions`.
            Outcome::Made(_) | Outcome::BadResult(_) if err_value && self.retries(t, None) => {
                self.requeue(t);
                self.discard(node, &outcome);
            }
            Outcome::Made(m) => self.attempt_made(t, node, job, m, wave, err_value),
            Outcome::BadResult(e) => {
                self.fail_task(t, Error::System(format!("{node} sent a bad result: {e}")));
            }
            Outcome::Failed(e) => {
                if self.retries(t, Some(&e)) {
                    tracing::info!("{t} failed on {node} ({e}); retrying");
                    self.requeue(t);
                } else {
                    self.fail_task(t, e);
                }
            }
            Outcome::Empty => {
                self.fail_task(t, Error::System(format!("{node} sent an empty result")));
            }
        }
    }

    /// Whether `node` runs the task's current attempt.
    fn is_current_attempt(&self, t: TaskId, node: NodeId, attempt: u32) -> bool {
        self.tasks.get(&t).is_some_and(|task| {
            matches!(task.state, TState::Running(n) if n == node) && attempt == task.attempts
        })
    }

    /// The attempt no longer holds anything on its node; the task's job and
    /// submitter.
    fn end_attempt(&mut self, t: TaskId, node: NodeId) -> Option<(JobId, Option<u64>)> {
        let task = self.tasks.get_mut(&t)?;
        give_back(&mut self.sched, task, node);
        task.held = Default::default();
        let out = (task.job, task.owner);
        if let Some(n) = self.nodes.get_mut(&node) {
            n.running.remove(&t);
        }
        Some(out)
    }

    /// What the attempt wrote goes to its job's log, and to a connected
    /// client that submitted it (as a Ray driver sees its tasks' output).
    fn record_output(
        &mut self,
        t: TaskId,
        node: NodeId,
        job: JobId,
        owner: Option<u64>,
        stdout: &Bytes,
        stderr: &Bytes,
    ) {
        if stdout.is_empty() && stderr.is_empty() {
            return;
        }
        let label = format!("{t} {node}");
        self.log(job, &label, stdout);
        self.log(job, &label, stderr);
        if let Some(o) = owner
            && self.sessions.get(&o).is_some_and(|s| s.node.is_none())
        {
            self.send(
                o,
                Effect::Output {
                    source: format!("{t}, {node}"),
                    stdout: stdout.clone(),
                    stderr: stderr.clone(),
                },
            );
        }
    }

    /// Whether a failed attempt (`None`: an `err(..)` value) is tried again.
    fn retries(&self, t: TaskId, e: Option<&Error>) -> bool {
        let Some(task) = self.tasks.get(&t) else {
            return false;
        };
        match &task.kind {
            Kind::Task { options, .. } => {
                let end = match e {
                    Some(e) => AttemptEnd::Failed(e),
                    None => AttemptEnd::ErrValue,
                };
                !task.cancelled && options.should_retry(task.attempts, end)
            }
            _ => false,
        }
    }

    /// The task waits for a node again.
    fn requeue(&mut self, t: TaskId) {
        if let Some(task) = self.tasks.get_mut(&t) {
            task.state = TState::Queued;
            self.enqueue(Waiter::Task(t));
        }
    }

    /// The attempt made its result: the cluster knows where it is, the
    /// submitter gets it, dependents go on, and a driver ends its job.
    fn attempt_made(
        &mut self,
        t: TaskId,
        node: NodeId,
        job: JobId,
        m: Made,
        wave: String,
        err_value: bool,
    ) {
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        let oid = m.id;
        task.state = TState::Done(oid);
        let before = task.made.replace(oid);
        let first = !std::mem::replace(&mut task.resolved, true);
        let driver = matches!(task.kind, Kind::Driver { .. });
        // A direct call's node answered its caller.
        let owner = task.owner.filter(|_| !task.direct);
        let call_of = match task.kind {
            Kind::ActorCall { actor, .. } => Some(actor),
            _ => None,
        };
        if before != Some(oid)
            && let Some(b) = before
            && let Some(o) = self.objects.get_mut(&b)
        {
            o.makers.remove(&t);
        }
        let o = self.objects.entry(oid).or_default();
        if before != Some(oid) {
            o.makers.insert(t);
        }
        o.size = m.size;
        o.holders.insert(node);
        *o.made_on.entry(node).or_default() += 1;
        if o.producer.is_none() {
            o.producer = Some(t);
        }
        if let Some(b) = m.inline
            && b.len() <= INLINE_MAX
            && oid.matches(&b)
        {
            o.inline = Some(b);
        }
        o.jobs.insert(job);
        if let Some(j) = self.jobs.get_mut(&job) {
            j.objects.insert(oid);
        }
        if first && !driver {
            self.count_done(job);
        }
        if first
            && let Some(owner) = owner
            && let Some(loc) = self.loc(&oid)
        {
            if let Some(a) = call_of {
                self.tell_actor_at(owner, a, node);
            }
            self.send(
                owner,
                Effect::Resolved {
                    task: t,
                    result: Ok(loc),
                },
            );
        }
        if first && let Some(loc) = self.loc(&oid) {
            self.answer_aliases(job, t, None, Ok(loc));
        }
        self.wake_object(oid);
        self.wake_task(t);
        if driver {
            let state = if err_value {
                JobState::Failed
            } else {
                JobState::Succeeded
            };
            self.finish_job(job, state, wave, String::new(), err_value);
            return;
        }
        self.forget_released(t);
    }

    /// A result nobody will refer to: the node drops its copy (unless the
    /// cluster knows it holds the same object for another reason).
    pub(super) fn discard(&mut self, node: NodeId, outcome: &Outcome) {
        if let Outcome::Made(m) = outcome
            && !self
                .objects
                .get(&m.id)
                .is_some_and(|o| o.holders.contains(&node))
        {
            self.send_node(node, Effect::Free(vec![m.id]));
        }
    }

    /// A client will not use these tasks' results again (Ray's `free`):
    /// each of its own job's tasks is forgotten once it has ended (now, or
    /// when it ends). A worker's release, a driver's or another job's task
    /// is ignored.
    pub(super) fn release(&mut self, session: u64, tasks: &[TaskId]) {
        let Some(job) = self
            .sessions
            .get(&session)
            .filter(|s| s.node.is_none())
            .and_then(|s| s.job)
        else {
            return;
        };
        for &t in tasks {
            let Some(task) = self.tasks.get_mut(&t) else {
                continue;
            };
            if task.job != job || matches!(task.kind, Kind::Driver { .. }) {
                continue;
            }
            task.released = true;
            self.forget_released(t);
        }
    }

    /// A released task that has ended, and that no task waits on, is
    /// forgotten (its history kept); its result is freed on every holder
    /// unless another task made the same object, a put did, another job
    /// refers to it or something waits on it.
    pub(super) fn forget_released(&mut self, t: TaskId) {
        let Some(task) = self.tasks.get(&t) else {
            return;
        };
        let ended = matches!(task.state, TState::Done(_) | TState::Failed(_));
        if !task.released || !ended || !task.resolved || !task.waiters.is_empty() {
            return;
        }
        let Some(task) = self.tasks.remove(&t) else {
            return;
        };
        let job = task.job;
        if let Some(j) = self.jobs.get_mut(&job) {
            j.tasks.remove(&t);
        }
        // What still names it: the dependency it waited on, and, when it
        // failed before it ran, its actor's calls or the placement queues.
        if let Some(dep) = task.waiting_on {
            self.unwait(dep, Waiter::Task(t));
        }
        if matches!(task.state, TState::Failed(_)) {
            match &task.kind {
                Kind::ActorCall { actor, .. } => {
                    if let Some(a) = self.actors.get_mut(actor) {
                        a.calls.retain(|c| *c != t);
                    }
                }
                _ => self.purge_queues(),
            }
        }
        self.record_history(t, &task);
        let Some(oid) = task.made else {
            return;
        };
        let Some(o) = self.objects.get_mut(&oid) else {
            return;
        };
        o.makers.remove(&t);
        if o.producer == Some(t) {
            // Rebuilt, if it must be, by another task that made it.
            o.producer = o.makers.first().copied();
        }
        let shared = !o.makers.is_empty()
            || o.put
            || o.pinned
            || !o.waiters.is_empty()
            || o.jobs.iter().any(|j| *j != job);
        if shared {
            return;
        }
        let Some(o) = self.objects.remove(&oid) else {
            return;
        };
        if let Some(j) = self.jobs.get_mut(&job) {
            j.objects.remove(&oid);
        }
        for h in o.holders {
            if h == HEAD_HOLDER {
                self.out.head_frees.push(oid);
            } else {
                let seen = o.made_on.get(&h).copied().unwrap_or(0);
                self.send_node(h, Effect::FreeSeen(vec![(oid, seen)]));
            }
        }
        self.object_changed(oid);
    }

    pub(super) fn cancel(&mut self, t: TaskId) {
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        task.cancelled = true;
        match task.state {
            TState::Waiting | TState::Queued => {
                self.fail_task(t, Error::Cancelled(format!("{t} was cancelled")));
            }
            TState::Running(node) => self.send_node(node, Effect::Cancel(t)),
            _ => {}
        }
    }

    /// A task running on the sender's node printed `stdout`: its job's log
    /// (and a connected submitter) get it now. From a node that does not
    /// run the task, it is not heard.
    pub(super) fn task_output(&mut self, session: u64, t: TaskId, stdout: &Bytes) {
        let Some(node) = self.node_of(session) else {
            return;
        };
        let Some(task) = self.tasks.get(&t) else {
            return;
        };
        if !matches!(task.state, TState::Running(n) if n == node) {
            return;
        }
        let (job, owner) = (task.job, task.owner);
        self.record_output(t, node, job, owner, stdout, &Bytes::new());
    }

    /// An assigned task got its resources on its node.
    pub(super) fn started(&mut self, session: u64, t: TaskId) {
        let Some(node) = self.node_of(session) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        // Only assigned tasks start (an actor call takes no backlog place).
        if !matches!(task.state, TState::Running(n) if n == node)
            || task.started
            || matches!(task.kind, Kind::ActorCall { .. })
        {
            return;
        }
        task.started = true;
        let demand = task_demand(&task.kind);
        // The node admitted it, so its view had room; this one mirrors it.
        if self.sched.started(node, &demand) {
            task.held = demand;
        }
    }

    /// A task waits in get or wait (it gives its CPUs back) or resumes.
    pub(super) fn blocked(&mut self, session: u64, t: TaskId, blocked: bool) {
        let Some(node) = self.node_of(session) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        if !matches!(task.state, TState::Running(n) if n == node) {
            return;
        }
        let cpus = task_demand(&task.kind).cpus_only();
        if blocked {
            if !task.cpus_released && task.held.num_cpus() > 0.0 {
                // Only a task that holds its whole demand gives CPUs back.
                task.held = task.held.without_cpus();
                task.cpus_released = true;
                self.sched.release(node, &cpus);
            }
        } else if task.cpus_released {
            task.cpus_released = false;
            if self.sched.try_take(node, &cpus) {
                task.held = task_demand(&task.kind);
            }
            // Without room, the task runs on without counting its CPUs
            // (the node's own admission still holds the line).
        }
    }
}
