//! Inputs about tasks: submissions, results, starts and cancellations.

use std::sync::Arc;
use std::time::Duration;

use super::{PeerError, Scheduler};
use crate::output::{Event, RequeueReason};
use crate::queue::Class;
use crate::task::{AttemptEnd, State, Submission, Task, TaskKind, TaskSpec};
use crate::types::{
    Attempt, ConnId, FailureCode, Outcome, Owner, PeerId, RunOutcome, TaskId, TaskState, Time,
};
use crate::verify::VerifyStatus;

/// A submission the scheduler took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: TaskId,
    /// The id the submitter knows the task by.
    pub client_task_id: Arc<str>,
    /// True when the idempotency key matched an existing task (which is
    /// returned instead of a new one).
    pub existing: bool,
    pub status: TaskState,
    /// Why the task cannot start yet, when no connected peer can run it.
    pub waiting_reason: Option<String>,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The submitter already has a live task with this id.
    DuplicateTaskId { existing: TaskId },
    /// The queue is full; try again after the hint.
    Busy { queued: usize, retry_after: Duration },
}

/// Why a cancellation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelError {
    UnknownTask,
    /// The task belongs to someone else.
    NotOwner,
    /// The task had already ended.
    AlreadyFinished(TaskState),
}

/// What to do with a peer's progress report.
#[derive(Debug, Clone)]
pub enum Progress<P> {
    /// Send it on: to the gamer on `gamer_conn` (none when the gamer is
    /// away, or the task is the API's, whose listeners the shell knows).
    Forward { task: Arc<TaskSpec<P>>, attempt: Attempt, gamer_conn: Option<ConnId> },
    /// The task did not ask to stream: drop it.
    NotStreamed,
    /// Not the current attempt's, or not from its holder: drop it.
    Stale,
}

/// What became of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultAck {
    /// It was the current attempt's: the task moved on.
    Accepted,
    /// It was for an attempt no longer current: recorded, not delivered.
    Stale,
}

impl<P: Clone> Scheduler<P> {
    /// Takes a submission. On success the task is queued (or already
    /// assigned) and [`Event::TaskSubmitted`] tells the shell to persist it.
    pub fn handle_submit(
        &mut self,
        now: Time,
        sub: Submission<P>,
    ) -> Result<Accepted, SubmitError> {
        let now = self.tick(now);
        if let Some(key) = &sub.idempotency_key
            && let Some(&id) = self.by_key.get(&(sub.owner.clone(), Arc::clone(key)))
            && let Some(accepted) = self.resubmitted(id)
        {
            return Ok(accepted);
        }
        if let Some(client) = &sub.client_task_id
            && let Some(&id) = self.by_client.get(&(sub.owner.clone(), Arc::clone(client)))
            && self.tasks.get(&id).is_some_and(|t| !t.status().is_terminal())
        {
            return Err(SubmitError::DuplicateTaskId { existing: id });
        }
        let waiting = self.queue.len() + self.backing_off;
        if waiting >= self.config.max_queued {
            return Err(SubmitError::Busy { queued: waiting, retry_after: Duration::from_secs(1) });
        }

        let id = self.take_task_id();
        let client_task_id = sub.client_task_id.unwrap_or_else(|| Arc::from(id.to_string()));
        let verify = self.verification_for(&sub.task_type, &sub.payload, sub.verify);
        // A verified task never runs itself: its replicas hold the ids peers see.
        let peer_task_id = match verify {
            Some(_) => Arc::clone(&client_task_id),
            None => self.claim_peer_task_id(&client_task_id, id),
        };
        let spec = Arc::new(TaskSpec {
            id,
            owner: sub.owner,
            client_task_id: Arc::clone(&client_task_id),
            peer_task_id,
            task_type: sub.task_type,
            payload: sub.payload,
            priority: sub.priority,
            requirements: sub.requirements,
            run_timeout: sub.run_timeout,
            queue_timeout: sub.queue_timeout.unwrap_or(self.config.default_queue_timeout),
            max_attempts: sub.max_attempts.unwrap_or(self.config.default_max_attempts).max(1),
            idempotency_key: sub.idempotency_key,
            submitted_at: now,
            stream: sub.stream,
            verify: verify.map(|(policy, _)| policy),
            submitter: sub.submitter,
            kind: TaskKind::Task,
        });
        let class = Arc::new(Class {
            task_type: Arc::clone(&spec.task_type),
            requirements: spec.requirements.clone(),
        });
        self.by_client.insert((spec.owner.clone(), Arc::clone(&client_task_id)), id);
        if let Some(key) = &spec.idempotency_key {
            self.by_key.insert((spec.owner.clone(), Arc::clone(key)), id);
        }
        self.counters.submitted += 1;
        self.events.push_back(Event::TaskSubmitted { task: Arc::clone(&spec) });
        match verify {
            Some((policy, rule)) => {
                self.tasks.insert(id, Task::verifying(spec, class, now));
                self.start_verification(now, id, policy, rule);
            }
            None => {
                let pos = self.queue.push(Arc::clone(&class), spec.priority, id, false);
                let deadline = now + spec.queue_timeout;
                self.timers.insert(deadline, crate::timers::Timer::QueueDeadline(id, 1));
                self.tasks.insert(id, Task::new(spec, class, pos, now, deadline));
            }
        }
        self.place(now);

        let status = match self.tasks.get(&id).map_or(TaskState::Queued, Task::status) {
            // A verified task counts as assigned once a replica is.
            TaskState::Running => TaskState::Assigned,
            status => status,
        };
        let waiting_reason =
            if status == TaskState::Queued { self.waiting_reason(id) } else { None };
        Ok(Accepted { id, client_task_id, existing: false, status, waiting_reason })
    }

