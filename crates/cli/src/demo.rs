//! `legacygpu demo`: a whole cluster in one process — a coordinator on
//! loopback ports, two workers, and a client running a short mix of tasks —
//! printing each result and its timing.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{Client, ClientOptions, TaskOutcome};
use coordinator::{Config, Coordinator, StoreMode};
use proto::TaskRequest;
use tokio::sync::oneshot;

use crate::args::Demo;

/// One demo task: a label, a type and its data.
pub struct DemoTask {
    pub label: String,
    pub task_type: String,
    pub data: serde_json::Value,
}

pub async fn run(args: Demo) -> anyhow::Result<ExitCode> {
    let config = Config {
        ws_addr: "127.0.0.1:0".parse()?,
        http_addr: None,
        store: StoreMode::Memory,
        ..Config::default()
    };
    let coordinator = Coordinator::bind(config).await.context("cannot start the coordinator")?;
    let url = format!("ws://{}", coordinator.ws_addr());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let cluster = tokio::spawn(coordinator.run(async move {
        let _ = stop_rx.await;
    }));
    println!("coordinator  {url}");

    let mut workers = Vec::new();
    for (name, executors) in demo_workers() {
        let mut config = worker::Config::new(url.clone(), name.clone());
        config.slots = 2;
        let types: Vec<&str> = executors.task_types().collect();
        println!("worker       {name:<10} runs {}", types.join(", "));
        let (tx, rx) = oneshot::channel::<()>();
        let w = worker::Worker::new(config, executors);
        workers.push((
            tx,
            tokio::spawn(w.run(async move {
                let _ = rx.await;
            })),
        ));
    }

    let client = Client::connect(&url, ClientOptions::default()).await?;
    let tasks = demo_tasks(args.tasks as usize);
    println!("\nrunning {} tasks\n", tasks.len());
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in tasks {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let data = proto::to_json(&task.data)?;
            let outcome = client.run(TaskRequest::new(task.task_type.clone(), data)).await?;
            anyhow::Ok((task, outcome, t0.elapsed()))
        }));
    }
    let mut failed = 0;
    for handle in handles {
        let (task, outcome, took) = handle.await??;
        match outcome {
            TaskOutcome::Completed(done) => {
                let peer = done.peer_id.unwrap_or_default();
                println!(
                    "ok    {:<34} {:>8.1} ms  on {peer:<8} {}",
                    task.label,
                    ms(took),
                    summary(done.result.get())
                );
            }
            TaskOutcome::Failed(err) => {
                failed += 1;
                println!(
                    "FAIL  {:<34} {:>8.1} ms  {}: {}",
                    task.label,
                    ms(took),
                    err.code,
                    err.reason
                );
            }
        }
    }
    println!("\ndone in {:.1} ms, {failed} failed", ms(started.elapsed()));

    for (stop, handle) in workers {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), cluster).await;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A one-line summary of a result: short results in full, long ones cut.
fn summary(json: &str) -> String {
    const MAX: usize = 90;
    if json.len() <= MAX {
        json.to_owned()
    } else {
        let cut = (0..=MAX).rev().find(|i| json.is_char_boundary(*i)).unwrap_or(0);
        format!("{}…", &json[..cut])
    }
}

/// The demo's two workers.
fn demo_workers() -> Vec<(String, exec::Executors)> {
    vec![
        ("cpu-1".to_owned(), exec::Executors::builtin()),
        ("cpu-2".to_owned(), exec::Executors::builtin()),
    ]
}

/// A short mix of tasks, `n` of each kind.
fn demo_tasks(n: usize) -> Vec<DemoTask> {
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(DemoTask {
            label: format!("echo #{i}"),
            task_type: "echo".into(),
            data: serde_json::json!({ "frame": i, "note": "hello from the demo" }),
        });
        tasks.push(DemoTask {
            label: format!("sleep #{i} (20 ms)"),
            task_type: "sleep".into(),
            data: serde_json::json!({ "ms": 20 }),
        });
    }
    tasks
}
