//! `legacygpu cluster …`: the coordinator.

use std::io::Write;
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
    let config = config(&args);
    let coordinator = Coordinator::bind(config).await.context("cannot start the coordinator")?;
    // Tests and scripts read the bound addresses from these lines.
    let mut out = std::io::stdout().lock();
    writeln!(out, "legacygpu coordinator {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "  websocket: ws://{}", coordinator.ws_addr())?;
    writeln!(out, "ready (Ctrl-C to stop)")?;
    out.flush()?;
    drop(out);
    coordinator.run(signals::shutdown()).await;
    Ok(ExitCode::SUCCESS)
}

fn config(args: &ClusterStart) -> Config {
    let sched = sched::Config {
        heartbeat_timeout: Duration::from_secs_f64(args.heartbeat_timeout),
        default_max_attempts: args.max_attempts,
        max_queued: args.max_queued,
        result_ttl: Duration::from_secs_f64(args.result_ttl),
        cancel_grace: Duration::from_secs_f64(args.heartbeat_timeout),
        ..sched::Config::default()
    };
    Config {
        ws_addr: args.bind,
        token: args.token.clone().filter(|t| !t.is_empty()).map(Secret::new),
        insecure: args.insecure,
        max_frame_bytes: args.max_frame_bytes,
        heartbeat_interval: Duration::from_secs_f64(args.heartbeat_interval),
        sched,
        store: StoreMode::Memory,
        ..Config::default()
    }
}
