//! Giving the user back the files a sandbox made in their folders as another user than the
//! agent (with sudo, or as a service's user): after the sandbox ends, every file of a shared
//! read-write folder that belongs to one of the sandbox's ids is given to the folder's owner,
//! so that the user can change and delete everything the agent left, on every backend alike.
//!
//! The tree was written by the sandbox, so the walk trusts nothing in it: it moves from
//! directory descriptor to directory descriptor, never follows a symlink (symlinks themselves
//! are changed, not their targets), and stays on the folder's file system.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, openat2, statat};

/// Whose files are given back, and to whom.
#[derive(Debug, Clone, Copy)]
pub struct GiveBack {
    /// First id (uid and gid) of the sandbox's range, as this process sees ids.
    pub first: u32,
    /// How many ids the range has.
    pub count: u32,
    /// An id of the range that is the owner already (user mode: the agent), left alone.
    pub except: Option<u32>,
    /// The owner's uid and gid.
    pub to: (u32, u32),
    /// Only entries changed since then (nanoseconds since the epoch, change time): those the
    /// sandbox made or changed. A folder may hold files of these ids the sandbox never
    /// touched (another sandbox's layer, an image tree, a rootless container's storage under
    /// the user's subordinate ids), and those are left alone.
    pub since: i128,
}

impl GiveBack {
    /// What a sandbox gives the owner (`to`) of a folder it shared: in root mode the
    /// sandbox's host range from `base`; in user mode, seen from the jail's user namespace,
    /// every sandbox id but the agent's, which is the user (`to` is then the agent).
    /// `since`: when the sandbox started (see [`GiveBack::since`]).
    pub fn for_sandbox(user_mode: bool, base: u32, to: (u32, u32), since: i128) -> GiveBack {
        if user_mode {
            GiveBack {
                first: 0,
                count: paddock_core::ID_RANGE,
                except: Some(paddock_core::AGENT_ID),
                to: (paddock_core::AGENT_ID, paddock_core::AGENT_ID),
                since,
            }
        } else {
            GiveBack {
                first: base,
                count: paddock_core::ID_RANGE,
                except: None,
                to,
                since,
            }
        }
    }

    fn sandbox_id(&self, id: u32) -> bool {
        id.checked_sub(self.first).is_some_and(|o| o < self.count) && Some(id) != self.except
    }
}

/// Now, as a change time (nanoseconds since the epoch), one second early: the kernel stamps
/// change times from a coarse clock.
pub fn start_time() -> i128 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    now - 1_000_000_000
}

/// What a walk changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Given {
    /// Entries given back.
    pub changed: u64,
    /// Entries that could not be (left as they were).
    pub failed: u64,
}

fn open_dir(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> rustix::io::Result<OwnedFd> {
    openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Walks the folder `root` (a host path the host side checked) and gives its sandbox-owned
/// entries back as `how` says. The folder itself is left alone. Open descriptors: one per
/// level of depth.
pub fn give_back(root: &Path, how: GiveBack) -> std::io::Result<Given> {
    let top = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let dev = rustix::fs::fstat(&top)?.st_dev;
    let mut given = Given::default();
    let subdirs = visit(&top, dev, how, &mut given);
    // Each level: its directory and the subdirectories still to walk.
    let mut stack: Vec<(OwnedFd, Vec<CString>)> = vec![(top, subdirs)];
    while let Some((dir, mut pending)) = stack.pop() {
        let Some(name) = pending.pop() else { continue };
        let sub = open_dir(dir.as_fd(), &name);
        stack.push((dir, pending));
        match sub {
            Ok(sub) => {
                let below = visit(&sub, dev, how, &mut given);
                stack.push((sub, below));
            }
            Err(_) => given.failed += 1,
        }
    }
    Ok(given)
}

/// Gives back the entries of `dir`; returns its subdirectories on the file system `dev`.
fn visit(dir: &OwnedFd, dev: u64, how: GiveBack, given: &mut Given) -> Vec<CString> {
    let mut subdirs = Vec::new();
    let Ok(entries) = Dir::read_from(dir) else {
        given.failed += 1;
        return subdirs;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let Ok(st) = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            given.failed += 1;
            continue;
        };
        let changed = i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec);
        if changed >= how.since && (how.sandbox_id(st.st_uid) || how.sandbox_id(st.st_gid)) {
            if chown(dir.as_fd(), name, st.st_uid, st.st_gid, how) {
                given.changed += 1;
            } else {
                given.failed += 1;
            }
        }
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory && st.st_dev == dev {
            subdirs.push(name.to_owned());
        }
    }
    subdirs
}

