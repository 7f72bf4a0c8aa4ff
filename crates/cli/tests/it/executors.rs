//! Real executors through the cluster: tasks go only to peers able to run
//! them, physics is bit-identical across worker processes, and the seed's
//! `task submit --model … --input … --wait` works.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use test_support::{Coordinator, Raw, worker};

use crate::bin;

/// A models directory with the tiny colour classifier as `tiny`.
fn models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    exec_inference::fixture::write_tiny_classifier(dir.path(), "tiny").unwrap();
    dir
}

fn gpu_present() -> bool {
    let present = !exec_gpu::enumerate_adapters(&exec_gpu::GpuOptions::default()).is_empty();
    if !present && std::env::var("LEGACYGPU_REQUIRE_GPU").as_deref() == Ok("1") {
        panic!("no GPU adapter, and LEGACYGPU_REQUIRE_GPU=1");
    }
    present
}

async fn submit(gamer: &mut Raw, id: &str, task_type: &str, data: Value) -> Value {
    submit_keeping(gamer, id, task_type, data, &mut Vec::new()).await
}

/// Submits and waits for its `task_accepted`, keeping in `early` the
/// results of earlier tasks that come first (a fast worker may finish one
/// before the next is accepted).
async fn submit_keeping(
    gamer: &mut Raw,
    id: &str,
    task_type: &str,
    data: Value,
    early: &mut Vec<Value>,
) -> Value {
    gamer.send_json(&json!({"msg_type": "task_request", "task_id": id, "task_type": task_type, "data": data})).await;
    loop {
        let v = gamer.recv().await;
        match v["msg_type"].as_str() {
            Some("task_accepted") => return v,
            Some("task_result") => early.push(v),
            _ => panic!("expected task_accepted, got {v}"),
        }
    }
}

