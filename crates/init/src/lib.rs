//! The in-sandbox helper: pid 1 inside every Paddock sandbox.
//!
//! It knows only the wire protocol ([`paddock_wire`]). Given a [`Command`] it starts the command
//! in its own session (with a terminal created inside the sandbox when asked), forwards the
//! signals it receives to the command's process group, reaps every orphan, and exits with the
//! command's status. When it exits the kernel kills whatever is left in the sandbox's pid
//! namespace, so nothing of the command's tree survives it.
//!
//! Given an exec socket's listener (the ns backend's, [`paddock_wire::EXEC_SOCKET`]) it also
//! forks more commands on request while the first one runs ([`serve`]).

mod exec;
pub mod serve;
mod signals;

use std::os::fd::{AsFd, OwnedFd};

pub use exec::{Prepared, exec_command, spawn_shared};
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid, fork};
use paddock_wire::{Command, EXIT_SETUP_FAILED, Report, send_fd, send_report};
pub use signals::{FORWARDED, block_all as block_forwarded, forward_and_wait};

/// Runs `cmd` as pid 1 of a sandbox and exits with its status. `channel` is the report channel
/// to the host side; `execs`, a listening exec socket to serve meanwhile.
pub fn run(cmd: &Command, channel: OwnedFd, host_pid: i32, execs: Option<OwnedFd>) -> ! {
    let blocked = match signals::block_all() {
        Ok(b) => b,
        Err(e) => fail(&channel, "init", &format!("cannot block signals: {e}")),
    };
    let pty = if cmd.tty {
        match paddock_wire::open_pty(cmd.size) {
            Ok((master, slave)) => {
                if let Err(e) = send_fd(channel.as_fd(), &Report::PtyMaster, master.as_fd()) {
                    fail(
                        &channel,
                        "terminal",
                        &format!("cannot hand the terminal to the host: {e}"),
                    );
                }
                drop(master);
                Some(slave)
            }
            Err(e) => fail(
                &channel,
                "terminal",
                &format!("cannot create a terminal: {e}"),
            ),
        }
    } else {
        None
    };
    // SAFETY: pid 1 is single-threaded here (the jail never starts threads), so the child may
    // run arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => fail(&channel, "init", &format!("cannot fork the command: {e}")),
        Ok(ForkResult::Child) => {
            signals::unblock(&blocked);
            exec::exec_command(cmd, pty, channel.as_fd())
        }
        Ok(ForkResult::Parent { child }) => {
            drop(pty);
            // Ready only once the command exists, so the host never signals an empty sandbox.
            // With a pidfd of this process: the host holds pid 1 by it even when the command
            // ends and this exits before the host looks (the pid alone could by then be gone,
            // or be another process's).
            let ready = Report::Ready { pid: host_pid };
            let _ = match rustix::process::pidfd_open(
                rustix::process::getpid(),
                rustix::process::PidfdFlags::empty(),
            ) {
                Ok(me) => send_fd(channel.as_fd(), &ready, me.as_fd()),
                Err(_) => send_report(channel.as_fd(), &ready),
            };
            let status = match execs {
                Some(listener) => serve::serve_and_wait(child, listener),
                None => forward_and_wait(child, Target::Group, true),
            };
            std::process::exit(status)
        }
    }
}

/// Where forwarded signals go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The child's process group (the command leads its own session).
    Group,
    /// The child process only.
    Process,
}

fn fail(channel: &OwnedFd, layer: &str, message: &str) -> ! {
    let _ = send_report(
        channel.as_fd(),
        &Report::SetupFailed {
            layer: layer.to_owned(),
            message: message.to_owned(),
        },
    );
    std::process::exit(EXIT_SETUP_FAILED)
}

/// Sends `sig` to `pid` (or its group), ignoring a target that is already gone.
///
/// A signal that came before the command has made its own session finds no group yet (pid 1
/// forwards what waited while it set itself up as soon as it has forked): it goes to the
/// command's process itself, which has it pending until it unblocks signals, instead of being
/// lost.
pub fn deliver(pid: Pid, target: Target, sig: Signal) {
    if target == Target::Group
        && nix::sys::signal::kill(Pid::from_raw(-pid.as_raw()), sig)
            != Err(nix::errno::Errno::ESRCH)
    {
        return;
    }
    let _ = nix::sys::signal::kill(pid, sig);
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// A signal for a command that has no process group of its own yet (it has not reached
    /// setsid) reaches the command itself; it used to be lost, and the command ran on.
    #[test]
    fn a_signal_before_the_commands_session_is_not_lost() {
        // In this test's group, so no group has its id.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        deliver(pid, Target::Group, Signal::SIGTERM);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }

    /// Once the command leads its group, the whole group gets the signal.
    #[test]
    fn a_signal_reaches_the_commands_group() {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        std::thread::sleep(std::time::Duration::from_millis(100));
        deliver(pid, Target::Group, Signal::SIGTERM);
        // The output closes only once `sleep`, which holds it too, is gone as well.
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{:?}", out.status);
    }
}
