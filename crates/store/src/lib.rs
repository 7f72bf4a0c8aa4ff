//! Durable task storage.
//!
//! The coordinator writes every change of a task's life as an [`Op`] and reads
//! the tasks back with [`Store::load`] after a restart. The [`Store`] trait is
//! the whole contract — apply a batch of ops atomically, load what is there —
//! and two backends keep it: [`SqliteStore`] (one file, the embedded default)
//! and [`PostgresStore`] (a database several coordinators share). [`open`]
//! picks one from a `--store` argument ([`Target`]).
//!
//! On PostgreSQL, coordinators compete for a [`LeaderLease`]: a lease row with
//! an epoch. Every batch a [`PostgresStore`] writes carries the epoch it was
//! given ([`Store::set_epoch`]) and the database refuses it once a newer epoch
//! exists ([`StoreError::Fenced`]), so a deposed leader cannot write.
//!
//! [`StoreReader`] ([`SqliteReader`], [`PostgresReader`]) serves the API's
//! lists and lookups from connections of its own, apart from the writer.
//!
//! [`Writer`] runs a store on a thread of its own with **group commit**: ops
//! that arrive while a transaction commits are gathered into the next one, so
//! one fsync covers many tasks. It reports the highest batch sequence number
//! committed, which is what lets the coordinator acknowledge a submission only
//! once it is durable. When nothing is in flight, its owner may commit a batch
//! on its own thread ([`Writer::commit_here`]); a backend's upkeep (SQLite's
//! checkpoints, [`Store::upkeep`]) stays on the writer's thread.
//!
//! This crate knows nothing of the scheduler: its rows are plain data.

use std::fmt;

pub use codes::{AttemptEnd, FailureCode, TaskState, Verdict, VerifyStatus};

mod fold;
mod journal;
mod pg;
mod read;
mod sqlite;
mod sqlite_read;
mod sqlite_verify;
mod target;
mod writer;

pub use journal::{JOURNAL_MAX_OPS, Journaled};
pub use pg::{
    Acquired, CoordinatorSeen, LeaderLease, LeaseState, PgError, PostgresReader, PostgresStore,
    Renewal,
};
pub use read::{Count, MAX_PAGE, Page, StoreReader, TaskFilter};
pub use sqlite::{SqliteStore, Sync};
pub use sqlite_read::SqliteReader;
pub use target::{Target, open, open_reader};
pub use writer::{Committed, SendError, Writer};

/// A store error. A coordinator that cannot write stops acknowledging.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    /// Another process (another coordinator) has the store open.
    #[error(
        "the store at {path} is in use by another process (is another coordinator running on \
         this data directory?)"
    )]
    InUse { path: String },
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot create the store directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error(
        "the store file {path} is empty (0 bytes): it was truncated or never finished; restore it \
         from a backup, or remove it to start with an empty store"
    )]
    Empty { path: String },
    #[error(
        "the store at {path} was written by a newer version (schema {found}, this build knows {known})"
    )]
    Schema { path: String, found: i64, known: i64 },
    /// The writer thread panicked: nothing more is committed.
    #[error("the store writer panicked: {0}")]
    WriterPanicked(String),
    /// A stored value this build cannot read (a state it does not know):
    /// refused rather than guessed.
    #[error("the store holds a row this build cannot read: {0}")]
    Corrupt(String),
    /// The PostgreSQL server could not be reached or refused the session.
    #[error("cannot connect to the store at {url}: {source}")]
    Connect { url: String, source: PgError },
    #[error("store: {0}")]
    Postgres(#[from] PgError),
    /// No read connection could be had in time.
    #[error("store: no read connection: {0}")]
    Pool(String),
    /// A newer leader holds the lease: this writer's batch was refused and
    /// nothing of it was written. Not transient: the writer must stop.
    #[error(
        "fenced: this coordinator writes with epoch {ours} but the lease is at epoch {current}; \
         another coordinator leads"
    )]
    Fenced { ours: u64, current: u64 },
}

