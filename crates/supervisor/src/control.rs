//! The control socket: `run/NAME.sock`, one JSON request per line ([`Request`]), one JSON
//! answer per line ([`Answer`]); [`Client`] speaks it. `exec` is answered with descriptors
//! passed with the answer line (the backend's way into the running sandbox for one more
//! command, see [`paddock_core::Execs`]); after `attach`'s answer the connection carries the
//! command's terminal. Only the owner can connect (the run directory is 0700).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use paddock_core::{ExecHandle, Execs};
use paddock_policy::PortMap;
use serde::{Deserialize, Serialize};

use crate::ports::Forwards;
use crate::relay::AttachHub;

/// A request on the control socket: one JSON object per line, `{"op": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Who runs the sandbox, and its pid 1 (0 while it starts).
    Status,
    /// Pass this signal on to the sandbox's command.
    Signal {
        /// 1-64.
        signal: i32,
    },
    /// A way in for one more command: answered with descriptors ([`ExecHandle`]).
    Exec,
    /// Forward one more host port.
    Publish {
        /// The forward.
        map: PortMap,
    },
    /// Stop forwarding a host port.
    Unpublish {
        /// The host port.
        host: u16,
    },
    /// The ports forwarded now.
    Ports,
    /// From the answer on, the connection carries the command's terminal.
    Attach,
}

/// The answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Sandbox name.
    pub name: String,
    /// Backend id.
    pub backend: String,
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// The sandbox's pid 1 on the host (0 while it starts).
    pub sandbox_pid: i32,
}

/// The supervisor's answer: one JSON object per line, shaped by the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    /// To [`Request::Status`].
    Status(Status),
    /// To [`Request::Exec`], with its descriptors: the variables every command there gets.
    Exec {
        /// Always true.
        ok: bool,
        /// The backend's note on the way in.
        detail: String,
        /// Credential placeholders, trust-store pointers.
        env: Vec<(String, String)>,
    },
    /// To [`Request::Ports`].
    Ports {
        /// The forwards.
        ports: Vec<PortMap>,
    },
    /// Refused, with why.
    Error {
        /// The supervisor's message.
        error: String,
    },
    /// Done (or, false, not: a signal with nothing to receive it, an unknown port).
    Ok {
        /// Whether it was done.
        ok: bool,
    },
}

impl Answer {
    fn line(&self) -> String {
        // Plain data: serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{\"ok\":false}".into()) + "\n"
    }
}

/// A listening control socket, removed on drop.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    name: String,
    pid: Arc<AtomicI32>,
    execs: Arc<Mutex<Option<Running>>>,
}

/// What a running sandbox offers the control socket.
#[derive(Debug)]
struct Running {
    execs: Arc<dyn Execs>,
    forwards: Forwards,
}

