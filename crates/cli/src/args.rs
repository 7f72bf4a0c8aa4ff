//! The command line, as clap derives it. Every command has examples in its
//! long help.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Pool machines' CPUs and GPUs — old consumer cards included — into one cluster.
#[derive(Debug, Parser)]
#[command(name = "legacygpu", version, about, propagate_version = true)]
#[command(after_long_help = "Examples:\n  \
    legacygpu cluster start\n  \
    legacygpu worker start --coordinator ws://127.0.0.1:8765\n  \
    legacygpu task submit --type echo --data '{\"hello\":\"world\"}' --wait")]
pub struct Cli {
    /// Log level or filter (e.g. `debug`, `coordinator=trace`); default `info`, or `RUST_LOG`.
    #[arg(long, global = true, env = "LEGACYGPU_LOG")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run and manage the coordinator.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Run a worker (peer) that executes tasks.
    #[command(subcommand)]
    Worker(WorkerCmd),
    /// Submit tasks and follow them.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Run a whole cluster locally (a coordinator and two workers) and a
    /// short mix of real tasks through it.
    Demo(Demo),
    /// A live terminal view of the cluster: workers, queue, throughput, events.
    #[command(after_long_help = "Keys: q (or Esc, Ctrl-C) quits.\n\nExamples:\n  \
        legacygpu monitor\n  \
        legacygpu monitor --api-url http://10.0.0.2:8000 --api-key \"$KEY\" --interval 1")]
    Monitor(Monitor),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_long_help = "Examples:\n  \
        legacygpu completions bash > /etc/bash_completion.d/legacygpu\n  \
        legacygpu completions zsh > \"${fpath[1]}/_legacygpu\"")]
    Completions { shell: clap_complete::Shell },
    /// Generate reference docs (docs/CLI.md, docs/openapi.json).
    #[command(hide = true)]
    Docs {
        #[arg(value_parser = ["cli", "openapi", "api"])]
        what: String,
    },
    /// Load a coordinator with no-op tasks (or idle peers) and measure it.
    #[command(after_long_help = "Examples:\n  \
        legacygpu bench                                  # throughput, store on\n  \
        legacygpu bench --no-store --tasks 200000\n  \
        legacygpu bench --rate 20000 --duration 10       # latency at a fixed offered load\n  \
        legacygpu bench --idle-peers 10000 --duration 30 # memory and lag with 10 000 peers\n  \
        legacygpu bench --coordinator ws://10.0.0.5:8765 --token \"$LEGACYGPU_TOKEN\"")]
    Bench(Bench),
}

#[derive(Debug, Args)]
pub struct Bench {
    /// Load this running coordinator (ws://HOST:PORT) instead of starting
    /// one; with several comma-separated, the one that leads.
    #[arg(long)]
    pub coordinator: Option<String>,

    /// The cluster token, for a coordinator that requires one.
    #[arg(long, env = "LEGACYGPU_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Connect over TLS (wss://) to the local coordinator, pinning its CA.
    #[arg(long, conflicts_with = "coordinator")]
    pub tls: bool,

    /// For a wss:// --coordinator: trust exactly the CA with this SHA-256.
    #[arg(long)]
    pub ca_hash: Option<String>,

    /// The local coordinator keeps tasks in memory only (store off).
    #[arg(long)]
    pub no_store: bool,

    /// The local coordinator's store sync mode: `normal` or `full`.
    #[arg(long, default_value = "normal", value_parser = ["full", "normal"])]
    pub sync: String,

    /// No-op peers.
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub peers: usize,

    /// Slots (tasks at once) per peer.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub slots: u32,

    /// Run each peer as a separate process instead of a task of this one.
    #[arg(long)]
    pub peer_processes: bool,

    /// Gamers (clients) submitting tasks.
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub gamers: usize,

    /// Tasks to run at most.
    #[arg(long, default_value_t = 200_000)]
    pub tasks: u64,

    /// Seconds to run at most (the run ends at whichever limit comes first).
    #[arg(long, default_value_t = 30.0, value_parser = positive_secs)]
    pub duration: f64,

    /// Tasks in flight over all gamers (throughput mode).
    #[arg(long, default_value_t = 4096)]
    pub in_flight: usize,

    /// Offer this many tasks per second, on schedule (latency mode, open loop).
    #[arg(long, value_parser = positive_secs)]
    pub rate: Option<f64>,

    /// Scale mode: hold this many idle peers heartbeating and measure the
    /// coordinator's memory, CPU and lag.
    #[arg(long)]
    pub idle_peers: Option<usize>,

    /// Heartbeat interval the local coordinator asks peers for, in seconds.
    #[arg(long, default_value_t = 5.0, value_parser = positive_secs)]
    pub heartbeat_interval: f64,

    /// Loopback source addresses to spread idle peers over (127.0.0.1…N).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: u8,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Run as one no-op peer until killed (used by --peer-processes).
    #[arg(long, hide = true)]
    pub peer_agent: bool,
}

