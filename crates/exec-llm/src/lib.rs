//! The `generate` executor: LLM text generation with llama.cpp, on the
//! worker's Vulkan GPU when it has one (every layer that fits), else on its
//! CPU, streamed token by token.
//!
//! [`Llm::from_dir`] loads every GGUF model of a models directory
//! (`NAME.gguf` or `NAME/model.gguf`) once, at start. A file that cannot be
//! loaded is skipped with a warning naming it and the reason; a task for it
//! then gets an `unavailable` error with that reason. Each model gets one
//! llama.cpp context with `slots` sequences and an engine thread that
//! serves all of its requests with continuous batching (see `engine`), so
//! concurrent tasks share one copy of the weights.
//!
//! A task's `data` is a [`GenerateInput`]: a `prompt`, or `messages` that go
//! through the model's own chat template, plus sampling options. Its result
//! is a [`Generation`]. While it runs, the generated text is streamed
//! through [`exec::RunContext::progress`] in deltas that never split a UTF-8
//! character (tokens are decoded as bytes: a token may be part of a
//! character) and never contain a stop string, so the deltas concatenated
//! are exactly the final `text`.
//!
//! Bad input gets a typed error before any work: `invalid_input` (malformed
//! or out-of-range fields), `limit_exceeded` (a prompt longer than the
//! context, `max_tokens` over the limit), `unavailable` (a model this worker
//! does not have). Cancellation and deadlines are checked between decode
//! steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use exec::{Advertised, ExecError, Executor, ModelInfo, Output, RunContext, TaskNeeds};
use llama_cpp_2::model::{AddBos, LlamaChatMessage};
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};
use tracing::warn;

mod backend;
pub mod bench;
mod engine;
pub mod fixture;
mod input;
mod model;
mod text;
mod vocab;

pub use backend::Devices;
pub use engine::EngineStats;
pub use input::{GenerateInput, Message, Stop};

use engine::{Engine, Request, Sizes};
use input::{Checked, Text};
use model::Loaded;

/// How many layers go to the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuLayers {
    /// Every layer that fits in the GPU's free memory (estimated from the
    /// file's size and the KV cache), none without a GPU.
    #[default]
    Auto,
    /// At most this many (more than the model has means all; 0 means CPU).
    Count(u32),
}

impl std::str::FromStr for GpuLayers {
    type Err = String;

    fn from_str(s: &str) -> Result<GpuLayers, String> {
        match s {
            "auto" => Ok(GpuLayers::Auto),
            "all" => Ok(GpuLayers::Count(u32::MAX)),
            n => n
                .parse()
                .map(GpuLayers::Count)
                .map_err(|_| format!("expected `auto`, `all` or a number of layers, not `{n}`")),
        }
    }
}

/// How the executor loads and serves its models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// Layers offloaded to the GPU. Default: auto.
    pub gpu_layers: GpuLayers,
    /// Sequences each model decodes together. Default 4.
    pub slots: u32,
    /// Tokens per sequence (prompt and completion), at most the model's
    /// trained context. Default 4096.
    pub context: u32,
    /// The most tokens one decode step takes. Default 512.
    pub batch: u32,
    /// CPU threads for llama.cpp. Default: half the cores (at least one):
    /// llama.cpp's threads spin while they wait for each other, and on cores
    /// shared with other work (the worker's other tasks) a thread that is
    /// not scheduled stalls the rest — 2 threads on 2 busy cores were 600
    /// times slower than 1 in our measurements.
    pub threads: Option<u32>,
    /// The most tokens one task may ask for. Default 4096.
    pub max_tokens_limit: u32,
    /// Tokens generated when a task does not say. Default 256.
    pub default_max_tokens: u32,
    /// Which Vulkan devices llama.cpp may use (decided once per process).
    pub devices: Devices,
}

impl Default for LlmConfig {
    fn default() -> LlmConfig {
        LlmConfig {
            gpu_layers: GpuLayers::Auto,
            slots: 4,
            context: 4096,
            batch: 512,
            threads: None,
            max_tokens_limit: 4096,
            default_max_tokens: 256,
            devices: Devices::Gpus,
        }
    }
}

/// Why the executor could not start at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("{0}")]
    Backend(String),
    #[error("cannot read the models directory {path}: {reason}")]
    Dir { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot load {path}: {reason}")]
    Model { path: PathBuf, reason: String },
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn, or a stop string came.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

/// A `generate` task's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// From the start of the prompt's processing to the first token.
    pub prompt_ms: f64,
    /// From the first token to the last.
    pub generation_ms: f64,
    /// Decode speed: the tokens after the first, per second of `generation_ms`.
    pub tokens_per_s: f64,
    /// Where the model runs, e.g. `Vulkan0 (AMD Radeon RX 580 Series (RADV POLARIS10))` or `cpu`.
    pub device: String,
}

/// One model ready to serve.
struct Served {
    loaded: Arc<Loaded>,
    engine: Engine,
    /// Tokens per sequence.
    context: u32,
}

