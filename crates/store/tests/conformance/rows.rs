//! What is written comes back, the same on both backends.

use store::{
    AttemptEnd, ErrorRow, Loaded, Op, ReputationRow, Store, StoreError, StoredReplica, TaskState,
    Verdict, VerifyStatus, Writer,
};

use crate::support::{Backend, bare_task, task};

both_backends!(
    a_task_life_round_trips,
    optional_fields_round_trip_as_none,
    ids_are_never_reused_after_deletion,
    a_failed_batch_writes_nothing,
    a_newer_schema_is_refused,
    approvals_survive_a_reopen_and_the_last_one_wins,
    join_secrets_survive_a_reopen_and_the_last_one_wins,
    a_reinserted_task_starts_over,
    reclaim_and_stale_results_keep_the_attempt_history,
    many_tasks_and_many_ops_per_task_in_one_batch,
    a_nul_in_a_failure_message_does_not_fail_the_batch,
    the_writer_commits_in_order_and_close_flushes,
    open_by_target_picks_the_backend,
    a_replayed_batch_leaves_the_same_rows,
    a_retried_task_is_queued_again_with_its_history,
    verification_rows_round_trip_and_go_with_their_task,
    reputations_round_trip_and_the_last_one_wins,
    a_batch_leaves_what_its_ops_leave_one_at_a_time,
);

/// A failed task retried (in the batch that failed it, so that PostgreSQL
/// folds it, and in a later batch, so that it updates the stored row).
fn a_retried_task_is_queued_again_with_its_history(b: &Backend) {
    let failed = |id| {
        vec![
            Op::Assigned { id, attempt: 1, peer: "p1".into(), at_ms: 10 },
            Op::Finished {
                id,
                state: TaskState::Failed,
                result: None,
                error: err("boom"),
                end: Some((1, AttemptEnd::Failed)),
                at_ms: 20,
                delivered: true,
                failures: 1,
            },
        ]
    };
    let retried = |id| Op::Retried { id, peer_task_id: format!("t-{id}") };
    let mut store = b.open();
    let mut ops = vec![Op::Insert(task(1)), Op::Insert(task(2))];
    ops.extend(failed(1));
    ops.push(retried(1));
    ops.extend(failed(2));
    store.write(&ops).unwrap();
    store.write(&[retried(2)]).unwrap();
    let loaded = b.open().load().unwrap();
    for t in &loaded.tasks {
        assert_eq!(t.state, TaskState::Queued, "{t:?}");
        assert_eq!((t.finished_at_ms, t.result.as_deref(), t.failures), (None, None, 0));
        assert!(!t.delivered);
        assert_eq!(t.task.peer_task_id, format!("t-{}", t.task.id));
        assert_eq!(t.error, err("boom"), "the last error stays");
        let ends: Vec<_> = t.attempts.iter().map(|a| a.end.map(AttemptEnd::as_str)).collect();
        assert_eq!(ends, vec![Some("failed")]);
    }
}

fn err(code: &str) -> Option<ErrorRow> {
    Some(ErrorRow { code: code.into(), message: "boom".into() })
}

fn life(id: u64) -> Vec<Op> {
    vec![
        Op::Assigned { id, attempt: 1, peer: "p1".into(), at_ms: 10 },
        Op::Requeued {
            id,
            attempt: 1,
            end: AttemptEnd::PeerLost,
            failures: 1,
            error: err("peer_lost"),
            at_ms: 20,
        },
        Op::Assigned { id, attempt: 2, peer: "p2".into(), at_ms: 30 },
        Op::Started { id, attempt: 2, at_ms: 31 },
        Op::Finished {
            id,
            state: TaskState::Completed,
            result: Some("[1]".into()),
            error: None,
            end: Some((2, AttemptEnd::Completed)),
            at_ms: 40,
            delivered: false,
            failures: 1,
        },
        Op::Delivered { id, delivered: true },
    ]
}

