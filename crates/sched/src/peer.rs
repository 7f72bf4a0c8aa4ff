//! Peers: what each can run, what it holds, and how fast it has been.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::queue::Class;
use crate::types::{Attempt, ConnId, PeerId, TaskId, Time};
use crate::verify::AffinityKey;

/// What a peer can run, as the shell read it from its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCaps {
    /// Task types it runs; `None` means every type.
    pub task_types: Option<BTreeSet<Arc<str>>>,
    /// Tasks at once; at least 1.
    pub slots: u32,
    /// The models it serves, each for the task types that run it.
    pub models: ServedModels,
    /// One entry per GPU: its memory in MiB, where known.
    pub gpus_vram_mb: Vec<Option<u64>>,
    /// It answers with the cluster id and attempt of each assignment (our
    /// worker does; `capabilities.echoes_ids`), never by the seed's id
    /// alone, so its answers cannot be taken for another task: it may be
    /// given a task before the task is durable (`scheduler/ids.rs`).
    pub echoes_ids: bool,
}

impl Default for PeerCaps {
    fn default() -> PeerCaps {
        PeerCaps {
            task_types: None,
            slots: 1,
            models: ServedModels::default(),
            gpus_vram_mb: Vec::new(),
            echoes_ids: false,
        }
    }
}

/// The models a peer serves, by name, each for the task types that run it:
/// a peer with an ONNX classifier and a GGUF model serves the one to
/// `inference` tasks and the other to `generate` tasks, never the reverse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedModels(BTreeMap<Arc<str>, Option<BTreeSet<Arc<str>>>>);

impl ServedModels {
    /// Adds `model`, served to tasks of `task_type`; `None` serves it to
    /// every type (a plain name, as a seed-style peer advertises it).
    pub fn insert(&mut self, model: Arc<str>, task_type: Option<Arc<str>>) {
        let types = self.0.entry(model).or_insert_with(|| Some(BTreeSet::new()));
        match (types, task_type) {
            (Some(types), Some(t)) => {
                types.insert(t);
            }
            (types, None) => *types = None,
            (None, Some(_)) => {}
        }
    }

    /// Whether `model` is served to tasks of `task_type`.
    pub fn serves(&self, model: &str, task_type: &str) -> bool {
        self.0.get(model).is_some_and(|types| types.as_ref().is_none_or(|t| t.contains(task_type)))
    }

    /// The models' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.keys()
    }
}

impl FromIterator<(Arc<str>, Option<Arc<str>>)> for ServedModels {
    fn from_iter<I: IntoIterator<Item = (Arc<str>, Option<Arc<str>>)>>(iter: I) -> ServedModels {
        let mut models = ServedModels::default();
        for (model, task_type) in iter {
            models.insert(model, task_type);
        }
        models
    }
}

impl PeerCaps {
    /// Whether a peer with these capabilities can run tasks of `class`.
    pub fn can_run(&self, class: &Class) -> bool {
        let typed = self.task_types.as_ref().is_none_or(|types| types.contains(&class.task_type));
        let req = &class.requirements;
        let model = req.model.as_ref().is_none_or(|m| self.models.serves(m, &class.task_type));
        let gpu = !req.needs_gpu()
            || match req.min_vram_mb {
                None => !self.gpus_vram_mb.is_empty(),
                Some(min) => self.gpus_vram_mb.iter().any(|v| v.is_some_and(|v| v >= min)),
            };
        typed && model && gpu
    }

    /// The largest known GPU memory, in MiB.
    pub fn max_vram_mb(&self) -> Option<u64> {
        self.gpus_vram_mb.iter().flatten().copied().max()
    }

    pub fn has_gpu(&self) -> bool {
        !self.gpus_vram_mb.is_empty()
    }
}

/// A peer joining, as the shell hands it to [`crate::Scheduler::handle_peer_joined`].
#[derive(Debug, Clone)]
pub struct PeerJoin {
    pub id: PeerId,
    pub conn: ConnId,
    pub caps: PeerCaps,
    /// Assignments the peer says it still runs from an earlier session.
    pub running: Vec<(TaskId, Attempt)>,
    /// Who the peer says runs it (`capabilities.owner`): replicas of one
    /// task never go to two peers of the same owner.
    pub owner: Option<Arc<str>>,
    /// The identity of the credential it joined with, when it has one of
    /// its own (its reputation follows it too).
    pub credential: Option<Arc<str>>,
}

impl PeerJoin {
    /// A join with no claims, owner or credential.
    pub fn new(id: PeerId, conn: ConnId, caps: PeerCaps) -> PeerJoin {
        PeerJoin { id, conn, caps, running: Vec::new(), owner: None, credential: None }
    }
}

