//! Verification scenarios: replicas, quorum, disagreement, self-checks,
//! adaptive replication, canaries, quarantine (see `crate::verify`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::harness::{Rules, check, check_events, check_with, config};
use crate::verify::{Policy, Subject, VerifyStatus};
use crate::{
    Command, Config, ConnId, Event, Outcome, Owner, PeerCaps, PeerId, PeerJoin, Recovered,
    RecoveredState, RunOutcome, Scheduler, Submission, TaskId, TaskState, Time, VerifyConfig,
};

fn canaries() -> Config {
    Config { verify: VerifyConfig { canary_rate: 1.0, ..VerifyConfig::default() }, ..config() }
}

#[test]
fn a_verified_task_runs_on_two_peers_and_is_delivered_once_when_they_agree() {
    // The submitter sees one task; its replicas are hidden tasks of their own. The first one goes by the
    // submitter's id, as an unverified task would; the second by an id of the same shape (so that its
    // peer cannot tell it is compared).
    check_events(
        r"
        gamer g1
        join p1
        join p2
        submit g1 physics id=frame-9 p=scene verify=2/2
        result p1 frame-9 ok=R
        result p2 frame-7 ok=R
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        join p2
          ev peer joined p2
        submit g1 physics id=frame-9 p=scene verify=2/2
          => t-1 frame-9 Assigned
          assign t-2#1 scene -> p1 (c2)
          assign t-3#1 as frame-7 scene -> p2 (c3)
          ev submitted t-1
          ev submitted t-2
          ev submitted t-3
          ev assigned t-2#1 p1
          ev assigned t-3#1 p2
        result p1 frame-9 ok=R
          => Accepted
          ev finished t-2 completed R attempts=1
        result p2 frame-7 ok=R
          => Accepted
          deliver t-1 (frame-9) to g1: completed R by p1#1 after 2
          ev finished t-3 completed R attempts=1
          ev reputation worker:p1 valid=1 invalid=0 unverified=0 cv=1 strikes=0
          ev reputation worker:p2 valid=1 invalid=0 unverified=0 cv=1 strikes=0
          ev verified t-1 agreed [t-2@p1:valid t-3@p2:valid]
          ev finished t-1 completed R attempts=2
          ev delivered t-1
        ",
    );
}

#[test]
fn a_disagreement_brings_a_third_replica_on_a_third_peer_and_the_liar_is_marked() {
    check_events(
        r"
        gamer g1
        join p1
        join p2
        join p3
        submit g1 physics id=f p=scene verify=2/2
        result p1 f ok=R
        result p2 t-3 ok=LIE
        result p3 t-4 ok=R
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        join p2
          ev peer joined p2
        join p3
          ev peer joined p3
        submit g1 physics id=f p=scene verify=2/2
          => t-1 f Assigned
          assign t-2#1 scene -> p1 (c2)
          assign t-3#1 as t-3 scene -> p2 (c3)
          ev submitted t-1
          ev submitted t-2
          ev submitted t-3
          ev assigned t-2#1 p1
          ev assigned t-3#1 p2
        result p1 f ok=R
          => Accepted
          ev finished t-2 completed R attempts=1
        result p2 t-3 ok=LIE
          => Accepted
          assign t-4#1 scene -> p3 (c4)
          ev finished t-3 completed LIE attempts=1
          ev disagreed t-1
          ev submitted t-4
          ev assigned t-4#1 p3
        result p3 t-4 ok=R
          => Accepted
          deliver t-1 (f) to g1: completed R by p1#1 after 3
          ev finished t-4 completed R attempts=1
          ev reputation worker:p1 valid=1 invalid=0 unverified=0 cv=1 strikes=0
          ev reputation worker:p2 valid=0 invalid=1 unverified=0 cv=0 strikes=1
          ev reputation worker:p3 valid=1 invalid=0 unverified=0 cv=1 strikes=0
          ev verified t-1 agreed [t-2@p1:valid t-3@p2:invalid t-4@p3:valid]
          ev finished t-1 completed R attempts=3
          ev delivered t-1
        ",
    );
}

