//! Review mode: what an agent wrote to a sandbox's overlay upper layer, as changes to the host
//! workspace that the user lists, reads as diffs, applies or discards.
//!
//! In review mode the workspace is mounted in the sandbox as an overlayfs (`userxattr`) whose
//! lower layer is the live host workspace and whose upper layer is a directory Paddock keeps;
//! the agent's writes land only in the upper layer. A [`Layer`] reads that upper layer and the
//! host workspace:
//!
//! - Only the upper layer is walked (it holds only what the agent touched); each entry is looked
//!   up on the host through a descriptor of its host directory. The host is listed only under
//!   an opaque upper directory (to find what it hides) and under a deleted directory (for its
//!   patch).
//! - Overlay conventions: a character device 0:0, or an empty file with
//!   `user.overlay.whiteout`, is a whiteout (deleted path); `user.overlay.opaque=y` marks a
//!   directory that replaces the host's; a directory with `user.overlay.redirect` is treated as a
//!   new directory whose contents were all added (its origin is not reported). The overlay's
//!   own xattrs, and any other xattr, are never copied to the host.
//! - Conflicts: the first time a path is seen in the upper layer ([`Layer::capture`]) the host's
//!   `lstat` there is recorded (with a copy of a file up to 16 MiB as merge base), or the fact
//!   that the host changed it while the run went on (ctime at or after its start, which the
//!   caller takes from the filesystem's own clock: see [`Layer::capture`]).
//!   A change whose host entry differs from its record conflicts; [`Layer::apply`] refuses it
//!   unless forced or cleanly merged.
//! - Safety: nothing here executes a program or needs privilege. Every host operation resolves
//!   below a descriptor of the workspace root with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; the
//!   upper layer is read the same way. Each file is written to a temporary name listed first in
//!   a journal, synced and renamed over the target, so an interrupted apply leaves every file
//!   old or new and the next apply finishes the job.
//!
//! The state directory (owned by this crate) holds `meta.json` (the workspace's device and
//! inode, so a moved or replaced workspace is refused), `seen.json`, `base/` and `journal`.
#![forbid(unsafe_code)]

mod apply;
mod change;
mod discard;
mod error;
pub mod export;
pub mod files;
mod fsys;
mod gitview;
mod patch;
mod relpath;
mod rename;
mod scan;
mod state;
mod upper;

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use apply::{ApplyOptions, ApplyReport, GIT_INTERNAL, Refusal};
pub use change::{Change, ChangeKind, Entry, EntryType};
pub use discard::DiscardReport;
pub use error::Error;
pub use gitview::HeadError;
pub use relpath::{PathError, RelPath, quoted};

use crate::error::show_path;
use crate::scan::Scanner;
use crate::state::{Meta, State};

/// A sandbox's review layer: its upper directory, the host workspace, and the state directory.
#[derive(Debug)]
pub struct Layer {
    upper: PathBuf,
    workspace: PathBuf,
    state: State,
    id: (u64, u64),
    /// Given as descriptors ([`Layer::from_fds`]): the workspace root (reopened from it
    /// rather than by path), and the upper and state directories, named by their descriptors.
    held: Option<[OwnedFd; 3]>,
}

impl Layer {
    /// Opens a review layer. `state` is a directory this crate owns; it is created, and the
    /// workspace's (device, inode) recorded, on first open. Later opens refuse (with
    /// [`Error::WorkspaceReplaced`]) when the workspace at that path is missing or is another
    /// directory. The workspace path must have no symlink in it.
    pub fn open(upper: &Path, workspace: &Path, state: &Path) -> Result<Layer, Error> {
        Layer::open_with(upper, workspace, state, None)
    }

    /// [`Layer::open`] for a process given the three directories as descriptors (opened by
    /// its parent, which can reach them where it cannot): `workspace_name` is the workspace's
    /// path, for messages; its root is checked against the record as by path.
    pub fn from_fds(
        upper: OwnedFd,
        workspace: OwnedFd,
        workspace_name: &Path,
        state: OwnedFd,
    ) -> Result<Layer, Error> {
        use std::os::fd::AsRawFd;
        let name = |fd: &OwnedFd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let (upper_path, state_path) = (name(&upper), name(&state));
        Layer::open_with(
            &upper_path,
            workspace_name,
            &state_path,
            Some([upper, workspace, state]),
        )
    }

