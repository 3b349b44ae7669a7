//! The sandboxes' routes: list, create (and start), one sandbox, start, stop, delete, and one
//! command in a running sandbox. Each is a call into `paddock-engine`, the code behind the
//! command line, on a blocking thread with an engine of its own (one database connection per
//! call; a start waits for the sandbox to come up). What the engine says along the way comes
//! back as `notes`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use http::StatusCode;
use paddock_core::{Dirs, SandboxName};
use paddock_engine::exec::direct::DirectEnd;
use paddock_engine::exec::{ExecProcess, ExecRequest, WindowSize};
use paddock_engine::remove::Delete;
use paddock_engine::sandboxes::{Summary, parse_name};
use paddock_engine::{Engine, EngineError, Mode, Reporter, RunRequest};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{Json, Problem, ProblemCode, body_limit};

/// What the sandboxes' handlers share: the state directory they open an engine on, and the
/// slots for commands running at once.
#[derive(Debug, Clone)]
pub struct ApiState {
    dirs: Dirs,
    exec_slots: Arc<tokio::sync::Semaphore>,
    /// What commands through an ns sandbox's exec socket need, read once per run.
    pub(crate) direct: Arc<crate::direct::Targets>,
}

impl ApiState {
    /// The API on the state directory `dirs`.
    pub fn new(dirs: Dirs) -> ApiState {
        ApiState {
            dirs,
            exec_slots: Arc::new(tokio::sync::Semaphore::new(EXEC_SLOTS)),
            direct: Arc::default(),
        }
    }

    /// The state directory.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }
}

/// Commands run at once through one server (each a process on the host, or in an ns sandbox a
/// connection to its pid 1 and a process there); more wait for a slot, so a flood of requests
/// queues instead of starting thousands of processes.
pub const EXEC_SLOTS: usize = 64;

/// The default cap on each of a command's output streams in an exec answer.
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;
/// The largest cap a request may ask for.
pub const MAX_OUTPUT_CAP: usize = 16 * 1024 * 1024;
/// The largest exec request (its stdin, base64 or text, is in it).
pub const EXEC_BODY_LIMIT: usize = 24 * 1024 * 1024;
/// The largest file read or written in one request.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;
/// How long a command past its timeout has after SIGTERM before SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// The sandboxes' routes, to merge into [`crate::router`].
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, delete))
        .routes(routes!(start))
        .routes(routes!(stop))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(exec))
                .layer(body_limit(EXEC_BODY_LIMIT)),
        )
        .merge(crate::exec_stream::routes())
        .routes(routes!(rules_list, rules_add))
        .routes(routes!(rules_remove))
        .routes(routes!(policy_check))
        .routes(routes!(audit))
        .routes(routes!(audit_stream))
        .routes(routes!(file_list))
        .routes(routes!(file_stat))
        .routes(routes!(file_delete))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(file_read, file_write))
                .layer(body_limit(MAX_FILE_BYTES)),
        )
}

/// Notes an operation made, kept for its answer.
#[derive(Default)]
pub(crate) struct Notes(pub(crate) Mutex<Vec<String>>);

impl Reporter for Notes {
    fn note(&self, text: &str) {
        if let Ok(mut n) = self.0.lock() {
            n.push(text.to_owned());
        }
    }
}

/// The problem an engine error is answered with. The caller is the server's own user (unix
/// socket) or holds its token, so the whole message, causes and paths included, is shown.
pub fn problem(e: &EngineError) -> Problem {
    let mut detail = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        cause = c.source();
    }
    let code = match e {
        EngineError::Invalid(_) => ProblemCode::Invalid,
        EngineError::NotFound(_) => ProblemCode::NotFound,
        EngineError::Conflict(_) => ProblemCode::Conflict,
        EngineError::Interrupted { .. } => ProblemCode::Interrupted,
        EngineError::Supervisor(_) => ProblemCode::StartFailed,
        _ => ProblemCode::Internal,
    };
    match code {
        ProblemCode::Invalid => Problem::unprocessable(detail),
        code => Problem::new(code, detail),
    }
}

/// Runs `f` with an engine on a blocking thread; its result and the notes it made.
pub(crate) async fn blocking<T, F>(state: &ApiState, f: F) -> Result<(T, Vec<String>), Problem>
where
    T: Send + 'static,
    F: FnOnce(&Engine, &dyn Reporter) -> paddock_engine::Result<T> + Send + 'static,
{
    let dirs = state.dirs.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let notes = Notes::default();
        let result = Engine::at(dirs).and_then(|engine| f(&engine, &notes));
        (result, notes.0.into_inner().unwrap_or_default())
    })
    .await;
    match joined {
        Ok((Ok(value), notes)) => Ok((value, notes)),
        Ok((Err(e), _)) => Err(problem(&e)),
        Err(_) => Err(Problem::internal("the operation's thread failed")),
    }
}

pub(crate) fn name_of(raw: &str) -> Result<SandboxName, Problem> {
    parse_name(raw).map_err(|e| problem(&e))
}

/// The operations, for the HTTP routes and the MCP tools alike.
impl ApiState {
    /// The sandboxes (only the running ones with `running`).
    pub async fn list(&self, running: bool) -> Result<Vec<Summary>, Problem> {
        let ((sandboxes, _), _) = blocking(self, move |e, _| e.list(!running)).await?;
        Ok(sandboxes)
    }

