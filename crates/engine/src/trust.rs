//! After a run: what it changed that the host may run or load (kept for `paddock trust`), and
//! in review mode what waits for the user's review.

use std::path::{Path, PathBuf};

use paddock_core::{Dirs, ImageStore, SandboxSpec};

use crate::Reporter;

/// Shows (and keeps for `paddock trust`) what changed since `started` that the host may run.
/// `said`: whether to say what waits for review (after a run, not after each `exec`).
pub fn report(
    dirs: &Dirs,
    spec: &SandboxSpec,
    started: std::time::SystemTime,
    said: bool,
    report: &dyn Reporter,
) {
    // Every folder the sandbox could write: the workspace first (shown relative), then the
    // read-write mounts.
    // In review mode the workspace is unchanged: what the run wrote there waits in the review
    // layer, judged under the same names before it lands (and left as it is: it is not the
    // host's yet).
    let (workspace, mounts) = match spec.review {
        true => (None, spec.mounts.iter().collect::<Vec<_>>()),
        false => (Some(&spec.workspace), spec.mounts.iter().collect()),
    };
    let roots: Vec<PathBuf> = workspace
        .into_iter()
        .chain(mounts.iter().filter(|m| !m.read_only).map(|m| &m.host))
        .filter_map(|p| std::fs::canonicalize(p.as_path()).ok())
        .collect();
    let mut findings = Vec::new();
    if spec.review {
        let upper = paddock_core::review_dirs(&dirs.sandbox(&spec.name))
            .layer
            .join("upper");
        if upper.is_dir() {
            findings = paddock_core::trust::report(&[upper], started, false);
        }
    }
    findings.extend(paddock_core::trust::report(
        &roots,
        started,
        !spec.allow_git_config,
    ));
    let text = paddock_core::trust::render(&findings);
    if !findings.is_empty() {
        let what = if spec.review {
            "this run's changes include files your host may run or load; review them before you apply them"
        } else {
            "this run changed files your host may run or load; review them before you do"
        };
        report.note(&format!("{what}:\n{}", text.trim_end()));
    }
    if spec.review {
        after_review_run(dirs, spec, said, report);
    }
    let _ = std::fs::write(dirs.sandbox(&spec.name).join("trust-report.txt"), &text);
}

/// The host id of the root of `spec`'s sandbox (root mode): its image's.
pub fn image_base(dirs: &Dirs, spec: &SandboxSpec) -> u32 {
    ImageStore::new(dirs.images())
        .get(&spec.image)
        .map(|i| i.idmap.base)
        .unwrap_or(paddock_core::DEFAULT_ID_BASE)
}

/// Whether the review layer under `sandbox_dir` holds any change.
pub fn review_pending(sandbox_dir: &Path) -> bool {
    let upper = paddock_core::review_dirs(sandbox_dir).layer.join("upper");
    std::fs::read_dir(upper).is_ok_and(|mut d| d.next().is_some())
}

/// After a run in review mode: the run's changes are captured (what it added, for the review's
/// conflict checks) and the user is told what waits.
fn after_review_run(dirs: &Dirs, spec: &SandboxSpec, said: bool, report: &dyn Reporter) {
    let sandbox_dir = dirs.sandbox(&spec.name);
    if !said || !review_pending(&sandbox_dir) {
        return;
    }
    let Some(since) = paddock_supervisor::review::run_start(&sandbox_dir) else {
        return;
    };
    let base = image_base(dirs, spec);
    let args = ["capture", "--since", &since.to_string()].map(std::ffi::OsString::from);
    if let Err(e) = paddock_supervisor::review::run_helper(&sandbox_dir, spec, base, &args) {
        report.warn(&e.to_string());
    }
    report.note(&format!(
        "the changes wait for your review: `paddock diff {n}` shows them, `paddock apply {n}` writes them to the workspace, `paddock review {n}` goes through them",
        n = spec.name
    ));
}
