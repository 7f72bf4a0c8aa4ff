//! Executors: the code a peer runs for one task type.
//!
//! An [`Executor`] turns a task's JSON input into a JSON output. Executors are
//! synchronous and CPU- or GPU-bound: the worker calls [`Executor::run`] on a
//! blocking thread, never on the async runtime, with a [`RunContext`] that
//! carries the task's deadline and a cancellation flag. Long-running executors
//! call [`RunContext::check`] between units of work so that a cancelled or
//! timed-out task stops promptly.
//!
//! Executors that produce output gradually (text generation) stream it with
//! [`RunContext::progress`]: the call only appends to a buffer the worker
//! drains at its own pace, so an executor never waits for the network.
//!
//! Errors are typed ([`ExecError`]): an error caused by the task's own input
//! is returned to the submitter without a retry, while an error of the peer
//! (an internal failure) lets the coordinator try another peer.
//!
//! Adding a task type is one file: implement [`Executor`] and register it in
//! an [`Executors`] set.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use codes::FailureCode;
pub use proto::TaskNeeds;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod builtin;

pub use builtin::{Echo, Sleep};

/// A task's output: JSON text, kept raw so that large outputs are not parsed
/// again on their way to the coordinator.
pub type Output = Box<RawValue>;

/// The code a peer runs for one task type.
pub trait Executor: Send + Sync + 'static {
    /// The task type this executor runs, e.g. `"physics"`.
    fn task_type(&self) -> &str;

    /// What this executor adds to the peer's advertised capabilities
    /// (the models it can serve, the GPUs it can use).
    fn advertise(&self) -> Advertised {
        Advertised::default()
    }

    /// What a task of this type needs of a peer (a GPU, the model its data
    /// names), so that the coordinator sends such tasks only to peers that
    /// have it. Advertised with the peer's capabilities; a new task type
    /// declares it here and nowhere else.
    fn needs(&self) -> TaskNeeds {
        TaskNeeds::NONE
    }

    /// Runs one task. `input` is the task's `data`, as JSON text.
    ///
    /// Called on a blocking thread. Implementations that loop call
    /// [`RunContext::check`] between units of work.
    fn run(&self, input: &str, ctx: &RunContext) -> Result<Output, ExecError>;
}

/// Capabilities an executor contributes to its peer's registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Advertised {
    /// Names of the models this executor serves. A name that no entry of
    /// `model_info` describes is advertised plain, which counts for every
    /// task type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Models described in full (name, task type, format, size, …), so that
    /// tasks of their own type only are sent for them. A model listed here
    /// need not be repeated in `models`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_info: Vec<ModelInfo>,
    /// GPU adapters this executor can run on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuAdapter>,
}

/// A model as a peer advertises it, in its registration's `models` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name tasks use in `data.model`.
    pub name: String,
    /// The task type that runs it (`"generate"`, `"inference"`).
    pub task_type: String,
    /// The file format (`"gguf"`, `"onnx"`).
    pub format: String,
    /// The model file's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The most tokens one sequence may hold (prompt and completion), as served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// The weights' quantisation, e.g. `"Q4_K_M"`, `"F16"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// The number of parameters, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_params: Option<u64>,
}

/// One GPU adapter as a peer advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuAdapter {
    /// Adapter name as the driver reports it, e.g. `"AMD Radeon RX 580 Series (RADV POLARIS10)"`.
    pub name: String,
    /// Vendor name (`"AMD"`, `"NVIDIA"`, `"Intel"`, `"Mesa"`, …), the PCI
    /// vendor id in hex, or `"unknown"`.
    pub vendor: String,
    /// `"discrete"`, `"integrated"`, `"virtual"`, `"cpu"` or `"other"`.
    pub device_type: String,
    /// `"vulkan"`, `"metal"`, `"dx12"` or `"gl"`.
    pub backend: String,
    /// Video memory in MiB, where the driver tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_mb: Option<u64>,
}

