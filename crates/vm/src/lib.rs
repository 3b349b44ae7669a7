//! The microVM backend: each sandbox is a guest with its own kernel under QEMU's `microvm`
//! machine (KVM where it really works, software emulation otherwise), with no network device.
//!
//! The host side starts, per sandbox: the vsock device (`vhost-device-vsock`, a vhost-user
//! backend that maps guest vsock ports to Unix sockets here), one `virtiofsd` per shared folder,
//! and the VMM. The guest's pid 1 is `paddock-guest` (see that crate), reached only over vsock:
//! the boot connection (setup, ready, power-off), exec connections (a command's streams as
//! frames), and the proxy port, which arrives here as a Unix socket the egress proxy accepts
//! from. A guest connection to any other host port finds no socket and is refused.

pub mod accel;
pub mod artifacts;
mod confine;
pub mod cpio;
mod instance;
pub mod vmm;

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcStdio};
use std::time::{Duration, Instant, SystemTime};

pub use paddock_core::tools::{GUEST_BINARY, GUEST_ENV};
use paddock_core::tools::{find_guest, find_program, is_static_elf};
use paddock_core::{
    Backend, BackendError, Instance, Launch, Network, Probe, ProbeItem, RemoteSession, SandboxSpec,
    StartContext,
};
use paddock_wire::Report;
use paddock_wire::vm::{BOOT_PORT, EXEC_PORT, Frame, PROXY_PORT, Setup, SharedFolder};
use rustix::event::{PollFd, PollFlags, poll};

pub use crate::accel::KvmStatus;
use crate::artifacts::Artifacts;
pub use crate::instance::VmInstance;
use crate::instance::{Parts, Procs, console_tail};
use crate::vmm::{Accel, Qemu, VmConfig, Vmm};

/// Guest RAM when `--memory` is not given.
const DEFAULT_MEMORY_MIB: u64 = 2048;
/// vCPUs when `--cpus` is not given.
const DEFAULT_CPUS: u32 = 2;
/// Size of a sandbox's disk when `--disk` is not given.
const DEFAULT_DISK: u64 = 16 << 30;
/// The unprivileged user the VMM runs as once it has opened its files and sockets.
const VMM_USER: &str = "nobody";

/// The ids the VMM of an ordinary user's sandbox takes once it has opened its files, in its
/// user namespace: host ids of the user's subordinate range that no sandbox's file server uses
/// (the sandboxes' `nobody`, 65534 inside them, at most).
const VMM_USER_MAPPED: &str = "65535:65535";
/// The guest's vsock address (one per VM; each VM has its own vsock device).
const GUEST_CID: u32 = 3;

/// The programs the backend drives.
#[derive(Debug, Clone)]
struct Tools {
    qemu: Option<PathBuf>,
    qemu_img: Option<PathBuf>,
    virtiofsd: Option<PathBuf>,
    vsock: Option<PathBuf>,
    guest: Option<PathBuf>,
}

impl Tools {
    fn find() -> Tools {
        Tools {
            qemu: find_program("qemu-system-x86_64"),
            qemu_img: find_program("qemu-img"),
            virtiofsd: find_program("virtiofsd"),
            vsock: find_program("vhost-device-vsock"),
            guest: find_guest(),
        }
    }
}

/// The microVM backend.
#[derive(Debug, Clone)]
pub struct VmBackend {
    tools: Tools,
}

impl VmBackend {
    /// Finds QEMU, virtiofsd, the vsock device and the guest helper.
    pub fn new() -> VmBackend {
        VmBackend {
            tools: Tools::find(),
        }
    }

    /// What is known about KVM here without booting (or the cached boot probe).
    pub fn kvm(&self) -> KvmStatus {
        accel::cached().unwrap_or_else(accel::quick)
    }

    /// Verifies KVM by booting the prepared guest of the image at `rootfs` (cached).
    pub fn kvm_verified(&self, rootfs: &Path) -> KvmStatus {
        if let Some(s) = accel::cached() {
            return s;
        }
        let quick = accel::quick();
        if !accel::device_usable() {
            return quick;
        }
        let (Some(qemu), Some(a)) = (&self.tools.qemu, Artifacts::find(rootfs)) else {
            return quick;
        };
        let Some(guest) = &self.tools.guest else {
            return quick;
        };
        let Ok(dir) = tempfile::Builder::new().prefix("paddock-kvm-").tempdir() else {
            return quick;
        };
        let initrd = dir.path().join("initrd");
        if write_initrd(&a, guest, &initrd).is_err() {
            return quick;
        }
        accel::probe(qemu, &a.kernel(), &initrd)
    }
}

impl Default for VmBackend {
    fn default() -> Self {
        VmBackend::new()
    }
}

fn item(name: &str, found: Option<&PathBuf>, fix: &str) -> ProbeItem {
    ProbeItem {
        name: name.into(),
        ok: found.is_some(),
        detail: found
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "not found".into()),
        fix: found.is_none().then(|| fix.to_owned()),
        required: true,
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    BackendError::io(what)
}

