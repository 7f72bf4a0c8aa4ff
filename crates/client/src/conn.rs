//! The task behind a [`crate::Client`]: owns the WebSocket, matches replies
//! to requests, reconnects and resubmits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::{
    Endpoints, FromCoordinator, RegisterGamer, TaskAccepted, TaskRequest, TaskStatusOut,
    ToCoordinator,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::{ClientError, ClientOptions, Cmd, Counters, TaskOutcome};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Pending {
    seq: u64,
    req: TaskRequest,
    accepted: Option<oneshot::Sender<Result<TaskAccepted, ClientError>>>,
    outcome: oneshot::Sender<TaskOutcome>,
    progress: Option<mpsc::Sender<proto::TaskProgressOut>>,
}

pub(crate) struct Driver {
    /// The coordinators, and which to try next.
    endpoints: Endpoints,
    gamer_id: String,
    options: ClientOptions,
    rx: mpsc::Receiver<Cmd>,
    ws: Ws,
    /// Tasks waiting for their outcome, by task id.
    pending: HashMap<String, Pending>,
    statuses: HashMap<String, VecDeque<oneshot::Sender<Result<TaskStatusOut, ClientError>>>>,
    /// A random prefix for task ids made here, so that a restarted client
    /// with the same gamer id never reuses one.
    session: u32,
    next: u64,
    counters: Arc<Counters>,
    /// When anything last arrived (for `silence_timeout`).
    last_heard: Instant,
}

impl Driver {
    pub async fn connect(
        url: &str,
        gamer_id: String,
        options: ClientOptions,
        rx: mpsc::Receiver<Cmd>,
        counters: Arc<Counters>,
    ) -> Result<Driver, ClientError> {
        let mut endpoints = Endpoints::parse(url)
            .map_err(|e| ClientError::Connect { url: url.to_owned(), reason: e.to_string() })?;
        let ws = find_leader(&mut endpoints, &gamer_id, &options).await?;
        Ok(Driver {
            endpoints,
            gamer_id,
            options,
            rx,
            ws,
            pending: HashMap::new(),
            statuses: HashMap::new(),
            session: fastrand::u32(..),
            next: 0,
            counters,
            last_heard: Instant::now(),
        })
    }

