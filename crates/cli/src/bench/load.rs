//! Throughput and latency modes: no-op peers and measuring gamers, speaking
//! the wire protocol directly (no SDK in between), writing in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use proto::{FromCoordinator, ToCoordinator};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::local::Local;
use super::{CONNECT_TIMEOUT, Histogram, Latency, Report, histogram};
use crate::args::Bench;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Tx = SplitSink<Ws, Message>;
type Rx = SplitStream<Ws>;

/// The task type the no-op peers run.
const NOOP: &str = "noop";

pub async fn run(
    args: &Bench,
    url: &str,
    store: String,
    local: Option<&Local>,
) -> anyhow::Result<Report> {
    let token = args.token.as_deref();
    // Peers first, registered, so that the first tasks do not queue.
    let mut peer_procs = Vec::new();
    let mut peers = Vec::new();
    for i in 0..args.peers {
        if args.peer_processes {
            let exe = std::env::current_exe()?;
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["bench", "--peer-agent", "--coordinator", url, "--slots"])
                .arg(args.slots.to_string());
            if let Some(t) = token {
                cmd.env("LEGACYGPU_TOKEN", t);
            }
            // The same pin as this process's connections (the CA of the
            // coordinator it started, with --tls).
            if let Some(pin) = args.ca_hash.as_ref().or(local.and_then(|l| l.ca_hash.as_ref())) {
                cmd.args(["--ca-hash", pin]);
            }
            peer_procs.push(KillOnDrop(cmd.stdin(std::process::Stdio::null()).spawn()?));
        } else {
            let peer = register_peer(url, token, &format!("bench-peer-{i}"), args.slots).await?;
            peers.push(tokio::spawn(serve_peer(peer)));
        }
    }
    if args.peer_processes {
        // Each agent registers on its own; give them a moment to.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let limit = Limit {
        tasks: args.tasks,
        deadline: Instant::now() + Duration::from_secs_f64(args.duration),
        issued: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let limit = Arc::new(limit);
    let before = local.and_then(Local::usage);
    let started = Instant::now();
    let mut gamers = Vec::new();
    for g in 0..args.gamers {
        let ws = open(url, token).await?;
        let (mut tx, mut rx) = ws.split();
        let register =
            json!({"msg_type": "register_gamer", "gamer_id": format!("bench-gamer-{g}")});
        tx.send(Message::text(register.to_string())).await?;
        await_ack(&mut rx).await?;
        let mode = match args.rate {
            Some(rate) => Mode::Rate(rate / args.gamers as f64),
            None => Mode::Window((args.in_flight / args.gamers).max(1)),
        };
        gamers.push(tokio::spawn(gamer(tx, rx, mode, Arc::clone(&limit))));
    }
    let mut latency = histogram();
    let (mut completed, mut errors, mut busy) = (0, 0, 0);
    for g in gamers {
        let out = g.await.context("a gamer task panicked")??;
        latency.add(&out.latency).ok();
        completed += out.completed;
        errors += out.errors;
        busy += out.busy;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = local.and_then(Local::usage);
    for p in peers {
        p.abort();
    }
    drop(peer_procs);
    Ok(Report {
        mode: if args.rate.is_some() { "latency" } else { "throughput" },
        peers: args.peers,
        gamers: args.gamers,
        store,
        offered_rate: args.rate,
        in_flight: args.rate.is_none().then_some(args.in_flight),
        completed,
        errors,
        busy,
        seconds,
        tasks_per_second: completed as f64 / seconds,
        latency_ms: Latency::of(&latency),
        coordinator: before.zip(after).map(|(b, a)| Local::between(b, a)),
        idle_peers: None,
    })
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When to stop issuing tasks.
struct Limit {
    tasks: u64,
    deadline: Instant,
    issued: AtomicU64,
    stop: AtomicBool,
}

impl Limit {
    /// Claims the next task number, if the run is not over.
    fn next(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            self.stop.store(true, Ordering::Relaxed);
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if n >= self.tasks {
            self.stop.store(true, Ordering::Relaxed);
            return None;
        }
        Some(n)
    }
}

/// Task `n`: a no-op with its number as data.
fn task_request(n: u64) -> Message {
    Message::text(format!(
        r#"{{"msg_type":"task_request","task_id":"{n}","task_type":"{NOOP}","data":{n}}}"#
    ))
}

enum Mode {
    /// Keep this many in flight.
    Window(usize),
    /// Offer this many per second.
    Rate(f64),
}

struct GamerOut {
    latency: Histogram,
    completed: u64,
    errors: u64,
    busy: u64,
}

/// The TLS configuration every `wss://` connection of this run uses.
static TLS: std::sync::OnceLock<std::sync::Arc<tls::rustls::ClientConfig>> =
    std::sync::OnceLock::new();

/// Sets how `wss://` is trusted: exactly the CA with `pin`, or the system's roots.
pub(crate) fn set_tls(pin: Option<&str>) -> anyhow::Result<()> {
    let trust = tls::Trust::from_options(None, pin)?;
    let _ = TLS.set(tls::client_config(&trust)?);
    Ok(())
}

pub(crate) async fn open(url: &str, token: Option<&str>) -> anyhow::Result<Ws> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    if let Some(t) = token {
        request.headers_mut().insert("authorization", format!("Bearer {t}").parse()?);
    }
    let connector = TLS.get().cloned().map(tokio_tungstenite::Connector::Rustls);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .context("connecting timed out")?
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(ws)
}

pub(crate) async fn await_ack(rx: &mut Rx) -> anyhow::Result<FromCoordinator> {
    let wait = async {
        while let Some(frame) = rx.next().await {
            if let Message::Text(text) = frame? {
                match FromCoordinator::decode(text.as_str()) {
                    Ok(ack @ FromCoordinator::RegistrationAck(_)) => return Ok(ack),
                    Ok(FromCoordinator::Error(e)) => bail!("refused: {}: {}", e.code, e.reason),
                    _ => {}
                }
            }
        }
        bail!("the coordinator closed the connection")
    };
    tokio::time::timeout(CONNECT_TIMEOUT, wait).await.context("no registration_ack")?
}

/// The leader among `list` (`ws://a:8765,ws://b:8765`, the coordinators of
/// one PostgreSQL store): each is asked in turn with a gamer registration,
/// and a standby's `not_leader` answer names the leader. The run then loads
/// that one.
pub(crate) async fn leader(list: &str, token: Option<&str>) -> anyhow::Result<String> {
    let mut endpoints = proto::Endpoints::parse(list).map_err(anyhow::Error::msg)?;
    if !endpoints.is_several() {
        return Ok(endpoints.current().to_owned());
    }
    let mut last = anyhow::anyhow!("every coordinator is a standby");
    for _ in 0..endpoints.all().len() * 4 {
        let url = endpoints.current().to_owned();
        match probe(&url, token).await {
            Ok(None) => return Ok(url),
            Ok(Some(leader)) => {
                if leader.is_none() {
                    // An election is on.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                endpoints.not_leader(leader.as_deref());
            }
            Err(e) => {
                endpoints.failed();
                last = e;
            }
        }
    }
    Err(last.context(format!("no coordinator of {list} leads")))
}

/// `None` when `url` leads; else the leader its `not_leader` names.
async fn probe(url: &str, token: Option<&str>) -> anyhow::Result<Option<Option<String>>> {
    let ws = open(url, token).await?;
    let (mut tx, mut rx) = ws.split();
    let id = format!("bench-probe-{:08x}", fastrand::u32(..));
    let register = json!({"msg_type": "register_gamer", "gamer_id": id, "token": token});
    tx.send(Message::text(register.to_string())).await?;
    let wait = async {
        while let Some(frame) = rx.next().await {
            if let Message::Text(text) = frame? {
                match FromCoordinator::decode(text.as_str()) {
                    Ok(FromCoordinator::RegistrationAck(_)) => return Ok(None),
                    Ok(FromCoordinator::Error(e)) if e.code == proto::ErrorCode::NOT_LEADER => {
                        return Ok(Some(e.leader.map(|l| l.0)));
                    }
                    Ok(FromCoordinator::Error(e)) => bail!("refused: {}: {}", e.code, e.reason),
                    _ => {}
                }
            }
        }
        bail!("the coordinator closed the connection")
    };
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, wait).await.context("no answer")?;
    let _ = tx.close().await;
    answer
}

/// A registered peer connection.
struct Peer {
    tx: Tx,
    rx: Rx,
    id: String,
    heartbeat: Duration,
}

async fn register_peer(
    url: &str,
    token: Option<&str>,
    id: &str,
    slots: u32,
) -> anyhow::Result<Peer> {
    let ws = open(url, token).await?;
    let (mut tx, mut rx) = ws.split();
    let register = json!({
        "msg_type": "register_peer",
        "peer_id": id,
        "capabilities": {"task_types": [NOOP], "max_concurrent": slots, "echoes_ids": true},
    });
    tx.send(Message::text(register.to_string())).await?;
    let ack = await_ack(&mut rx).await?;
    Ok(Peer { tx, rx, id: id.to_owned(), heartbeat: heartbeat_interval(&ack) })
}

/// The heartbeat interval a registration ack asks for (5 s if it says none).
pub(crate) fn heartbeat_interval(ack: &FromCoordinator) -> Duration {
    match ack {
        FromCoordinator::RegistrationAck(a) => a
            .heartbeat_interval_s
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(5), Duration::from_secs_f64),
        _ => Duration::from_secs(5),
    }
}

