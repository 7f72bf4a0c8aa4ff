//! `legacygpu worker …`: a peer.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api_types::{Cleared, Revoked, WorkerControlled};
use exec::Executors;

use serde_json::json;

use crate::args::{WorkerClear, WorkerCmd, WorkerStart, WorkerStop};
use crate::remote::{print_json, table};
use crate::{local, signals};

pub async fn run(cmd: WorkerCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkerCmd::Start(args) => start(*args).await,
        WorkerCmd::Stop(args) => stop(&args),
        WorkerCmd::List { json } => list(json),
        WorkerCmd::Revoke { remote, peer_id } => revoke(&remote, &peer_id).await,
        WorkerCmd::Drain { remote, peer_id } => control(&remote, &peer_id, "drain").await,
        WorkerCmd::Pause { remote, peer_id } => control(&remote, &peer_id, "pause").await,
        WorkerCmd::Resume { remote, peer_id } => control(&remote, &peer_id, "resume").await,
        WorkerCmd::Clear(args) => clear(&args).await,
    }
}

/// `worker drain|pause|resume ID`: through the API (admin).
async fn control(
    remote: &crate::args::Remote,
    peer_id: &str,
    action: &str,
) -> anyhow::Result<ExitCode> {
    let api = crate::remote::api(remote).await?;
    let path = format!("/cluster/workers/{peer_id}/{action}");
    let answer: WorkerControlled = api.post_as(&path, &json!({})).await?;
    if remote.json {
        return print_json(&answer);
    }
    println!("worker {}: {}", answer.worker_id, answer.status);
    Ok(ExitCode::SUCCESS)
}

/// `worker revoke ID`: through the API (admin).
async fn revoke(remote: &crate::args::Remote, peer_id: &str) -> anyhow::Result<ExitCode> {
    let api = crate::remote::api(remote).await?;
    let path = format!("/cluster/workers/{peer_id}/revoke");
    let answer: Revoked = api.post_as(&path, &json!({})).await?;
    if remote.json {
        return print_json(&answer);
    }
    println!("revoked worker {peer_id}: its connection is closed and its credential admits nobody");
    Ok(ExitCode::SUCCESS)
}

/// `worker clear ID`: the API's clear of a quarantine.
async fn clear(args: &WorkerClear) -> anyhow::Result<ExitCode> {
    let api = crate::remote::api(&args.remote).await?;
    let path = format!("/cluster/workers/{}/clear", args.id);
    let answer: Cleared = api.post_as(&path, &json!({})).await?;
    if args.remote.json {
        return print_json(&answer);
    }
    if answer.cleared {
        println!("worker {} is no longer quarantined; it starts over as a new worker", args.id);
    } else {
        println!("worker {} was not quarantined; nothing to clear", args.id);
    }
    Ok(ExitCode::SUCCESS)
}

