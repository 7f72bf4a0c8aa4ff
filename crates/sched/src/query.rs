//! Read-only views of the scheduler, for the REST API, metrics and tests.

use std::sync::Arc;

use crate::peer::Peer;
use crate::scheduler::{Counters, Scheduler};
use crate::task::{State, Task};
use crate::types::{GamerId, Owner, PeerId, TaskId};

/// A snapshot of the cluster's size and load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub peers: usize,
    pub peers_draining: usize,
    /// Paused by an operator (and not draining).
    pub peers_paused: usize,
    pub slots_total: u64,
    pub slots_used: u64,
    /// Waiting for a peer, back-offs included.
    pub queued: usize,
    pub assigned: usize,
    pub running: usize,
    /// Finished tasks still kept.
    pub retained: usize,
    pub gamers: usize,
    pub counters: Counters,
}

impl<P: Clone> Scheduler<P> {
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            peers: self.peers.len(),
            queued: self.queue.len() + self.backing_off,
            retained: self.finished.len(),
            gamers: self.gamers.len(),
            counters: self.counters(),
            ..Stats::default()
        };
        for peer in self.peers.values() {
            stats.peers_draining += usize::from(peer.draining());
            stats.peers_paused += usize::from(peer.paused && !peer.draining());
            stats.slots_total += u64::from(peer.caps.slots);
            stats.slots_used += u64::from(peer.used());
        }
        let held = self.peers.values().flat_map(|p| p.tasks.keys());
        let orphaned = self.orphans.values().flatten();
        for id in held.chain(orphaned) {
            match self.tasks.get(id).map(|t| &t.state) {
                Some(State::Assigned(h)) if h.started.is_some() => stats.running += 1,
                Some(State::Assigned(_)) => stats.assigned += 1,
                _ => {}
            }
        }
        stats
    }

    pub fn task(&self, id: TaskId) -> Option<&Task<P>> {
        self.tasks.get(&id)
    }

    /// How many tasks are held in memory (live and retained).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// All tasks held in memory (live and retained), by id.
    pub fn tasks(&self) -> impl DoubleEndedIterator<Item = &Task<P>> {
        self.tasks.values()
    }

    /// The task a submitter knows by `client_task_id`.
    pub fn lookup(&self, owner: &Owner, client_task_id: &str) -> Option<TaskId> {
        self.by_client.get(&(owner.clone(), Arc::from(client_task_id))).copied()
    }

    pub fn peer(&self, id: &str) -> Option<&Peer> {
        self.peers.get(id)
    }

    /// Connected peers, by id.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn gamer_connected(&self, gamer: &GamerId) -> bool {
        self.gamers.contains_key(gamer)
    }

    /// How many queued tasks go before this one (None unless it is queued).
    pub fn queue_position(&self, id: TaskId) -> Option<usize> {
        match &self.tasks.get(&id)?.state {
            State::Queued { pos } => Some(self.queue.position(pos)),
            _ => None,
        }
    }

    /// Why a waiting task cannot start, when that is not just a busy cluster:
    /// no connected peer can run it, or it is backing off after failures.
    pub fn waiting_reason(&self, id: TaskId) -> Option<String> {
        let task = self.tasks.get(&id)?;
        match &task.state {
            State::Backoff { until } => Some(format!(
                "retrying after {} failed attempt(s), not before {until}",
                task.failures
            )),
            State::Verifying { .. } => {
                let v = task.verification.as_deref()?;
                v.live().find_map(|replica| self.waiting_reason(replica))
            }
            State::Queued { .. } => {
                let able: Vec<_> = self
                    .peers
                    .values()
                    .filter(|p| !p.draining() && !p.paused && p.caps.can_run(&task.class))
                    .collect();
                if !able.is_empty() && able.iter().all(|p| p.quarantined) {
                    return Some(format!(
                        "no capable peer: needs {}; the {} that could run it are quarantined",
                        describe(task),
                        able.len()
                    ));
                }
                if !able.is_empty() {
                    return self.apart_reason(id);
                }
                if self.peers.is_empty() {
                    return Some(format!(
                        "no capable peer: no peer is connected (needs {})",
                        describe(task)
                    ));
                }
                Some(format!(
                    "no capable peer: needs {}; {} peer(s) connected, none can run it",
                    describe(task),
                    self.peers.len()
                ))
            }
            _ => None,
        }
    }

    /// Peers a task could run on (connected, capable, not draining or paused).
    pub fn capable_peers(&self, id: TaskId) -> Vec<PeerId> {
        let Some(task) = self.tasks.get(&id) else { return Vec::new() };
        self.peers
            .values()
            .filter(|p| p.takes_work() && p.caps.can_run(&task.class))
            .map(|p| p.id.clone())
            .collect()
    }
}

fn describe<P>(task: &Task<P>) -> String {
    let req = &task.spec.requirements;
    let mut need = format!("task type `{}`", task.spec.task_type);
    if let Some(model) = &req.model {
        need.push_str(&format!(", model `{model}`"));
    }
    match req.min_vram_mb {
        Some(mb) => need.push_str(&format!(", a GPU with at least {mb} MiB")),
        None if req.gpu => need.push_str(", a GPU"),
        None => {}
    }
    need
}
