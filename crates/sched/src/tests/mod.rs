//! Scheduler scenarios, each a script and the expected log (see `harness`).

mod harness;
mod lifecycle;
mod verify;

use std::time::Duration;

use crate::Config;
use harness::{check, check_events, check_with, config};

#[test]
fn seed_flow_submit_assign_result_deliver() {
    check(
        r"
        join p1
        gamer g1
        submit g1 physics id=123 p=data
        result p1 t-1 ok=R
        ",
        r"
        join p1
        gamer g1
        submit g1 physics id=123 p=data
          => t-1 123 Assigned
          assign t-1#1 data -> p1 (c1)
        result p1 t-1 ok=R
          => Accepted
          deliver t-1 (123) to g1: completed R by p1#1 after 1
        ",
    );
}

#[test]
fn a_peer_without_slots_gets_one_task_at_a_time() {
    check(
        r"
        join p1
        submit g1 echo p=a
        submit g1 echo p=b
        result p1 t-1 ok=A
        ",
        r"
        join p1
        submit g1 echo p=a
          => t-1 t-1 Assigned
          assign t-1#1 a -> p1 (c1)
        submit g1 echo p=b
          => t-2 t-2 Queued
        result p1 t-1 ok=A
          => Accepted
          assign t-2#1 b -> p1 (c1)
        ",
    );
}

#[test]
fn placement_fills_every_free_slot_on_one_event() {
    check(
        r"
        submit g1 echo p=a
        submit g1 echo p=b
        submit g1 echo p=c
        submit g1 echo p=d
        join p1 slots=3
        join p2 slots=2
        ",
        r"
        submit g1 echo p=a
          => t-1 t-1 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit g1 echo p=b
          => t-2 t-2 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit g1 echo p=c
          => t-3 t-3 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit g1 echo p=d
          => t-4 t-4 Queued (no capable peer: no peer is connected (needs task type `echo`))
        join p1 slots=3
          assign t-1#1 a -> p1 (c1)
          assign t-2#1 b -> p1 (c1)
          assign t-3#1 c -> p1 (c1)
        join p2 slots=2
          assign t-4#1 d -> p2 (c2)
        ",
    );
}

#[test]
fn higher_priority_first_then_fifo() {
    check(
        r"
        submit g1 echo p=low prio=0
        submit g1 echo p=n1
        submit g1 echo p=crit prio=3
        submit g1 echo p=n2
        submit g1 echo p=high prio=2
        join p1 slots=5
        ",
        r"
        submit g1 echo p=low prio=0
          => t-1 t-1 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit g1 echo p=n1
          => t-2 t-2 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit g1 echo p=crit prio=3
          => t-3 t-3 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit g1 echo p=n2
          => t-4 t-4 Queued (no capable peer: no peer is connected (needs task type `echo`))
        submit g1 echo p=high prio=2
          => t-5 t-5 Queued (no capable peer: no peer is connected (needs task type `echo`))
        join p1 slots=5
          assign t-3#1 crit -> p1 (c1)
          assign t-5#1 high -> p1 (c1)
          assign t-2#1 n1 -> p1 (c1)
          assign t-4#1 n2 -> p1 (c1)
          assign t-1#1 low -> p1 (c1)
        ",
    );
}

#[test]
fn tasks_go_only_to_peers_that_can_run_them() {
    check(
        r"
        join cpu types=echo,physics slots=4
        join gpu types=gpu,inference models=resnet50 gpu=8192 slots=4
        submit g1 inference model=resnet50 p=img
        submit g1 gpu gpu p=matmul
        submit g1 physics p=sim
        submit g1 inference model=vgg p=img2
        submit g1 gpu vram=16000 p=big
        ",
        r"
        join cpu types=echo,physics slots=4
        join gpu types=gpu,inference models=resnet50 gpu=8192 slots=4
        submit g1 inference model=resnet50 p=img
          => t-1 t-1 Assigned
          assign t-1#1 img -> gpu (c2)
        submit g1 gpu gpu p=matmul
          => t-2 t-2 Assigned
          assign t-2#1 matmul -> gpu (c2)
        submit g1 physics p=sim
          => t-3 t-3 Assigned
          assign t-3#1 sim -> cpu (c1)
        submit g1 inference model=vgg p=img2
          => t-4 t-4 Queued (no capable peer: needs task type `inference`, model `vgg`; 2 peer(s) connected, none can run it)
        submit g1 gpu vram=16000 p=big
          => t-5 t-5 Queued (no capable peer: needs task type `gpu`, a GPU with at least 16000 MiB; 2 peer(s) connected, none can run it)
        ",
    );
}

