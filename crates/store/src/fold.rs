//! Folding a task's ops into its final rows before they are written.
//!
//! Under load the writer's group commit gathers many flushes, so one batch
//! often holds a task's whole life: inserted, assigned, finished, delivered.
//! Written op by op that is five row versions of `tasks` and two of
//! `attempts`, each a statement to run (and, on PostgreSQL, a new tuple, WAL
//! and index entries). When a task's ops in the batch start with its
//! `Insert`, the row they leave depends on nothing already stored, so it is
//! computed here and written once (a whole-row upsert). The same holds for
//! an attempt row that an `Assigned` in the batch (re)creates. A task whose
//! ops reach anything else (an attempt written by an earlier batch, a
//! deletion, a verdict's replicas) is not folded and is written op by op.
//!
//! [`fold`] mirrors the SQL of each op, column by column. Both backends use
//! it; SQLite's unit tests check it against SQLite's own op-by-op path on
//! random histories, and the conformance suite checks PostgreSQL against
//! SQLite.

use std::collections::BTreeMap;

use crate::{AttemptEnd, ErrorRow, Op, StoredAttempt, StoredTask, TaskState};

/// The tasks of a batch whose ops fold, and which of the batch's ops they
/// took (`taken[i]`): the others are written one by one, in batch order.
pub(crate) fn fold_batch(ops: &[Op]) -> (Vec<Folded>, Vec<bool>) {
    let mut per_task: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        for id in task_ids(op) {
            per_task.entry(*id).or_default().push(i);
        }
    }
    let mut taken = vec![false; ops.len()];
    let mut folded = Vec::new();
    for indices in per_task.into_values() {
        let task_ops: Vec<&Op> = indices.iter().map(|&i| &ops[i]).collect();
        if let Some(f) = fold(&task_ops) {
            folded.push(f);
            indices.into_iter().for_each(|i| taken[i] = true);
        }
    }
    (folded, taken)
}

/// The tasks an op writes to (none for the ops that are not a task's).
pub(crate) fn task_ids(op: &Op) -> &[u64] {
    match op {
        Op::Insert(t) => std::slice::from_ref(&t.id),
        Op::Assigned { id, .. }
        | Op::Started { id, .. }
        | Op::Reclaimed { id, .. }
        | Op::Requeued { id, .. }
        | Op::Finished { id, .. }
        | Op::Delivered { id, .. }
        | Op::Retried { id, .. }
        | Op::Stale { id, .. }
        | Op::Verified { id, .. } => std::slice::from_ref(id),
        Op::Deleted { ids } => ids,
        Op::Approved { .. } | Op::JoinSecret { .. } | Op::Reputation(_) | Op::IdsUsed { .. } => &[],
    }
}

/// A task's final rows after its ops in the batch.
pub(crate) struct Folded {
    pub(crate) task: StoredTask,
    /// The attempts the batch (re)created, by number.
    pub(crate) attempts: BTreeMap<u32, StoredAttempt>,
}

impl Folded {
    /// The rows an insert alone leaves.
    pub(crate) fn inserted(t: &crate::NewTask) -> Folded {
        Folded { task: fresh(t), attempts: BTreeMap::new() }
    }
}

/// Folds one task's ops (in batch order), or `None` when the result would
/// depend on rows stored before the batch.
pub(crate) fn fold(ops: &[&Op]) -> Option<Folded> {
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
            | Op::JoinSecret { .. }
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
