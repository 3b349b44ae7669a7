//! A command in a running sandbox with its streams as they happen, over a WebSocket
//! (`GET /v1/sandboxes/{name}/exec/stream`): the messages a client sends and gets, and the
//! relay between them and the exec process.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use paddock_engine::EngineError;
use paddock_engine::exec::{ExecProcess, ExecRequest, ExecTerminal, WindowSize};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::sandboxes::{
    ApiState, EXEC_BODY_LIMIT, KILL_GRACE, NamePath, blocking, ended, name_of, problem, signal,
};
use crate::{Problem, ProblemCode};

/// The streamed exec's route, to merge into the sandboxes' routes, with the schemas of the
/// messages a client sends (the route's own annotation names what the server sends).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(Messages::openapi())
        .routes(routes!(exec_stream))
        .routes(routes!(attach))
}

/// The client's messages of a streamed exec, as schemas of the document.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(StreamStart, StreamControl)))]
struct Messages;

/// The first message of a streamed exec: the command.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamStart {
    /// Program and arguments.
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
    /// In a terminal of its own (a pty in the sandbox): its stdout and stderr arrive together
    /// on channel 1, and `resize` messages change its size.
    #[serde(default)]
    pub tty: bool,
    /// The terminal's rows (24 when not given; only with `tty`).
    #[schema(minimum = 1, maximum = 1000)]
    pub rows: Option<i64>,
    /// The terminal's columns (80 when not given; only with `tty`).
    #[schema(minimum = 1, maximum = 1000)]
    pub cols: Option<i64>,
}

impl StreamStart {
    /// The terminal's size, with `tty` (None without it); sizes without `tty` are refused.
    fn window_size(&self) -> Result<Option<WindowSize>, Problem> {
        if !self.tty {
            return match (self.rows, self.cols) {
                (None, None) => Ok(None),
                _ => Err(Problem::unprocessable(
                    "rows and cols are a terminal's size: give them with \"tty\": true",
                )),
            };
        }
        let default = WindowSize::DEFAULT;
        WindowSize::new(
            self.rows.unwrap_or(default.rows().into()),
            self.cols.unwrap_or(default.cols().into()),
        )
        .map(Some)
        .map_err(|e| problem(&e))
    }
}

/// A control message from the client of a streamed exec (a text message).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamControl {
    /// No more input. Without a terminal the command's stdin is closed; with one the
    /// terminal's end-of-file key is typed (Ctrl-D, byte 4), as `docker exec -it` passes it:
    /// a command reading lines sees the end of its input at the start of a line.
    Eof,
    /// A signal for the command: 1 (HUP), 2 (INT), 3 (QUIT) or 15 (TERM).
    Signal {
        /// The signal's number.
        signal: i32,
    },
    /// A new size for the command's terminal (only with `tty`): it gets SIGWINCH.
    Resize {
        /// Rows, 1 to 1000.
        #[schema(minimum = 1, maximum = 1000)]
        rows: i64,
        /// Columns, 1 to 1000.
        #[schema(minimum = 1, maximum = 1000)]
        cols: i64,
    },
}

/// What the server's text messages of a streamed exec say.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The command ended (the last message before the close).
    Exit {
        /// Its exit status (128 + N for signal N).
        exit_code: Option<i32>,
        /// Paddock's notes.
        notes: Vec<String>,
    },
    /// The exec could not start or failed (the last message before the close).
    Error {
        /// The problem's code.
        code: ProblemCode,
        /// What went wrong.
        detail: String,
    },
    /// A control message was refused (not valid, or not for this exec); the command goes on.
    Refused {
        /// The problem's code.
        code: ProblemCode,
        /// Why.
        detail: String,
    },
}

/// What a client's control message asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Close the command's stdin.
    CloseStdin,
    /// Give the command these bytes as input (a terminal's end-of-file key).
    Input(Vec<u8>),
    /// Signal the command.
    Signal(rustix::process::Signal),
    /// Give the command's terminal a new size.
    Resize(WindowSize),
}

