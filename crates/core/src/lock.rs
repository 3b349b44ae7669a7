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
        // The starts go on until the asker has asked many times: on a busy machine the asker's
        // thread may not run at all during the first thousands of starts.
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU64::new(0));
        let asker = {
            let (stop, asked, path) = (stop.clone(), asked.clone(), path.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = SandboxLock::is_held(&path);
                    asked.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut starts = 0u64;
        while starts < 2000 || asked.load(Ordering::Relaxed) < 2000 {
            let lock = SandboxLock::try_acquire(&path);
            assert!(
                lock.is_ok(),
                "start {starts} found the lock taken: {lock:?}"
            );
            starts += 1;
            assert!(
                std::time::Instant::now() < deadline,
                "the asking thread never ran"
            );
        }
        stop.store(true, Ordering::Relaxed);
        asker.join().unwrap();
    }
}
