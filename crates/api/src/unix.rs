//! The unix socket: made mode 0600 with no moment where it is wider, one server at a time, and
//! only peers of the server's own uid.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::ServeError;

/// A socket this server bound; its file is removed when this is dropped, if it is still this
/// socket's.
#[derive(Debug)]
pub(crate) struct BoundSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Held while the server runs: a second server on the same path stops at it.
    _lock: File,
}

/// Whether a peer of uid `peer` may talk to a server running as `server`: only the same uid.
/// Root's connections reach only a server running as root: root can open any socket file, so
/// this is the check that keeps it from acting through an ordinary user's server.
pub(crate) fn peer_allowed(server: u32, peer: u32) -> bool {
    server == peer
}

/// Binds a socket at `path`, mode 0600. Refuses when another server answers there or holds
/// its lock; replaces a stale socket file (nobody answers); never removes anything else.
///
/// The socket is bound inside a new private directory (0700) beside `path`, narrowed to 0600
/// and then renamed into place, so it is never reachable with a wider mode.
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, BoundSocket), ServeError> {
    let io = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io(std::io::Error::from(ErrorKind::InvalidInput)));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut lock_name = name.to_owned();
    lock_name.push(".lock");
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(lock_name))
        .map_err(io)?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(ServeError::AlreadyServing(path.to_owned()));
        }
        Err(e) => return Err(io(e.into())),
    }
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ServeError::NotASocket(path.to_owned()));
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(ServeError::AlreadyServing(path.to_owned())),
            // A stale socket: nobody listens; the rename below replaces it.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(io(e)),
        },
    }
    let private = tempfile::Builder::new()
        .prefix(".api-")
        .tempdir_in(dir)
        .map_err(io)?;
    let staged = private.path().join("s");
    let listener = UnixListener::bind(&staged).map_err(io)?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o600)).map_err(io)?;
    fs::rename(&staged, path).map_err(io)?;
    drop(private);
    let meta = fs::symlink_metadata(path).map_err(io)?;
    Ok((
        listener,
        BoundSocket {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            _lock: lock,
        },
    ))
}

impl Drop for BoundSocket {
    /// Removes the socket file unless another file took its place meanwhile.
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl BoundSocket {
    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1000, 0));
        assert!(!peer_allowed(0, 1000));
        assert!(!peer_allowed(1000, 1001));
    }

    #[test]
    fn bound_private_one_at_a_time_stale_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let (listener, bound) = bind(&path).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Only the socket and its lock: the private directory is gone.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["api.sock", "api.sock.lock"]);
        assert!(UnixStream::connect(&path).is_ok());
        // A second server: its lock is taken.
        assert!(matches!(bind(&path), Err(ServeError::AlreadyServing(_))));
        drop(bound);
        drop(listener);
        assert!(!path.exists());
        // Another program answers there (without the lock).
        let other = UnixListener::bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(ServeError::AlreadyServing(_))));
        // Nobody answers: stale, replaced.
        drop(other);
        assert!(path.exists());
        let (_listener, bound) = bind(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        drop(bound);
        assert!(!path.exists());
    }

    #[test]
    fn never_replaces_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        fs::write(&path, "data").unwrap();
        assert!(matches!(bind(&path), Err(ServeError::NotASocket(_))));
        assert_eq!(fs::read_to_string(&path).unwrap(), "data");
    }

    #[test]
    fn removes_only_its_own_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let (_listener, bound) = bind(&path).unwrap();
        fs::remove_file(&path).unwrap();
        fs::write(&path, "someone else's").unwrap();
        drop(bound);
        assert!(path.exists());
    }
}
