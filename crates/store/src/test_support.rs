//! What the store's tests share.

use paddock_core::{Network, SandboxSpec};
use paddock_policy::{AbsPath, Limits, User};

/// A sandbox's settings.
pub(crate) fn spec(name: &str) -> SandboxSpec {
    SandboxSpec {
        name: name.parse().unwrap(),
        backend: "ns".into(),
        image: "default".into(),
        workspace: AbsPath::try_from("/w/p").unwrap(),
        mounts: vec![],
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
        review: false,
        discard_layer: false,
        ask_timeout_s: None,
        docker: false,
    }
}
