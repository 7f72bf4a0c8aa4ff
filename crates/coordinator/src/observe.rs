//! What the core does with the scheduler's events: persist them (and, in the
//! API, count and publish them); and the gate that holds durable replies
//! until the store has committed what they promise.
//!
//! Each flush of the core becomes one numbered batch for the store writer:
//! queued for its thread, or — when the core has no other input waiting,
//! the writer nothing in flight, and either the flush queued no message to
//! a connection or the batch is small enough for the journal's one `write`
//! — committed on the core's thread at the end of the flush.
//! A reply that promises durability — `task_accepted`, a delivered result —
//! is held until the writer reports that batch committed. A delivery is
//! marked in the store only *after* it went out, so a crash in between
//! re-delivers rather than loses (clients dedupe by task id).

use std::collections::VecDeque;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusRecorder;
use persist::{DeliveryMarks, IdReservations};
use proto::{FromCoordinator, Json};
use sched::{ConnId, Event};
use store::{Op, SendError, Store, StoreError, Writer};
use tokio::sync::watch;
use tracing::error;

use crate::config::Limits;

/// How far the store has got.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    /// The last batch committed.
    pub seq: u64,
    /// The last batch the store's readers see (the store may apply what it
    /// committed later: `store::Journaled`).
    pub visible: u64,
    /// Set when the store failed for good: the coordinator must stop.
    pub failed: Option<Arc<str>>,
}

struct StoreSide {
    writer: Writer,
    pending: Vec<Op>,
    /// The last batch handed to the writer.
    appended: u64,
    /// Deliveries to mark once the batch they depend on is committed.
    marks: DeliveryMarks,
    /// Id reservations waiting for their batch to commit.
    ids: IdReservations,
    /// A numbered batch to commit on the core's thread once the flush has
    /// routed its commands ([`Observer::commit_deferred`]).
    deferred: Option<(u64, Vec<Op>)>,
}

impl StoreSide {
    /// Commits batch `seq`, kept for the core's thread, there when the core
    /// is `idle` — unless it `queued` a message and the batch is too large
    /// for the journal's one `write` — else on the writer thread.
    fn commit_kept(&mut self, idle: bool, queued: bool, seq: u64, ops: Vec<Op>) {
        let here = idle && (!queued || ops.len() <= store::JOURNAL_MAX_OPS);
        let sent =
            if here { self.writer.commit_here(seq, ops) } else { self.writer.send(seq, ops) };
        self.sent_numbered(sent);
    }

    /// After handing over a batch whose number was already taken: a full
    /// queue puts its ops back in front of the next batch, whose commit then
    /// covers what was held for this one (held replies wait for a number at
    /// least theirs to commit).
    fn sent_numbered(&mut self, sent: Result<(), SendError>) {
        match sent {
            Ok(()) => {}
            Err(SendError::Full(mut ops)) => {
                ops.append(&mut self.pending);
                self.pending = ops;
            }
            Err(SendError::Closed) => {
                error!("the store writer has stopped; nothing more is made durable");
            }
        }
    }
}

pub(crate) struct Observer {
    store: Option<StoreSide>,
    /// Batches handed to the store but not committed beyond which the store
    /// counts as overloaded.
    max_lag: u64,
    /// Delivery marks written without other ops once this many wait.
    lazy_marks: usize,
    durable: watch::Receiver<Durable>,
    /// Whether a batch may be committed on the core's thread when the core
    /// has nothing else waiting (the store's commits are short).
    commit_here: bool,
    /// Whether the core has nothing else waiting now.
    idle: bool,
    /// Whether the core queued a message to a connection since it last
    /// said it was idle.
    queued: bool,
    /// Keeps the channel open when there is no store.
    _durable_tx: Option<watch::Sender<Durable>>,
    held: VecDeque<(u64, ConnId, FromCoordinator)>,
}

