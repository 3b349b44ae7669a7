//! A lock per sandbox: whoever holds it may change the sandbox; the running supervisor holds it
//! for the sandbox's whole life, so "is it running?" is "is the lock held?", which stays true
//! after a SIGKILL (the kernel drops the lock with the process).
//!
//! An open file description lock (`F_OFD_SETLK`, whole file, write), not `flock`: whether it
//! is held can be asked (`F_OFD_GETLK`) without taking it, so `paddock ls` looking at a sandbox
//! never makes the start of its supervisor fail as "already running".

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// another process holds the lock
    #[error("sandbox is in use by another paddock process")]
    Busy,
    /// the lock file could not be opened
    #[error("cannot open lock file {path:?}")]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A lock of type `kind` over the whole file, as OFD locks want it (`l_pid` 0).
fn whole_file(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// An exclusive lock on one sandbox, released on drop (or when the process dies).
#[derive(Debug)]
pub struct SandboxLock {
    _file: File,
}

impl SandboxLock {
    /// Takes the lock without waiting (the file is opened close-on-exec, as std always does).
    pub fn try_acquire(path: &Path) -> Result<SandboxLock, LockError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.to_owned(),
                source,
            })?;
        let lock = whole_file(libc::F_WRLCK);
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(SandboxLock { _file: file }),
            Err(Errno::EAGAIN | Errno::EACCES) => Err(LockError::Busy),
            Err(e) => Err(LockError::Open {
                path: path.to_owned(),
                source: e.into(),
            }),
        }
    }

    /// True when some process holds the lock (asked without taking it).
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        let mut lock = whole_file(libc::F_WRLCK);
        // The kernel writes the conflicting lock, if any, into `lock`.
        if fcntl(&file, FcntlArg::F_OFD_GETLK(&mut lock)).is_err() {
            return false;
        }
        lock.l_type != libc::F_UNLCK as libc::c_short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_is_asked_without_taking_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        assert!(!SandboxLock::is_held(&path));
        let held = SandboxLock::try_acquire(&path).unwrap();
        assert!(SandboxLock::is_held(&path));
        assert!(matches!(
            SandboxLock::try_acquire(&path),
            Err(LockError::Busy)
        ));
        drop(held);
        assert!(!SandboxLock::is_held(&path));
        // Someone asking all the time (`paddock ls`) never makes a start find the lock taken.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asker = {
            let (stop, path) = (stop.clone(), path.clone());
            std::thread::spawn(move || {
                let mut asked = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = SandboxLock::is_held(&path);
                    asked += 1;
                }
                asked
            })
        };
        for i in 0..2000 {
            let lock = SandboxLock::try_acquire(&path);
            assert!(lock.is_ok(), "start {i} found the lock taken: {lock:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(asker.join().unwrap() > 0);
    }
}
