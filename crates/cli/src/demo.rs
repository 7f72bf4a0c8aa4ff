//! `legacygpu demo`: a whole cluster in one process — a coordinator on a
//! loopback port, two workers, and a client running a short mix of real
//! tasks (physics, image classification, GPU compute) — printing each result
//! and its timing; then a short streamed generation on a tiny model
//! (`demo_llm.rs`) when Python's gguf can write one.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use client::{Client, ClientOptions, TaskOutcome};
use coordinator::{Config, Coordinator, StoreMode};
use exec::Executors;
use exec_gpu::{Gpu, GpuOptions};
use exec_inference::Inference;
use exec_inference::fixture::{Picture, jpeg, picture, png, write_tiny_classifier};
use exec_physics::{Physics, example_scene};
use proto::TaskRequest;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::args::Demo;

/// One demo task.
struct DemoTask {
    label: String,
    task_type: &'static str,
    data: Value,
}

pub async fn run(args: Demo) -> anyhow::Result<ExitCode> {
    let models = tempfile::tempdir().context("cannot make a temporary models directory")?;
    write_tiny_classifier(models.path(), "colours").context("cannot write the demo model")?;

    let config = Config {
        ws_addr: "127.0.0.1:0".parse()?,
        http_addr: None,
        store: StoreMode::Memory,
        task_needs: crate::executors::needs(),
        // Two workers and this client: the default (20 000, sized for a
        // real cluster) would only draw a warning where the open-file limit
        // is lower.
        max_connections: 64,
        ..Config::default()
    };
    let coordinator = Coordinator::bind(config).await.context("cannot start the coordinator")?;
    let url = format!("ws://{}", coordinator.ws_addr());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let cluster = tokio::spawn(coordinator.run(async move {
        let _ = stop_rx.await;
    }));
    println!("coordinator  {url}");

    let (workers, gpu, llm) = workers(models.path())?;
    let mut running = Vec::new();
    for (name, executors) in workers {
        let mut config = worker::Config::new(url.clone(), name.clone());
        config.slots = 2;
        let types: Vec<&str> = executors.task_types().collect();
        let models = executors.advertise().models;
        let extra = if models.is_empty() {
            String::new()
        } else {
            format!(" (models: {})", models.join(", "))
        };
        println!("worker       {name:<8} runs {}{extra}", types.join(", "));
        let (tx, rx) = oneshot::channel::<()>();
        let w = worker::Worker::new(config, executors);
        running.push((
            tx,
            tokio::spawn(w.run(async move {
                let _ = rx.await;
            })),
        ));
    }
    match &gpu {
        Some(adapter) => println!("gpu          {adapter}"),
        None => println!(
            "gpu          none found: gpu tasks skipped (install mesa-vulkan-drivers for a software one)"
        ),
    }
    if let Err(why) = &llm {
        println!("generate     skipped: {why}; {}", crate::demo_llm::REAL_MODEL_HINT);
    }

    let mut failed = run_tasks(&url, tasks(args.tasks as usize, gpu.is_some())).await?;
    if llm.is_ok() && !crate::demo_llm::run(&url).await? {
        failed += 1;
    }

    for (stop, handle) in running {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), cluster).await;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::remote::exit::TASK_FAILED)
    })
}

/// A named worker and what it runs.
type DemoWorker = (String, Executors);

/// Whether the demo's generation model could be made, and why not.
type LlmReady = Result<(), String>;

/// Two workers: one for the CPU (physics, inference, generation), one with
/// the GPU; the GPU adapter's description, if there is one; and whether the
/// tiny generation model could be made (why not, if not).
fn workers(
    models: &std::path::Path,
) -> anyhow::Result<(Vec<DemoWorker>, Option<String>, LlmReady)> {
    let mut cpu = Executors::builtin();
    cpu.add(Physics::default());
    cpu.add(Inference::from_dir(models)?);
    let llm = crate::demo_llm::add(&mut cpu, models);
    let mut gpu_worker = Executors::builtin();
    gpu_worker.add(Physics::default());
    let gpu = Gpu::new(GpuOptions::default());
    let adapter = gpu.adapter().map(|a| format!("{} ({}, {})", a.name, a.backend, a.device_type));
    if gpu.has_adapter() {
        gpu_worker.add(gpu);
    }
    Ok((vec![("cpu-1".into(), cpu), ("gpu-1".into(), gpu_worker)], adapter, llm))
}

