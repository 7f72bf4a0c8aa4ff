//! The SQLite backend: one file, WAL mode, prepared statements.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use crate::sqlite_verify as verify;
use crate::{
    AttemptEnd, ErrorRow, Loaded, NewTask, Op, Store, StoreError, StoredAttempt, StoredTask,
};

/// Version 2 added `tasks.peer_task_id`, version 3 `tasks.options`, version
/// 4 verification: `tasks.verify`, `tasks.verify_status`, and the
/// `replicas` and `reputation` tables; version 5 moved the read indexes of
/// `tasks` to `task_keys`.
const SCHEMA_VERSION: i64 = 5;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id               INTEGER PRIMARY KEY,
    owner            TEXT NOT NULL,
    client_task_id   TEXT NOT NULL,
    peer_task_id     TEXT,
    options          TEXT,
    task_type        TEXT NOT NULL,
    payload          TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    req_model        TEXT,
    req_gpu          INTEGER NOT NULL,
    req_min_vram_mb  INTEGER,
    run_timeout_ms   INTEGER,
    queue_timeout_ms INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    idempotency_key  TEXT,
    submitted_at     INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    peer             TEXT,
    started_at       INTEGER,
    finished_at      INTEGER,
    result           TEXT,
    error_code       TEXT,
    error_message    TEXT,
    delivered        INTEGER NOT NULL DEFAULT 0,
    verify           TEXT,
    verify_status    TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    task_id       INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    peer          TEXT NOT NULL,
    assigned_at   INTEGER NOT NULL,
    ended_at      INTEGER,
    end_reason    TEXT,
    error_code    TEXT,
    error_message TEXT,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
-- The read API's filters (keyset paging by id) on columns a task's later
-- writes leave alone. Not indexes of `tasks`: each would put a page into
-- the commit of every submission (a WAL frame; a fifth of the coordinator's
-- CPU per task with one task in flight). The writer copies them here as
-- upkeep, in batches, up to the id in meta `keyed_upto`; readers scan the
-- tasks above it.
CREATE TABLE IF NOT EXISTS task_keys (
    id           INTEGER PRIMARY KEY,
    owner        TEXT NOT NULL,
    task_type    TEXT NOT NULL,
    submitted_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS task_keys_owner_id ON task_keys (owner, id);
CREATE INDEX IF NOT EXISTS task_keys_type_id ON task_keys (task_type, id);
CREATE INDEX IF NOT EXISTS task_keys_submitted_at ON task_keys (submitted_at);
CREATE INDEX IF NOT EXISTS attempts_peer_task ON attempts (peer, task_id);
CREATE TABLE IF NOT EXISTS approvals (
    peer_id           TEXT PRIMARY KEY,
    credential_sha256 TEXT NOT NULL,
    approved_at       INTEGER NOT NULL
);
-- Join secrets as last rotated (a store without rows: those of the data dir).
CREATE TABLE IF NOT EXISTS join_secrets (
    kind       TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    rotated_at INTEGER NOT NULL
);
-- A verified task's replicas and their results, kept for the operator.
CREATE TABLE IF NOT EXISTS replicas (
    task_id       INTEGER NOT NULL,
    replica       INTEGER NOT NULL,
    replica_id    INTEGER NOT NULL,
    peer          TEXT,
    attempts      INTEGER NOT NULL,
    result        TEXT,
    error_code    TEXT,
    error_message TEXT,
    verdict       TEXT NOT NULL,
    PRIMARY KEY (task_id, replica)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reputation (
    subject           TEXT PRIMARY KEY,
    valid             INTEGER NOT NULL,
    invalid           INTEGER NOT NULL,
    unverified        INTEGER NOT NULL,
    consecutive_valid INTEGER NOT NULL,
    canaries_passed   INTEGER NOT NULL,
    canaries_failed   INTEGER NOT NULL,
    strikes           INTEGER NOT NULL,
    quarantined       INTEGER NOT NULL,
    credential        TEXT,
    updated_at        INTEGER NOT NULL
);
";

/// How hard each commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
///
/// Both run SQLite in WAL mode, where a commit is in the WAL file (the OS's
/// page cache) before it returns, so both keep every acknowledged task when
/// the coordinator process crashes or is killed (`kill -9`). They differ on
/// a power cut or kernel crash.
pub enum Sync {
    /// fsync every commit: an acknowledged task survives a power cut too.
    /// About twice the latency per task when one task is in flight.
    Full,
    /// Let the OS write (SQLite `synchronous=NORMAL`; the WAL is synced at
    /// checkpoints): a power cut may roll back the last commits — tasks
    /// acknowledged in the last moments before it — and never corrupts the
    /// store. The default: the cluster's promise is about its own crashes
    /// (ARCHITECTURE.md, "Durability").
    #[default]
    Normal,
}

/// Pages in the write-ahead log past which it is copied into the database
/// (SQLite's own automatic checkpoint uses the same bound).
const CHECKPOINT_PAGES: i32 = 1000;

/// Tasks inserted without read keys past which upkeep copies their keys
/// (the most a filtered read scans unindexed, but for what arrives while
/// the upkeep waits its turn).
const UNKEYED_TASKS: u64 = 256;

/// Tasks in an SQLite file.
pub struct SqliteStore {
    conn: Connection,
    /// Pages in the write-ahead log after the last commit (set by SQLite's
    /// WAL hook, which replaces its automatic checkpoint: checkpoints run
    /// as [`Store::upkeep`], on the writer's thread).
    wal_pages: Arc<AtomicI32>,
    /// The `next_task_id` stored (as far as this store knows): a batch
    /// whose ids are all below it need not write it again. Reservations
    /// (`Op::IdsUsed`) run ahead of the ids inserted, so most batches don't.
    next_task_id: u64,
    /// Tasks up to this id have their read keys in `task_keys`.
    keyed_upto: u64,
    /// Tasks inserted above `keyed_upto` since the last copy.
    unkeyed: u64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.conn.path()).finish()
    }
}

