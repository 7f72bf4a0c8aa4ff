//! The operator's HTTP API on port 8000: REST under `/cluster/*` (seed 2's
//! paths and field names), the live event stream `/ws/cluster/events`,
//! Prometheus `/metrics`, and the OpenAPI document with a browsable `/docs`.
//!
//! Handlers never touch scheduler state themselves. What needs a decision
//! goes to the core loop as a typed [`ApiRequest`] and awaits its answer, so the
//! API sees the same ordered history as the WebSocket protocol; what only
//! reads — health, metrics, workers — comes from the [`Snapshot`] the core
//! publishes. Every route is in [`routes::ROUTES`] with the role it needs;
//! one middleware authenticates every request against that table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sched::Owner;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use utoipa::ToSchema;

use crate::clock::Clock;
use crate::config::{ApiRole, Config};
use crate::core::requests::Reply;
use crate::core::{ApiRequest, Core, Input};
use crate::credentials::Credentials;
use crate::edge::Listener;
use crate::ha::HaView;
use crate::observe::Durable;
use crate::reads::Reader;
use crate::snapshot::Snapshot;
use crate::telemetry::{ApiEvent, Metrics, Published};

mod cluster;
mod controls;
mod dashboard;
mod events;
mod extract;
pub(crate) mod follow;
mod openai;
pub(crate) mod routes;
mod schemas;
mod serve;
mod sse;
mod tasks;
mod tokens;
mod trust;
mod workers;

pub(crate) use serve::Serving;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Api {
    core: mpsc::Sender<Input>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<Arc<Published>>,
    durable: watch::Receiver<Durable>,
    metrics: Metrics,
    config: Arc<Config>,
    clock: Clock,
    /// Asks the coordinator to shut down (`POST /cluster/shutdown`).
    stop: watch::Sender<bool>,
    /// Join tokens (shown and rotated by admins).
    credentials: Arc<Credentials>,
    /// Task lists and pages come from the store (see `reads.rs`); a
    /// standby, which redirects every request, has none.
    reader: Option<Reader>,
    /// The dashboard's logins.
    sessions: dashboard::Sessions,
    /// On PostgreSQL: the lease, for health, metrics and a standby's redirects.
    ha: Option<HaView>,
}

impl Api {
    pub fn new(
        core: mpsc::Sender<Input>,
        state: &Core,
        stop: watch::Sender<bool>,
        credentials: Arc<Credentials>,
        reader: Option<Reader>,
    ) -> Api {
        Api {
            core,
            snapshot: state.publisher.subscribe(),
            events: state.telemetry.events(),
            durable: state.observer.durable_watch(),
            metrics: state.telemetry.metrics(),
            config: Arc::clone(&state.config),
            clock: state.clock,
            stop,
            credentials,
            reader,
            sessions: dashboard::Sessions::new(
                state.config.limits.dashboard_session_ttl,
                state.config.limits.max_dashboard_sessions,
            ),
            ha: None,
        }
    }

    /// Runs a store read on a blocking thread, once the store's readers see
    /// every batch committed when it was asked for: a read shows what was
    /// acknowledged before it (the journaled store applies its commits to
    /// the database a few milliseconds later: `store::Journaled`).
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn store::StoreReader) -> Result<T, store::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let mut durable = self.durable.clone();
        let committed = durable.borrow().seq;
        // A failed store is the read's own error to meet; one that cannot
        // apply its journal is read as it is.
        let visible = durable.wait_for(|d| d.visible >= committed || d.failed.is_some());
        let _ = tokio::time::timeout(self.config.limits.max_read_wait, visible).await;
        match &self.reader {
            Some(reader) => crate::reads::run(reader, read).await,
            None => Err(ApiError::unavailable_because("this coordinator is a standby")),
        }
    }

    /// With the lease's view (on PostgreSQL).
    pub fn with_ha(mut self, ha: Option<HaView>) -> Api {
        self.ha = ha;
        self
    }

    /// The lease's view, on PostgreSQL.
    pub fn ha(&self) -> Option<&HaView> {
        self.ha.as_ref()
    }

    /// The lease as known, when this instance is a standby.
    pub fn standby(&self) -> Option<&watch::Receiver<crate::ha::HaStatus>> {
        self.ha.as_ref().filter(|v| v.standby).map(|v| &v.status)
    }

    /// Sends the core the request `make` builds around a reply channel, and
    /// awaits the answer.
    pub async fn request<R>(
        &self,
        make: impl FnOnce(Reply<R>) -> ApiRequest,
    ) -> Result<R, ApiError> {
        let (tx, rx) = oneshot::channel();
        let input = Input::Request(make(tx));
        self.core.send(input).await.map_err(|_| ApiError::unavailable())?;
        rx.await.map_err(|_| ApiError::unavailable())
    }

    /// Sends a request whose answer the caller awaits itself (with a timeout).
    pub async fn core_send(&self, request: ApiRequest) -> Result<(), ApiError> {
        self.core.send(Input::Request(request)).await.map_err(|_| ApiError::unavailable())
    }

    /// The latest snapshot of the cluster.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    /// Now, by the scheduler's clock.
    pub fn now(&self) -> sched::Time {
        self.clock.now()
    }

    /// Waits until the store has committed batch `seq` (what an
    /// acknowledgement promises).
    pub async fn durable(&self, seq: u64) -> Result<(), ApiError> {
        let mut durable = self.durable.clone();
        let done = durable.wait_for(|d| d.seq >= seq || d.failed.is_some()).await;
        match done {
            Ok(d) if d.failed.is_none() => Ok(()),
            _ => Err(ApiError::unavailable()),
        }
    }
}

