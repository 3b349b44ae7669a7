//! The virtual machine monitor behind a small trait: QEMU's `microvm` machine today; Cloud
//! Hypervisor or Firecracker fit the same shape (kernel, initramfs, one disk, vhost-user vsock
//! and file-system devices, a console log).

use std::path::PathBuf;
use std::process::Command;

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's software emulation (10-20× slower).
    Tcg,
}

impl Accel {
    /// Name as shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// One VM's devices and resources.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Shown in `ps`.
    pub name: String,
    /// Accelerator.
    pub accel: Accel,
    /// vCPUs.
    pub cpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// The root disk (qcow2 layer over the image's disk).
    pub disk: PathBuf,
    /// The vhost-user socket of the vsock device.
    pub vsock: PathBuf,
    /// The vhost-user sockets of the file-system devices, with their tags.
    pub shares: Vec<(String, PathBuf)>,
    /// Where the serial console goes.
    pub console_log: PathBuf,
    /// An empty directory to confine the VMM to after it opened its files.
    pub jail_dir: Option<PathBuf>,
    /// The unprivileged user the VMM becomes after it opened its files.
    pub run_as: Option<String>,
}

/// QEMU's `microvm` machine as Paddock starts it, with its firmware: qboot, named explicitly.
/// It loads the `-kernel` itself, without option ROMs and without touching the disks. QEMU 8
/// made SeaBIOS microvm's default; SeaBIOS needs the `linuxboot` option ROM to load a kernel
/// ("No bootable device" without it) and probes the virtio-blk disk, which QEMU 10 rejects
/// ("virtio-blk missing headers", and the guest never starts). Both QEMU 7.2 and 10 ship
/// `qboot.rom`.
pub const MICROVM: [&str; 4] = [
    "-bios",
    "qboot.rom",
    "-M",
    "microvm,x-option-roms=off,isa-serial=on",
];

/// A VMM Paddock can drive.
pub trait Vmm: std::fmt::Debug + Send + Sync {
    /// Short name (`qemu`).
    fn id(&self) -> &'static str;
    /// The command that runs `cfg` until the guest powers off.
    fn command(&self, cfg: &VmConfig) -> Command;
}

/// QEMU with the `microvm` machine: no PCI, no firmware tables beyond what Linux needs, virtio
/// over MMIO, no network device, no display.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// How this QEMU spells its confinement options ([`Qemu::confinement`]).
    pub confinement: Confinement,
}

/// How a QEMU takes the directory to chroot to and the user to become: QEMU 9 replaced
/// `-chroot` and `-runas` with `-run-with chroot=…,user=…` and QEMU 10 removed the old ones,
/// so the spelling follows the installed QEMU (Debian 12 has 7.2, its backports 10.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// `-run-with chroot=DIR,user=USER`.
    RunWith,
    /// `-chroot DIR -runas USER`.
    Legacy,
}

impl Qemu {
    /// The QEMU at `binary`, asked once per process which spelling it takes (its `-help`).
    pub fn at(binary: PathBuf) -> Qemu {
        static SEEN: std::sync::Mutex<Vec<(PathBuf, Confinement)>> =
            std::sync::Mutex::new(Vec::new());
        let mut seen = SEEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let confinement = match seen.iter().find(|(b, _)| *b == binary) {
            Some((_, c)) => *c,
            None => {
                let c = Self::confinement(&binary);
                seen.push((binary.clone(), c));
                c
            }
        };
        Qemu {
            binary,
            confinement,
        }
    }

    /// Which spelling the QEMU at `binary` documents in its `-help` (the old one when it
    /// cannot be asked: the start then fails with QEMU's own message).
    pub fn confinement(binary: &std::path::Path) -> Confinement {
        let help = Command::new(binary)
            .arg("-help")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output();
        match help {
            Ok(o) if Self::documents_run_with(&String::from_utf8_lossy(&o.stdout)) => {
                Confinement::RunWith
            }
            _ => Confinement::Legacy,
        }
    }

    /// Whether a `-help` text offers `-run-with` with both `chroot=` and `user=`.
    fn documents_run_with(help: &str) -> bool {
        help.lines()
            .find(|l| l.starts_with("-run-with"))
            .is_some_and(|l| l.contains("chroot=") && l.contains("user="))
    }
}

