//! The host side of an ns sandbox's exec socket ([`paddock_wire::EXEC_SOCKET`]): one more
//! command forked by the sandbox's pid 1, with streams this process made (pipes, never a
//! terminal or file of the host's) or a terminal made inside. No process starts on the host and
//! none joins the sandbox: a connection, one message each way, and a fork inside.
//!
//! What comes back is the sandbox's to write: reports are size-bounded JSON of a closed set,
//! and nothing else is read here (the streams are the caller's to copy).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use paddock_wire::{Command, Report};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, connect, socket_with};

/// Why a command could not be started through the exec socket.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// No sandbox serves the socket (it stopped, or was started by an older Paddock): the
    /// command may still be run the other way (`paddock-jail enter`).
    #[error("the sandbox's exec socket is not served")]
    NotServed,
    /// The sandbox refused or failed the request.
    #[error("{0}")]
    Failed(String),
    /// This side failed.
    #[error("exec socket: {0}")]
    Io(#[from] io::Error),
}

/// What the reports on one connection said so far: the part of a command's start and end that
/// is the same whoever waits (a blocking thread here, an async task in the API server).
#[derive(Debug, Default)]
pub struct Tracker {
    /// The command's pid inside, once it started.
    pid: Option<i32>,
    /// Why it could not execute ("program: message"), and pid 1's last refusal.
    notes: Vec<String>,
    refusal: Option<String>,
}

/// What a report means for the command.
#[derive(Debug)]
pub enum Step {
    /// Nothing to act on yet.
    Continue,
    /// It started (its pid inside).
    Started(i32),
    /// It ended.
    Ended(DirectEnd),
    /// It never started.
    Refused(DirectError),
}

/// The largest report pid 1 sends.
pub const MAX_REPORT: usize = paddock_wire::MAX_MESSAGE;

impl Tracker {
    /// Takes the next message received on the connection (empty: it closed), checked as a
    /// report (bounded JSON of a closed set) first.
    pub fn take_message(&mut self, message: &[u8]) -> io::Result<Step> {
        let report = match message {
            [] => None,
            bytes => Some(Report::decode(bytes).map_err(io::Error::other)?),
        };
        Ok(self.take(report))
    }

    /// Takes the next report (`None`: the connection closed). The command's own failure to
    /// execute comes before `Ready` (pid 1 resumes once its child has executed or failed to);
    /// pid 1's refusal comes alone, with the connection closed after it.
    pub fn take(&mut self, report: Option<Report>) -> Step {
        match (report, self.pid) {
            (Some(Report::Ready { pid }), None) => {
                self.pid = Some(pid);
                Step::Started(pid)
            }
            (Some(Report::PtyMaster), None) => Step::Continue,
            (
                Some(Report::ExecFailed {
                    program, message, ..
                }),
                _,
            ) => {
                self.notes.push(format!("{program}: {message}"));
                self.refusal = Some(message);
                Step::Continue
            }
            (Some(Report::Exited { status }), Some(_)) => Step::Ended(DirectEnd {
                status,
                diagnostics: std::mem::take(&mut self.notes),
            }),
            // Closed before the command started: a refusal, or pid 1 at its limit of
            // connections, or the sandbox ended just now.
            (None, None) => Step::Refused(match self.refusal.take() {
                Some(why) => DirectError::Failed(why),
                None => DirectError::NotServed,
            }),
            (None, Some(_)) => {
                let mut diagnostics = std::mem::take(&mut self.notes);
                diagnostics.push("the sandbox stopped while the command ran".into());
                Step::Ended(DirectEnd {
                    status: 128 + libc::SIGKILL,
                    diagnostics,
                })
            }
            (Some(other), _) => Step::Refused(DirectError::Failed(format!(
                "unexpected answer from the sandbox: {other:?}"
            ))),
        }
    }
}

/// Connects to the exec socket `socket` and asks for `cmd` with `streams` as its stdin, stdout
/// and stderr (none when `cmd.tty`): the connection, whose reports say the rest ([`Tracker`]).
pub fn request(
    socket: &Path,
    cmd: &Command,
    streams: Option<[BorrowedFd<'_>; 3]>,
) -> Result<OwnedFd, DirectError> {
    let addr = SocketAddrUnix::new(socket).map_err(|_| DirectError::NotServed)?;
    let conn = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    match connect(&conn, &addr) {
        Ok(()) => {}
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::CONNREFUSED) => {
            return Err(DirectError::NotServed);
        }
        Err(e) => return Err(DirectError::Io(e.into())),
    }
    let request = serde_json::to_vec(cmd).map_err(io::Error::other)?;
    let fds: Vec<BorrowedFd<'_>> = streams.into_iter().flatten().collect();
    paddock_wire::send_with_fds(conn.as_fd(), &request, &fds)?;
    Ok(conn)
}

