//! The namespace backend: a sandbox made of Linux namespaces (user, mount, pid, net, ipc, uts,
//! cgroup), an overlay root over the image, seccomp, Landlock and cgroup limits.
//!
//! The host side ([`NsBackend`]) prepares the sandbox's directories and cgroups and starts the
//! `paddock-jail` binary, which does the privileged setup and becomes pid 1 inside. The two talk
//! over a `SOCK_SEQPACKET` socketpair carrying [`paddock_wire::Report`]s. The jail and every
//! layer it applies come from [`paddock_confine`].

mod dial;
mod probe;
mod spawn;
mod stdio;

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use paddock_confine::cgroup::{CgroupHost, SandboxCgroups};
use paddock_confine::config::{EnterConfig, JailConfig};
use paddock_confine::rootfs::{
    generated_files, layer_full, prepare_dirs, prepare_layer, review_workspace, run_file,
    shared_binds,
};
use paddock_confine::{find_jail, jail, join_cgroups};
use paddock_core::{
    Backend, BackendError, Egress, ExecHandle, Execs, Exit, Instance, Launch, Network, Probe,
    SandboxSpec, StartContext, Stdio, Streams,
};
use paddock_wire::{Report, recv_report};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

use crate::spawn::JailProcess;

/// The namespace backend.
#[derive(Debug, Clone)]
pub struct NsBackend {
    jail: PathBuf,
}

impl NsBackend {
    /// Finds the jail binary next to the running executable.
    pub fn new() -> NsBackend {
        NsBackend { jail: find_jail() }
    }

    /// Uses the jail binary at `path`.
    pub fn with_jail(path: PathBuf) -> NsBackend {
        NsBackend { jail: path }
    }
}

impl Default for NsBackend {
    fn default() -> Self {
        NsBackend::new()
    }
}

/// A running namespace sandbox.
#[derive(Debug)]
pub struct NsInstance {
    child: JailProcess,
    pidfd: OwnedFd,
    pty: Option<OwnedFd>,
    egress: Option<OwnedFd>,
    channel: OwnedFd,
    cgroups: SandboxCgroups,
    cgroup_dirs: Vec<PathBuf>,
    pid1: Option<OwnedFd>,
    diagnostics: Vec<String>,
    limit_events: Vec<String>,
    layer_image: Option<PathBuf>,
    /// The host's ends of the command's pipes (without a terminal), for the relay process.
    pipes: Option<stdio::Relay>,
    /// User mode: the sandbox's outer user namespace, which owns its other namespaces.
    userns: Option<OwnedFd>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    BackendError::io(what)
}

