//! The standing adversarial suite: attacks an agent inside a sandbox could make, grouped by the
//! categories published sandbox-escape benchmarks use, run against every backend.
//!
//! - orchestration: reaching Paddock itself (its control sockets, its state, the host's other
//!   sockets) through what a sandbox is given;
//! - runtime: the sandbox's own machinery (its descriptors, its limits, its namespaces);
//! - kernel: interfaces of the kernel the sandbox shares;
//! - exfiltration: getting data past the egress proxy's rules;
//! - secrets: finding the user's credentials;
//! - workspace: code the host runs later because the sandbox wrote it.
//!
//! Every case proves its attempt happened (the planted file exists, the tool it uses is in the
//! image, the request reached the proxy) before it checks that the attempt failed, so a missing
//! program or a typo fails the case instead of passing it. Older cases of the same kinds live in
//! escape.rs, network.rs and credentials.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{stderr, stdout};

/// The host's git in `dir`, as a user would type it, with an identity and nothing else of the
/// host's configuration. Returns its output whatever the status.
fn host_git(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=u", "-c", "user.email=u@example.invalid"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("the host's git must be installed for this suite")
}

/// Code the host runs later because the sandbox wrote it.
mod workspace {
    use super::*;

    on_every_backend!(git_never_runs_the_agents_code_on_the_host);

