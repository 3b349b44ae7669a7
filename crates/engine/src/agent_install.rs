//! Installing agents into the agent cache, in a sandbox of their own.

use std::io::Read;
use std::path::Path;

use paddock_core::SandboxName;
use paddock_policy::AbsPath;

use crate::agents::{self, Agent, Installed};
use crate::create::RunRequest;
use crate::run::{Internal, Mode};
use crate::{Context, Engine, EngineError, Reporter, Result};

/// The sandbox an agent runs in for a workspace when no name is given: one per workspace and
/// agent, named after both (`claude-myproject-3fa2c1`), so its layer and the agent's state
/// inside are there next time.
pub fn sandbox_name(agent: &str, workspace: &AbsPath) -> SandboxName {
    let base = crate::create::workspace_label(workspace, 24);
    // Over the whole path: two workspaces with the same last component differ.
    let hash = paddock_core::stable_hash(workspace.to_string().as_bytes());
    let name = match base.is_empty() {
        true => format!("{agent}-{:06x}", hash & 0xff_ffff),
        false => format!("{agent}-{base}-{:06x}", hash & 0xff_ffff),
    };
    name.parse()
        .unwrap_or_else(|_| crate::create::fallback_name())
}

/// The name of the sandbox that installs `agent` (kept after a failed install, so that its
/// audit log says what was denied).
fn install_sandbox(agent: &str) -> String {
    format!("agent-install-{agent}")
}

/// The agent's installation, installed now when there is none (or `update`). One install of an
/// agent at a time: others wait for it and use its result.
impl Engine {
    pub fn ensure_installed(
        &self,
        agent: &Agent,
        backend: &str,
        update: bool,
        report: &dyn Reporter,
    ) -> Result<Installed> {
        let cache = agents::cache_dir();
        let own = cache.join(&agent.name);
        std::fs::create_dir_all(&own)
            .with_context(|| format!("cannot create the agent cache {}", own.display()))?;
        let lock = std::fs::File::create(cache.join(format!("{}.lock", agent.name)))
            .with_context(|| format!("cannot lock the agent cache {}", cache.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .context("cannot lock the agent cache")?;
        if !update && let Some(i) = agents::installed(&cache, &agent.name) {
            return Ok(i);
        }
        let package = agent.package.as_deref().unwrap_or_default();
        let node = agent.node.as_deref().unwrap_or("22");
        report.note(&format!(
        "installing {} once for every sandbox: Node.js {node} and {package}, from the npm registry, in a sandbox of its own (later runs start it at once; `paddock agent update {}` updates it)",
        agent.name, agent.name
    ));
        let build = own.join(format!(".build-{}", std::process::id()));
        if build.exists() {
            paddock_confine::user::remove_tree(&build)
                .with_context(|| format!("cannot clear {}", build.display()))?;
        }
        std::fs::create_dir_all(&build)
            .with_context(|| format!("cannot create {}", build.display()))?;
        let result = self.install_into(agent, backend, &build, report);
        if result.is_err() {
            let _ = paddock_confine::user::remove_tree(&build);
        }
        let mut installed = result?;
        // In place: the build directory becomes the version's, then `current` names it.
        let dir = own.join(format!("{}-{}", installed.version, installed.installed_at));
        std::fs::rename(&build, &dir)
            .with_context(|| format!("cannot move the installation to {}", dir.display()))?;
        let file = dir.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let tmp = own.join(".current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&file, &tmp)
            .and_then(|()| std::fs::rename(&tmp, own.join("current")))
            .context("cannot switch to the new installation")?;
        installed.dir = dir;
        forget_old(&own, &installed.dir);
        report.note(&format!(
            "installed {} {} (Node.js {})",
            installed.package, installed.version, installed.node
        ));
        Ok(installed)
    }

    /// Runs the install sandbox over `build` and reads what it installed.
    fn install_into(
        &self,
        agent: &Agent,
        backend: &str,
        build: &Path,
        report: &dyn Reporter,
    ) -> Result<Installed> {
        let sandbox = install_sandbox(&agent.name);
        let script = agents::install_script(agent, &sandbox).ok_or_else(|| {
            EngineError::failed(format!("agent {} has nothing to install", agent.name))
        })?;
        // A failed earlier install's sandbox goes first; its layer holds nothing of value.
        let name = crate::sandboxes::parse_name(&sandbox)?;
        let _ = self.remove_quietly(&name);
        // The ns backend is the quickest where it runs; the files are the same on every backend.
        let backend = match paddock_supervisor::select("ns") {
            Ok((b, _)) if paddock_core::Backend::probe(b.as_ref()).usable() => "ns",
            _ => backend,
        };
        let args = RunRequest {
            name: Some(sandbox.clone()),
            backend: Some(backend.to_owned()),
            workspace: Some(build.to_owned()),
            command: vec!["bash".into(), "-c".into(), script],
            ..RunRequest::default()
        };
        let ran = self.run_with(
            &args,
            Mode::Attached {
                tty: report.terminal(),
            },
            Internal { quiet: true },
            report,
        )?;
        let status = ran.outcome.map_or(0, |o| o.exit.status());
        if status != 0 {
            return Err(EngineError::failed(format!(
                "{} could not be installed (the reason is above); the install sandbox {sandbox} is kept: `paddock policy log --sandbox {sandbox}` shows its requests, `paddock rm {sandbox}` removes it",
                agent.name
            )));
        }
        let _ = self.remove_quietly(&name);
        // Written inside the sandbox: read at most a little, and only a plausible version.
        let mut text = String::new();
        std::fs::File::open(build.join(".installed"))
            .and_then(|f| f.take(4096).read_to_string(&mut text))
            .context("the install left no record of what it installed")?;
        #[derive(serde::Deserialize)]
        struct Record {
            version: String,
            node: String,
        }
        let record: Record =
            serde_json::from_str(text.trim()).context("the install's record is not readable")?;
        if !agents::plausible_version(&record.version) || !agents::plausible_version(&record.node) {
            return Err(EngineError::failed(
                "the install's record names no plausible version",
            ));
        }
        let installed = Installed {
            agent: agent.name.clone(),
            package: agent.package.clone().unwrap_or_default(),
            version: record.version,
            node: record.node,
            installed_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            dir: build.to_owned(),
        };
        std::fs::write(
            build.join("agent.json"),
            serde_json::to_string_pretty(&installed)?,
        )
        .context("cannot record the installation")?;
        Ok(installed)
    }
}

/// Removes installations other than `keep` and the one before it (a sandbox started before an
/// update may still be running the previous one).
fn forget_old(own: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p != keep)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    dirs.sort();
    dirs.pop();
    for (_, d) in dirs {
        let _ = paddock_confine::user::remove_tree(&d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_sandbox_is_named_after_its_workspace() {
        let ws = |p: &str| AbsPath::try_from(std::path::PathBuf::from(p)).unwrap();
        let a = sandbox_name("claude", &ws("/home/u/My Project"));
        let b = sandbox_name("claude", &ws("/srv/My Project"));
        assert!(a.as_str().starts_with("claude-my-project-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, sandbox_name("claude", &ws("/home/u/My Project")));
        assert!(
            sandbox_name("codex", &ws("/"))
                .as_str()
                .starts_with("codex-")
        );
        assert!(
            sandbox_name("gemini", &ws(&format!("/x/{}", "long".repeat(30))))
                .as_str()
                .len()
                <= 63
        );
    }
}
