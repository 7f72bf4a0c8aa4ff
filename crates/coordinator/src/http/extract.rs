//! The API's extractors: axum's own, with their refusals in the API's one
//! error body (`ErrorBody`) instead of axum's plain text, so that a wrong
//! type in a body, a query string that does not parse or a path that is not
//! UTF-8 reads like every other failure.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON body (`Content-Type: application/json`): 400 when it is not JSON,
/// 415 without the content type, 422 when it does not fit, 413 when too big.
pub(super) struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(body_refused(&e)),
        }
    }
}

/// What a refused body is answered with.
pub(super) fn body_refused(e: &JsonRejection) -> ApiError {
    ApiError::new(e.status(), body_code(e.status()), e.body_text())
}

/// The error code for a body axum refused with `status`.
pub(super) fn body_code(status: StatusCode) -> &'static str {
    if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_body" }
}

/// A query string: 400 `invalid_query` when it does not parse.
pub(super) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Params(v))
            .map_err(|e: QueryRejection| ApiError::new(e.status(), "invalid_query", e.body_text()))
    }
}

/// The one `{id}` of a path: 400 `invalid_path` when it is not UTF-8.
pub(super) struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| Id(id))
            .map_err(|e: PathRejection| ApiError::new(e.status(), "invalid_path", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body as HttpBody;
    use axum::http::{Request, StatusCode};
    use axum::routing::{get, post};
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Deserialize)]
    struct Thing {
        #[allow(dead_code)]
        n: u32,
    }

    fn app() -> Router {
        async fn body(Body(_): Body<Thing>) -> &'static str {
            "ok"
        }
        async fn query(Params(_): Params<Thing>) -> &'static str {
            "ok"
        }
        async fn id(Id(id): Id) -> String {
            id
        }
        Router::new()
            .route("/body", post(body))
            .route("/query", get(query))
            .route("/id/{id}", get(id))
    }

    /// The status and the parsed error body of a request to `app()`.
    async fn ask(req: Request<HttpBody>) -> (StatusCode, serde_json::Value) {
        let resp = app().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    fn post_json(body: &str, content_type: Option<&str>) -> Request<HttpBody> {
        let mut req = Request::post("/body");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.body(HttpBody::from(body.to_owned())).unwrap()
    }

    #[tokio::test]
    async fn refusals_come_in_the_api_error_body() {
        let json = Some("application/json");
        let cases = [
            (
                post_json("{\"n\": \"five\"}", json),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (post_json("{\"n\": ", json), StatusCode::BAD_REQUEST, "invalid_body"),
            (post_json("{\"n\": 5}", None), StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_body"),
            (
                Request::get("/query?n=abc").body(HttpBody::empty()).unwrap(),
                StatusCode::BAD_REQUEST,
                "invalid_query",
            ),
            (
                Request::get("/id/%FF").body(HttpBody::empty()).unwrap(),
                StatusCode::BAD_REQUEST,
                "invalid_path",
            ),
        ];
        for (req, status, code) in cases {
            let uri = req.uri().clone();
            let (got, body) = ask(req).await;
            assert_eq!(got, status, "{uri}: {body}");
            assert_eq!(body["error_code"], code, "{uri}: {body}");
            assert_eq!(body["status_code"], status.as_u16(), "{uri}");
            assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn what_fits_passes() {
        let (status, _) = ask(post_json("{\"n\": 5}", Some("application/json"))).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = ask(Request::get("/query?n=5").body(HttpBody::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let resp = app()
            .oneshot(Request::get("/id/t%2D1").body(HttpBody::empty()).unwrap())
            .await
            .unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 10).await.unwrap();
        assert_eq!(&bytes[..], b"t-1");
    }
}
