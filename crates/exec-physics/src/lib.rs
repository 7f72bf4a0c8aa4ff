//! The `physics` executor: rigid-body simulation with rapier3d.
//!
//! A task describes a scene — gravity, a time step, a number of steps, bodies
//! (spheres, boxes, capsules; fixed or dynamic; with mass or density,
//! friction, restitution, initial pose and velocities) and an optional ground
//! — and gets back the final state of every body with a checksum of it.
//! rapier's `enhanced-determinism` makes the result bit-identical on every
//! peer, so two peers' answers can be compared field for field (verification
//! compares all but `elapsed_ms`, `crates/agree`).
//!
//! Limits on bodies, steps and their product keep one task from running away
//! with a peer; every malformed or out-of-range input is an `invalid_input`
//! error naming the field and the body.
//!
//! ```
//! use exec::{Executor, RunContext};
//! let scene = exec_physics::example_scene(2, 60);
//! let out = exec_physics::Physics::default().run(&scene.to_string(), &RunContext::unbounded()).unwrap();
//! assert!(out.get().contains("checksum"));
//! ```

use std::time::Instant;

use exec::{Advertised, ExecError, Executor, RunContext, to_output};
use serde::Serialize;
use serde_json::{Value, json};

mod input;
mod simulate;

pub use input::{BodyId, Input, Scene, Shape};
pub use simulate::{BodyState, State, checksum, simulate};

/// Work limits of the physics executor.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bodies in a scene. Default 10 000.
    pub max_bodies: usize,
    /// Most steps. Default 100 000.
    pub max_steps: u32,
    /// Most bodies × steps. Default 50 000 000 (about a minute of work on
    /// an old 4-core machine).
    pub max_body_steps: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bodies: 10_000, max_steps: 100_000, max_body_steps: 50_000_000 }
    }
}

/// The `physics` executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Physics {
    limits: Limits,
}

impl Physics {
    pub fn with_limits(limits: Limits) -> Physics {
        Physics { limits }
    }
}

/// What a `physics` task returns.
#[derive(Serialize)]
struct Report<'a> {
    bodies: &'a [BodyState],
    steps: u32,
    /// xxh3 of the state, 16 hex digits.
    checksum: String,
    elapsed_ms: f64,
}

impl Executor for Physics {
    fn task_type(&self) -> &str {
        "physics"
    }

    fn advertise(&self) -> Advertised {
        Advertised::default()
    }

    fn run(&self, input: &str, ctx: &RunContext) -> Result<exec::Output, ExecError> {
        let start = Instant::now();
        let scene = Scene::parse(input, &self.limits)?;
        let state = simulate(&scene, ctx)?;
        let out = Report {
            bodies: &state.bodies,
            steps: state.steps,
            checksum: format!("{:016x}", checksum(&state)),
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        to_output(&out)
    }
}

/// A deterministic scene: `n` spheres and boxes in a grid above a ground,
/// for demos and benchmarks.
pub fn example_scene(n: usize, steps: u32) -> Value {
    let side = (n as f64).cbrt().ceil().max(1.0) as usize;
    let bodies: Vec<Value> = (0..n)
        .map(|i| {
            let (x, y, z) = (i % side, (i / side) % side, i / (side * side));
            let position =
                [x as f32 * 1.5 - side as f32 * 0.75, 2.0 + y as f32 * 1.5, z as f32 * 1.5];
            let shape = if i % 2 == 0 {
                json!({"type": "sphere", "radius": 0.5})
            } else {
                json!({"type": "box", "half_extents": [0.4, 0.4, 0.4]})
            };
            json!({"id": i, "shape": shape, "position": position, "density": 1.0})
        })
        .collect();
    json!({"steps": steps, "dt": 1.0 / 60.0, "ground": {"y": 0.0}, "bodies": bodies})
}

#[cfg(test)]
mod tests;
