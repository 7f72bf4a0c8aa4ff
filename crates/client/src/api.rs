//! A client of the coordinator's HTTP API (port 8000): what the CLI's read
//! commands, `cluster stop` and the monitor use. Answers are JSON values as
//! the API documents them (see `/openapi.json`); failures carry the API's
//! error envelope.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The API answered with an error envelope.
    #[error("{detail} ({status}, {code})")]
    Status { status: u16, code: String, detail: String },
    #[error("the API answered something that is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not the answer's shape (a coordinator of another version?).
    #[error("the API's answer to {path} is not what this client reads: {reason}")]
    Shape { path: String, reason: String },
}

impl ApiError {
    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(path: &str, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::Shape { path: path.to_owned(), reason: e.to_string() })
}

/// The HTTP API of one coordinator.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
    /// For `https://`: how the certificate is checked.
    tls: Option<std::sync::Arc<tls::rustls::ClientConfig>>,
}

impl Api {
    /// `base` is like `http://127.0.0.1:8000`; `key` an API key (or the
    /// cluster token) sent as a bearer token. `https://` trusts the system's
    /// roots; see [`Api::pinned`].
    pub fn new(base: &str, key: Option<String>) -> Api {
        // Only https:// without system roots fails here; calls then fail
        // with the TLS error.
        Api::pinned(base, key.clone(), None).unwrap_or_else(|_| Api {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http: reqwest::Client::new(),
            tls: None,
        })
    }

    /// Like [`Api::new`], and for `https://` trusting exactly the CA with
    /// this pin (64 hex digits, as `cluster start` prints it) when given.
    pub fn pinned(base: &str, key: Option<String>, ca_hash: Option<&str>) -> Result<Api, ApiError> {
        tls::install_default_provider();
        let base = base.trim_end_matches('/').to_owned();
        let bad = |reason: String| ApiError::Unreachable { url: base.clone(), reason };
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        let mut tls = None;
        if base.starts_with("https://") {
            let trust = tls::Trust::from_options(None, ca_hash).map_err(|e| bad(e.to_string()))?;
            let config = tls::client_config(&trust).map_err(|e| bad(e.to_string()))?;
            builder = builder.use_preconfigured_tls((*config).clone());
            tls = Some(config);
        } else if ca_hash.is_some() {
            return Err(bad("--ca-hash pins a certificate, which needs https://".to_owned()));
        }
        let http = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(Api { base, key, http, tls })
    }

    /// The TLS configuration for the event stream's `wss://`, if any.
    pub fn tls_config(&self) -> Option<std::sync::Arc<tls::rustls::ClientConfig>> {
        self.tls.clone()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The event stream's WebSocket URL, with an optional query.
    pub fn events_url(&self, query: &str) -> String {
        let ws = self.base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
        if query.is_empty() {
            format!("{ws}/ws/cluster/events")
        } else {
            format!("{ws}/ws/cluster/events?{query}")
        }
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, path, None, None).await.map(|(_, v)| v)
    }

    /// GET that also returns the status (for `202 Accepted` answers).
    pub async fn get_with_status(
        &self,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<(u16, Value), ApiError> {
        self.call(Method::GET, path, None, timeout).await
    }

    /// GET, read as the answer's type (e.g. one of `api_types`).
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        typed(path, self.get(path).await?)
    }

    /// POST, read as the answer's type.
    pub async fn post_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ApiError> {
        typed(path, self.post(path, body).await?)
    }

    /// DELETE, read as the answer's type.
    pub async fn delete_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ApiError> {
        typed(path, self.delete(path).await?)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.call(Method::POST, path, Some(body), None).await.map(|(_, v)| v)
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.call(Method::PUT, path, Some(body), None).await.map(|(_, v)| v)
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::DELETE, path, None, None).await.map(|(_, v)| v)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Value), ApiError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req = req.timeout(timeout.unwrap_or(Duration::from_secs(30)) + Duration::from_secs(10));
        let resp = req.send().await.map_err(|e| {
            // The innermost cause says what happened (connection refused…).
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            ApiError::Unreachable {
                url: self.base.clone(),
                reason: format!("{cause} (is the coordinator running, and is --api-url right?)"),
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ApiError::NotJson(e.to_string()))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|_| ApiError::NotJson(text.clone()))?;
        if status.is_success() {
            return Ok((status.as_u16(), value));
        }
        let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        Err(ApiError::Status {
            status: status.as_u16(),
            code: field("error_code"),
            detail: match field("detail") {
                d if d.is_empty() => {
                    StatusCode::from_u16(status.as_u16()).map_or_else(|_| text, |s| s.to_string())
                }
                d => d,
            },
        })
    }
}
