//! Running a [`Scene`] with rapier and reading back the final state.
//!
//! Determinism: rapier is built with `enhanced-determinism`, bodies and
//! colliders are inserted in input order and read back in that order, and
//! nothing here iterates a hash map; the same scene gives bit-identical
//! states on every run and every machine (see docs/tasks/physics.md).

use exec::{ExecError, RunContext};
use rapier3d::math::{Pose, Rotation, Vector};
use rapier3d::prelude::{ColliderBuilder, PhysicsWorld, RigidBodyBuilder, RigidBodyHandle};
use serde::Serialize;

use crate::input::{BodyId, BodyInput, Scene, Shape};

/// How often (in steps) a run checks for cancellation and its deadline.
const CHECK_EVERY: u32 = 8;

/// The ground is a fixed slab this thick (its top is at `ground.y`) and this wide.
const GROUND_HALF_HEIGHT: f32 = 0.5;
const GROUND_HALF_WIDTH: f32 = 10_000.0;

/// A body's final state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BodyState {
    pub id: BodyId,
    pub position: [f32; 3],
    /// A quaternion `[x, y, z, w]`.
    pub rotation: [f32; 4],
    pub linear_velocity: [f32; 3],
    pub angular_velocity: [f32; 3],
    pub sleeping: bool,
}

/// The final state of every body, in input order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct State {
    pub bodies: Vec<BodyState>,
    pub steps: u32,
}

/// Runs `scene` to its last step, checking `ctx` between steps.
pub fn simulate(scene: &Scene, ctx: &RunContext) -> Result<State, ExecError> {
    let mut world = PhysicsWorld { gravity: vec3(scene.gravity), ..PhysicsWorld::default() };
    world.integration_parameters.dt = scene.dt;
    if let Some(ground) = &scene.ground {
        let top = ground.y - GROUND_HALF_HEIGHT;
        let body = RigidBodyBuilder::fixed().translation(Vector::new(0.0, top, 0.0));
        let mut slab =
            ColliderBuilder::cuboid(GROUND_HALF_WIDTH, GROUND_HALF_HEIGHT, GROUND_HALF_WIDTH);
        if let Some(f) = ground.friction {
            slab = slab.friction(f);
        }
        if let Some(r) = ground.restitution {
            slab = slab.restitution(r);
        }
        world.insert(body, slab);
    }
    let handles: Vec<RigidBodyHandle> =
        scene.bodies.iter().map(|b| insert(&mut world, b).0).collect();
    for step in 0..scene.steps {
        if step % CHECK_EVERY == 0 {
            ctx.check()?;
        }
        world.step();
    }
    let bodies = scene
        .bodies
        .iter()
        .zip(&handles)
        .map(|(input, handle)| {
            let body = &world.bodies[*handle];
            BodyState {
                id: input.id.clone(),
                position: body.translation().to_array(),
                rotation: body.rotation().to_array(),
                linear_velocity: body.linvel().to_array(),
                angular_velocity: body.angvel().to_array(),
                sleeping: body.is_sleeping(),
            }
        })
        .collect();
    Ok(State { bodies, steps: scene.steps })
}

fn insert(
    world: &mut PhysicsWorld,
    b: &BodyInput,
) -> (RigidBodyHandle, rapier3d::prelude::ColliderHandle) {
    let [x, y, z, w] = b.rotation;
    let pose = Pose::from_parts(vec3(b.position), Rotation::from_xyzw(x, y, z, w));
    let builder = if b.fixed { RigidBodyBuilder::fixed() } else { RigidBodyBuilder::dynamic() };
    let body = builder.pose(pose).linvel(vec3(b.linear_velocity)).angvel(vec3(b.angular_velocity));
    let mut collider = match b.shape {
        Shape::Sphere { radius } => ColliderBuilder::ball(radius),
        Shape::Box { half_extents: [hx, hy, hz] } => ColliderBuilder::cuboid(hx, hy, hz),
        Shape::Capsule { half_height, radius } => ColliderBuilder::capsule_y(half_height, radius),
    };
    collider = match (b.mass, b.density) {
        (Some(mass), _) => collider.mass(mass),
        (None, Some(density)) => collider.density(density),
        (None, None) => collider.density(1.0),
    };
    if let Some(f) = b.friction {
        collider = collider.friction(f);
    }
    if let Some(r) = b.restitution {
        collider = collider.restitution(r);
    }
    world.insert(body, collider)
}

fn vec3([x, y, z]: [f32; 3]) -> Vector {
    Vector::new(x, y, z)
}

/// A stable 64-bit checksum of a state: xxh3 over the little-endian bit
/// patterns of every body's position, rotation and velocities, in input
/// order (ids and the sleeping flags are not included). Two peers agree on
/// a result exactly when their checksums agree.
pub fn checksum(state: &State) -> u64 {
    let mut bytes = Vec::with_capacity(state.bodies.len() * 13 * 4);
    for b in &state.bodies {
        let floats = b
            .position
            .iter()
            .chain(&b.rotation)
            .chain(&b.linear_velocity)
            .chain(&b.angular_velocity);
        for f in floats {
            bytes.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
