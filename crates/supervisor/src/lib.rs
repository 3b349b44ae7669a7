//! The supervisor: one host process per running sandbox.
//!
//! It picks the backend ([`select`]), holds the sandbox's lock for the sandbox's whole life,
//! records its state, serves the control socket, relays the terminal and forwards signals, and
//! reports the command's exit status. It owns the egress proxy and the published ports, and
//! hands out ways into the running sandbox (`exec`, `attach`) over its control socket.

mod asks;
pub mod control;
pub mod credentials;
pub mod direct;
pub mod doctor;
pub mod egress;
pub mod egress_worker;
mod env;
mod ports;
mod relay;
mod requester;
pub mod review;
mod select;
pub mod system;

use std::path::PathBuf;

pub use env::environment;
use paddock_core::{
    Backend, BackendError, Dirs, Exit, ImageInfo, Launch, LockError, Network, SandboxLock,
    SandboxSpec, StartContext,
};
use paddock_store::{Store, StoreError};
pub use relay::{AttachEnd, AttachHub, SignalPipe};
pub use select::{SelectError, backend, backend_ids, backends, check_name as select_check, select};

/// The namespace backend's seccomp table: (syscall, action, reason).
pub fn seccomp_rules() -> Vec<(&'static str, &'static str, &'static str)> {
    paddock_confine::seccomp::RULES
        .iter()
        .map(|r| {
            (
                r.name,
                if r.deny == paddock_confine::seccomp::Deny::Eperm {
                    "EPERM"
                } else {
                    "ENOSYS"
                },
                r.reason,
            )
        })
        .collect()
}

/// Why a run failed before or around the command.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// the sandbox is running elsewhere
    #[error("sandbox {0} is already running (stop it first, or pick another --name)")]
    Busy(String),
    /// the lock could not be taken
    #[error("cannot lock sandbox {name}")]
    Lock {
        /// Sandbox.
        name: String,
        /// Cause.
        #[source]
        source: LockError,
    },
    /// choosing the backend failed
    #[error(transparent)]
    Select(#[from] SelectError),
    /// the backend failed
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// the state database failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// the terminal relay failed
    #[error("terminal relay failed")]
    Relay(#[source] std::io::Error),
    /// a published port could not be opened
    #[error("{0}")]
    Port(String),
    /// the running sandbox's supervisor could not be asked
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// a shared path may not be shared (checked again at every start: a stored sandbox may
    /// predate a rule, or a path may lead elsewhere now)
    #[error(transparent)]
    Share(#[from] paddock_core::shares::ShareError),
    /// a signal asked the supervisor to stop while the sandbox was being set up: whatever
    /// failed then (a helper in the same process group got the signal too) is its effect, not
    /// the cause
    #[error(
        "interrupted by {} {}",
        relay::signal_name(*.signal),
        if *.starting { "while starting" } else { "before the command finished" }
    )]
    Interrupted {
        /// The signal.
        signal: i32,
        /// Whether the sandbox was still being set up (else its backend failed as it ran).
        starting: bool,
    },
}

impl SupervisorError {
    /// The exit status the failure stands for: 128 + the signal for [`Self::Interrupted`],
    /// as a shell reports a command a signal ended.
    pub fn signal(&self) -> Option<i32> {
        match self {
            SupervisorError::Interrupted { signal, .. } => Some(*signal),
            _ => None,
        }
    }
}

/// Attaches this terminal to the command of the running sandbox `name` (started with a
/// terminal) until the user detaches (Ctrl-P Ctrl-Q) or the command ends. `ready` runs once
/// the command is reached and this terminal is raw (to say so: keys typed before then would be
/// echoed by this terminal as well).
pub fn attach(
    dirs: &Dirs,
    name: &paddock_core::SandboxName,
    ready: impl FnOnce(),
) -> Result<AttachEnd, SupervisorError> {
    let conn = control::Client::new(&dirs.control_socket(name), name.as_str())
        .attach()
        .map_err(SupervisorError::Control)?;
    relay::attach_client(conn, name.as_str(), ready).map_err(SupervisorError::Relay)
}

/// Runs `launch` in the running sandbox `spec` (started by another paddock process), attached
/// to this terminal, and waits for it. Only the command ends; the sandbox goes on.
pub fn run_exec(
    dirs: &Dirs,
    spec: &SandboxSpec,
    backend: &dyn Backend,
    launch: &Launch,
) -> Result<Outcome, SupervisorError> {
    let (handle, env) =
        control::Client::new(&dirs.control_socket(&spec.name), spec.name.as_str()).exec()?;
    let signals =
        relay::SignalPipe::catch(launch.stdio.is_pty()).map_err(SupervisorError::Relay)?;
    let mut launch = launch.clone();
    for (k, v) in env {
        if !launch.env.iter().any(|(have, _)| *have == k) {
            launch.env.push((k, v));
        }
    }
    let mut instance = backend.exec(spec, handle, &launch)?;
    let relayed = relay::relay(instance.as_mut(), &signals, None, None, spec.name.as_str());
    let exit = instance.wait();
    let diagnostics = instance.diagnostics();
    relayed.map_err(SupervisorError::Relay)?;
    Ok(Outcome {
        exit: exit?,
        diagnostics,
        limits: Vec::new(),
    })
}