    fn open_with(
        upper: &Path,
        workspace: &Path,
        state: &Path,
        held: Option<[OwnedFd; 3]>,
    ) -> Result<Layer, Error> {
        let st = State::create(state)?;
        let _lock = st.lock()?;
        let meta = st.meta()?;
        let opened = match &held {
            Some([_, ws, _]) => fsys::reopen_dir(ws.as_fd()),
            None => fsys::open_root(workspace),
        };
        let root = match opened {
            Ok(fd) => fd,
            Err(_) if meta.is_some() => return Err(Error::WorkspaceReplaced(workspace.into())),
            Err(e) => {
                let what = format!("cannot open the workspace {}", show_path(workspace));
                return Err(Error::io(what, e));
            }
        };
        let rst = fsys::fstat(root.as_fd())
            .map_err(|e| Error::io(format!("cannot stat {}", show_path(workspace)), e))?;
        match meta {
            Some(m) if (m.dev, m.ino) != (rst.dev, rst.ino) => {
                return Err(Error::WorkspaceReplaced(workspace.into()));
            }
            Some(_) => {}
            None => st.write_meta(&Meta {
                version: 1,
                dev: rst.dev,
                ino: rst.ino,
            })?,
        }
        match &held {
            Some([up, _, _]) => fsys::reopen_dir(up.as_fd()),
            None => fsys::open_own_dir(upper),
        }
        .map_err(|e| {
            Error::io(
                format!("cannot open the upper layer {}", show_path(upper)),
                e,
            )
        })?;
        Ok(Layer {
            upper: upper.into(),
            workspace: workspace.into(),
            state: st,
            id: (rst.dev, rst.ino),
            held,
        })
    }

    /// The host workspace.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The upper layer.
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// Opens the workspace root (checked to be the recorded directory) and the upper layer.
    fn roots(&self) -> Result<(OwnedFd, OwnedFd), Error> {
        let replaced = || Error::WorkspaceReplaced(self.workspace.clone());
        let host = match &self.held {
            Some([_, ws, _]) => fsys::reopen_dir(ws.as_fd()),
            None => fsys::open_root(&self.workspace),
        }
        .map_err(|_| replaced())?;
        let st = fsys::fstat(host.as_fd()).map_err(|_| replaced())?;
        if (st.dev, st.ino) != self.id {
            return Err(replaced());
        }
        let upper = match &self.held {
            Some([up, _, _]) => fsys::reopen_dir(up.as_fd()),
            None => fsys::open_own_dir(&self.upper),
        }
        .map_err(|e| {
            Error::io(
                format!("cannot open the upper layer {}", show_path(&self.upper)),
                e,
            )
        })?;
        Ok((host, upper))
    }

    /// Records what the host looks like for every upper entry not yet recorded. `since`: when
    /// the run that may have made those entries started (a host path whose ctime is at or
    /// after it is recorded as changed on the host during the run). Take it from the
    /// filesystem's clock (the ctime of a file written at the start), which lags the system
    /// clock by up to a tick: a change made in the same tick as the start counts as during
    /// the run, never the other way round.
    pub fn capture(&self, since: SystemTime) -> Result<(), Error> {
        let _lock = self.state.lock()?;
        let (host, upper) = self.roots()?;
        self.scan(host.as_fd(), upper.as_fd(), Some(since))?;
        Ok(())
    }

    /// The changes (risky first, then by path), restricted to `select` (paths relative to the
    /// workspace; a directory selects everything under it; empty: all). Captures first (with
    /// `since`), so every change has a record.
    pub fn changes(&self, select: &[RelPath], since: SystemTime) -> Result<Vec<Change>, Error> {
        let _lock = self.state.lock()?;
        let (host, upper) = self.roots()?;
        let mut changes = self.scan(host.as_fd(), upper.as_fd(), Some(since))?;
        changes.retain(|c| c.selected_by(select));
        Ok(changes)
    }

