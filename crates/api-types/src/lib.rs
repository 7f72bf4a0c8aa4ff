//! The REST API's answers, shared by the coordinator that serves them (with
//! their OpenAPI schemas) and the CLI that reads them: one definition per
//! answer, so that a renamed field breaks the build, not a table at run time.
//! Requests and errors stay with their handlers.

use std::collections::BTreeMap;

use codes::{FailureCode, TaskState, Verdict, VerifyStatus, WorkerStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `GET /cluster/health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// HEALTHY, DEGRADED (some workers unhealthy) or CRITICAL (no workers).
    pub status: String,
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
    /// `leader` or `standby` (a coordinator on SQLite or memory leads
    /// itself). A standby's task and worker counts are its own: none.
    pub role: String,
    /// On PostgreSQL: the lease's epoch (this coordinator's while it leads).
    pub epoch: Option<u64>,
    /// Seconds since the leader last renewed the lease, when anyone leads.
    pub lease_age_s: Option<f64>,
    /// The leader's HTTP API URL, when anyone leads (on PostgreSQL).
    pub leader: Option<String>,
    /// The leader's WebSocket URL, when anyone leads (on PostgreSQL).
    pub leader_ws: Option<String>,
    /// On PostgreSQL: every coordinator on the database, as each last
    /// reported itself (empty on SQLite or memory: one coordinator).
    #[serde(default)]
    pub coordinators: Vec<CoordinatorInfo>,
}

/// One coordinator of a PostgreSQL store, from the registry every
/// coordinator reports to each time it asks for or renews the lease.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CoordinatorInfo {
    /// Its unique name (host, pid and a random part), as in the lease.
    pub holder: String,
    /// Its WebSocket URL.
    pub ws: String,
    /// Its HTTP API's URL, when it serves one.
    pub http: Option<String>,
    /// `leader`, `standby`, `deposed` (says it leads but does not hold the
    /// lease) or `gone` (no report for longer than a lease: killed or
    /// frozen; a clean stop leaves the list).
    pub role: String,
    /// The epoch it leads at, or the last one it saw.
    pub epoch: u64,
    pub uptime_seconds: f64,
    /// Seconds since its last report.
    pub seen_seconds_ago: f64,
    /// Whether it is the coordinator that answered.
    pub this: bool,
}

/// `GET /cluster/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

/// A worker (peer) as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    pub worker_id: String,
    /// healthy, unhealthy (heartbeats late), paused, draining, or
    /// quarantined (its results were found wrong too often: no new work
    /// until cleared).
    #[schema(value_type = String)]
    pub status: WorkerStatus,
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
    /// Results it returned that completed and that failed, over its
    /// sessions: reconnects keep them, and after a coordinator restart they
    /// start from the store's history (the tasks kept, within the result
    /// TTL; replicas and canaries are not kept).
    pub tasks_completed: u64,
    pub tasks_failed: u64,
    pub last_heartbeat_seconds_ago: f64,
    pub connected_seconds: f64,
    pub cpu_percent: Option<f32>,
    pub memory_used_mb: Option<u64>,
    /// Each GPU's busy % and VRAM use, from the worker's last heartbeat,
    /// where its OS exposes them (Linux amdgpu sysfs).
    #[schema(value_type = Vec<Object>)]
    pub gpus: Vec<proto::GpuUsage>,
    /// What its results were found to be, once any was judged.
    pub reputation: Option<ReputationView>,
}

/// `GET /cluster/workers/{id}/stats`: the worker and what it is doing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerStats {
    #[serde(flatten)]
    pub worker: WorkerInfo,
    /// Cluster ids of the tasks it holds.
    pub running_tasks: Vec<String>,
    /// Mean measured run time by task type, in milliseconds.
    pub average_run_time_ms: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    /// Connected workers.
    pub workers: Vec<WorkerInfo>,
    pub total: usize,
    /// Quarantined workers that are not connected (listed unless a status
    /// other than `quarantined` is asked for): the quarantine stays until an
    /// operator clears it (`legacygpu worker clear ID`).
    #[serde(default)]
    pub quarantined_away: Vec<AwayWorker>,
}

/// A quarantined worker that is not connected.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AwayWorker {
    pub worker_id: String,
    pub reputation: ReputationView,
}

/// The approved worker's join credential, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerCredential {
    pub worker_id: String,
    /// Give it to the worker: `legacygpu worker start --peer-id ID --token CREDENTIAL`.
    pub token: String,
    pub status: String,
}

