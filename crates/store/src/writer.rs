//! The writer thread: group commit.
//!
//! Batches arrive numbered; the thread takes the first one waiting, then
//! everything else that is already there (up to a bound), writes them all in
//! one transaction, and reports the highest number committed. While a commit
//! waits for the disk, the next batches pile up and share the next commit: one
//! fsync acknowledges many tasks, which is what keeps throughput high with
//! `Sync::Full`.
//!
//! The queue is bounded: [`Writer::send`] never blocks, and a full queue is
//! reported ([`SendError::Full`]) for the caller to hold its ops back and
//! try again. A writer that cannot start, or that panics, reports it: a
//! coordinator whose store cannot commit must stop rather than acknowledge.
//!
//! A write that fails is tried again a few times (a lost connection, a
//! server restarting), except a permanent refusal: a fenced writer
//! ([`StoreError::Fenced`]) reports it and stops at once, and nothing it is
//! given afterwards is written.

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

/// Why a batch was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The queue is full: hold the ops and send them with a later batch.
    #[error("the store writer's queue is full")]
    Full(Vec<Op>),
    /// The writer was stopped (after a fatal store error, or being closed).
    #[error("the store writer has stopped")]
    Closed,
}

/// A store running on its own thread.
#[derive(Debug)]
pub struct Writer {
    tx: Option<mpsc::SyncSender<Batch>>,
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
    /// Starts the writer with room for `queue` batches. `on_commit` is
    /// called on the writer thread with the highest batch number committed,
    /// or with the error that stopped it — a panic included.
    pub fn spawn(
        store: Box<dyn Store>,
        queue: usize,
        max_ops_per_commit: usize,
        on_commit: impl Fn(Result<Committed, StoreError>) + Send + 'static,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::sync_channel::<Batch>(queue.max(1));
        let thread = std::thread::Builder::new().name("store-writer".into()).spawn(move || {
            let mut store = store;
            let run = std::panic::AssertUnwindSafe(|| {
                commit_loop(store.as_mut(), &rx, max_ops_per_commit, &on_commit);
            });
            if let Err(panic) = std::panic::catch_unwind(run) {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                on_commit(Err(StoreError::WriterPanicked(what)));
            }
        })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread) })
    }

    /// Queues batch `seq` (numbers must increase); never blocks.
    pub fn send(&self, seq: u64, ops: Vec<Op>) -> Result<(), SendError> {
        let tx = self.tx.as_ref().ok_or(SendError::Closed)?;
        tx.try_send(Batch { seq, ops }).map_err(|e| match e {
            mpsc::TrySendError::Full(batch) => SendError::Full(batch.ops),
            mpsc::TrySendError::Disconnected(_) => SendError::Closed,
        })
    }

    /// Queues batch `seq`, waiting for room (at shutdown, when nothing else
    /// waits on the caller).
    pub fn send_waiting(&self, seq: u64, ops: Vec<Op>) -> Result<(), SendError> {
        let tx = self.tx.as_ref().ok_or(SendError::Closed)?;
        tx.send(Batch { seq, ops }).map_err(|_| SendError::Closed)
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

/// Takes batches until the channel closes or a write fails for good.
fn commit_loop(
    store: &mut dyn Store,
    rx: &mpsc::Receiver<Batch>,
    max_ops_per_commit: usize,
    on_commit: &impl Fn(Result<Committed, StoreError>),
) {
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
        match write_with_retries(store, &ops) {
            Ok(()) => on_commit(Ok(Committed { seq, ops: ops.len(), took: started.elapsed() })),
            Err(e) => {
                on_commit(Err(e));
                return;
            }
        }
        ops.clear();
    }
}

