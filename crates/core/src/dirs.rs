//! Where Paddock keeps its state on the host.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use paddock_policy::SandboxName;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    /// neither PADDOCK_HOME, XDG_DATA_HOME nor HOME is set
    #[error("cannot find a state directory: set PADDOCK_HOME, XDG_DATA_HOME or HOME")]
    NoHome,
    /// a state path is not absolute
    #[error("state directory {0:?} must be an absolute path")]
    NotAbsolute(PathBuf),
    /// creating a directory failed
    #[error("cannot create {path:?}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Paddock's directories: `$PADDOCK_HOME`, else `$XDG_DATA_HOME/paddock`, else
/// `~/.local/share/paddock`. Everything below is private to the invoking user (mode 0700).
#[derive(Debug, Clone)]
pub struct Dirs {
    home: PathBuf,
    /// `$XDG_RUNTIME_DIR`, when the state directory was found from the environment without
    /// `PADDOCK_HOME` (a `PADDOCK_HOME` is a Paddock of its own: its sockets live inside it).
    runtime: Option<PathBuf>,
}

impl Dirs {
    /// Finds the state directory from the environment.
    pub fn from_env() -> Result<Dirs, DirsError> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = if let Some(p) = var("PADDOCK_HOME") {
            return Dirs::at(p);
        } else if let Some(x) = var("XDG_DATA_HOME") {
            x.join("paddock")
        } else if let Some(h) = var("HOME") {
            h.join(".local/share/paddock")
        } else {
            return Err(DirsError::NoHome);
        };
        let mut dirs = Dirs::at(home)?;
        dirs.runtime = var("XDG_RUNTIME_DIR").filter(|r| r.is_absolute());
        Ok(dirs)
    }

    /// Uses `home` as the state directory.
    pub fn at(home: PathBuf) -> Result<Dirs, DirsError> {
        if !home.is_absolute() {
            return Err(DirsError::NotAbsolute(home));
        }
        Ok(Dirs {
            home,
            runtime: None,
        })
    }

    /// Creates the directory tree if missing, private to the owner.
    pub fn ensure(&self) -> Result<(), DirsError> {
        for d in [
            self.home.clone(),
            self.images(),
            self.sandboxes(),
            self.run(),
        ] {
            ensure_private_dir(&d)?;
        }
        Ok(())
    }

    /// The state directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.home.join("state.db")
    }

    /// Where images live.
    pub fn images(&self) -> PathBuf {
        self.home.join("images")
    }

    /// Where sandboxes' writable layers live.
    pub fn sandboxes(&self) -> PathBuf {
        self.home.join("sandboxes")
    }

    /// One sandbox's directory.
    pub fn sandbox(&self, name: &SandboxName) -> PathBuf {
        self.sandboxes().join(name.as_str())
    }

    /// Control sockets of running supervisors.
    pub fn run(&self) -> PathBuf {
        self.home.join("run")
    }

    /// The control socket of a sandbox's supervisor.
    pub fn control_socket(&self, name: &SandboxName) -> PathBuf {
        self.run().join(format!("{name}.sock"))
    }

    /// The directory of `paddock serve`'s socket: `$XDG_RUNTIME_DIR/paddock`, else [`Dirs::run`]
    /// (both private to the user; [`Dirs::ensure_api_dir`] makes it).
    pub fn api_dir(&self) -> PathBuf {
        match &self.runtime {
            Some(r) => r.join("paddock"),
            None => self.run(),
        }
    }

    /// The unix socket `paddock serve` listens on by default.
    pub fn api_socket(&self) -> PathBuf {
        self.api_dir().join("api.sock")
    }

    /// Creates [`Dirs::api_dir`] if missing, private to the owner (mode 0700).
    pub fn ensure_api_dir(&self) -> Result<(), DirsError> {
        ensure_private_dir(&self.api_dir())
    }

    /// The bearer token `paddock serve --listen` requires (made on first use, mode 0600).
    pub fn api_token(&self) -> PathBuf {
        self.home.join("api-token")
    }
}

/// Creates `d` (and parents) with mode 0700 and tightens it if it already exists.
pub(crate) fn ensure_private_dir(d: &Path) -> Result<(), DirsError> {
    let create = |source| DirsError::Create {
        path: d.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
        .map_err(create)?;
    fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(create)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        let at = Dirs::at(PathBuf::from("/state")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(at.api_socket(), PathBuf::from("/state/run/api.sock"));
        assert_eq!(at.api_token(), PathBuf::from("/state/api-token"));
        let runtime = Dirs {
            runtime: Some(PathBuf::from("/run/user/1000")),
            ..at
        };
        assert_eq!(
            runtime.api_socket(),
            PathBuf::from("/run/user/1000/paddock/api.sock")
        );
        assert_eq!(runtime.api_token(), PathBuf::from("/state/api-token"));
    }
}
