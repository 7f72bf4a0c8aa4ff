//! The pure parts of verification: policies and the verdict on answers.

use super::*;
use crate::types::PeerId;

#[test]
fn policies_parse_in_every_documented_form() {
    let p = |r, q, a| Policy::new(r, q, a).unwrap();
    assert_eq!(Policy::parse("2/2").unwrap(), p(2, 2, false));
    assert_eq!(Policy::parse("3/2/adaptive").unwrap(), p(3, 2, true));
    assert_eq!(Policy::parse("replicas=3,quorum=2").unwrap(), p(3, 2, false));
    assert_eq!(Policy::parse("replicas=2, quorum=2, adaptive").unwrap(), p(2, 2, true));
    assert_eq!(Policy::parse("adaptive").unwrap(), p(2, 2, true));
    assert_eq!(Policy::parse("3").unwrap(), p(3, 3, false));
    assert_eq!(Policy::parse("off").unwrap(), Policy::OFF);
    assert!(!Policy::OFF.verifies() && p(2, 1, false).verifies() && p(1, 1, true).replicas == 1);
    for bad in ["", "0/0", "2/3", "17/2", "x/2", "2/2/maybe", "replicas=2,votes=2", "quorum=2"] {
        assert!(Policy::parse(bad).is_err(), "`{bad}` parsed");
    }
    for s in ["2/2", "3/2/adaptive"] {
        assert_eq!(Policy::parse(s).unwrap().to_string(), s);
    }
}

/// Results agree when equal; type `check` passes results starting `ok`.
#[derive(Debug)]
struct Rules;

impl Agreement<&'static str> for Rules {
    fn rule(&self, _: &str, _: &&'static str) -> Rule {
        Rule::Replicate
    }
    fn agree(&self, _: &str, _: &&'static str, a: &&'static str, b: &&'static str) -> bool {
        a == b
    }
    fn check(&self, _: &str, _: &&'static str, r: &&'static str) -> bool {
        r.starts_with("ok")
    }
}

fn verification(
    policy: Policy,
    rule: Rule,
    answers: &[Option<&'static str>],
) -> Verification<&'static str> {
    let mut v = Verification::new(policy, rule);
    v.replicated = true;
    for (i, a) in answers.iter().enumerate() {
        let peer = Some(PeerId::from(format!("p{i}").as_str()));
        v.replicas.push(Replica::stored(TaskId(i as u64), peer, 1, *a, None, Verdict::Pending));
    }
    v
}

fn decide(policy: &str, rule: Rule, answers: &[Option<&'static str>]) -> Decision {
    let v = verification(Policy::parse(policy).unwrap(), rule, answers);
    judge(&Rules, "t", &"payload", &v, 2)
}

#[test]
fn a_quorum_accepts_the_first_of_its_group_and_marks_the_others() {
    use Verdict::{Invalid, Valid};
    let d = decide("3/2", Rule::Replicate, &[Some("lie"), Some("A"), Some("A")]);
    let marks = vec![(0, Invalid), (1, Valid), (2, Valid)];
    assert_eq!(d, Decision::Accept { winner: 1, status: VerifyStatus::Agreed, marks });
    // A quorum of one: the first answer stands.
    let d = decide("2/1", Rule::Replicate, &[Some("A"), None]);
    let marks = vec![(0, Valid)];
    assert_eq!(d, Decision::Accept { winner: 0, status: VerifyStatus::Agreed, marks });
}

#[test]
fn disagreement_waits_for_the_live_replicas_then_asks_for_what_could_make_a_quorum() {
    assert_eq!(decide("3/3", Rule::Replicate, &[Some("A"), Some("B"), None]), Decision::Wait);
    let d = decide("2/2", Rule::Replicate, &[Some("A"), Some("B")]);
    assert_eq!(d, Decision::More { more: 1, marks: vec![] });
    let d = decide("3/3", Rule::Replicate, &[Some("A"), Some("B"), Some("A")]);
    assert_eq!(d, Decision::More { more: 1, marks: vec![] });
    // 3/3 with three different answers needs two more; the bound (3 + 2) allows them.
    let d = decide("3/3", Rule::Replicate, &[Some("A"), Some("B"), Some("C")]);
    assert_eq!(d, Decision::More { more: 2, marks: vec![] });
}

#[test]
fn past_the_bound_there_is_no_quorum_and_nobody_is_blamed() {
    let d = decide("2/2", Rule::Replicate, &[Some("A"), Some("B"), Some("C"), Some("D")]);
    let marks = (0..4).map(|i| (i, Verdict::Unjudged)).collect();
    assert_eq!(d, Decision::NoQuorum { marks });
}

#[test]
fn a_self_check_accepts_one_good_answer_and_replaces_a_bad_one_within_the_bound() {
    let d = decide("2/2", Rule::SelfCheck, &[Some("ok-1")]);
    let marks = vec![(0, Verdict::Valid)];
    assert_eq!(d, Decision::Accept { winner: 0, status: VerifyStatus::SelfChecked, marks });
    let d = decide("2/2", Rule::SelfCheck, &[Some("bad")]);
    assert_eq!(d, Decision::More { more: 1, marks: vec![(0, Verdict::Invalid)] });
    // A self-check runs one replica, plus the extra two.
    let mut v = verification(Policy::parse("2/2").unwrap(), Rule::SelfCheck, &[]);
    for (i, a) in ["bad", "bad", "bad"].into_iter().enumerate() {
        let verdict = if i < 2 { Verdict::Invalid } else { Verdict::Pending };
        v.replicas.push(Replica::stored(TaskId(i as u64), None, 1, Some(a), None, verdict));
    }
    let d = judge(&Rules, "t", &"payload", &v, 2);
    assert_eq!(d, Decision::NoQuorum { marks: vec![(2, Verdict::Invalid)] });
}

#[test]
fn a_trusted_worker_alone_is_accepted_unverified_but_only_for_its_own_answer() {
    let policy = Policy::parse("2/2/adaptive").unwrap();
    let mut v = verification(policy, Rule::Replicate, &[Some("A")]);
    v.replicated = false;
    v.trusting = Some(PeerId::from("p0"));
    let d = judge(&Rules, "t", &"payload", &v, 2);
    let marks = vec![(0, Verdict::Unverified)];
    assert_eq!(d, Decision::Accept { winner: 0, status: VerifyStatus::Trusted, marks });
    v.trusting = Some(PeerId::from("elsewhere"));
    v.replicated = true;
    let d = judge(&Rules, "t", &"payload", &v, 2);
    assert_eq!(d, Decision::More { more: 1, marks: vec![] });
}

#[test]
fn groups_are_formed_by_agreement_with_their_first_member() {
    // "Close" agreement that is not transitive: 1~2, 2~3, but not 1~3.
    let answers = [(0, &1), (1, &2), (2, &3), (3, &1)];
    let g = judge::groups(&answers, |a: &i32, b: &i32| (a - b).abs() <= 1);
    assert_eq!(g, vec![vec![0, 1, 3], vec![2]]);
}
