//! A PostgreSQL database of its own for one test, on the server
//! `LEGACYGPU_TEST_POSTGRES` names (`scripts/pg_test_server.sh`); dropped
//! with it. Without a server the test skips loudly, unless
//! `LEGACYGPU_REQUIRE_POSTGRES=1` (CI), which makes it fail.

use std::sync::atomic::{AtomicU32, Ordering};

const SERVER_ENV: &str = "LEGACYGPU_TEST_POSTGRES";
const REQUIRE_ENV: &str = "LEGACYGPU_REQUIRE_POSTGRES";

/// A fresh database; dropped (with its sessions) when this is.
pub struct TestDb {
    admin: String,
    name: String,
    /// Its URL, for `--store`.
    pub url: String,
}

impl TestDb {
    /// A fresh database, or `None` when no server is configured and none is
    /// required (the skip is said on stderr, past the test's capture).
    pub fn create() -> Option<TestDb> {
        let Some(admin) = std::env::var(SERVER_ENV).ok().filter(|s| !s.is_empty()) else {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("{REQUIRE_ENV}=1 but {SERVER_ENV} is not set (scripts/pg_test_server.sh)");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: a PostgreSQL test did not run: {SERVER_ENV} is not set"
            );
            return None;
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "lgit_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        off_runtime(|| {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls)
                .unwrap_or_else(|e| panic!("cannot reach the test server at {admin}: {e}"));
            client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        });
        let url = with_database(&admin, &name);
        Some(TestDb { admin, name, url })
    }

    /// A plain client on the test's database, for what the store API does
    /// not do (sabotage, inspection). From synchronous tests only (the
    /// blocking client may not start on a tokio runtime's thread).
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    /// Locks `table` against every other session (`ACCESS EXCLUSIVE`, in a
    /// transaction held open on a thread of its own) until the lock is
    /// dropped: a store writing to it waits meanwhile. Callable from async
    /// tests.
    pub fn lock(&self, table: &str) -> TableLock {
        let (url, sql) = (self.url.clone(), format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"));
        let (locked_tx, locked) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = client.transaction().unwrap();
            tx.batch_execute(&sql).unwrap();
            locked_tx.send(()).unwrap();
            // Until dropped (the sender goes), or at most a minute.
            let _ = released.recv_timeout(std::time::Duration::from_secs(60));
            tx.commit().unwrap();
        });
        locked.recv_timeout(std::time::Duration::from_secs(30)).expect("the lock in time");
        TableLock { release: Some(release), thread: Some(thread) }
    }

    /// The rows `sql` returns, every column cast to text by the query
    /// (`SELECT a::text, …`), for inspection. Callable from async tests.
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        off_runtime(|| {
            let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
            let rows = c.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter().map(|r| (0..r.len()).map(|i| r.get(i)).collect()).collect()
        })
    }
}

/// A table lock of [`TestDb::lock`]; released when dropped.
pub struct TableLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TableLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a thread of its own: the blocking client starts a runtime,
/// which it may not do on a tokio runtime's thread.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        off_runtime(|| {
            if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                let _ = c.batch_execute(&sql);
            }
        });
    }
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

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_database_url_is_swapped_keeping_the_rest() {
        assert_eq!(with_database("postgres://u@h:1/postgres", "t"), "postgres://u@h:1/t");
        assert_eq!(with_database("postgres://u@h:1", "t"), "postgres://u@h:1/t");
        assert_eq!(
            with_database("postgres://h/d?sslmode=disable", "t"),
            "postgres://h/t?sslmode=disable"
        );
    }
}
