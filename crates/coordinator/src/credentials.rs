//! Who may use the protocol port, and as whom.
//!
//! A connection proves itself with one secret, in its registration's `token`
//! or the upgrade's `Authorization: Bearer` header:
//!
//! | secret | admits | principal |
//! |---|---|---|
//! | none, from this machine (or anyone with `--insecure`) | peers, gamers | `local` |
//! | the cluster token (`--token`) | peers, gamers, `join` | `cluster-token` |
//! | the worker join token's secret (also the cluster token, an admin key) | `join` only | — |
//! | a worker's own credential (from `join`, or approved by the API) | that peer id | `worker:ID` |
//! | the client token's secret | gamers | `client-token` |
//! | an API key with the client role | gamers | `api-key:N` |
//! | an API key with the admin role | peers, gamers | `api-key:N` (admin) |
//!
//! The principal is what a session id is bound to (see `identity.rs`).
//! Join secrets are kept in `DATA_DIR/tls/` (mode 0600), so that the tokens
//! the banner prints stay valid across restarts until rotated.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tls::JoinToken;

use crate::approvals::{self, Approvals};
use crate::config::{ApiKey, ApiRole, Config, Secret};
use crate::tls::Tls;

/// Whom a connection's credential makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// No credential: this machine, or anyone in insecure mode.
    Local,
    ClusterToken,
    /// A worker's own credential (its digest, to notice revocation).
    Worker {
        peer_id: Arc<str>,
        digest: Arc<str>,
    },
    ClientToken,
    /// An API key, named by its fingerprint.
    ApiKey {
        fingerprint: Arc<str>,
        role: ApiRole,
    },
}

impl Principal {
    /// The identity session ids are bound to.
    pub fn id(&self) -> String {
        match self {
            Principal::Local => "local".to_owned(),
            Principal::ClusterToken => "cluster-token".to_owned(),
            Principal::Worker { peer_id, .. } => format!("worker:{peer_id}"),
            Principal::ClientToken => "client-token".to_owned(),
            Principal::ApiKey { fingerprint, .. } => format!("api-key:{fingerprint}"),
        }
    }

    /// Admins may take over any session id.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::ApiKey { role: ApiRole::Admin, .. })
    }
}

/// What a connection asks to do with its credential.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Claim<'a> {
    Peer(&'a str),
    Gamer,
}

/// Which join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Worker,
    Client,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Worker => "worker",
            TokenKind::Client => "client",
        }
    }

    /// The kind [`TokenKind::as_str`] names.
    pub fn parse(s: &str) -> Option<TokenKind> {
        [TokenKind::Worker, TokenKind::Client].into_iter().find(|k| k.as_str() == s)
    }

    fn file(self) -> &'static str {
        match self {
            TokenKind::Worker => "worker-join.secret",
            TokenKind::Client => "client-join.secret",
        }
    }
}

/// Why join secrets could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Random(#[from] tls::TlsError),
    #[error("the store holds a join secret of an unknown kind `{0}` (a newer version's?)")]
    UnknownKind(String),
}

/// Every credential the protocol port knows.
#[derive(Debug)]
pub(crate) struct Credentials {
    token: Option<Secret>,
    api_keys: Vec<ApiKey>,
    worker_join: RwLock<Secret>,
    client_join: RwLock<Secret>,
    /// Where the join secrets are kept, when there is a data dir.
    dir: Option<PathBuf>,
    pub approvals: Approvals,
    tls: Arc<Tls>,
}

impl Credentials {
    /// Reads the join secrets (making them the first time).
    pub fn load(
        config: &Config,
        approvals: Approvals,
        tls: Arc<Tls>,
    ) -> Result<Credentials, CredentialError> {
        let dir = config.data_dir().map(|d| d.join("tls"));
        let worker = stored_secret(dir.as_deref(), TokenKind::Worker)?;
        let client = stored_secret(dir.as_deref(), TokenKind::Client)?;
        Ok(Credentials {
            token: config.token.clone(),
            api_keys: config.api_keys.clone(),
            worker_join: RwLock::new(worker),
            client_join: RwLock::new(client),
            dir,
            approvals,
            tls,
        })
    }

