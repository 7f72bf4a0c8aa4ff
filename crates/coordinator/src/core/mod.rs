//! The core loop: the one owner of the scheduler.
//!
//! Every connection task and every HTTP handler talks to the core through one
//! bounded channel of [`Input`]s — a closed set: connections, their decoded
//! messages, and the API's typed [`ApiRequest`]s; the core feeds the scheduler,
//! then drains its events (to the store, the metrics, the event stream and
//! the published [`Snapshot`](crate::snapshot::Snapshot) that reads are served
//! from) and its commands (to connections). Nothing else touches scheduler
//! state, so there are no locks around it and the order of inputs is the
//! order of history.
//!
//! Replies that promise durability — `task_accepted`, and results delivered to
//! gamers — go through [`Core::send_durable`], which holds them until the store
//! has committed what they promise.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use codes::CloseReason;
use proto::{
    CancelAssignment, ErrorMsg, FailureCode, FromCoordinator, Json, TaskAssignment, TaskErrorOut,
    TaskResultOut, TaskState,
};
use sched::{Command, ConnId, Event, GamerId, Outcome, PeerId, Scheduler, TaskSpec, Time};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

use crate::approvals::Approvals;
use crate::clock::Clock;
use crate::config::Config;
use crate::conn::Outbound;
use crate::credentials::Principal;
use crate::identity::{Bindings, SessionKey};
use crate::observe::Observer;
use crate::quota::Quotas;
use crate::snapshot::Publisher;
use crate::telemetry::Telemetry;

pub(crate) mod controls;
pub(crate) mod messages;
pub(crate) mod requests;
pub(crate) mod stream;

pub(crate) use requests::ApiRequest;

/// What the core loop is fed.
pub(crate) enum Input {
    Connected {
        conn: ConnId,
        tx: mpsc::Sender<Outbound>,
        remote: SocketAddr,
    },
    Message {
        conn: ConnId,
        msg: proto::ToCoordinator,
    },
    /// The connection closed; `unsent` is what was still queued to it.
    Disconnected {
        conn: ConnId,
        unsent: Vec<FromCoordinator>,
    },
    /// A request of the HTTP API; it answers through a channel of its own.
    Request(ApiRequest),
    /// The credential a connection's next registration proved (sent just
    /// before it), for the identity rule.
    Authenticated {
        conn: ConnId,
        principal: Principal,
    },
}

/// What a connection registered as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    Unregistered,
    Peer(PeerId),
    Gamer(GamerId),
}

pub(crate) struct Conn {
    tx: mpsc::Sender<Outbound>,
    pub role: Role,
    pub remote: SocketAddr,
    /// Who its credential proved it to be.
    pub principal: Principal,
    /// `principal.id()`, made once: each task it submits carries it.
    pub principal_id: Arc<str>,
    /// The session id it holds (see `identity.rs`).
    pub bound: Option<SessionKey>,
}

/// What the coordinator knows of a peer beyond what the scheduler needs.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    pub heartbeat: Option<proto::Heartbeat>,
    /// The capabilities as it declared them.
    pub raw_caps: Arc<serde_json::Value>,
    pub remote: Option<SocketAddr>,
    /// The models it serves, with their details (read once, at registration).
    pub models: Arc<[proto::ModelEntry]>,
}

impl PeerInfo {
    pub fn raw(&self) -> Arc<serde_json::Value> {
        Arc::clone(&self.raw_caps)
    }
}

/// The state the core loop owns.
pub(crate) struct Core {
    pub sched: Scheduler<Json>,
    pub conns: HashMap<ConnId, Conn>,
    pub peer_info: BTreeMap<PeerId, PeerInfo>,
    pub config: Arc<Config>,
    pub observer: Observer,
    pub telemetry: Telemetry,
    pub clock: Clock,
    /// HTTP requests waiting for a task to finish.
    pub waiters: requests::Waiters,
    /// HTTP requests following a streamed task's progress.
    pub listeners: stream::Listeners,
    /// Workers approved through the API (shared with connection tasks).
    pub approvals: Approvals,
    /// What reads are served from.
    pub publisher: Publisher,
    /// What tasks of each type need of a peer: the configuration's, and what
    /// registering peers declared for other types.
    pub task_needs: BTreeMap<String, proto::TaskNeeds>,
    /// Which principal each session id belongs to.
    pub bindings: Bindings,
    /// What each client holds of the queue.
    pub quotas: Quotas,
}

