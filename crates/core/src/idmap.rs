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
    /// The relay process: a command's terminal, streams and session frames.
    Relay,
}

/// The unprivileged host uid (and gid) a helper of sandbox `name` runs as when Paddock runs as
/// root: one per sandbox name and helper in a range of its own (`0x7e000000`, plus `0x10000`
/// per kind of helper, plus a 16-bit hash of the name), below the sandboxes' own ids. A
/// compromised helper of one sandbox so shares no identity with the host, with the other
/// helpers, or (short of a hash collision) with another sandbox's helpers, and owns no file.
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
        Helper::Relay => 2,
    };
    0x7e00_0000 + (kind << 16) + (h & 0xffff)
}

/// The sandbox's agent user and group inside (the image's `agent`).
pub const AGENT_ID: u32 = 1000;

/// How a sandbox's ids are host ids.
///
/// - Root mode (`user` is `None`): sandbox uid `n` is host uid `base + n`, the same for gids,
///   in a range no host user has. Host root is never in the range.
/// - User mode (`user` is `Some`, Paddock run by an ordinary user): the sandbox's agent (1000)
///   is the user, and every other sandbox id comes from the user's subordinate ranges
///   (`/etc/subuid`, `/etc/subgid`), so files the agent makes in the workspace are the user's
///   own and sudo inside has ids to switch to. `base` is the first subordinate uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// Host uid of the sandbox's root.
    pub base: u32,
    /// User mode: the user and their subordinate ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserIds>,
}

impl Default for IdMap {
    fn default() -> Self {
        IdMap {
            base: DEFAULT_ID_BASE,
            user: None,
        }
    }
}

/// An ordinary user's ids, as user mode maps them into a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserIds {
    /// The user's uid (the sandbox's agent).
    pub uid: u32,
    /// The user's primary gid (the agent's group).
    pub gid: u32,
    /// First of [`ID_RANGE`] subordinate uids.
    pub subuid: u32,
    /// First of [`ID_RANGE`] subordinate gids.
    pub subgid: u32,
}

/// One line of a user namespace's map: `count` ids from `inside` are host ids from `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRange {
    /// First id inside.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// How many.
    pub count: u32,
}

impl UserIds {
    /// The user mode map of uids (`gid: false`) or gids: sandbox 0..999 and 1001..65535 are
    /// the subordinate range at the same offsets, sandbox 1000 is the user. One subordinate id
    /// (the range's 1000th) is left unused.
    pub fn ranges(&self, gid: bool) -> [MapRange; 3] {
        let (own, sub) = if gid {
            (self.gid, self.subgid)
        } else {
            (self.uid, self.subuid)
        };
        [
            MapRange {
                inside: 0,
                outside: sub,
                count: AGENT_ID,
            },
            MapRange {
                inside: AGENT_ID,
                outside: own,
                count: 1,
            },
            MapRange {
                inside: AGENT_ID + 1,
                outside: sub + AGENT_ID + 1,
                count: ID_RANGE - AGENT_ID - 1,
            },
        ]
    }

    /// Finds the ids of user `name` (uid `uid`, primary gid `gid`) in the texts of
    /// `/etc/subuid` and `/etc/subgid`: the first range of each, by name or uid, that holds a
    /// whole sandbox.
    pub fn from_subordinate(
        name: &str,
        uid: u32,
        gid: u32,
        subuid: &str,
        subgid: &str,
    ) -> Option<UserIds> {
        let first = |text: &str| -> Option<u32> {
            let start = subordinate_ranges(text, name, uid)
                .into_iter()
                .find(|r| r.1 >= u64::from(ID_RANGE))?
                .0;
            u32::try_from(start)
                .ok()
                .filter(|s| s.checked_add(ID_RANGE).is_some())
        };
        Some(UserIds {
            uid,
            gid,
            subuid: first(subuid)?,
            subgid: first(subgid)?,
        })
    }
}