/// Whether an operator's drain is under way on a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    No,
    /// It gets nothing new; it is closed when it holds nothing.
    WhenIdle,
    /// It was told to leave (the close is on its way).
    Told,
}

/// An operator's hold on a peer (see [`Peer::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    Paused,
    Draining,
}

/// An exponentially weighted moving average of run times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    /// Microseconds.
    pub mean_us: f64,
    pub samples: u64,
}

impl Ewma {
    const ALPHA: f64 = 0.2;

    fn add(&mut self, sample: Duration) {
        let x = sample.as_secs_f64() * 1e6;
        self.mean_us =
            if self.samples == 0 { x } else { self.mean_us + Ewma::ALPHA * (x - self.mean_us) };
        self.samples += 1;
    }
}

/// A connected peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub(crate) id: PeerId,
    pub(crate) conn: ConnId,
    pub(crate) caps: PeerCaps,
    pub(crate) joined_at: Time,
    pub(crate) last_seen: Time,
    /// Assignments it holds, by task.
    pub(crate) tasks: BTreeMap<TaskId, Attempt>,
    /// Runs that were cancelled or timed out but that the peer has not yet
    /// confirmed stopping: they still occupy a slot (until `cancel_grace`).
    pub(crate) zombies: BTreeMap<TaskId, Attempt>,
    /// The peer said it is shutting down (`drain`).
    pub(crate) draining: bool,
    /// An operator paused it: it keeps its connection and what it runs.
    pub(crate) paused: bool,
    /// An operator drained it: it gets nothing new and is told to leave
    /// once idle (see [`Peer::status`]).
    pub(crate) leaving: Leaving,
    /// Its results were found wrong too often: it gets no new work.
    pub(crate) quarantined: bool,
    pub(crate) owner: Option<Arc<str>>,
    pub(crate) credential: Option<Arc<str>>,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) runtimes: BTreeMap<Arc<str>, Ewma>,
}

impl Peer {
    pub(crate) fn new(join: &PeerJoin, now: Time) -> Peer {
        Peer {
            id: join.id.clone(),
            conn: join.conn,
            caps: join.caps.clone(),
            joined_at: now,
            last_seen: now,
            tasks: BTreeMap::new(),
            zombies: BTreeMap::new(),
            draining: false,
            paused: false,
            leaving: Leaving::No,
            quarantined: false,
            owner: join.owner.clone(),
            credential: join.credential.clone(),
            completed: 0,
            failed: 0,
            runtimes: BTreeMap::new(),
        }
    }

    pub fn id(&self) -> &PeerId {
        &self.id
    }

    pub fn conn(&self) -> ConnId {
        self.conn
    }

    pub fn caps(&self) -> &PeerCaps {
        &self.caps
    }

    pub fn joined_at(&self) -> Time {
        self.joined_at
    }

    pub fn last_seen(&self) -> Time {
        self.last_seen
    }

    /// Slots in use, stopped-but-unconfirmed runs included.
    pub fn used(&self) -> u32 {
        u32::try_from(self.tasks.len() + self.zombies.len()).unwrap_or(u32::MAX)
    }

    /// Slots free for new work (none while draining, paused or quarantined).
    pub fn free(&self) -> u32 {
        if self.takes_work() { self.caps.slots.saturating_sub(self.used()) } else { 0 }
    }

    /// Whether new work may go to it: not draining (its own or an
    /// operator's), not paused, not quarantined.
    pub fn takes_work(&self) -> bool {
        !self.draining && !self.paused && !self.quarantined && self.leaving == Leaving::No
    }

    /// Draining: by its own request or an operator's.
    pub fn draining(&self) -> bool {
        self.draining || self.leaving != Leaving::No
    }

    /// Paused by an operator.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// What an operator sees of it: draining (it will leave) before paused
    /// (it stays); `None` when it takes work.
    pub fn status(&self) -> Option<PeerStatus> {
        if self.draining() {
            Some(PeerStatus::Draining)
        } else if self.paused {
            Some(PeerStatus::Paused)
        } else {
            None
        }
    }

    /// Whether it is quarantined (see [`crate::verify`]).
    pub fn quarantined(&self) -> bool {
        self.quarantined
    }

    /// The owner it declared.
    pub fn owner(&self) -> Option<&Arc<str>> {
        self.owner.as_ref()
    }

    /// The identity of its own credential, when it has one.
    pub fn credential(&self) -> Option<&Arc<str>> {
        self.credential.as_ref()
    }

