//! The HTTP API against the real binary: every route, success and failure,
//! the event stream, keys and roles, worker approval, Prometheus output.

use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use test_support::{Coordinator, Raw, eventually};

use crate::{FAST, bin};

struct Http {
    base: String,
    client: Client,
    key: Option<String>,
}

impl Http {
    fn new(c: &Coordinator) -> Http {
        tls::install_default_provider();
        Http { base: c.http().to_owned(), client: Client::new(), key: None }
    }

    fn with_key(c: &Coordinator, key: &str) -> Http {
        Http { key: Some(key.to_owned()), ..Http::new(c) }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        read(self.req(reqwest::Method::GET, path).send().await.unwrap()).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        read(self.req(reqwest::Method::POST, path).json(&body).send().await.unwrap()).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        read(self.req(reqwest::Method::PUT, path).json(&body).send().await.unwrap()).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        read(self.req(reqwest::Method::DELETE, path).send().await.unwrap()).await
    }
}

async fn read(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Answers one assignment with `result`, returning the assignment.
async fn answer(peer: &mut Raw, result: Value) -> Value {
    let a = peer.expect("task_assignment").await;
    peer.send_json(&json!({"msg_type": "task_result", "task_id": a["task_id"], "result": result}))
        .await;
    a
}

#[tokio::test]
async fn tasks_and_workers_through_rest() {
    let c = Coordinator::start(bin(), &[]);
    let api = Http::new(&c);
    let (s, health) = api.get("/cluster/health").await;
    assert_eq!((s, health["status"].as_str()), (StatusCode::OK, Some("CRITICAL")), "{health}");

    let mut peer =
        Raw::peer(&c.ws_url, "p1", r#"{"max_concurrent": 2, "task_types": ["x"]}"#).await;
    let (s, submitted) = api
        .post("/cluster/tasks", json!({"task_type": "x", "data": {"n": 7}, "priority": "HIGH"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{submitted}");
    let id = submitted["task_id"].as_str().unwrap().to_owned();
    let a = answer(&mut peer, json!({"n2": 49})).await;
    assert_eq!(a["task_data"], json!({"n": 7}));
    let (s, result) = api.get(&format!("/cluster/tasks/{id}/result?timeout=10")).await;
    assert_eq!(s, StatusCode::OK, "{result}");
    assert_eq!(
        (result["result"].clone(), result["worker_id"].clone()),
        (json!({"n2": 49}), json!("p1"))
    );
    let (_, status) = api.get(&format!("/cluster/tasks/{id}/status")).await;
    assert_eq!(
        (status["status"].as_str(), status["priority"].as_i64()),
        (Some("completed"), Some(2))
    );
    // The lifecycle's timestamps, and the attempt history.
    let (submitted, assigned, finished) =
        (&status["submitted_at_ms"], &status["assigned_at_ms"], &status["finished_at_ms"]);
    assert!(submitted.as_i64().is_some(), "{status}");
    assert!(
        submitted.as_i64() <= assigned.as_i64() && assigned.as_i64() <= finished.as_i64(),
        "{status}"
    );
    assert_eq!(status["attempts"][0]["end"], "completed", "{status}");
    assert_eq!(status["attempts"][0]["worker_id"], "p1");

    // Seed 2's submit path and field name (`payload`), waiting server-side.
    let (s, second) =
        api.post("/cluster/tasks/submit", json!({"task_type": "x", "payload": {"n": 1}})).await;
    assert_eq!((s, second["status"].as_str()), (StatusCode::OK, Some("submitted")), "{second}");
    let second = second["task_id"].as_str().unwrap().to_owned();
    let waiting = {
        let api = Http { base: api.base.clone(), client: api.client.clone(), key: None };
        let path = format!("/cluster/tasks/{second}/result?timeout=30");
        tokio::spawn(async move { api.get(&path).await })
    };
    answer(&mut peer, json!(2)).await;
    let (s, r) = waiting.await.unwrap();
    assert_eq!((s, r["result"].clone()), (StatusCode::OK, json!(2)));

    let (_, list) = api.get("/cluster/tasks?status=completed&task_type=x&limit=1").await;
    assert_eq!((list["total"].as_u64(), list["tasks"].as_array().unwrap().len()), (Some(2), 1));
    let (_, workers) = api.get("/cluster/workers?status_filter=healthy").await;
    assert_eq!(workers["workers"][0]["worker_id"], "p1", "{workers}");
    assert_eq!(workers["workers"][0]["tasks_completed"], 2);
    let (_, w) = api.get("/cluster/workers/p1").await;
    assert_eq!((w["slots"].as_u64(), w["task_types"].clone()), (Some(2), json!(["x"])));
    let (s, stats) = api.get("/cluster/workers/p1/stats").await;
    assert_eq!(s, StatusCode::OK);
    assert!(stats["average_run_time_ms"]["x"].as_f64().is_some(), "{stats}");
    let (_, health) = api.get("/cluster/health").await;
    assert_eq!(
        (health["status"].as_str(), health["total_workers"].as_u64()),
        (Some("HEALTHY"), Some(1))
    );
    assert_eq!(health["completed_tasks"], 2);
    let (_, m) = api.get("/cluster/metrics").await;
    assert_eq!(
        (m["success_rate"].as_f64(), m["tasks_per_minute"].as_u64()),
        (Some(1.0), Some(2)),
        "{m}"
    );
}

#[tokio::test]
async fn bad_requests_get_one_error_envelope() {
    let c = Coordinator::start(bin(), &["--max-frame-bytes", "4096"]);
    let api = Http::new(&c);
    let raw = |body: &'static str| {
        api.req(reqwest::Method::POST, "/cluster/tasks")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (s, e) = read(raw("{not json").await.unwrap()).await;
    assert_eq!((s, e["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")));
    assert!(e["detail"].is_string() && e["status_code"] == 400, "{e}");
    let (s, e) = api.post("/cluster/tasks", json!({"task_type": "x", "priority": [1]})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error_code"], "invalid_message");
    let (s, e) = api.post("/cluster/tasks", json!({"data": {}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = api.post("/cluster/tasks", json!({"task_type": "x", "timeout_s": -1})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // `data` is the task's input fields: an object.
    for data in [json!([1]), json!("text"), json!(7), json!(true)] {
        let (s, e) = api.post("/cluster/tasks", json!({"task_type": "x", "data": data})).await;
        assert_eq!(
            (s, e["error_code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"))
        );
        assert!(e["detail"].as_str().unwrap().contains("object"), "{e}");
    }
    let big = json!({"task_type": "x", "data": {"s": "a".repeat(8000)}});
    let (s, e) = api.post("/cluster/tasks", big).await;
    assert_eq!(
        (s, e["error_code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(vec![0u8; 8000]).file_name("big.png"));
    let resp =
        api.req(reqwest::Method::POST, "/cluster/tasks").multipart(form).send().await.unwrap();
    assert_eq!(read(resp).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    for path in
        ["/cluster/tasks/t-999/status", "/cluster/tasks/t-999/result", "/cluster/tasks/zzz/status"]
    {
        let (s, e) = api.get(path).await;
        assert_eq!(
            (s, e["error_code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
    }
    assert_eq!(api.delete("/cluster/tasks/t-999").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/cluster/workers/nobody").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/cluster/workers/nobody/stats").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/cluster/workers?status_filter=sleepy").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/cluster/tasks?status=lost").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/no/such/route").await.0, StatusCode::NOT_FOUND);
    let (s, e) = api.put("/cluster/config/balancing", json!({"strategy": "FASTEST"})).await;
    assert_eq!((s, e["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_strategy")));
    assert_eq!(
        api.put("/cluster/config/balancing", json!({"nope": 1})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (s, e) = api.post("/cluster/workers/register", json!({"worker_id": ""})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    // A task that fails: the result route says why, in the envelope.
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    let (_, t) = api.post("/cluster/tasks", json!({"task_type": "x"})).await;
    let id = t["task_id"].as_str().unwrap().to_owned();
    let a = peer.expect("task_assignment").await;
    peer.send_json(&json!({"msg_type": "task_result", "task_id": a["task_id"], "error": {"code": "invalid_input", "message": "bad scene"}}))
        .await;
    let (s, e) = api.get(&format!("/cluster/tasks/{id}/result?timeout=10")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(
        (e["error_code"].as_str(), e["task_id"].as_str()),
        (Some("invalid_input"), Some(id.as_str()))
    );
    assert!(e["detail"].as_str().unwrap().contains("bad scene"), "{e}");
}

#[tokio::test]
async fn cancel_idempotency_upload_config_and_shutdown() {
    let mut c = Coordinator::start(bin(), &[]);
    let api = Http::new(&c);
    // Nobody can run `x`: it waits, and says why.
    let (s, t) = api.post("/cluster/tasks", json!({"task_type": "x"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(t["waiting_reason"].as_str().unwrap().contains("no capable peer"), "{t}");
    let id = t["task_id"].as_str().unwrap().to_owned();
    let (s, pending) = api.get(&format!("/cluster/tasks/{id}/result")).await;
    assert_eq!((s, pending["status"].as_str()), (StatusCode::ACCEPTED, Some("queued")));
    assert_eq!(api.delete(&format!("/cluster/tasks/{id}")).await.0, StatusCode::ACCEPTED);
    let (s, e) = api.delete(&format!("/cluster/tasks/{id}")).await;
    assert_eq!((s, e["error_code"].as_str()), (StatusCode::CONFLICT, Some("task_finished")));
    // A finished task's outcome, asked for without waiting, is its outcome
    // every time (never 202 "not finished yet"), however the core is timed.
    let path = format!("/cluster/tasks/{id}/result");
    let asks = (0..40).map(|_| api.get(&path));
    for (s, e) in futures_util::future::join_all(asks).await {
        assert_eq!(
            (s, e["error_code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("cancelled")),
            "{e}"
        );
    }

    // Requirements pass through: this one waits for a GPU with 4 GiB.
    let body = json!({"task_type": "x", "requirements": {"min_vram_mb": 4096}, "timeout_s": 5});
    let (s, t) = api.post("/cluster/tasks", body).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert!(t["waiting_reason"].as_str().unwrap().contains("at least 4096 MiB"), "{t}");

    // The same Idempotency-Key returns the original task.
    let submit = || {
        api.req(reqwest::Method::POST, "/cluster/tasks")
            .header("idempotency-key", "order-17")
            .json(&json!({"task_type": "x"}))
            .send()
    };
    let (s1, first) = read(submit().await.unwrap()).await;
    let (s2, again) = read(submit().await.unwrap()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(
        (first["task_id"].clone(), again["existing"].clone()),
        (again["task_id"].clone(), json!(true))
    );

    // Multipart upload: the file becomes the task's base64 `image`.
    let peer = Raw::peer(&c.ws_url, "p", r#"{"task_types": ["inference"]}"#).await;
    let form = reqwest::multipart::Form::new()
        .text("model", "colours")
        .text("top_k", "2")
        .part("file", reqwest::multipart::Part::bytes(vec![1u8, 2, 3]).file_name("x.png"));
    let resp =
        api.req(reqwest::Method::POST, "/cluster/tasks").multipart(form).send().await.unwrap();
    let (s, t) = read(resp).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    // The peer declares no models, so the task waits for one that serves `colours`.
    assert!(t["waiting_reason"].as_str().unwrap().contains("colours"), "{t}");
    let (_, view) =
        api.get(&format!("/cluster/tasks/{}/status", t["task_id"].as_str().unwrap())).await;
    assert_eq!(view["task_type"], "inference");
    let form = reqwest::multipart::Form::new().text("model", "colours");
    let resp =
        api.req(reqwest::Method::POST, "/cluster/tasks").multipart(form).send().await.unwrap();
    assert_eq!(read(resp).await.0, StatusCode::BAD_REQUEST);
    peer.close().await;

    // The strategy really switches.
    let (s, _) = api.put("/cluster/config/balancing", json!({"strategy": "least_loaded"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, config) = api.get("/cluster/config").await;
    assert_eq!(config["balancing_strategy"], "LEAST_LOADED");
    assert_eq!(config["auth"], "protected_mode");

    // The docs are served from the binary.
    let (s, doc) = api.get("/openapi.json").await;
    assert_eq!(
        (s, doc["openapi"].as_str().map(|v| v.starts_with('3'))),
        (StatusCode::OK, Some(true))
    );
    let docs = api.req(reqwest::Method::GET, "/docs/").send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"), "the docs page");

    let (s, _) = api.post("/cluster/shutdown", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(c.proc.wait(), Some(0));
}

#[tokio::test]
async fn api_keys_decide_who_may_do_what() {
    let keys = "admin-key-0001:admin,client-key-0001:client,viewer-key-0001:read-only";
    let c = Coordinator::start_env(bin(), &[], &[("API_KEYS", keys)]);
    let anonymous = Http::new(&c);
    let (s, e) = anonymous.get("/cluster/health").await;
    assert_eq!((s, e["error_code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    assert_eq!(
        Http::with_key(&c, "wrong-key-00").get("/cluster/health").await.0,
        StatusCode::UNAUTHORIZED
    );
    let viewer = Http::with_key(&c, "viewer-key-0001");
    assert_eq!(viewer.get("/cluster/health").await.0, StatusCode::OK);
    let (s, e) = viewer.post("/cluster/tasks", json!({"task_type": "x"})).await;
    assert_eq!((s, e["error_code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let client = Http::with_key(&c, "client-key-0001");
    assert_eq!(
        client.post("/cluster/tasks", json!({"task_type": "x"})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(client.post("/cluster/shutdown", json!({})).await.0, StatusCode::FORBIDDEN);
    // A keys file works too, and a bad one stops the start with a clear error.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# operators\nfile-admin-0001:admin\n").unwrap();
    let from_file = Coordinator::start(bin(), &["--api-keys-file", file.to_str().unwrap()]);
    assert_eq!(
        Http::with_key(&from_file, "file-admin-0001").get("/cluster/config").await.0,
        StatusCode::OK
    );
    assert_eq!(Http::new(&from_file).get("/cluster/config").await.0, StatusCode::UNAUTHORIZED);
    std::fs::write(&file, "file-admin-0001:root\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["cluster", "start", "--bind", "127.0.0.1:0", "--no-store", "--api-keys-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role `root`"));
    // X-API-Key works as well as a bearer token.
    let resp = anonymous
        .req(reqwest::Method::GET, "/cluster/config")
        .header("x-api-key", "admin-key-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_approved_worker_joins_with_its_own_credential() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    let args = ["--token", "cluster-secret", "--data-dir", dir.as_str()];
    let mut c = Coordinator::start(bin(), &args);
    // Without API keys the cluster token is the admin key.
    let admin = Http::with_key(&c, "cluster-secret");
    let (s, cred) = admin.post("/cluster/workers/register", json!({"worker_id": "w9"})).await;
    assert_eq!(s, StatusCode::CREATED, "{cred}");
    let token = cred["token"].as_str().unwrap().to_owned();
    let register = |peer: &str| json!({"msg_type": "register_peer", "peer_id": peer, "capabilities": {}, "token": token});
    let mut w9 = Raw::connect(&c.ws_url).await;
    w9.send_json(&register("w9")).await;
    assert_eq!(w9.expect("registration_ack").await["status"], "registered");
    // The credential is for w9 only.
    let mut other = Raw::connect(&c.ws_url).await;
    other.send_json(&register("w8")).await;
    assert_eq!(other.expect("error").await["code"], "unauthorized");
    assert_eq!(
        Http::new(&c).post("/cluster/workers/register", json!({"worker_id": "x"})).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The approval is durable: it still admits w9 after a kill -9.
    c.proc.kill9();
    let c = Coordinator::start(bin(), &args);
    let mut again = Raw::connect(&c.ws_url).await;
    again.send_json(&register("w9")).await;
    assert_eq!(again.expect("registration_ack").await["status"], "registered");
}

#[tokio::test]
async fn the_event_stream_shows_a_task_go_through_in_order() {
    let c = Coordinator::start(bin(), &["--stats-interval", "0.1"]);
    let events_url = c.http().replace("http://", "ws://") + "/ws/cluster/events";
    let refused =
        Raw::connect_with(&format!("{events_url}?kinds=bogus"), None).await.err().unwrap();
    assert_eq!(refused.status, 400, "{}", refused.body);

    let mut all = Raw::connect(&events_url).await;
    let mut stats = Raw::connect(&format!("{events_url}?kinds=cluster_stats")).await;
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    let api = Http::new(&c);
    let (_, t) = api.post("/cluster/tasks", json!({"task_type": "x"})).await;
    let id = t["task_id"].as_str().unwrap().to_owned();
    let mut one_task = Raw::connect(&format!("{events_url}?task_id={id}")).await;
    answer(&mut peer, json!("done")).await;

    // Stats events keep coming: each loop has a deadline of its own.
    let deadline = tokio::time::Instant::now() + test_support::WAIT;
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("task_completed") {
        assert!(tokio::time::Instant::now() < deadline, "no task_completed; saw {seen:?}");
        let e = all.recv().await;
        let kind = e["event"].as_str().unwrap().to_owned();
        if kind != "cluster_stats" {
            assert!(e["ts_ms"].as_u64().is_some(), "{e}");
            seen.push(kind);
        }
    }
    assert_eq!(seen, ["worker_joined", "task_queued", "task_assigned", "task_completed"]);
    // The filtered stream shows this task's events only, ending with its
    // completion (its assignment may come after the subscription: the
    // first assignment after a start waits for the id reservation to commit).
    loop {
        let only = one_task.recv().await;
        assert_eq!(only["task_id"].as_str(), Some(id.as_str()), "{only}");
        if only["event"] == "task_completed" {
            break;
        }
        assert_eq!(only["event"], "task_assigned", "{only}");
    }
    let s = stats.recv().await;
    assert_eq!(s["event"], "cluster_stats");
    assert!(s["workers"].as_u64().is_some(), "{s}");
    peer.close().await;
    let deadline = tokio::time::Instant::now() + test_support::WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no worker_left");
        let e = all.recv().await;
        if e["event"] == "worker_left" {
            assert_eq!(e["worker_id"], "p");
            break;
        }
    }
}

#[tokio::test]
async fn a_drained_worker_leaves_once_idle_instead_of_being_declared_dead() {
    // A heartbeat timeout far past every wait here: the worker may only go
    // by leaving.
    let c = Coordinator::start(bin(), &["--heartbeat-timeout", "600"]);
    let events_url = c.http().replace("http://", "ws://") + "/ws/cluster/events";
    let mut events = Raw::connect(&format!("{events_url}?kinds=worker_joined,worker_left")).await;
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    assert_eq!(events.recv().await["event"], "worker_joined");
    let api = Http::new(&c);
    let (status, body) = api.post("/cluster/workers/p/drain", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(u16::from(peer.closed().await.expect("a close frame").code), 4004);
    let left = events.recv().await;
    assert_eq!(
        (left["event"].as_str(), left["worker_id"].as_str()),
        (Some("worker_left"), Some("p"))
    );
    eventually("the drained worker gone from the list", || async {
        let (_, workers) = api.get("/cluster/workers").await;
        (workers["workers"] == json!([])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_our_names() {
    let c = Coordinator::start(bin(), &[]);
    let mut peer = Raw::peer(&c.ws_url, "p", "{}").await;
    let api = Http::new(&c);
    api.post("/cluster/tasks", json!({"task_type": "x"})).await;
    answer(&mut peer, json!(1)).await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer.send("{broken").await;
    gamer.expect("error").await;
    let wanted = [
        "legacygpu_tasks_submitted_total{task_type=\"x\"} 1",
        "legacygpu_tasks_completed_total{task_type=\"x\"} 1",
        "legacygpu_task_run_seconds_bucket",
        "legacygpu_task_queue_wait_seconds_bucket",
        "legacygpu_peers_connected 1",
        "legacygpu_peer_busy_slots{peer=\"p\"} 0",
        "legacygpu_queue_depth 0",
        "legacygpu_store_commit_seconds_bucket",
    ];
    // Gauges come from a snapshot published a few milliseconds after the fact.
    let text = eventually("every metric in /metrics", || async {
        let resp = api.req(reqwest::Method::GET, "/metrics").send().await.unwrap();
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = resp.text().await.unwrap();
        wanted.iter().all(|name| text.contains(name)).then_some(text)
    })
    .await;
    // Checked by Prometheus's own linter where it is installed (CI installs it).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "promtool check metrics:\n{said}");
        }
        Err(_) if std::env::var("LEGACYGPU_REQUIRE_PROMTOOL").is_ok() => {
            panic!("promtool is required")
        }
        Err(_) => eprintln!("promtool not installed: skipping its check"),
    }
}

#[tokio::test]
async fn grafana_dashboard_queries_only_exported_metrics() {
    // A scenario that moves every series the dashboard charts: a peer that
    // never heartbeats dies holding a task (retry, missed heartbeats), a task
    // fails, a frame is rejected, tasks complete.
    let c = Coordinator::start(bin(), FAST);
    let api = Http::new(&c);
    let mut silent = Raw::peer(&c.ws_url, "silent", "{}").await;
    let (_, t) = api.post("/cluster/tasks", json!({"task_type": "echo", "data": {"n": 1}})).await;
    silent.expect("task_assignment").await;
    let _worker = test_support::worker(bin(), &c.ws_url, "w", &[]);
    let id = t["task_id"].as_str().unwrap();
    let (s, _) = api.get(&format!("/cluster/tasks/{id}/result?timeout=30")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, t) =
        api.post("/cluster/tasks", json!({"task_type": "physics", "data": {"bodies": "no"}})).await;
    let id = t["task_id"].as_str().unwrap();
    let (s, _) = api.get(&format!("/cluster/tasks/{id}/result?timeout=30")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer.send("{broken").await;
    gamer.expect("error").await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../grafana/dashboards/cluster_overview.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("legacygpu_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    let text = eventually("the failure metrics", || async {
        let (_, text) = api.get("/metrics").await;
        let text = text.as_str().unwrap().to_owned();
        [
            "legacygpu_heartbeats_missed_total",
            "legacygpu_tasks_failed_total",
            "legacygpu_tasks_completed_total",
        ]
        .iter()
        .all(|n| text.contains(n))
        .then_some(text)
    })
    .await;
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in &names {
        assert!(
            exported.contains(name.as_str()),
            "the dashboard queries `{name}`, which is not exported:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_too_slow_to_read_is_dropped_with_a_notice() {
    let c = Coordinator::start(bin(), &["--no-store"]);
    let events_url = c.http().replace("http://", "ws://") + "/ws/cluster/events";
    // Subscribes, then reads nothing while tens of thousands of events pass.
    let mut slow = Raw::connect(&events_url).await;
    let out = std::process::Command::new(bin())
        .args([
            "bench",
            "--coordinator",
            &c.ws_url,
            "--tasks",
            "20000",
            "--duration",
            "120",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["completed"], 20000, "the scheduler was not slowed down: {report}");
    // What it finally reads ends with the notice and a close.
    let mut read = 0u64;
    loop {
        let e = slow.recv().await;
        read += 1;
        if e["event"] == "dropped" {
            assert!(e["reason"].as_str().unwrap().contains("too slow"), "{e}");
            break;
        }
        assert!(read < 100_000, "no `dropped` notice");
    }
    let close = slow.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4008);
    // The coordinator itself is fine.
    assert_eq!(Http::new(&c).get("/cluster/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_worker_with_late_heartbeats_makes_the_cluster_degraded() {
    // Late after two intervals (0.4 s), dead only at the timeout (30 s).
    let c =
        Coordinator::start(bin(), &["--heartbeat-interval", "0.2", "--heartbeat-timeout", "30"]);
    let api = Http::new(&c);
    let _silent = Raw::peer(&c.ws_url, "silent", "{}").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, health) = api.get("/cluster/health").await;
        if health["status"] == "DEGRADED" {
            assert_eq!(
                (health["total_workers"].as_u64(), health["unhealthy_workers"].as_u64()),
                (Some(1), Some(1))
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never degraded: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, workers) = api.get("/cluster/workers?status_filter=unhealthy").await;
    assert_eq!(workers["workers"][0]["worker_id"], "silent");
    eventually("the healthy-workers gauge at 0", || async {
        let (_, t) = api.get("/metrics").await;
        let t = t.as_str().unwrap().to_owned();
        (t.contains("legacygpu_peers_healthy 0") && t.contains("legacygpu_peers_connected 1"))
            .then_some(())
    })
    .await;
}
