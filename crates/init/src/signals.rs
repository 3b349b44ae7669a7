//! Signal forwarding and reaping for pid 1 and for the jail's outer process.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::{Target, deliver};

/// Signals passed on to the command.
pub const FORWARDED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

pub(crate) fn set() -> SigSet {
    let mut s = SigSet::empty();
    for sig in FORWARDED {
        s.add(sig);
    }
    s.add(Signal::SIGCHLD);
    s
}

/// Blocks the forwarded signals and SIGCHLD; returns the previous mask.
pub fn block_all() -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set()), Some(&mut old))?;
    Ok(old)
}

/// Restores a mask saved by [`block_all`].
pub fn unblock(old: &SigSet) {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old), None);
}

/// With the signals blocked, forwards each forwarded signal to `child` and reaps children until
/// `child` exits. Returns its status (128 + signal when killed). With `reap_all`, orphans
/// reparented to this process are reaped too (pid 1's duty).
pub fn forward_and_wait(child: Pid, target: Target, reap_all: bool) -> i32 {
    let set = set();
    loop {
        // Reap first: the child may have exited before we started waiting.
        if let Some(status) = reap(child, reap_all) {
            return status;
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => deliver(child, target, sig),
            Err(_) => {}
        }
    }
}

fn reap(child: Pid, reap_all: bool) -> Option<i32> {
    let who = if reap_all { None } else { Some(child) };
    loop {
        match waitpid(who, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}
