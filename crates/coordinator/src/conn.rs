//! One WebSocket connection: handshake, admission, decoding, writing.
//!
//! A connection task only parses and forwards: frames are decoded here (so
//! JSON parsing spreads over the runtime's threads) and handed to the core
//! loop as [`Input::Message`]; what the core wants sent arrives on the
//! connection's own bounded channel as [`Outbound`]. Malformed frames are
//! answered here with an `error` reply and never reach the core. A frame
//! over the size limit closes this connection with code 1009 and touches no
//! other; invalid UTF-8 closes it with 1007, a protocol violation (reserved
//! bits, an unmasked frame…) with 1002.
//!
//! Deadlines: the TLS and WebSocket handshakes must be done within
//! `handshake_timeout`, a registration must be acknowledged within
//! `registration_timeout`, and a connection from which nothing arrives (not
//! even a pong to our pings) for `idle_timeout` is closed. So no socket holds
//! a connection permit for long without being a live session.
//!
//! Credentials are checked here (`credentials.rs`); the principal a
//! registration proves goes to the core ([`Input::Authenticated`]) just
//! before the registration, for the identity rule. A worker credential that
//! is revoked closes its connection at once.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use codes::CloseReason;
use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusRecorder;
use proto::{DecodeError, ErrorCode, ErrorMsg, FromCoordinator, ToCoordinator};
use sched::ConnId;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use tracing::{debug, info};

use crate::config::Config;
use crate::core::Input;
use crate::credentials::{Claim, Credentials, Principal};
use crate::edge::{self, Budgeted, FrameBudget, Io, Transport};
use crate::tls::Tls;

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
    pub credentials: Arc<Credentials>,
    /// Where refused frames are counted.
    pub metrics: Arc<PrometheusRecorder>,
    pub tls: Arc<Tls>,
    pub budget: Arc<FrameBudget>,
    /// On a standby: the lease as known, for the `not_leader` answer every
    /// connection gets (`ha/redirect.rs`).
    pub standby: Option<watch::Receiver<crate::ha::HaStatus>>,
}

pub(crate) type Ws = WebSocketStream<Budgeted<Io>>;

impl ConnCtx {
    /// Counts a message refused here, before it reached the core.
    fn rejected(&self, reason: &ErrorCode) {
        crate::telemetry::message_rejected(&self.metrics, reason);
    }

    /// Counts a connection closed here for `why` (a metric label, not a
    /// wire code).
    fn closed_for(&self, why: &str) {
        self.rejected(&ErrorCode::new(why));
    }
}

/// Serves one TCP connection until it closes.
pub(crate) async fn serve(stream: TcpStream, ctx: ConnCtx) {
    let header_token = Arc::new(std::sync::Mutex::new(None));
    let deadline = Instant::now() + ctx.config.edge.handshake_timeout;
    let handshake = handshake(stream, &ctx, Arc::clone(&header_token));
    let ws = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(remote = %ctx.remote, "handshake failed: {e}");
            return;
        }
        Err(_) => {
            ctx.closed_for("handshake_timeout");
            debug!(remote = %ctx.remote, "closing: no handshake within the deadline");
            return;
        }
    };
    // What the upgrade request's bytes drew from the budget goes back.
    ws.get_ref().message_done();
    if let Some(status) = &ctx.standby {
        let deadline = ctx.config.edge.registration_timeout;
        return crate::ha::redirect::refuse_ws(ws, status, deadline).await;
    }
    let (tx, rx) = mpsc::channel(ctx.config.outbound_capacity);
    let connected = Input::Connected { conn: ctx.conn, tx, remote: ctx.remote };
    if ctx.core.send(connected).await.is_err() {
        return; // The core is gone: shutting down.
    }
    let header_token = header_token.lock().ok().and_then(|mut t| t.take());
    let mut session = Session::new(&ctx, ws, rx, header_token);
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

