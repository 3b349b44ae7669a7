//! Pid 1's reaper: every process in the guest is eventually waited for here; the ones the
//! helper started get their status delivered to the session that started them.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
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
    /// Forks; the child runs `child` (which never returns), the parent gets the pid and where its
    /// status will arrive (`child` should exec; if it returns the child exits 127). The table stays locked across the fork so the reaper cannot see the
    /// child's end before it is registered.
    pub fn spawn(&self, child: impl FnOnce()) -> nix::Result<(Pid, Receiver<ExitStatus>)> {
        let mut table = lock(&self.waiting);
        // SAFETY: the child only runs `child`, which sets up descriptors and ids and execs;
        // glibc's fork keeps its allocator usable in the child of a threaded parent.
        match unsafe { fork() }? {
            ForkResult::Child => {
                child();
                // SAFETY: _exit ends the forked child without running the parent's handlers.
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                let (tx, rx) = channel();
                table.insert(child.as_raw(), tx);
                drop(table);
                self.spawned.notify_all();
                Ok((child, rx))
            }
        }
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