/// `rounds` of a physics scene, two classifications and, with a GPU, a
/// matrix multiply and an n-body run.
fn tasks(rounds: usize, gpu: bool) -> Vec<DemoTask> {
    let colours = [
        ("red", [220u8, 30, 40]),
        ("green", [30, 200, 60]),
        ("blue", [40, 60, 230]),
        ("white", [250, 250, 245]),
    ];
    let mut out = Vec::new();
    for i in 0..rounds {
        out.push(DemoTask {
            label: format!("physics: 200 bodies, 120 steps #{i}"),
            task_type: "physics",
            data: example_scene(200, 120),
        });
        let (name, colour) = colours[i % colours.len()];
        let (image, what) = if i % 2 == 0 {
            (png(&picture(64, 48, Picture::Solid(colour))), format!("a {name} PNG"))
        } else {
            (jpeg(&picture(40, 40, Picture::Gradient(colour))), format!("a black-to-{name} JPEG"))
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(image);
        out.push(DemoTask {
            label: format!("inference: {what}"),
            task_type: "inference",
            data: json!({"model": "colours", "image": b64, "top_k": 2}),
        });
        if gpu {
            out.push(DemoTask {
                label: format!("gpu: matmul 256×256 #{i}"),
                task_type: "gpu",
                data: json!({"op": "matmul", "m": 256, "k": 256, "n": 256, "seed": i}),
            });
            out.push(DemoTask {
                label: format!("gpu: n-body 512 bodies × 10 #{i}"),
                task_type: "gpu",
                data: json!({"op": "nbody", "n": 512, "steps": 10, "seed": i}),
            });
        }
    }
    out
}

/// Submits everything at once and prints outcomes as they come; returns the failures.
async fn run_tasks(url: &str, tasks: Vec<DemoTask>) -> anyhow::Result<usize> {
    let client = Client::connect(url, ClientOptions::default()).await?;
    println!("\nrunning {} tasks\n", tasks.len());
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in tasks {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let data = proto::to_json(&task.data)?;
            let outcome = client.run(TaskRequest::new(task.task_type, data)).await?;
            anyhow::Ok((task, outcome, t0.elapsed()))
        }));
    }
    let mut failed = 0;
    for handle in handles {
        let (task, outcome, took) = handle.await??;
        match outcome {
            TaskOutcome::Completed(done) => {
                let peer = done.peer_id.unwrap_or_default();
                let result: Value = serde_json::from_str(done.result.get()).unwrap_or(Value::Null);
                println!(
                    "ok    {:<36} {:>8.1} ms  on {peer:<6} {}",
                    task.label,
                    ms(took),
                    summary(task.task_type, &result)
                );
            }
            TaskOutcome::Failed(err) => {
                failed += 1;
                println!(
                    "FAIL  {:<36} {:>8.1} ms  {}: {}",
                    task.label,
                    ms(took),
                    err.code,
                    err.reason
                );
            }
        }
    }
    println!(
        "\n{} tasks in {:.1} ms, {failed} failed",
        client.stats().outcomes,
        ms(started.elapsed())
    );
    Ok(failed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What a result says, in a few words.
fn summary(task_type: &str, r: &Value) -> String {
    match task_type {
        "physics" => {
            let resting = r["bodies"]
                .as_array()
                .map_or(0, |b| b.iter().filter(|b| b["sleeping"] == true).count());
            format!("checksum {}, {resting} bodies at rest", r["checksum"].as_str().unwrap_or("?"))
        }
        "inference" => {
            let best = &r["top_k"][0];
            format!(
                "{} ({:.2})",
                best["label"].as_str().unwrap_or("?"),
                best["score"].as_f64().unwrap_or(0.0)
            )
        }
        "gpu" if r["op"] == "matmul" => {
            format!(
                "{} GFLOP/s on {}, sum {:.3}",
                fmt1(&r["gflops"]),
                r["device"].as_str().unwrap_or("?"),
                r["sum"].as_f64().unwrap_or(0.0)
            )
        }
        "gpu" => format!(
            "{:.2e} interactions/s on {}",
            r["interactions_per_s"].as_f64().unwrap_or(0.0),
            r["device"].as_str().unwrap_or("?")
        ),
        _ => r.to_string(),
    }
}

fn fmt1(v: &Value) -> String {
    format!("{:.1}", v.as_f64().unwrap_or(0.0))
}