/// Changes the sandbox-owned ids of `name` in `dir` (a symlink itself, never its target).
fn chown(dir: BorrowedFd<'_>, name: &std::ffi::CStr, uid: u32, gid: u32, how: GiveBack) -> bool {
    let uid = how
        .sandbox_id(uid)
        .then(|| rustix::fs::Uid::from_raw(how.to.0));
    let gid = how
        .sandbox_id(gid)
        .then(|| rustix::fs::Gid::from_raw(how.to.1));
    rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sandbox_range_but_the_exception_is_given_back() {
        let how = GiveBack {
            first: 100,
            count: 10,
            except: Some(105),
            to: (7, 7),
            since: 0,
        };
        let ids: Vec<u32> = (95..115).filter(|i| how.sandbox_id(*i)).collect();
        assert_eq!(ids, [100, 101, 102, 103, 104, 106, 107, 108, 109]);
    }

    /// A tree a sandbox left: its files, deep directories and a symlink out of the folder
    /// are given back; the symlink's target and the agent's files are not touched.
    #[test]
    fn a_left_tree_is_given_back_without_following_symlinks() {
        use std::os::unix::fs::{MetadataExt, lchown, symlink};
        if !rustix::process::geteuid().is_root() {
            assert!(
                std::env::var_os("PADDOCK_REQUIRE_ROOT").is_none(),
                "this test needs root (PADDOCK_REQUIRE_ROOT is set, so it may not be skipped)"
            );
            eprintln!("skipped: needs root to make files of other ids");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (ws, outside) = (d.path().join("ws"), d.path().join("outside"));
        // Left before the sandbox started: an image tree of the same ids in the folder.
        std::fs::create_dir_all(ws.join("old-image/etc")).unwrap();
        for p in ["old-image", "old-image/etc"] {
            lchown(ws.join(p), Some(0x7000_0000), Some(0x7000_0000)).unwrap();
        }
        // Change times come from a coarse clock (a tick behind at most): a tick apart each way.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let since = start_time() + 1_000_000_000;
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::create_dir_all(ws.join("a/b/c")).unwrap();
        std::fs::write(&outside, "x").unwrap();
        std::fs::write(ws.join("a/b/c/root-made"), "x").unwrap();
        std::fs::write(ws.join("agent-made"), "x").unwrap();
        symlink(&outside, ws.join("a/link")).unwrap();
        let base = 0x7000_0000;
        for (p, id) in [
            ("a", base),
            ("a/b", base + 33),
            ("a/b/c", base),
            ("a/b/c/root-made", base),
            ("a/link", base),
            ("agent-made", 4242),
        ] {
            lchown(ws.join(p), Some(id), Some(id)).unwrap();
        }
        lchown(&outside, Some(base), Some(base)).unwrap();
        let how = GiveBack {
            first: base,
            count: 65536,
            except: None,
            to: (4242, 4243),
            since,
        };
        let given = give_back(&ws, how).unwrap();
        assert_eq!(
            given,
            Given {
                changed: 5,
                failed: 0
            }
        );
        let owner = |p: &Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        for p in ["a", "a/b", "a/b/c", "a/b/c/root-made", "a/link"] {
            assert_eq!(owner(&ws.join(p)), (4242, 4243), "{p}");
        }
        assert_eq!(owner(&ws.join("agent-made")), (4242, 4242));
        assert_eq!(owner(&outside), (base, base));
        for p in ["old-image", "old-image/etc"] {
            assert_eq!(owner(&ws.join(p)), (base, base), "{p} was there before");
        }
    }
}
