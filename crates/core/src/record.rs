//! A sandbox as the state store remembers it (the store itself is paddock-store).

use serde::Serialize;

use crate::spec::SandboxSpec;

/// Lifecycle state as recorded. A `Running` record whose supervisor is gone is reported as
/// stopped by the caller that checks the sandbox lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Created, never started.
    Created,
    /// A supervisor is running it.
    Running,
    /// Not running.
    Stopped,
}

impl SandboxState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Created => "created",
            SandboxState::Running => "running",
            SandboxState::Stopped => "stopped",
        }
    }

    /// Reads the stored spelling; anything unknown is `Stopped`.
    pub fn from_stored(s: &str) -> SandboxState {
        match s {
            "created" => SandboxState::Created,
            "running" => SandboxState::Running,
            _ => SandboxState::Stopped,
        }
    }
}

/// One sandbox as stored.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxRecord {
    /// Settings.
    pub spec: SandboxSpec,
    /// Recorded state.
    pub state: SandboxState,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last start (Unix seconds).
    pub started_at: Option<i64>,
    /// Supervisor pid while running.
    pub supervisor_pid: Option<i64>,
    /// Exit status of the last command.
    pub last_exit: Option<i64>,
    /// The limits the last run ran into (memory, processes), if any.
    pub last_cause: Option<String>,
}
