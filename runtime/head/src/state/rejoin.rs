//! Sessions that outlive a restart of the head. The head keeps its open
//! sessions in its database ([`SessionRecord`]); a restarted head takes
//! each one back when its worker or client comes to resume it, with what it
//! had: the attempts it runs, its actors and the objects it keeps
//! ([`Rejoined`]). Its submissions still without a result follow as
//! ordinary messages.
//!
//! Until every earlier session is back (or [`REJOIN_WINDOW`] has passed)
//! the head places nothing and holds the sessions' messages, so that what
//! comes back is known before a message refers to it: a submission sent
//! again finds its attempt running, a call finds its actor. Then the held
//! messages are handled in the order they came, and the jobs whose driver
//! no node reported run it again (a client's job whose client did not come
//! back fails), as a head without the database would.

use std::time::{Duration, Instant};

use ferray_core::{ActorId, ActorOptions, ComponentId, Error, JobId, NodeId, ObjectId, TaskId};
use serde::{Deserialize, Serialize};

use super::saved::DriverRecord;
use super::{
    AState, ActorEntry, Arg, Effect, Hello, Input, JobState, Kind, Save, Session, Set, State,
    TState, TaskEntry, Welcome,
};

/// How long a restarted head waits for the sessions of the earlier one
/// before it goes on without those that did not come back.
pub const REJOIN_WINDOW: Duration = Duration::from_secs(10);

/// An open session, as the head keeps it across a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// A worker's node.
    pub node: Option<u64>,
    /// A client's job.
    pub job: Option<u64>,
    pub name: String,
}

/// What a worker or client that came back had with the earlier head.
#[derive(Clone, Debug, Default)]
pub struct Rejoined {
    pub running: Vec<RunningAttempt>,
    pub actors: Vec<LiveActor>,
    /// Objects it keeps, with their sizes.
    pub objects: Vec<(ObjectId, u64)>,
    /// More parts of the report follow.
    pub more: bool,
}

/// The attempts a node may report for a task (more is a report at odds
/// with any retry policy).
const MAX_REPORTED_ATTEMPT: u32 = 1_000;

/// An attempt a node runs (or ran, and its end may not have reached the
/// earlier head).
#[derive(Clone, Debug)]
pub struct RunningAttempt {
    pub task: TaskId,
    pub job: JobId,
    pub attempt: u32,
    pub started: bool,
    /// It ended on the node (its `Done` follows): it holds nothing there.
    pub ended: bool,
    /// What it runs (an actor call's `method` is its method).
    pub what: Kind,
    pub args: Vec<Arg>,
}

/// An actor that lives on a node, as it was started there.
#[derive(Clone, Debug)]
pub struct LiveActor {
    pub actor: ActorId,
    pub job: JobId,
    pub incarnation: u32,
    pub component: ComponentId,
    pub class: String,
    pub args: Vec<Arg>,
    pub options: ActorOptions,
}

/// A restarted head's wait for the earlier head's sessions.
#[derive(Default)]
pub(super) struct Rejoining {
    pub until: Option<Instant>,
    /// Sessions of the earlier head not back yet.
    pub awaiting: super::Map<u64, SessionRecord>,
    /// Sessions back whose report has not come yet.
    pub reports_due: Set<u64>,
    /// Messages held until the wait ends, in the order they came.
    pub held: Vec<(u64, Input)>,
    /// Jobs that had not ended when the earlier head went, with their
    /// drivers: decided when the wait ends.
    pub unfinished: Vec<(JobId, Option<DriverRecord>)>,
}

impl State {
    /// Whether the head still waits for the earlier head's sessions.
    pub fn rejoining(&self) -> bool {
        self.rejoin.until.is_some()
    }

