//! Escape attempts under the real `paddock` binary. Each test fails if the attack works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use common::{sh, stdout, unique};

/// Python inside the sandbox printing the errno of a failing call (or "OK" if it worked).
fn py(ws: &std::path::Path, flags: &[&str], code: &str) -> String {
    py_on("ns", ws, flags, code)
}

/// The same on `backend`.
fn py_on(backend: &str, ws: &std::path::Path, flags: &[&str], code: &str) -> String {
    let script = format!("python3 - <<'PY'\n{code}\nPY");
    let out = common::sh_on(backend, ws, flags, &script);
    stdout(&out).trim().to_owned() + &common::stderr(&out)
}

/// `sh -c script` on `backend`.
fn sh_b(backend: &str, ws: &std::path::Path, script: &str) -> std::process::Output {
    common::sh_on(backend, ws, &[], script)
}

// Escapes that mean the same on every backend. The ones about the namespace backend's own
// layers (seccomp, Landlock, capabilities) are below as plain tests; a VM's guest kernel is
// the boundary there, and `vm.rs` checks the VM's own.
on_every_backend_in_both_modes!(
    writes_outside_the_workspace_stay_inside,
    host_secrets_are_invisible,
    hardlinks_cannot_reach_other_files,
    path_prefix_siblings_are_invisible,
    host_loopback_services_are_unreachable,
    host_processes_are_invisible_and_unkillable,
);

fn writes_outside_the_workspace_stay_inside(backend: &str) {
    let ws = common::workspace();
    let marker = unique("paddock-outside");
    let out = sh_b(
        backend,
        ws.path(),
        &format!(
            "sudo sh -c 'echo x > /{marker}; echo x > /etc/{marker}; echo x > /var/tmp/{marker}; echo x > /root/{marker}' && echo WROTE"
        ),
    );
    assert!(
        stdout(&out).contains("WROTE"),
        "the sandbox should be able to write its own root: {out:?}"
    );
    for dir in ["", "/etc", "/var/tmp", "/root"] {
        let p = format!("{dir}/{marker}");
        assert!(
            !std::path::Path::new(&p).exists(),
            "{p} appeared on the host"
        );
    }
}

