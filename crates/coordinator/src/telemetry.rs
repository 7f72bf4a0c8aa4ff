//! What the operator sees of the scheduler's events: Prometheus metrics, the
//! live event stream, and the running figures behind `/cluster/health` and
//! `/cluster/metrics`.
//!
//! This is the one module that emits metrics: every other module reports
//! what happened to it through the functions here ([`message_rejected`],
//! [`connection_dropped_slow`], [`store_committed`]), and gauges are set from
//! the published snapshot when `/metrics` is scraped ([`Metrics::render`]).
//!
//! Scheduler events are fed from the core loop, one at a time, and never
//! block it: counters and histograms are atomic updates in the Prometheus
//! recorder, the event stream is a bounded broadcast channel whose slow
//! subscribers lose events (and are then dropped by their connection task),
//! and API events are only built when someone subscribes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{Recorder, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use proto::{ErrorCode, Json};
use sched::{Event, LeaveReason, Outcome, TaskKind, TaskState};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::snapshot::Snapshot;

/// Histogram buckets, in seconds: from half a millisecond to five minutes.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0,
];

/// One event of the live stream (`/ws/cluster/events`), tagged by `event`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ApiEvent {
    WorkerJoined {
        worker_id: String,
        slots: u32,
    },
    /// The worker's connection closed, or a newer session replaced it.
    WorkerLeft {
        worker_id: String,
        reason: String,
    },
    /// The worker stopped heartbeating; its tasks were requeued.
    WorkerDead {
        worker_id: String,
    },
    WorkerStatus {
        worker_id: String,
        status: String,
    },
    TaskQueued {
        task_id: String,
        client_task_id: String,
        task_type: String,
        priority: i32,
    },
    TaskAssigned {
        task_id: String,
        task_type: String,
        worker_id: String,
        attempt: u32,
        queue_wait_ms: f64,
    },
    TaskStarted {
        task_id: String,
        worker_id: String,
        attempt: u32,
    },
    /// An attempt ended without finishing the task; it waits for another.
    TaskRetried {
        task_id: String,
        task_type: String,
        attempt: u32,
        reason: String,
        failures: u32,
    },
    TaskCompleted {
        task_id: String,
        client_task_id: String,
        task_type: String,
        worker_id: String,
        attempts: u32,
        run_ms: Option<f64>,
    },
    /// Failed or timed out (`status` says which).
    TaskFailed {
        task_id: String,
        client_task_id: String,
        task_type: String,
        #[schema(value_type = String)]
        status: codes::TaskState,
        #[schema(value_type = String)]
        code: codes::FailureCode,
        message: String,
        attempts: u32,
    },
    TaskCancelled {
        task_id: String,
        client_task_id: String,
        task_type: String,
    },
    /// A verified task's verdict (its `task_completed` or `task_failed`
    /// follows): agreed, self_checked, trusted, unverifiable, no_quorum.
    TaskVerified {
        task_id: String,
        task_type: String,
        #[schema(value_type = String)]
        status: codes::VerifyStatus,
        replicas: usize,
    },
    /// Sent every few seconds while someone listens.
    ClusterStats {
        workers: usize,
        queued: usize,
        running: usize,
        completed: u64,
        failed: u64,
        tasks_per_minute: u64,
    },
}

