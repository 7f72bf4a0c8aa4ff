//! Verification against the real binary: peers that lie (test-support's
//! `liar`, raw protocol peers), a gamer that checks every result it gets
//! against the honest answer, quarantine, a `kill -9` restart, the
//! operator's clear, and real workers agreeing on physics bit for bit.

use std::collections::{BTreeMap, BTreeSet};

use client::api::Api;
use serde_json::{Value, json};
use test_support::liar::{self, Lies, Peer, honest};
use test_support::{Coordinator, Raw, eventually, worker};

use crate::bin;

/// A raw peer running every type the tests use, declaring an owner of its own.
async fn peer(c: &Coordinator, id: &str, lies: Lies) -> Peer {
    let caps = json!({"task_types": ["physics", "gpu", "inference"], "max_concurrent": 8,
                      "gpus": ["test gpu"], "models": ["tiny"], "owner": format!("owner-of-{id}")});
    liar::spawn(&c.ws_url, id, caps, lies).await
}

/// The data of task `i`: physics scenes, gpu matmuls and images in turn.
fn task(i: u64) -> (&'static str, Value) {
    match i % 3 {
        0 => (
            "physics",
            json!({"steps": 60 + i, "bodies": [{"id": i, "shape": {"type": "sphere", "radius": 0.5}}]}),
        ),
        1 => {
            let d = |s: u64| 8 + (i * s) % 17;
            ("gpu", json!({"op": "matmul", "m": d(3), "k": d(5), "n": d(7), "seed": i}))
        }
        _ => ("inference", json!({"model": "tiny", "image": format!("image-{i}")})),
    }
}

fn request(i: u64, verify: Option<Value>) -> Value {
    let (task_type, data) = task(i);
    let mut req = json!({"msg_type": "task_request", "task_id": format!("t{i}"),
                         "task_type": task_type, "data": data});
    if let Some(v) = verify {
        req["verify"] = v;
    }
    req
}

