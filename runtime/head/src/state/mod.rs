//! The head's tables and what happens to them: sessions, nodes, components,
//! objects (where each one is), tasks (with their lineage), actors and jobs.
//!
//! A pure state machine: events come in as [`Input`]s (a session's
//! messages) and method calls (sessions opening and closing, heartbeat
//! ticks, jobs, pushes, locates); what it asks of the world goes into its
//! [`Outbox`] as [`Effect`]s addressed to sessions, which the edge
//! (`lib.rs`, through `wire.rs`) drains after each change. Nothing here
//! awaits, does I/O or knows the wire format.
//!
//! - `sessions.rs`: sessions, nodes, heartbeats, node death;
//! - `jobs.rs`: jobs, their logs, their end (cancel, kill, free);
//! - `objects.rs`: puts, holders, locate, lineage rebuilds;
//! - `tasks.rs`: submissions, dependencies, attempts and their ends;
//! - `placement.rs`: the queues for nodes, placement and dispatch;
//! - `actors.rs`: actors, their calls, restarts and death;
//! - `views.rs`: what `ferray status` and job watchers read.

mod actors;
mod invariants;
mod io;
mod jobs;
mod objects;
mod placement;
mod rejoin;
mod replay;
mod saved;
mod sessions;
mod tasks;
mod timeline;
mod views;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
#[cfg(test)]
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, ComponentId, Error, JobCaps, JobId, NodeId, ObjectId, Resources, TaskId,
    TaskOptions,
};
use ferray_proto::INLINE_MAX;

use crate::sched::Scheduler;

pub use ferray_core::view::JobState;
pub use io::{
    Acting, ActorAt, ActorCall, ActorDied, Arg, Assign, CallActor, CreateActor, Done, Effect,
    Hello, Input, JobRequest, KillActor, Made, ObjectLoc, Outbox, Outcome, Put, ResolvedArg,
    StartActor, Submit, WorkerHello,
};
pub use rejoin::{LiveActor, REJOIN_WINDOW, Rejoined, RunningAttempt, SessionRecord};
pub use saved::{Counters, JobRecord, Save, Saved, ServeRecord};
pub use timeline::unix_us;
pub use views::{ClusterPage, SampleNumbers, TaskInfo};

/// The head's own store, a holder like a node (clients' large puts).
pub const HEAD_HOLDER: NodeId = NodeId(0);
/// Log lines kept per job (older ones are dropped and counted).
const MAX_JOB_LOG_LINES: usize = 100_000;
/// The bytes of log lines a job keeps (the oldest go first).
pub(crate) const MAX_JOB_LOG_BYTES: usize = 16 << 20;
/// The longest log line kept whole; longer ones are cut.
const MAX_JOB_LOG_LINE: usize = 64 << 10;
/// Inline argument bytes in one assignment, at most (the rest go by holder).
const MAX_INLINE_ARGS: usize = 1 << 20;
/// Finished tasks kept for `ferray list tasks`.
const MAX_HISTORY: usize = 10_000;

/// The tables' hashing: random in the head, fixed in tests (so that a
/// simulation's seed replays it exactly).
#[cfg(not(test))]
type Hasher = std::collections::hash_map::RandomState;
#[cfg(test)]
type Hasher = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
type Map<K, V> = HashMap<K, V, Hasher>;
type Set<K> = HashSet<K, Hasher>;

struct Session {
    node: Option<NodeId>,
    job: Option<JobId>,
    results_key: Option<io::ResultsKey>,
}

impl Session {
    fn new(node: Option<NodeId>, job: Option<JobId>, hello: &Hello) -> Session {
        Session {
            node,
            job,
            results_key: hello.results_key,
        }
    }
}

struct NodeEntry {
    session: u64,
    address: String,
    name: String,
    alive: bool,
    last_seen: Instant,
    /// Tasks and actor calls sent to it and not yet done.
    running: Set<TaskId>,
    /// The timeline's slots of what runs there.
    slots: timeline::Slots,
    actors: Set<ActorId>,
    total: Resources,
}

