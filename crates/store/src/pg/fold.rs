//! Folding a task's ops into its final rows before they are written.
//!
//! Under load the writer's group commit gathers many flushes, so one batch
//! often holds a task's whole life: inserted, assigned, finished, delivered.
//! Written op by op that is five row versions of `tasks` and two of
//! `attempts`; PostgreSQL pays for each (a new tuple, WAL, index entries).
//! When a task's ops in the batch start with its `Insert`, the row they leave
//! depends on nothing already stored, so it is computed here and written
//! once (an upsert of the whole row). The same holds for an attempt row that
//! an `Assigned` in the batch (re)creates. A task whose ops reach anything
//! else (an attempt written by an earlier batch, a deletion) is not folded
//! and goes through the rounds instead (`batch.rs`).
//!
//! [`fold`] mirrors the SQL of each op, column by column; the conformance
//! suite checks both paths against SQLite on random histories.

use std::collections::BTreeMap;

use tokio_postgres::types::ToSql;

use super::batch::error_cols;
use crate::{AttemptEnd, ErrorRow, Op, StoredAttempt, StoredTask, TaskState};

/// A task's final rows after its ops in the batch.
pub(super) struct Folded {
    pub(super) task: StoredTask,
    /// The attempts the batch (re)created, by number.
    pub(super) attempts: BTreeMap<u32, StoredAttempt>,
}

/// Folds one task's ops (in batch order), or `None` when the result would
/// depend on rows stored before the batch.
pub(super) fn fold(ops: &[&Op]) -> Option<Folded> {
    let Some(Op::Insert(first)) = ops.first() else { return None };
    let mut task = fresh(first);
    let mut attempts: BTreeMap<u32, StoredAttempt> = BTreeMap::new();
    for op in &ops[1..] {
        match op {
            Op::Insert(t) => task = fresh(t),
            Op::Assigned { attempt, peer, at_ms, .. } => {
                (task.state, task.attempt) = (TaskState::Assigned, *attempt);
                (task.peer, task.started_at_ms) = (Some(peer.clone()), None);
                let row = StoredAttempt {
                    attempt: *attempt,
                    peer: peer.clone(),
                    assigned_at_ms: *at_ms,
                    ended_at_ms: None,
                    end: None,
                    error: None,
                };
                attempts.insert(*attempt, row);
            }
            Op::Started { attempt, at_ms, .. } => {
                if task.attempt == *attempt {
                    (task.state, task.started_at_ms) = (TaskState::Running, Some(*at_ms));
                }
            }
            Op::Reclaimed { attempt, peer, failures, .. } => {
                (task.state, task.attempt, task.peer) =
                    (TaskState::Assigned, *attempt, Some(peer.clone()));
                task.failures = *failures;
                let a = attempts.get_mut(attempt)?;
                (a.ended_at_ms, a.end, a.error) = (None, None, None);
            }
            Op::Requeued { attempt, end, failures, error, at_ms, .. } => {
                (task.state, task.peer, task.started_at_ms) = (TaskState::Queued, None, None);
                task.failures = *failures;
                keep_error(&mut task, error);
                end_attempt(attempts.get_mut(attempt)?, *end, error, *at_ms);
            }
            Op::Finished { state, result, error, end, at_ms, delivered, failures, .. } => {
                (task.state, task.result, task.failures) = (*state, result.clone(), *failures);
                keep_error(&mut task, error);
                (task.finished_at_ms, task.delivered, task.peer) = (Some(*at_ms), *delivered, None);
                if let Some((attempt, how)) = end {
                    end_attempt(attempts.get_mut(attempt)?, *how, error, *at_ms);
                }
            }
            Op::Delivered { delivered, .. } => task.delivered = *delivered,
            Op::Retried { peer_task_id, .. } => {
                (task.state, task.peer, task.started_at_ms) = (TaskState::Queued, None, None);
                (task.finished_at_ms, task.result, task.failures) = (None, None, 0);
                task.delivered = false;
                task.task.peer_task_id = peer_task_id.clone();
            }
            Op::Stale { attempt, peer, at_ms, .. } => {
                let a = attempts.get_mut(attempt)?;
                if a.peer == *peer {
                    a.end = a.end.or(Some(AttemptEnd::Stale));
                    a.ended_at_ms = a.ended_at_ms.or(Some(*at_ms));
                }
            }
            // A deletion reaches attempts stored before the batch; the
            // replica rows of a verdict are written by the rounds (rare: a
            // verified task's life spans many flushes). The others are not
            // a task's ops.
            Op::Deleted { .. }
            | Op::Verified { .. }
            | Op::Approved { .. }
            | Op::Reputation(_)
            | Op::IdsUsed { .. } => return None,
        }
    }
    Some(Folded { task, attempts })
}

/// The row an `Insert` leaves (a replaced task starts over).
fn fresh(t: &crate::NewTask) -> StoredTask {
    StoredTask {
        task: t.clone(),
        state: TaskState::Queued,
        attempt: 0,
        failures: 0,
        peer: None,
        started_at_ms: None,
        finished_at_ms: None,
        result: None,
        error: None,
        delivered: false,
        attempts: Vec::new(),
        verify_status: None,
        replicas: Vec::new(),
    }
}

/// `error_code = coalesce(new, error_code)`: a task keeps its last error.
fn keep_error(task: &mut StoredTask, error: &Option<ErrorRow>) {
    if error.is_some() {
        task.error.clone_from(error);
    }
}

fn end_attempt(a: &mut StoredAttempt, how: AttemptEnd, error: &Option<ErrorRow>, at_ms: i64) {
    (a.ended_at_ms, a.end, a.error) = (Some(at_ms), Some(how), error.clone());
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(id: u64) -> Op {
        Op::Insert(crate::NewTask {
            id,
            owner: "api".into(),
            client_task_id: "c".into(),
            peer_task_id: "c".into(),
            options: None,
            task_type: "noop".into(),
            payload: "null".into(),
            priority: 1,
            req_model: None,
            req_gpu: false,
            req_min_vram_mb: None,
            run_timeout_ms: None,
            queue_timeout_ms: 1,
            max_attempts: 1,
            idempotency_key: None,
            submitted_at_ms: 0,
            verify: None,
        })
    }

    #[test]
    fn a_whole_life_folds_into_one_row_each() {
        let ops = [
            insert(1),
            Op::Assigned { id: 1, attempt: 1, peer: "p".into(), at_ms: 5 },
            Op::Finished {
                id: 1,
                state: TaskState::Completed,
                result: Some("1".into()),
                error: None,
                end: Some((1, AttemptEnd::Completed)),
                at_ms: 6,
                delivered: false,
                failures: 0,
            },
            Op::Delivered { id: 1, delivered: true },
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        let f = fold(&refs).unwrap();
        assert_eq!(
            (f.task.state.as_str(), f.task.delivered, f.task.peer),
            ("completed", true, None)
        );
        assert_eq!(f.attempts[&1].end, Some(AttemptEnd::Completed));
    }

    #[test]
    fn what_depends_on_stored_rows_is_not_folded() {
        let end = Op::Requeued {
            id: 1,
            attempt: 1,
            end: AttemptEnd::Returned,
            failures: 0,
            error: None,
            at_ms: 1,
        };
        assert!(fold(&[&Op::Delivered { id: 1, delivered: true }]).is_none());
        assert!(fold(&[&insert(1), &end]).is_none(), "attempt 1 was stored earlier");
        assert!(fold(&[&insert(1), &Op::Deleted { ids: vec![1] }]).is_none());
    }
}
