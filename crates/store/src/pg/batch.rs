//! One write batch as a handful of array statements, sent in one flight.
//!
//! Ops on different tasks touch different rows, so they commute; only the
//! order of each task's own ops matters. [`Plan::new`] takes each task's ops
//! in turn. When they start with its insert they fold into the task's final
//! rows (`fold.rs`), written once. The others are dealt into *rounds*: a
//! task's k-th op in the batch goes into round k. Inside
//! a round a task appears at most once, so each kind of op in the round is
//! one `UPDATE … FROM unnest($1, $2, …)` (or `INSERT … SELECT unnest …`) over
//! arrays, well defined whatever the order of its rows. A typical batch is a
//! few rounds of a few kinds: about ten statements for thousands of ops.
//!
//! [`Plan::execute`] sends `BEGIN`, the fence check, every statement and
//! `COMMIT` at once (tokio-postgres pipelines requests issued together), then
//! reads the answers: one round trip. If any statement fails, PostgreSQL
//! refuses the rest of the transaction and `COMMIT` rolls it back, so the
//! batch is all or nothing even though it was sent before any answer came.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::fold;
use super::verify::{self, Reputations, Verifieds};
use crate::fold::Folded;
use crate::{AttemptEnd, ErrorRow, NewTask, Op, ReputationRow, StoreError, TaskState};

/// The SQLSTATE `legacygpu_fence` raises.
const FENCED: &str = "LGF01";

/// Every statement a batch may use, prepared once per connection.
pub(super) struct Statements {
    fence: Statement,
    insert: Statement,
    assigned: Statement,
    started: Statement,
    reclaimed: Statement,
    requeued: Statement,
    finished: Statement,
    delivered: Statement,
    retried: Statement,
    stale: Statement,
    deleted: Statement,
    approved: Statement,
    join_secret: Statement,
    next_id: Statement,
    folded_tasks: Statement,
    folded_attempts: Statement,
    verified: Statement,
    reputation: Statement,
}

impl Statements {
    pub(super) async fn prepare(c: &Client) -> Result<Statements, StoreError> {
        Ok(Statements {
            fence: c.prepare("SELECT legacygpu_fence($1)").await?,
            insert: c.prepare(INSERT).await?,
            assigned: c.prepare(ASSIGNED).await?,
            started: c.prepare(STARTED).await?,
            reclaimed: c.prepare(RECLAIMED).await?,
            requeued: c.prepare(REQUEUED).await?,
            finished: c.prepare(FINISHED).await?,
            delivered: c.prepare(DELIVERED).await?,
            retried: c.prepare(RETRIED).await?,
            stale: c.prepare(STALE).await?,
            deleted: c.prepare(DELETED).await?,
            approved: c.prepare(APPROVED).await?,
            join_secret: c.prepare(JOIN_SECRET).await?,
            next_id: c.prepare(NEXT_ID).await?,
            folded_tasks: c.prepare(fold::TASKS).await?,
            folded_attempts: c.prepare(fold::ATTEMPTS).await?,
            verified: c.prepare(verify::VERIFIED).await?,
            reputation: c.prepare(verify::REPUTATION).await?,
        })
    }
}

// A replaced task starts over, as SQLite's INSERT OR REPLACE does (its
// replicas' results too).
const INSERT: &str = "
WITH r AS (DELETE FROM replicas WHERE task_id = ANY($1::bigint[]))
INSERT INTO tasks (id, owner, client_task_id, task_type, payload, priority, req_model, req_gpu,
    req_min_vram_mb, run_timeout_ms, queue_timeout_ms, max_attempts, idempotency_key, submitted_at,
    peer_task_id, options, verify, state)