impl ApiEvent {
    /// The `event` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiEvent::WorkerJoined { .. } => "worker_joined",
            ApiEvent::WorkerLeft { .. } => "worker_left",
            ApiEvent::WorkerDead { .. } => "worker_dead",
            ApiEvent::WorkerStatus { .. } => "worker_status",
            ApiEvent::TaskQueued { .. } => "task_queued",
            ApiEvent::TaskAssigned { .. } => "task_assigned",
            ApiEvent::TaskStarted { .. } => "task_started",
            ApiEvent::TaskRetried { .. } => "task_retried",
            ApiEvent::TaskCompleted { .. } => "task_completed",
            ApiEvent::TaskFailed { .. } => "task_failed",
            ApiEvent::TaskCancelled { .. } => "task_cancelled",
            ApiEvent::TaskVerified { .. } => "task_verified",
            ApiEvent::ClusterStats { .. } => "cluster_stats",
        }
    }

    /// Every kind, for validating subscription filters.
    pub const KINDS: [&'static str; 13] = [
        "worker_joined",
        "worker_left",
        "worker_dead",
        "worker_status",
        "task_queued",
        "task_assigned",
        "task_started",
        "task_retried",
        "task_completed",
        "task_failed",
        "task_cancelled",
        "task_verified",
        "cluster_stats",
    ];

    /// The task the event is about, if any.
    pub fn task_id(&self) -> Option<&str> {
        match self {
            ApiEvent::TaskQueued { task_id, .. }
            | ApiEvent::TaskAssigned { task_id, .. }
            | ApiEvent::TaskStarted { task_id, .. }
            | ApiEvent::TaskRetried { task_id, .. }
            | ApiEvent::TaskCompleted { task_id, .. }
            | ApiEvent::TaskFailed { task_id, .. }
            | ApiEvent::TaskCancelled { task_id, .. }
            | ApiEvent::TaskVerified { task_id, .. } => Some(task_id),
            _ => None,
        }
    }
}

/// An event as it goes out: serialised once for every subscriber.
#[derive(Debug)]
pub struct Published {
    pub kind: &'static str,
    pub task_id: Option<String>,
    pub json: String,
}

impl Published {
    pub fn new(event: &ApiEvent) -> Published {
        #[derive(Serialize)]
        struct Envelope<'a> {
            ts_ms: u64,
            #[serde(flatten)]
            event: &'a ApiEvent,
        }
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let json = serde_json::to_string(&Envelope { ts_ms, event }).unwrap_or_default();
        Published { kind: event.kind(), task_id: event.task_id().map(str::to_owned), json }
    }
}

/// Running figures since the coordinator started.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub uptime: Duration,
    pub completed: u64,
    pub failed: u64,
    /// Tasks finished (either way) in the last minute.
    pub tasks_per_minute: u64,
    /// Mean time from submission to outcome, over the tasks finished since start.
    pub avg_latency: Option<Duration>,
    /// Mean run time on a peer, over the tasks completed since start.
    pub avg_run_time: Option<Duration>,
    /// The overview's last hour (see `hour.rs`).
    pub hour: crate::hour::HourFigures,
}

/// A message refused, by its error code.
pub(crate) fn message_rejected(recorder: &PrometheusRecorder, code: &ErrorCode) {
    let reason = code.to_string();
    metrics::with_local_recorder(recorder, || {
        counter!("legacygpu_messages_rejected_total", "reason" => reason).increment(1);
    });
}

/// A submission refused by a quota (`quota.rs`).
pub(crate) fn quota_refused(recorder: &PrometheusRecorder, limit: &'static str) {
    metrics::with_local_recorder(recorder, || {
        counter!("legacygpu_quota_refusals_total", "limit" => limit).increment(1);
    });
}

/// The payload bytes unfinished tasks hold.
pub(crate) fn queued_payload_bytes(recorder: &PrometheusRecorder, bytes: f64) {
    metrics::with_local_recorder(recorder, || {
        metrics::gauge!("legacygpu_queued_payload_bytes").set(bytes);
    });
}

/// A connection refused at accept (on `port`: `ws` or `http`), and why.
pub(crate) fn connection_refused(
    recorder: &PrometheusRecorder,
    port: &'static str,
    reason: &'static str,
) {
    metrics::with_local_recorder(recorder, || {
        counter!("legacygpu_connections_refused_total", "port" => port, "reason" => reason)
            .increment(1);
    });
}

/// A connection dropped for reading its messages too slowly.
pub(crate) fn connection_dropped_slow(recorder: &PrometheusRecorder) {
    metrics::with_local_recorder(recorder, || {
        counter!("legacygpu_connections_dropped_slow_total").increment(1);
    });
}

/// Streamed deltas handed to followers (`to`: `gamer` or `http`), and
/// those lost because the follower's queue was full.
pub(crate) fn progress(recorder: &PrometheusRecorder, to: &'static str, sent: u64, dropped: u64) {
    if sent == 0 && dropped == 0 {
        return;
    }
    metrics::with_local_recorder(recorder, || {
        counter!("legacygpu_progress_forwarded_total", "to" => to).increment(sent);
        counter!("legacygpu_progress_dropped_total", "to" => to).increment(dropped);
    });
}

