//! A command in a running sandbox with its streams as they happen, over a WebSocket
//! (`GET /v1/sandboxes/{name}/exec/stream`): the messages a client sends and gets, and the
//! relay between them and the exec process.

use std::time::Duration;

use axum::extract::{Path, State};
use paddock_engine::EngineError;
use paddock_engine::exec::ExecRequest;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::sandboxes::{
    ApiState, EXEC_BODY_LIMIT, KILL_GRACE, NamePath, blocking, ended, name_of, signal,
};
use crate::{Problem, ProblemCode};

/// The streamed exec's route, to merge into the sandboxes' routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(exec_stream))
}

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
}

/// A control message from the client of a streamed exec (a text message).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum StreamControl {
    /// No more input: the command's stdin is closed.
    Eof,
    /// A signal for the command: 1 (HUP), 2 (INT), 3 (QUIT) or 15 (TERM).
    Signal { signal: i32 },
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
}

/// Channel bytes of a streamed exec's binary messages (the first byte of each).
pub const STREAM_STDIN: u8 = 0;
/// Output the command wrote to stdout.
pub const STREAM_STDOUT: u8 = 1;
/// Output the command wrote to stderr.
pub const STREAM_STDERR: u8 = 2;

/// A command in a running sandbox with its streams as they happen, over a WebSocket.
///
/// After the upgrade the client sends one text message, the command as JSON (`StreamStart`:
/// `command`, `env`, `user`, `workdir`). Then binary messages carry the streams, each with a
/// channel byte first: 0 from the client is stdin, 1 and 2 from the server are stdout and
/// stderr. The client's text messages `{"type":"eof"}` close stdin and `{"type":"signal",
/// "signal":15}` sends a signal (1, 2, 3 or 15). The server's last message is text,
/// `{"type":"exit","exit_code":N,"notes":[…]}` or `{"type":"error","code":…,"detail":…}`, then
/// it closes. A client that goes away stops the command (SIGTERM, SIGKILL 2 s later).
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

impl ApiState {
    /// Runs one streamed exec on `socket` (see [`exec_stream`]).
    async fn stream(&self, name: &str, mut socket: axum::extract::ws::WebSocket) {
        use axum::extract::ws::Message;
        let end = match self.stream_inner(name, &mut socket).await {
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
        let req = ExecRequest {
            command: start.command,
            env: start.env,
            user: start.user,
            workdir: start.workdir,
            tty: false,
            stdin: true,
        };
        let (cmd, notes_file) = self.exec_command(name, req).await?;
        let (mut child, _slot) = self.spawn(cmd, true).await?;
        // Input goes through a task of its own, so that a command that does not read it never
        // holds up its output.
        let (input, mut inputs) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let mut input = Some(input);
        if let Some(mut pipe) = child.stdin.take() {
            tokio::spawn(async move {
                while let Some(data) = inputs.recv().await {
                    if pipe.write_all(&data).await.is_err() {
                        break;
                    }
                }
            });
        }
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let (mut obuf, mut ebuf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
        let mut client_gone = false;
        while out.is_some() || err.is_some() {
            tokio::select! {
                n = read_some(&mut out, &mut obuf) => match n {
                    Some(n) => {
                        let mut m = Vec::with_capacity(n + 1);
                        m.push(STREAM_STDOUT);
                        m.extend_from_slice(&obuf[..n]);
                        if socket.send(Message::Binary(m.into())).await.is_err() {
                            client_gone = true;
                            break;
                        }
                    }
                    None => out = None,
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
                    }
                    None => err = None,
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if b.first() == Some(&STREAM_STDIN)
                            && let Some(tx) = &input
                        {
                            let _ = tx.send(b[1..].to_vec()).await;
                        }
                    }
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<StreamControl>(&t) {
                        Ok(StreamControl::Eof) => input = None,
                        Ok(StreamControl::Signal { signal: n }) => {
                            let sig = match n {
                                1 => Some(rustix::process::Signal::HUP),
                                2 => Some(rustix::process::Signal::INT),
                                3 => Some(rustix::process::Signal::QUIT),
                                15 => Some(rustix::process::Signal::TERM),
                                _ => None,
                            };
                            if let Some(sig) = sig {
                                signal(&child, sig);
                            }
                        }
                        Err(_) => {}
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        client_gone = true;
                        break;
                    }
                    Some(Ok(_)) => {}
                },
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
