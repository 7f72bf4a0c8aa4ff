//! Failover, fencing, retries, cancellation, timeouts, idempotency, limits.

use std::time::Duration;

use super::harness::{World, check, check_events, check_with, config};
use crate::{
    Attempt, AttemptEnd, AttemptRecord, Config, Failure, GamerId, Outcome, Owner, PeerId,
    Recovered, RecoveredState, Requirements, TaskId, TaskSpec, TaskState, Time,
};

#[test]
fn a_closed_connection_requeues_at_once_and_a_late_result_is_stale() {
    check_events(
        r"
        gamer g1
        join p1
        join p2 types=none
        submit g1 echo id=a
        leave p1
        at 2s
        join p3
        join p1
        result p1 t-1#1 ok=LATE
        result p3 t-1 ok=GOOD
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        join p2 types=none
          ev peer joined p2
        submit g1 echo id=a
          => t-1 a Assigned
          assign t-1#1 x -> p1 (c2)
          ev submitted t-1
          ev assigned t-1#1 p1
        leave p1
          ev requeued t-1#1 peer_lost failures=1
          ev peer left p1 disconnected
        at 2s
        join p3
          assign t-1#2 x -> p3 (c4)
          ev peer joined p3
          ev assigned t-1#2 p3
        join p1
          ev peer joined p1
        result p1 t-1#1 ok=LATE
          => Stale
          ev stale t-1#1 from p1
        result p3 t-1 ok=GOOD
          => Accepted
          deliver t-1 (a) to g1: completed GOOD by p3#2 after 2
          ev finished t-1 completed GOOD attempts=2
          ev delivered t-1
        ",
    );
}

#[test]
fn peer_failures_count_against_max_attempts() {
    check(
        r"
        gamer g1
        submit g1 echo id=a attempts=2
        join p1
        leave p1
        at 5s
        join p2
        leave p2
        ",
        r"
        gamer g1
        submit g1 echo id=a attempts=2
          => t-1 a Queued (no capable peer: no peer is connected (needs task type `echo`))
        join p1
          assign t-1#1 x -> p1 (c2)
        leave p1
        at 5s
        join p2
          assign t-1#2 x -> p2 (c3)
        leave p2
          deliver t-1 (a) to g1: failed attempts_exhausted: failed 2 attempts (max_attempts 2); last error: peer_lost: peer p2 was lost while running the task after 2
        ",
    );
}

#[test]
fn executor_errors_are_returned_without_retry_and_retryable_ones_retry() {
    check(
        r"
        gamer g1
        join p1 slots=2
        submit g1 echo id=bad
        submit g1 echo id=flaky
        result p1 t-1 err=invalid_input
        result p1 t-2 err=internal:retry
        at 2s
        result p1 t-2#2 ok=FINE
        ",
        r"
        gamer g1
        join p1 slots=2
        submit g1 echo id=bad
          => t-1 bad Assigned
          assign t-1#1 x -> p1 (c2)
        submit g1 echo id=flaky
          => t-2 flaky Assigned
          assign t-2#1 x -> p1 (c2)
        result p1 t-1 err=invalid_input
          => Accepted
          deliver t-1 (bad) to g1: failed invalid_input: boom after 1
        result p1 t-2 err=internal:retry
          => Accepted
        at 2s
          assign t-2#2 x -> p1 (c2)
        result p1 t-2#2 ok=FINE
          => Accepted
          deliver t-2 (flaky) to g1: completed FINE by p1#2 after 2
        ",
    );
}

#[test]
fn a_reconnecting_peer_replaces_its_session_and_keeps_what_it_claims() {
    check(
        r"
        join p1 slots=3
        submit g1 echo p=a
        submit g1 echo p=b
        join p1 slots=3 running=t-1#1,t-9#4
        hb p1
        at 2s
        ",
        r"
        join p1 slots=3
        submit g1 echo p=a
          => t-1 t-1 Assigned
          assign t-1#1 a -> p1 (c1)
        submit g1 echo p=b
          => t-2 t-2 Assigned
          assign t-2#1 b -> p1 (c1)
        join p1 slots=3 running=t-1#1,t-9#4
          => Joined { replaced: true, stale: [(TaskId(9), Attempt(4))] }
          close peer c1 (replaced by a new session)
        hb p1
        at 2s
          assign t-2#2 b -> p1 (c2)
        ",
    );
}