/// Ends a sandbox that started but will not run: its command is killed, and the instance is
/// told that no relay will read its session (an instance whose end is reported through the
/// session, gVisor's or a VM's, would otherwise wait for that report for ever).
fn abandon(instance: &mut dyn paddock_core::Instance) {
    let _ = instance.signal(libc::SIGKILL);
    instance.relayed(paddock_core::SessionEnd::default());
    let _ = instance.wait();
}

/// What the run ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How the command ended.
    pub exit: Exit,
    /// Messages from the sandbox (e.g. "command not found").
    pub diagnostics: Vec<String>,
    /// The limits the sandbox ran into (memory, processes).
    pub limits: Vec<String>,
}

/// Catches the signals a sandbox's command gets passed on (SIGWINCH too with a `terminal`), for
/// [`run_attached`]: from before the sandbox is recorded, so that a stop signal during the
/// setup ends it cleanly instead of killing this process halfway (a row and a directory left
/// behind), and one that comes later reaches the command once it runs.
pub fn catch_signals(terminal: bool) -> Result<SignalPipe, SupervisorError> {
    relay::SignalPipe::catch(terminal).map_err(SupervisorError::Relay)
}

/// Refuses a spec whose shares may not be shared ([`paddock_core::shares`]): fail closed at
/// every start, whatever the record says.
fn check_shares(dirs: &Dirs, spec: &SandboxSpec) -> Result<(), SupervisorError> {
    let rules = paddock_core::shares::ShareRules::for_user(dirs);
    rules.check(spec.workspace.as_path(), false)?;
    for m in &spec.mounts {
        rules.check(m.host.as_path(), spec.dangerously_mount_sockets)?;
    }
    Ok(())
}

