//! What a sandbox is: everything needed to start it again after a stop.

use paddock_policy::{AbsPath, EnvVar, Limits, Mount, PortMap, SandboxName, User};
use serde::{Deserialize, Serialize};

/// Why a spec is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// two mounts (or a mount and the workspace) use the same sandbox path
    #[error("two mounts use the same sandbox path {0}")]
    DuplicateTarget(AbsPath),
}

/// The settings of one sandbox, stored as JSON in the state database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Unique name.
    pub name: SandboxName,
    /// Backend id (`ns`, ...), chosen by the supervisor's probe.
    pub backend: String,
    /// Image name.
    pub image: String,
    /// The project directory, shared read-write at the same path.
    pub workspace: AbsPath,
    /// Extra mounts.
    pub mounts: Vec<Mount>,
    /// Resource limits.
    pub limits: Limits,
    /// Extra environment (`-e`).
    pub env: Vec<EnvVar>,
    /// Default user for commands.
    pub user: User,
    /// Set `no_new_privs` for every process (sudo inside then cannot raise privileges).
    pub no_new_privs: bool,
    /// How the sandbox reaches the network.
    #[serde(default)]
    pub network: Network,
    /// Leave the git hooks and config of the shared folders writable inside (by default they
    /// are read-only, see [`crate::gitguard`]).
    #[serde(default)]
    pub allow_git_config: bool,
    /// Host ports forwarded to ports inside (one way: nothing inside reaches the host).
    #[serde(default)]
    pub ports: Vec<PortMap>,
    /// `--mount` may share sockets, devices and FIFOs (`--dangerously-mount-sockets`).
    #[serde(default)]
    pub dangerously_mount_sockets: bool,
    /// Trust the host's extra certificate authorities inside ([`crate::hostca`]); off with
    /// `--no-host-ca`.
    #[serde(default = "yes")]
    pub host_ca: bool,
    /// The host network's own proxy, which the egress proxy sends allowed connections
    /// through: the host user's `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` when the sandbox's
    /// settings were made (`run`, `create`), or `--upstream-proxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proxy: Option<paddock_policy::net::UpstreamProxy>,
    /// How long a request an `ask` rule holds waits for the user's answer before it is denied,
    /// in seconds (`--ask-timeout`; 60 when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_timeout_s: Option<u32>,
    /// Review mode (`--review`): the workspace is the lower layer of an overlay whose upper
    /// layer is the sandbox's review layer ([`crate::review_dir`]), so the host workspace does
    /// not change until the user applies the changes (`paddock diff`, `apply`, `discard`).
    #[serde(default)]
    pub review: bool,
    /// A Docker Engine of its own runs inside (`--docker`): the image is one with Docker's
    /// packages (`IMAGE-docker`), the engine starts with the sandbox, keeps its data in the
    /// sandbox's writable layer and reaches the network only through the egress proxy.
    #[serde(default)]
    pub docker: bool,
    /// This run removes the sandbox when it ends (`--rm`), writable layer included: the
    /// backend need not make the layer's writes durable (overlayfs `volatile`, so ending the
    /// sandbox does not sync the host filesystem the layer lives on). A property of one run,
    /// never stored.
    #[serde(skip)]
    pub discard_layer: bool,
}

fn yes() -> bool {
    true
}

/// How a sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Only through the host's egress proxy at `127.0.0.1:3128` inside.
    #[default]
    Proxy,
    /// Nothing at all: loopback only.
    None,
}

/// The address of the egress proxy inside every sandbox.
pub const PROXY_PORT: u16 = 3128;

impl SandboxSpec {
    /// Checks the spec as a whole (each field is already valid on its own; which host paths
    /// may be shared at all is [`crate::shares`]'s to say, with the file system at hand).
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut targets = vec![&self.workspace];
        for m in &self.mounts {
            if targets.contains(&&m.sandbox) {
                return Err(SpecError::DuplicateTarget(m.sandbox.clone()));
            }
            targets.push(&m.sandbox);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ws: &str, mounts: &[&str]) -> SandboxSpec {
        SandboxSpec {
            name: "t".parse().unwrap(),
            backend: "ns".into(),
            image: "default".into(),
            workspace: AbsPath::try_from(ws).unwrap(),
            mounts: mounts.iter().map(|m| m.parse().unwrap()).collect(),
            limits: Limits::default(),
            env: vec![],
            user: User::Agent,
            no_new_privs: false,
            network: Network::Proxy,
            allow_git_config: false,
            ports: vec![],
            dangerously_mount_sockets: false,
            host_ca: true,
            upstream_proxy: None,
            ask_timeout_s: None,
            docker: false,
            review: false,
            discard_layer: false,
        }
    }

    #[test]
    fn validate() {
        assert_eq!(spec("/w/p", &["/a:ro"]).validate(), Ok(()));
        assert!(matches!(
            spec("/w/p", &["/x:/w/p"]).validate(),
            Err(SpecError::DuplicateTarget(_))
        ));
    }

    #[test]
    fn json_round_trip() {
        let mut s = spec("/w/p", &["/a:/b:ro"]);
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SandboxSpec>(&j).unwrap(), s);
        // A record from before upstream proxies reads as none; one with a login keeps it.
        assert!(!j.contains("upstream_proxy"));
        s.upstream_proxy = paddock_policy::net::UpstreamProxy::from_flag(
            "http://u:p%40ss@proxy.example:3128",
            |_| Some("internal.example".into()),
        )
        .unwrap();
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SandboxSpec>(&j).unwrap(), s);
    }
}
