//! What reads see: a snapshot of the cluster the core publishes after its
//! flushes, so that `/metrics`, health, the worker lists and the dashboard
//! never walk scheduler state on the core loop per request.
//!
//! The core keeps one [`WorkerFacts`] per connected worker and rebuilds only
//! those of workers something happened to since the last publish (the
//! scheduler's events name them); a publish then costs a copy of the list of
//! pointers. It publishes at once when workers join or leave, or when the
//! flush answered the HTTP API (so that an API client reads its own writes),
//! and otherwise at most every
//! [`Limits::snapshot_interval`](crate::config::Limits), so that a busy
//! cluster does not rebuild it thousands of times a second.
//!
//! Facts are raw (times, counts); what depends on the reader's clock — a
//! heartbeat's age, whether a worker is late — is worked out when read, by
//! [`WorkerFacts::status`], the one rule for worker status.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use codes::WorkerStatus;
use proto::{Heartbeat, Json};
use sched::verify::{Reputation, Subject};
use sched::{Event, PeerId, Scheduler, Stats, Strategy, TaskId, Time};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::core::PeerInfo;
use crate::telemetry::Figures;

/// The cluster as reads see it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub stats: Stats,
    pub figures: Figures,
    pub strategy: Strategy,
    /// Tasks held by the scheduler, live and retained.
    pub tasks_held: usize,
    /// Connected workers, by id.
    pub workers: Vec<Arc<WorkerFacts>>,
    /// Quarantined workers that are not connected, by id: the quarantine
    /// stays (in the store) until an operator clears it.
    pub quarantined_away: Vec<(PeerId, Reputation)>,
}

impl Snapshot {
    pub fn worker(&self, id: &str) -> Option<&Arc<WorkerFacts>> {
        self.workers
            .binary_search_by(|w| w.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.workers.get(i))
    }
}

/// A connected peer's status now, as its snapshot would tell it.
pub(crate) fn peer_status(
    peer: &sched::Peer,
    now: Time,
    heartbeat_interval: Duration,
) -> WorkerStatus {
    let flags = (peer.quarantined(), peer.draining(), peer.paused());
    status(flags, peer.last_seen(), now, heartbeat_interval)
}

/// The rule of [`WorkerFacts::status`], from (quarantined, draining, paused).
fn status(
    (quarantined, draining, paused): (bool, bool, bool),
    last_seen: Time,
    now: Time,
    heartbeat_interval: Duration,
) -> WorkerStatus {
    if quarantined {
        WorkerStatus::Quarantined
    } else if draining {
        WorkerStatus::Draining
    } else if paused {
        WorkerStatus::Paused
    } else if now.saturating_since(last_seen) > 2 * heartbeat_interval {
        WorkerStatus::Unhealthy
    } else {
        WorkerStatus::Healthy
    }
}

impl WorkerFacts {
    /// Whether it is given new work (not paused, draining or quarantined).
    pub fn takes_work(&self) -> bool {
        !(self.paused || self.draining || self.quarantined)
    }

    /// The models it generates text with: those declared for `generate`,
    /// and those declared for no type when it runs `generate` (the same rule
    /// the scheduler matches tasks by).
    pub fn generation_models(&self) -> impl Iterator<Item = &proto::ModelEntry> {
        let runs_generate =
            self.task_types.as_ref().is_some_and(|t| t.iter().any(|t| t == "generate"));
        self.model_info.iter().filter(move |m| match m.task_type.as_deref() {
            Some(t) => t == "generate",
            None => runs_generate,
        })
    }
}

/// What the coordinator knows of one worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerFacts {
    pub id: PeerId,
    pub address: Option<SocketAddr>,
    pub slots: u32,
    pub busy_slots: u32,
    pub task_types: Option<Vec<String>>,
    pub models: Vec<String>,
    /// Each model with its details, as declared (for `GET /v1/models`).
    pub model_info: Arc<[proto::ModelEntry]>,
    /// The capabilities exactly as the worker declared them.
    pub capabilities: Arc<serde_json::Value>,
    pub draining: bool,
    /// Paused by an operator.
    pub paused: bool,
    /// Its results were found wrong too often: it gets no new work.
    pub quarantined: bool,
    /// What its results were found to be, once any was judged.
    pub reputation: Option<Reputation>,
    pub completed: u64,
    pub failed: u64,
    pub joined_at: Time,
    pub last_seen: Time,
    pub heartbeat: Option<Heartbeat>,
    /// Cluster ids of the tasks it holds.
    pub running: Vec<TaskId>,
    /// Mean measured run time by task type, in milliseconds.
    pub run_time_ms: BTreeMap<String, f64>,
}

impl WorkerFacts {
    /// `quarantined`; `draining`; `paused`; `unhealthy` when its heartbeats are more
    /// than two intervals late at `now` (it is declared dead only at the
    /// heartbeat timeout); else `healthy`.
    pub fn status(&self, now: Time, heartbeat_interval: Duration) -> WorkerStatus {
        let flags = (self.quarantined, self.draining, self.paused);
        status(flags, self.last_seen, now, heartbeat_interval)
    }

