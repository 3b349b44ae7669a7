//! The vm backend for real: guests booted under QEMU (KVM where it works, TCG here), checked
//! from inside and from the host. Each `paddock run` boots a VM, so each test groups the
//! checks that can share one boot while staying independent of the other tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;

use common::{stderr, stdout, unique, vm_sh};

fn lines_with<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .collect()
}

fn one(out: &str, key: &str) -> String {
    let v = lines_with(out, key);
    assert_eq!(v.len(), 1, "expected one {key:?} line in:\n{out}");
    v[0].to_owned()
}

#[test]
fn guest_has_its_own_kernel_and_nothing_of_the_host() {
    require_vm!();
    let ws = common::workspace();
    // Host-only things the guest must not see.
    let secret_dir = tempfile::Builder::new()
        .prefix("paddock-host-only-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret\n").unwrap();
    std::os::unix::fs::symlink(&secret, ws.path().join("link-out")).unwrap();
    let script = format!(
        r#"
echo "kernel: $(uname -r)"
echo "netdevs: $(ls /sys/class/net | tr '\n' ' ')"
echo "secret-path: $(test -e {secret} && echo visible || echo absent)"
echo "secret-link: $(cat link-out 2>/dev/null || echo unreadable)"
echo "vmm-dirs: $(ls -d /tmp/paddock-vm-* 2>/dev/null | wc -l)"
echo "host-procs: $(ps -eo comm | grep -cE 'qemu|virtiofsd|vhost-device|paddock$')"
python3 - <<'PY'
import socket
for port in (22, 1024, 9999):
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((2, port)); print("vsock", port, "open")
    except OSError as e:
        print("vsock", port, "refused", e.errno)
for target in (("10.0.2.2", 80), ("1.1.1.1", 443)):
    try:
        socket.create_connection(target, timeout=3); print("tcp", target, "open")
    except OSError as e:
        print("tcp", target, "failed", e.errno)
try:
    socket.getaddrinfo("example.com", 443); print("dns resolved")
except OSError as e:
    print("dns failed")
PY
"#,
        secret = secret.display()
    );
    let o = vm_sh(ws.path(), &[], &script);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let guest_kernel = one(&out, "kernel:");
    assert_ne!(
        guest_kernel,
        host_kernel.trim(),
        "the guest runs the host's kernel"
    );
    assert_eq!(
        one(&out, "netdevs:"),
        "lo",
        "a network device exists: {out}"
    );
    assert_eq!(one(&out, "secret-path:"), "absent");
    assert_eq!(one(&out, "secret-link:"), "unreadable");
    assert_eq!(one(&out, "vmm-dirs:"), "0");
    assert_eq!(one(&out, "host-procs:"), "0", "{out}");
    for port in [22, 1024, 9999] {
        let l = one(&out, &format!("vsock {port} "));
        assert!(l.starts_with("refused"), "vsock port {port}: {l}");
    }
    assert_eq!(lines_with(&out, "tcp").len(), 2);
    assert!(
        lines_with(&out, "tcp").iter().all(|l| l.contains("failed")),
        "{out}"
    );
    assert!(out.contains("dns failed"), "{out}");
}

