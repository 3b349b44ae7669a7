//! A running VM sandbox as the supervisor sees it: the VMM and its device helpers, the boot
//! connection, and one exec connection whose frames are turned back into streams, signals and
//! an exit status.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_core::{
    BackendError, Egress, ExecHandle, Execs, Exit, Instance, RemoteSession, SessionEnd, Streams,
};
use paddock_wire::vm::Frame;
use rustix::event::{PollFd, PollFlags, poll};

/// Processes that die with the instance: the VMM first, then its device helpers.
#[derive(Debug, Default)]
pub struct Procs {
    /// The VMM.
    pub vmm: Option<Child>,
    /// virtiofsd and the vsock device.
    pub helpers: Vec<(String, Child)>,
    /// The host cgroups they all run in (accounting for `paddock ls`), removed once they end.
    pub cgroups: Option<paddock_confine::cgroup::SandboxCgroups>,
}

impl Procs {
    /// Stops everything: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let mut all: Vec<Child> = self.vmm.take().into_iter().collect();
        all.extend(self.helpers.drain(..).map(|(_, c)| c));
        for c in &all {
            // SAFETY: kill has no memory effects; the pid is our unreaped child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        for mut c in all {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        // Whatever is left in them (a VMM behind `unshare` still exiting) is killed first.
        if let Some(c) = self.cgroups.take() {
            c.remove();
        }
    }
}

impl Procs {
    /// Ends the VMM at once (its pid namespace goes with it).
    pub fn kill_vmm(&mut self) {
        if let Some(mut c) = self.vmm.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop(Duration::from_millis(500));
    }
}

/// The parts [`VmInstance::new`] takes over.
#[derive(Debug)]
pub struct Parts {
    /// VMM and helpers.
    pub procs: Procs,
    /// A pidfd of the VMM.
    pub vmm_pidfd: OwnedFd,
    /// The boot connection (power-off goes here).
    pub boot: UnixStream,
    /// The exec connection, after the command's `Ready`.
    pub exec: UnixStream,
    /// Whether the command has a terminal.
    pub tty: bool,
    /// Where the guest's proxy connections arrive.
    pub egress: Option<OwnedFd>,
    /// Sockets and the initramfs (removed with the instance).
    pub run_dir: tempfile::TempDir,
    /// The guest's serial console.
    pub console_log: PathBuf,
    /// How long a clean power-off may take.
    pub poweroff_grace: Duration,
}

/// A running VM sandbox.
#[derive(Debug)]
pub struct VmInstance {
    parts: Parts,
    session: RemoteSession,
    exit_r: OwnedFd,
    /// Written when the command ended: by the relay's report, or by the VMM's own end.
    exit_w: Arc<File>,
    vmm_pid: i32,
    guest_limits: Vec<String>,
}

impl VmInstance {
    /// Starts the stream pumps for `parts`.
    pub fn new(parts: Parts) -> io::Result<VmInstance> {
        let vmm_pid = parts.procs.vmm.as_ref().map_or(0, |c| c.id() as i32);
        let (exit_r, exit_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let exit_w = Arc::new(File::from(exit_w));
        let session = RemoteSession::new(parts.exec.try_clone()?, parts.tty);
        // The VMM ending on its own also ends the command.
        {
            let pidfd = parts.vmm_pidfd.try_clone()?;
            let exit_w = exit_w.clone();
            std::thread::Builder::new()
                .name("vm-watch".into())
                .spawn(move || {
                    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
                    while let Err(rustix::io::Errno::INTR) = poll(&mut fds, None) {}
                    let _ = (&*exit_w).write_all(&[2]);
                })?;
        }
        Ok(VmInstance {
            parts,
            session,
            exit_r,
            exit_w,
            vmm_pid,
            guest_limits: Vec::new(),
        })
    }

    fn console_tail(&self) -> String {
        console_tail(&self.parts.console_log)
    }
}

/// The last lines of the guest's console, for error messages.
pub fn console_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    if tail.is_empty() {
        "the console is empty".into()
    } else {
        format!("console: {}", tail.join(" | "))
    }
}