impl StoreError {
    /// Whether trying the same write again cannot succeed (so the writer
    /// stops at once instead of retrying).
    pub fn is_permanent(&self) -> bool {
        matches!(self, StoreError::Fenced { .. } | StoreError::Schema { .. })
    }
}

/// Where tasks are kept, as a backend sees it.
pub trait Store: Send + 'static {
    /// Every task stored, with its attempts, in id order.
    fn load(&mut self) -> Result<Loaded, StoreError>;

    /// Applies `ops` in order, all or none.
    fn write(&mut self, ops: &[Op]) -> Result<(), StoreError>;

    /// The leader epoch every later [`Store::write`] carries; the database
    /// refuses a write once a newer epoch holds the lease. A single-node
    /// backend (SQLite) has nothing to fence and ignores it. Epoch 0, the
    /// default, is "no lease taken": accepted only while nobody ever led.
    fn set_epoch(&mut self, _epoch: u64) {}

    /// Whether the backend has upkeep to do apart from commits (SQLite:
    /// copying its write-ahead log into the database once the log has grown
    /// past a bound). The writer runs it on its own thread
    /// ([`Store::upkeep`]), never on a caller's.
    fn upkeep_due(&self) -> bool {
        false
    }

    /// Does that upkeep. A failure is not a failed commit: nothing
    /// acknowledged depends on it, and it is tried again when next due.
    fn upkeep(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether ops it has made durable are not yet visible to the store's
    /// readers ([`StoreReader`]): a journaled store ([`Journaled`]) applies
    /// them to its database in its upkeep.
    fn behind(&self) -> bool {
        false
    }

    /// How soon upkeep is due even if nothing more is written: the writer
    /// thread wakes for it then. `None` when nothing waits for upkeep.
    fn upkeep_within(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What [`Store::load`] returns.
#[derive(Debug, Default)]
pub struct Loaded {
    pub tasks: Vec<StoredTask>,
    /// Approved workers: peer id and the SHA-256 (hex) of its credential.
    pub approvals: Vec<(String, String)>,
    /// The join secrets last rotated, by kind (`worker`, `client`).
    pub join_secrets: Vec<(String, String)>,
    /// Workers' and credentials' reputations, by subject.
    pub reputation: Vec<ReputationRow>,
    /// Every task id ever stored is below this (ids are never reused).
    pub next_task_id: u64,
}

/// A submitted task, as accepted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewTask {
    pub id: u64,
    /// `gamer:<id>` or `api`.
    pub owner: String,
    pub client_task_id: String,
    /// The id peers see (the client's own id unless another live task held
    /// it; see docs/PROTOCOL.md).
    pub peer_task_id: String,
    /// The task's options beyond the columns, as a JSON object
    /// (`{"stream": true}`); `None` when it has none.
    pub options: Option<String>,
    pub task_type: String,
    /// The task's data, JSON text.
    pub payload: String,
    pub priority: i32,
    pub req_model: Option<String>,
    pub req_gpu: bool,
    pub req_min_vram_mb: Option<u64>,
    pub run_timeout_ms: Option<u64>,
    pub queue_timeout_ms: u64,
    pub max_attempts: u32,
    pub idempotency_key: Option<String>,
    /// Unix milliseconds.
    pub submitted_at_ms: i64,
    /// The verification policy it runs under (`2/2`, `3/2/adaptive`), when
    /// it is verified.
    pub verify: Option<String>,
}

/// A failure's code and message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorRow {
    pub code: FailureCode,
    pub message: String,
}

