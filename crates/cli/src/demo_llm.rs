//! The demo's streamed generation: a tiny random-weight model written for
//! the occasion (scripts/make_tiny_gguf.py, which needs python3 with `gguf`
//! and `numpy`), served by the demo's CPU worker and streamed to the
//! terminal token by token. Its text is noise — the weights are random —
//! but every part is real: llama.cpp, the worker's batching engine,
//! `task_progress` through the coordinator, the client's stream.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use client::{Client, ClientOptions, TaskOutcome};
use exec::Executors;
use exec_llm::{GpuLayers, Llm, LlmConfig, fixture};
use proto::TaskRequest;
use serde_json::{Value, json};

/// The model's name in the demo.
pub const MODEL: &str = "tiny-llm";

/// How to run a real model, for when the tiny one cannot be made.
pub const REAL_MODEL_HINT: &str = "to run a real model: download a GGUF file once (e.g. a Llama 3.2 \
     or Qwen 2.5 Q4_K_M), put it in a directory and start `legacygpu worker start --models-dir DIR`; \
     see README.md, \"Run a real model\"";

/// Adds `generate` with the tiny model to `set`; the reason when it cannot.
pub fn add(set: &mut Executors, models: &Path) -> Result<(), String> {
    if !fixture::python_available() {
        return Err("python3 with gguf and numpy is needed to write the tiny demo model \
                    (pip install gguf numpy)"
            .to_owned());
    }
    fixture::write(&models.join(format!("{MODEL}.gguf")), &fixture::Spec::default())?;
    // One CPU thread: the tiny model is fastest so, and the demo's other
    // workers share the machine.
    let config =
        LlmConfig { gpu_layers: GpuLayers::Count(0), threads: Some(1), ..LlmConfig::default() };
    let llm = Llm::from_dir(models, config).map_err(|e| e.to_string())?;
    if llm.model_names().is_empty() {
        return Err("the tiny demo model did not load".to_owned());
    }
    set.add(llm);
    Ok(())
}

/// Streams one generation to stdout; true when it completed.
pub async fn run(url: &str) -> anyhow::Result<bool> {
    println!(
        "\ngenerate: {MODEL}, streamed (random weights: the text is noise; {REAL_MODEL_HINT})\n"
    );
    let client = Client::connect(url, ClientOptions::default()).await?;
    let data =
        json!({"model": MODEL, "prompt": "The RX 580 is", "max_tokens": 48, "temperature": 0});
    let started = Instant::now();
    let mut streamed =
        client.submit_streamed(TaskRequest::new("generate", proto::to_json(&data)?)).await?;
    let (mut first, mut deltas) = (None, 0);
    let mut out = std::io::stdout().lock();
    write!(out, "  ")?;
    while let Some(delta) = streamed.next().await {
        first.get_or_insert_with(|| started.elapsed());
        deltas += 1;
        // Control characters of the random text would garble the terminal.
        let shown: String =
            delta.text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        write!(out, "{shown}")?;
        out.flush()?;
    }
    writeln!(out)?;
    drop(out);
    match streamed.outcome().await? {
        TaskOutcome::Completed(done) => {
            let r: Value = serde_json::from_str(done.result.get()).unwrap_or(Value::Null);
            println!(
                "\nok    generate: {} tokens in {deltas} deltas, first after {:.1} ms, {:.0} tokens/s on {}",
                r["completion_tokens"],
                first.unwrap_or_default().as_secs_f64() * 1e3,
                r["tokens_per_s"].as_f64().unwrap_or(0.0),
                r["device"].as_str().unwrap_or("?"),
            );
            Ok(true)
        }
        TaskOutcome::Failed(f) => {
            println!("\nFAIL  generate: {}: {}", f.code, f.reason);
            Ok(false)
        }
    }
}
