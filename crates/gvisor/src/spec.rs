//! The OCI bundle Paddock writes for runsc.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMappingBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use paddock_confine::seccomp::{Deny, RULES, SOCKET_RULES, Scope};
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
    /// User mode: runsc runs as root of the jail's user namespace, whose ids the sandbox
    /// takes one to one (`id_base` is 0 then).
    pub user_mode: bool,
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
    /// The size of `/tmp` and of `/dev/shm` (half the memory limit).
    pub tmpfs_size: u64,
}

/// The capabilities the sandbox's root keeps: the namespace backend's set, so that a command
/// behaves the same on both.
fn capabilities() -> Result<std::collections::HashSet<Capability>, String> {
    paddock_confine::capabilities::KEPT
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

/// The namespace backend's seccomp table as an OCI filter, which runsc applies inside gVisor
/// (`--oci-seccomp`): the same calls refused the same way (namespaces, mounts, keyrings,
/// ptrace…), so that a command behaves the same on both and root inside cannot `unshare` a
/// user namespace in which it would hold every capability of gVisor's kernel. `syslog` is
/// left to gVisor, whose kernel log is its own.
pub fn seccomp() -> Result<LinuxSeccomp, String> {
    let e = |e: oci_spec::OciSpecError| e.to_string();
    // One OCI entry per alternative: conditions within an entry must all hold.
    let entry = |name: &str, deny: Deny, args: Vec<(usize, LinuxSeccompOperator, u64, u64)>| {
        let args = args
            .into_iter()
            .map(|(index, op, value, two)| {
                LinuxSeccompArgBuilder::default()
                    .index(index)
                    .op(op)
                    .value(value)
                    .value_two(two)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        // gVisor (2024-07) answers every SCMP_ACT_ERRNO with EPERM, whatever `errnoRet`
        // says, and EPERM from clone3 stops glibc from falling back to clone (no thread could
        // start). SCMP_ACT_TRACE with no tracer is ENOSYS, as in Linux, and nothing inside can
        // become a tracer (ptrace is refused).
        let b = LinuxSyscallBuilder::default().names(vec![name.to_owned()]);
        let mut b = match deny {
            Deny::Eperm => b
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32),
            Deny::Enosys => b.action(LinuxSeccompAction::ScmpActTrace),
        };
        if !args.is_empty() {
            b = b.args(args);
        }
        b.build().map_err(e)
    };
    use LinuxSeccompOperator::ScmpCmpMaskedEq as Masked;
    // A 32-bit compare (the kernel's own ABI for these arguments): the low word only.
    const LOW: u64 = 0xffff_ffff;
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for r in RULES {
        // gVisor's kernel log is its own (`dmesg` shows gVisor starting), not the host's.
        if r.name == "syslog" {
            continue;
        }
        let errno = r.deny;
        match r.scope {
            Scope::All => syscalls.push(entry(r.name, errno, vec![])?),
            Scope::ArgEq { arg, values } => {
                for v in values {
                    syscalls.push(entry(r.name, errno, vec![(arg.into(), Masked, LOW, *v)])?);
                }
            }
            Scope::ArgAnyBit { arg, bits } => {
                for b in bits {
                    syscalls.push(entry(r.name, errno, vec![(arg.into(), Masked, *b, *b)])?);
                }
            }
            Scope::Socket => {
                for (domain, ty, _) in SOCKET_RULES {
                    let mut args = vec![(0, Masked, LOW, *domain)];
                    if let Some(t) = ty {
                        args.push((1, Masked, 0xf, *t));
                    }
                    syscalls.push(entry(r.name, errno, args)?);
                }
            }
        }
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(syscalls)
        .build()
        .map_err(e)
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
    // Each memory file system holds at most half the memory limit (gVisor's memory counts
    // against the host cgroup's limit).
    let size = format!("size={}", b.tmpfs_size);
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
            &["nosuid", "noexec", "nodev", "mode=1777", &size],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &size],
        )?,
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
    // In user mode each line lies within one line of the jail's namespace's map, as the
    // kernel requires of a nested namespace.
    let ranges: Vec<(u32, u32, u32)> = if b.user_mode {
        paddock_core::idmap::nested_identity()
            .iter()
            .map(|r| (r.inside, r.outside, r.count))
            .collect()
    } else {
        vec![(0, b.id_base, ID_RANGE)]
    };
    let ids = ranges
        .into_iter()
        .map(|(inside, host, size)| {
            LinuxIdMappingBuilder::default()
                .container_id(inside)
                .host_id(host)
                .size(size)
                .build()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
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
        .seccomp(seccomp()?)
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
            user_mode: false,
            helper: "/run/paddock/init",
            egress: true,
            sudo: false,
            nproc: 100,
            shares: &shares,
            tmpfs_size: 1 << 29,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["linux"]["uidMappings"][0]["hostID"], 0x7000_0000u32);
        assert_eq!(json["linux"]["uidMappings"][0]["size"], 65536);
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(caps.len(), paddock_confine::capabilities::KEPT.len());
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
        // The namespace backend's filter, refusing unshare(CLONE_NEWUSER) among the rest.
        let sc = &json["linux"]["seccomp"];
        assert_eq!(sc["defaultAction"], "SCMP_ACT_ALLOW");
        let syscalls = sc["syscalls"].as_array().unwrap();
        assert!(syscalls.iter().any(|s| s["names"][0] == "unshare"
            && s["args"][0]["value"] == libc::CLONE_NEWUSER as u64
            && s["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"));
        assert!(
            syscalls
                .iter()
                .any(|s| s["names"][0] == "setns" && s["args"].is_null())
        );
        assert!(
            syscalls
                .iter()
                .any(|s| s["names"][0] == "clone3" && s["action"] == "SCMP_ACT_TRACE")
        );
    }
}
