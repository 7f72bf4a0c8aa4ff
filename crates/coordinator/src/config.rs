//! The coordinator's configuration, with documented defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::tls::CertSource;

/// A shared secret (the cluster token, API keys). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// Compares in constant time, so that timing does not leak the secret.
    pub fn matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(given.as_bytes()).into()
    }

    /// The secret itself, for clients that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What an API key may do. Each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApiRole {
    /// Read cluster state, tasks, metrics and events.
    ReadOnly,
    /// Also submit, cancel and fetch results.
    Client,
    /// Also approve workers, change the configuration and shut down.
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::ReadOnly => "read-only",
            ApiRole::Client => "client",
            ApiRole::Admin => "admin",
        }
    }

    /// Reads `admin`, `client`, `read-only` (also `readonly`, `read`).
    pub fn parse(name: &str) -> Option<ApiRole> {
        match name.trim().to_ascii_lowercase().as_str() {
            "admin" => Some(ApiRole::Admin),
            "client" | "user" => Some(ApiRole::Client),
            "read-only" | "readonly" | "read_only" | "read" | "viewer" => Some(ApiRole::ReadOnly),
            _ => None,
        }
    }
}

/// An API key and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub key: Secret,
    pub role: ApiRole,
    /// What names the key where the key itself must not appear: task
    /// owners (`key:FINGERPRINT`), quotas, session bindings. The first 12
    /// hex digits of the key's SHA-256: stable while the key is, whatever
    /// its place in the list.
    pub fingerprint: std::sync::Arc<str>,
}

impl ApiKey {
    pub fn new(key: &str, role: ApiRole) -> ApiKey {
        let digest = crate::approvals::digest(key);
        ApiKey { key: Secret::new(key), role, fingerprint: std::sync::Arc::from(&digest[..12]) }
    }
}

/// Reads keys in seed 2's form, `key:role,key:role` (whitespace and newlines
/// also separate entries, `#` starts a comment line in files).
pub fn parse_api_keys(text: &str) -> Result<Vec<ApiKey>, String> {
    let mut keys = Vec::new();
    let entries = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split([',', ' ', '\t']))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    for entry in entries {
        let (key, role) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("API key entry `{}…` has no `:role`", mask(entry)))?;
        let role = ApiRole::parse(role).ok_or_else(|| {
            format!(
                "unknown role `{role}` for API key `{}…` (use admin, client or read-only)",
                mask(key)
            )
        })?;
        if key.len() < 8 {
            return Err(format!("API key `{}…` is too short (8 characters at least)", mask(key)));
        }
        keys.push(ApiKey::new(key, role));
    }
    Ok(keys)
}

/// The first characters of a secret, for error messages.
fn mask(secret: &str) -> String {
    secret.chars().take(3).collect()
}

/// Where tasks are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    /// SQLite in this directory (WAL, group commit): accepted tasks survive a crash.
    Sqlite { data_dir: PathBuf, sync: store::Sync },
    /// Memory only: a coordinator crash loses every task.
    Memory,
    /// PostgreSQL shared by several coordinators, one of which leads at a
    /// time (the lease; docs/SCALING.md). `data_dir`, when given, keeps the
    /// generated TLS certificate as SQLite's directory does.
    Postgres { target: store::Target, lease: LeaseConfig, data_dir: Option<PathBuf> },
}

/// How a coordinator on PostgreSQL competes for the leader lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The WebSocket URL peers and gamers are redirected to while this
    /// coordinator leads. Default: `ws://` (loopback) or `wss://` with the
    /// bound address (the host name for `0.0.0.0`).
    pub advertise_ws: Option<String>,
    /// The HTTP API's URL for redirects (HTTP 307). Default: like
    /// `advertise_ws`, `http://` or `https://` with the API's address.
    pub advertise_http: Option<String>,
    /// How long a lease lasts unless renewed. Default 3 s: a dead leader is
    /// replaced within this plus `poll` plus recovery.
    pub ttl: Duration,
    /// How often a standby tries to take the lease. Default 250 ms.
    pub poll: Duration,
}

impl Default for LeaseConfig {
    fn default() -> LeaseConfig {
        LeaseConfig {
            advertise_ws: None,
            advertise_http: None,
            ttl: Duration::from_secs(3),
            poll: Duration::from_millis(250),
        }
    }
}

