//! The sandbox's own Docker Engine (`--docker`): pid 1 starts the image's `dockerd` before the
//! command and waits until it answers, so that a sandbox whose engine cannot start fails its
//! start and says why.
//!
//! The engine runs as root of the guest in a cgroup of its own under the sandbox's (its
//! containers below `containers/`), so the sandbox's pids limit covers the engine and every
//! container. Its data root is the image's `/var/lib/docker` on the sandbox's disk: images and
//! volumes stay across stop/start and go with `reset`. It pulls through the sandbox's proxy
//! (`127.0.0.1:3128`), and pid 1 serves the proxy on the engine's bridge too
//! ([`paddock_wire::docker::BRIDGE_ADDR`]), where the image's Docker client settings point
//! containers and builds. The guest has no network device: a container's other traffic has no
//! route anywhere.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use paddock_wire::docker::BRIDGE_CIDR;

/// The engine's cgroup, below the sandbox's (whose `pids.max` is the sandbox's limit).
const ENGINE_CGROUP_PROCS: &std::ffi::CStr = c"/sys/fs/cgroup/sandbox/engine/cgroup.procs";
/// Where the engine makes each container's cgroup (`--cgroup-parent`, from the root).
const CONTAINERS_CGROUP: &str = "/sandbox/containers";
/// The engine's output, on the sandbox's disk (`paddock exec NAME -- cat` it).
const LOG: &str = "/var/log/paddock-dockerd.log";
const SOCKET: &str = "/run/docker.sock";

/// The engine's pid once started (0: none).
static ENGINE: AtomicI32 = AtomicI32::new(0);
/// The `docker` group's id, given to the commands of users other than root.
static GROUP: OnceLock<u32> = OnceLock::new();

/// The cgroups the engine and its containers go in, below `sandbox` (the caller made it).
pub const CGROUPS: [&str; 2] = ["engine", "containers"];

/// Starts the engine and waits for it to answer (at most `limit`). `egress`: the sandbox has
/// the proxy, which the engine then uses.
pub fn start(egress: bool, limit: Duration) -> Result<(), String> {
    let log = File::create(LOG).map_err(|e| format!("cannot create {LOG}: {e}"))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("cannot open {LOG}: {e}"))?;
    let mut cmd = Command::new("/usr/sbin/dockerd");
    cmd.args([
        format!("--bip={BRIDGE_CIDR}"),
        "--exec-opt=native.cgroupdriver=cgroupfs".into(),
        format!("--cgroup-parent={CONTAINERS_CGROUP}"),
        "--group=docker".into(),
    ])
    .env_clear()
    .env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    .current_dir("/")
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(err);
    if egress {
        let proxy = format!("http://127.0.0.1:{}", paddock_wire::vm::PROXY_PORT);
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            cmd.env(k, &proxy);
        }
        cmd.env("NO_PROXY", "localhost,127.0.0.0/8");
    }
    // SAFETY: between fork and exec the child only opens and writes a file (system calls, no
    // allocation: the path is a static C string), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let fd = rustix::fs::open(
                ENGINE_CGROUP_PROCS,
                rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            rustix::io::write(&fd, b"0")?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start /usr/sbin/dockerd: {e}"))?;
    ENGINE.store(child.id() as i32, Ordering::SeqCst);
    wait_ready(&mut child, limit)?;
    if let Some(gid) = group_id(&fs::read_to_string("/etc/group").unwrap_or_default()) {
        let _ = GROUP.set(gid);
    }
    Ok(())
}

/// Waits until the engine answers `GET /_ping`, or fails with why and its log's last lines.
fn wait_ready(child: &mut Child, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if ping() {
            eprintln!(
                "paddock-guest: Docker Engine ready after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("dockerd ended ({status}): {}", log_tail()));
        }
        if started.elapsed() >= limit {
            return Err(format!(
                "dockerd did not answer within {} s: {}",
                limit.as_secs(),
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ping() -> bool {
    let Ok(mut s) = UnixStream::connect(SOCKET) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

fn log_tail() -> String {
    let text = fs::read_to_string(LOG).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n");
    if tail.is_empty() {
        format!("{LOG} is empty")
    } else {
        format!("the last lines of {LOG}:\n{tail}")
    }
}

/// The `docker` group's id in an `/etc/group` text.
fn group_id(etc_group: &str) -> Option<u32> {
    etc_group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == "docker").then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Gives a command the `docker` group where the engine runs, so the agent reaches the engine
/// without sudo; never to a command without sudo (`no_new_privs`: the engine is root inside).
pub fn grant(cmd: &mut paddock_wire::Command) {
    if let Some(&gid) = GROUP.get()
        && cmd.uid != 0
        && !cmd.no_new_privs
        && !cmd.groups.contains(&gid)
    {
        if cmd.groups.is_empty() {
            cmd.groups.push(cmd.gid);
        }
        cmd.groups.push(gid);
    }
}

/// Stops the engine (it stops its containers and writes its state), waiting at most `limit`.
pub fn stop(limit: Duration) {
    let pid = ENGINE.load(Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    let pid = rustix::process::Pid::from_raw(pid);
    let Some(pid) = pid else { return };
    if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_err() {
        return;
    }
    let started = Instant::now();
    // The reaper (pid 1's main thread) reaps it; until then it still exists.
    while started.elapsed() < limit && rustix::process::test_kill_process(pid).is_ok() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the image has an engine to start.
pub fn installed() -> bool {
    Path::new("/usr/sbin/dockerd").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_group_is_found_by_name() {
        let text = "root:x:0:\ndockerish:x:5:\ndocker:x:998:agent\nagent:x:1000:\n";
        assert_eq!(group_id(text), Some(998));
        assert_eq!(group_id("root:x:0:\n"), None);
        assert_eq!(group_id("docker:x:bad:\n"), None);
    }

    #[test]
    fn commands_get_the_group_unless_root_or_without_sudo() {
        let _ = GROUP.set(998);
        let cmd = |uid, no_new_privs| paddock_wire::Command {
            argv: vec!["docker".into()],
            env: vec![],
            cwd: "/".into(),
            uid,
            gid: uid,
            groups: vec![],
            tty: false,
            size: None,
            no_new_privs,
        };
        let mut agent = cmd(1000, false);
        grant(&mut agent);
        assert_eq!(agent.groups, [1000, 998]);
        grant(&mut agent);
        assert_eq!(agent.groups, [1000, 998]);
        let mut root = cmd(0, false);
        grant(&mut root);
        assert!(root.groups.is_empty());
        let mut no_sudo = cmd(1000, true);
        grant(&mut no_sudo);
        assert!(no_sudo.groups.is_empty());
    }
}
