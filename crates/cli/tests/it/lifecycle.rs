//! Task flow: ownership of results, reconnecting gamers, priorities,
//! capability matching, graceful shutdown, the CLI client.

use serde_json::json;
use test_support::{Coordinator, Proc, Raw, worker};

use crate::bin;

#[tokio::test]
async fn results_go_only_to_the_submitter_and_wait_for_it_to_return() {
    let c = Coordinator::start(bin(), &[]);
    let mut peer = Raw::peer(&c.ws_url, "p", r#"{"max_concurrent": 4}"#).await;
    let mut alice = Raw::gamer(&c.ws_url, "alice").await;
    let mut bob = Raw::gamer(&c.ws_url, "bob").await;
    alice.send(r#"{"msg_type": "task_request", "task_id": "same", "task_type": "x", "data": "from alice"}"#).await;
    bob.send(
        r#"{"msg_type": "task_request", "task_id": "same", "task_type": "x", "data": "from bob"}"#,
    )
    .await;
    alice.expect("task_accepted").await;
    bob.expect("task_accepted").await;
    let a1 = peer.expect("task_assignment").await;
    let a2 = peer.expect("task_assignment").await;
    // Bob leaves before his result arrives.
    bob.close().await;
    for a in [&a1, &a2] {
        peer.send_json(
            &json!({"msg_type": "task_result", "task_id": a["task_id"], "result": a["task_data"]}),
        )
        .await;
    }
    assert_eq!(alice.expect("task_result").await["result"], "from alice");
    // Bob comes back with the same id and gets his.
    let mut bob = Raw::gamer(&c.ws_url, "bob").await;
    let r = bob.expect("task_result").await;
    assert_eq!((r["task_id"].as_str(), r["result"].as_str()), (Some("same"), Some("from bob")));
}

#[tokio::test]
async fn a_reconnecting_gamer_can_ask_again_for_outcomes_it_awaits() {
    // An outcome handed to a connection that died before it arrived is not
    // lost: the gamer names the tasks it still awaits when it registers.
    let c = Coordinator::start(bin(), &[]);
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "a", "task_type": "x", "data": 7}"#)
        .await;
    gamer.expect("task_accepted").await;
    let a = peer.expect("task_assignment").await;
    peer.send_json(&json!({"msg_type": "task_result", "task_id": a["task_id"], "result": 49}))
        .await;
    assert_eq!(gamer.expect("task_result").await["result"], 49);
    gamer.close().await;

    let mut again = Raw::connect(&c.ws_url).await;
    again
        .send(r#"{"msg_type": "register_gamer", "gamer_id": "g", "awaiting": ["a", "never-sent"]}"#)
        .await;
    again.expect("registration_ack").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let m = again.recv().await;
        seen.push((m["msg_type"].clone(), m["task_id"].clone(), m["code"].clone()));
    }
    seen.sort_by_key(|s| s.1.to_string());
    assert_eq!(
        seen,
        vec![
            (json!("task_result"), json!("a"), json!(null)),
            (json!("task_error"), json!("never-sent"), json!("unknown_task")),
        ]
    );
}

#[tokio::test]
async fn resubmitting_a_finished_task_is_acknowledged_before_its_outcome_comes_again() {
    let c = Coordinator::start(bin(), &[]);
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let request = r#"{"msg_type": "task_request", "task_id": "k", "task_type": "x", "data": 3,
        "idempotency_key": "order-k"}"#;
    gamer.send(request).await;
    let first = gamer.expect("task_accepted").await;
    let a = peer.expect("task_assignment").await;
    peer.send_json(&json!({"msg_type": "task_result", "task_id": a["task_id"], "result": 9})).await;
    assert_eq!(gamer.expect("task_result").await["result"], 9);
    // The client asks again on a new connection (it missed the outcome).
    gamer.close().await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer.send(request).await;
    let ack = gamer.recv().await;
    assert_eq!(
        (&ack["msg_type"], &ack["existing"], &ack["id"]),
        (&json!("task_accepted"), &json!(true), &first["id"]),
        "{ack}"
    );
    let again = gamer.recv().await;
    assert_eq!((&again["msg_type"], &again["result"]), (&json!("task_result"), &json!(9)));
}