impl Observer {
    /// An observer without a store: durable replies go out at once.
    pub fn in_memory() -> Observer {
        let (tx, rx) = watch::channel(Durable::default());
        Observer {
            store: None,
            max_lag: u64::MAX,
            lazy_marks: 0,
            durable: rx,
            commit_here: false,
            idle: false,
            queued: false,
            _durable_tx: Some(tx),
            held: VecDeque::new(),
        }
    }

    /// An observer writing to `store` on a writer thread, or the error that
    /// kept the thread from starting. Commit times are recorded in `recorder`.
    /// With `commit_here`, a batch made while the core is idle and the writer
    /// has nothing in flight is committed on the core's thread instead, once
    /// the flush has sent what need not wait for it ([`Writer::commit_here`]):
    /// for a store whose commits are short.
    pub fn with_store(
        store: Box<dyn Store>,
        recorder: Arc<PrometheusRecorder>,
        limits: &Limits,
        commit_here: bool,
    ) -> Result<Observer, StoreError> {
        let (tx, rx) = watch::channel(Durable::default());
        let queue = usize::try_from(limits.max_store_lag).unwrap_or(usize::MAX).saturating_mul(2);
        let max_ops = limits.max_ops_per_commit;
        let writer = Writer::spawn(store, queue, max_ops, move |committed| match committed {
            Ok(c) => {
                if c.ops > 0 {
                    crate::telemetry::store_committed(&recorder, c.took);
                }
                tx.send_modify(|d| {
                    d.seq = d.seq.max(c.seq);
                    d.visible = d.visible.max(c.visible);
                });
            }
            Err(e) => {
                error!("the store failed: {e}");
                tx.send_modify(|d| d.failed = Some(Arc::from(e.to_string())));
            }
        })?;
        let side = StoreSide {
            writer,
            pending: Vec::new(),
            appended: 0,
            marks: DeliveryMarks::default(),
            ids: IdReservations::default(),
            deferred: None,
        };
        Ok(Observer {
            store: Some(side),
            max_lag: limits.max_store_lag,
            lazy_marks: limits.lazy_delivery_marks,
            durable: rx,
            commit_here,
            idle: false,
            queued: false,
            _durable_tx: None,
            held: VecDeque::new(),
        })
    }

    /// Handles one scheduler event.
    pub fn observe(&mut self, event: &Event<Json>) {
        let Some(side) = self.store.as_mut() else { return };
        match event {
            Event::Delivered { task } => side.marks.delivered(*task, side.appended + 1),
            Event::IdsReserved { next } => {
                side.ids.reserved(*next, side.appended + 1);
                side.pending.extend(persist::op_for(event));
            }
            Event::Undelivered { task } => {
                side.marks.undelivered(*task);
                side.pending.extend(persist::op_for(event));
            }
            other => side.pending.extend(persist::op_for(other)),
        }
    }

    /// Adds an op that is not a scheduler event (an approval) to the next batch.
    pub fn record(&mut self, op: Op) {
        if let Some(side) = self.store.as_mut() {
            side.pending.push(op);
        }
    }

    /// Hands what was observed since the last call to the writer, as one batch.
    ///
    /// Delivery marks ride along with other ops rather than cost a commit of
    /// their own: a mark that is lost in a crash only makes the outcome go
    /// out again on reconnect, which clients dedupe. Alone, they are written
    /// once `lazy_marks` have piled up.
    pub fn commit(&mut self) {
        let committed = self.durable.borrow().seq;
        let here = self.commit_here && self.idle;
        let queued = self.queued;
        let Some(side) = self.store.as_mut() else { return };
        let riding = !side.pending.is_empty();
        side.pending.extend(side.marks.take(committed, riding, self.lazy_marks));
        if side.pending.is_empty() {
            // A batch kept for the core's thread stays for commit_deferred.
            return;
        }
        // An earlier batch still waiting for the core goes first, in order.
        if let Some((seq, ops)) = side.deferred.take() {
            side.commit_kept(here, queued, seq, ops);
        }
        let ops = std::mem::take(&mut side.pending);
        if self.commit_here && self.idle && side.writer.idle() {
            side.appended += 1;
            side.deferred = Some((side.appended, ops));
            return;
        }
        match side.writer.send(side.appended + 1, ops) {
            Ok(()) => side.appended += 1,
            // Held back and sent with the next batch: what is held waits.
            Err(SendError::Full(ops)) => side.pending = ops,
            Err(SendError::Closed) => {
                error!("the store writer has stopped; nothing more is made durable");
            }
        }
    }

