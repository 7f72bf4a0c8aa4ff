//! The real worker running `generate` for a fake coordinator (a WebSocket
//! server on 127.0.0.1 in this test, so that the very messages the worker
//! sends are read; through the real coordinator, see
//! crates/cli/tests/it/generate.rs): it advertises the model with its
//! details, streams `task_progress` with consecutive `seq` whose texts add
//! up to the result's text, and sends the `task_result` after the last of
//! them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use exec::Executors;
use exec_llm::{GpuLayers, Llm};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time");
        match frame.expect("the worker stays connected").expect("a frame") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(_) => panic!("the worker closed the connection"),
            _ => {}
        }
    }
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

#[tokio::test]
async fn the_worker_streams_task_progress_then_sends_the_result() {
    let dir = common::scratch("worker");
    let Some(path) = exec_llm::fixture::tiny_or_skip(&dir, "tiny", "worker") else { return };
    let llm = Llm::from_dir(&dir, common::config(GpuLayers::Count(0))).unwrap();
    assert_eq!(llm.model_names(), ["tiny"]);
    let mut executors = Executors::builtin();
    executors.add(llm);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let mut config = worker::Config::new(url, "llm-peer");
    config.heartbeat_interval = Some(Duration::from_secs(3600));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(worker::Worker::new(config, executors).run(async {
        let _ = stop_rx.await;
    }));

    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let register = recv(&mut ws).await;
    assert_eq!(register["msg_type"], "register_peer");
    let models = &register["capabilities"]["models"];
    assert_eq!(models[0]["name"], "tiny", "{models}");
    assert_eq!(models[0]["task_type"], "generate");
    assert_eq!(models[0]["size_bytes"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(register["capabilities"]["task_needs"]["generate"]["model_field"], "model");
    let caps = proto::Capabilities::from_value(register["capabilities"].clone());
    assert!(caps.serves_model("tiny", "generate"));
    send(&mut ws, json!({"msg_type": "registration_ack", "status": "registered"})).await;

    let data = json!({"model": "tiny", "prompt": "hello", "max_tokens": 64, "temperature": 0});
    let assignment = json!({"msg_type": "task_assignment", "task_id": "t-1", "id": "t-41",
                            "task_type": "generate", "attempt": 3, "task_data": data});
    send(&mut ws, assignment).await;

    let mut streamed = String::new();
    let mut tokens = 0;
    let mut seq = 0;
    let result = loop {
        let msg = recv(&mut ws).await;
        match msg["msg_type"].as_str().unwrap() {
            "task_progress" => {
                assert_eq!(
                    (msg["task_id"].as_str(), msg["attempt"].as_u64()),
                    (Some("t-1"), Some(3))
                );
                assert_eq!(msg["seq"], seq, "consecutive seq: {msg}");
                seq += 1;
                streamed.push_str(msg["text"].as_str().unwrap());
                tokens += msg["tokens"].as_u64().unwrap_or(0);
            }
            "task_started" | "heartbeat" => {}
            "task_result" => break msg,
            other => panic!("unexpected {other}: {msg}"),
        }
    };
    assert!(result.get("error").is_none(), "{result}");
    assert_eq!((result["task_id"].as_str(), result["attempt"].as_u64()), (Some("t-1"), Some(3)));
    assert!(seq >= 1, "at least one task_progress came before the result");
    assert_eq!(streamed, result["result"]["text"].as_str().unwrap());
    assert_eq!(tokens, 64);
    assert_eq!(result["result"]["completion_tokens"], 64);

    // A bad request is an error result, and the worker stays up.
    let bad = json!({"msg_type": "task_assignment", "task_id": "t-2", "task_type": "generate",
                     "attempt": 1, "task_data": {"model": "tiny", "prompt": "x", "temperature": -2}});
    send(&mut ws, bad).await;
    let answer = loop {
        let msg = recv(&mut ws).await;
        if msg["msg_type"] == "task_result" {
            break msg;
        }
    };
    assert_eq!(answer["error"]["code"], "invalid_input", "{answer}");

    stop_tx.send(()).unwrap();
    assert_eq!(recv(&mut ws).await["msg_type"], "drain");
    tokio::time::timeout(WAIT, peer).await.unwrap().unwrap().unwrap();
}
