//! The cluster's views (`ferray_core::view`) to and from their messages: the
//! head writes them, clients read them, and neither side sees the other's.

use ferray_core::view::{
    ActorInfo, ClusterView, JobEvent, JobInfo, JobState, NodeInfo, ObjectInfo, Span, TaskInfo,
};
use ferray_core::{ActorId, Error, JobId, NodeId, TaskId};

use crate::{resources_from, resources_to, v1};

pub fn job_info_to(j: JobInfo) -> v1::JobInfo {
    v1::JobInfo {
        job: j.job.0,
        state: j.state.name().to_string(),
        entrypoint: j.entrypoint,
        component: j.component,
        result: j.result,
        error: j.error,
        tasks_done: j.tasks_done,
        tasks_total: j.tasks_total,
        err_value: j.err_value,
        start_unix_ms: j.start_unix_ms,
        end_unix_ms: j.end_unix_ms,
    }
}

pub fn job_info_from(j: v1::JobInfo) -> Result<JobInfo, Error> {
    let state = JobState::from_name(&j.state).ok_or_else(|| {
        Error::System(format!("the head sent an unknown job state `{}`", j.state))
    })?;
    Ok(JobInfo {
        job: JobId(j.job),
        state,
        entrypoint: j.entrypoint,
        component: j.component,
        result: j.result,
        error: j.error,
        tasks_done: j.tasks_done,
        tasks_total: j.tasks_total,
        err_value: j.err_value,
        start_unix_ms: j.start_unix_ms,
        end_unix_ms: j.end_unix_ms,
    })
}

pub fn job_event_to(e: JobEvent) -> v1::JobEvent {
    use v1::job_event::Event;
    v1::JobEvent {
        event: Some(match e {
            JobEvent::Log(l) => Event::Log(l),
            JobEvent::Progress { done, total } => Event::Progress(v1::Progress { done, total }),
            JobEvent::Finished(j) => Event::Finished(job_info_to(j)),
        }),
    }
}

/// `None` for an event of a kind this version does not know.
pub fn job_event_from(e: v1::JobEvent) -> Result<Option<JobEvent>, Error> {
    use v1::job_event::Event;
    Ok(match e.event {
        Some(Event::Log(l)) => Some(JobEvent::Log(l)),
        Some(Event::Progress(p)) => Some(JobEvent::Progress {
            done: p.done,
            total: p.total,
        }),
        Some(Event::Finished(j)) => Some(JobEvent::Finished(job_info_from(j)?)),
        None => None,
    })
}

fn node(id: u64) -> Option<NodeId> {
    (id != 0).then_some(NodeId(id))
}

/// A page of the cluster's state; `next` is the cursor of the page after
/// it (`None`: it was the last).
pub fn cluster_view_to(v: ClusterView, next: Option<String>) -> v1::ClusterState {
    v1::ClusterState {
        next: next.unwrap_or_default(),
        head_version: v.head_version,
        nodes: v
            .nodes
            .into_iter()
            .map(|n| v1::NodeInfo {
                id: n.id.0,
                address: n.address,
                name: n.name,
                state: if n.alive { "ALIVE" } else { "DEAD" }.into(),
                total: Some(resources_to(&n.total)),
                available: n.available.as_ref().map(resources_to),
                running: n.running,
            })
            .collect(),
        tasks: v
            .tasks
            .into_iter()
            .map(|t| v1::TaskInfo {
                id: t.id.0,
                job: t.job.0,
                function: t.function,
                state: t.state.into_owned(),
                node: t.node.map_or(0, |n| n.0),
                attempts: t.attempts,
            })
            .collect(),
        actors: v
            .actors
            .into_iter()
            .map(|a| v1::ActorInfo {
                id: a.id.0,
                job: a.job.0,
                class: a.class,
                state: a.state.into_owned(),
                node: a.node.map_or(0, |n| n.0),
                restarts: a.restarts,
            })
            .collect(),
        objects: v
            .objects
            .into_iter()
            .map(|o| v1::ObjectInfo {
                id: o.id.to_hex(),
                size: o.size,
                nodes: o.nodes.iter().map(|n| n.0).collect(),
                inline: o.inline,
                made_by: match o.made_by {
                    Some(t) => t.0.to_string(),
                    None => "put".into(),
                },
                spilled: o.spilled.iter().map(|n| n.0).collect(),
            })
            .collect(),
        jobs: v.jobs.into_iter().map(job_info_to).collect(),
        task_states: v.task_states.into_iter().collect(),
        spans: v
            .spans
            .into_iter()
            .map(|s| v1::Span {
                seq: s.seq,
                task: s.task.0,
                job: s.job.0,
                attempt: s.attempt,
                function: s.function,
                node: s.node.0,
                slot: s.slot,
                start_unix_us: s.start_unix_us,
                end_unix_us: s.end_unix_us,
                outcome: s.outcome.into_owned(),
                error: s.error,
            })
            .collect(),
    }
}