impl Backend for NsBackend {
    fn id(&self) -> &'static str {
        "ns"
    }

    fn docker(&self) -> Result<(), String> {
        Err("the ns backend shares the host's kernel, and Docker's engine needs what its seccomp filter keeps from the sandbox (mounts, new namespaces, bridges and netfilter rules, all served by the host kernel); use --backend vm, whose engine runs on a kernel of its own".into())
    }

    fn probe(&self) -> Probe {
        probe::probe(&self.jail)
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
        SandboxCgroups::update(&CgroupHost::detect(), sandbox.as_str(), limits)
    }

    fn resize_disk(&self, sandbox_dir: &Path, bytes: u64) -> Result<(), BackendError> {
        paddock_confine::rootfs::resize_layer(sandbox_dir, bytes)
    }

    fn reset_layer(&self, sandbox_dir: &Path) -> Result<(), BackendError> {
        paddock_confine::rootfs::reset_layer(sandbox_dir)
    }

    fn exec(
        &self,
        spec: &SandboxSpec,
        handle: ExecHandle,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        let cgroups: Vec<PathBuf> =
            serde_json::from_str(&handle.detail).map_err(|e| BackendError::Layer {
                layer: "exec".into(),
                message: format!("bad handle from the supervisor: {e}"),
            })?;
        let cfg = EnterConfig {
            cgroups: cgroups.clone(),
            command: launch.command(spec.no_new_privs),
            user_namespace: handle.extra.is_some(),
        };
        let json = serde_json::to_vec(&cfg).unwrap_or_default();
        let mut targets = vec![handle.fd];
        targets.extend(handle.extra);
        let launched = start_jail(&self.jail, Some("enter"), launch.stdio, targets)?;
        let inst = finish(launched, &json, &cgroups, None, || Ok(Vec::new()))?;
        Ok(Box::new(inst))
    }

    fn start(
        &self,
        ctx: &StartContext,
        spec: &SandboxSpec,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError> {
        let user = paddock_confine::user::sandbox_ids("ns", &ctx.image, &spec.limits)?;
        // The jail loads while the sandbox is prepared; it waits for its configuration.
        let launched = start_jail(&self.jail, None, launch.stdio, Vec::new())?;
        let (cfg, cgroups) = match prepare(ctx, spec, launch) {
            Ok(prepared) => prepared,
            Err(e) => {
                launched.abandon();
                return Err(e);
            }
        };
        let json = serde_json::to_vec(&cfg).unwrap_or_default();
        let premount = || {
            if cfg.user_namespace {
                // The jail mounts in its own user namespace.
                return Ok(Vec::new());
            }
            jail::premount(&cfg).map_err(|f| BackendError::Layer {
                layer: f.layer.into(),
                message: f.message,
            })
        };
        let mut inst = match finish(launched, &json, &cfg.cgroups, user.as_ref(), premount) {
            Ok(i) => i,
            Err(e) => {
                cgroups.remove();
                return Err(e);
            }
        };
        if cfg.egress && inst.egress.is_none() {
            let _ = inst.child.kill();
            let _ = inst.child.wait();
            cgroups.remove();
            return Err(BackendError::Layer {
                layer: "network".into(),
                message: "the sandbox did not hand over its proxy listener".into(),
            });
        }
        inst.cgroups = cgroups;
        inst.layer_image = cfg.layer_image;
        Ok(Box::new(inst))
    }
}

/// The sandbox's directories, generated files and cgroups, and the jail's configuration.
fn prepare(
    ctx: &StartContext,
    spec: &SandboxSpec,
    launch: &Launch,
) -> Result<(JailConfig, SandboxCgroups), BackendError> {
    // `start` checked that the image's ids are this process's.
    let user_mode = ctx.image.idmap.user.is_some();
    let mut binds = shared_binds(spec)?;
    if user_mode {
        check_writable(&binds[0].host)?;
    }
    // The ids as the jail sees them: in user mode its own user namespace's, whose root is 0.
    let base = if user_mode { 0 } else { ctx.image.idmap.base };
    if spec.review {
        review_workspace(&ctx.sandbox_dir, (!user_mode).then_some(base), &mut binds)?;
    }
    let (upper, work, merged) = prepare_dirs(
        &ctx.sandbox_dir,
        (!user_mode).then_some(base),
        spec.discard_layer,
    )?;
    let layer_image = prepare_layer(
        &ctx.sandbox_dir,
        base,
        spec.limits.disk.map(|d| d.0),
        spec.discard_layer,
    )?;
    binds.extend(generated_files(&ctx.sandbox_dir, spec.name.as_str())?);
    if let Some(ca) = &ctx.extra_ca {
        let bundle = paddock_core::trust_store_file(ctx, ca)?;
        binds.push(run_file(&bundle, paddock_core::TRUST_STORE));
    }
    let cgroups = SandboxCgroups::create(&CgroupHost::detect(), spec.name.as_str(), &spec.limits)
        .map_err(|e| BackendError::Layer {
        layer: "cgroup".into(),
        message: e.to_string(),
    })?;
    let cfg = JailConfig {
        hostname: spec.name.to_string(),
        lower: ctx.image_rootfs.clone(),
        upper,
        work,
        merged,
        id_base: base,
        binds,
        cgroups: cgroups.dirs.clone(),
        command: launch.command(spec.no_new_privs),
        egress: spec.network == Network::Proxy,
        layer_image,
        volatile: spec.discard_layer,
        tmpfs_size: spec.limits.tmpfs_size().map(|b| b.0),
        user_namespace: user_mode,
        exec_socket: Some(ctx.sandbox_dir.join(paddock_wire::EXEC_SOCKET)),
    };
    Ok((cfg, cgroups))
}

