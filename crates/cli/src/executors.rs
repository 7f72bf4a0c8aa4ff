//! The executors a worker offers: the built-ins and physics always, GPU
//! compute when an adapter works, inference and generation when a models
//! directory is given (ONNX models for the one, GGUF models for the other).

use std::collections::BTreeMap;

use anyhow::Context;
use exec::{Executors, TaskNeeds};
use exec_gpu::{Gpu, GpuOptions};
use exec_inference::{BackendOptions, Inference};
use exec_llm::{GpuLayers, Llm, LlmConfig};
use exec_physics::Physics;
use tracing::{info, warn};

use crate::args::Backends;

/// What the task types of the executors built into this binary need of a
/// peer, for a coordinator to know before any worker says. A new executor
/// with needs is registered here and in [`build`].
pub fn needs() -> BTreeMap<String, TaskNeeds> {
    BTreeMap::from([
        ("generate".to_owned(), exec_llm::needs()),
        ("gpu".to_owned(), exec_gpu::needs()),
        ("inference".to_owned(), exec_inference::needs()),
    ])
}

/// Sets up every executor this machine can run.
pub fn build(backends: &Backends) -> anyhow::Result<Executors> {
    let mut set = Executors::builtin();
    set.add(Physics::default());
    let gpu = Gpu::new(GpuOptions {
        disabled: backends.no_gpu,
        allow_software: !backends.no_software_gpu,
    });
    match gpu.adapter() {
        Some(adapter) => {
            info!(adapter = %adapter.name, kind = %adapter.device_type, "offering gpu tasks");
            set.add(gpu);
        }
        None if backends.no_gpu => info!("GPU disabled (--no-gpu): not offering gpu tasks"),
        None => info!("no usable GPU adapter: not offering gpu tasks"),
    }
    if let Some(dir) = &backends.models_dir {
        let backend = BackendOptions {
            kind: backends.inference_backend,
            onnxruntime_lib: backends.onnxruntime_lib.clone(),
            webgpu_ep: backends.ort_webgpu_ep.clone(),
        };
        let inference =
            Inference::from_dir_with(dir, &backend).context("cannot use --models-dir")?;
        for (model, reason) in inference.failed() {
            warn!(%model, "model not loaded: {reason}");
        }
        for warning in inference.warnings() {
            warn!("{warning}");
        }
        let names = inference.model_names();
        if names.is_empty() {
            info!(dir = %dir.display(), "no ONNX model loaded: not offering inference tasks");
        } else {
            let devices: std::collections::BTreeSet<String> = names
                .iter()
                .filter_map(|n| inference.model(n).ok())
                .map(|m| format!("{} on {}", m.backend(), m.device()))
                .collect();
            let devices = devices.into_iter().collect::<Vec<_>>().join("; ");
            info!(models = %names.join(", "), %devices, "offering inference");
            set.add(inference);
        }
        add_generate(&mut set, backends, dir)?;
    }
    Ok(set)
}

/// The `generate` executor's settings: `--no-gpu` puts no layer on the GPU,
/// whatever `--gpu-layers` says.
fn llm_config(backends: &Backends) -> LlmConfig {
    LlmConfig {
        gpu_layers: if backends.no_gpu { GpuLayers::Count(0) } else { backends.gpu_layers },
        slots: backends.llm_slots,
        context: backends.llm_context,
        ..LlmConfig::default()
    }
}

/// The `generate` executor, when the models directory holds a GGUF model
/// that loads.
fn add_generate(
    set: &mut Executors,
    backends: &Backends,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    if backends.no_gpu && backends.gpu_layers != GpuLayers::Count(0) {
        info!("GPU disabled (--no-gpu): GGUF models run on the CPU");
    }
    let llm = Llm::from_dir(dir, llm_config(backends))
        .context("cannot use --models-dir for GGUF models")?;
    for (model, reason) in llm.failed() {
        warn!(%model, "GGUF model not loaded: {reason}");
    }
    let names = llm.model_names();
    if names.is_empty() {
        info!(dir = %dir.display(), "no GGUF model loaded: not offering generate tasks");
    } else {
        let devices: Vec<&str> = names.iter().filter_map(|n| llm.device(n)).collect();
        info!(models = %names.join(", "), devices = %devices.join("; "), "offering generate");
        set.add(llm);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        backends: Backends,
    }

    fn gpu_layers(args: &[&str]) -> GpuLayers {
        let flags = Flags::try_parse_from(std::iter::once("worker").chain(args.iter().copied()));
        llm_config(&flags.unwrap().backends).gpu_layers
    }

    #[test]
    fn no_gpu_keeps_every_gguf_layer_on_the_cpu() {
        assert_eq!(gpu_layers(&[]), GpuLayers::Auto);
        assert_eq!(gpu_layers(&["--gpu-layers", "12"]), GpuLayers::Count(12));
        assert_eq!(gpu_layers(&["--no-gpu"]), GpuLayers::Count(0));
        assert_eq!(gpu_layers(&["--no-gpu", "--gpu-layers", "all"]), GpuLayers::Count(0));
    }
}
