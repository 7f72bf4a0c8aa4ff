//! The `inference` executor: ONNX image classification with tract, or with
//! ONNX Runtime on a WebGPU (Vulkan) device ([`BackendOptions`]).
//!
//! A worker started with `--models-dir DIR` loads every `DIR/NAME/model.onnx`
//! (with `NAME/labels.txt` and an optional `NAME/config.json`) once, at
//! start, and advertises the names of the models that loaded. A task names a
//! model and carries a JPEG or PNG (base64); the executor decodes it, resizes
//! it to the model's input, normalises it, runs the model and returns the
//! top-k labels with their scores and timings.
//!
//! Nothing is downloaded: a model the peer does not have is an `unavailable`
//! error naming the directory (the coordinator only sends inference tasks to
//! peers that advertise the model, so this happens only on a race). One
//! broken model does not stop the others: it is reported and not advertised.
//!
//! The backend is chosen once, at start: tract on the CPU (the default and
//! the reference the GPU path is tested against), ONNX Runtime's WebGPU
//! execution provider, or `auto` (the GPU when it works, else tract). Each
//! result says which backend and device ran it.
//!
//! [`fixture`] writes a tiny but real classifier without Python, for the
//! demo and the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use exec::{Advertised, ExecError, Executor, ModelInfo, Output, RunContext, TaskNeeds, to_output};
use serde::{Deserialize, Serialize};

mod backend;
mod config;
pub mod fixture;
mod model;
mod ort_webgpu;
mod preprocess;

pub use backend::{BackendKind, BackendOptions, ONNXRUNTIME_LIB_ENV, WEBGPU_EP_ENV};
pub use config::{Layout, ModelConfig};
pub use model::{Model, Models, load, load_dir};
pub use ort_webgpu::OrtError;
pub use preprocess::{decode, preprocess, softmax};

/// Why a models directory could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("cannot read the models directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot use the ort-webgpu inference backend: {0}")]
    OrtWebGpu(#[from] OrtError),
}

/// The `inference` executor and its models.
#[derive(Debug)]
pub struct Inference {
    dir: PathBuf,
    models: Models,
    /// Why `auto` fell back to tract (for every model), if it did.
    fallback: Option<String>,
}

/// A task's input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    model: String,
    /// A JPEG or PNG file, base64 (standard alphabet).
    image: String,
    #[serde(default)]
    top_k: Option<usize>,
}

/// One label of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub label: String,
    pub index: usize,
    pub score: f32,
}

#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    /// `ort-webgpu` or `tract`.
    backend: &'static str,
    /// The WebGPU device ONNX Runtime reports, or `cpu`.
    device: &'a str,
    top_k: Vec<Scored>,
    timing: Timing,
}

#[derive(Serialize)]
struct Timing {
    decode_ms: f64,
    preprocess_ms: f64,
    inference_ms: f64,
}

impl Inference {
    /// Loads every model of `dir`. Fails only when `dir` cannot be read;
    /// models that fail to load are kept with their reason (see [`Inference::failed`]).
    pub fn from_dir(dir: &Path) -> Result<Inference, InferenceError> {
        Inference::from_dir_with(dir, &BackendOptions::default())
    }

    /// Loads every model of `dir` for a backend. Fails when `dir` cannot be
    /// read or the `ort-webgpu` backend cannot be set up; `auto` falls back
    /// to tract instead (see [`Inference::warnings`]).
    pub fn from_dir_with(
        dir: &Path,
        backend: &BackendOptions,
    ) -> Result<Inference, InferenceError> {
        let resolved = backend.resolve()?;
        let models = model::load_dir_on(dir, &resolved)
            .map_err(|source| InferenceError::Dir { path: dir.to_owned(), source })?;
        Ok(Inference { dir: dir.to_owned(), models, fallback: resolved.fallback })
    }

    /// What did not run where it was asked to: `auto`'s fallback to tract,
    /// for all models or for one, with the reason.
    pub fn warnings(&self) -> Vec<String> {
        let all = self.fallback.iter().map(|why| format!("inference runs on tract (CPU): {why}"));
        let each = self.models.iter().filter_map(|(name, m)| {
            let why = m.as_ref().ok()?.gpu_fallback.as_ref()?;
            Some(format!("model `{name}` runs on tract (CPU): {why}"))
        });
        all.chain(each).collect()
    }

