//! `legacygpu cluster …`: the coordinator.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api_types::{ClusterMetrics, CoordinatorInfo, Health, ReputationView, Tokens, WorkerList};
use coordinator::{Config, Coordinator, Secret, StoreMode};

use serde_json::json;

use crate::args::{
    ClusterCmd, ClusterStart, EdgeArgs, Remote, TokenCmd, WorkersAction, WorkersList,
};
use crate::remote::{api, print_json, status_colour, table, usage};
use crate::{local, signals};

pub async fn run(cmd: ClusterCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCmd::Start(args) if args.daemon => daemonize(&args),
        ClusterCmd::Start(args) => start(*args).await,
        ClusterCmd::Stop(remote) => stop(&remote).await,
        ClusterCmd::Status(remote) => status(&remote).await,
        ClusterCmd::Workers { action: Some(WorkersAction::List(args)), .. }
        | ClusterCmd::Workers { action: None, args } => workers(&args).await,
        ClusterCmd::Token(cmd) => token(cmd).await,
    }
}

/// `cluster token show|rotate`.
async fn token(cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    let (remote, answer): (_, Tokens) = match &cmd {
        TokenCmd::Show(remote) => (remote, api(remote).await?.get_as("/cluster/tokens").await?),
        TokenCmd::Rotate { remote, kind } => {
            let body = json!({ "kind": kind });
            (remote, api(remote).await?.post_as("/cluster/tokens/rotate", &body).await?)
        }
    };
    if remote.json {
        return print_json(&answer);
    }
    println!("worker join token: {}", answer.worker_token);
    println!("client token:      {}", answer.client_token);
    println!("CA sha256:         {}", answer.ca_sha256);
    Ok(ExitCode::SUCCESS)
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
    let api = api(remote).await?;
    match api.post("/cluster/shutdown", &json!({})).await {
        Ok(answer) => {
            if remote.json {
                return print_json(&answer);
            }
            println!("the coordinator at {} is shutting down", api.base());
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ client::api::ApiError::Unreachable { .. }) => {
            let pid_file = local::coordinator_pid_file()?;
            match local::read_pid(&pid_file).filter(|p| local::alive(*p)) {
                Some(pid) => {
                    local::terminate(pid)?;
                    if remote.json {
                        return print_json(&json!({"signalled_pid": pid}));
                    }
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

/// `cluster status`: with several `--api-url`s (the coordinators of one
/// PostgreSQL store), each one's role first, then the leader's figures.
async fn status(remote: &Remote) -> anyhow::Result<ExitCode> {
    let apis = crate::remote::apis(remote)?;
    let mut answers = Vec::new();
    for api in &apis {
        answers.push((api, api.get_as::<Health>("/cluster/health").await));
    }
    let leader = answers
        .iter()
        .position(|(_, h)| h.as_ref().is_ok_and(|h| h.role == "leader") || apis.len() == 1);
    let coordinators: Vec<Answered> = answers
        .iter()
        .map(|(api, h)| match h {
            Ok(h) => Answered::Up {
                url: api.base().to_owned(),
                role: h.role.clone(),
                epoch: h.epoch,
                lease_age_s: h.lease_age_s,
                leader: h.leader.clone(),
            },
            Err(e) => Answered::Down { url: api.base().to_owned(), error: e.to_string() },
        })
        .collect();
    let Some(i) = leader else {
        if remote.json {
            return print_json(&json!({"coordinators": coordinators}));
        }
        print_coordinators(&coordinators);
        anyhow::bail!("none of the coordinators leads");
    };
    let api = answers[i].0;
    let health = match &answers[i].1 {
        Ok(h) => h.clone(),
        Err(e) => anyhow::bail!("{e}"),
    };
    let m: ClusterMetrics = api.get_as("/cluster/metrics").await?;
    if remote.json {
        return print_json(&json!({"health": health, "metrics": m, "coordinators": coordinators}));
    }
    if apis.len() > 1 || health.epoch.is_some() {
        print_coordinators(&coordinators);
    }
    if !health.coordinators.is_empty() {
        print_registry(&health.coordinators);
    }
    let h = &health;
    println!("cluster at {}: {}", api.base(), status_colour(&h.status));
    println!(
        "workers: {} total, {} healthy, {} unhealthy",
        h.total_workers, h.healthy_workers, h.unhealthy_workers
    );
    println!(
        "tasks:   {} pending, {} running, {} completed, {} failed",
        h.pending_tasks, h.running_tasks, h.completed_tasks, h.failed_tasks
    );
    println!(
        "rate:    {} tasks/min, success {}, latency {} ms avg, run time {} ms avg",
        m.tasks_per_minute,
        m.success_rate.map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        m.average_latency_ms.map_or("-".to_owned(), |ms| format!("{ms:.2}")),
        m.average_run_time_ms.map_or("-".to_owned(), |ms| format!("{ms:.2}")),
    );
    println!("slots:   {} of {} in use; up {:.0} s", m.slots_used, m.slots_total, m.uptime_seconds);
    Ok(ExitCode::SUCCESS)
}

/// What one coordinator answered `cluster status` (its JSON and its row).
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
enum Answered {
    Up {
        url: String,
        role: String,
        epoch: Option<u64>,
        lease_age_s: Option<f64>,
        leader: Option<String>,
    },
    Down {
        url: String,
        error: String,
    },
}

/// One line per coordinator: role, epoch, lease age, leader.
fn print_coordinators(coordinators: &[Answered]) {
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = coordinators
        .iter()
        .map(|c| match c {
            Answered::Up { url, role, epoch, lease_age_s, leader } => vec![
                url.clone(),
                role.clone(),
                epoch.map_or_else(dash, |e| e.to_string()),
                lease_age_s.map_or_else(dash, |a| format!("{a:.1}s")),
                leader.clone().unwrap_or_else(dash),
            ],
            Answered::Down { url, error } => {
                vec![url.clone(), format!("unreachable: {error}"), dash(), dash(), dash()]
            }
        })
        .collect();
    table(&["coordinator", "role", "epoch", "lease age", "leader"], &rows);
}

/// Every coordinator on the database, as the one asked knows them.
fn print_registry(coordinators: &[CoordinatorInfo]) {
    println!("coordinators on the store:");
    let rows: Vec<Vec<String>> = coordinators
        .iter()
        .map(|c| {
            let name = if c.this { format!("{} (answered)", c.holder) } else { c.holder.clone() };
            vec![
                name,
                c.role.clone(),
                c.epoch.to_string(),
                c.ws.clone(),
                c.http.clone().unwrap_or_else(|| "-".into()),
                format!("{:.1}s ago", c.seen_seconds_ago),
            ]
        })
        .collect();
    table(&["coordinator", "role", "epoch", "websocket", "http", "last report"], &rows);
}

async fn workers(args: &WorkersList) -> anyhow::Result<ExitCode> {
    let api = api(&args.remote).await?;
    let path = match &args.status {
        Some(s) => format!("/cluster/workers?status_filter={s}"),
        None => "/cluster/workers".to_owned(),
    };
    let list: WorkerList = api.get_as(&path).await?;
    if args.remote.json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                status_colour(w.status.as_str()),
                format!("{}/{}", w.busy_slots, w.slots),
                w.tasks_completed.to_string(),
                w.tasks_failed.to_string(),
                verdicts(w.reputation.as_ref()),
                format!("{:.1}s", w.last_heartbeat_seconds_ago),
                w.task_types.as_ref().map_or("all".to_owned(), |t| t.join(",")),
                w.address.clone().unwrap_or_else(|| "-".to_owned()),
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
    if !list.quarantined_away.is_empty() {
        println!("\nquarantined, not connected (`legacygpu worker clear ID` lifts it):");
        let rows: Vec<Vec<String>> = list
            .quarantined_away
            .iter()
            .map(|w| {
                let r = &w.reputation;
                vec![w.worker_id.clone(), verdicts(Some(r)), r.strikes.to_string()]
            })
            .collect();
        table(&["worker", "valid/invalid", "strikes"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// A worker's verified results, `valid/invalid`, or `-` before any.
fn verdicts(reputation: Option<&ReputationView>) -> String {
    reputation.map_or("-".to_owned(), |r| format!("{}/{}", r.valid, r.invalid))
}

async fn start(args: ClusterStart) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let store = match &config.store {
        StoreMode::Sqlite { data_dir, .. } => format!("sqlite in {}", data_dir.display()),
        StoreMode::Postgres { target, .. } => format!("postgres at {target}"),
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
    if coordinator.is_standby() {
        writeln!(out, "  store: {store} (standby: leads when the lease is free)")?;
    } else {
        writeln!(out, "  store: {store} ({} tasks recovered)", coordinator.recovered_tasks())?;
    }
    banner_tls(&mut out, &coordinator)?;
    writeln!(out, "ready (Ctrl-C to stop)")?;
    out.flush()?;
    drop(out);
    reload_on_hangup(coordinator.tls_handle());
    match coordinator.run(signals::shutdown()).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // Fail-stop: exit now, nothing drained, nothing more written; the
        // supervisor restarts it as a standby (docs/SCALING.md).
        Err(e) if e.is_deposed() => {
            tracing::error!("{e}; exiting so that the supervisor restarts this coordinator");
            std::process::exit(EXIT_DEPOSED)
        }
        Err(e) => Err(e.into()),
    }
}

/// The exit code of a leader that lost the lease (EX_TEMPFAIL: restart me).
pub const EXIT_DEPOSED: i32 = 75;

/// A `--store` argument (a `postgres://` URL or a directory).
fn store_target(arg: &str) -> coordinator::Target {
    coordinator::Target::parse(arg)
}

/// The TLS lines of the banner: the CA pin and ready-to-paste join lines.
fn banner_tls(out: &mut impl Write, coordinator: &Coordinator) -> anyhow::Result<()> {
    let names = coordinator.tls_names();
    let host = names
        .iter()
        .find(|n| !["localhost", "127.0.0.1", "::1"].contains(&n.as_str()))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let port = coordinator.ws_addr().port();
    let pin = coordinator.ca_pin();
    writeln!(out, "  tls: wss:// and https:// on the same ports; CA sha256 {pin}")?;
    if !names.is_empty() {
        writeln!(out, "  certificate names: {}  (more with --tls-san)", names.join(", "))?;
    }
    // A daemon's stdout is its log file, a systemd service's the journal
    // (`JOURNAL_STREAM` is set), and secrets never go to logs.
    let logged = ["LEGACYGPU_DAEMON_PID_FILE", "JOURNAL_STREAM"]
        .iter()
        .any(|var| std::env::var_os(var).is_some());
    let (worker, client) = if logged {
        let hidden = "\"$(legacygpu cluster token show --json | jq -r .worker_token)\"".to_owned();
        (hidden, "see `legacygpu cluster token show`".to_owned())
    } else {
        (
            coordinator.join_token(coordinator::TokenKind::Worker),
            coordinator.join_token(coordinator::TokenKind::Client),
        )
    };
    writeln!(
        out,
        "  join a worker: legacygpu worker start --join {worker} --coordinator wss://{host}:{port}"
    )?;
    writeln!(out, "  client token: {client}")?;
    Ok(())
}

/// SIGHUP reloads the certificates (for renewed ACME certificates).
fn reload_on_hangup(tls: coordinator::TlsHandle) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(pin) => tracing::info!("reloaded the TLS certificates (CA sha256 {pin})"),
                Err(e) => {
                    tracing::warn!("cannot reload the TLS certificates, keeping the old: {e}")
                }
            }
        }
    });
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
    let target = args.store.as_deref().map(store_target);
    let store = if args.no_store {
        StoreMode::Memory
    } else if let Some(target @ coordinator::Target::Postgres(_)) = target {
        let lease = coordinator::LeaseConfig {
            advertise_ws: args.advertise.clone(),
            advertise_http: args.advertise_http.clone(),
            ttl: Duration::from_secs_f64(args.lease_ttl),
            ..coordinator::LeaseConfig::default()
        };
        if let Some(url) = &lease.advertise_ws {
            proto::Endpoints::parse(url).map_err(|e| anyhow::anyhow!("--advertise: {e}"))?;
        }
        StoreMode::Postgres { target, lease, data_dir: args.data_dir.clone() }
    } else {
        let data_dir = match (&args.data_dir, target) {
            (Some(_), Some(_)) => {
                return Err(usage("give the data directory once: --store or --data-dir"));
            }
            (None, Some(coordinator::Target::Sqlite(dir))) => dir,
            (Some(dir), _) => dir.clone(),
            (None, _) => default_data_dir()
                .context("no --data-dir given and no home directory to put one in")?,
        };
        let sync =
            if args.sync == "full" { coordinator::Sync::Full } else { coordinator::Sync::Normal };
        StoreMode::Sqlite { data_dir, sync }
    };
    let on_postgres = matches!(store, StoreMode::Postgres { .. });
    if !on_postgres && (args.advertise.is_some() || args.advertise_http.is_some()) {
        return Err(usage("--advertise is for coordinators on a PostgreSQL --store"));
    }
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
    let mut tls_names = args.tls.tls_san.clone();
    if let Some(host) = host_name() {
        tls_names.push(host);
    }
    if !args.bind.ip().is_unspecified() {
        tls_names.push(args.bind.ip().to_string());
    }
    let tls_cert = match (&args.tls.tls_cert, &args.tls.tls_key) {
        (Some(cert), Some(key)) => {
            Some(coordinator::CertSource::Files { cert: cert.clone(), key: key.clone() })
        }
        _ => None,
    };
    Ok(Config {
        tls_cert,
        tls_names,
        insecure_plaintext: args.tls.insecure_plaintext,
        not_local: args.tls.not_local.clone(),
        edge: edge_limits(&args.edge),
        max_connections: args.edge.max_connections,
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

fn edge_limits(e: &EdgeArgs) -> coordinator::EdgeLimits {
    let secs = Duration::from_secs_f64;
    coordinator::EdgeLimits {
        handshake_timeout: secs(e.handshake_timeout),
        registration_timeout: secs(e.registration_timeout),
        idle_timeout: secs(e.idle_timeout),
        http_header_timeout: secs(e.http_header_timeout),
        http_idle_timeout: secs(e.http_idle_timeout),
        http_body_timeout: secs(e.http_body_timeout),
        max_connections_per_ip: e.max_connections_per_ip,
        new_connections_per_ip_per_s: e.new_connections_per_ip,
        max_partial_frame_bytes: e.max_partial_frame_bytes,
        max_queued_bytes: e.max_queued_bytes,
        max_queued_bytes_per_client: e.max_queued_bytes_per_client,
        max_queued_tasks_per_client: e.max_queued_tasks_per_client,
        max_submissions_per_s: e.max_submissions_per_s,
        ..coordinator::EdgeLimits::default()
    }
}

/// This machine's name, for the generated certificate.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// `$XDG_DATA_HOME/legacygpu`, or `~/.local/share/legacygpu`.
fn default_data_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".local/share"),
    };
    Some(base.join("legacygpu"))
}
