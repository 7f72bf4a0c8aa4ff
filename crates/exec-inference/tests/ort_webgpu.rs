//! The `ort-webgpu` backend against tract, for real: ONNX Runtime and its
//! WebGPU plugin EP on Mesa's lavapipe, on the tiny classifier and on a
//! small ResNet-like network (`scripts/make_small_resnet.py`).
//!
//! Needs `LEGACYGPU_ONNXRUNTIME_LIB`, `LEGACYGPU_ORT_WEBGPU_EP` and
//! `LEGACYGPU_TEST_ORT_VK_DRIVER_FILES` (a Vulkan ICD manifest Dawn accepts,
//! e.g. Mesa 25's lavapipe), as `scripts/get_ort_webgpu.sh` prints them, and
//! python3 with onnx. Without them the tests say SKIP, unless
//! `LEGACYGPU_REQUIRE_ORT_WEBGPU=1` (set by CI), when they fail.
//!
//! Each GPU check runs in a child process (this test binary, re-run on one
//! test): the Vulkan loader and the EP read their environment
//! (`VK_DRIVER_FILES`, `ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER`) once, and
//! ONNX Runtime allows one environment per process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use exec::{Executor, RunContext};
use exec_inference::fixture::{Picture, jpeg, picture, png, write_tiny_classifier};
use exec_inference::{
    BackendKind, BackendOptions, Inference, ONNXRUNTIME_LIB_ENV, OrtError, WEBGPU_EP_ENV, decode,
    preprocess, softmax, top,
};
use serde_json::Value;

const DRIVER_ENV: &str = "LEGACYGPU_TEST_ORT_VK_DRIVER_FILES";
/// Set in a child: the test it is to run.
const CHILD_ENV: &str = "LEGACYGPU_TEST_ORT_CHILD";
/// How long a child may take (the small ResNet's shaders compile in
/// seconds on lavapipe; a loaded machine is slower).
const CHILD_DEADLINE: Duration = Duration::from_secs(600);

fn in_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(test)
}

/// Whether everything the tests need is here; SKIP, or fail under CI's
/// `LEGACYGPU_REQUIRE_ORT_WEBGPU=1`, when not.
fn ready_or_skip() -> bool {
    let missing: Vec<String> = [ONNXRUNTIME_LIB_ENV, WEBGPU_EP_ENV, DRIVER_ENV]
        .into_iter()
        .filter(|var| std::env::var_os(var).is_none_or(|p| !Path::new(&p).is_file()))
        .map(|var| format!("{var} (a file)"))
        .chain(
            (!Command::new("python3")
                .args(["-c", "import onnx, numpy"])
                .status()
                .is_ok_and(|s| s.success()))
            .then(|| "python3 with onnx and numpy".to_owned()),
        )
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why =
        format!("missing {}; run: eval \"$(scripts/get_ort_webgpu.sh DIR)\"", missing.join(", "));
    if std::env::var("LEGACYGPU_REQUIRE_ORT_WEBGPU").as_deref() == Ok("1") {
        panic!("the ort-webgpu tests are required (LEGACYGPU_REQUIRE_ORT_WEBGPU=1): {why}");
    }
    eprintln!("SKIP: the ort-webgpu backend was not tested: {why}");
    false
}

/// The Vulkan world a child sees.
enum Vulkan {
    /// The driver of `LEGACYGPU_TEST_ORT_VK_DRIVER_FILES`.
    Driver,
    /// A manifest that does not exist: the loader finds no driver at all.
    NoDriver,
}

