//! Task routes: submit (JSON or a multipart upload), list, status, result, cancel.

use api_types::{Pending, TaskErrorView, TaskList, TaskResultView, TaskView};
use std::time::Duration;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use proto::{ErrorCode, FailureCode, ToCoordinator};
use sched::{CancelError, Owner, TaskId, TaskState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Id, Params, body_code, body_refused};
use super::trust::{stored_verification_view, verification_view};
use super::{Api, ApiError, Caller, ErrorBody};
use crate::core::ApiRequest;
use crate::core::requests::{Awaited, Finished, Submitted, TaskNow};

// ----------------------------------------------------------------- tasks

/// `POST /cluster/tasks` body (also `POST /cluster/tasks/submit`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SubmitTask {
    /// physics, inference, gpu, echo, sleep… Defaults, when `data` names a
    /// model, to `generate` if it has a `prompt` or `messages`, else to
    /// `inference`.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub task_type: Option<String>,
    /// The task's input (seed 2 called it `payload`).
    #[serde(alias = "payload")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// A number, or LOW, NORMAL (default), HIGH, CRITICAL.
    #[schema(schema_with = super::schemas::priority)]
    pub priority: Option<Value>,
    /// The most one run may take, in seconds.
    #[serde(alias = "timeout")]
    #[schema(exclusive_minimum = 0, maximum = 604_800)]
    pub timeout_s: Option<f64>,
    /// The most the task may wait before it starts, in seconds.
    #[schema(exclusive_minimum = 0, maximum = 604_800)]
    pub queue_timeout_s: Option<f64>,
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// `{model, gpu, min_vram_mb}`.
    #[schema(schema_with = super::schemas::requirements)]
    pub requirements: Option<Value>,
    /// Your own id for the task (the cluster id is used when absent).
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub task_id: Option<String>,
    /// Resubmitting the same key returns the original task. The
    /// `Idempotency-Key` header does the same.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub idempotency_key: Option<String>,
    /// `{replicas, quorum, adaptive}`: run on distinct workers and accept
    /// the result once `quorum` agree (docs/VERIFICATION.md).
    #[schema(schema_with = super::schemas::verify)]
    pub verify: Option<Value>,
    /// Stream the task's output (`generate`'s tokens) to followers of
    /// `GET /cluster/tasks/{id}/stream` while it runs.
    pub stream: Option<bool>,
}

/// A task accepted.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Submitted)]
pub struct SubmittedView {
    /// The cluster id: use it in `/cluster/tasks/{id}/…`.
    pub task_id: String,
    /// The submitter's own id (the cluster id when none was given).
    pub client_task_id: String,
    /// The task's state (`queued`, …); `submitted` on seed 2's path.
    pub status: String,
    /// True when an idempotency key matched an earlier submission.
    pub existing: bool,
    /// Why it waits, when no connected worker can run it.
    pub waiting_reason: Option<String>,
}

/// Submits a task: JSON, or multipart with an image `file` and a `model` (inference) or `task_type`. 201 with the cluster task id; 200 when an idempotency key matched an earlier task.
#[utoipa::path(post, path = "/cluster/tasks", tag = "tasks",
    request_body(content = SubmitTask, description = "JSON; or multipart/form-data with a `file` \
        part (the image, for inference) and `model`, `top_k`, `priority`, `timeout_s` fields"),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, description = "Resubmitting returns the original task (the same bounds as `idempotency_key`)")),
    responses((status = 201, body = SubmittedView), (status = 200, description = "Idempotent resubmission", body = SubmittedView),
              (status = 400, body = ErrorBody),
              (status = 409, description = "`duplicate_task_id` (a live task of yours holds `task_id`), or another refusal of the submission", body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, description = "`busy` (with `retry_after_s`) or `unavailable`", body = ErrorBody)))]
pub(super) async fn submit(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (body, header_key) = read_submission(&api, &headers, req).await?;
    submit_task(&api, body, header_key, caller.owner).await
}

