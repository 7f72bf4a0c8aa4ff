//! One GPU device, its queue and its compiled pipelines, and the two jobs it
//! runs. Every job runs inside validation and out-of-memory error scopes, so
//! a driver error is a task error, never a panic; jobs on one device are
//! serialised (error scopes are per device), which also keeps one task from
//! starving another of the GPU's memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use exec::{ExecError, GpuAdapter, RunContext};
use wgpu::util::DeviceExt;
use wgpu::{BufferUsages, ErrorFilter};

use crate::cpu::Body;

/// A device ready for work.
pub(crate) struct Device {
    pub info: GpuAdapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
    matmul: wgpu::ComputePipeline,
    accelerate: wgpu::ComputePipeline,
    drift: wgpu::ComputePipeline,
    /// The largest storage buffer binding the device allows, in bytes.
    pub max_binding: u64,
    lost: Arc<AtomicBool>,
    jobs: Mutex<()>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("adapter", &self.info.name).finish()
    }
}

/// n-body steps submitted together, between cancellation checks.
const NBODY_BATCH: u32 = 16;

impl Device {
    /// Opens the adapter and compiles the shaders.
    pub fn open(adapter: &wgpu::Adapter, info: GpuAdapter) -> Result<Device, String> {
        let supported = adapter.limits();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: supported.max_storage_buffer_binding_size,
            max_buffer_size: supported.max_buffer_size,
            ..wgpu::Limits::downlevel_defaults()
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("legacygpu"),
            required_features: wgpu::Features::empty(),
            required_limits: limits,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|e| e.to_string())?;
        let lost = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        device.set_device_lost_callback(move |_reason, message| {
            tracing::error!("GPU device lost: {message}");
            flag.store(true, Ordering::Relaxed);
        });
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| tracing::error!("GPU error: {e}")));
        let scope = device.push_error_scope(ErrorFilter::Validation);
        let matmul = pipeline(&device, include_str!("shaders/matmul.wgsl"), "main");
        let nbody = include_str!("shaders/nbody.wgsl");
        let accelerate = pipeline(&device, nbody, "accelerate");
        let drift = pipeline(&device, nbody, "drift");
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(format!("the shaders do not compile on this adapter: {e}"));
        }
        let max_binding = device.limits().max_storage_buffer_binding_size;
        Ok(Device {
            info,
            device,
            queue,
            matmul,
            accelerate,
            drift,
            max_binding,
            lost,
            jobs: Mutex::new(()),
        })
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// C = A × B on the GPU.
    pub fn matmul(
        &self,
        a: &[f32],
        b: &[f32],
        m: u32,
        k: u32,
        n: u32,
    ) -> Result<Vec<f32>, ExecError> {
        self.job(|| {
            let dims = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("dims"),
                contents: bytemuck::cast_slice(&[m, k, n, 0u32]),
                usage: BufferUsages::UNIFORM,
            });
            let a = self.storage("a", bytemuck::cast_slice(a), false);
            let b = self.storage("b", bytemuck::cast_slice(b), false);
            let c_bytes = u64::from(m) * u64::from(n) * 4;
            let c = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("c"),
                size: c_bytes,
                usage: BufferUsages::STORAGE | BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let group = self.bind(&self.matmul, &[&dims, &a, &b, &c]);
            let mut encoder = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&self.matmul);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(n.div_ceil(16), m.div_ceil(16), 1);
            }
            self.read_back(encoder, &c, c_bytes)
        })
    }

    /// `steps` of n-body on the GPU, checking `ctx` every few steps.
    pub fn nbody(
        &self,
        bodies: &mut [Body],
        dt: f32,
        eps2: f32,
        steps: u32,
        ctx: &RunContext,
    ) -> Result<(), ExecError> {
        let n = u32::try_from(bodies.len())
            .map_err(|_| ExecError::LimitExceeded("too many bodies".into()))?;
        let pos: Vec<[f32; 4]> = bodies.iter().map(|b| b.pos).collect();
        let vel: Vec<[f32; 4]> = bodies.iter().map(|b| b.vel).collect();
        let (pos, vel) = self.job(|| {
            let params = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&[n, dt.to_bits(), eps2.to_bits(), 0u32]),
                usage: BufferUsages::UNIFORM,
            });
            let pos_buf = self.storage("pos", bytemuck::cast_slice(&pos), true);
            let vel_buf = self.storage("vel", bytemuck::cast_slice(&vel), true);
            let accelerate = self.bind(&self.accelerate, &[&params, &pos_buf, &vel_buf]);
            let drift = self.bind(&self.drift, &[&params, &pos_buf, &vel_buf]);
            let groups = n.div_ceil(64);
            let mut done = 0;
            while done < steps {
                ctx.check()?;
                let batch = NBODY_BATCH.min(steps - done);
                let mut encoder = self.device.create_command_encoder(&Default::default());
                {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    for _ in 0..batch {
                        pass.set_pipeline(&self.accelerate);
                        pass.set_bind_group(0, &accelerate, &[]);
                        pass.dispatch_workgroups(groups, 1, 1);
                        pass.set_pipeline(&self.drift);
                        pass.set_bind_group(0, &drift, &[]);
                        pass.dispatch_workgroups(groups, 1, 1);
                    }
                }
                self.queue.submit([encoder.finish()]);
                self.wait()?;
                done += batch;
            }
            let bytes = u64::from(n) * 16;
            let pos = self.read_back(
                self.device.create_command_encoder(&Default::default()),
                &pos_buf,
                bytes,
            )?;
            let vel = self.read_back(
                self.device.create_command_encoder(&Default::default()),
                &vel_buf,
                bytes,
            )?;
            Ok((pos, vel))
        })?;
        for (i, b) in bodies.iter_mut().enumerate() {
            b.pos.copy_from_slice(&pos[i * 4..i * 4 + 4]);
            b.vel.copy_from_slice(&vel[i * 4..i * 4 + 4]);
        }
        Ok(())
    }

    /// Runs `work` alone on the device, inside error scopes.
    fn job<T>(&self, work: impl FnOnce() -> Result<T, ExecError>) -> Result<T, ExecError> {
        if self.is_lost() {
            return Err(ExecError::Internal("the GPU device was lost".into()));
        }
        let _alone = self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let oom = self.device.push_error_scope(ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(ErrorFilter::Validation);
        let result = work();
        let invalid = pollster::block_on(validation.pop());
        let out_of_memory = pollster::block_on(oom.pop());
        if let Some(e) = out_of_memory {
            return Err(ExecError::Internal(format!("the GPU ran out of memory: {e}")));
        }
        if let Some(e) = invalid {
            return Err(ExecError::Internal(format!("GPU error: {e}")));
        }
        if self.is_lost() {
            return Err(ExecError::Internal("the GPU device was lost".into()));
        }
        result
    }

    fn storage(&self, label: &str, contents: &[u8], writable: bool) -> wgpu::Buffer {
        let mut usage = BufferUsages::STORAGE;
        if writable {
            usage |= BufferUsages::COPY_SRC;
        }
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage,
        })
    }

    fn bind(&self, pipeline: &wgpu::ComputePipeline, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Copies `bytes` of `src` to a mappable buffer, submits, waits, reads.
    fn read_back(
        &self,
        mut encoder: wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<f32>, ExecError> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: bytes,
            usage: BufferUsages::MAP_READ | BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ExecError::Internal(format!("cannot read GPU results: {e}"))),
            Err(_) => return Err(ExecError::Internal("the GPU never returned the results".into())),
        }
        let data = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| ExecError::Internal(format!("cannot read GPU results: {e}")))?;
        let out = bytemuck::cast_slice::<u8, f32>(&data).to_vec();
        drop(data);
        staging.unmap();
        Ok(out)
    }

    fn wait(&self) -> Result<(), ExecError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| ExecError::Internal(format!("waiting for the GPU failed: {e}")))
    }
}

fn pipeline(device: &wgpu::Device, source: &str, entry: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(entry),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    })
}
