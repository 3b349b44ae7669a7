//! `paddock system setup`: what an ordinary user cannot do alone, done once by root.
//!
//! For one user: the distribution's `newuidmap`/`newgidmap` (Paddock installs nothing setuid of
//! its own), a range of 65,536 subordinate uids and gids (the sandbox's other ids), a cgroup
//! subtree of their own in every hierarchy that has a controller Paddock limits with
//! (`paddock-users/UID`, so their sandboxes' limits hold without root), and access to
//! `/dev/kvm` where the host has one. Each step checks first and changes only what is missing,
//! so running it again changes nothing; [`check`] reports the same state without changing it,
//! for `paddock doctor` as that user.
//!
//! The cgroup steps are a plan of plain actions ([`delegation`]), made from the host's layout
//! and tested without root; only [`setup`] carries them out.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use paddock_confine::cgroup::{CgroupHost, Hierarchy};
use paddock_core::ProbeItem;

/// How many subordinate ids a user needs: the sandbox's whole id range.
pub const SUBORDINATE_IDS: u64 = 65_536;

/// The controllers a user's sandboxes are limited with, and the one that counts their CPU time
/// for `paddock ls` where it is a hierarchy of its own (v1 without `cpu,cpuacct`).
const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

pub use paddock_confine::cgroup::USERS_CGROUP;

/// Why host preparation failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// not run as root
    #[error(
        "`paddock system setup` prepares the host and must run as root: sudo paddock system setup --user {0}"
    )]
    NotRoot(String),
    /// no user named
    #[error(
        "name the user to prepare: sudo paddock system setup --user NAME (sudo sets SUDO_USER, which names the user who ran it)"
    )]
    NoUser,
    /// the user does not exist
    #[error("no user {0} on this host")]
    UnknownUser(String),
    /// root needs nothing prepared
    #[error("root needs no preparation; name the ordinary user who will run paddock")]
    Root,
    /// a step failed
    #[error("{step}: {message}")]
    Step {
        /// The step.
        step: &'static str,
        /// What failed, and what to do.
        message: String,
    },
}

fn failed(step: &'static str) -> impl Fn(String) -> SystemError {
    move |message| SystemError::Step { step, message }
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The step.
    pub step: &'static str,
    /// Whether it changed the host.
    pub changed: bool,
    /// What it found or did.
    pub detail: String,
}

/// The user being prepared.
#[derive(Debug, Clone)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl Account {
    /// Looks `name` up.
    pub fn find(name: &str) -> Result<Account, SystemError> {
        let user = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| SystemError::UnknownUser(name.to_owned()))?;
        Ok(Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// The user running this process.
    pub fn current() -> Option<Account> {
        let uid = nix::unistd::Uid::current();
        let user = nix::unistd::User::from_uid(uid).ok().flatten()?;
        Some(Account {
            name: user.name,
            uid: uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

/// A range of subordinate ids: (first, count).
pub type Range = (u64, u64);

/// The ranges `file` (`/etc/subuid` or `/etc/subgid`) gives `who`, by name or uid.
pub fn ranges_of(file: &str, who: &Account) -> Vec<Range> {
    paddock_core::idmap::subordinate_ranges(file, &who.name, who.uid)
}

/// Whether `ranges` hold a whole sandbox id range.
pub fn enough(ranges: &[Range]) -> Option<Range> {
    ranges.iter().copied().find(|r| r.1 >= SUBORDINATE_IDS)
}

/// A free range of [`SUBORDINATE_IDS`] for a new user in `file`: after every range there, on a
/// multiple of 65,536, and never below 100,000 (where `useradd` starts).
pub fn free_range(file: &str) -> Range {
    let end = file
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':').skip(1);
            let first: u64 = f.next()?.parse().ok()?;
            let count: u64 = f.next()?.parse().ok()?;
            Some(first + count)
        })
        .max()
        .unwrap_or(0)
        .max(100_000);
    (
        end.div_ceil(SUBORDINATE_IDS) * SUBORDINATE_IDS,
        SUBORDINATE_IDS,
    )
}

/// One action of the cgroup delegation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make the directory (a cgroup), if missing.
    Mkdir(PathBuf),
    /// Give the file or directory to the user.
    Chown(PathBuf),
    /// Append `+controller` words to a v2 `cgroup.subtree_control`, if missing.
    Enable(PathBuf, Vec<String>),
}

