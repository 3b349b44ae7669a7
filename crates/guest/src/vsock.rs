//! vsock sockets as plain files.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, VsockAddr, accept4, bind, connect, listen, socket,
};

/// A new vsock stream socket.
fn stream() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Connects to `port` on the host.
pub fn connect_host(port: u32) -> io::Result<File> {
    let fd = stream()?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(paddock_wire::vm::HOST_CID, port),
    )?;
    Ok(File::from(fd))
}

/// Listens on `port` for the host's connections.
pub fn listen_any(port: u32) -> io::Result<OwnedFd> {
    let fd = stream()?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(libc::VMADDR_CID_ANY, port),
    )?;
    listen(&fd, Backlog::new(64).map_err(io::Error::from)?)?;
    Ok(fd)
}

/// Accepts one connection.
pub fn accept(listener: &OwnedFd) -> io::Result<File> {
    let fd = accept4(
        std::os::fd::AsRawFd::as_raw_fd(listener),
        SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(File::from(unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }))
}
