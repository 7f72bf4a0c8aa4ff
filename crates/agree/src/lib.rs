//! When results agree: the verification rules of each task type, in one
//! place, registered by task type.
//!
//! The scheduler decides *when* results are compared (replicas, quorum,
//! canaries — `sched::verify`); this crate says *whether* they agree, and it
//! does so without the executors' heavy dependencies (no rapier, wgpu or
//! tract): it reads results as JSON.
//!
//! | task type | rule |
//! |---|---|
//! | `physics` | replicate; agree when the `checksum` fields are equal (rapier's enhanced determinism makes results bit-identical) |
//! | `gpu` matmul | checked alone with Freivalds' algorithm when the result carries `c` and the inputs are small enough to rebuild (see [`matmul`]); else replicate and compare within a float tolerance |
//! | `gpu` n-body | replicate; summaries (kinetic energy, momentum) within 10⁻³ |
//! | `inference` | replicate; the same top-k labels, scores within 10⁻³ |
//! | `generate` | replicate at temperature 0 (equal text); sampled text cannot be verified |
//! | `echo`, `sleep`, any other | replicate; equal canonical JSON |
//!
//! Canaries with answers made here: small seeded matrix products (`gpu`),
//! made from the real task they follow (its text with another seed) when
//! that is one.
//! Other types' canaries are replays of tasks a quorum verified, which the
//! scheduler keeps itself.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use proto::Json;
use sched::verify::{Agreement, Canary, Rule};

mod generate;
mod inference;
pub mod matmul;
mod physics;

/// The rule of one task type, over JSON text.
pub trait TypeRule: fmt::Debug + Send + Sync {
    /// How a task with this payload is judged.
    fn rule(&self, _payload: &str) -> Rule {
        Rule::Replicate
    }

    /// Whether two results agree.
    fn agree(&self, payload: &str, a: &str, b: &str) -> bool;

    /// Whether one result is right on its own ([`Rule::SelfCheck`]);
    /// `seed` draws the check's random vectors.
    fn check(&self, _payload: &str, _result: &str, _seed: u64) -> bool {
        false
    }

    /// A task with its known answer, from `seed`, made like the real task
    /// `like` where it can be: (payload, answer).
    fn canary(&self, _like: &str, _seed: u64) -> Option<(String, String)> {
        None
    }
}

/// Equal canonical JSON: the same value whatever the spacing and key order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exact;

impl TypeRule for Exact {
    fn agree(&self, _: &str, a: &str, b: &str) -> bool {
        canonical_eq(a, b)
    }
}

/// Whether two JSON texts hold the same value (never, when one is not JSON).
pub fn canonical_eq(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The rules by task type; a type without one is compared with [`Exact`].
pub struct Rules {
    by_type: BTreeMap<String, Box<dyn TypeRule>>,
    fallback: Exact,
    /// Seeds for Freivalds' random vectors: a secret base and a counter, so
    /// that a peer cannot know the vector its result is checked with.
    base: u64,
    draws: AtomicU64,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules").field("types", &self.by_type.keys().collect::<Vec<_>>()).finish()
    }
}

impl Rules {
    /// No rule registered: every type is compared with [`Exact`]. `base`
    /// seeds the random draws of checks (give the coordinator a random one).
    pub fn empty(base: u64) -> Rules {
        Rules { by_type: BTreeMap::new(), fallback: Exact, base, draws: AtomicU64::new(0) }
    }

    /// The rules of the task types built into legacygpu.
    pub fn builtin(base: u64) -> Rules {
        let mut rules = Rules::empty(base);
        rules.register("physics", physics::Physics);
        rules.register("gpu", matmul::Gpu);
        rules.register("inference", inference::Inference);
        rules.register("generate", generate::Generate);
        rules.register("echo", Exact);
        rules.register("sleep", Exact);
        rules
    }

    /// Registers (or replaces) the rule of `task_type`.
    pub fn register(&mut self, task_type: &str, rule: impl TypeRule + 'static) {
        self.by_type.insert(task_type.to_owned(), Box::new(rule));
    }

    fn of(&self, task_type: &str) -> &dyn TypeRule {
        self.by_type.get(task_type).map_or(&self.fallback as &dyn TypeRule, |r| r.as_ref())
    }

    /// The next seed for a check: SplitMix64 of the base and a counter.
    fn draw(&self) -> u64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let mut z = self.base.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Agreement<Json> for Rules {
    fn rule(&self, task_type: &str, payload: &Json) -> Rule {
        self.of(task_type).rule(payload.get())
    }

    fn agree(&self, task_type: &str, payload: &Json, a: &Json, b: &Json) -> bool {
        self.of(task_type).agree(payload.get(), a.get(), b.get())
    }

    fn check(&self, task_type: &str, payload: &Json, result: &Json) -> bool {
        self.of(task_type).check(payload.get(), result.get(), self.draw())
    }

    fn canary(&self, task_type: &str, like: &Json, seed: u64) -> Option<Canary<Json>> {
        let (payload, expected) = self.of(task_type).canary(like.get(), seed)?;
        Some(Canary {
            payload: proto::json(&payload).ok()?,
            expected: proto::json(&expected).ok()?,
        })
    }
}

/// Whether `a` and `b` are within `rel` of each other, relative to the
/// larger magnitude (and to 1, so that values near zero compare absolutely).
pub(crate) fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

#[cfg(test)]
mod tests;
