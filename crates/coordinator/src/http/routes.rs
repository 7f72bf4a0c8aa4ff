//! The REST routes, each with the role it needs and its OpenAPI description.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use base64::Engine;
use proto::ToCoordinator;
use sched::{CancelError, Owner, Strategy, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{Api, ApiError, ErrorBody, events};
use crate::config::{ApiRole, StoreMode};
use crate::core::{Core, messages, wire_state};

/// One route: its method and path (axum's syntax, the same as OpenAPI's),
/// the least role that may call it, and its handler.
pub(crate) struct Route {
    pub method: Method,
    pub path: &'static str,
    pub role: ApiRole,
    pub handler: fn() -> MethodRouter<Api>,
}

const fn route(
    method: Method,
    path: &'static str,
    role: ApiRole,
    handler: fn() -> MethodRouter<Api>,
) -> Route {
    Route { method, path, role, handler }
}

use ApiRole::{Admin, Client, ReadOnly};

/// Every route the API serves (the docs' own pages need `ReadOnly`).
pub(crate) const ROUTES: &[Route] = &[
    route(Method::GET, "/cluster/health", ReadOnly, || get(health)),
    route(Method::GET, "/cluster/metrics", ReadOnly, || get(cluster_metrics)),
    route(Method::GET, "/cluster/workers", ReadOnly, || get(list_workers)),
    route(Method::GET, "/cluster/workers/{id}", ReadOnly, || get(worker)),
    route(Method::GET, "/cluster/workers/{id}/stats", ReadOnly, || get(worker_stats)),
    route(Method::POST, "/cluster/workers/register", Admin, || post(register_worker)),
    route(Method::POST, "/cluster/tasks/submit", Client, || post(submit)),
    route(Method::POST, "/cluster/tasks", Client, || post(submit)),
    route(Method::GET, "/cluster/tasks", ReadOnly, || get(list_tasks)),
    route(Method::GET, "/cluster/tasks/{id}/status", ReadOnly, || get(task_status)),
    route(Method::GET, "/cluster/tasks/{id}/result", Client, || get(task_result)),
    route(Method::DELETE, "/cluster/tasks/{id}", Client, || delete(cancel)),
    route(Method::GET, "/cluster/config", ReadOnly, || get(config)),
    route(Method::PUT, "/cluster/config/balancing", Admin, || put(set_balancing)),
    route(Method::POST, "/cluster/shutdown", Admin, || post(shutdown)),
    route(Method::GET, "/ws/cluster/events", ReadOnly, || get(events::stream)),
    route(Method::GET, "/metrics", ReadOnly, || get(prometheus)),
];

/// The role a request needs: its route's, or read-only for the docs and
/// unknown paths (which then answer 404).
pub(crate) fn required_role(method: &Method, path: Option<&str>) -> ApiRole {
    let Some(path) = path else { return ReadOnly };
    ROUTES
        .iter()
        .filter(|r| r.path == path)
        .find(|r| r.method == method || (r.method == Method::GET && method == Method::HEAD))
        .map_or(ReadOnly, |r| r.role)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "legacygpu cluster API",
        description = "Operate a legacygpu cluster: health, workers, tasks, configuration, \
                       live events and Prometheus metrics. Authenticate with \
                       `Authorization: Bearer KEY` or `X-API-Key: KEY`."
    ),
    paths(
        health, cluster_metrics, list_workers, worker, worker_stats, register_worker, submit,
        submit_alias, list_tasks, task_status, task_result, cancel, config, set_balancing,
        shutdown, events::stream, prometheus
    ),
    components(schemas(ErrorBody, crate::telemetry::ApiEvent)),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = []))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

// ---------------------------------------------------------------- health

/// `GET /cluster/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// HEALTHY, DEGRADED (some workers unhealthy) or CRITICAL (no workers).
    pub status: &'static str,
    pub total_workers: usize,
    pub healthy_workers: usize,
    pub unhealthy_workers: usize,
    /// Tasks held: live ones and finished ones still retained.
    pub total_tasks: usize,
    pub pending_tasks: usize,
    pub running_tasks: usize,
    /// Since the coordinator started.
    pub completed_tasks: u64,
    pub failed_tasks: u64,
    /// Mean time from submission to outcome, in milliseconds.
    pub average_task_latency_ms: Option<f64>,
    pub uptime_seconds: f64,
}

