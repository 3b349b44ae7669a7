//! The proxy process: `paddock __egress`, started by [`crate::egress::spawn`].
//!
//! It gets four streams from its parent (descriptors 3 to 6: control, rules, audit, asks; see
//! [`paddock_proxy::channel`]). It reads its settings, builds what needs a file (the host's
//! trusted roots, the sandbox's CA), and then confines itself before it reads a byte the
//! sandbox sends:
//!
//! - started as root, it becomes the sandbox's own egress uid and gid ([`paddock_core::idmap::helper_uid`]), with no
//!   supplementary group, so it has no capability and owns no file;
//! - `no_new_privs`, not dumpable (no other process of the same uid may trace it or read its
//!   memory, which holds the secrets it injects), killed with its parent;
//! - Landlock (where the kernel has it): it may read the system's configuration and libraries (`/etc`, `/usr`, `/lib*`,
//!   `/run`: the resolver needs them) and nothing else, write nothing, and signal or reach by
//!   abstract socket no process outside itself;
//! - seccomp: the sandboxes' filter (`paddock_confine::seccomp`), and one that refuses `execve`
//!   and every socket family but IPv4, IPv6 and netlink.
//!
//! Every layer is required: one that cannot be applied stops the process, and the sandbox
//! with it. It then serves until its parent sends SIGTERM.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use paddock_proxy::ProxyConfig;
use paddock_proxy::ask::Asker;
use paddock_proxy::channel::{self, AuditForwarder, CredentialSettings, MAX_FRAME, Status};
use paddock_proxy::intercept::{Credentials, SandboxCa};
use paddock_proxy::resolve::{Resolver, TEST_OVERRIDE_ENV};
use paddock_proxy::rules::RuleSource;

use crate::egress::WorkerSettings;

/// What the proxy process may read.
const READABLE: &[&str] = &["/etc", "/usr", "/lib", "/lib64", "/lib32", "/run"];

/// Runs the proxy process; returns its exit code.
pub fn main() -> i32 {
    // Dies with the supervisor from here on (checked below against the pid it sends).
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // SAFETY: descriptors 3, 4 and 5 are this process's streams by the contract of
    // `egress::spawn`, and nothing else here owns them.
    let (mut control, rules, audit, asks) = unsafe {
        (
            UnixStream::from_raw_fd(3),
            UnixStream::from_raw_fd(4),
            UnixStream::from_raw_fd(5),
            UnixStream::from_raw_fd(6),
        )
    };
    for s in [&control, &rules, &audit, &asks] {
        let _ = rustix::io::fcntl_setfd(s, rustix::io::FdFlags::CLOEXEC);
    }
    match serve(&mut control, rules, audit, asks) {
        Ok(()) => 0,
        Err(error) => {
            let _ = channel::send(&mut control, &Status { error: Some(error) });
            1
        }
    }
}

fn serve(
    control: &mut UnixStream,
    rules: UnixStream,
    audit: UnixStream,
    asks: UnixStream,
) -> Result<(), String> {
    let settings: WorkerSettings =
        channel::receive(control, MAX_FRAME).map_err(|e| format!("no settings: {e}"))?;
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(settings.parent)
    {
        return Err("the supervisor is gone".into());
    }
    let sandbox = settings.proxy.sandbox.clone();
    // What needs a file, before the files go.
    let credentials = settings
        .proxy
        .credentials
        .map(|c| credentials(&sandbox, c))
        .transpose()?;
    let resolver = match std::env::var(TEST_OVERRIDE_ENV) {
        Ok(spec) => Resolver::with_overrides(
            Resolver::parse_overrides(&spec).map_err(|e| format!("{TEST_OVERRIDE_ENV}: {e}"))?,
        ),
        Err(_) => Resolver::system(),
    };
    // SIGTERM is how the parent stops this process: blocked here, before any thread exists,
    // so every thread inherits the mask and only the wait below takes it.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&term), None)
        .map_err(|e| format!("cannot block SIGTERM: {e}"))?;
    confine(settings.uid)?;
    let listener = channel::receive_listener(control)
        .map_err(|e| format!("no listener from the supervisor: {e}"))?;
    let (forwarder, sink) =
        AuditForwarder::start(audit).map_err(|e| format!("cannot start the audit thread: {e}"))?;
    let asks = Asker::start(asks, settings.proxy.ask)
        .map_err(|e| format!("cannot start the asks thread: {e}"))?;
    let handle = paddock_proxy::start(
        ProxyConfig {
            sandbox,
            rules: RuleSource::remote(rules),
            audit: sink,
            resolver,
            connect_timeout: Duration::from_millis(settings.proxy.connect_timeout_ms),
            credentials,
            upstream: settings.proxy.upstream,
            asks: Some(asks),
        },
        vec![listener],
        2,
    )
    .map_err(|e| e.to_string())?;
    channel::send(control, &Status { error: None })
        .map_err(|e| format!("cannot answer the supervisor: {e}"))?;
    let _ = term.wait();
    handle.stop();
    forwarder.close();
    Ok(())
}

fn credentials(sandbox: &str, c: CredentialSettings) -> Result<Arc<Credentials>, String> {
    let ca = SandboxCa::from_key_pem(sandbox, &c.ca_key_pem)
        .map_err(|e| format!("the sandbox's CA: {e}"))?;
    Credentials::new(ca, c.bindings)
        .map(Arc::new)
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

/// The confinement the module's documentation lists ([`paddock_confine::helper::confine`]),
/// with the network helper's filter on top. Runs on the only thread.
fn confine(uid: Option<u32>) -> Result<(), String> {
    let filters = paddock_confine::seccomp::network_helper()
        .map_err(|e| format!("cannot apply seccomp: {e}"))?;
    paddock_confine::helper::confine(uid, READABLE, filters)
}
