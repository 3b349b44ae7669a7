//! The egress proxy of a running sandbox, in a process of its own.
//!
//! The proxy parses every byte the sandbox sends out (HTTP framing, TLS, credential
//! injection), so it holds nothing a bug there could turn against the host: it runs as
//! [`crate::egress_worker`], started from this executable before the sandbox (so its setup
//! overlaps the backend's), confined before it reads anything the sandbox sends. This side
//! keeps the state database: it answers the worker's rule requests and writes its audit
//! records ([`paddock_proxy::channel`]).

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use paddock_confine::helper;
use paddock_core::idmap::{Helper, helper_uid};
use paddock_core::{BackendError, Egress};
use paddock_proxy::Listener;
use paddock_proxy::ask::{self, AskSettings, Told};
use paddock_proxy::audit::AuditWriter;
use paddock_proxy::channel::{self, CredentialSettings, MAX_UNTRUSTED_FRAME, Settings, Status};
use paddock_proxy::intercept::TEST_UPSTREAM_CA_ENV;
use paddock_proxy::resolve::TEST_OVERRIDE_ENV;
use paddock_store::Store;
use serde::{Deserialize, Serialize};

/// The hidden first argument that makes `paddock` the proxy process.
pub const WORKER_ARG: &str = "__egress";

/// How long the proxy process may take to be ready once it has its listener.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the worker is told first.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerSettings {
    /// The supervisor's pid: the worker checks it is still its parent once it has armed its
    /// parent-death signal.
    pub parent: u32,
    /// The uid (and gid) to run as, when started as root.
    pub uid: Option<u32>,
    /// The proxy's own settings.
    pub proxy: Settings,
}

fn layer(message: String) -> BackendError {
    BackendError::Layer {
        layer: "network".into(),
        message,
    }
}

/// A proxy process started before its sandbox: [`Pending::serve`] hands it the listener.
#[derive(Debug)]
pub struct Pending {
    child: helper::Worker,
    control: UnixStream,
    rules: UnixStream,
    audit: UnixStream,
    asks: UnixStream,
    ask: AskSettings,
    db: PathBuf,
    sandbox: String,
}

/// Starts the proxy process for `sandbox`, whose rules and audit log are in `db`.
pub fn spawn(
    db: &Path,
    sandbox: &str,
    credentials: Option<CredentialSettings>,
    upstream: Option<paddock_policy::net::UpstreamProxy>,
    ask: AskSettings,
) -> Result<Pending, BackendError> {
    let pair =
        || UnixStream::pair().map_err(|e| layer(format!("cannot make the proxy's channel: {e}")));
    let (control, control_child) = pair()?;
    let (rules, rules_child) = pair()?;
    let (audit, audit_child) = pair()?;
    let (asks, asks_child) = pair()?;
    // Tests point the proxy at local names and a local CA; nothing else of this environment
    // reaches it.
    let env: Vec<CString> = [TEST_OVERRIDE_ENV, TEST_UPSTREAM_CA_ENV, "RUST_BACKTRACE"]
        .iter()
        .filter_map(|var| {
            let v = std::env::var_os(var)?;
            CString::new([var.as_bytes(), b"=", v.as_bytes()].concat()).ok()
        })
        .collect();
    let fds = [&control_child, &rules_child, &audit_child, &asks_child].map(AsRawFd::as_raw_fd);
    let child = helper::spawn(&helper::Spawn {
        arg: c"__egress",
        fds: &fds,
        stdio: false,
        blocked: nix::sys::signal::SigSet::empty(),
        env: &env,
    })
    .map_err(|e| layer(format!("cannot start the proxy process: {e}")))?;
    drop((control_child, rules_child, audit_child, asks_child));
    let mut pending = Pending {
        child,
        control,
        rules,
        audit,
        asks,
        ask,
        db: db.to_owned(),
        sandbox: sandbox.to_owned(),
    };
    let uid = rustix::process::geteuid()
        .is_root()
        .then(|| helper_uid(sandbox, Helper::Egress));
    let settings = WorkerSettings {
        parent: std::process::id(),
        uid,
        proxy: Settings {
            sandbox: sandbox.to_owned(),
            connect_timeout_ms: 15_000,
            credentials,
            upstream,
            ask,
        },
    };
    channel::send(&mut pending.control, &settings)
        .map_err(|e| layer(format!("cannot reach the proxy process: {e}")))?;
    Ok(pending)
}

