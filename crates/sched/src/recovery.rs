//! Recovery after a coordinator restart: tasks reloaded from the store.

use std::sync::Arc;

use crate::queue::Class;
use crate::scheduler::Scheduler;
use crate::task::{AttemptEnd, AttemptRecord, Holder, State, Task, TaskSpec};
use crate::timers::Timer;
use crate::types::{Attempt, Failure, Outcome, Owner, PeerId, TaskId, Time};
use crate::verify::Verification;

/// A task reloaded from the store.
#[derive(Debug, Clone)]
pub struct Recovered<P> {
    pub spec: TaskSpec<P>,
    pub attempts: u32,
    pub failures: u32,
    pub last_error: Option<Failure>,
    pub history: Vec<AttemptRecord>,
    pub state: RecoveredState<P>,
    /// A finished verified task's replicas and verdict, as stored. (A task
    /// still verifying starts its verification over.)
    pub verification: Option<Verification<P>>,
}

/// Where a reloaded task stood when the coordinator stopped.
#[derive(Debug, Clone)]
pub enum RecoveredState<P> {
    /// Queued or backing off: it is queued again.
    Waiting,
    /// Held by a peer: the peer gets `recovery_grace` to reconnect and claim
    /// it before it is requeued, so a restart does not run everything twice.
    Assigned {
        peer: PeerId,
        attempt: Attempt,
        started: Option<Time>,
    },
    Finished {
        outcome: Outcome<P>,
        at: Time,
        delivered: bool,
    },
}

impl<P: Clone> Scheduler<P> {
    /// Holds again the runs of a reloaded task that its peers may still be
    /// working on: those taken away without the peer's word, and stopped
    /// ones (whether the peer confirmed is not stored), within
    /// `lost_run_hold` of when they ended.
    fn hold_runs_of(&mut self, id: TaskId, history: &[AttemptRecord]) {
        for run in history {
            let maybe_running = matches!(
                run.end,
                Some(
                    AttemptEnd::PeerLost
                        | AttemptEnd::Unclaimed
                        | AttemptEnd::Cancelled
                        | AttemptEnd::TimedOut
                )
            );
            if let (true, Some(ended)) = (maybe_running, run.ended_at) {
                self.hold_lost_run(ended, id, &run.peer, run.attempt);
            }
        }
    }

    /// Loads tasks from the store. Call once, before any other input (and
    /// after [`Scheduler::set_agreement`], so that tasks still verifying
    /// start their verification over).
    pub fn handle_recovered(&mut self, now: Time, mut tasks: Vec<Recovered<P>>) {
        let now = self.tick(now);
        tasks.sort_by_key(|t| t.spec.id);
        let mut finished = Vec::new();
        let mut held_by_finished = Vec::new();
        for rec in tasks {
            let id = rec.spec.id;
            self.next_task = self.next_task.max(id.0 + 1);
            self.hold_runs_of(id, &rec.history);
            let spec = Arc::new(rec.spec);
            let class = Arc::new(Class {
                task_type: Arc::clone(&spec.task_type),
                requirements: spec.requirements.clone(),
            });
            self.by_client.insert((spec.owner.clone(), Arc::clone(&spec.client_task_id)), id);
            if let Some(key) = &spec.idempotency_key {
                self.by_key.insert((spec.owner.clone(), Arc::clone(key)), id);
            }
            let verify = match rec.state {
                RecoveredState::Waiting => {
                    self.verification_for(&spec.task_type, &spec.payload, spec.verify)
                }
                _ => None,
            };
            if !matches!(rec.state, RecoveredState::Finished { .. }) && verify.is_none() {
                self.peer_ids.insert(Arc::clone(&spec.peer_task_id), id);
            }
            if let Some((policy, rule)) = verify {
                let mut task = Task::verifying(spec, class, now);
                task.history = rec.history;
                self.tasks.insert(id, task);
                self.start_verification(now, id, policy, rule);
                continue;
            }
            let state = match rec.state {
                RecoveredState::Waiting => State::Backoff { until: now },
                RecoveredState::Assigned { peer, attempt, started } => {
                    self.orphans.entry(peer.clone()).or_default().insert(id);
                    self.timers.insert(
                        now + self.config.recovery_grace,
                        Timer::RecoveryGrace(id, attempt),
                    );
                    let run_deadline =
                        spec.run_timeout.map(|limit| now + limit + self.config.run_timeout_slack);
                    if let Some(at) = run_deadline {
                        self.timers.insert(at, Timer::RunDeadline(id, attempt));
                    }
                    State::Assigned(Holder {
                        peer,
                        conn: None,
                        attempt,
                        since: now,
                        started,
                        run_deadline,
                    })
                }
                RecoveredState::Finished { outcome, at, delivered } => {
                    if self.lost_runs.contains_key(&id) {
                        held_by_finished.push((Arc::clone(&spec.peer_task_id), id));
                    }
                    if let (false, Owner::Gamer(g)) = (delivered, &spec.owner) {
                        self.undelivered.entry(g.clone()).or_default().insert(id);
                    }
                    finished.push((at, id));
                    State::Finished { outcome, at, delivered, to: None }
                }
            };
            let waiting = matches!(state, State::Backoff { .. });
            // A streamed task that had begun running may have sent output
            // before the restart: treated as streamed (the safe side).
            let streamed = spec.stream && rec.attempts > 0;
            let task = Task {
                spec,
                class,
                state,
                queued_at: now,
                waits: 0,
                queue_deadline: None,
                streamed,
                attempts: rec.attempts,
                failures: rec.failures,
                last_error: rec.last_error,
                history: rec.history,
                verification: rec.verification.map(Box::new),
                // Not stored: after a restart, a retried task's gamer may be
                // handed its new outcome too (clients dedupe by task id).
                outcome_given: false,
            };
            self.tasks.insert(id, task);
            if waiting {
                self.enqueue(now, id, false);
            }
        }
        // A live task holding the same id took it after the hold was over
        // (the peer answered), so it keeps it.
        for (wire, id) in held_by_finished {
            self.peer_ids.entry(wire).or_insert(id);
        }
        finished.sort();
        self.finished.extend(finished);
        self.evict(now);
        self.place(now);
    }
}
