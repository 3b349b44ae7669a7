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
            .arg("-M")
            .arg("microvm,x-option-roms=off,pit=on,pic=on,rtc=on,isa-serial=on,memory-backend=mem")
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
        if let Some(dir) = &cfg.jail_dir {
            c.arg("-chroot").arg(dir);
        }
        if let Some(user) = &cfg.run_as {
            c.arg("-runas").arg(user);
        }
        c
    }
}