/// A command running in a sandbox, started through its exec socket, waited for on this thread.
/// Dropping it ends the command (pid 1 kills its process group when the connection closes).
#[derive(Debug)]
pub struct DirectExec {
    conn: OwnedFd,
    /// The terminal's master, when the command has one.
    pty: Option<OwnedFd>,
    /// The command's pid inside.
    pid: i32,
    tracker: std::sync::Mutex<Tracker>,
}

/// How a command started through the exec socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectEnd {
    /// Its exit status (128 + N for signal N).
    pub status: i32,
    /// Why it could not run, or that the sandbox ended under it.
    pub diagnostics: Vec<String>,
}

impl DirectExec {
    /// Starts `cmd` in the sandbox whose exec socket is `socket`, with `streams` as its stdin,
    /// stdout and stderr (none when `cmd.tty`: the terminal made inside is then
    /// [`Self::take_terminal`]). Returns once pid 1 started it.
    pub fn start(
        socket: &Path,
        cmd: &Command,
        streams: Option<[BorrowedFd<'_>; 3]>,
    ) -> Result<DirectExec, DirectError> {
        let conn = request(socket, cmd, streams)?;
        let mut pty = None;
        let mut tracker = Tracker::default();
        loop {
            let (report, fd) = match paddock_wire::recv_report(conn.as_fd())? {
                Some((r, fd)) => (Some(r), fd),
                None => (None, None),
            };
            if cmd.tty && matches!(report, Some(Report::PtyMaster)) {
                pty = fd;
            }
            match tracker.take(report) {
                Step::Continue => {}
                Step::Started(pid) => {
                    return Ok(DirectExec {
                        conn,
                        pty,
                        pid,
                        tracker: std::sync::Mutex::new(tracker),
                    });
                }
                Step::Refused(e) => return Err(e),
                Step::Ended(_) => {
                    return Err(DirectError::Failed(
                        "the command ended before it started".into(),
                    ));
                }
            }
        }
    }

    /// The command's pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Takes the terminal's master (the command's terminal in the sandbox), when it has one.
    pub fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.pty.take()
    }

    /// Sends `signal` to the command's process group.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        let byte = u8::try_from(signal).map_err(|_| io::ErrorKind::InvalidInput)?;
        paddock_wire::send_with_fds(self.conn.as_fd(), &[byte], &[])
    }

    /// Ends the command now if it still runs (pid 1 kills its group when the connection closes),
    /// and wakes a [`Self::wait`] on another thread.
    pub fn hang_up(&self) {
        let _ = rustix::net::shutdown(&self.conn, rustix::net::Shutdown::Both);
    }

    /// Waits for the end.
    pub fn wait(&self) -> io::Result<DirectEnd> {
        let mut tracker = self
            .tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let report = paddock_wire::recv_report(self.conn.as_fd())?.map(|(r, _)| r);
            match tracker.take(report) {
                Step::Continue | Step::Started(_) => {}
                Step::Ended(end) => return Ok(end),
                Step::Refused(e) => return Err(io::Error::other(e.to_string())),
            }
        }
    }
}

impl AsRawFd for DirectExec {
    fn as_raw_fd(&self) -> RawFd {
        self.conn.as_raw_fd()
    }
}

impl AsFd for DirectExec {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::time::Duration;

    use nix::unistd::{ForkResult, Pid, fork};
    use rustix::net::{AddressFamily, SocketType, bind, listen};

    use super::*;

    /// A pid 1 as the jail leaves it (the forwarded signals blocked, a main command running:
    /// `sleep 60`) serving an exec socket, in a forked child of this test. Killed when dropped.
    struct Pid1 {
        pid: Pid,
        socket: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for Pid1 {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }

