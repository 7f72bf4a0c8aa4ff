//! Verification inside the scheduler: replicas and canaries as hidden
//! tasks, the verdict when they answer, reputation and quarantine. The
//! rules are in [`crate::verify`]; this is where they meet the scheduler's
//! state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::Scheduler;
use super::peer_ids::lookalike;
use crate::output::Event;
use crate::peer::Peer;
use crate::placement::Constraints;
use crate::queue::Class;
use crate::task::{AttemptEnd, State, Task, TaskKind, TaskSpec};
use crate::timers::Timer;
use crate::types::{Attempt, FailureCode, Outcome, PeerId, TaskId, TaskState, Time};
use crate::verify::{
    AffinityKey, Agreement, Book, Decision, Known, Mark, Policy, Pool, Replica, Rule, Subject,
    Verdict, Verification, VerifyStatus, judge,
};

/// What a hidden task is for.
#[derive(Debug, Clone)]
pub(crate) enum Hidden<P> {
    Replica { parent: TaskId },
    Canary { peer: PeerId, expected: P },
}

/// Verification's part of the scheduler's state.
#[derive(Debug)]
pub(crate) struct Verifier<P> {
    pub agreement: Option<Box<dyn Agreement<P>>>,
    /// Hidden tasks (replicas, canaries), by id.
    pub hidden: HashMap<TaskId, Hidden<P>>,
    pub book: Book,
    pub pool: Pool<P>,
    /// Workers with a canary outstanding, and its id.
    pub canaries: BTreeMap<PeerId, TaskId>,
    /// Draws of its own, so that verification never shifts back-off jitter.
    pub rng: fastrand::Rng,
    /// The draws of hidden tasks' ids (see `peer_ids::lookalike`), apart
    /// from `rng` so that ids never shift replication's decisions.
    pub id_rng: fastrand::Rng,
    /// Hidden tasks were queued while placing: place again.
    pub queued_while_placing: bool,
    pub counters: VerifyCounters,
}

/// Verification's totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyCounters {
    /// Tasks accepted on a quorum or a self-check.
    pub verified: u64,
    /// Tasks accepted on a trusted worker's result alone.
    pub trusted: u64,
    /// Tasks of a type that cannot be verified, run once.
    pub unverifiable: u64,
    /// Tasks that failed with `no_quorum`.
    pub no_quorum: u64,
    /// Tasks whose results disagreed at least once.
    pub disagreed: u64,
    /// Replicas run, and those beyond the first of their task.
    pub replicas: u64,
    pub extra_replicas: u64,
    pub canaries: u64,
    pub canaries_passed: u64,
    pub canaries_failed: u64,
    /// Workers quarantined.
    pub quarantined: u64,
}

impl<P> Verifier<P> {
    pub fn new(seed: u64, pool: usize) -> Verifier<P> {
        Verifier {
            agreement: None,
            hidden: HashMap::new(),
            book: Book::default(),
            pool: Pool::new(pool),
            canaries: BTreeMap::new(),
            rng: fastrand::Rng::with_seed(seed ^ 0x7e51_f1ed),
            id_rng: fastrand::Rng::with_seed(seed ^ 0x01d5_0f1d),
            queued_while_placing: false,
            counters: VerifyCounters::default(),
        }
    }
}

/// The placement constraints of hidden tasks: replicas apart, canaries to
/// their worker (placement rule 5).
pub(crate) struct Apart<'a, P> {
    hidden: &'a HashMap<TaskId, Hidden<P>>,
    tasks: &'a BTreeMap<TaskId, Task<P>>,
    /// Placements made in this plan, by parent: (replica, its peer's keys).
    planned: HashMap<TaskId, Vec<(TaskId, Vec<AffinityKey>)>>,
}

impl<'a, P> Apart<'a, P> {
    pub fn new(
        hidden: &'a HashMap<TaskId, Hidden<P>>,
        tasks: &'a BTreeMap<TaskId, Task<P>>,
    ) -> Self {
        Apart { hidden, tasks, planned: HashMap::new() }
    }
}