/// `POST /cluster/workers/{id}/revoke` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Revoked {
    pub worker_id: String,
    pub status: String,
}

/// A worker control's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerControlled {
    pub worker_id: String,
    /// `paused`, `resumed` or `draining`.
    pub status: String,
}

/// What a worker's results were found to be (docs/VERIFICATION.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReputationView {
    /// Results found right: in a quorum, past a check, or a canary answered.
    pub valid: u64,
    /// Results found wrong: outside a quorum, a failed check, a missed canary.
    pub invalid: u64,
    /// Results accepted without a check (trusted, or of a type that cannot be verified).
    pub unverified: u64,
    /// Valid results since the last invalid one: adaptive replication
    /// replicates a worker's work with probability 1/this once it reaches 10.
    pub consecutive_valid: u32,
    pub canaries_passed: u64,
    pub canaries_failed: u64,
    /// Invalid results not yet forgiven; at the threshold the worker is quarantined.
    pub strikes: u32,
    pub quarantined: bool,
}

/// What `clear` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cleared {
    pub worker_id: String,
    /// True when it was quarantined (false: nothing to clear).
    pub cleared: bool,
    /// Its status now, when it is connected.
    #[schema(value_type = Option<String>)]
    pub status: Option<WorkerStatus>,
}

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub task_id: String,
    pub client_task_id: String,
    /// `api` (the operator), `key:FINGERPRINT` (an API key's) or `gamer:ID`.
    pub owner: String,
    pub task_type: String,
    /// queued, assigned, running, completed, failed, cancelled, timed_out.
    #[schema(value_type = String)]
    pub status: TaskState,
    pub priority: i32,
    pub attempt: u32,
    pub failures: u32,
    pub worker_id: Option<String>,
    pub waiting_reason: Option<String>,
    /// Queued tasks ahead of it (0: next), counted up to 10 000.
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
    /// Its replicas and verdict, when it is verified.
    pub verification: Option<VerificationView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskErrorView {
    #[schema(value_type = String)]
    pub code: FailureCode,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    /// Tasks matching the filter.
    pub total: u64,
    pub limit: usize,
    pub offset: usize,
    /// Pass as `before` for the next page; null on the last page.
    pub next_before: Option<String>,
}

/// A verified task's replicas and verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerificationView {
    /// `replicas/quorum`, with `/adaptive` under adaptive replication.
    pub policy: String,
    /// pending, agreed, self_checked, trusted, unverifiable, no_quorum, ended.
    #[schema(value_type = String)]
    pub status: VerifyStatus,
    /// Every replica, with its result: what a `no_quorum` leaves for the operator.
    pub replicas: Vec<ReplicaView>,
}

/// One replica of a verified task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplicaView {
    /// The replica's own cluster id.
    pub task_id: String,
    pub worker_id: Option<String>,
    pub attempts: u32,
    /// pending, valid, invalid, unverified, unjudged.
    #[schema(value_type = String)]
    pub verdict: Verdict,
    /// Its result, when it completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
}

/// A finished task's result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskResultView {
    pub task_id: String,
    pub client_task_id: String,
    #[schema(value_type = String)]
    pub status: TaskState,
    #[schema(value_type = Object)]
    pub result: Value,
    pub worker_id: String,
    pub attempts: u32,
}

/// Not finished within the wait.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pending {
    pub task_id: String,
    #[schema(value_type = String)]
    pub status: TaskState,
    pub detail: String,
}

/// A retry's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Retried {
    pub task_id: String,
    #[schema(value_type = String)]
    pub status: TaskState,
}

/// What a bulk action matched and did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkDone {
    pub action: String,
    /// Tasks the filter matches in the store.
    pub matched: u64,
    /// True when nothing was done (no `confirm`).
    pub dry_run: bool,
    /// Tasks cancelled or retried.
    pub done: u64,
    /// Matched tasks it did not apply to (finished, completed, …).
    pub skipped: u64,
}

/// The cluster's join tokens.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Tokens {
    /// For `legacygpu worker start --join TOKEN --coordinator wss://HOST:8765`.
    pub worker_token: String,
    /// For clients: `--token TOKEN` (it pins the CA too).
    pub client_token: String,
    /// SHA-256 of the CA certificate's DER SubjectPublicKeyInfo, lowercase
    /// hex: what `--ca-hash` takes.
    pub ca_sha256: String,
}
