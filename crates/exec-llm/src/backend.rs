//! The process-wide llama.cpp backend and the devices it found.
//!
//! llama.cpp is initialised once per process (a second `LlamaBackend::init`
//! fails), so every executor shares one [`backend`]. Its Vulkan backend picks
//! its devices when first used, from environment variables: by default every
//! discrete or integrated GPU, never a CPU-type device such as Mesa's
//! lavapipe (which is far slower than llama.cpp's own CPU code).
//! [`Devices::SoftwareVulkan`] asks for the first Vulkan device whatever its
//! type, with the settings llama.cpp's own CI uses for lavapipe — what the
//! tests and benchmarks use to run the Vulkan path on a machine without a GPU.

use std::sync::OnceLock;

use exec::GpuAdapter;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::{LlamaBackendDevice, LlamaBackendDeviceType, LogOptions};
use tracing::{info, warn};

use crate::LlmError;

/// Which Vulkan devices llama.cpp may use; decided once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Devices {
    /// llama.cpp's choice: every discrete or integrated GPU (none: CPU only).
    #[default]
    Gpus,
    /// The first Vulkan device, software renderers included, with f16 and
    /// cooperative matrices off (`GGML_VK_VISIBLE_DEVICES=0`,
    /// `GGML_VK_DISABLE_F16=1`, `GGML_VK_DISABLE_COOPMAT=1`; variables the
    /// environment already sets are kept).
    SoftwareVulkan,
}

/// The environment llama.cpp's Vulkan backend reads for [`Devices::SoftwareVulkan`].
const SOFTWARE_VULKAN: [(&str, &str); 3] = [
    ("GGML_VK_VISIBLE_DEVICES", "0"),
    ("GGML_VK_DISABLE_F16", "1"),
    ("GGML_VK_DISABLE_COOPMAT", "1"),
];

struct Backend {
    llama: LlamaBackend,
    devices: Devices,
}

static BACKEND: OnceLock<Result<Backend, String>> = OnceLock::new();

/// The llama.cpp backend, initialised on first use with `devices`. Later
/// calls get the same backend; one asking for other devices gets a warning.
pub(crate) fn backend(devices: Devices) -> Result<&'static LlamaBackend, LlmError> {
    let backend = BACKEND.get_or_init(|| init(devices));
    match backend {
        Ok(b) => {
            if b.devices != devices {
                warn!(
                    "llama.cpp was already started with {:?}; {devices:?} is ignored in this process",
                    b.devices
                );
            }
            Ok(&b.llama)
        }
        Err(e) => Err(LlmError::Backend(e.clone())),
    }
}

fn init(devices: Devices) -> Result<Backend, String> {
    if devices == Devices::SoftwareVulkan {
        for (key, value) in SOFTWARE_VULKAN {
            if std::env::var_os(key).is_none() {
                set_env(key, value);
            }
        }
    }
    // llama.cpp's own log lines go to `tracing` (target `llama-cpp-2`)
    // instead of straight to stderr.
    llama_cpp_2::send_logs_to_tracing(LogOptions::default());
    let llama = LlamaBackend::init().map_err(|e| format!("cannot start llama.cpp: {e}"))?;
    let gpus: Vec<String> = gpu_devices().iter().map(describe).collect();
    info!(gpu_offload = llama.supports_gpu_offload(), devices = ?gpus, "llama.cpp started");
    Ok(Backend { llama, devices })
}

#[allow(unsafe_code)]
fn set_env(key: &str, value: &str) {
    // SAFETY: called once per process, from the OnceLock initialiser that
    // runs before llama.cpp starts (nothing of ours reads these variables
    // before), and only when tests and benchmarks ask for the software Vulkan
    // device; Rust's own environment functions are serialised by std.
    unsafe { std::env::set_var(key, value) };
}

/// The GPU devices llama.cpp can offload to (not its CPU device).
pub(crate) fn gpu_devices() -> Vec<LlamaBackendDevice> {
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .filter(|d| !d.backend.eq_ignore_ascii_case("cpu"))
        .collect()
}

/// `Vulkan0 (AMD Radeon RX 580 Series (RADV POLARIS10))`.
pub(crate) fn describe(device: &LlamaBackendDevice) -> String {
    if device.description.is_empty() {
        device.name.clone()
    } else {
        format!("{} ({})", device.name, device.description)
    }
}

/// A device as the peer advertises it. Its name is the Vulkan device's name,
/// the one wgpu gives the same adapter (so that the two are listed once);
/// its memory is the device-local memory llama.cpp places layers in.
/// llama.cpp tells no vendor: it is read from the name.
pub(crate) fn adapter(device: &LlamaBackendDevice) -> GpuAdapter {
    let name =
        if device.description.is_empty() { &device.name } else { &device.description }.clone();
    let lower = name.to_ascii_lowercase();
    let software = ["llvmpipe", "lavapipe", "swiftshader"].iter().any(|s| lower.contains(s));
    let device_type = match device.device_type {
        _ if software => "cpu",
        LlamaBackendDeviceType::Gpu => "discrete",
        LlamaBackendDeviceType::IntegratedGpu => "integrated",
        LlamaBackendDeviceType::Cpu => "cpu",
        LlamaBackendDeviceType::Accelerator | LlamaBackendDeviceType::Unknown => "other",
    };
    GpuAdapter {
        vendor: vendor(&lower, software).to_owned(),
        device_type: device_type.to_owned(),
        backend: device.backend.to_ascii_lowercase(),
        vram_mb: Some(device.memory_total as u64 / (1024 * 1024)).filter(|&mb| mb > 0),
        name,
    }
}

/// The vendor a device's lower-cased name shows, as wgpu names vendors.
fn vendor(lower: &str, software: bool) -> &'static str {
    const BY_NAME: [(&str, &str); 8] = [
        ("amd", "AMD"),
        ("radeon", "AMD"),
        ("nvidia", "NVIDIA"),
        ("geforce", "NVIDIA"),
        ("intel", "Intel"),
        ("apple", "Apple"),
        ("mali", "ARM"),
        ("adreno", "Qualcomm"),
    ];
    if software {
        return "Mesa";
    }
    BY_NAME.iter().find(|(word, _)| lower.contains(word)).map_or("unknown", |(_, v)| v)
}