/// Re-runs this binary on `test` alone, with the environment given, and
/// fails with its output when it fails.
fn run_child(test: &str, vulkan: Vulkan, allow_software: bool) {
    let scratch = tempfile::tempdir().unwrap();
    let xdg = scratch.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let log = scratch.path().join("log");
    let driver = match vulkan {
        Vulkan::Driver => PathBuf::from(std::env::var_os(DRIVER_ENV).unwrap()),
        Vulkan::NoDriver => scratch.path().join("no-such-icd.json"),
    };
    let file = std::fs::File::create(&log).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, test)
        .env("VK_DRIVER_FILES", &driver)
        .env_remove("VK_ICD_FILENAMES")
        .env("XDG_RUNTIME_DIR", &xdg)
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    if allow_software {
        command.env("ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER", "1");
    } else {
        command.env_remove("ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER");
    }
    let mut child = command.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > CHILD_DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{test}: no answer in {CHILD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("--- child {test}:\n{output}");
    assert!(status.success(), "{test} failed in its child ({status})");
    assert!(output.contains("1 passed"), "the child ran no test: {output}");
}

fn options(kind: BackendKind) -> BackendOptions {
    BackendOptions {
        kind,
        onnxruntime_lib: std::env::var_os(ONNXRUNTIME_LIB_ENV).map(PathBuf::from),
        webgpu_ep: std::env::var_os(WEBGPU_EP_ENV).map(PathBuf::from),
    }
}

/// The tiny classifier (Rust fixture) and the small ResNet (Python).
fn models_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_classifier(dir.path(), "tiny").unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make_small_resnet.py");
    let status = Command::new("python3")
        .arg(script)
        .args(["--out", &dir.path().to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "make_small_resnet.py failed");
    dir
}

fn images() -> Vec<Vec<u8>> {
    vec![
        png(&picture(32, 32, Picture::Solid([200, 30, 30]))),
        jpeg(&picture(64, 64, Picture::Gradient([20, 220, 60]))),
        png(&picture(48, 20, Picture::Checker { a: [0, 0, 255], b: [255, 255, 255], cell: 4 })),
        jpeg(&picture(100, 90, Picture::Checker { a: [250, 200, 10], b: [10, 10, 10], cell: 9 })),
        png(&picture(7, 13, Picture::Gradient([255, 255, 255]))),
    ]
}

#[test]
fn webgpu_gives_tracts_answers() {
    if in_child("webgpu_gives_tracts_answers") {
        return webgpu_gives_tracts_answers_here();
    }
    if ready_or_skip() {
        run_child("webgpu_gives_tracts_answers", Vulkan::Driver, true);
    }
}

