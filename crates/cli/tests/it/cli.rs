//! The command line against a real coordinator: every command, `--json`
//! outputs parsed, exit codes, pid files, the daemon, generated docs, and
//! the live monitor driven in tmux.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{Coordinator, Proc};

use crate::bin;

/// Runs `legacygpu args…` with its state and config under `home`.
fn cli(home: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("XDG_STATE_HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("LEGACYGPU_API_URL")
        .env_remove("LEGACYGPU_API_KEY")
        .env_remove("LEGACYGPU_COORDINATOR")
        .env_remove("LEGACYGPU_TOKEN")
        .output()
        .expect("run legacygpu")
}

fn json_of(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    })
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn every_read_and_task_command_against_a_real_coordinator() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let c = Coordinator::start(bin(), &[]);
    let (api, ws) = (c.http().to_owned(), c.ws_url.clone());
    let remote = ["--api-url", api.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(remote.iter()).map(|s| (*s).to_owned()).collect()
    };
    let run = |args: Vec<String>| cli(h, &args.iter().map(String::as_str).collect::<Vec<_>>());

    // A worker started here: it has a pid file, `worker list` shows it.
    let (mut worker, _) = Proc::spawn(
        bin(),
        &[
            "worker",
            "start",
            "--coordinator",
            &ws,
            "--peer-id",
            "cli-w",
            "--no-gpu",
            "--slots",
            "2",
            "--owner",
            "lab-a",
        ],
        &[("XDG_STATE_HOME", h.to_str().unwrap())],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workers = json_of(&ok(run(with(&["cluster", "workers", "--json"]))));
        if workers["total"] == 1 {
            assert_eq!(workers["workers"][0]["worker_id"], "cli-w");
            // Its declared owner: replicas of a verified task avoid it.
            assert_eq!(workers["workers"][0]["capabilities"]["owner"], "lab-a");
            break;
        }
        assert!(Instant::now() < deadline, "the worker never joined");
        std::thread::sleep(Duration::from_millis(50));
    }
    let local = json_of(&ok(cli(h, &["worker", "list", "--json"])));
    assert_eq!(
        (local["workers"][0]["peer_id"].as_str(), local["workers"][0]["running"].as_bool()),
        (Some("cli-w"), Some(true))
    );
    let list =
        json_of(&ok(run(with(&["cluster", "workers", "list", "--status", "healthy", "--json"]))));
    assert_eq!(list["total"], 1);
    let table = stdout(&ok(run(with(&["cluster", "workers"]))));
    assert!(table.contains("WORKER") && table.contains("cli-w"), "{table}");

    // Submit, then read it back every way.
    let out = ok(cli(
        h,
        &["task", "submit", "--coordinator", &ws, "--type", "echo", "--data", r#"{"n": 5}"#],
    ));
    let id = stdout(&out);
    assert!(id.starts_with("t-"), "{id}");
    let result = json_of(&ok(run(with(&["task", "result", &id, "--timeout", "30", "--json"]))));
    assert_eq!(result["result"], json!({"n": 5}));
    assert_eq!(
        stdout(&ok(run(with(&["task", "result", &id])))).replace([' ', '\n'], ""),
        r#"{"n":5}"#
    );
    let status = json_of(&ok(run(with(&["task", "status", &id, "--json"]))));
    assert_eq!(
        (status["status"].as_str(), status["worker_id"].as_str()),
        (Some("completed"), Some("cli-w"))
    );
    let tasks = json_of(&ok(run(with(&[
        "task",
        "list",
        "--status",
        "completed",
        "--type",
        "echo",
        "--json",
    ]))));
    assert_eq!(tasks["total"], 1);
    let status = json_of(&ok(run(with(&["cluster", "status", "--json"]))));
    assert_eq!(
        (status["health"]["status"].as_str(), status["metrics"]["completed_tasks"].as_u64()),
        (Some("HEALTHY"), Some(1))
    );
    assert!(stdout(&ok(run(with(&["cluster", "status"])))).contains("HEALTHY"));

    // Exit codes: 4 not finished, 3 ended without a result, 1 unknown.
    let out = cli(h, &["task", "submit", "--coordinator", &ws, "--type", "nobody-runs-this"]);
    let waiting = stdout(&ok(out));
    assert_eq!(code(&run(with(&["task", "result", &waiting]))), 4);
    let cancelled = json_of(&ok(run(with(&["task", "cancel", &waiting, "--json"]))));
    assert_eq!(cancelled["status"], "cancelled");
    let out = run(with(&["task", "result", &waiting]));
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stderr));
    // The owner's controls: a cancelled task retried under its id (and
    // cancelled again); a completed one is refused; a worker paused and
    // resumed, as the API then shows it.
    let retried = json_of(&ok(run(with(&["task", "retry", &waiting, "--json"]))));
    assert_eq!(
        (retried["task_id"].as_str(), retried["status"].as_str()),
        (Some(&*waiting), Some("queued"))
    );
    let status = json_of(&ok(run(with(&["task", "status", &waiting, "--json"]))));
    assert_eq!(status["status"], "queued", "{status}");
    ok(run(with(&["task", "cancel", &waiting])));
    let out = run(with(&["task", "retry", &id]));
    assert_eq!(code(&out), 1, "a completed task is not retried");
    assert!(String::from_utf8_lossy(&out.stderr).contains("task_completed"), "{out:?}");
    let worker_status = || {
        let list = json_of(&ok(run(with(&["cluster", "workers", "--json"]))));
        list["workers"][0]["status"].as_str().unwrap_or_default().to_owned()
    };
    let paused = json_of(&ok(run(with(&["worker", "pause", "cli-w", "--json"]))));
    assert_eq!(
        (paused["worker_id"].as_str(), paused["status"].as_str()),
        (Some("cli-w"), Some("paused"))
    );
    assert_eq!(worker_status(), "paused");
    let resumed = stdout(&ok(run(with(&["worker", "resume", "cli-w"]))));
    assert_eq!(resumed, "worker cli-w: resumed");
    assert_eq!(worker_status(), "healthy");
    assert_eq!(code(&run(with(&["worker", "pause", "nobody"]))), 1, "an unknown worker");
    let out = run(with(&["task", "status", "t-99999"]));
    assert_eq!(code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.starts_with("error: ") && err.contains("t-99999"), "{err}");
    assert_eq!(code(&cli(h, &["task", "status", "t-1", "--api-url", "http://127.0.0.1:1"])), 1);
    assert_eq!(code(&cli(h, &["task", "bogus"])), 2);

    // A batch: progress, summary, exit 3 when some failed.
    let batch = h.join("tasks.jsonl");
    std::fs::write(
        &batch,
        "{\"task_type\": \"echo\", \"data\": 1}\n{\"task_type\": \"echo\", \"data\": 2, \"priority\": \"HIGH\"}\n\
         {\"task_type\": \"physics\", \"data\": {\"bodies\": \"no\"}}\n",
    )
    .unwrap();
    let out = cli(
        h,
        &["task", "submit", "--coordinator", &ws, "--batch", batch.to_str().unwrap(), "--json"],
    );
    assert_eq!(code(&out), 3);
    let summary = json_of(&out);
    assert_eq!(
        (summary["tasks"].as_u64(), summary["completed"].as_u64(), summary["failed"].as_u64()),
        (Some(3), Some(2), Some(1))
    );
    // A JSON array works as well as JSON lines.
    std::fs::write(&batch, r#"[{"task_type": "echo", "data": 1}, {"task_type": "echo"}]"#).unwrap();
    let out = cli(
        h,
        &["task", "submit", "--coordinator", &ws, "--batch", batch.to_str().unwrap(), "--json"],
    );
    let summary = json_of(&out);
    assert_eq!((code(&out), summary["completed"].as_u64()), (0, Some(2)), "{summary}");
    std::fs::write(&batch, "{\"task_type\": 5}\n").unwrap();
    let out = cli(h, &["task", "submit", "--coordinator", &ws, "--batch", batch.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tasks.jsonl:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The config file supplies the API URL when no flag or env does.
    std::fs::create_dir_all(h.join("legacygpu")).unwrap();
    std::fs::write(h.join("legacygpu/cli.json"), json!({"api_url": api}).to_string()).unwrap();
    assert_eq!(
        json_of(&ok(cli(h, &["cluster", "status", "--json"])))["health"]["status"],
        "HEALTHY"
    );

    // `worker stop`, as the seed writes it, ends the one worker running
    // here through its pid file.
    ok(cli(h, &["worker", "stop"]));
    assert_eq!(worker.wait(), Some(0));
    let local = json_of(&ok(cli(h, &["worker", "list", "--json"])));
    assert_eq!(local["workers"], json!([]));
    assert_eq!(code(&cli(h, &["worker", "stop", "--peer-id", "cli-w"])), 1);
    assert_eq!(code(&cli(h, &["worker", "stop", "--all"])), 1, "nothing left to stop");
    assert_eq!(code(&cli(h, &["worker", "stop"])), 1, "nothing left to stop");

    // `worker drain`: the worker finishes what it runs and leaves for good.
    let args = ["worker", "start", "--coordinator", &ws, "--peer-id", "cli-d", "--no-gpu"];
    let (mut drained, _) = Proc::spawn(bin(), &args, &[("XDG_STATE_HOME", h.to_str().unwrap())]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while json_of(&ok(run(with(&["cluster", "workers", "--json"]))))["total"] != 1 {
        assert!(Instant::now() < deadline, "the worker never joined");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = json_of(&ok(run(with(&["worker", "drain", "cli-d", "--json"]))));
    assert_eq!(answer["worker_id"], "cli-d", "{answer}");
    assert_eq!(drained.wait(), Some(0), "{}", drained.log());
    assert!(drained.log().contains("drained by an operator"), "{}", drained.log());
    assert_eq!(code(&run(with(&["worker", "drain", "nobody"]))), 1, "an unknown worker");
}

#[test]
fn a_daemon_starts_reports_and_stops() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let data = h.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let http = format!("127.0.0.1:{port}");
    let out = ok(cli(
        h,
        &[
            "cluster",
            "start",
            "--daemon",
            "--bind",
            "127.0.0.1:0",
            "--http",
            &http,
            "--data-dir",
            data.to_str().unwrap(),
        ],
    ));
    let text = stdout(&out);
    assert!(
        text.contains("running in the background") && text.contains("websocket: ws://127.0.0.1:"),
        "{text}"
    );
    let pid: u32 = std::fs::read_to_string(h.join("legacygpu/coordinator.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let api = format!("http://{http}");
    assert_eq!(
        json_of(&ok(cli(h, &["cluster", "status", "--api-url", &api, "--json"])))["health"]["status"],
        "CRITICAL"
    );
    let stopping = json_of(&ok(cli(h, &["cluster", "stop", "--api-url", &api, "--json"])));
    assert_eq!(stopping["status"], "shutting_down", "{stopping}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!h.join("legacygpu/coordinator.pid").exists(), "the pid file is removed on exit");
    assert!(
        std::fs::read_to_string(h.join("legacygpu/coordinator.log"))
            .unwrap()
            .contains("coordinator stopped")
    );
}

#[test]
fn version_completions_and_generated_docs_are_current() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    assert!(stdout(&ok(cli(h, &["--version"]))).starts_with("legacygpu "));
    let bash = stdout(&ok(cli(h, &["completions", "bash"])));
    assert!(bash.contains("legacygpu") && bash.contains("complete"), "a bash completion script");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cli_md = String::from_utf8(ok(cli(h, &["docs", "cli"])).stdout).unwrap();
    let committed = std::fs::read_to_string(root.join("docs/CLI.md")).unwrap();
    assert!(cli_md == committed, "docs/CLI.md is stale: run `legacygpu docs cli > docs/CLI.md`");
    let openapi = String::from_utf8(ok(cli(h, &["docs", "openapi"])).stdout).unwrap();
    let committed = std::fs::read_to_string(root.join("docs/openapi.json")).unwrap();
    assert!(
        openapi == committed,
        "docs/openapi.json is stale: run `legacygpu docs openapi > docs/openapi.json`"
    );
    let api_md = String::from_utf8(ok(cli(h, &["docs", "api"])).stdout).unwrap();
    let committed = std::fs::read_to_string(root.join("docs/API.md")).unwrap();
    assert!(api_md == committed, "docs/API.md is stale: run `legacygpu docs api > docs/API.md`");
    assert!(api_md.contains("## `DELETE /cluster/tasks/{id}`") && api_md.contains("Role: `admin`"));
}

/// The monitor in a real terminal (tmux): workers and events appear, `q` quits.
#[test]
fn the_monitor_shows_workers_and_events_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(std::env::var("LEGACYGPU_REQUIRE_TMUX").is_err(), "tmux is required");
        eprintln!("tmux not installed: skipping the monitor test");
        return;
    }
    let c = Coordinator::start(bin(), &[]);
    let _worker = test_support::worker(bin(), &c.ws_url, "mon-w", &["--no-gpu"]);
    let session = format!("lgmon{}", std::process::id());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux");
    let monitor = format!("{} monitor --api-url {} --interval 0.2", bin().display(), c.http());
    let out = tmux(&["new-session", "-d", "-s", &session, "-x", "150", "-y", "45", &monitor]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let home = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut screen = String::new();
    while Instant::now() < deadline {
        ok(cli(home.path(), &["task", "submit", "--coordinator", &c.ws_url, "--type", "echo"]));
        std::thread::sleep(Duration::from_millis(200));
        screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout)
            .into_owned();
        if screen.contains("mon-w")
            && screen.contains("task_completed")
            && screen.contains("HEALTHY")
        {
            break;
        }
    }
    assert!(screen.contains("mon-w") && screen.contains("task_completed"), "screen:\n{screen}");
    tmux(&["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux(&["has-session", "-t", &session]).status.success() {
        assert!(Instant::now() < deadline, "q did not quit the monitor");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seed 2's deployment guide types `cluster start --bind-address tcp://…`
/// and `worker start --coordinator tcp://…` (its design spoke ZeroMQ): the
/// same commands start a cluster here and run a task through it.
#[test]
fn seed_twos_commands_and_addresses_run_a_task() {
    let c = Coordinator::start(bin(), &["--bind-address", "tcp://127.0.0.1:0"]);
    let seed_url = c.ws_url.replacen("ws://", "tcp://", 1);
    assert!(seed_url.starts_with("tcp://127.0.0.1:"), "{}", c.ws_url);
    let home = tempfile::tempdir().unwrap();
    let (_worker, _) = Proc::spawn(
        bin(),
        &["worker", "start", "--coordinator", &seed_url, "--peer-id", "seed-w", "--no-gpu"],
        &[("XDG_STATE_HOME", home.path().to_str().unwrap())],
    );
    let submit = ["task", "submit", "--coordinator", &seed_url, "--type", "echo"];
    let out =
        ok(cli(home.path(), &[&submit[..], &["--data", r#"{"seed": 2}"#, "--wait"]].concat()));
    assert_eq!(json_of(&out), json!({"seed": 2}));
}

/// Section 2 of docs/CLUSTER_DEPLOYMENT_GUIDE.md, run as written (ports and
/// directories moved by environment variables, which every command honours).
#[test]
fn the_deployment_guide_walkthrough_works() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(root.join("docs/CLUSTER_DEPLOYMENT_GUIDE.md")).unwrap();
    let section = guide.split("## 2. One machine").nth(1).unwrap();
    let script = section.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    assert!(
        script.contains("cluster start --daemon") && script.contains("cluster stop"),
        "{script}"
    );
    let home = tempfile::tempdir().unwrap();
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ws, http) = (port(), port());
    let path = format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args(["120", "sh", "-e", "-c", script])
        .env("PATH", path)
        .env("HOME", home.path())
        .env("XDG_STATE_HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .env("LEGACYGPU_BIND", format!("127.0.0.1:{ws}"))
        .env("LEGACYGPU_HTTP", format!("127.0.0.1:{http}"))
        .env("LEGACYGPU_COORDINATOR", format!("ws://127.0.0.1:{ws}"))
        .env("LEGACYGPU_API_URL", format!("http://127.0.0.1:{http}"))
        .env_remove("LEGACYGPU_TOKEN")
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the walkthrough failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"hello\": \"world\""), "the task's result: {stdout}");
    assert!(stdout.contains("HEALTHY") && stdout.contains("local-1"), "{stdout}");
    assert!(stdout.contains("is shutting down"), "{stdout}");
}

/// The README's first command, `legacygpu demo`: a local cluster running real
/// physics, inference and (with an adapter) GPU tasks.
#[test]
fn the_demo_runs_real_tasks() {
    let home = tempfile::tempdir().unwrap();
    let out = ok(cli(home.path(), &["demo", "--tasks", "1"]));
    let text = stdout(&out);
    assert!(text.contains("0 failed"), "{text}");
    for kind in ["physics:", "inference:"] {
        assert!(
            text.lines().any(|l| l.starts_with("ok") && l.contains(kind)),
            "no {kind} task in\n{text}"
        );
    }
    if std::env::var("LEGACYGPU_REQUIRE_GPU").is_ok() {
        assert!(
            text.lines().any(|l| l.starts_with("ok") && l.contains("gpu:")),
            "no gpu task in\n{text}"
        );
    }
    // The streamed generation on the tiny model, or a clear word why not.
    if exec_llm::fixture::python_available() {
        assert!(
            text.lines().any(|l| l.starts_with("ok    generate: 48 tokens")),
            "no generation in\n{text}"
        );
    } else {
        assert!(text.contains("generate     skipped") && text.contains("--models-dir"), "{text}");
    }
}

/// Misuse exits 2 whether clap or the command finds it, with one line that
/// names the flags; nothing is sent (no coordinator listens here).
#[test]
fn misuse_exits_two_and_says_why() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let nowhere = "ws://127.0.0.1:9";
    let cases: [(&[&str], &str); 6] = [
        (&["task", "submit", "--coordinator", nowhere, "--model", "m"], "--input"),
        (
            &[
                "task",
                "submit",
                "--coordinator",
                nowhere,
                "--model",
                "m",
                "--prompt",
                "hi",
                "--temperature",
                "3",
            ],
            "--temperature",
        ),
        (
            &["task", "submit", "--coordinator", nowhere, "--type", "echo", "--temperature", "0.5"],
            "--temperature",
        ),
        (
            &[
                "task",
                "submit",
                "--coordinator",
                nowhere,
                "--batch",
                "tasks.jsonl",
                "--priority",
                "HIGH",
            ],
            "--priority",
        ),
        (&["monitor", "--json"], "cluster status --json"),
        (&["cluster", "start", "--no-http", "--advertise", "wss://a:1"], "--advertise"),
    ];
    for (args, names) in cases {
        let out = cli(h, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 2, "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
}
