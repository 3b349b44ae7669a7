//! Files of a workspace for the API and the MCP tools: stat, list, read, write and delete, by
//! paths relative to the workspace root.
//!
//! The workspace is the sandbox's to write, so every path is untrusted: each is a [`RelPath`]
//! (no absolute path, no `..`), every open is `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! below a descriptor of the root, and a symlink is never followed, anywhere in a path: it is
//! listed and stat'ed as a symlink, and reading, writing or deleting through it is refused. A
//! write goes to a new temporary file in the target's directory and is renamed over the target,
//! so a reader sees the old file or the new one, never half of one.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;

use crate::fsys::{self, Kind, Stat};
use crate::relpath::{RelPath, quoted};

/// Entries a listing returns at most.
pub const MAX_LIST: usize = 10_000;

/// Why an operation on a workspace file was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Nothing at that path.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The path or one of its directories is a symlink (never followed).
    #[error("{0}: a symlink is on the way (symlinks are never followed here)")]
    Symlink(String),
    /// A file was expected.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// A directory was expected.
    #[error("{0} is not a directory")]
    NotADir(String),
    /// The file is larger than the caller takes.
    #[error("{path} has {size} bytes, more than the {max} asked for")]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// A directory with entries, deleted without `recursive`.
    #[error("{0} is a directory that is not empty (delete it recursively)")]
    NotEmpty(String),
    /// The path is not a plain relative path.
    #[error(transparent)]
    Path(#[from] crate::relpath::PathError),
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// One entry of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// Its path relative to the workspace root (`""` for the root; non-UTF-8 bytes escaped).
    pub path: String,
    /// `file`, `dir`, `symlink` or `other` (a fifo, socket or device).
    pub kind: &'static str,
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits (e.g. 0o644 as 420).
    pub mode: u32,
    /// When it was last modified (Unix seconds).
    pub modified: i64,
    /// A symlink's target, as written (never followed).
    pub target: Option<String>,
}

/// The workspace at `root`, opened once per operation.
#[derive(Debug)]
pub struct Workspace {
    root: OwnedFd,
}

impl Workspace {
    /// Opens the workspace at the absolute path `root` (none of its components a symlink).
    pub fn open(root: &Path) -> Result<Workspace, FilesError> {
        let shown = root.display().to_string();
        let fd = fsys::open_root(root).map_err(|e| {
            // O_NOFOLLOW | O_DIRECTORY on a symlink answers ENOTDIR.
            if std::fs::symlink_metadata(root).is_ok_and(|m| m.file_type().is_symlink()) {
                FilesError::Symlink(shown.clone())
            } else {
                classify(&shown, e)
            }
        })?;
        Ok(Workspace { root: fd })
    }

    /// What is at `rel`.
    pub fn stat(&self, rel: &RelPath) -> Result<FileInfo, FilesError> {
        let shown = show(rel);
        if rel.is_root() {
            let st = fsys::fstat(self.root.as_fd()).map_err(|e| classify(&shown, e))?;
            return Ok(info(rel, &st, None));
        }
        let (dir, name) = self.parent(rel)?;
        let st = fsys::stat_at(dir.as_fd(), &name)
            .map_err(|e| classify(&shown, e))?
            .ok_or_else(|| FilesError::NotFound(shown.clone()))?;
        let target = match st.kind() {
            Kind::Symlink => fsys::read_link(dir.as_fd(), &name).ok(),
            _ => None,
        };
        Ok(info(rel, &st, target))
    }

    /// The entries of the directory `rel`, sorted by name, at most [`MAX_LIST`]; and whether
    /// there were more.
    pub fn list(&self, rel: &RelPath) -> Result<(Vec<FileInfo>, bool), FilesError> {
        let shown = show(rel);
        let dir = self.dir(rel)?;
        let names = fsys::list(dir.as_fd()).map_err(|e| classify(&shown, e))?;
        let more = names.len() > MAX_LIST;
        let mut out = Vec::new();
        for name in names.into_iter().take(MAX_LIST) {
            let child = rel.join(&name)?;
            // An entry gone in between is left out.
            let Some(st) = fsys::stat_at(dir.as_fd(), &name).map_err(|e| classify(&shown, e))?
            else {
                continue;
            };
            let target = match st.kind() {
                Kind::Symlink => fsys::read_link(dir.as_fd(), &name).ok(),
                _ => None,
            };
            out.push(info(&child, &st, target));
        }
        Ok((out, more))
    }