#[test]
fn replicas_wait_for_distinct_peers_and_say_so() {
    // With one peer the second replica can never run: the task times out in the queue, saying why.
    check(
        r"
        gamer g1
        join p1 slots=2
        submit g1 physics id=f verify=2/2 qtimeout=10s
        result p1 f ok=R
        at 11s
        ",
        r"
        gamer g1
        join p1 slots=2
        submit g1 physics id=f verify=2/2 qtimeout=10s
          => t-1 f Assigned
          assign t-2#1 x -> p1 (c2)
        result p1 f ok=R
          => Accepted
        at 11s
          deliver t-1 (f) to g1: timed_out queue_timeout: waited 11.0 s in the queue without starting (waiting for a worker apart from those of its other replicas (verify 2/2): 1 capable worker(s) connected, all already used) after 1
        ",
    );
}

#[test]
fn replicas_keep_apart_from_peers_of_the_same_owner() {
    check(
        r"
        gamer g1
        join p1 owner=alice
        join p2 owner=alice
        join p3
        submit g1 echo id=e verify=2/2
        ",
        r"
        gamer g1
        join p1 owner=alice
        join p2 owner=alice
        join p3
        submit g1 echo id=e verify=2/2
          => t-1 e Assigned
          assign t-2#1 x -> p1 (c2)
          assign t-3#1 as t-3 x -> p3 (c4)
        ",
    );
}

#[test]
fn past_the_bound_of_extra_replicas_the_task_fails_with_no_quorum() {
    // Every result is kept on the task (see `no_quorum_keeps_every_result`).
    check_events(
        r"
        gamer g1
        join p1
        join p2
        join p3
        join p4
        submit g1 echo id=e verify=2/2
        result p1 e ok=A
        result p2 t-3 ok=B
        result p3 t-4 ok=C
        result p4 t-5 ok=D
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        join p2
          ev peer joined p2
        join p3
          ev peer joined p3
        join p4
          ev peer joined p4
        submit g1 echo id=e verify=2/2
          => t-1 e Assigned
          assign t-2#1 x -> p1 (c2)
          assign t-3#1 as t-3 x -> p2 (c3)
          ev submitted t-1
          ev submitted t-2
          ev submitted t-3
          ev assigned t-2#1 p1
          ev assigned t-3#1 p2
        result p1 e ok=A
          => Accepted
          ev finished t-2 completed A attempts=1
        result p2 t-3 ok=B
          => Accepted
          assign t-4#1 x -> p3 (c4)
          ev finished t-3 completed B attempts=1
          ev disagreed t-1
          ev submitted t-4
          ev assigned t-4#1 p3
        result p3 t-4 ok=C
          => Accepted
          assign t-5#1 x -> p4 (c5)
          ev finished t-4 completed C attempts=1
          ev submitted t-5
          ev assigned t-5#1 p4
        result p4 t-5 ok=D
          => Accepted
          deliver t-1 (e) to g1: failed no_quorum: 4 replicas did not agree; every result is kept on the task after 4
          ev finished t-5 completed D attempts=1
          ev verified t-1 no_quorum [t-2@p1:unjudged t-3@p2:unjudged t-4@p3:unjudged t-5@p4:unjudged]
          ev finished t-1 failed no_quorum: 4 replicas did not agree; every result is kept on the task attempts=4
          ev delivered t-1
        ",
    );
}

#[test]
fn a_replica_failure_is_the_task_failure_and_the_other_replica_is_stopped() {
    check(
        r"
        gamer g1
        join p1
        join p2
        submit g1 echo id=e verify=2/2
        result p1 e err=invalid_input
        result p2 t-3 ok=X
        ",
        r"
        gamer g1
        join p1
        join p2
        submit g1 echo id=e verify=2/2
          => t-1 e Assigned
          assign t-2#1 x -> p1 (c2)
          assign t-3#1 as t-3 x -> p2 (c3)
        result p1 e err=invalid_input
          => Accepted
          cancel t-3#1 on p2 (cancelled)
          deliver t-1 (e) to g1: failed invalid_input: boom after 2
        result p2 t-3 ok=X
          => Stale
        ",
    );
}

