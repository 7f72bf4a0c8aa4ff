//! Reputation: what each worker's (and credential's) results were found to
//! be, the trust adaptive replication puts in it, and quarantine.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::config::VerifyConfig;
use crate::types::PeerId;

/// Whose reputation: a worker (by peer id), or the credential it joined
/// with when it has one of its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Worker(PeerId),
    /// The credential's identity (its digest), never the secret.
    Credential(Arc<str>),
}

impl Subject {
    /// `worker:<id>` or `credential:<digest>`, for storage.
    pub fn key(&self) -> String {
        match self {
            Subject::Worker(p) => format!("worker:{p}"),
            Subject::Credential(c) => format!("credential:{c}"),
        }
    }

    /// Reads [`Subject::key`].
    pub fn parse(key: &str) -> Option<Subject> {
        if let Some(id) = key.strip_prefix("worker:") {
            return Some(Subject::Worker(PeerId::from(id)));
        }
        key.strip_prefix("credential:").map(|c| Subject::Credential(Arc::from(c)))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// One subject's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reputation {
    /// Results found right (in a quorum, past a check, a canary answered).
    pub valid: u64,
    /// Results found wrong (outside a quorum, a failed check, a canary missed).
    pub invalid: u64,
    /// Results accepted without a check, on trust.
    pub unverified: u64,
    /// Valid results since the last invalid one (the 1/CV rule caps it).
    pub consecutive_valid: u32,
    pub canaries_passed: u64,
    pub canaries_failed: u64,
    /// Invalid results not yet forgiven, since the last clear.
    pub strikes: u32,
    pub quarantined: bool,
    /// For a worker: the credential it last joined with, so that clearing
    /// the worker clears it too.
    pub credential: Option<Arc<str>>,
}

/// What a verdict did to a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Counted,
    /// The subject just crossed the quarantine threshold.
    Quarantined,
}

/// Every subject's record. Bounded: past `max_reputations`, a subject with
/// nothing against it is forgotten to make room (it is then new again, so
/// always replicated — never trusted by default).
#[derive(Debug, Default)]
pub(crate) struct Book {
    records: BTreeMap<Subject, Reputation>,
}

/// How a result was judged, as the book records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Valid,
    Invalid,
    Unverified,
    CanaryPassed,
    CanaryFailed,
}

impl Book {
    pub fn get(&self, subject: &Subject) -> Option<&Reputation> {
        self.records.get(subject)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Subject, &Reputation)> {
        self.records.iter()
    }

    pub fn insert(&mut self, subject: Subject, record: Reputation) {
        self.records.insert(subject, record);
    }

    pub fn is_quarantined(&self, subject: &Subject) -> bool {
        self.records.get(subject).is_some_and(|r| r.quarantined)
    }

    /// Records one judged result for `subject`.
    pub fn mark(&mut self, subject: &Subject, mark: Mark, config: &VerifyConfig) -> Change {
        self.make_room(config.max_reputations);
        let r = self.records.entry(subject.clone()).or_default();
        let was = r.quarantined;
        match mark {
            Mark::Valid | Mark::CanaryPassed => {
                r.valid += 1;
                if mark == Mark::CanaryPassed {
                    r.canaries_passed += 1;
                }
                r.consecutive_valid = r.consecutive_valid.saturating_add(1);
                let forgive = config.forgive_after.max(1);
                if r.strikes > 0 && r.consecutive_valid.is_multiple_of(forgive) {
                    r.strikes -= 1;
                }
            }
            Mark::Invalid | Mark::CanaryFailed => {
                r.invalid += 1;
                if mark == Mark::CanaryFailed {
                    r.canaries_failed += 1;
                }
                r.consecutive_valid = 0;
                r.strikes += 1;
                if r.strikes >= config.quarantine_after.max(1) {
                    r.quarantined = true;
                }
            }
            Mark::Unverified => r.unverified += 1,
        }
        if r.quarantined && !was { Change::Quarantined } else { Change::Counted }
    }

    /// Links a worker to the credential it joined with.
    pub fn link(&mut self, worker: &PeerId, credential: Option<&Arc<str>>, max: usize) -> bool {
        let subject = Subject::Worker(worker.clone());
        let current = self.records.get(&subject).and_then(|r| r.credential.as_ref());
        if credential.is_none() || current == credential {
            return false;
        }
        self.make_room(max);
        self.records.entry(subject).or_default().credential = credential.cloned();
        true
    }

    /// Lifts a quarantine and resets the trust earned: the subject starts
    /// over as a new worker would. False when it was not quarantined.
    pub fn clear(&mut self, subject: &Subject) -> bool {
        let Some(r) = self.records.get_mut(subject) else { return false };
        let was = r.quarantined;
        r.quarantined = false;
        r.strikes = 0;
        r.consecutive_valid = 0;
        was
    }