impl Pending {
    /// Hands the proxy process the sandbox's `egress` listener and waits until it serves.
    /// Requests that wait for an answer are put to `prompts` (the command's terminal).
    /// `requester`: the pid of the sandbox's init, where the process that made a request may
    /// be looked up ([`crate::requester`]).
    pub fn serve(
        mut self,
        egress: Option<Egress>,
        prompts: Option<Arc<crate::asks::Prompts>>,
        requester: Option<i32>,
    ) -> Result<RunningProxy, BackendError> {
        let listener = match egress {
            Some(Egress::TcpListener(fd)) => Listener::Tcp(std::net::TcpListener::from(fd)),
            Some(Egress::UnixListener(fd)) => {
                Listener::Unix(std::os::unix::net::UnixListener::from(fd))
            }
            None => {
                return Err(layer(
                    "the backend gave no egress channel; refusing to run without the proxy".into(),
                ));
            }
        };
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| layer(format!("{what}: {e}"))
        };
        channel::send_listener(&self.control, &listener)
            .map_err(io("cannot hand the proxy process its listener"))?;
        drop(listener);
        self.control
            .set_read_timeout(Some(READY_TIMEOUT))
            .map_err(io("proxy process"))?;
        let status: Status = channel::receive(&mut self.control, MAX_UNTRUSTED_FRAME)
            .map_err(io("the proxy process did not start"))?;
        if let Some(e) = status.error {
            return Err(layer(format!("the proxy process stopped: {e}")));
        }
        let (writer, sink) = Store::open(&self.db)
            .map_err(|e| e.to_string())
            .and_then(|log| AuditWriter::start(log).map_err(|e| e.to_string()))
            .map_err(|e| layer(format!("cannot open the audit log: {e}")))?;
        let clone = |s: &UnixStream| s.try_clone().map_err(io("proxy channel"));
        let (rules, audit) = (clone(&self.rules)?, clone(&self.audit)?);
        let (db, sandbox) = (self.db.clone(), self.sandbox.clone());
        let rules_thread = std::thread::Builder::new()
            .name("paddock-rules".into())
            .spawn(move || {
                let served = Store::open(&db)
                    .map_err(std::io::Error::other)
                    .and_then(|store| channel::serve_rules(rules, &store, &sandbox));
                if let Err(e) = served {
                    // The worker then denies everything: fail closed.
                    eprintln!("paddock: answering the egress proxy's rule requests failed ({e}); it now denies every request");
                }
            })
            .map_err(io("cannot start the rules thread"))?;
        // What a killed supervisor of an earlier run left: its questions, its one-run rules.
        if let Ok(store) = Store::open(&self.db) {
            let _ = store.end_run(&self.sandbox);
        }
        let asks = clone(&self.asks)?;
        let (db, sandbox, ask) = (self.db.clone(), self.sandbox.clone(), self.ask);
        let asks_thread = std::thread::Builder::new()
            .name("paddock-asks".into())
            .spawn(move || {
                let served = Store::open(&db)
                    .map_err(std::io::Error::other)
                    .and_then(|store| {
                        ask::serve_asks(asks, &store, &sandbox, ask, &|told| match told {
                            Told::Asked(id, q) => {
                                let command = requester.zip(q.client.as_deref()).and_then(
                                    |(pid, client)| crate::requester::command_of(pid, client),
                                );
                                if let Some(c) = &command {
                                    let _ = store.set_command(id, c);
                                }
                                crate::asks::tell(
                                    &sandbox,
                                    id,
                                    q,
                                    ask,
                                    prompts.as_deref(),
                                    command.as_deref(),
                                );
                            }
                            Told::Gone(id) => crate::asks::gone(id, prompts.as_deref()),
                        })
                    });
                if let Err(e) = served {
                    // The worker then denies what waits, and every later ask: fail closed.
                    eprintln!("paddock: answering the egress proxy's questions failed ({e}); requests an ask rule holds are now denied");
                }
            })
            .map_err(io("cannot start the asks thread"))?;
        let sandbox = self.sandbox.clone();
        let audit_thread = std::thread::Builder::new()
            .name("paddock-audit-in".into())
            .spawn(move || {
                let notices = crate::asks::Denials::default();
                let seen = |r: &paddock_proxy::audit::Record| {
                    if let Some(line) = notices.notice(r) {
                        crate::asks::say(&line);
                    }
                };
                if let Err(e) = channel::receive_audit(audit, &sink, &sandbox, &seen) {
                    eprintln!("paddock: reading the egress proxy's audit records failed ({e}); later decisions are not logged");
                }
            })
            .map_err(io("cannot start the audit thread"))?;
        Ok(RunningProxy {
            pending: Some(self),
            threads: vec![rules_thread, audit_thread, asks_thread],
            writer: Some(writer),
        })
    }
}

/// The proxy of one sandbox; stop it after the sandbox ends so every decision is written.
#[derive(Debug)]
pub struct RunningProxy {
    pending: Option<Pending>,
    threads: Vec<JoinHandle<()>>,
    writer: Option<AuditWriter>,
}

impl RunningProxy {
    /// Stops the proxy process (it ends open tunnels and sends their records) and waits until
    /// its audit records are written.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        p.child.terminate();
        // Dropping a worker that did not end in time kills it.
        p.child.wait_for(Duration::from_secs(3));
        // The process held the only other ends of the streams: the threads read what it sent
        // and then the end of their streams.
        let (db, sandbox) = (p.db.clone(), p.sandbox.clone());
        drop(p);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Nothing waits any more, and what was approved for this run only ends with it.
        if let Ok(store) = Store::open(&db) {
            let _ = store.end_run(&sandbox);
        }
        if let Some(w) = self.writer.take() {
            w.close();
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}
