//! The gVisor backend: the sandbox's image runs under `runsc`, gVisor's user-space kernel, so
//! the agent's system calls are served by gVisor and never reach the host kernel directly.
//!
//! What runs, in order:
//! 1. the host side writes an OCI bundle ([`spec`]): the sandbox's overlay root, the workspace
//!    and extra folders, `/etc/hosts`, the in-sandbox helper, a user namespace mapping the
//!    sandbox's ids 0-65535 to the same unprivileged host range the namespace backend uses, and
//!    the capabilities the namespace backend keeps;
//! 2. `paddock-jail runsc` (the namespace backend's setup binary) makes a private mount
//!    namespace, mounts the overlay and the idmapped shared folders where the bundle names them,
//!    is moved into the sandbox's cgroups and becomes `runsc run` (network `none`: loopback
//!    only; platform systrap, or KVM where it works);
//! 3. inside, `paddock-guest gvisor` is the container's first process. It holds two sockets
//!    passed in by runsc (`--pass-fd`): on one the host hands it a connected socket per command
//!    (the same exec protocol a VM's helper serves over vsock), on the other it asks for one
//!    stream to the host's egress proxy per connection to `127.0.0.1:3128`. The sandbox has no
//!    host socket paths (`--host-uds` stays off) and no network device.

mod probe;
mod spec;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio as ProcStdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_confine::cgroup::{CgroupHost, SandboxCgroups};
use paddock_confine::config::{Bind, RunscConfig};
use paddock_core::tools::{find_guest, find_program, is_static_elf};
use paddock_core::{
    Backend, BackendError, Egress, ExecHandle, Execs, Exit, Instance, Launch, Network, Probe,
    RemoteSession, SandboxSpec, SessionEnd, StartContext, Streams,
};
use paddock_wire::Report;
pub use probe::{Platform, RunscInfo};
use rustix::event::{PollFd, PollFlags, poll};

/// How long runsc may take to start the sandbox and its helper.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Where the helper binary appears inside the sandbox.
const HELPER_PATH: &str = "/run/paddock/init";
/// Where the image's own sudo is bound (the helper serves `sudo` in its place: gVisor ignores
/// set-user-id bits).
const REAL_SUDO: &str = "/run/paddock/sudo";
/// Sent by the helper once it serves sessions.
const HELPER_READY: u8 = b'R';

/// The gVisor backend.
#[derive(Debug, Clone)]
pub struct GvisorBackend {
    runsc: Option<PathBuf>,
    guest: Option<PathBuf>,
    jail: PathBuf,
    kvm: bool,
}

impl GvisorBackend {
    /// Finds runsc, the helper and the jail. `kvm`: hardware KVM was verified to run a guest
    /// here (then gVisor's KVM platform is tried; otherwise systrap).
    pub fn new(kvm: bool) -> GvisorBackend {
        GvisorBackend {
            runsc: find_program("runsc")
                .or_else(|| Some(PathBuf::from("/usr/sbin/runsc")).filter(|p| p.exists())),
            guest: find_guest(),
            jail: paddock_confine::find_jail(),
            kvm,
        }
    }

    /// runsc's version and the platform this host runs it with (probed once per boot).
    pub fn runsc_info(&self) -> Option<RunscInfo> {
        self.runsc
            .as_deref()
            .map(|r| probe::runsc_info(r, self.kvm))
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    BackendError::io(what)
}

fn layer(message: impl Into<String>) -> BackendError {
    BackendError::Layer {
        layer: "gvisor".into(),
        message: message.into(),
    }
}

fn run_dir_prefix(name: &str) -> String {
    // The user's uid too: /tmp is shared, and another user's sandbox may have the same name.
    format!(
        "paddock-gvisor-{}-{name}-",
        rustix::process::geteuid().as_raw()
    )
}

/// Removes run directories left by an earlier run of sandbox `name` whose supervisor was
/// killed (their mounts went with runsc's mount namespace).
fn remove_stale_run_dirs(name: &str) {
    let prefix = run_dir_prefix(name);
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(n) = file.to_str() else { continue };
        if n.strip_prefix(&prefix)
            .is_some_and(|rest| rest.len() == 6 && !rest.contains('-'))
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A running sandbox's new limits: what `update` writes into its host cgroups now (all but the
/// process limit, which gVisor fixes at start), and what of `limits` waits for the next start.
fn live_limits(
    limits: &paddock_policy::Limits,
    update: impl FnOnce(&paddock_policy::Limits) -> Vec<String>,
) -> Vec<String> {
    let live = paddock_policy::Limits {
        pids: None,
        ..limits.clone()
    };
    let mut skipped = update(&live);
    if limits.pids.is_some() {
        skipped.push("--pids: gVisor's process limit is set at start".into());
    }
    skipped
}

/// `rel` as the sandbox sees it: the layer's copy when the sandbox replaced it, else the image's;
/// `None` when it is not a regular file, the layer deleted it, or the layer made a directory on
/// the way a symlink (the layer is the sandbox's to write: nothing there is followed).
fn image_file(upper: &Path, image: &Path, rel: &str) -> Option<PathBuf> {
    let mut at = upper.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if i + 1 == parts.len() => return m.is_file().then_some(at),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return None,
            Err(_) => break,
        }
    }
    let lower = image.join(rel);
    fs::symlink_metadata(&lower)
        .is_ok_and(|m| m.is_file())
        .then_some(lower)
}

