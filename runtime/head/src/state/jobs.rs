//! Jobs: a submitted driver or a connected client. Their logs, their
//! progress, and their end, which cancels their tasks, kills their actors
//! and frees their objects.

use std::collections::{BTreeMap, VecDeque};

use ferray_core::{ActorId, Error, JobId, NodeId, ObjectId, TaskId};

use super::timeline::End;
use super::{
    Dep, Effect, HEAD_HOLDER, JOB_RETENTION, JobEntry, JobRequest, JobState, Kind, MAX_HISTORY,
    MAX_JOB_LOG_BYTES, MAX_JOB_LOG_LINE, MAX_JOB_LOG_LINES, Map, Set, State, TState, TaskEntry,
    TaskInfo, Waiter, give_back, now_ms,
};

impl JobEntry {
    pub(super) fn new(entrypoint: String, component: String) -> JobEntry {
        JobEntry {
            key: String::new(),
            entrypoint,
            component,
            state: JobState::Pending,
            result: String::new(),
            error: String::new(),
            err_value: false,
            done: 0,
            total: 0,
            logs: VecDeque::new(),
            logs_bytes: 0,
            logs_dropped: 0,
            put_bytes: 0,
            live_actors: 0,
            replay: Default::default(),
            start: now_ms(),
            end: 0,
            driver: None,
            tasks: Set::default(),
            actors: Set::default(),
            objects: Set::default(),
            components: Set::default(),
        }
    }
}

