//! The tiny model, loaded once per test binary on the CPU and (where a
//! Vulkan device exists — lavapipe in CI) on the GPU.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use exec::ProgressSink;
use exec_llm::{Devices, GpuLayers, Llm, LlmConfig, fixture};

pub const MODEL: &str = "tiny";

pub struct Models {
    pub path: PathBuf,
    pub cpu: Llm,
    pub gpu: Option<Llm>,
}

/// A directory of this test binary's own under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("exec-llm").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One CPU thread: fastest for the tiny model, and steady on a busy machine.
pub fn config(gpu_layers: GpuLayers) -> LlmConfig {
    LlmConfig {
        gpu_layers,
        threads: Some(1),
        devices: Devices::SoftwareVulkan,
        ..LlmConfig::default()
    }
}

/// One test at a time: llama.cpp's CPU threads spin while they wait for
/// work, so several contexts decoding at once on a small machine (and
/// lavapipe's own threads) slow each other down many times over.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared models, or `None` (the test says SKIP) without Python's gguf.
pub fn models(test: &str) -> Option<&'static Models> {
    static MODELS: OnceLock<Option<Models>> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            let dir = scratch(&format!("shared-{}", std::process::id()));
            let path = fixture::tiny_or_skip(&dir, MODEL, test)?;
            let cpu = Llm::from_file(MODEL, &path, config(GpuLayers::Count(0))).unwrap();
            let gpu = if cpu.gpu_devices().is_empty() {
                if std::env::var("LEGACYGPU_REQUIRE_GPU").as_deref() == Ok("1") {
                    panic!("no Vulkan device, and LEGACYGPU_REQUIRE_GPU=1 (install mesa-vulkan-drivers)");
                }
                None
            } else {
                Some(Llm::from_file(MODEL, &path, config(GpuLayers::Auto)).unwrap())
            };
            Some(Models { path, cpu, gpu })
        })
        .as_ref()
}

/// Collects streamed deltas.
#[derive(Default)]
pub struct Deltas(pub Mutex<Vec<(String, u32)>>);

impl ProgressSink for Deltas {
    fn append(&self, text: &str, tokens: u32) {
        self.0.lock().unwrap().push((text.to_owned(), tokens));
    }
}

impl Deltas {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().iter().map(|(t, _)| t.as_str()).collect()
    }

    pub fn tokens(&self) -> u32 {
        self.0.lock().unwrap().iter().map(|(_, n)| n).sum()
    }
}