#[test]
fn a_model_goes_only_to_tasks_of_the_type_that_serves_it() {
    // One peer with an ONNX classifier for `inference` and a GGUF model for
    // `generate`; another, seed-style, names a model for every type.
    check(
        r"
        join both types=inference,generate models=color:inference,tiny:generate slots=4
        submit g1 generate model=color p=wrong-type
        submit g1 inference model=tiny p=wrong-type-too
        submit g1 inference model=color p=classify
        submit g1 generate model=tiny p=write
        join seed models=color
        ",
        r"
        join both types=inference,generate models=color:inference,tiny:generate slots=4
        submit g1 generate model=color p=wrong-type
          => t-1 t-1 Queued (no capable peer: needs task type `generate`, model `color`; 1 peer(s) connected, none can run it)
        submit g1 inference model=tiny p=wrong-type-too
          => t-2 t-2 Queued (no capable peer: needs task type `inference`, model `tiny`; 1 peer(s) connected, none can run it)
        submit g1 inference model=color p=classify
          => t-3 t-3 Assigned
          assign t-3#1 classify -> both (c1)
        submit g1 generate model=tiny p=write
          => t-4 t-4 Assigned
          assign t-4#1 write -> both (c1)
        join seed models=color
          assign t-1#1 wrong-type -> seed (c2)
        ",
    );
}

#[test]
fn a_peer_declaring_no_types_runs_every_type() {
    check(
        r"
        join typed types=echo
        submit g1 physics p=sim
        join seed
        ",
        r"
        join typed types=echo
        submit g1 physics p=sim
          => t-1 t-1 Queued (no capable peer: needs task type `physics`; 1 peer(s) connected, none can run it)
        join seed
          assign t-1#1 sim -> seed (c2)
        ",
    );
}

#[test]
fn an_unplaceable_head_does_not_block_the_queue() {
    check(
        r"
        join p1 types=echo slots=2
        submit g1 physics p=blocked
        submit g1 echo p=a
        submit g1 echo p=b
        ",
        r"
        join p1 types=echo slots=2
        submit g1 physics p=blocked
          => t-1 t-1 Queued (no capable peer: needs task type `physics`; 1 peer(s) connected, none can run it)
        submit g1 echo p=a
          => t-2 t-2 Assigned
          assign t-2#1 a -> p1 (c1)
        submit g1 echo p=b
          => t-3 t-3 Assigned
          assign t-3#1 b -> p1 (c1)
        ",
    );
}

#[test]
fn results_go_to_the_submitting_gamer_only() {
    check(
        r"
        gamer g1
        gamer g2
        join p1 slots=2
        submit g1 echo id=1 p=a
        submit g2 echo id=1 p=b
        result p1 t-2 ok=B
        result p1 t-1 ok=A
        ",
        r"
        gamer g1
        gamer g2
        join p1 slots=2
        submit g1 echo id=1 p=a
          => t-1 1 Assigned
          assign t-1#1 a -> p1 (c3)
        submit g2 echo id=1 p=b
          => t-2 1 Assigned
          assign t-2#1 as t-2 b -> p1 (c3)
        result p1 t-2 ok=B
          => Accepted
          deliver t-2 (1) to g2: completed B by p1#1 after 1
        result p1 t-1 ok=A
          => Accepted
          deliver t-1 (1) to g1: completed A by p1#1 after 1
        ",
    );
}

#[test]
fn a_gamer_that_reconnects_gets_what_finished_while_away() {
    check(
        r"
        gamer g1
        join p1 slots=2
        submit g1 echo id=a
        submit g1 echo id=b
        gamer-left g1
        result p1 t-1 ok=A
        result p1 t-2 err=invalid_input
        gamer g1
        ",
        r"
        gamer g1
        join p1 slots=2
        submit g1 echo id=a
          => t-1 a Assigned
          assign t-1#1 x -> p1 (c2)
        submit g1 echo id=b
          => t-2 b Assigned
          assign t-2#1 x -> p1 (c2)
        gamer-left g1
        result p1 t-1 ok=A
          => Accepted
        result p1 t-2 err=invalid_input
          => Accepted
        gamer g1
          deliver t-1 (a) to g1: completed A by p1#1 after 1
          deliver t-2 (b) to g1: failed invalid_input: boom after 1
        ",
    );
}

