//! Does KVM here really run a standard guest? `/dev/kvm` existing is not enough: a
//! paravirtualised nested KVM (PVM) offers the device but fails on a stock kernel with
//! "KVM internal error … emulation failure". The answer comes from booting the guest kernel
//! for real under KVM to a marker, once, and is cached until the host reboots.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What is known about KVM on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmStatus {
    /// True when a standard guest runs under KVM.
    pub works: bool,
    /// Whether this was verified by booting a guest (false: decided from the device and CPU
    /// flags alone).
    pub verified: bool,
    /// What was found.
    pub detail: String,
}

/// Where this process's cached answers live: root's in `/run/paddock` (cleared by a reboot),
/// an ordinary user's in the user's cache directory (keyed by the boot): whether KVM works
/// depends on who opens `/dev/kvm`, so a user never takes root's answer.
fn cache_dir() -> Option<PathBuf> {
    if !paddock_confine::user::is_user_mode() {
        return Some(PathBuf::from("/run/paddock"));
    }
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    dir.is_absolute().then(|| dir.join("paddock"))
}

fn cache_file() -> Option<PathBuf> {
    cache_dir().map(|d| d.join("kvm-probe.json"))
}

fn host_key() -> String {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("{}/{}", release.trim(), boot.trim())
}

#[derive(Serialize, Deserialize)]
struct Cached {
    host: String,
    status: KvmStatus,
}

/// Whether `/dev/kvm` can be opened at all.
pub fn device_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// What the device and CPU flags say, without booting anything.
pub fn quick() -> KvmStatus {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return KvmStatus {
            works: false,
            verified: false,
            detail: format!("/dev/kvm cannot be opened ({e})"),
        };
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let hw = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    if !hw {
        return KvmStatus {
            works: false,
            verified: false,
            detail: "/dev/kvm exists but the CPU shows no vmx/svm: a paravirtualised nested KVM that cannot run a standard guest kernel".into(),
        };
    }
    KvmStatus {
        works: true,
        verified: false,
        detail:
            "/dev/kvm usable and the CPU has hardware virtualisation (not yet verified by a boot)"
                .into(),
    }
}

/// The cached answer, if this host (and boot) already has one.
pub fn cached() -> Option<KvmStatus> {
    let c: Cached = serde_json::from_slice(&fs::read(cache_file()?).ok()?).ok()?;
    (c.host == host_key()).then_some(c.status)
}

/// Decides whether KVM works by booting `kernel` + `initrd` under it once (whenever
/// `/dev/kvm` opens: a KVM that cannot run the guest fails in well under a second), and caches
/// the answer.
pub fn probe(qemu: &Path, kernel: &Path, initrd: &Path) -> KvmStatus {
    if let Some(s) = cached() {
        return s;
    }
    let status = if device_usable() {
        boot_probe(qemu, kernel, initrd)
    } else {
        quick()
    };
    if let (Some(dir), Some(file), Ok(json)) = (
        cache_dir(),
        cache_file(),
        serde_json::to_vec(&Cached {
            host: host_key(),
            status: status.clone(),
        }),
    ) {
        let _ = fs::create_dir_all(dir);
        let _ = fs::write(file, json);
    }
    status
}

fn boot_probe(qemu: &Path, kernel: &Path, initrd: &Path) -> KvmStatus {
    let started = Instant::now();
    let child = Command::new(qemu)
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-display", "none"])
        .args(crate::vmm::MICROVM)
        .args([
            "-accel", "kvm", "-cpu", "host", "-m", "256M", "-serial", "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1 paddock.probe=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return KvmStatus {
                works: false,
                verified: true,
                detail: format!("cannot start {}: {e}", qemu.display()),
            };
        }
    };
    // A working KVM boots to the marker in about a second; give it ten.
    let deadline = started + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if out.contains("PADDOCK-GUEST-PROBE-OK") {
        KvmStatus {
            works: true,
            verified: true,
            detail: format!(
                "a standard guest kernel booted under KVM in {:.2} s",
                started.elapsed().as_secs_f64()
            ),
        }
    } else {
        let why = err
            .lines()
            .find(|l| l.contains("KVM") || l.contains("kvm") || l.contains("MSR"))
            .unwrap_or("no boot marker within 10 s")
            .trim()
            .trim_start_matches("qemu-system-x86_64: ")
            .to_owned();
        KvmStatus {
            works: false,
            verified: true,
            detail: format!(
                "/dev/kvm exists but a standard guest kernel does not boot under it ({why})"
            ),
        }
    }
}

/// The host's TSC rate in kHz, measured against the monotonic clock (cached per boot). Under
/// software emulation the guest reads the host's TSC, and a guest kernel that has to calibrate
/// it against an emulated timer may fail to (too slow), so it is told the rate instead.
pub fn host_tsc_khz() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // Root's measurement holds for everyone; a user without one keeps their own.
        let mine = cache_dir().map(|d| d.join("tsc-khz"));
        let key = host_key();
        if let Some(text) = [Some(PathBuf::from("/run/paddock/tsc-khz")), mine.clone()]
            .into_iter()
            .flatten()
            .find_map(|f| fs::read_to_string(f).ok())
            && let Some((k, v)) = text.trim().rsplit_once(' ')
            && k == key
            && let Ok(v) = v.parse()
        {
            return Some(v);
        }
        let t0 = Instant::now();
        // SAFETY: rdtsc only reads the time-stamp counter.
        #[allow(unused_unsafe)]
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: as above.
        #[allow(unused_unsafe)]
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let ns = t0.elapsed().as_nanos() as u64;
        let khz = (c1.wrapping_sub(c0)).saturating_mul(1_000_000) / ns.max(1);
        if khz == 0 {
            return None;
        }
        if let Some(file) = mine {
            if let Some(dir) = file.parent() {
                let _ = fs::create_dir_all(dir);
            }
            let _ = fs::write(&file, format!("{key} {khz}\n"));
        }
        Some(khz)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}
