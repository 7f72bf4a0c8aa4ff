//! The PostgreSQL backend: the same rows as SQLite in a database several
//! coordinators can share, a leader lease with an epoch, and fencing.
//!
//! The API is synchronous like the rest of the crate (the writer is a
//! thread). Underneath, each connection is a `tokio-postgres` client driven by
//! a current-thread runtime of its own; that is what lets one batch go out as
//! a single pipelined flight of statements — `BEGIN`, the fence check, a few
//! array statements, `COMMIT` — that costs one round trip, however many tasks
//! it holds (see `batch.rs`).
//!
//! Called from inside a tokio runtime (the coordinator opens and loads the
//! store from async code), a connection does its work on a scoped thread, as
//! a runtime must not block on another one.

mod batch;
mod fold;
mod lease;
mod load;
mod read;
mod schema;
mod verify;

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use crate::{Loaded, Op, Store, StoreError};

pub use lease::{Acquired, CoordinatorSeen, LeaderLease, LeaseState, Renewal};
pub use read::PostgresReader;

/// How long the server lets a writer's session sit inside an open
/// transaction. A batch is sent whole, so a writer is only ever idle inside
/// one when it stopped mid-send: frozen (SIGSTOP), partitioned or dead. The
/// server then ends the session, which rolls the batch back and frees the
/// lease row for a contender. Well under the failover budget (5 s).
const IDLE_IN_TRANSACTION: &str = "2s";

/// The longest a statement may run: a stuck server fails the batch (and the
/// writer retries) instead of hanging the coordinator.
const STATEMENT_TIMEOUT: &str = "60s";

/// An error from the PostgreSQL client, shown with the server's message.
#[derive(Debug)]
pub struct PgError(tokio_postgres::Error);

impl PgError {
    /// The SQLSTATE code, when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        self.0.code().map(|c| c.code())
    }

    fn db(&self) -> Option<&tokio_postgres::error::DbError> {
        self.0.as_db_error()
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's own text is only "db error": the server's is the news.
        if let Some(db) = self.db() {
            return write!(f, "{}: {} ({})", db.severity(), db.message(), db.code().code());
        }
        write!(f, "{}", self.0)?;
        if let Some(cause) = self.0.source() {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(PgError(e))
    }
}

/// `url` without its password (in the authority or as a query parameter).
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

/// Runs `f` where blocking on a runtime of our own is allowed: here, or on a
/// scoped thread when the caller is itself on a tokio runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// One connection: a client and the runtime that drives it.
pub(crate) struct Conn {
    /// Always `Some` until dropped (taken to shut it down without blocking).
    rt: Option<Runtime>,
    client: Client,
    /// The URL without its password, for errors.
    url: String,
}

impl Conn {
    /// Connects, sets `session` (SQL run once), and applies the migrations.
    pub(crate) fn connect(url: &str, session: &str) -> Result<Conn, StoreError> {
        let mut conn = off_runtime(|| Conn::connect_here(url, session, None))?;
        conn.run(schema::migrate)?;
        Ok(conn)
    }

    /// Connects without touching the schema (a reader's connection).
    pub(crate) fn connect_plain(url: &str, session: &str) -> Result<Conn, StoreError> {
        off_runtime(|| Conn::connect_here(url, session, None))
    }

    /// Connects without touching the schema, giving up after `limit`: a
    /// server that accepts the connection and never answers (frozen,
    /// partitioned) holds the caller no longer.
    pub(crate) fn connect_within(
        url: &str,
        session: &str,
        limit: Duration,
    ) -> Result<Conn, StoreError> {
        off_runtime(|| Conn::connect_here(url, session, Some(limit)))
    }

