//! A deterministic mutation fuzzer on stable Rust, for the decoders an
//! outsider reaches.
//!
//! [`run`] takes a target's committed corpus (`fuzz/corpus/TARGET/`), mutates
//! its entries — bit flips, interesting bytes, insertions, deletions,
//! duplications, splices between entries, and JSON-shaped damage such as huge
//! numbers, deep nesting and lone surrogates — and feeds every input to the
//! target's check under `catch_unwind`. It runs fixed seeds first, then a
//! fresh one (printed), within a time budget: `LEGACYGPU_FUZZ_SECS` seconds
//! per target (default 1), and at most 1 000 000 inputs. A panic fails with
//! the seed, the iteration and the input, which is also written under
//! `target/fuzz-failures/` to be added to the corpus once fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The corpus directory of `target` in this repository.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

/// Every file of `target`'s corpus, sorted by name.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default())).collect()
}

/// The time budget per target.
pub fn budget() -> Duration {
    let secs = std::env::var("LEGACYGPU_FUZZ_SECS").ok().and_then(|s| s.parse::<f64>().ok());
    Duration::from_secs_f64(secs.unwrap_or(1.0).max(0.01))
}

const FIXED_SEEDS: [u64; 3] = [1, 0x5eed, 0xdead_beef];
const MAX_INPUTS: u64 = 1_000_000;

/// Fuzzes `check` with mutations of `target`'s corpus; returns how many
/// inputs ran. Panics (with the seed and input) when `check` panics.
pub fn run(target: &str, check: impl Fn(&[u8])) -> u64 {
    let corpus: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, bytes)| bytes).collect();
    let fresh = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    let seeds = FIXED_SEEDS.iter().copied().chain([fresh]);
    let per_seed = budget() / 4;
    let mut inputs = 0;
    for seed in seeds {
        println!("fuzz {target}: seed {seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let deadline = Instant::now() + per_seed;
        let mut i = 0u64;
        while Instant::now() < deadline && i < MAX_INPUTS / 4 {
            let input = mutate(&mut rng, &corpus);
            if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
                let path = save_failure(target, seed, i, &input);
                panic!(
                    "fuzz {target}: seed {seed}, input {i} panicked (saved in {}): {:?}",
                    path.display(),
                    String::from_utf8_lossy(&input)
                );
            }
            i += 1;
        }
        inputs += i;
    }
    println!("fuzz {target}: {inputs} inputs, no panic");
    inputs
}

fn save_failure(target: &str, seed: u64, i: u64, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{seed}-{i}.bin"));
    let _ = std::fs::write(&path, input);
    path
}

/// Bytes JSON decoders have opinions about.
const INTERESTING: &[u8] = b"{}[]\",:\\-+.0eE \t\n\x00\xff\x7fnulltruefalse";

/// JSON-shaped damage.
const TOKENS: &[&str] = &[
    "1e999",
    "-1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "0.000000000000000000000000000001",
    "-0",
    "NaN",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\"\u{10ffff}\"",
    "null",
    "[]",
    "{}",
    "\"msg_type\"",
    "\"register_peer\"",
    "\"task_request\"",
    "\"join\"",
    "\"data\"",
];

/// One input: a corpus entry with one to four mutations.
pub fn mutate(rng: &mut fastrand::Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut input = corpus[rng.usize(..corpus.len())].clone();
    for _ in 0..rng.usize(1..=4) {
        mutate_once(rng, &mut input, corpus);
    }
    input
}

fn mutate_once(rng: &mut fastrand::Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let at = |rng: &mut fastrand::Rng, len: usize| rng.usize(..=len);
    match rng.u8(..9) {
        0 if !input.is_empty() => {
            let i = rng.usize(..input.len());
            input[i] ^= 1 << rng.u8(..8);
        }
        1 if !input.is_empty() => {
            let i = rng.usize(..input.len());
            input[i] = INTERESTING[rng.usize(..INTERESTING.len())];
        }
        2 => {
            let i = at(rng, input.len());
            input.insert(i, INTERESTING[rng.usize(..INTERESTING.len())]);
        }
        3 if !input.is_empty() => {
            let start = rng.usize(..input.len());
            let end = (start + rng.usize(1..=16)).min(input.len());
            input.drain(start..end);
        }
        4 if !input.is_empty() => {
            let start = rng.usize(..input.len());
            let end = (start + rng.usize(1..=32)).min(input.len());
            let chunk = input[start..end].to_vec();
            let i = at(rng, input.len());
            input.splice(i..i, chunk);
        }
        5 => {
            let other = &corpus[rng.usize(..corpus.len())];
            let cut = at(rng, input.len());
            let from = rng.usize(..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        6 => {
            let token = TOKENS[rng.usize(..TOKENS.len())].as_bytes();
            let i = at(rng, input.len());
            input.splice(i..i, token.iter().copied());
        }
        7 => {
            // Deep nesting or a long run, inserted somewhere.
            let i = at(rng, input.len());
            let (open, n) = if rng.bool() { (b'[', rng.usize(1..=300)) } else { (b'a', 4096) };
            input.splice(i..i, std::iter::repeat_n(open, n));
        }
        _ => {
            let cut = at(rng, input.len());
            input.truncate(cut);
        }
    }
}