/// The user's cgroup subtree in each hierarchy that holds one of [`CONTROLLERS`].
pub fn subtrees(host: &CgroupHost, uid: u32) -> Vec<(Hierarchy, PathBuf)> {
    let mut out: Vec<(Hierarchy, PathBuf)> = Vec::new();
    for c in CONTROLLERS {
        if let Some(h) = host.placement(c) {
            let root = match &h {
                Hierarchy::V1(p) | Hierarchy::V2(p) => p.clone(),
            };
            let dir = root.join(USERS_CGROUP).join(uid.to_string());
            if !out.iter().any(|(_, d)| *d == dir) {
                out.push((h, dir));
            }
        }
    }
    out
}

/// What delegating the user's subtrees takes on `host`, in order.
///
/// - v1: the subtree, owned by the user with its `cgroup.procs` and `tasks` (the user makes a
///   cgroup per sandbox inside, whose files are then its own);
/// - v2: the controllers enabled down to the subtree, and the subtree owned by the user with
///   `cgroup.procs`, `cgroup.subtree_control` and `cgroup.threads`, as the kernel's delegation
///   model asks.
pub fn delegation(host: &CgroupHost, uid: u32) -> Vec<Action> {
    let mut out = Vec::new();
    for (h, dir) in subtrees(host, uid) {
        let Some(parent) = dir.parent().map(Path::to_path_buf) else {
            continue;
        };
        out.push(Action::Mkdir(parent.clone()));
        match h {
            Hierarchy::V1(_) => {
                out.push(Action::Mkdir(dir.clone()));
                for f in ["", "cgroup.procs", "tasks"] {
                    out.push(Action::Chown(if f.is_empty() {
                        dir.clone()
                    } else {
                        dir.join(f)
                    }));
                }
            }
            Hierarchy::V2(root) => {
                let on: Vec<String> = CONTROLLERS
                    .iter()
                    .filter(|c| host.v2_controllers.iter().any(|h| h == *c))
                    .map(|c| (*c).to_owned())
                    .collect();
                out.push(Action::Enable(
                    root.join("cgroup.subtree_control"),
                    on.clone(),
                ));
                out.push(Action::Enable(
                    parent.join("cgroup.subtree_control"),
                    on.clone(),
                ));
                out.push(Action::Mkdir(dir.clone()));
                out.push(Action::Enable(dir.join("cgroup.subtree_control"), on));
                for f in [
                    "",
                    "cgroup.procs",
                    "cgroup.subtree_control",
                    "cgroup.threads",
                ] {
                    out.push(Action::Chown(if f.is_empty() {
                        dir.clone()
                    } else {
                        dir.join(f)
                    }));
                }
            }
        }
    }
    out
}

/// Carries `action` out for `who`; true if it changed something.
fn apply(action: &Action, who: &Account) -> Result<bool, String> {
    use std::os::unix::fs::MetadataExt;
    match action {
        Action::Mkdir(d) => match fs::create_dir(d) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(format!("cannot make {}: {e}", d.display())),
        },
        Action::Chown(p) => {
            let m = fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
            if m.uid() == who.uid && m.gid() == who.gid {
                return Ok(false);
            }
            std::os::unix::fs::lchown(p, Some(who.uid), Some(who.gid))
                .map_err(|e| format!("cannot give {} to {}: {e}", p.display(), who.name))?;
            Ok(true)
        }
        Action::Enable(file, controllers) => {
            let have = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let missing: Vec<String> = controllers
                .iter()
                .filter(|c| !have.split_whitespace().any(|h| h == c.as_str()))
                .map(|c| format!("+{c}"))
                .collect();
            if missing.is_empty() {
                return Ok(false);
            }
            fs::write(file, missing.join(" ")).map_err(|e| {
                format!(
                    "cannot enable {} in {}: {e}",
                    missing.join(" "),
                    file.display()
                )
            })?;
            Ok(true)
        }
    }
}

