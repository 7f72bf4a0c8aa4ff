//! The coordinator: the async shell around the scheduler.
//!
//! It listens for the WebSocket protocol (port 8765 by default) — peers and
//! gamers — and, in the same process, for the HTTP API (port 8000). Inside,
//! one core loop owns the [`sched::Scheduler`]: connection tasks decode frames
//! and forward them, the core feeds the scheduler and carries out its commands,
//! and its events go to the store, the metrics and the event stream.
//!
//! ```text
//!  peers/gamers ──ws──▶ conn tasks ──Input──▶ core loop ──▶ Scheduler
//!        ▲                                 │  │
//!        └────────── Outbound ─────────────┘  └──▶ observer (store, metrics, events)
//! ```
//!
//! Protected by default: without a credential only loopback clients are
//! admitted, and plaintext only from loopback; both ports speak TLS (told
//! apart from plaintext by the first byte), with certificates from a CA of
//! the coordinator's own that join tokens pin.

mod approvals;
mod clock;
mod config;
mod conn;
mod core;
mod credentials;
mod edge;
mod ha;
mod hour;
mod http;
mod identity;
mod observe;
mod quota;
mod reads;
mod server;
mod snapshot;
mod telemetry;
mod tls;

pub use crate::config::{
    ApiKey, ApiRole, CertSource, Config, EdgeLimits, LeaseConfig, Limits, Secret, StoreMode,
    parse_api_keys,
};
pub use crate::credentials::TokenKind;
pub use crate::server::{Coordinator, RunError, StartError, TlsHandle};
pub use store::{Sync, Target};

/// Every HTTP route: method, path and the least role that may call it
/// (`read-only`, `client`, `admin`).
pub fn http_routes() -> Vec<(String, &'static str, &'static str)> {
    http::routes::ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path, r.role.as_str()))
        .collect()
}

/// The HTTP API's OpenAPI document, pretty-printed (what `/openapi.json` serves).
pub fn openapi_json() -> String {
    http::routes::openapi().to_pretty_json().unwrap_or_default()
}
