//! Thousands of seeded worlds (see the crate docs for the invariants).
//! `LEGACYGPU_SIM_RUNS=N` runs more; `LEGACYGPU_SIM_SEED=N` replays one.

const STEPS: usize = 300;

#[test]
fn thousands_of_seeded_worlds() {
    let runs: u64 =
        std::env::var("LEGACYGPU_SIM_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    for seed in 0..runs {
        if let Err(e) = sim::run_seed(seed, STEPS) {
            panic!("{e}");
        }
    }
}

#[test]
fn replay_one_seed() {
    if let Some(seed) = std::env::var("LEGACYGPU_SIM_SEED").ok().and_then(|n| n.parse().ok())
        && let Err(e) = sim::run_seed(seed, STEPS)
    {
        panic!("{e}");
    }
}

/// Seeds that once found bugs, kept as regressions:
/// - 1: a peer reclaiming more tasks than its slots after reconnecting.
/// - 4: a result from a peer's earlier run accepted for its current attempt
///   (allowed for peers that do not echo attempts; the check was refined).
#[test]
fn regressions() {
    for seed in [1, 4] {
        if let Err(e) = sim::run_seed(seed, STEPS) {
            panic!("{e}");
        }
    }
}
