use std::sync::mpsc;

use super::*;
use crate::sqlite::tests::task;
use crate::{AttemptEnd, Committed, SqliteReader, StoreReader, TaskState, Writer};

fn assigned(id: u64) -> Op {
    Op::Assigned { id, attempt: 1, peer: "p1".into(), at_ms: 10 }
}

fn finished(id: u64) -> Op {
    Op::Finished {
        id,
        state: TaskState::Completed,
        result: Some("[1]".into()),
        error: None,
        end: Some((1, AttemptEnd::Completed)),
        at_ms: 20,
        delivered: false,
        failures: 0,
    }
}

/// The process dies: nothing is applied on the way out.
fn crash(store: Journaled) {
    std::mem::forget(store);
}

fn journal(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(JOURNAL_FILE)).unwrap()
}

fn state(store: &mut Journaled, id: u64) -> Option<(TaskState, usize)> {
    let loaded = store.load().unwrap();
    loaded.tasks.iter().find(|t| t.task.id == id).map(|t| (t.state, t.attempts.len()))
}

#[test]
fn a_small_batch_is_durable_before_readers_see_it_and_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
    store.write(&[Op::Insert(task(1)), assigned(1)]).unwrap();
    assert!(store.behind());
    assert!(store.upkeep_within().is_some_and(|d| d <= APPLY_DELAY));
    let reader = SqliteReader::open(dir.path()).unwrap();
    assert_eq!(reader.task(1).unwrap(), None, "applied at once");
    assert!(!journal(dir.path()).is_empty());
    crash(store);

    let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
    assert_eq!(state(&mut store, 1), Some((TaskState::Assigned, 1)));
    assert!(journal(dir.path()).is_empty(), "applied at open, the journal starts over");
    let seen = reader.task(1).unwrap().expect("readers see it once applied");
    assert_eq!(seen.task, task(1));
}

#[test]
fn upkeep_applies_the_journal_once_due_and_readers_then_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Journaled::open(dir.path(), Sync::Full).unwrap();
    store.write(&[Op::Insert(task(1))]).unwrap();
    let reader = SqliteReader::open(dir.path()).unwrap();
    std::thread::sleep(APPLY_DELAY);
    assert!(store.upkeep_due());
    store.upkeep().unwrap();
    assert!(!store.behind());
    assert_eq!(store.upkeep_within(), None);
    assert!(reader.task(1).unwrap().is_some());
    assert!(journal(dir.path()).is_empty());
    // Enough ops waiting make it due without the delay.
    for id in 2..2 + APPLY_OPS as u64 {
        store.write(&[Op::Insert(task(id))]).unwrap();
    }
    assert!(store.upkeep_due());
}

#[test]
fn records_applied_before_a_crash_are_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
    store.write(&[Op::Insert(task(1)), assigned(1)]).unwrap();
    let left = journal(dir.path());
    store.apply(&[]).unwrap();
    store.write(&[finished(1)]).unwrap();
    store.apply(&[]).unwrap();
    crash(store);
    // The crash came after the first record's transaction but before the
    // journal was emptied: replaying its insert would start task 1 over.
    std::fs::write(dir.path().join(JOURNAL_FILE), &left).unwrap();

    let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
    assert_eq!(state(&mut store, 1), Some((TaskState::Completed, 1)));
    // Numbering goes on past what was applied.
    store.write(&[Op::Insert(task(2))]).unwrap();
    crash(store);
    let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
    assert_eq!(state(&mut store, 2), Some((TaskState::Queued, 0)));
    assert_eq!(state(&mut store, 1), Some((TaskState::Completed, 1)));
}