#[derive(Debug, Args)]
pub struct Demo {
    /// Rounds of work: each one physics step run, one image classified and two
    /// GPU kernels (a matmul and an n-body run); the generation runs once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub tasks: u64,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Start the coordinator (WebSocket protocol port and HTTP API).
    #[command(after_long_help = "Examples:\n  \
        legacygpu cluster start\n  \
        legacygpu cluster start --bind 0.0.0.0:8765 --token \"$LEGACYGPU_TOKEN\"\n  \
        legacygpu cluster start --daemon --data-dir /var/lib/legacygpu\n  \
        legacygpu cluster start --bind 127.0.0.1:0 --heartbeat-timeout 3")]
    Start(Box<ClusterStart>),
    /// Stop the coordinator (through the API; or, for one started here with
    /// --daemon, by its pid file).
    #[command(after_long_help = "Examples:\n  \
        legacygpu cluster stop\n  \
        legacygpu cluster stop --api-url http://10.0.0.2:8000 --api-key \"$ADMIN_KEY\"")]
    Stop(Remote),
    /// Health and metrics of the cluster.
    #[command(after_long_help = "Examples:\n  \
        legacygpu cluster status\n  \
        legacygpu cluster status --json | jq .health.status")]
    Status(Remote),
    /// The workers connected to the cluster (`cluster workers list` works too).
    #[command(args_conflicts_with_subcommands = true)]
    #[command(after_long_help = "Examples:\n  \
        legacygpu cluster workers\n  \
        legacygpu cluster workers list --status unhealthy --json")]
    Workers {
        #[command(subcommand)]
        action: Option<WorkersAction>,
        #[command(flatten)]
        args: WorkersList,
    },
    /// The join tokens: show them, or rotate them without a restart (admin).
    #[command(subcommand)]
    #[command(after_long_help = "Examples:\n  \
        legacygpu cluster token show\n  \
        legacygpu cluster token rotate --kind worker --api-url https://10.0.0.2:8000 --ca-hash \"$CA_HASH\" --api-key \"$ADMIN_KEY\"")]
    Token(TokenCmd),
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Print the worker join token, the client token and the CA hash.
    Show(Remote),
    /// Make new tokens; the old ones admit nobody from now on (workers that
    /// already joined keep their own credentials).
    Rotate {
        #[command(flatten)]
        remote: Remote,
        /// Which token: worker, client or both.
        #[arg(long, default_value = "both", value_parser = ["worker", "client", "both"])]
        kind: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkersAction {
    /// List the connected workers.
    List(WorkersList),
}

#[derive(Debug, Clone, Args)]
pub struct WorkersList {
    #[command(flatten)]
    pub remote: Remote,
    /// Only workers in this state.
    #[arg(long, value_parser = names(codes::WorkerStatus::ALL.iter().map(|s| s.as_str())))]
    pub status: Option<String>,
}

/// How read commands reach the coordinator's HTTP API. Flags win over the
/// environment, which wins over ~/.config/legacygpu/cli.json.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The coordinator's HTTP API. Default: http://127.0.0.1:8000. Several
    /// comma-separated: `cluster status` shows each one's role; other
    /// commands use the leader (else the first that answers).
    #[arg(long, env = "LEGACYGPU_API_URL")]
    pub api_url: Option<String>,
    /// An API key (or the cluster token, when no API keys are configured).
    #[arg(long, env = "LEGACYGPU_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// For https://: trust exactly the CA with this SHA-256 (64 hex digits,
    /// as `cluster start` prints it) instead of the system's roots.
    #[arg(long, env = "LEGACYGPU_CA_HASH")]
    pub ca_hash: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Monitor {
    #[command(flatten)]
    pub remote: Remote,
    /// The coordinator by its protocol address, as seed 2 named it
    /// (`tcp://HOST:PORT`, or ws[s]://): the monitor reads the HTTP API on
    /// that host's port 8000. `--api-url` names the API itself.
    #[arg(long, conflicts_with = "api_url")]
    pub coordinator: Option<String>,
    /// Seconds between refreshes of the worker table.
    #[arg(long, default_value_t = 2.0, value_parser = positive_secs)]
    pub interval: f64,
}

#[derive(Debug, Args)]
pub struct ClusterStart {
    /// Address of the WebSocket protocol port (peers and gamers). Seed 2's
    /// `--bind-address tcp://HOST:PORT` is read the same.
    #[arg(long, visible_alias = "bind-address", default_value = "0.0.0.0:8765", env = "LEGACYGPU_BIND", value_parser = bind_address)]
    pub bind: SocketAddr,

    /// Address of the HTTP API (REST, events, /metrics, /docs).
    #[arg(
        long,
        default_value = "0.0.0.0:8000",
        env = "LEGACYGPU_HTTP",
        conflicts_with = "no_http"
    )]
    pub http: SocketAddr,

    /// Serve no HTTP API.
    #[arg(long)]
    pub no_http: bool,

    /// HTTP API keys as `key:role,key:role` (roles: admin, client, read-only).
    /// Without keys the API follows protected mode, and the --token, if set,
    /// is the admin key.
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,

    /// A file of API keys, one `key:role` per line (`#` comments).
    #[arg(long, env = "LEGACYGPU_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Seconds between `cluster_stats` events on the event stream.
    #[arg(long, default_value_t = 5.0, value_parser = positive_secs)]
    pub stats_interval: f64,

    /// Shared token that peers and gamers must present. Without one, only
    /// loopback clients are accepted (protected mode).
    #[arg(long, env = "LEGACYGPU_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Accept clients from other machines without a token. Dangerous: anyone
    /// who can reach the port can join as a peer and submit work.
    #[arg(long)]
    pub insecure: bool,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub edge: EdgeArgs,

    /// How a task picks among the free peers able to run it: ROUND_ROBIN,
    /// LEAST_LOADED, GPU_MATCH, LATENCY or ADAPTIVE (see docs/STRATEGIES.md).
    #[arg(long, default_value = "ADAPTIVE", value_parser = parse_strategy)]
    pub strategy: sched::Strategy,

    /// Verify tasks that do not say: run each on distinct workers and accept
    /// a result once enough agree. `2/2`, `3/2`, `2/2/adaptive` (trusted
    /// workers replicated one time in CV), `replicas=2,quorum=2`, `adaptive`
    /// or `off` (see docs/VERIFICATION.md). Default: off.
    #[arg(long, value_parser = parse_policy)]
    pub verify: Option<sched::verify::Policy>,

    /// The chance, per task sent to a worker, that a canary (a task whose
    /// answer is known) follows for the same worker, 0–1.
    #[arg(long, default_value_t = 0.0, value_parser = unit_fraction)]
    pub canary_rate: f64,

    /// Invalid results (not yet forgiven) that quarantine a worker.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub quarantine_after: u32,

    /// Replicas a disagreement may add beyond a task's own before it fails
    /// with `no_quorum`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub max_extra_replicas: u32,

    /// Seconds of silence after which a peer is declared dead and its tasks requeued.
    #[arg(long, default_value_t = 15.0, value_parser = positive_secs)]
    pub heartbeat_timeout: f64,

    /// Seconds between heartbeats that peers are told to use.
    #[arg(long, default_value_t = 5.0, value_parser = positive_secs)]
    pub heartbeat_interval: f64,

    /// Failed attempts (peer lost, retryable error) that end a task, unless it says otherwise.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Most tasks waiting in the queue; beyond, submissions get a "busy" error.
    #[arg(long, default_value_t = 100_000)]
    pub max_queued: usize,

    /// Largest WebSocket message accepted, in bytes; larger closes that connection (code 1009).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Seconds finished tasks and their results are kept for retrieval.
    #[arg(long, default_value_t = 3600.0, value_parser = positive_secs)]
    pub result_ttl: f64,

    /// Directory of the task store (SQLite). Default: $XDG_DATA_HOME/legacygpu,
    /// or ~/.local/share/legacygpu.
    #[arg(long, env = "LEGACYGPU_DATA_DIR", conflicts_with = "no_store")]
    pub data_dir: Option<PathBuf>,

    /// Keep tasks in memory only: a coordinator crash or restart loses every
    /// queued and running task, and results not yet delivered.
    #[arg(long)]
    pub no_store: bool,

    /// Where tasks are kept: a data directory (SQLite, like --data-dir) or a
    /// PostgreSQL URL (postgres://USER:PASSWORD@HOST/DB). On PostgreSQL,
    /// several coordinators share the store and one leads at a time; the
    /// others stand by and redirect clients (docs/SCALING.md).
    #[arg(long, env = "LEGACYGPU_STORE", hide_env_values = true, conflicts_with = "no_store")]
    pub store: Option<String>,

    /// On PostgreSQL: the WebSocket URL clients are sent to while this
    /// coordinator leads. Default: ws:// (loopback) or wss:// with the
    /// --bind address (the host name for 0.0.0.0).
    #[arg(long, env = "LEGACYGPU_ADVERTISE")]
    pub advertise: Option<String>,

    /// On PostgreSQL: the HTTP API's URL for redirects (HTTP 307) while
    /// this coordinator leads. Default: like --advertise, with the --http address.
    #[arg(long, env = "LEGACYGPU_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,

    /// On PostgreSQL: seconds the leader lease lasts unless renewed (it is
    /// renewed four times as often). A dead leader is replaced after about this long.
    #[arg(long, default_value_t = 3.0, value_parser = positive_secs)]
    pub lease_ttl: f64,

    /// How hard each commit tries to reach the disk: `normal` (an
    /// acknowledged task survives the coordinator crashing or being killed;
    /// a power cut or kernel crash may lose the last moments' tasks) or
    /// `full` (an fsync per commit: survives a power cut too, at about twice
    /// the latency per task).
    #[arg(long, default_value = "normal", value_parser = ["full", "normal"])]
    pub sync: String,

    /// Run in the background: print the addresses, write a pid file (for
    /// `cluster stop`) and log to --log-file.
    #[arg(long)]
    pub daemon: bool,

    /// With --daemon: the log file. Default: coordinator.log in the state
    /// directory ($XDG_STATE_HOME/legacygpu or ~/.local/state/legacygpu).
    #[arg(long, requires = "daemon")]
    pub log_file: Option<PathBuf>,
}