/// What the text message `text` asks for, in an exec with a terminal (`tty`) or without; why
/// it is refused otherwise.
fn action(text: &str, tty: bool) -> Result<Action, String> {
    use rustix::process::Signal;
    let control: StreamControl = serde_json::from_str(text).map_err(|e| {
        format!(
            "a control message is {{\"type\":\"eof\"}}, {{\"type\":\"signal\",\"signal\":N}} or \
             {{\"type\":\"resize\",\"rows\":R,\"cols\":C}}: {e}"
        )
    })?;
    match control {
        StreamControl::Eof if tty => Ok(Action::Input(vec![TERMINAL_EOF])),
        StreamControl::Eof => Ok(Action::CloseStdin),
        StreamControl::Signal { signal } => match signal {
            1 => Ok(Action::Signal(Signal::HUP)),
            2 => Ok(Action::Signal(Signal::INT)),
            3 => Ok(Action::Signal(Signal::QUIT)),
            15 => Ok(Action::Signal(Signal::TERM)),
            n => Err(format!(
                "signal {n}: give 1 (HUP), 2 (INT), 3 (QUIT) or 15 (TERM)"
            )),
        },
        StreamControl::Resize { .. } if !tty => {
            Err("resize: this command has no terminal (start it with \"tty\": true)".to_owned())
        }
        StreamControl::Resize { rows, cols } => WindowSize::new(rows, cols)
            .map(Action::Resize)
            .map_err(|e| format!("resize: {e}")),
    }
}

/// The end-of-file key of a terminal (Ctrl-D), what `eof` types with a terminal.
const TERMINAL_EOF: u8 = 4;

/// Channel bytes of a streamed exec's binary messages (the first byte of each).
pub const STREAM_STDIN: u8 = 0;
/// Output the command wrote to stdout (with a terminal: stdout and stderr, as it shows them).
pub const STREAM_STDOUT: u8 = 1;
/// Output the command wrote to stderr (never with a terminal).
pub const STREAM_STDERR: u8 = 2;

/// A command in a running sandbox with its streams as they happen, over a WebSocket.
///
/// After the upgrade the client sends one text message, the command as JSON (`StreamStart`:
/// `command`, `env`, `user`, `workdir`, `tty`, `rows`, `cols`). Then binary messages carry the
/// streams, each with a channel byte first: 0 from the client is stdin, 1 and 2 from the
/// server are stdout and stderr. The client's text messages (`StreamControl`):
/// `{"type":"eof"}` ends the input, `{"type":"signal","signal":15}` sends a signal (1, 2, 3
/// or 15), `{"type":"resize","rows":R,"cols":C}` resizes the terminal. A control message that
/// is not valid or not for this exec is answered `{"type":"refused","code":…,"detail":…}` and
/// the command goes on. The server's last message is text,
/// `{"type":"exit","exit_code":N,"notes":[…]}` or `{"type":"error","code":…,"detail":…}`, then
/// it closes. A client that goes away stops the command (SIGTERM, SIGKILL 2 s later).
///
/// With `"tty": true` the command runs in a terminal of its own in the sandbox (`rows` ×
/// `cols`, 1 to 1000 each, 24 × 80 unless given; `TERM` is the server's or `xterm-256color`
/// unless `env` sets it): its stdout and stderr arrive together on channel 1, as a terminal
/// shows them (lines end in CR LF), and channel 2 is not used. Input is typed keys: byte 3
/// (Ctrl-C) interrupts the command in the foreground as a terminal does, and `eof` types the
/// end-of-file key (Ctrl-D, byte 4), as `docker exec -it` passes it on; the terminal stays
/// open. `resize` gives the terminal a new size and the command SIGWINCH. Sizes out of range
/// in the first message are an `error` (`invalid`); in a `resize`, a refusal.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/exec/stream",
    tag = "sandboxes",
    params(NamePath),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; the exec's messages follow",
         body = StreamEvent),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "The sandbox is not running"),
        (status = 400, body = Problem, content_type = "application/problem+json",
         description = "Not a WebSocket upgrade"),
    )
)]
async fn exec_stream(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    upgrade: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<axum::response::Response, Problem> {
    // Which sandbox, and whether it runs, before the upgrade: the answer is a plain problem.
    let checked = name_of(&name)?;
    blocking(&state, move |e, _| {
        e.record(&checked)?;
        if paddock_engine::sandboxes::running(e.dirs(), &checked) {
            Ok(())
        } else {
            Err(EngineError::Conflict(format!(
                "sandbox {checked} is not running (start it first)"
            )))
        }
    })
    .await?;
    let upgrade = upgrade
        .map_err(|e| Problem::invalid(format!("this route speaks WebSocket: {}", e.body_text())))?;
    Ok(upgrade
        .max_message_size(EXEC_BODY_LIMIT)
        .on_upgrade(move |socket| async move { state.stream(&name, socket).await }))
}

/// The size of an attached terminal.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachQuery {
    /// Rows of the terminal (1-1000; 24 when not given).
    #[param(minimum = 1, maximum = 1000)]
    pub rows: Option<u16>,
    /// Columns of the terminal (1-1000; 80 when not given).
    #[param(minimum = 1, maximum = 1000)]
    pub cols: Option<u16>,
}