#[test]
fn cancelling_a_verified_task_stops_its_replicas_which_cannot_be_named() {
    // A replica's id is not the submitter's to cancel; a late result is stale.
    check(
        r"
        gamer g1
        join p1
        join p2
        submit g1 echo id=e verify=2/2
        cancel g1 t-1
        cancel g1 t-2
        result p1 e ok=X
        ",
        r"
        gamer g1
        join p1
        join p2
        submit g1 echo id=e verify=2/2
          => t-1 e Assigned
          assign t-2#1 x -> p1 (c2)
          assign t-3#1 as t-3 x -> p2 (c3)
        cancel g1 t-1
          => Ok(())
          cancel t-2#1 on p1 (cancelled)
          cancel t-3#1 on p2 (cancelled)
          deliver t-1 (e) to g1: cancelled after 2
        cancel g1 t-2
          => Err(UnknownTask)
        result p1 e ok=X
          => Stale
        ",
    );
}

#[test]
fn a_self_checked_type_runs_once_and_again_elsewhere_when_the_check_fails() {
    check_events(
        r"
        gamer g1
        join p1
        join p2
        submit g1 selfcheck id=m verify=2/2
        result p1 m ok=bad
        result p2 t-3 ok=ok-C
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        join p2
          ev peer joined p2
        submit g1 selfcheck id=m verify=2/2
          => t-1 m Assigned
          assign t-2#1 x -> p1 (c2)
          ev submitted t-1
          ev submitted t-2
          ev assigned t-2#1 p1
        result p1 m ok=bad
          => Accepted
          assign t-3#1 x -> p2 (c3)
          ev finished t-2 completed bad attempts=1
          ev reputation worker:p1 valid=0 invalid=1 unverified=0 cv=0 strikes=1
          ev disagreed t-1
          ev submitted t-3
          ev assigned t-3#1 p2
        result p2 t-3 ok=ok-C
          => Accepted
          deliver t-1 (m) to g1: completed ok-C by p2#1 after 2
          ev finished t-3 completed ok-C attempts=1
          ev reputation worker:p2 valid=1 invalid=0 unverified=0 cv=1 strikes=0
          ev verified t-1 self_checked [t-2@p1:invalid t-3@p2:valid]
          ev finished t-1 completed ok-C attempts=2
          ev delivered t-1
        ",
    );
}

#[test]
fn an_unverifiable_type_runs_once_and_counts_as_unverified() {
    check_events(
        r"
        gamer g1
        join p1
        submit g1 sampled id=s verify=2/2
        result p1 s ok=text
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        submit g1 sampled id=s verify=2/2
          => t-1 s Assigned
          assign t-2#1 x -> p1 (c2)
          ev submitted t-1
          ev submitted t-2
          ev assigned t-2#1 p1
        result p1 s ok=text
          => Accepted
          deliver t-1 (s) to g1: completed text by p1#1 after 1
          ev finished t-2 completed text attempts=1
          ev reputation worker:p1 valid=0 invalid=0 unverified=1 cv=0 strikes=0
          ev verified t-1 unverifiable [t-2@p1:unverified]
          ev finished t-1 completed text attempts=1
          ev delivered t-1
        ",
    );
}

#[test]
fn a_generated_canary_follows_real_work_and_a_wrong_answer_is_a_strike() {
    // At most one canary per worker is outstanding; the next real task brings the next.
    check_with(
        canaries(),
        true,
        r"
        gamer g1
        join p1
        submit g1 gen id=real p=job
        result p1 real ok=done
        result p1 t-2 ok=41
        submit g1 gen id=real2 p=job2
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        submit g1 gen id=real p=job
          => t-1 real Assigned
          assign t-1#1 job -> p1 (c2)
          ev submitted t-1
          ev assigned t-1#1 p1
          ev submitted t-2
        result p1 real ok=done
          => Accepted
          deliver t-1 (real) to g1: completed done by p1#1 after 1
          assign t-2#1 canary -> p1 (c2)
          ev finished t-1 completed done attempts=1
          ev delivered t-1
          ev assigned t-2#1 p1
        result p1 t-2 ok=41
          => Accepted
          ev finished t-2 completed 41 attempts=1
          ev reputation worker:p1 valid=0 invalid=1 unverified=0 cv=0 strikes=1
          ev canary p1 failed
        submit g1 gen id=real2 p=job2
          => t-3 real2 Assigned
          assign t-3#1 job2 -> p1 (c2)
          ev submitted t-3
          ev assigned t-3#1 p1
          ev submitted t-4
        ",
    );
}