/// The user mode map as seen from inside the namespace it made: each of its ranges onto
/// itself. A user namespace nested in that one (the sandbox's own, gVisor's) maps with these
/// lines, since the kernel wants each line of a nested map within one line of its parent's.
pub fn nested_identity() -> [MapRange; 3] {
    let shape = UserIds {
        uid: 0,
        gid: 0,
        subuid: 0,
        subgid: 0,
    };
    shape.ranges(false).map(|r| MapRange {
        outside: r.inside,
        ..r
    })
}

/// The ranges (first, count) a `/etc/subuid` or `/etc/subgid` text gives the user `name`
/// (uid `uid`), by name or uid, in file order.
pub fn subordinate_ranges(text: &str, name: &str, uid: u32) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (owner, first, count) = (f.next()?, f.next()?, f.next()?);
            (owner == name || owner == uid.to_string())
                .then(|| Some((first.parse().ok()?, count.parse().ok()?)))
                .flatten()
        })
        .collect()
}

impl IdMap {
    /// The user mode map of `user`.
    pub fn for_user(user: UserIds) -> IdMap {
        IdMap {
            base: user.subuid,
            user: Some(user),
        }
    }

    /// Host uid of sandbox uid `inner`.
    pub fn to_host(self, inner: u32) -> u32 {
        match self.user {
            Some(u) if inner == AGENT_ID => u.uid,
            Some(u) => u.subuid + inner,
            None => self.base + inner,
        }
    }

    /// The sandbox user namespace's map of uids (`gid: false`) or gids.
    pub fn ranges(self, gid: bool) -> Vec<MapRange> {
        match self.user {
            Some(u) => u.ranges(gid).to_vec(),
            None => vec![MapRange {
                inside: 0,
                outside: self.base,
                count: ID_RANGE,
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: UserIds = UserIds {
        uid: 1001,
        gid: 1002,
        subuid: 100_000,
        subgid: 165_536,
    };

    #[test]
    fn user_mode_maps_the_agent_to_the_user_and_the_rest_to_subordinate_ids() {
        let r = |inside, outside, count| MapRange {
            inside,
            outside,
            count,
        };
        assert_eq!(
            USER.ranges(false),
            [
                r(0, 100_000, 1000),
                r(1000, 1001, 1),
                r(1001, 101_001, 64_535)
            ]
        );
        assert_eq!(
            USER.ranges(true),
            [
                r(0, 165_536, 1000),
                r(1000, 1002, 1),
                r(1001, 166_537, 64_535)
            ]
        );
        assert_eq!(
            nested_identity(),
            [r(0, 0, 1000), r(1000, 1000, 1), r(1001, 1001, 64_535)]
        );
        let total: u32 = USER.ranges(false).iter().map(|r| r.count).sum();
        assert_eq!(total, ID_RANGE);
        let m = IdMap::for_user(USER);
        assert_eq!(
            (m.to_host(0), m.to_host(1000), m.to_host(1001)),
            (100_000, 1001, 101_001)
        );
        assert_eq!(
            IdMap::default().ranges(false),
            [r(0, DEFAULT_ID_BASE, ID_RANGE)]
        );
    }

    #[test]
    fn subordinate_ids_are_found_by_name_or_uid_and_must_hold_a_sandbox() {
        let uids = "other:100000:65536\npdev:165536:1000\n1001:231072:65536\n";
        let gids = "pdev:300000:65536\n";
        assert_eq!(
            UserIds::from_subordinate("pdev", 1001, 1002, uids, gids),
            Some(UserIds {
                uid: 1001,
                gid: 1002,
                subuid: 231_072,
                subgid: 300_000
            })
        );
        assert_eq!(
            UserIds::from_subordinate("pdev", 1001, 1002, uids, ""),
            None
        );
        assert_eq!(
            UserIds::from_subordinate("pdev", 1001, 1002, "pdev:4294967000:65536", gids),
            None
        );
        assert_eq!(
            subordinate_ranges(uids, "pdev", 1001),
            [(165_536, 1000), (231_072, 65_536)]
        );
    }

    #[test]
    fn root_mode_images_still_read() {
        let m: IdMap = serde_json::from_str(r#"{"base":1879048192}"#).unwrap();
        assert_eq!(m, IdMap::default());
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"base":1879048192}"#);
    }
}
