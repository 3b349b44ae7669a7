//! Protection of the workspace's git repositories from the sandbox: the host's git runs the
//! hooks in `.git/hooks` and obeys `.git/config` (`core.hooksPath`, `core.fsmonitor`,
//! `core.sshCommand`, filters…), so an agent that could write them could run code on the host
//! the next time the user types `git commit`.
//!
//! Before a start, [`pins`] finds every repository in a shared folder (the folder's own and
//! nested ones, submodules' git directories included) and lists what a backend pins: the git
//! directory itself, bound onto itself so that it cannot be renamed, removed or replaced by a
//! symlink (a mount point cannot be), and its `hooks` and `config` bound read-only. A `.git`
//! *file* (a worktree or submodule pointer) is bound read-only so it cannot be pointed
//! elsewhere. The binds are made by the host side of each backend, so root inside the sandbox
//! cannot undo them.
//!
//! A repository the agent creates during a run cannot be pinned in advance; after the run
//! [`crate::trust::report`] removes the execute bits of hooks that appeared in one and trims its
//! config to harmless keys ([`crate::gitsafe`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::{fs, io};

use crate::backend::BackendError;
use crate::spec::SandboxSpec;
use crate::trust::SKIP;
/// How deep below a shared folder repositories are looked for.
const MAX_DEPTH: usize = 24;
/// How many directories are read at most (a bound on start time in huge trees).
const MAX_DIRS: usize = 200_000;

/// One path a backend binds over itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Absolute host path (below the shared folder; no symlink on the way).
    pub path: PathBuf,
    /// Read-only (hooks, config, `.git` files) or only pinned in place (git directories).
    pub read_only: bool,
    /// A directory (else a regular file).
    pub is_dir: bool,
}

/// Why the repositories of a folder cannot be protected.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// a protected path is a symlink (binding it would protect whatever it points to)
    #[error(
        "{0} is a symlink, so Paddock cannot make it read-only in the sandbox; make it a real directory or file, or pass --dangerously-allow-git-config"
    )]
    Symlink(PathBuf),
    /// the folder could not be searched
    #[error("cannot protect the git repositories under {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GuardError + '_ {
    move |source| GuardError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What to pin under `folder` (a canonical directory), parents before children.