/// TLS on both ports.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Serve this PEM certificate chain (server certificate first; clients
    /// pin the last one) instead of the generated one. Reloaded on SIGHUP.
    #[arg(long, requires = "tls_key", env = "LEGACYGPU_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert", env = "LEGACYGPU_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// More DNS names or IP addresses for the generated certificate (the host
    /// name, the --bind address, localhost and 127.0.0.1 are always in it).
    #[arg(long, value_delimiter = ',', env = "LEGACYGPU_TLS_SAN")]
    pub tls_san: Vec<String>,

    /// Accept plaintext (ws://, http://) from other machines too. Dangerous:
    /// tokens, keys and results then cross the network in clear text.
    #[arg(long)]
    pub insecure_plaintext: bool,

    /// Treat connections from this loopback address as coming from another
    /// machine (e.g. a local proxy forwarding outside traffic).
    #[arg(long, value_delimiter = ',')]
    pub not_local: Vec<IpAddr>,
}

/// Deadlines, per-address limits and budgets at the edge.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Seconds from connecting to a finished WebSocket upgrade (TLS included).
    #[arg(long, default_value_t = 5.0, value_parser = positive_secs)]
    pub handshake_timeout: f64,

    /// Seconds from the upgrade to a registration.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    pub registration_timeout: f64,

    /// Seconds without anything from a connection (pings are sent) before it is closed.
    #[arg(long, default_value_t = 60.0, value_parser = positive_secs)]
    pub idle_timeout: f64,

    /// Seconds an HTTP client has to send each request's head (also bounds idle keep-alive).
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    pub http_header_timeout: f64,

    /// Seconds an HTTP connection may sit with no request running and no bytes moving.
    #[arg(long, default_value_t = 60.0, value_parser = positive_secs)]
    pub http_idle_timeout: f64,

    /// Seconds a request's body has to arrive whole, from its head (a body
    /// that never comes or trickles fails with 400 and its connection closes).
    #[arg(long, default_value_t = 120.0, value_parser = positive_secs)]
    pub http_body_timeout: f64,

    /// Most WebSocket connections at once (also bounded by the open-file limit).
    #[arg(long, default_value_t = 20_000)]
    pub max_connections: usize,

    /// Most connections from one address (an IPv6 /64) at once, both ports.
    #[arg(long, default_value_t = 2048)]
    pub max_connections_per_ip: usize,

    /// New connections one address may open per second (bursts of twice that); 0: no limit.
    #[arg(long, default_value_t = 200)]
    pub new_connections_per_ip: u32,

    /// Bytes of partly received messages held over all connections (beyond 64 KiB each).
    #[arg(long, default_value_t = 128 * 1024 * 1024)]
    pub max_partial_frame_bytes: usize,

    /// Task payload bytes held for unfinished tasks, in total.
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    pub max_queued_bytes: usize,

    /// Task payload bytes held for one client's unfinished tasks.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub max_queued_bytes_per_client: usize,

    /// Unfinished tasks one client (gamer id or API key) may have.
    #[arg(long, default_value_t = 50_000)]
    pub max_queued_tasks_per_client: usize,

    /// Submissions one client may make per second (bursts of twice that); 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub max_submissions_per_s: u32,
}