SELECT u.*, 'queued' FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::int[], $7::text[], $8::bool[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
    $13::text[], $14::bigint[], $15::text[], $16::text[], $17::text[]) AS u
ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, client_task_id = excluded.client_task_id,
    peer_task_id = excluded.peer_task_id, options = excluded.options,
    task_type = excluded.task_type, payload = excluded.payload, priority = excluded.priority,
    req_model = excluded.req_model, req_gpu = excluded.req_gpu,
    req_min_vram_mb = excluded.req_min_vram_mb, run_timeout_ms = excluded.run_timeout_ms,
    queue_timeout_ms = excluded.queue_timeout_ms, max_attempts = excluded.max_attempts,
    idempotency_key = excluded.idempotency_key, submitted_at = excluded.submitted_at,
    verify = excluded.verify, state = 'queued', attempt = 0, failures = 0, peer = NULL,
    started_at = NULL, finished_at = NULL, result = NULL, error_code = NULL,
    error_message = NULL, delivered = false, verify_status = NULL";

const ASSIGNED: &str = "
WITH t AS (
    UPDATE tasks t SET state = 'assigned', attempt = u.attempt, peer = u.peer, started_at = NULL
    FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u (id, attempt, peer) WHERE t.id = u.id
)
INSERT INTO attempts (task_id, attempt, peer, assigned_at)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[])
ON CONFLICT (task_id, attempt) DO UPDATE SET peer = excluded.peer,
    assigned_at = excluded.assigned_at, ended_at = NULL, end_reason = NULL, error_code = NULL,
    error_message = NULL";

const STARTED: &str = "
UPDATE tasks t SET state = 'running', started_at = u.at
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u (id, attempt, at)
WHERE t.id = u.id AND t.attempt = u.attempt";

const RECLAIMED: &str = "
WITH t AS (
    UPDATE tasks t SET state = 'assigned', attempt = u.attempt, peer = u.peer, failures = u.failures
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[]) AS u (id, attempt, peer, failures)
    WHERE t.id = u.id
)
UPDATE attempts a SET ended_at = NULL, end_reason = NULL, error_code = NULL, error_message = NULL
FROM unnest($1::bigint[], $2::bigint[]) AS u (id, attempt)
WHERE a.task_id = u.id AND a.attempt = u.attempt";

const REQUEUED: &str = "
WITH t AS (
    UPDATE tasks t SET state = 'queued', peer = NULL, started_at = NULL, failures = u.failures,
        error_code = coalesce(u.code, t.error_code), error_message = coalesce(u.msg, t.error_message)
    FROM unnest($1::bigint[], $4::bigint[], $5::text[], $6::text[]) AS u (id, failures, code, msg)
    WHERE t.id = u.id
)
UPDATE attempts a SET ended_at = u.at, end_reason = u.how, error_code = u.code, error_message = u.msg
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $5::text[], $6::text[], $7::bigint[])
    AS u (id, attempt, how, code, msg, at)
WHERE a.task_id = u.id AND a.attempt = u.attempt";

// $1..$7 and $14: the tasks; $8..$13: the attempts closed (those with an `end`).
const FINISHED: &str = "
WITH t AS (
    UPDATE tasks t SET state = u.state, result = u.result,
        error_code = coalesce(u.code, t.error_code), error_message = coalesce(u.msg, t.error_message),
        finished_at = u.at, delivered = u.delivered, peer = NULL, failures = u.failures
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bool[],
        $14::bigint[]) AS u (id, state, result, code, msg, at, delivered, failures)
    WHERE t.id = u.id
)
UPDATE attempts a SET ended_at = u.at, end_reason = u.how, error_code = u.code, error_message = u.msg
FROM unnest($8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::bigint[])
    AS u (id, attempt, how, code, msg, at)
WHERE a.task_id = u.id AND a.attempt = u.attempt";

const DELIVERED: &str = "
UPDATE tasks t SET delivered = u.delivered
FROM unnest($1::bigint[], $2::bool[]) AS u (id, delivered) WHERE t.id = u.id";