/// One change in a task's life. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// A task accepted. Inserting an id again starts its rows over, its
    /// replicas' results included.
    Insert(NewTask),
    Assigned {
        id: u64,
        attempt: u32,
        peer: String,
        at_ms: i64,
    },
    Started {
        id: u64,
        attempt: u32,
        at_ms: i64,
    },
    /// The attempt's peer reclaimed it after reconnecting: assigned again.
    Reclaimed {
        id: u64,
        attempt: u32,
        peer: String,
        /// The task's failures, less the one the reclaim undid.
        failures: u32,
    },
    /// The attempt ended (`end`, at `at_ms`) and the task waits for another.
    Requeued {
        id: u64,
        attempt: u32,
        end: AttemptEnd,
        failures: u32,
        error: Option<ErrorRow>,
        at_ms: i64,
    },
    /// The task ended. `end` closes its last attempt, when one was running.
    Finished {
        id: u64,
        /// A terminal state.
        state: TaskState,
        result: Option<String>,
        error: Option<ErrorRow>,
        end: Option<(u32, AttemptEnd)>,
        at_ms: i64,
        delivered: bool,
        /// Failed attempts, counting one that ended with the task.
        failures: u32,
    },
    Delivered {
        id: u64,
        delivered: bool,
    },
    /// An operator retried a finished task: it is queued again (no result,
    /// not finished, failures 0; its attempts and last error stay), peers
    /// seeing `peer_task_id`.
    Retried {
        id: u64,
        peer_task_id: String,
    },
    /// A result for an attempt that was no longer current.
    Stale {
        id: u64,
        attempt: u32,
        peer: String,
        at_ms: i64,
    },
    /// Tasks dropped (their retention ended).
    Deleted {
        ids: Vec<u64>,
    },
    /// An operator approved a worker; only its credential's hash is kept.
    Approved {
        peer_id: String,
        credential_sha256: String,
        at_ms: i64,
    },
    /// An operator rotated a join token: its new secret (`kind` is `worker`
    /// or `client`), for every coordinator on the store to admit by. Kept
    /// as it is, not hashed: a coordinator shows it (`cluster token show`).
    JoinSecret {
        kind: String,
        secret: String,
        at_ms: i64,
    },
    /// A verified task's verdict and every replica's result, kept for the
    /// operator (written just before the task's `Finished`).
    Verified {
        id: u64,
        status: VerifyStatus,
        replicas: Vec<StoredReplica>,
    },
    /// A worker's or credential's reputation, as it now stands.
    Reputation(ReputationRow),
    /// Task ids below `next_task_id` were handed out (to replicas, which
    /// are not stored): never reuse them.
    IdsUsed {
        next_task_id: u64,
    },
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    pub task: NewTask,
    pub state: TaskState,
    /// The current (latest) attempt; 0 before the first assignment.
    pub attempt: u32,
    pub failures: u32,
    pub peer: Option<String>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub result: Option<String>,
    pub error: Option<ErrorRow>,
    pub delivered: bool,
    pub attempts: Vec<StoredAttempt>,
    /// Its verification's verdict, once it has one.
    pub verify_status: Option<VerifyStatus>,
    /// Its replicas' results (read by `load` and by a reader's `task`).
    pub replicas: Vec<StoredReplica>,
}

/// One replica of a verified task, as stored with its task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredReplica {
    /// Its place among the task's replicas (0, 1, …).
    pub replica: u32,
    /// The replica's own cluster id.
    pub task_id: u64,
    pub peer: Option<String>,
    pub attempts: u32,
    /// Its result (JSON text), when it completed.
    pub result: Option<String>,
    pub error: Option<ErrorRow>,
    pub verdict: Verdict,
}

/// A worker's or credential's reputation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReputationRow {
    /// `worker:<peer id>` or `credential:<digest>`.
    pub subject: String,
    pub valid: u64,
    pub invalid: u64,
    pub unverified: u64,
    pub consecutive_valid: u32,
    pub canaries_passed: u64,
    pub canaries_failed: u64,
    pub strikes: u32,
    pub quarantined: bool,
    /// For a worker: the credential it last joined with.
    pub credential: Option<String>,
    /// Unix milliseconds.
    pub updated_at_ms: i64,
}

/// One attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttempt {
    pub attempt: u32,
    pub peer: String,
    pub assigned_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub end: Option<AttemptEnd>,
    pub error: Option<ErrorRow>,
}

impl fmt::Display for ErrorRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
