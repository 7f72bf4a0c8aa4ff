//! The `gpu` executor: compute shaders through wgpu, on any Vulkan, Metal or
//! DX12 GPU — the path for cards CUDA and ROCm dropped, like the RX 580 —
//! with a CPU implementation of the same maths.
//!
//! Two operations: a tiled matrix multiply and an all-pairs n-body step loop
//! (WGSL in `src/shaders/`). [`Gpu::new`] enumerates the adapters once,
//! opens the best one (discrete, then integrated, virtual, software) and
//! compiles the shaders once; tasks then reuse the device. A task may ask for
//! `"device": "gpu"`, `"cpu"` or `"auto"` (the GPU when there is one).
//!
//! On a machine with no adapter, [`Gpu::has_adapter`] is false: the worker
//! does not offer the `gpu` task type there, so no `gpu` task is sent to it.
//! CI runs the GPU path on Mesa's lavapipe (software Vulkan) and checks it
//! against the CPU path.

use std::time::Instant;

use exec::{Advertised, ExecError, Executor, GpuAdapter, Output, RunContext, TaskNeeds, to_output};
use serde_json::{Value, json};
use tracing::{info, warn};

mod adapters;
pub mod cpu;
mod device;
mod input;

pub use input::{DeviceChoice, Matmul, Nbody, Request};

use device::Device;

/// How the executor looks for adapters.
#[derive(Debug, Clone, Copy)]
pub struct GpuOptions {
    /// Use no adapter at all (the machine looks GPU-less).
    pub disabled: bool,
    /// Accept software adapters such as Mesa's lavapipe. Default true.
    pub allow_software: bool,
}

impl Default for GpuOptions {
    fn default() -> GpuOptions {
        GpuOptions { disabled: false, allow_software: true }
    }
}

/// Work limits of the gpu executor.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest matrix dimension. Default 4096.
    pub max_dim: u32,
    /// Most multiply-adds for a matmul on the CPU. Default 2³³ (seconds on one core).
    pub max_cpu_flops: u64,
    /// Most n-body bodies. Default 65 536.
    pub max_bodies: usize,
    /// Most n-body steps. Default 100 000.
    pub max_steps: u32,
    /// Most body pairs × steps. Default 2 × 10¹¹.
    pub max_interactions: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_dim: 4096,
            max_cpu_flops: 1 << 33,
            max_bodies: 65_536,
            max_steps: 100_000,
            max_interactions: 200_000_000_000,
        }
    }
}

/// Results with at most this many numbers are returned in full.
const MAX_RETURNED: usize = 65_536;

/// The `gpu` executor.
#[derive(Debug)]
pub struct Gpu {
    adapters: Vec<GpuAdapter>,
    device: Option<Device>,
    limits: Limits,
}

/// The adapters this machine has, as advertised (opening none).
pub fn enumerate_adapters(opts: &GpuOptions) -> Vec<GpuAdapter> {
    adapters::find_all(opts).into_iter().map(|f| f.info).collect()
}

impl Gpu {
    /// Finds the adapters and opens the best one that works.
    pub fn new(opts: GpuOptions) -> Gpu {
        let found = adapters::find_all(&opts);
        let mut device = None;
        for f in &found {
            match Device::open(&f.adapter, f.info.clone()) {
                Ok(d) => {
                    info!(adapter = %f.info.name, backend = %f.info.backend, "GPU ready");
                    device = Some(d);
                    break;
                }
                Err(e) => warn!(adapter = %f.info.name, "cannot use this GPU: {e}"),
            }
        }
        // Adapters are advertised only when one of them can do work.
        let adapters =
            if device.is_some() { found.into_iter().map(|f| f.info).collect() } else { Vec::new() };
        Gpu { adapters, device, limits: Limits::default() }
    }

    pub fn with_limits(mut self, limits: Limits) -> Gpu {
        self.limits = limits;
        self
    }

    /// Whether a GPU is open and ready for work.
    pub fn has_adapter(&self) -> bool {
        self.device.is_some()
    }

    /// The adapters found (empty when none can work).
    pub fn adapters(&self) -> &[GpuAdapter] {
        &self.adapters
    }

    /// The adapter tasks run on, when there is one.
    pub fn adapter(&self) -> Option<&GpuAdapter> {
        self.device.as_ref().map(|d| &d.info)
    }

    /// Picks the device for a request: an explicit `gpu` needs one; `auto`
    /// falls back to the CPU when there is none or it was lost.
    fn pick(&self, choice: DeviceChoice) -> Result<Option<&Device>, ExecError> {
        let usable = self.device.as_ref().filter(|d| !d.is_lost());
        match (choice, usable) {
            (DeviceChoice::Cpu, _) | (DeviceChoice::Auto, None) => Ok(None),
            (_, Some(d)) => Ok(Some(d)),
            (DeviceChoice::Gpu, None) => {
                Err(ExecError::Unavailable("this peer has no usable GPU".into()))
            }
        }
    }

