//! The coordinator's lifecycle, in the shape of mini-redis's server: bind,
//! run until a shutdown signal, stop accepting, tell everyone, drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sched::ConnId;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Config;
use crate::conn::{self, ConnCtx};
use crate::core::Core;
use crate::observe::Observer;

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A bound coordinator, ready to run.
pub struct Coordinator {
    config: Arc<Config>,
    ws: TcpListener,
    ws_addr: SocketAddr,
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
        Ok(Coordinator { config: Arc::new(config), ws, ws_addr })
    }

    /// The WebSocket address actually bound.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// Runs until `shutdown` completes, then closes every connection and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (core_tx, core_rx) = mpsc::channel(65_536);
        let (stop_tx, stop_rx) = watch::channel(false);
        let core = Core::new(Arc::clone(&self.config), Observer::in_memory());
        let core_task = tokio::spawn(core.run(core_rx, stop_rx));

        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let mut conns = JoinSet::new();
        let mut next_conn = 0u64;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
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
        let _ = core_task.await;
        drop(core_tx);
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            conns.abort_all();
        }
        info!("coordinator stopped");
    }
}
