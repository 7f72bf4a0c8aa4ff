//! The identity rule: a session id (a peer's or a gamer's) is bound to the
//! credential — the principal, see `credentials.rs` — that first registered
//! it. Another principal registering the same id is refused with `id_taken`
//! (an admin API key excepted); the same principal may replace its own
//! session as before (the old connection is closed with 4000).
//!
//! A binding lasts while a session with that id is connected and for the
//! result retention time after the last one left (its results wait that long
//! for it), and a worker's id stays bound to its own credential as long as
//! the credential is approved. This module also answers `join`: a new
//! worker's credential is made here, approved, stored, and sent (`joined`)
//! only once the store has it.

use std::collections::HashMap;
use std::time::Duration;

use proto::{ErrorCode, ErrorMsg, FromCoordinator, Join, Joined};
use sched::{ConnId, Time};
use tracing::info;

use crate::approvals;
use crate::core::Core;
use crate::credentials::Principal;

/// A session id, by role (a peer and a gamer may share a name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SessionKey {
    Peer(String),
    Gamer(String),
}

impl SessionKey {
    fn describe(&self) -> String {
        match self {
            SessionKey::Peer(id) => format!("peer id `{id}`"),
            SessionKey::Gamer(id) => format!("gamer id `{id}`"),
        }
    }
}

#[derive(Debug)]
struct Binding {
    principal: String,
    connected: usize,
    left_at: Option<Time>,
}

/// Session ids and the principals they are bound to.
#[derive(Debug)]
pub(crate) struct Bindings {
    map: HashMap<SessionKey, Binding>,
    claims_since_sweep: usize,
    /// The most bindings kept (`Limits::max_session_bindings`); past it, new
    /// ids are refused until old ones expire.
    max: usize,
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Taken,
    Full,
}

impl Bindings {
    pub fn new(max: usize) -> Bindings {
        Bindings { map: HashMap::new(), claims_since_sweep: 0, max }
    }

    /// Binds `key` to `principal` (or finds it already bound to it) and
    /// counts one more session with it. An `owner` (a worker's approved
    /// credential for its own id) takes the binding over.
    pub fn claim(
        &mut self,
        key: &SessionKey,
        principal: &Principal,
        owner: bool,
        now: Time,
        ttl: Duration,
    ) -> Result<(), Refusal> {
        self.claims_since_sweep += 1;
        if self.claims_since_sweep > 4096.max(self.map.len()) {
            self.sweep(now, ttl);
        }
        let id = principal.id();
        if let Some(b) = self.map.get_mut(key) {
            let expired = b.connected == 0 && b.left_at.is_some_and(|t| elapsed(t, now) > ttl);
            if b.principal != id && !principal.is_admin() && !expired && !owner {
                return Err(Refusal::Taken);
            }
            if b.principal != id && (!principal.is_admin() || owner) {
                b.principal = id;
            }
            b.connected += 1;
            b.left_at = None;
            return Ok(());
        }
        if self.map.len() >= self.max {
            self.sweep(now, ttl);
            if self.map.len() >= self.max {
                return Err(Refusal::Full);
            }
        }
        self.map.insert(key.clone(), Binding { principal: id, connected: 1, left_at: None });
        Ok(())
    }

    /// Binds `key` to the principal named `principal` as if its last
    /// session had just left (at `now`): at start, for the gamer ids of the
    /// tasks recovered from the store, so that their results and idempotency
    /// keys stay with the credential that submitted them. A binding already
    /// made wins; past the bound, the rest are not restored.
    pub fn restore(&mut self, key: SessionKey, principal: &str, now: Time) {
        if self.map.len() < self.max {
            let restored =
                Binding { principal: principal.to_owned(), connected: 0, left_at: Some(now) };
            self.map.entry(key).or_insert(restored);
        }
    }

    /// A session with `key` ended.
    pub fn release(&mut self, key: &SessionKey, now: Time) {
        if let Some(b) = self.map.get_mut(key) {
            b.connected = b.connected.saturating_sub(1);
            if b.connected == 0 {
                b.left_at = Some(now);
            }
        }
    }

