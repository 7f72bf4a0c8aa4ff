//! Inputs from peers and gamers joining, leaving and heartbeating.

use codes::CloseReason;
use std::collections::BTreeMap;

use super::{PeerError, Scheduler};
use crate::output::{Command, Event, LeaveReason, RequeueReason};
use crate::peer::{Leaving, Peer, PeerJoin};
use crate::task::{AttemptEnd, Holder, State};
use crate::timers::Timer;
use crate::types::{Attempt, ConnId, GamerId, Owner, PeerId, TaskId, Time};

/// What became of a peer's registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    /// An older session of the same peer was replaced.
    pub replaced: bool,
    /// Tasks the peer claimed to run that it no longer holds: it should stop them.
    pub stale: Vec<(TaskId, Attempt)>,
}

impl<P: Clone> Scheduler<P> {
    /// A peer registered on `join.conn`. A live session with the same id is
    /// replaced: the assignments the new session claims (`join.running`) stay
    /// with it as far as its slots go, the others are requeued.
    pub fn handle_peer_joined(&mut self, now: Time, join: PeerJoin) -> Joined {
        let now = self.tick(now);
        let claims: BTreeMap<TaskId, Attempt> = join.running.iter().copied().collect();
        let mut peer = Peer::new(&join, now);
        peer.carry(self.tallies.remove(&join.id).unwrap_or_default());
        let mut joined = Joined::default();

        if let Some(old) = self.peers.remove(&join.id) {
            joined.replaced = true;
            peer.carry(old.tally());
            self.free.remove(&join.id);
            if old.conn != join.conn {
                self.commands.push_back(Command::ClosePeer {
                    conn: old.conn,
                    reason: CloseReason::Replaced,
                });
            }
            for (task, attempt) in old.tasks {
                if claims.get(&task) == Some(&attempt) && peer.used() < peer.caps.slots {
                    self.move_holder(task, join.conn);
                    peer.tasks.insert(task, attempt);
                } else {
                    if claims.contains_key(&task) {
                        joined.stale.push((task, attempt));
                    }
                    self.requeue(now, task, AttemptEnd::PeerLost, RequeueReason::PeerLost, true);
                }
            }
            for (task, attempt) in old.zombies {
                if claims.get(&task) == Some(&attempt) {
                    peer.zombies.insert(task, attempt);
                } else {
                    // Not claimed, so not confirmed stopped either.
                    self.hold_lost_run(now, task, &join.id, attempt);
                }
            }
            self.events.push_back(Event::PeerLeft {
                peer: join.id.clone(),
                conn: old.conn,
                reason: LeaveReason::Replaced,
            });
        }

        // Assignments recovered after a coordinator restart, waiting for this peer.
        for task in self.orphans.remove(&join.id).unwrap_or_default() {
            let held = match self.tasks.get(&task).map(|t| &t.state) {
                Some(State::Assigned(h)) if h.conn.is_none() => h.attempt,
                _ => continue,
            };
            if claims.get(&task) == Some(&held) && peer.used() < peer.caps.slots {
                self.move_holder(task, join.conn);
                peer.tasks.insert(task, held);
            } else {
                if claims.contains_key(&task) {
                    joined.stale.push((task, held));
                }
                self.requeue(now, task, AttemptEnd::Unclaimed, RequeueReason::Unclaimed, true);
            }
        }

        // Claims of tasks requeued when this peer's connection dropped, as
        // far as its slots go: a claim beyond them is stale (the peer is told
        // to stop it, and it runs elsewhere).
        for (&task, &attempt) in &claims {
            if peer.tasks.contains_key(&task)
                || peer.zombies.contains_key(&task)
                || joined.stale.contains(&(task, attempt))
            {
                continue;
            }
            let room = peer.used() < peer.caps.slots;
            if room && self.reclaim(now, task, attempt, &join.id, join.conn) {
                peer.tasks.insert(task, attempt);
            } else {
                joined.stale.push((task, attempt));
            }
        }

        self.peer_verified_join(&mut peer);
        let slots = peer.caps.slots;
        self.peers.insert(join.id.clone(), peer);
        self.refresh_free(&join.id);
        self.timers.insert(
            now + self.config.heartbeat_timeout,
            Timer::PeerLiveness(join.id.clone(), join.conn),
        );
        self.events.push_back(Event::PeerJoined { peer: join.id, conn: join.conn, slots });
        self.place(now);
        joined
    }

