//! Streamed generation through the cluster, against the real binary: a
//! worker with the tiny random-weight GGUF (written by
//! scripts/make_tiny_gguf.py; SKIP without Python's gguf unless
//! `LEGACYGPU_REQUIRE_PYTHON_GGUF=1`), a gamer's `task_progress`, the
//! REST event stream, the OpenAI API's stream, the CLI — and the failure
//! rule with real `kill -9`: a worker lost before its first token → the
//! task runs again elsewhere; lost mid-stream → `stream_interrupted` for
//! the gamer and an error event for the OpenAI stream, no text repeated;
//! and a worker holding an ONNX and a GGUF model serves each to its own
//! task type only.

use std::path::Path;

use exec_llm::fixture;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{Coordinator, Raw, WAIT, eventually, worker};

use crate::bin;

/// A models directory holding the tiny model as `tiny` (trained context
/// `context`), or `None` (SKIP).
pub(crate) fn models(test: &str, context: u32) -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    if !fixture::python_available() {
        // Says SKIP, or fails where Python's gguf is required.
        return fixture::tiny_or_skip(dir.path(), "tiny", test).map(|_| dir);
    }
    let spec = fixture::Spec { context, ..fixture::Spec::default() };
    fixture::write(&dir.path().join("tiny.gguf"), &spec).unwrap();
    Some(dir)
}

/// A worker serving the models of `dir` on its CPU.
pub(crate) fn llm_worker(
    c: &Coordinator,
    id: &str,
    dir: &Path,
    extra: &[&str],
) -> test_support::Proc {
    let dir = dir.to_string_lossy().into_owned();
    let mut args = vec!["--models-dir", &dir, "--no-gpu", "--gpu-layers", "0"];
    args.extend_from_slice(extra);
    worker(bin(), &c.ws_url, id, &args)
}

fn http() -> reqwest::Client {
    tls::install_default_provider();
    reqwest::Client::new()
}

/// Waits until `GET /v1/models` lists `tiny` (a worker serving it joined).
pub(crate) async fn await_model(c: &Coordinator, workers: u64, key: Option<&str>) {
    let client = http();
    let url = format!("{}/v1/models", c.http());
    eventually("the model to be served", || async {
        let mut req = client.get(&url);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let list: Value = req.send().await.ok()?.json().await.ok()?;
        let tiny = list["data"].as_array()?.iter().find(|m| m["id"] == "tiny")?.clone();
        (tiny["workers"] == workers).then_some(())
    })
    .await;
}

/// Server-sent events read from a response as they come.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    fn new(resp: reqwest::Response) -> Events {
        Events { resp, buf: String::new() }
    }

    /// The next event, `(event name, data)`; `None` at the end of the body.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // A keep-alive comment.
                }
                return Some((name, data.join("\n")));
            }
            let chunk =
                tokio::time::timeout(WAIT, self.resp.chunk()).await.expect("an event in time");
            match chunk.expect("the stream stays readable") {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }
}

/// A gamer's streamed task: its deltas (attempt, seq, text) and its outcome.
async fn follow(gamer: &mut Raw, task_id: &str) -> (Vec<(u64, u64, String)>, Value) {
    let mut deltas = Vec::new();
    loop {
        let msg = gamer.recv().await;
        if msg["task_id"] != task_id {
            continue;
        }
        match msg["msg_type"].as_str().unwrap() {
            "task_progress" => deltas.push((
                msg["attempt"].as_u64().unwrap(),
                msg["seq"].as_u64().unwrap(),
                msg["text"].as_str().unwrap().to_owned(),
            )),
            "task_result" | "task_error" => return (deltas, msg),
            _ => {}
        }
    }
}

fn text_of(deltas: &[(u64, u64, String)]) -> String {
    deltas.iter().map(|(_, _, t)| t.as_str()).collect()
}

/// Each delta once, in order: seq 0, 1, 2… of one attempt.
fn assert_in_order(deltas: &[(u64, u64, String)], attempt: u64) {
    for (i, (a, seq, _)) in deltas.iter().enumerate() {
        assert_eq!((*a, *seq), (attempt, i as u64), "deltas: {deltas:?}");
    }
}

