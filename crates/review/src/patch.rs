//! Unified diff text of one change, host now → agent, in git's shape: `diff --git` headers,
//! `new file mode`, `old mode`/`new mode`, `rename from`/`rename to`; binary files summarised,
//! symlinks as their targets.

use std::fmt::Write as _;
use std::os::fd::{AsFd, BorrowedFd};

use crate::change::{Change, ChangeKind, Entry, EntryType};
use crate::error::Error;
use crate::fsys::{self, Kind};
use crate::relpath::{RelPath, quoted};
use crate::scan::{host_err, upper_err};

/// Larger files are summarised, not diffed.
const MAX_DIFF: u64 = 16 * 1024 * 1024;

/// The longest one file's diff may take before it settles for a coarser one.
const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

/// At most this many entries of a deleted directory are listed.
const MAX_LISTED: usize = 10_000;

/// Where a side's content lives.
#[derive(Clone, Copy)]
enum Side {
    Host,
    Upper,
}

/// Renders `change` (see the module docs).
pub(crate) fn render(
    host: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    change: &Change,
) -> Result<String, Error> {
    let r = Renderer { host, upper };
    let p = &change.path;
    let mut out = String::new();
    match &change.kind {
        ChangeKind::Added => r.added(&mut out, p, change.new.as_ref())?,
        ChangeKind::Deleted => r.deleted(&mut out, p, change.old.as_ref(), change)?,
        ChangeKind::TypeChanged => {
            r.deleted(&mut out, p, change.old.as_ref(), change)?;
            r.added(&mut out, p, change.new.as_ref())?;
        }
        ChangeKind::Modified | ChangeKind::Mode => {
            out.push_str(&header(p, p));
            if let (Some(old), Some(new)) = (&change.old, &change.new) {
                mode_lines(&mut out, old, new);
                if change.kind == ChangeKind::Modified {
                    r.body(
                        &mut out,
                        p,
                        (p, Side::Host, old),
                        (p, Side::Upper, new),
                        true,
                    )?;
                }
            }
        }
        ChangeKind::Renamed { from } => {
            out.push_str(&header(from, p));
            if let (Some(old), Some(new)) = (&change.old, &change.new) {
                mode_lines(&mut out, old, new);
            }
            let _ = writeln!(out, "similarity index 100%");
            let _ = writeln!(out, "rename from {}", quoted(from.as_bytes()));
            let _ = writeln!(out, "rename to {}", quoted(p.as_bytes()));
        }
        ChangeKind::Special => {
            out.push_str(&header(p, p));
            let _ = writeln!(
                out,
                "special file {p} (a fifo, socket or device): never applied"
            );
        }
    }
    Ok(out)
}

struct Renderer<'a> {
    host: BorrowedFd<'a>,
    upper: BorrowedFd<'a>,
}

