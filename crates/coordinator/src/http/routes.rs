//! The REST routes, each with the role it needs and its OpenAPI description.

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post, put};
use utoipa::OpenApi;

use super::{
    Api, ErrorBody, cluster, controls, events, openai, sse, tasks, tokens, trust, workers,
};
use crate::config::ApiRole;

/// One route: its method and path (axum's syntax, the same as OpenAPI's),
/// the least role that may call it, and its handler.
pub(crate) struct Route {
    pub method: Method,
    pub path: &'static str,
    pub role: ApiRole,
    pub handler: fn() -> MethodRouter<Api>,
}

const fn route(
    method: Method,
    path: &'static str,
    role: ApiRole,
    handler: fn() -> MethodRouter<Api>,
) -> Route {
    Route { method, path, role, handler }
}

use ApiRole::{Admin, Client, ReadOnly};

/// Every route the API serves (the docs' own pages need `ReadOnly`).
pub(crate) const ROUTES: &[Route] = &[
    route(Method::GET, "/cluster/health", ReadOnly, || get(cluster::health)),
    route(Method::GET, "/cluster/metrics", ReadOnly, || get(cluster::cluster_metrics)),
    route(Method::GET, "/cluster/workers", ReadOnly, || get(workers::list_workers)),
    route(Method::GET, "/cluster/workers/{id}", ReadOnly, || get(workers::worker)),
    route(Method::GET, "/cluster/workers/{id}/stats", ReadOnly, || get(workers::worker_stats)),
    route(Method::POST, "/cluster/workers/register", Admin, || post(workers::register_worker)),
    route(Method::POST, "/cluster/workers/{id}/revoke", Admin, || post(workers::revoke_worker)),
    route(Method::POST, "/cluster/workers/{id}/pause", Admin, || post(controls::pause)),
    route(Method::POST, "/cluster/workers/{id}/resume", Admin, || post(controls::resume)),
    route(Method::POST, "/cluster/workers/{id}/drain", Admin, || post(controls::drain)),
    route(Method::GET, "/cluster/tokens", Admin, || get(tokens::show)),
    route(Method::POST, "/cluster/tokens/rotate", Admin, || post(tokens::rotate)),
    route(Method::POST, "/cluster/workers/{id}/clear", Admin, || post(trust::clear_worker)),
    route(Method::POST, "/cluster/tasks/submit", Client, || post(tasks::submit_seed_path)),
    route(Method::POST, "/cluster/tasks", Client, || post(tasks::submit)),
    route(Method::GET, "/cluster/tasks", ReadOnly, || get(tasks::list_tasks)),
    route(Method::GET, "/cluster/tasks/{id}/status", ReadOnly, || get(tasks::task_status)),
    route(Method::GET, "/cluster/tasks/{id}/result", Client, || get(tasks::task_result)),
    route(Method::DELETE, "/cluster/tasks/{id}", Client, || delete(tasks::cancel)),
    route(Method::POST, "/cluster/tasks/{id}/retry", Client, || post(controls::retry)),
    route(Method::POST, "/cluster/tasks/bulk", Admin, || post(controls::bulk)),
    route(Method::GET, "/cluster/tasks/{id}/stream", Client, || get(sse::stream)),
    route(Method::GET, "/cluster/config", ReadOnly, || get(cluster::config)),
    route(Method::PUT, "/cluster/config/balancing", Admin, || put(cluster::set_balancing)),
    route(Method::POST, "/cluster/shutdown", Admin, || post(cluster::shutdown)),
    route(Method::GET, "/ws/cluster/events", ReadOnly, || get(events::stream)),
    route(Method::GET, "/metrics", ReadOnly, || get(cluster::prometheus)),
    // The OpenAI-compatible API (http/openai).
    route(Method::GET, "/v1/models", ReadOnly, || get(openai::list_models)),
    route(Method::GET, "/v1/models/{id}", ReadOnly, || get(openai::model)),
    route(Method::POST, "/v1/chat/completions", Client, || post(openai::chat_completions)),
    route(Method::POST, "/v1/completions", Client, || post(openai::completions)),
];

