//! The writer thread: group commit.
//!
//! Batches arrive numbered; the thread takes the first one waiting, then
//! everything else that is already there (up to a bound), writes them all in
//! one transaction, and reports the highest number committed. While a commit
//! waits for the disk, the next batches pile up and share the next commit: one
//! fsync acknowledges many tasks, which is what keeps throughput high with
//! `Sync::Full`.
//!
//! When nothing is queued or being written, a caller with nothing else to do
//! may commit its batch on its own thread instead ([`Writer::commit_here`]):
//! one task at a time then costs no wake-up of the writer thread and no
//! wake-up back. Batches still commit in order, because a batch is written
//! here only while no earlier one is in flight, and only the writer's owner
//! sends. The store's upkeep ([`Store::upkeep`]: SQLite's checkpoints, with
//! their fsyncs) always runs on the writer thread, so that a commit on the
//! owner's thread stays short.
//!
//! A store that applies its commits later ([`Store::behind`]: the journal)
//! has them durable before its readers see them; each report says both
//! ([`Committed::seq`], [`Committed::visible`]), and upkeep that makes them
//! visible is reported too. Such upkeep may be due by a deadline
//! ([`Store::upkeep_within`]), for which the thread wakes though nothing
//! else arrives.
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Op, Store, StoreError};

/// How often a failing write is tried before the writer gives up.
const ATTEMPTS: u32 = 3;

