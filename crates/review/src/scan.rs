//! The walk: every entry of the upper layer, each compared with the host path of the same name
//! (looked up through a descriptor of its host directory, never by walking the host), plus the
//! host entries an opaque upper directory hides. While walking it records, for each path seen
//! the first time, what the host had there (capture).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::change::{self, Change, ChangeKind, Entry};
use crate::error::Error;
use crate::fsys::{self, Kind, MAX_DEPTH, Stat};
use crate::relpath::RelPath;
use crate::state::{self, HostStat, Record, Seen, State};

/// The overlay's xattrs (mounted with `userxattr`).
const XATTR_OPAQUE: &str = "user.overlay.opaque";
const XATTR_REDIRECT: &str = "user.overlay.redirect";
const XATTR_WHITEOUT: &str = "user.overlay.whiteout";
const XATTR_METACOPY: &str = "user.overlay.metacopy";

/// What an upper entry is.
pub(crate) enum Upper {
    /// The agent deleted the path.
    Whiteout,
    /// A directory; `replaces`: opaque or redirected (it does not merge with the host's).
    Dir {
        fd: OwnedFd,
        replaces: bool,
    },
    File,
    Symlink(Vec<u8>),
    /// A fifo, socket or device that is not a whiteout.
    Special,
    /// A metadata-only copy (its data is still in the lower layer): never read as the agent's
    /// content, which it is not.
    Metacopy,
}

/// The host directory matching the upper directory being walked.
enum HostDir {
    /// It exists: children are looked up in it.
    Open(OwnedFd),
    /// The host has nothing there (or the agent's directory replaces a non-directory).
    Gone,
    /// The host has something the walk must not enter (a symlink or file where the upper has a
    /// merging directory): the reason becomes each change's conflict.
    Blocked(String),
}

/// A change with the facts its risk needs.
struct Found {
    change: Change,
    new_git: bool,
    deletes_repo: bool,
}

/// One walk over the upper layer.
pub(crate) struct Scanner<'a> {
    host: BorrowedFd<'a>,
    upper: BorrowedFd<'a>,
    state: &'a State,
    seen: &'a mut Seen,
    /// Capture: host ctimes at or after this (ns since the epoch) mean "changed during the run".
    capture: Option<i64>,
    visited: HashSet<RelPath>,
    found: Vec<Found>,
    git_dirs: HashMap<RelPath, bool>,
}

