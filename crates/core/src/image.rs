//! The image store: read-only root filesystems that sandboxes layer over.
//!
//! `images/NAME/rootfs` is the tree, `images/NAME/image.json` says what it is. An image appears
//! only when complete: builds happen in a temporary directory renamed into place at the end.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::idmap::IdMap;

/// The image used when none is named.
pub const DEFAULT_IMAGE: &str = "default";

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    /// the name breaks the naming rule
    #[error("invalid image name {0:?}: use 1-48 characters from a-z, 0-9, '-' and '_'")]
    BadName(String),
    /// no such image
    #[error("no image named {0}; build it with `paddock image build {0}`")]
    NotFound(String),
    /// the image's metadata does not parse
    #[error(
        "image {name} is damaged ({path:?} unreadable); rebuild it with `paddock image build --force {name}`"
    )]
    Damaged {
        /// Image name.
        name: String,
        /// The metadata file.
        path: PathBuf,
    },
    /// filesystem error
    #[error("image store {path:?}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What an image is, as recorded in `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// Image name.
    pub name: String,
    /// Distribution suite (e.g. `bookworm`).
    pub suite: String,
    /// Packages asked for.
    pub packages: Vec<String>,
    /// Build time (Unix seconds).
    pub created_at: i64,
    /// Size on disk in bytes.
    pub size: u64,
    /// The id mapping the tree's ownership was shifted to.
    pub idmap: IdMap,
    /// Format version of the tree layout.
    pub version: u32,
    /// It holds Docker's engine and the settings a sandbox's own engine needs (`--docker`).
    #[serde(default)]
    pub docker: bool,
}

/// The image directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

/// Checks an image name.
pub fn check_name(name: &str) -> Result<(), ImageStoreError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(ImageStoreError::BadName(name.to_owned()))
    }
}

impl ImageStore {
    /// The store at `dir` (usually `Dirs::images()`).
    pub fn new(dir: PathBuf) -> ImageStore {
        ImageStore { dir }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory of image `name` (whether or not it exists).
    pub fn path(&self, name: &str) -> Result<PathBuf, ImageStoreError> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    /// The root filesystem of image `name`.
    pub fn rootfs(&self, name: &str) -> Result<PathBuf, ImageStoreError> {
        Ok(self.path(name)?.join("rootfs"))
    }

    /// Reads image `name`'s metadata.
    pub fn get(&self, name: &str) -> Result<ImageInfo, ImageStoreError> {
        let meta = self.path(name)?.join("image.json");
        let text = match fs::read_to_string(&meta) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageStoreError::NotFound(name.to_owned()));
            }
            Err(source) => return Err(ImageStoreError::Io { path: meta, source }),
        };
        serde_json::from_str(&text).map_err(|_| ImageStoreError::Damaged {
            name: name.to_owned(),
            path: meta,
        })
    }

    /// True when image `name` is complete.
    pub fn exists(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    /// All complete images.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageStoreError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => {
                return Err(ImageStoreError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name(&name).is_ok()
                && let Ok(info) = self.get(&name)
            {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes image `name` with `remove_tree` (which removes symlinks inside, never follows
    /// them, and in user mode can remove files of the user's subordinate ids).
    pub fn remove(
        &self,
        name: &str,
        remove_tree: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<(), ImageStoreError> {
        let path = self.path(name)?;
        if !path.exists() {
            return Err(ImageStoreError::NotFound(name.to_owned()));
        }
        // Rename first so a half-deleted image is never mistaken for a complete one.
        let doomed = self.dir.join(format!(".rm-{name}-{}", std::process::id()));
        fs::rename(&path, &doomed).map_err(|source| ImageStoreError::Io {
            path: path.clone(),
            source,
        })?;
        remove_tree(&doomed).map_err(|source| ImageStoreError::Io {
            path: doomed,
            source,
        })
    }
}
