//! One WebSocket connection: handshake, admission, decoding, writing.
//!
//! A connection task only parses and forwards: frames are decoded here (so
//! JSON parsing spreads over the runtime's threads) and handed to the core
//! loop as [`Input::Message`]; what the core wants sent arrives on the
//! connection's own bounded channel as [`Outbound`]. Malformed frames are
//! answered here with an `error` reply and never reach the core. A frame
//! over the size limit closes this connection with code 1009 and touches no
//! other.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use codes::CloseReason;
use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusRecorder;
use proto::{DecodeError, ErrorCode, ErrorMsg, FromCoordinator, ToCoordinator};
use sched::ConnId;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use tracing::{debug, info};

use crate::approvals::Approvals;
use crate::config::Config;
use crate::core::Input;

/// What the core sends to a connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Boxed: every connection's channel preallocates a block of slots, and
    /// a small slot keeps 10 000 idle connections cheap.
    Msg(Box<FromCoordinator>),
    /// Close the connection, with the reason's code.
    Close(CloseReason),
}

pub(crate) struct ConnCtx {
    pub conn: ConnId,
    pub remote: SocketAddr,
    pub core: mpsc::Sender<Input>,
    pub config: Arc<Config>,
    /// False when the coordinator is at its connection limit.
    pub admitted: bool,
    pub approvals: Approvals,
    /// Where refused frames are counted.
    pub metrics: Arc<PrometheusRecorder>,
}

impl ConnCtx {
    /// Counts a message refused here, before it reached the core.
    fn rejected(&self, reason: &ErrorCode) {
        crate::telemetry::message_rejected(&self.metrics, reason);
    }
}

/// Serves one TCP connection until it closes.
pub(crate) async fn serve(stream: TcpStream, ctx: ConnCtx) {
    let _ = stream.set_nodelay(true);
    let header_auth = Arc::new(HeaderAuth::default());
    let callback = handshake_check(&ctx, Arc::clone(&header_auth));
    let ws_config = ws_config(&ctx.config);
    let ws =
        match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config))
            .await
        {
            Ok(ws) => ws,
            Err(e) => {
                debug!(remote = %ctx.remote, "handshake failed: {e}");
                return;
            }
        };
    let (tx, rx) = mpsc::channel(ctx.config.outbound_capacity);
    let connected = Input::Connected { conn: ctx.conn, tx, remote: ctx.remote };
    if ctx.core.send(connected).await.is_err() {
        return; // The core is gone: shutting down.
    }
    // Without a token, protected mode already chose who gets this far;
    // a non-loopback peer let in only for approvals must show its credential.
    let open = ctx.config.token.is_none() && ctx.config.admits(&ctx.remote);
    let authorized = open || header_auth.matched.load(Ordering::Relaxed);
    let header_token = header_auth.other.lock().ok().and_then(|mut t| t.take());
    let mut session = Session { ctx: &ctx, ws, rx, authorized, header_token };
    session.run().await;
    // What the core queued but this connection never wrote goes back, so
    // that results are kept for the gamer's return instead of lost.
    session.rx.close();
    let mut unsent = Vec::new();
    while let Ok(out) = session.rx.try_recv() {
        if let Outbound::Msg(msg) = out {
            unsent.push(*msg);
        }
    }
    let _ = ctx.core.send(Input::Disconnected { conn: ctx.conn, unsent }).await;
    // The socket closes here, after the core has heard of it.
    drop(session);
}

/// The WebSocket limits: frames and messages over `max_frame_bytes` fail,
/// and buffers start small so that 10 000 idle peers stay cheap.
pub(crate) fn ws_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
}

/// Refuses the upgrade (with an HTTP status and a reason people can read)
/// for clients protected mode does not admit, over the connection limit, or
/// with a wrong `Authorization` header; notes a right one.
// The error type is tungstenite's callback signature, large or not.
#[allow(clippy::result_large_err)]
fn handshake_check(
    ctx: &ConnCtx,
    header_auth: Arc<HeaderAuth>,
) -> impl FnOnce(&Request, Response) -> Result<Response, ErrorResponse> + use<> {
    let config = Arc::clone(&ctx.config);
    let (remote, admitted) = (ctx.remote, ctx.admitted);
    let approvals = ctx.approvals.clone();
    move |req: &Request, resp: Response| {
        if !admitted {
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections; retry later",
            ));
        }
        if !config.admits(&remote) && approvals.is_empty() {
            info!(%remote, "refused a non-loopback client in protected mode");
            return Err(reject(
                StatusCode::FORBIDDEN,
                "protected mode: this coordinator has no token configured and accepts \
                 loopback clients only; start it with --token (and give peers the token) \
                 or with --insecure",
            ));
        }
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let (Some(token), Some(given)) = (&config.token, bearer) {
            if token.matches(given.trim()) {
                header_auth.matched.store(true, Ordering::Relaxed);
            } else if approvals.is_empty() {
                return Err(reject(StatusCode::UNAUTHORIZED, "invalid token"));
            }
        }
        // It may be an approved worker's credential, checked against its
        // peer id at registration.
        if let (Some(given), Ok(mut other)) = (bearer, header_auth.other.lock()) {
            *other = Some(given.trim().to_owned());
        }
        Ok(resp)
    }
}

fn reject(status: StatusCode, reason: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(format!("{reason}\n")));
    *resp.status_mut() = status;
    resp
}

struct Session<'a> {
    ctx: &'a ConnCtx,
    ws: WebSocketStream<TcpStream>,
    rx: mpsc::Receiver<Outbound>,
    authorized: bool,
    /// The upgrade's bearer token, for registrations that carry none.
    header_token: Option<String>,
}

