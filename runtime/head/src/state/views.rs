//! What the head shows: `ferray status` and `list` (the cluster's state),
//! jobs' information and logs for their watchers.

pub use ferray_core::view::{
    ActorInfo, ClusterView, JobInfo, ListFilter, NodeInfo, ObjectInfo, TaskInfo,
};
use ferray_core::{ActorId, Error, JobId, NodeId, ObjectId, TaskId, cut_text};

use super::{AState, ActorEntry, NodeEntry, State, TaskEntry};

/// The most entries of one list in one page of the cluster's state (a
/// request may ask for fewer): a page stays well under the protocol's
/// message cap.
pub const MAX_PAGE: usize = 1_000;
/// The longest text of one field (a job's entrypoint, result or error, a
/// function's or class's name) in a list; longer text is cut (`ferray job
/// status` shows a job's whole result).
pub const LIST_TEXT_MAX: usize = 1_024;

/// A page of the cluster's state, and the cursor of the next (`None`: this
/// was the last).
pub struct ClusterPage {
    pub view: ClusterView,
    pub next: Option<String>,
}

/// `text` cut to [`LIST_TEXT_MAX`] bytes (at a character boundary, marked
/// as cut); only what is kept is copied.
pub(super) fn clip(text: &str) -> String {
    if text.len() <= LIST_TEXT_MAX {
        return text.to_string();
    }
    let mut end = LIST_TEXT_MAX + 1;
    while !text.is_char_boundary(end) {
        end += 1;
    }
    let mut kept = text[..end].to_string();
    cut_text(&mut kept, LIST_TEXT_MAX);
    kept
}

/// The first `limit` entries past `after` in key order, and the key to
/// continue after when more remain. Entries are references until they are
/// chosen, so a page costs a pass over the table, not a copy of it.
fn page<K: Ord + Copy, R>(
    entries: impl Iterator<Item = (K, R)>,
    after: Option<K>,
    limit: usize,
) -> (Vec<(K, R)>, Option<K>) {
    let mut v: Vec<(K, R)> = entries
        .filter(|(k, _)| after.is_none_or(|a| *k > a))
        .collect();
    let more = v.len() > limit;
    if more {
        v.select_nth_unstable_by_key(limit, |(k, _)| *k);
        v.truncate(limit);
    }
    v.sort_unstable_by_key(|(k, _)| *k);
    let next = if more {
        v.last().map(|(k, _)| *k)
    } else {
        None
    };
    (v, next)
}

fn live_task_info(id: TaskId, task: &TaskEntry) -> TaskInfo {
    TaskInfo {
        id,
        job: task.job,
        function: task.name(),
        state: task.state_name().into(),
        node: task.ran_on,
        attempts: task.attempts,
    }
}

fn actor_info(id: ActorId, a: &ActorEntry) -> ActorInfo {
    let (state, node) = match &a.state {
        AState::Pending => ("PENDING", None),
        AState::Alive(n) => ("ALIVE", Some(*n)),
        AState::Dead(_) => ("DEAD", None),
    };
    ActorInfo {
        id,
        job: a.job,
        class: clip(&a.class),
        state: state.into(),
        node,
        restarts: a.restarts,
    }
}

/// A counter id's cursor (what a previous page's `next` said).
fn counter(after: &str) -> Result<Option<u64>, Error> {
    if after.is_empty() {
        return Ok(None);
    }
    after
        .parse()
        .map(Some)
        .map_err(|_| Error::InvalidArgument(format!("`{after}` is not a cursor of this list")))
}

impl State {
    /// One page of the cluster's state. `what`: nodes, tasks, actors,
    /// objects, jobs, or empty for a summary (the live nodes and the tasks
    /// by state, with a page of the jobs). Entries come in id order;
    /// `after` is the previous page's `next` (empty for the first page);
    /// `limit` is capped at [`MAX_PAGE`] (0: that many).
    pub fn cluster_page(
        &self,
        what: &str,
        after: &str,
        limit: usize,
    ) -> Result<ClusterPage, Error> {
        self.cluster_page_where(what, after, limit, &ListFilter::default())
    }

