//! The crate's error type.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::relpath::{PathError, RelPath, quoted};

/// What went wrong. Messages are lowercase without a trailing period; causes are chained with
/// `#[source]`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The workspace is not the directory this sandbox started reviewing.
    #[error(
        "the workspace {} is missing or was replaced since this sandbox started reviewing it; move it back, or discard the changes",
        show_path(.0)
    )]
    WorkspaceReplaced(PathBuf),
    /// A path argument or a name read from disk is not a valid workspace path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A filesystem operation failed (`what` says which, on what).
    #[error("{what}")]
    Io {
        /// The operation and its object, e.g. "cannot read upper/a/b".
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing one file into the workspace failed (disk full, say): its temporary file was
    /// removed, the files applied before it stay applied.
    #[error("cannot write {path} into the workspace (files applied before it stay applied)")]
    Write {
        /// The file being written.
        path: RelPath,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A state file (meta.json, seen.json) cannot be parsed.
    #[error("the review state file {} is damaged", show_path(.file))]
    State {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The upper layer has a metadata-only copy: the overlay was mounted with metacopy on.
    #[error(
        "{0} in the upper layer is a metadata-only copy: review mode needs the overlay mounted with metacopy=off"
    )]
    Metacopy(RelPath),
    /// The sandbox's git `HEAD` cannot be read.
    #[error(transparent)]
    Head(#[from] crate::gitview::HeadError),
    /// The export stream cannot be written (its reader went away).
    #[error("cannot write the export stream")]
    Export(#[source] io::Error),
    /// A tree is deeper than this crate walks.
    #[error("{0} is nested more than {max} directories deep", max = crate::fsys::MAX_DEPTH)]
    TooDeep(RelPath),
}

impl Error {
    /// An [`Error::Io`] with its context.
    pub(crate) fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// A host path for a message (escaped like workspace paths).
pub(crate) fn show_path(p: &std::path::Path) -> String {
    quoted(p.as_os_str().as_bytes())
}
