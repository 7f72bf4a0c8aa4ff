// All-pairs gravitational n-body (G = 1) with Plummer softening, integrated
// with symplectic Euler: `accelerate` updates every velocity from the current
// positions, then `drift` moves every body. Two dispatches per step; WebGPU
// makes the first's writes visible to the second.
//
// pos[i] = (x, y, z, mass), vel[i] = (vx, vy, vz, 0).

struct Params {
    n: u32,
    dt: f32,
    eps2: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> pos: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> vel: array<vec4<f32>>;

@compute @workgroup_size(64, 1, 1)
fn accelerate(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.n) {
        return;
    }
    let pi = pos[i].xyz;
    var acc = vec3<f32>(0.0, 0.0, 0.0);
    for (var j = 0u; j < params.n; j = j + 1u) {
        let pj = pos[j];
        let d = pj.xyz - pi;
        let r2 = dot(d, d) + params.eps2;
        let inv_r = 1.0 / sqrt(r2);
        acc = acc + d * (pj.w * inv_r * inv_r * inv_r);
    }
    vel[i] = vec4<f32>(vel[i].xyz + acc * params.dt, 0.0);
}

@compute @workgroup_size(64, 1, 1)
fn drift(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.n) {
        return;
    }
    pos[i] = vec4<f32>(pos[i].xyz + vel[i].xyz * params.dt, pos[i].w);
}
