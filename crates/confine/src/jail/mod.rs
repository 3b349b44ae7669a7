//! Mounts and user namespaces for a sandbox: the pieces the jail binary (`paddock-jail`) builds
//! a sandbox with, and the steps the host side does for it meanwhile ([`premount`]). Every
//! failure names its layer ([`Failure`]).

pub mod giveback;
pub mod layer;
pub mod mounts;
pub mod sys;
pub mod userns;

use std::fmt::Display;
use std::os::fd::OwnedFd;

pub use sys::{
    MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, mount_setattr,
};
pub use userns::detached_userns;

use crate::config::JailConfig;

/// A setup step that failed, with the layer it belongs to.
#[derive(Debug)]
pub struct Failure {
    /// The layer (`mounts`, `seccomp`, ...).
    pub layer: &'static str,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure of `layer`.
    pub fn new(layer: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            layer,
            message: message.into(),
        }
    }
}

/// Turns any error into a [`Failure`] of a layer.
pub trait Layer<T> {
    /// The error, as a failure of `layer` while doing `what`.
    fn layer(self, layer: &'static str, what: &str) -> Result<T, Failure>;
}

impl<T, E: Display> Layer<T> for Result<T, E> {
    fn layer(self, layer: &'static str, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(layer, format!("{what}: {e}")))
    }
}

/// The most mounts the host side hands the jail in one message (the kernel takes up to 253
/// descriptors in one `SCM_RIGHTS`).
pub const MAX_PREMADE: usize = 250;

/// The mounts pid 1 attaches, made on the host side while the jail starts (in user mode by
/// the jail itself, in its own user and mount namespaces; the host is
/// otherwise idle then, and this takes the jail's longest steps off its path: the overlay's
/// creation, and one helper process per owner of a shared folder for the idmapping): the root
/// overlay, unless the layer is a size-limited image (the jail mounts that one itself), then
/// each of `cfg.binds`, idmapped, in that order. Sent with the cgroup answer.
pub fn premount(cfg: &JailConfig) -> Result<Vec<OwnedFd>, Failure> {
    if cfg.binds.len() + 1 > MAX_PREMADE {
        return Err(Failure::new(
            "mounts",
            format!(
                "{} shared folders and files; at most {} fit",
                cfg.binds.len(),
                MAX_PREMADE - 1
            ),
        ));
    }
    let mut made = Vec::with_capacity(cfg.binds.len() + 1);
    // The root: the image under the writable layer, which is a size-limited ext4 image (as a
    // detached mount too, its directories named through this process's descriptor of it) or
    // plain directories. Attaching the image's loop device is the slowest step of a start
    // (~11 ms), so it goes here, while the jail starts.
    let layer = match &cfg.layer_image {
        Some(img) => Some(layer::mount_detached(img, cfg.id_base, cfg.volatile)?),
        None => None,
    };
    let (upper, work) = match &layer {
        Some(fs) => {
            let at = std::path::PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(fs)
            ));
            (at.join("upper"), at.join("work"))
        }
        None => (cfg.upper.clone(), cfg.work.clone()),
    };
    if cfg.user_namespace {
        mounts::own_fresh_upper(&upper)?;
    }
    made.push(mounts::overlay(
        &cfg.lower,
        &upper,
        &work,
        cfg.volatile,
        cfg.user_namespace,
    )?);
    drop(layer);
    // In user mode the user's files are the agent's already: no idmapping.
    let idmaps = if cfg.user_namespace {
        std::collections::BTreeMap::new()
    } else {
        userns::idmap_namespaces(&cfg.binds, cfg.id_base)?
    };
    for b in &cfg.binds {
        made.push(mounts::clone_tree(b, &idmaps)?);
    }
    Ok(made)
}
