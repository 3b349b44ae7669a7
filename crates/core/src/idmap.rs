//! The id mapping between a sandbox and the host.

use serde::{Deserialize, Serialize};

/// First host uid/gid of the range sandboxes use. It lies in the range systemd documents as
/// unused (0x6FFF0000–0x7FFDFFFF), away from `/etc/subuid` allocations (which start at 100000)
/// and from systemd-nspawn's automatic range, so no other user's processes share these ids.
pub const DEFAULT_ID_BASE: u32 = 0x7000_0000;

/// Number of ids each sandbox has (uid 0 to 65535 inside).
pub const ID_RANGE: u32 = 65536;

/// A host-side helper that reads what a sandbox sends, and so runs as a uid of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// The VM's vsock device.
    Vsock,
    /// The egress proxy process.
    Egress,
}

/// The unprivileged host uid (and gid) a helper of sandbox `name` runs as when Paddock runs as
/// root: one per sandbox name and helper in a range of its own (`0x7e000000`, plus `0x10000`
/// per kind of helper, plus a 16-bit hash of the name), below the sandboxes' own ids. A
/// compromised helper of one sandbox so shares no identity with the host, with the other
/// helper, or (short of a hash collision) with another sandbox's helpers, and owns no file.
pub fn helper_uid(name: &str, helper: Helper) -> u32 {
    // FNV-1a, stable across builds.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let kind = match helper {
        Helper::Vsock => 0,
        Helper::Egress => 1,
    };
    0x7e00_0000 + (kind << 16) + (h & 0xffff)
}

/// Sandbox uid `n` is host uid `base + n`; the same for gids. Host root is never in the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// Host id of the sandbox's root.
    pub base: u32,
}

impl Default for IdMap {
    fn default() -> Self {
        IdMap {
            base: DEFAULT_ID_BASE,
        }
    }
}

impl IdMap {
    /// Host id of sandbox id `inner`.
    pub fn to_host(self, inner: u32) -> u32 {
        self.base + inner
    }

    /// The `uid_map`/`gid_map` line for the sandbox's user namespace.
    pub fn map_line(self) -> String {
        format!("0 {} {}\n", self.base, ID_RANGE)
    }
}
