//! The coordinator's half of the world, as `crates/coordinator` runs it:
//! flushing the scheduler into the store side, routing its commands to the
//! simulated connections, letting the writer commit, sending held replies,
//! and restarting from what the store holds.

use sched::{Command, Event, Failure, Outcome, Recovered, RunOutcome, Scheduler, TaskId};
use store::Op;

use crate::check;
use crate::shell::{Held, Reply};
use crate::world::{Got, RUN_OF, Run, World, number_of};

/// The most batches the writer lets pile up before it commits them all (the
/// coordinator refuses work beyond its `max_store_lag`).
const MAX_LAG: usize = 4;

impl World {
    /// Drains the scheduler as `Core::flush` does: events to the store side,
    /// one batch handed to the writer, then commands to the connections —
    /// repeated while carrying out a command fed the scheduler more input
    /// (a peer confirming a cancel, an outcome that could not be queued).
    pub(crate) fn flush(&mut self) {
        loop {
            let mut any = false;
            while let Some(event) = self.sched.poll_event() {
                any = true;
                self.shell.observe(&event);
                if let Event::Evicted { tasks } = &event {
                    self.evicted.extend(tasks);
                }
            }
            self.shell.commit();
            while let Some(cmd) = self.sched.poll_command() {
                any = true;
                self.route(cmd);
            }
            if !any {
                return;
            }
        }
    }

    fn route(&mut self, cmd: Command<proto::Json>) {
        match cmd {
            Command::Assign { conn, .. } | Command::Cancel { conn, .. } => {
                // As `Core::route`: a peer that answers by the seed's id
                // alone is told only what is durable.
                let echoes = self.peers.iter().any(|p| p.conn == Some(conn) && p.echoes_ids);
                if echoes {
                    self.reach_peer(cmd);
                } else if let Some(held) = self.shell.hold(Held::ToPeer(cmd)) {
                    self.send(held);
                }
            }
            Command::Deliver { conn, gamer, task, outcome, .. } => {
                self.log(format!("deliver {} to {conn}", task.id));
                let reply = Held::Reply(Reply { conn, gamer, task, outcome });
                if let Some(reply) = self.shell.hold(reply) {
                    self.send(reply);
                }
            }
            Command::ClosePeer { conn, .. } => {
                if let Some(p) = self.peers.iter_mut().find(|p| p.conn == Some(conn)) {
                    p.conn = None;
                }
            }
            Command::CloseGamer { conn, .. } => {
                if let Some(g) = self.gamers.iter().position(|g| g.conn == Some(conn)) {
                    self.read_inbox(g);
                    self.gamers[g].conn = None;
                }
            }
        }
    }

    /// An assignment or a cancel reaches its peer, if it is still connected.
    fn reach_peer(&mut self, cmd: Command<proto::Json>) {
        match cmd {
            Command::Assign { conn, peer, task, attempt } => {
                if let Some(p) =
                    self.peers.iter_mut().find(|p| p.id == peer && p.conn == Some(conn))
                {
                    let n = number_of(&task.payload);
                    let wire = std::sync::Arc::clone(&task.peer_task_id);
                    let at = self.now;
                    p.running.insert(Run { task: task.id, attempt, n, wire, session: conn, at });
                }
            }
            Command::Cancel { conn, task, attempt, .. } => {
                let Some(p) = self.peers.iter_mut().find(|p| p.conn == Some(conn)) else { return };
                // The peer stops it and reports it cancelled.
                let before = p.running.len();
                p.running.retain(|r| (r.task, r.attempt) != (task, attempt));
                if p.running.len() < before {
                    let failure = Failure::new("cancelled", "sim");
                    let outcome = RunOutcome::Failed { failure, retryable: false };
                    let id = p.id.clone();
                    let _ =
                        self.sched.handle_result(self.now, &id, conn, task, Some(attempt), outcome);
                }
            }
            _ => {}
        }
    }

    /// A message the store made durable goes out.
    fn send(&mut self, held: Held) {
        match held {
            Held::Reply(reply) => self.send_reply(reply),
            Held::ToPeer(cmd) => self.reach_peer(cmd),
        }
    }

    /// Queues an outcome to its connection; one whose connection is gone
    /// goes back to waiting for its gamer (`Core::send`).
    fn send_reply(&mut self, reply: Reply) {
        if let Some(g) = self.gamers.iter_mut().find(|g| g.conn == Some(reply.conn)) {
            return g.inbox.push(reply);
        }
        let id = reply.task.id;
        self.log(format!("{id} to {} undelivered", reply.conn));
        // The scheduler hands it to the gamer's new connection, if any, and
        // if it did not go there already.
        self.sched.handle_undelivered(self.now, id, reply.conn);
    }

    /// Sends the held replies the store has made durable, and flushes what
    /// that fed the scheduler.
    pub(crate) fn release(&mut self) {
        for reply in self.shell.release() {
            self.send(reply);
        }
        self.flush();
    }

    /// The store writer commits some of the batches in flight, maybe none,
    /// all once too many wait.
    pub(crate) fn writer_progress(&mut self) -> Result<(), String> {
        let n = self.shell.in_flight();
        let commit = match self.rng.u32(0..4) {
            _ if n >= MAX_LAG => n,
            0 => 0,
            1 => self.rng.usize(..=n),
            _ => n,
        };
        let ops = self.shell.write(commit)?;
        self.committed(&ops);
        Ok(())
    }

    pub(crate) fn writer_progress_all(&mut self) -> Result<(), String> {
        let ops = self.shell.write(usize::MAX)?;
        self.committed(&ops);
        Ok(())
    }