fn a_task_life_round_trips(b: &Backend) {
    let mut ops = vec![Op::Insert(task(1)), Op::Insert(task(2)), Op::Insert(task(3))];
    ops.extend(life(1));
    ops.push(Op::Assigned { id: 2, attempt: 1, peer: "p1".into(), at_ms: 50 });
    ops.push(Op::Stale { id: 1, attempt: 1, peer: "p1".into(), at_ms: 60 });
    b.open().write(&ops).unwrap();
    let loaded = b.open().load().unwrap();
    assert_eq!(loaded.next_task_id, 4);
    let [t1, t2, t3] = &loaded.tasks[..] else { panic!("{loaded:?}") };
    assert_eq!(t1.task, task(1));
    assert_eq!((t1.state.as_str(), t1.attempt, t1.failures), ("completed", 2, 1));
    assert_eq!(
        (t1.result.as_deref(), t1.delivered, t1.finished_at_ms, t1.started_at_ms),
        (Some("[1]"), true, Some(40), Some(31))
    );
    assert_eq!(t1.error, err("peer_lost"));
    assert_eq!(t1.peer, None);
    let ends: Vec<_> =
        t1.attempts.iter().map(|a| (a.attempt, a.end.map(AttemptEnd::as_str))).collect();
    assert_eq!(ends, vec![(1, Some("peer_lost")), (2, Some("completed"))]);
    assert_eq!(t1.attempts[0].error, err("peer_lost"));
    assert_eq!((t1.attempts[1].assigned_at_ms, t1.attempts[1].ended_at_ms), (30, Some(40)));
    assert_eq!((t2.state.as_str(), t2.peer.as_deref(), t2.attempt), ("assigned", Some("p1"), 1));
    assert_eq!(t3.state, TaskState::Queued);
    assert!(t3.attempts.is_empty());
}

fn optional_fields_round_trip_as_none(b: &Backend) {
    b.open().write(&[Op::Insert(bare_task(9))]).unwrap();
    let loaded = b.open().load().unwrap();
    assert_eq!(loaded.tasks[0].task, bare_task(9));
    assert_eq!(loaded.tasks[0].error, None);
    assert_eq!(loaded.tasks[0].result, None);
}

fn ids_are_never_reused_after_deletion(b: &Backend) {
    let mut s = b.open();
    s.write(&[Op::Insert(task(7)), Op::Assigned { id: 7, attempt: 1, peer: "p".into(), at_ms: 1 }])
        .unwrap();
    s.write(&[Op::Deleted { ids: vec![7] }]).unwrap();
    drop(s);
    let loaded = b.open().load().unwrap();
    assert!(loaded.tasks.is_empty(), "{loaded:?}");
    assert_eq!(loaded.next_task_id, 8);
    // Its attempts went with it: a new task 7 would not inherit them.
    b.open().write(&[Op::Insert(task(7))]).unwrap();
    assert!(b.open().load().unwrap().tasks[0].attempts.is_empty());
}

fn a_failed_batch_writes_nothing(b: &Backend) {
    b.open().write(&[Op::Insert(task(1))]).unwrap();
    b.fail_inserts_of(3);
    let mut s = b.open();
    let mut batch = vec![Op::Insert(task(2))];
    batch.extend(life(1));
    batch.push(Op::Approved { peer_id: "w".into(), credential_sha256: "aa".into(), at_ms: 1 });
    batch.push(Op::Insert(task(3)));
    assert!(s.write(&batch).is_err());
    // The store still works after the refusal.
    s.write(&[Op::Delivered { id: 1, delivered: true }]).unwrap();
    let loaded = b.open().load().unwrap();
    let [t1] = &loaded.tasks[..] else { panic!("{loaded:?}") };
    assert_eq!((t1.state.as_str(), t1.attempts.len(), t1.delivered), ("queued", 0, true));
    assert!(loaded.approvals.is_empty());
    assert_eq!(loaded.next_task_id, 2);
}

fn a_newer_schema_is_refused(b: &Backend) {
    drop(b.open());
    b.set_schema_version(99);
    let e = b.try_open().err().expect("a newer schema must be refused");
    assert!(matches!(e, StoreError::Schema { found: 99, .. }), "{e:?}");
    assert!(e.to_string().contains("newer version"), "{e}");
}

