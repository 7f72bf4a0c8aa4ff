//! The invariants: after every step ([`World::check`]), at every restart
//! that lost nothing ([`round_trip`]), and at the end
//! ([`World::check_all_delivered`]).

use std::collections::BTreeMap;

use proto::Json;
use sched::{
    AttemptRecord, Outcome, PeerId, Recovered, RecoveredState, Scheduler, Task, TaskId, TaskSpec,
    TaskState,
};

use crate::world::World;

impl World {
    /// The invariants that hold after every step.
    pub fn check(&self) -> Result<(), String> {
        let fail = |what: String| Err(format!("seed {}: {what}", self.seed));
        if let Some(v) = self.violations.first() {
            return fail(v.clone());
        }
        let held = self.holds().map_err(|e| format!("seed {}: {e}", self.seed))?;
        for id in self.acked.keys().chain(self.submitted.keys()) {
            match self.sched.task(*id) {
                Some(t) => {
                    if let Some(p) = t.peer() {
                        let live = self.sched.peer(p.as_str()).is_some();
                        if live && held.get(id) != Some(&p) {
                            return fail(format!(
                                "{id} assigned to live {p} which does not hold it"
                            ));
                        }
                    }
                }
                None if self.evicted.contains(id) || self.deleted.contains(id) => {}
                None => return fail(format!("accepted task {id} was lost")),
            }
        }
        self.peer_ids().map_err(|e| format!("seed {}: {e}", self.seed))
    }

    /// No task is held by two peers, every hold matches its task, and no
    /// peer holds more than its slots. Returns who holds what.
    fn holds(&self) -> Result<BTreeMap<TaskId, &PeerId>, String> {
        let mut held: BTreeMap<TaskId, &PeerId> = BTreeMap::new();
        for peer in self.sched.peers() {
            let holds: Vec<_> = peer.tasks().collect();
            if holds.len() as u32 > peer.caps().slots {
                let slots = peer.caps().slots;
                return Err(format!(
                    "{} holds {} tasks with {slots} slots",
                    peer.id(),
                    holds.len()
                ));
            }
            for (task, attempt) in holds {
                if let Some(other) = held.insert(task, peer.id()) {
                    return Err(format!("{task} held by {other} and {}", peer.id()));
                }
                let t = self.sched.task(task).ok_or_else(|| format!("held {task} unknown"))?;
                if t.peer() != Some(peer.id()) || t.attempt() != attempt {
                    return Err(format!(
                        "{task}{attempt} held by {} but the task says {:?} {}",
                        peer.id(),
                        t.peer(),
                        t.attempt()
                    ));
                }
            }
        }
        Ok(held)
    }

    /// The ids peers see are unique among live tasks, and each resolves to
    /// its task (what a seed-literal peer's `task_result` is matched by).
    fn peer_ids(&self) -> Result<(), String> {
        let mut seen: BTreeMap<&str, TaskId> = BTreeMap::new();
        for t in self.sched.tasks().filter(|t| !t.status().is_terminal()) {
            let wire = t.spec().peer_task_id.as_ref();
            if let Some(other) = seen.insert(wire, t.id()) {
                return Err(format!("live {other} and {} both go by `{wire}` to peers", t.id()));
            }
            let resolved = self.sched.resolve_peer_task(wire);
            if resolved != Some(t.id()) {
                return Err(format!("`{wire}` of live {} resolves to {resolved:?}", t.id()));
            }
        }
        Ok(())
    }

    /// After the calm period: every acknowledged task reached its gamer,
    /// with one value (the per-step checks saw to that), unless its
    /// retention ended before the gamer came back for it, or the gamer
    /// itself gave its id to a newer task while still awaiting it (then
    /// `awaiting` names the newer one).
    pub(crate) fn check_all_delivered(&self) -> Result<(), String> {
        for (id, sub) in &self.acked {
            let got = self.gamers[sub.gamer].received.get(id).map_or(0, |g| g.times);
            let gone = self.sched.task(*id).is_none();
            let reused = self
                .acked
                .range(*id..)
                .any(|(o, s)| o != id && s.gamer == sub.gamer && s.client == sub.client);
            if got == 0 && !gone && !reused {
                let t = self.sched.task(*id);
                return Err(format!(
                    "seed {}: acknowledged {id} was never delivered ({:?}, delivered {:?})",
                    self.seed,
                    t.map(|t| t.status()),
                    t.map(|t| t.delivered())
                ));
            }
        }
        Ok(())
    }
}

