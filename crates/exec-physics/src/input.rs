//! The `physics` task's input, and its validation into a [`Scene`].

use std::collections::BTreeSet;

use exec::ExecError;
use serde::{Deserialize, Serialize};

use crate::Limits;

/// A body's id, kept exactly as given (a string or an integer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BodyId {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for BodyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyId::Int(n) => write!(f, "{n}"),
            BodyId::Text(s) => write!(f, "{s}"),
        }
    }
}

/// A collision shape. Sizes are in metres.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    Sphere {
        radius: f32,
    },
    Box {
        half_extents: [f32; 3],
    },
    /// Along the body's Y axis: a cylinder of `half_height` capped by two half-spheres.
    Capsule {
        half_height: f32,
        radius: f32,
    },
}

/// One body of the input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyInput {
    pub id: BodyId,
    pub shape: Shape,
    #[serde(default)]
    pub position: [f32; 3],
    /// A quaternion `[x, y, z, w]`; normalised. Default: no rotation.
    #[serde(default = "identity")]
    pub rotation: [f32; 4],
    #[serde(default)]
    pub linear_velocity: [f32; 3],
    #[serde(default)]
    pub angular_velocity: [f32; 3],
    /// The body's mass in kg (instead of `density`).
    #[serde(default)]
    pub mass: Option<f32>,
    /// kg/m³; default 1 when `mass` is not given either.
    #[serde(default)]
    pub density: Option<f32>,
    /// A fixed body never moves.
    #[serde(default)]
    pub fixed: bool,
    #[serde(default)]
    pub friction: Option<f32>,
    #[serde(default)]
    pub restitution: Option<f32>,
}

fn identity() -> [f32; 4] {
    [0.0, 0.0, 0.0, 1.0]
}

/// An optional ground: a fixed, flat floor whose top is at `y`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ground {
    #[serde(default)]
    pub y: f32,
    #[serde(default)]
    pub friction: Option<f32>,
    #[serde(default)]
    pub restitution: Option<f32>,
}

/// The whole input of a `physics` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default = "default_gravity")]
    pub gravity: [f32; 3],
    /// Seconds per step.
    #[serde(default = "default_dt")]
    pub dt: f32,
    pub steps: u32,
    pub bodies: Vec<BodyInput>,
    #[serde(default)]
    pub ground: Option<Ground>,
}

fn default_gravity() -> [f32; 3] {
    [0.0, -9.81, 0.0]
}

fn default_dt() -> f32 {
    1.0 / 60.0
}

/// The longest step accepted, in seconds.
pub const MAX_DT: f32 = 1.0;

/// A validated input: everything finite and in range, rotations normalised.
#[derive(Debug, Clone)]
pub struct Scene {
    pub gravity: [f32; 3],
    pub dt: f32,
    pub steps: u32,
    pub bodies: Vec<BodyInput>,
    pub ground: Option<Ground>,
}

impl Scene {
    /// Parses and validates a task's input.
    pub fn parse(input: &str, limits: &Limits) -> Result<Scene, ExecError> {
        let input: Input = serde_json::from_str(input).map_err(ExecError::invalid)?;
        Scene::validate(input, limits)
    }

    pub fn validate(input: Input, limits: &Limits) -> Result<Scene, ExecError> {
        check_limits(&input, limits)?;
        finite("gravity", &input.gravity)?;
        if !(input.dt.is_finite() && input.dt > 0.0 && input.dt <= MAX_DT) {
            return Err(bad(format!(
                "dt must be a number of seconds in (0, {MAX_DT}], got {}",
                input.dt
            )));
        }
        let mut ids = BTreeSet::new();
        let mut bodies = input.bodies;
        for body in &mut bodies {
            if !ids.insert(body.id.clone()) {
                return Err(bad(format!("body id {} appears twice", body.id)));
            }
            check_body(body)?;
        }
        if let Some(ground) = &input.ground {
            finite("ground.y", &[ground.y])?;
            material("ground", ground.friction, ground.restitution)?;
        }
        Ok(Scene {
            gravity: input.gravity,
            dt: input.dt,
            steps: input.steps,
            bodies,
            ground: input.ground,
        })
    }
}

fn check_limits(input: &Input, limits: &Limits) -> Result<(), ExecError> {
    let (n, steps) = (input.bodies.len() as u64, u64::from(input.steps));
    if n > limits.max_bodies as u64 {
        return Err(ExecError::LimitExceeded(format!(
            "{n} bodies, over the limit of {}",
            limits.max_bodies
        )));
    }
    if steps > u64::from(limits.max_steps) {
        return Err(ExecError::LimitExceeded(format!(
            "{steps} steps, over the limit of {}",
            limits.max_steps
        )));
    }
    if n * steps > limits.max_body_steps {
        return Err(ExecError::LimitExceeded(format!(
            "{n} bodies × {steps} steps = {} body-steps, over the limit of {}",
            n * steps,
            limits.max_body_steps
        )));
    }
    Ok(())
}

fn check_body(body: &mut BodyInput) -> Result<(), ExecError> {
    let id = &body.id;
    let field = |name: &str| format!("body {id}: {name}");
    finite(&field("position"), &body.position)?;
    finite(&field("linear_velocity"), &body.linear_velocity)?;
    finite(&field("angular_velocity"), &body.angular_velocity)?;
    finite(&field("rotation"), &body.rotation)?;
    let [x, y, z, w] = body.rotation;
    let norm = (x * x + y * y + z * z + w * w).sqrt();
    if norm < 1e-6 {
        return Err(bad(format!("body {id}: rotation must be a non-zero quaternion [x, y, z, w]")));
    }
    body.rotation = [x / norm, y / norm, z / norm, w / norm];
    match &body.shape {
        Shape::Sphere { radius } => positive(&field("shape.radius"), *radius)?,
        Shape::Box { half_extents } => {
            for (axis, h) in ["x", "y", "z"].iter().zip(half_extents) {
                positive(&field(&format!("shape.half_extents.{axis}")), *h)?;
            }
        }
        Shape::Capsule { half_height, radius } => {
            positive(&field("shape.half_height"), *half_height)?;
            positive(&field("shape.radius"), *radius)?;
        }
    }
    match (body.mass, body.density) {
        (Some(_), Some(_)) => {
            return Err(bad(format!("body {id}: give mass or density, not both")));
        }
        (Some(m), None) => positive(&field("mass"), m)?,
        (None, Some(d)) => positive(&field("density"), d)?,
        (None, None) => {}
    }
    material(&format!("body {id}"), body.friction, body.restitution)
}

fn material(what: &str, friction: Option<f32>, restitution: Option<f32>) -> Result<(), ExecError> {
    for (name, value) in [("friction", friction), ("restitution", restitution)] {
        if let Some(v) = value
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(bad(format!("{what}: {name} must be a number ≥ 0, got {v}")));
        }
    }
    Ok(())
}

fn finite(what: &str, values: &[f32]) -> Result<(), ExecError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(bad(format!("{what} must be finite numbers, got {values:?}")))
    }
}

fn positive(what: &str, v: f32) -> Result<(), ExecError> {
    if v.is_finite() && v > 0.0 { Ok(()) } else { Err(bad(format!("{what} must be > 0, got {v}"))) }
}

fn bad(reason: String) -> ExecError {
    ExecError::InvalidInput(reason)
}
