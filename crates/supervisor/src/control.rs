//! The control socket: `run/NAME.sock`, one JSON request per line, one JSON answer per line.
//! Requests: `{"op":"status"}` and `{"op":"signal","signal":N}`. Only the owner can connect
//! (the run directory is 0700).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Status,
    Signal { signal: i32 },
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
    pid: Arc<AtomicI32>,
}

impl Server {
    /// Binds the socket and serves it on a background thread. `None` if it cannot be bound (the
    /// sandbox still runs; only remote control is missing).
    pub fn start(path: &Path, name: &str, backend: &'static str) -> Option<Server> {
        // We hold the sandbox lock, so a socket file here is stale.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).ok()?;
        let pid = Arc::new(AtomicI32::new(0));
        let shared = pid.clone();
        let name = name.to_owned();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    serve(conn, &name, backend, &shared);
                }
            })
            .ok()?;
        Some(Server {
            path: path.to_owned(),
            pid,
        })
    }

    /// Records the sandbox's host pid once it is known.
    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::SeqCst);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(conn: UnixStream, name: &str, backend: &str, pid: &AtomicI32) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let reader = BufReader::new(conn);
    for line in reader.lines().take(64) {
        let Ok(line) = line else { return };
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Status) => serde_json::to_string(&Status {
                name,
                backend,
                supervisor_pid: std::process::id(),
                sandbox_pid: pid.load(Ordering::SeqCst),
            }),
            Ok(Request::Signal { signal }) => {
                let p = pid.load(Ordering::SeqCst);
                let ok = p > 0
                    && (1..=64).contains(&signal)
                    // SAFETY: kill has no memory effects; `p` is this supervisor's sandbox process.
                    && unsafe { libc::kill(p, signal) } == 0;
                Ok(format!("{{\"ok\":{ok}}}"))
            }
            Err(e) => Ok(serde_json::json!({ "error": e.to_string() }).to_string()),
        };
        let Ok(answer) = answer else { return };
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}
