//! Verification: results one can trust from peers one does not.
//!
//! Peers are volunteers' machines. A wrong result — an overclocked card, a
//! broken driver, or a lie — must not reach the submitter. A task under a
//! verification [`Policy`] never runs itself: it waits in the *verifying*
//! state while hidden **replicas** (tasks of their own, with their own
//! attempts, fencing, retries and time limits) run on distinct peers, and it
//! finishes once enough of their results agree. The submitter still receives
//! exactly one outcome, the parent task's.
//!
//! # Rules
//!
//! 1. **Policy.** A task's `verify: {replicas: N, quorum: M}` (or the
//!    cluster's default, [`crate::config::VerifyConfig::default_policy`]) asks
//!    for `N` replicas of which `M` must agree. `1/1` is no verification.
//!    Without an [`Agreement`] installed the scheduler verifies nothing.
//! 2. **Rule by task type.** The [`Agreement`] says how each task type is
//!    judged ([`Rule`]): `Replicate` (run replicas, compare results),
//!    `SelfCheck` (one result can be checked on its own — Freivalds' check
//!    of a matrix product — so one replica runs and its result is checked;
//!    a failed check counts as a disagreement), or `Unverifiable` (results
//!    differ by nature, e.g. sampled text: the task runs once, unverified).
//! 3. **Distinct peers.** A replica never runs on a peer that runs or ran
//!    another replica of the same task, nor on one with the same declared
//!    owner (`capabilities.owner`): a peer's *affinity keys* are its id and
//!    its owner. A replica's own retry may go back to its own earlier peer.
//! 4. **Quorum.** Results are grouped by agreement with the first of each
//!    group. When a group reaches `M`, its first result is the task's: the
//!    group's peers count a valid result, the others an invalid one, and the
//!    replicas still running are cancelled.
//! 5. **Disagreement.** When every replica has answered and no group reached
//!    `M`, more replicas run — as many as could still make a quorum, up to
//!    `max_extra_replicas` beyond `N` in all. Past that bound the task fails
//!    with `no_quorum`; every result is kept on the task for the operator.
//! 6. **Failures pass through.** A replica that ends without a result
//!    (a non-retryable error, its attempts exhausted, a queue or run
//!    timeout) ends the task with the same outcome: verification protects
//!    results, not availability.
//! 7. **Adaptive replication** (`adaptive: true`, BOINC's rule). One
//!    replica runs first. When it is assigned to a *trusted* worker — at
//!    least `trust_after` consecutive valid results — the others are created
//!    only with probability `1/CV` (CV its consecutive valid count, capped at
//!    `max_consecutive`); otherwise (a new or untrusted worker) they are
//!    created at once. A result accepted on trust counts as *unverified*.
//! 8. **Canaries.** With `canary_rate` > 0, each assignment of real work to
//!    a worker is followed, with that probability, by a *canary* for the
//!    same worker: a task whose answer is known — a replay of a task that
//!    other workers verified (with its original id when free), or one the
//!    [`Agreement`] generates with its answer (a small seeded matrix
//!    product, shaped like the work) under an id shaped like the work's —
//!    of the same type as the work. On the wire it is an ordinary
//!    assignment. A wrong answer counts as invalid; a right one as valid.
//!    At most one canary per worker is outstanding.
//! 9. **Reputation and quarantine.** Each worker — and its credential, when
//!    it has one of its own — keeps counts of valid, invalid and unverified
//!    results ([`Reputation`]). An invalid result resets the consecutive
//!    count and adds a strike; `forgive_after` consecutive valid results
//!    take one strike away. At `quarantine_after` strikes the worker is
//!    quarantined: it keeps its connection and running tasks but gets no
//!    new work, until an operator clears it (which also resets its trust).
//! 10. **Restarts.** Replicas are not stored. After a coordinator restart a
//!     task still verifying starts its verification over (its earlier
//!     replicas' results are dropped; peers still running them are told
//!     they are stale); reputations and finished tasks' replica results are
//!     stored and come back.

mod judge;
mod pool;
mod reputation;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::types::{Failure, PeerId, TaskId};

pub(crate) use judge::{Decision, judge};
pub(crate) use pool::{Known, Pool};
pub(crate) use reputation::{Book, Change, Mark};
pub use reputation::{Reputation, Subject};

