//! How the VM's host-side helpers are confined before they execute. Each one parses what the
//! guest sends, so each gets as little of the host as it can work with:
//!
//! - the vsock device runs as an unprivileged uid of its own, in network, IPC, UTS and mount
//!   namespaces of its own whose root is an empty read-only tmpfs holding only the system's
//!   program directories (read-only) and its socket directory, under the namespace backend's
//!   seccomp filter plus one that allows Unix sockets only;
//! - each virtiofsd runs as its share's owner (host uid, and a group the owner belongs to)
//!   inside a user namespace where that owner is root, so it has capabilities over its own
//!   namespaces and the owner's files, and none over the host. It sees its share at a path of
//!   the run directory, so it needs no right on the share's parent directories, and sandboxes
//!   itself further (its own mount, pid and network namespaces, pivoted into the share, its own
//!   seccomp filter). Everything it is handed is root's and cannot be swapped by the owner: its
//!   program (executed through a descriptor), its listening socket (a descriptor), the mount
//!   point of its share; the share and the git pins are bound by descriptors opened without
//!   following symlinks.
//!
//! Everything here runs between fork and exec: the closures make system calls on strings and
//! descriptors prepared before the fork, and allocate nothing.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use paddock_confine::jail::{
    MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, mount_setattr,
};
use paddock_core::BackendError;
use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, openat2};
use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};

use crate::{io, layer};

fn c_path(p: &Path) -> Result<CString, BackendError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| layer("vm", format!("{} has a NUL byte in its path", p.display())))
}

/// Fails the pre-exec closure with the last OS error when `rc` is not 0.
fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `mount(2)` with no source type or data.
///
/// # Safety
/// Only system calls; for use between fork and exec.
unsafe fn bind(src: &CString, dst: &CString, flags: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: both are NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
}

/// Sets `attrs` on the mount at `dst` (on every mount in its tree if `recursive`).
fn set_attrs(dst: &CStr, recursive: bool, attrs: u64) -> std::io::Result<()> {
    let at = openat2(
        CWD,
        dst,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )?;
    mount_setattr(at.as_fd(), recursive, attrs, None)
}

/// `p` as an `O_PATH` descriptor, opened without following any symlink.
fn open_resolved(p: &CStr) -> std::io::Result<OwnedFd> {
    Ok(openat2(
        CWD,
        p,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Attaches the detached mount `mnt` on what `dst` names ([`open_resolved`]).
fn attach_resolved(mnt: std::os::fd::BorrowedFd<'_>, dst: &CStr) -> std::io::Result<()> {
    let onto = open_resolved(dst)?;
    move_mount(
        mnt,
        c"",
        onto.as_fd(),
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}

/// Binds what `src` names onto what `dst` names, both opened without following any symlink
/// (so nothing swapped in after the host's checks is mounted or mounted on): a detached copy
/// of `src` (with its submounts if `recursive`), given `attrs` throughout, attached by
/// descriptor.
fn bind_resolved(src: &CStr, dst: &CStr, recursive: bool, attrs: u64) -> std::io::Result<()> {
    let from = open_resolved(src)?;
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = open_tree(from.as_fd(), c"", flags)?;
    if attrs != 0 {
        mount_setattr(tree.as_fd(), recursive, attrs, None)?;
    }
    attach_resolved(tree.as_fd(), dst)
}

/// A new mount namespace whose mounts no longer propagate to the host's.
///
/// # Safety
/// Only system calls; for use between fork and exec.
unsafe fn private_mounts() -> std::io::Result<()> {
    // SAFETY: constant arguments.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
    // SAFETY: a constant, NUL-terminated path.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
}

/// Makes `cmd` run in network, IPC and UTS namespaces of its own (no network, and none of the
/// host's abstract Unix sockets, which are per network namespace), then drop to `uid`:`uid`
/// (when given: started as root) with no supplementary groups and `no_new_privs` before it
/// execs. Register before `spawn_helper`'s parent-death signal, which a uid change clears.
fn drop_to(cmd: &mut Command, uid: Option<u32>) {
    // SAFETY: only system calls, see the module's documentation.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::unshare(
                libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
            ))?;
            if let Some(uid) = uid {
                paddock_confine::jail::sys::become_id(uid)?;
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        });
    }
}

/// Joins the user namespace `ns` as its root (uid and gid 0 there).
///
/// # Safety
/// Only system calls; for use between fork and exec.
unsafe fn enter_as_root(ns: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: system calls on a descriptor and integers.
    unsafe {
        check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUSER))?;
        check(libc::setresgid(0, 0, 0))?;
        check(libc::setresuid(0, 0, 0))
    }
}

