//! Ops committed per second through [`Writer`], SQLite against PostgreSQL,
//! with the coordinator's batch shape.
//!
//! One no-op task writes four ops in the coordinator (`observe.rs`): its
//! insert when submitted, its assignment, its completion (with the attempt's
//! end), and its delivery mark once the result went out. Under load one core
//! flush holds the submissions of some tasks and the later steps of earlier
//! ones, so each batch here is: inserts for `F` new tasks, assignments for
//! the previous `F`, completions for the ones before, delivery marks for the
//! ones before those. The batches are queued as fast as the writer takes
//! them, at most `MAX_LAG` ahead (the writer's bounded queue, as in the
//! coordinator), and the writer groups what piled up into each commit.
//!
//! ```sh
//! cargo bench -p store --bench writer                    # SQLite only
//! eval "$(scripts/pg_test_server.sh start /tmp/lg-pg)"   # a PostgreSQL (fsync on)
//! cargo bench -p store --bench writer                    # both
//! cargo bench -p store --bench writer -- 200000          # tasks per run (default 100 000)
//! ```
//!
//! Bounded: each run stops at its task count or after `MAX_RUN`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use store::{AttemptEnd, NewTask, Op, PostgresStore, SqliteStore, Store, Sync, TaskState, Writer};

/// The coordinator's bound on ops per commit (`observe.rs`).
const MAX_OPS_PER_COMMIT: usize = 50_000;
/// Batches queued ahead of the writer, at most (its queue).
const MAX_LAG: usize = 256;
const MAX_RUN: Duration = Duration::from_secs(60);

fn task(id: u64) -> NewTask {
    NewTask {
        id,
        owner: "gamer:bench-1".into(),
        client_task_id: format!("t-{id}"),
        peer_task_id: format!("t-{id}"),
        options: None,
        task_type: "noop".into(),
        payload: "null".into(),
        priority: 1,
        req_model: None,
        req_gpu: false,
        req_min_vram_mb: None,
        run_timeout_ms: None,
        queue_timeout_ms: 3_600_000,
        max_attempts: 3,
        idempotency_key: None,
        submitted_at_ms: 1_700_000_000_000,
        verify: None,
    }
}

/// Batch `k` of the pipeline, with `f` tasks per stage.
fn batch(k: u64, f: u64, tasks: u64) -> Vec<Op> {
    let stage = |lag: u64| {
        let first = k.checked_sub(lag)? * f + 1;
        (first <= tasks).then(|| first..(first + f).min(tasks + 1))
    };
    let mut ops = Vec::with_capacity(4 * f as usize);
    if let Some(ids) = stage(0) {
        ops.extend(ids.map(|id| Op::Insert(task(id))));
    }
    if let Some(ids) = stage(1) {
        ops.extend(ids.map(|id| Op::Assigned { id, attempt: 1, peer: "p1".into(), at_ms: 1 }));
    }
    if let Some(ids) = stage(2) {
        ops.extend(ids.map(|id| Op::Finished {
            id,
            state: TaskState::Completed,
            result: Some("null".into()),
            error: None,
            end: Some((1, AttemptEnd::Completed)),
            at_ms: 2,
            delivered: false,
            failures: 0,
        }));
    }
    if let Some(ids) = stage(3) {
        ops.extend(ids.map(|id| Op::Delivered { id, delivered: true }));
    }
    ops
}

struct Run {
    tasks: u64,
    ops: usize,
    commits: usize,
    took: Duration,
    commit_p50: Duration,
    commit_p99: Duration,
}

fn run(store: Box<dyn Store>, f: u64, tasks: u64) -> Run {
    let (tx, rx) = mpsc::channel();
    let on_commit = move |c: Result<store::Committed, store::StoreError>| {
        let _ = tx.send(c.expect("the store failed"));
    };
    let writer = Writer::spawn(store, MAX_LAG, MAX_OPS_PER_COMMIT, on_commit).unwrap();
    let batches = tasks.div_ceil(f) + 3;
    let started = Instant::now();
    for k in 0..batches {
        // A full queue waits: the store is the bottleneck being measured.
        writer.send_waiting(k + 1, batch(k, f, tasks)).unwrap();
        if started.elapsed() > MAX_RUN {
            break;
        }
    }
    writer.close();
    let took = started.elapsed();
    let (mut committed, mut ops, mut times) = (0u64, 0usize, Vec::new());
    for c in rx.iter() {
        committed = c.seq;
        ops += c.ops;
        times.push(c.took);
    }
    times.sort();
    let pct = |p: usize| times.get(times.len() * p / 100).copied().unwrap_or_default();
    Run {
        tasks: (committed.saturating_sub(3) * f).min(tasks),
        ops,
        commits: times.len(),
        took,
        commit_p50: pct(50),
        commit_p99: pct(99),
    }
}

fn report(backend: &str, f: u64, r: &Run) {
    let secs = r.took.as_secs_f64();
    println!(
        "| {backend} | {f} | {} | {:.0} | {:.0} | {:.0} | {:.2} / {:.2} |",
        r.tasks,
        r.ops as f64 / secs,
        r.tasks as f64 / secs,
        r.ops as f64 / r.commits.max(1) as f64,
        r.commit_p50.as_secs_f64() * 1e3,
        r.commit_p99.as_secs_f64() * 1e3,
    );
}

/// A fresh database on the benchmark server, dropped after.
struct Db {
    admin: String,
    name: String,
}

impl Db {
    fn create(admin: &str, n: usize) -> (Db, String) {
        let name = format!("lgbench_{}_{n}", std::process::id());
        let mut c = postgres::Client::connect(admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        let url = format!("{base}/{name}");
        (Db { admin: admin.to_owned(), name }, url)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

fn main() {
    let tasks: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let pg = std::env::var("LEGACYGPU_TEST_POSTGRES").ok().filter(|s| !s.is_empty());
    if pg.is_none() {
        println!("(no LEGACYGPU_TEST_POSTGRES: SQLite only)");
    }
    println!(
        "| backend | tasks per flush | tasks | ops/s | tasks/s | ops per commit | commit p50 / p99 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (n, f) in [16u64, 256, 2048].into_iter().enumerate() {
        for sync in [Sync::Full, Sync::Normal] {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path(), sync).unwrap();
            let name = if sync == Sync::Full { "sqlite, sync=full" } else { "sqlite, sync=normal" };
            report(name, f, &run(Box::new(store), f, tasks));
        }
        if let Some(admin) = &pg {
            let (_db, url) = Db::create(admin, n);
            let store = PostgresStore::connect(&url).unwrap();
            report("postgres", f, &run(Box::new(store), f, tasks));
        }
    }
}