fn write_with_retries(store: &mut dyn Store, ops: &[Op]) -> Result<(), StoreError> {
    let mut attempt = 1;
    loop {
        match store.write(ops) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= ATTEMPTS || e.is_permanent() => return Err(e),
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
        let writer = Writer::spawn(Box::new(probe.clone()), 100, 10_000, move |r| {
            let _ = tx.send(r.unwrap().seq);
        })
        .unwrap();
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
        let writer = Writer::spawn(Box::new(probe), 100, 100, move |r| {
            let _ = tx.send(r.is_err());
        })
        .unwrap();
        writer.send(1, vec![op(1)]).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        // The thread has stopped: later sends fail.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.send(2, vec![op(2)]).is_ok() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
    }

    /// A store whose writes panic.
    struct Bomb;

    impl Store for Bomb {
        fn load(&mut self) -> Result<Loaded, StoreError> {
            Ok(Loaded::default())
        }

        fn write(&mut self, _: &[Op]) -> Result<(), StoreError> {
            panic!("the disk driver exploded");
        }
    }

    #[test]
    fn a_panic_on_the_writer_thread_is_reported_as_a_failure() {
        let (tx, rx) = mpsc::channel();
        let writer = Writer::spawn(Box::new(Bomb), 10, 100, move |r| {
            let _ = tx.send(r.map(|c| c.seq).map_err(|e| e.to_string()));
        })
        .unwrap();
        writer.send(1, vec![op(1)]).unwrap();
        let reported = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(reported, Err("the store writer panicked: the disk driver exploded".into()));
    }

    #[test]
    fn a_full_queue_gives_the_ops_back_instead_of_blocking() {
        let probe = Probe { slow: Duration::from_millis(200), ..Probe::default() };
        let writer = Writer::spawn(Box::new(probe), 1, 100, |_| {}).unwrap();
        let mut refused = None;
        for seq in 1..=10 {
            if let Err(SendError::Full(ops)) = writer.send(seq, vec![op(seq)]) {
                refused = Some(ops);
                break;
            }
        }
        let ops = refused.expect("a queue of one batch fills while a commit takes 200 ms");
        assert_eq!(ops.len(), 1);
        writer.close();
    }

    /// A store that refuses every write as fenced, counting the tries.
    struct Deposed(Arc<Mutex<u32>>);

    impl Store for Deposed {
        fn load(&mut self) -> Result<Loaded, StoreError> {
            Ok(Loaded::default())
        }

        fn write(&mut self, _: &[Op]) -> Result<(), StoreError> {
            *self.0.lock().unwrap() += 1;
            Err(StoreError::Fenced { ours: 1, current: 2 })
        }
    }

    #[test]
    fn a_fenced_write_is_never_retried_and_stops_the_writer() {
        let tries = Arc::new(Mutex::new(0));
        let (tx, rx) = mpsc::channel();
        let writer = Writer::spawn(Box::new(Deposed(Arc::clone(&tries))), 10, 100, move |r| {
            let _ = tx.send(r.map(|c| c.seq));
        })
        .unwrap();
        writer.send(1, vec![op(1)]).unwrap();
        let reported = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(reported, Err(StoreError::Fenced { ours: 1, current: 2 })),
            "{reported:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.send(2, vec![op(2)]).is_ok() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        writer.close();
        assert_eq!(*tries.lock().unwrap(), 1);
        assert!(rx.try_recv().is_err(), "nothing more is reported after the refusal");
    }

    #[test]
    fn close_commits_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(dir.path(), crate::Sync::Normal).unwrap();
        let writer = Writer::spawn(Box::new(store), 100, 1000, |_| {}).unwrap();
        let task = NewTask {
            id: 1,
            owner: "api".into(),
            client_task_id: "t-1".into(),
            peer_task_id: "t-1".into(),
            options: None,
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
            verify: None,
        };
        writer.send(1, vec![Op::Insert(task)]).unwrap();
        writer.close();
        let mut store = crate::SqliteStore::open(dir.path(), crate::Sync::Normal).unwrap();
        assert_eq!(store.load().unwrap().tasks.len(), 1);
    }
}
