//! Worker routes: the connected workers, and approving new ones.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{Api, ApiError, ErrorBody};
use crate::core::Core;

// --------------------------------------------------------------- workers

/// A worker (peer) as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerInfo {
    pub worker_id: String,
    /// healthy, unhealthy (heartbeats late) or draining.
    pub status: &'static str,
    pub address: Option<String>,
    pub slots: u32,
    pub busy_slots: u32,
    /// busy_slots / slots, 0–1.
    pub current_load: f64,
    /// Task types it runs; null means every type.
    pub task_types: Option<Vec<String>>,
    pub models: Vec<String>,
    /// The capabilities exactly as the worker declared them.
    #[schema(value_type = Object)]
    pub capabilities: Value,
    pub tasks_completed: u64,
    pub tasks_failed: u64,
    pub last_heartbeat_seconds_ago: f64,
    pub connected_seconds: f64,
    pub cpu_percent: Option<f32>,
    pub memory_used_mb: Option<u64>,
}

/// `GET /cluster/workers/{id}/stats`: the worker and what it is doing.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerStats {
    #[serde(flatten)]
    pub worker: WorkerInfo,
    /// Cluster ids of the tasks it holds.
    pub running_tasks: Vec<String>,
    /// Mean measured run time by task type, in milliseconds.
    pub average_run_time_ms: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
    pub total: usize,
}

#[derive(Debug, Deserialize, IntoParams)]
pub(super) struct WorkerFilter {
    /// healthy, unhealthy or draining.
    status_filter: Option<String>,
}

pub(super) fn workers(core: &Core, only: Option<&str>) -> Vec<WorkerInfo> {
    core.sched
        .peers()
        .filter(|p| only.is_none_or(|id| p.id().as_str() == id))
        .map(|p| worker_info(core, p))
        .collect()
}

/// Seconds since `t`, by the core's clock.
fn seconds_since(core: &Core, t: sched::Time) -> f64 {
    core.now().as_micros().saturating_sub(t.as_micros()) as f64 / 1e6
}

/// `draining`; `unhealthy` when its heartbeats are more than two intervals
/// late (it is declared dead only at the heartbeat timeout); else `healthy`.
pub(super) fn peer_status(core: &Core, p: &sched::Peer) -> &'static str {
    if p.draining() {
        "draining"
    } else if seconds_since(core, p.last_seen())
        > 2.0 * core.config.heartbeat_interval.as_secs_f64()
    {
        "unhealthy"
    } else {
        "healthy"
    }
}

fn worker_info(core: &Core, p: &sched::Peer) -> WorkerInfo {
    let since = |t: sched::Time| seconds_since(core, t);
    let silent = since(p.last_seen());
    let status = peer_status(core, p);
    let info = core.peer_info.get(p.id());
    let heartbeat = info.and_then(|i| i.heartbeat.as_ref());
    let caps = p.caps();
    WorkerInfo {
        worker_id: p.id().to_string(),
        status,
        address: info.and_then(|i| i.remote).map(|a| a.to_string()),
        slots: caps.slots,
        busy_slots: p.used(),
        current_load: f64::from(p.used()) / f64::from(caps.slots.max(1)),
        task_types: caps.task_types.as_ref().map(|t| t.iter().map(ToString::to_string).collect()),
        models: caps.models.iter().map(ToString::to_string).collect(),
        capabilities: info.map(|i| i.caps.raw.clone()).unwrap_or(Value::Null),
        tasks_completed: p.completed(),
        tasks_failed: p.failed(),
        last_heartbeat_seconds_ago: silent,
        connected_seconds: since(p.joined_at()),
        cpu_percent: heartbeat.and_then(|h| h.cpu_percent),
        memory_used_mb: heartbeat.and_then(|h| h.memory_used_mb),
    }
}

/// The connected workers, optionally only those in one state.
#[utoipa::path(get, path = "/cluster/workers", tag = "workers", params(WorkerFilter),
    responses((status = 200, body = WorkerList), (status = 400, body = ErrorBody)))]
pub(super) async fn list_workers(
    State(api): State<Api>,
    Query(filter): Query<WorkerFilter>,
) -> Result<Json<WorkerList>, ApiError> {
    let wanted = filter.status_filter.map(|s| s.trim().to_ascii_lowercase());
    if let Some(s) = &wanted
        && !["healthy", "unhealthy", "draining"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_filter",
            format!("status_filter `{s}` is not one of healthy, unhealthy, draining"),
        ));
    }
    let mut list = api.call(|core| workers(core, None)).await?;
    if let Some(s) = wanted {
        list.retain(|w| w.status == s);
    }
    Ok(Json(WorkerList { total: list.len(), workers: list }))
}

/// One connected worker: capabilities, load, counts, heartbeat age.
#[utoipa::path(get, path = "/cluster/workers/{id}", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = WorkerInfo), (status = 404, body = ErrorBody)))]
pub(super) async fn worker(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let found = api.call(move |core| workers(core, Some(&id)).pop().ok_or(id)).await?;
    found.map(Json).map_err(|id| ApiError::not_found(format!("no worker `{id}` is connected")))
}

/// One worker with the tasks it holds and its measured run times by task type.
#[utoipa::path(get, path = "/cluster/workers/{id}/stats", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = WorkerStats), (status = 404, body = ErrorBody)))]
pub(super) async fn worker_stats(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<WorkerStats>, ApiError> {
    let found = api
        .call(move |core| {
            let Some(p) = core.sched.peer(&id) else { return Err(id) };
            let running = p.tasks().map(|(t, _)| t.to_string()).collect();
            let times = p.runtimes().map(|(t, e)| (t.to_owned(), e.mean_us / 1e3)).collect();
            Ok(WorkerStats {
                worker: worker_info(core, p),
                running_tasks: running,
                average_run_time_ms: times,
            })
        })
        .await?;
    found.map(Json).map_err(|id| ApiError::not_found(format!("no worker `{id}` is connected")))
}

/// `POST /cluster/workers/register` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterWorker {
    /// The peer id the worker will register with.
    pub worker_id: String,
}

/// The approved worker's join credential, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerCredential {
    pub worker_id: String,
    /// Give it to the worker: `legacygpu worker start --peer-id ID --token CREDENTIAL`.
    pub token: String,
    pub status: &'static str,
}

/// Approves a worker id and returns its own join credential (admin).
#[utoipa::path(post, path = "/cluster/workers/register", tag = "workers",
    request_body = RegisterWorker,
    responses((status = 201, body = WorkerCredential), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(super) async fn register_worker(
    State(api): State<Api>,
    Json(body): Json<RegisterWorker>,
) -> Result<Response, ApiError> {
    let id = body.worker_id.trim().to_owned();
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_worker_id",
            "worker_id must be 1–256 printable characters",
        ));
    }
    let token = new_credential();
    let digest = crate::approvals::digest(&token);
    let worker_id = id.clone();
    // Approved in memory and in the store (when there is one) before the
    // credential is shown: it keeps working after a restart.
    let seq = api
        .call(move |core| {
            core.approvals.approve(&id, digest.clone());
            let at_ms = crate::clock::Clock::unix_ms(core.now());
            core.observer.record(store::Op::Approved {
                peer_id: id,
                credential_sha256: digest,
                at_ms,
            });
            core.observer.commit();
            core.observer.appended()
        })
        .await?;
    api.durable(seq).await?;
    let body = WorkerCredential { worker_id, token, status: "approved" };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// 32 random bytes, URL-safe base64.
fn new_credential() -> String {
    let bytes: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..)).take(32).collect();
    format!("lgw_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
