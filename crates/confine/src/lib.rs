//! The jail toolkit every backend builds on: namespaces and mounts ([`jail`]), the sandbox's
//! root filesystem on the host ([`rootfs`]), cgroups, seccomp, Landlock and capabilities, and
//! the configuration of the jail binary (`paddock-jail`, its own crate), which does a sandbox's
//! privileged setup. The ns, gvisor and vm backends and the host-side helpers (the egress
//! proxy's process, the relay process ([`relay`]), the VM's devices) take their confinement
//! from here ([`helper`]); no backend depends on
//! another. User mode (an ordinary user's sandboxes) takes its id maps from [`user`].

pub mod capabilities;
pub mod cgroup;
pub mod config;
#[cfg(target_os = "linux")]
pub mod helper;
#[cfg(target_os = "linux")]
pub mod jail;
pub mod landlock;
pub mod prompt;
#[cfg(target_os = "linux")]
pub mod relay;
pub mod review;
pub mod rootfs;
pub mod seccomp;
#[cfg(target_os = "linux")]
pub mod user;

use std::fs;
use std::path::{Path, PathBuf};

/// Name of the jail binary, installed next to `paddock`.
pub const JAIL_BINARY: &str = "paddock-jail";

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
