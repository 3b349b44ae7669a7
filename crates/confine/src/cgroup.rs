//! cgroup limits for a sandbox: v2 where the controller is on the unified hierarchy, v1
//! otherwise (hybrid hosts have both). A limit that was asked for and cannot be enforced is an
//! error, never a silent no-op.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use paddock_policy::Limits;

/// Why a cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// no hierarchy offers the controller a limit needs
    #[error(
        "cannot enforce {limit}: no {controller} cgroup controller is available ({found}); run as root on a host with cgroup v2 {controller} delegated or cgroup v1 {controller} mounted, or drop {limit}"
    )]
    Unavailable {
        /// The flag that asked for it.
        limit: &'static str,
        /// The controller.
        controller: &'static str,
        /// What the host offers.
        found: String,
    },
    /// user mode without a delegated subtree
    #[error(
        "cannot enforce {limit} as an ordinary user: no {controller} cgroup subtree is delegated to you ({subtree:?} is missing or not yours); run `sudo paddock system setup --user $USER` once, or drop {limit}"
    )]
    NotDelegated {
        /// The flag that asked for it.
        limit: &'static str,
        /// The controller.
        controller: &'static str,
        /// The subtree looked for.
        subtree: PathBuf,
    },
    /// a cgroup file could not be written
    #[error("cannot write {value:?} to {path:?}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Which hierarchy a controller is used from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hierarchy {
    /// The unified (v2) hierarchy mounted here.
    V2(PathBuf),
    /// A v1 hierarchy mounted here.
    V1(PathBuf),
}

impl Hierarchy {
    fn root(&self) -> &Path {
        match self {
            Hierarchy::V2(p) | Hierarchy::V1(p) => p,
        }
    }
}

/// What the host offers.
#[derive(Debug, Clone, Default)]
pub struct CgroupHost {
    /// Mount point of the unified hierarchy, if any.
    pub v2_root: Option<PathBuf>,
    /// Controllers available on the unified hierarchy.
    pub v2_controllers: Vec<String>,
    /// v1 controller → mount point.
    pub v1: BTreeMap<String, PathBuf>,
    /// Whether a hierarchy is mounted with `favordynmods`: moving a process into a cgroup then
    /// no longer waits for an RCU grace period (6-24 ms on this project's 2-core test host, paid
    /// by every sandbox start), at some cost to every fork and exit on the host.
    pub favordynmods: bool,
    /// User mode: the uid whose delegated subtree (`paddock-users/UID` in each hierarchy, made
    /// by `paddock system setup`) holds its sandboxes' cgroups; `None` (root): `paddock`.
    pub user: Option<u32>,
}

/// The folder below each hierarchy's root that holds the users' delegated subtrees.
pub const USERS_CGROUP: &str = "paddock-users";

const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

/// Default task limit when the user gave none and the pids controller exists: enough for any
/// build, far below what hurts the host.
pub const DEFAULT_PIDS: u32 = paddock_policy::DEFAULT_PIDS;

impl CgroupHost {
    /// Reads `/proc/self/mountinfo` and the unified hierarchy's controller list.
    pub fn detect() -> CgroupHost {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return CgroupHost::default();
        };
        let mut host = CgroupHost::from_mountinfo(&info);
        let euid = rustix::process::geteuid();
        host.user = (!euid.is_root()).then(|| euid.as_raw());
        if let Some(root) = &host.v2_root {
            host.v2_controllers = fs::read_to_string(root.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
        }
        host
    }

