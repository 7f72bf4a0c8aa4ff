//! Every route is documented, and every route refuses the wrong credentials:
//! the table of routes is the single place a route can be added, and this
//! test walks all of it, so a new route is covered the moment it exists.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use super::routes::{ROUTES, openapi, required_role};
use super::{Api, Caller, caller_of, router};
use crate::clock::Clock;
use crate::config::{ApiKey, ApiRole, Config, Secret};
use crate::core::Core;
use crate::observe::Observer;
use crate::telemetry::Telemetry;

const ADMIN: &str = "admin-key-1";
const CLIENT: &str = "client-key-1";
const READER: &str = "reader-key-1";
const OTHER_CLIENT: &str = "client-key-2";

fn keyed() -> Config {
    let key = |k: &str, role| ApiKey::new(k, role);
    Config {
        api_keys: vec![
            key(ADMIN, ApiRole::Admin),
            key(CLIENT, ApiRole::Client),
            key(READER, ApiRole::ReadOnly),
            key(OTHER_CLIENT, ApiRole::Client),
        ],
        ..Config::default()
    }
}

/// A router over a running core with its SQLite store (no sockets).
fn app(config: Config) -> axum::Router {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::new(64);
    let db = store::SqliteStore::open(dir.path(), store::Sync::Normal).unwrap();
    let observer =
        Observer::with_store(Box::new(db), telemetry.recorder(), &config.limits, false).unwrap();
    let core = Core::new(Arc::new(config), observer, telemetry, Clock::start());
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (stop, _) = tokio::sync::watch::channel(false);
    let tls = Arc::new(crate::tls::Tls::load(core.config.cert_source()).unwrap());
    let credentials = Arc::new(
        crate::credentials::Credentials::load(&core.config, core.approvals.clone(), tls).unwrap(),
    );
    let reader = crate::reads::open(&store::Target::Sqlite(dir.path().to_owned())).unwrap();
    let api = Api::new(tx, &core, stop, credentials, Some(reader));
    let (_never, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = (_never, dir);
        core.run(rx, shutdown).await;
    });
    router(api)
}

async fn status(app: &axum::Router, method: &Method, path: &str, key: Option<&str>) -> StatusCode {
    let path = path.replace("{id}", "t-1");
    let mut req = Request::builder().method(method).uri(&path);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let mut req = req.body(Body::empty()).unwrap();
    let remote: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(remote));
    app.clone().oneshot(req).await.unwrap().status()
}

#[test]
fn the_route_table_and_the_openapi_document_list_the_same_routes() {
    let table: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.as_str().to_lowercase(), r.path.to_owned())).collect();
    let doc = serde_json::to_value(openapi()).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(table, documented);
}

#[tokio::test]
async fn every_route_refuses_missing_wrong_and_too_weak_keys() {
    let app = app(keyed());
    for route in ROUTES {
        let (m, p) = (&route.method, route.path);
        assert_eq!(
            status(&app, m, p, None).await,
            StatusCode::UNAUTHORIZED,
            "{m} {p} without a key"
        );
        assert_eq!(
            status(&app, m, p, Some("wrong-key-123")).await,
            StatusCode::UNAUTHORIZED,
            "{m} {p} with a wrong key"
        );
        for (key, role) in [(READER, ApiRole::ReadOnly), (CLIENT, ApiRole::Client)] {
            let got = status(&app, m, p, Some(key)).await;
            if role < route.role {
                assert_eq!(got, StatusCode::FORBIDDEN, "{m} {p} as {}", role.as_str());
            } else {
                assert!(
                    got != StatusCode::FORBIDDEN && got != StatusCode::UNAUTHORIZED,
                    "{m} {p} as {}: {got}",
                    role.as_str()
                );
            }
        }
    }
    // The docs need a key too.
    assert_eq!(status(&app, &Method::GET, "/openapi.json", None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&app, &Method::GET, "/openapi.json", Some(READER)).await, StatusCode::OK);
}

