//! What a VM boots from, prepared once per image next to its root filesystem (`vm/`): the
//! guest kernel from the distribution's own package (downloaded with `apt-get download`,
//! unpacked with `dpkg-deb -x`, never installed on the host), a cpio archive of the virtio
//! modules that kernel lacks built in, and the image's tree as a read-only ext4 disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cpio::Cpio;

/// Modules the guest needs and the cloud kernel builds as modules; their dependencies are found
/// in the modules' own `depends=` records.
const WANTED_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtiofs",
    "vmw_vsock_virtio_transport",
];

/// Modules a Docker Engine inside needs (`--docker`), for an image that has one: its storage
/// (overlay), its bridge network (bridge, veth, br_netfilter) and the netfilter rules it writes
/// (iptables over nf_tables, and the legacy tables). Loaded at every boot of such an image.
const DOCKER_MODULES: &[&str] = &[
    "overlay",
    "bridge",
    "br_netfilter",
    "veth",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_masq",
    "nft_nat",
    "nft_ct",
    "nf_nat",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "xt_addrtype",
    "xt_conntrack",
    "xt_MASQUERADE",
    "xt_nat",
    "xt_tcpudp",
    "xt_comment",
    "xt_mark",
    "ipt_REJECT",
    "ip_tables",
    "iptable_nat",
    "iptable_filter",
];

/// Whether the image whose tree is `rootfs` has Docker's engine (its VM then gets the modules
/// the engine needs).
fn has_docker(rootfs: &Path) -> bool {
    fs::symlink_metadata(rootfs.join("usr/sbin/dockerd")).is_ok()
}

/// Kernel packages tried in order: the small cloud kernel first, then the generic one.
const KERNEL_PACKAGES: &[&str] = &["linux-image-cloud-amd64", "linux-image-amd64"];

/// Layout version of the `vm/` directory.
const VERSION: u32 = 2;

/// Why the VM's files could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the VM image: {0}")]
pub struct PrepareError(pub String);

fn err(what: impl std::fmt::Display) -> PrepareError {
    PrepareError(what.to_string())
}

/// What `vm/vm.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmImage {
    /// The kernel package it came from, with its version.
    pub kernel_package: String,
    /// The kernel release (`uname -r` inside).
    pub kernel_release: String,
    /// Modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// Size of the root disk in bytes.
    pub disk_bytes: u64,
    /// Identity of this preparation: a sandbox's disk layer records the base it was made over
    /// and is refused over any other.
    pub id: String,
    /// Layout version.
    pub version: u32,
}

/// The prepared files of one image.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The directory.
    pub dir: PathBuf,
    /// What was prepared.
    pub info: VmImage,
}

impl Artifacts {
    /// The kernel.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    /// The modules archive (the first part of every initramfs).
    pub fn modules(&self) -> PathBuf {
        self.dir.join("modules.cpio")
    }
    /// The read-only base disk.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }

    /// The prepared files of the image whose tree is `rootfs`, if complete.
    pub fn find(rootfs: &Path) -> Option<Artifacts> {
        let dir = rootfs.parent()?.join("vm");
        let info: VmImage = serde_json::from_slice(&fs::read(dir.join("vm.json")).ok()?).ok()?;
        (info.version == VERSION).then_some(Artifacts { dir, info })
    }

