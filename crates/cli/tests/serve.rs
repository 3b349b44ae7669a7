//! `paddock serve`, the real binary, driven by curl: the unix socket (0600, its owner only, one
//! server at a time), TCP with the bearer token, TLS required off loopback, problem answers.
//! Network traffic stays on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::user::{Account, SUITE_USER};

/// How long a server may take to say where it listens.
const START: Duration = Duration::from_secs(30);

/// `paddock serve ARGS` with its own state directory `home`.
fn serve_cmd(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(common::bin());
    c.arg("serve")
        .args(args)
        .env_clear()
        .env("PADDOCK_HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .stdin(Stdio::null());
    c
}

/// A running `paddock serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Option<Child>,
    /// The line it printed: where it listens.
    line: String,
}

impl Server {
    /// Starts `cmd` and waits for the line saying where it listens; `Err` with the output of a
    /// server that ended instead.
    fn start(mut cmd: Command) -> Result<Server, Output> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START).unwrap_or_default();
        if line.is_empty() {
            let _ = child.kill();
            return Err(child.wait_with_output().unwrap());
        }
        Ok(Server {
            child: Some(child),
            line: line.trim_end().to_owned(),
        })
    }

    /// The unix socket it printed.
    fn socket(&self) -> PathBuf {
        let path = self
            .line
            .strip_prefix("paddock: serving the API on unix socket ")
            .unwrap_or_else(|| panic!("no socket in {:?}", self.line));
        PathBuf::from(path)
    }

    /// The port and token file it printed for TCP.
    fn tcp(&self) -> (u16, PathBuf) {
        let rest = self
            .line
            .strip_prefix("paddock: serving the API on ")
            .unwrap_or_else(|| panic!("unexpected {:?}", self.line));
        let (url, rest) = rest.split_once(' ').unwrap();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        let token = rest
            .strip_prefix("(requests need the bearer token in ")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no token file in {:?}", self.line));
        (port, PathBuf::from(token))
    }

    /// SIGTERM, then its exit status and what it wrote to stderr.
    fn stop(mut self) -> (ExitStatus, String) {
        let child = self.child.take().unwrap();
        terminate(&child);
        let out = wait_for(child, Duration::from_secs(20));
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// Waits for `child` to end (killed after `limit`, failing the test).
fn wait_for(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `cmd` to its end within 30 s.
fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(child, Duration::from_secs(30))
}

/// What curl got: the status (0 when nothing came), the headers, the body, curl's exit code.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: String,
    body: String,
    exit: Option<i32>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The problem's `code`, checking the media type and the status field.
    fn problem_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let p: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(p["status"], self.status, "{self:?}");
        p["code"].as_str().unwrap().to_owned()
    }
}

fn curl_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "-i", "--max-time", "10"]).args(args);
    c
}

fn curl_as(mut cmd: Command) -> Got {
    let out = cmd.output().expect("curl must be installed for this suite");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Got {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
        exit: out.status.code(),
    }
}

fn curl(args: &[&str]) -> Got {
    curl_as(curl_cmd(args))
}

fn over_socket(socket: &Path, args: &[&str]) -> Got {
    let mut all = vec!["--unix-socket", socket.to_str().unwrap()];
    all.extend(args);
    curl(&all)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn unix_socket_is_private_answers_and_goes_away() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(serve_cmd(home.path(), &[])).unwrap();
    let socket = server.socket();
    assert_eq!(socket, home.path().join("run/api.sock"));
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&socket), 0o600);

    let health = over_socket(&socket, &["http://x/v1/health"]);
    assert_eq!(health.status, 200, "{health:?}");
    let h: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));

    let missing = over_socket(&socket, &["http://x/v1/no-such-route"]);
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.problem_code(), "not_found");
    let method = over_socket(&socket, &["-X", "DELETE", "http://x/v1/health"]);
    assert_eq!(method.status, 405, "{method:?}");
    assert_eq!(method.problem_code(), "method_not_allowed");
    let doc = over_socket(&socket, &["http://x/v1/openapi.json"]);
    assert_eq!(doc.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // A second server on the same socket is refused, the first one keeps serving.
    let second = run(serve_cmd(home.path(), &[]));
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another server is serving"), "{err}");
    assert_eq!(over_socket(&socket, &["http://x/v1/health"]).status, 200);

    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
    assert!(!socket.exists(), "the socket is left after SIGTERM");
}

#[test]
fn a_stale_socket_is_replaced() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("sock")).unwrap();
    let socket = home.path().join("sock/api.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let server = Server::start(serve_cmd(
        home.path(),
        &["--socket", socket.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(server.socket(), socket);
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(over_socket(&socket, &["http://x/v1/health"]).status, 200);
    let (status, _) = server.stop();
    assert!(status.success());

    // Never anything but a socket.
    std::fs::write(&socket, "a file").unwrap();
    let out = run(serve_cmd(
        home.path(),
        &["--socket", socket.to_str().unwrap()],
    ));
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "a file");
}

