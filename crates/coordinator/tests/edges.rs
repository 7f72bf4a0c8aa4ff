//! The edges on paused time: sockets that never finish the handshake, never
//! register (4002), or go silent (4002, after pings) are closed within their
//! deadlines and give their permits back; so are idle and half-sent HTTP
//! requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use coordinator::{Config, Coordinator, EdgeLimits, StoreMode};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const HANDSHAKE: Duration = Duration::from_secs(5);
const REGISTRATION: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(60);
const HTTP_HEADER: Duration = Duration::from_secs(10);
const HTTP_BODY: Duration = Duration::from_secs(30);

struct Running {
    ws: SocketAddr,
    http: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(max_connections: usize) -> Running {
    let config = Config {
        ws_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        store: StoreMode::Memory,
        max_connections,
        edge: EdgeLimits {
            handshake_timeout: HANDSHAKE,
            registration_timeout: REGISTRATION,
            idle_timeout: IDLE,
            http_header_timeout: HTTP_HEADER,
            http_idle_timeout: IDLE,
            http_body_timeout: HTTP_BODY,
            ..EdgeLimits::default()
        },
        ..Config::default()
    };
    let c = Coordinator::bind(config).await.unwrap();
    let (ws, http) = (c.ws_addr(), c.http_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(c.run(async {
        let _ = stopped.await;
    }));
    Running { ws, http, _stop: stop }
}

/// Reads until the peer closes; how long that took (paused time).
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(3600), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("not closed within an hour"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn sockets_that_never_upgrade_are_closed_at_the_handshake_deadline() {
    let c = start(100).await;
    let mut silent = TcpStream::connect(c.ws).await.unwrap();
    let mut half = TcpStream::connect(c.ws).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut tls_half = TcpStream::connect(c.ws).await.unwrap();
    tls_half.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    for s in [&mut silent, &mut half, &mut tls_half] {
        let after = closed_after(s).await;
        assert!(after <= HANDSHAKE + Duration::from_millis(100), "{after:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_upgraded_socket_that_never_registers_is_closed_with_4002() {
    let c = start(100).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}", c.ws)).await.unwrap();
    let start = Instant::now();
    let code = loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, 4002);
    let after = start.elapsed();
    assert!(after >= REGISTRATION && after <= REGISTRATION + Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_silent_session_is_pinged_and_closed_at_the_idle_timeout() {
    let c = start(100).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}", c.ws)).await.unwrap();
    ws.send(Message::text(r#"{"msg_type": "register_gamer", "gamer_id": "g"}"#)).await.unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("registration_ack"));
    // A client that answers pings stays: reading answers them.
    let until = Instant::now() + 2 * IDLE;
    while Instant::now() < until {
        match tokio::time::timeout(IDLE / 2, ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) | Err(_) => {}
            other => panic!("a live session was closed: {other:?}"),
        }
    }
    // One that stops reading (a half-open socket: nothing comes back) is closed.
    let mut raw = ws.into_inner();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let mut seen = Vec::new();
    loop {
        match raw.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let after = start.elapsed();
    assert!(after <= IDLE + IDLE / 3 + Duration::from_millis(100), "{after:?}");
    // The last frame is a close with 4002 (0x0fa2).
    assert!(seen.windows(2).any(|w| w == [0x0f, 0xa2]), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn idle_and_half_sent_http_requests_are_closed() {
    let c = start(100).await;
    let mut silent = TcpStream::connect(c.http).await.unwrap();
    let mut half = TcpStream::connect(c.http).await.unwrap();
    half.write_all(b"GET /cluster/health HTTP/1.1\r\nHo").await.unwrap();
    for s in [&mut silent, &mut half] {
        let after = closed_after(s).await;
        assert!(after <= HTTP_HEADER + Duration::from_millis(100), "{after:?}");
    }
    // Keep-alive: after a response, the next head has the same deadline.
    let mut kept = TcpStream::connect(c.http).await.unwrap();
    kept.write_all(b"GET /cluster/health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let after = closed_after(&mut kept).await;
    assert!(after <= HTTP_HEADER + Duration::from_millis(100), "{after:?}");
}

/// A body announced but never sent, or sent a byte at a time, holds its
/// connection no longer than the body deadline (a request in progress is
/// never idle, so the idle timeout alone would not close it).
#[tokio::test(start_paused = true)]
async fn a_request_body_that_never_arrives_or_trickles_fails_at_the_body_deadline() {
    let c = start(100).await;
    let head = "POST /cluster/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\n\r\n{\"task_type\": \"echo\", ";
    let mut stuck = TcpStream::connect(c.http).await.unwrap();
    stuck.write_all(head.as_bytes()).await.unwrap();
    let mut trickle = TcpStream::connect(c.http).await.unwrap();
    trickle.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = trickle.into_split();
    let dripping = tokio::spawn(async move {
        // One byte every 5 s: the connection is never idle for long.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let t0 = Instant::now();
    let (stuck, trickled) =
        tokio::join!(answered_then_closed(&mut stuck, t0), answered_then_closed(&mut reader, t0));
    for (name, (took, response)) in [("stuck", stuck), ("trickling", trickled)] {
        assert!(response.starts_with("HTTP/1.1 400"), "{name}: {response}");
        assert!(response.contains("did not arrive within 30 s"), "{name}: {response}");
        assert!(
            took >= HTTP_BODY - Duration::from_millis(100)
                && took <= HTTP_BODY + Duration::from_millis(100),
            "{name}: {took:?}"
        );
    }
    dripping.abort();
}

/// Reads a response and then until the peer closes: how long after
/// `start` that was (paused time), and the response.
async fn answered_then_closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    start: Instant,
) -> (Duration, String) {
    let (mut buf, mut all) = ([0u8; 4096], Vec::new());
    loop {
        match tokio::time::timeout(Duration::from_secs(3600), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (start.elapsed(), String::from_utf8_lossy(&all).into()),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!("not closed within an hour"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn sockets_holding_every_permit_give_them_back_at_the_deadline() {
    let c = start(4).await;
    let mut holders = Vec::new();
    for _ in 0..8 {
        holders.push(TcpStream::connect(c.ws).await.unwrap());
    }
    for s in &mut holders {
        closed_after(s).await;
    }
    // The permits are back: a real session gets in.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}", c.ws)).await.unwrap();
    ws.send(Message::text(r#"{"msg_type": "register_gamer", "gamer_id": "g"}"#)).await.unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("registration_ack"));
}
