//! The workspace trust report: what a run changed in the workspace that the host may later run
//! (CI configuration, build files, editor tasks, git hooks and config, agent settings,
//! executable bits, symlinks leading out of the workspace).
//!
//! One walk after the run, by change time: a file's ctime is set by the kernel on every change
//! and cannot be set back from inside, unlike its mtime. The walk never follows a symlink (the
//! workspace is the sandbox's to write).

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::gitsweep::{Found, Sweep, ctime, looks_like_git_dir};

/// Directories not walked (here, and for repositories by [`crate::gitguard`]): large,
/// generated, and not run by the host as such.
pub(crate) const SKIP: &[&str] = &["node_modules", "target", ".venv", "__pycache__"];

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Path relative to the workspace.
    pub path: String,
    /// Why it matters.
    pub why: String,
}

/// Whether `rel` (relative to the workspace) is a file the host may run or load as
/// configuration.
pub fn host_runs(rel: &Path) -> Option<&'static str> {
    let parts: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let name = parts.last()?.as_str();
    let under = |dir: &str| parts.iter().rev().skip(1).any(|p| p == dir);
    let parent = parts.len().checked_sub(2).map(|i| parts[i].as_str());
    if under(".git") && (parent == Some("hooks") || name == "config") {
        return Some("git hook or config (the host's git runs or obeys it)");
    }
    if parent == Some("workflows") && under(".github") {
        return Some("CI workflow");
    }
    if under(".circleci") || under(".buildkite") {
        return Some("CI configuration");
    }
    if under(".claude") || under(".codex") || under(".gemini") || under(".cursor") {
        return Some("agent settings (an agent on the host loads them)");
    }
    match name {
        ".gitlab-ci.yml"
        | "Jenkinsfile"
        | "azure-pipelines.yml"
        | ".travis.yml"
        | "bitbucket-pipelines.yml" => Some("CI configuration"),
        "Makefile" | "makefile" | "GNUmakefile" | "justfile" | "Justfile" | "Taskfile.yml"
        | "build.rs" | "CMakeLists.txt" | "meson.build" => Some("build file (runs on build)"),
        "package.json" => Some("package.json (npm scripts run on install and test)"),
        "pyproject.toml" | "setup.py" | "setup.cfg" | "noxfile.py" | "tox.ini" | "conftest.py" => {
            Some("Python build or test configuration (runs code)")
        }
        ".envrc" => Some(".envrc (direnv runs it on cd)"),
        ".mcp.json" | "CLAUDE.md" | "AGENTS.md" | "GEMINI.md" => {
            Some("agent instructions or tools (an agent on the host reads them)")
        }
        ".gitattributes" | ".gitmodules" => Some("git attributes or submodules (filters, URLs)"),
        "tasks.json" | "settings.json" | "launch.json" if parent == Some(".vscode") => {
            Some("editor tasks or settings (the editor runs them)")
        }
        _ => None,
    }
}

/// Whether the symlink at `rel` with target `to` leads out of the workspace.
fn leads_out(rel: &Path, to: &Path) -> bool {
    if to.is_absolute() {
        return true;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in to.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// What in the read-write shared folders `roots` (canonical host paths, the workspace first)
/// changed since `since` that the host may run. The walk reports by name and by execute bit,
/// outside the directories in [`SKIP`] and outside git directories; it also finds every git
/// directory and `.git` pointer in all of them, skipped folders included, and
/// [`crate::gitsweep`] checks what git would run from each (with `defuse`, it disarms what the
/// run made or changed there). Paths in the workspace are shown relative to it, others in full.
pub fn report(roots: &[PathBuf], since: SystemTime, defuse: bool) -> Vec<Finding> {
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let mut out = Vec::new();
    let mut found = Found::default();
    for root in roots {
        walk(roots, root, since, &mut found, &mut out);
    }
    let mut sweep = Sweep::new(roots, since, defuse);
    sweep.run(&found);
    // What the sweep says of a path (a hook, say) replaces what the walk said of it.
    out.retain(|f| !sweep.out.iter().any(|g| g.path == f.path));
    out.append(&mut sweep.out);
    out.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.why.cmp(&b.why)));
    out.dedup();
    out
}

