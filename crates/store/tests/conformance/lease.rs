//! PostgreSQL only: the leader lease and the fencing of deposed leaders.
//!
//! Expiry is real time on the database's clock, so the tests that need a
//! lease to run out use short leases and wait for the event (a takeover
//! succeeding) with a deadline, never a fixed sleep.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use store::{Acquired, LeaderLease, Op, PostgresStore, Renewal, Store, StoreError, Writer};

use crate::support::{TestDb, task};
use test_support::net::FreezableProxy;
use test_support::pg::TestServer;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(300);

/// Tries until `holder` leads (the current lease must expire first).
fn acquire_eventually(lease: &mut LeaderLease, holder: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Acquired::Leader { epoch } = lease.try_acquire(holder, "addr", LONG).unwrap() {
            return epoch;
        }
        assert!(Instant::now() < deadline, "{holder} never got the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until_expired(lease: &mut LeaderLease) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lease.leader().unwrap().is_some_and(|s| s.expired()) {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leader_of(db: &TestDb, epoch: u64) -> Box<dyn Store> {
    let mut s = PostgresStore::connect(&db.url).unwrap();
    s.set_epoch(epoch);
    Box::new(s)
}

#[test]
fn acquire_renew_expire_and_take_over() {
    let Some(db) = TestDb::create() else { return };
    let mut a = LeaderLease::connect(&db.url).unwrap();
    let mut b = LeaderLease::connect(&db.url).unwrap();
    assert_eq!(a.leader().unwrap(), None, "nobody led yet");

    assert_eq!(a.try_acquire("a", "ws://a:8765", SHORT).unwrap(), Acquired::Leader { epoch: 1 });
    let Acquired::Standby(Some(seen)) = b.try_acquire("b", "ws://b:8765", LONG).unwrap() else {
        panic!("b must see a's lease")
    };
    assert_eq!((seen.holder.as_str(), seen.address.as_str(), seen.epoch), ("a", "ws://a:8765", 1));
    assert_eq!(a.renew("a", 1, SHORT).unwrap(), Renewal::Renewed);
    // Only the holder at its epoch renews.
    assert!(matches!(b.renew("b", 1, LONG).unwrap(), Renewal::Lost(Some(s)) if s.holder == "a"));
    assert!(matches!(a.renew("a", 7, LONG).unwrap(), Renewal::Lost(_)));

    // a stops renewing: once its lease runs out, b takes it at the next epoch.
    assert_eq!(acquire_eventually(&mut b, "b"), 2);
    let Renewal::Lost(Some(now)) = a.renew("a", 1, LONG).unwrap() else { panic!("a was deposed") };
    assert_eq!((now.holder.as_str(), now.epoch, now.expired()), ("b", 2, false));
    let state = a.leader().unwrap().unwrap();
    assert_eq!((state.holder.as_str(), state.address.as_str(), state.epoch), ("b", "addr", 2));
    assert!(state.age < LONG && state.expires_in <= LONG);

    // A clean step-down lets the next leader in at once.
    assert!(b.release("b", 2).unwrap());
    assert_eq!(a.try_acquire("a", "ws://a:8765", LONG).unwrap(), Acquired::Leader { epoch: 3 });
    assert!(!b.release("b", 2).unwrap(), "b no longer holds it");
}

#[test]
fn concurrent_contenders_get_one_leader_and_distinct_epochs() {
    let Some(db) = TestDb::create() else { return };
    let mut epochs = Vec::new();
    // Each round: contenders race for a free lease; exactly one wins, at an
    // epoch never seen before; then it steps down and the next round races.
    for (round, n) in [6, 2, 3, 2].into_iter().enumerate() {
        let barrier = Arc::new(Barrier::new(n));
        let racers: Vec<_> = (0..n)
            .map(|i| {
                let (url, barrier) = (db.url.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let mut lease = LeaderLease::connect(&url).unwrap();
                    barrier.wait();
                    let holder = format!("r{round}-{i}");
                    (lease.try_acquire(&holder, "addr", LONG).unwrap(), holder)
                })
            })
            .collect();
        let outcomes: Vec<(Acquired, String)> =
            racers.into_iter().map(|t| t.join().unwrap()).collect();
        let won: Vec<(u64, &str)> = outcomes
            .iter()
            .filter_map(|(o, h)| match o {
                Acquired::Leader { epoch } => Some((*epoch, h.as_str())),
                Acquired::Standby(_) => None,
            })
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
        let (epoch, holder) = won[0];
        // The losers saw the winner (or a busy row while it took it).
        for (o, _) in &outcomes {
            if let Acquired::Standby(Some(s)) = o {
                assert_eq!((s.holder.as_str(), s.epoch), (holder, epoch));
            }
        }
        assert!(!epochs.contains(&epoch), "epoch {epoch} reused: {epochs:?}");
        epochs.push(epoch);
        let mut lease = LeaderLease::connect(&db.url).unwrap();
        assert!(lease.release(holder, epoch).unwrap());
    }
    assert_eq!(epochs, vec![1, 2, 3, 4]);
}