    /// The join token of `kind`, as the banner prints it.
    pub fn join_token(&self, kind: TokenKind) -> JoinToken {
        JoinToken { pin: self.tls.pin(), secret: self.join_secret(kind).expose().to_owned() }
    }

    /// `secret` (new: [`tls::random_secret`], and in the store first) for
    /// `kind`; the old one admits nobody from now on. Credentials already
    /// issued to workers stay valid. The data dir keeps a copy, so that the
    /// banner of a restart on another store, or none, shows it too.
    pub fn set(&self, kind: TokenKind, secret: &str) -> Result<JoinToken, CredentialError> {
        if let Some(dir) = &self.dir {
            write_secret(&dir.join(kind.file()), secret)?;
        }
        if let Ok(mut slot) = self.slot(kind).write() {
            *slot = Secret::new(secret);
        }
        Ok(self.join_token(kind))
    }

    /// The secrets the store holds (`(kind, secret)`, as last rotated on
    /// any coordinator of the store) replace those of the data dir: with
    /// high availability a token rotated on one leader admits, and the old
    /// one is refused, on the next. Unknown kinds are an error.
    pub fn adopt(&self, stored: &[(String, String)]) -> Result<(), CredentialError> {
        for (kind, secret) in stored {
            let kind =
                TokenKind::parse(kind).ok_or_else(|| CredentialError::UnknownKind(kind.clone()))?;
            if !self.join_secret(kind).matches(secret) {
                self.set(kind, secret)?;
            }
        }
        Ok(())
    }

    /// Whether `given` is any credential at all (an upgrade's bearer header
    /// must be one).
    pub fn recognises(&self, given: &str) -> bool {
        self.token.as_ref().is_some_and(|t| t.matches(given))
            || self.join_secret(TokenKind::Worker).matches(given)
            || self.join_secret(TokenKind::Client).matches(given)
            || self.api_keys.iter().any(|k| k.key.matches(given))
            || self.approvals.peer_of(given).is_some()
    }

    /// The principal `given` makes a connection for `claim`, if it admits it.
    pub fn authorize(&self, given: &str, claim: Claim<'_>) -> Option<Principal> {
        if self.token.as_ref().is_some_and(|t| t.matches(given)) {
            return Some(Principal::ClusterToken);
        }
        if let Some(key) = self.api_keys.iter().find(|k| k.key.matches(given)) {
            let principal =
                Principal::ApiKey { fingerprint: Arc::clone(&key.fingerprint), role: key.role };
            return match claim {
                Claim::Gamer if key.role >= ApiRole::Client => Some(principal),
                Claim::Peer(_) if key.role == ApiRole::Admin => Some(principal),
                _ => None,
            };
        }
        match claim {
            Claim::Gamer => {
                self.join_secret(TokenKind::Client).matches(given).then_some(Principal::ClientToken)
            }
            Claim::Peer(id) => {
                let digest = approvals::digest(given);
                self.approvals.admits_digest(id, &digest).then(|| Principal::Worker {
                    peer_id: Arc::from(id),
                    digest: Arc::from(digest.as_str()),
                })
            }
        }
    }

    /// Whether `given` may `join` (get a worker credential): the worker
    /// join token's secret, the cluster token or an admin key.
    pub fn may_join(&self, given: &str) -> bool {
        self.join_secret(TokenKind::Worker).matches(given)
            || self.token.as_ref().is_some_and(|t| t.matches(given))
            || self.api_keys.iter().any(|k| k.role == ApiRole::Admin && k.key.matches(given))
    }

    fn slot(&self, kind: TokenKind) -> &RwLock<Secret> {
        match kind {
            TokenKind::Worker => &self.worker_join,
            TokenKind::Client => &self.client_join,
        }
    }

    fn join_secret(&self, kind: TokenKind) -> Secret {
        // A poisoned lock still holds a whole secret (writers assign once).
        match self.slot(kind).read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The secret kept in `dir`, made the first time; a fresh one without a dir.
fn stored_secret(dir: Option<&Path>, kind: TokenKind) -> Result<Secret, CredentialError> {
    let Some(dir) = dir else { return Ok(Secret::new(tls::random_secret()?)) };
    let path = dir.join(kind.file());
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CredentialError::Io { path: path.display().to_string(), source });
        }
    }
    let secret = tls::random_secret()?;
    write_secret(&path, &secret)?;
    Ok(Secret::new(secret))
}

