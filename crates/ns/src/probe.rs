//! What this host offers the namespace backend.

use std::fs;
use std::path::Path;

use paddock_confine::cgroup::CgroupHost;
use paddock_core::{Probe, ProbeItem};

fn item(
    name: &str,
    ok: bool,
    detail: impl Into<String>,
    fix: Option<&str>,
    required: bool,
) -> ProbeItem {
    ProbeItem {
        name: name.into(),
        ok,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
        required,
    }
}

fn kernel_at_least(major: u32, minor: u32) -> (bool, String) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    ((ma, mi) >= (major, minor), release.trim().to_owned())
}

pub fn probe(jail: &Path) -> Probe {
    let mut items = Vec::new();
    if paddock_confine::user::is_user_mode() {
        items.push(paddock_confine::user::user_mode_item());
    } else {
        items.push(item(
            "root mode",
            true,
            "running as root: sandbox ids from 0x70000000",
            None,
            true,
        ));
    }
    items.push(item(
        "jail binary",
        jail.exists(),
        jail.display().to_string(),
        Some("install paddock-jail next to paddock (cargo build builds both)"),
        true,
    ));
    let max_userns = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    items.push(item(
        "user namespaces",
        max_userns > 0,
        format!("max_user_namespaces = {max_userns}"),
        Some("sysctl -w user.max_user_namespaces=15000"),
        true,
    ));
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"));
    items.push(item(
        "overlayfs",
        overlay,
        if overlay {
            "available"
        } else {
            "not in /proc/filesystems"
        },
        Some("modprobe overlay"),
        true,
    ));
    let (idmap_ok, release) = kernel_at_least(5, 12);
    if !paddock_confine::user::is_user_mode() {
        items.push(item(
            "idmapped mounts",
            idmap_ok,
            format!("kernel {release} (5.12+ needed)"),
            Some("upgrade the kernel to 5.12 or newer"),
            true,
        ));
    }
    let actions = fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let seccomp = actions.contains("errno");
    items.push(item(
        "seccomp",
        seccomp,
        if seccomp {
            format!("actions: {}", actions.trim())
        } else {
            "seccomp filters unavailable".into()
        },
        Some("use a kernel built with CONFIG_SECCOMP_FILTER"),
        true,
    ));
    let abi = paddock_confine::landlock::kernel_abi();
    items.push(item(
        "landlock",
        abi > 0,
        if abi > 0 {
            format!("ABI {abi}")
        } else {
            "not enabled in this kernel".into()
        },
        Some("boot with lsm=...,landlock (optional second layer)"),
        false,
    ));
    let host = CgroupHost::detect();
    for (ctrl, how) in host.describe() {
        let fix = format!(
            "mount the {ctrl} controller (cgroup v2 with it enabled in cgroup.subtree_control, or v1); needed only for the matching limit"
        );
        items.push(ProbeItem {
            name: format!("cgroup {ctrl}"),
            ok: how.is_some(),
            detail: how.unwrap_or_else(|| "not available".into()),
            fix: Some(fix),
            required: false,
        });
    }
    if !host.v1.is_empty() || host.v2_root.is_some() {
        items.push(cgroup_moves(&host));
    }
    Probe {
        backend: "ns",
        items,
    }
}

/// Whether putting a sandbox into its cgroups is quick: without `favordynmods` the kernel waits
/// for an RCU grace period on each start (a performance note, not a requirement).
fn cgroup_moves(host: &CgroupHost) -> ProbeItem {
    let fix = match &host.v2_root {
        Some(root) => format!(
            "`mount -o remount,favordynmods {}` (as root; until reboot; it makes forks and exits on the host slightly slower)",
            root.display()
        ),
        None => "boot a kernel built with CONFIG_CGROUP_FAVOR_DYNMODS=y".into(),
    };
    ProbeItem {
        name: "cgroup moves".into(),
        ok: host.favordynmods,
        detail: if host.favordynmods {
            "quick (favordynmods)".into()
        } else {
            "each start waits for the kernel's RCU grace period to move the sandbox into its cgroups (6-24 ms measured on a 2-core host)".into()
        },
        fix: Some(fix),
        required: false,
    }
}
