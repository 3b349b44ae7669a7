//! The sandbox's mount tree, built with the descriptor-based mount API so no path inside the
//! (attacker-writable) writable layer is ever resolved through a symlink.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags, mkdirat, mknodat, openat, openat2,
    symlinkat,
};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags, fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount,
    fsopen, mount_change, move_mount, open_tree, unmount,
};

use super::sys::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use super::{Failure, Layer};
use crate::config::{Bind, JailConfig, RunscConfig};

const LAYER: &str = "mounts";

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Opens `name` under `dir` as an O_PATH directory, refusing symlinks.
fn open_dir(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    openat2(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    )
}

/// Walks `rel` (components separated by '/') under `root`, creating missing directories owned
/// by the sandbox's root, and returns the last one. With `file`, the last component is a file
/// mount point (created empty if missing).
fn ensure_beneath(
    root: BorrowedFd<'_>,
    rel: &str,
    file: bool,
    owner: u32,
) -> Result<OwnedFd, Failure> {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let what = |c: &str| {
        format!(
            "cannot create mount point /{rel} (at {c:?}); if the sandbox's layer was changed, `paddock reset` it"
        )
    };
    let mut cur = open_dir(root, ".").layer(LAYER, &what("."))?;
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        if last && file {
            let f = openat2(
                cur.as_fd(),
                *c,
                OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_bits_truncate(0o644),
                resolve_flags(),
            )
            .layer(LAYER, &what(c))?;
            drop(f);
            return openat2(
                cur.as_fd(),
                *c,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                resolve_flags(),
            )
            .layer(LAYER, &what(c));
        }
        let next = match open_dir(cur.as_fd(), c) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                mkdirat(cur.as_fd(), *c, Mode::from_bits_truncate(0o755)).layer(LAYER, &what(c))?;
                chown_root(cur.as_fd(), c, owner)?;
                open_dir(cur.as_fd(), c).layer(LAYER, &what(c))?
            }
            Err(e) => return Err(e).layer(LAYER, &what(c)),
        };
        cur = next;
    }
    Ok(cur)
}

