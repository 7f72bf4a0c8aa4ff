//! The product bugs the simulation found and the suite still accepts
//! (`sim::KnownBugs`, whose docs describe each): with one no longer
//! accepted, the world finds it within a few thousand seeds. Ignored, as
//! they fail only once the bug is fixed — then drop its flag and its test:
//!
//! ```sh
//! cargo test -p sim --test known_bugs -- --ignored
//! ```

use sim::KnownBugs;

const STEPS: usize = 300;
const SEEDS: u64 = 5000;

/// The first seed among `0..SEEDS` that fails with `known`, and its error.
fn first_failure(known: KnownBugs) -> Option<(u64, String)> {
    (0..SEEDS).find_map(|seed| sim::run_seed_with(seed, STEPS, known).err().map(|e| (seed, e)))
}

/// Asserts that without accepting `bug` a seed fails with `what`.
fn still_found(known: KnownBugs, what: &str) {
    let Some((seed, error)) = first_failure(known) else {
        panic!("no seed in 0..{SEEDS} shows it any more: fixed? then remove its KnownBugs flag");
    };
    let first = error.lines().next().unwrap_or_default();
    eprintln!("{first}");
    assert!(error.contains(what), "seed {seed} failed otherwise:\n{error}");
}

#[test]
#[ignore = "a known bug: fails once fixed"]
fn wire_ids_of_lost_runs() {
    // The last known bug: without it, none is accepted.
    let known = KnownBugs::NONE;
    still_found(known, " of task #");
}