/// What a task runs: a function, a job's driver, or an actor's method.
#[derive(Clone, Debug)]
pub enum Kind {
    Task {
        component: ComponentId,
        function: String,
        options: TaskOptions,
    },
    Driver {
        component: ComponentId,
        function: String,
        wave_args: Vec<String>,
        /// What it holds while it runs.
        resources: Resources,
    },
    ActorCall {
        actor: ActorId,
        method: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
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
    args: Vec<Arg>,
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
    /// Its submitter has its result (or error) and its job counted it: a
    /// re-run for lineage ends silently.
    resolved: bool,
    /// The object its latest successful attempt made.
    made: Option<ObjectId>,
    /// The dependency whose waiters it is among (while it waits).
    waiting_on: Option<Dep>,
    /// Its attempt that runs, for the timeline.
    open: Option<timeline::Open>,
    /// An actor call its caller sent straight to the actor's node, which
    /// answers it: the head sends no `Resolved` for it unless the caller
    /// asks (`DirectLost`).
    direct: bool,
    /// Its client will not use its result again (`Input::Release`): it is
    /// forgotten once it has ended.
    released: bool,
}

impl TaskEntry {
    fn new(job: JobId, owner: Option<u64>, kind: Kind, args: Vec<Arg>, state: TState) -> Self {
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
            resolved: false,
            made: None,
            waiting_on: None,
            open: None,
            direct: false,
            released: false,
        }
    }

    fn name(&self) -> String {
        match &self.kind {
            Kind::Task { function, .. } | Kind::Driver { function, .. } => function.clone(),
            Kind::ActorCall { actor, method } => format!("{actor}.{method}"),
        }
    }

