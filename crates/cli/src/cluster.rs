//! `legacygpu cluster …`: the coordinator.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use coordinator::{Config, Coordinator, Secret, StoreMode};

use crate::args::{ClusterCmd, ClusterStart};
use crate::signals;

pub async fn run(cmd: ClusterCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCmd::Start(args) => start(args).await,
    }
}

async fn start(args: ClusterStart) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let store = match &config.store {
        StoreMode::Sqlite { data_dir, .. } => format!("sqlite in {}", data_dir.display()),
        StoreMode::Memory => "memory only (--no-store): a restart loses all tasks".to_owned(),
    };
    let coordinator = Coordinator::bind(config).await.context("cannot start the coordinator")?;
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
