//! The host end of a command run by an in-sandbox helper over a stream (a VM's exec connection
//! over vsock, a gVisor sandbox's session socket): frames become the command's output, exit
//! status and diagnostics; input, signals and terminal sizes become frames.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use paddock_wire::Report;
use paddock_wire::vm::{ExitStatus, Frame, MAX_DATA};

use crate::backend::Exit;

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One command's session, after the helper's `Ready`.
#[derive(Debug)]
pub struct RemoteSession {
    tx: Shared<UnixStream>,
    exit: Shared<Option<Exit>>,
    diagnostics: Shared<Vec<String>>,
    limits: Shared<Vec<String>>,
    pty: Option<OwnedFd>,
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

    /// Starts the pumps for `conn`. With `tty`, the supervisor's side of the terminal is
    /// [`RemoteSession::take_pty`]; otherwise the supervisor's own stdin, stdout and stderr are
    /// used. One byte is written to `done` when the exit status arrives or the connection ends.
    pub fn start(conn: UnixStream, tty: bool, done: Arc<File>) -> io::Result<RemoteSession> {
        let exit: Shared<Option<Exit>> = Arc::default();
        let diagnostics: Shared<Vec<String>> = Arc::default();
        let limits: Shared<Vec<String>> = Arc::default();
        let tx = Arc::new(Mutex::new(conn.try_clone()?));

        // Where the command's output goes, and where its input comes from.
        let (out, err, input, pty): (File, File, File, Option<OwnedFd>) = if tty {
            let (ours, theirs) = UnixStream::pair()?;
            let ours = OwnedFd::from(ours);
            (
                File::from(ours.try_clone()?),
                File::from(ours.try_clone()?),
                File::from(ours),
                Some(OwnedFd::from(theirs)),
            )
        } else {
            let dup = |fd: BorrowedFd<'_>| -> io::Result<File> {
                Ok(File::from(fd.try_clone_to_owned()?))
            };
            (
                dup(rustix::stdio::stdout())?,
                dup(rustix::stdio::stderr())?,
                dup(rustix::stdio::stdin())?,
                None,
            )
        };

        // Output, reports and the exit, from the sandbox.
        {
            let mut reader = conn;
            let exit = exit.clone();
            let diagnostics = diagnostics.clone();
            let limits = limits.clone();
            std::thread::Builder::new()
                .name("session-output".into())
                .spawn(move || {
                    let (mut out, mut err) = (out, err);
                    while let Ok(Some(frame)) = Frame::read_from(&mut reader) {
                        match frame {
                            Frame::Stdout(d) => {
                                let _ = out.write_all(&d);
                            }
                            Frame::Stderr(d) => {
                                let _ = err.write_all(&d);
                            }
                            Frame::Report(Report::ExecFailed {
                                program, message, ..
                            }) => lock(&diagnostics).push(format!("{program}: {message}")),
                            Frame::Report(Report::LimitsHit { events }) => {
                                lock(&limits).extend(events);
                            }
                            Frame::Exit(st) => {
                                *lock(&exit) = Some(match st {
                                    ExitStatus::Code { code } => Exit::Code { code },
                                    ExitStatus::Signal { signal } => Exit::Signal { signal },
                                });
                                break;
                            }
                            _ => {}
                        }
                    }
                    if tty {
                        let _ = rustix::net::shutdown(&out, rustix::net::Shutdown::Write);
                    }
                    let _ = (&*done).write_all(&[1]);
                })?;
        }
        // Input and terminal bytes, to the sandbox.
        {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("session-input".into())
                .spawn(move || {
                    let mut input = input;
                    let mut buf = vec![0u8; MAX_DATA];
                    loop {
                        match input.read(&mut buf) {
                            Ok(0) => {
                                let _ = Frame::StdinEof.write_to(&mut *lock(&tx));
                                break;
                            }
                            Ok(n) => {
                                let frame = Frame::Stdin(buf[..n].to_vec());
                                if frame.write_to(&mut *lock(&tx)).is_err() {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                })?;
        }
        Ok(RemoteSession {
            tx,
            exit,
            diagnostics,
            limits,
            pty,
        })
    }

    /// The supervisor's side of the command's terminal (taken once).
    pub fn take_pty(&mut self) -> Option<OwnedFd> {
        self.pty.take()
    }

    /// Asks the helper to send `signal` to the command's process group.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        Frame::Signal(signal).write_to(&mut *lock(&self.tx))
    }

    /// Tells the command's terminal its new size.
    pub fn resize(&self, rows: u16, cols: u16) {
        let _ = Frame::Resize { rows, cols }.write_to(&mut *lock(&self.tx));
    }

    /// The exit status, once it has arrived (taken once).
    pub fn take_exit(&self) -> Option<Exit> {
        lock(&self.exit).take()
    }

    /// What the helper reported about the command (taken).
    pub fn diagnostics(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.diagnostics))
    }

    /// Limits the helper saw the sandbox run into, as sentences starting with the limit's name.
    pub fn limits_hit(&self) -> Vec<String> {
        lock(&self.limits).clone()
    }
}

/// One command exec'd through an in-sandbox helper's session connection: an [`Instance`] that
/// ends with the command (the sandbox goes on).
#[derive(Debug)]
pub struct RemoteExec {
    session: RemoteSession,
    exit_r: OwnedFd,
    _conn: UnixStream,
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
        let session = conn
            .try_clone()
            .and_then(|c| RemoteSession::start(c, cmd.tty, Arc::new(File::from(exit_w))))
            .map_err(crate::BackendError::io(
                "cannot relay the command's streams",
            ))?;
        Ok(RemoteExec {
            session,
            exit_r,
            _conn: conn,
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

    fn take_pty(&mut self) -> Option<OwnedFd> {
        self.session.take_pty()
    }

    fn signal(&self, signal: i32) -> Result<(), crate::BackendError> {
        self.session
            .signal(signal)
            .map_err(crate::BackendError::io("cannot signal the command"))
    }

    fn resize(&self, rows: u16, cols: u16) {
        self.session.resize(rows, cols);
    }

    fn wait(&mut self) -> Result<Exit, crate::BackendError> {
        let mut b = [0u8; 1];
        while let Err(rustix::io::Errno::INTR) = rustix::io::read(&self.exit_r, &mut b) {}
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
