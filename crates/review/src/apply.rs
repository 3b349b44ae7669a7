//! Applying changes to the host workspace.
//!
//! Every host operation is relative to the workspace root's descriptor and resolves with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a symlink on the host is never followed (a parent
//! that is one refuses the change), nothing is written outside the workspace, and an agent's
//! symlink is created as a symlink. Each file is written to a temporary name in its directory
//! (listed in the journal first), synced, given its mode and renamed over the target, so an
//! interrupted apply leaves every file old or new and the next apply removes the temporaries.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use serde::Serialize;

use crate::change::{Change, ChangeKind, EntryType};
use crate::error::Error;
use crate::fsys::{self, BENEATH, Kind};
use crate::relpath::RelPath;
use crate::scan::upper_err;
use crate::state::{self, HostStat, Journal, Seen, State};
use crate::upper;

/// How to apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Apply conflicting changes too: the agent's version wins.
    pub force: bool,
    /// Three-way merge conflicting modified text files (base: the host's version when the
    /// sandbox first saw it); only a clean merge is applied. With `force` too, a change that
    /// cannot be merged cleanly gets the agent's version.
    pub merge: bool,
    /// The sandbox is stopped: applied entries are removed from the upper layer. Without it the
    /// upper layer is left alone (the running overlay must not change under it) and the records
    /// note what was applied, so the change is no longer listed.
    pub settle: bool,
}

/// A change not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The change's path.
    pub path: RelPath,
    /// Why.
    pub reason: String,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Applied, in order.
    pub applied: Vec<RelPath>,
    /// Of those, the ones written as a three-way merge.
    pub merged: Vec<RelPath>,
    /// Conflicts and changes that could not be applied safely, with why: nothing was written
    /// for them.
    pub refused: Vec<Refusal>,
    /// Never applied by this crate: git internals and special files.
    pub skipped: Vec<Refusal>,
    /// Selected paths that matched no change.
    pub unmatched: Vec<RelPath>,
}

/// Why one change failed: refused (go on with the others) or fatal (stop).
enum Failure {
    Refuse(String),
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Fatal(e)
    }
}

/// What to write for a file.
enum Source {
    /// The agent's file in the upper layer.
    Upper,
    /// These bytes (a merge result).
    Bytes(Vec<u8>),
}

/// The largest side a three-way merge takes.
const MAX_MERGE: u64 = 1 << 20;

/// The message for a git-internal change.
pub const GIT_INTERNAL: &str = "git internals: use apply --commits";

/// One apply: the roots, the records, the journal, and what it did so far.
pub(crate) struct Applier<'a> {
    host: BorrowedFd<'a>,
    upper: BorrowedFd<'a>,
    state: &'a State,
    seen: &'a mut Seen,
    journal: Journal,
    opts: ApplyOptions,
    pub(crate) report: ApplyReport,
    counter: u64,
}