    /// A resubmission with a known idempotency key: the original task stands.
    /// When it already ended, its outcome is delivered again (the submitter
    /// asks because it did not get it).
    fn resubmitted(&mut self, id: TaskId) -> Option<Accepted> {
        let task = self.tasks.get(&id)?;
        let status = task.status();
        let accepted = Accepted {
            id,
            client_task_id: Arc::clone(&task.spec.client_task_id),
            existing: true,
            status,
            waiting_reason: None,
        };
        // An outcome already handed to this very connection is on its way:
        // sending it again would only make a duplicate.
        if let (State::Finished { to, .. }, Owner::Gamer(gamer)) = (&task.state, &task.spec.owner)
            && let Some(&conn) = self.gamers.get(gamer)
            && *to != Some(conn)
        {
            self.hand_over(id, conn);
        }
        Some(Accepted { waiting_reason: self.waiting_reason(id), ..accepted })
    }

    /// A peer reports how an assignment ended. `attempt` is optional because
    /// seed-literal peers do not echo it; then the result counts for the
    /// attempt this peer holds.
    pub fn handle_result(
        &mut self,
        now: Time,
        peer: &PeerId,
        conn: ConnId,
        id: TaskId,
        attempt: Option<Attempt>,
        outcome: RunOutcome<P>,
    ) -> Result<ResultAck, PeerError> {
        let now = self.tick(now);
        if self.peers.get(peer).is_none_or(|p| p.conn != conn) {
            return Err(PeerError::NotRegistered);
        }
        // An answer naming its attempt ends that run, lost or not. (One by
        // the peer id alone may be any of the peer's runs of the task.)
        if let Some(attempt) = attempt {
            self.end_lost_run(id, peer, attempt);
        }
        let Some(p) = self.peers.get_mut(peer) else { return Err(PeerError::NotRegistered) };
        if let Some(&zombie) = p.zombies.get(&id)
            && attempt.is_none_or(|a| a == zombie)
        {
            p.zombies.remove(&id);
            self.refresh_free(peer);
            self.release_peer_task_id(id);
            self.stale(id, zombie, peer);
            self.place(now);
            return Ok(ResultAck::Stale);
        }
        let Some(task) = self.tasks.get(&id) else { return Err(PeerError::UnknownTask(id)) };
        let ack = match &task.state {
            State::Assigned(h) if &h.peer == peer && attempt.is_none_or(|a| a == h.attempt) => {
                let (attempt, since) = (h.attempt, h.since);
                self.accept_result(now, peer, id, attempt, since, outcome);
                ResultAck::Accepted
            }
            State::Queued { .. } | State::Backoff { .. }
                if matches!(outcome, RunOutcome::Completed(_))
                    && self.lost_here(task, peer, attempt) =>
            {
                // The current attempt's peer lost its connection, was
                // requeued, and reports anyway: its result is still the
                // current attempt's, and no other attempt was issued.
                self.late_completion(now, id, peer, outcome);
                ResultAck::Accepted
            }
            _ => {
                let stale_attempt = attempt.unwrap_or(Attempt(0));
                self.stale(id, stale_attempt, peer);
                ResultAck::Stale
            }
        };
        self.place(now);
        Ok(ack)
    }