#[tokio::test]
async fn a_streamed_generation_reaches_the_gamer_the_event_stream_and_the_cli() {
    let Some(dir) = models("streamed_generation", 512) else { return };
    let c = Coordinator::start(bin(), &[]);
    let _w = llm_worker(&c, "llm", dir.path(), &["--slots", "2"]);
    await_model(&c, 1, None).await;
    let data = json!({"model": "tiny", "prompt": "hello", "max_tokens": 48, "temperature": 0});

    // A gamer that asked to stream gets every delta, in order, adding up to the result.
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    gamer
        .send_json(&json!({"msg_type": "task_request", "task_id": "s", "task_type": "generate",
                            "data": data, "stream": true}))
        .await;
    let (deltas, result) = follow(&mut gamer, "s").await;
    assert_eq!(result["msg_type"], "task_result", "{result}");
    let text = result["result"]["text"].as_str().unwrap().to_owned();
    assert!(!deltas.is_empty());
    assert_in_order(&deltas, 1);
    assert_eq!(text_of(&deltas), text);
    assert_eq!(result["result"]["completion_tokens"], 48);

    // Without `stream`, no task_progress; greedy decoding gives the same text.
    gamer
        .send_json(&json!({"msg_type": "task_request", "task_id": "p", "task_type": "generate",
                            "data": data}))
        .await;
    let (deltas, plain) = follow(&mut gamer, "p").await;
    assert!(deltas.is_empty(), "{deltas:?}");
    assert_eq!(plain["result"]["text"], text.as_str());

    // The deltas forwarded are counted.
    let client = http();
    let metrics = client.get(format!("{}/metrics", c.http())).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains(r#"legacygpu_progress_forwarded_total{to="gamer"}"#), "{metrics}");

    // REST: submit with `stream`, follow its event stream to the result.
    // The worker is paused until the follower is on, so that every delta
    // is produced after it connected and must reach it.
    let pause = client.post(format!("{}/cluster/workers/llm/pause", c.http())).send().await;
    assert_eq!(pause.unwrap().status(), StatusCode::OK);
    let body = json!({"task_type": "generate", "data": data, "stream": true});
    let sub: Value = client
        .post(format!("{}/cluster/tasks", c.http()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sub["task_id"].as_str().unwrap();
    let resp = client.get(format!("{}/cluster/tasks/{id}/stream", c.http())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut events = Events::new(resp);
    let resume = client.post(format!("{}/cluster/workers/llm/resume", c.http())).send().await;
    assert_eq!(resume.unwrap().status(), StatusCode::OK);
    let (mut streamed, mut next_seq) = (String::new(), 0);
    let done = loop {
        let (name, data) = events.next().await.expect("a result event before the end");
        let v: Value = serde_json::from_str(&data).unwrap();
        match name.as_str() {
            "progress" => {
                // Every delta, once, in order, from the first.
                assert_eq!(
                    (v["seq"].as_u64(), v["attempt"].as_u64()),
                    (Some(next_seq), Some(1)),
                    "{v}"
                );
                assert_eq!(v["task_id"], id);
                streamed.push_str(v["text"].as_str().unwrap());
                next_seq += 1;
            }
            "result" => break v,
            other => panic!("unexpected event {other}: {data}"),
        }
    };
    assert!(events.next().await.is_none(), "the stream ends after the result");
    assert_eq!(done["result"]["text"], text.as_str());
    assert!(next_seq > 0, "no delta reached the follower");
    assert_eq!(streamed, text, "the deltas add up to the result");
    let unknown = client.get(format!("{}/cluster/tasks/t-999999/stream", c.http())).send().await;
    assert_eq!(unknown.unwrap().status(), StatusCode::NOT_FOUND);

    // The CLI prints the tokens as they come: stdout is exactly the text.
    let out = tokio::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &c.ws_url, "--type", "generate"])
        .args(["--model", "tiny", "--prompt", "hello", "--max-tokens", "48", "--temperature", "0"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{text}\n"));
    assert!(stderr.contains("48 tokens (length)"), "{stderr}");
    let chat = tokio::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &c.ws_url, "--model", "tiny"])
        .args(["--chat", "hi", "--system", "be brief", "--max-tokens", "8"])
        .output()
        .await
        .unwrap();
    assert!(chat.status.success(), "{}", String::from_utf8_lossy(&chat.stderr));
    // `--verify` holds for a generation as for any task (greedy text
    // compares): two replicas on two workers.
    let _w2 = llm_worker(&c, "llm-2", dir.path(), &[]);
    await_model(&c, 2, None).await;
    let verified = tokio::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &c.ws_url, "--model", "tiny", "--verify", "2/2"])
        .args([
            "--task-id",
            "verified-gen",
            "--prompt",
            "hi",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
        ])
        .output()
        .await
        .unwrap();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let list = client.get(format!("{}/cluster/tasks?limit=1", c.http())).send().await.unwrap();
    let list: Value = list.json().await.unwrap();
    let newest = &list["tasks"][0];
    assert_eq!(
        (&newest["client_task_id"], &newest["verification"]["status"]),
        (&json!("verified-gen"), &json!("agreed")),
        "{list}"
    );
    // --model with neither an image nor a prompt is refused clearly.
    let bad = tokio::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &c.ws_url, "--model", "tiny"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--prompt"));
}

