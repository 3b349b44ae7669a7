//! Descriptor-relative filesystem operations that never follow a symlink.
//!
//! Both trees this crate reads (the upper layer, written by the agent, and the host workspace)
//! are untrusted: every open below a root is `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! with `O_NOFOLLOW`, every stat is `AT_SYMLINK_NOFOLLOW`, and a file is opened `O_NONBLOCK` and
//! checked to be a regular file before it is read (a fifo swapped in never blocks us).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, ResolveFlags};
use sha2::{Digest, Sha256};

use crate::relpath::RelPath;

/// Deepest directory nesting walked or created (each level holds one descriptor).
pub(crate) const MAX_DEPTH: usize = 256;

/// Bytes read per chunk when streaming a file.
const CHUNK: usize = 64 * 1024;

/// Flags for a directory opened to read or to operate in.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Flags for a file opened to read (never blocks on a fifo, never follows).
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// Resolution below a root: no `..` out of it, no symlink anywhere.
pub(crate) const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    /// A fifo, socket or device.
    Other,
}

/// The parts of `lstat` this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub size: u64,
    pub rdev: u64,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Stat {
    #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
    fn from_raw(st: &rustix::fs::Stat) -> Stat {
        Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            size: u64::try_from(st.st_size).unwrap_or(0),
            rdev: st.st_rdev as u64,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime_ns: (st.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
            ctime_ns: (st.st_ctime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_ctime_nsec as i64),
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match FileType::from_raw_mode(self.mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// Whether this is a character device 0:0 (an overlay whiteout).
    pub(crate) fn is_whiteout_device(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::CharacterDevice && self.rdev == 0
    }

    /// Permission bits with setuid, setgid and sticky.
    pub(crate) fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// What a fifo, socket or device is, for messages.
    pub(crate) fn other_name(&self) -> &'static str {
        match FileType::from_raw_mode(self.mode) {
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
            FileType::CharacterDevice => "character device",
            FileType::BlockDevice => "block device",
            _ => "special file",
        }
    }
}

/// `openat2` that retries the `EAGAIN` the kernel returns when a rename raced the lookup.
pub(crate) fn openat2(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, mode, resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Opens the workspace root: an absolute path none of whose components is a symlink.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    openat2(
        CWD,
        path.as_os_str().as_bytes(),
        DIR_FLAGS,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )
}

/// A readable descriptor of the directory `dir` refers to (which may be an `O_PATH` one).
pub(crate) fn reopen_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    rustix::fs::openat(dir, ".", DIR_FLAGS, Mode::empty()).map_err(io::Error::from)
}

/// Opens a directory Paddock owns (the upper layer, the state directory): its last component
/// must not be a symlink; the components above it are Paddock's own.
pub(crate) fn open_own_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::openat(CWD, path, DIR_FLAGS, Mode::empty()).map_err(io::Error::from)
}

/// Opens the directory `rel` below `root` (the root itself for the empty path).
pub(crate) fn open_dir(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<OwnedFd> {
    let path: &[u8] = if rel.is_root() { b"." } else { rel.as_bytes() };
    openat2(root, path, DIR_FLAGS, Mode::empty(), BENEATH)
}

/// Opens the directory entry `name` of `dir`.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    openat2(dir, name, DIR_FLAGS, Mode::empty(), BENEATH)
}

