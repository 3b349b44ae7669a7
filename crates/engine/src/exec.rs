//! One more command in a running sandbox (`paddock exec`), with this process's standard
//! streams.

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
    /// In a terminal of its own (this process's streams must be one).
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
        let uid = user.unwrap_or(spec.user).uid();
        let mut extra = spec.env.clone();
        extra.extend(env);
        let launch = Launch {
            argv: req.command,
            env: paddock_supervisor::environment(
                std::env::vars(),
                &extra,
                uid,
                req.tty,
                name.as_str(),
                spec.network == Network::Proxy,
            ),
            cwd: req.workdir.unwrap_or_else(|| spec.workspace.to_string()),
            uid,
            stdio: if req.tty { Stdio::Pty } else { Stdio::Inherit },
        };
        let started = std::time::SystemTime::now();
        let outcome = paddock_supervisor::run_exec(&self.dirs, &spec, backend.as_ref(), &launch);
        crate::trust::report(&self.dirs, &spec, started, false, report);
        Ok(outcome?)
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
    /// streams of its own. The sandbox must exist and run.
    pub fn exec_process(
        &self,
        name: &SandboxName,
        req: &ExecRequest,
        notes: &std::path::Path,
    ) -> Result<std::process::Command> {
        // Which sandbox first (an unknown one is not found whatever the request), then whether
        // it runs, then the request.
        self.record(name)?;
        if !running(&self.dirs, name) {
            return Err(EngineError::Conflict(format!(
                "sandbox {name} is not running (start it first)"
            )));
        }
        req.check()?;
        if req.tty {
            return Err(invalid(
                "tty: a command run for another program has no terminal of its own",
            ));
        }
        let exe = std::env::current_exe().context("cannot find the paddock executable")?;
        let mut cmd = std::process::Command::new(exe);
        // The request (its variables may hold secrets) in the environment, which only this
        // user and root may read, not on the command line, which every local user may.
        cmd.arg(EXEC_ARG)
            .arg(name.as_str())
            .env(REQUEST_ENV, serde_json::to_string(req)?)
            .env("PADDOCK_HOME", self.dirs.home())
            .env(NOTES_ENV, notes);
        Ok(cmd)
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
