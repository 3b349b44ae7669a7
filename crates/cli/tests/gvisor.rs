//! The gvisor backend for real (runsc, systrap here): what is particular to it. The shared
//! escape, behaviour and network suites run against it too (their `gvisor::` tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{stderr, stdout, unique};

fn gv(ws: &std::path::Path, flags: &[&str], script: &str) -> std::process::Output {
    common::sh_on("gvisor", ws, flags, script)
}

#[test]
fn the_kernel_inside_is_gvisor_and_the_host_run_directory_is_invisible() {
    require_gvisor!();
    let ws = common::workspace();
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let out = gv(
        ws.path(),
        &[],
        "echo \"release: $(uname -r)\"; dmesg | head -1; \
         echo \"hostdirs: $(grep -c paddock-gvisor /proc/self/mountinfo)\"; \
         echo \"run: $(ls /run/paddock | tr '\\n' ' ')\"; \
         echo \"netdevs: $(awk -F: 'NR > 2 {print $1}' /proc/net/dev | tr -d ' ' | tr '\\n' ' ')\"",
    );
    let o = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(o.contains("Starting gVisor"), "dmesg is not gVisor's: {o}");
    assert!(
        !o.contains(&format!("release: {}", host_release.trim())),
        "the host's kernel answered: {o}"
    );
    // Nothing inside names the host-side run directory (its sockets are passed, not mounted).
    assert!(o.contains("hostdirs: 0"), "{o}");
    assert!(o.contains("run: init sudo sudo.sock"), "{o}");
    assert!(o.contains("netdevs: lo"), "{o}");
}

#[test]
fn sudo_works_for_the_agent_and_nobody_else() {
    require_gvisor!();
    let ws = common::workspace();
    // Another user claiming to be the agent when it asks pid 1 for sudo.
    std::fs::write(
        ws.path().join("forge.py"),
        r#"import socket, struct, os, array, json
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect("/run/paddock/sudo.sock")
req = json.dumps({"run": {"args": ["id", "-u"], "env": [], "cwd": "/"}}).encode()
creds = struct.pack("iII", os.getpid(), 1000, 1000)
try:
    s.sendmsg([req], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2])),
                      (socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
    print("FORGED", s.recv(1000))
except OSError as e:
    print("forge refused", e.errno)
"#,
    )
    .unwrap();
    let out = gv(
        ws.path(),
        &[],
        "echo \"agent: $(id -u)\"; echo \"sudo: $(sudo id -u)\"; \
         echo \"as-nobody: $(sudo -u nobody id -u)\"; \
         echo \"env: $(sudo env | grep -c '^SUDO_COMMAND=')\"; \
         sudo sh -c 'exit 5'; echo \"status: $?\"; \
         sudo sh -c 'echo root-file > /etc/made-by-sudo' && echo \"wrote: $(cat /etc/made-by-sudo)\"; \
         sudo -u nobody sudo true 2>&1 | head -1 | sed 's/^/nobody: /'; \
         sudo -u nobody python3 forge.py",
    );
    let o = stdout(&out);
    for want in [
        "agent: 1000",
        "sudo: 0",
        "as-nobody: 65534",
        "env: 1",
        "status: 5",
        "wrote: root-file",
        "nobody: sudo: uid 65534 is not in the sudoers file",
        "forge refused 1",
    ] {
        assert!(o.contains(want), "missing {want:?}:\n{o}\n{}", stderr(&out));
    }
    assert!(!o.contains("FORGED"), "{o}");
}

#[test]
fn the_process_limit_holds_for_root_too() {
    require_gvisor!();
    let ws = common::workspace();
    std::fs::write(
        ws.path().join("fork.py"),
        "import os, time\nok = 0\nfor i in range(64):\n    try:\n        if os.fork() == 0:\n            time.sleep(3); os._exit(0)\n        ok += 1\n    except OSError:\n        pass\nprint('forked', ok, flush=True)\nwhile True:\n    try:\n        os.wait()\n    except ChildProcessError:\n        break\n",
    )
    .unwrap();
    let out = gv(
        ws.path(),
        &["--pids", "32"],
        "python3 fork.py; sudo python3 fork.py; \
         sudo python3 -c 'import resource; resource.setrlimit(resource.RLIMIT_NPROC, (100000, 100000)); print(\"RAISED\")' 2>/dev/null; \
         echo alive",
    );
    let o = stdout(&out);
    let forked: Vec<u32> = o
        .lines()
        .filter_map(|l| l.strip_prefix("forked ")?.trim().parse().ok())
        .collect();
    assert_eq!(forked.len(), 2, "{o}\n{}", stderr(&out));
    for n in forked {
        assert!(n > 0 && n < 32, "--pids 32 let {n} forks through:\n{o}");
    }
    assert!(!o.contains("RAISED"), "root raised its process limit:\n{o}");
    assert!(o.contains("alive"), "the sandbox did not survive:\n{o}");
}

#[test]
fn a_named_sandbox_keeps_its_backend_and_layer() {
    require_gvisor!();
    let ws = common::workspace();
    let name = unique("gv-named");
    let run = |backend: &str, script: &str| {
        common::paddock_for("gvisor")
            .args(["run", "--backend", backend, "--name", &name, "-w"])
            .arg(ws.path())
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap()
    };
    let first = run("gvisor", "sudo touch /opt/kept && echo made");
    assert!(stdout(&first).contains("made"), "{first:?}");
    // `auto` keeps the sandbox on gvisor; another explicit backend is refused.
    let again = run("auto", "ls /opt/kept && dmesg | head -1");
    assert!(
        stdout(&again).contains("/opt/kept") && stdout(&again).contains("gVisor"),
        "{again:?}"
    );
    let moved = run("ns", "true");
    assert!(
        !moved.status.success() && stderr(&moved).contains("runs on the gvisor backend"),
        "{moved:?}"
    );
    common::remove(&name);
}

#[test]
fn doctor_reports_runsc_and_its_platform() {
    require_gvisor!();
    let out = common::paddock_for("gvisor")
        .arg("doctor")
        .output()
        .unwrap();
    let o = stdout(&out);
    assert!(o.contains("backend gvisor (usable)"), "{o}");
    assert!(
        o.contains("secrets store") && o.contains("secret(s) in"),
        "{o}"
    );
    assert!(o.contains("runsc version"), "{o}");
    assert!(
        o.contains("platform systrap") || o.contains("platform kvm"),
        "{o}"
    );
}
