//! One connection to the coordinator: register, heartbeat, run, drain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use codes::CloseReason;
use futures_util::{SinkExt, StreamExt};
use proto::{
    Drain, FromCoordinator, Heartbeat, RegisterPeer, ReturnTask, RunningTask, TaskAssignment,
    TaskFailure, TaskResult, ToCoordinator,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use crate::machine::Load;
use crate::progress::Progress;
use crate::runner::{self, Job, Report};
use crate::{Config, Running, Worker};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a connection attempt, and the wait for `registration_ack`, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection attempt failed.
pub(crate) enum ConnectError {
    /// The coordinator refused the upgrade (protected mode, a bad token):
    /// retrying will not help.
    Refused(String),
    Other(String),
}

/// Connects to the coordinator (over TLS for `wss://`, trusting exactly the
/// pinned CA when there is a pin), presenting `bearer` as a bearer header.
pub(crate) async fn connect(
    url: &str,
    config: &Config,
    bearer: Option<&str>,
) -> Result<Ws, ConnectError> {
    let other = |e: &dyn std::fmt::Display| ConnectError::Other(e.to_string());
    let mut request = url.into_client_request().map_err(|e| other(&e))?;
    if let Some(token) = bearer {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| other(&"the token is not a valid header value"))?;
        request.headers_mut().insert("authorization", value);
    }
    let tls = url.starts_with("wss://");
    if !tls && config.trust != tls::Trust::System {
        return Err(ConnectError::Refused(
            "a join token or --ca-hash pins the coordinator's certificate, which needs TLS: \
             use --coordinator wss://HOST:8765"
                .to_owned(),
        ));
    }
    let connector = match tls {
        true => Some(tokio_tungstenite::Connector::Rustls(
            tls::client_config(&config.trust).map_err(|e| ConnectError::Refused(e.to_string()))?,
        )),
        false => None,
    };
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let reason = format!("{}: {}", resp.status(), body.trim());
            if matches!(resp.status().as_u16(), 401 | 403) {
                Err(ConnectError::Refused(reason))
            } else {
                Err(ConnectError::Other(reason))
            }
        }
        // A certificate that is not the pinned CA's will not become so.
        Ok(Err(WsError::Tls(e))) => Err(ConnectError::Refused(format!("TLS: {e}"))),
        Ok(Err(WsError::Io(e))) if e.to_string().contains("certificate") => {
            Err(ConnectError::Refused(format!("TLS: {e}")))
        }
        Ok(Err(e)) => Err(other(&e)),
        Err(_) => Err(other(&"connect timed out")),
    }
}

/// How a session ended.
pub(crate) enum End {
    /// Shutdown asked and done.
    Shutdown,
    /// The coordinator refused us (bad token, …): do not retry.
    Refused(String),
    /// The connection is gone: reconnect.
    Disconnected(String),
    /// The coordinator stopped answering with the connection open (frozen,
    /// or cut off): reconnect, to the next coordinator of the list first.
    Silent(String),
    /// A standby answered, naming the leader (none during an election).
    NotLeader(Option<String>),
}

/// When the next `task_progress` flush is due: at once for the first delta
/// after a quiet spell, else one interval after the previous flush.
struct Flush {
    interval: Duration,
    last: Option<Instant>,
    at: Option<Instant>,
}

impl Flush {
    fn new(interval: Duration) -> Flush {
        Flush { interval, last: None, at: None }
    }

    /// Something was buffered: schedule a flush unless one is scheduled —
    /// at once for a task's `first` delta, whenever the last flush was.
    fn arm(&mut self, now: Instant, first: bool) {
        if first {
            self.at = Some(now);
        } else if self.at.is_none() {
            self.at = Some(self.last.map_or(now, |last| (last + self.interval).max(now)));
        }
    }

    fn done(&mut self, now: Instant) {
        self.last = Some(now);
        self.at = None;
    }
}

pub(crate) struct Session<'w> {
    worker: &'w mut Worker,
    ws: Ws,
    url: String,
    heartbeat: Duration,
    load: Load,
    /// When anything last arrived from the coordinator.
    last_heard: Instant,
    /// How long without a word from the coordinator (not even a pong to
    /// the pings sent at a third of it) it is given up: a frozen
    /// coordinator (SIGSTOP) keeps its socket open but answers nothing.
    silence: Duration,
    /// Whether the coordinator acknowledged the registration.
    registered: bool,
}

