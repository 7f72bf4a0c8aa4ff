//! `gpu`: Freivalds' check of a matrix product, and float tolerances.
//!
//! A peer's `C = A·B` is checked without multiplying again: for a random
//! vector `r`, `A·(B·r)` must equal `C·r`, which costs O(mk + kn + mn)
//! instead of O(mkn). `r`'s entries are drawn in [0.5, 1.5) from a seed the
//! peer cannot know, so a wrong element `c_ij` off by δ moves row `i` of
//! `C·r` by at least δ/2, and errors cannot cancel but by chance of measure
//! zero. One vector suffices.
//!
//! Floats: the GPU sums in another order than the CPU, so row `i` may differ
//! by rounding. The bound used is `8·k·2⁻²⁴ · (|A|·(|B|·r))_i` — eight times
//! the worst case of a k-term f32 dot product — plus 10⁻⁹. For 64×64×64
//! inputs in [-1, 1) an element off by more than about 0.03 is caught.
//!
//! The check applies when the result carries `c` (at most 65 536 numbers,
//! as the executor returns it) and rebuilding the inputs stays within
//! [`CHECK_BUDGET`] numbers; seeded inputs are rebuilt exactly as the
//! executor makes them (`fastrand` from the seed, `b` from seed + 1). Other
//! `gpu` tasks are replicated, and their results compared within 10⁻³:
//! `c` element by element, else the summaries (`sum`, `l2` for matmul;
//! kinetic energy and momentum for n-body).

use serde::Deserialize;
use serde_json::json;

use crate::{TypeRule, close};
use sched::verify::Rule;

/// The most input numbers (`m·k + k·n`) rebuilt for a check; beyond, the
/// task is replicated instead (rebuilding would cost the core loop more
/// than a few milliseconds).
pub const CHECK_BUDGET: usize = 4 << 20;

/// The executor returns `c` when it has at most this many numbers.
const MAX_RETURNED: usize = 65_536;

/// How far two peers' floats may be apart, relative.
const TOLERANCE: f64 = 1e-3;

/// The `gpu` task type's rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gpu;

/// A matmul's inputs, as far as checking needs them.
#[derive(Deserialize)]
struct Shape {
    op: String,
    m: Option<u32>,
    k: Option<u32>,
    n: Option<u32>,
    #[serde(default)]
    a: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Deserialize)]
struct Inputs {
    m: u32,
    k: u32,
    n: u32,
    #[serde(default)]
    a: Option<Vec<f32>>,
    #[serde(default)]
    b: Option<Vec<f32>>,
    #[serde(default)]
    seed: Option<u64>,
}

/// What a result says, as far as comparing needs it.
#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    m: Option<u32>,
    #[serde(default)]
    k: Option<u32>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    c: Option<Vec<f32>>,
    #[serde(default)]
    sum: Option<f64>,
    #[serde(default)]
    l2: Option<f64>,
    #[serde(default)]
    kinetic_energy: Option<f64>,
    #[serde(default)]
    momentum: Option<[f64; 3]>,
}

impl TypeRule for Gpu {
    fn rule(&self, payload: &str) -> Rule {
        match serde_json::from_str::<Shape>(payload) {
            Ok(s) if s.op == "matmul" && checkable(&s) => Rule::SelfCheck,
            _ => Rule::Replicate,
        }
    }

    fn agree(&self, _: &str, a: &str, b: &str) -> bool {
        let (Ok(a), Ok(b)) = (serde_json::from_str::<Output>(a), serde_json::from_str::<Output>(b))
        else {
            return false;
        };
        outputs_agree(&a, &b)
    }

    fn check(&self, payload: &str, result: &str, seed: u64) -> bool {
        let Ok(inputs) = serde_json::from_str::<Inputs>(payload) else { return false };
        let Ok(out) = serde_json::from_str::<Output>(result) else { return false };
        let Some((a, b)) = matrices(&inputs) else { return false };
        let (m, k, n) = (inputs.m as usize, inputs.k as usize, inputs.n as usize);
        let shape = out.m == Some(inputs.m)
            && out.n == Some(inputs.n)
            && out.k.is_none_or(|k| k == inputs.k)
            && out.op.as_deref().is_none_or(|op| op == "matmul");
        match out.c {
            Some(c) if shape => {
                summaries_match(&c, out.sum, out.l2) && freivalds(&a, &b, &c, (m, k, n), seed)
            }
            _ => false,
        }
    }

