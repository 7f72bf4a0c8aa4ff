//! Scheduler hot paths: a task's whole cycle (submit → assign → result →
//! deliver) and placement over many peers, per strategy.
//! `cargo bench -p sched --bench scheduler`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sched::{
    Command, Config, ConnId, GamerId, Owner, PeerCaps, PeerId, PeerJoin, RunOutcome, Scheduler,
    Strategy, Submission, Time,
};

/// A scheduler with `peers` peers of `slots` slots and one gamer.
fn cluster(peers: usize, slots: u32, strategy: Strategy) -> Scheduler<u64> {
    let config = Config { strategy, ..Config::default() };
    let mut s = Scheduler::new(config, Time::ZERO);
    for i in 0..peers {
        let caps = PeerCaps { slots, ..PeerCaps::default() };
        let join = PeerJoin {
            id: PeerId::from(format!("p{i}").as_str()),
            conn: ConnId(i as u64 + 1),
            caps,
            running: Vec::new(),
            owner: None,
            credential: None,
        };
        s.handle_peer_joined(Time::ZERO, join);
    }
    s.handle_gamer_joined(Time::ZERO, GamerId::from("g"), ConnId(0));
    while s.poll_command().is_some() {}
    while s.poll_event().is_some() {}
    s
}

/// Submits `n` tasks, answers every assignment, drains everything.
fn cycle(s: &mut Scheduler<u64>, n: u64, now: &mut u64) {
    let task_type: Arc<str> = Arc::from("noop");
    for i in 0..n {
        *now += 1;
        let sub = Submission::new(Owner::Gamer(GamerId::from("g")), Arc::clone(&task_type), i);
        s.handle_submit(Time::from_micros(*now), sub).unwrap();
    }
    let mut assigned = Vec::new();
    while let Some(cmd) = s.poll_command() {
        if let Command::Assign { conn, peer, task, attempt } = cmd {
            assigned.push((peer, conn, task.id, attempt));
        }
    }
    for (peer, conn, id, attempt) in assigned {
        *now += 1;
        s.handle_result(
            Time::from_micros(*now),
            &peer,
            conn,
            id,
            Some(attempt),
            RunOutcome::Completed(7),
        )
        .unwrap();
    }
    while let Some(cmd) = s.poll_command() {
        black_box(cmd);
    }
    while let Some(event) = s.poll_event() {
        black_box(event);
    }
}

fn task_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("task_cycle");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000 tasks, 2 peers x 1000 slots", |b| {
        let mut s = cluster(2, 1000, Strategy::Adaptive);
        let mut now = 0;
        b.iter(|| cycle(&mut s, 1000, &mut now));
    });
    g.finish();
}

fn placement(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement_1000_peers");
    g.throughput(Throughput::Elements(1));
    for strategy in Strategy::ALL {
        g.bench_function(strategy.name(), |b| {
            let mut s = cluster(1000, 4, strategy);
            let mut now = 0;
            b.iter(|| cycle(&mut s, 1, &mut now));
        });
    }
    g.finish();
}

criterion_group!(benches, task_cycle, placement);
criterion_main!(benches);