fn layer(layer: &str, message: impl Into<String>) -> BackendError {
    BackendError::Layer {
        layer: layer.into(),
        message: message.into(),
    }
}

/// The initramfs: the image's modules archive, then the guest helper as `/init`.
fn write_initrd(a: &Artifacts, guest: &Path, out: &Path) -> std::io::Result<()> {
    let mut data = fs::read(a.modules())?;
    let mut c = cpio::Cpio::new();
    c.file("init", 0o755, &fs::read(guest)?);
    data.extend_from_slice(&c.finish());
    fs::write(out, data)
}

/// Adds to a failed boot's error which device helpers had already ended (a virtiofsd whose own
/// sandboxing failed leaves QEMU only a refused connection to report).
fn name_ended_helpers(e: BackendError, helpers: &mut [(String, Child)]) -> BackendError {
    let ended: Vec<String> = helpers
        .iter_mut()
        .filter_map(|(what, c)| {
            c.try_wait()
                .ok()
                .flatten()
                .map(|s| format!("{what} had ended ({s})"))
        })
        .collect();
    match e {
        BackendError::Layer { layer, message } if !ended.is_empty() => BackendError::Layer {
            layer,
            message: format!("{message}; {}", ended.join("; ")),
        },
        e => e,
    }
}

/// Makes `cmd` join, before any other step of its start (while it is still root in the host's
/// namespaces), the cgroups whose `cgroup.procs` files `join` holds open. Accounting only: a
/// refusal does not stop the VM.
fn join_cgroups(cmd: &mut Command, join: &[OwnedFd]) {
    let join: Vec<i32> = join.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    // SAFETY: write is async-signal-safe; the child execs right after its other steps.
    unsafe {
        cmd.pre_exec(move || {
            // "0" is the writing process.
            for fd in &join {
                libc::write(*fd, b"0".as_ptr().cast(), 1);
            }
            Ok(())
        });
    }
}

/// Starts a helper (or the VMM) with its output appended to `log`. It dies with this process:
/// the parent-death signal is set last, after any change of ids, which would clear it.
fn spawn_helper(cmd: &mut Command, log: &Path, what: &str) -> Result<Child, BackendError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("cannot open {}", log.display())))?;
    let log2 = log
        .try_clone()
        .map_err(io("cannot duplicate the log descriptor"))?;
    cmd.stdin(ProcStdio::null())
        .stdout(ProcStdio::from(log))
        .stderr(ProcStdio::from(log2))
        .env_remove("RUST_LOG");
    // SAFETY: prctl is async-signal-safe; the child execs right after.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(io(format!(
        "cannot start {what} or confine it (its namespaces, user ids, seccomp filter: see docs/architecture.md)"
    )))
}

/// Runs `cmd` as the child of a small pid 1 in a new pid namespace. The VMM drops to an
/// unprivileged user, which clears its parent-death signal; pid 1 (a shell that keeps its
/// credentials) still dies with the supervisor, and the kernel then kills everything in the
/// namespace, the VMM included. The VMM also sees no other process of the host. In user mode
/// (`user_mode`) the namespaces are owned by a user namespace of their own where the user is
/// root (so QEMU may `chroot`) and its subordinate ids follow (so QEMU may then drop to one).
fn in_pid_namespace(cmd: &Command, user_mode: bool) -> Command {
    let mut c = Command::new("unshare");
    if user_mode {
        // A user namespace of its own where the user is root (the pid namespace and QEMU's
        // chroot need that) and the user's subordinate ids are 1 and up (the distribution's
        // newuidmap maps them), so that QEMU can then drop to one of them.
        c.args(["--map-root-user", "--map-auto"]);
    }
    c.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--",
        "sh",
        "-c",
        "\"$@\"; exit $?",
        "sh",
    ])
    .arg(cmd.get_program())
    .args(cmd.get_args());
    c
}

