//! The coordinator's lifecycle, in the shape of mini-redis's server: bind,
//! run until a shutdown signal, stop accepting, tell everyone, drain.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sched::ConnId;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{Config, StoreMode};
use crate::conn::{self, ConnCtx};
use crate::core::Core;
use crate::credentials::{Credentials, TokenKind};
use crate::edge::{FrameBudget, IpLimits, Listener, fd_budget};
use crate::ha::{HaParts, HaView};
use crate::http::{self, Api};
use crate::identity::SessionKey;
use crate::observe::Observer;
use crate::telemetry::Telemetry;
use crate::tls::Tls;

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Unreadable(#[from] persist::Unreadable),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("join tokens: {0}")]
    Credentials(#[from] crate::credentials::CredentialError),
    #[error("cannot create the ephemeral store's temporary directory: {0}")]
    Ephemeral(std::io::Error),
    #[error("high availability: {0}")]
    Ha(String),
}

/// Reloads the certificates of a running coordinator (the CLI does on SIGHUP).
#[derive(Debug, Clone)]
pub struct TlsHandle(Arc<Tls>);

impl TlsHandle {
    /// Reads the certificates again; new connections get them. Returns the
    /// CA pin, which changes only when the operator's CA did.
    pub fn reload(&self) -> Result<String, String> {
        self.0.reload().map(|pin| pin.to_string()).map_err(|e| e.to_string())
    }
}

/// Why a running coordinator stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the store failed, so nothing more could be made durable: {0}")]
    Store(String),
    /// This coordinator led and lost the lease: it must stop at once
    /// (docs/SCALING.md; the binary exits so that its supervisor restarts
    /// it as a standby).
    #[error("stepped down as the leader: {0}")]
    Deposed(String),
}

impl RunError {
    /// Whether the coordinator stopped because another one leads now (a
    /// fenced write included), rather than for a failure of its own.
    pub fn is_deposed(&self) -> bool {
        match self {
            RunError::Deposed(_) => true,
            RunError::Store(e) => e.starts_with("fenced"),
        }
    }
}

/// See [`Coordinator::carried`].
pub(crate) struct Carried {
    tls: Arc<Tls>,
    /// (kind, secret) of the join tokens, as `Credentials::adopt` takes them.
    secrets: Vec<(String, String)>,
}

/// A bound coordinator, ready to run.
pub struct Coordinator {
    config: Arc<Config>,
    ws: TcpListener,
    ws_addr: SocketAddr,
    http: Option<(TcpListener, SocketAddr)>,
    core: Core,
    tls: Arc<Tls>,
    credentials: Arc<Credentials>,
    /// What the HTTP API reads tasks from (when it is on).
    reader: Option<crate::reads::Reader>,
    /// The ephemeral store's directory in memory mode, removed on drop.
    _ephemeral: Option<tempfile::TempDir>,
    /// On PostgreSQL: how this instance sees the lease.
    view: Option<HaView>,
    /// On PostgreSQL, in the standby instance: the lease keeper and the
    /// sockets the leader instance will serve on.
    pub(crate) ha: Option<HaParts>,
}

