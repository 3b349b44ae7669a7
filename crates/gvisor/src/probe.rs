//! What this host offers the gVisor backend: runsc, its version, and a platform that really
//! starts a sandbox here (tried once per boot and runsc binary, then cached).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_core::tools::is_static_elf;
use paddock_core::{Probe, ProbeItem};
use serde::{Deserialize, Serialize};

/// How gVisor intercepts the sandbox's system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// seccomp traps and shared-memory stubs: works on any Linux host.
    Systrap,
    /// Hardware virtualisation: faster where KVM really runs.
    Kvm,
}

impl Platform {
    /// The `--platform` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Systrap => "systrap",
            Platform::Kvm => "kvm",
        }
    }
}

/// What was found about runsc.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunscInfo {
    /// `runsc --version`'s first line.
    pub version: String,
    /// The platform sandboxes use.
    pub platform: Platform,
    /// Whether a sandbox started with that platform.
    pub works: bool,
    /// What the trial run said.
    pub detail: String,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    info: RunscInfo,
}

/// Where the probe's result is kept: root's in `/run/paddock`, an ordinary user's (whose trial
/// runs in user mode) in the user's cache directory.
fn cache_path() -> Option<PathBuf> {
    if !paddock_confine::user::is_user_mode() {
        return Some(PathBuf::from("/run/paddock/gvisor-probe.json"));
    }
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    dir.is_absolute()
        .then(|| dir.join("paddock/gvisor-probe.json"))
}

/// The cache key: this boot, this runsc binary, and whether KVM was offered.
fn key(runsc: &Path, kvm: bool) -> String {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let stamp = fs::metadata(runsc)
        .map(|m| format!("{}:{}", m.size(), m.mtime()))
        .unwrap_or_default();
    format!("{}/{}/{stamp}/{kvm}", boot.trim(), runsc.display())
}

/// runsc's version and working platform (cached per boot).
pub fn runsc_info(runsc: &Path, kvm: bool) -> RunscInfo {
    let k = key(runsc, kvm);
    let cache = cache_path();
    if let Some(bytes) = cache.as_ref().and_then(|c| fs::read(c).ok())
        && let Ok(c) = serde_json::from_slice::<Cached>(&bytes)
        && c.key == k
    {
        return c.info;
    }
    let version = Command::new(runsc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown version".into());
    let mut info = None;
    let candidates: &[Platform] = if kvm {
        &[Platform::Kvm, Platform::Systrap]
    } else {
        &[Platform::Systrap]
    };
    let mut failures = Vec::new();
    for &p in candidates {
        match trial(runsc, p) {
            Ok(ms) => {
                info = Some(RunscInfo {
                    version: version.clone(),
                    platform: p,
                    works: true,
                    detail: format!(
                        "{version}, platform {} (a trial sandbox ran in {ms} ms)",
                        p.as_str()
                    ),
                });
                break;
            }
            Err(e) => failures.push(format!("platform {}: {e}", p.as_str())),
        }
    }
    let info = info.unwrap_or_else(|| RunscInfo {
        version: version.clone(),
        platform: Platform::Systrap,
        works: false,
        detail: format!("{version}: {}", failures.join("; ")),
    });
    // A failure that came fast is tried again next time (it may be passing, e.g. memory); a
    // success, or a platform that hung, is remembered until reboot.
    if !info.works && !failures.iter().any(|f| f.contains("did not finish")) {
        return info;
    }
    if let Some(cache) = cache
        && let Some(dir) = cache.parent()
        && fs::create_dir_all(dir).is_ok()
        && let Ok(json) = serde_json::to_vec(&Cached {
            key: k,
            info: info.clone(),
        })
    {
        let _ = fs::write(cache, json);
    }
    info
}

/// Runs `/bin/true` in a throwaway sandbox with `platform`; returns how long it took.
fn trial(runsc: &Path, platform: Platform) -> Result<u128, String> {
    let state = tempfile::Builder::new()
        .prefix("paddock-runsc-probe-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut cmd = Command::new(runsc);
    cmd.arg(format!("--root={}", state.path().display()))
        .args(["--network=none", "--ignore-cgroups"])
        .arg(format!("--platform={}", platform.as_str()))
        .args(["do", "/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // As the backend runs it: for an ordinary user, as root of a user namespace with the
    // user's map.
    let mut child = if paddock_confine::user::is_user_mode() {
        let ids = paddock_confine::user::current_user_ids().map_err(|e| e.to_string())?;
        paddock_confine::user::spawn_mapped(&mut cmd, &ids).map_err(|e| e.to_string())?
    } else {
        cmd.spawn().map_err(|e| format!("cannot run runsc: {e}"))?
    };
    // A platform that cannot work here can hang instead of failing (KVM on some nested hosts).
    let limit = Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(started.elapsed().as_millis()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let last = err.lines().last().unwrap_or("").to_owned();
                return Err(format!("runsc do /bin/true failed ({status}): {last}"));
            }
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "runsc do /bin/true did not finish within {limit:?}"
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The backend's checks.
pub fn probe(runsc: Option<&Path>, guest: Option<&Path>, jail: &Path, kvm: bool) -> Probe {
    let mut items = vec![ProbeItem {
        name: "runsc (gVisor)".into(),
        ok: runsc.is_some(),
        detail: runsc.map_or_else(|| "not found".into(), |r| r.display().to_string()),
        fix: runsc.is_none().then(|| {
            "run ./setup.sh (it adds the backports suite of this host's apt sources and installs runsc)".into()
        }),
        required: true,
    }];
    if let Some(r) = runsc {
        let info = runsc_info(r, kvm);
        items.push(ProbeItem {
            name: "gVisor sandbox".into(),
            ok: info.works,
            detail: info.detail,
            fix: (!info.works).then(|| {
                "see the error above; gVisor needs root here and a kernel that allows seccomp user notifications".into()
            }),
            required: true,
        });
    }
    let guest_ok = guest.is_some_and(is_static_elf);
    items.push(ProbeItem {
        name: "sandbox helper (paddock-guest)".into(),
        ok: guest_ok,
        detail: match guest {
            Some(g) if guest_ok => format!("{} (static)", g.display()),
            Some(g) => format!("{} is not a static executable", g.display()),
            None => "not found next to paddock".into(),
        },
        fix: (!guest_ok).then(|| "run ./setup.sh (it builds paddock-guest statically)".into()),
        required: true,
    });
    items.push(ProbeItem {
        name: "setup helper (paddock-jail)".into(),
        ok: jail.exists(),
        detail: jail.display().to_string(),
        fix: (!jail.exists()).then(|| "run ./setup.sh".into()),
        required: true,
    });
    if paddock_confine::user::is_user_mode() {
        items.push(paddock_confine::user::user_mode_item());
    }
    Probe {
        backend: "gvisor",
        items,
    }
}