    fn lost_here(&self, task: &Task<P>, peer: &PeerId, attempt: Option<Attempt>) -> bool {
        task.history.last().is_some_and(|r| {
            &r.peer == peer
                && r.attempt.0 == task.attempts
                && attempt.is_none_or(|a| a == r.attempt)
                && r.end == Some(AttemptEnd::PeerLost)
        })
    }

    fn accept_result(
        &mut self,
        now: Time,
        peer_id: &PeerId,
        id: TaskId,
        attempt: Attempt,
        since: Time,
        outcome: RunOutcome<P>,
    ) {
        let run = now.saturating_since(since);
        let task_type = match self.tasks.get(&id) {
            Some(t) => Arc::clone(&t.spec.task_type),
            None => return,
        };
        if let Some(peer) = self.peers.get_mut(peer_id) {
            peer.tasks.remove(&id);
            match &outcome {
                RunOutcome::Completed(_) => {
                    peer.completed += 1;
                    peer.record_runtime(&task_type, run);
                }
                RunOutcome::Failed { .. } => peer.failed += 1,
                RunOutcome::Returned => {}
            }
        }
        self.refresh_free(peer_id);
        match outcome {
            RunOutcome::Completed(result) => {
                self.end_attempt(now, id, attempt, AttemptEnd::Completed);
                let outcome = Outcome::Completed { result, attempt, peer: peer_id.clone() };
                self.finish(now, id, outcome, Some(run));
            }
            RunOutcome::Failed { failure, retryable: true } => {
                let end = AttemptEnd::Failed(failure.clone());
                self.requeue(now, id, end, RequeueReason::Failed(failure), true);
            }
            RunOutcome::Failed { failure, retryable: false } => {
                self.end_attempt(now, id, attempt, AttemptEnd::Failed(failure.clone()));
                if let Some(t) = self.tasks.get_mut(&id) {
                    t.failures += 1;
                    t.last_error = Some(failure.clone());
                }
                let outcome = if failure.code.is_timeout() {
                    Outcome::TimedOut(failure)
                } else {
                    Outcome::Failed(failure)
                };
                self.finish(now, id, outcome, Some(run));
            }
            RunOutcome::Returned => {
                self.requeue(now, id, AttemptEnd::Returned, RequeueReason::Returned, false);
            }
        }
    }

    fn late_completion(&mut self, now: Time, id: TaskId, peer: &PeerId, outcome: RunOutcome<P>) {
        let RunOutcome::Completed(result) = outcome else { return };
        let Some(task) = self.tasks.get_mut(&id) else { return };
        task.failures = task.failures.saturating_sub(1);
        let attempt = Attempt(task.attempts);
        let run = task.history.last_mut().map(|rec| {
            rec.end = Some(AttemptEnd::Completed);
            rec.ended_at = Some(now);
            now.saturating_since(rec.assigned_at)
        });
        let outcome = Outcome::Completed { result, attempt, peer: peer.clone() };
        self.finish(now, id, outcome, run);
    }

    fn stale(&mut self, task: TaskId, attempt: Attempt, peer: &PeerId) {
        self.counters.stale_results += 1;
        let hidden = self.verify.hidden.contains_key(&task);
        self.events.push_back(Event::StaleResult { task, attempt, peer: peer.clone(), hidden });
    }

