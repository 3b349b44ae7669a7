//! Sandbox names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// the name breaks the naming rule
    #[error(
        "invalid sandbox name {0:?}: use 1-48 characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    Invalid(String),
}

/// A sandbox name: `[a-z0-9][a-z0-9_-]{0,47}`. Safe as a file name and a cgroup name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxName(String);

impl SandboxName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SandboxName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 48
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(SandboxName(s.to_owned()))
        } else {
            Err(NameError::Invalid(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SandboxName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, NameError> {
        s.parse()
    }
}

impl From<SandboxName> for String {
    fn from(n: SandboxName) -> String {
        n.0
    }
}

impl fmt::Display for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "proj-1", "x_y", "0abc"] {
            assert!(ok.parse::<SandboxName>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a/b", "a.b", "..", &"a".repeat(49), "a b"] {
            assert!(bad.parse::<SandboxName>().is_err(), "{bad}");
        }
    }
}
