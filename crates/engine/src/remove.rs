//! Removing a sandbox: its layer, its records and rules, what a killed supervisor left on the
//! host, and its own secrets.

use std::path::Path;

use paddock_core::SandboxName;

use crate::sandboxes::{lock, running};
use crate::{Context, Engine, EngineError, Reporter, Result};

/// How a removal goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `rm`, `prune`, a start that failed: the tree is gone when the call returns, and what a
    /// killed supervisor may have left on the host (cgroups, socket directories) is swept.
    Full,
    /// After a `--rm` run that its backend ended: the backend removed its own cgroups and
    /// directories, and `rm -rf` deletes the renamed tree in the background (the caller waits
    /// for the command's status, not for the disk: a layer with installed packages takes
    /// seconds to delete).
    AfterRun,
}

/// What a removal may do to a sandbox that is not idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delete {
    /// Stop it first if it runs.
    pub stop: bool,
    /// Drop the changes that wait for review in its layer.
    pub drop_pending: bool,
}

impl Engine {
    /// Removes sandbox `name` as the user asked (`rm`): refused while it runs or while changes
    /// wait for review, unless `how` allows it.
    pub fn delete(&self, name: &SandboxName, how: Delete, report: &dyn Reporter) -> Result<()> {
        self.record(name)?;
        if !how.drop_pending && crate::trust::review_pending(&self.dirs.sandbox(name)) {
            return Err(EngineError::Conflict(format!(
                "sandbox {name} holds changes that wait for review; `paddock apply {name}` or `paddock discard {name}` first, or force the removal to drop them"
            )));
        }
        if how.stop {
            self.stop(name, 0)?;
        } else if running(&self.dirs, name) {
            return Err(EngineError::Conflict(format!(
                "sandbox {name} is running; `paddock stop {name}` first, or `paddock rm -f {name}` stops and removes it"
            )));
        }
        self.remove(name, Removal::Full)?;
        self.forget_secrets(name, report);
        Ok(())
    }

    /// Removes sandbox `name`'s layer, records and rules (it must not run: its lock is taken).
    pub fn remove(&self, name: &SandboxName, how: Removal) -> Result<()> {
        let dirs = &self.dirs;
        let dir = dirs.sandbox(name);
        let _lock = lock(&dir, name)?;
        // Rename first so a half-removed layer is never started again, and the name is free at
        // once. `paddock prune` removes renamed trees whose removal was interrupted.
        let doomed = dirs
            .sandboxes()
            .join(format!(".rm-{name}-{}", std::process::id()));
        if dir.exists() {
            std::fs::rename(&dir, &doomed)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        let detached = how == Removal::AfterRun && remove_in_background(&doomed);
        // What a killed supervisor may have left is its backend's to know: the recorded one's, or,
        // where the record names none this build has, every backend's.
        let backends = match how {
            Removal::Full => self
                .store
                .get(name)
                .ok()
                .flatten()
                .and_then(|r| paddock_supervisor::backend(&r.spec.backend).ok())
                .map_or_else(paddock_supervisor::backends, |b| vec![b]),
            Removal::AfterRun => Vec::new(),
        };
        // The host's leftovers and (unless detached) the tree go while the rows are cleared.
        let rest = (how == Removal::Full || !detached).then(|| {
            let doomed = doomed.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                if how == Removal::Full {
                    for b in &backends {
                        b.remove_leftovers(&name);
                    }
                    paddock_confine::cgroup::SandboxCgroups::remove_leftovers(
                        &paddock_confine::cgroup::CgroupHost::detect(),
                        name.as_str(),
                    );
                }
                if detached {
                    return Ok(());
                }
                paddock_confine::user::remove_tree(&doomed)
            })
        });
        let rows = self.store.remove_sandbox(name);
        let removed = rest.map_or(Ok(()), |t| {
            t.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the removal thread panicked")))
        });
        rows?;
        removed.with_context(|| format!("cannot remove {}", doomed.display()))
    }

    /// Removes the secrets stored for sandbox `name`, which was just removed: a later sandbox
    /// of this name starts without them. A store that cannot be read is said, not fatal (the
    /// sandbox is gone already).
    pub fn forget_secrets(&self, name: &SandboxName, report: &dyn Reporter) {
        match paddock_secrets::SecretStore::at_default(self.dirs.home())
            .remove_sandbox(name.as_str())
        {
            Ok(0) => {}
            Ok(n) => report.note(&format!("removed {name}'s {n} secret(s)")),
            Err(e) => report.warn(&format!(
                "{name}'s own secrets could not be removed ({e}); `paddock secret ls` shows them, `paddock secret rm NAME --sandbox {name}` removes one"
            )),
        }
    }

    /// Removes sandbox `name` (stopping it first) if it exists, and its secrets; quiet.
    pub fn remove_quietly(&self, name: &SandboxName) -> Result<()> {
        if self.store.get(name)?.is_some() {
            self.stop(name, 0)?;
            self.remove(name, Removal::Full)?;
            self.forget_secrets(name, &crate::Quiet);
        }
        Ok(())
    }
}

/// Starts `rm -rf` on `tree` in a process group of its own (the terminal's Ctrl-C does not
/// reach it), with nothing of this process but /dev/null as its standard streams (a pipe
/// reading this command's output ends when this command does). False when it cannot start.
fn remove_in_background(tree: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("rm");
    cmd.args(["-rf", "--one-file-system", "--"])
        .arg(tree)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if !paddock_confine::user::is_user_mode() {
        return cmd.spawn().is_ok();
    }
    // The layer holds files of the sandbox's root and other users: the user's subordinate ids.
    paddock_confine::user::current_user_ids()
        .ok()
        .and_then(|ids| paddock_confine::user::spawn_mapped(&mut cmd, &ids).ok())
        .is_some()
}