/// A shared folder's mount point in the run directory: the jail attaches the folder there, and
/// the bundle names it as the mount's source.
fn mount_point(dir: &Path, index: usize, is_dir: bool) -> std::io::Result<PathBuf> {
    let p = dir.join(index.to_string());
    if is_dir {
        fs::create_dir(&p)?;
    } else {
        File::create(&p)?;
    }
    Ok(p)
}

/// Tail of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(6)
        .collect();
    if lines.is_empty() {
        format!("{} is empty", path.display())
    } else {
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("runsc said: {}", tail.join(" | "))
    }
}

impl Backend for GvisorBackend {
    fn id(&self) -> &'static str {
        "gvisor"
    }

    fn docker(&self) -> Result<(), String> {
        // Tried with this host's runsc (2024-07-29): with raw sockets (--net-raw), every
        // capability, a cgroup mount and no in-sandbox seccomp filter, dockerd runs and its
        // containers get a bridge, but its data cannot live on the sandbox's layer: gVisor's
        // overlay takes only a memory upper layer (overlay2), and its file server answers
        // lgetxattr on a symlink with EBADF, which the vfs driver's copy treats as fatal (every
        // container's init layer has the /etc/mtab symlink).
        Err("the gvisor backend does not run a Docker Engine: under this runsc the engine could keep its images only in memory (gVisor's overlay needs a memory upper layer, and its file server fails the vfs driver on the sandbox's layer), so they would not survive a stop; use --backend vm".into())
    }

    fn default_limits(&self, state: &Path) -> paddock_policy::Limits {
        CgroupHost::detect().enforceable(paddock_core::host_limits(state))
    }

    fn check_limits(&self, limits: &paddock_policy::Limits) -> Result<(), BackendError> {
        paddock_confine::user::check_limits(limits)
    }

    fn update_limits(
        &self,
        sandbox: &paddock_core::SandboxName,
        limits: &paddock_policy::Limits,
    ) -> Vec<String> {
        live_limits(limits, |live| {
            SandboxCgroups::update(&CgroupHost::detect(), sandbox.as_str(), live)
        })
    }

    fn resize_disk(&self, sandbox_dir: &Path, bytes: u64) -> Result<(), BackendError> {
        paddock_confine::rootfs::resize_layer(sandbox_dir, bytes)
    }

    fn reset_layer(&self, sandbox_dir: &Path) -> Result<(), BackendError> {
        paddock_confine::rootfs::reset_layer(sandbox_dir)
    }

    fn remove_leftovers(&self, sandbox: &paddock_core::SandboxName) {
        remove_stale_run_dirs(sandbox.as_str());
    }

    fn probe(&self) -> Probe {
        probe::probe(
            self.runsc.as_deref(),
            self.guest.as_deref(),
            &self.jail,
            self.kvm,
        )
    }

    fn exec(
        &self,
        spec: &SandboxSpec,
        handle: ExecHandle,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        let conn = UnixStream::from(handle.fd);
        Ok(Box::new(paddock_core::RemoteExec::start(
            conn,
            &launch.command(spec.no_new_privs),
            START_LIMIT,
        )?))
    }

    fn start(
        &self,
        ctx: &StartContext,
        spec: &SandboxSpec,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        let unavailable = |reason: String| BackendError::Unavailable {
            backend: "gvisor",
            reason,
        };
        let user = paddock_confine::user::sandbox_ids("gvisor", &ctx.image, &spec.limits)?;
        let runsc = self.runsc.clone().ok_or_else(|| {
            unavailable("runsc is not installed; run ./setup.sh or `apt-get install -t <release>-backports runsc`".into())
        })?;
        let guest = match &self.guest {
            Some(g) if is_static_elf(g) => g.clone(),
            _ => {
                return Err(unavailable(
                    "the helper paddock-guest (a static build) is missing next to paddock; run ./setup.sh".into(),
                ));
            }
        };
        if !self.jail.exists() {
            return Err(unavailable(format!(
                "{} is missing; run ./setup.sh",
                self.jail.display()
            )));
        }
        let platform = probe::runsc_info(&runsc, self.kvm).platform;
        // Nothing of the sandbox runs yet: what changes in its folders from now on is its doing.
        let run_started = paddock_confine::jail::giveback::start_time();
        let name = spec.name.as_str();
        // The ids as the jail and runsc see them: in user mode the jail's own namespace's.
        let base = if user.is_some() {
            0
        } else {
            ctx.image.idmap.base
        };
        remove_stale_run_dirs(name);

        // What the sandbox shares with the host, checked (canonical, no symlinks).
        let mut binds = paddock_confine::rootfs::shared_binds(spec)?;
        if spec.review {
            paddock_confine::rootfs::review_workspace(
                &ctx.sandbox_dir,
                user.is_none().then_some(base),
                &mut binds,
            )?;
        }
        let (upper, work, _) = paddock_confine::rootfs::prepare_dirs(
            &ctx.sandbox_dir,
            user.is_none().then_some(base),
            spec.discard_layer,
        )?;
        let layer_image = paddock_confine::rootfs::prepare_layer(
            &ctx.sandbox_dir,
            base,
            spec.limits.disk.map(|d| d.0),
            spec.discard_layer,
        )?;
        // Paddock's own files, by their real paths (the jail refuses any symlink on the way;
        // Paddock's directories and the installed helper may be reached through one).
        let real =
            |p: &Path| fs::canonicalize(p).map_err(io(format!("cannot resolve {}", p.display())));
        let helper_file = |host: PathBuf, target: &str| Bind {
            host,
            target: target.into(),
            read_only: true,
            owner_uid: 0,
            owner_gid: 0,
            idmap: false,
            is_dir: false,
            review: None,
        };
        let run_files = match &ctx.extra_ca {
            Some(ca) => vec![paddock_confine::rootfs::run_file(
                &paddock_core::trust_store_file(ctx, ca)?,
                paddock_core::TRUST_STORE,
            )],
            None => vec![],
        };
        for f in paddock_confine::rootfs::generated_files(&ctx.sandbox_dir, name)?
            .into_iter()
            .chain(run_files)
        {
            binds.push(Bind {
                host: real(&f.host)?,
                ..f
            });
        }
        let guest = real(&guest)?;
        binds.push(helper_file(guest.clone(), HELPER_PATH));
        // sudo: the image's own (the sandbox's layer's, if it replaced it) runs as root on the
        // agent's behalf, and the helper takes its place at /usr/bin/sudo.
        let real_sudo = image_file(&real(&upper)?, &real(&ctx.image_rootfs)?, "usr/bin/sudo");
        if let Some(real) = &real_sudo {
            binds.push(helper_file(real.clone(), REAL_SUDO));
            binds.push(helper_file(guest, "/usr/bin/sudo"));
        }

        // The run directory: the root's and the folders' mount points (searchable by the
        // sandbox's unprivileged host ids, which runsc's file server runs as), the bundle,
        // runsc's state and the proxy socket (root only).
        let run = tempfile::Builder::new()
            .prefix(&run_dir_prefix(name))
            .tempdir()
            .map_err(io("cannot create the run directory"))?;
        let dir = run.path().to_path_buf();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
            .map_err(io("cannot set the run directory's mode"))?;
        let root = dir.join("root");
        let points = dir.join("mounts");
        let bundle = dir.join("bundle");
        let state = dir.join("state");
        for d in [&root, &points, &bundle, &state] {
            fs::create_dir(d).map_err(io(format!("cannot create {}", d.display())))?;
        }
        // The mount points are reached by runsc's file server (the sandbox's ids); the bundle
        // and runsc's state are root's alone.
        for (d, mode) in [
            (&root, 0o711),
            (&points, 0o711),
            (&bundle, 0o700),
            (&state, 0o700),
        ] {
            fs::set_permissions(d, fs::Permissions::from_mode(mode))
                .map_err(io(format!("cannot set the mode of {}", d.display())))?;
        }
        let mut mounts = Vec::new();
        let mut jail_binds = Vec::new();
        for (i, b) in binds.iter().enumerate() {
            let point =
                mount_point(&points, i, b.is_dir).map_err(io("cannot create a mount point"))?;
            mounts.push(spec::Share {
                source: point.clone(),
                target: b.target.clone(),
                read_only: b.read_only,
            });
            jail_binds.push(Bind {
                target: point.to_string_lossy().into_owned(),
                ..b.clone()
            });
        }
        let egress_wanted = spec.network == Network::Proxy;
        // The process limit. gVisor's own pids cgroups count but do not enforce (runsc
        // 2024-07), and the host's pids cgroup counts gVisor's threads too (about 40, and two
        // host tasks per process inside: its address-space stub and thread), where running out
        // would stop gVisor itself. So gVisor enforces RLIMIT_NPROC on every user inside (root
        // included, and nobody inside may raise it), and the host's cgroup is only a backstop
        // with room for gVisor, against processes spread over many users.
        let pids = spec
            .limits
            .pids
            .unwrap_or(paddock_confine::cgroup::DEFAULT_PIDS);
        let mut host_limits = spec.limits.clone();
        host_limits.pids = Some(pids.saturating_mul(4).saturating_add(256));
        // In user mode the backstop needs a delegated pids subtree; without one gVisor's own
        // limit holds alone.
        host_limits.pids = CgroupHost::detect().enforceable(host_limits.clone()).pids;
        let config = spec::bundle(&spec::Bundle {
            root: &root,
            hostname: name,
            id_base: base,
            user_mode: user.is_some(),
            helper: HELPER_PATH,
            egress: egress_wanted,
            sudo: real_sudo.is_some(),
            nproc: u64::from(pids),
            shares: &mounts,
            tmpfs_size: spec.limits.tmpfs_size().map_or(1 << 30, |b| b.0),
        })
        .map_err(|e| layer(format!("cannot write the OCI bundle: {e}")))?;
        config
            .save(bundle.join("config.json"))
            .map_err(|e| layer(format!("cannot write the OCI bundle: {e}")))?;

        // The proxy: a socket only root can reach, which the host side connects to once per
        // stream the helper asks for.
        let egress_path = dir.join("egress.sock");
        let egress_listener = if egress_wanted {
            let l =
                UnixListener::bind(&egress_path).map_err(io("cannot create the proxy socket"))?;
            fs::set_permissions(&egress_path, fs::Permissions::from_mode(0o600))
                .map_err(io("cannot set the proxy socket's mode"))?;
            Some(l)
        } else {
            None
        };
        let (sessions, helper_sessions) =
            UnixStream::pair().map_err(io("cannot create the session socket"))?;
        let (proxy, helper_proxy) =
            UnixStream::pair().map_err(io("cannot create the proxy socket"))?;

        let cgroups =
            SandboxCgroups::create(&CgroupHost::detect(), name, &host_limits).map_err(|e| {
                BackendError::Layer {
                    layer: "cgroup".into(),
                    message: e.to_string(),
                }
            })?;
        let log = ctx.sandbox_dir.join("gvisor.log");
        let mut exec = vec![
            runsc.to_string_lossy().into_owned(),
            format!("--root={}", state.display()),
            "--network=none".into(),
            format!("--platform={}", platform.as_str()),
            // Writes go to the sandbox's own layer on the host (it persists), not to gVisor's
            // in-memory overlay.
            "--overlay2=none".into(),
            // The supervisor put this process in the sandbox's cgroups already.
            "--ignore-cgroups".into(),
            // The bundle's seccomp filter (the namespace backend's table) applies inside.
            "--oci-seccomp".into(),
        ];
        // Extra runsc flags for debugging (`PADDOCK_RUNSC_FLAGS="--debug --debug-log=DIR/"`).
        if let Some(extra) = std::env::var_os("PADDOCK_RUNSC_FLAGS") {
            exec.extend(
                extra
                    .to_string_lossy()
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        exec.extend([
            "run".into(),
            format!("--bundle={}", bundle.display()),
            "--pass-fd=5:3".into(),
            "--pass-fd=6:4".into(),
            format!("paddock-{name}"),
        ]);
        let cfg = RunscConfig {
            lower: ctx.image_rootfs.clone(),
            upper,
            work,
            root,
            id_base: base,
            binds: jail_binds,
            cgroups: cgroups.dirs.clone(),
            exec,
            layer_image: layer_image.clone(),
            volatile: spec.discard_layer,
            user_namespace: user.is_some(),
        };
        let started = spawn(
            &self.jail,
            &cfg,
            &log,
            [helper_sessions.as_fd(), helper_proxy.as_fd()],
            user.as_ref(),
        );
        drop(helper_sessions);
        drop(helper_proxy);
        let mut child = match started {
            Ok(c) => c,
            Err(e) => {
                cgroups.remove();
                return Err(e);
            }
        };
        let fail = |child: &mut Child, e: BackendError| {
            let _ = child.kill();
            let _ = child.wait();
            cgroups.remove();
            e
        };

        // The command's session, handed over before the helper is up: the socket and the
        // command wait in their connections, so the helper starts the command as soon as it
        // serves sessions, without a round trip to the host first.
        let tty = launch.stdio.is_pty();
        let (mut conn, theirs) =
            UnixStream::pair().map_err(io("cannot create the command's socket"))?;
        let handed = paddock_wire::send_byte(sessions.as_fd(), 1, Some(theirs.as_fd()))
            .map_err(|e| format!("cannot hand the command to the sandbox: {e}"))
            .and_then(|()| RemoteSession::send(&mut conn, &launch.command(spec.no_new_privs)));
        drop(theirs);
        if let Err(e) = handed {
            return Err(fail(&mut child, layer(format!("{e}; {}", log_tail(&log)))));
        }

        // The helper's word that it serves sessions.
        let mut sessions = sessions;
        let _ = sessions.set_read_timeout(Some(START_LIMIT));
        let mut b = [0u8; 1];
        match sessions.read(&mut b) {
            Ok(1) if b[0] == HELPER_READY => {}
            other => {
                let status = match child.try_wait() {
                    Ok(Some(s)) => format!(" (runsc ended: {s})"),
                    _ => String::new(),
                };
                let got = match other {
                    Err(e) => {
                        format!("no word from the sandbox's helper within {START_LIMIT:?}: {e}")
                    }
                    _ => "the sandbox ended while starting".into(),
                };
                return Err(fail(
                    &mut child,
                    layer(format!("{got}{status}; {}", log_tail(&log))),
                ));
            }
        }
        let _ = sessions.set_read_timeout(None);
        if let Err(e) = RemoteSession::await_start(&mut conn, START_LIMIT) {
            let e = layer(format!("the sandbox's helper: {e}; {}", log_tail(&log)));
            return Err(fail(&mut child, e));
        }
        let inst = GvisorInstance::new(
            child,
            conn,
            tty,
            sessions,
            proxy,
            egress_listener,
            egress_path,
            cgroups,
            run,
            log,
        );
        inst.map(|mut i| {
            i.layer_image = layer_image;
            i.backstop = host_limits.pids.unwrap_or_default();
            i.give_back = (
                binds
                    .iter()
                    .filter_map(|b| {
                        b.give_back_at(user.is_some())
                            .map(|at| (at, b.owner_uid, b.owner_gid))
                    })
                    .collect(),
                base,
                self.jail.clone(),
                run_started,
            );
            Box::new(i) as Box<dyn Instance>
        })
    }
}

/// Starts `paddock-jail runsc` with its configuration (descriptor 3), report channel (4) and
/// the helper's two sockets (5 and 6, which runsc passes on as 3 and 4); waits until the jail
/// has mounted everything and is about to become runsc.
fn spawn(
    jail: &Path,
    cfg: &RunscConfig,
    log: &Path,
    helper: [BorrowedFd<'_>; 2],
    user: Option<&paddock_core::UserIds>,
) -> Result<Child, BackendError> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io("cannot create the report channel")(e.into()))?;
    let (cfg_r, cfg_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io("cannot create the configuration pipe")(e.into()))?;
    // A new file each start: the last one may belong to the sandbox's root (user mode), whose
    // runsc wrote it.
    let _ = fs::remove_file(log);
    let log_file = File::create(log).map_err(io(format!("cannot create {}", log.display())))?;
    let mut cmd = std::process::Command::new(jail);
    cmd.arg("runsc")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(ProcStdio::null())
        .stdout(log_file.try_clone().map_err(io("log"))?)
        .stderr(log_file);
    let fds = [
        cfg_r.as_raw_fd(),
        theirs.as_raw_fd(),
        helper[0].as_raw_fd(),
        helper[1].as_raw_fd(),
    ];
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl, dup2 and
    // close, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // First above every target number, then onto 3..6 (without CLOEXEC).
            let mut high = [0; 4];
            for (i, fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*fd);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(io(format!("cannot start {}", jail.display())))?;
    drop(theirs);
    drop(cfg_r);
    let json = serde_json::to_vec(cfg).unwrap_or_default();
    let joined = match user {
        // User mode: the jail's user namespace, mapped once the jail is in its cgroups.
        Some(ids) => {
            let mut w = File::from(cfg_w);
            let _ = w.write_all(&json);
            drop(w);
            match paddock_confine::user::map_jail(ours.as_fd(), child.id(), &cfg.cgroups, ids) {
                Ok((_, joined)) => joined,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
        }
        None => {
            let joiner = paddock_confine::join_cgroups(cfg.cgroups.clone(), child.id());
            let mut w = File::from(cfg_w);
            let _ = w.write_all(&json);
            drop(w);
            joiner
                .join()
                .unwrap_or_else(|_| Err("the cgroup thread panicked".into()))
        }
    };
    let ack = [u8::from(joined.is_ok())];
    let _ = rustix::net::send(&ours, &ack, rustix::net::SendFlags::NOSIGNAL);
    let cgroup_error = joined.err();
    match paddock_wire::recv_report(ours.as_fd()) {
        Ok(Some((Report::Ready { .. }, _))) => Ok(child),
        Ok(Some((Report::SetupFailed { layer, message }, _))) => {
            let _ = child.wait();
            let message = match (&*layer, cgroup_error) {
                ("cgroup", Some(detail)) => detail,
                _ => message,
            };
            Err(BackendError::Layer { layer, message })
        }
        other => {
            let _ = child.kill();
            let status = child.wait();
            Err(layer(format!(
                "the setup ended unexpectedly ({:?}, {status:?})",
                other.map(|o| o.map(|(r, _)| r))
            )))
        }
    }
}

/// A running gVisor sandbox.
#[derive(Debug)]
pub struct GvisorInstance {
    child: Child,
    pid: i32,
    session: RemoteSession,
    sessions: Option<UnixStream>,
    exit_r: OwnedFd,
    /// Written when the command ended: by the relay's report, or by runsc's own end.
    exit_w: Arc<File>,
    egress: Option<OwnedFd>,
    cgroups: SandboxCgroups,
    limit_events: Vec<String>,
    layer_image: Option<PathBuf>,
    run: Option<tempfile::TempDir>,
    log: PathBuf,
    /// The host pids cgroup's limit (a backstop: the limit inside is the helper's).
    backstop: u32,
    /// The shared read-write folders (host path, owner uid and gid) whose files made as
    /// another id than the agent go to their owner when the sandbox ends, the sandbox's
    /// host id base (root mode), the jail that does it in user mode, and when the sandbox
    /// started (only what changed since is given back).
    give_back: (Vec<(PathBuf, u32, u32)>, u32, PathBuf, i128),
    /// What the host side has to say after the sandbox ended.
    host_diagnostics: Vec<String>,
}

impl GvisorInstance {
    #[allow(clippy::too_many_arguments)]
    fn new(
        child: Child,
        conn: UnixStream,
        tty: bool,
        sessions: UnixStream,
        proxy: UnixStream,
        egress: Option<UnixListener>,
        egress_path: PathBuf,
        cgroups: SandboxCgroups,
        run: tempfile::TempDir,
        log: PathBuf,
    ) -> Result<GvisorInstance, BackendError> {
        let pid = child.id() as i32;
        let (exit_r, exit_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io("pipe")(e.into()))?;
        let exit_w = Arc::new(File::from(exit_w));
        let session = RemoteSession::new(conn, tty);
        // runsc ending on its own also ends the command.
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).ok_or_else(|| layer("bad pid"))?,
            rustix::process::PidfdFlags::empty(),
        )
        .map_err(|e| io("pidfd_open")(e.into()))?;
        let watch_w = exit_w.clone();
        std::thread::Builder::new()
            .name("gvisor-watch".into())
            .spawn(move || {
                let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
                while let Err(rustix::io::Errno::INTR) = poll(&mut fds, None) {}
                let _ = (&*watch_w).write_all(&[2]);
            })
            .map_err(io("cannot start a thread"))?;
        // The helper's requests for proxy streams: one connection to the proxy socket each.
        if egress.is_some() {
            std::thread::Builder::new()
                .name("gvisor-proxy".into())
                .spawn(move || {
                    while let Ok(Some(_)) = paddock_wire::recv_byte(proxy.as_fd()) {
                        let stream = UnixStream::connect(&egress_path);
                        let sent = match &stream {
                            Ok(s) => paddock_wire::send_byte(proxy.as_fd(), 1, Some(s.as_fd())),
                            Err(_) => paddock_wire::send_byte(proxy.as_fd(), 0, None),
                        };
                        if sent.is_err() {
                            break;
                        }
                    }
                })
                .map_err(io("cannot start a thread"))?;
        }
        Ok(GvisorInstance {
            child,
            pid,
            session,
            sessions: Some(sessions),
            exit_r,
            exit_w,
            egress: egress.map(OwnedFd::from),
            cgroups,
            limit_events: vec![],
            layer_image: None,
            run: Some(run),
            log,
            backstop: 0,
            give_back: (Vec::new(), 0, PathBuf::new(), 0),
            host_diagnostics: Vec::new(),
        })
    }
}

