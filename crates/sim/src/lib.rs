//! A seeded world for the scheduler: thousands of random runs of peers
//! joining, crashing, going silent, reconnecting (claiming their tasks or
//! not) and draining; gamers submitting (with duplicate ids, priorities,
//! requirements, timeouts and idempotency keys), cancelling, leaving and
//! returning; results arriving late or twice — all with manual time.
//!
//! After every step [`World::check`] asserts the invariants:
//!
//! 1. no task is held by two live attempts, and every hold matches the
//!    task's state (same peer, same attempt);
//! 2. every accepted task is queued, held by a live peer (or awaiting one
//!    after a restart) or finished — none is lost;
//! 3. no gamer receives two outcomes for one task, and every outcome is for
//!    the task's submitter;
//! 4. no peer holds more tasks than its slots;
//!
//! and at the end, after a calm period with one healthy peer, that every
//! accepted task was delivered exactly once. A failure names its seed, and
//! `LEGACYGPU_SIM_SEED=N` replays it (tests keep failing seeds as regressions).
//!
//! The style follows quinn-proto's test world and TigerBeetle's VOPR.

pub mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use sched::{
    Attempt, AttemptRecord, Command, Config, ConnId, Event, Failure, GamerId, Outcome, Owner,
    PeerCaps, PeerId, PeerJoin, Recovered, RecoveredState, Requirements, RunOutcome, Scheduler,
    Strategy, Submission, TaskId, TaskSpec, Time,
};

/// The payload: the sim's own task number.
type P = u64;

const TYPES: [&str; 3] = ["echo", "physics", "gpu"];

struct SimPeer {
    id: PeerId,
    conn: Option<ConnId>,
    slots: u32,
    types: Option<Vec<&'static str>>,
    gpu: bool,
    silent: bool,
    /// Assignments received and not yet answered: (task, attempt).
    running: BTreeSet<(TaskId, Attempt)>,
    last_heartbeat: Time,
}

struct SimGamer {
    id: GamerId,
    conn: Option<ConnId>,
    /// Outcomes received, by cluster task id.
    received: BTreeMap<TaskId, u32>,
}

/// A task the sim submitted and the scheduler accepted.
struct Accepted {
    gamer: usize,
    task: TaskId,
}

/// What the store would hold: the scheduler's events applied in order and
/// committed after every step. A restart recovers from it.
#[derive(Default)]
struct Durable {
    tasks: BTreeMap<TaskId, DurableTask>,
    next_task: u64,
}

struct DurableTask {
    spec: TaskSpec<P>,
    state: RecoveredState<P>,
    attempts: u32,
    failures: u32,
    history: Vec<AttemptRecord>,
}

impl Durable {
    fn apply(&mut self, event: &Event<P>) {
        match event {
            Event::TaskSubmitted { task } => {
                self.next_task = self.next_task.max(task.id.0);
                let t = DurableTask {
                    spec: TaskSpec::clone(task),
                    state: RecoveredState::Waiting,
                    attempts: 0,
                    failures: 0,
                    history: Vec::new(),
                };
                self.tasks.insert(task.id, t);
            }
            Event::TaskAssigned { task, peer, attempt, at, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.state = RecoveredState::Assigned {
                        peer: peer.clone(),
                        attempt: *attempt,
                        started: None,
                    };
                    t.attempts = attempt.0;
                    let rec = AttemptRecord {
                        attempt: *attempt,
                        peer: peer.clone(),
                        assigned_at: *at,
                        ended_at: None,
                        end: None,
                    };
                    t.history.push(rec);
                }
            }
            Event::TaskReclaimed { task, peer, attempt, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.state = RecoveredState::Assigned {
                        peer: peer.clone(),
                        attempt: *attempt,
                        started: None,
                    };
                    t.failures = t.failures.saturating_sub(1);
                }
            }
            Event::TaskRequeued { task, failures, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.state = RecoveredState::Waiting;
                    t.failures = *failures;
                }
            }
            Event::TaskFinished { task, outcome, at, .. } => {
                if let Some(t) = self.tasks.get_mut(&task.id) {
                    t.state = RecoveredState::Finished {
                        outcome: outcome.clone(),
                        at: *at,
                        delivered: false,
                    };
                }
            }
            Event::Delivered { task } | Event::Undelivered { task } => {
                let now_delivered = matches!(event, Event::Delivered { .. });
                if let Some(RecoveredState::Finished { delivered, .. }) =
                    self.tasks.get_mut(task).map(|t| &mut t.state)
                {
                    *delivered = now_delivered;
                }
            }
            Event::Evicted { tasks } => {
                for t in tasks {
                    self.tasks.remove(t);
                }
            }
            _ => {}
        }
    }

    fn recovered(&self) -> Vec<Recovered<P>> {
        self.tasks
            .values()
            .map(|t| Recovered {
                spec: t.spec.clone(),
                attempts: t.attempts,
                failures: t.failures,
                last_error: None,
                history: t.history.clone(),
                state: t.state.clone(),
                verification: None,
            })
            .collect()
    }
}

