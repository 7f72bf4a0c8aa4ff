//! Streamed output: a peer's `task_progress`, routed to whoever follows the
//! task.
//!
//! The scheduler decides whether a report is forwarded at all
//! ([`sched::Scheduler::handle_progress`]: the task asked to stream, the
//! report is its current attempt's); this module only delivers it — to the
//! submitting gamer's connection, and to the HTTP requests following the
//! task (REST server-sent events, the OpenAI API). Every delivery is a
//! `try_send`: a connection or a listener whose queue is full loses that
//! delta (counted in `telemetry.rs`), never slows the core, and is not
//! dropped for it. The task's final result is the durable, complete answer;
//! a gap in `seq` tells a reader that deltas were lost.

use std::collections::HashMap;

use proto::{FromCoordinator, TaskProgress, TaskProgressOut};
use sched::{Attempt, ConnId, PeerError, PeerId, Progress, TaskId};
use tokio::sync::mpsc;

use super::Core;
use super::requests::{Awaited, Reply};
use crate::conn::Outbound;

/// One delta of a streamed task's output, for an HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta {
    pub attempt: u32,
    pub seq: u64,
    pub text: String,
    pub tokens: Option<u32>,
}

/// What an HTTP request that follows a task is given: the task's deltas
/// (bounded; a listener that lags loses some) and, once, its outcome.
pub(crate) struct Watch {
    pub progress: mpsc::Sender<Delta>,
    pub outcome: Reply<Awaited>,
}

/// The HTTP listeners of each task, until it finishes.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    by_task: HashMap<TaskId, Vec<mpsc::Sender<Delta>>>,
    count: usize,
}

impl Listeners {
    /// Adds a listener, unless `max` already listen (after dropping those
    /// whose requests went away); false when refused.
    fn add(&mut self, task: TaskId, tx: mpsc::Sender<Delta>, max: usize) -> bool {
        if self.count >= max {
            self.prune();
        }
        if self.count >= max {
            return false;
        }
        self.by_task.entry(task).or_default().push(tx);
        self.count += 1;
        true
    }

    fn prune(&mut self) {
        self.by_task.retain(|_, list| {
            list.retain(|tx| !tx.is_closed());
            !list.is_empty()
        });
        self.count = self.by_task.values().map(Vec::len).sum();
    }

