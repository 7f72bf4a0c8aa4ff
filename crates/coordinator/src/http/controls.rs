//! The owner's controls over HTTP: pause, resume and drain a worker; retry a
//! task; cancel or retry every task a filter matches (a dry run gives the
//! count first; `confirm: true` acts).

use api_types::{BulkDone, Retried, WorkerControlled};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use sched::{PeerError, RetryError, TaskId, TaskState};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{Body, Id};
use super::{Api, ApiError, Caller, ErrorBody};
use crate::core::ApiRequest;
use crate::core::controls::{BulkAction, BulkOutcome, Control, WorkerAction};

async fn control_worker(
    api: &Api,
    worker_id: String,
    action: WorkerAction,
) -> Result<Json<WorkerControlled>, ApiError> {
    let id = worker_id.clone();
    let answer = api
        .request(|reply| ApiRequest::Control(Control::Worker { worker_id: id, action, reply }))
        .await?;
    match answer {
        Ok(()) => {
            tracing::info!(peer = %worker_id, action = action.as_str(), "an operator acted on a worker");
            Ok(Json(WorkerControlled { worker_id, status: action.as_str().to_owned() }))
        }
        Err(PeerError::NotRegistered | PeerError::UnknownTask(_)) => {
            Err(ApiError::not_found(format!("no worker `{worker_id}` is connected")))
        }
    }
}

/// Pauses a worker (admin): it keeps its connection and running tasks and gets nothing new until resumed.
#[utoipa::path(post, path = "/cluster/workers/{id}/pause", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = WorkerControlled), (status = 404, body = ErrorBody)))]
pub(super) async fn pause(
    State(api): State<Api>,
    Id(id): Id,
) -> Result<Json<WorkerControlled>, ApiError> {
    control_worker(&api, id, WorkerAction::Pause).await
}

/// Resumes a paused worker, or one an operator is draining that has not yet left (admin); a worker draining itself goes on leaving.
#[utoipa::path(post, path = "/cluster/workers/{id}/resume", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = WorkerControlled), (status = 404, body = ErrorBody)))]
pub(super) async fn resume(
    State(api): State<Api>,
    Id(id): Id,
) -> Result<Json<WorkerControlled>, ApiError> {
    control_worker(&api, id, WorkerAction::Resume).await
}

/// Drains a worker (admin): it gets nothing new, finishes what it runs, then is told to leave (close code 4004) and does not reconnect.
#[utoipa::path(post, path = "/cluster/workers/{id}/drain", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = WorkerControlled), (status = 404, body = ErrorBody)))]
pub(super) async fn drain(
    State(api): State<Api>,
    Id(id): Id,
) -> Result<Json<WorkerControlled>, ApiError> {
    control_worker(&api, id, WorkerAction::Drain).await
}

/// Runs a failed, cancelled or timed-out task the coordinator still holds again under the same id, with a fresh budget of attempts and queue deadline (attempt numbers go on, so a late result of an old run is fenced off); a gamer already handed its earlier outcome is not sent the new one. 409 `task_completed` (its result stands), `task_not_finished` (cancel it first) or `task_stopping` (a worker still stops its last run; retry shortly).
#[utoipa::path(post, path = "/cluster/tasks/{id}/retry", tag = "tasks",
    params(("id" = String, Path, description = "The cluster task id")),
    responses((status = 202, body = Retried), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(super) async fn retry(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
) -> Result<(StatusCode, Json<Retried>), ApiError> {
    let task = super::tasks::parse_id(&id)?;
    super::tasks::check_owner(&api, &caller, task).await?;
    let answer = api.request(|reply| ApiRequest::Control(Control::Retry { task, reply })).await?;
    let conflict = |code: &str, detail: String| {
        ApiError::new(StatusCode::CONFLICT, code, detail).task(task.to_string())
    };
    match answer {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(Retried { task_id: task.to_string(), status: TaskState::Queued }),
        )),
        Err(RetryError::UnknownTask) => Err(ApiError::not_found(format!(
            "no task `{id}` is held (unknown, or past its result TTL)"
        ))
        .task(id)),
        Err(RetryError::Completed) => {
            Err(conflict("task_completed", format!("task `{id}` completed: its result stands")))
        }
        Err(RetryError::NotFinished(s)) => Err(conflict(
            "task_not_finished",
            format!("task `{id}` has not finished ({}); cancel it first", s.as_str()),
        )),
        Err(RetryError::StillStopping) => Err(conflict(
            "task_stopping",
            format!("a worker still stops the last run of `{id}`; retry shortly"),
        )
        .retry_after(1.0)),
    }
}