/// Another user cannot reach a server's socket; and root, which passes any file's mode, is
/// turned away by the peer check from an ordinary user's server.
#[test]
fn other_users_are_refused() {
    require_root!();
    let user = Account::find(SUITE_USER).unwrap_or_else(|| Account::create(SUITE_USER));
    let as_user = |mut cmd: Command| {
        cmd.uid(user.uid).gid(user.gid);
        cmd
    };

    // Root's server, its socket in a directory everyone may enter: the socket's mode stops the
    // other user.
    let home = tempfile::tempdir().unwrap();
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = open.path().join("api.sock");
    let server = Server::start(serve_cmd(
        home.path(),
        &["--socket", socket.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(over_socket(&socket, &["http://x/v1/health"]).status, 200);
    let theirs = curl_as(as_user(curl_cmd(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://x/v1/health",
    ])));
    assert_eq!(theirs.status, 0, "{theirs:?}");
    assert_eq!(
        theirs.exit,
        Some(7),
        "curl should fail to connect: {theirs:?}"
    );
    drop(server);

    // The user's server: root connects (root passes the mode) and is closed on.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    let socket = dir.path().join("api.sock");
    let mut cmd = user.command(dir.path(), &["serve", "--socket", socket.to_str().unwrap()]);
    cmd.env("PADDOCK_HOME", dir.path().join("state"));
    let server = Server::start(cmd).unwrap_or_else(|out| {
        panic!(
            "the user's server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(server.socket(), socket);
    let owner = curl_as(as_user(curl_cmd(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://x/v1/health",
    ])));
    assert_eq!(owner.status, 200, "{owner:?}");
    let root = over_socket(&socket, &["http://x/v1/health"]);
    assert_eq!(root.status, 0, "root got an answer: {root:?}");
    assert_ne!(root.exit, Some(0), "{root:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
    assert!(!socket.exists());
}

#[test]
fn tcp_needs_the_token() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(serve_cmd(home.path(), &["--listen", "127.0.0.1:0"])).unwrap();
    assert!(server.line.contains("http://127.0.0.1:"), "{}", server.line);
    let (port, token_file) = server.tcp();
    assert_eq!(token_file, home.path().join("api-token"));
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim_end();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));

    let url = format!("http://127.0.0.1:{port}/v1/health");
    let wrong = format!("Authorization: Bearer {}", "0".repeat(64));
    let right = format!("Authorization: Bearer {token}");
    for refused in [curl(&[&url]), curl(&["-H", &wrong, &url])] {
        assert_eq!(refused.status, 401, "{refused:?}");
        assert_eq!(refused.problem_code(), "unauthorized");
        assert!(
            refused
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{refused:?}"
        );
    }
    // Unknown routes too: nothing is answered without the token.
    let probe = curl(&[&format!("http://127.0.0.1:{port}/v1/no-such-route")]);
    assert_eq!(probe.status, 401, "{probe:?}");
    let ok = curl(&["-H", &right, &url]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let missing = curl(&[
        "-H",
        &right,
        &format!("http://127.0.0.1:{port}/v1/no-such-route"),
    ]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.problem_code(), "not_found");
    let (status, _) = server.stop();
    assert!(status.success());

    // The next server keeps the token.
    let again = Server::start(serve_cmd(home.path(), &["--listen", "127.0.0.1:0"])).unwrap();
    let (port, _) = again.tcp();
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim_end(),
        token
    );
    let ok = curl(&["-H", &right, &format!("http://127.0.0.1:{port}/v1/health")]);
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[test]
fn off_loopback_only_with_tls() {
    let home = tempfile::tempdir().unwrap();
    // Refused before anything is bound.
    let plain = run(serve_cmd(home.path(), &["--listen", "0.0.0.0:0"]));
    assert_eq!(plain.status.code(), Some(2), "{plain:?}");
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        err.contains("0.0.0.0:0 is not a loopback address") && err.contains("--tls-cert"),
        "{err}"
    );
    assert!(!home.path().join("api-token").exists());
    // TLS flags without --listen, or half of them.
    for args in [
        &["--tls-cert", "c.pem", "--tls-key", "k.pem"][..],
        &["--listen", "127.0.0.1:0", "--tls-cert", "c.pem"][..],
    ] {
        let out = run(serve_cmd(home.path(), args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }

    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::test_certificates(certs.path(), "api", &["127.0.0.1"]);
    let server = Server::start(serve_cmd(
        home.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    ))
    .unwrap_or_else(|out| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(server.line.contains("https://0.0.0.0:"), "{}", server.line);
    let (port, token_file) = server.tcp();
    let token = std::fs::read_to_string(token_file).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim_end());
    let url = format!("https://127.0.0.1:{port}/v1/health");
    let ca = ca.to_str().unwrap();
    let ok = curl(&["--cacert", ca, "-H", &auth, &url]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let no_token = curl(&["--cacert", ca, &url]);
    assert_eq!(no_token.status, 401, "{no_token:?}");
    // Without the CA curl does not trust it; plain HTTP gets no answer.
    let untrusted = curl(&["-H", &auth, &url]);
    assert_eq!(untrusted.status, 0, "{untrusted:?}");
    let plain = curl(&["-H", &auth, &format!("http://127.0.0.1:{port}/v1/health")]);
    assert_eq!(plain.status, 0, "{plain:?}");
    let (status, _) = server.stop();
    assert!(status.success());
}
