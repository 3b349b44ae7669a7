//! Sandboxes in the background: start, stop, and the detached supervisor a start runs
//! ([`Engine::supervise`], behind `paddock __supervise NAME`).
//!
//! A background sandbox is one supervisor process of its own (a new session, no terminal, its
//! output and the command's in `sandboxes/NAME/output.log`), holding the sandbox's lock while
//! it runs. The lock is the truth about "running": a supervisor killed with SIGKILL releases it,
//! and its sandbox dies with it (every backend ties the sandbox to the supervisor's life).

use std::io::{Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use paddock_core::{Dirs, Launch, Network, SandboxName, Stdio};
use serde::{Deserialize, Serialize};

use crate::sandboxes::running;
use crate::{Context, Engine, EngineError, Reporter, Result};

/// The hidden subcommand that runs a background sandbox's supervisor.
pub const SUPERVISE_ARG: &str = "__supervise";

/// The command of a background sandbox started without one: it only keeps the sandbox alive
/// for `exec` and `shell`.
pub const KEEP_ALIVE: &[&str] = &["sleep", "infinity"];

/// What a background start runs (`sandboxes/NAME/main.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Main {
    /// The command.
    pub argv: Vec<String>,
    /// Remove the sandbox when it ends.
    #[serde(default)]
    pub rm: bool,
    /// Give the command a terminal (`paddock attach` reaches it).
    #[serde(default)]
    pub tty: bool,
    /// Where the command starts, when not in the workspace (a subdirectory of the git work
    /// tree whose root is the workspace).
    #[serde(default)]
    pub cwd: Option<String>,
}

fn main_file(dirs: &Dirs, name: &SandboxName) -> PathBuf {
    dirs.sandbox(name).join("main.json")
}

/// Where a background sandbox's output goes.
pub fn log_file(dirs: &Dirs, name: &SandboxName) -> PathBuf {
    dirs.sandbox(name).join("output.log")
}

