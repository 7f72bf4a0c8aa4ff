//! The [`Scheduler`]: state, outputs, timers and the transitions shared by
//! every input. The inputs themselves are in `scheduler/peers.rs` (peers and
//! gamers) and `scheduler/tasks.rs` (submissions, results, cancellations).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::output::{Command, Event, LeaveReason, RequeueReason};
use crate::peer::{Leaving, Peer};
use codes::CloseReason;

use crate::placement::{self, Strategy};
use crate::queue::Queue;
use crate::task::{AttemptEnd, AttemptRecord, Holder, State, Task};
use crate::timers::{Timer, Timers};
use crate::types::{
    Attempt, ConnId, Failure, FailureCode, GamerId, Outcome, Owner, PeerId, TaskId, TaskState, Time,
};

mod ids;
mod peer_ids;
mod peers;
mod retry;
mod tasks;
mod trust;
mod verifying;

pub use peers::Joined;
pub use retry::RetryError;
pub use tasks::{Accepted, CancelError, Progress, ResultAck, SubmitError};
pub use trust::ClearError;
pub(crate) use verifying::Verifier;
pub use verifying::VerifyCounters;

/// Why a peer's message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// No peer with this id is registered on this connection.
    NotRegistered,
    /// The peer sent a result for a task the coordinator does not know.
    UnknownTask(TaskId),
}

/// The scheduler state machine. See the crate docs.
#[derive(Debug)]
pub struct Scheduler<P> {
    pub(crate) config: Config,
    pub(crate) now: Time,
    pub(crate) next_task: u64,
    /// Id blocks reserved in the store (`scheduler/ids.rs`).
    pub(crate) ids: ids::Reservation,
    pub(crate) tasks: BTreeMap<TaskId, Task<P>>,
    /// (owner, the submitter's task id) → task, for live and retained tasks.
    pub(crate) by_client: HashMap<(Owner, Arc<str>), TaskId>,
    /// (owner, idempotency key) → task, for live and retained tasks.
    pub(crate) by_key: HashMap<(Owner, Arc<str>), TaskId>,
    /// The id peers see → task, for live tasks and those a peer still runs.
    pub(crate) peer_ids: HashMap<Arc<str>, TaskId>,
    /// Peer ids still held by tasks already evicted (a peer still runs them).
    pub(crate) evicted_peer_ids: HashMap<TaskId, Arc<str>>,
    /// Runs peers may still be working on although they were taken away
    /// without the peer's word (`scheduler/peer_ids.rs`), by task.
    pub(crate) lost_runs: BTreeMap<TaskId, Vec<peer_ids::LostRun>>,
    /// Finished tasks past their retention whose eviction waits for their
    /// lost runs' holds to end.
    pub(crate) evict_later: BTreeSet<TaskId>,
    pub(crate) queue: Queue,
    /// Tasks out of the queue waiting for their back-off.
    pub(crate) backing_off: usize,
    pub(crate) peers: BTreeMap<PeerId, Peer>,
    /// Peers with at least one free slot.
    pub(crate) free: BTreeSet<PeerId>,
    /// Recovered assignments whose peer has not reconnected yet, by peer.
    pub(crate) orphans: BTreeMap<PeerId, BTreeSet<TaskId>>,
    pub(crate) gamers: BTreeMap<GamerId, ConnId>,
    /// Finished tasks whose outcome waits for its gamer to connect.
    pub(crate) undelivered: BTreeMap<GamerId, BTreeSet<TaskId>>,
    /// Finished tasks in the order they finished, for retention.
    pub(crate) finished: VecDeque<(Time, TaskId)>,
    pub(crate) timers: Timers,
    pub(crate) cursor: Option<PeerId>,
    pub(crate) rng: fastrand::Rng,
    pub(crate) commands: VecDeque<Command<P>>,
    pub(crate) events: VecDeque<Event<P>>,
    pub(crate) counters: Counters,
    /// Replicas, canaries, reputation (see [`crate::verify`]).
    pub(crate) verify: Verifier<P>,
    /// Tasks completed and failed by peers not connected now, kept for
    /// their next session (a reconnect, or the first after a restart: see
    /// [`Scheduler::handle_recovered_tallies`]); at most [`MAX_TALLIES`].
    pub(crate) tallies: BTreeMap<PeerId, Tally>,
}

