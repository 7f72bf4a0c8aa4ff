//! The mapping between the scheduler's world and the store's rows: events
//! become [`store::Op`]s on the way down, stored tasks become
//! [`sched::Recovered`] on the way back up after a restart.

use std::sync::Arc;
use std::time::Duration;

use proto::Json;
use sched::{
    Attempt, AttemptEnd, AttemptRecord, Event, Failure, FailureCode, GamerId, Outcome, Owner,
    PeerId, Recovered, RecoveredState, RequeueReason, Requirements, TaskId, TaskSpec,
};
use store::{ErrorRow, NewTask, Op, StoredAttempt, StoredTask, TaskState};
use tracing::warn;

use crate::clock::Clock;

/// The store op for an event, when it changes what is stored. `Delivered`
/// is not here: the observer writes it only after the delivery went out.
pub(crate) fn op_for(event: &Event<Json>) -> Option<Op> {
    Some(match event {
        Event::TaskSubmitted { task } => Op::Insert(new_task(task)),
        Event::TaskAssigned { task, peer, attempt, at, .. } => Op::Assigned {
            id: task.0,
            attempt: attempt.0,
            peer: peer.to_string(),
            at_ms: Clock::unix_ms(*at),
        },
        Event::TaskStarted { task, attempt, at, .. } => {
            Op::Started { id: task.0, attempt: attempt.0, at_ms: Clock::unix_ms(*at) }
        }
        Event::TaskReclaimed { task, peer, attempt, .. } => {
            Op::Reclaimed { id: task.0, attempt: attempt.0, peer: peer.to_string() }
        }
        Event::TaskRequeued { task, attempt, end, reason, failures, retry_at, .. } => {
            Op::Requeued {
                id: task.0,
                attempt: attempt.0,
                end: end.kind(),
                failures: *failures,
                error: requeue_error(reason, end),
                at_ms: Clock::unix_ms(*retry_at),
            }
        }
        Event::TaskFinished { task, outcome, ended, at, .. } => {
            let (result, error) = match outcome {
                Outcome::Completed { result, .. } => (Some(result.get().to_owned()), None),
                other => (None, other.failure().map(|f| row(&f))),
            };
            Op::Finished {
                id: task.id.0,
                state: outcome.status(),
                result,
                error,
                end: ended.as_ref().map(|(a, e)| (a.0, e.kind())),
                at_ms: Clock::unix_ms(*at),
                delivered: false,
            }
        }
        Event::Undelivered { task } => Op::Delivered { id: task.0, delivered: false },
        Event::StaleResult { task, attempt, peer, .. } => {
            Op::Stale { id: task.0, attempt: attempt.0, peer: peer.to_string(), at_ms: 0 }
        }
        Event::Evicted { tasks } => Op::Deleted { ids: tasks.iter().map(|t| t.0).collect() },
        _ => return None,
    })
}

fn row(f: &Failure) -> ErrorRow {
    ErrorRow { code: f.code.clone(), message: f.message.to_string() }
}

fn requeue_error(reason: &RequeueReason, end: &AttemptEnd) -> Option<ErrorRow> {
    match reason {
        RequeueReason::Failed(f) => Some(row(f)),
        RequeueReason::PeerLost | RequeueReason::Unclaimed => Some(ErrorRow {
            code: FailureCode::PEER_LOST,
            message: format!("the attempt ended: {}", end.as_str()),
        }),
        RequeueReason::Returned => None,
    }
}

fn owner_name(owner: &Owner) -> String {
    match owner {
        Owner::Gamer(g) => format!("gamer:{g}"),
        Owner::Api => "api".to_owned(),
    }
}

fn owner_of(name: &str) -> Owner {
    match name.strip_prefix("gamer:") {
        Some(g) => Owner::Gamer(GamerId::from(g)),
        None => Owner::Api,
    }
}