/// Opens the regular file `name` of `dir` to read; anything else is refused.
pub(crate) fn open_child_file(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<File> {
    let fd = openat2(dir, name, READ_FLAGS, Mode::empty(), BENEATH)?;
    let st = fstat(fd.as_fd())?;
    if st.kind() != Kind::File {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(File::from(fd))
}

/// Opens the regular file `rel` below `root` to read.
pub(crate) fn open_file(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<File> {
    let (dir, name) = open_parent(root, rel)?;
    open_child_file(dir.as_fd(), &name)
}

/// Opens the parent directory of `rel` below `root`, and returns it with `rel`'s last name.
pub(crate) fn open_parent(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<(OwnedFd, Vec<u8>)> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::other("the workspace root has no parent"))?
        .to_vec();
    let parent = rel.parent().unwrap_or_default();
    Ok((open_dir(root, &parent)?, name))
}

/// `fstat`.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(Stat::from_raw(&rustix::fs::fstat(fd)?))
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Stat::from_raw(&st))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `lstat` of `rel` below `root`; `None` when it or a parent does not exist. A parent that is a
/// symlink or not a directory is an error (`ELOOP`, `ENOTDIR`).
pub(crate) fn stat_rel(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<Option<Stat>> {
    if rel.is_root() {
        return fstat(root).map(Some);
    }
    match open_parent(root, rel) {
        Ok((dir, name)) => stat_at(dir.as_fd(), &name),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The target of the symlink `name` in `dir`.
pub(crate) fn read_link(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// The names in a directory (without `.` and `..`), sorted.
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// The value of the extended attribute `name`, `None` when absent (or not supported there).
pub(crate) fn xattr(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::OPNOTSUPP) => return Ok(None),
            Err(rustix::io::Errno::RANGE) if buf.len() < 65536 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads until `buf` is full or the end of the file; returns how much was read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The whole file when it is at most `max` bytes, else `None`.
pub(crate) fn read_limited(f: &mut File, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= max).then_some(out))
}

/// Whether two files hold the same bytes (streamed, stops at the first difference).
pub(crate) fn same_content(a: &mut File, b: &mut File) -> io::Result<bool> {
    let mut x = vec![0u8; CHUNK];
    let mut y = vec![0u8; CHUNK];
    loop {
        let n = read_full(a, &mut x)?;
        let m = read_full(b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Incremental binary detection: a NUL in the first 8 KiB, or bytes that are not UTF-8.
#[derive(Debug, Default)]
pub(crate) struct Sniff {
    offset: u64,
    nul: bool,
    bad_utf8: bool,
    carry: Vec<u8>,
}

impl Sniff {
    const HEAD: u64 = 8 * 1024;

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if self.offset < Self::HEAD {
            let n = usize::try_from(Self::HEAD - self.offset)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            self.nul |= chunk[..n].contains(&0);
        }
        self.offset += chunk.len() as u64;
        if self.bad_utf8 {
            return;
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        match std::str::from_utf8(&buf) {
            Ok(_) => {}
            Err(e) if e.error_len().is_some() => self.bad_utf8 = true,
            Err(e) => self.carry = buf[e.valid_up_to()..].to_vec(),
        }
    }

    pub(crate) fn binary(&self) -> bool {
        self.nul || self.bad_utf8 || !self.carry.is_empty()
    }
}

/// Whether bytes are binary (see [`Sniff`]).
pub(crate) fn is_binary(bytes: &[u8]) -> bool {
    let mut s = Sniff::default();
    s.feed(bytes);
    s.binary()
}

/// Whether a file is binary (see [`Sniff`]); reads it to the end.
pub(crate) fn sniff(f: &mut File) -> io::Result<bool> {
    let mut s = Sniff::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(f, &mut buf)?;
        if n == 0 {
            return Ok(s.binary());
        }
        s.feed(&buf[..n]);
        if s.nul || s.bad_utf8 {
            return Ok(true);
        }
    }
}

/// SHA-256 of a file's content.
pub(crate) fn hash(f: &mut File) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(f, &mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes `name` from `dir`: a file or symlink is unlinked, a directory is emptied
/// depth-first (never following a symlink) and removed. Absent is fine.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    remove_tree_at(dir, name, 0)
}

fn remove_tree_at(dir: BorrowedFd<'_>, name: &[u8], depth: usize) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if st.kind() != Kind::Dir {
        return unlink(dir, name, false);
    }
    if depth >= MAX_DEPTH {
        return Err(io::Error::other("directory tree too deep"));
    }
    let sub = open_child_dir(dir, name)?;
    for child in list(sub.as_fd())? {
        remove_tree_at(sub.as_fd(), &child, depth + 1)?;
    }
    drop(sub);
    unlink(dir, name, true)
}

/// `unlinkat` (with `AT_REMOVEDIR` for a directory); absent is fine.
pub(crate) fn unlink(dir: BorrowedFd<'_>, name: &[u8], is_dir: bool) -> io::Result<()> {
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    match rustix::fs::unlinkat(dir, name, flags) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Entries below a directory (path below it, stat), and whether the list is complete.
pub(crate) type Tree = (Vec<(Vec<u8>, Stat)>, bool);

/// Every entry below the directory `name` of `dir`, depth-first in name order, as
/// `(path below it, stat)`, at most `limit` of them (for listing what a deletion removes).
pub(crate) fn list_tree(dir: BorrowedFd<'_>, name: &[u8], limit: usize) -> io::Result<Tree> {
    let mut out = Vec::new();
    let sub = open_child_dir(dir, name)?;
    let complete = list_tree_at(sub.as_fd(), &mut Vec::new(), &mut out, limit, 0)?;
    Ok((out, complete))
}

fn list_tree_at(
    dir: BorrowedFd<'_>,
    prefix: &mut Vec<u8>,
    out: &mut Vec<(Vec<u8>, Stat)>,
    limit: usize,
    depth: usize,
) -> io::Result<bool> {
    if depth >= MAX_DEPTH {
        return Ok(false);
    }
    for name in list(dir)? {
        if out.len() >= limit {
            return Ok(false);
        }
        let Some(st) = stat_at(dir, &name)? else {
            continue;
        };
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(&name);
        out.push((prefix.clone(), st));
        if st.kind() == Kind::Dir {
            let sub = open_child_dir(dir, &name)?;
            if !list_tree_at(sub.as_fd(), prefix, out, limit, depth + 1)? {
                return Ok(false);
            }
        }
        prefix.truncate(len);
    }
    Ok(true)
}

#[cfg(test)]
#[path = "fsys_tests.rs"]
mod tests;
