//! What the head keeps across a restart of its process: jobs (state,
//! result, progress, a tail of the log, and for a job that has not ended,
//! what its driver runs), the components uploaded to it, and its id
//! counters. The state says what changed as [`Save`]s in its outbox; the
//! edge writes them to the head's database (`db.rs`) off the lock, and a
//! restarted head reads them back with [`State::restore`].
//!
//! Also the open sessions: a restarted head takes them back with what
//! their workers run (`rejoin.rs`); and the serve application the head
//! process runs ([`ServeRecord`], written by the serve edge, not the state),
//! which a restarted head deploys again. Tasks, actors and objects other than
//! `ferray put`'s (which the edge keeps itself) are not kept: they come
//! back with their nodes; a job whose driver does not come back runs it
//! again (see [`State::restore`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferray_core::{ComponentId, JobId, Resources};
use serde::{Deserialize, Serialize};

use super::{ComponentUse, JobEntry, JobState, Kind, State, TaskEntry};

/// The log lines a saved job keeps (its tail), at most.
pub const SAVED_LOG_LINES: usize = 1_000;
/// The bytes of log lines a saved job keeps, at most.
pub const SAVED_LOG_BYTES: usize = 256 << 10;

/// How long a restarted head waits for a first node before work that has
/// none to go to is infeasible (the workers' default reconnect window).
pub const RESTART_GRACE: Duration = Duration::from_secs(60);

/// A job as the head keeps it across a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The key of the request that submitted it (empty: none; absent in
    /// databases of earlier heads).
    #[serde(default)]
    pub key: String,
    pub entrypoint: String,
    pub component: String,
    pub state: JobState,
    pub result: String,
    pub error: String,
    pub err_value: bool,
    pub done: u64,
    pub total: u64,
    /// Milliseconds since the epoch.
    pub start: u64,
    pub end: u64,
    /// The last lines of its log.
    pub logs: Vec<String>,
    /// Lines of its log not kept.
    pub logs_dropped: u64,
    /// What its driver runs, while the job has not ended.
    pub driver: Option<DriverRecord>,
}

/// A job's driver: enough to run it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriverRecord {
    pub component: ComponentId,
    pub function: String,
    pub args: Vec<String>,
    pub resources: Resources,
}

/// The head's id counters: what a restarted head hands out next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub session: u64,
    pub node: u64,
    pub job: u64,
    /// Drivers' task ids.
    #[serde(default)]
    pub head_task: u64,
}

/// A change to what the head keeps, in the order the state made it.
#[derive(Clone, Debug)]
pub enum Save {
    Job(JobId, Box<JobRecord>),
    /// A finished job past the retention, forgotten.
    ForgetJob(JobId),
    Component(ComponentId, Bytes),
    ForgetComponent(ComponentId),
    Counters(Counters),
    /// A session opened (or came back).
    Session(u64, super::SessionRecord),
    /// A session ended.
    ForgetSession(u64),
}

/// The serve application a head process runs (`ferray serve deploy`): its
/// file, where it came from, each deployment's component (kept in the
/// components table) and the command line's `--proxy-location`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeRecord {
    pub text: String,
    pub origin: String,
    pub components: std::collections::BTreeMap<String, ComponentId>,
    #[serde(default)]
    pub proxy_location: String,
}

/// What a head kept, read back at its start.
#[derive(Clone, Debug, Default)]
pub struct Saved {
    /// The serve application it ran.
    pub serve_app: Option<ServeRecord>,
    pub jobs: Vec<(JobId, JobRecord)>,
    pub components: Vec<(ComponentId, Bytes)>,
    pub counters: Counters,
    /// Objects of `ferray put` (the edge puts them in the head's store).
    pub pinned: Vec<(ferray_core::ObjectId, Bytes)>,
    /// Sessions open when the head went.
    pub sessions: Vec<(u64, super::SessionRecord)>,
}

impl Saved {
    /// A change the head saved, applied as its database applies it (the
    /// tests and the fuzz target keep what a head saved this way).
    pub fn apply(&mut self, s: Save) {
        match s {
            Save::Job(id, r) => {
                self.jobs.retain(|(j, _)| *j != id);
                self.jobs.push((id, *r));
            }
            Save::ForgetJob(id) => self.jobs.retain(|(j, _)| *j != id),
            Save::Component(id, b) => {
                self.components.retain(|(c, _)| *c != id);
                self.components.push((id, b));
            }
            Save::ForgetComponent(id) => self.components.retain(|(c, _)| *c != id),
            Save::Counters(c) => self.counters = c,
            Save::Session(id, r) => {
                self.sessions.retain(|(s, _)| *s != id);
                self.sessions.push((id, r));
            }
            Save::ForgetSession(id) => self.sessions.retain(|(s, _)| *s != id),
        }
    }
}

impl State {
    /// A restarted head's wait for its first node ends after
    /// [`RESTART_GRACE`] (from the heartbeat check).
    pub(super) fn end_node_wait(&mut self, now: Instant) {
        if self.awaiting_nodes_until.is_some_and(|t| now >= t) {
            self.awaiting_nodes_until = None;
            self.sched.await_nodes(false);
            self.pump();
        }
    }

    /// Jobs whose progress or log changed since the last save are saved
    /// (the head calls this once a second; state changes are saved at once).
    pub fn save_changed_jobs(&mut self) {
        let mut dirty: Vec<JobId> = self.jobs_unsaved.drain().collect();
        dirty.sort();
        for j in dirty {
            self.save_job(j);
        }
    }

