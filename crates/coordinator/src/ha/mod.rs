//! High availability on PostgreSQL: several coordinators on one database,
//! one leader at a time (docs/SCALING.md).
//!
//! A coordinator started on PostgreSQL binds its ports at once and starts
//! as a **standby**: its lease keeper (`lease.rs`, a thread) tries to take
//! the lease every `poll`, and meanwhile every connection is answered with
//! a redirect to the leader (`redirect.rs`). When it wins, in this order:
//! the standby phase ends (its connections are closed, the listening
//! sockets stay open — duplicates of them were kept), the store is opened
//! with the lease's epoch set **before** anything is loaded or written, the
//! queue is recovered from it, and the coordinator serves as the leader on
//! the same sockets, renewing the lease four times per `ttl`.
//!
//! **Stepping down is fail-stop by exit.** When the lease is lost (another
//! coordinator took it, or it ran out by this process's own clock, as after
//! a SIGSTOP) or the store refuses a write as fenced, [`run`] returns
//! [`RunError::Deposed`] (or the store error) at once, without draining,
//! and the `legacygpu` binary exits with code 75: connections are closed by
//! the kernel and nothing more is sent or written. The supervisor
//! (systemd `Restart=always`, a container restart policy) starts it again
//! and it comes back as a standby. Why not step down in place: everything
//! a deposed leader holds in memory — the queue, held outcomes,
//! assignments, connections — is stale the moment another leads, and an
//! exit is the one step-down that provably drops all of it at once;
//! coming back costs a restart (well under a second), paid only by a
//! coordinator that was already not serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use store::{LeaderLease, LeaseState, Target};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::config::{Config, StoreMode};
use crate::server::{Coordinator, RunError, StartError};

mod lease;
pub(crate) mod redirect;

use lease::{Keeper, decode_address, encode_address, leader_of};

/// What a coordinator is, as far as leading goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Waiting for the lease; redirecting everyone to the leader.
    Standby,
    Leader,
    /// Lost the lease (or released it): must stop now.
    Deposed,
}

impl Role {
    /// How health and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
            Role::Deposed => "deposed",
        }
    }
}

/// Who leads, from the lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leader {
    pub holder: String,
    /// Its WebSocket URL (for `not_leader`).
    pub ws: String,
    /// Its HTTP API's URL (for 307), when it serves one.
    pub http: Option<String>,
}

/// What the lease keeper last learnt.
#[derive(Debug, Clone)]
pub(crate) struct HaStatus {
    pub role: Role,
    /// Ours while leading; the leader's last seen while standing by.
    pub epoch: u64,
    pub leader: Option<Leader>,
    /// The lease's age (since its last renewal) and how long it had left,
    /// as read at `seen`.
    age: Duration,
    expires_in: Duration,
    seen: Instant,
    /// Why this coordinator stepped down.
    pub why: Option<String>,
    /// This coordinator's name in the lease row and the registry.
    holder: String,
    /// Every coordinator in the registry at `listed` (empty until read).
    coordinators: Vec<store::CoordinatorSeen>,
    listed: Instant,
    /// A coordinator silent for longer than this (a lease's length: four
    /// missed reports) is shown as gone.
    gone_after: Duration,
}

impl HaStatus {
    fn standby(holder: String, gone_after: Duration) -> HaStatus {
        HaStatus {
            role: Role::Standby,
            epoch: 0,
            leader: None,
            age: Duration::ZERO,
            expires_in: Duration::ZERO,
            seen: Instant::now(),
            why: None,
            holder,
            coordinators: Vec::new(),
            listed: Instant::now(),
            gone_after,
        }
    }

    /// The registry as just read.
    fn registry(&mut self, list: Vec<store::CoordinatorSeen>) {
        self.coordinators = list;
        self.listed = Instant::now();
    }

    /// Every coordinator on the database as it last reported, its report's
    /// age brought up to now. One silent for longer than a lease (a killed
    /// or frozen process: a clean stop leaves the list) is `gone`; one
    /// claiming to lead that does not hold the lease is `deposed`.
    pub fn coordinators(&self) -> Vec<CoordinatorView> {
        let since = self.listed.elapsed();
        let holder = self.leader.as_ref().map(|l| l.holder.as_str());
        self.coordinators
            .iter()
            .map(|c| {
                let seen = c.seen + since;
                let role = if seen > self.gone_after {
                    "gone"
                } else if c.role == Role::Leader.as_str() && holder != Some(c.holder.as_str()) {
                    "deposed"
                } else {
                    c.role.as_str()
                };
                let (ws, http) = decode_address(&c.address);
                CoordinatorView {
                    holder: c.holder.clone(),
                    ws,
                    http,
                    role: role.to_owned(),
                    epoch: c.epoch,
                    up: c.up + since,
                    seen,
                    this: c.holder == self.holder,
                }
            })
            .collect()
    }

