//! Loading models from a directory: `NAME/model.onnx`, `NAME/labels.txt`,
//! and an optional `NAME/config.json`. Each model is loaded, optimised and
//! planned once; one broken model never keeps the others from loading.
//! With the WebGPU backend each model also gets an ONNX Runtime session on
//! the GPU, run once at load so its shaders are compiled before any task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::backend::Resolved;
use crate::config::{Layout, ModelConfig};
use crate::ort_webgpu::GpuModel;

/// A model planned and ready to run.
pub struct Model {
    pub name: String,
    pub labels: Vec<String>,
    pub config: ModelConfig,
    /// The input's height and width.
    pub height: u32,
    pub width: u32,
    plan: Arc<TypedRunnableModel>,
    /// The GPU session tasks run on, when the backend is ONNX Runtime.
    gpu: Option<GpuModel>,
    /// Why `auto` left this model on tract although a GPU was found.
    pub gpu_fallback: Option<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("labels", &self.labels.len())
            .finish()
    }
}

impl Model {
    /// The input tensor's shape.
    pub fn input_shape(&self) -> [usize; 4] {
        let (h, w) = (self.height as usize, self.width as usize);
        match self.config.layout {
            Layout::Nchw => [1, 3, h, w],
            Layout::Nhwc => [1, h, w, 3],
        }
    }

    /// The engine tasks run on: `ort-webgpu` or `tract`.
    pub fn backend(&self) -> &'static str {
        if self.gpu.is_some() { "ort-webgpu" } else { "tract" }
    }

    /// The device tasks run on: the WebGPU device ONNX Runtime reports, or `cpu`.
    pub fn device(&self) -> &str {
        self.gpu.as_ref().map_or("cpu", GpuModel::device)
    }

    /// Runs the model on a preprocessed input with its backend; returns its
    /// raw output vector.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>, String> {
        match &self.gpu {
            Some(gpu) => gpu.run(&self.input_shape(), input),
            None => self.run_tract(input),
        }
    }

    /// Runs the model with tract on the CPU, whatever the backend: the reference.
    pub fn run_tract(&self, input: &[f32]) -> Result<Vec<f32>, String> {
        let tensor = Tensor::from_shape(&self.input_shape(), input).map_err(|e| e.to_string())?;
        let outputs = self.plan.run(tvec!(tensor.into_tvalue())).map_err(|e| format!("{e:#}"))?;
        let first = outputs.first().ok_or("the model has no output")?;
        let view = first
            .to_plain_array_view::<f32>()
            .map_err(|e| format!("the output is not f32: {e}"))?;
        Ok(view.iter().copied().collect())
    }
}

/// Every model of a directory, loaded or with the reason it could not be.
pub type Models = BTreeMap<String, Result<Arc<Model>, String>>;

/// Loads every `DIR/NAME/model.onnx` with tract.
pub fn load_dir(dir: &Path) -> std::io::Result<Models> {
    load_dir_on(dir, &Resolved::default())
}

/// Loads every `DIR/NAME/model.onnx` for the resolved backend.
pub(crate) fn load_dir_on(dir: &Path, backend: &Resolved) -> std::io::Result<Models> {
    let mut models = Models::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for path in entries {
        if !path.join("model.onnx").exists() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let loaded = load(&name, &path).and_then(|m| on_gpu(m, &path, backend)).map(Arc::new);
        models.insert(name, loaded);
    }
    Ok(models)
}

/// Loads one model directory.
pub fn load(name: &str, dir: &Path) -> Result<Model, String> {
    let config = read_config(dir)?;
    let labels = read_labels(dir)?;
    let onnx = tract_onnx::onnx()
        .model_for_path(dir.join("model.onnx"))
        .map_err(|e| format!("cannot parse model.onnx: {e:#}"))?;
    let (height, width) = input_size(&onnx, &config)?;
    let shape = match config.layout {
        Layout::Nchw => [1, 3, height as usize, width as usize],
        Layout::Nhwc => [1, height as usize, width as usize, 3],
    };
    let typed = onnx
        .with_input_fact(0, f32::fact(shape).into())
        .and_then(|m| m.into_optimized())
        .map_err(|e| format!("the model does not accept a {shape:?} input: {e:#}"))?;
    let outputs = output_len(&typed)?;
    if outputs != labels.len() {
        return Err(format!(
            "the model has {outputs} outputs but labels.txt has {} labels",
            labels.len()
        ));
    }
    let plan = typed.into_runnable().map_err(|e| format!("cannot plan the model: {e:#}"))?;
    Ok(Model {
        name: name.to_owned(),
        labels,
        config,
        height,
        width,
        plan,
        gpu: None,
        gpu_fallback: None,
    })
}

