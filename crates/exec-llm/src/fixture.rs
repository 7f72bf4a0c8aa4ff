//! The tiny random-weight model of the tests and benchmarks, written at run
//! time by `scripts/make_tiny_gguf.py` (PyPI `gguf` and `numpy`), so that no
//! binary model is committed and nothing is downloaded.
//!
//! Without `python3` and those packages the tests that need the model say
//! SKIP — unless `LEGACYGPU_REQUIRE_PYTHON_GGUF=1` (set by CI), when they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The model's shape and seed (the script's arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub seed: u32,
    pub layers: u32,
    pub width: u32,
    /// The trained context length.
    pub context: u32,
    /// F16 matrices instead of F32.
    pub f16: bool,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec { seed: 7, layers: 2, width: 64, context: 512, f16: false }
    }
}

/// The script that writes the model.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make_tiny_gguf.py")
}

/// Whether `python3` with `gguf` and `numpy` is there.
pub fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Writes the model described by `spec` to `path`.
pub fn write(path: &Path, spec: &Spec) -> Result<(), String> {
    let output = Command::new("python3")
        .arg(script())
        .arg("--out")
        .arg(path)
        .args(["--seed", &spec.seed.to_string()])
        .args(["--layers", &spec.layers.to_string()])
        .args(["--width", &spec.width.to_string()])
        .args(["--context", &spec.context.to_string()])
        .args(spec.f16.then_some("--f16"))
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            script().display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Writes the default model as `dir/NAME.gguf` and returns its path; `None`
/// (after printing SKIP for `test`) when Python's `gguf` is missing and not
/// required. Panics when it is required, or when the script fails.
pub fn tiny_or_skip(dir: &Path, name: &str, test: &str) -> Option<PathBuf> {
    if !python_available() {
        if std::env::var("LEGACYGPU_REQUIRE_PYTHON_GGUF").as_deref() == Ok("1") {
            panic!(
                "{test}: python3 with gguf and numpy is required (LEGACYGPU_REQUIRE_PYTHON_GGUF=1): pip install gguf numpy"
            );
        }
        eprintln!("SKIP {test}: python3 with gguf and numpy not found (pip install gguf numpy)");
        return None;
    }
    let path = dir.join(format!("{name}.gguf"));
    if let Err(e) = write(&path, &Spec::default()) {
        panic!("{test}: {e}");
    }
    Some(path)
}
