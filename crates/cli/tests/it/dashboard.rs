//! The dashboard in a real headless Chromium, driven over WebDriver
//! (fantoccini and Debian's `chromium-driver`): the issue's scenarios, one
//! after another on one coordinator (restarted once) and one browser, each
//! saving a screenshot under `target/screenshots/` (the README's come from
//! there).
//!
//! Needs `chromium` and `chromedriver` on PATH (`apt-get install chromium
//! chromium-driver`); without them the test says SKIP, unless
//! `LEGACYGPU_REQUIRE_CHROMIUM=1` (set by CI), when it fails.
//!
//! Why fantoccini rather than playwright-core: the test stays a Rust test in
//! the one `cargo test --workspace`, with no npm install, and WebDriver is
//! what Debian's chromium-driver speaks.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use test_support::{Coordinator, WAIT, eventually, worker};

use crate::bin;

const ADMIN: &str = "dash-admin-key-1";
const READER: &str = "dash-reader-key-1";

/// The chromedriver process in a process group of its own, which is killed
/// when dropped: Chromium's processes go with it, even when a test panicked
/// before closing its session.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The browser, or `None` (SKIP) when Chromium is missing outside CI.
async fn browser() -> Option<(Driver, Client, tempfile::TempDir)> {
    let (Some(driver), Some(chromium)) = (on_path("chromedriver"), on_path("chromium")) else {
        if std::env::var("LEGACYGPU_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!(
                "chromium and chromedriver are required (LEGACYGPU_REQUIRE_CHROMIUM=1): apt-get install chromium chromium-driver"
            );
        }
        eprintln!(
            "SKIP: chromium/chromedriver not found; the dashboard's browser tests did NOT run"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(driver)
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display())],
        }
    });
    let Value::Object(caps) = caps else { unreachable!() };
    let url = format!("http://127.0.0.1:{port}");
    let client = eventually("chromedriver to accept a session", || {
        let (caps, url) = (caps.clone(), url.clone());
        async move {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector).capabilities(caps).connect(&url).await.ok()
        }
    })
    .await;
    Some((driver, client, profile))
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

/// The text of the element `css`, once it exists (found again when a live
/// update replaced it meanwhile).
async fn text(c: &Client, css: &str) -> String {
    until_text(c, css, css, |_| true).await
}

/// Waits until `css`'s text satisfies `ok` (the page updates itself).
async fn until_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    eventually(what, || async {
        let found = c.find(Locator::Css(css)).await.ok()?;
        let t = found.text().await.ok()?;
        ok(&t).then_some(t)
    })
    .await
}

/// Clicks `css`, found again when a live update replaced it before the click
/// (a click on a stale element does nothing, so another try is safe).
async fn click(c: &Client, css: &str) {
    eventually(css, || async { c.find(Locator::Css(css)).await.ok()?.click().await.ok() }).await
}

async fn login(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    let field = c.wait().at_most(WAIT).for_element(Locator::Id("key")).await.unwrap();
    field.send_keys(key).await.unwrap();
    c.find(Locator::Id("login")).await.unwrap().click().await.unwrap();
    // The click only starts the form's post: wait for its answer (the page
    // it leads to, or the login page again with its error), so that the
    // next page is asked for with the session's cookie.
    eventually("the login to be answered", || async {
        if c.find(Locator::Id("login-error")).await.is_ok() {
            return Some(());
        }
        (c.current_url().await.ok()?.path() != "/login").then_some(())
    })
    .await;
}