fn approvals_survive_a_reopen_and_the_last_one_wins(b: &Backend) {
    let approve = |peer: &str, hash: &str| Op::Approved {
        peer_id: peer.into(),
        credential_sha256: hash.into(),
        at_ms: 1,
    };
    // Byte order: "W" < "a" < "w"; a locale's collation would put "W" later.
    b.open()
        .write(&[
            approve("w1", "aa"),
            approve("w2", "bb"),
            approve("w1", "cc"),
            approve("W0", "dd"),
        ])
        .unwrap();
    b.open().write(&[approve("a1", "ee")]).unwrap();
    let loaded = b.open().load().unwrap();
    let want: Vec<(String, String)> = [("W0", "dd"), ("a1", "ee"), ("w1", "cc"), ("w2", "bb")]
        .iter()
        .map(|(p, h)| (p.to_string(), h.to_string()))
        .collect();
    assert_eq!(loaded.approvals, want);
}

fn join_secrets_survive_a_reopen_and_the_last_one_wins(b: &Backend) {
    let rotate = |kind: &str, secret: &str, at_ms| Op::JoinSecret {
        kind: kind.into(),
        secret: secret.into(),
        at_ms,
    };
    assert!(b.open().load().unwrap().join_secrets.is_empty());
    b.open()
        .write(&[rotate("worker", "s1", 1), rotate("client", "c1", 1), rotate("worker", "s2", 2)])
        .unwrap();
    b.open().write(&[rotate("client", "c2", 3)]).unwrap();
    let loaded = b.open().load().unwrap();
    let want = [("client", "c2"), ("worker", "s2")].map(|(k, s)| (k.to_string(), s.to_string()));
    assert_eq!(loaded.join_secrets, want);
}

fn a_reinserted_task_starts_over(b: &Backend) {
    let mut ops = vec![Op::Insert(task(1))];
    ops.extend(life(1));
    let mut again = bare_task(1);
    again.payload = "[2]".into();
    ops.push(Op::Insert(again.clone()));
    b.open().write(&ops).unwrap();
    let loaded = b.open().load().unwrap();
    let t = &loaded.tasks[0];
    assert_eq!(t.task, again);
    assert_eq!((t.state.as_str(), t.attempt, t.failures, t.delivered), ("queued", 0, 0, false));
    assert_eq!((t.result.as_deref(), t.error.as_ref(), t.finished_at_ms), (None, None, None));
}

fn reclaim_and_stale_results_keep_the_attempt_history(b: &Backend) {
    let mut s = b.open();
    s.write(&[
        Op::Insert(task(1)),
        Op::Assigned { id: 1, attempt: 1, peer: "p1".into(), at_ms: 10 },
        Op::Requeued {
            id: 1,
            attempt: 1,
            end: AttemptEnd::PeerLost,
            failures: 1,
            error: None,
            at_ms: 11,
        },
    ])
    .unwrap();
    s.write(&[
        // The reclaim undoes the failure the lost peer counted.
        Op::Reclaimed { id: 1, attempt: 1, peer: "p1b".into(), failures: 0 },
        Op::Started { id: 1, attempt: 1, at_ms: 12 },
        // A start for an attempt that is not current changes nothing.
        Op::Started { id: 1, attempt: 9, at_ms: 99 },
        Op::Stale { id: 1, attempt: 1, peer: "other".into(), at_ms: 13 },
    ])
    .unwrap();
    let loaded = b.open().load().unwrap();
    let t = &loaded.tasks[0];
    assert_eq!(
        (t.state.as_str(), t.peer.as_deref(), t.started_at_ms, t.failures),
        ("running", Some("p1b"), Some(12), 0)
    );
    let a = &t.attempts[0];
    // Reclaimed reopens the attempt; a stale result from another peer leaves it.
    assert_eq!((a.peer.as_str(), a.end.map(AttemptEnd::as_str), a.ended_at_ms), ("p1", None, None));
    b.open().write(&[Op::Stale { id: 1, attempt: 1, peer: "p1".into(), at_ms: 14 }]).unwrap();
    let a = b.open().load().unwrap().tasks[0].attempts[0].clone();
    assert_eq!((a.end.map(AttemptEnd::as_str), a.ended_at_ms), (Some("stale"), Some(14)));
}