/// A submission's body (JSON, or multipart for an image) and its
/// `Idempotency-Key` header.
async fn read_submission(
    api: &Api,
    headers: &HeaderMap,
    req: axum::extract::Request,
) -> Result<(SubmitTask, Option<String>), ApiError> {
    use axum::extract::FromRequest;
    let multipart = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let body = if multipart {
        let form = Multipart::from_request(req, api)
            .await
            .map_err(|e| ApiError::new(e.status(), body_code(e.status()), e.body_text()))?;
        from_multipart(form).await?
    } else {
        let Json(body) =
            Json::<SubmitTask>::from_request(req, api).await.map_err(|e| body_refused(&e))?;
        body
    };
    let header_key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok((body, header_key))
}

/// Seed 2's path for submitting a task, answered as its template and its
/// test have it: 200 with `"status": "submitted"` (and the fields of
/// `POST /cluster/tasks`; the task's state is in `GET /cluster/tasks/{id}/status`).
#[utoipa::path(post, path = "/cluster/tasks/submit", tag = "tasks", request_body = SubmitTask,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, description = "Resubmitting returns the original task (the same bounds as `idempotency_key`)")),
    responses((status = 200, description = "Submitted (or an idempotent resubmission: `existing`); `status` is `submitted`", body = SubmittedView),
              (status = 409, description = "`duplicate_task_id`, or another refusal of the submission", body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, description = "`busy` or `unavailable`", body = ErrorBody)))]
pub(super) async fn submit_seed_path(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (body, header_key) = read_submission(&api, &headers, req).await?;
    let (_, mut view) = submit_view(&api, body, header_key, caller.owner).await?;
    view.status = "submitted".to_owned();
    Ok(Json(view).into_response())
}

/// An inference task from a form: the `file` part is the image.
pub(super) async fn from_multipart(mut form: Multipart) -> Result<SubmitTask, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), body_code(e.status()), e.body_text())
    };
    let mut data = serde_json::Map::new();
    let mut task = SubmitTask::default();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" || name == "image" {
            let bytes = field.bytes().await.map_err(bad)?;
            data.insert(
                "image".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        let number = || text.trim().parse::<f64>().ok();
        match name.as_str() {
            "task_type" => task.task_type = Some(text),
            "model" => {
                data.insert("model".into(), json!(text));
            }
            "top_k" => {
                data.insert("top_k".into(), json!(text.trim().parse::<u64>().unwrap_or(5)));
            }
            "priority" => {
                task.priority = Some(number().map_or_else(|| json!(text), |n| json!(n as i64)))
            }
            "timeout_s" | "timeout" => task.timeout_s = number(),
            "task_id" => task.task_id = Some(text),
            "idempotency_key" => task.idempotency_key = Some(text),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!(
                        "unknown form field `{other}` (use file, model, top_k, task_type, priority, timeout_s, task_id)"
                    ),
                ));
            }
        }
    }
    if !data.contains_key("image") {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the form has no `file` part (the image)",
        ));
    }
    task.data = Some(Value::Object(data));
    Ok(task)
}

pub(super) async fn submit_task(
    api: &Api,
    body: SubmitTask,
    header_key: Option<String>,
    owner: Owner,
) -> Result<Response, ApiError> {
    let (status, body) = submit_view(api, body, header_key, owner).await?;
    Ok((status, Json(body)).into_response())
}

