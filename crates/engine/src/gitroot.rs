//! Running from a subdirectory of a git work tree: git inside works only when the repository's
//! root (with its `.git`) is shared, so by default the root is the workspace and the command
//! starts in the subdirectory. An explicit `-w SUBDIR` shares exactly that, with a note.
//!
//! The repository is found by looking for `.git` in the directory's ancestors, never by running
//! the host's git there (the workspace's config could make it run a program). The root is
//! shared only where it may be shared at all ([`paddock_core::shares`]) and is not the user's
//! home directory (a home kept in git would otherwise hand the agent the whole home); its
//! `.git/hooks` and `.git/config` are read-only inside like any shared repository's
//! ([`paddock_core::gitguard`]).

use std::path::{Path, PathBuf};

/// Where the command runs and what is shared, when the directory lies below a repository's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Share the repository's root; start the command in the directory.
    Root {
        /// The work tree's root.
        root: PathBuf,
    },
    /// Share only the directory, and say why git inside will not see the repository.
    Only {
        /// The note.
        note: String,
    },
}

/// The root of the git work tree that `dir` (a resolved path) lies strictly inside: the nearest
/// ancestor holding a `.git` directory (not followed through a symlink). `None` when there is
/// none, when `dir` is the root itself, or when the nearest `.git` is a file (a linked worktree
/// or a submodule, whose git directory lies elsewhere: sharing its root alone would not help).
pub fn repo_root_above(dir: &Path) -> Option<PathBuf> {
    if has_git(dir).is_some() {
        return None;
    }
    for a in dir.ancestors().skip(1) {
        match has_git(a) {
            Some(true) => return Some(a.to_owned()),
            Some(false) => return None,
            None => {}
        }
    }
    None
}

/// `Some(true)` when `dir/.git` is a directory, `Some(false)` for any other kind, `None` when
/// there is none.
fn has_git(dir: &Path) -> Option<bool> {
    std::fs::symlink_metadata(dir.join(".git"))
        .ok()
        .map(|m| m.is_dir())
}

/// What to share for `dir` (resolved), below the work tree `root`: the root unless `-w` named
/// the directory (`explicit`), the root is the user's `home` (or above it), or the share rules
/// refuse it (`refused`: why).
pub fn choose(
    dir: &Path,
    root: &Path,
    explicit: bool,
    home: Option<&Path>,
    refused: Option<String>,
) -> Choice {
    let only = |why: String| Choice::Only {
        note: format!(
            "{} lies inside the git repository {}, which is not shared: git inside will not see it ({why})",
            dir.display(),
            root.display()
        ),
    };
    if explicit {
        return only(format!(
            "run paddock from {} without -w to share the repository and start there, or pass -w {}",
            dir.display(),
            root.display()
        ));
    }
    if home.is_some_and(|h| h.starts_with(root)) {
        return only(format!(
            "its root {} is your home directory or above it; pass -w {} to share it anyway",
            root.display(),
            root.display()
        ));
    }
    match refused {
        Some(why) => only(why),
        None => Choice::Root {
            root: root.to_owned(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_found_above_a_subdirectory_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("repo");
        let sub = root.join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        assert_eq!(repo_root_above(&sub), Some(root.clone()));
        assert_eq!(repo_root_above(&root.join("a")), Some(root.clone()));
        assert_eq!(repo_root_above(&root), None, "the root itself");
        assert_eq!(repo_root_above(t.path()), None, "outside");
        // A nested repository is its own root; a .git file (worktree, submodule) stops the
        // search.
        std::fs::create_dir(root.join("a/.git")).unwrap();
        assert_eq!(repo_root_above(&sub), Some(root.join("a")));
        std::fs::remove_dir(root.join("a/.git")).unwrap();
        std::fs::write(root.join("a/.git"), "gitdir: ../.git/modules/a\n").unwrap();
        assert_eq!(repo_root_above(&sub), None);
        // A .git symlink is not followed.
        std::fs::remove_file(root.join("a/.git")).unwrap();
        std::os::unix::fs::symlink(root.join(".git"), root.join("a/.git")).unwrap();
        assert_eq!(repo_root_above(&sub), None);
    }

    #[test]
    fn the_root_is_shared_unless_named_home_or_refused() {
        let (dir, root) = (Path::new("/home/u/proj/sub"), Path::new("/home/u/proj"));
        let home = Some(Path::new("/home/u"));
        assert_eq!(
            choose(dir, root, false, home, None),
            Choice::Root {
                root: root.to_owned()
            }
        );
        let note = |c: Choice| match c {
            Choice::Only { note } => note,
            Choice::Root { .. } => panic!("the root was chosen"),
        };
        assert_eq!(
            note(choose(dir, root, true, home, None)),
            "/home/u/proj/sub lies inside the git repository /home/u/proj, which is not shared: git inside will not see it (run paddock from /home/u/proj/sub without -w to share the repository and start there, or pass -w /home/u/proj)"
        );
        let in_home = note(choose(dir, Path::new("/home/u"), false, home, None));
        assert!(
            in_home.ends_with("(its root /home/u is your home directory or above it; pass -w /home/u to share it anyway)"),
            "{in_home}"
        );
        let refused = note(choose(dir, root, false, home, Some("refusing: x".into())));
        assert!(refused.ends_with("(refusing: x)"), "{refused}");
    }
}
