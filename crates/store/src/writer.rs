//! The writer thread: group commit.
//!
//! Batches arrive numbered; the thread takes the first one waiting, then
//! everything else that is already there (up to a bound), writes them all in
//! one transaction, and reports the highest number committed. While a commit
//! waits for the disk, the next batches pile up and share the next commit: one
//! fsync acknowledges many tasks, which is what keeps throughput high with
//! `Sync::Full`.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Op, Store, StoreError};

/// How often a failing write is tried before the writer gives up.
const ATTEMPTS: u32 = 3;

struct Batch {
    seq: u64,
    ops: Vec<Op>,
}

/// The writer was stopped (after a fatal store error, or being closed).
#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterClosed;

/// A store running on its own thread.
#[derive(Debug)]
pub struct Writer {
    tx: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
}

/// One group commit that reached the disk.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The highest batch number it holds.
    pub seq: u64,
    /// Ops written.
    pub ops: usize,
    /// Time the transaction took.
    pub took: std::time::Duration,
}

impl Writer {
    /// Starts the writer. `on_commit` is called on the writer thread with the
    /// highest batch number committed, or with the error that stopped it.
    pub fn spawn(
        mut store: Box<dyn Store>,
        max_ops_per_commit: usize,
        on_commit: impl Fn(Result<Committed, StoreError>) + Send + 'static,
    ) -> Writer {
        let (tx, rx) = mpsc::channel::<Batch>();
        let thread = std::thread::Builder::new().name("store-writer".into()).spawn(move || {
            let mut ops: Vec<Op> = Vec::new();
            while let Ok(first) = rx.recv() {
                let mut seq = first.seq;
                ops.extend(first.ops);
                while ops.len() < max_ops_per_commit {
                    match rx.try_recv() {
                        Ok(next) => {
                            seq = next.seq;
                            ops.extend(next.ops);
                        }
                        Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                match write_with_retries(store.as_mut(), &ops) {
                    Ok(()) => {
                        on_commit(Ok(Committed { seq, ops: ops.len(), took: started.elapsed() }))
                    }
                    Err(e) => {
                        on_commit(Err(e));
                        return;
                    }
                }
                ops.clear();
            }
        });
        match thread {
            Ok(thread) => Writer { tx: Some(tx), thread: Some(thread) },
            // Without a thread nothing is ever committed: report it as closed.
            Err(_) => Writer { tx: None, thread: None },
        }
    }

    /// Queues batch `seq` (numbers must increase).
    pub fn send(&self, seq: u64, ops: Vec<Op>) -> Result<(), WriterClosed> {
        let tx = self.tx.as_ref().ok_or(WriterClosed)?;
        tx.send(Batch { seq, ops }).map_err(|_| WriterClosed)
    }

    /// Commits what is queued and stops the thread.
    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn write_with_retries(store: &mut dyn Store, ops: &[Op]) -> Result<(), StoreError> {
    let mut attempt = 1;
    loop {
        match store.write(ops) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(
                    "store write failed (attempt {attempt} of {ATTEMPTS}), retrying: {e}"
                );
                std::thread::sleep(Duration::from_millis(50 << attempt));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{Loaded, NewTask};

    /// A store that records batch sizes and can be made to fail.
    #[derive(Clone, Default)]
    struct Probe {
        commits: Arc<Mutex<Vec<usize>>>,
        fail: Arc<Mutex<bool>>,
        slow: Duration,
    }

    impl Store for Probe {
        fn load(&mut self) -> Result<Loaded, StoreError> {
            Ok(Loaded::default())
        }

        fn write(&mut self, ops: &[Op]) -> Result<(), StoreError> {
            std::thread::sleep(self.slow);
            if *self.fail.lock().unwrap() {
                return Err(StoreError::Io(std::io::Error::other("disk on fire")));
            }
            self.commits.lock().unwrap().push(ops.len());
            Ok(())
        }
    }

    fn op(id: u64) -> Op {
        Op::Delivered { id, delivered: true }
    }

    #[test]
    fn batches_arriving_during_a_commit_share_the_next_one() {
        let probe = Probe { slow: Duration::from_millis(30), ..Probe::default() };
        let (tx, rx) = mpsc::channel();
        let writer = Writer::spawn(Box::new(probe.clone()), 10_000, move |r| {
            let _ = tx.send(r.unwrap().seq);
        });
        for seq in 1..=50 {
            writer.send(seq, vec![op(seq)]).unwrap();
        }
        writer.close();
        let committed: Vec<u64> = rx.iter().collect();
        assert_eq!(committed.last(), Some(&50));
        let commits = probe.commits.lock().unwrap().clone();
        assert_eq!(commits.iter().sum::<usize>(), 50);
        assert!(commits.len() < 50, "no grouping: {commits:?}");
    }

    #[test]
    fn a_persistent_failure_stops_the_writer_and_is_reported() {
        let probe = Probe::default();
        *probe.fail.lock().unwrap() = true;
        let (tx, rx) = mpsc::channel();
        let writer = Writer::spawn(Box::new(probe), 100, move |r| {
            let _ = tx.send(r.is_err());
        });
        writer.send(1, vec![op(1)]).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        // The thread has stopped: later sends fail.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.send(2, vec![op(2)]).is_ok() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
    }

    #[test]
    fn close_commits_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(dir.path(), crate::Sync::Normal).unwrap();
        let writer = Writer::spawn(Box::new(store), 1000, |_| {});
        let task = NewTask {
            id: 1,
            owner: "api".into(),
            client_task_id: "t-1".into(),
            task_type: "echo".into(),
            payload: "{}".into(),
            priority: 1,
            req_model: None,
            req_gpu: false,
            req_min_vram_mb: None,
            run_timeout_ms: None,
            queue_timeout_ms: 1000,
            max_attempts: 3,
            idempotency_key: None,
            submitted_at_ms: 0,
        };
        writer.send(1, vec![Op::Insert(task)]).unwrap();
        writer.close();
        let mut store = crate::SqliteStore::open(dir.path(), crate::Sync::Normal).unwrap();
        assert_eq!(store.load().unwrap().tasks.len(), 1);
    }
}