impl<'w> Session<'w> {
    pub fn new(worker: &'w mut Worker, ws: Ws, url: &str, silence: Duration) -> Session<'w> {
        let heartbeat = worker.config.heartbeat_interval.unwrap_or(Duration::from_secs(5));
        let (url, last_heard) = (url.to_owned(), Instant::now());
        let load = Load::new();
        Session { worker, ws, url, heartbeat, load, last_heard, silence, registered: false }
    }

    /// Whether this session got as far as a `registration_ack`.
    pub fn registered(&self) -> bool {
        self.registered
    }

    pub async fn run<F: Future<Output = ()>>(&mut self, shutdown: &mut Pin<&mut F>) -> End {
        if let Err(end) = self.register().await {
            return end;
        }
        while let Some(msg) = self.worker.unsent.pop_front() {
            if let Err(e) = self.send(&msg).await {
                self.worker.unsent.push_front(msg);
                return End::Disconnected(e.to_string());
            }
        }
        // Output buffered while we were away goes out first.
        if let Err(e) = self.flush_progress().await {
            return End::Disconnected(e.to_string());
        }
        let mut tick = tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        let ping_every = self.silence / 3;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut flush = Flush::new(self.worker.config.progress_interval);
        loop {
            tokio::select! {
                _ = shutdown.as_mut() => return self.drain().await,
                frame = self.ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        self.last_heard = Instant::now();
                        if let Err(end) = self.on_text(text.as_str()).await {
                            return end;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        // An operator drained us and we hold nothing: leave for good.
                        if frame.as_ref().is_some_and(|f| u16::from(f.code) == CloseReason::Drained.code()) {
                            info!("drained by an operator: leaving");
                            return End::Shutdown;
                        }
                        let why = frame.map_or_else(|| "closed".to_owned(), |f| f.reason.to_string());
                        return End::Disconnected(why);
                    }
                    Some(Ok(_)) => self.last_heard = Instant::now(),
                    Some(Err(e)) => return End::Disconnected(e.to_string()),
                    None => return End::Disconnected("closed".to_owned()),
                },
                Some(report) = self.worker.reports.recv() => {
                    if let Report::Progress { first } = report {
                        flush.arm(Instant::now(), first);
                        continue;
                    }
                    let mut msgs = self.worker.report_messages(report).into_iter();
                    while let Some(msg) = msgs.next() {
                        if let Err(e) = self.send(&msg).await {
                            self.worker.unsent.push_back(msg);
                            self.worker.unsent.extend(msgs);
                            return End::Disconnected(e.to_string());
                        }
                    }
                }
                _ = tokio::time::sleep_until(flush.at.unwrap_or_else(Instant::now)), if flush.at.is_some() => {
                    flush.done(Instant::now());
                    if let Err(e) = self.flush_progress().await {
                        return End::Disconnected(e.to_string());
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.heartbeat().await {
                        return End::Disconnected(e.to_string());
                    }
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() >= self.silence {
                        let silence = self.silence;
                        return End::Silent(format!("nothing from the coordinator for {silence:?}"));
                    }
                    if let Err(e) = self.ws.send(Message::Ping(Default::default())).await {
                        return End::Disconnected(e.to_string());
                    }
                }
            }
        }
    }

    /// Trades the join token for this worker's own credential (`join` →
    /// `joined`), which is kept for every later connection.
    async fn join(&mut self, secret: String) -> Result<(), End> {
        let peer_id = self.worker.config.peer_id.clone();
        let join = ToCoordinator::Join(proto::Join { peer_id, token: secret });
        self.send(&join).await.map_err(|e| End::Disconnected(e.to_string()))?;
        let joined = tokio::time::timeout(CONNECT_TIMEOUT, self.await_reply()).await;
        let joined = joined.map_err(|_| End::Silent("no answer to join in time".to_owned()))??;
        let FromCoordinator::Joined(joined) = joined else {
            return Err(End::Disconnected(format!(
                "unexpected answer to join: {}",
                joined.msg_type()
            )));
        };
        info!(peer = %joined.peer_id, "joined the cluster; keeping this worker's credential");
        self.worker.set_credential(joined.credential).map_err(End::Refused)?;
        Ok(())
    }

    /// Sends `register_peer` (claiming running and finished-but-unreported
    /// tasks) and waits for the acknowledgement.
    async fn register(&mut self) -> Result<(), End> {
        if let Some(secret) = self.worker.join_secret() {
            self.join(secret).await?;
        }
        let mut claims: Vec<RunningTask> = self
            .worker
            .running
            .iter()
            .map(|(task_id, r)| RunningTask {
                task_id: task_id.clone(),
                attempt: r.attempt,
                id: r.id.clone(),
            })
            .collect();
        claims.extend(self.worker.unsent.iter().filter_map(|m| match m {
            ToCoordinator::TaskResult(r) => Some(RunningTask {
                task_id: r.task_id.clone(),
                attempt: r.attempt.unwrap_or(0),
                id: r.id.clone(),
            }),
            _ => None,
        }));
        let register = ToCoordinator::RegisterPeer(RegisterPeer {
            peer_id: self.worker.config.peer_id.clone(),
            capabilities: proto::to_json(&self.worker.capabilities()).ok(),
            token: self.worker.token(),
            running: claims,
        });
        self.send(&register).await.map_err(|e| End::Disconnected(e.to_string()))?;
        let ack = tokio::time::timeout(CONNECT_TIMEOUT, self.await_reply()).await;
        let ack = ack.map_err(|_| End::Silent("no registration_ack in time".to_owned()))??;
        let FromCoordinator::RegistrationAck(ack) = ack else {
            return Err(End::Disconnected(format!("unexpected answer: {}", ack.msg_type())));
        };
        self.registered = true;
        if self.worker.config.heartbeat_interval.is_none()
            && let Some(s) = ack.heartbeat_interval_s.filter(|s| s.is_finite() && *s > 0.0)
        {
            self.heartbeat = Duration::from_secs_f64(s);
        }
        for stale in ack.stale {
            if let Some(r) = self.worker.running.remove(&stale.task_id) {
                info!(task = %stale.task_id, "the coordinator reassigned this task; stopping it");
                r.ctx.cancel();
            }
        }
        info!(peer = %self.worker.config.peer_id, coordinator = %self.url, "registered");
        Ok(())
    }

    /// The coordinator's answer to a registration or a join.
    async fn await_reply(&mut self) -> Result<FromCoordinator, End> {
        loop {
            let frame = self.ws.next().await;
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or_else(|| "closed".to_owned(), |f| f.reason.to_string());
                    return Err(End::Disconnected(why));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(End::Disconnected(e.to_string())),
                None => return Err(End::Disconnected("closed".to_owned())),
            };
            match FromCoordinator::decode(text.as_str()) {
                Ok(reply @ (FromCoordinator::RegistrationAck(_) | FromCoordinator::Joined(_))) => {
                    return Ok(reply);
                }
                Ok(FromCoordinator::Error(e)) if e.code == proto::ErrorCode::NOT_LEADER => {
                    return Err(End::NotLeader(e.leader.map(|l| l.0)));
                }
                Ok(FromCoordinator::Error(e)) => {
                    return Err(End::Refused(self.worker.refusal(e.code.as_str(), &e.reason)));
                }
                Ok(other) => debug!("before registration_ack: {}", other.msg_type()),
                Err(e) => warn!("undecodable message from the coordinator: {e}"),
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        match FromCoordinator::decode(text) {
            Ok(FromCoordinator::TaskAssignment(a)) => self.start(a).await,
            Ok(FromCoordinator::CancelTask(c)) => {
                if let Some(r) =
                    self.worker.running.get(&c.task_id).filter(|r| r.attempt == c.attempt)
                {
                    info!(task = %c.task_id, reason = %c.reason, "cancelling");
                    r.ctx.cancel();
                }
                Ok(())
            }
            Ok(FromCoordinator::Shutdown(s)) => Err(End::Disconnected(s.reason)),
            Ok(FromCoordinator::Error(e)) => {
                warn!(code = %e.code, "the coordinator refused a message: {}", e.reason);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                warn!("undecodable message from the coordinator: {e}");
                Ok(())
            }
        }
    }

    async fn start(&mut self, a: TaskAssignment) -> Result<(), End> {
        if self.worker.running.contains_key(&a.task_id) {
            return Ok(()); // Already running this one (a reclaimed assignment).
        }
        let Some(executor) = self.worker.executors.get(&a.task_type).map(Arc::clone) else {
            let failure = TaskFailure {
                code: proto::FailureCode::UNSUPPORTED_TASK_TYPE,
                message: format!("this worker has no `{}` executor", a.task_type),
                retryable: Some(true),
            };
            let msg = ToCoordinator::TaskResult(TaskResult {
                task_id: a.task_id,
                id: a.id,
                result: None,
                error: Some(failure),
                attempt: Some(a.attempt),
                peer_id: Some(self.worker.config.peer_id.clone()),
                elapsed_ms: None,
            });
            return self.send(&msg).await.map_err(|e| End::Disconnected(e.to_string()));
        };
        let limit = a
            .timeout_s
            .map(Duration::from_secs_f64)
            .unwrap_or(self.worker.config.default_task_timeout);
        let progress = Arc::new(Progress::new(
            a.task_id.clone(),
            a.id.clone(),
            a.attempt,
            self.worker.reports_tx.clone(),
        ));
        self.worker.runs += 1;
        let run = self.worker.runs;
        let job = Job {
            task_id: a.task_id.clone(),
            attempt: a.attempt,
            run,
            input: a.task_data,
            limit,
            notice_after: self.worker.config.started_notice_after,
            progress: Arc::clone(&progress) as Arc<dyn exec::ProgressSink>,
        };
        let ctx = runner::spawn(executor, job, self.worker.reports_tx.clone());
        let running = Running { attempt: a.attempt, run, id: a.id, ctx, progress };
        self.worker.running.insert(a.task_id, running);
        Ok(())
    }

    /// Sends the buffered output of every running task. A delta lost to a
    /// failed send leaves a gap in `seq`, which tells the receiver.
    async fn flush_progress(&mut self) -> Result<(), WsError> {
        for msg in self.worker.progress_messages() {
            self.send(&msg).await?;
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), WsError> {
        let (cpu, mem) = self.load.sample();
        let msg = ToCoordinator::Heartbeat(Heartbeat {
            peer_id: self.worker.config.peer_id.clone(),
            running_tasks: Some(self.worker.running.len() as u32),
            cpu_percent: cpu,
            memory_used_mb: mem,
            gpus: Some(crate::gpu::usage(&self.worker.config.sysfs_root)).filter(|g| !g.is_empty()),
        });
        self.send(&msg).await
    }

    /// Takes no new tasks, lets running ones finish for a while, returns the rest.
    async fn drain(&mut self) -> End {
        info!(running = self.worker.running.len(), "draining before shutdown");
        let peer_id = Some(self.worker.config.peer_id.clone());
        if self.send(&ToCoordinator::Drain(Drain { peer_id })).await.is_err() {
            self.worker.running.clear();
            return End::Shutdown;
        }
        let deadline = tokio::time::sleep(self.worker.config.drain_timeout);
        tokio::pin!(deadline);
        while !self.worker.running.is_empty() {
            tokio::select! {
                _ = &mut deadline => break,
                Some(report) = self.worker.reports.recv() => {
                    // While draining, progress goes out at once (no coalescing).
                    let msgs = match report {
                        Report::Progress { .. } => self.worker.progress_messages(),
                        other => self.worker.report_messages(other),
                    };
                    for msg in msgs {
                        let _ = self.send(&msg).await;
                    }
                }
                frame = self.ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_drain_text(text.as_str()).await,
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
        let left: Vec<(String, Running)> = self.worker.running.drain().collect();
        for (task_id, running) in left {
            running.ctx.cancel();
            let msg = ToCoordinator::ReturnTask(ReturnTask {
                task_id,
                id: running.id.clone(),
                attempt: Some(running.attempt),
                reason: Some("worker shutting down".to_owned()),
            });
            let _ = self.send(&msg).await;
        }
        let _ = self.ws.close(None).await;
        End::Shutdown
    }

    /// While draining, new assignments go straight back.
    async fn on_drain_text(&mut self, text: &str) {
        match FromCoordinator::decode(text) {
            Ok(FromCoordinator::TaskAssignment(a)) => {
                let msg = ToCoordinator::ReturnTask(ReturnTask {
                    task_id: a.task_id,
                    id: a.id,
                    attempt: Some(a.attempt),
                    reason: Some("worker draining".to_owned()),
                });
                let _ = self.send(&msg).await;
            }
            Ok(FromCoordinator::CancelTask(c)) => {
                if let Some(r) = self.worker.running.get(&c.task_id) {
                    r.ctx.cancel();
                }
            }
            _ => {}
        }
    }

    async fn send(&mut self, msg: &ToCoordinator) -> Result<(), WsError> {
        self.ws.send(Message::text(msg.encode())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_are_at_most_one_interval_apart() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut flush = Flush::new(ms(20));
        assert_eq!(flush.at, None);
        // The first delta after a quiet spell goes at once.
        flush.arm(t0, false);
        assert_eq!(flush.at, Some(t0));
        flush.done(t0);
        // The next waits for the interval; arming again changes nothing.
        flush.arm(t0 + ms(5), false);
        flush.arm(t0 + ms(15), false);
        assert_eq!(flush.at, Some(t0 + ms(20)));
        flush.done(t0 + ms(20));
        // After a longer pause, at once again.
        flush.arm(t0 + ms(100), false);
        assert_eq!(flush.at, Some(t0 + ms(100)));
        flush.done(t0 + ms(100));
        // A task's first delta does not wait for the interval.
        flush.arm(t0 + ms(105), false);
        flush.arm(t0 + ms(106), true);
        assert_eq!(flush.at, Some(t0 + ms(106)));
    }
}
