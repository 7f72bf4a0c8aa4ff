//! What the API shows of verification: a worker's reputation, a task's
//! replicas and verdict, and the operator's `clear` of a quarantine.

use api_types::{Cleared, ReplicaView, ReputationView, VerificationView};
use axum::Json;
use axum::extract::State;
use proto::Json as RawJson;
use sched::TaskId;
use sched::verify::{Reputation, Verification};

use super::extract::Id;
use super::{Api, ApiError, ErrorBody};
use crate::core::ApiRequest;

/// A reputation as the API shows it.
pub(super) fn reputation_view(r: &Reputation) -> ReputationView {
    {
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

pub(super) fn verification_view(v: &Verification<RawJson>) -> VerificationView {
    VerificationView {
        policy: v.policy.to_string(),
        status: v.status,
        replicas: v
            .replicas
            .iter()
            .map(|r| ReplicaView {
                task_id: r.task.to_string(),
                worker_id: r.peer.as_ref().map(ToString::to_string),
                attempts: r.attempts,
                verdict: r.verdict,
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
        status,
        replicas: t
            .replicas
            .iter()
            .map(|r| ReplicaView {
                task_id: TaskId(r.task_id).to_string(),
                worker_id: r.peer.clone(),
                attempts: r.attempts,
                verdict: r.verdict,
                result: r.result.as_deref().and_then(|j| serde_json::from_str(j).ok()),
                error: r.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)),
            })
            .collect(),
    })
}

/// Lifts a worker's quarantine (admin): it gets work again (unless paused or draining), starting over as a new worker (always replicated until trusted again).
#[utoipa::path(post, path = "/cluster/workers/{id}/clear", tag = "workers",
    params(("id" = String, Path, description = "The worker's peer id")),
    responses((status = 200, body = Cleared), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(super) async fn clear_worker(
    State(api): State<Api>,
    Id(id): Id,
) -> Result<Json<Cleared>, ApiError> {
    clear(&api, id).await.map(Json)
}

/// Lifts `id`'s quarantine once the store has it (the API's and the
/// dashboard's clear).
pub(super) async fn clear(api: &Api, id: String) -> Result<Cleared, ApiError> {
    let worker_id = id.clone();
    let answer = api.request(|reply| ApiRequest::ClearWorker { worker_id, reply }).await?;
    let done = answer.map_err(|_| {
        ApiError::not_found(format!("no worker `{id}` is connected or has a reputation"))
    })?;
    api.durable(done.seq).await?;
    Ok(Cleared { worker_id: id, cleared: done.was, status: done.status })
}
