//! User mode: Paddock run by an ordinary user. The sandbox's user namespace maps the user to the
//! sandbox's agent and the user's subordinate ids to everything else
//! ([`paddock_core::UserIds`]); the distribution's setuid `newuidmap`/`newgidmap` write those
//! maps, the only privileged step. Trees that hold subordinate-owned files (images, writable
//! layers) are built and removed from inside such a namespace, where the user is root over
//! exactly those ids.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use paddock_core::{IdMap, ProbeItem, UserIds};

/// Where the host's own programs (`newuidmap`, `rm`) are looked up.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Why user mode cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UserModeError {
    /// the user is unknown to the host's account database
    #[error("this host has no account for uid {0}")]
    NoAccount(u32),
    /// no subordinate ids
    #[error(
        "user {name} has no range of 65536 subordinate uids and gids in /etc/subuid and /etc/subgid; run `sudo paddock system setup --user {name}` once"
    )]
    NoSubordinateIds {
        /// Login name.
        name: String,
    },
    /// newuidmap or newgidmap failed or is missing
    #[error(
        "{program} could not map the sandbox's ids: {message}; run `sudo paddock system setup --user {name}` once"
    )]
    Map {
        /// `newuidmap` or `newgidmap`.
        program: &'static str,
        /// Its error.
        message: String,
        /// Login name.
        name: String,
    },
    /// a system call or process failed
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UserModeError {
    let what = what.into();
    move |source| UserModeError::Io { what, source }
}

/// Whether this process runs as an ordinary user (user mode) rather than root.
pub fn is_user_mode() -> bool {
    !rustix::process::geteuid().is_root()
}

/// Whether this process may write in `dir` (by its permission bits and ids, as the kernel
/// judges it for this process).
pub fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

fn login_name(uid: u32) -> Result<String, UserModeError> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .ok_or(UserModeError::NoAccount(uid))
}

/// The id map of this process's sandboxes: root mode's fixed range as root, else the user's
/// own ([`paddock_core::IdMap::for_user`]) from the host's subordinate id files.
pub fn current_idmap() -> Result<IdMap, UserModeError> {
    if !is_user_mode() {
        return Ok(IdMap::default());
    }
    Ok(IdMap::for_user(current_user_ids()?))
}

/// This ordinary user's ids and subordinate ranges.
pub fn current_user_ids() -> Result<UserIds, UserModeError> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let name = login_name(uid)?;
    let read = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
    UserIds::from_subordinate(&name, uid, gid, &read("/etc/subuid"), &read("/etc/subgid"))
        .ok_or(UserModeError::NoSubordinateIds { name })
}