    /// The lease was taken at `epoch`.
    fn lead(&mut self, epoch: u64, address: &str, holder: &str) {
        let state = LeaseState {
            holder: holder.to_owned(),
            address: address.to_owned(),
            epoch,
            age: Duration::ZERO,
            expires_in: Duration::ZERO,
        };
        self.role = Role::Leader;
        self.observe(Some(&state));
    }

    /// The lease row as read.
    fn observe(&mut self, state: Option<&LeaseState>) {
        self.seen = Instant::now();
        match state {
            Some(s) if !s.expired() || self.role == Role::Leader => {
                self.epoch = s.epoch;
                self.age = s.age;
                self.expires_in = s.expires_in;
                self.leader = Some(leader_of(s));
            }
            // Expired: nobody leads until someone takes it.
            Some(s) => {
                self.epoch = s.epoch;
                self.age = s.age;
                self.expires_in = Duration::ZERO;
                self.leader = None;
            }
            None => self.leader = None,
        }
    }

    /// A standby could not read the lease at `now`. It names the leader it
    /// last saw only while that lease, as read, may still run (by this
    /// clock): then
    /// nobody is known to lead — health shows no leader, the API answers
    /// 503 `not_leader` — until the lease is read again.
    fn unreadable(&mut self, now: Instant) {
        if self.role == Role::Standby && now >= self.seen + self.expires_in {
            self.leader = None;
        }
    }

    fn renewed(&mut self) {
        self.seen = Instant::now();
        self.age = Duration::ZERO;
    }

    /// The lease's age now, when anybody leads.
    pub fn lease_age(&self) -> Option<Duration> {
        self.leader.as_ref().map(|_| self.age + self.seen.elapsed())
    }
}

/// One coordinator of the registry, as [`HaStatus::coordinators`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CoordinatorView {
    pub holder: String,
    pub ws: String,
    pub http: Option<String>,
    /// `leader`, `standby`, `deposed` or `gone`.
    pub role: String,
    pub epoch: u64,
    /// Since it started; since its last report.
    pub up: Duration,
    pub seen: Duration,
    /// The coordinator answering.
    pub this: bool,
}

/// How the rest of the coordinator sees the lease.
#[derive(Debug, Clone)]
pub(crate) struct HaView {
    pub status: watch::Receiver<HaStatus>,
    /// This instance redirects everyone (it never becomes the leader: the
    /// leader is a new instance on the same sockets).
    pub standby: bool,
}

/// What a coordinator on PostgreSQL keeps besides its standby instance.
pub(crate) struct HaParts {
    keeper: Keeper,
    status: watch::Receiver<HaStatus>,
    /// Duplicates of the bound sockets, for the leader instance.
    ws: std::net::TcpListener,
    http: Option<std::net::TcpListener>,
    /// The configuration as given (the standby's own has a short grace).
    config: Arc<Config>,
    /// The standby's certificates and join secrets, for the leader.
    carried: crate::server::Carried,
}

