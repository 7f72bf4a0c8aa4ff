//! Writing folded tasks (`crate::fold`) on PostgreSQL: every folded row of
//! a batch in one statement per table, as arrays (`unnest`).

use tokio_postgres::types::ToSql;

use super::batch::error_cols;
use crate::fold::Folded;
use crate::{AttemptEnd, StoredAttempt, StoredTask};

/// Upserts of whole rows, every column given (a folded task began with its
/// insert, which starts its replicas' results over).
pub(super) const TASKS: &str = "
WITH r AS (DELETE FROM replicas WHERE task_id = ANY($1::bigint[]))
INSERT INTO tasks (id, owner, client_task_id, task_type, payload, priority, req_model, req_gpu,
    req_min_vram_mb, run_timeout_ms, queue_timeout_ms, max_attempts, idempotency_key, submitted_at,
    state, attempt, failures, peer, started_at, finished_at, result, error_code, error_message,
    delivered, peer_task_id, options, verify, verify_status)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
    $7::text[], $8::bool[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[],
    $14::bigint[], $15::text[], $16::bigint[], $17::bigint[], $18::text[], $19::bigint[],
    $20::bigint[], $21::text[], $22::text[], $23::text[], $24::bool[], $25::text[], $26::text[],
    $27::text[], $28::text[])
ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, client_task_id = excluded.client_task_id,
    peer_task_id = excluded.peer_task_id, options = excluded.options,
    task_type = excluded.task_type, payload = excluded.payload, priority = excluded.priority,
    req_model = excluded.req_model, req_gpu = excluded.req_gpu,
    req_min_vram_mb = excluded.req_min_vram_mb, run_timeout_ms = excluded.run_timeout_ms,
    queue_timeout_ms = excluded.queue_timeout_ms, max_attempts = excluded.max_attempts,
    idempotency_key = excluded.idempotency_key, submitted_at = excluded.submitted_at,
    state = excluded.state, attempt = excluded.attempt, failures = excluded.failures,
    peer = excluded.peer, started_at = excluded.started_at, finished_at = excluded.finished_at,
    result = excluded.result, error_code = excluded.error_code,
    error_message = excluded.error_message, delivered = excluded.delivered,
    verify = excluded.verify, verify_status = excluded.verify_status";

pub(super) const ATTEMPTS: &str = "
INSERT INTO attempts (task_id, attempt, peer, assigned_at, ended_at, end_reason, error_code,
    error_message)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
    $6::text[], $7::text[], $8::text[])
ON CONFLICT (task_id, attempt) DO UPDATE SET peer = excluded.peer,
    assigned_at = excluded.assigned_at, ended_at = excluded.ended_at,
    end_reason = excluded.end_reason, error_code = excluded.error_code,
    error_message = excluded.error_message";

/// The folded rows of a batch as columns.
#[derive(Default)]
pub(super) struct Columns<'a> {
    id: Vec<i64>,
    owner: Vec<&'a str>,
    client_task_id: Vec<&'a str>,
    task_type: Vec<&'a str>,
    payload: Vec<&'a str>,
    priority: Vec<i32>,
    req_model: Vec<Option<&'a str>>,
    req_gpu: Vec<bool>,
    req_min_vram_mb: Vec<Option<i64>>,
    run_timeout_ms: Vec<Option<i64>>,
    queue_timeout_ms: Vec<i64>,
    max_attempts: Vec<i64>,
    idempotency_key: Vec<Option<&'a str>>,
    submitted_at: Vec<i64>,
    state: Vec<&'static str>,
    attempt: Vec<i64>,
    failures: Vec<i64>,
    peer: Vec<Option<&'a str>>,
    started_at: Vec<Option<i64>>,
    finished_at: Vec<Option<i64>>,
    result: Vec<Option<&'a str>>,
    error_code: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
    delivered: Vec<bool>,
    peer_task_id: Vec<&'a str>,
    options: Vec<Option<&'a str>>,
    verify: Vec<Option<&'a str>>,
    verify_status: Vec<Option<&'static str>>,
    attempt_rows: AttemptColumns<'a>,
}

