//! Finding GGUF models in a directory and loading one onto its devices.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use tracing::{info, warn};

use crate::backend::{describe, gpu_devices};
use crate::vocab::{Shape, Vocab};
use crate::{GpuLayers, LlmConfig};

/// The GGUF files of a models directory: `NAME.gguf`, or `NAME/model.gguf`
/// (a directory may hold an ONNX `model.onnx` beside it, or instead of it).
/// Sorted by name; a name found twice keeps the `NAME.gguf` file.
pub(crate) fn scan(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let stem = path.file_stem().and_then(|n| n.to_str()).map(str::to_owned);
        let (name, file) = if path.is_dir() {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let file = path.join("model.gguf");
            if !file.is_file() {
                continue;
            }
            (name.to_owned(), file)
        } else if path.extension().is_some_and(|e| e == "gguf") {
            let Some(stem) = stem else { continue };
            (stem, path)
        } else {
            continue;
        };
        match found.iter().position(|(n, _)| *n == name) {
            Some(i) if file.file_name().is_some_and(|f| f == "model.gguf") => {
                warn!(model = %name, kept = %found[i].1.display(), ignored = %file.display(), "two GGUF files for one model name");
            }
            Some(i) => {
                warn!(model = %name, kept = %file.display(), ignored = %found[i].1.display(), "two GGUF files for one model name");
                found[i].1 = file;
            }
            None => found.push((name, file)),
        }
    }
    found.sort();
    Ok(found)
}

/// A model loaded and ready for an engine.
pub(crate) struct Loaded {
    pub name: String,
    pub size_bytes: u64,
    pub model: LlamaModel,
    pub vocab: Vocab,
    pub shape: Shape,
    pub n_params: u64,
    pub quantization: Option<String>,
    /// The model's chat template, when llama.cpp's template engine knows it.
    pub chat: Option<LlamaChatTemplate>,
    /// Where it runs, e.g. `Vulkan0 (llvmpipe (LLVM 15.0.6, 256 bits))` or `cpu`.
    pub device: String,
    /// Layers on the GPU (0: it runs on the CPU).
    pub gpu_layers: u32,
}

/// Loads the model at `path`, or says why it cannot.
pub(crate) fn load(
    backend: &LlamaBackend,
    name: &str,
    path: &Path,
    config: &LlmConfig,
) -> Result<Arc<Loaded>, String> {
    let size_bytes = check_header(path)?;
    let vocab = Vocab::load(path).ok_or_else(|| {
        "llama.cpp cannot read it: the file is damaged or truncated, or its architecture is one this llama.cpp does not know (llama.cpp's log says which)".to_owned()
    })?;
    let shape = vocab.shape();
    let gpus = gpu_devices();
    let gpu_layers = if gpus.is_empty() {
        0
    } else {
        match config.gpu_layers {
            GpuLayers::Count(n) => n.min(shape.n_layer + 1),
            GpuLayers::Auto => fit_layers(&shape, size_bytes, config, free_vram(&gpus)),
        }
    };
    let mut params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
    if gpu_layers == 0 {
        // No devices at all, so that nothing of this model runs on a GPU
        // (llama.cpp would otherwise still offload large batches to one).
        params = params.with_devices(&[]).map_err(|e| format!("cannot select the CPU: {e}"))?;
    }
    let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
        format!("llama.cpp cannot load its weights ({e}): the file is damaged or truncated, or the model is too large for this machine")
    })?;
    // The loaded model's own hyperparameters are what llama.cpp will use.
    let shape = Shape {
        n_layer: model.n_layer(),
        n_ctx_train: model.n_ctx_train(),
        n_embd: u32::try_from(model.n_embd()).unwrap_or(shape.n_embd),
        ..shape
    };
    let device = device_text(&gpus, gpu_layers, shape.n_layer);
    let chat = chat_template(&model, name);
    let quantization = model.meta_val_str("general.file_type").ok().and_then(|t| file_type(&t));
    info!(model = name, file = %path.display(), device = %device, gpu_layers, layers = shape.n_layer, "model loaded");
    Ok(Arc::new(Loaded {
        name: name.to_owned(),
        size_bytes,
        n_params: model.n_params(),
        model,
        vocab,
        shape,
        quantization,
        chat,
        device,
        gpu_layers,
    }))
}

/// The GGUF magic and version, so that a file that is not GGUF at all gets
/// a precise error; returns the file's size.
fn check_header(path: &Path) -> Result<u64, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    let mut head = [0u8; 8];
    if file.read_exact(&mut head).is_err() {
        return Err(format!("not a GGUF file: only {size} bytes"));
    }
    if &head[..4] != b"GGUF" {
        return Err("not a GGUF file (it does not start with `GGUF`)".to_owned());
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported (2 and 3 are)"));
    }
    Ok(size)
}

/// Free memory of the GPUs, in bytes, as the driver reports it.
fn free_vram(gpus: &[llama_cpp_2::LlamaBackendDevice]) -> u64 {
    gpus.iter().map(|d| d.memory_free as u64).sum()
}

