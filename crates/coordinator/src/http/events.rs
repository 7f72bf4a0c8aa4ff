//! `/ws/cluster/events`: the live event stream.
//!
//! Each subscriber holds a receiver of one bounded broadcast channel fed by
//! the core loop, which never waits for anyone. A subscriber that falls more
//! than the buffer behind is sent a `dropped` notice and closed: it slows
//! nobody. Filters: `?kinds=task_completed,worker_joined` and `?task_id=t-42`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::extract::Params;
use super::{Api, ApiError};
use crate::telemetry::{ApiEvent, Published};

/// Close code for a subscriber dropped for reading too slowly.
const TOO_SLOW: u16 = 4008;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Filter {
    /// Event kinds to receive, comma-separated (default: all).
    kinds: Option<String>,
    /// Only events about this task (cluster id, e.g. t-42).
    task_id: Option<String>,
}

struct Subscription {
    kinds: Option<BTreeSet<&'static str>>,
    task_id: Option<String>,
}

impl Subscription {
    fn parse(f: Filter) -> Result<Subscription, ApiError> {
        let kinds = match f.kinds.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            None => None,
            Some(list) => {
                let mut set = BTreeSet::new();
                for k in list.split(',').map(str::trim) {
                    let Some(kind) = ApiEvent::KINDS.iter().find(|known| **known == k) else {
                        return Err(ApiError::bad_request(
                            "invalid_filter",
                            format!(
                                "unknown event kind `{k}`; kinds are {}",
                                ApiEvent::KINDS.join(", ")
                            ),
                        ));
                    };
                    set.insert(*kind);
                }
                Some(set)
            }
        };
        Ok(Subscription { kinds, task_id: f.task_id })
    }

    fn wants(&self, e: &Published) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(e.kind))
            && self.task_id.as_deref().is_none_or(|t| e.task_id.as_deref() == Some(t))
    }
}

/// The live event stream: a WebSocket carrying one JSON event per text frame,
/// filtered by `kinds` and `task_id`; a subscriber too slow to read is sent a
/// `dropped` notice and closed.
#[utoipa::path(get, path = "/ws/cluster/events", tag = "monitoring", params(Filter),
    responses((status = 101, description = "WebSocket of events, one JSON object each", body = ApiEvent),
              (status = 400, description = "A filter that does not parse, or `not_websocket`: \
                  a request that is not a WebSocket upgrade", body = super::ErrorBody),
              (status = 405, description = "`not_websocket`: a HEAD request", body = super::ErrorBody),
              (status = 426, description = "`not_websocket`: an upgrade the connection cannot make (HTTP/1.0)", body = super::ErrorBody)))]
pub(crate) async fn stream(
    State(api): State<Api>,
    Params(filter): Params<Filter>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let sub = Subscription::parse(filter)?;
    let ws = ws.map_err(|e| ApiError::new(e.status(), "not_websocket", e.body_text()))?;
    // Subscribe before the upgrade completes, so nothing after it is missed.
    let rx = api.events.subscribe();
    let buffer = api.config.limits.event_buffer;
    Ok(ws.on_upgrade(move |socket| forward(socket, rx, sub, buffer)))
}

async fn forward(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Published>>,
    sub: Subscription,
    buffer: usize,
) {
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(e) => {
                    if sub.wants(&e) && socket.send(Message::text(e.json.clone())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let notice = json!({
                        "event": "dropped",
                        "reason": format!(
                            "too slow: {missed} events were missed (the buffer holds {buffer}); reconnect to resume"
                        ),
                    });
                    let _ = socket.send(Message::text(notice.to_string())).await;
                    let frame = CloseFrame { code: TOO_SLOW, reason: "too slow".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                Err(RecvError::Closed) => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