    /// Points an assignment at the peer's new connection.
    fn move_holder(&mut self, task: TaskId, conn: ConnId) {
        if let Some(State::Assigned(h)) = self.tasks.get_mut(&task).map(|t| &mut t.state) {
            h.conn = Some(conn);
        }
    }

    /// Gives a requeued task back to the peer that lost it, when that peer
    /// reconnects still running the same attempt and no newer attempt was
    /// issued: the run goes on as if the connection had never dropped.
    fn reclaim(
        &mut self,
        now: Time,
        id: TaskId,
        attempt: Attempt,
        peer: &PeerId,
        conn: ConnId,
    ) -> bool {
        let Some(task) = self.tasks.get_mut(&id) else { return false };
        let lost_here = task.history.last().is_some_and(|r| {
            r.attempt == attempt && &r.peer == peer && r.end == Some(AttemptEnd::PeerLost)
        });
        if task.attempts != attempt.0 || !lost_here {
            return false;
        }
        match &task.state {
            State::Queued { pos } => {
                self.queue.remove(pos);
            }
            State::Backoff { .. } => self.backing_off -= 1,
            _ => return false,
        }
        task.failures = task.failures.saturating_sub(1);
        let since = match task.history.last_mut() {
            Some(rec) => {
                rec.end = None;
                rec.ended_at = None;
                rec.assigned_at
            }
            None => now,
        };
        // The run goes on: its time limit counts from when it was assigned.
        let run_deadline =
            task.spec.run_timeout.map(|limit| since + limit + self.config.run_timeout_slack);
        task.state = State::Assigned(Holder {
            peer: peer.clone(),
            conn: Some(conn),
            attempt,
            since,
            started: None,
            run_deadline,
        });
        if let Some(at) = run_deadline {
            self.timers.insert(at, Timer::RunDeadline(id, attempt));
        }
        let failures = task.failures;
        self.end_wait(id);
        self.end_lost_run(id, peer, attempt);
        let hidden = self.verify.hidden.contains_key(&id);
        self.events.push_back(Event::TaskReclaimed {
            task: id,
            peer: peer.clone(),
            attempt,
            failures,
            hidden,
        });
        true
    }

    /// A peer's connection closed. Its assignments are requeued at once.
    pub fn handle_peer_left(&mut self, now: Time, id: &PeerId, conn: ConnId) {
        let now = self.tick(now);
        if self.peers.get(id).is_some_and(|p| p.conn == conn) {
            self.drop_peer(now, id, LeaveReason::Disconnected);
            self.place(now);
        }
    }

    /// A peer says it is alive.
    pub fn handle_heartbeat(
        &mut self,
        now: Time,
        id: &PeerId,
        conn: ConnId,
    ) -> Result<(), PeerError> {
        let now = self.tick(now);
        let peer =
            self.peers.get_mut(id).filter(|p| p.conn == conn).ok_or(PeerError::NotRegistered)?;
        peer.last_seen = now;
        Ok(())
    }

    /// A peer takes no new tasks from now on (it is shutting down).
    pub fn handle_drain(&mut self, now: Time, id: &PeerId, conn: ConnId) -> Result<(), PeerError> {
        let now = self.tick(now);
        let peer =
            self.peers.get_mut(id).filter(|p| p.conn == conn).ok_or(PeerError::NotRegistered)?;
        peer.last_seen = now;
        if !peer.draining {
            peer.draining = true;
            self.refresh_free(id);
            self.events.push_back(Event::PeerDraining { peer: id.clone() });
        }
        Ok(())
    }

    /// An operator pauses a peer: it keeps its connection and the tasks it
    /// runs, and gets nothing new until [`Scheduler::handle_resume`].
    pub fn handle_pause(&mut self, now: Time, id: &PeerId) -> Result<(), PeerError> {
        self.tick(now);
        let peer = self.peers.get_mut(id).ok_or(PeerError::NotRegistered)?;
        if !peer.paused {
            peer.paused = true;
            self.refresh_free(id);
            self.events.push_back(Event::PeerPaused { peer: id.clone(), paused: true });
        }
        Ok(())
    }

    /// An operator drains a peer: it gets nothing new, finishes what it
    /// runs, and is then closed with [`CloseReason::Drained`] (a worker
    /// leaves for good on it) — at once when it holds nothing.
    pub fn handle_operator_drain(&mut self, now: Time, id: &PeerId) -> Result<(), PeerError> {
        self.tick(now);
        let peer = self.peers.get_mut(id).ok_or(PeerError::NotRegistered)?;
        if peer.leaving == Leaving::No {
            let announce = !peer.draining;
            peer.leaving = Leaving::WhenIdle;
            if announce {
                self.events.push_back(Event::PeerDraining { peer: id.clone() });
            }
            self.refresh_free(id);
        }
        Ok(())
    }

