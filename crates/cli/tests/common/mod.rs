//! Test harness: the real `paddock` binary, a private state directory, and the default image
//! (reused from the user's store when the quick start already built it, else built once).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub mod netns;
pub mod user;

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Skips the calling test (with a message) when not root: the namespace backend needs root.
/// With `PADDOCK_REQUIRE_ROOT=1` (CI) such a skip is a failure, never a pass.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            assert!(
                std::env::var_os("PADDOCK_REQUIRE_ROOT").is_none(),
                "this test needs root (PADDOCK_REQUIRE_ROOT is set, so it may not be skipped)"
            );
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// Removes an account a test made (its home too) and its subordinate ranges, which `userdel`
/// leaves in `/etc/subuid` and `/etc/subgid`.
pub fn remove_user(name: &str) {
    // With usermod, which locks and replaces the files as useradd does: other tests read them
    // (and add accounts) meanwhile, so they are never rewritten in place here.
    let ranges = |file: &str| -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                (f.next() == Some(name)).then_some(())?;
                let start: u64 = f.next()?.parse().ok()?;
                let count: u64 = f.next()?.parse().ok()?;
                Some(format!("{start}-{}", start + count.max(1) - 1))
            })
            .collect()
    };
    let mut args = Vec::new();
    for r in ranges("/etc/subuid") {
        args.extend(["--del-subuids".to_owned(), r]);
    }
    for r in ranges("/etc/subgid") {
        args.extend(["--del-subgids".to_owned(), r]);
    }
    if !args.is_empty() {
        let _ = Command::new("usermod").args(&args).arg(name).output();
    }
    let _ = Command::new("userdel").args(["-r", name]).output();
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_paddock"))
}

/// The state directory of the suite's sandboxes: a private one of the test run's (root), or the
/// suite user's own (`PADDOCK_SUITE_MODE=user`).
pub fn home() -> PathBuf {
    if let Some(u) = suite_as_user() {
        return u.home.join(".local/share/paddock");
    }
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("paddock-home")
}

fn user_images() -> Option<PathBuf> {
    let base = match std::env::var_os("PADDOCK_HOME") {
        Some(h) => PathBuf::from(h),
        None => match std::env::var_os("XDG_DATA_HOME") {
            Some(x) => PathBuf::from(x).join("paddock"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".local/share/paddock"),
        },
    };
    let images = base.join("images");
    images.join("default/image.json").exists().then_some(images)
}

