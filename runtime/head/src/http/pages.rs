//! The dashboard's pages: server-rendered HTML (maud, escaped by default)
//! with a little plain JavaScript (`assets/app.js`) that refreshes the live
//! parts of a page and follows a job's log. Nothing is built by Node, and
//! the assets are in the binary.
//!
//! Every list is a page of the head's tables ([`State::cluster_page_where`],
//! at most [`PAGE`] rows) with a link to the next, so a page costs one pass
//! over a table whatever its size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use ferray_core::view::{ActorInfo, JobInfo, ListFilter, TaskInfo};
use ferray_core::{ActorId, JobId, NodeId, TaskId};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use super::history;
use crate::Head;
use crate::state::ClusterPage;

/// Rows of one page of a list.
pub const PAGE: usize = 50;

/// A page that could not be shown: its status and why.
#[derive(Debug)]
pub(crate) struct PageError(StatusCode, String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout(
            "Error",
            "",
            html! { h1 { (self.0.as_u16()) " " (self.0.canonical_reason().unwrap_or("")) } p.error { (self.1) } },
        );
        (self.0, body).into_response()
    }
}

impl From<ferray_core::Error> for PageError {
    fn from(e: ferray_core::Error) -> Self {
        match e {
            ferray_core::Error::NotFound(m) => PageError(StatusCode::NOT_FOUND, m),
            ferray_core::Error::InvalidArgument(m) => PageError(StatusCode::BAD_REQUEST, m),
            other => PageError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

type PageResult = Result<Html<String>, PageError>;

fn not_found(what: impl std::fmt::Display) -> PageError {
    PageError(StatusCode::NOT_FOUND, format!("no {what}"))
}

/// An id as a path or query gives it: `PREFIX-N` or `N`.
fn counter(text: &str, prefix: &str) -> Result<u64, PageError> {
    text.strip_prefix(prefix)
        .and_then(|t| t.strip_prefix('-'))
        .unwrap_or(text)
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            PageError(
                StatusCode::BAD_REQUEST,
                format!("`{text}` is not a {prefix} id ({prefix}-N)"),
            )
        })
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/tasks", "Tasks"),
    ("/actors", "Actors"),
    ("/nodes", "Nodes"),
    ("/objects", "Objects"),
    ("/logs", "Logs"),
];

/// A whole page: the navigation, `body`, the assets.
pub(crate) fn layout(title: &str, active: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · ferray" }
                    link rel="stylesheet" href="/static/app.css";
                    script src="/static/app.js" defer {}
                }
                body {
                    header {
                        span.brand { "ferray" }
                        nav {
                            @for (href, name) in NAV {
                                a href=(href) class=[(*href == active).then_some("on")] { (name) }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// `n` bytes for people.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A UTC time (`2026-12-01 23:30:05`) of Unix milliseconds.
fn time(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return String::new();
    }
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date of days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration in microseconds for people.
fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

fn state_class(state: &str) -> &'static str {
    match state {
        "FINISHED" | "SUCCEEDED" | "ALIVE" => "ok",
        "FAILED" | "DEAD" | "LOST" | "ERR_VALUE" => "bad",
        "STOPPED" | "CANCELLED" => "off",
        _ => "busy",
    }
}

fn badge(state: &str) -> Markup {
    html! { span class={ "badge " (state_class(state)) } { (state) } }
}

fn node_link(n: Option<NodeId>) -> Markup {
    html! {
        @match n {
            Some(n) => a href={ "/nodes#" (n) } { (n) },
            None => "—",
        }
    }
}

fn job_link(j: JobId) -> Markup {
    html! { a href={ "/jobs/" (j) } { (j) } }
}

fn progress(done: u64, total: u64) -> Markup {
    html! {
        span.progress {
            progress value=(done) max=(total.max(1)) {}
            " " span.count { (done) "/" (total) }
        }
    }
}

/// A link to the next page of a list, keeping its other query parameters.
fn next_link(base: &str, query: &[(&str, String)], next: Option<String>) -> Markup {
    let Some(next) = next else {
        return html! {};
    };
    let mut q = String::new();
    for (k, v) in query.iter().filter(|(_, v)| !v.is_empty()) {
        let _ = write!(q, "{k}={}&", urlencode(v));
    }
    let _ = write!(q, "after={}", urlencode(&next));
    html! { p.more { a.next href={ (base) "?" (q) } { "Next page →" } } }
}

pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn jobs_table(jobs: &[JobInfo]) -> Markup {
    html! {
        table.list #jobs {
            thead { tr { th { "Job" } th { "State" } th { "Entrypoint" } th { "Tasks" } th { "Started" } th { "Ended" } } }
            tbody {
                @for j in jobs {
                    tr {
                        td { (job_link(j.job)) }
                        td { (badge(j.state.name())) }
                        td.code { (j.entrypoint) }
                        td { (progress(j.tasks_done, j.tasks_total)) }
                        td { (time(j.start_unix_ms)) }
                        td { (time(j.end_unix_ms)) }
                    }
                }
            }
        }
    }
}

fn states_table(id: &str, states: &BTreeMap<String, u64>, link: Option<&str>) -> Markup {
    html! {
        table.kv id=(id) {
            @for (s, n) in states {
                tr {
                    td { (badge(s)) }
                    td.num {
                        @match link {
                            Some(base) => a href={ (base) "&state=" (urlencode(s)) } { (n) },
                            None => (n),
                        }
                    }
                }
            }
            @if states.is_empty() { tr { td.empty { "none" } } }
        }
    }
}

// ----- the overview -----

pub(crate) async fn overview(AxState(head): AxState<Head>) -> PageResult {
    let (counts, recent, nodes, points) = {
        let core = head.core.lock();
        (
            core.state.counts(),
            core.state.recent_jobs(10),
            core.state.node_rows(Instant::now()),
            core.history.points(),
        )
    };
    let (mut cpu_used, mut cpu_total, mut gpu_used, mut gpu_total) = (0.0, 0.0, 0.0, 0.0);
    for (_, total, free) in &counts.resources {
        cpu_total += total.num_cpus();
        cpu_used += (total.num_cpus() - free.num_cpus()).max(0.0);
        gpu_total += total.num_gpus();
        gpu_used += (total.num_gpus() - free.num_gpus()).max(0.0);
    }
    let store_bytes: u64 = counts.object_bytes.values().sum();
    let (rate, obj, cpus, cpus_total) = history::series(&points);
    let actors: BTreeMap<String, u64> = counts
        .actors
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Ok(layout(
        "Overview",
        "/",
        html! {
            h1 { "Cluster" }
            section #summary data-live="2000" {
                div.cards {
                    div.card { h3 { "Nodes" } p.big { (counts.nodes_alive) } p { "alive, " (counts.nodes_dead) " dead" } }
                    div.card { h3 { "CPUs" } p.big { (format!("{cpu_used:.1}")) " / " (format!("{cpu_total:.1}")) } p { "in use / total" } }
                    div.card { h3 { "GPUs" } p.big { (format!("{gpu_used:.1}")) " / " (format!("{gpu_total:.1}")) } p { "in use / total" } }
                    div.card { h3 { "Object store" } p.big { (bytes(store_bytes)) } p { (counts.objects) " objects" } }
                }
                div.cols {
                    div { h2 { "Tasks by state" } (states_table("task-states", &counts.tasks, Some("/tasks?job="))) }
                    div { h2 { "Actors by state" } (states_table("actor-states", &actors, None)) }
                    div {
                        h2 { "Nodes" }
                        table.kv {
                            @for n in &nodes {
                                tr {
                                    td { (node_link(Some(n.info.id))) }
                                    td { (badge(if n.info.alive { "ALIVE" } else { "DEAD" })) }
                                    td.num { (n.info.running) " running" }
                                }
                            }
                        }
                    }
                }
            }
            section #charts data-live="2000" {
                h2 { "The last minutes" }
                div.charts {
                    (PreEscaped(history::svg_chart("tasks/s", &rate, None, |v| format!("{v:.0}/s"))))
                    (PreEscaped(history::svg_chart("object store", &obj, None, bytes_f)))
                    (PreEscaped(history::svg_chart("CPUs in use", &cpus, Some(&cpus_total), |v| format!("{v:.1}"))))
                }
            }
            section #recent data-live="2000" {
                h2 { "Recent jobs" }
                (jobs_table(&recent))
                p { a href="/jobs" { "All jobs →" } }
            }
        },
    ))
}

