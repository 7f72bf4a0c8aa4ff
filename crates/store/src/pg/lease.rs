//! The leader lease: one row with a holder, an epoch and an expiry, all
//! judged by the database's clock (`now()`), so that the coordinators'
//! clocks never matter — only how fast they tick, as each leader times its
//! own renewals.
//!
//! Taking the lease (free or expired) raises the epoch; renewing keeps it and
//! only the holder at that epoch can. Fencing is the other half: every write
//! batch starts with `legacygpu_fence(epoch)`, which takes the lease row
//! `FOR KEY SHARE` until the batch ends. `epoch` has a unique index, so an
//! UPDATE that changes it takes the row `FOR UPDATE` and waits for every
//! batch in flight; a renewal changes no key and takes `FOR NO KEY UPDATE`,
//! which does not conflict, so a leader's renewals never queue behind its own
//! writes. Hence: each batch of epoch e commits before e+1 exists, or sees e+1
//! and is refused; the new leader reads the store after taking the lease, so
//! it sees every batch its predecessor committed, and none comes later.

use std::time::Duration;

use tokio_postgres::{Client, Row};

use super::Conn;
use crate::StoreError;

/// How long taking the lease waits for a batch in flight before it gives up
/// for now (a frozen writer's batch is ended by the server within
/// `IDLE_IN_TRANSACTION`).
const LOCK_TIMEOUT: &str = "1s";

/// The outcome of [`LeaderLease::try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// This coordinator leads at `epoch`: give it to the store
    /// ([`crate::Store::set_epoch`]) before loading and writing.
    Leader { epoch: u64 },
    /// Someone else holds a lease that has not expired (`None` when the
    /// row was busy: a takeover or a batch in flight; try again).
    Standby(Option<LeaseState>),
}

/// The outcome of [`LeaderLease::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still the leader; the lease runs `ttl` from the database's now.
    Renewed,
    /// Another coordinator took the lease (at a newer epoch): step down.
    Lost(Option<LeaseState>),
}

/// Who leads, as the lease row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: String,
    /// Where the leader serves, for redirects.
    pub address: String,
    pub epoch: u64,
    /// Since the last renewal (the database's clock).
    pub age: Duration,
    /// Until it expires; zero once expired.
    pub expires_in: Duration,
}

impl LeaseState {
    pub fn expired(&self) -> bool {
        self.expires_in.is_zero()
    }
}

/// A coordinator as it last reported itself ([`LeaderLease::announce`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorSeen {
    pub holder: String,
    /// Where it serves (the lease row's format).
    pub address: String,
    /// `leader` or `standby`, as it said.
    pub role: String,
    /// The epoch it leads at, or the last one it saw.
    pub epoch: u64,
    /// Since it started, and since its last report (the database's clock).
    pub up: Duration,
    pub seen: Duration,
}

/// How long a coordinator that stopped reporting stays in the registry
/// (shown as gone) before a report of another one deletes its row.
const FORGET_AFTER_S: i64 = 3600;

/// How long one call waits for the server, connecting included, until
/// [`LeaderLease::set_timeout`] says otherwise (the session's own
/// `statement_timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection for the lease, apart from the writer's, so that renewals
/// never wait behind a batch.
///
/// Every call is bounded by the client's own clock ([`set_timeout`]): a
/// server that stopped answering (SIGSTOP, a partition) cannot hold a
/// leader's renewal past its lease, which the server's `statement_timeout`
/// alone would not ensure (a frozen server enforces nothing). A connection
/// that was lost (the server restarted or ended the session) or that ran
/// out of time is dropped, and the next call connects again, so a standby
/// outlives a restart of the server. No TCP keepalive or user timeout is
/// set: every call already has a deadline, and calls come every poll.
///
/// [`set_timeout`]: LeaderLease::set_timeout
pub struct LeaderLease {
    /// The URL as given (with its password), for connecting again.
    url: String,
    /// `None` once lost: the next call connects again.
    conn: Option<Conn>,
    timeout: Duration,
}

impl std::fmt::Debug for LeaderLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderLease").field("url", &super::redact(&self.url)).finish()
    }
}

const STATE: &str = "SELECT holder, address, epoch,
    (extract(epoch FROM now() - renewed_at) * 1000)::bigint,
    (extract(epoch FROM expires_at - now()) * 1000)::bigint
    FROM leader_lease WHERE id = 1";

fn ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn session() -> String {
    format!(
        "SET application_name = 'legacygpu lease';
         SET lock_timeout = '{LOCK_TIMEOUT}';
         SET statement_timeout = '{}ms';",
        DEFAULT_TIMEOUT.as_millis()
    )
}

impl LeaderLease {
    /// Connects to `url` (applying the migrations, like the store does).
    pub fn connect(url: &str) -> Result<LeaderLease, StoreError> {
        let conn = Conn::connect(url, &session())?;
        Ok(LeaderLease { url: url.to_owned(), conn: Some(conn), timeout: DEFAULT_TIMEOUT })
    }

