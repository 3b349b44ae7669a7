//! `paddock diff`, `apply`, `discard` and `review`: a review-mode sandbox's changes
//! ([`paddock_core::SandboxSpec::review`]). The CLI checks the input and the sandbox's state;
//! the review helper (`paddock __review`, [`crate::review_helper`], confined and unprivileged)
//! reads the layer and writes the workspace.

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use paddock_core::{LockError, SandboxLock, SandboxName, SandboxSpec};
pub(crate) use paddock_engine::trust::{image_base, review_pending as pending};
pub(crate) use paddock_review::quoted;

use crate::commands::open;
use crate::error::usage;

/// How `paddock diff` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Unified diffs.
    Patch,
    /// One line per change.
    Stat,
    /// Paths only.
    NameOnly,
    /// JSON.
    Json,
}

impl Format {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Format::Patch => "--patch",
            Format::Stat => "--stat",
            Format::NameOnly => "--name-only",
            Format::Json => "--json",
        }
    }
}

/// A review-mode sandbox, checked.
pub(crate) struct Target {
    pub spec: SandboxSpec,
    pub sandbox_dir: PathBuf,
    /// The host id of the sandbox's root (root mode).
    pub base: u32,
}

impl Target {
    pub(crate) fn find(name: &str) -> Result<Target> {
        let (dirs, store) = open()?;
        let n: SandboxName = name
            .parse()
            .map_err(|e: paddock_policy::NameError| usage(e.to_string()))?;
        let Some(rec) = store.get(&n)? else {
            return Err(usage(format!("no sandbox named {n}")));
        };
        if !rec.spec.review {
            return Err(usage(format!(
                "sandbox {n} is not in review mode: its changes reached the workspace as they were made (`paddock trust {n}` lists those your host may run); `paddock create --review` makes a review-mode sandbox"
            )));
        }
        let base = image_base(&dirs, &rec.spec);
        let sandbox_dir = dirs.sandbox(&n);
        Ok(Target {
            spec: rec.spec,
            sandbox_dir,
            base,
        })
    }

    /// Whether the layer holds anything (a sandbox that never ran has no layer).
    pub(crate) fn has_changes(&self) -> bool {
        pending(&self.sandbox_dir)
    }

    /// Runs the helper's `op` with `flags` and the selected paths; its exit status.
    pub(crate) fn helper(&self, op: &str, flags: &[&str], rel: &[OsString]) -> Result<i32> {
        let mut child = self.spawn(op, flags, rel, false)?;
        let status = child.wait().context("cannot wait for the review helper")?;
        Ok(status.code().unwrap_or(2))
    }

    /// Starts the helper (its stdout piped when `capture`).
    pub(crate) fn spawn(
        &self,
        op: &str,
        flags: &[&str],
        rel: &[OsString],
        capture: bool,
    ) -> Result<std::process::Child> {
        let since = paddock_supervisor::review::run_start(&self.sandbox_dir).unwrap_or(0);
        let mut args: Vec<OsString> = vec![
            op.into(),
            "--since".into(),
            since.to_string().into(),
            "--workspace".into(),
            self.spec.workspace.as_path().into(),
        ];
        args.extend(flags.iter().map(OsString::from));
        args.push("--".into());
        args.extend(rel.iter().cloned());
        let ws = self.spec.workspace.as_path();
        if !ws.is_dir() {
            return Err(usage(format!(
                "the workspace {} is missing or is not a directory (moved or deleted?); nothing was read or written: put it back, or `paddock discard {}` drops the changes",
                ws.display(),
                self.spec.name
            )));
        }
        paddock_confine::review::launch_with(&self.sandbox_dir, ws, self.base, &args, capture)
            .map_err(|e| usage(e.to_string()))
    }
}

