//! Finding the machine's GPU adapters and describing them.
//!
//! wgpu does not report video memory; on Linux, the amdgpu driver (the RX 580
//! path) does, in sysfs, and we read it there when we can find the card.

use std::path::Path;

use exec::GpuAdapter;
use wgpu::{Adapter, AdapterInfo, Backend, Backends, DeviceType};

use crate::GpuOptions;

/// An adapter found, with what we advertise of it.
pub(crate) struct Found {
    pub adapter: Adapter,
    pub info: GpuAdapter,
    rank: u8,
}

/// Every usable adapter, best first. Vulkan, Metal and DX12 are asked
/// first; OpenGL only when they have nothing (its EGL probing is slow and
/// noisy, and it is the weakest backend for compute).
pub(crate) fn find_all(opts: &GpuOptions) -> Vec<Found> {
    if opts.disabled {
        return Vec::new();
    }
    let primary = find(Backends::PRIMARY, opts);
    if primary.is_empty() { find(Backends::GL, opts) } else { primary }
}

/// The usable adapters of `backends`: discrete before integrated before
/// virtual before software. The same card seen twice is listed once.
fn find(backends: Backends, opts: &GpuOptions) -> Vec<Found> {
    let desc = wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    };
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let mut found: Vec<Found> = adapters
        .into_iter()
        .filter_map(|adapter| {
            let raw = adapter.get_info();
            if raw.device_type == DeviceType::Cpu && !opts.allow_software {
                return None;
            }
            let rank = rank(&raw);
            Some(Found { info: describe(&raw), adapter, rank })
        })
        .collect();
    found.sort_by_key(|f| f.rank);
    let mut seen: Vec<String> = Vec::new();
    found.retain(|f| {
        let fresh = !seen.contains(&f.info.name);
        seen.push(f.info.name.clone());
        fresh
    });
    found
}

fn rank(info: &AdapterInfo) -> u8 {
    let device = match info.device_type {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::VirtualGpu => 2,
        DeviceType::Other => 3,
        DeviceType::Cpu => 4,
    };
    let backend = u8::from(info.backend == Backend::Gl);
    device * 2 + backend
}

/// The advertised description of an adapter.
pub(crate) fn describe(info: &AdapterInfo) -> GpuAdapter {
    GpuAdapter {
        name: info.name.clone(),
        vendor: vendor_name(info.vendor),
        device_type: match info.device_type {
            DeviceType::DiscreteGpu => "discrete",
            DeviceType::IntegratedGpu => "integrated",
            DeviceType::VirtualGpu => "virtual",
            DeviceType::Cpu => "cpu",
            DeviceType::Other => "other",
        }
        .to_owned(),
        backend: match info.backend {
            Backend::Vulkan => "vulkan",
            Backend::Metal => "metal",
            Backend::Dx12 => "dx12",
            Backend::Gl => "gl",
            Backend::BrowserWebGpu => "webgpu",
            Backend::Noop => "noop",
        }
        .to_owned(),
        vram_mb: vram_mb(info),
    }
}

/// Well-known PCI vendor ids; others as hex.
pub(crate) fn vendor_name(id: u32) -> String {
    match id {
        0x1002 => "AMD".to_owned(),
        0x10de => "NVIDIA".to_owned(),
        0x8086 => "Intel".to_owned(),
        0x106b => "Apple".to_owned(),
        0x13b5 => "ARM".to_owned(),
        0x5143 => "Qualcomm".to_owned(),
        0x10005 => "Mesa".to_owned(),
        other => format!("0x{other:04x}"),
    }
}

/// Video memory in MiB, from the amdgpu driver's sysfs files: by the
/// adapter's PCI bus id when wgpu knows it, else by vendor and device id.
fn vram_mb(info: &AdapterInfo) -> Option<u64> {
    if info.device_type == DeviceType::Cpu {
        return None;
    }
    let by_bus = (!info.device_pci_bus_id.is_empty())
        .then(|| Path::new("/sys/bus/pci/devices").join(&info.device_pci_bus_id))
        .and_then(|dir| read_vram(&dir));
    by_bus.or_else(|| {
        let cards = std::fs::read_dir("/sys/class/drm").ok()?;
        cards
            .filter_map(Result::ok)
            .map(|card| card.path().join("device"))
            .filter(|dev| hex_file(&dev.join("vendor")) == Some(info.vendor))
            .filter(|dev| hex_file(&dev.join("device")) == Some(info.device))
            .find_map(|dev| read_vram(&dev))
    })
}

fn read_vram(device_dir: &Path) -> Option<u64> {
    let bytes: u64 = std::fs::read_to_string(device_dir.join("mem_info_vram_total"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(bytes / (1024 * 1024))
}

fn hex_file(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendors_are_named() {
        assert_eq!(vendor_name(0x1002), "AMD");
        assert_eq!(vendor_name(0x10de), "NVIDIA");
        assert_eq!(vendor_name(0x10005), "Mesa");
        assert_eq!(vendor_name(0xabcd), "0xabcd");
    }

    #[test]
    fn vram_is_read_from_sysfs_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mem_info_vram_total"), "8589934592\n").unwrap();
        assert_eq!(read_vram(dir.path()), Some(8192));
        std::fs::write(dir.path().join("vendor"), "0x1002\n").unwrap();
        assert_eq!(hex_file(&dir.path().join("vendor")), Some(0x1002));
        assert_eq!(read_vram(&dir.path().join("missing")), None);
    }
}
