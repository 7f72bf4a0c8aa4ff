//! Serving the API on its port: HTTP/1.1 over TLS or (from this machine, or
//! with `--insecure-plaintext`) plaintext, one task per connection.
//!
//! Each connection has the handshake deadline for TLS, hyper's header-read
//! timeout for every request head (it runs from the connection's start and
//! from each response, so it also bounds idle keep-alive), a deadline for
//! each request's body to arrive whole ([`Deadline`]: a body that never
//! comes or trickles), and an idle timeout for connections with no request
//! in progress and no bytes moving (a client that stops reading). A
//! plaintext client from another machine is answered 403, whatever it asks,
//! with the fix.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::debug;

use super::ApiError;
use crate::config::Config;
use crate::edge::{self, Io, Listener, Transport};
use crate::tls::Tls;

/// What serving needs beyond the router.
pub(crate) struct Serving {
    pub tls: Arc<Tls>,
    /// HTTP connections at once (from the fd budget).
    pub max_connections: usize,
}

/// Accepts until `shutdown`, then lets requests in progress finish (within
/// the shutdown grace).
pub(crate) async fn run(
    mut listener: Listener,
    router: Router,
    config: Arc<Config>,
    serving: Serving,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(serving.max_connections));
    let stop = shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            (stream, remote, ip_permit) = listener.accept() => {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    listener.count_refused("max_connections");
                    continue;
                };
                let conn = Connection {
                    router: router.clone(),
                    config: Arc::clone(&config),
                    tls: Arc::clone(&serving.tls),
                    remote,
                    shutdown: stop.clone(),
                };
                conns.spawn(async move {
                    conn.serve(stream).await;
                    drop((slot, ip_permit));
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        conns.abort_all();
    }
}

struct Connection {
    router: Router,
    config: Arc<Config>,
    tls: Arc<Tls>,
    remote: SocketAddr,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream) {
        let edge = &self.config.edge;
        let opened = edge::open(stream, self.remote, &self.tls, &self.config);
        let (io, transport) = match tokio::time::timeout(edge.handshake_timeout, opened).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => return debug!(remote = %self.remote, "HTTP handshake failed: {e}"),
            Err(_) => return debug!(remote = %self.remote, "HTTP handshake timed out"),
        };
        let activity = Activity::new();
        let io = TokioIo::new(Watched { inner: io, activity: Arc::clone(&activity) });
        let remote = self.remote;
        let refused = matches!(transport, Transport::Plain { allowed: false });
        let secure = super::Secure(matches!(transport, Transport::Tls));
        let router = self.router.clone();
        let busy = Arc::clone(&activity);
        let body_timeout = edge.http_body_timeout;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            req.extensions_mut().insert(secure);
            let router = router.clone();
            let guard = busy.request();
            async move {
                let response = if refused {
                    plaintext_refused().into_response()
                } else {
                    let req =
                        req.map(|body| axum::body::Body::new(Deadline::new(body, body_timeout)));
                    // The router's error type is Infallible.
                    let Ok(response) = router.oneshot(req).await;
                    response
                };
                drop(guard);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(edge.http_header_timeout);
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let idle = edge.http_idle_timeout;
        let mut closing = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        debug!(remote = %self.remote, "HTTP connection: {e}");
                    }
                    return;
                }
                _ = self.shutdown.wait_for(|s| *s), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(activity.idle_deadline(idle)) => {
                    if activity.idle_for() >= idle {
                        debug!(remote = %self.remote, "closing an idle HTTP connection");
                        return;
                    }
                }
            }
        }
    }
}

fn plaintext_refused() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "tls_required", edge::PLAINTEXT_REFUSED)
}

/// A request body that must arrive whole by a deadline: past it, the next
/// read fails (the handler answers 400 and, the body unread, hyper closes
/// the connection). The timer is made only when a read has to wait.
struct Deadline {
    inner: Incoming,
    timeout: Duration,
    at: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    fn new(inner: Incoming, timeout: Duration) -> Deadline {
        Deadline { inner, timeout, at: Instant::now() + timeout, sleep: None }
    }
}

impl hyper::body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let at = this.at;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let secs = this.timeout.as_secs_f64();
                Poll::Ready(Some(Err(format!("the body did not arrive within {secs} s").into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// When bytes last moved on a connection, and whether a request is in
/// progress (a request waiting for a long-polled result is not idle).
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    requests: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity { start: Instant::now(), last_ms: AtomicU64::new(0), requests: 0.into() })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.requests.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        Instant::now() + idle.saturating_sub(self.idle_for()).max(Duration::from_millis(10))
    }

    fn request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }
}

struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes when bytes move.
struct Watched {
    inner: Io,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll
            && *n > 0
        {
            this.activity.touch();
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
