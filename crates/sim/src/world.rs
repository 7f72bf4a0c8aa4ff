//! The world: simulated peers and gamers around one coordinator — a
//! scheduler and its store side ([`Shell`]) — and the random steps they take.
//! The coordinator's half (flushing, routing, holding replies, restarts) is
//! in `coordinator.rs`; the invariants in `check.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use proto::Json;
use sched::{
    Attempt, Config, ConnId, GamerId, PeerCaps, PeerId, PeerJoin, RunOutcome, Scheduler, Strategy,
    TaskId, Time,
};

use crate::shell::{Reply, Shell};

pub(crate) const TYPES: [&str; 3] = ["echo", "physics", "gpu"];

/// How a peer's failure message names the run's task number.
pub(crate) const RUN_OF: &str = "sim run of #";

/// `Config::lost_run_hold` here: short enough for runs to outlive it.
pub(crate) const LOST_RUN_HOLD: Duration = Duration::from_secs(300);

/// Delivery marks are written alone once this many wait: from every mark
/// costing a commit of its own to marks that only ever ride along.
const ALONE: [usize; 5] = [1, 2, 4, 16, 1_000_000];

/// Task ids reserved at a time, by seed: small blocks make assignments wait
/// for their reservation to commit; a large one, as by default, never does.
const ID_BLOCK: [u64; 4] = [2, 3, 8, 1024];

/// An assignment a peer runs: what it was told, and the sim task number in
/// its payload (a result is computed from it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Run {
    pub task: TaskId,
    pub attempt: Attempt,
    pub n: u64,
    /// The id the peer saw on the wire (`task_assignment.task_id`).
    pub wire: Arc<str>,
    /// The connection it was assigned on.
    pub session: ConnId,
    /// When it was assigned.
    pub at: Time,
}

pub(crate) struct SimPeer {
    pub id: PeerId,
    pub conn: Option<ConnId>,
    pub slots: u32,
    pub types: Option<Vec<&'static str>>,
    pub gpu: bool,
    pub silent: bool,
    /// It answers by cluster id and attempt and claims its runs on
    /// rejoining (our worker); otherwise by the id it saw alone, claiming
    /// nothing (a seed-literal peer).
    pub echoes_ids: bool,
    /// Assignments received and not yet answered.
    pub running: BTreeSet<Run>,
    pub last_heartbeat: Time,
}

/// What a gamer received for one task.
pub(crate) struct Got {
    /// The outcome as the gamer reads it (result, or status, code and reason).
    pub value: String,
    /// Every connection it arrived on.
    pub conns: BTreeSet<ConnId>,
    pub times: u32,
}

pub(crate) struct SimGamer {
    pub id: GamerId,
    pub conn: Option<ConnId>,
    /// Outcomes queued to its connection, not read yet.
    pub inbox: Vec<Reply>,
    /// Outcomes received, by cluster task id.
    pub received: BTreeMap<TaskId, Got>,
}

/// A task the sim submitted and the scheduler took.
#[derive(Debug, Clone)]
pub(crate) struct Sub {
    pub gamer: usize,
    /// The sim's own task number: the payload.
    pub n: u64,
    /// The submitter's task id.
    pub client: Arc<str>,
}

/// One seeded run.
pub struct World {
    pub seed: u64,
    pub(crate) rng: fastrand::Rng,
    pub(crate) sched: Scheduler<Json>,
    pub(crate) shell: Shell,
    pub(crate) now: Time,
    next_conn: u64,
    pub(crate) next_n: u64,
    pub(crate) peers: Vec<SimPeer>,
    pub(crate) gamers: Vec<SimGamer>,
    /// Tasks taken by the current coordinator, acknowledged or not.
    pub(crate) submitted: BTreeMap<TaskId, Sub>,
    /// Tasks whose `TaskSubmitted` op is in a committed batch: the only ones
    /// the coordinator told their gamer it accepted.
    pub(crate) acked: BTreeMap<TaskId, Sub>,
    /// Idempotency keys used so far, by gamer.
    pub(crate) keys: Vec<Vec<Arc<str>>>,
    /// Tasks the current coordinator dropped from memory after they ended.
    pub(crate) evicted: BTreeSet<TaskId>,
    /// Tasks whose deletion is committed.
    pub(crate) deleted: BTreeSet<TaskId>,
    /// (task, attempt) of assignments a restart lost before they committed.
    pub(crate) lost_attempts: BTreeSet<(TaskId, u32)>,
    pub(crate) config: Config,
    /// Marks are written alone once this many wait.
    pub alone: usize,
    /// Task ids reserved at a time (`Limits::id_block`).
    pub(crate) id_block: u64,
    pub restarts: u32,
    /// Batches a restart lost before they committed.
    pub lost_batches: usize,
    /// Restarts that lost nothing, where the store's rows were compared
    /// with what the scheduler held.
    pub round_trips: u32,
    /// What broke an invariant as it happened (checked after each step).
    pub(crate) violations: Vec<String>,
    pub trace: String,
}

