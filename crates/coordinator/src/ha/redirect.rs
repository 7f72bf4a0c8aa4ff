//! What a standby answers: it keeps both ports open and sends everyone to
//! the leader.
//!
//! - WebSocket: after the upgrade it waits for the first message (the
//!   registration), answers an `error` with code `not_leader` and the
//!   leader's URL in `leader` (none during an election), and closes with
//!   4003. Waiting for the first message means the client is reading when
//!   the answer comes, so it is never lost to a reset.
//! - HTTP: `307 Temporary Redirect` to the same path on the leader (307
//!   keeps the method and body, so a POST is redone there), with the usual
//!   error body (`error_code: not_leader`) naming the leader's URLs in
//!   `leader` (HTTP) and `leader_ws`; `503` with `Retry-After: 1` while
//!   nobody leads, or naming only `leader_ws` when the leader serves no
//!   HTTP API. Health, metrics and the docs are answered by the standby
//!   itself.
//!
//! A redirect rather than a proxy: a proxy would add a hop (and a second
//! copy of every result) to each request, hold connections open on a
//! process that may be gone at the next failover, and need the leader to
//! trust the standby's credentials; a redirect costs one round trip per
//! client per failover, and the client then talks to the leader directly.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use codes::CloseReason;
use futures_util::{SinkExt, StreamExt};
use proto::{ErrorCode, ErrorMsg, FromCoordinator, ToCoordinator};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::HaStatus;
use crate::conn::Ws;
use crate::http::{Api, ApiError};

/// Answers a WebSocket connection to a standby, within `deadline`.
pub(crate) async fn refuse_ws(mut ws: Ws, status: &watch::Receiver<HaStatus>, deadline: Duration) {
    let first = tokio::time::timeout(deadline, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    ws.get_ref().message_done();
                    let msg_type =
                        ToCoordinator::decode(text.as_str()).map(|m| m.msg_type().to_owned()).ok();
                    return Some(msg_type);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => ws.get_ref().message_done(),
            }
        }
    });
    let msg_type = match first.await {
        Ok(Some(msg_type)) => msg_type,
        Ok(None) => return,
        Err(_) => {
            // Nothing within the registration timeout: closed as the leader would.
            let reason = CloseReason::Idle;
            let code = CloseCode::from(reason.code());
            let _ = ws.close(Some(CloseFrame { code, reason: reason.as_str().into() })).await;
            return;
        }
    };
    let leader = status.borrow().leader.as_ref().map(|l| l.ws.clone()).filter(|l| !l.is_empty());
    let reason = match &leader {
        Some(url) => format!("this coordinator is a standby; the leader is at {url}"),
        None => "this coordinator is a standby and no coordinator leads yet; retry shortly".into(),
    };
    let mut err = ErrorMsg::new(ErrorCode::NOT_LEADER, reason);
    err.in_reply_to = msg_type;
    err.leader = leader.map(|l| Box::new(proto::LeaderUrl(l)));
    err.retry_after_s = Some(0.25);
    let _ = ws.send(Message::text(FromCoordinator::Error(err).encode())).await;
    let reason = CloseReason::NotLeader;
    let frame = CloseFrame { code: CloseCode::from(reason.code()), reason: reason.as_str().into() };
    let _ = ws.close(Some(frame)).await;
    // Read until the client's close, briefly, so the close is orderly.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Paths a standby answers itself: its own health and metrics, the docs.
pub(crate) fn answered_here(path: &str) -> bool {
    matches!(path, "/cluster/health" | "/metrics" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/")
}

/// The HTTP middleware: on a standby, everything but [`answered_here`] is
/// sent to the leader.
pub(crate) async fn standby_http(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Some(status) = api.standby() else { return next.run(req).await };
    if answered_here(req.uri().path()) {
        return next.run(req).await;
    }
    let leader = status.borrow().leader.clone();
    let http = leader.as_ref().and_then(|l| l.http.clone());
    let ws = leader.map(|l| l.ws).filter(|ws| !ws.is_empty());
    let Some(base) = http else {
        let unavailable = |detail: String| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NOT_LEADER.as_str(), detail)
        };
        let refused = match ws {
            Some(ws) => unavailable(format!(
                "this coordinator is a standby; the leader, at {ws}, serves no HTTP API"
            ))
            .leader(None, Some(ws)),
            None => unavailable(
                "this coordinator is a standby and no coordinator leads yet; retry shortly".into(),
            )
            .retry_after(1.0),
        };
        return crate::http::refusal(req.uri(), refused);
    };
    let target = format!(
        "{}{}",
        base.trim_end_matches('/'),
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let detail = format!("this coordinator is a standby; the leader is at {base}");
    let redirect =
        ApiError::new(StatusCode::TEMPORARY_REDIRECT, ErrorCode::NOT_LEADER.as_str(), detail)
            .leader(Some(base.clone()), ws);
    let mut resp = crate::http::refusal(req.uri(), redirect);
    if let Ok(location) = HeaderValue::from_str(&target) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::answered_here;

    #[test]
    fn only_health_metrics_and_docs_are_answered_by_a_standby() {
        for p in ["/cluster/health", "/metrics", "/docs", "/docs/index.html", "/openapi.json"] {
            assert!(answered_here(p), "{p}");
        }
        for p in ["/cluster/tasks", "/cluster/metrics", "/cluster/workers", "/docsx", "/"] {
            assert!(!answered_here(p), "{p}");
        }
    }
}
