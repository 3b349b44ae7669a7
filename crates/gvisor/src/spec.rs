//! The OCI bundle Paddock writes for runsc.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMappingBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use paddock_core::ID_RANGE;

/// A host directory or file (already at its mount point) and where the sandbox sees it.
#[derive(Debug, Clone)]
pub struct Share {
    /// The mount point in the run directory.
    pub source: PathBuf,
    /// The path inside.
    pub target: String,
    /// Read-only inside.
    pub read_only: bool,
}

/// What goes into the bundle.
#[derive(Debug)]
pub struct Bundle<'a> {
    /// The sandbox's root (the overlay's mount point).
    pub root: &'a Path,
    /// Host name inside.
    pub hostname: &'a str,
    /// Host id of the sandbox's root.
    pub id_base: u32,
    /// The helper's path inside.
    pub helper: &'a str,
    /// Whether the helper serves the proxy port.
    pub egress: bool,
    /// Whether the helper serves `sudo`.
    pub sudo: bool,
    /// RLIMIT_NPROC for every process (gVisor counts it per user, root included).
    pub nproc: u64,
    /// Shared folders and files.
    pub shares: &'a [Share],
}

/// The capabilities the sandbox's root keeps: the namespace backend's set, so that a command
/// behaves the same on both.
fn capabilities() -> Result<std::collections::HashSet<Capability>, String> {
    paddock_ns::capabilities::KEPT
        .iter()
        .map(|c| {
            let name = c.to_string();
            let short = name.trim_start_matches("CAP_");
            short
                .parse::<Capability>()
                .map_err(|e| format!("capability {name}: {e}"))
        })
        .collect()
}

fn mount(
    dest: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<oci_spec::runtime::Mount, String> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())
}

/// The bundle's `config.json`.
pub fn bundle(b: &Bundle<'_>) -> Result<Spec, String> {
    let caps = capabilities()?;
    let mut args = vec![b.helper.to_owned(), "gvisor".to_owned()];
    if b.egress {
        args.push("--egress".into());
    }
    if b.sudo {
        args.push("--sudo".into());
    }

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .args(args)
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ])
        .cwd("/")
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(std::collections::HashSet::<Capability>::new())
                .ambient(std::collections::HashSet::<Capability>::new())
                .build()
                .map_err(|e| e.to_string())?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNproc)
                .soft(b.nproc)
                .hard(b.nproc)
                .build()
                .map_err(|e| e.to_string())?,
        ])
        .no_new_privileges(false)
        .build()
        .map_err(|e| e.to_string())?;
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"])?,
        mount("/run", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=755"])?,
    ];
    // Shallowest first, so nested targets land inside their parents.
    let mut shares: Vec<&Share> = b.shares.iter().collect();
    shares.sort_by_key(|s| s.target.matches('/').count());
    for s in shares {
        let source = s.source.to_string_lossy();
        let mode = if s.read_only { "ro" } else { "rw" };
        mounts.push(mount(
            &s.target,
            "bind",
            &source,
            &["rbind", mode, "nosuid", "nodev"],
        )?);
    }
    let ids = vec![
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(b.id_base)
            .size(ID_RANGE)
            .build()
            .map_err(|e| e.to_string())?,
    ];
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::User,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| e.to_string())?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .uid_mappings(ids.clone())
        .gid_mappings(ids)
        .build()
        .map_err(|e| e.to_string())?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(b.root)
                .readonly(false)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .hostname(b.hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_maps_ids_and_keeps_the_namespace_backends_capabilities() {
        let shares = [Share {
            source: "/run/x/mounts/0".into(),
            target: "/home/u/proj".into(),
            read_only: false,
        }];
        let spec = bundle(&Bundle {
            root: Path::new("/run/x/root"),
            hostname: "box",
            id_base: 0x7000_0000,
            helper: "/run/paddock/init",
            egress: true,
            sudo: false,
            nproc: 100,
            shares: &shares,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["linux"]["uidMappings"][0]["hostID"], 0x7000_0000u32);
        assert_eq!(json["linux"]["uidMappings"][0]["size"], 65536);
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(caps.len(), paddock_ns::capabilities::KEPT.len());
        assert!(caps.iter().any(|c| c == "CAP_CHOWN"));
        assert!(
            !caps
                .iter()
                .any(|c| c == "CAP_NET_RAW" || c == "CAP_SYS_ADMIN")
        );
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/run/paddock/init", "gvisor", "--egress"])
        );
        assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NPROC");
        assert_eq!(json["process"]["rlimits"][0]["hard"], 100);
        let ws = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/home/u/proj")
            .unwrap();
        assert_eq!(ws["source"], "/run/x/mounts/0");
        assert!(ws["options"].as_array().unwrap().iter().any(|o| o == "rw"));
    }
}
