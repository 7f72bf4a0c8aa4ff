//! `legacygpu task submit --type generate --model M --prompt "…"` (or
//! `--chat "…"`): a streamed generation, printed token by token.
//!
//! The text goes to stdout as its deltas arrive; the figures (tokens, speed,
//! time to first token, device, worker) go to stderr at the end, so that
//! stdout is exactly the generated text. Deltas are best-effort: when some
//! were lost (a gap in `seq`), nothing more is printed from the stream and
//! the rest of the text is taken from the final result, which is complete.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use client::{Client, ClientOptions, TaskOutcome};
use serde_json::{Value, json};

use crate::args::TaskSubmit;
use crate::remote::{exit, usage};

/// `task submit`'s generation flags; the sampling ones need a text to
/// generate from (`text`: --prompt or --chat).
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("text").args(["prompt", "chat"]))]
pub struct GenerateArgs {
    /// Generation: text for the model to continue (a `generate` task,
    /// streamed: tokens are printed as they come, then the figures).
    #[arg(long, requires = "model", conflicts_with_all = ["input", "chat", "batch"])]
    pub prompt: Option<String>,

    /// Generation: a user message, through the model's chat template.
    #[arg(long, requires = "model", conflicts_with_all = ["input", "batch"])]
    pub chat: Option<String>,

    /// Generation: a system message before `--chat`'s.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,

    /// Generation: the most tokens to generate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), requires = "text")]
    pub max_tokens: Option<u32>,

    /// Generation: the sampling temperature, 0 to 2 (0 is greedy: the same
    /// tokens every time).
    #[arg(long, requires = "text")]
    pub temperature: Option<f64>,

    /// Generation: sample from the likeliest tokens whose probabilities add
    /// up to P, above 0 and at most 1 (default 0.95).
    #[arg(long, requires = "text")]
    pub top_p: Option<f64>,

    /// Generation: stop before this text (repeatable, at most 4).
    #[arg(long = "stop", value_name = "TEXT", requires = "text")]
    pub stop: Vec<String>,

    /// Generation: the sampler's seed.
    #[arg(long, requires = "text")]
    pub seed: Option<u32>,
}

/// The task's data from the flags (`top_k` is `task submit`'s, shared with
/// inference).
pub fn data(args: &GenerateArgs, top_k: Option<u32>, model: &str) -> anyhow::Result<Value> {
    let mut data = json!({ "model": model });
    match (&args.prompt, &args.chat) {
        (Some(prompt), None) => data["prompt"] = json!(prompt),
        (None, Some(chat)) => {
            let mut messages = Vec::new();
            if let Some(system) = &args.system {
                messages.push(json!({"role": "system", "content": system}));
            }
            messages.push(json!({"role": "user", "content": chat}));
            data["messages"] = json!(messages);
        }
        _ => return Err(usage("give --prompt TEXT or --chat MESSAGE")),
    }
    if let Some(t) = args.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(usage("--temperature must be between 0 and 2"));
        }
        data["temperature"] = json!(t);
    }
    if let Some(n) = args.max_tokens {
        data["max_tokens"] = json!(n);
    }
    if let Some(p) = args.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(usage("--top-p must be above 0 and at most 1"));
        }
        data["top_p"] = json!(p);
    }
    if let Some(k) = top_k {
        data["top_k"] = json!(k);
    }
    if !args.stop.is_empty() {
        data["stop"] = json!(args.stop);
    }
    if let Some(seed) = args.seed {
        data["seed"] = json!(seed);
    }
    Ok(data)
}

