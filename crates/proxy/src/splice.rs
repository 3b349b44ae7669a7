//! Zero-copy tunnels: `splice(2)` moves a CONNECT tunnel's bytes between the client's and the
//! upstream's sockets through a pipe, so they never cross into user space. A user-space relay
//! copies every byte twice more and was the limit on tunnel throughput.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::net::Shutdown;
use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::body::Tally;

/// How much one splice call moves at most.
const CHUNK: usize = 1 << 20;

/// Relays `client` ⇄ `upstream` until both directions end; `prefix` (bytes the client sent
/// after its CONNECT head, already read) goes upstream first. Bytes are counted into `tally` as
/// they move.
pub async fn tunnel(client: TcpStream, prefix: &[u8], mut upstream: TcpStream, tally: &Tally) {
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
async fn pump(src: &TcpStream, dst: &TcpStream, count: &AtomicU64) -> io::Result<()> {
    let (pipe_r, pipe_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        // The pipe is empty here, so "would block" can only mean the socket has nothing.
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
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
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
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
