//! The peer daemon: joins a coordinator and runs tasks.
//!
//! A [`Worker`] connects to the coordinator's WebSocket port, registers with
//! its capabilities (task types from its [`exec::Executors`], slots, cores,
//! memory, GPUs, models), heartbeats, and runs each `task_assignment` on a
//! blocking thread with the task's time limit. When the coordinator goes
//! away it reconnects with exponential back-off, keeps its running tasks,
//! claims them in the new registration (`running`) and reports the results
//! that finished in between. On shutdown it drains: it takes no new tasks,
//! waits a while for the running ones, and returns the rest to the queue.
//!
//! Executors that stream (text generation) append their output to a
//! per-task buffer; the session sends it as `task_progress`, coalesced to at
//! most one message per task every [`Config::progress_interval`], and always
//! flushes the last delta before the task's `task_result`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use exec::{Executors, RunContext};
use proto::ToCoordinator;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod credentials;
mod gpu;
mod machine;
mod progress;
mod runner;
mod session;

pub use machine::Machine;

use runner::Report;
use session::{End, Session};

/// Worker configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The coordinator's WebSocket URL, e.g. `ws://10.0.0.2:8765`; or
    /// several, comma-separated (the coordinators of one PostgreSQL store):
    /// the worker finds the leader, following a standby's `not_leader`
    /// answer and moving on from a coordinator it cannot reach.
    pub coordinator: String,
    pub peer_id: String,
    /// Tasks run at once. Default: the number of CPU cores.
    pub slots: u32,
    /// The cluster token, when the coordinator requires one (or a
    /// credential of this worker's own).
    pub token: Option<String>,
    /// The worker join token: the first connection trades it for this
    /// worker's own credential (kept in `credential_file`), and its CA pin
    /// is the only certificate authority trusted.
    pub join: Option<tls::JoinToken>,
    /// How the coordinator's TLS certificate is checked (`wss://`).
    pub trust: tls::Trust,
    /// Where this worker's own credential is kept between runs.
    pub credential_file: Option<PathBuf>,
    /// Heartbeat interval; `None` uses what the coordinator says (5 s by default).
    pub heartbeat_interval: Option<Duration>,
    /// A coordinator from which nothing arrives for this long (pings go out
    /// at a third of it) is given up, for the next URL of the list: a
    /// frozen one (SIGSTOP) keeps its socket open. `None`:
    /// [`proto::Endpoints::silence_timeout`] (3 s given several URLs, 15 s
    /// given one).
    pub silence_timeout: Option<Duration>,
    /// First and longest wait between reconnection attempts.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// On shutdown, how long running tasks may finish before they are returned.
    pub drain_timeout: Duration,
    /// A task still running after this is reported as started (`task_started`),
    /// so that short tasks cost no extra message.
    pub started_notice_after: Duration,
    /// The limit for tasks whose assignment gives none.
    pub default_task_timeout: Duration,
    /// The shortest time between two `task_progress` messages; a task's
    /// deltas in between are concatenated into one.
    pub progress_interval: Duration,
    /// Extra keys for the registration's `capabilities`.
    pub extra_capabilities: serde_json::Map<String, Value>,
    /// Where sysfs is mounted, for GPU use in heartbeats (`/sys`).
    pub sysfs_root: PathBuf,
}

impl Config {
    pub fn new(coordinator: impl Into<String>, peer_id: impl Into<String>) -> Config {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Config {
            coordinator: coordinator.into(),
            peer_id: peer_id.into(),
            slots: cores,
            token: None,
            join: None,
            trust: tls::Trust::System,
            credential_file: None,
            heartbeat_interval: None,
            silence_timeout: None,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            started_notice_after: Duration::from_millis(50),
            default_task_timeout: Duration::from_secs(3600),
            progress_interval: Duration::from_millis(20),
            extra_capabilities: serde_json::Map::new(),
            sysfs_root: PathBuf::from("/sys"),
        }
    }
}

