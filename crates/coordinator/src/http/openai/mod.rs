//! The OpenAI-compatible API on the HTTP port: `GET /v1/models`,
//! `POST /v1/chat/completions` and `POST /v1/completions`, streamed
//! (`stream: true`: server-sent events in OpenAI's chunk format) or not.
//!
//! Each completion is one `generate` task submitted for the request's API
//! key (client role, its quotas), with every guarantee of the cluster:
//! placed by the configured strategy on a worker serving the model, retried
//! on another when its worker is lost before the first token. A streamed
//! task that loses its worker after output went out is not run again (the
//! scheduler ends it `stream_interrupted`): the stream ends with an error
//! event, so no text is ever repeated or spliced. A request whose client
//! hangs up cancels its task. The model list is read from the published
//! snapshot, never from the core. Errors have OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`. docs/OPENAI.md says
//! which fields are read, ignored or refused.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use proto::{ErrorCode, ErrorMsg, FailureCode, TaskRequest};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::extract::Id;
use super::follow::{Follower, Lost, Step};
use super::{Api, ApiError, Caller};
use crate::clock::Clock;
use crate::snapshot::Snapshot;

mod request;
mod respond;

use request::{ChatRequest, CompletionRequest, Generate};
use respond::{Chunks, Kind, Meta, generated};

/// An error in OpenAI's shape.
#[derive(Debug)]
pub(crate) struct OpenAiError {
    pub status: StatusCode,
    message: String,
    kind: &'static str,
    pub param: Option<String>,
    code: Option<String>,
    retry_after_s: Option<f64>,
}

impl OpenAiError {
    fn new(status: StatusCode, message: impl Into<String>) -> OpenAiError {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        OpenAiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    pub fn invalid(message: impl ToString) -> OpenAiError {
        OpenAiError::new(StatusCode::BAD_REQUEST, message.to_string())
    }

    fn server(message: impl Into<String>) -> OpenAiError {
        OpenAiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).code("internal")
    }

    pub fn param(mut self, param: &str) -> OpenAiError {
        self.param = Some(param.to_owned());
        self
    }

    fn code(mut self, code: &str) -> OpenAiError {
        self.code = Some(code.to_owned());
        self
    }

    fn model_not_found(model: &str) -> OpenAiError {
        OpenAiError::new(
            StatusCode::NOT_FOUND,
            format!("the model `{model}` does not exist: no connected worker given new work serves it (see GET /v1/models)"),
        )
        .param("model")
        .code("model_not_found")
    }

    /// The submission was refused: busy (the queue, the store, a quota) is
    /// 429 with a retry hint.
    fn from_refusal(e: ErrorMsg) -> OpenAiError {
        let status = if e.code == ErrorCode::BUSY {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::BAD_REQUEST
        };
        let mut err = OpenAiError::new(status, e.reason).code(e.code.as_str());
        err.retry_after_s = e.retry_after_s;
        err
    }

    /// How a task that did not complete is told.
    fn from_outcome<P>(outcome: &sched::Outcome<P>) -> OpenAiError {
        let f = outcome.failure().unwrap_or_else(|| sched::Failure::new(FailureCode::FAILED, ""));
        let code = &f.code;
        let status = match code {
            c if *c == FailureCode::INVALID_INPUT || *c == FailureCode::LIMIT_EXCEEDED => {
                StatusCode::BAD_REQUEST
            }
            c if *c == FailureCode::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            c if *c == FailureCode::STREAM_INTERRUPTED => StatusCode::BAD_GATEWAY,
            _ if outcome.status() == sched::TaskState::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = format!("the generation {}: {}", outcome.status().as_str(), f.message);
        OpenAiError::new(status, message).code(f.code.as_str())
    }

    fn from_lost(lost: Lost) -> OpenAiError {
        OpenAiError::from(lost.into_api_error("this request's task"))
    }

    /// The body: `{"error": {…}}`.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param,
                         "code": self.code}})
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> OpenAiError {
        let mut err = OpenAiError::new(e.status, e.body.detail).code(&e.body.error_code);
        err.retry_after_s = e.body.retry_after_s;
        err
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let retry = self.retry_after_s.map(|s| s.ceil().max(1.0).to_string());
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(retry) = retry.and_then(|r| r.parse().ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        resp
    }
}