impl World {
    /// The world of `seed`.
    pub fn new(seed: u64) -> Result<World, String> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let strategy = Strategy::ALL[rng.usize(..Strategy::ALL.len())];
        let config = Config {
            heartbeat_timeout: Duration::from_secs(15),
            strategy,
            seed,
            max_queued: 50,
            result_ttl: Duration::from_secs(600),
            lost_run_hold: LOST_RUN_HOLD,
            ..Config::default()
        };
        let alone = ALONE[rng.usize(..ALONE.len())];
        let peers = (0..rng.usize(1..5)).map(|i| sim_peer(&mut rng, i)).collect();
        let gamers: Vec<SimGamer> = (0..rng.usize(1..4))
            .map(|i| SimGamer {
                id: GamerId::from(format!("g{i}").as_str()),
                conn: None,
                inbox: Vec::new(),
                received: BTreeMap::new(),
            })
            .collect();
        // From the seed, not the stream, so that the draws stay as they were.
        let id_block = ID_BLOCK[(seed % ID_BLOCK.len() as u64) as usize];
        // As a coordinator starting on an empty store does (`recover`).
        let mut sched = Scheduler::new(config.clone(), Time::ZERO);
        sched.reserve_ids(id_block, 1);
        Ok(World {
            seed,
            rng,
            sched,
            id_block,
            shell: Shell::new(alone)?,
            config,
            alone,
            restarts: 0,
            lost_batches: 0,
            round_trips: 0,
            now: Time::ZERO,
            next_conn: 0,
            next_n: 0,
            peers,
            keys: vec![Vec::new(); gamers.len()],
            gamers,
            submitted: BTreeMap::new(),
            acked: BTreeMap::new(),
            evicted: BTreeSet::new(),
            deleted: BTreeSet::new(),
            lost_attempts: BTreeSet::new(),
            violations: Vec::new(),
            trace: String::new(),
        })
    }

    pub(crate) fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// Runs `steps` random steps, checking invariants after each, then a calm
    /// period, then the end-to-end delivery check.
    pub fn run(&mut self, steps: usize) -> Result<(), String> {
        for _ in 0..steps {
            self.step()?;
            self.check()?;
        }
        self.calm()?;
        self.check_all_delivered()
    }

    pub(crate) fn log(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.trace, "{} {}", self.now, line.as_ref());
    }

    /// One step: gamers read what reached them, the store writer makes
    /// progress (or not), held replies go out — before or after the step's
    /// input, as the core loop may take either first — and one input.
    fn step(&mut self) -> Result<(), String> {
        let action = self.rng.u32(0..100);
        if action == 75 {
            return self.restart();
        }
        self.read_inboxes();
        let release_first = self.rng.bool();
        self.writer_progress()?;
        if release_first {
            self.release();
        }
        match action {
            0..=9 => self.advance(),
            10..=19 => self.join_random(),
            20..=24 => self.crash_random(),
            25..=27 => self.silence_random(),
            28..=29 => self.drain_random(),
            30..=44 => self.gamer_connect_random(),
            45..=49 => self.gamer_leave_random(),
            50..=69 => self.submit_random(),
            70..=74 => self.cancel_random(),
            _ => self.answer_random(),
        }
        self.flush();
        if !release_first {
            self.release();
        }
        Ok(())
    }

    /// Everyone reconnects naming what it awaits, one healthy peer that can
    /// run anything joins, the store keeps up, and time runs on until every
    /// task has ended and every reply is out.
    fn calm(&mut self) -> Result<(), String> {
        self.log("calm");
        self.read_inboxes();
        self.writer_progress_all()?;
        self.release();
        self.flush();
        // Every gamer (re)connects naming what it still awaits, as the SDK
        // does: an outcome lost in a crash after its mark committed comes
        // only that way (a seed-literal gamer, which names nothing, keeps
        // no such promise).
        for g in 0..self.gamers.len() {
            if let Some(conn) = self.gamers[g].conn.take() {
                self.read_inbox(g);
                self.sched.handle_gamer_left(self.now, &self.gamers[g].id.clone(), conn);
            }
            self.gamer_connect(g, true);
        }
        let conn = self.conn();
        let healer = SimPeer {
            id: PeerId::from("healer"),
            conn: Some(conn),
            slots: 8,
            types: None,
            gpu: true,
            silent: false,
            echoes_ids: true,
            running: BTreeSet::new(),
            last_heartbeat: self.now,
        };
        let join = PeerJoin {
            id: healer.id.clone(),
            conn,
            caps: caps(&healer),
            running: Vec::new(),
            owner: None,
            credential: None,
        };
        self.peers.push(healer);
        self.sched.handle_peer_joined(self.now, join);
        let healer = self.peers.len() - 1;
        for p in &mut self.peers[..healer] {
            p.silent = true; // The others fade away.
        }
        for _ in 0..2000 {
            self.flush();
            // The healer answers everything it holds.
            while let Some(run) = self.peers[healer].running.pop_first() {
                let result = RunOutcome::Completed(result_of(&run));
                let id = self.peers[healer].id.clone();
                let (task, attempt) = (run.task, Some(run.attempt));
                let _ = self.sched.handle_result(self.now, &id, conn, task, attempt, result);
                self.flush();
            }
            self.read_inboxes();
            self.writer_progress_all()?;
            self.release();
            self.flush();
            self.check()?;
            if self.settled() {
                return Ok(());
            }
            self.now = self.now + Duration::from_secs(1);
            self.heartbeats();
            self.sched.handle_timeout(self.now);
        }
        Err(format!("seed {}: tasks still live after the calm period", self.seed))
    }

    /// Every task ended, nothing in flight to the store or to a gamer.
    fn settled(&self) -> bool {
        let ended = self
            .acked
            .keys()
            .chain(self.submitted.keys())
            .all(|id| self.sched.task(*id).is_none_or(|t| t.status().is_terminal()));
        ended && !self.shell.busy() && self.gamers.iter().all(|g| g.inbox.is_empty())
    }
}