fn bytes_f(v: f64) -> String {
    bytes(v.max(0.0) as u64)
}

// ----- jobs -----

#[derive(Debug, Deserialize)]
pub(crate) struct After {
    #[serde(default)]
    after: Option<String>,
}

pub(crate) async fn jobs(AxState(head): AxState<Head>, Query(q): Query<After>) -> PageResult {
    let after = q.after.unwrap_or_default();
    let after = after.strip_prefix("job-").unwrap_or(&after).to_string();
    let p = head.core.lock().state.cluster_page("jobs", &after, PAGE)?;
    Ok(layout(
        "Jobs",
        "/jobs",
        html! {
            h1 { "Jobs" }
            section #job-list data-live="2000" { (jobs_table(&p.view.jobs)) }
            (next_link("/jobs", &[], p.next))
        },
    ))
}

pub(crate) async fn job(AxState(head): AxState<Head>, Path(id): Path<String>) -> PageResult {
    let job = JobId(counter(&id, "job")?);
    let (info, states, actors) = {
        let core = head.core.lock();
        let info = core.state.job_info(job).ok_or_else(|| not_found(job))?;
        let states = core.state.job_task_states(job);
        let filter = ListFilter {
            job: Some(job),
            ..ListFilter::default()
        };
        let actors = core.state.cluster_page_where("actors", "", PAGE, &filter)?;
        (info, states, actors)
    };
    let running = !info.state.finished();
    Ok(layout(
        &job.to_string(),
        "/jobs",
        html! {
            h1 { "Job " (job) }
            section #job data-live="1000" {
                table.kv {
                    tr { th { "State" } td #job-state { (badge(info.state.name())) } }
                    tr { th { "Progress" } td #job-progress { (progress(info.tasks_done, info.tasks_total)) } }
                    tr { th { "Entrypoint" } td.code { (info.entrypoint) } }
                    tr { th { "Component" } td.code { (info.component) } }
                    tr { th { "Started" } td { (time(info.start_unix_ms)) } }
                    tr { th { "Ended" } td { (time(info.end_unix_ms)) } }
                    @if !info.result.is_empty() { tr { th { "Result" } td.code #job-result { (info.result) } } }
                    @if !info.error.is_empty() { tr { th { "Error" } td.code.error { (info.error) } } }
                }
                h2 { "Tasks by state" }
                (states_table("job-task-states", &states, Some(&format!("/tasks?job={job}"))))
                @if !actors.view.actors.is_empty() {
                    h2 { "Actors" }
                    (actors_table(&actors.view.actors))
                }
                p.actions {
                a #job-tasks href={ "/tasks?job=" (job) } { "Its tasks" } " · "
                a href={ "/actors?job=" (job) } { "Its actors" } " · "
                a #job-timeline href={ "/jobs/" (job) "/timeline.json" } download={ (job) "-timeline.json" } { "Timeline (Chrome trace)" }
                    @if running {
                        form.inline method="post" action={ "/jobs/" (job) "/stop" } {
                            button type="submit" { "Stop" }
                        }
                    }
                }
            }
            h2 { "Driver log" }
            pre.log #log data-log={ "/api/jobs/" (job) "/logs" } {}
        },
    ))
}

/// The page's stop button: stop the job and show it.
pub(crate) async fn stop_job(
    AxState(head): AxState<Head>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let job = JobId(counter(&id, "job")?);
    head.with(|st| st.stop_job(job))?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

/// A job's timeline as a Chrome trace (`ferray timeline` writes the same).
pub(crate) async fn timeline(
    AxState(head): AxState<Head>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = id.strip_suffix(".json").unwrap_or(&id);
    let job = JobId(counter(id, "job")?);
    let (spans, names) = {
        let core = head.core.lock();
        if core.state.job_info(job).is_none() {
            return Err(not_found(job));
        }
        (core.state.job_spans(job), core.state.node_names())
    };
    let now = crate::state::unix_us();
    let trace = ferray_core::view::chrome_trace(&spans, &names, now);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{job}-timeline.json\""),
            ),
        ],
        trace,
    )
        .into_response())
}

