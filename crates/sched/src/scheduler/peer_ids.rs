//! The ids peers see.
//!
//! The seed shows one `task_id` from the gamer's `task_request` through the
//! peer's `task_assignment` to the `task_result` back, so a peer sees the
//! submitter's own id whenever no other live task holds it. Two gamers may
//! both name a task `123`; the second one submitted while the first is live
//! gets its cluster id (`t-42`) on the wire instead. An id stays held until
//! its task has finished *and* no peer still runs it (a cancelled run that
//! has not confirmed stopping), so a late result can never be taken for a
//! newer task that reused the id.

use std::sync::Arc;

use super::Scheduler;
use crate::types::TaskId;

impl<P: Clone> Scheduler<P> {
    /// Picks and holds the id peers will see for the new task `id`.
    pub(crate) fn claim_peer_task_id(&mut self, client: &Arc<str>, id: TaskId) -> Arc<str> {
        let mut candidate = Arc::clone(client);
        let mut n = 1;
        while self.peer_ids.contains_key(&candidate) {
            candidate = match n {
                1 => Arc::from(id.to_string()),
                n => Arc::from(format!("{id}.{n}")),
            };
            n += 1;
        }
        self.peer_ids.insert(Arc::clone(&candidate), id);
        candidate
    }

    /// The task a peer means by `wire`: the live task holding that id, or,
    /// for a cluster id (`t-42`), that task.
    pub fn resolve_peer_task(&self, wire: &str) -> Option<TaskId> {
        self.peer_ids.get(wire).copied().or_else(|| TaskId::parse_cluster(wire))
    }

    /// Frees a finished task's peer id once no peer still runs it. The one
    /// peer that may is its last attempt's, which keeps a cancelled run as a
    /// zombie until it confirms.
    pub(crate) fn release_peer_task_id(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else {
            if let Some(wire) = self.evicted_peer_ids.remove(&id)
                && self.peer_ids.get(&wire) == Some(&id)
            {
                self.peer_ids.remove(&wire);
            }
            return;
        };
        if !task.status().is_terminal() || self.still_runs(id) {
            return;
        }
        if self.peer_ids.get(&task.spec.peer_task_id) == Some(&id) {
            self.peer_ids.remove(&task.spec.peer_task_id);
        }
    }

    /// A task leaves the scheduler's memory; a peer that still runs it keeps
    /// its id held until it confirms stopping.
    pub(crate) fn evict_peer_task_id(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else { return };
        let wire = Arc::clone(&task.spec.peer_task_id);
        if self.peer_ids.get(&wire) != Some(&id) {
            return;
        }
        if self.still_runs(id) {
            self.evicted_peer_ids.insert(id, wire);
        } else {
            self.peer_ids.remove(&wire);
        }
    }

    /// Whether a peer still runs a cancelled or timed-out attempt of `id`.
    fn still_runs(&self, id: TaskId) -> bool {
        self.tasks
            .get(&id)
            .and_then(|t| t.history.last())
            .and_then(|a| self.peers.get(&a.peer))
            .is_some_and(|p| p.zombies.contains_key(&id))
    }
}
