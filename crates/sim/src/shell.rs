//! The coordinator's store side, as `crates/coordinator/src/observe.rs` runs
//! it around the scheduler, over a real store.
//!
//! Every flush's events go through [`persist::op_for`] into one numbered
//! batch; delivery marks follow [`persist::DeliveryMarks`] (markable once the
//! batch holding the outcome committed, dropped when the delivery failed,
//! written riding with other ops or alone once `alone` wait); replies that
//! promise durability — delivered outcomes here, `task_accepted` through the
//! world's acknowledgements — wait until every batch handed over so far has
//! committed.
//!
//! The writer is asynchronous, as the coordinator's writer thread is:
//! batches stay *in flight* until the world lets it commit some of them (as
//! one transaction, like its group commit), and a crash loses whatever was
//! still in flight. Sequence numbers start again at 1 after a restart, as a
//! new writer's do.

use std::collections::VecDeque;
use std::sync::Arc;

use persist::{DeliveryMarks, IdReservations};
use proto::Json;
use sched::{Command, ConnId, Event, GamerId, Outcome, TaskSpec};
use store::{Loaded, Op, SqliteStore, Store};

/// A delivered outcome on its way to a gamer's connection.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub conn: ConnId,
    pub gamer: GamerId,
    pub task: Arc<TaskSpec<Json>>,
    pub outcome: Outcome<Json>,
}

/// A message waiting for the store: an outcome for a gamer, or an
/// assignment or a cancel for a peer that answers by the seed's id alone.
#[derive(Debug, Clone)]
pub(crate) enum Held {
    Reply(Reply),
    ToPeer(Command<Json>),
}

/// What a crash left: the ops the writer got committed, and those lost.
pub(crate) struct Crashed {
    pub committed: Vec<Op>,
    pub lost: Vec<Op>,
    /// How many batches were lost.
    pub batches: usize,
}

/// The store, the batches in flight to it, the marks and the held replies.
pub(crate) struct Shell {
    store: SqliteStore,
    /// Ops observed since the last batch was handed over.
    pending: Vec<Op>,
    /// The last batch handed to the writer.
    appended: u64,
    /// The last batch the writer committed.
    committed: u64,
    /// Handed over, not committed: `(seq, ops)`, in order.
    in_flight: VecDeque<(u64, Vec<Op>)>,
    marks: DeliveryMarks,
    /// Marks are written without other ops once this many wait.
    alone: usize,
    /// Id reservations waiting for their batch to commit.
    ids: IdReservations,
    /// Replies waiting for batch `.0` to commit.
    held: VecDeque<(u64, Held)>,
    /// Delivery marks written so far (for the coverage test).
    pub marks_written: u64,
}

impl Shell {
    pub fn new(alone: usize) -> Result<Shell, String> {
        let store = SqliteStore::in_memory().map_err(|e| format!("in-memory store: {e}"))?;
        Ok(Shell {
            store,
            pending: Vec::new(),
            appended: 0,
            committed: 0,
            in_flight: VecDeque::new(),
            marks: DeliveryMarks::default(),
            alone,
            ids: IdReservations::default(),
            held: VecDeque::new(),
            marks_written: 0,
        })
    }

    /// One scheduler event, as `Observer::observe` takes it.
    pub fn observe(&mut self, event: &Event<Json>) {
        match event {
            Event::Delivered { task } => self.marks.delivered(*task, self.appended + 1),
            Event::IdsReserved { next } => {
                self.ids.reserved(*next, self.appended + 1);
                self.pending.extend(persist::op_for(event));
            }
            Event::Undelivered { task } => {
                self.marks.undelivered(*task);
                self.pending.extend(persist::op_for(event));
            }
            other => self.pending.extend(persist::op_for(other)),
        }
    }

    /// Hands what was observed since the last call to the writer as one
    /// batch, with the marks that are due (`Observer::commit`).
    pub fn commit(&mut self) {
        let riding = !self.pending.is_empty();
        let marks = self.marks.take(self.committed, riding, self.alone);
        self.marks_written += marks.len() as u64;
        self.pending.extend(marks);
        if self.pending.is_empty() {
            return;
        }
        self.appended += 1;
        self.in_flight.push_back((self.appended, std::mem::take(&mut self.pending)));
    }

    /// Holds a message until everything handed over so far has committed
    /// (`Observer::hold`); gives it back when that is already so.
    pub fn hold(&mut self, reply: Held) -> Option<Held> {
        if self.committed >= self.appended {
            return Some(reply);
        }
        self.held.push_back((self.appended, reply));
        None
    }

    /// The held messages that are now durable, in order.
    pub fn release(&mut self) -> Vec<Held> {
        let mut out = Vec::new();
        while self.held.front().is_some_and(|(seq, _)| *seq <= self.committed) {
            out.extend(self.held.pop_front().map(|(_, r)| r));
        }
        out
    }

    /// The highest id reservation made durable since the last call
    /// (`Observer::ids_durable`).
    pub fn ids_durable(&mut self) -> Option<u64> {
        self.ids.durable(self.committed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether anything waits: batches in flight or replies held.
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty() || !self.held.is_empty()
    }

    /// The writer commits the first `n` batches in flight as one
    /// transaction; returns their ops.
    pub fn write(&mut self, n: usize) -> Result<Vec<Op>, String> {
        let n = n.min(self.in_flight.len());
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut ops = Vec::new();
        let mut last = self.committed;
        for (seq, batch) in self.in_flight.drain(..n) {
            ops.extend(batch);
            last = seq;
        }
        self.store.write(&ops).map_err(|e| format!("store write failed: {e}"))?;
        self.committed = last;
        Ok(ops)
    }

    /// The coordinator dies: the writer got the first `keep` batches in
    /// flight committed, the rest is lost with everything in memory.
    pub fn crash(&mut self, keep: usize) -> Result<Crashed, String> {
        let committed = self.write(keep)?;
        let batches = self.in_flight.len() + usize::from(!self.pending.is_empty());
        let mut lost: Vec<Op> = self.in_flight.drain(..).flat_map(|(_, ops)| ops).collect();
        lost.append(&mut self.pending);
        self.held.clear();
        self.marks = DeliveryMarks::default();
        self.ids = IdReservations::default();
        self.appended = 0;
        self.committed = 0;
        Ok(Crashed { committed, lost, batches })
    }

    /// What a starting coordinator reads back.
    pub fn load(&mut self) -> Result<Loaded, String> {
        self.store.load().map_err(|e| format!("store load failed: {e}"))
    }
}
