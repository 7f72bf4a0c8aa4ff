//! The owner's controls, decided on the core loop: pause, resume and drain a
//! worker, retry a task, and cancel or retry many tasks at once.
//!
//! A bulk action takes the ids the HTTP handler read from the store for a
//! filter, a step of at most `Limits::bulk_step` at a time, so the core
//! never searches for them; each id is then decided here as its own cancel
//! or retry would be.

use sched::{CancelError, Owner, PeerError, PeerId, RetryError, TaskId};

use super::Core;
use super::requests::Reply;

/// What an operator does to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerAction {
    /// It keeps its connection and running tasks and gets nothing new.
    Pause,
    /// It takes work again (a pause, or a drain not yet carried out, ends).
    Resume,
    /// It gets nothing new, finishes what it runs, and is told to leave.
    Drain,
}

impl WorkerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerAction::Pause => "paused",
            WorkerAction::Resume => "resumed",
            WorkerAction::Drain => "draining",
        }
    }
}

/// A bulk action on tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BulkAction {
    Cancel,
    Retry,
}

/// What a bulk action did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BulkOutcome {
    /// Tasks it cancelled or retried.
    pub done: u64,
    /// Tasks it could not (already finished, completed, unknown, …).
    pub skipped: u64,
}

/// A control request.
pub(crate) enum Control {
    Worker {
        worker_id: String,
        action: WorkerAction,
        reply: Reply<Result<(), PeerError>>,
    },
    Retry {
        task: TaskId,
        reply: Reply<Result<(), RetryError>>,
    },
    /// The answer also names the store batch that makes the step durable.
    Bulk {
        action: BulkAction,
        tasks: Vec<TaskId>,
        reply: Reply<(BulkOutcome, u64)>,
    },
}

impl Core {
    pub(crate) fn handle_control(&mut self, control: Control) {
        let now = self.now();
        match control {
            Control::Worker { worker_id, action, reply } => {
                let peer = PeerId::from(worker_id.as_str());
                let done = match action {
                    WorkerAction::Pause => self.sched.handle_pause(now, &peer),
                    WorkerAction::Resume => self.sched.handle_resume(now, &peer),
                    WorkerAction::Drain => self.sched.handle_operator_drain(now, &peer),
                };
                if done.is_ok() {
                    self.publisher.touch(&peer);
                }
                let _ = reply.send(done);
            }
            Control::Retry { task, reply } => {
                let _ = reply.send(self.sched.handle_retry(now, task));
            }
            Control::Bulk { action, tasks, reply } => {
                let mut outcome = BulkOutcome::default();
                for task in tasks.into_iter().take(self.config.limits.bulk_step) {
                    let ok = match action {
                        BulkAction::Cancel => self.cancel_any(task).is_ok(),
                        BulkAction::Retry => self.sched.handle_retry(now, task).is_ok(),
                    };
                    if ok {
                        outcome.done += 1;
                    } else {
                        outcome.skipped += 1;
                    }
                }
                // What it changed goes to the store with this flush.
                self.flush();
                let _ = reply.send((outcome, self.observer.appended()));
            }
        }
    }

    /// Cancels a task whoever submitted it: as the operator.
    pub(crate) fn cancel_any(&mut self, task: TaskId) -> Result<(), CancelError> {
        let now = self.now();
        self.sched.handle_cancel(now, &Owner::Api, task)
    }
}