/// One step of building the vsock device's root.
enum Step {
    /// `mkdir` (an existing directory is fine).
    Dir(CString),
    /// Bind a host directory or file read-only (the target exists by then).
    ReadOnly(CString, CString),
    /// Bind a host directory read-write (nosuid, nodev, noexec).
    ReadWrite(CString, CString),
    /// Create an empty file to bind a file onto.
    File(CString),
    /// A symbolic link: target, then where.
    Link(CString, CString),
}

/// The directories of a host path below `root`, outermost first, each as it must be created.
fn parents_in(root: &Path, path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut at = root.to_path_buf();
    for c in path.parent().unwrap_or(Path::new("/")).components() {
        if let Component::Normal(n) = c {
            at.push(n);
            out.push(at.clone());
        }
    }
    out
}

/// The host's program directories the device needs to execute (the dynamic loader and the
/// libraries), as they are: a symbolic link is copied, a directory bound read-only.
const SYSTEM: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Who the vsock device runs as.
pub(crate) enum DeviceIds {
    /// Started as root: this unprivileged host uid (and gid), its namespaces owned by the host.
    Helper(u32),
    /// An ordinary user's: root of this user namespace ([`owner_namespace`] of the user), which
    /// then owns its namespaces; no other host id exists there.
    OwnNamespace(OwnedFd),
}

