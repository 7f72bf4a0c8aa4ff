#![allow(clippy::unwrap_used, clippy::print_stdout)]

//! Per-image model time, tract vs ONNX Runtime's WebGPU EP, on the tiny
//! classifier, the small ResNet (`scripts/make_small_resnet.py`) and the
//! models of `LEGACYGPU_BENCH_MODELS_DIR` if set. The GPU side needs
//! `LEGACYGPU_ONNXRUNTIME_LIB`, `LEGACYGPU_ORT_WEBGPU_EP` and, for lavapipe,
//! `VK_DRIVER_FILES` and `ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1` (see
//! BENCHMARKS.md). Each model runs at most 20 times or 60 s per backend.
//! A plain timing loop (not criterion): a ResNet-50 run on lavapipe takes
//! seconds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exec_inference::fixture::{Picture, jpeg, picture, write_tiny_classifier};
use exec_inference::{BackendKind, BackendOptions, Inference, decode, preprocess};

const RUNS: usize = 20;
const BUDGET: Duration = Duration::from_secs(60);

fn main() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_classifier(dir.path(), "tiny").unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make_small_resnet.py");
    let made = std::process::Command::new("python3")
        .arg(script)
        .args(["--out", &dir.path().to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        println!("(no python3 with onnx: the small ResNet is left out)");
    }
    let mut dirs = vec![dir.path().to_owned()];
    dirs.extend(std::env::var_os("LEGACYGPU_BENCH_MODELS_DIR").map(PathBuf::from));
    let gpu = BackendOptions {
        kind: BackendKind::OrtWebGpu,
        onnxruntime_lib: std::env::var_os(exec_inference::ONNXRUNTIME_LIB_ENV).map(PathBuf::from),
        webgpu_ep: std::env::var_os(exec_inference::WEBGPU_EP_ENV).map(PathBuf::from),
    };
    let image = jpeg(&picture(256, 256, Picture::Gradient([200, 80, 20])));
    for dir in dirs {
        let cpu = Inference::from_dir(&dir).unwrap();
        let t = Instant::now();
        let on_gpu = Inference::from_dir_with(&dir, &gpu);
        let gpu_load = t.elapsed();
        if let Err(e) = &on_gpu {
            println!("(ort-webgpu not measured: {e})");
        } else {
            println!("ort-webgpu: load and warm every model of {}: {gpu_load:.1?}", dir.display());
        }
        for name in cpu.model_names() {
            for inference in std::iter::once(&cpu).chain(on_gpu.as_ref().ok()) {
                let model = inference.model(&name).unwrap();
                let tensor =
                    preprocess(&decode(&image).unwrap(), &model.config, model.height, model.width);
                let mut times = Vec::new();
                let start = Instant::now();
                while times.len() < RUNS && start.elapsed() < BUDGET {
                    let t = Instant::now();
                    model.run(&tensor).unwrap();
                    times.push(t.elapsed());
                }
                times.sort();
                println!(
                    "{name:>14} {:>10} on {:<40} median {:>10.3} ms over {} runs",
                    model.backend(),
                    model.device(),
                    times[times.len() / 2].as_secs_f64() * 1e3,
                    times.len()
                );
            }
        }
    }
}