#[derive(Debug, Subcommand)]
pub enum WorkerCmd {
    /// Start a worker that joins a coordinator and runs tasks.
    #[command(after_long_help = "Examples:\n  \
        legacygpu worker start --join \"$JOIN_TOKEN\" --coordinator wss://10.0.0.2:8765\n  \
        legacygpu worker start --coordinator ws://127.0.0.1:8765 --token \"$LEGACYGPU_TOKEN\"\n  \
        legacygpu worker start --peer-id rx580-box --slots 2 --models-dir /srv/models")]
    Start(Box<WorkerStart>),
    /// Stop workers started on this machine (by their pid files): running
    /// tasks may finish within the worker's drain timeout.
    #[command(after_long_help = "Examples:\n  \
        legacygpu worker stop                         # the one worker running here\n  \
        legacygpu worker stop --peer-id rx580-box\n  \
        legacygpu worker stop --all")]
    Stop(WorkerStop),
    /// List workers started on this machine.
    #[command(after_long_help = "Examples:\n  \
        legacygpu worker list\n  \
        legacygpu worker list --json")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a worker's own credential (admin): its connection is closed at
    /// once, and it can come back only by joining again.
    #[command(after_long_help = "Examples:\n  \
        legacygpu worker revoke rx580-box\n  \
        legacygpu worker revoke rx580-box --api-url https://10.0.0.2:8000 --ca-hash \"$CA_HASH\" --api-key \"$ADMIN_KEY\"")]
    Revoke {
        #[command(flatten)]
        remote: Remote,
        /// The worker's peer id.
        peer_id: String,
    },
    /// Drain a worker (admin): it gets nothing new, finishes what it runs,
    /// then is told to leave and does not reconnect.
    #[command(after_long_help = "Examples:\n  \
        legacygpu worker drain rx580-box")]
    Drain {
        #[command(flatten)]
        remote: Remote,
        /// The worker's peer id.
        peer_id: String,
    },
    /// Pause a worker (admin): it keeps its connection and running tasks
    /// and gets nothing new until resumed.
    #[command(after_long_help = "Examples:\n  \
        legacygpu worker pause rx580-box")]
    Pause {
        #[command(flatten)]
        remote: Remote,
        /// The worker's peer id.
        peer_id: String,
    },
    /// Resume a paused worker, or one being drained that has not yet left (admin).
    #[command(after_long_help = "Examples:\n  \
        legacygpu worker resume rx580-box")]
    Resume {
        #[command(flatten)]
        remote: Remote,
        /// The worker's peer id.
        peer_id: String,
    },
    /// Lift a worker's quarantine (admin): it gets work again, starting over
    /// as a new worker (always replicated until trusted again).
    #[command(after_long_help = "Examples:\n  \
        legacygpu worker clear rx580-box\n  \
        legacygpu worker clear rx580-box --api-url http://10.0.0.2:8000 --api-key \"$ADMIN_KEY\"")]
    Clear(WorkerClear),
}