#[test]
fn a_peer_that_reconnects_after_a_drop_reclaims_its_running_task() {
    check_events(
        r"
        gamer g1
        join p1
        submit g1 echo id=a
        leave p1
        join p1 running=t-1#1
        result p1 t-1#1 ok=A
        ",
        r"
        gamer g1
          ev gamer joined g1
        join p1
          ev peer joined p1
        submit g1 echo id=a
          => t-1 a Assigned
          assign t-1#1 x -> p1 (c2)
          ev submitted t-1
          ev assigned t-1#1 p1
        leave p1
          ev requeued t-1#1 peer_lost failures=1
          ev peer left p1 disconnected
        join p1 running=t-1#1
          ev reclaimed t-1#1 p1
          ev peer joined p1
        result p1 t-1#1 ok=A
          => Accepted
          deliver t-1 (a) to g1: completed A by p1#1 after 1
          ev finished t-1 completed A attempts=1
          ev delivered t-1
        ",
    );
}

#[test]
fn cancellation_queued_running_and_races() {
    check(
        r"
        gamer g1
        join p1
        submit g1 echo id=run
        submit g1 echo id=wait
        cancel g1 t-2
        cancel g2 t-1
        cancel g1 t-1
        submit g1 echo id=next
        result p1 t-1 ok=TOO_LATE
        cancel g1 t-1
        ",
        r"
        gamer g1
        join p1
        submit g1 echo id=run
          => t-1 run Assigned
          assign t-1#1 x -> p1 (c2)
        submit g1 echo id=wait
          => t-2 wait Queued
        cancel g1 t-2
          => Ok(())
          deliver t-2 (wait) to g1: cancelled after 0
        cancel g2 t-1
          => Err(NotOwner)
        cancel g1 t-1
          => Ok(())
          cancel t-1#1 on p1 (cancelled)
          deliver t-1 (run) to g1: cancelled after 1
        submit g1 echo id=next
          => t-3 next Queued
        result p1 t-1 ok=TOO_LATE
          => Stale
          assign t-3#1 x -> p1 (c2)
        cancel g1 t-1
          => Err(AlreadyFinished(Cancelled))
        ",
    );
}

#[test]
fn a_result_that_wins_the_race_makes_the_cancel_fail() {
    check(
        r"
        gamer g1
        join p1
        submit g1 echo id=a
        result p1 t-1 ok=A
        cancel g1 t-1
        ",
        r"
        gamer g1
        join p1
        submit g1 echo id=a
          => t-1 a Assigned
          assign t-1#1 x -> p1 (c2)
        result p1 t-1 ok=A
          => Accepted
          deliver t-1 (a) to g1: completed A by p1#1 after 1
        cancel g1 t-1
          => Err(AlreadyFinished(Completed))
        ",
    );
}

#[test]
fn a_cancelled_run_keeps_its_slot_until_the_peer_confirms_or_grace_passes() {
    check(
        r"
        join p1
        submit api echo p=a
        submit api echo p=b
        cancel api t-1
        at 10s
        hb p1
        at 14s
        hb p1
        at 15s
        ",
        r"
        join p1
        submit api echo p=a
          => t-1 t-1 Assigned
          assign t-1#1 a -> p1 (c1)
        submit api echo p=b
          => t-2 t-2 Queued
        cancel api t-1
          => Ok(())
          cancel t-1#1 on p1 (cancelled)
        at 10s
        hb p1
        at 14s
        hb p1
        at 15s
          assign t-2#1 b -> p1 (c1)
        ",
    );
}

#[test]
fn run_timeout_and_queue_timeout() {
    check(
        r"
        gamer g1
        join p1
        submit g1 sleep id=slow timeout=10s
        submit g1 echo id=stuck qtimeout=5s
        at 6s
        at 10s
        hb p1
        at 14s
        hb p1
        at 15s
        result p1 t-1 err=timed_out
        ",
        r"
        gamer g1
        join p1
        submit g1 sleep id=slow timeout=10s
          => t-1 slow Assigned
          assign t-1#1 x -> p1 (c2)
        submit g1 echo id=stuck qtimeout=5s
          => t-2 stuck Queued
        at 6s
          deliver t-2 (stuck) to g1: timed_out queue_timeout: waited 6.0 s in the queue without starting after 0
        at 10s
        hb p1
        at 14s
        hb p1
        at 15s
          cancel t-1#1 on p1 (timed_out)
          deliver t-1 (slow) to g1: timed_out run_timeout: ran 15.0 s on peer p1, over its timeout of 10.0 s after 1
        result p1 t-1 err=timed_out
          => Stale
        ",
    );
}