/// Coordinator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The WebSocket protocol port. Default `0.0.0.0:8765`.
    pub ws_addr: SocketAddr,
    /// The HTTP API port; `None` to serve no HTTP. Default `0.0.0.0:8000`.
    pub http_addr: Option<SocketAddr>,
    /// The shared token peers and gamers present. Without one, only loopback
    /// clients are accepted (unless `insecure`).
    pub token: Option<Secret>,
    /// Accept non-loopback clients without a token. Dangerous: anyone who can
    /// reach the port can submit work and join as a peer.
    pub insecure: bool,
    /// The largest WebSocket frame or message accepted; larger ones close
    /// the connection with code 1009. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// The most connections at once (peers and gamers). Default 20 000.
    pub max_connections: usize,
    /// The heartbeat interval peers are told to use. Default 5 s.
    pub heartbeat_interval: Duration,
    /// Messages queued to one connection before it is dropped as too slow.
    /// Default 16 384.
    pub outbound_capacity: usize,
    /// How long shutdown waits for connections to flush. Default 2 s.
    pub shutdown_grace: Duration,
    /// The scheduler's knobs (heartbeat timeout, attempts, limits, strategy).
    pub sched: sched::Config,
    pub store: StoreMode,
    /// HTTP API keys. Without any, the API follows protected mode (loopback
    /// only, unless `insecure`), and the cluster token, if set, is an admin key.
    pub api_keys: Vec<ApiKey>,
    /// How often the event stream carries a `cluster_stats` event. Default 5 s.
    pub stats_interval: Duration,
    /// Bounds on the shell's queues and waits.
    pub limits: Limits,
    /// What tasks of each type need of a peer, known before any peer says
    /// (the executors built into this binary declare theirs); peers add
    /// theirs when they register. See [`proto::TaskNeeds`].
    pub task_needs: BTreeMap<String, proto::TaskNeeds>,
    /// Where the TLS certificate comes from. `None` (the default) means
    /// generated: kept in the store's data dir (in memory with the memory
    /// store), for `tls_names`.
    pub tls_cert: Option<CertSource>,
    /// Names and addresses the generated server certificate carries, beyond
    /// `localhost`, `127.0.0.1` and `::1`.
    pub tls_names: Vec<String>,
    /// Accept plaintext (`ws://`, `http://`) from other machines. Dangerous:
    /// tokens, keys and results then cross the network in clear text.
    pub insecure_plaintext: bool,
    /// Loopback addresses to treat as other machines (a local proxy that
    /// forwards outside traffic, or tests): protected mode and the plaintext
    /// refusal apply to them.
    pub not_local: Vec<IpAddr>,
    /// The edges: deadlines, per-address limits and byte budgets.
    pub edge: EdgeLimits,
}

/// Limits at the edge of the coordinator, where the network meets it.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// From TCP accept to a completed WebSocket upgrade (TLS included).
    /// Default 5 s.
    pub handshake_timeout: Duration,
    /// From the upgrade to a successful registration. Default 10 s.
    pub registration_timeout: Duration,
    /// A connection from which nothing (not even a pong) arrives for this
    /// long is closed (code 4002); pings go out at a third of it. Default 60 s.
    pub idle_timeout: Duration,
    /// An HTTP client must send each request's head within this, counted
    /// from the connection's start or the previous response. Default 10 s.
    pub http_header_timeout: Duration,
    /// An HTTP connection with no request in progress and no bytes moving
    /// for this long is closed. Default 60 s.
    pub http_idle_timeout: Duration,
    /// A request's body must have arrived whole within this, counted from
    /// its head; past it the request fails (400) and its connection closes,
    /// so that a body that never comes or trickles holds nothing. Default
    /// 120 s (a 16 MiB body at about 1 Mbit/s).
    pub http_body_timeout: Duration,
    /// The most HTTP connections at once. Default 1 024.
    pub max_http_connections: usize,
    /// The most connections from one address (an IPv6 /64) at once, over
    /// both ports. Default 2 048.
    pub max_connections_per_ip: usize,
    /// New connections one address may open per second (bursts of twice
    /// that). Default 200.
    pub new_connections_per_ip_per_s: u32,
    /// Bytes of partly received WebSocket messages the coordinator holds,
    /// over all connections, beyond the first 64 KiB of each; a connection
    /// that would go past it is closed with 1013 (try again later).
    /// Default 128 MiB.
    pub max_partial_frame_bytes: usize,
    /// Task payload bytes held for tasks not yet finished, in total.
    /// Default 1 GiB.
    pub max_queued_bytes: usize,
    /// The same, for one client (a gamer id, or an API key). Default 256 MiB.
    pub max_queued_bytes_per_client: usize,
    /// Unfinished tasks one client may have. Default 50 000.
    pub max_queued_tasks_per_client: usize,
    /// Submissions one client may make per second (bursts of twice that);
    /// 0 for no limit. Default 0.
    pub max_submissions_per_s: u32,
}