/// TLS or plaintext, then the WebSocket upgrade.
async fn handshake(
    stream: TcpStream,
    ctx: &ConnCtx,
    header_token: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<Ws, String> {
    let (io, transport) =
        edge::open(stream, ctx.remote, &ctx.tls, &ctx.config).await.map_err(|e| e.to_string())?;
    if let Transport::Plain { allowed: false } = transport {
        ctx.closed_for("plaintext_refused");
    }
    let io = Budgeted::new(io, Arc::clone(&ctx.budget));
    let callback = handshake_check(ctx, transport, header_token);
    let ws_config = ws_config(&ctx.config);
    tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(ws_config))
        .await
        .map_err(|e| e.to_string())
}

/// Refuses the upgrade (with an HTTP status and a reason people can read)
/// over the connection limit, for plaintext from another machine, or with
/// an `Authorization` header that is no credential at all; keeps a bearer
/// token for the registration to prove itself with.
// The error type is tungstenite's callback signature, large or not.
#[allow(clippy::result_large_err)]
fn handshake_check(
    ctx: &ConnCtx,
    transport: Transport,
    header_token: Arc<std::sync::Mutex<Option<String>>>,
) -> impl FnOnce(&Request, Response) -> Result<Response, ErrorResponse> + use<> {
    let (remote, admitted) = (ctx.remote, ctx.admitted);
    let credentials = Arc::clone(&ctx.credentials);
    move |req: &Request, resp: Response| {
        if !admitted {
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections; retry later",
            ));
        }
        if let Transport::Plain { allowed: false } = transport {
            info!(%remote, "refused plaintext from another machine");
            return Err(reject(StatusCode::FORBIDDEN, edge::PLAINTEXT_REFUSED));
        }
        let bearer =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(bearer_token);
        if let Some(given) = bearer {
            // Whether it admits what the connection registers as is decided
            // then; a header that is nobody's credential is refused now.
            if !credentials.recognises(given) {
                return Err(reject(StatusCode::UNAUTHORIZED, "invalid token"));
            }
            if let Ok(mut slot) = header_token.lock() {
                *slot = Some(given.to_owned());
            }
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
    ws: Ws,
    rx: mpsc::Receiver<Outbound>,
    /// Whom the registration proved this connection to be.
    principal: Option<Principal>,
    /// A principal just proven, for the core before the registration.
    proven: Option<Principal>,
    /// The upgrade's bearer token, for registrations that carry none.
    header_token: Option<String>,
    /// A `registration_ack` went out.
    registered: bool,
    last_heard: Instant,
    revocations: watch::Receiver<u64>,
}

/// A message refused for want of the token.
struct Denied {
    /// Boxed: the refusal is rare and the `Ok` path should stay small.
    error: Box<ErrorMsg>,
    /// A registration with a wrong token closes the connection.
    close_connection: bool,
}

/// Whether the session goes on after handling something.
enum Flow {
    Continue,
    Stop,
}