#[derive(Debug, Args)]
pub struct WorkerClear {
    #[command(flatten)]
    pub remote: Remote,
    /// The worker's peer id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct WorkerStop {
    /// The worker to stop. Without it (and without --all), the one worker
    /// running on this machine, as the seed's `legacygpu worker stop`.
    #[arg(long, conflicts_with = "all")]
    pub peer_id: Option<String>,
    /// Stop every worker started on this machine.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct WorkerStart {
    #[command(flatten)]
    pub conn: Connection,

    /// The worker join token `cluster start` printed (lgj1-…): trusts exactly
    /// the coordinator's CA (needs wss://), and trades the token for this
    /// worker's own credential, kept for later runs.
    #[arg(long, env = "LEGACYGPU_JOIN_TOKEN", hide_env_values = true)]
    pub join: Option<String>,

    /// Where this worker keeps its own credential. Default: a file in the
    /// state directory ($XDG_STATE_HOME/legacygpu/credentials/).
    #[arg(long)]
    pub credential_file: Option<PathBuf>,

    /// This peer's id; reconnecting with the same id resumes its session.
    /// Default: the host name.
    #[arg(long, env = "LEGACYGPU_PEER_ID")]
    pub peer_id: Option<String>,

    /// Tasks run at once. Default: the number of CPU cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub slots: Option<u32>,

    /// Seconds between heartbeats (default: what the coordinator says, 5 s).
    #[arg(long, value_parser = positive_secs)]
    pub heartbeat_interval: Option<f64>,

    /// Seconds without a word from the coordinator (pings go out at a third
    /// of it) after which it is given up for the next URL: a frozen
    /// coordinator keeps its socket open. Default: 3 given several
    /// coordinator URLs (about when a standby takes the lease), 15 given one.
    #[arg(long, value_parser = positive_secs)]
    pub silence_timeout: Option<f64>,

    /// On shutdown, seconds running tasks may finish before they are returned to the queue.
    #[arg(long, default_value_t = 30.0, value_parser = nonnegative_secs)]
    pub drain_timeout: f64,

    /// Task types to offer (default: every executor this worker has).
    #[arg(long, value_delimiter = ',')]
    pub task_types: Option<Vec<String>>,

    /// Who runs this worker (a person or an organisation): replicas of one
    /// verified task never go to two workers of the same owner
    /// (docs/VERIFICATION.md). Default: none declared.
    #[arg(long, env = "LEGACYGPU_OWNER", value_parser = owner_name)]
    pub owner: Option<String>,

    #[command(flatten)]
    pub backends: Backends,
}

fn owner_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > proto::MAX_ID_LEN || s.chars().any(char::is_control) {
        return Err(format!(
            "an owner is 1 to {} bytes without control characters",
            proto::MAX_ID_LEN
        ));
    }
    Ok(s.to_owned())
}

/// Which heavy executors a worker sets up.
#[derive(Debug, Clone, Args)]
pub struct Backends {
    /// Directory of models: ONNX classifiers (NAME/model.onnx, NAME/labels.txt,
    /// optional NAME/config.json) enable the `inference` task type; GGUF
    /// language models (NAME.gguf or NAME/model.gguf) enable `generate`.
    #[arg(long, env = "LEGACYGPU_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,

    /// What runs the ONNX models: `tract` (the CPU), `ort-webgpu` (ONNX
    /// Runtime's WebGPU EP on the GPU; the worker does not start if it cannot
    /// be set up) or `auto` (the GPU when it works, else tract with a warning).
    #[arg(long, env = "LEGACYGPU_INFERENCE_BACKEND", default_value = "tract", value_parser = inference_backend)]
    pub inference_backend: exec_inference::BackendKind,

