//! `paddock doctor`: what this host supports, what is missing and how to fix it.

use std::fs;
use std::process::Command;

use paddock_core::{Backend, ProbeItem};
use paddock_gvisor::GvisorBackend;
use paddock_ns::NsBackend;
use paddock_vm::VmBackend;
use serde::Serialize;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Host-wide facts.
    pub host: Vec<ProbeItem>,
    /// Each backend's probe.
    pub backends: Vec<BackendReport>,
    /// What `--backend auto` picks, and why.
    pub auto: String,
}

/// One backend's lines.
#[derive(Debug, Serialize)]
pub struct BackendReport {
    /// Backend id.
    pub backend: String,
    /// Whether it can run here.
    pub usable: bool,
    /// Whether this build has it.
    pub built: bool,
    /// The checks.
    pub items: Vec<ProbeItem>,
}

fn item(name: &str, ok: bool, detail: impl Into<String>, fix: Option<&str>) -> ProbeItem {
    ProbeItem {
        name: name.into(),
        ok,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
        required: false,
    }
}

fn version_of(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
}

fn kvm(vm: &VmBackend) -> ProbeItem {
    let k = vm.kvm();
    let how = if k.verified {
        "verified by booting a guest"
    } else {
        "from /dev/kvm and the CPU flags"
    };
    item(
        "kvm",
        k.works,
        format!("{} ({how})", k.detail),
        Some(
            "the vm backend needs hardware KVM for speed; without it, it falls back to slow emulation",
        ),
    )
}

/// Collects the report. With the default image's tree at hand, KVM is checked by booting the
/// guest under it once (cached until reboot).
pub fn collect(default_rootfs: Option<&std::path::Path>) -> Report {
    let vm = VmBackend::new();
    if let Some(rootfs) = default_rootfs {
        let _ = vm.kvm_verified(rootfs);
    }
    let mut host = vec![kvm(&vm)];
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    host.push(item("kernel", true, release.trim(), None));
    let unpriv = fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .map(|s| s.trim() == "1")
        .unwrap_or(true);
    host.push(item(
        "unprivileged user namespaces",
        unpriv,
        if unpriv {
            "allowed"
        } else {
            "disabled by sysctl"
        },
        Some(
            "sysctl -w kernel.unprivileged_userns_clone=1 (needed only for a future rootless mode)",
        ),
    ));
    let v2 = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .or_else(|_| fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers"))
        .map(|s| s.trim().to_owned());
    host.push(match v2 {
        Ok(c) if c.is_empty() => item(
            "cgroup v2 controllers",
            false,
            "the v2 hierarchy has no controllers (hybrid host; v1 is used)",
            Some("boot with systemd.unified_cgroup_hierarchy=1 for pure v2"),
        ),
        Ok(c) => item("cgroup v2 controllers", true, c, None),
        Err(_) => item(
            "cgroup v2 controllers",
            false,
            "no cgroup v2 hierarchy",
            None,
        ),
    });
    for (cmd, args, fix) in [
        (
            "mmdebstrap",
            &["--version"][..],
            "apt-get install mmdebstrap (paddock image build installs it when run as root)",
        ),
        (
            "runsc",
            &["--version"][..],
            "run ./setup.sh: it adds this release's backports suite to apt and installs runsc (for the gvisor backend)",
        ),
        (
            "qemu-system-x86_64",
            &["--version"][..],
            "apt-get install qemu-system-x86 (for the vm backend)",
        ),
    ] {
        let v = version_of(cmd, args);
        host.push(item(
            cmd,
            v.is_some(),
            v.unwrap_or_else(|| "not installed".into()),
            Some(fix),
        ));
    }
    let vm_probe = vm.probe();
    let vm_kvm = vm.kvm();
    let gvisor = GvisorBackend::new(vm_kvm.works);
    let gvisor_probe = gvisor.probe();
    let ns = NsBackend::new();
    let probe = ns.probe();
    let ns_usable = probe.usable();
    let backends = vec![
        BackendReport {
            backend: "vm".into(),
            usable: vm_probe.usable(),
            built: true,
            items: vm_probe.items.clone(),
        },
        BackendReport {
            backend: "gvisor".into(),
            usable: gvisor_probe.usable(),
            built: true,
            items: gvisor_probe.items.clone(),
        },
        BackendReport {
            backend: "ns".into(),
            usable: ns_usable,
            built: true,
            items: probe.items.clone(),
        },
    ];
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        // What `system setup` gave this user, and the truth about running without root.
        if let Some(me) = crate::system::Account::current() {
            host.extend(crate::system::check(&me));
        }
    }
    // Why vm is passed over: no working KVM (under emulation a VM is 10-20x slower).
    let no_vm = format!("vm needs working KVM: {}", vm_kvm.detail);
    let auto = if vm_probe.usable() && vm_kvm.works {
        "vm (KVM works here)".to_owned()
    } else if gvisor_probe.usable() {
        format!("gvisor ({no_vm})")
    } else if ns_usable {
        format!(
            "ns ({no_vm}; gvisor cannot run: {})",
            gvisor_probe.reason().unwrap_or_default()
        )
    } else {
        format!(
            "none: ns cannot run here ({})",
            probe.reason().unwrap_or_default()
        )
    };
    Report {
        host,
        backends,
        auto,
    }
}

/// Renders the report for a terminal.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let line = |out: &mut String, i: &ProbeItem| {
        let mark = if i.ok {
            "ok  "
        } else if i.required {
            "FAIL"
        } else {
            "--  "
        };
        out.push_str(&format!("  [{mark}] {:<30} {}\n", i.name, i.detail));
        if !i.ok
            && let Some(f) = &i.fix
        {
            out.push_str(&format!("         {:<30} fix: {f}\n", ""));
        }
    };
    out.push_str("host\n");
    for i in &r.host {
        line(&mut out, i);
    }
    for b in &r.backends {
        let state = if !b.built {
            "not built yet"
        } else if b.usable {
            "usable"
        } else {
            "NOT usable"
        };
        out.push_str(&format!("backend {} ({state})\n", b.backend));
        if b.built {
            for i in &b.items {
                line(&mut out, i);
            }
        }
    }
    out.push_str(&format!("--backend auto picks: {}\n", r.auto));
    out
}