#[tokio::test]
async fn tasks_go_only_to_peers_that_can_run_them() {
    let c = Coordinator::start(bin(), &[]);
    let models = models();
    let dir = models.path().to_string_lossy().into_owned();
    let _plain = worker(bin(), &c.ws_url, "plain", &["--no-gpu", "--slots", "4"]);
    let _rich = worker(bin(), &c.ws_url, "rich", &["--models-dir", &dir, "--slots", "1"]);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let image = {
        use base64::Engine;
        let png = exec_inference::fixture::png(&exec_inference::fixture::picture(
            32,
            32,
            exec_inference::fixture::Picture::Solid([10, 20, 240]),
        ));
        base64::engine::general_purpose::STANDARD.encode(png)
    };
    let with_gpu = gpu_present();
    let mut expected = Vec::new();
    let mut early = Vec::new();
    for i in 0..4 {
        let data = json!({"model": "tiny", "image": image});
        submit_keeping(&mut gamer, &format!("inf-{i}"), "inference", data, &mut early).await;
        expected.push((format!("inf-{i}"), "rich"));
        if with_gpu {
            let data = json!({"op": "matmul", "m": 8, "k": 8, "n": 8, "seed": i});
            submit_keeping(&mut gamer, &format!("gpu-{i}"), "gpu", data, &mut early).await;
            expected.push((format!("gpu-{i}"), "rich"));
        }
    }
    // A model nobody has waits, and says why.
    let data = json!({"model": "resnet50", "image": image});
    let waiting = submit_keeping(&mut gamer, "nobody", "inference", data, &mut early).await;
    let why = waiting["waiting_reason"].as_str().unwrap_or_default();
    assert!(why.contains("no capable peer") && why.contains("resnet50"), "{waiting}");
    for n in 0..expected.len() {
        let r = match early.get(n) {
            Some(r) => r.clone(),
            None => gamer.until("task_result").await,
        };
        let id = r["task_id"].as_str().unwrap().to_owned();
        let want = expected.iter().find(|(e, _)| *e == id).map(|(_, p)| *p);
        assert_eq!(r["peer_id"].as_str(), want, "{r}");
        if id.starts_with("inf") {
            assert_eq!(r["result"]["top_k"][0]["label"], "blue");
        }
    }
    gamer.send(r#"{"msg_type": "task_status", "task_id": "nobody"}"#).await;
    assert_eq!(gamer.until("task_status").await["status"], "queued");
}

#[tokio::test]
async fn physics_is_bit_identical_across_worker_processes() {
    let c = Coordinator::start(bin(), &["--strategy", "ROUND_ROBIN"]);
    let _a = worker(bin(), &c.ws_url, "a", &["--no-gpu", "--slots", "1"]);
    let _b = worker(bin(), &c.ws_url, "b", &["--no-gpu", "--slots", "1"]);
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    let scene = exec_physics::example_scene(30, 90);
    for i in 0..6 {
        submit(&mut gamer, &format!("s{i}"), "physics", scene.clone()).await;
    }
    let mut peers = BTreeSet::new();
    let mut results = BTreeSet::new();
    for _ in 0..6 {
        let r = gamer.until("task_result").await;
        peers.insert(r["peer_id"].as_str().unwrap().to_owned());
        // Everything but the timing must be the same bytes.
        results.insert(
            serde_json::to_string(&(&r["result"]["bodies"], &r["result"]["checksum"])).unwrap(),
        );
    }
    assert_eq!(peers.len(), 2, "both workers ran the scene: {peers:?}");
    assert_eq!(results.len(), 1, "results differ across workers");
}

#[tokio::test]
async fn the_seeds_model_and_input_command_classifies_an_image() {
    let c = Coordinator::start(bin(), &[]);
    let models = models();
    let dir = models.path().to_string_lossy().into_owned();
    let _w = worker(bin(), &c.ws_url, "w", &["--models-dir", &dir, "--no-gpu"]);
    let image = models.path().join("image.jpg");
    let picture = exec_inference::fixture::picture(
        120,
        90,
        exec_inference::fixture::Picture::Solid([230, 10, 10]),
    );
    std::fs::write(&image, exec_inference::fixture::jpeg(&picture)).unwrap();
    let out = std::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &c.ws_url, "--model", "tiny", "--input"])
        .arg(&image)
        .args(["--top-k", "2", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["top_k"][0]["label"], "red", "{printed}");
    assert_eq!(printed["top_k"].as_array().unwrap().len(), 2);
    assert_eq!((&printed["backend"], &printed["device"]), (&json!("tract"), &json!("cpu")));
    // A model that no worker has waits with a reason on stderr (no --wait).
    let out = std::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &c.ws_url, "--model", "resnet50", "--input"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no capable peer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_worker_with_a_missing_models_dir_refuses_to_start() {
    let c = Coordinator::start(bin(), &[]);
    let mut w = worker(bin(), &c.ws_url, "w", &["--models-dir", "/no/such/dir"]);
    assert_eq!(w.wait(), Some(1));
    let stderr = w.log();
    assert!(stderr.contains("/no/such/dir"), "{stderr}");
}

/// `--inference-backend ort-webgpu` without its libraries stops the worker
/// with the path it lacks; `auto` serves on tract and says why in its log.
#[tokio::test]
async fn the_inference_backend_is_checked_at_start() {
    let c = Coordinator::start(bin(), &[]);
    let models = models();
    let dir = models.path().to_string_lossy().into_owned();
    let missing = [
        "--onnxruntime-lib",
        "/no/such/libonnxruntime.so",
        "--ort-webgpu-ep",
        "/no/such/libonnxruntime_providers_webgpu.so",
    ];
    let flags = |backend: &'static str| {
        let mut flags = vec!["--models-dir", &dir, "--no-gpu", "--inference-backend", backend];
        flags.extend(missing);
        flags
    };
    let mut strict = worker(bin(), &c.ws_url, "strict", &flags("ort-webgpu"));
    assert_eq!(strict.wait(), Some(1));
    let log = strict.log();
    assert!(log.contains("ort-webgpu") && log.contains("/no/such/libonnxruntime.so"), "{log}");

    let auto = worker(bin(), &c.ws_url, "auto", &flags("auto"));
    let image = models.path().join("image.png");
    let picture = exec_inference::fixture::picture(
        32,
        32,
        exec_inference::fixture::Picture::Solid([10, 10, 230]),
    );
    std::fs::write(&image, exec_inference::fixture::png(&picture)).unwrap();
    let out = std::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &c.ws_url, "--model", "tiny", "--input"])
        .arg(&image)
        .arg("--wait")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&printed["backend"], &printed["top_k"][0]["label"]),
        (&json!("tract"), &json!("blue"))
    );
    let log = auto.log();
    assert!(log.contains("runs on tract") && log.contains("/no/such/libonnxruntime.so"), "{log}");
    // A backend that does not exist is a usage error.
    let mut bad =
        worker(bin(), &c.ws_url, "bad", &["--models-dir", &dir, "--inference-backend", "cuda"]);
    assert_eq!(bad.wait(), Some(2));
    assert!(bad.log().contains("tract, ort-webgpu or auto"), "{}", bad.log());
}

/// A task type the coordinator has never heard of: once a peer declares
/// what it needs, a seed-literal peer (which runs every type) is not sent it.
#[tokio::test]
async fn a_peer_declaring_a_types_needs_keeps_it_from_peers_without_them() {
    let c = Coordinator::start(bin(), &[]);
    let needs = r#"{"task_types": ["quantum"], "gpus": ["QPU 9000"],
                    "task_needs": {"quantum": {"gpu": true}}}"#;
    let able = Raw::peer(&c.ws_url, "able", needs).await;
    let mut seed = Raw::peer(&c.ws_url, "seed", "{}").await;
    let mut gamer = Raw::gamer(&c.ws_url, "g").await;
    able.close().await;
    let accepted = submit(&mut gamer, "q1", "quantum", json!({})).await;
    assert!(
        accepted["waiting_reason"].as_str().is_some_and(|r| r.contains("GPU")),
        "the seed peer cannot run it: {accepted}"
    );
    // An echo task still goes to the seed peer, which runs every type.
    submit(&mut gamer, "e1", "echo", json!(1)).await;
    let a = seed.expect("task_assignment").await;
    assert_eq!(a["task_id"], "e1", "{a}");
}