    /// libonnxruntime.so (e.g. from the PyPI `onnxruntime` wheel's
    /// onnxruntime/capi/), for the ort-webgpu backend.
    #[arg(long, env = "LEGACYGPU_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,

    /// libonnxruntime_providers_webgpu.so (from the PyPI
    /// `onnxruntime-ep-webgpu` wheel), for the ort-webgpu backend.
    #[arg(long, env = "LEGACYGPU_ORT_WEBGPU_EP")]
    pub ort_webgpu_ep: Option<PathBuf>,

    /// Layers of each GGUF model to put on the GPU: `auto` (every layer that
    /// fits in the GPU's free memory; none without a Vulkan GPU), `all`, or a
    /// number (0: CPU only).
    #[arg(long, default_value = "auto", value_parser = gpu_layers)]
    pub gpu_layers: exec_llm::GpuLayers,

    /// Sequences each GGUF model generates at once, batched on one copy of
    /// the model; more requests wait for a free one.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub llm_slots: u32,

    /// Tokens of each sequence (prompt and completion), at most what the
    /// model was trained for. Each slot holds a KV cache of this size.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub llm_context: u32,

    /// Use no GPU even if one is present: no `gpu` tasks come to this worker,
    /// and GGUF models run on the CPU whatever --gpu-layers says (ONNX models
    /// follow --inference-backend, tract on the CPU by default).
    #[arg(long)]
    pub no_gpu: bool,

    /// Do not use software GPU adapters such as Mesa's lavapipe.
    #[arg(long)]
    pub no_software_gpu: bool,
}

/// How clients reach the coordinator.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The coordinator's WebSocket URL, or several comma-separated (the
    /// coordinators of one PostgreSQL store: the leader is found and
    /// followed). Default: ws://127.0.0.1:8765. Seed 2's `tcp://HOST:PORT`
    /// names the same port: ws:// on this machine, wss:// elsewhere.
    #[arg(long, env = "LEGACYGPU_COORDINATOR")]
    pub coordinator: Option<String>,

    /// The credential: the cluster token, an API key, or the client token
    /// (`lgj1-…`, which also pins the coordinator's CA for wss://).
    #[arg(long, env = "LEGACYGPU_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// For wss://: trust exactly the CA with this SHA-256 (64 hex digits, as
    /// `cluster start` prints it) instead of the system's roots.
    #[arg(long, env = "LEGACYGPU_CA_HASH")]
    pub ca_hash: Option<String>,
}

impl Connection {
    /// The flag or environment, else the config file.
    pub fn ca_hash(&self) -> anyhow::Result<Option<String>> {
        Ok(match &self.ca_hash {
            Some(h) => Some(h.clone()),
            None => crate::remote::CliConfig::load()?.ca_hash,
        })
    }

    /// The flag or environment, else `~/.config/legacygpu/cli.json`, else local.
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(match &self.coordinator {
            Some(url) => seed_urls(url),
            None => crate::remote::CliConfig::load()?
                .coordinator
                .unwrap_or_else(|| "ws://127.0.0.1:8765".to_owned()),
        })
    }

    /// The flag or environment, else the config file.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        Ok(match &self.token {
            Some(t) => Some(t.clone()),
            None => crate::remote::CliConfig::load()?.token,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Submit a task.
    #[command(after_long_help = "Examples:\n  \
        legacygpu task submit --type echo --data '{\"x\": 1}' --wait\n  \
        legacygpu task submit --type physics --data @scene.json --priority HIGH --wait\n  \
        legacygpu task submit --model resnet50 --input image.jpg --wait\n  \
        legacygpu task submit --type generate --model llama3.2-3b --prompt \"The RX 580 is\"\n  \
        legacygpu task submit --type generate --model llama3.2-3b --chat \"What is Vulkan?\" --temperature 0\n  \
        legacygpu task submit --batch tasks.jsonl")]
    // Boxed: its flags make it far larger than the other commands.
    Submit(Box<TaskSubmit>),
    /// Where a task stands.
    #[command(after_long_help = "Examples:\n  \
        legacygpu task status t-42\n  \
        legacygpu task status t-42 --json")]
    Status(TaskRef),
    /// A task's result; waits up to --timeout seconds for it to finish.
    #[command(
        after_long_help = "Exit codes: 0 completed, 3 failed/cancelled/timed out, 4 not finished yet.\n\nExamples:\n  \
        legacygpu task result t-42\n  \
        legacygpu task result t-42 --timeout 60"
    )]
    Result(TaskResultArgs),
    /// Tasks the coordinator holds (live ones, and finished ones still kept).
    #[command(after_long_help = "Examples:\n  \
        legacygpu task list\n  \
        legacygpu task list --status failed --json")]
    List(TaskListArgs),
    /// Cancel a task (a running one is stopped on its worker).
    #[command(after_long_help = "Examples:\n  \
        legacygpu task cancel t-42")]
    Cancel(TaskRef),
    /// Run a failed, cancelled or timed-out task again under the same id.
    #[command(after_long_help = "Examples:\n  \
        legacygpu task retry t-42")]
    Retry(TaskRef),
}