// ----- tasks -----

#[derive(Debug, Deserialize)]
pub(crate) struct TaskQuery {
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    function: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

fn some(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn tasks_table(tasks: &[TaskInfo]) -> Markup {
    html! {
        table.list #tasks {
            thead { tr { th { "Task" } th { "Job" } th { "Function" } th { "State" } th { "Node" } th { "Attempts" } } }
            tbody {
                @for t in tasks {
                    tr {
                        td { a.task href={ "/tasks/" (t.id) } { (t.id) } }
                        td { (job_link(t.job)) }
                        td.code { (t.function) }
                        td { (badge(&t.state)) }
                        td { (node_link(t.node)) }
                        td.num { (t.attempts) }
                    }
                }
                @if tasks.is_empty() { tr { td.empty colspan="6" { "none" } } }
            }
        }
    }
}

pub(crate) async fn tasks(AxState(head): AxState<Head>, Query(q): Query<TaskQuery>) -> PageResult {
    let job = some(&q.job)
        .map(|j| counter(&j, "job"))
        .transpose()?
        .map(JobId);
    let filter = ListFilter {
        job,
        state: some(&q.state),
        function: some(&q.function),
    };
    let after = some(&q.after).unwrap_or_default();
    let after = after.strip_prefix("task-").unwrap_or(&after).to_string();
    let p: ClusterPage = head
        .core
        .lock()
        .state
        .cluster_page_where("tasks", &after, PAGE, &filter)?;
    let keep = [
        ("job", job.map(|j| j.to_string()).unwrap_or_default()),
        ("state", filter.state.clone().unwrap_or_default()),
        ("function", filter.function.clone().unwrap_or_default()),
    ];
    Ok(layout(
        "Tasks",
        "/tasks",
        html! {
            h1 { "Tasks" }
            form.filters method="get" action="/tasks" {
                label { "Job " input name="job" value=[job.map(|j| j.to_string())] placeholder="job-N"; }
                label { "State "
                    select name="state" {
                        option value="" { "any" }
                        @for s in ["WAITING_FOR_DEPENDENCIES", "PENDING_NODE_ASSIGNMENT", "RUNNING", "FINISHED", "FAILED", "CANCELLED"] {
                            option value=(s) selected[filter.state.as_deref() == Some(s)] { (s) }
                        }
                    }
                }
                label { "Function " input name="function" value=[filter.function.clone()]; }
                button type="submit" { "Filter" }
            }
            section #task-list data-live="3000" { (tasks_table(&p.view.tasks)) }
            (next_link("/tasks", &keep, p.next))
        },
    ))
}

pub(crate) async fn task(AxState(head): AxState<Head>, Path(id): Path<String>) -> PageResult {
    let t = TaskId(counter(&id, "task")?);
    let (info, spans) = {
        let core = head.core.lock();
        let info = core.state.task_info(t).ok_or_else(|| not_found(t))?;
        (info, core.state.task_spans(t))
    };
    Ok(layout(
        &t.to_string(),
        "/tasks",
        html! {
            h1 { "Task " (t) }
            section #task data-live="2000" {
                table.kv {
                    tr { th { "Job" } td { (job_link(info.job)) } }
                    tr { th { "Function" } td.code #task-function { (info.function) } }
                    tr { th { "State" } td #task-state { (badge(&info.state)) } }
                    tr { th { "Node" } td { (node_link(info.node)) } }
                    tr { th { "Attempts" } td { (info.attempts) } }
                }
                h2 { "Attempts" }
                table.list #attempts {
                    thead { tr { th { "Attempt" } th { "Node" } th { "Slot" } th { "Started" } th { "Took" } th { "Outcome" } th { "Error" } } }
                    tbody {
                        @for s in &spans {
                            tr {
                                td.num { (s.attempt) }
                                td { (node_link(Some(s.node))) }
                                td.num { (s.slot) }
                                td { (time(s.start_unix_us / 1000)) }
                                td { @if s.end_unix_us > 0 { (micros(s.end_unix_us - s.start_unix_us)) } @else { "running" } }
                                td { (badge(&s.outcome)) }
                                td.code.error { (s.error) }
                            }
                        }
                        @if spans.is_empty() { tr { td.empty colspan="7" { "none kept" } } }
                    }
                }
            }
        },
    ))
}

// ----- actors -----

#[derive(Debug, Deserialize)]
pub(crate) struct ActorQuery {
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

fn actors_table(actors: &[ActorInfo]) -> Markup {
    html! {
        table.list #actors {
            thead { tr { th { "Actor" } th { "Job" } th { "Class" } th { "State" } th { "Node" } th { "Restarts" } } }
            tbody {
                @for a in actors {
                    tr {
                        td { a.actor href={ "/actors/" (a.id) } { (a.id) } }
                        td { (job_link(a.job)) }
                        td.code { (a.class) }
                        td { (badge(&a.state)) }
                        td { (node_link(a.node)) }
                        td.num { (a.restarts) }
                    }
                }
                @if actors.is_empty() { tr { td.empty colspan="6" { "none" } } }
            }
        }
    }
}

pub(crate) async fn actors(
    AxState(head): AxState<Head>,
    Query(q): Query<ActorQuery>,
) -> PageResult {
    let job = some(&q.job)
        .map(|j| counter(&j, "job"))
        .transpose()?
        .map(JobId);
    let filter = ListFilter {
        job,
        ..ListFilter::default()
    };
    let after = some(&q.after).unwrap_or_default();
    let after = after.strip_prefix("actor-").unwrap_or(&after).to_string();
    let p = head
        .core
        .lock()
        .state
        .cluster_page_where("actors", &after, PAGE, &filter)?;
    let keep = [("job", job.map(|j| j.to_string()).unwrap_or_default())];
    Ok(layout(
        "Actors",
        "/actors",
        html! {
            h1 { "Actors" }
            form.filters method="get" action="/actors" {
                label { "Job " input name="job" value=[job.map(|j| j.to_string())] placeholder="job-N"; }
                button type="submit" { "Filter" }
            }
            section #actor-list data-live="3000" { (actors_table(&p.view.actors)) }
            (next_link("/actors", &keep, p.next))
        },
    ))
}

pub(crate) async fn actor(AxState(head): AxState<Head>, Path(id): Path<String>) -> PageResult {
    let a = ActorId(counter(&id, "actor")?);
    let d = head
        .core
        .lock()
        .state
        .actor_detail(a)
        .ok_or_else(|| not_found(a))?;
    let i = &d.info;
    Ok(layout(
        &a.to_string(),
        "/actors",
        html! {
            h1 { "Actor " (a) }
            section #actor data-live="2000" {
                table.kv {
                    tr { th { "Job" } td { (job_link(i.job)) } }
                    tr { th { "Class" } td.code #actor-class { (i.class) } }
                    tr { th { "State" } td #actor-state { (badge(&i.state)) } }
                    tr { th { "Node" } td { (node_link(i.node)) } }
                    tr { th { "Restarts" } td { (i.restarts) } }
                    @if !d.error.is_empty() { tr { th { "Died of" } td.code.error { (d.error) } } }
                }
            }
            p { a href={ "/tasks?job=" (i.job) } { "Its job's tasks and calls" } }
        },
    ))
}

// ----- nodes, objects, logs -----

pub(crate) async fn nodes(AxState(head): AxState<Head>) -> PageResult {
    let rows = head.core.lock().state.node_rows(Instant::now());
    Ok(layout(
        "Nodes",
        "/nodes",
        html! {
            h1 { "Nodes" }
            section #node-list data-live="2000" {
                table.list #nodes {
                    thead { tr { th { "Node" } th { "Name" } th { "Address" } th { "State" } th { "CPUs used / total" } th { "GPUs" } th { "Memory" } th { "Running" } th { "Objects held" } th { "Heartbeat" } } }
                    tbody {
                        @for n in &rows {
                            @let total = &n.info.total;
                            @let free = n.info.available.clone().unwrap_or_default();
                            tr id=(n.info.id) {
                                td { (n.info.id) }
                                td { (n.info.name) }
                                td.code { (n.info.address) }
                                td { (badge(if n.info.alive { "ALIVE" } else { "DEAD" })) }
                                td.num { (format!("{:.1}", (total.num_cpus() - free.num_cpus()).max(0.0))) " / " (format!("{:.1}", total.num_cpus())) }
                                td.num { (format!("{:.1}", (total.num_gpus() - free.num_gpus()).max(0.0))) " / " (format!("{:.1}", total.num_gpus())) }
                                td.num { (bytes(total.memory())) }
                                td.num { (n.info.running) }
                                td.num { (n.objects) " (" (bytes(n.object_bytes)) ")" }
                                td.num { @if n.info.alive { (format!("{:.1} s ago", n.heartbeat_age.as_secs_f64())) } @else { "—" } }
                            }
                        }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn objects(AxState(head): AxState<Head>, Query(q): Query<After>) -> PageResult {
    let after = q.after.unwrap_or_default();
    let p = head
        .core
        .lock()
        .state
        .cluster_page("objects", &after, PAGE)?;
    // The head's own copies (a client's puts): its store knows.
    let head_spilled: std::collections::BTreeSet<ferray_core::ObjectId> = p
        .view
        .objects
        .iter()
        .filter(|o| o.nodes.iter().any(|n| n.0 == 0) && head.store.spill_path(&o.id).is_some())
        .map(|o| o.id)
        .collect();
    Ok(layout(
        "Objects",
        "/objects",
        html! {
            h1 { "Objects" }
            p.note { "Objects the head knows of, by id, with the nodes that hold a copy; \"spilled\": that copy is on disk (as the node's last heartbeat said). \"head\" holds small objects inline and a client's puts." }
            table.list #objects {
                thead { tr { th { "Object" } th { "Size" } th { "Holders" } th { "Made by" } } }
                tbody {
                    @for o in &p.view.objects {
                        tr {
                            td.code title=(o.id.to_hex()) { (o.id.to_hex().get(..16).unwrap_or("")) }
                            td.num { (bytes(o.size)) }
                            td {
                                @if o.inline { "head (inline) " }
                                @for n in &o.nodes {
                                    @if n.0 == 0 { "head" } @else { (node_link(Some(*n))) }
                                    @if o.spilled.contains(n) || (n.0 == 0 && head_spilled.contains(&o.id)) {
                                        " " span.badge.off { "spilled" }
                                    }
                                    " "
                                }
                            }
                            td { @match o.made_by { Some(t) => a href={ "/tasks/" (t) } { (t) }, None => "put" } }
                        }
                    }
                    @if p.view.objects.is_empty() { tr { td.empty colspan="4" { "none" } } }
                }
            }
            (next_link("/objects", &[], p.next))
        },
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogQuery {
    #[serde(default)]
    job: Option<String>,
}

pub(crate) async fn logs(AxState(head): AxState<Head>, Query(q): Query<LogQuery>) -> PageResult {
    let job = some(&q.job)
        .map(|j| counter(&j, "job"))
        .transpose()?
        .map(JobId);
    let recent = head.core.lock().state.recent_jobs(PAGE);
    if let Some(j) = job
        && head.core.lock().state.job_info(j).is_none()
    {
        return Err(not_found(j));
    }
    Ok(layout(
        "Logs",
        "/logs",
        html! {
            h1 { "Logs" }
            div.cols {
                div {
                    h2 { "Jobs" }
                    ul.plain {
                        @for r in &recent {
                            li { a href={ "/logs?job=" (r.job) } class=[(Some(r.job) == job).then_some("on")] { (r.job) } " " (badge(r.state.name())) }
                        }
                    }
                }
                div.wide {
                    @match job {
                        Some(j) => {
                            h2 { (j) "'s log " a.small href={ "/jobs/" (j) } { "(job)" } }
                            pre.log #log data-log={ "/api/jobs/" (j) "/logs" } {}
                        }
                        None => p { "Choose a job." },
                    }
                }
            }
        },
    ))
}

// ----- assets and the login -----

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub(crate) async fn app_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_JS,
    )
        .into_response()
}

pub(crate) async fn app_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_CSS,
    )
        .into_response()
}

/// The login page: the only page served without the token. It holds no
/// data of the cluster.
pub(crate) fn login_page(next: &str, failed: bool) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { "Sign in · ferray" }
                    style { (PreEscaped(LOGIN_CSS)) }
                }
                body {
                    form #login method="post" action="/login" {
                        h1 { "ferray" }
                        p { "This cluster's dashboard needs its token (" code { "ferray start --head" } " wrote it to " code { "~/.ferray/token" } ")." }
                        @if failed { p.error #login-error { "That is not the cluster's token." } }
                        input type="password" name="token" id="token" autocomplete="current-password" placeholder="cluster token" autofocus required;
                        input type="hidden" name="next" value=(next);
                        button type="submit" id="sign-in" { "Sign in" }
                    }
                }
            }
        }
        .into_string(),
    )
}

const LOGIN_CSS: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;display:flex;justify-content:center;margin-top:12vh}\
form{background:#fff;padding:2em;border-radius:8px;box-shadow:0 1px 4px #0002;max-width:26em}\
input{width:100%;padding:.5em;margin:.5em 0;box-sizing:border-box}button{padding:.5em 1.5em}.error{color:#b00020}";