/// Why a worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error("invalid coordinator URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{0}")]
    Credential(String),
}

/// A task the worker holds.
pub(crate) struct Running {
    pub attempt: u32,
    /// The run's number on this worker (`runner::Job::run`).
    pub run: u64,
    /// The cluster id from the assignment, echoed in every report.
    pub id: Option<String>,
    pub ctx: RunContext,
    pub progress: Arc<progress::Progress>,
}

/// The worker: its executors and its tasks, across connections.
pub struct Worker {
    pub(crate) config: Config,
    pub(crate) executors: Executors,
    pub(crate) machine: Machine,
    pub(crate) running: HashMap<String, Running>,
    /// Reports that could not be sent (the connection was down), in order.
    pub(crate) unsent: VecDeque<ToCoordinator>,
    pub(crate) reports_tx: mpsc::UnboundedSender<Report>,
    pub(crate) reports: mpsc::UnboundedReceiver<Report>,
    /// This worker's own credential, once it has one.
    pub(crate) credential: Option<String>,
    /// The number of the last run started.
    pub(crate) runs: u64,
}

impl Worker {
    pub fn new(mut config: Config, executors: Executors) -> Worker {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        if let Some(join) = &config.join {
            config.trust = tls::Trust::Pinned(join.pin);
        }
        Worker {
            config,
            executors,
            machine: Machine::detect(),
            running: HashMap::new(),
            unsent: VecDeque::new(),
            reports_tx,
            reports,
            credential: None,
            runs: 0,
        }
    }

    /// The `capabilities` this worker registers with.
    pub fn capabilities(&self) -> Value {
        let advertised = self.executors.advertise();
        let mut caps = self.machine.capabilities();
        caps.insert("task_types".into(), json!(self.executors.task_types().collect::<Vec<_>>()));
        caps.insert("max_concurrent".into(), json!(self.config.slots));
        caps.insert("gpus".into(), json!(advertised.gpus));
        caps.insert("models".into(), models(&advertised));
        caps.insert("task_needs".into(), json!(self.executors.needs()));
        caps.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        // Every answer names the assignment's cluster id and attempt.
        caps.insert("echoes_ids".into(), json!(true));
        for (k, v) in &self.config.extra_capabilities {
            caps.insert(k.clone(), v.clone());
        }
        Value::Object(caps)
    }