const RETRIED: &str = "
UPDATE tasks t SET state = 'queued', peer = NULL, started_at = NULL, finished_at = NULL,
    result = NULL, failures = 0, delivered = false, peer_task_id = u.wire
FROM unnest($1::bigint[], $2::text[]) AS u (id, wire) WHERE t.id = u.id";

const STALE: &str = "
UPDATE attempts a SET end_reason = coalesce(a.end_reason, 'stale'), ended_at = coalesce(a.ended_at, u.at)
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[]) AS u (id, attempt, peer, at)
WHERE a.task_id = u.id AND a.attempt = u.attempt AND a.peer = u.peer";

const DELETED: &str = "
WITH t AS (DELETE FROM tasks WHERE id = ANY($1::bigint[])),
    r AS (DELETE FROM replicas WHERE task_id = ANY($1::bigint[]))
DELETE FROM attempts WHERE task_id = ANY($1::bigint[])";

const APPROVED: &str = "
INSERT INTO approvals (peer_id, credential_sha256, approved_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (peer_id) DO UPDATE SET credential_sha256 = excluded.credential_sha256,
    approved_at = excluded.approved_at";

const JOIN_SECRET: &str = "
INSERT INTO join_secrets (kind, secret, rotated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (kind) DO UPDATE SET secret = excluded.secret, rotated_at = excluded.rotated_at";

const NEXT_ID: &str = "
INSERT INTO meta (key, value) VALUES ('next_task_id', $1)
ON CONFLICT (key) DO UPDATE SET value = greatest(meta.value, excluded.value)";

/// Text PostgreSQL can store: it refuses NUL in `text`, and failure
/// messages are the one free text a worker sends unchecked. A NUL becomes
/// U+FFFD rather than failing the whole batch (and stopping the writer).
pub(super) fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

pub(super) fn error_cols(e: Option<&ErrorRow>) -> (Option<String>, Option<String>) {
    e.map(|e| (text(e.code.as_str()), text(&e.message))).unzip()
}

#[derive(Default)]
struct Inserts<'a> {
    id: Vec<i64>,
    owner: Vec<&'a str>,
    client_task_id: Vec<&'a str>,
    task_type: Vec<&'a str>,
    payload: Vec<&'a str>,
    priority: Vec<i32>,
    req_model: Vec<Option<&'a str>>,
    req_gpu: Vec<bool>,
    req_min_vram_mb: Vec<Option<i64>>,
    run_timeout_ms: Vec<Option<i64>>,
    queue_timeout_ms: Vec<i64>,
    max_attempts: Vec<i64>,
    idempotency_key: Vec<Option<&'a str>>,
    submitted_at: Vec<i64>,
    peer_task_id: Vec<&'a str>,
    options: Vec<Option<&'a str>>,
    verify: Vec<Option<&'a str>>,
}

impl<'a> Inserts<'a> {
    fn push(&mut self, t: &'a NewTask) {
        self.id.push(t.id as i64);
        self.owner.push(&t.owner);
        self.client_task_id.push(&t.client_task_id);
        self.task_type.push(&t.task_type);
        self.payload.push(&t.payload);
        self.priority.push(t.priority);
        self.req_model.push(t.req_model.as_deref());
        self.req_gpu.push(t.req_gpu);
        self.req_min_vram_mb.push(t.req_min_vram_mb.map(|v| v as i64));
        self.run_timeout_ms.push(t.run_timeout_ms.map(|v| v as i64));
        self.queue_timeout_ms.push(t.queue_timeout_ms as i64);
        self.max_attempts.push(i64::from(t.max_attempts));
        self.idempotency_key.push(t.idempotency_key.as_deref());
        self.submitted_at.push(t.submitted_at_ms);
        self.peer_task_id.push(&t.peer_task_id);
        self.options.push(t.options.as_deref());
        self.verify.push(t.verify.as_deref());
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 17] {
        [
            &self.id,
            &self.owner,
            &self.client_task_id,
            &self.task_type,
            &self.payload,
            &self.priority,
            &self.req_model,
            &self.req_gpu,
            &self.req_min_vram_mb,
            &self.run_timeout_ms,
            &self.queue_timeout_ms,
            &self.max_attempts,
            &self.idempotency_key,
            &self.submitted_at,
            &self.peer_task_id,
            &self.options,
            &self.verify,
        ]
    }
}

/// An attempt that ends: shared by `Requeued` and `Finished`.
#[derive(Default)]
struct Ends {
    id: Vec<i64>,
    attempt: Vec<i64>,
    how: Vec<&'static str>,
    code: Vec<Option<String>>,
    msg: Vec<Option<String>>,
    at: Vec<i64>,
}

impl Ends {
    fn push(&mut self, id: u64, attempt: u32, how: AttemptEnd, e: Option<&ErrorRow>, at: i64) {
        let (code, msg) = error_cols(e);
        self.id.push(id as i64);
        self.attempt.push(i64::from(attempt));
        self.how.push(how.as_str());
        self.code.push(code);
        self.msg.push(msg);
        self.at.push(at);
    }
}

/// A task's share of one round, by kind: columns ready to bind as arrays.
#[derive(Default)]
struct Round<'a> {
    insert: Inserts<'a>,
    /// Assigned: id, attempt, peer, at; reclaimed: id, attempt, peer, failures.
    assigned: (Vec<i64>, Vec<i64>, Vec<&'a str>, Vec<i64>),
    reclaimed: (Vec<i64>, Vec<i64>, Vec<&'a str>, Vec<i64>),
    started: (Vec<i64>, Vec<i64>, Vec<i64>),
    /// The attempt ended, plus the task's new failure count.
    requeued: (Ends, Vec<i64>),
    finished: Finishes<'a>,
    delivered: (Vec<i64>, Vec<bool>),
    retried: (Vec<i64>, Vec<&'a str>),
    stale: (Vec<i64>, Vec<i64>, Vec<&'a str>, Vec<i64>),
    deleted: Vec<i64>,
    verified: Verifieds<'a>,
}

#[derive(Default)]
struct Finishes<'a> {
    id: Vec<i64>,
    state: Vec<&'static str>,
    result: Vec<Option<&'a str>>,
    code: Vec<Option<String>>,
    msg: Vec<Option<String>>,
    at: Vec<i64>,
    delivered: Vec<bool>,
    failures: Vec<i64>,
    ends: Ends,
}

impl<'a> Finishes<'a> {
    fn push(
        &mut self,
        id: u64,
        state: TaskState,
        result: Option<&'a str>,
        error: Option<&ErrorRow>,
        at: i64,
        (delivered, failures): (bool, u32),
    ) {
        let (code, msg) = error_cols(error);
        self.failures.push(i64::from(failures));
        self.id.push(id as i64);
        self.state.push(state.as_str());
        self.result.push(result);
        self.code.push(code);
        self.msg.push(msg);
        self.at.push(at);
        self.delivered.push(delivered);
    }
}

impl<'a> Round<'a> {
    /// Adds `op`'s part for task `id` (a `Deleted` op is dealt per id).
    fn push(&mut self, op: &'a Op, id: u64) {
        let i = id as i64;
        match op {
            Op::Insert(t) => self.insert.push(t),
            Op::Assigned { attempt, peer, at_ms, .. } => {
                let a = &mut self.assigned;
                a.0.push(i);
                a.1.push(i64::from(*attempt));
                a.2.push(peer);
                a.3.push(*at_ms);
            }
            Op::Started { attempt, at_ms, .. } => {
                let s = &mut self.started;
                s.0.push(i);
                s.1.push(i64::from(*attempt));
                s.2.push(*at_ms);
            }
            Op::Reclaimed { attempt, peer, failures, .. } => {
                let r = &mut self.reclaimed;
                r.0.push(i);
                r.1.push(i64::from(*attempt));
                r.2.push(peer);
                r.3.push(i64::from(*failures));
            }
            Op::Requeued { attempt, end, failures, error, at_ms, .. } => {
                self.requeued.0.push(id, *attempt, *end, error.as_ref(), *at_ms);
                self.requeued.1.push(i64::from(*failures));
            }
            Op::Finished { state, result, error, end, at_ms, delivered, failures, .. } => {
                self.finished.push(
                    id,
                    *state,
                    result.as_deref(),
                    error.as_ref(),
                    *at_ms,
                    (*delivered, *failures),
                );
                if let Some((attempt, how)) = end {
                    self.finished.ends.push(id, *attempt, *how, error.as_ref(), *at_ms);
                }
            }
            Op::Delivered { delivered, .. } => {
                self.delivered.0.push(i);
                self.delivered.1.push(*delivered);
            }
            Op::Retried { peer_task_id, .. } => {
                self.retried.0.push(i);
                self.retried.1.push(peer_task_id);
            }
            Op::Stale { attempt, peer, at_ms, .. } => {
                let s = &mut self.stale;
                s.0.push(i);
                s.1.push(i64::from(*attempt));
                s.2.push(peer);
                s.3.push(*at_ms);
            }
            Op::Deleted { .. } => self.deleted.push(i),
            Op::Verified { status, replicas, .. } => self.verified.push(id, *status, replicas),
            // Not a task's op: folded into the plan's approvals, join
            // secrets, reputations and next id.
            Op::Approved { .. }
            | Op::JoinSecret { .. }
            | Op::Reputation(_)
            | Op::IdsUsed { .. } => {}
        }
    }
}

/// A batch: tasks folded into their final rows, the rest dealt into rounds.
pub(super) struct Plan<'a> {
    folded: Vec<Folded>,
    rounds: Vec<Round<'a>>,
    /// The last approval of each peer in the batch (the last one wins).
    approvals: BTreeMap<&'a str, (&'a str, i64)>,
    /// The last secret of each kind of join token in the batch.
    join_secrets: BTreeMap<&'a str, (&'a str, i64)>,
    /// The last reputation of each subject in the batch.
    reputations: BTreeMap<&'a str, &'a ReputationRow>,
    /// One past the highest id inserted.
    next_task_id: Option<i64>,
}