#[test]
fn a_gamer_still_awaiting_a_delivered_outcome_gets_it_again() {
    // The outcome was handed to the gamer's first connection, which died
    // before it arrived; the gamer says on its new connection that it still
    // waits. Ids it does not own, or that are unknown, come back.
    check(
        r"
        gamer g1
        join p1 slots=2
        submit g1 echo id=a
        submit g1 echo id=b
        submit g2 echo id=c
        result p1 t-1 ok=A
        gamer g1
        awaiting g1 t-1,t-2,t-3,t-9
        awaiting g1 t-1
        ",
        r"
        gamer g1
        join p1 slots=2
        submit g1 echo id=a
          => t-1 a Assigned
          assign t-1#1 x -> p1 (c2)
        submit g1 echo id=b
          => t-2 b Assigned
          assign t-2#1 x -> p1 (c2)
        submit g2 echo id=c
          => t-3 c Queued
        result p1 t-1 ok=A
          => Accepted
          deliver t-1 (a) to g1: completed A by p1#1 after 1
          assign t-3#1 x -> p1 (c2)
        gamer g1
          close gamer c1 (replaced by a new session)
        awaiting g1 t-1,t-2,t-3,t-9
          => unknown t-3,t-9
          deliver t-1 (a) to g1: completed A by p1#1 after 1
        awaiting g1 t-1
        ",
    );
}

#[test]
fn peers_see_the_gamers_own_ids_unless_another_live_task_holds_one() {
    check(
        r"
        gamer g1
        gamer g2
        join p1 slots=4
        submit g1 echo id=123
        submit g2 echo id=123
        result p1 123 ok=A
        result p1 t-2 ok=B
        submit g2 echo id=123
        result p1 123 ok=C
        ",
        r"
        gamer g1
        gamer g2
        join p1 slots=4
        submit g1 echo id=123
          => t-1 123 Assigned
          assign t-1#1 x -> p1 (c3)
        submit g2 echo id=123
          => t-2 123 Assigned
          assign t-2#1 as t-2 x -> p1 (c3)
        result p1 123 ok=A
          => Accepted
          deliver t-1 (123) to g1: completed A by p1#1 after 1
        result p1 t-2 ok=B
          => Accepted
          deliver t-2 (123) to g2: completed B by p1#1 after 1
        submit g2 echo id=123
          => t-3 123 Assigned
          assign t-3#1 x -> p1 (c3)
        result p1 123 ok=C
          => Accepted
          deliver t-3 (123) to g2: completed C by p1#1 after 1
        ",
    );
}

#[test]
fn a_cancelled_run_keeps_its_peer_id_until_the_peer_confirms() {
    check(
        r"
        gamer g1
        join p1 slots=2
        submit g1 echo id=7
        cancel g1 t-1
        submit g1 echo id=7
        result p1 t-1 ok=late
        result p1 t-2 ok=B
        submit g1 echo id=7
        ",
        r"
        gamer g1
        join p1 slots=2
        submit g1 echo id=7
          => t-1 7 Assigned
          assign t-1#1 x -> p1 (c2)
        cancel g1 t-1
          => Ok(())
          cancel t-1#1 on p1 (cancelled)
          deliver t-1 (7) to g1: cancelled after 1
        submit g1 echo id=7
          => t-2 7 Assigned
          assign t-2#1 as t-2 x -> p1 (c2)
        result p1 t-1 ok=late
          => Stale
        result p1 t-2 ok=B
          => Accepted
          deliver t-2 (7) to g1: completed B by p1#1 after 1
        submit g1 echo id=7
          => t-3 7 Assigned
          assign t-3#1 x -> p1 (c2)
        ",
    );
}

#[test]
fn duplicate_live_task_ids_are_refused() {
    check(
        r"
        join p1
        submit g1 echo id=same
        submit g1 echo id=same
        submit g2 echo id=same
        result p1 t-1 ok=A
        submit g1 echo id=same
        ",
        r"
        join p1
        submit g1 echo id=same
          => t-1 same Assigned
          assign t-1#1 x -> p1 (c1)
        submit g1 echo id=same
          => DuplicateTaskId { existing: TaskId(1) }
        submit g2 echo id=same
          => t-2 same Queued
        result p1 t-1 ok=A
          => Accepted
          assign t-2#1 as t-2 x -> p1 (c1)
        submit g1 echo id=same
          => t-3 same Queued
        ",
    );
}

