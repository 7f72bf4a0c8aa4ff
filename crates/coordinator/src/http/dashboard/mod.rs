//! The operator's web dashboard, served at `/` on the HTTP port from this
//! binary: pages rendered on the server with maud (readable without
//! JavaScript), one small embedded script that updates them live from the
//! event stream, and a login for API keys (`session.rs`).
//!
//! Pages read what every other read does: workers and figures from the
//! published snapshot, tasks from the store (`reads.rs`); actions go to the
//! core as the REST API's do. Nothing is fetched from elsewhere at run time.
//!
//! | page | what |
//! |---|---|
//! | `/` | health, workers, queue, tasks/s over the last hour, latency, counts by type and model |
//! | `/workers` | every worker, with its trust, and drain / pause / resume / revoke / clear |
//! | `/tasks`, `/tasks/{id}` | filtered, paged task list with bulk cancel/retry; one task, a generation's tokens as they stream |
//! | `/events` | the live event stream, filtered |
//! | `/submit` | a task form, and a generation form when the pool has LLM models |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use super::{Api, Secure};
use crate::config::ApiRole;
use crate::core::ApiRequest;

mod actions;
mod pages;
pub(crate) mod session;
mod tasks;

pub(crate) use session::{Sessions, Viewer};

/// The embedded script and style.
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// The dashboard's routes, behind their own authentication.
pub(crate) fn router(api: Api) -> Router<Api> {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/workers", get(pages::workers))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::task))
        .route("/events", get(pages::events))
        .route("/submit", get(pages::submit))
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), settled))
        .route("/ui/events", get(live))
        .route("/ui/workers/{id}/{action}", post(actions::worker))
        .route("/ui/tasks/{id}/{action}", post(actions::task))
        .route("/ui/tasks/bulk", post(actions::bulk))
        .route("/ui/tasks/{id}/stream", get(tasks::stream))
        .route("/ui/submit", post(actions::submit))
        .route("/logout", post(actions::logout))
        .route_layer(axum::middleware::from_fn_with_state(api, authenticate));
    Router::new()
        .route("/login", get(login_page).post(actions::login))
        .route("/ui/dashboard.js", get(script))
        .route("/ui/dashboard.css", get(|| asset(STYLE, "text/css; charset=utf-8")))
        .merge(pages)
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// The script, after what it needs of the configuration: the event kinds
/// to follow, and the least time between two refreshes of a page (the stats
/// interval, so that no page polls faster than the figures change).
async fn script(State(api): State<Api>) -> Response {
    let settings = serde_json::json!({
        "kinds": crate::telemetry::ApiEvent::KINDS,
        "minGapMs": api.config.stats_interval.as_millis() as u64,
    });
    let body = format!("var LEGACYGPU = {settings};\n{SCRIPT}");
    let kind = "text/javascript; charset=utf-8";
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// Finds the viewer of a request: its session, or in protected mode a
/// loopback browser. Others are sent to the login (pages) or refused.
async fn authenticate(
    State(api): State<Api>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let viewer = if Sessions::needs_login(&api.config) {
        api.sessions.viewer(req.headers())
    } else if api.config.admits(&remote) {
        Some(api.sessions.open_viewer())
    } else {
        return page_error(
            StatusCode::FORBIDDEN,
            "Protected mode",
            "No API keys are configured, so the dashboard is served to this machine only. \
             Set API_KEYS (key:role,…) to log in from elsewhere.",
        );
    };
    let Some(viewer) = viewer else {
        if req.method() == Method::GET && req.uri().path() != "/ui/events" {
            return Redirect::to("/login").into_response();
        }
        return page_error(StatusCode::UNAUTHORIZED, "Not logged in", "Log in with an API key.");
    };
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

/// Before a page reads the store: it waits for the store to hold what the
/// scheduler had done when the page was asked for, so that a page fetched
/// on an event (which the core sends as the change happens, before its
/// commit) shows that change.
async fn settled(State(api): State<Api>, req: Request, next: Next) -> Response {
    if let Ok(seq) = api.request(|reply| ApiRequest::Observed { reply }).await {
        // A failed store is the page's own error to show.
        let _ = api.durable(seq).await;
    }
    next.run(req).await
}

/// A page, or with `X-Fragment: 1` (the live script) only its `<main>`.
pub(super) fn page(
    headers: &HeaderMap,
    viewer: Option<&Viewer>,
    title: &str,
    live: &str,
    body: Markup,
) -> Response {
    let mut resp = if headers.get("x-fragment").is_some() {
        Html(body.into_string()).into_response()
    } else {
        Html(layout(viewer, title, live, body).into_string()).into_response()
    };
    // Pages carry live data and CSRF tokens: never cached.
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The frame around every page: navigation, the viewer, the script.
fn layout(viewer: Option<&Viewer>, title: &str, live: &str, body: Markup) -> Markup {
    let nav = [
        ("/", "Overview"),
        ("/workers", "Workers"),
        ("/tasks", "Tasks"),
        ("/events", "Events"),
        ("/submit", "Submit"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · legacygpu" }
                link rel="stylesheet" href="/ui/dashboard.css";
                script src="/ui/dashboard.js" defer {}
            }
            body data-live=(live) {
                header {
                    strong.brand { "legacygpu" }
                    nav { @for (href, name) in nav { a href=(href) { (name) } } }
                    @if let Some(v) = viewer {
                        span.viewer { "role: " span #role { (v.role.as_str()) } }
                        @if v.logged_in {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                    span #live-status.muted {}
                }
                main #main { (body) }
            }
        }
    }
}

/// An error page.
pub(super) fn page_error(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = html! { h1 { (title) } p.error { (detail) } p { a href="/" { "Overview" } } };
    let mut resp = Html(layout(None, title, "", body).into_string()).into_response();
    *resp.status_mut() = status;
    resp
}

/// axum's `Form`, its refusal (not a form, too big) a page rather than text.
pub(super) struct PageForm<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for PageForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(PageForm(v)),
            Err(e) => Err(page_error(e.status(), "Bad request", &e.body_text())),
        }
    }
}

/// axum's `Query`, its refusal (a query that does not parse) a page rather than text.
pub(super) struct PageQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for PageQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(PageQuery(v)),
            Err(e) => Err(page_error(e.status(), "Bad request", &e.body_text())),
        }
    }
}

