//! `GET /cluster/tasks/{id}/stream`: one task's progress as server-sent
//! events.
//!
//! Events: `progress` for each delta of a task submitted with `stream: true`
//! (`{"task_id", "attempt", "seq", "text", "tokens"}`; a gap in `seq` means
//! deltas were lost, to this follower or before it connected), then one
//! `result` (the body of `GET /cluster/tasks/{id}/result`) or one `error`
//! (the API's error body: the task failed, was cancelled or timed out, or
//! lost its worker mid-stream: `stream_interrupted`), and the stream ends.
//! Following a task does not change it: a follower that hangs up leaves it
//! running. Deltas produced before the follower connected are not replayed;
//! the result holds the whole text.

use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::Id;
use super::follow::{Follower, Step};
use super::tasks::{check_owner, outcome_view, parse_id};
use super::{Api, ApiError, Caller};
use crate::core::ApiRequest;

/// A task's progress as server-sent events: `progress` deltas while it runs (tasks submitted with `stream: true`), then one `result` or `error` event.
#[utoipa::path(get, path = "/cluster/tasks/{id}/stream", tag = "tasks",
    params(("id" = String, Path, description = "The cluster task id, e.g. t-42")),
    responses((status = 200, description = "text/event-stream: `progress` events \
        ({task_id, attempt, seq, text, tokens}), then one `result` (as GET …/result) or `error` \
        (the error body) event", content_type = "text/event-stream"),
              (status = 404, body = super::ErrorBody), (status = 503, body = super::ErrorBody)))]
pub(super) async fn stream(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let task = parse_id(&id)?;
    check_owner(&api, &caller, task).await?;
    // An unknown task is a 404, not a stream that says so.
    let known = api.request(|reply| ApiRequest::Task { task, reply }).await?;
    if known.is_none() {
        return Err(ApiError::not_found(format!("no task `{id}` is known")).task(id));
    }
    let follower = Follower::follow(&api, task).await?;
    let events = futures_util::stream::unfold(Some(follower), |state| async move {
        let mut follower = state?;
        let task = follower.task().to_string();
        let event = match follower.next().await {
            Ok(Some(Step::Delta(d))) => {
                let data = json!({"task_id": task, "attempt": d.attempt, "seq": d.seq,
                                  "text": d.text, "tokens": d.tokens});
                let event = Event::default().event("progress").data(data.to_string());
                return Some((Ok::<_, Infallible>(event), Some(follower)));
            }
            Ok(Some(Step::Finished(done))) => match outcome_view(follower.task(), done) {
                Ok(view) => Event::default()
                    .event("result")
                    .data(serde_json::to_string(&view).unwrap_or_default()),
                Err(e) => error_event(&e),
            },
            Ok(None) => return None,
            Err(lost) => error_event(&lost.into_api_error(&task)),
        };
        Some((Ok(event), None))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

fn error_event(e: &ApiError) -> Event {
    Event::default().event("error").data(serde_json::to_string(&e.body).unwrap_or_default())
}