    /// Makes a sandbox and, with `start`, starts it in the background.
    pub async fn create(&self, req: RunRequest, start: bool) -> Result<SandboxAnswer, Problem> {
        match &req.workspace {
            None => {
                return Err(Problem::unprocessable(
                    "workspace: give the host folder the sandbox works on (an absolute path)",
                ));
            }
            Some(w) if !w.is_absolute() => {
                return Err(Problem::unprocessable(format!(
                    "workspace {}: give an absolute path",
                    w.display()
                )));
            }
            Some(_) => {}
        }
        let mode = if start { Mode::Detached } else { Mode::Create };
        let (sandbox, notes) = blocking(self, move |e, report| {
            let done = e.run(&req, mode, report)?;
            e.summary(&done.name)
        })
        .await?;
        Ok(SandboxAnswer { sandbox, notes })
    }

    /// One sandbox.
    pub async fn get(&self, name: &str) -> Result<Summary, Problem> {
        let name = name_of(name)?;
        let (summary, _) = blocking(self, move |e, _| e.summary(&name)).await?;
        Ok(summary)
    }

    /// Deletes a sandbox (stopping it and dropping pending changes with `force`); the notes.
    pub async fn delete(&self, name: &str, force: bool) -> Result<Vec<String>, Problem> {
        let name = name_of(name)?;
        let how = Delete {
            stop: force,
            drop_pending: force,
        };
        let ((), notes) = blocking(self, move |e, report| e.delete(&name, how, report)).await?;
        Ok(notes)
    }

    /// Starts a sandbox in the background unless it runs.
    pub async fn start(&self, name: &str) -> Result<SandboxAnswer, Problem> {
        let name = name_of(name)?;
        let (sandbox, notes) = blocking(self, move |e, report| {
            if !e.start(&name)? {
                report.note(&format!("{name} was running"));
            }
            e.summary(&name)
        })
        .await?;
        Ok(SandboxAnswer { sandbox, notes })
    }

    /// Stops a sandbox: SIGTERM, SIGKILL after `grace` seconds (10 when not given).
    pub async fn stop(&self, name: &str, grace: Option<u64>) -> Result<SandboxAnswer, Problem> {
        let name = name_of(name)?;
        let grace = grace.unwrap_or(10);
        if grace > 3600 {
            return Err(Problem::unprocessable("grace: at most 3600 seconds"));
        }
        let (sandbox, notes) = blocking(self, move |e, report| {
            e.record(&name)?;
            if !e.stop(&name, grace)? {
                report.note(&format!("{name} was not running"));
            }
            e.summary(&name)
        })
        .await?;
        Ok(SandboxAnswer { sandbox, notes })
    }

    /// Runs one command in a running sandbox to its end.
    pub async fn exec(&self, name: &str, body: ExecBody) -> Result<ExecResult, Problem> {
        let name = name_of(name)?;
        let req = ExecRequest {
            command: body.command.clone(),
            env: body.env.clone(),
            user: body.user.clone(),
            workdir: body.workdir.clone(),
            tty: false,
            stdin: body.stdin.is_some() || body.stdin_base64.is_some(),
        };
        // An ns sandbox's exec socket: one fork inside, no process here (`direct`). Which
        // sandbox and whether it runs come first there too, then the request.
        if let Some(result) = self.exec_direct(&name, &req, &body).await? {
            return Ok(result);
        }
        // Which sandbox and whether it runs first (an unknown one is 404 whatever the request),
        // then the request.
        let (process, notes_file) = self.exec_command(name, req, WindowSize::DEFAULT).await?;
        let (cap, input) = exec_input(&body)?;
        let (mut child, _slot) = self.spawn(process.command, input.is_some()).await?;
        let started = Instant::now();
        if let (Some(mut pipe), Some(data)) = (child.stdin.take(), input) {
            // A command that does not read its input must not hold the answer up.
            tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
            });
        }
        let out = tokio::spawn(read_capped(child.stdout.take(), cap));
        let err = tokio::spawn(read_capped(child.stderr.take(), cap));
        let mut timed_out = false;
        let status = match body.timeout_ms {
            None => child.wait().await,
            Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    timed_out = true;
                    signal(&child, rustix::process::Signal::TERM);
                    match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            let _ = child.start_kill();
                            child.wait().await
                        }
                    }
                }
            },
        }
        .map_err(|e| Problem::internal(format!("cannot wait for the command: {e}")))?;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (stdout, stdout_truncated) = out.await.unwrap_or_default();
        let (stderr, stderr_truncated) = err.await.unwrap_or_default();
        let (code, notes) = ended(&status, notes_file.path())?;
        // Killed at the deadline: no status of its own.
        let code = if timed_out && status.code().is_none() {
            None
        } else {
            code
        };
        Ok(ExecResult::of(
            &body,
            code,
            [(stdout, stdout_truncated), (stderr, stderr_truncated)],
            (timed_out, duration_ms),
            notes,
        ))
    }
}

