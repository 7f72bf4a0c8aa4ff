//! Generation through the cluster against llama.cpp called in-process, on
//! the same GGUF, device and settings: time to first token, decode speed
//! and aggregate tokens/s with several concurrent requests on one worker.
//!
//! ```sh
//! cargo run --release -p cli --example llm_cluster -- [options]
//!   --model PATH        a GGUF file (default: the tiny random-weight fixture
//!                       of scripts/make_tiny_gguf.py; --width/--layers shape it)
//!   --gpu-layers auto|all|N  (default auto)   --software-vulkan (allow lavapipe)
//!   --concurrency 1,4,8 --tokens 64 --rounds 2 --threads N --store (SQLite, default memory)
//!   --repeat N          runs of each side per concurrency, alternating (default 5)
//! ```
//!
//! Both sides run the same load through `exec_llm::bench::run`: llama.cpp
//! in-process (`Llm::generate`), and an in-process coordinator (loopback
//! WebSocket) and worker serving a second copy of the model, driven by the
//! Rust SDK's streamed submissions (`task_progress` deltas timestamp the
//! first token). The two never run at once: they alternate, `--repeat`
//! times each, and the median run of each side (by aggregate tokens/s) is
//! printed, so that a busy machine's swings hit both alike. Each pair of
//! runs (in-process first, then the cluster first, in turn) also gives one
//! paired difference; with six pairs or more the median overhead is printed
//! with a distribution-free 95 % confidence interval
//! (`exec_llm::bench::median_with_ci`), which says whether it is within a bound.

use std::time::Duration;

use client::{Client, ClientOptions, TaskOutcome};
use coordinator::{Config, Coordinator, StoreMode};
use exec::{ExecError, Executors};
use exec_llm::bench::{Figures, Load, median_with_ci, run};
use exec_llm::{Devices, GenerateInput, Generation, GpuLayers, Llm, LlmConfig, fixture};
use proto::TaskRequest;

