//! What changed ([`Change`]), how it serialises for `--json`, why it is risky, how changes are
//! ordered and selected.

use std::borrow::Cow;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::fsys::{Kind as FsKind, Stat};
use crate::relpath::{RelPath, escape};

/// What kind of change a path has (host now → agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// The host has nothing there.
    Added,
    /// Same type, different content (or symlink target).
    Modified,
    /// The agent removed it (a directory is one entry; applying removes it recursively).
    Deleted,
    /// A deleted regular file and an added one with the same content.
    Renamed {
        /// The path the file had on the host.
        from: RelPath,
    },
    /// Only the mode changed (the execute bits of a file, the permission bits of a directory).
    Mode,
    /// The type changed (file → symlink, directory → file, ...).
    TypeChanged,
    /// The agent's entry is a fifo, socket or device: listed, never applied.
    Special,
}

impl ChangeKind {
    /// The lowercase name used in `--json` and listings.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Renamed { .. } => "renamed",
            ChangeKind::Mode => "mode",
            ChangeKind::TypeChanged => "type_changed",
            ChangeKind::Special => "special",
        }
    }
}

/// The type of one side's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (see [`Entry::target`]).
    Symlink,
    /// A fifo, socket or device.
    Other,
}

/// One side of a change (the host's entry, or the agent's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The type.
    pub kind: EntryType,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Size in bytes (the target's length for a symlink, 0 for a directory or special file).
    pub size: u64,
    /// A symlink's target (raw bytes).
    pub target: Option<Vec<u8>>,
}

impl Entry {
    /// The entry for `st` (`target` for a symlink).
    pub(crate) fn of(st: &Stat, target: Option<Vec<u8>>) -> Entry {
        let kind = match st.kind() {
            FsKind::File => EntryType::File,
            FsKind::Dir => EntryType::Dir,
            FsKind::Symlink => EntryType::Symlink,
            FsKind::Other => EntryType::Other,
        };
        let size = match kind {
            EntryType::File => st.size,
            EntryType::Symlink => target.as_ref().map_or(st.size, |t| t.len() as u64),
            EntryType::Dir | EntryType::Other => 0,
        };
        Entry {
            kind,
            mode: st.perm(),
            size,
            target: if kind == EntryType::Symlink {
                target
            } else {
                None
            },
        }
    }

    /// Whether this is a regular file with an execute bit.
    pub(crate) fn executable(&self) -> bool {
        self.kind == EntryType::File && self.mode & 0o111 != 0
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Entry", 5)?;
        st.serialize_field("type", &self.kind)?;
        st.serialize_field("mode", &self.mode)?;
        st.serialize_field("size", &self.size)?;
        if let Some(t) = &self.target {
            let (text, escaped) = escape(t);
            st.serialize_field("target", &text)?;
            st.serialize_field("target_escaped", &escaped)?;
        }
        st.end()
    }
}

/// One change between the host workspace (now) and the agent's version.
///
/// In JSON, paths are their escaped text (see [`RelPath::escaped`]) with a `*_escaped` flag:
/// `{"path": "a\\nb", "path_escaped": true, "kind": "renamed", "from": "x", ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Where (for a rename, the new path).
    pub path: RelPath,
    /// What kind of change.
    pub kind: ChangeKind,
    /// The host's entry now (`None` when absent or unreachable).
    pub old: Option<Entry>,
    /// The agent's entry (`None` for a deletion).
    pub new: Option<Entry>,
    /// Either side is a regular file with a NUL in its first 8 KiB or bytes that are not UTF-8.
    pub binary: bool,
    /// Why applying it deserves a look (the host may run or follow it), if it does.
    pub risk: Option<String>,
    /// Why it conflicts with a change on the host, if it does (apply refuses it unless forced
    /// or merged).
    pub conflict: Option<String>,
    /// Inside a git directory the host has: listed, never applied by this crate.
    pub git_internal: bool,
}

impl Change {
    /// Whether `select` (empty: everything) selects this change: a selected path is this path,
    /// the rename's source, or a directory above either.
    pub fn selected_by(&self, select: &[RelPath]) -> bool {
        select.is_empty()
            || select.iter().any(|s| {
                self.path.starts_with(s)
                    || matches!(&self.kind, ChangeKind::Renamed { from } if from.starts_with(s))
            })
    }

    /// The order of listings: risky first, then by path.
    pub(crate) fn order_key(&self) -> (bool, &RelPath) {
        (self.risk.is_none(), &self.path)
    }
}

impl Serialize for Change {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Change", 12)?;
        let (path, path_escaped) = self.path.escaped();
        st.serialize_field("path", &path)?;
        st.serialize_field("path_escaped", &path_escaped)?;
        st.serialize_field("kind", self.kind.name())?;
        if let ChangeKind::Renamed { from } = &self.kind {
            let (from, from_escaped): (Cow<'_, str>, bool) = from.escaped();
            st.serialize_field("from", &from)?;
            st.serialize_field("from_escaped", &from_escaped)?;
        }
        st.serialize_field("old", &self.old)?;
        st.serialize_field("new", &self.new)?;
        st.serialize_field("binary", &self.binary)?;
        st.serialize_field("risk", &self.risk)?;
        st.serialize_field("conflict", &self.conflict)?;
        st.serialize_field("git_internal", &self.git_internal)?;
        st.end()
    }
}

/// Sorts changes: risky first, then by path (bytes).
pub(crate) fn sort(changes: &mut [Change]) {
    changes.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
}

/// Where a `.git` component appears in `path` (indices of the components named `.git`).
pub(crate) fn git_components(path: &RelPath) -> Vec<usize> {
    path.components()
        .enumerate()
        .filter(|(_, c)| *c == b".git")
        .map(|(i, _)| i)
        .collect()
}

/// Why `change` is risky, if it is. `new_git` says the path lies in (or is) a `.git` the host
/// does not have; `deletes_repo` that a deleted or replaced host directory holds a `.git`.
pub(crate) fn risk(change: &Change, new_git: bool, deletes_repo: bool) -> Option<String> {
    if let Some(Entry {
        kind: EntryType::Symlink,
        target: Some(t),
        ..
    }) = &change.new
        && leads_out(&change.path, t)
    {
        return Some(format!(
            "symlink leading outside the workspace: {}",
            crate::relpath::quoted(t)
        ));
    }
    if let Some(why) = paddock_core::trust::host_runs(change.path.as_path()) {
        return Some(why.to_owned());
    }
    if new_git && change.new.is_some() {
        let pointer = change.path.file_name() == Some(b".git".as_slice())
            && change
                .new
                .as_ref()
                .is_some_and(|e| e.kind != EntryType::Dir);
        return Some(if pointer {
            ".git pointer (the host's git follows it)".to_owned()
        } else {
            "new git repository".to_owned()
        });
    }
    if deletes_repo {
        return Some("removes a directory holding a git repository".to_owned());
    }
    let gains_exec = change.new.as_ref().is_some_and(Entry::executable)
        && !change.old.as_ref().is_some_and(Entry::executable);
    if gains_exec {
        return Some("gains an execute bit".to_owned());
    }
    None
}

/// Whether a symlink at `at` with target `to` is absolute or leads out of the workspace.
pub(crate) fn leads_out(at: &RelPath, to: &[u8]) -> bool {
    if to.first() == Some(&b'/') || to.is_empty() {
        return true;
    }
    let mut depth = at.depth() as i64 - 1;
    for c in to.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
#[path = "change_tests.rs"]
mod tests;
