//! The lease keeper: a thread of its own that competes for the leader lease
//! and, once it holds it, renews it well inside its expiry.
//!
//! A thread rather than a task: the lease's connection blocks, and a busy
//! runtime (the core, thousands of connections) must never delay a
//! renewal. What it learns goes out on a `watch` channel ([`HaStatus`]),
//! which the rest of the coordinator reads.
//!
//! The leader's own clock decides when it must stop believing it leads
//! ([`LeaseTimer`]): the lease is valid locally until `ttl` (less a margin
//! for clocks that tick at different rates) after the moment the last
//! successful renewal was *sent*, which is never later than when the
//! database extended it. So a leader that was frozen (SIGSTOP) or cut off
//! wakes to find its local lease run out and steps down before it asks
//! anything — and should it write first, the fence refuses the batch.
//! Every call a leader makes to the database is bounded by what is left of
//! its lease ([`LeaderLease::set_timeout`]), so a database that stops
//! answering (frozen, cut off) cannot keep it leading past it either: the
//! call gives up when the lease runs out and the leader steps down.
//!
//! A standby that cannot read the lease (the database restarting, or out
//! of reach) keeps naming the leader it last saw only while that lease, as
//! read, may still run by its own clock; then it names none (health shows
//! no leader, the API answers 503 `not_leader`) until it reads the lease
//! again. Its lease connection is made again at the next try.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use store::{Acquired, LeaderLease, LeaseState, Renewal};
use tokio::sync::watch;
use tracing::debug;
use tracing::{info, warn};

use super::{HaStatus, Leader, Role};
use crate::config::LeaseConfig;

/// When a leader renews and when its lease runs out, by its own clock.
/// Pure: instants come in, nothing is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseTimer {
    ttl: Duration,
    /// Until when this leader may believe it leads.
    valid_until: Instant,
    next_renewal: Instant,
}

impl LeaseTimer {
    /// Renewals go out four times per lease: three may fail (a slow
    /// database, a lost connection) before the lease runs out.
    pub fn renew_every(ttl: Duration) -> Duration {
        ttl / 4
    }

    /// What is taken off `ttl` for clocks that tick at different rates
    /// (ours and the database's): a tenth.
    fn margin(ttl: Duration) -> Duration {
        ttl / 10
    }

    /// The lease was taken by a statement sent at `sent`.
    pub fn new(sent: Instant, ttl: Duration) -> LeaseTimer {
        let mut t = LeaseTimer { ttl, valid_until: sent, next_renewal: sent };
        t.renewed(sent);
        t
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        self.valid_until = sent + self.ttl - LeaseTimer::margin(self.ttl);
        self.next_renewal = sent + LeaseTimer::renew_every(self.ttl);
    }

    /// A renewal attempted at `now` failed (not refused: the database could
    /// not be asked); the next try comes sooner, and never after the lease
    /// ran out (so that the leader wakes then to step down).
    pub fn failed(&mut self, now: Instant) {
        self.next_renewal = (now + LeaseTimer::renew_every(self.ttl) / 2).min(self.valid_until);
    }

    pub fn next_renewal(&self) -> Instant {
        self.next_renewal
    }

    /// Whether the lease may have run out at `now`: the leader must stop.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.valid_until
    }

    /// How long the lease is still valid after `now`: the longest a call
    /// to the database may take.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.valid_until.saturating_duration_since(now)
    }
}

/// The running lease keeper.
pub(crate) struct Keeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    /// Starts competing for the lease on `lease` as `holder`, advertising
    /// `address`; reports to `status`.
    pub fn spawn(
        lease: LeaderLease,
        holder: String,
        address: String,
        config: LeaseConfig,
        status: watch::Sender<HaStatus>,
    ) -> std::io::Result<Keeper> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("leader-lease".into()).spawn(move || {
            let next_report = Instant::now();
            let mut k = Run { lease, holder, address, config, status, stop: stopping, next_report };
            k.run();
        })?;
        Ok(Keeper { stop, thread: Some(thread) })
    }

    /// Stops the thread; a leader releases the lease (a clean step-down,
    /// so a standby takes over at once). Waits for the thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shut();
    }
}

