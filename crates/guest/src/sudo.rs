//! `sudo` in a gVisor sandbox.
//!
//! gVisor does not honour set-user-id bits, so the image's `sudo` cannot raise the agent to root
//! there. The gVisor backend binds this helper over `/usr/bin/sudo` and the image's real `sudo`
//! at [`REAL`]. Run as `sudo`, the helper hands its arguments, environment, working directory
//! and standard streams to pid 1 over [`SOCKET`]; pid 1 checks who is asking (root, or the agent
//! user the image's sudoers lets do anything without a password), runs the real `sudo` as root
//! with them, so sudo's own options, `env_reset`, `secure_path` and `use_pty` apply unchanged,
//! and sends back its exit status. Signals the caller receives (Ctrl-C, a terminal resize) are
//! passed on to it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, connect, listen, socket,
};
use paddock_wire::vm::ExitStatus;
use paddock_wire::{Command, EXIT_CANNOT_EXECUTE};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, UCred, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

use crate::reaper::Reaper;

/// Where pid 1 listens.
pub const SOCKET: &str = "/run/paddock/sudo.sock";
/// Where the image's own sudo is bound.
pub const REAL: &str = "/run/paddock/sudo";
/// The image's agent user, whom its sudoers lets do anything.
const AGENT_UID: u32 = 1000;
/// Largest request (arguments and environment).
const MAX_REQUEST: usize = 1 << 20;
/// Signals passed on to the command.
const FORWARDED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
];

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Msg {
    Run {
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
    },
    Signal(i32),
    Error(String),
    Exit(ExitStatus),
}

fn encode(m: &Msg) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Sends the request with the standard streams and this process's credentials attached (the
/// kernel checks them; gVisor's `SO_PEERCRED` names the listener instead of the caller).
fn send_request(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3), ScmCredentials(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let me = UCred {
        pid: rustix::process::getpid(),
        uid: rustix::process::getuid(),
        gid: rustix::process::getgid(),
    };
    if !control.push(SendAncillaryMessage::ScmRights(fds))
        || !control.push(SendAncillaryMessage::ScmCredentials(me))
    {
        return Err(io::Error::other("control buffer too small"));
    }
    sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// Receives a request: its bytes, the streams, and the sender's credentials.
fn recv_request(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>, Option<u32>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3), ScmCredentials(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    let mut uid = None;
    for m in control.drain() {
        match m {
            RecvAncillaryMessage::ScmRights(got) => fds.extend(got),
            RecvAncillaryMessage::ScmCredentials(c) => uid = Some(c.uid.as_raw()),
            _ => {}
        }
    }
    Ok((msg.bytes, fds, uid))
}

fn lossy(s: OsString) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// The helper run as `sudo`. Never returns.
pub fn shim() -> ! {
    let fail = |msg: String| -> ! {
        eprintln!("sudo: {msg}");
        std::process::exit(1)
    };
    let sock = match seqpacket().and_then(|s| {
        connect(s.as_raw_fd(), &UnixAddr::new(SOCKET)?)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => fail(format!(
            "cannot reach the sandbox's helper at {SOCKET}: {e} (sudo here is Paddock's, for gVisor)"
        )),
    };
    let req = Msg::Run {
        args: std::env::args_os().skip(1).map(lossy).collect(),
        env: std::env::vars_os()
            .map(|(k, v)| (lossy(k), lossy(v)))
            .collect(),
        cwd: std::env::current_dir()
            .map(|p| lossy(p.into_os_string()))
            .unwrap_or_else(|_| "/".into()),
    };
    // Block the forwarded signals before any thread exists, so every thread inherits the mask
    // and only the forwarding thread takes them.
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    let _ = set.thread_block();
    let stdio = [
        rustix::stdio::stdin(),
        rustix::stdio::stdout(),
        rustix::stdio::stderr(),
    ];
    if let Err(e) = send_request(sock.as_fd(), &encode(&req), &stdio) {
        fail(format!(
            "cannot hand the command to the sandbox's helper: {e}"
        ));
    }
    if let Ok(tx) = sock.try_clone() {
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                while let Ok(sig) = set.wait() {
                    let m = encode(&Msg::Signal(sig as i32));
                    if paddock_wire::send_with_fds(tx.as_fd(), &m, &[]).is_err() {
                        break;
                    }
                }
            });
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match paddock_wire::recv_with_fds(sock.as_fd(), &mut buf) {
            Ok(Some((n, _))) => match serde_json::from_slice::<Msg>(&buf[..n]) {
                Ok(Msg::Error(e)) => eprintln!("sudo: {e}"),
                Ok(Msg::Exit(ExitStatus::Code { code })) => std::process::exit(code),
                Ok(Msg::Exit(ExitStatus::Signal { signal })) => {
                    // Die the same way, as sudo does.
                    // SAFETY: resetting a disposition and raising a signal have no memory effects.
                    unsafe {
                        libc::signal(signal, libc::SIG_DFL);
                        let mut s: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut s);
                        libc::sigaddset(&mut s, signal);
                        libc::pthread_sigmask(libc::SIG_UNBLOCK, &s, std::ptr::null_mut());
                        libc::raise(signal);
                    }
                    std::process::exit(128 + signal)
                }
                _ => {}
            },
            Ok(None) | Err(_) => fail("the sandbox's helper went away".into()),
        }
    }
}