    fn of(
        peer: &sched::Peer,
        info: Option<&PeerInfo>,
        reputation: Option<&Reputation>,
    ) -> WorkerFacts {
        let caps = peer.caps();
        WorkerFacts {
            id: peer.id().clone(),
            address: info.and_then(|i| i.remote),
            slots: caps.slots,
            busy_slots: peer.used(),
            task_types: caps.task_types.as_ref().map(|t| t.iter().map(|s| s.to_string()).collect()),
            models: caps.models.names().map(|m| m.to_string()).collect(),
            model_info: info.map_or_else(|| Arc::from([]), |i| Arc::clone(&i.models)),
            capabilities: info.map_or_else(|| Arc::new(serde_json::Value::Null), |i| i.raw()),
            draining: peer.draining(),
            paused: peer.paused(),
            quarantined: peer.quarantined(),
            reputation: reputation.cloned(),
            completed: peer.completed(),
            failed: peer.failed(),
            joined_at: peer.joined_at(),
            last_seen: peer.last_seen(),
            heartbeat: info.and_then(|i| i.heartbeat.clone()),
            running: peer.tasks().map(|(t, _)| t).collect(),
            run_time_ms: peer.runtimes().map(|(t, e)| (t.to_owned(), e.mean_us / 1e3)).collect(),
        }
    }
}

/// The core's side: the facts kept between publishes, and the channel.
pub(crate) struct Publisher {
    tx: watch::Sender<Arc<Snapshot>>,
    facts: BTreeMap<PeerId, Arc<WorkerFacts>>,
    /// Quarantined workers not connected.
    away: BTreeMap<PeerId, Reputation>,
    /// Whether `away` was filled from the reputations recovered at start
    /// (later changes come as events).
    seeded: bool,
    /// Workers to rebuild at the next publish.
    dirty: BTreeSet<PeerId>,
    /// Something changed since the last publish.
    changed: bool,
    /// Workers joined or left: publish without waiting for the interval.
    urgent: bool,
    interval: Duration,
    last: Option<Instant>,
}

impl Publisher {
    pub fn new(interval: Duration) -> Publisher {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Publisher {
            tx,
            facts: BTreeMap::new(),
            away: BTreeMap::new(),
            seeded: false,
            dirty: BTreeSet::new(),
            changed: true,
            urgent: true,
            interval,
            last: None,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Notes what an event changed.
    pub fn observe(&mut self, event: &Event<Json>) {
        self.changed = true;
        match event {
            Event::PeerJoined { peer, .. } | Event::PeerLeft { peer, .. } => {
                self.urgent = true;
                self.dirty.insert(peer.clone());
            }
            Event::PeerDraining { peer }
            | Event::PeerPaused { peer, .. }
            | Event::TaskAssigned { peer, .. }
            | Event::TaskStarted { peer, .. }
            | Event::TaskReclaimed { peer, .. }
            | Event::StaleResult { peer, .. }
            | Event::TaskRequeued { peer, .. } => {
                self.dirty.insert(peer.clone());
            }
            Event::TaskFinished { peer: Some(peer), .. } => {
                self.dirty.insert(peer.clone());
            }
            Event::Quarantined { peer } | Event::Cleared { peer } => {
                self.urgent = true;
                self.dirty.insert(peer.clone());
            }
            Event::Reputation { subject: Subject::Worker(peer), .. } => {
                self.dirty.insert(peer.clone());
            }
            _ => {}
        }
    }

    /// Notes a change the scheduler does not report as an event (a
    /// heartbeat, a registration's details).
    pub fn touch(&mut self, peer: &PeerId) {
        self.changed = true;
        self.dirty.insert(peer.clone());
    }

    /// The API was answered (or changed the configuration): publish at
    /// once, so that what it reads next reflects what it was told.
    pub fn answered_api(&mut self) {
        self.changed = true;
        self.urgent = true;
    }

    /// When the next publish is due, if one is pending.
    pub fn due(&self) -> Option<Instant> {
        if !self.changed {
            return None;
        }
        Some(match (self.urgent, self.last) {
            (false, Some(last)) => last + self.interval,
            _ => Instant::now(),
        })
    }

    /// Publishes a new snapshot when one is due.
    pub fn publish_if_due<P: Clone>(
        &mut self,
        sched: &Scheduler<P>,
        info: &BTreeMap<PeerId, PeerInfo>,
        figures: impl FnOnce() -> Figures,
    ) {
        if self.due().is_none_or(|at| at > Instant::now()) {
            return;
        }
        if !std::mem::replace(&mut self.seeded, true) {
            for (subject, r) in sched.reputations() {
                if let (Subject::Worker(id), true) = (subject, r.quarantined) {
                    self.dirty.insert(id.clone());
                }
            }
        }
        for id in std::mem::take(&mut self.dirty) {
            let reputation = sched.reputation(&Subject::Worker(id.clone()));
            match sched.peer(id.as_str()) {
                Some(peer) => {
                    let facts = WorkerFacts::of(peer, info.get(peer.id()), reputation);
                    self.facts.insert(id.clone(), Arc::new(facts));
                    self.away.remove(&id);
                }
                None => {
                    self.facts.remove(&id);
                    match reputation.filter(|r| r.quarantined) {
                        Some(r) => self.away.insert(id, r.clone()),
                        None => self.away.remove(&id),
                    };
                }
            }
        }
        let snapshot = Snapshot {
            stats: sched.stats(),
            figures: figures(),
            strategy: sched.config().strategy,
            tasks_held: sched.task_count(),
            workers: self.facts.values().cloned().collect(),
            quarantined_away: self.away.iter().map(|(id, r)| (id.clone(), r.clone())).collect(),
        };
        self.tx.send_replace(Arc::new(snapshot));
        (self.changed, self.urgent, self.last) = (false, false, Some(Instant::now()));
    }
}
