//! Peer capabilities, read leniently.
//!
//! The seed leaves `capabilities` free-form (`{...}`), so no shape of it may
//! get a peer refused: keys we know are read when their values make sense,
//! anything unreadable is noted in [`Capabilities::warnings`], and the whole
//! object is kept in [`Capabilities::raw`] for operators to see.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Json;

/// What a peer says it can do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Task types the peer runs; `None` means every type (a seed-literal peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_types: Option<Vec<String>>,
    /// Tasks it runs at once (`max_concurrent`, or `slots`); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// GPU adapters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuInfo>,
    /// Names of the models served, for every task type (inference,
    /// generate), sorted and without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// What tasks of each type need of a peer, as the peer's executors
    /// declare it (`task_needs`): the coordinator learns from it which peers
    /// a task of that type may go to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_needs: BTreeMap<String, TaskNeeds>,
    /// Each entry of `models` as the peer gave it: a plain name (which counts
    /// for every task type) or an object with its details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_info: Vec<ModelEntry>,
    /// Who runs the peer (`owner`): replicas of one verified task never go
    /// to two peers of the same owner. At most [`crate::MAX_ID_LEN`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `echoes_ids`: the peer answers every assignment with its cluster id
    /// and attempt (`task_result.id`, `.attempt`), never by `task_id`
    /// alone, as our worker does. Such a peer may be given a task before
    /// the task is durable; one that answers by the seed's id waits for it.
    pub echoes_ids: bool,
    /// Known keys whose values could not be read, for operators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The object exactly as the peer sent it.
    #[serde(default)]
    pub raw: Value,
}

/// What a task type needs of a peer beyond running the type, as its executor
/// declares it. A task of the type goes only to peers that have it, even
/// peers that declare no task types (seed-literal peers run every type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNeeds {
    /// A GPU.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gpu: bool,
    /// The field of the task's `data` naming a model the peer must serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_field: Option<String>,
}

impl TaskNeeds {
    /// Needs nothing beyond the task type.
    pub const NONE: TaskNeeds = TaskNeeds { gpu: false, model_field: None };

    /// Whether it needs anything at all.
    pub fn is_none(&self) -> bool {
        !self.gpu && self.model_field.is_none()
    }
}

/// One GPU as a peer describes it. Only the name is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_mb: Option<u64>,
}

/// One model a peer serves. `models` may hold names (`"resnet50"`) or
/// objects `{"name", "task_type", "format", "size_bytes", "context_length",
/// "quantization", "n_params"}`; only `name` is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    /// The task type that runs it (`generate`, `inference`); `None` for a
    /// plain name, which counts for every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// `gguf`, `onnx`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Tokens one sequence may hold (prompt and completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_params: Option<u64>,
}

impl ModelEntry {
    /// Whether this entry serves tasks of `task_type`.
    pub fn serves(&self, task_type: &str) -> bool {
        self.task_type.as_deref().is_none_or(|t| t == task_type)
    }
}

/// The most slots a peer may declare; more is clamped (and warned about).
pub const MAX_SLOTS: u32 = 4096;

impl Capabilities {
    /// Reads capabilities from the raw `capabilities` field (absent is fine).
    pub fn from_json(raw: Option<&Json>) -> Capabilities {
        let value = match raw {
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            None => Value::Null,
        };
        Capabilities::from_value(value)
    }

    /// Reads capabilities from a parsed JSON value (absent or non-object is fine).
    pub fn from_value(value: Value) -> Capabilities {
        let mut caps = Capabilities::default();
        if let Value::Object(map) = &value {
            caps.read(map);
        } else if !value.is_null() {
            caps.warnings.push("capabilities is not an object; ignored".to_owned());
        }
        caps.raw = value;
        caps
    }

    /// Whether the peer serves `model` for tasks of `task_type` (a plain
    /// model name counts for every type).
    pub fn serves_model(&self, model: &str, task_type: &str) -> bool {
        self.model_info.iter().any(|m| m.name == model && m.serves(task_type))
    }

    /// Slots, with the default of one task at a time.
    pub fn slots(&self) -> u32 {
        self.max_concurrent.unwrap_or(1)
    }

