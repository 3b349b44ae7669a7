//! Commands in a running ns sandbox through its exec socket (`paddock_supervisor::direct`):
//! the server connects, the sandbox's pid 1 forks the command with pipes this server made, and
//! the end comes back on the connection. No process starts on the host and the state database
//! is not opened: what a command needs besides its request (the sandbox's settings, the
//! variables its supervisor gives every command) is read once per run of the sandbox and kept,
//! keyed by the exec socket's identity (each start binds a new one).
//!
//! A sandbox without a served exec socket (gVisor, a VM, an ns sandbox started by an older
//! version, one that stopped) gets the `paddock __exec` process instead, which also gives the
//! right error for a stopped one.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, PoisonError};

use paddock_core::SandboxName;
use paddock_engine::exec::direct::{self, DirectEnd, DirectError, Step, Tracker};
use paddock_engine::exec::{DirectTarget, ExecRequest, WindowSize};
use tokio::net::unix::pipe;

use crate::Problem;
use crate::sandboxes::{ApiState, Capped, Notes, blocking};

/// The exec socket's identity: a new start binds a new socket (its inode may be reused, its
/// change time not).
type SocketId = (u64, u64, i64, i64);

/// What commands in each sandbox need, by sandbox, with the socket it was read for.
#[derive(Debug, Default)]
pub struct Targets(Mutex<HashMap<SandboxName, (SocketId, Arc<DirectTarget>)>>);

/// A command started through the exec socket: its connection, what its reports said so far,
/// and the host ends of its pipes. Dropping it closes the connection, which ends the command
/// if it still runs (a request whose client left takes its command with it).
pub(crate) struct Direct {
    conn: tokio::net::UnixDatagram,
    tracker: Tracker,
    /// Its stdin's write end, when it reads one.
    pub stdin: Option<pipe::Sender>,
    /// Its stdout's and stderr's read ends.
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// Its sandbox, and when it started: for what it changed that the host may run.
    target: Arc<DirectTarget>,
    since: std::time::SystemTime,
}

impl ApiState {
    /// What commands in the running sandbox `name` need, when it serves an exec socket.
    pub(crate) async fn direct_target(
        &self,
        name: &SandboxName,
    ) -> Result<Option<Arc<DirectTarget>>, Problem> {
        let socket = paddock_engine::exec::exec_socket(self.dirs(), name);
        let Ok(meta) = std::fs::symlink_metadata(&socket) else {
            return Ok(None);
        };
        let id = (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec());
        if let Some((have, target)) = self
            .direct_targets()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            && *have == id
        {
            return Ok(Some(Arc::clone(target)));
        }
        let n = name.clone();
        let (target, _) = blocking(self, move |e, _| e.direct_target(&n)).await?;
        let target = target.map(Arc::new);
        if let Some(t) = &target {
            self.direct_targets()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.clone(), (id, Arc::clone(t)));
        }
        Ok(target)
    }

    /// Starts `req` (no terminal) in `target`'s sandbox through its exec socket, with its stdin
    /// a pipe when `stdin`, else /dev/null. `None` when the socket is not served (the sandbox
    /// stopped): the caller then runs the command the other way, which says so. The connection
    /// is waited on by this server's own event loop: no thread of its own per command.
    pub(crate) async fn start_direct(
        &self,
        target: Arc<DirectTarget>,
        req: &ExecRequest,
        stdin: bool,
    ) -> Result<Option<Direct>, Problem> {
        let cmd = target
            .command(req.clone(), WindowSize::DEFAULT)
            .map_err(|e| crate::sandboxes::problem(&e))?;
        let internal =
            |e: std::io::Error| Problem::internal(format!("cannot start the command: {e}"));
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| internal(e.into()))
        };
        let (in_r, in_w): (OwnedFd, Option<OwnedFd>) = if stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = std::fs::File::open("/dev/null").map_err(internal)?;
            (null.into(), None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let since = std::time::SystemTime::now();
        // A connect to a listening unix socket and one small message: neither waits.
        let conn = match direct::request(
            &target.socket,
            &cmd,
            Some([in_r.as_fd(), out_w.as_fd(), err_w.as_fd()]),
        ) {
            Ok(c) => c,
            Err(DirectError::NotServed) => return Ok(None),
            Err(DirectError::Failed(why)) => {
                return Err(Problem::new(crate::ProblemCode::StartFailed, why));
            }
            Err(DirectError::Io(e)) => return Err(internal(e)),
        };
        // Our copies of the command's ends close: its output ends when the command's last
        // holder closes them.
        drop((in_r, out_w, err_w));
        rustix::io::ioctl_fionbio(&conn, true).map_err(|e| internal(e.into()))?;
        // A connected SOCK_SEQPACKET socket, registered with the event loop as tokio's
        // datagram type: each receive is one report, as on a datagram socket.
        let conn = tokio::net::UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(conn))
            .map_err(internal)?;
        let mut direct = Direct {
            conn,
            tracker: Tracker::default(),
            stdin: in_w
                .map(pipe::Sender::from_owned_fd)
                .transpose()
                .map_err(internal)?,
            stdout: Some(pipe::Receiver::from_owned_fd(out_r).map_err(internal)?),
            stderr: Some(pipe::Receiver::from_owned_fd(err_r).map_err(internal)?),
            target,
            since,
        };
        loop {
            match direct.next().await.map_err(internal)? {
                Step::Continue => {}
                Step::Started(_) => return Ok(Some(direct)),
                Step::Refused(DirectError::NotServed) => return Ok(None),
                Step::Refused(DirectError::Failed(why)) => {
                    return Err(Problem::new(crate::ProblemCode::StartFailed, why));
                }
                Step::Refused(DirectError::Io(e)) => return Err(internal(e)),
                Step::Ended(_) => return Err(Problem::internal("the command ended unstarted")),
            }
        }
    }

    fn direct_targets(&self) -> &Mutex<HashMap<SandboxName, (SocketId, Arc<DirectTarget>)>> {
        &self.direct.0
    }
}