impl Default for EdgeLimits {
    fn default() -> EdgeLimits {
        EdgeLimits {
            handshake_timeout: Duration::from_secs(5),
            registration_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            http_body_timeout: Duration::from_secs(120),
            max_http_connections: 1024,
            max_connections_per_ip: 2048,
            new_connections_per_ip_per_s: 200,
            max_partial_frame_bytes: 128 * 1024 * 1024,
            max_queued_bytes: 1024 * 1024 * 1024,
            max_queued_bytes_per_client: 256 * 1024 * 1024,
            max_queued_tasks_per_client: 50_000,
            max_submissions_per_s: 0,
        }
    }
}

/// Bounds on the shell's queues, batches and waits, each with its default.
/// (The protocol's own limits — frame size, connections, queue length — are
/// fields of [`Config`] and of [`sched::Config`].)
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Inputs the core loop takes after one wake-up before it flushes, so
    /// that a burst costs one flush and one store batch. Default 256.
    pub inputs_per_flush: usize,
    /// Inputs waiting for the core loop; senders wait when it is full.
    /// Default 65 536.
    pub core_queue: usize,
    /// Store batches handed to the writer but not yet committed beyond
    /// which submissions are refused as `busy` (the store is the
    /// bottleneck). Also bounds the writer's queue. Default 10 000.
    pub max_store_lag: u64,
    /// Ops in one store transaction, at most. Default 50 000.
    pub max_ops_per_commit: usize,
    /// Delivery marks (an outcome reached its gamer) ride along with other
    /// store writes; alone, they are written once this many wait. Default
    /// 1 024.
    pub lazy_delivery_marks: usize,
    /// Task ids reserved in the store at a time, ahead of use, so that a
    /// restart never reuses an id a peer may have seen (`sched`'s
    /// `scheduler/ids.rs`); a restart skips at most this many. Default 1 024.
    pub id_block: u64,
    /// Messages written to a connection after one wake-up before a flush.
    /// Default 256.
    pub write_batch: usize,
    /// Events buffered per event-stream subscriber before it counts as too
    /// slow and is dropped. Default 4 096.
    pub event_buffer: usize,
    /// HTTP requests waiting for a task's result at once; more get 503.
    /// Default 10 000.
    pub max_result_waiters: usize,
    /// The longest `GET /cluster/tasks/{id}/result?timeout=`. Default 300 s.
    /// Also the longest an OpenAI API request waits in the queue.
    pub max_result_wait: Duration,
    /// Deltas of a streamed task buffered for one HTTP follower (an event
    /// stream, an OpenAI stream); one that lags further loses deltas (the
    /// final result still has the whole text). Default 1 024.
    pub stream_buffer: usize,
    /// Tasks in one page of a task list, at most. Default 1 000.
    pub max_page: usize,
    /// Tasks in a page of `GET /cluster/tasks` that asks for no `limit`.
    /// Default 100.
    pub default_page: usize,
    /// The most tasks a task list's `offset` may skip (deeper pages use the
    /// keyset `before`, which is fast at any depth). Default 100 000.
    pub max_offset: usize,
    /// Session ids (peers' and gamers') bound to credentials at once; past
    /// it new ids are refused (`busy`) until old bindings expire. Default
    /// 1 000 000.
    pub max_session_bindings: usize,
    /// How long a dashboard login lasts. Default 12 h.
    pub dashboard_session_ttl: Duration,
    /// Dashboard logins kept at once; past it the oldest ends. Default 4 096.
    pub max_dashboard_sessions: usize,
    /// A bulk cancel or retry acts on everything its filter matches, in
    /// steps of this many tasks (each one step of the core loop, so that
    /// other work goes on between them). Default 10 000.
    pub bulk_step: usize,
    /// The snapshot that reads are served from is published at most this
    /// often (and at once when workers come or go). Default 50 ms.
    pub snapshot_interval: Duration,
    /// The longest a store read waits for the store's readers to see what
    /// was acknowledged before it (the journal applies its records to SQLite
    /// within 10 ms; a store that cannot apply them is read as it is after
    /// this). Default 2 s.
    pub max_read_wait: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            inputs_per_flush: 256,
            core_queue: 65_536,
            max_store_lag: 10_000,
            max_ops_per_commit: 50_000,
            lazy_delivery_marks: 1024,
            id_block: 1024,
            write_batch: 256,
            event_buffer: 4096,
            max_result_waiters: 10_000,
            max_result_wait: Duration::from_secs(300),
            stream_buffer: 1024,
            max_page: 1000,
            default_page: 100,
            max_offset: 100_000,
            max_session_bindings: 1_000_000,
            dashboard_session_ttl: Duration::from_secs(12 * 3600),
            max_dashboard_sessions: 4096,
            bulk_step: 10_000,
            snapshot_interval: Duration::from_millis(50),
            max_read_wait: Duration::from_secs(2),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            ws_addr: SocketAddr::from(([0, 0, 0, 0], proto::DEFAULT_WS_PORT)),
            http_addr: Some(SocketAddr::from(([0, 0, 0, 0], proto::DEFAULT_HTTP_PORT))),
            token: None,
            insecure: false,
            max_frame_bytes: 16 * 1024 * 1024,
            max_connections: 20_000,
            heartbeat_interval: Duration::from_secs(5),
            outbound_capacity: 16_384,
            shutdown_grace: Duration::from_secs(2),
            sched: sched::Config::default(),
            store: StoreMode::Memory,
            api_keys: Vec::new(),
            stats_interval: Duration::from_secs(5),
            limits: Limits::default(),
            task_needs: BTreeMap::new(),
            tls_cert: None,
            tls_names: Vec::new(),
            insecure_plaintext: false,
            not_local: Vec::new(),
            edge: EdgeLimits::default(),
        }
    }
}