/// Attaches to the command of a sandbox started in the background with a terminal (`tty`), as
/// `paddock attach` does, over a WebSocket: the messages are a streamed exec's with a terminal
/// (binary, channel 0 in, channel 1 out; `resize`, `signal` and `eof` as text), without a first
/// message. Typing Ctrl-P Ctrl-Q (bytes 16, 17) detaches: the stream ends with exit 0 and the
/// command goes on, as it does when the client leaves. 409 for a sandbox that is not running
/// or whose command has no terminal (its output is in `…/logs?follow=true`).
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/attach",
    tag = "sandboxes",
    params(NamePath, AttachQuery),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; the command's terminal follows",
         body = StreamEvent),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 400, body = Problem, content_type = "application/problem+json",
         description = "Not a WebSocket upgrade"),
    )
)]
async fn attach(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<AttachQuery>,
    upgrade: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<axum::response::Response, Problem> {
    // Which sandbox, whether it runs with a terminal, and the size, before the upgrade: the
    // answer is a plain problem.
    let checked = name_of(&name)?;
    let size = WindowSize::new(
        i64::from(q.rows.unwrap_or(24)),
        i64::from(q.cols.unwrap_or(80)),
    );
    let (process, _) = blocking(&state, move |e, _| e.attach_process(&checked, size?)).await?;
    let upgrade = upgrade
        .map_err(|e| Problem::invalid(format!("this route speaks WebSocket: {}", e.body_text())))?;
    let notes_file = tempfile::NamedTempFile::new()
        .map_err(|e| Problem::internal(format!("cannot make a temporary file: {e}")))?;
    Ok(upgrade
        .max_message_size(EXEC_BODY_LIMIT)
        .on_upgrade(move |mut socket| async move {
            let end = state.relay_stream(process, notes_file, &mut socket).await;
            state.end_stream(end, socket).await;
        }))
}

impl ApiState {
    /// Runs one streamed exec on `socket` (see [`exec_stream`]).
    async fn stream(&self, name: &str, mut socket: axum::extract::ws::WebSocket) {
        let end = self.stream_inner(name, &mut socket).await;
        self.end_stream(end, socket).await;
    }

    /// Sends a stream's last message (its exit, or its error) and closes it properly.
    async fn end_stream(
        &self,
        end: Result<StreamEvent, Problem>,
        mut socket: axum::extract::ws::WebSocket,
    ) {
        use axum::extract::ws::Message;
        let end = match end {
            Ok(exit) => exit,
            Err(p) => StreamEvent::Error {
                code: p.code,
                detail: p.detail,
            },
        };
        if let Ok(text) = serde_json::to_string(&end) {
            let _ = socket.send(Message::Text(text.into())).await;
        }
        // The closing handshake: a normal close, then the client's answer (for a second at
        // most), so the client has read everything before the connection goes.
        let close = axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        };
        if socket.send(Message::Close(Some(close))).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(m)) = socket.recv().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }

    async fn stream_inner(
        &self,
        name: &str,
        socket: &mut axum::extract::ws::WebSocket,
    ) -> Result<StreamEvent, Problem> {
        use axum::extract::ws::Message;
        let start = match socket.recv().await {
            Some(Ok(Message::Text(t))) => serde_json::from_str::<StreamStart>(&t)
                .map_err(|e| Problem::unprocessable(format!("the first message: {e}")))?,
            _ => {
                return Err(Problem::invalid(
                    "the first message must be the command as JSON text",
                ));
            }
        };
        let name = name_of(name)?;
        let size = start.window_size()?;
        let req = ExecRequest {
            command: start.command,
            env: start.env,
            user: start.user,
            workdir: start.workdir,
            tty: start.tty,
            stdin: true,
        };
        let (process, notes_file) = self
            .exec_command(name, req, size.unwrap_or(WindowSize::DEFAULT))
            .await?;
        self.relay_stream(process, notes_file, socket).await
    }

    /// Starts `process` and relays its streams (or its terminal) to and from `socket` until it
    /// ends; its exit, with the notes it wrote to `notes_file`.
    async fn relay_stream(
        &self,
        process: ExecProcess,
        notes_file: tempfile::NamedTempFile,
        socket: &mut axum::extract::ws::WebSocket,
    ) -> Result<StreamEvent, Problem> {
        use axum::extract::ws::Message;
        let tty = process.terminal.is_some();
        let (mut child, terminal, _slot) = self.spawn_streamed(process).await?;
        let (mut out, mut err, sink) = match &terminal {
            Some(t) => {
                let (output, input) = pty_streams(t)?;
                (Some(Output::Pty(output)), None, Some(Input::Pty(input)))
            }
            None => (
                child.stdout.take().map(Output::Pipe),
                child.stderr.take(),
                child.stdin.take().map(Input::Pipe),
            ),
        };
        // Input goes through a task (or, for a terminal, a thread) of its own, so that a
        // command that does not read it never holds up its output.
        let (input, inputs) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let mut input = Some(input);
        if let Some(sink) = sink {
            sink.feed(inputs)
                .map_err(|e| Problem::internal(format!("cannot start a thread: {e}")))?;
        }
        let (mut obuf, mut ebuf) = (vec![0u8; OUTPUT_CHUNK], vec![0u8; OUTPUT_CHUNK]);
        let mut client_gone = false;
        while out.is_some() || err.is_some() {
            let refused = tokio::select! {
                m = read_output(&mut out, &mut obuf) => match m {
                    Some(m) => {
                        if socket.send(Message::Binary(m.into())).await.is_err() {
                            client_gone = true;
                            break;
                        }
                        None
                    }
                    None => {
                        out = None;
                        None
                    }
                },
                n = read_some(&mut err, &mut ebuf) => match n {
                    Some(n) => {
                        let mut m = Vec::with_capacity(n + 1);
                        m.push(STREAM_STDERR);
                        m.extend_from_slice(&ebuf[..n]);
                        if socket.send(Message::Binary(m.into())).await.is_err() {
                            client_gone = true;
                            break;
                        }
                        None
                    }
                    None => {
                        err = None;
                        None
                    }
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if b.first() == Some(&STREAM_STDIN)
                            && let Some(tx) = &input
                        {
                            let _ = tx.send(b[1..].to_vec()).await;
                        }
                        None
                    }
                    Some(Ok(Message::Text(t))) => match action(&t, tty) {
                        Ok(Action::CloseStdin) => {
                            input = None;
                            None
                        }
                        Ok(Action::Input(bytes)) => {
                            if let Some(tx) = &input {
                                let _ = tx.send(bytes).await;
                            }
                            None
                        }
                        Ok(Action::Signal(sig)) => {
                            signal(&child, sig);
                            None
                        }
                        Ok(Action::Resize(size)) => terminal
                            .as_ref()
                            .and_then(|t| t.resize(size, child.id()).err())
                            .map(|e| format!("resize: {e}")),
                        Err(why) => Some(why),
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        client_gone = true;
                        break;
                    }
                    Some(Ok(_)) => None,
                },
            };
            if let Some(detail) = refused {
                let refusal = StreamEvent::Refused {
                    code: ProblemCode::Invalid,
                    detail,
                };
                let text = serde_json::to_string(&refusal).unwrap_or_default();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    client_gone = true;
                    break;
                }
            }
        }
        drop(input);
        if client_gone {
            // Nobody reads its output any more: stop it as a timeout does.
            signal(&child, rustix::process::Signal::TERM);
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| Problem::internal(format!("cannot wait for the command: {e}")))?;
        let (exit_code, notes) = ended(&status, notes_file.path())?;
        Ok(StreamEvent::Exit { exit_code, notes })
    }

    /// Starts the exec process of a streamed exec once a slot is free: with its terminal, or
    /// with its three streams piped. The slot is held until the permit is dropped.
    async fn spawn_streamed(
        &self,
        process: ExecProcess,
    ) -> Result<
        (
            tokio::process::Child,
            Option<ExecTerminal>,
            tokio::sync::OwnedSemaphorePermit,
        ),
        Problem,
    > {
        let ExecProcess { command, terminal } = process;
        if terminal.is_none() {
            let (child, slot) = self.spawn(command, true).await?;
            return Ok((child, None, slot));
        }
        let slot = self.exec_slot().await?;
        // The command holds the terminal's other side: dropped here once the process started,
        // so that the host side reads the end when the process and its relay are gone.
        let mut command = tokio::process::Command::from(command);
        let child = command
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Problem::internal(format!("cannot start the command: {e}")))?;
        Ok((child, terminal, slot))
    }
}