    /// Runs until `shutdown` completes (then drains) or the coordinator
    /// refuses this worker.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let mut endpoints = proto::Endpoints::parse(&self.config.coordinator).map_err(|e| {
            WorkerError::BadUrl { url: self.config.coordinator.clone(), reason: e.to_string() }
        })?;
        self.credential = credentials::load(&self.config).map_err(WorkerError::Credential)?;
        tokio::pin!(shutdown);
        let mut backoff = self.config.reconnect_min;
        let silence = self.config.silence_timeout.unwrap_or(endpoints.silence_timeout());
        // Pings go out at a third of it: never a zero period.
        let silence = silence.max(Duration::from_millis(30));
        loop {
            let bearer = self.bearer();
            let url = endpoints.current().to_owned();
            let connected = tokio::select! {
                _ = &mut shutdown => return {
                    self.abandon();
                    Ok(())
                },
                c = session::connect(&url, &self.config, bearer.as_deref()) => c,
            };
            let mut wait = jittered(backoff);
            match connected {
                Ok(ws) => {
                    backoff = self.config.reconnect_min;
                    let mut session = Session::new(&mut self, ws, &url, silence);
                    let end = session.run(&mut shutdown).await;
                    rotate(&mut endpoints, session.registered(), &end);
                    match end {
                        End::Shutdown => return Ok(()),
                        End::Refused(reason) => return Err(WorkerError::Refused(reason)),
                        End::Disconnected(why) | End::Silent(why) => {
                            info!("disconnected from the coordinator at {url}: {why}");
                            wait = jittered(backoff);
                        }
                        // An election, or the leader elsewhere: soon again.
                        End::NotLeader(leader) => {
                            info!(%url, leader = leader.as_deref().unwrap_or("none yet"), "a standby answered");
                            wait = jittered(NOT_LEADER_WAIT);
                        }
                    }
                }
                Err(session::ConnectError::Refused(reason)) => {
                    return Err(WorkerError::Refused(self.refusal("unauthorized", &reason)));
                }
                Err(session::ConnectError::Other(e)) => {
                    warn!("cannot reach the coordinator at {url}: {e}");
                    endpoints.failed();
                    backoff = (backoff * 2).min(self.config.reconnect_max);
                }
            }
            // Wait before the next attempt, collecting reports meanwhile.
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut shutdown => return {
                        self.abandon();
                        Ok(())
                    },
                    _ = &mut sleep => break,
                    Some(report) = self.reports.recv() => self.buffer(report),
                }
            }
        }
    }

    /// Keeps a report for when the connection is back. Progress is not kept
    /// (it stays in its buffer until the next session flushes it).
    pub(crate) fn buffer(&mut self, report: Report) {
        let msgs = self.report_messages(report);
        self.unsent.extend(msgs);
    }

    /// The messages for a report; finished tasks leave `running`, their last
    /// progress first. Progress notices give none: sessions flush buffers on
    /// their own schedule ([`Worker::progress_messages`]).
    pub(crate) fn report_messages(&mut self, report: Report) -> Vec<ToCoordinator> {
        match report {
            Report::Progress { .. } => Vec::new(),
            Report::Started { task_id, attempt, run } => {
                let Some(id) =
                    self.running.get(&task_id).filter(|r| r.run == run).map(|r| r.id.clone())
                else {
                    return Vec::new();
                };
                let started = proto::TaskStarted { task_id, id, attempt: Some(attempt) };
                vec![ToCoordinator::TaskStarted(started)]
            }
            Report::Finished { task_id, attempt, run, outcome, elapsed } => {
                let mut out = Vec::with_capacity(2);
                // A run the worker stopped itself (the coordinator called it
                // stale, or it was handed back) is no longer in `running`:
                // nobody waits for its end, and its answer could be taken for
                // a later run of the same task and attempt.
                let Some(r) = self.running.get(&task_id).filter(|r| r.run == run) else {
                    debug!(task = %task_id, attempt, "a stopped run ended; not reported");
                    return Vec::new();
                };
                let id = r.id.clone();
                out.extend(r.progress.take().map(ToCoordinator::TaskProgress));
                self.running.remove(&task_id);
                let (result, error) = match outcome {
                    Ok(result) => (Some(result), None),
                    Err(failure) => (None, Some(failure)),
                };
                out.push(ToCoordinator::TaskResult(proto::TaskResult {
                    task_id,
                    id,
                    result,
                    error,
                    attempt: Some(attempt),
                    peer_id: Some(self.config.peer_id.clone()),
                    elapsed_ms: Some(elapsed.as_secs_f64() * 1e3),
                }));
                out
            }
        }
    }

    /// A `task_progress` for every running task with buffered output.
    pub(crate) fn progress_messages(&self) -> Vec<ToCoordinator> {
        self.running
            .values()
            .filter_map(|r| r.progress.take().map(ToCoordinator::TaskProgress))
            .collect()
    }

    /// Shutdown while disconnected: nobody can take the tasks back, so they
    /// are cancelled (the coordinator requeues them when it sees we are gone).
    fn abandon(&mut self) {
        for (task, running) in self.running.drain() {
            info!(%task, "cancelling on shutdown while disconnected");
            running.ctx.cancel();
        }
    }
}