#[test]
fn exit_codes_signals_and_streams_pass_through() {
    require_vm!();
    let ws = common::workspace();
    let o = vm_sh(ws.path(), &[], "echo out; echo err >&2; exit 7");
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err\n"));

    let o = vm_sh(ws.path(), &[], "kill -9 $$");
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));

    // (After the warning that the VM runs under emulation, where it does.)
    let o = vm_sh(ws.path(), &[], common::PIPE_ENDS_QUIETLY);
    assert!(stderr(&o).ends_with(common::PIPE_ENDED_QUIETLY), "{o:?}");

    let o = common::paddock_vm()
        .args(["run", "--rm", "--backend", "vm", "-w"])
        .arg(ws.path())
        .args(["--", "no-such-program"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("no-such-program: command not found"),
        "{}",
        stderr(&o)
    );

    // stdin reaches the command, and its end is seen.
    let mut child = common::paddock_vm()
        .args(["run", "--rm", "--backend", "vm", "-w"])
        .arg(ws.path())
        .args(["--", "sh", "-c", "wc -l; echo done"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a\nb\nc\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "3\ndone\n", "{}", stderr(&o));
}

#[test]
fn workspace_is_shared_at_its_path_and_mounts_keep_read_only() {
    require_vm!();
    // A workspace owned by an ordinary user, below a directory only root may enter: virtiofsd
    // runs as the owner, and still reaches it. Its group is root's, which the owner (an id
    // without an account) does not belong to: virtiofsd must not take it.
    let outer = common::workspace();
    let ws = outer.path().join("proj");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(4242), Some(0)).unwrap();
    std::fs::write(ws.join("from-host.txt"), "hello guest\n").unwrap();
    std::fs::write(ws.join("root-only.txt"), "root's\n").unwrap();
    std::fs::set_permissions(
        ws.join("root-only.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let extra = common::workspace();
    std::fs::write(extra.path().join("conf"), "config\n").unwrap();
    let mount = format!("{}:/home/agent/.conf-ro:ro", extra.path().display());
    let o = vm_sh(
        &ws,
        &["--mount", &mount],
        r#"
echo "pwd: $(pwd)"
echo "read: $(cat from-host.txt)"
echo "root-only: $(sudo -n cat root-only.txt 2>/dev/null || echo refused)"
echo "root-read: $(sudo -n cat from-host.txt)"
echo made > made-in-guest.txt && mkdir -p sub/dir && echo deep > sub/dir/f
echo "ro-read: $(cat /home/agent/.conf-ro/conf)"
(echo x > /home/agent/.conf-ro/new) 2>/dev/null && echo "ro-write: allowed" || echo "ro-write: refused"
sync
"#,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert_eq!(one(&out, "pwd:"), ws.display().to_string());
    assert_eq!(one(&out, "read:"), "hello guest");
    // virtiofsd has no host root: a file of another host user is as closed to it as to them.
    // (Root in the guest passes the guest's own check; virtiofsd's host identity decides.)
    assert_eq!(one(&out, "root-only:"), "refused");
    assert_eq!(one(&out, "root-read:"), "hello guest");
    assert_eq!(one(&out, "ro-read:"), "config");
    assert_eq!(one(&out, "ro-write:"), "refused");
    assert!(!extra.path().join("new").exists());
    for f in ["made-in-guest.txt", "sub/dir/f"] {
        let m = std::fs::metadata(ws.join(f)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (4242, 65534),
            "{f} is not owned by the workspace owner (with nogroup)"
        );
    }
    assert_eq!(
        std::fs::read_to_string(ws.join("sub/dir/f")).unwrap(),
        "deep\n"
    );
}

#[test]
fn named_sandbox_keeps_its_disk_until_removed_and_limits_apply() {
    require_vm!();
    let ws = common::workspace();
    let name = unique("vm-disk");
    let run = |flags: &[&str], script: &str| {
        common::paddock_vm()
            .args(["run", "--backend", "vm", "--name", &name, "-w"])
            .arg(ws.path())
            .args(flags)
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap()
    };
    let o = run(
        &[
            "--pids", "64", "--memory", "768m", "--cpus", "1", "--user", "root",
        ],
        r#"
echo kept > /opt/persist
echo "pids-max: $(cat /sys/fs/cgroup/sandbox/pids.max)"
echo "cpus: $(nproc)"
echo "mem-mb: $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)"
python3 - <<'PY'
import subprocess
started, refused = [], 0
for _ in range(100):
    try:
        started.append(subprocess.Popen(["sleep", "3"]))
    except OSError:
        refused += 1
print("started:", len(started))
print("refused:", refused)
for p in started:
    p.wait()
PY
"#,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert_eq!(one(&out, "pids-max:"), "64");
    assert_eq!(one(&out, "cpus:"), "1");
    let mem: u64 = one(&out, "mem-mb:").parse().unwrap();
    assert!((600..=768).contains(&mem), "guest memory {mem} MiB");
    let started: u64 = one(&out, "started:").parse().unwrap();
    let refused: u64 = one(&out, "refused:").parse().unwrap();
    assert!(started < 64, "{started} processes despite pids.max 64");
    assert!(refused > 0, "no fork was refused");

    let o = run(&[], "cat /opt/persist");
    assert_eq!(stdout(&o), "kept\n", "{}", stderr(&o));

    // update --disk grows the stopped sandbox's disk (the guest grows its file system at boot)
    // and keeps what is on it; it never shrinks.
    let small = common::paddock()
        .args(["update", &name, "--disk", "1g"])
        .output()
        .unwrap();
    assert_eq!(small.status.code(), Some(2), "{small:?}");
    assert!(stderr(&small).contains("can only grow"), "{small:?}");
    let grow = common::paddock()
        .args(["update", &name, "--disk", "20g"])
        .output()
        .unwrap();
    assert!(grow.status.success(), "{grow:?}");
    let o = run(&[], "cat /opt/persist; df -B1 --output=size / | tail -n 1");
    let out = stdout(&o);
    assert!(out.starts_with("kept\n"), "{out}\n{}", stderr(&o));
    let room: u64 = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap();
    assert!(room > 18_000_000_000, "{room} bytes after --disk 20g");

    let rm = common::paddock()
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    let o = run(&[], "cat /opt/persist 2>/dev/null || echo gone");
    assert_eq!(stdout(&o), "gone\n", "{}", stderr(&o));
    let _ = common::paddock().args(["rm", "-f", &name]).output();
}

#[test]
fn filling_the_disk_stops_at_its_size_and_ls_says_so() {
    require_vm!();
    let ws = common::workspace();
    let name = unique("vm-full");
    let o = common::paddock_vm()
        .args([
            "run", "--backend", "vm", "--name", &name, "--disk", "1g", "--user", "root", "-w",
        ])
        .arg(ws.path())
        .args([
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/fill bs=1M 2>/dev/null; sync; df -B1 --output=size,avail / | tail -n 1",
        ])
        .output()
        .unwrap();
    let said: Vec<u64> = stdout(&o)
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        said.len() == 2 && said[0] < 1_100_000_000 && said[1] < 64_000_000,
        "{o:?}"
    );
    assert!(stderr(&o).contains("disk limit:"), "{o:?}");
    let ls = stdout(
        &common::paddock()
            .args(["inspect", &name, "--json"])
            .output()
            .unwrap(),
    );
    assert!(ls.contains("disk limit"), "{ls}");
    common::remove(&name);
}

#[test]
fn a_helper_that_ends_at_start_is_named_and_nothing_is_left() {
    require_vm!();
    let ws = common::workspace();
    // A "virtiofsd" that exits at once, found first on the PATH.
    let fake = common::workspace();
    std::fs::copy("/bin/false", fake.path().join("virtiofsd")).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let name = unique("vm-fail");
    let o = common::paddock_vm()
        .env("PATH", path)
        .args(["run", "--backend", "vm", "--name", &name, "-w"])
        .arg(ws.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    // Seen ending before the VMM starts, or after the VMM found its socket closed.
    assert!(
        err.contains("virtiofsd for")
            && (err.contains("exited before it was ready") || err.contains("had ended")),
        "the error does not name the helper: {err}"
    );
    assert!(leftovers(&name).is_empty(), "{:?}", leftovers(&name));
    let _ = common::paddock().args(["rm", "-f", &name]).output();
}

#[test]
fn terminal_is_a_real_pty_in_the_guest() {
    require_vm!();
    let ws = common::workspace();
    let cmd = format!(
        "{} run --rm --backend vm -w {} -- sh -c 'tty; echo TERM=$TERM'",
        common::bin().display(),
        ws.path().display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("PADDOCK_HOME", common::home())
        .env(
            "PADDOCK_SECRET_KEY",
            common::home().join("secrets-test.key"),
        )
        .env("PADDOCK_GUEST_BINARY", common::guest_binary())
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.contains("/dev/pts/"), "{out}\n{}", stderr(&o));
    assert!(out.contains("TERM=xterm"), "{out}");
}

/// Host processes whose command line mentions this sandbox's socket directory.
fn leftovers(name: &str) -> Vec<String> {
    let needle = format!("paddock-vm-{name}-");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) {
                out.push(cmd);
            }
        }
    }
    out
}

/// This sandbox's host processes whose program (argv[0], not just any argument: a wrapper
/// names the program it starts) starts with `program`.
fn helper_processes(name: &str, program: &str) -> Vec<std::path::PathBuf> {
    let run_dir = format!("paddock-vm-{name}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                let argv0 = c.split('\0').next().unwrap_or_default();
                argv0
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .starts_with(program)
                    && c.contains(&run_dir)
            })
        })
        .map(|e| e.path())
        .collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn killing_the_supervisor_or_the_vmm_leaves_nothing_behind() {
    require_vm!();
    let ws = common::workspace();
    // Owned by an id without an account: virtiofsd runs as it, with nogroup.
    std::os::unix::fs::chown(ws.path(), Some(4242), Some(0)).unwrap();
    let name = unique("vm-kill");
    let logs = common::workspace();
    let err_log = logs.path().join("stderr");
    let start = || {
        common::paddock_vm()
            .args(["run", "--backend", "vm", "--name", &name, "-w"])
            .arg(ws.path())
            .args([
                "--",
                "sh",
                "-c",
                "echo synced > data; sync; touch ready; sleep 300",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err_log).unwrap())
            .spawn()
            .unwrap()
    };
    // What the run and the guest said, for a failure message.
    let said = || {
        let sandbox = common::home().join("sandboxes").join(&name);
        format!(
            "paddock: {}\nconsole: {}\nvmm: {}",
            std::fs::read_to_string(&err_log).unwrap_or_default(),
            std::fs::read_to_string(sandbox.join("console.log")).unwrap_or_default(),
            std::fs::read_to_string(sandbox.join("vm.log")).unwrap_or_default()
        )
    };
    let gone = || format!("{:?}", leftovers(&name));
    // SIGKILL the supervisor: the VMM and its helpers die with it.
    let mut sup = start();
    wait_for(
        "the guest to start",
        || ws.path().join("ready").exists(),
        said,
    );
    assert!(
        !leftovers(&name).is_empty(),
        "no VM processes found while running"
    );
    // No helper runs as host root: the VMM and the vsock device under uids of their own,
    // virtiofsd as the workspace's owner (root here) inside a user namespace of its own.
    let host_userns = std::fs::read_link("/proc/self/ns/user").unwrap();
    for proc in ["qemu-system", "vhost-device-vsock", "virtiofsd"] {
        let pids = helper_processes(&name, proc);
        assert!(!pids.is_empty(), "no {proc} process");
        for pid in pids {
            let status = std::fs::read_to_string(pid.join("status")).unwrap();
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap()
                    .trim()
                    .to_owned()
            };
            let uid = field("Uid:");
            if proc == "virtiofsd" {
                assert_ne!(
                    std::fs::read_link(pid.join("ns/user")).unwrap(),
                    host_userns,
                    "virtiofsd runs in the host's user namespace"
                );
                // As the owner (host ids, as the host sees them).
                assert!(
                    uid.split_whitespace().all(|u| u == "4242"),
                    "virtiofsd's uids: {uid}"
                );
                let gid = field("Gid:");
                assert!(
                    gid.split_whitespace().all(|g| g == "65534"),
                    "virtiofsd's gids: {gid}"
                );
                // What it is handed is root's: its directory, socket and mount point.
                let cmdline = String::from_utf8(std::fs::read(pid.join("cmdline")).unwrap())
                    .unwrap()
                    .replace('\0', " ");
                let view = cmdline
                    .split(' ')
                    .find_map(|a| a.strip_prefix("--shared-dir="))
                    .map(std::path::PathBuf::from)
                    .unwrap();
                let own = view.parent().unwrap();
                for p in [own.to_path_buf(), own.join("fs.sock")] {
                    let m = std::fs::symlink_metadata(&p).unwrap();
                    assert_eq!(m.uid(), 0, "{} is not root's", p.display());
                }
                assert_eq!(
                    std::fs::metadata(own).unwrap().mode() & 0o022,
                    0,
                    "{} is writable by others",
                    own.display()
                );
                continue;
            }
            assert!(
                uid.split_whitespace().all(|u| u != "0"),
                "{proc} runs with uid 0: {uid}"
            );
            if proc == "vhost-device-vsock" {
                let ns = |p: &std::path::Path| std::fs::read_link(p.join("ns/net")).unwrap();
                assert_ne!(
                    ns(&pid),
                    ns(std::path::Path::new("/proc/self")),
                    "the vsock device shares the host's network namespace"
                );
                assert_eq!(
                    field("Seccomp:"),
                    "2",
                    "the vsock device has no seccomp filter"
                );
                assert_eq!(field("NoNewPrivs:"), "1");
                // Its root holds the system's programs and its sockets, nothing else.
                let root = pid.join("root");
                for hidden in ["etc/passwd", "home", "root", "var", "proc", "dev"] {
                    assert!(
                        !root.join(hidden).exists(),
                        "the vsock device sees /{hidden}"
                    );
                }
                assert!(root.join("usr/bin").is_dir());
                assert!(
                    std::fs::File::create(root.join("usr/written-by-device")).is_err(),
                    "the vsock device's system directories are writable"
                );
            }
        }
    }
    sup.kill().unwrap();
    sup.wait().unwrap();
    wait_for(
        "the VM's processes to end",
        || leftovers(&name).is_empty(),
        gone,
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("data")).unwrap(),
        "synced\n"
    );

    // SIGKILL the VMM: the run ends with an error, the helpers go too.
    std::fs::remove_file(ws.path().join("ready")).unwrap();
    let sup = start();
    wait_for(
        "the guest to start again",
        || ws.path().join("ready").exists(),
        said,
    );
    let qemu = helper_processes(&name, "qemu-system")
        .first()
        .expect("the VMM")
        .file_name()
        .and_then(|p| p.to_str())
        .and_then(|p| p.parse::<i32>().ok())
        .unwrap();
    // SAFETY: signalling a test-owned process.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    let o = sup.wait_with_output().unwrap();
    assert!(!o.status.success());
    wait_for("the helpers to end", || leftovers(&name).is_empty(), gone);
    let stale: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("paddock-vm-{name}-"))
        })
        .collect();
    // The first run's directory (its supervisor was killed) was cleared by the second start,
    // the second run's by its own end.
    assert!(
        stale.is_empty(),
        "socket directories left behind: {stale:?}"
    );
    let _ = common::paddock().args(["rm", "-f", &name]).output();
}
