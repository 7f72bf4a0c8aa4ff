//! Trust: reputation, quarantine and canaries (rules 8 and 9 of
//! [`crate::verify`]).

use std::sync::Arc;

use super::Scheduler;
use super::peer_ids::lookalike;
use super::verifying::Hidden;
use crate::output::Event;
use crate::peer::Peer;
use crate::queue::Class;
use crate::task::{TaskKind, TaskSpec};
use crate::types::{Outcome, Owner, PeerId, TaskId, Time};
use crate::verify::{Change, Mark, Reputation, Subject};

/// Why a quarantine could not be cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearError {
    /// No worker with this id is connected or has a record.
    UnknownWorker,
}

impl<P: Clone> Scheduler<P> {
    /// Counts a judged result for a worker and its credential; quarantines
    /// it at the threshold (rule 9).
    pub(crate) fn mark(&mut self, peer: &PeerId, mark: Mark) {
        let worker = Subject::Worker(peer.clone());
        let config = &self.config.verify;
        let mut quarantine = self.verify.book.mark(&worker, mark, config) == Change::Quarantined;
        self.publish_reputation(&worker);
        if let Some(credential) = self.verify.book.get(&worker).and_then(|r| r.credential.clone()) {
            let subject = Subject::Credential(credential);
            let config = &self.config.verify;
            quarantine |= self.verify.book.mark(&subject, mark, config) == Change::Quarantined;
            self.publish_reputation(&subject);
        }
        if quarantine {
            self.quarantine(peer);
        }
    }

    fn publish_reputation(&mut self, subject: &Subject) {
        if let Some(r) = self.verify.book.get(subject) {
            let (reputation, at) = (r.clone(), self.now);
            self.events.push_back(Event::Reputation { subject: subject.clone(), reputation, at });
        }
    }

    /// Quarantines a worker: no new work until an operator clears it.
    fn quarantine(&mut self, peer: &PeerId) {
        let worker = Subject::Worker(peer.clone());
        if !self.verify.book.is_quarantined(&worker) {
            let mut r = self.verify.book.get(&worker).cloned().unwrap_or_default();
            r.quarantined = true;
            self.verify.book.insert(worker.clone(), r);
            self.publish_reputation(&worker);
        }
        self.verify.counters.quarantined += 1;
        if let Some(p) = self.peers.get_mut(peer) {
            p.quarantined = true;
        }
        self.refresh_free(peer);
        self.events.push_back(Event::Quarantined { peer: peer.clone() });
    }

    /// A joining peer: linked to its credential, and quarantined if either
    /// is.
    pub(crate) fn peer_verified_join(&mut self, peer: &mut Peer) {
        let max = self.config.verify.max_reputations;
        if self.verify.book.link(&peer.id, peer.credential.as_ref(), max) {
            self.publish_reputation(&Subject::Worker(peer.id.clone()));
        }
        let worker = Subject::Worker(peer.id.clone());
        let credential = peer.credential.clone().map(Subject::Credential);
        peer.quarantined = self.verify.book.is_quarantined(&worker)
            || credential.is_some_and(|c| self.verify.book.is_quarantined(&c));
    }

    /// An operator lifts a worker's quarantine (and its credential's). The
    /// worker starts over as a new one: always replicated until trusted
    /// again. `Ok(false)` when it was not quarantined.
    pub fn handle_clear(&mut self, now: Time, peer: &PeerId) -> Result<bool, ClearError> {
        let now = self.tick(now);
        let worker = Subject::Worker(peer.clone());
        if self.verify.book.get(&worker).is_none() && !self.peers.contains_key(peer) {
            return Err(ClearError::UnknownWorker);
        }
        let mut was = self.verify.book.clear(&worker);
        self.publish_reputation(&worker);
        let credential = self.verify.book.get(&worker).and_then(|r| r.credential.clone());
        if let Some(subject) = credential.map(Subject::Credential) {
            was |= self.verify.book.clear(&subject);
            self.publish_reputation(&subject);
        }
        if let Some(p) = self.peers.get_mut(peer) {
            was |= std::mem::replace(&mut p.quarantined, false);
        }
        self.refresh_free(peer);
        if was {
            self.events.push_back(Event::Cleared { peer: peer.clone() });
        }
        self.place(now);
        Ok(was)
    }

    /// Reputations reloaded from the store. Call before peers join.
    pub fn handle_recovered_reputation(&mut self, records: Vec<(Subject, Reputation)>) {
        for (subject, record) in records {
            self.verify.book.insert(subject, record);
        }
    }

    /// One subject's reputation.
    pub fn reputation(&self, subject: &Subject) -> Option<&Reputation> {
        self.verify.book.get(subject)
    }