impl Server {
    /// Binds the socket and serves it on a background thread. `None` if it cannot be bound (the
    /// sandbox still runs; only remote control is missing).
    /// Every exec'd command gets `env` too (credential placeholders, trust-store pointers).
    /// A `signal` request writes the signal's number to `signals` (read by the relay, which
    /// passes it on to the command the way the backend does it).
    pub fn start(
        path: &Path,
        name: &str,
        backend: &'static str,
        env: &[(String, String)],
        signals: Option<OwnedFd>,
        hub: Option<Arc<AttachHub>>,
    ) -> Option<Server> {
        // We hold the sandbox lock, so a socket file here is stale.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).ok()?;
        let pid = Arc::new(AtomicI32::new(0));
        let execs: Arc<Mutex<Option<Running>>> = Arc::default();
        let shared = Shared {
            name: name.to_owned(),
            backend,
            pid: pid.clone(),
            execs: execs.clone(),
            env: env.to_vec(),
            signals,
            hub,
        };
        let shared = Arc::new(shared);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let owner = rustix::process::geteuid();
                for conn in listener.incoming().flatten() {
                    // Only the socket's owner: never a sandbox process that reached the socket
                    // through a share (its uid is a sandbox id), nor another user.
                    match rustix::net::sockopt::socket_peercred(&conn) {
                        Ok(c) if c.uid == owner => {}
                        _ => continue,
                    }
                    let shared = shared.clone();
                    let _ = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || serve(conn, &shared));
                }
            })
            .ok()?;
        Some(Server {
            path: path.to_owned(),
            name: name.to_owned(),
            pid,
            execs,
        })
    }

    /// Records the sandbox's host pid once it is known.
    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::SeqCst);
    }

    /// Serves `exec` requests with `execs` from now on, and publishes `ports` (those not
    /// marked `auto` must work). `None`: no more of either (the published ports close).
    pub fn set_execs(
        &self,
        execs: Option<Box<dyn Execs>>,
        ports: &[PortMap],
    ) -> Result<(), String> {
        let running = execs.map(|e| {
            let execs: Arc<dyn Execs> = Arc::from(e);
            Running {
                forwards: Forwards::new(execs.clone(), &self.name),
                execs,
            }
        });
        if let Some(r) = &running {
            for m in ports {
                match r.forwards.publish(*m) {
                    Ok(()) => {}
                    Err(e) if m.auto => eprintln!("paddock: port {m} not published: {e}"),
                    Err(e) => return Err(e),
                }
            }
        }
        *self.execs.lock().unwrap_or_else(PoisonError::into_inner) = running;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the connection threads share.
struct Shared {
    name: String,
    backend: &'static str,
    pid: Arc<AtomicI32>,
    execs: Arc<Mutex<Option<Running>>>,
    env: Vec<(String, String)>,
    signals: Option<OwnedFd>,
    hub: Option<Arc<AttachHub>>,
}

fn serve(conn: UnixStream, shared: &Shared) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let pid = &shared.pid;
    let not_running = || Answer::Error {
        error: "the sandbox is not running".into(),
    };
    let reader = BufReader::new(conn);
    for line in reader.lines().take(64) {
        let Ok(line) = line else { return };
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Status) => Answer::Status(Status {
                name: shared.name.clone(),
                backend: shared.backend.to_owned(),
                supervisor_pid: std::process::id(),
                sandbox_pid: pid.load(Ordering::SeqCst),
            }),
            Ok(Request::Exec) => {
                let execs = shared
                    .execs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(|r| r.execs.clone());
                let handle = match execs {
                    Some(e) => e.handle().map_err(|e| e.to_string()),
                    None => Err("the sandbox is not running".to_owned()),
                };
                let sent = match handle {
                    Ok(h) => {
                        let line = Answer::Exec {
                            ok: true,
                            detail: h.detail.clone(),
                            env: shared.env.clone(),
                        }
                        .line();
                        let mut fds = vec![h.fd.as_fd()];
                        fds.extend(h.extra.as_ref().map(|f| f.as_fd()));
                        paddock_wire::send_with_fds(out.as_fd(), line.as_bytes(), &fds)
                    }
                    Err(error) => {
                        let line = Answer::Error { error }.line();
                        paddock_wire::send_with_fds(out.as_fd(), line.as_bytes(), &[])
                    }
                };
                if sent.is_err() {
                    return;
                }
                continue;
            }
            Ok(Request::Signal { signal }) => {
                let ok = pid.load(Ordering::SeqCst) > 0
                    && (1..=64).contains(&signal)
                    && shared
                        .signals
                        .as_ref()
                        .is_some_and(|w| rustix::io::write(w, &[signal as u8]) == Ok(1));
                Answer::Ok { ok }
            }
            Ok(Request::Publish { map }) => {
                let running = shared.execs.lock().unwrap_or_else(PoisonError::into_inner);
                match running.as_ref().map(|r| r.forwards.publish(map)) {
                    Some(Ok(())) => Answer::Ok { ok: true },
                    Some(Err(error)) => Answer::Error { error },
                    None => not_running(),
                }
            }
            Ok(Request::Unpublish { host }) => {
                let running = shared.execs.lock().unwrap_or_else(PoisonError::into_inner);
                let ok = running.as_ref().is_some_and(|r| r.forwards.unpublish(host));
                Answer::Ok { ok }
            }
            Ok(Request::Attach) => match (&shared.hub, out.try_clone()) {
                (Some(hub), Ok(conn)) => {
                    // From here the connection is the relay's: output out, framed input in.
                    if out.write_all(Answer::Ok { ok: true }.line().as_bytes()).is_ok() {
                        hub.add(conn);
                    }
                    return;
                }
                _ => Answer::Error {
                    error: "its command has no terminal (start it with `run -d -t` to attach; `paddock logs -f` shows its output)".into(),
                },
            },
            Ok(Request::Ports) => {
                let running = shared.execs.lock().unwrap_or_else(PoisonError::into_inner);
                Answer::Ports {
                    ports: running
                        .as_ref()
                        .map(|r| r.forwards.list())
                        .unwrap_or_default(),
                }
            }
            Err(e) => Answer::Error {
                error: e.to_string(),
            },
        };
        if out.write_all(answer.line().as_bytes()).is_err() {
            return;
        }
    }
}