/// Makes sure the test home has the default image; serialised across test binaries.
pub fn ensure_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    if suite_as_user().is_some() {
        return;
    }
    DONE.get_or_init(|| {
        let home = home();
        std::fs::create_dir_all(&home).unwrap();
        let lock = std::fs::File::create(home.join(".image-lock")).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let images = home.join("images");
        if !images.join("default/image.json").exists()
            && let Some(user) = user_images()
        {
            let _ = std::fs::remove_dir_all(&images);
            let _ = std::fs::remove_file(&images);
            symlink(user, &images).unwrap();
        }
        // Kept when it is what this Paddock builds (instant), else built or rebuilt.
        let out = paddock().args(["image", "build"]).output().unwrap();
        assert!(
            out.status.success(),
            "image build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// How long one test may run before the watchdog stops the test binary (seconds; overridden by
/// `PADDOCK_TEST_LIMIT`). The slowest test, a VM one under TCG on a loaded 2-core machine, takes
/// a few minutes.
const TEST_LIMIT: u64 = 900;

/// Tests being watched: the test thread's name and when it first ran `paddock`.
static WATCHED: std::sync::Mutex<Vec<(std::thread::ThreadId, String, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

/// Unregisters its test thread from the watchdog when the thread ends (the test is over).
struct Watched(std::thread::ThreadId);

impl Drop for Watched {
    fn drop(&mut self) {
        WATCHED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(id, ..)| *id != self.0);
    }
}

thread_local! {
    static WATCH: std::cell::OnceCell<Watched> = const { std::cell::OnceCell::new() };
}

/// Watches the calling test: when it is still running [`TEST_LIMIT`] after this first call,
/// the test binary says which tests hang, lists the sandbox processes still running, and
/// exits, so that a wait that never ends fails the run at once instead of holding CI until its
/// own limit. Only test threads are watched (libtest names them after their test).
fn watch_this_test() {
    let me = std::thread::current();
    let Some(name) = me.name().filter(|n| *n != "main").map(str::to_owned) else {
        return;
    };
    WATCH.with(|w| {
        w.get_or_init(|| {
            WATCHED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((me.id(), name, std::time::Instant::now()));
            Watched(me.id())
        });
    });
    static MONITOR: std::sync::Once = std::sync::Once::new();
    MONITOR.call_once(|| {
        let limit = std::env::var("PADDOCK_TEST_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(TEST_LIMIT);
        let limit = std::time::Duration::from_secs(limit);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let hung: Vec<String> = WATCHED
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .filter(|(_, _, since)| since.elapsed() > limit)
                    .map(|(_, name, _)| name.clone())
                    .collect();
                if hung.is_empty() {
                    continue;
                }
                // Straight to the process's stderr: `eprintln!` here would be captured with the
                // test's output (this thread inherits it) and lost when the binary exits.
                let mut report = format!(
                    "\nwatchdog: still running after {} s: {}; stopping this test binary\n",
                    limit.as_secs(),
                    hung.join(", ")
                );
                let ps = Command::new("ps")
                    .args(["-eo", "pid,ppid,etimes,stat,wchan:24,args"])
                    .output();
                if let Ok(ps) = ps {
                    for line in String::from_utf8_lossy(&ps.stdout).lines() {
                        if ["paddock", "runsc", "qemu", "virtiofsd", "vhost-device"]
                            .iter()
                            .any(|p| line.contains(p))
                        {
                            report.push_str(&format!("watchdog: {line}\n"));
                        }
                    }
                }
                let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), report.as_bytes());
                std::process::exit(101);
            }
        });
    });
}

/// `paddock` with the test state directory and a clean environment (and the calling test
/// watched: see [`watch_this_test`]).
/// Test binaries whose sandboxes are the suite's ordinary user's (user mode, Paddock's main
/// mode): the rest run as root, which keeps the escape and network cases in root mode too.
/// `PADDOCK_SUITE_MODE=user` or `=root` puts every binary in one mode.
const USER_MODE_SUITES: &[&str] = &[
    "ask",
    "docker",
    "behaviour",
    "lifecycle",
    "credentials",
    "escape",
    "network",
    "registries",
];

thread_local! {
    /// This test thread's mode, when a test asked for one ([`in_mode`]).
    static MODE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a test's body) with its sandboxes the suite user's (`user`) or root's, whatever
/// the binary's mode.
pub fn in_mode<T>(user: bool, f: impl FnOnce() -> T) -> T {
    MODE.with(|m| m.set(Some(user)));
    let out = f();
    MODE.with(|m| m.set(None));
    out
}

/// The suite's user when this test's sandboxes are that ordinary user's, not root's.
pub fn suite_as_user() -> Option<user::Account> {
    let user = match (
        MODE.with(std::cell::Cell::get),
        std::env::var("PADDOCK_SUITE_MODE").as_deref(),
    ) {
        (Some(user), _) => user,
        (None, Ok("user")) => true,
        (None, Ok("root")) => false,
        _ => std::env::current_exe()
            .ok()
            .and_then(|p| {
                p.file_name()?
                    .to_str()?
                    .split('-')
                    .next()
                    .map(str::to_owned)
            })
            .is_some_and(|b| USER_MODE_SUITES.contains(&b.as_str())),
    };
    if !user {
        return None;
    }
    user::suite_user()
}

pub fn paddock() -> Command {
    watch_this_test();
    if let Some(u) = suite_as_user() {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(bin());
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &u.home)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name)
            .stdin(Stdio::null())
            .uid(u.uid)
            .gid(u.gid);
        return c;
    }
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PADDOCK_HOME", home())
        .env("PADDOCK_SECRET_KEY", home().join("secrets-test.key"))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .stdin(Stdio::null());
    c
}