/// A store batch committed in `took`.
pub(crate) fn store_committed(recorder: &PrometheusRecorder, took: Duration) {
    metrics::with_local_recorder(recorder, || {
        histogram!("legacygpu_store_commit_seconds").record(took.as_secs_f64());
    });
}

/// The Prometheus side that `/metrics` renders.
#[derive(Clone)]
pub(crate) struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Metrics {
    /// The lease, on PostgreSQL: whether this coordinator leads, the epoch
    /// and the lease's age (NaN while nobody leads).
    pub fn lease(&self, leading: bool, epoch: u64, age: Option<Duration>) {
        metrics::with_local_recorder(self.recorder.as_ref(), || {
            gauge!("legacygpu_leader").set(if leading { 1.0 } else { 0.0 });
            gauge!("legacygpu_lease_epoch").set(epoch as f64);
            gauge!("legacygpu_lease_age_seconds").set(age.map_or(f64::NAN, |a| a.as_secs_f64()));
        });
    }

    /// The leader's addresses, on PostgreSQL, as the labels of an
    /// info-style gauge: `legacygpu_leader_info{leader="…",leader_ws="…"} 1`
    /// (`leader` the HTTP API's URL, empty when it serves none), no sample
    /// while nobody is known to lead. Appended to the exposition text by
    /// hand rather than recorded, so that a former leader's series does not
    /// linger after a failover.
    pub fn leader_info(http: Option<&str>, ws: Option<&str>) -> String {
        let mut out = String::from(
            "# HELP legacygpu_leader_info On PostgreSQL: the leader's HTTP (leader) and \
             WebSocket (leader_ws) URLs as labels, 1 while one is known.\n\
             # TYPE legacygpu_leader_info gauge\n",
        );
        if let Some(ws) = ws {
            let http = label(http.unwrap_or_default());
            out.push_str(&format!(
                "legacygpu_leader_info{{leader=\"{http}\",leader_ws=\"{}\"}} 1\n",
                label(ws)
            ));
        }
        out
    }

    /// The exposition text, with the gauges set from `snap` first.
    pub fn render(&self, snap: &Snapshot, healthy_workers: usize) -> String {
        let s = &snap.stats;
        metrics::with_local_recorder(self.recorder.as_ref(), || {
            gauge!("legacygpu_queue_depth").set(s.queued as f64);
            gauge!("legacygpu_tasks_running").set((s.assigned + s.running) as f64);
            gauge!("legacygpu_peers_connected").set(s.peers as f64);
            gauge!("legacygpu_peers_healthy").set(healthy_workers as f64);
            gauge!("legacygpu_slots").set(s.slots_total as f64);
            gauge!("legacygpu_gamers_connected").set(s.gamers as f64);
            gauge!("legacygpu_uptime_seconds").set(snap.figures.uptime.as_secs_f64());
            for w in &snap.workers {
                gauge!("legacygpu_peer_busy_slots", "peer" => w.id.to_string())
                    .set(f64::from(w.busy_slots));
            }
            let quarantined = snap.workers.iter().filter(|w| w.quarantined).count();
            gauge!("legacygpu_workers_quarantined").set(quarantined as f64);
            gauge!("legacygpu_replication_overhead_ratio").set(overhead(&s.counters));
        });
        self.handle.render()
    }
}

/// A Prometheus label value, escaped (`\\`, `"`, newlines).
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(crate) struct Telemetry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    events: broadcast::Sender<Arc<Published>>,
    started: Instant,
    /// Finished tasks per second over the last minute, as a ring.
    window: [u64; 60],
    window_sec: u64,
    completed: u64,
    failed: u64,
    latency_sum: Duration,
    latency_n: u64,
    run_sum: Duration,
    run_n: u64,
    hour: crate::hour::Hour,
}

impl Telemetry {
    pub fn new(event_buffer: usize) -> Telemetry {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        describe(&recorder);
        let (events, _) = broadcast::channel(event_buffer.max(1));
        Telemetry {
            recorder: Arc::new(recorder),
            handle,
            events,
            started: Instant::now(),
            window: [0; 60],
            window_sec: 0,
            completed: 0,
            failed: 0,
            latency_sum: Duration::ZERO,
            latency_n: 0,
            run_sum: Duration::ZERO,
            run_n: 0,
            hour: crate::hour::Hour::default(),
        }
    }