/// Submits a task for `owner` once durable; 201 (or 200 for an idempotent
/// resubmission of that owner's).
pub(super) async fn submit_view(
    api: &Api,
    body: SubmitTask,
    header_key: Option<String>,
    owner: Owner,
) -> Result<(StatusCode, SubmittedView), ApiError> {
    let data = body.data.unwrap_or_else(|| json!({}));
    if !data.is_object() {
        let kind = match &data {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("`data` must be a JSON object (the task's input fields), not {kind}"),
        ));
    }
    let task_type = match body.task_type {
        Some(t) => t,
        // Seed 2 submits `{"payload": {"model": …, "input": …}}` without a
        // type: a model with a prompt or messages generates, else classifies.
        None if data.get("model").is_some() => {
            let text = data.get("prompt").is_some() || data.get("messages").is_some();
            if text { "generate" } else { "inference" }.to_owned()
        }
        None => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "task_type is required (physics, inference, gpu, …)",
            ));
        }
    };
    // The wire decoder checks every field as it does for gamers.
    let mut wire = json!({
        "msg_type": "task_request",
        "task_type": task_type,
        "data": data,
    });
    let fields = [
        ("task_id", body.task_id.map(Value::from)),
        ("priority", body.priority),
        ("timeout_s", body.timeout_s.map(Value::from)),
        ("queue_timeout_s", body.queue_timeout_s.map(Value::from)),
        ("max_attempts", body.max_attempts.map(Value::from)),
        ("requirements", body.requirements),
        ("idempotency_key", header_key.or(body.idempotency_key).map(Value::from)),
        ("verify", body.verify),
        ("stream", body.stream.map(Value::from)),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            wire[name] = v;
        }
    }
    let req = match ToCoordinator::decode(&wire.to_string()) {
        Ok(ToCoordinator::TaskRequest(req)) => req,
        Ok(_) => return Err(ApiError::unavailable()),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.code().as_str(),
                e.to_string(),
            ));
        }
    };
    let submitted = api.request(|reply| ApiRequest::Submit { req, owner, reply }).await?;
    let Submitted { accepted, seq } = submitted.map_err(|e| {
        let status = if e.code == ErrorCode::BUSY {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::CONFLICT
        };
        let mut err = ApiError::new(status, e.code.as_str(), e.reason);
        if let Some(r) = e.retry_after_s {
            err = err.retry_after(r);
        }
        err
    })?;
    api.durable(seq).await?;
    let status = if accepted.existing { StatusCode::OK } else { StatusCode::CREATED };
    let body = SubmittedView {
        task_id: accepted.id,
        client_task_id: accepted.task_id,
        status: accepted.status.as_str().to_owned(),
        existing: accepted.existing,
        waiting_reason: accepted.waiting_reason,
    };
    Ok((status, body))
}

