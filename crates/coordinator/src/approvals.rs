//! Workers approved by an operator (`POST /cluster/workers/register`), each
//! with a join credential of its own: a peer registering under an approved
//! id with its credential is admitted even where the cluster token is
//! required, and the credential admits that peer id only.
//!
//! Only a SHA-256 of each credential is kept, here and in the store, so that
//! approvals survive a restart without the store holding usable secrets.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Default)]
pub(crate) struct Approvals(Arc<RwLock<HashMap<String, String>>>);

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
    /// replacing an earlier one.
    pub fn approve(&self, peer_id: &str, credential_sha256: String) {
        if let Ok(mut map) = self.0.write() {
            map.insert(peer_id.to_owned(), credential_sha256);
        }
    }

    /// Whether `credential` is the one issued to `peer_id`.
    pub fn admits(&self, peer_id: &str, credential: &str) -> bool {
        let given = digest(credential);
        self.0.read().is_ok_and(|map| {
            map.get(peer_id).is_some_and(|kept| bool::from(kept.as_bytes().ct_eq(given.as_bytes())))
        })
    }

    /// The digest of the credential `peer_id` was approved with, if any:
    /// the identity its reputation follows besides its id.
    pub fn digest_of(&self, peer_id: &str) -> Option<String> {
        self.0.read().ok()?.get(peer_id).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.0.read().map_or(true, |map| map.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_admits_its_own_peer_only() {
        let a = Approvals::default();
        assert!(a.is_empty() && !a.admits("w1", "x"));
        a.approve("w1", digest("cred-1"));
        assert!(a.admits("w1", "cred-1"));
        assert!(!a.admits("w2", "cred-1"));
        assert!(!a.admits("w1", "cred-2"));
        a.approve("w1", digest("cred-3"));
        assert!(!a.admits("w1", "cred-1") && a.admits("w1", "cred-3"));
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
