//! Placement: which queued task goes to which free peer.
//!
//! # Rules
//!
//! 1. Placement runs after every input that could make an assignment possible
//!    (a task queued, a slot freed, a peer joined) and fills **every** free
//!    slot it can, not one task per event.
//! 2. Tasks are taken in queue order — higher priority first, then first come
//!    first served — skipping a task only when no free peer can run it (a
//!    task waiting for a model or a GPU never blocks the tasks behind it).
//! 3. A peer can run a task when it declared the task's type (or declared no
//!    types), serves the required model for the task's type (a model
//!    advertised without a type serves every type), and has a GPU (with
//!    enough memory) when one is required. A draining or quarantined peer
//!    takes nothing.
//! 4. Among the free peers able to run the task, the [`Strategy`] chooses.
//!    Ties rotate: the next candidate after the last peer chosen wins, so
//!    equal peers share work instead of the first one taking it all.
//!
//! 5. Some tasks carry [`Constraints`] beyond their requirements: a replica
//!    of a verified task goes only to a peer that shares no affinity key
//!    (peer id, declared owner) with the peers of its other replicas —
//!    placements made earlier in the same plan included — and a canary only
//!    to the worker it was made for. A task that no free peer may take is
//!    skipped for this plan; it never blocks the tasks behind it.
//!
//! [`plan`] is a pure function of the queue, the free peers, the
//! constraints and the strategy's rotation cursor; the scheduler applies
//! what it returns.

use std::cmp::Ordering;
use std::fmt;

use crate::peer::Peer;
use crate::queue::{Class, Queue};
use crate::types::{PeerId, TaskId};

/// How a task picks among the free peers able to run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Each peer in turn.
    RoundRobin,
    /// The peer with the smallest share of its slots in use.
    LeastLoaded,
    /// For GPU tasks, the peer whose GPU memory fits the need most tightly
    /// (keeping big GPUs for big tasks); for other tasks, peers without a GPU
    /// first (keeping GPUs free for GPU work). Then least loaded.
    GpuMatch,
    /// The peer with the lowest measured run time for the task's type; peers
    /// not yet measured go first so that they get measured.
    Latency,
    /// Measured run time scaled by load: `runtime × (1 + used/slots)`; a peer
    /// not yet measured counts as the mean of those measured, so new peers
    /// get work without being flooded. The default.
    #[default]
    Adaptive,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::LeastLoaded,
        Strategy::GpuMatch,
        Strategy::Latency,
        Strategy::Adaptive,
    ];

    /// The seed-2 name, e.g. `LEAST_LOADED`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "ROUND_ROBIN",
            Strategy::LeastLoaded => "LEAST_LOADED",
            Strategy::GpuMatch => "GPU_MATCH",
            Strategy::Latency => "LATENCY",
            Strategy::Adaptive => "ADAPTIVE",
        }
    }

    /// Reads a seed-2 name (any case, `-` or `_`).
    pub fn parse(name: &str) -> Option<Strategy> {
        let norm = name.trim().to_ascii_uppercase().replace('-', "_");
        Strategy::ALL.into_iter().find(|s| s.name() == norm)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A free peer able to run the task being placed, as a strategy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub peer: &'a PeerId,
    pub used: u32,
    pub slots: u32,
    pub has_gpu: bool,
    pub max_vram_mb: Option<u64>,
    /// Measured mean run time for the task's type, in microseconds.
    pub runtime_us: Option<f64>,
}

impl Candidate<'_> {
    fn load(&self) -> f64 {
        f64::from(self.used) / f64::from(self.slots.max(1))
    }
}

/// Picks one of `candidates` (sorted by peer id) for a task of `class`;
/// `cursor` is the last peer chosen, for rotating ties. `None` when empty.
pub fn choose(
    strategy: Strategy,
    class: &Class,
    candidates: &[Candidate<'_>],
    cursor: Option<&PeerId>,
) -> Option<usize> {
    let fleet_mean = mean_known_runtime(candidates);
    let score = |c: &Candidate<'_>| -> (f64, f64) {
        match strategy {
            Strategy::RoundRobin => (0.0, 0.0),
            Strategy::LeastLoaded => (c.load(), 0.0),
            Strategy::GpuMatch if class.requirements.needs_gpu() => {
                // Smallest sufficient GPU first; unknown memory after known.
                let fit = c.max_vram_mb.map_or(f64::MAX, |v| v as f64);
                (fit, c.load())
            }
            Strategy::GpuMatch => (if c.has_gpu { 1.0 } else { 0.0 }, c.load()),
            Strategy::Latency => (c.runtime_us.unwrap_or(0.0), c.load()),
            Strategy::Adaptive => {
                let runtime = c.runtime_us.or(fleet_mean).unwrap_or(1.0);
                (runtime * (1.0 + c.load()), c.load())
            }
        }
    };
    // Rotation rank: candidates after the cursor come first, in id order.
    let rank = |c: &Candidate<'_>| cursor.is_some_and(|cur| c.peer <= cur);
    (0..candidates.len()).min_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        let (sa, sb) = (score(ca), score(cb));
        sa.0.total_cmp(&sb.0)
            .then(sa.1.total_cmp(&sb.1))
            .then(rank(ca).cmp(&rank(cb)))
            .then(ca.peer.cmp(cb.peer))
            .then(Ordering::Equal)
    })
}