impl Core {
    pub fn new(
        config: Arc<Config>,
        observer: Observer,
        telemetry: Telemetry,
        clock: Clock,
    ) -> Core {
        // The scheduler's draws (which work adaptive replication checks,
        // when a canary follows) and the base of verification's (Freivalds'
        // vectors) are secrets of this process: a peer cannot know which of
        // its results are checked, nor with what.
        let mut sched_config = config.sched.clone();
        sched_config.seed = secret_seed();
        let mut sched = Scheduler::new(sched_config, clock.now());
        sched.set_agreement(Box::new(agree::Rules::builtin(secret_seed())));
        let publisher = Publisher::new(config.limits.snapshot_interval);
        let bindings = Bindings::new(config.limits.max_session_bindings);
        let task_needs = config.task_needs.clone();
        Core {
            task_needs,
            sched,
            conns: HashMap::new(),
            peer_info: BTreeMap::new(),
            config,
            observer,
            telemetry,
            clock,
            waiters: requests::Waiters::default(),
            listeners: stream::Listeners::default(),
            approvals: Approvals::default(),
            publisher,
            bindings,
            quotas: Quotas::default(),
        }
    }

    /// The scheduler's clock.
    pub fn now(&self) -> Time {
        self.clock.now()
    }

    /// Runs until `shutdown` turns true or every sender is gone; returns the
    /// store's error when the store failed (the coordinator must stop).
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<Arc<str>> {
        let mut durable = self.observer.durable_watch();
        let burst = self.config.limits.inputs_per_flush;
        let (mut sched_timer, mut publish_timer) = (Timer::new(), Timer::new());
        loop {
            sched_timer.arm(self.sched.poll_timeout().map(|t| self.clock.instant(t)));
            publish_timer.arm(self.publisher.due());
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                // Before inputs: replies the store has made durable go out
                // first, and the flush of the next input finds nothing of
                // theirs left to queue (it may then commit on this thread).
                Ok(()) = durable.changed() => {
                    if self.observer.failed().is_some() {
                        break;
                    }
                }
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    self.handle_next(input, &rx);
                    // Take what else is waiting before flushing, up to a bound,
                    // so that bursts cost one flush.
                    for _ in 0..burst {
                        match rx.try_recv() {
                            Ok(input) => self.handle_next(input, &rx),
                            Err(_) => break,
                        }
                    }
                }
                () = sched_timer.fired() => {
                    let now = self.now();
                    self.sched.handle_timeout(now);
                    self.observer.set_idle(rx.is_empty());
                    self.flush();
                    self.observer.set_idle(false);
                }
                () = publish_timer.fired() => {}
            }
            self.release_durable();
            self.publish();
        }
        self.shut_down();
        self.observer.failed()
    }

    /// Handles an input taken from `rx`, telling the observer whether
    /// another one waits (an idle core may commit on its own thread).
    fn handle_next(&mut self, input: Input, rx: &mpsc::Receiver<Input>) {
        self.observer.set_idle(rx.is_empty());
        self.handle(input);
        self.observer.set_idle(false);
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Connected { conn, tx, remote } => {
                let principal = Principal::Local;
                let principal_id = Arc::from(principal.id());
                let role = Role::Unregistered;
                let c = Conn { tx, role, remote, principal, principal_id, bound: None };
                self.conns.insert(conn, c);
            }
            Input::Authenticated { conn, principal } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.principal_id = Arc::from(principal.id());
                    c.principal = principal;
                }
            }
            Input::Message { conn, msg } => {
                messages::handle(self, conn, msg);
                self.flush();
            }
            Input::Disconnected { conn, unsent } => {
                for msg in unsent {
                    self.undelivered(conn, &msg);
                }
                self.drop_conn(conn);
                self.flush();
            }
            Input::Request(request) => {
                self.handle_request(request);
                self.flush();
            }
        }
    }

    /// Publishes the snapshot reads are served from, when one is due.
    fn publish(&mut self) {
        let Core { publisher, sched, peer_info, telemetry, .. } = self;
        publisher.publish_if_due(sched, peer_info, || telemetry.figures());
    }

    /// Forgets a connection and tells the scheduler its peer or gamer left.
    fn drop_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else { return };
        crate::identity::release(self, c.bound);
        let now = self.now();
        match c.role {
            Role::Peer(id) => {
                if self.sched.peer(id.as_str()).is_some_and(|p| p.conn() == conn) {
                    self.peer_info.remove(&id);
                }
                self.sched.handle_peer_left(now, &id, conn);
            }
            Role::Gamer(id) => self.sched.handle_gamer_left(now, &id, conn),
            Role::Unregistered => {}
        }
    }

    /// Drains the scheduler: events first (so the store sees what commands
    /// promise), then commands.
    pub fn flush(&mut self) {
        self.flush_events();
        while let Some(cmd) = self.sched.poll_command() {
            self.route(cmd);
        }
        // Last, when it runs on this thread: what need not wait for it is
        // already on its way.
        self.observer.commit_deferred();
    }

    /// The first half of [`Core::flush`]: hands the scheduler's events to
    /// the store, the telemetry and the waiters, leaving its commands for the
    /// next flush. A submission's acknowledgement is queued in between, so
    /// that it goes out before what the submission caused (the re-sent
    /// outcome of an idempotent resubmission).
    pub(crate) fn flush_events(&mut self) {
        let mut finished = Vec::new();
        while let Some(event) = self.sched.poll_event() {
            self.observer.observe(&event);
            self.telemetry.observe(&event);
            self.publisher.observe(&event);
            if let Event::TaskFinished { task, .. } = &event {
                self.quotas.finished(task.id);
                finished.push(task.id);
            }
        }
        self.observer.commit();
        crate::quota::publish(self);
        // After the commit, so that each answer names the batch holding its outcome.
        for id in finished {
            self.listeners.finished(id);
            if let Some(done) = self.sched.task(id).and_then(|t| self.finished_view(t))
                && self.waiters.finished(id, &done)
            {
                self.publisher.answered_api();
            }
        }
    }

    fn route(&mut self, cmd: Command<Json>) {
        match cmd {
            Command::Assign { conn, task, attempt, .. } => {
                let msg = TaskAssignment {
                    task_id: task.peer_task_id.to_string(),
                    task_data: Json::clone(&task.payload),
                    id: Some(task.id.to_string()),
                    task_type: task.task_type.to_string(),
                    attempt: attempt.0,
                    timeout_s: task.run_timeout.map(|d| d.as_secs_f64()),
                };
                self.send_to_peer(conn, FromCoordinator::TaskAssignment(msg));
            }
            Command::Cancel { conn, task, attempt, reason } => {
                let task_id = match self.sched.task(task) {
                    Some(t) => t.spec().peer_task_id.to_string(),
                    None => task.to_string(),
                };
                let msg = CancelAssignment {
                    task_id,
                    id: Some(task.to_string()),
                    attempt: attempt.0,
                    reason: reason.to_string(),
                };
                self.send_to_peer(conn, FromCoordinator::CancelTask(msg));
            }
            Command::Deliver { conn, task, outcome, attempts, .. } => {
                let msg = outcome_message(&task, &outcome, attempts);
                self.send_durable(conn, msg);
            }
            Command::ClosePeer { conn, reason } | Command::CloseGamer { conn, reason } => {
                self.close(conn, reason);
            }
        }
    }

    /// Queues a message to a connection. A connection whose queue is full
    /// cannot keep up: it is dropped rather than slowing the core. An outcome
    /// that cannot be queued waits for its gamer's return.
    pub fn send(&mut self, conn: ConnId, msg: FromCoordinator) {
        let Some(c) = self.conns.get(&conn) else {
            return self.undelivered(conn, &msg);
        };
        let failed = match c.tx.try_send(Outbound::Msg(Box::new(msg))) {
            Ok(()) => {
                // The connection's task now waits for this thread.
                self.observer.queued_message();
                return;
            }
            Err(mpsc::error::TrySendError::Full(out)) => {
                warn!(%conn, remote = %c.remote, "dropping a connection too slow to read its messages");
                crate::telemetry::connection_dropped_slow(&self.telemetry.recorder());
                out
            }
            Err(mpsc::error::TrySendError::Closed(out)) => out,
        };
        if let Outbound::Msg(msg) = failed {
            self.undelivered(conn, &msg);
        }
        self.drop_conn(conn);
    }

    /// A task outcome that did not reach `conn` goes back to waiting.
    fn undelivered(&mut self, conn: ConnId, msg: &FromCoordinator) {
        let id = match msg {
            FromCoordinator::TaskResult(r) => r.id.as_deref(),
            FromCoordinator::TaskError(e) => Some(e.id.as_str()),
            _ => None,
        };
        if let Some(id) = id.and_then(|id| id.parse().ok()) {
            let now = self.now();
            self.sched.handle_undelivered(now, id, conn);
        }
    }

    /// Queues an assignment or a cancel. A peer that answers by the seed's
    /// id alone (no `capabilities.echoes_ids`) is told only what is durable:
    /// had a crash lost the task or this attempt, its answer after the
    /// restart would be taken for whichever task then holds that id on it.
    /// (A peer that echoes cluster ids and attempts gets it at once: those
    /// never repeat, `sched::scheduler::ids`.)
    fn send_to_peer(&mut self, conn: ConnId, msg: FromCoordinator) {
        let echoes = match self.conns.get(&conn).map(|c| &c.role) {
            Some(Role::Peer(id)) => {
                self.sched.peer(id.as_str()).is_some_and(|p| p.caps().echoes_ids)
            }
            _ => false,
        };
        if echoes {
            self.send(conn, msg);
        } else {
            self.send_durable(conn, msg);
        }
    }

    /// Queues a message that must not leave before the store has committed
    /// everything observed so far.
    pub fn send_durable(&mut self, conn: ConnId, msg: FromCoordinator) {
        self.observer.hold(conn, msg);
        for (conn, msg) in self.observer.release() {
            self.send(conn, msg);
        }
    }

    /// Sends the held messages the store has made durable, and assigns the
    /// tasks that waited for their ids' reservation to commit.
    fn release_durable(&mut self) {
        for (conn, msg) in self.observer.release() {
            self.send(conn, msg);
        }
        if let Some(next) = self.observer.ids_durable() {
            let now = self.now();
            self.sched.handle_ids_durable(now, next);
            self.flush();
        }
    }

    pub fn reply_error(&mut self, conn: ConnId, err: ErrorMsg) {
        debug!(%conn, code = %err.code, reason = %err.reason, "error reply");
        crate::telemetry::message_rejected(&self.telemetry.recorder(), &err.code);
        self.send(conn, FromCoordinator::Error(err));
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(c) = self.conns.get_mut(&conn) {
            // Every other close follows the scheduler letting go of the
            // session; a drained peer is still its own until the socket
            // closes, and then it leaves as any peer does.
            if reason != CloseReason::Drained {
                c.role = Role::Unregistered;
            }
            let _ = c.tx.try_send(Outbound::Close(reason));
        }
    }

    /// Tells every connection the coordinator is going away, then closes it.
    fn shut_down(&mut self) {
        self.flush();
        if self.observer.failed().is_none() {
            self.observer.close_store();
            self.release_durable();
        }
        let reason = "coordinator shutting down".to_owned();
        for c in self.conns.values() {
            let bye = FromCoordinator::Shutdown(proto::Shutdown { reason: reason.clone() });
            let _ = c.tx.try_send(Outbound::Msg(Box::new(bye)));
            let _ = c.tx.try_send(Outbound::Close(CloseReason::GoingAway));
        }
    }
}

