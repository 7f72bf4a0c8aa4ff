//! The Python client's test suite (`clients/python/tests`, pytest) against
//! this build's `legacygpu` binary, so that the README's test command runs it.
//!
//! Needs `python3` with `websockets` and `pytest` (`pip install
//! websockets pytest`; CI adds pytest-timeout, mypy, setuptools and wheel). Without them the test says SKIP, unless
//! `LEGACYGPU_REQUIRE_PYTHON_CLIENT=1` (set by CI), when it fails. The
//! package is imported from its source (`PYTHONPATH`), not from an installed
//! copy that may be stale; one of the Python tests installs it with pip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bin;

/// The whole pytest run may take this long (it takes well under a minute).
const LIMIT: Duration = Duration::from_secs(300);

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python")
}

fn python_deps_or_skip() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import websockets, pytest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("LEGACYGPU_REQUIRE_PYTHON_CLIENT").as_deref() == Ok("1") {
        panic!(
            "python3 with websockets and pytest is required (LEGACYGPU_REQUIRE_PYTHON_CLIENT=1): \
             pip install websockets pytest"
        );
    }
    eprintln!(
        "SKIP: python3 with websockets and pytest not found; the Python client's tests did NOT run \
         (pip install websockets pytest)"
    );
    false
}

#[test]
fn python_client_test_suite_passes() {
    if !python_deps_or_skip() {
        return;
    }
    let models = tempfile::tempdir().unwrap();
    exec_inference::fixture::write_tiny_classifier(models.path(), "tiny").unwrap();
    // The tiny GGUF for the generation tests (chat.py); without Python's
    // gguf they write it themselves or say SKIP (fail in CI).
    let llm = tempfile::tempdir().unwrap();
    let llm_ready = exec_llm::fixture::python_available()
        && exec_llm::fixture::write(&llm.path().join("tiny.gguf"), &Default::default()).is_ok();
    let dir = python_dir();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&dir)
        .env("PYTHONPATH", dir.join("src"))
        .env("LEGACYGPU_BIN", bin())
        .env("LEGACYGPU_TEST_MODELS_DIR", models.path())
        .envs(llm_ready.then(|| ("LEGACYGPU_TEST_LLM_DIR", llm.path())))
        .env_remove("LEGACYGPU_TOKEN")
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("run python3 -m pytest");
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut output = String::new();
    log.reopen().unwrap().read_to_string(&mut output).unwrap();
    // Shown by the test harness on failure (and with --nocapture).
    println!("{output}");
    match status {
        None => panic!("pytest ran past {LIMIT:?}"),
        Some(s) => assert!(s.success(), "pytest failed ({s}); its output is above"),
    }
}