/// One seeded run.
pub struct World {
    pub seed: u64,
    rng: fastrand::Rng,
    sched: Scheduler<P>,
    now: Time,
    next_conn: u64,
    next_task: u64,
    peers: Vec<SimPeer>,
    gamers: Vec<SimGamer>,
    accepted: Vec<Accepted>,
    /// Tasks the scheduler dropped from memory after delivering them.
    evicted: BTreeSet<TaskId>,
    durable: Durable,
    config: Config,
    pub restarts: u32,
    pub trace: String,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let strategy = Strategy::ALL[rng.usize(..Strategy::ALL.len())];
        let config = Config {
            heartbeat_timeout: Duration::from_secs(15),
            strategy,
            seed,
            max_queued: 50,
            result_ttl: Duration::from_secs(600),
            ..Config::default()
        };
        let peers = (0..rng.usize(1..5)).map(|i| sim_peer(&mut rng, i)).collect();
        let gamers = (0..rng.usize(1..4))
            .map(|i| SimGamer {
                id: GamerId::from(format!("g{i}").as_str()),
                conn: None,
                received: BTreeMap::new(),
            })
            .collect();
        World {
            seed,
            rng,
            sched: Scheduler::new(config.clone(), Time::ZERO),
            durable: Durable::default(),
            config,
            restarts: 0,
            now: Time::ZERO,
            next_conn: 0,
            next_task: 0,
            peers,
            gamers,
            accepted: Vec::new(),
            evicted: BTreeSet::new(),
            trace: String::new(),
        }
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// Runs `steps` random steps, checking invariants after each, then a calm
    /// period, then the end-to-end delivery check.
    pub fn run(&mut self, steps: usize) -> Result<(), String> {
        for _ in 0..steps {
            self.step();
            self.drain();
            self.check()?;
        }
        self.calm()?;
        self.check_all_delivered()
    }