fn task_view(t: TaskNow) -> TaskView {
    let verification = t.verification.as_ref().map(verification_view);
    TaskView {
        verification,
        task_id: t.id.to_string(),
        client_task_id: t.client_task_id,
        owner: t.owner,
        task_type: t.task_type,
        status: t.status,
        priority: t.priority,
        attempt: t.attempt,
        failures: t.failures,
        worker_id: t.worker_id,
        waiting_reason: t.waiting_reason,
        queue_position: t.queue_position,
        submitted_at_ms: t.submitted_at_ms,
        assigned_at_ms: t.assigned_at_ms,
        started_at_ms: t.started_at_ms,
        finished_at_ms: t.finished_at_ms,
        last_error: t
            .last_error
            .map(|f| TaskErrorView { code: f.code.clone(), message: f.message.to_string() }),
        attempts: t
            .attempts
            .into_iter()
            .map(|a| {
                json!({
                    "attempt": a.attempt,
                    "worker_id": a.worker_id,
                    "assigned_at_ms": a.assigned_at_ms,
                    "ended_at_ms": a.ended_at_ms,
                    "end": a.end.map(|e| e.as_str()),
                })
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TaskFilter {
    /// Only tasks in this state.
    #[param(schema_with = super::schemas::task_state)]
    status: Option<String>,
    /// Only tasks of this type.
    task_type: Option<String>,
    /// Only tasks any attempt of which ran on this worker.
    worker_id: Option<String>,
    /// Only tasks of this owner: `api`, `key:FINGERPRINT` (an API key's) or
    /// `gamer:ID`. A client key lists its own only.
    owner: Option<String>,
    /// Only tasks submitted at or after this time (Unix ms).
    submitted_from_ms: Option<i64>,
    /// Only tasks submitted before this time (Unix ms).
    submitted_to_ms: Option<i64>,
    /// Page size, default 100, at most 1000 (`Limits::default_page`,
    /// `Limits::max_page`).
    limit: Option<usize>,
    /// Keyset paging: only tasks with ids below this one (`next_before` of
    /// the previous page). Fast at any depth.
    #[param(pattern = "^((t-)?[0-9]+)?$")]
    before: Option<String>,
    /// Tasks to skip (newest first), after `before`. At most 100 000
    /// (`Limits::max_offset`).
    #[param(maximum = 100_000)]
    offset: Option<usize>,
}

/// The store filter a query names, or why it is wrong.
pub(super) fn store_filter(
    status: Option<&str>,
    task_type: Option<String>,
    worker: Option<String>,
    owner: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<store::TaskFilter, ApiError> {
    let state = match status.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<TaskState>().map_err(|_| {
            let names: Vec<_> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                "invalid_filter",
                format!("status `{s}` is not one of {}", names.join(", ")),
            )
        })?),
    };
    let text = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    Ok(store::TaskFilter {
        state,
        task_type: text(task_type),
        owner: text(owner),
        worker: text(worker),
        submitted_from_ms: from_ms,
        submitted_to_ms: to_ms,
    })
}

/// Tasks from the store (live and finished, within the result TTL, across restarts), newest first, filtered and paged.
#[utoipa::path(get, path = "/cluster/tasks", tag = "tasks", params(TaskFilter),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody)))]
pub(super) async fn list_tasks(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Params(f): Params<TaskFilter>,
) -> Result<Json<TaskList>, ApiError> {
    let owner = confined_owner(&caller, f.owner)?;
    let filter = store_filter(
        f.status.as_deref(),
        f.task_type,
        f.worker_id,
        owner,
        f.submitted_from_ms,
        f.submitted_to_ms,
    )?;
    let limits = &api.config.limits;
    let limit = f.limit.unwrap_or(limits.default_page).clamp(1, limits.max_page);
    let offset = f.offset.unwrap_or(0);
    if offset > limits.max_offset {
        return Err(ApiError::bad_request(
            "invalid_filter",
            format!("offset is at most {}; page deeper with `before`", limits.max_offset),
        ));
    }
    let before = match f.before.as_deref() {
        None | Some("") => None,
        Some(b) => Some(b.parse::<TaskId>().map_err(|_| {
            ApiError::bad_request("invalid_filter", format!("before `{b}` is not a task id"))
        })?),
    };
    let page = store::Page {
        before: before.map(|t| t.0),
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        skip: u32::try_from(offset).unwrap_or(u32::MAX),
    };
    let (rows, total) = api.read(move |r| Ok((r.tasks(&filter, page)?, r.count(&filter)?))).await?;
    let next_before =
        (rows.len() == limit).then(|| rows.last().map(|t| TaskId(t.task.id).to_string())).flatten();
    let tasks = rows.into_iter().map(stored_view).collect();
    Ok(Json(TaskList { tasks, total, limit, offset, next_before }))
}

/// A stored task as the API shows it (what only the live scheduler knows —
/// why it waits, where it is in the queue — is absent).
pub(super) fn stored_view(t: store::StoredTask) -> TaskView {
    let assigned = t.attempts.last().map(|a| a.assigned_at_ms);
    let verification = stored_verification_view(&t);
    TaskView {
        verification,
        task_id: TaskId(t.task.id).to_string(),
        client_task_id: t.task.client_task_id,
        owner: t.task.owner,
        task_type: t.task.task_type,
        status: t.state,
        priority: t.task.priority,
        attempt: t.attempt,
        failures: t.failures,
        worker_id: t.peer.or_else(|| t.attempts.last().map(|a| a.peer.clone())),
        waiting_reason: None,
        queue_position: None,
        submitted_at_ms: t.task.submitted_at_ms,
        assigned_at_ms: assigned,
        started_at_ms: t.started_at_ms,
        finished_at_ms: t.finished_at_ms,
        last_error: t.error.map(|e| TaskErrorView { code: e.code, message: e.message }),
        attempts: t
            .attempts
            .into_iter()
            .map(|a| {
                json!({
                    "attempt": a.attempt,
                    "worker_id": a.peer,
                    "assigned_at_ms": a.assigned_at_ms,
                    "ended_at_ms": a.ended_at_ms,
                    "end": a.end.map(|e| e.as_str()),
                })
            })
            .collect(),
    }
}

/// The owner a task list is filtered by: the one asked for, or — for a client
/// key, which lists its own tasks only — its own (asking for another's is
/// refused).
pub(super) fn confined_owner(
    caller: &Caller,
    asked: Option<String>,
) -> Result<Option<String>, ApiError> {
    let Some(own) = caller.confined_to() else { return Ok(asked) };
    let own = own.to_string();
    match asked.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        Some(other) if other != own => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a client key lists its own tasks only (owner `{own}`), not `{other}`"),
        )),
        _ => Ok(Some(own)),
    }
}

