//! Boot: modules, the boot connection, the root switch, then serving.

use std::convert::Infallible;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use paddock_wire::Report;
use paddock_wire::vm::{BOOT_PORT, EXEC_PORT, Frame, Setup};

use crate::reaper::Reaper;
use crate::{docker, egress, session, vsock};

/// A setup step that failed: which layer, and why.
struct Failure {
    layer: &'static str,
    message: String,
}

fn fail<E: std::fmt::Display>(layer: &'static str, what: &str) -> impl FnOnce(E) -> Failure {
    let what = what.to_owned();
    move |e| Failure {
        layer,
        message: format!("{what}: {e}"),
    }
}

/// Where the root disk is mounted before the switch.
const NEWROOT: &str = "/newroot";
/// Written on the console when the kernel command line asks for a probe boot.
const PROBE_MARKER: &str = "PADDOCK-GUEST-PROBE-OK";

/// Boots the guest and serves until power-off. Never returns.
pub fn run() -> ! {
    let mut conn = None;
    let Err(f) = boot(&mut conn);
    eprintln!("paddock-guest: {} failed: {}", f.layer, f.message);
    if let Some(c) = conn.as_mut() {
        let _ = Frame::Report(Report::SetupFailed {
            layer: f.layer.to_owned(),
            message: f.message,
        })
        .write_to(c);
    }
    poweroff()
}

fn boot(conn_slot: &mut Option<File>) -> Result<Infallible, Failure> {
    for (src, dir, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        let _ = fs::create_dir_all(dir);
        mount(
            Some(src),
            dir,
            Some(fstype),
            MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .map_err(fail("init", &format!("cannot mount {dir}")))?;
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "paddock.probe=1") {
        println!("{PROBE_MARKER} {:.3}", uptime());
        poweroff();
    }
    load_modules(&cmdline)?;
    loopback_up().map_err(fail("network", "cannot bring up the loopback interface"))?;

    let mut conn = retry(Duration::from_secs(60), || vsock::connect_host(BOOT_PORT))
        .map_err(fail("vsock", "cannot reach the host"))?;
    *conn_slot = conn.try_clone().ok();
    let setup = match Frame::read_from(&mut conn) {
        Ok(Some(Frame::Setup(s))) => s,
        other => {
            return Err(Failure {
                layer: "vsock",
                message: format!("expected the setup from the host, got {other:?}"),
            });
        }
    };
    set_clock(setup.time_ns);
    nix::unistd::sethostname(&setup.hostname).map_err(fail("init", "cannot set the host name"))?;
    mount_root(&setup)?;
    switch_root()?;
    write_identity(&setup.hostname);
    if let Some(ca) = &setup.extra_ca {
        trust(ca).map_err(fail(
            "credentials",
            "cannot add the sandbox's CA to the trust store",
        ))?;
    }
    pids_cgroup(setup.pids_max)?;
    let dial: egress::Dial =
        std::sync::Arc::new(|| vsock::connect_host(paddock_wire::vm::PROXY_PORT));
    if setup.egress {
        egress::start(dial.clone(), [127, 0, 0, 1])
            .map_err(fail("network", "cannot listen on 127.0.0.1:3128"))?;
    }
    if setup.docker {
        if !docker::installed() {
            return Err(Failure {
                layer: "docker",
                message: "the image has no Docker engine (/usr/sbin/dockerd); run the sandbox on an image built with --docker".into(),
            });
        }
        docker::start(setup.egress, paddock_wire::vm::DOCKER_START_LIMIT).map_err(|message| {
            Failure {
                layer: "docker",
                message,
            }
        })?;
        if setup.egress {
            egress::start(dial, paddock_wire::docker::BRIDGE_ADDR).map_err(fail(
                "docker",
                "cannot serve the proxy on the engine's bridge",
            ))?;
        }
    }
    let reaper = Arc::new(Reaper::default());
    let listener =
        vsock::listen_any(EXEC_PORT).map_err(fail("vsock", "cannot listen for commands"))?;
    {
        let reaper = reaper.clone();
        std::thread::Builder::new()
            .name("exec-accept".into())
            .spawn(move || {
                loop {
                    let Ok(c) = vsock::accept(&listener) else {
                        continue;
                    };
                    let reaper = reaper.clone();
                    let _ = std::thread::Builder::new()
                        .name("exec".into())
                        .spawn(move || session::serve(c, &reaper, false));
                }
            })
            .map_err(fail("init", "cannot start the exec thread"))?;
    }
    let forwards = vsock::listen_any(paddock_wire::vm::FORWARD_PORT)
        .map_err(fail("vsock", "cannot listen for published ports"))?;
    egress::serve_forwards(move || vsock::accept(&forwards))
        .map_err(fail("init", "cannot start the published-port thread"))?;
    Frame::Report(Report::Ready { pid: 1 })
        .write_to(&mut conn)
        .map_err(fail("vsock", "cannot report ready"))?;
    eprintln!(
        "paddock-guest: ready {:.3} s after the kernel started",
        uptime()
    );
    let folders: Vec<String> = setup.mounts.iter().map(|m| m.target.clone()).collect();
    std::thread::Builder::new()
        .name("boot-conn".into())
        .spawn(move || {
            // Power off when the host asks, or when the host side is gone.
            loop {
                match Frame::read_from(&mut conn) {
                    Ok(Some(Frame::Poweroff)) | Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
            shutdown(&folders, &mut conn)
        })
        .map_err(fail("init", "cannot start the boot-connection thread"))?;
    reaper.run()
}

/// Loads the kernel modules listed in `/modules/order`, passing each the parameters the kernel
/// command line gives it (`virtio_mmio.device=…`).
fn load_modules(cmdline: &str) -> Result<(), Failure> {
    let order = fs::read_to_string("/modules/order").unwrap_or_default();
    for file in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = file.trim_end_matches(".ko").replace('-', "_");
        let params: Vec<&str> = cmdline
            .split_whitespace()
            .filter_map(|w| {
                let (m, p) = w.split_once('.')?;
                (m.replace('-', "_") == name).then_some(p)
            })
            .collect();
        let params = std::ffi::CString::new(params.join(" ")).unwrap_or_default();
        let f = File::open(format!("/modules/{file}"))
            .map_err(fail("modules", &format!("cannot open {file}")))?;
        // SAFETY: finit_module reads the module from the open descriptor and the parameters from
        // a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                f.as_raw_fd(),
                params.as_ptr(),
                0 as libc::c_int,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(Failure {
                    layer: "modules",
                    message: format!("cannot load {file}: {e}"),
                });
            }
        }
    }
    Ok(())
}

