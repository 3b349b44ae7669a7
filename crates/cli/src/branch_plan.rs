//! What a commit of the accepted changes holds (`paddock apply --branch`): the tree of the
//! host's `HEAD`, as `git ls-tree -r -z` lists it, with each change applied in the agent's
//! version. Pure functions on byte paths; the git commands are [`crate::branch`]'s.
//!
//! - Added files and symlinks go in (mode `100644`, `100755` with an execute bit, `120000` for
//!   a symlink, whose blob is its target); modified ones replace what `HEAD` has.
//! - A deletion removes the path and, for a directory, every entry under it; a rename both.
//! - A change to a path `HEAD` does not track (an ignored or untracked file of the host's) is
//!   left out, as is a rename from one: the branch holds what the repository tracks and what
//!   the agent added, not the host's private files. A change inside a submodule, or inside a
//!   `.git` directory, is left out too.

use std::collections::BTreeMap;

use paddock_review::RelPath;
use paddock_review::export::{Kind, New};

use crate::review::quoted;

/// One entry of a tree listing: its mode (`100644`, `040000` is never listed with `-r`) and
/// object id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `100644`, `100755`, `120000` or `160000`.
    pub mode: String,
    /// The object id (hex).
    pub id: String,
}

/// A whole tree, path (raw bytes) to entry.
pub(crate) type Tree = BTreeMap<Vec<u8>, Entry>;

/// Parses `git ls-tree -r -z --full-tree` output (`MODE SP TYPE SP ID TAB PATH NUL`).
pub(crate) fn parse_ls_tree(out: &[u8]) -> Option<Tree> {
    let mut tree = Tree::new();
    for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let tab = rec.iter().position(|b| *b == b'\t')?;
        let (head, path) = (&rec[..tab], &rec[tab + 1..]);
        let head = std::str::from_utf8(head).ok()?;
        let mut f = head.split(' ');
        let (mode, _kind, id) = (f.next()?, f.next()?, f.next()?);
        if path.is_empty() || mode.len() != 6 || !paddock_review::export::is_object_id(id) {
            return None;
        }
        tree.insert(
            path.to_vec(),
            Entry {
                mode: mode.to_owned(),
                id: id.to_owned(),
            },
        );
    }
    Some(tree)
}

/// One change as the review helper exported it; `blob` indexes its content's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incoming {
    pub kind: Kind,
    pub path: RelPath,
    pub from: Option<RelPath>,
    pub new: New,
    pub blob: Option<usize>,
}

/// One edit of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit {
    /// Remove the path and everything under it.
    Remove(Vec<u8>),
    /// Put a blob there (replacing a directory or a file in the way).
    Put {
        path: Vec<u8>,
        mode: &'static str,
        blob: usize,
    },
}

/// What the commit will do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Removals first, then puts (see [`apply`]).
    pub edits: Vec<Edit>,
    /// What it holds, one `LETTER path` line per change.
    pub listed: Vec<String>,
    /// Changes left out, and why.
    pub skipped: Vec<(RelPath, String)>,
}

/// Entries of `tree` at `path` or under it.
fn under<'t>(tree: &'t Tree, path: &[u8]) -> impl Iterator<Item = &'t Vec<u8>> + 't {
    let mut prefix = path.to_vec();
    prefix.push(b'/');
    let exact = tree.get_key_value(path).map(|(k, _)| k);
    exact.into_iter().chain(
        tree.range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(&prefix)),
    )
}

fn tracked(tree: &Tree, path: &RelPath) -> bool {
    under(tree, path.as_bytes()).next().is_some()
}

/// The submodule (gitlink) of `tree` that `path` lies inside, if any.
fn in_submodule(tree: &Tree, path: &RelPath) -> Option<String> {
    let mut at = path.parent();
    while let Some(p) = at.filter(|p| !p.is_root()) {
        if tree.get(p.as_bytes()).is_some_and(|e| e.mode == "160000") {
            return Some(quoted(p.as_bytes()));
        }
        at = p.parent();
    }
    None
}

fn in_git_dir(path: &RelPath) -> bool {
    path.components().any(|c| c.eq_ignore_ascii_case(b".git"))
}