fn host_secrets_are_invisible(backend: &str) {
    let ws = common::workspace();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let secret = format!("{home}/{}", unique(".paddock-secret"));
    let value = unique("s3cr3t");
    std::fs::write(&secret, &value).unwrap();
    let out = sh_b(
        backend,
        ws.path(),
        &format!(
            "cat {secret}; sudo cat {secret}; cat /proc/1/root{secret}; sudo cat /proc/1/root{secret}; \
             ls -la {home} /proc/1/root{home}; ln -s / {ws}/r; cat {ws}/r{secret}; sudo cat {ws}/r{secret}; true",
            ws = ws.path().display()
        ),
    );
    std::fs::remove_file(&secret).unwrap();
    assert!(!stdout(&out).contains(&value), "secret leaked: {out:?}");
    // The symlink exists on the host (the agent may write anything in the workspace) and is
    // only a symlink: reading through it inside reached the sandbox's own root.
    let link = ws.path().join("r");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

fn hardlinks_cannot_reach_other_files(backend: &str) {
    let ws = common::workspace();
    let out = sh_b(
        backend,
        ws.path(),
        &format!(
            "sudo ln /etc/shadow {ws}/x && echo LINKED; ln /etc/passwd {ws}/y && echo LINKED; true",
            ws = ws.path().display()
        ),
    );
    assert!(!stdout(&out).contains("LINKED"), "{out:?}");
    assert!(!ws.path().join("x").exists() && !ws.path().join("y").exists());
    let shadow = std::fs::metadata("/etc/shadow").unwrap();
    for e in std::fs::read_dir(ws.path()).unwrap() {
        assert_ne!(e.unwrap().metadata().unwrap().ino(), shadow.ino());
    }
}

fn path_prefix_siblings_are_invisible(backend: &str) {
    let parent = common::workspace();
    let proj = parent.path().join("proj");
    let evil = parent.path().join("proj-evil");
    std::fs::create_dir(&proj).unwrap();
    std::fs::create_dir(&evil).unwrap();
    let value = unique("sibling-secret");
    std::fs::write(evil.join("secret"), &value).unwrap();
    let out = sh_b(
        backend,
        &proj,
        &format!(
            "cat {}/secret; ls {}; sudo cat {}/secret; true",
            evil.display(),
            parent.path().display(),
            evil.display()
        ),
    );
    assert!(!stdout(&out).contains(&value), "{out:?}");
    assert!(
        !stdout(&out).contains("proj-evil"),
        "sibling listed: {out:?}"
    );
}

#[test]
fn ptrace_mount_unshare_are_refused() {
    require_root!();
    let ws = common::workspace();
    let out = sh(
        ws.path(),
        "sleep 30 & P=$!; \
         sudo mount -t tmpfs none /mnt && echo MOUNTED; \
         sudo umount /proc && echo UNMOUNTED; \
         unshare -U true && echo UNSHARED_USER; \
         sudo unshare -m true && echo UNSHARED_MNT; \
         sudo unshare -n true && echo UNSHARED_NET; \
         sudo nsenter -t 1 -m true && echo SETNS; \
         python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); r=l.ptrace(16,int(sys.argv[1]),0,0); print(\"PTRACED\" if r==0 else \"ptrace errno\", ctypes.get_errno())' $P; \
         sudo python3 -c 'import ctypes; l=ctypes.CDLL(None,use_errno=True); r=l.ptrace(16,1,0,0); print(\"PTRACED1\" if r==0 else \"ptrace1 errno\", ctypes.get_errno())'; \
         kill $P; true",
    );
    let o = stdout(&out);
    for bad in [
        "MOUNTED",
        "UNMOUNTED",
        "UNSHARED_USER",
        "UNSHARED_MNT",
        "UNSHARED_NET",
        "SETNS",
        "PTRACED",
    ] {
        assert!(!o.contains(bad), "{bad}: {out:?}");
    }
    assert!(
        o.contains("ptrace errno 1"),
        "ptrace should fail with EPERM: {out:?}"
    );
    assert!(o.contains("ptrace1 errno 1"), "{out:?}");
}

#[test]
fn tiocsti_and_tioclinux_are_refused_even_with_high_bits() {
    require_root!();
    let ws = common::workspace();
    let o = py(
        ws.path(),
        &[],
        "import ctypes\nl=ctypes.CDLL(None,use_errno=True)\nfor req in (0x5412, 0x100005412, 0x541C, 0xffffffff0000541C):\n    r=l.ioctl(0, ctypes.c_ulong(req), ctypes.c_char_p(b'x'))\n    print(hex(req), r, ctypes.get_errno())",
    );
    for req in ["0x5412", "0x100005412", "0x541c", "0xffffffff0000541c"] {
        assert!(
            o.contains(&format!("{req} -1 1")),
            "{req} not refused with EPERM: {o}"
        );
    }
}

#[test]
fn io_uring_bpf_userfaultfd_keyctl_are_refused() {
    require_root!();
    let ws = common::workspace();
    // io_uring_setup=425, bpf=321, userfaultfd=323, keyctl=250, perf_event_open=298, add_key=248
    let o = py(
        ws.path(),
        &["-u", "root"],
        "import ctypes\nl=ctypes.CDLL(None,use_errno=True)\nbuf=ctypes.create_string_buffer(256)\nfor nr in (425,321,323,250,298,248):\n    r=l.syscall(nr, 8, buf, 0, 0, 0)\n    print(nr, r, ctypes.get_errno())",
    );
    for nr in ["425", "321", "323", "250", "298", "248"] {
        assert!(
            o.contains(&format!("{nr} -1 1")),
            "syscall {nr} not refused: {o}"
        );
    }
}

#[test]
fn raw_packet_and_vsock_sockets_are_refused() {
    require_root!();
    let ws = common::workspace();
    let o = py(
        ws.path(),
        &["-u", "root"],
        "import socket\nfor name,args in [('raw4',(socket.AF_INET,socket.SOCK_RAW,1)),('raw6',(socket.AF_INET6,socket.SOCK_RAW,58)),('packet',(17,socket.SOCK_RAW,0)),('vsock',(40,socket.SOCK_STREAM,0))]:\n    try:\n        socket.socket(*args); print(name,'OPENED')\n    except OSError as e:\n        print(name,'refused',e.errno)",
    );
    for name in ["raw4", "raw6", "packet", "vsock"] {
        assert!(o.contains(&format!("{name} refused 1")), "{name}: {o}");
    }
    assert!(!o.contains("OPENED"), "{o}");
}

fn host_loopback_services_are_unreachable(backend: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let ws = common::workspace();
    let o = py_on(
        backend,
        ws.path(),
        &["-u", "root"],
        &format!(
            "import socket\nfor host in ('127.0.0.1','::1','localhost'):\n    try:\n        s=socket.create_connection((host,{port}),timeout=2); print('CONNECTED',host)\n    except OSError as e:\n        print('refused',host,e.errno)\ntry:\n    socket.getaddrinfo('example.com',80); print('RESOLVED')\nexcept OSError as e:\n    print('no dns')\ntry:\n    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.sendto(b'x',('10.0.0.1',53)); print('UDP SENT')\nexcept OSError as e:\n    print('udp refused',e.errno)"
        ),
    );
    assert!(!o.contains("CONNECTED"), "{o}");
    assert!(!o.contains("RESOLVED"), "{o}");
    assert!(!o.contains("UDP SENT"), "{o}");
    assert!(o.contains("refused 127.0.0.1"), "{o}");
    let bash = sh_b(
        backend,
        ws.path(),
        &format!("bash -c 'echo x > /dev/tcp/127.0.0.1/{port}' && echo CONNECTED; true"),
    );
    assert!(!stdout(&bash).contains("CONNECTED"));
    assert!(
        listener.accept().is_err(),
        "the host listener accepted a connection from the sandbox"
    );
}

fn host_processes_are_invisible_and_unkillable(backend: &str) {
    let tag = format!("{}", 900000 + (std::process::id() % 90000));
    let mut victim = Command::new("sleep")
        .arg(&tag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = victim.id();
    let ws = common::workspace();
    let out = sh_b(
        backend,
        ws.path(),
        &format!(
            "kill -9 {pid} && echo KILLED; sudo kill -9 {pid} && echo KILLED; \
             for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -qx 'sleep {tag} ' && echo SEEN; \
             n=0; for f in /proc/[0-9]*/cmdline; do [ -n \"$(tr -d '\\0' < $f 2>/dev/null)\" ] && n=$((n+1)); done; echo $n"
        ),
    );
    let o = stdout(&out);
    assert!(!o.contains("KILLED"), "{out:?}");
    assert!(!o.contains("SEEN"), "{out:?}");
    let count: usize = o
        .lines()
        .last()
        .unwrap_or("999")
        .trim()
        .parse()
        .unwrap_or(999);
    assert!(count < 20, "the sandbox sees {count} processes: {out:?}");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the host process died"
    );
    victim.kill().unwrap();
    let _ = victim.wait();
}
