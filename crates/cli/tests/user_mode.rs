//! User mode: Paddock run by an ordinary user on the ns backend. The suite's user
//! (`paddock-suite`) is made on first use, prepared by `paddock system setup` as a user would
//! be, and builds its own image (mmdebstrap in a user namespace) once per machine; each test then
//! runs `paddock` as that user, never as root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::user::{Account, suite_user};
use common::{stderr, stdout};

/// An account made for one test, without delegation or image, removed afterwards.
struct OtherUser(Account);

impl OtherUser {
    fn new() -> OtherUser {
        OtherUser(Account::create(&common::unique("pdo")))
    }
}

impl Drop for OtherUser {
    fn drop(&mut self) {
        common::remove_user(&self.0.name);
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// The agent is the user: what it makes, also as root with sudo, belongs to the user on the
/// host; inside, the agent is uid 1000 and sudo makes it root.
#[test]
fn what_the_agent_makes_belongs_to_the_user_also_with_sudo() {
    let Some(user) = suite_user() else { return };
    let ws = user.workspace();
    let out = user.sh(
        ws.path(),
        "ns",
        &["--no-network"],
        "id -u; sudo id -u; touch mine; sudo touch roots; sudo mkdir -p deep/er; \
         sudo touch deep/er/f; sudo chown nobody:nogroup deep/er; sudo ln -s /etc/shadow deep/l",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1000\n0\n");
    for p in ["mine", "roots", "deep", "deep/er", "deep/er/f", "deep/l"] {
        assert_eq!(
            owner(&ws.path().join(p)),
            (user.uid, user.gid),
            "{p} should be the user's"
        );
    }
}

/// A named sandbox as the user: created, started, entered with exec, its packages (here a file
/// of its root's) kept across stop and start, reached on a published port, then removed with
/// its layer, whose files belong to the user's subordinate ids.
#[test]
fn a_named_sandbox_lives_and_goes_as_the_user() {
    let Some(user) = suite_user() else { return };
    let ws = user.workspace();
    let name = common::unique("um");
    let run = |args: &[&str]| {
        let o = user.paddock_in(ws.path(), args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    run(&["create", "--backend", "ns", "--name", &name, "--no-network"]);
    run(&["start", &name]);
    let o = run(&[
        "exec",
        &name,
        "--",
        "sh",
        "-c",
        "sudo sh -c 'echo kept > /root/f' && sudo cat /root/f && id -un",
    ]);
    assert_eq!(stdout(&o), "kept\nagent\n");
    run(&["stop", &name]);
    run(&["start", &name]);
    assert_eq!(
        stdout(&run(&["exec", &name, "--", "sudo", "cat", "/root/f"])),
        "kept\n"
    );
    run(&["stop", &name]);

    // A published port: a server in the sandbox, a client on the host.
    std::fs::write(ws.path().join("index.html"), "served from the sandbox\n").unwrap();
    std::os::unix::fs::chown(ws.path().join("index.html"), Some(user.uid), None).unwrap();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let publish = format!("{port}:8000");
    let mut server = user
        .command(
            ws.path(),
            &[
                "run",
                "--backend",
                "ns",
                "--rm",
                "--no-network",
                "-p",
                &publish,
                "--",
                "python3",
                "-m",
                "http.server",
                "8000",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let got = Command::new("curl")
            .args(["-sf", "--max-time", "2"])
            .arg(format!("http://127.0.0.1:{port}/index.html"))
            .output()
            .expect("curl must be installed for this suite");
        if got.status.success() {
            body = stdout(&got);
            break;
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = server.wait();
    assert_eq!(body, "served from the sandbox\n");

    let dir = user.state().join("sandboxes").join(&name);
    assert!(dir.join("upper/root/f").exists());
    run(&["rm", &name]);
    assert!(!dir.exists(), "the layer of {name} is left at {dir:?}");
}

/// The processes that read what the sandbox sends hold nothing: the supervisor and the egress
/// proxy of a user's sandbox run as the user with no capability, and the proxy also with
/// `no_new_privs` and seccomp.
#[test]
fn a_users_supervisor_and_proxy_hold_no_privilege() {
    let Some(user) = suite_user() else { return };
    let ws = user.workspace();
    let mut run = user
        .command(
            ws.path(),
            &["run", "--rm", "--backend", "ns", "--", "sleep", "30"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let field = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // The proxy: the supervisor's child running `paddock __egress`.
    let mut proxy = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        proxy = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let uid = field(&status(pid)?, "Uid");
            (cmdline.windows(8).any(|w| w == b"__egress")
                && uid.starts_with(&format!("{} ", user.uid)))
            .then_some(pid)
        });
        if proxy.is_some() {
            break;
        }
    }
    let proxy = proxy.expect("the user's sandbox has an egress proxy process");
    let text = status(proxy).unwrap();
    let supervisor = status(run.id() as i32).unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = run.wait();
    let ids = format!("{0} {0} {0} {0}", user.uid);
    assert_eq!(field(&text, "Uid"), ids, "{text}");
    assert_eq!(field(&text, "CapEff"), "0000000000000000", "{text}");
    assert_eq!(field(&text, "CapPrm"), "0000000000000000", "{text}");
    assert_eq!(field(&text, "NoNewPrivs"), "1", "{text}");
    assert_eq!(field(&text, "Seccomp"), "2", "{text}");
    assert_eq!(field(&supervisor, "Uid"), ids, "{supervisor}");
    assert_eq!(field(&supervisor, "CapEff"), "0000000000000000");
}

/// A user's command with a terminal: its bytes go through a relay process that runs as the
/// user with no capability, `no_new_privs` and seccomp, and ends with the sandbox.
#[test]
fn a_users_relay_holds_no_privilege() {
    let Some(user) = suite_user() else { return };
    let ws = user.workspace();
    let name = common::unique("umrelay");
    let o = user.paddock_in(
        ws.path(),
        &[
            "run",
            "-d",
            "-t",
            "--backend",
            "ns",
            "--name",
            &name,
            "--",
            "sleep",
            "600",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let status = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let field = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let relay = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let uid = field(&status(pid)?, "Uid");
        (cmdline.split(|b| *b == 0).nth(1) == Some(b"__relay".as_slice())
            && uid.starts_with(&format!("{} ", user.uid)))
        .then_some(pid)
    });
    let text = relay.and_then(status);
    let _ = user.paddock_in(ws.path(), &["stop", &name]);
    let alive = || relay.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive = alive();
    let _ = user.paddock_in(ws.path(), &["rm", &name]);
    let text = text.expect("the user's terminal has a relay process");
    assert_eq!(
        field(&text, "Uid"),
        format!("{0} {0} {0} {0}", user.uid),
        "{text}"
    );
    assert_eq!(field(&text, "CapEff"), "0000000000000000", "{text}");
    assert_eq!(field(&text, "CapPrm"), "0000000000000000", "{text}");
    assert_eq!(field(&text, "NoNewPrivs"), "1", "{text}");
    assert_eq!(field(&text, "Seccomp"), "2", "{text}");
    assert!(!alive, "the relay outlived its sandbox");
}

/// Limits as the user: with the subtree `system setup` delegated, a pids limit holds; a user
/// without one who asks for a limit is refused before anything is made, with the command that
/// enables limits, and a run without limits is not refused for it.
#[test]
fn limits_hold_with_delegation_and_are_refused_without() {
    let Some(user) = suite_user() else { return };
    let ws = user.workspace();
    let o = user.sh(
        ws.path(),
        "ns",
        &["--no-network", "--pids", "24"],
        "for i in $(seq 60); do sleep 5 & done; echo started",
    );
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        text.contains("pids limit") || text.contains("fork") || text.contains("Resource"),
        "a pids limit of 24 did not stop 60 processes: {text}"
    );

    let other = OtherUser::new();
    let ws = other.0.workspace();
    let o = other.0.paddock_in(
        ws.path(),
        &[
            "run",
            "--rm",
            "--backend",
            "ns",
            "--memory",
            "256m",
            "--",
            "true",
        ],
    );
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(
        text.contains("--memory") && text.contains("system setup"),
        "{text}"
    );
    assert!(
        !text.contains("image"),
        "it must fail before any image work: {text}"
    );
    let sandboxes = other.0.state().join("sandboxes");
    let made: Vec<_> = std::fs::read_dir(&sandboxes)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "made {made:?}");
    let ls = other.0.paddock_in(ws.path(), &["ls", "--all"]);
    assert!(
        !stdout(&ls)
            .lines()
            .skip(1)
            .any(|l| !l.trim().is_empty() && !l.starts_with('(')),
        "{}",
        stdout(&ls)
    );
}

/// Another user sees and reaches nothing of a user's: not the sandboxes (`ls`), the state
/// directory (layers, secrets, audit log, control sockets), or the sandbox's processes.
#[test]
fn another_user_cannot_reach_a_users_sandboxes() {
    let Some(user) = suite_user() else { return };
    let ws = user.workspace();
    let name = common::unique("umb");
    let mut run = user
        .command(
            ws.path(),
            &[
                "run",
                "--rm",
                "--backend",
                "ns",
                "--name",
                &name,
                "--",
                "sleep",
                "30",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = user.state().join("run").join(format!("{name}.sock"));
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let other = OtherUser::new();
    let b = &other.0;
    let probe = |script: &str| -> Output {
        Command::new("sh")
            .args(["-c", script])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .uid(b.uid)
            .gid(b.gid)
            .output()
            .unwrap()
    };
    let state = user.state();
    let denied = probe(&format!(
        "ls {0} 2>&1; cat {0}/state.db 2>&1; ls {0}/sandboxes/{1} 2>&1; \
         python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{2}\")' 2>&1 | tail -1",
        state.display(),
        name,
        socket.display()
    ));
    let text = stdout(&denied);
    assert_eq!(
        text.matches("Permission denied").count(),
        4,
        "user B reached user A's state: {text}"
    );
    let ls = b.paddock_in(&b.home, &["ls", "--all"]);
    assert!(!stdout(&ls).contains(&name), "{}", stdout(&ls));
    // The sandbox's processes: the jail and pid 1 run as the user's subordinate ids, the
    // supervisor as the user; B may signal none of them.
    let subuid = paddock_core::UserIds::from_subordinate(
        &user.name,
        user.uid,
        user.gid,
        &std::fs::read_to_string("/etc/subuid").unwrap(),
        &std::fs::read_to_string("/etc/subgid").unwrap(),
    )
    .unwrap()
    .subuid;
    let ours = |uid: u32| uid == user.uid || (subuid..subuid + 65536).contains(&uid);
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| ours(m.uid()))
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"paddock") || c.starts_with(b"sleep"))
        })
        .collect();
    assert!(!pids.is_empty());
    let kills = probe(&format!(
        "for p in {}; do kill -0 $p 2>&1 || true; done",
        pids.iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = run.wait();
    let text = stdout(&kills) + &stderr(&kills);
    assert!(
        text.contains("Operation not permitted")
            && text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .all(|l| l.contains("Operation not permitted") || l.contains("No such process")),
        "user B could signal user A's sandbox: {text}"
    );
}

/// The gvisor backend as the user: runsc runs as root of the jail's user namespace; the
/// agent is the user, sudo works, what it made as root is given to the user when the sandbox
/// ends, exec reaches a named sandbox, and the egress proxy answers (a host no rule allows is
/// refused by it).
#[test]
fn gvisor_runs_as_the_user_too() {
    let Some(user) = suite_user() else { return };
    if !common::gvisor_ready() {
        return;
    }
    a_named_sandbox_as_the_user(&user, "gvisor", "umg", |_| ());
}

/// A named sandbox on `backend` as `user`: create, start, and exec (the agent is the user,
/// sudo works, the egress proxy refuses a host no rule allows, and says so over TLS);
/// `while_running` runs then,
/// with the sandbox's name. Stopped, what the agent made, as root too, is the user's; `rm`
/// removes its layer. Returns what `while_running` did.
fn a_named_sandbox_as_the_user<T>(
    user: &Account,
    backend: &str,
    prefix: &str,
    while_running: impl FnOnce(&str) -> T,
) -> T {
    let ws = user.workspace();
    let name = common::unique(prefix);
    let guest = common::guest_binary();
    let run = |args: &[&str]| {
        let o = user
            .command(ws.path(), args)
            .env("PADDOCK_GUEST_BINARY", &guest)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    run(&["create", "--backend", backend, "--name", &name]);
    run(&["start", &name]);
    let out = run(&[
        "exec",
        &name,
        "--",
        "sh",
        "-c",
        "id -u; sudo id -u; touch mine; sudo mkdir -p d; sudo touch d/f; \
         curl -s -o /dev/null -w '%{http_connect} %{http_code}\\n' https://refused.example.test/ || true",
    ]);
    let seen = while_running(&name);
    run(&["stop", &name]);
    // The refusal is explained over TLS (the tunnel opens, and the answer inside is the 403),
    // the sandbox's CA being trusted inside.
    assert_eq!(out, "1000\n0\n200 403\n");
    for p in ["mine", "d", "d/f"] {
        assert_eq!(owner(&ws.path().join(p)), (user.uid, user.gid), "{p}");
    }
    let dir = user.state().join("sandboxes").join(&name);
    run(&["rm", &name]);
    assert!(!dir.exists(), "the layer of {name} is left at {dir:?}");
    seen
}

/// The vm backend as the user: virtiofsd and the vsock device run as the user, QEMU as one of
/// the user's subordinate ids once it has opened its files (no host id of anyone else's), the
/// image's disk is built without root, and what the agent makes in the workspace, with sudo
/// too, is the user's.
#[test]
fn vm_runs_as_the_user_too() {
    let Some(user) = suite_user() else { return };
    if !common::vm_ready() {
        return;
    }
    let helpers = a_named_sandbox_as_the_user(&user, "vm", "umv", |name| {
        // Every host process of the sandbox is the user's: the VMM, virtiofsd, the vsock device.
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let mine = cmdline.contains(name)
                    && ["qemu-system", "virtiofsd", "vhost-device-vsock"]
                        .iter()
                        .any(|p| cmdline.contains(p));
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let uid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))?
                    .to_owned();
                mine.then(|| {
                    (
                        cmdline,
                        uid.split_whitespace().collect::<Vec<_>>().join(" "),
                    )
                })
            })
            .collect::<Vec<(String, String)>>()
    });
    let ids = format!("{0} {0} {0} {0}", user.uid);
    for what in ["qemu-system", "virtiofsd", "vhost-device-vsock"] {
        assert!(
            helpers.iter().any(|(c, _)| c.contains(what)),
            "no {what} among {helpers:?}"
        );
    }
    let subordinate = std::fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(user.name.as_str())).then(|| {
                let start: u32 = f.next().unwrap().parse().unwrap();
                let count: u32 = f.next().unwrap().parse().unwrap();
                start..start + count
            })
        })
        .expect("the user's subordinate ids");
    for (cmdline, uid) in &helpers {
        if cmdline.starts_with("/usr/bin/qemu-system") {
            let uid: Vec<u32> = uid.split(' ').map(|u| u.parse().unwrap()).collect();
            assert!(
                uid.iter().all(|u| *u == uid[0] && subordinate.contains(u)),
                "{cmdline}: {uid:?}"
            );
        } else {
            assert_eq!(uid, &ids, "{cmdline}");
        }
    }
}

