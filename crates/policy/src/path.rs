//! Absolute, normalised paths.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// the path is not absolute
    #[error("{0:?} is not an absolute path")]
    NotAbsolute(PathBuf),
    /// the path has a `..` component
    #[error("{0:?} contains `..`")]
    ParentComponent(PathBuf),
    /// the path is not valid UTF-8 or contains a NUL or a colon-free requirement was broken
    #[error("{0:?} contains a character Paddock cannot carry (NUL or non-UTF-8)")]
    BadCharacter(PathBuf),
}

/// An absolute path with no `.` or `..` components and no trailing slash.
///
/// Lexical only: it does not say whether the path exists or whether a component is a symlink.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "PathBuf", into = "PathBuf")]
pub struct AbsPath(PathBuf);

impl AbsPath {
    /// The path as a `Path`.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The path as UTF-8 (always valid by construction).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// Components below `/`, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.as_str().split('/').filter(|c| !c.is_empty())
    }

    /// True when `self` is `other` or lies beneath it (component-wise, so `/w/proj-evil` is not
    /// beneath `/w/proj`).
    pub fn starts_with(&self, other: &AbsPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.0 == Path::new("/")
    }
}

impl TryFrom<PathBuf> for AbsPath {
    type Error = PathError;

    fn try_from(p: PathBuf) -> Result<Self, PathError> {
        let Some(s) = p.to_str() else {
            return Err(PathError::BadCharacter(p));
        };
        if s.contains('\0') {
            return Err(PathError::BadCharacter(p));
        }
        if !p.is_absolute() {
            return Err(PathError::NotAbsolute(p));
        }
        let mut out = PathBuf::from("/");
        for c in p.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => return Err(PathError::ParentComponent(p)),
                Component::Normal(n) => out.push(n),
                Component::Prefix(_) => return Err(PathError::NotAbsolute(p)),
            }
        }
        Ok(AbsPath(out))
    }
}

impl TryFrom<&str> for AbsPath {
    type Error = PathError;

    fn try_from(s: &str) -> Result<Self, PathError> {
        AbsPath::try_from(PathBuf::from(s))
    }
}

impl From<AbsPath> for PathBuf {
    fn from(p: AbsPath) -> PathBuf {
        p.0
    }
}

impl AsRef<Path> for AbsPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("/", Ok("/")),
            ("/a/b/", Ok("/a/b")),
            ("/a/./b", Ok("/a/b")),
            ("//a//b", Ok("/a/b")),
            ("a/b", Err(())),
            ("/a/../b", Err(())),
            ("", Err(())),
        ];
        for (input, want) in cases {
            let got = AbsPath::try_from(*input)
                .map(|p| p.as_str().to_owned())
                .map_err(|_| ());
            assert_eq!(got, want.map(str::to_owned), "{input}");
        }
    }

    #[test]
    fn prefix_is_component_wise() {
        let proj = AbsPath::try_from("/w/proj").unwrap();
        assert!(AbsPath::try_from("/w/proj/x").unwrap().starts_with(&proj));
        assert!(
            !AbsPath::try_from("/w/proj-evil")
                .unwrap()
                .starts_with(&proj)
        );
    }
}