/// User mode: the workspace must be the user's to write (the agent is the user). Checked by
/// the CLI before anything is made; again here for a stored sandbox whose folder changed.
fn check_writable(workspace: &Path) -> Result<(), BackendError> {
    if paddock_confine::user::writable(workspace) {
        return Ok(());
    }
    Err(BackendError::Io {
        what: format!(
            "workspace {} is not writable by you, and the agent works as you; choose a folder of yours",
            workspace.display()
        ),
        source: std::io::ErrorKind::PermissionDenied.into(),
    })
}

/// A jail started and waiting for its configuration (it reads descriptor 3 to its end before
/// anything else), so that it loads while the host side prepares the sandbox.
struct Launched {
    child: JailProcess,
    channel: OwnedFd,
    config: OwnedFd,
    new_sandbox: bool,
    /// The supervisor's ends of the command's streams (none with a terminal).
    relay: Option<stdio::Relay>,
}

/// Starts the jail (in `mode`, or as a new sandbox) with `targets` as its descriptors 5, 6….
fn start_jail(
    jail: &Path,
    mode: Option<&str>,
    stdio: Stdio,
    targets: Vec<OwnedFd>,
) -> Result<Launched, BackendError> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| BackendError::io("cannot create the report channel")(e.into()))?;
    let (cfg_r, cfg_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| BackendError::io("cannot create the configuration pipe")(e.into()))?;
    let mut fds = vec![cfg_r.as_fd(), theirs.as_fd()];
    fds.extend(targets.iter().map(|t| t.as_fd()));
    // Without a terminal the command's streams are pipes this process relays; with one they
    // are /dev/null (the terminal is the sandbox's own pty). Never this process's own.
    let pipes = match stdio {
        Stdio::Inherit => Some(
            stdio::pipes().map_err(|e| BackendError::io("cannot create the command's pipes")(e))?,
        ),
        Stdio::Pty { .. } => None,
    };
    let streams = pipes.as_ref().map(|p| {
        let [a, b, c] = &p.theirs;
        [a.as_fd(), b.as_fd(), c.as_fd()]
    });
    let child = spawn::spawn(jail, mode.as_slice(), &fds, streams)
        .map_err(io(format!("cannot start {}", jail.display())))?;
    Ok(Launched {
        child,
        channel: ours,
        config: cfg_w,
        new_sandbox: mode.is_none(),
        relay: pipes.map(|p| p.ours),
    })
}

