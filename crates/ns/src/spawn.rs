//! Starting the jail with `posix_spawn`: glibc's is a vfork-style clone, so the supervisor (a
//! large, multi-threaded process) does not have its page tables copied as `fork` would, on
//! every sandbox start and `exec`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// A started jail: a child of this process, reaped by [`JailProcess::wait`].
#[derive(Debug)]
pub struct JailProcess {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl JailProcess {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Kills it (nothing once it has been reaped).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: kill has no memory effects; the pid is our unreaped child.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Waits for it to end (at once if it was reaped before).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let mut raw = 0;
        loop {
            // SAFETY: waitpid writes the status into `raw`, which outlives the call.
            if unsafe { libc::waitpid(self.pid, &mut raw, 0) } == self.pid {
                let s = ExitStatus::from_raw(raw);
                self.status = Some(s);
                return Ok(s);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Duplicates `fd` to a number of at least 10 (close-on-exec), out of the way of the
/// descriptors the child gets.
fn high(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own, or -1.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh descriptor of ours.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Starts `program` with `args` and an empty environment; `stdio` become its descriptors 0-2
/// (/dev/null when `None`), `fds[i]` its descriptor `3 + i`, and nothing else of this
/// process's descriptors is inherited (they are all close-on-exec): never this process's own
/// streams. Every signal starts with its default action, unblocked.
pub fn spawn(
    program: &Path,
    args: &[&str],
    fds: &[BorrowedFd<'_>],
    stdio: Option<[BorrowedFd<'_>; 3]>,
) -> io::Result<JailProcess> {
    let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument");
    let path = CString::new(program.as_os_str().as_bytes()).map_err(nul)?;
    let mut argv_owned = vec![path.clone()];
    for a in args {
        argv_owned.push(CString::new(*a).map_err(nul)?);
    }
    let mut argv: Vec<*mut libc::c_char> =
        argv_owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];
    let sources: Vec<OwnedFd> = fds.iter().map(|f| high(*f)).collect::<io::Result<_>>()?;
    let streams: Vec<OwnedFd> = match stdio {
        Some(s) => s.iter().map(|f| high(*f)).collect::<io::Result<_>>()?,
        None => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            let null = high(file.as_fd())?;
            vec![null.try_clone()?, null.try_clone()?, null]
        }
    };
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // after; every pointer handed to posix_spawn (path, argv, envp) points to NUL-terminated
    // data that outlives the call; the descriptors named in the file actions are open.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            for (to, from) in streams.iter().enumerate() {
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    from.as_raw_fd(),
                    to as libc::c_int,
                ))?;
            }
            for (i, from) in sources.iter().enumerate() {
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    from.as_raw_fd(),
                    3 + i as libc::c_int,
                ))?;
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigfillset(&mut all);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &all))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            ))
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result?;
    }
    Ok(JailProcess { pid, status: None })
}