    /// What a commit makes true: submissions are acknowledged, deletions
    /// final, reserved ids free to leave (`Core::release_durable`).
    fn committed(&mut self, ops: &[Op]) {
        if let Some(next) = self.shell.ids_durable() {
            self.sched.handle_ids_durable(self.now, next);
        }
        for op in ops {
            match op {
                Op::Insert(t) => {
                    let id = TaskId(t.id);
                    if let Some(sub) = self.submitted.get(&id) {
                        self.acked.insert(id, sub.clone());
                    }
                }
                Op::Deleted { ids } => self.deleted.extend(ids.iter().map(|i| TaskId(*i))),
                _ => {}
            }
        }
    }

    pub(crate) fn read_inboxes(&mut self) {
        for g in 0..self.gamers.len() {
            self.read_inbox(g);
        }
    }

    /// Gamer `g` reads what reached it, checking each outcome.
    pub(crate) fn read_inbox(&mut self, g: usize) {
        for reply in std::mem::take(&mut self.gamers[g].inbox) {
            if let Err(e) = self.receive(g, &reply) {
                self.violations.push(e);
            }
        }
    }

    /// One outcome reaches gamer `g`: it must be for a task acknowledged to
    /// this gamer, computed from that task's payload, and the same value as
    /// any earlier copy — which may only have come on another connection.
    fn receive(&mut self, g: usize, r: &Reply) -> Result<(), String> {
        let id = r.task.id;
        self.log(format!("g{g} reads {id} on {}", r.conn));
        let gamer = self.gamers[g].id.clone();
        let sub = self
            .acked
            .get(&id)
            .ok_or_else(|| format!("{gamer} got an outcome for {id}, never acknowledged"))?;
        if sub.gamer != g || r.gamer != gamer {
            return Err(format!("{gamer} got the outcome of {id}, not its own"));
        }
        let n = number_of(&r.task.payload);
        if n != sub.n {
            return Err(format!("{gamer} got {id} carrying task #{n}'s payload, not #{}", sub.n));
        }
        if let Outcome::Completed { result, attempt, .. } = &r.outcome {
            let v = number_of(result);
            let (of_n, of_attempt) = (v / 1000, (v % 1000) as u32);
            // From the delivered attempt — or, when a peer that does not
            // echo attempts ran the task twice, from its earlier run (such
            // peers are fenced by peer, not by attempt).
            if of_n != sub.n {
                return Err(format!("{gamer} got for {id} (#{n}) the result of task #{of_n}"));
            }
            // After a crash lost an assignment, its attempt number is issued
            // again: the lost run's result is still one of this task.
            let lost_run = self.lost_attempts.contains(&(id, of_attempt));
            if of_n == sub.n && of_attempt > attempt.0 && !lost_run {
                return Err(format!(
                    "{gamer} got for {id}{attempt} a result of attempt {of_attempt}"
                ));
            }
        }
        if let Some(of_n) = failed_run(&r.outcome)
            && of_n != sub.n
        {
            return Err(format!("{gamer} got for {id} (#{n}) the failure of task #{of_n}"));
        }
        let value = check::outcome_value(&r.outcome);
        let got = self.gamers[g].received.entry(id).or_insert_with(|| Got {
            value: value.clone(),
            conns: Default::default(),
            times: 0,
        });
        got.times += 1;
        if got.value != value {
            return Err(format!("{gamer} got two outcomes for {id}: {} then {value}", got.value));
        }
        if !got.conns.insert(r.conn) {
            return Err(format!("{gamer} got the outcome of {id} twice on {}", r.conn));
        }
        Ok(())
    }

    /// The coordinator crashes and restarts. The writer had committed some
    /// prefix of the batches in flight; the rest is lost, with every reply
    /// held and every connection. A gamer may or may not have read what was
    /// queued to it. Peers keep running their tasks and gamers keep what they
    /// received. The new coordinator recovers as `server.rs::recover` does.
    pub(crate) fn restart(&mut self) -> Result<(), String> {
        self.restarts += 1;
        for g in 0..self.gamers.len() {
            if self.rng.bool() {
                self.read_inbox(g);
            } else {
                self.gamers[g].inbox.clear();
            }
        }
        let keep = self.rng.usize(..=self.shell.in_flight());
        let crashed = self.shell.crash(keep)?;
        self.committed(&crashed.committed);
        self.lost_batches += crashed.batches;
        let lost = crashed.batches;
        for op in &crashed.lost {
            if let Op::Assigned { id, attempt, .. } = op {
                self.lost_attempts.insert((TaskId(*id), *attempt));
            }
        }
        let loaded = self.shell.load()?;
        let next = loaded.next_task_id;
        let back: Vec<Recovered<proto::Json>> = loaded
            .tasks
            .into_iter()
            .map(persist::recovered)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("seed {}: {e}", self.seed))?;
        if lost == 0 {
            // Nothing was lost: the store must give back what the scheduler had.
            check::RoundTrip
                .check(&self.sched, &back)
                .map_err(|e| format!("seed {}: {e}", self.seed))?;
            self.round_trips += 1;
        }
        let mut sched = Scheduler::new(self.config.clone(), self.now);
        sched.handle_recovered(self.now, back);
        sched.set_next_task_id(next.saturating_sub(1));
        sched.reserve_ids(self.id_block, next);
        self.sched = sched;
        self.submitted.clear();
        self.evicted.clear();
        for p in &mut self.peers {
            p.conn = None;
        }
        for g in &mut self.gamers {
            g.conn = None;
        }
        self.log(format!("coordinator restart: {keep} batches committed, {lost} lost"));
        self.flush();
        Ok(())
    }
}

/// The task number a failure names, when a peer's run failed it.
fn failed_run(outcome: &Outcome<proto::Json>) -> Option<u64> {
    let failure = outcome.failure()?;
    let (_, tail) = failure.message.split_once(RUN_OF)?;
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
