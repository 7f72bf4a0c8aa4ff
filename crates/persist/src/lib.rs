//! The mapping between the scheduler's world and the store's rows: events
//! become [`store::Op`]s on the way down ([`op_for`]), stored tasks become
//! [`sched::Recovered`] on the way back up after a restart ([`recovered`]).
//!
//! A crate of its own so that the coordinator and the seeded simulation
//! (`crates/sim`) drive the very same mapping: the simulation's restarts go
//! through a real store and back.
//!
//! Times: the coordinator's scheduler time is Unix microseconds (see its
//! clock), and the store keeps Unix milliseconds; [`unix_ms`] and
//! [`from_unix_ms`] convert.
//!
//! Hidden tasks (replicas and canaries) are not stored: only the ids they
//! took ([`Op::IdsUsed`], so that no id is handed out twice) and, when their
//! task ends, the verdict with every replica's result ([`Op::Verified`]).
//! A task still verifying at a restart starts its verification over.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use proto::Json;
use sched::verify::{Policy, Replica, Reputation, Subject, Verification};
use sched::{
    Attempt, AttemptEnd, AttemptRecord, Event, Failure, FailureCode, Outcome, PeerId, Recovered,
    RecoveredState, RequeueReason, Requirements, TaskId, TaskKind, TaskSpec, Time,
};
use store::{
    ErrorRow, NewTask, Op, ReputationRow, StoredAttempt, StoredReplica, StoredTask, TaskState,
};

/// Unix milliseconds of a scheduler time (Unix microseconds).
pub fn unix_ms(t: Time) -> i64 {
    i64::try_from(t.as_micros() / 1000).unwrap_or(i64::MAX)
}