/// How many replicas a task runs and how many must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub replicas: u32,
    pub quorum: u32,
    /// BOINC's adaptive replication: trusted workers' results are replicated
    /// only now and then (rule 7).
    pub adaptive: bool,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Policy {
    /// The most replicas a policy may ask for.
    pub const MAX_REPLICAS: u32 = 16;

    /// No verification: one run, trusted.
    pub const OFF: Policy = Policy { replicas: 1, quorum: 1, adaptive: false };

    /// A policy, checked: `1 ≤ quorum ≤ replicas ≤ MAX_REPLICAS`.
    pub fn new(replicas: u32, quorum: u32, adaptive: bool) -> Result<Policy, PolicyError> {
        if replicas == 0 || replicas > Policy::MAX_REPLICAS {
            return Err(PolicyError(format!(
                "replicas must be 1..={}, not {replicas}",
                Policy::MAX_REPLICAS
            )));
        }
        if quorum == 0 || quorum > replicas {
            return Err(PolicyError(format!(
                "quorum must be 1..=replicas ({replicas}), not {quorum}"
            )));
        }
        Ok(Policy { replicas, quorum, adaptive })
    }

    /// Whether the policy verifies anything.
    pub fn verifies(&self) -> bool {
        self.quorum > 1 || self.replicas > 1
    }

    /// Reads `N/M`, `N/M/adaptive`, `replicas=N,quorum=M[,adaptive]`,
    /// `adaptive` (2/2 adaptive) or `off`.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let text = text.trim().to_ascii_lowercase();
        match text.as_str() {
            "off" | "none" | "1/1" => return Ok(Policy::OFF),
            "adaptive" => return Policy::new(2, 2, true),
            _ => {}
        }
        let (mut replicas, mut quorum, mut adaptive) = (None, None, false);
        let number = |v: &str| {
            v.trim().parse::<u32>().map_err(|_| PolicyError(format!("`{v}` is not a number")))
        };
        if text.contains('=') {
            for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.split_once('=') {
                    Some(("replicas", v)) => replicas = Some(number(v)?),
                    Some(("quorum", v)) => quorum = Some(number(v)?),
                    Some(("adaptive", v)) => adaptive = matches!(v.trim(), "true" | "yes" | "1"),
                    None if part == "adaptive" => adaptive = true,
                    _ => return Err(PolicyError(format!("unknown part `{part}`"))),
                }
            }
        } else {
            let mut parts = text.split('/').map(str::trim);
            replicas = parts.next().map(number).transpose()?;
            quorum = parts.next().map(number).transpose()?;
            match parts.next() {
                None => {}
                Some("adaptive" | "a") => adaptive = true,
                Some(other) => return Err(PolicyError(format!("unknown part `{other}`"))),
            }
        }
        let replicas = replicas.ok_or_else(|| PolicyError("no replica count".into()))?;
        Policy::new(replicas, quorum.unwrap_or(replicas), adaptive)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.replicas, self.quorum)?;
        if self.adaptive {
            f.write_str("/adaptive")?;
        }
        Ok(())
    }
}

/// How results of a task type are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Run replicas on distinct peers and compare their results.
    Replicate,
    /// One result can be checked on its own ([`Agreement::check`]).
    SelfCheck,
    /// Results cannot be compared (sampled output): run once, unverified.
    Unverifiable,
}

/// A task with a known answer, made by an [`Agreement`] for a canary. It
/// needs what the real work it follows needed.
#[derive(Debug, Clone)]
pub struct Canary<P> {
    pub payload: P,
    /// The answer a correct peer gives (compared with [`Agreement::agree`]).
    pub expected: P,
}

/// The agreement rules of each task type, as the shell registers them. The
/// scheduler never looks inside payloads or results; this does.
pub trait Agreement<P>: fmt::Debug + Send {
    /// How tasks of `task_type` with this payload are judged.
    fn rule(&self, task_type: &str, payload: &P) -> Rule;

    /// Whether two results of the same task agree.
    fn agree(&self, task_type: &str, payload: &P, a: &P, b: &P) -> bool;