    /// Unified diff text of one change (host now → agent): binary files summarised
    /// ("Binary file PATH differs (N bytes → M bytes)"), symlinks as their targets, mode changes
    /// as git's `old mode`/`new mode` lines.
    pub fn patch(&self, change: &Change) -> Result<String, Error> {
        let (host, upper) = self.roots()?;
        patch::render(host.as_fd(), upper.as_fd(), change)
    }

    /// Applies the selected changes (all when `select` is empty): see [`ApplyOptions`]. Conflicts
    /// are refused unless forced or merged, git internals and special files are skipped; the
    /// others are applied. A failed write (disk full) stops with [`Error::Write`]: that file is
    /// untouched, the files applied before it stay applied.
    pub fn apply(
        &self,
        select: &[RelPath],
        opts: ApplyOptions,
        since: SystemTime,
    ) -> Result<ApplyReport, Error> {
        let _lock = self.state.lock()?;
        let (host, upper) = self.roots()?;
        let journal = self.state.journal(host.as_fd())?;
        let mut seen = self.state.seen()?;
        let all = Scanner::new(
            host.as_fd(),
            upper.as_fd(),
            &self.state,
            &mut seen,
            Some(threshold(since)),
        )
        .run()?;
        self.state.save_seen(&seen)?;
        let chosen: Vec<Change> = all
            .iter()
            .filter(|c| c.selected_by(select))
            .cloned()
            .collect();
        let mut applier = apply::Applier::new(
            host.as_fd(),
            upper.as_fd(),
            &self.state,
            &mut seen,
            journal,
            opts,
        );
        let ran = applier.run(&chosen);
        let mut report = std::mem::take(&mut applier.report);
        drop(applier);
        self.state.save_seen(&seen)?;
        ran?;
        report.unmatched = apply::unmatched(select, &all);
        Ok(report)
    }

    /// Removes the selected changes (all when `select` is empty) from the upper layer, with
    /// their records: a deleted directory comes back, an added one goes, a rename's two sides
    /// go together. A host entry hidden by an opaque directory can only be restored with that
    /// whole directory. The caller guarantees the sandbox is stopped.
    pub fn discard(&self, select: &[RelPath]) -> Result<DiscardReport, Error> {
        let _lock = self.state.lock()?;
        let (host, upper) = self.roots()?;
        let mut seen = self.state.seen()?;
        let all = Scanner::new(host.as_fd(), upper.as_fd(), &self.state, &mut seen, None).run()?;
        let report = discard::discard(host.as_fd(), upper.as_fd(), &mut seen, select, &all)?;
        self.state.save_seen(&seen)?;
        Ok(report)
    }

