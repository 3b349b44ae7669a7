//! Pid 1 with an exec socket ([`paddock_wire::EXEC_SOCKET`]): while the sandbox's command
//! runs, more commands are forked from here on request, so each starts inside every layer
//! (namespaces, cgroups, Landlock, seccomp, capabilities) with one fork, and no process on the
//! host joins the sandbox for it.
//!
//! One thread, one `poll`: the forwarded signals and SIGCHLD through a signalfd, the listener,
//! and each connection. Nothing here blocks: connections are non-blocking, a peer that does
//! not read its reports loses them (the kernel queues far more than the three a command gets).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use paddock_wire::{Command, MAX_MESSAGE, Report, send_fd, send_report};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::net::{SocketFlags, accept_with};

use crate::{Target, deliver, exec, signals};

/// Connections open at once; more are closed at once (the host's server keeps far fewer).
const MAX_CONNECTIONS: usize = 1024;

/// One connection: waiting for its request, or its command's.
struct Conn {
    fd: OwnedFd,
    /// The command, once forked (its pid inside).
    child: Option<Pid>,
}

/// Forwards signals to `main`, serves `listener`, and reaps everything until `main` exits;
/// returns its status (128 + signal when killed).
pub fn serve_and_wait(main: Pid, listener: OwnedFd) -> i32 {
    let Ok(sigfd) = SignalFd::with_flags(
        &signals::set(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    ) else {
        // Without a signalfd the exec socket cannot be served: the command still is.
        drop(listener);
        return signals::forward_and_wait(main, Target::Group, true);
    };
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    loop {
        if let Some(status) = reap(main, &mut conns) {
            return status;
        }
        let ready: Vec<(RawFd, bool)> = {
            let mut fds = Vec::with_capacity(conns.len() + 2);
            let mut raw = Vec::with_capacity(conns.len() + 2);
            fds.push(PollFd::new(&sigfd, PollFlags::IN));
            fds.push(PollFd::new(&listener, PollFlags::IN));
            raw.extend([sigfd.as_fd().as_raw_fd(), listener.as_raw_fd()]);
            for c in conns.values() {
                fds.push(PollFd::new(&c.fd, PollFlags::IN));
                raw.push(c.fd.as_raw_fd());
            }
            match poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                // Nothing to wait on is left working: serve the command alone.
                Err(_) => {
                    drop(fds);
                    drop(listener);
                    kill_all(&conns);
                    return signals::forward_and_wait(main, Target::Group, true);
                }
            }
            raw.into_iter()
                .zip(fds.iter().map(|f| !f.revents().is_empty()))
                .collect()
        };
        if ready[0].1 {
            while let Ok(Some(info)) = sigfd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) | Err(_) => {}
                    Ok(sig) => deliver(main, Target::Group, sig),
                }
            }
        }
        if ready[1].1 {
            accept_all(listener.as_fd(), &mut conns);
        }
        for &(fd, is_ready) in &ready[2..] {
            if is_ready {
                serve_one(fd, &mut conns);
            }
        }
    }
}

fn accept_all(listener: BorrowedFd<'_>, conns: &mut HashMap<RawFd, Conn>) {
    while let Ok(fd) = accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
        if conns.len() >= MAX_CONNECTIONS {
            continue; // closed here: the host sees the end before any report
        }
        conns.insert(fd.as_raw_fd(), Conn { fd, child: None });
    }
}

