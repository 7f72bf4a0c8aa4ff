//! Reading everything back at start, in one consistent snapshot: the same
//! [`Loaded`] the SQLite backend returns for the same ops.

use std::collections::BTreeMap;

use tokio_postgres::{Client, Row};

use crate::{
    ErrorRow, Loaded, NewTask, ReputationRow, StoreError, StoredAttempt, StoredReplica, StoredTask,
};

pub(super) async fn load(c: &mut Client) -> Result<Loaded, StoreError> {
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let next: Option<i64> = tx
        .query_opt("SELECT value FROM meta WHERE key = 'next_task_id'", &[])
        .await?
        .map(|r| r.get(0));
    let all = format!("SELECT {} FROM tasks ORDER BY id", crate::read::TASK_COLUMNS);
    let tasks = tx.query(&all, &[]).await?;
    let attempts = tx
        .query(
            "SELECT task_id, attempt, peer, assigned_at, ended_at, end_reason, error_code, error_message
             FROM attempts ORDER BY task_id, attempt",
            &[],
        )
        .await?;
    let replicas = tx.query(&format!("{REPLICAS} ORDER BY task_id, replica"), &[]).await?;
    let reputation = tx.query(&format!("{REPUTATION} ORDER BY subject COLLATE \"C\""), &[]).await?;
    // Byte order, as SQLite sorts: the database's collation may differ.
    let approvals = tx
        .query(
            "SELECT peer_id, credential_sha256 FROM approvals ORDER BY peer_id COLLATE \"C\"",
            &[],
        )
        .await?;
    let join_secrets =
        tx.query("SELECT kind, secret FROM join_secrets ORDER BY kind COLLATE \"C\"", &[]).await?;
    tx.commit().await?;

    let mut by_task: BTreeMap<u64, Vec<StoredAttempt>> = BTreeMap::new();
    for row in &attempts {
        let (id, attempt) = attempt_row(row, 0)?;
        by_task.entry(id).or_default().push(attempt);
    }
    let mut replicas_of: BTreeMap<u64, Vec<StoredReplica>> = BTreeMap::new();
    for row in &replicas {
        let (id, replica) = replica_row(row)?;
        replicas_of.entry(id).or_default().push(replica);
    }
    let mut tasks = tasks.iter().map(task_row).collect::<Result<Vec<_>, _>>()?;
    for task in &mut tasks {
        task.attempts = by_task.remove(&task.task.id).unwrap_or_default();
        task.replicas = replicas_of.remove(&task.task.id).unwrap_or_default();
    }
    let reputation = reputation.iter().map(reputation_row).collect::<Result<_, _>>()?;
    let max = tasks.iter().map(|t| t.task.id + 1).max().unwrap_or(1);
    let next_task_id = max.max(next.map_or(1, |n| n as u64));
    let (approvals, join_secrets) = (pairs(&approvals)?, pairs(&join_secrets)?);
    Ok(Loaded { tasks, approvals, join_secrets, reputation, next_task_id })
}

/// Rows of two text columns, in order.
fn pairs(rows: &[tokio_postgres::Row]) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// The replicas' columns, in [`replica_row`]'s order.
pub(super) const REPLICAS: &str = "SELECT task_id, replica, replica_id, peer, attempts, result,
    error_code, error_message, verdict FROM replicas";

const REPUTATION: &str = "SELECT subject, valid, invalid, unverified, consecutive_valid,
    canaries_passed, canaries_failed, strikes, quarantined, credential, updated_at FROM reputation";

/// A replica and its task's id.
pub(super) fn replica_row(r: &Row) -> Result<(u64, StoredReplica), StoreError> {
    let id = r.try_get::<_, i64>(0)? as u64;
    let verdict: &str = r.try_get(8)?;
    let replica = StoredReplica {
        replica: u32_col(r, 1)?,
        task_id: r.try_get::<_, i64>(2)? as u64,
        peer: r.try_get(3)?,
        attempts: u32_col(r, 4)?,
        result: r.try_get(5)?,
        error: error_row(r.try_get(6)?, r.try_get(7)?),
        verdict: verdict.parse().map_err(|e| StoreError::Corrupt(format!("task {id}: {e}")))?,
    };
    Ok((id, replica))
}