/// A peer in its own process (`--peer-processes`): runs until killed.
pub async fn peer_agent(url: &str, token: Option<&str>, slots: u32) -> anyhow::Result<()> {
    let id = format!("bench-peer-p{}", std::process::id());
    let peer = register_peer(url, token, &id, slots).await?;
    serve_peer(peer).await
}

/// Answers every assignment at once with its own data; heartbeats.
async fn serve_peer(peer: Peer) -> anyhow::Result<()> {
    let Peer { mut tx, mut rx, id, heartbeat } = peer;
    let mut heartbeat = tokio::time::interval(heartbeat);
    let beat = json!({"msg_type": "heartbeat", "peer_id": id}).to_string();
    loop {
        tokio::select! {
            frame = rx.next() => {
                let Some(frame) = frame else { return Ok(()) };
                let mut next = Some(frame?);
                // Answer everything already received, then flush once.
                while let Some(msg) = next.take() {
                    if let Message::Text(text) = msg
                        && let Ok(FromCoordinator::TaskAssignment(a)) = FromCoordinator::decode(text.as_str())
                    {
                        let result = proto::TaskResult {
                            task_id: a.task_id,
                            id: a.id,
                            result: Some(a.task_data),
                            error: None,
                            attempt: Some(a.attempt),
                            peer_id: None,
                            elapsed_ms: None,
                        };
                        tx.feed(Message::text(ToCoordinator::TaskResult(result).encode())).await?;
                    }
                    next = match rx.next().now_or_never() {
                        Some(Some(m)) => Some(m?),
                        _ => None,
                    };
                }
                tx.flush().await?;
            }
            _ = heartbeat.tick() => tx.send(Message::text(beat.clone())).await?,
        }
    }
}

