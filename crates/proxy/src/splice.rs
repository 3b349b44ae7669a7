//! Zero-copy tunnels: `splice(2)` moves a CONNECT tunnel's bytes between the client's and the
//! upstream's sockets through a pipe, so they never cross into user space. A user-space relay
//! copies every byte twice more and was the limit on tunnel throughput.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::net::Shutdown;
use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};

use crate::body::Tally;

/// A socket the tunnel can splice: a TCP stream (the namespace backend's clients, every
/// upstream) or a Unix stream (a VM's clients, carried over vsock).
pub trait SpliceSocket: AsyncRead + AsyncWrite + AsFd + Unpin + Send + Sync + 'static {
    /// Waits until the socket may be readable.
    fn ready_read(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Waits until the socket may be writable.
    fn ready_write(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Runs `f` and clears the readiness `interest` when it would block.
    fn attempt<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    /// Prepares a freshly accepted connection (no Nagle delay on TCP).
    fn accepted(&self) {}
}

macro_rules! splice_socket {
    ($t:ty, $accepted:expr) => {
        impl SpliceSocket for $t {
            fn ready_read(&self) -> impl Future<Output = io::Result<()>> + Send {
                self.readable()
            }
            fn ready_write(&self) -> impl Future<Output = io::Result<()>> + Send {
                self.writable()
            }
            fn attempt<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                self.try_io(interest, f)
            }
            fn accepted(&self) {
                $accepted(self)
            }
        }
    };
}

splice_socket!(TcpStream, |s: &TcpStream| {
    let _ = s.set_nodelay(true);
});
splice_socket!(UnixStream, |_: &UnixStream| {});

/// How much one splice call moves at most.
const CHUNK: usize = 1 << 20;

/// Relays `client` ⇄ `upstream` until both directions end; `prefix` (bytes the client sent
/// after its CONNECT head, already read) goes upstream first. Bytes are counted into `tally` as
/// they move.
pub async fn tunnel<C: SpliceSocket>(
    client: C,
    prefix: &[u8],
    mut upstream: TcpStream,
    tally: &Tally,
) {
    if !prefix.is_empty() {
        if upstream.write_all(prefix).await.is_err() {
            return;
        }
        tally.up.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    }
    let end_both = || {
        let _ = rustix::net::shutdown(&client, Shutdown::Both);
        let _ = rustix::net::shutdown(&upstream, Shutdown::Both);
    };
    let up = async {
        if pump(&client, &upstream, &tally.up).await.is_err() {
            end_both();
        }
    };
    let down = async {
        if pump(&upstream, &client, &tally.down).await.is_err() {
            end_both();
        }
    };
    tokio::join!(up, down);
}

/// Moves bytes from `src` to `dst` until `src` ends, then ends `dst`'s sending side.
async fn pump<S: SpliceSocket, D: SpliceSocket>(
    src: &S,
    dst: &D,
    count: &AtomicU64,
) -> io::Result<()> {
    let (pipe_r, pipe_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        // The pipe is empty here, so "would block" can only mean the socket has nothing.
        let n = loop {
            src.ready_read().await?;
            match src.attempt(Interest::READABLE, || {
                splice(src, None, &pipe_w, None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = rustix::net::shutdown(dst, Shutdown::Write);
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            dst.ready_write().await?;
            match dst.attempt(Interest::WRITABLE, || {
                splice(&pipe_r, None, dst, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(m) => {
                    left -= m;
                    count.fetch_add(m as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
