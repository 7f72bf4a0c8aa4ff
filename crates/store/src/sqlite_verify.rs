//! The SQLite rows of verification: a verified task's replicas with its
//! verdict, and reputations.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use crate::sqlite::{corrupt, error_row, split};
use crate::{ReputationRow, StoreError, StoredReplica, VerifyStatus};

pub(crate) fn verified(
    tx: &Connection,
    id: u64,
    status: VerifyStatus,
    replicas: &[StoredReplica],
) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE tasks SET verify_status = ?2 WHERE id = ?1")?
        .execute(params![id as i64, status.as_str()])?;
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO replicas (task_id, replica, replica_id, peer, attempts, result,
         error_code, error_message, verdict) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for r in replicas {
        let (code, msg) = split(&r.error);
        insert.execute(params![
            id as i64,
            r.replica,
            r.task_id as i64,
            r.peer,
            r.attempts,
            r.result,
            code,
            msg,
            r.verdict.as_str()
        ])?;
    }
    Ok(())
}

pub(crate) fn reputation(tx: &Connection, r: &ReputationRow) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO reputation (subject, valid, invalid, unverified, consecutive_valid,
         canaries_passed, canaries_failed, strikes, quarantined, credential, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (subject) DO UPDATE SET valid = excluded.valid, invalid = excluded.invalid,
         unverified = excluded.unverified, consecutive_valid = excluded.consecutive_valid,
         canaries_passed = excluded.canaries_passed, canaries_failed = excluded.canaries_failed,
         strikes = excluded.strikes, quarantined = excluded.quarantined,
         credential = excluded.credential, updated_at = excluded.updated_at",
    )?
    .execute(params![
        r.subject,
        r.valid as i64,
        r.invalid as i64,
        r.unverified as i64,
        r.consecutive_valid,
        r.canaries_passed as i64,
        r.canaries_failed as i64,
        r.strikes,
        r.quarantined,
        r.credential,
        r.updated_at_ms
    ])?;
    Ok(())
}

/// The replicas kept, by task: every task's, or one's.
pub(crate) fn load_replicas(
    conn: &Connection,
    task: Option<u64>,
) -> Result<BTreeMap<u64, Vec<StoredReplica>>, StoreError> {
    let filter = if task.is_some() { "WHERE task_id = ?1" } else { "WHERE ?1 IS NULL" };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT task_id, replica, replica_id, peer, attempts, result, error_code, error_message,
         verdict FROM replicas {filter} ORDER BY task_id, replica"
    ))?;
    let rows = stmt.query_map([task.map(|t| t as i64)], |r| {
        let id = r.get::<_, i64>(0)? as u64;
        let verdict: String = r.get(8)?;
        let replica = StoredReplica {
            replica: r.get(1)?,
            task_id: r.get::<_, i64>(2)? as u64,
            peer: r.get(3)?,
            attempts: r.get(4)?,
            result: r.get(5)?,
            error: error_row(r.get(6)?, r.get(7)?),
            verdict: verdict.parse().map_err(|e| corrupt(8, id, e))?,
        };
        Ok((id, replica))
    })?;
    let mut out: BTreeMap<u64, Vec<StoredReplica>> = Default::default();
    for row in rows {
        let (id, replica) = row?;
        out.entry(id).or_default().push(replica);
    }
    Ok(out)
}

pub(crate) fn load_reputation(conn: &Connection) -> Result<Vec<ReputationRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT subject, valid, invalid, unverified, consecutive_valid, canaries_passed,
         canaries_failed, strikes, quarantined, credential, updated_at
         FROM reputation ORDER BY subject",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ReputationRow {
            subject: r.get(0)?,
            valid: r.get::<_, i64>(1)? as u64,
            invalid: r.get::<_, i64>(2)? as u64,
            unverified: r.get::<_, i64>(3)? as u64,
            consecutive_valid: r.get(4)?,
            canaries_passed: r.get::<_, i64>(5)? as u64,
            canaries_failed: r.get::<_, i64>(6)? as u64,
            strikes: r.get(7)?,
            quarantined: r.get(8)?,
            credential: r.get(9)?,
            updated_at_ms: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
