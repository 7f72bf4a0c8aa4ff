//! `legacygpu task …`: a client.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use client::{Client, ClientOptions, TaskOutcome};
use proto::{Json, TaskRequest};

use crate::args::{TaskCmd, TaskSubmit};

pub async fn run(cmd: TaskCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TaskCmd::Submit(args) => submit(args).await,
    }
}

async fn submit(args: TaskSubmit) -> anyhow::Result<ExitCode> {
    let (task_type, data) = match (&args.model, &args.input) {
        (Some(model), Some(input)) => {
            ("inference".to_owned(), inference_data(model, input, args.top_k)?)
        }
        _ => {
            let t = args.task_type.clone().context("--type is required")?;
            (t, read_data(&args.data)?)
        }
    };
    let mut req = TaskRequest::new(task_type, data);
    req.task_id = args.task_id.clone();
    req.priority = args.priority;
    req.timeout_s = args.timeout;
    let options = ClientOptions {
        token: args.conn.token.clone(),
        reconnect: args.wait,
        ..ClientOptions::default()
    };
    let client = Client::connect(&args.conn.coordinator, options).await?;
    let submitted = client.submit(req).await.context("the coordinator refused the task")?;
    let accepted = &submitted.accepted;
    eprintln!("accepted {} (id {}, {})", accepted.task_id, accepted.id, accepted.status.as_str());
    if let Some(why) = &accepted.waiting_reason {
        eprintln!("waiting: {why}");
    }
    if !args.wait {
        println!("{}", accepted.id);
        return Ok(ExitCode::SUCCESS);
    }
    match submitted.outcome().await? {
        TaskOutcome::Completed(done) => {
            println!("{}", pretty(&done.result));
            Ok(ExitCode::SUCCESS)
        }
        TaskOutcome::Failed(failed) => {
            eprintln!(
                "error: task {} {}: {}: {}",
                failed.task_id,
                failed.status.as_str(),
                failed.code,
                failed.reason
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// JSON text, or `@FILE`.
fn read_data(arg: &str) -> anyhow::Result<Json> {
    let text = match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
        }
        None => arg.to_owned(),
    };
    proto::json(text.trim()).context("--data is not valid JSON")
}

fn inference_data(model: &str, input: &Path, top_k: u32) -> anyhow::Result<Json> {
    use base64::Engine;
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    if bytes.is_empty() {
        bail!("{} is empty", input.display());
    }
    let image = base64::engine::general_purpose::STANDARD.encode(bytes);
    let data = serde_json::json!({ "model": model, "image": image, "top_k": top_k });
    Ok(proto::to_json(&data)?)
}

fn pretty(json: &Json) -> String {
    serde_json::from_str::<serde_json::Value>(json.get())
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.get().to_owned())
}