///
/// A missing `hooks` directory or `config` file is created first (empty, owned like the git
/// directory), since an absent one could otherwise be created from inside.
pub fn pins(folder: &Path) -> Result<Vec<Pin>, GuardError> {
    let mut out = Vec::new();
    let mut stack = vec![(folder.to_owned(), 0usize)];
    let mut read = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        read += 1;
        if read > MAX_DIRS {
            break;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut subdirs = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let path = dir.join(&name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if name == ".git" {
                if meta.is_dir() {
                    git_dir(&path, &meta, &mut out)?;
                } else if meta.is_file() {
                    out.push(Pin {
                        path,
                        read_only: true,
                        is_dir: false,
                    });
                }
                continue;
            }
            if meta.is_dir()
                && depth < MAX_DEPTH
                && !SKIP.iter().any(|s| name.as_encoded_bytes() == s.as_bytes())
            {
                subdirs.push(path);
            }
        }
        stack.extend(subdirs.into_iter().map(|d| (d, depth + 1)));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Pins one git directory (if it is one) and the git directories of its submodules.
fn git_dir(dir: &Path, meta: &fs::Metadata, out: &mut Vec<Pin>) -> Result<(), GuardError> {
    if !dir.join("HEAD").exists() {
        return Ok(());
    }
    out.push(Pin {
        path: dir.to_owned(),
        read_only: false,
        is_dir: true,
    });
    for (name, is_dir) in [("hooks", true), ("config", false)] {
        let p = dir.join(name);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err(GuardError::Symlink(p)),
            Ok(m) if m.is_dir() == is_dir => {}
            Ok(_) => {
                return Err(GuardError::Io {
                    path: p,
                    source: io::Error::other("unexpected file type"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if is_dir {
                    fs::create_dir(&p).map_err(io_err(&p))?;
                } else {
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&p)
                        .map_err(io_err(&p))?;
                }
                std::os::unix::fs::lchown(&p, Some(meta.uid()), Some(meta.gid()))
                    .map_err(io_err(&p))?;
            }
            Err(e) => return Err(io_err(&p)(e)),
        }
        out.push(Pin {
            path: p,
            read_only: true,
            is_dir,
        });
    }
    // Submodules keep their git directories under `modules/` (nested for nested submodules).
    let mut stack = vec![dir.join("modules")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if !m.is_dir() {
                continue;
            }
            if p.join("HEAD").exists() {
                git_dir(&p, &m, out)?;
            } else {
                stack.push(p);
            }
        }
    }
    Ok(())
}

/// The pins of every read-write shared folder of `spec` (none when the spec allows git
/// config; none for a review-mode workspace), each with its path inside the sandbox. A folder that cannot be protected stops the
/// start (fail closed).
pub fn for_spec(spec: &SandboxSpec) -> Result<Vec<(Pin, String)>, BackendError> {
    if spec.allow_git_config {
        return Ok(Vec::new());
    }
    // A review-mode workspace needs none: the sandbox writes only its review layer, and the
    // review never applies a git directory's files to the host ([`crate::review_dirs`]).
    let workspace = (!spec.review).then_some((&spec.workspace, &spec.workspace));
    let folders = workspace.into_iter().chain(
        spec.mounts
            .iter()
            .filter(|m| !m.read_only)
            .map(|m| (&m.host, &m.sandbox)),
    );
    let mut out = Vec::new();
    for (host, target) in folders {
        if !host.as_path().is_dir() {
            continue;
        }
        let found = pins(host.as_path()).map_err(|e| BackendError::Layer {
            layer: "git protection".into(),
            message: e.to_string(),
        })?;
        for p in found {
            let Ok(rel) = p.path.strip_prefix(host.as_path()) else {
                continue;
            };
            let inside = Path::new(target.as_str()).join(rel);
            out.push((p, inside.to_string_lossy().into_owned()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_repositories_and_creates_what_is_missing() {
        let t = tempfile::tempdir().unwrap();
        let w = t.path();
        for d in [
            ".git/hooks",
            ".git/modules/lib/hooks",
            "sub/deep/.git",
            "node_modules/x/.git",
            "notgit/.git",
        ] {
            fs::create_dir_all(w.join(d)).unwrap();
        }
        for f in [
            ".git/HEAD",
            ".git/config",
            ".git/modules/lib/HEAD",
            "sub/deep/.git/HEAD",
            "node_modules/x/.git/HEAD",
        ] {
            fs::write(w.join(f), "").unwrap();
        }
        fs::create_dir_all(w.join("lib")).unwrap();
        fs::write(w.join("lib/.git"), "gitdir: ../.git/modules/lib\n").unwrap();
        let got: Vec<(String, bool)> = pins(w)
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.path.strip_prefix(w).unwrap().display().to_string(),
                    p.read_only,
                )
            })
            .collect();
        let want: Vec<(String, bool)> = [
            (".git", false),
            (".git/config", true),
            (".git/hooks", true),
            (".git/modules/lib", false),
            (".git/modules/lib/config", true),
            (".git/modules/lib/hooks", true),
            ("lib/.git", true),
            ("sub/deep/.git", false),
            ("sub/deep/.git/config", true),
            ("sub/deep/.git/hooks", true),
        ]
        .iter()
        .map(|(p, r)| (p.to_string(), *r))
        .collect();
        assert_eq!(got, want);
        // Made so they exist to be bound.
        assert!(w.join("sub/deep/.git/hooks").is_dir());
        assert!(w.join(".git/modules/lib/config").is_file());
    }

    #[test]
    fn a_symlinked_hooks_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let w = t.path();
        fs::create_dir_all(w.join(".git")).unwrap();
        fs::create_dir_all(w.join("githooks")).unwrap();
        fs::write(w.join(".git/HEAD"), "").unwrap();
        std::os::unix::fs::symlink("../githooks", w.join(".git/hooks")).unwrap();
        assert!(matches!(pins(w), Err(GuardError::Symlink(_))));
    }
}