/// An outcome as its gamer reads it: the result, or the status, code and
/// reason of the error.
pub(crate) fn outcome_value(outcome: &Outcome<Json>) -> String {
    match outcome {
        Outcome::Completed { result, .. } => format!("completed {}", result.get()),
        other => {
            let f = other.failure().map(|f| f.to_string()).unwrap_or_default();
            format!("{} {f}", other.status())
        }
    }
}

/// What the store gives back after a restart that lost no batch is what the
/// scheduler held: the same tasks, each with the same spec, state, attempt,
/// failures, history and outcome. Delivery marks are written lazily, so a
/// task may come back undelivered that was delivered — never the other way
/// round.
pub(crate) struct RoundTrip;

impl RoundTrip {
    pub fn check(&self, old: &Scheduler<Json>, back: &[Recovered<Json>]) -> Result<(), String> {
        let back: BTreeMap<TaskId, &Recovered<Json>> =
            back.iter().map(|r| (r.spec.id, r)).collect();
        for t in old.tasks() {
            let r = back.get(&t.id()).ok_or_else(|| format!("{} is not in the store", t.id()))?;
            self.same_task(t, r).map_err(|e| format!("{} came back from the store {e}", t.id()))?;
        }
        if let Some(id) = back.keys().find(|id| old.task(**id).is_none()) {
            return Err(format!("the store holds {id}, which the scheduler had dropped"));
        }
        Ok(())
    }

    fn same_task(&self, t: &Task<Json>, r: &Recovered<Json>) -> Result<(), String> {
        if spec(t.spec()) != spec(&r.spec) {
            return Err(format!("with another spec: {} became {}", spec(t.spec()), spec(&r.spec)));
        }
        if t.attempt().0 != r.attempts || t.failures() != r.failures {
            return Err(format!(
                "({}) with attempt {} and {} failures, not {} and {}",
                t.status(),
                r.attempts,
                r.failures,
                t.attempt().0,
                t.failures()
            ));
        }
        self.same_history(t.history(), &r.history)?;
        same_state(t, &r.state)
    }

    fn same_history(&self, was: &[AttemptRecord], now: &[AttemptRecord]) -> Result<(), String> {
        let fail = || Err(format!("with history {now:?}, not {was:?}"));
        if was.len() != now.len() {
            return fail();
        }
        for (a, b) in was.iter().zip(now) {
            if (&a.peer, a.attempt, a.assigned_at, a.ended_at, &a.end)
                != (&b.peer, b.attempt, b.assigned_at, b.ended_at, &b.end)
            {
                return fail();
            }
        }
        Ok(())
    }
}

/// A spec's every field, for comparing.
fn spec(x: &TaskSpec<Json>) -> String {
    format!(
        "{:?} {} {} {} {} {} {:?} {:?} {:?} {} {:?} {}",
        x.owner,
        x.client_task_id,
        x.peer_task_id,
        x.task_type,
        x.payload.get(),
        x.priority,
        x.requirements,
        x.run_timeout,
        x.queue_timeout,
        x.max_attempts,
        x.idempotency_key,
        x.submitted_at
    )
}
fn same_state(t: &Task<Json>, state: &RecoveredState<Json>) -> Result<(), String> {
    match (t.status(), state) {
        (TaskState::Queued, RecoveredState::Waiting) => Ok(()),
        (
            TaskState::Assigned | TaskState::Running,
            RecoveredState::Assigned { peer, attempt, started },
        ) if Some(peer) == t.peer() && *attempt == t.attempt() && *started == t.started_at() => {
            Ok(())
        }
        (_, RecoveredState::Finished { outcome, at, delivered }) if t.status().is_terminal() => {
            let was = t.outcome().map(outcome_value).unwrap_or_default();
            let now = outcome_value(outcome);
            if was != now || Some(*at) != t.finished_at() {
                return Err(format!("finished {now} at {at}, not {was} at {:?}", t.finished_at()));
            }
            if *delivered && !t.delivered() {
                return Err("marked delivered, which it was not".to_owned());
            }
            Ok(())
        }
        (status, state) => Err(format!("as {state:?}, not {status}")),
    }
}