/// The most peers whose [`Tally`] is kept while they are away; beyond, the
/// tally of one of them (the first by id) is forgotten.
pub const MAX_TALLIES: usize = 100_000;

/// What a peer ran to an end: results that completed and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub completed: u64,
    pub failed: u64,
}

/// Totals since the scheduler started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub timed_out: u64,
    pub requeued: u64,
    pub stale_results: u64,
    pub peers_dead: u64,
    /// Verification's totals (replicas and canaries are not counted above).
    pub verify: VerifyCounters,
}

impl<P: Clone> Scheduler<P> {
    /// A scheduler with no peers and no tasks; `now` is its first instant.
    pub fn new(config: Config, now: Time) -> Scheduler<P> {
        let rng = fastrand::Rng::with_seed(config.seed);
        let verify = Verifier::new(config.seed, config.verify.canary_pool);
        Scheduler {
            verify,
            tallies: BTreeMap::new(),
            config,
            now,
            next_task: 1,
            ids: ids::Reservation::default(),
            tasks: BTreeMap::new(),
            by_client: HashMap::new(),
            by_key: HashMap::new(),
            peer_ids: HashMap::new(),
            evicted_peer_ids: HashMap::new(),
            lost_runs: BTreeMap::new(),
            evict_later: BTreeSet::new(),
            queue: Queue::new(),
            backing_off: 0,
            peers: BTreeMap::new(),
            free: BTreeSet::new(),
            orphans: BTreeMap::new(),
            gamers: BTreeMap::new(),
            undelivered: BTreeMap::new(),
            finished: VecDeque::new(),
            timers: Timers::default(),
            cursor: None,
            rng,
            commands: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Switches the placement strategy; it applies from the next placement.
    pub fn set_strategy(&mut self, strategy: Strategy) {
        self.config.strategy = strategy;
    }

    /// Task ids start above `floor` (after a restart, above every stored id).
    pub fn set_next_task_id(&mut self, floor: u64) {
        self.next_task = self.next_task.max(floor.saturating_add(1));
    }

    /// The next command for the shell.
    pub fn poll_command(&mut self) -> Option<Command<P>> {
        self.commands.pop_front()
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// When [`Scheduler::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let retention = self.finished.front().map(|(at, _)| *at + self.config.result_ttl);
        match (self.timers.next(), retention) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        let now = self.tick(now);
        while let Some(timer) = self.timers.pop_due(now) {
            self.fire(now, timer);
        }
        self.evict(now);
        self.place(now);
    }

    /// Time only moves forward: an input from the past counts as now.
    pub(crate) fn tick(&mut self, now: Time) -> Time {
        self.now = self.now.max(now);
        self.now
    }

    fn fire(&mut self, now: Time, timer: Timer) {
        match timer {
            Timer::PeerLiveness(id, conn) => {
                let Some(peer) = self.peers.get(&id).filter(|p| p.conn == conn) else { return };
                let deadline = peer.last_seen + self.config.heartbeat_timeout;
                if deadline <= now {
                    self.counters.peers_dead += 1;
                    self.commands.push_back(Command::ClosePeer {
                        conn,
                        reason: CloseReason::HeartbeatTimeout,
                    });
                    self.drop_peer(now, &id, LeaveReason::Dead);
                } else {
                    self.timers.insert(deadline, Timer::PeerLiveness(id, conn));
                }
            }
            Timer::QueueDeadline(id, waits) => self.queue_deadline(now, id, waits),
            Timer::RunDeadline(id, attempt) => self.run_deadline(now, id, attempt),
            Timer::Retry(id) => {
                let due = matches!(
                    self.tasks.get(&id).map(|t| &t.state),
                    Some(State::Backoff { until }) if *until <= now
                );
                if due {
                    self.backing_off -= 1;
                    self.enqueue(now, id, true);
                }
            }
            Timer::RecoveryGrace(id, attempt) => self.recovery_grace(now, id, attempt),
            Timer::Zombie(peer, id, attempt) => {
                if let Some(p) = self.peers.get_mut(&peer)
                    && p.zombies.get(&id) == Some(&attempt)
                {
                    // The slot is free again; the run may still go on.
                    p.zombies.remove(&id);
                    self.refresh_free(&peer);
                    self.hold_lost_run(now, id, &peer, attempt);
                    self.release_peer_task_id(id);
                }
            }
            Timer::LostRun(id, peer, attempt) => self.end_lost_run(id, &peer, attempt),
        }
    }

    fn queue_deadline(&mut self, now: Time, id: TaskId, waits: u32) {
        let Some(task) = self.tasks.get(&id) else { return };
        if task.waits != waits
            || !matches!(task.state, State::Queued { .. } | State::Backoff { .. })
        {
            return;
        }
        let waited = now.saturating_since(task.queued_at);
        let reason = self.waiting_reason(id).map(|r| format!(" ({r})")).unwrap_or_default();
        let failure = Failure::new(
            FailureCode::QUEUE_TIMEOUT,
            format!("waited {:.1} s in the queue without starting{reason}", waited.as_secs_f64()),
        );
        self.finish(now, id, Outcome::TimedOut(failure), None);
    }

    fn run_deadline(&mut self, now: Time, id: TaskId, attempt: Attempt) {
        let Some(task) = self.tasks.get(&id) else { return };
        let State::Assigned(holder) = &task.state else { return };
        if holder.attempt != attempt {
            return;
        }
        let holder = holder.clone();
        let limit = task.spec.run_timeout.unwrap_or_default();
        self.stop_run(now, id, &holder, FailureCode::TIMED_OUT);
        let run = now.saturating_since(holder.since);
        let failure = Failure::new(
            FailureCode::RUN_TIMEOUT,
            format!(
                "ran {:.1} s on peer {}, over its timeout of {:.1} s",
                run.as_secs_f64(),
                holder.peer,
                limit.as_secs_f64()
            ),
        );
        if let Some(task) = self.tasks.get_mut(&id) {
            task.end_attempt(attempt, now, AttemptEnd::TimedOut);
            task.last_error = Some(failure.clone());
        }
        self.finish(now, id, Outcome::TimedOut(failure), Some(run));
    }

    /// Takes a running attempt away from its peer (cancel or timeout): the
    /// peer is told to stop, and the run keeps its slot as a zombie until
    /// the peer confirms or `cancel_grace` passes.
    pub(crate) fn stop_run(&mut self, now: Time, id: TaskId, holder: &Holder, reason: FailureCode) {
        match holder.conn {
            Some(conn) => {
                if let Some(peer) = self.peers.get_mut(&holder.peer) {
                    peer.tasks.remove(&id);
                    peer.zombies.insert(id, holder.attempt);
                }
                self.commands.push_back(Command::Cancel {
                    conn,
                    task: id,
                    attempt: holder.attempt,
                    reason,
                });
                self.timers.insert(
                    now + self.config.cancel_grace,
                    Timer::Zombie(holder.peer.clone(), id, holder.attempt),
                );
            }
            None => {
                // Its peer has not reconnected since a restart: it may still
                // run it, and cannot be told to stop.
                self.forget_orphan(&holder.peer, id);
                self.hold_lost_run(now, id, &holder.peer, holder.attempt);
            }
        }
    }

    pub(crate) fn forget_orphan(&mut self, peer: &PeerId, id: TaskId) {
        if let Some(set) = self.orphans.get_mut(peer) {
            set.remove(&id);
            if set.is_empty() {
                self.orphans.remove(peer);
            }
        }
    }

    /// Assigns every task it can to every free slot.
    pub(crate) fn place(&mut self, now: Time) {
        // Assignments may queue hidden tasks (replicas that adaptive
        // replication decided on, canaries): they get a few more rounds.
        for _ in 0..4 {
            if self.queue.is_empty() || self.free.is_empty() {
                return;
            }
            // The free peers in id order: a scan when many are free (no
            // lookups), lookups by id when few are.
            let free_peers: Vec<&Peer> = if self.free.len() * 8 >= self.peers.len() {
                self.peers.values().filter(|p| p.free() > 0).collect()
            } else {
                self.free.iter().filter_map(|id| self.peers.get(id)).collect()
            };
            let mut apart = verifying::Apart::new(&self.verify.hidden, &self.tasks);
            let (queue, strategy) = (&self.queue, self.config.strategy);
            let plan = placement::plan(queue, &free_peers, strategy, &mut self.cursor, &mut apart);
            self.verify.queued_while_placing = false;
            for p in plan {
                self.assign(now, p.task, &p.peer);
            }
            if !self.verify.queued_while_placing {
                return;
            }
        }
    }

    fn assign(&mut self, now: Time, id: TaskId, peer_id: &PeerId) {
        // Its id may not leave before a reservation covering it committed
        // (`scheduler/ids.rs`); it stays queued until then.
        if !self.id_may_leave(id) {
            return;
        }
        let Some(peer) = self.peers.get_mut(peer_id) else { return };
        let Some(task) = self.tasks.get_mut(&id) else { return };
        let State::Queued { pos } = &task.state else { return };
        self.queue.remove(pos);
        task.attempts += 1;
        let attempt = Attempt(task.attempts);
        let conn = peer.conn;
        let run_deadline =
            task.spec.run_timeout.map(|limit| now + limit + self.config.run_timeout_slack);
        task.state = State::Assigned(Holder {
            peer: peer_id.clone(),
            conn: Some(conn),
            attempt,
            since: now,
            started: None,
            run_deadline,
        });
        task.history.push(AttemptRecord {
            attempt,
            peer: peer_id.clone(),
            assigned_at: now,
            ended_at: None,
            end: None,
        });
        peer.tasks.insert(id, attempt);
        if let Some(at) = run_deadline {
            self.timers.insert(at, Timer::RunDeadline(id, attempt));
        }
        let spec = Arc::clone(&task.spec);
        let queue_wait = now.saturating_since(task.queued_at);
        // The wait is over: its deadline goes.
        self.end_wait(id);
        self.refresh_free(peer_id);
        let hidden = spec.kind.is_hidden();
        self.events.push_back(Event::TaskAssigned {
            task: id,
            task_type: Arc::clone(&spec.task_type),
            peer: peer_id.clone(),
            attempt,
            queue_wait,
            at: now,
            hidden,
        });
        self.commands.push_back(Command::Assign {
            conn,
            peer: peer_id.clone(),
            task: spec,
            attempt,
        });
        self.after_assign(now, id, peer_id);
    }

    /// Puts a task in the queue (at the front of its level after a failure).
    pub(crate) fn enqueue(&mut self, now: Time, id: TaskId, front: bool) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        let pos = self.queue.push(Arc::clone(&task.class), task.spec.priority, id, front);
        task.state = State::Queued { pos };
        task.queued_at = now;
        task.waits += 1;
        let deadline = now + task.spec.queue_timeout;
        task.queue_deadline = Some(deadline);
        self.timers.insert(deadline, Timer::QueueDeadline(id, task.waits));
    }

    /// A task's wait in the queue ended (assigned, cancelled, reclaimed):
    /// its queue-deadline timer goes.
    pub(crate) fn end_wait(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        if let Some(at) = task.queue_deadline.take() {
            self.timers.remove(at, Timer::QueueDeadline(id, task.waits));
        }
    }

    /// An attempt ended without finishing its task: requeue the task, or end
    /// it when the failures reach `max_attempts`.
    pub(crate) fn requeue(
        &mut self,
        now: Time,
        id: TaskId,
        end: AttemptEnd,
        reason: RequeueReason,
        counts: bool,
    ) {
        let Some(task) = self.tasks.get(&id) else { return };
        let State::Assigned(holder) = &task.state else { return };
        let (attempt, holder_peer) = (holder.attempt, holder.peer.clone());
        if matches!(end, AttemptEnd::PeerLost | AttemptEnd::Unclaimed) {
            self.hold_lost_run(now, id, &holder_peer, attempt);
        }
        self.end_attempt(now, id, attempt, end.clone());
        let Some(task) = self.tasks.get_mut(&id) else { return };
        if task.streamed {
            // Output of this attempt already reached the submitter: another
            // attempt would repeat it or splice other text onto it.
            let failure = Failure::new(
                FailureCode::STREAM_INTERRUPTED,
                format!(
                    "the attempt streaming the output ended ({}) after output had been sent; \
                     it is not run again, so that no output is repeated",
                    end.kind()
                ),
            );
            task.failures += u32::from(counts);
            task.last_error = Some(failure.clone());
            self.finish(now, id, Outcome::Failed(failure), None);
            return;
        }
        if counts {
            task.failures += 1;
            task.last_error = Some(match &reason {
                RequeueReason::Failed(f) => f.clone(),
                RequeueReason::PeerLost => Failure::new(
                    FailureCode::PEER_LOST,
                    format!("peer {holder_peer} was lost while running the task"),
                ),
                RequeueReason::Unclaimed => Failure::new(
                    FailureCode::PEER_LOST,
                    format!("peer {holder_peer} did not reclaim the task after a restart"),
                ),
                RequeueReason::Returned => {
                    Failure::new(FailureCode::RETURNED, "returned by its peer")
                }
            });
        }
        let (failures, max) = (task.failures, task.spec.max_attempts);
        let task_type = Arc::clone(&task.spec.task_type);
        let hidden = task.spec.kind.is_hidden();
        if counts && failures >= max {
            let last = task.last_error.clone().map(|f| f.to_string()).unwrap_or_default();
            let failure = Failure::new(
                FailureCode::ATTEMPTS_EXHAUSTED,
                format!("failed {failures} attempts (max_attempts {max}); last error: {last}"),
            );
            self.finish(now, id, Outcome::Failed(failure), None);
            return;
        }
        let delay = if counts {
            self.config.retry_backoff.delay(failures, self.rng.f64())
        } else {
            Duration::ZERO
        };
        let retry_at = now + delay;
        if delay.is_zero() {
            self.enqueue(now, id, true);
        } else if let Some(task) = self.tasks.get_mut(&id) {
            task.state = State::Backoff { until: retry_at };
            task.queued_at = now;
            self.backing_off += 1;
            self.timers.insert(retry_at, Timer::Retry(id));
        }
        self.counters.requeued += 1;
        self.events.push_back(Event::TaskRequeued {
            task: id,
            task_type,
            peer: holder_peer,
            attempt,
            end,
            reason,
            failures,
            at: now,
            retry_at,
            hidden,
        });
    }

    /// Ends a task with `outcome` and delivers it when its gamer is connected.
    /// The caller has already released the task from its peer, if any.
    pub(crate) fn finish(
        &mut self,
        now: Time,
        id: TaskId,
        outcome: Outcome<P>,
        run_time: Option<Duration>,
    ) {
        if self.verify.hidden.contains_key(&id) {
            return self.hidden_finished(now, id, outcome, run_time);
        }
        let Some(task) = self.tasks.get_mut(&id) else { return };
        match &task.state {
            State::Queued { pos } => {
                self.queue.remove(pos);
            }
            State::Backoff { .. } => self.backing_off -= 1,
            State::Assigned(_) | State::Verifying { .. } => {}
            State::Finished { .. } => return,
        }
        match outcome.status() {
            TaskState::Completed => self.counters.completed += 1,
            TaskState::Failed => self.counters.failed += 1,
            TaskState::Cancelled => self.counters.cancelled += 1,
            _ => self.counters.timed_out += 1,
        }
        let spec = Arc::clone(&task.spec);
        let (attempts, failures) = (task.attempts, task.failures);
        // A gamer handed an earlier outcome before a retry gets no second one.
        let given = task.outcome_given;
        let conn = match &spec.owner {
            Owner::Gamer(g) if !given => self.gamers.get(g).copied(),
            _ => None,
        };
        let delivered = conn.is_some() || !spec.owner.is_gamer() || given;
        let last = task.history.last().filter(|r| r.ended_at == Some(now));
        let ended = last.and_then(|r| r.end.clone().map(|end| (r.attempt, end)));
        let peer = last.map(|r| r.peer.clone());
        task.state = State::Finished { outcome: outcome.clone(), at: now, delivered, to: conn };
        self.finished.push_back((now, id));
        self.release_peer_task_id(id);
        self.events.push_back(Event::TaskFinished {
            task: Arc::clone(&spec),
            outcome: outcome.clone(),
            attempts,
            failures,
            run_time,
            ended,
            peer,
            at: now,
        });
        match (&spec.owner, conn) {
            (Owner::Gamer(_), None) if given => {}
            (Owner::Gamer(gamer), Some(conn)) => {
                let gamer = gamer.clone();
                self.push_delivery(conn, gamer, spec, outcome, attempts);
            }
            (Owner::Gamer(gamer), None) => {
                self.undelivered.entry(gamer.clone()).or_default().insert(id);
            }
            (Owner::Api | Owner::Key(_), _) => {}
        }
        self.evict(now);
    }

    /// Hands a finished task's outcome to its gamer on `conn` — again, when
    /// it went out before: the one path every re-delivery takes.
    pub(crate) fn hand_over(&mut self, id: TaskId, conn: ConnId) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        let Owner::Gamer(gamer) = &task.spec.owner else { return };
        let State::Finished { outcome, delivered, to, .. } = &mut task.state else { return };
        *delivered = true;
        *to = Some(conn);
        let (spec, outcome, attempts) = (task.spec.clone(), outcome.clone(), task.attempts);
        let gamer = gamer.clone();
        self.not_undelivered(&gamer, id);
        self.push_delivery(conn, gamer, spec, outcome, attempts);
    }