/// Whether a path is the OpenAI API's (its errors take OpenAI's shape).
pub(crate) fn owns(path: &str) -> bool {
    path.starts_with("/v1/")
}

// ----------------------------------------------------------------- models

/// One model of the pool, over the workers serving it.
#[derive(Debug, Default)]
struct PoolModel {
    workers: usize,
    context_length: Option<u64>,
    size_bytes: Option<u64>,
    quantization: Option<String>,
}

/// The models workers serve for `generate`: entries declared for it, and
/// plain names of workers that declare the `generate` type — of workers
/// given new work only, so that a request for a model only a paused,
/// draining or quarantined worker holds is refused at once instead of
/// waiting in the queue for its timeout.
fn pool_models(snap: &Snapshot) -> BTreeMap<String, PoolModel> {
    let mut models: BTreeMap<String, PoolModel> = BTreeMap::new();
    for w in snap.workers.iter().filter(|w| w.takes_work()) {
        for m in w.generation_models() {
            let entry = models.entry(m.name.clone()).or_default();
            entry.workers += 1;
            entry.context_length = entry.context_length.or(m.context_length);
            entry.size_bytes = entry.size_bytes.or(m.size_bytes);
            entry.quantization = entry.quantization.clone().or_else(|| m.quantization.clone());
        }
    }
    models
}

fn model_json(name: &str, m: &PoolModel) -> Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "legacygpu",
           "workers": m.workers, "context_length": m.context_length,
           "size_bytes": m.size_bytes, "quantization": m.quantization})
}

/// The pool's generation models (OpenAI's list shape), with how many connected workers serve each; workers that are paused, draining or quarantined count for none.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "`{\"object\": \"list\", \"data\": [{\"id\", \"object\": \
        \"model\", \"owned_by\", \"workers\", \"context_length\", \"size_bytes\", \"quantization\"}]}`")))]
pub(super) async fn list_models(State(api): State<Api>) -> Response {
    let snap = api.snapshot();
    let data: Vec<Value> = pool_models(&snap).iter().map(|(n, m)| model_json(n, m)).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// One model of the pool.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai",
    params(("id" = String, Path, description = "The model's name")),
    responses((status = 200, description = "The model, as in the list"),
              (status = 404, description = "No connected worker serves it (OpenAI's error shape)")))]
pub(super) async fn model(State(api): State<Api>, id: Result<Id, ApiError>) -> Response {
    // A path that does not parse is refused in OpenAI's shape too.
    let id = match id {
        Ok(Id(id)) => id,
        Err(e) => return OpenAiError::from(e).into_response(),
    };
    let snap = api.snapshot();
    match pool_models(&snap).get(&id) {
        Some(m) => axum::Json(model_json(&id, m)).into_response(),
        None => OpenAiError::model_not_found(&id).into_response(),
    }
}

// ------------------------------------------------------------ completions

/// A chat completion: the model's chat template over `messages`, as one `generate` task; `stream: true` answers with server-sent chunks ending in `data: [DONE]` (or in an error event, when the task fails after its first token).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = ChatRequest, description = "OpenAI's chat completion request: model, \
        messages, max_tokens (or max_completion_tokens), temperature, top_p, top_k, seed, stop, \
        stream, stream_options.include_usage; see docs/OPENAI.md"),
    responses((status = 200, description = "A chat.completion, or (stream) text/event-stream of \
        chat.completion.chunk"), (status = 400, description = "Bad parameters"),
              (status = 404, description = "Unknown model (`model_not_found`)"),
              (status = 429, description = "The submission was refused: a quota or a full queue"),
              (status = 500, description = "The task failed (or was cancelled another way), or its result has no text"),
              (status = 503, description = "`busy` (too many requests follow tasks), `unavailable` (no worker could run it), or `not_leader`"),
              (status = 504, description = "The task timed out (waiting for a worker, or running)")))]