/// The one error body of the API, as seed 2 had it: `detail` for people,
/// `error_code` for programs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub detail: String,
    pub error_code: String,
    pub status_code: u16,
    /// When to retry (for `busy`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<f64>,
    /// The task concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// On a standby (`not_leader`: 307, or 503 while no leader serves an
    /// API), the leader's HTTP API, when one is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// On a standby (`not_leader`), the leader's WebSocket URL, when one is
    /// known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_ws: Option<String>,
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    /// Boxed: an `ApiError` is the `Err` of most handlers' results, which
    /// stay small so.
    body: Box<ErrorBody>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: Box::new(ErrorBody {
                detail: detail.into(),
                error_code: code.to_owned(),
                status_code: status.as_u16(),
                retry_after_s: None,
                task_id: None,
                leader: None,
                leader_ws: None,
            }),
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unavailable_because(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the coordinator is shutting down or its store failed",
        )
    }

    pub fn task(mut self, task_id: impl Into<String>) -> ApiError {
        self.body.task_id = Some(task_id.into());
        self
    }

    pub fn retry_after(mut self, seconds: f64) -> ApiError {
        self.body.retry_after_s = Some(seconds);
        self
    }

    /// Names the leader (a standby's `not_leader`): its HTTP and WebSocket
    /// URLs, those known.
    pub fn leader(mut self, http: Option<String>, ws: Option<String>) -> ApiError {
        self.body.leader = http;
        self.body.leader_ws = ws;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.body.retry_after_s.map(|s| s.ceil().max(1.0).to_string());
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        if let Some(retry) = retry.and_then(|r| r.parse().ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        resp
    }
}

/// The router with every route, the docs and the auth middleware.
pub(crate) fn router(api: Api) -> Router {
    let openapi = routes::openapi();
    let docs = utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi);
    let limit = axum::extract::DefaultBodyLimit::max(api.config.max_frame_bytes);
    let dashboard = dashboard::router(api.clone());
    routes::ROUTES
        .iter()
        .fold(Router::new(), |r, route| r.route(route.path, (route.handler)()))
        .merge(docs)
        .fallback(unrouted)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(api.clone(), authenticate))
        // The dashboard authenticates by its session cookie (`dashboard/`).
        .merge(dashboard)
        .layer(axum::middleware::from_fn_with_state(api.clone(), crate::ha::redirect::standby_http))
        .layer(limit)
        .with_state(api)
}

/// A path no route serves.
async fn unrouted(uri: Uri) -> Response {
    refusal(&uri, ApiError::not_found("no such route; see /docs"))
}

/// A route asked with a method it does not serve.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let detail = format!("{method} is not served at {}; see /docs", uri.path());
    refusal(&uri, ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail))
}

/// A refusal in the shape its path's clients read: OpenAI's under `/v1/`.
pub(crate) fn refusal(uri: &Uri, err: ApiError) -> Response {
    if openai::owns(uri.path()) {
        openai::OpenAiError::from(err).into_response()
    } else {
        err.into_response()
    }
}

/// Serves the API until `shutdown` turns true; publishes `cluster_stats`
/// every `stats_interval` while anyone listens to the event stream.
pub(crate) async fn serve(
    listener: Listener,
    api: Api,
    serving: Serving,
    shutdown: watch::Receiver<bool>,
) {
    let stats = tokio::spawn(publish_stats(api.clone()));
    let config = Arc::clone(&api.config);
    serve::run(listener, router(api), config, serving, shutdown).await;
    stats.abort();
}

