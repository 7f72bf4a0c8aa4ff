//! Timers, kept in one ordered set.
//!
//! When one fires, its handler checks that what it was set for still holds
//! (the same peer session, the same attempt) and does nothing otherwise. The
//! long ones — a task's queue deadline (an hour by default) and its run
//! deadline — are removed when the wait or the attempt ends, so that the set
//! holds live tasks only, not every task of the last hour. Heartbeats do not touch the set at all — the
//! liveness timer, when it fires early, re-arms itself at the peer's real
//! deadline — so the hot path of 10 000 heartbeating peers costs one field
//! write each.

use std::collections::BTreeSet;

use crate::types::{Attempt, ConnId, PeerId, TaskId, Time};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Check whether the peer session has gone silent.
    PeerLiveness(PeerId, ConnId),
    /// The task's wait in the queue ends; `waits` tells the waits apart.
    QueueDeadline(TaskId, u32),
    /// The attempt has run past its timeout (plus slack).
    RunDeadline(TaskId, Attempt),
    /// The task's back-off has passed.
    Retry(TaskId),
    /// A recovered assignment was not claimed by its peer in time.
    RecoveryGrace(TaskId, Attempt),
    /// A stopped run's slot is released even without the peer's word.
    Zombie(PeerId, TaskId, Attempt),
    /// A lost run no longer holds its task's peer id.
    LostRun(TaskId, PeerId, Attempt),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Time, Timer)>,
}

impl Timers {
    pub fn insert(&mut self, at: Time, timer: Timer) {
        self.set.insert((at, timer));
    }

    /// Removes a timer set for `at` (nothing if it is not there).
    pub fn remove(&mut self, at: Time, timer: Timer) {
        self.set.remove(&(at, timer));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// How many timers of each kind are set (for tests).
    #[cfg(test)]
    pub fn kinds(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut out = std::collections::BTreeMap::new();
        for (_, t) in &self.set {
            let kind = match t {
                Timer::PeerLiveness(..) => "liveness",
                Timer::QueueDeadline(..) => "queue",
                Timer::RunDeadline(..) => "run",
                Timer::Retry(..) => "retry",
                Timer::RecoveryGrace(..) => "recovery",
                Timer::Zombie(..) => "zombie",
                Timer::LostRun(..) => "lost",
            };
            *out.entry(kind).or_default() += 1;
        }
        out
    }

    pub fn next(&self) -> Option<Time> {
        self.set.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub fn pop_due(&mut self, now: Time) -> Option<Timer> {
        if self.next()? > now {
            return None;
        }
        self.set.pop_first().map(|(_, timer)| timer)
    }
}