#[test]
fn idempotency_keys_return_the_original_task() {
    check(
        r"
        gamer g1
        join p1
        submit g1 echo key=k1 p=a
        submit g1 echo key=k1 p=other
        submit g2 echo key=k1 p=b
        result p1 t-1 ok=A
        submit g1 echo key=k1 p=again
        gamer-left g1
        gamer g1
        submit g1 echo key=k1 p=again
        ",
        r"
        gamer g1
        join p1
        submit g1 echo key=k1 p=a
          => t-1 t-1 Assigned
          assign t-1#1 a -> p1 (c2)
        submit g1 echo key=k1 p=other
          => t-1 t-1 existing Assigned
        submit g2 echo key=k1 p=b
          => t-2 t-2 Queued
        result p1 t-1 ok=A
          => Accepted
          deliver t-1 (t-1) to g1: completed A by p1#1 after 1
          assign t-2#1 b -> p1 (c2)
        submit g1 echo key=k1 p=again
          => t-1 t-1 existing Completed
        gamer-left g1
        gamer g1
        submit g1 echo key=k1 p=again
          => t-1 t-1 existing Completed
          deliver t-1 (t-1) to g1: completed A by p1#1 after 1
        ",
    );
}

#[test]
fn a_full_queue_refuses_with_busy() {
    let config = Config { max_queued: 2, ..config() };
    check_with(
        config,
        false,
        r"
        submit api echo
        submit api echo
        submit api echo
        join p1
        submit api echo
        ",
        r"
        submit api echo
          => t-1 t-1 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit api echo
          => t-2 t-2 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit api echo
          => Busy { queued: 2, retry_after: 1s }
        join p1
          assign t-1#1 x -> p1 (c1)
        submit api echo
          => t-3 t-3 Queued
        ",
    );
}

#[test]
fn finished_tasks_are_evicted_after_their_ttl() {
    let config = Config {
        result_ttl: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(600),
        ..config()
    };
    check_with(
        config,
        true,
        r"
        join p1
        submit api echo
        result p1 t-1 ok=A
        at 59s
        at 60s
        result p1 t-1 ok=A
        ",
        r"
        join p1
          ev peer joined p1
        submit api echo
          => t-1 t-1 Assigned
          assign t-1#1 x -> p1 (c1)
          ev submitted t-1
          ev assigned t-1#1 p1
        result p1 t-1 ok=A
          => Accepted
          ev finished t-1 completed A attempts=1
        at 59s
        at 60s
          ev evicted {TaskId(1)}
        result p1 t-1 ok=A
          => UnknownTask(TaskId(1))
        ",
    );
}

#[test]
fn messages_from_strangers_are_refused() {
    check(
        r"
        hb ghost
        join p1
        result p1 t-77 ok=A
        result ghost t-1 ok=A
        ",
        r"
        hb ghost
          => Err(NotRegistered)
        join p1
        result p1 t-77 ok=A
          => UnknownTask(TaskId(77))
        result ghost t-1 ok=A
          => NotRegistered
        ",
    );
}

#[test]
fn draining_peers_take_no_new_work() {
    check(
        r"
        join p1 slots=2
        submit api echo p=a
        drain p1
        submit api echo p=b
        result p1 t-1 returned
        join p2
        ",
        r"
        join p1 slots=2
        submit api echo p=a
          => t-1 t-1 Assigned
          assign t-1#1 a -> p1 (c1)
        drain p1
        submit api echo p=b
          => t-2 t-2 Queued (no capable peer: needs task type `echo`; 1 peer(s) connected, none can run it)
        result p1 t-1 returned
          => Accepted
        join p2
          assign t-1#2 a -> p2 (c2)
        ",
    );
}