/// Cluster health: HEALTHY, DEGRADED (some workers late) or CRITICAL (no workers), with worker and task counts, average latency and uptime.
#[utoipa::path(get, path = "/cluster/health", tag = "cluster",
    responses((status = 200, body = Health), (status = 401, body = ErrorBody)))]
async fn health(State(api): State<Api>) -> Result<Json<Health>, ApiError> {
    api.call(|core| {
        let workers = workers(core, None);
        let healthy = workers.iter().filter(|w| w.status == "healthy").count();
        let stats = core.sched.stats();
        let figures = core.telemetry.figures();
        let status = match (workers.len(), healthy) {
            (0, _) => "CRITICAL",
            (n, h) if h < n => "DEGRADED",
            _ => "HEALTHY",
        };
        Json(Health {
            status,
            total_workers: workers.len(),
            healthy_workers: healthy,
            unhealthy_workers: workers.len() - healthy,
            total_tasks: core.sched.task_count(),
            pending_tasks: stats.queued,
            running_tasks: stats.assigned + stats.running,
            completed_tasks: figures.completed,
            failed_tasks: figures.failed,
            average_task_latency_ms: figures.avg_latency.map(ms),
            uptime_seconds: figures.uptime.as_secs_f64(),
        })
    })
    .await
}

/// `GET /cluster/metrics`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterMetrics {
    /// Tasks finished (either way) in the last minute.
    pub tasks_per_minute: u64,
    /// Tasks finished per second over the last minute.
    pub throughput_per_second: f64,
    /// Completed / finished since start, 0–1 (null before any finished).
    pub success_rate: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub average_run_time_ms: Option<f64>,
    pub active_workers: usize,
    pub pending_tasks: usize,
    pub running_tasks: usize,
    pub completed_tasks: u64,
    pub failed_tasks: u64,
    pub slots_total: u64,
    pub slots_used: u64,
    pub uptime_seconds: f64,
}

/// Throughput, success rate, latencies, active workers and slots.
#[utoipa::path(get, path = "/cluster/metrics", tag = "cluster",
    responses((status = 200, body = ClusterMetrics), (status = 401, body = ErrorBody)))]
