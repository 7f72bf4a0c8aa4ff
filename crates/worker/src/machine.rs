//! What the worker tells the coordinator about its machine.

use serde_json::{Map, Value, json};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Facts about this machine, read once at start.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub cpu: Option<String>,
    pub cores: u32,
    pub memory_mb: u64,
}

impl Machine {
    /// Reads the machine's facts; whatever cannot be read is left empty.
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let kind = RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing());
        let system = System::new_with_specifics(kind).ok();
        Machine {
            hostname: System::host_name().ok(),
            os: System::long_os_version().ok(),
            cpu: system
                .as_ref()
                .and_then(|s| s.cpus().first().map(|c| c.brand().trim().to_owned())),
            cores,
            memory_mb: system.map_or(0, |s| s.total_memory() / (1024 * 1024)),
        }
    }

    /// The machine's part of the registration's `capabilities`.
    pub fn capabilities(&self) -> Map<String, Value> {
        let mut caps = Map::new();
        caps.insert("cores".into(), json!(self.cores));
        caps.insert("memory_mb".into(), json!(self.memory_mb));
        for (key, value) in [("hostname", &self.hostname), ("os", &self.os), ("cpu", &self.cpu)] {
            if let Some(v) = value {
                caps.insert(key.into(), json!(v));
            }
        }
        caps
    }
}

/// Current CPU and memory use, for heartbeats.
pub(crate) struct Load {
    system: Option<System>,
}

impl Load {
    pub fn new() -> Load {
        let kind = RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing().with_usage());
        Load { system: System::new_with_specifics(kind).ok() }
    }

    /// (CPU percent, used memory in MiB), refreshed.
    pub fn sample(&mut self) -> (Option<f32>, Option<u64>) {
        let Some(system) = self.system.as_mut() else { return (None, None) };
        system.refresh_cpu_usage();
        system.refresh_memory();
        (Some(system.global_cpu_usage()), Some(system.used_memory() / (1024 * 1024)))
    }
}