impl<'a> Applier<'a> {
    pub(crate) fn new(
        host: BorrowedFd<'a>,
        upper: BorrowedFd<'a>,
        state: &'a State,
        seen: &'a mut Seen,
        journal: Journal,
        opts: ApplyOptions,
    ) -> Applier<'a> {
        Applier {
            host,
            upper,
            state,
            seen,
            journal,
            opts,
            report: ApplyReport::default(),
            counter: 0,
        }
    }

    /// Applies `changes` (already selected): writes first in path order (parents before
    /// children), then deletions (files, then directories deepest first). Stops at the first
    /// fatal error (a write that failed: disk full, say).
    pub(crate) fn run(&mut self, changes: &[Change]) -> Result<(), Error> {
        let mut writes: Vec<(&Change, Source)> = Vec::new();
        let mut deletes: Vec<&Change> = Vec::new();
        for c in changes {
            if c.git_internal {
                self.skip(c, GIT_INTERNAL);
                continue;
            }
            if c.kind == ChangeKind::Special {
                self.skip(c, "special file (a fifo, socket or device): never applied");
                continue;
            }
            let mut source = Source::Upper;
            if let Some(why) = &c.conflict {
                match self.decide(c, why) {
                    Ok(s) => source = s,
                    Err(reason) => {
                        self.refuse(&c.path, reason);
                        continue;
                    }
                }
            }
            if c.kind == ChangeKind::Deleted {
                deletes.push(c);
            } else {
                writes.push((c, source));
            }
        }
        writes.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        let mut renamed: Vec<&Change> = Vec::new();
        for (c, source) in writes {
            let merged = matches!(source, Source::Bytes(_));
            match self.write(c, source) {
                Ok(()) if matches!(c.kind, ChangeKind::Renamed { .. }) => renamed.push(c),
                Ok(()) => {
                    self.done(c)?;
                    if merged {
                        self.report.merged.push(c.path.clone());
                    }
                }
                Err(Failure::Refuse(why)) => self.refuse(&c.path, why),
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        // Deletions: renamed sources and files, then directories deepest first.
        let is_dir = |c: &Change| c.old.as_ref().is_some_and(|e| e.kind == EntryType::Dir);
        let mut order: Vec<(&Change, Option<&RelPath>)> = Vec::new();
        for c in &renamed {
            if let ChangeKind::Renamed { from } = &c.kind {
                order.push((c, Some(from)));
            }
        }
        order.extend(deletes.iter().filter(|c| !is_dir(c)).map(|c| (*c, None)));
        let mut dirs: Vec<&Change> = deletes.iter().copied().filter(|c| is_dir(c)).collect();
        dirs.sort_by(|a, b| {
            b.path
                .depth()
                .cmp(&a.path.depth())
                .then(a.path.cmp(&b.path))
        });
        order.extend(dirs.into_iter().map(|c| (c, None)));
        for (c, from) in order {
            let target = from.unwrap_or(&c.path);
            match self.delete(target) {
                Ok(()) => self.done(c)?,
                Err(Failure::Refuse(why)) => match from {
                    Some(from) => self.refuse(
                        &c.path,
                        format!("{} was written, but {from} was not removed: {why}", c.path),
                    ),
                    None => self.refuse(&c.path, why),
                },
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        self.journal
            .clear()
            .map_err(|e| Error::io("cannot clear the apply journal", e))
    }

    fn skip(&mut self, c: &Change, why: &str) {
        self.report.skipped.push(Refusal {
            path: c.path.clone(),
            reason: why.to_owned(),
        });
    }

    fn refuse(&mut self, path: &RelPath, reason: String) {
        self.report.refused.push(Refusal {
            path: path.clone(),
            reason,
        });
    }

    /// What to do with a conflicting change: merge, force, or refuse (with why).
    fn decide(&self, c: &Change, why: &str) -> Result<Source, String> {
        if self.opts.merge {
            match self.merge(c) {
                Ok(bytes) => return Ok(Source::Bytes(bytes)),
                Err(e) if !self.opts.force => return Err(format!("{why}; {e}")),
                Err(_) => {}
            }
        }
        if self.opts.force {
            return Ok(Source::Upper);
        }
        Err(format!(
            "{why} (apply with force or merge to apply it anyway)"
        ))
    }

    /// A clean three-way merge of base (the recorded host version), ours (the host now) and
    /// theirs (the agent's), or why there is none.
    fn merge(&self, c: &Change) -> Result<Vec<u8>, String> {
        let files = |e: &Option<crate::change::Entry>| {
            e.as_ref().is_some_and(|e| e.kind == EntryType::File)
        };
        if c.kind != ChangeKind::Modified || !files(&c.old) || !files(&c.new) {
            return Err("only a modified file can be merged".to_owned());
        }
        if c.binary {
            return Err("a binary file cannot be merged".to_owned());
        }
        let record = self.seen.get(&c.path);
        let base = match record.and_then(|r| r.base.as_deref()) {
            Some(hash) => self.state.base(hash).map_err(|e| e.to_string())?,
            None => None,
        };
        let Some(base) = base else {
            return Err(
                "no merge base (the host's version was not recorded when the sandbox \
                        first saw it, or was larger than 16 MiB)"
                    .to_owned(),
            );
        };
        let read = |root: BorrowedFd<'_>| -> Result<Vec<u8>, String> {
            let mut f = fsys::open_file(root, &c.path).map_err(|e| e.to_string())?;
            fsys::read_limited(&mut f, state::MAX_BASE)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the file is larger than 16 MiB".to_owned())
        };
        let ours = read(self.host)?;
        let theirs = read(self.upper)?;
        // The merge's diffs are quadratic in the differences, and the agent writes one side.
        if [&base, &ours, &theirs]
            .iter()
            .any(|b| b.len() as u64 > MAX_MERGE)
        {
            return Err(format!(
                "a file over {} MiB is not merged (--force writes the sandbox's version)",
                MAX_MERGE >> 20
            ));
        }
        let text = |b: &[u8]| -> Result<String, String> {
            String::from_utf8(b.to_vec()).map_err(|_| "a binary file cannot be merged".to_owned())
        };
        diffy::merge(&text(&base)?, &text(&ours)?, &text(&theirs)?)
            .map(String::into_bytes)
            .map_err(|_| "the three-way merge has conflicts".to_owned())
    }

    /// Writes one non-deletion change.
    fn write(&mut self, c: &Change, source: Source) -> Result<(), Failure> {
        let Some(new) = &c.new else {
            return Ok(());
        };
        match (&c.kind, new.kind) {
            (ChangeKind::Mode, EntryType::File) => self.chmod_file(&c.path, new.mode),
            (_, EntryType::Dir) => self.make_dir(&c.path, new.mode & 0o777),
            (_, EntryType::Symlink) => {
                self.put_symlink(&c.path, new.target.as_deref().unwrap_or_default())
            }
            (_, EntryType::File) => self.put_file(c, source, new.mode),
            (_, EntryType::Other) => Ok(()),
        }
    }

    /// Opens the host directory that holds `rel`, creating missing directories (with the
    /// upper layer's modes) when `create`; `None` when it is missing and not `create`.
    fn parent(
        &mut self,
        rel: &RelPath,
        create: bool,
    ) -> Result<Option<(OwnedFd, Vec<u8>)>, Failure> {
        let name = rel.file_name().unwrap_or_default().to_vec();
        let mut cur = fsys::open_dir(self.host, &RelPath::root())
            .map_err(|e| Failure::Fatal(Error::io("cannot open the workspace", e)))?;
        let mut at = RelPath::root();
        let parent = rel.parent().unwrap_or_default();
        for comp in parent.components() {
            at = at.join(comp).map_err(|e| Failure::Fatal(e.into()))?;
            let next = match fsys::open_child_dir(cur.as_fd(), comp) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    self.mkdir(cur.as_fd(), comp, &at)?
                }
                Err(e) => return Err(self.blocked(cur.as_fd(), comp, &at, e)),
            };
            cur = next;
        }
        Ok(Some((cur, name)))
    }

    /// Why the host path `at` (entry `name` of `dir`) cannot be entered.
    fn blocked(&self, dir: BorrowedFd<'_>, name: &[u8], at: &RelPath, e: io::Error) -> Failure {
        match fsys::stat_at(dir, name) {
            Ok(Some(st)) if st.kind() == Kind::Symlink => {
                Failure::Refuse(format!("on the host, {at} is a symlink (never followed)"))
            }
            Ok(Some(st)) if st.kind() != Kind::Dir => Failure::Refuse(format!(
                "on the host, {at} is a {}, not a directory",
                crate::scan::type_name(&st)
            )),
            _ => Failure::Fatal(crate::scan::host_err("open", at, e)),
        }
    }

    /// Creates the host directory `at` with the upper layer's mode for it.
    fn mkdir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        at: &RelPath,
    ) -> Result<OwnedFd, Failure> {
        let mode = match fsys::stat_rel(self.upper, at) {
            Ok(Some(st)) if st.kind() == Kind::Dir => st.perm() & 0o777,
            _ => 0o755,
        };
        let fatal = |e: io::Error| Failure::Fatal(crate::scan::host_err("create", at, e));
        match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(fatal(e.into())),
        }
        let fd = fsys::open_child_dir(dir, name).map_err(fatal)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| fatal(e.into()))?;
        self.note_host(at);
        Ok(fd)
    }

    /// A new temporary name next to `name`, listed in the journal before it is used.
    fn temporary(&mut self, rel: &RelPath, name: &[u8], is_dir: bool) -> Result<Vec<u8>, Failure> {
        self.counter += 1;
        let mut short = name.to_vec();
        short.truncate(180);
        let mut tmp = b".".to_vec();
        tmp.extend_from_slice(&short);
        tmp.extend_from_slice(
            format!(".paddock-apply-{}-{}", std::process::id(), self.counter).as_bytes(),
        );
        let parent = rel.parent().unwrap_or_default();
        let tmp_rel = parent.join(&tmp).map_err(|e| Failure::Fatal(e.into()))?;
        self.journal
            .add(&tmp_rel, is_dir)
            .map_err(|e| Failure::Fatal(Error::io("cannot write the apply journal", e)))?;
        Ok(tmp)
    }

    /// Clears the way for a new entry of another type: a directory where a file goes is
    /// removed whole (never following a symlink).
    fn clear_dir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        rel: &RelPath,
    ) -> Result<(), Failure> {
        if let Ok(Some(st)) = fsys::stat_at(dir, name)
            && st.kind() == Kind::Dir
        {
            self.remove_dir(dir, name, rel)?;
        }
        Ok(())
    }

    /// Removes the host directory `name` of `dir` at once: renamed to a journalled temporary
    /// name, then emptied and removed there (never following a symlink). An interrupted
    /// removal leaves the directory whole, or gone (the next apply removes the temporary).
    fn remove_dir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        rel: &RelPath,
    ) -> Result<(), Failure> {
        let fatal = |e: io::Error| Failure::Fatal(crate::scan::host_err("remove", rel, e));
        let tmp = self.temporary(rel, name, true)?;
        rustix::fs::renameat(dir, name, dir, tmp.as_slice()).map_err(|e| fatal(e.into()))?;
        rustix::fs::fsync(dir).map_err(|e| fatal(e.into()))?;
        fsys::remove_tree(dir, &tmp).map_err(fatal)
    }

    fn put_file(&mut self, c: &Change, source: Source, agent_mode: u32) -> Result<(), Failure> {
        let rel = &c.path;
        let Some((dir, name)) = self.parent(rel, true)? else {
            return Ok(());
        };
        // A modified file keeps the host's permission bits, with the agent's execute bits;
        // anything new takes the agent's bits. Never setuid, setgid or sticky.
        let mode = match (&c.kind, fsys::stat_at(dir.as_fd(), &name)) {
            (ChangeKind::Modified, Ok(Some(st))) if st.kind() == Kind::File => {
                (st.perm() & 0o777 & !0o111) | (agent_mode & 0o111)
            }
            _ => agent_mode & 0o777,
        };
        let mut reader = match &source {
            Source::Upper => Some(
                fsys::open_file(self.upper, rel)
                    .map_err(|e| Failure::Refuse(upper_err("read", rel, e).to_string()))?,
            ),
            Source::Bytes(_) => None,
        };
        let tmp = self.temporary(rel, &name, false)?;
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| write_err(rel, e.into()))?;
        let mut out = File::from(fd);
        let written = match (&source, reader.as_mut()) {
            (Source::Bytes(b), _) => out.write_all(b).map_err(Some),
            (Source::Upper, Some(r)) => copy(r, &mut out),
            (Source::Upper, None) => Ok(()),
        };
        let finished = written.and_then(|()| {
            rustix::fs::fchmod(&out, Mode::from_raw_mode(mode)).map_err(|e| Some(e.into()))?;
            out.sync_all().map_err(Some)
        });
        drop(out);
        if let Err(e) = finished {
            let _ = fsys::unlink(dir.as_fd(), &tmp, false);
            return Err(match e {
                Some(e) => write_err(rel, e),
                None => Failure::Refuse(format!("cannot read the agent's version of {rel}")),
            });
        }
        self.install(dir.as_fd(), &tmp, &name, rel)
    }

    fn put_symlink(&mut self, rel: &RelPath, target: &[u8]) -> Result<(), Failure> {
        let Some((dir, name)) = self.parent(rel, true)? else {
            return Ok(());
        };
        let tmp = self.temporary(rel, &name, false)?;
        rustix::fs::symlinkat(target, &dir, tmp.as_slice()).map_err(|e| {
            let _ = fsys::unlink(dir.as_fd(), &tmp, false);
            write_err(rel, e.into())
        })?;
        self.install(dir.as_fd(), &tmp, &name, rel)
    }

    /// Puts the finished temporary `tmp` in place of `name`: a directory there is removed
    /// first (a type change), anything else is replaced at once by the rename.
    fn install(
        &mut self,
        dir: BorrowedFd<'_>,
        tmp: &[u8],
        name: &[u8],
        rel: &RelPath,
    ) -> Result<(), Failure> {
        let placed = self.clear_dir(dir, name, rel).and_then(|()| {
            rustix::fs::renameat(dir, tmp, dir, name)
                .and_then(|()| rustix::fs::fsync(dir))
                .map_err(|e| write_err(rel, e.into()))
        });
        if placed.is_err() {
            let _ = fsys::unlink(dir, tmp, false);
        }
        placed
    }

    fn make_dir(&mut self, rel: &RelPath, mode: u32) -> Result<(), Failure> {
        let Some((dir, name)) = self.parent(rel, true)? else {
            return Ok(());
        };
        let fatal = |e: io::Error| Failure::Fatal(crate::scan::host_err("create", rel, e));
        match fsys::stat_at(dir.as_fd(), &name).map_err(fatal)? {
            Some(st) if st.kind() == Kind::Dir => {}
            Some(_) => {
                fsys::unlink(dir.as_fd(), &name, false).map_err(fatal)?;
                rustix::fs::mkdirat(&dir, name.as_slice(), Mode::from_raw_mode(mode))
                    .map_err(|e| fatal(e.into()))?;
            }
            None => rustix::fs::mkdirat(&dir, name.as_slice(), Mode::from_raw_mode(mode))
                .map_err(|e| fatal(e.into()))?,
        }
        let fd = fsys::open_child_dir(dir.as_fd(), &name).map_err(fatal)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| fatal(e.into()))?;
        rustix::fs::fsync(&dir).map_err(|e| fatal(e.into()))
    }

    /// A mode change of a file: the host's permission bits with the agent's execute bits.
    fn chmod_file(&mut self, rel: &RelPath, agent_mode: u32) -> Result<(), Failure> {
        let Some((dir, name)) = self.parent(rel, false)? else {
            return Err(Failure::Refuse(format!("{rel} is no longer on the host")));
        };
        let fatal =
            |e: io::Error| Failure::Fatal(crate::scan::host_err("change the mode of", rel, e));
        let f = fsys::openat2(
            dir.as_fd(),
            &name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
        .map_err(fatal)?;
        let st = fsys::fstat(f.as_fd()).map_err(fatal)?;
        if st.kind() != Kind::File {
            return Err(Failure::Refuse(format!(
                "on the host, {rel} is no longer a file"
            )));
        }
        let mode = (st.perm() & 0o777 & !0o111) | (agent_mode & 0o111);
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode)).map_err(|e| fatal(e.into()))
    }

    /// Removes the host path `rel` (recursively for a directory, never following a symlink).
    fn delete(&mut self, rel: &RelPath) -> Result<(), Failure> {
        let Some((dir, name)) = self.parent(rel, false)? else {
            return Ok(());
        };
        let fatal = |e: io::Error| Failure::Fatal(crate::scan::host_err("remove", rel, e));
        match fsys::stat_at(dir.as_fd(), &name).map_err(fatal)? {
            None => Ok(()),
            Some(st) if st.kind() == Kind::Dir => self.remove_dir(dir.as_fd(), &name, rel),
            Some(_) => fsys::unlink(dir.as_fd(), &name, false)
                .and_then(|()| rustix::fs::fsync(&dir).map_err(io::Error::from))
                .map_err(fatal),
        }
    }

    /// After a change was applied: with settle, its upper entries go (and parents that become
    /// empty and merge with an identical host directory); else its record notes what was
    /// applied.
    fn done(&mut self, c: &Change) -> Result<(), Error> {
        let mut paths = vec![c.path.clone()];
        if let ChangeKind::Renamed { from } = &c.kind {
            paths.push(from.clone());
        }
        for p in &paths {
            if self.opts.settle && upper::remove(self.upper, p, false)? {
                self.seen.remove(p);
                upper::prune(self.upper, self.host, self.seen, p)?;
            } else {
                self.note_applied(p)?;
            }
        }
        self.report.applied.push(c.path.clone());
        Ok(())
    }

    /// Without settle: the record of `rel` becomes the host now, the upper entry now, and (for a
    /// file) the applied content as merge base.
    fn note_applied(&mut self, rel: &RelPath) -> Result<(), Error> {
        let upper = fsys::stat_rel(self.upper, rel).ok().flatten();
        self.note_host(rel);
        if let Some(r) = self.seen.get_mut(rel) {
            r.applied = upper.as_ref().map(HostStat::from);
        }
        Ok(())
    }

    /// Records the host's entry at `rel` now (after this apply wrote it).
    fn note_host(&mut self, rel: &RelPath) {
        let host = fsys::stat_rel(self.host, rel).ok().flatten();
        let base = match &host {
            Some(st) if st.kind() == Kind::File && st.size <= state::MAX_BASE => {
                fsys::open_file(self.host, rel)
                    .ok()
                    .and_then(|mut f| self.state.store_base(&mut f).ok().flatten())
            }
            _ => None,
        };
        let r = self.seen.entry(rel.clone()).or_default();
        r.during_run = false;
        r.host = host.as_ref().map(HostStat::from);
        r.base = base;
        r.applied = None;
    }
}

/// Copies `r` to `w`: a read error is `None` (the agent's side), a write error `Some`.
fn copy(r: &mut File, w: &mut File) -> Result<(), Option<io::Error>> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(None),
        };
        w.write_all(&buf[..n]).map_err(Some)?;
    }
}

fn write_err(rel: &RelPath, source: io::Error) -> Failure {
    Failure::Fatal(Error::Write {
        path: rel.clone(),
        source,
    })
}

/// The selected paths that select none of `changes`.
pub(crate) fn unmatched(select: &[RelPath], changes: &[Change]) -> Vec<RelPath> {
    let mut seen = HashSet::new();
    select
        .iter()
        .filter(|s| {
            !changes
                .iter()
                .any(|c| c.selected_by(std::slice::from_ref(s)))
        })
        .filter(|s| seen.insert((*s).clone()))
        .cloned()
        .collect()
}