impl State {
    pub(super) fn new_job(&mut self, entrypoint: String, component: String) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.jobs.insert(id, JobEntry::new(entrypoint, component));
        self.save_counters();
        id
    }

    /// A job: its driver is queued for a node.
    pub fn submit_job(&mut self, req: JobRequest) -> Result<JobId, Error> {
        self.submit_job_keyed(req, "")
    }

    /// A job submitted by a request with the submitter's `key` (empty: none):
    /// a request whose key the head knows gets the job that key made (while
    /// the head keeps it, across a restart too), and nothing new runs.
    pub fn submit_job_keyed(&mut self, req: JobRequest, key: &str) -> Result<JobId, Error> {
        if let Some(job) = self.job_keys.get(key) {
            return Ok(*job);
        }
        let component = req.component;
        if !self.components.contains_key(&component) {
            return Err(Error::NotFound(format!(
                "component {} was not uploaded to the head",
                component.short()
            )));
        }
        let entry = format!("{} {}", req.function, req.args.join(" "));
        let job = self.new_job(entry.trim().to_string(), component.to_hex());
        if !key.is_empty()
            && let Some(j) = self.jobs.get_mut(&job)
        {
            j.key = key.to_string();
            self.job_keys.insert(key.to_string(), job);
        }
        self.queue_driver(
            job,
            Kind::Driver {
                component,
                function: req.function,
                wave_args: req.args,
                resources: req.entrypoint,
            },
        );
        self.pump();
        Ok(job)
    }

    /// The job's driver (a `Kind::Driver`) is queued for a node, and the
    /// job saved with it.
    pub(super) fn queue_driver(&mut self, job: JobId, driver: Kind) {
        let t = TaskId(self.next_head_task);
        self.next_head_task += 1;
        self.save_counters();
        let task = TaskEntry::new(job, None, driver, Vec::new(), TState::Queued);
        self.tasks.insert(t, task);
        if let Some(j) = self.jobs.get_mut(&job) {
            j.driver = Some(t);
            j.tasks.insert(t);
        }
        self.save_job(job);
        self.enqueue(Waiter::Task(t));
    }

    /// A task the job's progress counts.
    pub(super) fn count_in_job(&mut self, job: JobId, t: TaskId) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.tasks.insert(t);
            j.total += 1;
            self.job_changed(job);
        }
    }

    /// A task of the job ended for its submitter.
    pub(super) fn count_done(&mut self, job: JobId) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.done += 1;
            // A restarted head's saved count may lag behind what was
            // submitted (it is saved once a second).
            j.total = j.total.max(j.done);
            self.job_changed(job);
        }
    }

    pub(super) fn log(&mut self, job: JobId, label: &str, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let max_bytes = self.job_caps.log_bytes.map_or(MAX_JOB_LOG_BYTES, |b| {
            usize::try_from(b).unwrap_or(usize::MAX)
        });
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let mut line = format!("({label}) {line}");
            ferray_core::cut_text(&mut line, MAX_JOB_LOG_LINE);
            j.logs_bytes += line.len();
            j.logs.push_back(line);
            while j.logs.len() > MAX_JOB_LOG_LINES || j.logs_bytes > max_bytes {
                let Some(old) = j.logs.pop_front() else {
                    break;
                };
                j.logs_bytes -= old.len();
                j.logs_dropped += 1;
            }
        }
        self.job_changed(job);
    }

    pub fn stop_job(&mut self, id: JobId) -> Result<(), Error> {
        let j = self
            .jobs
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("no {id}")))?;
        if !j.state.finished() {
            self.finish_job(
                id,
                JobState::Stopped,
                String::new(),
                "stopped by the user".into(),
                false,
            );
        }
        Ok(())
    }

    /// Every job that has not ended is stopped (the head stops).
    pub fn stop_all_jobs(&mut self, why: &str) {
        let mut live: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.state.finished())
            .map(|(id, _)| *id)
            .collect();
        live.sort();
        for id in live {
            self.finish_job(id, JobState::Stopped, String::new(), why.into(), false);
        }
    }

    /// A job ends: its tasks are cancelled, its actors killed, its objects
    /// freed on every node (unless another job refers to them).
    pub(super) fn finish_job(
        &mut self,
        id: JobId,
        state: JobState,
        result: String,
        error: String,
        err_value: bool,
    ) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.state.finished() {
            return;
        }
        j.state = state;
        j.result = result;
        j.error = error;
        j.err_value = err_value;
        j.end = now_ms();
        self.save_job(id);
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        let tasks: Vec<TaskId> = j.tasks.drain().collect();
        let actors: Vec<ActorId> = j.actors.drain().collect();
        let objects: Vec<ObjectId> = j.objects.drain().collect();
        tracing::info!("{id} {}", state.name());
        self.job_changed(id);
        self.end_actors_of(&actors);
        // Waiters of other jobs on what goes now learn that it is gone.
        let mut orphans = self.end_tasks_of(id, tasks);
        let frees = self.release_objects_of(id, objects, &mut orphans);
        for w in orphans {
            self.try_ready(w);
        }
        self.jobs_ended += 1;
        self.finished_jobs.push_back(id);
        while self.finished_jobs.len() > JOB_RETENTION {
            if let Some(old) = self.finished_jobs.pop_front() {
                if let Some(j) = self.jobs.remove(&old) {
                    self.job_keys.remove(&j.key);
                }
                self.jobs_unsaved.remove(&old);
                self.out.saves.push(super::Save::ForgetJob(old));
            }
        }
        self.purge_queues();
        for (node, ids) in frees {
            if node == HEAD_HOLDER {
                self.out.head_frees.extend(ids);
            } else {
                self.send_node(node, Effect::Free(ids));
            }
        }
        self.pump();
    }

    /// A job's actors are killed and forgotten.
    fn end_actors_of(&mut self, actors: &[ActorId]) {
        for a in actors {
            let _ = self.kill_actor(*a, "its job ended");
        }
        let mut gone = Vec::new();
        for a in actors {
            if let Some(actor) = self.actors.remove(a)
                && let Some(dep) = actor.waiting_on
            {
                gone.push((dep, Waiter::Actor(*a)));
            }
        }
        self.unwait_all(gone);
    }

    /// Waiters that are gone no longer wait on their dependencies: one
    /// pass over each dependency's list (thousands of a job's tasks may
    /// wait on one object).
    fn unwait_all(&mut self, gone: Vec<(Dep, Waiter)>) {
        let mut by_dep: Map<Dep, Set<Waiter>> = Map::default();
        for (dep, w) in gone {
            by_dep.entry(dep).or_default().insert(w);
        }
        for (dep, ws) in by_dep {
            if let Some(list) = self.waiters_mut(dep) {
                list.retain(|x| !ws.contains(x));
            }
        }
    }

    /// A waiter that is gone no longer waits on `dep`.
    pub(super) fn unwait(&mut self, dep: Dep, w: Waiter) {
        if let Some(list) = self.waiters_mut(dep) {
            list.retain(|x| *x != w);
        }
    }

    /// Queue entries of tasks and actors that are gone are dropped (a pump
    /// skips them only up to the first entry that waits).
    pub(super) fn purge_queues(&mut self) {
        let (tasks, actors) = (&self.tasks, &self.actors);
        let live = |w: &Waiter| match w {
            Waiter::Task(t) => tasks.contains_key(t),
            Waiter::Actor(a) => actors.contains_key(a),
        };
        for (_, g) in self.queues.groups.iter_mut() {
            g.retain(live);
        }
        self.queues.groups.retain(|(_, g)| !g.is_empty());
        self.queues.others.retain(live);
    }

    /// A job's tasks are forgotten: running attempts are cancelled on their
    /// nodes, and submitters still waiting learn that the job ended. The
    /// waiters of other jobs on these tasks are returned.
    fn end_tasks_of(&mut self, id: JobId, tasks: Vec<TaskId>) -> Vec<Waiter> {
        let mut orphans: Vec<Waiter> = Vec::new();
        let mut gone = Vec::new();
        for t in tasks {
            let Some(mut task) = self.tasks.remove(&t) else {
                continue;
            };
            orphans.append(&mut task.waiters);
            if let Some(dep) = task.waiting_on {
                gone.push((dep, Waiter::Task(t)));
            }
            let pending = matches!(
                task.state,
                TState::Running(_) | TState::Waiting | TState::Queued
            );
            if let TState::Running(node) = task.state {
                give_back(&mut self.sched, &task, node);
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.running.remove(&t);
                }
                self.close_removed(
                    node,
                    t,
                    &mut task,
                    End::Cancelled(&format!("its {id} ended")),
                );
                self.send_node(node, Effect::Cancel(t));
            }
            if pending
                && !task.resolved
                && let Some(owner) = task.owner
            {
                let e = Error::Cancelled(format!("its {id} ended"));
                self.send(
                    owner,
                    Effect::Resolved {
                        task: t,
                        result: Err(e),
                    },
                );
            }
            if let Some(o) = task.made {
                if let Some(e) = self.objects.get_mut(&o) {
                    e.makers.remove(&t);
                }
                self.object_changed(o);
            }
            self.record_history(t, &task);
        }
        self.unwait_all(gone);
        orphans
    }

    /// The job no longer refers to its objects: those no other job refers
    /// to (and not pinned) are forgotten, and returned by holder.
    fn release_objects_of(
        &mut self,
        id: JobId,
        objects: Vec<ObjectId>,
        orphans: &mut Vec<Waiter>,
    ) -> BTreeMap<NodeId, Vec<ObjectId>> {
        let mut frees: BTreeMap<NodeId, Vec<ObjectId>> = BTreeMap::new();
        for oid in objects {
            let gone = match self.objects.get_mut(&oid) {
                Some(o) => {
                    o.jobs.remove(&id);
                    o.jobs.is_empty() && !o.pinned
                }
                None => false,
            };
            if gone && let Some(mut o) = self.objects.remove(&oid) {
                orphans.append(&mut o.waiters);
                for h in o.holders {
                    frees.entry(h).or_default().push(oid);
                }
                self.object_changed(oid);
            }
        }
        frees
    }

    pub(super) fn record_history(&mut self, t: TaskId, task: &TaskEntry) {
        self.history.push_back(TaskInfo {
            id: t,
            job: task.job,
            function: task.name(),
            state: task.state_name().into(),
            node: task.ran_on,
            attempts: task.attempts,
        });
        if self.history.len() > MAX_HISTORY {
            self.history.pop_front();
        }
    }
}