/// The `generate` executor.
pub struct Llm {
    config: LlmConfig,
    dir: Option<PathBuf>,
    models: BTreeMap<String, Result<Served, String>>,
}

impl Llm {
    /// Loads every GGUF model in `dir`. Fails only when the directory cannot
    /// be read or the configuration is invalid; models that do not load
    /// (llama.cpp failing to start included) are listed by [`Llm::failed`].
    pub fn from_dir(dir: &Path, config: LlmConfig) -> Result<Llm, LlmError> {
        let found = model::scan(dir)
            .map_err(|e| LlmError::Dir { path: dir.to_owned(), reason: e.to_string() })?;
        let mut llm = Llm::empty(config)?;
        llm.dir = Some(dir.to_owned());
        for (name, path) in found {
            let served = llm.serve(&name, &path);
            if let Err(reason) = &served {
                warn!(model = %name, file = %path.display(), "model skipped: {reason}");
            }
            llm.models.insert(name, served);
        }
        Ok(llm)
    }

    /// Loads the one model at `path` as `name` (for tests and benchmarks).
    pub fn from_file(name: &str, path: &Path, config: LlmConfig) -> Result<Llm, LlmError> {
        let mut llm = Llm::empty(config)?;
        let served = llm
            .serve(name, path)
            .map_err(|reason| LlmError::Model { path: path.to_owned(), reason })?;
        llm.models.insert(name.to_owned(), Ok(served));
        Ok(llm)
    }

    fn empty(config: LlmConfig) -> Result<Llm, LlmError> {
        if config.slots == 0 || config.slots > 64 {
            return Err(LlmError::Config(format!("slots must be 1 to 64, not {}", config.slots)));
        }
        if config.context < 16 || config.batch < config.slots {
            return Err(LlmError::Config(
                "context must be at least 16 tokens, and batch at least one token per slot".into(),
            ));
        }
        // llama.cpp starts with the first model, so that a models directory
        // without GGUF files costs nothing.
        Ok(Llm { config, dir: None, models: BTreeMap::new() })
    }

    fn serve(&self, name: &str, path: &Path) -> Result<Served, String> {
        let backend = backend::backend(self.config.devices).map_err(|e| e.to_string())?;
        let loaded = model::load(backend, name, path, &self.config)?;
        let context = self.config.context.min(loaded.shape.n_ctx_train.max(16));
        let threads = self.config.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() as u32 / 2).max(1))
        });
        let sizes = Sizes {
            slots: self.config.slots,
            context,
            batch: self.config.batch,
            threads: i32::try_from(threads).unwrap_or(1),
        };
        let engine = Engine::start(backend, Arc::clone(&loaded), sizes)?;
        Ok(Served { loaded, engine, context })
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

    /// The GPU devices llama.cpp found (none: every model runs on the CPU).
    pub fn gpu_devices(&self) -> Vec<String> {
        if backend::backend(self.config.devices).is_err() {
            return Vec::new();
        }
        backend::gpu_devices().iter().map(backend::describe).collect()
    }

    /// The GPUs llama.cpp offloads to, when a loaded model has layers there
    /// (so that `generate` tasks asking for GPU memory can come here).
    fn gpus_used(&self) -> Vec<exec::GpuAdapter> {
        let offloaded = self.models.values().flatten().any(|s| s.loaded.gpu_layers > 0);
        if !offloaded {
            return Vec::new();
        }
        backend::gpu_devices().iter().map(backend::adapter).collect()
    }

    /// Where a loaded model runs (`cpu`, or the GPU and how many layers).
    pub fn device(&self, name: &str) -> Option<&str> {
        self.models.get(name)?.as_ref().ok().map(|s| s.loaded.device.as_str())
    }

    /// What the engine of a loaded model did so far.
    pub fn stats(&self, name: &str) -> Option<EngineStats> {
        Some(self.models.get(name)?.as_ref().ok()?.engine.stats())
    }

    /// Runs one generation in-process (the executor's `run`, typed).
    pub fn generate(
        &self,
        input: GenerateInput,
        ctx: &RunContext,
    ) -> Result<Generation, ExecError> {
        let checked = input.check(self.config.max_tokens_limit)?;
        let served = self.served(&checked.model)?;
        let tokens = tokenize(&served.loaded, &checked.text)?;
        let max_tokens = self.budget(served, &checked, tokens.len())?;
        let (reply, answer) = mpsc::sync_channel(1);
        served.engine.submit(Request {
            tokens,
            max_tokens,
            sampling: checked.sampling,
            stop: checked.stop,
            ctx: ctx.clone(),
            reply,
        })?;
        answer.recv().map_err(|_| {
            ExecError::Internal(format!("the engine of model `{}` stopped", checked.model))
        })?
    }

    /// The prompt's tokens of `text` for `model`, as [`Llm::generate`] feeds them.
    pub fn tokenize(&self, model: &str, text: &str) -> Result<Vec<i32>, ExecError> {
        let served = self.served(model)?;
        let tokens = tokenize(&served.loaded, &Text::Prompt(text.to_owned()))?;
        Ok(tokens.into_iter().map(|t| t.0).collect())
    }

    /// The text of `tokens` as a generation would stream it: their bytes
    /// joined, then decoded (a character may span several tokens).
    pub fn detokenize(&self, model: &str, tokens: &[i32]) -> Result<String, ExecError> {
        let served = self.served(model)?;
        let mut bytes = Vec::new();
        for &t in tokens {
            served.loaded.vocab.piece(LlamaToken(t), &mut bytes);
        }
        let mut out = text::Output::new(Vec::new());
        let mut text = out.push(&bytes).to_owned();
        text.push_str(out.finish());
        Ok(text)
    }

    fn served(&self, name: &str) -> Result<&Served, ExecError> {
        match self.models.get(name) {
            Some(Ok(served)) => Ok(served),
            Some(Err(reason)) => {
                Err(ExecError::Unavailable(format!("model `{name}` failed to load: {reason}")))
            }
            None => Err(ExecError::Unavailable(format!(
                "no model `{name}` on this worker{} (it has: {})",
                self.dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default(),
                self.model_names().join(", ")
            ))),
        }
    }

    /// The tokens to generate: as asked, within the context.
    fn budget(&self, served: &Served, checked: &Checked, prompt: usize) -> Result<u32, ExecError> {
        let context = served.context as usize;
        if prompt >= context {
            return Err(ExecError::LimitExceeded(format!(
                "the prompt is {prompt} tokens; model `{}` holds {context} tokens per sequence, prompt and completion together",
                checked.model
            )));
        }
        let room = (context - prompt) as u32;
        match checked.max_tokens {
            Some(n) if n > room => Err(ExecError::LimitExceeded(format!(
                "the prompt ({prompt} tokens) and max_tokens ({n}) exceed model `{}`'s context of {context} tokens",
                checked.model
            ))),
            Some(n) => Ok(n),
            None => Ok(self.config.default_max_tokens.min(room)),
        }
    }
}