    /// The hierarchies named in `info` (the text of a mountinfo file); no controllers of the
    /// unified hierarchy yet.
    fn from_mountinfo(info: &str) -> CgroupHost {
        let mut host = CgroupHost::default();
        for line in info.lines() {
            // mountinfo: id parent maj:min root mountpoint opts [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mountpoint = left.split(' ').nth(4).map(PathBuf::from);
            let mut r = right.split(' ');
            let (Some(fstype), Some(_src), Some(superopts)) = (r.next(), r.next(), r.next()) else {
                continue;
            };
            let Some(mp) = mountpoint else { continue };
            if fstype.starts_with("cgroup") && superopts.split(',').any(|o| o == "favordynmods") {
                host.favordynmods = true;
            }
            match fstype {
                "cgroup2" if host.v2_root.is_none() => host.v2_root = Some(mp),
                "cgroup" => {
                    for opt in superopts.split(',') {
                        if CONTROLLERS.contains(&opt) {
                            host.v1.entry(opt.to_owned()).or_insert_with(|| mp.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        host
    }

    /// The folder of hierarchy `h` that holds this host's sandboxes' cgroups: `paddock` as
    /// root, the user's delegated subtree in user mode.
    pub fn parent(&self, h: &Hierarchy) -> PathBuf {
        match self.user {
            None => h.root().join("paddock"),
            Some(uid) => h.root().join(USERS_CGROUP).join(uid.to_string()),
        }
    }

    /// Whether this process may make cgroups in [`CgroupHost::parent`] of `h`: always as root
    /// (it is made when missing), in user mode when the subtree is delegated (exists, writable).
    pub fn may_use(&self, h: &Hierarchy) -> bool {
        self.user.is_none()
            || rustix::fs::access(self.parent(h), rustix::fs::Access::WRITE_OK).is_ok()
    }

    /// Whether every limit `limits` sets can be enforced here, before anything is made: each
    /// needs its controller, and in user mode a subtree delegated to the user.
    pub fn check(&self, limits: &Limits) -> Result<(), CgroupError> {
        let asked = [
            ("--memory", "memory", limits.memory.is_some()),
            ("--pids", "pids", limits.pids.is_some()),
            ("--cpus", "cpu", limits.cpus.is_some()),
        ];
        for (limit, controller, _) in asked.into_iter().filter(|a| a.2) {
            match self.placement(controller) {
                None => {
                    return Err(CgroupError::Unavailable {
                        limit,
                        controller,
                        found: self.found(),
                    });
                }
                Some(h) if !self.may_use(&h) => {
                    return Err(CgroupError::NotDelegated {
                        limit,
                        controller,
                        subtree: self.parent(&h),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The default `limits` this host can enforce: as root all of them; in user mode no disk
    /// limit (a loop device needs root) and a cgroup limit only where a subtree is delegated.
    pub fn enforceable(&self, mut limits: Limits) -> Limits {
        if self.user.is_some() {
            let usable = |c: &str| self.placement(c).is_some_and(|h| self.may_use(&h));
            limits.disk = None;
            if !usable("memory") {
                limits.memory = None;
            }
            if !usable("pids") {
                limits.pids = None;
            }
            if !usable("cpu") {
                limits.cpus = None;
            }
        }
        limits
    }

    /// Where `controller` is used from.
    pub fn placement(&self, controller: &str) -> Option<Hierarchy> {
        if let Some(root) = &self.v2_root
            && self.v2_controllers.iter().any(|c| c == controller)
        {
            return Some(Hierarchy::V2(root.clone()));
        }
        self.v1.get(controller).map(|p| Hierarchy::V1(p.clone()))
    }

    /// One line per controller for `paddock doctor`.
    pub fn describe(&self) -> Vec<(String, Option<String>)> {
        CONTROLLERS
            .iter()
            .map(|c| {
                let how = self.placement(c).map(|h| match h {
                    Hierarchy::V2(p) => format!("cgroup v2 at {}", p.display()),
                    Hierarchy::V1(p) => format!("cgroup v1 at {}", p.display()),
                });
                ((*c).to_owned(), how)
            })
            .collect()
    }

    fn found(&self) -> String {
        let v2 = match &self.v2_root {
            Some(_) if self.v2_controllers.is_empty() => "v2 has no controllers".to_owned(),
            Some(_) => format!("v2 has: {}", self.v2_controllers.join(" ")),
            None => "no v2 hierarchy".to_owned(),
        };
        let v1: Vec<_> = self.v1.keys().cloned().collect();
        let v1 = if v1.is_empty() {
            "no v1 controllers".to_owned()
        } else {
            format!("v1 has: {}", v1.join(" "))
        };
        format!("{v2}; {v1}")
    }
}

/// The cgroups of one running sandbox (one directory per hierarchy used).
#[derive(Debug, Default)]
pub struct SandboxCgroups {
    /// Directories to join (their `cgroup.procs`) and to remove afterwards.
    pub dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

impl SandboxCgroups {
    /// Creates the sandbox's cgroups under `paddock/NAME` and writes the limits.
    pub fn create(
        host: &CgroupHost,
        name: &str,
        limits: &Limits,
    ) -> Result<SandboxCgroups, CgroupError> {
        let mut wanted: BTreeMap<Hierarchy, Vec<(&str, String)>> = BTreeMap::new();
        let need = |limit: &'static str, controller: &'static str, required: bool| match host
            .placement(controller)
        {
            Some(h) if host.may_use(&h) => Ok(Some(h)),
            Some(h) if required => Err(CgroupError::NotDelegated {
                limit,
                controller,
                subtree: host.parent(&h),
            }),
            // User mode without delegation: no cgroup unless a limit asks for it.
            Some(_) => Ok(None),
            None if required => Err(CgroupError::Unavailable {
                limit,
                controller,
                found: host.found(),
            }),
            None => Ok(None),
        };
        if let Some(mem) = limits.memory {
            let h = need("--memory", "memory", true)?;
            if let Some(h) = h {
                let v = mem.0.to_string();
                let files = match &h {
                    Hierarchy::V2(_) => vec![
                        ("memory.max", v.clone()),
                        ("memory.swap.max", "0".to_owned()),
                    ],
                    Hierarchy::V1(_) => {
                        vec![
                            ("memory.limit_in_bytes", v.clone()),
                            ("memory.memsw.limit_in_bytes", v),
                        ]
                    }
                };
                wanted.entry(h).or_default().extend(files);
            }
        }
        // Without a limit, the memory and cpu cgroups are still made where the host has them, so
        // that `paddock update` can set one while the sandbox runs.
        if limits.memory.is_none()
            && let Some(h) = need("--memory", "memory", false)?
        {
            wanted.entry(h).or_default();
        }
        if limits.cpus.is_none()
            && let Some(h) = need("--cpus", "cpu", false)?
        {
            wanted.entry(h).or_default();
        }
        // CPU time used, for `paddock ls` (a controller of its own in some v1 layouts).
        if let Some(h) = need("cpu usage", "cpuacct", false)? {
            wanted.entry(h).or_default();
        }
        let pids = limits.pids.unwrap_or(DEFAULT_PIDS);
        if let Some(h) = need("--pids", "pids", limits.pids.is_some())? {
            wanted
                .entry(h)
                .or_default()
                .push(("pids.max", pids.to_string()));
        }
        if let Some(cpus) = limits.cpus
            && let Some(h) = need("--cpus", "cpu", true)?
        {
            {
                let quota = u64::from(cpus.0) * 100;
                let files = match &h {
                    Hierarchy::V2(_) => vec![("cpu.max", format!("{quota} 100000"))],
                    Hierarchy::V1(_) => {
                        vec![
                            ("cpu.cfs_period_us", "100000".to_owned()),
                            ("cpu.cfs_quota_us", quota.to_string()),
                        ]
                    }
                };
                wanted.entry(h).or_default().extend(files);
            }
        }
        let mut made = SandboxCgroups::default();
        for (h, files) in wanted {
            let parent = host.parent(&h);
            if let Hierarchy::V2(root) = &h {
                // A delegated subtree has its controllers enabled down to it already.
                let above = host.user.is_none().then_some(root.as_path());
                enable_v2_controllers(above, &parent, &files)?;
            } else {
                mkdir(&parent)?;
            }
            let dir = parent.join(name);
            recreate(&dir)?;
            made.dirs.push(dir.clone());
            for (file, value) in files {
                let path = dir.join(file);
                // memsw and swap files exist only with swap accounting; without it there is no swap to limit.
                if (file.contains("memsw") || file.contains("swap")) && !path.exists() {
                    continue;
                }
                if let Err(e) = write(&path, &value) {
                    made.remove();
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    /// The limits the sandbox ran into, read from the kernel's counters (before
    /// [`SandboxCgroups::remove`]): processes killed at the memory limit, forks refused at the
    /// process limit.
    pub fn events(&self) -> Vec<String> {
        let count = |dir: &Path, file: &str, key: &str| -> u64 {
            fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        (k == key).then(|| v.trim().parse().ok())?
                    })
                })
                .unwrap_or(0)
        };
        let mut out = Vec::new();
        for d in &self.dirs {
            let oom =
                count(d, "memory.events", "oom_kill") + count(d, "memory.oom_control", "oom_kill");
            if oom > 0 {
                out.push(format!(
                    "memory limit: the kernel killed {oom} process(es) that ran out of memory"
                ));
            }
            let refused = count(d, "pids.events", "max");
            if refused > 0 {
                out.push(format!("pids limit: {refused} new process(es) refused"));
            }
        }
        out
    }

    /// What the running sandbox `name` uses now: memory in bytes and CPU time in seconds, where
    /// the host's cgroups tell.
    pub fn usage(host: &CgroupHost, name: &str) -> (Option<u64>, Option<f64>) {
        let read = |controller: &str, file: &str| -> Option<String> {
            fs::read_to_string(sandbox_dir(host, &host.placement(controller)?, name).join(file))
                .ok()
        };
        let memory = read("memory", "memory.usage_in_bytes")
            .or_else(|| read("memory", "memory.current"))
            .and_then(|t| t.trim().parse().ok());
        let cpu = read("cpuacct", "cpuacct.usage")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|ns| ns as f64 / 1e9)
            .or_else(|| {
                read("cpu", "cpu.stat").and_then(|t| {
                    t.lines().find_map(|l| {
                        let us: u64 = l.strip_prefix("usage_usec ")?.trim().parse().ok()?;
                        Some(us as f64 / 1e6)
                    })
                })
            });
        (memory, cpu)
    }

    /// Writes new limits into the existing directories of the running sandbox `name` (what
    /// `paddock update` changes live). Returns what could not be changed live.
    pub fn update(host: &CgroupHost, name: &str, limits: &Limits) -> Vec<String> {
        let mut skipped = Vec::new();
        let mut set = |controller: &str, files: Vec<(&str, String)>, what: &str| {
            let Some(h) = host.placement(controller) else {
                skipped.push(format!("{what}: no {controller} controller here"));
                return;
            };
            let dir = sandbox_dir(host, &h, name);
            // The last attempt at each file counts (see the memory order below).
            let mut last: BTreeMap<&str, std::io::Result<()>> = BTreeMap::new();
            for (f, v) in files {
                let p = dir.join(f);
                if p.exists() {
                    last.insert(f, fs::write(&p, &v));
                }
            }
            if last.is_empty() {
                skipped.push(format!("{what}: the sandbox has no {controller} cgroup"));
            }
            for (f, r) in last {
                if let Err(e) = r {
                    skipped.push(format!("{what}: cannot write {f}: {e}"));
                }
            }
        };
        if let Some(m) = limits.memory {
            let v = m.0.to_string();
            // v1 refuses a memory limit above memsw and memsw below memory: raise memsw first
            // when growing, lower memory first when shrinking (trying both orders does it).
            set(
                "memory",
                vec![
                    ("memory.memsw.limit_in_bytes", v.clone()),
                    ("memory.limit_in_bytes", v.clone()),
                    ("memory.memsw.limit_in_bytes", v.clone()),
                    ("memory.max", v),
                ],
                "--memory",
            );
        }
        if let Some(p) = limits.pids {
            set("pids", vec![("pids.max", p.to_string())], "--pids");
        }
        if let Some(c) = limits.cpus {
            let quota = u64::from(c.0) * 100;
            set(
                "cpu",
                vec![
                    ("cpu.cfs_period_us", "100000".to_owned()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                    ("cpu.max", format!("{quota} 100000")),
                ],
                "--cpus",
            );
        }
        skipped
    }

    /// Removes what a sandbox left in the cgroup hierarchies when its supervisor was killed
    /// (call with the sandbox's lock held, so nothing of it runs; stragglers are killed).
    pub fn remove_leftovers(host: &CgroupHost, name: &str) {
        let mut dirs: Vec<PathBuf> = ["memory", "cpu", "cpuacct", "pids"]
            .into_iter()
            .filter_map(|c| host.placement(c))
            .map(|h| sandbox_dir(host, &h, name))
            .filter(|d| d.exists())
            .collect();
        dirs.sort();
        dirs.dedup();
        SandboxCgroups { dirs }.remove();
    }

    /// Removes the directories (the sandbox's processes are gone by then).
    pub fn remove(&self) {
        for d in &self.dirs {
            remove_dir(d);
        }
    }
}

/// The directory of sandbox `name` in hierarchy `h`.
fn sandbox_dir(host: &CgroupHost, h: &Hierarchy, name: &str) -> PathBuf {
    host.parent(h).join(name)
}

fn mkdir(d: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Write {
            path: d.to_owned(),
            value: "(mkdir)".into(),
            source,
        }),
    }
}

/// A directory left by a crashed run is emptied and removed before use.
fn recreate(dir: &Path) -> Result<(), CgroupError> {
    if dir.exists() {
        remove_dir(dir);
    }
    mkdir(dir)
}

fn remove_dir(dir: &Path) {
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(_) => {
                if fs::write(dir.join("cgroup.kill"), "1").is_err()
                    && let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs"))
                {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill has no memory effects; the pid came from this cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn enable_v2_controllers(
    root: Option<&Path>,
    parent: &Path,
    files: &[(&str, String)],
) -> Result<(), CgroupError> {
    let mut ctrls: Vec<&str> = files
        .iter()
        .filter_map(|(f, _)| f.split('.').next())
        .collect();
    ctrls.sort();
    ctrls.dedup();
    let line: String = ctrls.iter().map(|c| format!("+{c} ")).collect();
    if let Some(root) = root {
        write(&root.join("cgroup.subtree_control"), line.trim())?;
    }
    mkdir(parent)?;
    write(&parent.join("cgroup.subtree_control"), line.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hybrid host's mountinfo (v1 controllers, a controller-less unified hierarchy).
    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    /// In user mode a limit needs the user's delegated subtree; without it the limit is
    /// refused before anything is made (and naming the fix), with it the check passes.
    #[test]
    fn user_mode_limits_need_a_delegated_subtree() {
        let root = tempfile::tempdir().unwrap();
        let host = CgroupHost {
            v1: BTreeMap::from([("memory".into(), root.path().to_path_buf())]),
            user: Some(4242),
            ..CgroupHost::default()
        };
        let memory = Limits {
            memory: Some(paddock_policy::ByteSize(64 << 20)),
            ..Limits::default()
        };
        let subtree = root.path().join("paddock-users/4242");
        assert_eq!(host.parent(&Hierarchy::V1(root.path().into())), subtree);
        let err = host.check(&memory).unwrap_err();
        assert!(matches!(
            err,
            CgroupError::NotDelegated {
                limit: "--memory",
                ..
            }
        ));
        assert!(err.to_string().contains("paddock system setup"), "{err}");
        assert!(host.check(&Limits::default()).is_ok());
        let pids = Limits {
            pids: Some(64),
            ..Limits::default()
        };
        assert!(matches!(
            host.check(&pids),
            Err(CgroupError::Unavailable {
                limit: "--pids",
                ..
            })
        ));
        std::fs::create_dir_all(&subtree).unwrap();
        assert!(host.check(&memory).is_ok());
        let root_mode = CgroupHost { user: None, ..host };
        assert_eq!(
            root_mode.parent(&Hierarchy::V1(root.path().into())),
            root.path().join("paddock")
        );
    }

    #[test]
    fn hierarchies_are_read_from_mountinfo() {
        let host = CgroupHost::from_mountinfo(HYBRID);
        assert_eq!(host.v2_root, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            host.v1.keys().map(String::as_str).collect::<Vec<_>>(),
            ["cpu", "memory", "pids"]
        );
        assert_eq!(host.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(!host.favordynmods);
    }

    #[test]
    fn favordynmods_on_any_hierarchy_is_seen() {
        let info = HYBRID.replace("cgroup2 cgroup2 rw", "cgroup2 cgroup2 rw,favordynmods");
        assert!(CgroupHost::from_mountinfo(&info).favordynmods);
        // Only as a mount option of a cgroup file system, not in a path.
        let info = HYBRID.replace("/sys/fs/cgroup/pids", "/srv/favordynmods");
        assert!(!CgroupHost::from_mountinfo(&info).favordynmods);
    }
}