async fn publish_stats(api: Api) {
    let mut tick = tokio::time::interval(api.config.stats_interval.max(Duration::from_millis(50)));
    loop {
        tick.tick().await;
        if api.events.receiver_count() == 0 {
            continue;
        }
        let snap = api.snapshot();
        let (s, f) = (&snap.stats, &snap.figures);
        let event = ApiEvent::ClusterStats {
            workers: s.peers,
            queued: s.queued,
            running: s.assigned + s.running,
            completed: f.completed,
            failed: f.failed,
            tasks_per_minute: f.tasks_per_minute,
        };
        let _ = api.events.send(Arc::new(Published::new(&event)));
    }
}

/// Whether a request came over TLS (set by `serve.rs`), for `Secure` cookies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Secure(pub bool);

/// Who a request comes from: the role its credentials carry, and the owner
/// the tasks it submits get — its API key's (`key:FINGERPRINT`), or the
/// operator's (`api`) for the cluster token, protected mode and `--insecure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub role: ApiRole,
    pub owner: Owner,
}

impl Caller {
    /// The operator: an admin without a key of its own.
    pub fn operator() -> Caller {
        Caller { role: ApiRole::Admin, owner: Owner::Api }
    }

    /// Whether it may see and act on a task of `owner`. A client key holder
    /// is confined to its own tasks; admins and read-only keys (which read
    /// everything and change nothing) are not.
    pub fn may_touch(&self, owner: &Owner) -> bool {
        self.role != ApiRole::Client || self.owner.may_act_on(owner)
    }

    /// The owner a task list is confined to, if any.
    pub fn confined_to(&self) -> Option<&Owner> {
        (self.role == ApiRole::Client && self.owner != Owner::Api).then_some(&self.owner)
    }
}

/// The key a request presents: `Authorization: Bearer KEY` (the scheme in
/// any case) or `X-API-Key: KEY`.
///
/// An `Authorization` header that is not `Bearer KEY` is refused rather than
/// passed over for `X-API-Key`: a request names one credential, plainly.
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let key = v.to_str().ok().and_then(|v| crate::conn::bearer_token(v.trim()));
        return match key.filter(|k| !k.is_empty()) {
            Some(key) => Ok(Some(key)),
            None => Err("the Authorization header must be `Bearer KEY`"),
        };
    }
    Ok(headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
}

/// Who a request's credentials make it, or why they make it nobody.
fn caller_of(config: &Config, headers: &HeaderMap, remote: SocketAddr) -> Result<Caller, ApiError> {
    let unauthorized =
        |detail: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    // Protected mode checks no key (there is none to match): a malformed
    // header is then as good as none.
    let open = config.api_keys.is_empty() && config.token.is_none();
    let given = match presented_key(headers) {
        Ok(given) => given,
        Err(_) if open => None,
        Err(why) => return Err(unauthorized(why)),
    };
    let missing = "missing API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`";
    if config.api_keys.is_empty() {
        if let Some(token) = &config.token {
            // The cluster token doubles as the admin key.
            return match given {
                Some(g) if token.matches(g) => Ok(Caller::operator()),
                Some(_) => Err(unauthorized("invalid API key")),
                None => Err(unauthorized(missing)),
            };
        }
        if config.admits(&remote) {
            return Ok(Caller::operator());
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "protected_mode",
            "protected mode: no API keys are configured, so only loopback clients are served; \
             set API_KEYS (key:role,…) or start with --insecure",
        ));
    }
    let given = given.ok_or_else(|| unauthorized(missing))?;
    config
        .api_keys
        .iter()
        .find(|k| k.key.matches(given))
        .map(|k| Caller { role: k.role, owner: Owner::Key(Arc::clone(&k.fingerprint)) })
        .ok_or_else(|| unauthorized("invalid API key"))
}

/// Authenticates every request and checks the role its route needs.
async fn authenticate(
    State(api): State<Api>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let needed = routes::required_role(req.method(), path.as_deref());
    let refused = match caller_of(&api.config, req.headers(), remote) {
        Ok(caller) if caller.role >= needed => {
            req.extensions_mut().insert(caller);
            return next.run(req).await;
        }
        Ok(caller) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the {} role; your key has {}",
                needed.as_str(),
                caller.role.as_str()
            ),
        ),
        Err(e) => e,
    };
    refusal(req.uri(), refused)
}

#[cfg(test)]
mod tests;