/// A fresh workspace directory (not a system directory).
pub fn workspace() -> tempfile::TempDir {
    let ws = tempfile::Builder::new()
        .prefix("paddock-ws-")
        .tempdir_in("/var/tmp")
        .unwrap();
    if let Some(u) = suite_as_user() {
        std::os::unix::fs::chown(ws.path(), Some(u.uid), Some(u.gid)).unwrap();
    }
    ws
}

/// The body of `GET path` from a server on the host's `127.0.0.1:port` (a published port);
/// `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// Gives what a test prepared in workspace `ws` (as root) to whoever the suite runs as: in user
/// mode the suite's user owns it, as a user owns their project.
pub fn hand_over(ws: &Path) {
    if let Some(u) = suite_as_user() {
        let out = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", u.uid, u.gid))
            .arg(ws)
            .output()
            .unwrap();
        assert!(out.status.success(), "chown: {out:?}");
    }
}

/// Runs `sh -c script` in a throw-away sandbox on `ws`.
pub fn sh(ws: &Path, script: &str) -> Output {
    sh_with(ws, &[], script)
}

/// Same, with extra `run` flags.
pub fn sh_with(ws: &Path, flags: &[&str], script: &str) -> Output {
    sh_on("ns", ws, flags, script)
}

/// Same, on `backend`.
pub fn sh_on(backend: &str, ws: &Path, flags: &[&str], script: &str) -> Output {
    ensure_image();
    let mut c = paddock_for(backend);
    c.args(["run", "--rm", "--backend", backend, "-w"])
        .arg(ws)
        .args(flags)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

/// Removes the sandbox it names (`paddock rm -f`) when dropped, also when the test fails
/// before its own clean-up: a failed test leaves no running sandbox behind.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = paddock().args(["rm", "-f", &self.0]).output();
    }
}

/// Removes sandbox `name` with `paddock rm`, which must succeed.
pub fn remove(name: &str) {
    let out = paddock().args(["rm", name]).output().unwrap();
    assert!(out.status.success(), "paddock rm {name}: {out:?}");
}

/// `sh -c script` in the named sandbox `name` on `backend` (kept afterwards, unlike [`sh_on`]).
pub fn sh_named(backend: &str, ws: &Path, name: &str, script: &str) -> Output {
    ensure_image();
    paddock_for(backend)
        .args(["run", "--backend", backend, "--name", name, "-w"])
        .arg(ws)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What `paddock` wrote to stderr, less the warning every run as root on a root-owned
/// workspace gets (the tests' workspaces are root's; `root_share_warning` checks it is said).
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .split_inclusive('\n')
        .filter(|l| !(l.starts_with("paddock: warning: ") && l.contains(ROOT_SHARE_WARNING)))
        .collect()
}

/// What the warning about a root-owned share says.
pub const ROOT_SHARE_WARNING: &str =
    "belongs to root: inside, the agent is the owner of root's files there";

/// A number from `base` to `base + 89999` no other running test uses (a `sleep` duration that
/// marks a sandbox's processes).
pub fn random_tag(base: u32) -> String {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    (base + u32::from_le_bytes(b) % 90000).to_string()
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    format!("{prefix}-{:08x}", u32::from_le_bytes(b))
}

/// Programs the vm backend drives; its tests skip when one is missing, unless
/// `PADDOCK_REQUIRE_VM=1` (CI) makes that a failure.
pub fn vm_ready() -> bool {
    let missing: Vec<&str> = [
        "qemu-system-x86_64",
        "qemu-img",
        "virtiofsd",
        "vhost-device-vsock",
    ]
    .into_iter()
    .filter(|p| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("PADDOCK_REQUIRE_VM").is_none(),
        "the vm backend's programs are missing: {missing:?} (./setup.sh installs them)"
    );
    eprintln!("skipped: the vm backend needs {missing:?} (./setup.sh installs them)");
    false
}