    /// Hands `delta` to every listener of `task`; returns how many took it
    /// and how many were too far behind to.
    fn forward(&mut self, task: TaskId, delta: &Delta) -> (u64, u64) {
        let Some(list) = self.by_task.get_mut(&task) else { return (0, 0) };
        let (mut sent, mut dropped) = (0, 0);
        list.retain(|tx| match tx.try_send(delta.clone()) {
            Ok(()) => {
                sent += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped += 1;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if list.is_empty() {
            self.by_task.remove(&task);
        }
        self.count = self.by_task.values().map(Vec::len).sum();
        (sent, dropped)
    }

    /// The task finished: its listeners get nothing more (their outcome
    /// comes through the waiters).
    pub fn finished(&mut self, task: TaskId) {
        if let Some(list) = self.by_task.remove(&task) {
            self.count -= list.len();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
    }
}

/// A peer's `task_progress`. A report for a task the coordinator no longer
/// holds is dropped quietly (it is best-effort; the result that follows
/// gets the error).
pub(super) fn handle(
    core: &mut Core,
    conn: ConnId,
    peer: &PeerId,
    m: TaskProgress,
) -> Result<(), PeerError> {
    let Some(task) = super::messages::peer_task(core, m.id.as_deref(), &m.task_id) else {
        return Ok(());
    };
    let now = core.now();
    let progress = match core.sched.handle_progress(now, peer, conn, task, Some(Attempt(m.attempt)))
    {
        Ok(p) => p,
        Err(PeerError::UnknownTask(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Progress::Forward { task: spec, attempt, gamer_conn } = progress else { return Ok(()) };
    let recorder = core.telemetry.recorder();
    let mut seen = false;
    if let Some(gamer) = gamer_conn {
        let out = TaskProgressOut {
            task_id: spec.client_task_id.to_string(),
            id: spec.id.to_string(),
            attempt: attempt.0,
            seq: m.seq,
            text: m.text.clone(),
            tokens: m.tokens,
        };
        let sent = core.send_lossy(gamer, FromCoordinator::TaskProgress(out));
        crate::telemetry::progress(&recorder, "gamer", u64::from(sent), u64::from(!sent));
        seen |= sent;
    }
    let delta = Delta { attempt: attempt.0, seq: m.seq, text: m.text, tokens: m.tokens };
    let (sent, dropped) = core.listeners.forward(spec.id, &delta);
    crate::telemetry::progress(&recorder, "http", sent, dropped);
    if seen || sent > 0 {
        core.sched.handle_progress_delivered(spec.id, attempt);
    }
    Ok(())
}

/// Registers `watch` for `task`: its deltas from now on, and its outcome
/// (at once when it has one). Registering and reading the task's state are
/// one step on the core, so nothing between them is missed.
pub(super) fn follow(core: &mut Core, task: TaskId, watch: Watch) {
    let Watch { progress, outcome } = watch;
    let live = core.sched.task(task).is_some_and(|t| t.outcome().is_none());
    let max = core.config.limits.max_result_waiters;
    if live && !core.listeners.add(task, progress, max) {
        let _ = outcome.send(Awaited::Busy);
        return;
    }
    core.await_outcome(task, outcome);
}

impl Core {
    /// Queues a best-effort message to a connection: when its queue is full
    /// the message is lost, not the connection. True when queued.
    fn send_lossy(&mut self, conn: ConnId, msg: FromCoordinator) -> bool {
        let Some(c) = self.conns.get(&conn) else { return false };
        c.tx.try_send(Outbound::Msg(Box::new(msg))).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn delta(seq: u64) -> Delta {
        Delta { attempt: 1, seq, text: format!("d{seq}"), tokens: Some(1) }
    }

    #[test]
    fn a_listener_that_lags_loses_deltas_and_stays() {
        let mut l = Listeners::default();
        let task = TaskId(1);
        let (tx, mut rx) = mpsc::channel(2);
        assert!(l.add(task, tx, 10));
        assert_eq!(l.forward(task, &delta(0)), (1, 0));
        assert_eq!(l.forward(task, &delta(1)), (1, 0));
        assert_eq!(l.forward(task, &delta(2)), (0, 1), "full: dropped");
        assert_eq!(rx.try_recv().unwrap().seq, 0);
        assert_eq!(l.forward(task, &delta(3)), (1, 0), "still listening");
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        assert_eq!(rx.try_recv().unwrap().seq, 3, "the gap in seq shows the loss");
        assert_eq!(l.len(), 1);
    }

    #[tokio::test]
    async fn a_gamer_whose_queue_is_full_loses_the_delta_not_the_connection() {
        let config = Arc::new(crate::config::Config::default());
        let observer = crate::observe::Observer::in_memory();
        let telemetry = crate::telemetry::Telemetry::new(64);
        let mut core = Core::new(config, observer, telemetry, crate::clock::Clock::start());
        let conn = ConnId(7);
        let (tx, mut rx) = mpsc::channel(1);
        let remote = "127.0.0.1:1".parse().unwrap();
        core.handle(super::super::Input::Connected { conn, tx, remote });
        let progress = |seq| {
            FromCoordinator::TaskProgress(TaskProgressOut {
                task_id: "g1".into(),
                id: "t-1".into(),
                attempt: 1,
                seq,
                text: "tok".into(),
                tokens: Some(1),
            })
        };
        assert!(core.send_lossy(conn, progress(0)));
        assert!(!core.send_lossy(conn, progress(1)), "its queue is full: the delta is lost");
        assert!(core.conns.contains_key(&conn), "and the gamer stays connected");
        rx.try_recv().unwrap();
        assert!(core.send_lossy(conn, progress(2)), "once it reads, deltas flow again");
    }

    #[test]
    fn listeners_that_went_away_are_forgotten_and_the_bound_holds() {
        let mut l = Listeners::default();
        let (tx1, rx1) = mpsc::channel(4);
        let (tx2, _rx2) = mpsc::channel(4);
        let (tx3, _rx3) = mpsc::channel(4);
        assert!(l.add(TaskId(1), tx1, 2));
        assert!(l.add(TaskId(2), tx2, 2));
        assert!(!l.add(TaskId(3), tx3.clone(), 2), "at the bound");
        drop(rx1);
        assert!(l.add(TaskId(3), tx3, 2), "the closed one was pruned");
        assert_eq!(l.forward(TaskId(1), &delta(0)), (0, 0));
        l.finished(TaskId(2));
        assert_eq!(l.len(), 1);
        assert_eq!(l.forward(TaskId(2), &delta(0)), (0, 0));
    }
}