#[test]
fn a_silent_peer_is_declared_dead_and_its_task_requeued_at_the_front() {
    check_events(
        r"
        join p1
        join p2 types=sleep
        submit g1 echo p=first
        submit g1 echo p=second
        at 10s
        hb p1
        at 24s
        at 25s
        at 27s
        join p3
        ",
        r"
        join p1
          ev peer joined p1
        join p2 types=sleep
          ev peer joined p2
        submit g1 echo p=first
          => t-1 t-1 Assigned
          assign t-1#1 first -> p1 (c1)
          ev submitted t-1
          ev assigned t-1#1 p1
        submit g1 echo p=second
          => t-2 t-2 Queued
          ev submitted t-2
        at 10s
        hb p1
        at 24s
          close peer c2 (heartbeat timeout)
          ev peer left p2 dead
        at 25s
          close peer c1 (heartbeat timeout)
          ev requeued t-1#1 peer_lost failures=1
          ev peer left p1 dead
        at 27s
        join p3
          assign t-1#2 first -> p3 (c3)
          ev peer joined p3
          ev assigned t-1#2 p3
        ",
    );
}

#[test]
fn timers_do_not_pile_up_with_finished_tasks() {
    // Every task sets an hour-long queue deadline and, with a run timeout, a
    // run deadline; both go when the wait or the attempt ends, so the timer
    // set holds live tasks only (it once grew by every task for an hour).
    use crate::{
        Command, Config, ConnId, Failure, Owner, PeerCaps, PeerId, PeerJoin, RunOutcome, Scheduler,
        Submission, Time,
    };
    use std::sync::Arc;
    let mut s: Scheduler<u64> = Scheduler::new(Config::default(), Time::ZERO);
    let caps = PeerCaps { slots: 8, ..PeerCaps::default() };
    s.handle_peer_joined(
        Time::ZERO,
        PeerJoin {
            id: PeerId::from("p"),
            conn: ConnId(1),
            caps,
            running: Vec::new(),
            owner: None,
            credential: None,
        },
    );
    let baseline = s.timers_pending();
    let mut now = 0u64;
    for round in 0..500u64 {
        let mut ids = Vec::new();
        for i in 0..4 {
            now += 10;
            let mut sub = Submission::new(Owner::Api, Arc::from("x"), round * 4 + i);
            sub.run_timeout = Some(std::time::Duration::from_secs(600));
            ids.push(s.handle_submit(Time::from_micros(now), sub).unwrap().id);
        }
        // One of the four is cancelled while it runs, the rest complete.
        now += 10;
        s.handle_cancel(Time::from_micros(now), &Owner::Api, ids[0]).unwrap();
        while let Some(cmd) = s.poll_command() {
            now += 10;
            let at = Time::from_micros(now);
            match cmd {
                Command::Assign { conn, peer, task, attempt } if task.id != ids[0] => {
                    let done = RunOutcome::Completed(1);
                    s.handle_result(at, &peer, conn, task.id, Some(attempt), done).unwrap();
                }
                // The peer confirms the cancelled run stopped: its slot is free.
                Command::Cancel { conn, task, attempt, .. } => {
                    let stopped = RunOutcome::Failed {
                        failure: Failure::new("cancelled", "stopped"),
                        retryable: false,
                    };
                    let _ =
                        s.handle_result(at, &PeerId::from("p"), conn, task, Some(attempt), stopped);
                }
                _ => {}
            }
        }
        while s.poll_event().is_some() {}
    }
    assert_eq!(s.stats().queued, 0);
    // No queue or run deadline outlives its wait or attempt. (A confirmed
    // cancel's slot timer stays until `cancel_grace` passes, 15 s: bounded.)
    let kinds = s.timer_kinds();
    assert_eq!((kinds.get("queue"), kinds.get("run")), (None, None), "{kinds:?}");
    assert_eq!(s.timers_pending(), baseline + kinds.get("zombie").copied().unwrap_or(0));
}

#[test]
fn a_reclaimed_run_keeps_its_time_limit() {
    check(
        r"
        gamer g1
        join p1
        submit g1 echo timeout=5s
        leave p1
        join p1 running=t-1#1
        at 11s
        ",
        r"
        gamer g1
        join p1
        submit g1 echo timeout=5s
          => t-1 t-1 Assigned
          assign t-1#1 x -> p1 (c2)
        leave p1
        join p1 running=t-1#1
        at 11s
          cancel t-1#1 on p1 (timed_out)
          deliver t-1 (t-1) to g1: timed_out run_timeout: ran 11.0 s on peer p1, over its timeout of 5.0 s after 1
        ",
    );
}