/// The role a request needs: its route's, or read-only for the docs and
/// unknown paths (which then answer 404).
pub(crate) fn required_role(method: &Method, path: Option<&str>) -> ApiRole {
    let Some(path) = path else { return ReadOnly };
    ROUTES
        .iter()
        .filter(|r| r.path == path)
        .find(|r| r.method == method || (r.method == Method::GET && method == Method::HEAD))
        .map_or(ReadOnly, |r| r.role)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "legacygpu cluster API",
        description = "Operate a legacygpu cluster: health, workers, tasks, configuration, \
                       live events and Prometheus metrics; generate text through the \
                       OpenAI-compatible `/v1/*` routes. Authenticate with \
                       `Authorization: Bearer KEY` or `X-API-Key: KEY`."
    ),
    paths(
        cluster::health, cluster::cluster_metrics, workers::list_workers, workers::worker,
        workers::worker_stats, workers::register_worker, workers::revoke_worker, trust::clear_worker,
        tokens::show, tokens::rotate, tasks::submit, tasks::submit_seed_path,
        tasks::list_tasks, tasks::task_status, tasks::task_result, tasks::cancel, controls::pause,
        controls::resume, controls::drain, controls::retry, controls::bulk, cluster::config,
        cluster::set_balancing, cluster::shutdown, events::stream, cluster::prometheus,
        sse::stream, openai::list_models, openai::model, openai::chat_completions,
        openai::completions
    ),
    components(schemas(ErrorBody, crate::telemetry::ApiEvent)),
    modifiers(&Security, &Refusals),
    security(("bearer" = []), ("api_key" = []))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The refusals every route may answer with, added to each operation that
/// does not already say more: the key checks (401, 403), a standby's
/// redirect (307, 503 `not_leader`; not for what a standby answers itself,
/// `ha::redirect`), and the extractors' refusals (`extract`: 400 for a query
/// or path that does not parse; 400, 413, 415 and 422 for a body).
struct Refusals;

impl utoipa::Modify for Refusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{RefOr, ResponseBuilder};
        for (path, item) in openapi.paths.paths.iter_mut() {
            let openai = path.starts_with("/v1/");
            let answered_here = crate::ha::redirect::answered_here(path);
            let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            for op in ops.into_iter().flatten() {
                let params = op.parameters.iter().flatten().filter_map(|p| match p {
                    RefOr::T(p) => Some(p.parameter_in.clone()),
                    RefOr::Ref(_) => None,
                });
                let parsed = params
                    .into_iter()
                    .any(|at| matches!(at, ParameterIn::Query | ParameterIn::Path));
                let mut refusals = vec![
                    ("401", "No API key, or one the cluster does not know"),
                    ("403", "The key's role does not reach the route's, or protected mode"),
                ];
                if !answered_here {
                    refusals.push(("307", "`not_leader`: a standby; `Location` is the leader's"));
                    refusals
                        .push(("503", "`not_leader` while no coordinator leads, or `unavailable`"));
                }
                let body = op.request_body.is_some();
                match (parsed, body) {
                    (true, true) => refusals.push((
                        "400",
                        "A query, path or body that does not parse, or a refused value",
                    )),
                    (true, false) => refusals.push((
                        "400",
                        "A query string or path that does not parse, or a refused value",
                    )),
                    (false, true) => {
                        refusals.push(("400", "A body that is not JSON, or a refused value"))
                    }
                    (false, false) => {}
                }
                if body {
                    refusals.push(("413", "`payload_too_large`: over `--max-frame-bytes`"));
                }
                // The OpenAI routes read any body and answer 400 for all else.
                if body && !openai {
                    refusals.push(("415", "`invalid_body`: not the body's content type (JSON)"));
                    refusals.push(("422", "`invalid_body`: JSON that does not fit the schema"));
                }
                for (status, description) in refusals {
                    let responses = &mut op.responses.responses;
                    if responses.contains_key(status) {
                        continue;
                    }
                    let response = if openai {
                        ResponseBuilder::new()
                            .description(format!("{description} (OpenAI's error shape)"))
                    } else {
                        ResponseBuilder::new().description(description).content(
                            "application/json",
                            utoipa::openapi::Content::new(Some(
                                utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                            )),
                        )
                    };
                    responses.insert(status.to_owned(), RefOr::T(response.build()));
                }
            }
        }
    }
}