/// Binds the host's `/dev/NAME` over an empty file `name` in `dev`, after checking that it is
/// the character device `major:minor` (and not, say, a symlink a host admin made).
fn bind_host_device(
    dev: BorrowedFd<'_>,
    name: &str,
    major: u32,
    minor: u32,
) -> Result<(), Failure> {
    let what = format!("cannot bind the host's /dev/{name}");
    let host = openat(
        CWD,
        format!("/dev/{name}").as_str(),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .layer(LAYER, &what)?;
    let st = rustix::fs::fstat(&host).layer(LAYER, &what)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice
        || st.st_rdev != rustix::fs::makedev(major, minor)
    {
        return Err(Failure::new(
            LAYER,
            format!("{what}: it is not the device {major}:{minor}"),
        ));
    }
    let point = openat(
        dev,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )
    .layer(LAYER, &what)?;
    drop(point);
    let tree = open_tree(
        host.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .layer(LAYER, &what)?;
    sys::mount_setattr(
        tree.as_fd(),
        false,
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        None,
    )
    .layer(LAYER, &what)?;
    let target = openat(
        dev,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .layer(LAYER, &what)?;
    attach(tree.as_fd(), target.as_fd(), &what)
}

/// Gives `name` under `dir` to the sandbox's root (without following a symlink).
fn chown_root(dir: BorrowedFd<'_>, name: &str, base: u32) -> Result<(), Failure> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(base)),
        Some(rustix::fs::Gid::from_raw(base)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .layer(LAYER, &format!("cannot set the owner of /dev/{name}"))
}

/// Attaches the detached mount `mnt` on top of `target`.
pub(super) fn attach(
    mnt: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    what: &str,
) -> Result<(), Failure> {
    move_mount(
        mnt,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .layer(LAYER, what)
}

/// A new filesystem instance as a detached mount.
pub(super) fn new_fs(
    fstype: &str,
    opts: &[(&str, &str)],
    flags: &[&str],
    attrs: MountAttrFlags,
) -> Result<OwnedFd, Failure> {
    let what = format!("cannot create {fstype}");
    let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).layer(LAYER, &what)?;
    for (k, v) in opts {
        fsconfig_set_string(fs.as_fd(), *k, *v).layer(LAYER, &format!("{what} ({k}={v})"))?;
    }
    for f in flags {
        fsconfig_set_flag(fs.as_fd(), *f).layer(LAYER, &format!("{what} ({f})"))?;
    }
    fsconfig_create(fs.as_fd()).layer(LAYER, &what)?;
    fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs).layer(LAYER, &what)
}

/// The writable layer's `upper` and `work` directories: the given ones, or those inside the
/// size-limited layer image (mounted next to them, at `layer`).
fn writable(
    upper: &Path,
    work: &Path,
    image: Option<&Path>,
    base: u32,
    volatile: bool,
) -> Result<(std::path::PathBuf, std::path::PathBuf), Failure> {
    match image {
        None => Ok((upper.to_owned(), work.to_owned())),
        Some(img) => {
            let at = upper.with_file_name("layer");
            super::layer::mount(img, &at, base, volatile)
        }
    }
}

/// The host path of `b`, opened with `flags`. The host side canonicalised it; refusing every
/// symlink here closes the gap between that check and this open.
fn open_share(b: &Bind, flags: OFlags, what: &str) -> Result<OwnedFd, Failure> {
    openat2(
        CWD,
        &b.host,
        flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .layer(
        LAYER,
        &format!("{what}: the path changed or passes through a symlink"),
    )
}

/// A file Paddock generated for the sandbox (`/etc/hosts`, the trust store…), as a detached
/// read-only mount of a copy in a tmpfs of its own: a bind of the host file would show its host
/// path (the state directory, with the user's name in it) in the sandbox's mount table.
fn generated_file(b: &Bind, what: &str) -> Result<OwnedFd, Failure> {
    use std::io::{Read, Write};
    const MAX: u64 = 16 << 20;
    let src = open_share(b, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK, what)?;
    let mut text = Vec::new();
    std::fs::File::from(src)
        .take(MAX)
        .read_to_end(&mut text)
        .layer(LAYER, what)?;
    let fs = new_fs(
        "tmpfs",
        &[("mode", "0755"), ("size", "16m")],
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let file = openat(
        fs.as_fd(),
        "file",
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .layer(LAYER, what)?;
    std::fs::File::from(file)
        .write_all(&text)
        .layer(LAYER, what)?;
    let tree = open_tree(
        fs.as_fd(),
        "file",
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .layer(LAYER, what)?;
    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if b.read_only {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(tree.as_fd(), false, attrs, None).layer(LAYER, what)?;
    Ok(tree)
}

/// User mode: gives a writable layer the host has just made (so owned by the user, the
/// agent in the jail's user namespace) to the sandbox's root, whose the overlay's root then is.
/// A layer in use already keeps its owner.
pub fn own_fresh_upper(upper: &Path) -> Result<(), Failure> {
    let what = "cannot give the writable layer to the sandbox's root";
    let dir = openat(
        CWD,
        upper,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .layer(LAYER, what)?;
    let st = rustix::fs::fstat(&dir).layer(LAYER, what)?;
    if st.st_uid == paddock_core::AGENT_ID {
        rustix::fs::chownat(
            &dir,
            "",
            Some(rustix::fs::Uid::ROOT),
            Some(rustix::fs::Gid::ROOT),
            AtFlags::EMPTY_PATH,
        )
        .layer(LAYER, what)?;
    }
    Ok(())
}

/// The sandbox's root as a detached mount: the image under the sandbox's writable layer.
/// `volatile`: the layer is thrown away after this run, so overlayfs skips syncing it (and with
/// it the whole host filesystem under it) when the sandbox ends; a torn one is discarded by the
/// next start ([`crate::prepare_dirs`], [`crate::prepare_layer`]).
///
/// The layers are named by this process's descriptors (`/proc/self/fd/N`), which overlayfs
/// shows in the mount table instead of the host paths of the image and the layer.
///
/// `user_namespace` (user mode): overlayfs keeps its own attributes (opaque directories,
/// redirects) in `user.overlay.*`, since a user namespace cannot set `trusted.*`; without
/// them removing or renaming a directory of the image fails (EIO, EXDEV), which breaks dpkg.
pub fn overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    volatile: bool,
    user_namespace: bool,
) -> Result<OwnedFd, Failure> {
    let open = |p: &Path| {
        openat(
            CWD,
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .layer(LAYER, &format!("cannot open {}", p.display()))
    };
    let (lower, upper, work) = (open(lower)?, open(upper)?, open(work)?);
    let name = |fd: &OwnedFd| format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
    new_fs(
        "overlay",
        &[
            ("source", "paddock"),
            ("lowerdir", &name(&lower)),
            ("upperdir", &name(&upper)),
            ("workdir", &name(&work)),
        ],
        match (volatile, user_namespace) {
            (true, true) => &["volatile", "userxattr"],
            (true, false) => &["volatile"],
            (false, true) => &["userxattr"],
            (false, false) => &[],
        },
        MountAttrFlags::MOUNT_ATTR_NODEV,
    )
}

/// Attaches the sandbox's root `overlay` at `at`; returns it (now attached).
fn attach_root(overlay: OwnedFd, at: &Path) -> Result<OwnedFd, Failure> {
    let merged = openat(
        CWD,
        at,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .layer(LAYER, "cannot open the sandbox mount point")?;
    attach(
        overlay.as_fd(),
        merged.as_fd(),
        "cannot mount the sandbox root",
    )?;
    Ok(overlay)
}

/// Prepares a gVisor sandbox's filesystems in this (new, private) mount namespace: the overlay
/// root at `cfg.root` and each shared folder, idmapped, at its mount point on the host side
/// (`Bind::target` is a host path here). runsc, started next in this namespace, serves them.
pub fn build_runsc(
    cfg: &RunscConfig,
    idmaps: &BTreeMap<(u32, u32), OwnedFd>,
) -> Result<(), Failure> {
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .layer(LAYER, "cannot make the mount namespace private")?;
    let (upper, work) = writable(
        &cfg.upper,
        &cfg.work,
        cfg.layer_image.as_deref(),
        cfg.id_base,
        cfg.volatile,
    )?;
    if cfg.user_namespace {
        own_fresh_upper(&upper)?;
    }
    attach_root(
        overlay(&cfg.lower, &upper, &work, cfg.volatile, cfg.user_namespace)?,
        &cfg.root,
    )?;
    for b in &cfg.binds {
        let what = format!("cannot share {} with the sandbox", b.host.display());
        let tree = clone_tree(b, idmaps)?;
        let target = openat(
            CWD,
            &b.target,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .layer(
            LAYER,
            &format!("{what}: cannot open the mount point {}", b.target),
        )?;
        attach(tree.as_fd(), target.as_fd(), &what)?;
        if let Some(dir) = &b.review {
            review_overlay(tree.as_fd(), target.as_fd(), dir, &what)?;
        }
    }
    Ok(())
}

/// Review mode ([`Bind::review`]): mounts over the shared folder just attached at `at` (its
/// mount, `lower`) an overlay whose lower layer it is and whose upper layer and work directory
/// are those of the review layer `dir`, so the sandbox's writes stay in the layer.
///
/// The folder is attached first because overlayfs takes as layers only mounts of this mount
/// namespace (before Linux 6.15 no detached one); it stays beneath the overlay, unreachable.
/// `userxattr`: overlayfs keeps its whiteouts' and opaque directories' marks in
/// `user.overlay.*`, which the review (the folder's owner, unprivileged) can read, and which a
/// user namespace may set (user mode).
fn review_overlay(
    lower: BorrowedFd<'_>,
    at: BorrowedFd<'_>,
    dir: &Path,
    what: &str,
) -> Result<(), Failure> {
    let what = format!("{what}: cannot mount the review layer {}", dir.display());
    let open = |name: &str| {
        openat2(
            CWD,
            dir.join(name),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .layer(LAYER, &what)
    };
    let (upper, work) = (open("upper")?, open("work")?);
    let name =
        |fd: BorrowedFd<'_>| format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let fs = new_fs(
        "overlay",
        &[
            ("source", "paddock-review"),
            ("lowerdir", &name(lower)),
            ("upperdir", &name(upper.as_fd())),
            ("workdir", &name(work.as_fd())),
        ],
        &["userxattr"],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|f| Failure::new("review layer", format!("{what}: {}", f.message)))?;
    attach(fs.as_fd(), at, &what)
}

/// What the host side mounted for the sandbox while the jail started, as detached mounts
/// ([`crate::premount`]): the root, and each shared folder of [`JailConfig::binds`], in that
/// order, idmapped.
#[derive(Debug)]
pub struct Premade {
    pub root: OwnedFd,
    pub binds: Vec<OwnedFd>,
}

/// Builds the tree and pivots into it. Afterwards `/` is the sandbox root.
pub fn build(cfg: &JailConfig, premade: Premade) -> Result<(), Failure> {
    let base = cfg.id_base;
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .layer(LAYER, "cannot make the mount namespace private")?;

    // The root: the image under the sandbox's writable layer.
    let sandbox_root = attach_root(premade.root, &cfg.merged)?;
    // The fsmount descriptor is the overlay's root, now attached: everything below is built
    // relative to it.
    let root = sandbox_root.as_fd();

    // /proc: a fresh instance for the sandbox's pid namespace.
    let proc_mnt = new_fs(
        "proc",
        &[],
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let proc_dir = ensure_beneath(root, "proc", false, base)?;
    attach(proc_mnt.as_fd(), proc_dir.as_fd(), "cannot mount /proc")?;

    // /dev: a small tmpfs with only the harmless device nodes.
    let owner = base.to_string();
    let dev_mnt = new_fs(
        "tmpfs",
        &[
            ("mode", "0755"),
            ("size", "1m"),
            ("uid", &owner),
            ("gid", &owner),
        ],
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        if cfg.user_namespace {
            // Only the host's user namespace makes device nodes: bind the host's own.
            bind_host_device(dev_mnt.as_fd(), name, major, minor)?;
            continue;
        }
        mknodat(
            dev_mnt.as_fd(),
            name,
            FileType::CharacterDevice,
            Mode::from_bits_truncate(0o666),
            rustix::fs::makedev(major, minor),
        )
        .layer(LAYER, &format!("cannot create /dev/{name}"))?;
        chown_root(dev_mnt.as_fd(), name, base)?;
    }
    for d in ["pts", "shm"] {
        mkdirat(dev_mnt.as_fd(), d, Mode::from_bits_truncate(0o755))
            .layer(LAYER, "cannot populate /dev")?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlinkat(target, dev_mnt.as_fd(), link).layer(LAYER, "cannot populate /dev")?;
        chown_root(dev_mnt.as_fd(), link, base)?;
    }
    let tty_gid = (base + 5).to_string();
    let pts = new_fs(
        "devpts",
        &[("ptmxmode", "0666"), ("mode", "0620"), ("gid", &tty_gid)],
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let pts_dir = open_dir(dev_mnt.as_fd(), "pts").layer(LAYER, "cannot open /dev/pts")?;
    attach(pts.as_fd(), pts_dir.as_fd(), "cannot mount /dev/pts")?;
    // /dev/shm and /tmp each hold at most half the memory limit (their pages count against
    // it too), never the kernel's default of half the host's RAM.
    let size = cfg.tmpfs_size.unwrap_or(1 << 30).to_string();
    let shm = new_fs(
        "tmpfs",
        &[
            ("mode", "1777"),
            ("uid", &owner),
            ("gid", &owner),
            ("size", &size),
        ],
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    let shm_dir = open_dir(dev_mnt.as_fd(), "shm").layer(LAYER, "cannot open /dev/shm")?;
    attach(shm.as_fd(), shm_dir.as_fd(), "cannot mount /dev/shm")?;
    let dev_dir = ensure_beneath(root, "dev", false, base)?;
    attach(dev_mnt.as_fd(), dev_dir.as_fd(), "cannot mount /dev")?;

    // /tmp: private to this run.
    let tmp = new_fs(
        "tmpfs",
        &[
            ("mode", "1777"),
            ("uid", &owner),
            ("gid", &owner),
            ("size", &size),
        ],
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    let tmp_dir = ensure_beneath(root, "tmp", false, base)?;
    attach(tmp.as_fd(), tmp_dir.as_fd(), "cannot mount /tmp")?;

    // The workspace and extra mounts, shallowest first so nested targets land inside parents.
    if premade.binds.len() != cfg.binds.len() {
        return Err(Failure::new(
            LAYER,
            format!(
                "the host made {} of the {} shared folders",
                premade.binds.len(),
                cfg.binds.len()
            ),
        ));
    }
    let mut binds: Vec<(&Bind, OwnedFd)> = cfg.binds.iter().zip(premade.binds).collect();
    binds.sort_by_key(|(b, _)| b.target.matches('/').count());
    for (b, tree) in binds {
        let what = format!("cannot share {} at {}", b.host.display(), b.target);
        let target = ensure_beneath(root, &b.target, !b.is_dir, base)?;
        attach(tree.as_fd(), target.as_fd(), &what)?;
        if let Some(dir) = &b.review {
            review_overlay(tree.as_fd(), target.as_fd(), dir, &what)?;
        }
    }

    // Kernel knobs in /proc stay read-only even for the sandbox's root.
    let proc_root = open_dir(root, "proc").layer(LAYER, "cannot open /proc")?;
    for name in ["sys", "sysrq-trigger", "irq", "bus"] {
        let Ok(tree) = open_tree(
            proc_root.as_fd(),
            name,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        ) else {
            continue;
        };
        sys::mount_setattr(
            tree.as_fd(),
            false,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            None,
        )
        .layer(LAYER, &format!("cannot make /proc/{name} read-only"))?;
        let target = openat(
            proc_root.as_fd(),
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .layer(LAYER, &format!("cannot open /proc/{name}"))?;
        attach(
            tree.as_fd(),
            target.as_fd(),
            &format!("cannot make /proc/{name} read-only"),
        )?;
    }
    drop(proc_root);

    // Into the new root; the host's tree is detached and gone from this namespace.
    rustix::process::fchdir(root).layer(LAYER, "cannot enter the sandbox root")?;
    rustix::process::pivot_root(".", ".").layer(LAYER, "pivot_root failed")?;
    unmount(".", UnmountFlags::DETACH).layer(LAYER, "cannot detach the host's root")?;
    rustix::process::chdir("/").layer(LAYER, "cannot enter /")?;
    Ok(())
}

/// A detached copy of the shared folder `b`, idmapped and with its flags set.
pub fn clone_tree(b: &Bind, idmaps: &BTreeMap<(u32, u32), OwnedFd>) -> Result<OwnedFd, Failure> {
    let what = format!("cannot share {} at {}", b.host.display(), b.target);
    // Generated data files (not programs, such as gVisor's helper, which the sandbox runs)
    // come from a tmpfs.
    let program = std::fs::metadata(&b.host).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o111 != 0
    });
    if !b.idmap && !b.is_dir && !program {
        return generated_file(b, &what);
    }
    let src_flags = OFlags::PATH
        | OFlags::CLOEXEC
        | if b.is_dir {
            OFlags::DIRECTORY
        } else {
            OFlags::empty()
        };
    let src = open_share(b, src_flags, &what)?;
    let tree = open_tree(
        src.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .layer(LAYER, &what)?;
    let userns = if b.idmap {
        idmaps.get(&(b.owner_uid, b.owner_gid)).map(|f| f.as_fd())
    } else {
        None
    };
    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if b.read_only {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(tree.as_fd(), true, attrs, userns).layer(
        "idmapped mounts",
        &format!("{what}: the filesystem of {} must support idmapped mounts (ext4, xfs, btrfs, tmpfs on Linux 6.3+)", b.host.display()),
    )?;
    Ok(tree)
}
