//! Which host paths may be shared with a sandbox (the workspace, `--mount`s).
//!
//! A share gives the agent whatever it holds, as its owner where the share is read-write. So a
//! share that is, contains or lies inside a system location (a directory the OS owns) or one of
//! Paddock's own directories (state, config, runtime: the secrets key, other sandboxes' control
//! sockets) is refused, and so is a socket or device file unless the user passes a flag that
//! names the risk. Paths are judged after every symlink is resolved.

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::Dirs;

/// Trees the OS owns: a share may not be one, contain one or lie inside one (`/var` has the
/// exceptions in [`system_location`]).
const SYSTEM_TREES: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/libo32", "/etc", "/boot",
    "/opt", "/root", "/proc", "/sys", "/dev", "/run", "/var",
];

/// Directories that hold other people's or the system's trees: refused themselves (what lies
/// below them is not a system location).
const SHARED_PARENTS: &[&str] = &["/home", "/tmp", "/var/tmp", "/mnt", "/media", "/srv"];

/// How a refused share relates to the location it collides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The share is the location.
    Is,
    /// The location lies inside the share.
    Contains,
    /// The share lies inside the location.
    Inside,
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relation::Is => "is",
            Relation::Contains => "contains",
            Relation::Inside => "lies inside",
        })
    }
}