    /// `id`'s outcome no longer waits for `gamer` to connect.
    pub(crate) fn not_undelivered(&mut self, gamer: &GamerId, id: TaskId) {
        if let Some(set) = self.undelivered.get_mut(gamer) {
            set.remove(&id);
            if set.is_empty() {
                self.undelivered.remove(gamer);
            }
        }
    }

    pub(crate) fn push_delivery(
        &mut self,
        conn: ConnId,
        gamer: GamerId,
        task: Arc<crate::task::TaskSpec<P>>,
        outcome: Outcome<P>,
        attempts: u32,
    ) {
        let id = task.id;
        self.commands.push_back(Command::Deliver { conn, gamer, task, outcome, attempts });
        self.events.push_back(Event::Delivered { task: id });
    }

    /// Ends `attempt` in the task's history and removes its run-deadline timer.
    pub(crate) fn end_attempt(&mut self, now: Time, id: TaskId, attempt: Attempt, end: AttemptEnd) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        if let State::Assigned(h) = &task.state
            && h.attempt == attempt
            && let Some(at) = h.run_deadline
        {
            self.timers.remove(at, Timer::RunDeadline(id, attempt));
        }
        task.end_attempt(attempt, now, end);
    }

    /// Timers pending (for tests: the set must not grow with history).
    #[cfg(test)]
    pub(crate) fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    #[cfg(test)]
    pub(crate) fn timer_kinds(&self) -> std::collections::BTreeMap<&'static str, usize> {
        self.timers.kinds()
    }

    /// Drops finished tasks past their TTL, and the oldest beyond the cap.
    pub(crate) fn evict(&mut self, now: Time) {
        let mut gone = BTreeSet::new();
        while let Some(&(at, id)) = self.finished.front() {
            let expired = at + self.config.result_ttl <= now;
            if !expired && self.finished.len() <= self.config.max_retained {
                break;
            }
            self.finished.pop_front();
            // Its rows stay while a peer may still answer it by its peer
            // id, so that a restart finds the hold again.
            if self.still_runs(id) {
                self.evict_later.insert(id);
                continue;
            }
            self.forget_finished(id);
            gone.insert(id);
        }
        if !gone.is_empty() {
            self.events.push_back(Event::Evicted { tasks: gone });
        }
    }

    /// Drops a finished task from memory (the caller reports it evicted).
    pub(crate) fn forget_finished(&mut self, id: TaskId) {
        self.evict_peer_task_id(id);
        let Some(task) = self.tasks.remove(&id) else { return };
        let owner = task.spec.owner.clone();
        let client = (owner.clone(), Arc::clone(&task.spec.client_task_id));
        if self.by_client.get(&client) == Some(&id) {
            self.by_client.remove(&client);
        }
        if let Some(key) = &task.spec.idempotency_key {
            let key = (owner.clone(), Arc::clone(key));
            if self.by_key.get(&key) == Some(&id) {
                self.by_key.remove(&key);
            }
        }
        if let Owner::Gamer(g) = &owner {
            self.not_undelivered(g, id);
        }
    }

    /// Keeps `tally` for `peer`'s next session.
    pub(crate) fn keep_tally(&mut self, peer: &PeerId, tally: Tally) {
        if tally == Tally::default() {
            return;
        }
        if self.tallies.len() >= MAX_TALLIES && !self.tallies.contains_key(peer) {
            self.tallies.pop_first();
        }
        self.tallies.insert(peer.clone(), tally);
    }

    /// What peers ran to an end in the store's history (after a restart,
    /// before any peer joins): each one's next session starts from it.
    pub fn handle_recovered_tallies(&mut self, tallies: impl IntoIterator<Item = (PeerId, Tally)>) {
        for (peer, tally) in tallies {
            self.keep_tally(&peer, tally);
        }
    }

    /// Removes a peer; its assignments go back to the queue (a failed attempt
    /// each), and its zombies become lost runs (it may still run them).
    pub(crate) fn drop_peer(&mut self, now: Time, id: &PeerId, reason: LeaveReason) {
        let Some(peer) = self.peers.remove(id) else { return };
        self.free.remove(id);
        self.keep_tally(id, peer.tally());
        for (task, _) in peer.tasks {
            self.requeue(now, task, AttemptEnd::PeerLost, RequeueReason::PeerLost, true);
        }
        for (&task, &attempt) in &peer.zombies {
            self.hold_lost_run(now, task, id, attempt);
            self.release_peer_task_id(task);
        }
        self.events.push_back(Event::PeerLeft { peer: id.clone(), conn: peer.conn, reason });
        self.peer_gone(now, id);
    }

    /// Keeps `free` in step with a peer's slots.
    pub(crate) fn refresh_free(&mut self, id: &PeerId) {
        // The one place a peer's load changes is seen: an operator's drain
        // ends here, once it holds nothing (stopped runs included).
        if let Some(p) = self.peers.get_mut(id)
            && p.leaving == Leaving::WhenIdle
            && p.used() == 0
        {
            p.leaving = Leaving::Told;
            let conn = p.conn;
            self.commands.push_back(Command::ClosePeer { conn, reason: CloseReason::Drained });
        }
        match self.peers.get(id) {
            Some(p) if p.free() > 0 => {
                self.free.insert(id.clone());
            }
            _ => {
                self.free.remove(id);
            }
        }
    }

    pub(crate) fn recovery_grace(&mut self, now: Time, id: TaskId, attempt: Attempt) {
        let Some(task) = self.tasks.get(&id) else { return };
        let State::Assigned(h) = &task.state else { return };
        if h.attempt != attempt || h.conn.is_some() {
            return;
        }
        let peer = h.peer.clone();
        self.forget_orphan(&peer, id);
        self.requeue(now, id, AttemptEnd::Unclaimed, RequeueReason::Unclaimed, true);
    }

    /// Totals since start.
    pub fn counters(&self) -> Counters {
        Counters { verify: self.verify.counters, ..self.counters }
    }
}
