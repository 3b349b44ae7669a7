//! The `Backend` trait: one isolation technology behind one interface.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use paddock_policy::SandboxName;
use serde::Serialize;

use crate::idmap::IdMap;
use crate::image::ImageInfo;
use crate::spec::SandboxSpec;

/// Why a backend could not start or run a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// the backend cannot run on this host
    #[error("the {backend} backend is not usable on this host: {reason}")]
    Unavailable {
        /// Backend id.
        backend: &'static str,
        /// Why, and what to do.
        reason: String,
    },
    /// a security layer could not be applied, so the sandbox was not started (fail closed)
    #[error("refusing to start: the {layer} layer could not be applied: {message}")]
    Layer {
        /// Which layer.
        layer: String,
        /// What went wrong.
        message: String,
    },
    /// an image could not be prepared for the backend (the message says what and why)
    #[error("{0}")]
    Image(String),
    /// an operating-system call failed
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl BackendError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
        let what = what.into();
        move |source| BackendError::Io { what, source }
    }
}

/// Where the sandbox's standard streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// The supervisor's own stdin/stdout/stderr are passed in (pipes, files).
    Inherit,
    /// A pty is created inside the sandbox; its master is handed to the supervisor. It has
    /// `size` (rows, columns) from the start when given; else 0 × 0 until the relay sets it.
    Pty {
        /// The terminal's size when the command starts.
        size: Option<(u16, u16)>,
    },
}

impl Stdio {
    /// A terminal (of this process's terminal's size, when stdin is one) when `tty`, else this
    /// process's streams.
    pub fn for_this_terminal(tty: bool) -> Stdio {
        if !tty {
            return Stdio::Inherit;
        }
        let size = rustix::termios::tcgetwinsize(rustix::stdio::stdin())
            .ok()
            .filter(|w| w.ws_row > 0 && w.ws_col > 0)
            .map(|w| (w.ws_row, w.ws_col));
        Stdio::Pty { size }
    }

    /// Whether the command gets a terminal.
    pub fn is_pty(self) -> bool {
        matches!(self, Stdio::Pty { .. })
    }
}

/// One command to run in a sandbox.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside.
    pub cwd: String,
    /// Uid inside.
    pub uid: u32,
    /// How the streams are connected.
    pub stdio: Stdio,
}

impl Launch {
    /// What the in-sandbox helper runs for this launch (every backend sends the same).
    pub fn command(&self, no_new_privs: bool) -> paddock_wire::Command {
        paddock_wire::Command {
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            uid: self.uid,
            gid: self.uid,
            groups: vec![],
            tty: self.stdio.is_pty(),
            size: match self.stdio {
                Stdio::Pty { size } => size,
                Stdio::Inherit => None,
            },
            no_new_privs,
        }
    }
}

/// A host path to share with a sandbox, checked: canonical, and refused when it is or passes
/// through a symlink (a workspace is attacker-writable, so a symlink there could point a later
/// run's share anywhere on the host). Returns the canonical path and its metadata.
pub fn shared_path(
    host: &paddock_policy::AbsPath,
    what: &str,
) -> Result<(PathBuf, std::fs::Metadata), BackendError> {
    let canonical = std::fs::canonicalize(host.as_path())
        .map_err(BackendError::io(format!("{what} {host} is not accessible")))?;
    if canonical != host.as_path() {
        return Err(BackendError::Io {
            what: format!(
                "{what} {host} is a symlink or passes through one (it resolves to {}); give the real path",
                canonical.display()
            ),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    let meta = std::fs::metadata(&canonical).map_err(BackendError::io(format!("{what} {host}")))?;
    Ok((canonical, meta))
}

/// The defaults for a sandbox on this host whose layer lives under `state`:
/// [`paddock_policy::Limits::host_defaults`] of the host's memory (`MemTotal`) and of the space
/// free there (`statvfs`, for an unprivileged user).
pub fn host_limits(state: &Path) -> paddock_policy::Limits {
    let ram = host_capacity().memory;
    // The state directory may not exist yet: its nearest existing parent is on the same disk.
    let free = state
        .ancestors()
        .find_map(|p| rustix::fs::statvfs(p).ok())
        .map_or(0, |v| v.f_bavail.saturating_mul(v.f_frsize));
    paddock_policy::Limits::host_defaults(ram, free)
}

/// What this host has: its online CPUs (`/sys/devices/system/cpu/online`) and its memory
/// (`MemTotal`); zero where it cannot be read.
pub fn host_capacity() -> paddock_policy::HostCapacity {
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib.saturating_mul(1024));
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|l| count_cpu_list(&l))
        .unwrap_or(0);
    paddock_policy::HostCapacity { cpus, memory }
}

/// The number of CPUs in a kernel CPU list (`0-3,6,8-9`), or `None` when it is malformed.
fn count_cpu_list(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.trim().split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?),
            None => {
                let one = part.parse::<u32>().ok()?;
                (one, one)
            }
        };
        n = n.checked_add(hi.checked_sub(lo)?.checked_add(1)?)?;
    }
    Some(n)
}