/// Writes the user mode maps of `ids` for process `pid`, which has just made its user
/// namespace, with the host's `newuidmap` and `newgidmap` (both at once).
pub fn map_ids(pid: u32, ids: &UserIds) -> Result<(), UserModeError> {
    let name = || login_name(ids.uid).unwrap_or_else(|_| ids.uid.to_string());
    let mut running = Vec::new();
    for (program, gid) in [("newuidmap", false), ("newgidmap", true)] {
        let mut cmd = Command::new(program);
        cmd.arg(pid.to_string());
        for r in ids.ranges(gid) {
            cmd.args([
                r.inside.to_string(),
                r.outside.to_string(),
                r.count.to_string(),
            ]);
        }
        let child = cmd
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        running.push((program, child));
    }
    let mut first_error = None;
    for (program, child) in running {
        let out = child.and_then(std::process::Child::wait_with_output);
        let failed = match out {
            Ok(o) if o.status.success() => continue,
            Ok(o) => format!(
                "{} ({})",
                String::from_utf8_lossy(&o.stderr).trim(),
                o.status
            ),
            Err(e) => e.to_string(),
        };
        first_error.get_or_insert(UserModeError::Map {
            program,
            message: failed,
            name: name(),
        });
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs `cmd` as root of a new user namespace with `ids`' user mode map, in a mount namespace
/// of its own: root there owns the user's subordinate ids and the user's own, nothing else of
/// the host. Returns its exit status.
pub fn run_mapped(cmd: &mut Command, ids: &UserIds) -> Result<ExitStatus, UserModeError> {
    let mut child = spawn_mapped(cmd, ids)?;
    child.wait().map_err(io("waiting for a mapped process"))
}

/// Starts `cmd` as [`run_mapped`] does.
pub fn spawn_mapped(
    cmd: &mut Command,
    ids: &UserIds,
) -> Result<std::process::Child, UserModeError> {
    let ids = *ids;
    spawn_mapped_by(cmd, move |pid| map_ids(pid, &ids))
}

/// Starts `cmd` as root of a new user namespace (and a mount namespace of its own) whose maps
/// `map` writes, given the child's pid, while the child waits.
pub fn spawn_mapped_by(
    cmd: &mut Command,
    map: impl FnOnce(u32) -> Result<(), UserModeError> + Send + 'static,
) -> Result<std::process::Child, UserModeError> {
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io("cannot create a pipe")(e.into()))
    };
    let (ready_r, ready_w): (OwnedFd, OwnedFd) = pipe()?;
    let (go_r, go_w): (OwnedFd, OwnedFd) = pipe()?;
    let (ready_w_raw, go_r_raw) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (unshare, getpid, write, read, setresgid, setgroups,
    // setresuid) on descriptors this function keeps open until the spawn returns; it allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::getpid().to_le_bytes();
            if libc::write(ready_w_raw, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            let mut go = [0u8; 1];
            if libc::read(go_r_raw, go.as_mut_ptr().cast(), 1) != 1 || go[0] != 1 {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            if libc::setresgid(0, 0, 0) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The child waits for its maps while `spawn` waits for its exec: a thread writes them.
    let mapper = std::thread::spawn(move || -> Result<(), UserModeError> {
        let mut ready_r = std::fs::File::from(ready_r);
        let mut go_w = std::fs::File::from(go_w);
        let mut pid = [0u8; 4];
        if ready_r.read_exact(&mut pid).is_err() {
            return Ok(()); // The child failed before it asked; spawn reports why.
        }
        let done = map(u32::from_le_bytes(pid));
        let _ = go_w.write_all(&[u8::from(done.is_ok())]);
        done
    });
    let spawned = cmd.spawn();
    drop(ready_w);
    drop(go_r);
    let mapped = mapper.join().unwrap_or_else(|_| {
        Err(io("the mapping thread panicked")(std::io::Error::other(
            "panic",
        )))
    });
    match (spawned, mapped) {
        (Ok(child), Ok(())) => Ok(child),
        (Ok(mut child), Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
        (Err(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(io(format!(
            "cannot start {} in a user namespace",
            cmd.get_program().to_string_lossy()
        ))(e)),
    }
}

/// Removes the tree at `path` (nothing if it is missing), symlinks removed and never followed.
/// In user mode, what the user cannot remove alone (files a sandbox's root or the image's
/// other users own, which are the user's subordinate ids) is removed as root of a user
/// namespace that maps those ids.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let first = match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r,
    };
    let Err(e) = first else { return Ok(()) };
    if !is_user_mode() || e.kind() != std::io::ErrorKind::PermissionDenied {
        return Err(e);
    }
    let ids = current_user_ids().map_err(std::io::Error::other)?;
    let status = run_mapped(
        Command::new("rm")
            .args(["-rf", "--one-file-system", "--"])
            .arg(path)
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .stdin(Stdio::null()),
        &ids,
    )
    .map_err(std::io::Error::other)?;
    if status.success() && !path.exists() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cannot remove {} as the owner of its subordinate ids ({status})",
            path.display()
        )))
    }
}

/// The user mode probe item: the user's subordinate ids and the host's `newuidmap`.
pub fn user_mode_item() -> ProbeItem {
    let maps = ["newuidmap", "newgidmap"].iter().all(|p| {
        SYSTEM_PATH
            .split(':')
            .any(|d| Path::new(d).join(p).is_file())
    });
    let (ok, detail, fix) = match (current_user_ids(), maps) {
        (Ok(ids), true) => (
            true,
            format!(
                "you are the sandbox's agent; its other ids are your subordinate uids {}.. and gids {}..",
                ids.subuid, ids.subgid
            ),
            None,
        ),
        (Err(e), _) => (false, e.to_string(), None),
        (Ok(_), false) => (
            false,
            "newuidmap or newgidmap is missing".to_owned(),
            Some("sudo paddock system setup --user $USER".to_owned()),
        ),
    };
    ProbeItem {
        name: "user mode".into(),
        ok,
        detail,
        fix,
        required: true,
    }
}

