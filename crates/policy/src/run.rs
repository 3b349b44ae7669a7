//! What runs inside: environment variables and the user.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an environment variable was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// no `=` or a bad name
    #[error(
        "invalid environment variable {0:?}: expected NAME=VALUE with NAME made of letters, digits and '_'"
    )]
    Invalid(String),
}

/// One `NAME=VALUE` pair given with `-e`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Variable value.
    pub value: String,
}

impl FromStr for EnvVar {
    type Err = EnvError;

    fn from_str(s: &str) -> Result<Self, EnvError> {
        let bad = || EnvError::Invalid(s.to_owned());
        let (name, value) = s.split_once('=').ok_or_else(bad)?;
        let name_ok = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok || value.contains('\0') {
            return Err(bad());
        }
        Ok(EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// Why a user was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// not a known user name or a number in range
    #[error("invalid user {0:?}: use `agent`, `root` or a numeric uid below 65536")]
    Invalid(String),
}

/// The user the command runs as inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum User {
    /// The image's non-root `agent` user (uid 1000), mapped to the workspace owner.
    #[default]
    Agent,
    /// Root inside the sandbox (an unprivileged uid on the host).
    Root,
    /// Any other uid inside the sandbox.
    Uid(u32),
}

impl User {
    /// Uid inside the sandbox.
    pub fn uid(self) -> u32 {
        match self {
            User::Agent => 1000,
            User::Root => 0,
            User::Uid(u) => u,
        }
    }
}

impl FromStr for User {
    type Err = UserError;

    fn from_str(s: &str) -> Result<Self, UserError> {
        match s {
            "agent" | "1000" => Ok(User::Agent),
            "root" | "0" => Ok(User::Root),
            _ => match s.parse::<u32>() {
                Ok(u) if u < 65536 => Ok(User::Uid(u)),
                _ => Err(UserError::Invalid(s.to_owned())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env() {
        assert_eq!(
            "A_1=x=y".parse::<EnvVar>().unwrap(),
            EnvVar {
                name: "A_1".into(),
                value: "x=y".into()
            }
        );
        for bad in ["A", "=x", "1A=x", "A-B=x"] {
            assert!(bad.parse::<EnvVar>().is_err(), "{bad}");
        }
    }

    #[test]
    fn users() {
        assert_eq!("agent".parse::<User>().unwrap(), User::Agent);
        assert_eq!("0".parse::<User>().unwrap(), User::Root);
        assert_eq!("42".parse::<User>().unwrap(), User::Uid(42));
        assert!("bob".parse::<User>().is_err());
        assert!("70000".parse::<User>().is_err());
    }
}