struct Run {
    lease: LeaderLease,
    holder: String,
    address: String,
    config: LeaseConfig,
    status: watch::Sender<HaStatus>,
    stop: Arc<AtomicBool>,
    /// When this coordinator next reports to the registry.
    next_report: Instant,
}

impl Run {
    fn run(&mut self) {
        let Some((epoch, timer)) = self.stand_by() else { return self.retire() };
        self.lead(epoch, timer);
    }

    /// Leaves the registry (a clean stop, standby or leader).
    fn retire(&mut self) {
        if let Err(e) = self.lease.retire(&self.holder) {
            debug!("cannot leave the coordinator registry: {e}");
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps until `until` or a stop (unparked).
    fn sleep_until(&self, until: Instant) {
        loop {
            let now = Instant::now();
            if self.stopped() || now >= until {
                return;
            }
            std::thread::park_timeout(until - now);
        }
    }

    /// Tries to take the lease every `poll` until it wins (the epoch and
    /// the timer) or is stopped.
    fn stand_by(&mut self) -> Option<(u64, LeaseTimer)> {
        let mut logged = false;
        let mut failing = false;
        while !self.stopped() {
            let sent = Instant::now();
            self.lease.set_timeout(self.config.ttl);
            let tried = self.lease.try_acquire(&self.holder, &self.address, self.config.ttl);
            if tried.is_ok() && std::mem::take(&mut failing) {
                info!("the leader lease can be read again");
            }
            match tried {
                Ok(Acquired::Leader { epoch }) => {
                    info!(epoch, "took the leader lease");
                    let timer = LeaseTimer::new(sent, self.config.ttl);
                    self.status.send_modify(|s| s.lead(epoch, &self.address, &self.holder));
                    self.next_report = Instant::now();
                    self.report(Role::Leader, epoch, timer.remaining(Instant::now()));
                    return Some((epoch, timer));
                }
                Ok(Acquired::Standby(state)) => {
                    if !logged && let Some(s) = &state {
                        info!(leader = %s.holder, epoch = s.epoch, "standing by");
                        logged = true;
                    }
                    self.status.send_modify(|s| s.observe(state.as_ref()));
                    let epoch = state.as_ref().map_or(0, |s| s.epoch);
                    self.report(Role::Standby, epoch, self.config.ttl);
                }
                Err(e) => {
                    // Once per outage: a standby asks every `poll`.
                    if std::mem::replace(&mut failing, true) {
                        debug!("cannot ask for the leader lease: {e}");
                    } else {
                        warn!(
                            "cannot ask for the leader lease (retrying every {:?}): {e}",
                            self.config.poll
                        );
                    }
                    self.status.send_modify(|s| s.unreadable(Instant::now()));
                }
            }
            self.sleep_until(sent + self.config.poll);
        }
        None
    }

    /// Renews until the lease is lost (then reports [`Role::Deposed`]) or
    /// the keeper is stopped (then releases it).
    fn lead(&mut self, epoch: u64, mut timer: LeaseTimer) {
        loop {
            self.sleep_until(timer.next_renewal());
            let now = Instant::now();
            if timer.expired(now) {
                return self.deposed("the lease ran out before it could be renewed", None);
            }
            if self.stopped() {
                return self.release(epoch, timer.remaining(now));
            }
            // A database that does not answer cannot hold this leader past
            // its lease: the renewal gives up when the lease runs out.
            self.lease.set_timeout(timer.remaining(now));
            match self.lease.renew(&self.holder, epoch, self.config.ttl) {
                Ok(Renewal::Renewed) => {
                    timer.renewed(now);
                    self.status.send_modify(|s| s.renewed());
                    self.report(Role::Leader, epoch, timer.remaining(Instant::now()));
                }
                Ok(Renewal::Lost(state)) => {
                    return self.deposed("another coordinator took the lease", state.as_ref());
                }
                Err(e) => {
                    warn!("cannot renew the leader lease: {e}");
                    timer.failed(Instant::now());
                }
            }
            if timer.expired(Instant::now()) {
                return self.deposed("the lease ran out before it could be renewed", None);
            }
        }
    }

    /// At most once per renewal interval (and right after taking the
    /// lease), after the lease's own statement so that it never delays a
    /// renewal: tells the registry what this coordinator is, and reads
    /// back every coordinator for the dashboard and `cluster status`. A
    /// registry that cannot be reached costs only the list. Its calls wait
    /// at most `limit` (a leader's: what is left of its lease).
    fn report(&mut self, role: Role, epoch: u64, limit: Duration) {
        let now = Instant::now();
        if now < self.next_report || limit.is_zero() {
            return;
        }
        self.lease.set_timeout(limit);
        // Three quarters of the interval: a renewal that comes a little early
        // still reports.
        self.next_report = now + LeaseTimer::renew_every(self.config.ttl) * 3 / 4;
        let seen = self
            .lease
            .announce(&self.holder, &self.address, role.as_str(), epoch)
            .and_then(|()| self.lease.coordinators());
        match seen {
            Ok(list) => self.status.send_modify(|s| s.registry(list)),
            Err(e) => debug!("cannot report to the coordinator registry: {e}"),
        }
    }

    fn deposed(&mut self, why: &str, leader: Option<&LeaseState>) {
        warn!("stepping down: {why}");
        self.status.send_modify(|s| {
            s.observe(leader);
            s.role = Role::Deposed;
            s.why = Some(why.to_owned());
        });
    }

    /// A clean stop while leading: leaves the registry and gives the lease
    /// up, waiting at most `limit` (what is left of it) for the database.
    fn release(&mut self, epoch: u64, limit: Duration) {
        self.lease.set_timeout(limit.max(Duration::from_millis(1)));
        self.retire();
        match self.lease.release(&self.holder, epoch) {
            Ok(true) => info!(epoch, "released the leader lease"),
            Ok(false) => info!(epoch, "the leader lease was already taken over"),
            Err(e) => warn!("cannot release the leader lease (it expires by itself): {e}"),
        }
        self.status.send_modify(|s| s.role = Role::Deposed);
    }
}

/// The lease row's `address`: the WebSocket URL, then the HTTP URL.
pub(crate) fn encode_address(ws: &str, http: Option<&str>) -> String {
    match http {
        Some(http) => format!("{ws} {http}"),
        None => ws.to_owned(),
    }
}

/// The leader's addresses from the lease row.
pub(crate) fn leader_of(state: &LeaseState) -> Leader {
    let (ws, http) = decode_address(&state.address);
    Leader { holder: state.holder.clone(), ws, http }
}

/// The WebSocket and HTTP URLs of an [`encode_address`]d row (the lease's,
/// the registry's).
pub(crate) fn decode_address(address: &str) -> (String, Option<String>) {
    let mut parts = address.split_whitespace();
    (parts.next().unwrap_or_default().to_owned(), parts.next().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn renewals_come_four_times_a_lease_and_keep_it() {
        let t0 = Instant::now();
        let mut t = LeaseTimer::new(t0, TTL);
        assert_eq!(t.next_renewal(), t0 + Duration::from_millis(750));
        // Renewing on time keeps it valid for ever.
        let mut now = t0;
        for _ in 0..100 {
            now = t.next_renewal();
            assert!(!t.expired(now));
            t.renewed(now);
        }
        assert!(!t.expired(now + Duration::from_millis(2_699)));
        assert!(t.expired(now + Duration::from_millis(2_700)));
    }

    #[test]
    fn a_frozen_leader_wakes_with_its_lease_run_out() {
        let t0 = Instant::now();
        let t = LeaseTimer::new(t0, TTL);
        // Frozen (SIGSTOP) from just after taking it for 10 s.
        assert!(t.expired(t0 + Duration::from_secs(10)));
        // Valid locally for less than the database's ttl (the margin).
        assert!(t.expired(t0 + TTL - Duration::from_millis(1)));
        assert!(!t.expired(t0 + TTL - TTL / 10 - Duration::from_millis(1)));
    }

    #[test]
    fn failed_renewals_retry_sooner_and_cannot_extend_the_lease() {
        let t0 = Instant::now();
        let mut t = LeaseTimer::new(t0, TTL);
        let mut now = t.next_renewal();
        let mut tries = 0;
        let valid_until = t0 + TTL - TTL / 10;
        while !t.expired(now) {
            assert_eq!(t.remaining(now), valid_until - now, "a call may take what is left");
            t.failed(now);
            assert_eq!(t.next_renewal(), (now + Duration::from_millis(375)).min(valid_until));
            now = t.next_renewal();
            tries += 1;
        }
        // 0.75 s, then every 0.375 s until 2.625 s: six tries in all; the
        // leader then wakes when the lease runs out (2.7 s), not later.
        assert_eq!(tries, 6);
        assert_eq!(now, valid_until);
        assert_eq!(t.remaining(now), Duration::ZERO);
    }

    /// The database stops answering with the connection open (a proxy
    /// frozen in front of it stands in for a SIGSTOPped server): the
    /// leader's renewal gives up and it steps down when its lease runs out
    /// by its own clock, while the row still names it.
    #[test]
    fn a_leader_whose_database_stops_answering_steps_down_when_its_lease_runs_out() {
        let Some(db) = test_support::pg::TestDb::create() else { return };
        let proxy = test_support::net::FreezableProxy::start(db.addr());
        let lease = LeaderLease::connect(&db.url_via(proxy.addr())).unwrap();
        let ttl = Duration::from_secs(1);
        let config = LeaseConfig { ttl, poll: Duration::from_millis(50), ..LeaseConfig::default() };
        let (tx, status) = watch::channel(HaStatus::standby("a".into(), ttl));
        let keeper = Keeper::spawn(lease, "a".into(), "ws://a:1".into(), config, tx).unwrap();
        let role = |want: Role| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while status.borrow().role != want {
                assert!(Instant::now() < deadline, "never {}", want.as_str());
                std::thread::sleep(Duration::from_millis(10));
            }
            Instant::now()
        };
        role(Role::Leader);
        let frozen = Instant::now();
        proxy.freeze();
        let deposed = role(Role::Deposed);
        let why = status.borrow().why.clone().unwrap_or_default();
        assert!(why.contains("ran out"), "{why}");
        // Within a lease (and the wait's resolution) of the freeze.
        assert!(deposed - frozen < ttl * 2, "{:?} after the freeze", deposed - frozen);
        let rows = db.query("SELECT holder, epoch::text FROM leader_lease");
        assert_eq!(rows, [[Some("a".to_owned()), Some("1".to_owned())]]);
        drop(keeper);
    }

    #[test]
    fn addresses_round_trip_through_the_lease_row() {
        let state = |address: &str| LeaseState {
            holder: "h".into(),
            address: address.into(),
            epoch: 1,
            age: Duration::ZERO,
            expires_in: TTL,
        };
        let both = leader_of(&state(&encode_address("ws://a:1", Some("http://a:2"))));
        assert_eq!((both.ws.as_str(), both.http.as_deref()), ("ws://a:1", Some("http://a:2")));
        let ws = leader_of(&state(&encode_address("wss://a:1", None)));
        assert_eq!((ws.ws.as_str(), ws.http), ("wss://a:1", None));
    }
}