    fn matmul(&self, req: Matmul, ctx: &RunContext) -> Result<Value, ExecError> {
        let Matmul { m, k, n, a, b, device } = req;
        let on = self.pick(device)?;
        let (mu, ku, nu) = (m as usize, k as usize, n as usize);
        let flops = (mu * ku * nu) as u64;
        if on.is_none() && flops > self.limits.max_cpu_flops {
            return Err(ExecError::LimitExceeded(format!(
                "{m}×{k}×{n} is too much for the CPU fallback (limit {} multiply-adds)",
                self.limits.max_cpu_flops
            )));
        }
        if let Some(d) = on {
            let biggest = 4 * (mu * ku).max(ku * nu).max(mu * nu) as u64;
            if biggest > d.max_binding {
                return Err(ExecError::LimitExceeded(format!(
                    "a {biggest}-byte matrix is over this GPU's buffer limit of {}",
                    d.max_binding
                )));
            }
        }
        ctx.check()?;
        let start = Instant::now();
        let c = match on {
            Some(d) => d.matmul(&a, &b, m, k, n)?,
            None => cpu::matmul(&a, &b, mu, ku, nu),
        };
        let secs = start.elapsed().as_secs_f64();
        ctx.check()?;
        let sum: f64 = c.iter().map(|&x| f64::from(x)).sum();
        let l2 = c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        let mut out = json!({
            "op": "matmul", "device": device_name(on), "adapter": on.map(|d| d.info.name.clone()),
            "m": m, "k": k, "n": n, "sum": sum, "l2": l2,
            "elapsed_ms": secs * 1e3, "gflops": 2.0 * flops as f64 / secs.max(1e-9) / 1e9,
        });
        if c.len() <= MAX_RETURNED {
            out["c"] = json!(c);
        }
        Ok(out)
    }

    fn nbody(&self, req: Nbody, ctx: &RunContext) -> Result<Value, ExecError> {
        let Nbody { mut bodies, steps, dt, eps2, device } = req;
        let on = self.pick(device)?;
        let start = Instant::now();
        match on {
            Some(d) => d.nbody(&mut bodies, dt, eps2, steps, ctx)?,
            None => cpu::nbody(&mut bodies, dt, eps2, steps, || ctx.check())?,
        }
        let secs = start.elapsed().as_secs_f64();
        let n = bodies.len();
        let mut momentum = [0.0f64; 3];
        let mut kinetic = 0.0f64;
        for b in &bodies {
            let mass = f64::from(b.pos[3]);
            for (axis, p) in momentum.iter_mut().enumerate() {
                *p += mass * f64::from(b.vel[axis]);
            }
            kinetic += 0.5 * mass * b.vel[..3].iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
        }
        let interactions = (n * n) as f64 * f64::from(steps);
        let mut out = json!({
            "op": "nbody", "device": device_name(on), "adapter": on.map(|d| d.info.name.clone()),
            "n": n, "steps": steps, "momentum": momentum, "kinetic_energy": kinetic,
            "elapsed_ms": secs * 1e3, "interactions_per_s": interactions / secs.max(1e-9),
        });
        if n <= MAX_RETURNED / 8 {
            let list: Vec<Value> = bodies
                .iter()
                .map(|b| json!({"pos": &b.pos[..3], "vel": &b.vel[..3], "mass": b.pos[3]}))
                .collect();
            out["bodies"] = json!(list);
        }
        Ok(out)
    }
}

fn device_name(on: Option<&Device>) -> &'static str {
    if on.is_some() { "gpu" } else { "cpu" }
}

/// What a `gpu` task needs of a peer: a GPU (its CPU fallback is for
/// peers whose adapter failed, not for peers without one).
pub fn needs() -> TaskNeeds {
    TaskNeeds { gpu: true, model_field: None }
}

impl Executor for Gpu {
    fn task_type(&self) -> &str {
        "gpu"
    }

    fn advertise(&self) -> Advertised {
        Advertised { gpus: self.adapters.clone(), ..Advertised::default() }
    }

    fn needs(&self) -> TaskNeeds {
        needs()
    }

    fn run(&self, input: &str, ctx: &RunContext) -> Result<Output, ExecError> {
        let out = match Request::parse(input, &self.limits)? {
            Request::Matmul(req) => self.matmul(req, ctx)?,
            Request::Nbody(req) => self.nbody(req, ctx)?,
        };
        to_output(&out)
    }
}

#[cfg(test)]
mod tests;