    /// The recorder, for code that records off the core loop (the store writer).
    pub fn recorder(&self) -> Arc<PrometheusRecorder> {
        Arc::clone(&self.recorder)
    }

    pub fn metrics(&self) -> Metrics {
        Metrics { recorder: Arc::clone(&self.recorder), handle: self.handle.clone() }
    }

    pub fn events(&self) -> broadcast::Sender<Arc<Published>> {
        self.events.clone()
    }

    /// Counts, times and publishes one scheduler event.
    pub fn observe(&mut self, event: &Event<Json>) {
        self.tally(event);
        metrics::with_local_recorder(self.recorder.as_ref(), || record(event));
        if self.events.receiver_count() > 0
            && let Some(api) = api_event(event)
        {
            self.publish(&api);
        }
    }

    /// Sends an event to every subscriber (never waits).
    pub fn publish(&self, event: &ApiEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(Published::new(event)));
        }
    }

    fn tally(&mut self, event: &Event<Json>) {
        let Event::TaskFinished { task, outcome, run_time, at, .. } = event else { return };
        if task.kind.is_hidden() {
            return; // A replica or canary: its task is counted when it ends.
        }
        let now = Instant::now();
        let sec = now.duration_since(self.started).as_secs();
        self.advance(sec);
        self.window[(sec % 60) as usize] += 1;
        match outcome {
            Outcome::Completed { .. } => self.completed += 1,
            _ => self.failed += 1,
        }
        if let Some(run) = run_time
            && outcome.status() == TaskState::Completed
        {
            self.run_sum += *run;
            self.run_n += 1;
        }
        let latency = at.saturating_since(task.submitted_at);
        self.latency_sum += latency;
        self.latency_n += 1;
        let completed = outcome.status() == TaskState::Completed;
        let model = task.requirements.model.as_ref();
        let since = now.duration_since(self.started);
        self.hour.finished(since, &task.task_type, model, completed, latency);
    }

    /// Clears the seconds of the ring that passed since it was last written.
    fn advance(&mut self, sec: u64) {
        let from = self.window_sec + 1;
        for s in from..=sec.min(from + 60) {
            self.window[(s % 60) as usize] = 0;
        }
        self.window_sec = self.window_sec.max(sec);
    }

    pub fn figures(&mut self) -> Figures {
        let sec = Instant::now().duration_since(self.started).as_secs();
        self.advance(sec);
        let mean =
            |sum: Duration, n: u64| (n > 0).then(|| sum / u32::try_from(n).unwrap_or(u32::MAX));
        Figures {
            uptime: self.started.elapsed(),
            completed: self.completed,
            failed: self.failed,
            tasks_per_minute: self.window.iter().sum(),
            avg_latency: mean(self.latency_sum, self.latency_n),
            avg_run_time: mean(self.run_sum, self.run_n),
            hour: self.hour.figures(self.started.elapsed()),
        }
    }
}