impl ExecResult {
    /// The answer to `body`: the command's status, its two streams (each with whether it was
    /// cut), whether it timed out and how long it ran, and the notes.
    fn of(
        body: &ExecBody,
        exit_code: Option<i32>,
        [(stdout, stdout_truncated), (stderr, stderr_truncated)]: [(Vec<u8>, bool); 2],
        (timed_out, duration_ms): (bool, u64),
        notes: Vec<String>,
    ) -> ExecResult {
        use base64::Engine as _;
        let render = |bytes: Vec<u8>| match body.encoding {
            Encoding::Text => String::from_utf8_lossy(&bytes).into_owned(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        };
        ExecResult {
            exit_code,
            stdout: render(stdout),
            stderr: render(stderr),
            encoding: body.encoding,
            stdout_truncated,
            stderr_truncated,
            timed_out,
            duration_ms,
            notes,
        }
    }
}

impl ApiState {
    /// [`Self::exec`] through the sandbox's exec socket; `None` when it serves none.
    async fn exec_direct(
        &self,
        name: &SandboxName,
        req: &ExecRequest,
        body: &ExecBody,
    ) -> Result<Option<ExecResult>, Problem> {
        let Some(target) = self.direct_target(name).await? else {
            return Ok(None);
        };
        let (cap, input) = exec_input(body)?;
        let slot = self.exec_slot().await?;
        let Some(mut direct) = self.start_direct(target, req, input.is_some()).await? else {
            return Ok(None);
        };
        let started = Instant::now();
        if let (Some(mut pipe), Some(data)) = (direct.stdin.take(), input) {
            // A command that does not read its input must not hold the answer up.
            tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
            });
        }
        // The end and both streams in this one task: no hop to another thread for each.
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        let read = |pipe: Option<tokio::net::unix::pipe::Receiver>, ended| async move {
            match pipe {
                Some(p) => crate::direct::read_until_end(p, cap, ended).await,
                None => (Vec::new(), false),
            }
        };
        let (stdout, stderr) = (direct.stdout.take(), direct.stderr.take());
        let waited = |r: std::io::Result<DirectEnd>| {
            r.map_err(|e| Problem::internal(format!("cannot wait for the command: {e}")))
        };
        let wait = async {
            let ended = match body.timeout_ms {
                None => (waited(direct.wait().await), false),
                Some(ms) => {
                    match tokio::time::timeout(Duration::from_millis(ms), direct.wait()).await {
                        Ok(r) => (waited(r), false),
                        Err(_) => {
                            direct.signal(rustix::process::Signal::TERM);
                            let r = match tokio::time::timeout(KILL_GRACE, direct.wait()).await {
                                Ok(r) => r,
                                Err(_) => {
                                    direct.signal(rustix::process::Signal::KILL);
                                    direct.wait().await
                                }
                            };
                            (waited(r), true)
                        }
                    }
                }
            };
            let _ = ended_tx.send(true);
            ended
        };
        let ((end, timed_out), (stdout, stdout_truncated), (stderr, stderr_truncated)) =
            tokio::join!(wait, read(stdout, ended.clone()), read(stderr, ended));
        let end = end?;
        let duration_ms = started.elapsed().as_millis() as u64;
        drop(slot);
        let mut notes = end.diagnostics;
        notes.extend(direct.trust_notes(&self.dirs).await);
        // Killed at the deadline: no status of its own.
        let code = (!timed_out || end.status <= 128).then_some(end.status);
        Ok(Some(ExecResult::of(
            body,
            code,
            [(stdout, stdout_truncated), (stderr, stderr_truncated)],
            (timed_out, duration_ms),
            notes,
        )))
    }
}

/// An exec request's output cap and input (checked).
fn exec_input(body: &ExecBody) -> Result<(usize, Option<Vec<u8>>), Problem> {
    use base64::Engine as _;
    let cap = body.max_output_bytes.unwrap_or(DEFAULT_OUTPUT_CAP);
    if cap > MAX_OUTPUT_CAP {
        return Err(Problem::unprocessable(format!(
            "max_output_bytes: at most {MAX_OUTPUT_CAP}"
        )));
    }
    let input = match (&body.stdin, &body.stdin_base64) {
        (Some(_), Some(_)) => {
            return Err(Problem::unprocessable(
                "give stdin or stdin_base64, not both",
            ));
        }
        (Some(text), None) => Some(text.clone().into_bytes()),
        (None, Some(b64)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| Problem::unprocessable(format!("stdin_base64: {e}")))?,
        ),
        (None, None) => None,
    };
    Ok((cap, input))
}

/// A sandbox's workspace files, for the HTTP routes and the MCP tools alike.
impl ApiState {
    async fn files<T, F>(&self, name: &str, path: &str, f: F) -> Result<T, Problem>
    where
        T: Send + 'static,
        F: FnOnce(
                &paddock_engine::files::Workspace,
                &paddock_review::RelPath,
            ) -> Result<T, paddock_engine::files::FilesError>
            + Send
            + 'static,
    {
        let name = name_of(name)?;
        let path = path.to_owned();
        let (value, _) = blocking(self, move |e, _| {
            // Which sandbox first (an unknown one is 404 whatever the path), then the path.
            let ws = e.workspace_files(&name)?;
            let rel = paddock_engine::files::workspace_path(&path)?;
            f(&ws, &rel).map_err(paddock_engine::files::files_error)
        })
        .await?;
        Ok(value)
    }

