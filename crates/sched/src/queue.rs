//! The task queue, partitioned by requirement class.
//!
//! Tasks with the same type and requirements form a class, and each class is
//! an ordered map keyed by (priority descending, sequence ascending). Sequence
//! numbers are global, so order across classes is still "higher priority
//! first, then first come first served". Requeued tasks take sequence numbers
//! below every other, which puts them at the front of their priority level.
//!
//! The partition is what keeps placement cheap when some tasks cannot run
//! anywhere yet: placement looks at one head per class, never scanning past a
//! long run of tasks no free peer can take.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::task::Requirements;
use crate::types::TaskId;

/// What a peer must offer to run a task: its type and requirements.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Class {
    pub task_type: Arc<str>,
    pub requirements: Requirements,
}

/// The order of a queued task: higher priority first, then lower sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    neg_priority: i64,
    seq: i64,
}

impl Key {
    pub fn priority(self) -> i32 {
        // neg_priority was made from an i32, so it fits back.
        i32::try_from(-self.neg_priority).unwrap_or(i32::MAX)
    }
}

/// Where a task sits in the queue, so that it can be removed (cancel, deadline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePos {
    pub class: Arc<Class>,
    pub key: Key,
}

/// The queue of tasks waiting for a peer.
#[derive(Debug, Default)]
pub struct Queue {
    classes: BTreeMap<Arc<Class>, BTreeMap<Key, TaskId>>,
    len: usize,
    next_back: i64,
    next_front: i64,
}

/// The deepest queue position counted (a task further back reports this).
pub const POSITION_CAP: usize = 10_000;

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    /// Queues a task behind others of its priority, or, with `front`, ahead
    /// of them (a requeue after a failure).
    pub fn push(&mut self, class: Arc<Class>, priority: i32, id: TaskId, front: bool) -> QueuePos {
        let seq = if front {
            self.next_front -= 1;
            self.next_front
        } else {
            self.next_back += 1;
            self.next_back
        };
        let key = Key { neg_priority: -i64::from(priority), seq };
        self.classes.entry(Arc::clone(&class)).or_default().insert(key, id);
        self.len += 1;
        QueuePos { class, key }
    }

    /// Removes a task; false when it was not there.
    pub fn remove(&mut self, pos: &QueuePos) -> bool {
        let Some(entries) = self.classes.get_mut(&pos.class) else { return false };
        let removed = entries.remove(&pos.key).is_some();
        if entries.is_empty() {
            self.classes.remove(&pos.class);
        }
        if removed {
            self.len -= 1;
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every non-empty class with its tasks in order.
    pub fn classes(&self) -> impl Iterator<Item = (&Arc<Class>, &BTreeMap<Key, TaskId>)> {
        self.classes.iter()
    }

    /// Tasks of one class, in order.
    pub fn class_len(&self, class: &Class) -> usize {
        self.classes.get(class).map_or(0, BTreeMap::len)
    }

    /// The position of a task among all queued tasks (0 = next), by the
    /// global order, counted up to [`POSITION_CAP`]: a status query costs
    /// the core at most that many steps however deep the queue.
    pub fn position(&self, pos: &QueuePos) -> usize {
        let mut ahead = 0;
        for entries in self.classes.values() {
            ahead += entries.range(..pos.key).take(POSITION_CAP - ahead).count();
            if ahead == POSITION_CAP {
                break;
            }
        }
        ahead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(t: &str) -> Arc<Class> {
        Arc::new(Class { task_type: t.into(), requirements: Requirements::default() })
    }

    fn order(q: &Queue) -> Vec<u64> {
        let mut all: Vec<(Key, TaskId)> =
            q.classes().flat_map(|(_, e)| e.iter().map(|(k, id)| (*k, *id))).collect();
        all.sort();
        all.into_iter().map(|(_, id)| id.0).collect()
    }

    #[test]
    fn positions_are_counted_across_classes_up_to_the_cap() {
        let mut q = Queue::new();
        let (a, b) = (class("a"), class("b"));
        let mut last = None;
        for i in 0..(POSITION_CAP as u64 + 10) {
            let c = if i % 2 == 0 { &a } else { &b };
            last = Some(q.push(c.clone(), 1, TaskId(i), false));
        }
        let first = q.push(a.clone(), 5, TaskId(99_999), false);
        assert_eq!(q.position(&first), 0, "the higher priority goes first");
        assert_eq!(q.position(&last.unwrap()), POSITION_CAP);
        let third = q.push(b.clone(), 5, TaskId(100_000), false);
        assert_eq!(q.position(&third), 1);
    }

    #[test]
    fn priority_then_fifo_then_front() {
        let mut q = Queue::new();
        let (a, b) = (class("a"), class("b"));
        q.push(a.clone(), 1, TaskId(1), false);
        q.push(b.clone(), 1, TaskId(2), false);
        q.push(a.clone(), 5, TaskId(3), false);
        q.push(b.clone(), 1, TaskId(4), true);
        q.push(a.clone(), 0, TaskId(5), true);
        assert_eq!(order(&q), vec![3, 4, 1, 2, 5]);
        assert_eq!(q.len(), 5);
    }

    #[test]
    fn remove_and_position() {
        let mut q = Queue::new();
        let a = class("a");
        let p1 = q.push(a.clone(), 1, TaskId(1), false);
        let p2 = q.push(a.clone(), 1, TaskId(2), false);
        let p3 = q.push(class("b"), 1, TaskId(3), false);
        assert_eq!((q.position(&p1), q.position(&p2), q.position(&p3)), (0, 1, 2));
        assert!(q.remove(&p1));
        assert!(!q.remove(&p1));
        assert_eq!(q.position(&p3), 1);
        assert!(q.remove(&p2));
        assert_eq!(q.class_len(&a), 0);
        assert_eq!(q.classes().count(), 1);
        assert_eq!(p2.key.priority(), 1);
    }
}