    fn sweep(&mut self, now: Time, ttl: Duration) {
        self.claims_since_sweep = 0;
        self.map.retain(|_, b| b.connected > 0 || b.left_at.is_none_or(|t| elapsed(t, now) <= ttl));
    }
}

fn elapsed(since: Time, now: Time) -> Duration {
    Duration::from_micros(now.as_micros().saturating_sub(since.as_micros()))
}

/// Applies the identity rule to a registration on `conn`: true when it may
/// go on (the connection then holds the binding until it closes); otherwise
/// the connection has been sent `id_taken` (or `busy`).
pub(crate) fn claim(core: &mut Core, conn: ConnId, key: SessionKey, msg_type: &str) -> bool {
    let Some(c) = core.conns.get(&conn) else { return false };
    let principal = c.principal.clone();
    // An approved worker id belongs to its credential (checked against that
    // id already): it takes the id over from anyone; nobody else but an
    // admin may use it.
    let (owner, approved_elsewhere) = match (&key, &principal) {
        (SessionKey::Peer(id), Principal::Worker { peer_id, .. }) => (**peer_id == **id, false),
        (SessionKey::Peer(id), p) => (false, core.approvals.is_approved(id) && !p.is_admin()),
        _ => (false, false),
    };
    let now = core.now();
    let ttl = core.config.sched.result_ttl;
    let refused = if approved_elsewhere {
        Some(Refusal::Taken)
    } else {
        core.bindings.claim(&key, &principal, owner, now, ttl).err()
    };
    let err = match refused {
        None => {
            if let Some(c) = core.conns.get_mut(&conn)
                && let Some(old) = c.bound.replace(key)
            {
                core.bindings.release(&old, now);
            }
            return true;
        }
        Some(Refusal::Taken) => ErrorMsg::new(
            ErrorCode::ID_TAKEN,
            format!(
                "{} is registered with another credential; use your own id (or the credential that registered it)",
                key.describe()
            ),
        ),
        Some(Refusal::Full) => {
            let mut err =
                ErrorMsg::new(ErrorCode::BUSY, "too many session ids are in use; retry later");
            err.retry_after_s = Some(1.0);
            err
        }
    };
    core.reply_error(conn, err.in_reply_to(msg_type));
    false
}

/// The session `conn` held ends (the connection closed).
pub(crate) fn release(core: &mut Core, conn_bound: Option<SessionKey>) {
    if let Some(key) = conn_bound {
        let now = core.now();
        core.bindings.release(&key, now);
    }
}

/// `join`: a worker credential for `peer_id`, unless the id is taken. The
/// connection task let the message through only with a valid join secret.
pub(crate) fn join(core: &mut Core, conn: ConnId, m: Join) {
    let key = SessionKey::Peer(m.peer_id.clone());
    let taken = core.approvals.is_approved(&m.peer_id) || core.bindings.is_held(&key);
    if taken {
        let err = ErrorMsg::new(
            ErrorCode::ID_TAKEN,
            format!(
                "peer id `{}` already has a credential or a session; pick another --peer-id, or \
                 revoke the old one first (`legacygpu worker revoke {}`)",
                m.peer_id, m.peer_id
            ),
        );
        return core.reply_error(conn, err.in_reply_to("join"));
    }
    let credential = match tls::random_secret() {
        Ok(secret) => format!("lgw_{secret}"),
        Err(e) => {
            let err =
                ErrorMsg::new(ErrorCode::new("internal"), format!("cannot make a credential: {e}"));
            return core.reply_error(conn, err.in_reply_to("join"));
        }
    };
    approve(core, &m.peer_id, approvals::digest(&credential));
    info!(peer = %m.peer_id, "a worker joined with the join token; issued its credential");
    let joined = Joined { peer_id: m.peer_id, credential };
    // Held until the store has the approval: the credential must work after
    // a crash that follows its delivery.
    core.send_durable(conn, FromCoordinator::Joined(joined));
}

