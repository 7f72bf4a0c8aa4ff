//! The two backends under one face, each test with a store of its own: a
//! temporary directory for SQLite, a database created for the test (and
//! dropped after it) on the server `LEGACYGPU_TEST_POSTGRES` names.

use std::path::PathBuf;

use store::{NewTask, PostgresStore, SqliteStore, Store, Sync};
pub use test_support::pg::TestDb;

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