/// Whether this host's package registries (those its own apt, pip and npm are configured with)
/// answer: each one's port 443 or 80 takes a connection within five seconds. The tests that
/// install from the real registries skip without them, unless `PADDOCK_REQUIRE_REGISTRIES=1`
/// (CI) makes that a failure.
pub fn registries_ready() -> bool {
    use std::net::ToSocketAddrs;
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let cfg = paddock_store::registries::HostConfig::from_env();
        let hosts = paddock_store::registries::discover(&cfg);
        if hosts.is_empty() {
            return Err("this host's package managers name no registry".into());
        }
        let answers = |host: &str, port: u16| {
            (host, port).to_socket_addrs().is_ok_and(|mut addrs| {
                addrs.any(|a| {
                    std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5))
                        .is_ok()
                })
            })
        };
        let silent: Vec<String> = hosts
            .iter()
            .filter(|h| {
                let ports = h.port.map_or(vec![443, 80], |p| vec![p]);
                !ports.into_iter().any(|p| answers(&h.host, p))
            })
            .map(|h| format!("{} ({})", h.host, h.source))
            .collect();
        match silent.is_empty() {
            true => Ok(()),
            false => Err(format!("no answer from {}", silent.join(", "))),
        }
    });
    match ready {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("PADDOCK_REQUIRE_REGISTRIES").is_none(),
                "the package registries are required (PADDOCK_REQUIRE_REGISTRIES is set): {why}"
            );
            eprintln!("skipped: the package registries are not reachable: {why}");
            false
        }
    }
}

/// Whether runsc is installed; the gvisor tests skip without it, unless
/// `PADDOCK_REQUIRE_GVISOR=1` (CI) makes that a failure.
pub fn gvisor_ready() -> bool {
    let found = ["/usr/sbin/runsc", "/usr/bin/runsc", "/usr/local/bin/runsc"]
        .iter()
        .any(|p| Path::new(p).exists());
    if found {
        return true;
    }
    assert!(
        std::env::var_os("PADDOCK_REQUIRE_GVISOR").is_none(),
        "runsc is missing (./setup.sh installs it)"
    );
    eprintln!("skipped: the gvisor backend needs runsc (./setup.sh installs it)");
    false
}

/// Skips the calling test unless root and runsc is present.
#[macro_export]
macro_rules! require_gvisor {
    () => {
        $crate::require_root!();
        if !$crate::common::gvisor_ready() {
            return;
        }
    };
}

/// Skips the calling test unless root and the vm backend's programs are present.
#[macro_export]
macro_rules! require_vm {
    () => {
        $crate::require_root!();
        if !$crate::common::vm_ready() {
            return;
        }
    };
}

/// A pipeline whose reader leaves early, as the agent's and sudo's commands run it: the writer
/// must die of SIGPIPE (status 141), not see EPIPE and complain of a broken pipe, which it
/// does when it starts with SIGPIPE ignored (as the helpers' Rust runtime has it).
pub const PIPE_ENDS_QUIETLY: &str = "(yes; echo \"agent: $?\" >&2) | head -n1 >/dev/null; \
    sudo sh -c '(yes; echo \"sudo: $?\" >&2) | head -n1 >/dev/null'";
/// What [`PIPE_ENDS_QUIETLY`] writes to stderr.
pub const PIPE_ENDED_QUIETLY: &str = "agent: 141\nsudo: 141\n";

/// The guest helper built from this checkout, statically linked (the initramfs has no
/// libraries), in a target directory of its own; built once per test run.
pub fn guest_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-build");
            std::fs::create_dir_all(&target_dir).unwrap();
            let lock = std::fs::File::create(target_dir.join(".lock")).unwrap();
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
            let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&root)
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    "paddock-guest",
                    "--target",
                    "x86_64-unknown-linux-gnu",
                ])
                .env("CARGO_TARGET_DIR", &target_dir)
                .env(
                    "RUSTFLAGS",
                    "-C target-feature=+crt-static -C strip=symbols",
                )
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "building the static guest helper failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            target_dir.join("x86_64-unknown-linux-gnu/release/paddock-guest")
        })
        .clone()
}

/// `paddock` for the vm backend: the test home plus the freshly built guest helper.
pub fn paddock_vm() -> Command {
    ensure_image();
    let mut c = paddock();
    c.env("PADDOCK_GUEST_BINARY", guest_binary());
    c
}