#[test]
fn a_record_cut_short_or_damaged_ends_the_journal() {
    for damage in ["cut", "flipped"] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
        store.write(&[Op::Insert(task(1))]).unwrap();
        let first = journal(dir.path()).len();
        store.write(&[Op::Insert(task(2))]).unwrap();
        store.write(&[Op::Insert(task(3))]).unwrap();
        crash(store);
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        match damage {
            // The process died inside its second write.
            "cut" => bytes.truncate(first + 20),
            // A bit of the second record is wrong: it and the third go.
            _ => bytes[first + HEADER + 3] ^= 1,
        }
        std::fs::write(&path, &bytes).unwrap();

        let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
        let ids: Vec<u64> = store.load().unwrap().tasks.iter().map(|t| t.task.id).collect();
        assert_eq!(ids, [1], "{damage}");
        store.write(&[Op::Insert(task(4))]).unwrap();
        crash(store);
        let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
        let ids: Vec<u64> = store.load().unwrap().tasks.iter().map(|t| t.task.id).collect();
        assert_eq!(ids, [1, 4], "{damage}");
    }
}

#[test]
fn a_large_batch_goes_straight_to_the_database_after_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
    store.write(&[Op::Insert(task(1))]).unwrap();
    let mut ops: Vec<Op> = (2..2 + JOURNAL_MAX_OPS as u64).map(|id| Op::Insert(task(id))).collect();
    // After the journal's insert: applied in order.
    ops.push(assigned(1));
    store.write(&ops).unwrap();
    assert!(!store.behind());
    assert!(journal(dir.path()).is_empty());
    let reader = SqliteReader::open(dir.path()).unwrap();
    let one = reader.task(1).unwrap().unwrap();
    assert_eq!((one.state, one.attempts.len()), (TaskState::Assigned, 1));
    assert!(reader.task(1 + JOURNAL_MAX_OPS as u64).unwrap().is_some());
}

#[test]
fn a_record_that_is_whole_but_unreadable_is_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Journaled::open(dir.path(), Sync::Normal).unwrap();
    store.write(&[Op::Insert(task(1))]).unwrap();
    crash(store);
    // A record with a right checksum whose ops this build cannot read.
    let body = br#"[{"Launched":{"id":1}}]"#;
    let mut record = Vec::from(2u64.to_le_bytes());
    record.extend_from_slice(body);
    let mut bytes = Vec::from((record.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&record).to_le_bytes());
    bytes.extend_from_slice(&record);
    let path = dir.path().join(JOURNAL_FILE);
    let mut all = std::fs::read(&path).unwrap();
    all.extend_from_slice(&bytes);
    std::fs::write(&path, &all).unwrap();
    let err = Journaled::open(dir.path(), Sync::Normal).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("journal record 2"), "{err}");
}

#[test]
fn the_writer_reports_a_journaled_commit_durable_then_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = Journaled::open(dir.path(), Sync::Normal).unwrap();
    let (tx, rx) = mpsc::channel::<Committed>();
    let mut writer = Writer::spawn(Box::new(store), 10, 1000, move |c| {
        let _ = tx.send(c.unwrap());
    })
    .unwrap();
    writer.commit_here(1, vec![Op::Insert(task(1))]).unwrap();
    let deadline = Duration::from_secs(10);
    let first = rx.recv_timeout(deadline).unwrap();
    assert_eq!((first.seq, first.visible, first.ops), (1, 0, 1));
    // Nothing more is written: the writer thread applies it by the delay.
    let then = rx.recv_timeout(deadline).unwrap();
    assert_eq!((then.seq, then.visible, then.ops), (1, 1, 0));
    let reader = SqliteReader::open(dir.path()).unwrap();
    assert!(reader.task(1).unwrap().is_some());
    // A batch sent to the writer thread is reported the same way.
    writer.send(2, vec![assigned(1)]).unwrap();
    let sent = rx.recv_timeout(deadline).unwrap();
    assert_eq!((sent.seq, sent.visible), (2, 1));
    let applied = rx.recv_timeout(deadline).unwrap();
    assert_eq!((applied.seq, applied.visible), (2, 2));
    writer.close();
}
