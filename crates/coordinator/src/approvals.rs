//! Workers approved by an operator (`POST /cluster/workers/register`), each
//! with a join credential of its own: a peer registering under an approved
//! id with its credential is admitted even where the cluster token is
//! required, and the credential admits that peer id only.
//!
//! Approvals live in memory: they last until the coordinator restarts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::config::Secret;

#[derive(Debug, Clone, Default)]
pub(crate) struct Approvals(Arc<RwLock<HashMap<String, Secret>>>);

impl Approvals {
    /// Approves `peer_id` with `credential`, replacing an earlier one.
    pub fn approve(&self, peer_id: &str, credential: &str) {
        if let Ok(mut map) = self.0.write() {
            map.insert(peer_id.to_owned(), Secret::new(credential));
        }
    }

    /// Whether `credential` is the one issued to `peer_id`.
    pub fn admits(&self, peer_id: &str, credential: &str) -> bool {
        self.0.read().is_ok_and(|map| map.get(peer_id).is_some_and(|s| s.matches(credential)))
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
        a.approve("w1", "cred-1");
        assert!(a.admits("w1", "cred-1"));
        assert!(!a.admits("w2", "cred-1"));
        assert!(!a.admits("w1", "cred-2"));
        a.approve("w1", "cred-3");
        assert!(!a.admits("w1", "cred-1") && a.admits("w1", "cred-3"));
    }
}
