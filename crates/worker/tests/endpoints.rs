//! A worker given two coordinator URLs whose first coordinator freezes
//! (acknowledges the registration, then answers nothing: not a pong, not
//! another connection) goes to the second next, rather than waiting a
//! connect timeout on the frozen one again. The coordinators are WebSocket
//! servers of the test's own on 127.0.0.1.

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
    // Given up after the least silence a worker allows (2 s).
    config.heartbeat_interval = Some(Duration::from_millis(200));
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
