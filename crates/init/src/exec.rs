//! Starting the command: session, terminal, identity, descriptors, exec.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use paddock_wire::{Command, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Report, send_report};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn exec_failed(channel: BorrowedFd<'_>, program: &str, message: String, status: i32) -> ! {
    let _ = send_report(
        channel,
        &Report::ExecFailed {
            program: program.to_owned(),
            message,
            status,
        },
    );
    // SAFETY: _exit is async-signal-safe and ends this forked child without running the
    // parent's atexit handlers or flushing its stdio buffers twice.
    unsafe { libc::_exit(status) }
}

/// In the forked child: becomes the command. Never returns.
pub fn exec_command(cmd: &Command, pty: Option<OwnedFd>, channel: BorrowedFd<'_>) -> ! {
    Prepared::new(cmd).exec(pty.as_ref().map(AsFd::as_fd), channel)
}

/// A command made ready to exec. Everything that needs memory is built here, in the parent, so
/// that [`Prepared::exec`] makes system calls only (until it fails): it may then run in a child
/// that shares the parent's memory (`CLONE_VM | CLONE_VFORK`, see the guest's reaper), where
/// under gVisor a fork's copy of the address space costs tens of milliseconds.
#[derive(Debug)]
pub struct Prepared {
    program: String,
    /// Why the command cannot run at all (reported by the child, as any exec failure).
    invalid: Option<(String, i32)>,
    /// The arguments and environment, which `argv` and `envp` point into (a CString's bytes do
    /// not move with it).
    _strings: [Vec<CString>; 2],
    /// Null-terminated pointer arrays, as execve takes them.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Where to look for the program, in order.
    candidates: Vec<CString>,
    cwd: CString,
    groups: Vec<rustix::process::Gid>,
    uid: rustix::process::Uid,
    gid: rustix::process::Gid,
    no_new_privs: bool,
}

impl Prepared {
    pub fn new(cmd: &Command) -> Prepared {
        let program = cmd.argv.first().cloned().unwrap_or_default();
        let mut invalid = None;
        let env: Vec<CString> = cmd
            .env
            .iter()
            .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
            .collect();
        let args: Vec<CString> = match cmd.argv.iter().map(|a| CString::new(a.as_str())).collect() {
            Ok(a) => a,
            Err(e) => {
                invalid = Some((
                    format!("argument contains a NUL byte: {e}"),
                    EXIT_CANNOT_EXECUTE,
                ));
                Vec::new()
            }
        };
        if invalid.is_none() && args.is_empty() {
            invalid = Some(("no command given".into(), EXIT_NOT_FOUND));
        }
        let path = cmd
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH);
        let candidates = if program.contains('/') {
            vec![program.clone()]
        } else {
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| format!("{d}/{program}"))
                .collect()
        };
        let cwd = CString::new(cmd.cwd.as_str()).unwrap_or_else(|_| {
            invalid.get_or_insert((
                format!(
                    "cannot enter working directory {}: it contains a NUL byte",
                    cmd.cwd
                ),
                EXIT_CANNOT_EXECUTE,
            ));
            CString::default()
        });
        let pointers = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        Prepared {
            invalid,
            argv: pointers(&args),
            envp: pointers(&env),
            _strings: [args, env],
            candidates: candidates
                .into_iter()
                .filter_map(|c| CString::new(c).ok())
                .collect(),
            cwd,
            groups: cmd
                .groups
                .iter()
                .map(|g| rustix::process::Gid::from_raw(*g))
                .collect(),
            uid: rustix::process::Uid::from_raw(cmd.uid),
            gid: rustix::process::Gid::from_raw(cmd.gid),
            no_new_privs: cmd.no_new_privs,
            program,
        }
    }

    /// In the child: becomes the command. Never returns. Only system calls until a failure,
    /// whose report (which allocates) is the child's last act before `_exit`. The identity is
    /// set with the raw per-thread calls: libc's wrappers would, in a child sharing the parent's
    /// memory, change the credentials of all the parent's threads.
    pub fn exec(&self, pty: Option<BorrowedFd<'_>>, channel: BorrowedFd<'_>) -> ! {
        let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
            exec_failed(
                channel,
                &self.program,
                format!("{what}: {e}"),
                EXIT_CANNOT_EXECUTE,
            )
        };
        // The command starts with every signal at its default and none blocked: the helper's
        // runtime ignores SIGPIPE, and an ignored signal stays ignored across exec (`yes | head`
        // would then complain of a broken pipe instead of ending quietly).
        reset_signals();
        if let Some((message, status)) = &self.invalid {
            exec_failed(channel, &self.program, message.clone(), *status);
        }
        if let Err(e) = rustix::process::setsid() {
            fail("cannot start a session", &e);
        }
        if let Some(slave) = pty {
            if let Err(e) = rustix::process::ioctl_tiocsctty(slave) {
                fail("cannot attach the terminal", &e);
            }
            for target in 0..3 {
                // SAFETY: dup2 onto 0..2; `slave` is a valid descriptor.
                if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
                    fail("cannot attach the terminal", &Errno::last());
                }
            }
        }
        if let Err(e) = rustix::thread::set_thread_groups(&self.groups) {
            fail("cannot set groups", &e);
        }
        if let Err(e) = rustix::thread::set_thread_res_gid(self.gid, self.gid, self.gid) {
            fail("cannot set group", &e);
        }
        if let Err(e) = rustix::thread::set_thread_res_uid(self.uid, self.uid, self.uid) {
            fail("cannot set user", &e);
        }
        if self.no_new_privs
            && let Err(e) = rustix::thread::set_no_new_privs(true)
        {
            fail("cannot set no_new_privs", &e);
        }
        if let Err(e) = rustix::process::chdir(self.cwd.as_c_str()) {
            fail(
                &format!(
                    "cannot enter working directory {}",
                    self.cwd.to_string_lossy()
                ),
                &e,
            );
        }
        close_stray_fds(channel.as_raw_fd());

        let mut denied = None;
        for c in &self.candidates {
            // SAFETY: both arrays are null-terminated and point into `_strings`, which live as
            // long as `self`; execve returns only on failure.
            unsafe { libc::execve(c.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
            match Errno::last() {
                Errno::ENOENT | Errno::ENOTDIR => {}
                e => denied = Some(e),
            }
        }
        match denied {
            Some(e) => exec_failed(
                channel,
                &self.program,
                format!("cannot execute: {e}"),
                EXIT_CANNOT_EXECUTE,
            ),
            None => exec_failed(
                channel,
                &self.program,
                "command not found".into(),
                EXIT_NOT_FOUND,
            ),
        }
    }
}

