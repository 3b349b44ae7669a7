//! User namespaces: the sandbox's own (maps written by the outer jail process) and the ones
//! that describe idmapped mounts of shared folders.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use paddock_core::ID_RANGE;
use rustix::fs::{Mode, OFlags, open};
use rustix::thread::{UnshareFlags, unshare_unsafe};

use super::{Failure, Layer};
use crate::config::Bind;

/// The agent's uid and gid inside the sandbox.
const AGENT: u32 = 1000;

/// Writes the sandbox's maps: inside 0..65535 is host `base..base+65535` (root mode), or the
/// same ids of the jail's own user namespace (user mode, where `base` is 0).
pub fn write_maps(child: Pid, base: u32, user_mode: bool) -> std::io::Result<()> {
    let text = map_text(base, user_mode);
    std::fs::write(format!("/proc/{child}/uid_map"), &text)?;
    std::fs::write(format!("/proc/{child}/gid_map"), &text)
}

/// The sandbox's map (see [`write_maps`]). Each line of a nested namespace's map must lie
/// within one line of its parent's, so in user mode it follows the three ranges of the jail's
/// namespace ([`paddock_core::UserIds::ranges`]).
fn map_text(base: u32, user_mode: bool) -> String {
    if !user_mode {
        return format!("0 {base} {ID_RANGE}\n");
    }
    paddock_core::idmap::nested_identity()
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// The idmapping of a shared folder owned by host `uid:gid`: the owner's files appear as the
/// agent's, files made by the sandbox's other users keep their (unprivileged) host ids, and
/// everything else appears as `nobody`. Format: on-disk id, id seen by the sandbox, count.
pub fn idmap_lines(owner: u32, base: u32) -> Result<String, String> {
    if (base..base + ID_RANGE).contains(&owner) {
        return Err(format!(
            "the owner id {owner} lies in the sandbox id range {base}..{}",
            base + ID_RANGE
        ));
    }
    Ok(format!(
        "{owner} {} 1\n{base} {base} {AGENT}\n{} {} {}\n",
        base + AGENT,
        base + AGENT + 1,
        base + AGENT + 1,
        ID_RANGE - AGENT - 1
    ))
}

/// One user namespace per distinct owner of a shared folder, as descriptors for mount_setattr.
pub fn idmap_namespaces(
    binds: &[Bind],
    base: u32,
) -> Result<BTreeMap<(u32, u32), OwnedFd>, Failure> {
    let mut out = BTreeMap::new();
    for b in binds.iter().filter(|b| b.idmap) {
        let key = (b.owner_uid, b.owner_gid);
        if out.contains_key(&key) {
            continue;
        }
        let uid_map =
            idmap_lines(b.owner_uid, base).map_err(|e| Failure::new("idmapped mounts", e))?;
        let gid_map =
            idmap_lines(b.owner_gid, base).map_err(|e| Failure::new("idmapped mounts", e))?;
        out.insert(key, make_userns(&uid_map, &gid_map)?);
    }
    Ok(out)
}

fn make_userns(uid_map: &str, gid_map: &str) -> Result<OwnedFd, Failure> {
    detached_userns(uid_map, gid_map).layer("idmapped mounts", "user namespace")
}

/// A user namespace with these maps (`/proc/PID/uid_map` lines), owned by the caller and held
/// by the returned descriptor alone: for idmapped mounts, or for a helper to `setns` into
/// before it executes. A short-lived child creates it; the caller writes its maps.
pub fn detached_userns(uid_map: &str, gid_map: &str) -> std::io::Result<OwnedFd> {
    let err = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"));
    let (mut ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map(|(r, w)| (std::fs::File::from(r), std::fs::File::from(w)))?;
    let (hold_r, hold_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map(|(r, w)| (std::fs::File::from(r), std::fs::File::from(w)))?;
    // SAFETY: the child makes only system calls (unshare, write, read, _exit) and allocates
    // nothing, so forking a multi-threaded caller is sound.
    match unsafe { fork() }.map_err(std::io::Error::from)? {
        ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            // SAFETY: single-threaded child.
            let ok = unsafe { unshare_unsafe(UnshareFlags::NEWUSER) }.is_ok();
            let mut w = ready_w;
            let _ = w.write_all(&[u8::from(ok)]);
            let mut r = hold_r;
            let _ = r.read(&mut [0u8; 1]);
            // SAFETY: ends this helper child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(hold_r);
            let mut b = [0u8; 1];
            let result = (|| {
                ready_r
                    .read_exact(&mut b)
                    .map_err(|e| err("the namespace helper died", e))?;
                if b[0] != 1 {
                    return Err(std::io::Error::other("cannot create a user namespace"));
                }
                std::fs::write(format!("/proc/{child}/uid_map"), uid_map)
                    .map_err(|e| err("cannot write uid_map", e))?;
                // No setgroups() in it: its processes cannot take groups beyond the map's.
                std::fs::write(format!("/proc/{child}/setgroups"), "deny")
                    .map_err(|e| err("cannot write setgroups", e))?;
                std::fs::write(format!("/proc/{child}/gid_map"), gid_map)
                    .map_err(|e| err("cannot write gid_map", e))?;
                open(
                    format!("/proc/{child}/ns/user").as_str(),
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| err("cannot open the user namespace", e.into()))
            })();
            drop(hold_w);
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nested_map_follows_the_outer_ranges_in_user_mode() {
        assert_eq!(map_text(0x7000_0000, false), "0 1879048192 65536\n");
        assert_eq!(
            map_text(0, true),
            "0 0 1000\n1000 1000 1\n1001 1001 64535\n"
        );
    }

    #[test]
    fn idmap_for_owner() {
        let base = 0x7000_0000;
        assert_eq!(
            idmap_lines(1234, base).unwrap(),
            format!(
                "1234 {} 1\n{base} {base} 1000\n{} {} 64535\n",
                base + 1000,
                base + 1001,
                base + 1001
            )
        );
        assert!(idmap_lines(base + 5, base).is_err());
        assert!(idmap_lines(0, base).is_ok());
    }
}
