//! `legacygpu task …`: a client.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use api_types::{Pending, Retried, TaskList, TaskResultView, TaskView};
use client::{Client, ClientOptions, TaskOutcome};
use proto::{Json, TaskRequest};

use serde_json::{Value, json};

use crate::args::{TaskCmd, TaskListArgs, TaskRef, TaskResultArgs, TaskSubmit};
use crate::remote::{api, exit, print_json, status_colour, table, usage};

pub async fn run(cmd: TaskCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TaskCmd::Submit(args) if args.batch.is_some() => batch(*args).await,
        TaskCmd::Submit(args) => submit(*args).await,
        TaskCmd::Status(args) => status(&args).await,
        TaskCmd::Result(args) => result(&args).await,
        TaskCmd::List(args) => list(&args).await,
        TaskCmd::Cancel(args) => cancel(&args).await,
        TaskCmd::Retry(args) => retry(&args).await,
    }
}

async fn status(args: &TaskRef) -> anyhow::Result<ExitCode> {
    let path = format!("/cluster/tasks/{}/status", args.id);
    let t: TaskView = api(&args.remote).await?.get_as(&path).await?;
    if args.remote.json {
        return print_json(&t);
    }
    println!("task {} ({}): {}", t.task_id, t.task_type, status_colour(t.status.as_str()));
    println!("  your id:  {}", t.client_task_id);
    println!("  attempt:  {} ({} failed)", t.attempt, t.failures);
    println!("  worker:   {}", t.worker_id.as_deref().unwrap_or("-"));
    if let Some(reason) = &t.waiting_reason {
        println!("  waiting:  {reason}");
    }
    if let Some(ahead) = t.queue_position {
        println!("  in queue: {ahead} ahead");
    }
    if let Some(e) = &t.last_error {
        println!("  error:    {}: {}", e.code, e.message);
    }
    Ok(ExitCode::SUCCESS)
}

/// The longest wait one result request may ask of the coordinator.
const ONE_WAIT_S: f64 = 300.0;

async fn result(args: &TaskResultArgs) -> anyhow::Result<ExitCode> {
    let api = api(&args.task.remote).await?;
    // The coordinator waits at most 300 s a request: ask again until ours.
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(args.timeout);
    let answer = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now()).as_secs_f64();
        let wait = left.min(ONE_WAIT_S);
        let path = format!("/cluster/tasks/{}/result?timeout={wait}", args.task.id);
        let answer = api.get_with_status(&path, Some(Duration::from_secs_f64(wait))).await;
        match answer {
            Ok((202, _)) if left > wait => continue,
            answer => break answer,
        }
    };
    match answer {
        Ok((202, pending)) => {
            let pending: Pending = serde_json::from_value(pending)?;
            if args.task.remote.json {
                print_json(&pending)?;
            }
            eprintln!("error: task {} is not finished yet ({})", args.task.id, pending.status);
            Ok(ExitCode::from(exit::NOT_FINISHED))
        }
        Ok((_, done)) => {
            let done: TaskResultView = serde_json::from_value(done)?;
            if args.task.remote.json {
                return print_json(&done);
            }
            println!("{}", serde_json::to_string_pretty(&done.result)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(client::api::ApiError::Status { status: 422, code, detail }) => {
            if args.task.remote.json {
                print_json(
                    &json!({"task_id": args.task.id, "error_code": code, "detail": detail}),
                )?;
            }
            eprintln!("error: task {}: {code}: {detail}", args.task.id);
            Ok(ExitCode::from(exit::TASK_FAILED))
        }
        Err(e) => Err(e.into()),
    }
}

async fn list(args: &TaskListArgs) -> anyhow::Result<ExitCode> {
    let mut query = format!("limit={}", args.limit);
    if let Some(s) = &args.status {
        query += &format!("&status={s}");
    }
    if let Some(t) = &args.task_type {
        query += &format!("&task_type={}", urlencode(t));
    }
    let list: TaskList =
        api(&args.remote).await?.get_as(&format!("/cluster/tasks?{query}")).await?;
    if args.remote.json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.task_id.clone(),
                t.client_task_id.clone(),
                t.task_type.clone(),
                status_colour(t.status.as_str()),
                t.attempt.to_string(),
                t.worker_id.clone().unwrap_or_else(|| "-".to_owned()),
                t.owner.clone(),
            ]
        })
        .collect();
    table(&["id", "your id", "type", "status", "attempt", "worker", "owner"], &rows);
    eprintln!("{} of {} tasks", list.tasks.len(), list.total);
    Ok(ExitCode::SUCCESS)
}

async fn cancel(args: &TaskRef) -> anyhow::Result<ExitCode> {
    let answer = api(&args.remote).await?.delete(&format!("/cluster/tasks/{}", args.id)).await?;
    if args.remote.json {
        return print_json(&answer);
    }
    println!("cancelled {}", args.id);
    Ok(ExitCode::SUCCESS)
}

async fn retry(args: &TaskRef) -> anyhow::Result<ExitCode> {
    let path = format!("/cluster/tasks/{}/retry", args.id);
    let answer: Retried = api(&args.remote).await?.post_as(&path, &serde_json::json!({})).await?;
    if args.remote.json {
        return print_json(&answer);
    }
    println!("retrying {}: {} again under the same id", answer.task_id, answer.status);
    Ok(ExitCode::SUCCESS)
}

