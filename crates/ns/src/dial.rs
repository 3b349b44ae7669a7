//! Connecting to a port inside a user mode sandbox. Its network namespace belongs to the
//! sandbox's outer user namespace, which an ordinary user's process can enter only when it is
//! single-threaded: a forked child enters it, connects, and hands the socket back.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
    sendmsg, socketpair,
};

/// A TCP stream to `127.0.0.1:port` in the network namespace of `pid1` (a pidfd), entered
/// through the user namespace `userns`.
pub fn dial(userns: BorrowedFd<'_>, pid1: BorrowedFd<'_>, port: u16) -> io::Result<OwnedFd> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // Everything the child uses is made before the fork: it allocates nothing.
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    // SAFETY: fork; the child makes only system calls (setns, socket, connect, sendmsg,
    // _exit) on memory prepared above, so forking a multi-threaded process is sound.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: plain system calls on descriptors this process holds; `addr` outlives
            // the connect call; the child ends with _exit and runs no destructors.
            unsafe {
                let code = (|| {
                    if libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
                        return 1;
                    }
                    if libc::setns(pid1.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return 2;
                    }
                    let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                    if s < 0 {
                        return 3;
                    }
                    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    if libc::connect(s, (&raw const addr).cast(), len) != 0 {
                        return 4;
                    }
                    let sock = BorrowedFd::borrow_raw(s);
                    let mut control = SendAncillaryBuffer::new(&mut space);
                    let fds = [sock];
                    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                        return 5;
                    }
                    match sendmsg(
                        &theirs,
                        &[io::IoSlice::new(&[1])],
                        &mut control,
                        SendFlags::NOSIGNAL,
                    ) {
                        Ok(_) => 0,
                        Err(_) => 6,
                    }
                })();
                libc::_exit(code)
            }
        }
        child => {
            drop(theirs);
            let got = paddock_wire::recv_byte(ours.as_fd());
            let mut raw = 0;
            // SAFETY: waitpid writes the status into `raw`, which outlives the call; the pid
            // is the child forked above.
            unsafe { libc::waitpid(child, &mut raw, 0) };
            match got {
                Ok(Some((1, Some(fd)))) => Ok(fd),
                _ => Err(match libc::WEXITSTATUS(raw) {
                    1 | 2 => io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "cannot enter the sandbox's network",
                    ),
                    4 => io::Error::from(io::ErrorKind::ConnectionRefused),
                    _ => io::Error::other("cannot connect inside the sandbox"),
                }),
            }
        }
    }
}
