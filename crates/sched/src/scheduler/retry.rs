//! An operator's retry: a finished task that failed, was cancelled or timed
//! out runs again under the same id.
//!
//! The rule:
//! - only a task the scheduler still holds (within the result TTL) and whose
//!   outcome is `failed`, `cancelled` or `timed_out` can be retried; a
//!   completed task cannot (its result stands), nor an unfinished one;
//! - it goes back to the queue with a fresh budget of `max_attempts`
//!   (its failures start again from 0) and a fresh queue deadline; attempt
//!   numbers go on from the last one, so a late result of an old attempt is
//!   still fenced off; its history and last error stay until it ends again;
//! - a run of its last attempt that a peer has not yet confirmed stopping
//!   keeps it from being retried until then ([`RetryError::StillStopping`]);
//! - the protocol gives a gamer one outcome per task: a gamer already handed
//!   the earlier outcome is not sent the new one (the API and the dashboard
//!   show it); a gamer that had not yet received it gets the new one.

use std::sync::Arc;

use super::Scheduler;
use crate::output::Event;
use crate::task::State;
use crate::types::{Owner, TaskId, TaskState, Time};

/// Why a task cannot be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryError {
    /// The scheduler holds no such task (never accepted, or evicted).
    UnknownTask,
    /// It has not finished.
    NotFinished(TaskState),
    /// It completed: its result stands.
    Completed,
    /// A peer still runs its last (cancelled or timed-out) attempt.
    StillStopping,
}

impl<P: Clone> Scheduler<P> {
    /// Runs a finished task again under the same id (see the module docs).
    pub fn handle_retry(&mut self, now: Time, id: TaskId) -> Result<(), RetryError> {
        let now = self.tick(now);
        let task = self.tasks.get(&id).ok_or(RetryError::UnknownTask)?;
        let State::Finished { outcome, delivered, .. } = &task.state else {
            return Err(RetryError::NotFinished(task.status()));
        };
        if outcome.status() == TaskState::Completed {
            return Err(RetryError::Completed);
        }
        let given = *delivered && task.spec.owner.is_gamer();
        let owner = task.spec.owner.clone();
        if self.stopping(id) {
            return Err(RetryError::StillStopping);
        }
        let held = self.peer_ids.get(&task.spec.peer_task_id).copied();
        // Another live task took its peer id meanwhile: it runs under a new
        // one. (It may hold its own still, for a lost run: an answer of that
        // run is this task's work.)
        if held.is_some_and(|other| other != id) {
            let client = Arc::clone(&task.spec.client_task_id);
            let wire = self.claim_peer_task_id(&client, id);
            if let Some(t) = self.tasks.get_mut(&id) {
                let mut spec = TaskSpec::clone(&t.spec);
                spec.peer_task_id = wire;
                t.spec = Arc::new(spec);
            }
        } else {
            let wire = Arc::clone(&task.spec.peer_task_id);
            self.peer_ids.insert(wire, id);
        }
        self.finished.retain(|(_, t)| *t != id);
        self.evict_later.remove(&id);
        if let Owner::Gamer(g) = &owner {
            self.not_undelivered(g, id);
        }
        let Some(task) = self.tasks.get_mut(&id) else { return Err(RetryError::UnknownTask) };
        task.failures = 0;
        task.streamed = false;
        task.outcome_given |= given;
        let peer_task_id = Arc::clone(&task.spec.peer_task_id);
        let task_type = Arc::clone(&task.spec.task_type);
        let attempt = task.attempt();
        self.enqueue(now, id, false);
        let event = Event::TaskRetried { task: id, task_type, peer_task_id, attempt, at: now };
        self.events.push_back(event);
        self.place(now);
        Ok(())
    }
}

use crate::task::TaskSpec;
