//! The client SDK: submit tasks to a legacygpu coordinator and get results.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client::ClientError> {
//! use client::{Client, ClientOptions, TaskOutcome};
//! let client = Client::connect("ws://127.0.0.1:8765", ClientOptions::default()).await?;
//! let req = proto::TaskRequest::new("echo", proto::json(r#"{"hello": "world"}"#).unwrap());
//! match client.run(req).await? {
//!     TaskOutcome::Completed(done) => println!("{}", done.result.get()),
//!     TaskOutcome::Failed(err) => eprintln!("{}: {}", err.code, err.reason),
//! }
//! # Ok(()) }
//! ```
//!
//! One [`Client`] is one gamer connection with many tasks in flight. Every task
//! gets a task id (made here when the caller gives none) and an idempotency
//! key (its task id unless given). When the connection drops, the client
//! reconnects with the same gamer id and resubmits every task still waiting
//! for its result under the same keys: the coordinator answers with the
//! original task, and re-sends the result when the task already finished. A
//! task's result future resolves exactly once, whatever the wire delivers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proto::{
    ErrorMsg, TaskAccepted, TaskErrorOut, TaskProgressOut, TaskRequest, TaskResultOut,
    TaskStatusOut,
};
use tokio::sync::{mpsc, oneshot};

pub mod api;
mod conn;

/// Options for [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The gamer id; reconnecting with the same id delivers results that
    /// finished while away. Default: a random one.
    pub gamer_id: Option<String>,
    /// The credential: the cluster token, an API key, or the client token
    /// (`lgj1-…`, which also pins the coordinator's CA).
    pub token: Option<String>,
    /// The coordinator's CA pin (64 hex digits, as `cluster start` prints
    /// it), for `wss://` without a client token. Without either, `wss://`
    /// trusts the system's root certificates.
    pub ca_hash: Option<String>,
    /// Reconnect (and resubmit pending tasks) when the connection drops. Default true.
    pub reconnect: bool,
    /// On reconnecting, resubmit tasks the coordinator had already
    /// acknowledged (under their idempotency keys) as well as those it had
    /// not. Default true: belt and braces. A client that relies on the
    /// coordinator's durability alone (and tests of it) turns this off.
    pub resubmit_acknowledged: bool,
    /// The longest wait between reconnection attempts. Default 5 s.
    pub reconnect_max: Duration,
    /// How long connecting to one coordinator and registering may take.
    /// Given several URLs, finding the leader may take this per URL, so
    /// that one that does not answer leaves time for the others. Default
    /// 10 s.
    pub connect_timeout: Duration,
    /// A connection from which nothing arrives for this long (pings go out
    /// at a third of it) is given up and made anew, to the next URL of the
    /// list first: a coordinator frozen with its socket open (SIGSTOP) is
    /// left for the next one. Default (`None`): 3 s given several URLs,
    /// about when a standby takes a frozen leader's lease; 15 s given one
    /// ([`proto::Endpoints::silence_timeout`]).
    pub silence_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            gamer_id: None,
            token: None,
            ca_hash: None,
            reconnect: true,
            resubmit_acknowledged: true,
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            silence_timeout: None,
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The coordinator refused the registration (a bad token, …).
    #[error("the coordinator refused the connection: {0}")]
    Refused(String),
    /// The coordinator is a standby; `leader` is where it says the leader
    /// is (none during an election).
    #[error("{url} is a standby coordinator (leader: {})", .leader.as_deref().unwrap_or("none yet"))]
    NotLeader { url: String, leader: Option<String> },
    /// The coordinator refused a request.
    #[error("{}: {}", .0.code, .0.reason)]
    Rejected(ErrorMsg),
    /// The connection is gone and the client does not reconnect.
    #[error("the connection to the coordinator is closed")]
    Closed,
}

/// How a task ended: exactly one per task.
#[derive(Debug, Clone)]
pub enum TaskOutcome {
    Completed(TaskResultOut),
    /// Failed, cancelled or timed out.
    Failed(TaskErrorOut),
}

impl TaskOutcome {
    pub fn task_id(&self) -> &str {
        match self {
            TaskOutcome::Completed(r) => &r.task_id,
            TaskOutcome::Failed(e) => &e.task_id,
        }
    }

    pub fn is_completed(&self) -> bool {
        matches!(self, TaskOutcome::Completed(_))
    }
}

/// A submitted task: its acceptance, and its outcome to come.
#[derive(Debug)]
pub struct Submitted {
    pub accepted: TaskAccepted,
    outcome: oneshot::Receiver<TaskOutcome>,
}

impl Submitted {
    /// Waits for the task's outcome.
    pub async fn outcome(self) -> Result<TaskOutcome, ClientError> {
        self.outcome.await.map_err(|_| ClientError::Closed)
    }
}

/// A task submitted with `stream: true`: its output's deltas as they come
/// (`task_progress`), then its outcome.
///
/// Deltas are best-effort: they are dropped when this client reads them too
/// slowly (a gap in `seq` shows it) or when the coordinator's queue to this
/// connection is full. The outcome's result is the complete answer.
#[derive(Debug)]
pub struct Streamed {
    pub accepted: TaskAccepted,
    progress: mpsc::Receiver<TaskProgressOut>,
    outcome: oneshot::Receiver<TaskOutcome>,
}

