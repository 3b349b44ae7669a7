//! The sandbox's `127.0.0.1:3128`: each connection is carried to the host's egress proxy, byte
//! for byte, over a stream the host provides (vsock in a VM, a socket the host hands over in a
//! gVisor sandbox). Nothing is decided here; the proxy on the host decides.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;

/// Opens one stream to the host's proxy.
pub type Dial = Arc<dyn Fn() -> io::Result<File> + Send + Sync>;

/// Binds the proxy port at `addr` (loopback; a VM's Docker bridge) and serves it on a thread
/// of its own.
pub fn start(dial: Dial, addr: [u8; 4]) -> io::Result<()> {
    let listener = TcpListener::bind((
        std::net::Ipv4Addr::from(addr),
        paddock_wire::vm::PROXY_PORT as u16,
    ))?;
    std::thread::Builder::new()
        .name("egress".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let dial = dial.clone();
                let _ = std::thread::Builder::new()
                    .name("egress-conn".into())
                    .spawn(move || carry(conn, &dial));
            }
        })?;
    Ok(())
}

/// A published-port connection from the host: two bytes name the port inside; the rest is
/// carried to `127.0.0.1:PORT` inside (nothing else is reachable this way).
pub fn forward(mut host: File) {
    let mut p = [0u8; 2];
    if host.read_exact(&mut p).is_err() {
        return;
    }
    let Ok(inside) = TcpStream::connect(("127.0.0.1", u16::from_be_bytes(p))) else {
        // Nothing listens there: the connection just ends.
        return;
    };
    let _ = inside.set_nodelay(true);
    let (Ok(mut inside_r), Ok(mut host_w)) = (inside.try_clone(), host.try_clone()) else {
        return;
    };
    let mut host_r = host;
    let mut inside_w = inside;
    let down = std::thread::spawn(move || {
        let _ = copy(&mut host_r, &mut inside_w);
        let _ = inside_w.shutdown(Shutdown::Write);
    });
    let _ = copy(&mut inside_r, &mut host_w);
    // The server is done. Close the host's stream both ways: a VM's vsock device does not pass
    // a half-close on, so the client would otherwise wait for the end forever.
    let _ = rustix::net::shutdown(&host_w, rustix::net::Shutdown::Both);
    let _ = inside_r.shutdown(Shutdown::Both);
    let _ = down.join();
}

/// Starts serving published-port connections accepted by `accept` (a VM's vsock listener).
pub fn serve_forwards(accept: impl Fn() -> io::Result<File> + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || {
            loop {
                let Ok(c) = accept() else { continue };
                let _ = std::thread::Builder::new()
                    .name("forward-conn".into())
                    .spawn(move || forward(c));
            }
        })?;
    Ok(())
}

fn carry(client: TcpStream, dial: &Dial) {
    let Ok(host) = dial() else {
        // The host is not listening: the connection just ends.
        return;
    };
    let _ = client.set_nodelay(true);
    let (Ok(mut client_r), Ok(mut host_w)) = (client.try_clone(), host.try_clone()) else {
        return;
    };
    let mut host_r = host;
    let mut client_w = client;
    let up = std::thread::spawn(move || {
        let _ = copy(&mut client_r, &mut host_w);
        let _ = rustix::net::shutdown(&host_w, rustix::net::Shutdown::Write);
    });
    let _ = copy(&mut host_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    let _ = up.join();
}

fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}
