//! Review mode around a run ([`paddock_core::SandboxSpec::review`]): before the sandbox starts,
//! the changes earlier runs left in its review layer are judged against the host as it is now
//! (the review helper's `capture`, `paddock_confine::review`), and the start is recorded, so
//! that what this run adds is judged against the host as it was from its start.

use std::ffi::OsString;
use std::path::Path;

use paddock_core::{BackendError, SandboxSpec};

/// The file, in the sandbox's `review` directory, whose change time is when its last run
/// started.
const RUN_START: &str = "run-start";

fn layer(message: String) -> BackendError {
    BackendError::Layer {
        layer: "review layer".into(),
        message,
    }
}

/// When the sandbox whose directory is `sandbox_dir` last started in review mode, in
/// nanoseconds since the epoch (none before its first start): the change time of a file
/// written at the start, so on the filesystems' own clock, which the host's later changes are
/// stamped with (the system clock runs up to a tick ahead of it).
pub fn run_start(sandbox_dir: &Path) -> Option<i128> {
    use std::os::unix::fs::MetadataExt;
    let dir = paddock_core::review_dirs(sandbox_dir);
    let m = std::fs::metadata(dir.root.join(RUN_START)).ok()?;
    Some(i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()))
}

/// Runs the review helper with `args` for `spec`'s sandbox and waits for it; its output goes
/// to this process's streams.
pub fn run_helper(
    sandbox_dir: &Path,
    spec: &SandboxSpec,
    base: u32,
    args: &[OsString],
) -> Result<std::process::ExitStatus, BackendError> {
    let mut child =
        paddock_confine::review::launch(sandbox_dir, spec.workspace.as_path(), base, args)
            .map_err(|e| layer(e.to_string()))?;
    child
        .wait()
        .map_err(|e| layer(format!("cannot wait for the review helper: {e}")))
}

/// Before a start: records, for every change already in the layer, how the host looked
/// (conflicts are judged against it), then this start's time.
pub fn begin(sandbox_dir: &Path, spec: &SandboxSpec, base: u32) -> Result<(), BackendError> {
    let dirs = paddock_core::review_dirs(sandbox_dir);
    if let Some(since) = run_start(sandbox_dir)
        && dirs.layer.join("upper").is_dir()
        && dirs.state.is_dir()
    {
        let args = ["capture", "--since", &since.to_string()].map(OsString::from);
        let status = run_helper(sandbox_dir, spec, base, &args)?;
        if !status.success() {
            return Err(layer(format!(
                "cannot record how the workspace looks for the changes under review ({status}); `paddock diff {}` says more",
                spec.name
            )));
        }
    }
    let review = &dirs.root;
    std::fs::create_dir_all(review)
        .map_err(|e| layer(format!("cannot create {}: {e}", review.display())))?;
    // Its change time is the start (see [`run_start`]); made anew, so that it is this one's.
    let file = review.join(RUN_START);
    let tmp = review.join(format!("{RUN_START}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, b"")
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| layer(format!("cannot write {}: {e}", file.display())))
}
