//! Relaying the terminal and signals between the user and the sandbox.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use paddock_core::Instance;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr, tcsetwinsize};

/// Signals the supervisor passes on to the sandbox (SIGWINCH is handled here).
const FORWARD: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The signals the supervisor catches for a sandbox, caught from before the sandbox starts:
/// one that arrives while the sandbox is being set up is passed on once it runs, instead of
/// killing the supervisor and leaving the sandbox without it.
pub struct SignalPipe {
    read: OwnedFd,
    write: std::os::fd::RawFd,
    ids: Vec<signal_hook::SigId>,
}

impl SignalPipe {
    /// Catches the forwarded signals, and SIGWINCH when `terminal`.
    pub fn catch(terminal: bool) -> io::Result<SignalPipe> {
        let mut signals = FORWARD.to_vec();
        if terminal {
            signals.push(libc::SIGWINCH);
        }
        SignalPipe::new(&signals)
    }

    fn new(signals: &[i32]) -> io::Result<SignalPipe> {
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        let wfd = write.as_raw_fd();
        std::mem::forget(write); // lives as long as the process; handlers write to it
        let mut ids = Vec::new();
        for &sig in signals {
            // SAFETY: the handler only calls write(2), which is async-signal-safe.
            let id = unsafe {
                signal_hook::low_level::register(sig, move || {
                    let b = sig as u8;
                    libc::write(wfd, (&raw const b).cast(), 1);
                })
            }?;
            ids.push(id);
        }
        Ok(SignalPipe {
            read,
            write: wfd,
            ids,
        })
    }

    /// A descriptor on which one byte `N` asks for signal `N` to be passed on to the sandbox
    /// (the control socket's `signal` request: the same path as a signal to the supervisor).
    pub fn injector(&self) -> io::Result<OwnedFd> {
        // SAFETY: the write end is never closed (it is leaked on purpose above).
        let fd = unsafe { BorrowedFd::borrow_raw(self.write) };
        Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
    }

    fn drain(&self) -> Vec<i32> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        while let Ok(n) = rustix::io::read(&self.read, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend(buf[..n].iter().map(|b| i32::from(*b)));
        }
        out
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Restores the terminal's settings on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.saved);
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let mut p = [PollFd::new(&fd, PollFlags::OUT)];
                let _ = poll(&mut p, None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Relays until the sandbox exits.
pub fn relay(instance: &mut dyn Instance, sigs: &SignalPipe) -> io::Result<()> {
    let pty = instance.take_pty();
    match pty {
        Some(master) => relay_pty(instance, sigs, master),
        None => loop {
            let exit_fd = instance.exit_fd();
            let mut fds = [
                PollFd::new(&sigs.read, PollFlags::IN),
                PollFd::new(&exit_fd, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            let exited = !fds[1].revents().is_empty();
            for sig in sigs.drain() {
                let _ = instance.signal(sig);
            }
            if exited {
                return Ok(());
            }
        },
    }
}

fn relay_pty(instance: &mut dyn Instance, sigs: &SignalPipe, master: OwnedFd) -> io::Result<()> {
    let stdin = rustix::stdio::stdin();
    let stdout = rustix::stdio::stdout();
    if let Ok(size) = tcgetwinsize(stdin) {
        let _ = tcsetwinsize(&master, size);
        instance.resize(size.ws_row, size.ws_col);
    }
    let _raw = RawMode::enter(stdin).ok();
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let exit_fd = instance.exit_fd();
        let mut fds = vec![
            PollFd::new(&sigs.read, PollFlags::IN),
            PollFd::new(&exit_fd, PollFlags::IN),
        ];
        if master_open {
            fds.push(PollFd::new(&master, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        // Signals first: a resize must land before the keystrokes that follow it.
        for sig in sigs.drain() {
            if sig == libc::SIGWINCH {
                if let Ok(size) = tcgetwinsize(stdin) {
                    let _ = tcsetwinsize(&master, size);
                    instance.resize(size.ws_row, size.ws_col);
                }
            } else {
                let _ = instance.signal(sig);
            }
        }
        let mut i = 2;
        if master_open {
            if ready[i] {
                match rustix::io::read(&master, &mut buf) {
                    Ok(0) | Err(rustix::io::Errno::IO) => master_open = false,
                    Ok(n) => write_all(stdout, &buf[..n])?,
                    Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            i += 1;
        }
        if stdin_open && ready[i] {
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => write_all(master.as_fd(), &buf[..n])?,
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
        if ready[1] || !master_open {
            // The sandbox is gone (or its terminal closed): flush what is left and stop.
            let _ = rustix::io::ioctl_fionbio(&master, true);
            while let Ok(n) = rustix::io::read(&master, &mut buf) {
                if n == 0 {
                    break;
                }
                write_all(stdout, &buf[..n])?;
            }
            return Ok(());
        }
    }
}
