//! Who is looking at the dashboard: login sessions and CSRF tokens.
//!
//! With API keys (or a cluster token, which is then the admin key), a
//! browser logs in by posting a key to `/login`; it gets a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` when the page came over TLS,
//! expiring after `Limits::dashboard_session_ttl`) holding a random session id. The key
//! itself never leaves the login form: not in a URL, a cookie or a log.
//! Each session has a CSRF token every state-changing request must carry
//! (a form field, or the `X-CSRF-Token` header). Without keys (protected
//! mode), loopback browsers are admins with no login, and one per-process
//! CSRF token guards their forms against other sites.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use sched::Owner;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::config::{ApiRole, Config};
use crate::http::Caller;

/// The cookie's name.
pub(crate) const COOKIE: &str = "lg_session";

/// A logged-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub role: ApiRole,
    /// The token its forms carry.
    pub csrf: String,
    /// The owner its tasks get and the one it is confined to as a client
    /// (its key's, or the operator's `api`).
    pub owner: Owner,
    /// Whether it logged in (and so may log out).
    pub logged_in: bool,
}

impl Viewer {
    /// The caller it is, as the REST API's routes see one.
    pub fn caller(&self) -> Caller {
        Caller { role: self.role, owner: self.owner.clone() }
    }
}

#[derive(Debug)]
struct Session {
    viewer: Viewer,
    expires: Instant,
}

/// The sessions of this coordinator (in memory: a restart logs everyone out).
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    by_digest: Arc<Mutex<HashMap<[u8; 32], Session>>>,
    /// The CSRF token of loopback browsers in protected mode.
    open_csrf: Arc<str>,
    /// How long a login lasts.
    ttl: Duration,
    /// Sessions kept at most; the oldest go first.
    max: usize,
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn secret() -> String {
    // The OS CSPRNG failing leaves no safe session id: the login fails.
    tls::random_secret().unwrap_or_default()
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions { by_digest: Arc::default(), open_csrf: Arc::from(secret()), ttl, max }
    }

    /// How long a login lasts (the cookie's `Max-Age`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the dashboard asks for a login (keys or a token are set).
    pub fn needs_login(config: &Config) -> bool {
        !config.api_keys.is_empty() || config.token.is_some()
    }

    /// The role and owner a key gives, or `None` for a wrong key.
    pub fn check_key(config: &Config, key: &str) -> Option<(ApiRole, Owner)> {
        let key = key.trim();
        if config.api_keys.is_empty() {
            return config
                .token
                .as_ref()
                .filter(|t| t.matches(key))
                .map(|_| (ApiRole::Admin, Owner::Api));
        }
        config
            .api_keys
            .iter()
            .find(|k| k.key.matches(key))
            .map(|k| (k.role, Owner::Key(Arc::clone(&k.fingerprint))))
    }

    /// Opens a session; returns its id (for the cookie), or `None` when no
    /// secret could be drawn.
    pub fn open(&self, role: ApiRole, owner: Owner) -> Option<String> {
        let (id, csrf) = (secret(), secret());
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let viewer = Viewer { role, csrf, owner, logged_in: true };
        let now = Instant::now();
        let mut map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= self.max
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(digest(&id), Session { viewer, expires: now + self.ttl });
        Some(id)
    }

    /// The viewer a request's cookie names, while its session lasts.
    pub fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let id = cookie(headers, COOKIE)?;
        let mut map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        let key = digest(id);
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.viewer.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session a request's cookie names.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.by_digest.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest(id));
        }
    }

    /// A loopback browser in protected mode: an admin with no login.
    pub fn open_viewer(&self) -> Viewer {
        Viewer {
            role: ApiRole::Admin,
            csrf: self.open_csrf.to_string(),
            owner: Owner::Api,
            logged_in: false,
        }
    }
}

/// Whether `given` is the viewer's CSRF token (in constant time).
pub(crate) fn csrf_ok(viewer: &Viewer, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    !viewer.csrf.is_empty() && bool::from(viewer.csrf.as_bytes().ct_eq(given.as_bytes()))
}

/// A cookie's value from the `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The `Set-Cookie` value for a session id (empty `id`: clears it).
pub(crate) fn set_cookie(id: &str, secure: bool, ttl: Duration) -> String {
    let max_age = if id.is_empty() { 0 } else { ttl.as_secs() };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{ApiKey, Secret};
    use axum::http::HeaderValue;

    const TTL: Duration = Duration::from_secs(3600);

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_key_opens_a_session_its_cookie_finds_and_logout_ends() {
        let config = Config {
            api_keys: vec![
                ApiKey::new("adm", ApiRole::Admin),
                ApiKey::new("ro", ApiRole::ReadOnly),
            ],
            ..Config::default()
        };
        assert!(Sessions::needs_login(&config));
        assert_eq!(Sessions::check_key(&config, "wrong"), None);
        let (role, owner) = Sessions::check_key(&config, " ro ").unwrap();
        let fingerprint = ApiKey::new("ro", ApiRole::ReadOnly).fingerprint;
        assert_eq!((role, owner.clone()), (ApiRole::ReadOnly, Owner::Key(fingerprint)));
        let sessions = Sessions::new(TTL, 16);
        let id = sessions.open(role, owner).unwrap();
        let headers = with_cookie(&format!("other=1; {COOKIE}={id}"));
        let viewer = sessions.viewer(&headers).unwrap();
        assert_eq!(viewer.role, ApiRole::ReadOnly);
        assert!(csrf_ok(&viewer, Some(&viewer.csrf.clone())));
        assert!(!csrf_ok(&viewer, Some("forged")));
        assert!(!csrf_ok(&viewer, None));
        assert!(sessions.viewer(&with_cookie(&format!("{COOKIE}=guess"))).is_none());
        sessions.close(&headers);
        assert!(sessions.viewer(&headers).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_expires() {
        let sessions = Sessions::new(TTL, 16);
        let id = sessions.open(ApiRole::Admin, Owner::Api).unwrap();
        let headers = with_cookie(&format!("{COOKIE}={id}"));
        assert!(sessions.viewer(&headers).is_some());
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        assert!(sessions.viewer(&headers).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let c = set_cookie("abc", true, TTL);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"));
        assert!(!set_cookie("abc", false, TTL).contains("Secure"));
        assert!(set_cookie("", false, TTL).contains("Max-Age=0"));
    }

    #[test]
    fn the_cluster_token_alone_is_the_admin_key() {
        let config = Config { token: Some(Secret::new("tok")), ..Config::default() };
        assert_eq!(Sessions::check_key(&config, "tok").map(|r| r.0), Some(ApiRole::Admin));
        assert_eq!(Sessions::check_key(&config, "nope"), None);
        assert!(!Sessions::needs_login(&Config::default()));
    }
}