/// A page of the cluster's state, and the cursor of the page after it
/// (`None`: it was the last).
pub fn cluster_view_from(v: v1::ClusterState) -> Result<(ClusterView, Option<String>), Error> {
    let next = (!v.next.is_empty()).then_some(v.next);
    let view = ClusterView {
        head_version: v.head_version,
        nodes: v
            .nodes
            .into_iter()
            .map(|n| {
                Ok(NodeInfo {
                    id: NodeId(n.id),
                    address: n.address,
                    name: n.name,
                    alive: n.state == "ALIVE",
                    total: resources_from(n.total)?,
                    available: n.available.map(|a| resources_from(Some(a))).transpose()?,
                    running: n.running,
                })
            })
            .collect::<Result<_, Error>>()?,
        tasks: v
            .tasks
            .into_iter()
            .map(|t| TaskInfo {
                id: TaskId(t.id),
                job: JobId(t.job),
                function: t.function,
                state: t.state.into(),
                node: node(t.node),
                attempts: t.attempts,
            })
            .collect(),
        actors: v
            .actors
            .into_iter()
            .map(|a| ActorInfo {
                id: ActorId(a.id),
                job: JobId(a.job),
                class: a.class,
                state: a.state.into(),
                node: node(a.node),
                restarts: a.restarts,
            })
            .collect(),
        objects: v
            .objects
            .into_iter()
            .map(|o| {
                Ok(ObjectInfo {
                    id: o.id.parse()?,
                    size: o.size,
                    nodes: o.nodes.into_iter().map(NodeId).collect(),
                    inline: o.inline,
                    made_by: o.made_by.parse().ok().map(TaskId),
                    spilled: o.spilled.into_iter().map(NodeId).collect(),
                })
            })
            .collect::<Result<_, Error>>()?,
        jobs: v
            .jobs
            .into_iter()
            .map(job_info_from)
            .collect::<Result<_, Error>>()?,
        task_states: v.task_states.into_iter().collect(),
        spans: v
            .spans
            .into_iter()
            .map(|s| Span {
                seq: s.seq,
                task: TaskId(s.task),
                job: JobId(s.job),
                attempt: s.attempt,
                function: s.function,
                node: NodeId(s.node),
                slot: s.slot,
                start_unix_us: s.start_unix_us,
                end_unix_us: s.end_unix_us,
                outcome: s.outcome.into(),
                error: s.error,
            })
            .collect(),
    };
    Ok((view, next))
}

pub fn serve_status_to(s: ferray_core::view::ServeStatus) -> v1::ServeStatus {
    v1::ServeStatus {
        every_node: s.every_node,
        http_host: s.http_host,
        http_port: u32::from(s.http_port),
        request_timeout_ms: s.request_timeout_ms,
        max_request_body: s.max_request_body,
        public: s.public,
        proxy: s.proxy,
        deployments: s
            .deployments
            .into_iter()
            .map(|d| v1::ServeDeployment {
                name: d.name,
                route_prefix: d.route_prefix,
                kind: d.kind,
                replicas: d.replicas,
                ongoing_requests: d.ongoing_requests,
                requests: d.requests,
                rejected: d.rejected,
                failed: d.failed,
                replicas_started: d.replicas_started,
                replicas_stopped: d.replicas_stopped,
            })
            .collect(),
    }
}

pub fn serve_status_from(s: v1::ServeStatus) -> ferray_core::view::ServeStatus {
    ferray_core::view::ServeStatus {
        every_node: s.every_node,
        http_host: s.http_host,
        http_port: u16::try_from(s.http_port).unwrap_or(0),
        request_timeout_ms: s.request_timeout_ms,
        max_request_body: s.max_request_body,
        public: s.public,
        proxy: s.proxy,
        deployments: s
            .deployments
            .into_iter()
            .map(|d| ferray_core::view::ServeDeployment {
                name: d.name,
                route_prefix: d.route_prefix,
                kind: d.kind,
                replicas: d.replicas,
                ongoing_requests: d.ongoing_requests,
                requests: d.requests,
                rejected: d.rejected,
                failed: d.failed,
                replicas_started: d.replicas_started,
                replicas_stopped: d.replicas_stopped,
            })
            .collect(),
    }
}