async fn cluster_metrics(State(api): State<Api>) -> Result<Json<ClusterMetrics>, ApiError> {
    api.call(|core| {
        let s = core.sched.stats();
        let f = core.telemetry.figures();
        let finished = f.completed + f.failed;
        Json(ClusterMetrics {
            tasks_per_minute: f.tasks_per_minute,
            throughput_per_second: f.tasks_per_minute as f64 / 60.0,
            success_rate: (finished > 0).then(|| f.completed as f64 / finished as f64),
            average_latency_ms: f.avg_latency.map(ms),
            average_run_time_ms: f.avg_run_time.map(ms),
            active_workers: s.peers - s.peers_draining,
            pending_tasks: s.queued,
            running_tasks: s.assigned + s.running,
            completed_tasks: f.completed,
            failed_tasks: f.failed,
            slots_total: s.slots_total,
            slots_used: s.slots_used,
            uptime_seconds: f.uptime.as_secs_f64(),
        })
    })
    .await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

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
struct WorkerFilter {
    /// healthy, unhealthy or draining.
    status_filter: Option<String>,
}

fn workers(core: &Core, only: Option<&str>) -> Vec<WorkerInfo> {
    core.sched
        .peers()
        .filter(|p| only.is_none_or(|id| p.id().as_str() == id))
        .map(|p| worker_info(core, p))
        .collect()
}

fn worker_info(core: &Core, p: &sched::Peer) -> WorkerInfo {
    let now = core.now();
    let since = |t: sched::Time| now.as_micros().saturating_sub(t.as_micros()) as f64 / 1e6;
    let silent = since(p.last_seen());
    let late = silent > 2.0 * core.config.heartbeat_interval.as_secs_f64();
    let status = if p.draining() {
        "draining"
    } else if late {
        "unhealthy"
    } else {
        "healthy"
    };
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
async fn list_workers(
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
async fn worker(
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
async fn worker_stats(
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
async fn register_worker(
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

// ----------------------------------------------------------------- tasks

/// `POST /cluster/tasks` body (also `POST /cluster/tasks/submit`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitTask {
    /// physics, inference, gpu, echo, sleep… Defaults to `inference` when
    /// `data` names a model.
    pub task_type: Option<String>,
    /// The task's input (seed 2 called it `payload`).
    #[serde(alias = "payload")]
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// A number, or LOW, NORMAL (default), HIGH, CRITICAL.
    #[schema(value_type = Object)]
    pub priority: Option<Value>,
    /// The most one run may take, in seconds.
    #[serde(alias = "timeout")]
    pub timeout_s: Option<f64>,
    /// The most the task may wait before it starts, in seconds.
    pub queue_timeout_s: Option<f64>,
    pub max_attempts: Option<u32>,
    /// `{model, gpu, min_vram_mb}`.
    #[schema(value_type = Object)]
    pub requirements: Option<Value>,
    /// Your own id for the task (the cluster id is used when absent).
    pub task_id: Option<String>,
    /// Resubmitting the same key returns the original task. The
    /// `Idempotency-Key` header does the same.
    pub idempotency_key: Option<String>,
}

/// A task accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The cluster id: use it in `/cluster/tasks/{id}/…`.
    pub task_id: String,
    /// The submitter's own id (the cluster id when none was given).
    pub client_task_id: String,
    pub status: String,
    /// True when an idempotency key matched an earlier submission.
    pub existing: bool,
    /// Why it waits, when no connected worker can run it.
    pub waiting_reason: Option<String>,
}

/// Submits a task: JSON, or multipart with an image file for inference. 201 with the cluster task id; 200 when an idempotency key matched an earlier task.
#[utoipa::path(post, path = "/cluster/tasks", tag = "tasks",
    request_body(content = SubmitTask, description = "JSON; or multipart/form-data with a `file` \
        part (the image, for inference) and `model`, `top_k`, `priority`, `timeout_s` fields"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Resubmitting returns the original task")),
    responses((status = 201, body = Submitted), (status = 200, description = "Idempotent resubmission", body = Submitted),
              (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn submit(
    State(api): State<Api>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let multipart = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let body = if multipart {
        use axum::extract::FromRequest;
        let form = Multipart::from_request(req, &api)
            .await
            .map_err(|e| ApiError::new(e.status(), body_code(e.status()), e.body_text()))?;
        from_multipart(form).await?
    } else {
        use axum::extract::FromRequest;
        let Json(body) = Json::<SubmitTask>::from_request(req, &api)
            .await
            .map_err(|e| ApiError::new(e.status(), body_code(e.status()), e.body_text()))?;
        body
    };
    let header_key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    submit_task(&api, body, header_key).await
}

/// The error code for a body axum refused with `status`.
fn body_code(status: StatusCode) -> &'static str {
    if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_body" }
}

/// Seed 2's path for submitting a task; the same as `POST /cluster/tasks`.
#[utoipa::path(post, path = "/cluster/tasks/submit", tag = "tasks", request_body = SubmitTask,
    responses((status = 201, body = Submitted), (status = 422, body = ErrorBody)))]
#[allow(dead_code)]
async fn submit_alias() {}

/// An inference task from a form: the `file` part is the image.
async fn from_multipart(mut form: Multipart) -> Result<SubmitTask, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), body_code(e.status()), e.body_text())
    };
    let mut data = serde_json::Map::new();
    let mut task = SubmitTask {
        task_type: None,
        data: None,
        priority: None,
        timeout_s: None,
        queue_timeout_s: None,
        max_attempts: None,
        requirements: None,
        task_id: None,
        idempotency_key: None,
    };
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

async fn submit_task(
    api: &Api,
    body: SubmitTask,
    header_key: Option<String>,
) -> Result<Response, ApiError> {
    let data = body.data.unwrap_or_else(|| json!({}));
    let task_type = match body.task_type {
        Some(t) => t,
        None if data.get("model").is_some() => "inference".to_owned(),
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
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string()));
        }
    };
    let (accepted, seq) = api
        .call(move |core| {
            let accepted = messages::accept(core, Owner::Api, req);
            (accepted, core.observer.appended())
        })
        .await?;
    let accepted = accepted.map_err(|e| {
        let status =
            if e.code == "busy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::CONFLICT };
        let mut err = ApiError::new(status, &e.code, e.reason);
        if let Some(r) = e.retry_after_s {
            err = err.retry_after(r);
        }
        err
    })?;
    api.durable(seq).await?;
    let status = if accepted.existing { StatusCode::OK } else { StatusCode::CREATED };
    let body = Submitted {
        task_id: accepted.id,
        client_task_id: accepted.task_id,
        status: accepted.status.as_str().to_owned(),
        existing: accepted.existing,
        waiting_reason: accepted.waiting_reason,
    };
    Ok((status, Json(body)).into_response())
}