struct Args {
    model: Option<std::path::PathBuf>,
    spec: fixture::Spec,
    gpu_layers: GpuLayers,
    software_vulkan: bool,
    concurrency: Vec<usize>,
    tokens: u32,
    rounds: usize,
    threads: Option<u32>,
    store: bool,
    repeat: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        model: None,
        spec: fixture::Spec::default(),
        gpu_layers: GpuLayers::Auto,
        software_vulkan: false,
        concurrency: vec![1, 4, 8],
        tokens: 64,
        rounds: 2,
        threads: None,
        store: false,
        repeat: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u32>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--model" => a.model = Some(value()?.into()),
            "--width" => a.spec.width = number(value()?)?,
            "--layers" => a.spec.layers = number(value()?)?,
            "--gpu-layers" => a.gpu_layers = value()?.parse()?,
            "--software-vulkan" => a.software_vulkan = true,
            "--concurrency" => {
                a.concurrency = value()?
                    .split(',')
                    .map(|c| c.parse::<usize>().map_err(|e| format!("{c}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--tokens" => a.tokens = number(value()?)?,
            "--rounds" => a.rounds = number(value()?)? as usize,
            "--threads" => a.threads = Some(number(value()?)?),
            "--store" => a.store = true,
            "--repeat" => a.repeat = number(value()?)?.max(1) as usize,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn row(side: &str, f: &Figures) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "| {side} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0} |",
        f.concurrency,
        f.completion_tokens,
        f.wall.as_secs_f64(),
        f.aggregate_tokens_per_s,
        ms(f.ttft_p50),
        ms(f.ttft_max),
        f.sequence_tokens_per_s_p50
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let dir = tempfile::tempdir()?;
    let path = match &args.model {
        Some(p) => p.clone(),
        None => {
            let p = dir.path().join("bench.gguf");
            fixture::write(&p, &args.spec)?;
            p
        }
    };
    let slots = args.concurrency.iter().copied().max().unwrap_or(1) as u32;
    let config = LlmConfig {
        gpu_layers: args.gpu_layers,
        slots,
        threads: args.threads,
        devices: if args.software_vulkan { Devices::SoftwareVulkan } else { Devices::Gpus },
        ..LlmConfig::default()
    };
    let input = GenerateInput {
        model: "bench".into(),
        prompt: Some("The quick brown fox jumps over the lazy dog.".into()),
        max_tokens: Some(args.tokens),
        temperature: Some(0.0),
        ..GenerateInput::default()
    };
    let direct = Llm::from_file("bench", &path, config.clone())?;
    println!("model {} on {}", path.display(), direct.device("bench").unwrap_or("?"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let client = rt.block_on(cluster(&path, config, slots, args.store, &dir))?;
    let through =
        |i: GenerateInput, ctx: &exec::RunContext| rt.handle().block_on(generate(&client, i, ctx));
    // Warm-up: the first use of a device compiles its kernels.
    direct.generate(input.clone(), &exec::RunContext::unbounded())?;
    through(input.clone(), &exec::RunContext::unbounded())?;
    println!(
        "| path | concurrency | tokens | wall s | aggregate tok/s | TTFT p50 ms | TTFT max ms | per-sequence tok/s p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &concurrency in &args.concurrency {
        let load = Load { concurrency, rounds: args.rounds, input: input.clone() };
        let (mut d, mut c) = (Vec::new(), Vec::new());
        let (mut slower, mut later) = (Vec::new(), Vec::new());
        for i in 0..args.repeat {
            // Pairs in turn: in-process first, then the cluster first, so
            // that neither side always runs on the warmer machine.
            let in_process = || run(&load, |i, ctx| direct.generate(i, ctx));
            let (alone, through_cluster) = if i % 2 == 0 {
                let alone = in_process()?;
                (alone, run(&load, through)?)
            } else {
                let through_cluster = run(&load, through)?;
                (in_process()?, through_cluster)
            };
            let lost = 1.0 - through_cluster.aggregate_tokens_per_s / alone.aggregate_tokens_per_s;
            slower.push(lost * 100.0);
            let added = through_cluster.ttft_p50.as_secs_f64() - alone.ttft_p50.as_secs_f64();
            later.push(added * 1e3);
            d.push(alone);
            c.push(through_cluster);
        }
        let (d, c) = (median(d), median(c));
        println!("{}", row("in-process", &d));
        println!("{}", row("cluster", &c));
        println!(
            "|   | cluster vs in-process | | | {:+.1} % | {:+.1} ms | | {:+.1} % |",
            (c.aggregate_tokens_per_s / d.aggregate_tokens_per_s - 1.0) * 100.0,
            (c.ttft_p50.as_secs_f64() - d.ttft_p50.as_secs_f64()) * 1e3,
            (c.sequence_tokens_per_s_p50 / d.sequence_tokens_per_s_p50 - 1.0) * 100.0,
        );
        if let (Some(tps), Some(ttft)) = (median_with_ci(&slower), median_with_ci(&later)) {
            println!(
                "|   | paired, {} pairs: overhead (tok/s lost) {:+.1} % [95 % CI {:+.1} … {:+.1}], \
                 TTFT added {:+.1} ms [{:+.1} … {:+.1}] | | | | | | |",
                slower.len(),
                tps.0,
                tps.1,
                tps.2,
                ttft.0,
                ttft.1,
                ttft.2
            );
        }
    }
    Ok(())
}

/// The run with the median aggregate tokens/s.
fn median(mut runs: Vec<Figures>) -> Figures {
    runs.sort_by(|a, b| a.aggregate_tokens_per_s.total_cmp(&b.aggregate_tokens_per_s));
    runs.swap_remove(runs.len() / 2)
}

/// A coordinator and one worker serving the model, in this process; a client.
async fn cluster(
    path: &std::path::Path,
    config: LlmConfig,
    slots: u32,
    store: bool,
    dir: &tempfile::TempDir,
) -> Result<Client, Box<dyn std::error::Error>> {
    let store = if store {
        StoreMode::Sqlite { data_dir: dir.path().join("data"), sync: coordinator::Sync::default() }
    } else {
        StoreMode::Memory
    };
    let config_c =
        Config { ws_addr: "127.0.0.1:0".parse()?, http_addr: None, store, ..Config::default() };
    let coordinator = Coordinator::bind(config_c).await?;
    let url = format!("ws://{}", coordinator.ws_addr());
    tokio::spawn(coordinator.run(std::future::pending()));
    let mut executors = Executors::builtin();
    executors.add(Llm::from_file("bench", path, config)?);
    let mut wc = worker::Config::new(url.clone(), "bench-worker");
    wc.slots = slots;
    tokio::spawn(worker::Worker::new(wc, executors).run(std::future::pending()));
    let client = Client::connect(&url, ClientOptions::default()).await?;
    Ok(client)
}

/// One generation through the cluster, its deltas fed into `ctx` as they come.
async fn generate(
    client: &Client,
    input: GenerateInput,
    ctx: &exec::RunContext,
) -> Result<Generation, ExecError> {
    let internal = |e: String| ExecError::Internal(e);
    let data = proto::to_json(&input).map_err(|e| internal(e.to_string()))?;
    let req = TaskRequest::new("generate", data);
    // Until the worker has registered, the task waits in the queue.
    let mut streamed = client.submit_streamed(req).await.map_err(|e| internal(e.to_string()))?;
    while let Some(delta) = streamed.next().await {
        ctx.progress(&delta.text, delta.tokens.unwrap_or(0));
    }
    match streamed.outcome().await.map_err(|e| internal(e.to_string()))? {
        TaskOutcome::Completed(done) => {
            serde_json::from_str(done.result.get()).map_err(|e| internal(e.to_string()))
        }
        TaskOutcome::Failed(f) => Err(internal(format!("{}: {}", f.code, f.reason))),
    }
}