fn loopback_up() -> std::io::Result<()> {
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Seconds since the guest kernel started.
fn uptime() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn retry<T>(limit: Duration, mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= limit => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn set_clock(time_ns: u128) {
    let ts = libc::timespec {
        tv_sec: (time_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (time_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec we own.
    unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
}

/// Mounts the root disk (grown to its device's size) and the shared folders under it.
fn mount_root(setup: &Setup) -> Result<(), Failure> {
    let dev = setup.root_device.as_str();
    retry(Duration::from_secs(5), || fs::metadata(dev).map(|_| ()))
        .map_err(fail("root disk", &format!("{dev} did not appear")))?;
    fs::create_dir_all(NEWROOT).map_err(fail("root disk", "cannot create the mount point"))?;
    mount(
        Some(dev),
        NEWROOT,
        Some("ext4"),
        MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(fail("root disk", &format!("cannot mount {dev}")))?;
    if let Err(e) = grow(dev) {
        eprintln!("paddock-guest: the root filesystem keeps its size: {e}");
    }
    for m in &setup.mounts {
        let target = format!("{NEWROOT}{}", m.target);
        fs::create_dir_all(&target).map_err(fail(
            "shared folders",
            &format!("cannot create the mount point {}", m.target),
        ))?;
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if m.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(
            Some(m.tag.as_str()),
            target.as_str(),
            Some("virtiofs"),
            flags,
            None::<&str>,
        )
        .map_err(fail(
            "shared folders",
            &format!("cannot mount {} at {}", m.tag, m.target),
        ))?;
    }
    let api: [(&str, &str, &str, MsFlags, Option<&str>); 7] = [
        (
            "proc",
            "proc",
            "proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "sysfs",
            "sys",
            "sysfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        ("devtmpfs", "dev", "devtmpfs", MsFlags::MS_NOSUID, None),
        (
            "devpts",
            "dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        (
            "tmpfs",
            "dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "cgroup2",
            "sys/fs/cgroup",
            "cgroup2",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
    ];
    for (src, dir, fstype, flags, data) in api {
        let target = format!("{NEWROOT}/{dir}");
        let _ = fs::create_dir_all(&target);
        mount(Some(src), target.as_str(), Some(fstype), flags, data)
            .map_err(fail("mounts", &format!("cannot mount /{dir}")))?;
    }
    let ptmx = format!("{NEWROOT}/dev/ptmx");
    let _ = fs::remove_file(&ptmx);
    std::os::unix::fs::symlink("pts/ptmx", &ptmx)
        .map_err(fail("mounts", "cannot link /dev/ptmx"))?;
    Ok(())
}

/// Grows the mounted root filesystem to fill its device (the per-sandbox layer may be larger
/// than the image's filesystem).
fn grow(dev: &str) -> std::io::Result<()> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
    let disk = File::open(dev)?;
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 we own.
    if unsafe { libc::ioctl(disk.as_raw_fd(), BLKGETSIZE64, &mut bytes) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let root = File::open(NEWROOT)?;
    let st = rustix::fs::fstatvfs(&root)?;
    let blocks = bytes / st.f_frsize.max(1);
    if blocks <= st.f_blocks {
        return Ok(());
    }
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 we own.
    if unsafe { libc::ioctl(root.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the root disk `/` (the initramfs stays underneath, unreachable).
fn switch_root() -> Result<(), Failure> {
    std::env::set_current_dir(NEWROOT).map_err(fail("mounts", "cannot enter the root disk"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(fail("mounts", "cannot move the root disk to /"))?;
    nix::unistd::chroot(".").map_err(fail("mounts", "cannot change root"))?;
    std::env::set_current_dir("/").map_err(fail("mounts", "cannot enter /"))?;
    Ok(())
}

fn write_identity(hostname: &str) {
    let _ = fs::write("/etc/hostname", format!("{hostname}\n"));
    let _ = fs::write(
        "/etc/hosts",
        format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        ),
    );
}

/// Shows the disk's trust store plus `ca` at its usual path for this boot (a file on `/run`
/// bound over it, read-only; the disk keeps its own).
fn trust(ca: &str) -> std::io::Result<()> {
    const STORE: &str = "/etc/ssl/certs/ca-certificates.crt";
    const RUN: &str = "/run/paddock-ca-certificates.crt";
    let mut bundle = fs::read_to_string(STORE).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca);
    fs::write(RUN, bundle)?;
    if !Path::new(STORE).exists() {
        fs::create_dir_all("/etc/ssl/certs")?;
        fs::write(STORE, "")?;
    }
    mount(
        Some(RUN),
        STORE,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    mount(
        None::<&str>,
        STORE,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )?;
    Ok(())
}

/// The sandbox's cgroup, with its pids limit, and below it the cgroups commands run in and
/// (`--docker`) the Docker Engine and its containers: the limit covers them all. The other
/// controllers the kernel has are enabled below it where they can be, so that containers can
/// be given limits of their own.
fn pids_cgroup(max: Option<u64>) -> Result<(), Failure> {
    let dir = Path::new(session::SANDBOX_CGROUP);
    fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+pids")
        .map_err(fail("cgroup", "cannot enable the pids controller"))?;
    fs::create_dir_all(dir).map_err(fail("cgroup", "cannot create the sandbox cgroup"))?;
    if let Some(max) = max {
        fs::write(dir.join("pids.max"), max.to_string())
            .map_err(fail("cgroup", "cannot set pids.max"))?;
    }
    let others = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    for c in others.split_whitespace().filter(|c| *c != "pids") {
        let _ = fs::write("/sys/fs/cgroup/cgroup.subtree_control", format!("+{c}"));
    }
    let enabled = fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").unwrap_or_default();
    for c in enabled.split_whitespace() {
        let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
    }
    for child in std::iter::once(session::COMMANDS).chain(docker::CGROUPS) {
        fs::create_dir_all(dir.join(child))
            .map_err(fail("cgroup", &format!("cannot create the {child} cgroup")))?;
    }
    Ok(())
}

/// The limits the sandbox ran into, as the guest sees them: forks its pids cgroup refused, and a
/// (nearly) full disk. (Out-of-memory kills are on the console, where the host reads them.)
fn limits_hit() -> Vec<String> {
    let mut out = Vec::new();
    let refused = refused_forks(Path::new(session::SANDBOX_CGROUP));
    if refused > 0 {
        out.push(format!("pids limit: {refused} new process(es) refused"));
    } else if rejected_in_removed_cgroups(&kernel_log()) > 0 {
        // Counted in a cgroup that is gone (a container's, removed with it); the kernel's log
        // still says so.
        out.push("pids limit: new processes were refused (in a container since removed)".into());
    }
    if let Ok(st) = rustix::fs::statvfs("/") {
        let block = st.f_frsize.max(1);
        let threshold = (st.f_blocks / 50).max(64 * 1024 * 1024 / block);
        if st.f_bavail <= threshold {
            out.push(format!(
                "disk limit: the sandbox's disk ({} MB) is full or nearly",
                st.f_blocks * block / 1_000_000
            ));
        }
    }
    out
}

/// The forks refused in the cgroup `dir` and every cgroup below it: the kernel counts a refusal
/// in the cgroup of the process that forked (a command's, a container's), not in the one whose
/// limit it hit.
fn refused_forks(dir: &Path) -> u64 {
    let own = fs::read_to_string(dir.join("pids.events"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("max ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let below: u64 = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| refused_forks(&e.path()))
        .sum();
    own + below
}

/// The kernel's log records so far (`/dev/kmsg`, read without waiting for more).
fn kernel_log() -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return String::new();
    };
    let mut text = String::new();
    let mut buf = vec![0u8; 8192];
    // One record per read; EAGAIN at the end (EPIPE: records overwritten meanwhile, go on).
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    text
}

/// How many cgroups the kernel's log says refused a fork and that no longer exist (the kernel
/// says it once per cgroup: "cgroup: fork rejected by pids controller in /PATH").
fn rejected_in_removed_cgroups(log: &str) -> usize {
    const SAID: &str = "fork rejected by pids controller in ";
    log.lines()
        .filter_map(|l| Some(l.split_once(SAID)?.1.trim()))
        .filter(|cg| cg.starts_with('/') && !Path::new("/sys/fs/cgroup").join(&cg[1..]).exists())
        .count()
}

/// Ends every process, writes everything to disk and powers off.
/// Tells the host (when it is still there) once the disk is consistent, so it need not wait for
/// the kernel's own power-down.
fn shutdown(folders: &[String], conn: &mut File) -> ! {
    docker::stop(Duration::from_secs(10));
    // SAFETY: kill(-1) signals every process but init; it has no memory effects.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    nix::unistd::sync();
    let events = limits_hit();
    if !events.is_empty() {
        let _ = Frame::Report(Report::LimitsHit { events }).write_to(conn);
    }
    for f in folders.iter().rev() {
        let _ = umount2(f.as_str(), MntFlags::MNT_DETACH);
    }
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
    // sync(2) waits for the disk's flush, which makes QEMU write out its own image caches.
    nix::unistd::sync();
    let _ = Frame::Poweroff.write_to(conn);
    poweroff()
}

fn poweroff() -> ! {
    nix::unistd::sync();
    let _ = std::io::stdout().flush();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Only reached if the kernel refused; pid 1 must not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refused_forks_are_summed_over_the_subtree() {
        let root = tempfile::tempdir().unwrap();
        let at = |rel: &str, max: u64| {
            let d = root.path().join(rel);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("pids.events"), format!("max {max}\n")).unwrap();
        };
        at("", 0);
        at("commands", 2);
        at("engine", 0);
        at("containers/abc", 5);
        fs::create_dir_all(root.path().join("containers/no-pids-controller")).unwrap();
        assert_eq!(refused_forks(root.path()), 7);
    }

    #[test]
    fn refusals_in_removed_cgroups_are_read_from_the_kernel_log() {
        let log = "6,1,2,-;cgroup: fork rejected by pids controller in /sandbox/containers/0123abcd-gone\n\
                   6,3,4,-;something else\n\
                   6,5,6,-;cgroup: fork rejected by pids controller in /\n";
        // The root cgroup exists wherever the test runs; the container's does not.
        assert_eq!(rejected_in_removed_cgroups(log), 1);
    }
}
