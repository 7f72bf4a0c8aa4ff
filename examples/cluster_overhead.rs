//! The cost of running a real task through the cluster rather than calling
//! the executor directly: submits the same task N times, one at a time,
//! through the Rust SDK, and compares each round trip with the run time the
//! peer measured around the executor (`elapsed_ms` in the result). The
//! difference is the cluster's overhead: the gamer → coordinator → peer hops
//! and back, JSON in and out, and queueing.
//!
//! ```text
//! legacygpu cluster start --bind 127.0.0.1:8765 --no-store &
//! legacygpu worker start --coordinator ws://127.0.0.1:8765 --slots 1 &
//! cargo run --release -p cli --example cluster_overhead -- ws://127.0.0.1:8765 TASK 10
//! ```
//! TASK is a file holding `{"task_type": …, "data": …}`, or `physics:N:STEPS`
//! for `exec_physics::example_scene(N, STEPS)`.

use std::time::Instant;

use client::{Client, ClientOptions, TaskOutcome};
use proto::TaskRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8765".to_owned());
    let file = args.next().ok_or("usage: cluster_overhead URL TASK.json|physics:N:STEPS [N]")?;
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let task: serde_json::Value = match file.strip_prefix("physics:") {
        Some(spec) => {
            let (bodies, steps) = spec.split_once(':').ok_or("physics:N:STEPS")?;
            let scene = exec_physics::example_scene(bodies.parse()?, steps.parse()?);
            serde_json::json!({"task_type": "physics", "data": scene})
        }
        None => serde_json::from_str(&std::fs::read_to_string(file)?)?,
    };
    let task_type = task["task_type"].as_str().ok_or("no task_type")?.to_owned();
    let data: proto::Json = serde_json::from_str(&task["data"].to_string())?;
    let client = Client::connect(&url, ClientOptions::default()).await?;
    let (mut runs, mut trips) = (Vec::new(), Vec::new());
    for i in 0..=n {
        let started = Instant::now();
        let outcome = client.run(TaskRequest::new(task_type.clone(), data.clone())).await?;
        let trip = started.elapsed().as_secs_f64() * 1e3;
        let TaskOutcome::Completed(done) = outcome else { return Err("the task failed".into()) };
        let result: serde_json::Value = serde_json::from_str(done.result.get())?;
        let run = result["elapsed_ms"].as_f64().ok_or("the result has no elapsed_ms")?;
        if i > 0 {
            // The first run warms caches on both sides.
            runs.push(run);
            trips.push(trip);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (run, trip) = (median(&mut runs), median(&mut trips));
    println!(
        "{n} runs: executor {run:.2} ms, round trip {trip:.2} ms (medians); overhead {:.2} ms = {:.1} %",
        trip - run,
        100.0 * (trip - run) / run
    );
    Ok(())
}