/// Environment variables dropped before the real sudo runs (it runs as root without the
/// kernel's secure mode, so the loader would honour them).
fn unsafe_env(name: &str) -> bool {
    name.starts_with("LD_")
        || matches!(
            name,
            "GCONV_PATH" | "LOCPATH" | "NLSPATH" | "HOSTALIASES" | "RES_OPTIONS" | "MALLOC_TRACE"
        )
}

/// Serves `sudo` requests on [`SOCKET`] on a thread of its own (pid 1 of a gVisor sandbox).
pub fn serve(reaper: Arc<Reaper>) -> io::Result<()> {
    let _ = std::fs::remove_file(SOCKET);
    let listener = seqpacket()?;
    // Credentials on every message received (accepted sockets inherit it).
    rustix::net::sockopt::set_socket_passcred(&listener, true)?;
    bind(listener.as_raw_fd(), &UnixAddr::new(SOCKET)?)?;
    std::fs::set_permissions(SOCKET, std::fs::Permissions::from_mode(0o666))?;
    listen(&listener, Backlog::new(64).map_err(io::Error::from)?)?;
    std::thread::Builder::new()
        .name("sudo".into())
        .spawn(move || {
            loop {
                let Ok(fd) = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) else {
                    continue;
                };
                // SAFETY: accept4 returned a new descriptor nothing else owns.
                let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                if rustix::net::sockopt::set_socket_passcred(&conn, true).is_err() {
                    continue;
                }
                let reaper = reaper.clone();
                let _ = std::thread::Builder::new()
                    .name("sudo-run".into())
                    .spawn(move || handle(conn, &reaper));
            }
        })?;
    Ok(())
}

fn reply(conn: &OwnedFd, m: &Msg) {
    let _ = paddock_wire::send_with_fds(conn.as_fd(), &encode(m), &[]);
}

fn handle(conn: OwnedFd, reaper: &Reaper) {
    let refuse = |msg: String| {
        reply(&conn, &Msg::Error(msg));
        reply(&conn, &Msg::Exit(ExitStatus::Code { code: 1 }));
    };
    let mut buf = vec![0u8; MAX_REQUEST];
    let (args, env, cwd, stdio, uid) = match recv_request(conn.as_fd(), &mut buf) {
        Ok((n, fds, uid)) if n > 0 && fds.len() == 3 => {
            match serde_json::from_slice::<Msg>(&buf[..n]) {
                Ok(Msg::Run { args, env, cwd }) => (args, env, cwd, fds, uid),
                _ => return refuse("malformed request".into()),
            }
        }
        _ => return refuse("malformed request".into()),
    };
    match uid {
        Some(0) | Some(AGENT_UID) => {}
        Some(uid) => {
            return refuse(format!(
                "uid {uid} is not in the sudoers file (only root and the agent user may use sudo here)"
            ));
        }
        None => return refuse("the request came without credentials".into()),
    }
    let cmd = Command {
        argv: std::iter::once(REAL.to_owned()).chain(args).collect(),
        env: env.into_iter().filter(|(k, _)| !unsafe_env(k)).collect(),
        cwd,
        uid: 0,
        gid: 0,
        groups: vec![0],
        tty: false,
        size: None,
        no_new_privs: false,
    };
    let (reports, child_reports) = match rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    ) {
        Ok(p) => p,
        Err(e) => return refuse(format!("cannot start sudo: {e}")),
    };
    let prepared = paddock_init::Prepared::new(&cmd);
    let spawned = {
        let prepared = &prepared;
        let chan = &child_reports;
        let stdio = &stdio;
        reaper.spawn(move || {
            // Under the sandbox's pids limit, as the agent's own commands.
            crate::session::join_cgroup();
            for (i, fd) in stdio.iter().enumerate() {
                // SAFETY: dup2 onto 0..2 in the child; `fd` is open.
                unsafe { libc::dup2(fd.as_raw_fd(), i as i32) };
            }
            prepared.exec(None, chan.as_fd());
        })
    };
    drop(child_reports);
    drop(stdio);
    let (pid, status) = match spawned {
        Ok(p) => p,
        Err(e) => return refuse(format!("cannot start sudo: {e}")),
    };
    // Signals from the caller, until the connection ends.
    if let Ok(rx) = conn.try_clone() {
        let _ = std::thread::Builder::new()
            .name("sudo-signals".into())
            .spawn(move || {
                let mut b = vec![0u8; 256];
                while let Ok(Some((n, _))) = paddock_wire::recv_with_fds(rx.as_fd(), &mut b) {
                    if let Ok(Msg::Signal(s)) = serde_json::from_slice::<Msg>(&b[..n])
                        && let Ok(sig) = Signal::try_from(s)
                    {
                        paddock_init::deliver(pid, paddock_init::Target::Group, sig);
                    }
                }
            });
    }
    let status = status.recv().unwrap_or(ExitStatus::Code {
        code: EXIT_CANNOT_EXECUTE,
    });
    let _ = rustix::io::ioctl_fionbio(&reports, true);
    while let Ok(Some((paddock_wire::Report::ExecFailed { message, .. }, _))) =
        paddock_wire::recv_report(reports.as_fd())
    {
        reply(&conn, &Msg::Error(message));
    }
    reply(&conn, &Msg::Exit(status));
    drop(File::from(conn));
}