    /// The contents of the regular file `rel`, when it has at most `max` bytes.
    pub fn read(&self, rel: &RelPath, max: u64) -> Result<Vec<u8>, FilesError> {
        let shown = show(rel);
        let (dir, name) = self.parent(rel)?;
        self.refuse_symlink(dir.as_fd(), &name, &shown)?;
        let mut file = fsys::open_child_file(dir.as_fd(), &name).map_err(|e| {
            if e.kind() == io::ErrorKind::Other {
                FilesError::NotAFile(shown.clone())
            } else {
                classify(&shown, e)
            }
        })?;
        let size = fsys::fstat(file.as_fd())
            .map_err(|e| classify(&shown, e))?
            .size;
        if size > max {
            return Err(FilesError::TooLarge {
                path: shown,
                size,
                max,
            });
        }
        let mut out = Vec::with_capacity(size as usize);
        // It may grow while it is read: no more than the cap is taken.
        (&mut file)
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| classify(&shown, e))?;
        if out.len() as u64 > max {
            return Err(FilesError::TooLarge {
                path: shown,
                size: out.len() as u64,
                max,
            });
        }
        Ok(out)
    }

    /// Writes `data` to the file `rel` (made, or replaced whole), with permission bits `mode`
    /// (0644 when not given, or the replaced file's); `parents` makes missing directories.
    /// Files and directories made get the owner of the directory they are made in.
    pub fn write(
        &self,
        rel: &RelPath,
        data: &[u8],
        mode: Option<u32>,
        parents: bool,
    ) -> Result<FileInfo, FilesError> {
        let shown = show(rel);
        let name = rel
            .file_name()
            .ok_or_else(|| FilesError::NotAFile(shown.clone()))?
            .to_vec();
        let parent = rel.parent().unwrap_or_default();
        let dir = if parents {
            self.make_dirs(&parent)?
        } else {
            self.dir(&parent)?
        };
        let old = fsys::stat_at(dir.as_fd(), &name).map_err(|e| classify(&shown, e))?;
        match old.map(|s| s.kind()) {
            Some(Kind::Symlink) => return Err(FilesError::Symlink(shown)),
            Some(Kind::File) | None => {}
            Some(_) => return Err(FilesError::NotAFile(shown)),
        }
        let perm = mode.unwrap_or_else(|| old.map_or(0o644, |s| s.perm())) & 0o7777;
        let owner = fsys::fstat(dir.as_fd()).map_err(|e| classify(&shown, e))?;
        let temp = temp_name(&name);
        let fd = rustix::fs::openat(
            dir.as_fd(),
            temp.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| classify(&shown, e.into()))?;
        let written = (|| -> io::Result<()> {
            give_to_owner(fd.as_fd(), &owner)?;
            rustix::fs::fchmod(fd.as_fd(), Mode::from_raw_mode(perm))?;
            let mut file = std::fs::File::from(fd);
            file.write_all(data)?;
            file.sync_all()?;
            rustix::fs::renameat(dir.as_fd(), temp.as_slice(), dir.as_fd(), name.as_slice())?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fsys::unlink(dir.as_fd(), &temp, false);
            return Err(classify(&shown, e));
        }
        self.stat(rel)
    }

    /// Deletes `rel`: a file or symlink (the link itself), an empty directory, or with
    /// `recursive` a directory and everything below it (symlinks inside are removed, never
    /// followed). The workspace root is not deleted.
    pub fn delete(&self, rel: &RelPath, recursive: bool) -> Result<(), FilesError> {
        let shown = show(rel);
        let (dir, name) = self.parent(rel)?;
        let st = fsys::stat_at(dir.as_fd(), &name)
            .map_err(|e| classify(&shown, e))?
            .ok_or_else(|| FilesError::NotFound(shown.clone()))?;
        let done = match (st.kind(), recursive) {
            (Kind::Dir, true) => fsys::remove_tree(dir.as_fd(), &name),
            (Kind::Dir, false) => {
                match rustix::fs::unlinkat(dir.as_fd(), name.as_slice(), AtFlags::REMOVEDIR) {
                    Err(rustix::io::Errno::NOTEMPTY) => return Err(FilesError::NotEmpty(shown)),
                    r => r.map_err(io::Error::from),
                }
            }
            _ => fsys::unlink(dir.as_fd(), &name, false),
        };
        done.map_err(|e| classify(&shown, e))
    }

    /// The directory `rel` (the root for the empty path).
    fn dir(&self, rel: &RelPath) -> Result<OwnedFd, FilesError> {
        fsys::open_dir(self.root.as_fd(), rel).map_err(|e| self.why_not(rel, e))
    }

    /// What stopped the directory `rel` from opening: a symlink on the way (the kernel says
    /// ELOOP for one above the last component, ENOTDIR for the last), something that is not a
    /// directory, or `e` itself.
    fn why_not(&self, rel: &RelPath, e: io::Error) -> FilesError {
        let shown = show(rel);
        let Ok(mut dir) = fsys::reopen_dir(self.root.as_fd()) else {
            return classify(&shown, e);
        };
        for part in rel.components() {
            match fsys::stat_at(dir.as_fd(), part) {
                Ok(Some(st)) if st.kind() == Kind::Symlink => return FilesError::Symlink(shown),
                Ok(Some(st)) if st.kind() != Kind::Dir => return FilesError::NotADir(shown),
                Ok(Some(_)) => match fsys::open_child_dir(dir.as_fd(), part) {
                    Ok(next) => dir = next,
                    Err(_) => break,
                },
                Ok(None) => return FilesError::NotFound(shown),
                Err(_) => break,
            }
        }
        classify(&shown, e)
    }

    /// `rel`'s directory and last name; the root has none.
    fn parent(&self, rel: &RelPath) -> Result<(OwnedFd, Vec<u8>), FilesError> {
        let shown = show(rel);
        let name = rel
            .file_name()
            .ok_or_else(|| FilesError::NotAFile(shown.clone()))?
            .to_vec();
        let dir = self.dir(&rel.parent().unwrap_or_default())?;
        Ok((dir, name))
    }

    /// Makes the directories of `rel` that are missing, one component at a time below the root.
    fn make_dirs(&self, rel: &RelPath) -> Result<OwnedFd, FilesError> {
        let shown = show(rel);
        let mut dir = fsys::reopen_dir(self.root.as_fd()).map_err(|e| classify(&shown, e))?;
        for part in rel.components() {
            match rustix::fs::mkdirat(dir.as_fd(), part, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    let owner = fsys::fstat(dir.as_fd()).map_err(|e| classify(&shown, e))?;
                    let made =
                        fsys::open_child_dir(dir.as_fd(), part).map_err(|e| classify(&shown, e))?;
                    give_to_owner(made.as_fd(), &owner).map_err(|e| classify(&shown, e))?;
                    dir = made;
                }
                Err(rustix::io::Errno::EXIST) => {
                    dir = fsys::open_child_dir(dir.as_fd(), part)
                        .map_err(|e| self.why_not(rel, e))?;
                }
                Err(e) => return Err(classify(&shown, e.into())),
            }
        }
        Ok(dir)
    }

    fn refuse_symlink(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        shown: &str,
    ) -> Result<(), FilesError> {
        match fsys::stat_at(dir, name).map_err(|e| classify(shown, e))? {
            None => Err(FilesError::NotFound(shown.to_owned())),
            Some(st) if st.kind() == Kind::Symlink => Err(FilesError::Symlink(shown.to_owned())),
            Some(_) => Ok(()),
        }
    }
}