/// A bound coordinator on PostgreSQL, in its standby phase.
pub(crate) async fn standby(
    config: Config,
    ws: TcpListener,
    http: Option<(TcpListener, SocketAddr)>,
) -> Result<Coordinator, StartError> {
    let StoreMode::Postgres { target: Target::Postgres(url), lease: lease_config, .. } =
        &config.store
    else {
        return Err(StartError::Ha("the lease needs a postgres:// store".into()));
    };
    // Applies the migrations, so a newer schema stops the start here.
    let lease = LeaderLease::connect(url)?;
    let ws_addr =
        ws.local_addr().map_err(|source| StartError::Bind { addr: config.ws_addr, source })?;
    let advertise_ws =
        lease_config.advertise_ws.clone().unwrap_or_else(|| advertised("ws", ws_addr));
    let advertise_http = match (&lease_config.advertise_http, &http) {
        (Some(url), _) => Some(url.clone()),
        (None, Some((_, addr))) => Some(advertised("http", *addr)),
        (None, None) => None,
    };
    let address = encode_address(&advertise_ws, advertise_http.as_deref());
    let holder = holder_name()?;
    let (tx, status) = watch::channel(HaStatus::standby(holder.clone(), lease_config.ttl));
    let keeper = Keeper::spawn(lease, holder, address, lease_config.clone(), tx)
        .map_err(|e| StartError::Ha(format!("cannot start the lease keeper: {e}")))?;
    let dup = |l: TcpListener| -> Result<(TcpListener, std::net::TcpListener), std::io::Error> {
        let std = l.into_std()?;
        let copy = std.try_clone()?;
        Ok((TcpListener::from_std(std)?, copy))
    };
    let bind_err = |source| StartError::Bind { addr: ws_addr, source };
    let (ws, ws_dup) = dup(ws).map_err(bind_err)?;
    let (http, http_dup) = match http {
        Some((l, addr)) => {
            let (l, copy) = dup(l).map_err(|source| StartError::Bind { addr, source })?;
            (Some((l, addr)), Some(copy))
        }
        None => (None, None),
    };
    let config = Arc::new(config);
    // Standing down from standby to leader should not wait for clients.
    let quick = Config { shutdown_grace: Duration::from_millis(100), ..(*config).clone() };
    let view = HaView { status: status.clone(), standby: true };
    let mut c = Coordinator::assemble(Arc::new(quick), ws, ws_addr, http, Some(view), None, None)?;
    let carried = c.carried();
    c.ha = Some(HaParts { keeper, status, ws: ws_dup, http: http_dup, config, carried });
    Ok(c)
}

/// `scheme://addr`, `wss`/`https` unless the address is loopback (where
/// plaintext is accepted); the host name for an unspecified address.
fn advertised(kind: &str, addr: SocketAddr) -> String {
    let tls = !addr.ip().is_loopback();
    let scheme = match (kind, tls) {
        ("ws", false) => "ws",
        ("ws", true) => "wss",
        (_, false) => "http",
        (_, true) => "https",
    };
    let host = if addr.ip().is_unspecified() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("{scheme}://{host}:{}", addr.port())
}

/// Unique to this process: host, pid and a random part (a restarted
/// coordinator takes the lease anew, at a new epoch).
fn holder_name() -> Result<String, StartError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let random = tls::random_secret().map_err(|e| StartError::Ha(e.to_string()))?;
    let random: String = random.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    Ok(format!("{}-{}-{random}", host.trim(), std::process::id()))
}

/// Runs a coordinator on PostgreSQL: standby until it takes the lease,
/// then leader until `shutdown` (releasing the lease) or until it loses
/// the lease ([`RunError::Deposed`], returned at once).
pub(crate) async fn run(
    mut standby: Coordinator,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let Some(parts) = standby.ha.take() else { return standby.serve(shutdown).await };
    let HaParts { keeper, status, ws, http, config, carried } = parts;
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    let mut asked = false;
    let mut watching = status.clone();
    standby
        .serve(async {
            tokio::select! {
                _ = &mut shutdown => asked = true,
                _ = watching.wait_for(|s| s.role != Role::Standby) => {}
            }
        })
        .await?;
    let (role, epoch) = {
        let s = status.borrow();
        (s.role, s.epoch)
    };
    if asked || role != Role::Leader {
        keeper.stop();
        return Ok(());
    }
    let leader = match lead(config, ws, http, epoch, status.clone(), carried) {
        Ok(c) => c,
        Err(e) => {
            keeper.stop();
            return Err(RunError::Store(format!("cannot take over as the leader: {e}")));
        }
    };
    info!(epoch, tasks = leader.recovered_tasks(), "leading: recovered the queue from the store");
    let mut watching = status.clone();
    let result = tokio::select! {
        r = leader.serve(async { (&mut shutdown).await }) => r,
        _ = watching.wait_for(|s| s.role == Role::Deposed) => {
            let why = status.borrow().why.clone().unwrap_or_else(|| "the lease was lost".into());
            return Err(RunError::Deposed(why));
        }
    };
    keeper.stop();
    result
}

