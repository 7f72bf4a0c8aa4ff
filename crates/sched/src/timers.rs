//! Timers, kept in one ordered set.
//!
//! Timers are never cancelled: when one fires, its handler checks that what
//! it was set for still holds (the same peer session, the same attempt) and
//! does nothing otherwise. Heartbeats do not touch the set at all — the
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
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Time, Timer)>,
}

impl Timers {
    pub fn insert(&mut self, at: Time, timer: Timer) {
        self.set.insert((at, timer));
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