fn reputation_row(r: &Row) -> Result<ReputationRow, StoreError> {
    let count = |i: usize| -> Result<u64, StoreError> { Ok(r.try_get::<_, i64>(i)? as u64) };
    Ok(ReputationRow {
        subject: r.try_get(0)?,
        valid: count(1)?,
        invalid: count(2)?,
        unverified: count(3)?,
        consecutive_valid: u32_col(r, 4)?,
        canaries_passed: count(5)?,
        canaries_failed: count(6)?,
        strikes: u32_col(r, 7)?,
        quarantined: r.try_get(8)?,
        credential: r.try_get(9)?,
        updated_at_ms: r.try_get(10)?,
    })
}

/// A stored `u32` (kept as BIGINT, as SQLite keeps it as INTEGER).
fn u32_col(row: &Row, i: usize) -> Result<u32, tokio_postgres::Error> {
    Ok(row.try_get::<_, i64>(i)? as u32)
}

pub(super) fn error_row(code: Option<String>, message: Option<String>) -> Option<ErrorRow> {
    code.map(|code| ErrorRow { code: code.into(), message: message.unwrap_or_default() })
}

/// Column `i` of task `id` as a code of a closed set: a name this build does
/// not know is refused, never guessed.
fn typed<T>(r: &Row, i: usize, id: u64) -> Result<T, StoreError>
where
    T: std::str::FromStr<Err = codes::UnknownCode>,
{
    let text: &str = r.try_get(i)?;
    text.parse().map_err(|e| StoreError::Corrupt(format!("task {id}: {e}")))
}

/// A task from the columns of [`crate::read::TASK_COLUMNS`] (no attempts).
pub(super) fn task_row(r: &Row) -> Result<StoredTask, StoreError> {
    let id = r.try_get::<_, i64>(0)? as u64;
    let task = NewTask {
        id,
        owner: r.try_get(1)?,
        client_task_id: r.try_get(2)?,
        peer_task_id: r.try_get(24)?,
        options: r.try_get(25)?,
        task_type: r.try_get(3)?,
        payload: r.try_get(4)?,
        priority: r.try_get(5)?,
        req_model: r.try_get(6)?,
        req_gpu: r.try_get(7)?,
        req_min_vram_mb: r.try_get::<_, Option<i64>>(8)?.map(|v| v as u64),
        run_timeout_ms: r.try_get::<_, Option<i64>>(9)?.map(|v| v as u64),
        queue_timeout_ms: r.try_get::<_, i64>(10)? as u64,
        max_attempts: u32_col(r, 11)?,
        idempotency_key: r.try_get(12)?,
        submitted_at_ms: r.try_get(13)?,
        verify: r.try_get(26)?,
    };
    Ok(StoredTask {
        task,
        state: typed(r, 14, id)?,
        attempt: u32_col(r, 15)?,
        failures: u32_col(r, 16)?,
        peer: r.try_get(17)?,
        started_at_ms: r.try_get(18)?,
        finished_at_ms: r.try_get(19)?,
        result: r.try_get(20)?,
        error: error_row(r.try_get(21)?, r.try_get(22)?),
        delivered: r.try_get(23)?,
        attempts: Vec::new(),
        verify_status: match r.try_get::<_, Option<&str>>(27)? {
            Some(s) => Some(s.parse().map_err(|e| StoreError::Corrupt(format!("task {id}: {e}")))?),
            None => None,
        },
        replicas: Vec::new(),
    })
}

/// An attempt from eight columns starting at `at` (task id, attempt, peer,
/// assigned, ended, end, error code, error message).
pub(super) fn attempt_row(r: &Row, at: usize) -> Result<(u64, StoredAttempt), StoreError> {
    let id = r.try_get::<_, i64>(at)? as u64;
    let end = match r.try_get::<_, Option<&str>>(at + 5)? {
        Some(e) => Some(e.parse().map_err(|e| StoreError::Corrupt(format!("task {id}: {e}")))?),
        None => None,
    };
    let attempt = StoredAttempt {
        attempt: u32_col(r, at + 1)?,
        peer: r.try_get(at + 2)?,
        assigned_at_ms: r.try_get(at + 3)?,
        ended_at_ms: r.try_get(at + 4)?,
        end,
        error: error_row(r.try_get(at + 6)?, r.try_get(at + 7)?),
    };
    Ok((id, attempt))
}