#[test]
fn a_streamed_task_lost_before_any_output_runs_again() {
    check(
        r"
        gamer g1
        join p1
        join p2
        submit g1 generate stream id=s
        leave p1
        progress p2 s
        at 2s
        progress p2 s
        ",
        r"
        gamer g1
        join p1
        join p2
        submit g1 generate stream id=s
          => t-1 s Assigned
          assign t-1#1 x -> p1 (c2)
        leave p1
        progress p2 s
          => Stale
        at 2s
          assign t-1#2 x -> p2 (c3)
        progress p2 s
          => forward t-1#2 to c1
        ",
    );
}

#[test]
fn a_streamed_task_lost_after_output_reached_its_gamer_ends_interrupted() {
    check(
        r"
        gamer g1
        join p1
        submit g1 generate stream id=s
        progress p1 s
        leave p1
        join p2
        ",
        r"
        gamer g1
        join p1
        submit g1 generate stream id=s
          => t-1 s Assigned
          assign t-1#1 x -> p1 (c2)
        progress p1 s
          => forward t-1#1 to c1
        leave p1
          deliver t-1 (s) to g1: failed stream_interrupted: the attempt streaming the output ended (peer_lost) after output had been sent; it is not run again, so that no output is repeated after 1
        join p2
        ",
    );
}

#[test]
fn a_streamed_task_whose_output_reached_nobody_runs_again() {
    // Its gamer is away while the first attempt streams: nothing was seen,
    // so losing the attempt runs the task again instead of failing it.
    check(
        r"
        gamer g1
        join p1
        submit g1 generate stream id=s
        gamer-left g1
        progress p1 s
        join p2
        leave p1
        at 2s
        ",
        r"
        gamer g1
        join p1
        submit g1 generate stream id=s
          => t-1 s Assigned
          assign t-1#1 x -> p1 (c2)
        gamer-left g1
        progress p1 s
          => forward t-1#1 to nobody
        join p2
        leave p1
        at 2s
          assign t-1#2 x -> p2 (c3)
        ",
    );
}

#[test]
fn progress_of_a_task_that_did_not_ask_to_stream_goes_nowhere() {
    check(
        r"
        gamer g1
        join p1
        submit g1 generate id=q
        progress p1 q
        progress p1 q#7
        leave p1
        join p2
        at 2s
        ",
        r"
        gamer g1
        join p1
        submit g1 generate id=q
          => t-1 q Assigned
          assign t-1#1 x -> p1 (c2)
        progress p1 q
          => NotStreamed
        progress p1 q#7
          => Stale
        leave p1
        join p2
        at 2s
          assign t-1#2 x -> p2 (c3)
        ",
    );
}

#[test]
fn a_run_lost_with_its_peer_holds_its_peer_id_until_the_hold_ends() {
    // p1 drops while running `7`; it comes back without claiming the run (a
    // seed-literal peer cannot), still running it. Meanwhile the task ran
    // on p2. Another task named `7` must not be shown to p1 as `7` while
    // p1 may still answer the old run by that id.
    check_with(
        patient(),
        false,
        r"
        gamer g1
        gamer g2
        join p1
        submit g1 echo id=7
        leave p1
        join p2
        at 2s
        result p2 7 ok=A
        leave p2
        join p1
        submit g2 echo id=7
        result p1 7 ok=old
        result p1 t-2 ok=B
        at 601s
        submit g2 echo id=7
        result p1 7 ok=C
        ",
        r"
        gamer g1
        gamer g2
        join p1
        submit g1 echo id=7
          => t-1 7 Assigned
          assign t-1#1 x -> p1 (c3)
        leave p1
        join p2
        at 2s
          assign t-1#2 x -> p2 (c4)
        result p2 7 ok=A
          => Accepted
          deliver t-1 (7) to g1: completed A by p2#2 after 2
        leave p2
        join p1
        submit g2 echo id=7
          => t-2 7 Assigned
          assign t-2#1 as t-2 x -> p1 (c5)
        result p1 7 ok=old
          => Stale
        result p1 t-2 ok=B
          => Accepted
          deliver t-2 (7) to g2: completed B by p1#1 after 1
        at 601s
        submit g2 echo id=7
          => t-3 7 Assigned
          assign t-3#1 x -> p1 (c5)
        result p1 7 ok=C
          => Accepted
          deliver t-3 (7) to g2: completed C by p1#1 after 1
        ",
    );
}