/// Writes a secret (mode 0600) by renaming a fresh file over the old one.
fn write_secret(path: &Path, secret: &str) -> Result<(), CredentialError> {
    use std::io::Write;
    let err = |source| CredentialError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(secret.as_bytes()).and_then(|()| file.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::tls::CertSource;

    fn creds(config: &Config) -> Credentials {
        let tls = Arc::new(Tls::load(config.cert_source()).unwrap());
        Credentials::load(config, Approvals::default(), tls).unwrap()
    }

    #[test]
    fn each_secret_admits_what_it_is_for() {
        let key = |k: &str, role| ApiKey::new(k, role);
        let config = Config {
            token: Some(Secret::new("cluster-token-1")),
            api_keys: vec![
                key("client-key-1", ApiRole::Client),
                key("admin-key-1", ApiRole::Admin),
            ],
            ..Config::default()
        };
        let c = creds(&config);
        let worker = c.join_token(TokenKind::Worker).secret;
        let client = c.join_token(TokenKind::Client).secret;
        assert_ne!(worker, client);
        assert!(c.may_join(&worker) && c.may_join("cluster-token-1") && c.may_join("admin-key-1"));
        assert!(!c.may_join(&client) && !c.may_join("client-key-1"));
        assert!(c.authorize(&worker, Claim::Peer("w")).is_none());
        assert!(c.authorize(&worker, Claim::Gamer).is_none());
        assert_eq!(c.authorize(&client, Claim::Gamer), Some(Principal::ClientToken));
        assert!(c.authorize(&client, Claim::Peer("w")).is_none());
        assert_eq!(c.authorize("cluster-token-1", Claim::Peer("w")), Some(Principal::ClusterToken));
        let ck = c.authorize("client-key-1", Claim::Gamer).unwrap();
        assert!(!ck.is_admin() && c.authorize("client-key-1", Claim::Peer("w")).is_none());
        assert!(c.authorize("admin-key-1", Claim::Peer("w")).unwrap().is_admin());
        c.approvals.approve("w", approvals::digest("lgw_own"));
        let w = c.authorize("lgw_own", Claim::Peer("w")).unwrap();
        assert_eq!(w.id(), "worker:w");
        assert!(c.authorize("lgw_own", Claim::Peer("other")).is_none());
        for given in [&worker, &client, "cluster-token-1", "client-key-1", "lgw_own"] {
            assert!(c.recognises(given), "{given}");
        }
        assert!(!c.recognises("guess") && c.authorize("guess", Claim::Gamer).is_none());
    }

    #[test]
    fn join_secrets_are_kept_until_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            store: crate::config::StoreMode::Sqlite {
                data_dir: dir.path().to_owned(),
                sync: store::Sync::Normal,
            },
            tls_cert: Some(CertSource::Generated {
                dir: Some(dir.path().to_owned()),
                names: vec![],
            }),
            ..Config::default()
        };
        let first = creds(&config).join_token(TokenKind::Worker);
        let c = creds(&config);
        assert_eq!(c.join_token(TokenKind::Worker), first, "kept across restarts");
        let rotated = c.set(TokenKind::Worker, &tls::random_secret().unwrap()).unwrap();
        assert_ne!(rotated, first);
        assert!(!c.may_join(&first.secret) && c.may_join(&rotated.secret));
        assert_eq!(creds(&config).join_token(TokenKind::Worker), rotated, "rotation is kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join("tls/worker-join.secret");
            assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // What the store holds (rotated on another coordinator) wins, and
        // the data dir follows it.
        let stored = vec![("client".to_owned(), "from-the-store".to_owned())];
        c.adopt(&stored).unwrap();
        assert!(c.join_secret(TokenKind::Client).matches("from-the-store"));
        assert_eq!(c.join_token(TokenKind::Worker), rotated, "the other kind is left alone");
        let again = creds(&config);
        assert!(again.join_secret(TokenKind::Client).matches("from-the-store"));
        let unknown = vec![("gamer".to_owned(), "x".to_owned())];
        assert!(matches!(c.adopt(&unknown), Err(CredentialError::UnknownKind(k)) if k == "gamer"));
    }
}