    /// What keeps replicas of one task off this peer: its id, and its owner.
    pub fn affinity_keys(&self) -> Vec<AffinityKey> {
        let mut keys = vec![AffinityKey::Peer(self.id.clone())];
        keys.extend(self.owner.as_ref().map(|o| AffinityKey::Owner(Arc::clone(o))));
        keys
    }

    /// The tasks it holds.
    pub fn tasks(&self) -> impl Iterator<Item = (TaskId, Attempt)> + '_ {
        self.tasks.iter().map(|(t, a)| (*t, *a))
    }

    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// What it ran to an end, over its sessions (see [`crate::Tally`]).
    pub fn tally(&self) -> crate::Tally {
        crate::Tally { completed: self.completed, failed: self.failed }
    }

    /// Adds what an earlier session of this id ran.
    pub(crate) fn carry(&mut self, earlier: crate::Tally) {
        self.completed += earlier.completed;
        self.failed += earlier.failed;
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Its measured mean run time for a task type, if it ran any.
    pub fn runtime(&self, task_type: &str) -> Option<Ewma> {
        self.runtimes.get(task_type).copied()
    }

    /// Measured run times, by task type.
    pub fn runtimes(&self) -> impl Iterator<Item = (&str, Ewma)> + '_ {
        self.runtimes.iter().map(|(t, e)| (&**t, *e))
    }

    pub(crate) fn record_runtime(&mut self, task_type: &Arc<str>, run: Duration) {
        self.runtimes
            .entry(Arc::clone(task_type))
            .or_insert(Ewma { mean_us: 0.0, samples: 0 })
            .add(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Requirements;

    fn class(t: &str, req: Requirements) -> Class {
        Class { task_type: t.into(), requirements: req }
    }

    #[test]
    fn capability_matching() {
        let seed_peer = PeerCaps::default();
        let gpu_peer = PeerCaps {
            task_types: Some(["gpu".into(), "inference".into()].into()),
            slots: 2,
            models: [("resnet50".into(), None)].into_iter().collect(),
            gpus_vram_mb: vec![Some(8192)],
            echoes_ids: true,
        };
        let plain = Requirements::default();
        let model = Requirements { model: Some("resnet50".into()), ..Requirements::default() };
        let gpu = Requirements { gpu: true, ..Requirements::default() };
        let big = Requirements { min_vram_mb: Some(16_000), ..Requirements::default() };

        assert!(seed_peer.can_run(&class("anything", plain.clone())));
        assert!(!seed_peer.can_run(&class("inference", model.clone())));
        assert!(!seed_peer.can_run(&class("gpu", gpu.clone())));
        assert!(gpu_peer.can_run(&class("inference", model)));
        assert!(gpu_peer.can_run(&class("gpu", gpu)));
        assert!(!gpu_peer.can_run(&class("gpu", big)));
        assert!(!gpu_peer.can_run(&class("echo", plain)));
    }

    #[test]
    fn a_model_serves_the_task_types_it_was_advertised_for() {
        let model = |m: &str| Requirements { model: Some(m.into()), ..Requirements::default() };
        let both = PeerCaps {
            models: [
                ("color".into(), Some("inference".into())),
                ("tiny".into(), Some("generate".into())),
                ("shared".into(), Some("inference".into())),
                ("shared".into(), Some("generate".into())),
                // A plain name serves every type, whatever else is said of it.
                ("plain".into(), None),
                ("plain".into(), Some("inference".into())),
            ]
            .into_iter()
            .collect(),
            ..PeerCaps::default()
        };
        assert!(both.can_run(&class("inference", model("color"))));
        assert!(!both.can_run(&class("generate", model("color"))));
        assert!(both.can_run(&class("generate", model("tiny"))));
        assert!(!both.can_run(&class("inference", model("tiny"))));
        assert!(both.can_run(&class("inference", model("shared"))));
        assert!(both.can_run(&class("generate", model("shared"))));
        assert!(both.can_run(&class("generate", model("plain"))));
        assert!(both.can_run(&class("anything", model("plain"))));
        assert!(!both.can_run(&class("generate", model("absent"))));
        let names: Vec<&str> = both.models.names().map(|n| &**n).collect();
        assert_eq!(names, ["color", "plain", "shared", "tiny"]);
    }

    #[test]
    fn unknown_vram_does_not_satisfy_a_minimum() {
        let caps = PeerCaps { gpus_vram_mb: vec![None], ..PeerCaps::default() };
        let gpu = Requirements { gpu: true, ..Requirements::default() };
        let min = Requirements { min_vram_mb: Some(1), ..Requirements::default() };
        assert!(caps.can_run(&class("gpu", gpu)));
        assert!(!caps.can_run(&class("gpu", min)));
    }
}