    /// Prepares the VM files for the image whose tree is `rootfs` (owned as `idmap` says),
    /// unless they exist. Progress goes to `progress`.
    pub fn prepare(
        rootfs: &Path,
        idmap: &paddock_core::IdMap,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Artifacts, PrepareError> {
        if let Some(a) = Artifacts::find(rootfs) {
            return Ok(a);
        }
        let image_dir = rootfs
            .parent()
            .ok_or_else(|| err("the image has no directory"))?;
        // One preparation at a time: a second start waits for the first's files instead of
        // replacing them under its VM (held until this function returns).
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(image_dir.join(".vm.lock"))
            .map_err(|e| err(format!("cannot lock the image's VM files: {e}")))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            progress("waiting for another run that prepares this image's VM files");
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| err(format!("cannot lock the image's VM files: {e}")))?;
        }
        if let Some(a) = Artifacts::find(rootfs) {
            return Ok(a);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".vm-")
            .tempdir_in(image_dir)
            .map_err(|e| err(format!("cannot create a work directory: {e}")))?;
        let started = Instant::now();
        let (package, deb) = download_kernel(tmp.path(), progress)?;
        progress("unpacking the kernel and its virtio modules");
        let unpacked = tmp.path().join("unpacked");
        run(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
            "dpkg-deb -x",
        )?;
        let release = kernel_release(&unpacked)?;
        fs::copy(
            unpacked.join(format!("boot/vmlinuz-{release}")),
            tmp.path().join("vmlinuz"),
        )
        .map_err(|e| err(format!("the kernel package has no vmlinuz-{release}: {e}")))?;
        let mut wanted = WANTED_MODULES.to_vec();
        if has_docker(rootfs) {
            progress("adding the kernel modules Docker's engine needs");
            wanted.extend(DOCKER_MODULES);
        }
        let modules = modules_archive(
            &unpacked.join(format!("lib/modules/{release}")),
            &tmp.path().join("modules.cpio"),
            &wanted,
        )?;
        fs::remove_dir_all(&unpacked).map_err(|e| err(format!("cannot clean up: {e}")))?;
        let _ = fs::remove_file(&deb);
        progress("writing the image's tree to a disk (ext4)");
        let disk = tmp.path().join("rootfs.ext4");
        let disk_bytes = match &idmap.user {
            Some(ids) => make_disk_as_user(rootfs, ids, &disk)?,
            None => make_disk(rootfs, idmap.base, &disk)?,
        };
        let info = VmImage {
            kernel_package: package,
            kernel_release: release,
            modules,
            disk_bytes,
            id: format!(
                "{:x}-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
                std::process::id()
            ),
            version: VERSION,
        };
        let json = serde_json::to_vec_pretty(&info).map_err(err)?;
        fs::write(tmp.path().join("vm.json"), json).map_err(err)?;
        let dir = image_dir.join("vm");
        // An incomplete or older layout is replaced (sandbox disks made over it are refused by
        // their base check, and `paddock reset` starts them afresh).
        if dir.exists() {
            let doomed = image_dir.join(format!(".vm-old-{}", std::process::id()));
            fs::rename(&dir, &doomed)
                .map_err(|e| err(format!("cannot replace {}: {e}", dir.display())))?;
            let _ = fs::remove_dir_all(&doomed);
        }
        let kept = tmp.keep();
        if let Err(e) = fs::rename(&kept, &dir) {
            let _ = fs::remove_dir_all(&kept);
            // Another run prepared it at the same time: use theirs.
            return Artifacts::find(rootfs)
                .ok_or_else(|| err(format!("cannot move the VM files into place: {e}")));
        }
        progress(&format!(
            "VM image ready in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(Artifacts { dir, info })
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, PrepareError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run {what}: {e}")))?;
    succeeded(out, what)
}

/// What `what` printed, or what it said when it failed.
fn succeeded(out: std::process::Output, what: &str) -> Result<String, PrepareError> {
    if !out.status.success() {
        return Err(err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Downloads the kernel package from the host's configured apt sources: (package=version, .deb).
fn download_kernel(
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(String, PathBuf), PrepareError> {
    let mut tried = Vec::new();
    for meta in KERNEL_PACKAGES {
        let deps = match run(
            Command::new("apt-cache").args(["depends", "--important", meta]),
            "apt-cache depends",
        ) {
            Ok(d) => d,
            Err(e) => {
                tried.push(format!("{meta}: {e}"));
                continue;
            }
        };
        let Some(pkg) = deps
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|p| p.starts_with("linux-image-"))
        else {
            tried.push(format!("{meta}: no kernel image dependency"));
            continue;
        };
        progress(&format!(
            "downloading the guest kernel ({pkg}) from this host's apt sources"
        ));
        if let Err(e) = run(
            Command::new("apt-get")
                .args(["download", "-q", pkg])
                .current_dir(dir),
            "apt-get download",
        ) {
            tried.push(format!("{pkg}: {e}"));
            continue;
        }
        let deb = fs::read_dir(dir)
            .map_err(err)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| err(format!("apt-get download {pkg} left no .deb")))?;
        let version = run(
            Command::new("dpkg-deb")
                .args(["-f"])
                .arg(&deb)
                .arg("Version"),
            "dpkg-deb -f",
        )?;
        return Ok((format!("{pkg}={}", version.trim()), deb));
    }
    Err(err(format!(
        "no guest kernel package could be downloaded ({}); check `apt-get update` works",
        tried.join("; ")
    )))
}

fn kernel_release(unpacked: &Path) -> Result<String, PrepareError> {
    fs::read_dir(unpacked.join("lib/modules"))
        .map_err(|e| err(format!("the kernel package has no modules: {e}")))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .next()
        .ok_or_else(|| err("the kernel package has no modules directory"))
}

/// The `depends=` record of a module file.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.split(|b| *b == 0)
        .find_map(|rec| rec.strip_prefix(&key[..]))
        .map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

fn index_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            index_modules(&p, out);
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
            && let Some(stem) = name.strip_suffix(".ko")
        {
            out.insert(stem.replace('-', "_"), p);
        }
    }
}

/// Writes the modules archive: `modules/*.ko` and `modules/order` (dependencies first).
/// Returns the load order.
fn modules_archive(
    moddir: &Path,
    out: &Path,
    wanted: &[&str],
) -> Result<Vec<String>, PrepareError> {
    let mut index = BTreeMap::new();
    index_modules(&moddir.join("kernel"), &mut index);
    let builtin: BTreeSet<String> = fs::read_to_string(moddir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|f| f.trim_end_matches(".ko").replace('-', "_"))
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), PrepareError> {
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let Some(path) = index.get(name) else {
            if builtin.contains(name) {
                return Ok(());
            }
            return Err(err(format!(
                "the guest kernel has no module {name} and does not build it in"
            )));
        };
        let bytes = fs::read(path).map_err(err)?;
        for dep in module_depends(&bytes) {
            visit(&dep, index, builtin, seen, order)?;
        }
        order.push(name.to_owned());
        Ok(())
    }
    for m in wanted {
        visit(m, &index, &builtin, &mut seen, &mut order)?;
    }
    let mut cpio = Cpio::new();
    cpio.dir("modules");
    let mut listing = String::new();
    for name in &order {
        let data = fs::read(&index[name]).map_err(err)?;
        cpio.file(&format!("modules/{name}.ko"), 0o644, &data);
        listing.push_str(&format!("{name}.ko\n"));
    }
    cpio.file("modules/order", 0o644, listing.as_bytes());
    fs::write(out, cpio.finish()).map_err(err)?;
    Ok(order)
}

fn du(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.len();
    if meta.is_dir()
        && let Ok(rd) = fs::read_dir(path)
    {
        for e in rd.flatten() {
            total += du(&e.path());
        }
    }
    total
}

/// Creates a user namespace where host ids `base..base+65536` are `0..65536` (the image tree's
/// shifted ownership back to what the guest expects), as a descriptor to `setns` into.
fn shifted_userns(base: u32) -> Result<OwnedFd, PrepareError> {
    let mut holder = Command::new("sleep");
    holder.arg("60").stdin(Stdio::null());
    // SAFETY: unshare is async-signal-safe; the child execs right after.
    unsafe {
        holder.pre_exec(|| {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = holder
        .spawn()
        .map_err(|e| err(format!("cannot create a user namespace: {e}")))?;
    let pid = child.id();
    let result = (|| {
        let map = format!("0 {base} {}\n", paddock_core::ID_RANGE);
        fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        Ok::<_, std::io::Error>(OwnedFd::from(fs::File::open(format!(
            "/proc/{pid}/ns/user"
        ))?))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|e| err(format!("cannot map the image's ids: {e}")))
}

/// Writes `rootfs` into a new ext4 file `disk` with the ownership the guest expects.
fn make_disk(rootfs: &Path, base: u32, disk: &Path) -> Result<u64, PrepareError> {
    let used = du(rootfs);
    // Room for the filesystem's own metadata and a little slack; each sandbox's layer grows it.
    let bytes = (used + used / 4 + (256 << 20)).div_ceil(1 << 20) << 20;
    let f = fs::File::create(disk).map_err(err)?;
    f.set_len(bytes).map_err(err)?;
    drop(f);
    std::os::unix::fs::chown(disk, Some(base), Some(base)).map_err(err)?;
    let userns = shifted_userns(base)?;
    let ns = userns.as_raw_fd();
    // Inside the namespace the host's directories above the image are owned by nobody and
    // cannot be searched, so the tree and the disk are handed over as open descriptors.
    let disk_fd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(err)?;
    let tree_fd = rustix::fs::open(
        rootfs,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| err(format!("cannot open {}: {e}", rootfs.display())))?;
    let (disk_raw, tree_raw) = (disk_fd.as_raw_fd(), tree_fd.as_raw_fd());
    let mut mkfs = Command::new(mkfs_ext4()?);
    mkfs.args([
        "-q",
        "-F",
        "-L",
        "paddock-root",
        "-E",
        "root_owner=0:0",
        "-d",
    ])
    .arg("/proc/self/fd/11")
    .arg("/proc/self/fd/10");
    // SAFETY: fcntl, dup2, setns and set*id are async-signal-safe; the child execs right after.
    unsafe {
        mkfs.pre_exec(move || {
            // Move all three out of the way first: any of them may already be 10 or 11.
            let disk = libc::fcntl(disk_raw, libc::F_DUPFD, 100);
            let tree = libc::fcntl(tree_raw, libc::F_DUPFD, 100);
            let userns = libc::fcntl(ns, libc::F_DUPFD, 100);
            if disk < 0
                || tree < 0
                || userns < 0
                || libc::dup2(disk, 10) < 0
                || libc::dup2(tree, 11) < 0
                || libc::setns(userns, libc::CLONE_NEWUSER) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(0, 0, 0) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run(&mut mkfs, "mkfs.ext4 -d (from e2fsprogs)")?;
    drop((userns, disk_fd, tree_fd));
    std::os::unix::fs::chown(disk, Some(0), Some(0)).map_err(err)?;
    fs::set_permissions(disk, fs::Permissions::from_mode(0o444)).map_err(err)?;
    let _ = fs::File::open(disk).and_then(|f| f.sync_all());
    let _ = std::io::stderr().flush();
    Ok(bytes)
}

/// `mkfs.ext4`, found where the system keeps it (`/usr/sbin`, `/sbin`), which an ordinary
/// user's `PATH` does not name.
fn mkfs_ext4() -> Result<PathBuf, PrepareError> {
    paddock_core::tools::find_program("mkfs.ext4")
        .ok_or_else(|| err("mkfs.ext4 is missing (apt-get install e2fsprogs)"))
}

/// Runs `cmd` as root of a user namespace where `ids` map the image's ids (an ordinary user's
/// image: its tree belongs to the user's subordinate ids); its output, or what it said.
fn run_mapped(
    cmd: &mut Command,
    ids: &paddock_core::UserIds,
    what: &str,
) -> Result<String, PrepareError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = paddock_confine::user::spawn_mapped(cmd, ids)
        .map_err(|e| err(format!("cannot run {what}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("cannot run {what}: {e}")))?;
    succeeded(out, what)
}

/// [`make_disk`] for an ordinary user's image: the tree is read, and the disk written, by
/// `du` and `mkfs.ext4` running as root of a user namespace where the user's ids are the
/// image's, so the disk records the ids the guest expects. The disk stays the user's.
fn make_disk_as_user(
    rootfs: &Path,
    ids: &paddock_core::UserIds,
    disk: &Path,
) -> Result<u64, PrepareError> {
    let du = run_mapped(
        Command::new("du")
            .args(["-s", "-B1", "--apparent-size"])
            .arg(rootfs),
        ids,
        "du",
    )?;
    let used: u64 = du
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| err(format!("du said {du:?}")))?;
    let bytes = (used + used / 4 + (256 << 20)).div_ceil(1 << 20) << 20;
    let f = fs::File::create(disk).map_err(err)?;
    f.set_len(bytes).map_err(err)?;
    drop(f);
    run_mapped(
        Command::new(mkfs_ext4()?)
            .args([
                "-q",
                "-F",
                "-L",
                "paddock-root",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(rootfs)
            .arg(disk),
        ids,
        "mkfs.ext4 -d (from e2fsprogs)",
    )?;
    fs::set_permissions(disk, fs::Permissions::from_mode(0o444)).map_err(err)?;
    let _ = fs::File::open(disk).and_then(|f| f.sync_all());
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_depends_record() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=virtio,virtio_ring,vsock\0name=x\0";
        assert_eq!(module_depends(ko), ["virtio", "virtio_ring", "vsock"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }
}
