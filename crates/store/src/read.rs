//! Reads for the API and the dashboard, apart from the writer: lists of
//! tasks by filter with keyset paging, one task with its attempts, counts.
//!
//! A [`StoreReader`] has connections of its own (a pool: SQLite readers in
//! WAL mode see the last commit without waiting for the writer; PostgreSQL
//! serves them from other sessions), so a page of tasks never waits behind
//! a commit and never walks the coordinator's state. Calls block: from async
//! code, run them with `tokio::task::spawn_blocking`.
//!
//! Both backends build their queries with [`Query`], so that a filter means
//! the same on each.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{StoreError, StoredTask, TaskState};

/// The most tasks one page returns.
pub const MAX_PAGE: u32 = 1_000;

/// Connections a reader keeps at most.
const POOL_SIZE: u32 = 4;
/// How long a read waits for a free connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Which tasks to list. Every field set narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub task_type: Option<String>,
    /// `gamer:<id>` or `api`.
    pub owner: Option<String>,
    /// Tasks any attempt of which went to this peer.
    pub worker: Option<String>,
    /// Submitted at or after (Unix ms).
    pub submitted_from_ms: Option<i64>,
    /// Submitted before (Unix ms).
    pub submitted_to_ms: Option<i64>,
}

/// A page of a list: newest first, `before` the last id of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only ids below this (the cursor); `None` for the first page.
    pub before: Option<u64>,
    /// At most this many (capped at [`MAX_PAGE`]).
    pub limit: u32,
    /// Rows to skip after the cursor (offset paging, for the REST API's
    /// `offset`; keyset paging with `before` is what stays fast deep down).
    pub skip: u32,
}

impl Page {
    /// The first `limit` tasks.
    pub fn first(limit: u32) -> Page {
        Page { before: None, limit, skip: 0 }
    }
}

/// Tasks of one state and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub state: String,
    pub task_type: String,
    pub tasks: u64,
}

/// Reads from a store, on connections apart from its writer's.
pub trait StoreReader: Send + Sync {
    /// The tasks `filter` selects, newest (highest id) first, without their
    /// attempts. The next page starts `before` the last id returned.
    fn tasks(&self, filter: &TaskFilter, page: Page) -> Result<Vec<StoredTask>, StoreError>;

    /// One task with its attempts.
    fn task(&self, id: u64) -> Result<Option<StoredTask>, StoreError>;

    /// How many tasks there are of each state and type.
    fn counts(&self) -> Result<Vec<Count>, StoreError>;

    /// How many tasks `filter` selects (what a bulk action would touch).
    fn count(&self, filter: &TaskFilter) -> Result<u64, StoreError>;
}

/// A query parameter, for either backend.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// The task columns a list or a lookup reads, in the order the backends'
/// row readers expect.
pub(crate) const TASK_COLUMNS: &str = "id, owner, client_task_id, task_type, payload, priority,
    req_model, req_gpu, req_min_vram_mb, run_timeout_ms, queue_timeout_ms, max_attempts,
    idempotency_key, submitted_at, state, attempt, failures, peer, started_at, finished_at, result,
    error_code, error_message, delivered, peer_task_id, options, verify, verify_status";

/// How many columns [`TASK_COLUMNS`] names.
pub(crate) const TASK_COLUMN_COUNT: usize = 28;

/// A list query: SQL with numbered placeholders, and its parameters.
pub(crate) struct Query {
    pub sql: String,
    pub params: Vec<Param>,
}

/// Which rows a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The `tasks` table and its indexes (PostgreSQL, and SQLite when no
    /// filter needs the read keys).
    Tasks,
    /// SQLite: the tasks whose read keys (`task_keys`: owner, type,
    /// submission time, indexed) the writer has copied — every id up to
    /// `keyed_upto` and none above it.
    Keyed,
    /// SQLite: tasks above id `upto`, whose keys are not copied yet: a
    /// bounded tail, scanned by id.
    Tail { upto: i64 },
}

