//! Task ids that never repeat across restarts.
//!
//! An assignment goes out before the batch holding its `TaskSubmitted` has
//! committed (waiting for it would cost a commit of latency per task). A
//! crash may lose that batch while a peer still runs the task; had the
//! restarted coordinator numbered from what the store holds, the next task
//! would get the same id and the old run's answer would be taken for it.
//!
//! So ids are reserved in blocks, ahead of use: whenever fewer than half a
//! block is left, [`Event::IdsReserved`] asks the store to record that ids
//! below `next` are taken (`Op::IdsUsed`), and a task is assigned — its id
//! leaves the coordinator — only once a reservation covering it has
//! committed ([`Scheduler::handle_ids_durable`]). A restarted coordinator
//! numbers from the stored reservation, past every id the old one could have
//! handed out. In the steady state the reservation committed long before
//! its ids are used, so no assignment waits; the first after a start waits
//! for one commit, as does one when the store lags half a block behind.
//!
//! That keeps cluster ids unambiguous, not the seed's ids: a peer that
//! answers by the submitter's `task_id` alone, which a newer task may
//! reuse, is therefore sent its assignments by the coordinator only once
//! they are durable (`Core::send_to_peer`, `PeerCaps::echoes_ids`).
//!
//! Off (every id may leave at once) until [`Scheduler::reserve_ids`]: a
//! scheduler without a store has nothing to reserve with.

use super::Scheduler;
use crate::output::Event;
use crate::types::{TaskId, Time};

/// The reservation's state.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reservation {
    /// Ids per reservation; 0 when reservations are off.
    block: u64,
    /// Ids below this are asked for.
    asked: u64,
    /// Ids below this are reserved durably: they may leave.
    durable: u64,
}

impl<P: Clone> Scheduler<P> {
    /// Turns reservations on, `block` ids at a time (at least 2); ids below
    /// `durable` are reserved already (the store's `next_task_id` after a
    /// restart). Call after [`Scheduler::set_next_task_id`].
    pub fn reserve_ids(&mut self, block: u64, durable: u64) {
        self.ids = Reservation { block: block.max(2), asked: durable, durable };
    }

    /// The store committed a reservation of the ids below `next`: tasks
    /// waiting for it may be assigned.
    pub fn handle_ids_durable(&mut self, now: Time, next: u64) {
        if next <= self.ids.durable {
            return;
        }
        let now = self.tick(now);
        self.ids.durable = next;
        self.place(now);
    }

    /// The next task id, asking for the next block when fewer than half a
    /// block is left.
    pub(crate) fn take_task_id(&mut self) -> TaskId {
        let id = TaskId(self.next_task);
        self.next_task += 1;
        let block = self.ids.block;
        if block > 0 && self.next_task + block / 2 > self.ids.asked {
            self.ids.asked = self.next_task + block;
            self.events.push_back(Event::IdsReserved { next: self.ids.asked });
        }
        id
    }

    /// Whether task `id` may be shown to a peer: a committed reservation
    /// covers it (always, with reservations off).
    pub(crate) fn id_may_leave(&self, id: TaskId) -> bool {
        self.ids.block == 0 || id.0 < self.ids.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn reserved(s: &mut Scheduler<()>) -> Vec<u64> {
        std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                Event::IdsReserved { next } => Some(next),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn blocks_are_asked_for_half_a_block_ahead() {
        let mut s: Scheduler<()> = Scheduler::new(Config::default(), Time::ZERO);
        s.set_next_task_id(9);
        s.reserve_ids(4, 10);
        assert!(!s.id_may_leave(TaskId(10)), "not reserved yet");
        assert_eq!(s.take_task_id(), TaskId(10));
        assert_eq!(reserved(&mut s), [15], "asked when the first id is taken");
        assert_eq!(s.take_task_id(), TaskId(11));
        assert_eq!(reserved(&mut s), Vec::<u64>::new());
        s.handle_ids_durable(Time::ZERO, 15);
        assert!(s.id_may_leave(TaskId(14)) && !s.id_may_leave(TaskId(15)));
        assert_eq!((s.take_task_id(), s.take_task_id()), (TaskId(12), TaskId(13)));
        assert_eq!(reserved(&mut s), [18], "at 14 left, fewer than half a block");
    }

    #[test]
    fn off_without_a_store() {
        let mut s: Scheduler<()> = Scheduler::new(Config::default(), Time::ZERO);
        assert_eq!(s.take_task_id(), TaskId(1));
        assert!(s.id_may_leave(TaskId(1_000_000)));
        assert_eq!(reserved(&mut s), Vec::<u64>::new());
    }
}
