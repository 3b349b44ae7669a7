//! A sandbox's workspace files for front ends that do not share the host's file system (the
//! API, the MCP tools): paths relative to the workspace root, symlinks never followed
//! (`paddock_review::files`).

use paddock_core::SandboxName;
use paddock_review::RelPath;
pub use paddock_review::files::{FileInfo, FilesError, MAX_LIST, Workspace};

use crate::{Engine, EngineError, Result, invalid};

impl Engine {
    /// The workspace of sandbox `name`, for its files. A review-mode sandbox is refused: what
    /// its command sees is the workspace with its pending changes over it, not the host's.
    pub fn workspace_files(&self, name: &SandboxName) -> Result<Workspace> {
        let spec = self.record(name)?.spec;
        if spec.review {
            return Err(EngineError::Conflict(format!(
                "sandbox {name} is in review mode: its changes wait in its layer (`paddock diff {name}` shows them); files are served for sandboxes that write the workspace directly"
            )));
        }
        Workspace::open(spec.workspace.as_path()).map_err(files_error)
    }
}

/// A path a request gives: relative to the workspace root, no `..`, no absolute path.
pub fn workspace_path(path: &str) -> Result<RelPath> {
    RelPath::new(path.as_bytes().to_vec()).map_err(|e| invalid(format!("path: {e}")))
}

/// A files error as the engine's kinds: nothing there is `not_found`, a directory that is not
/// empty a `conflict`, a refused path (a symlink on the way, the wrong kind, too large) `invalid`.
pub fn files_error(e: FilesError) -> EngineError {
    match e {
        FilesError::NotFound(_) => EngineError::NotFound(e.to_string()),
        FilesError::NotEmpty(_) => EngineError::Conflict(e.to_string()),
        FilesError::Io { .. } => EngineError::Failed {
            what: e.to_string(),
            source: None,
        },
        _ => EngineError::Invalid(e.to_string()),
    }
}