    /// The entries of a directory of the workspace (`""`: its root).
    pub async fn file_list(&self, name: &str, path: &str) -> Result<FileList, Problem> {
        self.files(name, path, |ws, rel| {
            let (entries, truncated) = ws.list(rel)?;
            Ok(FileList {
                entries: entries.into_iter().map(FileEntry::from).collect(),
                truncated,
            })
        })
        .await
    }

    /// What is at a path of the workspace.
    pub async fn file_stat(&self, name: &str, path: &str) -> Result<FileEntry, Problem> {
        self.files(name, path, |ws, rel| ws.stat(rel).map(FileEntry::from))
            .await
    }

    /// A regular file's bytes, when it has at most `max` bytes.
    pub async fn file_read(&self, name: &str, path: &str, max: u64) -> Result<Vec<u8>, Problem> {
        self.files(name, path, move |ws, rel| ws.read(rel, max))
            .await
    }

    /// Writes a file whole (made or replaced; `parents` makes missing directories).
    pub async fn file_write(
        &self,
        name: &str,
        path: &str,
        data: Vec<u8>,
        mode: Option<u32>,
        parents: bool,
    ) -> Result<FileEntry, Problem> {
        self.files(name, path, move |ws, rel| {
            ws.write(rel, &data, mode, parents).map(FileEntry::from)
        })
        .await
    }

    /// Deletes a file, a symlink (itself), an empty directory, or with `recursive` a tree.
    pub async fn file_delete(
        &self,
        name: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), Problem> {
        self.files(name, path, move |ws, rel| ws.delete(rel, recursive))
            .await
    }
}

/// One entry of a workspace.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileEntry {
    /// Its path relative to the workspace root (`""` for the root; bytes that are not UTF-8, or
    /// control characters, escaped and the whole quoted).
    pub path: String,
    /// `file`, `dir`, `symlink` or `other` (a fifo, socket or device).
    pub kind: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits (0o644 is 420).
    pub mode: u32,
    /// When it was last modified (Unix seconds).
    pub modified: i64,
    /// A symlink's target as written (symlinks are never followed).
    pub target: Option<String>,
}

impl From<paddock_engine::files::FileInfo> for FileEntry {
    fn from(f: paddock_engine::files::FileInfo) -> FileEntry {
        FileEntry {
            path: f.path,
            kind: f.kind.to_owned(),
            size: f.size,
            mode: f.mode,
            modified: f.modified,
            target: f.target,
        }
    }
}

/// A directory's entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    /// Sorted by name.
    pub entries: Vec<FileEntry>,
    /// More entries than a listing returns (10,000) were there.
    pub truncated: bool,
}

/// A sandbox's name in a route's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamePath {
    /// The sandbox's name: 1-48 characters from a-z, 0-9, `-` and `_`, starting with a letter
    /// or digit.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub name: String,
}

/// The sandboxes.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxList {
    /// Each with its state now.
    pub sandboxes: Vec<Summary>,
}

/// A sandbox after an operation, and what the operation had to say.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxAnswer {
    /// The sandbox as it is now.
    pub sandbox: Summary,
    /// Notes and warnings, for a person.
    pub notes: Vec<String>,
}

/// Which sandboxes to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the running ones.
    #[serde(default)]
    pub running: bool,
}

/// The sandboxes, with their state, limits and what they use now.
#[utoipa::path(
    get,
    path = "/v1/sandboxes",
    tag = "sandboxes",
    params(ListQuery),
    responses((status = 200, body = SandboxList))
)]
async fn list(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<SandboxList>, Problem> {
    Ok(Json(SandboxList {
        sandboxes: state.list(q.running).await?,
    }))
}

/// Whether a new sandbox starts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Start it in the background at once (its command, or a keep-alive when none is given).
    /// Default: true.
    pub start: Option<bool>,
}