/// A task as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub task_id: String,
    pub client_task_id: String,
    /// `api`, or `gamer:ID`.
    pub owner: String,
    pub task_type: String,
    /// queued, assigned, running, completed, failed, cancelled, timed_out.
    pub status: String,
    pub priority: i32,
    pub attempt: u32,
    pub failures: u32,
    pub worker_id: Option<String>,
    pub waiting_reason: Option<String>,
    pub queue_position: Option<usize>,
    /// Unix milliseconds.
    pub submitted_at_ms: i64,
    pub assigned_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub last_error: Option<TaskErrorView>,
    /// Every attempt so far: worker, how it ended.
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskErrorView {
    pub code: String,
    pub message: String,
}

fn task_view(core: &Core, task: &sched::Task<proto::Json>) -> TaskView {
    let unix = |t: sched::Time| crate::clock::Clock::unix_ms(t);
    let spec = task.spec();
    TaskView {
        task_id: task.id().to_string(),
        client_task_id: spec.client_task_id.to_string(),
        owner: spec.owner.to_string(),
        task_type: spec.task_type.to_string(),
        status: wire_state(task.status()).as_str().to_owned(),
        priority: spec.priority,
        attempt: task.attempt().0,
        failures: task.failures(),
        // The current holder, or the one that ran the last attempt.
        worker_id: task
            .peer()
            .or_else(|| task.history().last().map(|a| &a.peer))
            .map(ToString::to_string),
        waiting_reason: core.sched.waiting_reason(task.id()),
        queue_position: core.sched.queue_position(task.id()),
        submitted_at_ms: unix(spec.submitted_at),
        // The current assignment, or the last attempt's when it ended.
        assigned_at_ms: task
            .assigned_at()
            .or_else(|| task.history().last().map(|a| a.assigned_at))
            .map(unix),
        started_at_ms: task.started_at().map(unix),
        finished_at_ms: task.finished_at().map(unix),
        last_error: task
            .last_error()
            .map(|f| TaskErrorView { code: f.code.to_string(), message: f.message.to_string() }),
        attempts: task
            .history()
            .iter()
            .map(|a| {
                json!({
                    "attempt": a.attempt.0,
                    "worker_id": a.peer.to_string(),
                    "assigned_at_ms": unix(a.assigned_at),
                    "ended_at_ms": a.ended_at.map(unix),
                    "end": a.end.as_ref().map(sched::AttemptEnd::as_str),
                })
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
struct TaskFilter {
    /// Only tasks in this state.
    status: Option<String>,
    /// Only tasks of this type.
    task_type: Option<String>,
    /// Page size, default 100, at most 1000.
    limit: Option<usize>,
    /// Tasks to skip (newest first).
    offset: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    /// Tasks matching the filter.
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

const STATES: [&str; 7] =
    ["queued", "assigned", "running", "completed", "failed", "cancelled", "timed_out"];

/// Tasks held by the coordinator (live, and finished ones still kept), newest first, filtered and paged.
#[utoipa::path(get, path = "/cluster/tasks", tag = "tasks", params(TaskFilter),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody)))]
async fn list_tasks(
    State(api): State<Api>,
    Query(f): Query<TaskFilter>,
) -> Result<Json<TaskList>, ApiError> {
    if let Some(s) = &f.status
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_filter",
            format!("status `{s}` is not one of {}", STATES.join(", ")),
        ));
    }
    let limit = f.limit.unwrap_or(100).clamp(1, 1000);
    let offset = f.offset.unwrap_or(0);
    api.call(move |core| {
        let matching: Vec<_> = core
            .sched
            .tasks()
            .rev()
            .filter(|t| f.status.as_deref().is_none_or(|s| wire_state(t.status()).as_str() == s))
            .filter(|t| f.task_type.as_deref().is_none_or(|ty| &*t.spec().task_type == ty))
            .collect();
        let tasks = matching.iter().skip(offset).take(limit).map(|t| task_view(core, t)).collect();
        Json(TaskList { tasks, total: matching.len(), limit, offset })
    })
    .await
}

fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::not_found(format!("no task `{id}` is known (ids look like t-42)")).task(id)
    })
}

