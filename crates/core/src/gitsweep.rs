//! After a run: every way the host's git could find something to run in a read-write shared
//! folder, checked and disarmed before the host's git can use it.
//!
//! git runs code from a git directory's hooks (`hooks/NAME`, or the directory `core.hooksPath`
//! names) and obeys its config (`config`, `config.worktree` and every file they include). It
//! finds git directories through `.git` directories, `.git` files and symlinks (`gitdir: …`),
//! a worktree's `commondir`, and any directory that looks like one (a bare repository). The
//! agent may have made any of these, anywhere in a shared folder, including in folders the
//! trust walk does not report on (`node_modules`, `target`…), and it may have changed what an
//! existing, pinned hook leads to (a symlinked hook's target, a hard link's other name).
//!
//! [`Sweep`] takes the git directories and `.git` pointers the tree walk found (skipped folders
//! included) and, for each, follows what git would follow. Something the run made or changed
//! (its change time, which the sandbox cannot set back, is after the start) is disarmed:
//! - a hook that is a regular file loses its execute bits (a hard link's other names with it:
//!   they are one inode);
//! - a hook that is a symlink, or whose symlinks or target changed, is set aside
//!   (`NAME.paddock-review`, which git never runs);
//! - a config keeps only harmless keys ([`crate::gitsafe::defuse_config`]), an included config
//!   file too;
//! - a `.git` pointer or `commondir` that leads outside the shared folders is set aside.
//!
//! Paths are resolved the way the host's git resolves them (on the host, following symlinks),
//! but every change is made through descriptors that never follow a symlink
//! ([`crate::gitsafe::open_beneath`]).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::gitsafe::{Defused, REVIEW_SUFFIX, defuse_config, set_aside};
use crate::trust::Finding;

/// Symlinks followed at most while resolving one path (the kernel's own limit).
const MAX_LINKS: usize = 40;
/// How deep git follows config includes.
const MAX_INCLUDE_DEPTH: usize = 10;
/// `.git` files and `commondir` files are a line; anything longer is not one git reads.
const MAX_POINTER: u64 = 4096;

/// Whether a directory named `name`, whose entries `has` tells, is one git may take for a git
/// directory: a `.git` directory, or one with a `HEAD`, a `commondir`, or `objects` and `refs`
/// (a bare repository, a worktree's or submodule's git directory, a common directory).
pub(crate) fn looks_like_git_dir(name: Option<&OsStr>, has: impl Fn(&str) -> bool) -> bool {
    name.is_some_and(|n| n == ".git")
        || has("HEAD")
        || has("commondir")
        || (has("objects") && has("refs"))
}

/// What the tree walk found for the sweep.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Directories git may take for a git directory (host paths below a shared folder).
    pub git_dirs: Vec<PathBuf>,
    /// `.git` entries that are files or symlinks.
    pub pointers: Vec<PathBuf>,
}

/// The nanoseconds since the epoch of `m`'s change time.
pub(crate) fn ctime(m: &fs::Metadata) -> i128 {
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

/// One sweep over the git directories of a run's read-write shared folders.
#[derive(Debug)]
pub(crate) struct Sweep<'a> {
    /// The read-write shared folders (canonical host paths); the first is the workspace.
    roots: &'a [PathBuf],
    /// The run's start (nanoseconds since the epoch).
    since: i128,
    /// Disarm what changed (else only report it).
    defuse: bool,
    /// What was found.
    pub out: Vec<Finding>,
    done_git_dirs: HashSet<PathBuf>,
    done_hooks: HashSet<PathBuf>,
    done_configs: HashSet<PathBuf>,
}

/// A path resolved as the host would resolve it.
#[derive(Debug)]
struct Resolved {
    /// The path with every symlink resolved.
    target: PathBuf,
    /// Whether a symlink on the way changed during the run inside a shared folder.
    links_changed: bool,
    /// Whether a symlink on the way, or the target, changed so.
    changed: bool,
}