/// The plan for `incoming` on `base` (see the module docs).
pub(crate) fn plan(base: &Tree, incoming: &[Incoming]) -> Plan {
    let mut plan = Plan::default();
    let mut puts = Vec::new();
    for c in incoming {
        let shown = match &c.from {
            Some(f) => format!("{} -> {}", quoted(f.as_bytes()), quoted(c.path.as_bytes())),
            None => quoted(c.path.as_bytes()),
        };
        if c.new == New::Dir && c.kind == Kind::Mode {
            continue; // git records no directory modes
        }
        let paths = std::iter::once(&c.path).chain(c.from.as_ref());
        let reason = if paths.clone().any(in_git_dir) {
            Some("inside a git directory: not committed".to_owned())
        } else if let Some(sub) = paths.clone().find_map(|p| in_submodule(base, p)) {
            Some(format!("inside the submodule {sub}: commit it there"))
        } else {
            match (c.kind, &c.from) {
                (Kind::Added, _) => None,
                (Kind::Renamed, Some(from)) if !tracked(base, from) => Some(format!(
                    "renamed from {}, which the repository does not track: left out",
                    quoted(from.as_bytes())
                )),
                (Kind::Deleted, _) if !tracked(base, &c.path) => {
                    Some("not tracked by the repository: nothing to remove".to_owned())
                }
                (Kind::Modified | Kind::Mode | Kind::TypeChanged, _) if !tracked(base, &c.path) => {
                    Some("not tracked by the repository: left out".to_owned())
                }
                _ => None,
            }
        };
        if let Some(r) = reason {
            plan.skipped.push((c.path.clone(), r));
            continue;
        }
        let before = plan.edits.len() + puts.len();
        if let Some(from) = &c.from {
            plan.edits.push(Edit::Remove(from.as_bytes().to_vec()));
        }
        let mode = match c.new {
            New::File { exec: false } => Some("100644"),
            New::File { exec: true } => Some("100755"),
            New::Symlink => Some("120000"),
            New::Absent | New::Dir => None,
        };
        match (mode, c.blob) {
            (Some(mode), Some(blob)) => puts.push(Edit::Put {
                path: c.path.as_bytes().to_vec(),
                mode,
                blob,
            }),
            // A deletion, or a directory where HEAD has a file (its files are changes of their
            // own); a directory's own mode is nothing to git.
            _ if c.new == New::Absent || base.contains_key(c.path.as_bytes()) => {
                plan.edits.push(Edit::Remove(c.path.as_bytes().to_vec()));
            }
            _ => {}
        }
        if plan.edits.len() + puts.len() > before {
            plan.listed.push(format!("{} {shown}", c.kind.letter()));
        }
    }
    plan.edits.extend(puts);
    plan
}

/// `base` with `edits` applied; `ids` gives each blob's object id.
pub(crate) fn apply(base: &Tree, edits: &[Edit], ids: &BTreeMap<usize, String>) -> Tree {
    let mut tree = base.clone();
    let remove_under = |tree: &mut Tree, path: &[u8]| {
        let gone: Vec<Vec<u8>> = under(tree, path).cloned().collect();
        for g in gone {
            tree.remove(&g);
        }
    };
    for e in edits {
        match e {
            Edit::Remove(path) => remove_under(&mut tree, path),
            Edit::Put { path, mode, blob } => {
                let Some(id) = ids.get(blob) else { continue };
                remove_under(&mut tree, path);
                // A file where a parent directory of this one goes.
                for (i, b) in path.iter().enumerate() {
                    if *b == b'/' {
                        tree.remove(&path[..i]);
                    }
                }
                tree.insert(
                    path.clone(),
                    Entry {
                        mode: (*mode).to_owned(),
                        id: id.clone(),
                    },
                );
            }
        }
    }
    tree
}

/// `tree` as `git update-index -z --index-info` input (`MODE SP ID TAB PATH NUL`).
pub(crate) fn index_info(tree: &Tree) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, e) in tree {
        out.extend_from_slice(format!("{} {}\t", e.mode, e.id).as_bytes());
        out.extend_from_slice(path);
        out.push(0);
    }
    out
}

#[cfg(test)]
#[path = "branch_plan_tests.rs"]
mod tests;