    /// The job as it is now goes to the database.
    pub(super) fn save_job(&mut self, id: JobId) {
        self.jobs_unsaved.remove(&id);
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        let driver = match j.driver.and_then(|t| self.tasks.get(&t)) {
            Some(TaskEntry {
                kind:
                    Kind::Driver {
                        component,
                        function,
                        wave_args,
                        resources,
                    },
                ..
            }) if !j.state.finished() => Some(DriverRecord {
                component: *component,
                function: function.clone(),
                args: wave_args.clone(),
                resources: resources.clone(),
            }),
            _ => None,
        };
        let mut logs: Vec<String> = Vec::new();
        let mut bytes = 0;
        for line in j.logs.iter().rev() {
            if logs.len() >= SAVED_LOG_LINES || bytes + line.len() > SAVED_LOG_BYTES {
                break;
            }
            bytes += line.len();
            logs.push(line.clone());
        }
        logs.reverse();
        let dropped = j.logs_dropped + (j.logs.len() - logs.len()) as u64;
        let record = JobRecord {
            key: j.key.clone(),
            entrypoint: j.entrypoint.clone(),
            component: j.component.clone(),
            state: j.state,
            result: j.result.clone(),
            error: j.error.clone(),
            err_value: j.err_value,
            done: j.done,
            total: j.total,
            start: j.start,
            end: j.end,
            logs,
            logs_dropped: dropped,
            driver,
        };
        self.out.saves.push(Save::Job(id, Box::new(record)));
    }

    pub(super) fn save_counters(&mut self) {
        self.out.saves.push(Save::Counters(Counters {
            session: self.next_session,
            node: self.next_node,
            job: self.next_job,
            head_task: self.next_head_task,
        }));
    }

    /// Take back what an earlier head of this cluster kept, before any
    /// session opens. Ids continue after the earlier head's. Components
    /// are kept as if uploaded now. Finished jobs are listed as they
    /// ended. The earlier head's sessions are waited for (`rejoin.rs`);
    /// when the wait ends, a job that had not ended and whose driver did
    /// not come back runs its driver again from the start (a re-run
    /// driver submits its tasks and actors again), and a client's job
    /// whose client did not come back ends as failed.
    pub fn restore(&mut self, saved: Saved, now: Instant) {
        let c = saved.counters;
        self.next_session = self.next_session.max(c.session);
        self.next_node = self.next_node.max(c.node);
        self.next_job = self.next_job.max(c.job);
        self.next_head_task = self.next_head_task.max(c.head_task);
        for (id, bytes) in saved.components {
            self.components.insert(id, bytes);
            self.component_use.insert(
                id,
                ComponentUse {
                    seen: now,
                    before_session: None,
                },
            );
        }
        let mut jobs = saved.jobs;
        jobs.sort_by_key(|(id, _)| *id);
        let mut rerun = Vec::new();
        for (id, r) in jobs {
            self.next_job = self.next_job.max(id.0 + 1);
            let mut entry = JobEntry::new(r.entrypoint, r.component);
            entry.state = r.state;
            entry.result = r.result;
            entry.error = r.error;
            entry.err_value = r.err_value;
            entry.done = r.done;
            entry.total = r.total;
            entry.start = r.start;
            entry.end = r.end;
            entry.logs_bytes = r.logs.iter().map(String::len).sum();
            entry.logs = r.logs.into();
            entry.logs_dropped = r.logs_dropped;
            if !r.key.is_empty() {
                self.job_keys.insert(r.key.clone(), id);
                entry.key = r.key;
            }
            let finished = entry.state.finished();
            self.jobs.insert(id, entry);
            if finished {
                self.finished_jobs.push_back(id);
            } else {
                rerun.push((id, r.driver));
            }
        }
        // Workers join again within their reconnect window: until then,
        // drivers wait for a node instead of being infeasible.
        self.sched.await_nodes(true);
        self.awaiting_nodes_until = Some(now + RESTART_GRACE);
        self.save_counters();
        // Sessions of the earlier head come back with what they run; the
        // jobs whose driver does not come back run it again.
        self.await_sessions(saved.sessions, rerun, now);
    }

    /// A job that had not ended when the earlier head went.
    pub(super) fn resume_job(&mut self, id: JobId, driver: Option<DriverRecord>) {
        let Some(d) = driver else {
            self.log(
                id,
                "head",
                b"the head restarted; this job's client lost its session",
            );
            self.finish_job(
                id,
                JobState::Failed,
                String::new(),
                "the head restarted while the job's client was connected".into(),
                false,
            );
            return;
        };
        if !self.components.contains_key(&d.component) {
            self.finish_job(
                id,
                JobState::Failed,
                String::new(),
                format!(
                    "the head restarted and no longer has component {}",
                    d.component.short()
                ),
                false,
            );
            return;
        }
        self.log(
            id,
            "head",
            b"the head restarted while this job ran: its driver runs again",
        );
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Pending;
            // A re-run counts its tasks again, from none.
            j.done = 0;
            j.total = 0;
        }
        self.queue_driver(
            id,
            Kind::Driver {
                component: d.component,
                function: d.function,
                wave_args: d.args,
                resources: d.resources,
            },
        );
    }
}
