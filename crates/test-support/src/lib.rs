//! Test helpers: run the real `legacygpu` binary on 127.0.0.1 with ephemeral
//! ports, and talk to it with raw WebSocket clients that send literal JSON.
//!
//! Waiting is always for an event (a line on stdout, a message) with a
//! generous timeout as a safety net, never a sleep. [`liar`] has peers that
//! answer by themselves, honestly or not, for tests of verification.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fuzz;
pub mod net;
pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod liar;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Asks `check` until it answers `Some`, a little apart, and returns that;
/// fails the test, saying `what` was awaited, when [`WAIT`] passes first.
/// For state that another process changes and that no message announces.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process that is killed when dropped.
pub struct Proc {
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin args…` with stderr going to a log file; returns the process
    /// and a channel of its stdout lines.
    pub fn spawn(
        bin: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Proc, mpsc::Receiver<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args).stdout(Stdio::piped()).stderr(stderr).stdin(Stdio::null());
        cmd.env("RUST_LOG", "info").env_remove("LEGACYGPU_TOKEN");
        // Pid files and CLI config of the process's own, not the developer's.
        cmd.env("XDG_STATE_HOME", dir.path()).env("XDG_CONFIG_HOME", dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (Proc { child, _dir: dir, log }, rx)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -TERM`, then waits for the exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        self.wait()
    }

    /// Waits (up to [`WAIT`]) for the process to exit; returns its code.
    pub fn wait(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                panic!("process {} did not exit; log:\n{}", self.pid(), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a stdout line containing `needle`; returns it.
pub fn wait_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line containing `{needle}` within {WAIT:?}"),
        }
    }
}

/// A coordinator process on 127.0.0.1 with ephemeral ports.
pub struct Coordinator {
    pub proc: Proc,
    /// `ws://127.0.0.1:PORT`
    pub ws_url: String,
    /// `http://127.0.0.1:PORT`, when the HTTP API is on.
    pub http_url: Option<String>,
    /// The CA pin the banner printed (`CA sha256 …`).
    pub ca_hash: String,
    /// The worker join token and the client token from the banner.
    pub worker_token: String,
    pub client_token: String,
    pub lines: mpsc::Receiver<String>,
    _data: tempfile::TempDir,
}

impl Coordinator {
    /// Starts `bin cluster start --bind 127.0.0.1:0 …extra` and waits until it listens.
    pub fn start(bin: &Path, extra: &[&str]) -> Coordinator {
        Coordinator::start_env(bin, extra, &[])
    }

