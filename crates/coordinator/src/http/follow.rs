//! Following one task from an HTTP request: its streamed deltas as they
//! come, then its outcome once the store holds it — what the REST event
//! stream and the OpenAI API's `stream: true` are built on.
//!
//! The core hands deltas over a bounded channel (a follower that lags loses
//! some; the result is the complete answer) and the outcome over a oneshot.
//! Every delta is queued before the outcome is sent (one thread, in order),
//! so the follower reads the channel first and the outcome only when the
//! channel is empty: no delta comes after the end.

use axum::http::StatusCode;
use proto::{ErrorCode, TaskRequest};
use sched::TaskId;
use tokio::sync::{mpsc, oneshot};

use super::{Api, ApiError};
use crate::core::requests::{Awaited, Finished, Submitted};
use crate::core::stream::{Delta, Watch};
use crate::core::{ApiRequest, Input};

/// One step of a followed task.
#[derive(Debug)]
pub(crate) enum Step {
    Delta(Delta),
    /// The outcome, durable.
    Finished(Finished),
}

/// Why following stopped without an outcome.
#[derive(Debug)]
pub(crate) enum Lost {
    /// The coordinator holds no such task.
    Unknown,
    /// Too many requests follow tasks already.
    Busy,
    /// The coordinator is going away, or its store failed.
    Unavailable,
}

impl Lost {
    pub fn into_api_error(self, task: &str) -> ApiError {
        match self {
            Lost::Unknown => ApiError::not_found(format!("no task `{task}` is known")).task(task),
            Lost::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::BUSY.as_str(),
                "too many requests follow tasks; retry shortly",
            )
            .retry_after(1.0),
            Lost::Unavailable => ApiError::unavailable(),
        }
    }
}

/// A task followed by this request.
pub(crate) struct Follower {
    api: Api,
    task: TaskId,
    progress: mpsc::Receiver<Delta>,
    outcome: Option<oneshot::Receiver<Awaited>>,
    /// Cancel the task when the request goes away before its end (the
    /// request is the task: an OpenAI completion).
    cancel_on_drop: bool,
    /// The task has ended (or is unknown): nothing to cancel.
    ended: bool,
}

impl Follower {
    /// Follows a task already submitted.
    pub async fn follow(api: &Api, task: TaskId) -> Result<Follower, ApiError> {
        let (watch, channels) = channels(api);
        api.core_send(ApiRequest::Follow { task, watch }).await?;
        Ok(Follower::new(api, task, channels, false))
    }

    /// Submits `req` for `owner` and follows it from the same step; the
    /// acknowledgement is durable when this returns. The task is cancelled
    /// if the follower is dropped before its end.
    pub async fn submit(
        api: &Api,
        req: TaskRequest,
        owner: sched::Owner,
    ) -> Result<Result<(Follower, Submitted), proto::ErrorMsg>, ApiError> {
        let (watch, channels) = channels(api);
        let submitted =
            api.request(|reply| ApiRequest::SubmitWatched { req, owner, watch, reply }).await?;
        let submitted = match submitted {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let task = submitted.accepted.id.parse().map_err(|_| ApiError::unavailable())?;
        let follower = Follower::new(api, task, channels, true);
        api.durable(submitted.seq).await?;
        Ok(Ok((follower, submitted)))
    }

    fn new(
        api: &Api,
        task: TaskId,
        (progress, outcome): Channels,
        cancel_on_drop: bool,
    ) -> Follower {
        let outcome = Some(outcome);
        Follower { api: api.clone(), task, progress, outcome, cancel_on_drop, ended: false }
    }

    pub fn task(&self) -> TaskId {
        self.task
    }

    /// The next delta, or the outcome; `Ok(None)` after the outcome.
    pub async fn next(&mut self) -> Result<Option<Step>, Lost> {
        let Some(outcome) = self.outcome.as_mut() else { return Ok(None) };
        let answer = tokio::select! {
            biased;
            Some(delta) = self.progress.recv() => return Ok(Some(Step::Delta(delta))),
            answer = outcome => answer,
        };
        self.outcome = None;
        self.ended = matches!(answer, Ok(Awaited::Finished(_) | Awaited::Unknown));
        match answer {
            Ok(Awaited::Finished(done)) => {
                // What goes out must be durable, as for results pushed to gamers.
                self.api.durable(done.seq).await.map_err(|_| Lost::Unavailable)?;
                Ok(Some(Step::Finished(done)))
            }
            Ok(Awaited::Unknown) => Err(Lost::Unknown),
            Ok(Awaited::Busy) => Err(Lost::Busy),
            Err(_) => Err(Lost::Unavailable),
        }
    }
}

/// The follower's ends of a [`Watch`].
type Channels = (mpsc::Receiver<Delta>, oneshot::Receiver<Awaited>);

fn channels(api: &Api) -> (Watch, Channels) {
    let (progress_tx, progress) = mpsc::channel(api.config.limits.stream_buffer.max(1));
    let (outcome_tx, outcome) = oneshot::channel();
    (Watch { progress: progress_tx, outcome: outcome_tx }, (progress, outcome))
}

impl Drop for Follower {
    fn drop(&mut self) {
        if self.cancel_on_drop && !self.ended {
            // The request went away (the client hung up): the work it asked
            // for is not wanted any more. Best-effort, never waiting.
            let (reply, _) = oneshot::channel();
            let cancel = ApiRequest::Cancel { task: self.task, reply };
            let _ = self.api.core.try_send(Input::Request(cancel));
        }
    }
}
