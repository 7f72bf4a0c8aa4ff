//! Versioned migrations, applied at connect.
//!
//! `schema_migrations` records each version applied. Every connection runs
//! [`migrate`] in one transaction under an advisory lock, so coordinators
//! starting together apply each migration once; a database at a version this
//! build does not know (written by a newer one) is refused, as SQLite does.
//! A migration, once released, is never edited: a change is a new version.

use tokio_postgres::Client;

use crate::StoreError;

/// Serialises migrations between coordinators (an arbitrary constant: the
/// advisory lock namespace is the database's).
const MIGRATION_LOCK: i64 = 0x6c67_7075_6d69_6772; // "lgpumigr"

/// The migrations, in order: (version, SQL).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, V1_TABLES),
    (2, V2_READ_INDEXES),
    (3, V3_TASK_OPTIONS),
    (4, V4_VERIFICATION),
    (5, V5_COORDINATORS),
    (6, V6_ROOM_FOR_UPDATES),
    (7, V7_JOIN_SECRETS),
];

/// Join secrets as last rotated, so that a token rotated on one leader
/// admits (and the old one is refused) on the next.
const V7_JOIN_SECRETS: &str = "
CREATE TABLE join_secrets (
    kind       TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    rotated_at BIGINT NOT NULL
);";

/// Every coordinator on the database says who it is, where it serves and
/// what it is, each time it asks for or renews the lease: the registry the
/// dashboard and `cluster status` show (`lease.rs`). The database's clock
/// dates each report, as it does the lease.
const V5_COORDINATORS: &str = "
CREATE TABLE coordinators (
    holder     TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    role       TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL
);
";

/// More room in each page for a task's later versions. A task's row is
/// updated two or three times after its insert (finished, delivered, and
/// started or reassigned) and an attempt's once; at fillfactor 70 and 80
/// (version 1) the new version often found no room in its page, and such an
/// update writes an entry in every index, then bottom-up index deletion
/// cleans them up: under `legacygpu bench`, 44 % of the tasks' updates and
/// 20 % of the attempts' were heap-only. At 25 and 40 all of them are, and
/// the same bench ran 18–26 k tasks/s instead of 10–15 k (BENCHMARKS.md). The
/// price is space: the heap holds a quarter as many rows per page, for the
/// retention window only (finished tasks are deleted when it ends). Existing
/// pages keep their fill; new ones get the room.
const V6_ROOM_FOR_UPDATES: &str = "
ALTER TABLE tasks SET (fillfactor = 25);
ALTER TABLE attempts SET (fillfactor = 40);
";

/// A task's options beyond the columns, as JSON (`{"stream": true}`).
const V3_TASK_OPTIONS: &str = "ALTER TABLE tasks ADD COLUMN options TEXT;";

/// The schema this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The same rows as the SQLite backend (`sqlite.rs`), plus the lease.
/// Room is left in each page (fillfactor) because a task's row is updated
/// a few times over its life: an update that fits in its page and changes no
/// indexed column is a heap-only tuple, with no index entry to write.
/// Times are Unix milliseconds as there, except the lease's, which are the
/// database's own clock (`now()`) so that coordinators' clocks never matter.
const V1_TABLES: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE tasks (
    id               BIGINT PRIMARY KEY,
    owner            TEXT NOT NULL,
    client_task_id   TEXT NOT NULL,
    peer_task_id     TEXT NOT NULL,
    task_type        TEXT NOT NULL,
    payload          TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    req_model        TEXT,
    req_gpu          BOOLEAN NOT NULL,
    req_min_vram_mb  BIGINT,
    run_timeout_ms   BIGINT,
    queue_timeout_ms BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    idempotency_key  TEXT,
    submitted_at     BIGINT NOT NULL,
    state            TEXT NOT NULL,
    attempt          BIGINT NOT NULL DEFAULT 0,
    failures         BIGINT NOT NULL DEFAULT 0,
    peer             TEXT,
    started_at       BIGINT,
    finished_at      BIGINT,
    result           TEXT,
    error_code       TEXT,
    error_message    TEXT,
    delivered        BOOLEAN NOT NULL DEFAULT false
) WITH (fillfactor = 70);
CREATE TABLE attempts (
    task_id       BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    peer          TEXT NOT NULL,
    assigned_at   BIGINT NOT NULL,
    ended_at      BIGINT,
    end_reason    TEXT,
    error_code    TEXT,
    error_message TEXT,
    PRIMARY KEY (task_id, attempt)
) WITH (fillfactor = 80);
CREATE TABLE approvals (
    peer_id           TEXT PRIMARY KEY,
    credential_sha256 TEXT NOT NULL,
    approved_at       BIGINT NOT NULL
);