/// Waits for a helper to create its socket (virtiofsd's is made by root before it starts, so
/// for it this only checks that it has not already ended, as when its own sandboxing fails).
fn wait_socket(path: &Path, child: &mut Child, what: &str, log: &Path) -> Result<(), BackendError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let last = text.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            return Err(layer(
                "vm",
                format!("{what} exited before it was ready ({status}): {last}"),
            ));
        }
        if path.exists() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(layer(
                "vm",
                format!("{what} did not create {} in 10 s", path.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until no process holds a lock on `disk`. A VMM that was just killed (its supervisor
/// died) keeps its image locks until it has finished exiting, which under load takes a while;
/// starting a new VMM before then fails on QEMU's image lock.
fn wait_disk_free(disk: &Path, limit: Duration) -> Result<(), BackendError> {
    let f = fs::File::open(disk).map_err(io(format!("cannot open {}", disk.display())))?;
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: flock is plain data; zeroed is a valid value (l_type is set below).
        let mut lk: libc::flock = unsafe { std::mem::zeroed() };
        lk.l_type = libc::F_WRLCK as libc::c_short;
        lk.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: F_OFD_GETLK reads and writes the flock we own.
        let rc = unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::F_OFD_GETLK,
                &mut lk,
            )
        };
        if rc != 0 || lk.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(layer(
                "vm disk",
                format!(
                    "{} is still locked by another VMM after {} s; is the sandbox running elsewhere?",
                    disk.display(),
                    limit.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How the socket directories of sandbox `name` begin (in the temporary directory).
fn run_dir_prefix(name: &str) -> String {
    format!("paddock-vm-{name}-")
}

/// Random characters in a run directory's name.
const RUN_DIR_RAND: usize = 6;

/// Removes the socket directories a previous run of sandbox `name` left behind when its
/// supervisor was killed. Call with the sandbox's lock held (then none of them is in use).
fn remove_stale_run_dirs(name: &str) {
    let prefix = run_dir_prefix(name);
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if rest.len() == RUN_DIR_RAND && rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The file name of a sandbox's disk layer (qcow2 over the image's disk) in its directory.
const DISK_LAYER: &str = "vm-disk.qcow2";

/// Gives a stopped sandbox's disk the size `bytes`: a disk that exists grows (the guest grows
/// its file system to fill it at the next boot); it cannot shrink. With no disk yet, the next
/// start makes one of the size asked (the caller records it). Call with the sandbox's lock held.
fn resize_disk(dir: &Path, bytes: u64) -> Result<(), BackendError> {
    let disk = dir.join(DISK_LAYER);
    let Ok(mut f) = fs::File::open(&disk) else {
        return Ok(());
    };
    // A qcow2 header: magic "QFI\xfb", then the virtual size as a big-endian u64 at byte 24.
    let mut head = [0u8; 32];
    std::io::Read::read_exact(&mut f, &mut head)
        .map_err(io(format!("cannot read {}", disk.display())))?;
    let now = match (&head[..4], head[24..32].try_into()) {
        (b"QFI\xfb", Ok(size)) => u64::from_be_bytes(size),
        _ => {
            return Err(layer(
                "vm disk",
                format!("{} is not a qcow2 disk", disk.display()),
            ));
        }
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if bytes < now {
        return Err(layer(
            "vm disk",
            format!(
                "the disk is {} MB and can only grow; `paddock reset {name}` empties it (its installed packages go), then any size can be given",
                now / 1_000_000
            ),
        ));
    }
    if bytes == now {
        return Ok(());
    }
    let qemu_img = find_program("qemu-img").ok_or_else(|| {
        layer(
            "vm disk",
            "qemu-img is missing (apt-get install qemu-utils)",
        )
    })?;
    // The sandbox lock is ours, so a lock on the disk belongs to a VMM still exiting.
    wait_disk_free(&disk, Duration::from_secs(60))?;
    run_qemu_img(
        Command::new(qemu_img)
            .args(["resize", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg(bytes.to_string()),
    )
}

/// Runs a `qemu-img` command line; its error output becomes the error.
fn run_qemu_img(cmd: &mut Command) -> Result<(), BackendError> {
    let out = cmd.output().map_err(io("cannot run qemu-img"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(layer(
        "vm disk",
        format!(
            "qemu-img failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// Creates a directory of the run directory with exactly `mode` (the umask does not apply).
fn run_subdir(d: &Path, mode: u32) -> Result<(), BackendError> {
    fs::create_dir(d).map_err(io(format!("cannot create {}", d.display())))?;
    fs::set_permissions(d, fs::Permissions::from_mode(mode))
        .map_err(io(format!("cannot set the mode of {}", d.display())))
}

/// How a boot that never reached the guest helper is reported (and recognised for a retry).
const BOOT_TIMEOUT: &str = "the guest did not come up within";

/// The vsock device's directory in the run directory: its sockets, and the host sockets the
/// guest may reach (`vm.vsock_PORT`).
const DEVICE_DIR: &str = "vsock";

/// The vsock device's host socket (for connections to the guest), in its directory.
const VSOCK_SOCKET: &str = "vm.vsock";

/// The vsock device's host socket of the run directory `run`.
fn device_socket(run: &Path) -> PathBuf {
    run.join(DEVICE_DIR).join(VSOCK_SOCKET)
}

/// Opens a connection to `port` in the guest through the vsock device's host socket.
fn connect_guest(uds: &Path, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // Read exactly the answer line; what follows belongs to the connection.
    while line.len() < 64 {
        match std::io::Read::read(&mut s, &mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    if line.starts_with(b"OK ") {
        Ok(s)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "the guest refused port {port}: {:?}",
                String::from_utf8_lossy(&line)
            ),
        ))
    }
}

/// Waits until `listener` has a connection, or the VMM exits, or `limit` passes.
fn accept_boot(
    listener: &UnixListener,
    vmm_pidfd: &OwnedFd,
    limit: Duration,
    console: &Path,
    log: &Path,
) -> Result<UnixStream, BackendError> {
    let tails = || {
        let text = fs::read_to_string(log).unwrap_or_default();
        let last: Vec<&str> = text.lines().rev().take(4).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        if last.is_empty() {
            console_tail(console)
        } else {
            format!("{}; vmm: {}", console_tail(console), last.join(" | "))
        }
    };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(layer(
                "vm",
                format!("{BOOT_TIMEOUT} {} s ({})", limit.as_secs(), tails()),
            ));
        }
        let mut fds = [
            PollFd::new(listener, PollFlags::IN),
            PollFd::new(vmm_pidfd, PollFlags::IN),
        ];
        let wait = rustix::time::Timespec::try_from(left).unwrap_or_default();
        match poll(&mut fds, Some(&wait)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io("poll")(e.into())),
        }
        if !fds[1].revents().is_empty() {
            return Err(layer(
                "vm",
                format!("the VM exited during boot ({})", tails()),
            ));
        }
        if !fds[0].revents().is_empty() {
            let (s, _) = listener.accept().map_err(io("accepting the guest"))?;
            return Ok(s);
        }
    }
}

/// A shared folder's virtiofsd arguments: sandboxed to its view of the folder (`view`), guest
/// writes owned by the folder's owner on the host (root of virtiofsd's user namespace, see
/// [`confine::virtiofsd`]), the owner shown as the agent user inside. Other host ids are not
/// mapped there: their files appear as `nobody`.
fn virtiofsd_args(view: &Path, listener: i32, read_only: bool) -> Vec<String> {
    let mut a = vec![
        format!("--shared-dir={}", view.display()),
        format!("--fd={listener}"),
        "--sandbox=namespace".into(),
        "--cache=auto".into(),
        "--seccomp=kill".into(),
        "--log-level=error".into(),
        "--translate-uid=squash-guest:0:0:4294967295".into(),
        "--translate-gid=squash-guest:0:0:4294967295".into(),
        "--translate-uid=host:0:1000:1".into(),
        "--translate-gid=host:0:1000:1".into(),
    ];
    if read_only {
        a.push("--readonly".into());
    }
    a
}

impl Backend for VmBackend {
    fn id(&self) -> &'static str {
        "vm"
    }

    fn docker(&self) -> Result<(), String> {
        Ok(())
    }

    fn default_limits(&self, _state: &std::path::Path) -> paddock_policy::Limits {
        // A guest's RAM and disk are its own kernel's to manage: fixed sizes, not shares of the
        // host's.
        paddock_policy::Limits {
            cpus: None,
            memory: Some(paddock_policy::ByteSize(DEFAULT_MEMORY_MIB << 20)),
            pids: Some(paddock_policy::DEFAULT_PIDS),
            disk: Some(paddock_policy::ByteSize(DEFAULT_DISK)),
        }
    }

    fn prepare_image(
        &self,
        rootfs: &Path,
        idmap: &paddock_core::IdMap,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Option<String>, BackendError> {
        // The kernel, initramfs and disk, where this backend can run.
        if !self.probe().usable() {
            return Ok(None);
        }
        let a = Artifacts::prepare(rootfs, idmap, progress)
            .map_err(|e| BackendError::Image(e.to_string()))?;
        Ok(Some(format!(
            "prepared the image for the vm backend (kernel {})",
            a.info.kernel_release
        )))
    }

    fn update_limits(
        &self,
        _sandbox: &paddock_core::SandboxName,
        _limits: &paddock_policy::Limits,
    ) -> Vec<String> {
        vec!["the VM's memory, CPUs and process limit are set when it boots".into()]
    }

    fn resize_disk(&self, sandbox_dir: &Path, bytes: u64) -> Result<(), BackendError> {
        resize_disk(sandbox_dir, bytes)
    }

    fn reset_layer(&self, sandbox_dir: &Path) -> Result<(), BackendError> {
        // The disk layer: the next start makes a fresh one over the image's disk.
        let disk = sandbox_dir.join(DISK_LAYER);
        if disk.exists() {
            fs::remove_file(&disk).map_err(io(format!("cannot reset {}", disk.display())))?;
        }
        Ok(())
    }

    fn remove_leftovers(&self, sandbox: &paddock_core::SandboxName) {
        // A run whose supervisor was killed may have left its socket directory.
        remove_stale_run_dirs(sandbox.as_str());
    }

    fn probe(&self) -> Probe {
        let t = &self.tools;
        let mut items = vec![
            item(
                "QEMU (qemu-system-x86_64)",
                t.qemu.as_ref(),
                "apt-get install qemu-system-x86",
            ),
            item(
                "qemu-img",
                t.qemu_img.as_ref(),
                "apt-get install qemu-utils",
            ),
            item(
                "virtiofsd",
                t.virtiofsd.as_ref(),
                "apt-get install libseccomp-dev libcap-ng-dev && cargo install --locked --root /usr/local virtiofsd",
            ),
            item(
                "vhost-device-vsock",
                t.vsock.as_ref(),
                "cargo install --locked --root /usr/local vhost-device-vsock",
            ),
        ];
        let guest_ok = t.guest.as_ref().is_some_and(|g| is_static_elf(g));
        items.push(ProbeItem {
            name: "guest helper (paddock-guest)".into(),
            ok: guest_ok,
            detail: match &t.guest {
                Some(g) if guest_ok => format!("{} (static)", g.display()),
                Some(g) => format!("{} is not a static executable", g.display()),
                None => "not found next to paddock".into(),
            },
            fix: (!guest_ok).then(|| "run ./setup.sh (it builds paddock-guest statically)".into()),
            required: true,
        });
        let kvm = self.kvm();
        items.push(ProbeItem {
            name: "KVM (hardware acceleration)".into(),
            ok: kvm.works,
            detail: if kvm.works {
                kvm.detail
            } else {
                format!("{}; the vm backend falls back to software emulation (TCG), 10-20× slower", kvm.detail)
            },
            fix: (!kvm.works).then(|| {
                "use a host with hardware virtualisation (bare metal, or a cloud VM with nested virtualisation)".into()
            }),
            required: false,
        });
        if paddock_confine::user::is_user_mode() {
            items.push(paddock_confine::user::user_mode_item());
        }
        Probe {
            backend: "vm",
            items,
        }
    }

    fn exec(
        &self,
        spec: &SandboxSpec,
        handle: paddock_core::ExecHandle,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        let conn = UnixStream::from(handle.fd);
        // Generous: a guest under emulation starts programs slowly.
        Ok(Box::new(paddock_core::RemoteExec::start(
            conn,
            &launch.command(spec.no_new_privs),
            Duration::from_secs(60),
        )?))
    }

    fn start(
        &self,
        ctx: &StartContext,
        spec: &SandboxSpec,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        match self.start_once(ctx, spec, launch) {
            // A guest that never came up (seen now and then under emulation: the console stops
            // after the kernel's early lines) gets one more try; its console is kept.
            Err(BackendError::Layer { layer, message })
                if layer == "vm" && message.starts_with(BOOT_TIMEOUT) =>
            {
                let console = ctx.sandbox_dir.join("console.log");
                let _ = fs::rename(&console, ctx.sandbox_dir.join("console.failed.log"));
                eprintln!("paddock: {message}; starting the VM once more");
                self.start_once(ctx, spec, launch)
            }
            other => other,
        }
    }
}

impl VmBackend {
    /// One attempt at starting the VM (see [`Backend::start`]).
    fn start_once(
        &self,
        ctx: &StartContext,
        spec: &SandboxSpec,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        let probe = self.probe();
        if let Some(reason) = probe.reason() {
            return Err(BackendError::Unavailable {
                backend: "vm",
                reason,
            });
        }
        // An ordinary user's VM: every helper runs as the user, in user namespaces where the
        // user is root and no other host id exists (`confine`), and QEMU without a change of
        // user.
        let user_mode = paddock_confine::user::is_user_mode();
        // The image must be this mode's (its disk is made from its tree with the ids it was
        // built with); `--disk` is a qcow2 layer here, which a user may size.
        paddock_confine::user::sandbox_ids(
            "vm",
            &ctx.image,
            &paddock_policy::Limits {
                disk: None,
                ..spec.limits.clone()
            },
        )?;
        let t = &self.tools;
        let (Some(qemu), Some(qemu_img), Some(virtiofsd), Some(vsockd), Some(guest)) =
            (&t.qemu, &t.qemu_img, &t.virtiofsd, &t.vsock, &t.guest)
        else {
            return Err(BackendError::Unavailable {
                backend: "vm",
                reason: "a required program is missing; run `paddock doctor`".into(),
            });
        };
        let artifacts = Artifacts::prepare(&ctx.image_rootfs, &ctx.image.idmap, &mut |m| {
            eprintln!("paddock: {m}")
        })
        .map_err(|e| layer("vm image", e.to_string()))?;

        let kvm = self.kvm_verified(&ctx.image_rootfs);
        let accel = if kvm.works { Accel::Kvm } else { Accel::Tcg };
        if accel == Accel::Tcg {
            eprintln!(
                "paddock: WARNING: no usable KVM here ({}); the VM runs under software emulation (TCG), 10-20x slower",
                kvm.detail
            );
        }

        // Workspace and mounts: each a directory shared by its own virtiofsd.
        let mut shares: Vec<(PathBuf, String, bool, u32, u32)> = Vec::new();
        let mut add = |host: &paddock_policy::AbsPath,
                       target: &paddock_policy::AbsPath,
                       ro: bool,
                       what: &str|
         -> Result<(), BackendError> {
            let (canonical, meta) = paddock_core::shared_path(host, what)?;
            if !meta.is_dir() {
                return Err(BackendError::Io {
                    what: format!(
                        "{what} {host} is not a directory (the vm backend shares directories)"
                    ),
                    source: std::io::ErrorKind::NotADirectory.into(),
                });
            }
            shares.push((
                canonical,
                target.as_str().to_owned(),
                ro,
                meta.uid(),
                meta.gid(),
            ));
            Ok(())
        };
        add(&spec.workspace, &spec.workspace, false, "workspace")?;
        for m in &spec.mounts {
            add(&m.host, &m.sandbox, m.read_only, "mount source")?;
        }
        // Git directories pinned, hooks and config read-only: made in each virtiofsd's own
        // mount namespace on the host, where root in the guest cannot undo them.
        let pins = paddock_core::gitguard::for_spec(spec)?;
        // Review mode: the workspace's virtiofsd serves an overlay over it, whose upper layer
        // keeps what the guest writes (as the folder's owner, as virtiofsd writes).
        let review = match (spec.review, shares.first()) {
            (true, Some((dir, _, _, uid, gid))) => Some(paddock_confine::rootfs::prepare_review(
                &ctx.sandbox_dir,
                dir,
                (!user_mode).then(|| (*uid, confine::share_group(*uid, *gid))),
            )?),
            _ => None,
        };

        // The sandbox's disk: a copy-on-write layer over the image's disk.
        let disk = ctx.sandbox_dir.join(DISK_LAYER);
        let base_id = ctx.sandbox_dir.join("vm-disk.base");
        if disk.exists() {
            let made_over = fs::read_to_string(&base_id).unwrap_or_default();
            if made_over.trim() != artifacts.info.id {
                return Err(layer(
                    "vm disk",
                    format!(
                        "the image {} was rebuilt after this sandbox's disk was made over it; `paddock reset {}` starts the disk afresh from the new image (the workspace is untouched)",
                        ctx.image.name, spec.name
                    ),
                ));
            }
        } else {
            let size = spec
                .limits
                .disk
                .map(|d| d.0)
                .unwrap_or(DEFAULT_DISK)
                .max(artifacts.info.disk_bytes);
            let tmp = ctx.sandbox_dir.join("vm-disk.qcow2.tmp");
            run_qemu_img(
                Command::new(qemu_img)
                    .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                    .arg(artifacts.disk())
                    .arg(&tmp)
                    .arg(size.to_string()),
            )?;
            fs::write(&base_id, &artifacts.info.id).map_err(io("cannot record the disk's base"))?;
            fs::rename(&tmp, &disk).map_err(io("cannot move the disk layer into place"))?;
        }
        // The sandbox lock is ours, so a lock on the disk belongs to a VMM still exiting.
        wait_disk_free(&disk, Duration::from_secs(60))?;

        // Sockets live in a short private directory (Unix socket paths are limited to 108
        // bytes); it is removed with the instance.
        let prefix = run_dir_prefix(spec.name.as_str());
        remove_stale_run_dirs(spec.name.as_str());
        let run = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(RUN_DIR_RAND)
            .tempdir()
            .map_err(io("cannot create the VM's socket directory"))?;
        // Layout: the run directory is root's and only traversable (see `confine`).
        //   initrd, empty/             the VMM's (it confines itself to `empty` once started)
        //   vsock/                     the vsock device's sockets (its uid, 0700)
        //   vsock-root/                mount point of the device's own root
        //   fsN/fs.sock, fsN/share/    virtiofsd N's listening socket (made here, handed over
        //                              as a descriptor) and view of its share; root's, so the
        //                              share's owner, as whom virtiofsd runs, can swap neither
        let helper =
            paddock_core::idmap::helper_uid(spec.name.as_str(), paddock_core::idmap::Helper::Vsock);
        fs::set_permissions(run.path(), fs::Permissions::from_mode(0o711))
            .map_err(io("cannot set the socket directory's mode"))?;
        let device_dir = run.path().join(DEVICE_DIR);
        run_subdir(&device_dir, 0o700)?;
        if !user_mode {
            std::os::unix::fs::chown(&device_dir, Some(helper), Some(helper))
                .map_err(io("cannot give the vsock device its directory"))?;
        }
        let device_root = run.path().join("vsock-root");
        fs::create_dir(&device_root).map_err(io("cannot create the vsock device's root"))?;
        let initrd = run.path().join("initrd");
        // QEMU confines itself here (an empty directory) once it has opened its files.
        let jail = run.path().join("empty");
        fs::create_dir(&jail).map_err(io("cannot create the VMM's empty root"))?;
        write_initrd(&artifacts, guest, &initrd).map_err(io("cannot write the initramfs"))?;
        let uds = device_socket(run.path());
        // The two host sockets the guest may reach, connectable by the vsock device's user.
        let for_device = |p: &Path| -> Result<(), BackendError> {
            if user_mode {
                return Ok(());
            }
            std::os::unix::fs::chown(p, Some(helper), Some(helper)).map_err(io(format!(
                "cannot hand {} to the vsock device",
                p.display()
            )))
        };
        let boot_path = device_dir.join(format!("{VSOCK_SOCKET}_{BOOT_PORT}"));
        let boot_listener =
            UnixListener::bind(&boot_path).map_err(io("cannot listen for the guest"))?;
        for_device(&boot_path)?;
        let egress = match spec.network {
            Network::Proxy => {
                let path = device_dir.join(format!("{VSOCK_SOCKET}_{PROXY_PORT}"));
                let l = UnixListener::bind(&path)
                    .map_err(io("cannot listen for the guest's proxy connections"))?;
                for_device(&path)?;
                Some(OwnedFd::from(l))
            }
            Network::None => None,
        };
        let log = ctx.sandbox_dir.join("vm.log");
        let console_log = ctx.sandbox_dir.join("console.log");
        let _ = fs::write(&console_log, b"");
        let _ = fs::write(&log, b"");

        // What the VM uses, for `paddock ls`: the VMM and its helpers run in the sandbox's host
        // cgroups, without limits of their own (the VM's are its RAM, its vCPUs and the
        // guest's pids cgroup). Accounting only: where cgroups cannot be made, it goes without.
        let accounting = paddock_confine::cgroup::SandboxCgroups::create(
            &paddock_confine::cgroup::CgroupHost::detect(),
            spec.name.as_str(),
            &paddock_policy::Limits::default(),
        )
        .ok();
        let join: Vec<OwnedFd> = accounting
            .iter()
            .flat_map(|c| c.dirs.iter())
            .filter_map(|d| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .ok()
                    .map(OwnedFd::from)
            })
            .collect();
        // The device helpers start together; the VMM needs all their sockets.
        let mut procs = Procs::default();
        procs.cgroups = accounting;
        let vsock_socket = device_dir.join("vsock.sock");
        let mut sockets = vec![vsock_socket.clone()];
        // The vsock device parses what the guest sends: it runs as the sandbox's helper user,
        // in a root of its own that holds its sockets and the system's programs only.
        let mut device = Command::new(vsockd);
        device
            .arg(format!("--guest-cid={GUEST_CID}"))
            .arg(format!("--socket={}", vsock_socket.display()))
            .arg(format!("--uds-path={}", uds.display()));
        join_cgroups(&mut device, &join);
        let device_ids = if user_mode {
            confine::DeviceIds::OwnNamespace(confine::owner_namespace(
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )?)
        } else {
            confine::DeviceIds::Helper(helper)
        };
        confine::vsock_device(&mut device, &device_root, &device_dir, vsockd, device_ids)?;
        procs.helpers.push((
            "vhost-device-vsock".into(),
            spawn_helper(&mut device, &log, "vhost-device-vsock")?,
        ));
        let mut tags = Vec::new();
        let mut folders = Vec::new();
        for (i, (dir, target, ro, uid, gid)) in shares.iter().enumerate() {
            let own = run.path().join(format!("fs{i}"));
            let view = own.join("share");
            run_subdir(&own, 0o711)?;
            run_subdir(&view, 0o711)?;
            let sock = own.join("fs.sock");
            let listener = OwnedFd::from(
                UnixListener::bind(&sock).map_err(io("cannot listen for the VMM's file server"))?,
            );
            let mine: Vec<_> = pins
                .iter()
                .filter(|(p, _)| p.path.starts_with(dir))
                .map(|(p, _)| (p.path.clone(), p.read_only))
                .collect();
            // In user mode virtiofsd runs as the user whoever owns the folder (a user can map
            // only its own ids): the guest's files there are the user's.
            let (uid, group) = if user_mode {
                (
                    rustix::process::geteuid().as_raw(),
                    rustix::process::getegid().as_raw(),
                )
            } else {
                (*uid, confine::share_group(*uid, *gid))
            };
            let mut cmd = confine::by_descriptor(virtiofsd)?;
            cmd.args(virtiofsd_args(
                &view,
                std::os::fd::AsRawFd::as_raw_fd(&listener),
                *ro,
            ));
            join_cgroups(&mut cmd, &join);
            confine::virtiofsd(
                &mut cmd,
                &confine::Share {
                    dir,
                    view: &view,
                    read_only: *ro,
                    pins: &mine,
                    review: if i == 0 { review.as_deref() } else { None },
                },
                listener,
                confine::owner_namespace(uid, group)?,
                user_mode,
            )?;
            procs.helpers.push((
                format!("virtiofsd for {}", dir.display()),
                spawn_helper(&mut cmd, &log, "virtiofsd")?,
            ));
            sockets.push(sock.clone());
            let tag = format!("fs{i}");
            tags.push((tag.clone(), sock));
            folders.push(SharedFolder {
                tag,
                target: target.clone(),
                read_only: *ro,
            });
        }
        for (sock, (what, child)) in sockets.iter().zip(procs.helpers.iter_mut()) {
            wait_socket(sock, child, what, &log)?;
        }

        let memory_mib = spec
            .limits
            .memory
            .map(|m| (m.0 >> 20).max(256))
            .unwrap_or(DEFAULT_MEMORY_MIB);
        let cpus = spec
            .limits
            .cpus
            .map(|c| c.0.div_ceil(1000).max(1))
            .unwrap_or(DEFAULT_CPUS);
        let mut cmdline = "console=ttyS0 quiet panic=-1 reboot=t pci=off".to_owned();
        if accel == Accel::Tcg
            && let Some(khz) = accel::host_tsc_khz()
        {
            cmdline.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
        }
        let cfg = VmConfig {
            name: spec.name.to_string(),
            accel,
            cpus,
            memory_mib,
            kernel: artifacts.kernel(),
            initrd,
            cmdline,
            disk,
            vsock: vsock_socket,
            shares: tags,
            console_log: console_log.clone(),
            jail_dir: Some(jail.clone()),
            // In user mode the VMM's user namespace maps the user's subordinate ids from 1
            // (`in_pid_namespace`): it ends as the last of them, as root mode's ends as nobody.
            run_as: Some(if user_mode { VMM_USER_MAPPED } else { VMM_USER }.into()),
        };
        let vmm = Qemu::at(qemu.clone());
        let mut vmm_cmd = in_pid_namespace(&vmm.command(&cfg), user_mode);
        join_cgroups(&mut vmm_cmd, &join);
        let child = spawn_helper(&mut vmm_cmd, &log, "the VMM")?;
        let vmm_pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_child(&child),
            rustix::process::PidfdFlags::empty(),
        )
        .map_err(|e| io("pidfd_open")(e.into()))?;
        procs.vmm = Some(child);

        let boot_limit = match accel {
            Accel::Kvm => Duration::from_secs(60),
            Accel::Tcg => Duration::from_secs(90),
        };
        let mut boot = accept_boot(&boot_listener, &vmm_pidfd, boot_limit, &console_log, &log)
            .map_err(|e| name_ended_helpers(e, &mut procs.helpers))?;
        drop(boot_listener);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Frame::Setup(Setup {
            hostname: spec.name.to_string(),
            time_ns: now,
            root_device: "/dev/vda".into(),
            mounts: folders,
            egress: spec.network == Network::Proxy,
            pids_max: spec.limits.pids.map(u64::from),
            extra_ca: ctx.extra_ca.clone(),
            docker: spec.docker,
        })
        .write_to(&mut boot)
        .map_err(io("cannot send the setup to the guest"))?;
        // A guest that hangs in its setup (a mount that never returns) must not hang the host.
        // Its Docker Engine has a limit of its own in the guest, which names what it waited for.
        let setup_limit = match spec.docker {
            true => boot_limit + paddock_wire::vm::DOCKER_START_LIMIT + Duration::from_secs(10),
            false => boot_limit,
        };
        let _ = boot.set_read_timeout(Some(setup_limit));
        match Frame::read_from(&mut boot) {
            Ok(Some(Frame::Report(Report::Ready { .. }))) => {
                let _ = boot.set_read_timeout(None);
            }
            Ok(Some(Frame::Report(Report::SetupFailed { layer: l, message }))) => {
                return Err(layer(&format!("vm guest {l}"), message));
            }
            other => {
                return Err(layer(
                    "vm",
                    format!(
                        "the guest broke off its setup ({:?}; {})",
                        other.map(|f| f.map(|_| "unexpected frame")),
                        console_tail(&console_log)
                    ),
                ));
            }
        }

        let mut exec = connect_guest(&uds, EXEC_PORT).map_err(io("cannot reach the guest"))?;
        RemoteSession::begin(&mut exec, &launch.command(spec.no_new_privs), boot_limit)
            .map_err(|e| layer("vm", format!("the guest: {e}")))?;
        let inst = VmInstance::new(Parts {
            procs,
            vmm_pidfd,
            boot,
            exec,
            tty: launch.stdio.is_pty(),
            egress,
            run_dir: run,
            console_log,
            poweroff_grace: match accel {
                Accel::Kvm => Duration::from_secs(10),
                Accel::Tcg => Duration::from_secs(30),
            },
        })
        .map_err(io("cannot start the VM's stream relays"))?;
        Ok(Box::new(inst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_removes_the_disk_layer_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir_all(d.join("review/upper")).unwrap();
        for file in [DISK_LAYER, "lock"] {
            fs::write(d.join(file), "x").unwrap();
        }
        let vm = VmBackend::new();
        vm.reset_layer(d).unwrap();
        let mut names: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["lock", "review"]);
        vm.reset_layer(d).unwrap();
    }
}