/// Escapes from a user's sandbox, on ns and gvisor: its root cannot mount, make namespaces,
/// enter pid 1's, trace pid 1, open raw sockets, reach the host's loopback, see or kill the
/// user's own processes on the host, or read or change the user's files outside the
/// workspace.
#[test]
fn a_users_sandbox_reaches_nothing_of_the_users() {
    let Some(user) = suite_user() else { return };
    let secret = user.home.join(common::unique("secret"));
    std::fs::write(&secret, "the user's own\n").unwrap();
    std::os::unix::fs::chown(&secret, Some(user.uid), Some(user.gid)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    // A process of the user's on the host.
    let tag = format!("{}", 910_000 + (std::process::id() % 80_000));
    let mut victim = Command::new("sleep")
        .arg(&tag)
        .uid(user.uid)
        .gid(user.gid)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = victim.id();
    let mut backends = vec!["ns"];
    if common::gvisor_ready() {
        backends.push("gvisor");
    }
    for backend in backends {
        let ws = user.workspace();
        let script = format!(
            "sudo mount -t tmpfs none /mnt && echo MOUNTED; \
             sudo unshare -m true && echo UNSHARED_MNT; unshare -U true && echo UNSHARED_USER; \
             sudo nsenter -t 1 -m true && echo SETNS; \
             sudo python3 -c 'import ctypes; l=ctypes.CDLL(None,use_errno=True); print(\"PTRACED1\" if l.ptrace(16,1,0,0)==0 else \"no ptrace\")'; \
             sudo python3 -c 'import socket; socket.socket(socket.AF_INET,socket.SOCK_RAW,1); print(\"RAW\")' 2>/dev/null; \
             bash -c 'echo x > /dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo CONNECTED; \
             kill -9 {pid} 2>/dev/null && echo KILLED; sudo kill -9 {pid} 2>/dev/null && echo KILLED; \
             for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null | grep -qx 'sleep {tag} ' && echo SEEN; \
             cat {secret} 2>/dev/null && echo READ; sudo cat {secret} 2>/dev/null && echo READ; \
             sudo sh -c 'echo x > {secret}' 2>/dev/null; echo done",
            secret = secret.display()
        );
        let out = user.sh(ws.path(), backend, &[], &script);
        let o = stdout(&out);
        assert!(o.contains("done"), "{backend}: {}{}", o, stderr(&out));
        for bad in [
            "MOUNTED",
            "UNSHARED_MNT",
            "UNSHARED_USER",
            "SETNS",
            "PTRACED1",
            "RAW",
            "CONNECTED",
            "KILLED",
            "SEEN",
            "READ",
        ] {
            assert!(!o.contains(bad), "{backend}: {bad}: {o}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "the user's own\n"
    );
    assert!(listener.accept().is_err(), "the host listener was reached");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the user's process died"
    );
    let _ = victim.kill();
    let _ = victim.wait();
    let _ = std::fs::remove_file(&secret);
}

/// A workspace the user cannot write is refused up front, with the reason, and nothing is
/// made; the same folder shared read-only from one of the user's works.
#[test]
fn a_workspace_the_user_cannot_write_is_refused() {
    let Some(user) = suite_user() else { return };
    let theirs = tempfile::Builder::new()
        .prefix("paddock-not-yours-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        theirs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(theirs.path().join("readme"), "root's\n").unwrap();
    let name = common::unique("umw");
    let o = user.paddock_in(
        theirs.path(),
        &[
            "run",
            "--backend",
            "ns",
            "--name",
            &name,
            "--no-network",
            "--",
            "true",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not writable by you"), "{}", stderr(&o));
    assert!(!user.state().join("sandboxes").join(&name).exists());
    let ws = user.workspace();
    let mount = format!("{}:/data:ro", theirs.path().display());
    let o = user.paddock_in(
        ws.path(),
        &[
            "run",
            "--backend",
            "ns",
            "--rm",
            "--no-network",
            "--mount",
            &mount,
            "--",
            "cat",
            "/data/readme",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "root's\n");
}

/// Root mode agrees: what the agent made with sudo in a workspace belongs to the workspace's
/// owner afterwards, not to the sandbox's unprivileged id range.
#[test]
fn in_root_mode_too_files_made_with_sudo_belong_to_the_workspace_owner() {
    require_root!();
    let Some(user) = suite_user() else { return };
    common::ensure_image();
    let ws = user.workspace();
    let out = common::sh(
        ws.path(),
        "sudo mkdir -p r/s && sudo touch r/s/f && touch mine",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for p in ["r", "r/s", "r/s/f", "mine"] {
        assert_eq!(owner(&ws.path().join(p)), (user.uid, user.gid), "{p}");
    }
}
