//! The two backends under one face, each test with a store of its own: a
//! temporary directory for SQLite, a database created for the test (and
//! dropped after it) on the server `LEGACYGPU_TEST_POSTGRES` names.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use store::{NewTask, PostgresStore, SqliteStore, Store, Sync};

/// The server's URL (its `postgres` database), set by
/// `scripts/pg_test_server.sh`.
const SERVER_ENV: &str = "LEGACYGPU_TEST_POSTGRES";
/// `1` (as in CI): a missing server fails the tests instead of skipping them.
const REQUIRE_ENV: &str = "LEGACYGPU_REQUIRE_POSTGRES";

/// A database of its own for one test; dropped with it.
pub struct TestDb {
    admin: String,
    name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh database, or `None` (with a loud message) when no server is
    /// configured and none is required.
    pub fn create() -> Option<TestDb> {
        let Some(admin) = std::env::var(SERVER_ENV).ok().filter(|s| !s.is_empty()) else {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("{REQUIRE_ENV}=1 but {SERVER_ENV} is not set (scripts/pg_test_server.sh)");
            }
            skipped_loudly();
            return None;
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "lgtest_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot reach the test server at {admin}: {e}"));
        client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = with_database(&admin, &name);
        Some(TestDb { admin, name, url })
    }

    /// A plain client on the test's database, for what the store API does
    /// not do (sabotage, inspection).
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// Says once per run, past the test harness's capture (which would hide it
/// for a test that passes), that the PostgreSQL tests did not run.
fn skipped_loudly() {
    use std::io::Write;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED: the PostgreSQL store tests did not run: {SERVER_ENV} is not set \
             (eval \"$(scripts/pg_test_server.sh start /tmp/lg-pg)\" starts a server)\n"
        );
    });
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out = format!("{out}?{q}");
    }
    out
}

/// One backend for one test.
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(TestDb),
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn postgres() -> Option<Backend> {
        TestDb::create().map(Backend::Postgres)
    }

    /// Opens the store (again): a new connection, as after a restart.
    pub fn open(&self) -> Box<dyn Store> {
        self.try_open().unwrap()
    }

    pub fn try_open(&self) -> Result<Box<dyn Store>, store::StoreError> {
        Ok(match self {
            Backend::Sqlite(dir) => Box::new(SqliteStore::open(dir.path(), Sync::Normal)?),
            Backend::Postgres(db) => Box::new(PostgresStore::connect(&db.url)?),
        })
    }

    /// A reader on its own connections (after [`Backend::open`]).
    pub fn reader(&self) -> Box<dyn store::StoreReader> {
        store::open_reader(&self.target()).unwrap()
    }

    /// The `--store` argument that names this store.
    pub fn target(&self) -> store::Target {
        match self {
            Backend::Sqlite(dir) => store::Target::Sqlite(dir.path().to_owned()),
            Backend::Postgres(db) => store::Target::Postgres(db.url.clone()),
        }
    }

    /// Makes inserting task `id` fail inside the database.
    pub fn fail_inserts_of(&self, id: u64) {
        match self {
            Backend::Sqlite(dir) => sqlite(dir.path().join("tasks.db")).execute_batch(&format!(
                "CREATE TRIGGER boom BEFORE INSERT ON tasks WHEN NEW.id = {id}
                 BEGIN SELECT RAISE(ABORT, 'boom'); END;"
            )),
            Backend::Postgres(db) => {
                db.client()
                    .batch_execute(&format!(
                        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
                         BEGIN IF NEW.id = {id} THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$;
                         CREATE TRIGGER boom BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION boom();"
                    ))
                    .unwrap();
                Ok(())
            }
        }
        .unwrap();
    }

    /// Marks the store as written by a newer build.
    pub fn set_schema_version(&self, version: i64) {
        match self {
            Backend::Sqlite(dir) => {
                sqlite(dir.path().join("tasks.db"))
                    .execute("UPDATE meta SET value = ?1 WHERE key = 'schema'", [version])
                    .unwrap();
            }
            Backend::Postgres(db) => {
                db.client()
                    .execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version])
                    .unwrap();
            }
        }
    }
}

fn sqlite(path: PathBuf) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// A task with every field set.
pub fn task(id: u64) -> NewTask {
    NewTask {
        id,
        owner: "gamer:g1".into(),
        client_task_id: format!("c{id}"),
        peer_task_id: format!("c{id}-peer"),
        options: id.is_multiple_of(3).then(|| r#"{"stream":true}"#.to_owned()),
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
        submitted_at_ms: 1_700_000_000_000 + id as i64,
        verify: None,
    }
}

/// A task with every optional field unset.
pub fn bare_task(id: u64) -> NewTask {
    NewTask {
        req_model: None,
        req_gpu: false,
        req_min_vram_mb: None,
        run_timeout_ms: None,
        idempotency_key: None,
        owner: "api".into(),
        ..task(id)
    }
}

#[test]
fn a_database_url_is_swapped_keeping_the_rest() {
    assert_eq!(with_database("postgres://u@h:1/postgres", "t"), "postgres://u@h:1/t");
    assert_eq!(with_database("postgres://u@h:1", "t"), "postgres://u@h:1/t");
    assert_eq!(
        with_database("postgres://h/d?sslmode=disable", "t"),
        "postgres://h/t?sslmode=disable"
    );
}
