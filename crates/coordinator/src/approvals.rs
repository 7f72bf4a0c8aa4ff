//! Workers with a credential of their own: issued when a worker joins with
//! the worker join token (`join`), or when an operator approves one
//! (`POST /cluster/workers/register`). A credential admits its peer id only,
//! and is revoked with `POST /cluster/workers/{id}/revoke`: connections using
//! it are closed at once (they watch [`Approvals::changes`]), and it admits
//! nobody from then on.
//!
//! Only a SHA-256 of each credential is kept, here and in the store, so that
//! approvals survive a restart without the store holding usable secrets. A
//! revocation is stored as an approval whose digest is [`REVOKED`], which no
//! credential hashes to: the store needs no operation of its own for it.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

/// The stored digest of a revoked credential.
pub(crate) const REVOKED: &str = "revoked";

#[derive(Debug, Clone)]
pub(crate) struct Approvals {
    inner: Arc<RwLock<Inner>>,
    /// Bumped at every revocation.
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Peer id → digest of its credential.
    by_peer: HashMap<String, String>,
    /// Digest → peer id, to recognise a credential before a peer id is named.
    by_digest: HashMap<String, String>,
}

impl Default for Approvals {
    fn default() -> Approvals {
        Approvals { inner: Arc::default(), changes: watch::Sender::new(0) }
    }
}

/// The hex SHA-256 of a credential.
pub(crate) fn digest(credential: &str) -> String {
    let hash = Sha256::digest(credential.as_bytes());
    hash.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

impl Approvals {
    /// Approves `peer_id` with the credential whose digest is given,
    /// replacing an earlier one; [`REVOKED`] revokes it.
    pub fn approve(&self, peer_id: &str, credential_sha256: String) {
        if credential_sha256 == REVOKED {
            self.revoke(peer_id);
            return;
        }
        if let Ok(mut inner) = self.inner.write() {
            if let Some(old) = inner.by_peer.insert(peer_id.to_owned(), credential_sha256.clone()) {
                inner.by_digest.remove(&old);
            }
            inner.by_digest.insert(credential_sha256, peer_id.to_owned());
        }
        // A replaced credential admits nobody any more.
        self.changes.send_modify(|n| *n += 1);
    }

    /// Revokes `peer_id`'s credential; false when it had none.
    pub fn revoke(&self, peer_id: &str) -> bool {
        let removed = self.inner.write().ok().and_then(|mut inner| {
            let old = inner.by_peer.remove(peer_id)?;
            inner.by_digest.remove(&old);
            Some(())
        });
        self.changes.send_modify(|n| *n += 1);
        removed.is_some()
    }

    /// Whether `credential` is the one issued to `peer_id`.
    #[cfg(test)]
    pub fn admits(&self, peer_id: &str, credential: &str) -> bool {
        self.admits_digest(peer_id, &digest(credential))
    }

    /// Whether `digest` is still `peer_id`'s credential (not revoked or replaced).
    pub fn admits_digest(&self, peer_id: &str, given: &str) -> bool {
        self.inner.read().is_ok_and(|inner| {
            inner
                .by_peer
                .get(peer_id)
                .is_some_and(|kept| bool::from(kept.as_bytes().ct_eq(given.as_bytes())))
        })
    }

    /// The peer a credential was issued to, if any.
    pub fn peer_of(&self, credential: &str) -> Option<String> {
        let given = digest(credential);
        self.inner.read().ok()?.by_digest.get(&given).cloned()
    }

    /// Whether `peer_id` has a credential.
    pub fn is_approved(&self, peer_id: &str) -> bool {
        self.inner.read().is_ok_and(|inner| inner.by_peer.contains_key(peer_id))
    }

    /// Changes with every revocation or replacement.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The digest of the credential `peer_id` was approved with, if any:
    /// the identity its reputation follows besides its id.
    pub fn digest_of(&self, peer_id: &str) -> Option<String> {
        self.inner.read().ok()?.by_peer.get(peer_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_admits_its_own_peer_only() {
        let a = Approvals::default();
        assert!(!a.admits("w1", "x"));
        a.approve("w1", digest("cred-1"));
        assert!(a.admits("w1", "cred-1") && a.is_approved("w1"));
        assert_eq!(a.peer_of("cred-1").as_deref(), Some("w1"));
        assert!(!a.admits("w2", "cred-1"));
        assert!(!a.admits("w1", "cred-2"));
        a.approve("w1", digest("cred-3"));
        assert!(!a.admits("w1", "cred-1") && a.admits("w1", "cred-3"));
        assert_eq!(a.peer_of("cred-1"), None);
    }

    #[test]
    fn revocation_is_seen_by_watchers() {
        let a = Approvals::default();
        a.approve("w1", digest("c"));
        let mut changes = a.changes();
        changes.mark_unchanged();
        assert!(a.revoke("w1"));
        assert!(changes.has_changed().unwrap_or(false));
        assert!(!a.admits("w1", "c") && a.peer_of("c").is_none() && !a.is_approved("w1"));
        assert!(!a.revoke("w1"));
        // As stored: the sentinel digest revokes on reload.
        a.approve("w2", digest("d"));
        a.approve("w2", REVOKED.to_owned());
        assert!(!a.admits("w2", "d"));
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
