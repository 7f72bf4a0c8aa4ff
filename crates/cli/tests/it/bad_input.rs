//! Bad input gets a clear error, keeps the connection (except oversized
//! frames, which close only that connection with 1009) and affects nobody else.

use serde_json::json;
use test_support::{Coordinator, Raw};
use tokio_tungstenite::tungstenite::Message;

use crate::bin;

/// Sends `text`, expects an `error` with `code`, and checks the connection still works.
async fn refused(raw: &mut Raw, text: &str, code: &str) -> serde_json::Value {
    raw.send(text).await;
    let err = raw.expect("error").await;
    assert_eq!(err["code"], code, "{text} → {err}");
    assert!(!err["reason"].as_str().unwrap_or_default().is_empty());
    err
}

#[tokio::test]
async fn malformed_unknown_and_wrong_messages_get_errors_and_keep_the_connection() {
    let c = Coordinator::start(bin(), &[]);
    let mut raw = Raw::connect(&c.ws_url).await;
    refused(&mut raw, "{not json", "malformed_json").await;
    refused(&mut raw, "[1, 2, 3]", "malformed_json").await;
    // serde would read a message from an array, field by field: refused.
    refused(&mut raw, r#"["register_gamer", "g0"]"#, "malformed_json").await;
    refused(&mut raw, r#""register_gamer""#, "malformed_json").await;
    refused(&mut raw, r#"{"peer_id": "p"}"#, "missing_msg_type").await;
    refused(&mut raw, r#"{"msg_type": 7}"#, "missing_msg_type").await;
    let err = refused(&mut raw, r#"{"msg_type": "teleport"}"#, "unknown_msg_type").await;
    assert!(err["reason"].as_str().unwrap().contains("teleport"));
    let err = refused(&mut raw, r#"{"msg_type": "register_peer"}"#, "invalid_message").await;
    assert!(err["reason"].as_str().unwrap().contains("peer_id"), "{err}");
    assert_eq!(err["in_reply_to"], "register_peer");
    refused(&mut raw, r#"{"msg_type": "register_gamer", "gamer_id": 42}"#, "invalid_message").await;
    refused(&mut raw, r#"{"msg_type": "heartbeat", "peer_id": "nobody"}"#, "not_registered").await;
    refused(&mut raw, r#"{"msg_type": "task_request", "task_type": "echo"}"#, "not_registered")
        .await;
    raw.send_message(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(raw.expect("error").await["code"], "unsupported_frame");
    // Still usable after all that.
    raw.send(r#"{"msg_type": "register_gamer", "gamer_id": "g"}"#).await;
    assert_eq!(raw.expect("registration_ack").await["status"], "registered");
    refused(
        &mut raw,
        r#"{"msg_type": "task_request", "task_type": "echo", "priority": "URGENT"}"#,
        "invalid_message",
    )
    .await;
    let err = refused(
        &mut raw,
        r#"{"msg_type": "task_request", "task_type": "echo", "timeout_s": -5}"#,
        "invalid_message",
    )
    .await;
    assert_eq!(err.get("task_id"), None, "it named none: {err}");
    // The refusal names the task it refuses, so that a client waiting for
    // that task's answer gets one.
    let err = refused(
        &mut raw,
        r#"{"msg_type": "task_request", "task_id": "c-9", "task_type": "echo",
            "requirements": {"min_vram_mb": 1180591620717411303424}}"#,
        "invalid_message",
    )
    .await;
    assert_eq!(
        (&err["task_id"], &err["in_reply_to"]),
        (&json!("c-9"), &json!("task_request")),
        "{err}"
    );
}

#[tokio::test]
async fn role_and_task_errors() {
    let c = Coordinator::start(bin(), &[]);
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    let err = refused(
        &mut peer,
        r#"{"msg_type": "task_request", "task_type": "echo", "data": {}}"#,
        "wrong_role",
    )
    .await;
    assert_eq!(err["in_reply_to"], "task_request");
    let err = refused(
        &mut peer,
        r#"{"msg_type": "task_result", "task_id": "t-999", "result": {}}"#,
        "unknown_task",
    )
    .await;
    assert_eq!(err["task_id"], "t-999");
    refused(
        &mut peer,
        r#"{"msg_type": "task_result", "task_id": "nonsense", "result": {}}"#,
        "unknown_task",
    )
    .await;
    refused(
        &mut peer,
        r#"{"msg_type": "heartbeat", "peer_id": "someone-else"}"#,
        "peer_id_mismatch",
    )
    .await;
    refused(&mut peer, r#"{"msg_type": "register_gamer", "gamer_id": "g"}"#, "already_registered")
        .await;

    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    refused(&mut gamer, r#"{"msg_type": "heartbeat", "peer_id": "g"}"#, "wrong_role").await;
    refused(&mut gamer, r#"{"msg_type": "cancel_task", "task_id": "nope"}"#, "unknown_task").await;
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "dup", "task_type": "echo", "data": {}}"#)
        .await;
    gamer.expect("task_accepted").await;
    let err = refused(
        &mut gamer,
        r#"{"msg_type": "task_request", "task_id": "dup", "task_type": "echo", "data": {}}"#,
        "duplicate_task_id",
    )
    .await;
    assert_eq!(err["task_id"], "dup");
    // The peer is unaffected by all this and still gets the task.
    assert_eq!(peer.expect("task_assignment").await["task_data"], json!({}));
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    let c = Coordinator::start(bin(), &["--max-frame-bytes", "4096"]);
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    let mut bystander = Raw::gamer(&c.ws_url, "g").await;
    let mut big = Raw::gamer(&c.ws_url, "big").await;
    let huge = format!(
        r#"{{"msg_type": "task_request", "task_type": "echo", "data": "{}"}}"#,
        "x".repeat(10_000)
    );
    let _ = big.send_message(Message::text(huge)).await;
    let close = big.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1009);
    // Everyone else carries on.
    bystander.send(r#"{"msg_type": "task_request", "task_id": "1", "task_type": "echo", "data": {"ok": 1}}"#).await;
    bystander.expect("task_accepted").await;
    let a = peer.expect("task_assignment").await;
    peer.send_json(
        &json!({"msg_type": "task_result", "task_id": a["task_id"], "result": a["task_data"]}),
    )
    .await;
    assert_eq!(bystander.expect("task_result").await["result"], json!({"ok": 1}));
}

#[tokio::test]
async fn odd_capabilities_never_refuse_a_peer() {
    let c = Coordinator::start(bin(), &[]);
    for caps in ["{}", "null", "[1,2]", r#""gpu""#, r#"{"max_concurrent": "lots", "gpus": 7}"#] {
        let mut raw = Raw::connect(&c.ws_url).await;
        raw.send(&format!(
            r#"{{"msg_type": "register_peer", "peer_id": "p", "capabilities": {caps}}}"#
        ))
        .await;
        assert_eq!(raw.expect("registration_ack").await["status"], "registered", "{caps}");
    }
}

/// A reconnecting peer's claim to a run the coordinator never knew (or no
/// longer holds) is told back as stale, as the peer named it, so that the
/// peer stops that run; the claim it still holds stays.
#[tokio::test]
async fn claims_to_unknown_runs_come_back_stale() {
    let c = Coordinator::start(bin(), &[]);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let caps = r#"{"echoes_ids": true, "slots": 2}"#;
    let mut peer = Raw::peer(&c.ws_url, "p", caps).await;
    gamer.send_json(&json!({"msg_type": "task_request", "task_id": "held", "task_type": "echo", "data": {}})).await;
    let assigned = peer.expect("task_assignment").await;
    let (id, attempt) = (assigned["id"].as_str().unwrap().to_owned(), assigned["attempt"].clone());
    peer.close().await;
    let register = json!({
        "msg_type": "register_peer", "peer_id": "p",
        "capabilities": {"echoes_ids": true, "slots": 2},
        "running": [
            {"task_id": "held", "id": id, "attempt": attempt},
            {"task_id": "never-seen", "attempt": 1},
            {"task_id": "other", "id": "t-999999", "attempt": 1},
        ],
    });
    let mut again = Raw::connect(&c.ws_url).await;
    again.send_json(&register).await;
    let ack = again.expect("registration_ack").await;
    let stale = ack["stale"].as_array().cloned().unwrap_or_default();
    let mut named: Vec<_> = stale.iter().map(|s| s["task_id"].as_str().unwrap_or("?")).collect();
    named.sort_unstable();
    assert_eq!(named, ["never-seen", "other"], "{ack}");
    let other = stale.iter().find(|s| s["task_id"] == "other").unwrap();
    assert_eq!(other["id"], "t-999999", "{ack}");
    // The held run's result still counts.
    let result = json!({"msg_type": "task_result", "task_id": "held", "id": id, "attempt": attempt, "result": {"ok": 1}});
    again.send_json(&result).await;
    let done = gamer.until("task_result").await;
    assert_eq!(done["result"], json!({"ok": 1}), "{done}");
}
