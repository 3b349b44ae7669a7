//! Paddock's engine: every operation on sandboxes, with typed requests and typed results.
//!
//! The front ends (the command line, `paddock serve`'s HTTP API, `paddock mcp`) turn their
//! input into these requests and render the results; validation, state and orchestration live
//! here, once. What an operation has to say along the way (a note, a warning, progress) goes to
//! the front end's [`Reporter`]: a terminal prints it, an API returns it.

mod agent_install;
mod error;

pub mod agents;
pub mod asks;
pub mod background;
pub mod create;
pub mod exec;
pub mod files;
pub mod gitroot;
pub mod manage;
pub mod policy;
pub mod remove;
pub mod run;
pub mod sandboxes;
pub mod secrets;
pub mod trust;

use std::path::PathBuf;

pub use agent_install::sandbox_name as agent_sandbox_name;
pub use create::RunRequest;
pub use error::{Context, EngineError, Result, invalid};
use paddock_core::{Dirs, ImageStore};
use paddock_store::Store;
pub use run::{Mode, RunOutcome};

/// Where an operation's notes go, and what it may ask of the front end.
pub trait Reporter: Sync {
    /// A note for the user (one line or a few; no "paddock:" prefix).
    fn note(&self, text: &str);
    /// A warning: something was not done, and the operation went on.
    fn warn(&self, text: &str) {
        self.note(&format!("warning: {text}"));
    }
    /// Whether a person watches as it happens (progress bars, notes said once).
    fn interactive(&self) -> bool {
        false
    }
    /// Whether this process's standard streams are a terminal a command Paddock runs for
    /// itself may use (an agent's install shows its progress there).
    fn terminal(&self) -> bool {
        false
    }
}

/// A reporter that keeps nothing (notes an API caller did not ask for).
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Reporter for Quiet {
    fn note(&self, _: &str) {}
}

/// Paddock's state for one user: the state directory and its database.
#[derive(Debug)]
pub struct Engine {
    dirs: Dirs,
    store: Store,
}

impl Engine {
    /// Opens the state directory the environment names ([`Dirs::from_env`]), creating it.
    pub fn open() -> Result<Engine> {
        let dirs = Dirs::from_env()?;
        Engine::at(dirs)
    }

    /// Opens the state directory `dirs`, creating it.
    pub fn at(dirs: Dirs) -> Result<Engine> {
        dirs.ensure()?;
        let store = Store::open(&dirs.database())?;
        Ok(Engine { dirs, store })
    }

    /// The state directory.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// The sandboxes' records.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Image `name`, built first when it is missing and is the default image or an image with
    /// Docker (`IMAGE-docker`, from IMAGE).
    pub fn image(
        &self,
        name: &str,
        report: &dyn Reporter,
    ) -> Result<(paddock_core::ImageInfo, PathBuf)> {
        let store = ImageStore::new(self.dirs.images());
        match store.get(name) {
            Ok(info) => {
                if info.version < paddock_image::LAYOUT_VERSION {
                    report.note(&format!(
                        "image {name} was built by an older Paddock (apt inside has no proxy setting or package lists); `paddock image build {name}` updates it, and sandboxes keep their layers"
                    ));
                }
                Ok((info, store.rootfs(name)?))
            }
            Err(paddock_core::ImageStoreError::NotFound(_))
                if name == paddock_core::DEFAULT_IMAGE =>
            {
                report.note(
                    "the default image is not built yet; building it now (about a minute; needs the host's Debian apt sources)",
                );
                let opts = paddock_image::BuildOptions {
                    progress: report.interactive(),
                    ..paddock_image::BuildOptions::default_image(name)
                };
                let info =
                    paddock_image::build(&store, &opts).context("building the default image")?;
                Ok((info, store.rootfs(name)?))
            }
            // `IMAGE-docker` (`--docker`): IMAGE's packages and Docker's, built once.
            Err(paddock_core::ImageStoreError::NotFound(_))
                if let Some(base) = paddock_image::docker::base_of(name) =>
            {
                let (base_info, _) = self.image(base, report)?;
                report.note(&format!(
                    "image {name} is not built yet; building it now: image {base}'s packages and Docker's engine and tools (a few minutes, once)"
                ));
                let packages = paddock_image::package_list(
                    &base_info.packages,
                    &paddock_image::docker::PACKAGES
                        .iter()
                        .map(|p| (*p).to_owned())
                        .collect::<Vec<_>>(),
                )
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
                let opts = paddock_image::BuildOptions {
                    progress: report.interactive(),
                    suite: base_info.suite.clone(),
                    packages,
                    docker: true,
                    ..paddock_image::BuildOptions::default_image(name)
                };
                let info = paddock_image::build(&store, &opts)
                    .with_context(|| format!("building image {name}"))?;
                Ok((info, store.rootfs(name)?))
            }
            Err(e @ paddock_core::ImageStoreError::NotFound(_)) => {
                Err(EngineError::NotFound(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