#[test]
fn roles_needed_follow_the_table() {
    assert_eq!(required_role(&Method::POST, Some("/cluster/shutdown")), ApiRole::Admin);
    assert_eq!(required_role(&Method::POST, Some("/cluster/tasks")), ApiRole::Client);
    assert_eq!(required_role(&Method::GET, Some("/cluster/tasks")), ApiRole::ReadOnly);
    assert_eq!(required_role(&Method::HEAD, Some("/cluster/health")), ApiRole::ReadOnly);
    assert_eq!(required_role(&Method::GET, None), ApiRole::ReadOnly);
}

#[test]
fn protected_mode_without_keys_serves_loopback_only() {
    let headers = axum::http::HeaderMap::new();
    let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let remote: SocketAddr = "10.1.2.3:1".parse().unwrap();
    let open = Config::default();
    assert_eq!(caller_of(&open, &headers, local).unwrap(), Caller::operator());
    assert_eq!(caller_of(&open, &headers, remote).unwrap_err().status, StatusCode::FORBIDDEN);
    let insecure = Config { insecure: true, ..Config::default() };
    assert_eq!(caller_of(&insecure, &headers, remote).unwrap(), Caller::operator());
    // With a cluster token and no keys, the token is the admin key, for everyone.
    let token = Config { token: Some(Secret::new("cluster-token")), ..Config::default() };
    assert_eq!(caller_of(&token, &headers, local).unwrap_err().status, StatusCode::UNAUTHORIZED);
    let mut bearer = axum::http::HeaderMap::new();
    bearer.insert("authorization", "Bearer cluster-token".parse().unwrap());
    assert_eq!(caller_of(&token, &bearer, remote).unwrap(), Caller::operator());
}

/// One credential per request: an `Authorization` header that is not
/// `Bearer KEY` is refused, not passed over for a good `X-API-Key` beside it
/// (protected mode, which checks no key, lets it be).
#[test]
fn a_malformed_authorization_header_is_refused_not_skipped() {
    let remote: SocketAddr = "10.1.2.3:1".parse().unwrap();
    let with = |authorization: &str| {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("authorization", authorization.parse().unwrap());
        headers.insert("x-api-key", ADMIN.parse().unwrap());
        headers
    };
    for bad in ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer    ", ADMIN, "Token x"] {
        let err = caller_of(&keyed(), &with(bad), remote).unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(err.body.detail.contains("Bearer KEY"), "{bad}: {}", err.body.detail);
        let token = Config { token: Some(Secret::new(ADMIN)), ..Config::default() };
        assert_eq!(
            caller_of(&token, &with(bad), remote).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }
    // The key alone, or a well-formed bearer, is served.
    let mut alone = axum::http::HeaderMap::new();
    alone.insert("x-api-key", ADMIN.parse().unwrap());
    assert_eq!(caller_of(&keyed(), &alone, remote).unwrap().role, ApiRole::Admin);
    assert_eq!(
        caller_of(&keyed(), &with(&format!("Bearer {ADMIN}")), remote).unwrap().role,
        ApiRole::Admin
    );
    let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let open = Config::default();
    assert_eq!(caller_of(&open, &with("Basic x"), local).unwrap(), Caller::operator());
}

#[test]
fn a_key_makes_its_holder_the_owner_of_its_fingerprint_in_any_scheme_case() {
    let config = keyed();
    let remote: SocketAddr = "10.1.2.3:1".parse().unwrap();
    for header in
        [format!("Bearer {CLIENT}"), format!("bearer {CLIENT}"), format!("BEARER  {CLIENT} ")]
    {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("authorization", header.parse().unwrap());
        let caller = caller_of(&config, &headers, remote).unwrap();
        assert_eq!(caller.role, ApiRole::Client, "{header}");
        let sched::Owner::Key(fingerprint) = &caller.owner else { panic!("{caller:?}") };
        assert_eq!(fingerprint.len(), 12);
        assert_eq!(fingerprint, &ApiKey::new(CLIENT, ApiRole::Client).fingerprint);
        assert!(!fingerprint.contains(CLIENT));
    }
}