    /// Writes the selected changes (all when `select` is empty) to `out` as an [`export`]
    /// stream, each with the agent's content (a file's bytes, a symlink's target), for a commit
    /// on the host (`paddock apply --branch`). Git internals and special files are listed as
    /// skipped. Nothing is written to the workspace or the layer (the record of each path is
    /// made, as by [`Layer::changes`]).
    pub fn export(
        &self,
        select: &[RelPath],
        since: SystemTime,
        out: &mut dyn Write,
    ) -> Result<(), Error> {
        use export::{Kind, New, Record};
        let changes = self.changes(select, since)?;
        let (_host, upper) = self.roots()?;
        let w =
            |out: &mut dyn Write, r: &Record| export::write_record(out, r).map_err(Error::Export);
        export::write_magic(out).map_err(Error::Export)?;
        for c in &changes {
            let skip = |reason: &str| Record::Skipped {
                path: c.path.clone(),
                reason: reason.to_owned(),
            };
            let kind = match &c.kind {
                _ if c.git_internal => {
                    w(out, &skip(GIT_INTERNAL))?;
                    continue;
                }
                ChangeKind::Special => {
                    w(out, &skip("a fifo, socket or device: never committed"))?;
                    continue;
                }
                ChangeKind::Added => Kind::Added,
                ChangeKind::Modified => Kind::Modified,
                ChangeKind::Deleted => Kind::Deleted,
                ChangeKind::Renamed { .. } => Kind::Renamed,
                ChangeKind::Mode => Kind::Mode,
                ChangeKind::TypeChanged => Kind::TypeChanged,
            };
            let from = match &c.kind {
                ChangeKind::Renamed { from } => Some(from.clone()),
                _ => None,
            };
            let new = match &c.new {
                None => New::Absent,
                Some(e) => match e.kind {
                    EntryType::Dir => New::Dir,
                    EntryType::File => New::File {
                        exec: e.executable(),
                    },
                    EntryType::Symlink => New::Symlink,
                    EntryType::Other => {
                        w(out, &skip("a fifo, socket or device: never committed"))?;
                        continue;
                    }
                },
            };
            let record = |len| Record::Change {
                kind,
                path: c.path.clone(),
                from: from.clone(),
                new,
                len,
            };
            match new {
                New::File { .. } => {
                    let mut f = fsys::open_file(upper.as_fd(), &c.path)
                        .map_err(|e| scan::upper_err("read", &c.path, e))?;
                    let len = fsys::fstat(f.as_fd())
                        .map_err(|e| scan::upper_err("read", &c.path, e))?
                        .size;
                    w(out, &record(len))?;
                    export::write_data(out, &mut f, len).map_err(Error::Export)?;
                }
                New::Symlink => {
                    let target = c
                        .new
                        .as_ref()
                        .and_then(|e| e.target.clone())
                        .unwrap_or_default();
                    w(out, &record(target.len() as u64))?;
                    export::write_data(out, &mut &target[..], target.len() as u64)
                        .map_err(Error::Export)?;
                }
                New::Absent | New::Dir => w(out, &record(0))?,
            }
        }
        w(out, &Record::End)
    }

    /// Writes the sandbox's git `HEAD` (as the overlay shows the workspace's `.git`) and every
    /// object file the layer holds under `.git/objects` to `out` as an [`export`] stream, for
    /// the host's git to list and import the agent's commits (`paddock diff --commits`). When
    /// `HEAD` names a branch with no commit yet, the stream is empty (no `Head` record).
    pub fn export_commits(&self, out: &mut dyn Write) -> Result<(), Error> {
        use export::Record;
        let (host, upper) = self.roots()?;
        let w =
            |out: &mut dyn Write, r: &Record| export::write_record(out, r).map_err(Error::Export);
        let (id, branch) = match gitview::head(host.as_fd(), upper.as_fd()) {
            Ok(h) => h,
            // A branch with no commit yet: no commits, and no stream of objects.
            Err(Error::Head(HeadError::Unborn(_))) => {
                export::write_magic(out).map_err(Error::Export)?;
                return w(out, &Record::End);
            }
            Err(e) => return Err(e),
        };
        export::write_magic(out).map_err(Error::Export)?;
        w(out, &Record::Head { id, branch })?;
        gitview::objects(upper.as_fd(), &mut |kind, name, mut f| {
            let len = fsys::fstat(f.as_fd())
                .map_err(|e| Error::io(format!("cannot read .git/objects/{name}"), e))?
                .size;
            w(out, &Record::Object { kind, name, len })?;
            export::write_data(out, &mut f, len).map_err(Error::Export)
        })?;
        w(out, &Record::End)
    }

    fn scan(
        &self,
        host: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        since: Option<SystemTime>,
    ) -> Result<Vec<Change>, Error> {
        let mut seen = self.state.seen()?;
        let changes =
            Scanner::new(host, upper, &self.state, &mut seen, since.map(threshold)).run()?;
        self.state.save_seen(&seen)?;
        Ok(changes)
    }
}

/// Host ctimes at or after this (ns since the epoch) were changed during the run.
fn threshold(since: SystemTime) -> i64 {
    match since.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => i64::MIN,
    }
}
