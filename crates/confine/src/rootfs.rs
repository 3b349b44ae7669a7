//! A sandbox's root filesystem on the host: its directories, its writable layer (plain
//! directories, or a size-limited ext4 image copied from an empty one kept per size), the
//! files Paddock generates for it, and the shared paths it binds, checked. Used by every
//! backend that builds an overlay root (ns, gvisor) and by the commands that resize or remove
//! a layer.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use paddock_core::{BackendError, SandboxSpec};
use paddock_policy::AbsPath;

use crate::config::Bind;

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
        review: None,
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
            review: None,
        });
    }
    Ok(binds)
}

/// Review mode: makes the review layer of the sandbox directory `dir` on first use
/// ([`paddock_core::review_dirs`]) and returns its directory. A fresh upper directory, the
/// overlay's root, takes the mode of the `workspace` root and the host ids `owner` (whoever the
/// backend writes the agent's files as: host `base` + 1000 for ns and gvisor in root mode, the
/// folder's owner for vm's virtiofsd; `None` in user mode, where the user is the agent).
pub fn prepare_review(
    dir: &Path,
    workspace: &Path,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, BackendError> {
    let dirs = paddock_core::review_dirs(dir);
    let meta =
        fs::metadata(workspace).map_err(io(format!("cannot read {}", workspace.display())))?;
    let mode = meta.permissions().mode() & 0o7777;
    let upper = dirs.layer.join("upper");
    for d in [&dirs.state, &dirs.layer.join("work")] {
        fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
    }
    // The review's own records are written by the review helper, which runs as the
    // workspace's owner (`paddock_confine::review`).
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&dirs.state, Some(meta.uid()), Some(meta.gid()))
            .map_err(io("cannot set the owner of the review's records"))?;
    }
    if !upper.exists() {
        // Made complete under another name, so that a half-made one is never mounted.
        let fresh = dirs.layer.join(".upper-new");
        let _ = fs::remove_dir(&fresh);
        fs::create_dir(&fresh).map_err(io(format!("cannot create {}", fresh.display())))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&fresh, Some(uid), Some(gid))
                .map_err(io("cannot set the review layer's owner"))?;
        }
        fs::set_permissions(&fresh, fs::Permissions::from_mode(mode))
            .map_err(io("cannot set the review layer's mode"))?;
        fs::rename(&fresh, &upper).map_err(io(format!("cannot create {}", upper.display())))?;
    }
    Ok(dirs.layer)
}

/// [`prepare_review`] for a backend that shares the workspace, `binds[0]`, as an overlay
/// ([`Bind::review`]) built by the jail: ns and gvisor. `base`: the host id of the sandbox's
/// root in root mode.
pub fn review_workspace(
    dir: &Path,
    base: Option<u32>,
    binds: &mut [Bind],
) -> Result<(), BackendError> {
    let Some(ws) = binds.first_mut() else {
        return Ok(());
    };
    let agent = base.map(|b| (b + paddock_core::AGENT_ID, b + paddock_core::AGENT_ID));
    ws.review = Some(prepare_review(dir, &ws.host, agent)?);
    Ok(())
}

/// The sandbox's writable layer, the overlay's work directory and a mount point, made on first
/// use (the layer's root owned by the sandbox's root, host uid `base`; in user mode, `None`,
/// the jail gives it to the sandbox's root). Returns (upper, work, merged).
///
/// `discard`: this run's layer is removed after it (`--rm`) and mounted volatile; a marker
/// beside it says so until then (overlayfs's own, in the work directory, belongs to the
/// sandbox's root, whose directory an ordinary user cannot look into).
pub fn prepare_dirs(
    dir: &Path,
    base: Option<u32>,
    discard: bool,
) -> Result<(PathBuf, PathBuf, PathBuf), BackendError> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    let merged = dir.join("merged");
    let marker = dir.join(VOLATILE_DIRS);
    // A `volatile` layer (a `--rm` run's) still here: that run ended before it removed the
    // sandbox, and its writes were never synced, so after a host crash the layer may be torn.
    // overlayfs refuses to mount it again as it is; it was to be deleted, so it starts over
    // from the clean image.
    if marker.exists() || work.join("work/incompat/volatile").exists() {
        remove_layer_dirs(dir)?;
        match fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("cannot discard {}", marker.display()))(e)),
        }
    }
    if discard {
        fs::write(&marker, b"").map_err(io(format!("cannot create {}", marker.display())))?;
    }
    for d in [&work, &merged] {
        fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
    }
    if !upper.exists() {
        fs::create_dir_all(&upper).map_err(io(format!("cannot create {}", upper.display())))?;
        // The overlay's root takes its owner and mode from the upper directory.
        if let Some(base) = base {
            std::os::unix::fs::chown(&upper, Some(base), Some(base))
                .map_err(io("cannot set the layer's owner"))?;
        }
        fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
            .map_err(io("cannot set the layer's mode"))?;
    }
    Ok((upper, work, merged))
}

/// Removes the writable layer's directories (`upper`, then `work`) of the sandbox directory
/// `dir`, each renamed first so that a half-removed layer is never mounted; the work
/// directory, which holds overlayfs's `volatile` marker, goes last, so a removal cut short is
/// redone by the next start ([`prepare_dirs`]). [`reset_layer`] uses it too.
pub fn remove_layer_dirs(dir: &Path) -> Result<(), BackendError> {
    for sub in ["upper", "work"] {
        let p = dir.join(sub);
        if !p.exists() {
            continue;
        }
        let doomed = dir.join(format!(".rm-{sub}-{}", std::process::id()));
        fs::rename(&p, &doomed).map_err(io(format!("cannot reset {}", p.display())))?;
        crate::user::remove_tree(&doomed)
            .map_err(io(format!("cannot remove {}", doomed.display())))?;
    }
    Ok(())
}

/// Removes the writable layer of the sandbox directory `dir` (the ns and gvisor backends'
/// `reset`): its directories ([`remove_layer_dirs`]), then a size-limited layer's image, so
/// that the next start makes a fresh one if a size is asked for.
pub fn reset_layer(dir: &Path) -> Result<(), BackendError> {
    remove_layer_dirs(dir)?;
    let image = dir.join(LAYER_IMAGE);
    if image.exists() {
        fs::remove_file(&image).map_err(io(format!("cannot reset {}", image.display())))?;
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

/// The marker of a plain layer (`upper/`, `work/`) that a `--rm` run mounted volatile.
const VOLATILE_DIRS: &str = "upper.volatile";

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
        review: None,
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
            review: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_reset_removes_the_layer_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for sub in ["upper/usr/bin", "work/work", "review/upper"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for file in [super::LAYER_IMAGE, "lock", "trust-report.txt"] {
            std::fs::write(d.join(file), "x").unwrap();
        }
        super::reset_layer(d).unwrap();
        assert_eq!(names(d), ["lock", "review", "trust-report.txt"]);
        // Nothing left to remove is no error.
        super::reset_layer(d).unwrap();
        assert_eq!(names(d), ["lock", "review", "trust-report.txt"]);
    }

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
