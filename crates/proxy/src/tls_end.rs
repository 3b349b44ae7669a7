//! The end of an upstream's TLS stream as HTTP/1.x reads it.
//!
//! An HTTP/1.x answer without a Content-Length or chunked framing ends where its connection
//! does. Many servers end that connection without TLS's `close_notify`, which rustls reports
//! as an `UnexpectedEof` error; hyper then fails the body, and a client on HTTP/2 sees its
//! stream reset (`INTERNAL_ERROR`) instead of the end. Clients talking to such servers
//! directly (curl, browsers) take the connection's end as the body's end, and so does the
//! proxy: [`EndAtClose`] reads the upstream's TCP end as the end of the stream. A connection
//! that breaks (a reset, a timeout) is still an error, and a body that names its length
//! (Content-Length, chunked) and ends early still fails in hyper, so every truncation the
//! framing can show stays visible; what it cannot show (a close-delimited body cut by a
//! forged TCP end) is as open to the client as it would be without the proxy.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS stream whose end without `close_notify` reads as an end, not an error.
#[derive(Debug)]
pub struct EndAtClose<S> {
    inner: S,
}

impl<S> EndAtClose<S> {
    /// Wraps an established TLS stream.
    pub fn new(inner: S) -> EndAtClose<S> {
        EndAtClose { inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EndAtClose<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EndAtClose<S> {
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