#[derive(Debug, Args)]
pub struct TaskRef {
    #[command(flatten)]
    pub remote: Remote,
    /// The cluster task id (t-42), as `task submit` prints it.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct TaskResultArgs {
    #[command(flatten)]
    pub task: TaskRef,
    /// Seconds to wait for the task to finish.
    #[arg(long, default_value_t = 0.0, value_parser = nonnegative_secs)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct TaskListArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// Only tasks in this state.
    #[arg(long, value_parser = names(codes::TaskState::ALL.iter().map(|s| s.as_str())))]
    pub status: Option<String>,
    /// Only tasks of this type.
    #[arg(long = "type")]
    pub task_type: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
}

#[derive(Debug, Args)]
pub struct TaskSubmit {
    #[command(flatten)]
    pub conn: Connection,

    /// The task type (echo, sleep, physics, inference, gpu, …).
    #[arg(long = "type", required_unless_present_any = ["model", "batch"])]
    pub task_type: Option<String>,

    /// Submit many tasks from a file: JSON lines (or one JSON array) of
    /// `{"task_type": …, "data": …, "priority": …, "timeout_s": …}`; shows
    /// progress, waits for every outcome and prints a summary.
    #[arg(long, conflicts_with_all = [
        "model", "task_type", "task_id", "data", "input", "top_k", "priority", "timeout",
        "queue_timeout", "verify", "wait",
    ])]
    pub batch: Option<PathBuf>,

    /// With --batch: tasks in flight at once.
    #[arg(long, default_value_t = 256, requires = "batch")]
    pub in_flight: usize,

    /// With --batch: print the summary as JSON.
    #[arg(long, requires = "batch")]
    pub json: bool,

    /// The task's data: JSON text, or @FILE to read it from a file.
    #[arg(long, default_value = "{}", conflicts_with = "model")]
    pub data: String,

    /// The model: with `--input`, the one to classify the image with
    /// (inference); with `--prompt` or `--chat`, the one to generate with.
    #[arg(long)]
    pub model: Option<String>,

    /// Generation (`--prompt`, `--chat` and their options).
    #[command(flatten)]
    pub generation: crate::generate::GenerateArgs,

    /// Inference shorthand: the image (JPEG or PNG) to classify.
    #[arg(long, requires = "model")]
    pub input: Option<PathBuf>,

    /// Inference: how many labels to return (default 5). Generation:
    /// sample from the k likeliest tokens only (default 40; 0 is no limit).
    #[arg(long, requires = "model")]
    pub top_k: Option<u32>,

    /// Priority: LOW, NORMAL, HIGH, CRITICAL or an integer (higher runs first).
    #[arg(long, value_parser = parse_priority)]
    pub priority: Option<proto::Priority>,

    /// Seconds the task may run on a peer.
    #[arg(long, value_parser = positive_secs)]
    pub timeout: Option<f64>,

    /// Seconds the task may wait for a worker that can run it (for
    /// instance one serving its model) before it ends `timed_out`; the
    /// coordinator's default is an hour.
    #[arg(long, value_parser = positive_secs)]
    pub queue_timeout: Option<f64>,

    /// Your own id for the task.
    #[arg(long)]
    pub task_id: Option<String>,

    /// Verify the result: `2/2` (two distinct workers must agree), `3/2`,
    /// `2/2/adaptive`, or `off` (see docs/VERIFICATION.md).
    #[arg(long, value_parser = parse_policy)]
    pub verify: Option<sched::verify::Policy>,

    /// Wait for the result and print it.
    #[arg(long)]
    pub wait: bool,
}

fn inference_backend(s: &str) -> Result<exec_inference::BackendKind, String> {
    s.parse()
}

fn gpu_layers(s: &str) -> Result<exec_llm::GpuLayers, String> {
    s.parse()
}

/// Seed 2's coordinator addresses (`tcp://HOST:PORT`, from its ZeroMQ
/// design) as the WebSocket URLs they name: ws:// for this machine (the
/// coordinator takes plaintext only from it), wss:// for any other; other
/// entries of the list are left as they are.
pub fn seed_urls(list: &str) -> String {
    let one = |url: &str| match url.trim().strip_prefix("tcp://") {
        Some(addr) => {
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let local = host == "localhost"
                || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            format!("{}://{addr}", if local { "ws" } else { "wss" })
        }
        None => url.trim().to_owned(),
    };
    list.split(',').map(one).collect::<Vec<_>>().join(",")
}

/// A bind address, `HOST:PORT` or seed 2's `tcp://HOST:PORT`.
fn bind_address(s: &str) -> Result<SocketAddr, String> {
    let addr = s.trim().strip_prefix("tcp://").unwrap_or(s.trim());
    addr.parse().map_err(|e| format!("`{s}` is not an address (HOST:PORT, e.g. 0.0.0.0:8765): {e}"))
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

fn nonnegative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds")),
    }
}

