//! Known answers for canaries: tasks that other workers verified, kept a
//! while by type so that a worker can be asked one it never saw.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::AffinityKey;
use crate::peer::Peer;
use crate::queue::Class;

/// A task whose answer a quorum agreed on.
#[derive(Debug, Clone)]
pub(crate) struct Known<P> {
    pub class: Arc<Class>,
    /// The id its submitter gave it: a replay goes by it when it is free,
    /// so that it looks like the task it was.
    pub client_task_id: Arc<str>,
    pub payload: P,
    pub answer: P,
    pub priority: i32,
    pub run_timeout: Option<Duration>,
    /// The affinity keys of every peer that ran it: none of them gets it
    /// as a canary (they could recognise it).
    pub seen_by: BTreeSet<AffinityKey>,
}

/// The known answers, the newest `per_type` of each task type.
#[derive(Debug)]
pub(crate) struct Pool<P> {
    by_type: BTreeMap<Arc<str>, VecDeque<Known<P>>>,
    per_type: usize,
}

impl<P> Pool<P> {
    pub fn new(per_type: usize) -> Pool<P> {
        Pool { by_type: BTreeMap::new(), per_type }
    }

    pub fn push(&mut self, known: Known<P>) {
        if self.per_type == 0 {
            return;
        }
        let list = self.by_type.entry(Arc::clone(&known.class.task_type)).or_default();
        if list.len() >= self.per_type {
            list.pop_front();
        }
        list.push_back(known);
    }

    /// A known answer of `task_type` that `peer` can run and never saw;
    /// `roll` (in [0, 1)) picks among them.
    pub fn pick(&self, task_type: &str, peer: &Peer, roll: f64) -> Option<&Known<P>> {
        let keys = peer.affinity_keys();
        let fits: Vec<&Known<P>> = self
            .by_type
            .get(task_type)?
            .iter()
            .filter(|k| {
                peer.caps.can_run(&k.class) && keys.iter().all(|key| !k.seen_by.contains(key))
            })
            .collect();
        if fits.is_empty() {
            return None;
        }
        let i = ((roll * fits.len() as f64) as usize).min(fits.len() - 1);
        Some(fits[i])
    }

    #[cfg(test)]
    pub fn len(&self, task_type: &str) -> usize {
        self.by_type.get(task_type).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{PeerCaps, PeerJoin};
    use crate::task::Requirements;
    use crate::types::{ConnId, PeerId, Time};

    fn known(n: u32, seen: &str, gpu: bool) -> Known<u32> {
        let requirements = Requirements { gpu, ..Requirements::default() };
        Known {
            class: Arc::new(Class { task_type: "t".into(), requirements }),
            client_task_id: format!("c{n}").into(),
            payload: n,
            answer: n * 10,
            priority: 1,
            run_timeout: None,
            seen_by: [AffinityKey::Peer(PeerId::from(seen))].into(),
        }
    }

    #[test]
    fn a_peer_is_offered_only_what_it_can_run_and_never_saw_and_the_pool_is_bounded() {
        let mut pool = Pool::new(3);
        pool.push(known(1, "p", false));
        pool.push(known(2, "q", false));
        pool.push(known(3, "q", true));
        let p = Peer::new(
            &PeerJoin::new(PeerId::from("p"), ConnId(1), PeerCaps::default()),
            Time::ZERO,
        );
        for roll in [0.0, 0.5, 0.99] {
            assert_eq!(pool.pick("t", &p, roll).map(|k| k.payload), Some(2));
        }
        assert!(pool.pick("other", &p, 0.0).is_none());
        pool.push(known(4, "q", false));
        assert_eq!(pool.len("t"), 3, "the oldest went");
        let picks: Vec<u32> =
            [0.0, 0.99].iter().filter_map(|r| pool.pick("t", &p, *r).map(|k| k.payload)).collect();
        assert_eq!(picks, [2, 4]);
        assert!(Pool::<u32>::new(0).pick("t", &p, 0.0).is_none());
    }
}
