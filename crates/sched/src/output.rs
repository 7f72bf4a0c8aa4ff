//! What the scheduler asks of its shell: commands to carry out and events to
//! publish (to the store, the metrics and the event stream).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::task::{AttemptEnd, TaskSpec};
use codes::CloseReason;

use crate::types::{Attempt, ConnId, Failure, FailureCode, GamerId, Outcome, PeerId, TaskId, Time};
use crate::verify::{Reputation, Subject, Verification};

/// Something the shell must do.
#[derive(Debug, Clone)]
pub enum Command<P> {
    /// Send `task_assignment` to the peer on `conn`.
    Assign { conn: ConnId, peer: PeerId, task: Arc<TaskSpec<P>>, attempt: Attempt },
    /// Send `cancel_task` to the peer on `conn`.
    Cancel { conn: ConnId, task: TaskId, attempt: Attempt, reason: FailureCode },
    /// Send the task's outcome (`task_result` or `task_error`) to the gamer on `conn`.
    Deliver {
        conn: ConnId,
        gamer: GamerId,
        task: Arc<TaskSpec<P>>,
        outcome: Outcome<P>,
        attempts: u32,
    },
    /// Close a peer's connection: its session was replaced, or it was
    /// declared dead while its socket stayed open.
    ClosePeer { conn: ConnId, reason: CloseReason },
    /// Close a gamer's connection: another connection took its id.
    CloseGamer { conn: ConnId, reason: CloseReason },
}

/// Why a peer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// Its connection closed.
    Disconnected,
    /// It stopped heartbeating.
    Dead,
    /// A new session with the same id replaced it.
    Replaced,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Dead => "dead",
            LeaveReason::Replaced => "replaced",
        }
    }
}

/// Why a task went back to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequeueReason {
    PeerLost,
    /// A retryable error.
    Failed(Failure),
    Returned,
    /// After a coordinator restart, its peer did not claim it in time.
    Unclaimed,
}

impl RequeueReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            RequeueReason::PeerLost => "peer_lost",
            RequeueReason::Failed(_) => "failed",
            RequeueReason::Returned => "returned",
            RequeueReason::Unclaimed => "unclaimed",
        }
    }
}

/// Something that happened, in order. The store persists these, the metrics
/// count them and the event stream publishes them.
#[derive(Debug, Clone)]
pub enum Event<P> {
    PeerJoined {
        peer: PeerId,
        conn: ConnId,
        slots: u32,
    },
    PeerLeft {
        peer: PeerId,
        conn: ConnId,
        reason: LeaveReason,
    },
    /// It takes nothing new: it asked to drain, or an operator drained it.
    PeerDraining {
        peer: PeerId,
    },
    /// An operator retried a finished task: it is queued again under the
    /// same id, its peers seeing `peer_task_id`.
    TaskRetried {
        task: TaskId,
        task_type: Arc<str>,
        peer_task_id: Arc<str>,
        /// The last attempt so far (the next one is numbered after it).
        attempt: Attempt,
        at: Time,
    },
    /// An operator paused it (`paused`) or resumed it.
    PeerPaused {
        peer: PeerId,
        paused: bool,
    },
    GamerJoined {
        gamer: GamerId,
        conn: ConnId,
    },
    GamerLeft {
        gamer: GamerId,
        conn: ConnId,
    },
    /// Task ids below `next` are taken: the store must record it before
    /// any of them is shown to a peer (`Scheduler::handle_ids_durable`).
    IdsReserved {
        next: u64,
    },
    /// A task was accepted (the store must make it durable before the
    /// submitter is told).
    TaskSubmitted {
        task: Arc<TaskSpec<P>>,
    },
    TaskAssigned {
        task: TaskId,
        task_type: Arc<str>,
        peer: PeerId,
        attempt: Attempt,
        queue_wait: Duration,
        at: Time,
        /// The task is a replica or a canary (not stored, not shown).
        hidden: bool,
    },
    TaskStarted {
        task: TaskId,
        peer: PeerId,
        attempt: Attempt,
        at: Time,
        hidden: bool,
    },
    /// A requeued task went back to the peer that lost it: the peer
    /// reconnected still running the same attempt.
    TaskReclaimed {
        task: TaskId,
        peer: PeerId,
        attempt: Attempt,
        /// The task's failures, less the one the reclaim undid.
        failures: u32,
        hidden: bool,
    },
    /// An attempt ended without finishing the task; the task waits for
    /// another after `retry_at`.
    TaskRequeued {
        task: TaskId,
        task_type: Arc<str>,
        /// The peer whose attempt ended.
        peer: PeerId,
        attempt: Attempt,
        end: AttemptEnd,
        reason: RequeueReason,
        failures: u32,
        /// When the attempt ended (the store records it as the attempt's end).
        at: Time,
        retry_at: Time,
        hidden: bool,
    },
    /// The task ended. `run_time` is the last attempt's, when it ran.
    TaskFinished {
        task: Arc<TaskSpec<P>>,
        outcome: Outcome<P>,
        attempts: u32,
        /// Failed attempts, counting one that ended with the task.
        failures: u32,
        run_time: Option<Duration>,
        /// The attempt that ended with the task, and how, when one did.
        ended: Option<(Attempt, AttemptEnd)>,
        /// The peer of the attempt that ended with the task, when one did.
        peer: Option<PeerId>,
        at: Time,
    },
    /// A result arrived for an attempt that is no longer current; recorded,
    /// never delivered.
    StaleResult {
        task: TaskId,
        attempt: Attempt,
        peer: PeerId,
        hidden: bool,
    },
    /// The outcome was handed to the submitter.
    Delivered {
        task: TaskId,
    },
    /// A handed-over outcome did not reach the submitter; it waits again.
    Undelivered {
        task: TaskId,
    },
    /// Finished tasks dropped from memory (their TTL passed or the cap was hit).
    Evicted {
        tasks: BTreeSet<TaskId>,
    },
    /// A verified task reached its verdict; its `TaskFinished` follows.
    Verified {
        task: TaskId,
        task_type: Arc<str>,
        verification: Arc<Verification<P>>,
    },
    /// A verified task's results disagreed (reported once per task).
    Disagreed {
        task: TaskId,
        task_type: Arc<str>,
    },
    /// A worker's or credential's reputation changed (the store keeps it).
    Reputation {
        subject: Subject,
        reputation: Reputation,
        at: Time,
    },
    /// A worker was quarantined: it gets no new work until cleared.
    Quarantined {
        peer: PeerId,
    },
    /// An operator lifted a worker's quarantine.
    Cleared {
        peer: PeerId,
    },
    /// A canary came back from the worker it was made for.
    CanaryAnswered {
        peer: PeerId,
        task_type: Arc<str>,
        passed: bool,
    },
}