/// Starts an OpenAI chat completion stream; returns once its first token came.
async fn openai_stream(c: &Coordinator, max_tokens: u32) -> Events {
    let body = json!({"model": "tiny", "stream": true, "max_tokens": max_tokens, "temperature": 0,
                      "messages": [{"role": "user", "content": "tell me everything"}]});
    let resp =
        http().post(format!("{}/v1/chat/completions", c.http())).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    Events::new(resp)
}

#[tokio::test]
async fn a_worker_killed_before_its_first_token_is_retried_and_one_killed_mid_stream_is_not() {
    // A long context, so that the long generations are still going when
    // their worker is killed.
    let Some(dir) = models("kill_rules", 4096) else { return };
    let c = Coordinator::start(bin(), &[]);
    // Two sequences decode at once; a third assigned task waits for one.
    let llm = ["--slots", "3", "--llm-slots", "2", "--llm-context", "4096"];
    let mut a = llm_worker(&c, "a", dir.path(), &llm);
    await_model(&c, 1, None).await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let long = json!({"model": "tiny", "prompt": "once upon a time", "max_tokens": 4000, "temperature": 0});
    gamer
        .send_json(&json!({"msg_type": "task_request", "task_id": "long", "task_type": "generate",
                            "data": long, "stream": true}))
        .await;
    assert_eq!(gamer.until("task_progress").await["task_id"], "long");
    // The OpenAI stream's first token has come when its response starts.
    let mut chunks = openai_stream(&c, 4000).await;
    // The third task is assigned to `a`, behind the other two: no token yet.
    let short = json!({"model": "tiny", "prompt": "hi", "max_tokens": 24, "temperature": 0});
    gamer
        .send_json(&json!({"msg_type": "task_request", "task_id": "short", "task_type": "generate",
                            "data": short, "stream": true}))
        .await;
    let accepted = loop {
        let msg = gamer.recv().await;
        if msg["msg_type"] == "task_accepted" && msg["task_id"] == "short" {
            break msg;
        }
    };
    let id = accepted["id"].as_str().unwrap().to_owned();
    let client = http();
    eventually("the short task to reach worker a", || async {
        let url = format!("{}/cluster/tasks/{id}/status", c.http());
        let t: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
        (t["worker_id"] == "a" && t["status"] != "queued").then_some(())
    })
    .await;

    a.kill9();
    let _b = llm_worker(&c, "b", dir.path(), &llm);

    // The gamer's long task: its deltas so far, in order, then stream_interrupted.
    let (mut long_deltas, mut short_deltas, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
    while outcomes.len() < 2 {
        let msg = gamer.recv().await;
        let entry = (
            msg["attempt"].as_u64().unwrap_or(0),
            msg["seq"].as_u64().unwrap_or(0),
            msg["text"].as_str().unwrap_or_default().to_owned(),
        );
        match (msg["msg_type"].as_str().unwrap(), msg["task_id"].as_str()) {
            ("task_progress", Some("long")) => long_deltas.push(entry),
            ("task_progress", Some("short")) => short_deltas.push(entry),
            ("task_result" | "task_error", _) => outcomes.push(msg),
            _ => {}
        }
    }
    let by_id = |t: &str| outcomes.iter().find(|o| o["task_id"] == t).unwrap().clone();
    let long_end = by_id("long");
    assert_eq!(long_end["msg_type"], "task_error", "{long_end}");
    assert_eq!(long_end["code"], "stream_interrupted", "{long_end}");
    assert_eq!(long_end["attempts"], 1, "not run again: {long_end}");
    assert!(long_deltas.iter().all(|(attempt, _, _)| *attempt == 1), "{long_deltas:?}");
    // Before the kill, the first delta was read by `until`; the rest follow in order.
    for pair in long_deltas.windows(2) {
        assert_eq!(pair[1].1, pair[0].1 + 1, "{long_deltas:?}");
    }

    // The short task had no token out: it ran again, on b, and completed whole.
    let short_end = by_id("short");
    assert_eq!(short_end["msg_type"], "task_result", "{short_end}");
    assert_eq!(short_end["attempt"], 2);
    assert_eq!(short_end["peer_id"], "b");
    assert_in_order(&short_deltas, 2);
    assert_eq!(text_of(&short_deltas), short_end["result"]["text"].as_str().unwrap());

    // The OpenAI stream: text chunks, then an error event, and no [DONE].
    let mut text = String::new();
    let error = loop {
        let (_, data) = chunks.next().await.expect("an error event before the end");
        assert_ne!(data, "[DONE]", "an interrupted stream does not end as complete");
        let v: Value = serde_json::from_str(&data).unwrap();
        if v.get("error").is_some() {
            break v;
        }
        text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or_default());
    };
    assert_eq!(error["error"]["code"], "stream_interrupted", "{error}");
    assert!(chunks.next().await.is_none(), "the stream ends after the error");
    assert!(!text.is_empty());
}