pub(super) async fn chat_completions(
    State(api): State<Api>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let g = parse::<ChatRequest>(body)?.check()?;
        complete(&api, owner_of(caller)?, Kind::Chat, g).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// A text completion of `prompt`, as one `generate` task; `stream: true` answers with server-sent chunks ending in `data: [DONE]` (or in an error event, when the task fails after its first token).
#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body(content = CompletionRequest, description = "OpenAI's completion request: model, prompt \
        (one string), max_tokens, temperature, top_p, top_k, seed, stop, stream, \
        stream_options.include_usage; see docs/OPENAI.md"),
    responses((status = 200, description = "A text_completion, or (stream) text/event-stream of \
        them"), (status = 400, description = "Bad parameters"),
              (status = 404, description = "Unknown model (`model_not_found`)"),
              (status = 429, description = "The submission was refused: a quota or a full queue"),
              (status = 500, description = "The task failed (or was cancelled another way), or its result has no text"),
              (status = 503, description = "`busy` (too many requests follow tasks), `unavailable` (no worker could run it), or `not_leader`"),
              (status = 504, description = "The task timed out (waiting for a worker, or running)")))]
pub(super) async fn completions(
    State(api): State<Api>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let g = parse::<CompletionRequest>(body)?.check()?;
        complete(&api, owner_of(caller)?, Kind::Completion, g).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// The owner the request's task gets (its API key's); the middleware
/// always names a caller, so its absence is our error, not the client's.
fn owner_of(caller: Option<axum::Extension<Caller>>) -> Result<sched::Owner, OpenAiError> {
    caller.map(|c| c.0.owner).ok_or_else(|| OpenAiError::server("the request has no caller"))
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, OpenAiError> {
    let bytes = body.map_err(|e| OpenAiError::new(e.status(), e.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OpenAiError::invalid(format!("the body is not a valid request: {e}")))
}

/// Runs one completion as a `generate` task and answers it.
async fn complete(
    api: &Api,
    owner: sched::Owner,
    kind: Kind,
    g: Generate,
) -> Result<Response, OpenAiError> {
    if !pool_models(&api.snapshot()).contains_key(&g.model) {
        return Err(OpenAiError::model_not_found(&g.model));
    }
    let data = proto::to_json(&g.data).map_err(|e| OpenAiError::server(e.to_string()))?;
    let mut req = TaskRequest::new("generate", data);
    req.stream = g.stream;
    // A request does not wait for ever for a worker that left.
    req.queue_timeout_s = Some(api.config.limits.max_result_wait.as_secs_f64());
    let (mut follower, submitted) = match Follower::submit(api, req, owner).await? {
        Ok(submitted) => submitted,
        Err(refused) => return Err(OpenAiError::from_refusal(refused)),
    };
    let task_id = submitted.accepted.id;
    let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    let meta = Meta {
        kind,
        id: format!("{prefix}-{task_id}"),
        created: Clock::unix_ms(api.now()) / 1000,
        model: g.model,
    };
    // Wait for the first token (or the end) before answering, so that a
    // task that fails before any output gets a proper status.
    let first = loop {
        match follower.next().await.map_err(OpenAiError::from_lost)? {
            Some(Step::Delta(d)) if g.stream => break Step::Delta(d),
            Some(Step::Delta(_)) => {}
            Some(Step::Finished(done)) => break Step::Finished(done),
            None => return Err(OpenAiError::from(ApiError::unavailable())),
        }
    };
    let mut resp = match first {
        Step::Finished(done) if !g.stream => {
            let result = generated(done)?;
            axum::Json(meta.completion(&result)).into_response()
        }
        first => {
            if let Step::Finished(done) = first {
                // Ended before any delta: the whole answer in one go, or its error.
                let result = generated(done)?;
                let chunks = Chunks::finished(follower, meta, g.include_usage, &result);
                sse(chunks)
            } else {
                sse(Chunks::new(follower, meta, g.include_usage, first))
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&task_id) {
        resp.headers_mut().insert("x-legacygpu-task-id", v);
    }
    Ok(resp)
}

fn sse(chunks: Chunks) -> Response {
    let events = futures_util::stream::unfold(chunks, |mut c| async move {
        c.next().await.map(|e| (Ok::<_, Infallible>(e), c))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests;
