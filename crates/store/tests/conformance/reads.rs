//! The read API: filters, keyset paging, one task, counts — the same on
//! both backends.

use store::{
    AttemptEnd, Count, ErrorRow, MAX_PAGE, Op, Page, Store, StoreReader, TaskFilter, TaskState,
};

use crate::support::{Backend, bare_task, task};

both_backends!(
    filters_select_the_same_tasks,
    pages_walk_the_list_newest_first_without_gaps,
    one_task_comes_with_its_attempts,
    counts_are_by_state_and_type,
    a_reader_sees_each_commit,
);

/// Tasks 1..=40: owners alternate, types cycle a/b/c, submitted 1 000 ms
/// apart; every 4th assigned to p1 then requeued and assigned to p2; every
/// 5th completed on p3. Written in two batches with the store's upkeep
/// between them, so that SQLite's reads run across tasks whose read keys
/// were copied (1..=25) and tasks whose keys were not (26..=40).
fn fixture(b: &Backend) -> Box<dyn Store> {
    let mut s = b.open();
    let mut ops = Vec::new();
    for id in 1..=40u64 {
        if id == 26 {
            s.write(&std::mem::take(&mut ops)).unwrap();
            s.upkeep().unwrap();
        }
        let mut t = if id % 2 == 0 { task(id) } else { bare_task(id) };
        t.task_type = ["a", "b", "c"][(id % 3) as usize].into();
        t.submitted_at_ms = 1_000 * id as i64;
        ops.push(Op::Insert(t));
        if id % 4 == 0 {
            ops.push(Op::Assigned { id, attempt: 1, peer: "p1".into(), at_ms: 1 });
            ops.push(Op::Requeued {
                id,
                attempt: 1,
                end: AttemptEnd::PeerLost,
                failures: 1,
                error: Some(ErrorRow { code: "peer_lost".into(), message: "gone".into() }),
                at_ms: 2,
            });
            ops.push(Op::Assigned { id, attempt: 2, peer: "p2".into(), at_ms: 3 });
        } else if id % 5 == 0 {
            ops.push(Op::Assigned { id, attempt: 1, peer: "p3".into(), at_ms: 1 });
            ops.push(Op::Finished {
                id,
                state: TaskState::Completed,
                result: Some("1".into()),
                error: None,
                end: Some((1, AttemptEnd::Completed)),
                at_ms: 4,
                delivered: true,
                failures: 0,
            });
        }
    }
    s.write(&ops).unwrap();
    s
}

fn ids(reader: &dyn StoreReader, filter: &TaskFilter) -> Vec<u64> {
    let page = Page { before: None, limit: MAX_PAGE, skip: 0 };
    let ids: Vec<u64> = reader.tasks(filter, page).unwrap().iter().map(|t| t.task.id).collect();
    // A count by the same filter agrees with the list.
    assert_eq!(reader.count(filter).unwrap(), ids.len() as u64, "{filter:?}");
    ids
}

/// The expected ids, newest first.
fn want(pred: impl Fn(u64) -> bool) -> Vec<u64> {
    (1..=40u64).rev().filter(|id| pred(*id)).collect()
}

fn filters_select_the_same_tasks(b: &Backend) {
    let _store = fixture(b);
    let r = b.reader();
    let f = TaskFilter::default;
    assert_eq!(ids(r.as_ref(), &f()), want(|_| true));
    let by_state = |s: &str| TaskFilter { state: Some(s.parse().unwrap()), ..f() };
    assert_eq!(ids(r.as_ref(), &by_state("assigned")), want(|id| id % 4 == 0));
    assert_eq!(ids(r.as_ref(), &by_state("completed")), want(|id| id % 4 != 0 && id % 5 == 0));
    assert_eq!(ids(r.as_ref(), &by_state("queued")), want(|id| id % 4 != 0 && id % 5 != 0));
    let typed = TaskFilter { task_type: Some("b".into()), ..f() };
    assert_eq!(ids(r.as_ref(), &typed), want(|id| id % 3 == 1));
    let owned = TaskFilter { owner: Some("api".into()), ..f() };
    assert_eq!(ids(r.as_ref(), &owned), want(|id| id % 2 == 1));
    // Any attempt counts: p1 lost its tasks, which are still "by" p1.
    let worker = |w: &str| TaskFilter { worker: Some(w.into()), ..f() };
    assert_eq!(ids(r.as_ref(), &worker("p1")), want(|id| id % 4 == 0));
    assert_eq!(ids(r.as_ref(), &worker("p3")), want(|id| id % 4 != 0 && id % 5 == 0));
    assert_eq!(ids(r.as_ref(), &worker("nobody")), Vec::<u64>::new());
    let window =
        TaskFilter { submitted_from_ms: Some(10_000), submitted_to_ms: Some(20_000), ..f() };
    assert_eq!(ids(r.as_ref(), &window), want(|id| (10..20).contains(&id)));
    let all = TaskFilter {
        state: Some(store::TaskState::Assigned),
        task_type: Some("a".into()),
        owner: Some("gamer:g1".into()),
        worker: Some("p2".into()),
        submitted_from_ms: Some(1),
        submitted_to_ms: Some(41_000),
    };
    assert_eq!(ids(r.as_ref(), &all), want(|id| id % 4 == 0 && id % 3 == 0));
}