    /// A peer says it started an assignment. Unknown or stale starts are ignored.
    pub fn handle_started(
        &mut self,
        now: Time,
        peer: &PeerId,
        conn: ConnId,
        id: TaskId,
        attempt: Option<Attempt>,
    ) -> Result<(), PeerError> {
        let now = self.tick(now);
        if self.peers.get(peer).is_none_or(|p| p.conn != conn) {
            return Err(PeerError::NotRegistered);
        }
        let Some(task) = self.tasks.get_mut(&id) else { return Err(PeerError::UnknownTask(id)) };
        if let State::Assigned(h) = &mut task.state
            && &h.peer == peer
            && attempt.is_none_or(|a| a == h.attempt)
            && h.started.is_none()
        {
            h.started = Some(now);
            let attempt = h.attempt;
            let hidden = self.verify.hidden.contains_key(&id);
            self.events.push_back(Event::TaskStarted {
                task: id,
                peer: peer.clone(),
                attempt,
                at: now,
                hidden,
            });
            self.hidden_started(id);
        }
        Ok(())
    }

    /// A peer reports progress of an assignment (tokens of a generation).
    /// The shell forwards it to the submitter when the answer says so: the
    /// task asked to stream, and the progress is its current attempt's, from
    /// the peer holding it. Once some of it reached anyone
    /// ([`Scheduler::handle_progress_delivered`]), losing the attempt ends the
    /// task with `stream_interrupted` rather than running it again.
    pub fn handle_progress(
        &mut self,
        now: Time,
        peer: &PeerId,
        conn: ConnId,
        id: TaskId,
        attempt: Option<Attempt>,
    ) -> Result<Progress<P>, PeerError> {
        self.tick(now);
        if self.peers.get(peer).is_none_or(|p| p.conn != conn) {
            return Err(PeerError::NotRegistered);
        }
        let Some(task) = self.tasks.get_mut(&id) else { return Err(PeerError::UnknownTask(id)) };
        let State::Assigned(h) = &task.state else { return Ok(Progress::Stale) };
        if &h.peer != peer || attempt.is_some_and(|a| a != h.attempt) {
            return Ok(Progress::Stale);
        }
        if !task.spec.stream {
            return Ok(Progress::NotStreamed);
        }
        let attempt = h.attempt;
        let to = match &task.spec.owner {
            Owner::Gamer(g) => Some(self.gamers.get(g).copied()),
            Owner::Api | Owner::Key(_) => None,
        };
        Ok(Progress::Forward { task: Arc::clone(&task.spec), attempt, gamer_conn: to.flatten() })
    }

    /// The shell handed progress of `attempt` to its gamer or to a follower
    /// of the task: output was seen, so another attempt would repeat it.
    /// Progress that reached nobody (no follower, the gamer away or too slow)
    /// leaves the task free to run again if this attempt is lost.
    pub fn handle_progress_delivered(&mut self, id: TaskId, attempt: Attempt) {
        if let Some(task) = self.tasks.get_mut(&id)
            && let State::Assigned(h) = &task.state
            && h.attempt == attempt
        {
            task.streamed = true;
        }
    }

    /// Cancels a task. A gamer or an API key may cancel only its own tasks;
    /// the operator (`Owner::Api`) may cancel any. A running task is stopped on its peer.
    pub fn handle_cancel(
        &mut self,
        now: Time,
        requester: &Owner,
        id: TaskId,
    ) -> Result<(), CancelError> {
        let now = self.tick(now);
        let task = self.tasks.get(&id).ok_or(CancelError::UnknownTask)?;
        if task.spec.kind.is_hidden() {
            return Err(CancelError::UnknownTask);
        }
        if !requester.may_act_on(&task.spec.owner) {
            return Err(CancelError::NotOwner);
        }
        match &task.state {
            State::Verifying { .. } => {
                self.end_verification(now, id, VerifyStatus::Ended, Outcome::Cancelled);
                self.place(now);
                return Ok(());
            }
            State::Finished { outcome, .. } => {
                return Err(CancelError::AlreadyFinished(outcome.status()));
            }
            State::Assigned(h) => {
                let holder = h.clone();
                self.stop_run(now, id, &holder, FailureCode::CANCELLED);
                self.end_attempt(now, id, holder.attempt, AttemptEnd::Cancelled);
                self.refresh_free(&holder.peer);
            }
            State::Queued { .. } => self.end_wait(id),
            State::Backoff { .. } => {}
        }
        self.finish(now, id, Outcome::Cancelled, None);
        self.place(now);
        Ok(())
    }
}