/// Everything a backend needs besides the spec.
#[derive(Debug, Clone)]
pub struct StartContext {
    /// The sandbox's own directory (writable layer, lock, logs).
    pub sandbox_dir: PathBuf,
    /// The image's root filesystem.
    pub image_rootfs: PathBuf,
    /// The image's metadata.
    pub image: ImageInfo,
    /// A CA certificate (PEM) the sandbox's trust store must include for this run: the
    /// sandbox's own CA, when the proxy injects credentials.
    pub extra_ca: Option<String>,
}

/// Where clients inside find the trust store.
pub const TRUST_STORE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Writes the sandbox's trust store for a run (the image's bundle plus `ca`) into the sandbox's
/// directory on the host (never into its layer), for a backend to show read-only at
/// [`TRUST_STORE`].
pub fn trust_store_file(ctx: &StartContext, ca: &str) -> Result<PathBuf, BackendError> {
    let mut bundle =
        std::fs::read_to_string(ctx.image_rootfs.join(TRUST_STORE.trim_start_matches('/')))
            .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca);
    let etc = ctx.sandbox_dir.join("etc");
    std::fs::create_dir_all(&etc)
        .map_err(BackendError::io(format!("cannot create {}", etc.display())))?;
    let path = etc.join("ca-certificates.crt");
    std::fs::write(&path, bundle)
        .map_err(BackendError::io(format!("cannot write {}", path.display())))?;
    Ok(path)
}

/// How a sandbox's command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Exit {
    /// Exited with a status.
    Code {
        /// The status.
        code: i32,
    },
    /// Killed by a signal.
    Signal {
        /// The signal number.
        signal: i32,
    },
}

impl Exit {
    /// The status a shell would show: the code, or 128 + the signal.
    pub fn status(&self) -> i32 {
        match self {
            Exit::Code { code } => *code,
            Exit::Signal { signal } => 128 + signal,
        }
    }
}

/// Where a sandbox's connections to the egress proxy arrive on the host.
#[derive(Debug)]
pub enum Egress {
    /// A listening TCP socket that lives in the sandbox's own network namespace (bound to its
    /// `127.0.0.1:3128`); the host accepts from it directly.
    TcpListener(OwnedFd),
    /// A listening Unix socket on the host where the sandbox's proxy connections arrive (a VM's
    /// vsock connections to the proxy port, bridged by the vsock device).
    UnixListener(OwnedFd),
}

/// What another process needs to run one more command in a running sandbox: handed out by the
/// sandbox's supervisor over its control socket, used by [`Backend::exec`].
#[derive(Debug)]
pub struct ExecHandle {
    /// The backend's way in (a pidfd of the sandbox's pid 1, a connection to its helper).
    pub fd: OwnedFd,
    /// Whatever else the backend needs (JSON).
    pub detail: String,
    /// A second descriptor where the backend needs one (ns in user mode: the sandbox's outer
    /// user namespace).
    pub extra: Option<OwnedFd>,
}