/// The leader instance on the kept sockets, its store at `epoch`.
fn lead(
    config: Arc<Config>,
    ws: std::net::TcpListener,
    http: Option<std::net::TcpListener>,
    epoch: u64,
    status: watch::Receiver<HaStatus>,
    carried: crate::server::Carried,
) -> Result<Coordinator, StartError> {
    let ws = TcpListener::from_std(ws)
        .map_err(|source| StartError::Bind { addr: config.ws_addr, source })?;
    let ws_addr =
        ws.local_addr().map_err(|source| StartError::Bind { addr: config.ws_addr, source })?;
    let http = match http {
        Some(l) => {
            let addr =
                l.local_addr().map_err(|source| StartError::Bind { addr: ws_addr, source })?;
            let l = TcpListener::from_std(l).map_err(|source| StartError::Bind { addr, source })?;
            Some((l, addr))
        }
        None => None,
    };
    let view = HaView { status, standby: false };
    Coordinator::assemble(config, ws, ws_addr, http, Some(view), Some(epoch), Some(carried))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_use_tls_off_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(advertised("ws", a("127.0.0.1:8765")), "ws://127.0.0.1:8765");
        assert_eq!(advertised("http", a("127.0.0.1:8000")), "http://127.0.0.1:8000");
        assert_eq!(advertised("ws", a("10.0.0.2:8765")), "wss://10.0.0.2:8765");
        assert_eq!(advertised("http", a("[fd00::1]:8000")), "https://[fd00::1]:8000");
        assert!(advertised("ws", a("0.0.0.0:8765")).starts_with("wss://"));
    }

    #[test]
    fn the_registry_shows_who_is_gone_and_who_only_claims_to_lead() {
        let row = |holder: &str, role: &str, seen_ms| store::CoordinatorSeen {
            holder: holder.into(),
            address: format!("ws://{holder}:1 http://{holder}:2"),
            role: role.into(),
            epoch: 2,
            up: Duration::from_secs(60),
            seen: Duration::from_millis(seen_ms),
        };
        let mut s = HaStatus::standby("b".into(), Duration::from_secs(3));
        s.observe(Some(&LeaseState {
            holder: "a".into(),
            address: "ws://a:1 http://a:2".into(),
            epoch: 2,
            age: Duration::ZERO,
            expires_in: Duration::from_secs(2),
        }));
        s.registry(vec![
            row("a", "leader", 100),
            row("b", "standby", 100),
            row("c", "leader", 200),
            row("d", "standby", 60_000),
        ]);
        let seen: Vec<(String, String, bool)> =
            s.coordinators().into_iter().map(|c| (c.holder, c.role, c.this)).collect();
        let want = [
            ("a", "leader", false),
            ("b", "standby", true),
            ("c", "deposed", false),
            ("d", "gone", false),
        ];
        let want: Vec<(String, String, bool)> =
            want.iter().map(|(h, r, t)| ((*h).into(), (*r).into(), *t)).collect();
        assert_eq!(seen, want);
        let a = &s.coordinators()[0];
        assert_eq!((a.ws.as_str(), a.http.as_deref()), ("ws://a:1", Some("http://a:2")));
    }

    #[test]
    fn an_expired_lease_names_no_leader() {
        let mut s = HaStatus::standby("b".into(), Duration::from_secs(3));
        let state = |expires_in| LeaseState {
            holder: "a".into(),
            address: "ws://a:1 http://a:2".into(),
            epoch: 4,
            age: Duration::from_millis(500),
            expires_in,
        };
        s.observe(Some(&state(Duration::from_secs(2))));
        assert_eq!(s.leader.as_ref().map(|l| l.ws.as_str()), Some("ws://a:1"));
        assert_eq!(s.epoch, 4);
        assert!(s.lease_age().unwrap() >= Duration::from_millis(500));
        s.observe(Some(&state(Duration::ZERO)));
        assert!(s.leader.is_none() && s.lease_age().is_none());
        assert_eq!(s.role.as_str(), "standby");
    }

    #[test]
    fn a_standby_that_cannot_read_the_lease_names_no_leader_once_it_may_have_run_out() {
        let mut s = HaStatus::standby("b".into(), Duration::from_secs(3));
        let state = |expires_in| LeaseState {
            holder: "a".into(),
            address: "ws://a:1 http://a:2".into(),
            epoch: 4,
            age: Duration::from_millis(500),
            expires_in,
        };
        // Read with two seconds left: a failed read within them changes
        // nothing, one after them names nobody.
        s.observe(Some(&state(Duration::from_secs(2))));
        s.unreadable(Instant::now() + Duration::from_millis(1_900));
        assert_eq!(s.leader.as_ref().map(|l| l.ws.as_str()), Some("ws://a:1"));
        s.unreadable(Instant::now() + Duration::from_secs(2));
        assert!(s.leader.is_none() && s.lease_age().is_none());
        assert_eq!((s.role, s.epoch), (Role::Standby, 4));
        // The leader itself is never cleared this way (its own timer rules).
        let mut l = HaStatus::standby("a".into(), Duration::from_secs(3));
        l.lead(5, "ws://a:1", "a");
        l.unreadable(Instant::now() + Duration::from_secs(60));
        assert!(l.leader.is_some());
    }
}