/// The scheduler time of Unix milliseconds.
pub fn from_unix_ms(ms: i64) -> Time {
    Time::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The store ops for an event, when it changes what is stored: one, or two
/// for a task that ended with an attempt failing on its own account (see
/// [`finished`]). An iterator, so that the hot path allocates nothing.
/// `Delivered` is not here: the observer writes it only after the delivery
/// went out.
pub fn op_for(event: &Event<Json>) -> impl Iterator<Item = Op> + use<> {
    let (op, then) = match event {
        Event::TaskFinished { task, outcome, ended, failures, at, .. } => {
            finished(task.id, outcome, ended, *failures, *at)
        }
        other => (one_op(other), None),
    };
    op.into_iter().chain(then)
}

/// The ops of a finished task. The attempt that ended with it keeps its own
/// error and the task the outcome's — they differ when the last attempt
/// failed and that used up `max_attempts` — but `Op::Finished` writes one
/// error to both; so such a task is finished twice in the same batch: first
/// with the attempt's error, then with the task's and no attempt.
fn finished(
    id: TaskId,
    outcome: &Outcome<Json>,
    ended: &Option<(Attempt, AttemptEnd)>,
    failures: u32,
    at: Time,
) -> (Option<Op>, Option<Op>) {
    let (result, error) = match outcome {
        Outcome::Completed { result, .. } => (Some(result.get().to_owned()), None),
        other => (None, other.failure().map(|f| row(&f))),
    };
    let op = |error: Option<ErrorRow>, end: Option<(u32, codes::AttemptEnd)>| Op::Finished {
        id: id.0,
        state: outcome.status(),
        result: result.clone(),
        error,
        end,
        at_ms: unix_ms(at),
        delivered: false,
        failures,
    };
    let end = ended.as_ref().map(|(a, e)| (a.0, e.kind()));
    match ended {
        Some((_, AttemptEnd::Failed(f))) if Some(row(f)) != error => {
            (Some(op(Some(row(f)), end)), Some(op(error, None)))
        }
        _ => (Some(op(error, end)), None),
    }
}

fn one_op(event: &Event<Json>) -> Option<Op> {
    Some(match event {
        Event::TaskSubmitted { task } if task.kind.is_hidden() => {
            Op::IdsUsed { next_task_id: task.id.0 + 1 }
        }
        Event::TaskAssigned { hidden: true, .. }
        | Event::TaskStarted { hidden: true, .. }
        | Event::TaskReclaimed { hidden: true, .. }
        | Event::TaskRequeued { hidden: true, .. }
        | Event::StaleResult { hidden: true, .. } => return None,
        Event::TaskFinished { task, .. } if task.kind.is_hidden() => return None,
        Event::TaskSubmitted { task } => Op::Insert(new_task(task)),
        Event::IdsReserved { next } => Op::IdsUsed { next_task_id: *next },
        Event::TaskAssigned { task, peer, attempt, at, .. } => Op::Assigned {
            id: task.0,
            attempt: attempt.0,
            peer: peer.to_string(),
            at_ms: unix_ms(*at),
        },
        Event::TaskStarted { task, attempt, at, .. } => {
            Op::Started { id: task.0, attempt: attempt.0, at_ms: unix_ms(*at) }
        }
        Event::TaskReclaimed { task, peer, attempt, failures, .. } => Op::Reclaimed {
            id: task.0,
            attempt: attempt.0,
            peer: peer.to_string(),
            failures: *failures,
        },
        Event::TaskRequeued { task, attempt, end, reason, failures, at, .. } => Op::Requeued {
            id: task.0,
            attempt: attempt.0,
            end: end.kind(),
            failures: *failures,
            error: requeue_error(reason, end),
            at_ms: unix_ms(*at),
        },
        Event::TaskRetried { task, peer_task_id, .. } => {
            Op::Retried { id: task.0, peer_task_id: peer_task_id.to_string() }
        }
        Event::Undelivered { task } => Op::Delivered { id: task.0, delivered: false },
        Event::StaleResult { task, attempt, peer, .. } => {
            Op::Stale { id: task.0, attempt: attempt.0, peer: peer.to_string(), at_ms: 0 }
        }
        Event::Evicted { tasks } => Op::Deleted { ids: tasks.iter().map(|t| t.0).collect() },
        Event::Verified { task, verification, .. } => Op::Verified {
            id: task.0,
            status: verification.status,
            replicas: replica_rows(verification),
        },
        Event::Reputation { subject, reputation: r, at } => Op::Reputation(ReputationRow {
            subject: subject.key(),
            valid: r.valid,
            invalid: r.invalid,
            unverified: r.unverified,
            consecutive_valid: r.consecutive_valid,
            canaries_passed: r.canaries_passed,
            canaries_failed: r.canaries_failed,
            strikes: r.strikes,
            quarantined: r.quarantined,
            credential: r.credential.as_deref().map(str::to_owned),
            updated_at_ms: unix_ms(*at),
        }),
        _ => return None,
    })
}

fn replica_rows(v: &Verification<Json>) -> Vec<StoredReplica> {
    (0..)
        .zip(&v.replicas)
        .map(|(i, r)| StoredReplica {
            replica: i,
            task_id: r.task.0,
            peer: r.peer.as_ref().map(ToString::to_string),
            attempts: r.attempts,
            result: r.result.as_ref().map(|j| j.get().to_owned()),
            error: r.failure.as_ref().map(row),
            verdict: r.verdict,
        })
        .collect()
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

fn new_task(spec: &TaskSpec<Json>) -> NewTask {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    NewTask {
        id: spec.id.0,
        owner: spec.owner.to_string(),
        client_task_id: spec.client_task_id.to_string(),
        peer_task_id: spec.peer_task_id.to_string(),
        options: Options::of(spec).to_json(),
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
        submitted_at_ms: unix_ms(spec.submitted_at),
        verify: spec.verify.map(|p| p.to_string()),
    }
}

/// A stored task as the scheduler takes it back.
///
/// A row this build cannot read back — a payload or options that are not
/// JSON — is an error naming the task, never a guess.
pub fn recovered(stored: StoredTask) -> Result<Recovered<Json>, Unreadable> {
    let t = &stored.task;
    let payload = proto::json(&t.payload)
        .map_err(|e| Unreadable(format!("task {}: its payload is not JSON ({e})", t.id)))?;
    let options = Options::from_json(t.id, t.options.as_deref())?;
    let spec = TaskSpec {
        id: TaskId(t.id),
        owner: t.owner.parse().map_err(|e| Unreadable(format!("task {}: {e}", t.id)))?,
        client_task_id: Arc::from(t.client_task_id.as_str()),
        peer_task_id: Arc::from(t.peer_task_id.as_str()),
        stream: options.stream,
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
        submitted_at: from_unix_ms(t.submitted_at_ms),
        verify: t.verify.as_deref().map(|p| stored_policy(t.id, p)).transpose()?,
        submitter: options.submitter.as_deref().map(Arc::from),
        kind: TaskKind::Task,
    };
    let failure = stored.error.as_ref().map(|e| Failure::new(e.code.clone(), e.message.as_str()));
    let history: Vec<AttemptRecord> = stored.attempts.iter().map(attempt_record).collect();
    let state = recovered_state(&stored, &history, failure.clone())?;
    let verification = match stored.verify_status {
        Some(status) => {
            let policy = spec.verify.unwrap_or(Policy::OFF);
            let replicas = stored.replicas.iter().map(replica).collect::<Result<_, _>>()?;
            Some(Verification::stored(policy, status, replicas))
        }
        None => None,
    };
    Ok(Recovered {
        spec,
        attempts: stored.attempt,
        failures: stored.failures,
        last_error: failure,
        history,
        state,
        verification,
    })
}

fn stored_policy(id: u64, text: &str) -> Result<Policy, Unreadable> {
    Policy::parse(text).map_err(|e| {
        Unreadable(format!("task {id}: its verification policy `{text}` is not readable ({e})"))
    })
}

fn replica(r: &StoredReplica) -> Result<Replica<Json>, Unreadable> {
    let result = match r.result.as_deref() {
        Some(text) => Some(proto::json(text).map_err(|e| {
            Unreadable(format!("task {}: a replica's result is not JSON ({e})", r.task_id))
        })?),
        None => None,
    };
    let failure = r.error.as_ref().map(|e| Failure::new(e.code.clone(), e.message.as_str()));
    let peer = r.peer.as_deref().map(PeerId::from);
    Ok(Replica::stored(TaskId(r.task_id), peer, r.attempts, result, failure, r.verdict))
}

/// Stored reputations as the scheduler takes them back; a subject of a kind
/// this build does not know is an error, never a guess.
pub fn reputations(rows: Vec<ReputationRow>) -> Result<Vec<(Subject, Reputation)>, Unreadable> {
    rows.into_iter()
        .map(|r| {
            let subject = Subject::parse(&r.subject).ok_or_else(|| {
                Unreadable(format!("a reputation of an unknown kind of subject `{}`", r.subject))
            })?;
            let reputation = Reputation {
                valid: r.valid,
                invalid: r.invalid,
                unverified: r.unverified,
                consecutive_valid: r.consecutive_valid,
                canaries_passed: r.canaries_passed,
                canaries_failed: r.canaries_failed,
                strikes: r.strikes,
                quarantined: r.quarantined,
                credential: r.credential.as_deref().map(Arc::from),
            };
            Ok((subject, reputation))
        })
        .collect()
}

fn recovered_state(
    stored: &StoredTask,
    history: &[AttemptRecord],
    failure: Option<Failure>,
) -> Result<RecoveredState<Json>, Unreadable> {
    let at = from_unix_ms(stored.finished_at_ms.unwrap_or(0));
    let failure = || {
        failure.clone().unwrap_or_else(|| Failure::new(FailureCode::FAILED, "no reason recorded"))
    };
    let outcome = match stored.state {
        TaskState::Queued => return Ok(RecoveredState::Waiting),
        TaskState::Assigned | TaskState::Running => {
            let peer = stored.peer.clone().unwrap_or_default();
            let started = stored.started_at_ms.map(from_unix_ms);
            return Ok(RecoveredState::Assigned {
                peer: PeerId::from(peer.as_str()),
                attempt: Attempt(stored.attempt),
                started,
            });
        }
        TaskState::Completed => {
            let id = stored.task.id;
            let text = stored.result.as_deref().ok_or_else(|| {
                Unreadable(format!("task {id} completed but its result is missing"))
            })?;
            let result = proto::json(text)
                .map_err(|e| Unreadable(format!("task {id}: its result is not JSON ({e})")))?;
            let peer = history.last().map_or_else(|| PeerId::from(""), |r| r.peer.clone());
            Outcome::Completed { result, attempt: Attempt(stored.attempt), peer }
        }
        TaskState::Cancelled => Outcome::Cancelled,
        TaskState::TimedOut => Outcome::TimedOut(failure()),
        TaskState::Failed => Outcome::Failed(failure()),
    };
    Ok(RecoveredState::Finished { outcome, at, delivered: stored.delivered })
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
        assigned_at: from_unix_ms(a.assigned_at_ms),
        ended_at: a.ended_at_ms.map(from_unix_ms),
        end,
    }
}

/// A stored row that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store holds a row this build cannot read: {0}")]
pub struct Unreadable(pub String);

/// A task's options beyond the store's columns, kept as a JSON object.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Options {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// The credential that submitted it (see `TaskSpec::submitter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    submitter: Option<String>,
}