/// Makes a sandbox (the settings of `paddock create`) and, unless `start=false`, starts it in
/// the background. `workspace` is required and must be absolute. A name already in use by a
/// sandbox of the same workspace reuses it (its settings are replaced while it is stopped).
#[utoipa::path(
    post,
    path = "/v1/sandboxes",
    tag = "sandboxes",
    params(CreateQuery),
    request_body = RunRequest,
    responses(
        (status = 201, body = SandboxAnswer),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<ApiState>,
    Query(q): Query<CreateQuery>,
    Json(req): Json<RunRequest>,
) -> Result<(StatusCode, Json<SandboxAnswer>), Problem> {
    let answer = state.create(req, q.start.unwrap_or(true)).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// One sandbox.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}",
    tag = "sandboxes",
    params(NamePath),
    responses(
        (status = 200, body = Summary),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Summary>, Problem> {
    Ok(Json(state.get(&name).await?))
}

/// How a sandbox is deleted.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Stop it first if it runs, and drop changes that wait for review.
    #[serde(default)]
    pub force: bool,
}

/// Deletes a sandbox: its layer, records, rules and secrets. The workspace is not touched. A
/// running sandbox, or one holding changes that wait for review, is refused unless `force`.
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{name}",
    tag = "sandboxes",
    params(NamePath, DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, Problem> {
    state.delete(&name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a stopped sandbox in the background (nothing happens to a running one).
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{name}/start",
    tag = "sandboxes",
    params(NamePath),
    responses(
        (status = 200, body = SandboxAnswer),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn start(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<SandboxAnswer>, Problem> {
    Ok(Json(state.start(&name).await?))
}

/// How long a stop waits.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopQuery {
    /// Seconds between SIGTERM to the command and SIGKILL (default 10, at most 3600).
    #[param(maximum = 3600)]
    pub grace: Option<u64>,
}

/// Stops a running sandbox: SIGTERM to its command, SIGKILL after the grace period. Its layer
/// stays; `start` runs it again.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{name}/stop",
    tag = "sandboxes",
    params(NamePath, StopQuery),
    responses(
        (status = 200, body = SandboxAnswer),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stop(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Json<SandboxAnswer>, Problem> {
    Ok(Json(state.stop(&name, q.grace).await?))
}

/// How an exec answer carries the command's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text; bytes that are not UTF-8 become U+FFFD.
    #[default]
    Text,
    /// Standard base64 of the bytes as they were.
    Base64,
}

/// A command to run in a running sandbox, and what it reads.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments (no shell unless you name one: `["bash", "-lc", "…"]`).
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    /// More `NAME=VALUE` variables.
    #[serde(default)]
    pub env: Vec<String>,
    /// `agent`, `root` or a uid (the sandbox's user when not given).
    pub user: Option<String>,
    /// Where it starts (an absolute path inside; the workspace when not given).
    #[schema(pattern = "^/")]
    pub workdir: Option<String>,
    /// Its standard input, as text (none: it reads an empty input).
    pub stdin: Option<String>,
    /// Its standard input, base64 (instead of `stdin`).
    pub stdin_base64: Option<String>,
    /// Milliseconds before it is stopped (SIGTERM, SIGKILL 2 s later); no limit when not given.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<u64>, minimum = 0)]
    pub timeout_ms: Option<u64>,
    /// Bytes kept of each of stdout and stderr (default 1 MiB, at most 16 MiB); the rest is
    /// read and dropped, and the answer says it was cut.
    #[serde(default, deserialize_with = "whole_number_usize")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 16777216)]
    pub max_output_bytes: Option<usize>,
    /// How the output is carried: `text` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// A count as JSON Schema's `integer` has it: `5` or `5.0`, not `5.5` or a negative.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a whole number of at least 0"
        ))),
    }
}

fn whole_number_usize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    whole_number(d)?
        .map(usize::try_from)
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// How a command ended and what it wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResult {
    /// Its exit status (128 + N when signal N ended it); none when it was killed at its
    /// timeout.
    pub exit_code: Option<i32>,
    /// What it wrote to stdout, as `encoding` says.
    pub stdout: String,
    /// What it wrote to stderr, as `encoding` says.
    pub stderr: String,
    /// How `stdout` and `stderr` are carried.
    pub encoding: Encoding,
    /// stdout was longer than the cap and was cut.
    pub stdout_truncated: bool,
    /// stderr was longer than the cap and was cut.
    pub stderr_truncated: bool,
    /// It ran past `timeout_ms` and was stopped.
    pub timed_out: bool,
    /// Milliseconds from start to end.
    pub duration_ms: u64,
    /// Paddock's notes: files the host runs that the command changed, why it was killed.
    pub notes: Vec<String>,
}

/// Runs one command in a running sandbox and answers when it ends, with its exit status and
/// output. Each command runs in a process of its own; commands run side by side.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{name}/exec",
    tag = "sandboxes",
    params(NamePath),
    request_body = ExecBody,
    responses(
        (status = 200, body = ExecResult),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "The sandbox is not running"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn exec(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<ExecBody>,
) -> Result<Json<ExecResult>, Problem> {
    Ok(Json(state.exec(&name, body).await?))
}

/// A path of the workspace.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// Relative to the workspace root (`""` or absent: the root); no `..`, not absolute.
    #[serde(default)]
    pub path: String,
}