    /// Whether adaptive replication may trust `subject` alone this time:
    /// `roll` (in [0, 1)) is at least 1/CV once CV ≥ `trust_after`, CV
    /// capped at `max_consecutive`.
    pub fn trusts(&self, subject: &Subject, roll: f64, config: &VerifyConfig) -> bool {
        let Some(r) = self.records.get(subject) else { return false };
        let cv = r.consecutive_valid.min(config.max_consecutive.max(1));
        !r.quarantined && cv >= config.trust_after.max(1) && roll >= 1.0 / f64::from(cv)
    }

    /// Forgets one subject with nothing against it when the book is full.
    fn make_room(&mut self, max: usize) {
        if self.records.len() < max.max(1) {
            return;
        }
        let forgettable = self
            .records
            .iter()
            .find(|(_, r)| !r.quarantined && r.strikes == 0 && r.invalid == 0)
            .map(|(s, _)| s.clone());
        if let Some(s) = forgettable {
            self.records.remove(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VerifyConfig {
        VerifyConfig {
            trust_after: 10,
            max_consecutive: 100,
            quarantine_after: 3,
            forgive_after: 100,
            ..VerifyConfig::default()
        }
    }

    #[test]
    fn trust_comes_after_ten_valid_results_and_replication_falls_as_one_over_cv() {
        let (mut book, c) = (Book::default(), config());
        let w = Subject::Worker(PeerId::from("w"));
        assert!(!book.trusts(&w, 0.99, &c), "a new worker is never trusted");
        for _ in 0..9 {
            book.mark(&w, Mark::Valid, &c);
        }
        assert!(!book.trusts(&w, 0.99, &c));
        book.mark(&w, Mark::Valid, &c);
        // CV = 10: replicated when the roll is under 1/10.
        assert!(book.trusts(&w, 0.1, &c) && !book.trusts(&w, 0.09, &c));
        for _ in 0..200 {
            book.mark(&w, Mark::Valid, &c);
        }
        // CV = 210, capped at 100 by the rule: replicated one time in a hundred.
        assert_eq!(book.get(&w).unwrap().consecutive_valid, 210);
        assert!(book.trusts(&w, 0.01, &c) && !book.trusts(&w, 0.0099, &c));
        book.mark(&w, Mark::Invalid, &c);
        assert!(!book.trusts(&w, 0.99, &c), "an invalid result resets trust");
    }

    #[test]
    fn strikes_quarantine_and_are_forgiven_slowly_and_clear_resets() {
        let (mut book, c) = (Book::default(), config());
        let w = Subject::Worker(PeerId::from("w"));
        assert_eq!(book.mark(&w, Mark::Invalid, &c), Change::Counted);
        for _ in 0..100 {
            book.mark(&w, Mark::Valid, &c);
        }
        assert_eq!(book.get(&w).unwrap().strikes, 0, "forgiven after 100 valid");
        book.mark(&w, Mark::Invalid, &c);
        book.mark(&w, Mark::Invalid, &c);
        for _ in 0..199 {
            book.mark(&w, Mark::Valid, &c);
        }
        assert_eq!(book.get(&w).unwrap().strikes, 1, "one per hundred, not one per result");
        book.mark(&w, Mark::Valid, &c);
        assert_eq!(book.get(&w).unwrap().strikes, 0);
        book.mark(&w, Mark::CanaryFailed, &c);
        book.mark(&w, Mark::Invalid, &c);
        assert_eq!(book.mark(&w, Mark::Invalid, &c), Change::Quarantined);
        assert_eq!(book.mark(&w, Mark::Invalid, &c), Change::Counted, "reported once");
        let r = book.get(&w).unwrap();
        assert!(r.quarantined && r.invalid == 7 && r.canaries_failed == 1 && r.valid == 300);
        assert!(book.clear(&w));
        assert!(!book.clear(&w), "already cleared");
        let r = book.get(&w).unwrap();
        assert!(!r.quarantined && r.strikes == 0 && r.consecutive_valid == 0 && r.invalid == 7);
    }

    #[test]
    fn a_full_book_forgets_clean_records_and_keeps_the_others() {
        let (mut book, c) = (Book::default(), VerifyConfig { max_reputations: 2, ..config() });
        let (a, b, x) = (
            Subject::Worker(PeerId::from("a")),
            Subject::Worker(PeerId::from("b")),
            Subject::Worker(PeerId::from("x")),
        );
        book.mark(&a, Mark::Invalid, &c);
        book.mark(&b, Mark::Valid, &c);
        book.mark(&x, Mark::Valid, &c);
        assert!(book.get(&a).is_some() && book.get(&b).is_none() && book.get(&x).is_some());
    }

    #[test]
    fn subjects_round_trip_their_keys() {
        for s in [Subject::Worker(PeerId::from("w:1")), Subject::Credential(Arc::from("ab12"))] {
            assert_eq!(Subject::parse(&s.key()), Some(s));
        }
        assert_eq!(Subject::parse("other:x"), None);
    }
}