impl Options {
    fn of<P>(spec: &TaskSpec<P>) -> Options {
        Options { stream: spec.stream, submitter: spec.submitter.as_deref().map(str::to_owned) }
    }

    /// `None` when every option has its default.
    fn to_json(&self) -> Option<String> {
        (*self != Options::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Options this build does not know are ignored (a newer build wrote
    /// them, and they only add); options that are not JSON are an error.
    fn from_json(id: u64, text: Option<&str>) -> Result<Options, Unreadable> {
        let Some(text) = text else { return Ok(Options::default()) };
        serde_json::from_str(text)
            .map_err(|e| Unreadable(format!("task {id}: its options are not readable ({e})")))
    }
}

/// When the store may mark an outcome delivered.
///
/// Only once the batch holding the outcome has committed — a crash in
/// between then re-delivers rather than loses, and clients dedupe by task
/// id — and never when the delivery failed meanwhile (the outcome waits for
/// its gamer again). Marks are written lazily: they ride along with other
/// writes, or go alone once enough wait; a mark lost in a crash only makes
/// the outcome go out again when the gamer reconnects.
#[derive(Debug, Default)]
pub struct DeliveryMarks {
    /// Deliveries whose outcome is durable once batch `.0` is committed.
    deferred: VecDeque<(u64, TaskId)>,
    /// Deliveries whose batch has committed, not yet written.
    due: Vec<TaskId>,
}

impl DeliveryMarks {
    /// An outcome went out; it may be marked once batch `after` is committed.
    pub fn delivered(&mut self, task: TaskId, after: u64) {
        self.deferred.push_back((after, task));
    }

    /// An outcome did not reach its gamer: no mark for it is written (the
    /// event's own op records it as undelivered).
    pub fn undelivered(&mut self, task: TaskId) {
        self.deferred.retain(|(_, t)| *t != task);
        self.due.retain(|t| *t != task);
    }

    /// The marks to write with the next batch, now that batch `committed`
    /// is: all that are due when the batch carries other ops (`riding`) or
    /// when at least `alone` wait, else none yet.
    pub fn take(&mut self, committed: u64, riding: bool, alone: usize) -> Vec<Op> {
        while self.deferred.front().is_some_and(|(seq, _)| *seq <= committed) {
            if let Some((_, task)) = self.deferred.pop_front() {
                self.due.push(task);
            }
        }
        if !riding && self.due.len() < alone.max(1) {
            return Vec::new();
        }
        self.due.drain(..).map(|t| Op::Delivered { id: t.0, delivered: true }).collect()
    }

    /// Every mark, committed or not: at shutdown, when the writer commits in
    /// order and nothing more goes out.
    pub fn take_all(&mut self) -> Vec<Op> {
        let deferred = self.deferred.drain(..).map(|(_, t)| t);
        let tasks: Vec<TaskId> = self.due.drain(..).chain(deferred).collect();
        tasks.into_iter().map(|t| Op::Delivered { id: t.0, delivered: true }).collect()
    }
}

/// Which id reservations (`Event::IdsReserved`) the store has made
/// durable, for `Scheduler::handle_ids_durable`: the same bookkeeping for
/// the coordinator's observer and the simulation's.
#[derive(Debug, Default)]
pub struct IdReservations {
    /// Ids below `.1` are reserved once batch `.0` is committed.
    waiting: VecDeque<(u64, u64)>,
}

impl IdReservations {
    /// Batch `seq` carries a reservation of the ids below `next`.
    pub fn reserved(&mut self, next: u64, seq: u64) {
        self.waiting.push_back((seq, next));
    }

    /// Now that batch `committed` is: the highest reservation it made
    /// durable, if any became so.
    pub fn durable(&mut self, committed: u64) -> Option<u64> {
        let mut next = None;
        while self.waiting.front().is_some_and(|(seq, _)| *seq <= committed) {
            next = self.waiting.pop_front().map(|(_, n)| n).max(next);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sched::{
        Config, ConnId, GamerId, Owner, PeerCaps, PeerJoin, RunOutcome, Scheduler, Submission, Time,
    };

    /// Runs a scheduler history through the store and back: what a restarted
    /// coordinator recovers matches what the first one had.
    #[test]
    fn a_reservation_is_durable_once_its_batch_is() {
        let mut ids = IdReservations::default();
        ids.reserved(100, 3);
        ids.reserved(200, 5);
        assert_eq!(ids.durable(2), None);
        assert_eq!(ids.durable(4), Some(100));
        assert_eq!(ids.durable(4), None, "reported once");
        assert_eq!(ids.durable(9), Some(200));
        let op: Vec<Op> = op_for(&Event::IdsReserved { next: 7 }).collect();
        assert_eq!(op, vec![Op::IdsUsed { next_task_id: 7 }]);
    }

    #[test]
    fn a_delivery_that_failed_is_never_marked_delivered() {
        let mut marks = DeliveryMarks::default();
        marks.delivered(TaskId(1), 5);
        marks.delivered(TaskId(2), 5);
        marks.undelivered(TaskId(1));
        assert!(marks.take(4, true, 1).is_empty(), "batch 5 is not committed yet");
        assert_eq!(marks.take(5, true, 1), vec![Op::Delivered { id: 2, delivered: true }]);
    }

    #[test]
    fn marks_wait_for_a_batch_to_ride_with_unless_many_wait() {
        let mut marks = DeliveryMarks::default();
        for t in 1..=3 {
            marks.delivered(TaskId(t), 1);
        }
        assert!(marks.take(1, false, 4).is_empty());
        assert_eq!(marks.take(1, true, 4).len(), 3);
        marks.delivered(TaskId(9), 2);
        assert_eq!(marks.take(1, false, 4), vec![], "not durable yet");
        assert_eq!(marks.take_all(), vec![Op::Delivered { id: 9, delivered: true }]);
    }

    /// The last attempt failed and used up `max_attempts`: after the round
    /// trip the attempt still ended with its own error, the task with
    /// `attempts_exhausted` (found by the simulation: both got the task's).
    #[test]
    fn an_exhausting_failure_keeps_the_attempts_own_error() {
        use store::Store;
        let mut db = store::SqliteStore::in_memory().unwrap();
        let t0 = Time::from_secs(1_700_000_000);
        let mut s: Scheduler<Json> = Scheduler::new(Config::default(), t0);
        let mut sub = Submission::new(Owner::Api, "echo", proto::null());
        sub.max_attempts = Some(1);
        s.handle_submit(t0, sub).unwrap();
        let join = PeerJoin::new(PeerId::from("p"), ConnId(1), PeerCaps::default());
        s.handle_peer_joined(t0, join);
        let failure = Failure::new("internal", "disk full");
        let outcome = RunOutcome::Failed { failure: failure.clone(), retryable: true };
        s.handle_result(t0, &PeerId::from("p"), ConnId(1), TaskId(1), Some(Attempt(1)), outcome)
            .unwrap();
        let mut ops = Vec::new();
        while let Some(e) = s.poll_event() {
            ops.extend(op_for(&e));
        }
        db.write(&ops).unwrap();

        let back = recovered(db.load().unwrap().tasks.remove(0)).unwrap();
        assert_eq!(back.history[0].end, Some(AttemptEnd::Failed(failure)));
        let RecoveredState::Finished { outcome: Outcome::Failed(f), .. } = &back.state else {
            panic!("{:?}", back.state);
        };
        assert_eq!(f.code, FailureCode::ATTEMPTS_EXHAUSTED);
        assert_eq!(back.last_error.map(|e| e.code), Some(FailureCode::ATTEMPTS_EXHAUSTED));
    }

    /// An API key's task comes back as that key's, a gamer's with the
    /// credential that submitted it; an owner this build cannot read stops
    /// recovery instead of becoming somebody else's task.
    #[test]
    fn a_stored_owner_is_read_back_exactly_or_refused() {
        use store::Store;
        let mut db = store::SqliteStore::in_memory().unwrap();
        let t0 = Time::from_secs(1_700_000_000);
        let mut s: Scheduler<Json> = Scheduler::new(Config::default(), t0);
        let key = Owner::Key(Arc::from("0123456789ab"));
        s.handle_submit(t0, Submission::new(key.clone(), "echo", proto::null())).unwrap();
        let mut by_gamer = Submission::new(Owner::Gamer(GamerId::from("g")), "echo", proto::null());
        by_gamer.submitter = Some(Arc::from("api-key:0123456789ab"));
        s.handle_submit(t0, by_gamer).unwrap();
        let mut ops = Vec::new();
        while let Some(e) = s.poll_event() {
            ops.extend(op_for(&e));
        }
        db.write(&ops).unwrap();
        let mut tasks = db.load().unwrap().tasks;
        let gamers = recovered(tasks.remove(1)).unwrap();
        assert_eq!(gamers.spec.submitter.as_deref(), Some("api-key:0123456789ab"));
        let stored = tasks.remove(0);
        assert_eq!(stored.task.owner, "key:0123456789ab");
        let back = recovered(stored.clone()).unwrap();
        assert_eq!((back.spec.owner, back.spec.submitter), (key, None));

        let mut odd = stored;
        odd.task.owner = "robot".to_owned();
        let Err(Unreadable(why)) = recovered(odd) else { panic!("an unknown owner was read") };
        assert!(why.contains("task 1") && why.contains("robot"), "{why}");
    }

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
        let back: Vec<Recovered<Json>> =
            loaded.tasks.into_iter().map(recovered).collect::<Result<_, _>>().unwrap();
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

#[cfg(test)]
mod verify_tests {
    use super::*;
    use sched::verify::VerifyStatus;
    use sched::{
        Config, ConnId, Owner, PeerCaps, PeerJoin, RunOutcome, Scheduler, Submission, Time,
    };
    use store::Store;

    /// A verified task's verdict and replicas, and the workers' reputations,
    /// come back after a restart; replicas' ids are never handed out again.
    #[test]
    fn a_verdict_and_reputations_survive_the_round_trip_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = store::SqliteStore::open(dir.path(), store::Sync::Normal).unwrap();
        let t0 = Time::from_secs(1_700_000_000);
        let mut s: Scheduler<Json> = Scheduler::new(Config::default(), t0);
        s.set_agreement(Box::new(agree::Rules::builtin(1)));
        for (i, p) in ["a", "b"].into_iter().enumerate() {
            let join = PeerJoin::new(PeerId::from(p), ConnId(i as u64 + 1), PeerCaps::default());
            s.handle_peer_joined(t0, join);
        }
        let mut sub = Submission::new(Owner::Api, "echo", proto::json("[1]").unwrap());
        sub.verify = Some(Policy::parse("2/2").unwrap());
        let id = s.handle_submit(t0, sub).unwrap().id;
        while let Some(cmd) = s.poll_command() {
            if let sched::Command::Assign { conn, peer, task, attempt } = cmd {
                let done = RunOutcome::Completed(proto::json("[1]").unwrap());
                s.handle_result(t0, &peer, conn, task.id, Some(attempt), done).unwrap();
            }
        }
        let mut ops = Vec::new();
        while let Some(e) = s.poll_event() {
            ops.extend(op_for(&e));
        }
        assert!(ops.iter().all(|op| !matches!(op, Op::Assigned { id: i, .. } if *i != id.0)));
        db.write(&ops).unwrap();

        let loaded = db.load().unwrap();
        assert_eq!(loaded.tasks.len(), 1, "replicas are not stored");
        assert_eq!(loaded.next_task_id, 4, "but their ids are never reused");
        let back = recovered(loaded.tasks.into_iter().next().unwrap()).unwrap();
        assert_eq!(back.spec.verify, Some(Policy::parse("2/2").unwrap()));
        let v = back.verification.unwrap();
        assert_eq!((v.status, v.replicas.len()), (VerifyStatus::Agreed, 2));
        assert_eq!(v.replicas[0].result.as_ref().map(|r| r.get()), Some("[1]"));
        let reps = reputations(loaded.reputation).unwrap();
        assert_eq!(reps.len(), 2);
        assert!(reps.iter().all(|(_, r)| r.valid == 1 && r.consecutive_valid == 1));
    }
}