impl<'a> Scanner<'a> {
    /// A walk of `upper` against `host`; with `capture`, unrecorded paths get records.
    pub(crate) fn new(
        host: BorrowedFd<'a>,
        upper: BorrowedFd<'a>,
        state: &'a State,
        seen: &'a mut Seen,
        capture: Option<i64>,
    ) -> Scanner<'a> {
        Scanner {
            host,
            upper,
            state,
            seen,
            capture,
            visited: HashSet::new(),
            found: Vec::new(),
            git_dirs: HashMap::new(),
        }
    }

    /// Walks, pairs renames, judges risk; returns the changes sorted (risky first, by path).
    /// With capture, records of paths no longer in the upper layer are dropped.
    pub(crate) fn run(mut self) -> Result<Vec<Change>, Error> {
        let root = RelPath::root();
        let upper_root = fsys::open_dir(self.upper, &root)
            .map_err(|e| Error::io("cannot open the upper layer", e))?;
        let host_root = fsys::open_dir(self.host, &root)
            .map_err(|e| Error::io("cannot open the workspace", e))?;
        let replaces = fsys::xattr(upper_root.as_fd(), XATTR_OPAQUE)
            .map_err(|e| Error::io("cannot read the upper layer's attributes", e))?
            .is_some_and(|v| v == b"y");
        self.walk(
            upper_root.as_fd(),
            &HostDir::Open(host_root),
            &root,
            replaces,
            0,
        )?;
        if self.capture.is_some() {
            let visited = std::mem::take(&mut self.visited);
            self.seen.retain(|k, _| visited.contains(k));
        }
        let found = std::mem::take(&mut self.found);
        let found = crate::rename::pair(self.host, self.upper, found_parts(found))?;
        let mut changes: Vec<Change> = found
            .into_iter()
            .map(|(mut c, new_git, deletes_repo)| {
                c.risk = change::risk(&c, new_git, deletes_repo);
                c
            })
            .collect();
        change::sort(&mut changes);
        Ok(changes)
    }

    fn walk(
        &mut self,
        upper_dir: BorrowedFd<'_>,
        host: &HostDir,
        prefix: &RelPath,
        replaces: bool,
        depth: usize,
    ) -> Result<usize, Error> {
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep(prefix.clone()));
        }
        let names = fsys::list(upper_dir).map_err(|e| upper_err("list", prefix, e))?;
        let mut present = 0;
        for name in &names {
            let rel = prefix.join(name)?;
            let Some(ust) =
                fsys::stat_at(upper_dir, name).map_err(|e| upper_err("read", &rel, e))?
            else {
                continue; // removed meanwhile (the sandbox may be running)
            };
            let upper = match classify(upper_dir, name, &ust) {
                Ok(u) => u,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(upper_err("read", &rel, e)),
            };
            present += 1;
            let (host_st, blocked) = match host {
                HostDir::Open(fd) => (
                    fsys::stat_at(fd.as_fd(), name).map_err(|e| host_err("read", &rel, e))?,
                    None,
                ),
                HostDir::Gone => (None, None),
                HostDir::Blocked(why) => (None, Some(why.clone())),
            };
            let host_fd = match host {
                HostDir::Open(fd) => Some(fd.as_fd()),
                _ => None,
            };
            self.visit(&rel, host_fd, name, host_st.as_ref())?;
            if self.applied_unchanged(&rel, &ust, host_st.as_ref())
                && !matches!(upper, Upper::Dir { .. })
            {
                continue;
            }
            let side = Sides {
                rel: &rel,
                name,
                upper_dir,
                host_dir: host_fd,
                ust: &ust,
                hst: host_st.as_ref(),
                blocked,
            };
            match upper {
                Upper::Whiteout => self.whiteout(&side)?,
                Upper::File => self.file(&side)?,
                Upper::Symlink(target) => self.symlink(&side, target)?,
                Upper::Special => self.special(&side)?,
                Upper::Metacopy => return Err(Error::Metacopy(rel)),
                Upper::Dir { fd, replaces: own } => {
                    self.dir(&side, fd, replaces || own, depth)?;
                }
            }
        }
        if replaces && let HostDir::Open(fd) = host {
            let host_names = fsys::list(fd.as_fd()).map_err(|e| host_err("list", prefix, e))?;
            for name in host_names {
                if names.binary_search(&name).is_ok() {
                    continue;
                }
                let rel = prefix.join(&name)?;
                let Some(hst) =
                    fsys::stat_at(fd.as_fd(), &name).map_err(|e| host_err("read", &rel, e))?
                else {
                    continue;
                };
                self.visit(&rel, Some(fd.as_fd()), &name, Some(&hst))?;
                self.deleted(&rel, fd.as_fd(), &name, &hst)?;
            }
        }
        Ok(present)
    }

    /// Capture: records what the host has at `rel` when no record exists yet.
    fn visit(
        &mut self,
        rel: &RelPath,
        host_dir: Option<BorrowedFd<'_>>,
        name: &[u8],
        hst: Option<&Stat>,
    ) -> Result<(), Error> {
        let Some(threshold) = self.capture else {
            return Ok(());
        };
        self.visited.insert(rel.clone());
        if self.seen.contains_key(rel) {
            return Ok(());
        }
        let record = match hst {
            Some(st) if st.ctime_ns >= threshold => Record {
                during_run: true,
                ..Record::default()
            },
            Some(st) => {
                let base = match (st.kind(), host_dir) {
                    (Kind::File, Some(dir)) if st.size <= state::MAX_BASE => {
                        match fsys::open_child_file(dir, name) {
                            Ok(mut f) => self.state.store_base(&mut f)?,
                            Err(_) => None,
                        }
                    }
                    _ => None,
                };
                Record {
                    host: Some(HostStat::from(st)),
                    base,
                    ..Record::default()
                }
            }
            None => Record::default(),
        };
        self.seen.insert(rel.clone(), record);
        Ok(())
    }

    /// Whether an apply that left the upper entry in place recorded exactly this upper entry
    /// and host entry (then there is nothing new here).
    fn applied_unchanged(&self, rel: &RelPath, ust: &Stat, hst: Option<&Stat>) -> bool {
        self.seen.get(rel).is_some_and(|r| {
            r.applied == Some(HostStat::from(ust)) && r.host == hst.map(HostStat::from)
        })
    }

    fn whiteout(&mut self, s: &Sides<'_>) -> Result<(), Error> {
        match (s.hst, s.host_dir) {
            (Some(hst), Some(dir)) => self.deleted(s.rel, dir, s.name, hst),
            _ => {
                if let Some(why) = &s.blocked {
                    self.push(
                        s.rel,
                        ChangeKind::Deleted,
                        None,
                        None,
                        false,
                        Some(why.clone()),
                        false,
                    );
                }
                Ok(())
            }
        }
    }

    fn deleted(
        &mut self,
        rel: &RelPath,
        dir: BorrowedFd<'_>,
        name: &[u8],
        hst: &Stat,
    ) -> Result<(), Error> {
        let old = self.host_entry(dir, name, hst, rel)?;
        let binary = hst.kind() == Kind::File && self.sniff(dir, name, rel, false)?;
        let deletes_repo = hst.kind() == Kind::Dir && holds_git(dir, name);
        let conflict = state::conflict(self.seen.get(rel), Some(hst), hst.kind() == Kind::Dir);
        self.push(
            rel,
            ChangeKind::Deleted,
            Some(old),
            None,
            binary,
            conflict,
            deletes_repo,
        );
        Ok(())
    }

    fn file(&mut self, s: &Sides<'_>) -> Result<(), Error> {
        let new = Entry::of(s.ust, None);
        let new_bin = |me: &mut Self| me.sniff(s.upper_dir, s.name, s.rel, true);
        let (Some(hst), Some(hdir)) = (s.hst, s.host_dir) else {
            let binary = new_bin(self)?;
            return self.emit(s, ChangeKind::Added, None, new, binary, false);
        };
        let old = self.host_entry(hdir, s.name, hst, s.rel)?;
        if hst.kind() != Kind::File {
            let binary = new_bin(self)?;
            let deletes_repo = hst.kind() == Kind::Dir && holds_git(hdir, s.name);
            return self.emit(
                s,
                ChangeKind::TypeChanged,
                Some(old),
                new,
                binary,
                deletes_repo,
            );
        }
        let same = hst.size == s.ust.size && {
            let mut a = fsys::open_child_file(s.upper_dir, s.name)
                .map_err(|e| upper_err("read", s.rel, e))?;
            let mut b =
                fsys::open_child_file(hdir, s.name).map_err(|e| host_err("read", s.rel, e))?;
            fsys::same_content(&mut a, &mut b).map_err(|e| upper_err("compare", s.rel, e))?
        };
        let same_exec = hst.mode & 0o111 == s.ust.mode & 0o111;
        let kind = match (same, same_exec) {
            (true, true) => return Ok(()),
            (true, false) => ChangeKind::Mode,
            (false, _) => ChangeKind::Modified,
        };
        let mut binary = new_bin(self)?;
        if kind == ChangeKind::Modified && !binary {
            binary = self.sniff(hdir, s.name, s.rel, false)?;
        }
        self.emit(s, kind, Some(old), new, binary, false)
    }

    fn symlink(&mut self, s: &Sides<'_>, target: Vec<u8>) -> Result<(), Error> {
        let new = Entry::of(s.ust, Some(target));
        let (Some(hst), Some(hdir)) = (s.hst, s.host_dir) else {
            return self.emit(s, ChangeKind::Added, None, new, false, false);
        };
        let old = self.host_entry(hdir, s.name, hst, s.rel)?;
        let (kind, binary, deletes_repo) = match hst.kind() {
            Kind::Symlink if old.target == new.target => return Ok(()),
            Kind::Symlink => (ChangeKind::Modified, false, false),
            Kind::File => (
                ChangeKind::TypeChanged,
                self.sniff(hdir, s.name, s.rel, false)?,
                false,
            ),
            Kind::Dir => (ChangeKind::TypeChanged, false, holds_git(hdir, s.name)),
            Kind::Other => (ChangeKind::TypeChanged, false, false),
        };
        self.emit(s, kind, Some(old), new, binary, deletes_repo)
    }

    fn special(&mut self, s: &Sides<'_>) -> Result<(), Error> {
        let new = Entry::of(s.ust, None);
        let old = match (s.hst, s.host_dir) {
            (Some(hst), Some(_))
                if hst.kind() == Kind::Other
                    && hst.mode == s.ust.mode
                    && hst.rdev == s.ust.rdev =>
            {
                return Ok(());
            }
            (Some(hst), Some(hdir)) => Some(self.host_entry(hdir, s.name, hst, s.rel)?),
            _ => None,
        };
        self.emit(s, ChangeKind::Special, old, new, false, false)
    }

    fn dir(
        &mut self,
        s: &Sides<'_>,
        fd: OwnedFd,
        replaces: bool,
        depth: usize,
    ) -> Result<(), Error> {
        let new = Entry::of(s.ust, None);
        let mut own: Option<(ChangeKind, Option<Entry>, bool)> = None;
        let child_host = match (s.hst, s.host_dir, &s.blocked) {
            (_, _, Some(why)) => HostDir::Blocked(why.clone()),
            (None, _, _) | (_, None, _) => HostDir::Gone,
            (Some(hst), Some(hdir), _) if hst.kind() == Kind::Dir => {
                if hst.perm() & 0o777 != s.ust.perm() & 0o777 {
                    own = Some((ChangeKind::Mode, Some(Entry::of(hst, None)), false));
                }
                match fsys::open_child_dir(hdir, s.name) {
                    Ok(h) => HostDir::Open(h),
                    Err(e) => HostDir::Blocked(format!(
                        "on the host, {} cannot be opened as a directory ({e})",
                        s.rel
                    )),
                }
            }
            (Some(hst), Some(hdir), _) => {
                let old = self.host_entry(hdir, s.name, hst, s.rel)?;
                if replaces {
                    own = Some((ChangeKind::TypeChanged, Some(old), false));
                    HostDir::Gone
                } else {
                    HostDir::Blocked(format!(
                        "on the host, {} is now a {}, not a directory",
                        s.rel,
                        type_name(hst)
                    ))
                }
            }
        };
        let gone = matches!(child_host, HostDir::Gone);
        let children = self.walk(fd.as_fd(), &child_host, s.rel, replaces, depth + 1)?;
        if own.is_none() && gone && children == 0 && s.hst.is_none() {
            own = Some((ChangeKind::Added, None, false));
        }
        if let Some((kind, old, deletes_repo)) = own
            && !self.applied_unchanged(s.rel, s.ust, s.hst)
        {
            self.emit(s, kind, old, new, false, deletes_repo)?;
        }
        Ok(())
    }

    /// Emits a change at the walked entry, with its conflict.
    fn emit(
        &mut self,
        s: &Sides<'_>,
        kind: ChangeKind,
        old: Option<Entry>,
        new: Entry,
        binary: bool,
        deletes_repo: bool,
    ) -> Result<(), Error> {
        let conflict = s
            .blocked
            .clone()
            .or_else(|| state::conflict(self.seen.get(s.rel), s.hst, false));
        self.push(s.rel, kind, old, Some(new), binary, conflict, deletes_repo);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        rel: &RelPath,
        kind: ChangeKind,
        old: Option<Entry>,
        new: Option<Entry>,
        binary: bool,
        conflict: Option<String>,
        deletes_repo: bool,
    ) {
        let (git_internal, new_git) = self.git_status(rel);
        self.found.push(Found {
            change: Change {
                path: rel.clone(),
                kind,
                old,
                new,
                binary,
                risk: None,
                conflict,
                git_internal,
            },
            new_git,
            deletes_repo,
        });
    }

    /// `(git_internal, new_git)`: whether a `.git` in `rel` is a directory the host has, or
    /// one it does not have.
    fn git_status(&mut self, rel: &RelPath) -> (bool, bool) {
        let at = change::git_components(rel);
        if at.is_empty() {
            return (false, false);
        }
        let comps: Vec<&[u8]> = rel.components().collect();
        for i in at {
            let Ok(prefix) = RelPath::new(comps[..=i].join(&b'/')) else {
                continue;
            };
            let host = self.host;
            let is_dir = *self.git_dirs.entry(prefix.clone()).or_insert_with(
                || matches!(fsys::stat_rel(host, &prefix), Ok(Some(st)) if st.kind() == Kind::Dir),
            );
            if is_dir {
                return (true, false);
            }
        }
        (false, true)
    }

    /// The host's entry (with its target for a symlink).
    fn host_entry(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
        rel: &RelPath,
    ) -> Result<Entry, Error> {
        let target = if st.kind() == Kind::Symlink {
            Some(fsys::read_link(dir, name).map_err(|e| host_err("read", rel, e))?)
        } else {
            None
        };
        Ok(Entry::of(st, target))
    }

    /// Whether a file (in the upper layer when `upper`, else on the host) is binary.
    fn sniff(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        rel: &RelPath,
        upper: bool,
    ) -> Result<bool, Error> {
        let err = |e| {
            if upper {
                upper_err("read", rel, e)
            } else {
                host_err("read", rel, e)
            }
        };
        let mut f = fsys::open_child_file(dir, name).map_err(err)?;
        fsys::sniff(&mut f).map_err(err)
    }
}