#[test]
fn a_generated_canary_looks_like_the_work_it_follows() {
    // Its id has the shape of the real task's, its payload is the rules' copy
    // of the real one, its priority and needs are the real one's: nothing
    // on the wire tells the two apart.
    for real_id in ["frame-0412", "3f2a9c1e-7b4d-4e0f-9a8b-1c2d3e4f5a6b", "job"] {
        let mut s = Scheduler::new(canaries(), Time::ZERO);
        s.set_agreement(Box::new(Rules));
        s.handle_gamer_joined(Time::ZERO, "g".into(), ConnId(1));
        let caps = PeerCaps { slots: 4, ..PeerCaps::default() };
        s.handle_peer_joined(Time::ZERO, PeerJoin::new(PeerId::from("p1"), ConnId(2), caps));
        let mut sub = Submission::new(Owner::Gamer("g".into()), "gen", "job".to_owned());
        sub.client_task_id = Some(Arc::from(real_id));
        sub.priority = 5;
        s.handle_submit(Time::ZERO, sub).unwrap();
        let assigned: Vec<_> = std::iter::from_fn(|| s.poll_command())
            .filter_map(|c| match c {
                Command::Assign { task, .. } => Some(task),
                _ => None,
            })
            .collect();
        let [real, canary] = &assigned[..] else { panic!("{real_id}: {assigned:?}") };
        assert_eq!(&*real.peer_task_id, real_id);
        assert!(matches!(canary.kind, crate::TaskKind::Canary { .. }), "{canary:?}");
        let seen = &*canary.peer_task_id;
        assert_eq!(canary.payload, "canary");
        assert_eq!(canary.priority, 5);
        match real_id {
            "job" => assert_eq!(seen, canary.id.to_string(), "nothing to vary: its cluster id"),
            _ => {
                assert_ne!(seen, real_id);
                assert_eq!(seen.len(), real_id.len());
                let shape =
                    |id: &str| id.chars().map(|c| c.is_ascii_hexdigit()).collect::<Vec<_>>();
                let letters = |id: &str| id.replace(|c: char| c.is_ascii_hexdigit(), "#");
                if real_id.contains('-') && real_id.len() == 36 {
                    assert_eq!(shape(seen), shape(real_id), "{seen}");
                } else {
                    assert_eq!(letters(seen), letters(real_id), "{seen}");
                }
            }
        }
    }
}

#[test]
fn a_canary_replays_a_task_others_verified_under_its_original_id() {
    // p3 never saw task `e`: it gets it back as a canary, under the id `e`.
    check_with(
        canaries(),
        true,
        r"
        gamer g1
        join p1
        join p2
        submit g1 echo id=e p=hello verify=2/2
        result p1 e ok=hello
        result p2 t-3 ok=hello
        join p3
        submit g1 echo id=other p=x
        result p3 other ok=x
        result p3 e ok=wrong
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        join p2
          ev peer joined p2
        submit g1 echo id=e p=hello verify=2/2
          => t-1 e Assigned
          assign t-2#1 hello -> p1 (c2)
          assign t-3#1 as t-3 hello -> p2 (c3)
          ev submitted t-1
          ev submitted t-2
          ev submitted t-3
          ev assigned t-2#1 p1
          ev assigned t-3#1 p2
        result p1 e ok=hello
          => Accepted
          ev finished t-2 completed hello attempts=1
        result p2 t-3 ok=hello
          => Accepted
          deliver t-1 (e) to g1: completed hello by p1#1 after 2
          ev finished t-3 completed hello attempts=1
          ev reputation worker:p1 valid=1 invalid=0 unverified=0 cv=1 strikes=0
          ev reputation worker:p2 valid=1 invalid=0 unverified=0 cv=1 strikes=0
          ev verified t-1 agreed [t-2@p1:valid t-3@p2:valid]
          ev finished t-1 completed hello attempts=2
          ev delivered t-1
        join p3
          ev peer joined p3
        submit g1 echo id=other p=x
          => t-4 other Assigned
          assign t-4#1 x -> p3 (c4)
          ev submitted t-4
          ev assigned t-4#1 p3
          ev submitted t-5
        result p3 other ok=x
          => Accepted
          deliver t-4 (other) to g1: completed x by p3#1 after 1
          assign t-5#1 hello -> p3 (c4)
          ev finished t-4 completed x attempts=1
          ev delivered t-4
          ev assigned t-5#1 p3
        result p3 e ok=wrong
          => Accepted
          ev finished t-5 completed wrong attempts=1
          ev reputation worker:p3 valid=0 invalid=1 unverified=0 cv=0 strikes=1
          ev canary p3 failed
        ",
    );
}

