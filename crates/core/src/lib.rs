//! The sandbox core: what a sandbox is ([`SandboxSpec`]), how a backend runs one ([`Backend`]),
//! where Paddock keeps things ([`Dirs`]) and what it remembers of a sandbox ([`SandboxRecord`],
//! kept by paddock-store).
//!
//! The core never names a concrete backend: backends implement [`Backend`] and the supervisor
//! chooses one by probing.
#![forbid(unsafe_code)]

mod backend;
mod dirs;
pub mod gitguard;
pub mod gitsafe;
mod gitsweep;
pub mod hostca;
pub mod idmap;
mod image;
mod lock;
mod record;
mod session;
pub mod shares;
mod spec;
pub mod tools;
pub mod trust;

pub use backend::{
    Backend, BackendError, Egress, ExecHandle, Execs, Exit, Instance, Launch, Probe, ProbeItem,
    SessionEnd, StartContext, Stdio, Streams, TRUST_STORE, host_capacity, host_limits, shared_path,
    trust_store_file,
};
pub use dirs::{Dirs, DirsError};
pub use idmap::{AGENT_ID, DEFAULT_ID_BASE, ID_RANGE, IdMap, MapRange, UserIds};
pub use image::{
    DEFAULT_IMAGE, ImageInfo, ImageStore, ImageStoreError, check_name as check_image_name,
};
pub use lock::{LockError, SandboxLock};
pub use paddock_policy::{NameError, SandboxName};
pub use record::{SandboxRecord, SandboxState};
pub use session::{RemoteExec, RemoteSession};
pub use spec::{Network, PROXY_PORT, SandboxSpec, SpecError};

/// A review-mode sandbox's directories ([`SandboxSpec::review`]) under its directory
/// `sandbox_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewDirs {
    /// The whole (`reset` removes it): the two below and the start's record.
    pub root: std::path::PathBuf,
    /// The overlay's layer: `upper` (what the sandbox wrote) and `work` (overlayfs's own).
    pub layer: std::path::PathBuf,
    /// The review's own records (what the host looked like, merge bases, the apply journal).
    pub state: std::path::PathBuf,
}

/// See [`ReviewDirs`]. Neither the sandbox's `upper` nor its `work` directory: the root layer
/// is reset without losing the changes under review, and the other way round.
pub fn review_dirs(sandbox_dir: &std::path::Path) -> ReviewDirs {
    let root = sandbox_dir.join("review");
    ReviewDirs {
        layer: root.join("layer"),
        state: root.join("state"),
        root,
    }
}

/// Whether this host can run a review-mode sandbox: overlayfs with `userxattr` and idmapped
/// layers (Linux 5.19; overlayfs itself every backend's root layer needs already). `Err` says
/// why not, for `create --review` to refuse before anything is made.
pub fn review_supported() -> Result<(), String> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < (5, 19) {
        return Err(format!(
            "review mode needs Linux 5.19 or newer (overlayfs over an idmapped workspace); this host runs {release}"
        ));
    }
    Ok(())
}

/// FNV-1a (64-bit) of `bytes`: a hash that is the same in every build and version, for names
/// and cache keys that must stay put (not for anything an attacker picks to collide).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