fn many_tasks_and_many_ops_per_task_in_one_batch(b: &Backend) {
    let n = 3_000u64;
    let mut ops: Vec<Op> = (1..=n).map(|id| Op::Insert(task(id))).collect();
    for id in 1..=n {
        ops.extend(life(id));
    }
    ops.push(Op::Deleted { ids: (1..=n).step_by(3).collect() });
    b.open().write(&ops).unwrap();
    let loaded = b.open().load().unwrap();
    assert_eq!(loaded.tasks.len() as u64, n - n.div_ceil(3));
    assert_eq!(loaded.next_task_id, n + 1);
    assert!(
        loaded
            .tasks
            .iter()
            .all(|t| t.state == TaskState::Completed && t.delivered && t.attempts.len() == 2)
    );
}

fn a_nul_in_a_failure_message_does_not_fail_the_batch(b: &Backend) {
    let error = Some(ErrorRow { code: "worker_error".into(), message: "bad\0bytes".into() });
    let mut s = b.open();
    s.write(&[
        Op::Insert(task(1)),
        Op::Assigned { id: 1, attempt: 1, peer: "p".into(), at_ms: 1 },
        Op::Finished {
            id: 1,
            state: TaskState::Failed,
            result: None,
            error,
            end: Some((1, AttemptEnd::Failed)),
            at_ms: 2,
            delivered: false,
            failures: 1,
        },
    ])
    .unwrap();
    let loaded = b.open().load().unwrap();
    assert_eq!(loaded.tasks[0].failures, 1, "the failure that ended the task counts");
    let message = &loaded.tasks[0].error.as_ref().unwrap().message;
    // SQLite keeps the NUL; PostgreSQL cannot, and keeps a replacement character.
    assert!(message == "bad\0bytes" || message == "bad\u{FFFD}bytes", "{message:?}");
    assert_eq!(loaded.tasks[0].state, TaskState::Failed);
}

fn the_writer_commits_in_order_and_close_flushes(b: &Backend) {
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = Writer::spawn(b.open(), 1_024, 1_000, move |r| {
        let _ = tx.send(r.map(|c| c.seq).map_err(|e| e.to_string()));
    })
    .unwrap();
    for id in 1..=200u64 {
        let mut batch = vec![Op::Insert(task(id))];
        if id > 1 {
            batch.extend(life(id - 1));
        }
        writer.send(id, batch).unwrap();
    }
    writer.close();
    let seqs: Vec<u64> = rx.iter().map(|r| r.unwrap()).collect();
    assert_eq!(seqs.last(), Some(&200));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let loaded = b.open().load().unwrap();
    assert_eq!(loaded.tasks.len(), 200);
    assert_eq!(loaded.tasks.iter().filter(|t| t.state == TaskState::Completed).count(), 199);
}

fn open_by_target_picks_the_backend(b: &Backend) {
    let target = store::Target::parse(&match b.target() {
        store::Target::Sqlite(dir) => dir.display().to_string(),
        store::Target::Postgres(url) => url,
    });
    assert_eq!(target, b.target());
    store::open(&target, store::Sync::Normal).unwrap().write(&[Op::Insert(task(5))]).unwrap();
    assert_eq!(b.open().load().unwrap().tasks[0].task, task(5));
}

/// A seeded jumble of ops — valid histories and nonsense alike — in batches.
fn random_history(seed: u64) -> Vec<Vec<Op>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next = 1u64;
    let mut batches = Vec::new();
    for _ in 0..60 {
        let batch = (0..rng.usize(1..40)).map(|_| random_op(&mut rng, &mut next)).collect();
        batches.push(batch);
    }
    batches
}