/// Gives a model its GPU session and runs it once (shader compilation),
/// when the backend has a GPU. Under `auto` a model the GPU refuses stays
/// on tract; under `ort-webgpu` it fails to load.
fn on_gpu(mut model: Model, dir: &Path, backend: &Resolved) -> Result<Model, String> {
    let Some(runtime) = &backend.runtime else {
        return Ok(model);
    };
    let warmed = runtime.load(&dir.join("model.onnx")).and_then(|gpu| {
        let shape = model.input_shape();
        gpu.run(&shape, &vec![0.0; shape.iter().product()])?;
        Ok(gpu)
    });
    match warmed {
        Ok(gpu) => model.gpu = Some(gpu),
        Err(e) if backend.strict => {
            return Err(format!("ONNX Runtime on {}: {e}", runtime.device()));
        }
        Err(e) => model.gpu_fallback = Some(format!("not on {}: {e}", runtime.device())),
    }
    Ok(model)
}

fn read_config(dir: &Path) -> Result<ModelConfig, String> {
    let path = dir.join("config.json");
    if !path.exists() {
        return Ok(ModelConfig::default());
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read config.json: {e}"))?;
    let config: ModelConfig =
        serde_json::from_str(&text).map_err(|e| format!("config.json: {e}"))?;
    config.validate().map_err(|e| format!("config.json: {e}"))?;
    Ok(config)
}

fn read_labels(dir: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(dir.join("labels.txt"))
        .map_err(|e| format!("cannot read labels.txt: {e}"))?;
    let labels: Vec<String> =
        text.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect();
    if labels.is_empty() {
        return Err("labels.txt has no labels".into());
    }
    Ok(labels)
}

/// The input's height and width: from the config, or from the model's own
/// input shape (its batch dimension may be symbolic; the others must not).
fn input_size(onnx: &InferenceModel, config: &ModelConfig) -> Result<(u32, u32), String> {
    let declared = declared_size(onnx, config.layout);
    match (config.input_size, declared) {
        (Some([h, w]), Ok((dh, dw))) if (h, w) != (dh, dw) => Err(format!(
            "config.json says input_size {h}×{w} but the model's input is fixed at {dh}×{dw}"
        )),
        (Some([h, w]), _) => Ok((h, w)),
        (None, declared) => declared,
    }
}

/// The height and width the model itself declares for its input.
fn declared_size(onnx: &InferenceModel, layout: Layout) -> Result<(u32, u32), String> {
    let fact = onnx.input_fact(0).map_err(|e| format!("the model has no input: {e}"))?;
    let dims: Vec<Option<i64>> =
        fact.shape.dims().map(|d| d.concretize().and_then(|t| t.to_i64().ok())).collect();
    let (c, h, w) = match (layout, dims.as_slice()) {
        (Layout::Nchw, [_, c, h, w]) => (*c, *h, *w),
        (Layout::Nhwc, [_, h, w, c]) => (*c, *h, *w),
        _ => {
            return Err(format!(
                "the model's input has rank {}, not 4 (an image batch)",
                dims.len()
            ));
        }
    };
    match (c, h, w) {
        (Some(3) | None, Some(h), Some(w)) if h > 0 && w > 0 => Ok((h as u32, w as u32)),
        (Some(c), _, _) if c != 3 => {
            Err(format!("the model's input has {c} channels, not 3 (RGB)"))
        }
        _ => Err("the model's input size is not fixed; set input_size in config.json".into()),
    }
}

fn output_len(model: &TypedModel) -> Result<usize, String> {
    let fact = model.output_fact(0).map_err(|e| format!("the model has no output: {e}"))?;
    let shape = fact.shape.as_concrete().ok_or("the model's output size is not fixed")?;
    Ok(shape.iter().product())
}