/// Enough escaping for a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `task submit --batch FILE`: every task through one connection, a bounded
/// number in flight, a progress bar, and a summary.
async fn batch(args: TaskSubmit) -> anyhow::Result<ExitCode> {
    use futures_util::StreamExt;
    let path = args.batch.clone().context("--batch FILE")?;
    let requests = read_batch(&path)?;
    let options = ClientOptions {
        token: args.conn.token()?,
        ca_hash: args.conn.ca_hash()?,
        ..ClientOptions::default()
    };
    let client = Client::connect(&args.conn.url()?, options).await?;
    let bar = indicatif::ProgressBar::new(requests.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tasks  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let outcomes = futures_util::stream::iter(requests)
        .map(|req| {
            let client = client.clone();
            async move { client.run(req).await }
        })
        .buffer_unordered(args.in_flight.max(1));
    tokio::pin!(outcomes);
    let (mut completed, mut failed, mut refused, mut errors) = (0u64, 0u64, 0u64, Vec::new());
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            Ok(TaskOutcome::Completed(_)) => completed += 1,
            Ok(TaskOutcome::Failed(f)) => {
                failed += 1;
                if errors.len() < 10 {
                    errors.push(format!(
                        "{}: {} {}: {}",
                        f.task_id,
                        f.status.as_str(),
                        f.code,
                        f.reason
                    ));
                }
            }
            Err(e) => {
                failed += 1;
                refused += 1;
                if errors.len() < 10 {
                    errors.push(e.to_string());
                }
            }
        }
        bar.inc(1);
        if failed > 0 {
            bar.set_message(format!("{failed} failed"));
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let total = completed + failed;
    if args.json {
        print_json(&json!({
            "tasks": total, "completed": completed, "failed": failed,
            "seconds": seconds, "tasks_per_second": total as f64 / seconds.max(1e-9),
            "errors": errors,
        }))?;
    } else {
        println!(
            "{total} tasks: {completed} completed, {failed} failed in {seconds:.2} s ({:.0} tasks/s)",
            total as f64 / seconds.max(1e-9)
        );
        for e in &errors {
            eprintln!("  {e}");
        }
    }
    // A submission refused (or the connection lost) is an error (1); a task
    // that ended without a result is 3, as for one task.
    Ok(match (refused, failed) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(exit::TASK_FAILED),
        _ => ExitCode::FAILURE,
    })
}

/// JSON lines, or one JSON array, of `{task_type, data, priority, timeout_s,
/// task_id, max_attempts, requirements}`.
fn read_batch(path: &Path) -> anyhow::Result<Vec<TaskRequest>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let items: Vec<(usize, Value)> = if text.trim_start().starts_with('[') {
        let all: Vec<Value> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array of tasks", path.display()))?;
        all.into_iter().enumerate().map(|(i, v)| (i + 1, v)).collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map(|v| (i + 1, v))
                    .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?
    };
    if items.is_empty() {
        bail!("{} holds no tasks", path.display());
    }
    items
        .into_iter()
        .map(|(line, mut v)| {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("msg_type".into(), json!("task_request"));
            }
            match proto::ToCoordinator::decode(&v.to_string()) {
                Ok(proto::ToCoordinator::TaskRequest(req)) => Ok(req),
                Ok(_) => bail!("{}:{line}: not a task", path.display()),
                Err(e) => bail!("{}:{line}: {e}", path.display()),
            }
        })
        .collect()
}

/// The task request `task submit`'s flags make around `data` (a generation
/// too: `--verify` applies to it as to any task).
pub(crate) fn request(
    args: &TaskSubmit,
    task_type: impl Into<String>,
    data: proto::Json,
) -> TaskRequest {
    let mut req = TaskRequest::new(task_type, data);
    req.task_id = args.task_id.clone();
    req.priority = args.priority;
    req.timeout_s = args.timeout;
    req.queue_timeout_s = args.queue_timeout;
    req.verify = args.verify.map(|p| proto::VerifyPolicy {
        replicas: p.replicas,
        quorum: Some(p.quorum),
        adaptive: p.adaptive,
    });
    req
}

async fn submit(args: TaskSubmit) -> anyhow::Result<ExitCode> {
    let generation = args.generation.prompt.is_some() || args.generation.chat.is_some();
    let (task_type, data) = match (&args.model, &args.input) {
        (Some(model), Some(input)) => {
            ("inference".to_owned(), inference_data(model, input, args.top_k.unwrap_or(5))?)
        }
        (Some(model), None) if generation => {
            if args.task_type.as_deref().is_some_and(|t| t != "generate") {
                return Err(usage("--prompt and --chat make a generate task (--type generate)"));
            }
            let data = crate::generate::data(&args.generation, args.top_k, model)?;
            return crate::generate::run(&args, data).await;
        }
        (Some(_), None) => {
            return Err(usage(
                "--model needs --input IMAGE (inference) or --prompt/--chat (generate)",
            ));
        }
        _ => {
            let t = args.task_type.clone().context("--type is required")?;
            (t, read_data(&args.data)?)
        }
    };
    let req = request(&args, task_type, data);
    let options = ClientOptions {
        token: args.conn.token()?,
        ca_hash: args.conn.ca_hash()?,
        reconnect: args.wait,
        ..ClientOptions::default()
    };
    let client = Client::connect(&args.conn.url()?, options).await?;
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
            Ok(ExitCode::from(exit::TASK_FAILED))
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
