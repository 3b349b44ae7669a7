//! Bodies that count their bytes, and the guard that writes a decision's end when the last of
//! them is gone.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::audit::{AuditSink, Entry, Finish};

/// Byte counters for one decision, and its end record when the last holder drops.
#[derive(Debug)]
pub struct Tally {
    /// Bytes from the sandbox.
    pub up: AtomicU64,
    /// Bytes to the sandbox.
    pub down: AtomicU64,
    /// Status to record at the end, if it changed.
    pub status: std::sync::Mutex<Option<u16>>,
    started: Instant,
    sink: AuditSink,
    entry: Entry,
}

impl Tally {
    /// Starts counting for `entry`.
    pub fn new(sink: AuditSink, entry: Entry, started: Instant) -> Arc<Tally> {
        Arc::new(Tally {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            status: std::sync::Mutex::new(None),
            started,
            sink,
            entry,
        })
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let status = self.status.lock().ok().and_then(|s| *s);
        self.sink.finish(
            &self.entry,
            Finish {
                bytes_up: self.up.load(Ordering::Relaxed),
                bytes_down: self.down.load(Ordering::Relaxed),
                duration_ms: self.started.elapsed().as_millis() as u64,
                status,
            },
        );
    }
}

/// Which counter a body adds to.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Sandbox to upstream.
    Up,
    /// Upstream to sandbox.
    Down,
}

/// A body that adds its data bytes to a [`Tally`].
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    tally: Option<Arc<Tally>>,
    dir: Direction,
}

impl<B> Counted<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, tally: Option<Arc<Tally>>, dir: Direction) -> Counted<B> {
        Counted { inner, tally, dir }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(t)) = (&polled, &self.tally)
            && let Some(d) = frame.data_ref()
        {
            let c = match self.dir {
                Direction::Up => &t.up,
                Direction::Down => &t.down,
            };
            c.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        if matches!(polled, Poll::Ready(None)) {
            // The body is done: let the end be recorded as soon as the other side is too.
            self.tally = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client-side stream that counts as it goes: bytes read are up, bytes written are down.
/// Counting live means a tunnel cut short (the sandbox stops) still records what it carried.
#[derive(Debug)]
pub struct CountedIo<S> {
    inner: S,
    tally: Arc<Tally>,
}

impl<S> CountedIo<S> {
    /// Wraps the client side of a tunnel.
    pub fn new(inner: S, tally: Arc<Tally>) -> CountedIo<S> {
        CountedIo { inner, tally }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.tally.up.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.tally.down.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