fn new_task(spec: &TaskSpec<Json>) -> NewTask {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    NewTask {
        id: spec.id.0,
        owner: owner_name(&spec.owner),
        client_task_id: spec.client_task_id.to_string(),
        peer_task_id: spec.peer_task_id.to_string(),
        task_type: spec.task_type.to_string(),
        payload: spec.payload.get().to_owned(),
        priority: spec.priority,
        req_model: spec.requirements.model.as_deref().map(str::to_owned),
        req_gpu: spec.requirements.gpu,
        req_min_vram_mb: spec.requirements.min_vram_mb,
        run_timeout_ms: spec.run_timeout.map(ms),
        queue_timeout_ms: ms(spec.queue_timeout),
        max_attempts: spec.max_attempts,
        idempotency_key: spec.idempotency_key.as_deref().map(str::to_owned),
        submitted_at_ms: Clock::unix_ms(spec.submitted_at),
    }
}

/// A stored task as the scheduler takes it back.
pub(crate) fn recovered(stored: StoredTask) -> Recovered<Json> {
    let t = &stored.task;
    let payload = proto::json(&t.payload).unwrap_or_else(|e| {
        warn!(task = t.id, "stored payload is not JSON ({e}); recovered as null");
        proto::null()
    });
    let spec = TaskSpec {
        id: TaskId(t.id),
        owner: owner_of(&t.owner),
        client_task_id: Arc::from(t.client_task_id.as_str()),
        peer_task_id: Arc::from(t.peer_task_id.as_str()),
        task_type: Arc::from(t.task_type.as_str()),
        payload,
        priority: t.priority,
        requirements: Requirements {
            model: t.req_model.as_deref().map(Arc::from),
            gpu: t.req_gpu,
            min_vram_mb: t.req_min_vram_mb,
        },
        run_timeout: t.run_timeout_ms.map(Duration::from_millis),
        queue_timeout: Duration::from_millis(t.queue_timeout_ms),
        max_attempts: t.max_attempts,
        idempotency_key: t.idempotency_key.as_deref().map(Arc::from),
        submitted_at: Clock::from_unix_ms(t.submitted_at_ms),
        verify: None,
        kind: sched::TaskKind::Task,
    };
    let failure = stored.error.as_ref().map(|e| Failure::new(e.code.clone(), e.message.as_str()));
    let history: Vec<AttemptRecord> = stored.attempts.iter().map(attempt_record).collect();
    let state = recovered_state(&stored, &history, failure.clone());
    Recovered {
        spec,
        attempts: stored.attempt,
        failures: stored.failures,
        last_error: failure,
        history,
        state,
        verification: None,
    }
}

fn recovered_state(
    stored: &StoredTask,
    history: &[AttemptRecord],
    failure: Option<Failure>,
) -> RecoveredState<Json> {
    let at = Clock::from_unix_ms(stored.finished_at_ms.unwrap_or(0));
    let failure = || {
        failure.clone().unwrap_or_else(|| Failure::new(FailureCode::FAILED, "no reason recorded"))
    };
    let outcome = match stored.state {
        TaskState::Queued => return RecoveredState::Waiting,
        TaskState::Assigned | TaskState::Running => {
            let peer = stored.peer.clone().unwrap_or_default();
            let started = stored.started_at_ms.map(Clock::from_unix_ms);
            return RecoveredState::Assigned {
                peer: PeerId::from(peer.as_str()),
                attempt: Attempt(stored.attempt),
                started,
            };
        }
        TaskState::Completed => {
            let result = stored
                .result
                .as_deref()
                .and_then(|r| proto::json(r).ok())
                .unwrap_or_else(proto::null);
            let peer = history.last().map_or_else(|| PeerId::from(""), |r| r.peer.clone());
            Outcome::Completed { result, attempt: Attempt(stored.attempt), peer }
        }
        TaskState::Cancelled => Outcome::Cancelled,
        TaskState::TimedOut => Outcome::TimedOut(failure()),
        TaskState::Failed => Outcome::Failed(failure()),
    };
    RecoveredState::Finished { outcome, at, delivered: stored.delivered }
}