-- The leader lease: one row, always there, so that a writer's check always
-- has a row to lock (see legacygpu_fence). Epoch 0 and an expiry in the past:
-- nobody leads yet. `epoch` is UNIQUE so that changing it is a key update,
-- which must wait for every batch holding the row FOR KEY SHARE (lease.rs).
CREATE TABLE leader_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    address     TEXT NOT NULL,
    epoch       BIGINT NOT NULL UNIQUE,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO leader_lease VALUES (1, '', '', 0, 'epoch', 'epoch', 'epoch');

-- The first statement of every write batch. FOR KEY SHARE holds the lease
-- row until the batch commits or rolls back: a takeover (an UPDATE of the
-- epoch, a key) waits for the batch, and a batch begun after a takeover sees
-- the new epoch and is refused. So every batch of epoch e commits before
-- epoch e+1 exists. Renewals change no key and do not wait.
CREATE FUNCTION legacygpu_fence(ours BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    current_epoch BIGINT;
BEGIN
    SELECT epoch INTO current_epoch FROM leader_lease WHERE id = 1 FOR KEY SHARE;
    IF current_epoch IS DISTINCT FROM ours THEN
        RAISE EXCEPTION 'fenced: epoch % is not the lease''s epoch %', ours, current_epoch
            USING ERRCODE = 'LGF01', DETAIL = coalesce(current_epoch, -1)::text;
    END IF;
    RETURN current_epoch;
END
$$;
";

/// Indexes for the read API's filters, each ending in `id` for keyset paging
/// by id. Only on columns a task's later writes leave alone (state is not
/// among them: an index on it would make every update rewrite an index entry
/// instead of staying a heap-only update).
const V2_READ_INDEXES: &str = "
CREATE INDEX tasks_owner_id ON tasks (owner, id);
CREATE INDEX tasks_type_id ON tasks (task_type, id);
CREATE INDEX tasks_submitted_at ON tasks (submitted_at);
CREATE INDEX attempts_peer_task ON attempts (peer, task_id);
";

/// Verification: a task's policy and verdict, its replicas' results, and
/// reputations (the same rows as SQLite's schema version 3). Adding nullable
/// columns without a default rewrites nothing.
const V4_VERIFICATION: &str = "
ALTER TABLE tasks ADD COLUMN verify TEXT, ADD COLUMN verify_status TEXT;
CREATE TABLE replicas (
    task_id       BIGINT NOT NULL,
    replica       BIGINT NOT NULL,
    replica_id    BIGINT NOT NULL,
    peer          TEXT,
    attempts      BIGINT NOT NULL,
    result        TEXT,
    error_code    TEXT,
    error_message TEXT,
    verdict       TEXT NOT NULL,
    PRIMARY KEY (task_id, replica)
);
CREATE TABLE reputation (
    subject           TEXT PRIMARY KEY,
    valid             BIGINT NOT NULL,
    invalid           BIGINT NOT NULL,
    unverified        BIGINT NOT NULL,
    consecutive_valid BIGINT NOT NULL,
    canaries_passed   BIGINT NOT NULL,
    canaries_failed   BIGINT NOT NULL,
    strikes           BIGINT NOT NULL,
    quarantined       BOOLEAN NOT NULL,
    credential        TEXT,
    updated_at        BIGINT NOT NULL
);
";

/// Applies what the database lacks, or refuses a newer schema.
pub(crate) async fn migrate(client: &mut Client, url: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i64 =
        tx.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[]).await?.get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::Schema { path: url.to_owned(), found, known: SCHEMA_VERSION });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
        tracing::info!("store: applied migration {version} to {url}");
    }
    tx.commit().await?;
    Ok(())
}
