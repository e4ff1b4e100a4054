//! The head's tables and what happens to them: sessions, nodes, components,
//! objects (where each one is), tasks (with their lineage), actors and jobs.
//! Everything runs under one lock and never waits: messages to sessions go
//! out through unbounded channels.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, ComponentId, Error, JobId, NodeId, ObjectId, Resources, Strategy,
    TaskId, TaskOptions,
};
use ferray_proto::v1::{self, down};
use ferray_proto::{INLINE_MAX, id_bytes};
use tokio::sync::mpsc;

use crate::sched::{Placement, Scheduler};

/// The head's own store, a holder like a node (clients' large puts).
pub const HEAD_HOLDER: NodeId = NodeId(0);
/// Log lines kept per job (older ones are dropped and counted).
const MAX_JOB_LOG_LINES: usize = 100_000;
/// Inline argument bytes in one assignment, at most (the rest go by holder).
const MAX_INLINE_ARGS: usize = 1 << 20;
/// Argument bytes a submission may carry inline.
const MAX_SUBMIT_INLINE: usize = 2 << 20;
/// Finished tasks kept for `ferray list tasks`.
const MAX_HISTORY: usize = 10_000;

pub type DownTx = mpsc::UnboundedSender<v1::Down>;

pub(crate) struct Session {
    tx: DownTx,
    node: Option<NodeId>,
    job: Option<JobId>,
}

pub(crate) struct NodeEntry {
    pub session: u64,
    pub address: String,
    pub name: String,
    pub alive: bool,
    pub last_seen: Instant,
    pub running: HashSet<TaskId>,
    pub actors: HashSet<ActorId>,
    pub total: Resources,
}

#[derive(Clone, Debug)]
pub(crate) enum ArgSpec {
    Value(Bytes),
    Task(TaskId),
    Object(ObjectId),
}

#[derive(Clone, Debug)]
enum Kind {
    Task {
        component: ComponentId,
        function: String,
        options: TaskOptions,
    },
    Driver {
        component: ComponentId,
        function: String,
        wave_args: Vec<String>,
    },
    ActorCall {
        actor: ActorId,
        method: String,
    },
}

#[derive(Clone, Debug)]
enum TState {
    Waiting,
    Queued,
    Running(NodeId),
    Done(ObjectId),
    Failed(Error),
}

struct TaskEntry {
    job: JobId,
    owner: Option<u64>,
    kind: Kind,
    args: Vec<ArgSpec>,
    state: TState,
    attempts: u32,
    held: Resources,
    cancelled: bool,
    waiters: Vec<Waiter>,
    /// The node of the latest attempt.
    ran_on: Option<NodeId>,
    /// The latest attempt got its resources on its node.
    started: bool,
    /// It gave its CPUs back while blocked in get or wait.
    cpus_released: bool,
}

impl TaskEntry {
    fn new(job: JobId, owner: Option<u64>, kind: Kind, args: Vec<ArgSpec>, state: TState) -> Self {
        TaskEntry {
            job,
            owner,
            kind,
            args,
            state,
            attempts: 0,
            held: Resources::default(),
            cancelled: false,
            waiters: Vec::new(),
            ran_on: None,
            started: false,
            cpus_released: false,
        }
    }

    fn name(&self) -> String {
        match &self.kind {
            Kind::Task { function, .. } | Kind::Driver { function, .. } => function.clone(),
            Kind::ActorCall { actor, method } => format!("{actor}.{method}"),
        }
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            TState::Waiting => "WAITING_FOR_DEPENDENCIES",
            TState::Queued => "PENDING_NODE_ASSIGNMENT",
            TState::Running(_) => "RUNNING",
            TState::Done(_) => "FINISHED",
            TState::Failed(_) => "FAILED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Waiter {
    Task(TaskId),
    Actor(ActorId),
}

#[derive(Default)]
struct ObjEntry {
    size: u64,
    holders: BTreeSet<NodeId>,
    inline: Option<Bytes>,
    /// A client is pushing it to the head.
    uploading: bool,
    /// The task that made it (lineage), else it came from `put`.
    producer: Option<TaskId>,
    jobs: HashSet<JobId>,
    /// Kept until the head stops (`ferray put`).
    pinned: bool,
    waiters: Vec<Waiter>,
}

impl ObjEntry {
    fn available(&self) -> bool {
        self.inline.is_some() || !self.holders.is_empty()
    }
}

#[derive(Clone, Debug)]
enum AState {
    /// Waiting for its arguments or for a node with room.
    Pending,
    Alive(NodeId),
    Dead(Error),
}

struct ActorEntry {
    job: JobId,
    component: ComponentId,
    class: String,
    args: Vec<ArgSpec>,
    options: ActorOptions,
    state: AState,
    incarnation: u32,
    restarts: u32,
    next_seq: u64,
    /// Calls not yet sent to the actor's node, in submission order.
    calls: VecDeque<TaskId>,
    queued: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl JobState {
    fn name(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Stopped => "STOPPED",
        }
    }
    fn finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Stopped
        )
    }
}

pub(crate) struct JobEntry {
    entrypoint: String,
    component: String,
    pub state: JobState,
    result: String,
    error: String,
    err_value: bool,
    done: u64,
    total: u64,
    logs: VecDeque<String>,
    logs_dropped: u64,
    start: u64,
    end: u64,
    driver: Option<TaskId>,
    tasks: HashSet<TaskId>,
    actors: HashSet<ActorId>,
    objects: HashSet<ObjectId>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
pub(crate) struct State {
    pub head_address: String,
    next_session: u64,
    next_node: u64,
    next_job: u64,
    next_head_task: u64,
    sessions: HashMap<u64, Session>,
    pub nodes: HashMap<NodeId, NodeEntry>,
    pub sched: Scheduler,
    pub components: HashMap<ComponentId, Bytes>,
    objects: HashMap<ObjectId, ObjEntry>,
    tasks: HashMap<TaskId, TaskEntry>,
    actors: HashMap<ActorId, ActorEntry>,
    pub jobs: HashMap<JobId, JobEntry>,
    queues: Queues,
    history: VecDeque<v1::TaskInfo>,
    /// The head's own store (clients' large puts).
    pub head_store: Option<std::sync::Arc<ferray_store::ObjectStore>>,
}

/// What a new session learns.
pub struct Welcome {
    pub session: u64,
    pub node: Option<NodeId>,
    pub job: Option<JobId>,
}

impl State {
    pub fn new(head_address: String) -> Self {
        State {
            head_address,
            next_session: 1,
            next_node: 1,
            next_job: 1,
            next_head_task: 1,
            ..State::default()
        }
    }