impl Coordinator {
    /// Binds the ports. Port 0 picks a free port (see [`Coordinator::ws_addr`]).
    pub async fn bind(config: Config) -> Result<Coordinator, StartError> {
        let ws = TcpListener::bind(config.ws_addr)
            .await
            .map_err(|source| StartError::Bind { addr: config.ws_addr, source })?;
        let ws_addr =
            ws.local_addr().map_err(|source| StartError::Bind { addr: config.ws_addr, source })?;
        if config.insecure_plaintext && !ws_addr.ip().is_loopback() {
            warn!(
                "--insecure-plaintext: plaintext is accepted from other machines, so tokens and \
                 results may cross the network in clear text"
            );
        }
        let http = match config.http_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                let bound =
                    listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
                Some((listener, bound))
            }
            None => None,
        };
        if let StoreMode::Postgres { .. } = config.store {
            return crate::ha::standby(config, ws, http).await;
        }
        Coordinator::assemble(Arc::new(config), ws, ws_addr, http, None, None, None)
    }

    /// What a standby hands to the leader instance it becomes: the same
    /// certificates (so that its banner's pin holds, and SIGHUP reloads what
    /// is served) and the same join secrets (its banner's tokens), unless
    /// the store holds newer ones.
    pub(crate) fn carried(&self) -> Carried {
        let secrets = [TokenKind::Worker, TokenKind::Client]
            .into_iter()
            .map(|kind| (kind.as_str().to_owned(), self.credentials.join_token(kind).secret))
            .collect();
        Carried { tls: Arc::clone(&self.tls), secrets }
    }

    /// The coordinator on bound sockets: certificates, the store recovered
    /// (on PostgreSQL only for a leader, at `epoch`), credentials.
    pub(crate) fn assemble(
        config: Arc<Config>,
        ws: TcpListener,
        ws_addr: SocketAddr,
        http: Option<(TcpListener, SocketAddr)>,
        view: Option<HaView>,
        epoch: Option<u64>,
        carried: Option<Carried>,
    ) -> Result<Coordinator, StartError> {
        let tls = match &carried {
            Some(c) => Arc::clone(&c.tls),
            None => Arc::new(Tls::load(config.cert_source())?),
        };
        let ephemeral = match (&config.store, &http) {
            (StoreMode::Memory, Some(_)) => Some(
                tempfile::Builder::new()
                    .prefix("legacygpu-ephemeral-")
                    .tempdir()
                    .map_err(StartError::Ephemeral)?,
            ),
            _ => None,
        };
        let target = store_target(&config, ephemeral.as_ref(), epoch);
        let (core, join_secrets) = recover(Arc::clone(&config), target.as_ref(), epoch)?;
        let reader = match (&target, &http) {
            (Some(target), Some(_)) => Some(crate::reads::open(target)?),
            _ => None,
        };
        let credentials = Credentials::load(&config, core.approvals.clone(), Arc::clone(&tls))?;
        if let Some(c) = &carried {
            credentials.adopt(&c.secrets)?;
        }
        credentials.adopt(&join_secrets)?;
        let credentials = Arc::new(credentials);
        Ok(Coordinator {
            config,
            ws,
            ws_addr,
            http,
            core,
            tls,
            credentials,
            reader,
            _ephemeral: ephemeral,
            view,
            ha: None,
        })
    }

    /// The pin (SHA-256 of the CA's public key, hex) clients trust.
    pub fn ca_pin(&self) -> String {
        self.tls.pin().to_string()
    }

    /// The names the generated server certificate carries (none for the
    /// operator's own certificate).
    pub fn tls_names(&self) -> Vec<String> {
        self.tls.names()
    }

    /// The join token for workers, or the token for clients.
    pub fn join_token(&self, kind: TokenKind) -> String {
        self.credentials.join_token(kind).to_string()
    }

    /// A handle to reload the certificates while running.
    pub fn tls_handle(&self) -> TlsHandle {
        TlsHandle(Arc::clone(&self.tls))
    }

    /// The HTTP API's address actually bound, when it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(_, addr)| *addr)
    }

    /// The WebSocket address actually bound.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// Tasks recovered from the store at start (queued, running, finished).
    pub fn recovered_tasks(&self) -> usize {
        self.core.sched.tasks().count()
    }

    /// Runs until `shutdown` completes, then closes every connection and
    /// returns; or until the store fails. On PostgreSQL: stands by until it
    /// takes the lease, then leads until `shutdown` or until it loses the
    /// lease ([`RunError::Deposed`], returned at once: exit then).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        if self.ha.is_some() {
            return crate::ha::run(self, shutdown).await;
        }
        self.serve(shutdown).await
    }

    /// Whether this coordinator is (so far) a standby.
    pub fn is_standby(&self) -> bool {
        self.view.as_ref().is_some_and(|v| v.standby)
    }

    /// Serves as this instance is (single, standby or leader) until
    /// `shutdown` completes or the store fails.
    pub(crate) async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let (core_tx, core_rx) = mpsc::channel(self.config.limits.core_queue.max(1));
        let (stop_tx, stop_rx) = watch::channel(false);
        // `POST /cluster/shutdown` turns this.
        let (api_stop_tx, mut api_stop) = watch::channel(false);
        let recorder = self.core.telemetry.recorder();
        let edge = &self.config.edge;
        let fds = fd_budget(self.config.max_connections, edge.max_http_connections);
        let ip_limits =
            IpLimits::new(edge.max_connections_per_ip, edge.new_connections_per_ip_per_s);
        let budget = FrameBudget::new(edge.max_partial_frame_bytes);
        let reader = self.reader;
        let http = self.http.map(|(listener, _)| {
            let listener =
                Listener::new(listener, "http", Arc::clone(&ip_limits), Arc::clone(&recorder));
            let api = Api::new(
                core_tx.clone(),
                &self.core,
                api_stop_tx,
                Arc::clone(&self.credentials),
                reader,
            )
            .with_ha(self.view.clone());
            let serving = http::Serving { tls: Arc::clone(&self.tls), max_connections: fds.http };
            tokio::spawn(http::serve(listener, api, serving, stop_rx.clone()))
        });
        let mut core_task = tokio::spawn(self.core.run(core_rx, stop_rx));
        let (mut failure, mut core_done) = (None, false);

        // Over the limit, a few connections at a time are told so (HTTP 503
        // at the upgrade); the rest are closed at once, so that a flood never
        // takes the descriptors the HTTP API keeps.
        let overflow_share = (fds.ws / 16).clamp(1, 64);
        let limit = Arc::new(Semaphore::new(fds.ws - overflow_share.min(fds.ws - 1)));
        let overflow = Arc::new(Semaphore::new(overflow_share));
        let mut ws = Listener::new(self.ws, "ws", ip_limits, Arc::clone(&recorder));
        let mut conns = JoinSet::new();
        let mut next_conn = 0u64;
        let standby = self.view.as_ref().filter(|v| v.standby).map(|v| v.status.clone());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Ok(()) = api_stop.changed() => break,
                stopped = &mut core_task => {
                    core_done = true;
                    failure = stopped.ok().flatten();
                    break;
                }
                (stream, remote, ip_permit) = ws.accept() => {
                    next_conn += 1;
                    // Over the limit, the upgrade is refused with 503 (under
                    // the handshake deadline); the fd budget keeps room for it.
                    let permit = Arc::clone(&limit).try_acquire_owned().ok();
                    let told = match permit {
                        Some(_) => None,
                        None => match Arc::clone(&overflow).try_acquire_owned() {
                            Ok(p) => Some(p),
                            Err(_) => {
                                ws.count_refused("max_connections");
                                continue;
                            }
                        },
                    };
                    let ctx = ConnCtx {
                        conn: ConnId(next_conn),
                        remote,
                        core: core_tx.clone(),
                        config: Arc::clone(&self.config),
                        admitted: permit.is_some(),
                        credentials: Arc::clone(&self.credentials),
                        metrics: Arc::clone(&recorder),
                        tls: Arc::clone(&self.tls),
                        budget: Arc::clone(&budget),
                        standby: standby.clone(),
                    };
                    conns.spawn(async move {
                        conn::serve(stream, ctx).await;
                        drop((permit, told, ip_permit));
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }

        info!("shutting down: closing connections");
        drop(ws);
        let _ = stop_tx.send(true);
        if !core_done {
            failure = core_task.await.ok().flatten();
        }
        drop(core_tx);
        if let Some(http) = http {
            let _ = tokio::time::timeout(self.config.shutdown_grace, http).await;
        }
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            conns.abort_all();
        }
        info!("coordinator stopped");
        match failure {
            Some(e) => Err(RunError::Store(e.to_string())),
            None => Ok(()),
        }
    }
}

