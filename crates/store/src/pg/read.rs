//! [`StoreReader`] on PostgreSQL: a pool of read-only sessions. Each read is
//! one statement sent with its parameter types (no separate prepare), so
//! one round trip, and one snapshot.

use tokio_postgres::types::{ToSql, Type};

use super::Conn;
use super::load::{attempt_row, task_row};
use crate::read::{self, Count, Page, Param, Query, StoreReader, TaskFilter};
use crate::{StoreError, StoredTask};

const SESSION: &str = "SET application_name = 'legacygpu reader';
    SET default_transaction_read_only = on;
    SET statement_timeout = '30s';";

struct Manager {
    url: String,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = StoreError;

    fn connect(&self) -> Result<Conn, StoreError> {
        Conn::connect_plain(&self.url, SESSION)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), StoreError> {
        conn.run(async |c, _| Ok(c.batch_execute("SELECT 1").await?))
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.is_closed()
    }
}

/// Reads from the PostgreSQL store at a URL.
pub struct PostgresReader {
    pool: r2d2::Pool<Manager>,
}

impl std::fmt::Debug for PostgresReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReader").field("state", &self.pool.state()).finish()
    }
}

impl PostgresReader {
    /// Connects to `url`, whose schema a [`crate::PostgresStore`] applied.
    pub fn connect(url: &str) -> Result<PostgresReader, StoreError> {
        Ok(PostgresReader { pool: read::pool(Manager { url: url.to_owned() })? })
    }
}

fn typed(params: &[Param]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(s) => (s as &(dyn ToSql + Sync), Type::TEXT),
            Param::Int(i) => (i as &(dyn ToSql + Sync), Type::INT8),
        })
        .collect()
}

impl StoreReader for PostgresReader {
    fn tasks(&self, filter: &TaskFilter, page: Page) -> Result<Vec<StoredTask>, StoreError> {
        let q = Query::list(filter, page, |n| format!("${n}"));
        self.pool.get()?.run(async |c, _| {
            let rows = c.query_typed(&q.sql, &typed(&q.params)).await?;
            rows.iter().map(task_row).collect::<Result<_, _>>()
        })
    }

    fn task(&self, id: u64) -> Result<Option<StoredTask>, StoreError> {
        // One statement: the task and its attempts from one snapshot.
        let sql = format!(
            "SELECT {}, a.task_id, a.attempt, a.peer, a.assigned_at, a.ended_at, a.end_reason,
             a.error_code, a.error_message
             FROM tasks t LEFT JOIN attempts a ON a.task_id = t.id
             WHERE t.id = $1 ORDER BY a.attempt",
            prefixed(read::TASK_COLUMNS, "t.")
        );
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        self.pool.get()?.run(async |c, _| {
            let rows = c.query_typed(&sql, &[(&id, Type::INT8)]).await?;
            let Some(first) = rows.first() else { return Ok(None) };
            let mut task = task_row(first)?;
            // The attempt's columns follow the task's.
            let at = read::TASK_COLUMN_COUNT;
            for row in &rows {
                if row.try_get::<_, Option<i64>>(at)?.is_some() {
                    task.attempts.push(attempt_row(row, at)?.1);
                }
            }
            let sql = format!("{} WHERE task_id = $1 ORDER BY replica", super::load::REPLICAS);
            for row in c.query_typed(&sql, &[(&id, Type::INT8)]).await? {
                task.replicas.push(super::load::replica_row(&row)?.1);
            }
            Ok(Some(task))
        })
    }

    fn counts(&self) -> Result<Vec<Count>, StoreError> {
        self.pool.get()?.run(async |c, _| {
            let rows = c
                .query_typed("SELECT state, task_type, count(*) FROM tasks GROUP BY 1, 2", &[])
                .await?;
            let rows = rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<(String, String, i64)>, tokio_postgres::Error>>()?;
            Ok(read::counts(rows))
        })
    }

    fn count(&self, filter: &TaskFilter) -> Result<u64, StoreError> {
        let q = Query::count(filter, |n| format!("${n}"));
        self.pool.get()?.run(async |c, _| {
            let row = c.query_typed_one(&q.sql, &typed(&q.params)).await?;
            let n: i64 = row.try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

/// `a, b` with every column named `prefix.a, prefix.b`.
fn prefixed(columns: &str, prefix: &str) -> String {
    columns.split(',').map(|c| format!("{prefix}{}", c.trim())).collect::<Vec<_>>().join(", ")
}