#[test]
fn a_paused_peer_keeps_its_tasks_and_gets_nothing_new_until_resumed() {
    check(
        r"
        join p1 slots=2
        join p2
        submit api echo p=a
        pause p1
        submit api echo p=b
        submit api echo p=c
        result p1 t-1 ok=A
        resume p1
        pause ghost
        ",
        r"
        join p1 slots=2
        join p2
        submit api echo p=a
          => t-1 t-1 Assigned
          assign t-1#1 a -> p1 (c1)
        pause p1
        submit api echo p=b
          => t-2 t-2 Assigned
          assign t-2#1 b -> p2 (c2)
        submit api echo p=c
          => t-3 t-3 Queued
        result p1 t-1 ok=A
          => Accepted
        resume p1
          assign t-3#1 c -> p1 (c1)
        pause ghost
          => NotRegistered
        ",
    );
}

#[test]
fn an_operator_drain_closes_the_peer_once_idle_and_resume_undoes_it_before() {
    check(
        r"
        join p1
        submit api echo p=a
        odrain p1
        resume p1
        odrain p1
        result p1 t-1 ok=A
        join p2
        odrain p2
        resume p2
        submit api echo p=b
        ",
        r"
        join p1
        submit api echo p=a
          => t-1 t-1 Assigned
          assign t-1#1 a -> p1 (c1)
        odrain p1
        resume p1
        odrain p1
        result p1 t-1 ok=A
          => Accepted
          close peer c1 (drained by an operator)
        join p2
        odrain p2
          close peer c2 (drained by an operator)
        resume p2
        submit api echo p=b
          => t-2 t-2 Queued (no capable peer: needs task type `echo`; 2 peer(s) connected, none can run it)
        ",
    );
}

#[test]
fn a_failed_or_cancelled_task_runs_again_under_its_id_and_a_completed_one_cannot() {
    check(
        r"
        submit api echo p=a attempts=1
        cancel api t-1
        retry t-1
        join p1
        result p1 t-1 err=boom
        retry t-1
        result p1 t-1#2 ok=A
        retry t-1
        retry t-9
        ",
        r"
        submit api echo p=a attempts=1
          => t-1 t-1 Queued (no capable peer: no peer is connected (needs task type `echo`))
        cancel api t-1
          => Ok(())
        retry t-1
        join p1
          assign t-1#1 a -> p1 (c1)
        result p1 t-1 err=boom
          => Accepted
        retry t-1
          assign t-1#2 a -> p1 (c1)
        result p1 t-1#2 ok=A
          => Accepted
        retry t-1
          => Completed
        retry t-9
          => UnknownTask
        ",
    );
}

#[test]
fn a_gamer_handed_an_outcome_is_not_sent_a_second_after_a_retry() {
    check(
        r"
        gamer g1
        submit g1 echo p=a attempts=1
        cancel g1 t-1
        retry t-1
        join p1
        result p1 t-1 ok=A
        ",
        r"
        gamer g1
        submit g1 echo p=a attempts=1
          => t-1 t-1 Queued (no capable peer: no peer is connected (needs task type `echo`))
        cancel g1 t-1
          => Ok(())
          deliver t-1 (t-1) to g1: cancelled after 0
        retry t-1
        join p1
          assign t-1#1 a -> p1 (c2)
        result p1 t-1 ok=A
          => Accepted
        ",
    );
}

#[test]
fn started_marks_running() {
    let mut world = World::new(config());
    world.run("join p1\nsubmit api sleep\nstart p1 t-1");
    let task = world.sched.task(TaskId(1)).unwrap();
    assert_eq!(task.status(), TaskState::Running);
    assert_eq!(world.sched.stats().running, 1);
}

fn spec(id: u64, owner: Owner) -> TaskSpec<String> {
    TaskSpec {
        id: TaskId(id),
        owner,
        client_task_id: format!("c{id}").into(),
        peer_task_id: format!("c{id}").into(),
        task_type: "echo".into(),
        payload: format!("p{id}"),
        priority: 1,
        requirements: Requirements::default(),
        run_timeout: None,
        queue_timeout: Duration::from_secs(3600),
        max_attempts: 3,
        idempotency_key: None,
        stream: false,
        submitted_at: Time::ZERO,
        verify: None,
        submitter: None,
        kind: crate::TaskKind::Task,
    }
}