/// Why a host path cannot be shared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// the path is, contains or lies inside a directory the OS owns
    #[error(
        "refusing to share {path}: it {relation} {location}, a system location the agent could then change or read; share a project directory"
    )]
    System {
        /// The share (resolved).
        path: PathBuf,
        /// How it relates to the location.
        relation: Relation,
        /// The system location.
        location: String,
    },
    /// the path is, contains or lies inside one of Paddock's own directories
    #[error(
        "refusing to share {path}: it {relation} Paddock's {what} {location}, which holds what keeps sandboxes apart (keys, control sockets); share a project directory"
    )]
    Paddock {
        /// The share (resolved).
        path: PathBuf,
        /// How it relates to the directory.
        relation: Relation,
        /// Which of Paddock's directories.
        what: &'static str,
        /// The directory.
        location: PathBuf,
    },
    /// the path is a socket, device or FIFO
    #[error(
        "refusing to share {path}: it is a {kind}, which gives the agent whatever listens behind it (a Docker socket gives it the host); pass --dangerously-mount-sockets to share it anyway"
    )]
    Special {
        /// The share (resolved).
        path: PathBuf,
        /// What kind of file.
        kind: &'static str,
    },
    /// the path cannot be resolved
    #[error("cannot share {path}: {message}")]
    Unreadable {
        /// The share as given.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The rules for one user: Paddock's own directories and who is asking.
#[derive(Debug, Clone)]
pub struct ShareRules {
    own: Vec<(&'static str, PathBuf)>,
    uid: u32,
}

/// A share that passed, with what the user should hear about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The path with every symlink resolved.
    pub path: PathBuf,
    /// A warning to show (root's files shared by root).
    pub warning: Option<String>,
}

impl ShareRules {
    /// The rules for the user running Paddock with state in `dirs`.
    pub fn for_user(dirs: &Dirs) -> ShareRules {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut own = vec![("state directory", dirs.home().to_owned())];
        let config = var("XDG_CONFIG_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".config")))
            .map(|c| c.join("paddock"));
        own.extend(config.map(|c| ("config directory", c)));
        if let Some(key) = var("PADDOCK_SECRET_KEY").and_then(|k| k.parent().map(Path::to_owned)) {
            own.push(("secrets key directory", key));
        }
        own.push(("runtime directory", PathBuf::from("/run/paddock")));
        if let Some(rt) = var("XDG_RUNTIME_DIR") {
            own.push(("runtime directory", rt.join("paddock")));
        }
        // Compared resolved, as the shares are.
        let own = own
            .into_iter()
            .map(|(what, p)| (what, std::fs::canonicalize(&p).unwrap_or(p)))
            .collect();
        ShareRules {
            own,
            uid: rustix::process::geteuid().as_raw(),
        }
    }

    /// Checks the host path `path` (as the user gave it). `special`: sockets, devices and FIFOs
    /// may be shared (the user passed the flag that says the risk).
    pub fn check(&self, path: &Path, special: bool) -> Result<Checked, ShareError> {
        let unreadable = |e: std::io::Error| ShareError::Unreadable {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let resolved = std::fs::canonicalize(path).map_err(unreadable)?;
        let meta = std::fs::metadata(&resolved).map_err(unreadable)?;
        let ft = meta.file_type();
        let kind = if ft.is_socket() {
            Some("socket")
        } else if ft.is_char_device() || ft.is_block_device() {
            Some("device")
        } else if ft.is_fifo() {
            Some("FIFO")
        } else {
            None
        };
        match kind {
            Some(kind) if !special => {
                return Err(ShareError::Special {
                    path: resolved,
                    kind,
                });
            }
            // The flag says the risk: such a file may come from anywhere but Paddock's own.
            Some(_) => {}
            None => {
                if let Some((relation, location)) = system_location(&resolved, meta.uid(), self.uid)
                {
                    return Err(ShareError::System {
                        path: resolved,
                        relation,
                        location,
                    });
                }
            }
        }
        for (what, own) in &self.own {
            if let Some(relation) = relation(&resolved, own) {
                return Err(ShareError::Paddock {
                    path: resolved,
                    relation,
                    what,
                    location: own.clone(),
                });
            }
        }
        let warning = (self.uid == 0 && meta.uid() == 0).then(|| {
            format!(
                "{} belongs to root: inside, the agent is the owner of root's files there; share a folder an ordinary user owns",
                resolved.display()
            )
        });
        Ok(Checked {
            path: resolved,
            warning,
        })
    }
}

/// How `path` relates to `location` (both resolved), if they overlap.
fn relation(path: &Path, location: &Path) -> Option<Relation> {
    if path == location {
        Some(Relation::Is)
    } else if location.starts_with(path) {
        Some(Relation::Contains)
    } else if path.starts_with(location) {
        Some(Relation::Inside)
    } else {
        None
    }
}

/// The system location `path` (resolved, owned by `owner`) collides with, for a user `uid`.
/// Below `/var`, a scratch directory's contents (`/var/tmp/x`) and a tree an ordinary user
/// owns (`/var/lib/ci/ws` shared by its owner) are not system locations.
pub fn system_location(path: &Path, owner: u32, uid: u32) -> Option<(Relation, String)> {
    if path == Path::new("/") {
        return Some((Relation::Is, "/".to_owned()));
    }
    for p in SHARED_PARENTS {
        if path == Path::new(p) {
            return Some((Relation::Is, (*p).to_owned()));
        }
    }
    for tree in SYSTEM_TREES {
        let hit = relation(path, Path::new(tree));
        if hit == Some(Relation::Inside) && *tree == "/var" {
            let scratch = path.starts_with("/var/tmp");
            let users_own = uid != 0 && owner == uid;
            if scratch || users_own {
                continue;
            }
        }
        if let Some(r) = hit {
            return Some((r, (*tree).to_owned()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_locations() {
        let user = 1000;
        for (path, owner, uid, want) in [
            ("/", 0, 0, Some((Relation::Is, "/"))),
            ("/usr/local", 0, 0, Some((Relation::Inside, "/usr"))),
            ("/usr/bin", 0, user, Some((Relation::Inside, "/usr"))),
            ("/etc/cron.d", 0, 0, Some((Relation::Inside, "/etc"))),
            ("/etc/ssh", 0, user, Some((Relation::Inside, "/etc"))),
            ("/etc", 0, 0, Some((Relation::Is, "/etc"))),
            ("/var/lib", 0, 0, Some((Relation::Inside, "/var"))),
            ("/var", 0, 0, Some((Relation::Is, "/var"))),
            ("/lib64/x", 0, 0, Some((Relation::Inside, "/lib64"))),
            ("/libx32", 0, 0, Some((Relation::Is, "/libx32"))),
            ("/opt/tool", 0, 0, Some((Relation::Inside, "/opt"))),
            ("/run/docker", 0, 0, Some((Relation::Inside, "/run"))),
            ("/root/proj", 0, 0, Some((Relation::Inside, "/root"))),
            ("/home", 0, 0, Some((Relation::Is, "/home"))),
            ("/tmp", 0, 0, Some((Relation::Is, "/tmp"))),
            ("/var/tmp", 0, 0, Some((Relation::Is, "/var/tmp"))),
            // What people keep their projects in.
            ("/home/u/proj", user, user, None),
            ("/tmp/x", 0, 0, None),
            ("/var/tmp/paddock-ws-1", 0, 0, None),
            ("/srv/app", 0, 0, None),
            ("/work/main", 0, 0, None),
            ("/library", 0, 0, None),
            // A tree under /var an ordinary user owns, shared by that user only.
            ("/var/lib/ci/ws", user, user, None),
            ("/var/lib/ci/ws", user, 0, Some((Relation::Inside, "/var"))),
            ("/var/lib/ci/ws", 0, user, Some((Relation::Inside, "/var"))),
        ] {
            let got = system_location(Path::new(path), owner, uid);
            let want = want.map(|(r, l)| (r, l.to_owned()));
            assert_eq!(got, want, "{path} owner {owner} uid {uid}");
        }
    }

    #[test]
    fn paddock_directories_sockets_and_devices() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let state = base.join("home/u/.local/share/paddock");
        std::fs::create_dir_all(state.join("run")).unwrap();
        std::fs::create_dir_all(base.join("home/u/proj")).unwrap();
        let rules = ShareRules {
            own: vec![("state directory", state.clone())],
            uid: 1000,
        };
        let check = |p: &Path, special| rules.check(p, special);
        assert!(matches!(
            check(&state.join("run"), false),
            Err(ShareError::Paddock {
                relation: Relation::Inside,
                ..
            })
        ));
        assert!(matches!(
            check(&base.join("home/u"), false),
            Err(ShareError::Paddock {
                relation: Relation::Contains,
                ..
            })
        ));
        // Through a symlink: judged where it leads.
        std::os::unix::fs::symlink(&state, base.join("home/u/proj/link")).unwrap();
        assert!(matches!(
            check(&base.join("home/u/proj/link"), false),
            Err(ShareError::Paddock {
                relation: Relation::Is,
                ..
            })
        ));
        assert_eq!(
            check(&base.join("home/u/proj"), false).map(|c| c.path),
            Ok(base.join("home/u/proj"))
        );
        let sock = base.join("home/u/proj/s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            check(&sock, false),
            Err(ShareError::Special { kind: "socket", .. })
        ));
        assert!(check(&sock, true).is_ok());
        assert!(matches!(
            check(Path::new("/dev/null"), false),
            Err(ShareError::Special { kind: "device", .. })
        ));
        // Even with the flag, never one of Paddock's own sockets.
        let own = state.join("run/x.sock");
        let _m = std::os::unix::net::UnixListener::bind(&own).unwrap();
        assert!(matches!(check(&own, true), Err(ShareError::Paddock { .. })));
    }
}
