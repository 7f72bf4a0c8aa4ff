//! Generation speed of llama.cpp called in-process: time to first token,
//! one sequence's decode speed, and aggregate tokens/s with several
//! concurrent sequences on one model (continuous batching).
//!
//! ```sh
//! cargo run --release -p exec-llm --example llm_bench -- [options]
//!   --model PATH         a GGUF file (default: the tiny random-weight fixture,
//!                        written with scripts/make_tiny_gguf.py)
//!   --width N --layers N the fixture's shape (default 64 and 2)
//!   --gpu-layers auto|all|N   (default auto)
//!   --software-vulkan    let llama.cpp use the first Vulkan device even if it
//!                        is a CPU renderer such as lavapipe
//!   --concurrency 1,4,8  clients at once, one run each
//!   --tokens N           tokens per generation (default 64)
//!   --rounds N           generations per client (default 2)
//!   --slots N            sequences per model (default: the largest concurrency)
//!   --threads N          llama.cpp's CPU threads (default: every core)
//! ```
//!
//! It prints one Markdown table row per concurrency. Greedy decoding, no
//! stop strings, so every generation makes exactly `--tokens` tokens.

use std::path::PathBuf;
use std::time::Duration;

use exec_llm::bench::{Load, run};
use exec_llm::{Devices, GenerateInput, GpuLayers, Llm, LlmConfig, fixture};

struct Args {
    model: Option<PathBuf>,
    spec: fixture::Spec,
    gpu_layers: GpuLayers,
    software_vulkan: bool,
    concurrency: Vec<usize>,
    tokens: u32,
    rounds: usize,
    slots: Option<u32>,
    threads: Option<u32>,
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
        slots: None,
        threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u32>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--model" => a.model = Some(PathBuf::from(value()?)),
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
            "--slots" => a.slots = Some(number(value()?)?),
            "--threads" => a.threads = Some(number(value()?)?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn main() -> Result<(), String> {
    let args = parse()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = match &args.model {
        Some(p) => p.clone(),
        None => {
            let p = dir.path().join("bench.gguf");
            fixture::write(&p, &args.spec)?;
            p
        }
    };
    let config = LlmConfig {
        gpu_layers: args.gpu_layers,
        slots: args
            .slots
            .unwrap_or_else(|| args.concurrency.iter().copied().max().unwrap_or(1) as u32),
        threads: args.threads,
        devices: if args.software_vulkan { Devices::SoftwareVulkan } else { Devices::Gpus },
        ..LlmConfig::default()
    };
    let llm = Llm::from_file("bench", &path, config).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    println!(
        "model {} ({:.1} MB) on {}",
        path.display(),
        size as f64 / 1e6,
        llm.device("bench").unwrap_or("?")
    );
    let input = GenerateInput {
        model: "bench".into(),
        prompt: Some("The quick brown fox jumps over the lazy dog.".into()),
        max_tokens: Some(args.tokens),
        temperature: Some(0.0),
        ..GenerateInput::default()
    };
    // One warm-up generation: the first use of a device compiles its kernels.
    llm.generate(input.clone(), &exec::RunContext::unbounded()).map_err(|e| e.to_string())?;
    println!(
        "| concurrency | generations | tokens | wall s | aggregate tok/s | TTFT p50 ms | TTFT max ms | per-sequence tok/s p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &concurrency in &args.concurrency {
        let load = Load { concurrency, rounds: args.rounds, input: input.clone() };
        let f = run(&load, |input, ctx| llm.generate(input, ctx)).map_err(|e| e.to_string())?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0} |",
            f.concurrency,
            f.generations,
            f.completion_tokens,
            f.wall.as_secs_f64(),
            f.aggregate_tokens_per_s,
            ms(f.ttft_p50),
            ms(f.ttft_max),
            f.sequence_tokens_per_s_p50
        );
    }
    Ok(())
}
