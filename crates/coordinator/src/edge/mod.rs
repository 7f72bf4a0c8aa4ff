//! The edge: what happens to a connection between `accept` and a session,
//! on both ports.
//!
//! 1. [`Listener::accept`] takes connections, backing off on errors (an
//!    exhausted fd table must not spin or flood the log) and refusing at once
//!    an address over its limits ([`IpLimits`]).
//! 2. [`open`] peeks at the first byte the client sends: `0x16` starts a TLS
//!    handshake (accepted from anyone), anything else is plaintext, which is
//!    served only to this machine unless `--insecure-plaintext` — others get
//!    a refusal that names the fix, as HTTP 403 on either port.
//! 3. The caller runs its own handshake (the WebSocket upgrade, or HTTP) on
//!    the [`Io`], under the handshake deadline.
//!
//! Bytes of partly received WebSocket messages are metered by
//! [`FrameBudget`], so that the coordinator's memory stays bounded however
//! many connections hold an unfinished 16 MiB frame.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::Config;
use crate::tls::Tls;

mod accept;
mod budget;
mod limits;

pub(crate) use accept::{Listener, fd_budget};
pub(crate) use budget::{Budgeted, FrameBudget, is_budget_spent};
pub(crate) use limits::IpLimits;

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// A connection's byte stream: TLS, or plaintext.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// How a connection came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tls,
    /// Plaintext; `allowed` is false for other machines without
    /// `--insecure-plaintext`: the caller answers with [`PLAINTEXT_REFUSED`].
    Plain {
        allowed: bool,
    },
}

/// What a plaintext client from another machine is told.
pub(crate) const PLAINTEXT_REFUSED: &str = "plaintext is accepted from this machine only: \
    connect with TLS (wss://HOST:8765 or https://HOST:8000; `legacygpu worker start --join TOKEN` \
    and clients given --ca-hash or a join token pin the coordinator's CA), or start the \
    coordinator with --insecure-plaintext to accept plaintext from anyone";

/// Tells TLS from plaintext by the first byte and completes the TLS
/// handshake. Errors when the client closed or the handshake failed.
pub(crate) async fn open(
    stream: TcpStream,
    remote: SocketAddr,
    tls: &Tls,
    config: &Config,
) -> io::Result<(Io, Transport)> {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] == TLS_HANDSHAKE {
        let tls = tls.acceptor().accept(stream).await?;
        return Ok((Io::Tls(Box::new(tls)), Transport::Tls));
    }
    let allowed = config.plaintext_allowed(&remote);
    Ok((Io::Plain(stream), Transport::Plain { allowed }))
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}