    /// The record of a session, saved as it opens.
    pub(super) fn save_session(&mut self, session: u64, name: &str) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let record = SessionRecord {
            node: s.node.map(|n| n.0),
            job: s.job.map(|j| j.0),
            name: name.to_string(),
        };
        self.out.saves.push(Save::Session(session, record));
    }

    /// Start waiting for the earlier head's sessions (at restore).
    pub(super) fn await_sessions(
        &mut self,
        sessions: Vec<(u64, SessionRecord)>,
        unfinished: Vec<(JobId, Option<DriverRecord>)>,
        now: Instant,
    ) {
        self.rejoin.unfinished = unfinished;
        for (id, r) in sessions {
            self.next_session = self.next_session.max(id + 1);
            if let Some(n) = r.node {
                self.next_node = self.next_node.max(n + 1);
            }
            self.rejoin.awaiting.insert(id, r);
        }
        if self.rejoin.awaiting.is_empty() {
            self.end_rejoin();
        } else {
            self.rejoin.until = Some(now + REJOIN_WINDOW);
        }
    }

    /// A session of the earlier head comes back (its hello resumes it):
    /// welcomed with its node or job as before. Its report comes next.
    pub fn rejoin_session(
        &mut self,
        session: u64,
        hello: &Hello,
        now: Instant,
    ) -> Result<Welcome, Error> {
        let over = || Error::NotFound(format!("session {session} is over"));
        if !self.rejoining() {
            return Err(over());
        }
        let record = self.rejoin.awaiting.get(&session).ok_or_else(over)?;
        if record.node.is_some() != hello.worker.is_some() {
            return Err(Error::InvalidArgument(format!(
                "session {session} was not a {}'s",
                if hello.worker.is_some() {
                    "worker"
                } else {
                    "client"
                }
            )));
        }
        let record = self.rejoin.awaiting.remove(&session).ok_or_else(over)?;
        let node = record.node.map(NodeId);
        let job = record.job.map(JobId);
        if let (Some(id), Some(w)) = (node, &hello.worker) {
            self.add_node(id, session, &hello.name, w, now);
            tracing::info!("{id} came back from {} ({})", w.object_address, hello.name);
        }
        self.sessions
            .insert(session, Session::new(node, job, hello));
        self.rejoin.reports_due.insert(session);
        Ok(Welcome { session, node, job })
    }

    /// What a session that came back had; the wait ends once every
    /// earlier session is back with its report.
    pub fn rejoined(&mut self, session: u64, report: Rejoined) {
        if !self.rejoin.reports_due.contains(&session) {
            return;
        }
        let last = !report.more;
        if let Some(node) = self.node_of(session) {
            self.take_back(node, report);
        }
        if last {
            self.rejoin.reports_due.remove(&session);
            if self.rejoin.awaiting.is_empty() && self.rejoin.reports_due.is_empty() {
                self.end_rejoin();
            }
        }
    }

    /// The wait ends after [`REJOIN_WINDOW`] (from the heartbeat check).
    pub(super) fn end_rejoin_at(&mut self, now: Instant) {
        if self.rejoin.until.is_some_and(|t| now >= t) {
            self.end_rejoin();
        }
    }

    /// Nodes, actors, attempts and objects a worker had.
    fn take_back(&mut self, node: NodeId, report: Rejoined) {
        let live = |s: &State, job: JobId| s.jobs.get(&job).is_some_and(|j| !j.state.finished());
        // Objects belong to every job that had not ended (the earlier head
        // knew which; this one frees them when the last of those ends).
        let jobs: Vec<JobId> = self
            .rejoin
            .unfinished
            .iter()
            .map(|(j, _)| *j)
            .filter(|j| live(self, *j))
            .collect();
        let mut frees = Vec::new();
        for (id, size) in report.objects {
            if jobs.is_empty() {
                frees.push(id);
                continue;
            }
            let o = self.objects.entry(id).or_default();
            o.size = size;
            o.holders.insert(node);
            for j in &jobs {
                o.jobs.insert(*j);
            }
            for j in &jobs {
                if let Some(e) = self.jobs.get_mut(j) {
                    e.objects.insert(id);
                }
            }
            self.object_changed(id);
        }
        if !frees.is_empty() {
            self.send_node(node, Effect::Free(frees));
        }
        for a in report.actors {
            if !live(self, a.job)
                || self.actors.contains_key(&a.actor)
                || !self.components.contains_key(&a.component)
                || !self.sched.adopt(node, &a.options.resources, true)
            {
                self.send_node(node, Effect::StopActor(a.actor));
                continue;
            }
            self.actors.insert(
                a.actor,
                ActorEntry {
                    job: a.job,
                    component: a.component,
                    class: a.class,
                    args: a.args,
                    options: a.options,
                    state: AState::Alive(node),
                    incarnation: a.incarnation,
                    restarts: 0,
                    next_seq: 0,
                    calls: Default::default(),
                    queued: false,
                    waiting_on: None,
                    died_on: None,
                },
            );
            if let Some(n) = self.nodes.get_mut(&node) {
                n.actors.insert(a.actor);
            }
            if let Some(j) = self.jobs.get_mut(&a.job) {
                j.actors.insert(a.actor);
                j.live_actors += 1;
            }
        }
        for r in report.running {
            let call = matches!(r.what, Kind::ActorCall { .. });
            let known = match &r.what {
                Kind::Task { component, .. } | Kind::Driver { component, .. } => {
                    self.components.contains_key(component)
                }
                Kind::ActorCall { .. } => true,
            };
            // Drivers' ids are the head's own (the range of session 0);
            // others are in the range of a session the earlier head had.
            let owner_session = r.task.0 >> 32;
            let head_id = owner_session == 0;
            let id_ok = head_id == matches!(r.what, Kind::Driver { .. })
                && r.task.0 & 0xffff_ffff != 0
                && owner_session < self.next_session;
            let attempt_ok = (1..=MAX_REPORTED_ATTEMPT).contains(&r.attempt);
            if !id_ok
                || !attempt_ok
                || !known
                || !live(self, r.job)
                || self.tasks.contains_key(&r.task)
            {
                // One that runs is stopped; one that ended holds nothing
                // (and its task may run again there, as a later attempt).
                if !call && !r.ended {
                    self.send_node(node, Effect::Cancel(r.task));
                }
                continue;
            }
            let demand = super::task_demand(&r.what);
            let kind = r.what;
            let driver = matches!(kind, Kind::Driver { .. });
            // A task's submitter is the session whose range its id is in;
            // a driver is the head's.
            let owner = (!driver).then_some(r.task.0 >> 32);
            if driver {
                self.next_head_task = self.next_head_task.max(r.task.0 + 1);
            }
            let mut task = TaskEntry::new(r.job, owner, kind, r.args, TState::Running(node));
            task.attempts = r.attempt;
            task.ran_on = Some(node);
            if r.ended {
                // Its end gives back nothing.
                task.started = true;
            } else if !call {
                task.started = r.started;
                if self.sched.adopt(node, &demand, r.started) {
                    task.held = demand;
                }
            }
            self.tasks.insert(r.task, task);
            if let Some(n) = self.nodes.get_mut(&node) {
                n.running.insert(r.task);
            }
            if let Some(j) = self.jobs.get_mut(&r.job) {
                j.tasks.insert(r.task);
                if driver {
                    j.driver = Some(r.task);
                    j.state = JobState::Running;
                }
            }
            self.open_attempt(node, r.task);
        }
    }

    /// The wait for the earlier head's sessions is over: jobs whose driver
    /// did not come back run it again (or fail: a client's job whose
    /// client did not come back), the held messages are handled, and
    /// placement starts.
    fn end_rejoin(&mut self) {
        self.rejoin.until = None;
        // Sessions back without their whole report: this head does not know
        // what they run, so they are closed (a worker joins again as a new
        // node, dropping what it ran).
        let mut unreported: Vec<u64> = self.rejoin.reports_due.drain().collect();
        unreported.sort_unstable();
        for s in unreported {
            self.close_session(s, "it came back but did not say what it runs in time");
        }
        let gone = self.rejoin.awaiting.len();
        if gone > 0 {
            tracing::warn!("{gone} sessions of the earlier head did not come back");
        }
        for id in std::mem::take(&mut self.rejoin.awaiting).into_keys() {
            self.out.saves.push(Save::ForgetSession(id));
        }
        for (job, driver) in std::mem::take(&mut self.rejoin.unfinished) {
            if self.jobs.get(&job).is_none_or(|j| j.state.finished()) {
                // Ended meanwhile (stopped, or its driver failed).
                continue;
            }
            let driver_back = self
                .jobs
                .get(&job)
                .and_then(|j| j.driver)
                .is_some_and(|t| self.tasks.contains_key(&t));
            let client_back = self.sessions.values().any(|s| s.job == Some(job));
            if driver_back || client_back {
                self.log(
                    job,
                    "head",
                    b"the head restarted while this job ran; its driver went on",
                );
                self.save_job(job);
            } else {
                self.resume_job(job, driver);
            }
        }
        for (session, input) in std::mem::take(&mut self.rejoin.held) {
            self.handle(session, input);
        }
        self.dirty = true;
        self.pump();
    }
}