fn recovered(id: u64, state: RecoveredState<String>) -> Recovered<String> {
    let assigned = matches!(state, RecoveredState::Assigned { .. });
    Recovered {
        spec: spec(id, Owner::Gamer(GamerId::from("g1"))),
        attempts: u32::from(assigned),
        failures: 0,
        last_error: None,
        history: if assigned {
            vec![AttemptRecord {
                attempt: Attempt(1),
                peer: PeerId::from("p1"),
                assigned_at: Time::ZERO,
                ended_at: None,
                end: None,
            }]
        } else {
            Vec::new()
        },
        state,
        verification: None,
    }
}

#[test]
fn recovery_keeps_claimed_assignments_and_requeues_the_rest_after_grace() {
    let mut world = World::new(config());
    let held = |_: u64| RecoveredState::Assigned {
        peer: PeerId::from("p1"),
        attempt: Attempt(1),
        started: None,
    };
    let done = RecoveredState::Finished {
        outcome: Outcome::Completed {
            result: "R".into(),
            attempt: Attempt(1),
            peer: PeerId::from("p1"),
        },
        at: Time::ZERO,
        delivered: false,
    };
    world.sched.handle_recovered(
        Time::ZERO,
        vec![
            recovered(1, held(1)),
            recovered(2, held(2)),
            recovered(3, RecoveredState::Waiting),
            recovered(4, done),
            recovered(
                5,
                RecoveredState::Assigned {
                    peer: PeerId::from("gone"),
                    attempt: Attempt(1),
                    started: None,
                },
            ),
        ],
    );
    world.drain();
    world.run(
        r"
        gamer g1
        join p1 slots=2 running=t-1#1
        result p1 t-1 ok=R1
        at 31s
        join p2 slots=2
        submit g1 echo
        ",
    );
    let expect = r"
gamer g1
  deliver t-4 (c4) to g1: completed R by p1#1 after 0
join p1 slots=2 running=t-1#1
  assign t-3#1 p3 -> p1 (c2)
result p1 t-1 ok=R1
  => Accepted
  deliver t-1 (c1) to g1: completed R1 by p1#1 after 1
at 31s
  close peer c2 (heartbeat timeout)
join p2 slots=2
  assign t-2#2 p2 -> p2 (c3)
submit g1 echo
  => t-6 t-6 Assigned
  assign t-6#1 x -> p2 (c3)
    ";
    assert_eq!(world.log.trim(), expect.trim(), "\n{}", world.log);
    // t-5's peer never came back: after the grace it waits for another attempt.
    let t5 = world.sched.task(TaskId(5)).unwrap();
    assert_eq!((t5.status(), t5.failures()), (TaskState::Queued, 1));
}

#[test]
fn a_failed_task_keeps_its_last_error_and_history() {
    let mut world = World::new(config());
    world.run(
        r"
        join p1
        submit api echo attempts=2
        result p1 t-1 err=internal:retry
        at 2s
        result p1 t-1 err=unavailable:retry
        ",
    );
    let task = world.sched.task(TaskId(1)).unwrap();
    assert_eq!(task.status(), TaskState::Failed);
    assert_eq!(task.last_error(), Some(&Failure::new("unavailable", "boom")));
    let ends: Vec<_> = task.history().iter().map(|r| r.end.clone()).collect();
    assert_eq!(
        ends,
        vec![
            Some(AttemptEnd::Failed(Failure::new("internal", "boom"))),
            Some(AttemptEnd::Failed(Failure::new("unavailable", "boom"))),
        ]
    );
    match task.outcome() {
        Some(Outcome::Failed(f)) => assert_eq!(f.code, crate::FailureCode::ATTEMPTS_EXHAUSTED),
        other => panic!("{other:?}"),
    }
}

#[test]
fn time_never_goes_backwards() {
    let mut world = World::new(config());
    world.run("at 10s\njoin p1");
    world.sched.handle_timeout(Time::from_secs(1));
    assert_eq!(world.sched.poll_timeout(), Some(Time::from_secs(25)));
}

