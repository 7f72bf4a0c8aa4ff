//! ONNX Runtime with its WebGPU plugin execution provider: the same ONNX
//! files on the worker's GPU (WebGPU through Dawn, on Vulkan).
//!
//! Nothing is linked at build time: `libonnxruntime.so` (PyPI `onnxruntime`)
//! and the EP's library (PyPI `onnxruntime-ep-webgpu`) are loaded from the
//! paths the operator gives, once per process — ONNX Runtime allows one
//! environment per process, so the first [`Runtime::open`] wins and later
//! calls with the same paths share it.
//!
//! Every session is created with `session.disable_cpu_ep_fallback`: a model
//! that ONNX Runtime cannot place wholly on the GPU is refused rather than
//! run partly on the CPU behind the operator's back. Opening the runtime
//! proves the adapter by running the tiny fixture classifier once, because
//! the EP lists a WebGPU device even when Dawn then rejects the adapter
//! (Mesa lavapipe before 25 does), and that only shows when a session starts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;

/// The WebGPU plugin's name for its devices in ONNX Runtime's device list.
const WEBGPU_EP: &str = "WebGpuExecutionProvider";

/// Where the two ONNX Runtime libraries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtLibs {
    /// `libonnxruntime.so` (1.32 or later).
    pub onnxruntime: PathBuf,
    /// `libonnxruntime_providers_webgpu.so`, the WebGPU plugin EP.
    pub webgpu_ep: PathBuf,
}

/// Why the WebGPU backend cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrtError {
    #[error("no path to {what}: pass {flag} or set {env}")]
    NotGiven { what: &'static str, flag: &'static str, env: &'static str },
    #[error("{what} not found at {path}")]
    Missing { what: &'static str, path: PathBuf },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("cannot register the WebGPU execution provider {path}: {message}")]
    Register { path: PathBuf, message: String },
    #[error(
        "ONNX Runtime was already loaded in this process from {loaded}; cannot load {wanted} too"
    )]
    AlreadyLoaded { loaded: PathBuf, wanted: PathBuf },
    #[error("no usable WebGPU adapter: {0}")]
    NoAdapter(String),
}

/// ONNX Runtime loaded, the WebGPU EP registered and its adapter proven.
pub struct Runtime {
    env: Environment,
    /// What the EP says the device is, for results and logs.
    device: String,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("device", &self.device).finish()
    }
}

/// The process's one ONNX Runtime environment, with the libraries it came
/// from and whether the EP registered (an environment cannot be made twice,
/// so a failure is kept and repeated rather than retried).
struct Loaded {
    libs: OrtLibs,
    env: Result<Environment, OrtError>,
}

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

impl Runtime {
    /// Loads the libraries (once per process), registers the EP and proves
    /// that a WebGPU adapter really runs a model.
    pub fn open(libs: &OrtLibs) -> Result<Arc<Runtime>, OrtError> {
        for (what, path) in
            [("libonnxruntime.so", &libs.onnxruntime), ("the WebGPU EP library", &libs.webgpu_ep)]
        {
            if !path.is_file() {
                return Err(OrtError::Missing { what, path: path.clone() });
            }
        }
        let env = environment(libs)?;
        let devices: Vec<String> = env.devices().map(|d| describe(&d)).collect();
        let device = env
            .devices()
            .find(|d| d.ep().is_ok_and(|ep| ep == WEBGPU_EP))
            .map(|d| describe(&d))
            .ok_or_else(|| {
                OrtError::NoAdapter(format!(
                    "ONNX Runtime lists no {WEBGPU_EP} device (it has: {}); for a software \
                     adapter such as lavapipe set ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1",
                    devices.join("; ")
                ))
            })?;
        let runtime = Runtime { env, device };
        let probe = crate::fixture::tiny_classifier_onnx();
        let side = crate::fixture::SIDE as usize;
        runtime
            .session(Source::Memory(&probe))
            .and_then(|gpu| gpu.run(&[1, 3, side, side], &vec![0.5; 3 * side * side]).map(|_| ()))
            .map_err(|e| {
                OrtError::NoAdapter(format!("{} does not run a model: {e}", runtime.device))
            })?;
        Ok(Arc::new(runtime))
    }