/// The entries of a directory of the sandbox's workspace. Symlinks are listed as symlinks.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/files/list",
    tag = "files",
    params(NamePath, PathQuery),
    responses(
        (status = 200, body = FileList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "A review-mode sandbox"),
        (status = 422, body = Problem, content_type = "application/problem+json",
         description = "Not a directory, a symlink on the way, or a path out of the workspace"),
    )
)]
async fn file_list(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Json<FileList>, Problem> {
    Ok(Json(state.file_list(&name, &q.path).await?))
}

/// What is at a path of the sandbox's workspace (a symlink is described, not followed).
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/files/stat",
    tag = "files",
    params(NamePath, PathQuery),
    responses(
        (status = 200, body = FileEntry),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn file_stat(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Json<FileEntry>, Problem> {
    Ok(Json(state.file_stat(&name, &q.path).await?))
}

/// Which file to read, and how much of one is taken.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Relative to the workspace root.
    #[param(pattern = "^[^/]")]
    pub path: String,
    /// Refuse a file larger than this (default and most: 64 MiB).
    pub max_bytes: Option<u64>,
}

/// A regular file of the sandbox's workspace, as its bytes (`application/octet-stream`).
/// Reading through a symlink is refused.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/files/content",
    tag = "files",
    params(NamePath, ReadQuery),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
         description = "Not a regular file, a symlink, larger than max_bytes, or a path out of the workspace"),
    )
)]
async fn file_read(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<axum::response::Response, Problem> {
    let max = q
        .max_bytes
        .unwrap_or(MAX_FILE_BYTES as u64)
        .min(MAX_FILE_BYTES as u64);
    let bytes = state.file_read(&name, &q.path, max).await?;
    Ok((
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// Where a file is written, and how.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WriteQuery {
    /// Relative to the workspace root.
    #[param(pattern = "^[^/]")]
    pub path: String,
    /// Permission bits in octal (e.g. `755`); the replaced file's, or 644, when not given.
    #[param(pattern = "^[0-7]{1,4}$")]
    pub mode: Option<String>,
    /// Make missing directories (default true).
    pub parents: Option<bool>,
}

/// Writes a file of the sandbox's workspace whole from the request's bytes (at most 64 MiB): to
/// a temporary file beside it, renamed over it, so readers see the old file or the new one.
/// Writing through a symlink is refused.
#[utoipa::path(
    put,
    path = "/v1/sandboxes/{name}/files/content",
    tag = "files",
    params(NamePath, WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, body = FileEntry),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn file_write(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<WriteQuery>,
    body: axum::body::Bytes,
) -> Result<Json<FileEntry>, Problem> {
    let mode = q
        .mode
        .as_deref()
        .map(|m| u32::from_str_radix(m, 8))
        .transpose()
        .ok()
        .flatten()
        .filter(|m| *m <= 0o7777);
    if q.mode.is_some() && mode.is_none() {
        return Err(Problem::unprocessable(
            "mode: give permission bits in octal, e.g. 644 or 755",
        ));
    }
    Ok(Json(
        state
            .file_write(
                &name,
                &q.path,
                body.to_vec(),
                mode,
                q.parents.unwrap_or(true),
            )
            .await?,
    ))
}

/// What is deleted.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteFileQuery {
    /// Relative to the workspace root (not the root itself).
    #[param(pattern = "^[^/]")]
    pub path: String,
    /// Delete a directory with everything below it (symlinks inside removed, not followed).
    #[serde(default)]
    pub recursive: bool,
}

/// Deletes a file, a symlink (the link itself), an empty directory, or with `recursive` a
/// directory tree of the sandbox's workspace.
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{name}/files",
    tag = "files",
    params(NamePath, DeleteFileQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "A directory that is not empty, without recursive"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn file_delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<DeleteFileQuery>,
) -> Result<StatusCode, Problem> {
    state.file_delete(&name, &q.path, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl ApiState {
    /// The exec process for `req` in sandbox `name` (checked: it exists, runs, and the request
    /// is valid; with `tty`, in a new terminal of `size`), and the file it writes its notes to.
    pub(crate) async fn exec_command(
        &self,
        name: SandboxName,
        req: ExecRequest,
        size: WindowSize,
    ) -> Result<(ExecProcess, tempfile::NamedTempFile), Problem> {
        let notes_file = tempfile::NamedTempFile::new()
            .map_err(|e| Problem::internal(format!("cannot make a temporary file: {e}")))?;
        let notes_path = notes_file.path().to_owned();
        let (process, _) = blocking(self, move |e, _| {
            e.exec_process(&name, &req, size, &notes_path)
        })
        .await?;
        Ok((process, notes_file))
    }

    /// A slot for one more exec process, once one is free; held until the permit is dropped.
    pub(crate) async fn exec_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
        Arc::clone(&self.exec_slots)
            .acquire_owned()
            .await
            .map_err(|_| Problem::internal("the server is shutting down"))
    }

    /// Starts an exec process once a slot is free, its output piped (and its input, with
    /// `stdin`; else /dev/null); the slot is held until the permit is dropped.
    pub(crate) async fn spawn(
        &self,
        cmd: std::process::Command,
        stdin: bool,
    ) -> Result<(tokio::process::Child, tokio::sync::OwnedSemaphorePermit), Problem> {
        let slot = self.exec_slot().await?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Problem::internal(format!("cannot start the command: {e}")))?;
        Ok((child, slot))
    }
}

/// How an exec process ended: the command's exit status (128 + N for signal N) and Paddock's
/// notes; or, when the exec process itself failed (the sandbox stopped in between, its backend
/// failed: status 2 or 125 with an `error:` note last), that failure.
pub(crate) fn ended(
    status: &std::process::ExitStatus,
    notes_file: &std::path::Path,
) -> Result<(Option<i32>, Vec<String>), Problem> {
    let notes: Vec<String> = std::fs::read_to_string(notes_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let code = status.code();
    if matches!(code, Some(2 | 125))
        && let Some(error) = notes.last().and_then(|n| n.strip_prefix("error: "))
    {
        return Err(Problem::new(ProblemCode::StartFailed, error.to_owned()));
    }
    let code =
        code.or_else(|| std::os::unix::process::ExitStatusExt::signal(status).map(|s| 128 + s));
    Ok((code, notes))
}

/// Which rules to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RulesQuery {
    /// The rules that apply to this sandbox (its own and the global ones); every rule when
    /// not given.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub sandbox: Option<String>,
}

/// The network rules.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    /// Each rule with its id, scope and source.
    pub rules: Vec<paddock_engine::policy::RuleView>,
}

/// Rules to add: `allow`, `ask` or `deny` for each of `hosts`, with the optional port, method
/// and path for all of them; for one sandbox or every sandbox.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRules {
    /// `allow`, `ask` (a request waits for the user's answer) or `deny`.
    #[schema(pattern = "^(allow|ask|deny)$")]
    pub action: String,
    /// Host patterns: `api.example.com`, `*.example.com` (one label), `**.example.com` (any
    /// depth, and the name itself), an address or range, each with an optional `:PORT`.
    #[schema(min_items = 1)]
    pub hosts: Vec<String>,
    /// Only this sandbox (every sandbox when not given).
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub sandbox: Option<String>,
    /// A port, a range, or `any` (default: 80 for plain HTTP, 443 for HTTPS).
    pub port: Option<String>,
    /// Only this HTTP method (the host is intercepted to see it).
    pub method: Option<String>,
    /// Only paths matching this glob (the host is intercepted to see it).
    pub path: Option<String>,
    /// The hosts (one name each, no wildcard) may resolve to a private address.
    #[serde(default)]
    pub private_address: bool,
}