/// Why a sandbox's supervisor could not be asked for something.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// nobody listens: the sandbox is not running
    #[error("sandbox {0} is not running (`paddock start {0}` starts it)")]
    NotRunning(String),
    /// the supervisor answered with an error
    #[error("the supervisor of {name} says: {message}")]
    Refused {
        /// Sandbox.
        name: String,
        /// Its message.
        message: String,
    },
    /// the conversation failed
    #[error("cannot talk to the supervisor of {name}: {source}")]
    Io {
        /// Sandbox.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The client end of a sandbox's control socket: typed requests, typed answers.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    name: String,
}

impl Client {
    /// The control socket of sandbox `name` (`Dirs::control_socket`).
    pub fn new(socket: &Path, name: &str) -> Client {
        Client {
            socket: socket.to_owned(),
            name: name.to_owned(),
        }
    }

    fn io(&self) -> impl Fn(std::io::Error) -> ControlError + '_ {
        move |source| ControlError::Io {
            name: self.name.clone(),
            source,
        }
    }

    fn connect(&self) -> Result<UnixStream, ControlError> {
        UnixStream::connect(&self.socket).map_err(|_| ControlError::NotRunning(self.name.clone()))
    }

    /// Connects and sends `request`'s line; the connection, for its answer.
    fn send(&self, request: &Request) -> Result<UnixStream, ControlError> {
        let mut conn = self.connect()?;
        let line = serde_json::to_string(request)
            .map_err(|e| (self.io())(std::io::Error::other(e)))?
            + "\n";
        conn.write_all(line.as_bytes()).map_err(self.io())?;
        Ok(conn)
    }

    fn refused(&self, error: String) -> ControlError {
        ControlError::Refused {
            name: self.name.clone(),
            message: error,
        }
    }

    fn unexpected(&self, answer: &Answer) -> ControlError {
        (self.io())(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected answer {answer:?}"),
        ))
    }

    /// Sends `request` and reads its one-line answer (10 s at most). Not for
    /// [`Request::Exec`] and [`Request::Attach`], whose answers carry more.
    pub fn call(&self, request: &Request) -> Result<Answer, ControlError> {
        let conn = self.send(request)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .map_err(self.io())?;
        let mut answer = String::new();
        BufReader::new(std::io::Read::take(conn, 64 << 10))
            .read_line(&mut answer)
            .map_err(self.io())?;
        if answer.is_empty() {
            return Err(ControlError::NotRunning(self.name.clone()));
        }
        match serde_json::from_str(&answer) {
            Ok(Answer::Error { error }) => Err(self.refused(error)),
            Ok(a) => Ok(a),
            Err(e) => Err((self.io())(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e,
            ))),
        }
    }

    /// [`Request::Status`].
    pub fn status(&self) -> Result<Status, ControlError> {
        match self.call(&Request::Status)? {
            Answer::Status(s) => Ok(s),
            other => Err(self.unexpected(&other)),
        }
    }

    /// [`Request::Signal`]: whether the signal was passed on.
    pub fn signal(&self, signal: i32) -> Result<bool, ControlError> {
        match self.call(&Request::Signal { signal })? {
            Answer::Ok { ok } => Ok(ok),
            other => Err(self.unexpected(&other)),
        }
    }

    /// [`Request::Publish`].
    pub fn publish(&self, map: PortMap) -> Result<(), ControlError> {
        match self.call(&Request::Publish { map })? {
            Answer::Ok { ok: true } => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// [`Request::Unpublish`]: whether the port was forwarded.
    pub fn unpublish(&self, host: u16) -> Result<bool, ControlError> {
        match self.call(&Request::Unpublish { host })? {
            Answer::Ok { ok } => Ok(ok),
            other => Err(self.unexpected(&other)),
        }
    }

    /// [`Request::Ports`].
    pub fn ports(&self) -> Result<Vec<PortMap>, ControlError> {
        match self.call(&Request::Ports)? {
            Answer::Ports { ports } => Ok(ports),
            other => Err(self.unexpected(&other)),
        }
    }

    /// [`Request::Exec`]: a way to run one more command in the sandbox, and the variables
    /// every command there gets.
    pub fn exec(&self) -> Result<(ExecHandle, Vec<(String, String)>), ControlError> {
        let io = self.io();
        let conn = self.send(&Request::Exec)?;
        let mut text = Vec::new();
        let mut fds: Vec<OwnedFd> = Vec::new();
        while !text.contains(&b'\n') {
            let mut buf = [0u8; 4096];
            match paddock_wire::recv_with_fds(conn.as_fd(), &mut buf).map_err(&io)? {
                Some((n, got)) if n > 0 && text.len() < (64 << 10) => {
                    text.extend_from_slice(&buf[..n]);
                    fds.extend(got);
                }
                _ => return Err(ControlError::NotRunning(self.name.clone())),
            }
        }
        let answer: Answer = serde_json::from_slice(&text)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let (detail, env) = match answer {
            Answer::Exec { detail, env, .. } => (detail, env),
            Answer::Error { error } => return Err(self.refused(error)),
            other => return Err(self.unexpected(&other)),
        };
        let mut fds = fds.into_iter();
        let fd = fds.next().ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no descriptor came with the answer",
            ))
        })?;
        Ok((
            ExecHandle {
                fd,
                extra: fds.next(),
                detail,
            },
            env,
        ))
    }

    /// [`Request::Attach`]: after the answer the connection carries the command's terminal.
    pub fn attach(&self) -> Result<UnixStream, ControlError> {
        let io = self.io();
        let mut conn = self.send(&Request::Attach)?;
        // The answer line, byte by byte: what follows is the command's output.
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while line.len() < 4096 {
            match std::io::Read::read(&mut conn, &mut b).map_err(&io)? {
                0 => break,
                _ if b[0] == b'\n' => break,
                _ => line.push(b[0]),
            }
        }
        match serde_json::from_slice::<Answer>(&line) {
            Ok(Answer::Ok { ok: true }) => Ok(conn),
            Ok(Answer::Error { error }) => Err(self.refused(error)),
            Ok(other) => Err(self.unexpected(&other)),
            Err(_) if line.is_empty() => Err(ControlError::NotRunning(self.name.clone())),
            Err(e) => Err(io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The wire form stays what it was (clients of another version still understand it).
    #[test]
    fn requests_and_answers_keep_their_wire_form() {
        let map: PortMap = "127.0.0.1:8080:80".parse().unwrap();
        for (req, text) in [
            (Request::Status, r#"{"op":"status"}"#.to_owned()),
            (
                Request::Signal { signal: 15 },
                r#"{"op":"signal","signal":15}"#.to_owned(),
            ),
            (Request::Exec, r#"{"op":"exec"}"#.to_owned()),
            (
                Request::Unpublish { host: 8080 },
                r#"{"op":"unpublish","host":8080}"#.to_owned(),
            ),
            (Request::Ports, r#"{"op":"ports"}"#.to_owned()),
            (Request::Attach, r#"{"op":"attach"}"#.to_owned()),
            (
                Request::Publish { map },
                format!(
                    r#"{{"op":"publish","map":{}}}"#,
                    serde_json::to_string(&map).unwrap()
                ),
            ),
        ] {
            assert_eq!(serde_json::to_string(&req).unwrap(), text);
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"signal","signal":1,"x":1}"#).is_err());
        let status = Answer::Status(Status {
            name: "w".into(),
            backend: "ns".into(),
            supervisor_pid: 7,
            sandbox_pid: 9,
        });
        for answer in [
            status,
            Answer::Exec {
                ok: true,
                detail: "pid 9".into(),
                env: vec![("A".into(), "b".into())],
            },
            Answer::Ports { ports: vec![map] },
            Answer::Error { error: "no".into() },
            Answer::Ok { ok: false },
        ] {
            let line = answer.line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(serde_json::from_str::<Answer>(&line).unwrap(), answer);
        }
        assert_eq!(Answer::Ok { ok: true }.line(), "{\"ok\":true}\n");
    }

    /// A client against a socket nobody serves says the sandbox is not running.
    #[test]
    fn a_client_without_a_server_says_not_running() {
        let c = Client::new(Path::new("/nonexistent/paddock-test/none.sock"), "w");
        assert!(matches!(c.status(), Err(ControlError::NotRunning(n)) if n == "w"));
    }
}
