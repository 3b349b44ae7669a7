//! Sandboxes by name: finding one, its state as it is, and the list.

use std::path::Path;

use paddock_core::{Dirs, LockError, SandboxLock, SandboxName, SandboxRecord, SandboxState};
use serde::Serialize;

use crate::{Engine, EngineError, Result, invalid};

/// `s` as a sandbox name, or the error every operation gives for a bad one.
pub fn parse_name(s: &str) -> Result<SandboxName> {
    s.parse()
        .map_err(|e: paddock_core::NameError| invalid(e.to_string()))
}

/// Whether a supervisor holds the sandbox's lock (the truth about "running": a supervisor
/// killed with SIGKILL releases it, and its sandbox dies with it).
pub fn running(dirs: &Dirs, name: &SandboxName) -> bool {
    SandboxLock::is_held(&dirs.sandbox(name).join("lock"))
}

/// The state as it is: the lock decides between running and not.
pub fn state(dirs: &Dirs, rec: &SandboxRecord) -> SandboxState {
    match (running(dirs, &rec.spec.name), rec.state) {
        (true, _) => SandboxState::Running,
        (false, SandboxState::Created) => SandboxState::Created,
        (false, _) => SandboxState::Stopped,
    }
}

/// The sandbox's lock, for a change that needs it stopped; `None` when it has no directory
/// (it never ran).
pub fn lock(dir: &Path, name: &SandboxName) -> Result<Option<SandboxLock>> {
    if !dir.exists() {
        return Ok(None);
    }
    match SandboxLock::try_acquire(&dir.join("lock")) {
        Ok(l) => Ok(Some(l)),
        Err(LockError::Busy) => Err(EngineError::Conflict(format!(
            "sandbox {name} is running; stop it first (`paddock stop {name}`)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// One sandbox in a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// Its name.
    #[schema(value_type = String)]
    pub name: SandboxName,
    /// Its backend.
    pub backend: String,
    /// Its state now.
    #[schema(value_type = String)]
    pub state: SandboxState,
    /// Its image.
    pub image: String,
    /// The host folder it works on.
    #[schema(value_type = String)]
    pub workspace: paddock_policy::AbsPath,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// When it last started (Unix seconds).
    pub started_at: Option<i64>,
    /// Its command's last exit status.
    pub last_exit: Option<i64>,
    /// Its limits.
    #[schema(value_type = Object)]
    pub limits: paddock_policy::Limits,
    /// Seconds since it started, while it runs.
    pub uptime_seconds: Option<i64>,
    /// The limits its last run ran into.
    pub last_cause: Option<String>,
    /// The memory it uses now, while it runs.
    pub memory_bytes: Option<u64>,
    /// The CPU time it used in this run, while it runs.
    pub cpu_seconds: Option<f64>,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Engine {
    /// The record of sandbox `name`, or the error every operation gives for an unknown one.
    pub fn record(&self, name: &SandboxName) -> Result<SandboxRecord> {
        self.store
            .get(name)?
            .ok_or_else(|| EngineError::NotFound(format!("no sandbox named {name}")))
    }

    /// The sandboxes with their state as it is; with `all` the stopped ones too. Also how many
    /// were left out.
    pub fn list(&self, all: bool) -> Result<(Vec<Summary>, usize)> {
        let mut rows = Vec::new();
        let mut hidden = 0;
        let host = paddock_confine::cgroup::CgroupHost::detect();
        for r in self.store.list()? {
            let row = summary(&self.dirs, &host, r);
            if all || row.state == SandboxState::Running {
                rows.push(row);
            } else {
                hidden += 1;
            }
        }
        Ok((rows, hidden))
    }

    /// Sandbox `name` as [`Engine::list`] shows it.
    pub fn summary(&self, name: &SandboxName) -> Result<Summary> {
        let host = paddock_confine::cgroup::CgroupHost::detect();
        Ok(summary(&self.dirs, &host, self.record(name)?))
    }
}

fn summary(dirs: &Dirs, host: &paddock_confine::cgroup::CgroupHost, r: SandboxRecord) -> Summary {
    let state = state(dirs, &r);
    // What a running sandbox uses, from its host cgroups (a VM's: its VMM and device helpers).
    let (memory_bytes, cpu_seconds) = match state {
        SandboxState::Running => {
            paddock_confine::cgroup::SandboxCgroups::usage(host, r.spec.name.as_str())
        }
        _ => (None, None),
    };
    let uptime_seconds = match (state, r.started_at) {
        (SandboxState::Running, Some(t)) => Some(now().saturating_sub(t)),
        _ => None,
    };
    Summary {
        name: r.spec.name,
        backend: r.spec.backend,
        state,
        image: r.spec.image,
        workspace: r.spec.workspace,
        created_at: r.created_at,
        started_at: r.started_at,
        last_exit: r.last_exit,
        limits: r.spec.limits,
        uptime_seconds,
        last_cause: r.last_cause,
        memory_bytes,
        cpu_seconds,
    }
}
