//! One more command in a running sandbox (`paddock exec`), with this process's standard
//! streams.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use paddock_core::{Launch, Network, SandboxName, Stdio};
use paddock_policy::User;
use serde::{Deserialize, Serialize};

use crate::create::parse_env;
use crate::sandboxes::running;
use crate::{Context, Engine, EngineError, Reporter, Result, invalid};

/// A command to run in a running sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments.
    pub command: Vec<String>,
    /// More `NAME=VALUE` variables.
    pub env: Vec<String>,
    /// `agent`, `root` or a uid (the sandbox's user when not given).
    pub user: Option<String>,
    /// Where it starts (an absolute path inside; the workspace when not given).
    pub workdir: Option<String>,
    /// In a terminal of its own (this process's streams must be one; [`Engine::exec_process`]
    /// makes one).
    pub tty: bool,
    /// Pass this process's stdin (else the command reads /dev/null).
    pub stdin: bool,
}

impl ExecRequest {
    /// Checks what needs no sandbox: the command, the variables, the user and the directory.
    pub fn check(&self) -> Result<(Vec<paddock_policy::EnvVar>, Option<User>)> {
        if self.command.is_empty() {
            return Err(invalid("give a command to run"));
        }
        let env = parse_env(&self.env)?;
        let user: Option<User> = self
            .user
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: paddock_policy::UserError| invalid(e.to_string()))?;
        if let Some(w) = &self.workdir
            && !w.starts_with('/')
        {
            return Err(invalid(format!("--workdir {w}: give an absolute path")));
        }
        Ok((env, user))
    }
}

impl Engine {
    /// Runs `req` in the running sandbox `name` with this process's streams, and waits for it.
    pub fn exec(
        &self,
        name: &SandboxName,
        req: ExecRequest,
        report: &dyn Reporter,
    ) -> Result<paddock_supervisor::Outcome> {
        let (env, user) = req.check()?;
        let rec = self.record(name)?;
        if !running(&self.dirs, name) {
            return Err(EngineError::Conflict(format!(
                "sandbox {name} is not running (`paddock start {name}` starts it)"
            )));
        }
        let spec = rec.spec;
        let (backend, _) = paddock_supervisor::select(&spec.backend)?;
        if !req.stdin && !req.tty {
            // The command reads nothing: stdin is /dev/null.
            let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
            rustix::stdio::dup2_stdin(&null).context("cannot redirect stdin")?;
        }
        let stdio = Stdio::for_this_terminal(req.tty);
        let launch = launch_of(&spec, req, (env, user), stdio);
        let started = std::time::SystemTime::now();
        let outcome = paddock_supervisor::run_exec(&self.dirs, &spec, backend.as_ref(), &launch);
        crate::trust::report(&self.dirs, &spec, started, false, report);
        Ok(outcome?)
    }
}

/// How `req` (checked: its variables and user) runs in sandbox `spec`, with `stdio`.
fn launch_of(
    spec: &paddock_core::SandboxSpec,
    req: ExecRequest,
    (env, user): (Vec<paddock_policy::EnvVar>, Option<User>),
    stdio: Stdio,
) -> Launch {
    let uid = user.unwrap_or(spec.user).uid();
    let mut extra = spec.env.clone();
    extra.extend(env);
    Launch {
        argv: req.command,
        env: paddock_supervisor::environment(
            std::env::vars(),
            &extra,
            uid,
            req.tty,
            spec.name.as_str(),
            spec.network == Network::Proxy,
        ),
        cwd: req.workdir.unwrap_or_else(|| spec.workspace.to_string()),
        uid,
        stdio,
    }
}

pub use paddock_supervisor::direct;

/// Where sandbox `name`'s exec socket is, when it has one ([`paddock_wire::EXEC_SOCKET`]).
pub fn exec_socket(dirs: &paddock_core::Dirs, name: &SandboxName) -> std::path::PathBuf {
    dirs.sandbox(name).join(paddock_wire::EXEC_SOCKET)
}

/// A running ns sandbox's exec socket ([`paddock_wire::EXEC_SOCKET`]) and what every command
/// started through it needs besides its request: a command there is one fork by the sandbox's
/// pid 1 (no process on the host), see [`paddock_supervisor::direct`].
#[derive(Debug, Clone)]
pub struct DirectTarget {
    /// The sandbox.
    pub spec: paddock_core::SandboxSpec,
    /// Its exec socket.
    pub socket: std::path::PathBuf,
    /// The variables every command there gets (the proxy's placeholders, the trust store),
    /// from the sandbox's supervisor.
    pub env: Vec<(String, String)>,
}

