//! Cluster-wide routes: health, metrics, configuration, shutdown, Prometheus.

use api_types::{ClusterMetrics, CoordinatorInfo, Health};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use codes::WorkerStatus;
use sched::{Strategy, Time};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::extract::Body;
use super::{Api, ApiError, ErrorBody};
use crate::config::StoreMode;
use crate::core::ApiRequest;
use crate::snapshot::Snapshot;

// ---------------------------------------------------------------- health

/// Cluster health: HEALTHY, DEGRADED (some workers late, paused, draining or quarantined) or CRITICAL (no workers), with worker and task counts, average latency and uptime.
#[utoipa::path(get, path = "/cluster/health", tag = "cluster",
    responses((status = 200, body = Health), (status = 401, body = ErrorBody)))]
pub(super) async fn health(State(api): State<Api>) -> Json<Health> {
    let (snap, now) = (api.snapshot(), api.now());
    let stats = &snap.stats;
    let total = snap.workers.len();
    let healthy = healthy_workers(&snap, now, api.config.heartbeat_interval);
    let figures = &snap.figures;
    let status = match (total, healthy) {
        (0, _) => "CRITICAL",
        (n, h) if h < n => "DEGRADED",
        _ => "HEALTHY",
    };
    let lease = api.ha().map(|v| v.status.borrow().clone());
    let role = match (&lease, api.standby()) {
        (_, Some(_)) => "standby",
        (Some(s), None) => s.role.as_str(),
        (None, None) => "leader",
    };
    let leader = lease.as_ref().and_then(|s| s.leader.clone());
    let coordinators = lease.as_ref().map_or_else(Vec::new, |s| {
        s.coordinators()
            .into_iter()
            .map(|c| CoordinatorInfo {
                holder: c.holder,
                ws: c.ws,
                http: c.http,
                role: c.role,
                epoch: c.epoch,
                uptime_seconds: c.up.as_secs_f64(),
                seen_seconds_ago: c.seen.as_secs_f64(),
                this: c.this,
            })
            .collect()
    });
    Json(Health {
        coordinators,
        role: role.to_owned(),
        epoch: lease.as_ref().map(|s| s.epoch),
        lease_age_s: lease.as_ref().and_then(|s| s.lease_age()).map(|a| a.as_secs_f64()),
        leader: leader.as_ref().and_then(|l| l.http.clone()),
        leader_ws: leader.map(|l| l.ws),
        status: status.to_owned(),
        total_workers: total,
        healthy_workers: healthy,
        unhealthy_workers: total - healthy,
        total_tasks: snap.tasks_held,
        pending_tasks: stats.queued,
        running_tasks: stats.assigned + stats.running,
        completed_tasks: figures.completed,
        failed_tasks: figures.failed,
        average_task_latency_ms: figures.avg_latency.map(ms),
        uptime_seconds: figures.uptime.as_secs_f64(),
    })
}

/// Workers whose status is healthy at `now`.
pub(super) fn healthy_workers(snap: &Snapshot, now: Time, interval: Duration) -> usize {
    snap.workers.iter().filter(|w| w.status(now, interval) == WorkerStatus::Healthy).count()
}

/// Throughput, success rate, latencies, active workers and slots.
#[utoipa::path(get, path = "/cluster/metrics", tag = "cluster",
    responses((status = 200, body = ClusterMetrics), (status = 401, body = ErrorBody)))]
pub(super) async fn cluster_metrics(State(api): State<Api>) -> Json<ClusterMetrics> {
    let snap = api.snapshot();
    let (s, f) = (&snap.stats, &snap.figures);
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
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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
    /// `sqlite`, `postgres` or `memory`.
    pub store: &'static str,
    /// SQLite's directory, or PostgreSQL's URL without its password.
    pub data_dir: Option<String>,
    /// `api_keys`, `token`, or `protected_mode` (loopback only) / `insecure`.
    pub auth: &'static str,
}

/// The coordinator's configuration and the balancing strategy in use.
#[utoipa::path(get, path = "/cluster/config", tag = "config",
    responses((status = 200, body = ClusterConfig)))]
pub(super) async fn config(State(api): State<Api>) -> Json<ClusterConfig> {
    let strategy = api.snapshot().strategy;
    let c = &api.config;
    let (store, data_dir) = match &c.store {
        StoreMode::Sqlite { data_dir, .. } => ("sqlite", Some(data_dir.display().to_string())),
        StoreMode::Postgres { target, .. } => ("postgres", Some(target.to_string())),
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
    Json(ClusterConfig {
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
    })
}

/// `PUT /cluster/config/balancing` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Balancing {
    /// ROUND_ROBIN, LEAST_LOADED, GPU_MATCH, LATENCY or ADAPTIVE.
    #[serde(alias = "balancing_strategy")]
    #[schema(schema_with = super::schemas::strategy)]
    pub strategy: String,
}

/// Switches the load-balancing strategy at run time (admin).
#[utoipa::path(put, path = "/cluster/config/balancing", tag = "config", request_body = Balancing,
    responses((status = 200, description = "Switched; applies to the next placement"),
              (status = 400, body = ErrorBody)))]
pub(super) async fn set_balancing(
    State(api): State<Api>,
    Body(body): Body<Balancing>,
) -> Result<Response, ApiError> {
    let Some(strategy) = Strategy::parse(&body.strategy) else {
        let names: Vec<_> = Strategy::ALL.iter().map(|s| s.name()).collect();
        return Err(ApiError::bad_request(
            "invalid_strategy",
            format!("unknown strategy `{}`; use one of {}", body.strategy, names.join(", ")),
        ));
    };
    let previous = api.request(|reply| ApiRequest::SetStrategy { strategy, reply }).await?;
    tracing::info!(from = %previous, to = %strategy, "balancing strategy switched");
    Ok(Json(json!({"balancing_strategy": strategy.name(), "previous": previous.name()}))
        .into_response())
}

/// Shuts the coordinator down gracefully (admin).
#[utoipa::path(post, path = "/cluster/shutdown", tag = "config",
    responses((status = 202, description = "The coordinator is shutting down")))]
pub(super) async fn shutdown(State(api): State<Api>) -> Response {
    tracing::info!("shutdown requested through the API");
    let _ = api.stop.send(true);
    (StatusCode::ACCEPTED, Json(json!({"status": "shutting_down"}))).into_response()
}

// --------------------------------------------------------------- metrics

/// Prometheus metrics (text format), every name `legacygpu_*`.
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(super) async fn prometheus(State(api): State<Api>) -> Response {
    let (snap, now) = (api.snapshot(), api.now());
    let healthy = healthy_workers(&snap, now, api.config.heartbeat_interval);
    let mut leader_info = None;
    if let Some(view) = api.ha() {
        let s = view.status.borrow().clone();
        let leading = !view.standby && s.role == crate::ha::Role::Leader;
        api.metrics.lease(leading, s.epoch, s.lease_age());
        let leader = s.leader.as_ref();
        let ws = leader.map(|l| l.ws.as_str()).filter(|ws| !ws.is_empty());
        let http = leader.and_then(|l| l.http.as_deref());
        leader_info = Some(crate::telemetry::Metrics::leader_info(http, ws));
    }
    let mut text = api.metrics.render(&snap, healthy);
    text.extend(leader_info);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