    /// The models that loaded, sorted.
    pub fn model_names(&self) -> Vec<String> {
        self.models.iter().filter(|(_, m)| m.is_ok()).map(|(n, _)| n.clone()).collect()
    }

    /// The models that did not load, with why.
    pub fn failed(&self) -> Vec<(String, String)> {
        self.models
            .iter()
            .filter_map(|(n, m)| m.as_ref().err().map(|e| (n.clone(), e.clone())))
            .collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The loaded model called `name`, or the error a task for it gets.
    pub fn model(&self, name: &str) -> Result<&Arc<Model>, ExecError> {
        match self.models.get(name) {
            Some(Ok(model)) => Ok(model),
            Some(Err(reason)) => Err(ExecError::Unavailable(format!(
                "model `{name}` in {} failed to load: {reason}",
                self.dir.join(name).display()
            ))),
            None => Err(ExecError::Unavailable(format!(
                "model `{name}` is not in this peer's models directory {} (it has: {})",
                self.dir.display(),
                self.model_names().join(", ")
            ))),
        }
    }
}

/// What an `inference` task needs of a peer: the model its `data.model` names.
pub fn needs() -> TaskNeeds {
    TaskNeeds { gpu: false, model_field: Some("model".to_owned()) }
}

impl Executor for Inference {
    fn task_type(&self) -> &str {
        "inference"
    }

    /// Each model for `inference` only: a worker that also holds a GGUF
    /// model of the same name serves that one to `generate`.
    fn advertise(&self) -> Advertised {
        let names = self.model_names();
        let model_info = names
            .iter()
            .map(|name| ModelInfo {
                name: name.clone(),
                task_type: "inference".into(),
                format: "onnx".into(),
                size_bytes: None,
                context_length: None,
                quantization: None,
                n_params: None,
            })
            .collect();
        Advertised { models: names, model_info, ..Advertised::default() }
    }

    fn needs(&self) -> TaskNeeds {
        needs()
    }

    fn run(&self, input: &str, ctx: &RunContext) -> Result<Output, ExecError> {
        let input: Input = serde_json::from_str(input).map_err(ExecError::invalid)?;
        let model = self.model(&input.model)?;
        let top_k = match input.top_k {
            Some(0) => return Err(ExecError::InvalidInput("top_k must be at least 1".into())),
            Some(k) => k,
            None => model.config.top_k,
        }
        .min(model.labels.len());
        if input.image.len() > preprocess::MAX_ENCODED_BYTES * 4 / 3 + 4 {
            return Err(ExecError::LimitExceeded("the image is over the 20 MiB limit".into()));
        }
        let t0 = Instant::now();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(input.image.trim())
            .map_err(|e| ExecError::InvalidInput(format!("`image` is not valid base64: {e}")))?;
        let image = decode(&bytes)?;
        let t1 = Instant::now();
        let tensor = preprocess(&image, &model.config, model.height, model.width);
        ctx.check()?;
        let t2 = Instant::now();
        let raw = model
            .run(&tensor)
            .map_err(|e| ExecError::Internal(format!("model `{}` failed: {e}", model.name)))?;
        let t3 = Instant::now();
        let scores = if model.config.apply_softmax { softmax(&raw) } else { raw };
        let report = Report {
            model: &model.name,
            backend: model.backend(),
            device: model.device(),
            top_k: top(&scores, &model.labels, top_k),
            timing: Timing {
                decode_ms: ms(t1 - t0),
                preprocess_ms: ms(t2 - t1),
                inference_ms: ms(t3 - t2),
            },
        };
        to_output(&report)
    }
}

/// The `k` best scores with their labels, best first (ties by index).
pub fn top(scores: &[f32], labels: &[String], k: usize) -> Vec<Scored> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| Scored {
            label: labels.get(i).cloned().unwrap_or_default(),
            index: i,
            score: scores[i],
        })
        .collect()
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests;
