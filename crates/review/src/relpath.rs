//! Paths relative to the workspace ([`RelPath`]), how a user's argument becomes one, and how a
//! path of arbitrary bytes is shown (git-style C quoting).
//!
//! A [`RelPath`] is raw bytes (Linux names need not be UTF-8) joined with `/`: never absolute,
//! no empty, `.` or `..` component, no NUL. The empty path is the workspace root; it is valid
//! only as a selection ("everything") and never names a change.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a path is not a valid [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is absolute.
    #[error("{0} is absolute, not relative to the workspace")]
    Absolute(String),
    /// The path has an empty, `.` or `..` component, or a NUL byte.
    #[error("{path} is not a plain relative path ({why})")]
    Invalid {
        /// The path as given (escaped).
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A user's argument names something outside the workspace.
    #[error("{path} is outside the workspace {workspace}")]
    Outside {
        /// The argument as given (escaped).
        path: String,
        /// The workspace (escaped).
        workspace: String,
    },
    /// The workspace given to [`RelPath::from_user`] is not absolute.
    #[error("the workspace {0} is not an absolute path")]
    RelativeWorkspace(String),
}

/// A validated path relative to the workspace root (raw bytes; see the module docs).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The workspace root itself (as a selection: everything).
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Validates `bytes` (`a/b/c`; a trailing `/` is dropped, an empty string is the root).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RelPath, PathError> {
        let mut bytes = bytes.into();
        if bytes.first() == Some(&b'/') {
            return Err(PathError::Absolute(quoted(&bytes)));
        }
        while bytes.len() > 1 && bytes.last() == Some(&b'/') {
            bytes.pop();
        }
        let invalid = |why| PathError::Invalid {
            path: quoted(&bytes),
            why,
        };
        if bytes.contains(&0) {
            return Err(invalid("it contains a NUL byte"));
        }
        if bytes.is_empty() {
            return Ok(RelPath::root());
        }
        for c in bytes.split(|b| *b == b'/') {
            match c {
                b"" => return Err(invalid("empty component")),
                b"." => return Err(invalid("`.` component")),
                b".." => return Err(invalid("`..` component")),
                _ => {}
            }
        }
        Ok(RelPath(bytes))
    }

    /// Turns a user's argument into a workspace path without touching the filesystem.
    ///
    /// An absolute `arg` must lie (lexically) under `workspace`; a relative one is taken
    /// relative to `cwd` when `cwd` is inside the workspace, else to the workspace root. `.` and
    /// `..` are resolved lexically. The workspace itself gives [`RelPath::root`].
    pub fn from_user(arg: &OsStr, cwd: &Path, workspace: &Path) -> Result<RelPath, PathError> {
        let ws_text = || quoted(workspace.as_os_str().as_bytes());
        if !workspace.is_absolute() {
            return Err(PathError::RelativeWorkspace(ws_text()));
        }
        let ws = normalize(workspace);
        let arg_path = Path::new(arg);
        let full = if arg_path.is_absolute() {
            normalize(arg_path)
        } else {
            let cwd = normalize(cwd);
            let base = if cwd.is_absolute() && cwd.starts_with(&ws) {
                cwd
            } else {
                ws.clone()
            };
            normalize(&base.join(arg_path))
        };
        let outside = || PathError::Outside {
            path: quoted(arg.as_bytes()),
            workspace: ws_text(),
        };
        let rest = full.strip_prefix(&ws).map_err(|_| outside())?;
        RelPath::new(rest.as_os_str().as_bytes().to_vec())
    }

    /// Whether this is the workspace root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw bytes (`a/b`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As a [`Path`] (relative).
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/').filter(|c| !c.is_empty())
    }

    /// How many components (0 for the root).
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The last component (`None` for the root).
    pub fn file_name(&self) -> Option<&[u8]> {
        self.components().last()
    }

    /// The parent (`None` for the root; the root for a one-component path).
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => Some(RelPath(self.0[..i].to_vec())),
            None => Some(RelPath::root()),
        }
    }

    /// This path with one more component. `name` must be a single valid component (a name read
    /// from a directory); anything else is refused.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, PathError> {
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            return Err(PathError::Invalid {
                path: quoted(name),
                why: "not a single name",
            });
        }
        let mut v = self.0.clone();
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath::new(v)
    }

    /// Whether `self` is `base` or lies under it (component-wise; everything lies under the
    /// root).
    pub fn starts_with(&self, base: &RelPath) -> bool {
        base.is_root()
            || (self.0.starts_with(&base.0)
                && (self.0.len() == base.0.len() || self.0.get(base.0.len()) == Some(&b'/')))
    }

    /// The path for showing: `(text, escaped)`. Valid UTF-8 without control or bidi characters
    /// (and not starting with `"`) is shown as is; anything else is C-quoted like git (`a\nb`,
    /// `\377`), without the surrounding quotes, and `escaped` is true. [`fmt::Display`] adds the
    /// quotes.
    pub fn escaped(&self) -> (Cow<'_, str>, bool) {
        escape(&self.0)
    }

    /// A reversible ASCII key for state files: bytes outside printable ASCII and `%` as `%XX`.
    pub(crate) fn key(&self) -> String {
        let mut s = String::with_capacity(self.0.len());
        for &b in &self.0 {
            if (0x21..0x7f).contains(&b) && b != b'%' {
                s.push(char::from(b));
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
        s
    }

    /// The inverse of [`RelPath::key`].
    pub(crate) fn from_key(key: &str) -> Option<RelPath> {
        let mut out = Vec::with_capacity(key.len());
        let mut bytes = key.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            } else {
                out.push(b);
            }
        }
        RelPath::new(out).ok()
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        show(&self.0, f)
    }
}

/// Serialises as its [`fmt::Display`] text (quoted when escaped, so never ambiguous).
impl serde::Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({self})")
    }
}

/// Writes `bytes` as [`RelPath`]'s `Display` would (quoted when escaped).
pub(crate) fn show(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match escape(bytes) {
        (s, false) => f.write_str(&s),
        (s, true) => write!(f, "\"{s}\""),
    }
}

/// `bytes` shown as text, quoted with `"` when escaped (for messages and patch headers).
pub fn quoted(bytes: &[u8]) -> String {
    match escape(bytes) {
        (s, false) => s.into_owned(),
        (s, true) => format!("\"{s}\""),
    }
}

/// Lexical normalisation: `.` dropped, `..` pops (never above the root).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
        }
    }
    out
}

/// Characters never shown raw: C0/C1 controls, DEL, and the bidirectional formatting
/// characters that can make a name read as another.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// See [`RelPath::escaped`].
pub(crate) fn escape(bytes: &[u8]) -> (Cow<'_, str>, bool) {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.starts_with('"')
        && !s.chars().any(unsafe_char)
    {
        return (Cow::Borrowed(s), false);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let octal = |out: &mut String, b: u8| out.push_str(&format!("\\{b:03o}"));
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\u{b}' => out.push_str("\\v"),
                '\u{c}' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if unsafe_char(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        octal(&mut out, b);
                    }
                }
                c => out.push(c),
            }
        }
        for &b in chunk.invalid() {
            octal(&mut out, b);
        }
    }
    (Cow::Owned(out), true)
}

#[cfg(test)]
#[path = "relpath_tests.rs"]
mod tests;