impl DirectTarget {
    /// What `req` runs as there (with `tty`, in a terminal of `size` made inside).
    pub fn command(&self, req: ExecRequest, size: WindowSize) -> Result<paddock_wire::Command> {
        let checked = req.check()?;
        let stdio = if req.tty {
            Stdio::Pty {
                size: Some((size.rows, size.cols)),
            }
        } else {
            Stdio::Inherit
        };
        let mut launch = launch_of(&self.spec, req, checked, stdio);
        for (k, v) in &self.env {
            if !launch.env.iter().any(|(have, _)| have == k) {
                launch.env.push((k.clone(), v.clone()));
            }
        }
        Ok(launch.command(self.spec.no_new_privs))
    }

    /// After a command: what it changed that the host may run (the notes `paddock exec`
    /// prints), for `started` on, told to `report`.
    pub fn trust_report(
        &self,
        dirs: &paddock_core::Dirs,
        started: std::time::SystemTime,
        report: &dyn Reporter,
    ) {
        crate::trust::report(dirs, &self.spec, started, false, report);
    }
}

impl Engine {
    /// The record of sandbox `name`, which must be running (`not_found`, then `conflict`).
    fn running_record(&self, name: &SandboxName) -> Result<paddock_core::SandboxRecord> {
        let rec = self.record(name)?;
        if !running(&self.dirs, name) {
            return Err(EngineError::Conflict(format!(
                "sandbox {name} is not running (start it first)"
            )));
        }
        Ok(rec)
    }

    /// The exec socket of the running sandbox `name`, when it has one (an ns sandbox started
    /// by this version); `None` otherwise, when commands join it through the backend's `exec`.
    pub fn direct_target(&self, name: &SandboxName) -> Result<Option<DirectTarget>> {
        let rec = self.running_record(name)?;
        let socket = exec_socket(&self.dirs, name);
        if !socket.exists() {
            return Ok(None);
        }
        let client = paddock_supervisor::control::Client::new(
            &self.dirs.control_socket(name),
            name.as_str(),
        );
        let (_, env) = client
            .exec()
            .map_err(paddock_supervisor::SupervisorError::Control)?;
        Ok(Some(DirectTarget {
            spec: rec.spec,
            socket,
            env,
        }))
    }
}

/// The hidden subcommand that runs one [`ExecRequest`] with its own streams
/// ([`Engine::exec_process`]).
pub const EXEC_ARG: &str = "__exec";

impl Engine {
    /// A process of its own that runs `req` in sandbox `name` ([`Engine::exec`] behind this
    /// executable's [`EXEC_ARG`]): its stdin, stdout and stderr are the command's, its exit
    /// status the command's. Paddock's notes (what the command changed that the host runs, why
    /// it was killed) are appended to `notes`, one JSON string per line, instead of mixing with the
    /// command's stderr. For a front end that serves several commands at once, each with
    /// streams of its own. With [`ExecRequest::tty`] the process runs in a new terminal of
    /// `size` ([`ExecTerminal`]; `size` is unused without). The sandbox must exist and run.
    pub fn exec_process(
        &self,
        name: &SandboxName,
        req: &ExecRequest,
        size: WindowSize,
        notes: &std::path::Path,
    ) -> Result<ExecProcess> {
        // Which sandbox first (an unknown one is not found whatever the request), then whether
        // it runs, then the request.
        self.running_record(name)?;
        req.check()?;
        let exe = std::env::current_exe().context("cannot find the paddock executable")?;
        let mut cmd = std::process::Command::new(exe);
        // The request (its variables may hold secrets) in the environment, which only this
        // user and root may read, not on the command line, which every local user may.
        cmd.arg(EXEC_ARG)
            .arg(name.as_str())
            .env(REQUEST_ENV, serde_json::to_string(req)?)
            .env("PADDOCK_HOME", self.dirs.home())
            .env(NOTES_ENV, notes);
        let terminal = if req.tty {
            let (terminal, slave) = ExecTerminal::open(size)?;
            let copy = |fd: &OwnedFd| fd.try_clone().context("cannot share the terminal");
            cmd.stdin(copy(&slave)?).stdout(copy(&slave)?).stderr(slave);
            Some(terminal)
        } else {
            None
        };
        Ok(ExecProcess {
            command: cmd,
            terminal,
        })
    }
}

