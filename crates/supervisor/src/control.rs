//! The control socket: `run/NAME.sock`, one JSON request per line, one JSON answer per line.
//! Requests: `{"op":"status"}`, `{"op":"signal","signal":N}` and `{"op":"exec"}` (answered with a
//! descriptor, passed with the answer line: the backend's way into the running sandbox for one
//! more command, see [`paddock_core::Execs`]). Only the owner can connect (the run directory is
//! 0700).

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

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Status,
    Signal { signal: i32 },
    Exec,
    Publish { map: PortMap },
    Unpublish { host: u16 },
    Ports,
    Attach,
}

#[derive(Debug, Serialize)]
struct Status<'a> {
    name: &'a str,
    backend: &'a str,
    supervisor_pid: u32,
    sandbox_pid: i32,
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
    let reader = BufReader::new(conn);
    for line in reader.lines().take(64) {
        let Ok(line) = line else { return };
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Status) => serde_json::to_string(&Status {
                name: &shared.name,
                backend: shared.backend,
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
                        let line =
                            serde_json::json!({ "ok": true, "detail": h.detail, "env": shared.env })
                                .to_string() + "\n";
                        let mut fds = vec![h.fd.as_fd()];
                        fds.extend(h.extra.as_ref().map(|f| f.as_fd()));
                        paddock_wire::send_with_fds(out.as_fd(), line.as_bytes(), &fds)
                    }
                    Err(e) => {
                        let line = serde_json::json!({ "error": e }).to_string() + "\n";
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
                Ok(format!("{{\"ok\":{ok}}}"))
            }
            Ok(Request::Publish { map }) => {
                let running = shared.execs.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(match running.as_ref().map(|r| r.forwards.publish(map)) {
                    Some(Ok(())) => serde_json::json!({ "ok": true }).to_string(),
                    Some(Err(e)) => serde_json::json!({ "error": e }).to_string(),
                    None => {
                        serde_json::json!({ "error": "the sandbox is not running" }).to_string()
                    }
                })
            }
            Ok(Request::Unpublish { host }) => {
                let running = shared.execs.lock().unwrap_or_else(PoisonError::into_inner);
                let ok = running.as_ref().is_some_and(|r| r.forwards.unpublish(host));
                Ok(serde_json::json!({ "ok": ok }).to_string())
            }
            Ok(Request::Attach) => match (&shared.hub, out.try_clone()) {
                (Some(hub), Ok(conn)) => {
                    // From here the connection is the relay's: output out, framed input in.
                    if writeln!(out, "{{\"ok\":true}}").is_ok() {
                        hub.add(conn);
                    }
                    return;
                }
                _ => Ok(serde_json::json!({
                    "error": "its command has no terminal (start it with `run -d -t` to attach; `paddock logs -f` shows its output)"
                })
                .to_string()),
            },
            Ok(Request::Ports) => {
                let running = shared.execs.lock().unwrap_or_else(PoisonError::into_inner);
                let list = running
                    .as_ref()
                    .map(|r| r.forwards.list())
                    .unwrap_or_default();
                Ok(serde_json::json!({ "ports": list }).to_string())
            }
            Err(e) => Ok(serde_json::json!({ "error": e.to_string() }).to_string()),
        };
        let Ok(answer) = answer else { return };
        if writeln!(out, "{answer}").is_err() {
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

/// Asks the supervisor listening on `socket` for a way to run one more command in sandbox
/// `name`, and the variables every command there gets.
pub fn request_exec(
    socket: &Path,
    name: &str,
) -> Result<(ExecHandle, Vec<(String, String)>), ControlError> {
    let io = |source| ControlError::Io {
        name: name.to_owned(),
        source,
    };
    let mut conn =
        UnixStream::connect(socket).map_err(|_| ControlError::NotRunning(name.to_owned()))?;
    conn.write_all(b"{\"op\":\"exec\"}\n").map_err(io)?;
    let mut text = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    while !text.contains(&b'\n') {
        let mut buf = [0u8; 4096];
        match paddock_wire::recv_with_fds(conn.as_fd(), &mut buf).map_err(io)? {
            Some((n, got)) if n > 0 => {
                text.extend_from_slice(&buf[..n]);
                fds.extend(got);
            }
            _ => return Err(ControlError::NotRunning(name.to_owned())),
        }
    }
    let answer: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    if let Some(e) = answer.get("error").and_then(|e| e.as_str()) {
        return Err(ControlError::Refused {
            name: name.to_owned(),
            message: e.to_owned(),
        });
    }
    let mut fds = fds.into_iter();
    let fd = fds.next().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no descriptor came with the answer",
        ))
    })?;
    let env = answer
        .get("env")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    let handle = ExecHandle {
        fd,
        extra: fds.next(),
        detail: answer
            .get("detail")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_owned(),
    };
    Ok((handle, env))
}

/// Sends one request line to the supervisor on `socket` and returns its answer.
pub fn request(socket: &Path, line: &str) -> Option<serde_json::Value> {
    let mut conn = UnixStream::connect(socket).ok()?;
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    conn.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer).ok()?;
    serde_json::from_str(&answer).ok()
}