    fn log(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.trace, "{} {}", self.now, line.as_ref());
    }

    fn step(&mut self) {
        match self.rng.u32(0..100) {
            0..=9 => self.advance(),
            10..=19 => self.join_random(),
            20..=24 => self.crash_random(),
            25..=27 => self.silence_random(),
            28..=29 => self.drain_random(),
            30..=44 => self.gamer_connect_random(),
            45..=49 => self.gamer_leave_random(),
            50..=69 => self.submit_random(),
            70..=74 => self.cancel_random(),
            75 => self.restart(),
            _ => self.answer_random(),
        }
    }

    fn advance(&mut self) {
        let by = Duration::from_millis(self.rng.u64(1..8000));
        self.now = self.now + by;
        self.heartbeats();
        self.sched.handle_timeout(self.now);
        self.log(format!("advance {by:?}"));
    }

    /// Live, non-silent peers heartbeat every 5 s.
    fn heartbeats(&mut self) {
        for p in &mut self.peers {
            if let (Some(conn), false) = (p.conn, p.silent)
                && self.now.saturating_since(p.last_heartbeat) >= Duration::from_secs(5)
            {
                p.last_heartbeat = self.now;
                let _ = self.sched.handle_heartbeat(self.now, &p.id, conn);
            }
        }
    }

    fn join_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        let conn = self.conn();
        // A reconnecting peer claims what it still runs (our worker), forgets
        // it (a restarted process), or keeps running it without saying so and
        // answers later (a seed-literal peer): fencing must hold for all.
        let mode = self.rng.u32(0..3);
        let claim_all = mode == 0;
        let p = &mut self.peers[i];
        let running: Vec<_> =
            if claim_all { p.running.iter().copied().collect() } else { Vec::new() };
        if mode == 1 {
            p.running.clear();
        }
        p.conn = Some(conn);
        p.silent = false;
        p.last_heartbeat = self.now;
        let join = PeerJoin {
            id: p.id.clone(),
            conn,
            caps: caps(p),
            running,
            owner: None,
            credential: None,
        };
        let joined = self.sched.handle_peer_joined(self.now, join);
        for stale in &joined.stale {
            self.peers[i].running.remove(stale);
        }
        self.log(format!("join p{i} {conn} claim={claim_all} stale={}", joined.stale.len()));
    }

    fn crash_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        let Some(conn) = self.peers[i].conn.take() else { return };
        let id = self.peers[i].id.clone();
        // A crashed process forgets what it ran.
        if self.rng.bool() {
            self.peers[i].running.clear();
        }
        self.sched.handle_peer_left(self.now, &id, conn);
        self.log(format!("crash p{i}"));
    }

    /// The coordinator crashes and restarts: a new scheduler recovers from
    /// what was durable; every connection is gone. Peers keep running their
    /// tasks and gamers keep what they received.
    fn restart(&mut self) {
        self.restarts += 1;
        let mut sched = Scheduler::new(self.config.clone(), self.now);
        sched.handle_recovered(self.now, self.durable.recovered());
        sched.set_next_task_id(self.durable.next_task);
        self.sched = sched;
        for p in &mut self.peers {
            p.conn = None;
        }
        for g in &mut self.gamers {
            g.conn = None;
        }
        self.log("coordinator restart");
    }

    fn silence_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        self.peers[i].silent = true;
        self.log(format!("silence p{i}"));
    }

    fn drain_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        if let Some(conn) = self.peers[i].conn {
            let _ = self.sched.handle_drain(self.now, &self.peers[i].id.clone(), conn);
            self.log(format!("drain p{i}"));
        }
    }

    fn gamer_connect_random(&mut self) {
        let g = self.rng.usize(..self.gamers.len());
        if self.gamers[g].conn.is_some() {
            return;
        }
        let conn = self.conn();
        self.gamers[g].conn = Some(conn);
        self.sched.handle_gamer_joined(self.now, self.gamers[g].id.clone(), conn);
        self.log(format!("gamer g{g} joins {conn}"));
    }

    fn gamer_leave_random(&mut self) {
        let g = self.rng.usize(..self.gamers.len());
        if let Some(conn) = self.gamers[g].conn.take() {
            self.sched.handle_gamer_left(self.now, &self.gamers[g].id.clone(), conn);
            self.log(format!("gamer g{g} leaves"));
        }
    }

    fn submit_random(&mut self) {
        let g = self.rng.usize(..self.gamers.len());
        if self.gamers[g].conn.is_none() {
            return;
        }
        self.next_task += 1;
        let n = self.next_task;
        let task_type = TYPES[self.rng.usize(..TYPES.len())];
        let mut sub = Submission::new(Owner::Gamer(self.gamers[g].id.clone()), task_type, n);
        sub.priority = self.rng.i32(0..4);
        // Some ids repeat on purpose (duplicates must be refused while live).
        sub.client_task_id = Some(Arc::from(format!("c{}", self.rng.u64(0..n.max(2))).as_str()));
        sub.requirements = Requirements { gpu: task_type == "gpu", ..Requirements::default() };
        if self.rng.u32(0..5) == 0 {
            sub.run_timeout = Some(Duration::from_secs(self.rng.u64(1..30)));
        }
        if self.rng.u32(0..5) == 0 {
            sub.queue_timeout = Some(Duration::from_secs(self.rng.u64(1..60)));
        }
        sub.max_attempts = Some(self.rng.u32(1..4));
        match self.sched.handle_submit(self.now, sub) {
            Ok(acc) => {
                self.accepted.push(Accepted { gamer: g, task: acc.id });
                self.log(format!("submit g{g} {} {task_type} -> {:?}", acc.id, acc.status));
            }
            Err(e) => self.log(format!("submit g{g} refused: {e:?}")),
        }
    }

    fn cancel_random(&mut self) {
        if self.accepted.is_empty() {
            return;
        }
        let a = &self.accepted[self.rng.usize(..self.accepted.len())];
        let (owner, task) = (Owner::Gamer(self.gamers[a.gamer].id.clone()), a.task);
        let r = self.sched.handle_cancel(self.now, &owner, task);
        self.log(format!("cancel {task}: {r:?}"));
    }

    /// A connected peer answers one of its assignments — or, when it lost
    /// its connection, answers late on a new one (fencing must hold).
    fn answer_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        let Some(conn) = self.peers[i].conn else { return };
        let n = self.peers[i].running.len();
        if n == 0 {
            return;
        }
        let pick = self.rng.usize(..n);
        let Some(&(task, attempt)) = self.peers[i].running.iter().nth(pick) else { return };
        // Now and then a peer answers the same assignment twice.
        if self.rng.u32(0..10) != 0 {
            self.peers[i].running.remove(&(task, attempt));
        }
        let outcome = match self.rng.u32(0..10) {
            0 => RunOutcome::Failed { failure: Failure::new("internal", "sim"), retryable: true },
            1 => RunOutcome::Failed {
                failure: Failure::new("invalid_input", "sim"),
                retryable: false,
            },
            2 => RunOutcome::Returned,
            _ => RunOutcome::Completed(task.0 * 1000 + u64::from(attempt.0)),
        };
        let echo_attempt = self.rng.bool().then_some(attempt);
        let id = self.peers[i].id.clone();
        let r = self.sched.handle_result(self.now, &id, conn, task, echo_attempt, outcome);
        self.log(format!("p{i} answers {task}{attempt}: {r:?}"));
    }

    /// Carries out the scheduler's commands on the simulated world.
    fn drain(&mut self) {
        while let Some(cmd) = self.sched.poll_command() {
            match cmd {
                Command::Assign { conn, peer, task, attempt } => {
                    if let Some(p) =
                        self.peers.iter_mut().find(|p| p.id == peer && p.conn == Some(conn))
                    {
                        p.running.insert((task.id, attempt));
                    }
                }
                Command::Cancel { conn, task, attempt, .. } => {
                    if let Some(p) = self.peers.iter_mut().find(|p| p.conn == Some(conn)) {
                        // The peer stops it and reports it cancelled.
                        if p.running.remove(&(task, attempt)) {
                            let failure = Failure::new("cancelled", "sim");
                            let outcome = RunOutcome::Failed { failure, retryable: false };
                            let _ = self.sched.handle_result(
                                self.now,
                                &p.id.clone(),
                                conn,
                                task,
                                Some(attempt),
                                outcome,
                            );
                        }
                    }
                }
                Command::Deliver { conn, gamer, task, outcome, .. } => {
                    let g = self.gamers.iter_mut().find(|g| g.id == gamer);
                    if let Some(g) = g.filter(|g| g.conn == Some(conn)) {
                        *g.received.entry(task.id).or_default() += 1;
                        // The result is the task's own, from the delivered
                        // attempt — or, when a peer that does not echo
                        // attempts ran the task twice, from its earlier run
                        // (such peers are fenced by peer, not by attempt).
                        if let Outcome::Completed { result, attempt, .. } = outcome {
                            let (of_task, of_attempt) = (result / 1000, (result % 1000) as u32);
                            assert_eq!(
                                of_task, task.id.0,
                                "seed {}: result of another task",
                                self.seed
                            );
                            assert!(
                                of_attempt <= attempt.0,
                                "seed {}: result from a newer attempt",
                                self.seed
                            );
                        }
                    }
                }
                Command::ClosePeer { conn, .. } => {
                    if let Some(p) = self.peers.iter_mut().find(|p| p.conn == Some(conn)) {
                        p.conn = None;
                    }
                }
                Command::CloseGamer { conn, .. } => {
                    if let Some(g) = self.gamers.iter_mut().find(|g| g.conn == Some(conn)) {
                        g.conn = None;
                    }
                }
            }
        }
        while let Some(event) = self.sched.poll_event() {
            self.durable.apply(&event);
            if let Event::Evicted { tasks } = event {
                self.evicted.extend(tasks);
            }
        }
    }

    /// The invariants that hold after every step.
    pub fn check(&self) -> Result<(), String> {
        let fail = |what: String| Err(format!("seed {}: {what}", self.seed));
        let mut held: BTreeMap<TaskId, &PeerId> = BTreeMap::new();
        for peer in self.sched.peers() {
            let holds: Vec<_> = peer.tasks().collect();
            if holds.len() as u32 > peer.caps().slots {
                return fail(format!(
                    "peer {} holds {} tasks with {} slots",
                    peer.id(),
                    holds.len(),
                    peer.caps().slots
                ));
            }
            for (task, attempt) in holds {
                if let Some(other) = held.insert(task, peer.id()) {
                    return fail(format!("{task} held by {other} and {}", peer.id()));
                }
                let t = self
                    .sched
                    .task(task)
                    .ok_or_else(|| format!("seed {}: held {task} unknown", self.seed))?;
                if t.peer() != Some(peer.id()) || t.attempt() != attempt {
                    return fail(format!(
                        "{task}{attempt} held by {} but the task says {:?} {}",
                        peer.id(),
                        t.peer(),
                        t.attempt()
                    ));
                }
            }
        }
        for a in &self.accepted {
            match self.sched.task(a.task) {
                Some(t) => {
                    if let Some(p) = t.peer() {
                        let live = self.sched.peer(p.as_str()).is_some();
                        if live && held.get(&a.task) != Some(&p) {
                            return fail(format!(
                                "{} assigned to live {p} which does not hold it",
                                a.task
                            ));
                        }
                    }
                }
                None if self.evicted.contains(&a.task) => {}
                None => return fail(format!("accepted task {} was lost", a.task)),
            }
        }
        for g in &self.gamers {
            if let Some((task, n)) = g.received.iter().find(|(_, n)| **n > 1) {
                return fail(format!("{} received {n} outcomes for {task}", g.id));
            }
            for task in g.received.keys() {
                let owner = self.accepted.iter().find(|a| a.task == *task).map(|a| a.gamer);
                if owner.map(|o| &self.gamers[o].id) != Some(&g.id) {
                    return fail(format!("{} received an outcome for {task}, not its own", g.id));
                }
            }
        }
        Ok(())
    }

    /// Everyone reconnects, one healthy peer that can run anything joins, and
    /// time runs on until every task has ended.
    fn calm(&mut self) -> Result<(), String> {
        for g in 0..self.gamers.len() {
            if self.gamers[g].conn.is_none() {
                let conn = self.conn();
                self.gamers[g].conn = Some(conn);
                self.sched.handle_gamer_joined(self.now, self.gamers[g].id.clone(), conn);
            }
        }
        let conn = self.conn();
        let healer = SimPeer {
            id: PeerId::from("healer"),
            conn: Some(conn),
            slots: 8,
            types: None,
            gpu: true,
            silent: false,
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
            self.drain();
            // The healer answers everything it holds.
            while let Some(&(task, attempt)) = self.peers[healer].running.iter().next() {
                self.peers[healer].running.remove(&(task, attempt));
                let result = RunOutcome::Completed(task.0 * 1000 + u64::from(attempt.0));
                let id = self.peers[healer].id.clone();
                let _ = self.sched.handle_result(self.now, &id, conn, task, Some(attempt), result);
                self.drain();
            }
            self.check()?;
            if self
                .accepted
                .iter()
                .all(|a| self.sched.task(a.task).is_none_or(|t| t.status().is_terminal()))
            {
                return Ok(());
            }
            self.now = self.now + Duration::from_secs(1);
            self.heartbeats();
            self.sched.handle_timeout(self.now);
        }
        Err(format!("seed {}: tasks still live after the calm period", self.seed))
    }

    fn check_all_delivered(&self) -> Result<(), String> {
        for a in &self.accepted {
            let got = self.gamers[a.gamer].received.get(&a.task).copied().unwrap_or(0);
            let dropped = self.evicted.contains(&a.task);
            if got != 1 && !(got == 0 && dropped) {
                return Err(format!("seed {}: {} delivered {got} times", self.seed, a.task));
            }
        }
        Ok(())
    }
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
        running: BTreeSet::new(),
        last_heartbeat: Time::ZERO,
    }
}

