//! Running one task off the async runtime, with a time limit, and turning
//! whatever happens — a result, an executor error, a panic, a hang — into a
//! report for the coordinator. A panicking executor fails its task, never the
//! worker.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use exec::{ExecError, Executor, ProgressSink, RunContext};
use proto::{Json, TaskFailure};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How much longer than its limit a task may run before the worker reports it
/// timed out without waiting for the executor (which should have stopped).
const HANG_GRACE: Duration = Duration::from_secs(1);

/// What a running task tells the session.
#[derive(Debug)]
pub(crate) enum Report {
    /// The task is still running after the notice delay.
    Started { task_id: String, attempt: u32, run: u64 },
    /// A task's progress buffer has something to send (once per flush);
    /// `first` when the task has sent none yet (its first token: time to
    /// first token does not wait for the coalescing interval).
    Progress { first: bool },
    Finished {
        task_id: String,
        attempt: u32,
        /// The run's number on this worker ([`Job::run`]).
        run: u64,
        outcome: Result<Json, TaskFailure>,
        elapsed: Duration,
    },
}

/// One task to run.
pub(crate) struct Job {
    pub task_id: String,
    pub attempt: u32,
    /// This run's number on the worker, never reused: a run the worker
    /// stopped reports nothing, even when the coordinator has since given
    /// it the same task and attempt again (after a crash lost the attempt).
    pub run: u64,
    pub input: Json,
    pub limit: Duration,
    pub notice_after: Duration,
    /// Where the executor's streamed output goes.
    pub progress: Arc<dyn ProgressSink>,
}

/// Starts `job` on a blocking thread; returns the context that cancels it.
pub(crate) fn spawn(
    executor: Arc<dyn Executor>,
    job: Job,
    tx: mpsc::UnboundedSender<Report>,
) -> RunContext {
    let started = Instant::now();
    let ctx = RunContext::new(Some(started.into_std() + job.limit))
        .with_progress(Arc::clone(&job.progress));
    let run_ctx = ctx.clone();
    let supervisor_ctx = ctx.clone();
    let input = Json::clone(&job.input);
    tokio::spawn(async move {
        let mut handle = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(AssertUnwindSafe(|| executor.run(input.get(), &run_ctx)))
        });
        let notice = tokio::time::sleep(job.notice_after);
        let hang = tokio::time::sleep(job.limit + HANG_GRACE);
        tokio::pin!(notice, hang);
        let mut noticed = false;
        let outcome = loop {
            tokio::select! {
                joined = &mut handle => break outcome_of(joined),
                _ = &mut notice, if !noticed => {
                    noticed = true;
                    let (task_id, attempt, run) = (job.task_id.clone(), job.attempt, job.run);
                    let _ = tx.send(Report::Started { task_id, attempt, run });
                }
                _ = &mut hang => {
                    supervisor_ctx.cancel();
                    break Err(failure(&ExecError::TimedOut));
                }
            }
        };
        let elapsed = started.elapsed();
        let _ = tx.send(Report::Finished {
            task_id: job.task_id,
            attempt: job.attempt,
            run: job.run,
            outcome,
            elapsed,
        });
    });
    ctx
}

type Joined = Result<std::thread::Result<Result<exec::Output, ExecError>>, tokio::task::JoinError>;

fn outcome_of(joined: Joined) -> Result<Json, TaskFailure> {
    match joined {
        Ok(Ok(Ok(output))) => Ok(Json::from(output)),
        Ok(Ok(Err(e))) => Err(failure(&e)),
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(TaskFailure {
                code: proto::FailureCode::EXECUTOR_PANICKED,
                message: format!("the executor panicked: {what}"),
                retryable: Some(false),
            })
        }
        Err(e) => Err(TaskFailure {
            code: proto::FailureCode::INTERNAL,
            message: format!("the task thread failed: {e}"),
            retryable: Some(true),
        }),
    }
}

/// The wire form of an executor error.
pub(crate) fn failure(e: &ExecError) -> TaskFailure {
    TaskFailure { code: e.code(), message: e.to_string(), retryable: Some(e.retryable()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panics;

    impl Executor for Panics {
        fn task_type(&self) -> &str {
            "panics"
        }

        fn run(&self, _: &str, _: &RunContext) -> Result<exec::Output, ExecError> {
            panic!("boom")
        }
    }

    struct Hangs;

    impl Executor for Hangs {
        fn task_type(&self) -> &str {
            "hangs"
        }

        fn run(&self, _: &str, ctx: &RunContext) -> Result<exec::Output, ExecError> {
            // Ignores its deadline, but stops when cancelled.
            while ctx.check() != Err(ExecError::Cancelled) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(ExecError::Cancelled)
        }
    }

    struct NoProgress;

    impl ProgressSink for NoProgress {
        fn append(&self, _: &str, _: u32) {}
    }

    fn job(limit_ms: u64) -> Job {
        Job {
            task_id: "t-1".into(),
            attempt: 1,
            run: 1,
            input: proto::json("{}").unwrap(),
            limit: Duration::from_millis(limit_ms),
            notice_after: Duration::from_secs(60),
            progress: Arc::new(NoProgress),
        }
    }

    async fn finished(rx: &mut mpsc::UnboundedReceiver<Report>) -> Result<Json, TaskFailure> {
        loop {
            if let Some(Report::Finished { outcome, .. }) = rx.recv().await {
                return outcome;
            }
        }
    }

    #[tokio::test]
    async fn a_panic_fails_the_task_not_the_worker() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        spawn(Arc::new(Panics), job(10_000), tx);
        let err = finished(&mut rx).await.unwrap_err();
        assert_eq!(err.code, "executor_panicked");
        assert!(err.message.contains("boom"));
        assert_eq!(err.retryable, Some(false));
    }

    #[tokio::test]
    async fn a_task_ignoring_its_deadline_is_reported_timed_out_and_cancelled() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = spawn(Arc::new(Hangs), job(10), tx);
        let err = finished(&mut rx).await.unwrap_err();
        assert_eq!(err.code, "timed_out");
        assert_eq!(ctx.check(), Err(ExecError::Cancelled));
    }

    #[tokio::test]
    async fn results_and_errors_come_back() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut j = job(10_000);
        j.input = proto::json(r#"{"a":1}"#).unwrap();
        spawn(Arc::new(exec::Echo), j, tx.clone());
        assert_eq!(finished(&mut rx).await.unwrap().get(), r#"{"a":1}"#);
        let mut j = job(10_000);
        j.input = proto::json(r#"{"ms":"x"}"#).unwrap();
        spawn(Arc::new(exec::Sleep::default()), j, tx);
        assert_eq!(finished(&mut rx).await.unwrap_err().code, "invalid_input");
    }
}