impl Launched {
    /// Ends a jail whose sandbox could not be prepared.
    fn abandon(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hands the `launched` jail its configuration `json`, maps its user namespace (user mode:
/// `user`), moves it into `cgroups`, sends it what `premount` made meanwhile with the answer,
/// and waits for its `Ready`.
fn finish(
    launched: Launched,
    json: &[u8],
    cgroups: &[PathBuf],
    user: Option<&paddock_core::UserIds>,
    premount: impl FnOnce() -> Result<Vec<OwnedFd>, BackendError>,
) -> Result<NsInstance, BackendError> {
    let Launched {
        mut child,
        channel: ours,
        config: cfg_w,
        new_sandbox,
        relay,
    } = launched;
    let mut w = fs::File::from(cfg_w);
    let _ = w.write_all(json);
    drop(w);
    let (userns, joined_early) = match user {
        Some(ids) => {
            match paddock_confine::user::map_jail(ours.as_fd(), child.id(), cgroups, ids) {
                Ok((ns, joined)) => (Some(ns), Some(joined)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
        }
        None => (None, None),
    };
    // Move the jail into its cgroups while it sets up its namespaces (the move waits for an RCU
    // grace period with cgroup v1); the jail forks pid 1 only after the answer below.
    let joiner = joined_early
        .is_none()
        .then(|| join_cgroups(cgroups.to_vec(), child.id()));
    let made = premount();
    let joined = match (joined_early, joiner) {
        (Some(j), _) => j,
        (None, Some(t)) => t
            .join()
            .unwrap_or_else(|_| Err("the cgroup thread panicked".into())),
        (None, None) => Ok(()),
    };
    let made = match made {
        Ok(fds) => fds,
        Err(e) => {
            let _ = rustix::net::send(&ours, &[0], rustix::net::SendFlags::NOSIGNAL);
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let ack = [u8::from(joined.is_ok())];
    let fds: Vec<BorrowedFd<'_>> = made.iter().map(|f| f.as_fd()).collect();
    let _ = paddock_wire::send_with_fds(ours.as_fd(), &ack, &fds);
    drop(made);
    // On failure the jail reports `cgroup` (or the earlier failure that made the move fail).
    let cgroup_error = joined.err();
    let pid = child.id() as i32;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| BackendError::io("bad pid")(std::io::ErrorKind::Other.into()))?,
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(|e| BackendError::io("pidfd_open")(e.into()))?;
    let mut pty = None;
    let mut egress = None;
    let (pid1, pid1_fd) = loop {
        match recv_report(ours.as_fd()) {
            Ok(Some((Report::Ready { pid }, fd))) => break (pid, fd),
            Ok(Some((Report::PtyMaster, fd))) => pty = fd,
            Ok(Some((Report::EgressListener, fd))) => egress = fd,
            Ok(Some((Report::SetupFailed { layer, message }, _))) => {
                let _ = child.wait();
                let message = match (&*layer, cgroup_error) {
                    ("cgroup", Some(detail)) => detail,
                    (_, _) => message,
                };
                return Err(BackendError::Layer { layer, message });
            }
            Ok(Some((
                Report::ExecFailed { .. }
                | Report::Exited { .. }
                | Report::LimitsHit { .. }
                | Report::UserNamespace,
                _,
            ))) => {
                // Cannot happen before Ready; treat as a protocol error.
                let _ = child.kill();
                let _ = child.wait();
                return Err(BackendError::Layer {
                    layer: "init".into(),
                    message: "unexpected report before ready".into(),
                });
            }
            Ok(None) | Err(_) => {
                let status = child.wait().map_err(io("waiting for the jail"))?;
                return Err(BackendError::Layer {
                    layer: "init".into(),
                    message: format!("the jail exited during setup ({status})"),
                });
            }
        }
    };
    // The sandbox's pid 1 (a new sandbox's; `exec` enters it), held by a pidfd so that a
    // recycled pid can never be entered by mistake: the one init sent with `Ready` (valid even
    // if the command has ended since, and init with it), else one opened from its pid.
    let pid1 = pid1_fd.or_else(|| {
        rustix::process::Pid::from_raw(pid1)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
    });
    let mut inst = NsInstance {
        child,
        pidfd,
        pty,
        egress,
        channel: ours,
        cgroups: SandboxCgroups::default(),
        cgroup_dirs: cgroups.to_vec(),
        pid1,
        diagnostics: vec![],
        limit_events: vec![],
        layer_image: None,
        pipes: relay,
        userns,
    };
    if new_sandbox && inst.pid1.is_none() {
        let _ = inst.child.kill();
        let _ = inst.child.wait();
        return Err(BackendError::Layer {
            layer: "init".into(),
            message: "the sandbox's pid 1 is gone".into(),
        });
    }
    Ok(inst)
}

impl Instance for NsInstance {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    fn take_streams(&mut self) -> Streams {
        match (self.pty.take(), self.pipes.take()) {
            (Some(master), _) => Streams::Pty(master),
            (None, Some(pipes)) => pipes.streams(),
            (None, None) => Streams::Direct,
        }
    }

    fn take_egress(&mut self) -> Option<Egress> {
        self.egress.take().map(Egress::TcpListener)
    }

    fn signal(&self, signal: i32) -> Result<(), BackendError> {
        // SAFETY: kill has no memory effects; the pid is our child, not yet reaped (we hold it).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(BackendError::io("cannot signal the sandbox")(
                std::io::Error::last_os_error(),
            ))
        }
    }

    fn wait(&mut self) -> Result<Exit, BackendError> {
        let status = self.child.wait().map_err(io("waiting for the sandbox"));
        // Reports left in the channel (an exec failure) become diagnostics.
        let _ = rustix::io::ioctl_fionbio(&self.channel, true);
        while let Ok(Some((report, _))) = recv_report(self.channel.as_fd()) {
            if let Report::ExecFailed {
                program, message, ..
            } = report
            {
                self.diagnostics.push(format!("{program}: {message}"));
            }
        }
        self.limit_events = self.cgroups.events();
        self.limit_events
            .extend(self.layer_image.as_deref().and_then(layer_full));
        self.cgroups.remove();
        let status = status?;
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code { code },
            (None, Some(signal)) => Exit::Signal { signal },
            _ => Exit::Code { code: 125 },
        })
    }

    fn diagnostics(&mut self) -> Vec<String> {
        std::mem::take(&mut self.diagnostics)
    }

    fn limits_hit(&self) -> Vec<String> {
        self.limit_events.clone()
    }

    fn execs(&self) -> Option<Box<dyn Execs>> {
        let pid1 = self.pid1.as_ref()?.try_clone().ok()?;
        let userns = match &self.userns {
            Some(ns) => Some(ns.try_clone().ok()?),
            None => None,
        };
        Some(Box::new(NsExecs {
            pid1,
            userns,
            cgroups: self.cgroup_dirs.clone(),
        }))
    }
}

/// Hands out the sandbox's pid 1 (a pidfd) and cgroups, for `paddock-jail enter`.
struct NsExecs {
    pid1: OwnedFd,
    /// User mode: the sandbox's outer user namespace.
    userns: Option<OwnedFd>,
    cgroups: Vec<PathBuf>,
}

impl Execs for NsExecs {
    fn handle(&self) -> Result<ExecHandle, BackendError> {
        Ok(ExecHandle {
            fd: self
                .pid1
                .try_clone()
                .map_err(io("cannot duplicate the sandbox's pidfd"))?,
            detail: serde_json::to_string(&self.cgroups).unwrap_or_default(),
            extra: match &self.userns {
                Some(ns) => Some(
                    ns.try_clone()
                        .map_err(io("cannot duplicate the sandbox's user namespace"))?,
                ),
                None => None,
            },
        })
    }

    fn dial(&self, port: u16) -> Result<OwnedFd, BackendError> {
        // A thread of its own enters the sandbox's network namespace (namespaces belong to
        // threads) and connects there; the socket stays in that namespace after the thread
        // ends, and the rest of the supervisor never leaves the host's.
        if let Some(userns) = &self.userns {
            return dial::dial(userns.as_fd(), self.pid1.as_fd(), port)
                .map_err(io(format!("nothing answers on port {port} in the sandbox")));
        }
        let pid1 = self
            .pid1
            .try_clone()
            .map_err(io("cannot duplicate the sandbox's pidfd"))?;
        std::thread::Builder::new()
            .name("dial".into())
            .spawn(move || -> std::io::Result<OwnedFd> {
                // SAFETY: setns has no memory effects; it changes only this thread's network
                // namespace, and the thread ends right after connecting.
                if unsafe { libc::setns(pid1.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                Ok(OwnedFd::from(s))
            })
            .map_err(io("cannot start a thread"))?
            .join()
            .map_err(|_| BackendError::io("dial")(std::io::ErrorKind::Other.into()))?
            .map_err(io(format!("nothing answers on port {port} in the sandbox")))
    }
}
