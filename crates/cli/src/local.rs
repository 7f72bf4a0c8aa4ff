//! Processes started on this machine: pid files in the state directory
//! (`$XDG_STATE_HOME/legacygpu`, or `~/.local/state/legacygpu`), so that
//! `worker stop`, `worker list` and `cluster stop` find them.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The state directory (created on demand).
pub fn state_dir() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("no HOME for the state directory")?)
            .join(".local/state"),
    };
    let dir = base.join("legacygpu");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A pid file that removes itself when dropped (a clean exit).
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(path: PathBuf) -> anyhow::Result<PidFile> {
        if let Some(pid) = read_pid(&path)
            && alive(pid)
            && pid != std::process::id()
        {
            anyhow::bail!(
                "{} says process {pid} is already running; stop it first or remove the file",
                path.display()
            );
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.0) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The worker pid file for `peer_id` (the id made safe as a file name).
pub fn worker_pid_file(peer_id: &str) -> anyhow::Result<PathBuf> {
    let safe: String = peer_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    Ok(state_dir()?.join(format!("worker-{safe}.pid")))
}

pub fn coordinator_pid_file() -> anyhow::Result<PathBuf> {
    Ok(state_dir()?.join("coordinator.pid"))
}

pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process with this pid exists.
#[allow(unsafe_code)]
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Sends SIGTERM (a graceful stop).
#[allow(unsafe_code)]
pub fn terminate(pid: u32) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid).context("bad pid")?;
    // SAFETY: sends a signal; no memory is involved.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error().into()) }
}

/// Workers with pid files here: (peer id, pid, alive).
pub fn workers() -> anyhow::Result<Vec<(String, u32, bool)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(state_dir()?)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Some(id) = name.strip_prefix("worker-").and_then(|n| n.strip_suffix(".pid")) else {
            continue;
        };
        if let Some(pid) = read_pid(&path) {
            out.push((id.to_owned(), pid, alive(pid)));
        }
    }
    out.sort();
    Ok(out)
}
