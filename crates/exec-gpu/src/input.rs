//! The `gpu` task's input and its validation.

use exec::ExecError;
use serde::Deserialize;

use crate::Limits;
use crate::cpu::Body;

/// Where to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The GPU when this peer has one, else the CPU.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Matmul,
    Nbody,
}

/// The raw input: one struct for both operations, validated per operation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    op: Op,
    #[serde(default)]
    device: DeviceChoice,
    #[serde(default)]
    seed: Option<u64>,
    // matmul
    m: Option<u32>,
    k: Option<u32>,
    n: Option<u32>,
    a: Option<Vec<f32>>,
    b: Option<Vec<f32>>,
    // nbody
    bodies: Option<Vec<BodyIn>>,
    steps: Option<u32>,
    dt: Option<f32>,
    softening: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyIn {
    pos: [f32; 3],
    #[serde(default)]
    vel: [f32; 3],
    mass: f32,
}

/// A validated request.
#[derive(Debug, Clone)]
pub enum Request {
    Matmul(Matmul),
    Nbody(Nbody),
}

/// C = A × B with A: m×k, B: k×n, row-major.
#[derive(Debug, Clone)]
pub struct Matmul {
    pub m: u32,
    pub k: u32,
    pub n: u32,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub device: DeviceChoice,
}

/// `steps` of all-pairs gravity with softening² `eps2`.
#[derive(Debug, Clone)]
pub struct Nbody {
    pub bodies: Vec<Body>,
    pub steps: u32,
    pub dt: f32,
    pub eps2: f32,
    pub device: DeviceChoice,
}

impl Request {
    pub fn parse(input: &str, limits: &Limits) -> Result<Request, ExecError> {
        let raw: Raw = serde_json::from_str(input).map_err(ExecError::invalid)?;
        match raw.op {
            Op::Matmul => matmul(raw, limits),
            Op::Nbody => nbody(raw, limits),
        }
    }
}

fn matmul(raw: Raw, limits: &Limits) -> Result<Request, ExecError> {
    let dim = |name: &str, v: Option<u32>| -> Result<u32, ExecError> {
        match v {
            None => Err(bad(format!("matmul needs `{name}`"))),
            Some(0) => Err(bad(format!("`{name}` must be at least 1"))),
            Some(d) if d > limits.max_dim => Err(ExecError::LimitExceeded(format!(
                "`{name}` = {d} is over the limit of {}",
                limits.max_dim
            ))),
            Some(d) => Ok(d),
        }
    };
    let (m, k, n) = (dim("m", raw.m)?, dim("k", raw.k)?, dim("n", raw.n)?);
    let (ak, kn) = (m as usize * k as usize, k as usize * n as usize);
    let (a, b) = match (raw.a, raw.b, raw.seed) {
        (Some(a), Some(b), None) => {
            if a.len() != ak || b.len() != kn {
                return Err(bad(format!(
                    "`a` must have m×k = {ak} numbers and `b` k×n = {kn}; got {} and {}",
                    a.len(),
                    b.len()
                )));
            }
            finite("a", a.iter().copied())?;
            finite("b", b.iter().copied())?;
            (a, b)
        }
        (None, None, Some(seed)) => (generate(seed, ak), generate(seed.wrapping_add(1), kn)),
        (None, None, None) => {
            return Err(bad("matmul needs `a` and `b`, or a `seed` to generate them".into()));
        }
        _ => return Err(bad("give `a` and `b`, or a `seed`, not a mix".into())),
    };
    Ok(Request::Matmul(Matmul { m, k, n, a, b, device: raw.device }))
}

fn nbody(raw: Raw, limits: &Limits) -> Result<Request, ExecError> {
    let steps = raw.steps.ok_or_else(|| bad("nbody needs `steps`".into()))?;
    let dt = raw.dt.unwrap_or(0.01);
    let softening = raw.softening.unwrap_or(0.05);
    if !(dt.is_finite() && dt > 0.0) {
        return Err(bad(format!("`dt` must be > 0, got {dt}")));
    }
    if !(softening.is_finite() && softening > 0.0) {
        return Err(bad(format!("`softening` must be > 0, got {softening}")));
    }
    let bodies = match (raw.bodies, raw.n, raw.seed) {
        (Some(bodies), None, None) => {
            let mut out = Vec::with_capacity(bodies.len());
            for (i, b) in bodies.iter().enumerate() {
                finite(
                    &format!("bodies[{i}]"),
                    b.pos.iter().chain(&b.vel).chain([&b.mass]).copied(),
                )?;
                if b.mass <= 0.0 {
                    return Err(bad(format!("bodies[{i}].mass must be > 0")));
                }
                let [x, y, z] = b.pos;
                let [vx, vy, vz] = b.vel;
                out.push(Body { pos: [x, y, z, b.mass], vel: [vx, vy, vz, 0.0] });
            }
            out
        }
        (None, Some(n), Some(seed)) => galaxy(n as usize, seed),
        (None, None, _) => return Err(bad("nbody needs `bodies`, or `n` and a `seed`".into())),
        _ => return Err(bad("give `bodies`, or `n` and a `seed`, not a mix".into())),
    };
    check_nbody(bodies.len(), steps, limits)?;
    Ok(Request::Nbody(Nbody { bodies, steps, dt, eps2: softening * softening, device: raw.device }))
}

fn check_nbody(n: usize, steps: u32, limits: &Limits) -> Result<(), ExecError> {
    if n == 0 {
        return Err(bad("nbody needs at least one body".into()));
    }
    if n > limits.max_bodies {
        return Err(ExecError::LimitExceeded(format!(
            "{n} bodies, over the limit of {}",
            limits.max_bodies
        )));
    }
    if steps > limits.max_steps {
        return Err(ExecError::LimitExceeded(format!(
            "{steps} steps, over the limit of {}",
            limits.max_steps
        )));
    }
    let work = (n as u64) * (n as u64) * u64::from(steps);
    if work > limits.max_interactions {
        return Err(ExecError::LimitExceeded(format!(
            "{n}² × {steps} steps = {work} interactions, over the limit of {}",
            limits.max_interactions
        )));
    }
    Ok(())
}

/// Deterministic numbers in [-1, 1).
fn generate(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// A deterministic cloud of `n` bodies in a unit cube, at rest, masses in [0.5, 1.5).
fn galaxy(n: usize, seed: u64) -> Vec<Body> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            let mut c = || rng.f32() * 2.0 - 1.0;
            let pos = [c(), c(), c()];
            Body { pos: [pos[0], pos[1], pos[2], 0.5 + rng.f32()], vel: [0.0; 4] }
        })
        .collect()
}

fn finite(what: &str, values: impl IntoIterator<Item = f32>) -> Result<(), ExecError> {
    if values.into_iter().all(f32::is_finite) {
        Ok(())
    } else {
        Err(bad(format!("`{what}` holds a number that is not finite")))
    }
}

fn bad(reason: String) -> ExecError {
    ExecError::InvalidInput(reason)
}