#[test]
fn a_write_with_an_old_epoch_is_refused_and_writes_nothing() {
    let Some(db) = TestDb::create() else { return };
    let mut a = LeaderLease::connect(&db.url).unwrap();
    let mut b = LeaderLease::connect(&db.url).unwrap();
    assert_eq!(a.try_acquire("a", "addr", SHORT).unwrap(), Acquired::Leader { epoch: 1 });
    let mut old = leader_of(&db, 1);
    old.write(&[Op::Insert(task(1))]).unwrap();

    let epoch = acquire_eventually(&mut b, "b");
    let e =
        old.write(&[Op::Insert(task(2)), Op::Delivered { id: 1, delivered: true }]).unwrap_err();
    assert!(matches!(e, StoreError::Fenced { ours: 1, current: 2 }), "{e:?}");
    assert!(e.is_permanent());

    let mut new = leader_of(&db, epoch);
    let loaded = new.load().unwrap();
    let [t1] = &loaded.tasks[..] else { panic!("{loaded:?}") };
    assert!(!t1.delivered, "the refused batch left nothing");
    new.write(&[Op::Insert(task(3))]).unwrap();
    assert_eq!(new.load().unwrap().tasks.len(), 2);
}

#[test]
fn a_store_that_never_took_the_lease_is_fenced_once_someone_leads() {
    let Some(db) = TestDb::create() else { return };
    let mut single = PostgresStore::connect(&db.url).unwrap();
    // Epoch 0: a lone coordinator that does not compete writes as before...
    single.write(&[Op::Insert(task(1))]).unwrap();
    let mut lease = LeaderLease::connect(&db.url).unwrap();
    assert_eq!(lease.try_acquire("a", "addr", LONG).unwrap(), Acquired::Leader { epoch: 1 });
    // ...until a leader exists.
    let e = single.write(&[Op::Insert(task(2))]).unwrap_err();
    assert!(matches!(e, StoreError::Fenced { ours: 0, current: 1 }), "{e:?}");
}

#[test]
fn a_fenced_writer_reports_it_and_stops() {
    let Some(db) = TestDb::create() else { return };
    let mut a = LeaderLease::connect(&db.url).unwrap();
    assert_eq!(a.try_acquire("a", "addr", SHORT).unwrap(), Acquired::Leader { epoch: 1 });
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = Writer::spawn(leader_of(&db, 1), 1_024, 1_000, move |r| {
        let _ = tx.send(r.map(|c| c.seq));
    })
    .unwrap();
    writer.send(1, vec![Op::Insert(task(1))]).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap().unwrap(), 1);

    let mut b = LeaderLease::connect(&db.url).unwrap();
    acquire_eventually(&mut b, "b");
    writer.send(2, vec![Op::Insert(task(2))]).unwrap();
    let refused = rx.recv_timeout(LONG).unwrap();
    assert!(matches!(refused, Err(StoreError::Fenced { ours: 1, current: 2 })), "{refused:?}");
    // Stopped: later batches are not taken, and none was written.
    let deadline = Instant::now() + LONG;
    while writer.send(3, vec![Op::Insert(task(3))]).is_ok() {
        assert!(Instant::now() < deadline, "the fenced writer kept going");
        std::thread::yield_now();
    }
    writer.close();
    let ids: Vec<u64> = leader_of(&db, 2).load().unwrap().tasks.iter().map(|t| t.task.id).collect();
    assert_eq!(ids, vec![1]);
}

