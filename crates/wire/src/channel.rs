//! The report channel: one JSON message per `SOCK_SEQPACKET` datagram, descriptors as
//! `SCM_RIGHTS`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

use crate::{MAX_MESSAGE, Report};

/// Sends one report.
pub fn send_report(channel: BorrowedFd<'_>, report: &Report) -> io::Result<()> {
    let bytes = report.encode();
    sendmsg(
        channel,
        &[IoSlice::new(&bytes)],
        &mut SendAncillaryBuffer::default(),
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// Sends one report with a descriptor attached.
pub fn send_fd(channel: BorrowedFd<'_>, report: &Report, fd: BorrowedFd<'_>) -> io::Result<()> {
    let bytes = report.encode();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    sendmsg(
        channel,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// Receives one report and the descriptor that came with it, if any. `Ok(None)` at end of
/// stream (the sandbox side closed the channel).
pub fn recv_report(channel: BorrowedFd<'_>) -> io::Result<Option<(Report, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match recvmsg(
            channel,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fd = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            // Keep the first; any extra descriptor is dropped (closed) here.
            for f in fds {
                fd.get_or_insert(f);
            }
        }
    }
    if msg.bytes == 0 {
        return Ok(None);
    }
    let report = Report::decode(&buf[..msg.bytes]).map_err(io::Error::other)?;
    Ok(Some((report, fd)))
}

/// Sends `bytes` in one message with `fds` attached (the kernel takes up to 253).
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    loop {
        match sendmsg(
            sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message into `buf` and the descriptors that came with it (up to 3).
/// `Ok(None)` at end of stream.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    recv_into(sock, buf, &mut space)
}

/// [`recv_with_fds`] for messages that carry up to `max` descriptors.
pub fn recv_with_many_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max: usize,
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max))];
    recv_into(sock, buf, &mut space)
}

fn recv_into(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    space: &mut [MaybeUninit<u8>],
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut control = RecvAncillaryBuffer::new(space);
    let msg = loop {
        match recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = m {
            fds.extend(got);
        }
    }
    if msg.bytes == 0 {
        return Ok(None);
    }
    Ok(Some((msg.bytes, fds)))
}

/// Sends one byte over a stream socket, with a descriptor attached when there is one (the
/// gVisor backend's session and proxy sockets, which the sandbox's helper gets this way).
pub fn send_byte(sock: BorrowedFd<'_>, byte: u8, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    send_with_fds(sock, &[byte], &fds)
}

/// Receives one byte and the descriptor that came with it, if any. `Ok(None)` at end of stream.
pub fn recv_byte(sock: BorrowedFd<'_>) -> io::Result<Option<(u8, Option<OwnedFd>)>> {
    let mut buf = [0u8; 1];
    Ok(recv_with_fds(sock, &mut buf)?.map(|(_, fds)| (buf[0], fds.into_iter().next())))
}