    /// Every way the agent could have the host's next `git` run its code: a hook that is a symlink
    /// into a folder the trust walk skips, a hard-linked hook, a pinned hook whose symlink target
    /// it rewrites, a `.git` file leading out of the workspace. After the run the host's git is
    /// used in each repository; no payload may run.
    fn git_never_runs_the_agents_code_on_the_host(backend: &str) {
        let ws = common::workspace();
        let w = ws.path();
        // The user's repository, with a hook of theirs that is a symlink into the worktree.
        let user = w.join("user");
        std::fs::create_dir_all(user.join("scripts")).unwrap();
        assert!(host_git(&user, &["init", "-q", "."]).status.success());
        std::fs::write(user.join("scripts/pre-commit"), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(
            user.join("scripts/pre-commit"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../scripts/pre-commit",
            user.join(".git/hooks/pre-commit"),
        )
        .unwrap();
        assert!(
            host_git(&user, &["commit", "-q", "--allow-empty", "-m", "one"])
                .status
                .success()
        );
        // A repository of the user's outside the workspace, for a `.git` file to lead to.
        let elsewhere = w.with_extension("elsewhere.git");
        assert!(
            host_git(w, &["init", "-q", "--bare", elsewhere.to_str().unwrap()])
                .status
                .success()
        );
        // Each payload touches its own file outside the workspace, on the host if it ever runs
        // there.
        let marker = |what: &str| w.with_extension(format!("{what}-ran"));
        let payload = |what: &str| format!("#!/bin/sh\ntouch {}\n", marker(what).display());
        let script = format!(
            r#"set -e
        git init -q made && cd made
        git -c user.name=a -c user.email=a@b.c commit -q --allow-empty -m one && git branch other
        mkdir -p node_modules/.bin target/debug
        printf '{symlinked}' > node_modules/.bin/lint && chmod +x node_modules/.bin/lint
        ln -s ../../node_modules/.bin/lint .git/hooks/post-checkout
        printf '{hardlinked}' > target/debug/tool && chmod +x target/debug/tool
        ln target/debug/tool .git/hooks/pre-commit
        cd ..
        printf '{pinned}' > user/scripts/pre-commit
        mkdir pointer && echo 'gitdir: {outside}' > pointer/.git
        ls -l made/.git/hooks/post-checkout made/.git/hooks/pre-commit pointer/.git user/scripts/pre-commit
        echo PLANTED
        "#,
            symlinked = payload("symlinked").replace('\n', "\\n"),
            hardlinked = payload("hardlinked").replace('\n', "\\n"),
            pinned = payload("pinned").replace('\n', "\\n"),
            outside = elsewhere.display(),
        );
        let out = common::sh_on(backend, w, &[], &script);
        assert!(stdout(&out).contains("PLANTED"), "{out:?}");
        let err = stderr(&out);
        // The attempt happened: every planted piece is on the host, in its disarmed form.
        let made = w.join("made");
        assert!(
            std::fs::symlink_metadata(made.join(".git/hooks/post-checkout.paddock-review"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{err}"
        );
        assert!(made.join("node_modules/.bin/lint").exists());
        assert!(made.join(".git/hooks/pre-commit").exists());
        assert!(
            user.join(".git/hooks/pre-commit.paddock-review").exists(),
            "{err}"
        );
        assert!(w.join("pointer/.git.paddock-review").exists(), "{err}");
        for want in [
            "made/.git/hooks/post-checkout: git hook that is a symlink (-> made/node_modules/.bin/lint)",
            "made/.git/hooks/pre-commit: git hook written during the run: its execute bits were removed",
            "user/.git/hooks/pre-commit: git hook that is a symlink",
            "pointer/.git: a .git pointer made or changed during the run leads outside the shared folders",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        // The host's git, used as a user would, runs none of it.
        for args in [
            &["checkout", "-q", "other"][..],
            &["checkout", "-q", "-"],
            &["commit", "-q", "--allow-empty", "-m", "host"],
        ] {
            let o = host_git(&made, args);
            assert!(o.status.success(), "git {args:?}: {o:?}");
        }
        let o = host_git(&user, &["commit", "-q", "--allow-empty", "-m", "host"]);
        assert!(o.status.success(), "{o:?}");
        std::fs::remove_dir_all(&elsewhere).unwrap();
        for what in ["symlinked", "hardlinked", "pinned"] {
            assert!(
                !marker(what).exists(),
                "the {what} payload ran on the host:\n{err}"
            );
        }
    }
}

/// The sandbox's own machinery: its descriptors, limits and namespaces.
mod runtime {
    use super::*;

    on_every_backend!(
        the_hosts_streams_are_never_the_sandboxs,
        a_process_limit_counts_every_user,
        a_sandbox_is_limited_without_asking
    );

    /// A sandbox made without a limit gets the host's defaults (memory, disk, processes), shown
    /// by `inspect` and in force inside: its root file system is no bigger than its disk, and
    /// its memory file systems fit in its memory limit and refuse more.
    fn a_sandbox_is_limited_without_asking(backend: &str) {
        let ws = common::workspace();
        let name = common::unique("caps");
        let _cleanup = common::Cleanup(name.clone());
        common::ensure_image();
        let made = common::paddock_for(backend)
            .args(["create", "--backend", backend, "--name", &name, "-w"])
            .arg(ws.path())
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let inspect = common::paddock()
            .args(["inspect", &name, "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        let limits = &v["limits"];
        let disk = limits["disk"].as_u64().unwrap_or_else(|| panic!("{v}"));
        let memory = limits["memory"].as_u64().unwrap_or_else(|| panic!("{v}"));
        assert!(limits["pids"].as_u64().is_some(), "{v}");
        let out = common::sh_named(
            backend,
            ws.path(),
            &name,
            "for d in / /tmp /dev/shm; do echo \"$d $(df -B1 --output=size $d | tail -1)\"; done",
        );
        common::remove(&name);
        let said = stdout(&out);
        let size = |d: &str| -> u64 {
            said.lines()
                .find_map(|l| l.strip_prefix(&format!("{d} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no size of {d}: {out:?}"))
        };
        assert!(size("/") <= disk, "{out:?} disk {disk}");
        for d in ["/tmp", "/dev/shm"] {
            // A memory file system fits in the memory limit (a VM's /tmp is on its disk).
            assert!(
                size(d) <= memory || size(d) == size("/"),
                "{d} {out:?} memory {memory}"
            );
        }
        // With a small limit, /dev/shm refuses what would not fit (the attempt is proven by
        // the bytes that did go in).
        let out = common::sh_on(
            backend,
            ws.path(),
            &["--memory", "256m"],
            "head -c 200m /dev/zero > /dev/shm/fill || echo REFUSED; echo WROTE=$(stat -c %s /dev/shm/fill)",
        );
        let said = stdout(&out);
        assert!(said.contains("REFUSED"), "{out:?}");
        let wrote: u64 = said
            .lines()
            .find_map(|l| l.strip_prefix("WROTE="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{out:?}"));
        assert!(wrote > 1 << 20 && wrote <= 128 << 20, "{out:?}");
    }

    /// `--pids N` holds for the whole sandbox, also when root inside spreads its processes over
    /// many users (gVisor counts its own limit per user), and running into it never costs the
    /// named sandbox its record.
    fn a_process_limit_counts_every_user(backend: &str) {
        let ws = common::workspace();
        let name = common::unique("pids");
        let _cleanup = common::Cleanup(name.clone());
        common::ensure_image();
        let out = common::paddock_for(backend)
            .args(["run", "--backend", backend, "--name", &name, "--pids", "64", "-u", "root"])
            .arg("-w")
            .arg(ws.path())
            .args([
                "--",
                "sh",
                "-c",
                // The counter starts first (at the limit, nothing new can start to count) and
                // counts the sandbox's processes: not pid 1, not a VM's kernel threads. It counts
                // once every user's loop has started its processes (each leaves a mark without a
                // fork; a loop killed for the limit leaves none, so at most 20 s), after a second in which a
                // limit held by sampling (gVisor's) has caught up: on a loaded machine the loops
                // may still be forking at any fixed time, and a count then sees a burst the
                // sampler has not yet seen.
                "command -v setpriv || exit 3; mkdir -m 1777 /tmp/started; \
                 python3 -c 'import os, time
deadline = time.time() + 20
while len(os.listdir(\"/tmp/started\")) < 12 and time.time() < deadline:
    time.sleep(0.2)
time.sleep(1)
total, users = 0, set()
for p in os.listdir(\"/proc\"):
    if not p.isdigit() or p in (\"1\", \"2\"):
        continue
    try:
        st = open(\"/proc/%s/stat\" % p).read()
        ppid = int(st[st.rfind(\")\") + 2:].split()[1])
        uid = os.stat(\"/proc/\" + p).st_uid
    except (OSError, ValueError):
        continue
    if ppid != 2:
        total += 1
        users.add(uid)
print(\"USERS=%d\" % len(users)); print(\"TOTAL=%d\" % total, flush=True)' & \
                 for u in $(seq 2001 2012); do \
                   setpriv --reuid=$u --regid=$u --clear-groups sh -c 'for i in $(seq 10); do sleep 30 & sleep 0.1; done; : > /tmp/started/$0; wait' $u 2>/dev/null & \
                 done; wait %1",
            ])
            .output()
            .unwrap();
        let said = stdout(&out);
        let get = |k: &str| -> u32 {
            said.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {out:?}"))
        };
        // The attempt ran: setpriv is there, and processes of many users existed (12 users
        // with 10 each: 120 processes, where each user alone stays below the limit).
        assert!(said.contains("/setpriv"), "{out:?}");
        assert!(get("USERS=") >= 6, "{out:?}");
        assert!(get("TOTAL=") <= 64, "over the limit: {out:?}");
        let ls = common::paddock().args(["ls", "--all"]).output().unwrap();
        assert!(stdout(&ls).contains(&name), "the sandbox is gone: {ls:?}");
        common::remove(&name);
    }

    /// With `>> host.log` the command's stdout must not be the host's file (which it could truncate
    /// or name), and with `-T` under the user's terminal it must not hold that terminal (whose
    /// settings and size it could change).
    fn the_hosts_streams_are_never_the_sandboxs(backend: &str) {
        use std::io::Read;
        let ws = common::workspace();
        common::ensure_image();
        let log = ws.path().with_extension("host.log");
        std::fs::write(&log, "EARLIER LINE\n").unwrap();
        let file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let out = common::paddock_for(backend)
            .args(["run", "--rm", "-T", "--backend", backend, "-w"])
            .arg(ws.path())
            .args([
                "--",
                "sh",
                "-c",
                "command -v python3 && echo \"FD1=$(readlink /proc/self/fd/1)\"; \
             python3 -c 'import os; os.ftruncate(1, 0); print(\"TRUNCATED\")'; echo DONE",
            ])
            .stdout(std::process::Stdio::from(file))
            .output()
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        // The attempt ran: python3 is there and said why it could not truncate.
        assert!(
            text.contains("/python3") && text.contains("DONE"),
            "{text}\n{out:?}"
        );
        assert!(stderr(&out).contains("Traceback"), "{out:?}");
        assert!(
            text.starts_with("EARLIER LINE\n"),
            "the host file was truncated:\n{text}"
        );
        assert!(!text.contains("TRUNCATED"), "{text}");
        let fd1 = text.lines().find(|l| l.starts_with("FD1=")).unwrap();
        assert!(!fd1.contains("host.log"), "the host path shows: {fd1}");

        // Under the user's terminal, with -T.
        let mut cmd = common::paddock_for(backend);
        cmd.args(["run", "--rm", "-T", "--backend", backend, "-w"])
            .arg(ws.path())
            .args([
                "--",
                "sh",
                "-c",
                "[ -t 0 ] && echo STDIN-IS-A-TERMINAL; [ -t 1 ] && echo STDOUT-IS-A-TERMINAL; \
             stty cols 7 2>&1 || echo STTY-REFUSED; echo DONE",
            ]);
        let (mut child, mut master) = common::spawn_on_pty(cmd);
        let size = rustix::termios::tcgetwinsize(&master).unwrap();
        let mut said = Vec::new();
        let _ = master.read_to_end(&mut said);
        let status = child.wait().unwrap();
        let said = String::from_utf8_lossy(&said);
        assert!(
            status.success() && said.contains("DONE"),
            "{status:?}: {said}"
        );
        assert!(said.contains("STTY-REFUSED"), "{said}");
        assert!(!said.contains("IS-A-TERMINAL"), "{said}");
        assert_eq!(
            rustix::termios::tcgetwinsize(&master).unwrap().ws_col,
            size.ws_col
        );
    }
}

/// Paddock itself: its control sockets and state, as something that reached them would use
/// them. (That no share can expose them is checked in bad_input.rs.)
mod orchestration {
    use std::os::unix::process::CommandExt;

    use super::*;

    /// A running ns sandbox (`run -d`, the proxy on) named after `prefix`, its workspace and
    /// its removal at the end of the test.
    fn idle_ns_sandbox(prefix: &str) -> (tempfile::TempDir, String, common::Cleanup) {
        common::ensure_image();
        let ws = common::workspace();
        let name = common::unique(prefix);
        let cleanup = common::Cleanup(name.clone());
        let out = common::paddock()
            .args(["run", "-d", "--backend", "ns", "--name", &name, "-w"])
            .arg(ws.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (ws, name, cleanup)
    }

    /// Asks the control socket `sock` for the sandbox's status as host uid `uid`; returns the
    /// answer (empty when the connection was closed unanswered, before or after the question).
    fn status_as(sock: &Path, uid: u32) -> String {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys\n\
                 s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n\
                 print('CONNECTED', flush=True)\n\
                 try:\n s.settimeout(10); s.sendall(b'{\"op\":\"status\"}\\n'); print(s.recv(4096).decode())\n\
                 except OSError: pass",
            ])
            .arg(sock)
            .uid(uid)
            .gid(uid)
            .output()
            .expect("python3 must be installed on the host for this suite");
        let said = stdout(&out);
        assert!(said.contains("CONNECTED"), "{out:?}");
        said.replace("CONNECTED", "").trim().to_owned()
    }

    /// A process with another uid that reaches a supervisor's control socket (a sandbox's
    /// root is host uid 0x70000000) gets no answer: the socket checks its peer.
    #[test]
    fn a_control_socket_answers_only_its_owner() {
        require_root!();
        let (_ws, name, _cleanup) = idle_ns_sandbox("peer");
        let home = common::home();
        let sock = home.join("run").join(format!("{name}.sock"));
        // As if a share had exposed it: a second name for the socket where anyone can reach
        // it, the socket open to all. (Opening the state directories instead would race with
        // the other tests' paddock commands, which close them again.)
        let exposed = home.parent().unwrap().join(format!("{name}.sock"));
        std::fs::hard_link(&sock, &exposed).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        let stranger = status_as(&exposed, 0x7000_0000);
        let owner = status_as(&exposed, 0);
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::remove_file(&exposed).unwrap();
        let _ = common::paddock().args(["stop", &name]).output();
        common::remove(&name);
        assert!(
            owner.contains("sandbox_pid"),
            "the owner got no answer: {owner:?}"
        );
        assert_eq!(stranger, "", "another uid was answered");
    }

    /// The lines of `/proc/PID/status` this suite reads, by name.
    fn status_of(pid: u32) -> std::collections::HashMap<String, String> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// The children of `parent` whose first argument is `arg`.
    fn children_running(parent: u32, arg: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let is = cmdline.split(|b| *b == 0).nth(1) == Some(arg.as_bytes());
            if is && status_of(pid).get("PPid").map(String::as_str) == Some(&parent.to_string()) {
                out.push(pid);
            }
        }
        out
    }

    /// The pid of running sandbox `name`'s supervisor (`inspect`).
    fn supervisor_of(name: &str) -> u32 {
        let info = common::paddock()
            .args(["inspect", "--json", name])
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        info["supervisor_pid"]
            .as_u64()
            .expect("a running supervisor") as u32
    }

    /// What `/proc/PID/status` says of a helper that reads the sandbox's bytes, started by a
    /// supervisor running as root: a uid and gid of its own in the helpers' range (all four),
    /// no group, no capability, `no_new_privs`, a seccomp filter.
    fn assert_unprivileged(status: &std::collections::HashMap<String, String>, what: &str) {
        let field = |k: &str| status.get(k).cloned().unwrap_or_default();
        for ids in ["Uid", "Gid"] {
            let ids: Vec<u32> = field(ids)
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            assert_eq!(ids.len(), 4, "{what}: {status:?}");
            assert!(
                ids.iter()
                    .all(|i| *i == ids[0] && (0x7e00_0000..0x7f00_0000).contains(i)),
                "{what}: {status:?}"
            );
        }
        assert_eq!(field("Groups"), "", "{what}: {status:?}");
        for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(field(caps), "0000000000000000", "{what} {caps}: {status:?}");
        }
        assert_eq!(field("NoNewPrivs"), "1", "{what}: {status:?}");
        assert_eq!(field("Seccomp"), "2", "{what}: {status:?}");
    }

    /// The relays read the command's terminal (ns: the pty master; gvisor: the helper's
    /// session frames) and the published ports' connections: processes of their own with no
    /// privilege, which carry the bytes and end with the command.
    fn the_relay_holds_no_privilege(backend: &str) {
        common::ensure_image();
        let ws = common::workspace();
        std::fs::write(ws.path().join("index.txt"), "served\n").unwrap();
        let name = common::unique("relaypriv");
        let _cleanup = common::Cleanup(name.clone());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = common::paddock_for(backend)
            .args([
                "run",
                "-d",
                "-t",
                "--backend",
                backend,
                "--name",
                &name,
                "-p",
            ])
            .arg(format!("{port}:8000"))
            .arg("-w")
            .arg(ws.path())
            .args([
                "--",
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // A connection through the published port (which starts the ports' relay).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let served = loop {
            match common::http_get(port, "/index.txt") {
                Some(s) if s.contains("served") => break true,
                _ if std::time::Instant::now() > deadline => break false,
                _ => std::thread::sleep(std::time::Duration::from_millis(300)),
            }
        };
        let supervisor = supervisor_of(&name);
        let relays = children_running(supervisor, "__relay");
        let statuses: Vec<_> = relays.iter().map(|p| status_of(*p)).collect();
        let _ = common::paddock().args(["stop", &name]).output();
        // Gone with their sandbox (reaped, or killed with their parent and reaped by init).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let alive = || {
            relays
                .iter()
                .filter(|p| Path::new(&format!("/proc/{p}")).exists())
                .count()
        };
        while alive() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let outlived = alive();
        common::remove(&name);
        assert!(served, "the published port never answered");
        assert_eq!(
            relays.len(),
            2,
            "a relay for the terminal and one for the ports under {supervisor}"
        );
        for status in &statuses {
            assert_unprivileged(status, "a relay");
        }
        assert_eq!(outlived, 0, "a relay outlived its sandbox: {relays:?}");
    }

    #[test]
    fn the_relay_holds_no_privilege_on_ns() {
        require_root!();
        the_relay_holds_no_privilege("ns");
    }

    #[test]
    fn the_relay_holds_no_privilege_on_gvisor() {
        require_gvisor!();
        the_relay_holds_no_privilege("gvisor");
    }

    /// The egress proxy parses every byte the sandbox sends out: it runs in a process of its
    /// own with no privilege (a uid of its own, no capability, no_new_privs, seccomp), and it
    /// ends with the sandbox.
    #[test]
    fn the_egress_proxy_holds_no_privilege() {
        require_root!();
        let (_ws, name, _cleanup) = idle_ns_sandbox("proxypriv");
        let supervisor = supervisor_of(&name);
        // The proxy serves (so it confined itself first): it answers a request with its
        // refusal.
        let asked = common::paddock()
            .args([
                "exec",
                &name,
                "--",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("http://denied.example.invalid/")
            .output()
            .unwrap();
        assert_eq!(stdout(&asked).trim(), "403", "{asked:?}");
        let workers = children_running(supervisor, "__egress");
        assert_eq!(workers.len(), 1, "one proxy process under {supervisor}");
        let status = status_of(workers[0]);
        let _ = common::paddock().args(["stop", &name]).output();
        let gone = children_running(supervisor, "__egress");
        common::remove(&name);
        assert_unprivileged(&status, "the egress proxy");
        assert!(gone.is_empty(), "the proxy outlived its sandbox: {gone:?}");
    }
}

/// Finding the user's credentials, or what leads to them: the host's paths and names.
mod secrets {
    use super::*;

    on_every_backend!(the_mount_table_names_no_host_state);

    /// The sandbox's mount table shows no path of Paddock's state (the image, the layer, the
    /// generated `/etc` files), which would name the host user's home and the other sandboxes.
    fn the_mount_table_names_no_host_state(backend: &str) {
        let ws = common::workspace();
        let out = common::sh_on(
            backend,
            ws.path(),
            &[],
            "cat /proc/self/mountinfo /proc/1/mountinfo 2>/dev/null; echo; cat /proc/mounts",
        );
        let said = stdout(&out);
        // The attempt ran: the table was read (the root and /proc are in it).
        assert!(
            said.lines().any(|l| l.contains(" / / ")) && said.contains(" /proc "),
            "{out:?}"
        );
        let home = common::home();
        let home = std::fs::canonicalize(&home).unwrap_or(home);
        for leak in [
            home.to_str().unwrap(),
            "/images/default",
            "/sandboxes/",
            "paddock-home",
        ] {
            assert!(!said.contains(leak), "{leak:?} shows inside:\n{said}");
        }
    }
}

/// Interfaces of the kernel the sandbox shares with the host (ns), or of gVisor's kernel. A VM's
/// guest kernel is its own: vm.rs checks that boundary.
mod kernel {
    use super::*;

    on_ns_and_gvisor!(namespaces_and_risky_kernel_interfaces_are_refused);

    /// Root inside cannot make namespaces (where it would hold every capability), mount, or
    /// reach the kernel interfaces with long exploit histories.
    fn namespaces_and_risky_kernel_interfaces_are_refused(backend: &str) {
        let ws = common::workspace();
        let out = common::sh_on(
            backend,
            ws.path(),
            &["-u", "root"],
            r#"command -v unshare python3 >/dev/null || exit 3
for args in "-UrmC true" "-r true" "-n true" "-m true" "-p -f true"; do
    unshare $args 2>/dev/null && echo "UNSHARE-WORKED $args" || echo "unshare refused $args"
done
mount -t tmpfs none /mnt 2>/dev/null && echo MOUNT-WORKED || echo "mount refused"
python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
# name: (number, args)
calls = {
    "unshare(CLONE_NEWUSER)": (272, (0x10000000,)),
    "clone3": (435, (0, 0)),
    "keyctl": (250, (0, 0, 0, 0, 0)),
    "bpf": (321, (0, 0, 0)),
    "io_uring_setup": (425, (1, 0)),
    "perf_event_open": (298, (0, 0, -1, -1, 0)),
    "userfaultfd": (323, (0,)),
    "setns": (308, (0, 0)),
}
for name, (nr, args) in calls.items():
    r = libc.syscall(nr, *args)
    e = ctypes.get_errno()
    print(("REFUSED" if r < 0 and e in (1, 38) else "ALLOWED"), name, r, os.strerror(e))
PY"#,
        );
        let said = stdout(&out);
        // The attempts ran: each call reported back.
        assert_eq!(said.matches("unshare refused").count(), 5, "{out:?}");
        assert!(said.contains("mount refused"), "{out:?}");
        for call in [
            "unshare(CLONE_NEWUSER)",
            "clone3",
            "keyctl",
            "bpf",
            "io_uring_setup",
            "perf_event_open",
            "userfaultfd",
            "setns",
        ] {
            assert!(
                said.lines()
                    .any(|l| l.starts_with("REFUSED ") && l.contains(&format!(" {call} "))),
                "{call} was not refused: {out:?}"
            );
        }
        assert!(
            !said.contains("WORKED") && !said.contains("ALLOWED"),
            "{out:?}"
        );
    }
}

/// Getting data past the egress proxy's rules.
mod exfiltration {
    use super::*;

    on_every_backend!(a_wildcard_never_opens_a_reserved_address);

    /// A rule that allows a whole domain still never reaches a loopback, private or metadata
    /// address one of its names resolves to (only a rule naming the address would), and each
    /// refusal is in the audit log (the proof that the request reached the proxy).
    fn a_wildcard_never_opens_a_reserved_address(backend: &str) {
        let ws = common::workspace();
        let name = common::unique("exfil");
        let _cleanup = common::Cleanup(name.clone());
        common::ensure_image();
        let out = common::paddock_for(backend)
            .env(
                "PADDOCK_TEST_RESOLVE",
                "meta.exfil.test=169.254.169.254;lo.exfil.test=127.0.0.1;lan.exfil.test=10.0.0.1",
            )
            .args(["run", "--backend", backend, "--name", &name, "--policy", "deny-all"])
            .args(["--allow", "**.exfil.test:any", "-w"])
            .arg(ws.path())
            .args([
                "--",
                "sh",
                "-c",
                "command -v curl >/dev/null || exit 3; \
                 for h in meta lo lan; do \
                   echo \"$h $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://$h.exfil.test/latest/meta-data/)\"; \
                 done",
            ])
            .output()
            .unwrap();
        let said = stdout(&out);
        let audit = common::paddock()
            .args([
                "policy",
                "log",
                "--sandbox",
                &name,
                "--json",
                "--limit",
                "100",
            ])
            .output()
            .unwrap();
        common::remove(&name);
        for h in ["meta", "lo", "lan"] {
            assert!(said.contains(&format!("{h} 403")), "{h}: {out:?}");
        }
        let rows: Vec<serde_json::Value> = stdout(&audit)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        for h in ["meta.exfil.test", "lo.exfil.test", "lan.exfil.test"] {
            assert!(
                rows.iter()
                    .any(|r| r["host"] == h && r["action"] == "deny" && r["rule"] == "address"),
                "{h} not audited as denied: {rows:?}"
            );
        }
    }
}