fn random_op(rng: &mut fastrand::Rng, next: &mut u64) -> Op {
    // Often a task inserted in this batch (its ops fold into final rows on
    // PostgreSQL), otherwise any task (its ops go op by op).
    let id = if rng.bool() {
        rng.u64(next.saturating_sub(4).max(1)..*next + 1)
    } else {
        rng.u64(1..*next + 1)
    };
    let attempt = rng.u32(1..4);
    let peer = format!("p{}", rng.u8(0..3));
    let at_ms = rng.i64(0..1_000_000);
    let error =
        if rng.bool() { err(["failed", "peer_lost", "timed_out"][rng.usize(0..3)]) } else { None };
    match rng.u8(0..14) {
        0 | 1 => {
            *next += 1;
            Op::Insert(if rng.bool() { task(*next - 1) } else { bare_task(*next - 1) })
        }
        2 => Op::Assigned { id, attempt, peer, at_ms },
        3 => Op::Started { id, attempt, at_ms },
        4 => Op::Reclaimed { id, attempt, peer, failures: attempt - 1 },
        5 => {
            Op::Requeued { id, attempt, end: AttemptEnd::PeerLost, failures: attempt, error, at_ms }
        }
        6 => Op::Finished {
            id,
            state: [
                TaskState::Completed,
                TaskState::Failed,
                TaskState::Cancelled,
                TaskState::TimedOut,
            ][rng.usize(0..4)],
            result: rng.bool().then(|| format!("[{at_ms}]")),
            end: rng.bool().then_some((attempt, AttemptEnd::Completed)),
            error,
            at_ms,
            delivered: rng.bool(),
            failures: rng.u32(0..4),
        },
        7 => Op::Delivered { id, delivered: rng.bool() },
        8 => Op::Stale { id, attempt, peer, at_ms },
        9 => Op::Deleted { ids: (0..rng.usize(1..4)).map(|_| rng.u64(1..*next + 1)).collect() },
        10 => Op::Approved { peer_id: peer, credential_sha256: format!("{at_ms:x}"), at_ms },
        11 => {
            let status = VerifyStatus::ALL[rng.usize(..VerifyStatus::ALL.len())];
            let replicas =
                (0..rng.u32(0..4)).map(|i| replica(rng, i, *next + u64::from(i))).collect();
            Op::Verified { id, status, replicas }
        }
        12 => Op::Reputation(reputation(&format!("worker:{peer}"), at_ms, rng.bool())),
        _ => Op::IdsUsed { next_task_id: *next + rng.u64(0..5) },
    }
}

fn replica(rng: &mut fastrand::Rng, i: u32, task_id: u64) -> StoredReplica {
    StoredReplica {
        replica: i,
        task_id,
        peer: rng.bool().then(|| format!("p{i}")),
        attempts: rng.u32(0..3),
        result: rng.bool().then(|| format!("{{\"n\": {i}}}")),
        error: if rng.bool() { err("internal") } else { None },
        verdict: Verdict::ALL[rng.usize(..Verdict::ALL.len())],
    }
}

fn reputation(subject: &str, n: i64, quarantined: bool) -> ReputationRow {
    ReputationRow {
        subject: subject.into(),
        valid: n as u64,
        invalid: 2,
        unverified: 3,
        consecutive_valid: 4,
        canaries_passed: 5,
        canaries_failed: 6,
        strikes: 7,
        quarantined,
        credential: quarantined.then(|| "ab12".into()),
        updated_at_ms: n,
    }
}

