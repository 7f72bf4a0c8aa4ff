//! This worker's own credential: received once for the join token, kept in
//! a file only its owner can read, and presented from then on.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{Config, Worker};

/// What the credential file holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    peer_id: String,
    /// The pin of the coordinator that issued it.
    ca_sha256: String,
    credential: String,
}

/// The credential kept for this worker and this coordinator, if any.
pub(crate) fn load(config: &Config) -> Result<Option<String>, String> {
    let Some(path) = &config.credential_file else { return Ok(None) };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the worker credential {}: {e}", path.display())),
    };
    let stored: Stored = serde_json::from_str(&text)
        .map_err(|e| format!("the worker credential {} is not valid: {e}", path.display()))?;
    let pin_matches = match &config.trust {
        tls::Trust::Pinned(pin) => stored.ca_sha256 == pin.to_string(),
        tls::Trust::System => true,
    };
    if stored.peer_id != config.peer_id || !pin_matches {
        warn!(
            "ignoring the credential in {}: it is for peer `{}` of another coordinator or id",
            path.display(),
            stored.peer_id
        );
        return Ok(None);
    }
    Ok(Some(stored.credential))
}

fn save(path: &Path, stored: &Stored) -> Result<(), String> {
    use std::io::Write;
    let err =
        |e: std::io::Error| format!("cannot keep the worker credential in {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(err)?;
    let text = serde_json::to_string(stored).map_err(|e| e.to_string())?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl Worker {
    /// The join token's secret, when this worker still has to join.
    pub(crate) fn join_secret(&self) -> Option<String> {
        match (&self.credential, &self.config.join) {
            (None, Some(join)) => Some(join.secret.clone()),
            _ => None,
        }
    }

    /// What to register with: its own credential, else the token.
    pub(crate) fn token(&self) -> Option<String> {
        self.credential.clone().or_else(|| self.config.token.clone())
    }

    /// The upgrade's bearer header: none while joining (the join message
    /// carries the secret).
    pub(crate) fn bearer(&self) -> Option<String> {
        if self.join_secret().is_some() { None } else { self.token() }
    }

    /// Keeps the credential `join` gave.
    pub(crate) fn set_credential(&mut self, credential: String) -> Result<(), String> {
        if let Some(path) = &self.config.credential_file {
            let ca_sha256 = match &self.config.trust {
                tls::Trust::Pinned(pin) => pin.to_string(),
                tls::Trust::System => String::new(),
            };
            let peer_id = self.config.peer_id.clone();
            save(path, &Stored { peer_id, ca_sha256, credential: credential.clone() })?;
        }
        self.credential = Some(credential);
        Ok(())
    }

    /// Why the coordinator refused us, with what to do about a kept credential.
    pub(crate) fn refusal(&self, code: &str, reason: &str) -> String {
        let kept = self.credential.is_some() && self.config.join.is_some();
        match (&self.config.credential_file, kept, code) {
            (Some(path), true, "unauthorized" | "revoked") => format!(
                "{code}: {reason} (the credential kept in {} was refused: it was revoked, or the \
                 coordinator lost it; delete the file to join again with a join token)",
                path.display()
            ),
            _ => format!("{code}: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_kept_credential_is_private_and_for_its_coordinator_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/worker-w.json");
        let pin = tls::CaPin::parse(&"ab".repeat(32)).unwrap();
        let mut config = Config::new("wss://h:8765", "w");
        config.join = Some(tls::JoinToken { pin, secret: "s".repeat(43) });
        config.credential_file = Some(path.clone());
        let mut worker = Worker::new(config.clone(), exec::Executors::builtin());
        assert_eq!(worker.join_secret().as_deref(), Some("s".repeat(43).as_str()));
        assert_eq!(worker.bearer(), None);
        worker.set_credential("lgw_x".into()).unwrap();
        assert_eq!(worker.join_secret(), None);
        assert_eq!(worker.bearer().as_deref(), Some("lgw_x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let config = Worker::new(config, exec::Executors::builtin()).config;
        assert_eq!(load(&config).unwrap().as_deref(), Some("lgw_x"));
        let other = tls::CaPin::parse(&"cd".repeat(32)).unwrap();
        let mut elsewhere = config.clone();
        elsewhere.trust = tls::Trust::Pinned(other);
        assert_eq!(load(&elsewhere).unwrap(), None);
        std::fs::write(&path, "garbage").unwrap();
        assert!(load(&config).unwrap_err().contains("not valid"));
    }
}
