//! The jobs API, shaped like Ray's Jobs REST API (`docs/jobs-api.yaml`):
//! submit a job (a component uploaded before, by content id, or inline), list
//! the jobs a page at a time, show one, its logs, stop it. A submission goes
//! through `State::submit_job`, as `Head.SubmitJob` does; the function and
//! its WAVE arguments are checked against the component's bytes first
//! (`ferray_codec`, no wasmtime), so a wrong one is a 400, not a failed job.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use base64::Engine as _;
use ferray_codec::ComponentInfo;
use ferray_core::view::JobInfo;
use ferray_core::{ComponentId, JobId, Resources};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiError;
use crate::Head;
use crate::state::JobRequest;

/// The longest function name, and custom resource name, a request may give.
const MAX_NAME: usize = 1_024;
/// The most WAVE arguments of one request.
const MAX_ARGS: usize = 1_024;
/// The most custom entrypoint resources of one request.
const MAX_RESOURCES: usize = 64;

/// `POST /api/jobs/`: what to run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    /// The content id (hex blake3) of a component uploaded before.
    #[serde(default)]
    component: Option<String>,
    /// Or the component itself, base64 (standard alphabet, padded).
    #[serde(default)]
    component_base64: Option<String>,
    /// The exported function the driver calls.
    function: String,
    /// Its arguments, WAVE text each.
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    entrypoint_num_cpus: Option<f64>,
    #[serde(default)]
    entrypoint_num_gpus: Option<f64>,
    #[serde(default)]
    entrypoint_memory: Option<u64>,
    #[serde(default)]
    entrypoint_resources: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct SubmitResponse {
    job_id: String,
    submission_id: String,
    component: String,
}

/// What one job looks like to the API.
fn details(j: &JobInfo) -> Value {
    json!({
        "job_id": j.job.to_string(),
        "submission_id": j.job.to_string(),
        "status": j.state.name(),
        "entrypoint": j.entrypoint,
        "component": j.component,
        "result": j.result,
        "error": j.error,
        "err_value": j.err_value,
        "tasks_done": j.tasks_done,
        "tasks_total": j.tasks_total,
        "start_time": j.start_unix_ms,
        "end_time": (j.end_unix_ms != 0).then_some(j.end_unix_ms),
    })
}

/// A job id as a path gives it: `job-3`, or `3`.
fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.strip_prefix("job-")
        .unwrap_or(text)
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(JobId)
        .ok_or_else(|| ApiError::BadRequest(format!("`{text}` is not a job id (job-N)")))
}

/// The entrypoint's resources, each checked.
fn entrypoint(r: &SubmitRequest) -> Result<Resources, ApiError> {
    let mut res = Resources::default();
    if let Some(n) = r.entrypoint_num_cpus {
        res = res.with_cpus(n)?;
    }
    if let Some(n) = r.entrypoint_num_gpus {
        res = res.with_gpus(n)?;
    }
    if let Some(b) = r.entrypoint_memory {
        res = res.with_memory(b);
    }
    if r.entrypoint_resources.len() > MAX_RESOURCES {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_RESOURCES} entrypoint resources"
        )));
    }
    for (k, v) in &r.entrypoint_resources {
        if k.is_empty() || k.len() > MAX_NAME || k.chars().any(|c| c.is_control() || c == ' ') {
            return Err(ApiError::BadRequest(format!(
                "`{}` is not a resource name",
                k.escape_debug()
            )));
        }
        res = res.with_custom(k, *v)?;
    }
    Ok(res)
}

