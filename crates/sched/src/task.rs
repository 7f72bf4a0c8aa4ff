//! Tasks: what was submitted (immutable, shared) and where each one stands.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::{Class, QueuePos};
use crate::types::{Attempt, ConnId, Failure, Outcome, Owner, PeerId, TaskId, TaskState, Time};
use crate::verify::{Policy, Verification};

/// What a peer must have to run a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirements {
    /// A model the peer must serve.
    pub model: Option<Arc<str>>,
    /// The peer must have a GPU.
    pub gpu: bool,
    /// The peer must have a GPU with at least this much memory.
    pub min_vram_mb: Option<u64>,
}

impl Requirements {
    pub fn needs_gpu(&self) -> bool {
        self.gpu || self.min_vram_mb.is_some()
    }
}

/// A submission, as the shell hands it to [`crate::Scheduler::handle_submit`].
#[derive(Debug, Clone)]
pub struct Submission<P> {
    pub owner: Owner,
    /// The submitter's own id for the task; the cluster id is used when absent.
    pub client_task_id: Option<Arc<str>>,
    pub task_type: Arc<str>,
    pub payload: P,
    /// Higher first; FIFO within a level.
    pub priority: i32,
    pub requirements: Requirements,
    /// The most one run may take (enforced by the peer, then by the core).
    pub run_timeout: Option<Duration>,
    /// The most the task may wait before it first starts.
    pub queue_timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub idempotency_key: Option<Arc<str>>,
    /// The submitter wants the run's progress as it comes (see
    /// [`crate::Scheduler::handle_progress`]).
    pub stream: bool,
    /// How the result is verified; the cluster's default when absent.
    pub verify: Option<Policy>,
    /// The credential that submitted it, as the shell names it (kept with
    /// the task, so that its gamer id stays bound to that credential after
    /// a restart).
    pub submitter: Option<Arc<str>>,
}

impl<P> Submission<P> {
    /// A submission with defaults for everything but type and payload.
    pub fn new(owner: Owner, task_type: impl Into<Arc<str>>, payload: P) -> Submission<P> {
        Submission {
            owner,
            client_task_id: None,
            task_type: task_type.into(),
            payload,
            priority: 1,
            requirements: Requirements::default(),
            run_timeout: None,
            queue_timeout: None,
            max_attempts: None,
            idempotency_key: None,
            stream: false,
            verify: None,
            submitter: None,
        }
    }
}

/// What a task is to the scheduler: the submitter's, or one it made to
/// verify results (hidden from the submitter, never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// A submitted task.
    Task,
    /// A replica of the verified task `of`.
    Replica { of: TaskId },
    /// A task with a known answer, for `peer` only.
    Canary { peer: PeerId },
}

impl TaskKind {
    /// Whether the scheduler made it (a replica or a canary).
    pub fn is_hidden(&self) -> bool {
        !matches!(self, TaskKind::Task)
    }
}

/// A task as accepted: immutable, and shared by commands and events.
#[derive(Debug, Clone)]
pub struct TaskSpec<P> {
    pub id: TaskId,
    pub owner: Owner,
    /// The id the submitter knows the task by.
    pub client_task_id: Arc<str>,
    /// The id peers know the task by: the submitter's own, unless another
    /// live task held it when this one was submitted (then the cluster id).
    pub peer_task_id: Arc<str>,
    pub task_type: Arc<str>,
    pub payload: P,
    pub priority: i32,
    pub requirements: Requirements,
    pub run_timeout: Option<Duration>,
    /// The most the task may wait in the queue, each time it waits.
    pub queue_timeout: Duration,
    pub max_attempts: u32,
    pub idempotency_key: Option<Arc<str>>,
    pub submitted_at: Time,
    /// The submitter receives the run's progress as it comes.
    pub stream: bool,
    /// The verification policy in force for the task (stored with it);
    /// `None` when it is not verified.
    pub verify: Option<Policy>,
    /// The credential that submitted it (see [`Submission::submitter`]).
    pub submitter: Option<Arc<str>>,
    pub kind: TaskKind,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    Completed,
    Failed(Failure),
    /// Its peer died or disconnected.
    PeerLost,
    /// Its peer gave it back.
    Returned,
    /// After a coordinator restart its peer did not claim it in time.
    Unclaimed,
    Cancelled,
    TimedOut,
}