fn pages_walk_the_list_newest_first_without_gaps(b: &Backend) {
    let _store = fixture(b);
    let r = b.reader();
    let filter = TaskFilter { owner: Some("gamer:g1".into()), ..TaskFilter::default() };
    let (mut seen, mut before) = (Vec::new(), None);
    loop {
        let page = r.tasks(&filter, Page { before, limit: 3, skip: 0 }).unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        before = Some(last.task.id);
        seen.extend(page.iter().map(|t| t.task.id));
    }
    assert_eq!(seen, want(|id| id % 2 == 0));
    // Offset paging skips rows after the cursor.
    let skipped = r.tasks(&filter, Page { before: None, limit: 2, skip: 3 }).unwrap();
    let skipped: Vec<u64> = skipped.iter().map(|t| t.task.id).collect();
    assert_eq!(skipped, seen[3..5].to_vec());
    // Across the boundary of SQLite's keyed tasks (26..=40 are not), from
    // either side.
    for (skip, limit) in [(6, 4), (8, 2), (10, 3), (0, 20)] {
        let got = r.tasks(&filter, Page { before: None, limit, skip }).unwrap();
        let got: Vec<u64> = got.iter().map(|t| t.task.id).collect();
        let end = (skip + limit) as usize;
        assert_eq!(got, seen[skip as usize..end.min(seen.len())].to_vec(), "skip {skip}");
    }
    let below = r.tasks(&filter, Page { before: Some(27), limit: 3, skip: 1 }).unwrap();
    let below: Vec<u64> = below.iter().map(|t| t.task.id).collect();
    assert_eq!(below, vec![24, 22, 20]);
    // A page is never larger than MAX_PAGE, whatever is asked.
    assert_eq!(
        r.tasks(&TaskFilter::default(), Page { before: None, limit: u32::MAX, skip: 0 })
            .unwrap()
            .len(),
        40
    );
    assert!(
        r.tasks(&TaskFilter::default(), Page { before: Some(1), limit: 10, skip: 0 })
            .unwrap()
            .is_empty()
    );
}

fn one_task_comes_with_its_attempts(b: &Backend) {
    let mut store = fixture(b);
    let loaded = store.load().unwrap();
    let r = b.reader();
    for id in [4, 5, 7] {
        let want = loaded.tasks.iter().find(|t| t.task.id == id).unwrap();
        assert_eq!(r.task(id).unwrap().as_ref(), Some(want), "task {id}");
    }
    assert_eq!(r.task(4).unwrap().unwrap().attempts.len(), 2);
    assert_eq!(r.task(41).unwrap(), None);
    assert_eq!(r.task(u64::MAX).unwrap(), None);
}

fn counts_are_by_state_and_type(b: &Backend) {
    let _store = fixture(b);
    let counts = b.reader().counts().unwrap();
    let mut want: Vec<Count> = Vec::new();
    for id in 1..=40u64 {
        let state = if id % 4 == 0 {
            "assigned"
        } else if id % 5 == 0 {
            "completed"
        } else {
            "queued"
        };
        let task_type = ["a", "b", "c"][(id % 3) as usize];
        match want.iter_mut().find(|c| c.state == state && c.task_type == task_type) {
            Some(c) => c.tasks += 1,
            None => want.push(Count { state: state.into(), task_type: task_type.into(), tasks: 1 }),
        }
    }
    want.sort_by(|a, b| (&a.state, &a.task_type).cmp(&(&b.state, &b.task_type)));
    assert_eq!(counts, want);
}

fn a_reader_sees_each_commit(b: &Backend) {
    let mut store = b.open();
    let r = b.reader();
    assert!(r.counts().unwrap().is_empty());
    for id in 1..=3u64 {
        store.write(&[Op::Insert(task(id))]).unwrap();
        assert_eq!(
            r.tasks(&TaskFilter::default(), Page { before: None, limit: 10, skip: 0 })
                .unwrap()
                .len() as u64,
            id
        );
    }
    // A filtered read sees them too, before and after their read keys are
    // copied (SQLite's upkeep), and not once deleted.
    let owned = TaskFilter { owner: Some(task(1).owner), ..TaskFilter::default() };
    assert_eq!(r.count(&owned).unwrap(), 3);
    store.upkeep().unwrap();
    assert_eq!(r.count(&owned).unwrap(), 3);
    store.write(&[Op::Deleted { ids: vec![2] }]).unwrap();
    assert_eq!(r.task(2).unwrap(), None);
    let left = r.tasks(&owned, Page::first(10)).unwrap();
    assert_eq!(left.iter().map(|t| t.task.id).collect::<Vec<_>>(), vec![3, 1]);
}