    /// An operator resumes a peer: a pause ends, and so does an operator's
    /// drain that has not yet closed it. A peer's own drain (it is shutting
    /// down) is not undone. Queued work is placed on it at once.
    pub fn handle_resume(&mut self, now: Time, id: &PeerId) -> Result<(), PeerError> {
        let now = self.tick(now);
        let peer = self.peers.get_mut(id).ok_or(PeerError::NotRegistered)?;
        let was_paused = std::mem::take(&mut peer.paused);
        let undrained = peer.leaving == Leaving::WhenIdle;
        if undrained {
            peer.leaving = Leaving::No;
        }
        if was_paused || undrained {
            self.events.push_back(Event::PeerPaused { peer: id.clone(), paused: false });
            self.refresh_free(id);
            self.place(now);
        }
        Ok(())
    }

    /// A gamer registered on `conn`; outcomes that finished while it was away
    /// are delivered now. Another connection holding the same id is closed.
    pub fn handle_gamer_joined(&mut self, now: Time, gamer: GamerId, conn: ConnId) {
        self.tick(now);
        if let Some(old) = self.gamers.insert(gamer.clone(), conn)
            && old != conn
        {
            self.commands
                .push_back(Command::CloseGamer { conn: old, reason: CloseReason::Replaced });
            self.events.push_back(Event::GamerLeft { gamer: gamer.clone(), conn: old });
        }
        self.events.push_back(Event::GamerJoined { gamer: gamer.clone(), conn });
        for id in self.undelivered.remove(&gamer).unwrap_or_default() {
            self.hand_over(id, conn);
        }
    }

    /// A gamer on `conn` says it still waits for the outcomes of `tasks`
    /// (after reconnecting): those already finished are sent again, even if
    /// they went out before — a reply queued just before a crash may never
    /// have reached it. Returns the ids the scheduler does not know (never
    /// accepted, or evicted after their TTL) so the caller can say so.
    pub fn handle_awaiting(
        &mut self,
        now: Time,
        gamer: &GamerId,
        conn: ConnId,
        tasks: &[TaskId],
    ) -> Vec<TaskId> {
        self.tick(now);
        let mut unknown = Vec::new();
        for &id in tasks {
            let Some(task) = self.tasks.get_mut(&id) else {
                unknown.push(id);
                continue;
            };
            if task.spec.owner != Owner::Gamer(gamer.clone()) {
                unknown.push(id);
                continue;
            }
            let State::Finished { to, .. } = &task.state else { continue };
            if *to == Some(conn) {
                continue; // already sent on this very connection
            }
            self.hand_over(id, conn);
        }
        unknown
    }

    /// An outcome sent to `conn` did not reach it (the connection was already
    /// closing): it is kept for the gamer's return, or sent again at once when
    /// the gamer is already back on another connection.
    ///
    /// Unless it was handed to another connection since (the gamer came back
    /// naming it, or the join re-delivered it, while this delivery was held
    /// for its commit): that copy is the one that counts, and sending it
    /// there again would give that connection the outcome twice.
    pub fn handle_undelivered(&mut self, now: Time, id: TaskId, conn: ConnId) {
        self.tick(now);
        let Some(task) = self.tasks.get_mut(&id) else { return };
        let Owner::Gamer(gamer) = &task.spec.owner else { return };
        let State::Finished { delivered, to, .. } = &mut task.state else { return };
        if *to != Some(conn) {
            return;
        }
        let gamer = gamer.clone();
        match self.gamers.get(&gamer).copied().filter(|c| *c != conn) {
            Some(current) => self.hand_over(id, current),
            None => {
                *delivered = false;
                *to = None;
                self.undelivered.entry(gamer).or_default().insert(id);
                self.events.push_back(Event::Undelivered { task: id });
            }
        }
    }

    /// A gamer's connection closed; its outcomes are kept until it returns.
    pub fn handle_gamer_left(&mut self, now: Time, gamer: &GamerId, conn: ConnId) {
        self.tick(now);
        if self.gamers.get(gamer) == Some(&conn) {
            self.gamers.remove(gamer);
            self.events.push_back(Event::GamerLeft { gamer: gamer.clone(), conn });
        }
    }
}