impl Source {
    /// The `FROM` clause and the columns filters test, qualified for it.
    /// Keyed rows join their tasks when `rows` (a list) or a filter on
    /// state needs them; a count by keys alone reads the narrow keys.
    fn tables(self, filter: &TaskFilter, rows: bool) -> (&'static str, Columns) {
        match self {
            Source::Tasks | Source::Tail { .. } => ("tasks", Columns::PLAIN),
            Source::Keyed if rows || filter.state.is_some() => {
                ("task_keys k JOIN tasks t ON t.id = k.id", Columns::KEYED)
            }
            Source::Keyed => ("task_keys k", Columns::KEYED),
        }
    }
}

/// What a filter's conditions name each column it tests.
struct Columns {
    id: &'static str,
    state: &'static str,
    task_type: &'static str,
    owner: &'static str,
    submitted_at: &'static str,
}

impl Columns {
    const PLAIN: Columns = Columns {
        id: "id",
        state: "state",
        task_type: "task_type",
        owner: "owner",
        submitted_at: "submitted_at",
    };
    /// Keys from `task_keys k` (its indexes serve the filter), the rest from
    /// `tasks t`.
    const KEYED: Columns = Columns {
        id: "k.id",
        state: "t.state",
        task_type: "k.task_type",
        owner: "k.owner",
        submitted_at: "k.submitted_at",
    };
}

impl Query {
    /// The list query for `filter` and `page`; `mark(n)` writes the n-th
    /// placeholder (`?n` for SQLite, `$n` for PostgreSQL).
    pub(crate) fn list(filter: &TaskFilter, page: Page, mark: fn(usize) -> String) -> Query {
        Query::list_from(Source::Tasks, filter, page, mark)
    }

    /// The list query for `filter` and `page` over the rows of `source`. A
    /// [`Source::Tail`] takes every row after the cursor (the tail is
    /// short), without limit or offset.
    pub(crate) fn list_from(
        source: Source,
        filter: &TaskFilter,
        page: Page,
        mark: fn(usize) -> String,
    ) -> Query {
        let (filter_sql, mut params) = conditions(source, filter, page.before, mark);
        let (from, cols) = source.tables(filter, true);
        let columns = match source {
            Source::Keyed => qualified_task_columns(),
            Source::Tasks | Source::Tail { .. } => TASK_COLUMNS.to_owned(),
        };
        let mut sql =
            format!("SELECT {columns} FROM {from} {filter_sql} ORDER BY {} DESC", cols.id);
        if !matches!(source, Source::Tail { .. }) {
            params.push(Param::Int(i64::from(page.limit.min(MAX_PAGE))));
            let limit = mark(params.len());
            params.push(Param::Int(i64::from(page.skip)));
            let skip = mark(params.len());
            sql.push_str(&format!(" LIMIT {limit} OFFSET {skip}"));
        }
        Query { sql, params }
    }

    /// The count query for `filter`.
    pub(crate) fn count(filter: &TaskFilter, mark: fn(usize) -> String) -> Query {
        Query::count_from(Source::Tasks, filter, mark)
    }

    /// The count query for `filter` over the rows of `source`.
    pub(crate) fn count_from(
        source: Source,
        filter: &TaskFilter,
        mark: fn(usize) -> String,
    ) -> Query {
        let (filter_sql, params) = conditions(source, filter, None, mark);
        let (from, _) = source.tables(filter, false);
        Query { sql: format!("SELECT count(*) FROM {from} {filter_sql}"), params }
    }
}

/// Whether `filter` tests a column that SQLite indexes only in its read
/// keys (owner, type, submission time).
pub(crate) fn needs_keys(filter: &TaskFilter) -> bool {
    filter.owner.is_some()
        || filter.task_type.is_some()
        || filter.submitted_from_ms.is_some()
        || filter.submitted_to_ms.is_some()
}