    fn canary(&self, like: &str, seed: u64) -> Option<(String, String)> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let data_seed = rng.u64(..1 << 53);
        // The real task's own text with another seed, when it is a seeded
        // matmul small enough to multiply here; else one of our clients'
        // shape (`{"op","m","k","n","seed"}`, the SDK's and the demo's).
        let payload = reseeded(like, data_seed).unwrap_or_else(|| {
            let (m, k, n) = (rng.u32(16..=96), rng.u32(16..=96), rng.u32(16..=96));
            format!(r#"{{"op":"matmul","m":{m},"k":{k},"n":{n},"seed":{data_seed}}}"#)
        });
        let i: Inputs = serde_json::from_str(&payload).ok()?;
        let (m, k, n) = (i.m as usize, i.k as usize, i.n as usize);
        let (a, b) = (generate(data_seed, m * k), generate(data_seed.wrapping_add(1), k * n));
        let c = multiply(&a, &b, (m, k, n));
        let sum: f64 = c.iter().map(|&x| f64::from(x)).sum();
        let l2 = c.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let answer = json!({"op": "matmul", "m": m, "k": k, "n": n, "c": c, "sum": sum, "l2": l2});
        Some((payload, answer.to_string()))
    }
}

/// The most multiply-adds (`m·k·n`) a canary made from a real task may
/// cost the core loop (128³: about 2 ms).
const CANARY_BUDGET: u64 = 1 << 21;

/// `like`'s text with its `seed` replaced by `seed`, byte for byte the same
/// elsewhere (key order, spacing, other fields such as `device`), when
/// `like` is a seeded matmul within [`CANARY_BUDGET`] whose result carries
/// `c`.
fn reseeded(like: &str, seed: u64) -> Option<String> {
    let shape: Shape = serde_json::from_str(like).ok()?;
    let (m, k, n) = (u64::from(shape.m?), u64::from(shape.k?), u64::from(shape.n?));
    let fits = m * k * n <= CANARY_BUDGET && m * n <= MAX_RETURNED as u64 && m * k * n > 0;
    if shape.op != "matmul" || shape.a.is_some() || shape.seed.is_none() || !fits {
        return None;
    }
    let members: Members<'_> = serde_json::from_str(like).ok()?;
    let value = members.0.iter().find(|(key, _)| key == "seed")?.1.get();
    // The value's place in the text: the raw value borrows from it (checked
    // all the same: this text comes from a client).
    let at = (value.as_ptr() as usize).checked_sub(like.as_ptr() as usize)?;
    let end = at.checked_add(value.len())?;
    (like.get(at..end)? == value).then(|| format!("{}{seed}{}", &like[..at], &like[end..]))
}

/// A JSON object's members in the order of its text, each value borrowed
/// from the text.
struct Members<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Whether a matmul of this shape can be checked alone.
fn checkable(s: &Shape) -> bool {
    let (Some(m), Some(k), Some(n)) = (s.m, s.k, s.n) else { return false };
    let (m, k, n) = (m as usize, k as usize, n as usize);
    let inputs = m.saturating_mul(k).saturating_add(k.saturating_mul(n));
    let given = s.a.is_some() || s.seed.is_some();
    given && m.saturating_mul(n) <= MAX_RETURNED && inputs <= CHECK_BUDGET && m * k * n > 0
}

/// A and B, given or rebuilt from the seed; `None` when they do not fit
/// the shape or the budget.
fn matrices(i: &Inputs) -> Option<(Vec<f32>, Vec<f32>)> {
    let (m, k, n) = (i.m as usize, i.k as usize, i.n as usize);
    let (ak, kn) = (m.checked_mul(k)?, k.checked_mul(n)?);
    if ak.checked_add(kn)? > CHECK_BUDGET {
        return None;
    }
    let (a, b) = match (&i.a, &i.b, i.seed) {
        (Some(a), Some(b), None) => (a.clone(), b.clone()),
        (None, None, Some(seed)) => (generate(seed, ak), generate(seed.wrapping_add(1), kn)),
        _ => return None,
    };
    (a.len() == ak && b.len() == kn).then_some((a, b))
}