fn caps(p: &SimPeer) -> PeerCaps {
    PeerCaps {
        task_types: p.types.as_ref().map(|t| t.iter().map(|s| Arc::from(*s)).collect()),
        slots: p.slots,
        models: BTreeSet::new(),
        gpus_vram_mb: if p.gpu { vec![Some(8192)] } else { Vec::new() },
    }
}

/// Runs one seed; on failure the error names it and carries the trace tail.
pub fn run_seed(seed: u64, steps: usize) -> Result<(), String> {
    let mut world = World::new(seed);
    world.run(steps).map_err(|e| {
        let tail: Vec<&str> = world.trace.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{e}\n(replay with LEGACYGPU_SIM_SEED={seed})\nlast steps:\n{}", tail.join("\n"))
    })
}

#[cfg(test)]
mod coverage {
    use super::*;

    /// Not an invariant: shows the world exercises what it claims to.
    #[test]
    fn the_world_exercises_failures() {
        let mut totals = sched::Counters::default();
        let (mut accepted, mut delivered, mut restarts) = (0, 0, 0);
        for seed in 0..200 {
            let mut w = World::new(seed);
            w.run(300).unwrap();
            restarts += w.restarts;
            let c = w.sched.counters();
            totals.completed += c.completed;
            totals.failed += c.failed;
            totals.cancelled += c.cancelled;
            totals.timed_out += c.timed_out;
            totals.requeued += c.requeued;
            totals.stale_results += c.stale_results;
            totals.peers_dead += c.peers_dead;
            accepted += w.accepted.len();
            delivered += w.gamers.iter().map(|g| g.received.len()).sum::<usize>();
        }
        eprintln!("{totals:?} accepted={accepted} delivered={delivered} restarts={restarts}");
        assert!(restarts > 100);
        assert!(totals.requeued > 100 && totals.stale_results > 10 && totals.peers_dead > 10);
        assert!(
            totals.completed > 1000
                && totals.failed > 50
                && totals.cancelled > 50
                && totals.timed_out > 10
        );
    }
}