    fn send(&self, session: u64, msg: down::Msg) {
        if let Some(s) = self.sessions.get(&session) {
            let _ = s.tx.send(v1::Down { msg: Some(msg) });
        }
    }

    fn send_node(&self, node: NodeId, msg: down::Msg) {
        if let Some(n) = self.nodes.get(&node) {
            self.send(n.session, msg);
        }
    }

    fn holder_address(&self, id: NodeId) -> Option<String> {
        if id == HEAD_HOLDER {
            return Some(self.head_address.clone());
        }
        self.nodes
            .get(&id)
            .filter(|n| n.alive)
            .map(|n| n.address.clone())
    }

    // ----- sessions and nodes -----

    pub fn open_session(&mut self, tx: DownTx, hello: &v1::Hello) -> Result<Welcome, Error> {
        let session = self.next_session;
        self.next_session += 1;
        let (node, job) = if hello.worker {
            let total = ferray_proto::resources_from(hello.resources.clone())?;
            if hello.object_address.is_empty() {
                return Err(Error::InvalidArgument(
                    "a worker must announce its object server's address".into(),
                ));
            }
            let id = NodeId(self.next_node);
            self.next_node += 1;
            self.sched.add_node(id, total.clone());
            self.nodes.insert(
                id,
                NodeEntry {
                    session,
                    address: hello.object_address.clone(),
                    name: hello.name.clone(),
                    alive: true,
                    last_seen: Instant::now(),
                    running: HashSet::new(),
                    actors: HashSet::new(),
                    total,
                },
            );
            tracing::info!("{id} joined from {} ({})", hello.object_address, hello.name);
            (Some(id), None)
        } else {
            let job = self.new_job(format!("client {}", hello.name), String::new());
            if let Some(j) = self.jobs.get_mut(&job) {
                j.state = JobState::Running;
            }
            (None, Some(job))
        };
        self.sessions.insert(session, Session { tx, node, job });
        Ok(Welcome { session, node, job })
    }

    /// A session's stream ended: a worker's node is dead, a client's job is over.
    pub fn close_session(&mut self, session: u64, why: &str) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
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

    pub fn touch(&mut self, session: u64) {
        if let Some(node) = self.sessions.get(&session).and_then(|s| s.node)
            && let Some(n) = self.nodes.get_mut(&node)
        {
            n.last_seen = Instant::now();
        }
    }

    /// Nodes silent for longer than `timeout` are declared dead.
    pub fn check_heartbeats(&mut self, timeout: Duration) {
        let late: Vec<(NodeId, u64)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive && n.last_seen.elapsed() > timeout)
            .map(|(id, n)| (*id, n.session))
            .collect();
        for (id, session) in late {
            tracing::warn!("{id} sent no heartbeat for {timeout:?}: declared dead");
            // Dropping its channel ends its stream: the worker learns it.
            if let Some(s) = self.sessions.remove(&session)
                && let Some(node) = s.node
            {
                self.node_died(
                    node,
                    &format!("it sent no heartbeat for {}s", timeout.as_secs_f64()),
                );
            }
        }
    }

