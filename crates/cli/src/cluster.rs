//! `legacygpu cluster …`: the coordinator.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use coordinator::{Config, Coordinator, Secret, StoreMode};

use serde_json::{Value, json};

use crate::args::{ClusterCmd, ClusterStart, Remote, WorkersAction, WorkersList};
use crate::remote::{api, cell, print_json, status_colour, table};
use crate::{local, signals};

pub async fn run(cmd: ClusterCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCmd::Start(args) if args.daemon => daemonize(&args),
        ClusterCmd::Start(args) => start(args).await,
        ClusterCmd::Stop(remote) => stop(&remote).await,
        ClusterCmd::Status(remote) => status(&remote).await,
        ClusterCmd::Workers { action: Some(WorkersAction::List(args)), .. }
        | ClusterCmd::Workers { action: None, args } => workers(&args).await,
    }
}

/// `cluster start --daemon`: starts this same command without `--daemon` in
/// the background, its output to the log file, and returns once it is
/// ready (printing its addresses) or has failed (printing its log).
fn daemonize(args: &ClusterStart) -> anyhow::Result<ExitCode> {
    use std::process::{Command, Stdio};
    let log_path = match &args.log_file {
        Some(p) => p.clone(),
        None => local::state_dir()?.join("coordinator.log"),
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    // The same command line without `--daemon` and `--log-file PATH`.
    let mut argv = Vec::new();
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        if arg == "--log-file" {
            given.next();
        } else if arg != "--daemon" && !arg.starts_with("--log-file=") {
            argv.push(arg);
        }
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(&argv)
        .env("LEGACYGPU_DAEMON_PID_FILE", local::coordinator_pid_file()?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the coordinator in the background")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let fresh = text.get(usize::try_from(start).unwrap_or(0)..).unwrap_or_default();
        if fresh.lines().any(|l| l.starts_with("ready")) {
            for line in fresh.lines().filter(|l| l.starts_with("  ") || l.starts_with("legacygpu"))
            {
                println!("{line}");
            }
            println!("running in the background (pid {}); log: {}", child.id(), log_path.display());
            println!("stop it with: legacygpu cluster stop");
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the coordinator exited ({status}) before it was ready:\n{}",
                fresh.trim_end()
            );
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the coordinator was not ready within a minute; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `cluster stop`: the API's shutdown; for a coordinator started here with
/// --daemon and not reachable, SIGTERM by its pid file.
async fn stop(remote: &Remote) -> anyhow::Result<ExitCode> {
    let api = api(remote)?;
    match api.post("/cluster/shutdown", &json!({})).await {
        Ok(_) => {
            println!("the coordinator at {} is shutting down", api.base());
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ client::api::ApiError::Unreachable { .. }) => {
            let pid_file = local::coordinator_pid_file()?;
            match local::read_pid(&pid_file).filter(|p| local::alive(*p)) {
                Some(pid) => {
                    local::terminate(pid)?;
                    println!(
                        "sent SIGTERM to the coordinator (pid {pid}, from {})",
                        pid_file.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn status(remote: &Remote) -> anyhow::Result<ExitCode> {
    let api = api(remote)?;
    let (health, metrics) =
        tokio::try_join!(api.get("/cluster/health"), api.get("/cluster/metrics"))?;
    if remote.json {
        return print_json(&json!({"health": health, "metrics": metrics}));
    }
    let f = |v: &Value, k: &str| cell(&v[k]);
    println!("cluster at {}: {}", api.base(), status_colour(&f(&health, "status")));
    println!(
        "workers: {} total, {} healthy, {} unhealthy",
        f(&health, "total_workers"),
        f(&health, "healthy_workers"),
        f(&health, "unhealthy_workers")
    );
    println!(
        "tasks:   {} pending, {} running, {} completed, {} failed",
        f(&health, "pending_tasks"),
        f(&health, "running_tasks"),
        f(&health, "completed_tasks"),
        f(&health, "failed_tasks")
    );
    println!(
        "rate:    {} tasks/min, success {}, latency {} ms avg, run time {} ms avg",
        f(&metrics, "tasks_per_minute"),
        metrics["success_rate"].as_f64().map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        f(&metrics, "average_latency_ms"),
        f(&metrics, "average_run_time_ms"),
    );
    println!(
        "slots:   {} of {} in use; up {:.0} s",
        f(&metrics, "slots_used"),
        f(&metrics, "slots_total"),
        metrics["uptime_seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(ExitCode::SUCCESS)
}

async fn workers(args: &WorkersList) -> anyhow::Result<ExitCode> {
    let api = api(&args.remote)?;
    let path = match &args.status {
        Some(s) => format!("/cluster/workers?status_filter={s}"),
        None => "/cluster/workers".to_owned(),
    };
    let list = api.get(&path).await?;
    if args.remote.json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list["workers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|w| {
            vec![
                cell(&w["worker_id"]),
                status_colour(&cell(&w["status"])),
                format!("{}/{}", cell(&w["busy_slots"]), cell(&w["slots"])),
                cell(&w["tasks_completed"]),
                cell(&w["tasks_failed"]),
                verdicts(&w["reputation"]),
                format!("{:.1}s", w["last_heartbeat_seconds_ago"].as_f64().unwrap_or(0.0)),
                w["task_types"].as_array().map_or("all".to_owned(), |_| cell(&w["task_types"])),
                cell(&w["address"]),
            ]
        })
        .collect();
    table(
        &[
            "worker",
            "status",
            "busy",
            "done",
            "failed",
            "valid/invalid",
            "heartbeat",
            "task types",
            "address",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// A worker's verified results, `valid/invalid`, or `-` before any.
fn verdicts(reputation: &Value) -> String {
    if reputation.is_null() {
        return "-".to_owned();
    }
    format!("{}/{}", cell(&reputation["valid"]), cell(&reputation["invalid"]))
}

async fn start(args: ClusterStart) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let store = match &config.store {
        StoreMode::Sqlite { data_dir, .. } => format!("sqlite in {}", data_dir.display()),
        StoreMode::Memory => "memory only (--no-store): a restart loses all tasks".to_owned(),
    };
    let coordinator = Coordinator::bind(config).await.context("cannot start the coordinator")?;
    // Started by `--daemon`: a pid file for `cluster stop`.
    let _pid_file = match std::env::var_os("LEGACYGPU_DAEMON_PID_FILE") {
        Some(path) => Some(local::PidFile::create(path.into())?),
        None => None,
    };
    // Tests and scripts read the bound addresses from these lines.
    let mut out = std::io::stdout().lock();
    writeln!(out, "legacygpu coordinator {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "  websocket: ws://{}", coordinator.ws_addr())?;
    if let Some(http) = coordinator.http_addr() {
        writeln!(out, "  http: http://{http}  (API docs: http://{http}/docs)")?;
    }
    writeln!(out, "  store: {store} ({} tasks recovered)", coordinator.recovered_tasks())?;
    writeln!(out, "ready (Ctrl-C to stop)")?;
    out.flush()?;
    drop(out);
    coordinator.run(signals::shutdown()).await?;
    Ok(ExitCode::SUCCESS)
}

fn config(args: &ClusterStart) -> anyhow::Result<Config> {
    let sched = sched::Config {
        heartbeat_timeout: Duration::from_secs_f64(args.heartbeat_timeout),
        default_max_attempts: args.max_attempts,
        max_queued: args.max_queued,
        result_ttl: Duration::from_secs_f64(args.result_ttl),
        cancel_grace: Duration::from_secs_f64(args.heartbeat_timeout),
        strategy: args.strategy,
        verify: sched::VerifyConfig {
            default_policy: args.verify.filter(sched::verify::Policy::verifies),
            canary_rate: args.canary_rate,
            quarantine_after: args.quarantine_after,
            max_extra_replicas: args.max_extra_replicas,
            ..sched::VerifyConfig::default()
        },
        ..sched::Config::default()
    };
    let store = if args.no_store {
        StoreMode::Memory
    } else {
        let data_dir = match &args.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()
                .context("no --data-dir given and no home directory to put one in")?,
        };
        let sync =
            if args.sync == "normal" { coordinator::Sync::Normal } else { coordinator::Sync::Full };
        StoreMode::Sqlite { data_dir, sync }
    };
    let mut api_keys = Vec::new();
    if let Some(keys) = &args.api_keys {
        api_keys.extend(coordinator::parse_api_keys(keys).map_err(anyhow::Error::msg)?);
    }
    if let Some(file) = &args.api_keys_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the API keys file {}", file.display()))?;
        let keys = coordinator::parse_api_keys(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        api_keys.extend(keys);
    }
    Ok(Config {
        ws_addr: args.bind,
        http_addr: (!args.no_http).then_some(args.http),
        api_keys,
        stats_interval: Duration::from_secs_f64(args.stats_interval),
        token: args.token.clone().filter(|t| !t.is_empty()).map(Secret::new),
        insecure: args.insecure,
        max_frame_bytes: args.max_frame_bytes,
        heartbeat_interval: Duration::from_secs_f64(args.heartbeat_interval),
        sched,
        store,
        task_needs: crate::executors::needs(),
        ..Config::default()
    })
}

/// `$XDG_DATA_HOME/legacygpu`, or `~/.local/share/legacygpu`.
fn default_data_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".local/share"),
    };
    Some(base.join("legacygpu"))
}