    /// The longest each later call waits for the server, connecting again
    /// included (default 5 s). A call that runs out fails with a
    /// [`StoreError::Io`] of kind [`std::io::ErrorKind::TimedOut`] and
    /// drops its connection. A leader sets it to what is left of its lease
    /// before renewing it.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs `f` within the timeout on the connection, connecting first
    /// when there is none (or it was closed).
    fn run<T: Send, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Client, &str) -> Result<T, StoreError> + Send,
    {
        let timeout = self.timeout;
        let conn = match self.conn.take().filter(|c| !c.is_closed()) {
            Some(conn) => conn,
            None => Conn::connect_within(&self.url, &session(), timeout)?,
        };
        let conn = self.conn.insert(conn);
        let result = conn.run_within(timeout, f);
        if let Err(e) = &result
            && (conn.is_closed() || !answered(e))
        {
            self.conn = None;
        }
        result
    }

    /// Takes the lease for `ttl` when it is free or expired, at the next
    /// epoch. `holder` must be unique to this process (host, pid and a random
    /// part): the lease of a previous run under the same name is not reused.
    pub fn try_acquire(
        &mut self,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        self.run(async |c, _| {
            let row = c
                .query_opt(
                    "UPDATE leader_lease SET holder = $1, address = $2, epoch = epoch + 1,
                     acquired_at = now(), renewed_at = now(),
                     expires_at = now() + $3::bigint * interval '1 millisecond'
                     WHERE id = 1 AND expires_at <= now() RETURNING epoch",
                    &[&holder, &address, &ms(ttl)],
                )
                .await;
            let won = match row {
                Ok(row) => row.map(|r| r.get::<_, i64>(0)),
                // Busy: a batch in flight or another contender; not an error.
                Err(e) if is_lock_timeout(&e) => None,
                Err(e) => return Err(e.into()),
            };
            match won {
                Some(epoch) => Ok(Acquired::Leader { epoch: epoch as u64 }),
                None => Ok(Acquired::Standby(read_state(c).await?)),
            }
        })
    }

    /// Extends the lease by `ttl` from now, if `holder` still holds it at
    /// `epoch` (also after it expired, while nobody took it: no other epoch
    /// has written since).
    pub fn renew(
        &mut self,
        holder: &str,
        epoch: u64,
        ttl: Duration,
    ) -> Result<Renewal, StoreError> {
        self.run(async |c, _| {
            let n = c
                .execute(
                    "UPDATE leader_lease SET renewed_at = now(),
                     expires_at = now() + $3::bigint * interval '1 millisecond'
                     WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&holder, &(epoch as i64), &ms(ttl)],
                )
                .await?;
            if n == 1 { Ok(Renewal::Renewed) } else { Ok(Renewal::Lost(read_state(c).await?)) }
        })
    }

    /// Gives the lease up (a clean shutdown), so that a standby takes over
    /// at once instead of waiting for it to expire. Returns whether it was
    /// still held.
    pub fn release(&mut self, holder: &str, epoch: u64) -> Result<bool, StoreError> {
        self.run(async |c, _| {
            let n = c
                .execute(
                    "UPDATE leader_lease SET expires_at = now()
                     WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&holder, &(epoch as i64)],
                )
                .await?;
            Ok(n == 1)
        })
    }

    /// Reports this coordinator to the registry (its address, role and
    /// epoch), and forgets coordinators silent for an hour.
    pub fn announce(
        &mut self,
        holder: &str,
        address: &str,
        role: &str,
        epoch: u64,
    ) -> Result<(), StoreError> {
        self.run(async |c, _| {
            c.execute(
                "INSERT INTO coordinators (holder, address, role, epoch, started_at, seen_at)
                 VALUES ($1, $2, $3, $4, now(), now())
                 ON CONFLICT (holder) DO UPDATE SET address = excluded.address,
                 role = excluded.role, epoch = excluded.epoch, seen_at = now()",
                &[&holder, &address, &role, &(epoch as i64)],
            )
            .await?;
            c.execute(
                "DELETE FROM coordinators WHERE seen_at < now() - $1::bigint * interval '1 second'",
                &[&FORGET_AFTER_S],
            )
            .await?;
            Ok(())
        })
    }

    /// Every coordinator in the registry, the longest running first.
    pub fn coordinators(&mut self) -> Result<Vec<CoordinatorSeen>, StoreError> {
        self.run(async |c, _| {
            let rows = c
                .query(
                    "SELECT holder, address, role, epoch,
                     (extract(epoch FROM now() - started_at) * 1000)::bigint,
                     (extract(epoch FROM now() - seen_at) * 1000)::bigint
                     FROM coordinators ORDER BY started_at, holder",
                    &[],
                )
                .await?;
            let millis = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(CoordinatorSeen {
                    holder: r.try_get(0)?,
                    address: r.try_get(1)?,
                    role: r.try_get(2)?,
                    epoch: u64::try_from(r.try_get::<_, i64>(3)?).unwrap_or(0),
                    up: millis(r.try_get(4)?),
                    seen: millis(r.try_get(5)?),
                });
            }
            Ok(out)
        })
    }

    /// Takes this coordinator out of the registry (a clean stop).
    pub fn retire(&mut self, holder: &str) -> Result<(), StoreError> {
        self.run(async |c, _| {
            c.execute("DELETE FROM coordinators WHERE holder = $1", &[&holder]).await?;
            Ok(())
        })
    }

    /// Who holds (or last held) the lease; `None` before anyone led.
    pub fn leader(&mut self) -> Result<Option<LeaseState>, StoreError> {
        self.run(async |c, _| read_state(c).await)
    }
}

async fn read_state(c: &Client) -> Result<Option<LeaseState>, StoreError> {
    let row = c.query_one(STATE, &[]).await?;
    Ok(state(&row)?)
}

/// Whether `e` is the server's answer (the session is still good), rather
/// than a connection that failed or a server that did not answer in time.
fn answered(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(pg) if pg.code().is_some())
}

fn state(r: &Row) -> Result<Option<LeaseState>, tokio_postgres::Error> {
    let epoch: i64 = r.try_get(2)?;
    if epoch == 0 {
        return Ok(None);
    }
    let millis = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    Ok(Some(LeaseState {
        holder: r.try_get(0)?,
        address: r.try_get(1)?,
        epoch: epoch as u64,
        age: millis(r.try_get(3)?),
        expires_in: millis(r.try_get(4)?),
    }))
}

fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}