#[tokio::test]
async fn an_openai_client_that_hangs_up_cancels_its_generation() {
    let Some(dir) = models("hang_up", 4096) else { return };
    let c = Coordinator::start(bin(), &[]);
    let _w = llm_worker(&c, "w", dir.path(), &["--llm-context", "4096"]);
    await_model(&c, 1, None).await;
    let client = http();
    let status = |id: String| {
        let client = client.clone();
        let url = format!("{}/cluster/tasks/{id}/status", c.http());
        async move {
            let t: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
            t["status"].as_str().map(str::to_owned)
        }
    };
    // Streamed: the client reads the first chunk, then goes away.
    let mut stream = openai_stream(&c, 4000).await;
    let id = stream.resp.headers()["x-legacygpu-task-id"].to_str().unwrap().to_owned();
    assert!(stream.next().await.is_some());
    drop(stream);
    eventually("the streamed task to be cancelled", || async {
        (status(id.clone()).await.as_deref() == Some("cancelled")).then_some(())
    })
    .await;
    // Not streamed: the client gives up while the task runs.
    let body = json!({"model": "tiny", "prompt": "go on", "max_tokens": 4000, "temperature": 0});
    let url = format!("{}/v1/completions", c.http());
    let request = tokio::spawn(client.post(&url).json(&body).send());
    let list_url = format!("{}/cluster/tasks?task_type=generate&status=running", c.http());
    let newest = eventually("the completion to run", || async {
        let list: Value = client.get(&list_url).send().await.ok()?.json().await.ok()?;
        let first = list["tasks"].as_array()?.first()?;
        first["task_id"].as_str().filter(|t| *t != id).map(str::to_owned)
    })
    .await;
    request.abort();
    eventually("the abandoned task to be cancelled", || async {
        (status(newest.clone()).await.as_deref() == Some("cancelled")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_worker_with_both_kinds_of_model_serves_each_to_its_own_task_type() {
    // `tiny` is a GGUF model (generate), `color` an ONNX classifier (inference).
    let Some(dir) = models("both_kinds", 512) else { return };
    exec_inference::fixture::write_tiny_classifier(dir.path(), "color").unwrap();
    let c = Coordinator::start(bin(), &[]);
    let _w = llm_worker(&c, "both", dir.path(), &["--slots", "2"]);
    await_model(&c, 1, None).await;
    let client = http();

    // The OpenAI API lists the generation model only, and knows no `color`.
    let list: Value =
        client.get(format!("{}/v1/models", c.http())).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> =
        list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tiny"], "{list}");
    let body = json!({"model": "color", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "hi"}]});
    let resp =
        client.post(format!("{}/v1/chat/completions", c.http())).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_found", "{err}");

    // A task naming a model of the other type waits, and says why.
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let request = |task_id: &str, task_type: &str, data: Value| json!({"msg_type": "task_request", "task_id": task_id, "task_type": task_type, "data": data});
    let requests = [
        request(
            "gen-color",
            "generate",
            json!({"model": "color", "prompt": "hi", "max_tokens": 4}),
        ),
        request("inf-tiny", "inference", json!({"model": "tiny", "image": ""})),
    ];
    for request in requests {
        gamer.send_json(&request).await;
        let reply = gamer.until("task_accepted").await;
        let why = reply["waiting_reason"].as_str().unwrap_or_default();
        let model = request["data"]["model"].as_str().unwrap();
        assert!(
            why.contains("no capable peer") && why.contains(&format!("model `{model}`")),
            "{reply}"
        );
    }

    // Each model runs for its own type.
    let image = {
        use base64::Engine;
        use exec_inference::fixture::{Picture, picture, png};
        base64::engine::general_purpose::STANDARD.encode(png(&picture(
            32,
            32,
            Picture::Solid([220, 20, 30]),
        )))
    };
    gamer
        .send_json(
            &json!({"msg_type": "task_request", "task_id": "inf-color", "task_type": "inference",
                            "data": {"model": "color", "image": image}}),
        )
        .await;
    let classified = gamer.until("task_result").await;
    assert_eq!(classified["task_id"], "inf-color", "{classified}");
    assert_eq!(classified["peer_id"], "both");
    assert_eq!(classified["result"]["top_k"][0]["label"], "red", "{classified}");
    gamer
        .send_json(&json!({"msg_type": "task_request", "task_id": "gen-tiny", "task_type": "generate",
                            "data": {"model": "tiny", "prompt": "hi", "max_tokens": 4, "temperature": 0}}))
        .await;
    let generated = gamer.until("task_result").await;
    assert_eq!(generated["task_id"], "gen-tiny", "{generated}");
    assert_eq!(generated["result"]["completion_tokens"], 4, "{generated}");

    // The mismatched tasks were never sent to the worker: still queued, no attempt made.
    for id in ["gen-color", "inf-tiny"] {
        gamer.send_json(&json!({"msg_type": "task_status", "task_id": id})).await;
        let status = gamer.until("task_status").await;
        assert_eq!(
            (&status["status"], &status["attempt"]),
            (&json!("queued"), &json!(0)),
            "{status}"
        );
    }
}

/// `GET /v1/models` lists what workers given new work serve: a model only a
/// paused worker holds is gone from the list and refused at once (404), and
/// back when the worker resumes.
#[tokio::test]
async fn a_paused_workers_model_leaves_the_list_until_it_resumes() {
    let Some(dir) = models("paused_model", 512) else { return };
    let c = Coordinator::start(bin(), &[]);
    let _w = llm_worker(&c, "llm", dir.path(), &[]);
    await_model(&c, 1, None).await;
    let client = http();
    let control = |action: &'static str| {
        let url = format!("{}/cluster/workers/llm/{action}", c.http());
        let req = client.post(url).json(&json!({}));
        async move { assert!(req.send().await.unwrap().status().is_success(), "{action}") }
    };
    control("pause").await;
    let models = format!("{}/v1/models", c.http());
    eventually("the paused worker's model to leave the list", || async {
        let list: Value = client.get(&models).send().await.ok()?.json().await.ok()?;
        list["data"].as_array()?.is_empty().then_some(())
    })
    .await;
    let body = json!({"model": "tiny", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "hi"}]});
    let chat = format!("{}/v1/chat/completions", c.http());
    let resp = client.post(&chat).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_found", "{err}");
    control("resume").await;
    await_model(&c, 1, None).await;
    let resp = client.post(&chat).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap_or_default());
}