/// The registration's `models`: full descriptions where the executors give
/// them, plain names for the rest.
fn models(advertised: &exec::Advertised) -> Value {
    let mut list: Vec<Value> = advertised.model_info.iter().map(|m| json!(m)).collect();
    for name in &advertised.models {
        if !advertised.model_info.iter().any(|m| &m.name == name) {
            list.push(json!(name));
        }
    }
    Value::Array(list)
}

/// How long to wait after a standby's answer before trying again.
const NOT_LEADER_WAIT: Duration = Duration::from_millis(200);

#[cfg(test)]
fn validate_url(url: &str) -> Result<(), WorkerError> {
    proto::Endpoints::parse(url)
        .map(|_| ())
        .map_err(|e| WorkerError::BadUrl { url: url.to_owned(), reason: e.to_string() })
}

/// Which coordinator the next connection tries after a session that ended
/// with `end`, having `registered` or not: the same one after a drop (it
/// may just have restarted); the next of the list after silence (a frozen
/// one would hold the next try for a whole connect timeout, while another
/// may lead by now); the leader a standby named. A registration was a good
/// connection: what failed before it is trusted again (or a cluster whose
/// every coordinator has frozen once would send the worker back to the
/// frozen one).
fn rotate(endpoints: &mut proto::Endpoints, registered: bool, end: &End) {
    if registered {
        endpoints.connected();
    }
    match end {
        End::Disconnected(_) => {}
        End::Silent(_) => endpoints.failed(),
        End::NotLeader(leader) => endpoints.not_leader(leader.as_deref()),
        End::Shutdown | End::Refused(_) => {}
    }
}