/// How many layers fit in `free` bytes of VRAM (`n_layer + 1` offloads the
/// output layer too). An estimate: the weights are spread evenly over
/// `n_layer + 1` layers, each layer also holds its KV cache for every slot,
/// and a margin is kept for llama.cpp's compute buffers.
pub(crate) fn fit_layers(shape: &Shape, file_bytes: u64, config: &LlmConfig, free: u64) -> u32 {
    let layers = u64::from(shape.n_layer) + 1;
    let head_dim = u64::from(shape.n_embd) / u64::from(shape.n_head.max(1));
    let kv_width = head_dim * u64::from(shape.n_head_kv);
    let context = u64::from(config.context.min(shape.n_ctx_train.max(1))) * u64::from(config.slots);
    // K and V, f16, for every position of every slot.
    let kv_per_layer = 2 * 2 * kv_width * context;
    let per_layer = file_bytes / layers + kv_per_layer;
    let margin = 256 * 1024 * 1024 + free / 20;
    let usable = free.saturating_sub(margin);
    let fit = usable.checked_div(per_layer.max(1)).unwrap_or(0);
    u32::try_from(fit.min(layers)).unwrap_or(u32::MAX)
}

fn device_text(gpus: &[llama_cpp_2::LlamaBackendDevice], gpu_layers: u32, n_layer: u32) -> String {
    if gpu_layers == 0 || gpus.is_empty() {
        return "cpu".to_owned();
    }
    let names: Vec<String> = gpus.iter().map(describe).collect();
    let names = names.join(" + ");
    if gpu_layers > n_layer {
        names
    } else {
        format!("{names}, {gpu_layers} of {} layers (the rest on cpu)", n_layer + 1)
    }
}

/// The model's chat template, if llama.cpp's built-in engine can apply it.
/// llama.cpp recognises templates by their text; for one it does not know,
/// the binding panics rather than returning an error, so it is tried once
/// here and a model without a usable template refuses `messages`.
fn chat_template(model: &LlamaModel, name: &str) -> Option<LlamaChatTemplate> {
    let template = match model.chat_template(None) {
        Ok(t) => t,
        Err(_) => {
            info!(model = name, "no chat template: `messages` input is refused, `prompt` works");
            return None;
        }
    };
    let probe = LlamaChatMessage::new("user".to_owned(), "hello".to_owned()).ok()?;
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.apply_chat_template(&template, &[probe], true)
    }));
    match applied {
        Ok(Ok(text)) if !text.is_empty() => Some(template),
        _ => {
            warn!(
                model = name,
                "llama.cpp does not know this model's chat template: `messages` input is refused, `prompt` works"
            );
            None
        }
    }
}

/// The name of a `general.file_type` (llama.cpp's `llama_ftype`).
fn file_type(value: &str) -> Option<String> {
    let name = match value.trim().parse::<u32>().ok()? {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    };
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape { n_layer: 28, n_embd: 3072, n_head: 24, n_head_kv: 8, n_ctx_train: 131_072 }
    }

    #[test]
    fn every_layer_fits_a_big_card_and_some_fit_a_small_one() {
        // Llama-3.2-3B Q4_K_M: 2.0 GB, 28 layers; 4 slots of 4096 tokens.
        let config = LlmConfig { context: 4096, slots: 4, ..LlmConfig::default() };
        let file = 2_019_377_696;
        let gib = 1024 * 1024 * 1024;
        assert_eq!(fit_layers(&shape(), file, &config, 8 * gib), 29, "an 8 GiB RX 580 takes all");
        let some = fit_layers(&shape(), file, &config, 2 * gib);
        assert!(some > 0 && some < 29, "{some}");
        assert_eq!(fit_layers(&shape(), file, &config, 100 * 1024 * 1024), 0);
        assert_eq!(fit_layers(&shape(), file, &config, 0), 0);
    }

    #[test]
    fn file_types_have_their_llama_cpp_names() {
        assert_eq!(file_type("15").as_deref(), Some("Q4_K_M"));
        assert_eq!(file_type("0").as_deref(), Some("F32"));
        assert_eq!(file_type("1024"), None);
        assert_eq!(file_type("x"), None);
    }

    #[test]
    fn models_are_found_as_files_or_directories() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.gguf"), b"x").unwrap();
        std::fs::create_dir(d.join("b")).unwrap();
        std::fs::write(d.join("b/model.gguf"), b"x").unwrap();
        // An ONNX model directory, a directory without a model, other files.
        std::fs::create_dir(d.join("resnet")).unwrap();
        std::fs::write(d.join("resnet/model.onnx"), b"x").unwrap();
        std::fs::create_dir(d.join("empty")).unwrap();
        std::fs::write(d.join("notes.txt"), b"x").unwrap();
        // Both forms for one name: the file wins.
        std::fs::create_dir(d.join("a")).unwrap();
        std::fs::write(d.join("a/model.gguf"), b"x").unwrap();
        let found = scan(d).unwrap();
        assert_eq!(
            found,
            vec![("a".into(), d.join("a.gguf")), ("b".into(), d.join("b/model.gguf"))]
        );
    }

    #[test]
    fn files_that_are_not_gguf_are_named_precisely() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        std::fs::write(&path, b"GGU").unwrap();
        assert!(check_header(&path).unwrap_err().contains("only 3 bytes"));
        std::fs::write(&path, b"PK\x03\x04zipfile").unwrap();
        assert!(check_header(&path).unwrap_err().contains("does not start with `GGUF`"));
        std::fs::write(&path, b"GGUF\x09\x00\x00\x00").unwrap();
        assert!(check_header(&path).unwrap_err().contains("version 9"));
        std::fs::write(&path, b"GGUF\x03\x00\x00\x00").unwrap();
        assert_eq!(check_header(&path), Ok(8));
    }
}
