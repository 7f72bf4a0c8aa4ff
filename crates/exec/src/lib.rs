//! Executors: the code a peer runs for one task type.
//!
//! An [`Executor`] turns a task's JSON input into a JSON output. Executors are
//! synchronous and CPU- or GPU-bound: the worker calls [`Executor::run`] on a
//! blocking thread, never on the async runtime, with a [`RunContext`] that
//! carries the task's deadline and a cancellation flag. Long-running executors
//! call [`RunContext::check`] between units of work so that a cancelled or
//! timed-out task stops promptly.
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
    /// Model names this executor serves (inference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// GPU adapters this executor can run on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuAdapter>,
}

/// One GPU adapter as a peer advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuAdapter {
    /// Adapter name as the driver reports it, e.g. `"AMD Radeon RX 580 Series (RADV POLARIS10)"`.
    pub name: String,
    /// Vendor name (`"AMD"`, `"NVIDIA"`, `"Intel"`, `"Mesa"`, …) or the PCI vendor id in hex.
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

    /// Whether another attempt, possibly on another peer, could succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, ExecError::Unavailable(_) | ExecError::Internal(_))
    }

    /// Shorthand for an [`ExecError::InvalidInput`] from a serde error.
    pub fn invalid(err: impl fmt::Display) -> ExecError {
        ExecError::InvalidInput(err.to_string())
    }
}

/// What a running task can ask of its environment.
#[derive(Debug, Clone)]
pub struct RunContext {
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
}

impl RunContext {
    /// A context with an optional deadline and a fresh cancellation flag.
    pub fn new(deadline: Option<Instant>) -> RunContext {
        RunContext { deadline, cancelled: Arc::new(AtomicBool::new(false)) }
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

    /// Everything the executors advertise, merged (duplicates removed).
    pub fn advertise(&self) -> Advertised {
        let mut all = Advertised::default();
        for executor in self.by_type.values() {
            let one = executor.advertise();
            for model in one.models {
                if !all.models.contains(&model) {
                    all.models.push(model);
                }
            }
            for gpu in one.gpus {
                if !all.gpus.contains(&gpu) {
                    all.gpus.push(gpu);
                }
            }
        }
        all.models.sort();
        all
    }
}

/// Serializes a typed output into an [`Output`].
pub fn to_output<T: Serialize>(value: &T) -> Result<Output, ExecError> {
    serde_json::value::to_raw_value(value).map_err(|e| ExecError::Internal(format!("output: {e}")))
}
