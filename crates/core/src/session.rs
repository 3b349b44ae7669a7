//! The host end of a command run by an in-sandbox helper over a stream (a VM's exec connection
//! over vsock, a gVisor sandbox's session socket). The frames themselves (output, input,
//! signals, sizes, the exit) are read and written by the supervisor's relay process, which holds
//! no privilege ([`crate::Streams::Session`]); this side only starts the command and keeps what
//! the relay reported.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use paddock_wire::Report;
use paddock_wire::vm::Frame;

use crate::backend::{Exit, SessionEnd, Streams};

/// One command's session, after the helper's `Ready`.
#[derive(Debug)]
pub struct RemoteSession {
    conn: Option<UnixStream>,
    tty: bool,
    end: SessionEnd,
}

impl RemoteSession {
    /// Sends `cmd` on a new session connection and waits (at most `limit`) for the helper's
    /// word that the command started. On failure, says what came instead.
    pub fn begin(
        conn: &mut UnixStream,
        cmd: &paddock_wire::Command,
        limit: std::time::Duration,
    ) -> Result<(), String> {
        RemoteSession::send(conn, cmd)?;
        RemoteSession::await_start(conn, limit)
    }

    /// Sends `cmd` on a new session connection (it waits in the connection until the helper
    /// reads it: a backend may send it before the helper is up).
    pub fn send(conn: &mut UnixStream, cmd: &paddock_wire::Command) -> Result<(), String> {
        Frame::Exec(cmd.clone())
            .write_to(conn)
            .map_err(|e| format!("cannot send the command: {e}"))
    }

    /// Waits (at most `limit`) for the helper's word that the command sent on `conn` started.
    pub fn await_start(conn: &mut UnixStream, limit: std::time::Duration) -> Result<(), String> {
        let _ = conn.set_read_timeout(Some(limit));
        let answer = Frame::read_from(conn);
        let _ = conn.set_read_timeout(None);
        match answer {
            Ok(Some(Frame::Report(Report::Ready { .. }))) => Ok(()),
            Ok(other) => Err(format!("the command did not start ({other:?})")),
            Err(e) => Err(format!("no answer from the sandbox's helper: {e}")),
        }
    }

    /// The session of a started command on `conn`, with a terminal when `tty`.
    pub fn new(conn: UnixStream, tty: bool) -> RemoteSession {
        RemoteSession {
            conn: Some(conn),
            tty,
            end: SessionEnd::default(),
        }
    }

    /// The connection, for the relay process (taken once; [`Streams::Direct`] after that).
    pub fn take_streams(&mut self) -> Streams {
        match self.conn.take() {
            Some(conn) => Streams::Session {
                conn,
                tty: self.tty,
            },
            None => Streams::Direct,
        }
    }

    /// Asks the helper to send `signal` to the command's process group: until the relay takes
    /// the connection (a start that fails on the host side); after that the relay does.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        match &self.conn {
            Some(conn) => Frame::Signal(signal).write_to(&mut &*conn),
            None => Err(std::io::Error::other(
                "the relay process carries this command's signals",
            )),
        }
    }

    /// What the relay read at the session's end.
    pub fn relayed(&mut self, end: SessionEnd) {
        self.end = end;
    }

    /// The exit status, once the relay reported it (taken once).
    pub fn take_exit(&mut self) -> Option<Exit> {
        self.end.exit.take()
    }

    /// What the helper reported about the command (taken).
    pub fn diagnostics(&mut self) -> Vec<String> {
        std::mem::take(&mut self.end.diagnostics)
    }

    /// Limits the helper saw the sandbox run into, as sentences starting with the limit's name.
    pub fn limits_hit(&self) -> Vec<String> {
        self.end.limits.clone()
    }
}

/// One command exec'd through an in-sandbox helper's session connection: an [`crate::Instance`]
/// that ends with the command (the sandbox goes on).
#[derive(Debug)]
pub struct RemoteExec {
    session: RemoteSession,
    /// Never readable: the command's end comes from the relay, not from a process here.
    exit_r: OwnedFd,
    _exit_w: OwnedFd,
}

impl RemoteExec {
    /// Starts `cmd` on the session connection `conn` and waits (at most `limit`) until it runs.
    pub fn start(
        mut conn: UnixStream,
        cmd: &paddock_wire::Command,
        limit: std::time::Duration,
    ) -> Result<RemoteExec, crate::BackendError> {
        RemoteSession::begin(&mut conn, cmd, limit).map_err(|message| {
            crate::BackendError::Layer {
                layer: "exec".into(),
                message,
            }
        })?;
        let (exit_r, exit_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| crate::BackendError::io("pipe")(e.into()))?;
        Ok(RemoteExec {
            session: RemoteSession::new(conn, cmd.tty),
            exit_r,
            _exit_w: exit_w,
        })
    }
}

impl crate::Instance for RemoteExec {
    fn pid(&self) -> i32 {
        0
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.exit_r.as_fd()
    }

    fn take_streams(&mut self) -> Streams {
        self.session.take_streams()
    }

    fn signal(&self, signal: i32) -> Result<(), crate::BackendError> {
        self.session
            .signal(signal)
            .map_err(crate::BackendError::io("cannot signal the command"))
    }

    fn relayed(&mut self, end: SessionEnd) {
        self.session.relayed(end);
    }

    fn wait(&mut self) -> Result<Exit, crate::BackendError> {
        self.session
            .take_exit()
            .ok_or_else(|| crate::BackendError::Layer {
                layer: "exec".into(),
                message: "the sandbox stopped before the command finished".into(),
            })
    }

    fn diagnostics(&mut self) -> Vec<String> {
        self.session.diagnostics()
    }

    fn take_egress(&mut self) -> Option<crate::Egress> {
        None
    }

    fn limits_hit(&self) -> Vec<String> {
        self.session.limits_hit()
    }
}