impl Vmm for Qemu {
    fn id(&self) -> &'static str {
        "qemu"
    }

    fn command(&self, cfg: &VmConfig) -> Command {
        let mut c = Command::new(&self.binary);
        let mem = cfg.memory_mib;
        let (accel, cpu) = match cfg.accel {
            Accel::Kvm => ("kvm", "host"),
            // A 128 MiB translation cache instead of the default 1 GiB: most of the VMM's own
            // memory under emulation (start time relative to bare QEMU unchanged within noise).
            Accel::Tcg => ("tcg,thread=multi,tb-size=128", "max"),
        };
        c.arg("-name")
            .arg(format!(
                "paddock-{},process=paddock-vm-{}",
                cfg.name, cfg.name
            ))
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-display", "none"])
            .args(&MICROVM[..3])
            .arg(format!(
                "{},pit=on,pic=on,rtc=on,memory-backend=mem",
                MICROVM[3]
            ))
            .arg("-accel")
            .arg(accel)
            .arg("-cpu")
            .arg(cpu)
            .arg("-smp")
            .arg(cfg.cpus.max(1).to_string())
            .arg("-m")
            .arg(format!("{mem}M"))
            .arg("-object")
            .arg(format!("memory-backend-memfd,id=mem,size={mem}M,share=on"))
            .args(["-global", "virtio-mmio.force-legacy=false"])
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&cfg.initrd)
            .arg("-append")
            .arg(&cfg.cmdline)
            .arg("-serial")
            .arg(format!("file:{}", cfg.console_log.display()))
            .arg("-drive")
            .arg(format!(
                "id=root,file={},format=qcow2,if=none,discard=unmap,cache=writeback",
                cfg.disk.display()
            ))
            .args(["-device", "virtio-blk-device,drive=root"])
            .arg("-chardev")
            .arg(format!("socket,id=vsock,path={}", cfg.vsock.display()))
            .args(["-device", "vhost-user-vsock-device,chardev=vsock"]);
        for (i, (tag, sock)) in cfg.shares.iter().enumerate() {
            c.arg("-chardev")
                .arg(format!("socket,id=fs{i},path={}", sock.display()))
                .arg("-device")
                .arg(format!("vhost-user-fs-device,chardev=fs{i},tag={tag}"));
        }
        // QEMU's own seccomp filter: no exec, no obsolete system calls, no scheduler or
        // resource changes. With -runas QEMU changes its ids after the filter is in place, so
        // set*id stays allowed; having dropped root, it cannot regain it anyway.
        let privileges = if cfg.run_as.is_some() {
            "allow"
        } else {
            "deny"
        };
        c.arg("-sandbox").arg(format!(
            "on,obsolete=deny,elevateprivileges={privileges},spawn=deny,resourcecontrol=deny"
        ));
        match self.confinement {
            Confinement::RunWith => {
                // QEMU's option syntax: a comma inside a value is written twice.
                let mut opts = Vec::new();
                if let Some(dir) = &cfg.jail_dir {
                    opts.push(format!(
                        "chroot={}",
                        dir.display().to_string().replace(',', ",,")
                    ));
                }
                if let Some(user) = &cfg.run_as {
                    opts.push(format!("user={}", user.replace(',', ",,")));
                }
                if !opts.is_empty() {
                    c.arg("-run-with").arg(opts.join(","));
                }
            }
            Confinement::Legacy => {
                if let Some(dir) = &cfg.jail_dir {
                    c.arg("-chroot").arg(dir);
                }
                if let Some(user) = &cfg.run_as {
                    c.arg("-runas").arg(user);
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig {
            name: "t".into(),
            accel: Accel::Tcg,
            cpus: 1,
            memory_mib: 256,
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: "console=ttyS0".into(),
            disk: "/d.qcow2".into(),
            vsock: "/v.sock".into(),
            shares: vec![],
            console_log: "/c.log".into(),
            jail_dir: Some("/run/x,y".into()),
            run_as: Some("nobody".into()),
        }
    }

    fn args(q: &Qemu) -> Vec<String> {
        q.command(&cfg())
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn confinement_follows_the_qemu() {
        let new = Qemu {
            binary: "q".into(),
            confinement: Confinement::RunWith,
        };
        let a = args(&new);
        let i = a.iter().position(|x| x == "-run-with").unwrap();
        assert_eq!(a[i + 1], "chroot=/run/x,,y,user=nobody");
        assert!(!a.contains(&"-chroot".to_owned()) && !a.contains(&"-runas".to_owned()));
        let old = Qemu {
            binary: "q".into(),
            confinement: Confinement::Legacy,
        };
        let a = args(&old);
        assert!(a.windows(2).any(|w| w == ["-chroot", "/run/x,y"]));
        assert!(a.windows(2).any(|w| w == ["-runas", "nobody"]));
        assert!(!a.contains(&"-run-with".to_owned()));
    }

    #[test]
    fn help_texts() {
        // QEMU 10.0's, and 7.2's (which has -run-with for async-teardown only from 8.1).
        assert!(Qemu::documents_run_with(
            "-run-with [async-teardown=on|off][,chroot=dir][user=username|uid:gid]\n"
        ));
        assert!(!Qemu::documents_run_with(
            "-chroot dir     chroot to dir just before starting the VM\n-runas user\n"
        ));
        assert!(!Qemu::documents_run_with(
            "-run-with async-teardown=on|off\n"
        ));
    }

    #[test]
    fn the_installed_qemu_is_asked() {
        let Some(q) = [
            "/usr/bin/qemu-system-x86_64",
            "/usr/local/bin/qemu-system-x86_64",
        ]
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.exists()) else {
            eprintln!("skipped: no qemu-system-x86_64 here");
            return;
        };
        let help = Command::new(q).arg("-help").output().unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        let want = if text.lines().any(|l| l.starts_with("-chroot")) {
            Confinement::Legacy
        } else {
            Confinement::RunWith
        };
        assert_eq!(Qemu::confinement(q), want);
    }
}
