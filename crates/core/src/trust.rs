//! The workspace trust report: what a run changed in the workspace that the host may later run
//! (CI configuration, build files, editor tasks, git hooks and config, agent settings,
//! executable bits, symlinks leading out of the workspace).
//!
//! One walk after the run, by change time: a file's ctime is set by the kernel on every change
//! and cannot be set back from inside, unlike its mtime. The walk never follows a symlink (the
//! workspace is the sandbox's to write).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

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

/// Removes the execute bits of the regular file `rel` below `workspace`, reached without
/// following any symlink (the workspace is the sandbox's to write).
fn disarm(workspace: &Path, rel: &Path) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = crate::gitsafe::open_beneath(
        workspace,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & 0o7666))?;
    Ok(())
}

/// What in `workspace` changed since `since` that the host may run. With `defuse`, what changed
/// in git directories (only possible in a repository the run created: the others' hooks and
/// config are read-only inside) is made safe for the host's git: hooks lose their execute bits,
/// configs keep only harmless keys ([`crate::gitsafe`]), a symlinked `hooks` or `config` is set
/// aside.
pub fn report(workspace: &Path, since: SystemTime, defuse: bool) -> Vec<Finding> {
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(workspace.join(&rel)) else {
            continue;
        };
        // Read whole first: defusing renames entries of this directory.
        let entries: Vec<fs::DirEntry> = entries.flatten().collect();
        let in_git_dir = crate::gitsafe::is_git_dir(workspace, &rel);
        for e in entries {
            let name = e.file_name();
            let child = rel.join(&name);
            let Ok(meta) = fs::symlink_metadata(workspace.join(&child)) else {
                continue;
            };
            let changed =
                i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()) >= since;
            let ft = meta.file_type();
            if ft.is_dir() {
                let n = name.to_string_lossy();
                let objects = n == "objects" && rel.file_name().is_some_and(|p| p == ".git");
                if !SKIP.contains(&n.as_ref()) && !objects {
                    stack.push(child);
                }
                continue;
            }
            if !changed {
                continue;
            }
            let shown = child.display().to_string();
            // git never runs its samples (`git init` makes them executable).
            if child.extension().is_some_and(|e| e == "sample")
                && child
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|p| p == "hooks")
            {
                continue;
            }
            if defuse
                && in_git_dir
                && let Some(why) = defuse_git(workspace, &child, ft.is_symlink())
            {
                out.push(Finding { path: shown, why });
                continue;
            }
            if ft.is_symlink() {
                if let Ok(to) = fs::read_link(workspace.join(&child))
                    && leads_out(&child, &to)
                {
                    out.push(Finding {
                        path: shown,
                        why: format!("symlink leading out of the workspace (-> {})", to.display()),
                    });
                }
                continue;
            }
            let hook = crate::gitguard::is_hook(&child)
                || (rel.file_name().is_some_and(|p| p == "hooks")
                    && rel
                        .parent()
                        .is_some_and(|g| crate::gitsafe::is_git_dir(workspace, g)));
            if defuse && ft.is_file() && meta.mode() & 0o111 != 0 && hook {
                let why = match disarm(workspace, &child) {
                    Ok(()) => "git hook made during the run: its execute bits were removed so the host's git skips it (read it before `chmod +x`)".to_owned(),
                    Err(e) => format!("git hook made during the run (could not remove its execute bits: {e}); do not run git here before you have read it"),
                };
                out.push(Finding { path: shown, why });
            } else if let Some(why) = host_runs(&child) {
                out.push(Finding {
                    path: shown,
                    why: why.into(),
                });
            } else if ft.is_file() && meta.mode() & 0o111 != 0 {
                out.push(Finding {
                    path: shown,
                    why: "executable, changed or made executable".into(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Makes `rel`, a changed entry of a git directory, safe for the host's git when it is its
/// `config`, `config.worktree` or a symlinked `hooks`; says what was done.
fn defuse_git(workspace: &Path, rel: &Path, symlink: bool) -> Option<String> {
    use crate::gitsafe::{Defused, REVIEW_SUFFIX, defuse_config, set_aside};
    let name = rel.file_name()?.to_str()?;
    let failed = |e: std::io::Error| {
        format!(
            "git {name} made during the run could not be made safe ({e}); do not run git in that repository before you have read it"
        )
    };
    match name {
        "config" | "config.worktree" => Some(match defuse_config(workspace, rel) {
            Ok(Defused::Clean) => {
                "git config made or changed during the run: checked, nothing in it runs code"
                    .to_owned()
            }
            Ok(Defused::Trimmed { dropped }) => format!(
                "git config made during the run: set aside as {name}{REVIEW_SUFFIX}; the repository keeps only its format, remotes, branches and identity (dropped: {})",
                dropped.join(", ")
            ),
            Ok(Defused::SetAside(why)) => format!(
                "git config made during the run ({why}): set aside whole as {name}{REVIEW_SUFFIX}"
            ),
            Err(e) => failed(e),
        }),
        "hooks" if symlink => Some(match set_aside(workspace, rel) {
            Ok(()) => format!(
                "git hooks directory made a symlink during the run: set aside as hooks{REVIEW_SUFFIX}"
            ),
            Err(e) => failed(e),
        }),
        _ => None,
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
        let r = report(w, start, false);
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
        let r = report(w, start, true);
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[0].why.contains("execute bits were removed"), "{r:?}");
        assert_eq!(mode(".git/hooks/post-checkout"), 0o664);
        assert_eq!(mode("run.sh"), 0o755);
    }
}
