//! Streamed output of running tasks, coalesced into `task_progress`.
//!
//! An executor appends deltas through its [`exec::RunContext`] from a blocking
//! thread; [`Progress`] keeps them in a buffer under a short lock and, the
//! first time the buffer fills after a flush, tells the session with one
//! non-blocking channel send. The session flushes every task with something
//! buffered at most once per `progress_interval`, so a fast generator sends
//! one message per interval however many tokens it makes, and the executor
//! never waits for the network. A task's first delta goes out at once (time
//! to first token is not held back by another task's flush), and its last
//! just before its `task_result`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use exec::ProgressSink;
use proto::TaskProgress;
use tokio::sync::mpsc;

use crate::runner::Report;

/// The progress buffer of one attempt of one task.
pub(crate) struct Progress {
    task_id: String,
    /// The cluster id from the assignment, echoed like in every report.
    id: Option<String>,
    attempt: u32,
    tx: mpsc::UnboundedSender<Report>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    text: String,
    tokens: u32,
    /// The session was told and has not flushed since.
    notified: bool,
    /// The `seq` of the next message.
    seq: u64,
}

impl Progress {
    pub fn new(
        task_id: String,
        id: Option<String>,
        attempt: u32,
        tx: mpsc::UnboundedSender<Report>,
    ) -> Progress {
        Progress { task_id, id, attempt, tx, state: Mutex::new(State::default()) }
    }

    /// Takes what accumulated as the next `task_progress`, if anything did.
    pub fn take(&self) -> Option<TaskProgress> {
        let mut state = self.lock();
        state.notified = false;
        if state.text.is_empty() && state.tokens == 0 {
            return None;
        }
        let msg = TaskProgress {
            task_id: self.task_id.clone(),
            id: self.id.clone(),
            attempt: self.attempt,
            seq: state.seq,
            text: std::mem::take(&mut state.text),
            tokens: Some(std::mem::take(&mut state.tokens)).filter(|n| *n > 0),
        };
        state.seq += 1;
        Some(msg)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is valid after any partial update (a string append and
        // counters), so a panic elsewhere while holding the lock leaves
        // nothing to repair.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProgressSink for Progress {
    fn append(&self, text: &str, tokens: u32) {
        let mut state = self.lock();
        state.text.push_str(text);
        state.tokens = state.tokens.saturating_add(tokens);
        if !state.notified {
            state.notified = true;
            // An unbounded send never blocks; it fails only once the worker
            // is gone, when nobody needs the progress any more.
            let _ = self.tx.send(Report::Progress { first: state.seq == 0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_coalesce_until_taken_and_seq_counts_messages() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let p = Progress::new("mine".into(), Some("t-1".into()), 2, tx);
        assert!(p.take().is_none());
        p.append("Hel", 1);
        p.append("lo", 2);
        // One notice for the two deltas, the task's first.
        assert!(matches!(rx.try_recv(), Ok(Report::Progress { first: true })));
        assert!(rx.try_recv().is_err());
        let first = p.take().unwrap();
        assert_eq!((first.seq, first.text.as_str(), first.tokens), (0, "Hello", Some(3)));
        assert!(p.take().is_none());
        p.append(" wé", 0);
        let notice = rx.try_recv();
        assert!(
            matches!(notice, Ok(Report::Progress { first: false })),
            "a new notice after a flush"
        );
        let second = p.take().unwrap();
        assert_eq!((second.seq, second.text.as_str(), second.tokens), (1, " wé", None));
        assert_eq!((second.task_id.as_str(), second.id.as_deref()), ("mine", Some("t-1")));
    }
}