/// A wait between half and all of `d`, so that many workers do not all
/// reconnect at the same instant.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_coordinator_is_left_for_the_next_url_and_a_dropped_one_is_tried_again() {
        let mut e = proto::Endpoints::parse("ws://a:1,ws://b:2,ws://c:3").unwrap();
        // A drop (a restart, a closed socket): the same one first.
        rotate(&mut e, true, &End::Disconnected("closed".into()));
        assert_eq!(e.current(), "ws://a:1");
        // Silence (a frozen coordinator): the next one first.
        rotate(&mut e, true, &End::Silent("nothing from the coordinator for 3s".into()));
        assert_eq!(e.current(), "ws://b:2");
        // b is a standby naming c, which drops us, then freezes.
        rotate(&mut e, false, &End::NotLeader(Some("ws://c:3".into())));
        assert_eq!(e.current(), "ws://c:3");
        rotate(&mut e, false, &End::Disconnected("closed".into()));
        assert_eq!(e.current(), "ws://c:3");
        // c never registered us: back to the list, at b (a froze).
        rotate(&mut e, false, &End::Silent("no registration_ack in time".into()));
        assert_eq!(e.current(), "ws://b:2");
        // Nothing moves on a stop or a refusal.
        rotate(&mut e, false, &End::Refused("bad token".into()));
        rotate(&mut e, false, &End::Shutdown);
        assert_eq!(e.current(), "ws://b:2");
    }

    #[test]
    fn a_coordinator_led_since_it_froze_is_trusted_again_and_only_the_frozen_one_is_avoided() {
        // Each coordinator leads in turn and freezes (the failover
        // benchmark's rounds): after the third, the standbys still name it
        // until its lease runs out, and the worker must not go back to it
        // (it would wait out a whole connect timeout there).
        let mut e = proto::Endpoints::parse("ws://a:1,ws://b:2,ws://c:3").unwrap();
        for next in ["ws://b:2", "ws://c:3", "ws://a:1"] {
            rotate(&mut e, true, &End::Silent("nothing from the coordinator for 3s".into()));
            assert_eq!(e.current(), next);
        }
        for _ in 0..4 {
            rotate(&mut e, false, &End::NotLeader(Some("ws://c:3".into())));
            assert_ne!(e.current(), "ws://c:3", "back to the frozen leader");
        }
    }

    #[test]
    fn capabilities_list_types_slots_and_machine() {
        let mut config = Config::new("ws://127.0.0.1:1", "p");
        config.slots = 3;
        let worker = Worker::new(config, Executors::builtin());
        let caps = worker.capabilities();
        assert_eq!(caps["task_types"], json!(["echo", "sleep"]));
        assert_eq!(caps["max_concurrent"], json!(3));
        assert!(caps["cores"].as_u64().unwrap() >= 1);
        let parsed = proto::Capabilities::from_value(caps);
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        assert_eq!(parsed.slots(), 3);
        // Its answers name cluster ids: it may be sent work before it is durable.
        assert!(parsed.echoes_ids);
    }

    #[test]
    fn models_are_advertised_as_objects_or_names() {
        let info = exec::ModelInfo {
            name: "tiny".into(),
            task_type: "generate".into(),
            format: "gguf".into(),
            size_bytes: Some(462_368),
            context_length: Some(256),
            quantization: Some("F32".into()),
            n_params: Some(100),
        };
        let advertised = exec::Advertised {
            models: vec!["resnet50".into(), "tiny".into()],
            model_info: vec![info],
            gpus: Vec::new(),
        };
        let list = models(&advertised);
        assert_eq!(
            list,
            json!([{"name": "tiny", "task_type": "generate", "format": "gguf",
                    "size_bytes": 462_368, "context_length": 256, "quantization": "F32",
                    "n_params": 100}, "resnet50"])
        );
        // The coordinator reads both shapes back.
        let caps = proto::Capabilities::from_value(json!({ "models": list }));
        assert!(caps.warnings.is_empty(), "{:?}", caps.warnings);
        assert_eq!(caps.models, ["resnet50", "tiny"]);
        assert!(caps.serves_model("tiny", "generate") && !caps.serves_model("tiny", "inference"));
    }

    #[test]
    fn urls_must_be_websocket() {
        assert!(validate_url("ws://h:8765").is_ok());
        assert!(validate_url("http://h:8765").is_err());
        assert!(validate_url("tcp://h:5555").is_err());
        assert!(validate_url("ws://a:8765,wss://b:8765").is_ok());
        assert!(validate_url("ws://a:8765,http://b:8000").is_err());
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }

    #[test]
    fn a_run_stopped_as_stale_reports_nothing_even_when_its_task_and_attempt_run_again() {
        let mut worker = Worker::new(Config::new("ws://127.0.0.1:1", "p"), Executors::builtin());
        // Run 1 of t-7, attempt 3, was stopped as stale; the coordinator, whose
        // crash lost that attempt, gave the same task and attempt again: run 2.
        let progress = Arc::new(progress::Progress::new(
            "t-7".into(),
            Some("7".into()),
            3,
            worker.reports_tx.clone(),
        ));
        let ctx = RunContext::new(None);
        let run = Running { attempt: 3, run: 2, id: Some("7".into()), ctx, progress };
        worker.running.insert("t-7".into(), run);
        let cancelled = proto::TaskFailure {
            code: proto::FailureCode::CANCELLED,
            message: "cancelled".into(),
            retryable: None,
        };
        let stopped = Report::Finished {
            task_id: "t-7".into(),
            attempt: 3,
            run: 1,
            outcome: Err(cancelled),
            elapsed: Duration::from_millis(5),
        };
        assert!(worker.report_messages(stopped).is_empty());
        assert!(worker.running.contains_key("t-7"), "run 2 goes on");
        let done = Report::Finished {
            task_id: "t-7".into(),
            attempt: 3,
            run: 2,
            outcome: Ok(proto::json(r#"{"ok":true}"#).unwrap()),
            elapsed: Duration::from_millis(9),
        };
        let sent = worker.report_messages(done);
        let [ToCoordinator::TaskResult(r)] = sent.as_slice() else { panic!("{sent:?}") };
        assert_eq!((r.id.as_deref(), r.attempt, r.error.is_none()), (Some("7"), Some(3), true));
        assert!(worker.running.is_empty());
    }
}