impl AttemptEnd {
    /// The end's stable name, for storage and display.
    pub fn kind(&self) -> codes::AttemptEnd {
        match self {
            AttemptEnd::Completed => codes::AttemptEnd::Completed,
            AttemptEnd::Failed(_) => codes::AttemptEnd::Failed,
            AttemptEnd::PeerLost => codes::AttemptEnd::PeerLost,
            AttemptEnd::Returned => codes::AttemptEnd::Returned,
            AttemptEnd::Unclaimed => codes::AttemptEnd::Unclaimed,
            AttemptEnd::Cancelled => codes::AttemptEnd::Cancelled,
            AttemptEnd::TimedOut => codes::AttemptEnd::TimedOut,
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// One assignment of a task and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: Attempt,
    pub peer: PeerId,
    pub assigned_at: Time,
    pub ended_at: Option<Time>,
    pub end: Option<AttemptEnd>,
}

/// The peer holding an assignment. `conn` is `None` for an assignment
/// recovered after a coordinator restart whose peer has not reconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub peer: PeerId,
    pub conn: Option<ConnId>,
    pub attempt: Attempt,
    pub since: Time,
    pub started: Option<Time>,
    /// When the attempt's run-deadline timer fires, when it has one (the
    /// timer's key, kept so that removing it needs no recomputation).
    pub run_deadline: Option<Time>,
}

#[derive(Debug, Clone)]
pub(crate) enum State<P> {
    /// In the queue at `pos`.
    Queued {
        pos: QueuePos,
    },
    /// Out of the queue until its back-off passes.
    Backoff {
        until: Time,
    },
    Assigned(Holder),
    /// Waiting for its replicas' verdict (it never runs itself); `stage`
    /// is queued, assigned (a replica was) or running (a replica started).
    Verifying {
        stage: TaskState,
    },
    Finished {
        outcome: Outcome<P>,
        at: Time,
        delivered: bool,
        /// The connection the outcome was last handed to.
        to: Option<ConnId>,
    },
}

/// A task and its life so far.
#[derive(Debug, Clone)]
pub struct Task<P> {
    pub(crate) spec: Arc<TaskSpec<P>>,
    pub(crate) class: Arc<Class>,
    pub(crate) state: State<P>,
    /// When it last entered the queue.
    pub(crate) queued_at: Time,
    /// How many times it entered the queue (tells queue-deadline timers apart).
    pub(crate) waits: u32,
    /// When the current wait's queue-deadline timer fires, while one is set.
    pub(crate) queue_deadline: Option<Time>,
    /// Progress of the current attempt reached the submitter: losing the
    /// attempt now ends the task (`stream_interrupted`) instead of running
    /// it again, so that streamed output is never repeated or spliced.
    pub(crate) streamed: bool,
    /// Assignments issued so far; the current attempt's number.
    pub(crate) attempts: u32,
    /// Failed attempts, counted against `max_attempts`.
    pub(crate) failures: u32,
    pub(crate) last_error: Option<Failure>,
    pub(crate) history: Vec<AttemptRecord>,
    /// Its gamer was handed an outcome before an operator's retry: the
    /// next outcome is not sent (one outcome per task on the wire).
    pub(crate) outcome_given: bool,
    /// Its replicas and their verdicts, when it is verified.
    pub(crate) verification: Option<Box<Verification<P>>>,
}

impl<P> Task<P> {
    pub(crate) fn new(
        spec: Arc<TaskSpec<P>>,
        class: Arc<Class>,
        pos: QueuePos,
        now: Time,
        queue_deadline: Time,
    ) -> Task<P> {
        Task {
            spec,
            class,
            state: State::Queued { pos },
            queued_at: now,
            waits: 1,
            queue_deadline: Some(queue_deadline),
            streamed: false,
            attempts: 0,
            failures: 0,
            last_error: None,
            history: Vec::new(),
            outcome_given: false,
            verification: None,
        }
    }

    /// A task that waits for its replicas' verdict (see [`crate::verify`]).
    pub(crate) fn verifying(spec: Arc<TaskSpec<P>>, class: Arc<Class>, now: Time) -> Task<P> {
        Task {
            spec,
            class,
            state: State::Verifying { stage: TaskState::Queued },
            queued_at: now,
            waits: 0,
            queue_deadline: None,
            streamed: false,
            attempts: 0,
            failures: 0,
            last_error: None,
            history: Vec::new(),
            verification: None,
            outcome_given: false,
        }
    }

    pub fn spec(&self) -> &Arc<TaskSpec<P>> {
        &self.spec
    }

    pub fn id(&self) -> TaskId {
        self.spec.id
    }

    pub fn status(&self) -> TaskState {
        match &self.state {
            State::Queued { .. } | State::Backoff { .. } => TaskState::Queued,
            State::Assigned(h) if h.started.is_some() => TaskState::Running,
            State::Assigned(_) => TaskState::Assigned,
            State::Verifying { stage } => *stage,
            State::Finished { outcome, .. } => outcome.status(),
        }
    }

    /// The current (latest) attempt number; 0 before the first assignment.
    pub fn attempt(&self) -> Attempt {
        Attempt(self.attempts)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The peer holding the task, while it is assigned.
    pub fn peer(&self) -> Option<&PeerId> {
        match &self.state {
            State::Assigned(h) => Some(&h.peer),
            _ => None,
        }
    }

    /// When the current assignment was made, while assigned.
    pub fn assigned_at(&self) -> Option<Time> {
        match &self.state {
            State::Assigned(h) => Some(h.since),
            _ => None,
        }
    }

    /// When the peer said it started the current assignment.
    pub fn started_at(&self) -> Option<Time> {
        match &self.state {
            State::Assigned(h) => h.started,
            _ => None,
        }
    }

    pub fn outcome(&self) -> Option<&Outcome<P>> {
        match &self.state {
            State::Finished { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    pub fn finished_at(&self) -> Option<Time> {
        match &self.state {
            State::Finished { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// Whether the outcome was handed to the submitter.
    pub fn delivered(&self) -> bool {
        matches!(self.state, State::Finished { delivered: true, .. })
    }

    /// The error of the last failed attempt.
    pub fn last_error(&self) -> Option<&Failure> {
        self.last_error.as_ref()
    }

    pub fn history(&self) -> &[AttemptRecord] {
        &self.history
    }

    /// Its replicas and their verdicts, when it is verified.
    pub fn verification(&self) -> Option<&Verification<P>> {
        self.verification.as_deref()
    }

    /// Closes the history record of `attempt`.
    pub(crate) fn end_attempt(&mut self, attempt: Attempt, now: Time, end: AttemptEnd) {
        if let Some(rec) = self.history.iter_mut().rev().find(|r| r.attempt == attempt)
            && rec.end.is_none()
        {
            rec.ended_at = Some(now);
            rec.end = Some(end);
        }
    }
}