    /// Whether one result is right on its own (for [`Rule::SelfCheck`]).
    fn check(&self, task_type: &str, payload: &P, result: &P) -> bool;

    /// A new task of `task_type` with its answer, from `seed`, when the
    /// rules can make one: as like the real work it follows (`like`, the
    /// payload just assigned to the same peer) as they can, so that the
    /// peer cannot tell the two apart.
    fn canary(&self, _task_type: &str, _like: &P, _seed: u64) -> Option<Canary<P>> {
        None
    }
}

/// The simplest agreement: every type is replicated and results agree when
/// they are equal. For tests and simulations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Equal;

impl<P: PartialEq> Agreement<P> for Equal {
    fn rule(&self, _: &str, _: &P) -> Rule {
        Rule::Replicate
    }

    fn agree(&self, _: &str, _: &P, a: &P, b: &P) -> bool {
        a == b
    }

    fn check(&self, _: &str, _: &P, _: &P) -> bool {
        false
    }
}

/// What keeps two replicas of one task apart: a peer's id, or the owner it
/// declared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AffinityKey {
    Peer(PeerId),
    Owner(Arc<str>),
}

pub use codes::{Verdict, VerifyStatus};

/// One replica of a verified task and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica<P> {
    /// The replica's own cluster id (hidden from the submitter).
    pub task: TaskId,
    /// The peer of its latest attempt.
    pub peer: Option<PeerId>,
    /// Attempts it was given.
    pub attempts: u32,
    pub result: Option<P>,
    pub failure: Option<Failure>,
    pub verdict: Verdict,
    /// The affinity keys of every peer that ran one of its attempts.
    pub(crate) keys: BTreeSet<AffinityKey>,
}

impl<P> Replica<P> {
    /// A replica as recovered from the store (its affinity keys are moot:
    /// the task has finished).
    pub fn stored(
        task: TaskId,
        peer: Option<PeerId>,
        attempts: u32,
        result: Option<P>,
        failure: Option<Failure>,
        verdict: Verdict,
    ) -> Replica<P> {
        Replica { task, peer, attempts, result, failure, verdict, keys: BTreeSet::new() }
    }

    /// Whether it still runs or waits to run.
    pub fn live(&self) -> bool {
        self.result.is_none() && self.failure.is_none()
    }
}

/// A verified task's replicas, kept on the task (and stored when it ends).
#[derive(Debug, Clone, PartialEq)]
pub struct Verification<P> {
    pub policy: Policy,
    pub rule: Rule,
    pub status: VerifyStatus,
    pub replicas: Vec<Replica<P>>,
    /// Adaptive replication decided to trust this peer's result alone.
    pub(crate) trusting: Option<PeerId>,
    /// The other replicas were created (adaptive replication decided, or
    /// the policy asks for them at once).
    pub(crate) replicated: bool,
    /// A disagreement was reported.
    pub(crate) disagreed: bool,
}

impl<P> Verification<P> {
    pub(crate) fn new(policy: Policy, rule: Rule) -> Verification<P> {
        Verification {
            policy,
            rule,
            status: VerifyStatus::Pending,
            replicas: Vec::new(),
            trusting: None,
            replicated: false,
            disagreed: false,
        }
    }

    /// A finished verification as recovered from the store.
    pub fn stored(
        policy: Policy,
        status: VerifyStatus,
        replicas: Vec<Replica<P>>,
    ) -> Verification<P> {
        Verification {
            policy,
            rule: Rule::Replicate,
            status,
            replicas,
            trusting: None,
            replicated: true,
            disagreed: false,
        }
    }

    /// The most replicas this task may run: its policy's, plus the extra
    /// allowed on disagreement (none under a self-check beyond the bound).
    pub(crate) fn budget(&self, extra: u32) -> usize {
        let base = match self.rule {
            Rule::SelfCheck => 1,
            _ => self.policy.replicas,
        };
        (base + extra) as usize
    }

    pub(crate) fn replica_mut(&mut self, task: TaskId) -> Option<&mut Replica<P>> {
        self.replicas.iter_mut().find(|r| r.task == task)
    }

    /// Replicas still running or waiting.
    pub(crate) fn live(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.replicas.iter().filter(|r| r.live()).map(|r| r.task)
    }
}

#[cfg(test)]
mod tests;