impl Engine {
    /// A process of its own attached to the command of the background sandbox `name`, in a
    /// new terminal of `size` (`paddock attach NAME`: what is typed reaches the command, its
    /// output comes back, Ctrl-P Ctrl-Q detaches and leaves it running). Only a command
    /// started with a terminal can be attached to; the output of others is their log.
    pub fn attach_process(&self, name: &SandboxName, size: WindowSize) -> Result<ExecProcess> {
        self.running_record(name)?;
        if !crate::background::read_main(&self.dirs, name).tty {
            return Err(EngineError::Conflict(format!(
                "{name}'s command has no terminal to attach to (it was started without `tty`); follow its output in its log"
            )));
        }
        let exe = std::env::current_exe().context("cannot find the paddock executable")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("attach")
            .arg(name.as_str())
            .env("PADDOCK_HOME", self.dirs.home());
        let (terminal, slave) = ExecTerminal::open(size)?;
        let copy = |fd: &OwnedFd| fd.try_clone().context("cannot share the terminal");
        cmd.stdin(copy(&slave)?).stdout(copy(&slave)?).stderr(slave);
        Ok(ExecProcess {
            command: cmd,
            terminal: Some(terminal),
        })
    }
}

/// An exec process ready to start ([`Engine::exec_process`]).
#[derive(Debug)]
pub struct ExecProcess {
    /// `paddock __exec NAME` with the request. Without a terminal its streams are the
    /// caller's to set; with one they are already the terminal's other side (drop the command
    /// once it started, so that only the process holds that side and the host side reads its
    /// end).
    pub command: std::process::Command,
    /// With [`ExecRequest::tty`]: the host side of the process's terminal.
    pub terminal: Option<ExecTerminal>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    rows: u16,
    cols: u16,
}

impl WindowSize {
    /// The most rows, and the most columns, a size may have.
    pub const MAX: u16 = 1000;
    /// The size of a terminal when none is given: 24 rows of 80 columns.
    pub const DEFAULT: WindowSize = WindowSize { rows: 24, cols: 80 };

    /// `rows` × `cols`, each 1 to [`WindowSize::MAX`].
    pub fn new(rows: i64, cols: i64) -> Result<WindowSize> {
        let cells = |what: &str, n: i64| {
            u16::try_from(n)
                .ok()
                .filter(|n| (1..=WindowSize::MAX).contains(n))
                .ok_or_else(|| {
                    invalid(format!(
                        "{what}: give 1 to {} (character cells), not {n}",
                        WindowSize::MAX
                    ))
                })
        };
        Ok(WindowSize {
            rows: cells("rows", rows)?,
            cols: cells("cols", cols)?,
        })
    }

    /// Rows (lines).
    pub fn rows(&self) -> u16 {
        self.rows
    }

    /// Columns (characters per line).
    pub fn cols(&self) -> u16 {
        self.cols
    }
}

/// The host side of the terminal an exec process runs in ([`Engine::exec_process`] with
/// [`ExecRequest::tty`]): a new pty of this host, whose other side is the process's stdin,
/// stdout and stderr. `paddock __exec` then treats it as `paddock exec -t` treats the user's
/// terminal: it is raw, what is written here reaches the command's own terminal in the
/// sandbox (through the unprivileged relay) as typed keys, what the command writes (stdout and
/// stderr together, as a terminal shows them) is read here, and its size is the command's.
#[derive(Debug)]
pub struct ExecTerminal {
    master: OwnedFd,
}

impl ExecTerminal {
    /// A new pty of `size`, raw from the start (nothing echoed or turned into a signal on this
    /// host: the command's terminal in the sandbox does that), and its other side.
    fn open(size: WindowSize) -> Result<(ExecTerminal, OwnedFd)> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let (master, slave) = paddock_wire::open_pty(Some((size.rows, size.cols)))
            .context("cannot open a terminal")?;
        let mut mode = tcgetattr(&slave).context("cannot read the terminal's mode")?;
        mode.make_raw();
        tcsetattr(&slave, OptionalActions::Now, &mode).context("cannot make the terminal raw")?;
        Ok((ExecTerminal { master }, slave))
    }

    /// The host side: reading it gives the command's output, writing it gives the command
    /// input. Reading fails (EIO) once no process holds the other side.
    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// Gives the terminal `size`, and tells the started exec process `pid` (SIGWINCH), which
    /// passes the size on to the command's terminal (the command gets SIGWINCH there).
    pub fn resize(&self, size: WindowSize, pid: Option<u32>) -> Result<()> {
        let winsize = rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&self.master, winsize)
            .context("cannot set the terminal's size")?;
        // The process has no controlling terminal (it stays in the caller's session), so the
        // kernel does not tell it: this does.
        if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
        }
        Ok(())
    }
}