/// Every signal back to its default disposition, and none blocked (raw calls: libc's refuse
/// the two signals it reserves for itself, which the command must get at their default too).
fn reset_signals() {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid struct of the kernel's layout and size 8 masks;
        // only this process's (or this unshared child's) dispositions change.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask on this thread with a valid 8-byte mask.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
}

/// Closes every descriptor above 2 except `keep` (which is close-on-exec).
fn close_stray_fds(keep: i32) {
    // SAFETY: close_range only closes descriptors; nothing in this single-threaded child uses
    // the closed ones afterwards.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

/// The child's stack: ample for the system calls it makes and for the report of a failure.
const CHILD_STACK: usize = 256 * 1024;

/// clone(CLONE_VM | CLONE_VFORK): runs `child` in a new process sharing this one's memory and
/// returns its pid once it has exec'd or exited (as posix_spawn does: no copy of the address
/// space). `child` must only make system calls, no allocation and no lock, until it fails
/// (see [`Prepared`]).
pub fn spawn_shared<F: FnOnce()>(child: F) -> nix::Result<i32> {
    extern "C" fn entry<F: FnOnce()>(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Option<F>` below, alive until this child has exec'd or exited
        // (the parent waits: CLONE_VFORK).
        let f = unsafe { &mut *arg.cast::<Option<F>>() };
        if let Some(f) = f.take() {
            f();
        }
        // SAFETY: _exit ends the child without running the parent's handlers.
        unsafe { libc::_exit(127) }
    }
    let mut f = Some(child);
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its 16-byte-aligned end.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    // Every signal blocked across the clone: a handler of this process must not run in the
    // child, on its stack, in shared memory. The child resets them all before exec.
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask writes the old mask into `old`.
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
    }
    // SAFETY: the child runs `entry` on its own stack and this thread is suspended until it
    // execs or exits, so `f` and `stack` outlive its use of them.
    let pid = unsafe {
        libc::clone(
            entry::<F>,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut f).cast(),
        )
    };
    let err = nix::errno::Errno::last();
    // SAFETY: `old` was filled by the pthread_sigmask above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 { Err(err) } else { Ok(pid) }
}
