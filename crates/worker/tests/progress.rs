//! A streaming executor's output reaches the coordinator as coalesced
//! `task_progress` messages (consecutive `seq`, texts adding up to the whole
//! output), always before the task's `task_result`. The coordinator here is
//! a WebSocket server of the test's own on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use exec::{ExecError, Executor, Executors, Output, RunContext};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Streams 100 deltas, "a" ×50 then "b" ×50, pausing in between until the
/// test says go; returns the whole text.
struct Streams {
    go: Mutex<mpsc::Receiver<()>>,
}

impl Executor for Streams {
    fn task_type(&self) -> &str {
        "stream"
    }

    fn run(&self, _: &str, ctx: &RunContext) -> Result<Output, ExecError> {
        for _ in 0..50 {
            ctx.progress("a", 1);
        }
        let go = self.go.lock().unwrap().recv_timeout(WAIT);
        go.map_err(|_| ExecError::Internal("no go".into()))?;
        for _ in 0..50 {
            ctx.progress("b", 1);
        }
        exec::to_output(&json!({"text": "a".repeat(50) + &"b".repeat(50)}))
    }
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time");
        if let Message::Text(text) = frame.unwrap().unwrap() {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn progress_is_coalesced_ordered_and_flushed_before_the_result() {
    let (go_tx, go_rx) = mpsc::channel();
    let mut executors = Executors::new();
    executors.add(Streams { go: Mutex::new(go_rx) });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let mut config = worker::Config::new(url, "p");
    config.heartbeat_interval = Some(Duration::from_secs(3600));
    // An interval longer than the test: only the first delta after a quiet
    // spell and the final flush can go out, however many deltas come.
    config.progress_interval = Duration::from_secs(3600);
    let peer = worker::Worker::new(config, executors);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(peer.run(async {
        let _ = stop_rx.await;
    }));

    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    assert_eq!(recv(&mut ws).await["msg_type"], "register_peer");
    let ack = json!({"msg_type": "registration_ack", "status": "registered"});
    ws.send(Message::text(ack.to_string())).await.unwrap();
    let assign = json!({"msg_type": "task_assignment", "task_id": "t-9", "task_type": "stream",
                        "attempt": 2, "task_data": {}});
    ws.send(Message::text(assign.to_string())).await.unwrap();

    let mut progress: Vec<Value> = Vec::new();
    let mut go = Some(go_tx);
    let result = loop {
        let msg = recv(&mut ws).await;
        match msg["msg_type"].as_str().unwrap() {
            "task_progress" => {
                progress.push(msg);
                // The first delta is out: let the executor finish.
                if let Some(go) = go.take() {
                    go.send(()).unwrap();
                }
            }
            "task_started" => {}
            "task_result" => break msg,
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(result["result"]["text"].as_str().unwrap().len(), 100);
    let text: String = progress.iter().map(|p| p["text"].as_str().unwrap()).collect();
    assert_eq!(text, result["result"]["text"].as_str().unwrap());
    let tokens: u64 = progress.iter().map(|p| p["tokens"].as_u64().unwrap()).sum();
    assert_eq!(tokens, 100);
    for (i, p) in progress.iter().enumerate() {
        assert_eq!((p["seq"].as_u64(), p["attempt"].as_u64()), (Some(i as u64), Some(2)));
        assert_eq!(p["task_id"], "t-9");
    }
    // 100 deltas, one interval: the first message and the final flush.
    assert_eq!(progress.len(), 2, "{progress:?}");
    assert!(progress[1]["text"].as_str().unwrap().ends_with(&"b".repeat(50)));

    stop_tx.send(()).unwrap();
    tokio::time::timeout(WAIT, peer).await.unwrap().unwrap().unwrap();
}