    pub async fn run(mut self) {
        let silence = self.options.silence_timeout.unwrap_or(self.endpoints.silence_timeout());
        let silence = silence.max(Duration::from_millis(30));
        let mut ping = tokio::time::interval(silence / 3);
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    if self.last_heard.elapsed() >= silence {
                        warn!("nothing from the coordinator for {silence:?}; reconnecting");
                        // It stopped answering (frozen): trying it again
                        // first would cost a whole connect_timeout, while
                        // another coordinator may lead by now.
                        self.endpoints.failed();
                        if !self.reconnect().await {
                            return;
                        }
                    } else {
                        let _ = self.ws.send(Message::Ping(Default::default())).await;
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => {
                        if self.on_cmd(cmd).await.is_err() && !self.reconnect().await {
                            return;
                        }
                    }
                    None => {
                        let _ = self.ws.close(None).await;
                        return;
                    }
                },
                frame = self.ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        self.last_heard = Instant::now();
                        self.on_text(text.as_str());
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        if !self.reconnect().await {
                            return;
                        }
                    }
                    Some(Ok(_)) => self.last_heard = Instant::now(),
                },
            }
        }
    }

    async fn on_cmd(&mut self, cmd: Cmd) -> Result<(), ()> {
        match cmd {
            Cmd::Submit { mut req, accepted, outcome, progress } => {
                self.next += 1;
                let task_id = req
                    .task_id
                    .get_or_insert_with(|| format!("{:08x}-{}", self.session, self.next))
                    .clone();
                req.idempotency_key.get_or_insert_with(|| task_id.clone());
                let msg = ToCoordinator::TaskRequest(req.clone());
                let pending =
                    Pending { seq: self.next, req, accepted: Some(accepted), outcome, progress };
                self.pending.insert(task_id, pending);
                self.send(&msg).await
            }
            Cmd::Cancel { task_id } => {
                self.send(&ToCoordinator::CancelTask(proto::CancelTask { task_id })).await
            }
            Cmd::Status { task_id, reply } => {
                self.statuses.entry(task_id.clone()).or_default().push_back(reply);
                self.send(&ToCoordinator::TaskStatus(proto::TaskStatusQuery { task_id })).await
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        let msg = match FromCoordinator::decode(text) {
            Ok(msg) => msg,
            Err(e) => return warn!("undecodable message from the coordinator: {e}"),
        };
        match msg {
            FromCoordinator::TaskAccepted(a) => {
                if let Some(tx) = self.pending.get_mut(&a.task_id).and_then(|p| p.accepted.take()) {
                    let _ = tx.send(Ok(a));
                }
            }
            FromCoordinator::TaskResult(r) => self.finish(TaskOutcome::Completed(r)),
            FromCoordinator::TaskError(e) => self.finish(TaskOutcome::Failed(e)),
            FromCoordinator::TaskStatus(s) => {
                if let Some(tx) = self.statuses.get_mut(&s.task_id).and_then(VecDeque::pop_front) {
                    let _ = tx.send(Ok(s));
                }
            }
            FromCoordinator::TaskProgress(p) => {
                // Best-effort: a caller that reads too slowly loses deltas
                // (the gap in `seq` shows it), never the connection.
                if let Some(tx) = self.pending.get(&p.task_id).and_then(|t| t.progress.as_ref()) {
                    let _ = tx.try_send(p);
                }
            }
            FromCoordinator::Error(e) => self.on_error(e),
            FromCoordinator::Shutdown(s) => info!("the coordinator is shutting down: {}", s.reason),
            other => debug!("ignoring {}", other.msg_type()),
        }
    }

    /// Resolves a task's outcome once; a second delivery finds nothing.
    fn finish(&mut self, outcome: TaskOutcome) {
        self.counters.outcomes.fetch_add(1, Ordering::Relaxed);
        match self.pending.remove(outcome.task_id()) {
            Some(p) => {
                // The outcome can overtake the acknowledgement of a task
                // resubmitted after a reconnection (outcomes that finished
                // while away follow the registration): it was accepted.
                if let Some(tx) = p.accepted {
                    let _ = tx.send(Ok(accepted_by(&outcome)));
                }
                let _ = p.outcome.send(outcome);
            }
            None => {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                debug!(task = outcome.task_id(), "dropping a repeated outcome");
            }
        }
    }

    fn on_error(&mut self, e: proto::ErrorMsg) {
        let task = e.task_id.clone().unwrap_or_default();
        match e.in_reply_to.as_deref() {
            Some("task_request") => {
                if let Some(p) = self.pending.remove(&task)
                    && let Some(tx) = p.accepted
                {
                    let _ = tx.send(Err(ClientError::Rejected(e)));
                }
            }
            Some("task_status") => {
                if let Some(tx) = self.statuses.get_mut(&task).and_then(VecDeque::pop_front) {
                    let _ = tx.send(Err(ClientError::Rejected(e)));
                }
            }
            _ => warn!(code = %e.code, "the coordinator refused a message: {}", e.reason),
        }
    }

    /// Reconnects with back-off and resubmits what is pending. False when the
    /// client should stop (reconnect is off, or the client was dropped).
    async fn reconnect(&mut self) -> bool {
        if !self.options.reconnect {
            self.pending.clear();
            self.statuses.clear();
            return false;
        }
        let mut wait = Duration::from_millis(50);
        loop {
            tokio::time::sleep(wait.mul_f64(0.5 + 0.5 * fastrand::f64())).await;
            if self.rx.is_closed() && self.pending.is_empty() {
                return false;
            }
            let url = self.endpoints.current().to_owned();
            match open(&url, &self.gamer_id, &self.options, self.awaiting()).await {
                Ok(ws) => {
                    self.endpoints.connected();
                    self.ws = ws;
                    self.last_heard = Instant::now();
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    info!(gamer = %self.gamer_id, pending = self.pending.len(), "reconnected");
                    // Status queries in flight were lost with the connection.
                    self.statuses.clear();
                    if self.resubmit().await.is_ok() {
                        return true;
                    }
                }
                Err(ClientError::Refused(reason)) => {
                    warn!("the coordinator refused the reconnection: {reason}");
                    self.pending.clear();
                    return false;
                }
                // An election is on, or the leader is elsewhere: try again
                // soon (a coordinator answered, so none is down).
                Err(ClientError::NotLeader { leader, .. }) => {
                    debug!(%url, ?leader, "a standby answered");
                    self.endpoints.not_leader(leader.as_deref());
                    wait = Duration::from_millis(100);
                    continue;
                }
                Err(e) => {
                    debug!("reconnect failed: {e}");
                    self.endpoints.failed();
                }
            }
            wait = (wait * 2).min(self.options.reconnect_max);
        }
    }

    /// Acknowledged tasks still waiting for an outcome, when they are not
    /// resubmitted: the coordinator sends again those that finished (their
    /// outcome may have been lost with the old connection).
    fn awaiting(&self) -> Vec<String> {
        if self.options.resubmit_acknowledged {
            return Vec::new();
        }
        self.pending
            .iter()
            .filter(|(_, p)| p.accepted.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Sends pending tasks again, oldest first, under their idempotency keys:
    /// those never acknowledged, and (unless turned off) the others too.
    async fn resubmit(&mut self) -> Result<(), ()> {
        let all = self.options.resubmit_acknowledged;
        let order: BTreeMap<u64, TaskRequest> = self
            .pending
            .values()
            .filter(|p| all || p.accepted.is_some())
            .map(|p| (p.seq, p.req.clone()))
            .collect();
        for req in order.into_values() {
            self.send(&ToCoordinator::TaskRequest(req)).await?;
        }
        Ok(())
    }

    async fn send(&mut self, msg: &ToCoordinator) -> Result<(), ()> {
        self.ws.send(Message::text(msg.encode())).await.map_err(|e| debug!("send failed: {e}"))
    }
}

/// The acknowledgement an outcome implies, for a submission whose own
/// `task_accepted` it overtook.
fn accepted_by(outcome: &TaskOutcome) -> TaskAccepted {
    let (task_id, id, status) = match outcome {
        TaskOutcome::Completed(r) => (
            r.task_id.clone(),
            r.id.clone().unwrap_or_default(),
            r.status.unwrap_or(proto::TaskState::Completed),
        ),
        TaskOutcome::Failed(e) => (e.task_id.clone(), e.id.clone(), e.status),
    };
    TaskAccepted { task_id, id, status, existing: true, waiting_reason: None }
}

/// Connects to the leader among `endpoints` (following redirects, moving
/// on from those that cannot be reached). Each try may take
/// `connect_timeout`, and no try starts after `connect_timeout` per URL of
/// the list: one URL that does not answer (a frozen coordinator) leaves
/// the others their turn, as the Python client and `legacygpu bench` do.
async fn find_leader(
    endpoints: &mut Endpoints,
    gamer_id: &str,
    options: &ClientOptions,
) -> Result<Ws, ClientError> {
    let urls = u32::try_from(endpoints.all().len()).unwrap_or(u32::MAX);
    let deadline = Instant::now() + options.connect_timeout.saturating_mul(urls);
    // Every URL twice, and the redirects between: bounded.
    let tries = endpoints.all().len() * 4 + 2;
    let mut last = None;
    for _ in 0..tries {
        match open(endpoints.current(), gamer_id, options, Vec::new()).await {
            Ok(ws) => {
                endpoints.connected();
                return Ok(ws);
            }
            Err(ClientError::NotLeader { url, leader }) => {
                endpoints.not_leader(leader.as_deref());
                if leader.is_none() {
                    // An election is on.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                last = Some(ClientError::NotLeader { url, leader });
            }
            Err(e @ ClientError::Refused(_)) => return Err(e),
            Err(e) => {
                endpoints.failed();
                if !endpoints.is_several() {
                    return Err(e);
                }
                last = Some(e);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last.unwrap_or(ClientError::Closed))
}

/// Connects and registers as `gamer_id`.
async fn open(
    url: &str,
    gamer_id: &str,
    options: &ClientOptions,
    awaiting: Vec<String>,
) -> Result<Ws, ClientError> {
    let connect_err = |reason: String| ClientError::Connect { url: url.to_owned(), reason };
    let (connector, token) = tls_for(url, options)?;
    let attempt = async {
        let mut request = url.into_client_request().map_err(|e| connect_err(e.to_string()))?;
        if let Some(token) = &token {
            let value =
                format!("Bearer {token}").parse().map_err(|_| connect_err("bad token".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
        let (mut ws, _) = connecting.await.map_err(|e| match e {
            // The coordinator explains a refused upgrade in the body.
            WsError::Http(resp) => {
                let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let reason = format!("{}: {}", resp.status(), body.trim());
                if matches!(resp.status().as_u16(), 401 | 403) {
                    ClientError::Refused(reason)
                } else {
                    connect_err(reason)
                }
            }
            // A certificate that is not the pinned CA's will not become so.
            WsError::Tls(e) => ClientError::Refused(format!("TLS: {e}")),
            WsError::Io(e) if e.to_string().contains("certificate") => {
                ClientError::Refused(format!("TLS: {e}"))
            }
            e => connect_err(e.to_string()),
        })?;
        let register = ToCoordinator::RegisterGamer(RegisterGamer {
            gamer_id: gamer_id.to_owned(),
            token: token.clone(),
            awaiting,
        });
        ws.send(Message::text(register.encode())).await.map_err(|e| connect_err(e.to_string()))?;
        await_ack(&mut ws, url).await?;
        Ok(ws)
    };
    match tokio::time::timeout(options.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(connect_err("timed out".into())),
    }
}

/// The TLS connector for `url` (none for `ws://`), and the secret to
/// present (a client token's secret part, else the token as given).
fn tls_for(
    url: &str,
    options: &ClientOptions,
) -> Result<(Option<tokio_tungstenite::Connector>, Option<String>), ClientError> {
    let refused = |reason: String| ClientError::Refused(reason);
    let token = options.token.as_deref();
    let trust = tls::Trust::from_options(token, options.ca_hash.as_deref())
        .map_err(|e| refused(e.to_string()))?;
    let secret = match token {
        Some(t) if tls::JoinToken::looks_like(t) => {
            Some(tls::JoinToken::parse(t).map_err(|e| refused(e.to_string()))?.secret)
        }
        other => other.map(str::to_owned),
    };
    if !url.starts_with("wss://") {
        if trust != tls::Trust::System {
            return Err(refused(
                "a client token or --ca-hash pins the coordinator's certificate, which needs TLS: \
                 use wss://HOST:8765"
                    .to_owned(),
            ));
        }
        return Ok((None, secret));
    }
    let config = tls::client_config(&trust).map_err(|e| refused(e.to_string()))?;
    Ok((Some(tokio_tungstenite::Connector::Rustls(config)), secret))
}

async fn await_ack(ws: &mut Ws, url: &str) -> Result<(), ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match FromCoordinator::decode(text.as_str()) {
                Ok(FromCoordinator::RegistrationAck(_)) => return Ok(()),
                Ok(FromCoordinator::Error(e)) if e.code == proto::ErrorCode::NOT_LEADER => {
                    return Err(ClientError::NotLeader {
                        url: url.to_owned(),
                        leader: e.leader.map(|l| l.0),
                    });
                }
                Ok(FromCoordinator::Error(e)) => {
                    return Err(ClientError::Refused(format!("{}: {}", e.code, e.reason)));
                }
                _ => {}
            },
            // Closed for want of a credential: retrying will not help.
            Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == 1008 => {
                return Err(ClientError::Refused(format!("closed: {}", f.reason)));
            }
            Some(Ok(_)) => {}
            // Closed or broken before the answer: the coordinator stopped or
            // changed role (a standby becoming the leader closes its
            // connections) — worth another try, unlike a refusal.
            Some(Err(e)) => return Err(closed_early(url, &e.to_string())),
            None => return Err(closed_early(url, "connection closed")),
        }
    }
}

fn closed_early(url: &str, why: &str) -> ClientError {
    let reason = format!("closed before the registration was acknowledged: {why}");
    ClientError::Connect { url: url.to_owned(), reason }
}