/// A file or directory made here belongs to whoever owns the directory it is in (root writing
/// into a user's workspace makes the user's files); an ordinary user's own stay theirs.
fn give_to_owner(fd: BorrowedFd<'_>, dir: &Stat) -> io::Result<()> {
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(
            fd,
            Some(rustix::process::Uid::from_raw(dir.uid)),
            Some(rustix::process::Gid::from_raw(dir.gid)),
        )?;
    }
    Ok(())
}

/// A name for a new temporary file beside `name`, unlikely to exist.
fn temp_name(name: &[u8]) -> Vec<u8> {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut t = b".paddock-write-".to_vec();
    t.extend_from_slice(&name[..name.len().min(100)]);
    t.extend_from_slice(format!(".{}.{nanos}", std::process::id()).as_bytes());
    t
}

fn show(rel: &RelPath) -> String {
    if rel.is_root() {
        ".".to_owned()
    } else {
        quoted(rel.as_bytes())
    }
}

/// Maps the kernel's answers to what they mean here.
fn classify(path: &str, e: io::Error) -> FilesError {
    match e.raw_os_error() {
        Some(n) if n == rustix::io::Errno::NOENT.raw_os_error() => {
            FilesError::NotFound(path.to_owned())
        }
        // ELOOP: a symlink below RESOLVE_NO_SYMLINKS; EXDEV: a path out of RESOLVE_BENEATH.
        Some(n)
            if n == rustix::io::Errno::LOOP.raw_os_error()
                || n == rustix::io::Errno::XDEV.raw_os_error() =>
        {
            FilesError::Symlink(path.to_owned())
        }
        Some(n) if n == rustix::io::Errno::NOTDIR.raw_os_error() => {
            FilesError::NotADir(path.to_owned())
        }
        _ => FilesError::Io {
            path: path.to_owned(),
            source: e,
        },
    }
}

fn info(rel: &RelPath, st: &Stat, target: Option<Vec<u8>>) -> FileInfo {
    FileInfo {
        path: if rel.is_root() {
            String::new()
        } else {
            quoted(rel.as_bytes())
        },
        kind: match st.kind() {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        },
        size: st.size,
        mode: st.perm(),
        modified: st.mtime_ns.div_euclid(1_000_000_000),
        target: target.map(|t| quoted(&t)),
    }
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