impl<'a> Sweep<'a> {
    pub(crate) fn new(roots: &'a [PathBuf], since: i128, defuse: bool) -> Sweep<'a> {
        Sweep {
            roots,
            since,
            defuse,
            out: Vec::new(),
            done_git_dirs: HashSet::new(),
            done_hooks: HashSet::new(),
            done_configs: HashSet::new(),
        }
    }

    /// Checks everything the walk found.
    pub(crate) fn run(&mut self, found: &Found) {
        for p in &found.pointers {
            self.pointer(p);
        }
        for d in &found.git_dirs {
            self.git_dir(d);
        }
    }

    /// The shared folder `p` lies in, and `p` relative to it.
    fn locate(&self, p: &Path) -> Option<(&'a Path, PathBuf)> {
        self.roots.iter().find_map(|r| {
            p.strip_prefix(r)
                .ok()
                .map(|rel| (r.as_path(), rel.to_owned()))
        })
    }

    /// How `p` is shown: relative to the workspace, else in full.
    pub(crate) fn show(roots: &[PathBuf], p: &Path) -> String {
        match roots.first().and_then(|w| p.strip_prefix(w).ok()) {
            Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
            _ => p.display().to_string(),
        }
    }

    fn say(&mut self, p: &Path, why: String) {
        self.out.push(Finding {
            path: Self::show(self.roots, p),
            why,
        });
    }

    /// Whether `m`, the metadata of `p`, says the run changed it (only what lies in a shared
    /// folder can have been changed by the sandbox).
    fn changed(&self, p: &Path, m: &fs::Metadata) -> bool {
        ctime(m) >= self.since && self.locate(p).is_some()
    }

    /// Resolves `p` as the host would (every symlink followed), noting whether a symlink on the
    /// way or the target changed during the run.
    fn resolve(&self, p: &Path) -> io::Result<Resolved> {
        let mut todo: Vec<std::ffi::OsString> = p
            .components()
            .rev()
            .map(|c| c.as_os_str().to_owned())
            .collect();
        let mut cur = PathBuf::from("/");
        let mut links = 0;
        let mut changed = false;
        while let Some(c) = todo.pop() {
            match Path::new(&c).components().next() {
                Some(Component::RootDir) => cur = PathBuf::from("/"),
                Some(Component::ParentDir) => {
                    cur.pop();
                }
                Some(Component::Normal(n)) => {
                    let next = cur.join(n);
                    let m = fs::symlink_metadata(&next)?;
                    if m.file_type().is_symlink() {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(io::Error::from_raw_os_error(libc_eloop()));
                        }
                        changed |= self.changed(&next, &m);
                        let to = fs::read_link(&next)?;
                        todo.extend(to.components().rev().map(|c| c.as_os_str().to_owned()));
                    } else {
                        cur = next;
                    }
                }
                _ => {}
            }
        }
        let m = fs::metadata(&cur)?;
        Ok(Resolved {
            links_changed: changed,
            changed: changed || self.changed(&cur, &m),
            target: cur,
        })
    }

    /// `p` with its directory resolved as the host would (its last component kept as it is,
    /// to be looked at itself), and whether a symlink on the way there changed during the
    /// run. `None` when the directory does not exist.
    fn resolve_parent(&self, p: &Path) -> Option<(PathBuf, bool)> {
        let r = self.resolve(p.parent()?).ok()?;
        let name = p.file_name()?;
        (name != "..").then(|| (r.target.join(name), r.links_changed))
    }

    /// Sets `p` aside for review (when disarming), saying why.
    fn set_aside(&mut self, p: &Path, what: &str) {
        let name = p
            .file_name()
            .map(OsStr::to_string_lossy)
            .unwrap_or_default();
        if !self.defuse {
            self.say(p, format!("{what}; git on the host may use it"));
            return;
        }
        let why = match self.locate(p) {
            Some((root, rel)) => match set_aside(root, &rel) {
                Ok(()) => format!("{what}: set aside as {name}{REVIEW_SUFFIX} (git ignores it)"),
                Err(e) => format!(
                    "{what}; it could not be set aside ({e}): do not run git here before you have read it"
                ),
            },
            None => format!(
                "{what}; it is outside the shared folders and was left: do not run git here before you have read it"
            ),
        };
        self.say(p, why);
    }