/// The function and its arguments checked against the component's bytes
/// (off the async threads: validating a component is work).
async fn check_call(bytes: Bytes, function: String, args: Vec<String>) -> Result<(), ApiError> {
    tokio::task::spawn_blocking(move || {
        if !bytes.starts_with(b"\0asm") {
            return Err(ApiError::BadRequest(
                "the component is not a WebAssembly file".into(),
            ));
        }
        ComponentInfo::read(&bytes)
            .and_then(|info| info.function(&function)?.encode_wave_args(&args))
            .map(|_| ())
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the check of the component failed: {e}")))?
}

pub(super) async fn submit(
    AxState(head): AxState<Head>,
    body: Bytes,
) -> Result<Json<SubmitResponse>, ApiError> {
    let req: SubmitRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a job request: {e}")))?;
    drop(body);
    if req.function.is_empty() || req.function.len() > MAX_NAME {
        return Err(ApiError::BadRequest(format!(
            "`function` is the name of an export (1 to {MAX_NAME} bytes)"
        )));
    }
    if req.args.len() > MAX_ARGS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_ARGS} arguments"
        )));
    }
    let resources = entrypoint(&req)?;
    // The component: one uploaded before, or this one (kept like an upload).
    let (id, inline) = match (&req.component, &req.component_base64) {
        (Some(hex), None) => {
            let id: ComponentId = hex.parse().map_err(|_| {
                ApiError::BadRequest(format!("`{hex}` is not a component's content id"))
            })?;
            let bytes = head.core.lock().state.components.get(&id).cloned();
            let Some(bytes) = bytes else {
                return Err(ApiError::BadRequest(format!(
                    "component {} was not uploaded to the head (upload it first, or send it as component_base64)",
                    id.short()
                )));
            };
            check_call(bytes, req.function.clone(), req.args.clone()).await?;
            (id, None)
        }
        (None, Some(b64)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| ApiError::BadRequest(format!("component_base64: {e}")))?;
            let bytes = Bytes::from(bytes);
            check_call(bytes.clone(), req.function.clone(), req.args.clone()).await?;
            (ComponentId::of(&bytes), Some(bytes))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `component` (an uploaded component's id) and `component_base64`"
                    .into(),
            ));
        }
    };
    let job = head.submit(
        JobRequest {
            component: id,
            function: req.function,
            args: req.args,
            entrypoint: resources,
        },
        "",
        inline,
    )?;
    tracing::info!("{job} submitted over HTTP (component {})", id.short());
    Ok(Json(SubmitResponse {
        job_id: job.to_string(),
        submission_id: job.to_string(),
        component: id.to_hex(),
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct Page {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

/// `GET /api/jobs/?limit=N&after=CURSOR`: a page of jobs in id order and
/// the cursor of the next (`null` on the last).
pub(super) async fn list(
    AxState(head): AxState<Head>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = match page.limit.as_deref() {
        None | Some("") => 0,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::BadRequest(format!("limit `{l}` is not a count")))?,
    };
    let after = page
        .after
        .as_deref()
        .map(|a| a.strip_prefix("job-").unwrap_or(a))
        .unwrap_or("");
    let p = head.core.lock().state.cluster_page("jobs", after, limit)?;
    let jobs: Vec<Value> = p.view.jobs.iter().map(details).collect();
    Ok(Json(json!({ "jobs": jobs, "next": p.next })))
}

/// `GET /api/jobs/{id}`.
pub(super) async fn info(
    AxState(head): AxState<Head>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = job_id(&id)?;
    let info = head.core.lock().state.job_info(job);
    info.map(|j| Json(details(&j)))
        .ok_or_else(|| ApiError::NotFound(format!("no {job}")))
}

#[derive(Debug, Deserialize)]
pub(super) struct LogsFrom {
    #[serde(default)]
    from: Option<u64>,
}

/// `GET /api/jobs/{id}/logs?from=N`: the log lines the head keeps (from
/// line `from` on), and the cursor to ask from next.
pub(super) async fn logs(
    AxState(head): AxState<Head>,
    Path(id): Path<String>,
    Query(from): Query<LogsFrom>,
) -> Result<Json<Value>, ApiError> {
    let job = job_id(&id)?;
    let (lines, next) = {
        let core = head.core.lock();
        if core.state.job_info(job).is_none() {
            return Err(ApiError::NotFound(format!("no {job}")));
        }
        core.state.job_logs(job, from.from.unwrap_or(0))
    };
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    Ok(Json(json!({ "logs": text, "next": next })))
}

/// `POST /api/jobs/{id}/stop`: `stopped` is whether it was running (a
/// finished job stays as it ended).
pub(super) async fn stop(
    AxState(head): AxState<Head>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = job_id(&id)?;
    let stopped = head.with(|st| {
        let running = st
            .job_info(job)
            .map(|j| !j.state.finished())
            .ok_or_else(|| ferray_core::Error::NotFound(format!("no {job}")))?;
        st.stop_job(job)?;
        Ok::<_, ferray_core::Error>(running)
    })?;
    Ok(Json(json!({ "stopped": stopped })))
}