fn parse_strategy(s: &str) -> Result<sched::Strategy, String> {
    sched::Strategy::parse(s).ok_or_else(|| {
        let names: Vec<_> = sched::Strategy::ALL.iter().map(|s| s.name()).collect();
        format!("`{s}` is not one of {}", names.join(", "))
    })
}

fn parse_policy(s: &str) -> Result<sched::verify::Policy, String> {
    sched::verify::Policy::parse(s).map_err(|e| format!("`{s}`: {e} (e.g. 2/2, 3/2/adaptive, off)"))
}

fn unit_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number from 0 to 1")),
    }
}

fn parse_priority(s: &str) -> Result<proto::Priority, String> {
    proto::Priority::parse(s)
        .ok_or_else(|| format!("`{s}` is not LOW, NORMAL, HIGH, CRITICAL or an integer"))
}

/// A flag's value must be one of `names` (a closed set's wire names).
fn names(names: impl Iterator<Item = &'static str>) -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Seed 2's commands, as its deployment guide types them, parse.
    #[test]
    fn seed_twos_addresses_and_flags_are_read() {
        use clap::Parser;
        assert_eq!(seed_urls("tcp://127.0.0.1:5555"), "ws://127.0.0.1:5555");
        assert_eq!(seed_urls("tcp://localhost:5555"), "ws://localhost:5555");
        assert_eq!(seed_urls("tcp://[::1]:5555"), "ws://[::1]:5555");
        assert_eq!(seed_urls("tcp://10.0.0.2:5555"), "wss://10.0.0.2:5555");
        assert_eq!(seed_urls("tcp://a:1, wss://b:2"), "wss://a:1,wss://b:2");
        assert_eq!(seed_urls("ws://127.0.0.1:8765"), "ws://127.0.0.1:8765");
        assert_eq!(bind_address("tcp://0.0.0.0:5555"), Ok("0.0.0.0:5555".parse().unwrap()));
        assert!(bind_address("tcp://somewhere").is_err());
        let cli = Cli::try_parse_from([
            "legacygpu",
            "cluster",
            "start",
            "--bind-address",
            "tcp://0.0.0.0:5555",
        ]);
        let Command::Cluster(ClusterCmd::Start(start)) = cli.unwrap().command else { panic!() };
        assert_eq!(start.bind, "0.0.0.0:5555".parse().unwrap());
        let cli = Cli::try_parse_from([
            "legacygpu",
            "worker",
            "start",
            "--coordinator",
            "tcp://127.0.0.1:5555",
        ]);
        let Command::Worker(WorkerCmd::Start(worker)) = cli.unwrap().command else { panic!() };
        assert_eq!(worker.conn.url().unwrap(), "ws://127.0.0.1:5555");
        let cli =
            Cli::try_parse_from(["legacygpu", "monitor", "--coordinator", "tcp://localhost:5555"]);
        let Command::Monitor(monitor) = cli.unwrap().command else { panic!() };
        assert_eq!(monitor.interval, 2.0, "seed 2's default");
        assert_eq!(monitor.coordinator.as_deref(), Some("tcp://localhost:5555"));
    }

    /// Splits a shell command line into words: quotes are honoured, a word
    /// holding a shell expansion becomes a placeholder, `&` and what follows
    /// `|`, `>` or `#` are dropped.
    fn words(line: &str) -> Vec<String> {
        let (mut out, mut word, mut quote, mut expands) = (Vec::new(), String::new(), None, false);
        let mut push = |word: &mut String, expands: &mut bool| {
            if !word.is_empty() {
                out.push(if *expands { "placeholder".to_owned() } else { std::mem::take(word) });
            }
            word.clear();
            *expands = false;
        };
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), '$') | (None, '$') => {
                    expands = true;
                    word.push(c);
                }
                (Some(_), c) => word.push(c),
                (None, '\'' | '"') => quote = Some(c),
                (None, ' ') => push(&mut word, &mut expands),
                (None, '|' | '>' | '#' | '&') => break,
                (None, c) => word.push(c),
            }
        }
        push(&mut word, &mut expands);
        out
    }

    #[test]
    fn deployment_guide_commands_parse() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let guide =
            std::fs::read_to_string(format!("{root}/docs/CLUSTER_DEPLOYMENT_GUIDE.md")).unwrap();
        let mut lines: Vec<String> = guide
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("legacygpu "))
            .map(str::to_owned)
            .collect();
        for unit in ["legacygpu-coordinator.service", "legacygpu-worker.service"] {
            let text = std::fs::read_to_string(format!("{root}/deploy/systemd/{unit}")).unwrap();
            let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
            lines.push(exec.replace("/usr/local/bin/legacygpu", "legacygpu").replace("%H", "host"));
        }
        assert!(lines.len() >= 15, "{lines:?}");
        for line in lines {
            let args = words(&line);
            match Cli::try_parse_from(&args) {
                Ok(_) => {}
                Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {}
                Err(e) => panic!("`{line}` does not parse:\n{e}"),
            }
        }
    }
}