/// The selected paths, relative to the workspace `ws`: an absolute one must lie in it; a
/// relative one is taken from the current directory when that lies in the workspace, else
/// from the workspace. Resolved lexically: nothing on the host is followed.
pub(crate) fn relative(paths: &[OsString], ws: &Path) -> Result<Vec<OsString>> {
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|c| std::fs::canonicalize(c).ok())
        .filter(|c| c.starts_with(ws));
    let mut out = Vec::new();
    for p in paths {
        let path = Path::new(p);
        let joined = if path.is_absolute() {
            path.to_owned()
        } else {
            cwd.as_deref().unwrap_or(ws).join(path)
        };
        let mut parts: Vec<&OsStr> = Vec::new();
        for c in joined.components() {
            match c {
                Component::Normal(n) => parts.push(n),
                Component::ParentDir => {
                    parts.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        let normal: PathBuf = std::iter::once(OsStr::new("/")).chain(parts).collect();
        let Ok(rel) = normal.strip_prefix(ws) else {
            return Err(usage(format!(
                "{} is outside the workspace {}",
                quoted(p.as_bytes()),
                ws.display()
            )));
        };
        if rel.as_os_str().is_empty() {
            // The workspace itself: everything.
            return Ok(Vec::new());
        }
        out.push(rel.as_os_str().to_owned());
    }
    Ok(out)
}

/// `paddock diff NAME [PATH…]`.
pub fn diff(name: &str, paths: &[OsString], format: Format) -> Result<i32> {
    let t = Target::find(name)?;
    let rel = relative(paths, t.spec.workspace.as_path())?;
    if !t.has_changes() {
        match format {
            Format::Json => println!("[]"),
            Format::NameOnly => {}
            _ => eprintln!("paddock: {} has no changes waiting for review", t.spec.name),
        }
        return Ok(0);
    }
    t.helper("diff", &[format.flag()], &rel)
}

/// The sandbox's lock when it is stopped (held while the layer changes); `None` when it runs.
pub(crate) fn lock_if_stopped(t: &Target) -> Result<Option<SandboxLock>> {
    match SandboxLock::try_acquire(&t.sandbox_dir.join("lock")) {
        Ok(l) => Ok(Some(l)),
        Err(LockError::Busy) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `paddock apply NAME [PATH…]`.
pub fn apply(name: &str, paths: &[OsString], force: bool, merge: bool) -> Result<i32> {
    let t = Target::find(name)?;
    let rel = relative(paths, t.spec.workspace.as_path())?;
    if !t.has_changes() {
        eprintln!("paddock: {} has no changes waiting for review", t.spec.name);
        return Ok(0);
    }
    apply_selected(&t, &rel, force, merge)
}

/// Applies `rel` (everything when empty) of `t`'s changes; the helper's status.
pub(crate) fn apply_selected(
    t: &Target,
    rel: &[OsString],
    force: bool,
    merge: bool,
) -> Result<i32> {
    // Stopped: the lock keeps it so until the layer is settled. Running: the files are
    // written, and the layer (which must not change under the overlay) keeps its copies,
    // which then equal the workspace and show no more.
    let lock = lock_if_stopped(t)?;
    let mut flags = Vec::new();
    if force {
        flags.push("--force");
    }
    if merge {
        flags.push("--merge");
    }
    if lock.is_some() {
        flags.push("--settle");
    }
    let code = t.helper("apply", &flags, rel)?;
    drop(lock);
    Ok(code)
}

/// `paddock discard NAME [PATH…]`.
pub fn discard(name: &str, paths: &[OsString], force: bool) -> Result<i32> {
    let t = Target::find(name)?;
    let rel = relative(paths, t.spec.workspace.as_path())?;
    if !t.has_changes() {
        eprintln!("paddock: {} has no changes waiting for review", t.spec.name);
        return Ok(0);
    }
    let Some(lock) = lock_if_stopped(&t)? else {
        return Err(usage(format!(
            "sandbox {n} is running, and its layer cannot change under it: `paddock stop {n}` first",
            n = t.spec.name
        )));
    };
    if rel.is_empty() && !force {
        if !std::io::stdin().is_terminal() {
            return Err(usage(format!(
                "discard would drop every change {} made; pass --force to do it, or name the paths",
                t.spec.name
            )));
        }
        eprint!(
            "drop every change {} made (`paddock diff {}` shows them)? [y/N] ",
            t.spec.name, t.spec.name
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(1);
        }
    }
    let code = t.helper("discard", &["--settle"], &rel)?;
    drop(lock);
    Ok(code)
}

/// Before `reset` or `rm` drops a review layer that holds changes: asks on a terminal (false:
/// the user said no); refuses elsewhere unless `force`.
pub(crate) fn confirm_drop(
    sandbox_dir: &Path,
    name: &SandboxName,
    force: bool,
    what: &str,
) -> Result<bool> {
    if force || !pending(sandbox_dir) {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(format!(
            "{name} holds changes waiting for review (`paddock diff {name}` shows them, `paddock apply {name}` writes them); `paddock {what} --force {name}` drops them"
        )));
    }
    eprint!("{name} holds changes waiting for review (`paddock diff {name}`); drop them? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `paddock review NAME`: the changes one by one in the terminal.
pub fn interactive(name: &str) -> Result<i32> {
    crate::review_tui::run(&Target::find(name)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_are_taken_lexically_inside_the_workspace() {
        let ws = Path::new("/w/proj");
        let rel = |p: &str| relative(&[OsString::from(p)], ws).map_err(|e| e.to_string());
        assert_eq!(
            rel("/w/proj/src/a.rs").unwrap(),
            vec![OsString::from("src/a.rs")]
        );
        assert_eq!(rel("/w/proj/src/../b").unwrap(), vec![OsString::from("b")]);
        assert_eq!(rel("/w/proj").unwrap(), Vec::<OsString>::new());
        assert!(
            rel("/w/other")
                .unwrap_err()
                .contains("outside the workspace")
        );
        assert!(rel("/w/proj/../../etc").unwrap_err().contains("outside"));
        assert!(rel("/w/projx/a").is_err());
    }

    #[test]
    fn odd_names_are_escaped() {
        assert_eq!(quoted(b"plain/name.rs"), "plain/name.rs");
        assert_eq!(quoted(b"a\nb"), "\"a\\nb\"");
        assert_eq!(quoted(b"bad\xffname"), "\"bad\\377name\"");
        assert_eq!(quoted(b"esc\x1b[31m"), "\"esc\\033[31m\"");
    }
}