    /// [`State::cluster_page`] of what `filter` keeps: tasks of a job, a
    /// state, a function; actors of a job; spans (`spans`: attempts, in
    /// the order they started) of a job. Jobs, nodes and objects are not
    /// filtered.
    pub fn cluster_page_where(
        &self,
        what: &str,
        after: &str,
        limit: usize,
        filter: &ListFilter,
    ) -> Result<ClusterPage, Error> {
        let limit = if limit == 0 {
            MAX_PAGE
        } else {
            limit.min(MAX_PAGE)
        };
        let mut out = ClusterView {
            head_version: env!("CARGO_PKG_VERSION").to_string(),
            ..ClusterView::default()
        };
        let next = match what {
            "nodes" => {
                let after = counter(after)?.map(NodeId);
                let (nodes, next) = page(self.nodes.iter().map(|(k, n)| (*k, n)), after, limit);
                out.nodes = nodes
                    .into_iter()
                    .map(|(id, n)| self.node_info(id, n))
                    .collect();
                next.map(|k| k.0.to_string())
            }
            "tasks" => {
                let after = counter(after)?.map(TaskId);
                // Finished tasks of ended jobs (the history) and the live
                // ones: an id is in one or the other.
                enum T<'a> {
                    Past(&'a TaskInfo),
                    Live(&'a TaskEntry),
                }
                let job_ok = |j: JobId| filter.job.is_none_or(|f| f == j);
                let state_ok = |s: &str| filter.state.as_deref().is_none_or(|f| f == s);
                let function_ok = |f: &str| filter.function.as_deref().is_none_or(|w| w == f);
                let past = self
                    .history
                    .iter()
                    .filter(|t| job_ok(t.job) && state_ok(&t.state) && function_ok(&t.function))
                    .map(|t| (t.id, T::Past(t)));
                let live = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| {
                        job_ok(t.job)
                            && state_ok(t.state_name())
                            && filter.function.as_deref().is_none_or(|f| t.function_is(f))
                    })
                    .map(|(id, t)| (*id, T::Live(t)));
                let (tasks, next) = page(past.chain(live), after, limit);
                out.tasks = tasks
                    .into_iter()
                    .map(|(id, t)| {
                        let info = match t {
                            T::Past(info) => info.clone(),
                            T::Live(task) => live_task_info(id, task),
                        };
                        TaskInfo {
                            function: clip(&info.function),
                            ..info
                        }
                    })
                    .collect();
                next.map(|k| k.0.to_string())
            }
            "actors" => {
                let after = counter(after)?.map(ActorId);
                let mine = self
                    .actors
                    .iter()
                    .filter(|(_, a)| filter.job.is_none_or(|j| j == a.job));
                let (actors, next) = page(mine.map(|(k, a)| (*k, a)), after, limit);
                out.actors = actors
                    .into_iter()
                    .map(|(id, a)| actor_info(id, a))
                    .collect();
                next.map(|k| k.0.to_string())
            }
            "objects" => {
                let after = if after.is_empty() {
                    None
                } else {
                    Some(after.parse::<ObjectId>().map_err(|_| {
                        Error::InvalidArgument(format!("`{after}` is not a cursor of this list"))
                    })?)
                };
                let (objs, next) = page(self.objects.iter().map(|(k, o)| (*k, o)), after, limit);
                out.objects = objs
                    .into_iter()
                    .map(|(id, o)| ObjectInfo {
                        id,
                        size: o.size,
                        nodes: o.holders.iter().copied().collect(),
                        inline: o.inline.is_some(),
                        made_by: o.producer,
                        spilled: o
                            .spilled_on
                            .iter()
                            .filter(|n| o.holders.contains(n))
                            .copied()
                            .collect(),
                    })
                    .collect();
                next.map(|k| k.to_hex())
            }
            "spans" => {
                let after = counter(after)?;
                let job = filter.job;
                let (spans, next) = page(
                    self.spans_where(move |j, _| job.is_none_or(|f| f == j)),
                    after,
                    limit,
                );
                out.spans = spans.into_iter().map(|(_, s)| s.to_span()).collect();
                next.map(|k| k.to_string())
            }
            "jobs" | "" => {
                let after = counter(after)?.map(JobId);
                let (jobs, next) = page(self.jobs.keys().map(|k| (*k, ())), after, limit);
                out.jobs = jobs
                    .into_iter()
                    .filter_map(|(id, ())| self.job_info(id))
                    .map(|j| JobInfo {
                        entrypoint: clip(&j.entrypoint),
                        result: clip(&j.result),
                        error: clip(&j.error),
                        ..j
                    })
                    .collect();
                next.map(|k| k.0.to_string())
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "cannot list `{other}`: expected nodes, tasks, actors, objects, jobs or spans"
                )));
            }
        };
        // The first page also carries the summary: the live nodes (when
        // not listing nodes) and the tasks by state.
        if after.is_empty() {
            if what != "nodes" {
                let mut nodes: Vec<_> = self.nodes.iter().filter(|(_, n)| n.alive).collect();
                nodes.sort_by_key(|(id, _)| **id);
                out.nodes = nodes
                    .into_iter()
                    .map(|(id, n)| self.node_info(*id, n))
                    .collect();
            }
            for task in self.tasks.values() {
                *out.task_states
                    .entry(task.state_name().to_string())
                    .or_default() += 1;
            }
        }
        Ok(ClusterPage { view: out, next })
    }

    /// The whole of one list (or the summary), every page joined (tests).
    #[cfg(test)]
    pub fn cluster_state(&self, what: &str) -> ClusterView {
        let mut all = ClusterView::default();
        let mut after = String::new();
        loop {
            let p = self.cluster_page(what, &after, 0).expect("a page");
            if after.is_empty() {
                all.task_states = p.view.task_states;
                all.head_version = p.view.head_version;
            }
            all.nodes.extend(p.view.nodes);
            all.tasks.extend(p.view.tasks);
            all.actors.extend(p.view.actors);
            all.objects.extend(p.view.objects);
            all.jobs.extend(p.view.jobs);
            match p.next {
                Some(n) => after = n,
                None => return all,
            }
        }
    }

    fn node_info(&self, id: NodeId, n: &NodeEntry) -> NodeInfo {
        NodeInfo {
            id,
            address: n.address.clone(),
            name: clip(&n.name),
            alive: n.alive,
            total: n.total.clone(),
            available: self.sched.free(id).cloned(),
            running: n.running.len() as u64,
        }
    }

    pub fn job_info(&self, id: JobId) -> Option<JobInfo> {
        self.jobs.get(&id).map(|j| JobInfo {
            job: id,
            state: j.state,
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
}

/// The cluster in numbers, as `/metrics` shows it: read from the tables
/// when asked (nothing is counted twice).
#[derive(Debug, Default)]
pub struct Counts {
    /// The tasks `ferray list tasks` lists (the live ones and the kept
    /// history), by state.
    pub tasks: std::collections::BTreeMap<String, u64>,
    /// Actors of live jobs, by state.
    pub actors: std::collections::BTreeMap<&'static str, u64>,
    /// Jobs the head keeps, by state.
    pub jobs: std::collections::BTreeMap<&'static str, u64>,
    pub nodes_alive: u64,
    /// Dead nodes still listed.
    pub nodes_dead: u64,
    /// Each live node's resources: total and free.
    pub resources: Vec<(NodeId, ferray_core::Resources, ferray_core::Resources)>,
    /// Objects in the head's table.
    pub objects: u64,
    /// The bytes of the objects each holder keeps for the cluster (the
    /// head's own store is [`super::HEAD_HOLDER`]).
    pub object_bytes: std::collections::BTreeMap<NodeId, u64>,
}

impl State {
    /// The cluster in numbers (`/metrics`): one pass over each table.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in self.tasks.values() {
            *c.tasks.entry(t.state_name().to_string()).or_default() += 1;
        }
        for t in &self.history {
            *c.tasks.entry(t.state.to_string()).or_default() += 1;
        }
        for a in self.actors.values() {
            let s = match a.state {
                AState::Pending => "PENDING",
                AState::Alive(_) => "ALIVE",
                AState::Dead(_) => "DEAD",
            };
            *c.actors.entry(s).or_default() += 1;
        }
        for j in self.jobs.values() {
            *c.jobs.entry(j.state.name()).or_default() += 1;
        }
        let mut nodes: Vec<_> = self.nodes.iter().collect();
        nodes.sort_by_key(|(id, _)| **id);
        for (id, n) in nodes {
            if !n.alive {
                c.nodes_dead += 1;
                continue;
            }
            c.nodes_alive += 1;
            let free = self.sched.free(*id).cloned().unwrap_or_default();
            c.resources.push((*id, n.total.clone(), free));
        }
        c.objects = self.objects.len() as u64;
        for o in self.objects.values() {
            for h in &o.holders {
                *c.object_bytes.entry(*h).or_default() += o.size;
            }
        }
        c
    }

    /// A job's driver task, while the head keeps the job.
    pub fn job_driver(&self, id: JobId) -> Option<TaskId> {
        self.jobs.get(&id).and_then(|j| j.driver)
    }

    /// A live task's state (`None`: not in the live table), for the edge's
    /// timing of scheduling and run time.
    pub fn task_state(&self, id: TaskId) -> Option<&'static str> {
        self.tasks.get(&id).map(|t| t.state_name())
    }
}

