//! The verdict on a verified task's results so far: a pure function of the
//! replicas, the policy and the agreement rules (rules 4, 5 and 7).

use super::{Agreement, Rule, Verdict, Verification, VerifyStatus};

/// What to do after a replica answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Other replicas are still running.
    Wait,
    /// The result of replica `winner` is the task's; `marks` are the
    /// verdicts on each answered replica (by index).
    Accept { winner: usize, status: VerifyStatus, marks: Vec<(usize, Verdict)> },
    /// No verdict yet: run `more` replicas. `marks` are verdicts already
    /// certain (a failed self-check).
    More { more: usize, marks: Vec<(usize, Verdict)> },
    /// No quorum within the bound: the task fails.
    NoQuorum { marks: Vec<(usize, Verdict)> },
}

/// Judges `v` for a task of `task_type` with `payload`; `extra` is how many
/// replicas beyond the policy's may run.
pub(crate) fn judge<P>(
    rules: &dyn Agreement<P>,
    task_type: &str,
    payload: &P,
    v: &Verification<P>,
    extra: u32,
) -> Decision {
    let answered: Vec<(usize, &P)> = v
        .replicas
        .iter()
        .enumerate()
        .filter(|(_, r)| r.verdict == Verdict::Pending)
        .filter_map(|(i, r)| r.result.as_ref().map(|res| (i, res)))
        .collect();
    let room = v.replicas.len() < v.budget(extra);
    match v.rule {
        Rule::Unverifiable => match answered.first() {
            Some(&(i, _)) => accept(i, VerifyStatus::Unverifiable, vec![(i, Verdict::Unverified)]),
            None => Decision::Wait,
        },
        Rule::SelfCheck => {
            let Some(&(i, result)) = answered.last() else { return Decision::Wait };
            if rules.check(task_type, payload, result) {
                return accept(i, VerifyStatus::SelfChecked, vec![(i, Verdict::Valid)]);
            }
            let marks = vec![(i, Verdict::Invalid)];
            if room { Decision::More { more: 1, marks } } else { Decision::NoQuorum { marks } }
        }
        Rule::Replicate => replicate(rules, task_type, payload, v, &answered, room, extra),
    }
}

fn accept(winner: usize, status: VerifyStatus, marks: Vec<(usize, Verdict)>) -> Decision {
    Decision::Accept { winner, status, marks }
}

fn replicate<P>(
    rules: &dyn Agreement<P>,
    task_type: &str,
    payload: &P,
    v: &Verification<P>,
    answered: &[(usize, &P)],
    room: bool,
    extra: u32,
) -> Decision {
    // Adaptive replication trusted this replica's worker alone (rule 7).
    if !v.replicated
        && let (Some(trusted), [(i, _)]) = (&v.trusting, answered)
        && v.replicas[*i].peer.as_ref() == Some(trusted)
    {
        return accept(*i, VerifyStatus::Trusted, vec![(*i, Verdict::Unverified)]);
    }
    let groups = groups(answered, |a, b| rules.agree(task_type, payload, a, b));
    let best = groups.iter().max_by_key(|g| (g.len(), std::cmp::Reverse(g[0]))).cloned();
    let best = best.unwrap_or_default();
    if best.len() >= v.policy.quorum as usize {
        let marks = answered
            .iter()
            .map(|(i, _)| (*i, if best.contains(i) { Verdict::Valid } else { Verdict::Invalid }))
            .collect();
        return accept(best[0], VerifyStatus::Agreed, marks);
    }
    if v.live().next().is_some() {
        return Decision::Wait;
    }
    let missing = v.policy.quorum as usize - best.len();
    let left = v.budget(extra).saturating_sub(v.replicas.len());
    if room && left > 0 {
        Decision::More { more: missing.min(left), marks: Vec::new() }
    } else {
        let marks = answered.iter().map(|(i, _)| (*i, Verdict::Unjudged)).collect();
        Decision::NoQuorum { marks }
    }
}

/// Groups answers by agreement with the first of each group, in order; a
/// group is a list of replica indexes.
pub(crate) fn groups<P>(
    answered: &[(usize, &P)],
    same: impl Fn(&P, &P) -> bool,
) -> Vec<Vec<usize>> {
    let mut groups: Vec<(usize, &P, Vec<usize>)> = Vec::new();
    for &(i, result) in answered {
        match groups.iter_mut().find(|(_, first, _)| same(first, result)) {
            Some((_, _, members)) => members.push(i),
            None => groups.push((i, result, vec![i])),
        }
    }
    groups.into_iter().map(|(_, _, members)| members).collect()
}