fn stop(args: &WorkerStop) -> anyhow::Result<ExitCode> {
    let targets: Vec<(String, u32, bool)> = match &args.peer_id {
        Some(id) => {
            let path = local::worker_pid_file(id)?;
            let pid = local::read_pid(&path).with_context(|| {
                format!("no worker `{id}` was started on this machine (no {})", path.display())
            })?;
            vec![(id.clone(), pid, local::alive(pid))]
        }
        None if args.all => local::workers()?,
        None => vec![the_one_running(local::workers()?)?],
    };
    if targets.is_empty() {
        anyhow::bail!("no worker was started on this machine");
    }
    for (id, pid, alive) in targets {
        if alive {
            local::terminate(pid)?;
            println!("stopping worker {id} (pid {pid}); its running tasks may finish first");
        } else {
            // A stale file from a worker that did not exit cleanly.
            let _ = std::fs::remove_file(local::worker_pid_file(&id)?);
            println!("worker {id} (pid {pid}) was not running; removed its pid file");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The worker a bare `worker stop` means: the one running here.
fn the_one_running(workers: Vec<(String, u32, bool)>) -> anyhow::Result<(String, u32, bool)> {
    let mut running: Vec<_> = workers.into_iter().filter(|(_, _, alive)| *alive).collect();
    match running.len() {
        0 => anyhow::bail!("no worker is running on this machine"),
        1 => Ok(running.remove(0)),
        _ => {
            let ids: Vec<&str> = running.iter().map(|(id, _, _)| id.as_str()).collect();
            Err(crate::remote::usage(format!(
                "{} workers run on this machine ({}): name one with --peer-id, or stop them all \
                 with --all",
                ids.len(),
                ids.join(", ")
            )))
        }
    }
}

fn list(as_json: bool) -> anyhow::Result<ExitCode> {
    let workers = local::workers()?;
    if as_json {
        let list: Vec<_> = workers
            .iter()
            .map(|(id, pid, alive)| json!({"peer_id": id, "pid": pid, "running": alive}))
            .collect();
        return print_json(&json!({ "workers": list }));
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|(id, pid, alive)| {
            vec![id.clone(), pid.to_string(), if *alive { "running" } else { "gone" }.to_owned()]
        })
        .collect();
    table(&["peer id", "pid", "state"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn start(args: WorkerStart) -> anyhow::Result<ExitCode> {
    let executors = executors(&args)?;
    let peer_id = match args.peer_id.clone() {
        Some(id) => id,
        None => worker::Machine::detect().hostname.unwrap_or_else(|| "worker".to_owned()),
    };
    let mut config = worker::Config::new(args.conn.url()?, peer_id);
    config.token = args.conn.token()?;
    config.trust =
        tls::Trust::from_options(config.token.as_deref(), args.conn.ca_hash()?.as_deref())?;
    if let Some(token) = &args.join {
        config.join = Some(tls::JoinToken::parse(token)?);
    }
    if config.token.as_deref().is_some_and(tls::JoinToken::looks_like) {
        // A join token given as --token joins as well.
        config.join = Some(tls::JoinToken::parse(config.token.as_deref().unwrap_or_default())?);
        config.token = None;
    }
    config.credential_file = Some(match &args.credential_file {
        Some(path) => path.clone(),
        None => local::state_dir()?.join(format!("credentials/worker-{}.json", config.peer_id)),
    });
    if let Some(slots) = args.slots {
        config.slots = slots;
    }
    config.heartbeat_interval = args.heartbeat_interval.map(Duration::from_secs_f64);
    config.silence_timeout = args.silence_timeout.map(Duration::from_secs_f64);
    config.drain_timeout = Duration::from_secs_f64(args.drain_timeout);
    if let Some(owner) = &args.owner {
        config.extra_capabilities.insert("owner".into(), owner.clone().into());
    }
    let _pid_file = local::PidFile::create(local::worker_pid_file(&config.peer_id)?)?;
    let w = worker::Worker::new(config, executors);
    w.run(signals::shutdown()).await.context("worker stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// The executors this worker offers.
fn executors(args: &WorkerStart) -> anyhow::Result<Executors> {
    let all = crate::executors::build(&args.backends)?;
    let Some(wanted) = &args.task_types else { return Ok(all) };
    let mut chosen = Executors::new();
    for t in wanted {
        let executor = all.get(t).ok_or_else(|| {
            let known: Vec<_> = all.task_types().collect();
            crate::remote::usage(format!(
                "unknown task type `{t}` in --task-types (this worker has: {})",
                known.join(", ")
            ))
        })?;
        chosen.add_arc(executor.clone());
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::the_one_running;

    fn w(id: &str, alive: bool) -> (String, u32, bool) {
        (id.to_owned(), 7, alive)
    }

    #[test]
    fn a_bare_stop_means_the_one_worker_running_here() {
        let one = the_one_running(vec![w("gone", false), w("a", true)]).unwrap();
        assert_eq!(one.0, "a");
        let none = the_one_running(vec![w("gone", false)]).unwrap_err().to_string();
        assert!(none.contains("no worker is running"), "{none}");
        let two = the_one_running(vec![w("a", true), w("b", true)]).unwrap_err().to_string();
        assert!(
            two.contains("(a, b)") && two.contains("--peer-id") && two.contains("--all"),
            "{two}"
        );
    }
}