/// Records what a background start of `name` runs.
pub fn write_main(dirs: &Dirs, name: &SandboxName, main: &Main) -> Result<()> {
    let dir = dirs.sandbox(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = main_file(dirs, name);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(main)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// What a background start of `name` runs (the keep-alive command when nothing was recorded).
pub fn read_main(dirs: &Dirs, name: &SandboxName) -> Main {
    std::fs::read(main_file(dirs, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| Main {
            argv: KEEP_ALIVE.iter().map(|s| s.to_string()).collect(),
            rm: false,
            tty: false,
            cwd: None,
        })
}

impl Engine {
    /// Starts the supervisor of `name` in the background (this executable with
    /// [`SUPERVISE_ARG`]) and waits until its sandbox runs.
    pub fn start_detached(&self, name: &SandboxName) -> Result<()> {
        let dirs = &self.dirs;
        if running(dirs, name) {
            return Err(EngineError::Conflict(format!(
                "sandbox {name} is already running"
            )));
        }
        let path = log_file(dirs, name);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let offset = log.seek(std::io::SeekFrom::End(0)).unwrap_or(0);
        let _ = writeln!(log, "--- paddock start {name}");
        let exe = std::env::current_exe().context("cannot find the paddock executable")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg(SUPERVISE_ARG)
            .arg(name.as_str())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe; the child execs right after. A session of its
        // own: closing this terminal does not reach it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("cannot start the supervisor")?;
        let socket = dirs.control_socket(name);
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            if let Some(status) = child.try_wait()? {
                let mut text = String::new();
                if let Ok(mut f) = std::fs::File::open(&path) {
                    let _ = f.seek(std::io::SeekFrom::Start(offset));
                    let _ = f.read_to_string(&mut text);
                }
                return Err(EngineError::failed(format!(
                    "sandbox {name} did not start ({status}):\n{}",
                    text.lines()
                        .filter(|l| !l.starts_with("--- "))
                        .collect::<Vec<_>>()
                        .join("\n")
                )));
            }
            let up = paddock_supervisor::control::Client::new(&socket, name.as_str())
                .status()
                .is_ok_and(|s| s.sandbox_pid > 0);
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EngineError::failed(format!(
                    "sandbox {name} is still starting after 15 minutes; `paddock logs {name}` shows what it does"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `name` in the background unless it runs; whether it was started.
    pub fn start(&self, name: &SandboxName) -> Result<bool> {
        self.record(name)?;
        if running(&self.dirs, name) {
            return Ok(false);
        }
        self.start_detached(name)?;
        Ok(true)
    }

    /// The detached supervisor: runs the sandbox's background command until it ends or is
    /// stopped; its exit status (125 when the sandbox failed to start or run).
    pub fn supervise(&self, name: &SandboxName, report: &dyn Reporter) -> Result<i32> {
        let dirs = &self.dirs;
        let rec = self.record(name)?;
        let main = read_main(dirs, name);
        let spec = paddock_core::SandboxSpec {
            discard_layer: main.rm,
            ..rec.spec
        };
        let (image, rootfs) = self.image(&spec.image, report)?;
        let (backend, _) = paddock_supervisor::select(&spec.backend)?;
        let uid = spec.user.uid();
        let launch = Launch {
            argv: main.argv.clone(),
            env: paddock_supervisor::environment(
                std::env::vars(),
                &spec.env,
                uid,
                main.tty,
                name.as_str(),
                spec.network == Network::Proxy,
            ),
            cwd: main
                .cwd
                .clone()
                .unwrap_or_else(|| spec.workspace.to_string()),
            uid,
            // No terminal is attached yet: the first to attach gives the size.
            stdio: if main.tty {
                Stdio::Pty { size: None }
            } else {
                Stdio::Inherit
            },
        };
        report.note(&format!(
            "supervisor {} runs {name} on the {} backend: {}",
            std::process::id(),
            backend.id(),
            main.argv.join(" ")
        ));
        let started = std::time::SystemTime::now();
        let result = paddock_supervisor::run_attached(
            dirs,
            &self.store,
            &spec,
            backend.as_ref(),
            &image,
            rootfs,
            &launch,
            paddock_supervisor::catch_signals(main.tty)?,
        );
        crate::trust::report(dirs, &spec, started, true, report);
        let code = match &result {
            Ok(o) => {
                for d in &o.diagnostics {
                    report.note(d);
                }
                report.note(&format!("{name} stopped (exit status {})", o.exit.status()));
                o.exit.status()
            }
            Err(e) => {
                report.note(&format!("{name} failed: {e}"));
                125
            }
        };
        if main.rm {
            self.remove(name, crate::remove::Removal::Full)?;
        }
        result?;
        Ok(code)
    }

    /// Stops `name` if it runs: SIGTERM to its command, SIGKILL after `grace` seconds, and as a
    /// last resort SIGKILL to its supervisor (the sandbox dies with it). Returns whether it was
    /// running.
    pub fn stop(&self, name: &SandboxName, grace: u64) -> Result<bool> {
        let dirs = &self.dirs;
        if !running(dirs, name) {
            return Ok(false);
        }
        let socket = dirs.control_socket(name);
        let wait = |limit: Duration| {
            let deadline = Instant::now() + limit;
            while running(dirs, name) {
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            true
        };
        let control = paddock_supervisor::control::Client::new(&socket, name.as_str());
        // A supervisor that is gone or does not answer: the waits below see the end either way.
        let signal = |sig: i32| {
            let _ = control.signal(sig);
        };
        signal(libc::SIGTERM);
        if wait(Duration::from_secs(grace)) {
            return Ok(true);
        }
        signal(libc::SIGKILL);
        // A VM powers off cleanly after its command ends, slowly under emulation.
        if wait(Duration::from_secs(60)) {
            return Ok(true);
        }
        if let Some(pid) = self.store.get(name)?.and_then(|r| r.supervisor_pid) {
            // SAFETY: kill has no memory effects; the pid is the supervisor recorded for the
            // sandbox whose lock is still held, so it is alive and ours.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        if !wait(Duration::from_secs(10)) {
            return Err(EngineError::failed(format!(
                "sandbox {name} does not stop; its supervisor is stuck"
            )));
        }
        Ok(true)
    }
}
