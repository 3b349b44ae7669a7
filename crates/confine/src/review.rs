//! The review helper (`paddock __review`): the process that reads a review-mode sandbox's
//! layer (names and contents the sandbox wrote), compares it with the workspace, and writes
//! the changes the user accepts. It parses bytes the sandbox controls, so it holds no
//! privilege: it is started with three directories as descriptors (the layer's `upper`, the
//! workspace, the review's state: [`FDS_VAR`]) and, before it reads a byte of them, confines
//! itself ([`confine_self`]) to those three trees.
//!
//! In root mode it is root of a user namespace of its own ([`Ids::map`]) in which the
//! workspace's owner is root and the sandbox's ids are 1-65536: it writes the workspace as
//! its owner and reads the layer whichever id of the sandbox wrote it, and has no capability
//! over anything else of the host. In user mode it is the user.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use paddock_core::ID_RANGE;
use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, openat2};

/// The environment variable that gives the helper its three descriptors' numbers (the layer's
/// `upper`, the workspace, the review's state), comma-separated.
pub const FDS_VAR: &str = "PADDOCK_REVIEW_FDS";

/// The helper's three descriptors, from [`FDS_VAR`].
pub fn fds_from_env() -> Result<[RawFd; 3], String> {
    let text = std::env::var(FDS_VAR).map_err(|_| format!("{FDS_VAR} is not set"))?;
    let fds: Vec<RawFd> = text
        .split(',')
        .map(|f| f.parse().map_err(|_| format!("{FDS_VAR} is not valid")))
        .collect::<Result<_, _>>()?;
    let fds: [RawFd; 3] = fds
        .try_into()
        .map_err(|_| format!("{FDS_VAR} names no three descriptors"))?;
    // Each must be an open directory descriptor.
    for fd in fds {
        if fd < 3 {
            return Err(format!("{FDS_VAR} is not valid"));
        }
        // SAFETY: only borrowed for the fstat; an fd that is not open fails there.
        let st = rustix::fs::fstat(unsafe { BorrowedFd::borrow_raw(fd) })
            .map_err(|e| format!("descriptor {fd}: {e}"))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
            return Err(format!("descriptor {fd} is not a directory"));
        }
    }
    Ok(fds)
}

/// The three directories, opened by the caller (who may reach Paddock's state directory,
/// which the helper cannot) without following a symlink.
#[derive(Debug)]
pub struct Dirs {
    /// The review layer's `upper` directory.
    pub upper: OwnedFd,
    /// The workspace.
    pub workspace: OwnedFd,
    /// The review's state directory.
    pub state: OwnedFd,
}

/// Why the helper cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReviewHelperError {
    /// A directory is missing or passes through a symlink.
    #[error("cannot open {path}: {source}")]
    Open {
        /// Which.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The ids do not make a user namespace.
    #[error("the review cannot run as the workspace's owner: {0}")]
    Ids(String),
    /// The process could not start.
    #[error("cannot start the review helper: {0}")]
    Spawn(String),
}

impl Dirs {
    /// Opens `upper`, `workspace` and `state` as directories, refusing every symlink on their
    /// paths (the workspace's path is the one the sandbox was made with: a symlink put there
    /// since, or a missing directory, is an error here, before anything is read or written).
    pub fn open(upper: &Path, workspace: &Path, state: &Path) -> Result<Dirs, ReviewHelperError> {
        let open = |p: &Path| {
            openat2(
                CWD,
                p,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(|e| ReviewHelperError::Open {
                path: p.display().to_string(),
                source: e.into(),
            })
        };
        Ok(Dirs {
            upper: open(upper)?,
            workspace: open(workspace)?,
            state: open(state)?,
        })
    }
}

/// Who the helper runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// As the caller (user mode: the user, who is the agent).
    Caller,
    /// Root mode: root of a user namespace where the workspace's owner (`uid`, `gid`) is 0 and
    /// the sandbox's host ids `base..base+65536` are 1-65536.
    Mapped {
        /// The workspace's owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// The sandbox's first host id.
        base: u32,
    },
}

impl Ids {
    /// The `uid_map` and `gid_map` of [`Ids::Mapped`].
    pub fn map(self) -> Result<Option<(String, String)>, ReviewHelperError> {
        let Ids::Mapped { uid, gid, base } = self else {
            return Ok(None);
        };
        let line = |owner: u32| {
            if (base..base + ID_RANGE).contains(&owner) {
                return Err(ReviewHelperError::Ids(format!(
                    "the owner id {owner} lies in the sandbox id range"
                )));
            }
            Ok(format!("0 {owner} 1\n1 {base} {ID_RANGE}\n"))
        };
        Ok(Some((line(uid)?, line(gid)?)))
    }
}