/// Walks one shared folder: classifies what changed (outside skipped folders and git
/// directories) and collects git directories and `.git` pointers everywhere.
fn walk(roots: &[PathBuf], root: &Path, since: i128, found: &mut Found, out: &mut Vec<Finding>) {
    use std::rc::Rc;

    use rustix::fs::{FileType, Mode, OFlags, RawDir};
    let open = |at: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr| {
        rustix::fs::openat(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let Ok(top) = open(rustix::fs::CWD, root.as_os_str()) else {
        return;
    };
    // Pending directories: (the parent's descriptor, its name there, its path, only looking
    // for git directories). Each is opened relative to its parent, never by its whole path,
    // and read straight with getdents: a directory costs four system calls, however deep.
    let mut stack: Vec<(Option<Rc<OwnedFd>>, std::ffi::OsString, PathBuf, bool)> =
        vec![(None, std::ffi::OsString::new(), root.to_owned(), false)];
    let mut top = Some(top);
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    while let Some((parent, name, dir, quiet)) = stack.pop() {
        let fd = match (&parent, top.take()) {
            (None, Some(t)) => t,
            (Some(p), _) => match open(p.as_fd(), &name) {
                Ok(fd) => fd,
                Err(_) => continue,
            },
            (None, None) => continue,
        };
        // The entry's type comes with the directory listing: a skipped folder costs no stat
        // per file.
        let mut entries: Vec<(std::ffi::OsString, FileType)> = Vec::new();
        let mut listing = RawDir::new(&fd, buf.spare_capacity_mut());
        while let Some(Ok(e)) = listing.next() {
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            let n = std::ffi::OsStr::from_bytes(n).to_owned();
            let ft = match e.file_type() {
                FileType::Unknown => {
                    rustix::fs::statat(&fd, &n, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                        .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode))
                }
                t => t,
            };
            entries.push((n, ft));
        }
        let has = |n: &str| entries.iter().any(|(name, _)| name == n);
        let git = looks_like_git_dir(dir.file_name(), has);
        if git {
            found.git_dirs.push(dir.clone());
        }
        let fd = Rc::new(fd);
        for (name, ft) in entries {
            let child = dir.join(&name);
            if name == ".git" && ft != FileType::Directory {
                found.pointers.push(child);
                continue;
            }
            if ft == FileType::Directory {
                // A git directory's objects hold no git directory git would use.
                if git && name == "objects" {
                    continue;
                }
                let skip = SKIP.iter().any(|s| name.as_encoded_bytes() == s.as_bytes());
                stack.push((Some(fd.clone()), name, child, quiet || git || skip));
                continue;
            }
            if quiet || git {
                continue;
            }
            classify(roots, root, &child, since, out);
        }
    }
}

/// Reports the file or symlink `p` when it changed since `since` and the host may run it (or,
/// for a symlink with such a name, when where it leads changed).
fn classify(roots: &[PathBuf], root: &Path, p: &Path, since: i128, out: &mut Vec<Finding>) {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return;
    };
    let changed = ctime(&meta) >= since;
    let shown = Sweep::show(roots, p);
    // In the workspace, by its path there; in another shared folder, by its path from that
    // folder's parent, so that the folder's own name counts (`.claude/settings.json` in a
    // shared `~/.claude`, which an agent on the host loads).
    let base = match roots.first() {
        Some(ws) if ws != root => root.parent().unwrap_or(root),
        _ => root,
    };
    let Ok(rel) = p.strip_prefix(base) else {
        return;
    };
    if meta.file_type().is_symlink() {
        let Ok(to) = fs::read_link(p) else {
            return;
        };
        if let Some(why) = host_runs(rel) {
            // What it leads to counts as much as the link: a skipped folder never hides it.
            let target_changed = fs::metadata(p).is_ok_and(|m| ctime(&m) >= since);
            if changed || target_changed {
                out.push(Finding {
                    path: shown,
                    why: format!(
                        "{why}; a symlink (-> {}), it or its target changed",
                        to.display()
                    ),
                });
            }
        } else if changed && leads_out(rel, &to) {
            out.push(Finding {
                path: shown,
                why: format!(
                    "symlink leading out of the {} (-> {})",
                    if roots.first().is_some_and(|w| w == root) {
                        "workspace"
                    } else {
                        "shared folder"
                    },
                    to.display()
                ),
            });
        }
        return;
    }
    if !changed {
        return;
    }
    if let Some(why) = host_runs(rel) {
        out.push(Finding {
            path: shown,
            why: why.into(),
        });
    } else if meta.is_file() && meta.mode() & 0o111 != 0 {
        out.push(Finding {
            path: shown,
            why: "executable, changed or made executable".into(),
        });
    }
}