/// A node as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub info: NodeInfo,
    /// Since its last message (a live node's heartbeat).
    pub heartbeat_age: std::time::Duration,
    /// Objects of the cluster it holds, and their bytes.
    pub objects: u64,
    pub object_bytes: u64,
}

/// The numbers of one point of the dashboard's charts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SampleNumbers {
    /// Attempts ended since the head started.
    pub attempts_ended: u64,
    /// Bytes of objects held, every copy counted.
    pub object_bytes: u64,
    pub cpus_used: f64,
    pub cpus_total: f64,
}

/// Why an actor died, cut.
pub struct ActorDetail {
    pub info: ActorInfo,
    pub error: String,
}

impl State {
    /// The `n` newest jobs, newest first.
    pub fn recent_jobs(&self, n: usize) -> Vec<JobInfo> {
        let mut ids: Vec<JobId> = self.jobs.keys().copied().collect();
        if ids.len() > n {
            ids.select_nth_unstable_by(n, |a, b| b.cmp(a));
            ids.truncate(n);
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.into_iter().filter_map(|id| self.job_info(id)).collect()
    }

    /// One task, live or in the history.
    pub fn task_info(&self, id: TaskId) -> Option<TaskInfo> {
        if let Some(t) = self.tasks.get(&id) {
            return Some(live_task_info(id, t));
        }
        self.history.iter().rev().find(|t| t.id == id).cloned()
    }

    /// One actor of a live job, and why it died.
    pub fn actor_detail(&self, id: ActorId) -> Option<ActorDetail> {
        let a = self.actors.get(&id)?;
        let error = match &a.state {
            AState::Dead(e) => clip(&e.to_string()),
            _ => String::new(),
        };
        Some(ActorDetail {
            info: actor_info(id, a),
            error,
        })
    }

    /// A job's tasks by state (live and in the history).
    pub fn job_task_states(&self, job: JobId) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for t in self.tasks.values().filter(|t| t.job == job) {
            *out.entry(t.state_name().to_string()).or_default() += 1;
        }
        for t in self.history.iter().filter(|t| t.job == job) {
            *out.entry(t.state.to_string()).or_default() += 1;
        }
        out
    }

