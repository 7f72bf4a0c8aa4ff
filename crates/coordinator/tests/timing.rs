//! Timing behaviour of an in-process coordinator on 127.0.0.1, on paused
//! tokio time: a silent peer is declared dead at the heartbeat timeout (and
//! not before), its task moves to another peer, a task that waits too long
//! times out, and a run past its limit is stopped. The clock only moves when
//! every task waits, so a loaded machine cannot trip a timeout.
//!
//! One care: when every task waits, tokio jumps the clock to the next timer
//! before the tasks that sockets woke have run, so a client that simply
//! awaited a socket could let the coordinator's next deadline pass before the
//! coordinator read what the client sent. Clients here therefore wait in
//! steps of a millisecond ([`step`], [`pass`]), which bounds every jump.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use coordinator::{Config, Coordinator, StoreMode};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);

async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut config = Config {
        ws_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: None,
        store: StoreMode::Memory,
        ..Config::default()
    };
    config.sched.heartbeat_timeout = HEARTBEAT_TIMEOUT;
    let c = Coordinator::bind(config).await.unwrap();
    let addr = c.ws_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(c.run(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn connect(addr: SocketAddr, register: Value) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}")).await.unwrap();
    ws.send(Message::text(register.to_string())).await.unwrap();
    let ack = recv(&mut ws).await;
    assert_eq!(ack["msg_type"], "registration_ack", "{ack}");
    ws
}

async fn peer(addr: SocketAddr, id: &str) -> Ws {
    connect(addr, json!({"msg_type": "register_peer", "peer_id": id, "capabilities": {}})).await
}

async fn gamer(addr: SocketAddr) -> Ws {
    connect(addr, json!({"msg_type": "register_gamer", "gamer_id": "g"})).await
}

/// Paused time passes in steps of this while a client waits.
const STEP: Duration = Duration::from_millis(1);

/// The next frame, waiting in steps (at most a minute of paused time).
async fn step(ws: &mut Ws) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            frame = ws.next() => return frame,
            () = tokio::time::sleep(STEP) => {
                assert!(Instant::now() < deadline, "no frame within a minute");
            }
        }
    }
}

/// Lets `d` of paused time pass, in steps.
async fn pass(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        tokio::time::sleep(STEP).await;
    }
}

/// The next JSON message.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        match step(ws).await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Close(f))) => panic!("closed: {f:?}"),
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// The code the coordinator closes `ws` with.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match step(ws).await {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// A heartbeat from peer `id`, then a round trip, so that the coordinator
/// has handled it before the test goes on.
async fn heartbeat(ws: &mut Ws, id: &str) {
    let beat = json!({"msg_type": "heartbeat", "peer_id": id});
    ws.send(Message::text(beat.to_string())).await.unwrap();
    let probe = json!({"msg_type": "task_status", "task_id": "probe"});
    ws.send(Message::text(probe.to_string())).await.unwrap();
    assert_eq!(recv(ws).await["msg_type"], "error");
}

async fn until(ws: &mut Ws, msg_type: &str) -> Value {
    loop {
        let v = recv(ws).await;
        if v["msg_type"] == msg_type {
            return v;
        }
    }
}

async fn submit(g: &mut Ws, task: Value) {
    let mut req = json!({"msg_type": "task_request", "task_type": "echo", "data": 1});
    req.as_object_mut().unwrap().extend(task.as_object().unwrap().clone());
    g.send(Message::text(req.to_string())).await.unwrap();
    assert_eq!(until(g, "task_accepted").await["msg_type"], "task_accepted");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dead_at_the_heartbeat_timeout_and_its_task_moves() {
    let (addr, _stop) = start().await;
    let mut silent = peer(addr, "silent").await;
    let mut g = gamer(addr).await;
    submit(&mut g, json!({"task_id": "job"})).await;
    let a = until(&mut silent, "task_assignment").await;
    assert_eq!((a["task_id"].as_str(), a["attempt"].as_u64()), (Some("job"), Some(1)));
    let went_silent = Instant::now();
    let mut other = peer(addr, "other").await;
    // The silent peer's socket stays open: only the timeout ends it. The
    // other peer heartbeats meanwhile.
    let code = tokio::select! {
        code = close_code(&mut silent) => code,
        () = async {
            loop {
                pass(Duration::from_secs(5)).await;
                heartbeat(&mut other, "other").await;
            }
        } => unreachable!(),
    };
    let after = went_silent.elapsed();
    assert_eq!(code, 4001);
    assert!(after >= HEARTBEAT_TIMEOUT, "declared dead early, after {after:?}");
    assert!(after <= HEARTBEAT_TIMEOUT + Duration::from_secs(1), "late: {after:?}");
    let again = until(&mut other, "task_assignment").await;
    assert_eq!((again["task_id"].as_str(), again["attempt"].as_u64()), (Some("job"), Some(2)));
}

#[tokio::test(start_paused = true)]
async fn a_heartbeating_peer_lives_past_many_timeouts() {
    let (addr, _stop) = start().await;
    let mut p = peer(addr, "p").await;
    for _ in 0..10 {
        pass(Duration::from_secs(5)).await;
        heartbeat(&mut p, "p").await;
    }
    // 50 s later it still takes work.
    let mut g = gamer(addr).await;
    submit(&mut g, json!({"task_id": "late"})).await;
    assert_eq!(until(&mut p, "task_assignment").await["task_id"], "late");
}

#[tokio::test(start_paused = true)]
async fn a_task_nobody_can_run_times_out_at_its_queue_timeout() {
    let (addr, _stop) = start().await;
    let mut g = gamer(addr).await;
    let submitted = Instant::now();
    submit(&mut g, json!({"task_id": "lonely", "queue_timeout_s": 30})).await;
    let e = until(&mut g, "task_error").await;
    assert_eq!(
        (e["code"].as_str(), e["status"].as_str()),
        (Some("queue_timeout"), Some("timed_out"))
    );
    let after = submitted.elapsed();
    assert!(after >= Duration::from_secs(30) && after < Duration::from_secs(31), "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_limit_is_stopped_on_its_peer() {
    let (addr, _stop) = start().await;
    let mut p = peer(addr, "p").await;
    let mut g = gamer(addr).await;
    submit(&mut g, json!({"task_id": "slow", "timeout_s": 2})).await;
    until(&mut p, "task_assignment").await;
    // The peer never answers; the limit (2 s, plus the scheduler's slack)
    // comes before a heartbeat is overdue.
    let assigned = Instant::now();
    let cancel = until(&mut p, "cancel_task").await;
    assert_eq!(
        (cancel["task_id"].as_str(), cancel["reason"].as_str()),
        (Some("slow"), Some("timed_out"))
    );
    assert!(assigned.elapsed() < HEARTBEAT_TIMEOUT, "{:?}", assigned.elapsed());
    let e = until(&mut g, "task_error").await;
    assert_eq!(e["code"], "run_timeout", "{e}");
}
