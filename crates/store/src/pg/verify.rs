//! The verification rows of a batch: replicas' results with their task's
//! verdict (per task, dealt into rounds like any task op, so that a
//! `Deleted` later in the batch still comes after them) and reputations
//! (the last of each subject in the batch wins).

use std::collections::BTreeMap;

use tokio_postgres::types::ToSql;

use super::batch::{error_cols, text};
use crate::{ReputationRow, StoredReplica, VerifyStatus};

pub(super) const VERIFIED: &str = "
WITH t AS (
    UPDATE tasks t SET verify_status = u.status
    FROM unnest($1::bigint[], $2::text[]) AS u (id, status) WHERE t.id = u.id
)
INSERT INTO replicas (task_id, replica, replica_id, peer, attempts, result, error_code,
    error_message, verdict)
SELECT * FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[],
    $8::text[], $9::text[], $10::text[], $11::text[])
ON CONFLICT (task_id, replica) DO UPDATE SET replica_id = excluded.replica_id,
    peer = excluded.peer, attempts = excluded.attempts, result = excluded.result,
    error_code = excluded.error_code, error_message = excluded.error_message,
    verdict = excluded.verdict";

pub(super) const REPUTATION: &str = "
INSERT INTO reputation (subject, valid, invalid, unverified, consecutive_valid, canaries_passed,
    canaries_failed, strikes, quarantined, credential, updated_at)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
    $6::bigint[], $7::bigint[], $8::bigint[], $9::bool[], $10::text[], $11::bigint[])
ON CONFLICT (subject) DO UPDATE SET valid = excluded.valid, invalid = excluded.invalid,
    unverified = excluded.unverified, consecutive_valid = excluded.consecutive_valid,
    canaries_passed = excluded.canaries_passed, canaries_failed = excluded.canaries_failed,
    strikes = excluded.strikes, quarantined = excluded.quarantined,
    credential = excluded.credential, updated_at = excluded.updated_at";

/// `Verified` ops of one round, as columns.
#[derive(Default)]
pub(super) struct Verifieds<'a> {
    id: Vec<i64>,
    status: Vec<&'static str>,
    task_id: Vec<i64>,
    replica: Vec<i64>,
    replica_id: Vec<i64>,
    peer: Vec<Option<&'a str>>,
    attempts: Vec<i64>,
    result: Vec<Option<&'a str>>,
    code: Vec<Option<String>>,
    msg: Vec<Option<String>>,
    verdict: Vec<&'static str>,
}

impl<'a> Verifieds<'a> {
    pub(super) fn push(&mut self, id: u64, status: VerifyStatus, replicas: &'a [StoredReplica]) {
        self.id.push(id as i64);
        self.status.push(status.as_str());
        for r in replicas {
            let (code, msg) = error_cols(r.error.as_ref());
            self.task_id.push(id as i64);
            self.replica.push(i64::from(r.replica));
            self.replica_id.push(r.task_id as i64);
            self.peer.push(r.peer.as_deref());
            self.attempts.push(i64::from(r.attempts));
            self.result.push(r.result.as_deref());
            self.code.push(code);
            self.msg.push(msg);
            self.verdict.push(r.verdict.as_str());
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.id,
            &self.status,
            &self.task_id,
            &self.replica,
            &self.replica_id,
            &self.peer,
            &self.attempts,
            &self.result,
            &self.code,
            &self.msg,
            &self.verdict,
        ]
    }
}

/// The reputations of a batch, the last of each subject, as columns.
#[derive(Default)]
pub(super) struct Reputations {
    subject: Vec<String>,
    counts: [Vec<i64>; 7],
    quarantined: Vec<bool>,
    credential: Vec<Option<String>>,
    updated_at: Vec<i64>,
}

impl Reputations {
    pub(super) fn new(last: &BTreeMap<&str, &ReputationRow>) -> Reputations {
        let mut c = Reputations::default();
        for r in last.values() {
            c.subject.push(text(&r.subject));
            let counts = [
                r.valid as i64,
                r.invalid as i64,
                r.unverified as i64,
                i64::from(r.consecutive_valid),
                r.canaries_passed as i64,
                r.canaries_failed as i64,
                i64::from(r.strikes),
            ];
            for (col, v) in c.counts.iter_mut().zip(counts) {
                col.push(v);
            }
            c.quarantined.push(r.quarantined);
            c.credential.push(r.credential.as_deref().map(text));
            c.updated_at.push(r.updated_at_ms);
        }
        c
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![&self.subject];
        p.extend(self.counts.iter().map(|c| c as &(dyn ToSql + Sync)));
        p.extend([&self.quarantined as &(dyn ToSql + Sync), &self.credential, &self.updated_at]);
        p
    }
}