    fn read(&mut self, map: &Map<String, Value>) {
        if let Some((key, v)) = first(map, &["task_types", "supported_tasks"]) {
            match string_list(v) {
                Some(list) => self.task_types = Some(list),
                None => self.warn(key, "a list of task type names"),
            }
        }
        if let Some((key, v)) = first(map, &["max_concurrent", "slots"]) {
            match v.as_u64() {
                Some(0) => self.warn(key, "at least 1"),
                Some(n) if n > u64::from(MAX_SLOTS) => {
                    self.warn(key, "at most 4096 (clamped)");
                    self.max_concurrent = Some(MAX_SLOTS);
                }
                Some(n) => self.max_concurrent = u32::try_from(n).ok(),
                None => self.warn(key, "a positive integer"),
            }
        }
        if let Some((key, v)) = first(map, &["cores", "cpu_cores", "cpu_count"]) {
            match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => self.cores = Some(n),
                None => self.warn(key, "an integer"),
            }
        }
        self.read_memory(map);
        self.read_gpus(map);
        self.read_models(map);
        self.read_needs(map);
        self.read_owner(map);
        if let Some((key, v)) = first(map, &["echoes_ids"]) {
            match v.as_bool() {
                Some(b) => self.echoes_ids = b,
                None => self.warn(key, "true or false"),
            }
        }
    }

    fn read_models(&mut self, map: &Map<String, Value>) {
        let Some((key, v)) = first(map, &["models"]) else { return };
        let Some(items) = v.as_array() else {
            return self.warn(key, "a list of model names or objects");
        };
        for item in items {
            match model(item) {
                Some(m) => self.model_info.push(m),
                None => self.warn(key, "model names or objects with a string `name`"),
            }
        }
        self.models = self.model_info.iter().map(|m| m.name.clone()).collect();
        self.models.sort();
        self.models.dedup();
    }

    fn read_owner(&mut self, map: &Map<String, Value>) {
        if let Some((key, v)) = first(map, &["owner"]) {
            match v.as_str().map(str::trim) {
                Some(o) if !o.is_empty() && o.len() <= crate::MAX_ID_LEN => {
                    self.owner = Some(o.to_owned());
                }
                _ => self.warn(key, "a name of 1 to 256 bytes"),
            }
        }
    }

    fn read_needs(&mut self, map: &Map<String, Value>) {
        let Some((key, v)) = first(map, &["task_needs"]) else { return };
        let Value::Object(by_type) = v else {
            return self.warn(key, "an object of task type to needs");
        };
        for (task_type, needs) in by_type {
            match serde_json::from_value::<TaskNeeds>(needs.clone()) {
                Ok(needs) => {
                    self.task_needs.insert(task_type.clone(), needs);
                }
                Err(_) => self.warn(key, "needs like {\"gpu\": true, \"model_field\": \"model\"}"),
            }
        }
    }

    fn read_memory(&mut self, map: &Map<String, Value>) {
        if let Some((key, v)) = first(map, &["memory_mb", "ram_mb"]) {
            match v.as_f64() {
                Some(mb) if mb >= 0.0 => self.memory_mb = Some(mb as u64),
                _ => self.warn(key, "a number of MiB"),
            }
        } else if let Some((key, v)) = first(map, &["memory_gb", "ram_gb"]) {
            match v.as_f64() {
                Some(gb) if gb >= 0.0 => self.memory_mb = Some((gb * 1024.0) as u64),
                _ => self.warn(key, "a number of GiB"),
            }
        }
    }

    fn read_gpus(&mut self, map: &Map<String, Value>) {
        let Some((key, v)) = first(map, &["gpus", "gpu"]) else { return };
        let items: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            Value::Null | Value::Bool(false) => Vec::new(),
            other => vec![other],
        };
        for item in items {
            match gpu(item) {
                Some(g) => self.gpus.push(g),
                None => self.warn(key, "GPU names or objects with a `name`"),
            }
        }
    }

    fn warn(&mut self, key: &str, expected: &str) {
        self.warnings.push(format!("capabilities.{key}: expected {expected}; ignored"));
    }
}

fn first<'a>(map: &'a Map<String, Value>, keys: &[&'a str]) -> Option<(&'a str, &'a Value)> {
    keys.iter().find_map(|k| map.get(*k).map(|v| (*k, v)))
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|s| s.as_str().map(str::to_owned)).collect()
}

fn model(v: &Value) -> Option<ModelEntry> {
    match v {
        Value::String(name) => Some(ModelEntry { name: name.clone(), ..ModelEntry::default() }),
        Value::Object(m) => {
            let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            let number = |k: &str| m.get(k).and_then(Value::as_u64);
            Some(ModelEntry {
                name: text("name")?,
                task_type: text("task_type"),
                format: text("format"),
                size_bytes: number("size_bytes"),
                context_length: number("context_length"),
                quantization: text("quantization"),
                n_params: number("n_params"),
            })
        }
        _ => None,
    }
}

fn gpu(v: &Value) -> Option<GpuInfo> {
    match v {
        Value::String(name) => Some(GpuInfo { name: name.clone(), ..GpuInfo::default() }),
        Value::Object(m) => {
            let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            let vram = ["vram_mb", "memory_mb"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Value::as_u64))
                .or_else(|| m.get("vram_gb").and_then(Value::as_f64).map(|g| (g * 1024.0) as u64));
            Some(GpuInfo {
                name: text("name")?,
                vendor: text("vendor"),
                device_type: text("device_type"),
                backend: text("backend"),
                vram_mb: vram,
            })
        }
        _ => None,
    }
}