    fn connect_here(url: &str, session: &str, limit: Option<Duration>) -> Result<Conn, StoreError> {
        let shown = redact(url);
        let fail = |source| StoreError::Connect { url: shown.clone(), source: PgError(source) };
        let config: tokio_postgres::Config = url.parse().map_err(fail)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let connecting = async {
            let (client, connection) = config.connect(NoTls).await?;
            // Driven whenever this connection blocks on the runtime; it ends
            // when the client is dropped or the server goes away.
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("postgres connection ended: {}", PgError(e));
                }
            });
            client.batch_execute(session).await?;
            Ok::<_, tokio_postgres::Error>(client)
        };
        let client = match limit {
            None => rt.block_on(connecting).map_err(fail)?,
            Some(limit) => {
                match rt.block_on(async { tokio::time::timeout(limit, connecting).await }) {
                    Ok(client) => client.map_err(fail)?,
                    Err(_) => {
                        rt.shutdown_background();
                        return Err(timed_out(&shown, limit));
                    }
                }
            }
        };
        Ok(Conn { rt: Some(rt), client, url: shown })
    }

    /// Runs `f` with the client on this connection's runtime.
    pub(crate) fn run<T: Send, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Client, &str) -> Result<T, StoreError> + Send,
    {
        let Conn { rt, client, url } = self;
        let Some(rt) = rt.as_ref() else {
            // Invariant: `rt` is only taken in `drop`.
            return Err(StoreError::Io(std::io::Error::other("connection already closed")));
        };
        off_runtime(|| rt.block_on(f(client, url)))
    }

    /// Runs `f` like [`Conn::run`], giving up after `limit` (the server
    /// did not answer in time: the connection should not be used again, as
    /// its statement may still be queued).
    pub(crate) fn run_within<T: Send, F>(&mut self, limit: Duration, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Client, &str) -> Result<T, StoreError> + Send,
    {
        let shown = self.url.clone();
        self.run(async |c, url| match tokio::time::timeout(limit, f(c, url)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&shown, limit)),
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// The error of a call the server did not answer within `limit`.
fn timed_out(url: &str, limit: Duration) -> StoreError {
    let why = format!("{url} did not answer within {limit:?}");
    StoreError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Session settings of a writer's connection.
fn writer_session() -> String {
    format!(
        "SET application_name = 'legacygpu store';
         SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}';
         SET statement_timeout = '{STATEMENT_TIMEOUT}';"
    )
}

/// Tasks in a PostgreSQL database.
pub struct PostgresStore {
    url: String,
    conn: Conn,
    statements: batch::Statements,
    /// The leader epoch every batch carries (0: no lease taken).
    epoch: u64,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.conn.url)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and
    /// applies the migrations the database lacks; a database written by a
    /// newer build is refused ([`StoreError::Schema`]).
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut conn = Conn::connect(url, &writer_session())?;
        let statements = conn.run(async |c, _| batch::Statements::prepare(c).await)?;
        Ok(PostgresStore { url: url.to_owned(), conn, statements, epoch: 0 })
    }

    /// The epoch batches are written with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A fresh connection after the old one was lost (the server restarted,
    /// or ended a session stuck in a transaction).
    fn reconnect(&mut self) -> Result<(), StoreError> {
        tracing::warn!("the store's connection to {} was lost; reconnecting", self.conn.url);
        let mut conn = Conn::connect(&self.url, &writer_session())?;
        self.statements = conn.run(async |c, _| batch::Statements::prepare(c).await)?;
        self.conn = conn;
        Ok(())
    }
}

impl Store for PostgresStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        if self.conn.is_closed() {
            self.reconnect()?;
        }
        self.conn.run(async |c, _| load::load(c).await)
    }

    fn write(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        if self.conn.is_closed() {
            self.reconnect()?;
        }
        let plan = batch::Plan::new(ops);
        let (statements, epoch) = (&self.statements, self.epoch);
        self.conn.run(async |c, _| plan.execute(c, statements, epoch).await)
    }

    fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://u:p@h:1/d"), "postgres://u:***@h:1/d");
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            redact("postgres://h/d?user=u&password=p"),
            "postgres://h/d?user=u&password=***"
        );
        assert_eq!(redact("postgres://u:p@w@h/d"), "postgres://u:***@h/d");
    }
}
