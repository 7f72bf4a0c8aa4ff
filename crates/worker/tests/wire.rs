//! A worker against coordinators that are WebSocket servers of the test's
//! own on 127.0.0.1: what its heartbeats carry, and where it goes when one
//! freezes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use exec::Executors;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn registered(listener: &TcpListener) -> Ws {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let first = loop {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time");
        if let Message::Text(text) = frame.unwrap().unwrap() {
            break serde_json::from_str::<Value>(text.as_str()).unwrap();
        }
    };
    assert_eq!(first["msg_type"], "register_peer");
    let ack = json!({"msg_type": "registration_ack", "status": "registered"});
    ws.send(Message::text(ack.to_string())).await.unwrap();
    ws
}

#[tokio::test]
async fn a_frozen_coordinator_is_left_for_the_next_url_first() {
    let frozen = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let next = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = |l: &TcpListener| format!("ws://{}", l.local_addr().unwrap());
    let mut config = worker::Config::new(format!("{},{}", url(&frozen), url(&next)), "p");
    config.silence_timeout = Some(Duration::from_millis(600));
    let peer = worker::Worker::new(config, Executors::builtin());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(peer.run(async {
        let _ = stop_rx.await;
    }));

    // Registered on the first, which then reads nothing more.
    let _held = registered(&frozen).await;
    let _ws = registered(&next).await;
    // Had the worker gone back to the frozen one first, that connection
    // would be waiting there now.
    let again = tokio::time::timeout(Duration::from_millis(100), frozen.accept()).await;
    assert!(again.is_err(), "the frozen coordinator was tried again first");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(WAIT, peer).await.unwrap().unwrap().unwrap();
}

/// The next heartbeat, skipping other messages.
async fn heartbeat(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("a heartbeat in time");
        if let Message::Text(text) = frame.unwrap().unwrap() {
            let msg: Value = serde_json::from_str(text.as_str()).unwrap();
            if msg["msg_type"] == "heartbeat" {
                return msg;
            }
        }
    }
}

#[tokio::test]
async fn heartbeats_carry_each_cards_use_as_the_os_reports_it_now() {
    // A sysfs tree of the test's own: an AMD card (amdgpu's files).
    let sys = tempfile::tempdir().unwrap();
    let device = sys.path().join("class/drm/card0/device");
    std::fs::create_dir_all(&device).unwrap();
    let busy =
        |percent: u32| std::fs::write(device.join("gpu_busy_percent"), format!("{percent}\n"));
    busy(37).unwrap();
    std::fs::write(device.join("mem_info_vram_used"), format!("{}\n", 812u64 << 20)).unwrap();
    std::fs::write(device.join("mem_info_vram_total"), format!("{}\n", 8u64 << 30)).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = worker::Config::new(format!("ws://{}", listener.local_addr().unwrap()), "p");
    config.heartbeat_interval = Some(Duration::from_millis(50));
    config.sysfs_root = sys.path().to_owned();
    let peer = worker::Worker::new(config, Executors::builtin());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(peer.run(async {
        let _ = stop_rx.await;
    }));
    let mut ws = registered(&listener).await;
    let first = heartbeat(&mut ws).await;
    assert_eq!(
        first["gpus"],
        json!([{"card": "card0", "busy_percent": 37.0, "vram_used_mb": 812, "vram_total_mb": 8192}]),
        "{first}"
    );
    // Read again for each heartbeat.
    busy(64).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while heartbeat(&mut ws).await["gpus"][0]["busy_percent"] != 64.0 {
        assert!(tokio::time::Instant::now() < deadline, "the new figure never came");
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(WAIT, peer).await.unwrap().unwrap().unwrap();
}
