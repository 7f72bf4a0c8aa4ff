//! What the dashboard's forms and script post: login and logout, worker
//! and task controls, bulk actions (a count first, then a confirmation),
//! and submissions. Every one but the login needs the session's CSRF token
//! and the role the same REST route needs; the decisions are the core's.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use sched::TaskId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{Sessions, csrf_ok, set_cookie};
use super::tasks::{ListQuery, filter_of};
use super::{PageForm, PagePath, Viewer, login_form, may, page, page_error, secure};
use crate::config::ApiRole;
use crate::core::ApiRequest;
use crate::core::controls::{BulkAction, Control, WorkerAction};
use crate::http::controls::{BulkFilter, bulk_action};
use crate::http::{Api, ApiError, Secure};

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    key: String,
}

/// `POST /login`: a right key opens a session; a wrong one is refused
/// (401) without saying more. The key is never logged.
pub(super) async fn login(
    State(api): State<Api>,
    secure_ext: Option<Extension<Secure>>,
    headers: HeaderMap,
    PageForm(form): PageForm<LoginForm>,
) -> Response {
    let Some((role, client)) = Sessions::check_key(&api.config, &form.key) else {
        tracing::info!("dashboard login refused: wrong key");
        return login_form(&headers, Some("That key is not valid."), StatusCode::UNAUTHORIZED);
    };
    let Some(id) = api.sessions.open(role, client) else {
        return page_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed",
            "No session id could be drawn.",
        );
    };
    tracing::info!(role = role.as_str(), "dashboard login");
    let cookie = set_cookie(&id, secure(secure_ext.as_deref()), api.sessions.ttl());
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The fields every action form carries.
#[derive(Debug, Deserialize)]
pub(super) struct Csrf {
    csrf: Option<String>,
}

/// The refusal of a request without the session's CSRF token, or whose
/// viewer lacks `role`; `None` when it may go on.
fn refusal(
    viewer: &Viewer,
    headers: &HeaderMap,
    form: Option<&str>,
    role: ApiRole,
) -> Option<Response> {
    let given = form.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
    if !csrf_ok(viewer, given) {
        return Some(page_error(
            StatusCode::FORBIDDEN,
            "Refused",
            "This request did not carry the page's CSRF token; reload the page and try again.",
        ));
    }
    if !may(viewer, role) {
        let detail = format!(
            "This needs the {} role; your key has {}.",
            role.as_str(),
            viewer.role.as_str()
        );
        return Some(page_error(StatusCode::FORBIDDEN, "Not allowed", &detail));
    }
    None
}