fn webgpu_gives_tracts_answers_here() {
    let dir = models_dir();
    let gpu = Inference::from_dir_with(dir.path(), &options(BackendKind::OrtWebGpu)).unwrap();
    assert!(gpu.failed().is_empty(), "{:?}", gpu.failed());
    assert!(gpu.warnings().is_empty(), "{:?}", gpu.warnings());
    assert_eq!(gpu.model_names(), ["small_resnet", "tiny"]);
    let cpu = Inference::from_dir(dir.path()).unwrap();
    for name in ["tiny", "small_resnet"] {
        let model = gpu.model(name).unwrap();
        assert_eq!(model.backend(), "ort-webgpu");
        assert!(model.device().contains("WebGpuExecutionProvider"), "{}", model.device());
        for (i, bytes) in images().iter().enumerate() {
            let tensor =
                preprocess(&decode(bytes).unwrap(), &model.config, model.height, model.width);
            let ours = softmax(&model.run(&tensor).unwrap());
            let theirs = softmax(&model.run_tract(&tensor).unwrap());
            assert_eq!(ours.len(), theirs.len());
            for (x, y) in ours.iter().zip(&theirs) {
                assert!((x - y).abs() <= 1e-4, "{name}, image {i}: {ours:?} vs tract {theirs:?}");
            }
            let labels = |s: &[f32]| -> Vec<String> {
                top(s, &model.labels, 5).into_iter().map(|s| s.label).collect()
            };
            assert_eq!(labels(&ours), labels(&theirs), "{name}, image {i}");
            // Through the executor: the same answer, saying where it ran.
            let input = serde_json::json!({"model": name, "image": b64(bytes), "top_k": 5});
            let on_gpu = answer(&gpu, &input);
            let on_cpu = answer(&cpu, &input);
            assert_eq!(on_gpu["backend"], "ort-webgpu");
            assert_eq!(on_gpu["device"], model.device());
            assert_eq!(on_cpu["backend"], "tract");
            assert_eq!(on_cpu["device"], "cpu");
            let names = |v: &Value| -> Vec<Value> {
                v["top_k"].as_array().unwrap().iter().map(|s| s["label"].clone()).collect()
            };
            assert_eq!(names(&on_gpu), names(&on_cpu), "{name}, image {i}");
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn answer(inference: &Inference, input: &Value) -> Value {
    let out = inference.run(&input.to_string(), &RunContext::unbounded()).unwrap();
    serde_json::from_str(out.get()).unwrap()
}

#[test]
fn without_an_adapter_auto_falls_back_to_tract() {
    if in_child("without_an_adapter_auto_falls_back_to_tract") {
        return without_an_adapter_here("No supported adapters");
    }
    if ready_or_skip() {
        // No Vulkan driver at all: Dawn finds no adapter.
        run_child("without_an_adapter_auto_falls_back_to_tract", Vulkan::NoDriver, true);
    }
}

#[test]
fn a_software_adapter_needs_the_eps_permission() {
    if in_child("a_software_adapter_needs_the_eps_permission") {
        return without_an_adapter_here("ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1");
    }
    if ready_or_skip() {
        // lavapipe, but the EP not told it may use a CPU device.
        run_child("a_software_adapter_needs_the_eps_permission", Vulkan::Driver, false);
    }
}

/// `ort-webgpu` is an error naming the problem; `auto` runs on tract and says why.
fn without_an_adapter_here(says: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_classifier(dir.path(), "tiny").unwrap();
    let err = Inference::from_dir_with(dir.path(), &options(BackendKind::OrtWebGpu)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no usable WebGPU adapter"), "{text}");
    assert!(text.contains(says), "{text}");

    let auto = Inference::from_dir_with(dir.path(), &options(BackendKind::Auto)).unwrap();
    let warnings = auto.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("runs on tract") && warnings[0].contains(says), "{warnings:?}");
    let model = auto.model("tiny").unwrap();
    assert_eq!((model.backend(), model.device()), ("tract", "cpu"));
    let image = png(&picture(32, 32, Picture::Solid([10, 200, 40])));
    let out = answer(&auto, &serde_json::json!({"model": "tiny", "image": b64(&image)}));
    assert_eq!(
        (out["backend"].as_str(), out["top_k"][0]["label"].as_str()),
        (Some("tract"), Some("green"))
    );
}

#[test]
fn a_library_that_is_not_one_is_a_clear_error() {
    if in_child("a_library_that_is_not_one_is_a_clear_error") {
        return a_library_that_is_not_one_here();
    }
    if ready_or_skip() {
        run_child("a_library_that_is_not_one_is_a_clear_error", Vulkan::Driver, true);
    }
}

fn a_library_that_is_not_one_here() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = write_tiny_classifier(dir.path(), "tiny").unwrap();
    let not_a_library = model_dir.join("labels.txt");
    let mut bad_ort = options(BackendKind::OrtWebGpu);
    bad_ort.onnxruntime_lib = Some(not_a_library.clone());
    let err = Inference::from_dir_with(dir.path(), &bad_ort).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot load ONNX Runtime from") && text.contains("labels.txt"),
        "{text}"
    );
    // A failed load leaves nothing behind: the real library still loads,
    // and a bad EP library is its own clear error.
    let mut bad_ep = options(BackendKind::OrtWebGpu);
    bad_ep.webgpu_ep = Some(not_a_library);
    let err = Inference::from_dir_with(dir.path(), &bad_ep).unwrap_err();
    let exec_inference::InferenceError::OrtWebGpu(OrtError::Register { path, .. }) = &err else {
        panic!("{err}");
    };
    assert!(path.ends_with("labels.txt"), "{err}");
}