impl Instance for GvisorInstance {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.exit_r.as_fd()
    }

    fn take_streams(&mut self) -> Streams {
        self.session.take_streams()
    }

    fn relayed(&mut self, end: SessionEnd) {
        self.session.relayed(end);
        let _ = (&*self.exit_w).write_all(&[1]);
    }

    fn signal(&self, signal: i32) -> Result<(), BackendError> {
        self.session
            .signal(signal)
            .map_err(io("cannot signal the command in the sandbox"))
    }

    fn wait(&mut self) -> Result<Exit, BackendError> {
        let mut fds = [PollFd::new(&self.exit_r, PollFlags::IN)];
        while let Err(rustix::io::Errno::INTR) = poll(&mut fds, None) {}
        let exit = self.session.take_exit();
        // Closing the session socket tells the helper to end every process and exit, which
        // ends the sandbox and runsc with it (shut down: the supervisor's exec handler holds a
        // copy).
        if let Some(s) = self.sessions.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        // Woken by runsc's exit itself (a pidfd), not by polling its status.
        let exited = rustix::process::pidfd_open(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::PidfdFlags::empty(),
        )
        .ok();
        let ended = loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break true,
                Ok(None) if Instant::now() < deadline => match &exited {
                    Some(fd) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let wait = rustix::time::Timespec::try_from(left).unwrap_or_default();
                        let _ = poll(&mut [PollFd::new(fd, PollFlags::IN)], Some(&wait));
                    }
                    None => std::thread::sleep(Duration::from_millis(10)),
                },
                Ok(None) => break false,
            }
        };
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.limit_events = self.cgroups.events();
        self.limit_events.extend(
            self.layer_image
                .as_deref()
                .and_then(paddock_confine::rootfs::layer_full),
        );
        // gVisor's own process limit, which only the helper inside sees.
        for e in self.session.limits_hit() {
            let kind = e.split(':').next().unwrap_or_default();
            if !self.limit_events.iter().any(|h| h.starts_with(kind)) {
                self.limit_events.push(e);
            }
        }
        self.cgroups.remove();
        self.run = None;
        // runsc and its file server are gone: nothing writes the folders now.
        let (folders, base, jail, since) = &self.give_back;
        if let Err(e) = paddock_confine::user::give_back(jail, folders, *base, *since) {
            self.host_diagnostics.push(format!(
                "cannot give you back what the sandbox made in its folders as another user: {e}"
            ));
        }
        // The host's pids cgroup is a backstop that also counts gVisor's own threads: reached,
        // it stops gVisor (its runtime cannot start a thread), which ends the command.
        if exit.is_none()
            && let Some(e) = self
                .limit_events
                .iter_mut()
                .find(|e| e.starts_with("pids limit"))
        {
            *e = format!(
                "pids limit: the sandbox's processes, spread over several users faster than its process limit is held inside, reached the host's backstop of {} tasks (gVisor's own threads included), which ended the sandbox",
                self.backstop
            );
        }
        match exit {
            Some(e) => Ok(e),
            // gVisor and the command share the memory limit: at the limit the host's kernel
            // kills the whole sandbox, which ends the command as a kill would; so does the
            // host's process backstop.
            None if self
                .limit_events
                .iter()
                .any(|e| e.starts_with("memory limit") || e.starts_with("pids limit")) =>
            {
                Ok(Exit::Signal {
                    signal: libc::SIGKILL,
                })
            }
            None => Err(layer(format!(
                "the sandbox stopped before the command finished; {}",
                log_tail(&self.log)
            ))),
        }
    }

    fn diagnostics(&mut self) -> Vec<String> {
        let mut all = self.session.diagnostics();
        all.append(&mut self.host_diagnostics);
        all
    }

    fn take_egress(&mut self) -> Option<Egress> {
        self.egress.take().map(Egress::UnixListener)
    }

    fn limits_hit(&self) -> Vec<String> {
        self.limit_events.clone()
    }

    fn execs(&self) -> Option<Box<dyn Execs>> {
        let sessions = self.sessions.as_ref()?.try_clone().ok()?;
        Some(Box::new(GvisorExecs { sessions }))
    }
}