impl Config {
    /// Whether clients from `addr` may connect without a credential:
    /// loopback always; others only in insecure mode.
    pub fn admits(&self, addr: &SocketAddr) -> bool {
        self.is_local(addr) || self.insecure
    }

    /// Whether `addr` is this machine (loopback, IPv4-mapped included), and
    /// not listed in `not_local`.
    pub fn is_local(&self, addr: &SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        ip.is_loopback() && !self.not_local.iter().any(|n| n.to_canonical() == ip)
    }

    /// Whether plaintext (no TLS) is accepted from `addr`.
    pub fn plaintext_allowed(&self, addr: &SocketAddr) -> bool {
        self.is_local(addr) || self.insecure_plaintext
    }

    /// The directory that keeps this coordinator's own files (the SQLite
    /// store, the generated certificate, join secrets), when it has one.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        match &self.store {
            StoreMode::Sqlite { data_dir, .. } => Some(data_dir),
            StoreMode::Postgres { data_dir, .. } => data_dir.as_deref(),
            StoreMode::Memory => None,
        }
    }

    /// Where the certificates come from.
    pub fn cert_source(&self) -> CertSource {
        match &self.tls_cert {
            Some(source) => source.clone(),
            None => CertSource::Generated {
                dir: self.data_dir().map(std::path::Path::to_path_buf),
                names: self.tls_names.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter"));
        assert!(!s.matches("hunter22"));
    }

    #[test]
    fn protected_mode_admits_loopback_only() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let mut config = Config::default();
        assert!(config.admits(&local) && config.admits(&local6) && config.admits(&mapped));
        assert!(!config.admits(&remote));
        assert!(config.plaintext_allowed(&local) && !config.plaintext_allowed(&remote));
        config.not_local = vec!["127.0.0.1".parse().unwrap()];
        assert!(!config.admits(&local) && !config.admits(&mapped) && config.admits(&local6));
        assert!(!config.plaintext_allowed(&local));
        config.insecure = true;
        config.insecure_plaintext = true;
        assert!(config.admits(&remote) && config.plaintext_allowed(&remote));
    }

    #[test]
    fn api_keys_read_in_seed_form() {
        let keys =
            parse_api_keys("adminkey1:admin, clientkey1:client\n# comment\nviewerkey:read-only")
                .unwrap();
        let roles: Vec<_> = keys.iter().map(|k| k.role).collect();
        assert_eq!(roles, [ApiRole::Admin, ApiRole::Client, ApiRole::ReadOnly]);
        assert!(keys[0].key.matches("adminkey1"));
        assert!(parse_api_keys("").unwrap().is_empty());
        let err = parse_api_keys("secretkey:root").unwrap_err();
        assert!(err.contains("unknown role `root`") && !err.contains("secretkey"), "{err}");
        assert!(parse_api_keys("nocolonhere").unwrap_err().contains("no `:role`"));
        assert!(parse_api_keys("short:admin").unwrap_err().contains("too short"));
        assert!(ApiRole::Admin > ApiRole::Client && ApiRole::Client > ApiRole::ReadOnly);
    }
}