    /// A `.git` file or symlink: where it leads is a git directory for the host's git.
    fn pointer(&mut self, p: &Path) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        let mut changed = self.changed(p, &m);
        let target = if m.file_type().is_symlink() {
            p.to_owned()
        } else {
            match self.read_pointer(p, "gitdir:") {
                Some(t) => t,
                None => {
                    if changed {
                        self.say(
                            p,
                            "a .git file made or changed during the run that git cannot read as one"
                                .into(),
                        );
                    }
                    return;
                }
            }
        };
        let Ok(r) = self.resolve(&target) else {
            if changed {
                self.set_aside(
                    p,
                    &format!(
                        "a .git pointer made during the run leads nowhere (-> {})",
                        target.display()
                    ),
                );
            }
            return;
        };
        changed |= r.changed;
        if self.locate(&r.target).is_none() {
            if changed {
                self.set_aside(
                    p,
                    &format!(
                        "a .git pointer made or changed during the run leads outside the shared folders (-> {})",
                        r.target.display()
                    ),
                );
                return;
            }
        } else if changed {
            self.say(
                p,
                format!(
                    "a .git pointer made or changed during the run (-> {}); its git directory is checked too",
                    Self::show(self.roots, &r.target)
                ),
            );
        }
        if r.target.is_dir() {
            self.git_dir(&r.target);
        }
    }

    /// The path a one-line pointer file `p` (`gitdir: X`, or a bare path for `commondir`)
    /// names, relative to the file's directory.
    fn read_pointer(&self, p: &Path, prefix: &str) -> Option<PathBuf> {
        let (root, rel) = self.locate(p)?;
        let fd = crate::gitsafe::open_beneath(
            root,
            &rel,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        )
        .ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return None;
        }
        let mut text = String::new();
        fs::File::from(fd)
            .take(MAX_POINTER)
            .read_to_string(&mut text)
            .ok()?;
        let line = text.lines().next()?.trim_end();
        let named = line.strip_prefix(prefix)?.trim_start();
        if named.is_empty() {
            return None;
        }
        Some(p.parent()?.join(named))
    }

    /// One git directory: its hooks, its configs (and what they name), its `commondir`.
    fn git_dir(&mut self, dir: &Path) {
        if !self.done_git_dirs.insert(dir.to_owned()) {
            return;
        }
        let hooks = dir.join("hooks");
        if let Ok(m) = fs::symlink_metadata(&hooks) {
            if m.file_type().is_symlink() {
                match self.resolve(&hooks) {
                    Ok(r) if !(r.links_changed || self.changed(&hooks, &m)) => {
                        self.hooks_dir(&r.target, false)
                    }
                    _ => self.set_aside(
                        &hooks,
                        "git hooks directory made a symlink during the run, or what it leads to changed",
                    ),
                }
            } else if m.is_dir() {
                self.hooks_dir(&hooks, false);
            }
        }
        let bases = worktree_bases(dir);
        for name in ["config", "config.worktree"] {
            let p = dir.join(name);
            if fs::symlink_metadata(&p).is_ok() {
                self.config(&p, &bases, 0);
            }
        }
        let common = dir.join("commondir");
        if let Ok(m) = fs::symlink_metadata(&common) {
            let changed = self.changed(&common, &m);
            if m.file_type().is_symlink() {
                if changed {
                    self.set_aside(&common, "a git commondir made a symlink during the run");
                }
                return;
            }
            let Some(target) = self.read_pointer(&common, "") else {
                return;
            };
            match self.resolve(&target) {
                Ok(r) if self.locate(&r.target).is_none() && (changed || r.changed) => self
                    .set_aside(
                        &common,
                        &format!(
                            "a git commondir made or changed during the run leads outside the shared folders (-> {})",
                            r.target.display()
                        ),
                    ),
                Ok(r) => {
                    if changed || r.changed {
                        self.say(
                            &common,
                            format!(
                                "a git commondir made or changed during the run (-> {}); that git directory is checked too",
                                Self::show(self.roots, &r.target)
                            ),
                        );
                    }
                    if r.target.is_dir() {
                        self.git_dir(&r.target);
                    }
                }
                Err(_) if changed => self.set_aside(
                    &common,
                    &format!(
                        "a git commondir made during the run leads nowhere (-> {})",
                        target.display()
                    ),
                ),
                Err(_) => {}
            }
        }
    }

    /// Every hook in the directory `dir` (a git directory's `hooks`, or `core.hooksPath`).
    /// `via_changed`: the way to it went through a symlink the run made or changed, so every
    /// hook in it counts as the run's.
    fn hooks_dir(&mut self, dir: &Path, via_changed: bool) {
        let Ok(r) = self.resolve(dir) else {
            return;
        };
        let (dir, via_changed) = (r.target, via_changed || r.links_changed);
        if !self.done_hooks.insert(dir.clone()) {
            return;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let n = name.to_string_lossy();
            // git runs hooks by their exact names: never a sample, nor what was set aside.
            if n.ends_with(".sample") || n.ends_with(REVIEW_SUFFIX) {
                continue;
            }
            self.hook(&dir.join(&name), via_changed);
        }
    }

    /// One hook: disarmed when the run made or changed it, or anything it leads to.
    fn hook(&mut self, p: &Path, via_changed: bool) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        let changed = via_changed || self.changed(p, &m);
        if m.file_type().is_symlink() {
            match self.resolve(p) {
                Ok(r) if !(changed || r.changed) => {}
                Ok(r) => {
                    let to = Self::show(self.roots, &r.target);
                    self.set_aside(
                        p,
                        &format!(
                            "git hook that is a symlink (-> {to}), made during the run or leading to what the run changed"
                        ),
                    );
                }
                Err(_) if changed => {
                    self.set_aside(p, "git hook made a symlink during the run (dangling)")
                }
                Err(_) => {}
            }
            return;
        }
        if !m.is_file() || !changed {
            return;
        }
        if m.mode() & 0o111 == 0 {
            self.say(
                p,
                "git hook written during the run (not executable, so git skips it; read it before `chmod +x`)".into(),
            );
            return;
        }
        let links = match m.nlink() {
            0 | 1 => String::new(),
            2 => " (a hard link: its other name lost them too)".to_owned(),
            n => format!(" (a hard link: its {} other names lost them too)", n - 1),
        };
        if !self.defuse {
            self.say(
                p,
                format!("git hook written during the run{links}; git on the host runs it"),
            );
            return;
        }
        let why = match self.locate(p).map(|(root, rel)| disarm(root, &rel)) {
            Some(Ok(())) => format!(
                "git hook written during the run: its execute bits were removed so the host's git skips it{links} (read it before `chmod +x`)"
            ),
            Some(Err(e)) => format!(
                "git hook written during the run (could not remove its execute bits: {e}); do not run git here before you have read it"
            ),
            None => "git hook written during the run, outside the shared folders; do not run git here before you have read it".into(),
        };
        self.say(p, why);
    }

    /// One config file: trimmed when the run made or changed it, or anything on the way;
    /// otherwise the hooks directory and the files it names are checked.
    fn config(&mut self, p: &Path, bases: &[PathBuf], depth: usize) {
        let Some((p, via_changed)) = self.resolve_parent(p) else {
            return;
        };
        let p = p.as_path();
        if depth > MAX_INCLUDE_DEPTH || !self.done_configs.insert(p.to_owned()) {
            return;
        }
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        let name = p
            .file_name()
            .map(OsStr::to_string_lossy)
            .unwrap_or_default();
        let what = if depth == 0 {
            format!("git {name}")
        } else {
            "a file a git config includes".to_owned()
        };
        let changed = self.changed(p, &m);
        if via_changed {
            self.say(
                p,
                format!("{what}, reached through a symlink the run made or changed; git on the host obeys it"),
            );
        }
        let target = if m.file_type().is_symlink() {
            match self.resolve(p) {
                Ok(r) if !(changed || r.changed) => r.target,
                _ => {
                    self.set_aside(
                        p,
                        &format!(
                            "{what} that is a symlink, made during the run or leading to what the run changed"
                        ),
                    );
                    return;
                }
            }
        } else if changed {
            match (self.defuse, self.locate(p)) {
                (true, Some((root, rel))) => {
                    let why = match defuse_config(root, &rel) {
                        Ok(Defused::Clean) => {
                            format!(
                                "{what} made or changed during the run: checked, nothing in it runs code"
                            )
                        }
                        Ok(Defused::Trimmed { dropped }) => format!(
                            "{what} made or changed during the run: set aside as {name}{REVIEW_SUFFIX}; it keeps only its format, remotes, branches and identity (dropped: {})",
                            dropped.join(", ")
                        ),
                        Ok(Defused::SetAside(why)) => format!(
                            "{what} made or changed during the run ({why}): set aside whole as {name}{REVIEW_SUFFIX}"
                        ),
                        Err(e) => format!(
                            "{what} made or changed during the run could not be made safe ({e}); do not run git in that repository before you have read it"
                        ),
                    };
                    self.say(p, why);
                    // What is left holds no hooks path and no include.
                    return;
                }
                _ => {
                    self.say(
                        p,
                        format!("{what} made or changed during the run; git on the host obeys it"),
                    );
                    p.to_owned()
                }
            }
        } else {
            p.to_owned()
        };
        let Some(text) = read_small(&target) else {
            return;
        };
        // Keys are spelled literally (case aside); most configs name neither.
        let lower = text.to_ascii_lowercase();
        if !lower.contains("hookspath") && !lower.contains("include") {
            return;
        }
        let Some(entries) = crate::gitsafe::parse(text.as_bytes()) else {
            return;
        };
        let dir = target.parent().unwrap_or(Path::new("/")).to_owned();
        for (key, value) in entries {
            let Some(value) = value else { continue };
            if key == "core.hookspath" {
                for base in bases {
                    if let Some(h) = expand(base, &value) {
                        self.hooks_dir(&h, false);
                    }
                }
            } else if (key == "include.path"
                || (key.starts_with("includeif.") && key.ends_with(".path")))
                && let Some(inc) = expand(&dir, &value)
            {
                self.config(&inc, bases, depth + 1);
            }
        }
    }
}