fn run(step: &'static str, program: &str, args: &[&str]) -> Result<(), SystemError> {
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| failed(step)(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(failed(step)(format!(
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Where `program` is, on root's usual path.
fn program(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The programs user mode needs from the distribution: `newuidmap`/`newgidmap` (the only
/// privileged helpers) and `mmdebstrap` (per-user image builds).
fn id_maps() -> Result<Done, SystemError> {
    const STEP: &str = "newuidmap, newgidmap, mmdebstrap";
    let missing = || -> Vec<&str> {
        [
            ("newuidmap", "uidmap"),
            ("newgidmap", "uidmap"),
            ("mmdebstrap", "mmdebstrap"),
        ]
        .into_iter()
        .filter(|(p, _)| program(p).is_none())
        .map(|(_, package)| package)
        .collect()
    };
    let mut packages = missing();
    packages.dedup();
    if packages.is_empty() {
        return Ok(Done {
            step: STEP,
            changed: false,
            detail: "installed".into(),
        });
    }
    let mut args = vec![
        "-o",
        "DPkg::Lock::Timeout=600",
        "install",
        "-y",
        "-q",
        "--no-remove",
    ];
    args.extend(&packages);
    run(STEP, "apt-get", &args)?;
    if !missing().is_empty() {
        return Err(failed(STEP)(format!(
            "apt-get installed {} but {} is still missing",
            packages.join(", "),
            missing().join(", ")
        )));
    }
    Ok(Done {
        step: STEP,
        changed: true,
        detail: format!("installed {}", packages.join(", ")),
    })
}

fn subordinate_ids(who: &Account) -> Result<Done, SystemError> {
    let step = "subordinate ids";
    let read = |f: &str| fs::read_to_string(f).unwrap_or_default();
    let (uids, gids) = (read("/etc/subuid"), read("/etc/subgid"));
    let (u, g) = (
        enough(&ranges_of(&uids, who)),
        enough(&ranges_of(&gids, who)),
    );
    if let (Some(u), Some(g)) = (u, g) {
        return Ok(Done {
            step,
            changed: false,
            detail: format!(
                "uids {}-{}, gids {}-{}",
                u.0,
                u.0 + u.1 - 1,
                g.0,
                g.0 + g.1 - 1
            ),
        });
    }
    let mut args: Vec<String> = Vec::new();
    let mut said = Vec::new();
    if u.is_none() {
        let (first, count) = free_range(&uids);
        args.extend([
            "--add-subuids".into(),
            format!("{first}-{}", first + count - 1),
        ]);
        said.push(format!("uids {first}-{}", first + count - 1));
    }
    if g.is_none() {
        let (first, count) = free_range(&gids);
        args.extend([
            "--add-subgids".into(),
            format!("{first}-{}", first + count - 1),
        ]);
        said.push(format!("gids {first}-{}", first + count - 1));
    }
    args.push(who.name.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(step, "usermod", &args)?;
    Ok(Done {
        step,
        changed: true,
        detail: format!("added {}", said.join(", ")),
    })
}

fn cgroups(who: &Account) -> Result<Done, SystemError> {
    let step = "cgroup delegation";
    let host = CgroupHost::detect();
    let plan = delegation(&host, who.uid);
    if plan.is_empty() {
        return Ok(Done {
            step,
            changed: false,
            detail: "no memory, pids or cpu controller on this host: sandboxes run without limits"
                .into(),
        });
    }
    let mut changed = false;
    for a in &plan {
        changed |= apply(a, who).map_err(failed(step))?;
    }
    let dirs: Vec<String> = subtrees(&host, who.uid)
        .iter()
        .map(|(_, d)| d.display().to_string())
        .collect();
    Ok(Done {
        step,
        changed,
        detail: format!(
            "{} (cgroups are made anew at each boot: run this again after a reboot)",
            dirs.join(", ")
        ),
    })
}

fn kvm(who: &Account) -> Result<Done, SystemError> {
    use std::os::unix::fs::MetadataExt;
    let step = "/dev/kvm";
    let dev = Path::new("/dev/kvm");
    let Ok(meta) = fs::metadata(dev) else {
        return Ok(Done {
            step,
            changed: false,
            detail: "not on this host: the vm backend emulates (slow)".into(),
        });
    };
    let mut changed = false;
    let group = match nix::unistd::Group::from_name("kvm").ok().flatten() {
        Some(g) => g,
        None => {
            run(step, "groupadd", &["--system", "kvm"])?;
            changed = true;
            nix::unistd::Group::from_name("kvm")
                .ok()
                .flatten()
                .ok_or_else(|| failed(step)("groupadd made no kvm group".into()))?
        }
    };
    if !group.mem.contains(&who.name) && who.gid != group.gid.as_raw() {
        run(step, "usermod", &["--append", "--groups", "kvm", &who.name])?;
        changed = true;
    }
    if meta.gid() != group.gid.as_raw() || meta.permissions().mode() & 0o060 != 0o060 {
        std::os::unix::fs::chown(dev, None, Some(group.gid.as_raw()))
            .map_err(|e| failed(step)(format!("cannot give /dev/kvm to group kvm: {e}")))?;
        let mode = meta.permissions().mode() | 0o060;
        fs::set_permissions(dev, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| failed(step)(format!("cannot open /dev/kvm to group kvm: {e}")))?;
        changed = true;
    }
    Ok(Done {
        step,
        changed,
        detail: format!(
            "{} may open it through group kvm{}",
            who.name,
            if changed {
                " (from the user's next login)"
            } else {
                ""
            }
        ),
    })
}

/// Prepares the host for `user` (see the module's documentation), reporting each step to
/// `progress` as it ends.
pub fn setup(user: Option<&str>, mut progress: impl FnMut(&Done)) -> Result<(), SystemError> {
    let name = user
        .map(str::to_owned)
        .or_else(|| std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()));
    if !nix::unistd::Uid::effective().is_root() {
        let me = Account::current().map(|a| a.name);
        return Err(SystemError::NotRoot(
            name.or(me).unwrap_or_else(|| "NAME".into()),
        ));
    }
    let name = name.ok_or(SystemError::NoUser)?;
    let who = Account::find(&name)?;
    if who.uid == 0 {
        return Err(SystemError::Root);
    }
    progress(&id_maps()?);
    progress(&subordinate_ids(&who)?);
    progress(&cgroups(&who)?);
    progress(&kvm(&who)?);
    Ok(())
}

/// The state [`setup`] leaves, as `paddock doctor` shows it to `who`.
pub fn check(who: &Account) -> Vec<ProbeItem> {
    let fix = format!("sudo paddock system setup --user {}", who.name);
    let item = |name: &str, ok: bool, detail: String| ProbeItem {
        name: name.into(),
        ok,
        detail,
        fix: Some(fix.clone()),
        required: false,
    };
    let mut out = Vec::new();
    let maps = program("newuidmap").is_some() && program("newgidmap").is_some();
    out.push(item(
        "newuidmap, newgidmap",
        maps,
        if maps {
            "installed"
        } else {
            "missing (package uidmap)"
        }
        .into(),
    ));
    let read = |f: &str| fs::read_to_string(f).unwrap_or_default();
    let ids = enough(&ranges_of(&read("/etc/subuid"), who))
        .zip(enough(&ranges_of(&read("/etc/subgid"), who)));
    out.push(item(
        "subordinate ids",
        ids.is_some(),
        match ids {
            Some((u, g)) => format!("{} uids from {}, {} gids from {}", u.1, u.0, g.1, g.0),
            None => format!(
                "{} has no range of {SUBORDINATE_IDS} in /etc/subuid and /etc/subgid",
                who.name
            ),
        },
    ));
    let host = CgroupHost::detect();
    let trees = subtrees(&host, who.uid);
    let theirs: Vec<String> = trees
        .iter()
        .filter(|(_, d)| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(d).is_ok_and(|m| m.uid() == who.uid)
        })
        .map(|(_, d)| d.display().to_string())
        .collect();
    out.push(item(
        "cgroup delegation",
        !trees.is_empty() && theirs.len() == trees.len(),
        if trees.is_empty() {
            "no memory, pids or cpu controller on this host".into()
        } else if theirs.len() == trees.len() {
            theirs.join(", ")
        } else {
            format!(
                "{} of {} subtrees are {}'s (limits need them; cgroups are made anew at each boot)",
                theirs.len(),
                trees.len(),
                who.name
            )
        },
    ));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    fn who() -> Account {
        Account {
            name: "dev".into(),
            uid: 1000,
            gid: 1000,
        }
    }

    #[test]
    fn subordinate_ranges_are_read_by_name_or_uid_and_new_ones_go_after_all() {
        let file = "root:100000:65536\ndev:165536:1000\n1000:300000:65536\nother:500000:65536\n";
        assert_eq!(
            ranges_of(file, &who()),
            vec![(165_536, 1000), (300_000, 65_536)]
        );
        assert_eq!(enough(&ranges_of(file, &who())), Some((300_000, 65_536)));
        assert_eq!(enough(&[(165_536, 1000)]), None);
        assert_eq!(free_range(file), (589_824, 65_536));
        assert_eq!(free_range(""), (131_072, 65_536));
        assert_eq!(free_range("garbage\n:\n"), (131_072, 65_536));
    }

    #[test]
    fn a_hybrid_host_gets_one_subtree_per_v1_hierarchy() {
        let host = CgroupHost {
            v2_root: Some("/sys/fs/cgroup/unified".into()),
            v2_controllers: vec!["hugetlb".into()],
            v1: BTreeMap::from([
                ("memory".into(), "/sys/fs/cgroup/memory".into()),
                ("pids".into(), "/sys/fs/cgroup/pids".into()),
                ("cpu".into(), "/sys/fs/cgroup/cpu,cpuacct".into()),
                ("cpuacct".into(), "/sys/fs/cgroup/cpu,cpuacct".into()),
            ]),
            favordynmods: false,
            user: None,
        };
        let plan = delegation(&host, 1000);
        let memory = PathBuf::from("/sys/fs/cgroup/memory/paddock-users/1000");
        assert_eq!(
            plan[..5],
            [
                Action::Mkdir("/sys/fs/cgroup/memory/paddock-users".into()),
                Action::Mkdir(memory.clone()),
                Action::Chown(memory.clone()),
                Action::Chown(memory.join("cgroup.procs")),
                Action::Chown(memory.join("tasks")),
            ]
        );
        assert_eq!(plan.len(), 15, "memory, pids and cpu: {plan:?}");
        assert!(!plan.iter().any(|a| matches!(a, Action::Enable(..))));
        // cpuacct mounted on its own (as on this project's test machines): a fourth subtree.
        let mut apart = host.clone();
        apart.v1.insert("cpu".into(), "/sys/fs/cgroup/cpu".into());
        apart
            .v1
            .insert("cpuacct".into(), "/sys/fs/cgroup/cpuacct".into());
        let plan = delegation(&apart, 1000);
        assert_eq!(plan.len(), 20, "memory, pids, cpu and cpuacct: {plan:?}");
        assert!(plan.contains(&Action::Mkdir(
            "/sys/fs/cgroup/cpuacct/paddock-users/1000".into()
        )));
    }

    #[test]
    fn a_v2_host_enables_the_controllers_down_to_the_users_subtree() {
        let host = CgroupHost {
            v2_root: Some("/sys/fs/cgroup".into()),
            v2_controllers: vec!["cpu".into(), "memory".into(), "pids".into(), "io".into()],
            v1: BTreeMap::new(),
            favordynmods: false,
            user: None,
        };
        let on = vec!["memory".to_owned(), "pids".into(), "cpu".into()];
        let dir = PathBuf::from("/sys/fs/cgroup/paddock-users/1000");
        assert_eq!(
            delegation(&host, 1000),
            vec![
                Action::Mkdir("/sys/fs/cgroup/paddock-users".into()),
                Action::Enable("/sys/fs/cgroup/cgroup.subtree_control".into(), on.clone()),
                Action::Enable(
                    "/sys/fs/cgroup/paddock-users/cgroup.subtree_control".into(),
                    on.clone()
                ),
                Action::Mkdir(dir.clone()),
                Action::Enable(dir.join("cgroup.subtree_control"), on),
                Action::Chown(dir.clone()),
                Action::Chown(dir.join("cgroup.procs")),
                Action::Chown(dir.join("cgroup.subtree_control")),
                Action::Chown(dir.join("cgroup.threads")),
            ]
        );
    }

    #[test]
    fn no_controller_means_nothing_to_delegate() {
        assert_eq!(delegation(&CgroupHost::default(), 1000), Vec::new());
    }
}