/// The store tasks are written to: the configured one (on PostgreSQL only
/// for a leader, which has an `epoch`), or in memory mode with HTTP on, an
/// ephemeral SQLite file in `ephemeral` (see `reads.rs`).
fn store_target(
    config: &Config,
    ephemeral: Option<&tempfile::TempDir>,
    epoch: Option<u64>,
) -> Option<store::Target> {
    match &config.store {
        StoreMode::Sqlite { data_dir, .. } => Some(store::Target::Sqlite(data_dir.clone())),
        StoreMode::Memory => ephemeral.map(|d| store::Target::Sqlite(d.path().to_owned())),
        StoreMode::Postgres { target, .. } => epoch.map(|_| target.clone()),
    }
}

/// What each peer ran to an end in the stored history (the attempts of the
/// tasks kept: within the result TTL; replicas and canaries are not kept).
fn tallies(tasks: &[store::StoredTask]) -> BTreeMap<sched::PeerId, sched::Tally> {
    let mut by_peer: BTreeMap<sched::PeerId, sched::Tally> = BTreeMap::new();
    for attempt in tasks.iter().flat_map(|t| &t.attempts) {
        let (completed, failed) = match attempt.end {
            Some(store::AttemptEnd::Completed) => (1, 0),
            Some(store::AttemptEnd::Failed) => (0, 1),
            _ => continue,
        };
        let tally = by_peer.entry(sched::PeerId::from(attempt.peer.as_str())).or_default();
        tally.completed += completed;
        tally.failed += failed;
    }
    by_peer
}