/// One walked entry and its host counterpart.
struct Sides<'s> {
    rel: &'s RelPath,
    name: &'s [u8],
    upper_dir: BorrowedFd<'s>,
    host_dir: Option<BorrowedFd<'s>>,
    ust: &'s Stat,
    hst: Option<&'s Stat>,
    blocked: Option<String>,
}

fn found_parts(found: Vec<Found>) -> Vec<(Change, bool, bool)> {
    found
        .into_iter()
        .map(|f| (f.change, f.new_git, f.deletes_repo))
        .collect()
}

/// What an upper entry is (see the crate docs for the overlay's conventions).
pub(crate) fn classify(dir: BorrowedFd<'_>, name: &[u8], st: &Stat) -> io::Result<Upper> {
    Ok(match st.kind() {
        Kind::Other if st.is_whiteout_device() => Upper::Whiteout,
        Kind::Other => Upper::Special,
        Kind::File => {
            let f = fsys::open_child_file(dir, name)?;
            if st.size == 0 && fsys::xattr(f.as_fd(), XATTR_WHITEOUT)?.is_some() {
                Upper::Whiteout
            } else if fsys::xattr(f.as_fd(), XATTR_METACOPY)?.is_some() {
                Upper::Metacopy
            } else {
                Upper::File
            }
        }
        Kind::Symlink => Upper::Symlink(fsys::read_link(dir, name)?),
        Kind::Dir => {
            let fd = fsys::open_child_dir(dir, name)?;
            let opaque = fsys::xattr(fd.as_fd(), XATTR_OPAQUE)?.is_some_and(|v| v == b"y");
            let redirect = fsys::xattr(fd.as_fd(), XATTR_REDIRECT)?.is_some();
            Upper::Dir {
                fd,
                replaces: opaque || redirect,
            }
        }
    })
}

/// Whether an upper directory replaces the host's (opaque or redirected) rather than merging.
pub(crate) fn replaces(dir: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(fsys::xattr(dir, XATTR_OPAQUE)?.is_some_and(|v| v == b"y")
        || fsys::xattr(dir, XATTR_REDIRECT)?.is_some())
}

/// Whether the host directory `name` of `dir` holds a `.git`.
fn holds_git(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    fsys::open_child_dir(dir, name)
        .ok()
        .is_some_and(|d| matches!(fsys::stat_at(d.as_fd(), b".git"), Ok(Some(_))))
}

/// "file", "symlink", ... for messages.
pub(crate) fn type_name(st: &Stat) -> &'static str {
    match st.kind() {
        Kind::File => "file",
        Kind::Dir => "directory",
        Kind::Symlink => "symlink",
        Kind::Other => st.other_name(),
    }
}

pub(crate) fn upper_err(op: &str, rel: &RelPath, e: io::Error) -> Error {
    Error::io(format!("cannot {op} {rel} in the upper layer"), e)
}

pub(crate) fn host_err(op: &str, rel: &RelPath, e: io::Error) -> Error {
    Error::io(format!("cannot {op} {rel} in the workspace"), e)
}