/// A message on connection `fd`: its request, or a signal for its command; its end.
fn serve_one(fd: RawFd, conns: &mut HashMap<RawFd, Conn>) {
    let Some(conn) = conns.get_mut(&fd) else {
        return;
    };
    let mut buf = vec![
        0u8;
        if conn.child.is_some() {
            16
        } else {
            MAX_MESSAGE
        }
    ];
    match paddock_wire::recv_with_fds(conn.fd.as_fd(), &mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(Some((n, fds))) => match conn.child {
            None => match serde_json::from_slice::<Command>(&buf[..n]) {
                Ok(cmd) => match start(&cmd, fds, conn.fd.as_fd()) {
                    Some(pid) => conn.child = Some(pid),
                    None => {
                        conns.remove(&fd);
                    }
                },
                Err(e) => {
                    let _ = send_report(
                        conn.fd.as_fd(),
                        &Report::ExecFailed {
                            program: String::new(),
                            message: format!("malformed request: {e}"),
                            status: paddock_wire::EXIT_CANNOT_EXECUTE,
                        },
                    );
                    conns.remove(&fd);
                }
            },
            Some(pid) => {
                for &b in &buf[..n.min(buf.len())] {
                    if let Ok(sig) = Signal::try_from(i32::from(b)) {
                        deliver(pid, Target::Group, sig);
                    }
                }
            }
        },
        // The host went away: so does its command.
        Ok(None) | Err(_) => {
            if let Some(Conn {
                child: Some(pid), ..
            }) = conns.remove(&fd)
            {
                deliver(pid, Target::Group, Signal::SIGKILL);
            }
        }
    }
}

/// Forks `cmd` with `fds` as its stdin, stdout and stderr (or a new terminal, sent back first);
/// its pid, once `Ready` is sent. `None` when it could not start (the host was told why).
fn start(cmd: &Command, fds: Vec<OwnedFd>, conn: BorrowedFd<'_>) -> Option<Pid> {
    let refuse = |message: String| {
        let _ = send_report(
            conn,
            &Report::ExecFailed {
                program: cmd.argv.first().cloned().unwrap_or_default(),
                message,
                status: paddock_wire::EXIT_CANNOT_EXECUTE,
            },
        );
        None
    };
    let pty = if cmd.tty {
        if !fds.is_empty() {
            return refuse("a command with a terminal takes no streams".into());
        }
        match paddock_wire::open_pty(cmd.size) {
            Ok((master, slave)) => {
                if send_fd(conn, &Report::PtyMaster, master.as_fd()).is_err() {
                    return None;
                }
                Some(slave)
            }
            Err(e) => return refuse(format!("cannot create a terminal: {e}")),
        }
    } else {
        if fds.len() != 3 {
            return refuse(format!("give 3 streams, not {}", fds.len()));
        }
        None
    };
    let prepared = exec::Prepared::new(cmd);
    let streams: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    // The child shares this process's memory until it execs: system calls only (`Prepared`).
    let spawned = exec::spawn_shared(|| {
        for (target, fd) in streams.iter().enumerate() {
            // SAFETY: dup2 onto 0..2 from descriptors this process holds (and the child too).
            if unsafe { libc::dup2(*fd, target as i32) } < 0 {
                // SAFETY: _exit ends the child at once.
                unsafe { libc::_exit(paddock_wire::EXIT_CANNOT_EXECUTE) }
            }
        }
        prepared.exec(pty.as_ref().map(AsFd::as_fd), conn)
    });
    match spawned {
        Err(e) => refuse(format!("cannot start the command: {e}")),
        Ok(pid) => {
            let _ = send_report(conn, &Report::Ready { pid });
            Some(Pid::from_raw(pid))
        }
    }
}

/// Reaps every child that ended: the main command's status when it was one; a served
/// command's end goes to its connection, which closes.
fn reap(main: Pid, conns: &mut HashMap<RawFd, Conn>) -> Option<i32> {
    loop {
        let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return None,
        };
        if pid == main {
            kill_all(conns);
            return Some(status);
        }
        let served = conns
            .iter()
            .find(|(_, c)| c.child == Some(pid))
            .map(|(fd, _)| *fd);
        if let Some(fd) = served
            && let Some(c) = conns.remove(&fd)
        {
            let _ = send_report(c.fd.as_fd(), &Report::Exited { status });
        }
    }
}

/// The sandbox ends: each served command's group is killed (the kernel would, with pid 1).
fn kill_all(conns: &HashMap<RawFd, Conn>) {
    for c in conns.values() {
        if let Some(pid) = c.child {
            deliver(pid, Target::Group, Signal::SIGKILL);
        }
    }
}
