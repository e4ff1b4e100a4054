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
    /// The holders whose copy is on disk (spilled), not in memory.
    #[serde(default)]
    pub spilled: Vec<NodeId>,
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
    /// Attempts, for a job's timeline.
    pub spans: Vec<Span>,
    /// Live tasks by state.
    pub task_states: BTreeMap<String, u64>,
    /// The head's version.
    pub head_version: String,
}

/// What a list of the cluster's state keeps (each unset part keeps all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Tasks, actors and spans of this job.
    pub job: Option<JobId>,
    /// Tasks in this state (as [`TaskInfo::state`] names it).
    pub state: Option<String>,
    /// Tasks of this function (`actor-N.method` for actor calls).
    pub function: Option<String>,
}

/// One attempt of a task or actor call on a node, for the timeline: where
/// it ran (a row per node and slot), when, and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// The attempt's place in the order attempts started (the cursor of a
    /// page of spans).
    pub seq: u64,
    pub task: TaskId,
    pub job: JobId,
    pub attempt: u32,
    /// The function, or `actor-N.method` for an actor call.
    pub function: String,
    pub node: NodeId,
    /// The node's slot: the lowest one free when the attempt started.
    pub slot: u32,
    pub start_unix_us: u64,
    /// 0 while it runs.
    pub end_unix_us: u64,
    /// RUNNING, FINISHED, ERR_VALUE (it returned `err(..)`), FAILED, LOST
    /// (its node died) or CANCELLED.
    pub outcome: Cow<'static, str>,
    /// Why it failed (cut to 1 KiB).
    pub error: String,
}

impl Span {
    /// Whether the attempt ended otherwise than with a value.
    pub fn failed(&self) -> bool {
        !matches!(&*self.outcome, "RUNNING" | "FINISHED")
    }
}