/// Sends a request with a key; answers the status and the JSON body (or null).
async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path).header("x-api-key", key);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let mut req = req.body(body).unwrap();
    req.extensions_mut().insert(ConnectInfo("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// A client key acts on its own tasks only: another client's are unknown to
/// it (404, so not even their existence shows), absent from its lists, and
/// its idempotency keys are its own; read-only keys see every task; admins
/// act on every task.
#[tokio::test]
async fn a_client_key_sees_and_touches_its_own_tasks_only() {
    let app = app(keyed());
    let task = serde_json::json!({"task_type": "echo", "data": {"n": 1}});
    let (status, mine) =
        call(&app, Method::POST, "/cluster/tasks", CLIENT, Some(task.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{mine}");
    let id = mine["task_id"].as_str().unwrap().to_owned();

    let (_, own_list) = call(&app, Method::GET, "/cluster/tasks", CLIENT, None).await;
    assert_eq!(own_list["total"], 1, "{own_list}");
    let fingerprint = ApiKey::new(CLIENT, ApiRole::Client).fingerprint;
    assert_eq!(own_list["tasks"][0]["owner"], format!("key:{fingerprint}"));
    let (status, _) =
        call(&app, Method::GET, &format!("/cluster/tasks/{id}/status"), CLIENT, None).await;
    assert_eq!(status, StatusCode::OK);

    for (method, path) in [
        (Method::GET, format!("/cluster/tasks/{id}/status")),
        (Method::GET, format!("/cluster/tasks/{id}/result")),
        (Method::GET, format!("/cluster/tasks/{id}/stream")),
        (Method::DELETE, format!("/cluster/tasks/{id}")),
        (Method::POST, format!("/cluster/tasks/{id}/retry")),
    ] {
        let (status, body) = call(&app, method.clone(), &path, OTHER_CLIENT, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(body["error_code"], "not_found", "{method} {path}: {body}");
    }
    let (_, theirs) = call(&app, Method::GET, "/cluster/tasks", OTHER_CLIENT, None).await;
    assert_eq!(theirs["total"], 0, "{theirs}");
    let spying = format!("/cluster/tasks?owner=key:{fingerprint}");
    let (status, body) = call(&app, Method::GET, &spying, OTHER_CLIENT, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // The same idempotency key from another client is another task.
    let keyed_task = serde_json::json!({"task_type": "echo", "data": {}, "idempotency_key": "k1"});
    let (_, first) =
        call(&app, Method::POST, "/cluster/tasks", CLIENT, Some(keyed_task.clone())).await;
    let (_, second) =
        call(&app, Method::POST, "/cluster/tasks", OTHER_CLIENT, Some(keyed_task)).await;
    assert_eq!(second["existing"], false, "{second}");
    assert_ne!(first["task_id"], second["task_id"]);

    let (_, everything) = call(&app, Method::GET, "/cluster/tasks", READER, None).await;
    assert_eq!(everything["total"], 3, "{everything}");
    let (status, _) =
        call(&app, Method::GET, &format!("/cluster/tasks/{id}/status"), READER, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        call(&app, Method::DELETE, &format!("/cluster/tasks/{id}"), ADMIN, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// The JSON bodies and query strings of every route an outsider can send
/// them to, from the corpus and the mutation fuzzer: no panic, no 5xx.
#[test]
fn fuzzed_bodies_and_queries_get_4xx_at_worst() {
    use test_support::fuzz;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    let rt = rt.unwrap();
    let app = rt.block_on(async { app(keyed()) });
    // A dashboard session, so that its forms reach their decoders.
    let cookie = rt.block_on(login_cookie(&app));
    let bodies = [
        "/cluster/tasks",
        "/cluster/tasks/submit",
        "/cluster/tasks/bulk",
        "/cluster/workers/register",
        "/v1/chat/completions",
        "/v1/completions",
    ];
    let send_as = |method: Method, uri: &str, content_type: &str, body: Vec<u8>| {
        let Ok(req) = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", ADMIN)
            .header("cookie", &cookie)
            .header("content-type", content_type)
            .body(Body::from(body))
        else {
            return; // Not a URI at all: nothing reaches the router.
        };
        let mut req = req;
        req.extensions_mut().insert(ConnectInfo("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
        let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
        let status = resp.status();
        assert!(status.as_u16() < 500, "{uri}: {status}");
        // A refusal of the REST API is its one error body (the dashboard's
        // are pages; OpenAI's routes have their own shape, checked below).
        let rest = uri.starts_with("/cluster/") || uri.starts_with("/ws/");
        if rest && status.is_client_error() {
            let bytes = rt.block_on(axum::body::to_bytes(resp.into_body(), 1 << 20)).unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{uri}: {status} {}", String::from_utf8_lossy(&bytes)));
            assert!(body["error_code"].is_string(), "{uri}: {body}");
            assert_eq!(body["status_code"], status.as_u16(), "{uri}: {body}");
        } else if dashboard_page(uri) && status.is_client_error() {
            let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok());
            assert!(content_type.is_some_and(|t| t.starts_with("text/html")), "{uri}: {status}");
        } else if uri.starts_with("/v1/") && status.is_client_error() {
            let bytes = rt.block_on(axum::body::to_bytes(resp.into_body(), 1 << 20)).unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(body["error"]["message"].is_string(), "{uri}: {body}");
        }
    };
    let send = |method: Method, uri: &str, body: Vec<u8>| {
        send_as(method, uri, "application/json", body);
    };
    let check = |input: &[u8]| {
        let pick = input.first().copied().unwrap_or(0) as usize;
        send(Method::POST, bodies[pick % bodies.len()], input.to_vec());
        send(Method::PUT, "/cluster/config/balancing", input.to_vec());
        send(Method::POST, "/cluster/tokens/rotate", input.to_vec());
        let query: String = String::from_utf8_lossy(input)
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '#')
            .take(200)
            .collect();
        for path in ["/cluster/tasks", "/cluster/workers", "/cluster/tasks/t-1/result", "/tasks"] {
            send(Method::GET, &format!("{path}?{query}"), Vec::new());
        }
        // The dashboard's forms (login, submit, bulk) and the event stream's
        // filters reach the same decoders from a browser.
        let form = "application/x-www-form-urlencoded";
        for path in ["/login", "/ui/submit", "/ui/tasks/bulk"] {
            send_as(Method::POST, path, form, input.to_vec());
        }
        send(Method::GET, &format!("/ws/cluster/events?{query}"), Vec::new());
    };
    for (_, bytes) in fuzz::corpus("http_bodies") {
        check(&bytes);
    }
    assert!(fuzz::run("http_bodies", check) > 0);
}

/// The session cookie of an admin logged in to the dashboard.
async fn login_cookie(app: &axum::Router) -> String {
    let mut login = Request::builder()
        .method(Method::POST)
        .uri("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("key={ADMIN}")))
        .unwrap();
    login.extensions_mut().insert(ConnectInfo("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
    let logged_in = app.clone().oneshot(login).await.unwrap();
    let cookie = logged_in.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// A path of the dashboard's pages and forms (refused with a page).
fn dashboard_page(uri: &str) -> bool {
    uri == "/login" || uri.starts_with("/ui/") || uri.starts_with("/tasks")
}

/// The dashboard refuses what does not parse with a page, not axum's text.
#[tokio::test]
async fn the_dashboards_refusals_are_pages() {
    let app = app(keyed());
    let cookie = login_cookie(&app).await;
    let cases = [
        (Method::GET, "/tasks/%FF", None, 400),
        (Method::GET, "/tasks?status=a&status=b", None, 400),
        (Method::POST, "/ui/submit", Some("text/plain"), 415),
        (Method::POST, "/ui/tasks/bulk", Some("text/plain"), 415),
        (Method::POST, "/ui/tasks/%FF/retry", Some("application/x-www-form-urlencoded"), 400),
    ];
    for (method, path, content_type, status) in cases {
        let mut req = Request::builder().method(method).uri(path).header("cookie", &cookie);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let mut req = req.body(Body::from("x=1")).unwrap();
        req.extensions_mut().insert(ConnectInfo("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/html"), "{path}: {content_type}");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("Bad request"), "{path}");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused_in_their_clients_shape() {
    let app = app(keyed());
    let ask = |method: Method, path: &'static str| {
        let app = app.clone();
        async move {
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header("x-api-key", ADMIN)
                .body(Body::empty())
                .unwrap();
            req.extensions_mut()
                .insert(ConnectInfo("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
        }
    };
    // OpenAI's clients read `{"error": {"message", "type", "code"}}`.
    let (status, body) = ask(Method::GET, "/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let (status, body) = ask(Method::POST, "/v1/models").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("POST"), "{body}");
    // Everyone else reads ours.
    let (status, body) = ask(Method::GET, "/cluster/nothing").await;
    assert_eq!((status, body["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, body) = ask(Method::DELETE, "/cluster/health").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error_code"], "method_not_allowed", "{body}");
}

/// Seed 2's untyped submission: a model with a prompt (or messages) is a
/// generation, a model alone a classification; nothing else is guessed.
#[tokio::test]
async fn an_untyped_submission_is_typed_by_its_fields() {
    let app = app(keyed());
    for (data, expected) in [
        (serde_json::json!({"model": "resnet50", "input": "data"}), Some("inference")),
        (serde_json::json!({"model": "tiny", "prompt": "Once"}), Some("generate")),
        (serde_json::json!({"model": "tiny", "messages": []}), Some("generate")),
        (serde_json::json!({"prompt": "Once"}), None),
    ] {
        let body = serde_json::json!({"payload": data});
        let (status, got) =
            call(&app, Method::POST, "/cluster/tasks/submit", CLIENT, Some(body)).await;
        let Some(expected) = expected else {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{data}: {got}");
            continue;
        };
        // Seed 2's template and test: 200, `"status": "submitted"`.
        assert_eq!(status, StatusCode::OK, "{data}: {got}");
        assert_eq!(got["status"], "submitted", "{data}: {got}");
        let path = format!("/cluster/tasks/{}/status", got["task_id"].as_str().unwrap());
        let (_, view) = call(&app, Method::GET, &path, CLIENT, None).await;
        assert_eq!(view["task_type"], expected, "{data}: {view}");
    }
}

/// A bulk action reaches everything its filter matches, however many steps
/// of `bulk_step` that takes; a dry run only counts.
#[tokio::test]
async fn a_bulk_cancel_acts_on_every_match_in_steps() {
    let mut config = keyed();
    config.limits.bulk_step = 3;
    let app = app(config);
    for n in 0..7 {
        let task = serde_json::json!({"task_type": "nobody-runs-this", "data": {"n": n}});
        let (status, body) = call(&app, Method::POST, "/cluster/tasks", ADMIN, Some(task)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let bulk = |confirm: bool| serde_json::json!({"action": "cancel", "filter": {"status": "queued"}, "confirm": confirm});
    let (_, dry) = call(&app, Method::POST, "/cluster/tasks/bulk", ADMIN, Some(bulk(false))).await;
    assert_eq!((dry["matched"].as_u64(), dry["done"].as_u64()), (Some(7), Some(0)), "{dry}");
    let (status, done) =
        call(&app, Method::POST, "/cluster/tasks/bulk", ADMIN, Some(bulk(true))).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!((done["matched"].as_u64(), done["done"].as_u64()), (Some(7), Some(7)), "{done}");
    let (_, left) = call(&app, Method::GET, "/cluster/tasks?status=queued", READER, None).await;
    assert_eq!(left["total"], 0, "{left}");
}

/// What axum's extractors refuse (a body of the wrong type or without its
/// content type, a query or a path that does not parse, a plain GET of the
/// event stream) comes in the API's one error body, like every other failure.
#[tokio::test]
async fn extractor_refusals_are_the_error_body() {
    let app = app(keyed());
    let ask = |method: Method,
               path: &'static str,
               content_type: Option<&'static str>,
               body: &'static str| {
        let app = app.clone();
        async move {
            let mut req = Request::builder().method(method).uri(path).header("x-api-key", ADMIN);
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let mut req = req.body(Body::from(body)).unwrap();
            req.extensions_mut()
                .insert(ConnectInfo("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{path}: {status} is not JSON: {text}"));
            (status, body)
        }
    };
    let json = Some("application/json");
    let cases = [
        (
            Method::POST,
            "/cluster/workers/register",
            json,
            r#"{"worker_id": 5}"#,
            422,
            "invalid_body",
        ),
        (
            Method::POST,
            "/cluster/workers/register",
            None,
            r#"{"worker_id": "w"}"#,
            415,
            "invalid_body",
        ),
        (Method::POST, "/cluster/tasks/bulk", json, r#"{"action": "#, 400, "invalid_body"),
        (Method::POST, "/cluster/tokens/rotate", json, r#"{"kind": {}}"#, 422, "invalid_body"),
        (Method::PUT, "/cluster/config/balancing", json, r#"{"strategy": 1}"#, 422, "invalid_body"),
        (Method::GET, "/cluster/tasks?limit=abc", None, "", 400, "invalid_query"),
        (
            Method::GET,
            "/cluster/workers?status_filter=a&status_filter=b",
            None,
            "",
            400,
            "invalid_query",
        ),
        (Method::GET, "/cluster/tasks/t-1/result?timeout=soon", None, "", 400, "invalid_query"),
        (Method::GET, "/ws/cluster/events?kinds=1&kinds=2", None, "", 400, "invalid_query"),
        (Method::GET, "/ws/cluster/events", None, "", 400, "not_websocket"),
        (Method::GET, "/cluster/tasks/%FF/status", None, "", 400, "invalid_path"),
        (Method::DELETE, "/cluster/tasks/%FF", None, "", 400, "invalid_path"),
        (Method::POST, "/cluster/tasks/%C3%28/retry", None, "", 400, "invalid_path"),
        (Method::GET, "/cluster/workers/%FF/stats", None, "", 400, "invalid_path"),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let (got, answer) = ask(method, path, content_type, body).await;
        assert_eq!(got.as_u16(), status, "{path}: {answer}");
        assert_eq!(answer["error_code"], code, "{path}: {answer}");
        assert_eq!(answer["status_code"], status, "{path}: {answer}");
        assert!(answer["detail"].as_str().is_some_and(|d| !d.is_empty()), "{path}: {answer}");
    }
}

/// The OpenAPI document names the refusals every operation may answer with
/// (the key checks, a standby's redirect, the extractors'), and the query
/// parameters are in the query.
#[test]
fn the_openapi_document_names_every_refusal() {
    let doc = serde_json::to_value(openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            let at = format!("{method} {path}");
            assert!(has("401") && has("403"), "{at}: {:?}", responses.keys());
            if !matches!(path.as_str(), "/cluster/health" | "/metrics") {
                assert!(has("307") && has("503"), "{at}");
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let parsed = params.iter().any(|p| p["in"] == "query" || p["in"] == "path");
            if parsed || op.get("requestBody").is_some() {
                assert!(has("400"), "{at}");
            }
            if op.get("requestBody").is_some() {
                assert!(has("413"), "{at}");
                if !path.starts_with("/v1/") {
                    assert!(has("415") && has("422"), "{at}");
                }
            }
            for p in &params {
                let name = p["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                let expected = if in_path {
                    "path"
                } else if p["in"] == "header" {
                    "header"
                } else {
                    "query"
                };
                assert_eq!(p["in"], expected, "{at}: {name}");
            }
        }
    }
}

/// The bounds the document states as literals (utoipa takes no constants)
/// are the code's.
#[test]
fn the_documents_bounds_are_the_codes() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let submit = &schemas["SubmitTask"]["properties"];
    for field in ["timeout_s", "queue_timeout_s"] {
        assert_eq!(submit[field]["maximum"].as_f64(), Some(proto::MAX_TIMEOUT_S), "{field}");
    }
    assert_eq!(submit["max_attempts"]["maximum"], proto::MAX_ATTEMPTS_LIMIT);
    for field in ["task_id", "task_type", "idempotency_key"] {
        assert_eq!(submit[field]["maxLength"], proto::MAX_ID_LEN, "{field}");
    }
    let worker_id = &schemas["RegisterWorker"]["properties"]["worker_id"];
    assert_eq!(worker_id["maxLength"], proto::MAX_ID_LEN);
    let list = &doc["paths"]["/cluster/tasks"]["get"]["parameters"];
    let offset = list.as_array().unwrap().iter().find(|p| p["name"] == "offset").unwrap();
    assert_eq!(offset["schema"]["maximum"], crate::config::Limits::default().max_offset);
}