#[tokio::test]
async fn a_run_answering_cancelled_that_was_never_cancelled_is_handed_back_not_failed() {
    // After a crash lost the coordinator's cancel, a peer's `cancelled`
    // answer for a run the coordinator still counts on: the task runs again.
    let c = Coordinator::start(bin(), &[]);
    let mut peer = Raw::peer(&c.ws_url, "p", r#"{"echoes_ids": true}"#).await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "k", "task_type": "x", "data": 3}"#)
        .await;
    gamer.expect("task_accepted").await;
    let a = peer.expect("task_assignment").await;
    assert_eq!(a["attempt"], 1);
    let cancelled = json!({"msg_type": "task_result", "task_id": a["task_id"], "id": a["id"],
        "attempt": 1, "error": {"code": "cancelled", "message": "cancelled"}});
    peer.send_json(&cancelled).await;
    let again = peer.until("task_assignment").await;
    assert_eq!((&again["id"], &again["attempt"]), (&a["id"], &json!(2)));
    peer.send_json(&json!({"msg_type": "task_result", "task_id": again["task_id"],
        "id": again["id"], "attempt": 2, "result": 9}))
        .await;
    let r = gamer.until("task_result").await;
    assert_eq!((r["task_id"].as_str(), &r["result"]), (Some("k"), &json!(9)));
}

#[tokio::test]
async fn a_task_without_an_id_gets_one_and_priorities_are_honoured() {
    let c = Coordinator::start(bin(), &[]);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer
        .send(r#"{"msg_type": "task_request", "task_type": "x", "data": 0, "priority": "LOW"}"#)
        .await;
    let accepted = gamer.expect("task_accepted").await;
    assert!(accepted["task_id"].as_str().unwrap().starts_with("t-"), "{accepted}");
    assert_eq!(accepted["status"], "queued");
    assert!(accepted["waiting_reason"].as_str().unwrap().contains("no capable peer"), "{accepted}");
    for (id, prio) in [("n", json!("NORMAL")), ("c", json!("CRITICAL")), ("h", json!(2))] {
        gamer.send_json(&json!({"msg_type": "task_request", "task_id": id, "task_type": "x", "data": id, "priority": prio})).await;
        gamer.expect("task_accepted").await;
    }
    let mut peer = Raw::peer(&c.ws_url, "p", r#"{"max_concurrent": 4}"#).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(peer.expect("task_assignment").await["task_data"].clone());
    }
    assert_eq!(order, vec![json!("c"), json!("h"), json!("n"), json!(0)]);
}

#[tokio::test]
async fn tasks_go_only_to_peers_declaring_their_type() {
    let c = Coordinator::start(bin(), &[]);
    let mut echo_only =
        Raw::peer(&c.ws_url, "echo-only", r#"{"task_types": ["echo"], "max_concurrent": 2}"#).await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "s", "task_type": "sleep", "data": {}}"#)
        .await;
    let accepted = gamer.expect("task_accepted").await;
    assert!(accepted["waiting_reason"].as_str().unwrap().contains("sleep"), "{accepted}");
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "e", "task_type": "echo", "data": {}}"#)
        .await;
    gamer.expect("task_accepted").await;
    let a = echo_only.expect("task_assignment").await;
    assert_eq!(a["task_type"], "echo");
    gamer.send(r#"{"msg_type": "task_status", "task_id": "s"}"#).await;
    let status = gamer.expect("task_status").await;
    assert_eq!(status["status"], "queued");
}

#[tokio::test]
async fn a_second_coordinator_on_the_same_data_dir_is_refused() {
    let c = Coordinator::start(bin(), &[]);
    let dir = c.data_dir().to_str().unwrap().to_owned();
    let args = ["cluster", "start", "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    let (mut second, _lines) =
        Proc::spawn(bin(), &[&args[..], &["--data-dir", &dir]].concat(), &[]);
    assert_eq!(second.wait(), Some(1), "{}", second.log());
    assert!(
        second.log().contains(&format!("the store at {dir}/tasks.db is in use by another process")),
        "{}",
        second.log()
    );
    // The first one is unaffected.
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "s", "task_type": "echo", "data": {}}"#)
        .await;
    gamer.expect("task_accepted").await;
    gamer.send(r#"{"msg_type": "task_status", "task_id": "s"}"#).await;
    assert_eq!(gamer.expect("task_status").await["status"], "queued");
}

#[tokio::test]
async fn sigterm_tells_everyone_and_exits_cleanly() {
    let mut c = Coordinator::start(bin(), &[]);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    assert_eq!(c.proc.terminate(), Some(0));
    assert_eq!(gamer.expect("shutdown").await["msg_type"], "shutdown");
    assert_eq!(u16::from(gamer.closed().await.expect("close").code), 1001);
    assert_eq!(peer.expect("shutdown").await["msg_type"], "shutdown");
}

#[tokio::test]
async fn task_submit_wait_prints_the_result() {
    let c = Coordinator::start(bin(), &[]);
    let _w = worker(bin(), &c.ws_url, "w", &[]);
    let out = std::process::Command::new(bin())
        .args([
            "task",
            "submit",
            "--coordinator",
            &c.ws_url,
            "--type",
            "echo",
            "--data",
            r#"{"hello":"world"}"#,
            "--wait",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, json!({"hello": "world"}));
    // A failing task: exit code 3 (the task ended without a result) and one
    // line on stderr.
    let out = std::process::Command::new(bin())
        .args([
            "task",
            "submit",
            "--coordinator",
            &c.ws_url,
            "--type",
            "sleep",
            "--data",
            r#"{"ms":-1}"#,
            "--wait",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("error: ") && l.contains("invalid_input")),
        "{stderr}"
    );
}