impl Renderer<'_> {
    fn added(&self, out: &mut String, p: &RelPath, new: Option<&Entry>) -> Result<(), Error> {
        let Some(new) = new else { return Ok(()) };
        out.push_str(&header(p, p));
        match new.kind {
            EntryType::Dir => {
                let _ = writeln!(out, "new directory mode {:06o}", git_mode(new));
            }
            EntryType::Other => {
                let _ = writeln!(
                    out,
                    "special file {p} (a fifo, socket or device): never applied"
                );
            }
            EntryType::File | EntryType::Symlink => {
                let _ = writeln!(out, "new file mode {:06o}", git_mode(new));
                self.body(
                    out,
                    p,
                    (p, Side::Host, &none()),
                    (p, Side::Upper, new),
                    false,
                )?;
            }
        }
        Ok(())
    }

    fn deleted(
        &self,
        out: &mut String,
        p: &RelPath,
        old: Option<&Entry>,
        change: &Change,
    ) -> Result<(), Error> {
        let Some(old) = old else {
            out.push_str(&header(p, p));
            let why = change
                .conflict
                .as_deref()
                .unwrap_or("it cannot be reached on the host");
            let _ = writeln!(out, "deleted file {p} ({why})");
            return Ok(());
        };
        out.push_str(&header(p, p));
        match old.kind {
            EntryType::Dir => {
                let _ = writeln!(out, "deleted directory mode {:06o}", git_mode(old));
                self.list_removed(out, p)?;
            }
            EntryType::Other => {
                let _ = writeln!(out, "deleted special file {p}");
            }
            EntryType::File | EntryType::Symlink => {
                let _ = writeln!(out, "deleted file mode {:06o}", git_mode(old));
                self.body(
                    out,
                    p,
                    (p, Side::Host, old),
                    (p, Side::Upper, &none()),
                    false,
                )?;
            }
        }
        Ok(())
    }

    /// Lists what deleting the host directory `p` removes.
    fn list_removed(&self, out: &mut String, p: &RelPath) -> Result<(), Error> {
        let (dir, name) = fsys::open_parent(self.host, p).map_err(|e| host_err("read", p, e))?;
        let (entries, complete) = match fsys::list_tree(dir.as_fd(), &name, MAX_LISTED) {
            Ok(x) => x,
            Err(e) => return Err(host_err("list", p, e)),
        };
        for (sub, st) in &entries {
            let mut full = p.as_bytes().to_vec();
            full.push(b'/');
            full.extend_from_slice(sub);
            let what = match st.kind() {
                Kind::File => format!("file, {} bytes", st.size),
                Kind::Dir => "directory".to_owned(),
                Kind::Symlink => "symlink".to_owned(),
                Kind::Other => st.other_name().to_owned(),
            };
            let _ = writeln!(out, "deleted {} ({what})", quoted(&full));
        }
        if !complete {
            let _ = writeln!(out, "... and more");
        }
        Ok(())
    }

    /// The `---`/`+++` lines and hunks from `old` to `new` (an entry of type `Other` stands for
    /// "nothing"), or a one-line summary for binary or large files.
    fn body(
        &self,
        out: &mut String,
        p: &RelPath,
        old: (&RelPath, Side, &Entry),
        new: (&RelPath, Side, &Entry),
        both: bool,
    ) -> Result<(), Error> {
        let a = self.content(old.0, old.1, old.2)?;
        let b = self.content(new.0, new.1, new.2)?;
        let size = |e: &Entry| {
            if e.kind == EntryType::Other {
                0
            } else {
                e.size
            }
        };
        let (Some(a), Some(b)) = (a, b) else {
            let _ = writeln!(
                out,
                "File {p} is too large to show ({} bytes → {} bytes)",
                size(old.2),
                size(new.2)
            );
            return Ok(());
        };
        let (Ok(ta), Ok(tb)) = (std::str::from_utf8(&a), std::str::from_utf8(&b)) else {
            binary_line(out, p, size(old.2), size(new.2));
            return Ok(());
        };
        if fsys::is_binary(&a) || fsys::is_binary(&b) {
            binary_line(out, p, size(old.2), size(new.2));
            return Ok(());
        }
        if ta == tb {
            return Ok(());
        }
        let name = |prefix: &str, path: &RelPath| {
            let mut v = prefix.as_bytes().to_vec();
            v.extend_from_slice(path.as_bytes());
            quoted(&v)
        };
        let from = if both || old.2.kind != EntryType::Other {
            name("a/", old.0)
        } else {
            "/dev/null".to_owned()
        };
        let to = if both || new.2.kind != EntryType::Other {
            name("b/", new.0)
        } else {
            "/dev/null".to_owned()
        };
        // Myers' diff is quadratic in the differences: two large files with nothing in common
        // (which the agent can write) would hold the listing for hours. Past the deadline the
        // diff is coarser, never slower.
        let diff = similar::TextDiff::configure()
            .algorithm(similar::Algorithm::Myers)
            .timeout(DIFF_DEADLINE)
            .diff_lines(ta, tb);
        out.push_str(&diff.unified_diff().header(&from, &to).to_string());
        Ok(())
    }

    /// A side's bytes: a file's content (`None` when too large), a symlink's target, nothing
    /// for anything else.
    fn content(&self, p: &RelPath, side: Side, e: &Entry) -> Result<Option<Vec<u8>>, Error> {
        match e.kind {
            EntryType::Symlink => Ok(Some(e.target.clone().unwrap_or_default())),
            EntryType::File => {
                let (root, err): (_, fn(&str, &RelPath, std::io::Error) -> Error) = match side {
                    Side::Host => (self.host, host_err),
                    Side::Upper => (self.upper, upper_err),
                };
                let mut f = fsys::open_file(root, p).map_err(|e| err("read", p, e))?;
                fsys::read_limited(&mut f, MAX_DIFF).map_err(|e| err("read", p, e))
            }
            EntryType::Dir | EntryType::Other => Ok(Some(Vec::new())),
        }
    }
}

fn binary_line(out: &mut String, p: &RelPath, a: u64, b: u64) {
    let _ = writeln!(out, "Binary file {p} differs ({a} bytes → {b} bytes)");
}

/// "Nothing" as an entry (for the missing side of an addition or deletion).
fn none() -> Entry {
    Entry {
        kind: EntryType::Other,
        mode: 0,
        size: 0,
        target: None,
    }
}

/// `diff --git a/A b/B`, each side quoted like git when needed.
fn header(a: &RelPath, b: &RelPath) -> String {
    let side = |prefix: &[u8], p: &RelPath| {
        let mut v = prefix.to_vec();
        v.extend_from_slice(p.as_bytes());
        quoted(&v)
    };
    format!("diff --git {} {}\n", side(b"a/", a), side(b"b/", b))
}

/// The mode as git shows it: type bits and permission bits.
fn git_mode(e: &Entry) -> u32 {
    match e.kind {
        EntryType::File => 0o100_000 | (e.mode & 0o777),
        EntryType::Symlink => 0o120_000,
        EntryType::Dir => 0o040_000 | (e.mode & 0o777),
        EntryType::Other => e.mode & 0o777,
    }
}

/// `old mode`/`new mode` lines when applying changes the mode: a file's execute bits, a
/// directory's permission bits. The new mode is what apply gives the file (the host's bits
/// with the agent's execute bits).
fn mode_lines(out: &mut String, old: &Entry, new: &Entry) {
    let (from, to) = match (old.kind, new.kind) {
        (EntryType::File, EntryType::File) if old.mode & 0o111 != new.mode & 0o111 => {
            let applied = (old.mode & 0o777 & !0o111) | (new.mode & 0o111);
            (git_mode(old), 0o100_000 | applied)
        }
        (EntryType::Dir, EntryType::Dir) if old.mode & 0o777 != new.mode & 0o777 => {
            (git_mode(old), git_mode(new))
        }
        _ => return,
    };
    let _ = writeln!(out, "old mode {from:06o}");
    let _ = writeln!(out, "new mode {to:06o}");
}
