//! The message structs, one per `msg_type`, grouped by sender.
//!
//! Fields the seed shows are plain; everything we added is optional on the
//! way in (`#[serde(default)]`) and omitted on the way out when empty, so a
//! client written from the seed alone never sees a required field it does not
//! know.

pub use codes::{ErrorCode, FailureCode, TaskState};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{DecodeError, Json, check_id, empty_object, invalid};

/// The longest `timeout_s` / `queue_timeout_s` we accept: one week.
pub const MAX_TIMEOUT_S: f64 = 7.0 * 24.0 * 3600.0;
/// The most attempts a task may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

// ---------------------------------------------------------------------------
// Peer → coordinator.

/// `register_peer`: a peer joins (or rejoins, replacing its old session).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterPeer {
    pub peer_id: String,
    /// Free-form in the seed; read leniently by [`crate::Capabilities::from_json`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Json>,
    /// The cluster's shared token, when the coordinator requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Tasks this peer is still running from an earlier session: they stay
    /// assigned to it instead of being requeued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<RunningTask>,
}

/// `join` (added): a new worker presents the cluster's worker join token
/// (its secret part) and is given a credential of its own in `joined`, for
/// `register_peer` from then on. Sent on a connection that has not
/// registered; only over TLS pinned to the coordinator's CA by the worker.
#[derive(Clone, Serialize, Deserialize)]
pub struct Join {
    pub peer_id: String,
    /// The join token's secret; empty or absent when it comes as the
    /// upgrade's `Authorization: Bearer` header instead.
    #[serde(default)]
    pub token: String,
}

impl std::fmt::Debug for Join {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Join").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

/// One task a reconnecting peer is still running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    pub task_id: String,
    pub attempt: u32,
    /// The cluster id from the assignment, when the peer kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `heartbeat`: the peer is alive. Sent every 5 s by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub peer_id: String,
    /// Tasks running on the peer right now (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_tasks: Option<u32>,
    /// The peer's CPU use, 0–100 (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    /// The peer's used memory in MiB (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_mb: Option<u64>,
    /// Each GPU's use, where the OS exposes it (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<GpuUsage>>,
}

/// One GPU's use in a heartbeat: on Linux, what the kernel driver exposes
/// under `/sys/class/drm/cardN/device/` (AMD's amdgpu: `gpu_busy_percent`,
/// `mem_info_vram_used`, `mem_info_vram_total`). Each field is absent where
/// the driver does not expose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuUsage {
    /// The card's name, e.g. `card0`.
    pub card: String,
    /// How busy the GPU is, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_percent: Option<f32>,
    /// Video memory in use, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used_mb: Option<u64>,
    /// Video memory in all, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_total_mb: Option<u64>,
}

/// `task_started`: the peer began running an assignment. Optional; our
/// worker sends it only for tasks still running after a short delay, so
/// that short tasks cost no extra message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskStarted {
    pub task_id: String,
    /// The cluster id from the assignment (`task_assignment.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// `task_result`, from a peer: the outcome of an assignment. The seed sends
/// `result`; a failed run sends `error` instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: String,
    /// The cluster id from the assignment (`task_assignment.id`): when
    /// present, it names the task rather than `task_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub result: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskFailure>,
    /// The attempt this result belongs to (from `task_assignment.attempt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// How long the run took on the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<f64>,
}

/// Why a task failed on a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// A stable code: `invalid_input`, `limit_exceeded`, `unavailable`,
    /// `timed_out`, `cancelled`, `internal`, `unsupported_task_type`, …
    pub code: FailureCode,
    #[serde(default, alias = "reason")]
    pub message: String,
    /// Whether another attempt could succeed. When absent, the code decides
    /// (`unavailable` and `internal` are retryable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

impl TaskFailure {
    /// Whether the coordinator should try the task again.
    pub fn is_retryable(&self) -> bool {
        self.retryable.unwrap_or_else(|| self.code.retryable_by_default())
    }
}

/// `return_task`: the peer gives an assignment back unrun or unfinished
/// (it is shutting down). The task is requeued without counting a failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnTask {
    pub task_id: String,
    /// The cluster id from the assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `task_progress`, from a peer: output a running assignment produced since
/// its previous progress (streamed text generation). Best-effort: the
/// `task_result` that follows is the complete answer. The worker coalesces
/// deltas, so at most one goes per task every few milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProgress {
    pub task_id: String,
    /// The cluster id from the assignment (`task_assignment.id`): when
    /// present, it names the task rather than `task_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The attempt it belongs to (from `task_assignment.attempt`).
    pub attempt: u32,
    /// 0, 1, 2, … per attempt, consecutive: a gap means deltas were lost.
    pub seq: u64,
    /// The text appended since the previous progress; never splits a UTF-8 character.
    pub text: String,
    /// How many generated tokens this delta covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
}

/// `drain`: the peer takes no new tasks (it is shutting down).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Drain {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
}

// ---------------------------------------------------------------------------
// Gamer → coordinator.

