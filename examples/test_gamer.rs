//! The seed's minimal test gamer (phase 4): registers and submits tasks,
//! speaking only the seed's JSON — no SDK — and prints each result.
//!
//! ```text
//! cargo run --example test_gamer -- ws://127.0.0.1:8765 [gamer_id] [tasks]
//! ```

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8765".to_owned());
    let gamer_id = args.next().unwrap_or_else(|| "gamer_1".to_owned());
    let tasks: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let register = json!({"msg_type": "register_gamer", "gamer_id": gamer_id});
    ws.send(Message::text(register.to_string())).await?;

    for i in 0..tasks {
        let request = json!({
            "msg_type": "task_request",
            "task_id": format!("{}", 123 + i),
            "task_type": "physics",
            "data": {"step": i},
        });
        ws.send(Message::text(request.to_string())).await?;
    }

    let mut results = 0;
    while results < tasks {
        let Some(frame) = ws.next().await else { break };
        let Message::Text(text) = frame? else { continue };
        let msg: Value = serde_json::from_str(text.as_str())?;
        match msg["msg_type"].as_str() {
            Some("task_result") => {
                results += 1;
                println!("result for task {}: {}", msg["task_id"], msg["result"]);
            }
            Some("registration_ack") => println!("registered: {}", msg["status"]),
            _ => {}
        }
    }
    ws.close(None).await?;
    Ok(())
}
