//! The legacygpu wire protocol: JSON text frames over WebSocket on port 8765.
//!
//! Every message is a JSON object with a `msg_type` field. The seed's seven
//! messages (`register_peer`, `heartbeat`, `task_result`, `register_gamer`,
//! `task_request`, `registration_ack`, `task_assignment`) work exactly as the
//! seed shows them; everything we added is an optional field or a new message
//! type, documented in `docs/PROTOCOL.md`.
//!
//! Messages are split by direction: [`ToCoordinator`] is what peers and gamers
//! send, [`FromCoordinator`] what the coordinator sends back. Both decode with
//! [`ToCoordinator::decode`] / [`FromCoordinator::decode`], which first find
//! `msg_type` with a cheap scan and then parse the one struct it names, so that
//! errors say precisely what is wrong ("unknown msg_type `foo`", "invalid
//! task_request: missing field `task_type`") and task payloads stay raw JSON
//! ([`Json`]) that is forwarded without being parsed again.
//!
//! Unknown fields are ignored everywhere: clients may send more than we read.
//!
//! This crate does no IO.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod capabilities;
mod endpoints;
mod messages;

pub use capabilities::{Capabilities, GpuInfo, ModelEntry, TaskNeeds};
pub use endpoints::{BadEndpoints, Endpoints, HA_SILENCE, LONE_SILENCE, MAX_ENDPOINTS};
pub use messages::*;

/// A JSON value kept as text: task data and results are forwarded unparsed.
pub type Json = Arc<RawValue>;

/// The default WebSocket port of the coordinator.
pub const DEFAULT_WS_PORT: u16 = 8765;
/// The default HTTP port of the coordinator.
pub const DEFAULT_HTTP_PORT: u16 = 8000;
/// The longest id (peer, gamer, task, idempotency key) we accept, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Parses JSON text into a [`Json`] value, checking it is well-formed.
pub fn json(text: &str) -> Result<Json, serde_json::Error> {
    RawValue::from_string(text.to_owned()).map(Arc::from)
}

/// Serializes a value into a [`Json`].
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Json, serde_json::Error> {
    serde_json::value::to_raw_value(value).map(Arc::from)
}

/// The JSON `{}`.
pub fn empty_object() -> Json {
    // A literal `{}` is valid JSON, so this cannot fail; `unwrap_or_else`
    // keeps the function total without a panic path.
    json("{}").unwrap_or_else(|_| null())
}

/// The JSON `null`.
pub fn null() -> Json {
    Arc::from(RawValue::NULL.to_owned())
}

/// Why a frame could not be decoded. The message is sent back to the client
/// in an `error` reply; [`DecodeError::code`] is its stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or not a JSON object.
    Malformed(String),
    /// The object has no string `msg_type`.
    MissingType,
    /// `msg_type` names no message we know (in this direction).
    UnknownType(String),
    /// The message's fields are missing, of the wrong type or out of range.
    Invalid { msg_type: String, reason: String },
}

impl DecodeError {
    /// The stable, machine-readable code sent in `error.code`.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::MALFORMED_JSON,
            DecodeError::MissingType => ErrorCode::MISSING_MSG_TYPE,
            DecodeError::UnknownType(_) => ErrorCode::UNKNOWN_MSG_TYPE,
            DecodeError::Invalid { .. } => ErrorCode::INVALID_MESSAGE,
        }
    }

    /// The `msg_type` the frame named, when it named one.
    pub fn msg_type(&self) -> Option<&str> {
        match self {
            DecodeError::UnknownType(t) | DecodeError::Invalid { msg_type: t, .. } => Some(t),
            DecodeError::Malformed(_) | DecodeError::MissingType => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(e) => write!(f, "malformed JSON: {e}"),
            DecodeError::MissingType => f.write_str("missing string field `msg_type`"),
            DecodeError::UnknownType(t) => write!(f, "unknown msg_type `{t}`"),
            DecodeError::Invalid { msg_type, reason } => write!(f, "invalid {msg_type}: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The first pass of decoding: finds `msg_type` and skips everything else
/// without allocating.
#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(borrow, default)]
    msg_type: Option<&'a RawValue>,
}

/// The frame's `msg_type`: a frame that is not one JSON object is
/// malformed (serde would read a struct from an array, field by field); one
/// whose `msg_type` is absent or not a string has no type.
fn tag_of(text: &str) -> Result<String, DecodeError> {
    let not_object = || DecodeError::Malformed("the frame is not a JSON object".into());
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => not_object(),
            Err(e) => DecodeError::Malformed(e.to_string()),
        });
    }
    let tag: Tag<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let raw = tag.msg_type.ok_or(DecodeError::MissingType)?;
    serde_json::from_str::<String>(raw.get()).map_err(|_| DecodeError::MissingType)
}