/// Which tasks a bulk action touches (the task list's filters).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct BulkFilter {
    #[schema(schema_with = super::schemas::task_state)]
    pub status: Option<String>,
    pub task_type: Option<String>,
    pub worker_id: Option<String>,
    pub owner: Option<String>,
    pub submitted_from_ms: Option<i64>,
    pub submitted_to_ms: Option<i64>,
}

/// `POST /cluster/tasks/bulk` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkRequest {
    /// `cancel` or `retry`.
    #[schema(schema_with = super::schemas::bulk_action)]
    pub action: String,
    #[serde(default)]
    pub filter: BulkFilter,
    /// False (the default): only count what the filter matches. True: act.
    #[serde(default)]
    pub confirm: bool,
}

/// Cancels or retries every task a filter matches (admin; in steps of 10 000, each one step of the core): without `confirm` a dry run that only counts.
#[utoipa::path(post, path = "/cluster/tasks/bulk", tag = "tasks", request_body = BulkRequest,
    responses((status = 200, body = BulkDone), (status = 400, body = ErrorBody)))]
pub(super) async fn bulk(
    State(api): State<Api>,
    Body(body): Body<BulkRequest>,
) -> Result<Json<BulkDone>, ApiError> {
    let action = match body.action.as_str() {
        "cancel" => BulkAction::Cancel,
        "retry" => BulkAction::Retry,
        other => {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("action `{other}` is not cancel or retry"),
            ));
        }
    };
    let (done, matched) = bulk_action(&api, action, body.filter, body.confirm).await?;
    Ok(Json(BulkDone {
        action: body.action,
        matched,
        dry_run: !body.confirm,
        done: done.done,
        skipped: done.skipped,
    }))
}

/// Counts what `filter` matches and, when `confirm`, acts on all of it: the
/// ids come from the store, newest first, a step of `bulk_step` at a time
/// (a keyset below the last id, so tasks submitted meanwhile are not
/// included and the walk ends), the decisions from the core.
pub(super) async fn bulk_action(
    api: &Api,
    action: BulkAction,
    f: BulkFilter,
    confirm: bool,
) -> Result<(BulkOutcome, u64), ApiError> {
    let filter = super::tasks::store_filter(
        f.status.as_deref(),
        f.task_type,
        f.worker_id,
        f.owner,
        f.submitted_from_ms,
        f.submitted_to_ms,
    )?;
    if !confirm {
        let matched = api.read(move |r| r.count(&filter)).await?;
        return Ok((BulkOutcome::default(), matched));
    }
    let step = api.config.limits.bulk_step.max(1);
    let counted = filter.clone();
    let matched = api.read(move |r| r.count(&counted)).await?;
    let mut outcome = BulkOutcome::default();
    let mut before = None;
    loop {
        let f = filter.clone();
        let ids = api
            .read(move |r| {
                let (mut ids, mut before) = (Vec::new(), before);
                while ids.len() < step {
                    let limit = u32::try_from(step - ids.len()).unwrap_or(u32::MAX);
                    let page = store::Page { before, limit: limit.min(store::MAX_PAGE), skip: 0 };
                    let rows = r.tasks(&f, page)?;
                    let Some(last) = rows.last() else { break };
                    before = Some(last.task.id);
                    ids.extend(rows.iter().map(|t| TaskId(t.task.id)));
                }
                Ok(ids)
            })
            .await?;
        let Some(last) = ids.last() else { break };
        before = Some(last.0);
        let full = ids.len() == step;
        let (done, seq) = api
            .request(|reply| ApiRequest::Control(Control::Bulk { action, tasks: ids, reply }))
            .await?;
        // Answered once durable, so that a list read next shows it.
        api.durable(seq).await?;
        outcome.done += done.done;
        outcome.skipped += done.skipped;
        if !full {
            break;
        }
    }
    tracing::info!(?action, done = outcome.done, skipped = outcome.skipped, "a bulk action");
    Ok((outcome, matched))
}