type Pending<'f> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + 'f>>;

impl<'a> Plan<'a> {
    pub(super) fn new(ops: &'a [Op]) -> Plan<'a> {
        let mut per_task: BTreeMap<u64, Vec<&'a Op>> = BTreeMap::new();
        let (mut approvals, mut reputations) = (BTreeMap::new(), BTreeMap::new());
        let mut join_secrets = BTreeMap::new();
        let mut next_task_id = None;
        for op in ops {
            match op {
                Op::Insert(t) => next_task_id = next_task_id.max(Some(t.id as i64 + 1)),
                Op::IdsUsed { next_task_id: next } => {
                    next_task_id = next_task_id.max(Some(*next as i64));
                }
                Op::Reputation(r) => {
                    reputations.insert(r.subject.as_str(), r);
                }
                Op::Approved { peer_id, credential_sha256, at_ms } => {
                    approvals.insert(peer_id.as_str(), (credential_sha256.as_str(), *at_ms));
                }
                Op::JoinSecret { kind, secret, at_ms } => {
                    join_secrets.insert(kind.as_str(), (secret.as_str(), *at_ms));
                }
                _ => {}
            }
            for id in crate::fold::task_ids(op) {
                per_task.entry(*id).or_default().push(op);
            }
        }
        let (mut folded, mut rounds) = (Vec::new(), Vec::<Round<'a>>::new());
        for (id, task_ops) in per_task {
            if let Some(f) = crate::fold::fold(&task_ops) {
                folded.push(f);
                continue;
            }
            for (k, op) in task_ops.into_iter().enumerate() {
                if rounds.len() <= k {
                    rounds.push(Round::default());
                }
                rounds[k].push(op, id);
            }
        }
        Plan { folded, rounds, approvals, join_secrets, reputations, next_task_id }
    }

    /// Writes the batch in one transaction, refused unless the lease is at
    /// `epoch`.
    pub(super) async fn execute(
        &self,
        c: &Client,
        st: &Statements,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let epoch_param = epoch as i64;
        let approvals = columns(&self.approvals);
        let join_secrets = columns(&self.join_secrets);
        let reputations = Reputations::new(&self.reputations);
        let folded = fold::Columns::new(&self.folded);
        let mut flight: Vec<Pending<'_>> = Vec::new();
        flight.push(Box::pin(async { c.batch_execute("BEGIN").await.map(|()| 0) }));
        flight.push(exec(c, &st.fence, vec![&epoch_param]));
        if !folded.is_empty() {
            flight.push(exec(c, &st.folded_tasks, folded.task_params()));
        }
        if let Some(params) = folded.attempt_params() {
            flight.push(exec(c, &st.folded_attempts, params));
        }
        for round in &self.rounds {
            round.statements(c, st, &mut flight);
        }
        if !self.approvals.is_empty() {
            let (peer, hash, at) = &approvals;
            flight.push(exec(c, &st.approved, vec![peer, hash, at]));
        }
        if !self.join_secrets.is_empty() {
            let (kind, secret, at) = &join_secrets;
            flight.push(exec(c, &st.join_secret, vec![kind, secret, at]));
        }
        if !self.reputations.is_empty() {
            flight.push(exec(c, &st.reputation, reputations.params()));
        }
        if let Some(next) = &self.next_task_id {
            flight.push(exec(c, &st.next_id, vec![next]));
        }
        // After a failure this is a ROLLBACK: PostgreSQL ends a failed
        // transaction so, whatever the client says.
        flight.push(Box::pin(async { c.batch_execute("COMMIT").await.map(|()| 0) }));
        match in_order(flight).await.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(e) => Err(fenced(&e, epoch).unwrap_or_else(|| e.into())),
        }
    }
}

/// A map of key to (text, time) as three columns, for `unnest`.
fn columns<'a>(rows: &BTreeMap<&'a str, (&'a str, i64)>) -> (Vec<&'a str>, Vec<&'a str>, Vec<i64>) {
    let mut cols = (Vec::new(), Vec::new(), Vec::new());
    for (key, (text, at)) in rows {
        cols.0.push(*key);
        cols.1.push(*text);
        cols.2.push(*at);
    }
    cols
}

impl Round<'_> {
    /// Queues this round's statements, one per kind present.
    fn statements<'f>(&'f self, c: &'f Client, st: &'f Statements, out: &mut Vec<Pending<'f>>) {
        let mut add = |s: &'f Statement, p: &[&'f (dyn ToSql + Sync)]| {
            out.push(exec(c, s, p.to_vec()));
        };
        if !self.insert.id.is_empty() {
            add(&st.insert, &self.insert.params());
        }
        let a = &self.assigned;
        if !a.0.is_empty() {
            add(&st.assigned, &[&a.0, &a.1, &a.2, &a.3]);
        }
        let r = &self.reclaimed;
        if !r.0.is_empty() {
            add(&st.reclaimed, &[&r.0, &r.1, &r.2, &r.3]);
        }
        let s = &self.started;
        if !s.0.is_empty() {
            add(&st.started, &[&s.0, &s.1, &s.2]);
        }
        let (e, failures) = &self.requeued;
        if !e.id.is_empty() {
            add(&st.requeued, &[&e.id, &e.attempt, &e.how, failures, &e.code, &e.msg, &e.at]);
        }
        let f = &self.finished;
        if !f.id.is_empty() {
            let e = &f.ends;
            add(
                &st.finished,
                &[
                    &f.id,
                    &f.state,
                    &f.result,
                    &f.code,
                    &f.msg,
                    &f.at,
                    &f.delivered,
                    &e.id,
                    &e.attempt,
                    &e.how,
                    &e.code,
                    &e.msg,
                    &e.at,
                    &f.failures,
                ],
            );
        }
        let d = &self.delivered;
        if !d.0.is_empty() {
            add(&st.delivered, &[&d.0, &d.1]);
        }
        let r = &self.retried;
        if !r.0.is_empty() {
            add(&st.retried, &[&r.0, &r.1]);
        }
        let s = &self.stale;
        if !s.0.is_empty() {
            add(&st.stale, &[&s.0, &s.1, &s.2, &s.3]);
        }
        if !self.verified.is_empty() {
            add(&st.verified, &self.verified.params());
        }
        if !self.deleted.is_empty() {
            add(&st.deleted, &[&self.deleted]);
        }
    }
}