/// Submits `n` tasks, `window` at a time, and returns every outcome by the
/// gamer's task id.
async fn run_tasks(
    gamer: &mut Raw,
    n: u64,
    window: u64,
    verify: Option<Value>,
) -> BTreeMap<u64, Value> {
    let (mut sent, mut out) = (0, BTreeMap::new());
    while (out.len() as u64) < n {
        while sent < n && sent - out.len() as u64 <= window {
            gamer.send_json(&request(sent, verify.clone())).await;
            sent += 1;
        }
        let msg = gamer.recv().await;
        match msg["msg_type"].as_str() {
            Some("task_result" | "task_error") => {
                let id: u64 = msg["task_id"].as_str().unwrap()[1..].parse().unwrap();
                assert!(out.insert(id, msg).is_none(), "two outcomes for t{id}");
            }
            Some("task_accepted") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_two_no_wrong_result_reaches_the_gamer_in_a_thousand_tasks() {
    // The liar stays in play (no quarantine) so that it lies all along.
    let c = Coordinator::start(
        bin(),
        &["--strategy", "ROUND_ROBIN", "--quarantine-after", "1000", "--sync", "normal"],
    );
    let liar = peer(&c, "liar", Lies::at(0.3, 7)).await;
    let mut _honest = Vec::new();
    for i in 0..3 {
        _honest.push(peer(&c, &format!("h{i}"), Lies::never()).await);
    }
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let outcomes = run_tasks(&mut gamer, 1000, 64, Some(json!({"replicas": 2, "quorum": 2}))).await;
    for (i, msg) in &outcomes {
        let (task_type, data) = task(*i);
        assert_eq!(msg["msg_type"], "task_result", "t{i}: {msg}");
        let want = honest(task_type, &data);
        assert!(same(&msg["result"], &want), "t{i} ({task_type}) got a wrong result: {msg}");
    }
    let lies = liar.tally.lied.load(std::sync::atomic::Ordering::Relaxed);
    assert!(lies > 100, "the liar lied only {lies} times");
    // Every lie was outvoted or failed its check, and counted against it.
    let api = Api::new(c.http(), None);
    let w = api.get("/cluster/workers/liar").await.unwrap();
    assert!(w["reputation"]["invalid"].as_u64().unwrap() >= lies * 9 / 10, "{w}");
    let metrics =
        reqwest::get(format!("{}/metrics", c.http())).await.unwrap().text().await.unwrap();
    for name in ["legacygpu_verify_tasks_total", "legacygpu_verify_disagreements_total"] {
        assert!(metrics.contains(name), "no {name} in /metrics");
    }
    // The overhead, exactly: one extra replica for each replicated task
    // (physics and inference, two in three; matrix products are checked
    // alone), and one more for each lie (a third replica to break the tie,
    // or a rerun after a failed check).
    let replicated = (0..1000).filter(|i| i % 3 != 1).count() as u64;
    let want = (replicated + lies) as f64 / 1000.0;
    // (The gauge is published after the core's next step: it may lag.)
    eventually("an overhead of (replicated + lies) / tasks", || async {
        let m = reqwest::get(format!("{}/metrics", c.http())).await.ok()?.text().await.ok()?;
        let ratio = metric(&m, "legacygpu_replication_overhead_ratio");
        ((ratio - want).abs() < 1e-9).then_some(ratio)
    })
    .await;
}

/// Whether two answers are the same, numbers to 10⁻⁶ (serde_json's float
/// parsing may differ from its printing in the last bit; a lie is off by
/// 0.5 at least).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// A metric's value in Prometheus text (the first line naming it).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_catches_a_liar_that_is_right_on_every_replicated_task() {
    // The liar's card is broken for matrix products only, and matrix
    // products are not replicated here: only canaries can catch it.
    let c = Coordinator::start(bin(), &["--strategy", "ROUND_ROBIN", "--canary-rate", "0.5"]);
    let lies = Lies { rate: 1.0, only_types: vec!["gpu".into()], seed: 3 };
    let _liar = peer(&c, "liar", lies).await;
    let _honest = (peer(&c, "h1", Lies::never()).await, peer(&c, "h2", Lies::never()).await);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let api = Api::new(c.http(), None);
    let mut round = 0;
    let mut seen = std::collections::VecDeque::new();
    loop {
        let w = api.get("/cluster/workers/liar").await.unwrap();
        if w["status"] == "quarantined" {
            let r = &w["reputation"];
            assert_eq!(
                (r["invalid"].as_u64(), r["canaries_failed"].as_u64()),
                (Some(3), Some(3)),
                "{w}"
            );
            break;
        }
        round += 1;
        assert!(round < 100, "the liar was never caught: {w}");
        // Physics, verified (the liar is right on it)…
        let i = 9 * round;
        gamer.send_json(&request(i, Some(json!({"replicas": 2})))).await;
        next_or_dump(&mut gamer, "task_accepted", &mut seen, &c).await;
        let out = next_or_dump(&mut gamer, "task_result", &mut seen, &c).await;
        assert_eq!(out["result"], honest(task(i).0, &task(i).1), "verified physics");
        // …then three plain matmuls at once: one for each peer, so that the
        // rotation cannot keep the liar on physics alone.
        let matmuls = [i + 1, i + 4, i + 7];
        for j in matmuls {
            gamer.send_json(&request(j, None)).await;
        }
        let (mut accepted, mut results) = (BTreeSet::new(), 0);
        while results < matmuls.len() {
            let msg = next_or_dump(&mut gamer, "", &mut seen, &c).await;
            let id = msg["task_id"].as_str().unwrap_or_default().to_owned();
            match msg["msg_type"].as_str() {
                Some("task_accepted") => _ = accepted.insert(id),
                Some("task_result") => {
                    assert!(accepted.contains(&id), "a result before its task_accepted: {msg}");
                    results += 1;
                }
                _ => panic!("unexpected: {msg}"),
            }
        }
    }
    for h in ["h1", "h2"] {
        let w = api.get(&format!("/cluster/workers/{h}")).await.unwrap();
        assert_eq!(
            (w["status"].as_str(), w["reputation"]["canaries_failed"].as_u64().unwrap_or(0)),
            (Some("healthy"), 0),
            "{w}"
        );
    }
    let metrics =
        reqwest::get(format!("{}/metrics", c.http())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"legacygpu_canaries_total{result="failed"} 3"#), "{metrics}");
    assert_eq!(metric(&metrics, "legacygpu_workers_quarantined"), 1.0);
}

/// The next message of `msg_type` (of any type for ""), the messages
/// before it kept in `seen`;
/// when none comes in time, a panic showing what the gamer was sent and
/// what the coordinator holds, so that a stuck task explains itself.
async fn next_or_dump(
    gamer: &mut Raw,
    msg_type: &str,
    seen: &mut std::collections::VecDeque<Value>,
    c: &Coordinator,
) -> Value {
    // Inside the wait's own deadline, so that this one fires first.
    let within = test_support::WAIT - std::time::Duration::from_secs(5);
    let wait = async {
        loop {
            let v = gamer.recv().await;
            seen.push_back(v.clone());
            if seen.len() > 12 {
                seen.pop_front();
            }
            if msg_type.is_empty() || v["msg_type"] == msg_type {
                return v;
            }
        }
    };
    if let Ok(v) = tokio::time::timeout(within, wait).await {
        return v;
    }
    let api = Api::new(c.http(), None);
    let tasks = api.get("/cluster/tasks?limit=4").await.unwrap();
    let log = c.proc.log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    panic!("no {msg_type} in time.\nthe gamer got: {seen:#?}\ntasks: {tasks:#}\nlog: {tail:#?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_ends_quarantined_stays_so_across_a_kill_9_and_an_operator_clears_it() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_string_lossy().into_owned();
    let (bind, http) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let args = [
        "--bind",
        &bind,
        "--http",
        &http,
        "--data-dir",
        &dir,
        "--verify",
        "2/2",
        "--strategy",
        "ROUND_ROBIN",
    ];
    let mut c = Coordinator::start(bin(), &args);
    let liar = peer(&c, "liar", Lies::at(1.0, 1)).await;
    let fleet = (peer(&c, "h1", Lies::never()).await, peer(&c, "h2", Lies::never()).await);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let api = Api::new(c.http(), None);
    let mut i = 0;
    while api.get("/cluster/workers/liar").await.unwrap()["status"] != "quarantined" {
        assert!(i < 60, "the liar was never quarantined");
        gamer.send_json(&request(3 * i, None)).await; // Verified by the cluster's default.
        gamer.until("task_accepted").await;
        let out = gamer.until("task_result").await;
        assert_eq!(out["result"], honest(task(3 * i).0, &task(3 * i).1));
        i += 1;
    }
    // The operator sees it, in the API and the CLI.
    let listed = api.get("/cluster/workers?status_filter=quarantined").await.unwrap();
    assert_eq!(listed["total"], 1, "{listed}");
    let table = cli(&["cluster", "workers", "--api-url", c.http()]);
    let row = table.lines().find(|l| l.starts_with("liar")).unwrap_or_default().to_owned();
    assert!(row.contains("quarantined") && row.contains("0/3"), "{table}");
    // A verified task shows its replicas and verdict.
    let last = api.get("/cluster/tasks/t-1/status").await.unwrap();
    assert_eq!(last["verification"]["policy"], "2/2", "{last}");
    assert!(last["verification"]["replicas"].as_array().unwrap().len() >= 2, "{last}");

    // The coordinator dies; what it knew of the liar does not.
    c.proc.kill9();
    drop((liar, fleet));
    let c = Coordinator::start(bin(), &args);
    let api = Api::new(c.http(), None);
    // Not connected, it is still listed as quarantined: in the API, the
    // CLI and the dashboard, with the button that clears it.
    let listed = eventually("the liar listed while away", || async {
        let l = api.get("/cluster/workers").await.ok()?;
        (l["quarantined_away"][0]["worker_id"] == "liar").then_some(l)
    })
    .await;
    assert_eq!(listed["total"], 0, "{listed}");
    assert_eq!(listed["quarantined_away"][0]["reputation"]["invalid"], 3, "{listed}");
    let healthy = api.get("/cluster/workers?status_filter=healthy").await.unwrap();
    assert_eq!(healthy["quarantined_away"], json!([]), "{healthy}");
    let table = cli(&["cluster", "workers", "--api-url", c.http()]);
    assert!(table.contains("quarantined, not connected") && table.contains("liar"), "{table}");
    let page = workers_page(c.http()).await;
    let row =
        page.split("<tr").find(|r| r.contains(r#"data-away-worker="liar""#)).unwrap_or_default();
    assert!(row.contains("3 ✗") && row.contains("/ui/workers/liar/clear"), "{row}");
    let _liar = peer(&c, "liar", Lies::at(1.0, 2)).await;
    let w = api.get("/cluster/workers/liar").await.unwrap();
    assert_eq!(w["status"], "quarantined", "after a restart: {w}");
    let listed = api.get("/cluster/workers").await.unwrap();
    assert_eq!(listed["quarantined_away"], json!([]), "connected again: {listed}");
    // The dashboard's workers page (served to loopback without a key here)
    // shows it, with its record and the button that clears it.
    let page = workers_page(c.http()).await;
    let row = page.split("<tr").find(|r| r.contains(r#"data-worker="liar""#)).unwrap_or_default();
    assert!(row.contains("quarantined") && row.contains("3 ✗"), "{row}");
    assert!(row.contains("/ui/workers/liar/clear"), "{row}");

    let out = cli(&["worker", "clear", "liar", "--api-url", c.http()]);
    assert!(out.contains("no longer quarantined"), "{out}");
    let w = eventually("the liar cleared", || async {
        let w = api.get("/cluster/workers/liar").await.ok()?;
        (w["status"] == "healthy").then_some(w)
    })
    .await;
    assert_eq!(
        (w["reputation"]["strikes"].as_u64(), w["reputation"]["consecutive_valid"].as_u64()),
        (Some(0), Some(0)),
        "{w}"
    );
    assert!(!workers_page(c.http()).await.contains("/ui/workers/liar/clear"), "cleared");
    let again = cli(&["worker", "clear", "liar", "--api-url", c.http()]);
    assert!(again.contains("was not quarantined"), "{again}");
    // The answer tells the worker's status as its row would: paused here.
    cli(&["worker", "pause", "liar", "--api-url", c.http()]);
    let paused = cli(&["worker", "clear", "liar", "--api-url", c.http(), "--json"]);
    let paused: serde_json::Value = serde_json::from_str(&paused).unwrap();
    assert_eq!(
        (&paused["cleared"], &paused["status"]),
        (&json!(false), &json!("paused")),
        "{paused}"
    );
    cli(&["worker", "resume", "liar", "--api-url", c.http()]);
    let unknown = std::process::Command::new(bin())
        .args(["worker", "clear", "nobody", "--api-url", c.http()])
        .output()
        .unwrap();
    assert!(
        !unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("nobody")
    );
}

/// The dashboard's `/workers` page as served (HTML).
async fn workers_page(http: &str) -> String {
    let resp = reqwest::get(format!("{http}/workers")).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.text().await.unwrap()
}

/// Runs the CLI and returns its stdout (it must succeed).
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(bin()).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_workers_agree_on_physics_bit_for_bit_under_two_of_two() {
    let c = Coordinator::start(bin(), &["--verify", "2/2"]);
    let _a = worker(bin(), &c.ws_url, "a", &["--no-gpu", "--slots", "2"]);
    let _b = worker(bin(), &c.ws_url, "b", &["--no-gpu", "--slots", "2"]);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let scene = exec_physics::example_scene(20, 60);
    for i in 0..4 {
        let req = json!({"msg_type": "task_request", "task_id": format!("s{i}"), "task_type": "physics", "data": scene});
        gamer.send_json(&req).await;
    }
    let mut ids = Vec::new();
    for _ in 0..4 {
        let r = gamer.until("task_result").await;
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    let api = Api::new(c.http(), None);
    for id in ids {
        let t = api.get(&format!("/cluster/tasks/{id}/status")).await.unwrap();
        let v = &t["verification"];
        assert_eq!(v["status"], "agreed", "{t}");
        let workers: BTreeSet<_> =
            v["replicas"].as_array().unwrap().iter().map(|r| r["worker_id"].to_string()).collect();
        assert_eq!(workers.len(), 2, "two distinct workers: {t}");
        let sums: BTreeSet<_> = v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["result"]["checksum"].to_string())
            .collect();
        assert_eq!(sums.len(), 1, "the same checksum: {t}");
        // The dashboard's task page shows the same verdict and replicas.
        let page = reqwest::get(format!("{}/tasks/{id}", c.http())).await.unwrap();
        let page = page.text().await.unwrap();
        let verdict = r#"<p id="verification">policy <code>2/2</code> · <span class="status">agreed</span></p>"#;
        assert!(page.contains(verdict), "{page}");
        assert_eq!(page.matches(r#"class="verdict valid""#).count(), 2, "{page}");
        for w in ["<td>a</td>", "<td>b</td>"] {
            assert!(page.contains(w), "{w}: {page}");
        }
    }
}