    fn pid1() -> Pid1 {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(paddock_wire::EXEC_SOCKET);
        let listener = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        bind(&listener, &SocketAddrUnix::new(&socket).unwrap()).unwrap();
        listen(&listener, 16).unwrap();
        // SAFETY: the child only blocks signals, starts one process and serves (allocating:
        // glibc's fork leaves its allocator usable in the child).
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // The main command first: it would keep a blocked mask.
                let main = std::process::Command::new("sleep").arg("60").spawn();
                let _ = paddock_init::block_forwarded();
                let code = match main {
                    Ok(c) => {
                        paddock_init::serve::serve_and_wait(Pid::from_raw(c.id() as i32), listener)
                    }
                    Err(_) => 99,
                };
                // SAFETY: _exit ends the forked test child without running the harness's code.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Pid1 {
                pid: child,
                socket,
                _dir: dir,
            },
        }
    }

    fn command(script: &str) -> Command {
        Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            groups: vec![],
            tty: false,
            size: None,
            no_new_privs: true,
        }
    }

    /// Runs `cmd` with pipes through `server`; (stdout, stderr, end).
    fn run(server: &Pid1, cmd: &Command, input: &[u8]) -> (String, String, DirectEnd) {
        let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let ((in_r, in_w), (out_r, out_w), (err_r, err_w)) = (pipe(), pipe(), pipe());
        let exec = DirectExec::start(
            &server.socket,
            cmd,
            Some([in_r.as_fd(), out_w.as_fd(), err_w.as_fd()]),
        )
        .unwrap();
        drop((in_r, out_w, err_w));
        rustix::io::write(&in_w, input).unwrap();
        drop(in_w);
        let end = exec.wait().unwrap();
        let read = |fd: OwnedFd| {
            let mut s = String::new();
            std::fs::File::from(fd).read_to_string(&mut s).unwrap();
            s
        };
        (read(out_r), read(err_r), end)
    }

    fn root() -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        eprintln!("skipped: the command's groups are set, which needs root");
        false
    }

    #[test]
    fn a_command_runs_with_its_streams_and_its_status_comes_back() {
        if !root() {
            return;
        }
        let server = pid1();
        let (out, err, end) = run(
            &server,
            &command("read l; echo got:$l; echo to-err >&2; exit 3"),
            b"hello\n",
        );
        assert_eq!((out.as_str(), err.as_str()), ("got:hello\n", "to-err\n"));
        assert_eq!(
            end,
            DirectEnd {
                status: 3,
                diagnostics: vec![]
            }
        );
        // One that cannot run: the sandbox's note and 127; then the socket still serves.
        let mut missing = command("");
        missing.argv = vec!["no-such-program-xyz".into()];
        let (_, _, end) = run(&server, &missing, b"");
        assert_eq!(end.status, 127, "{end:?}");
        assert!(
            end.diagnostics[0].contains("no-such-program-xyz: command not found"),
            "{end:?}"
        );
        let (out, _, _) = run(&server, &command("echo again"), b"");
        assert_eq!(out, "again\n");
        // A request the sandbox cannot take is refused, and nothing starts.
        let mut bad = command("true");
        bad.tty = true;
        let pipe = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let refused = DirectExec::start(
            &server.socket,
            &bad,
            Some([pipe.0.as_fd(), pipe.1.as_fd(), pipe.1.as_fd()]),
        );
        assert!(
            matches!(&refused, Err(DirectError::Failed(m)) if m.contains("takes no streams")),
            "{refused:?}"
        );
    }

    #[test]
    fn signals_reach_the_command_and_a_host_that_hangs_up_ends_it() {
        if !root() {
            return;
        }
        let server = pid1();
        let null = std::fs::File::open("/dev/null").unwrap();
        let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let start = |script: &str| {
            DirectExec::start(
                &server.socket,
                &command(script),
                Some([null.as_fd(), out_w.as_fd(), out_w.as_fd()]),
            )
            .unwrap()
        };
        let exec = start("trap 'exit 9' TERM; echo up; while :; do sleep 0.1; done");
        let mut line = [0u8; 3];
        std::fs::File::from(out_r.try_clone().unwrap())
            .read_exact(&mut line)
            .unwrap();
        exec.signal(libc::SIGTERM).unwrap();
        assert_eq!(exec.wait().unwrap().status, 9);
        // Hung up: the command's whole group is killed.
        let exec = start("sleep 60 & sleep 60");
        let pid = Pid::from_raw(exec.pid());
        exec.hang_up();
        drop(exec);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while nix::sys::signal::killpg(pid, None).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the command outlived its host"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_terminal_is_made_inside_at_the_size_asked_for() {
        if !root() {
            return;
        }
        let server = pid1();
        let mut cmd = command("stty size; test -t 0 && test -t 2 && echo tty");
        cmd.tty = true;
        cmd.size = Some((33, 77));
        let mut exec = DirectExec::start(&server.socket, &cmd, None).unwrap();
        let master = exec.take_terminal().expect("a terminal");
        let end = exec.wait().unwrap();
        assert_eq!(end.status, 0, "{end:?}");
        let mut out = vec![0u8; 4096];
        let n = rustix::io::read(&master, &mut out).unwrap();
        assert_eq!(String::from_utf8_lossy(&out[..n]), "33 77\r\ntty\r\n");
    }

    #[test]
    fn when_the_sandbox_ends_its_commands_end_and_say_so() {
        if !root() {
            return;
        }
        let server = pid1();
        let null = std::fs::File::open("/dev/null").unwrap();
        let exec = DirectExec::start(
            &server.socket,
            &command("sleep 60"),
            Some([null.as_fd(), null.as_fd(), null.as_fd()]),
        )
        .unwrap();
        // The sandbox's main command ends: pid 1 with it.
        let main =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", server.pid, server.pid))
                .unwrap();
        for pid in main.split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            if pid != exec.pid() {
                nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
                    .unwrap();
            }
        }
        let end = exec.wait().unwrap();
        assert_eq!(end.status, 137, "{end:?}");
        assert_eq!(
            end.diagnostics,
            vec!["the sandbox stopped while the command ran".to_owned()]
        );
        let status = nix::sys::wait::waitpid(server.pid, None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(server.pid, 128 + libc::SIGTERM)
        );
        assert!(matches!(
            DirectExec::start(&server.socket, &command("true"), None),
            Err(DirectError::NotServed)
        ));
    }
}
