//! Never lose accepted work: a client keeps submitting while the coordinator
//! is `kill -9`ed and restarted several times and workers are killed too.
//! A history checker in the style of Jepsen's queue checker then counts, for
//! every acknowledged task: lost (no outcome), duplicated (more than one),
//! unexpected (an outcome nobody asked for, or the wrong result).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Client, ClientOptions, TaskOutcome};
use proto::TaskRequest;
use serde_json::{Value, json};
use test_support::{Coordinator, Proc, worker};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::bin;

const TASKS: usize = 400;
const IN_FLIGHT: usize = 32;
/// Acknowledged counts at which the coordinator is killed and restarted.
const COORDINATOR_KILLS: [usize; 4] = [60, 140, 220, 300];
/// Acknowledged counts at which a worker is killed and restarted.
const WORKER_KILLS: [usize; 2] = [100, 260];

#[derive(Default)]
struct History {
    submitted: BTreeSet<String>,
    acked: BTreeSet<String>,
    outcomes: BTreeMap<String, Vec<TaskOutcome>>,
    expected: BTreeMap<String, Value>,
}

/// What the checker found.
#[derive(Debug, Default, PartialEq)]
struct Verdict {
    acked: usize,
    lost: usize,
    duplicated: usize,
    unexpected: usize,
    ran_more_than_once: usize,
    /// What the unexpected outcomes were, to diagnose a failure.
    details: Vec<String>,
}

fn check(h: &History) -> Verdict {
    let mut v = Verdict { acked: h.acked.len(), ..Verdict::default() };
    for id in &h.acked {
        match h.outcomes.get(id).map(Vec::as_slice) {
            None | Some([]) => v.lost += 1,
            Some([one]) => match one {
                TaskOutcome::Completed(done) => {
                    let result: Value =
                        serde_json::from_str(done.result.get()).unwrap_or(Value::Null);
                    if Some(&result) != h.expected.get(id) {
                        v.unexpected += 1;
                        v.details.push(format!("{id}: result {result}"));
                    }
                    if done.attempt.unwrap_or(1) > 1 {
                        v.ran_more_than_once += 1;
                    }
                }
                TaskOutcome::Failed(f) => {
                    v.unexpected += 1;
                    v.details.push(format!("{id}: {} {}: {}", f.status.as_str(), f.code, f.reason));
                }
            },
            Some(_) => v.duplicated += 1,
        }
    }
    v.unexpected += h.outcomes.keys().filter(|id| !h.submitted.contains(*id)).count();
    v
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_tasks_survive_kill_9_of_coordinator_and_workers() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_string_lossy().into_owned();
    let bind = format!("127.0.0.1:{}", free_port());
    // A killed process closes its sockets, so kills are seen at once: the
    // heartbeat timeout stays long, so that a worker starved of CPU on a
    // loaded machine is never declared dead on top of the kills. A task can
    // be on each killed worker in turn: one attempt per worker kill, and one
    // to finish.
    let attempts = (WORKER_KILLS.len() + 1).to_string();
    let mut args = vec![
        "--bind",
        bind.as_str(),
        "--heartbeat-timeout",
        "60",
        "--max-attempts",
        attempts.as_str(),
    ];
    // LEGACYGPU_CRASH_NO_STORE=1 runs the same test against a store-less
    // coordinator, to see the checker catch the losses.
    match std::env::var("LEGACYGPU_CRASH_NO_STORE").as_deref() {
        Ok("1") => args.push("--no-store"),
        _ => args.extend(["--data-dir", data_dir.as_str()]),
    }
    let mut coordinator = Coordinator::start(bin(), &args);
    let url = coordinator.ws_url.clone();
    let start_worker = |id: &str| -> Proc { worker(bin(), &url, id, &["--slots", "4"]) };
    let mut workers = vec![start_worker("w1"), start_worker("w2")];

    // The client does not resubmit what was acknowledged: those tasks rely
    // on the coordinator's durability alone, which is what is under test.
    let options = ClientOptions {
        gamer_id: Some("checker".into()),
        resubmit_acknowledged: false,
        ..ClientOptions::default()
    };
    let client = Client::connect(&url, options).await.unwrap();
    let history = Arc::new(Mutex::new(History::default()));
    let (acked_tx, mut acked_rx) = watch::channel(0usize);
    let acked_tx = Arc::new(acked_tx);

    let submitter = {
        let (client, history, acked_tx) =
            (client.clone(), Arc::clone(&history), Arc::clone(&acked_tx));
        tokio::spawn(async move {
            let mut running = JoinSet::new();
            for i in 0..TASKS {
                while running.len() >= IN_FLIGHT {
                    running.join_next().await;
                }
                let (client, history, acked_tx) =
                    (client.clone(), Arc::clone(&history), Arc::clone(&acked_tx));
                running.spawn(async move {
                    let id = format!("job-{i}");
                    let ms = 5 + (i % 7) as u64 * 5;
                    let mut req =
                        TaskRequest::new("sleep", proto::to_json(&json!({ "ms": ms })).unwrap());
                    req.task_id = Some(id.clone());
                    req.idempotency_key = Some(id.clone());
                    {
                        let mut h = history.lock().unwrap();
                        h.submitted.insert(id.clone());
                        h.expected.insert(id.clone(), json!({ "slept_ms": ms }));
                    }
                    let submitted = client.submit(req).await.unwrap();
                    history.lock().unwrap().acked.insert(id.clone());
                    acked_tx.send_modify(|n| *n += 1);
                    let outcome = submitted.outcome().await.unwrap();
                    history.lock().unwrap().outcomes.entry(id).or_default().push(outcome);
                });
            }
            while running.join_next().await.is_some() {}
        })
    };

    // Chaos, driven by progress (each step waits for acknowledgements).
    let mut kills: Vec<(usize, bool)> = COORDINATOR_KILLS.iter().map(|&n| (n, true)).collect();
    kills.extend(WORKER_KILLS.iter().map(|&n| (n, false)));
    kills.sort();
    for (at, is_coordinator) in kills {
        // Bounded: if acknowledged tasks were lost, progress stops here.
        let progress =
            tokio::time::timeout(Duration::from_secs(60), acked_rx.wait_for(|n| *n >= at));
        if progress.await.is_err() {
            eprintln!("no progress to {at} acknowledged tasks within a minute");
            break;
        }
        if is_coordinator {
            coordinator.proc.kill9();
            coordinator = Coordinator::start(bin(), &args);
        } else {
            let victim = at % 2;
            workers[victim].kill9();
            workers[victim] = start_worker(if victim == 0 { "w1" } else { "w2" });
        }
    }

    if tokio::time::timeout(Duration::from_secs(60), submitter).await.is_err() {
        eprintln!("some tasks never got an outcome within a minute");
    }
    let verdict = check(&history.lock().unwrap());
    let stats = client.stats();
    eprintln!("crash test: {verdict:?}; client saw {stats:?}");
    assert_eq!(verdict.acked, TASKS, "every submission was eventually acknowledged");
    assert_eq!((verdict.lost, verdict.duplicated, verdict.unexpected), (0, 0, 0), "{verdict:?}");
    assert!(stats.reconnects >= COORDINATOR_KILLS.len() as u64, "{stats:?}");
    drop(workers);
}
