//! The namespace backend: a sandbox made of Linux namespaces (user, mount, pid, net, ipc, uts,
//! cgroup), an overlay root over the image, seccomp, Landlock and cgroup limits.
//!
//! The host side ([`NsBackend`]) prepares the sandbox's directories and cgroups and starts the
//! `paddock-ns-jail` binary, which does the privileged setup and becomes pid 1 inside (see
//! [`jail`]). The two talk over a `SOCK_SEQPACKET` socketpair carrying [`paddock_wire::Report`]s.

pub mod capabilities;
pub mod cgroup;
pub mod config;
#[cfg(target_os = "linux")]
pub mod jail;
pub mod landlock;
mod probe;
pub mod seccomp;
mod spawn;
mod stdio;

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use paddock_core::{
    Backend, BackendError, Egress, ExecHandle, Execs, Exit, Instance, Launch, Network, Probe,
    SandboxSpec, StartContext, Stdio,
};
use paddock_init::recv_report;
use paddock_policy::AbsPath;
use paddock_wire::Report;
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

use crate::cgroup::{CgroupHost, SandboxCgroups};
use crate::config::{Bind, EnterConfig, JailConfig};
use crate::spawn::JailProcess;

/// The namespace backend.
#[derive(Debug, Clone)]
pub struct NsBackend {
    jail: PathBuf,
}

/// Name of the jail binary, installed next to `paddock`.
pub const JAIL_BINARY: &str = "paddock-ns-jail";

/// The jail binary next to the running executable.
pub fn find_jail() -> PathBuf {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    dir.map(|d| d.join(JAIL_BINARY))
        .unwrap_or_else(|| PathBuf::from(JAIL_BINARY))
}

/// Moves `pid` into the cgroup directories `dirs` on a thread of its own (a cgroup v1 move
/// waits for an RCU grace period, which the jail's own setup overlaps).
pub fn join_cgroups(dirs: Vec<PathBuf>, pid: u32) -> std::thread::JoinHandle<Result<(), String>> {
    let pid = pid.to_string();
    std::thread::spawn(move || -> Result<(), String> {
        for dir in &dirs {
            fs::write(dir.join("cgroup.procs"), &pid)
                .map_err(|e| format!("cannot join {}: {e}", dir.display()))?;
        }
        Ok(())
    })
}

impl NsBackend {
    /// Finds the jail binary next to the running executable.
    pub fn new() -> NsBackend {
        NsBackend { jail: find_jail() }
    }

    /// Uses the jail binary at `path`.
    pub fn with_jail(path: PathBuf) -> NsBackend {
        NsBackend { jail: path }
    }
}

impl Default for NsBackend {
    fn default() -> Self {
        NsBackend::new()
    }
}

/// A running namespace sandbox.
#[derive(Debug)]
pub struct NsInstance {
    child: JailProcess,
    pidfd: OwnedFd,
    pty: Option<OwnedFd>,
    egress: Option<OwnedFd>,
    channel: OwnedFd,
    cgroups: SandboxCgroups,
    cgroup_dirs: Vec<PathBuf>,
    pid1: Option<OwnedFd>,
    diagnostics: Vec<String>,
    limit_events: Vec<String>,
    layer_image: Option<PathBuf>,
    /// Copies the command's streams (without a terminal); joined by `wait`.
    relay: Option<std::thread::JoinHandle<()>>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    BackendError::io(what)
}

/// Describes a shared host path ([`paddock_core::shared_path`]) and who owns it.
pub fn describe_bind(
    host: &AbsPath,
    target: &AbsPath,
    read_only: bool,
    what: &str,
) -> Result<Bind, BackendError> {
    let (canonical, meta) = paddock_core::shared_path(host, what)?;
    Ok(Bind {
        host: canonical,
        target: target.as_str().to_owned(),
        read_only,
        owner_uid: meta.uid(),
        owner_gid: meta.gid(),
        is_dir: meta.is_dir(),
        idmap: true,
    })
}