    /// Whether it runs `f` (`actor-N.method` for an actor call), without
    /// building its name.
    fn function_is(&self, f: &str) -> bool {
        match &self.kind {
            Kind::Task { function, .. } | Kind::Driver { function, .. } => function == f,
            Kind::ActorCall { actor, method } => f
                .strip_suffix(method.as_str())
                .and_then(|a| a.strip_suffix('.'))
                .is_some_and(|a| a == actor.to_string()),
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
    /// The tasks in the table that made it (their latest attempt's
    /// result): a released task's result is freed only when no other did,
    /// and lineage turns to another maker when its producer is forgotten.
    /// A set: thousands of tasks may make the same bytes, and each one's
    /// end removes it.
    makers: BTreeSet<TaskId>,
    /// A `put` of its job's made it too (content addressed): a released
    /// task's result is then kept.
    put: bool,
    /// The results and puts of it the head has seen from each node (a
    /// node counts what it made, so that a free crossing a newer result
    /// on the way leaves that one's copy).
    made_on: BTreeMap<NodeId, u32>,
    jobs: Set<JobId>,
    /// Kept until the head stops (`ferray put`).
    pinned: bool,
    waiters: Vec<Waiter>,
    /// Holders whose copy is on disk (as their heartbeats say).
    spilled_on: BTreeSet<NodeId>,
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
    args: Vec<Arg>,
    options: ActorOptions,
    state: AState,
    incarnation: u32,
    restarts: u32,
    next_seq: u64,
    /// Calls not yet sent to the actor's node, in submission order.
    calls: VecDeque<TaskId>,
    queued: bool,
    /// The dependency whose waiters it is among (while it waits).
    waiting_on: Option<Dep>,
    /// The node that reported it dead (a crash with no restarts left): that
    /// node answers the direct calls it got before.
    died_on: Option<NodeId>,
}

struct JobEntry {
    /// The key of the request that submitted it (empty: none).
    key: String,
    entrypoint: String,
    component: String,
    state: JobState,
    result: String,
    error: String,
    err_value: bool,
    done: u64,
    total: u64,
    logs: VecDeque<String>,
    /// The bytes of `logs`.
    logs_bytes: usize,
    logs_dropped: u64,
    /// Bytes of objects it put (for [`JobCaps::put_bytes`]).
    put_bytes: u64,
    /// Its actors not dead (for [`JobCaps::actors`]).
    live_actors: u64,
    /// What its driver submitted, for a re-run of it.
    replay: replay::Replay,
    start: u64,
    end: u64,
    driver: Option<TaskId>,
    tasks: Set<TaskId>,
    actors: Set<ActorId>,
    objects: Set<ObjectId>,
    /// Components its tasks ran: kept while it lives, also once a released
    /// task is forgotten.
    components: Set<ComponentId>,
}

/// Waiters for a node.
#[derive(Default)]
struct Queues {
    /// Default placement, grouped by equal demand.
    groups: Vec<(Resources, VecDeque<Waiter>)>,
    /// Spread, node affinity, actors.
    others: VecDeque<Waiter>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
pub struct State {
    head_address: String,
    next_session: u64,
    next_node: u64,
    next_job: u64,
    next_head_task: u64,
    sessions: Map<u64, Session>,
    nodes: Map<NodeId, NodeEntry>,
    sched: Scheduler,
    /// Components uploaded to the head, by content id.
    pub components: Map<ComponentId, Bytes>,
    objects: Map<ObjectId, ObjEntry>,
    tasks: Map<TaskId, TaskEntry>,
    actors: Map<ActorId, ActorEntry>,
    jobs: Map<JobId, JobEntry>,
    /// Jobs by the key of the request that submitted them: a request sent
    /// again (its answer lost, to this head or to the one before a restart)
    /// gets the job it made, never a second one.
    job_keys: HashMap<String, JobId>,
    queues: Queues,
    history: VecDeque<TaskInfo>,
    /// Where and when attempts ran.
    timeline: timeline::Timeline,
    /// Finished jobs, oldest first: the head keeps the last
    /// [`JOB_RETENTION`] of them (state, result, logs), then forgets them.
    finished_jobs: VecDeque<JobId>,
    /// Jobs ended so far (a pump that saw one purges the queues).
    jobs_ended: u64,
    /// A waiter was queued since the last placement pass (the scheduler
    /// keeps its own flag for resources and nodes): see [`State::pump`].
    dirty: bool,
    /// Placement passes run (tests count them).
    passes: u64,
    /// Nodes declared dead, oldest first, with when the heartbeat check
    /// first saw them dead: each is forgotten [`State::dead_node_window`]
    /// after that.
    dead_nodes: VecDeque<(NodeId, Option<Instant>)>,
    /// Ends of direct actor calls whose callers' reports have not come yet
    /// (the node's session, the node, the end), at most [`MAX_EARLY_DONES`].
    early_dones: Map<TaskId, (u64, NodeId, Done)>,
    /// How long a dead node stays listed (as dead) before it is forgotten.
    pub dead_node_window: Duration,
    /// When each component the head holds was last uploaded or seen in
    /// use, and the session counter at its upload while no job has used it
    /// yet (see `sweep_components`).
    component_use: Map<ComponentId, ComponentUse>,
    /// How long a component nothing refers to is kept.
    pub component_grace: Duration,
    out: Outbox,
    /// Jobs whose progress or log changed since they were last saved.
    jobs_unsaved: Set<JobId>,
    /// A restarted head waits this long for its workers to join again
    /// before work with no node to go to is infeasible.
    awaiting_nodes_until: Option<Instant>,
    /// What one job may hold (the operator's `--max-job-*`).
    pub job_caps: JobCaps,
    /// A restarted head's wait for the earlier head's sessions.
    rejoin: rejoin::Rejoining,
}

/// How long a dead node stays in `ferray list nodes` (as dead) before the
/// head forgets it.
pub const DEAD_NODE_WINDOW: Duration = Duration::from_secs(300);
/// How long the head keeps a component that no live job, task or actor
/// uses: long enough for a client that uploads and then submits (a client
/// whose session was open at the upload keeps it while it stays open).
pub const COMPONENT_GRACE: Duration = Duration::from_secs(120);

/// What the head knows of a component's use.
#[derive(Clone, Copy, Debug)]
struct ComponentUse {
    /// Uploaded, or last seen in use, at.
    seen: Instant,
    /// While nothing has used it since its upload: the sessions opened
    /// before the upload (ids below this) may still use it.
    before_session: Option<u64>,
}

/// How many finished jobs the head keeps for `ferray job list/status/logs`
/// (Ray keeps a bounded job history too); older ones are forgotten.
pub const JOB_RETENTION: usize = 1_000;

/// What a new session learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub session: u64,
    pub node: Option<NodeId>,
    pub job: Option<JobId>,
}

/// How many ends of direct calls the head keeps for reports still to come
/// (a caller's report normally comes first or within milliseconds).
const MAX_EARLY_DONES: usize = 65_536;

impl State {
    pub fn new(head_address: String) -> Self {
        State {
            head_address,
            next_session: 1,
            next_node: 1,
            next_job: 1,
            next_head_task: 1,
            dead_node_window: DEAD_NODE_WINDOW,
            component_grace: COMPONENT_GRACE,
            ..State::default()
        }
    }

    /// What the state asks of the edge since it was last drained.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// One message of a session. Sessions the head has closed (a node
    /// declared dead) are not heard any more.
    pub fn handle(&mut self, session: u64, input: Input) {
        if !self.sessions.contains_key(&session) {
            return;
        }
        if self.rejoining() {
            // Handled once what the earlier head's sessions had is back.
            self.rejoin.held.push((session, input));
            return;
        }
        match input {
            Input::Heartbeat => {}
            Input::Spills { spilled, restored } => self.spills(session, &spilled, &restored),
            Input::Submit(s) => self.submit(session, s),
            Input::CreateActor(c) => self.create_actor(session, c),
            Input::CallActor(c) => self.call_actor(session, c),
            Input::KillActor(k) => self.kill_for(session, k),
            Input::Cancel { task, acting } => {
                // Another job's task is ignored, as one that does not exist.
                let job = self.acting_job(session, acting);
                if let Ok(job) = job {
                    // A re-run driver's alias stands for the earlier task.
                    let mut ids = [Arg::Task(task)];
                    self.unalias(job, &mut ids);
                    let [Arg::Task(task)] = ids else {
                        return;
                    };
                    if self.tasks.get(&task).is_some_and(|t| t.job == job) {
                        self.cancel(task);
                    }
                }
            }
            Input::Release(tasks) => self.release(session, &tasks),
            Input::Put(p) => {
                if let Err(e) = self.put(session, p) {
                    tracing::warn!("session {session}: a put was refused: {e}");
                }
            }
            Input::Blocked { task, blocked } => self.blocked(session, task, blocked),
            Input::Started(t) => self.started(session, t),
            Input::Output { task, stdout } => self.task_output(session, task, &stdout),
            Input::Done(d) => self.done(session, d),
            Input::Located(id) => self.located(session, id),
            Input::ActorDied(d) => self.actor_died_on_node(session, d),
            Input::DirectLost { tasks, unsent } => {
                self.direct_lost(session, &tasks);
                for c in unsent {
                    self.reroute(session, c);
                }
            }
        }
    }

    /// A message to a session (dropped when the session is gone).
    fn send(&mut self, session: u64, e: Effect) {
        if self.sessions.contains_key(&session) {
            self.out.sent.push((session, e));
        }
    }

    fn send_node(&mut self, node: NodeId, e: Effect) {
        if let Some(n) = self.nodes.get(&node) {
            let session = n.session;
            self.send(session, e);
        }
    }

    /// The node a session is, if it is a worker's.
    fn node_of(&self, session: u64) -> Option<NodeId> {
        self.sessions.get(&session).and_then(|s| s.node)
    }

    /// `locate` may answer differently for this object now.
    fn object_changed(&mut self, id: ObjectId) {
        self.out.objects.push(id);
    }

    /// A job logged, progressed or changed state.
    fn job_changed(&mut self, job: JobId) {
        if self.out.jobs.last() != Some(&job) {
            self.out.jobs.push(job);
            self.jobs_unsaved.insert(job);
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

fn lost_made(id: &ObjectId, t: TaskId) -> Error {
    Error::ObjectLost(format!(
        "object {} is gone with its node and {t}, which made it, cannot run again",
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

/// What an attempt that ends held on its node is given back: its resources
/// once it started, else its place in the node's backlog (actor calls take
/// neither).
fn give_back(sched: &mut Scheduler, task: &TaskEntry, node: NodeId) {
    if task.started {
        sched.release(node, &task.held);
    } else if !matches!(task.kind, Kind::ActorCall { .. }) {
        sched.unassign(node);
    }
}

fn task_demand(kind: &Kind) -> Resources {
    match kind {
        Kind::Task { options, .. } => options.resources.clone(),
        Kind::Driver { resources, .. } => resources.clone(),
        Kind::ActorCall { .. } => Resources::default(),
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
