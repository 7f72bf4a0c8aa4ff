//! The OpenAI-compatible API with the official `openai` Python package as
//! the client (crates/cli/tests/openai/test_openai_api.py, pytest), against
//! this build's binary: a coordinator with API keys and a worker serving the
//! tiny GGUF. Needs `python3` with `openai` and `pytest`
//! (`pip install openai pytest`); without them the test says SKIP, unless
//! `LEGACYGPU_REQUIRE_OPENAI=1` (set by CI), when it fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::Coordinator;

use crate::bin;
use crate::generate::{await_model, llm_worker, models};

/// The whole pytest run may take this long (it takes seconds).
const LIMIT: Duration = Duration::from_secs(240);

fn openai_or_skip() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai, pytest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var("LEGACYGPU_REQUIRE_OPENAI").as_deref() == Ok("1") {
        panic!(
            "python3 with openai and pytest is required (LEGACYGPU_REQUIRE_OPENAI=1): pip install openai pytest"
        );
    }
    if !ok {
        eprintln!(
            "SKIP: python3 with openai and pytest not found; the OpenAI API tests did NOT run (pip install openai pytest)"
        );
    }
    ok
}

#[tokio::test]
async fn the_official_openai_client_works_against_the_cluster() {
    if !openai_or_skip() {
        return;
    }
    let Some(dir) = models("openai", 512) else { return };
    let keys = "openai-admin-01:admin,openai-client-01:client,openai-viewer-01:read-only";
    let c = Coordinator::start_env(bin(), &[], &[("API_KEYS", keys)]);
    let _w = llm_worker(&c, "llm", dir.path(), &["--slots", "2"]);
    await_model(&c, 1, Some("openai-viewer-01")).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai");
    let mut child = tokio::process::Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_openai_api.py"])
        .current_dir(&script)
        .env("LEGACYGPU_OPENAI_BASE", format!("{}/v1", c.http()))
        .env("LEGACYGPU_OPENAI_KEY", "openai-client-01")
        .env("LEGACYGPU_OPENAI_VIEWER_KEY", "openai-viewer-01")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3 -m pytest");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut r, &mut s).await;
        s
    };
    let run = async {
        let (out, err, status) =
            tokio::join!(read(Box::new(stdout)), read(Box::new(stderr)), child.wait());
        (out, err, status)
    };
    let (out, err, status) = tokio::time::timeout(LIMIT, run).await.expect("pytest in time");
    println!("{out}\n{err}");
    assert!(status.unwrap().success(), "pytest failed; its output is above");
}