/// What the upgrade's `Authorization` header showed.
#[derive(Default)]
struct HeaderAuth {
    /// It carried the cluster token.
    matched: AtomicBool,
    /// The bearer token given, to check against approved workers.
    other: std::sync::Mutex<Option<String>>,
}

/// A message refused for want of the token.
struct Denied {
    error: ErrorMsg,
    /// A registration with a wrong token closes the connection.
    close_connection: bool,
}

/// Whether the session goes on after handling something.
enum Flow {
    Continue,
    Stop,
}

impl Session<'_> {
    async fn run(&mut self) {
        loop {
            let flow = tokio::select! {
                frame = self.ws.next() => match frame {
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(e)) => self.on_error(e).await,
                    None => Flow::Stop,
                },
                out = self.rx.recv() => match out {
                    Some(out) => self.write(out).await,
                    None => Flow::Stop,
                },
            };
            if let Flow::Stop = flow {
                break;
            }
        }
    }

    async fn on_message(&mut self, message: Message) -> Flow {
        match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            Message::Binary(_) => {
                self.ctx.rejected(&ErrorCode::UNSUPPORTED_FRAME);
                let err = ErrorMsg::new(
                    ErrorCode::UNSUPPORTED_FRAME,
                    "binary frames are not part of the protocol; send JSON text frames",
                );
                self.send_now(FromCoordinator::Error(err)).await
            }
            Message::Close(_) => Flow::Stop,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let msg = match ToCoordinator::decode(text) {
            Ok(msg) => msg,
            Err(e) => {
                self.ctx.rejected(&e.code());
                return self.send_now(FromCoordinator::Error(decode_error(&e))).await;
            }
        };
        let msg = match self.authorize(msg) {
            Ok(msg) => msg,
            Err(Denied { error, close_connection }) => {
                self.ctx.rejected(&ErrorCode::UNAUTHORIZED);
                let flow = self.send_now(FromCoordinator::Error(error)).await;
                if close_connection {
                    let reason = CloseReason::Unauthorized;
                    self.close(reason.code(), reason.as_str().into()).await;
                    return Flow::Stop;
                }
                return flow;
            }
        };
        let input = Input::Message { conn: self.ctx.conn, msg };
        if self.ctx.core.send(input).await.is_err() { Flow::Stop } else { Flow::Continue }
    }

    /// With a token configured, the first message must be a registration
    /// carrying it (unless the upgrade's `Authorization` header did). Tokens
    /// are stripped before the message goes on, so they are never logged.
    fn authorize(&mut self, mut msg: ToCoordinator) -> Result<ToCoordinator, Denied> {
        let token = match &mut msg {
            ToCoordinator::RegisterPeer(m) => m.token.take(),
            ToCoordinator::RegisterGamer(m) => m.token.take(),
            _ => None,
        };
        if self.authorized {
            return Ok(msg);
        }
        let registering =
            matches!(msg, ToCoordinator::RegisterPeer(_) | ToCoordinator::RegisterGamer(_));
        let expected = self.ctx.config.token.as_ref();
        let given = token.or_else(|| self.header_token.clone());
        if registering && given.as_ref().zip(expected).is_some_and(|(given, t)| t.matches(given)) {
            self.authorized = true;
            return Ok(msg);
        }
        // An approved worker's credential admits that peer id only.
        if let (ToCoordinator::RegisterPeer(m), Some(given)) = (&msg, &given)
            && self.ctx.approvals.admits(&m.peer_id, given)
        {
            self.authorized = true;
            return Ok(msg);
        }
        let reason = if registering {
            "missing or invalid token: this coordinator requires the cluster token \
             (the `token` field of the registration or an `Authorization: Bearer` header)"
        } else {
            "not authorized: register with the cluster token first"
        };
        Err(Denied {
            error: ErrorMsg::new(ErrorCode::UNAUTHORIZED, reason).in_reply_to(msg.msg_type()),
            close_connection: registering,
        })
    }

    async fn on_error(&mut self, e: WsError) -> Flow {
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                info!(remote = %self.ctx.remote, size, max_size, "closing: frame over the limit");
                self.ctx.rejected(&ErrorCode::FRAME_TOO_LARGE);
                let reason = format!("message of {size} bytes is over the limit of {max_size}");
                self.close(CloseReason::TooBig.code(), reason.into()).await;
            }
            e => debug!(remote = %self.ctx.remote, "connection error: {e}"),
        }
        Flow::Stop
    }

    /// Writes one outbound item and whatever else is already queued, then flushes.
    async fn write(&mut self, first: Outbound) -> Flow {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            match out {
                Outbound::Msg(msg) => {
                    if self.ws.feed(Message::text(msg.encode())).await.is_err() {
                        return Flow::Stop;
                    }
                }
                Outbound::Close(reason) => {
                    let _ = self.ws.flush().await;
                    self.close(reason.code(), reason.as_str().into()).await;
                    return Flow::Stop;
                }
            }
            n += 1;
            if n < self.ctx.config.limits.write_batch {
                next = self.rx.try_recv().ok();
            }
        }
        if self.ws.flush().await.is_err() { Flow::Stop } else { Flow::Continue }
    }

    async fn send_now(&mut self, msg: FromCoordinator) -> Flow {
        if self.ws.send(Message::text(msg.encode())).await.is_err() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    async fn close(&mut self, code: u16, reason: Cow<'static, str>) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.as_ref().into() };
        let _ = self.ws.close(Some(frame)).await;
    }
}

/// The `error` reply for a frame that did not decode.
pub(crate) fn decode_error(e: &DecodeError) -> ErrorMsg {
    let err = ErrorMsg::new(e.code(), e.to_string());
    match e.msg_type() {
        Some(t) => err.in_reply_to(t),
        None => err,
    }
}