/// A statement's request, owning its parameter list.
fn exec<'f>(c: &'f Client, s: &'f Statement, params: Vec<&'f (dyn ToSql + Sync)>) -> Pending<'f> {
    Box::pin(async move { c.execute(s, &params).await })
}

/// Awaits every request of a flight. A tokio-postgres request goes out on its
/// future's first poll, so the first pass polls them in order: `BEGIN` is on
/// the wire before the statements and `COMMIT` after them. (A general join
/// may poll in any order, which could commit before the statements.)
async fn in_order(flight: Vec<Pending<'_>>) -> Vec<Result<u64, tokio_postgres::Error>> {
    let mut flight: Vec<_> = flight.into_iter().map(futures_util::future::maybe_done).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for f in &mut flight {
            done &= Pin::new(f).poll(cx).is_ready();
        }
        if done { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    // Invariant: every future is done, so each has its output to take.
    flight.iter_mut().filter_map(|f| Pin::new(f).take_output()).collect()
}

/// The typed refusal, when `e` is the fence's.
fn fenced(e: &tokio_postgres::Error, ours: u64) -> Option<StoreError> {
    let db = e.as_db_error()?;
    if db.code().code() != FENCED {
        return None;
    }
    // The function puts the lease's epoch in DETAIL (-1: no lease row).
    let current = db.detail().and_then(|d| d.parse::<i64>().ok()).unwrap_or(-1);
    Some(StoreError::Fenced { ours, current: u64::try_from(current).unwrap_or(u64::MAX) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assigned(id: u64, attempt: u32) -> Op {
        Op::Assigned { id, attempt, peer: "p".into(), at_ms: 1 }
    }

    #[test]
    fn a_task_ops_land_in_successive_rounds_and_other_tasks_share_them() {
        // (No inserts: every task here has rows from earlier batches.)
        let ops = vec![
            assigned(1, 1),
            assigned(2, 1),
            Op::Started { id: 1, attempt: 1, at_ms: 2 },
            assigned(3, 1),
            Op::Deleted { ids: vec![1, 2] },
            Op::Approved { peer_id: "w".into(), credential_sha256: "a".into(), at_ms: 1 },
            Op::Approved { peer_id: "w".into(), credential_sha256: "b".into(), at_ms: 2 },
        ];
        let plan = Plan::new(&ops);
        assert_eq!(plan.rounds.len(), 3);
        assert_eq!(plan.rounds[0].assigned.0, vec![1, 2, 3]);
        assert_eq!(plan.rounds[1].started.0, vec![1]);
        assert_eq!(plan.rounds[1].deleted, vec![2]);
        assert_eq!(plan.rounds[2].deleted, vec![1]);
        assert_eq!(plan.approvals.get("w"), Some(&("b", 2)));
        assert_eq!(plan.next_task_id, None);
    }

    #[test]
    fn nul_in_a_failure_message_is_replaced_not_refused() {
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert_eq!(text("plain"), "plain");
    }
}