/// `POST /logout`.
pub(super) async fn logout(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    secure_ext: Option<Extension<Secure>>,
    headers: HeaderMap,
    PageForm(form): PageForm<Csrf>,
) -> Response {
    if let Some(refused) = refusal(&viewer, &headers, form.csrf.as_deref(), ApiRole::ReadOnly) {
        return refused;
    }
    api.sessions.close(&headers);
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(v) =
        HeaderValue::from_str(&set_cookie("", secure(secure_ext.as_deref()), api.sessions.ttl()))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// An API error as a page.
fn error_page(e: ApiError) -> Response {
    page_error(e.status, "Refused", &e.body.detail)
}

/// `POST /ui/workers/{id}/{drain|pause|resume|revoke|clear}` (admin).
pub(super) async fn worker(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    PagePath((id, action)): PagePath<(String, String)>,
    PageForm(form): PageForm<Csrf>,
) -> Response {
    if let Some(refused) = refusal(&viewer, &headers, form.csrf.as_deref(), ApiRole::Admin) {
        return refused;
    }
    let action = match action.as_str() {
        "pause" => WorkerAction::Pause,
        "resume" => WorkerAction::Resume,
        "drain" => WorkerAction::Drain,
        "revoke" => {
            let worker_id = id.clone();
            let done = async {
                let seq =
                    api.request(|reply| ApiRequest::RevokeWorker { worker_id, reply }).await?;
                let seq = seq.ok_or_else(|| ApiError::not_found(format!("worker `{id}` has no credential to revoke (it joined with a shared token or from this machine)")))?;
                api.durable(seq).await
            };
            return match done.await {
                Ok(()) => Redirect::to("/workers").into_response(),
                Err(e) => error_page(e),
            };
        }
        "clear" => {
            return match crate::http::trust::clear(&api, id.clone()).await {
                Ok(_) => {
                    tracing::info!(peer = %id, "an operator cleared a worker's quarantine (dashboard)");
                    Redirect::to("/workers").into_response()
                }
                Err(e) => error_page(e),
            };
        }
        other => {
            return page_error(
                StatusCode::NOT_FOUND,
                "No such action",
                &format!("`{other}` is not drain, pause, resume, revoke or clear."),
            );
        }
    };
    let worker_id = id.clone();
    let answer = api
        .request(|reply| ApiRequest::Control(Control::Worker { worker_id, action, reply }))
        .await;
    match answer {
        Ok(Ok(())) => {
            tracing::info!(peer = %id, action = action.as_str(), "an operator acted on a worker (dashboard)");
            Redirect::to("/workers").into_response()
        }
        Ok(Err(_)) => page_error(
            StatusCode::NOT_FOUND,
            "No such worker",
            &format!("No worker `{id}` is connected."),
        ),
        Err(e) => error_page(e),
    }
}

/// `POST /ui/tasks/{id}/{cancel|retry}` (client).
pub(super) async fn task(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    PagePath((id, action)): PagePath<(String, String)>,
    PageForm(form): PageForm<Csrf>,
) -> Response {
    if let Some(refused) = refusal(&viewer, &headers, form.csrf.as_deref(), ApiRole::Client) {
        return refused;
    }
    let Ok(task) = id.parse::<TaskId>() else {
        return page_error(StatusCode::NOT_FOUND, "No such task", "Task ids look like t-42.");
    };
    if let Err(e) = crate::http::tasks::check_owner(&api, &viewer.caller(), task).await {
        return error_page(e);
    }
    let refused = match action.as_str() {
        "cancel" => match api.request(|reply| ApiRequest::Cancel { task, reply }).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("It cannot be cancelled: {e:?}.")),
            Err(e) => return error_page(e),
        },
        "retry" => {
            match api.request(|reply| ApiRequest::Control(Control::Retry { task, reply })).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("It cannot be retried: {e:?}.")),
                Err(e) => return error_page(e),
            }
        }
        other => Some(format!("`{other}` is not cancel or retry.")),
    };
    match refused {
        None => Redirect::to(&format!("/tasks/{task}")).into_response(),
        Some(detail) => page_error(StatusCode::CONFLICT, "Refused", &detail),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct BulkForm {
    csrf: Option<String>,
    action: String,
    /// The task list's query string.
    #[serde(default)]
    query: String,
    /// Set by the confirmation page.
    confirm: Option<String>,
}

/// `POST /ui/tasks/bulk` (admin): without `confirm`, a page with the count
/// and a confirmation; with it, the action.
pub(super) async fn bulk(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    PageForm(form): PageForm<BulkForm>,
) -> Response {
    if let Some(refused) = refusal(&viewer, &headers, form.csrf.as_deref(), ApiRole::Admin) {
        return refused;
    }
    let action = match form.action.as_str() {
        "cancel" => BulkAction::Cancel,
        "retry" => BulkAction::Retry,
        other => {
            return page_error(
                StatusCode::BAD_REQUEST,
                "No such action",
                &format!("`{other}` is not cancel or retry."),
            );
        }
    };
    let q: ListQuery = match serde_urlencoded::from_str(&form.query) {
        Ok(q) => q,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, "Bad filter", &e.to_string()),
    };
    let filter = match filter_of(&viewer, &q) {
        Ok(f) => f,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, "Bad filter", &e),
    };
    let filter = BulkFilter {
        status: filter.state.map(|s| s.as_str().to_owned()),
        task_type: filter.task_type,
        worker_id: filter.worker,
        owner: filter.owner,
        submitted_from_ms: filter.submitted_from_ms,
        submitted_to_ms: filter.submitted_to_ms,
    };
    let confirm = form.confirm.is_some();
    let (done, matched) = match bulk_action(&api, action, filter, confirm).await {
        Ok(v) => v,
        Err(e) => return error_page(e),
    };
    let verb = form.action.as_str();
    let body = if confirm {
        html! {
            h1 { "Done" }
            p #bulk-done { (verb) ": " (done.done) " tasks; " (done.skipped) " skipped (not in a state it applies to)." }
            p { a href=(format!("/tasks?{}", form.query)) { "Back to the tasks" } }
        }
    } else {
        html! {
            h1 { "Confirm" }
            p #bulk-count { "The filter matches " strong { (matched) } " tasks. " (verb) " every one it applies to (at most 10 000)?" }
            form method="post" action="/ui/tasks/bulk" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="action" value=(verb);
                input type="hidden" name="query" value=(form.query);
                input type="hidden" name="confirm" value="1";
                button #bulk-confirm type="submit" { "Yes, " (verb) " them" }
                " " a href=(format!("/tasks?{}", form.query)) { "No, go back" }
            }
        }
    };
    page(&headers, Some(&viewer), "Bulk action", "", body)
}

#[derive(Debug, Deserialize)]
pub(super) struct SubmitForm {
    csrf: Option<String>,
    task_type: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    prompt: String,
    max_tokens: Option<u32>,
}

/// `POST /ui/submit` (client): the task's page next.
pub(super) async fn submit(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    PageForm(form): PageForm<SubmitForm>,
) -> Response {
    if let Some(refused) = refusal(&viewer, &headers, form.csrf.as_deref(), ApiRole::Client) {
        return refused;
    }
    let model = form.model.trim();
    let mut data = if form.task_type == "generate" {
        json!({"prompt": form.prompt, "max_tokens": form.max_tokens.unwrap_or(128)})
    } else {
        let text = if form.data.trim().is_empty() { "{}" } else { form.data.as_str() };
        match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return page_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Bad input",
                    "The input must be a JSON object.",
                );
            }
        }
    };
    if !model.is_empty() && data.get("model").is_none() {
        data["model"] = json!(model);
    }
    let priority = (!form.priority.is_empty()).then(|| json!(form.priority));
    // A generation streams its tokens to the task's page.
    let stream = Some(form.task_type == "generate");
    let body = crate::http::tasks::SubmitTask {
        task_type: Some(form.task_type),
        data: Some(data),
        priority,
        stream,
        ..Default::default()
    };
    match crate::http::tasks::submit_view(&api, body, None, viewer.owner.clone()).await {
        Ok((_, view)) => Redirect::to(&format!("/tasks/{}", view.task_id)).into_response(),
        Err(e) => error_page(e),
    }
}