async fn gamer(tx: Tx, mut rx: Rx, mode: Mode, limit: Arc<Limit>) -> anyhow::Result<GamerOut> {
    let out = GamerOut { latency: histogram(), completed: 0, errors: 0, busy: 0 };
    let mut g = Gamer { tx, due: HashMap::new(), out, limit };
    let (mut ticker, mut schedule) = match mode {
        Mode::Window(w) => {
            g.send_now(w).await?;
            (None, None)
        }
        Mode::Rate(rate) => {
            let per = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            let tick = tokio::time::interval(per.max(Duration::from_micros(100)));
            (Some(tick), Some(Schedule { started: Instant::now(), per, offered: 0 }))
        }
    };
    while !(g.limit.stop.load(Ordering::Relaxed) && g.due.is_empty()) {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick => {
                if let Some(schedule) = schedule.as_mut() {
                    g.send_due(schedule).await?;
                }
            }
            frame = tokio::time::timeout(Duration::from_secs(30), rx.next()) => {
                let frame = match frame {
                    Ok(Some(f)) => f,
                    other => bail!("the coordinator stopped answering: {other:?}"),
                };
                // Everything already received, then one refill.
                let mut ended = usize::from(g.on_message(frame?));
                while let Some(Some(msg)) = rx.next().now_or_never() {
                    ended += usize::from(g.on_message(msg?));
                }
                if schedule.is_none() {
                    g.send_now(ended).await?;
                }
            }
        }
    }
    Ok(g.out)
}

/// One gamer's side of the run.
struct Gamer {
    tx: Tx,
    /// When each task in flight was sent (closed loop) or due (open loop).
    due: HashMap<u64, Instant>,
    out: GamerOut,
    limit: Arc<Limit>,
}

/// The open loop's timetable: task k is due at `started + k × per`.
struct Schedule {
    started: Instant,
    per: Duration,
    offered: u32,
}

impl Schedule {
    fn next_due(&self) -> Instant {
        self.started + self.per * self.offered
    }
}

impl Gamer {
    /// Sends up to `n` new tasks now (closed loop).
    async fn send_now(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let Some(task) = self.limit.next() else { break };
            self.due.insert(task, Instant::now());
            self.tx.feed(task_request(task)).await?;
        }
        self.tx.flush().await?;
        Ok(())
    }

    /// Sends every task due by now (open loop), each timed from when it was due.
    async fn send_due(&mut self, schedule: &mut Schedule) -> anyhow::Result<()> {
        let now = Instant::now();
        while schedule.next_due() <= now {
            let Some(task) = self.limit.next() else { break };
            self.due.insert(task, schedule.next_due());
            schedule.offered += 1;
            self.tx.feed(task_request(task)).await?;
        }
        self.tx.flush().await?;
        Ok(())
    }

    /// Counts one message from the coordinator; whether it ended a task.
    fn on_message(&mut self, msg: Message) -> bool {
        let Message::Text(text) = msg else { return false };
        match FromCoordinator::decode(text.as_str()) {
            Ok(FromCoordinator::TaskResult(r)) => {
                let Some(at) = r.task_id.parse().ok().and_then(|n: u64| self.due.remove(&n)) else {
                    return false;
                };
                let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.out.latency.saturating_record(us.max(1));
                self.out.completed += 1;
                true
            }
            Ok(FromCoordinator::TaskError(e)) => {
                self.due.remove(&e.task_id.parse().unwrap_or(u64::MAX));
                self.out.errors += 1;
                true
            }
            Ok(FromCoordinator::Error(e)) => {
                if let Some(n) = e.task_id.as_deref().and_then(|t| t.parse::<u64>().ok()) {
                    self.due.remove(&n);
                }
                self.out.errors += 1;
                self.out.busy += u64::from(e.code == "busy");
                true
            }
            _ => false,
        }
    }
}
