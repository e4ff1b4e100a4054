//! What a cluster shows of itself: jobs, nodes, tasks, actors and objects as
//! `ferray status`, `ferray list`, `ferray job` and embedders read them.
//! Plain data: the head builds them, the protocol carries them, clients read
//! them; no layer above the protocol sees its messages.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ActorId, JobId, NodeId, ObjectId, Resources, TaskId};

/// A job's state, as Ray's job states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Stopped => "STOPPED",
        }
    }

    /// The state named `name` (as [`JobState::name`] writes it).
    pub fn from_name(name: &str) -> Option<JobState> {
        [
            JobState::Pending,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Stopped,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    pub fn finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Stopped
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A job as its watchers see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job: JobId,
    pub state: JobState,
    /// The driver's function and arguments.
    pub entrypoint: String,
    /// The component's digest (hex).
    pub component: String,
    /// The driver's result as WAVE text (once it succeeded).
    pub result: String,
    pub error: String,
    pub tasks_done: u64,
    pub tasks_total: u64,
    /// The driver returned `err(..)`.
    pub err_value: bool,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
}

/// What a job's watcher hears.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    /// A line its tasks printed.
    Log(String),
    Progress {
        done: u64,
        total: u64,
    },
    /// It ended.
    Finished(JobInfo),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub address: String,
    pub name: String,
    pub alive: bool,
    pub total: Resources,
    /// What the scheduler sees free (a live node's).
    pub available: Option<Resources>,
    /// Tasks running there.
    pub running: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: TaskId,
    pub job: JobId,
    pub function: String,
    /// QUEUED, WAITING, RUNNING, FINISHED, FAILED, ... (the head's names
    /// are static: recording a finished task allocates no text for it).
    pub state: Cow<'static, str>,
    /// The node of its latest attempt.
    pub node: Option<NodeId>,
    pub attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActorInfo {
    pub id: ActorId,
    pub job: JobId,
    pub class: String,
    /// PENDING, ALIVE or DEAD.
    pub state: Cow<'static, str>,
    pub node: Option<NodeId>,
    pub restarts: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub id: ObjectId,
    pub size: u64,
    /// The nodes that hold it.
    pub nodes: Vec<NodeId>,
    /// Kept by the head itself (small, or a client's put).
    pub inline: bool,
    /// `None`: made by `put`.
    pub made_by: Option<TaskId>,
}

/// The cluster's state: what `ferray status` and `ferray list` show. Each
/// list is filled only when asked for (the summary has the live nodes, the
/// jobs and the tasks by state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeInfo>,
    pub tasks: Vec<TaskInfo>,
    pub actors: Vec<ActorInfo>,
    pub objects: Vec<ObjectInfo>,
    pub jobs: Vec<JobInfo>,
    /// Live tasks by state.
    pub task_states: BTreeMap<String, u64>,
    /// The head's version.
    pub head_version: String,
}