/// Makes [`ExecHandle`]s for one running sandbox, on the supervisor's control thread.
pub trait Execs: Send + Sync {
    /// A handle for one more command.
    fn handle(&self) -> Result<ExecHandle, BackendError>;
    /// A stream connected to `127.0.0.1:port` inside the sandbox (a published port's
    /// connection; nothing but the sandbox's own loopback is reachable this way).
    fn dial(&self, port: u16) -> Result<OwnedFd, BackendError>;
}

impl std::fmt::Debug for dyn Execs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Execs")
    }
}

/// What carries a command's bytes between the user and the sandbox. The supervisor hands these
/// to its relay process, which holds no privilege: no privileged process reads them.
#[derive(Debug)]
pub enum Streams {
    /// The command has the supervisor's own stdin, stdout and stderr: nothing to relay.
    Direct,
    /// The master of the command's terminal, a pty on the host (ns).
    Pty(OwnedFd),
    /// The host's ends of the command's three pipes (ns without a terminal: the command never
    /// holds the host's own streams).
    Pipes {
        /// Where the command's stdin comes from (write end).
        stdin: OwnedFd,
        /// Its stdout (read end).
        stdout: OwnedFd,
        /// Its stderr (read end).
        stderr: OwnedFd,
    },
    /// An in-sandbox helper's session connection ([`crate::RemoteSession`]): frames carry the
    /// output, input, signals, terminal sizes and the exit (gvisor, vm, and exec there).
    Session {
        /// The connection.
        conn: std::os::unix::net::UnixStream,
        /// Whether the command has a terminal.
        tty: bool,
    },
}

/// What the relay process read from a session about how its command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionEnd {
    /// The exit status, when it arrived.
    pub exit: Option<Exit>,
    /// What the helper said about the command (e.g. "command not found").
    pub diagnostics: Vec<String>,
    /// The limits the helper saw the sandbox run into, as sentences starting with the limit.
    pub limits: Vec<String>,
}

/// A running sandbox as its backend sees it.
pub trait Instance: Send + std::fmt::Debug {
    /// Host pid of the process that stands for the sandbox (signal it to reach the command).
    fn pid(&self) -> i32;
    /// A descriptor that becomes readable when the sandbox has exited (a pidfd).
    fn exit_fd(&self) -> BorrowedFd<'_>;
    /// What carries the command's bytes (taken once, by the supervisor's relay process).
    fn take_streams(&mut self) -> Streams;
    /// Sends `signal` to the command. For a command whose streams are a helper's session, this
    /// works until the streams are taken; from then on the relay process carries signals.
    fn signal(&self, signal: i32) -> Result<(), BackendError>;
    /// What the relay process read from a session's end (its exit, diagnostics and limits),
    /// given before [`Instance::wait`]. Only instances whose streams are a session use it.
    fn relayed(&mut self, _end: SessionEnd) {}
    /// Waits for the end and cleans up what the backend made on the host for this run.
    fn wait(&mut self) -> Result<Exit, BackendError>;
    /// Messages from the sandbox about the command (e.g. "command not found"), taken once.
    fn diagnostics(&mut self) -> Vec<String>;
    /// Where the sandbox's proxy connections arrive (taken once). `None` when the spec has no
    /// network; a backend that was asked for the proxy and cannot give it fails `start`.
    fn take_egress(&mut self) -> Option<Egress>;
    /// The limits the sandbox ran into (memory, processes), known after [`Instance::wait`].
    fn limits_hit(&self) -> Vec<String> {
        Vec::new()
    }
    /// What hands out ways to run more commands in this sandbox while it runs (`None` for an
    /// instance that stands for one exec'd command).
    fn execs(&self) -> Option<Box<dyn Execs>> {
        None
    }
}

/// One line of a backend's probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeItem {
    /// What was checked.
    pub name: String,
    /// Whether it works.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it does not work.
    pub fix: Option<String>,
    /// Whether the backend needs it (false: optional hardening or extra).
    pub required: bool,
}

/// What a backend found on this host.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Backend id.
    pub backend: &'static str,
    /// The checks.
    pub items: Vec<ProbeItem>,
}

impl Probe {
    /// True when every required check passed.
    pub fn usable(&self) -> bool {
        self.items.iter().all(|i| i.ok || !i.required)
    }

