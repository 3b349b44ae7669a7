//! The streams of a command run without a terminal: pipes the supervisor relays, never the
//! supervisor's own descriptors.
//!
//! Handing the command the supervisor's stdin, stdout and stderr would give the sandbox the
//! host's open files: `ftruncate(1, 0)` on a `>> host.log`, the path behind `/proc/self/fd/1`,
//! or the host's terminal (its settings, its size, `TIOCSTI` where the kernel allows it). So the
//! command gets three pipes, and [`Relay`] copies between them and the supervisor's own
//! streams, as the gvisor and vm backends' helpers do over their channels.
//!
//! When the sandbox's process ends, what is already in the output pipes is copied and the relay
//! stops: output written later by a process that outlived it (a background job of an `exec`)
//! is not waited for, as it was not before.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::pipe::{PipeFlags, pipe_with};

/// The sandbox's ends of its three pipes (its descriptors 0, 1 and 2) and the supervisor's.
#[derive(Debug)]
pub(crate) struct Pipes {
    /// Read end of stdin, write ends of stdout and stderr: the command's.
    pub theirs: [OwnedFd; 3],
    /// The supervisor's ends.
    pub ours: Relay,
}

/// The supervisor's ends of a command's pipes.
#[derive(Debug)]
pub(crate) struct Relay {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Makes the three pipes (close-on-exec: the spawn passes the command's ends on explicitly).
pub(crate) fn pipes() -> io::Result<Pipes> {
    let (in_r, in_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC)?;
    Ok(Pipes {
        theirs: [in_r, out_w, err_w],
        ours: Relay {
            stdin: in_w,
            stdout: out_r,
            stderr: err_r,
        },
    })
}

impl Relay {
    /// Copies this process's stdin to the command and its output to this process's stdout and
    /// stderr, on a thread of its own, until the output pipes close or `exit` (a pidfd of the
    /// process that stands for the command) becomes readable; then what is left in the pipes.
    pub(crate) fn start(self, exit: OwnedFd) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("stdio-relay".into())
            .spawn(move || self.run(exit.as_fd()))
    }

    fn run(self, exit: BorrowedFd<'_>) {
        let Relay {
            stdin,
            stdout,
            stderr,
        } = self;
        let _ = rustix::io::ioctl_fionbio(&stdin, true);
        let mut to_cmd = Some(stdin);
        let mut outs = [Some(stdout), Some(stderr)];
        let hosts = [rustix::stdio::stdout(), rustix::stdio::stderr()];
        let host_in = rustix::stdio::stdin();
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if outs.iter().all(Option::is_none) {
                return;
            }
            // What is polled: the two outputs, the exit, and stdin's way in (the host's stdin
            // while nothing waits to go in, else the command's pipe becoming writable).
            let mut fds = Vec::with_capacity(4);
            for o in outs.iter().flatten() {
                fds.push(PollFd::new(o, PollFlags::IN));
            }
            fds.push(PollFd::new(&exit, PollFlags::IN));
            let n_out = fds.len() - 1;
            match &to_cmd {
                Some(w) if !pending.is_empty() => fds.push(PollFd::new(w, PollFlags::OUT)),
                Some(_) => fds.push(PollFd::new(&host_in, PollFlags::IN)),
                None => {}
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return,
            }
            let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
            drop(fds);
            let mut i = 0;
            for (slot, host) in outs.iter_mut().zip(hosts) {
                if slot.is_none() {
                    continue;
                }
                if !ready[i].is_empty() && !copy_once(slot, host, &mut buf) {
                    *slot = None;
                }
                i += 1;
            }
            if !ready[n_out].is_empty() {
                // The command's process ended: copy what it left, then stop.
                for (slot, host) in outs.iter_mut().zip(hosts) {
                    if let Some(fd) = slot.take() {
                        let _ = rustix::io::ioctl_fionbio(&fd, true);
                        let mut fd = Some(fd);
                        while copy_once(&mut fd, host, &mut buf) {}
                    }
                }
                return;
            }
            if let Some(r) = ready.get(n_out + 1).filter(|r| !r.is_empty()) {
                if pending.is_empty() {
                    // The host's stdin has something (or ended).
                    match rustix::io::read(host_in, &mut buf) {
                        Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                        Ok(_) | Err(_) => to_cmd = None,
                    }
                } else if r.intersects(PollFlags::ERR | PollFlags::HUP) {
                    // The command closed its stdin.
                    to_cmd = None;
                    pending.clear();
                }
            }
            if let Some(w) = &to_cmd
                && !pending.is_empty()
            {
                match rustix::io::write(w, &pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                    Err(_) => {
                        to_cmd = None;
                        pending.clear();
                    }
                }
            }
        }
    }
}

/// Copies one read's worth from `from` to `to`. False when `from` is done: it ended, or `to`
/// no longer takes output (then `from` is closed, so the command's next write fails as it would
/// have on the host's pipe: `yes | head -1` ends `yes` with SIGPIPE).
fn copy_once(from: &mut Option<OwnedFd>, to: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    let Some(fd) = from else {
        return false;
    };
    let n = match rustix::io::read(&*fd, &mut *buf) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(rustix::io::Errno::INTR) => return true,
        Err(_) => return false,
    };
    let mut left = &buf[..n];
    while !left.is_empty() {
        match rustix::io::write(to, left) {
            Ok(w) => left = &left[w..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                // A host stream someone made non-blocking: wait until it takes more.
                let mut p = [PollFd::new(&to, PollFlags::OUT)];
                let _ = poll(&mut p, None);
            }
            Err(_) => {
                *from = None;
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_process_that_left_ends_the_relay_after_its_output_is_copied() {
        // The relay writes to this process's own stdout and stderr (the test harness's); what
        // is checked here is that it stops, also while a pipe's writer lives on.
        let p = pipes().unwrap();
        let [in_r, out_w, err_w] = p.theirs;
        rustix::io::write(&out_w, b"left in the pipe\n").unwrap();
        let (exit_r, exit_w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let relay = p.ours.start(exit_r).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!relay.is_finished());
        // "The process ended": the exit descriptor becomes readable.
        rustix::io::write(&exit_w, b"x").unwrap();
        let t = std::time::Instant::now();
        while !relay.is_finished() {
            assert!(t.elapsed().as_secs() < 5, "the relay did not stop");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop((in_r, out_w, err_w));
    }
}
