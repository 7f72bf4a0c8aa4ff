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
        shared_server().map(|admin| TestDb::create_on(&admin))
    }

    /// A fresh database on the server `admin` (a URL to any of its
    /// databases) reaches.
    pub fn create_on(admin: &str) -> TestDb {
        let admin = admin.to_owned();
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
        TestDb { admin, name, url }
    }

    /// The server's address (`host:port` of the URL, an IP address).
    pub fn addr(&self) -> std::net::SocketAddr {
        addr_of(&self.url)
    }

    /// The database's URL through another address (a proxy in front of
    /// the server).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        url_via(&self.url, addr)
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

/// A PostgreSQL server of the test's own (`scripts/pg_test_server.sh` in a
/// temporary directory, `fsync` off), for tests that stop or restart the
/// server: the shared one of `LEGACYGPU_TEST_POSTGRES` is never touched.
/// Stopped when dropped. Drop its [`TestDb`]s first.
pub struct TestServer {
    dir: tempfile::TempDir,
    /// A URL to its `postgres` database.
    pub admin: String,
    port: u16,
}

/// The first port an own server tries (the shared one starts at 55432):
/// above Linux's ephemeral range (32768-60999), so that no outgoing
/// connection's local port can take it between the check and the bind.
const OWN_PORTS: u16 = 61000;

impl TestServer {
    /// Starts one, or `None` where PostgreSQL tests are skipped (no
    /// `LEGACYGPU_TEST_POSTGRES`: see [`TestDb::create`]).
    pub fn start() -> Option<TestServer> {
        shared_server()?;
        let dir = tempfile::tempdir().unwrap();
        let first = OWN_PORTS + (std::process::id() % 1000) as u16;
        let admin = server_script("start", dir.path(), first, false);
        let port = addr_of(&admin).port();
        Some(TestServer { dir, admin, port })
    }

    /// A fresh database on it.
    pub fn db(&self) -> TestDb {
        TestDb::create_on(&self.admin)
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended).
    pub fn stop(&self) {
        server_script("stop", self.dir.path(), self.port, false);
    }

    /// Starts it again on the same port, after [`TestServer::stop`].
    pub fn start_again(&self) {
        let admin = server_script("start", self.dir.path(), self.port, true);
        assert_eq!(admin, self.admin, "the server came back on another port");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `scripts/pg_test_server.sh CMD DIR` (trying ports from `port`, or
/// only `port` when `same_port`); returns the URL `start` exports.
fn server_script(cmd: &str, dir: &std::path::Path, port: u16, same_port: bool) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg_test_server.sh");
    let out = std::process::Command::new(script)
        .args([cmd, &dir.display().to_string()])
        .env("PG_FSYNC", "off")
        .env("PGPORT_TRY", port.to_string())
        .env("PGPORT_SAME", if same_port { "1" } else { "0" })
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} {cmd}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().split_once('=').map_or_else(String::new, |(_, url)| url.to_owned())
}

/// The shared server's URL, or `None` when no server is configured and
/// none is required (the skip is said on stderr, past the test's capture).
fn shared_server() -> Option<String> {
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
    Some(admin)
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

/// Where the authority (`user@host:port`) of `url` starts and ends.
fn authority(url: &str) -> (usize, usize) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    (start, end)
}

fn addr_of(url: &str) -> std::net::SocketAddr {
    let (start, end) = authority(url);
    let host_port = url[start..end].rsplit('@').next().unwrap_or_default();
    host_port.parse().unwrap_or_else(|e| panic!("{host_port} is no address: {e}"))
}

fn url_via(url: &str, addr: std::net::SocketAddr) -> String {
    let (start, end) = authority(url);
    let user = url[start..end].rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{}{}{addr}{}", &url[..start], user.unwrap_or_default(), &url[end..])
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
    use super::{addr_of, url_via, with_database};

    #[test]
    fn a_server_address_is_read_and_swapped() {
        let url = "postgres://postgres@127.0.0.1:55432/t?x=1";
        assert_eq!(addr_of(url).to_string(), "127.0.0.1:55432");
        let via = url_via(url, "127.0.0.1:9".parse().unwrap());
        assert_eq!(via, "postgres://postgres@127.0.0.1:9/t?x=1");
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
}