/// Refuses `task` to a caller that may not touch it — a client key, on
/// another's task — as if it were unknown (404), so that even its existence
/// does not show. Everyone else passes at no cost.
pub(super) async fn check_owner(api: &Api, caller: &Caller, task: TaskId) -> Result<(), ApiError> {
    if caller.confined_to().is_none() {
        return Ok(());
    }
    let owner = match api.request(|reply| ApiRequest::OwnerOf { task, reply }).await? {
        Some(owner) => Some(owner),
        None => {
            let stored = api.read(move |r| r.task(task.0)).await?;
            stored.and_then(|t| t.task.owner.parse::<Owner>().ok())
        }
    };
    match owner {
        Some(owner) if caller.may_touch(&owner) => Ok(()),
        _ => Err(unknown_task(task.to_string())),
    }
}

/// The 404 for a task id the coordinator does not hold.
fn unknown_task(id: String) -> ApiError {
    ApiError::not_found(format!("no task `{id}` is known")).task(id)
}

pub(super) fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::not_found(format!("no task `{id}` is known (ids look like t-42)")).task(id)
    })
}

/// Where a task stands: state, attempt, worker, why it waits, timestamps, attempt history, last error. The state told is durable: a restart of the coordinator does not take it back.
#[utoipa::path(get, path = "/cluster/tasks/{id}/status", tag = "tasks",
    params(("id" = String, Path, description = "The cluster task id, e.g. t-42")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
pub(super) async fn task_status(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
) -> Result<Json<TaskView>, ApiError> {
    let task = parse_id(&id)?;
    check_owner(&api, &caller, task).await?;
    // The live view first (why it waits, its queue position); the store for
    // a task the scheduler no longer holds. A state is told once durable, as
    // results are: a crash cannot take back what a client was told.
    if let Some(now) = api.request(|reply| ApiRequest::Task { task, reply }).await? {
        api.durable(now.seq).await?;
        return Ok(Json(task_view(now)));
    }
    let stored = api.read(move |r| r.task(task.0)).await?;
    stored.map(|t| Json(stored_view(t))).ok_or_else(|| unknown_task(id))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ResultWait {
    /// Seconds to wait for the task to finish (default 0, at most 300).
    timeout: Option<f64>,
}

/// A task's result, waiting up to `timeout` seconds for it to finish (no polling needed). 202 while unfinished; 422 with the task's error when it failed, was cancelled or timed out.
#[utoipa::path(get, path = "/cluster/tasks/{id}/result", tag = "tasks",
    params(("id" = String, Path, description = "The cluster task id"), ResultWait),
    responses((status = 200, body = TaskResultView), (status = 202, description = "Not finished yet", body = Pending),
              (status = 404, body = ErrorBody),
              (status = 422, description = "The task failed, was cancelled or timed out", body = ErrorBody),
              (status = 503, description = "`busy`: too many requests wait for results (with `retry_after_s`); or `unavailable`", body = ErrorBody)))]