/// Approves `peer_id` with a credential digest (or [`approvals::REVOKED`]),
/// in memory and in the store; returns the store batch that holds it.
pub(crate) fn approve(core: &mut Core, peer_id: &str, credential_sha256: String) -> u64 {
    core.approvals.approve(peer_id, credential_sha256.clone());
    let at_ms = crate::clock::Clock::unix_ms(core.now());
    core.observer.record(store::Op::Approved {
        peer_id: peer_id.to_owned(),
        credential_sha256,
        at_ms,
    });
    core.observer.commit();
    core.observer.appended()
}

/// Revokes `peer_id`'s credential (in memory and in the store) and frees its
/// id; `None` when it had none. Its connections close themselves.
pub(crate) fn revoke(core: &mut Core, peer_id: &str) -> Option<u64> {
    if !core.approvals.is_approved(peer_id) {
        return None;
    }
    core.bindings.map.remove(&SessionKey::Peer(peer_id.to_owned()));
    Some(approve(core, peer_id, approvals::REVOKED.to_owned()))
}

impl Bindings {
    /// Whether a live session holds `key`.
    fn is_held(&self, key: &SessionKey) -> bool {
        self.map.get(key).is_some_and(|b| b.connected > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::ApiRole;

    const TTL: Duration = Duration::from_secs(60);

    fn t(s: u64) -> Time {
        Time::from_micros(s * 1_000_000)
    }

    fn key_holder(name: &str, role: ApiRole) -> Principal {
        Principal::ApiKey { fingerprint: Arc::from(name), role }
    }

    #[test]
    fn an_id_belongs_to_the_principal_that_registered_it() {
        let (mut b, ttl) = (Bindings::new(1000), TTL);
        let key = SessionKey::Gamer("g".into());
        let alice = key_holder("alice", ApiRole::Client);
        let bob = key_holder("bob", ApiRole::Client);
        let admin = key_holder("admin", ApiRole::Admin);
        b.claim(&key, &alice, false, t(0), ttl).unwrap();
        assert_eq!(b.claim(&key, &bob, false, t(1), ttl), Err(Refusal::Taken));
        b.claim(&key, &alice, false, t(1), ttl).unwrap(); // Alice replaces her own session.
        b.claim(&key, &admin, false, t(1), ttl).unwrap(); // An admin may take it over.
        for _ in 0..3 {
            b.release(&key, t(2));
        }
        // Still Alice's while her results may wait for her…
        assert_eq!(b.claim(&key, &bob, false, t(30), ttl), Err(Refusal::Taken));
        // …and free after.
        b.claim(&key, &bob, false, t(100), ttl).unwrap();
        assert_eq!(b.claim(&key, &alice, false, t(100), ttl), Err(Refusal::Taken));
        // An owner (a worker's approved credential) takes its id back.
        b.claim(&key, &alice, true, t(101), ttl).unwrap();
        assert_eq!(b.claim(&key, &bob, false, t(101), ttl), Err(Refusal::Taken));
        // Peers and gamers are separate namespaces.
        b.claim(&SessionKey::Peer("g".into()), &bob, false, t(100), ttl).unwrap();
    }

    #[test]
    fn a_restored_binding_holds_for_its_credential_until_it_expires() {
        let (mut b, ttl) = (Bindings::new(1000), TTL);
        let key = SessionKey::Gamer("g".into());
        let (alice, bob) =
            (key_holder("alice", ApiRole::Client), key_holder("bob", ApiRole::Client));
        b.restore(key.clone(), &alice.id(), t(0));
        b.restore(key.clone(), &bob.id(), t(0)); // The first restored wins.
        assert_eq!(b.claim(&key, &bob, false, t(1), ttl), Err(Refusal::Taken));
        b.claim(&key, &alice, false, t(1), ttl).unwrap();
        b.release(&key, t(2));
        let other = SessionKey::Gamer("h".into());
        b.restore(other.clone(), &alice.id(), t(0));
        b.claim(&other, &bob, false, t(61), ttl).unwrap(); // Expired: free again.
    }
}