fn verification_rows_round_trip_and_go_with_their_task(b: &Backend) {
    let mut t = task(1);
    t.verify = Some("2/2".into());
    let replicas = vec![
        StoredReplica {
            replica: 0,
            task_id: 2,
            peer: Some("p1".into()),
            attempts: 1,
            result: Some(r#"{"checksum": "ab"}"#.into()),
            error: None,
            verdict: Verdict::Valid,
        },
        StoredReplica {
            replica: 1,
            task_id: 3,
            peer: None,
            attempts: 0,
            result: None,
            error: err("cancelled"),
            verdict: Verdict::Unjudged,
        },
    ];
    let verdict = Op::Verified { id: 1, status: VerifyStatus::Agreed, replicas: replicas.clone() };
    // One batch with the insert (it does not fold on PostgreSQL), one without.
    b.open()
        .write(&[Op::Insert(t.clone()), verdict.clone(), Op::IdsUsed { next_task_id: 4 }])
        .unwrap();
    b.open().write(&[Op::Insert(task(9)), Op::IdsUsed { next_task_id: 7 }]).unwrap();
    // A verdict for a task that is not there leaves nothing behind.
    b.open()
        .write(&[Op::Verified {
            id: 5,
            status: VerifyStatus::NoQuorum,
            replicas: replicas.clone(),
        }])
        .unwrap();
    let loaded = b.open().load().unwrap();
    assert_eq!(loaded.next_task_id, 10, "replica ids are never handed out again");
    let got = &loaded.tasks[0];
    assert_eq!(got.task.verify.as_deref(), Some("2/2"));
    assert_eq!((got.verify_status, &got.replicas), (Some(VerifyStatus::Agreed), &replicas));
    assert_eq!((loaded.tasks[1].verify_status, loaded.tasks[1].replicas.len()), (None, 0));
    let reader = b.reader();
    assert_eq!(reader.task(1).unwrap().unwrap().replicas, replicas);
    assert!(
        reader
            .tasks(&Default::default(), store::Page { before: None, limit: 5, skip: 0 })
            .unwrap()
            .iter()
            .all(|t| t.replicas.is_empty()),
        "lists leave replicas out"
    );
    b.open().write(&[Op::Deleted { ids: vec![1] }, Op::Insert(task(1))]).unwrap();
    let again = b.open().load().unwrap();
    assert_eq!((again.tasks[0].verify_status, again.tasks[0].replicas.len()), (None, 0));
}

fn reputations_round_trip_and_the_last_one_wins(b: &Backend) {
    b.open()
        .write(&[
            Op::Reputation(reputation("worker:w1", 1, false)),
            Op::Reputation(reputation("credential:ab12", 2, true)),
            Op::Reputation(reputation("worker:w1", 3, true)),
        ])
        .unwrap();
    b.open().write(&[Op::Reputation(reputation("worker:a0", 4, false))]).unwrap();
    let loaded = b.open().load().unwrap();
    let expect = vec![
        reputation("credential:ab12", 2, true),
        reputation("worker:a0", 4, false),
        reputation("worker:w1", 3, true),
    ];
    assert_eq!(loaded.reputation, expect);
}

fn apply(store: &mut dyn Store, batches: &[Vec<Op>]) -> Loaded {
    for batch in batches {
        store.write(batch).unwrap();
    }
    store.load().unwrap()
}

/// The strongest form of "the same rows": for the same ops, PostgreSQL loads
/// exactly what SQLite loads, on seeded random histories.
#[test]
fn postgres_loads_exactly_what_sqlite_loads() {
    let Some(pg) = Backend::postgres() else { return };
    let sqlite = Backend::sqlite();
    for seed in 1..=12 {
        let history = random_history(seed);
        let a = apply(sqlite.open().as_mut(), &history);
        let b = apply(pg.open().as_mut(), &history);
        assert_eq!(a.next_task_id, b.next_task_id, "seed {seed}");
        assert_eq!(a.approvals, b.approvals, "seed {seed}");
        assert_eq!(a.reputation, b.reputation, "seed {seed}");
        assert_eq!(a.tasks.len(), b.tasks.len(), "seed {seed}");
        for (x, y) in a.tasks.iter().zip(&b.tasks) {
            assert_eq!(x, y, "seed {seed}");
        }
    }
}

/// Both backends fold a task's ops into its final rows when the batch holds
/// its insert (`fold.rs`): on random histories, each batch leaves what its
/// ops leave written one per batch (where only a lone insert folds, which
/// is the plain insert).
fn a_batch_leaves_what_its_ops_leave_one_at_a_time(b: &Backend) {
    for seed in [3, 17, 41] {
        let history = if seed == 3 { random_history(seed) } else { random_lives(seed) };
        let singles: Vec<Vec<Op>> = history.iter().flatten().map(|op| vec![op.clone()]).collect();
        let (batched, one_by_one) =
            (apply(b.open().as_mut(), &history), apply(b.open().as_mut(), &singles));
        assert_eq!(batched.next_task_id, one_by_one.next_task_id, "seed {seed}");
        assert_eq!(batched.tasks.len(), one_by_one.tasks.len(), "seed {seed}");
        for (x, y) in batched.tasks.iter().zip(&one_by_one.tasks) {
            assert_eq!(x, y, "seed {seed}");
        }
    }
}

/// Whole task lives (what a scheduler writes: an insert, then attempts that
/// are assigned, started, requeued or reclaimed, stale results, a finish,
/// its delivery, a retry), interleaved and cut into batches at random: most
/// tasks have their insert and more in one batch, as under load.
fn random_lives(seed: u64) -> Vec<Vec<Op>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut lives: Vec<std::collections::VecDeque<Op>> = Vec::new();
    for id in 1..=80u64 {
        let mut life = vec![Op::Insert(if rng.bool() { task(id) } else { bare_task(id) })];
        let (mut attempt, mut failures) = (0, 0);
        let mut at_ms = 0;
        let mut tick = |rng: &mut fastrand::Rng| {
            at_ms += rng.i64(1..50);
            at_ms
        };
        for _ in 0..rng.usize(0..4) {
            attempt += 1;
            let peer = format!("p{}", rng.u8(0..3));
            life.push(Op::Assigned { id, attempt, peer: peer.clone(), at_ms: tick(&mut rng) });
            if rng.bool() {
                life.push(Op::Started { id, attempt, at_ms: tick(&mut rng) });
            }
            match rng.u8(0..3) {
                0 => {
                    failures += 1;
                    let error = err(["failed", "peer_lost", "timed_out"][rng.usize(0..3)]);
                    let end = AttemptEnd::PeerLost;
                    let at_ms = tick(&mut rng);
                    life.push(Op::Requeued { id, attempt, end, failures, error, at_ms });
                }
                1 => life.push(Op::Reclaimed { id, attempt, peer: peer.clone(), failures }),
                _ => life.push(Op::Stale { id, attempt, peer, at_ms: tick(&mut rng) }),
            }
        }
        if rng.u8(0..4) > 0 {
            let done = rng.bool();
            life.push(Op::Finished {
                id,
                state: if done { TaskState::Completed } else { TaskState::Failed },
                result: done.then(|| format!("[{id}]")),
                error: if done { None } else { err("failed") },
                end: (attempt > 0).then_some((attempt, AttemptEnd::Completed)),
                at_ms: tick(&mut rng),
                delivered: rng.bool(),
                failures,
            });
            if rng.bool() {
                life.push(Op::Delivered { id, delivered: true });
            }
            if rng.u8(0..5) == 0 {
                life.push(Op::Retried { id, peer_task_id: format!("r{id}") });
            }
        }
        lives.push(life.into());
    }
    let mut batches = Vec::new();
    while lives.iter().any(|l| !l.is_empty()) {
        let mut batch = Vec::new();
        for _ in 0..rng.usize(1..30) {
            let live: Vec<usize> = (0..lives.len()).filter(|&i| !lives[i].is_empty()).collect();
            if live.is_empty() {
                break;
            }
            // Mostly the oldest lives, as a queue serves them.
            let i = live[rng.usize(..live.len().min(6))];
            batch.extend(lives[i].pop_front());
        }
        batches.push(batch);
    }
    batches
}

/// A write whose answer was lost (the connection dropped after `COMMIT` was
/// sent) is retried by the writer, so a batch may be applied twice. Every op
/// writes what it means, not a change relative to what is there, so the
/// second application leaves the rows as the first did.
fn a_replayed_batch_leaves_the_same_rows(b: &Backend) {
    let reference = Backend::sqlite();
    let (mut once, mut twice) = (reference.open(), b.open());
    for batch in random_history(99) {
        once.write(&batch).unwrap();
        twice.write(&batch).unwrap();
        twice.write(&batch).unwrap();
    }
    let (a, b) = (once.load().unwrap(), twice.load().unwrap());
    assert_eq!((a.next_task_id, &a.approvals), (b.next_task_id, &b.approvals));
    assert_eq!((a.tasks, a.reputation), (b.tasks, b.reputation));
}