/// [`TASK_COLUMNS`], each taken from `tasks t`.
fn qualified_task_columns() -> String {
    TASK_COLUMNS.split(',').map(|c| format!("t.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// The `WHERE` clause `filter` (and a cursor) make over `source`, and its
/// parameters.
fn conditions(
    source: Source,
    filter: &TaskFilter,
    before: Option<u64>,
    mark: fn(usize) -> String,
) -> (String, Vec<Param>) {
    let (_, cols) = source.tables(filter, true);
    let mut conds: Vec<String> = Vec::new();
    let mut params = Vec::new();
    let mut add = |cond: String, p: Param| {
        params.push(p);
        conds.push(cond.replace('#', &mark(params.len())));
    };
    if let Some(s) = &filter.state {
        add(format!("{} = #", cols.state), Param::Text(s.as_str().to_owned()));
    }
    if let Some(t) = &filter.task_type {
        add(format!("{} = #", cols.task_type), Param::Text(t.clone()));
    }
    if let Some(o) = &filter.owner {
        add(format!("{} = #", cols.owner), Param::Text(o.clone()));
    }
    if let Some(w) = &filter.worker {
        add(
            format!("{} IN (SELECT task_id FROM attempts WHERE peer = #)", cols.id),
            Param::Text(w.clone()),
        );
    }
    if let Some(from) = filter.submitted_from_ms {
        add(format!("{} >= #", cols.submitted_at), Param::Int(from));
    }
    if let Some(to) = filter.submitted_to_ms {
        add(format!("{} < #", cols.submitted_at), Param::Int(to));
    }
    if let Some(before) = before {
        add(format!("{} < #", cols.id), Param::Int(i64::try_from(before).unwrap_or(i64::MAX)));
    }
    match source {
        Source::Tasks | Source::Keyed => {}
        Source::Tail { upto } => add(format!("{} > #", cols.id), Param::Int(upto)),
    }
    let sql =
        if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
    (sql, params)
}

/// Counts from `(state, task_type, n)` rows.
pub(crate) fn counts(rows: impl IntoIterator<Item = (String, String, i64)>) -> Vec<Count> {
    let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (state, task_type, n) in rows {
        *out.entry((state, task_type)).or_default() += u64::try_from(n).unwrap_or(0);
    }
    out.into_iter().map(|((state, task_type), tasks)| Count { state, task_type, tasks }).collect()
}

/// A pool of `M`'s connections, sized for a dashboard's reads.
pub(crate) fn pool<M: r2d2::ManageConnection>(manager: M) -> Result<r2d2::Pool<M>, StoreError>
where
    StoreError: From<r2d2::Error>,
{
    Ok(r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(1))
        .connection_timeout(POOL_WAIT)
        .build(manager)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_column_count_is_right() {
        assert_eq!(super::TASK_COLUMNS.split(',').count(), super::TASK_COLUMN_COUNT);
    }

    use super::*;

    #[test]
    fn a_filter_becomes_numbered_conditions_in_order() {
        let filter = TaskFilter {
            state: Some(TaskState::Queued),
            worker: Some("p1".into()),
            submitted_to_ms: Some(9),
            ..TaskFilter::default()
        };
        let q = Query::list(&filter, Page { before: Some(100), limit: 5_000, skip: 0 }, |n| {
            format!("${n}")
        });
        assert!(q.sql.contains("WHERE state = $1 AND id IN (SELECT task_id FROM attempts WHERE peer = $2) AND submitted_at < $3 AND id < $4"), "{}", q.sql);
        assert!(q.sql.ends_with("ORDER BY id DESC LIMIT $5 OFFSET $6"), "{}", q.sql);
        assert_eq!(q.params.get(4), Some(&Param::Int(i64::from(MAX_PAGE))));
        let all = Query::list(&TaskFilter::default(), Page::first(10), |n| format!("?{n}"));
        assert!(!all.sql.contains("WHERE"), "{}", all.sql);
        let count = Query::count(&filter, |n| format!("?{n}"));
        assert_eq!(
            count.sql,
            "SELECT count(*) FROM tasks WHERE state = ?1 AND id IN (SELECT task_id FROM attempts WHERE peer = ?2) AND submitted_at < ?3"
        );
        assert_eq!(count.params.len(), 3);
    }
}