/// `ELOOP`, without a libc dependency.
fn libc_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

/// Where a relative `core.hooksPath` of the git directory `dir` may lead: the worktree's top
/// (the parent of a `.git`, the worktree a linked worktree's `gitdir` file names) and the git
/// directory itself (a bare repository).
fn worktree_bases(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    if dir.file_name().is_some_and(|n| n == ".git")
        && let Some(p) = dir.parent()
    {
        out.push(p.to_owned());
    }
    if let Some(wt) = read_small(&dir.join("gitdir"))
        .and_then(|t| t.lines().next().map(str::to_owned))
        .map(|l| dir.join(l.trim()))
        .and_then(|f| f.parent().map(Path::to_owned))
    {
        out.push(wt);
    }
    out
}

/// `value` as git expands a path in a config: `~/` is the user's home, a relative path is
/// relative to `base`.
fn expand(base: &Path, value: &str) -> Option<PathBuf> {
    if let Some(rest) = value.strip_prefix("~/") {
        return std::env::var_os("HOME").map(|h| PathBuf::from(h).join(rest));
    }
    if value.starts_with('~') || value.is_empty() {
        return None;
    }
    Some(base.join(value))
}

/// A small regular file's text (a config or a pointer), `None` when it is anything else or
/// larger than any real one. Opened without blocking (a FIFO planted as a config never holds
/// the walk).
fn read_small(p: &Path) -> Option<String> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        p,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_size as u64 > 1 << 20
    {
        return None;
    }
    let mut text = String::new();
    fs::File::from(fd)
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Removes the execute bits of the regular file `rel` below `root`, reached without following
/// any symlink (the workspace is the sandbox's to write).
fn disarm(root: &Path, rel: &Path) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = crate::gitsafe::open_beneath(
        root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & 0o7666))?;
    Ok(())
}

#[cfg(test)]
#[path = "gitsweep_tests.rs"]
mod tests;