impl<P> Constraints for Apart<'_, P> {
    fn constrained(&self, task: TaskId) -> bool {
        !self.hidden.is_empty() && self.hidden.contains_key(&task)
    }

    fn allows(&self, task: TaskId, peer: &Peer) -> bool {
        let parent = match self.hidden.get(&task) {
            Some(Hidden::Canary { peer: only, .. }) => return peer.id() == only,
            Some(Hidden::Replica { parent }) => parent,
            None => return true,
        };
        let keys = peer.affinity_keys();
        let siblings = self.tasks.get(parent).and_then(|t| t.verification.as_deref());
        let ran = siblings.is_some_and(|v| {
            v.replicas
                .iter()
                .filter(|r| r.task != task)
                .any(|r| r.keys.iter().any(|k| keys.contains(k)))
        });
        let planned = self.planned.get(parent).is_some_and(|list| {
            list.iter().filter(|(t, _)| *t != task).any(|(_, k)| k.iter().any(|k| keys.contains(k)))
        });
        !ran && !planned
    }

    fn placed(&mut self, task: TaskId, peer: &Peer) {
        if let Some(Hidden::Replica { parent }) = self.hidden.get(&task) {
            self.planned.entry(*parent).or_default().push((task, peer.affinity_keys()));
        }
    }
}

impl<P: Clone> Scheduler<P> {
    /// Installs the agreement rules; without them nothing is verified.
    pub fn set_agreement(&mut self, agreement: Box<dyn Agreement<P>>) {
        self.verify.agreement = Some(agreement);
    }

    /// The policy and rule a submission is verified under, if any.
    pub(crate) fn verification_for(
        &self,
        task_type: &str,
        payload: &P,
        asked: Option<Policy>,
    ) -> Option<(Policy, Rule)> {
        let policy = asked.or(self.config.verify.default_policy).filter(Policy::verifies)?;
        let rules = self.verify.agreement.as_deref()?;
        Some((policy, rules.rule(task_type, payload)))
    }