fn describe(recorder: &PrometheusRecorder) {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    metrics::with_local_recorder(recorder as &dyn Recorder, || {
        describe_counter!("legacygpu_tasks_submitted_total", "Tasks accepted, by task type.");
        describe_counter!("legacygpu_tasks_completed_total", "Tasks completed, by task type.");
        describe_counter!(
            "legacygpu_tasks_failed_total",
            "Tasks that ended without a result, by task type and status (failed, cancelled, timed_out)."
        );
        describe_counter!(
            "legacygpu_tasks_retried_total",
            "Attempts that ended without finishing their task, by task type and reason."
        );
        describe_counter!(
            "legacygpu_stale_results_total",
            "Results for attempts no longer current."
        );
        describe_counter!(
            "legacygpu_heartbeats_missed_total",
            "Peers declared dead because their heartbeats stopped."
        );
        describe_counter!("legacygpu_peers_joined_total", "Peer registrations.");
        describe_gauge!(
            "legacygpu_leader",
            "On PostgreSQL: 1 while this coordinator holds the leader lease, 0 on a standby."
        );
        describe_gauge!("legacygpu_lease_epoch", "On PostgreSQL: the leader lease's epoch.");
        describe_gauge!(
            "legacygpu_lease_age_seconds",
            Unit::Seconds,
            "On PostgreSQL: since the leader last renewed its lease (NaN while nobody leads)."
        );
        describe_counter!("legacygpu_messages_rejected_total", "Messages refused, by reason.");
        describe_counter!(
            "legacygpu_connections_dropped_slow_total",
            "Connections dropped for reading their messages too slowly."
        );
        describe_counter!(
            "legacygpu_progress_forwarded_total",
            "Deltas of streamed tasks (task_progress) handed to followers, by follower kind (gamer, http)."
        );
        describe_counter!(
            "legacygpu_progress_dropped_total",
            "Deltas of streamed tasks lost because a follower's queue was full, by follower kind."
        );
        describe_histogram!(
            "legacygpu_task_queue_wait_seconds",
            Unit::Seconds,
            "Time from entering the queue to assignment, by task type."
        );
        describe_histogram!(
            "legacygpu_task_run_seconds",
            Unit::Seconds,
            "Time an attempt ran on its peer, by task type."
        );
        describe_histogram!(
            "legacygpu_task_latency_seconds",
            Unit::Seconds,
            "Time from submission to outcome inside the coordinator, by task type."
        );
        describe_histogram!(
            "legacygpu_store_commit_seconds",
            Unit::Seconds,
            "Time to commit one batch to the store."
        );
        describe_counter!(
            "legacygpu_verify_replicas_total",
            "Hidden tasks verification ran, by task type and kind (replica, canary)."
        );
        describe_counter!(
            "legacygpu_verify_tasks_total",
            "Verified tasks by task type and verdict (agreed, self_checked, trusted, unverifiable, no_quorum, ended)."
        );
        describe_counter!(
            "legacygpu_verify_disagreements_total",
            "Verified tasks whose results disagreed at least once, by task type."
        );
        describe_counter!("legacygpu_workers_quarantined_total", "Workers quarantined.");
        describe_counter!(
            "legacygpu_canaries_total",
            "Canaries answered, by result (passed, failed)."
        );
        describe_gauge!("legacygpu_workers_quarantined", "Connected workers in quarantine.");
        describe_gauge!(
            "legacygpu_replication_overhead_ratio",
            "Extra attempts verification made (replicas beyond each task's first, and canaries) per task submitted."
        );
        describe_gauge!("legacygpu_queue_depth", "Tasks waiting for a peer (back-offs included).");
        describe_gauge!("legacygpu_tasks_running", "Tasks assigned to peers.");
        describe_gauge!("legacygpu_peers_connected", "Peers connected.");
        describe_gauge!(
            "legacygpu_peers_healthy",
            "Peers connected, heartbeating and not draining."
        );
        describe_gauge!("legacygpu_slots", "Task slots over all connected peers.");
        describe_gauge!("legacygpu_peer_busy_slots", "Slots in use, by peer.");
        describe_gauge!("legacygpu_gamers_connected", "Gamers (clients) connected.");
        // The edges (edge/, quota.rs).
        describe_counter!(
            "legacygpu_connections_refused_total",
            "Connections closed at accept, by port and reason (per-address limits, the connection limit, accept errors)."
        );
        describe_counter!(
            "legacygpu_quota_refusals_total",
            "Submissions refused as busy by a quota, by limit."
        );
        describe_gauge!(
            "legacygpu_queued_payload_bytes",
            Unit::Bytes,
            "Payload bytes held for unfinished tasks accepted since start."
        );
        describe_gauge!(
            "legacygpu_uptime_seconds",
            Unit::Seconds,
            "Time since the coordinator started."
        );
    });
}

/// Extra attempts verification made per task submitted: replicas beyond
/// each task's first, and canaries.
pub(crate) fn overhead(c: &sched::Counters) -> f64 {
    let extra = c.verify.extra_replicas + c.verify.canaries;
    if c.submitted == 0 { 0.0 } else { extra as f64 / c.submitted as f64 }
}

