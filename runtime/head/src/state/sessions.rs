//! Sessions and nodes: opening and closing, heartbeats, node death.

use std::time::{Duration, Instant};

use ferray_core::{ActorId, AttemptEnd, Error, JobId, NodeId, Resources, TaskId, TaskOptions};

use super::timeline::End;
use super::{
    AState, Acting, Effect, Hello, JobState, Kind, NodeEntry, Session, Set, State, TState, Waiter,
    Welcome,
};

impl State {
    pub fn open_session(&mut self, hello: &Hello, now: Instant) -> Result<Welcome, Error> {
        let session = self.next_session;
        self.next_session += 1;
        let (node, job) = match &hello.worker {
            Some(w) => {
                if w.object_address.is_empty() {
                    return Err(Error::InvalidArgument(
                        "a worker must announce its object server's address".into(),
                    ));
                }
                let id = NodeId(self.next_node);
                self.next_node += 1;
                self.save_counters();
                self.add_node(id, session, &hello.name, w, now);
                tracing::info!("{id} joined from {} ({})", w.object_address, hello.name);
                (Some(id), None)
            }
            None => {
                let job = self.new_job(format!("client {}", hello.name), String::new());
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.state = JobState::Running;
                }
                self.save_job(job);
                (None, Some(job))
            }
        };
        self.sessions
            .insert(session, Session::new(node, job, hello));
        if !hello.in_head {
            self.save_session(session, &hello.name);
        }
        Ok(Welcome { session, node, job })
    }

    /// A worker's node, alive and running nothing yet.
    pub(super) fn add_node(
        &mut self,
        id: NodeId,
        session: u64,
        name: &str,
        w: &super::WorkerHello,
        now: Instant,
    ) {
        self.sched.add_node(id, w.resources.clone());
        self.nodes.insert(
            id,
            NodeEntry {
                session,
                address: w.object_address.clone(),
                name: name.to_string(),
                alive: true,
                last_seen: now,
                running: Set::default(),
                slots: Default::default(),
                actors: Set::default(),
                total: w.resources.clone(),
            },
        );
    }

    /// A session's stream ended: a worker's node is dead, a client's job is over.
    pub fn close_session(&mut self, session: u64, why: &str) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.out.saves.push(super::Save::ForgetSession(session));
        self.out.sent.push((session, Effect::Close));
        // Direct calls of this caller that it will never report.
        let orphans: Vec<TaskId> = self
            .early_dones
            .keys()
            .filter(|t| t.0 >> 32 == session)
            .copied()
            .collect();
        for t in orphans {
            if let Some((_, n, d)) = self.early_dones.remove(&t) {
                self.discard(n, &d.outcome);
            }
        }
        if let Some(node) = s.node {
            self.node_died(node, why);
        }
        if let Some(job) = s.job {
            self.finish_job(
                job,
                JobState::Succeeded,
                String::new(),
                String::new(),
                false,
            );
        }
    }

    /// What an open session was welcomed with (it resumes on a new stream).
    pub fn session_welcome(&self, session: u64) -> Option<Welcome> {
        self.sessions.get(&session).map(|s| Welcome {
            session,
            node: s.node,
            job: s.job,
        })
    }

    /// The session was heard from.
    pub fn touch(&mut self, session: u64, now: Instant) {
        if let Some(node) = self.node_of(session)
            && let Some(n) = self.nodes.get_mut(&node)
        {
            n.last_seen = now;
        }
    }

    /// Nodes silent for longer than `timeout` are declared dead, and their
    /// sessions closed (the worker learns it when its stream ends). Also the
    /// head's periodic housekeeping: dead nodes past their window are
    /// forgotten, and components nothing uses are dropped.
    pub fn check_heartbeats(&mut self, now: Instant, timeout: Duration) {
        self.declare_late_dead(now, timeout);
        self.end_rejoin_at(now);
        self.end_node_wait(now);
        self.forget_dead_nodes(now);
        self.sweep_components(now);
    }

    /// Dead nodes stay listed (as dead) for [`State::dead_node_window`]
    /// from the first check that saw them dead, then leave the tables.
    /// Nothing points at a dead node by then: its tasks, actors and copies
    /// of objects were taken from it when it died, and the scheduler
    /// dropped it then.
    fn forget_dead_nodes(&mut self, now: Instant) {
        for (_, since) in self.dead_nodes.iter_mut() {
            since.get_or_insert(now);
        }
        while let Some(&(id, Some(since))) = self.dead_nodes.front() {
            if now.saturating_duration_since(since) < self.dead_node_window {
                break;
            }
            self.dead_nodes.pop_front();
            if self.nodes.get(&id).is_some_and(|n| !n.alive) {
                self.nodes.remove(&id);
                tracing::debug!("{id} forgotten");
            }
        }
    }

    fn declare_late_dead(&mut self, now: Instant, timeout: Duration) {
        let late: Vec<(NodeId, u64)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive && now.saturating_duration_since(n.last_seen) > timeout)
            .map(|(id, n)| (*id, n.session))
            .collect();
        for (id, session) in late {
            tracing::warn!("{id} sent no heartbeat for {timeout:?}: declared dead");
            if let Some(s) = self.sessions.remove(&session) {
                self.out.saves.push(super::Save::ForgetSession(session));
                self.out.sent.push((session, Effect::Close));
                if let Some(node) = s.node {
                    self.node_died(
                        node,
                        &format!("it sent no heartbeat for {}s", timeout.as_secs_f64()),
                    );
                }
            }
        }
    }

    /// A node is gone: its actors restart elsewhere (or die), its tasks are
    /// retried elsewhere (or fail), and what only it held is lost.
    fn node_died(&mut self, id: NodeId, why: &str) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.alive {
            return;
        }
        node.alive = false;
        self.dead_nodes.push_back((id, None));
        self.early_dones.retain(|_, (_, n, _)| *n != id);
        let running: Vec<TaskId> = node.running.drain().collect();
        let actors: Vec<ActorId> = node.actors.drain().collect();
        self.sched.remove_node(id);
        tracing::warn!(
            "{id} died ({why}): {} running tasks, {} actors",
            running.len(),
            actors.len()
        );
        let reason = format!("{id} died ({why})");
        for a in actors {
            self.actor_lost(a, &reason);
        }
        for t in running {
            self.close_attempt(id, t, End::Lost(&reason));
            self.attempt_lost(t, &reason);
        }
        // Objects whose only copy was there are lost; tasks rebuild them on demand.
        let mut lost_puts = Vec::new();
        for (oid, o) in self.objects.iter_mut() {
            o.spilled_on.remove(&id);
            if o.holders.remove(&id) && !o.available() && o.producer.is_none() && !o.uploading {
                lost_puts.push(*oid);
            }
        }
        for oid in lost_puts {
            self.wake_object(oid);
        }
        self.pump();
    }

    /// The job a request belongs to: a client's own job, whatever it names;
    /// for a worker, the job of the task attempt or the actor it says it
    /// acts for, which must be one the head placed on that worker. Anything
    /// else is `not-found`: a worker cannot act for a job it runs nothing of.
    pub(super) fn acting_job(&self, session: u64, acting: Acting) -> Result<JobId, Error> {
        let Some(s) = self.sessions.get(&session) else {
            return Err(Error::NotFound(format!("no session {session}")));
        };
        if let Some(job) = s.job {
            return Ok(job);
        }
        let node = s.node;
        let job = match acting {
            Acting::Session => None,
            Acting::Task(t) => self
                .tasks
                .get(&t)
                .filter(|x| node.is_some() && x.ran_on == node)
                .map(|x| x.job),
            Acting::Actor(a) => self
                .actors
                .get(&a)
                .filter(|x| matches!(x.state, AState::Alive(n) if Some(n) == node))
                .map(|x| x.job),
        };
        job.ok_or_else(|| {
            Error::NotFound(match acting {
                Acting::Session => {
                    "a worker's request must name the task or actor it is for".into()
                }
                Acting::Task(t) => format!("{t} does not run on this node"),
                Acting::Actor(a) => format!("{a} does not live on this node"),
            })
        })
    }

    /// An attempt's node died under it.
    fn attempt_lost(&mut self, t: TaskId, reason: &str) {
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        task.held = Resources::default();
        match &task.kind {
            Kind::ActorCall { actor, .. } => {
                let e = Error::ActorDied(format!("{actor}: {reason} during the call"));
                self.fail_task(t, e);
            }
            // A lost node is a system fault: the one retry policy decides.
            Kind::Task { options, .. }
                if !task.cancelled
                    && options.should_retry(
                        task.attempts,
                        AttemptEnd::Failed(&Error::System(reason.to_string())),
                    ) =>
            {
                tracing::info!("{t}: {reason}; retrying (attempt {})", task.attempts + 1);
                task.state = TState::Queued;
                self.enqueue(Waiter::Task(t));
            }
            Kind::Task { .. } if task.cancelled => {
                self.fail_task(t, Error::Cancelled(format!("{t} was cancelled")));
            }
            Kind::Task { .. } => {
                let e = Error::System(format!("{reason} while it ran, with no retries left"));
                self.fail_task(t, e);
            }
            // A driver obeys the default retry policy (Ray's 3 retries of
            // a system failure), so a driver that takes its nodes down one
            // after another ends its job instead.
            Kind::Driver { .. }
                if !task.cancelled
                    && TaskOptions::default().should_retry(
                        task.attempts,
                        AttemptEnd::Failed(&Error::System(reason.to_string())),
                    ) =>
            {
                tracing::info!("{t} (a driver): {reason}; running it again");
                task.state = TState::Queued;
                self.enqueue(Waiter::Task(t));
            }
            Kind::Driver { .. } => {
                let e = Error::System(format!(
                    "{reason} while the job's driver ran, with no retries left"
                ));
                self.fail_task(t, e);
            }
        }
    }
}