/// A timer that moves only earlier.
///
/// Moving a tokio timer before the runtime's next wake-up wakes the worker
/// parked on the I/O driver, so that it sleeps less: with one task at a time
/// the scheduler's next deadline moves back and forth with each task, and a
/// timer re-armed at each deadline cost a thread wake-up per task. This one
/// keeps its deadline when a later one is asked for; firing early costs the
/// caller one look at a scheduler with nothing due, after which it is armed
/// at the real deadline.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// Where the timer is set, if it is.
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Timer {
        // Unarmed, it is never awaited: the deadline is only a placeholder.
        let sleep = Box::pin(tokio::time::sleep(Duration::from_secs(86_400)));
        Timer { sleep, armed: None }
    }

    /// Sets the timer for `deadline` unless it is already set sooner.
    fn arm(&mut self, deadline: Option<Instant>) {
        let Some(at) = deadline else { return };
        if self.armed.is_none_or(|armed| at < armed) {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
    }

    /// Resolves when the timer goes off (never, while it is not set).
    async fn fired(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

/// `task_result` or `task_error` for a finished task.
pub(crate) fn outcome_message(
    task: &TaskSpec<Json>,
    outcome: &Outcome<Json>,
    attempts: u32,
) -> FromCoordinator {
    match outcome {
        Outcome::Completed { result, attempt, peer } => {
            FromCoordinator::TaskResult(TaskResultOut {
                task_id: task.client_task_id.to_string(),
                result: Json::clone(result),
                id: Some(task.id.to_string()),
                status: Some(TaskState::Completed),
                attempt: Some(attempt.0),
                peer_id: Some(peer.to_string()),
            })
        }
        other => {
            let failure =
                other.failure().unwrap_or_else(|| sched::Failure::new(FailureCode::FAILED, ""));
            FromCoordinator::TaskError(TaskErrorOut {
                task_id: task.client_task_id.to_string(),
                id: task.id.to_string(),
                status: other.status(),
                code: failure.code,
                reason: failure.message.to_string(),
                attempts,
            })
        }
    }
}

/// A random number no peer can predict: std's hasher keys come from the
/// OS's random source, once per process, and differ per `RandomState`.
fn secret_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_timer_moves_only_earlier_and_fires_at_the_earliest_deadline_asked() {
        let start = Instant::now();
        let mut timer = Timer::new();
        timer.arm(None);
        assert_eq!(timer.armed, None, "nothing asked, nothing armed");
        timer.arm(Some(start + Duration::from_secs(10)));
        timer.arm(Some(start + Duration::from_secs(20)));
        assert_eq!(
            timer.armed,
            Some(start + Duration::from_secs(10)),
            "a later deadline is ignored"
        );
        timer.arm(Some(start + Duration::from_secs(5)));
        assert_eq!(timer.armed, Some(start + Duration::from_secs(5)), "an earlier one moves it");
        tokio::time::timeout(Duration::from_secs(60), timer.fired()).await.unwrap();
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
        assert_eq!(timer.armed, None, "fired, it waits to be armed again");
        // Unarmed, it never fires.
        let never = tokio::time::timeout(Duration::from_secs(3_600), timer.fired()).await;
        assert!(never.is_err());
        // Armed again later than before: at that deadline.
        timer.arm(Some(start + Duration::from_secs(7_200)));
        tokio::time::timeout(Duration::from_secs(7_200), timer.fired()).await.unwrap();
        assert_eq!(Instant::now(), start + Duration::from_secs(7_200));
    }
}
