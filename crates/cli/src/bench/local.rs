//! The coordinator under test as a child process of the bench, and what it
//! costs (CPU time and memory, read from Linux's /proc).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::args::Bench;

pub struct Local {
    child: Child,
    pub ws_url: String,
    /// The CA pin its banner printed, for `--tls`.
    pub ca_hash: Option<String>,
    _data: tempfile::TempDir,
}

/// A coordinator's resource use.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    /// CPU time (user + system) over the measured span, as a share of one core.
    pub cpu_percent: f64,
    pub rss_mb: f64,
    /// The highest RSS since it started.
    pub peak_rss_mb: f64,
    #[serde(skip)]
    pub cpu_seconds: f64,
    #[serde(skip)]
    pub at: Option<Instant>,
}

impl Local {
    pub fn start(args: &Bench) -> anyhow::Result<Local> {
        let data = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["cluster", "start", "--bind", "127.0.0.1:0", "--no-http", "--log-level", "warn"]);
        cmd.args(["--max-queued", "10000000", "--heartbeat-interval"]);
        cmd.arg(args.heartbeat_interval.to_string());
        cmd.args(["--heartbeat-timeout"]).arg((args.heartbeat_interval * 3.0).to_string());
        if args.no_store {
            cmd.arg("--no-store");
        } else {
            cmd.arg("--data-dir").arg(data.path()).args(["--sync", &args.sync]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stdin(Stdio::null()).spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (mut ws_url, mut ca_hash) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(url) = line.trim().strip_prefix("websocket: ") {
                ws_url = Some(url.to_owned());
            }
            if let Some((_, pin)) = line.split_once("CA sha256 ") {
                ca_hash = Some(pin.trim().to_owned());
            }
            if line.starts_with("ready") {
                break;
            }
        }
        let Some(ws_url) = ws_url else {
            let _ = child.kill();
            bail!("the coordinator exited before it was ready");
        };
        Ok(Local { child, ws_url, ca_hash, _data: data })
    }

    /// Its use now; CPU share since `since` when given.
    pub fn usage(&self) -> Option<Usage> {
        usage_of(self.child.id())
    }

    /// CPU share between two readings.
    pub fn between(before: Usage, after: Usage) -> Usage {
        let wall = match (before.at, after.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let cpu = after.cpu_seconds - before.cpu_seconds;
        Usage { cpu_percent: if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 }, ..after }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads /proc/PID: CPU seconds (utime + stime, in clock ticks of 1/100 s,
/// the value of USER_HZ on every Linux architecture we run on), RSS and peak
/// RSS (`VmRSS`, `VmHWM`). `None` off Linux.
fn usage_of(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Usage {
        cpu_percent: 0.0,
        rss_mb: kb("VmRSS:")? / 1024.0,
        peak_rss_mb: kb("VmHWM:")? / 1024.0,
        cpu_seconds: ticks as f64 / 100.0,
        at: Some(Instant::now()),
    })
}