/// A JSON number.
pub(crate) fn number(n: u64) -> Json {
    // The decimal text of an integer is always valid JSON.
    proto::json(&n.to_string()).unwrap_or_else(|_| proto::null())
}

/// The number in a JSON payload or result (`u64::MAX` when there is none,
/// which no check accepts).
pub(crate) fn number_of(json: &Json) -> u64 {
    json.get().parse().unwrap_or(u64::MAX)
}

/// What a peer computes from its assignment: its task number and attempt.
pub(crate) fn result_of(run: &Run) -> Json {
    number(run.n * 1000 + u64::from(run.attempt.0))
}

fn sim_peer(rng: &mut fastrand::Rng, i: usize) -> SimPeer {
    let types = match rng.u32(0..3) {
        0 => None,
        1 => Some(vec!["echo", "physics"]),
        _ => Some(vec!["echo", "gpu"]),
    };
    SimPeer {
        id: PeerId::from(format!("p{i}").as_str()),
        conn: None,
        slots: rng.u32(1..4),
        gpu: types.as_ref().is_some_and(|t| t.contains(&"gpu")) || rng.bool(),
        types,
        silent: false,
        echoes_ids: rng.bool(),
        running: BTreeSet::new(),
        last_heartbeat: Time::ZERO,
    }
}

pub(crate) fn caps(p: &SimPeer) -> PeerCaps {
    PeerCaps {
        task_types: p.types.as_ref().map(|t| t.iter().map(|s| Arc::from(*s)).collect()),
        slots: p.slots,
        models: Default::default(),
        gpus_vram_mb: if p.gpu { vec![Some(8192)] } else { Vec::new() },
        echoes_ids: p.echoes_ids,
    }
}