/// The workspace (first), the extra mounts of `spec`, each checked by [`describe_bind`], and
/// the git protection of the read-write ones ([`paddock_core::gitguard`]).
pub fn shared_binds(spec: &SandboxSpec) -> Result<Vec<Bind>, BackendError> {
    let mut binds = vec![describe_bind(
        &spec.workspace,
        &spec.workspace,
        false,
        "workspace",
    )?];
    if !binds[0].is_dir {
        return Err(BackendError::Io {
            what: format!("workspace {} is not a directory", spec.workspace),
            source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        });
    }
    for m in &spec.mounts {
        binds.push(describe_bind(
            &m.host,
            &m.sandbox,
            m.read_only,
            "mount source",
        )?);
    }
    // After the folders (gVisor mounts in this order): the git directories of the read-write
    // folders pinned in place, their hooks and config read-only.
    for (pin, target) in paddock_core::gitguard::for_spec(spec)? {
        let meta = fs::symlink_metadata(&pin.path)
            .map_err(io(format!("cannot protect {}", pin.path.display())))?;
        binds.push(Bind {
            host: pin.path,
            target,
            read_only: pin.read_only,
            owner_uid: meta.uid(),
            owner_gid: meta.gid(),
            is_dir: pin.is_dir,
            idmap: true,
        });
    }
    Ok(binds)
}

/// The sandbox's writable layer, the overlay's work directory and a mount point, made on first
/// use (the layer's root owned by the sandbox's root). Returns (upper, work, merged).
pub fn prepare_dirs(dir: &Path, base: u32) -> Result<(PathBuf, PathBuf, PathBuf), BackendError> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    let merged = dir.join("merged");
    // A `volatile` layer (a `--rm` run's) still here: that run ended before it removed the
    // sandbox, and its writes were never synced, so after a host crash the layer may be torn.
    // overlayfs refuses to mount it again as it is; it was to be deleted, so it starts over
    // from the clean image.
    if work.join("work/incompat/volatile").exists() {
        remove_layer_dirs(dir)?;
    }
    for d in [&work, &merged] {
        fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
    }
    if !upper.exists() {
        fs::create_dir_all(&upper).map_err(io(format!("cannot create {}", upper.display())))?;
        // The overlay's root takes its owner and mode from the upper directory.
        std::os::unix::fs::chown(&upper, Some(base), Some(base))
            .map_err(io("cannot set the layer's owner"))?;
        fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
            .map_err(io("cannot set the layer's mode"))?;
    }
    Ok((upper, work, merged))
}

/// Removes the writable layer's directories (`upper`, then `work`) of the sandbox directory
/// `dir`, each renamed first so that a half-removed layer is never mounted; the work
/// directory, which holds overlayfs's `volatile` marker, goes last, so a removal cut short is
/// redone by the next start ([`prepare_dirs`]). `reset` uses it too.
pub fn remove_layer_dirs(dir: &Path) -> Result<(), BackendError> {
    for sub in ["upper", "work"] {
        let p = dir.join(sub);
        if !p.exists() {
            continue;
        }
        let doomed = dir.join(format!(".rm-{sub}-{}", std::process::id()));
        fs::rename(&p, &doomed).map_err(io(format!("cannot reset {}", p.display())))?;
        fs::remove_dir_all(&doomed).map_err(io(format!("cannot remove {}", doomed.display())))?;
    }
    Ok(())
}

/// The sandbox's size-limited layer image (`--disk`): made on first use when a size is asked
/// for, and used from then on whatever later runs ask (the size belongs to the layer, as a VM's
/// disk's does). `None`: the layer is a plain directory, unlimited.
///
/// `discard`: this run's layer is removed after it (`--rm`) and mounted volatile; a marker
/// beside the image says so until then, so that a run killed before it removed the sandbox
/// leaves a layer the next start of that name discards (it was never synced) instead of using.
pub fn prepare_layer(
    dir: &Path,
    base: u32,
    disk: Option<u64>,
    discard: bool,
) -> Result<Option<PathBuf>, BackendError> {
    let image = dir.join(LAYER_IMAGE);
    let point = dir.join("layer");
    let torn = dir.join(VOLATILE_LAYER);
    if torn.exists() {
        for p in [&image, &torn] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("cannot discard {}", p.display()))(e)),
            }
        }
    }
    let made = prepare_layer_image(dir, &image, &point, base, disk)?;
    if discard && made.is_some() {
        fs::write(&torn, b"").map_err(io(format!("cannot create {}", torn.display())))?;
    }
    Ok(made)
}