/// Where a task stands: state, attempt, worker, why it waits, timestamps, attempt history, last error.
#[utoipa::path(get, path = "/cluster/tasks/{id}/status", tag = "tasks",
    params(("id" = String, Path, description = "The cluster task id, e.g. t-42")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
async fn task_status(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = parse_id(&id)?;
    let view = api.call(move |core| core.sched.task(task).map(|t| task_view(core, t))).await?;
    view.map(Json).ok_or_else(|| ApiError::not_found(format!("no task `{id}` is known")).task(id))
}

#[derive(Debug, Deserialize, IntoParams)]
struct ResultWait {
    /// Seconds to wait for the task to finish (default 0, at most 300).
    timeout: Option<f64>,
}

/// A finished task's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskResultView {
    pub task_id: String,
    pub client_task_id: String,
    pub status: String,
    #[schema(value_type = Object)]
    pub result: Value,
    pub worker_id: String,
    pub attempts: u32,
}

/// Not finished within the wait.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pending {
    pub task_id: String,
    pub status: String,
    pub detail: String,
}

/// A task's result, waiting up to `timeout` seconds for it to finish (no polling needed). 202 while unfinished; 422 with the task's error when it failed, was cancelled or timed out.
#[utoipa::path(get, path = "/cluster/tasks/{id}/result", tag = "tasks",
    params(("id" = String, Path, description = "The cluster task id"), ResultWait),
    responses((status = 200, body = TaskResultView), (status = 202, description = "Not finished yet", body = Pending),
              (status = 404, body = ErrorBody),
              (status = 422, description = "The task failed, was cancelled or timed out", body = ErrorBody)))]