/// Confines the vsock device: a root of its own (see the module's documentation) made on the
/// empty directory `root`, holding `sockets` (read-write) and `binary` at their host paths;
/// then [`drop_to`] the helper uid (root mode) and the seccomp filters. In user mode it first
/// enters its user namespace as root, which then owns its other namespaces.
pub(crate) fn vsock_device(
    cmd: &mut Command,
    root: &Path,
    sockets: &Path,
    binary: &Path,
    ids: DeviceIds,
) -> Result<(), BackendError> {
    let mut steps = Vec::new();
    let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for name in SYSTEM {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&host).map_err(io(format!(
                    "cannot read the link {} for the vsock device",
                    host.display()
                )))?;
                steps.push(Step::Link(c_path(&target)?, c_path(&under(&host))?));
            }
            Ok(m) if m.is_dir() => {
                steps.push(Step::Dir(c_path(&under(&host))?));
                steps.push(Step::ReadOnly(c_path(&host)?, c_path(&under(&host))?));
            }
            _ => {}
        }
    }
    // The loader's cache, where there is one (without it, the loader searches its defaults).
    let cache = Path::new("/etc/ld.so.cache");
    if cache.is_file() {
        steps.push(Step::Dir(c_path(&under(Path::new("/etc")))?));
        steps.push(Step::File(c_path(&under(cache))?));
        steps.push(Step::ReadOnly(c_path(cache)?, c_path(&under(cache))?));
    }
    let in_system = SYSTEM
        .iter()
        .any(|d| binary.starts_with(Path::new("/").join(d)));
    if !in_system {
        for d in parents_in(root, binary) {
            steps.push(Step::Dir(c_path(&d)?));
        }
        steps.push(Step::File(c_path(&under(binary))?));
        steps.push(Step::ReadOnly(c_path(binary)?, c_path(&under(binary))?));
    }
    for d in parents_in(root, &sockets.join("x")) {
        steps.push(Step::Dir(c_path(&d)?));
    }
    steps.push(Step::ReadWrite(c_path(sockets)?, c_path(&under(sockets))?));
    let root_c = c_path(root)?;
    let filters = [
        paddock_confine::seccomp::programs(),
        paddock_confine::seccomp::unix_sockets_only().map(|p| vec![p]),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| layer("vm seccomp", e.to_string()))?
    .concat();

    let (uid, userns) = match ids {
        DeviceIds::Helper(uid) => (Some(uid), None),
        DeviceIds::OwnNamespace(ns) => (None, Some(ns)),
    };
    // SAFETY: only system calls on the strings prepared above, see the module's documentation.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(ns) = &userns {
                enter_as_root(ns)?;
            }
            private_mounts()?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                root_c.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755,size=64k".as_ptr().cast(),
            ))?;
            for s in &steps {
                match s {
                    Step::Dir(d) => {
                        if libc::mkdir(d.as_ptr(), 0o755) != 0
                            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Step::File(f) => {
                        let fd = libc::open(
                            f.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        );
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        libc::close(fd);
                    }
                    Step::ReadOnly(src, dst) => {
                        bind(src, dst, libc::MS_BIND | libc::MS_REC)?;
                        set_attrs(
                            dst,
                            true,
                            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                        )?;
                    }
                    Step::ReadWrite(src, dst) => {
                        bind(src, dst, libc::MS_BIND)?;
                        set_attrs(
                            dst,
                            false,
                            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                        )?;
                    }
                    Step::Link(target, at) => check(libc::symlink(target.as_ptr(), at.as_ptr()))?,
                }
            }
            // pivot_root(".", "."): the old root ends up on top of the new one; detach it.
            check(libc::chdir(root_c.as_ptr()))?;
            check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as i32)?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null(),
            ))
        });
    }
    drop_to(cmd, uid);
    // SAFETY: one seccomp call per filter on programs compiled above.
    unsafe {
        cmd.pre_exec(move || {
            for f in &filters {
                paddock_confine::seccomp::apply(f)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// What a virtiofsd serves.
pub(crate) struct Share<'a> {
    /// The shared directory (canonical).
    pub dir: &'a Path,
    /// Its mount point in the run directory (root's), where virtiofsd sees it.
    pub view: &'a Path,
    /// Shared read-only.
    pub read_only: bool,
    /// Paths in it bound onto themselves, read-only where asked (see [`paddock_core::gitguard`]):
    /// virtiofsd serves what it sees, so the guest's writes there fail with EROFS, and renaming
    /// a pinned directory with EBUSY.
    pub pins: &'a [(PathBuf, bool)],
    /// Review mode: the review layer (`upper`, `work`) of an overlay mounted over the share,
    /// whose lower layer the share is (see `paddock_confine::config::Bind::review`).
    pub review: Option<&'a Path>,
}

/// The review layer's `upper` and `work` directories as canonical paths: overlayfs takes
/// its layers as paths, resolved in virtiofsd's new mount namespace (a descriptor opened before
/// it belongs to the host's, whose mounts overlayfs refuses to clone).
struct ReviewLayer {
    upper: CString,
    work: CString,
}

impl ReviewLayer {
    fn open(dir: &Path) -> Result<ReviewLayer, BackendError> {
        let path = |name: &str| {
            let p = dir.join(name);
            let real = std::fs::canonicalize(&p)
                .map_err(|e| layer("review layer", format!("cannot open {}: {e}", p.display())))?;
            c_path(&real)
        };
        Ok(ReviewLayer {
            upper: path("upper")?,
            work: path("work")?,
        })
    }

    /// Mounts the overlay over `dst`, where the share is mounted (its lower layer), with
    /// `userxattr` (the review reads its marks unprivileged; a user namespace may set them).
    ///
    /// Only system calls on prepared strings; for use between fork and exec.
    fn mount_over(&self, dst: &CStr) -> std::io::Result<()> {
        use rustix::mount::{
            FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsconfig_set_flag,
            fsconfig_set_string, fsmount, fsopen,
        };
        let fs = fsopen(c"overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_set_string(fs.as_fd(), c"source", c"paddock-review")?;
        fsconfig_set_string(fs.as_fd(), c"lowerdir", dst)?;
        fsconfig_set_string(fs.as_fd(), c"upperdir", self.upper.as_c_str())?;
        fsconfig_set_string(fs.as_fd(), c"workdir", self.work.as_c_str())?;
        fsconfig_set_flag(fs.as_fd(), c"userxattr")?;
        fsconfig_create(fs.as_fd())?;
        let mnt = fsmount(
            fs.as_fd(),
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        )?;
        attach_resolved(mnt.as_fd(), dst)
    }
}

/// A command for `program` executed through a descriptor opened now, by root: the program
/// runs even where a directory on its path is closed to the user it runs as (`~/.cargo/bin` of
/// root), and cannot be swapped between this check and its start. It shows as `program`.
pub(crate) fn by_descriptor(program: &Path) -> Result<Command, BackendError> {
    let exe = std::fs::File::open(program).map_err(io(format!(
        "cannot open {} to execute it",
        program.display()
    )))?;
    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    cmd.arg0(program);
    // SAFETY: does nothing; it holds the descriptor open in the child until exec.
    unsafe {
        cmd.pre_exec(move || {
            let _open_until_exec = &exe;
            Ok(())
        });
    }
    Ok(cmd)
}

/// Confines virtiofsd's command `cmd` (see [`by_descriptor`]) for `share`: `listener` (its
/// listening socket, made by root) left open for `--fd`, a mount namespace of its own where
/// the pins and then the share (at `view`, read-only all through for a read-only share) are
/// bound by descriptor, then the user namespace `userns` (see [`owner_namespace`]) as its root,
/// the share's owner on the host. In `user_mode` (an ordinary user's, who may make a mount
/// namespace only inside a user namespace of its own) the user namespace comes first.
pub(crate) fn virtiofsd(
    cmd: &mut Command,
    share: &Share<'_>,
    listener: OwnedFd,
    userns: OwnedFd,
    user_mode: bool,
) -> Result<(), BackendError> {
    let mut pins = Vec::new();
    for (p, ro) in share.pins {
        pins.push((c_path(p)?, *ro));
    }
    let src = c_path(share.dir)?;
    let dst = c_path(share.view)?;
    let review = share.review.map(ReviewLayer::open).transpose()?;
    let share_attrs = MOUNT_ATTR_NOSUID
        | MOUNT_ATTR_NODEV
        | if share.read_only {
            MOUNT_ATTR_RDONLY
        } else {
            0
        };
    // virtiofsd keeps a descriptor per inode the guest looks up; raised here, while the
    // process may (it cannot in its user namespace), to what virtiofsd would ask for itself.
    let nofile: libc::rlim_t = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
        .min(1_000_000);
    // SAFETY: only system calls on the strings and descriptors prepared above, see the
    // module's documentation.
    unsafe {
        cmd.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) != 0 {
                // Without CAP_SYS_RESOURCE (some containers' root): up to the hard limit.
                check(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit))?;
                limit.rlim_cur = limit.rlim_max;
                check(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit))?;
            }
            if user_mode {
                enter_as_root(&userns)?;
            }
            private_mounts()?;
            for (p, ro) in &pins {
                let attrs = if *ro {
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                } else {
                    0
                };
                bind_resolved(p, p, false, attrs)?;
            }
            bind_resolved(&src, &dst, true, share_attrs)?;
            if let Some(review) = &review {
                review.mount_over(&dst)?;
            }
            // The listening socket stays open across exec for `--fd`.
            check(libc::fcntl(listener.as_raw_fd(), libc::F_SETFD, 0))?;
            if user_mode {
                return Ok(());
            }
            check(libc::setgroups(0, std::ptr::null()))?;
            // Root of the namespace is the owner on the host.
            enter_as_root(&userns)
        });
    }
    Ok(())
}