fn attempt_record(a: &StoredAttempt) -> AttemptRecord {
    use codes::AttemptEnd as End;
    let error = a.error.as_ref().map(|e| Failure::new(e.code.clone(), e.message.as_str()));
    let end = a.end.map(|end| match end {
        End::Completed => AttemptEnd::Completed,
        End::PeerLost | End::Stale => AttemptEnd::PeerLost,
        End::Returned => AttemptEnd::Returned,
        End::Unclaimed => AttemptEnd::Unclaimed,
        End::Cancelled => AttemptEnd::Cancelled,
        End::TimedOut => AttemptEnd::TimedOut,
        End::Failed => AttemptEnd::Failed(
            error.clone().unwrap_or_else(|| Failure::new(FailureCode::FAILED, "")),
        ),
    });
    AttemptRecord {
        attempt: Attempt(a.attempt),
        peer: PeerId::from(a.peer.as_str()),
        assigned_at: Clock::from_unix_ms(a.assigned_at_ms),
        ended_at: a.ended_at_ms.map(Clock::from_unix_ms),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sched::{Config, ConnId, PeerCaps, PeerJoin, RunOutcome, Scheduler, Submission, Time};

    /// Runs a scheduler history through the store and back: what a restarted
    /// coordinator recovers matches what the first one had.
    #[test]
    fn a_history_survives_the_round_trip_through_the_store() {
        use store::Store;
        let dir = tempfile::tempdir().unwrap();
        let mut db = store::SqliteStore::open(dir.path(), store::Sync::Normal).unwrap();
        let t0 = Time::from_secs(1_700_000_000);
        let mut s: Scheduler<Json> = Scheduler::new(Config::default(), t0);
        let gamer = Owner::Gamer(GamerId::from("g"));
        for i in 0..3 {
            let mut sub =
                Submission::new(gamer.clone(), "echo", proto::json(&format!("[{i}]")).unwrap());
            sub.idempotency_key = Some(Arc::from(format!("k{i}").as_str()));
            s.handle_submit(t0, sub).unwrap();
        }
        let join = PeerJoin {
            id: PeerId::from("p"),
            conn: ConnId(1),
            caps: PeerCaps::default(),
            running: vec![],
            owner: None,
            credential: None,
        };
        s.handle_peer_joined(t0, join);
        let done = proto::json("\"ok\"").unwrap();
        s.handle_result(
            t0,
            &PeerId::from("p"),
            ConnId(1),
            TaskId(1),
            Some(Attempt(1)),
            RunOutcome::Completed(done),
        )
        .unwrap();
        let mut ops = Vec::new();
        while let Some(e) = s.poll_event() {
            ops.extend(op_for(&e));
        }
        db.write(&ops).unwrap();

        let loaded = db.load().unwrap();
        let back: Vec<Recovered<Json>> = loaded.tasks.into_iter().map(recovered).collect();
        assert_eq!(back.len(), 3);
        assert!(
            matches!(&back[0].state, RecoveredState::Finished { outcome: Outcome::Completed { result, .. }, delivered: false, .. } if result.get() == "\"ok\"")
        );
        assert!(matches!(&back[1].state, RecoveredState::Assigned { attempt: Attempt(1), .. }));
        assert!(matches!(back[2].state, RecoveredState::Waiting));
        assert_eq!(back[2].spec.idempotency_key.as_deref(), Some("k2"));
        assert_eq!(back[2].spec.submitted_at, t0);
        assert_eq!(back[0].history.len(), 1);

        let mut again: Scheduler<Json> = Scheduler::new(Config::default(), t0);
        again.handle_recovered(t0, back);
        assert_eq!(again.stats().queued, 1);
        assert_eq!(again.stats().assigned, 1);
        assert_eq!(again.lookup(&gamer, "t-3"), Some(TaskId(3)));
    }
}