/// What the writer thread is given.
enum Job {
    /// Batch `seq`, to commit.
    Batch { seq: u64, ops: Vec<Op> },
    /// The store's upkeep, due after a commit made on the owner's thread.
    Upkeep,
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

type OnCommit = dyn Fn(Result<Committed, StoreError>) + Send + Sync;

/// What the writer thread and the writer's owner share.
struct Shared {
    store: Mutex<Box<dyn Store>>,
    /// Batches queued or being written, not yet reported.
    in_flight: AtomicU64,
    /// The last batch written and the last one readers see (changed with
    /// the store's lock held).
    written: AtomicU64,
    visible: AtomicU64,
    /// Whether the writer thread waits with a deadline for the store's
    /// upkeep (read and written with the store's lock held).
    timing: AtomicBool,
    on_commit: Box<OnCommit>,
}

/// A store running on its own thread.
pub struct Writer {
    tx: Option<mpsc::SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("open", &self.tx.is_some())
            .field("in_flight", &self.shared.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

/// One group commit that reached the disk, or (with no ops) upkeep that
/// made earlier commits visible.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The highest batch number durable.
    pub seq: u64,
    /// The highest batch number the store's readers see: `seq`, but for a
    /// store that applies its commits later ([`Store::behind`]).
    pub visible: u64,
    /// Ops written (0 for a report of upkeep).
    pub ops: usize,
    /// Time the transaction took.
    pub took: std::time::Duration,
}

impl Writer {
    /// Starts the writer with room for `queue` batches. `on_commit` is
    /// called with the highest batch number committed, or with the error
    /// that stopped the writer — a panic included: on the writer thread, or
    /// on the caller's for [`Writer::commit_here`].
    pub fn spawn(
        store: Box<dyn Store>,
        queue: usize,
        max_ops_per_commit: usize,
        on_commit: impl Fn(Result<Committed, StoreError>) + Send + Sync + 'static,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            in_flight: AtomicU64::new(0),
            written: AtomicU64::new(0),
            visible: AtomicU64::new(0),
            timing: AtomicBool::new(false),
            on_commit: Box::new(on_commit),
        });
        let on_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("store-writer".into()).spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| {
                commit_loop(&on_thread, &rx, max_ops_per_commit);
            });
            if let Err(panic) = std::panic::catch_unwind(run) {
                (on_thread.on_commit)(Err(panicked(panic.as_ref())));
            }
        })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread), shared })
    }

    /// Queues batch `seq` (numbers must increase); never blocks.
    pub fn send(&self, seq: u64, ops: Vec<Op>) -> Result<(), SendError> {
        let tx = self.tx.as_ref().ok_or(SendError::Closed)?;
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        tx.try_send(Job::Batch { seq, ops }).map_err(|e| {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            match e {
                mpsc::TrySendError::Full(Job::Batch { ops, .. }) => SendError::Full(ops),
                mpsc::TrySendError::Full(Job::Upkeep) => SendError::Full(Vec::new()),
                mpsc::TrySendError::Disconnected(_) => SendError::Closed,
            }
        })
    }

    /// Whether no batch is queued or being written: the next
    /// [`Writer::commit_here`] then commits on the caller's thread.
    pub fn idle(&self) -> bool {
        self.tx.is_some() && self.shared.in_flight.load(Ordering::Acquire) == 0
    }

    /// Commits batch `seq` on this thread when no batch is queued or being
    /// written, and reports it through `on_commit` before returning;
    /// otherwise queues it as [`Writer::send`] does. A write that fails for
    /// good is reported the same way and stops the writer.
    pub fn commit_here(&mut self, seq: u64, ops: Vec<Op>) -> Result<(), SendError> {
        if self.tx.is_none() {
            return Err(SendError::Closed);
        }
        if self.shared.in_flight.load(Ordering::Acquire) > 0 {
            return self.send(seq, ops);
        }
        // The writer thread doing the store's upkeep holds it: the batch
        // waits there rather than this thread.
        let mut store = match self.shared.store.try_lock() {
            Ok(store) => store,
            Err(std::sync::TryLockError::WouldBlock) => return self.send(seq, ops),
            Err(std::sync::TryLockError::Poisoned(_)) => {
                self.tx.take();
                return Ok(());
            }
        };
        let write =
            std::panic::AssertUnwindSafe(|| commit_locked(&self.shared, &mut store, seq, &ops));
        let ok = match std::panic::catch_unwind(write) {
            Ok(ok) => ok,
            Err(panic) => {
                (self.shared.on_commit)(Err(panicked(panic.as_ref())));
                false
            }
        };
        if !ok {
            // The thread sees the channel close and ends.
            self.tx.take();
            return Ok(());
        }
        // Upkeep due now, or a deadline the writer thread does not yet
        // wait for: wake it.
        let wake = store.upkeep_due()
            || (store.upkeep_within().is_some()
                && !self.shared.timing.swap(true, Ordering::AcqRel));
        drop(store);
        if wake && let Some(tx) = &self.tx {
            // Nothing was in flight, so the queue has room.
            self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
            if tx.try_send(Job::Upkeep).is_err() {
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Queues batch `seq`, waiting for room (at shutdown, when nothing else
    /// waits on the caller).
    pub fn send_waiting(&self, seq: u64, ops: Vec<Op>) -> Result<(), SendError> {
        let tx = self.tx.as_ref().ok_or(SendError::Closed)?;
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        tx.send(Job::Batch { seq, ops }).map_err(|_| {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            SendError::Closed
        })
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

fn panicked(panic: &(dyn std::any::Any + Send)) -> StoreError {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    StoreError::WriterPanicked(what)
}

/// Writes `ops` as the commit of batch `seq` and reports it, then, with
/// `upkeep`, does the store's upkeep if it is due; false when the write
/// failed for good.
fn commit(shared: &Shared, seq: u64, ops: &[Op], upkeep: bool) -> bool {
    // A panic while the lock was held ended the writer: nothing writes after it.
    let Ok(mut store) = shared.store.lock() else { return false };
    if !commit_locked(shared, &mut store, seq, ops) {
        return false;
    }
    // After the report, so that no reply waits for it.
    if upkeep {
        upkeep_if_due(shared, &mut store);
    }
    true
}

/// Writes `ops` as the commit of batch `seq` and reports it; false when
/// the write failed for good.
fn commit_locked(shared: &Shared, store: &mut Box<dyn Store>, seq: u64, ops: &[Op]) -> bool {
    let started = std::time::Instant::now();
    match write_with_retries(store.as_mut(), ops) {
        Ok(()) => {
            shared.written.store(seq, Ordering::Release);
            if !store.behind() {
                shared.visible.store(seq, Ordering::Release);
            }
            let visible = shared.visible.load(Ordering::Acquire);
            let took = started.elapsed();
            (shared.on_commit)(Ok(Committed { seq, visible, ops: ops.len(), took }));
            true
        }
        Err(e) => {
            (shared.on_commit)(Err(e));
            false
        }
    }
}

/// Does the store's upkeep if it is due, and reports commits it made
/// visible.
fn upkeep_if_due(shared: &Shared, store: &mut Box<dyn Store>) {
    if !store.upkeep_due() {
        return;
    }
    let started = std::time::Instant::now();
    if let Err(e) = store.upkeep() {
        tracing::warn!("store upkeep failed (tried again when next due): {e}");
        return;
    }
    let written = shared.written.load(Ordering::Acquire);
    if !store.behind() && shared.visible.swap(written, Ordering::AcqRel) < written {
        let took = started.elapsed();
        (shared.on_commit)(Ok(Committed { seq: written, visible: written, ops: 0, took }));
    }
}

/// The next job, waking for the store's upkeep when it is due by a
/// deadline; `None` once the channel is closed.
fn next_job(shared: &Shared, rx: &mpsc::Receiver<Job>) -> Option<Job> {
    loop {
        let within = match shared.store.lock() {
            Ok(store) => {
                let within = store.upkeep_within();
                shared.timing.store(within.is_some(), Ordering::Release);
                within
            }
            Err(_) => return None,
        };
        let Some(within) = within else { return rx.recv().ok() };
        match rx.recv_timeout(within) {
            Ok(job) => return Some(job),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(mut store) = shared.store.lock() {
                    upkeep_if_due(shared, &mut store);
                }
            }
        }
    }
}

/// Takes batches until the channel closes or a write fails for good.
fn commit_loop(shared: &Shared, rx: &mpsc::Receiver<Job>, max_ops_per_commit: usize) {
    let mut ops: Vec<Op> = Vec::new();
    while let Some(first) = next_job(shared, rx) {
        let (mut seq, first_ops) = match first {
            Job::Batch { seq, ops } => (seq, ops),
            Job::Upkeep => {
                if let Ok(mut store) = shared.store.lock() {
                    upkeep_if_due(shared, &mut store);
                }
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
        };
        let mut jobs = 1;
        ops.extend(first_ops);
        while ops.len() < max_ops_per_commit {
            match rx.try_recv() {
                Ok(Job::Batch { seq: next, ops: more }) => {
                    seq = next;
                    jobs += 1;
                    ops.extend(more);
                }
                // Done after this commit, which does the upkeep if due.
                Ok(Job::Upkeep) => jobs += 1,
                Err(_) => break,
            }
        }
        if !commit(shared, seq, &ops, true) {
            return;
        }
        // Only once reported: the owner may then commit on its own thread.
        shared.in_flight.fetch_sub(jobs, Ordering::AcqRel);
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
        /// Upkeep is due after every commit; the threads it ran on.
        upkeep: Option<Arc<Mutex<Vec<std::thread::ThreadId>>>>,
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

        fn upkeep_due(&self) -> bool {
            self.upkeep.is_some()
        }

        fn upkeep(&mut self) -> Result<(), StoreError> {
            if let Some(ran) = &self.upkeep {
                ran.lock().unwrap().push(std::thread::current().id());
            }
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
    fn an_idle_writer_lets_the_caller_commit_on_its_own_thread() {
        let probe = Probe::default();
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::spawn(Box::new(probe.clone()), 10, 100, move |r| {
            let _ = tx.send((r.unwrap().seq, std::thread::current().id()));
        })
        .unwrap();
        writer.commit_here(1, vec![op(1), op(2)]).unwrap();
        // Reported before commit_here returned, from this thread.
        assert_eq!(rx.try_recv(), Ok((1, std::thread::current().id())));
        assert_eq!(*probe.commits.lock().unwrap(), [2]);
        writer.close();
    }

    #[test]
    fn upkeep_after_a_commit_on_the_callers_thread_runs_on_the_writer_thread() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let probe = Probe { upkeep: Some(Arc::clone(&ran)), ..Probe::default() };
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::spawn(Box::new(probe), 10, 100, move |r| {
            let _ = tx.send(r.unwrap().seq);
        })
        .unwrap();
        writer.commit_here(1, vec![op(1)]).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        // The next batch waits behind the upkeep, on the writer thread.
        writer.commit_here(2, vec![op(2)]).unwrap();
        writer.close();
        assert_eq!(rx.iter().collect::<Vec<_>>(), [2]);
        let ran = ran.lock().unwrap().clone();
        let here = std::thread::current().id();
        assert!(!ran.is_empty() && ran.iter().all(|t| *t != here), "{ran:?}");
    }

    #[test]
    fn a_batch_given_while_another_is_in_flight_is_queued_behind_it() {
        let probe = Probe { slow: Duration::from_millis(100), ..Probe::default() };
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::spawn(Box::new(probe.clone()), 10, 100, move |r| {
            let _ = tx.send((r.unwrap().seq, std::thread::current().id()));
        })
        .unwrap();
        writer.send(1, vec![op(1)]).unwrap();
        writer.commit_here(2, vec![op(2)]).unwrap();
        writer.close();
        let reported: Vec<_> = rx.iter().collect();
        assert_eq!(reported.last().map(|r| r.0), Some(2), "in order: {reported:?}");
        let here = std::thread::current().id();
        assert!(reported.iter().all(|r| r.1 != here), "committed on the writer thread");
        assert_eq!(probe.commits.lock().unwrap().iter().sum::<usize>(), 2);
    }

    #[test]
    fn a_failure_committing_on_the_callers_thread_is_reported_and_stops_the_writer() {
        let probe = Probe::default();
        *probe.fail.lock().unwrap() = true;
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::spawn(Box::new(probe), 10, 100, move |r| {
            let _ = tx.send(r.is_err());
        })
        .unwrap();
        writer.commit_here(1, vec![op(1)]).unwrap();
        assert_eq!(rx.try_recv(), Ok(true));
        assert!(matches!(writer.send(2, vec![op(2)]), Err(SendError::Closed)));
        assert!(matches!(writer.commit_here(3, vec![op(3)]), Err(SendError::Closed)));
        writer.close();
        assert!(rx.try_recv().is_err(), "nothing more is reported");
    }

    #[test]
    fn a_panic_committing_on_the_callers_thread_is_reported_as_a_failure() {
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::spawn(Box::new(Bomb), 10, 100, move |r| {
            let _ = tx.send(r.map(|c| c.seq).map_err(|e| e.to_string()));
        })
        .unwrap();
        writer.commit_here(1, vec![op(1)]).unwrap();
        let reported = rx.try_recv().unwrap();
        assert_eq!(reported, Err("the store writer panicked: the disk driver exploded".into()));
        assert!(matches!(writer.send(2, vec![op(2)]), Err(SendError::Closed)));
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