impl<'a> Session<'a> {
    fn new(
        ctx: &'a ConnCtx,
        ws: Ws,
        rx: mpsc::Receiver<Outbound>,
        header_token: Option<String>,
    ) -> Session<'a> {
        let revocations = ctx.credentials.approvals.changes();
        Session {
            ctx,
            ws,
            rx,
            principal: None,
            proven: None,
            header_token,
            registered: false,
            last_heard: Instant::now(),
            revocations,
        }
    }

    async fn run(&mut self) {
        let edge = &self.ctx.config.edge;
        let registration_deadline = Instant::now() + edge.registration_timeout;
        let ping_every = (edge.idle_timeout / 3).max(std::time::Duration::from_millis(10));
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        loop {
            let flow = tokio::select! {
                frame = self.ws.next() => {
                    self.last_heard = Instant::now();
                    match frame {
                        Some(Ok(message)) => {
                            self.ws.get_ref().message_done();
                            self.on_message(message).await
                        }
                        Some(Err(e)) => self.on_error(e).await,
                        None => Flow::Stop,
                    }
                }
                out = self.rx.recv() => match out {
                    Some(out) => self.write(out).await,
                    None => Flow::Stop,
                },
                _ = tokio::time::sleep_until(registration_deadline), if !self.registered => {
                    self.ctx.closed_for("registration_timeout");
                    let reason = "no registration within the registration timeout";
                    self.close(CloseReason::Idle.code(), reason.into()).await;
                    Flow::Stop
                }
                _ = ping.tick() => self.on_ping_tick().await,
                Ok(()) = self.revocations.changed() => self.check_revoked().await,
            };
            if let Flow::Stop = flow {
                break;
            }
        }
    }

    /// Closes a connection silent for the idle timeout, else pings it.
    async fn on_ping_tick(&mut self) -> Flow {
        let idle = self.ctx.config.edge.idle_timeout;
        if self.last_heard.elapsed() >= idle {
            self.ctx.closed_for("idle_timeout");
            let reason = format!("nothing received for {} s", idle.as_secs());
            self.close(CloseReason::Idle.code(), reason.into()).await;
            return Flow::Stop;
        }
        if self.ws.send(Message::Ping(Default::default())).await.is_err() {
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// A worker whose credential was revoked is closed at once.
    async fn check_revoked(&mut self) -> Flow {
        let Some(Principal::Worker { peer_id, digest }) = &self.principal else {
            return Flow::Continue;
        };
        if self.ctx.credentials.approvals.admits_digest(peer_id, digest) {
            return Flow::Continue;
        }
        info!(peer = %peer_id, remote = %self.ctx.remote, "closing: its credential was revoked");
        self.ctx.rejected(&ErrorCode::REVOKED);
        let err = ErrorMsg::new(ErrorCode::REVOKED, "this worker's credential was revoked");
        let _ = self.send_now(FromCoordinator::Error(err)).await;
        self.close(CloseReason::Unauthorized.code(), "credential revoked".into()).await;
        Flow::Stop
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
            // The WebSocket library has queued the closing handshake's
            // answer (the code echoed, or 1002 for a code no endpoint may
            // send): it goes out before the socket does.
            Message::Close(_) => {
                let _ = self.ws.flush().await;
                Flow::Stop
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        if let Flow::Stop = self.check_revoked().await {
            return Flow::Stop;
        }
        let msg = match ToCoordinator::decode(text) {
            Ok(msg) => msg,
            Err(e) => {
                self.ctx.rejected(&e.code());
                return self.send_now(FromCoordinator::Error(decode_error(&e, text))).await;
            }
        };
        let msg = match self.authorize(msg) {
            Ok(msg) => msg,
            Err(Denied { error, close_connection }) => {
                self.ctx.rejected(&ErrorCode::UNAUTHORIZED);
                let flow = self.send_now(FromCoordinator::Error(*error)).await;
                if close_connection {
                    let reason = CloseReason::Unauthorized;
                    self.close(reason.code(), reason.as_str().into()).await;
                    return Flow::Stop;
                }
                return flow;
            }
        };
        // The principal goes first, on the same channel, so the core knows it
        // when the registration arrives.
        if let Some(principal) = self.proven.take() {
            let proven = Input::Authenticated { conn: self.ctx.conn, principal };
            if self.ctx.core.send(proven).await.is_err() {
                return Flow::Stop;
            }
        }
        let input = Input::Message { conn: self.ctx.conn, msg };
        if self.ctx.core.send(input).await.is_err() { Flow::Stop } else { Flow::Continue }
    }

    /// A registration (or `join`) proves who the connection is with its
    /// `token` or the upgrade's bearer header; without one, only protected
    /// mode's own machine (or `--insecure`) gets in. Tokens are stripped
    /// before the message goes on, so they are never logged.
    fn authorize(&mut self, mut msg: ToCoordinator) -> Result<ToCoordinator, Denied> {
        let token = match &mut msg {
            ToCoordinator::RegisterPeer(m) => m.token.take(),
            ToCoordinator::RegisterGamer(m) => m.token.take(),
            ToCoordinator::Join(m) => Some(std::mem::take(&mut m.token)).filter(|t| !t.is_empty()),
            _ => None,
        };
        let given = token.or_else(|| self.header_token.clone());
        let config = &self.ctx.config;
        let open = config.token.is_none() && config.admits(&self.ctx.remote);
        let msg_type = msg.msg_type();
        let denied = |reason: &str, close_connection| Denied {
            error: Box::new(ErrorMsg::new(ErrorCode::UNAUTHORIZED, reason).in_reply_to(msg_type)),
            close_connection,
        };
        let claim = match &msg {
            ToCoordinator::RegisterPeer(m) => Claim::Peer(&m.peer_id),
            ToCoordinator::RegisterGamer(_) => Claim::Gamer,
            ToCoordinator::Join(_) => {
                if given.as_deref().is_some_and(|g| self.ctx.credentials.may_join(g)) {
                    return Ok(msg);
                }
                return Err(denied(
                    "invalid join token: use the worker join token `legacygpu cluster start` printed \
                     (or `legacygpu cluster token show`)",
                    true,
                ));
            }
            _ if self.principal.is_some() || open => return Ok(msg),
            _ => return Err(denied("not authorized: register with a credential first", false)),
        };
        // A secret that is nobody's credential is refused even where none
        // is needed, as a wrong bearer header is (a misconfigured client
        // learns so at once).
        let principal = match given {
            Some(g) => self.ctx.credentials.authorize(&g, claim),
            None => open.then_some(Principal::Local),
        };
        let Some(principal) = principal else {
            let reason = if open {
                "invalid token: it is no credential of this cluster that admits this registration \
                 (register without one here, or with one `legacygpu cluster token show` prints)"
            } else {
                "missing or invalid token: this coordinator admits other machines with a \
                 credential only (a join token, the cluster token, an API key, or a worker's own \
                 credential) in the `token` field of the registration or an \
                 `Authorization: Bearer` header"
            };
            return Err(denied(reason, true));
        };
        self.principal = Some(principal.clone());
        self.proven = Some(principal);
        Ok(msg)
    }

    /// Closes with the RFC 6455 code for what went wrong, where one applies.
    async fn on_error(&mut self, e: WsError) -> Flow {
        use tokio_tungstenite::tungstenite::error::ProtocolError as P;
        let remote = self.ctx.remote;
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                info!(%remote, size, max_size, "closing: frame over the limit");
                self.ctx.rejected(&ErrorCode::FRAME_TOO_LARGE);
                let reason = format!("message of {size} bytes is over the limit of {max_size}");
                self.close(CloseReason::TooBig.code(), reason.into()).await;
            }
            WsError::Utf8(_) => {
                debug!(%remote, "closing: invalid UTF-8 in a text frame");
                self.ctx.closed_for("invalid_utf8");
                let reason = "invalid UTF-8 in a text frame";
                self.close(CloseReason::InvalidPayload.code(), reason.into()).await;
            }
            WsError::Protocol(
                P::ResetWithoutClosingHandshake | P::ReceivedAfterClosing | P::SendAfterClosing,
            ) => debug!(%remote, "connection ended without a close"),
            WsError::Protocol(p) => {
                debug!(%remote, "closing: protocol error: {p}");
                self.ctx.closed_for("protocol_error");
                let reason = format!("protocol error: {p}");
                self.close(CloseReason::ProtocolError.code(), reason.into()).await;
            }
            WsError::Io(io) if edge::is_budget_spent(&io) => {
                info!(%remote, "closing: the budget for partly received messages is spent");
                self.ctx.closed_for("frame_budget");
                let reason = "the coordinator is holding too many large messages; retry later";
                self.close(CloseReason::TryAgainLater.code(), reason.into()).await;
            }
            e => debug!(%remote, "connection error: {e}"),
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
                    if let FromCoordinator::RegistrationAck(_) = msg.as_ref() {
                        self.registered = true;
                    }
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
        if let FromCoordinator::RegistrationAck(_) = &msg {
            self.registered = true;
        }
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

/// The `error` reply for a frame that did not decode, naming the message
/// type and the task it refused where the frame says them.
pub(crate) fn decode_error(e: &DecodeError, text: &str) -> ErrorMsg {
    let err = ErrorMsg::new(e.code(), e.to_string());
    let Some(t) = e.msg_type() else { return err };
    let err = err.in_reply_to(t);
    match proto::task_id_of(text) {
        Some(task) => err.task(task),
        None => err,
    }
}

/// The token of an `Authorization: Bearer …` header; the scheme is
/// case-insensitive (RFC 9110, section 11.1).
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod bearer_tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for header in ["Bearer abc", "bearer abc", "BEARER  abc "] {
            assert_eq!(bearer_token(header), Some("abc"), "{header}");
        }
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