/// Submits the generation, prints its text as it comes, then its figures.
pub async fn run(args: &TaskSubmit, data: Value) -> anyhow::Result<ExitCode> {
    let req = crate::task::request(args, "generate", proto::to_json(&data)?);
    let options = ClientOptions {
        token: args.conn.token()?,
        ca_hash: args.conn.ca_hash()?,
        ..ClientOptions::default()
    };
    let started = Instant::now();
    let client = Client::connect(&args.conn.url()?, options).await?;
    let mut streamed =
        client.submit_streamed(req).await.context("the coordinator refused the task")?;
    if let Some(why) = &streamed.accepted.waiting_reason {
        let limit = args
            .queue_timeout
            .map_or_else(|| "the coordinator's queue timeout".to_owned(), |s| format!("{s} s"));
        eprintln!("waiting: {why} (for at most {limit}; --queue-timeout S sets it)");
    }
    let mut out = std::io::stdout().lock();
    let (mut text, mut next_seq, mut gap, mut first) = (String::new(), 0, false, None);
    while let Some(delta) = streamed.next().await {
        first.get_or_insert_with(|| started.elapsed());
        if gap || delta.seq != next_seq {
            gap = true;
            continue;
        }
        next_seq += 1;
        text.push_str(&delta.text);
        out.write_all(delta.text.as_bytes())?;
        out.flush()?;
    }
    match streamed.outcome().await? {
        TaskOutcome::Completed(done) => {
            let result: Value = serde_json::from_str(done.result.get()).unwrap_or(Value::Null);
            let whole = result["text"].as_str().unwrap_or_default();
            // What the stream missed (all of it, for a worker that does not stream).
            let tail = whole.strip_prefix(text.as_str()).unwrap_or_default();
            writeln!(out, "{tail}")?;
            out.flush()?;
            eprintln!("{}", figures(&result, first, done.peer_id.as_deref()));
            Ok(ExitCode::SUCCESS)
        }
        TaskOutcome::Failed(f) => {
            if !text.is_empty() {
                writeln!(out)?;
            }
            eprintln!("error: task {} {}: {}: {}", f.task_id, f.status.as_str(), f.code, f.reason);
            Ok(ExitCode::from(exit::TASK_FAILED))
        }
    }
}

/// One line of figures for a generation's result.
fn figures(r: &Value, first: Option<std::time::Duration>, peer: Option<&str>) -> String {
    let n = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let first =
        first.map_or_else(|| "-".to_owned(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
    format!(
        "[{} tokens ({}), {:.1} tokens/s, prompt {} tokens in {:.0} ms, first token here after {first}, on {} ({})]",
        n("completion_tokens"),
        r["finish_reason"].as_str().unwrap_or("?"),
        n("tokens_per_s"),
        n("prompt_tokens"),
        n("prompt_ms"),
        peer.unwrap_or("?"),
        r["device"].as_str().unwrap_or("?"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> GenerateArgs {
        GenerateArgs {
            prompt: Some("Once".into()),
            chat: None,
            system: None,
            max_tokens: Some(8),
            temperature: Some(0.0),
            top_p: None,
            stop: Vec::new(),
            seed: None,
        }
    }

    #[test]
    fn every_sampling_flag_reaches_the_tasks_input() {
        let mut a = args();
        a.top_p = Some(0.5);
        a.stop = vec!["\n".into(), "END".into()];
        a.seed = Some(7);
        let given = data(&a, Some(3), "tiny").unwrap();
        assert_eq!(
            given,
            json!({"model": "tiny", "prompt": "Once", "max_tokens": 8, "temperature": 0.0,
                   "top_p": 0.5, "top_k": 3, "stop": ["\n", "END"], "seed": 7})
        );
        let plain = data_keys(&data(&args(), None, "tiny").unwrap());
        assert_eq!(plain, ["max_tokens", "model", "prompt", "temperature"]);
    }

    #[test]
    fn out_of_range_sampling_flags_are_refused_before_anything_is_sent() {
        for p in [0.0, 1.5, f64::NAN] {
            let mut a = args();
            a.top_p = Some(p);
            let err = data(&a, None, "tiny").unwrap_err().to_string();
            assert!(err.contains("--top-p"), "{p}: {err}");
        }
    }

    fn data_keys(v: &Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }
}