/// Hands the helper one more session connection per command (`paddock exec`).
struct GvisorExecs {
    sessions: UnixStream,
}

impl Execs for GvisorExecs {
    fn handle(&self) -> Result<ExecHandle, BackendError> {
        let (ours, theirs) = UnixStream::pair().map_err(io("cannot make a session connection"))?;
        paddock_wire::send_byte(self.sessions.as_fd(), 1, Some(theirs.as_fd()))
            .map_err(io("the sandbox's helper does not answer"))?;
        Ok(ExecHandle {
            extra: None,
            fd: OwnedFd::from(ours),
            detail: String::new(),
        })
    }

    fn dial(&self, port: u16) -> Result<OwnedFd, BackendError> {
        let (mut ours, theirs) =
            UnixStream::pair().map_err(io("cannot make a forwarding connection"))?;
        paddock_wire::send_byte(
            self.sessions.as_fd(),
            paddock_wire::vm::FORWARD_BYTE,
            Some(theirs.as_fd()),
        )
        .map_err(io("the sandbox's helper does not answer"))?;
        ours.write_all(&port.to_be_bytes())
            .map_err(io("the sandbox's helper does not answer"))?;
        Ok(OwnedFd::from(ours))
    }
}

#[cfg(test)]
mod tests {
    use paddock_policy::{ByteSize, Cpus, Limits};