/// The marker of a layer image that a `--rm` run mounted volatile.
const VOLATILE_LAYER: &str = "layer.volatile";

fn prepare_layer_image(
    dir: &Path,
    image: &Path,
    point: &Path,
    base: u32,
    disk: Option<u64>,
) -> Result<Option<PathBuf>, BackendError> {
    if !image.exists() {
        let Some(size) = disk else { return Ok(None) };
        unlimited_layer_in_use(dir)?;
        let tmp = dir.join(format!("{LAYER_IMAGE}.tmp"));
        let _ = fs::remove_file(&tmp);
        let template = layer_template(dir, base, size)?;
        copy_sparse(&template, &tmp).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            disk_err(format!(
                "cannot copy the empty layer {}: {e}",
                template.display()
            ))
        })?;
        fs::rename(&tmp, image).map_err(io(format!("cannot create {}", image.display())))?;
    }
    fs::create_dir_all(point).map_err(io(format!("cannot create {}", point.display())))?;
    Ok(Some(image.to_owned()))
}

/// An empty layer image of `size` bytes whose root belongs to `base`, kept beside the sandboxes
/// (`sandboxes/.layer-templates/`) and made once with `mkfs.ext4`: copying its few MiB of
/// metadata (a sparse copy) takes a few milliseconds where `mkfs.ext4` takes ~25, which every
/// `--rm` run would pay. The journal and inode tables are left to initialise lazily: on a new
/// sparse file they read as zeros already.
fn layer_template(dir: &Path, base: u32, size: u64) -> Result<PathBuf, BackendError> {
    let templates = dir
        .parent()
        .ok_or_else(|| disk_err("the sandbox directory has no parent".into()))?
        .join(".layer-templates");
    let template = templates.join(format!("{size}-{base}.ext4"));
    if template.exists() {
        return Ok(template);
    }
    fs::create_dir_all(&templates).map_err(io(format!("cannot create {}", templates.display())))?;
    let tmp = templates.join(format!(".{size}-{base}.{}", std::process::id()));
    let f = fs::File::create(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
    f.set_len(size)
        .map_err(io(format!("cannot size {}", tmp.display())))?;
    drop(f);
    let mkfs = paddock_core::tools::find_program("mkfs.ext4")
        .ok_or_else(|| disk_err("mkfs.ext4 is missing (apt-get install e2fsprogs)".into()))?;
    let out = std::process::Command::new(mkfs)
        .args(["-q", "-F", "-m", "0", "-E"])
        .arg(format!(
            "root_owner={base}:{base},lazy_itable_init=1,lazy_journal_init=1"
        ))
        .arg(&tmp)
        .output()
        .map_err(io("cannot run mkfs.ext4"))?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(disk_err(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // Complete only: another start may have made the same one meanwhile.
    fs::rename(&tmp, &template).map_err(io(format!("cannot create {}", template.display())))?;
    // One size kept per owner (the defaults come in a few sizes; a `--disk` size other than
    // theirs makes one more): older ones go.
    if let Ok(entries) = fs::read_dir(&templates) {
        let suffix = format!("-{base}.ext4");
        for e in entries.flatten() {
            let n = e.file_name();
            if n.to_string_lossy().ends_with(&suffix) && e.path() != template {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(template)
}

/// Copies `from` to a new file `to`, only its data (`SEEK_DATA`/`SEEK_HOLE`): the holes stay
/// holes.
fn copy_sparse(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::SeekFrom;
    let src = fs::File::open(from)?;
    let dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = rustix::fs::seek(&src, SeekFrom::Hole(data))?;
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            let want = (hole - off_in) as usize;
            let n = rustix::fs::copy_file_range(
                &src,
                Some(&mut off_in),
                &dst,
                Some(&mut off_out),
                want,
            )?;
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    Ok(())
}

/// The file name of a size-limited layer's image in the sandbox's directory.
pub const LAYER_IMAGE: &str = "layer.ext4";

fn disk_err(message: String) -> BackendError {
    BackendError::Layer {
        layer: "disk limit".into(),
        message,
    }
}

/// Refuses a size for a layer that already holds files without one (a plain directory cannot
/// be turned into a size-limited file system in place).
fn unlimited_layer_in_use(dir: &Path) -> Result<(), BackendError> {
    if fs::read_dir(dir.join("upper")).is_ok_and(|mut d| d.next().is_some()) {
        return Err(disk_err(format!(
            "this sandbox's layer was made without --disk; `paddock reset {}` first (its installed packages go) to give it a size",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// Gives a stopped sandbox's layer the size `bytes`: a layer image that exists grows (file and
/// file system, offline); it cannot shrink. With no image yet, the next start makes one of the
/// size asked (the caller records it). Call with the sandbox's lock held.
pub fn resize_layer(dir: &Path, bytes: u64) -> Result<(), BackendError> {
    let image = dir.join(LAYER_IMAGE);
    let Ok(meta) = fs::symlink_metadata(&image) else {
        return unlimited_layer_in_use(dir);
    };
    let now = meta.len();
    if bytes < now {
        return Err(disk_err(format!(
            "the layer is {} MB and can only grow; `paddock reset {}` empties it (its installed packages go), then any size can be given",
            now / 1_000_000,
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )));
    }
    if bytes == now {
        return Ok(());
    }
    let run = |program: &str, args: &[&str]| -> Result<(), BackendError> {
        let path = paddock_core::tools::find_program(program)
            .ok_or_else(|| disk_err(format!("{program} is missing (apt-get install e2fsprogs)")))?;
        let out = std::process::Command::new(path)
            .args(args)
            .arg(&image)
            .output()
            .map_err(io(format!("cannot run {program}")))?;
        // e2fsck: 1 means errors were corrected, which is fine before a resize.
        match out.status.code() {
            Some(0) => Ok(()),
            Some(1) if program == "e2fsck" => Ok(()),
            _ => Err(disk_err(format!(
                "{program} failed on {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    };
    // resize2fs wants a freshly checked file system; a grown file with the old file system in
    // it is harmless (the next resize finishes the job).
    run("e2fsck", &["-f", "-p"])?;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&image)
        .and_then(|f| f.set_len(bytes))
        .map_err(io(format!("cannot grow {}", image.display())))?;
    run("resize2fs", &[])
}

/// "disk limit: …" when the layer image is (nearly) full, read from its superblock.
pub fn layer_full(image: &Path) -> Option<String> {
    let (total, free, size) = superblock_counts(image)?;
    // Nearly full counts: ext4 keeps some blocks for itself, and the superblock's count lags.
    let threshold = (total / 50).max(64 * 1024 * 1024 / size.max(1));
    (free <= threshold).then(|| {
        format!(
            "disk limit: the writable layer ({} MB) is full or nearly",
            total * size / 1_000_000
        )
    })
}

/// (blocks, free blocks, block size) from the ext4 superblock of `image`, read in place (1024
/// bytes at offset 1024; `dumpe2fs -h` took 20 ms of every sandbox's end here).
fn superblock_counts(image: &Path) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::FileExt;
    let mut sb = [0u8; 1024];
    fs::File::open(image)
        .ok()?
        .read_exact_at(&mut sb, 1024)
        .ok()?;
    let u32_at = |o: usize| u64::from(u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]));
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let wide = u32_at(0x60) & 0x80 != 0;
    let (hi_total, hi_free) = if wide {
        (u32_at(0x150) << 32, u32_at(0x158) << 32)
    } else {
        (0, 0)
    };
    let size = 1024u64.checked_shl(u32_at(0x18) as u32)?;
    Some((u32_at(0x4) | hi_total, u32_at(0xC) | hi_free, size))
}

/// A file Paddock made for this run, bound read-only at `target`.
pub fn run_file(host: &Path, target: &str) -> Bind {
    Bind {
        host: host.to_owned(),
        target: target.to_owned(),
        read_only: true,
        owner_uid: 0,
        owner_gid: 0,
        is_dir: false,
        idmap: false,
    }
}

/// `/etc/hosts` and `/etc/hostname` for the sandbox, written to the sandbox's directory on the
/// host (never into the writable layer) and bound read-only.
pub fn generated_files(dir: &Path, hostname: &str) -> Result<Vec<Bind>, BackendError> {
    let etc = dir.join("etc");
    fs::create_dir_all(&etc).map_err(io(format!("cannot create {}", etc.display())))?;
    let files = [
        (
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
        ),
        ("hostname", format!("{hostname}\n")),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = etc.join(name);
        fs::write(&p, text).map_err(io(format!("cannot write {}", p.display())))?;
        out.push(Bind {
            host: p,
            target: format!("/etc/{name}"),
            read_only: true,
            owner_uid: 0,
            owner_gid: 0,
            is_dir: false,
            idmap: false,
        });
    }
    Ok(out)
}

impl Backend for NsBackend {
    fn id(&self) -> &'static str {
        "ns"
    }

    fn probe(&self) -> Probe {
        probe::probe(&self.jail)
    }

    fn exec(
        &self,
        spec: &SandboxSpec,
        handle: ExecHandle,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        let cgroups: Vec<PathBuf> =
            serde_json::from_str(&handle.detail).map_err(|e| BackendError::Layer {
                layer: "exec".into(),
                message: format!("bad handle from the supervisor: {e}"),
            })?;
        let cfg = EnterConfig {
            cgroups: cgroups.clone(),
            command: launch.command(spec.no_new_privs),
        };
        let json = serde_json::to_vec(&cfg).unwrap_or_default();
        let launched = start_jail(&self.jail, Some("enter"), launch.stdio, Some(handle.fd))?;
        let inst = finish(launched, &json, &cgroups, || Ok(Vec::new()))?;
        Ok(Box::new(inst))
    }

    fn start(
        &self,
        ctx: &StartContext,
        spec: &SandboxSpec,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        if !rustix::process::geteuid().is_root() {
            return Err(BackendError::Unavailable {
                backend: "ns",
                reason: "the namespace backend currently needs root (it writes id maps and makes idmapped mounts); run paddock as root".into(),
            });
        }
        // The jail loads while the sandbox is prepared; it waits for its configuration.
        let launched = start_jail(&self.jail, None, launch.stdio, None)?;
        let (cfg, cgroups) = match prepare(ctx, spec, launch) {
            Ok(prepared) => prepared,
            Err(e) => {
                launched.abandon();
                return Err(e);
            }
        };
        let json = serde_json::to_vec(&cfg).unwrap_or_default();
        let premount = || {
            jail::premount(&cfg).map_err(|f| BackendError::Layer {
                layer: f.layer.into(),
                message: f.message,
            })
        };
        let mut inst = match finish(launched, &json, &cfg.cgroups, premount) {
            Ok(i) => i,
            Err(e) => {
                cgroups.remove();
                return Err(e);
            }
        };
        if cfg.egress && inst.egress.is_none() {
            let _ = inst.child.kill();
            let _ = inst.child.wait();
            cgroups.remove();
            return Err(BackendError::Layer {
                layer: "network".into(),
                message: "the sandbox did not hand over its proxy listener".into(),
            });
        }
        inst.cgroups = cgroups;
        inst.layer_image = cfg.layer_image;
        Ok(Box::new(inst))
    }
}

/// The sandbox's directories, generated files and cgroups, and the jail's configuration.
fn prepare(
    ctx: &StartContext,
    spec: &SandboxSpec,
    launch: &Launch,
) -> Result<(JailConfig, SandboxCgroups), BackendError> {
    let base = ctx.image.idmap.base;
    let mut binds = shared_binds(spec)?;
    let (upper, work, merged) = prepare_dirs(&ctx.sandbox_dir, base)?;
    let layer_image = prepare_layer(
        &ctx.sandbox_dir,
        base,
        spec.limits.disk.map(|d| d.0),
        spec.discard_layer,
    )?;
    binds.extend(generated_files(&ctx.sandbox_dir, spec.name.as_str())?);
    if let Some(ca) = &ctx.extra_ca {
        let bundle = paddock_core::trust_store_file(ctx, ca)?;
        binds.push(run_file(&bundle, paddock_core::TRUST_STORE));
    }
    let cgroups = SandboxCgroups::create(&CgroupHost::detect(), spec.name.as_str(), &spec.limits)
        .map_err(|e| BackendError::Layer {
        layer: "cgroup".into(),
        message: e.to_string(),
    })?;
    let cfg = JailConfig {
        hostname: spec.name.to_string(),
        lower: ctx.image_rootfs.clone(),
        upper,
        work,
        merged,
        id_base: base,
        binds,
        cgroups: cgroups.dirs.clone(),
        command: launch.command(spec.no_new_privs),
        egress: spec.network == Network::Proxy,
        layer_image,
        volatile: spec.discard_layer,
        tmpfs_size: spec.limits.tmpfs_size().map(|b| b.0),
    };
    Ok((cfg, cgroups))
}

/// A jail started and waiting for its configuration (it reads descriptor 3 to its end before
/// anything else), so that it loads while the host side prepares the sandbox.
struct Launched {
    child: JailProcess,
    channel: OwnedFd,
    config: OwnedFd,
    new_sandbox: bool,
    /// The supervisor's ends of the command's streams (none with a terminal).
    relay: Option<stdio::Relay>,
}

/// Starts the jail (in `mode`, or as a new sandbox) with `target` as its descriptor 5.
fn start_jail(
    jail: &Path,
    mode: Option<&str>,
    stdio: Stdio,
    target: Option<OwnedFd>,
) -> Result<Launched, BackendError> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| BackendError::io("cannot create the report channel")(e.into()))?;
    let (cfg_r, cfg_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| BackendError::io("cannot create the configuration pipe")(e.into()))?;
    let mut fds = vec![cfg_r.as_fd(), theirs.as_fd()];
    fds.extend(target.as_ref().map(|t| t.as_fd()));
    // Without a terminal the command's streams are pipes this process relays; with one they
    // are /dev/null (the terminal is the sandbox's own pty). Never this process's own.
    let pipes = match stdio {
        Stdio::Inherit => Some(
            stdio::pipes().map_err(|e| BackendError::io("cannot create the command's pipes")(e))?,
        ),
        Stdio::Pty => None,
    };
    let streams = pipes.as_ref().map(|p| {
        let [a, b, c] = &p.theirs;
        [a.as_fd(), b.as_fd(), c.as_fd()]
    });
    let child = spawn::spawn(jail, mode.as_slice(), &fds, streams)
        .map_err(io(format!("cannot start {}", jail.display())))?;
    Ok(Launched {
        child,
        channel: ours,
        config: cfg_w,
        new_sandbox: mode.is_none(),
        relay: pipes.map(|p| p.ours),
    })
}

impl Launched {
    /// Ends a jail whose sandbox could not be prepared.
    fn abandon(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hands the `launched` jail its configuration `json`, moves it into `cgroups`, sends it what
/// `premount` made meanwhile with the answer, and waits for its `Ready`.
fn finish(
    launched: Launched,
    json: &[u8],
    cgroups: &[PathBuf],
    premount: impl FnOnce() -> Result<Vec<OwnedFd>, BackendError>,
) -> Result<NsInstance, BackendError> {
    let Launched {
        mut child,
        channel: ours,
        config: cfg_w,
        new_sandbox,
        relay,
    } = launched;
    // Move the jail into its cgroups while it sets up its namespaces (the move waits for an RCU
    // grace period with cgroup v1); the jail forks pid 1 only after the answer below.
    let joiner = join_cgroups(cgroups.to_vec(), child.id());
    let mut w = fs::File::from(cfg_w);
    let _ = w.write_all(json);
    drop(w);
    let made = premount();
    let joined = joiner
        .join()
        .unwrap_or_else(|_| Err("the cgroup thread panicked".into()));
    let made = match made {
        Ok(fds) => fds,
        Err(e) => {
            let _ = rustix::net::send(&ours, &[0], rustix::net::SendFlags::NOSIGNAL);
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let ack = [u8::from(joined.is_ok())];
    let fds: Vec<BorrowedFd<'_>> = made.iter().map(|f| f.as_fd()).collect();
    let _ = paddock_init::send_with_fds(ours.as_fd(), &ack, &fds);
    drop(made);
    // On failure the jail reports `cgroup` (or the earlier failure that made the move fail).
    let cgroup_error = joined.err();
    let pid = child.id() as i32;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| BackendError::io("bad pid")(std::io::ErrorKind::Other.into()))?,
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(|e| BackendError::io("pidfd_open")(e.into()))?;
    let relay = match relay {
        Some(r) => Some(
            pidfd
                .try_clone()
                .and_then(|exit| r.start(exit))
                .map_err(io("cannot relay the command's streams"))?,
        ),
        None => None,
    };
    let mut pty = None;
    let mut egress = None;
    let (pid1, pid1_fd) = loop {
        match recv_report(ours.as_fd()) {
            Ok(Some((Report::Ready { pid }, fd))) => break (pid, fd),
            Ok(Some((Report::PtyMaster, fd))) => pty = fd,
            Ok(Some((Report::EgressListener, fd))) => egress = fd,
            Ok(Some((Report::SetupFailed { layer, message }, _))) => {
                let _ = child.wait();
                let message = match (&*layer, cgroup_error) {
                    ("cgroup", Some(detail)) => detail,
                    (_, _) => message,
                };
                return Err(BackendError::Layer { layer, message });
            }
            Ok(Some((Report::ExecFailed { .. } | Report::LimitsHit { .. }, _))) => {
                // Cannot happen before Ready; treat as a protocol error.
                let _ = child.kill();
                let _ = child.wait();
                return Err(BackendError::Layer {
                    layer: "init".into(),
                    message: "unexpected report before ready".into(),
                });
            }
            Ok(None) | Err(_) => {
                let status = child.wait().map_err(io("waiting for the jail"))?;
                return Err(BackendError::Layer {
                    layer: "init".into(),
                    message: format!("the jail exited during setup ({status})"),
                });
            }
        }
    };
    // The sandbox's pid 1 (a new sandbox's; `exec` enters it), held by a pidfd so that a
    // recycled pid can never be entered by mistake: the one init sent with `Ready` (valid even
    // if the command has ended since, and init with it), else one opened from its pid.
    let pid1 = pid1_fd.or_else(|| {
        rustix::process::Pid::from_raw(pid1)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
    });
    let mut inst = NsInstance {
        child,
        pidfd,
        pty,
        egress,
        channel: ours,
        cgroups: SandboxCgroups::default(),
        cgroup_dirs: cgroups.to_vec(),
        pid1,
        diagnostics: vec![],
        limit_events: vec![],
        layer_image: None,
        relay,
    };
    if new_sandbox && inst.pid1.is_none() {
        let _ = inst.child.kill();
        let _ = inst.child.wait();
        return Err(BackendError::Layer {
            layer: "init".into(),
            message: "the sandbox's pid 1 is gone".into(),
        });
    }
    Ok(inst)
}

impl Instance for NsInstance {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    fn take_pty(&mut self) -> Option<OwnedFd> {
        self.pty.take()
    }

    fn take_egress(&mut self) -> Option<Egress> {
        self.egress.take().map(Egress::TcpListener)
    }

    fn signal(&self, signal: i32) -> Result<(), BackendError> {
        // SAFETY: kill has no memory effects; the pid is our child, not yet reaped (we hold it).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(BackendError::io("cannot signal the sandbox")(
                std::io::Error::last_os_error(),
            ))
        }
    }

    fn wait(&mut self) -> Result<Exit, BackendError> {
        let status = self.child.wait().map_err(io("waiting for the sandbox"));
        // The command's last output is copied before its exit is reported.
        if let Some(r) = self.relay.take() {
            let _ = r.join();
        }
        // Reports left in the channel (an exec failure) become diagnostics.
        let _ = rustix::io::ioctl_fionbio(&self.channel, true);
        while let Ok(Some((report, _))) = recv_report(self.channel.as_fd()) {
            if let Report::ExecFailed {
                program, message, ..
            } = report
            {
                self.diagnostics.push(format!("{program}: {message}"));
            }
        }
        self.limit_events = self.cgroups.events();
        self.limit_events
            .extend(self.layer_image.as_deref().and_then(layer_full));
        self.cgroups.remove();
        let status = status?;
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code { code },
            (None, Some(signal)) => Exit::Signal { signal },
            _ => Exit::Code { code: 125 },
        })
    }

    fn diagnostics(&mut self) -> Vec<String> {
        std::mem::take(&mut self.diagnostics)
    }

    fn limits_hit(&self) -> Vec<String> {
        self.limit_events.clone()
    }

    fn execs(&self) -> Option<Box<dyn Execs>> {
        let pid1 = self.pid1.as_ref()?.try_clone().ok()?;
        Some(Box::new(NsExecs {
            pid1,
            cgroups: self.cgroup_dirs.clone(),
        }))
    }
}

/// Hands out the sandbox's pid 1 (a pidfd) and cgroups, for `paddock-ns-jail enter`.
struct NsExecs {
    pid1: OwnedFd,
    cgroups: Vec<PathBuf>,
}

impl Execs for NsExecs {
    fn handle(&self) -> Result<ExecHandle, BackendError> {
        Ok(ExecHandle {
            fd: self
                .pid1
                .try_clone()
                .map_err(io("cannot duplicate the sandbox's pidfd"))?,
            detail: serde_json::to_string(&self.cgroups).unwrap_or_default(),
        })
    }

    fn dial(&self, port: u16) -> Result<OwnedFd, BackendError> {
        // A thread of its own enters the sandbox's network namespace (namespaces belong to
        // threads) and connects there; the socket stays in that namespace after the thread
        // ends, and the rest of the supervisor never leaves the host's.
        let pid1 = self
            .pid1
            .try_clone()
            .map_err(io("cannot duplicate the sandbox's pidfd"))?;
        std::thread::Builder::new()
            .name("dial".into())
            .spawn(move || -> std::io::Result<OwnedFd> {
                // SAFETY: setns has no memory effects; it changes only this thread's network
                // namespace, and the thread ends right after connecting.
                if unsafe { libc::setns(pid1.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                Ok(OwnedFd::from(s))
            })
            .map_err(io("cannot start a thread"))?
            .join()
            .map_err(|_| BackendError::io("dial")(std::io::ErrorKind::Other.into()))?
            .map_err(io(format!("nothing answers on port {port} in the sandbox")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_layer_superblock_is_read_as_dumpe2fs_reads_it() {
        let (Some(mkfs), Some(dumpe2fs)) = (
            paddock_core::tools::find_program("mkfs.ext4"),
            paddock_core::tools::find_program("dumpe2fs"),
        ) else {
            panic!("e2fsprogs (mkfs.ext4, dumpe2fs) must be installed: the layer needs them");
        };
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("l.ext4");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(3 << 30)
            .unwrap();
        let made = std::process::Command::new(mkfs)
            .args(["-q", "-F"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(made.success());
        let out = std::process::Command::new(dumpe2fs)
            .arg("-h")
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
                .unwrap()
        };
        assert_eq!(
            super::superblock_counts(&img),
            Some((
                field("Block count:"),
                field("Free blocks:"),
                field("Block size:")
            ))
        );
        assert_eq!(super::layer_full(&img), None);
        assert_eq!(super::superblock_counts(t.path()), None);
    }
}