impl Instance for VmInstance {
    fn pid(&self) -> i32 {
        self.vmm_pid
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.exit_r.as_fd()
    }

    fn take_streams(&mut self) -> Streams {
        self.session.take_streams()
    }

    fn relayed(&mut self, end: SessionEnd) {
        self.session.relayed(end);
        let _ = (&*self.exit_w).write_all(&[1]);
    }

    fn signal(&self, signal: i32) -> Result<(), BackendError> {
        self.session
            .signal(signal)
            .map_err(BackendError::io("cannot signal the command in the VM"))
    }

    fn wait(&mut self) -> Result<Exit, BackendError> {
        let mut fds = [PollFd::new(&self.exit_r, PollFlags::IN)];
        while let Err(rustix::io::Errno::INTR) = poll(&mut fds, None) {}
        let exit = self.session.take_exit();
        // A clean power-off: the guest ends its processes, detaches the shared folders, makes
        // its disk read-only and flushes it, then says so; from then on nothing is lost by
        // stopping the VMM at once instead of waiting for the guest kernel's own power-down.
        let _ = Frame::Poweroff.write_to(&mut self.parts.boot);
        let _ = self
            .parts
            .boot
            .set_read_timeout(Some(self.parts.poweroff_grace));
        let synced = loop {
            match Frame::read_from(&mut self.parts.boot) {
                Ok(Some(Frame::Poweroff)) => break true,
                Ok(Some(Frame::Report(paddock_wire::Report::LimitsHit { events }))) => {
                    self.guest_limits = events;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break false,
            }
        };
        if !synced {
            // No answer: give the VMM what is left of the grace period to end by itself.
            let pidfd = self.parts.vmm_pidfd.as_fd();
            let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
            let grace =
                rustix::time::Timespec::try_from(Duration::from_secs(2)).unwrap_or_default();
            let _ = poll(&mut fds, Some(&grace));
        }
        let tail = self.console_tail();
        self.parts.procs.kill_vmm();
        self.parts.procs.stop(Duration::from_secs(2));
        match exit {
            Some(e) => Ok(e),
            None => Err(BackendError::Layer {
                layer: "vm".into(),
                message: format!("the VM stopped before the command finished ({tail})"),
            }),
        }
    }

    fn diagnostics(&mut self) -> Vec<String> {
        self.session.diagnostics()
    }

    fn take_egress(&mut self) -> Option<Egress> {
        self.parts.egress.take().map(Egress::UnixListener)
    }

    fn limits_hit(&self) -> Vec<String> {
        // The guest's kernel says so on its console (its memory is the sandbox's limit); the
        // guest reports its pids and disk at power-off.
        let text = std::fs::read_to_string(&self.parts.console_log).unwrap_or_default();
        let oom = text.matches("Out of memory: Killed process").count();
        let mut out = Vec::new();
        if oom > 0 {
            out.push(format!(
                "memory limit: the guest's kernel killed {oom} process(es) that ran out of memory"
            ));
        }
        out.extend(self.guest_limits.iter().cloned());
        out
    }

    fn execs(&self) -> Option<Box<dyn Execs>> {
        Some(Box::new(VmExecs {
            uds: crate::device_socket(self.parts.run_dir.path()),
        }))
    }
}

/// Opens one more exec connection to the guest's helper per command (`paddock exec`).
struct VmExecs {
    uds: std::path::PathBuf,
}

impl Execs for VmExecs {
    fn handle(&self) -> Result<ExecHandle, BackendError> {
        let conn = crate::connect_guest(&self.uds, paddock_wire::vm::EXEC_PORT)
            .map_err(BackendError::io("cannot reach the guest"))?;
        Ok(ExecHandle {
            extra: None,
            fd: OwnedFd::from(conn),
            detail: String::new(),
        })
    }

    fn dial(&self, port: u16) -> Result<OwnedFd, BackendError> {
        let mut conn = crate::connect_guest(&self.uds, paddock_wire::vm::FORWARD_PORT)
            .map_err(BackendError::io("cannot reach the guest"))?;
        conn.write_all(&port.to_be_bytes())
            .map_err(BackendError::io("cannot reach the guest"))?;
        Ok(OwnedFd::from(conn))
    }
}