/// axum's `Path`, its refusal (an id that is not UTF-8) a page rather than text.
pub(super) struct PagePath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for PagePath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PagePath(v)),
            Err(e) => Err(page_error(e.status(), "Bad request", &e.body_text())),
        }
    }
}

async fn login_page(headers: HeaderMap) -> Response {
    login_form(&headers, None, StatusCode::OK)
}

/// The login form; `error` after a refused key.
pub(super) fn login_form(headers: &HeaderMap, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Log in" }
        p.muted { "Paste an API key (read-only, client or admin). It is sent once, in this form's body, and kept only as a session." }
        @if let Some(e) = error { p.error #login-error { (e) } }
        form method="post" action="/login" {
            label { "API key " input #key type="password" name="key" autocomplete="current-password" required; }
            button #login type="submit" { "Log in" }
        }
    };
    let mut resp = page(headers, None, "Log in", "", body);
    *resp.status_mut() = status;
    resp
}

/// Whether a request came over TLS.
pub(super) fn secure(req_secure: Option<&Secure>) -> bool {
    req_secure.is_some_and(|s| s.0)
}

/// Whether a viewer may do what needs `role`.
pub(super) fn may(viewer: &Viewer, role: ApiRole) -> bool {
    viewer.role >= role
}

/// `/ui/events`: the event stream as server-sent events, for the script
/// (a browser's EventSource sends the session cookie; a WebSocket from the
/// page could not send an API key). A lagging page misses events and is
/// told so; it refreshes what it shows.
async fn live(
    State(api): State<Api>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    use tokio::sync::broadcast::error::RecvError;
    let rx = api.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(e) => SseEvent::default().event(e.kind).data(e.json.clone()),
            Err(RecvError::Lagged(n)) => SseEvent::default().event("dropped").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
