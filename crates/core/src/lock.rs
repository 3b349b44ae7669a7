//! A lock per sandbox: whoever holds it may change the sandbox; the running supervisor holds it
//! for the sandbox's whole life, so "is it running?" is "is the lock held?", which stays true
//! after a SIGKILL (the kernel drops the lock with the process).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

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
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(SandboxLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Busy),
            Err(e) => Err(LockError::Open {
                path: path.to_owned(),
                source: e.into(),
            }),
        }
    }

    /// True when some process holds the lock.
    pub fn is_held(path: &Path) -> bool {
        match SandboxLock::try_acquire(path) {
            Ok(_) => false,
            Err(LockError::Busy) => true,
            Err(LockError::Open { .. }) => false,
        }
    }
}