/// The report as text, one line per finding.
pub fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("  {}: {}\n", f.path, f.why))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for (p, yes) in [
            (".git/hooks/pre-commit", true),
            ("sub/.git/config", true),
            (".git/HEAD", false),
            (".github/workflows/ci.yml", true),
            ("Makefile", true),
            ("src/package.json", true),
            (".vscode/tasks.json", true),
            ("notes/tasks.json", false),
            (".claude/settings.json", true),
            (".mcp.json", true),
            ("README.md", false),
            ("src/main.rs", false),
        ] {
            assert_eq!(host_runs(Path::new(p)).is_some(), yes, "{p}");
        }
        assert!(leads_out(Path::new("a/l"), Path::new("/etc/passwd")));
        assert!(leads_out(Path::new("a/l"), Path::new("../../x")));
        assert!(!leads_out(Path::new("a/l"), Path::new("../b")));
        assert!(!leads_out(Path::new("l"), Path::new("b/c")));
    }

    #[test]
    fn report_lists_only_what_changed() {
        let t = tempfile::tempdir().unwrap();
        let w = t.path();
        fs::write(w.join("Makefile"), "all:\n").unwrap();
        fs::write(w.join("old.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            w.join("old.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let start = SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::create_dir_all(w.join(".git/hooks")).unwrap();
        fs::write(w.join(".git/hooks/pre-commit"), "evil").unwrap();
        fs::write(w.join("notes.txt"), "harmless").unwrap();
        fs::write(w.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            w.join("run.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", w.join("p")).unwrap();
        std::os::unix::fs::symlink("notes.txt", w.join("inside")).unwrap();
        fs::create_dir_all(w.join("node_modules/x")).unwrap();
        fs::write(w.join("node_modules/x/package.json"), "{}").unwrap();
        fs::write(w.join(".git/hooks/post-checkout"), "#!/bin/sh\nevil\n").unwrap();
        fs::set_permissions(
            w.join(".git/hooks/post-checkout"),
            std::os::unix::fs::PermissionsExt::from_mode(0o775),
        )
        .unwrap();
        let roots = [w.to_owned()];
        let r = report(&roots, start, false);
        let paths: Vec<&str> = r.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".git/hooks/post-checkout",
                ".git/hooks/pre-commit",
                "p",
                "run.sh"
            ],
            "{r:?}"
        );
        let mode = |p: &str| fs::metadata(w.join(p)).unwrap().mode() & 0o777;
        assert_eq!(mode(".git/hooks/post-checkout"), 0o775);
        // Disarmed: the hook stays, without execute bits; nothing else changes.
        let r = report(&roots, start, true);
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[0].why.contains("execute bits were removed"), "{r:?}");
        assert_eq!(mode(".git/hooks/post-checkout"), 0o664);
        assert_eq!(mode("run.sh"), 0o755);
    }

    /// A shared agent directory (`--agent-config`): what the agent changes there is judged by
    /// the directory's own name too.
    #[test]
    fn a_shared_agent_directory_is_judged_by_its_name() {
        let t = tempfile::tempdir().unwrap();
        let (ws, claude) = (t.path().join("proj"), t.path().join(".claude"));
        fs::create_dir_all(&ws).unwrap();
        fs::create_dir_all(&claude).unwrap();
        let start = SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(claude.join("settings.json"), r#"{"hooks": {}}"#).unwrap();
        fs::write(ws.join("settings.json"), "{}").unwrap();
        let r = report(&[ws.clone(), claude.clone()], start, false);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            r[0].path,
            claude.join("settings.json").display().to_string()
        );
        assert!(r[0].why.contains("agent settings"), "{r:?}");
    }
}
