//! What the head shows: `ferray status` and `list` (the cluster's state),
//! jobs' information and logs for their watchers.

use ferray_core::JobId;
pub use ferray_core::view::{ActorInfo, ClusterView, JobInfo, NodeInfo, ObjectInfo, TaskInfo};

use super::{AState, State};

impl State {
    /// `what`: nodes, tasks, actors, objects, jobs, or empty for a summary.
    pub fn cluster_state(&self, what: &str) -> ClusterView {
        let mut out = ClusterView {
            head_version: env!("CARGO_PKG_VERSION").to_string(),
            ..ClusterView::default()
        };
        let mut nodes: Vec<_> = self.nodes.iter().collect();
        nodes.sort_by_key(|(id, _)| **id);
        for (id, n) in nodes {
            if !n.alive && what != "nodes" {
                continue;
            }
            out.nodes.push(NodeInfo {
                id: *id,
                address: n.address.clone(),
                name: n.name.clone(),
                alive: n.alive,
                total: n.total.clone(),
                available: self.sched.free(*id).cloned(),
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
                out.tasks.push(TaskInfo {
                    id: *id,
                    job: task.job,
                    function: task.name(),
                    state: task.state_name().into(),
                    node: task.ran_on,
                    attempts: task.attempts,
                });
            }
        }
        if what == "actors" {
            let mut actors: Vec<_> = self.actors.iter().collect();
            actors.sort_by_key(|(id, _)| **id);
            for (id, a) in actors {
                let (state, node) = match &a.state {
                    AState::Pending => ("PENDING", None),
                    AState::Alive(n) => ("ALIVE", Some(*n)),
                    AState::Dead(_) => ("DEAD", None),
                };
                out.actors.push(ActorInfo {
                    id: *id,
                    job: a.job,
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
                out.objects.push(ObjectInfo {
                    id: *id,
                    size: o.size,
                    nodes: o.holders.iter().copied().collect(),
                    inline: o.inline.is_some(),
                    made_by: o.producer,
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