/// What a leader frozen by SIGSTOP in the middle of a batch looks like to
/// the database: a session inside a transaction that holds the lease row and
/// says nothing more. The takeover must wait for it (it might still commit),
/// the leader's renewals must not; the server ends the frozen session, its
/// batch is rolled back, and the takeover goes through.
#[test]
fn a_leader_frozen_mid_batch_blocks_takeover_only_until_the_server_ends_it() {
    let Some(db) = TestDb::create() else { return };
    let mut a = LeaderLease::connect(&db.url).unwrap();
    assert_eq!(a.try_acquire("a", "addr", SHORT).unwrap(), Acquired::Leader { epoch: 1 });
    drop(PostgresStore::connect(&db.url).unwrap());

    let mut frozen = db.client();
    frozen.batch_execute("SET idle_in_transaction_session_timeout = '8s'").unwrap();
    frozen.batch_execute("BEGIN").unwrap();
    frozen.execute("SELECT legacygpu_fence(1)", &[]).unwrap();
    frozen
        .execute(
            "INSERT INTO tasks (id, owner, client_task_id, peer_task_id, task_type, payload,
             priority, req_gpu, queue_timeout_ms, max_attempts, submitted_at, state)
             VALUES (1, 'api', 'c1', 'c1', 'echo', '{}', 1, false, 1, 1, 1, 'queued')",
            &[],
        )
        .unwrap();
    // The batch is in flight: the leader itself still renews...
    assert_eq!(a.renew("a", 1, SHORT).unwrap(), Renewal::Renewed);
    // ...and a contender, once the lease ran out, cannot take it while the
    // batch could still commit (it waits for the row, then gives up for now).
    let mut b = LeaderLease::connect(&db.url).unwrap();
    wait_until_expired(&mut b);
    assert!(matches!(b.try_acquire("b", "addr", LONG).unwrap(), Acquired::Standby(_)));
    // The server ends the frozen session; the takeover then succeeds.
    assert_eq!(acquire_eventually(&mut b, "b"), 2);
    assert!(frozen.batch_execute("COMMIT").is_err(), "the frozen batch must not commit");
    assert!(leader_of(&db, 2).load().unwrap().tasks.is_empty());
}

#[test]
fn coordinators_starting_together_migrate_once() {
    let Some(db) = TestDb::create() else { return };
    let barrier = Arc::new(Barrier::new(4));
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (db.url.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStore::connect(&url).map(drop)
            })
        })
        .collect();
    for s in starts {
        s.join().unwrap().unwrap();
    }
    let versions: Vec<i64> = db
        .client()
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7]);
    // Version 6 left room for the updates of each task (heap-only tuples).
    let options: Vec<(String, Vec<String>)> = db
        .client()
        .query(
            "SELECT relname::text, reloptions FROM pg_class \
             WHERE relname IN ('tasks', 'attempts') ORDER BY relname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        options,
        vec![
            ("attempts".to_owned(), vec!["fillfactor=40".to_owned()]),
            ("tasks".to_owned(), vec!["fillfactor=25".to_owned()]),
        ]
    );
}

#[test]
fn open_from_async_code_does_not_panic() {
    let Some(db) = TestDb::create() else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let loaded = rt.block_on(async {
        let mut s = store::open(&store::Target::Postgres(db.url.clone()), store::Sync::Full)?;
        s.write(&[Op::Insert(task(1))])?;
        let loaded = s.load();
        drop(s);
        loaded
    });
    assert_eq!(loaded.unwrap().tasks.len(), 1);
}

/// The server ends the writer's session (a restart, a failover of the
/// database, an operator): the writer's retry reconnects and the batch is
/// committed once.
#[test]
fn a_lost_connection_is_made_again_and_the_batch_committed() {
    let Some(db) = TestDb::create() else { return };
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = Writer::spawn(leader_of(&db, 0), 1_024, 1_000, move |r| {
        let _ = tx.send(r.map(|c| c.seq));
    })
    .unwrap();
    writer.send(1, vec![Op::Insert(task(1))]).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap().unwrap(), 1);
    let ended: i64 = db
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'legacygpu store' AND datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ended, 1, "the writer's session was found and ended");
    writer.send(2, vec![Op::Insert(task(2)), Op::Delivered { id: 1, delivered: true }]).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap().unwrap(), 2);
    writer.close();
    let loaded = leader_of(&db, 0).load().unwrap();
    assert_eq!(loaded.tasks.len(), 2);
    assert!(loaded.tasks[0].delivered);
}

