//! The ids peers see.
//!
//! The seed shows one `task_id` from the gamer's `task_request` through the
//! peer's `task_assignment` to the `task_result` back, so a peer sees the
//! submitter's own id whenever no other live task holds it. Two gamers may
//! both name a task `123`; the second one submitted while the first is live
//! gets its cluster id (`t-42`) on the wire instead. An id stays held until
//! its task has finished *and* no peer may still run it, so that a late
//! answer by that id is never taken for a newer task that reused it. A peer
//! may still run a task when it was told to stop and has not confirmed (a
//! zombie), and when the coordinator took the run away without the peer's
//! word: its connection dropped, it rejoined without claiming the run (a
//! seed-literal peer cannot), or it never confirmed a cancel. Such a lost
//! run holds the id for `Config::lost_run_hold` after it was lost, or until
//! the peer answers it by cluster id and attempt; a finished task keeps its
//! rows meanwhile (its eviction waits), so a restarted coordinator finds the
//! hold again in the task's attempts.

use std::sync::Arc;

use super::Scheduler;
use crate::output::Event;
use crate::timers::Timer;
use crate::types::{Attempt, PeerId, TaskId, Time};

/// A run a peer may still be working on after the coordinator took it away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LostRun {
    pub peer: PeerId,
    pub attempt: Attempt,
    /// When the hold ends (the key of its timer).
    pub until: Time,
}

impl<P: Clone> Scheduler<P> {
    /// Picks and holds the id peers will see for the new task `id`.
    pub(crate) fn claim_peer_task_id(&mut self, client: &Arc<str>, id: TaskId) -> Arc<str> {
        let mut candidate = Arc::clone(client);
        let mut n = 1;
        while self.peer_ids.contains_key(&candidate) {
            candidate = match n {
                1 => Arc::from(id.to_string()),
                n => Arc::from(format!("{id}.{n}")),
            };
            n += 1;
        }
        self.peer_ids.insert(Arc::clone(&candidate), id);
        candidate
    }

    /// The task a peer means by `wire`: the live task holding that id, or,
    /// for a cluster id (`t-42`), that task.
    pub fn resolve_peer_task(&self, wire: &str) -> Option<TaskId> {
        self.peer_ids.get(wire).copied().or_else(|| TaskId::parse_cluster(wire))
    }

    /// `peer` may still run `attempt` of `id`, taken from it at `lost`
    /// without its word: the task's peer id stays held until the hold ends.
    pub(crate) fn hold_lost_run(
        &mut self,
        lost: Time,
        id: TaskId,
        peer: &PeerId,
        attempt: Attempt,
    ) {
        let until = lost + self.config.lost_run_hold;
        if until <= self.now {
            return;
        }
        let runs = self.lost_runs.entry(id).or_default();
        if runs.iter().any(|r| &r.peer == peer && r.attempt == attempt) {
            return;
        }
        runs.push(LostRun { peer: peer.clone(), attempt, until });
        self.timers.insert(until, Timer::LostRun(id, peer.clone(), attempt));
    }

    /// The lost run `attempt` of `id` on `peer` is over: the peer answered
    /// it by cluster id and attempt, claimed it back, or its hold ran out.
    pub(crate) fn end_lost_run(&mut self, id: TaskId, peer: &PeerId, attempt: Attempt) {
        let Some(runs) = self.lost_runs.get_mut(&id) else { return };
        let Some(i) = runs.iter().position(|r| &r.peer == peer && r.attempt == attempt) else {
            return;
        };
        let run = runs.swap_remove(i);
        if runs.is_empty() {
            self.lost_runs.remove(&id);
        }
        self.timers.remove(run.until, Timer::LostRun(id, run.peer, run.attempt));
        self.release_peer_task_id(id);
    }

    /// Frees a finished task's peer id once no peer may still run it, and
    /// evicts the task then if its eviction waited for that.
    pub(crate) fn release_peer_task_id(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else {
            if !self.lost_runs.contains_key(&id)
                && let Some(wire) = self.evicted_peer_ids.remove(&id)
                && self.peer_ids.get(&wire) == Some(&id)
            {
                self.peer_ids.remove(&wire);
            }
            return;
        };
        if !task.status().is_terminal() || self.still_runs(id) {
            return;
        }
        if self.peer_ids.get(&task.spec.peer_task_id) == Some(&id) {
            self.peer_ids.remove(&task.spec.peer_task_id);
        }
        if self.evict_later.remove(&id) {
            self.forget_finished(id);
            self.events.push_back(Event::Evicted { tasks: [id].into() });
        }
    }