/// Runs `launch` in the sandbox `spec`, attached to this terminal, and waits for it.
/// `signals` were caught by the caller before it recorded the sandbox ([`catch_signals`]): a
/// stop signal from then on ends the start as [`SupervisorError::Interrupted`], one after the
/// start is passed on to the command.
#[allow(clippy::too_many_arguments)]
pub fn run_attached(
    dirs: &Dirs,
    store: &Store,
    spec: &SandboxSpec,
    backend: &dyn Backend,
    image: &ImageInfo,
    image_rootfs: PathBuf,
    launch: &Launch,
    signals: SignalPipe,
) -> Result<Outcome, SupervisorError> {
    let name = spec.name.to_string();
    check_shares(dirs, spec)?;
    let sandbox_dir = dirs.sandbox(&spec.name);
    std::fs::create_dir_all(&sandbox_dir).map_err(|source| {
        SupervisorError::Backend(BackendError::Io {
            what: format!("cannot create {}", sandbox_dir.display()),
            source,
        })
    })?;
    let _lock = match SandboxLock::try_acquire(&sandbox_dir.join("lock")) {
        Ok(l) => l,
        Err(LockError::Busy) => return Err(SupervisorError::Busy(name)),
        Err(source) => return Err(SupervisorError::Lock { name, source }),
    };
    // Asked to stop before anything started: nothing more is done.
    if let Some(signal) = signals.stop_requested() {
        return Err(SupervisorError::Interrupted {
            signal,
            starting: true,
        });
    }
    // Review mode: what the layer holds from earlier runs is judged against the host as it
    // is now, before this run may add to it (fail closed: unjudged changes would hide
    // conflicts), and this run's start is recorded for what it adds.
    if spec.review {
        review::begin(&sandbox_dir, spec, image.idmap.base).map_err(SupervisorError::Backend)?;
    }
    // A setup step that fails after a stop signal came (`timeout`, Ctrl-C: the signal reaches
    // the helpers of this process group too, mkfs or runsc) failed because of it: say so.
    let interrupted = |e: SupervisorError| match signals.stop_requested() {
        Some(signal) => SupervisorError::Interrupted {
            signal,
            starting: true,
        },
        None => e,
    };
    // Credentials bound to hosts: the proxy injects them; the sandbox gets placeholders and
    // trusts the sandbox's CA. Fail closed: secrets that cannot be read stop the start.
    let prepared = match spec.network {
        Network::Proxy => Some(
            credentials::prepare(
                &paddock_secrets::SecretStore::at_default(dirs.home()),
                &name,
                &sandbox_dir,
            )
            .map_err(|e| interrupted(e.into()))?,
        ),
        Network::None => None,
    };
    // The host's extra CAs (a company's inspecting proxy, a private registry's), unless the
    // sandbox was made with --no-host-ca, and the sandbox's own (every sandbox with the
    // network has one).
    let mut extra_ca = String::new();
    if spec.host_ca && spec.network == Network::Proxy {
        extra_ca.push_str(&paddock_core::hostca::extras_pem(
            &image_rootfs,
            &dirs.home().join("hostca"),
        ));
    }
    let exec_env = match &prepared {
        Some(p) => {
            extra_ca.push_str(&p.ca_pem);
            p.env.clone()
        }
        // No network, so no CA.
        None => Vec::new(),
    };
    let mut launch = launch.clone();
    for (k, v) in &exec_env {
        if !launch.env.iter().any(|(have, _)| have == k) {
            launch.env.push((k.clone(), v.clone()));
        }
    }
    let extra_ca = (!extra_ca.is_empty()).then_some(extra_ca);
    let launch = &launch;
    // The proxy process starts now, so its setup overlaps the sandbox's.
    let pending = match spec.network {
        Network::None => None,
        Network::Proxy => Some(
            egress::spawn(
                &dirs.database(),
                &name,
                prepared.map(|p| p.credentials),
                spec.upstream_proxy.clone(),
                paddock_proxy::ask::AskSettings {
                    timeout_ms: u64::from(spec.ask_timeout_s.unwrap_or(60)) * 1000,
                    ..Default::default()
                },
            )
            .map_err(|e| interrupted(e.into()))?,
        ),
    };
    store.mark_running(&spec.name, std::process::id())?;
    let ctx = StartContext {
        sandbox_dir,
        image_rootfs,
        image: image.clone(),
        extra_ca,
    };
    // Other terminals may attach to a command that has one (`paddock attach`).
    let hub = (launch.stdio.is_pty())
        .then(relay::AttachHub::new)
        .and_then(Result::ok)
        .map(std::sync::Arc::new);
    // Requests an ask rule holds are put to the command's terminal, where it has one.
    let prompts = (launch.stdio.is_pty() && spec.network == Network::Proxy)
        .then(|| std::sync::Arc::new(asks::Prompts::new(dirs.database(), &name)));
    let control = control::Server::start(
        &dirs.control_socket(&spec.name),
        &name,
        backend.id(),
        &exec_env,
        signals.injector().ok(),
        hub.clone(),
    );
    let mut instance = match backend.start(&ctx, spec, launch) {
        Ok(i) => i,
        Err(e) => {
            let _ = store.mark_stopped(&spec.name, None, None);
            drop(control);
            return Err(interrupted(e.into()));
        }
    };
    if let Some(c) = &control {
        c.set_pid(instance.pid());
        if let Err(e) = c.set_execs(instance.execs(), &spec.ports) {
            // Fail closed: a port the user asked for is not there.
            abandon(instance.as_mut());
            let _ = store.mark_stopped(&spec.name, None, None);
            drop(control);
            return Err(interrupted(SupervisorError::Port(e)));
        }
    } else if !spec.ports.is_empty() {
        abandon(instance.as_mut());
        let _ = store.mark_stopped(&spec.name, None, None);
        return Err(SupervisorError::Port(
            "the control socket could not be made, so no port can be published".into(),
        ));
    }
    let proxy = match pending {
        None => None,
        Some(pending) => match pending.serve(
            instance.take_egress(),
            prompts.clone(),
            // The process that made a request is looked up where the supervisor holds no
            // privilege and the sandbox's processes are the host's (ns in user mode).
            (backend.id() == "ns" && !rustix::process::geteuid().is_root()).then(|| instance.pid()),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                // Fail closed: no proxy, no sandbox.
                abandon(instance.as_mut());
                let _ = store.mark_stopped(&spec.name, None, None);
                drop(control);
                return Err(interrupted(e.into()));
            }
        },
    };
    let relayed = relay::relay(
        instance.as_mut(),
        &signals,
        hub.as_deref(),
        prompts.as_deref(),
        &name,
    );
    // The command ended: the sandbox ends with it, so no more commands start there.
    if let Some(c) = &control {
        let _ = c.set_execs(None, &[]);
    }
    let exit = instance.wait();
    if let Some(p) = proxy {
        p.stop();
    }
    let diagnostics = instance.diagnostics();
    let limits = instance.limits_hit();
    let status = exit.as_ref().map(Exit::status).ok();
    let cause = (!limits.is_empty()).then(|| limits.join("; "));
    store.mark_stopped(&spec.name, status, cause.as_deref())?;
    drop(control);
    relayed.map_err(SupervisorError::Relay)?;
    // A backend that failed after a stop signal came (gVisor's runsc got it too) failed
    // because of it.
    let exit = exit.map_err(|e| match signals.stop_requested() {
        Some(signal) => SupervisorError::Interrupted {
            signal,
            starting: false,
        },
        None => e.into(),
    })?;
    Ok(Outcome {
        exit,
        diagnostics,
        limits,
    })
}
