//! The coordinator's lifecycle, in the shape of mini-redis's server: bind,
//! run until a shutdown signal, stop accepting, tell everyone, drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sched::ConnId;
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{Config, StoreMode};
use crate::conn::{self, ConnCtx};
use crate::core::Core;
use crate::http::{self, Api};
use crate::observe::Observer;
use crate::persist;
use crate::telemetry::Telemetry;

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Why a running coordinator stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the store failed, so nothing more could be made durable: {0}")]
    Store(String),
}

/// A bound coordinator, ready to run.
pub struct Coordinator {
    config: Arc<Config>,
    ws: TcpListener,
    ws_addr: SocketAddr,
    http: Option<(TcpListener, SocketAddr)>,
    core: Core,
}

impl Coordinator {
    /// Binds the ports. Port 0 picks a free port (see [`Coordinator::ws_addr`]).
    pub async fn bind(config: Config) -> Result<Coordinator, StartError> {
        let ws = TcpListener::bind(config.ws_addr)
            .await
            .map_err(|source| StartError::Bind { addr: config.ws_addr, source })?;
        let ws_addr =
            ws.local_addr().map_err(|source| StartError::Bind { addr: config.ws_addr, source })?;
        if !ws_addr.ip().is_loopback() && config.token.is_none() && !config.insecure {
            warn!(
                "protected mode: {ws_addr} is reachable from other machines but no token is set, \
                 so only loopback clients are accepted; use --token, or --insecure to accept anyone"
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
        let config = Arc::new(config);
        let core = recover(Arc::clone(&config))?;
        Ok(Coordinator { config, ws, ws_addr, http, core })
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
    /// returns; or until the store fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let (core_tx, core_rx) = mpsc::channel(self.config.limits.core_queue.max(1));
        let (stop_tx, stop_rx) = watch::channel(false);
        // `POST /cluster/shutdown` turns this.
        let (api_stop_tx, mut api_stop) = watch::channel(false);
        let approvals = self.core.approvals.clone();
        let recorder = self.core.telemetry.recorder();
        let http = self.http.map(|(listener, _)| {
            let api = Api::new(core_tx.clone(), &self.core, api_stop_tx);
            tokio::spawn(http::serve(listener, api, stop_rx.clone()))
        });
        let mut core_task = tokio::spawn(self.core.run(core_rx, stop_rx));
        let (mut failure, mut core_done) = (None, false);

        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let mut conns = JoinSet::new();
        let mut next_conn = 0u64;
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
                accepted = self.ws.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            warn!("accept failed: {e}");
                            continue;
                        }
                    };
                    next_conn += 1;
                    let permit = Arc::clone(&limit).try_acquire_owned().ok();
                    let ctx = ConnCtx {
                        conn: ConnId(next_conn),
                        remote,
                        core: core_tx.clone(),
                        config: Arc::clone(&self.config),
                        admitted: permit.is_some(),
                        approvals: approvals.clone(),
                        metrics: Arc::clone(&recorder),
                    };
                    conns.spawn(async move {
                        conn::serve(stream, ctx).await;
                        drop(permit);
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }

        info!("shutting down: closing connections");
        drop(self.ws);
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

/// The core, with the store opened and its tasks recovered.
fn recover(config: Arc<Config>) -> Result<Core, StartError> {
    let clock = Clock::start();
    let telemetry = Telemetry::new(config.limits.event_buffer);
    let (observer, loaded) = match &config.store {
        StoreMode::Memory => (Observer::in_memory(), None),
        StoreMode::Sqlite { data_dir, sync } => {
            let mut db = store::SqliteStore::open(data_dir, *sync)?;
            let loaded = db.load()?;
            let observer =
                Observer::with_store(Box::new(db), telemetry.recorder(), &config.limits)?;
            (observer, Some(loaded))
        }
    };
    let mut core = Core::new(config, observer, telemetry, clock);
    if let Some(loaded) = loaded {
        for (peer, credential_sha256) in loaded.approvals {
            core.approvals.approve(&peer, credential_sha256);
        }
        // Before any peer joins, so that a quarantined worker stays so.
        core.sched.handle_recovered_reputation(persist::reputations(loaded.reputation));
        let n = loaded.tasks.len();
        let tasks = loaded.tasks.into_iter().map(persist::recovered).collect();
        let now = core.now();
        core.sched.handle_recovered(now, tasks);
        core.sched.set_next_task_id(loaded.next_task_id.saturating_sub(1));
        core.flush();
        if n > 0 {
            info!(tasks = n, "recovered tasks from the store");
        }
    }
    Ok(core)
}