    /// Commits the batch [`Observer::commit`] kept for the core's thread, if
    /// any — on the writer thread instead if the core is no longer idle, or
    /// queued a message and the batch is too large for the journal — and the
    /// replies it holds can be released.
    pub fn commit_deferred(&mut self) {
        let Some(side) = self.store.as_mut() else { return };
        let Some((seq, ops)) = side.deferred.take() else { return };
        side.commit_kept(self.idle, self.queued, seq, ops);
    }

    /// Tells whether the core has nothing else to do, so that a batch may be
    /// committed on its thread (see [`Observer::with_store`]).
    pub fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
        self.queued = false;
    }

    /// Tells that the core queued a message to a connection. That
    /// connection's task waits for this thread (tokio runs a task woken from
    /// a task next, on the same thread), so only a batch the journal takes
    /// (one `write`) is still committed here; a larger one, an SQLite
    /// transaction, would hold the message back.
    pub fn queued_message(&mut self) {
        self.queued = true;
    }

    /// The highest id reservation the store made durable since the last
    /// call, if any (for `Scheduler::handle_ids_durable`).
    pub fn ids_durable(&mut self) -> Option<u64> {
        let committed = self.durable.borrow().seq;
        self.store.as_mut()?.ids.durable(committed)
    }

    /// The last batch handed to the store (0 without one): a reply that
    /// depends on what was observed so far may go once this is committed.
    pub fn appended(&self) -> u64 {
        self.store.as_ref().map_or(0, |s| s.appended)
    }

    /// A receiver that changes when the store commits (or fails).
    pub fn durable_watch(&self) -> watch::Receiver<Durable> {
        self.durable.clone()
    }

    /// The store's fatal error, if it failed.
    pub fn failed(&self) -> Option<Arc<str>> {
        self.durable.borrow().failed.clone()
    }

    /// Batches handed to the writer but not yet committed.
    pub fn store_lag(&self) -> u64 {
        let appended = self.store.as_ref().map_or(0, |s| s.appended);
        appended.saturating_sub(self.durable.borrow().seq)
    }

    /// Whether the store is too far behind to accept more work.
    pub fn store_overloaded(&self) -> bool {
        self.store_lag() > self.max_lag
    }

    /// Holds a durable reply until the store has committed everything handed
    /// to it so far; it leaves through [`Observer::release`], behind every
    /// reply held before it. (Handing it back at once when the store has
    /// caught up would let it overtake an earlier reply whose commit was
    /// seen but not yet released: a `task_result` before its
    /// `task_accepted`.)
    pub fn hold(&mut self, conn: ConnId, msg: FromCoordinator) {
        let appended = self.store.as_ref().map_or(0, |s| s.appended);
        self.held.push_back((appended, conn, msg));
    }

    /// The held replies that are now durable, in order.
    pub fn release(&mut self) -> Vec<(ConnId, FromCoordinator)> {
        let committed = self.durable.borrow().seq;
        let mut out = Vec::new();
        while self.held.front().is_some_and(|(seq, _, _)| *seq <= committed) {
            if let Some((_, conn, msg)) = self.held.pop_front() {
                out.push((conn, msg));
            }
        }
        out
    }

    /// Writes everything still pending and waits for the writer (at shutdown).
    pub fn close_store(&mut self) {
        self.commit();
        self.commit_deferred();
        if let Some(mut side) = self.store.take() {
            // Deliveries that went out are marked even if their batch had
            // not reported back yet: the writer commits in order.
            let mut last = std::mem::take(&mut side.pending);
            last.extend(side.marks.take_all());
            if !last.is_empty() {
                side.appended += 1;
                let _ = side.writer.send_waiting(side.appended, last);
            }
            side.writer.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proto::{ErrorCode, ErrorMsg};

    use super::*;

    fn reply(text: &str) -> FromCoordinator {
        FromCoordinator::Error(ErrorMsg::new(ErrorCode::MALFORMED_JSON, text))
    }

    fn reason(msg: &FromCoordinator) -> &str {
        match msg {
            FromCoordinator::Error(e) => &e.reason,
            _ => "",
        }
    }

    /// An observer on an SQLite store in `dir`, behind its journal (as the
    /// coordinator opens it).
    fn on_sqlite(dir: &std::path::Path, commit_here: bool) -> Observer {
        let db = store::Journaled::open(dir, store::Sync::Normal).unwrap();
        let recorder =
            Arc::new(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
        Observer::with_store(Box::new(db), recorder, &Limits::default(), commit_here).unwrap()
    }

    #[test]
    fn a_reply_never_overtakes_one_held_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut obs = on_sqlite(dir.path(), false);
        obs.record(Op::IdsUsed { next_task_id: 10 });
        obs.commit();
        obs.hold(ConnId(1), reply("accepted"));
        // The batch commits; the core has not yet released what it held.
        let deadline = Instant::now() + Duration::from_secs(30);
        while obs.durable.borrow().seq < 1 {
            assert!(Instant::now() < deadline, "the batch never committed");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A reply that needs nothing more committed still goes behind it.
        obs.hold(ConnId(1), reply("result"));
        let out: Vec<String> = obs.release().iter().map(|(_, m)| reason(m).to_owned()).collect();
        assert_eq!(out, ["accepted", "result"]);
        obs.close_store();
    }

    #[test]
    fn an_idle_core_commits_on_its_own_thread_and_a_busy_one_hands_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut obs = on_sqlite(dir.path(), true);
        obs.set_idle(true);
        obs.record(Op::IdsUsed { next_task_id: 10 });
        obs.commit();
        obs.hold(ConnId(1), reply("accepted"));
        assert!(obs.release().is_empty(), "held until its batch is written");
        // Committed before commit_deferred() returned: the reply goes at once.
        obs.commit_deferred();
        let out: Vec<String> = obs.release().iter().map(|(_, m)| reason(m).to_owned()).collect();
        assert_eq!(out, ["accepted"]);
        // With inputs waiting, the batch goes to the writer thread.
        obs.set_idle(false);
        obs.record(Op::IdsUsed { next_task_id: 20 });
        obs.commit();
        obs.hold(ConnId(1), reply("result"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while out.is_empty() {
            assert!(Instant::now() < deadline, "the batch never committed");
            out = obs.release();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(reason(&out[0].1), "result");
        obs.close_store();
    }

    #[test]
    fn a_core_that_queued_a_message_still_commits_a_small_batch_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut obs = on_sqlite(dir.path(), true);
        // A submission: its events are flushed, its acknowledgement held,
        // the events flushed again (nothing new), then the commands routed
        // — an assignment queued to a peer that echoes ids.
        obs.set_idle(true);
        obs.record(Op::IdsUsed { next_task_id: 10 });
        obs.commit();
        obs.hold(ConnId(1), reply("accepted"));
        obs.commit();
        obs.queued_message();
        obs.commit_deferred();
        // One `write` on this thread: committed before it returned.
        let out: Vec<String> = obs.release().iter().map(|(_, m)| reason(m).to_owned()).collect();
        assert_eq!(out, ["accepted"]);
        // A batch too large for the journal goes to the writer thread, and
        // is committed there.
        obs.set_idle(true);
        for next_task_id in 0..=store::JOURNAL_MAX_OPS as u64 {
            obs.record(Op::IdsUsed { next_task_id });
        }
        obs.commit();
        obs.hold(ConnId(1), reply("result"));
        obs.queued_message();
        obs.commit_deferred();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while out.is_empty() {
            assert!(Instant::now() < deadline, "the batch never committed");
            out = obs.release();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(reason(&out[0].1), "result");
        obs.close_store();
    }
}