/// Kept for the gamer's return, or sent at once to the connection it is
/// back on — once: a second report for a connection that it no longer
/// went to last (a delivery held for its commit) sends nothing.
#[test]
fn an_outcome_that_did_not_reach_its_gamer_waits_for_its_return() {
    check(
        r"
        gamer g1
        join p1
        submit g1 echo id=a
        result p1 t-1 ok=A
        undelivered t-1 g1
        gamer-left g1
        gamer g1
        undelivered t-1 g1
        gamer g1
        gamer g1
        undelivered t-1 c4
        undelivered t-1 c4
        ",
        r"
        gamer g1
        join p1
        submit g1 echo id=a
          => t-1 a Assigned
          assign t-1#1 x -> p1 (c2)
        result p1 t-1 ok=A
          => Accepted
          deliver t-1 (a) to g1: completed A by p1#1 after 1
        undelivered t-1 g1
        gamer-left g1
        gamer g1
          deliver t-1 (a) to g1: completed A by p1#1 after 1
        undelivered t-1 g1
        gamer g1
          close gamer c3 (replaced by a new session)
          deliver t-1 (a) to g1: completed A by p1#1 after 1
        gamer g1
          close gamer c4 (replaced by a new session)
        undelivered t-1 c4
          deliver t-1 (a) to g1: completed A by p1#1 after 1
        undelivered t-1 c4
        ",
    );
}

#[test]
fn claims_beyond_a_peers_slots_are_stale() {
    check(
        r"
        join p1 slots=2
        submit api echo p=a
        submit api echo p=b
        leave p1
        join p1 slots=1 running=t-1#1,t-2#1
        ",
        r"
        join p1 slots=2
        submit api echo p=a
          => t-1 t-1 Assigned
          assign t-1#1 a -> p1 (c1)
        submit api echo p=b
          => t-2 t-2 Assigned
          assign t-2#1 b -> p1 (c1)
        leave p1
        join p1 slots=1 running=t-1#1,t-2#1
          => Joined { replaced: false, stale: [(TaskId(2), Attempt(1))] }
        ",
    );
}

#[test]
fn retries_back_off_exponentially_with_jitter_and_a_cap() {
    use crate::{Backoff, ConnId, Event, PeerCaps, PeerJoin, RunOutcome, Scheduler, Submission};
    let config = Config {
        retry_backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(8) },
        heartbeat_timeout: Duration::from_secs(3600),
        ..config()
    };
    let mut s: Scheduler<u32> = Scheduler::new(config, Time::ZERO);
    let peer = PeerId::from("p");
    let join = PeerJoin {
        id: peer.clone(),
        conn: ConnId(1),
        caps: PeerCaps::default(),
        running: vec![],
        owner: None,
        credential: None,
    };
    s.handle_peer_joined(Time::ZERO, join);
    let mut sub = Submission::new(Owner::Api, "echo", 0);
    sub.max_attempts = Some(7);
    s.handle_submit(Time::ZERO, sub).unwrap();
    let mut now = Time::ZERO;
    let mut delays = Vec::new();
    for attempt in 1..=6 {
        let failure =
            RunOutcome::Failed { failure: Failure::new("internal", "flaky"), retryable: true };
        s.handle_result(now, &peer, ConnId(1), TaskId(1), Some(Attempt(attempt)), failure).unwrap();
        let retry_at = std::iter::from_fn(|| s.poll_event())
            .find_map(|e| match e {
                Event::TaskRequeued { retry_at, .. } => Some(retry_at),
                _ => None,
            })
            .expect("requeued");
        delays.push(retry_at.saturating_since(now));
        // Nothing is reassigned before the back-off passes …
        s.handle_timeout(now + (retry_at.saturating_since(now) / 2));
        assert_eq!(s.task(TaskId(1)).unwrap().status(), TaskState::Queued);
        // … and it is reassigned when it does.
        now = retry_at;
        s.handle_timeout(now);
        assert_eq!(s.task(TaskId(1)).unwrap().attempt(), Attempt(attempt + 1));
        while s.poll_event().is_some() {}
    }
    for (i, d) in delays.iter().enumerate() {
        let full = Duration::from_secs(1 << i.min(3)); // 1, 2, 4, 8, 8, 8 s
        assert!(
            *d >= full / 2 && *d <= full,
            "retry {}: {d:?} not in [{:?}, {full:?}]",
            i + 1,
            full / 2
        );
    }
    // Jitter: not all the same fraction of the full delay.
    let fractions: Vec<u128> = delays
        .iter()
        .enumerate()
        .map(|(i, d)| d.as_millis() * 1000 / (1000u128 << i.min(3)))
        .collect();
    assert!(fractions.windows(2).any(|w| w[0] != w[1]), "{fractions:?}");
}