/// The spans as a Chrome trace (the JSON that Perfetto, `chrome://tracing`
/// and speedscope read): a process per node (named by `nodes`), a thread
/// per slot, a complete event per attempt with its function as its name;
/// a failed attempt is coloured red and says why in its arguments, and an
/// attempt still running ends at `now_unix_us`.
pub fn chrome_trace(spans: &[Span], nodes: &BTreeMap<NodeId, String>, now_unix_us: u64) -> String {
    use std::fmt::Write as _;
    // Written by hand (the core does no I/O and needs no JSON library):
    // every string goes through `json_str`.
    let mut out = String::with_capacity(64 + spans.len() * 200);
    out.push_str("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::replace(&mut first, false) {
            out.push(',');
        }
    };
    let mut slots: std::collections::BTreeSet<(NodeId, u32)> = Default::default();
    for s in spans {
        slots.insert((s.node, s.slot));
    }
    let mut named: std::collections::BTreeSet<NodeId> = Default::default();
    for (node, slot) in &slots {
        if named.insert(*node) {
            let name = match nodes.get(node) {
                Some(n) if !n.is_empty() => format!("{node} ({n})"),
                _ => node.to_string(),
            };
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{},\"tid\":0,\"args\":{{\"name\":{}}}}}",
                node.0,
                json_str(&name)
            );
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{},\"tid\":0,\"args\":{{\"sort_index\":{}}}}}",
                node.0, node.0
            );
        }
        sep(&mut out);
        let _ = write!(
            out,
            "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{slot},\"args\":{{\"name\":\"slot {slot}\"}}}}",
            node.0
        );
    }
    for s in spans {
        let end = if s.end_unix_us == 0 {
            now_unix_us
        } else {
            s.end_unix_us
        };
        sep(&mut out);
        let _ = write!(
            out,
            "{{\"ph\":\"X\",\"cat\":\"task\",\"name\":{},\"pid\":{},\"tid\":{},\"ts\":{},\"dur\":{},",
            json_str(&s.function),
            s.node.0,
            s.slot,
            s.start_unix_us,
            end.saturating_sub(s.start_unix_us),
        );
        if s.failed() {
            out.push_str("\"cname\":\"terrible\",");
        }
        let _ = write!(
            out,
            "\"args\":{{\"task\":\"{}\",\"job\":\"{}\",\"attempt\":{},\"outcome\":{}",
            s.task,
            s.job,
            s.attempt,
            json_str(&s.outcome)
        );
        if !s.error.is_empty() {
            let _ = write!(out, ",\"error\":{}", json_str(&s.error));
        }
        out.push_str("}}");
    }
    out.push_str("]}");
    out
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(seq: u64, node: u64, slot: u32, outcome: &'static str, error: &str) -> Span {
        Span {
            seq,
            task: TaskId(seq),
            job: JobId(1),
            attempt: 1,
            function: "f\"un\nc\u{1}".into(),
            node: NodeId(node),
            slot,
            start_unix_us: 1_000 * seq,
            end_unix_us: if outcome == "RUNNING" {
                0
            } else {
                1_000 * seq + 500
            },
            outcome: outcome.into(),
            error: error.into(),
        }
    }

    #[test]
    fn a_chrome_trace_is_json_with_a_row_per_node_and_slot() {
        let spans = [
            span(1, 2, 0, "FINISHED", ""),
            span(2, 2, 1, "FAILED", "trap: \"unreachable\""),
            span(3, 5, 0, "RUNNING", ""),
        ];
        let names = BTreeMap::from([(NodeId(2), "w\"1".to_string())]);
        let text = chrome_trace(&spans, &names, 9_000);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let events = v["traceEvents"].as_array().expect("events");
        let meta = |name: &str| {
            events
                .iter()
                .filter(|e| e["ph"] == "M" && e["name"] == name)
                .map(|e| {
                    (
                        e["pid"].as_u64().unwrap_or(0),
                        e["tid"].as_u64().unwrap_or(0),
                        e["args"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(meta("process_name").len(), 2);
        assert_eq!(meta("process_name")[0].2["name"], "node-2 (w\"1)");
        assert_eq!(meta("thread_name").len(), 3, "a row per node and slot");
        let x: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 3);
        assert_eq!(x[0]["name"], "f\"un\nc\u{1}");
        assert_eq!(x[0]["dur"], 500);
        assert!(x[0].get("cname").is_none());
        assert_eq!(x[1]["cname"], "terrible", "a failure is marked");
        assert_eq!(x[1]["args"]["error"], "trap: \"unreachable\"");
        assert_eq!(x[1]["tid"], 1);
        // Still running: it ends now.
        assert_eq!(x[2]["dur"], 9_000 - 3_000);
        assert_eq!(x[2]["pid"], 5);
    }
}

/// A serve deployment as it runs: its replicas and counters (the proxy's
/// `/-/status`, `ferray serve status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServeDeployment {
    pub name: String,
    pub route_prefix: String,
    /// `http` (a `wasi:http` handler) or `replica` (a stateful replica).
    #[serde(default)]
    pub kind: String,
    pub replicas: u32,
    pub ongoing_requests: u32,
    /// Requests answered (any status), refused for overload, failed (5xx).
    pub requests: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Replicas started and stopped since the deployment's version started.
    pub replicas_started: u64,
    pub replicas_stopped: u64,
}

/// A cluster's serve application: where its proxy listens and its
/// deployments; no proxy when none runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServeStatus {
    /// The proxy's URL (`http://host:port`); empty when no application runs.
    pub proxy: String,
    pub deployments: Vec<ServeDeployment>,
    /// Every worker node runs a proxy too (`proxy_location = "EveryNode"`),
    /// on this host and port of its machine, with these limits.
    #[serde(default)]
    pub every_node: bool,
    #[serde(default)]
    pub http_host: String,
    #[serde(default)]
    pub http_port: u16,
    /// Milliseconds; 0: none.
    #[serde(default)]
    pub request_timeout_ms: u64,
    #[serde(default)]
    pub max_request_body: u64,
    /// The proxies take requests without the cluster token (`http.public`).
    #[serde(default)]
    pub public: bool,
}

/// An application to deploy on a cluster: its file's text and, for each
/// deployment by name, its component's bytes (uploaded before, by id).
#[derive(Clone, Debug)]
pub struct ServeApp {
    /// The application file (TOML), as written.
    pub text: String,
    /// Where it came from, for messages (its path on the deploying machine).
    pub origin: String,
    pub components: BTreeMap<String, bytes::Bytes>,
    /// `--proxy-location`, over the file's `proxy_location` (empty: the
    /// file's).
    pub proxy_location: String,
}
