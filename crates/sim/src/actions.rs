//! The random steps of the world's peers and gamers: time passing, peers
//! joining, crashing, going silent, draining and answering, gamers coming
//! and going, submitting and cancelling.

use std::sync::Arc;
use std::time::Duration;

use sched::{Failure, Owner, PeerJoin, Requirements, RunOutcome, Submission, TaskId};

use crate::world::{LOST_RUN_HOLD, RUN_OF, Sub, TYPES, World, caps, number, result_of};

impl World {
    pub(crate) fn advance(&mut self) {
        let by = Duration::from_millis(self.rng.u64(1..8000));
        self.now = self.now + by;
        self.heartbeats();
        self.sched.handle_timeout(self.now);
        self.log(format!("advance {by:?}"));
    }

    /// Live, non-silent peers heartbeat every 5 s.
    pub(crate) fn heartbeats(&mut self) {
        for p in &mut self.peers {
            if let (Some(conn), false) = (p.conn, p.silent)
                && self.now.saturating_since(p.last_heartbeat) >= Duration::from_secs(5)
            {
                p.last_heartbeat = self.now;
                let _ = self.sched.handle_heartbeat(self.now, &p.id, conn);
            }
        }
    }

    pub(crate) fn join_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        let conn = self.conn();
        // A reconnecting peer claims what it still runs (our worker), forgets
        // it (a restarted process), or keeps running it without saying so and
        // answers later (a seed-literal peer): fencing must hold for all.
        let mode = self.rng.u32(0..3);
        let p = &mut self.peers[i];
        let claim_all = mode == 0 && p.echoes_ids;
        let running: Vec<_> = if claim_all {
            p.running.iter().map(|r| (r.task, r.attempt)).collect()
        } else {
            Vec::new()
        };
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
        // Told to stop what it claimed and no longer holds.
        self.peers[i].running.retain(|r| !joined.stale.contains(&(r.task, r.attempt)));
        self.log(format!("join p{i} {conn} claim={claim_all} stale={}", joined.stale.len()));
    }

    pub(crate) fn crash_random(&mut self) {
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

    pub(crate) fn silence_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        self.peers[i].silent = true;
        self.log(format!("silence p{i}"));
    }

    pub(crate) fn drain_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        if let Some(conn) = self.peers[i].conn {
            let _ = self.sched.handle_drain(self.now, &self.peers[i].id.clone(), conn);
            self.log(format!("drain p{i}"));
        }
    }

    pub(crate) fn gamer_connect_random(&mut self) {
        let g = self.rng.usize(..self.gamers.len());
        if self.gamers[g].conn.is_none() {
            // Like the SDK, it may name what it still awaits (or, like a
            // seed-literal client, not).
            let awaiting = self.rng.bool();
            self.gamer_connect(g, awaiting);
        }
    }

    /// Gamer `g` registers on a new connection; `awaiting`: naming the
    /// acknowledged tasks it has no outcome for (`register_gamer.awaiting`).
    pub(crate) fn gamer_connect(&mut self, g: usize, awaiting: bool) {
        let conn = self.conn();
        let gamer = self.gamers[g].id.clone();
        self.gamers[g].conn = Some(conn);
        self.sched.handle_gamer_joined(self.now, gamer.clone(), conn);
        let mut named = 0;
        if awaiting {
            // By the gamer's own ids, as on the wire.
            let owner = Owner::Gamer(gamer.clone());
            let waits: Vec<TaskId> = self
                .acked
                .iter()
                .filter(|(id, s)| s.gamer == g && !self.gamers[g].received.contains_key(id))
                .filter_map(|(_, s)| self.sched.lookup(&owner, &s.client))
                .collect();
            named = waits.len();
            self.sched.handle_awaiting(self.now, &gamer, conn, &waits);
        }
        self.log(format!("gamer g{g} joins {conn} awaiting {named}"));
    }

    pub(crate) fn gamer_leave_random(&mut self) {
        let g = self.rng.usize(..self.gamers.len());
        let Some(conn) = self.gamers[g].conn.take() else { return };
        // What was queued to it and not written when the socket closed comes
        // back as unsent (`Input::Disconnected`), or it was read just before.
        let unsent = if self.rng.bool() {
            std::mem::take(&mut self.gamers[g].inbox)
        } else {
            self.read_inbox(g);
            Vec::new()
        };
        for r in &unsent {
            self.sched.handle_undelivered(self.now, r.task.id, conn);
        }
        self.sched.handle_gamer_left(self.now, &self.gamers[g].id.clone(), conn);
        self.log(format!("gamer g{g} leaves, {} unsent", unsent.len()));
    }

    pub(crate) fn submit_random(&mut self) {
        let g = self.rng.usize(..self.gamers.len());
        if self.gamers[g].conn.is_none() {
            return;
        }
        self.next_n += 1;
        let n = self.next_n;
        let task_type = TYPES[self.rng.usize(..TYPES.len())];
        let payload = number(n);
        let mut sub = Submission::new(Owner::Gamer(self.gamers[g].id.clone()), task_type, payload);
        sub.priority = self.rng.i32(0..4);
        // Some ids repeat on purpose (duplicates must be refused while live).
        let client: Arc<str> = Arc::from(format!("c{}", self.rng.u64(0..n.max(2))).as_str());
        sub.client_task_id = Some(Arc::clone(&client));
        sub.requirements = Requirements { gpu: task_type == "gpu", ..Requirements::default() };
        if self.rng.u32(0..5) == 0 {
            sub.run_timeout = Some(Duration::from_secs(self.rng.u64(1..30)));
        }
        if self.rng.u32(0..5) == 0 {
            sub.queue_timeout = Some(Duration::from_secs(self.rng.u64(1..60)));
        }
        sub.max_attempts = Some(self.rng.u32(1..4));
        // A fresh idempotency key, or one used before (a resubmission: the
        // original task stands, and its outcome goes out again if it ended).
        let keys = &mut self.keys[g];
        sub.idempotency_key = match self.rng.u32(0..6) {
            0 if !keys.is_empty() => Some(Arc::clone(&keys[self.rng.usize(..keys.len())])),
            0 | 1 => {
                let key: Arc<str> = Arc::from(format!("k{n}").as_str());
                keys.push(Arc::clone(&key));
                Some(key)
            }
            _ => None,
        };
        match self.sched.handle_submit(self.now, sub) {
            Ok(acc) => {
                if !acc.existing {
                    self.submitted.insert(acc.id, Sub { gamer: g, n, client });
                }
                let how = if acc.existing { "existing" } else { "new" };
                self.log(format!("submit g{g} #{n} {task_type} -> {} {how}", acc.id));
            }
            Err(e) => self.log(format!("submit g{g} refused: {e:?}")),
        }
    }

    pub(crate) fn cancel_random(&mut self) {
        let known: Vec<(TaskId, usize)> =
            self.acked.iter().chain(&self.submitted).map(|(id, s)| (*id, s.gamer)).collect();
        if known.is_empty() {
            return;
        }
        let (task, g) = known[self.rng.usize(..known.len())];
        let owner = Owner::Gamer(self.gamers[g].id.clone());
        let r = self.sched.handle_cancel(self.now, &owner, task);
        self.log(format!("cancel {task}: {r:?}"));
    }

    /// A connected peer answers one of its assignments — or says it started
    /// it — naming it the way one kind of peer does: our worker sends the
    /// cluster id and the attempt, a seed-literal peer only the id it saw.
    pub(crate) fn answer_random(&mut self) {
        let i = self.rng.usize(..self.peers.len());
        let Some(conn) = self.peers[i].conn else { return };
        let n = self.peers[i].running.len();
        if n == 0 {
            return;
        }
        let pick = self.rng.usize(..n);
        let Some(run) = self.peers[i].running.iter().nth(pick).cloned() else { return };
        let id = self.peers[i].id.clone();
        let by_wire = !self.peers[i].echoes_ids;
        if by_wire && self.now.saturating_since(run.at) >= LOST_RUN_HOLD {
            // Past the hold an answer by the peer id alone may be taken for
            // a newer task reusing the id (`Config::lost_run_hold`): this
            // peer gives the run up instead.
            self.peers[i].running.remove(&run);
            self.log(format!("p{i} gives up {}{} ({})", run.task, run.attempt, run.wire));
            return;
        }
        let (task, attempt) = match (by_wire, self.rng.bool()) {
            // The coordinator resolves the wire id (`messages::peer_task`).
            (true, _) => (self.sched.resolve_peer_task(&run.wire), None),
            (false, echo) => (Some(run.task), echo.then_some(run.attempt)),
        };
        let Some(task) = task else {
            self.log(format!("p{i} answers {} {}: unknown task", run.task, run.wire));
            return;
        };
        if self.rng.u32(0..8) == 0 {
            let r = self.sched.handle_started(self.now, &id, conn, task, attempt);
            self.log(format!("p{i} started {task}{}: {r:?}", run.attempt));
            return;
        }
        // Now and then a peer answers the same assignment twice — by its
        // cluster id: an answer by the seed's id alone cannot be told from
        // one for a newer task reusing that id once the first has ended, so
        // a peer answering so answers each assignment once
        // (docs/PROTOCOL.md).
        if self.rng.u32(0..10) != 0 || by_wire {
            self.peers[i].running.remove(&run);
        }
        // Failures name the run's task, so that a gamer can tell whose it got.
        let failed = |code: &str, retryable| RunOutcome::Failed {
            failure: Failure::new(code, format!("{RUN_OF}{}", run.n)),
            retryable,
        };
        let outcome = match self.rng.u32(0..10) {
            0 => failed("internal", true),
            1 => failed("invalid_input", false),
            2 => RunOutcome::Returned,
            _ => RunOutcome::Completed(result_of(&run)),
        };
        let r = self.sched.handle_result(self.now, &id, conn, task, attempt, outcome);
        let via = if by_wire { "wire id" } else { "cluster id" };
        self.log(format!("p{i} answers {}{} by {via} as {task}: {r:?}", run.task, run.attempt));
    }
}
