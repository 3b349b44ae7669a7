//! Extra mounts: `--mount HOST[:SANDBOX][:ro|:rw]`.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::path::{AbsPath, PathError};

/// Why a mount specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// the specification is empty or has too many parts
    #[error("invalid mount {0:?}: expected HOST[:SANDBOX][:ro|:rw]")]
    Syntax(String),
    /// a path in the specification is not usable
    #[error("invalid mount {spec:?}: {source}")]
    Path {
        /// The specification as given.
        spec: String,
        /// What is wrong with the path.
        #[source]
        source: PathError,
    },
    /// the sandbox path would hide something the sandbox needs
    #[error("invalid mount {spec:?}: cannot mount over {target} inside the sandbox")]
    ReservedTarget {
        /// The specification as given.
        spec: String,
        /// The refused target.
        target: AbsPath,
    },
}

/// A host path shared into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Path on the host (absolute; existence is checked by the caller, which can see the host).
    pub host: AbsPath,
    /// Path inside the sandbox.
    pub sandbox: AbsPath,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Sandbox paths that no mount may cover or replace.
const RESERVED: &[&str] = &[
    "/",
    "/proc",
    "/dev",
    "/sys",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr",
    "/etc",
    "/run",
    "/.paddock",
];

impl Mount {
    /// Checks that `target` may be used as a mount point inside the sandbox.
    pub fn check_target(spec: &str, target: &AbsPath) -> Result<(), MountError> {
        let reserved = RESERVED.iter().any(|r| target.as_str() == *r)
            || ["/proc", "/dev", "/sys", "/.paddock"]
                .iter()
                .any(|r| target.as_str().starts_with(&format!("{r}/")));
        if reserved {
            return Err(MountError::ReservedTarget {
                spec: spec.to_owned(),
                target: target.clone(),
            });
        }
        Ok(())
    }
}

impl FromStr for Mount {
    type Err = MountError;

    fn from_str(spec: &str) -> Result<Self, MountError> {
        let syntax = || MountError::Syntax(spec.to_owned());
        let mut parts: Vec<&str> = spec.split(':').collect();
        let mut read_only = false;
        if parts.len() > 1 {
            match parts.last().copied() {
                Some("ro") => {
                    read_only = true;
                    parts.pop();
                }
                Some("rw") => {
                    parts.pop();
                }
                _ => {}
            }
        }
        let (host, sandbox) = match parts.as_slice() {
            [h] => (*h, *h),
            [h, s] => (*h, *s),
            _ => return Err(syntax()),
        };
        if host.is_empty() || sandbox.is_empty() {
            return Err(syntax());
        }
        let path = |p: &str| {
            AbsPath::try_from(p).map_err(|source| MountError::Path {
                spec: spec.to_owned(),
                source,
            })
        };
        let host = path(host)?;
        let sandbox = path(sandbox)?;
        Mount::check_target(spec, &sandbox)?;
        Ok(Mount {
            host,
            sandbox,
            read_only,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(h: &str, s: &str, ro: bool) -> Mount {
        Mount {
            host: AbsPath::try_from(h).unwrap(),
            sandbox: AbsPath::try_from(s).unwrap(),
            read_only: ro,
        }
    }

    #[test]
    fn parses() {
        let cases: &[(&str, Option<Mount>)] = &[
            ("/h/.codex:ro", Some(m("/h/.codex", "/h/.codex", true))),
            ("/h/.codex", Some(m("/h/.codex", "/h/.codex", false))),
            ("/a:/b", Some(m("/a", "/b", false))),
            ("/a:/b:ro", Some(m("/a", "/b", true))),
            ("/a:/b:rw", Some(m("/a", "/b", false))),
            ("/a:/b:ro:x", None),
            ("rel:/b", None),
            ("/a:rel", None),
            ("", None),
            ("/a:/proc", None),
            ("/a:/dev/shm", None),
            ("/a:/usr", None),
            ("/a:/", None),
            ("/a:/usr/local/x", Some(m("/a", "/usr/local/x", false))),
        ];
        for (spec, want) in cases {
            assert_eq!(spec.parse::<Mount>().ok(), *want, "{spec}");
        }
    }
}