pub fn serve_call_to(deployment: String, r: ferray_core::http::HttpRequest) -> v1::ServeCall {
    v1::ServeCall {
        deployment,
        method: r.method,
        path: r.path,
        headers: headers_to(r.headers),
        body: r.body.into(),
    }
}

pub fn serve_call_from(c: v1::ServeCall) -> (String, ferray_core::http::HttpRequest) {
    (
        c.deployment,
        ferray_core::http::HttpRequest {
            method: c.method,
            path: c.path,
            headers: headers_from(c.headers),
            body: c.body.to_vec(),
        },
    )
}

pub fn serve_answer_to(r: Result<ferray_core::http::HttpResponse, Error>) -> v1::ServeAnswer {
    match r {
        Ok(r) => v1::ServeAnswer {
            status: u32::from(r.status),
            headers: headers_to(r.headers),
            body: r.body.into(),
            error: None,
        },
        Err(e) => v1::ServeAnswer {
            error: Some(crate::error_to(&e)),
            ..Default::default()
        },
    }
}

pub fn serve_answer_from(a: v1::ServeAnswer) -> Result<ferray_core::http::HttpResponse, Error> {
    if let Some(e) = a.error {
        return Err(crate::error_from(Some(e)));
    }
    Ok(ferray_core::http::HttpResponse {
        status: u16::try_from(a.status)
            .map_err(|_| Error::System(format!("the head sent the status {}", a.status)))?,
        headers: headers_from(a.headers),
        body: a.body.to_vec(),
    })
}

fn headers_to(h: Vec<(String, String)>) -> Vec<v1::HttpHeader> {
    h.into_iter()
        .map(|(name, value)| v1::HttpHeader { name, value })
        .collect()
}

fn headers_from(h: Vec<v1::HttpHeader>) -> Vec<(String, String)> {
    h.into_iter().map(|h| (h.name, h.value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferray_core::{ObjectId, Resources};

    #[test]
    fn views_survive_the_wire() {
        let job = JobInfo {
            job: JobId(3),
            state: JobState::Succeeded,
            entrypoint: "run 10".into(),
            component: "ab".into(),
            result: "[1]".into(),
            error: String::new(),
            tasks_done: 4,
            tasks_total: 4,
            err_value: false,
            start_unix_ms: 1,
            end_unix_ms: 2,
        };
        let view = ClusterView {
            nodes: vec![NodeInfo {
                id: NodeId(1),
                address: "127.0.0.1:1".into(),
                name: "n".into(),
                alive: true,
                total: Resources::cpus(2.0),
                available: Some(Resources::cpus(1.0)),
                running: 1,
            }],
            tasks: vec![TaskInfo {
                id: TaskId(9),
                job: JobId(3),
                function: "f".into(),
                state: "RUNNING".into(),
                node: Some(NodeId(1)),
                attempts: 1,
            }],
            actors: vec![ActorInfo {
                id: ActorId(5),
                job: JobId(3),
                class: "c".into(),
                state: "PENDING".into(),
                node: None,
                restarts: 0,
            }],
            objects: vec![
                ObjectInfo {
                    id: ObjectId::of(b"x"),
                    size: 1,
                    nodes: vec![NodeId(1)],
                    inline: true,
                    made_by: Some(TaskId(9)),
                    spilled: vec![NodeId(1)],
                },
                ObjectInfo {
                    id: ObjectId::of(b"y"),
                    size: 1,
                    nodes: vec![],
                    inline: false,
                    made_by: None,
                    spilled: vec![],
                },
            ],
            jobs: vec![job.clone()],
            task_states: [("RUNNING".to_string(), 1)].into_iter().collect(),
            head_version: "0.1.0".into(),
            spans: vec![Span {
                seq: 4,
                task: TaskId(9),
                job: JobId(3),
                attempt: 2,
                function: "f".into(),
                node: NodeId(1),
                slot: 3,
                start_unix_us: 10,
                end_unix_us: 20,
                outcome: "FAILED".into(),
                error: "trap".into(),
            }],
        };
        let back =
            cluster_view_from(cluster_view_to(view.clone(), Some("7".into()))).expect("decodes");
        assert_eq!(back.1.as_deref(), Some("7"));
        let back = back.0;
        assert_eq!(back, view);
        let e = JobEvent::Finished(job);
        assert_eq!(
            job_event_from(job_event_to(e.clone())).expect("ok"),
            Some(e)
        );
        let mut bad = job_info_to(back.jobs[0].clone());
        bad.state = "EXPLODED".into();
        assert!(job_info_from(bad).is_err());
    }
}