/// The executor's seeded numbers in [-1, 1) (`exec-gpu`'s `input.rs`).
pub fn generate(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// C = A·B, summed in f64 and rounded to f32 (for canaries' answers).
pub fn multiply(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|l| f64::from(a[i * k + l]) * f64::from(b[l * n + j])).sum();
            c[i * n + j] = dot as f32;
        }
    }
    c
}

/// Freivalds' check of `c = a·b` with a random vector drawn from `seed`.
pub fn freivalds(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    (m, k, n): (usize, usize, usize),
    seed: u64,
) -> bool {
    if a.len() != m * k || b.len() != k * n || c.len() != m * n || !c.iter().all(|x| x.is_finite())
    {
        return false;
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let r: Vec<f64> = (0..n).map(|_| 0.5 + rng.f64()).collect();
    // B·r and |B|·r.
    let (mut br, mut abs_br) = (vec![0.0f64; k], vec![0.0f64; k]);
    for j in 0..k {
        let row = &b[j * n..(j + 1) * n];
        for (x, rl) in row.iter().zip(&r) {
            br[j] += f64::from(*x) * rl;
            abs_br[j] += f64::from(x.abs()) * rl;
        }
    }
    let bound = 8.0 * k as f64 * f64::from(f32::EPSILON) / 2.0;
    (0..m).all(|i| {
        let a_row = &a[i * k..(i + 1) * k];
        let (mut y, mut scale) = (0.0f64, 0.0f64);
        for (x, (v, av)) in a_row.iter().zip(br.iter().zip(&abs_br)) {
            y += f64::from(*x) * v;
            scale += f64::from(x.abs()) * av;
        }
        let c_row = &c[i * n..(i + 1) * n];
        let z: f64 = c_row.iter().zip(&r).map(|(x, rl)| f64::from(*x) * rl).sum();
        (y - z).abs() <= bound * scale + 1e-9
    })
}

/// Whether the `sum` and `l2` a result states are those of its `c` (the
/// executor sums `c` in order in f64, so they match but for the last bits;
/// a summary that is absent is not checked).
fn summaries_match(c: &[f32], sum: Option<f64>, l2: Option<f64>) -> bool {
    const EXACT: f64 = 1e-9;
    let true_sum: f64 = c.iter().map(|&x| f64::from(x)).sum();
    let true_l2 = c.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let ok = |stated: Option<f64>, truth: f64| {
        stated.is_none_or(|s| s.is_finite() && close(s, truth, EXACT))
    };
    ok(sum, true_sum) && ok(l2, true_l2)
}

fn outputs_agree(a: &Output, b: &Output) -> bool {
    if a.op != b.op || a.m != b.m || a.k != b.k || a.n != b.n {
        return false;
    }
    let both = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => x.is_finite() && y.is_finite() && close(x, y, TOLERANCE),
        (None, None) => true,
        _ => false,
    };
    if let (Some(x), Some(y)) = (&a.c, &b.c) {
        let same = |(p, q): (&f32, &f32)| close(f64::from(*p), f64::from(*q), TOLERANCE);
        return x.len() == y.len()
            && x.iter().zip(y).all(same)
            && both(a.sum, b.sum)
            && both(a.l2, b.l2);
    }
    let momentum = match (a.momentum, b.momentum) {
        (Some(x), Some(y)) => x.iter().zip(&y).all(|(p, q)| close(*p, *q, TOLERANCE)),
        (None, None) => true,
        _ => false,
    };
    a.c.is_none()
        && b.c.is_none()
        && both(a.sum, b.sum)
        && both(a.l2, b.l2)
        && both(a.kinetic_energy, b.kinetic_energy)
        && momentum
}