impl Direct {
    /// What the next report means.
    async fn next(&mut self) -> std::io::Result<Step> {
        let mut buf = vec![0u8; direct::MAX_REPORT];
        let n = self.conn.recv(&mut buf).await?;
        self.tracker.take_message(&buf[..n])
    }

    /// Waits for the command's end (with notes: why it could not run, a sandbox that stopped).
    pub(crate) async fn wait(&mut self) -> std::io::Result<DirectEnd> {
        loop {
            match self.next().await? {
                Step::Continue | Step::Started(_) => {}
                Step::Ended(end) => return Ok(end),
                Step::Refused(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
    }

    /// Sends `sig` to the command's process group.
    pub(crate) fn signal(&self, sig: rustix::process::Signal) {
        if let Ok(byte) = u8::try_from(sig.as_raw()) {
            let _ = self.conn.try_send(&[byte]);
        }
    }

    /// After its end: what it changed that the host may run (a walk of its folders, which
    /// blocks: on the server's multi-threaded runtime in place, the worker's other tasks moving
    /// to another worker meanwhile, without a hop to the blocking pool and back).
    pub(crate) async fn trust_notes(&self, dirs: &paddock_core::Dirs) -> Vec<String> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            let notes = Notes::default();
            tokio::task::block_in_place(|| self.target.trust_report(dirs, self.since, &notes));
            return notes.0.into_inner().unwrap_or_default();
        }
        let (target, dirs, since) = (Arc::clone(&self.target), dirs.clone(), self.since);
        tokio::task::spawn_blocking(move || {
            let notes = Notes::default();
            target.trust_report(&dirs, since, &notes);
            notes.0.into_inner().unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    }
}

/// Reads `pipe` until `ended` turns true, then what it still holds (a process the command left
/// behind may keep it open: its later output is not the command's answer), keeping the first
/// `cap` bytes; whether more came.
pub(crate) async fn read_until_end(
    mut pipe: pipe::Receiver,
    cap: usize,
    mut ended: tokio::sync::watch::Receiver<bool>,
) -> (Vec<u8>, bool) {
    let mut kept = Capped::new(cap);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            biased;
            _ = ended.wait_for(|e| *e) => {
                // What the command wrote before it ended is in the pipe now (a pipe holds 64
                // KiB by default; the bound stops a writer left behind that never pauses). Read
                // with the system call itself: the reactor may not have seen it readable yet.
                for _ in 0..64 {
                    match rustix::io::read(pipe.as_fd(), &mut buf) {
                        Ok(n) if n > 0 => kept.keep(&buf[..n]),
                        _ => break,
                    }
                }
                break;
            }
            r = tokio::io::AsyncReadExt::read(&mut pipe, &mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => kept.keep(&buf[..n]),
            },
        }
    }
    kept.done()
}