impl Streamed {
    /// The next delta; `None` once the task has its outcome (every delta
    /// received before it has been returned by then).
    pub async fn next(&mut self) -> Option<TaskProgressOut> {
        self.progress.recv().await
    }

    /// Waits for the task's outcome (deltas not read yet are dropped).
    pub async fn outcome(self) -> Result<TaskOutcome, ClientError> {
        self.outcome.await.map_err(|_| ClientError::Closed)
    }
}

/// Deltas buffered per streamed task before more are dropped.
const PROGRESS_BUFFER: usize = 1024;

pub(crate) enum Cmd {
    Submit {
        req: TaskRequest,
        accepted: oneshot::Sender<Result<TaskAccepted, ClientError>>,
        outcome: oneshot::Sender<TaskOutcome>,
        /// Where its deltas go, for a streamed task.
        progress: Option<mpsc::Sender<TaskProgressOut>>,
    },
    Cancel {
        task_id: String,
    },
    Status {
        task_id: String,
        reply: oneshot::Sender<Result<TaskStatusOut, ClientError>>,
    },
}

/// What a client has seen on the wire, for diagnostics and checkers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Outcomes received (first deliveries and repeats).
    pub outcomes: u64,
    /// Repeated outcomes for tasks that already had one (dropped).
    pub duplicates: u64,
    /// Successful reconnections.
    pub reconnects: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub outcomes: AtomicU64,
    pub duplicates: AtomicU64,
    pub reconnects: AtomicU64,
}

/// A connection to a coordinator as a gamer.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Cmd>,
    gamer_id: String,
    counters: Arc<Counters>,
}

impl Client {
    /// Connects to `url` (`ws://HOST:8765`) and registers as a gamer.
    ///
    /// `url` may list several coordinators (`ws://a:8765,ws://b:8765`, the
    /// coordinators of one PostgreSQL store): the client finds the leader —
    /// following a standby's `not_leader` answer, moving on from one it
    /// cannot reach — now and after every drop.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let gamer_id =
            options.gamer_id.clone().unwrap_or_else(|| format!("gamer-{:08x}", fastrand::u32(..)));
        let (tx, rx) = mpsc::channel(1024);
        let counters = Arc::new(Counters::default());
        let driver =
            conn::Driver::connect(url, gamer_id.clone(), options, rx, Arc::clone(&counters))
                .await?;
        tokio::spawn(driver.run());
        Ok(Client { tx, gamer_id, counters })
    }

    pub fn gamer_id(&self) -> &str {
        &self.gamer_id
    }

    /// What this client has seen on the wire so far.
    pub fn stats(&self) -> ClientStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            outcomes: get(&self.counters.outcomes),
            duplicates: get(&self.counters.duplicates),
            reconnects: get(&self.counters.reconnects),
        }
    }

    /// Submits a task and waits for `task_accepted` (which, with the store on,
    /// means the task is durable).
    pub async fn submit(&self, req: TaskRequest) -> Result<Submitted, ClientError> {
        let (accepted_tx, accepted_rx) = oneshot::channel();
        let (outcome_tx, outcome) = oneshot::channel();
        let cmd = Cmd::Submit { req, accepted: accepted_tx, outcome: outcome_tx, progress: None };
        self.tx.send(cmd).await.map_err(|_| ClientError::Closed)?;
        let accepted = accepted_rx.await.map_err(|_| ClientError::Closed)??;
        Ok(Submitted { accepted, outcome })
    }

    /// Submits a task with `stream: true` (a `generate` task's tokens come
    /// as they are produced) and waits for `task_accepted`.
    pub async fn submit_streamed(&self, mut req: TaskRequest) -> Result<Streamed, ClientError> {
        req.stream = true;
        let (accepted_tx, accepted_rx) = oneshot::channel();
        let (outcome_tx, outcome) = oneshot::channel();
        let (progress_tx, progress) = mpsc::channel(PROGRESS_BUFFER);
        let cmd = Cmd::Submit {
            req,
            accepted: accepted_tx,
            outcome: outcome_tx,
            progress: Some(progress_tx),
        };
        self.tx.send(cmd).await.map_err(|_| ClientError::Closed)?;
        let accepted = accepted_rx.await.map_err(|_| ClientError::Closed)??;
        Ok(Streamed { accepted, progress, outcome })
    }

    /// Submits a task and waits for its outcome.
    pub async fn run(&self, req: TaskRequest) -> Result<TaskOutcome, ClientError> {
        self.submit(req).await?.outcome().await
    }

    /// Asks for a task to be cancelled; its outcome (cancelled, or whatever
    /// came first) arrives on its [`Submitted`].
    pub async fn cancel(&self, task_id: &str) -> Result<(), ClientError> {
        let cmd = Cmd::Cancel { task_id: task_id.to_owned() };
        self.tx.send(cmd).await.map_err(|_| ClientError::Closed)
    }

    /// Where a task stands.
    pub async fn status(&self, task_id: &str) -> Result<TaskStatusOut, ClientError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Status { task_id: task_id.to_owned(), reply };
        self.tx.send(cmd).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}