fn mean_known_runtime(candidates: &[Candidate<'_>]) -> Option<f64> {
    let known: Vec<f64> = candidates.iter().filter_map(|c| c.runtime_us).collect();
    (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
}

/// Where tasks may go beyond their requirements (rule 5). Asked once per
/// task whether it is constrained at all, so that unconstrained work pays
/// one lookup; told of each placement so that one plan keeps them too.
pub trait Constraints {
    /// Whether `task` has constraints.
    fn constrained(&self, task: TaskId) -> bool;
    /// Whether the constrained `task` may go to `peer`.
    fn allows(&self, task: TaskId, peer: &Peer) -> bool;
    /// The plan places the constrained `task` on `peer`.
    fn placed(&mut self, task: TaskId, peer: &Peer);
}

/// No task is constrained.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unconstrained;

impl Constraints for Unconstrained {
    fn constrained(&self, _: TaskId) -> bool {
        false
    }

    fn allows(&self, _: TaskId, _: &Peer) -> bool {
        true
    }

    fn placed(&mut self, _: TaskId, _: &Peer) {}
}

/// One decision of [`plan`]: run `task` on `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub task: TaskId,
    pub peer: PeerId,
}

/// Plans assignments of queued tasks to `free_peers` (peers with at least
/// one free slot, sorted by id), filling every slot it can. `cursor` is the
/// strategy's rotation state and is moved to the last peer chosen.
pub fn plan(
    queue: &Queue,
    free_peers: &[&Peer],
    strategy: Strategy,
    cursor: &mut Option<PeerId>,
    constraints: &mut dyn Constraints,
) -> Vec<Placement> {
    let mut out = Vec::new();
    if queue.is_empty() || free_peers.is_empty() {
        return out;
    }
    // Slots each free peer still has, as this plan uses them up.
    let mut free: Vec<u32> = free_peers.iter().map(|p| p.free()).collect();
    let mut heads: Vec<_> = queue
        .classes()
        .map(|(class, entries)| {
            let capable: Vec<usize> =
                (0..free_peers.len()).filter(|&i| free_peers[i].caps.can_run(class)).collect();
            (class, entries.iter().peekable(), capable)
        })
        .filter(|(_, _, capable)| !capable.is_empty())
        .collect();

    loop {
        // The earliest head (by priority, then sequence) that a free peer can take.
        let best = heads
            .iter_mut()
            .enumerate()
            .filter(|(_, (_, _, capable))| capable.iter().any(|&i| free[i] > 0))
            .filter_map(|(h, (_, entries, _))| entries.peek().map(|(key, _)| (h, **key)))
            .min_by_key(|(_, key)| *key);
        let Some((h, _)) = best else { break };
        let (class, entries, capable) = &mut heads[h];
        let Some((_, &task)) = entries.next() else { break };

        let constrained = constraints.constrained(task);
        let usable: Vec<usize> = capable
            .iter()
            .copied()
            .filter(|&i| free[i] > 0 && (!constrained || constraints.allows(task, free_peers[i])))
            .collect();
        if usable.is_empty() {
            continue; // No free peer may take it under its constraints.
        }
        let candidates: Vec<Candidate<'_>> = usable
            .iter()
            .map(|&i| {
                let p = free_peers[i];
                Candidate {
                    peer: &p.id,
                    used: p.caps.slots - free[i],
                    slots: p.caps.slots,
                    has_gpu: p.caps.has_gpu(),
                    max_vram_mb: p.caps.max_vram_mb(),
                    runtime_us: p.runtime(&class.task_type).map(|e| e.mean_us),
                }
            })
            .collect();
        let Some(pick) = choose(strategy, class, &candidates, cursor.as_ref()) else { break };
        let i = usable[pick];
        if constrained {
            constraints.placed(task, free_peers[i]);
        }
        free[i] -= 1;
        *cursor = Some(free_peers[i].id.clone());
        out.push(Placement { task, peer: free_peers[i].id.clone() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Requirements;

    fn class(req: Requirements) -> Class {
        Class { task_type: "t".into(), requirements: req }
    }

    fn cand<'a>(peer: &'a PeerId, used: u32, slots: u32) -> Candidate<'a> {
        Candidate { peer, used, slots, has_gpu: false, max_vram_mb: None, runtime_us: None }
    }

    #[test]
    fn names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.name()), Some(s));
        }
        assert_eq!(Strategy::parse("least-loaded"), Some(Strategy::LeastLoaded));
        assert_eq!(Strategy::parse("fastest"), None);
    }

    #[test]
    fn round_robin_rotates() {
        let ids: Vec<PeerId> = ["a", "b", "c"].map(PeerId::from).into();
        let cands: Vec<_> = ids.iter().map(|p| cand(p, 0, 1)).collect();
        let c = class(Requirements::default());
        let mut cursor = None;
        let mut picks = Vec::new();
        for _ in 0..4 {
            let i = choose(Strategy::RoundRobin, &c, &cands, cursor.as_ref()).unwrap();
            cursor = Some(ids[i].clone());
            picks.push(ids[i].as_str().to_owned());
        }
        assert_eq!(picks, ["a", "b", "c", "a"]);
    }

    #[test]
    fn least_loaded_prefers_low_load_and_spreads_ties() {
        let ids: Vec<PeerId> = ["a", "b", "c"].map(PeerId::from).into();
        let cands = [cand(&ids[0], 1, 2), cand(&ids[1], 0, 2), cand(&ids[2], 0, 2)];
        let c = class(Requirements::default());
        assert_eq!(choose(Strategy::LeastLoaded, &c, &cands, None), Some(1));
        // After b, the tie between b and c goes to c.
        assert_eq!(choose(Strategy::LeastLoaded, &c, &cands, Some(&ids[1])), Some(2));
    }

    #[test]
    fn gpu_match_fits_tightly_and_keeps_gpus_free() {
        let ids: Vec<PeerId> = ["big", "cpu", "small"].map(PeerId::from).into();
        let mut cands = [cand(&ids[0], 0, 1), cand(&ids[1], 0, 1), cand(&ids[2], 0, 1)];
        cands[0].has_gpu = true;
        cands[0].max_vram_mb = Some(24_000);
        cands[2].has_gpu = true;
        cands[2].max_vram_mb = Some(8_000);
        let gpu = class(Requirements { gpu: true, ..Requirements::default() });
        let gpu_candidates = [cands[0], cands[2]];
        assert_eq!(choose(Strategy::GpuMatch, &gpu, &gpu_candidates, None), Some(1));
        let cpu = class(Requirements::default());
        assert_eq!(choose(Strategy::GpuMatch, &cpu, &cands, None), Some(1));
    }

    #[test]
    fn latency_prefers_fast_and_explores_unknown() {
        let ids: Vec<PeerId> = ["fast", "new", "slow"].map(PeerId::from).into();
        let mut cands = [cand(&ids[0], 0, 1), cand(&ids[1], 0, 1), cand(&ids[2], 0, 1)];
        cands[0].runtime_us = Some(1_000.0);
        cands[2].runtime_us = Some(10_000.0);
        let c = class(Requirements::default());
        assert_eq!(choose(Strategy::Latency, &c, &cands, None), Some(1));
        assert_eq!(choose(Strategy::Latency, &c, &[cands[0], cands[2]], None), Some(0));
    }

    #[test]
    fn adaptive_blends_speed_and_load() {
        let ids: Vec<PeerId> = ["fast", "slow"].map(PeerId::from).into();
        let mut fast = cand(&ids[0], 3, 4);
        fast.runtime_us = Some(1_000.0);
        let mut slow = cand(&ids[1], 0, 4);
        slow.runtime_us = Some(1_500.0);
        let c = class(Requirements::default());
        // fast: 1000 × 1.75 = 1750 > slow: 1500 × 1 = 1500.
        assert_eq!(choose(Strategy::Adaptive, &c, &[fast, slow], None), Some(1));
        fast.used = 0;
        assert_eq!(choose(Strategy::Adaptive, &c, &[fast, slow], None), Some(0));
        // A new peer counts as the mean (1250): between the two.
        let id_new = PeerId::from("new");
        let new = cand(&id_new, 0, 4);
        assert_eq!(choose(Strategy::Adaptive, &c, &[fast, slow, new], None), Some(0));
        assert_eq!(choose(Strategy::Adaptive, &c, &[slow, new], None), Some(1));
    }
}