#[derive(Default)]
struct AttemptColumns<'a> {
    task_id: Vec<i64>,
    attempt: Vec<i64>,
    peer: Vec<&'a str>,
    assigned_at: Vec<i64>,
    ended_at: Vec<Option<i64>>,
    end: Vec<Option<&'static str>>,
    error_code: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
}

impl<'a> Columns<'a> {
    pub(super) fn new(folded: &'a [Folded]) -> Columns<'a> {
        let mut c = Columns::default();
        for f in folded {
            c.push(&f.task);
            for a in f.attempts.values() {
                c.attempt_rows.push(f.task.task.id, a);
            }
        }
        c
    }

    fn push(&mut self, s: &'a StoredTask) {
        let t = &s.task;
        self.id.push(t.id as i64);
        self.owner.push(&t.owner);
        self.client_task_id.push(&t.client_task_id);
        self.task_type.push(&t.task_type);
        self.payload.push(&t.payload);
        self.priority.push(t.priority);
        self.req_model.push(t.req_model.as_deref());
        self.req_gpu.push(t.req_gpu);
        self.req_min_vram_mb.push(t.req_min_vram_mb.map(|v| v as i64));
        self.run_timeout_ms.push(t.run_timeout_ms.map(|v| v as i64));
        self.queue_timeout_ms.push(t.queue_timeout_ms as i64);
        self.max_attempts.push(i64::from(t.max_attempts));
        self.idempotency_key.push(t.idempotency_key.as_deref());
        self.submitted_at.push(t.submitted_at_ms);
        self.state.push(s.state.as_str());
        self.attempt.push(i64::from(s.attempt));
        self.failures.push(i64::from(s.failures));
        self.peer.push(s.peer.as_deref());
        self.started_at.push(s.started_at_ms);
        self.finished_at.push(s.finished_at_ms);
        self.result.push(s.result.as_deref());
        let (code, message) = error_cols(s.error.as_ref());
        self.error_code.push(code);
        self.error_message.push(message);
        self.delivered.push(s.delivered);
        self.peer_task_id.push(&t.peer_task_id);
        self.options.push(t.options.as_deref());
        self.verify.push(t.verify.as_deref());
        self.verify_status.push(s.verify_status.map(crate::VerifyStatus::as_str));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    pub(super) fn task_params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.owner,
            &self.client_task_id,
            &self.task_type,
            &self.payload,
            &self.priority,
            &self.req_model,
            &self.req_gpu,
            &self.req_min_vram_mb,
            &self.run_timeout_ms,
            &self.queue_timeout_ms,
            &self.max_attempts,
            &self.idempotency_key,
            &self.submitted_at,
            &self.state,
            &self.attempt,
            &self.failures,
            &self.peer,
            &self.started_at,
            &self.finished_at,
            &self.result,
            &self.error_code,
            &self.error_message,
            &self.delivered,
            &self.peer_task_id,
            &self.options,
            &self.verify,
            &self.verify_status,
        ]
    }

    /// `None` when the batch (re)created no attempt.
    pub(super) fn attempt_params(&self) -> Option<Vec<&(dyn ToSql + Sync)>> {
        let a = &self.attempt_rows;
        if a.task_id.is_empty() {
            return None;
        }
        Some(vec![
            &a.task_id,
            &a.attempt,
            &a.peer,
            &a.assigned_at,
            &a.ended_at,
            &a.end,
            &a.error_code,
            &a.error_message,
        ])
    }
}

impl<'a> AttemptColumns<'a> {
    fn push(&mut self, task: u64, a: &'a StoredAttempt) {
        self.task_id.push(task as i64);
        self.attempt.push(i64::from(a.attempt));
        self.peer.push(&a.peer);
        self.assigned_at.push(a.assigned_at_ms);
        self.ended_at.push(a.ended_at_ms);
        self.end.push(a.end.map(AttemptEnd::as_str));
        let (code, message) = error_cols(a.error.as_ref());
        self.error_code.push(code);
        self.error_message.push(message);
    }
}