async fn task_result(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(wait): Query<ResultWait>,
) -> Result<Response, ApiError> {
    let task = parse_id(&id)?;
    let timeout = wait.timeout.filter(|t| t.is_finite()).unwrap_or(0.0).clamp(0.0, 300.0);
    // Register for the finish and read the state in one step: no race, no polling.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let known = api
        .call(move |core| {
            let finished = core.sched.task(task).map(|t| t.outcome().is_some());
            if finished == Some(false) {
                let waiters = core.result_waiters.entry(task).or_default();
                waiters.retain(|w| !w.is_closed());
                waiters.push(tx);
            }
            finished.is_some()
        })
        .await?;
    if !known {
        return Err(ApiError::not_found(format!("no task `{id}` is known")).task(id));
    }
    let _ = tokio::time::timeout(Duration::from_secs_f64(timeout), rx).await;
    let answer = api
        .call(move |core| {
            let t = core.sched.task(task)?;
            let spec = t.spec();
            Some(match t.outcome() {
                None => Err(Pending {
                    task_id: task.to_string(),
                    status: wire_state(t.status()).as_str().to_owned(),
                    detail: "not finished yet; ask again (with ?timeout=S to wait)".into(),
                }),
                Some(sched::Outcome::Completed { result, peer, .. }) => Ok(Ok(TaskResultView {
                    task_id: task.to_string(),
                    client_task_id: spec.client_task_id.to_string(),
                    status: "completed".into(),
                    result: serde_json::from_str(result.get()).unwrap_or(Value::Null),
                    worker_id: peer.to_string(),
                    attempts: t.attempt().0,
                })),
                Some(other) => {
                    let f = other.failure().unwrap_or_else(|| sched::Failure::new("failed", ""));
                    let status = wire_state(other.status()).as_str();
                    Ok(Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &f.code,
                        format!("the task {status}: {}", f.message),
                    )
                    .task(task.to_string())))
                }
            })
        })
        .await?;
    match answer {
        None => Err(ApiError::not_found(format!("no task `{id}` is known")).task(id)),
        Some(Err(pending)) => Ok((StatusCode::ACCEPTED, Json(pending)).into_response()),
        Some(Ok(Ok(done))) => Ok(Json(done).into_response()),
        Some(Ok(Err(failed))) => Err(failed),
    }
}

/// Cancels a task; a running one is stopped on its worker.
#[utoipa::path(delete, path = "/cluster/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The cluster task id")),
    responses((status = 202, description = "Cancelled (a running task is stopped on its worker)"),
              (status = 404, body = ErrorBody), (status = 409, description = "Already finished", body = ErrorBody)))]
async fn cancel(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let task = parse_id(&id)?;
    let result = api
        .call(move |core| {
            let owner = core
                .sched
                .task(task)
                .map(|t| t.spec().owner.clone())
                .ok_or(CancelError::UnknownTask)?;
            let now = core.now();
            core.sched.handle_cancel(now, &owner, task)
        })
        .await?;
    match result {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(json!({"task_id": id, "status": "cancelled"})))
            .into_response()),
        Err(CancelError::AlreadyFinished(s)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "task_finished",
            format!("task `{id}` already ended ({})", s.as_str()),
        )
        .task(id)),
        Err(_) => Err(ApiError::not_found(format!("no task `{id}` is known")).task(id)),
    }
}

// ---------------------------------------------------------------- config

/// `GET /cluster/config`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterConfig {
    /// The load-balancing strategy in use.
    pub balancing_strategy: String,
    pub strategies: Vec<&'static str>,
    pub websocket_address: String,
    pub heartbeat_interval_s: f64,
    pub heartbeat_timeout_s: f64,
    pub max_attempts: u32,
    pub max_queued: usize,
    pub result_ttl_s: f64,
    pub max_frame_bytes: usize,
    /// `sqlite` or `memory`.
    pub store: &'static str,
    pub data_dir: Option<String>,
    /// `api_keys`, `token`, or `protected_mode` (loopback only) / `insecure`.
    pub auth: &'static str,
}

/// The coordinator's configuration and the balancing strategy in use.
#[utoipa::path(get, path = "/cluster/config", tag = "config",
    responses((status = 200, body = ClusterConfig)))]
async fn config(State(api): State<Api>) -> Result<Json<ClusterConfig>, ApiError> {
    let strategy = api.call(|core| core.sched.config().strategy).await?;
    let c = &api.config;
    let (store, data_dir) = match &c.store {
        StoreMode::Sqlite { data_dir, .. } => ("sqlite", Some(data_dir.display().to_string())),
        StoreMode::Memory => ("memory", None),
    };
    let auth = if !c.api_keys.is_empty() {
        "api_keys"
    } else if c.token.is_some() {
        "token"
    } else if c.insecure {
        "insecure"
    } else {
        "protected_mode"
    };
    Ok(Json(ClusterConfig {
        balancing_strategy: strategy.name().to_owned(),
        strategies: Strategy::ALL.iter().map(|s| s.name()).collect(),
        websocket_address: c.ws_addr.to_string(),
        heartbeat_interval_s: c.heartbeat_interval.as_secs_f64(),
        heartbeat_timeout_s: c.sched.heartbeat_timeout.as_secs_f64(),
        max_attempts: c.sched.default_max_attempts,
        max_queued: c.sched.max_queued,
        result_ttl_s: c.sched.result_ttl.as_secs_f64(),
        max_frame_bytes: c.max_frame_bytes,
        store,
        data_dir,
        auth,
    }))
}