    /// Every node the head lists, in id order, with its heartbeat's age
    /// and the objects it holds.
    pub fn node_rows(&self, now: std::time::Instant) -> Vec<NodeRow> {
        let mut held: std::collections::BTreeMap<NodeId, (u64, u64)> = Default::default();
        for o in self.objects.values() {
            for h in &o.holders {
                let e = held.entry(*h).or_default();
                e.0 += 1;
                e.1 += o.size;
            }
        }
        let mut nodes: Vec<_> = self.nodes.iter().collect();
        nodes.sort_by_key(|(id, _)| **id);
        nodes
            .into_iter()
            .map(|(id, n)| {
                let (objects, object_bytes) = held.get(id).copied().unwrap_or_default();
                NodeRow {
                    info: self.node_info(*id, n),
                    heartbeat_age: now.saturating_duration_since(n.last_seen),
                    objects,
                    object_bytes,
                }
            })
            .collect()
    }

    /// The numbers of a point of the dashboard's charts.
    pub fn sample_numbers(&self) -> SampleNumbers {
        let mut s = SampleNumbers {
            attempts_ended: self.attempts_ended(),
            ..SampleNumbers::default()
        };
        for o in self.objects.values() {
            s.object_bytes += o.size * o.holders.len() as u64;
        }
        for (id, n) in &self.nodes {
            if !n.alive {
                continue;
            }
            let total = n.total.num_cpus();
            let free = self.sched.free(*id).map_or(total, |f| f.num_cpus());
            s.cpus_total += total;
            s.cpus_used += (total - free).max(0.0);
        }
        s
    }

    /// A job's attempts the head keeps, in the order they started (its
    /// timeline), at most [`super::timeline::MAX_SPANS`].
    pub fn job_spans(&self, job: JobId) -> Vec<ferray_core::view::Span> {
        let mut v: Vec<_> = self
            .spans_where(move |j, _| j == job)
            .map(|(_, s)| s.to_span())
            .collect();
        v.sort_by_key(|s| s.seq);
        v
    }

    /// The names of the nodes the head lists (their name, else address).
    pub fn node_names(&self) -> std::collections::BTreeMap<NodeId, String> {
        self.nodes
            .iter()
            .map(|(id, n)| {
                let name = if n.name.is_empty() {
                    &n.address
                } else {
                    &n.name
                };
                (*id, clip(name))
            })
            .collect()
    }
}
