//! What the HTTP API asks of the core: a closed set of typed requests, all
//! answered here, on the core loop, in the order of history (the shape of
//! rust-analyzer's `handlers/dispatch.rs`).
//!
//! Only what needs a decision or the scheduler's live state comes here:
//! submitting, cancelling, waiting for an outcome, approving a worker,
//! switching the strategy, and the live details of one task. Health, metrics
//! and workers are read from the published
//! [`Snapshot`](crate::snapshot::Snapshot) instead, and task lists from the
//! store (`reads.rs`), never by walking state on the loop.

use std::collections::HashMap;

use codes::WorkerStatus;
use proto::{ErrorMsg, Json, TaskAccepted, TaskRequest};
use sched::{CancelError, Outcome, Owner, Strategy, Task, TaskId, TaskState};
use tokio::sync::oneshot;

use super::Core;
use super::stream::Watch;
use crate::clock::Clock;

/// Where the answer goes.
pub(crate) type Reply<T> = oneshot::Sender<T>;

/// A request of the HTTP API.
pub(crate) enum ApiRequest {
    /// Submit a task for `owner` (the operator `api`, or an API key),
    /// within that owner's quotas (see `quota.rs`).
    Submit { req: TaskRequest, owner: Owner, reply: Reply<Result<Submitted, ErrorMsg>> },
    /// Cancel a task, whoever submitted it (the HTTP layer checked that its
    /// caller may).
    Cancel { task: TaskId, reply: Reply<Result<(), CancelError>> },
    /// Who submitted a task the scheduler holds (`None`: it holds none).
    OwnerOf { task: TaskId, reply: Reply<Option<Owner>> },
    /// Answer once the task has an outcome (at once when it has one).
    AwaitOutcome { task: TaskId, reply: Reply<Awaited> },
    /// The task as the scheduler holds it now.
    Task { task: TaskId, reply: Reply<Option<TaskNow>> },
    /// The store batch that holds all the scheduler has done so far (a read
    /// of the store that waits for it sees every change already told).
    Observed { reply: Reply<u64> },
    /// Approve a worker id with the SHA-256 of its credential; the answer is
    /// the store batch that makes the approval durable.
    ApproveWorker { worker_id: String, credential_sha256: String, reply: Reply<u64> },
    /// Revoke a worker's credential; the answer is the store batch that
    /// makes it durable, or `None` when it had none.
    RevokeWorker { worker_id: String, reply: Reply<Option<u64>> },
    /// Store a rotated join secret (`kind`: `worker` or `client`); the
    /// answer is the store batch that makes it durable.
    RecordJoinSecret { kind: &'static str, secret: String, reply: Reply<u64> },
    /// Switch the placement strategy; the answer is the previous one.
    SetStrategy { strategy: Strategy, reply: Reply<Strategy> },
    /// An owner's control: pause, resume, drain, retry, bulk actions.
    Control(super::controls::Control),
    /// Lift a worker's quarantine.
    ClearWorker { worker_id: String, reply: Reply<Result<ClearedNow, sched::ClearError>> },
    /// Submit like `Submit`, and follow the accepted task's progress and
    /// outcome through `watch` from the same step (nothing is missed).
    SubmitWatched {
        req: TaskRequest,
        owner: Owner,
        watch: Watch,
        reply: Reply<Result<Submitted, ErrorMsg>>,
    },
    /// Follow a task's progress (when it streams) and its outcome.
    Follow { task: TaskId, watch: Watch },
}

/// A submission the core accepted.
#[derive(Debug)]
pub(crate) struct Submitted {
    pub accepted: TaskAccepted,
    /// The store batch that makes it durable (0 without a store).
    pub seq: u64,
}

/// What [`ApiRequest::ClearWorker`] did.
#[derive(Debug)]
pub(crate) struct ClearedNow {
    /// It was quarantined.
    pub was: bool,
    /// Its status, when it is connected.
    pub status: Option<WorkerStatus>,
    /// The store batch that makes the clearing durable.
    pub seq: u64,
}

/// The answer to [`ApiRequest::AwaitOutcome`].
#[derive(Debug)]
pub(crate) enum Awaited {
    /// The coordinator holds no such task.
    Unknown,
    Finished(Finished),
    /// Too many requests already wait for results.
    Busy,
}

/// A task's outcome, for the API.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub client_task_id: String,
    pub outcome: Outcome<Json>,
    pub attempts: u32,
    /// The store batch that makes the outcome durable.
    pub seq: u64,
}