/// The prompt's tokens, through the chat template for `messages`.
fn tokenize(model: &Loaded, text: &Text) -> Result<Vec<LlamaToken>, ExecError> {
    let prompt = match text {
        Text::Prompt(p) => p.clone(),
        Text::Chat(messages) => apply_template(model, messages)?,
    };
    let nul = |_| ExecError::InvalidInput("the prompt contains a NUL character".into());
    let mut tokens = model.model.str_to_token(&prompt, AddBos::Always).map_err(nul)?;
    // A template that writes the BOS token itself, plus the one the
    // tokenizer adds: keep one.
    let bos = model.model.token_bos();
    if tokens.len() >= 2 && tokens[0] == bos && tokens[1] == bos {
        tokens.remove(0);
    }
    if tokens.is_empty() {
        return Err(ExecError::InvalidInput("the prompt is empty".into()));
    }
    Ok(tokens)
}

fn apply_template(model: &Loaded, messages: &[input::Message]) -> Result<String, ExecError> {
    let Some(template) = &model.chat else {
        return Err(ExecError::InvalidInput(format!(
            "model `{}` has no chat template llama.cpp can apply; send a `prompt` instead of `messages`",
            model.name
        )));
    };
    let chat = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ExecError::InvalidInput("a message contains a NUL character".into()))?;
    // The template was applied once at load; the binding panics on templates
    // llama.cpp does not know, so a panic here would be a surprise, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.model.apply_chat_template(template, &chat, true)
    }))
    .map_err(|_| ExecError::Internal("llama.cpp's chat template failed".into()))?
    .map_err(|e| ExecError::InvalidInput(format!("cannot apply the chat template: {e}")))
}

/// What a `generate` task needs of a peer: the model its `data.model` names.
pub fn needs() -> TaskNeeds {
    TaskNeeds { gpu: false, model_field: Some("model".to_owned()) }
}

impl Executor for Llm {
    fn task_type(&self) -> &str {
        "generate"
    }

    fn needs(&self) -> TaskNeeds {
        needs()
    }

    fn advertise(&self) -> Advertised {
        let model_info = self
            .models
            .iter()
            .filter_map(|(name, m)| m.as_ref().ok().map(|s| (name, s)))
            .map(|(name, s)| ModelInfo {
                name: name.clone(),
                task_type: "generate".into(),
                format: "gguf".into(),
                size_bytes: Some(s.loaded.size_bytes),
                context_length: Some(s.context),
                quantization: s.loaded.quantization.clone(),
                n_params: Some(s.loaded.n_params),
            })
            .collect();
        Advertised { models: self.model_names(), model_info, gpus: self.gpus_used() }
    }

    fn run(&self, input: &str, ctx: &RunContext) -> Result<Output, ExecError> {
        let input: GenerateInput = serde_json::from_str(input).map_err(ExecError::invalid)?;
        exec::to_output(&self.generate(input, ctx)?)
    }
}

#[cfg(test)]
mod tests;