/// A task submitted over REST with the admin key; its cluster id.
async fn submit(base: &str, body: Value) -> String {
    tls::install_default_provider();
    let r = reqwest::Client::new()
        .post(format!("{base}/cluster/tasks"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["task_id"].as_str().unwrap().to_owned()
}

async fn rest(base: &str, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

/// A POST from the page's own script (what a forged button would send).
/// `fields` is the rest of the form, so that only the role can refuse it.
async fn post_from_page(c: &Client, path: &str, with_csrf: bool, fields: &str) -> u64 {
    let script = r#"
        const [path, withCsrf, fields, done] = arguments;
        const input = document.querySelector("input[name=csrf]");
        const csrf = withCsrf && input ? "csrf=" + encodeURIComponent(input.value) + "&" : "";
        const body = csrf + fields;
        fetch(path, {method: "POST", body, headers: {"content-type": "application/x-www-form-urlencoded"}})
            .then(r => done(r.status), () => done(0));
    "#;
    let args = vec![json!(path), json!(with_csrf), json!(fields)];
    let v = c.execute_async(script, args).await.unwrap();
    v.as_u64().unwrap()
}

fn start(data: &Path) -> Coordinator {
    let keys = format!("{ADMIN}:admin,{READER}:read-only");
    let dir = data.to_str().unwrap();
    Coordinator::start(bin(), &["--api-keys", &keys, "--data-dir", dir, "--stats-interval", "1"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let Some((_driver, c, _profile)) = browser().await else { return };
    let data = tempfile::tempdir().unwrap();
    let coord = start(data.path());
    let base = coord.http().to_owned();

    // A wrong key is refused.
    login(&c, &base, "not-a-key").await;
    assert!(text(&c, "#login-error").await.contains("not valid"));
    shot(&c, "login").await;

    // Log in; the overview.
    login(&c, &base, ADMIN).await;
    assert_eq!(text(&c, "#role").await, "admin");
    assert_eq!(text(&c, "#workers").await, "0 / 0");
    shot(&c, "overview-empty").await;

    // A worker started while the page is open appears without a reload.
    c.goto(&format!("{base}/workers")).await.unwrap();
    until_text(&c, "#live-status", "the live stream", |t| t == "live").await;
    let _w1 = worker(bin(), &coord.ws_url, "w1", &["--slots", "2"]);
    until_text(&c, "tr[data-worker=w1] td", "the w1 row", |t| t == "w1").await;

    // Submit from the form: the task completes and the counters move.
    c.goto(&format!("{base}/submit")).await.unwrap();
    shot(&c, "submit").await;
    c.find(Locator::Css("#task_type option[value=echo]")).await.unwrap().click().await.unwrap();
    let data_field = c.find(Locator::Id("data")).await.unwrap();
    data_field.clear().await.unwrap();
    data_field.send_keys(r#"{"hello": "dashboard"}"#).await.unwrap();
    c.find(Locator::Id("submit")).await.unwrap().click().await.unwrap();
    until_text(&c, "#task-status", "the submitted task to complete", |t| t == "completed").await;
    // Its state and result come from one read of the store: no reload.
    let result = text(&c, "#task-result").await;
    assert!(result.contains("dashboard"), "{result}");
    c.goto(&format!("{base}/")).await.unwrap();
    until_text(&c, "#completed", "the completed counter", |t| t != "0").await;

    // Cancel a running task from its page.
    let long = submit(&base, json!({"task_type": "sleep", "data": {"ms": 120_000}})).await;
    c.goto(&format!("{base}/tasks/{long}")).await.unwrap();
    until_text(&c, "#task-status", "the sleep to run", |t| t == "running").await;
    shot(&c, "task-running").await;
    click(&c, "#task-cancel").await;
    until_text(&c, "#task-status", "the cancel", |t| t == "cancelled").await;
    shot(&c, "task").await;

    // Pause w1 from its row: the next tasks go to w2.
    let _w2 = worker(bin(), &coord.ws_url, "w2", &["--slots", "2"]);
    c.goto(&format!("{base}/workers")).await.unwrap();
    until_text(&c, "tr[data-worker=w2] td", "the w2 row", |t| t == "w2").await;
    click(&c, "tr[data-worker=w1] button[data-action=pause]").await;
    until_text(&c, "tr[data-worker=w1] .status", "w1 paused", |t| t == "paused").await;
    shot(&c, "workers").await;
    for _ in 0..4 {
        let id = submit(&base, json!({"task_type": "echo", "data": {"n": 1}})).await;
        let done = rest(&base, &format!("/cluster/tasks/{id}/result?timeout=30")).await;
        assert_eq!(done["worker_id"], "w2", "{done}");
    }
    // A worker that joined with the join token has a credential: revoke it
    // from its row; it is closed at once and stops, told why.
    assert!(c.find(Locator::Css("tr[data-worker=w1] button[data-action=revoke]")).await.is_err());
    let cred = data.path().join("w3-credential.json");
    let join = ["--join", coord.worker_token.as_str(), "--credential-file", cred.to_str().unwrap()];
    let mut w3 = worker(bin(), &coord.wss_url(), "w3", &join);
    c.goto(&format!("{base}/workers")).await.unwrap();
    click(&c, "tr[data-worker=w3] button[data-action=revoke]").await;
    assert_eq!(w3.wait(), Some(1), "{}", w3.log());
    assert!(w3.log().contains("revoked"), "{}", w3.log());
    c.goto(&format!("{base}/workers")).await.unwrap();
    let gone = eventually("w3 to leave the table", || async {
        c.find(Locator::Css("tr[data-worker=w3]")).await.is_err().then_some(())
    });
    gone.await;
    c.goto(&format!("{base}/events")).await.unwrap();
    // Rendered on the server (readable without JavaScript): the newest
    // tasks' latest steps from the store.
    let stored = text(&c, "#events tbody tr.stored td:nth-child(2)").await;
    assert!(stored.starts_with("task_"), "{stored}");
    until_text(&c, "#live-status", "the live stream", |t| t == "live").await;
    let echoed = submit(&base, json!({"task_type": "echo", "data": {"n": 2}})).await;
    // The newest row may be a later cluster_stats (one a second): look for
    // the task's own row, by its kind's class.
    let row = "#events tbody tr.event.task_completed td:nth-child(3)";
    until_text(&c, row, "the task's completion row", |t| t == echoed).await;
    shot(&c, "events").await;
    c.goto(&format!("{base}/tasks")).await.unwrap();
    let listed = text(&c, "#task-total").await;
    shot(&c, "tasks").await;
    c.goto(&format!("{base}/")).await.unwrap();
    until_text(&c, "#workers", "two workers", |t| t.ends_with("/ 2")).await;
    shot(&c, "overview").await;

    // Restart the coordinator on the same store: the list is still there.
    drop(coord);
    let coord = start(data.path());
    let base = coord.http().to_owned();
    login(&c, &base, ADMIN).await;
    c.goto(&format!("{base}/tasks")).await.unwrap();
    assert_eq!(text(&c, "#task-total").await, listed, "after a restart");
    assert!(c.find(Locator::Css(&format!("tr[data-task={long}]"))).await.is_ok());

    // A read-only key: no buttons, and forged actions get 403.
    let logout = c.find(Locator::Css("form[action='/logout'] button")).await.unwrap();
    logout.click().await.unwrap();
    login(&c, &base, READER).await;
    assert_eq!(text(&c, "#role").await, "read-only");
    c.goto(&format!("{base}/tasks/{long}")).await.unwrap();
    text(&c, "#task-status").await;
    assert!(c.find(Locator::Css("button#task-retry, button#task-cancel")).await.is_err());
    c.goto(&format!("{base}/workers")).await.unwrap();
    assert!(c.find(Locator::Css("td.actions button")).await.is_err(), "no buttons");
    assert_eq!(post_from_page(&c, &format!("/ui/tasks/{long}/retry"), true, "").await, 403);
    assert_eq!(post_from_page(&c, "/ui/tasks/bulk", true, "action=retry&confirm=1").await, 403);
    assert_eq!(post_from_page(&c, "/ui/submit", false, "task_type=echo&data=%7B%7D").await, 403);
    let status = rest(&base, &format!("/cluster/tasks/{long}/status")).await;
    assert_eq!(status["status"], "cancelled", "the forged retry did nothing");
    c.close().await.unwrap();
}

/// A generation submitted from the form streams its tokens into its task
/// page while it runs (the tiny random-weight GGUF; SKIP without Python's
/// gguf unless `LEGACYGPU_REQUIRE_PYTHON_GGUF=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_streams_into_its_task_page() {
    // A long context, so that the generation is still going while it is watched.
    let Some(models) = crate::generate::models("dashboard_stream", 4096) else { return };
    let Some((_driver, c, _profile)) = browser().await else { return };
    let data = tempfile::tempdir().unwrap();
    let coord = start(data.path());
    let base = coord.http().to_owned();
    let _llm =
        crate::generate::llm_worker(&coord, "llm", models.path(), &["--llm-context", "4096"]);
    crate::generate::await_model(&coord, 1, Some(ADMIN)).await;
    login(&c, &base, ADMIN).await;
    c.goto(&format!("{base}/submit")).await.unwrap();
    let prompt = c.find(Locator::Css("#generate-form textarea[name=prompt]")).await.unwrap();
    prompt.send_keys("once upon a time").await.unwrap();
    let max = c.find(Locator::Css("#generate-form input[name=max_tokens]")).await.unwrap();
    max.clear().await.unwrap();
    max.send_keys("4000").await.unwrap();
    click(&c, "#generate-form button[type=submit]").await;

    // Tokens are on the page while the task still runs.
    let read = "const s = document.getElementById('task-stream'), st = document.getElementById('task-status');
                return [st ? st.textContent : '', s ? s.textContent : ''];";
    eventually("tokens on the page while it runs", || async {
        let v = c.execute(read, vec![]).await.ok()?;
        (v[0] == "running" && !v[1].as_str()?.is_empty()).then_some(())
    })
    .await;
    shot(&c, "task-generating").await;
    click(&c, "#task-cancel").await;
    until_text(&c, "#task-status", "the cancel", |t| t == "cancelled").await;
    assert!(c.find(Locator::Id("task-stream")).await.is_err(), "a finished task streams nothing");
    c.close().await.unwrap();
}

/// A live page fetches itself again at most once per stats interval however
/// many events arrive (no polling loop faster than the figures change). With
/// an hour's interval: the fetch made when the stream opened, and none for
/// the events that followed, which the page was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_page_refreshes_at_most_once_per_stats_interval() {
    let Some((_driver, c, _profile)) = browser().await else { return };
    let data = tempfile::tempdir().unwrap();
    let keys = format!("{ADMIN}:admin");
    let dir = data.path().to_str().unwrap();
    let args = ["--api-keys", &keys, "--data-dir", dir, "--stats-interval", "3600"];
    let coord = Coordinator::start(bin(), &args);
    let base = coord.http().to_owned();
    let _w1 = worker(bin(), &coord.ws_url, "w1", &[]);
    login(&c, &base, ADMIN).await;
    c.goto(&format!("{base}/workers")).await.unwrap();
    until_text(&c, "#live-status", "the live stream", |t| t == "live").await;
    until_text(&c, "tr[data-worker=w1] td", "the w1 row", |t| t == "w1").await;
    // The test's own subscription beside the page's, counting what is sent.
    let watch = "window.seen = 0; window.opened = false;
                 const s = new EventSource('/ui/events');
                 s.onopen = () => { window.opened = true; };
                 s.addEventListener('task_completed', () => { window.seen += 1; });";
    c.execute(watch, vec![]).await.unwrap();
    let opened = "return window.opened;";
    eventually("the test's subscription", || async {
        (c.execute(opened, vec![]).await.ok()? == json!(true)).then_some(())
    })
    .await;
    const TASKS: usize = 10;
    for n in 0..TASKS {
        let id = submit(&base, json!({"task_type": "echo", "data": {"n": n}})).await;
        let done = rest(&base, &format!("/cluster/tasks/{id}/result?timeout=30")).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    eventually("the completions to reach the page", || async {
        let seen = c.execute("return window.seen;", vec![]).await.ok()?.as_u64()?;
        (seen >= TASKS as u64).then_some(())
    })
    .await;
    let fetches = "return performance.getEntriesByType('resource')
                       .filter(e => e.initiatorType === 'fetch').length;";
    let fetched = c.execute(fetches, vec![]).await.unwrap();
    assert_eq!(fetched, json!(1), "one refresh (on open) for {TASKS} events within the interval");
    c.close().await.unwrap();
}