/// `paddock` for `backend`: the vm and gvisor backends run the freshly built helper.
pub fn paddock_for(backend: &str) -> Command {
    if backend == "vm" || backend == "gvisor" {
        paddock_vm()
    } else {
        paddock()
    }
}

/// Runs `sh -c script` in a throw-away VM sandbox on `ws`, with extra `run` flags.
pub fn vm_sh(ws: &Path, flags: &[&str], script: &str) -> Output {
    sh_on("vm", ws, flags, script)
}

/// Makes `ns::NAME`, `gvisor::NAME` and `vm::NAME` tests of functions `NAME(backend: &str)`: the
/// shared suite, run against every backend (the gvisor and vm ones skip where their programs are
/// missing, except in CI).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod ns {
            $(#[test]
            fn $name() {
                $crate::require_root!();
                super::$name("ns");
            })*
        }
        mod gvisor {
            $(#[test]
            fn $name() {
                $crate::require_gvisor!();
                super::$name("gvisor");
            })*
        }
        mod vm {
            $(#[test]
            fn $name() {
                $crate::require_vm!();
                super::$name("vm");
            })*
        }
    };
}

/// Makes `user::{ns,gvisor,vm}::NAME` and `root::{ns,gvisor,vm}::NAME` tests of functions
/// `NAME(backend: &str)`: the cases that run in both modes (the escape and network cases: an
/// ordinary user's sandboxes are the main mode, and root's stay covered).
#[macro_export]
macro_rules! on_every_backend_in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod user {
            $crate::on_every_backend_in_mode!(true, $($name),*);
        }
        mod root {
            $crate::on_every_backend_in_mode!(false, $($name),*);
        }
    };
}

/// [`on_every_backend_in_both_modes`]'s half for one mode.
#[macro_export]
macro_rules! on_every_backend_in_mode {
    ($user:expr, $($name:ident),* $(,)?) => {
        mod ns {
            $(#[test]
            fn $name() {
                $crate::require_root!();
                $crate::common::in_mode($user, || super::super::$name("ns"));
            })*
        }
        mod gvisor {
            $(#[test]
            fn $name() {
                $crate::require_gvisor!();
                $crate::common::in_mode($user, || super::super::$name("gvisor"));
            })*
        }
        mod vm {
            $(#[test]
            fn $name() {
                $crate::require_vm!();
                $crate::common::in_mode($user, || super::super::$name("vm"));
            })*
        }
    };
}

/// Makes `ns::NAME` and `gvisor::NAME` tests of functions `NAME(backend: &str)`: checks the vm
/// backend has in its own form in vm.rs (each VM boot under emulation costs seconds).
#[macro_export]
macro_rules! on_ns_and_gvisor {
    ($($name:ident),* $(,)?) => {
        mod ns_and_gvisor {
            mod ns {
                $(#[test]
                fn $name() {
                    $crate::require_root!();
                    super::super::$name("ns");
                })*
            }
            mod gvisor {
                $(#[test]
                fn $name() {
                    $crate::require_gvisor!();
                    super::super::$name("gvisor");
                })*
            }
        }
    };
}