/// Counts one event in the current recorder.
fn record(event: &Event<Json>) {
    if record_verification(event) {
        return;
    }
    match event {
        Event::TaskSubmitted { task } => {
            counter!("legacygpu_tasks_submitted_total", "task_type" => task.task_type.to_string())
                .increment(1);
        }
        Event::TaskAssigned { task_type, queue_wait, .. } => {
            histogram!("legacygpu_task_queue_wait_seconds", "task_type" => task_type.to_string())
                .record(queue_wait.as_secs_f64());
        }
        Event::TaskRequeued { task_type, reason, .. } => {
            counter!(
                "legacygpu_tasks_retried_total",
                "task_type" => task_type.to_string(),
                "reason" => reason.as_str()
            )
            .increment(1);
        }
        Event::TaskFinished { task, outcome, run_time, at, .. } => {
            let task_type = task.task_type.to_string();
            let latency = at.saturating_since(task.submitted_at);
            histogram!("legacygpu_task_latency_seconds", "task_type" => task_type.clone())
                .record(latency.as_secs_f64());
            if let Some(run) = run_time {
                histogram!("legacygpu_task_run_seconds", "task_type" => task_type.clone())
                    .record(run.as_secs_f64());
            }
            match outcome.status() {
                TaskState::Completed => {
                    counter!("legacygpu_tasks_completed_total", "task_type" => task_type)
                        .increment(1);
                }
                status => {
                    let status = status.as_str();
                    counter!("legacygpu_tasks_failed_total", "task_type" => task_type, "status" => status)
                        .increment(1);
                }
            }
        }
        Event::StaleResult { .. } => counter!("legacygpu_stale_results_total").increment(1),
        Event::PeerJoined { .. } => counter!("legacygpu_peers_joined_total").increment(1),
        Event::PeerLeft { reason: LeaveReason::Dead, .. } => {
            counter!("legacygpu_heartbeats_missed_total").increment(1);
        }
        _ => {}
    }
}

/// Counts what verification did; true when the event was verification's
/// alone (a hidden task's life is not counted as a task's).
fn record_verification(event: &Event<Json>) -> bool {
    match event {
        Event::TaskSubmitted { task } if task.kind.is_hidden() => {
            let kind =
                if matches!(task.kind, TaskKind::Canary { .. }) { "canary" } else { "replica" };
            counter!("legacygpu_verify_replicas_total", "task_type" => task.task_type.to_string(), "kind" => kind)
                .increment(1);
        }
        Event::TaskFinished { task, .. } if task.kind.is_hidden() => {}
        Event::Verified { task_type, verification, .. } => {
            let status = verification.status.as_str();
            counter!("legacygpu_verify_tasks_total", "task_type" => task_type.to_string(), "status" => status)
                .increment(1);
        }
        Event::Disagreed { task_type, .. } => {
            counter!("legacygpu_verify_disagreements_total", "task_type" => task_type.to_string())
                .increment(1);
        }
        Event::Quarantined { .. } => counter!("legacygpu_workers_quarantined_total").increment(1),
        Event::CanaryAnswered { passed, .. } => {
            let result = if *passed { "passed" } else { "failed" };
            counter!("legacygpu_canaries_total", "result" => result).increment(1);
        }
        _ => return false,
    }
    true
}

