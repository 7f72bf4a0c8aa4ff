//! A simulated fleet for comparing placement strategies: peers with fixed
//! run times, a workload of arrivals, and manual time. Each assignment
//! completes after its peer's run time (plus a wait when the peer is busy
//! with earlier work); the report says where tasks ran and how long they took
//! from submission to result.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use sched::{
    Command, Config, ConnId, GamerId, Owner, PeerCaps, PeerId, PeerJoin, Requirements, RunOutcome,
    Scheduler, Strategy, Submission, TaskId, Time,
};

/// A simulated peer.
#[derive(Debug, Clone)]
pub struct FleetPeer {
    pub name: &'static str,
    /// How long it takes to run one task.
    pub runtime: Duration,
    pub slots: u32,
    /// GPU memory in MiB, when it has a GPU.
    pub vram_mb: Option<u64>,
}

/// One arriving task.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Duration,
    pub task_type: &'static str,
    pub requirements: Requirements,
}

/// Where tasks ran and how long they took.
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// Tasks run, by peer name.
    pub ran_on: BTreeMap<&'static str, usize>,
    /// Tasks run, by (task type, peer name).
    pub ran_by_type: BTreeMap<(&'static str, &'static str), usize>,
    /// Submission to result, per task.
    pub latencies: Vec<Duration>,
    pub completed: usize,
}

impl FleetReport {
    pub fn mean_latency(&self) -> Duration {
        let total: Duration = self.latencies.iter().sum();
        total / self.latencies.len().max(1) as u32
    }

    /// The share of all tasks that ran on `peer`, 0–1.
    pub fn share(&self, peer: &str) -> f64 {
        let n = self.ran_on.iter().find(|(p, _)| **p == peer).map_or(0, |(_, n)| *n);
        n as f64 / self.completed.max(1) as f64
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    Arrive(usize),
    Finish { peer: usize, task: TaskId },
}

/// Runs `arrivals` through a fleet of `peers` under `strategy`.
pub fn run_fleet(strategy: Strategy, peers: &[FleetPeer], arrivals: &[Arrival]) -> FleetReport {
    let config = Config {
        strategy,
        heartbeat_timeout: Duration::from_secs(1_000_000),
        default_queue_timeout: Duration::from_secs(1_000_000),
        ..Config::default()
    };
    let mut sched: Scheduler<u64> = Scheduler::new(config, Time::ZERO);
    let gamer = GamerId::from("g");
    sched.handle_gamer_joined(Time::ZERO, gamer.clone(), ConnId(0));
    for (i, p) in peers.iter().enumerate() {
        let caps = PeerCaps {
            task_types: None,
            slots: p.slots,
            models: Default::default(),
            gpus_vram_mb: p.vram_mb.map(Some).into_iter().collect(),
            echoes_ids: true,
        };
        let join = PeerJoin {
            id: PeerId::from(p.name),
            conn: ConnId(i as u64 + 1),
            caps,
            running: Vec::new(),
            owner: None,
            credential: None,
        };
        sched.handle_peer_joined(Time::ZERO, join);
    }

    let mut queue: BinaryHeap<Reverse<(Time, u64, Happening)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BinaryHeap<_>, at: Time, h: Happening| {
        seq += 1;
        q.push(Reverse((at, seq, h)));
    };
    for (i, a) in arrivals.iter().enumerate() {
        push(&mut queue, Time::ZERO + a.at, Happening::Arrive(i));
    }
    let mut submitted: BTreeMap<TaskId, (Time, &'static str)> = BTreeMap::new();
    let mut report = FleetReport::default();
    let peer_of = |name: &PeerId| peers.iter().position(|p| p.name == name.as_str());

    while let Some(Reverse((now, _, happening))) = queue.pop() {
        match happening {
            Happening::Arrive(i) => {
                let a = &arrivals[i];
                let mut sub = Submission::new(Owner::Gamer(gamer.clone()), a.task_type, i as u64);
                sub.requirements = a.requirements.clone();
                if let Ok(acc) = sched.handle_submit(now, sub) {
                    submitted.insert(acc.id, (now, a.task_type));
                }
            }
            Happening::Finish { peer, task } => {
                let id = PeerId::from(peers[peer].name);
                let conn = ConnId(peer as u64 + 1);
                let _ = sched.handle_result(now, &id, conn, task, None, RunOutcome::Completed(0));
            }
        }
        while let Some(cmd) = sched.poll_command() {
            match cmd {
                Command::Assign { peer, task, .. } => {
                    let Some(p) = peer_of(&peer) else { continue };
                    push(
                        &mut queue,
                        now + peers[p].runtime,
                        Happening::Finish { peer: p, task: task.id },
                    );
                    *report.ran_on.entry(peers[p].name).or_default() += 1;
                    let task_type = submitted.get(&task.id).map_or("?", |(_, t)| t);
                    *report.ran_by_type.entry((task_type, peers[p].name)).or_default() += 1;
                }
                Command::Deliver { task, .. } => {
                    if let Some((at, _)) = submitted.get(&task.id) {
                        report.latencies.push(now.saturating_since(*at));
                        report.completed += 1;
                    }
                }
                _ => {}
            }
        }
        while sched.poll_event().is_some() {}
    }
    report
}

/// `n` tasks of one type arriving every `every`.
pub fn steady(
    n: usize,
    every: Duration,
    task_type: &'static str,
    requirements: Requirements,
) -> Vec<Arrival> {
    (0..n)
        .map(|i| Arrival { at: every * i as u32, task_type, requirements: requirements.clone() })
        .collect()
}

/// Interleaves workloads by arrival time.
pub fn mix(parts: Vec<Vec<Arrival>>) -> Vec<Arrival> {
    let mut all: Vec<Arrival> = parts.into_iter().flatten().collect();
    all.sort_by_key(|a| a.at);
    all
}

/// Requirements for a GPU task needing `vram_mb`.
pub fn gpu(vram_mb: u64) -> Requirements {
    Requirements { model: None, gpu: true, min_vram_mb: Some(vram_mb) }
}
