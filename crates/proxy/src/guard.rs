//! The connection wrapper that runs the strict framing check ([`crate::head`]) on the bytes
//! hyper reads, and turns a violation into a parse error hyper answers with 400.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::head::{HeadScanner, Violation};

/// A client connection under the framing check.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    scanner: HeadScanner,
    /// Set when a violation was found (read by the connection task for the audit log).
    pub violation: Arc<Mutex<Option<Violation>>>,
    done: bool,
}

impl<S> Guarded<S> {
    /// Wraps a fresh connection.
    pub fn new(inner: S) -> Guarded<S> {
        Guarded {
            inner,
            scanner: HeadScanner::new(),
            violation: Arc::default(),
            done: false,
        }
    }
}

impl<S> Guarded<S> {
    /// The connection itself (for a tunnel, where framing no longer applies).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if self.scanner.is_tunnel() {
            return Poll::Ready(Ok(()));
        }
        let result = {
            let fresh = &buf.filled()[before..];
            self.scanner.feed(fresh)
        };
        if let Err(refused) = result {
            // Hand hyper the bytes of the requests before the bad one, then a NUL: whatever
            // state hyper's parser is in (request line, header name or value, chunk size), a
            // NUL is a parse error, which hyper answers with 400 and closes the connection.
            let keep = before + refused.head_start.unwrap_or(0);
            buf.set_filled(keep);
            buf.put_slice(b"\0");
            self.done = true;
            if let Ok(mut v) = self.violation.lock() {
                *v = Some(refused.violation);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
