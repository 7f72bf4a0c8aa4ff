//! Limits that hold under abuse, against the real binary: a connection
//! flood at the open-file limit, and the budget for partly received frames
//! measured in the coordinator's own peak RSS.

use std::time::Duration;

use test_support::{Coordinator, Raw, WAIT};

use crate::bin;

/// A line of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_flood_at_the_fd_limit_leaves_the_api_answering_and_the_log_short() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        let required = std::env::var_os("LEGACYGPU_REQUIRE_PRLIMIT").is_some();
        assert!(!required, "prlimit (util-linux) is needed: LEGACYGPU_REQUIRE_PRLIMIT is set");
        eprintln!("SKIP: no prlimit");
        return;
    }
    // 256 descriptors, soft and hard: the coordinator cannot raise it.
    let wrapper = ["prlimit", "--nofile=256:256"];
    let extra = ["--no-store", "--handshake-timeout", "60"];
    let c = Coordinator::start_wrapped(&wrapper, bin(), &extra, &[]);
    let addr = c.ws_url.trim_start_matches("ws://").to_owned();
    // 600 sockets that never send a byte: more than the process can hold.
    let mut flood = Vec::new();
    for _ in 0..600 {
        flood.push(test_support::tcp_from(&addr, None).await);
    }
    // The HTTP API keeps its share of descriptors and answers.
    let api = client::api::Api::new(c.http(), None);
    let health = tokio::time::timeout(WAIT, api.get("/cluster/health")).await.unwrap().unwrap();
    assert!(health["status"].is_string(), "{health}");
    let metrics = reqwest_text(&format!("{}/metrics", c.http())).await;
    assert!(
        metrics.lines().any(|l| l.starts_with("legacygpu_connections_refused_total")
            && l.contains("max_connections")),
        "{metrics}"
    );
    drop(flood);
    // Once the flood is gone, a real session gets in.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut raw) = Raw::connect_with(&c.ws_url, None).await {
            raw.send(r#"{"msg_type": "register_gamer", "gamer_id": "g"}"#).await;
            if raw.recv().await["msg_type"] == "registration_ack" {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no session after the flood");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A flood is counted, not logged line by line.
    let log = c.proc.log();
    assert!(log.lines().count() < 40, "{} log lines:\n{log}", log.lines().count());
    assert!(log.contains("open-file limit (256)"), "the limit is reported once:\n{log}");
}

async fn reqwest_text(url: &str) -> String {
    tls::install_default_provider();
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The header of a masked text frame of `len` bytes (mask 0: payload as is).
fn frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

#[tokio::test]
async fn partly_received_frames_stay_within_the_budget() {
    const MIB: u64 = 1024 * 1024;
    const BUDGET: u64 = 64 * MIB;
    const CONNECTIONS: u64 = 40;
    let budget = BUDGET.to_string();
    let extra = ["--no-store", "--max-partial-frame-bytes", budget.as_str()];
    let c = Coordinator::start(bin(), &extra);
    let pid = c.proc.pid();
    let baseline = status_kib(pid, "VmRSS:");
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        let mut raw = Raw::gamer(&c.ws_url, &format!("g{i}")).await;
        tasks.push(tokio::spawn(async move {
            // A 16 MiB frame, all but its last byte: it never completes.
            let payload = vec![b' '; (16 * MIB - 1) as usize];
            raw.send_raw(&frame_header(16 * MIB)).await;
            let sent = tokio::time::timeout(WAIT, raw.try_send_raw(&payload)).await;
            let closed = match sent {
                Ok(Err(_)) => raw.closed().await.map(|f| u16::from(f.code)),
                _ => None,
            };
            (raw, closed)
        }));
    }
    let mut held = Vec::new();
    let mut closed_1013 = 0;
    for t in tasks {
        let (raw, closed) = t.await.unwrap();
        closed_1013 += usize::from(closed == Some(1013));
        held.push(raw);
    }
    let peak = status_kib(pid, "VmHWM:");
    let grew_mib = peak.saturating_sub(baseline) / 1024;
    // The bound: the budget and each connection's free 64 KiB, twice over
    // (the codec's buffer grows by doubling), plus 32 MiB for the rest.
    let bound_mib = (2 * (BUDGET + CONNECTIONS * 64 * 1024) + 32 * MIB) / MIB;
    println!(
        "peak RSS grew by {grew_mib} MiB (bound {bound_mib} MiB) under {CONNECTIONS} × 16 MiB partial frames"
    );
    assert!(grew_mib <= bound_mib, "peak RSS grew by {grew_mib} MiB, over {bound_mib} MiB");
    assert!(closed_1013 > 0, "connections past the budget are closed with 1013");
    // Others are unaffected.
    Raw::gamer(&c.ws_url, "after").await;
    drop(held);
}

#[tokio::test]
async fn queued_payload_bytes_are_bounded_per_client_and_in_total() {
    const MIB: usize = 1024 * 1024;
    let per_client = (64 * MIB).to_string();
    let total = (100 * MIB).to_string();
    let extra =
        ["--no-store", "--max-queued-bytes-per-client", &per_client, "--max-queued-bytes", &total];
    let c = Coordinator::start(bin(), &extra);
    // No worker: every task stays queued, holding its 10 MiB.
    let data = "x".repeat(10 * MIB);
    let task = |id: usize| {
        format!(
            r#"{{"msg_type": "task_request", "task_id": "t{id}", "task_type": "echo", "data": "{data}"}}"#
        )
    };
    let mut accepted = [0usize; 2];
    let mut refusals = Vec::new();
    for (g, n) in [("g1", 0usize), ("g2", 1)] {
        let mut raw = Raw::gamer(&c.ws_url, g).await;
        for i in 0..8 {
            raw.send(&task(i)).await;
            let answer = raw.recv().await;
            match answer["msg_type"].as_str() {
                Some("task_accepted") => accepted[n] += 1,
                Some("error") => {
                    assert_eq!(answer["code"], "busy", "{answer}");
                    assert!(answer["retry_after_s"].as_f64().is_some());
                    refusals.push(answer["reason"].as_str().unwrap_or_default().to_owned());
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // 6 × 10 MiB fit in one client's 64 MiB; then the 100 MiB in total.
    assert_eq!(accepted, [6, 3], "{refusals:?}");
    let metrics = reqwest_text(&format!("{}/metrics", c.http())).await;
    let line = |needle: &str| metrics.lines().find(|l| l.contains(needle)).map(str::to_owned);
    assert!(line("limit=\"client_bytes\"").is_some(), "{metrics}");
    assert!(line("limit=\"queued_bytes\"").is_some(), "{metrics}");
    let held = metrics.lines().find(|l| l.starts_with("legacygpu_queued_payload_bytes")).unwrap();
    let held: f64 = held.split_whitespace().last().unwrap().parse().unwrap();
    assert_eq!(held as usize, 9 * (10 * MIB + 2));
}

/// Tasks a client had queued when the coordinator stopped still count
/// against its quota after the restart; another client's do not.
#[tokio::test]
async fn queued_tasks_recovered_at_a_restart_stay_charged_to_their_client() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let extra = ["--data-dir", dir, "--max-queued-tasks-per-client", "3"];
    let echo = |id: usize| {
        format!(
            r#"{{"msg_type": "task_request", "task_id": "t{id}", "task_type": "echo", "data": {id}}}"#
        )
    };
    let mut c = Coordinator::start(bin(), &extra);
    // No worker: the tasks stay queued.
    let mut raw = Raw::gamer(&c.ws_url, "g1").await;
    for i in 0..3 {
        raw.send(&echo(i)).await;
        assert_eq!(raw.recv().await["msg_type"], "task_accepted");
    }
    c.proc.kill9();
    let c = Coordinator::start(bin(), &extra);
    let mut raw = Raw::gamer(&c.ws_url, "g1").await;
    raw.send(&echo(3)).await;
    let answer = raw.until("error").await;
    assert_eq!(answer["code"], "busy", "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("gamer:g1 has 3 unfinished"), "{answer}");
    let mut other = Raw::gamer(&c.ws_url, "g2").await;
    other.send(&echo(4)).await;
    assert_eq!(other.recv().await["msg_type"], "task_accepted");
}

/// A caller with an API key is one client whatever gamer ids it uses: its
/// tasks under every id count against the key's quota.
#[tokio::test]
async fn an_api_key_is_charged_whatever_gamer_id_it_uses() {
    let extra = ["--api-keys", "spread-key-01:client", "--max-queued-tasks-per-client", "2"];
    let c = Coordinator::start(bin(), &extra);
    let echo = |id: usize| {
        format!(
            r#"{{"msg_type": "task_request", "task_id": "t{id}", "task_type": "echo", "data": {id}, "token": "spread-key-01"}}"#
        )
    };
    // No worker: the tasks stay queued. Each under a gamer id of its own.
    for (i, gamer) in ["a", "b"].into_iter().enumerate() {
        let mut raw = Raw::connect(&c.ws_url).await;
        raw.send(&format!(
            r#"{{"msg_type": "register_gamer", "gamer_id": "{gamer}", "token": "spread-key-01"}}"#
        ))
        .await;
        raw.until("registration_ack").await;
        raw.send(&echo(i)).await;
        assert_eq!(raw.recv().await["msg_type"], "task_accepted");
    }
    let mut third = Raw::connect(&c.ws_url).await;
    third
        .send(r#"{"msg_type": "register_gamer", "gamer_id": "c", "token": "spread-key-01"}"#)
        .await;
    third.until("registration_ack").await;
    third.send(&echo(3)).await;
    let answer = third.until("error").await;
    assert_eq!(answer["code"], "busy", "{answer}");
    assert!(answer["reason"].as_str().unwrap().starts_with("key:"), "{answer}");
}