/// The VFS every connection to `tasks.db` opens with: SQLite's `unix-excl`.
/// The first connection takes the file's lock for the process and keeps it
/// until the last one closes, so a transaction costs no `fcntl` lock calls
/// (twelve per write transaction with `unix`) and the WAL index lives in the
/// process's memory instead of a `-shm` file. Connections of the same
/// process (the writer and the readers) share it as usual; another process
/// — a second coordinator started on the same data directory — is refused
/// ([`StoreError::InUse`]) instead of running the same tasks twice.
pub(crate) const VFS: &std::ffi::CStr = c"unix-excl";

/// An error opening `path`: "database is locked" there means another
/// process has the store open.
pub(crate) fn open_error(path: impl std::fmt::Display, source: rusqlite::Error) -> StoreError {
    let path = path.to_string();
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::InUse { path },
        _ => StoreError::Open { path, source },
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/tasks.db`.
    pub fn open(dir: &Path, sync: Sync) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
        let path: PathBuf = dir.join("tasks.db");
        // SQLite takes an empty file for a new database: a store truncated
        // to nothing would silently become an empty one.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::Empty { path: path.display().to_string() });
        }
        let open_err = |source| open_error(path.display(), source);
        let conn = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), VFS)
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        let sync = match sync {
            Sync::Full => "FULL",
            Sync::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(open_err)?;
        let mut store = SqliteStore::prepare(conn, &path.display().to_string())?;
        let pages = Arc::clone(&store.wal_pages);
        store
            .conn
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: i32| {
                pages.store(n, Ordering::Relaxed);
                Ok(())
            }))
            .map_err(open_err)?;
        // Keys a previous run left uncopied (at most a batch or two).
        if store.upkeep_due() {
            store.upkeep()?;
        }
        Ok(store)
    }

    /// A store in memory only, gone when dropped: for simulations and tests
    /// that want the real rows without a file.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open { path: ":memory:".into(), source };
        let conn = Connection::open_in_memory().map_err(open_err)?;
        SqliteStore::prepare(conn, ":memory:")
    }

    /// Creates or migrates the schema on an open connection.
    fn prepare(conn: Connection, path: &str) -> Result<SqliteStore, StoreError> {
        let open_err = |source| open_error(path, source);
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        let found: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .optional()?;
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Schema {
                    path: path.to_owned(),
                    found: v,
                    known: SCHEMA_VERSION,
                });
            }
            Some(v) if v < SCHEMA_VERSION => migrate(&conn, v).map_err(open_err)?,
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
        }
        // Room for every statement the writer runs (about 30), so that none
        // is parsed again (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(64);
        let keyed_upto = keyed_upto(&conn)?;
        let unkeyed: i64 =
            conn.query_row("SELECT count(*) FROM tasks WHERE id > ?1", [keyed_upto], |r| r.get(0))?;
        let keyed_upto = keyed_upto as u64;
        Ok(SqliteStore {
            conn,
            wal_pages: Arc::new(AtomicI32::new(0)),
            next_task_id: 0,
            keyed_upto,
            unkeyed: unkeyed as u64,
        })
    }
}

impl SqliteStore {
    /// Applies `ops` as [`Store::write`] does; with `journal`, records in the
    /// same transaction that the journal's records up to that number are
    /// applied ([`SqliteStore::journal_applied`]).
    pub(crate) fn write_applying(
        &mut self,
        ops: &[Op],
        journal: Option<u64>,
    ) -> Result<(), StoreError> {
        let stored = self.next_task_id;
        let keyed_upto = self.keyed_upto;
        let mut unkeyed = 0;
        let next_id = in_transaction(&self.conn, |tx| {
            // Tasks inserted in this batch are written as their final rows.
            let (folded, taken) = crate::fold::fold_batch(ops);
            for f in &folded {
                write_folded(tx, f)?;
            }
            let mut next_id = 0;
            for (i, op) in ops.iter().enumerate() {
                if !taken[i] {
                    apply(tx, op)?;
                }
                match op {
                    // An id at or below the keyed ones (never, as ids only
                    // grow, but then still found by filters) gets its keys now.
                    Op::Insert(t) if t.id <= keyed_upto => write_keys(tx, t)?,
                    Op::Insert(_) => unkeyed += 1,
                    Op::Deleted { ids } => {
                        let mut keys = tx.prepare_cached("DELETE FROM task_keys WHERE id = ?1")?;
                        for id in ids {
                            keys.execute([*id as i64])?;
                        }
                    }
                    _ => {}
                }
                match op {
                    Op::Insert(t) => next_id = next_id.max(t.id + 1),
                    Op::IdsUsed { next_task_id } => next_id = next_id.max(*next_task_id),
                    _ => {}
                }
            }
            if let Some(seq) = journal {
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('journal_applied', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([seq as i64])?;
            }
            if next_id > stored {
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('next_task_id', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                )?
                .execute([next_id as i64])?;
            }
            Ok(next_id)
        })?;
        self.next_task_id = stored.max(next_id);
        self.unkeyed += unkeyed;
        Ok(())
    }

    /// The last journal record applied to this database (0 before any).
    pub(crate) fn journal_applied(&self) -> Result<u64, StoreError> {
        let seq: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'journal_applied'", [], |r| r.get(0))
            .optional()?;
        Ok(seq.map_or(0, |s| s as u64))
    }
}

/// Brings a store at version `from` to [`SCHEMA_VERSION`], in one
/// transaction. Version 1 had no `peer_task_id` (peers saw the cluster id,
/// which is what recovery uses for those rows); version 2 no `options` (its
/// tasks had none); version 3 no verification columns (the tables
/// themselves come with the schema); version 4 indexed `tasks` itself for
/// reads (its rows' keys are copied to `task_keys`, which comes with the
/// schema).
fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    let mut sql = String::from("BEGIN;");
    if from < 2 {
        sql.push_str("ALTER TABLE tasks ADD COLUMN peer_task_id TEXT;");
    }
    if from < 3 {
        sql.push_str("ALTER TABLE tasks ADD COLUMN options TEXT;");
    }
    if from < 4 {
        sql.push_str(
            "ALTER TABLE tasks ADD COLUMN verify TEXT;
             ALTER TABLE tasks ADD COLUMN verify_status TEXT;",
        );
    }
    if from < 5 {
        sql.push_str(
            "DROP INDEX IF EXISTS tasks_owner_id;
             DROP INDEX IF EXISTS tasks_type_id;
             DROP INDEX IF EXISTS tasks_submitted_at;
             INSERT OR REPLACE INTO task_keys (id, owner, task_type, submitted_at)
                 SELECT id, owner, task_type, submitted_at FROM tasks;
             INSERT OR REPLACE INTO meta (key, value)
                 SELECT 'keyed_upto', coalesce(max(id), 0) FROM tasks;",
        );
    }
    sql.push_str(&format!(
        "UPDATE meta SET value = {SCHEMA_VERSION} WHERE key = 'schema'; COMMIT;"
    ));
    conn.execute_batch(&sql)
}

/// The rows of a two-text-column query, in order.
fn pairs(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(sql)?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        let next: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'next_task_id'", [], |r| r.get(0))
            .optional()?;
        let mut tasks = load_tasks(&self.conn)?;
        let mut attempts = load_attempts(&self.conn)?;
        let mut replicas = verify::load_replicas(&self.conn, None)?;
        for task in &mut tasks {
            task.attempts = attempts.remove(&task.task.id).unwrap_or_default();
            task.replicas = replicas.remove(&task.task.id).unwrap_or_default();
        }
        let max = tasks.iter().map(|t| t.task.id + 1).max().unwrap_or(1);
        let next_task_id = max.max(next.map_or(1, |n| n as u64));
        self.next_task_id = next.map_or(0, |n| n as u64);
        let approvals =
            pairs(&self.conn, "SELECT peer_id, credential_sha256 FROM approvals ORDER BY peer_id")?;
        let join_secrets =
            pairs(&self.conn, "SELECT kind, secret FROM join_secrets ORDER BY kind")?;
        let reputation = verify::load_reputation(&self.conn)?;
        Ok(Loaded { tasks, approvals, join_secrets, reputation, next_task_id })
    }

    fn write(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        self.write_applying(ops, None)
    }

    fn upkeep_due(&self) -> bool {
        self.wal_pages.load(Ordering::Relaxed) >= CHECKPOINT_PAGES || self.unkeyed >= UNKEYED_TASKS
    }

    /// Copies the read keys of the tasks inserted since the last copy into
    /// `task_keys`, then, when the log is past its bound, a passive
    /// checkpoint: copies what it can of the log into the database without
    /// waiting for readers (the log starts over at the next commit once all
    /// of it was copied).
    fn upkeep(&mut self) -> Result<(), StoreError> {
        if self.unkeyed > 0 {
            let from = self.keyed_upto as i64;
            let upto = in_transaction(&self.conn, |tx| {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO task_keys (id, owner, task_type, submitted_at)
                     SELECT id, owner, task_type, submitted_at FROM tasks WHERE id > ?1",
                )?
                .execute([from])?;
                let upto: i64 = tx
                    .prepare_cached("SELECT coalesce(max(id), ?1) FROM tasks")?
                    .query_row([from], |r| r.get(0))?;
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('keyed_upto', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([upto])?;
                Ok(upto)
            })?;
            self.keyed_upto = upto as u64;
            self.unkeyed = 0;
        }
        if self.wal_pages.load(Ordering::Relaxed) >= CHECKPOINT_PAGES {
            self.wal_pages.store(0, Ordering::Relaxed);
            self.conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE)?;
        }
        Ok(())
    }
}

/// Runs `f` in a transaction begun and committed with cached statements
/// (rusqlite's `Transaction` parses `BEGIN` and `COMMIT` anew each time: a
/// few percent of the coordinator's CPU when each commit holds one task's
/// ops), rolled back if `f` or the commit fails.
fn in_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let done = f(conn).and_then(|v| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(v)
    });
    if done.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// The highest task id whose read keys are in `task_keys` (0 before any
/// were copied).
pub(crate) fn keyed_upto(conn: &Connection) -> Result<i64, StoreError> {
    let upto: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'keyed_upto'", [], |r| r.get(0))
        .optional()?;
    Ok(upto.unwrap_or(0))
}

/// The read keys of task `t` (see `task_keys` in the schema).
fn write_keys(tx: &Connection, t: &NewTask) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO task_keys (id, owner, task_type, submitted_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![t.id as i64, t.owner, t.task_type, t.submitted_at_ms])?;
    Ok(())
}

/// A folded task's rows, written whole (it began with its insert, which
/// starts its replicas' results over).
fn write_folded(tx: &Connection, f: &crate::fold::Folded) -> Result<(), StoreError> {
    let (s, t) = (&f.task, &f.task.task);
    let (code, msg) = split(&s.error);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO tasks (id, owner, client_task_id, task_type, payload, priority,
         req_model, req_gpu, req_min_vram_mb, run_timeout_ms, queue_timeout_ms, max_attempts,
         idempotency_key, submitted_at, state, attempt, failures, peer, started_at, finished_at,
         result, error_code, error_message, delivered, peer_task_id, options, verify, verify_status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
         ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
    )?
    .execute(params![
        t.id as i64,
        t.owner,
        t.client_task_id,
        t.task_type,
        t.payload,
        t.priority,
        t.req_model,
        t.req_gpu,
        t.req_min_vram_mb.map(|v| v as i64),
        t.run_timeout_ms.map(|v| v as i64),
        t.queue_timeout_ms as i64,
        t.max_attempts,
        t.idempotency_key,
        t.submitted_at_ms,
        s.state.as_str(),
        s.attempt,
        s.failures,
        s.peer,
        s.started_at_ms,
        s.finished_at_ms,
        s.result,
        code,
        msg,
        s.delivered,
        t.peer_task_id,
        t.options,
        t.verify,
        s.verify_status.map(crate::VerifyStatus::as_str),
    ])?;
    tx.prepare_cached("DELETE FROM replicas WHERE task_id = ?1")?.execute([t.id as i64])?;
    for a in f.attempts.values() {
        let (code, msg) = split(&a.error);
        tx.prepare_cached(
            "INSERT OR REPLACE INTO attempts (task_id, attempt, peer, assigned_at, ended_at,
             end_reason, error_code, error_message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            t.id as i64,
            a.attempt,
            a.peer,
            a.assigned_at_ms,
            a.ended_at_ms,
            a.end.map(AttemptEnd::as_str),
            code,
            msg
        ])?;
    }
    Ok(())
}

fn apply(tx: &Connection, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::Insert(t) => write_folded(tx, &crate::fold::Folded::inserted(t))?,
        Op::Assigned { id, attempt, peer, at_ms } => {
            tx.prepare_cached("UPDATE tasks SET state = 'assigned', attempt = ?2, peer = ?3, started_at = NULL WHERE id = ?1")?
                .execute(params![*id as i64, attempt, peer])?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO attempts (task_id, attempt, peer, assigned_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![*id as i64, attempt, peer, at_ms])?;
        }
        Op::Started { id, attempt, at_ms } => {
            tx.prepare_cached("UPDATE tasks SET state = 'running', started_at = ?3 WHERE id = ?1 AND attempt = ?2")?
                .execute(params![*id as i64, attempt, at_ms])?;
        }
        Op::Reclaimed { id, attempt, peer, failures } => {
            tx.prepare_cached(
                "UPDATE tasks SET state = 'assigned', attempt = ?2, peer = ?3, failures = ?4 WHERE id = ?1",
            )?
            .execute(params![*id as i64, attempt, peer, failures])?;
            tx.prepare_cached(
                "UPDATE attempts SET ended_at = NULL, end_reason = NULL, error_code = NULL, error_message = NULL
                 WHERE task_id = ?1 AND attempt = ?2",
            )?
            .execute(params![*id as i64, attempt])?;
        }
        Op::Requeued { id, attempt, end, failures, error, at_ms } => {
            let (code, msg) = split(error);
            tx.prepare_cached(
                "UPDATE tasks SET state = 'queued', peer = NULL, started_at = NULL, failures = ?2,
                 error_code = coalesce(?3, error_code), error_message = coalesce(?4, error_message) WHERE id = ?1",
            )?
            .execute(params![*id as i64, failures, code, msg])?;
            end_attempt(tx, *id, *attempt, *end, error.as_ref(), *at_ms)?;
        }
        Op::Finished { id, state, result, error, end, at_ms, delivered, failures } => {
            let (code, msg) = split(error);
            tx.prepare_cached(
                "UPDATE tasks SET state = ?2, result = ?3, error_code = coalesce(?4, error_code),
                 error_message = coalesce(?5, error_message), finished_at = ?6, delivered = ?7, peer = NULL,
                 failures = ?8 WHERE id = ?1",
            )?
            .execute(params![
                *id as i64,
                state.as_str(),
                result,
                code,
                msg,
                at_ms,
                delivered,
                failures
            ])?;
            if let Some((attempt, how)) = end {
                end_attempt(tx, *id, *attempt, *how, error.as_ref(), *at_ms)?;
            }
        }
        Op::Retried { id, peer_task_id } => {
            tx.prepare_cached(
                "UPDATE tasks SET state = 'queued', peer = NULL, started_at = NULL, finished_at = NULL,
                 result = NULL, failures = 0, delivered = 0, peer_task_id = ?2 WHERE id = ?1",
            )?
            .execute(params![*id as i64, peer_task_id])?;
        }
        Op::Delivered { id, delivered } => {
            tx.prepare_cached("UPDATE tasks SET delivered = ?2 WHERE id = ?1")?
                .execute(params![*id as i64, delivered])?;
        }
        Op::Stale { id, attempt, peer, at_ms } => {
            // Recorded in the attempt's history when it has one.
            tx.prepare_cached(
                "UPDATE attempts SET end_reason = coalesce(end_reason, 'stale'), ended_at = coalesce(ended_at, ?4)
                 WHERE task_id = ?1 AND attempt = ?2 AND peer = ?3",
            )?
            .execute(params![*id as i64, attempt, peer, at_ms])?;
        }
        Op::Approved { peer_id, credential_sha256, at_ms } => {
            tx.prepare_cached(
                "INSERT INTO approvals (peer_id, credential_sha256, approved_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer_id) DO UPDATE SET credential_sha256 = excluded.credential_sha256,
                 approved_at = excluded.approved_at",
            )?
            .execute(params![peer_id, credential_sha256, at_ms])?;
        }
        Op::JoinSecret { kind, secret, at_ms } => {
            tx.prepare_cached(
                "INSERT INTO join_secrets (kind, secret, rotated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind) DO UPDATE SET secret = excluded.secret,
                 rotated_at = excluded.rotated_at",
            )?
            .execute(params![kind, secret, at_ms])?;
        }
        Op::Deleted { ids } => {
            let mut task = tx.prepare_cached("DELETE FROM tasks WHERE id = ?1")?;
            let mut attempts = tx.prepare_cached("DELETE FROM attempts WHERE task_id = ?1")?;
            let mut replicas = tx.prepare_cached("DELETE FROM replicas WHERE task_id = ?1")?;
            for id in ids {
                task.execute([*id as i64])?;
                attempts.execute([*id as i64])?;
                replicas.execute([*id as i64])?;
            }
        }
        Op::Verified { id, status, replicas } => verify::verified(tx, *id, *status, replicas)?,
        Op::Reputation(r) => verify::reputation(tx, r)?,
        Op::IdsUsed { .. } => {} // Folded into `next_task_id` by `write`.
    }
    Ok(())
}

fn end_attempt(
    tx: &Connection,
    id: u64,
    attempt: u32,
    end: AttemptEnd,
    error: Option<&ErrorRow>,
    at_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE attempts SET ended_at = ?3, end_reason = ?4, error_code = ?5, error_message = ?6
         WHERE task_id = ?1 AND attempt = ?2",
    )?
    .execute(params![
        id as i64,
        attempt,
        at_ms,
        end.as_str(),
        error.map(|e| e.code.as_str()),
        error.map(|e| e.message.as_str())
    ])?;
    Ok(())
}

pub(crate) fn split(error: &Option<ErrorRow>) -> (Option<&str>, Option<&str>) {
    match error {
        Some(e) => (Some(e.code.as_str()), Some(e.message.as_str())),
        None => (None, None),
    }
}

fn load_tasks(conn: &Connection) -> Result<Vec<StoredTask>, StoreError> {
    let mut stmt =
        conn.prepare(&format!("SELECT {} FROM tasks ORDER BY id", crate::read::TASK_COLUMNS))?;
    let rows = stmt.query_map([], task_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A task from the columns of [`crate::read::TASK_COLUMNS`] (no attempts).
pub(crate) fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredTask> {
    let id = r.get::<_, i64>(0)? as u64;
    let task = NewTask {
        id,
        owner: r.get(1)?,
        client_task_id: r.get(2)?,
        peer_task_id: r.get::<_, Option<String>>(24)?.unwrap_or_else(|| format!("t-{id}")),
        options: r.get(25)?,
        task_type: r.get(3)?,
        payload: r.get(4)?,
        priority: r.get(5)?,
        req_model: r.get(6)?,
        req_gpu: r.get(7)?,
        req_min_vram_mb: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        run_timeout_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        queue_timeout_ms: r.get::<_, i64>(10)? as u64,
        max_attempts: r.get(11)?,
        idempotency_key: r.get(12)?,
        submitted_at_ms: r.get(13)?,
        verify: r.get(26)?,
    };
    Ok(StoredTask {
        task,
        state: typed(r, 14, id)?,
        attempt: r.get(15)?,
        failures: r.get(16)?,
        peer: r.get(17)?,
        started_at_ms: r.get(18)?,
        finished_at_ms: r.get(19)?,
        result: r.get(20)?,
        error: error_row(r.get(21)?, r.get(22)?),
        delivered: r.get(23)?,
        attempts: Vec::new(),
        verify_status: match r.get::<_, Option<String>>(27)? {
            Some(s) => Some(s.parse().map_err(|e| corrupt(27, id, e))?),
            None => None,
        },
        replicas: Vec::new(),
    })
}

pub(crate) fn error_row(code: Option<String>, message: Option<String>) -> Option<ErrorRow> {
    code.map(|code| ErrorRow { code: code.into(), message: message.unwrap_or_default() })
}

/// The columns attempts are read with, in [`attempt_row`]'s order.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "task_id, attempt, peer, assigned_at, ended_at, end_reason, error_code, error_message";

/// An attempt and its task's id.
pub(crate) fn attempt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(u64, StoredAttempt)> {
    let id = r.get::<_, i64>(0)? as u64;
    let end = match r.get::<_, Option<String>>(5)? {
        Some(e) => Some(e.parse().map_err(|e| corrupt(5, id, e))?),
        None => None,
    };
    let attempt = StoredAttempt {
        attempt: r.get(1)?,
        peer: r.get(2)?,
        assigned_at_ms: r.get(3)?,
        ended_at_ms: r.get(4)?,
        end,
        error: error_row(r.get(6)?, r.get(7)?),
    };
    Ok((id, attempt))
}

/// Reads column `idx` of task `id` as a code of a closed set; a name this
/// build does not know is an error naming the task, never a default.
fn typed<T>(r: &rusqlite::Row<'_>, idx: usize, id: u64) -> rusqlite::Result<T>
where
    T: std::str::FromStr<Err = codes::UnknownCode>,
{
    let text: String = r.get(idx)?;
    text.parse().map_err(|e| corrupt(idx, id, e))
}

pub(crate) fn corrupt(idx: usize, id: u64, e: codes::UnknownCode) -> rusqlite::Error {
    let what = StoreError::Corrupt(format!("task {id}: {e}"));
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(what))
}

fn load_attempts(
    conn: &Connection,
) -> Result<std::collections::BTreeMap<u64, Vec<StoredAttempt>>, StoreError> {
    let mut stmt =
        conn.prepare(&format!("SELECT {ATTEMPT_COLUMNS} FROM attempts ORDER BY task_id, attempt"))?;
    let rows = stmt.query_map([], attempt_row)?;
    let mut out: std::collections::BTreeMap<u64, Vec<StoredAttempt>> = Default::default();
    for row in rows {
        let (id, attempt) = row?;
        out.entry(id).or_default().push(attempt);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::TaskState;

    /// A task with every column set (for the journal's tests too).
    pub(crate) fn task(id: u64) -> NewTask {
        NewTask {
            id,
            owner: "gamer:g1".into(),
            client_task_id: format!("c{id}"),
            peer_task_id: format!("c{id}"),
            options: None,
            task_type: "echo".into(),
            payload: r#"{"x": 1}"#.into(),
            priority: 2,
            req_model: Some("resnet50".into()),
            req_gpu: true,
            req_min_vram_mb: Some(4096),
            run_timeout_ms: Some(30_000),
            queue_timeout_ms: 3_600_000,
            max_attempts: 3,
            idempotency_key: Some(format!("k{id}")),
            submitted_at_ms: 1_700_000_000_000,
            verify: None,
        }
    }

    #[test]
    fn the_log_is_checkpointed_as_upkeep_not_by_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        assert!(!store.upkeep_due());
        // About 1 600 pages of log in one commit: past the bound, and left
        // there (SQLite's automatic checkpoint would have copied it).
        let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(10_000));
        let ops: Vec<Op> =
            (1..=600).map(|id| Op::Insert(NewTask { payload: big.clone(), ..task(id) })).collect();
        store.write(&ops).unwrap();
        assert!(store.upkeep_due());
        store.upkeep().unwrap();
        assert!(!store.upkeep_due());
        // Everything was copied: the log starts over at the next commit.
        store.write(&[Op::Delivered { id: 1, delivered: true }]).unwrap();
        assert!(!store.upkeep_due());
        assert_eq!(store.load().unwrap().tasks.len(), 600);
    }

    fn err(code: &str) -> Option<ErrorRow> {
        Some(ErrorRow { code: code.into(), message: "boom".into() })
    }

    #[test]
    fn a_task_life_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        store
            .write(&[
                Op::Insert(task(1)),
                Op::Insert(task(2)),
                Op::Insert(task(3)),
                Op::Assigned { id: 1, attempt: 1, peer: "p1".into(), at_ms: 10 },
                Op::Requeued {
                    id: 1,
                    attempt: 1,
                    end: AttemptEnd::PeerLost,
                    failures: 1,
                    error: err("peer_lost"),
                    at_ms: 20,
                },
                Op::Assigned { id: 1, attempt: 2, peer: "p2".into(), at_ms: 30 },
                Op::Started { id: 1, attempt: 2, at_ms: 31 },
                Op::Finished {
                    id: 1,
                    state: TaskState::Completed,
                    result: Some("[1]".into()),
                    error: None,
                    end: Some((2, AttemptEnd::Completed)),
                    at_ms: 40,
                    delivered: false,
                    failures: 1,
                },
                Op::Delivered { id: 1, delivered: true },
                Op::Assigned { id: 2, attempt: 1, peer: "p1".into(), at_ms: 50 },
                Op::Stale { id: 1, attempt: 1, peer: "p1".into(), at_ms: 60 },
            ])
            .unwrap();
        drop(store);
        let mut store = SqliteStore::open(dir.path(), Sync::Full).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.next_task_id, 4);
        let [t1, t2, t3] = &loaded.tasks[..] else { panic!("{loaded:?}") };
        assert_eq!(t1.task, task(1));
        assert_eq!((t1.state, t1.attempt, t1.failures), (TaskState::Completed, 2, 1));
        assert_eq!(
            (t1.result.as_deref(), t1.delivered, t1.finished_at_ms),
            (Some("[1]"), true, Some(40))
        );
        assert_eq!(t1.error, err("peer_lost"));
        assert_eq!(t1.attempts.len(), 2);
        assert_eq!(t1.attempts[0].end, Some(AttemptEnd::PeerLost));
        assert_eq!(t1.attempts[1].end, Some(AttemptEnd::Completed));
        assert_eq!(
            (t2.state, t2.peer.as_deref(), t2.attempt),
            (TaskState::Assigned, Some("p1"), 1)
        );
        assert_eq!(t3.state, TaskState::Queued);
    }

    #[test]
    fn ids_are_never_reused_after_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        store.write(&[Op::Insert(task(7))]).unwrap();
        store.write(&[Op::Deleted { ids: vec![7] }]).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.tasks.is_empty());
        assert_eq!(loaded.next_task_id, 8);
    }

    #[test]
    fn a_failed_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        store.conn.execute_batch("CREATE TRIGGER boom BEFORE INSERT ON tasks WHEN NEW.id = 2 BEGIN SELECT RAISE(ABORT, 'boom'); END;").unwrap();
        assert!(store.write(&[Op::Insert(task(1)), Op::Insert(task(2))]).is_err());
        assert!(store.load().unwrap().tasks.is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path(), Sync::Normal).unwrap());
        let conn = Connection::open(dir.path().join("tasks.db")).unwrap();
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'", []).unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path(), Sync::Normal).unwrap_err();
        assert!(err.to_string().contains("newer version"), "{err}");
    }

    #[test]
    fn a_row_with_an_unknown_state_is_refused_naming_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        store.write(&[Op::Insert(task(1)), Op::Insert(task(2))]).unwrap();
        store.conn.execute("UPDATE tasks SET state = 'exploded' WHERE id = 2", []).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("task 2") && err.contains("unknown task state `exploded`"), "{err}");
        store.conn.execute("UPDATE tasks SET state = 'queued' WHERE id = 2", []).unwrap();
        store.write(&[Op::Assigned { id: 1, attempt: 1, peer: "p".into(), at_ms: 1 }]).unwrap();
        store.conn.execute("UPDATE attempts SET end_reason = 'vanished'", []).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("unknown attempt end `vanished`"), "{err}");
    }

    #[test]
    fn a_version_1_store_is_migrated_and_its_peers_keep_the_cluster_ids() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
            store.write(&[Op::Insert(task(5))]).unwrap();
            store
                .conn
                .execute_batch(
                    "ALTER TABLE tasks DROP COLUMN peer_task_id;
                     ALTER TABLE tasks DROP COLUMN options;
                     ALTER TABLE tasks DROP COLUMN verify;
                     ALTER TABLE tasks DROP COLUMN verify_status;
                     UPDATE meta SET value = 1 WHERE key = 'schema';",
                )
                .unwrap();
        }
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.tasks[0].task.peer_task_id, "t-5");
        let version: i64 = store
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_3_store_gains_the_verification_columns_and_keeps_its_tasks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
            store.write(&[Op::Insert(task(3))]).unwrap();
            store
                .conn
                .execute_batch(
                    "ALTER TABLE tasks DROP COLUMN verify;
                     ALTER TABLE tasks DROP COLUMN verify_status;
                     DROP TABLE replicas; DROP TABLE reputation;
                     UPDATE meta SET value = 3 WHERE key = 'schema';",
                )
                .unwrap();
        }
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        let mut t = task(4);
        t.verify = Some("2/2".into());
        store.write(&[Op::Insert(t.clone())]).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.tasks[0].task, task(3));
        assert_eq!(loaded.tasks[1].task, t);
        assert!(loaded.reputation.is_empty());
    }

    fn index_names(store: &SqliteStore) -> Vec<String> {
        let mut stmt = store
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        let mut names: Vec<String> = names.map(Result::unwrap).collect();
        names.sort();
        names
    }

    fn keyed_ids(store: &SqliteStore) -> Vec<u64> {
        let mut stmt = store.conn.prepare("SELECT id FROM task_keys ORDER BY id").unwrap();
        let ids = stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap();
        ids.map(|id| id.unwrap() as u64).collect()
    }

    #[test]
    fn a_version_4_store_moves_its_read_indexes_to_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
            store.write(&[Op::Insert(task(1)), Op::Insert(task(2))]).unwrap();
            store
                .conn
                .execute_batch(
                    "DROP TABLE task_keys;
                     DELETE FROM meta WHERE key = 'keyed_upto';
                     CREATE INDEX tasks_owner_id ON tasks (owner, id);
                     CREATE INDEX tasks_type_id ON tasks (task_type, id);
                     CREATE INDEX tasks_submitted_at ON tasks (submitted_at);
                     UPDATE meta SET value = 4 WHERE key = 'schema';",
                )
                .unwrap();
        }
        let store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        assert_eq!(
            index_names(&store),
            [
                "attempts_peer_task",
                "task_keys_owner_id",
                "task_keys_submitted_at",
                "task_keys_type_id"
            ]
        );
        assert_eq!(keyed_ids(&store), [1, 2]);
        assert_eq!((store.keyed_upto, store.unkeyed), (2, 0));
        assert!(!store.upkeep_due());
    }

    #[test]
    fn read_keys_are_copied_as_upkeep_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        let n = UNKEYED_TASKS;
        let ops: Vec<Op> = (1..n).map(|id| Op::Insert(task(id))).collect();
        store.write(&ops).unwrap();
        // No commit writes them; nothing is due below the batch.
        assert!(keyed_ids(&store).is_empty());
        assert!(!store.upkeep_due());
        store.write(&[Op::Insert(task(n))]).unwrap();
        assert!(store.upkeep_due());
        store.upkeep().unwrap();
        assert!(!store.upkeep_due());
        assert_eq!(keyed_ids(&store), (1..=n).collect::<Vec<_>>());
        // A reopened store knows where the copy stopped, and what is left.
        store.write(&[Op::Insert(task(n + 1))]).unwrap();
        drop(store);
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        assert_eq!((store.keyed_upto, store.unkeyed), (n, 1));
        // An id at or below the copied ones gets its keys at once; a
        // deleted task loses them.
        store.write(&[Op::Deleted { ids: vec![5] }]).unwrap();
        store.write(&[Op::Insert(task(5))]).unwrap();
        store.write(&[Op::Deleted { ids: vec![6] }]).unwrap();
        let keyed = keyed_ids(&store);
        assert!(keyed.contains(&5) && !keyed.contains(&6) && !keyed.contains(&(n + 1)));
        store.upkeep().unwrap();
        assert_eq!(keyed_ids(&store).last(), Some(&(n + 1)));
    }

    #[test]
    fn keys_a_previous_run_left_uncopied_are_copied_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
            let ops: Vec<Op> = (1..=UNKEYED_TASKS).map(|id| Op::Insert(task(id))).collect();
            store.write(&ops).unwrap();
            assert!(store.upkeep_due());
        }
        let store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        assert_eq!((store.keyed_upto, store.unkeyed), (UNKEYED_TASKS, 0));
        assert_eq!(keyed_ids(&store), (1..=UNKEYED_TASKS).collect::<Vec<_>>());
    }

    #[test]
    fn approvals_survive_a_reopen_and_the_last_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
            let approve = |peer: &str, hash: &str| Op::Approved {
                peer_id: peer.into(),
                credential_sha256: hash.into(),
                at_ms: 1,
            };
            store.write(&[approve("w1", "aa"), approve("w2", "bb"), approve("w1", "cc")]).unwrap();
        }
        let mut store = SqliteStore::open(dir.path(), Sync::Normal).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.approvals, vec![("w1".into(), "cc".into()), ("w2".into(), "bb".into())]);
    }

    #[test]
    fn an_empty_database_file_is_refused_not_taken_for_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tasks.db"), b"").unwrap();
        let err = SqliteStore::open(dir.path(), Sync::Normal).unwrap_err().to_string();
        assert!(err.contains("tasks.db") && err.contains("empty"), "{err}");
    }

    #[test]
    fn a_store_directory_that_is_a_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = SqliteStore::open(&file, Sync::Normal).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
}