/// How a simulated peer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Honesty {
    Honest,
    /// Always wrong.
    Liar,
    /// Right on verified tasks' replicas, wrong on everything else (it
    /// knows, as no real peer can, which is which).
    Sly,
    /// Wrong in a way of its own (no two of them agree).
    Odd,
}

/// A scheduler with peers that answer every assignment at once: an
/// honest peer returns the payload, a liar something else.
struct Fleet {
    s: Scheduler<String>,
    now: u64,
    conns: BTreeMap<PeerId, (ConnId, Honesty)>,
    delivered: BTreeMap<TaskId, Outcome<String>>,
    assigned: BTreeMap<PeerId, u32>,
    events: Vec<Event<String>>,
}

impl Fleet {
    /// Round robin, so that every peer gets work (under ADAPTIVE a peer
    /// never measured ties with the others and may lose every tie).
    fn new(config: Config) -> Fleet {
        let config = Config { strategy: crate::Strategy::RoundRobin, ..config };
        let mut s = Scheduler::new(config, Time::ZERO);
        s.set_agreement(Box::new(Rules));
        s.handle_gamer_joined(Time::ZERO, "g".into(), ConnId(0));
        let (conns, delivered, assigned) = Default::default();
        Fleet { s, now: 0, conns, delivered, assigned, events: Vec::new() }
    }

    fn join(&mut self, id: &str, honesty: Honesty) {
        let conn = ConnId(self.conns.len() as u64 + 1);
        let caps = PeerCaps { slots: 4, ..PeerCaps::default() };
        self.conns.insert(PeerId::from(id), (conn, honesty));
        let at = self.at();
        self.s.handle_peer_joined(at, PeerJoin::new(PeerId::from(id), conn, caps));
        self.settle();
    }

    fn at(&mut self) -> Time {
        self.now += 1000;
        Time::from_micros(self.now)
    }

    fn submit(&mut self, task_type: &str, payload: &str, verify: Option<&str>) -> TaskId {
        let mut sub = Submission::new(Owner::Gamer("g".into()), task_type, payload.to_owned());
        sub.verify = verify.map(|v| Policy::parse(v).unwrap());
        let at = self.at();
        let id = self.s.handle_submit(at, sub).unwrap().id;
        self.settle();
        id
    }

