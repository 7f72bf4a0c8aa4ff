//! Scale mode: K idle peers that only heartbeat, spread over loopback source
//! addresses 127.0.0.1…127.0.0.N (each address has its own ~28 000
//! ephemeral ports). Reported: the coordinator's RSS and CPU while they
//! heartbeat, and the round trip of a probe (a `task_status` for an unknown
//! task, answered by the core loop) as the core's lag under that load.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::load::{await_ack, heartbeat_interval, open};
use super::local::Local;
use super::{CONNECT_TIMEOUT, Latency, Report, histogram};
use crate::args::Bench;

/// Connections opened at once while ramping up.
const RAMP_CONCURRENCY: usize = 256;

pub async fn run(
    args: &Bench,
    url: &str,
    k: usize,
    local: Option<&Local>,
    store: String,
) -> anyhow::Result<Report> {
    let target = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .context("scale mode needs a ws://HOST:PORT coordinator")?;
    let addr: SocketAddr = tokio::net::lookup_host(target)
        .await?
        .next()
        .with_context(|| format!("cannot resolve {target}"))?;
    let registered = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(RAMP_CONCURRENCY));
    let mut peers = JoinSet::<anyhow::Result<()>>::new();
    let ramp = Instant::now();
    for i in 0..k {
        let source = if addr.ip().is_loopback() {
            let n = u8::try_from(i % usize::from(args.source_ips.max(1))).unwrap_or(0);
            Some(Ipv4Addr::new(127, 0, 0, 1 + n))
        } else {
            None
        };
        let (gate, registered, url) = (Arc::clone(&gate), Arc::clone(&registered), url.to_owned());
        let token = args.token.clone();
        peers.spawn(async move {
            let permit = gate.acquire_owned().await;
            let id = format!("idle-{i}");
            let peer = connect_idle(&url, addr, source, &id, token.as_deref()).await;
            drop(permit);
            let (mut ws, interval) = peer?;
            registered.fetch_add(1, Ordering::Relaxed);
            // Spread the heartbeats over the interval.
            tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
            let beat = json!({"msg_type": "heartbeat", "peer_id": id}).to_string();
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => ws.send(Message::text(beat.clone())).await?,
                    frame = ws.next() => match frame {
                        Some(Ok(_)) => {}
                        _ => bail!("peer {id} was disconnected"),
                    },
                }
            }
        });
    }
    let ramp_deadline = Instant::now() + CONNECT_TIMEOUT.max(Duration::from_secs(k as u64 / 200));
    while registered.load(Ordering::Relaxed) < k as u64 {
        if Instant::now() > ramp_deadline {
            break;
        }
        match peers.try_join_next() {
            Some(Ok(Err(e))) => bail!("an idle peer failed: {e:#}"),
            Some(Err(e)) => bail!("an idle peer panicked: {e}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let up = registered.load(Ordering::Relaxed) as usize;
    if up < k {
        bail!("only {up} of {k} idle peers registered within the ramp-up time");
    }
    eprintln!(
        "{k} idle peers registered in {:.1} s; measuring for {:.0} s",
        ramp.elapsed().as_secs_f64(),
        args.duration
    );

    // Measure: probe round trips while the peers heartbeat.
    let before = local.and_then(Local::usage);
    let ws = open(url, args.token.as_deref()).await?;
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(
        json!({"msg_type": "register_gamer", "gamer_id": "bench-probe"}).to_string(),
    ))
    .await?;
    await_ack(&mut rx).await?;
    let mut rtt = histogram();
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < end {
        tick.tick().await;
        let sent = Instant::now();
        tx.send(Message::text(r#"{"msg_type":"task_status","task_id":"probe"}"#)).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), rx.next()).await;
            match frame {
                Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"error\"") => break,
                Ok(Some(Ok(_))) => {}
                _ => bail!("the probe got no answer within 10 s"),
            }
        }
        rtt.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
    }
    let after = local.and_then(Local::usage);
    let lost = peers.len() < k;
    peers.abort_all();
    if lost {
        bail!("idle peers were disconnected during the run");
    }
    Ok(Report {
        mode: "scale",
        peers: k,
        gamers: 1,
        store,
        offered_rate: None,
        in_flight: None,
        completed: 0,
        errors: 0,
        busy: 0,
        seconds: args.duration,
        tasks_per_second: 0.0,
        latency_ms: Latency::of(&rtt),
        coordinator: before.zip(after).map(|(b, a)| Local::between(b, a)),
        idle_peers: Some(up),
    })
}

type IdleWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect_idle(
    url: &str,
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    id: &str,
    token: Option<&str>,
) -> anyhow::Result<(IdleWs, Duration)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::from((ip, 0))).with_context(|| format!("cannot bind {ip}"))?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .context("connect timed out")??;
    let mut request = url.into_client_request()?;
    if let Some(t) = token {
        request.headers_mut().insert("authorization", format!("Bearer {t}").parse()?);
    }
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    let register = json!({
        "msg_type": "register_peer",
        "peer_id": id,
        "capabilities": {"task_types": ["none"], "max_concurrent": 1},
    });
    ws.send(Message::text(register.to_string())).await?;
    let ack = loop {
        let frame = tokio::time::timeout(CONNECT_TIMEOUT, ws.next())
            .await
            .context("no registration_ack")?;
        match frame {
            Some(Ok(Message::Text(t))) => match proto::FromCoordinator::decode(t.as_str()) {
                Ok(ack @ proto::FromCoordinator::RegistrationAck(_)) => break ack,
                Ok(proto::FromCoordinator::Error(e)) => bail!("refused: {}", e.reason),
                _ => {}
            },
            Some(Ok(_)) => {}
            _ => bail!("closed before the ack"),
        }
    };
    Ok((ws, heartbeat_interval(&ack)))
}
