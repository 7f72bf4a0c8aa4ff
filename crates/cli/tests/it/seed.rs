//! The seed's "Testing Checklist", all eleven points, with clients that send
//! exactly the seed's JSON.

use serde_json::json;
use test_support::{Coordinator, Raw};

use crate::{FAST, bin};

#[tokio::test]
async fn the_seeds_testing_checklist() {
    // 1. Coordinator starts and listens (on an ephemeral port here; 8765 by default).
    let c = Coordinator::start(bin(), FAST);
    assert!(c.ws_url.starts_with("ws://127.0.0.1:"), "{}", c.ws_url);

    // 2. Peer can connect and register.
    let mut peer = Raw::connect(&c.ws_url).await;
    peer.send(r#"{"msg_type": "register_peer", "peer_id": "peer_1", "capabilities": {}}"#).await;
    let ack = peer.expect("registration_ack").await;
    assert_eq!(ack["status"], "registered");

    // 3. Gamer can connect and register.
    let mut gamer = Raw::connect(&c.ws_url).await;
    gamer.send(r#"{"msg_type": "register_gamer", "gamer_id": "gamer_1"}"#).await;
    assert_eq!(gamer.expect("registration_ack").await["status"], "registered");

    // 4. Gamer submits task → queued by coordinator.
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "123", "task_type": "physics", "data": {"bodies": 3}}"#)
        .await;
    let accepted = gamer.expect("task_accepted").await;
    assert_eq!(accepted["task_id"], "123");

    // 5. Coordinator assigns task to peer.
    let assignment = peer.expect("task_assignment").await;
    assert_eq!(assignment["task_data"], json!({"bodies": 3}));
    let task_id = assignment["task_id"].as_str().unwrap().to_owned();
    assert_eq!(task_id, "123", "the peer sees the gamer's own id: {assignment}");

    // 9. Peer sends heartbeats (no error comes back; the peer stays registered).
    peer.send(r#"{"msg_type": "heartbeat", "peer_id": "peer_1"}"#).await;

    // 6. Peer executes task and returns result.
    peer.send(&format!(
        r#"{{"msg_type": "task_result", "task_id": "{task_id}", "result": {{"ok": true}}}}"#
    ))
    .await;

    // 7 + 8. Coordinator forwards result to gamer; gamer receives result.
    let result = gamer.expect("task_result").await;
    assert_eq!(result["task_id"], "123");
    assert_eq!(result["result"], json!({"ok": true}));

    // 10 + 11. Coordinator detects a dead peer and reassigns its task.
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "124", "task_type": "echo", "data": {}}"#)
        .await;
    gamer.expect("task_accepted").await;
    let first = peer.expect("task_assignment").await;
    assert_eq!(first["attempt"], 1);
    // peer_1 goes silent (its socket stays open); peer_2 keeps heartbeating.
    let worker = test_support::worker(bin(), &c.ws_url, "peer_2", &[]);
    let closed = peer.closed().await.expect("a close frame");
    assert_eq!(u16::from(closed.code), 4001, "{closed:?}");
    let result = gamer.expect("task_result").await;
    assert_eq!(result["task_id"], "124");
    assert_eq!(result["peer_id"], "peer_2");
    assert_eq!(result["attempt"], 2);
    drop(worker);
}

#[tokio::test]
async fn the_seeds_example_clients_work() {
    let c = Coordinator::start(bin(), &[]);
    let examples =
        std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples");
    let peer = std::process::Command::new(examples.join("test_peer"))
        .args([c.ws_url.as_str(), "peer_1", "3"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("test_peer example (built by cargo test)");
    let out = std::process::Command::new(examples.join("test_gamer"))
        .args([c.ws_url.as_str(), "gamer_1", "3"])
        .output()
        .expect("test_gamer example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for id in ["123", "124", "125"] {
        assert!(stdout.contains(&format!("result for task \"{id}\"")), "{stdout}");
    }
    let mut peer = peer;
    assert!(peer.wait().unwrap().success());
}

#[tokio::test]
async fn a_peer_without_declared_slots_runs_one_task_at_a_time() {
    let c = Coordinator::start(bin(), &[]);
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    for id in ["a", "b"] {
        gamer.send_json(&json!({"msg_type": "task_request", "task_id": id, "task_type": "anything", "data": {}})).await;
        gamer.expect("task_accepted").await;
    }
    let first = peer.expect("task_assignment").await;
    // The second waits until the first is done.
    peer.send_json(&json!({"msg_type": "task_result", "task_id": first["task_id"], "result": 1}))
        .await;
    let second = peer.expect("task_assignment").await;
    assert_ne!(first["task_id"], second["task_id"]);
    assert_eq!(gamer.expect("task_result").await["task_id"], "a");
}
