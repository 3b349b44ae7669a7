//! Pid 1's reaper: every process in the guest is eventually waited for here; the ones the
//! helper started get their status delivered to the session that started them.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use paddock_wire::vm::ExitStatus;

/// The table of started processes.
#[derive(Debug, Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, Sender<ExitStatus>>>,
    spawned: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reaper {
    /// Starts a child that runs `child` (which should exec; if it returns the child exits 127);
    /// the parent gets the pid and where its status will arrive. The table stays locked until
    /// the child is registered, so the reaper cannot see its end before.
    ///
    /// The child shares this process's memory until it execs (`CLONE_VM | CLONE_VFORK`, as
    /// posix_spawn does), on a stack of its own, while this thread waits: under gVisor a fork's
    /// copy of the address space took 15-20 ms of a command's start. So `child` must only make
    /// system calls, no allocation and no lock, until it fails (see [`paddock_init::Prepared`]).
    pub fn spawn(&self, child: impl FnOnce()) -> nix::Result<(Pid, Receiver<ExitStatus>)> {
        let mut table = lock(&self.waiting);
        let pid = Pid::from_raw(paddock_init::spawn_shared(child)?);
        let (tx, rx) = channel();
        table.insert(pid.as_raw(), tx);
        drop(table);
        self.spawned.notify_all();
        Ok((pid, rx))
    }

    /// Reaps forever.
    pub fn run(&self) -> ! {
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(pid, ExitStatus::Code { code }),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.deliver(pid, ExitStatus::Signal { signal: sig as i32 })
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children: sleep until one is spawned (or a while, for orphans that
                    // the kernel reparents to us).
                    let table = lock(&self.waiting);
                    let _ = self
                        .spawned
                        .wait_timeout(table, std::time::Duration::from_millis(500));
                }
            }
        }
    }

    fn deliver(&self, pid: Pid, status: ExitStatus) {
        if let Some(tx) = lock(&self.waiting).remove(&pid.as_raw()) {
            let _ = tx.send(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::time::Duration;

    use paddock_wire::{Command, Report};
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

    use super::*;

    fn command(argv: &[&str]) -> Command {
        let gid = rustix::process::getgid().as_raw();
        Command {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
            uid: rustix::process::getuid().as_raw(),
            gid,
            groups: vec![gid],
            tty: false,
            size: None,
            no_new_privs: true,
        }
    }

    /// The child shares this test binary's memory (with the harness's threads running) until it
    /// executes; it must start the program with no signal ignored (this binary ignores SIGPIPE,
    /// as the helper does) and report a program it cannot start.
    #[test]
    fn a_child_sharing_memory_execs_with_default_signals_and_reports_failures() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: setting the groups needs root");
            return;
        }
        let reaper = Arc::new(Reaper::default());
        {
            let reaper = reaper.clone();
            std::thread::spawn(move || reaper.run());
        }
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let status = |argv: &[&str]| {
            let prepared = paddock_init::Prepared::new(&command(argv));
            let chan = theirs.as_fd();
            let (_, done) = reaper.spawn(|| prepared.exec(None, chan)).unwrap();
            done.recv_timeout(Duration::from_secs(30)).unwrap()
        };
        let ignores_nothing = "grep -q '^SigIgn:[[:space:]]*0*$' /proc/self/status && exit 7";
        assert_eq!(
            status(&["sh", "-c", ignores_nothing]),
            ExitStatus::Code { code: 7 }
        );
        assert_eq!(
            status(&["no-such-program-xyz"]),
            ExitStatus::Code { code: 127 }
        );
        let (report, _) = paddock_wire::recv_report(ours.as_fd()).unwrap().unwrap();
        assert!(
            matches!(&report, Report::ExecFailed { program, status: 127, .. } if program == "no-such-program-xyz"),
            "{report:?}"
        );
    }
}