#[test]
fn recovery_holds_the_peer_ids_of_runs_lost_within_the_hold() {
    // Two finished tasks whose first attempt was lost with p1 (which may
    // still run it): 100 s ago for `c1`, 900 s ago for `c2` (past the 600 s
    // hold). A restarted coordinator keeps `c1` held, and only `c1`.
    let finished_after_loss = |id: u64, lost_at: u64| {
        let mut rec = recovered(
            id,
            RecoveredState::Finished {
                outcome: Outcome::Completed {
                    result: "R".into(),
                    attempt: Attempt(2),
                    peer: PeerId::from("p2"),
                },
                at: Time::from_secs(lost_at + 1),
                delivered: true,
            },
        );
        let run = |attempt, peer: &str, end| AttemptRecord {
            attempt: Attempt(attempt),
            peer: PeerId::from(peer),
            assigned_at: Time::from_secs(lost_at - 1),
            ended_at: Some(Time::from_secs(lost_at + attempt as u64 - 1)),
            end: Some(end),
        };
        rec.attempts = 2;
        rec.history = vec![run(1, "p1", AttemptEnd::PeerLost), run(2, "p2", AttemptEnd::Completed)];
        rec
    };
    let mut world = World::new(config());
    world.sched.handle_recovered(
        Time::from_secs(1000),
        vec![finished_after_loss(1, 900), finished_after_loss(2, 100)],
    );
    assert_eq!(world.sched.resolve_peer_task("c1"), Some(TaskId(1)));
    assert_eq!(world.sched.resolve_peer_task("c2"), None);
    world.run("gamer g1\njoin p1\nsubmit g1 echo id=c1\nsubmit g1 echo id=c2");
    let seen = |id| world.sched.task(TaskId(id)).map(|t| t.spec().peer_task_id.to_string());
    assert_eq!(seen(3).as_deref(), Some("t-3"), "c1 is still held by t-1");
    assert_eq!(seen(4).as_deref(), Some("c2"));
}

#[test]
fn a_peer_keeps_what_it_ran_across_reconnects_replacements_and_restarts() {
    use crate::{ConnId, PeerCaps, PeerJoin, RunOutcome, Scheduler, Submission, Tally};
    let mut s: Scheduler<u32> = Scheduler::new(config(), Time::ZERO);
    let peer = PeerId::from("p");
    let join = |conn: u64| PeerJoin::new(peer.clone(), ConnId(conn), PeerCaps::default());
    let tally = |s: &Scheduler<u32>| s.peer("p").map(|p| p.tally());
    // As after a restart: the store's history counts.
    let stored = Tally { completed: 5, failed: 2 };
    s.handle_recovered_tallies([(peer.clone(), stored)]);
    s.handle_peer_joined(Time::ZERO, join(1));
    assert_eq!(tally(&s), Some(stored));
    let run = |s: &mut Scheduler<u32>, conn: u64, outcome: RunOutcome<u32>| {
        let id = s.handle_submit(Time::ZERO, Submission::new(Owner::Api, "echo", 0)).unwrap().id;
        s.handle_result(Time::ZERO, &peer, ConnId(conn), id, Some(Attempt(1)), outcome).unwrap();
    };
    run(&mut s, 1, RunOutcome::Completed(1));
    let failed = Failure::new("internal", "broken");
    run(&mut s, 1, RunOutcome::Failed { failure: failed, retryable: false });
    assert_eq!(tally(&s), Some(Tally { completed: 6, failed: 3 }));
    // A second session replaces the first: the counts go with it.
    s.handle_peer_joined(Time::ZERO, join(2));
    assert_eq!(tally(&s), Some(Tally { completed: 6, failed: 3 }));
    run(&mut s, 2, RunOutcome::Completed(1));
    // It leaves and comes back.
    s.handle_peer_left(Time::ZERO, &peer, ConnId(2));
    assert_eq!(tally(&s), None);
    s.handle_peer_joined(Time::ZERO, join(3));
    assert_eq!(tally(&s), Some(Tally { completed: 7, failed: 3 }));
    // Peers away are remembered up to a bound.
    let many = (0..crate::MAX_TALLIES + 10).map(|i| {
        (PeerId::from(format!("away-{i:06}").as_str()), Tally { completed: 1, failed: 0 })
    });
    s.handle_recovered_tallies(many);
    assert_eq!(s.tallies.len(), crate::MAX_TALLIES);
}
