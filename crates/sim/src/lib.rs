//! A seeded world for the scheduler and the coordinator's store mapping:
//! thousands of random runs of peers joining, crashing, going silent,
//! reconnecting (claiming their tasks, forgetting them, or keeping them
//! without a word) and draining; gamers submitting (with repeated ids,
//! priorities, requirements, timeouts and idempotency keys), cancelling,
//! leaving with outcomes unread and returning (naming what they await, as
//! the SDK does, or not); results and starts arriving late, twice, or named
//! only by the id the peer saw; and the coordinator itself crashing — all
//! with manual time.
//!
//! Around the scheduler the world runs the coordinator's real durability
//! code, in the order `crates/coordinator` runs it (`coordinator.rs`,
//! `shell.rs`): each flush's events go through [`persist::op_for`] into one
//! batch for a real [`store::SqliteStore`] (in memory); delivery marks follow
//! [`persist::DeliveryMarks`] exactly as the observer does — markable once
//! the batch holding the outcome committed, dropped when the delivery
//! failed, written riding with other ops or alone once `alone` wait (drawn
//! per seed: 1, 2, 4, 16 or never); delivered outcomes are held until every
//! batch handed over so far has committed, and go out before or after the
//! next input, as the core loop may take either first; and a restart
//! recovers through [`store::Store::load`], [`persist::recovered`],
//! `Scheduler::handle_recovered`, `set_next_task_id` and `reserve_ids`, as
//! `crates/coordinator/src/server.rs`'s `recover` does (id reservations
//! become durable through [`persist::IdReservations`], as in the observer;
//! the block size is drawn per seed: 2, 3, 8 or 1 024). The store writer is
//! asynchronous: batches stay in flight for a few steps and commit a prefix
//! at a time, and a crash commits some prefix of what was in flight and
//! loses the rest (with the replies held and whatever a gamer had not read
//! yet). So a task counts as *acknowledged* only once its `TaskSubmitted`
//! op is in a committed batch: the coordinator holds `task_accepted` until
//! then.
//!
//! Payloads are JSON numbers, the sim's own task number (`1042`); a peer's
//! result is `number × 1000 + attempt`, and its failure messages name the
//! number, so a gamer can tell whose work it got.
//!
//! After every step [`World::check`] asserts:
//!
//! 1. no task is held by two live attempts, every hold matches the task's
//!    state (same peer, same attempt), and no peer holds more than its slots;
//! 2. every acknowledged task is queued, held by a live peer (or awaiting
//!    one after a restart), finished, or dropped after its retention ended —
//!    none is lost;
//! 3. a gamer never receives two *different* outcomes for one task (result,
//!    or status, code and reason); it receives the same one again only on
//!    another connection — after a reconnect or a coordinator restart;
//!    clients dedupe by task id; every outcome is for a task acknowledged to
//!    that gamer and carries that task's payload; a result is computed from
//!    that payload, by the delivered attempt or an earlier run (a peer that
//!    does not echo attempts is fenced by peer, not by attempt), or by an
//!    attempt a crash lost (its number is issued again);
//! 4. the ids peers see (`TaskSpec::peer_task_id`) are unique among live
//!    tasks, and `Scheduler::resolve_peer_task` of each gives its task;
//!
//! at every restart that lost no batch, that the store gives back exactly
//! what the scheduler held: every task, with its spec, state, attempt,
//! failures, history (peers, ends, errors, times) and outcome, marked
//! delivered only if it was (marks are lazy, so a delivered task may come
//! back undelivered and is sent again); and at the end — after a calm
//! period with one healthy peer, the store keeping up, and every gamer
//! reconnecting and naming what it still awaits — that every acknowledged
//! task reached its gamer, unless its retention ended first or the gamer
//! gave its id to a newer task while still awaiting it. (A seed-literal
//! gamer, which names nothing, can miss an outcome that a crash lost after
//! its mark committed but before the connection wrote it.)
//!
//! Peers answer by cluster id and attempt, as our worker does, or by the
//! id they saw alone, as a seed-literal peer does; such a peer answers each
//! assignment once, and gives a run up rather than answer it past
//! `Config::lost_run_hold` (the contract in docs/PROTOCOL.md). Every check
//! is strict: the world accepts no known bug.
//!
//! A failure names its seed and the tail of the world's trace
//! (`LEGACYGPU_SIM_TRACE=N` lines); `LEGACYGPU_SIM_SEED=N` replays it, and a
//! seed that found a bug becomes an entry in the regression list of
//! `tests/seeds.rs` once fixed. Besides the fixed seeds
//! (`0..LEGACYGPU_SIM_RUNS`, 2000 by default) every test run explores: it
//! draws a fresh seed ([`fresh_seed`]), prints it to the real stderr (past
//! libtest's capture, so it is in every log), and runs consecutive seeds
//! from there for `LEGACYGPU_SIM_BUDGET_S` seconds (10 by default), as
//! TigerBeetle's VOPR does.
//!
//! The style follows quinn-proto's test world and TigerBeetle's VOPR.

