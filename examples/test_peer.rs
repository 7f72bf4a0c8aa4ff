//! The seed's minimal test peer (phase 4): registers, heartbeats every 5 s
//! and executes tasks, speaking only the seed's JSON — no SDK.
//!
//! ```text
//! cargo run --example test_peer -- ws://127.0.0.1:8765 [peer_id] [tasks_before_exit]
//! ```
//!
//! Each task's result echoes its data with the peer's id.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8765".to_owned());
    let peer_id = args.next().unwrap_or_else(|| "peer_1".to_owned());
    let limit: Option<usize> = args.next().and_then(|n| n.parse().ok());

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let register = json!({"msg_type": "register_peer", "peer_id": peer_id, "capabilities": {}});
    ws.send(Message::text(register.to_string())).await?;
    println!("connected to {url} as {peer_id}");

    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    let mut done = 0;
    while limit.is_none_or(|n| done < n) {
        tokio::select! {
            _ = heartbeat.tick() => {
                let hb = json!({"msg_type": "heartbeat", "peer_id": peer_id});
                ws.send(Message::text(hb.to_string())).await?;
            }
            frame = ws.next() => {
                let Some(frame) = frame else { break };
                let Message::Text(text) = frame? else { continue };
                let msg: Value = serde_json::from_str(text.as_str())?;
                match msg["msg_type"].as_str() {
                    Some("registration_ack") => println!("registered: {}", msg["status"]),
                    Some("task_assignment") => {
                        let result = json!({"echo": msg["task_data"], "peer": peer_id});
                        let reply = json!({
                            "msg_type": "task_result",
                            "task_id": msg["task_id"],
                            "result": result,
                        });
                        ws.send(Message::text(reply.to_string())).await?;
                        done += 1;
                        println!("ran task {}", msg["task_id"]);
                    }
                    _ => println!("coordinator says: {msg}"),
                }
            }
        }
    }
    ws.close(None).await?;
    Ok(())
}