/// A task as the scheduler holds it, for the API.
#[derive(Debug, Clone)]
pub(crate) struct TaskNow {
    pub id: TaskId,
    pub client_task_id: String,
    pub owner: String,
    pub task_type: String,
    pub status: TaskState,
    pub priority: i32,
    pub attempt: u32,
    pub failures: u32,
    pub worker_id: Option<String>,
    pub waiting_reason: Option<String>,
    pub queue_position: Option<usize>,
    /// Unix milliseconds.
    pub submitted_at_ms: i64,
    pub assigned_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub last_error: Option<sched::Failure>,
    pub attempts: Vec<AttemptNow>,
    /// Its replicas and their verdict, when it is verified.
    pub verification: Option<sched::verify::Verification<Json>>,
    /// The store batch that holds this state: an answer built from it, or a
    /// read of the store to go with it, waits for that batch.
    pub seq: u64,
}

/// One attempt of a task, for the API.
#[derive(Debug, Clone)]
pub(crate) struct AttemptNow {
    pub attempt: u32,
    pub worker_id: String,
    pub assigned_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub end: Option<codes::AttemptEnd>,
}

/// HTTP requests waiting for tasks to finish, bounded.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_task: HashMap<TaskId, Vec<Reply<Awaited>>>,
    count: usize,
}

impl Waiters {
    /// Registers a waiter, or gives it back when `max` already wait.
    fn add(
        &mut self,
        task: TaskId,
        reply: Reply<Awaited>,
        max: usize,
    ) -> Result<(), Reply<Awaited>> {
        if self.count >= max {
            self.prune();
        }
        if self.count >= max {
            return Err(reply);
        }
        self.by_task.entry(task).or_default().push(reply);
        self.count += 1;
        Ok(())
    }

    /// Drops the waiters whose requests gave up.
    fn prune(&mut self) {
        self.by_task.retain(|_, list| {
            list.retain(|w| !w.is_closed());
            !list.is_empty()
        });
        self.count = self.by_task.values().map(Vec::len).sum();
    }

    /// Answers everyone waiting for `task`; true when anyone was.
    pub fn finished(&mut self, task: TaskId, done: &Finished) -> bool {
        let Some(list) = self.by_task.remove(&task) else { return false };
        self.count -= list.len();
        for w in list {
            let _ = w.send(Awaited::Finished(done.clone()));
        }
        true
    }
}

impl Core {
    /// A submission over HTTP, charged to its owner; answered with the
    /// store batch that holds it.
    fn submit(&mut self, req: TaskRequest, owner: Owner) -> Result<Submitted, ErrorMsg> {
        let clients = crate::quota::clients(&owner, None);
        let accepted = crate::quota::accept(self, clients, owner, None, req)?;
        Ok(Submitted { accepted, seq: self.observer.appended() })
    }