    /// The device the models run on.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// A session for `model.onnx`, every node on the GPU.
    pub fn load(&self, path: &Path) -> Result<GpuModel, String> {
        self.session(Source::File(path))
    }

    fn session(&self, source: Source<'_>) -> Result<GpuModel, String> {
        let devices = self.env.devices().filter(|d| d.ep().is_ok_and(|ep| ep == WEBGPU_EP));
        let text = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
        let mut builder = Session::builder(&self.env)
            .map_err(|e| e.to_string())?
            .with_devices(devices, None)
            .map_err(text)?
            .with_config_entry("session.disable_cpu_ep_fallback", "1")
            .map_err(text)?;
        let session = match source {
            Source::File(path) => builder.commit_from_file(path),
            Source::Memory(bytes) => builder.commit_from_memory(bytes),
        }
        .map_err(|e| e.to_string())?;
        let input = session.inputs().first().ok_or("the model has no input")?.name().to_owned();
        Ok(GpuModel { session: Mutex::new(session), input, device: self.device.clone() })
    }
}

enum Source<'a> {
    File(&'a Path),
    Memory(&'a [u8]),
}

/// The environment for `libs`: made on the first call, shared after.
fn environment(libs: &OrtLibs) -> Result<Environment, OrtError> {
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(loaded) = loaded.as_ref() {
        if loaded.libs.onnxruntime != libs.onnxruntime || loaded.libs.webgpu_ep != libs.webgpu_ep {
            return Err(OrtError::AlreadyLoaded {
                loaded: loaded.libs.onnxruntime.clone(),
                wanted: libs.onnxruntime.clone(),
            });
        }
        return loaded.env.clone();
    }
    // Loading the library can fail harmlessly (then nothing is kept and a
    // later call may try another path); past `build` the environment exists.
    let builder = ort::init_from(&libs.onnxruntime)
        .map_err(|e| OrtError::Load { path: libs.onnxruntime.clone(), message: e.to_string() })?;
    let env = builder
        .with_name("legacygpu")
        .build()
        .map_err(|e| OrtError::Load { path: libs.onnxruntime.clone(), message: e.to_string() })
        .and_then(|env| {
            env.register_ep_library("webgpu", &libs.webgpu_ep).map_err(|e| OrtError::Register {
                path: libs.webgpu_ep.clone(),
                message: e.to_string(),
            })?;
            Ok(env)
        });
    *loaded = Some(Loaded { libs: libs.clone(), env: env.clone() });
    env
}

fn describe(device: &ort::device::Device<'_>) -> String {
    let hardware = device.hardware_device();
    format!(
        "{} on {} {:?} {}",
        device.ep().unwrap_or("?"),
        hardware.vendor().unwrap_or("?"),
        hardware.ty(),
        hardware.id()
    )
}

/// One model's ONNX Runtime session on the GPU.
pub struct GpuModel {
    /// `Session::run` takes `&mut`: tasks for one model take turns on the GPU.
    session: Mutex<Session>,
    input: String,
    device: String,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel").field("device", &self.device).finish()
    }
}

impl GpuModel {
    /// The device it runs on.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Runs the model; returns its first output, flattened.
    pub fn run(&self, shape: &[usize], input: &[f32]) -> Result<Vec<f32>, String> {
        let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let tensor = TensorRef::from_array_view((shape, input)).map_err(|e| e.to_string())?;
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs =
            session.run(ort::inputs![self.input.as_str() => tensor]).map_err(|e| e.to_string())?;
        if outputs.len() == 0 {
            return Err("the model has no output".into());
        }
        let (_, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("the output is not f32: {e}"))?;
        Ok(data.to_vec())
    }
}
