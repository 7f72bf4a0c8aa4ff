//! `legacygpu worker …`: a peer.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use exec::Executors;

use crate::args::{WorkerCmd, WorkerStart};
use crate::signals;

pub async fn run(cmd: WorkerCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkerCmd::Start(args) => start(args).await,
    }
}

async fn start(args: WorkerStart) -> anyhow::Result<ExitCode> {
    let executors = executors(&args)?;
    let peer_id = match args.peer_id.clone() {
        Some(id) => id,
        None => worker::Machine::detect().hostname.unwrap_or_else(|| "worker".to_owned()),
    };
    let mut config = worker::Config::new(args.conn.coordinator.clone(), peer_id);
    config.token = args.conn.token.clone();
    if let Some(slots) = args.slots {
        config.slots = slots;
    }
    config.heartbeat_interval = args.heartbeat_interval.map(Duration::from_secs_f64);
    config.drain_timeout = Duration::from_secs_f64(args.drain_timeout);
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
        let executor = all.get(t).with_context(|| {
            let known: Vec<_> = all.task_types().collect();
            format!("unknown task type `{t}` (this worker has: {})", known.join(", "))
        })?;
        chosen.add_arc(executor.clone());
    }
    Ok(chosen)
}