/// `register_gamer`: a client joins. Reconnecting with the same id delivers
/// the results that completed while it was away.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterGamer {
    pub gamer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Ids of acknowledged tasks whose outcome the gamer still waits for
    /// (sent when reconnecting): finished ones are sent again, unknown ones
    /// get a `task_error` with code `unknown_task`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting: Vec<String>,
}

/// `task_request`: submit a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRequest {
    /// The gamer's own id for the task; the coordinator makes one when absent
    /// and says which in `task_accepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub task_type: String,
    #[serde(default = "empty_object")]
    pub data: Json,
    /// Higher runs first: a number, or `LOW`, `NORMAL` (default), `HIGH`, `CRITICAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The most the task may run on a peer, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    /// The most the task may wait in the queue before it starts, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout_s: Option<f64>,
    /// How many failed attempts end the task (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    /// Resubmitting the same key returns the original task, never a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Send me the run's progress (`task_progress`) as it comes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Run on `replicas` distinct peers and accept the result once `quorum`
    /// agree (docs/VERIFICATION.md); the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyPolicy>,
}

/// `task_request.verify`: how a task's result is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyPolicy {
    /// Replicas run on distinct peers, 1–16 (1 with quorum 1: no verification).
    pub replicas: u32,
    /// Results that must agree, 1–`replicas`; default `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// Adaptive replication: trusted workers' results are replicated only
    /// now and then. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adaptive: bool,
}

/// The most replicas a task may ask for.
pub const MAX_REPLICAS: u32 = 16;

impl VerifyPolicy {
    /// The quorum, defaulted.
    pub fn quorum(&self) -> u32 {
        self.quorum.unwrap_or(self.replicas)
    }
}

impl TaskRequest {
    /// A request with only the seed's fields set.
    pub fn new(task_type: impl Into<String>, data: Json) -> TaskRequest {
        TaskRequest {
            task_id: None,
            task_type: task_type.into(),
            data,
            priority: None,
            timeout_s: None,
            queue_timeout_s: None,
            max_attempts: None,
            requirements: None,
            idempotency_key: None,
            stream: false,
            verify: None,
        }
    }

    pub(crate) fn validate(&self, t: &str) -> Result<(), DecodeError> {
        if let Some(id) = &self.task_id {
            check_id(t, "task_id", id)?;
        }
        check_id(t, "task_type", &self.task_type)?;
        if let Some(key) = &self.idempotency_key {
            check_id(t, "idempotency_key", key)?;
        }
        check_timeout(t, "timeout_s", self.timeout_s)?;
        check_timeout(t, "queue_timeout_s", self.queue_timeout_s)?;
        if let Some(n) = self.max_attempts
            && (n == 0 || n > MAX_ATTEMPTS_LIMIT)
        {
            return Err(invalid(t, format!("`max_attempts` must be 1..={MAX_ATTEMPTS_LIMIT}")));
        }
        if let Some(Requirements { model: Some(model), .. }) = &self.requirements {
            check_id(t, "requirements.model", model)?;
        }
        if let Some(v) = &self.verify {
            if v.replicas == 0 || v.replicas > MAX_REPLICAS {
                return Err(invalid(t, format!("`verify.replicas` must be 1..={MAX_REPLICAS}")));
            }
            if v.quorum() == 0 || v.quorum() > v.replicas {
                return Err(invalid(t, "`verify.quorum` must be 1..=verify.replicas".to_owned()));
            }
        }
        Ok(())
    }
}

fn check_timeout(t: &str, field: &str, value: Option<f64>) -> Result<(), DecodeError> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0 && v <= MAX_TIMEOUT_S) => Err(invalid(
            t,
            format!("`{field}` must be a number of seconds in (0, {MAX_TIMEOUT_S}]"),
        )),
        _ => Ok(()),
    }
}

/// What a peer must have to run a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// A model the peer must serve (inference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The peer must have a GPU adapter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gpu: bool,
    /// The peer's GPU must have at least this much memory (implies `gpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_vram_mb: Option<u64>,
}

/// `cancel_task`, from a gamer: cancel one of its tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelTask {
    pub task_id: String,
}

/// `task_status`, from a gamer: ask where one of its tasks stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskStatusQuery {
    pub task_id: String,
}

/// A task priority: higher runs first, FIFO within a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Priority(pub i32);

impl Priority {
    pub const LOW: Priority = Priority(0);
    pub const NORMAL: Priority = Priority(1);
    pub const HIGH: Priority = Priority(2);
    pub const CRITICAL: Priority = Priority(3);

    /// Reads a seed-2 name (`LOW`, `NORMAL`, `HIGH`, `CRITICAL`, any case) or an integer.
    pub fn parse(text: &str) -> Option<Priority> {
        match text.trim().to_ascii_uppercase().as_str() {
            "LOW" => Some(Priority::LOW),
            "NORMAL" => Some(Priority::NORMAL),
            "HIGH" => Some(Priority::HIGH),
            "CRITICAL" => Some(Priority::CRITICAL),
            other => other.parse().ok().map(Priority),
        }
    }
}