    /// Answers every assignment until nothing is left to do.
    fn settle(&mut self) {
        while let Some(cmd) = self.s.poll_command() {
            match cmd {
                Command::Assign { conn, peer, task, attempt } => {
                    *self.assigned.entry(peer.clone()).or_default() += 1;
                    let honesty = self.conns[&peer].1;
                    let replica = matches!(task.kind, crate::TaskKind::Replica { .. });
                    let answer = match honesty {
                        Honesty::Honest => task.payload.clone(),
                        Honesty::Sly if replica => task.payload.clone(),
                        Honesty::Liar | Honesty::Sly => format!("lie-{}", task.payload),
                        Honesty::Odd => format!("{peer}-{}", task.payload),
                    };
                    let at = self.at();
                    let done = RunOutcome::Completed(answer);
                    let _ = self.s.handle_result(at, &peer, conn, task.id, Some(attempt), done);
                }
                Command::Deliver { task, outcome, .. } => {
                    assert!(self.delivered.insert(task.id, outcome).is_none(), "delivered twice");
                }
                _ => {}
            }
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    /// The result delivered for `id`, if it completed.
    fn result(&self, id: TaskId) -> Option<String> {
        match self.delivered.get(&id)? {
            Outcome::Completed { result, .. } => Some(result.clone()),
            _ => None,
        }
    }

    fn quarantined(&self, peer: &str) -> bool {
        self.s.peer(peer).is_some_and(crate::Peer::quarantined)
    }
}

#[test]
fn a_liar_is_outvoted_every_time_and_ends_quarantined_then_an_operator_clears_it() {
    let mut f = Fleet::new(config());
    f.join("liar", Honesty::Liar);
    f.join("h1", Honesty::Honest);
    f.join("h2", Honesty::Honest);
    let mut n = 0;
    while !f.quarantined("liar") {
        n += 1;
        assert!(
            n < 50,
            "the liar was never quarantined: {:?} {:?}",
            f.assigned,
            f.s.reputation(&Subject::Worker(PeerId::from("liar")))
        );
        let id = f.submit("echo", &format!("job{n}"), Some("2/2"));
        assert_eq!(f.result(id), Some(format!("job{n}")));
    }
    let r = f.s.reputation(&Subject::Worker(PeerId::from("liar"))).unwrap().clone();
    assert!(r.quarantined && r.invalid == 3 && r.valid == 0, "{r:?}");
    assert!(
        f.events
            .iter()
            .any(|e| matches!(e, Event::Quarantined { peer } if peer.as_str() == "liar"))
    );
    // No new work for it; the others carry on (each task still gets two replicas).
    let before = f.assigned.get(&PeerId::from("liar")).copied();
    for i in 0..5 {
        let id = f.submit("echo", &format!("after{i}"), Some("2/2"));
        assert_eq!(f.result(id), Some(format!("after{i}")));
    }
    assert_eq!(f.assigned.get(&PeerId::from("liar")).copied(), before);
    // An operator clears it: it works again, as a new worker (always replicated).
    let at = f.at();
    assert_eq!(f.s.handle_clear(at, &PeerId::from("liar")), Ok(true));
    assert!(!f.quarantined("liar"));
    let r = f.s.reputation(&Subject::Worker(PeerId::from("liar"))).unwrap();
    assert_eq!((r.strikes, r.consecutive_valid, r.invalid), (0, 0, 3));
    for i in 0..3 {
        f.submit("echo", &format!("cleared{i}"), Some("2/2"));
    }
    assert!(f.assigned[&PeerId::from("liar")] > before.unwrap_or(0));
}

#[test]
fn adaptive_replication_replicates_new_workers_then_trusts_them_one_in_cv() {
    let mut f = Fleet::new(config());
    for i in 0..4 {
        f.join(&format!("h{i}"), Honesty::Honest);
    }
    // New workers are always replicated: no worker can have ten valid
    // results before ten tasks have run twice.
    for i in 0..10 {
        f.submit("echo", &format!("warm{i}"), Some("2/2/adaptive"));
    }
    let c = f.s.counters().verify;
    assert_eq!((c.replicas, c.extra_replicas, c.trusted), (20, 10, 0), "{c:?}");
    // Once trusted, a worker's work is replicated with probability 1/CV.
    let tasks = 2000;
    for i in 0..tasks {
        let id = f.submit("echo", &format!("job{i}"), Some("2/2/adaptive"));
        assert_eq!(f.result(id), Some(format!("job{i}")));
    }
    let after = f.s.counters().verify;
    let extra = after.extra_replicas - c.extra_replicas;
    let trusted = after.trusted - c.trusted;
    assert_eq!(extra + trusted, tasks, "each task is either replicated or trusted");
    let ratio = extra as f64 / tasks as f64;
    assert!(ratio > 0.01 && ratio < 0.15, "extra work {ratio:.3}");
    for i in 0..4 {
        let r = f.s.reputation(&Subject::Worker(PeerId::from(format!("h{i}").as_str()))).unwrap();
        assert!(r.consecutive_valid >= 10 && r.unverified > 0 && r.invalid == 0, "{r:?}");
    }
}

#[test]
fn a_canary_catches_a_liar_that_is_right_on_every_replica() {
    let config =
        Config { verify: VerifyConfig { canary_rate: 0.2, ..VerifyConfig::default() }, ..config() };
    let mut f = Fleet::new(config);
    f.join("sly", Honesty::Sly);
    f.join("h1", Honesty::Honest);
    f.join("h2", Honesty::Honest);
    let mut n = 0;
    while !f.quarantined("sly") {
        n += 1;
        assert!(n < 500, "the sly liar was never caught");
        // Verified work, on which it is always right, and plain work.
        let id = f.submit("echo", &format!("v{n}"), Some("2/2"));
        assert_eq!(f.result(id), Some(format!("v{n}")), "a verified task got a wrong result");
        f.submit("gen", &format!("g{n}"), None);
    }
    let sly = f.s.reputation(&Subject::Worker(PeerId::from("sly"))).unwrap();
    assert_eq!((sly.invalid, sly.canaries_failed), (3, 3), "{sly:?}");
    // The honest peers pass theirs.
    for i in 0..50 {
        f.submit("echo", &format!("w{i}"), Some("2/2"));
        f.submit("gen", &format!("x{i}"), None);
    }
    for h in ["h1", "h2"] {
        let r = f.s.reputation(&Subject::Worker(PeerId::from(h))).unwrap();
        assert!(r.strikes == 0 && r.canaries_failed == 0 && !r.quarantined, "{r:?}");
    }
    let c = f.s.counters().verify;
    assert!(c.canaries_failed == 3 && c.canaries_passed > 0 && c.disagreed == 0, "{c:?}");
}

#[test]
fn no_quorum_keeps_every_result_on_the_task() {
    let mut f = Fleet::new(config());
    for i in 0..4 {
        f.join(&format!("liar{i}"), Honesty::Liar);
    }
    // Four liars: every answer differs from the others? No: all say
    // `lie-x`, so they agree — a colluding majority wins (documented).
    let id = f.submit("echo", "x", Some("2/2"));
    assert_eq!(f.result(id), Some("lie-x".to_owned()));
    // Four peers each wrong in its own way: 2 replicas, then 2 more, and no
    // two answers agree.
    let mut f = Fleet::new(config());
    for i in 0..4 {
        f.join(&format!("odd{i}"), Honesty::Odd);
    }
    let id = f.submit("echo", "y", Some("2/2"));
    let task = f.s.task(id).unwrap();
    assert_eq!(task.status(), TaskState::Failed);
    let v = task.verification().unwrap();
    assert_eq!(v.status, VerifyStatus::NoQuorum);
    let results: BTreeSet<_> = v.replicas.iter().filter_map(|r| r.result.clone()).collect();
    let expect: BTreeSet<String> = (0..4).map(|i| format!("odd{i}-y")).collect();
    assert_eq!(results, expect);
    assert!(
        matches!(f.delivered.get(&id), Some(Outcome::Failed(e)) if e.code == crate::FailureCode::NO_QUORUM)
    );
}

#[test]
fn a_task_still_verifying_at_a_restart_starts_its_verification_over() {
    let mut f = Fleet::new(config());
    let id = f.submit("echo", "x", Some("2/2"));
    let spec = f
        .events
        .iter()
        .find_map(|e| match e {
            Event::TaskSubmitted { task } if task.id == id => Some(task.as_ref().clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(spec.verify, Some(Policy::parse("2/2").unwrap()));
    let stored = Recovered {
        spec,
        attempts: 0,
        failures: 0,
        last_error: None,
        history: Vec::new(),
        state: RecoveredState::Waiting,
        verification: None,
    };
    let mut again = Fleet::new(config());
    again.s.handle_recovered(Time::ZERO, vec![stored]);
    again.s.set_next_task_id(id.0);
    assert_eq!(again.s.task(id).unwrap().status(), TaskState::Queued);
    again.join("a", Honesty::Honest);
    again.join("b", Honesty::Honest);
    assert_eq!(again.result(id), Some("x".to_owned()));
    let v = again.s.task(id).unwrap().verification().unwrap();
    assert_eq!((v.status, v.replicas.len()), (VerifyStatus::Agreed, 2));
    // New replica ids come after every id the old run could have used.
    assert!(v.replicas.iter().all(|r| r.task > id));
    let _ = Arc::clone(&again.s.task(id).unwrap().spec().task_type);
}