    /// A task leaves the scheduler's memory; a peer that may still run it
    /// keeps its id held until the run is over.
    pub(crate) fn evict_peer_task_id(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else { return };
        let wire = Arc::clone(&task.spec.peer_task_id);
        if self.peer_ids.get(&wire) != Some(&id) {
            return;
        }
        if self.still_runs(id) {
            self.evicted_peer_ids.insert(id, wire);
        } else {
            self.peer_ids.remove(&wire);
        }
    }

    /// Whether a peer may still run `id`: a stopped run not confirmed yet,
    /// or a lost one still held.
    pub(crate) fn still_runs(&self, id: TaskId) -> bool {
        self.stopping(id) || self.lost_runs.contains_key(&id)
    }

    /// Whether the peer of `id`'s last attempt was told to stop it and has
    /// not confirmed yet.
    pub(crate) fn stopping(&self, id: TaskId) -> bool {
        self.tasks
            .get(&id)
            .and_then(|t| t.history.last())
            .and_then(|a| self.peers.get(&a.peer))
            .is_some_and(|p| p.zombies.contains_key(&id))
    }
}

/// An id shaped like `template` (a real task's id), for a canary that
/// follows it to the same peer: a UUID gives a fresh random UUID (version
/// 4, in the template's case); any other id keeps its letters and
/// punctuation and gets random digits in place of its own (a number's first
/// digit stays non-zero when it was). `None` when the template has no digit
/// to vary, or when the result would read as a cluster id (`t-42`, which
/// peers may answer by): the canary then shows its own cluster id.
pub(crate) fn lookalike(template: &str, rng: &mut fastrand::Rng) -> Option<String> {
    // A short number may come out as itself: a few tries.
    (0..4).find_map(|_| {
        let made = vary(template, rng)?;
        (TaskId::parse_cluster(&made).is_none() && made != template).then_some(made)
    })
}

fn vary(template: &str, rng: &mut fastrand::Rng) -> Option<String> {
    Some(if is_uuid(template) {
        let hex: &[u8] = if template.bytes().any(|b| b.is_ascii_uppercase()) {
            b"0123456789ABCDEF"
        } else {
            b"0123456789abcdef"
        };
        template
            .bytes()
            .enumerate()
            .map(|(i, b)| match (i, b) {
                (_, b'-') => '-',
                (14, _) => '4',
                (19, _) => char::from(hex[8 + rng.usize(..4)]),
                _ => char::from(hex[rng.usize(..16)]),
            })
            .collect()
    } else if template.bytes().any(|b| b.is_ascii_digit()) {
        let mut after_digit = false;
        template
            .chars()
            .map(|c| {
                let digit = c.is_ascii_digit();
                let out = match (digit, after_digit || c == '0') {
                    (true, true) => char::from(b'0' + rng.u8(..10)),
                    (true, false) => char::from(b'1' + rng.u8(..9)),
                    (false, _) => c,
                };
                after_digit = digit;
                out
            })
            .collect()
    } else {
        return None;
    })
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookalike_has_the_shape_of_its_template_and_never_its_value() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let u = lookalike("3f2a9c1e-7b4d-4e0f-9a8b-1c2d3e4f5a6b", &mut rng).unwrap();
            assert!(is_uuid(&u) && &u[14..15] == "4" && "89ab".contains(&u[19..20]), "{u}");
            assert!(!u.bytes().any(|b| b.is_ascii_uppercase()), "{u}");
            let upper = lookalike("3F2A9C1E-7B4D-4E0F-9A8B-1C2D3E4F5A6B", &mut rng).unwrap();
            assert!(!upper.bytes().any(|b| b.is_ascii_lowercase()), "{upper}");
            let f = lookalike("frame-0412", &mut rng).unwrap();
            assert_eq!((f.len(), &f[..6]), (10, "frame-"), "{f}");
            assert!(f[6..].bytes().all(|b| b.is_ascii_digit()) && f != "frame-0412");
            let n = lookalike("py-5f3a-17", &mut rng).unwrap();
            assert!(n.starts_with("py-") && &n[3..4] != "0" && &n[8..9] != "0", "{n}");
        }
        // Nothing to vary, or a cluster id: the canary's own id instead.
        assert_eq!(lookalike("job", &mut rng), None);
        assert_eq!(lookalike("t-42", &mut rng), None);
        assert_eq!(lookalike("7", &mut rng).map(|s| s.len()), Some(1));
    }
}