impl ApiState {
    /// The rules (those that apply to `sandbox`, or every one).
    pub async fn rules(&self, sandbox: Option<String>) -> Result<RuleList, Problem> {
        let (rules, _) = blocking(self, move |e, _| e.rules(sandbox.as_deref())).await?;
        Ok(RuleList {
            rules: rules.iter().map(Into::into).collect(),
        })
    }

    /// What the proxy would decide for `url` in `sandbox` (the global rules when none).
    pub async fn check(
        &self,
        url: String,
        sandbox: Option<String>,
        method: Option<String>,
    ) -> Result<paddock_engine::policy::Check, Problem> {
        let (check, _) = blocking(self, move |e, _| {
            e.check_url(&url, sandbox.as_deref(), method.as_deref())
        })
        .await?;
        Ok(check)
    }
}

/// The network rules, in the order the proxy weighs them.
#[utoipa::path(
    get,
    path = "/v1/policy/rules",
    tag = "policy",
    params(RulesQuery),
    responses((status = 200, body = RuleList))
)]
async fn rules_list(
    State(state): State<ApiState>,
    Query(q): Query<RulesQuery>,
) -> Result<Json<RuleList>, Problem> {
    Ok(Json(state.rules(q.sandbox).await?))
}

/// Adds rules (all checked before any is stored: a rule that allows every host, or private
/// addresses through a range, is refused).
#[utoipa::path(
    post,
    path = "/v1/policy/rules",
    tag = "policy",
    request_body = AddRules,
    responses(
        (status = 201, body = RuleList, description = "The rules added, with their ids"),
    )
)]
async fn rules_add(
    State(state): State<ApiState>,
    Json(req): Json<AddRules>,
) -> Result<(StatusCode, Json<RuleList>), Problem> {
    let Some(action) = paddock_policy::net::Action::parse(&req.action) else {
        return Err(Problem::unprocessable(format!(
            "action {:?}: allow, ask or deny",
            req.action
        )));
    };
    let request = paddock_engine::policy::RuleRequest {
        hosts: req.hosts,
        sandbox: req.sandbox,
        port: req.port,
        method: req.method,
        path: req.path,
        private_address: req.private_address,
    };
    let (added, _) = blocking(&state, move |e, report| {
        e.add_rules(action, &request, report)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(RuleList {
            rules: added.iter().map(Into::into).collect(),
        }),
    ))
}

/// A rule's id in a route's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RuleId {
    /// The rule's id.
    pub id: i64,
}

/// Removes a rule.
#[utoipa::path(
    delete,
    path = "/v1/policy/rules/{id}",
    tag = "policy",
    params(RuleId),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rules_remove(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, Problem> {
    blocking(&state, move |e, _| e.remove_rules(&[id])).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What to check.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckQuery {
    /// `https://host/…`, `http://host[:port]/path`, or a bare `host[:port]` (as https).
    pub url: String,
    /// With this sandbox's rules (the global rules alone when not given).
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub sandbox: Option<String>,
    /// The HTTP method of a plain-HTTP request (GET when not given).
    pub method: Option<String>,
}

/// What the egress proxy would decide for a URL, and which rule decides.
#[utoipa::path(
    get,
    path = "/v1/policy/check",
    tag = "policy",
    params(CheckQuery),
    responses((status = 200, body = paddock_engine::policy::Check))
)]
async fn policy_check(
    State(state): State<ApiState>,
    Query(q): Query<CheckQuery>,
) -> Result<Json<paddock_engine::policy::Check>, Problem> {
    Ok(Json(state.check(q.url, q.sandbox, q.method).await?))
}

/// Which audit rows to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this sandbox's requests.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub sandbox: Option<String>,
    /// Only denials.
    #[serde(default)]
    pub denied: bool,
    /// Only rows after this id (to page on, or to follow from).
    pub after: Option<i64>,
    /// At most this many, the newest (default 100, at most 10,000).
    #[param(maximum = 10000)]
    pub limit: Option<u32>,
}