/// Host processes that belong to sandbox `name` on `backend` (for ns, its processes are host
/// processes: those whose command line contains `tag`; for gvisor and vm, the runtime's).
pub fn leftovers(backend: &str, name: &str, tag: &str) -> Vec<String> {
    let needle = match backend {
        "ns" => tag.to_owned(),
        // Its run directory, named after the user and the sandbox.
        "gvisor" => format!(
            "paddock-gvisor-{}-{name}-",
            suite_as_user().map_or_else(|| rustix::process::geteuid().as_raw(), |u| u.uid)
        ),
        other => format!("paddock-{other}-{name}-"),
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

/// Starts `cmd` on a new pty of its own (its controlling terminal, `TERM=xterm`); returns the
/// child and the pty's master.
pub fn spawn_on_pty(mut cmd: Command) -> (std::process::Child, std::fs::File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // Close-on-exec from the start: this pty stays out of the processes other tests start
    // meanwhile (a supervisor holding it would outlive the test).
    let master = rustix::pty::openpt(
        rustix::pty::OpenptFlags::RDWR
            | rustix::pty::OpenptFlags::NOCTTY
            | rustix::pty::OpenptFlags::CLOEXEC,
    )
    .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let slave = rustix::fs::open(
        rustix::pty::ptsname(&master, Vec::new())
            .unwrap()
            .as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let slave_fd = slave.as_raw_fd();
    cmd.env("TERM", "xterm")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and TIOCSCTTY in the child make the pty its controlling terminal.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let master = std::fs::File::from(master);
    // The size of a terminal window, before the child looks; a test that resizes it sees the
    // change.
    set_winsize(&master, 24, 80);
    let child = cmd.spawn().unwrap();
    // `cmd` (and its copies of the slave) goes here, so the master sees the end of the child.
    drop(cmd);
    (child, master)
}

/// Reads the pty `master` into `seen` until it holds `want` (60 s at most: a read never blocks
/// past the deadline, so a silent terminal fails the test instead of hanging it).
pub fn read_until(master: &mut std::fs::File, want: &str, seen: &mut String) {
    if !read_within(master, want, seen, 60) {
        panic!("no {want:?} in {seen:?}");
    }
}

/// [`read_until`] for at most `secs` seconds; whether `want` came.
pub fn read_within(master: &mut std::fs::File, want: &str, seen: &mut String, secs: u64) -> bool {
    use std::io::Read;
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut fds = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) if left.is_zero() => return false,
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll on the terminal: {e}"),
        }
        match master.read(&mut buf) {
            Ok(0) => panic!("terminal closed before {want:?}: {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("terminal closed before {want:?} ({e}): {seen:?}"),
        }
    }
    true
}

/// Waits at most `secs` for `child` to end; kills it and fails the test when it does not.
pub fn wait_within(
    child: &mut std::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Gives the terminal of pty `master` a new size (its command gets SIGWINCH).
pub fn set_winsize(master: &std::fs::File, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on our own pty master with a valid winsize.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0);
}

/// A test server on 127.0.0.1: a Python script that writes the port it listens on to the file
/// named by its first argument. Killed when dropped.
pub struct PyServer {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `script` with a port file and `args`, and waits until it listens.
pub fn py_server(script: &str, args: &[&std::ffi::OsStr]) -> PyServer {
    py_server_with(Command::new("python3"), script, args)
}

/// [`py_server`] started by `python` (a `python3` command, perhaps run through `ip netns exec`).
pub fn py_server_with(mut python: Command, script: &str, args: &[&std::ffi::OsStr]) -> PyServer {
    let port_file = std::env::temp_dir().join(unique("paddock-test-port"));
    let mut server = PyServer {
        child: python
            .args(["-c", script])
            .arg(&port_file)
            .args(args)
            .spawn()
            .unwrap(),
        port: 0,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            let _ = std::fs::remove_file(&port_file);
            server.port = p.trim().parse().unwrap();
            return server;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the test server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Python's static file server (HTTP/1.1, keep-alive) for a directory, plain or TLS.
const STATIC_SERVER: &str = r#"
import functools, http.server, os, ssl, sys
port_file, root, cert, key = sys.argv[1:5]
bind = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1"
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer((bind, 0), functools.partial(H, directory=root))
if cert != "-":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
"#;

/// Serves the files of `root` on 127.0.0.1, over TLS with `(cert, key)` when given.
pub fn static_server(root: &Path, tls: Option<(&Path, &Path)>) -> PyServer {
    let (cert, key) = tls.unwrap_or((Path::new("-"), Path::new("-")));
    py_server(
        STATIC_SERVER,
        &[root.as_os_str(), cert.as_os_str(), key.as_os_str()],
    )
}

/// A test CA and a server certificate for `names` signed by it, as PEM files in `dir`:
/// (`NAME-ca/ca.pem`, `NAME.pem`, `NAME.key`).
pub fn test_certificates(dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("paddock test CA {name}"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let ca_dir = dir.join(format!("{name}-ca"));
    std::fs::create_dir_all(&ca_dir).unwrap();
    let paths = (
        ca_dir.join("ca.pem"),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
