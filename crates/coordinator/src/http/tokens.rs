//! Join tokens (admin): show them, and rotate them without a restart.

use api_types::Tokens;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::Body;
use super::{Api, ApiError, ErrorBody};
use crate::core::ApiRequest;
use crate::credentials::TokenKind;

/// `POST /cluster/tokens/rotate` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Rotate {
    /// `worker`, `client` or `both` (the default).
    #[schema(schema_with = super::schemas::token_kind)]
    pub kind: Option<String>,
}

fn tokens(api: &Api) -> Tokens {
    let c = &api.credentials;
    let worker = c.join_token(TokenKind::Worker);
    Tokens {
        ca_sha256: worker.pin.to_string(),
        worker_token: worker.to_string(),
        client_token: c.join_token(TokenKind::Client).to_string(),
    }
}

/// The current join tokens (admin).
#[utoipa::path(get, path = "/cluster/tokens", tag = "cluster",
    responses((status = 200, body = Tokens), (status = 403, body = ErrorBody)))]
pub(super) async fn show(State(api): State<Api>) -> Json<Tokens> {
    Json(tokens(&api))
}

/// New join tokens (admin): the old ones admit nobody from now on; workers
/// that already joined keep their own credentials.
#[utoipa::path(post, path = "/cluster/tokens/rotate", tag = "cluster", request_body = Rotate,
    responses((status = 200, body = Tokens), (status = 400, body = ErrorBody),
              (status = 500, description = "The new secret could not be made or written (with `both`, the first kind may already be rotated)", body = ErrorBody)))]
pub(super) async fn rotate(
    State(api): State<Api>,
    Body(body): Body<Rotate>,
) -> Result<Json<Tokens>, ApiError> {
    let kinds: &[TokenKind] = match body.kind.as_deref().map(str::trim) {
        None | Some("both") => &[TokenKind::Worker, TokenKind::Client],
        Some("worker") => &[TokenKind::Worker],
        Some("client") => &[TokenKind::Client],
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_kind",
                format!("kind `{other}` is not worker, client or both"),
            ));
        }
    };
    let internal = |e: &dyn std::fmt::Display| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    };
    for kind in kinds {
        let secret = tls::random_secret().map_err(|e| internal(&e))?;
        // In the store first (every coordinator on it admits by it after a
        // failover), then here.
        let (name, stored) = (kind.as_str(), secret.clone());
        let seq = api
            .request(|reply| ApiRequest::RecordJoinSecret { kind: name, secret: stored, reply })
            .await?;
        api.durable(seq).await?;
        api.credentials.set(*kind, &secret).map_err(|e| internal(&e))?;
        tracing::info!("rotated the {} join token", kind.as_str());
    }
    Ok(Json(tokens(&api)))
}
