//! Fills a SQLite store with N completed tasks (for the dashboard's
//! benchmark, `scripts/bench_dashboard.sh`): `cargo run -p store --example
//! fill_store -- DIR N`. Tasks are submitted 1 ms apart ending now, so that a
//! coordinator started on the store within the result TTL keeps them all.

use std::time::{SystemTime, UNIX_EPOCH};

use store::{AttemptEnd, NewTask, Op, SqliteStore, Store, Sync, TaskState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: fill_store DIR N")?;
    let n: u64 = args.next().ok_or("usage: fill_store DIR N")?.parse()?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let mut db = SqliteStore::open(std::path::Path::new(&dir), Sync::Normal)?;
    let types = ["echo", "physics", "inference", "gpu"];
    for chunk in (1..=n).collect::<Vec<_>>().chunks(10_000) {
        let mut ops = Vec::with_capacity(chunk.len() * 3);
        for &id in chunk {
            let at = now - i64::try_from(n - id)?;
            ops.push(Op::Insert(NewTask {
                id,
                owner: if id % 3 == 0 { "api".into() } else { format!("gamer:g{}", id % 7) },
                client_task_id: format!("c{id}"),
                peer_task_id: format!("c{id}"),
                options: None,
                task_type: types[(id % 4) as usize].into(),
                payload: format!(r#"{{"n": {id}}}"#),
                priority: 1,
                req_model: None,
                req_gpu: false,
                req_min_vram_mb: None,
                run_timeout_ms: None,
                queue_timeout_ms: 3_600_000,
                max_attempts: 3,
                idempotency_key: None,
                submitted_at_ms: at,
                verify: None,
            }));
            let peer = format!("w{}", id % 5);
            ops.push(Op::Assigned { id, attempt: 1, peer, at_ms: at });
            let (state, result) = if id % 10 == 0 {
                (TaskState::Failed, None)
            } else {
                (TaskState::Completed, Some(format!(r#"{{"n": {id}}}"#)))
            };
            let end = if result.is_some() { AttemptEnd::Completed } else { AttemptEnd::Failed };
            ops.push(Op::Finished {
                id,
                state,
                result: result.clone(),
                error: None,
                end: Some((1, end)),
                at_ms: at,
                delivered: true,
                failures: u32::from(result.is_none()),
            });
        }
        db.write(&ops)?;
        // As the coordinator's writer does after its commits.
        if db.upkeep_due() {
            db.upkeep()?;
        }
    }
    println!("{n} tasks in {dir}/tasks.db");
    Ok(())
}