pub(super) async fn task_result(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
    Params(wait): Params<ResultWait>,
) -> Result<Response, ApiError> {
    let task = parse_id(&id)?;
    check_owner(&api, &caller, task).await?;
    let limit = api.config.limits.max_result_wait.as_secs_f64();
    let timeout = wait.timeout.filter(|t| t.is_finite()).unwrap_or(0.0).clamp(0.0, limit);
    // Registering and reading the state are one step on the core: no race, no polling.
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    api.core_send(ApiRequest::AwaitOutcome { task, reply: tx }).await?;
    let answer = match tokio::time::timeout(Duration::from_secs_f64(timeout), &mut rx).await {
        Ok(answer) => answer,
        Err(_) => {
            // The core takes requests in order: once it has told the task's
            // state, the wait asked for before has its answer if the task
            // has finished (with no timeout, the first look may come before
            // the core has read the wait at all).
            let now = api.request(|reply| ApiRequest::Task { task, reply }).await?;
            let Some(now) = now else { return Err(unknown_task(id)) };
            if !now.status.is_terminal() {
                let pending = Pending {
                    task_id: task.to_string(),
                    status: now.status,
                    detail: "not finished yet; ask again (with ?timeout=S to wait)".into(),
                };
                return Ok((StatusCode::ACCEPTED, Json(pending)).into_response());
            }
            rx.await
        }
    };
    let done = match answer {
        Ok(Awaited::Finished(done)) => done,
        Ok(Awaited::Unknown) => return Err(unknown_task(id)),
        Ok(Awaited::Busy) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::BUSY.as_str(),
                "too many requests wait for results; retry shortly",
            )
            .retry_after(1.0));
        }
        Err(_) => return Err(ApiError::unavailable()),
    };
    // What goes out must be durable, as for results pushed to gamers.
    api.durable(done.seq).await?;
    Ok(Json(outcome_view(task, done)?).into_response())
}

/// A finished task's result, or the error saying how it ended.
pub(super) fn outcome_view(task: TaskId, done: Finished) -> Result<TaskResultView, ApiError> {
    match done.outcome {
        sched::Outcome::Completed { result, peer, .. } => Ok(TaskResultView {
            task_id: task.to_string(),
            client_task_id: done.client_task_id,
            status: TaskState::Completed,
            result: serde_json::from_str(result.get()).unwrap_or(Value::Null),
            worker_id: peer.to_string(),
            attempts: done.attempts,
        }),
        other => {
            let f = other.failure().unwrap_or_else(|| sched::Failure::new(FailureCode::FAILED, ""));
            let status = other.status().as_str();
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                f.code.as_str(),
                format!("the task {status}: {}", f.message),
            )
            .task(task.to_string()))
        }
    }
}

/// Cancels a task; a running one is stopped on its worker.
#[utoipa::path(delete, path = "/cluster/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The cluster task id")),
    responses((status = 202, description = "Cancelled (a running task is stopped on its worker)"),
              (status = 404, body = ErrorBody), (status = 409, description = "Already finished", body = ErrorBody)))]
pub(super) async fn cancel(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let task = parse_id(&id)?;
    check_owner(&api, &caller, task).await?;
    let result = api.request(|reply| ApiRequest::Cancel { task, reply }).await?;
    match result {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(json!({"task_id": id, "status": "cancelled"})))
            .into_response()),
        Err(CancelError::AlreadyFinished(s)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "task_finished",
            format!("task `{id}` already ended ({})", s.as_str()),
        )
        .task(id)),
        Err(_) => Err(unknown_task(id)),
    }
}