    /// The first failing required check, as a sentence.
    pub fn reason(&self) -> Option<String> {
        self.items.iter().find(|i| i.required && !i.ok).map(|i| {
            let fix = i
                .fix
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default();
            format!("{}: {}{fix}", i.name, i.detail)
        })
    }
}

/// An isolation technology. Implementations live in their own crates; the supervisor picks one.
pub trait Backend: Send + Sync {
    /// Short id used on the command line and in the state database (`ns`, `gvisor`, `vm`).
    fn id(&self) -> &'static str;
    /// What this host offers the backend.
    fn probe(&self) -> Probe;
    /// The limits a new sandbox gets where none is given, its layer living under `state`
    /// ([`host_limits`]: a share of this host's memory and free disk).
    fn default_limits(&self, state: &Path) -> paddock_policy::Limits {
        host_limits(state)
    }
    /// Whether this backend can enforce `limits` here, checked before a sandbox is created or
    /// changed, so that a limit is never silently not applied.
    fn check_limits(&self, _limits: &paddock_policy::Limits) -> Result<(), BackendError> {
        Ok(())
    }
    /// Whether this backend can run a Docker Engine inside its sandboxes (`--docker`); the
    /// error says why not, as a sentence for the user, and is given at create.
    fn docker(&self) -> Result<(), String> {
        Err(format!(
            "the {} backend cannot run a Docker Engine inside its sandboxes",
            self.id()
        ))
    }
    /// Prepares what this backend needs from a freshly built image whose tree is `rootfs` (owned
    /// as `idmap` says), where the backend can run here; otherwise its first start does it.
    /// Returns what was prepared, as a sentence for the user; progress goes to `progress`.
    fn prepare_image(
        &self,
        _rootfs: &Path,
        _idmap: &IdMap,
        _progress: &mut dyn FnMut(&str),
    ) -> Result<Option<String>, BackendError> {
        Ok(None)
    }
    /// Applies the limits `limits` gives (the others are `None`) to the running sandbox
    /// `sandbox` now. Returns what could not be applied live, one reason each: those apply at
    /// its next start.
    fn update_limits(&self, sandbox: &SandboxName, limits: &paddock_policy::Limits) -> Vec<String>;
    /// Gives the disk of the stopped sandbox whose directory is `sandbox_dir` the size `bytes`:
    /// one that exists grows and cannot shrink (a [`BackendError::Layer`] says why); with none
    /// yet, the next start makes one of that size. Called with the sandbox's lock held.
    fn resize_disk(&self, sandbox_dir: &Path, bytes: u64) -> Result<(), BackendError>;
    /// Removes the writable layer (installed packages, home) the sandbox whose directory is
    /// `sandbox_dir` keeps between runs, so that its next start begins from the image (`reset`).
    /// Called with the sandbox's lock held.
    fn reset_layer(&self, sandbox_dir: &Path) -> Result<(), BackendError>;
    /// Removes what a run of `sandbox` may have left on the host when its supervisor was killed
    /// (the host cgroups, which every backend makes through the same toolkit, are the caller's
    /// to sweep). Called with the sandbox's lock held, so none of it is in use.
    fn remove_leftovers(&self, _sandbox: &SandboxName) {}
    /// Starts `launch` in a new instance of the sandbox described by `spec`.
    fn start(
        &self,
        ctx: &StartContext,
        spec: &SandboxSpec,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError>;
    /// Runs `launch` in the running sandbox `handle` came from. The instance returned stands
    /// for that one command: waiting for it ends nothing else.
    fn exec(
        &self,
        spec: &SandboxSpec,
        handle: ExecHandle,
        launch: &Launch,
    ) -> Result<Box<dyn Instance>, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        let cases: &[(&str, Option<u32>)] = &[
            ("0\n", Some(1)),
            ("0-1\n", Some(2)),
            ("0-3,6,8-9", Some(7)),
            ("", None),
            ("3-1", None),
            ("0-x", None),
        ];
        for (list, want) in cases {
            assert_eq!(count_cpu_list(list), *want, "{list:?}");
        }
    }
}