/// The stream's form of a scheduler event, for those worth publishing.
fn api_event(event: &Event<Json>) -> Option<ApiEvent> {
    Some(match event {
        Event::TaskSubmitted { task } | Event::TaskFinished { task, .. }
            if task.kind.is_hidden() =>
        {
            return None;
        }
        Event::TaskAssigned { hidden: true, .. }
        | Event::TaskStarted { hidden: true, .. }
        | Event::TaskRequeued { hidden: true, .. } => return None,
        Event::Verified { task, task_type, verification } => ApiEvent::TaskVerified {
            task_id: task.to_string(),
            task_type: task_type.to_string(),
            status: verification.status,
            replicas: verification.replicas.len(),
        },
        Event::Quarantined { peer } => {
            ApiEvent::WorkerStatus { worker_id: peer.to_string(), status: "quarantined".into() }
        }
        Event::Cleared { peer } => {
            ApiEvent::WorkerStatus { worker_id: peer.to_string(), status: "healthy".into() }
        }
        Event::PeerJoined { peer, slots, .. } => {
            ApiEvent::WorkerJoined { worker_id: peer.to_string(), slots: *slots }
        }
        Event::PeerLeft { peer, reason: LeaveReason::Dead, .. } => {
            ApiEvent::WorkerDead { worker_id: peer.to_string() }
        }
        Event::PeerLeft { peer, reason, .. } => {
            ApiEvent::WorkerLeft { worker_id: peer.to_string(), reason: reason.as_str().to_owned() }
        }
        Event::PeerDraining { peer } => {
            ApiEvent::WorkerStatus { worker_id: peer.to_string(), status: "draining".into() }
        }
        Event::PeerPaused { peer, paused } => ApiEvent::WorkerStatus {
            worker_id: peer.to_string(),
            status: if *paused { "paused" } else { "resumed" }.into(),
        },
        Event::TaskRetried { task, task_type, attempt, .. } => ApiEvent::TaskRetried {
            task_id: task.to_string(),
            task_type: task_type.to_string(),
            attempt: attempt.0,
            reason: "operator_retry".into(),
            failures: 0,
        },
        Event::TaskSubmitted { task } => ApiEvent::TaskQueued {
            task_id: task.id.to_string(),
            client_task_id: task.client_task_id.to_string(),
            task_type: task.task_type.to_string(),
            priority: task.priority,
        },
        Event::TaskAssigned { task, task_type, peer, attempt, queue_wait, .. } => {
            ApiEvent::TaskAssigned {
                task_id: task.to_string(),
                task_type: task_type.to_string(),
                worker_id: peer.to_string(),
                attempt: attempt.0,
                queue_wait_ms: queue_wait.as_secs_f64() * 1e3,
            }
        }
        Event::TaskStarted { task, peer, attempt, .. } => ApiEvent::TaskStarted {
            task_id: task.to_string(),
            worker_id: peer.to_string(),
            attempt: attempt.0,
        },
        Event::TaskRequeued { task, task_type, attempt, reason, failures, .. } => {
            ApiEvent::TaskRetried {
                task_id: task.to_string(),
                task_type: task_type.to_string(),
                attempt: attempt.0,
                reason: reason.as_str().to_owned(),
                failures: *failures,
            }
        }
        Event::TaskFinished { task, outcome, attempts, run_time, .. } => {
            let (task_id, client_task_id, task_type) =
                (task.id.to_string(), task.client_task_id.to_string(), task.task_type.to_string());
            match outcome {
                Outcome::Completed { peer, .. } => ApiEvent::TaskCompleted {
                    task_id,
                    client_task_id,
                    task_type,
                    worker_id: peer.to_string(),
                    attempts: *attempts,
                    run_ms: run_time.map(|d| d.as_secs_f64() * 1e3),
                },
                other if other.status() == TaskState::Cancelled => {
                    ApiEvent::TaskCancelled { task_id, client_task_id, task_type }
                }
                other => {
                    let failure =
                        other.failure().unwrap_or_else(|| sched::Failure::new("failed", ""));
                    ApiEvent::TaskFailed {
                        task_id,
                        client_task_id,
                        task_type,
                        status: other.status(),
                        code: failure.code.clone(),
                        message: failure.message.to_string(),
                        attempts: *attempts,
                    }
                }
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn the_leader_info_names_both_urls_escaped_and_nothing_without_a_leader() {
        let info = Metrics::leader_info(Some("http://a:8000"), Some("ws://a:8765"));
        assert!(info.starts_with("# HELP legacygpu_leader_info "), "{info}");
        assert!(info.contains("# TYPE legacygpu_leader_info gauge\n"), "{info}");
        let sample = r#"legacygpu_leader_info{leader="http://a:8000",leader_ws="ws://a:8765"} 1"#;
        assert!(info.ends_with(&format!("{sample}\n")), "{info}");
        let odd = Metrics::leader_info(None, Some("ws://\"x\"\\"));
        assert!(odd.contains(r#"{leader="",leader_ws="ws://\"x\"\\"} 1"#), "{odd}");
        assert!(!Metrics::leader_info(None, None).contains("legacygpu_leader_info{"));
    }
}
