//! What the read commands share: reaching the HTTP API (flags, environment,
//! then `~/.config/legacygpu/cli.json`), printing tables or JSON, and the
//! exit codes scripts rely on.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use client::api::Api;
use serde::Deserialize;
use serde_json::Value;

use crate::args::Remote;

/// Exit codes (also in docs/CLI.md).
pub mod exit {
    /// A misuse of the command line (clap's own code for what it catches).
    pub const USAGE: u8 = 2;
    /// The task ended without a result (failed, cancelled, timed out).
    pub const TASK_FAILED: u8 = 3;
    /// The task has not finished within the wait.
    pub const NOT_FINISHED: u8 = 4;
}

/// A misuse of the command line found after parsing (flags that do not go
/// together, a value out of range): exits [`exit::USAGE`], as clap's own.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The error for a misuse of the command line (see [`Usage`]).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// `~/.config/legacygpu/cli.json`: defaults for the connection flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    pub coordinator: Option<String>,
    pub token: Option<String>,
    /// The coordinator's CA pin, for `wss://` and `https://`.
    pub ca_hash: Option<String>,
}

impl CliConfig {
    pub fn path() -> Option<PathBuf> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
        };
        Some(base.join("legacygpu/cli.json"))
    }

    /// The file's settings; none when it does not exist. A file that exists
    /// but does not parse is an error, not silently ignored.
    pub fn load() -> anyhow::Result<CliConfig> {
        let Some(path) = CliConfig::path() else { return Ok(CliConfig::default()) };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CliConfig::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }
}

/// The API client for these flags (the first URL of a comma-separated list).
///
/// Given several URLs (the coordinators of one PostgreSQL store), the
/// leader's: each is asked for its health until one answers `leader`; else
/// the first that answered (a standby redirects to the leader), else the
/// first (whose error the command then reports).
pub async fn api(remote: &Remote) -> anyhow::Result<Api> {
    let mut all = apis(remote)?;
    if all.len() == 1 {
        return Ok(all.swap_remove(0));
    }
    let mut reachable = None;
    for (i, api) in all.iter().enumerate() {
        let probe = api.get_with_status("/cluster/health", Some(Duration::from_secs(2))).await;
        if let Ok((_, health)) = probe {
            let health = serde_json::from_value::<api_types::Health>(health).ok();
            if health.is_some_and(|h| h.role == "leader") {
                return Ok(all.swap_remove(i));
            }
            reachable.get_or_insert(i);
        }
    }
    Ok(all.swap_remove(reachable.unwrap_or(0)))
}

/// An API client for every URL of the flags' comma-separated list (the
/// coordinators of one PostgreSQL store; `cluster status` asks each).
pub fn apis(remote: &Remote) -> anyhow::Result<Vec<Api>> {
    let file = CliConfig::load()?;
    let urls = remote
        .api_url
        .clone()
        .or(file.api_url)
        .unwrap_or_else(|| "http://127.0.0.1:8000".to_owned());
    let key =
        remote.api_key.clone().or(file.api_key).or_else(|| std::env::var("LEGACYGPU_TOKEN").ok());
    let key = key.filter(|k| !k.is_empty());
    let ca_hash = remote.ca_hash.clone().or(file.ca_hash);
    urls.split(',')
        .map(str::trim)
        .map(|url| {
            anyhow::ensure!(!url.is_empty(), "an empty URL in --api-url `{urls}`");
            Ok(Api::pinned(url, key.clone(), ca_hash.as_deref())?)
        })
        .collect()
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// Prints rows under headers, columns aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| bold(&h.to_uppercase())).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Bold on a terminal, plain otherwise.
pub fn bold(text: &str) -> String {
    if std::io::stdout().is_terminal() { format!("\x1b[1m{text}\x1b[0m") } else { text.to_owned() }
}

/// A health or worker status, coloured on a terminal.
pub fn status_colour(status: &str) -> String {
    if !std::io::stdout().is_terminal() {
        return status.to_owned();
    }
    let code = match status.to_ascii_lowercase().as_str() {
        "healthy" | "completed" => "32",
        "degraded" | "unhealthy" | "draining" | "queued" | "assigned" | "running" => "33",
        "critical" | "failed" | "timed_out" | "cancelled" | "quarantined" => "31",
        _ => return status.to_owned(),
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

/// A JSON field as text for a table cell.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}
