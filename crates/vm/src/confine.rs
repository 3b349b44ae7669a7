//! How the VM's host-side helpers are confined before they execute. Each one parses what the
//! guest sends, so each gets as little of the host as it can work with:
//!
//! - the vsock device runs as an unprivileged uid of its own, in network, IPC, UTS and mount
//!   namespaces of its own whose root is an empty read-only tmpfs holding only the system's
//!   program directories (read-only) and its socket directory, under the namespace backend's
//!   seccomp filter plus one that allows Unix sockets only;
//! - each virtiofsd runs as its share's owner (host uid and gid) inside a user namespace where
//!   that owner is root, so it has capabilities over its own namespaces and the owner's files,
//!   and none over the host. It sees its share at a path of the run directory, so it needs no
//!   right on the share's parent directories, and sandboxes itself further (its own mount, pid
//!   and network namespaces, pivoted into the share, its own seccomp filter).
//!
//! Everything here runs between fork and exec: the closures make system calls on strings and
//! descriptors prepared before the fork, and allocate nothing.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use paddock_core::BackendError;

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

/// Remounts the bind mount at `dst` read-only (and nosuid, nodev).
///
/// # Safety
/// Only system calls; for use between fork and exec.
unsafe fn read_only(dst: &CString) -> std::io::Result<()> {
    // SAFETY: as above.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    })
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
/// with no supplementary groups and `no_new_privs` before it execs. Register before
/// `spawn_helper`'s parent-death signal, which a uid change clears.
pub(crate) fn drop_to(cmd: &mut Command, uid: u32) {
    // SAFETY: only system calls, see the module's documentation.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::unshare(
                libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
            ))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(uid, uid, uid))?;
            check(libc::setresuid(uid, uid, uid))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        });
    }
}

/// One step of building the vsock device's root.
enum Step {
    /// `mkdir` (an existing directory is fine).
    Dir(CString),
    /// Bind a host directory or file read-only (the target exists by then).
    ReadOnly(CString, CString),
    /// Bind a host directory read-write (nosuid, nodev).
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

/// Confines the vsock device: a root of its own (see the module's documentation) made on the
/// empty directory `root`, holding `sockets` (read-write) and `binary` at their host paths;
/// then [`drop_to`] `uid` and the seccomp filters.
pub(crate) fn vsock_device(
    cmd: &mut Command,
    root: &Path,
    sockets: &Path,
    binary: &Path,
    uid: u32,
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
        paddock_ns::seccomp::programs(),
        paddock_ns::seccomp::unix_sockets_only().map(|p| vec![p]),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| layer("vm seccomp", e.to_string()))?
    .concat();

    // SAFETY: only system calls on the strings prepared above, see the module's documentation.
    unsafe {
        cmd.pre_exec(move || {
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
                        read_only(dst)?;
                    }
                    Step::ReadWrite(src, dst) => {
                        bind(src, dst, libc::MS_BIND)?;
                        check(libc::mount(
                            std::ptr::null(),
                            dst.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND
                                | libc::MS_REMOUNT
                                | libc::MS_NOSUID
                                | libc::MS_NODEV
                                | libc::MS_NOEXEC,
                            std::ptr::null(),
                        ))?;
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
                paddock_ns::seccomp::apply(f)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// Confines a virtiofsd: in a mount namespace of its own, each of `pins` bound onto itself
/// (read-only where asked, see [`paddock_core::gitguard`]; virtiofsd serves what it sees, so the
/// guest's writes there fail with EROFS, and renaming a pinned directory with EBUSY), the share
/// `dir` bound at `at`, then as the share's owner `uid`:`gid` in the user namespace `userns`
/// (made by [`owner_namespace`]), where that owner is root.
pub(crate) fn virtiofsd(
    cmd: &mut Command,
    dir: &Path,
    at: &Path,
    pins: &[(PathBuf, bool)],
    userns: OwnedFd,
) -> Result<(), BackendError> {
    let mut paths = Vec::new();
    for (p, ro) in pins {
        paths.push((c_path(p)?, *ro));
    }
    let src = c_path(dir)?;
    let dst = c_path(at)?;
    // virtiofsd keeps a descriptor per inode the guest looks up; raised here, while the
    // process may (it cannot in its user namespace), to what virtiofsd would ask for itself.
    let nofile: libc::rlim_t = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
        .min(1_000_000);
    // SAFETY: only system calls on the strings and descriptor prepared above, see the module's
    // documentation.
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
            private_mounts()?;
            for (p, ro) in &paths {
                bind(p, p, libc::MS_BIND)?;
                if *ro {
                    read_only(p)?;
                }
            }
            bind(&src, &dst, libc::MS_BIND | libc::MS_REC)?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER))?;
            // Root of the namespace is the owner on the host.
            check(libc::setresgid(0, 0, 0))?;
            check(libc::setresuid(0, 0, 0))
        });
    }
    Ok(())
}

/// A user namespace where host `uid`:`gid` is root and no other host id exists.
pub(crate) fn owner_namespace(uid: u32, gid: u32) -> Result<OwnedFd, BackendError> {
    paddock_ns::jail::detached_userns(&format!("0 {uid} 1\n"), &format!("0 {gid} 1\n"))
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
}