    /// Every reputation kept, by subject.
    pub fn reputations(&self) -> impl Iterator<Item = (&Subject, &Reputation)> {
        self.verify.book.iter()
    }

    /// After an assignment of real work to `peer`: with `canary_rate`, a
    /// canary of the same type for the same worker (rule 8).
    pub(crate) fn maybe_canary(&mut self, now: Time, work: TaskId, peer_id: &PeerId) {
        let rate = self.config.verify.canary_rate;
        if rate <= 0.0 || self.verify.canaries.contains_key(peer_id) {
            return;
        }
        if self.verify.rng.f64() >= rate {
            return;
        }
        let Some(work) = self.tasks.get(&work).map(|t| Arc::clone(&t.spec)) else {
            return;
        };
        let Some((spec, class, expected)) = self.make_canary(now, &work, peer_id) else {
            return;
        };
        self.verify.canaries.insert(peer_id.clone(), spec.id);
        self.verify.counters.canaries += 1;
        let hidden = Hidden::Canary { peer: peer_id.clone(), expected };
        self.insert_hidden(now, spec, class, hidden, true);
    }

    /// A canary of `work`'s type that `peer_id` can run: a known answer it
    /// never saw, else one the rules make like `work`, under an id shaped
    /// like `work`'s.
    fn make_canary(
        &mut self,
        now: Time,
        work: &TaskSpec<P>,
        peer_id: &PeerId,
    ) -> Option<(Arc<TaskSpec<P>>, Arc<Class>, P)> {
        let task_type = &work.task_type;
        let peer = self.peers.get(peer_id).filter(|p| !p.quarantined)?;
        let roll = self.verify.rng.f64();
        let made = match self.verify.pool.pick(task_type, peer, roll) {
            Some(k) => {
                let (payload, answer) = (k.payload.clone(), k.answer.clone());
                (
                    Arc::clone(&k.class),
                    Some(Arc::clone(&k.client_task_id)),
                    payload,
                    answer,
                    k.priority,
                    k.run_timeout,
                )
            }
            None => {
                let seed = self.verify.rng.u64(..);
                let c = self.verify.agreement.as_deref()?.canary(task_type, &work.payload, seed)?;
                let class = Arc::new(Class {
                    task_type: Arc::clone(task_type),
                    requirements: work.requirements.clone(),
                });
                if !peer.caps.can_run(&class) {
                    return None;
                }
                let id = lookalike(&work.client_task_id, &mut self.verify.id_rng).map(Arc::from);
                (class, id, c.payload, c.expected, work.priority, work.run_timeout)
            }
        };
        let (class, client, payload, expected, priority, run_timeout) = made;
        let id = self.take_task_id();
        let client_task_id = client.unwrap_or_else(|| Arc::from(id.to_string()));
        let peer_task_id = self.claim_peer_task_id(&client_task_id, id);
        let spec = Arc::new(TaskSpec {
            id,
            owner: Owner::Api,
            client_task_id,
            peer_task_id,
            task_type: Arc::clone(task_type),
            payload,
            priority,
            requirements: class.requirements.clone(),
            run_timeout,
            queue_timeout: self.config.verify.canary_queue_timeout,
            max_attempts: 1,
            idempotency_key: None,
            submitted_at: now,
            verify: None,
            stream: false,
            submitter: None,
            kind: TaskKind::Canary { peer: peer_id.clone() },
        });
        Some((spec, class, expected))
    }

    pub(crate) fn canary_done(
        &mut self,
        _now: Time,
        spec: &TaskSpec<P>,
        peer: &PeerId,
        expected: P,
        outcome: Outcome<P>,
    ) {
        if self.verify.canaries.get(peer) == Some(&spec.id) {
            self.verify.canaries.remove(peer);
        }
        let Outcome::Completed { result, peer: by, .. } = outcome else { return };
        let Some(rules) = self.verify.agreement.as_deref() else { return };
        if &by != peer {
            return;
        }
        let passed = rules.agree(&spec.task_type, &spec.payload, &expected, &result);
        let c = &mut self.verify.counters;
        if passed {
            c.canaries_passed += 1;
        } else {
            c.canaries_failed += 1;
        }
        self.mark(peer, if passed { Mark::CanaryPassed } else { Mark::CanaryFailed });
        let task_type = Arc::clone(&spec.task_type);
        self.events.push_back(Event::CanaryAnswered { peer: peer.clone(), task_type, passed });
    }

    /// A peer left: a canary waiting for it can never run.
    pub(crate) fn peer_gone(&mut self, now: Time, peer: &PeerId) {
        if let Some(id) = self.verify.canaries.remove(peer) {
            self.stop_hidden(now, id);
        }
    }
}