/// The most bytes of output in one message.
const OUTPUT_CHUNK: usize = 32 * 1024;

/// The host side of an exec's terminal as two streams, each served by a thread of its own
/// (blocking reads and writes: registering the descriptor with the runtime would take unsafe
/// code): what the command writes, in messages with the channel byte first, until nothing
/// holds the other side (EIO); and a file to write its input to.
fn pty_streams(
    terminal: &ExecTerminal,
) -> Result<(tokio::sync::mpsc::Receiver<Vec<u8>>, std::fs::File), Problem> {
    use std::io::Read;
    let copy = || {
        terminal
            .master()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| Problem::internal(format!("cannot use the terminal: {e}")))
    };
    let (mut reader, writer) = (copy()?, copy()?);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::Builder::new()
        .name("exec-tty-out".into())
        .spawn(move || {
            loop {
                let mut m = vec![0u8; OUTPUT_CHUNK + 1];
                m[0] = STREAM_STDOUT;
                match reader.read(&mut m[1..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        m.truncate(n + 1);
                        if tx.blocking_send(m).is_err() {
                            break;
                        }
                    }
                }
            }
        })
        .map_err(|e| Problem::internal(format!("cannot start a thread: {e}")))?;
    Ok((rx, writer))
}

/// Where a streamed exec's output comes from: the process's stdout, or its terminal.
enum Output {
    Pipe(tokio::process::ChildStdout),
    Pty(tokio::sync::mpsc::Receiver<Vec<u8>>),
}

