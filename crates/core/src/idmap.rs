//! The id mapping between a sandbox and the host.

use serde::{Deserialize, Serialize};

/// First host uid/gid of the range sandboxes use. It lies in the range systemd documents as
/// unused (0x6FFF0000–0x7FFDFFFF), away from `/etc/subuid` allocations (which start at 100000)
/// and from systemd-nspawn's automatic range, so no other user's processes share these ids.
pub const DEFAULT_ID_BASE: u32 = 0x7000_0000;

/// Number of ids each sandbox has (uid 0 to 65535 inside).
pub const ID_RANGE: u32 = 65536;

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
