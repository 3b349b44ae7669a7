//! Host helper processes: the running executable started again under a hidden first argument
//! (the egress proxy, the relay), given its descriptors, which confines itself
//! ([`confine`]) before it reads a byte a sandbox sends.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use nix::sys::signal::SigSet;

use crate::jail::sys;

/// A helper process: killed and reaped when dropped.
#[derive(Debug)]
pub struct Worker {
    pid: rustix::process::Pid,
    pidfd: OwnedFd,
    reaped: bool,
}

impl Worker {
    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::TERM);
    }

    /// Waits up to `timeout` for it to end; true if it did (then it is reaped).
    pub fn wait_for(&mut self, timeout: Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            let ts = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => return false,
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
        let _ = rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty());
        self.reaped = true;
        true
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty());
        }
    }
}

/// How to start a helper.
#[derive(Debug)]
pub struct Spawn<'a> {
    /// The hidden first argument the program dispatches on.
    pub arg: &'a CStr,
    /// Its descriptors 3, 4, … in order.
    pub fds: &'a [RawFd],
    /// Whether it keeps this process's stdin, stdout and stderr (otherwise /dev/null for the
    /// first two and this process's stderr).
    pub stdio: bool,
    /// Signals it starts with blocked (every other one unblocked, all at their default).
    pub blocked: SigSet,
    /// Its whole environment.
    pub env: &'a [CString],
}

/// Starts the running program (whatever is at its path now: a paddock replaced since this
/// process started may speak another version of the channel) as `exe ARG`. `posix_spawn`: no
/// copy of this process's memory on the start's path. Its path stays the first argument, for
/// `ps`.
pub fn spawn(how: &Spawn<'_>) -> io::Result<Worker> {
    use nix::fcntl::OFlag;
    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, posix_spawn};
    use nix::sys::stat::Mode;
    let exe = std::env::current_exe()?;
    let mut actions = PosixSpawnFileActions::init()?;
    if !how.stdio {
        actions.add_open(0, "/dev/null", OFlag::O_RDONLY, Mode::empty())?;
        actions.add_open(1, "/dev/null", OFlag::O_WRONLY, Mode::empty())?;
    }
    for (i, fd) in how.fds.iter().enumerate() {
        // A duplicate made by the spawn is open across exec; the originals stay close-on-exec.
        actions.add_dup2(*fd, 3 + i as i32)?;
    }
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_sigmask(&how.blocked)?;
    attr.set_sigdefault(&SigSet::all())?;
    attr.set_flags(
        nix::spawn::PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | nix::spawn::PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    let name = CString::new(exe.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let args = [name, how.arg.to_owned()];
    let pid = posix_spawn(c"/proc/self/exe", &actions, &attr, &args, how.env)?;
    let pid = rustix::process::Pid::from_raw(pid.as_raw())
        .ok_or_else(|| io::Error::other("posix_spawn gave no pid"))?;
    let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            return Err(e.into());
        }
    };
    Ok(Worker {
        pid,
        pidfd,
        reaped: false,
    })
}

/// Fails with the layer's name.
fn failed(layer: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("cannot apply {layer}: {e}")
}

/// The confinement of a helper, on its only thread, in order; every layer is required, and one
/// that cannot be applied is the error (naming it):
///
/// - started as root, it becomes `uid` (and the same gid) with no supplementary group, so it
///   has no capability and owns no file;
/// - `no_new_privs`, not dumpable (no other process of the same uid may trace it or read its
///   memory), killed with its parent (checked: the parent it had at the start is still there);
/// - Landlock (where the kernel has it): it may read under `readable` and nothing else, write
///   nothing, and signal or reach by abstract socket no process outside itself;
/// - seccomp: the sandboxes' filter ([`crate::seccomp::programs`]) and `extra` on top.
pub fn confine(
    uid: Option<u32>,
    readable: &[&str],
    extra: Vec<seccompiler::BpfProgram>,
) -> Result<(), String> {
    confine_with(
        uid,
        || crate::landlock::restrict_to_reading(readable),
        extra,
    )
}

/// [`confine`] with the Landlock layer `landlock` applies (instead of reading `readable`).
pub fn confine_with(
    uid: Option<u32>,
    landlock: impl FnOnce() -> Result<crate::landlock::Enforced, crate::landlock::LandlockError>,
    extra: Vec<seccompiler::BpfProgram>,
) -> Result<(), String> {
    let parent = rustix::process::getppid();
    if let Some(uid) = uid {
        sys::become_id(uid).map_err(failed("the helper's uid and gid"))?;
    }
    // A uid change clears the parent-death signal: set it again, then check the parent did not
    // die in between.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| failed("the parent-death signal")(e.into()))?;
    sys::set_non_dumpable().map_err(failed("non-dumpable"))?;
    rustix::thread::set_no_new_privs(true).map_err(|e| failed("no_new_privs")(e.into()))?;
    if rustix::process::getppid() != parent {
        return Err("its parent is gone".into());
    }
    // As in the sandbox: Landlock is required wherever the kernel offers it.
    match landlock() {
        Ok(crate::landlock::Enforced::Unsupported) if crate::landlock::kernel_abi() > 0 => {
            return Err("cannot apply Landlock: not enforced".into());
        }
        Ok(_) => {}
        Err(_) if crate::landlock::kernel_abi() == 0 => {}
        Err(e) => return Err(format!("cannot apply {e}")),
    }
    let mut programs =
        crate::seccomp::programs().map_err(|e| format!("cannot apply seccomp: {e}"))?;
    programs.extend(extra);
    for p in &programs {
        crate::seccomp::apply(p).map_err(failed("seccomp"))?;
    }
    Ok(())
}