/// Where a streamed exec's input goes: the process's stdin, or its terminal.
enum Input {
    Pipe(tokio::process::ChildStdin),
    Pty(std::fs::File),
}

impl Input {
    /// Writes what comes from `inputs` until it closes or the writing fails.
    fn feed(self, mut inputs: tokio::sync::mpsc::Receiver<Vec<u8>>) -> std::io::Result<()> {
        match self {
            Input::Pipe(mut pipe) => {
                tokio::spawn(async move {
                    while let Some(data) = inputs.recv().await {
                        if pipe.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Input::Pty(mut file) => {
                std::thread::Builder::new()
                    .name("exec-tty-in".into())
                    .spawn(move || {
                        use std::io::Write;
                        while let Some(data) = inputs.blocking_recv() {
                            if file.write_all(&data).is_err() {
                                break;
                            }
                        }
                    })?;
            }
        }
        Ok(())
    }
}

/// The next message of output, channel byte first, from `output` (None at its end, or when
/// there is none: never ready then).
async fn read_output(output: &mut Option<Output>, buf: &mut [u8]) -> Option<Vec<u8>> {
    match output {
        Some(Output::Pipe(p)) => read_some(&mut Some(p), buf).await.map(|n| {
            let mut m = Vec::with_capacity(n + 1);
            m.push(STREAM_STDOUT);
            m.extend_from_slice(&buf[..n]);
            m
        }),
        Some(Output::Pty(rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads what `pipe` has (None at its end, or when there is no pipe: never ready then).
async fn read_some(pipe: &mut Option<impl AsyncRead + Unpin>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use rustix::process::Signal;

    use super::*;

    fn size(rows: i64, cols: i64) -> WindowSize {
        WindowSize::new(rows, cols).unwrap()
    }

    #[test]
    fn control_messages_ask_for_what_they_say_with_a_terminal_and_without() {
        let cases: [(&str, bool, Result<Action, &str>); 12] = [
            (r#"{"type":"eof"}"#, false, Ok(Action::CloseStdin)),
            (r#"{"type":"eof"}"#, true, Ok(Action::Input(vec![4]))),
            (
                r#"{"type":"signal","signal":2}"#,
                true,
                Ok(Action::Signal(Signal::INT)),
            ),
            (
                r#"{"type":"signal","signal":15}"#,
                false,
                Ok(Action::Signal(Signal::TERM)),
            ),
            (
                r#"{"type":"signal","signal":9}"#,
                false,
                Err("signal 9: give 1 (HUP), 2 (INT), 3 (QUIT) or 15 (TERM)"),
            ),
            (
                r#"{"type":"resize","rows":50,"cols":132}"#,
                true,
                Ok(Action::Resize(size(50, 132))),
            ),
            (
                r#"{"type":"resize","rows":1000,"cols":1}"#,
                true,
                Ok(Action::Resize(size(1000, 1))),
            ),
            (
                r#"{"type":"resize","rows":50,"cols":132}"#,
                false,
                Err(r#"resize: this command has no terminal (start it with "tty": true)"#),
            ),
            (
                r#"{"type":"resize","rows":0,"cols":80}"#,
                true,
                Err("resize: rows: give 1 to 1000 (character cells), not 0"),
            ),
            (
                r#"{"type":"resize","rows":24,"cols":1001}"#,
                true,
                Err("resize: cols: give 1 to 1000 (character cells), not 1001"),
            ),
            (
                r#"{"type":"resize","rows":-5,"cols":80}"#,
                true,
                Err("resize: rows: give 1 to 1000 (character cells), not -5"),
            ),
            (
                r#"{"type":"resize","rows":24}"#,
                true,
                Err("missing field `cols`"),
            ),
        ];
        for (text, tty, want) in cases {
            match (action(text, tty), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text} tty={tty}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text} tty={tty}: {got:?}, not {want:?}"),
            }
        }
        for text in [r#"{"type":"nope"}"#, "not json", r#"{"type":"signal"}"#] {
            let got = action(text, true).unwrap_err();
            assert!(got.starts_with("a control message is "), "{text}: {got}");
        }
    }

    #[test]
    fn a_terminal_size_comes_with_tty_and_within_its_bounds() {
        let start = |json: &str| {
            serde_json::from_str::<StreamStart>(json)
                .unwrap()
                .window_size()
                .map_err(|p| (p.status, p.code, p.detail))
        };
        assert_eq!(start(r#"{"command":["sh"]}"#), Ok(None));
        assert_eq!(
            start(r#"{"command":["sh"],"tty":true}"#),
            Ok(Some(WindowSize::DEFAULT))
        );
        assert_eq!(
            start(r#"{"command":["sh"],"tty":true,"rows":33,"cols":77}"#),
            Ok(Some(size(33, 77)))
        );
        assert_eq!(
            start(r#"{"command":["sh"],"tty":true,"cols":120}"#),
            Ok(Some(size(24, 120)))
        );
        for (json, detail) in [
            (
                r#"{"command":["sh"],"tty":true,"rows":0}"#,
                "rows: give 1 to 1000 (character cells), not 0",
            ),
            (
                r#"{"command":["sh"],"tty":true,"rows":24,"cols":5000}"#,
                "cols: give 1 to 1000 (character cells), not 5000",
            ),
            (
                r#"{"command":["sh"],"rows":24}"#,
                r#"rows and cols are a terminal's size: give them with "tty": true"#,
            ),
        ] {
            assert_eq!(
                start(json),
                Err((422, ProblemCode::Invalid, detail.to_owned())),
                "{json}"
            );
        }
    }

    #[test]
    fn a_refusal_is_a_text_message_of_its_own_kind() {
        let refusal = StreamEvent::Refused {
            code: ProblemCode::Invalid,
            detail: "resize: no terminal".into(),
        };
        assert_eq!(
            serde_json::to_value(&refusal).unwrap(),
            serde_json::json!({"type": "refused", "code": "invalid", "detail": "resize: no terminal"})
        );
    }
}