impl AuditParams {
    fn query(self) -> Result<paddock_store::AuditQuery, Problem> {
        if let Some(s) = &self.sandbox {
            parse_name(s).map_err(|e| problem(&e))?;
        }
        if self.limit.is_some_and(|l| l > 10_000) {
            return Err(Problem::unprocessable("limit: at most 10000"));
        }
        Ok(paddock_store::AuditQuery {
            sandbox: self.sandbox,
            denied: self.denied,
            after: self.after,
            limit: Some(self.limit.unwrap_or(100)),
        })
    }
}

/// The audit log of the sandboxes' network requests: every decision of the egress proxy.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    /// Oldest first.
    pub rows: Vec<paddock_store::AuditRow>,
}

/// The egress proxy's decisions, oldest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "policy",
    params(AuditParams),
    responses((status = 200, body = AuditLog))
)]
async fn audit(
    State(state): State<ApiState>,
    Query(q): Query<AuditParams>,
) -> Result<Json<AuditLog>, Problem> {
    let q = q.query()?;
    let (rows, _) = blocking(&state, move |e, _| Ok(e.store().audit_rows(&q)?)).await?;
    Ok(Json(AuditLog { rows }))
}

/// How often a followed audit log is read for new rows.
const AUDIT_POLL: Duration = Duration::from_millis(250);

/// The egress proxy's decisions as they are made, as server-sent events (`text/event-stream`):
/// each event is one row (`event: audit`, `id:` the row's id, `data:` the row as JSON). It
/// starts with the last `limit` rows (none with `limit=0`) or those after `after` (or the
/// `Last-Event-ID` header a reconnecting client sends), and goes on until the client leaves.
#[utoipa::path(
    get,
    path = "/v1/audit/stream",
    tag = "policy",
    params(AuditParams),
    responses((status = 200, content_type = "text/event-stream", body = paddock_store::AuditRow))
)]
async fn audit_stream(
    State(state): State<ApiState>,
    Query(q): Query<AuditParams>,
    headers: http::HeaderMap,
) -> Result<axum::response::Response, Problem> {
    use axum::response::sse::Event;
    let mut q = q.query()?;
    q.after = crate::events::last_event_id(&headers).or(q.after);
    crate::events::follow(&state, AUDIT_POLL, move |engine| {
        let end = crate::events::resume_from(q.after, || {
            let newest = paddock_store::AuditQuery {
                limit: Some(1),
                ..q.clone()
            };
            Ok(engine.store().audit_rows(&newest)?.last().map(|r| r.id))
        })?;
        let rows = engine.store().audit_rows(&q)?;
        q.after = Some(rows.last().map_or(end, |r| r.id.max(end)));
        q.limit = None;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Event::default()
                    .event("audit")
                    .id(row.id.to_string())
                    .json_data(row)
                    .ok()
            })
            .collect())
    })
    .await
}

/// The receiver as a stream of events.
pub(crate) fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    Received(rx)
}

struct Received<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for Received<T> {
    type Item = T;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

pub(crate) fn signal(child: &tokio::process::Child, sig: rustix::process::Signal) {
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Reads `pipe` to its end, keeping the first `cap` bytes; whether more came.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut kept = Capped::new(cap);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => kept.keep(&buf[..n]),
        }
    }
    kept.done()
}

/// A stream's first `cap` bytes, and whether more came.
pub(crate) struct Capped {
    kept: Vec<u8>,
    more: bool,
    cap: usize,
}

impl Capped {
    pub(crate) fn new(cap: usize) -> Capped {
        Capped {
            kept: Vec::new(),
            more: false,
            cap,
        }
    }

    /// Keeps what of `data` fits under the cap.
    pub(crate) fn keep(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
        self.more |= data.len() > room;
    }

    /// The bytes kept, and whether more came.
    pub(crate) fn done(self) -> (Vec<u8>, bool) {
        (self.kept, self.more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_past_the_cap_is_read_to_its_end_and_said_to_be_cut() {
        let data = vec![b'x'; 200_000];
        let (kept, cut) = read_capped(Some(&data[..]), 1000).await;
        assert_eq!(kept.len(), 1000);
        assert!(cut);
        let (kept, cut) = read_capped(Some(&data[..10]), 1000).await;
        assert_eq!(kept.len(), 10);
        assert!(!cut);
        let (kept, cut) = read_capped(Some(&data[..1000]), 1000).await;
        assert_eq!(kept.len(), 1000);
        assert!(!cut);
    }

    #[test]
    fn engine_errors_keep_their_kind_and_causes() {
        let p = problem(&EngineError::NotFound("no sandbox named x".into()));
        assert_eq!((p.status, p.code), (404, ProblemCode::NotFound));
        let p = problem(&paddock_engine::invalid("--cpus: not a number"));
        assert_eq!((p.status, p.code), (422, ProblemCode::Invalid));
        let p = problem(&EngineError::Conflict("running".into()));
        assert_eq!(p.status, 409);
        let p = problem(&EngineError::Interrupted {
            message: "stopped".into(),
            signal: 15,
        });
        assert_eq!((p.status, p.code), (503, ProblemCode::Interrupted));
        let io = std::io::Error::other("disk full");
        let p = problem(&EngineError::Failed {
            what: "cannot write the record".into(),
            source: Some(Box::new(io)),
        });
        assert_eq!(p.code, ProblemCode::Internal);
        assert_eq!(p.detail, "cannot write the record: disk full");
    }
}