/// The `task_id` a frame names, when it is one object with a valid id
/// there: the error answering a frame that did not decode then says which
/// task it refuses (a client waiting for that task's answer gets it).
pub fn task_id_of(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Named<'a> {
        #[serde(borrow, default)]
        task_id: Option<&'a RawValue>,
    }
    let named: Named<'_> = serde_json::from_str(text).ok()?;
    let id: String = serde_json::from_str(named.task_id?.get()).ok()?;
    check_id("", "task_id", &id).is_ok().then_some(id)
}

fn parse<'a, T: Deserialize<'a>>(msg_type: &str, text: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(text)
        .map_err(|e| DecodeError::Invalid { msg_type: msg_type.to_owned(), reason: e.to_string() })
}

fn invalid(msg_type: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid { msg_type: msg_type.to_owned(), reason: reason.into() }
}

/// Checks an id field: non-empty, at most [`MAX_ID_LEN`] bytes, no control characters.
fn check_id(msg_type: &str, field: &str, id: &str) -> Result<(), DecodeError> {
    if id.is_empty() {
        return Err(invalid(msg_type, format!("`{field}` must not be empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(msg_type, format!("`{field}` is longer than {MAX_ID_LEN} bytes")));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid(msg_type, format!("`{field}` contains control characters")));
    }
    Ok(())
}

/// Messages peers and gamers send to the coordinator.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "msg_type", rename_all = "snake_case")]
pub enum ToCoordinator {
    // Peer messages.
    RegisterPeer(RegisterPeer),
    Heartbeat(Heartbeat),
    TaskStarted(TaskStarted),
    TaskResult(TaskResult),
    TaskProgress(TaskProgress),
    ReturnTask(ReturnTask),
    Drain(Drain),
    Join(Join),
    // Gamer messages.
    RegisterGamer(RegisterGamer),
    TaskRequest(TaskRequest),
    CancelTask(CancelTask),
    TaskStatus(TaskStatusQuery),
}

impl ToCoordinator {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<ToCoordinator, DecodeError> {
        let t = tag_of(text)?;
        let msg = match t.as_str() {
            "register_peer" => ToCoordinator::RegisterPeer(parse(&t, text)?),
            "heartbeat" => ToCoordinator::Heartbeat(parse(&t, text)?),
            "task_started" => ToCoordinator::TaskStarted(parse(&t, text)?),
            "task_result" => ToCoordinator::TaskResult(parse(&t, text)?),
            "task_progress" => ToCoordinator::TaskProgress(parse(&t, text)?),
            "return_task" => ToCoordinator::ReturnTask(parse(&t, text)?),
            "drain" => ToCoordinator::Drain(parse(&t, text)?),
            "join" => ToCoordinator::Join(parse(&t, text)?),
            "register_gamer" => ToCoordinator::RegisterGamer(parse(&t, text)?),
            "task_request" => ToCoordinator::TaskRequest(parse(&t, text)?),
            "cancel_task" => ToCoordinator::CancelTask(parse(&t, text)?),
            "task_status" => ToCoordinator::TaskStatus(parse(&t, text)?),
            _ => return Err(DecodeError::UnknownType(t)),
        };
        msg.validate(&t)?;
        Ok(msg)
    }

    /// Encodes the message as one text frame.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// The message's `msg_type`.
    pub fn msg_type(&self) -> &'static str {
        match self {
            ToCoordinator::RegisterPeer(_) => "register_peer",
            ToCoordinator::Heartbeat(_) => "heartbeat",
            ToCoordinator::TaskStarted(_) => "task_started",
            ToCoordinator::TaskResult(_) => "task_result",
            ToCoordinator::TaskProgress(_) => "task_progress",
            ToCoordinator::ReturnTask(_) => "return_task",
            ToCoordinator::Drain(_) => "drain",
            ToCoordinator::Join(_) => "join",
            ToCoordinator::RegisterGamer(_) => "register_gamer",
            ToCoordinator::TaskRequest(_) => "task_request",
            ToCoordinator::CancelTask(_) => "cancel_task",
            ToCoordinator::TaskStatus(_) => "task_status",
        }
    }

    fn validate(&self, t: &str) -> Result<(), DecodeError> {
        match self {
            ToCoordinator::RegisterPeer(m) => check_id(t, "peer_id", &m.peer_id),
            ToCoordinator::Heartbeat(m) => check_id(t, "peer_id", &m.peer_id),
            ToCoordinator::TaskStarted(m) => check_id(t, "task_id", &m.task_id),
            ToCoordinator::TaskResult(m) => {
                check_id(t, "task_id", &m.task_id)?;
                if m.result.is_none() && m.error.is_none() {
                    return Err(invalid(t, "needs a `result` or an `error`"));
                }
                Ok(())
            }
            ToCoordinator::TaskProgress(m) => check_id(t, "task_id", &m.task_id),
            ToCoordinator::ReturnTask(m) => check_id(t, "task_id", &m.task_id),
            ToCoordinator::Drain(_) => Ok(()),
            ToCoordinator::Join(m) => check_id(t, "peer_id", &m.peer_id),
            ToCoordinator::RegisterGamer(m) => check_id(t, "gamer_id", &m.gamer_id),
            ToCoordinator::TaskRequest(m) => m.validate(t),
            ToCoordinator::CancelTask(m) => check_id(t, "task_id", &m.task_id),
            ToCoordinator::TaskStatus(m) => check_id(t, "task_id", &m.task_id),
        }
    }
}

/// Messages the coordinator sends to peers and gamers.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "msg_type", rename_all = "snake_case")]
pub enum FromCoordinator {
    RegistrationAck(RegistrationAck),
    TaskAssignment(TaskAssignment),
    CancelTask(CancelAssignment),
    TaskAccepted(TaskAccepted),
    TaskResult(TaskResultOut),
    TaskError(TaskErrorOut),
    TaskProgress(TaskProgressOut),
    TaskStatus(TaskStatusOut),
    Error(ErrorMsg),
    Shutdown(Shutdown),
    Joined(Joined),
}

impl FromCoordinator {
    /// Decodes one text frame (clients use this).
    pub fn decode(text: &str) -> Result<FromCoordinator, DecodeError> {
        let t = tag_of(text)?;
        Ok(match t.as_str() {
            "registration_ack" => FromCoordinator::RegistrationAck(parse(&t, text)?),
            "task_assignment" => FromCoordinator::TaskAssignment(parse(&t, text)?),
            "cancel_task" => FromCoordinator::CancelTask(parse(&t, text)?),
            "task_accepted" => FromCoordinator::TaskAccepted(parse(&t, text)?),
            "task_result" => FromCoordinator::TaskResult(parse(&t, text)?),
            "task_error" => FromCoordinator::TaskError(parse(&t, text)?),
            "task_progress" => FromCoordinator::TaskProgress(parse(&t, text)?),
            "task_status" => FromCoordinator::TaskStatus(parse(&t, text)?),
            "error" => FromCoordinator::Error(parse(&t, text)?),
            "shutdown" => FromCoordinator::Shutdown(parse(&t, text)?),
            "joined" => FromCoordinator::Joined(parse(&t, text)?),
            _ => return Err(DecodeError::UnknownType(t)),
        })
    }

    /// Encodes the message as one text frame.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// The message's `msg_type`.
    pub fn msg_type(&self) -> &'static str {
        match self {
            FromCoordinator::RegistrationAck(_) => "registration_ack",
            FromCoordinator::TaskAssignment(_) => "task_assignment",
            FromCoordinator::CancelTask(_) => "cancel_task",
            FromCoordinator::TaskAccepted(_) => "task_accepted",
            FromCoordinator::TaskResult(_) => "task_result",
            FromCoordinator::TaskError(_) => "task_error",
            FromCoordinator::TaskProgress(_) => "task_progress",
            FromCoordinator::TaskStatus(_) => "task_status",
            FromCoordinator::Error(_) => "error",
            FromCoordinator::Shutdown(_) => "shutdown",
            FromCoordinator::Joined(_) => "joined",
        }
    }
}

fn encode<T: Serialize>(msg: &T) -> String {
    // Our message types serialize to JSON infallibly: every field is a
    // string, number, bool, raw JSON or a struct of those, and no map has
    // non-string keys. A failure would be a bug in this crate; an `error`
    // frame keeps the connection usable instead of panicking.
    serde_json::to_string(msg).unwrap_or_else(|e| {
        serde_json::json!({
            "msg_type": "error",
            "code": "internal",
            "reason": format!("encode failed: {e}"),
        })
        .to_string()
    })
}

#[cfg(test)]
mod tests;