/// Where `__exec` appends its notes (set by [`Engine::exec_process`]).
const NOTES_ENV: &str = "PADDOCK_EXEC_NOTES";
/// `__exec`'s request, as JSON.
const REQUEST_ENV: &str = "PADDOCK_EXEC_REQUEST";

/// Notes appended to a file, one JSON string per line.
struct NotesFile(std::sync::Mutex<std::fs::File>);

impl Reporter for NotesFile {
    fn note(&self, text: &str) {
        use std::io::Write;
        if let (Ok(mut f), Ok(line)) = (self.0.lock(), serde_json::to_string(text)) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// `paddock __exec NAME` with the JSON request in `PADDOCK_EXEC_REQUEST`: runs it; the exit
/// status is the command's.
pub fn exec_main(args: &[std::ffi::OsString], terminal: &dyn Reporter) -> i32 {
    let file = std::env::var_os(NOTES_ENV).and_then(|p| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(p)
            .ok()
            .map(|f| NotesFile(std::sync::Mutex::new(f)))
    });
    let report: &dyn Reporter = match &file {
        Some(f) => f,
        None => terminal,
    };
    let run = || -> Result<i32> {
        let ([name], Some(req)) = (args, std::env::var_os(REQUEST_ENV)) else {
            return Err(invalid(format!(
                "usage: {REQUEST_ENV}=JSON paddock {EXEC_ARG} NAME"
            )));
        };
        let name = crate::sandboxes::parse_name(&name.to_string_lossy())?;
        let req: ExecRequest = serde_json::from_str(&req.to_string_lossy())
            .map_err(|e| invalid(format!("the request is not valid: {e}")))?;
        let outcome = Engine::open()?.exec(&name, req, report)?;
        for d in &outcome.diagnostics {
            report.note(d);
        }
        Ok(outcome.exit.status())
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            report.note(&format!("error: {e}"));
            match e {
                EngineError::Invalid(_) | EngineError::NotFound(_) | EngineError::Conflict(_) => 2,
                _ => 125,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::termios::{LocalModes, tcgetattr, tcgetwinsize};

    use super::*;

    #[test]
    fn a_window_size_is_1_to_1000_cells_each_way() {
        let size = |rows, cols| WindowSize::new(rows, cols).map(|s| (s.rows(), s.cols()));
        assert_eq!(size(1, 1).unwrap(), (1, 1));
        assert_eq!(size(24, 80).unwrap(), (24, 80));
        assert_eq!(size(1000, 1000).unwrap(), (1000, 1000));
        for (rows, cols, message) in [
            (0, 80, "rows: give 1 to 1000 (character cells), not 0"),
            (1001, 80, "rows: give 1 to 1000 (character cells), not 1001"),
            (-1, 80, "rows: give 1 to 1000 (character cells), not -1"),
            (24, 0, "cols: give 1 to 1000 (character cells), not 0"),
            (
                24,
                65_616,
                "cols: give 1 to 1000 (character cells), not 65616",
            ),
        ] {
            let e = size(rows, cols).unwrap_err();
            assert!(matches!(e, EngineError::Invalid(_)), "{e:?}");
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn an_exec_terminal_is_raw_has_its_size_and_takes_a_new_one() {
        let (terminal, slave) = ExecTerminal::open(WindowSize::new(33, 77).unwrap()).unwrap();
        let size = |fd| {
            let w = tcgetwinsize(fd).unwrap();
            (w.ws_row, w.ws_col)
        };
        assert_eq!(size(&slave), (33, 77));
        let mode = tcgetattr(&slave).unwrap();
        for cooked in [LocalModes::ECHO, LocalModes::ICANON, LocalModes::ISIG] {
            assert!(!mode.local_modes.contains(cooked), "{cooked:?} is on");
        }
        terminal
            .resize(WindowSize::new(40, 100).unwrap(), None)
            .unwrap();
        assert_eq!(size(&slave), (40, 100));
        // What is written on one side is read on the other, byte for byte (^C and ^D too).
        rustix::io::write(terminal.master(), b"a\x03\x04\n").unwrap();
        let mut buf = [0u8; 8];
        let n = rustix::io::read(&slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"a\x03\x04\n");
    }
}
