//! What the API shows of verification: a worker's reputation, a task's
//! replicas and verdict, and the operator's `clear` of a quarantine.

use axum::Json;
use axum::extract::{Path, State};
use codes::WorkerStatus;
use proto::Json as RawJson;
use sched::TaskId;
use sched::verify::{Reputation, Verification};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Api, ApiError, ErrorBody};
use crate::core::ApiRequest;

/// What a worker's results were found to be (docs/VERIFICATION.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<&Reputation> for ReputationView {
    fn from(r: &Reputation) -> ReputationView {
        ReputationView {
            valid: r.valid,
            invalid: r.invalid,
            unverified: r.unverified,
            consecutive_valid: r.consecutive_valid,
            canaries_passed: r.canaries_passed,
            canaries_failed: r.canaries_failed,
            strikes: r.strikes,
            quarantined: r.quarantined,
        }
    }
}

/// A verified task's replicas and verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationView {
    /// `replicas/quorum`, with `/adaptive` under adaptive replication.
    pub policy: String,
    /// pending, agreed, self_checked, trusted, unverifiable, no_quorum, ended.
    pub status: String,
    /// Every replica, with its result: what a `no_quorum` leaves for the operator.
    pub replicas: Vec<ReplicaView>,
}

/// One replica of a verified task.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaView {
    /// The replica's own cluster id.
    pub task_id: String,
    pub worker_id: Option<String>,
    pub attempts: u32,
    /// pending, valid, invalid, unverified, unjudged.
    pub verdict: String,
    /// Its result, when it completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
}

pub(super) fn verification_view(v: &Verification<RawJson>) -> VerificationView {
    VerificationView {
        policy: v.policy.to_string(),
        status: v.status.as_str().to_owned(),
        replicas: v
            .replicas
            .iter()
            .map(|r| ReplicaView {
                task_id: r.task.to_string(),
                worker_id: r.peer.as_ref().map(ToString::to_string),
                attempts: r.attempts,
                verdict: r.verdict.as_str().to_owned(),
                result: r.result.as_ref().and_then(|j| serde_json::from_str(j.get()).ok()),
                error: r.failure.as_ref().map(ToString::to_string),
            })
            .collect(),
    }
}

/// A stored task's verification (its replicas are read with one task, not
/// with a list).
pub(super) fn stored_verification_view(t: &store::StoredTask) -> Option<VerificationView> {
    let status = t.verify_status?;
    Some(VerificationView {
        policy: t.task.verify.clone().unwrap_or_else(|| "off".to_owned()),
        status: status.as_str().to_owned(),
        replicas: t
            .replicas
            .iter()
            .map(|r| ReplicaView {
                task_id: TaskId(r.task_id).to_string(),
                worker_id: r.peer.clone(),
                attempts: r.attempts,
                verdict: r.verdict.as_str().to_owned(),
                result: r.result.as_deref().and_then(|j| serde_json::from_str(j).ok()),
                error: r.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)),
            })
            .collect(),
    })
}

/// What `clear` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    pub worker_id: String,
    /// True when it was quarantined (false: nothing to clear).
    pub cleared: bool,
    /// Its status now, when it is connected.
    #[schema(value_type = Option<String>)]
    pub status: Option<WorkerStatus>,
}

/// Lifts a worker's quarantine (admin): it gets work again, starting over as a new worker (always replicated until trusted again).
#[utoipa::path(post, path = "/cluster/workers/{id}/clear", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = Cleared), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(super) async fn clear_worker(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Cleared>, ApiError> {
    let worker_id = id.clone();
    let answer = api.request(|reply| ApiRequest::ClearWorker { worker_id, reply }).await?;
    let done = answer.map_err(|_| {
        ApiError::not_found(format!("no worker `{id}` is connected or has a reputation"))
    })?;
    api.durable(done.seq).await?;
    let status = done
        .connected
        .map(|draining| if draining { WorkerStatus::Draining } else { WorkerStatus::Healthy });
    Ok(Json(Cleared { worker_id: id, cleared: done.was, status }))
}
