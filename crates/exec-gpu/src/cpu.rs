//! The same maths as the shaders, on the CPU: the fallback on machines
//! without an adapter, and the reference the GPU results are checked against.

/// C = A × B, row-major, A: m×k, B: k×n.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    // i-k-j order: the inner loop walks rows of B and C contiguously.
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let aip = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            for (cij, bpj) in row.iter_mut().zip(brow) {
                *cij += aip * bpj;
            }
        }
    }
    c
}

/// One body: position, mass, velocity.
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Body {
    /// (x, y, z, mass): the layout of the shader's `pos` buffer.
    pub pos: [f32; 4],
    /// (vx, vy, vz, 0).
    pub vel: [f32; 4],
}

/// Advances `bodies` by `steps` of all-pairs gravity (G = 1, softening
/// `eps2`), symplectic Euler: velocities from current positions, then
/// positions. `check` is called between steps and may stop the run.
pub fn nbody<E>(
    bodies: &mut [Body],
    dt: f32,
    eps2: f32,
    steps: u32,
    mut check: impl FnMut() -> Result<(), E>,
) -> Result<(), E> {
    let n = bodies.len();
    let mut acc = vec![[0.0f32; 3]; n];
    for _ in 0..steps {
        check()?;
        for (i, a) in acc.iter_mut().enumerate() {
            let pi = bodies[i].pos;
            let mut sum = [0.0f32; 3];
            for bj in bodies.iter() {
                let d = [bj.pos[0] - pi[0], bj.pos[1] - pi[1], bj.pos[2] - pi[2]];
                let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] + eps2;
                let inv_r = 1.0 / r2.sqrt();
                let s = bj.pos[3] * inv_r * inv_r * inv_r;
                sum = [sum[0] + d[0] * s, sum[1] + d[1] * s, sum[2] + d[2] * s];
            }
            *a = sum;
        }
        for (b, a) in bodies.iter_mut().zip(&acc) {
            for (v, a) in b.vel.iter_mut().zip(a) {
                *v += a * dt;
            }
        }
        for b in bodies.iter_mut() {
            let vel = b.vel;
            for (p, v) in b.pos.iter_mut().zip(&vel[..3]) {
                *p += v * dt;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_by_hand() {
        // [1 2; 3 4] × [5 6; 7 8] = [19 22; 43 50]
        assert_eq!(
            matmul(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0], 2, 2, 2),
            vec![19.0, 22.0, 43.0, 50.0]
        );
        // Non-square: (1×3) × (3×2)
        assert_eq!(
            matmul(&[1.0, 2.0, 3.0], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 1, 3, 2),
            vec![4.0, 5.0]
        );
    }

    #[test]
    fn identity_is_neutral() {
        let a: Vec<f32> = (0..9).map(|i| i as f32).collect();
        let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(matmul(&a, &id, 3, 3, 3), a);
    }

    fn body(x: f32, mass: f32) -> Body {
        Body { pos: [x, 0.0, 0.0, mass], vel: [0.0; 4] }
    }

    #[test]
    fn two_bodies_attract_and_conserve_momentum() {
        let mut bodies = [body(-1.0, 1.0), body(1.0, 3.0)];
        nbody::<()>(&mut bodies, 0.01, 1e-4, 50, || Ok(())).unwrap();
        assert!(bodies[0].pos[0] > -1.0 && bodies[1].pos[0] < 1.0, "{bodies:?}");
        let momentum: f32 = bodies.iter().map(|b| b.pos[3] * b.vel[0]).sum();
        assert!(momentum.abs() < 1e-5, "{momentum}");
        // The light body moves three times as fast as the heavy one.
        assert!((bodies[0].vel[0] / -bodies[1].vel[0] - 3.0).abs() < 1e-3);
    }

    #[test]
    fn a_lone_body_drifts_in_a_straight_line() {
        let mut bodies = [Body { pos: [0.0, 0.0, 0.0, 1.0], vel: [1.0, 2.0, 0.0, 0.0] }];
        nbody::<()>(&mut bodies, 0.5, 0.01, 4, || Ok(())).unwrap();
        assert_eq!(bodies[0].pos, [2.0, 4.0, 0.0, 1.0]);
    }

    #[test]
    fn the_check_stops_a_run() {
        let mut bodies = [body(0.0, 1.0)];
        let mut calls = 0;
        let r = nbody(&mut bodies, 0.1, 0.1, 100, || {
            calls += 1;
            if calls > 3 { Err("stop") } else { Ok(()) }
        });
        assert_eq!(r, Err("stop"));
    }
}