impl Default for Priority {
    fn default() -> Priority {
        Priority::NORMAL
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i32),
            Name(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "priority must be an integer or one of LOW, NORMAL, HIGH, CRITICAL",
            )
        })? {
            Raw::Int(n) => Ok(Priority(n)),
            Raw::Name(name) => Priority::parse(&name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown priority `{name}` (expected LOW, NORMAL, HIGH, CRITICAL or an integer)"
                ))
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Coordinator → peers and gamers.

/// `registration_ack`: the registration was accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationAck {
    /// Always `"registered"`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamer_id: Option<String>,
    /// How often the peer should heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_s: Option<f64>,
    /// How long a silent peer lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_s: Option<f64>,
    /// The largest frame the coordinator accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<u64>,
    /// Tasks from `register_peer.running` the coordinator no longer holds for
    /// this peer: the peer should stop them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<RunningTask>,
}

impl RegistrationAck {
    /// The seed's plain `{"status": "registered"}`.
    pub fn registered() -> RegistrationAck {
        RegistrationAck {
            status: "registered".to_owned(),
            peer_id: None,
            gamer_id: None,
            heartbeat_interval_s: None,
            heartbeat_timeout_s: None,
            max_frame_bytes: None,
            stale: Vec::new(),
        }
    }
}

/// `joined` (added): the answer to `join`, sent once the coordinator has
/// stored the approval: the worker's own credential, to keep and present
/// (as `token`, or `Authorization: Bearer`) on every later connection.
#[derive(Clone, Serialize, Deserialize)]
pub struct Joined {
    pub peer_id: String,
    pub credential: String,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

/// `task_assignment`: run this task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskAssignment {
    /// The submitter's own id when no other live task holds it, else the
    /// cluster id (see docs/PROTOCOL.md, "Ids").
    pub task_id: String,
    pub task_data: Json,
    /// The cluster id (`t-42`); echo it in `task_result.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub task_type: String,
    /// Echo it in `task_result.attempt`.
    #[serde(default)]
    pub attempt: u32,
    /// The most the task may run, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
}

/// `cancel_task`, to a peer: stop this assignment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelAssignment {
    pub task_id: String,
    /// The cluster id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub attempt: u32,
    #[serde(default)]
    pub reason: String,
}

/// `task_accepted`: the submission is queued (and durable, when the store is on).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskAccepted {
    /// The gamer's id for the task (made by the coordinator when the request had none).
    pub task_id: String,
    /// The cluster-wide id, for the REST API and the CLI.
    pub id: String,
    pub status: TaskState,
    /// True when an idempotency key matched an existing task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub existing: bool,
    /// Why the task cannot start yet, e.g. "no capable peer: …".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
}

/// `task_result`, to a gamer: the task completed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResultOut {
    pub task_id: String,
    pub result: Json,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
}

/// `task_error`, to a gamer: the task ended without a result (failed,
/// cancelled or timed out). It is the one and only answer for that task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskErrorOut {
    pub task_id: String,
    /// The cluster id; empty (and omitted) for a task the coordinator has
    /// no record of.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub status: TaskState,
    pub code: FailureCode,
    pub reason: String,
    #[serde(default)]
    pub attempts: u32,
}

/// `task_progress`, to a gamer: a delta of a streamed task's output (sent
/// only for tasks submitted with `stream: true`, best-effort).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProgressOut {
    /// The gamer's id for the task.
    pub task_id: String,
    /// The cluster-wide id.
    #[serde(default)]
    pub id: String,
    pub attempt: u32,
    pub seq: u64,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
}

/// `task_status`, to a gamer: where a task stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskStatusOut {
    pub task_id: String,
    pub id: String,
    pub status: TaskState,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
}

/// `error`: a message was refused. The connection stays open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// A stable code, e.g. `malformed_json`, `unknown_msg_type`, `not_registered`.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub reason: String,
    /// The `msg_type` of the refused message, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// The task the refused message named, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// When to try again (for `busy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<f64>,
    /// For `not_leader`: the leader's WebSocket URL, when one leads. Boxed:
    /// rare, and kept out of every other error's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<Box<LeaderUrl>>,
}

/// A leader's WebSocket URL, as a standby's `not_leader` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaderUrl(pub String);

impl ErrorMsg {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> ErrorMsg {
        ErrorMsg {
            code,
            reason: reason.into(),
            in_reply_to: None,
            task_id: None,
            retry_after_s: None,
            leader: None,
        }
    }

    pub fn in_reply_to(mut self, msg_type: impl Into<String>) -> ErrorMsg {
        self.in_reply_to = Some(msg_type.into());
        self
    }

    pub fn task(mut self, task_id: impl Into<String>) -> ErrorMsg {
        self.task_id = Some(task_id.into());
        self
    }
}

/// `shutdown`: the coordinator is stopping; reconnect later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shutdown {
    pub reason: String,
}

/// Where a task is in its life.
/// Deserializes a field that, when present, is always `Some` — even when it
/// is JSON `null`, which is a legitimate task result.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}
