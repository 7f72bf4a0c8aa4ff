//! GPU use from Linux sysfs, for heartbeats: what the kernel's DRM drivers
//! expose under `ROOT/class/drm/cardN/device/` — AMD's amdgpu has
//! `gpu_busy_percent` (0–100), `mem_info_vram_used` and
//! `mem_info_vram_total` (bytes). A card without any of them is left out;
//! elsewhere (other OSes, other drivers) the list is empty.
//!
//! The root is a parameter (`/sys` in production) so that tests read a tree
//! of their own.

use std::path::Path;

use proto::GpuUsage;

/// The GPU use of every card under `root` that exposes any, by card name.
pub(crate) fn usage(root: &Path) -> Vec<GpuUsage> {
    let Ok(entries) = std::fs::read_dir(root.join("class/drm")) else { return Vec::new() };
    let mut cards: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        // `card0`, not the connectors `card0-DP-1` nor `renderD128`.
        .filter(|n| {
            n.strip_prefix("card")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    cards.sort();
    cards
        .into_iter()
        .filter_map(|card| {
            let device = root.join("class/drm").join(&card).join("device");
            let read = |file: &str| -> Option<u64> {
                std::fs::read_to_string(device.join(file)).ok()?.trim().parse().ok()
            };
            let mib = |b: u64| b / (1024 * 1024);
            let usage = GpuUsage {
                busy_percent: read("gpu_busy_percent").map(|p| p.min(100) as f32),
                vram_used_mb: read("mem_info_vram_used").map(mib),
                vram_total_mb: read("mem_info_vram_total").map(mib),
                card,
            };
            let any = usage.busy_percent.is_some()
                || usage.vram_used_mb.is_some()
                || usage.vram_total_mb.is_some();
            any.then_some(usage)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn cards_that_expose_use_are_read_and_others_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "class/drm/card1/device/gpu_busy_percent", "37\n");
        write(root, "class/drm/card1/device/mem_info_vram_used", &format!("{}\n", 812u64 << 20));
        write(root, "class/drm/card1/device/mem_info_vram_total", &format!("{}\n", 8u64 << 30));
        // A card whose driver exposes only the busy figure.
        write(root, "class/drm/card0/device/gpu_busy_percent", "0");
        // A card exposing nothing, a connector and a render node: left out.
        write(root, "class/drm/card2/device/vendor", "0x8086");
        write(root, "class/drm/card1-DP-1/status", "connected");
        write(root, "class/drm/renderD128/device/gpu_busy_percent", "5");
        // A garbled value is absent, not zero.
        write(root, "class/drm/card3/device/gpu_busy_percent", "busy");
        write(root, "class/drm/card3/device/mem_info_vram_used", "1048576");

        let got = usage(root);
        let cards: Vec<_> = got.iter().map(|g| g.card.as_str()).collect();
        assert_eq!(cards, ["card0", "card1", "card3"]);
        assert_eq!(
            got[1],
            GpuUsage {
                card: "card1".into(),
                busy_percent: Some(37.0),
                vram_used_mb: Some(812),
                vram_total_mb: Some(8192),
            }
        );
        assert_eq!((got[0].busy_percent, got[0].vram_used_mb), (Some(0.0), None));
        assert_eq!((got[2].busy_percent, got[2].vram_used_mb), (None, Some(1)));
    }

    #[test]
    fn no_drm_tree_means_no_gpus() {
        let dir = tempfile::tempdir().unwrap();
        assert!(usage(dir.path()).is_empty());
    }
}