    use super::*;

    #[test]
    fn the_process_limit_waits_for_the_next_start() {
        let limits = Limits {
            cpus: Some(Cpus(2000)),
            memory: Some(ByteSize(1 << 30)),
            pids: Some(100),
            disk: None,
        };
        let mut written = None;
        let later = live_limits(&limits, |live| {
            written = Some(live.clone());
            vec!["--memory: the sandbox has no memory cgroup".into()]
        });
        assert_eq!(
            written,
            Some(Limits {
                pids: None,
                ..limits.clone()
            })
        );
        assert_eq!(
            later,
            [
                "--memory: the sandbox has no memory cgroup",
                "--pids: gVisor's process limit is set at start"
            ]
        );
        let no_pids = Limits {
            pids: None,
            ..limits
        };
        assert_eq!(live_limits(&no_pids, |_| Vec::new()), Vec::<String>::new());
    }

    #[test]
    fn image_file_prefers_the_layer_and_follows_no_symlink_in_it() {
        let t = tempfile::tempdir().unwrap();
        let (upper, image) = (t.path().join("upper"), t.path().join("image"));
        fs::create_dir_all(image.join("usr/bin")).unwrap();
        fs::write(image.join("usr/bin/sudo"), "image").unwrap();
        fs::create_dir_all(&upper).unwrap();
        assert_eq!(
            image_file(&upper, &image, "usr/bin/sudo"),
            Some(image.join("usr/bin/sudo"))
        );
        fs::create_dir_all(upper.join("usr/bin")).unwrap();
        fs::write(upper.join("usr/bin/sudo"), "layer").unwrap();
        assert_eq!(
            image_file(&upper, &image, "usr/bin/sudo"),
            Some(upper.join("usr/bin/sudo"))
        );
        // A directory of the layer replaced by a symlink (to anywhere on the host): nothing.
        fs::remove_dir_all(upper.join("usr")).unwrap();
        std::os::unix::fs::symlink(t.path().join("image/usr"), upper.join("usr")).unwrap();
        assert_eq!(image_file(&upper, &image, "usr/bin/sudo"), None);
    }
}
