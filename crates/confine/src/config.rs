//! What the host side tells the jail (JSON on descriptor 3).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One bind mount into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// Canonical host path.
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// Host uid whose files appear as the agent's (uid 1000) inside.
    pub owner_uid: u32,
    /// Host gid whose files appear as the agent's group inside.
    pub owner_gid: u32,
    /// Map the owner to the agent with an idmapped mount (false: plain read-only bind of a file
    /// Paddock generated, such as `/etc/hosts`).
    pub idmap: bool,
    /// The host path is a directory (else a file).
    pub is_dir: bool,
    /// Review mode (`--review`): the folder is only the lower layer of an overlay whose upper
    /// layer and work directory are `upper` and `work` in this directory (the sandbox's
    /// review layer), so the sandbox's writes stay there until the user applies them.
    #[serde(default)]
    pub review: Option<PathBuf>,
}

impl Bind {
    /// A folder the user shared read-write (not a file Paddock generated, not a read-only
    /// share): what the sandbox makes there as another id is given to its owner when it ends
    /// ([`crate::jail::giveback`]).
    pub fn gives_back(&self) -> bool {
        self.idmap && self.is_dir && !self.read_only
    }

    /// Where the files to give back after a run are ([`Self::gives_back`]): the folder, or in
    /// review mode its review layer's upper directory in user mode (where the sandbox's root
    /// wrote as a subordinate id the user cannot read) and nowhere in root mode (where the
    /// review layer keeps the sandbox's own host ids, which the next run must see again).
    pub fn give_back_at(&self, user_mode: bool) -> Option<PathBuf> {
        if !self.gives_back() {
            return None;
        }
        match &self.review {
            Some(dir) => user_mode.then(|| dir.join("upper")),
            None => Some(self.host.clone()),
        }
    }
}

/// The jail's whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// Host name inside.
    pub hostname: String,
    /// Image root filesystem (overlay lower layer).
    pub lower: PathBuf,
    /// Writable layer.
    pub upper: PathBuf,
    /// Overlay work directory.
    pub work: PathBuf,
    /// Mount point for the sandbox root (in the jail's private mount namespace).
    pub merged: PathBuf,
    /// Host id of the sandbox's root.
    pub id_base: u32,
    /// The workspace first, then extra mounts.
    pub binds: Vec<Bind>,
    /// cgroup directories to join.
    pub cgroups: Vec<PathBuf>,
    /// The command.
    pub command: paddock_wire::Command,
    /// Open a listening socket on the sandbox's `127.0.0.1:3128` and send it to the host.
    pub egress: bool,
    /// The size-limited layer (`--disk`): an ext4 image whose `upper` and `work` replace the
    /// directories above, mounted at `layer` next to them.
    #[serde(default)]
    pub layer_image: Option<PathBuf>,
    /// The layer is removed after this run (`--rm`): mount it `volatile` (no sync of the host
    /// filesystem when the sandbox ends; see [`paddock_core::SandboxSpec::discard_layer`]).
    #[serde(default)]
    pub volatile: bool,
    /// The size in bytes of `/tmp` and of `/dev/shm` (1 GiB when not given).
    #[serde(default)]
    pub tmpfs_size: Option<u64>,
    /// User mode: the jail runs as an ordinary user. It makes a user namespace first, which the
    /// host maps ([`paddock_core::UserIds`]) and which then owns every other namespace of the
    /// sandbox; it mounts the root and shared folders itself, without idmapped mounts (the user
    /// is the agent already), and binds the host's harmless device nodes instead of making
    /// them. `id_base` is then 0: the sandbox's root as that namespace sees it.
    #[serde(default)]
    pub user_namespace: bool,
    /// Where the jail binds the sandbox's exec socket ([`paddock_wire::EXEC_SOCKET`]), whose
    /// listener pid 1 serves; none: no exec socket.
    #[serde(default)]
    pub exec_socket: Option<PathBuf>,
}

/// What the jail prepares for a gVisor sandbox before it becomes runsc
/// (`paddock-jail runsc`, JSON on descriptor 3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunscConfig {
    /// Image root filesystem (overlay lower layer).
    pub lower: PathBuf,
    /// Writable layer.
    pub upper: PathBuf,
    /// Overlay work directory.
    pub work: PathBuf,
    /// Where the overlay is mounted: the OCI bundle's root path.
    pub root: PathBuf,
    /// Host id of the sandbox's root (idmapped shared folders map their owner to its agent).
    pub id_base: u32,
    /// Shared folders; `target` is the host mount point the OCI spec names as the source.
    pub binds: Vec<Bind>,
    /// cgroup directories the supervisor moves the jail into before it continues.
    pub cgroups: Vec<PathBuf>,
    /// The program to become (runsc and its arguments).
    pub exec: Vec<String>,
    /// The size-limited layer (`--disk`), as for [`JailConfig`].
    #[serde(default)]
    pub layer_image: Option<PathBuf>,
    /// As for [`JailConfig`].
    #[serde(default)]
    pub volatile: bool,
    /// User mode, as for [`JailConfig::user_namespace`]: the jail makes and takes its own user
    /// and mount namespaces before it mounts, and runsc runs as that namespace's root.
    #[serde(default)]
    pub user_namespace: bool,
}

/// One more command in a running namespace sandbox (`paddock-jail enter`, JSON on
/// descriptor 3; descriptor 5 is a pidfd of the sandbox's pid 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterConfig {
    /// cgroup directories the supervisor moves the jail into before it enters.
    pub cgroups: Vec<PathBuf>,
    /// User mode: descriptor 6 is the sandbox's outer user namespace (see
    /// [`JailConfig::user_namespace`]), entered first.
    #[serde(default)]
    pub user_namespace: bool,
    /// The command.
    pub command: paddock_wire::Command,
}