/// Starts `exe __review ARGS` with `dirs` as its descriptors 3-5, an empty environment, this
/// process's stderr and stdout (a pipe with `capture`), as `ids`.
pub fn spawn(
    exe: &Path,
    args: &[OsString],
    dirs: Dirs,
    ids: Ids,
    capture: bool,
) -> Result<Child, ReviewHelperError> {
    let mut cmd = Command::new(exe);
    cmd.arg("__review")
        .args(args)
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    if capture {
        cmd.stdout(Stdio::piped());
    }
    let raw = [
        dirs.upper.as_raw_fd(),
        dirs.workspace.as_raw_fd(),
        dirs.state.as_raw_fd(),
    ];
    // The descriptors keep their numbers (moving them could overwrite one the spawn itself
    // uses in the child): the helper learns them from its environment.
    cmd.env(
        FDS_VAR,
        raw.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    // SAFETY: only fcntl on descriptors this function keeps open (`dirs` lives until the
    // spawn returns); nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            for fd in raw {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = match ids.map()? {
        None => cmd
            .spawn()
            .map_err(|e| ReviewHelperError::Spawn(e.to_string()))?,
        Some((uid_map, gid_map)) => crate::user::spawn_mapped_by(&mut cmd, move |pid| {
            let write = |f: &str, text: &str| {
                std::fs::write(format!("/proc/{pid}/{f}"), text).map_err(|e| {
                    crate::user::UserModeError::Io {
                        what: format!("cannot write the review helper's {f}"),
                        source: e,
                    }
                })
            };
            write("uid_map", &uid_map)?;
            write("gid_map", &gid_map)
        })
        .map_err(|e| ReviewHelperError::Spawn(e.to_string()))?,
    };
    drop(dirs);
    Ok(child)
}

/// In the helper, before it reads anything: killed with its parent, not dumpable,
/// `no_new_privs`; Landlock allowing everything beneath its three descriptors ([`FDS_VAR`],
/// returned) and nothing else
/// (signals and abstract sockets scoped); the sandboxes' seccomp filter plus one refusing
/// `execve` and sockets. A layer that cannot be applied is the error, naming it.
pub fn confine_self() -> Result<[RawFd; 3], String> {
    let fds = fds_from_env()?;
    // SAFETY: the three descriptors were given to this process by [`spawn`] and stay open for
    // its whole life; they are only borrowed here.
    let dirs: Vec<BorrowedFd<'static>> = fds
        .iter()
        .map(|fd| unsafe { BorrowedFd::borrow_raw(*fd) })
        .collect();
    // Started by a parent already gone (reparented): refused, as after the parent-death
    // signal is set (checked in `confine_with`).
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        return Err("its parent is gone".into());
    }
    crate::helper::confine_with(
        None,
        || crate::landlock::restrict_beneath(&dirs),
        vec![
            crate::seccomp::relay_helper()
                .map_err(|e| format!("cannot apply seccomp (no exec, no sockets): {e}"))?,
        ],
    )?;
    Ok(fds)
}

/// Starts the helper with `args` for the review-mode sandbox whose directory is `sandbox_dir`
/// and whose workspace is `workspace` (as it was made with; `base`: the host id of its root in
/// root mode). In root mode it runs as the workspace's owner ([`Ids::Mapped`]).
pub fn launch(
    sandbox_dir: &Path,
    workspace: &Path,
    base: u32,
    args: &[OsString],
) -> Result<Child, ReviewHelperError> {
    launch_with(sandbox_dir, workspace, base, args, false)
}

/// [`launch`], its stdout a pipe with `capture`.
pub fn launch_with(
    sandbox_dir: &Path,
    workspace: &Path,
    base: u32,
    args: &[OsString],
    capture: bool,
) -> Result<Child, ReviewHelperError> {
    let dirs = paddock_core::review_dirs(sandbox_dir);
    let opened = Dirs::open(&dirs.layer.join("upper"), workspace, &dirs.state)?;
    let ids = if rustix::process::geteuid().is_root() {
        let st = rustix::fs::fstat(&opened.workspace).map_err(|e| ReviewHelperError::Open {
            path: workspace.display().to_string(),
            source: e.into(),
        })?;
        Ids::Mapped {
            uid: st.st_uid,
            gid: st.st_gid,
            base,
        }
    } else {
        Ids::Caller
    };
    let exe = std::env::current_exe().map_err(|e| ReviewHelperError::Spawn(e.to_string()))?;
    spawn(&exe, args, opened, ids, capture)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_maps_the_owner_to_root_and_the_sandbox_after_it() {
        let base = paddock_core::DEFAULT_ID_BASE;
        assert_eq!(Ids::Caller.map().ok().flatten(), None);
        let (uid, gid) = Ids::Mapped {
            uid: 1000,
            gid: 100,
            base,
        }
        .map()
        .ok()
        .flatten()
        .unwrap_or_default();
        assert_eq!(uid, format!("0 1000 1\n1 {base} 65536\n"));
        assert_eq!(gid, format!("0 100 1\n1 {base} 65536\n"));
        assert!(
            Ids::Mapped {
                uid: base + 5,
                gid: 0,
                base
            }
            .map()
            .is_err()
        );
    }
}