    /// Starts verifying the task `id` (already inserted, not queued): its
    /// first replicas are queued (rules 1, 2 and 7).
    pub(crate) fn start_verification(&mut self, now: Time, id: TaskId, policy: Policy, rule: Rule) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        task.state = State::Verifying { stage: TaskState::Queued };
        let mut v = Verification::new(policy, rule);
        let first = match rule {
            Rule::Replicate if !policy.adaptive => policy.replicas,
            _ => 1,
        };
        v.replicated = rule != Rule::Replicate || !policy.adaptive;
        task.verification = Some(Box::new(v));
        for _ in 0..first {
            self.spawn_replica(now, id, false);
        }
    }

    /// Queues one more replica of `parent`.
    fn spawn_replica(&mut self, now: Time, parent: TaskId, front: bool) {
        let Some(task) = self.tasks.get(&parent) else { return };
        let (spec, class) = (Arc::clone(&task.spec), Arc::clone(&task.class));
        let id = self.take_task_id();
        // The first replica usually gets the submitter's own id, as an
        // unverified task would; the others an id of the same shape (their
        // cluster ids when it has nothing to vary), so that a peer cannot
        // tell that its run is compared with another.
        let wanted = match self.peer_ids.contains_key(&spec.client_task_id) {
            true => lookalike(&spec.client_task_id, &mut self.verify.id_rng)
                .map_or_else(|| Arc::clone(&spec.client_task_id), Arc::from),
            false => Arc::clone(&spec.client_task_id),
        };
        let peer_task_id = self.claim_peer_task_id(&wanted, id);
        let replica = Arc::new(TaskSpec {
            id,
            peer_task_id,
            idempotency_key: None,
            submitted_at: now,
            verify: None,
            // Progress of a verified task is not streamed: text that no
            // quorum has agreed on yet must not reach the submitter.
            stream: false,
            kind: TaskKind::Replica { of: parent },
            ..TaskSpec::clone(&spec)
        });
        let Some(v) = self.tasks.get_mut(&parent).and_then(|t| t.verification.as_deref_mut())
        else {
            return;
        };
        v.replicas.push(Replica::stored(id, None, 0, None, None, Verdict::Pending));
        let extra = v.replicas.len() > 1;
        self.verify.counters.replicas += 1;
        self.verify.counters.extra_replicas += u64::from(extra);
        self.insert_hidden(now, replica, class, Hidden::Replica { parent }, front);
    }

    /// Queues a hidden task.
    pub(crate) fn insert_hidden(
        &mut self,
        now: Time,
        spec: Arc<TaskSpec<P>>,
        class: Arc<Class>,
        hidden: Hidden<P>,
        front: bool,
    ) {
        let id = spec.id;
        let pos = self.queue.push(Arc::clone(&class), spec.priority, id, front);
        let deadline = now + spec.queue_timeout;
        self.timers.insert(deadline, Timer::QueueDeadline(id, 1));
        self.tasks.insert(id, Task::new(Arc::clone(&spec), class, pos, now, deadline));
        self.verify.hidden.insert(id, hidden);
        self.verify.queued_while_placing = true;
        self.events.push_back(Event::TaskSubmitted { task: spec });
    }

    /// An assignment was made: a replica notes its peer (and adaptive
    /// replication decides, rule 7); real work may bring a canary (rule 8).
    pub(crate) fn after_assign(&mut self, now: Time, id: TaskId, peer: &PeerId) {
        if self.verify.agreement.is_none() {
            return;
        }
        match self.verify.hidden.get(&id) {
            Some(Hidden::Canary { .. }) => return,
            Some(Hidden::Replica { parent }) => {
                let parent = *parent;
                self.replica_assigned(now, parent, id, peer);
            }
            None => {}
        }
        self.maybe_canary(now, id, peer);
    }

    fn replica_assigned(&mut self, now: Time, parent: TaskId, id: TaskId, peer: &PeerId) {
        let keys = self.peers.get(peer).map(Peer::affinity_keys).unwrap_or_default();
        let deciding = self
            .tasks
            .get(&parent)
            .and_then(|t| t.verification.as_deref())
            .is_some_and(|v| !v.replicated);
        let trusted = deciding && {
            let roll = self.verify.rng.f64();
            let quarantined = self.peers.get(peer).is_some_and(|p| p.quarantined);
            !quarantined
                && self.verify.book.trusts(
                    &Subject::Worker(peer.clone()),
                    roll,
                    &self.config.verify,
                )
        };
        let Some(task) = self.tasks.get_mut(&parent) else { return };
        task.attempts += 1;
        if let State::Verifying { stage } = &mut task.state
            && *stage == TaskState::Queued
        {
            *stage = TaskState::Assigned;
        }
        let Some(v) = task.verification.as_deref_mut() else { return };
        if let Some(r) = v.replica_mut(id) {
            r.peer = Some(peer.clone());
            r.attempts += 1;
            r.keys.extend(keys);
        }
        if !deciding {
            return;
        }
        if trusted {
            v.trusting = Some(peer.clone());
            return;
        }
        v.trusting = None;
        v.replicated = true;
        let more = (v.policy.replicas as usize).saturating_sub(v.replicas.len());
        for _ in 0..more {
            self.spawn_replica(now, parent, true);
        }
    }

    /// A replica started: so did its task, as its submitter sees it.
    pub(crate) fn hidden_started(&mut self, id: TaskId) {
        let Some(Hidden::Replica { parent }) = self.verify.hidden.get(&id) else { return };
        if let Some(State::Verifying { stage }) = self.tasks.get_mut(parent).map(|t| &mut t.state) {
            *stage = TaskState::Running;
        }
    }

    /// A hidden task ended: it leaves at once (nothing is delivered or kept
    /// of it but what its parent records), then its verdict is worked out.
    pub(crate) fn hidden_finished(
        &mut self,
        now: Time,
        id: TaskId,
        outcome: Outcome<P>,
        run_time: Option<std::time::Duration>,
    ) {
        let Some(hidden) = self.verify.hidden.remove(&id) else { return };
        self.end_wait(id);
        let Some(task) = self.tasks.get_mut(&id) else { return };
        match &task.state {
            State::Queued { pos } => {
                self.queue.remove(pos);
            }
            State::Backoff { .. } => self.backing_off -= 1,
            _ => {}
        }
        let spec = Arc::clone(&task.spec);
        let last = task.history.last().filter(|r| r.ended_at == Some(now));
        let ended = last.and_then(|r| r.end.clone().map(|end| (r.attempt, end)));
        let peer = last.map(|r| r.peer.clone());
        let (attempts, failures) = (task.attempts, task.failures);
        task.state =
            State::Finished { outcome: outcome.clone(), at: now, delivered: true, to: None };
        self.evict_peer_task_id(id);
        self.tasks.remove(&id);
        self.events.push_back(Event::TaskFinished {
            task: Arc::clone(&spec),
            outcome: outcome.clone(),
            attempts,
            failures,
            run_time,
            ended,
            peer,
            at: now,
        });
        match hidden {
            Hidden::Replica { parent } => self.replica_done(now, parent, id, outcome),
            Hidden::Canary { peer, expected } => {
                self.canary_done(now, &spec, &peer, expected, outcome)
            }
        }
    }

    fn replica_done(&mut self, now: Time, parent: TaskId, id: TaskId, outcome: Outcome<P>) {
        let Some(v) = self.tasks.get_mut(&parent).and_then(|t| t.verification.as_deref_mut())
        else {
            return;
        };
        let pending = v.status == VerifyStatus::Pending;
        let Some(r) = v.replica_mut(id) else { return };
        match &outcome {
            Outcome::Completed { result, peer, .. } => {
                r.result = Some(result.clone());
                r.peer = Some(peer.clone());
            }
            other => r.failure = other.failure(),
        }
        if !pending {
            r.verdict = Verdict::Unjudged;
            return;
        }
        match outcome {
            Outcome::Completed { .. } => self.judge_task(now, parent),
            // Rule 6: a replica's failure is the task's.
            other => self.end_verification(now, parent, VerifyStatus::Ended, other),
        }
    }

    /// Works out the verdict on `parent`'s answers so far and acts on it.
    fn judge_task(&mut self, now: Time, parent: TaskId) {
        let (Some(rules), Some(task)) = (self.verify.agreement.as_deref(), self.tasks.get(&parent))
        else {
            return;
        };
        let Some(v) = task.verification.as_deref() else { return };
        let extra = self.config.verify.max_extra_replicas;
        let decision = judge(rules, &task.spec.task_type, &task.spec.payload, v, extra);
        match decision {
            Decision::Wait => {}
            Decision::Accept { winner, status, marks } => {
                self.apply_marks(parent, &marks);
                self.remember_known(parent, &marks);
                let Some(r) = self.replica_of(parent, winner) else { return };
                let outcome = match (r.result.clone(), r.peer.clone()) {
                    (Some(result), Some(peer)) => {
                        Outcome::Completed { result, attempt: Attempt(r.attempts), peer }
                    }
                    _ => return,
                };
                self.end_verification(now, parent, status, outcome);
            }
            Decision::More { more, marks } => {
                self.apply_marks(parent, &marks);
                self.disagreed(parent);
                for _ in 0..more {
                    self.spawn_replica(now, parent, true);
                }
            }
            Decision::NoQuorum { marks } => {
                self.apply_marks(parent, &marks);
                self.disagreed(parent);
                let n = self.replica_count(parent);
                let failure = crate::types::Failure::new(
                    FailureCode::NO_QUORUM,
                    format!("{n} replicas did not agree; every result is kept on the task"),
                );
                self.end_verification(
                    now,
                    parent,
                    VerifyStatus::NoQuorum,
                    Outcome::Failed(failure),
                );
            }
        }
    }

    fn replica_of(&self, parent: TaskId, index: usize) -> Option<&Replica<P>> {
        self.tasks.get(&parent)?.verification.as_deref()?.replicas.get(index)
    }

    fn replica_count(&self, parent: TaskId) -> usize {
        self.tasks
            .get(&parent)
            .and_then(|t| t.verification.as_deref())
            .map_or(0, |v| v.replicas.len())
    }

    /// Reports a disagreement, once per task.
    fn disagreed(&mut self, parent: TaskId) {
        let Some(task) = self.tasks.get_mut(&parent) else { return };
        let Some(v) = task.verification.as_deref_mut() else { return };
        if !std::mem::replace(&mut v.disagreed, true) {
            self.verify.counters.disagreed += 1;
            let task_type = Arc::clone(&task.spec.task_type);
            self.events.push_back(Event::Disagreed { task: parent, task_type });
        }
    }

    /// Records the verdicts and what they do to each worker's reputation.
    fn apply_marks(&mut self, parent: TaskId, marks: &[(usize, Verdict)]) {
        let mut judged = Vec::new();
        if let Some(v) = self.tasks.get_mut(&parent).and_then(|t| t.verification.as_deref_mut()) {
            for &(i, verdict) in marks {
                if let Some(r) = v.replicas.get_mut(i) {
                    r.verdict = verdict;
                    judged.extend(r.peer.clone().map(|p| (p, verdict)));
                }
            }
        }
        for (peer, verdict) in judged {
            let mark = match verdict {
                Verdict::Valid => Mark::Valid,
                Verdict::Invalid => Mark::Invalid,
                Verdict::Unverified => Mark::Unverified,
                Verdict::Pending | Verdict::Unjudged => continue,
            };
            self.mark(&peer, mark);
        }
    }

    /// An answer a quorum of two or more agreed on becomes a known answer
    /// for canaries.
    fn remember_known(&mut self, parent: TaskId, marks: &[(usize, Verdict)]) {
        if marks.iter().filter(|(_, v)| *v == Verdict::Valid).count() < 2 {
            return;
        }
        let Some(task) = self.tasks.get(&parent) else { return };
        let Some(v) = task.verification.as_deref() else { return };
        let Some(answer) = marks
            .iter()
            .find(|(_, v)| *v == Verdict::Valid)
            .and_then(|(i, _)| v.replicas.get(*i)?.result.clone())
        else {
            return;
        };
        let seen_by: BTreeSet<AffinityKey> =
            v.replicas.iter().flat_map(|r| r.keys.iter().cloned()).collect();
        self.verify.pool.push(Known {
            class: Arc::clone(&task.class),
            client_task_id: Arc::clone(&task.spec.client_task_id),
            payload: task.spec.payload.clone(),
            answer,
            priority: task.spec.priority,
            run_timeout: task.spec.run_timeout,
            seen_by,
        });
    }

    /// Ends a verified task: its live replicas are cancelled, the verdict
    /// is published, and the task finishes with `outcome`.
    pub(crate) fn end_verification(
        &mut self,
        now: Time,
        parent: TaskId,
        status: VerifyStatus,
        outcome: Outcome<P>,
    ) {
        let Some(task) = self.tasks.get_mut(&parent) else { return };
        let task_type = Arc::clone(&task.spec.task_type);
        let Some(v) = task.verification.as_deref_mut() else { return };
        v.status = status;
        let live: Vec<TaskId> = v.live().collect();
        let c = &mut self.verify.counters;
        match status {
            VerifyStatus::Agreed | VerifyStatus::SelfChecked => c.verified += 1,
            VerifyStatus::Trusted => c.trusted += 1,
            VerifyStatus::Unverifiable => c.unverifiable += 1,
            VerifyStatus::NoQuorum => c.no_quorum += 1,
            VerifyStatus::Pending | VerifyStatus::Ended => {}
        }
        for id in live {
            self.stop_hidden(now, id);
        }
        if let Some(v) = self.tasks.get(&parent).and_then(|t| t.verification.as_deref()) {
            let verification = Arc::new(v.clone());
            self.events.push_back(Event::Verified { task: parent, task_type, verification });
        }
        self.finish(now, parent, outcome, None);
    }

    /// Stops a hidden task wherever it is (queued or running) and ends it.
    pub(crate) fn stop_hidden(&mut self, now: Time, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else { return };
        if let State::Assigned(h) = &task.state {
            let holder = h.clone();
            self.stop_run(now, id, &holder, FailureCode::CANCELLED);
            self.end_attempt(now, id, holder.attempt, AttemptEnd::Cancelled);
            self.refresh_free(&holder.peer);
        }
        self.finish(now, id, Outcome::Cancelled, None);
    }

    /// Why a hidden replica waits although capable peers are free: they all
    /// run (or ran) its other replicas.
    pub(crate) fn apart_reason(&self, id: TaskId) -> Option<String> {
        let Hidden::Replica { parent } = self.verify.hidden.get(&id)? else { return None };
        let task = self.tasks.get(&id)?;
        let able: Vec<&Peer> = self
            .peers
            .values()
            .filter(|p| !p.draining && !p.quarantined && p.caps.can_run(&task.class))
            .collect();
        let apart = Apart::new(&self.verify.hidden, &self.tasks);
        if able.is_empty() || able.iter().any(|p| apart.allows(id, p)) {
            return None;
        }
        let policy = self.tasks.get(parent)?.verification.as_deref()?.policy;
        Some(format!(
            "waiting for a worker apart from those of its other replicas (verify {policy}): \
             {} capable worker(s) connected, all already used",
            able.len()
        ))
    }
}