    pub fn start_env(bin: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Coordinator {
        Coordinator::start_wrapped(&[], bin, extra, envs)
    }

    /// Like [`Coordinator::start_env`], run through a wrapper command (e.g.
    /// `["prlimit", "--nofile=256:256"]`).
    pub fn start_wrapped(
        wrapper: &[&str],
        bin: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Coordinator {
        let data = tempfile::tempdir().expect("tempdir");
        let data_dir = data.path().to_string_lossy().into_owned();
        let bin_arg = bin.to_string_lossy().into_owned();
        let mut args: Vec<&str> = wrapper.iter().skip(1).copied().collect();
        if !wrapper.is_empty() {
            args.push(&bin_arg);
        }
        args.extend(["cluster", "start"]);
        if !extra.contains(&"--bind") && !extra.contains(&"--bind-address") {
            args.extend(["--bind", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--http") && !extra.contains(&"--no-http") {
            args.extend(["--http", "127.0.0.1:0"]);
        }
        // Each coordinator gets a store of its own unless the test chose one.
        if !extra.contains(&"--data-dir") && !extra.contains(&"--no-store") {
            args.extend(["--data-dir", &data_dir]);
        }
        args.extend_from_slice(extra);
        let program = wrapper.first().map_or(bin, |w| Path::new(*w));
        let (proc, lines) = Proc::spawn(program, &args, envs);
        let (mut ws_url, mut http_url) = (String::new(), None);
        let (mut ca_hash, mut worker_token, mut client_token) =
            (String::new(), String::new(), String::new());
        // The banner lists the addresses and ends with a `ready` line.
        loop {
            let line = match lines.recv_timeout(WAIT) {
                Ok(line) => line,
                Err(_) => panic!("the coordinator did not start; log:\n{}", proc.log()),
            };
            let value =
                || line.split_once(": ").map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
            if line.trim_start().starts_with("websocket:") {
                ws_url = value();
            } else if line.trim_start().starts_with("http:") {
                http_url = value().split_whitespace().next().map(str::to_owned);
            } else if let Some((_, pin)) = line.split_once("CA sha256 ") {
                ca_hash = pin.trim().to_owned();
            } else if let Some((_, rest)) = line.split_once("--join ") {
                worker_token = rest.split_whitespace().next().unwrap_or_default().to_owned();
            } else if line.trim_start().starts_with("client token:") {
                client_token = value();
            } else if line.starts_with("ready") {
                break;
            }
        }
        Coordinator {
            proc,
            ws_url,
            http_url,
            ca_hash,
            worker_token,
            client_token,
            lines,
            _data: data,
        }
    }

    /// `wss://127.0.0.1:PORT` (the same port as `ws_url`).
    pub fn wss_url(&self) -> String {
        self.ws_url.replacen("ws://", "wss://", 1)
    }

    /// The store's directory (when the test did not choose one).
    pub fn data_dir(&self) -> &Path {
        self._data.path()
    }

    /// The HTTP API's base URL (panics when it is off).
    pub fn http(&self) -> &str {
        self.http_url.as_deref().expect("the HTTP API is off")
    }
}

/// A worker process.
pub fn worker(bin: &Path, ws_url: &str, peer_id: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["worker", "start", "--coordinator", ws_url, "--peer-id", peer_id];
    args.extend_from_slice(extra);
    Proc::spawn(bin, &args, &[]).0
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw WebSocket client that sends and reads literal JSON.
pub struct Raw {
    ws: Ws,
}

/// Why a connection was refused at the upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// How [`Raw::open`] connects.
#[derive(Debug, Clone, Default)]
pub struct Dial<'a> {
    /// `Authorization: Bearer` on the upgrade.
    pub bearer: Option<&'a str>,
    /// The local address to connect from (a loopback address such as
    /// 127.0.0.7, which a coordinator started with `--not-local` treats as
    /// another machine).
    pub source: Option<std::net::IpAddr>,
    /// For `wss://`: the CA pin to trust (the coordinator's `CA sha256`).
    pub ca_hash: Option<&'a str>,
}

/// A TCP connection to `addr` from `source` (any port).
pub async fn tcp_from(addr: &str, source: Option<std::net::IpAddr>) -> TcpStream {
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .expect("socket");
    if let Some(ip) = source {
        socket.bind(std::net::SocketAddr::new(ip, 0)).expect("bind the source address");
    }
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

impl Raw {
    /// Connects as `dial` says; a refused upgrade is returned.
    pub async fn open(url: &str, dial: Dial<'_>) -> Result<Raw, Refused> {
        let mut request = url.into_client_request().expect("url");
        if let Some(token) = dial.bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().expect("header"));
        }
        let host = url.split("://").nth(1).and_then(|r| r.split('/').next()).expect("host:port");
        let host = host.replace("localhost", "127.0.0.1");
        let stream = tcp_from(&host, dial.source).await;
        let connector = dial.ca_hash.map(|pin| {
            let pin = tls::CaPin::parse(pin).expect("CA pin");
            let config = tls::client_config(&tls::Trust::Pinned(pin)).expect("TLS config");
            tokio_tungstenite::Connector::Rustls(config)
        });
        let connecting =
            tokio_tungstenite::client_async_tls_with_config(request, stream, None, connector);
        match tokio::time::timeout(WAIT, connecting).await {
            Ok(Ok((ws, _))) => Ok(Raw { ws }),
            Ok(Err(WsError::Http(resp))) => Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned(),
            }),
            Ok(Err(e)) => Err(Refused { status: 0, body: e.to_string() }),
            Err(_) => Err(Refused { status: 0, body: "timed out".into() }),
        }
    }

    pub async fn connect(url: &str) -> Raw {
        Raw::connect_with(url, None).await.unwrap_or_else(|e| panic!("connect {url}: {e:?}"))
    }

    /// Connects, optionally with an `Authorization: Bearer` header.
    pub async fn connect_with(url: &str, bearer: Option<&str>) -> Result<Raw, Refused> {
        let mut request = url.into_client_request().expect("url");
        if let Some(token) = bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().expect("header"));
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, _))) => Ok(Raw { ws }),
            Ok(Err(WsError::Http(resp))) => Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned(),
            }),
            Ok(Err(e)) => Err(Refused { status: 0, body: e.to_string() }),
            Err(_) => Err(Refused { status: 0, body: "timed out".into() }),
        }
    }

    /// Sends text exactly as given.
    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send(&value.to_string()).await;
    }

    /// Writes bytes straight to the socket, under the WebSocket codec (to
    /// send frames it would never make). Plaintext connections only.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        match self.ws.get_mut() {
            MaybeTlsStream::Plain(s) => s.write_all(bytes).await.expect("write"),
            _ => panic!("send_raw needs a plaintext connection"),
        }
    }

    /// Like [`Raw::send_raw`], returning a write error instead of panicking.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self.ws.get_mut() {
            MaybeTlsStream::Plain(s) => s.write_all(bytes).await,
            _ => panic!("send_raw needs a plaintext connection"),
        }
    }

    /// Sends a message of any kind (binary, oversized…); errors are returned.
    pub async fn send_message(&mut self, msg: Message) -> Result<(), WsError> {
        self.ws.send(msg).await
    }

    /// The next JSON message; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        // One deadline for the whole wait: pings and other frames that are
        // not messages must not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("no message in time");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).expect("JSON");
                }
                Some(Ok(Message::Close(f))) => panic!("closed while waiting for a message: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection error: {e}"),
                None => panic!("connection ended"),
            }
        }
    }

    /// The next message, which must be of `msg_type`.
    pub async fn expect(&mut self, msg_type: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["msg_type"], msg_type, "expected {msg_type}, got {v}");
        v
    }

    /// Skips messages until one of `msg_type` comes.
    pub async fn until(&mut self, msg_type: &str) -> Value {
        let wait = async {
            loop {
                let v = self.recv().await;
                if v["msg_type"] == msg_type {
                    return v;
                }
            }
        };
        tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("no {msg_type} in time"))
    }

    /// The next JSON message, or `None` once the connection closed or ended
    /// (no deadline of its own: the caller sets one).
    pub async fn next_message(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).ok(),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits for the connection to close; returns the close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("not closed in time");
            match frame {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Registers as a peer with the seed's literal message.
    pub async fn peer(url: &str, peer_id: &str, capabilities: &str) -> Raw {
        let mut raw = Raw::connect(url).await;
        raw.send(&format!(
            r#"{{"msg_type": "register_peer", "peer_id": "{peer_id}", "capabilities": {capabilities}}}"#
        ))
        .await;
        let ack = raw.expect("registration_ack").await;
        assert_eq!(ack["status"], "registered");
        raw
    }

    /// Registers as a gamer with the seed's literal message.
    pub async fn gamer(url: &str, gamer_id: &str) -> Raw {
        let mut raw = Raw::connect(url).await;
        raw.send(&format!(r#"{{"msg_type": "register_gamer", "gamer_id": "{gamer_id}"}}"#)).await;
        let ack = raw.expect("registration_ack").await;
        assert_eq!(ack["status"], "registered");
        raw
    }

    /// Closes and waits until the server has dropped the connection (which it
    /// does only after its core has heard of the close).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}