/// Why a task failed on a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The task's input is malformed or out of range. Not retried.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The task asks for more work than this executor's limits allow. Not retried.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The task needs something this peer does not have (a model, a GPU).
    /// Retried elsewhere.
    #[error("unavailable on this peer: {0}")]
    Unavailable(String),
    /// The task ran past its time limit. Not retried.
    #[error("timed out")]
    TimedOut,
    /// The task was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The executor failed for a reason of its own (a panic, a driver error).
    /// Retried elsewhere.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ExecError {
    /// A stable, machine-readable code for this error, as sent on the wire.
    pub fn code(&self) -> FailureCode {
        match self {
            ExecError::InvalidInput(_) => FailureCode::INVALID_INPUT,
            ExecError::LimitExceeded(_) => FailureCode::LIMIT_EXCEEDED,
            ExecError::Unavailable(_) => FailureCode::UNAVAILABLE,
            ExecError::TimedOut => FailureCode::TIMED_OUT,
            ExecError::Cancelled => FailureCode::CANCELLED,
            ExecError::Internal(_) => FailureCode::INTERNAL,
        }
    }

    /// Whether another attempt, possibly on another peer, could succeed:
    /// the rule of its code, the one every crate applies.
    pub fn retryable(&self) -> bool {
        self.code().retryable_by_default()
    }

    /// Shorthand for an [`ExecError::InvalidInput`] from a serde error.
    pub fn invalid(err: impl fmt::Display) -> ExecError {
        ExecError::InvalidInput(err.to_string())
    }
}

/// Where a running task's streamed output goes. The worker gives each task
/// one that buffers, and sends what accumulated at most every few
/// milliseconds.
pub trait ProgressSink: Send + Sync + 'static {
    /// Appends `text` (UTF-8, never a split character), which covers `tokens`
    /// units of work (generated tokens). Must return at once: it may take a
    /// short lock, never wait for IO.
    fn append(&self, text: &str, tokens: u32);
}

/// What a running task can ask of its environment.
#[derive(Clone)]
pub struct RunContext {
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
    progress: Option<Arc<dyn ProgressSink>>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("deadline", &self.deadline)
            .field("cancelled", &self.cancelled)
            .field("streams", &self.progress.is_some())
            .finish()
    }
}

impl RunContext {
    /// A context with an optional deadline and a fresh cancellation flag.
    pub fn new(deadline: Option<Instant>) -> RunContext {
        RunContext { deadline, cancelled: Arc::new(AtomicBool::new(false)), progress: None }
    }

    /// The same context, streaming its progress into `sink`.
    pub fn with_progress(mut self, sink: Arc<dyn ProgressSink>) -> RunContext {
        self.progress = Some(sink);
        self
    }

    /// Reports output produced so far: `text` is appended to what the task
    /// streamed before, and covers `tokens` units of work. Never blocks; does
    /// nothing when nobody listens.
    pub fn progress(&self, text: &str, tokens: u32) {
        if let Some(sink) = &self.progress
            && (!text.is_empty() || tokens > 0)
        {
            sink.append(text, tokens);
        }
    }

    /// A context without deadline, for tests and benchmarks.
    pub fn unbounded() -> RunContext {
        RunContext::new(None)
    }

    /// The flag that cancels this task when set.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancelled)
    }

    /// Asks the task to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// The instant by which the task must finish, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None` when there is no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Returns an error when the task was cancelled or ran past its deadline.
    /// Executors call this between units of work.
    pub fn check(&self) -> Result<(), ExecError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(ExecError::Cancelled);
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(ExecError::TimedOut),
            _ => Ok(()),
        }
    }
}

/// The executors of one peer, by task type.
#[derive(Clone, Default)]
pub struct Executors {
    by_type: BTreeMap<String, Arc<dyn Executor>>,
}

impl fmt::Debug for Executors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_type.keys()).finish()
    }
}

impl Executors {
    /// An empty set.
    pub fn new() -> Executors {
        Executors::default()
    }

    /// The built-in `echo` and `sleep` executors.
    pub fn builtin() -> Executors {
        let mut set = Executors::new();
        set.add(Echo);
        set.add(Sleep::default());
        set
    }

    /// Adds an executor, replacing any other of the same task type.
    pub fn add(&mut self, executor: impl Executor) {
        self.add_arc(Arc::new(executor));
    }

    /// Adds a shared executor, replacing any other of the same task type.
    pub fn add_arc(&mut self, executor: Arc<dyn Executor>) {
        self.by_type.insert(executor.task_type().to_owned(), executor);
    }

    /// The executor for `task_type`.
    pub fn get(&self, task_type: &str) -> Option<&Arc<dyn Executor>> {
        self.by_type.get(task_type)
    }

    /// The task types, sorted.
    pub fn task_types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    /// What each task type needs of a peer, for the types that need anything.
    pub fn needs(&self) -> BTreeMap<String, TaskNeeds> {
        self.by_type
            .iter()
            .map(|(t, e)| (t.clone(), e.needs()))
            .filter(|(_, n)| !n.is_none())
            .collect()
    }

