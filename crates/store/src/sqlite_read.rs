//! [`StoreReader`] on SQLite: read-only connections to the same file. In WAL
//! mode they read the last commit while the writer writes the next.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::read::{self, Count, Page, Param, Query, StoreReader, TaskFilter};
use crate::sqlite::{ATTEMPT_COLUMNS, attempt_row, task_row};
use crate::sqlite_verify::load_replicas;
use crate::{StoreError, StoredTask};

/// How long a read waits on a lock (a checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens read-only connections to `tasks.db` for the pool.
#[derive(Debug)]
struct Manager {
    path: PathBuf,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = StoreError;

    fn connect(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open_err = |source| StoreError::Open { path: self.path.display().to_string(), source };
        let conn = Connection::open_with_flags(&self.path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), StoreError> {
        Ok(conn.execute_batch("SELECT 1")?)
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

/// Reads from the SQLite store in `dir`.
#[derive(Debug)]
pub struct SqliteReader {
    pool: r2d2::Pool<Manager>,
}

impl SqliteReader {
    /// Reads `dir/tasks.db`, which [`crate::SqliteStore::open`] must have
    /// created (it owns the schema).
    pub fn open(dir: &Path) -> Result<SqliteReader, StoreError> {
        Ok(SqliteReader { pool: read::pool(Manager { path: dir.join("tasks.db") })? })
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> StoreError {
        StoreError::Pool(e.to_string())
    }
}

fn sql_value(p: &Param) -> rusqlite::types::Value {
    match p {
        Param::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Param::Int(i) => rusqlite::types::Value::Integer(*i),
    }
}

impl StoreReader for SqliteReader {
    fn tasks(&self, filter: &TaskFilter, page: Page) -> Result<Vec<StoredTask>, StoreError> {
        let q = Query::list(filter, page, |n| format!("?{n}"));
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&q.sql)?;
        let params = rusqlite::params_from_iter(q.params.iter().map(sql_value));
        let rows = stmt.query_map(params, task_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn task(&self, id: u64) -> Result<Option<StoredTask>, StoreError> {
        let conn = self.pool.get()?;
        // One read transaction, so that the task and its attempts agree.
        let tx = conn.unchecked_transaction()?;
        let sql = format!("SELECT {} FROM tasks WHERE id = ?1", read::TASK_COLUMNS);
        let Some(mut task) = tx.query_row(&sql, [id as i64], task_row).optional()? else {
            return Ok(None);
        };
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1 ORDER BY attempt"
        ))?;
        let attempts = stmt.query_map([id as i64], attempt_row)?;
        task.attempts = attempts.map(|a| a.map(|(_, a)| a)).collect::<Result<_, _>>()?;
        task.replicas = load_replicas(&tx, Some(id))?.remove(&id).unwrap_or_default();
        Ok(Some(task))
    }

    fn counts(&self) -> Result<Vec<Count>, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(
            "SELECT state, task_type, count(*) FROM tasks GROUP BY state, task_type",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(read::counts(rows.collect::<Result<Vec<_>, _>>()?))
    }

    fn count(&self, filter: &TaskFilter) -> Result<u64, StoreError> {
        let q = Query::count(filter, |n| format!("?{n}"));
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&q.sql)?;
        let params = rusqlite::params_from_iter(q.params.iter().map(sql_value));
        let n: i64 = stmt.query_row(params, |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
