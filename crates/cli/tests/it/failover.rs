//! Failover with real processes: `kill -9` of a worker, a silent peer,
//! a coordinator restart, a worker drained by SIGTERM.

use serde_json::{Value, json};
use test_support::{Coordinator, Raw, eventually, worker};

use crate::{FAST, bin};

/// Submits a sleep task as gamer `g` and returns the gamer connection.
async fn submit_sleep(url: &str, id: &str, ms: u64) -> Raw {
    let mut gamer = Raw::gamer(url, "g").await;
    gamer.send_json(&json!({"msg_type": "task_request", "task_id": id, "task_type": "sleep", "data": {"ms": ms}})).await;
    gamer.expect("task_accepted").await;
    gamer
}

/// Polls the task's status until it runs on `peer` (an event, not a sleep:
/// each answer comes from the coordinator).
async fn until_held_by(gamer: &mut Raw, id: &str, peer: &str) -> Value {
    let deadline = tokio::time::Instant::now() + test_support::WAIT;
    loop {
        gamer.send_json(&json!({"msg_type": "task_status", "task_id": id})).await;
        let status = gamer.until("task_status").await;
        if status["peer_id"] == peer {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never ran on {peer}: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kill_9_of_a_worker_holding_a_task_moves_it_to_another() {
    let c = Coordinator::start(bin(), &[]);
    let mut a = worker(bin(), &c.ws_url, "worker-a", &["--slots", "1"]);
    let mut gamer = submit_sleep(&c.ws_url, "job", 1500).await;
    let held = until_held_by(&mut gamer, "job", "worker-a").await;
    assert_eq!(held["attempt"], 1);
    let _b = worker(bin(), &c.ws_url, "worker-b", &["--slots", "1"]);
    a.kill9();
    let result = gamer.expect("task_result").await;
    assert_eq!(result["task_id"], "job");
    assert_eq!(result["peer_id"], "worker-b");
    assert_eq!(result["attempt"], 2);
    assert_eq!(result["result"], json!({"slept_ms": 1500}));
}

#[tokio::test]
async fn a_silent_peer_with_an_open_socket_is_declared_dead() {
    let c = Coordinator::start(bin(), FAST);
    // A seed peer that registers and then never heartbeats.
    let mut silent = Raw::peer(&c.ws_url, "silent", r#"{"task_types": ["echo"]}"#).await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer.send(r#"{"msg_type": "task_request", "task_id": "t", "task_type": "echo", "data": {"n": 1}}"#).await;
    gamer.expect("task_accepted").await;
    silent.expect("task_assignment").await;
    let _w = worker(bin(), &c.ws_url, "alive", &[]);
    let close = silent.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(close.reason.as_str(), "heartbeat timeout");
    let result = gamer.expect("task_result").await;
    assert_eq!((result["peer_id"].as_str(), result["attempt"].as_u64()), (Some("alive"), Some(2)));
    assert_eq!(result["result"], json!({"n": 1}));
}

#[tokio::test]
async fn peer_failures_end_in_a_clear_failure_after_max_attempts() {
    let c = Coordinator::start(bin(), &["--max-attempts", "2"]);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer
        .send(
            r#"{"msg_type": "task_request", "task_id": "doomed", "task_type": "echo", "data": {}}"#,
        )
        .await;
    gamer.expect("task_accepted").await;
    for _ in 0..2 {
        // Each peer takes the task and disconnects.
        let mut p = Raw::peer(&c.ws_url, "flaky", "{}").await;
        p.expect("task_assignment").await;
        p.close().await;
    }
    let err = gamer.expect("task_error").await;
    assert_eq!(err["task_id"], "doomed");
    assert_eq!(err["status"], "failed");
    assert_eq!(err["code"], "attempts_exhausted");
    assert_eq!(err["attempts"], 2);
    assert!(err["reason"].as_str().unwrap().contains("peer_lost"), "{err}");
}

#[tokio::test]
async fn an_executor_error_is_returned_without_retry() {
    let c = Coordinator::start(bin(), &[]);
    let _w = worker(bin(), &c.ws_url, "w", &[]);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer.send(r#"{"msg_type": "task_request", "task_id": "bad", "task_type": "sleep", "data": {"ms": "soon"}}"#).await;
    gamer.expect("task_accepted").await;
    let err = gamer.expect("task_error").await;
    assert_eq!((err["code"].as_str(), err["attempts"].as_u64()), (Some("invalid_input"), Some(1)));
}

#[tokio::test]
async fn a_reconnecting_peer_replaces_its_old_session() {
    let c = Coordinator::start(bin(), &[]);
    let mut old = Raw::peer(&c.ws_url, "same", "{}").await;
    let _new = Raw::peer(&c.ws_url, "same", "{}").await;
    let close = old.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), 4000);
}

#[tokio::test]
async fn workers_reconnect_after_a_coordinator_restart() {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut c1 = Coordinator::start_env(bin(), &["--bind", &bind], &[]);
    let url = c1.ws_url.clone();
    let _w = worker(bin(), &url, "w", &[]);
    let mut gamer = Raw::gamer(&url, "g").await;
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "1", "task_type": "echo", "data": 1}"#)
        .await;
    gamer.until("task_result").await;
    c1.proc.kill9();
    let _c2 = Coordinator::start_env(bin(), &["--bind", &bind], &[]);
    let mut gamer = Raw::gamer(&url, "g").await;
    gamer
        .send(r#"{"msg_type": "task_request", "task_id": "2", "task_type": "echo", "data": 2}"#)
        .await;
    // It completes once the worker has found the new coordinator.
    let result = gamer.until("task_result").await;
    assert_eq!(result["result"], 2);
}

#[tokio::test]
async fn sigterm_drains_a_worker_and_returns_its_task() {
    let c = Coordinator::start(bin(), &[]);
    let mut a = worker(bin(), &c.ws_url, "a", &["--drain-timeout", "0"]);
    let mut gamer = submit_sleep(&c.ws_url, "long", 1000).await;
    until_held_by(&mut gamer, "long", "a").await;
    assert_eq!(a.terminate(), Some(0), "{}", a.log());
    let _b = worker(bin(), &c.ws_url, "b", &[]);
    let result = gamer.expect("task_result").await;
    // Returned, not failed: it runs again as attempt 2 on b.
    assert_eq!((result["peer_id"].as_str(), result["attempt"].as_u64()), (Some("b"), Some(2)));
}

#[tokio::test]
async fn sigterm_lets_a_worker_finish_within_its_drain_timeout() {
    let c = Coordinator::start(bin(), &[]);
    let mut a = worker(bin(), &c.ws_url, "a", &["--drain-timeout", "30"]);
    let mut gamer = submit_sleep(&c.ws_url, "short", 300).await;
    until_held_by(&mut gamer, "short", "a").await;
    let _ = std::process::Command::new("kill").args(["-TERM", &a.pid().to_string()]).status();
    let result = gamer.expect("task_result").await;
    assert_eq!((result["peer_id"].as_str(), result["attempt"].as_u64()), (Some("a"), Some(1)));
    assert_eq!(a.wait(), Some(0));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The workers table's done and failed counts come back after a restart
/// (from the store's history) and grow from there.
#[tokio::test]
async fn a_workers_counts_survive_a_coordinator_restart() {
    let (port, data) = (free_port(), tempfile::tempdir().unwrap());
    let bind = format!("127.0.0.1:{port}");
    let args = ["--bind", bind.as_str(), "--data-dir", data.path().to_str().unwrap()];
    let mut c1 = Coordinator::start_env(bin(), &args, &[]);
    let url = c1.ws_url.clone();
    let _w = worker(bin(), &url, "w", &[]);
    let mut gamer = Raw::gamer(&url, "g").await;
    let echo = |id: u32| {
        format!(
            r#"{{"msg_type": "task_request", "task_id": "{id}", "task_type": "echo", "data": {id}}}"#
        )
    };
    for id in 1..=2 {
        gamer.send(&echo(id)).await;
        gamer.until("task_result").await;
    }
    let bad = r#"{"msg_type": "task_request", "task_id": "3", "task_type": "sleep", "data": {"ms": "x"}}"#;
    gamer.send(bad).await;
    let failed = gamer.until("task_error").await;
    assert_eq!(failed["attempts"], 1, "failed on the worker: {failed}");
    c1.proc.kill9();
    let c2 = Coordinator::start_env(bin(), &args, &[]);
    let mut gamer = Raw::gamer(&url, "g").await;
    gamer.send(&echo(4)).await;
    gamer.until("task_result").await;
    tls::install_default_provider();
    let http = reqwest::Client::new();
    let row = eventually("the worker's row", || async {
        let list: serde_json::Value = http
            .get(format!("{}/cluster/workers", c2.http()))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let row = list["workers"].as_array()?.iter().find(|w| w["worker_id"] == "w").cloned()?;
        // The snapshot is published after the core's next step: wait for
        // the last completion to show (a count lost at the restart never does).
        (row["busy_slots"] == 0 && row["tasks_completed"].as_u64() >= Some(3)).then_some(row)
    })
    .await;
    assert_eq!(
        (row["tasks_completed"].as_u64(), row["tasks_failed"].as_u64()),
        (Some(3), Some(1)),
        "{row}"
    );
}