    /// Handles one request of the API: the one place they are decided.
    pub(crate) fn handle_request(&mut self, request: ApiRequest) {
        self.publisher.answered_api();
        match request {
            ApiRequest::Submit { req, owner, reply } => {
                let _ = reply.send(self.submit(req, owner));
            }
            ApiRequest::Cancel { task, reply } => {
                let _ = reply.send(self.cancel_any(task));
            }
            ApiRequest::Control(control) => self.handle_control(control),
            ApiRequest::AwaitOutcome { task, reply } => self.await_outcome(task, reply),
            ApiRequest::OwnerOf { task, reply } => {
                let held = self.sched.task(task).map(|t| t.spec());
                let _ = reply.send(held.filter(|s| !s.kind.is_hidden()).map(|s| s.owner.clone()));
            }
            ApiRequest::Task { task, reply } => {
                let _ = reply.send(self.sched.task(task).map(|t| self.task_now(t)));
            }
            ApiRequest::Observed { reply } => {
                let _ = reply.send(self.observer.appended());
            }
            ApiRequest::ApproveWorker { worker_id, credential_sha256, reply } => {
                let _ = reply.send(crate::identity::approve(self, &worker_id, credential_sha256));
            }
            ApiRequest::RevokeWorker { worker_id, reply } => {
                let _ = reply.send(crate::identity::revoke(self, &worker_id));
            }
            ApiRequest::RecordJoinSecret { kind, secret, reply } => {
                let at_ms = crate::clock::Clock::unix_ms(self.now());
                let kind = kind.to_owned();
                self.observer.record(store::Op::JoinSecret { kind, secret, at_ms });
                self.observer.commit();
                let _ = reply.send(self.observer.appended());
            }
            ApiRequest::SetStrategy { strategy, reply } => {
                let previous = self.sched.config().strategy;
                self.sched.set_strategy(strategy);
                let _ = reply.send(previous);
            }
            ApiRequest::ClearWorker { worker_id, reply } => {
                let now = self.now();
                let cleared =
                    self.sched.handle_clear(now, &sched::PeerId::from(worker_id.as_str()));
                // The reputation it leaves goes to the store with this flush.
                self.flush();
                let interval = self.config.heartbeat_interval;
                let status = self
                    .sched
                    .peer(&worker_id)
                    .map(|p| crate::snapshot::peer_status(p, now, interval));
                let seq = self.observer.appended();
                let _ = reply.send(cleared.map(|was| ClearedNow { was, status, seq }));
            }
            ApiRequest::SubmitWatched { req, owner, watch, reply } => {
                let answer = self.submit(req, owner);
                if let Some(task) = answer.as_ref().ok().and_then(|s| s.accepted.id.parse().ok()) {
                    super::stream::follow(self, task, watch);
                }
                let _ = reply.send(answer);
            }
            ApiRequest::Follow { task, watch } => super::stream::follow(self, task, watch),
        }
    }

    pub(super) fn await_outcome(&mut self, task: TaskId, reply: Reply<Awaited>) {
        let Some(t) = self.sched.task(task) else {
            let _ = reply.send(Awaited::Unknown);
            return;
        };
        if let Some(done) = self.finished_view(t) {
            let _ = reply.send(Awaited::Finished(done));
            return;
        }
        let max = self.config.limits.max_result_waiters;
        if let Err(reply) = self.waiters.add(task, reply, max) {
            let _ = reply.send(Awaited::Busy);
        }
    }

    /// A finished task's outcome, durable once the batch observed so far is.
    pub(super) fn finished_view(&self, t: &Task<Json>) -> Option<Finished> {
        Some(Finished {
            client_task_id: t.spec().client_task_id.to_string(),
            outcome: t.outcome()?.clone(),
            attempts: t.attempt().0,
            seq: self.observer.appended(),
        })
    }

    fn task_now(&self, task: &Task<Json>) -> TaskNow {
        let unix = Clock::unix_ms;
        let spec = task.spec();
        TaskNow {
            id: task.id(),
            client_task_id: spec.client_task_id.to_string(),
            owner: spec.owner.to_string(),
            task_type: spec.task_type.to_string(),
            status: task.status(),
            priority: spec.priority,
            attempt: task.attempt().0,
            failures: task.failures(),
            // The current holder, or the one that ran the last attempt.
            worker_id: task
                .peer()
                .or_else(|| task.history().last().map(|a| &a.peer))
                .map(ToString::to_string),
            waiting_reason: self.sched.waiting_reason(task.id()),
            queue_position: self.sched.queue_position(task.id()),
            submitted_at_ms: unix(spec.submitted_at),
            // The current assignment, or the last attempt's when it ended.
            assigned_at_ms: task
                .assigned_at()
                .or_else(|| task.history().last().map(|a| a.assigned_at))
                .map(unix),
            started_at_ms: task.started_at().map(unix),
            finished_at_ms: task.finished_at().map(unix),
            last_error: task.last_error().cloned(),
            attempts: task
                .history()
                .iter()
                .map(|a| AttemptNow {
                    attempt: a.attempt.0,
                    worker_id: a.peer.to_string(),
                    assigned_at_ms: unix(a.assigned_at),
                    ended_at_ms: a.ended_at.map(unix),
                    end: a.end.as_ref().map(sched::AttemptEnd::kind),
                })
                .collect(),
            verification: task.verification().cloned(),
            seq: self.observer.appended(),
        }
    }
}