    fn node_died(&mut self, id: NodeId, why: &str) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.alive {
            return;
        }
        node.alive = false;
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
            self.attempt_lost(t, &reason);
        }
        // Objects whose only copy was there are lost; tasks rebuild them on demand.
        let mut lost_puts = Vec::new();
        for (oid, o) in self.objects.iter_mut() {
            if o.holders.remove(&id) && !o.available() && o.producer.is_none() && !o.uploading {
                lost_puts.push(*oid);
            }
        }
        for oid in lost_puts {
            self.wake_object(oid);
        }
        self.pump();
    }

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
            Kind::Task { options, .. }
                if !task.cancelled && task.attempts <= options.max_retries =>
            {
                tracing::info!("{t}: {reason}; retrying (attempt {})", task.attempts + 1);
                task.state = TState::Queued;
                self.enqueue(Waiter::Task(t));
            }
            Kind::Task { .. } => {
                let e = Error::System(format!("{reason} while it ran, with no retries left"));
                self.fail_task(t, e);
            }
            Kind::Driver { .. } => {
                task.state = TState::Queued;
                self.enqueue(Waiter::Task(t));
            }
        }
    }

    // ----- jobs -----

    fn new_job(&mut self, entrypoint: String, component: String) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.jobs.insert(
            id,
            JobEntry {
                entrypoint,
                component,
                state: JobState::Pending,
                result: String::new(),
                error: String::new(),
                err_value: false,
                done: 0,
                total: 0,
                logs: VecDeque::new(),
                logs_dropped: 0,
                start: now_ms(),
                end: 0,
                driver: None,
                tasks: HashSet::new(),
                actors: HashSet::new(),
                objects: HashSet::new(),
            },
        );
        id
    }

    pub fn submit_job(&mut self, req: v1::JobRequest) -> Result<JobId, Error> {
        let component = ferray_proto::object_id(&req.component)?;
        let component = ComponentId::from_bytes(*component.as_bytes());
        if !self.components.contains_key(&component) {
            return Err(Error::NotFound(format!(
                "component {} was not uploaded to the head",
                component.short()
            )));
        }
        let entry = format!("{} {}", req.function, req.args.join(" "));
        let job = self.new_job(entry.trim().to_string(), component.to_hex());
        let t = TaskId(self.next_head_task);
        self.next_head_task += 1;
        let task = TaskEntry::new(
            job,
            None,
            Kind::Driver {
                component,
                function: req.function,
                wave_args: req.args,
            },
            Vec::new(),
            TState::Queued,
        );
        self.tasks.insert(t, task);
        if let Some(j) = self.jobs.get_mut(&job) {
            j.driver = Some(t);
            j.tasks.insert(t);
        }
        self.enqueue(Waiter::Task(t));
        self.pump();
        Ok(job)
    }

    /// A task the job's progress counts.
    fn count_in_job(&mut self, job: JobId, t: TaskId) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.tasks.insert(t);
            j.total += 1;
        }
    }

    pub fn job_info(&self, id: JobId) -> Option<v1::JobInfo> {
        self.jobs.get(&id).map(|j| v1::JobInfo {
            job: id.0,
            state: j.state.name().to_string(),
            entrypoint: j.entrypoint.clone(),
            component: j.component.clone(),
            result: j.result.clone(),
            error: j.error.clone(),
            tasks_done: j.done,
            tasks_total: j.total,
            err_value: j.err_value,
            start_unix_ms: j.start,
            end_unix_ms: j.end,
        })
    }

    /// Log lines from `from` on (counting dropped ones), and the next cursor.
    pub fn job_logs(&self, id: JobId, from: u64) -> (Vec<String>, u64) {
        let Some(j) = self.jobs.get(&id) else {
            return (Vec::new(), from);
        };
        let start = from.max(j.logs_dropped);
        let skip = (start - j.logs_dropped) as usize;
        let lines: Vec<String> = j.logs.iter().skip(skip).cloned().collect();
        (lines, j.logs_dropped + j.logs.len() as u64)
    }

    fn log(&mut self, job: JobId, label: &str, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            j.logs.push_back(format!("({label}) {line}"));
            if j.logs.len() > MAX_JOB_LOG_LINES {
                j.logs.pop_front();
                j.logs_dropped += 1;
            }
        }
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

    /// A job ends: its tasks are cancelled, its actors killed, its objects
    /// freed on every node (unless another job refers to them).
    fn finish_job(
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
        let tasks: Vec<TaskId> = j.tasks.drain().collect();
        let actors: Vec<ActorId> = j.actors.drain().collect();
        let objects: Vec<ObjectId> = j.objects.drain().collect();
        tracing::info!("{id} {}", state.name());
        for a in &actors {
            let _ = self.kill_actor(*a, "its job ended");
        }
        for a in &actors {
            self.actors.remove(a);
        }
        // Waiters of other jobs on what goes now learn that it is gone.
        let mut orphans: Vec<Waiter> = Vec::new();
        for t in tasks {
            if let Some(mut task) = self.tasks.remove(&t) {
                orphans.append(&mut task.waiters);
                let pending = matches!(
                    task.state,
                    TState::Running(_) | TState::Waiting | TState::Queued
                );
                if let TState::Running(node) = task.state {
                    if task.started {
                        self.sched.release(node, &task.held);
                    } else if !matches!(task.kind, Kind::ActorCall { .. }) {
                        self.sched.unassign(node);
                    }
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.running.remove(&t);
                    }
                    self.send_node(node, down::Msg::Cancel(v1::CancelTask { task: t.0 }));
                }
                if pending && let Some(owner) = task.owner {
                    let e = Error::Cancelled(format!("its {id} ended"));
                    self.reply_err(owner, t, e);
                }
                self.record_history(t, &task);
            }
        }
        let mut frees: HashMap<NodeId, Vec<ObjectId>> = HashMap::new();
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
            }
        }
        for w in orphans {
            self.try_ready(w);
        }
        for (node, ids) in frees {
            if node == HEAD_HOLDER {
                if let Some(store) = &self.head_store {
                    for id in &ids {
                        store.decref(id);
                    }
                }
                continue;
            }
            self.send_node(
                node,
                down::Msg::Free(v1::Free {
                    ids: ids.iter().map(id_bytes).collect(),
                }),
            );
        }
        self.pump();
    }

    fn record_history(&mut self, t: TaskId, task: &TaskEntry) {
        let node = task.ran_on.map_or(0, |n| n.0);
        self.history.push_back(v1::TaskInfo {
            id: t.0,
            job: task.job.0,
            function: task.name(),
            state: task.state_name().to_string(),
            node,
            attempts: task.attempts,
        });
        if self.history.len() > MAX_HISTORY {
            self.history.pop_front();
        }
    }

    // ----- objects -----

    /// A put: a worker holds it, or a client sent it inline or is pushing it.
    pub fn put(&mut self, session: u64, p: v1::PutObject) -> Result<(), Error> {
        let id = ferray_proto::object_id(&p.id)?;
        let node = self.sessions.get(&session).and_then(|s| s.node);
        let job = JobId(p.job);
        let o = self.objects.entry(id).or_default();
        o.size = p.size;
        if let Some(b) = p.inline {
            if b.len() > INLINE_MAX || !id.matches(&b) {
                return Err(Error::Corrupt { id: id.to_hex() });
            }
            o.inline = Some(b);
        }
        let mut gave_up = false;
        if let Some(n) = node {
            // The worker keeps a copy either way; it is freed with the job.
            o.holders.insert(n);
        } else if p.uploading && !o.available() {
            o.uploading = true;
        } else if !p.uploading && o.uploading && !o.available() {
            // The client's upload failed.
            o.uploading = false;
            gave_up = true;
        }
        if self.jobs.get(&job).is_some_and(|j| !j.state.finished()) {
            o.jobs.insert(job);
            if let Some(j) = self.jobs.get_mut(&job) {
                j.objects.insert(id);
            }
        } else if p.job == 0 {
            o.pinned = true;
        } else if let Some(n) = node {
            // A put into a job that has ended: nobody can refer to it.
            if o.jobs.is_empty() && !o.pinned {
                self.objects.remove(&id);
                self.send_node(
                    n,
                    down::Msg::Free(v1::Free {
                        ids: vec![id_bytes(&id)],
                    }),
                );
                return Ok(());
            }
        }
        if gave_up {
            self.wake_object(id);
        }
        Ok(())
    }

    /// The head's store received a pushed object.
    pub fn pushed(&mut self, id: ObjectId, size: u64, pin: bool) {
        let o = self.objects.entry(id).or_default();
        o.size = size;
        o.holders.insert(HEAD_HOLDER);
        o.uploading = false;
        if pin || o.jobs.is_empty() {
            o.pinned = true;
        }
        self.wake_object(id);
        self.pump();
    }

    pub fn located(&mut self, session: u64, id: ObjectId) {
        let Some(node) = self.sessions.get(&session).and_then(|s| s.node) else {
            return;
        };
        match self.objects.get_mut(&id) {
            Some(o) => {
                o.holders.insert(node);
            }
            // Freed meanwhile: the node drops its copy.
            None => self.send_node(
                node,
                down::Msg::Free(v1::Free {
                    ids: vec![id_bytes(&id)],
                }),
            ),
        }
    }

    fn loc(&self, id: &ObjectId) -> Option<v1::ObjectLoc> {
        let o = self.objects.get(id)?;
        Some(v1::ObjectLoc {
            id: id_bytes(id),
            size: o.size,
            inline: o.inline.clone(),
            holders: o
                .holders
                .iter()
                .filter_map(|h| self.holder_address(*h))
                .collect(),
        })
    }

    /// Where an object is now; `Ok(None)`: not yet (being made or rebuilt).
    pub fn locate(&mut self, id: ObjectId) -> Result<Option<v1::ObjectLoc>, Error> {
        let Some(o) = self.objects.get(&id) else {
            return Err(Error::NotFound(format!(
                "object {} is not in the cluster (never made, or freed)",
                id.short()
            )));
        };
        if o.available() {
            return Ok(self.loc(&id));
        }
        if o.uploading {
            return Ok(None);
        }
        match o.producer {
            Some(t) => {
                if !self.rebuild(t) {
                    return Err(lost_made(&id, t));
                }
                self.pump();
                Ok(None)
            }
            None => Err(lost_put(&id)),
        }
    }

    /// Re-run the task that made a lost object (lineage).
    /// Re-run the task that made a lost object (lineage); `false` when
    /// nothing can make it again (the task is gone, failed, or an actor
    /// call, whose actor state cannot be replayed).
    fn rebuild(&mut self, t: TaskId) -> bool {
        let Some(task) = self.tasks.get_mut(&t) else {
            return false;
        };
        if !matches!(task.kind, Kind::Task { .. }) {
            return false;
        }
        match task.state {
            TState::Done(_) => {
                tracing::info!("{t}: its result was lost; re-running it (lineage)");
                task.state = TState::Waiting;
                self.try_ready(Waiter::Task(t));
                true
            }
            TState::Failed(_) => false,
            _ => true,
        }
    }

    fn wake_object(&mut self, id: ObjectId) {
        let ws = match self.objects.get_mut(&id) {
            Some(o) => std::mem::take(&mut o.waiters),
            None => return,
        };
        for w in ws {
            self.try_ready(w);
        }
    }

    // ----- tasks -----

    fn check_args(&self, args: &[v1::Arg]) -> Result<Vec<ArgSpec>, Error> {
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
        args.iter()
            .map(|a| match &a.kind {
                Some(A::Value(b)) => Ok(ArgSpec::Value(b.clone())),
                Some(A::Task(t)) => Ok(ArgSpec::Task(TaskId(*t))),
                Some(A::Object(o)) => Ok(ArgSpec::Object(ferray_proto::object_id(o)?)),
                None => Err(Error::InvalidArgument("an argument without a kind".into())),
            })
            .collect()
    }

    fn component_of(&self, bytes: &[u8]) -> Result<ComponentId, Error> {
        let id = ferray_proto::object_id(bytes)?;
        let c = ComponentId::from_bytes(*id.as_bytes());
        if !self.components.contains_key(&c) {
            return Err(Error::NotFound(format!(
                "component {} was not uploaded to the head",
                c.short()
            )));
        }
        Ok(c)
    }

    fn live_job(&self, job: u64) -> Result<JobId, Error> {
        let id = JobId(job);
        match self.jobs.get(&id) {
            Some(j) if !j.state.finished() => Ok(id),
            Some(_) => Err(Error::Cancelled(format!("{id} has ended"))),
            None => Err(Error::NotFound(format!("no {id}"))),
        }
    }

    pub fn submit(&mut self, session: u64, s: v1::Submit) {
        let t = TaskId(s.task);
        let made = (|| {
            check_id(session, s.task)?;
            let job = self.live_job(s.job)?;
            let component = self.component_of(&s.component)?;
            let options = ferray_proto::task_options_from(s.options)?;
            let args = self.check_args(&s.args)?;
            if self.tasks.contains_key(&t) {
                return Err(Error::InvalidArgument(format!("{t} was submitted twice")));
            }
            Ok((job, component, options, args))
        })();
        let (job, component, options, args) = match made {
            Ok(v) => v,
            Err(e) => return self.reply_err(session, t, e),
        };
        self.tasks.insert(
            t,
            TaskEntry::new(
                job,
                Some(session),
                Kind::Task {
                    component,
                    function: s.function,
                    options,
                },
                args,
                TState::Waiting,
            ),
        );
        self.count_in_job(job, t);
        self.try_ready(Waiter::Task(t));
    }

    fn reply_err(&self, session: u64, t: TaskId, e: Error) {
        self.send(
            session,
            down::Msg::Resolved(v1::Resolved {
                task: t.0,
                result: Some(v1::resolved::Result::Err(ferray_proto::error_to(&e))),
            }),
        );
    }

    /// What an argument is now.
    fn arg_state(&mut self, a: &ArgSpec) -> ArgNow {
        match a {
            ArgSpec::Value(_) => ArgNow::Ready,
            ArgSpec::Task(t) => {
                let Some(task) = self.tasks.get(t) else {
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
            ArgSpec::Object(oid) => match self
                .objects
                .get(oid)
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

    /// Re-check a waiter's arguments: queue it when all are ready, fail it
    /// when one failed, else wait on the first pending one.
    fn try_ready(&mut self, w: Waiter) {
        let args = match w {
            Waiter::Task(t) => match self.tasks.get(&t) {
                Some(task) if matches!(task.state, TState::Waiting) => task.args.clone(),
                _ => return,
            },
            Waiter::Actor(a) => match self.actors.get(&a) {
                Some(actor) if matches!(actor.state, AState::Pending) && !actor.queued => {
                    actor.args.clone()
                }
                _ => return,
            },
        };
        for a in &args {
            match self.arg_state(a) {
                ArgNow::Ready => {}
                ArgNow::Failed(e) => {
                    match w {
                        Waiter::Task(t) => self.fail_task(t, e),
                        Waiter::Actor(a) => self
                            .actor_dead(a, Error::ActorDied(format!("{a} could not start: {e}"))),
                    }
                    return;
                }
                ArgNow::Pending(dep) => {
                    match dep {
                        Dep::Task(d) => {
                            if let Some(dt) = self.tasks.get_mut(&d)
                                && !dt.waiters.contains(&w)
                            {
                                dt.waiters.push(w);
                            }
                        }
                        Dep::Object(o) => {
                            if let Some(obj) = self.objects.get_mut(&o)
                                && !obj.waiters.contains(&w)
                            {
                                obj.waiters.push(w);
                            }
                        }
                    }
                    return;
                }
            }
        }
        match w {
            Waiter::Task(t) => {
                let Some(task) = self.tasks.get_mut(&t) else {
                    return;
                };
                if let Kind::ActorCall { actor, .. } = task.kind {
                    // Ready calls are sent in submission order by the actor.
                    task.state = TState::Queued;
                    self.flush_actor(actor);
                } else {
                    task.state = TState::Queued;
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

    fn fail_task(&mut self, t: TaskId, e: Error) {
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        task.state = TState::Failed(e.clone());
        let (owner, job) = (task.owner, task.job);
        let driver = matches!(task.kind, Kind::Driver { .. });
        let actor = match task.kind {
            Kind::ActorCall { actor, .. } => Some(actor),
            _ => None,
        };
        if let Some(j) = self.jobs.get_mut(&job)
            && !driver
        {
            j.done += 1;
        }
        if let Some(o) = owner {
            self.reply_err(o, t, e.clone());
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
    }

    /// An attempt ended on `node`.
    pub fn done(&mut self, session: u64, d: v1::Done) {
        let t = TaskId(d.task);
        let Some(node) = self.sessions.get(&session).and_then(|s| s.node) else {
            return;
        };
        let stale = match self.tasks.get(&t) {
            Some(task) => {
                !matches!(task.state, TState::Running(n) if n == node) || d.attempt != task.attempts
            }
            None => true,
        };
        if stale {
            // A stale attempt, or a task of an ended job: its result is not
            // wanted, so the node need not keep it.
            return self.discard(node, &d);
        }
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        let held = std::mem::take(&mut task.held);
        if task.started {
            self.sched.release(node, &held);
        } else if !matches!(task.kind, Kind::ActorCall { .. }) {
            self.sched.unassign(node);
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.running.remove(&t);
        }
        let job = task.job;
        let owner = task.owner;
        let label = format!("{t} {node}");
        self.log(job, &label, &d.stdout);
        self.log(job, &label, &d.stderr);
        // A connected client also sees its tasks' output, as a Ray driver does.
        if let Some(o) = owner
            && (!d.stdout.is_empty() || !d.stderr.is_empty())
            && self.sessions.get(&o).is_some_and(|s| s.node.is_none())
        {
            self.send(
                o,
                down::Msg::Output(v1::Output {
                    source: format!("{t}, {node}"),
                    stdout: d.stdout.clone(),
                    stderr: d.stderr.clone(),
                }),
            );
        }
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        let retry_on = |task: &TaskEntry, e: Option<&Error>| match &task.kind {
            Kind::Task { options, .. } => {
                !task.cancelled
                    && task.attempts <= options.max_retries
                    && match e {
                        Some(e) => {
                            e.is_system() || (options.retry_exceptions && e.is_application())
                        }
                        None => options.retry_exceptions,
                    }
            }
            _ => false,
        };
        match d.result.clone() {
            Some(v1::done::Result::Ok(loc)) => {
                if d.err_value && retry_on(task, None) {
                    task.state = TState::Queued;
                    self.enqueue(Waiter::Task(t));
                    self.discard(node, &d);
                    return;
                }
                let oid = match ferray_proto::object_id(&loc.id) {
                    Ok(o) => o,
                    Err(e) => {
                        self.fail_task(t, Error::System(format!("{node} sent a bad result: {e}")));
                        return;
                    }
                };
                task.state = TState::Done(oid);
                let driver = matches!(task.kind, Kind::Driver { .. });
                let owner = task.owner;
                let o = self.objects.entry(oid).or_default();
                o.size = loc.size;
                o.holders.insert(node);
                if o.producer.is_none() {
                    o.producer = Some(t);
                }
                if let Some(b) = loc.inline
                    && b.len() <= INLINE_MAX
                    && oid.matches(&b)
                {
                    o.inline = Some(b);
                }
                o.jobs.insert(job);
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.objects.insert(oid);
                    if !driver {
                        j.done += 1;
                    }
                }
                if let Some(owner) = owner
                    && let Some(loc) = self.loc(&oid)
                {
                    self.send(
                        owner,
                        down::Msg::Resolved(v1::Resolved {
                            task: t.0,
                            result: Some(v1::resolved::Result::Ok(loc)),
                        }),
                    );
                }
                self.wake_object(oid);
                self.wake_task(t);
                if driver {
                    let state = if d.err_value {
                        JobState::Failed
                    } else {
                        JobState::Succeeded
                    };
                    self.finish_job(job, state, d.wave, String::new(), d.err_value);
                }
            }
            Some(v1::done::Result::Err(e)) => {
                let e = ferray_proto::error_from(Some(e));
                if retry_on(task, Some(&e)) {
                    tracing::info!("{t} failed on {node} ({e}); retrying");
                    task.state = TState::Queued;
                    self.enqueue(Waiter::Task(t));
                } else {
                    self.fail_task(t, e);
                }
            }
            None => self.fail_task(t, Error::System(format!("{node} sent an empty result"))),
        }
    }

    /// A result nobody will refer to: the node drops its copy (unless the
    /// cluster knows it holds the same object for another reason).
    fn discard(&self, node: NodeId, d: &v1::Done) {
        if let Some(v1::done::Result::Ok(loc)) = &d.result
            && let Ok(id) = ferray_proto::object_id(&loc.id)
            && !self
                .objects
                .get(&id)
                .is_some_and(|o| o.holders.contains(&node))
        {
            self.send_node(
                node,
                down::Msg::Free(v1::Free {
                    ids: vec![loc.id.clone()],
                }),
            );
        }
    }

    pub fn cancel(&mut self, t: TaskId) {
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        task.cancelled = true;
        match task.state {
            TState::Waiting | TState::Queued => {
                self.fail_task(t, Error::Cancelled(format!("{t} was cancelled")));
            }
            TState::Running(node) => {
                self.send_node(node, down::Msg::Cancel(v1::CancelTask { task: t.0 }));
            }
            _ => {}
        }
    }

    /// An assigned task got its resources on its node.
    pub fn started(&mut self, session: u64, s: v1::Started) {
        let t = TaskId(s.task);
        let Some(node) = self.sessions.get(&session).and_then(|s| s.node) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        if !matches!(task.state, TState::Running(n) if n == node) || task.started {
            return;
        }
        task.started = true;
        let demand = task_demand(&task.kind);
        // The node admitted it, so its view had room; this one mirrors it.
        if self.sched.started(node, &demand)
            && let Some(task) = self.tasks.get_mut(&t)
        {
            task.held = demand;
        }
    }

    pub fn blocked(&mut self, session: u64, b: v1::Blocked) {
        let t = TaskId(b.task);
        let Some(node) = self.sessions.get(&session).and_then(|s| s.node) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        if !matches!(task.state, TState::Running(n) if n == node) {
            return;
        }
        let cpus = task_demand(&task.kind).cpus_only();
        if b.blocked {
            if !task.cpus_released && task.held.num_cpus() > 0.0 {
                // Only a task that holds its whole demand gives CPUs back.
                task.held = task.held.without_cpus();
                task.cpus_released = true;
                self.sched.release(node, &cpus);
            }
        } else if task.cpus_released {
            task.cpus_released = false;
            if self.sched.try_take(node, &cpus)
                && let Some(task) = self.tasks.get_mut(&t)
            {
                task.held = task_demand(&task.kind);
            }
            // Without room, the task runs on without counting its CPUs
            // (the node's own admission still holds the line).
        }
    }

    // ----- scheduling -----

    /// What a waiter asks for and how it wants to be placed (`None`: it no
    /// longer waits for a node).
    fn demand_of(&self, w: Waiter) -> Option<(Resources, Strategy)> {
        match w {
            Waiter::Task(t) => {
                let task = self.tasks.get(&t)?;
                if !matches!(task.state, TState::Queued) {
                    return None;
                }
                match &task.kind {
                    Kind::Task { options, .. } => {
                        Some((options.resources.clone(), options.strategy))
                    }
                    Kind::Driver { .. } => Some((Resources::default(), Strategy::Default)),
                    Kind::ActorCall { .. } => None,
                }
            }
            Waiter::Actor(a) => {
                let actor = self.actors.get(&a)?;
                matches!(actor.state, AState::Pending)
                    .then(|| (actor.options.resources.clone(), actor.options.strategy))
            }
        }
    }

    /// Queue a waiter for a node: default placements in groups of equal
    /// demand (FIFO within a group), others apart.
    fn enqueue(&mut self, w: Waiter) {
        let Some((demand, strategy)) = self.demand_of(w) else {
            return;
        };
        if matches!(strategy, Strategy::Default) && matches!(w, Waiter::Task(_)) {
            match self.queues.groups.iter_mut().find(|(d, _)| *d == demand) {
                Some((_, g)) => g.push_back(w),
                None => self.queues.groups.push((demand, VecDeque::from([w]))),
            }
        } else {
            self.queues.others.push_back(w);
        }
    }

    fn args_of(&self, w: Waiter) -> &[ArgSpec] {
        match w {
            Waiter::Task(t) => self.tasks.get(&t).map_or(&[], |t| t.args.as_slice()),
            Waiter::Actor(a) => self.actors.get(&a).map_or(&[], |a| a.args.as_slice()),
        }
    }

    /// Try one waiter; `false` when it must keep waiting.
    fn try_place(&mut self, w: Waiter, demand: &Resources, strategy: Strategy) -> bool {
        let locality = self.locality(self.args_of(w));
        let placed = match w {
            Waiter::Task(_) => self.sched.assign(demand, strategy, &locality),
            Waiter::Actor(_) => self.sched.place(demand, strategy, &locality),
        };
        match placed {
            Placement::Node(node) => {
                match w {
                    Waiter::Task(t) => self.dispatch(t, node),
                    Waiter::Actor(a) => self.start_actor(a, node),
                }
                true
            }
            Placement::Wait => false,
            Placement::Infeasible(why) => {
                let e = Error::Infeasible(format!("it asks for {} and {why}", describe(demand)));
                match w {
                    Waiter::Task(t) => self.fail_task(t, e),
                    Waiter::Actor(a) => self.actor_dead(a, e),
                }
                true
            }
        }
    }

    /// Place what waits for a node, as far as resources allow (after each
    /// batch of a session's messages, and after what frees or adds work
    /// outside one). A group of
    /// equal default demands stops at its first that finds no room (no node
    /// has room for any of them), so a pass costs what it places.
    pub fn pump(&mut self) {
        for _ in 0..8 {
            let mut q = std::mem::take(&mut self.queues);
            for (demand, group) in q.groups.iter_mut() {
                while let Some(&w) = group.front() {
                    if self.demand_of(w).is_none() {
                        group.pop_front();
                        continue;
                    }
                    if !self.try_place(w, demand, Strategy::Default) {
                        break;
                    }
                    group.pop_front();
                }
            }
            q.groups.retain(|(_, g)| !g.is_empty());
            let mut keep = VecDeque::new();
            while let Some(w) = q.others.pop_front() {
                let Some((demand, strategy)) = self.demand_of(w) else {
                    continue;
                };
                if !self.try_place(w, &demand, strategy) {
                    keep.push_back(w);
                }
            }
            q.others = keep;
            // What was queued meanwhile goes after what waited before.
            let arrived = std::mem::replace(&mut self.queues, q);
            let more = !arrived.groups.is_empty() || !arrived.others.is_empty();
            for (_, g) in arrived.groups {
                for w in g {
                    self.enqueue(w);
                }
            }
            for w in arrived.others {
                self.enqueue(w);
            }
            if !more {
                break;
            }
        }
    }

    fn locality(&self, args: &[ArgSpec]) -> Vec<(NodeId, u64)> {
        let mut bytes: HashMap<NodeId, u64> = HashMap::new();
        for a in args {
            let oid = match a {
                ArgSpec::Object(o) => Some(*o),
                ArgSpec::Task(t) => match self.tasks.get(t).map(|t| &t.state) {
                    Some(TState::Done(o)) => Some(*o),
                    _ => None,
                },
                ArgSpec::Value(_) => None,
            };
            if let Some(o) = oid.and_then(|o| self.objects.get(&o))
                && o.inline.is_none()
            {
                for h in &o.holders {
                    *bytes.entry(*h).or_default() += o.size;
                }
            }
        }
        bytes.into_iter().collect()
    }

    /// The arguments as a worker gets them; `None` when one is no longer
    /// available (lost since it was checked). Small objects travel inline
    /// up to [`MAX_INLINE_ARGS`] bytes in all; the rest by their holders.
    fn resolve_args(&self, args: &[ArgSpec]) -> Option<Vec<v1::ResolvedArg>> {
        use v1::resolved_arg::Kind as R;
        let mut budget = MAX_INLINE_ARGS;
        args.iter()
            .map(|a| {
                let oid = match a {
                    ArgSpec::Value(b) => {
                        return Some(v1::ResolvedArg {
                            kind: Some(R::Value(b.clone())),
                        });
                    }
                    ArgSpec::Object(o) => *o,
                    ArgSpec::Task(t) => match self.tasks.get(t).map(|t| &t.state) {
                        Some(TState::Done(o)) => *o,
                        _ => return None,
                    },
                };
                let mut loc = self.loc(&oid)?;
                if let Some(b) = &loc.inline {
                    if b.len() <= budget {
                        budget -= b.len();
                    } else if !loc.holders.is_empty() {
                        loc.inline = None;
                    }
                }
                if loc.inline.is_none() && loc.holders.is_empty() {
                    return None;
                }
                Some(v1::ResolvedArg {
                    kind: Some(R::Object(loc)),
                })
            })
            .collect()
    }

    fn dispatch(&mut self, t: TaskId, node: NodeId) {
        let Some(task) = self.tasks.get(&t) else {
            self.sched.unassign(node);
            return;
        };
        let Some(args) = self.resolve_args(&task.args) else {
            // An argument was lost meanwhile: wait for it again.
            self.sched.unassign(node);
            if let Some(task) = self.tasks.get_mut(&t) {
                task.state = TState::Waiting;
            }
            return self.try_ready(Waiter::Task(t));
        };
        let attempt = task.attempts + 1;
        let assign = match &task.kind {
            Kind::Task {
                component,
                function,
                options,
            } => v1::Assign {
                task: t.0,
                job: task.job.0,
                attempt,
                component: Bytes::copy_from_slice(component.as_bytes()),
                function: function.clone(),
                args,
                options: Some(ferray_proto::task_options_to(options)),
                driver: false,
                wave_args: vec![],
            },
            Kind::Driver {
                component,
                function,
                wave_args,
            } => v1::Assign {
                task: t.0,
                job: task.job.0,
                attempt,
                component: Bytes::copy_from_slice(component.as_bytes()),
                function: function.clone(),
                args: vec![],
                options: Some(ferray_proto::task_options_to(&TaskOptions {
                    resources: Resources::default(),
                    max_retries: 0,
                    ..TaskOptions::default()
                })),
                driver: true,
                wave_args: wave_args.clone(),
            },
            Kind::ActorCall { .. } => return,
        };
        let job = task.job;
        if let Some(task) = self.tasks.get_mut(&t) {
            task.state = TState::Running(node);
            task.attempts = attempt;
            task.held = Resources::default();
            task.started = false;
            task.cpus_released = false;
            task.ran_on = Some(node);
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.running.insert(t);
        }
        if let Some(j) = self.jobs.get_mut(&job)
            && j.state == JobState::Pending
        {
            j.state = JobState::Running;
        }
        self.send_node(node, down::Msg::Assign(assign));
    }

    // ----- actors -----

    pub fn create_actor(&mut self, session: u64, c: v1::CreateActor) {
        let a = ActorId(c.actor);
        if check_id(session, c.actor).is_err() || self.actors.contains_key(&a) {
            tracing::warn!("session {session}: refused to create {a} (not its id, or taken)");
            return;
        }
        let made = (|| {
            let job = self.live_job(c.job)?;
            let component = self.component_of(&c.component)?;
            let options = ferray_proto::actor_options_from(c.options)?;
            let args = self.check_args(&c.args)?;
            Ok::<_, Error>((job, component, options, args))
        })();
        let (job, component, options, args) = match made {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("session {session}: {a} not created: {e}");
                // Remembered as dead so that calls fail with the reason.
                self.actors.insert(
                    a,
                    ActorEntry {
                        job: JobId(c.job),
                        component: ComponentId::of(&[]),
                        class: c.class,
                        args: vec![],
                        options: ActorOptions::default(),
                        state: AState::Dead(Error::ActorDied(format!("{a} was not created: {e}"))),
                        incarnation: 0,
                        restarts: 0,
                        next_seq: 0,
                        calls: VecDeque::new(),
                        queued: false,
                    },
                );
                return;
            }
        };
        self.actors.insert(
            a,
            ActorEntry {
                job,
                component,
                class: c.class,
                args,
                options,
                state: AState::Pending,
                incarnation: 0,
                restarts: 0,
                next_seq: 0,
                calls: VecDeque::new(),
                queued: false,
            },
        );
        if let Some(j) = self.jobs.get_mut(&job) {
            j.actors.insert(a);
        }
        self.try_ready(Waiter::Actor(a));
    }

    fn start_actor(&mut self, a: ActorId, node: NodeId) {
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
        let msg = v1::StartActor {
            actor: a.0,
            job: actor.job.0,
            incarnation: actor.incarnation,
            component: Bytes::copy_from_slice(actor.component.as_bytes()),
            class: actor.class.clone(),
            args,
            options: Some(ferray_proto::actor_options_to(&ActorOptions {
                // Crashes restart on the node; node losses here.
                max_restarts: actor.options.max_restarts.saturating_sub(actor.restarts),
                ..actor.options.clone()
            })),
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
        self.send_node(node, down::Msg::StartActor(msg));
        self.flush_actor(a);
    }

    pub fn call_actor(&mut self, session: u64, c: v1::CallActor) {
        let t = TaskId(c.task);
        let a = ActorId(c.actor);
        if let Err(e) = check_id(session, c.task) {
            return self.reply_err(session, t, e);
        }
        if self.tasks.contains_key(&t) {
            return self.reply_err(
                session,
                t,
                Error::InvalidArgument(format!("{t} was submitted twice")),
            );
        }
        let args = match self.check_args(&c.args) {
            Ok(a) => a,
            Err(e) => return self.reply_err(session, t, e),
        };
        let Some(actor) = self.actors.get_mut(&a) else {
            return self.reply_err(
                session,
                t,
                Error::NotFound(format!("no {a} in the cluster")),
            );
        };
        if let AState::Dead(e) = &actor.state {
            let e = e.clone();
            return self.reply_err(session, t, e);
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

    /// Send the actor's ready calls, in submission order, while it is alive.
    fn flush_actor(&mut self, a: ActorId) {
        loop {
            let Some(actor) = self.actors.get(&a) else {
                return;
            };
            let AState::Alive(node) = actor.state else {
                return;
            };
            let Some(&t) = actor.calls.front() else {
                return;
            };
            let ready = match self.tasks.get(&t) {
                Some(task) => match task.state {
                    TState::Queued => true,
                    TState::Waiting => false,
                    _ => {
                        // Failed (or gone) before it was sent.
                        if let Some(actor) = self.actors.get_mut(&a) {
                            actor.calls.pop_front();
                        }
                        continue;
                    }
                },
                None => {
                    if let Some(actor) = self.actors.get_mut(&a) {
                        actor.calls.pop_front();
                    }
                    continue;
                }
            };
            if !ready {
                return;
            }
            let (args, method, attempt) = match self.tasks.get(&t) {
                Some(task) => (
                    self.resolve_args(&task.args),
                    match &task.kind {
                        Kind::ActorCall { method, .. } => method.clone(),
                        _ => String::new(),
                    },
                    task.attempts + 1,
                ),
                None => continue,
            };
            let Some(args) = args else {
                // An argument was lost meanwhile: the call waits for it again
                // (and the calls behind it with it).
                if let Some(task) = self.tasks.get_mut(&t) {
                    task.state = TState::Waiting;
                }
                return self.try_ready(Waiter::Task(t));
            };
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
            self.send_node(
                node,
                down::Msg::ActorCall(v1::ActorCall {
                    task: t.0,
                    actor: a.0,
                    incarnation,
                    seq,
                    method,
                    args,
                }),
            );
        }
    }

    /// The actor's node died: restart it elsewhere, or it is dead.
    fn actor_lost(&mut self, a: ActorId, reason: &str) {
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

    fn actor_dead(&mut self, a: ActorId, e: Error) {
        let Some(actor) = self.actors.get_mut(&a) else {
            return;
        };
        let was = std::mem::replace(&mut actor.state, AState::Dead(e.clone()));
        let calls: Vec<TaskId> = actor.calls.drain(..).collect();
        let demand = actor.options.resources.clone();
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

    pub fn actor_died_on_node(&mut self, session: u64, d: v1::ActorDied) {
        let a = ActorId(d.actor);
        let node = self.sessions.get(&session).and_then(|s| s.node);
        let Some(actor) = self.actors.get(&a) else {
            return;
        };
        if actor.incarnation != d.incarnation
            || !matches!(actor.state, AState::Alive(n) if Some(n) == node)
        {
            return;
        }
        self.actor_dead(a, ferray_proto::error_from(d.error));
    }

    pub fn kill_actor(&mut self, a: ActorId, why: &str) -> Result<(), Error> {
        let actor = self
            .actors
            .get(&a)
            .ok_or_else(|| Error::NotFound(format!("no {a} in the cluster")))?;
        if let AState::Alive(node) = actor.state {
            self.send_node(node, down::Msg::StopActor(v1::StopActor { actor: a.0 }));
        }
        self.actor_dead(a, Error::ActorDied(format!("{a} was killed ({why})")));
        Ok(())
    }

    // ----- views -----

    pub fn cluster_state(&self, what: &str) -> v1::ClusterState {
        let mut out = v1::ClusterState {
            head_version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        };
        let mut nodes: Vec<_> = self.nodes.iter().collect();
        nodes.sort_by_key(|(id, _)| **id);
        for (id, n) in nodes {
            if !n.alive && what != "nodes" {
                continue;
            }
            out.nodes.push(v1::NodeInfo {
                id: id.0,
                address: n.address.clone(),
                name: n.name.clone(),
                state: if n.alive { "ALIVE" } else { "DEAD" }.into(),
                total: Some(ferray_proto::resources_to(&n.total)),
                available: self.sched.free(*id).map(ferray_proto::resources_to),
                running: n.running.len() as u64,
            });
        }
        for task in self.tasks.values() {
            *out.task_states
                .entry(task.state_name().to_string())
                .or_default() += 1;
        }
        if what == "tasks" {
            out.tasks.extend(self.history.iter().cloned());
            let mut live: Vec<_> = self.tasks.iter().collect();
            live.sort_by_key(|(id, _)| **id);
            for (id, task) in live {
                let node = task.ran_on.map_or(0, |n| n.0);
                out.tasks.push(v1::TaskInfo {
                    id: id.0,
                    job: task.job.0,
                    function: task.name(),
                    state: task.state_name().to_string(),
                    node,
                    attempts: task.attempts,
                });
            }
        }
        if what == "actors" {
            let mut actors: Vec<_> = self.actors.iter().collect();
            actors.sort_by_key(|(id, _)| **id);
            for (id, a) in actors {
                let (state, node) = match &a.state {
                    AState::Pending => ("PENDING", 0),
                    AState::Alive(n) => ("ALIVE", n.0),
                    AState::Dead(_) => ("DEAD", 0),
                };
                out.actors.push(v1::ActorInfo {
                    id: id.0,
                    job: a.job.0,
                    class: a.class.clone(),
                    state: state.into(),
                    node,
                    restarts: a.restarts,
                });
            }
        }
        if what == "objects" {
            let mut objs: Vec<_> = self.objects.iter().collect();
            objs.sort_by_key(|(id, _)| **id);
            for (id, o) in objs {
                out.objects.push(v1::ObjectInfo {
                    id: id.to_hex(),
                    size: o.size,
                    nodes: o.holders.iter().map(|h| h.0).collect(),
                    inline: o.inline.is_some(),
                    made_by: match o.producer {
                        Some(t) => t.to_string(),
                        None => "put".into(),
                    },
                });
            }
        }
        if what == "jobs" || what.is_empty() {
            let mut jobs: Vec<_> = self.jobs.keys().copied().collect();
            jobs.sort();
            out.jobs = jobs.into_iter().filter_map(|j| self.job_info(j)).collect();
        }
        out
    }
}

/// Waiters for a node.
#[derive(Default)]
struct Queues {
    /// Default placement, grouped by equal demand.
    groups: Vec<(Resources, VecDeque<Waiter>)>,
    /// Spread, node affinity, actors.
    others: VecDeque<Waiter>,
}

enum Dep {
    Task(TaskId),
    Object(ObjectId),
}

enum ArgNow {
    Ready,
    Pending(Dep),
    Failed(Error),
}

fn lost_put(id: &ObjectId) -> Error {
    Error::ObjectLost(format!(
        "object {} was made by put and every copy of it is gone (its node died); \
         put objects cannot be rebuilt",
        id.short()
    ))
}

/// Task and actor ids come from the submitter's own range.
fn check_id(session: u64, id: u64) -> Result<(), Error> {
    if id >> 32 == session && id & 0xffff_ffff != 0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "id {id} is not in this session's range"
        )))
    }
}

fn lost_made(id: &ObjectId, t: TaskId) -> Error {
    Error::ObjectLost(format!(
        "object {} is gone with its node and {t}, which made it, cannot run again",
        id.short()
    ))
}

fn task_demand(kind: &Kind) -> Resources {
    match kind {
        Kind::Task { options, .. } => options.resources.clone(),
        _ => Resources::default(),
    }
}

fn describe(r: &Resources) -> String {
    let mut parts = vec![format!("{} CPUs", r.num_cpus())];
    if r.num_gpus() > 0.0 {
        parts.push(format!("{} GPUs", r.num_gpus()));
    }
    if r.memory() > 0 {
        parts.push(format!("{} bytes of memory", r.memory()));
    }
    for (k, v) in r.custom() {
        parts.push(format!("{v} {k}"));
    }
    parts.join(", ")
}