/// The group a share's virtiofsd runs with, so files the guest makes get it: the folder's
/// group `gid` when its owner `uid` belongs to it (root belongs to every group), else the
/// owner's own group, else `nogroup` for an owner without an account. Never a group the owner
/// could not take itself.
pub(crate) fn share_group(uid: u32, gid: u32) -> u32 {
    use nix::unistd::{Gid, Uid, User, getgrouplist};
    const NOGROUP: u32 = 65534;
    if uid == 0 {
        return gid;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return NOGROUP;
    };
    if user.gid.as_raw() == gid {
        return gid;
    }
    let member = CString::new(user.name.as_bytes())
        .ok()
        .and_then(|n| getgrouplist(&n, user.gid).ok())
        .is_some_and(|groups| groups.contains(&Gid::from_raw(gid)));
    if member { gid } else { user.gid.as_raw() }
}

/// A user namespace where host `uid`:`gid` is root and no other host id exists.
pub(crate) fn owner_namespace(uid: u32, gid: u32) -> Result<OwnedFd, BackendError> {
    paddock_confine::jail::detached_userns(&format!("0 {uid} 1\n"), &format!("0 {gid} 1\n"))
        .map_err(|e| layer("vm virtiofsd user namespace", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_listed_outermost_first_below_the_root() {
        assert_eq!(
            parents_in(Path::new("/r"), Path::new("/tmp/run/vsock/x")),
            [
                PathBuf::from("/r/tmp"),
                PathBuf::from("/r/tmp/run"),
                PathBuf::from("/r/tmp/run/vsock")
            ]
        );
        assert!(parents_in(Path::new("/r"), Path::new("/file")).is_empty());
    }

    #[test]
    fn a_share_group_is_never_one_the_owner_lacks() {
        // Root may take any group; an owner outside the folder's group gets its own; an owner
        // without an account gets nogroup.
        assert_eq!(share_group(0, 5), 5);
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let (uid, own) = (nobody.uid.as_raw(), nobody.gid.as_raw());
        assert_eq!(share_group(uid, own), own);
        assert_eq!(share_group(uid, 0), own);
        assert_eq!(share_group(4_000_000_000, 0), 65534);
    }
}
