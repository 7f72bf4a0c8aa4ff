//! One budget for the bytes of partly received WebSocket messages, over all
//! connections.
//!
//! [`Budgeted`] sits under the WebSocket codec and counts the bytes it reads
//! since the last complete message. The first [`FREE_BYTES`] of each
//! message are free, so that ordinary messages never wait on anyone; beyond
//! that a connection draws from the shared [`FrameBudget`], and a read that
//! the budget cannot cover fails with [`budget_spent`], which the session
//! answers by closing with 1013 (try again later). The session calls
//! [`Budgeted::message_done`] for each message it receives, which gives the
//! bytes back. So the memory held for unfinished messages stays below
//! `max_partial_frame_bytes + connections × FREE_BYTES` (times the codec's
//! growth factor, at most 2), whatever clients send.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What each connection may hold of one message before drawing on the budget.
pub(crate) const FREE_BYTES: usize = 64 * 1024;

/// The bytes all connections may hold beyond their free allowance.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    limit: usize,
    used: AtomicUsize,
}

impl FrameBudget {
    pub fn new(limit: usize) -> Arc<FrameBudget> {
        Arc::new(FrameBudget { limit, used: AtomicUsize::new(0) })
    }

    /// Bytes drawn now, over all connections.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The error a read fails with when the budget is spent.
pub(crate) fn budget_spent() -> io::Error {
    io::Error::other(BudgetSpent)
}

/// Whether `e` is [`budget_spent`].
pub(crate) fn is_budget_spent(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<BudgetSpent>())
}

#[derive(Debug)]
struct BudgetSpent;

impl std::fmt::Display for BudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the budget for partly received messages is spent")
    }
}

impl std::error::Error for BudgetSpent {}

/// A stream whose reads count against a [`FrameBudget`].
pub(crate) struct Budgeted<S> {
    inner: S,
    budget: Arc<FrameBudget>,
    /// Bytes read since the last complete message.
    pending: AtomicUsize,
    /// Of those, the bytes drawn from the budget.
    drawn: AtomicUsize,
}

impl<S> Budgeted<S> {
    pub fn new(inner: S, budget: Arc<FrameBudget>) -> Budgeted<S> {
        Budgeted { inner, budget, pending: AtomicUsize::new(0), drawn: AtomicUsize::new(0) }
    }

    /// A whole message arrived: what it held goes back to the budget.
    pub fn message_done(&self) {
        self.pending.store(0, Ordering::Relaxed);
        let drawn = self.drawn.swap(0, Ordering::Relaxed);
        if drawn > 0 {
            self.budget.give(drawn);
        }
    }

    /// Counts `n` more bytes read; false when the budget cannot cover them.
    fn count(&self, n: usize) -> bool {
        let before = self.pending.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        let over = after.saturating_sub(FREE_BYTES) - before.saturating_sub(FREE_BYTES);
        if over == 0 {
            return true;
        }
        if self.budget.take(over) {
            self.drawn.fetch_add(over, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

impl<S> Drop for Budgeted<S> {
    fn drop(&mut self) {
        self.message_done();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let n = buf.filled().len() - before;
            if n > 0 && !this.count(n) {
                return Poll::Ready(Err(budget_spent()));
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn partial_messages_draw_on_one_budget_and_give_it_back() {
        let budget = FrameBudget::new(100 * 1024);
        let big = vec![7u8; 150 * 1024];
        let mut a = Budgeted::new(&big[..], Arc::clone(&budget));
        let mut buf = vec![0u8; 150 * 1024];
        a.read_exact(&mut buf[..100 * 1024]).await.unwrap();
        assert_eq!(budget.used(), 100 * 1024 - FREE_BYTES);
        // A second connection may use what is left, then no more.
        let mut b = Budgeted::new(&big[..], Arc::clone(&budget));
        b.read_exact(&mut buf[..FREE_BYTES + 64 * 1024]).await.unwrap();
        let err = b.read_exact(&mut buf[..8 * 1024]).await.unwrap_err();
        assert!(is_budget_spent(&err), "{err}");
        a.message_done();
        assert_eq!(budget.used(), 64 * 1024);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