mod actions;
mod check;
mod coordinator;
pub mod fleet;
mod shell;
mod world;

use std::hash::{BuildHasher, Hasher};

pub use world::World;

/// Runs one seed; on failure the error names it and carries the trace tail
/// (`LEGACYGPU_SIM_TRACE=N` lines of it, 40 by default).
pub fn run_seed(seed: u64, steps: usize) -> Result<(), String> {
    let mut world = World::new(seed)?;
    world.run(steps).map_err(|e| {
        let lines = std::env::var("LEGACYGPU_SIM_TRACE").ok().and_then(|n| n.parse().ok());
        let tail: Vec<&str> = world.trace.lines().rev().take(lines.unwrap_or(40)).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{e}\n(replay with LEGACYGPU_SIM_SEED={seed})\nlast steps:\n{}", tail.join("\n"))
    })
}

/// A seed no earlier run used: from the OS's randomness (the keys of a
/// `RandomState`) mixed with the time.
pub fn fresh_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(since.map_or(0, |d| d.as_nanos()));
    h.finish()
}

#[cfg(test)]
mod coverage {
    use super::*;

    /// Not an invariant: shows the world exercises what it claims to.
    #[test]
    fn the_world_exercises_failures() {
        let mut totals = sched::Counters::default();
        let (mut acked, mut received, mut again, mut marks) = (0, 0, 0, 0);
        let (mut restarts, mut lost, mut round_trips) = (0, 0, 0);
        let mut alone = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut w = World::new(seed).unwrap();
            w.run(300).unwrap();
            restarts += w.restarts;
            lost += w.lost_batches;
            round_trips += w.round_trips;
            marks += w.shell.marks_written;
            alone.insert(w.alone);
            let c = w.sched.counters();
            totals.completed += c.completed;
            totals.failed += c.failed;
            totals.cancelled += c.cancelled;
            totals.timed_out += c.timed_out;
            totals.requeued += c.requeued;
            totals.stale_results += c.stale_results;
            totals.peers_dead += c.peers_dead;
            acked += w.acked.len();
            for g in &w.gamers {
                received += g.received.len();
                again += g.received.values().filter(|r| r.times > 1).count();
            }
        }
        eprintln!(
            "{totals:?} acked={acked} received={received} again={again} restarts={restarts} \
             lost_batches={lost} round_trips={round_trips} marks={marks} alone={alone:?}"
        );
        assert!(restarts > 100 && lost > 50, "restarts {restarts}, lost batches {lost}");
        assert!(round_trips > 100, "restarts compared with the store: {round_trips}");
        assert!(again > 10 && marks > 1000, "outcomes again {again}, marks {marks}");
        assert!(alone.len() >= 4, "{alone:?}");
        assert!(totals.requeued > 100 && totals.stale_results > 10 && totals.peers_dead > 10);
        assert!(
            totals.completed > 1000
                && totals.failed > 50
                && totals.cancelled > 50
                && totals.timed_out > 10
        );
    }
}