/// Every coordinator reports itself; each sees them all, with what they
/// last said, and one that stops cleanly leaves the list.
#[test]
fn coordinators_report_to_the_registry_and_a_clean_stop_leaves_it() {
    let Some(db) = TestDb::create() else { return };
    let mut a = LeaderLease::connect(&db.url).unwrap();
    let mut b = LeaderLease::connect(&db.url).unwrap();
    assert!(a.coordinators().unwrap().is_empty());
    a.announce("a", "ws://a:1 http://a:2", "leader", 1).unwrap();
    b.announce("b", "ws://b:1", "standby", 0).unwrap();
    // A later report replaces the earlier one.
    b.announce("b", "ws://b:1", "standby", 1).unwrap();
    let seen = b.coordinators().unwrap();
    let rows: Vec<(&str, &str, &str, u64)> = seen
        .iter()
        .map(|c| (c.holder.as_str(), c.address.as_str(), c.role.as_str(), c.epoch))
        .collect();
    assert_eq!(rows, [("a", "ws://a:1 http://a:2", "leader", 1), ("b", "ws://b:1", "standby", 1)]);
    assert!(seen.iter().all(|c| c.seen < Duration::from_secs(30) && c.up >= c.seen));
    a.retire("a").unwrap();
    let left: Vec<String> = b.coordinators().unwrap().into_iter().map(|c| c.holder).collect();
    assert_eq!(left, ["b"]);
}

/// Runs `f` on a thread of its own and fails the test when it has not
/// returned within `limit` (a call that hangs must fail, not stall).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("the call returned in time")
}

fn timed_out(e: &StoreError) -> bool {
    matches!(e, StoreError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// The server stops answering with the connection open (frozen, or cut
/// off): a renewal gives up at its timeout instead of waiting for ever,
/// connecting again does too, and once the server answers again the next
/// call connects anew.
#[test]
fn a_lease_call_to_a_server_that_stopped_answering_gives_up_in_time() {
    let Some(db) = TestDb::create() else { return };
    let proxy = FreezableProxy::start(db.addr());
    let mut lease = LeaderLease::connect(&db.url_via(proxy.addr())).unwrap();
    assert_eq!(lease.try_acquire("a", "addr", LONG).unwrap(), Acquired::Leader { epoch: 1 });
    lease.set_timeout(Duration::from_millis(300));
    proxy.freeze();
    let (mut lease, renewed) = within(LONG, move || {
        let renewed = lease.renew("a", 1, LONG);
        (lease, renewed)
    });
    let e = renewed.unwrap_err();
    assert!(timed_out(&e), "{e}");
    let (mut lease, again) = within(LONG, move || {
        let again = lease.leader();
        (lease, again)
    });
    let e = again.unwrap_err();
    assert!(timed_out(&e), "connecting again is bounded too: {e}");
    proxy.thaw();
    lease.set_timeout(LONG);
    assert_eq!(lease.renew("a", 1, LONG).unwrap(), Renewal::Renewed);
}

/// A restart of the server (`pg_ctl stop`, then start) ends every session:
/// a standby's lease connects again and takes the lease once the leader,
/// gone meanwhile, has let it run out.
#[test]
fn a_standby_outlives_a_restart_of_the_server_and_takes_the_lease() {
    let Some(server) = TestServer::start() else { return };
    let db = server.db();
    let mut a = LeaderLease::connect(&db.url).unwrap();
    let mut b = LeaderLease::connect(&db.url).unwrap();
    assert_eq!(a.try_acquire("a", "addr", SHORT).unwrap(), Acquired::Leader { epoch: 1 });
    assert!(matches!(b.try_acquire("b", "addr", LONG).unwrap(), Acquired::Standby(Some(_))));
    server.stop();
    assert!(b.try_acquire("b", "addr", LONG).is_err(), "nothing answers while it is down");
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    let epoch = loop {
        match b.try_acquire("b", "addr", LONG) {
            Ok(Acquired::Leader { epoch }) => break epoch,
            Ok(Acquired::Standby(_)) => {}
            Err(e) => assert!(Instant::now() < deadline, "the standby never came back: {e}"),
        }
        assert!(Instant::now() < deadline, "the standby never took the lease");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(epoch, 2);
    drop(a);
}
