//! [`StoreReader`] on SQLite: read-only connections to the same file. In WAL
//! mode they read the last commit while the writer writes the next.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::read::{self, Count, Page, Param, Query, Source, StoreReader, TaskFilter};
use crate::sqlite::{ATTEMPT_COLUMNS, VFS, attempt_row, keyed_upto, open_error, task_row};
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
        let open_err = |source| open_error(self.path.display(), source);
        let conn = Connection::open_with_flags_and_vfs(&self.path, flags, VFS).map_err(open_err)?;
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

/// Runs a list query on `conn`.
fn list(conn: &Connection, q: &Query) -> Result<Vec<StoredTask>, StoreError> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let params = rusqlite::params_from_iter(q.params.iter().map(sql_value));
    let rows = stmt.query_map(params, task_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Runs a count query on `conn`.
fn count(conn: &Connection, q: &Query) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let params = rusqlite::params_from_iter(q.params.iter().map(sql_value));
    let n: i64 = stmt.query_row(params, |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn mark(n: usize) -> String {
    format!("?{n}")
}

impl StoreReader for SqliteReader {
    /// A filter on owner, type or time reads two parts in one transaction:
    /// the tail not yet keyed, scanned, then the keyed tasks through their
    /// indexes; pages run across the two as over one list.
    fn tasks(&self, filter: &TaskFilter, page: Page) -> Result<Vec<StoredTask>, StoreError> {
        let conn = self.pool.get()?;
        if !read::needs_keys(filter) {
            return list(&conn, &Query::list(filter, page, mark));
        }
        let tx = conn.unchecked_transaction()?;
        let upto = keyed_upto(&tx)?;
        let tail = list(&tx, &Query::list_from(Source::Tail { upto }, filter, page, mark))?;
        let (skip, limit) = (page.skip as usize, page.limit.min(read::MAX_PAGE) as usize);
        let tail_len = tail.len();
        let mut out: Vec<StoredTask> = tail.into_iter().skip(skip).take(limit).collect();
        if out.len() < limit {
            let rest = Page {
                before: page.before,
                limit: (limit - out.len()) as u32,
                skip: skip.saturating_sub(tail_len) as u32,
            };
            out.extend(list(&tx, &Query::list_from(Source::Keyed, filter, rest, mark))?);
        }
        Ok(out)
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

    /// Counts the keyed tasks in `task_keys` (narrower than `tasks`, and
    /// indexed) and the tail apart, when the filter tests keys or nothing;
    /// a filter on state or worker alone counts `tasks` by its own means.
    fn count(&self, filter: &TaskFilter) -> Result<u64, StoreError> {
        let conn = self.pool.get()?;
        if !read::needs_keys(filter) && *filter != TaskFilter::default() {
            return count(&conn, &Query::count(filter, mark));
        }
        let tx = conn.unchecked_transaction()?;
        let upto = keyed_upto(&tx)?;
        Ok(count(&tx, &Query::count_from(Source::Tail { upto }, filter, mark))?
            + count(&tx, &Query::count_from(Source::Keyed, filter, mark))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    /// What SQLite plans for `q`: each step's detail, joined.
    fn plan(conn: &Connection, q: &Query) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql)).unwrap();
        let params = rusqlite::params_from_iter(q.params.iter().map(sql_value));
        let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn keyed_reads_use_the_keys_indexes_and_the_tail_its_ids() {
        let dir = tempfile::tempdir().unwrap();
        let _store = SqliteStore::open(dir.path(), crate::Sync::Normal).unwrap();
        let conn = Connection::open(dir.path().join("tasks.db")).unwrap();
        let page = Page::first(50);
        let by = |f: TaskFilter| {
            let keyed = plan(&conn, &Query::list_from(Source::Keyed, &f, page, mark));
            let tail = plan(&conn, &Query::list_from(Source::Tail { upto: 9 }, &f, page, mark));
            (keyed, tail)
        };
        let owner = TaskFilter { owner: Some("api".into()), ..TaskFilter::default() };
        let (keyed, tail) = by(owner.clone());
        assert!(keyed.contains("task_keys_owner_id") && !keyed.contains("TEMP B-TREE"), "{keyed}");
        let deeper = Page { before: Some(5), ..page };
        let keyed = plan(&conn, &Query::list_from(Source::Keyed, &owner, deeper, mark));
        assert!(keyed.contains("task_keys_owner_id") && !keyed.contains("TEMP B-TREE"), "{keyed}");
        assert!(tail.contains("INTEGER PRIMARY KEY (rowid>?)"), "{tail}");
        let typed = TaskFilter { task_type: Some("echo".into()), ..TaskFilter::default() };
        assert!(by(typed).0.contains("task_keys_type_id"));
    }
}