#[test]
fn an_answer_naming_the_lost_attempt_ends_its_hold() {
    // Our worker answers by cluster id and attempt: that run is over.
    check_with(
        patient(),
        false,
        r"
        join p1
        submit g1 echo id=7
        leave p1
        join p2
        at 2s
        result p2 7 ok=A
        join p1
        result p1 t-1#1 ok=late
        submit g2 echo id=7
        ",
        r"
        join p1
        submit g1 echo id=7
          => t-1 7 Assigned
          assign t-1#1 x -> p1 (c1)
        leave p1
        join p2
        at 2s
          assign t-1#2 x -> p2 (c2)
        result p2 7 ok=A
          => Accepted
        join p1
        result p1 t-1#1 ok=late
          => Stale
        submit g2 echo id=7
          => t-2 7 Assigned
          assign t-2#1 x -> p1 (c3)
        ",
    );
}

#[test]
fn a_finished_task_with_a_lost_run_outlives_its_retention_until_the_hold_ends() {
    // Its rows stay in the store meanwhile (no `evicted` event), so that a
    // restarted coordinator finds the hold in its attempts.
    let config = Config { result_ttl: Duration::from_secs(60), ..patient() };
    check_with(
        config,
        true,
        r"
        join p1
        submit api echo id=7
        leave p1
        join p2
        at 2s
        result p2 7 ok=A
        at 120s
        submit api echo id=8
        at 601s
        submit api echo id=9
        ",
        r"
        join p1
          ev peer joined p1
        submit api echo id=7
          => t-1 7 Assigned
          assign t-1#1 x -> p1 (c1)
          ev submitted t-1
          ev assigned t-1#1 p1
        leave p1
          ev requeued t-1#1 peer_lost failures=1
          ev peer left p1 disconnected
        join p2
          ev peer joined p2
        at 2s
          assign t-1#2 x -> p2 (c2)
          ev assigned t-1#2 p2
        result p2 7 ok=A
          => Accepted
          ev finished t-1 completed A attempts=2
        at 120s
        submit api echo id=8
          => t-2 8 Assigned
          assign t-2#1 x -> p2 (c2)
          ev submitted t-2
          ev assigned t-2#1 p2
        at 601s
          ev evicted {TaskId(1)}
        submit api echo id=9
          => t-3 9 Queued
          ev submitted t-3
",
    );
}

/// Peers that never time out here, however far the clock jumps.
fn patient() -> Config {
    Config { heartbeat_timeout: Duration::from_secs(100_000), ..config() }
}

#[test]
fn a_cancel_never_confirmed_frees_the_slot_but_holds_the_peer_id() {
    // A seed-literal peer ignores `cancel_task` and may answer later by `7`.
    check_with(
        patient(),
        false,
        r"
        gamer g1
        join p1
        submit g1 echo id=7
        cancel g1 t-1
        at 16s
        submit g1 echo id=7
        result p1 7 ok=late
        at 616s
        result p1 t-2 ok=B
        submit g1 echo id=7
        ",
        r"
        gamer g1
        join p1
        submit g1 echo id=7
          => t-1 7 Assigned
          assign t-1#1 x -> p1 (c2)
        cancel g1 t-1
          => Ok(())
          cancel t-1#1 on p1 (cancelled)
          deliver t-1 (7) to g1: cancelled after 1
        at 16s
        submit g1 echo id=7
          => t-2 7 Assigned
          assign t-2#1 as t-2 x -> p1 (c2)
        result p1 7 ok=late
          => Stale
        at 616s
        result p1 t-2 ok=B
          => Accepted
          deliver t-2 (7) to g1: completed B by p1#1 after 1
        submit g1 echo id=7
          => t-3 7 Assigned
          assign t-3#1 x -> p1 (c2)
        ",
    );
}

#[test]
fn a_task_whose_lost_run_holds_its_id_can_be_retried_under_it() {
    // The lost run's late answer by `7` would be this task's own work.
    check_with(
        patient(),
        false,
        r"
        join p1
        submit api echo id=7 attempts=1
        leave p1
        retry t-1
        join p2
        result p2 7 ok=A
        ",
        r"
        join p1
        submit api echo id=7 attempts=1
          => t-1 7 Assigned
          assign t-1#1 x -> p1 (c1)
        leave p1
        retry t-1
        join p2
          assign t-1#2 x -> p2 (c2)
        result p2 7 ok=A
          => Accepted
        ",
    );
}
