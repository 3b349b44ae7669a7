//! Capabilities the sandbox's root keeps (inside its own user namespace only).
//!
//! The set container engines grant by default, minus raw networking and device nodes: enough for
//! package managers (`chown`, `setuid` to drop to service users), nothing that administers the
//! kernel. The bounding set is cut too, so `sudo` inside cannot win the rest back.

use std::collections::HashSet;

use caps::{CapSet, Capability};

/// Capabilities kept.
pub const KEPT: [Capability; 11] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_AUDIT_WRITE,
];

/// Drops everything else from the bounding, inheritable, permitted and effective sets.
pub fn restrict() -> Result<(), caps::errors::CapsError> {
    let kept: HashSet<Capability> = KEPT.into_iter().collect();
    for cap in caps::all() {
        if !kept.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    caps::set(None, CapSet::Inheritable, &HashSet::new())?;
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    let _ = caps::clear(None, CapSet::Ambient);
    Ok(())
}