/// `PUT /cluster/config/balancing` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Balancing {
    /// ROUND_ROBIN, LEAST_LOADED, GPU_MATCH, LATENCY or ADAPTIVE.
    #[serde(alias = "balancing_strategy")]
    pub strategy: String,
}

/// Switches the load-balancing strategy at run time (admin).
#[utoipa::path(put, path = "/cluster/config/balancing", tag = "config", request_body = Balancing,
    responses((status = 200, description = "Switched; applies to the next placement"),
              (status = 400, body = ErrorBody)))]
async fn set_balancing(
    State(api): State<Api>,
    Json(body): Json<Balancing>,
) -> Result<Response, ApiError> {
    let Some(strategy) = Strategy::parse(&body.strategy) else {
        let names: Vec<_> = Strategy::ALL.iter().map(|s| s.name()).collect();
        return Err(ApiError::bad_request(
            "invalid_strategy",
            format!("unknown strategy `{}`; use one of {}", body.strategy, names.join(", ")),
        ));
    };
    let previous = api
        .call(move |core| {
            let previous = core.sched.config().strategy;
            core.sched.set_strategy(strategy);
            previous
        })
        .await?;
    tracing::info!(from = %previous, to = %strategy, "balancing strategy switched");
    Ok(Json(json!({"balancing_strategy": strategy.name(), "previous": previous.name()}))
        .into_response())
}

/// Shuts the coordinator down gracefully (admin).
#[utoipa::path(post, path = "/cluster/shutdown", tag = "config",
    responses((status = 202, description = "The coordinator is shutting down")))]
async fn shutdown(State(api): State<Api>) -> Response {
    tracing::info!("shutdown requested through the API");
    let _ = api.stop.send(true);
    (StatusCode::ACCEPTED, Json(json!({"status": "shutting_down"}))).into_response()
}

// --------------------------------------------------------------- metrics

/// Prometheus metrics (text format), every name `legacygpu_*`.
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn prometheus(State(api): State<Api>) -> Result<Response, ApiError> {
    api.call(|core| {
        let s = core.sched.stats();
        let interval = core.config.heartbeat_interval.as_secs_f64();
        let now = core.now();
        let busy: Vec<(String, u32, bool)> = core
            .sched
            .peers()
            .map(|p| {
                let silent = now.as_micros().saturating_sub(p.last_seen().as_micros()) as f64 / 1e6;
                (p.id().to_string(), p.used(), !p.draining() && silent <= 2.0 * interval)
            })
            .collect();
        let uptime = core.telemetry.figures().uptime.as_secs_f64();
        core.telemetry.with(|| {
            metrics::gauge!("legacygpu_queue_depth").set(s.queued as f64);
            metrics::gauge!("legacygpu_tasks_running").set((s.assigned + s.running) as f64);
            metrics::gauge!("legacygpu_peers_connected").set(s.peers as f64);
            metrics::gauge!("legacygpu_peers_healthy")
                .set(busy.iter().filter(|b| b.2).count() as f64);
            metrics::gauge!("legacygpu_slots").set(s.slots_total as f64);
            metrics::gauge!("legacygpu_gamers_connected").set(s.gamers as f64);
            metrics::gauge!("legacygpu_uptime_seconds").set(uptime);
            for (peer, used, _) in busy {
                metrics::gauge!("legacygpu_peer_busy_slots", "peer" => peer).set(f64::from(used));
            }
        });
    })
    .await?;
    let text = api.metrics.render();
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
