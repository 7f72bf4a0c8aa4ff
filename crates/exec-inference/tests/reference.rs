//! tract against an independent reference: onnx's own ReferenceEvaluator,
//! on the classifier built by `scripts/make_tiny_classifier.py` (Python's
//! onnx tooling) and on the one `fixture` builds in Rust, over generated
//! images (PNG and JPEG, some resized).
//!
//! Needs `python3` with `onnx` and `numpy`. Without them the test says SKIP,
//! unless `LEGACYGPU_REQUIRE_PYTHON_ONNX=1` (set by CI), when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use exec_inference::fixture::{Picture, jpeg, picture, png, write_tiny_classifier};
use exec_inference::{Inference, decode, preprocess};
use serde_json::{Value, json};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

fn python_onnx_or_skip() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import onnx, numpy, onnx.reference"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("LEGACYGPU_REQUIRE_PYTHON_ONNX").as_deref() == Ok("1") {
        panic!(
            "python3 with onnx is required (LEGACYGPU_REQUIRE_PYTHON_ONNX=1): pip install onnx numpy"
        );
    }
    eprintln!("SKIP: python3 with onnx and numpy not found; the reference check did not run");
    false
}

fn images() -> Vec<Vec<u8>> {
    vec![
        png(&picture(32, 32, Picture::Solid([200, 30, 30]))),
        jpeg(&picture(32, 32, Picture::Gradient([20, 220, 60]))),
        png(&picture(48, 20, Picture::Checker { a: [0, 0, 255], b: [255, 255, 255], cell: 4 })),
        jpeg(&picture(100, 100, Picture::Checker { a: [250, 200, 10], b: [10, 10, 10], cell: 9 })),
        png(&picture(7, 13, Picture::Gradient([255, 255, 255]))),
    ]
}

#[test]
fn tract_agrees_with_the_onnx_reference_evaluator() {
    if !python_onnx_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("python3")
        .arg(scripts().join("make_tiny_classifier.py"))
        .args(["--out", &dir.path().to_string_lossy(), "--name", "from_python"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "make_tiny_classifier.py failed");
    write_tiny_classifier(dir.path(), "from_rust").unwrap();
    let inference = Inference::from_dir(dir.path()).unwrap();
    assert!(inference.failed().is_empty(), "{:?}", inference.failed());

    let mut per_model = Vec::new();
    for name in ["from_python", "from_rust"] {
        let model = inference.model(name).unwrap();
        let tensors: Vec<Vec<f32>> = images()
            .iter()
            .map(|bytes| {
                preprocess(&decode(bytes).unwrap(), &model.config, model.height, model.width)
            })
            .collect();
        let ours: Vec<Vec<f32>> = tensors.iter().map(|t| model.run(t).unwrap()).collect();
        let theirs =
            reference(&dir.path().join(name).join("model.onnx"), &tensors, model.input_shape());
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{name}, image {i}: tract {a:?} vs reference {b:?}"
                );
            }
            assert_eq!(argmax(a), argmax(b), "{name}, image {i}");
        }
        per_model.push(ours);
    }
    // Both generators built the same network.
    for (a, b) in per_model[0].iter().zip(&per_model[1]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
}

fn reference(model: &Path, tensors: &[Vec<f32>], shape: [usize; 4]) -> Vec<Vec<f32>> {
    let inputs: Vec<Value> = tensors.iter().map(|t| json!({"shape": shape, "data": t})).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&inputs).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(scripts().join("onnx_reference.py"))
        .arg(model)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "onnx_reference.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}