    /// Everything the executors advertise, merged (duplicates removed; a GPU
    /// two executors list, by name and backend, is listed once).
    pub fn advertise(&self) -> Advertised {
        let mut all = Advertised::default();
        for executor in self.by_type.values() {
            let one = executor.advertise();
            for model in one.models {
                if !all.models.contains(&model) {
                    all.models.push(model);
                }
            }
            for info in one.model_info {
                if !all.model_info.contains(&info) {
                    all.model_info.push(info);
                }
            }
            for gpu in one.gpus {
                let seen =
                    all.gpus.iter_mut().find(|g| g.name == gpu.name && g.backend == gpu.backend);
                match seen {
                    // One adapter seen by two executors (wgpu's and llama.cpp's):
                    // listed once, with what either knows that the other does not.
                    Some(seen) => {
                        seen.vram_mb = seen.vram_mb.or(gpu.vram_mb);
                        if seen.vendor == "unknown" {
                            seen.vendor = gpu.vendor;
                        }
                    }
                    None => all.gpus.push(gpu),
                }
            }
        }
        all.models.sort();
        all.model_info.sort_by(|a, b| (&a.name, &a.task_type).cmp(&(&b.name, &b.task_type)));
        all
    }
}

/// Serializes a typed output into an [`Output`].
pub fn to_output<T: Serialize>(value: &T) -> Result<Output, ExecError> {
    serde_json::value::to_raw_value(value).map_err(|e| ExecError::Internal(format!("output: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(String, u32)>>);

    impl ProgressSink for Collect {
        fn append(&self, text: &str, tokens: u32) {
            self.0.lock().unwrap().push((text.to_owned(), tokens));
        }
    }

    #[test]
    fn progress_reaches_the_sink_in_order_and_empty_deltas_are_dropped() {
        let sink = Arc::new(Collect::default());
        let ctx = RunContext::unbounded().with_progress(sink.clone());
        ctx.progress("He", 1);
        ctx.progress("", 0);
        ctx.clone().progress("llo", 2);
        ctx.progress("", 1);
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![("He".to_owned(), 1), ("llo".to_owned(), 2), (String::new(), 1)]
        );
        // Without a sink, progress is a no-op.
        RunContext::unbounded().progress("ignored", 1);
    }

    struct Models(Vec<ModelInfo>);

    impl Executor for Models {
        fn task_type(&self) -> &str {
            "generate"
        }
        fn advertise(&self) -> Advertised {
            Advertised { model_info: self.0.clone(), ..Advertised::default() }
        }
        fn run(&self, _: &str, _: &RunContext) -> Result<Output, ExecError> {
            Err(ExecError::Internal("not run".into()))
        }
    }

    struct Gpus(&'static str, Vec<GpuAdapter>);

    impl Executor for Gpus {
        fn task_type(&self) -> &str {
            self.0
        }
        fn advertise(&self) -> Advertised {
            Advertised { gpus: self.1.clone(), ..Advertised::default() }
        }
        fn run(&self, _: &str, _: &RunContext) -> Result<Output, ExecError> {
            Err(ExecError::Internal("not run".into()))
        }
    }

    #[test]
    fn a_gpu_two_executors_see_is_listed_once_with_what_either_knows() {
        let gpu = |name: &str, vendor: &str, vram_mb| GpuAdapter {
            name: name.into(),
            vendor: vendor.into(),
            device_type: "discrete".into(),
            backend: "vulkan".into(),
            vram_mb,
        };
        let mut set = Executors::builtin();
        set.add(Gpus("generate", vec![gpu("RX 580", "unknown", Some(8192))]));
        set.add(Gpus("gpu", vec![gpu("RX 580", "AMD", None), gpu("RX 570", "AMD", None)]));
        assert_eq!(
            set.advertise().gpus,
            [gpu("RX 580", "AMD", Some(8192)), gpu("RX 570", "AMD", None)]
        );
    }

    #[test]
    fn model_info_is_merged_sorted_and_deduplicated() {
        let info = |name: &str| ModelInfo {
            name: name.into(),
            task_type: "generate".into(),
            format: "gguf".into(),
            size_bytes: Some(1),
            context_length: Some(256),
            quantization: Some("F32".into()),
            n_params: None,
        };
        let mut set = Executors::builtin();
        set.add(Models(vec![info("b"), info("a"), info("b")]));
        let names: Vec<_> = set.advertise().model_info.into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["a", "b"]);
        let json = serde_json::to_value(info("a")).unwrap();
        assert_eq!(json["quantization"], "F32");
        assert!(json.get("n_params").is_none());
    }
}
