//! Worker routes: the connected workers, and approving new ones.

use api_types::{AwayWorker, Revoked, WorkerCredential, WorkerInfo, WorkerList, WorkerStats};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use codes::WorkerStatus;
use sched::Time;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Body, Id, Params};
use super::{Api, ApiError, ErrorBody};
use crate::core::ApiRequest;
use crate::snapshot::WorkerFacts;

// --------------------------------------------------------------- workers

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WorkerFilter {
    /// healthy, unhealthy, paused, draining or quarantined.
    #[param(schema_with = super::schemas::worker_status)]
    status_filter: Option<String>,
}

/// A worker's view from the facts of a snapshot taken at `now`.
pub(super) fn worker_info(w: &WorkerFacts, now: Time, heartbeat_interval: Duration) -> WorkerInfo {
    let since = |t: Time| now.saturating_since(t).as_secs_f64();
    let heartbeat = w.heartbeat.as_ref();
    WorkerInfo {
        worker_id: w.id.to_string(),
        status: w.status(now, heartbeat_interval),
        address: w.address.map(|a| a.to_string()),
        slots: w.slots,
        busy_slots: w.busy_slots,
        current_load: f64::from(w.busy_slots) / f64::from(w.slots.max(1)),
        task_types: w.task_types.clone(),
        models: w.models.clone(),
        capabilities: Value::clone(&w.capabilities),
        tasks_completed: w.completed,
        tasks_failed: w.failed,
        last_heartbeat_seconds_ago: since(w.last_seen),
        connected_seconds: since(w.joined_at),
        cpu_percent: heartbeat.and_then(|h| h.cpu_percent),
        memory_used_mb: heartbeat.and_then(|h| h.memory_used_mb),
        gpus: heartbeat.and_then(|h| h.gpus.clone()).unwrap_or_default(),
        reputation: w.reputation.as_ref().map(super::trust::reputation_view),
    }
}

/// The connected workers, optionally only those in one state.
#[utoipa::path(get, path = "/cluster/workers", tag = "workers", params(WorkerFilter),
    responses((status = 200, body = WorkerList), (status = 400, body = ErrorBody)))]
pub(super) async fn list_workers(
    State(api): State<Api>,
    Params(filter): Params<WorkerFilter>,
) -> Result<Json<WorkerList>, ApiError> {
    let wanted = match filter.status_filter.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
        None => None,
        Some(s) => Some(s.parse::<WorkerStatus>().map_err(|_| {
            let names: Vec<_> = WorkerStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                "invalid_filter",
                format!("status_filter `{s}` is not one of {}", names.join(", ")),
            )
        })?),
    };
    let (snap, now) = (api.snapshot(), api.now());
    let interval = api.config.heartbeat_interval;
    let workers: Vec<_> = snap
        .workers
        .iter()
        .map(|w| worker_info(w, now, interval))
        .filter(|w| wanted.is_none_or(|s| w.status == s))
        .collect();
    let quarantined_away = match wanted {
        None | Some(WorkerStatus::Quarantined) => snap
            .quarantined_away
            .iter()
            .map(|(id, r)| AwayWorker {
                worker_id: id.to_string(),
                reputation: super::trust::reputation_view(r),
            })
            .collect(),
        Some(_) => Vec::new(),
    };
    Ok(Json(WorkerList { total: workers.len(), workers, quarantined_away }))
}

/// One connected worker: capabilities, load, counts, heartbeat age.
#[utoipa::path(get, path = "/cluster/workers/{id}", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = WorkerInfo), (status = 404, body = ErrorBody)))]
pub(super) async fn worker(
    State(api): State<Api>,
    Id(id): Id,
) -> Result<Json<WorkerInfo>, ApiError> {
    let snap = api.snapshot();
    let w = snap.worker(&id).ok_or_else(|| unknown_worker(&id))?;
    Ok(Json(worker_info(w, api.now(), api.config.heartbeat_interval)))
}

fn unknown_worker(id: &str) -> ApiError {
    ApiError::not_found(format!("no worker `{id}` is connected"))
}

/// One worker with the tasks it holds and its measured run times by task type.
#[utoipa::path(get, path = "/cluster/workers/{id}/stats", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = WorkerStats), (status = 404, body = ErrorBody)))]
pub(super) async fn worker_stats(
    State(api): State<Api>,
    Id(id): Id,
) -> Result<Json<WorkerStats>, ApiError> {
    let snap = api.snapshot();
    let w = snap.worker(&id).ok_or_else(|| unknown_worker(&id))?;
    Ok(Json(WorkerStats {
        worker: worker_info(w, api.now(), api.config.heartbeat_interval),
        running_tasks: w.running.iter().map(ToString::to_string).collect(),
        average_run_time_ms: w.run_time_ms.clone(),
    }))
}

/// `POST /cluster/workers/register` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterWorker {
    /// The peer id the worker will register with: 1–256 bytes of UTF-8,
    /// no control characters, not only spaces.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub worker_id: String,
}

/// Approves a worker id and returns its own join credential (admin).
#[utoipa::path(post, path = "/cluster/workers/register", tag = "workers",
    request_body = RegisterWorker,
    responses((status = 201, body = WorkerCredential), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 500, description = "No credential could be made (the system's random source failed)", body = ErrorBody)))]
pub(super) async fn register_worker(
    State(api): State<Api>,
    Body(body): Body<RegisterWorker>,
) -> Result<Response, ApiError> {
    let id = body.worker_id.trim().to_owned();
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_worker_id",
            "worker_id must be 1–256 printable characters",
        ));
    }
    let token = tls::random_secret()
        .map(|s| format!("lgw_{s}"))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let credential_sha256 = crate::approvals::digest(&token);
    // Approved in memory and in the store (when there is one) before the
    // credential is shown: it keeps working after a restart.
    let worker_id = id.clone();
    let seq = api
        .request(|reply| ApiRequest::ApproveWorker { worker_id, credential_sha256, reply })
        .await?;
    api.durable(seq).await?;
    let worker_id = id;
    let body = WorkerCredential { worker_id, token, status: "approved".to_owned() };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Revokes a worker's own credential (admin): its connection is closed at
/// once and the credential admits nobody from then on. The worker may join
/// again only with a (rotated) join token, under a new credential.
#[utoipa::path(post, path = "/cluster/workers/{id}/revoke", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = Revoked), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_worker(
    State(api): State<Api>,
    Id(id): Id,
) -> Result<Json<Revoked>, ApiError> {
    let worker_id = id.clone();
    let seq = api.request(|reply| ApiRequest::RevokeWorker { worker_id, reply }).await?;
    let Some(seq) = seq else {
        return Err(ApiError::not_found(format!("worker `{id}` has no credential to revoke")));
    };
    api.durable(seq).await?;
    tracing::info!(peer = %id, "revoked a worker's credential");
    Ok(Json(Revoked { worker_id: id, status: "revoked".to_owned() }))
}