/// The core, with the store opened and its tasks recovered. On
/// PostgreSQL the store is opened only by a leader, with its `epoch` set
/// before anything is loaded, so that the fence refuses every batch once a
/// newer leader exists; a standby keeps nothing.
fn recover(
    config: Arc<Config>,
    target: Option<&store::Target>,
    epoch: Option<u64>,
) -> Result<(Core, Vec<(String, String)>), StartError> {
    let clock = Clock::start();
    let telemetry = Telemetry::new(config.limits.event_buffer);
    // An ephemeral store need not survive the machine: the OS writes it.
    let sync = match &config.store {
        StoreMode::Sqlite { sync, .. } => *sync,
        StoreMode::Memory => store::Sync::Normal,
        StoreMode::Postgres { .. } => store::Sync::Full,
    };
    let (observer, loaded) = match target {
        None => (Observer::in_memory(), None),
        Some(target) => {
            let mut db = store::open(target, sync)?;
            if let Some(epoch) = epoch {
                db.set_epoch(epoch);
            }
            let loaded = db.load()?;
            // SQLite commits in tens of microseconds without an fsync: an
            // idle core does better to commit itself than to wake the writer.
            let commit_here =
                sync == store::Sync::Normal && !matches!(config.store, StoreMode::Postgres { .. });
            let observer =
                Observer::with_store(db, telemetry.recorder(), &config.limits, commit_here)?;
            (observer, Some(loaded))
        }
    };
    let mut core = Core::new(config, observer, telemetry, clock);
    let mut join_secrets = Vec::new();
    if let Some(loaded) = loaded {
        join_secrets = loaded.join_secrets;
        for (peer, credential_sha256) in loaded.approvals {
            core.approvals.approve(&peer, credential_sha256);
        }
        // Before any peer joins, so that a quarantined worker stays so.
        core.sched.handle_recovered_reputation(persist::reputations(loaded.reputation)?);
        // And so that a worker's table row counts the runs in the store.
        core.sched.handle_recovered_tallies(tallies(&loaded.tasks));
        let n = loaded.tasks.len();
        let tasks: Vec<_> =
            loaded.tasks.into_iter().map(persist::recovered).collect::<Result<_, _>>()?;
        let now = core.now();
        // Newest first: a gamer id goes back to the credential that last
        // submitted under it.
        for r in tasks.iter().rev() {
            if let (sched::Owner::Gamer(g), Some(by)) = (&r.spec.owner, &r.spec.submitter) {
                core.bindings.restore(SessionKey::Gamer(g.to_string()), by, now);
            }
        }
        core.quotas.charge_recovered(&tasks);
        core.sched.handle_recovered(now, tasks);
        core.sched.set_next_task_id(loaded.next_task_id.saturating_sub(1));
        // Past every id the last run could have shown a peer (`ids.rs`).
        core.sched.reserve_ids(core.config.limits.id_block, loaded.next_task_id);
        core.flush();
        if n > 0 {
            info!(tasks = n, "recovered tasks from the store");
        }
    }
    Ok((core, join_secrets))
}