/// The supervisor's side of a user mode jail's start: waits until the jail (`pid`, reporting
/// on `channel`) has made its user namespace, moves it into `cgroups` while it still has the
/// user's ids (cgroup v1 lets a user move only processes with its own ids), maps the namespace
/// with `newuidmap`/`newgidmap`, and tells the jail (one byte, 1: mapped). Returns the
/// namespace (for `exec` and published ports) and the cgroup move's outcome.
pub fn map_jail(
    channel: std::os::fd::BorrowedFd<'_>,
    pid: u32,
    cgroups: &[std::path::PathBuf],
    ids: &UserIds,
) -> Result<(OwnedFd, Result<(), String>), paddock_core::BackendError> {
    use paddock_wire::Report;
    let layer = |message: String| paddock_core::BackendError::Layer {
        layer: "user namespace".into(),
        message,
    };
    match paddock_wire::recv_report(channel) {
        Ok(Some((Report::UserNamespace, _))) => {}
        Ok(Some((Report::SetupFailed { layer, message }, _))) => {
            return Err(paddock_core::BackendError::Layer { layer, message });
        }
        _ => {
            return Err(layer(
                "the jail ended before it made its user namespace".into(),
            ));
        }
    }
    let ns = rustix::fs::open(
        format!("/proc/{pid}/ns/user").as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| layer(format!("cannot open the jail's user namespace: {e}")))?;
    let joined = crate::join_cgroups(cgroups.to_vec(), pid)
        .join()
        .unwrap_or_else(|_| Err("the cgroup thread panicked".into()));
    let mapped = map_ids(pid, ids);
    let answer = [u8::from(mapped.is_ok())];
    let _ = rustix::net::send(channel, &answer, rustix::net::SendFlags::NOSIGNAL);
    mapped.map_err(|e| layer(e.to_string()))?;
    Ok((ns, joined))
}

/// Why `--disk` is refused in user mode.
pub const DISK_NEEDS_ROOT: &str = "--disk needs root: the size-limited layer is an ext4 image on a loop device, which an ordinary user cannot attach; drop --disk, or run paddock as root";

/// Whether the limits `limits` sets can be enforced for this process's sandboxes on a backend
/// that limits with the host's cgroups and a layer image (ns, gvisor), checked before anything
/// is made.
pub fn check_limits(limits: &paddock_policy::Limits) -> Result<(), paddock_core::BackendError> {
    let layer = |layer: &str, message: String| paddock_core::BackendError::Layer {
        layer: layer.into(),
        message,
    };
    if is_user_mode() && limits.disk.is_some() {
        return Err(layer("disk limit", DISK_NEEDS_ROOT.into()));
    }
    crate::cgroup::CgroupHost::detect()
        .check(limits)
        .map_err(|e| layer("cgroup", e.to_string()))
}

/// After a sandbox whose files its host side cannot reach ended (gVisor, whose file server
/// wrote them): gives the owner of each shared read-write `folders` what the sandbox made or
/// changed there since `since` (its start) as another id than the agent. As root directly; in user mode through `paddock-jail
/// giveback` run as root of a user namespace with the user's map.
pub fn give_back(
    jail: &Path,
    folders: &[(std::path::PathBuf, u32, u32)],
    base: u32,
    since: i128,
) -> Result<(), String> {
    use crate::jail::giveback::{GiveBack, give_back as walk};
    if folders.is_empty() {
        return Ok(());
    }
    if !is_user_mode() {
        for (dir, uid, gid) in folders {
            walk(dir, GiveBack::for_sandbox(false, base, (*uid, *gid), since))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        return Ok(());
    }
    let ids = current_user_ids().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(jail);
    cmd.arg("giveback")
        .arg(since.to_string())
        .args(folders.iter().map(|(d, _, _)| d))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = run_mapped(&mut cmd, &ids).map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} giveback: {status}", jail.display()))
    }
}

/// What a backend (`backend`) starting a sandbox of `image` with `limits` checks first: the
/// ids of this process's sandboxes (the user's in user mode, `None` as root), the image built
/// for those ids, and no `--disk` in user mode (a sandbox stored before may ask for one).
pub fn sandbox_ids(
    backend: &'static str,
    image: &paddock_core::ImageInfo,
    limits: &paddock_policy::Limits,
) -> Result<Option<UserIds>, paddock_core::BackendError> {
    use paddock_core::BackendError;
    let idmap = current_idmap().map_err(|e| BackendError::Unavailable {
        backend,
        reason: e.to_string(),
    })?;
    if image.idmap != idmap {
        let who = if idmap.user.is_some() {
            "this user's"
        } else {
            "root's"
        };
        return Err(BackendError::Layer {
            layer: "image".into(),
            message: format!(
                "image {0} was built for other ids than {who} sandboxes use (by another user, as root, or before the subordinate ids changed); rebuild it with `paddock image build --force {0}`",
                image.name
            ),
        });
    }
    if idmap.user.is_some() && limits.disk.is_some() {
        return Err(BackendError::Layer {
            layer: "disk limit".into(),
            message: DISK_NEEDS_ROOT.into(),
        });
    }
    Ok(idmap.user)
}
